//! Hardware formats: MSI messages, IRTEs, the IRTA register and the posted-interrupt descriptor.
//!
//! Decoding and encoding are done by the ABI's `vir_abi::hw` codecs; this module turns their
//! decoded structures into [`Report`]s (with bit positions) and `field=value` assignments into
//! their inputs. Each format's field names are the ABI's field names.

mod irte;
mod msi;
mod posted;

use std::fmt;

use vir_abi::hw::fields::{FieldDesc, kernel_name};
use vir_abi::hw::{
    AmdIrteError, AmdMsiError, ApicMode, IrtaError, IrteError, LengthError, MsiError, PostedError,
    VtdMsiError,
};

use crate::error::{CliError, UsageError};
use crate::input::IntegerForm;
use crate::report::Report;
use crate::value::{
    Assignment, ValueError, ValueProblem, check_known, max_of_bits, no_names, parse_value,
};

/// Options that change how a hardware format is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Where VT-d IRTE destinations and posted-descriptor NDSTs put the APIC ID.
    pub apic_mode: ApicMode,
    /// Whether compatibility-format address bits 11:5 carry the extended destination ID.
    pub ext_dest_id: bool,
    /// `encode msi-compat`: put APIC ID bits 31:8 in the high address (the x2APIC
    /// high-address form of QEMU and of Linux's IOMMU interrupts).
    pub x2apic_hi: bool,
}

/// A hardware format the tool knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwType {
    /// Any x86 MSI, classified by address bit 4.
    Msi,
    /// x86 MSI, compatibility format.
    MsiCompat,
    /// VT-d remappable MSI.
    VtdMsi,
    /// AMD-Vi remapped MSI.
    AmdMsi,
    /// VT-d IRTE, remapped or posted by the IM bit.
    VtdIrte,
    /// VT-d IRTA register.
    VtdIrta,
    /// Posted-interrupt descriptor.
    PostedDesc,
    /// AMD-Vi 32-bit IRTE.
    AmdIrte32,
    /// AMD-Vi 128-bit IRTE.
    AmdIrte128,
}

impl HwType {
    /// Every hardware type, in the order of the help text.
    pub const ALL: &'static [HwType] = &[
        Self::Msi,
        Self::MsiCompat,
        Self::VtdMsi,
        Self::AmdMsi,
        Self::VtdIrte,
        Self::VtdIrta,
        Self::PostedDesc,
        Self::AmdIrte32,
        Self::AmdIrte128,
    ];

    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Msi => "msi",
            Self::MsiCompat => "msi-compat",
            Self::VtdMsi => "vtd-msi",
            Self::AmdMsi => "amd-msi",
            Self::VtdIrte => "vtd-irte",
            Self::VtdIrta => "vtd-irta",
            Self::PostedDesc => "posted-desc",
            Self::AmdIrte32 => "amd-irte32",
            Self::AmdIrte128 => "amd-irte128",
        }
    }

    /// One line for the type list.
    pub const fn summary(self) -> &'static str {
        match self {
            Self::Msi => "x86 MSI message, compatibility or VT-d remappable by address bit 4",
            Self::MsiCompat => {
                "x86 MSI message, compatibility format (--ext-dest-id: APIC IDs up to 32767)"
            }
            Self::VtdMsi => "Intel VT-d remappable MSI message (handle, SHV, sub-handle)",
            Self::AmdMsi => "AMD-Vi remapped MSI message (IRTE index in data 10:0)",
            Self::VtdIrte => {
                "Intel VT-d IRTE, remapped or posted by the IM bit (--xapic: xAPIC DST)"
            }
            Self::VtdIrta => "Intel VT-d IRTA register (table address, size, EIME)",
            Self::PostedDesc => "posted-interrupt descriptor (--xapic: xAPIC NDST)",
            Self::AmdIrte32 => "AMD-Vi IRTE, 32-bit format",
            Self::AmdIrte128 => {
                "AMD-Vi IRTE, 128-bit format, remapped or guest (vAPIC) mode by GuestMode"
            }
        }
    }

    /// Size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::Msi | Self::MsiCompat | Self::VtdMsi | Self::AmdMsi => 12,
            Self::VtdIrte | Self::AmdIrte128 => 16,
            Self::VtdIrta => 8,
            Self::PostedDesc => 64,
            Self::AmdIrte32 => 4,
        }
    }

    /// The integer form the type accepts besides bytes.
    pub const fn integer_form(self) -> IntegerForm {
        match self {
            Self::Msi | Self::MsiCompat | Self::VtdMsi | Self::AmdMsi => IntegerForm::MsiPair,
            Self::VtdIrte | Self::AmdIrte128 | Self::VtdIrta | Self::AmdIrte32 => {
                IntegerForm::Word(self.size())
            }
            Self::PostedDesc => IntegerForm::None,
        }
    }

    /// Whether `--xapic` applies.
    pub const fn takes_apic_mode(self) -> bool {
        matches!(self, Self::VtdIrte | Self::PostedDesc)
    }

    /// Whether `--ext-dest-id` applies.
    pub const fn takes_ext_dest_id(self) -> bool {
        matches!(self, Self::Msi | Self::MsiCompat)
    }

    /// Whether `--x2apic-hi` applies (encode only: decode recognises the form by itself).
    pub const fn takes_x2apic_hi(self) -> bool {
        matches!(self, Self::MsiCompat)
    }

    /// Decodes `bytes` (already checked to be [`HwType::size`] long).
    pub fn decode(self, bytes: &[u8], opts: Options) -> Result<Report, HwError> {
        match self {
            Self::Msi => msi::decode_any(bytes, opts),
            Self::MsiCompat => msi::decode_compat(bytes, opts),
            Self::VtdMsi => msi::decode_vtd(bytes),
            Self::AmdMsi => msi::decode_amd(bytes),
            Self::VtdIrte => irte::decode_vtd(bytes, opts),
            Self::VtdIrta => irte::decode_irta(bytes),
            Self::PostedDesc => posted::decode(bytes, opts),
            Self::AmdIrte32 => irte::decode_amd32(bytes),
            Self::AmdIrte128 => irte::decode_amd128(bytes),
        }
    }

    /// Encodes `assignments` and returns the bytes (fields not assigned take their defaults).
    pub fn encode(self, assignments: &[Assignment], opts: Options) -> Result<Vec<u8>, CliError> {
        match self {
            Self::Msi => msi::encode_any(assignments),
            Self::MsiCompat => msi::encode_compat(assignments, opts),
            Self::VtdMsi => msi::encode_vtd(assignments),
            Self::AmdMsi => msi::encode_amd(assignments),
            Self::VtdIrte => irte::encode_vtd(assignments, opts),
            Self::VtdIrta => irte::encode_irta(assignments),
            Self::PostedDesc => posted::encode(assignments, opts),
            Self::AmdIrte32 => irte::encode_amd32(assignments),
            Self::AmdIrte128 => irte::encode_amd128(assignments),
        }
    }

    /// The fields `encode` accepts, for the help text.
    pub fn field_names(self) -> Vec<&'static str> {
        let specs: Vec<&[FieldSpec]> = match self {
            Self::Msi => vec![msi::ANY_FIELDS],
            Self::MsiCompat => vec![msi::COMPAT_FIELDS],
            Self::VtdMsi => vec![msi::VTD_FIELDS],
            Self::AmdMsi => vec![msi::AMD_FIELDS],
            Self::VtdIrte => vec![irte::VTD_REMAPPED_FIELDS, irte::VTD_POSTED_FIELDS],
            Self::VtdIrta => vec![irte::IRTA_FIELDS],
            Self::PostedDesc => vec![posted::FIELDS],
            Self::AmdIrte32 => vec![irte::AMD32_FIELDS],
            Self::AmdIrte128 => vec![irte::AMD128_REMAP_FIELDS, irte::AMD128_GUEST_FIELDS],
        };
        let mut names: Vec<&'static str> = Vec::new();
        for s in specs.into_iter().flatten() {
            if !names.contains(&s.name) {
                names.push(s.name);
            }
        }
        names
    }
}

/// The error of one of the ABI's hardware codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwErrorKind {
    /// The bytes have the wrong length for the format.
    Length(LengthError),
    /// x86 MSI (compatibility format, classification).
    Msi(MsiError),
    /// VT-d remappable MSI.
    VtdMsi(VtdMsiError),
    /// VT-d IRTE.
    Irte(IrteError),
    /// VT-d IRTA register.
    Irta(IrtaError),
    /// Posted-interrupt descriptor.
    Posted(PostedError),
    /// AMD-Vi MSI.
    AmdMsi(AmdMsiError),
    /// AMD-Vi IRTE.
    AmdIrte(AmdIrteError),
}

/// A hardware format that cannot be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwError {
    /// The type being decoded or encoded.
    pub ty: &'static str,
    /// What the ABI's codec reported.
    pub kind: HwErrorKind,
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.ty)?;
        match &self.kind {
            HwErrorKind::Length(e) => e.fmt(f),
            HwErrorKind::Msi(e) => e.fmt(f),
            HwErrorKind::VtdMsi(e) => e.fmt(f),
            HwErrorKind::Irte(e) => e.fmt(f),
            HwErrorKind::Irta(e) => e.fmt(f),
            HwErrorKind::Posted(e) => e.fmt(f),
            HwErrorKind::AmdMsi(e) => e.fmt(f),
            HwErrorKind::AmdIrte(e) => e.fmt(f),
        }?;
        match self.kind {
            HwErrorKind::Msi(MsiError::DestinationTooLarge { max, .. })
                if max == vir_abi::hw::msi::MAX_DEST_ID =>
            {
                f.write_str(
                    "; add --ext-dest-id for APIC IDs up to 32767 (KVM_FEATURE_MSI_EXT_DEST_ID), or --x2apic-hi for the x2APIC high-address form (any 32-bit ID)",
                )
            }
            HwErrorKind::Msi(MsiError::DestinationTooLarge { .. }) => {
                f.write_str("; add --x2apic-hi for the x2APIC high-address form (any 32-bit ID)")
            }
            HwErrorKind::Msi(MsiError::ExtDestIdNotEnabled(_)) => f.write_str(
                "; add --ext-dest-id if the hypervisor offers the extended destination ID",
            ),
            _ => Ok(()),
        }
    }
}

impl HwError {
    /// An error of type `ty`.
    pub fn new(ty: HwType, kind: HwErrorKind) -> Self {
        Self {
            ty: ty.name(),
            kind,
        }
    }
}

/// A field `encode` accepts for a hardware format.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Field name (the ABI's).
    pub name: &'static str,
    /// Largest value.
    pub max: u128,
    /// Value when not assigned.
    pub default: u128,
    /// Symbolic values the field takes.
    pub names: fn(&str) -> Option<u128>,
    /// The Linux kernel's name of the field (`dst_mode`, `ga_root_ptr`), accepted as an alias.
    pub kernel: Option<&'static str>,
    /// The kernel's field holds the value shifted right by this many bits (`ga_root_ptr` is
    /// the backing page address >> 12); a value given under the alias is shifted back.
    pub kernel_shift: u32,
}

impl FieldSpec {
    /// A numeric field of `max` with default 0 and no names.
    pub const fn num(name: &'static str, max: u128) -> Self {
        Self {
            name,
            max,
            default: 0,
            names: no_names,
            kernel: None,
            kernel_shift: 0,
        }
    }

    /// The same field with the Linux kernel's name that the abi's descriptor `desc` in
    /// `fields` gives (no alias if the descriptor has none).
    pub const fn kernel_from(mut self, fields: &'static [FieldDesc], desc: &str) -> Self {
        self.kernel = kernel_name(fields, desc);
        self
    }

    /// The same field with the kernel name of the abi's descriptor `desc`, whose value is this
    /// field's value >> `shift`.
    pub const fn kernel_shifted_from(
        mut self,
        fields: &'static [FieldDesc],
        desc: &str,
        shift: u32,
    ) -> Self {
        self.kernel = kernel_name(fields, desc);
        self.kernel_shift = shift;
        self
    }

    /// A one-bit field, default 0.
    pub const fn flag(name: &'static str) -> Self {
        Self::num(name, 1)
    }

    /// The same field with symbolic names.
    pub const fn named(mut self, names: fn(&str) -> Option<u128>) -> Self {
        self.names = names;
        self
    }

    /// The same field with another default.
    pub const fn default(mut self, default: u128) -> Self {
        self.default = default;
        self
    }
}

/// The parsed values of an `encode`.
#[derive(Debug, Clone)]
pub struct Values {
    /// (field, value) for every field of the spec, defaults filled in.
    values: Vec<(&'static str, u128)>,
}

impl Values {
    /// Parses `assignments` against `specs` (unknown fields are usage errors naming `ty`).
    pub fn parse(
        ty: &str,
        specs: &[FieldSpec],
        assignments: &[Assignment],
    ) -> Result<Self, CliError> {
        let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let aliases: Vec<&str> = specs
            .iter()
            .filter_map(|s| s.kernel.filter(|k| *k != s.name))
            .collect();
        for k in aliases {
            if !names.contains(&k) {
                names.push(k);
            }
        }
        check_known(ty, assignments, &names)?;
        let mut values: Vec<(&'static str, u128)> =
            specs.iter().map(|s| (s.name, s.default)).collect();
        let mut seen: Vec<&'static str> = Vec::new();
        for a in assignments {
            let Some(spec) = specs
                .iter()
                .find(|s| s.name == a.field || s.kernel == Some(a.field.as_str()))
            else {
                continue;
            };
            if seen.contains(&spec.name) {
                return Err(UsageError::DuplicateField(format!(
                    "{} (given under its name and its kernel alias)",
                    spec.name
                ))
                .into());
            }
            seen.push(spec.name);
            let v = if spec.name == a.field || spec.kernel_shift == 0 {
                parse_value(&a.field, &a.value, spec.max, &spec.names)?
            } else {
                let max = spec.max >> spec.kernel_shift;
                parse_value(&a.field, &a.value, max, &spec.names)? << spec.kernel_shift
            };
            if let Some(slot) = values.iter_mut().find(|(n, _)| *n == spec.name) {
                slot.1 = v;
            }
        }
        Ok(Self { values })
    }

    /// The value of `name` (0 for a name not in the spec).
    pub fn get(&self, name: &str) -> u128 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |&(_, v)| v)
    }

    /// The value of a one-bit field.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) != 0
    }

    /// The value of `name` as a narrower integer (the spec's `max` makes it fit; a value that
    /// does not is reported, never truncated).
    pub fn num<T: TryFrom<u128>>(&self, name: &str) -> Result<T, ValueError> {
        let v = self.get(name);
        let bits = u32::try_from(std::mem::size_of::<T>().saturating_mul(8)).unwrap_or(128);
        T::try_from(v).map_err(|_| {
            ValueError::new(
                name,
                ValueProblem::OutOfRange {
                    value: v,
                    max: max_of_bits(bits),
                },
            )
        })
    }
}

/// Adds to an unknown-field error the mode that has the field: when `err` names a field of
/// `other` (by name or kernel alias), the hint says to add `mode` (`im=posted`).
pub fn with_mode_hint(err: CliError, other: &[FieldSpec], what: &str, mode: &str) -> CliError {
    match err {
        CliError::Usage(UsageError::UnknownField {
            ty,
            field,
            valid,
            hint,
        }) => {
            let in_other = other
                .iter()
                .any(|s| s.name == field || s.kernel == Some(field.as_str()));
            let hint = if in_other {
                Some(format!("'{field}' is a field of the {what}: add {mode}"))
            } else {
                hint
            };
            CliError::Usage(UsageError::UnknownField {
                ty,
                field,
                valid,
                hint,
            })
        }
        other => other,
    }
}

/// Names of the x86 delivery modes (MSI data 10:8, VT-d IRTE DLM).
fn delivery_mode_names(text: &str) -> Option<u128> {
    Some(match text.to_ascii_lowercase().as_str() {
        "fixed" => 0,
        "lowest_priority" | "lowpri" => 1,
        "smi" => 2,
        "nmi" => 4,
        "init" => 5,
        "extint" => 7,
        _ => return None,
    })
}

/// The name of an x86 delivery mode value.
fn delivery_mode_name(v: u8) -> &'static str {
    match v {
        0 => "fixed",
        1 => "lowest_priority",
        2 => "smi",
        4 => "nmi",
        5 => "init",
        7 => "extint",
        _ => "reserved",
    }
}

/// Names of the destination modes.
fn dest_mode_names(text: &str) -> Option<u128> {
    match text.to_ascii_lowercase().as_str() {
        "physical" => Some(0),
        "logical" => Some(1),
        _ => None,
    }
}

/// The name of a destination mode bit.
fn dest_mode_name(logical: bool) -> &'static str {
    if logical { "logical" } else { "physical" }
}

/// Names of the trigger modes.
fn trigger_names(text: &str) -> Option<u128> {
    match text.to_ascii_lowercase().as_str() {
        "edge" => Some(0),
        "level" => Some(1),
        _ => None,
    }
}

/// The name of a trigger mode bit.
fn trigger_name(level: bool) -> &'static str {
    if level { "level" } else { "edge" }
}

/// Little-endian bytes to an integer (at most 16 bytes are read).
fn le_u128(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take(16)
        .rev()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sizes_and_forms() {
        let names: Vec<&str> = HwType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "msi",
                "msi-compat",
                "vtd-msi",
                "amd-msi",
                "vtd-irte",
                "vtd-irta",
                "posted-desc",
                "amd-irte32",
                "amd-irte128"
            ]
        );
        assert_eq!(HwType::VtdIrte.integer_form(), IntegerForm::Word(16));
        assert_eq!(HwType::VtdIrta.integer_form(), IntegerForm::Word(8));
        assert_eq!(HwType::AmdIrte32.integer_form(), IntegerForm::Word(4));
        assert_eq!(HwType::PostedDesc.integer_form(), IntegerForm::None);
        assert_eq!(HwType::AmdMsi.integer_form(), IntegerForm::MsiPair);
    }

    #[test]
    fn values_parse_defaults_and_names() {
        const SPECS: &[FieldSpec] = &[
            FieldSpec::num("vector", 0xff),
            FieldSpec::num("delivery_mode", 7).named(delivery_mode_names),
            FieldSpec::flag("shv").default(1),
        ];
        let a = vec![
            Assignment {
                field: "vector".into(),
                value: "0x45".into(),
            },
            Assignment {
                field: "delivery_mode".into(),
                value: "NMI".into(),
            },
        ];
        let v = Values::parse("t", SPECS, &a).expect("parses");
        assert_eq!(v.num::<u8>("vector"), Ok(0x45));
        assert_eq!(v.get("delivery_mode"), 4);
        assert!(v.flag("shv"));
    }

    #[test]
    fn delivery_mode_names_round_trip() {
        for v in [0u8, 1, 2, 4, 5, 7] {
            assert_eq!(
                delivery_mode_names(delivery_mode_name(v)),
                Some(u128::from(v))
            );
        }
        assert_eq!(delivery_mode_name(3), "reserved");
        assert_eq!(delivery_mode_names("bogus"), None);
    }
}

//! Golden byte vectors: their text format, and decoding and re-encoding them with the abi.
//!
//! A vector file (`spec/vectors/*.hex`, described in `spec/vectors/README.md`) holds one encoded
//! value and the field values it encodes:
//!
//! ```text
//! # Free comment lines start with `#`.
//! # format: hw vtd_irte_remapped          what the bytes are (see VectorFormat)
//! # param: apic_mode = x2apic              decoding parameters of the format, if any
//! # field: present = 1                     every field of the decoded value, once
//! # field: vector = 0x45
//! 01 00 45 00 02 01 00 00                  the bytes in memory order, as hex pairs
//! 18 01 04 00 00 00 00 00
//! ```
//!
//! Values are decimal, `0x` hexadecimal (`_` separators allowed), or `true`/`false` (1/0).
//! Wire structures are `# format: wire <StructName>` with the abi's field names; fields of a
//! nested structure are written `outer.inner`. [`check`] decodes the bytes with the abi and
//! requires exactly the listed fields and values, then encodes the listed fields with the abi and
//! requires exactly the listed bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use vir_abi::hw::amd::AmdRemapIrte;
use vir_abi::hw::amd::{AmdIrte32, AmdIrte128GuestBits, AmdIrte128RemapBits};
use vir_abi::hw::fields::{FieldDesc, find};
use vir_abi::hw::vtd::{PostedIrteBits, RemappedIrteBits};
use vir_abi::hw::{
    AmdGuestIrte, AmdIrte32Entry, AmdIrte128, AmdIrteError, AmdMsi, AmdMsiError, ApicMode,
    CompatMsi, DeliveryMode, DestForm, Irte, IrteError, LengthError, MsiError, MsiMessage,
    PostedDescriptor, PostedError, PostedIrte, RemappableMsi, RemappedIrte, Svt, VtdMsiError,
};
use vir_abi::layout::{FieldType, StructDesc};

use crate::tables::{struct_by_c_name, struct_by_name};

/// A hardware encoding a vector can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    /// x86 compatibility-format MSI (12 bytes: address low, address high, data). Parameter
    /// `ext_dest_id` (bool).
    CompatMsi,
    /// x86 compatibility-format MSI in the x2APIC high-address form (12 bytes): APIC ID bits
    /// 31:8 in the high address, as QEMU and Linux's IOMMU interrupts use it. No parameter.
    CompatMsiX2apicHi,
    /// VT-d remappable-format MSI (12 bytes).
    VtdRemappableMsi,
    /// VT-d IRTE, remapped format (16 bytes). Parameter `apic_mode` (`xapic` or `x2apic`).
    VtdIrteRemapped,
    /// VT-d IRTE, posted format (16 bytes).
    VtdIrtePosted,
    /// Posted-interrupt descriptor (64 bytes). Parameter `apic_mode`.
    PostedDescriptor,
    /// AMD-Vi remapped MSI (12 bytes).
    AmdMsi,
    /// AMD-Vi 32-bit IRTE (4 bytes).
    AmdIrte32,
    /// AMD-Vi 128-bit IRTE, remapped mode (16 bytes).
    AmdIrte128Remapped,
    /// AMD-Vi 128-bit IRTE, guest virtual APIC mode (16 bytes).
    AmdIrte128Guest,
}

impl HwKind {
    /// Every kind, with its name in `# format: hw <name>`.
    pub const ALL: &'static [(&'static str, HwKind)] = &[
        ("compat_msi", HwKind::CompatMsi),
        ("compat_msi_x2apic_hi", HwKind::CompatMsiX2apicHi),
        ("vtd_remappable_msi", HwKind::VtdRemappableMsi),
        ("vtd_irte_remapped", HwKind::VtdIrteRemapped),
        ("vtd_irte_posted", HwKind::VtdIrtePosted),
        ("posted_descriptor", HwKind::PostedDescriptor),
        ("amd_msi", HwKind::AmdMsi),
        ("amd_irte_32", HwKind::AmdIrte32),
        ("amd_irte_128_remapped", HwKind::AmdIrte128Remapped),
        ("amd_irte_128_guest", HwKind::AmdIrte128Guest),
    ];

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<HwKind> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    /// The kind's name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// The encoded size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::CompatMsi | Self::CompatMsiX2apicHi | Self::VtdRemappableMsi | Self::AmdMsi => {
                MsiMessage::SIZE
            }
            Self::VtdIrteRemapped | Self::VtdIrtePosted => 16,
            Self::AmdIrte128Remapped | Self::AmdIrte128Guest => 16,
            Self::PostedDescriptor => PostedDescriptor::SIZE,
            Self::AmdIrte32 => 4,
        }
    }
}

/// What the bytes of a vector are.
#[derive(Debug, Clone, Copy)]
pub enum VectorFormat {
    /// A wire structure of `vir_abi::wire::ALL_STRUCTS`.
    Wire(&'static StructDesc),
    /// A hardware encoding.
    Hw(HwKind),
}

impl fmt::Display for VectorFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(d) => write!(f, "wire {}", d.name),
            Self::Hw(k) => write!(f, "hw {}", k.name()),
        }
    }
}

/// A parsed vector file.
#[derive(Debug, Clone)]
pub struct Vector {
    /// What the bytes are.
    pub format: VectorFormat,
    /// Decoding parameters (`# param:` lines).
    pub params: BTreeMap<String, String>,
    /// The listed field values (`# field:` lines), in file order.
    pub fields: Vec<(String, u128)>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What is wrong with a line of a vector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxError {
    /// A `# key:` line with an unknown key among `format`, `param`, `field`.
    UnknownDirective(String),
    /// A `param` or `field` line without `name = value`.
    MissingEquals(String),
    /// A value that is not decimal, `0x` hexadecimal or a boolean.
    BadValue(String),
    /// A token of a byte line that is not two hexadecimal digits.
    BadHex(String),
    /// A field listed twice.
    DuplicateField(String),
    /// A parameter listed twice.
    DuplicateParam(String),
    /// A second `format` line.
    DuplicateFormat,
    /// A `format` line naming neither `wire <Struct>` nor `hw <kind>`.
    UnknownFormat(String),
}

/// An error from decoding or encoding with the abi's hardware formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwError {
    /// Wrong length for a fixed-size format.
    Length(LengthError),
    /// Compatibility-format MSI.
    Msi(MsiError),
    /// VT-d remappable MSI.
    VtdMsi(VtdMsiError),
    /// VT-d IRTE.
    Irte(IrteError),
    /// Posted-interrupt descriptor.
    Posted(PostedError),
    /// AMD-Vi MSI.
    AmdMsi(AmdMsiError),
    /// AMD-Vi IRTE.
    AmdIrte(AmdIrteError),
}

/// Why a vector is malformed or disagrees with the abi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorError {
    /// A malformed line.
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        error: SyntaxError,
    },
    /// No `# format:` line.
    NoFormat,
    /// A parameter the format needs is missing.
    MissingParam(&'static str),
    /// A parameter has a value the format does not accept.
    BadParam {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The bytes have the wrong length for the format.
    Length {
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A field the decoded value has is not listed.
    MissingField(String),
    /// A listed field the format does not have.
    UnknownField(String),
    /// A listed value does not fit its field.
    FieldRange {
        /// The field.
        name: String,
        /// The value.
        value: u128,
    },
    /// The abi refused the bytes or the fields.
    Hw(HwError),
    /// The bytes decode to another variant than the format names (e.g. a posted IRTE in a
    /// `vtd_irte_remapped` vector).
    WrongVariant(HwKind),
    /// A decoded value differs from the listed one.
    FieldMismatch {
        /// The field.
        name: String,
        /// Listed in the file.
        listed: u128,
        /// Decoded from the bytes.
        decoded: u128,
    },
    /// A listed field differs from the bits the abi's field descriptor of the same name reads
    /// from the bytes.
    DescriptorMismatch {
        /// The field.
        name: String,
        /// Listed in the file.
        listed: u128,
        /// Read through the descriptor's bit range.
        read: u128,
    },
    /// Encoding the listed fields gives other bytes than the listed ones.
    BytesMismatch {
        /// Listed in the file.
        listed: Vec<u8>,
        /// Encoded from the fields.
        encoded: Vec<u8>,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { line, error } => write!(f, "line {line}: {error:?}"),
            Self::NoFormat => f.write_str("no `# format:` line"),
            Self::MissingParam(p) => write!(f, "missing `# param: {p} = ...`"),
            Self::BadParam { name, value } => {
                write!(f, "parameter {name} = {value} is not accepted")
            }
            Self::Length { expected, actual } => {
                write!(f, "{actual} bytes, the format has {expected}")
            }
            Self::MissingField(n) => write!(f, "field {n} is not listed"),
            Self::UnknownField(n) => write!(f, "listed field {n} does not exist in the format"),
            Self::FieldRange { name, value } => {
                write!(f, "value {value:#x} does not fit field {name}")
            }
            Self::Hw(e) => write!(f, "the abi refused the value: {e:?}"),
            Self::WrongVariant(k) => write!(f, "the bytes do not decode as {}", k.name()),
            Self::FieldMismatch {
                name,
                listed,
                decoded,
            } => write!(f, "field {name}: listed {listed:#x}, decoded {decoded:#x}"),
            Self::DescriptorMismatch { name, listed, read } => write!(
                f,
                "field {name}: listed {listed:#x}, its descriptor's bits hold {read:#x}"
            ),
            Self::BytesMismatch { listed, encoded } => write!(
                f,
                "encoding the fields gives\n  {}\nthe file lists\n  {}",
                hex(encoded),
                hex(listed)
            ),
        }
    }
}

impl std::error::Error for VectorError {}

/// Parse a value: decimal, `0x` hexadecimal (with optional `_`), `true` or `false`.
pub fn parse_value(s: &str) -> Option<u128> {
    let s = s.trim();
    match s {
        "true" => return Some(1),
        "false" => return Some(0),
        _ => {}
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    match clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        Some(h) if !h.is_empty() => u128::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None if !clean.is_empty() && clean.bytes().all(|b| b.is_ascii_digit()) => {
            clean.parse().ok()
        }
        None => None,
    }
}

fn parse_format(s: &str) -> Option<VectorFormat> {
    let mut words = s.split_whitespace();
    let (kind, name) = (words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    match kind {
        "wire" => struct_by_name(name).map(VectorFormat::Wire),
        "hw" => HwKind::from_name(name).map(VectorFormat::Hw),
        _ => None,
    }
}

/// Parse a vector file.
pub fn parse(text: &str) -> Result<Vector, VectorError> {
    let mut format = None;
    let mut params = BTreeMap::new();
    let mut fields: Vec<(String, u128)> = Vec::new();
    let mut bytes = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |error| VectorError::Syntax { line, error };
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(comment) = t.strip_prefix('#') {
            let c = comment.trim();
            let Some((key, rest)) = c.split_once(':') else {
                continue;
            };
            let key = key.trim();
            // Only single-word lower-case keys are directives; other comments may contain colons.
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            let rest = rest.trim();
            match key {
                "format" => {
                    if format.is_some() {
                        return Err(err(SyntaxError::DuplicateFormat));
                    }
                    format = Some(
                        parse_format(rest)
                            .ok_or_else(|| err(SyntaxError::UnknownFormat(rest.to_string())))?,
                    );
                }
                "param" | "field" => {
                    let (name, value) = rest
                        .split_once('=')
                        .ok_or_else(|| err(SyntaxError::MissingEquals(rest.to_string())))?;
                    let (name, value) = (name.trim().to_string(), value.trim().to_string());
                    if key == "param" {
                        if params.insert(name.clone(), value).is_some() {
                            return Err(err(SyntaxError::DuplicateParam(name)));
                        }
                    } else {
                        let v =
                            parse_value(&value).ok_or_else(|| err(SyntaxError::BadValue(value)))?;
                        if fields.iter().any(|(n, _)| *n == name) {
                            return Err(err(SyntaxError::DuplicateField(name)));
                        }
                        fields.push((name, v));
                    }
                }
                other => return Err(err(SyntaxError::UnknownDirective(other.to_string()))),
            }
            continue;
        }
        for tok in t.split_whitespace() {
            let ok = tok.len() == 2 && tok.bytes().all(|b| b.is_ascii_hexdigit());
            let b = u8::from_str_radix(tok, 16)
                .ok()
                .filter(|_| ok)
                .ok_or_else(|| err(SyntaxError::BadHex(tok.to_string())))?;
            bytes.push(b);
        }
    }
    Ok(Vector {
        format: format.ok_or(VectorError::NoFormat)?,
        params,
        fields,
        bytes,
    })
}

/// The flattened integer fields of a wire structure: (dotted name, offset, size).
pub fn wire_leaves(desc: &StructDesc) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for f in desc.fields {
        match f.ty {
            FieldType::Struct(c) => match struct_by_c_name(c) {
                Some(inner) => {
                    for (n, off, size) in wire_leaves(inner) {
                        out.push((format!("{}.{n}", f.name), f.offset + off, size));
                    }
                }
                None => out.push((f.name.to_string(), f.offset, f.size)),
            },
            _ => out.push((f.name.to_string(), f.offset, f.size)),
        }
    }
    out
}

fn le_read(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .rev()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

fn apic_mode(params: &BTreeMap<String, String>) -> Result<ApicMode, VectorError> {
    match params.get("apic_mode").map(String::as_str) {
        Some("x2apic") => Ok(ApicMode::X2Apic),
        Some("xapic") => Ok(ApicMode::XApic),
        Some(v) => Err(VectorError::BadParam {
            name: "apic_mode",
            value: v.to_string(),
        }),
        None => Err(VectorError::MissingParam("apic_mode")),
    }
}

fn bool_param(params: &BTreeMap<String, String>, name: &'static str) -> Result<bool, VectorError> {
    match params.get(name).map(String::as_str) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(VectorError::BadParam {
            name,
            value: v.to_string(),
        }),
        None => Err(VectorError::MissingParam(name)),
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], VectorError> {
    <[u8; N]>::try_from(bytes).map_err(|_| VectorError::Length {
        expected: N,
        actual: bytes.len(),
    })
}

fn msg(bytes: &[u8]) -> Result<MsiMessage, VectorError> {
    MsiMessage::from_bytes(bytes).map_err(|e| VectorError::Hw(HwError::Length(e)))
}

type Fields = Vec<(String, u128)>;

fn out(pairs: &[(&str, u128)]) -> Fields {
    pairs.iter().map(|(n, v)| ((*n).to_string(), *v)).collect()
}

fn remapped_fields(e: &RemappedIrte) -> Fields {
    out(&[
        ("present", e.present.into()),
        ("fpd", e.fpd.into()),
        ("dest_mode_logical", e.dest_mode_logical.into()),
        ("redirection_hint", e.redirection_hint.into()),
        ("trigger_level", e.trigger_level.into()),
        ("delivery_mode", e.delivery_mode.into()),
        ("avail", e.avail.into()),
        ("vector", e.vector.into()),
        ("dest", e.dest.into()),
        ("sid", e.sid.into()),
        ("sq", e.sq.into()),
        ("svt", e.svt.bits().into()),
    ])
}

fn posted_fields(e: &PostedIrte) -> Fields {
    out(&[
        ("present", e.present.into()),
        ("fpd", e.fpd.into()),
        ("avail", e.avail.into()),
        ("urgent", e.urgent.into()),
        ("vector", e.vector.into()),
        ("pda", e.pda.into()),
        ("sid", e.sid.into()),
        ("sq", e.sq.into()),
        ("svt", e.svt.bits().into()),
    ])
}

/// Decode `bytes` in `format` with the abi, returning every field with its value.
pub fn decode(
    format: VectorFormat,
    params: &BTreeMap<String, String>,
    bytes: &[u8],
) -> Result<Fields, VectorError> {
    let hw = |e| VectorError::Hw(e);
    let kind = match format {
        VectorFormat::Wire(desc) => {
            if bytes.len() != desc.size {
                return Err(VectorError::Length {
                    expected: desc.size,
                    actual: bytes.len(),
                });
            }
            return Ok(wire_leaves(desc)
                .into_iter()
                .map(|(n, off, size)| (n, le_read(&bytes[off..off + size])))
                .collect());
        }
        VectorFormat::Hw(k) => k,
    };
    Ok(match kind {
        HwKind::CompatMsi => {
            let ext = bool_param(params, "ext_dest_id")?;
            let m = CompatMsi::decode(msg(bytes)?, ext).map_err(|e| hw(HwError::Msi(e)))?;
            out(&[
                ("dest_id", m.dest_id.into()),
                ("dest_mode_logical", m.dest_mode_logical.into()),
                ("redirection_hint", m.redirection_hint.into()),
                ("vector", m.vector.into()),
                ("delivery_mode", m.delivery_mode.bits().into()),
                ("level_assert", m.level_assert.into()),
                ("trigger_level", m.trigger_level.into()),
            ])
        }
        HwKind::CompatMsiX2apicHi => {
            let (m, _) =
                CompatMsi::decode_form(msg(bytes)?, false).map_err(|e| hw(HwError::Msi(e)))?;
            out(&[
                ("dest_id", m.dest_id.into()),
                ("dest_mode_logical", m.dest_mode_logical.into()),
                ("redirection_hint", m.redirection_hint.into()),
                ("vector", m.vector.into()),
                ("delivery_mode", m.delivery_mode.bits().into()),
                ("level_assert", m.level_assert.into()),
                ("trigger_level", m.trigger_level.into()),
            ])
        }
        HwKind::VtdRemappableMsi => {
            let m = RemappableMsi::decode(msg(bytes)?).map_err(|e| hw(HwError::VtdMsi(e)))?;
            out(&[
                ("handle", m.handle.into()),
                ("shv", m.shv.into()),
                ("subhandle", m.subhandle.into()),
            ])
        }
        HwKind::VtdIrteRemapped | HwKind::VtdIrtePosted => {
            let raw = u128::from_le_bytes(fixed::<16>(bytes)?);
            let mode = if kind == HwKind::VtdIrteRemapped {
                apic_mode(params)?
            } else {
                ApicMode::X2Apic
            };
            match (
                kind,
                Irte::decode(raw, mode).map_err(|e| hw(HwError::Irte(e)))?,
            ) {
                (HwKind::VtdIrteRemapped, Irte::Remapped(e)) => remapped_fields(&e),
                (HwKind::VtdIrtePosted, Irte::Posted(e)) => posted_fields(&e),
                _ => return Err(VectorError::WrongVariant(kind)),
            }
        }
        HwKind::PostedDescriptor => {
            let mode = apic_mode(params)?;
            let d = PostedDescriptor::from_bytes(bytes).map_err(|e| hw(HwError::Posted(e)))?;
            d.validate(mode).map_err(|e| hw(HwError::Posted(e)))?;
            let pir = d.pir();
            out(&[
                ("pir0", pir.0[0].into()),
                ("pir1", pir.0[1].into()),
                ("pir2", pir.0[2].into()),
                ("pir3", pir.0[3].into()),
                ("on", d.on().into()),
                ("sn", d.sn().into()),
                ("nv", d.nv().into()),
                ("ndst", d.ndst(mode).into()),
            ])
        }
        HwKind::AmdMsi => {
            let m = AmdMsi::decode(msg(bytes)?).map_err(|e| hw(HwError::AmdMsi(e)))?;
            out(&[
                ("index", m.index.into()),
                ("address_dm", m.address_dm.into()),
            ])
        }
        HwKind::AmdIrte32 => {
            let raw = u32::from_le_bytes(fixed::<4>(bytes)?);
            let e = AmdIrte32Entry::decode(raw).map_err(|e| hw(HwError::AmdIrte(e)))?;
            out(&[
                ("remap_en", e.remap_en.into()),
                ("sup_iopf", e.sup_iopf.into()),
                ("int_type", e.int_type.into()),
                ("rq_eoi", e.rq_eoi.into()),
                ("dest_mode_logical", e.dest_mode_logical.into()),
                ("destination", e.destination.into()),
                ("vector", e.vector.into()),
            ])
        }
        HwKind::AmdIrte128Remapped | HwKind::AmdIrte128Guest => {
            let raw = u128::from_le_bytes(fixed::<16>(bytes)?);
            match (
                kind,
                AmdIrte128::decode(raw).map_err(|e| hw(HwError::AmdIrte(e)))?,
            ) {
                (HwKind::AmdIrte128Remapped, AmdIrte128::Remapped(e)) => out(&[
                    ("remap_en", e.remap_en.into()),
                    ("sup_iopf", e.sup_iopf.into()),
                    ("int_type", e.int_type.into()),
                    ("rq_eoi", e.rq_eoi.into()),
                    ("dest_mode_logical", e.dest_mode_logical.into()),
                    ("destination", e.destination.into()),
                    ("vector", e.vector.into()),
                ]),
                (HwKind::AmdIrte128Guest, AmdIrte128::Guest(e)) => out(&[
                    ("remap_en", e.remap_en.into()),
                    ("sup_iopf", e.sup_iopf.into()),
                    ("ga_log_intr", e.ga_log_intr.into()),
                    ("is_run", e.is_run.into()),
                    ("destination", e.destination.into()),
                    ("ga_tag", e.ga_tag.into()),
                    ("vector", e.vector.into()),
                    ("backing_page", e.backing_page.into()),
                ]),
                _ => return Err(VectorError::WrongVariant(kind)),
            }
        }
    })
}

/// Typed access to listed fields.
struct Listed<'a> {
    fields: &'a [(String, u128)],
}

impl Listed<'_> {
    fn raw(&self, name: &str) -> Result<u128, VectorError> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| VectorError::MissingField(name.to_string()))
    }

    fn int<T: TryFrom<u128>>(&self, name: &str) -> Result<T, VectorError> {
        let v = self.raw(name)?;
        T::try_from(v).map_err(|_| VectorError::FieldRange {
            name: name.to_string(),
            value: v,
        })
    }

    fn flag(&self, name: &str) -> Result<bool, VectorError> {
        match self.raw(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(VectorError::FieldRange {
                name: name.to_string(),
                value: v,
            }),
        }
    }

    fn svt(&self) -> Result<Svt, VectorError> {
        let v: u8 = self.int("svt")?;
        if v > 3 {
            return Err(VectorError::FieldRange {
                name: "svt".to_string(),
                value: v.into(),
            });
        }
        Ok(Svt::from_bits(v))
    }
}

/// Encode the listed `fields` in `format` with the abi. Fields the format does not have are an
/// error ([`VectorError::UnknownField`]), and so are missing ones.
pub fn encode(
    format: VectorFormat,
    params: &BTreeMap<String, String>,
    fields: &[(String, u128)],
) -> Result<Vec<u8>, VectorError> {
    let f = Listed { fields };
    let hw = |e| VectorError::Hw(e);
    let kind = match format {
        VectorFormat::Wire(desc) => {
            let leaves = wire_leaves(desc);
            if let Some((n, _)) = fields
                .iter()
                .find(|(n, _)| !leaves.iter().any(|l| l.0 == *n))
            {
                return Err(VectorError::UnknownField(n.clone()));
            }
            let mut buf = vec![0u8; desc.size];
            for (name, off, size) in leaves {
                let v = f.raw(&name)?;
                if size < 16 && v >> (8 * size) != 0 {
                    return Err(VectorError::FieldRange { name, value: v });
                }
                buf[off..off + size].copy_from_slice(&v.to_le_bytes()[..size]);
            }
            return Ok(buf);
        }
        VectorFormat::Hw(k) => k,
    };
    let bytes = match kind {
        HwKind::CompatMsiX2apicHi => {
            let dm: u8 = f.int("delivery_mode")?;
            let delivery_mode = DeliveryMode::from_bits(dm).ok_or(VectorError::FieldRange {
                name: "delivery_mode".to_string(),
                value: dm.into(),
            })?;
            let m = CompatMsi {
                dest_id: f.int("dest_id")?,
                dest_mode_logical: f.flag("dest_mode_logical")?,
                redirection_hint: f.flag("redirection_hint")?,
                vector: f.int("vector")?,
                delivery_mode,
                level_assert: f.flag("level_assert")?,
                trigger_level: f.flag("trigger_level")?,
            };
            m.encode_form(DestForm::HighAddress)
                .map_err(|e| hw(HwError::Msi(e)))?
                .to_bytes()
                .to_vec()
        }
        HwKind::CompatMsi => {
            let ext = bool_param(params, "ext_dest_id")?;
            let dm: u8 = f.int("delivery_mode")?;
            let delivery_mode = DeliveryMode::from_bits(dm).ok_or(VectorError::FieldRange {
                name: "delivery_mode".to_string(),
                value: dm.into(),
            })?;
            let m = CompatMsi {
                dest_id: f.int("dest_id")?,
                dest_mode_logical: f.flag("dest_mode_logical")?,
                redirection_hint: f.flag("redirection_hint")?,
                vector: f.int("vector")?,
                delivery_mode,
                level_assert: f.flag("level_assert")?,
                trigger_level: f.flag("trigger_level")?,
            };
            m.encode(ext)
                .map_err(|e| hw(HwError::Msi(e)))?
                .to_bytes()
                .to_vec()
        }
        HwKind::VtdRemappableMsi => RemappableMsi {
            handle: f.int("handle")?,
            shv: f.flag("shv")?,
            subhandle: f.int("subhandle")?,
        }
        .encode()
        .to_bytes()
        .to_vec(),
        HwKind::VtdIrteRemapped => {
            let e = RemappedIrte {
                present: f.flag("present")?,
                fpd: f.flag("fpd")?,
                dest_mode_logical: f.flag("dest_mode_logical")?,
                redirection_hint: f.flag("redirection_hint")?,
                trigger_level: f.flag("trigger_level")?,
                delivery_mode: f.int("delivery_mode")?,
                avail: f.int("avail")?,
                vector: f.int("vector")?,
                dest: f.int("dest")?,
                sid: f.int("sid")?,
                sq: f.int("sq")?,
                svt: f.svt()?,
            };
            let raw = e
                .encode(apic_mode(params)?)
                .map_err(|e| hw(HwError::Irte(e)))?;
            raw.to_le_bytes().to_vec()
        }
        HwKind::VtdIrtePosted => {
            let e = PostedIrte {
                present: f.flag("present")?,
                fpd: f.flag("fpd")?,
                avail: f.int("avail")?,
                urgent: f.flag("urgent")?,
                vector: f.int("vector")?,
                pda: f.int("pda")?,
                sid: f.int("sid")?,
                sq: f.int("sq")?,
                svt: f.svt()?,
            };
            e.encode()
                .map_err(|e| hw(HwError::Irte(e)))?
                .to_le_bytes()
                .to_vec()
        }
        HwKind::PostedDescriptor => {
            let mode = apic_mode(params)?;
            let mut d = PostedDescriptor::new();
            for (w, name) in ["pir0", "pir1", "pir2", "pir3"].into_iter().enumerate() {
                let word: u64 = f.int(name)?;
                for bit in 0..64u32 {
                    if word & (1 << bit) != 0 {
                        // w < 4 and bit < 64, so the vector is below 256.
                        let vector = u8::try_from(w as u32 * 64 + bit).map_err(|_| {
                            VectorError::FieldRange {
                                name: name.to_string(),
                                value: word.into(),
                            }
                        })?;
                        d.set_pir(vector);
                    }
                }
            }
            d.set_on(f.flag("on")?);
            d.set_sn(f.flag("sn")?);
            d.set_nv(f.int("nv")?);
            d.set_ndst(mode, f.int("ndst")?)
                .map_err(|e| hw(HwError::Posted(e)))?;
            d.to_bytes().to_vec()
        }
        HwKind::AmdMsi => AmdMsi {
            index: f.int("index")?,
            address_dm: f.flag("address_dm")?,
        }
        .encode()
        .map_err(|e| hw(HwError::AmdMsi(e)))?
        .to_bytes()
        .to_vec(),
        HwKind::AmdIrte32 => AmdIrte32Entry {
            remap_en: f.flag("remap_en")?,
            sup_iopf: f.flag("sup_iopf")?,
            int_type: f.int("int_type")?,
            rq_eoi: f.flag("rq_eoi")?,
            dest_mode_logical: f.flag("dest_mode_logical")?,
            destination: f.int("destination")?,
            vector: f.int("vector")?,
        }
        .encode()
        .map_err(|e| hw(HwError::AmdIrte(e)))?
        .to_le_bytes()
        .to_vec(),
        HwKind::AmdIrte128Remapped => AmdIrte128::Remapped(AmdRemapIrte {
            remap_en: f.flag("remap_en")?,
            sup_iopf: f.flag("sup_iopf")?,
            int_type: f.int("int_type")?,
            rq_eoi: f.flag("rq_eoi")?,
            dest_mode_logical: f.flag("dest_mode_logical")?,
            destination: f.int("destination")?,
            vector: f.int("vector")?,
        })
        .encode()
        .map_err(|e| hw(HwError::AmdIrte(e)))?
        .to_le_bytes()
        .to_vec(),
        HwKind::AmdIrte128Guest => AmdIrte128::Guest(AmdGuestIrte {
            remap_en: f.flag("remap_en")?,
            sup_iopf: f.flag("sup_iopf")?,
            ga_log_intr: f.flag("ga_log_intr")?,
            is_run: f.flag("is_run")?,
            destination: f.int("destination")?,
            ga_tag: f.int("ga_tag")?,
            vector: f.int("vector")?,
            backing_page: f.int("backing_page")?,
        })
        .encode()
        .map_err(|e| hw(HwError::AmdIrte(e)))?
        .to_le_bytes()
        .to_vec(),
    };
    Ok(bytes)
}

impl HwKind {
    /// The abi's field descriptor table of a table-entry kind (the whole entry, little-endian):
    /// every listed field whose name a descriptor has is also read straight from the bytes
    /// through the descriptor's bit range. `None` for the messages and the posted descriptor,
    /// whose listed fields combine several bit ranges under one name.
    pub fn descriptors(self) -> Option<&'static [FieldDesc]> {
        match self {
            Self::VtdIrteRemapped => Some(RemappedIrteBits::FIELDS),
            Self::VtdIrtePosted => Some(PostedIrteBits::FIELDS),
            Self::AmdIrte32 => Some(AmdIrte32::FIELDS),
            Self::AmdIrte128Remapped => Some(AmdIrte128RemapBits::FIELDS),
            Self::AmdIrte128Guest => Some(AmdIrte128GuestBits::FIELDS),
            Self::CompatMsi
            | Self::CompatMsiX2apicHi
            | Self::VtdRemappableMsi
            | Self::PostedDescriptor
            | Self::AmdMsi => None,
        }
    }
}

/// Reads every listed field that the kind's descriptor table names straight from the bytes;
/// returns how many fields were read.
pub fn check_descriptors(v: &Vector) -> Result<usize, VectorError> {
    let VectorFormat::Hw(kind) = v.format else {
        return Ok(0);
    };
    let Some(table) = kind.descriptors() else {
        return Ok(0);
    };
    let raw = le_read(&v.bytes);
    let mut read = 0;
    for (name, listed) in &v.fields {
        if let Some(d) = find(table, name) {
            let value = d.get(raw);
            if value != *listed {
                return Err(VectorError::DescriptorMismatch {
                    name: name.clone(),
                    listed: *listed,
                    read: value,
                });
            }
            read += 1;
        }
    }
    Ok(read)
}

/// Check a vector: its bytes decode to exactly the listed fields, the fields the abi's
/// descriptor tables name read back from the bytes through their bit ranges, and the listed
/// fields encode to exactly its bytes.
pub fn check(v: &Vector) -> Result<(), VectorError> {
    let decoded = decode(v.format, &v.params, &v.bytes)?;
    for (name, value) in &decoded {
        let listed = v
            .fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, x)| *x)
            .ok_or_else(|| VectorError::MissingField(name.clone()))?;
        if listed != *value {
            return Err(VectorError::FieldMismatch {
                name: name.clone(),
                listed,
                decoded: *value,
            });
        }
    }
    if let Some((n, _)) = v
        .fields
        .iter()
        .find(|(n, _)| !decoded.iter().any(|(d, _)| d == n))
    {
        return Err(VectorError::UnknownField(n.clone()));
    }
    check_descriptors(v)?;
    let encoded = encode(v.format, &v.params, &v.fields)?;
    if encoded != v.bytes {
        return Err(VectorError::BytesMismatch {
            listed: v.bytes.clone(),
            encoded,
        });
    }
    Ok(())
}

/// Why the vector directory could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// A directory or file could not be read.
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
    /// A file is not a valid vector.
    Vector {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: VectorError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, kind } => write!(f, "{}: {kind}", path.display()),
            Self::Vector { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Parse every `*.hex` file of `dir`, sorted by file name, keyed by file stem.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Vector)>, LoadError> {
    let io = |path: &Path, e: std::io::Error| LoadError::Io {
        path: path.to_path_buf(),
        kind: e.kind(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "hex") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let v = parse(&text).map_err(|error| LoadError::Vector {
            path: path.clone(),
            error,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        out.push((stem, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMAPPED: &str = "\
# A comment: with a colon.
# format: hw vtd_irte_remapped
# param: apic_mode = x2apic
# field: present = true
# field: fpd = 0
# field: dest_mode_logical = 0
# field: redirection_hint = 0
# field: trigger_level = 0
# field: delivery_mode = 0
# field: avail = 0
# field: vector = 0x45
# field: dest = 0x0000_0102
# field: sid = 0x0118
# field: sq = 0
# field: svt = 1
01 00 45 00 02 01 00 00
18 01 04 00 00 00 00 00
";

    #[test]
    fn values_parse_in_every_notation() {
        assert_eq!(parse_value("0x45"), Some(0x45));
        assert_eq!(parse_value("0xFEE0_0000"), Some(0xFEE0_0000));
        assert_eq!(parse_value("258"), Some(258));
        assert_eq!(parse_value("true"), Some(1));
        assert_eq!(parse_value("false"), Some(0));
        assert_eq!(parse_value("0x"), None);
        assert_eq!(parse_value("-1"), None);
        assert_eq!(parse_value("x2apic"), None);
    }

    #[test]
    fn a_valid_vector_parses_and_checks() {
        let v = parse(REMAPPED).unwrap();
        assert_eq!(v.bytes.len(), 16);
        assert_eq!(v.fields.len(), 12);
        assert_eq!(
            v.params.get("apic_mode").map(String::as_str),
            Some("x2apic")
        );
        assert_eq!(check(&v), Ok(()));
    }

    #[test]
    fn table_entry_fields_are_read_through_the_descriptors() {
        // present, vector and sid/svt by descriptor; dest (DST) has another name.
        let text = "# format: hw vtd_irte_remapped\n# param: apic_mode = x2apic\n\
# field: present = 1\n# field: fpd = 0\n# field: dest_mode_logical = 0\n\
# field: redirection_hint = 0\n# field: trigger_level = 0\n# field: delivery_mode = 0\n\
# field: avail = 0\n# field: vector = 0x45\n# field: dest = 0x102\n# field: sid = 0x118\n\
# field: sq = 0\n# field: svt = 1\n\
01 00 45 00 02 01 00 00 18 01 04 00 00 00 00 00\n";
        let v = parse(text).expect("parses");
        assert_eq!(check_descriptors(&v), Ok(11));
        let mut wrong = v.clone();
        wrong.fields.retain(|(n, _)| n != "sid");
        wrong.fields.push(("sid".into(), 0x119));
        assert_eq!(
            check_descriptors(&wrong),
            Err(VectorError::DescriptorMismatch {
                name: "sid".into(),
                listed: 0x119,
                read: 0x118
            })
        );
    }

    #[test]
    fn a_wrong_field_value_is_a_mismatch() {
        let v = parse(&REMAPPED.replace("vector = 0x45", "vector = 0x46")).unwrap();
        assert_eq!(
            check(&v),
            Err(VectorError::FieldMismatch {
                name: "vector".into(),
                listed: 0x46,
                decoded: 0x45
            })
        );
    }

    #[test]
    fn a_missing_or_unknown_field_is_reported() {
        let v = parse(&REMAPPED.replace("# field: sq = 0\n", "")).unwrap();
        assert_eq!(check(&v), Err(VectorError::MissingField("sq".into())));
        let v = parse(&REMAPPED.replace("# field: sq = 0\n", "# field: sq = 0\n# field: im = 0\n"))
            .unwrap();
        assert_eq!(check(&v), Err(VectorError::UnknownField("im".into())));
    }

    #[test]
    fn a_posted_entry_is_not_a_remapped_vector() {
        let v =
            parse(&REMAPPED.replace("01 00 45 00 02 01 00 00", "01 80 45 00 00 00 00 00")).unwrap();
        assert_eq!(
            check(&v),
            Err(VectorError::WrongVariant(HwKind::VtdIrteRemapped))
        );
    }

    #[test]
    fn syntax_errors_carry_lines() {
        assert_eq!(
            parse("# format: hw nope\n").unwrap_err(),
            VectorError::Syntax {
                line: 1,
                error: SyntaxError::UnknownFormat("hw nope".into())
            }
        );
        assert_eq!(
            parse("# format: wire FreeRequest\n0g\n").unwrap_err(),
            VectorError::Syntax {
                line: 2,
                error: SyntaxError::BadHex("0g".into())
            }
        );
        assert_eq!(
            parse("# format: wire FreeRequest\n# field: handle 3\n").unwrap_err(),
            VectorError::Syntax {
                line: 2,
                error: SyntaxError::MissingEquals("handle 3".into())
            }
        );
        assert_eq!(
            parse("# field: a = 1\n# field: a = 2\n").unwrap_err(),
            VectorError::Syntax {
                line: 2,
                error: SyntaxError::DuplicateField("a".into())
            }
        );
        assert_eq!(
            parse("# fields: a = 1\n").unwrap_err(),
            VectorError::Syntax {
                line: 1,
                error: SyntaxError::UnknownDirective("fields".into())
            }
        );
        assert_eq!(parse("00\n").unwrap_err(), VectorError::NoFormat);
    }

    #[test]
    fn wire_vectors_flatten_nested_structures() {
        let d = struct_by_name("ActivateRequest").unwrap();
        let leaves: Vec<String> = wire_leaves(d).into_iter().map(|l| l.0).collect();
        assert_eq!(
            leaves,
            [
                "handle",
                "subhandle",
                "flags",
                "target.apic_id",
                "target.vector",
                "target.reserved0",
                "target.reserved1"
            ]
        );
        let fields = vec![
            ("handle".to_string(), 1u128),
            ("reserved0".to_string(), 0x1_0000_0000),
        ];
        let fr = struct_by_name("FreeRequest").unwrap();
        assert_eq!(
            encode(VectorFormat::Wire(fr), &BTreeMap::new(), &fields),
            Err(VectorError::FieldRange {
                name: "reserved0".into(),
                value: 0x1_0000_0000
            })
        );
        assert_eq!(
            decode(VectorFormat::Wire(fr), &BTreeMap::new(), &[0; 7]),
            Err(VectorError::Length {
                expected: 8,
                actual: 7
            })
        );
    }
}

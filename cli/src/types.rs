//! The registry of types `decode` and `encode` take: the hardware formats of [`crate::hw`] and
//! every vIR wire structure of [`vir_abi::wire::ALL_STRUCTS`].

use std::fmt::Write as _;

use vir_abi::hw::ApicMode;
use vir_abi::layout::StructDesc;
use vir_abi::wire::ALL_STRUCTS;

use crate::error::{CliError, UsageError};
use crate::hw::{HwType, Options};
use crate::input::IntegerForm;
use crate::report::Report;
use crate::value::Assignment;
use crate::wire;

/// What a type is.
#[derive(Debug, Clone, Copy)]
pub enum TypeKind {
    /// A hardware format.
    Hw(HwType),
    /// A vIR wire structure.
    Wire(&'static StructDesc),
}

/// A type, with its command-line name.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// Name on the command line.
    pub name: String,
    /// What it is.
    pub kind: TypeKind,
}

impl TypeInfo {
    /// Size in bytes.
    pub fn size(&self) -> usize {
        match self.kind {
            TypeKind::Hw(t) => t.size(),
            TypeKind::Wire(d) => d.size,
        }
    }

    /// The integer form accepted besides bytes (wire structures take bytes only).
    pub fn integer_form(&self) -> IntegerForm {
        match self.kind {
            TypeKind::Hw(t) => t.integer_form(),
            TypeKind::Wire(_) => IntegerForm::None,
        }
    }

    /// One line for the type list.
    pub fn summary(&self) -> String {
        match self.kind {
            TypeKind::Hw(t) => t.summary().to_owned(),
            TypeKind::Wire(d) => wire::summary(d),
        }
    }

    /// The field names `encode` accepts.
    pub fn field_names(&self) -> Vec<String> {
        match self.kind {
            TypeKind::Hw(t) => t.field_names().into_iter().map(str::to_owned).collect(),
            TypeKind::Wire(d) => wire::field_names(d),
        }
    }

    /// The options for this type from the command-line flags; a flag that does not apply is a
    /// usage error.
    pub fn options(&self, xapic: bool, ext_dest_id: bool) -> Result<Options, UsageError> {
        self.options_with(xapic, ext_dest_id, false)
    }

    /// [`TypeInfo::options`] with `--x2apic-hi` (encode of `msi-compat`).
    pub fn options_with(
        &self,
        xapic: bool,
        ext_dest_id: bool,
        x2apic_hi: bool,
    ) -> Result<Options, UsageError> {
        if x2apic_hi && !matches!(self.kind, TypeKind::Hw(t) if t.takes_x2apic_hi()) {
            return Err(UsageError::OptionNotApplicable {
                option: "--x2apic-hi",
                ty: self.name.clone(),
            });
        }
        if x2apic_hi && ext_dest_id {
            return Err(UsageError::ConflictingOptions {
                option: "--x2apic-hi",
                with: "--ext-dest-id",
            });
        }
        let (takes_xapic, takes_ext) = match self.kind {
            TypeKind::Hw(t) => (t.takes_apic_mode(), t.takes_ext_dest_id()),
            TypeKind::Wire(_) => (false, false),
        };
        if xapic && !takes_xapic {
            return Err(UsageError::OptionNotApplicable {
                option: "--xapic",
                ty: self.name.clone(),
            });
        }
        if ext_dest_id && !takes_ext {
            return Err(UsageError::OptionNotApplicable {
                option: "--ext-dest-id",
                ty: self.name.clone(),
            });
        }
        Ok(Options {
            apic_mode: if xapic {
                ApicMode::XApic
            } else {
                ApicMode::X2Apic
            },
            ext_dest_id,
            x2apic_hi,
        })
    }

    /// Decodes `bytes`, which must be [`TypeInfo::size`] long.
    pub fn decode(&self, bytes: &[u8], opts: Options) -> Result<Report, CliError> {
        if bytes.len() != self.size() {
            return Err(CliError::Length {
                ty: self.name.clone(),
                expected: self.size(),
                actual: bytes.len(),
            });
        }
        match self.kind {
            TypeKind::Hw(t) => Ok(t.decode(bytes, opts)?),
            TypeKind::Wire(d) => Ok(wire::decode(&self.name, d, bytes)?),
        }
    }

    /// Encodes `assignments`; the result is decoded again, so it obeys every decode rule.
    pub fn encode(&self, assignments: &[Assignment], opts: Options) -> Result<Report, CliError> {
        match self.kind {
            TypeKind::Hw(t) => {
                let bytes = t.encode(assignments, opts)?;
                self.decode(&bytes, opts)
            }
            TypeKind::Wire(d) => wire::encode(&self.name, d, assignments),
        }
    }
}

/// Every type, hardware formats first.
pub fn all() -> Vec<TypeInfo> {
    let hw = HwType::ALL.iter().map(|&t| TypeInfo {
        name: t.name().to_owned(),
        kind: TypeKind::Hw(t),
    });
    let wire = ALL_STRUCTS.iter().map(|d| TypeInfo {
        name: wire::type_name(d),
        kind: TypeKind::Wire(d),
    });
    hw.chain(wire).collect()
}

/// The type called `name`.
pub fn lookup(name: &str) -> Result<TypeInfo, UsageError> {
    all()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| UsageError::UnknownType(name.to_owned()))
}

/// The type list of the help text; with `fields`, each type's `encode` fields too.
pub fn help_list(fields: bool) -> String {
    let types = all();
    let width = types.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut out = String::from("Hardware types:\n");
    let mut wire_started = false;
    for t in &types {
        if matches!(t.kind, TypeKind::Wire(_)) && !wire_started {
            out.push_str("vIR wire structures (bytes only; reserved fields must be 0):\n");
            wire_started = true;
        }
        let _ = writeln!(
            out,
            "  {:width$}  {} ({} bytes)",
            t.name,
            t.summary(),
            t.size()
        );
        if fields {
            let _ = writeln!(
                out,
                "  {:width$}    fields: {}",
                "",
                t.field_names().join(" ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_struct_and_hw_type_is_registered() {
        let names: Vec<String> = all().into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), HwType::ALL.len() + ALL_STRUCTS.len());
        for n in [
            "msi",
            "vtd-irte",
            "amd-irte128",
            "query-response",
            "doorbell-block",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "type names are unique");
    }

    #[test]
    fn lookup_and_options() {
        assert!(matches!(lookup("nope"), Err(UsageError::UnknownType(n)) if n == "nope"));
        let t = lookup("activate-request").expect("registered");
        assert_eq!(t.size(), 16);
        assert_eq!(t.integer_form(), IntegerForm::None);
        assert_eq!(
            t.options(true, false),
            Err(UsageError::OptionNotApplicable {
                option: "--xapic",
                ty: "activate-request".into()
            })
        );
        let t = lookup("vtd-irte").expect("registered");
        assert_eq!(
            t.options(true, false).map(|o| o.apic_mode),
            Ok(ApicMode::XApic)
        );
        assert_eq!(
            t.options(false, false).map(|o| o.apic_mode),
            Ok(ApicMode::X2Apic)
        );
        assert!(matches!(
            t.options(false, true),
            Err(UsageError::OptionNotApplicable {
                option: "--ext-dest-id",
                ..
            })
        ));
    }

    #[test]
    fn help_list_names_fields() {
        let h = help_list(true);
        assert!(
            h.contains("  activate-request      Request of ACTIVATE (16 bytes)\n"),
            "{h}"
        );
        assert!(
            h.contains("fields: handle subhandle flags target.apic_id target.vector"),
            "{h}"
        );
        assert!(h.contains("fields: im present fpd"), "{h}");
    }
}

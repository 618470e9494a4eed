//! vIR wire structures, handled through their layout descriptors.
//!
//! Every structure of [`vir_abi::wire::ALL_STRUCTS`] is decoded and encoded generically from its
//! [`StructDesc`]: the field names of the descriptor are the keys of `encode` and of the output,
//! nested structures are flattened as `outer.inner` (`target.apic_id`). On top of the layout, the
//! fields with a meaning in the ABI are interpreted:
//!
//! * a reserved field that is non-zero is an error naming the field (VIR-CALL-H-005), and so are
//!   undefined `ACTIVATE` flag bits and the reserved bits 31:16 of a doorbell block's `call`;
//! * message formats, storage kinds, VM states, statuses, call codes and feature sets are named;
//!   values the ABI does not define are flagged in a note (a guest or host answers them with a
//!   defined status, so they are malformed requests rather than unreadable bytes).

use std::fmt;

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::layout::{FieldType, StructDesc};
use vir_abi::status::Status;
use vir_abi::wire::{
    ALL_STRUCTS, MSI_MAX_LOG2, MessageFormat, StorageKind, TARGET_VECTOR_MIN, activate_flags,
    vm_state,
};

use crate::error::{CliError, UsageError};
use crate::report::{Line, Position, Report, Value};
use crate::value::{Assignment, ValueError, ValueProblem, check_known, max_of_bits, parse_value};

/// A malformed wire structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A reserved field is not zero.
    ReservedNonZero {
        /// The structure's type name.
        ty: String,
        /// The field (flattened name).
        field: String,
        /// Its value.
        value: u128,
    },
    /// Bits a field does not define are set.
    UndefinedBits {
        /// The structure's type name.
        ty: String,
        /// The field (flattened name).
        field: String,
        /// The undefined bits that are set.
        bits: u128,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedNonZero { ty, field, value } => {
                write!(f, "{ty}: reserved field {field} is {value:#x}, must be 0")
            }
            Self::UndefinedBits { ty, field, bits } => {
                write!(f, "{ty}: field {field} has undefined bits {bits:#x} set")
            }
        }
    }
}

/// What a field means, beyond its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    /// A plain number.
    Plain,
    /// Reserved: must be zero.
    Reserved,
    /// A [`MessageFormat`].
    Format,
    /// A `vm_state` value.
    VmState,
    /// A [`Features`] set.
    Features,
    /// A [`StorageKind`].
    Kind,
    /// `ACTIVATE` flags.
    ActivateFlags,
    /// A [`Status`].
    Status,
    /// The doorbell block's `call` word: code in 15:0, 31:16 reserved.
    CallWord,
    /// An allocation handle.
    Handle,
    /// A target vector.
    Vector,
    /// `ALLOCATE`'s `log2_count`.
    Log2Count,
    /// `QUERY`'s `max_msi_log2`.
    MaxMsiLog2,
}

/// The interpreted fields, by (structure name, field name) of the ABI's descriptors.
const SEMANTICS: &[(&str, &str, Semantic)] = &[
    ("QueryResponse", "message_format", Semantic::Format),
    ("QueryResponse", "max_msi_log2", Semantic::MaxMsiLog2),
    ("QueryResponse", "vm_state", Semantic::VmState),
    ("QueryResponse", "features_offered", Semantic::Features),
    ("QueryResponse", "features_active", Semantic::Features),
    ("NegotiateRequest", "features", Semantic::Features),
    ("NegotiateResponse", "features", Semantic::Features),
    ("AllocateRequest", "kind", Semantic::Kind),
    ("AllocateRequest", "log2_count", Semantic::Log2Count),
    ("AllocateResponse", "handle", Semantic::Handle),
    ("Target", "vector", Semantic::Vector),
    ("ActivateRequest", "handle", Semantic::Handle),
    ("ActivateRequest", "flags", Semantic::ActivateFlags),
    ("ActivateResponse", "format", Semantic::Format),
    ("SetAffinityRequest", "handle", Semantic::Handle),
    ("DeactivateRequest", "handle", Semantic::Handle),
    ("FreeRequest", "handle", Semantic::Handle),
    ("DoorbellBlock", "call", Semantic::CallWord),
    ("DoorbellBlock", "status", Semantic::Status),
];

/// A field of a structure, nested structures flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FlatField {
    /// Flattened name (`target.apic_id`).
    path: String,
    /// Byte offset in the outermost structure.
    offset: usize,
    /// Size in bytes.
    size: usize,
    /// Meaning.
    semantic: Semantic,
}

/// Fields wider than this are shown as bytes rather than as a number.
const MAX_NUMERIC_FIELD: usize = 16;

/// Nesting deeper than this is shown as opaque bytes (the ABI nests one level).
const MAX_NESTING: usize = 4;

/// The kebab-case type name of a structure (`ActivateRequest` → `activate-request`).
pub fn type_name(desc: &StructDesc) -> String {
    let mut out = String::with_capacity(desc.name.len() + 4);
    for (i, ch) in desc.name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i != 0 {
                out.push('-');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The first sentence of a structure's documentation, for the type list (code quotes
/// removed).
pub fn summary(desc: &StructDesc) -> String {
    let text = desc.doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = match text.find(". ") {
        Some(end) => &text[..end],
        None => text.trim_end_matches('.'),
    };
    sentence.replace('`', "")
}

/// The fields of `desc` with nested structures flattened.
fn flatten(desc: &StructDesc) -> Vec<FlatField> {
    let mut out = Vec::new();
    flatten_into(desc, "", 0, 0, &mut out);
    out
}

fn flatten_into(
    desc: &StructDesc,
    prefix: &str,
    base: usize,
    depth: usize,
    out: &mut Vec<FlatField>,
) {
    for field in desc.fields {
        let path = format!("{prefix}{}", field.name);
        let offset = base.saturating_add(field.offset);
        if let FieldType::Struct(c_name) = field.ty {
            let nested = ALL_STRUCTS.iter().find(|d| d.c_name == c_name);
            if let (Some(nested), true) = (nested, depth < MAX_NESTING) {
                flatten_into(nested, &format!("{path}."), offset, depth + 1, out);
                continue;
            }
        }
        let semantic = if field.is_reserved() {
            Semantic::Reserved
        } else {
            SEMANTICS
                .iter()
                .find(|(s, f, _)| *s == desc.name && *f == field.name)
                .map_or(Semantic::Plain, |&(_, _, sem)| sem)
        };
        out.push(FlatField {
            path,
            offset,
            size: field.size,
            semantic,
        });
    }
}

/// The little-endian integer in `bytes[offset..offset + size]` (`size` ≤ 16; missing bytes
/// read as zero, which cannot happen after the length check).
fn read_le(bytes: &[u8], offset: usize, size: usize) -> u128 {
    let end = offset.saturating_add(size);
    let field = bytes.get(offset..end).unwrap_or(&[]);
    field
        .iter()
        .rev()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

/// Decodes `bytes` (already checked to be `desc.size` long) as the structure `desc`.
pub fn decode(ty: &str, desc: &StructDesc, bytes: &[u8]) -> Result<Report, WireError> {
    let mut report = Report::new(ty, bytes);
    for f in flatten(desc) {
        let position = Position::Bytes {
            offset: f.offset,
            len: f.size,
        };
        if f.size > MAX_NUMERIC_FIELD {
            let raw = bytes
                .get(f.offset..f.offset.saturating_add(f.size))
                .unwrap_or(&[]);
            let first_nonzero = raw.iter().copied().find(|&b| b != 0);
            if let (Semantic::Reserved, Some(b)) = (f.semantic, first_nonzero) {
                return Err(WireError::ReservedNonZero {
                    ty: ty.to_owned(),
                    field: f.path,
                    value: u128::from(b),
                });
            }
            report.push(Line::new(f.path, Value::Bytes(raw.to_vec()), position));
            continue;
        }
        let v = read_le(bytes, f.offset, f.size);
        let line = Line::new(f.path.clone(), Value::Num(v), position);
        let line = interpret(ty, &f, v, line, &mut report)?;
        report.push(line);
    }
    Ok(report)
}

/// Applies a field's semantic: errors for reserved bits, a meaning, notes for undefined values.
fn interpret(
    ty: &str,
    f: &FlatField,
    v: u128,
    line: Line,
    report: &mut Report,
) -> Result<Line, WireError> {
    let name = &f.path;
    Ok(match f.semantic {
        Semantic::Plain => line,
        Semantic::Reserved => {
            if v != 0 {
                return Err(WireError::ReservedNonZero {
                    ty: ty.to_owned(),
                    field: f.path.clone(),
                    value: v,
                });
            }
            line
        }
        Semantic::Format => match u8::try_from(v).ok().and_then(|b| MessageFormat(b).name()) {
            Some(n) => {
                if v == u128::from(MessageFormat::X86_COMPAT.0) {
                    report.note(format!(
                        "{name}: a vIR host never returns X86_COMPAT messages (VIR-FMT-H-002)"
                    ));
                }
                line.meaning(n)
            }
            None => {
                report.note(format!("{name}: {v} is not a defined message format"));
                line.meaning("undefined")
            }
        },
        Semantic::VmState => match u8::try_from(v) {
            Ok(vm_state::LEGACY) => line.meaning("LEGACY"),
            Ok(vm_state::NEGOTIATED) => line.meaning("NEGOTIATED"),
            _ => {
                report.note(format!("{name}: {v} is not a defined VM state"));
                line.meaning("undefined")
            }
        },
        Semantic::Features => {
            // Feature fields are 64 bits wide.
            let set = Features(u64::try_from(v).unwrap_or(u64::MAX));
            let unknown = set.difference(Features::V1_DEFINED);
            if !unknown.is_empty() {
                report.note(format!(
                    "{name}: bits {:#x} are not version 1 features (a version 1 host never offers them, VIR-NEG-H-006; a guest ignores them, VIR-NEG-G-001)",
                    unknown.bits()
                ));
            }
            line.meaning(set.to_string())
        }
        Semantic::Kind => match u8::try_from(v).ok().and_then(|b| StorageKind(b).name()) {
            Some(n) => line.meaning(n),
            None => {
                report.note(format!(
                    "{name}: {v} is not a defined storage kind (INVALID_PARAMETER, VIR-ALC-H-001)"
                ));
                line.meaning("undefined")
            }
        },
        Semantic::ActivateFlags => {
            let undefined = v & !u128::from(activate_flags::V1_DEFINED);
            if undefined != 0 {
                return Err(WireError::UndefinedBits {
                    ty: ty.to_owned(),
                    field: f.path.clone(),
                    bits: undefined,
                });
            }
            if v & u128::from(activate_flags::RESERVE) != 0 {
                line.meaning("RESERVE")
            } else {
                line.meaning("(none)")
            }
        }
        Semantic::Status => {
            // The status field is 32 bits wide.
            let status = Status(u32::try_from(v).unwrap_or(u32::MAX));
            match status.name() {
                Some(n) => line.meaning(n),
                None => {
                    report.note(format!("{name}: {v:#x} is not a defined status"));
                    line.meaning("undefined")
                }
            }
        }
        Semantic::CallWord => {
            let high = v >> 16;
            if high != 0 {
                return Err(WireError::UndefinedBits {
                    ty: ty.to_owned(),
                    field: format!("{} (reserved bits 31:16)", f.path),
                    bits: high << 16,
                });
            }
            // `v` fits in 16 bits here.
            let code = CallCode(u16::try_from(v).unwrap_or(u16::MAX));
            match code.name() {
                Some(n) => line.meaning(n),
                None => {
                    report.note(format!(
                        "{name}: {v:#06x} is not a version 1 call (UNKNOWN_CALL, VIR-CALL-H-002)"
                    ));
                    line.meaning("undefined")
                }
            }
        }
        Semantic::Handle => {
            if v == u128::from(vir_abi::wire::HANDLE_INVALID) {
                report.note(format!("{name}: handle 0 is never issued (VIR-ALC-H-010)"));
                line.meaning("HANDLE_INVALID")
            } else {
                line
            }
        }
        Semantic::Vector => {
            if v < u128::from(TARGET_VECTOR_MIN) {
                report.note(format!(
                    "{name}: vector {v:#x} is below {TARGET_VECTOR_MIN:#x} (INVALID_TARGET for a plain activation, VIR-ACT-H-005)"
                ));
            }
            line
        }
        Semantic::Log2Count | Semantic::MaxMsiLog2 => {
            if v > u128::from(MSI_MAX_LOG2) {
                report.note(format!(
                    "{name}: {v} exceeds the largest MSI block, log2 {MSI_MAX_LOG2} (VIR-ALC-H-003)"
                ));
                line
            } else {
                let count = 1u32 << v;
                line.meaning(if count == 1 {
                    "1 vector".to_owned()
                } else {
                    format!("{count} vectors")
                })
            }
        }
    })
}

/// Resolves a symbolic value for a field with `semantic`, `None` if the text names nothing.
fn resolve_name(semantic: Semantic, text: &str) -> Option<u128> {
    let eq = |a: &str| a.eq_ignore_ascii_case(text);
    match semantic {
        Semantic::Format => (0..=u8::MAX)
            .find(|&b| MessageFormat(b).name().is_some_and(eq))
            .map(u128::from),
        Semantic::Kind => (0..=u8::MAX)
            .find(|&b| StorageKind(b).name().is_some_and(eq))
            .map(u128::from),
        Semantic::VmState => {
            if eq("LEGACY") {
                Some(u128::from(vm_state::LEGACY))
            } else if eq("NEGOTIATED") {
                Some(u128::from(vm_state::NEGOTIATED))
            } else {
                None
            }
        }
        Semantic::Features => {
            let mut bits = 0u128;
            for part in text.split(['|', ',']) {
                let part = part.trim();
                let bit = if let Some(v) = crate::value::parse_number(part) {
                    v
                } else {
                    let i = Features::V1_NAMES
                        .iter()
                        .position(|n| n.eq_ignore_ascii_case(part))?;
                    1u128 << i
                };
                bits |= bit;
            }
            Some(bits)
        }
        Semantic::ActivateFlags => {
            if eq("RESERVE") {
                Some(u128::from(activate_flags::RESERVE))
            } else if eq("none") {
                Some(0)
            } else {
                None
            }
        }
        Semantic::Status => Status::ALL
            .iter()
            .find(|s| s.name().is_some_and(eq))
            .map(|s| u128::from(s.0)),
        Semantic::CallWord => CallCode::V1
            .iter()
            .find(|c| c.name().is_some_and(eq))
            .map(|c| u128::from(c.0)),
        Semantic::Handle => eq("HANDLE_INVALID").then_some(0),
        Semantic::Plain
        | Semantic::Reserved
        | Semantic::Vector
        | Semantic::Log2Count
        | Semantic::MaxMsiLog2 => None,
    }
}

/// The field names `encode` accepts for `desc`.
pub fn field_names(desc: &StructDesc) -> Vec<String> {
    flatten(desc).into_iter().map(|f| f.path).collect()
}

/// Encodes `assignments` as the structure `desc`; fields not assigned are zero. The result is
/// decoded again, so it obeys every rule of [`decode`].
pub fn encode(ty: &str, desc: &StructDesc, assignments: &[Assignment]) -> Result<Report, CliError> {
    let fields = flatten(desc);
    let names: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
    check_known(ty, assignments, &names)?;
    let mut bytes = vec![0u8; desc.size];
    for a in assignments {
        let Some(f) = fields.iter().find(|f| f.path == a.field) else {
            return Err(UsageError::unknown_field(ty, &a.field, &names).into());
        };
        let end = f.offset.saturating_add(f.size);
        let Some(target) = bytes.get_mut(f.offset..end) else {
            continue;
        };
        if f.size > MAX_NUMERIC_FIELD {
            let value = crate::input::parse_hex_bytes(&a.value)?;
            if value.len() != f.size {
                return Err(ValueError::new(
                    &a.field,
                    ValueProblem::WrongByteCount {
                        expected: f.size,
                        actual: value.len(),
                    },
                )
                .into());
            }
            if f.semantic == Semantic::Reserved && value.iter().any(|&b| b != 0) {
                return Err(ValueError::new(&a.field, ValueProblem::ReservedBytes).into());
            }
            target.copy_from_slice(&value);
            continue;
        }
        let bits = u32::try_from(f.size.saturating_mul(8)).unwrap_or(128);
        let semantic = f.semantic;
        let v = parse_value(&a.field, &a.value, max_of_bits(bits), &|t| {
            resolve_name(semantic, t)
        })?;
        if semantic == Semantic::Reserved && v != 0 {
            return Err(ValueError::new(&a.field, ValueProblem::Reserved(v)).into());
        }
        for (dst, src) in target.iter_mut().zip(v.to_le_bytes()) {
            *dst = src;
        }
    }
    Ok(decode(ty, desc, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::layout::{Field, WireLayout};
    use vir_abi::wire::{ActivateRequest, DoorbellBlock, QueryResponse};
    use zerocopy::IntoBytes;

    fn desc_named(name: &str) -> &'static StructDesc {
        ALL_STRUCTS
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} not in ALL_STRUCTS"))
    }

    fn assign(pairs: &[(&str, &str)]) -> Vec<Assignment> {
        pairs
            .iter()
            .map(|(f, v)| Assignment {
                field: (*f).into(),
                value: (*v).into(),
            })
            .collect()
    }

    #[test]
    fn every_semantic_names_a_real_field() {
        for (s, f, _) in SEMANTICS {
            let desc = desc_named(s);
            assert!(
                desc.fields.iter().any(|x| x.name == *f && !x.is_reserved()),
                "{s}.{f} is not a field of the ABI"
            );
        }
    }

    #[test]
    fn summaries_are_first_sentences() {
        assert_eq!(
            summary(desc_named("ActivateRequest")),
            "Request of ACTIVATE"
        );
        assert_eq!(
            summary(desc_named("Target")),
            "Where an interrupt is delivered: a guest (x2)APIC id and vector, physical destination, fixed delivery, edge-triggered"
        );
    }

    #[test]
    fn type_names_are_kebab_case() {
        let names: Vec<String> = ALL_STRUCTS.iter().map(type_name).collect();
        assert_eq!(
            names,
            [
                "query-response",
                "negotiate-request",
                "negotiate-response",
                "allocate-request",
                "allocate-response",
                "target",
                "activate-request",
                "activate-response",
                "set-affinity-request",
                "deactivate-request",
                "free-request",
                "quota-response",
                "doorbell-block",
            ]
        );
    }

    #[test]
    fn nested_target_is_flattened() {
        let names = field_names(desc_named("ActivateRequest"));
        assert_eq!(
            names,
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
    }

    // VIR-CALL-H-005: a reserved field that is non-zero is named.
    #[test]
    fn reserved_nested_field_is_an_error_naming_it() {
        let mut req = ActivateRequest::default();
        req.handle.set(1);
        req.target.reserved1.set(0x100);
        let desc = StructDesc::of::<ActivateRequest>();
        assert_eq!(
            decode("activate-request", &desc, req.as_bytes()),
            Err(WireError::ReservedNonZero {
                ty: "activate-request".into(),
                field: "target.reserved1".into(),
                value: 0x100
            })
        );
    }

    // VIR-CALL-H-005: undefined flag bits are rejected like reserved fields.
    #[test]
    fn undefined_activate_flags_are_an_error() {
        let mut req = ActivateRequest::default();
        req.flags.set(0x0003);
        let desc = StructDesc::of::<ActivateRequest>();
        assert_eq!(
            decode("activate-request", &desc, req.as_bytes()),
            Err(WireError::UndefinedBits {
                ty: "activate-request".into(),
                field: "flags".into(),
                bits: 2
            })
        );
    }

    #[test]
    fn doorbell_call_high_bits_are_reserved() {
        let mut block = DoorbellBlock::default();
        block.call.set(0x0001_0011);
        let desc = StructDesc::of::<DoorbellBlock>();
        assert_eq!(
            decode("doorbell-block", &desc, block.as_bytes()),
            Err(WireError::UndefinedBits {
                ty: "doorbell-block".into(),
                field: "call (reserved bits 31:16)".into(),
                bits: 0x0001_0000
            })
        );
        block.call.set(0x0011);
        block.status.set(14);
        let r = decode("doorbell-block", &desc, block.as_bytes());
        let r = r
            .as_ref()
            .map(|r| (r.lines[0].meaning.clone(), r.lines[1].meaning.clone()));
        assert_eq!(
            r,
            Ok((Some("ACTIVATE".into()), Some("INVALID_HANDLE".into())))
        );
    }

    #[test]
    fn query_response_semantics_and_notes() {
        let mut q = QueryResponse::default();
        q.min_version.set(1);
        q.max_version.set(1);
        q.message_format = 7;
        q.max_msi_log2 = 5;
        q.vm_state = 1;
        q.features_offered.set(0x23 | (1 << 40));
        let desc = StructDesc::of::<QueryResponse>();
        let r = decode("query-response", &desc, q.as_bytes()).expect("decodes");
        assert_eq!(r.get("message_format"), Some(&Value::Num(7)));
        let meaning = |n: &str| {
            r.lines
                .iter()
                .find(|l| l.name == n)
                .and_then(|l| l.meaning.clone())
        };
        assert_eq!(meaning("message_format").as_deref(), Some("undefined"));
        assert_eq!(meaning("vm_state").as_deref(), Some("NEGOTIATED"));
        assert_eq!(meaning("max_msi_log2").as_deref(), Some("32 vectors"));
        assert_eq!(
            meaning("features_offered").as_deref(),
            Some("MSI|MSIX|QUOTA_QUERY|bit40")
        );
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(r.notes[0].starts_with("message_format: 7 is not a defined message format"));
        assert!(r.notes[1].starts_with("features_offered: bits 0x10000000000 are not"));
    }

    #[test]
    fn encode_accepts_names_and_checks_ranges() {
        let desc = desc_named("AllocateRequest");
        let r = encode(
            "allocate-request",
            desc,
            &assign(&[("device_id", "0x0300"), ("kind", "msix"), ("index", "7")]),
        )
        .expect("encodes");
        assert_eq!(
            r.bytes,
            [0x00, 0x03, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        let err = encode("allocate-request", desc, &assign(&[("kind", "256")]));
        assert!(
            matches!(
                &err,
                Err(CliError::Value(ValueError { field, problem: ValueProblem::OutOfRange { value: 256, max: 255 } })) if field == "kind"
            ),
            "{err:?}"
        );
        let err = encode("allocate-request", desc, &assign(&[("reserved1", "1")]));
        assert!(
            matches!(
                &err,
                Err(CliError::Value(ValueError {
                    problem: ValueProblem::Reserved(1),
                    ..
                }))
            ),
            "{err:?}"
        );
        let err = encode("allocate-request", desc, &assign(&[("kindd", "1")]));
        assert!(
            matches!(&err, Err(CliError::Usage(UsageError::UnknownField { field, .. })) if field == "kindd"),
            "{err:?}"
        );
    }

    #[test]
    fn encode_features_by_names() {
        let desc = desc_named("NegotiateRequest");
        let r = encode(
            "negotiate-request",
            desc,
            &assign(&[("version", "1"), ("features", "MSI|msix|0x20")]),
        )
        .expect("encodes");
        assert_eq!(read_le(&r.bytes, 8, 8), 0x23);
    }

    #[test]
    fn wide_byte_fields_are_bytes() {
        const FIELDS: &[Field] = &[
            Field {
                name: "blob",
                offset: 0,
                size: 24,
                ty: FieldType::Bytes(24),
                doc: "",
            },
            Field {
                name: "reserved0",
                offset: 24,
                size: 24,
                ty: FieldType::Bytes(24),
                doc: "",
            },
        ];
        let desc = StructDesc {
            name: "Blob",
            c_name: "vir_blob",
            doc: "",
            fields: FIELDS,
            size: 48,
        };
        let mut bytes = [0u8; 48];
        bytes[1] = 0xaa;
        let r = decode("blob", &desc, &bytes).expect("decodes");
        assert_eq!(r.lines[0].value, Value::Bytes(bytes[..24].to_vec()));
        bytes[30] = 1;
        assert_eq!(
            decode("blob", &desc, &bytes),
            Err(WireError::ReservedNonZero {
                ty: "blob".into(),
                field: "reserved0".into(),
                value: 1
            })
        );
        let blob = "00".repeat(23) + "5a";
        let r = encode("blob", &desc, &assign(&[("blob", &blob)])).expect("encodes");
        assert_eq!(r.bytes[23], 0x5a);
        let err = encode("blob", &desc, &assign(&[("blob", "00 01")]));
        assert!(
            matches!(
                &err,
                Err(CliError::Value(ValueError {
                    problem: ValueProblem::WrongByteCount {
                        expected: 24,
                        actual: 2
                    },
                    ..
                }))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn layouts_match_sizes() {
        for d in ALL_STRUCTS {
            let last = flatten(d).last().map(|f| f.offset + f.size);
            assert_eq!(last, Some(d.size), "{}", d.name);
        }
        assert_eq!(QueryResponse::SIZE, 40);
    }
}

//! The 64-byte posted-interrupt descriptor.

use vir_abi::hw::{ApicMode, PostedDescriptor};

use super::{FieldSpec, HwError, HwErrorKind, HwType, Options, Values};
use crate::error::CliError;
use crate::report::{Line, Position, Report, Value};
use crate::value::{Assignment, ValueError, ValueProblem, parse_number};

/// Fields of `posted-desc` other than `pir` (which takes a vector list, see [`encode`]).
pub const FIELDS: &[FieldSpec] = &[
    FieldSpec::num("pir", 0),
    FieldSpec::flag("on"),
    FieldSpec::flag("sn"),
    FieldSpec::num("nv", 0xFF),
    FieldSpec::num("ndst", u32::MAX as u128),
];

/// Decodes `posted-desc`; in xAPIC mode NDST bits outside 15:8 are reserved.
pub fn decode(bytes: &[u8], opts: Options) -> Result<Report, HwError> {
    let ty = HwType::PostedDesc;
    let err = |e| HwError::new(ty, HwErrorKind::Posted(e));
    let d = PostedDescriptor::from_bytes(bytes).map_err(err)?;
    d.validate(opts.apic_mode).map_err(err)?;
    let mut r = Report::new(ty.name(), bytes);
    let pir: Vec<u8> = d.pir().vectors().collect();
    r.push(Line::new(
        "pir",
        Value::Vectors(pir),
        Position::bits(255, 0),
    ));
    r.push(
        Line::new("on", Value::Flag(d.on()), Position::bits(256, 256)).meaning(if d.on() {
            "notification outstanding"
        } else {
            "no notification outstanding"
        }),
    );
    r.push(Line::new(
        "sn",
        Value::Flag(d.sn()),
        Position::bits(257, 257),
    ));
    r.push(Line::new(
        "nv",
        Value::Num(u128::from(d.nv())),
        Position::bits(279, 272),
    ));
    let (ndst, mode) = match opts.apic_mode {
        ApicMode::X2Apic => (Position::bits(319, 288), "x2APIC APIC ID"),
        ApicMode::XApic => (Position::bits(303, 296), "xAPIC APIC ID"),
    };
    r.push(Line::new("ndst", Value::Num(u128::from(d.ndst(opts.apic_mode))), ndst).meaning(mode));
    Ok(r)
}

/// Parses the `pir` value: vectors separated by `,` (or `none`).
fn parse_pir(text: &str) -> Result<Vec<u8>, ValueError> {
    if text.eq_ignore_ascii_case("none") || text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let v = parse_number(part)
                .ok_or_else(|| ValueError::new("pir", ValueProblem::NotANumber(part.to_owned())))?;
            u8::try_from(v).map_err(|_| {
                ValueError::new(
                    "pir",
                    ValueProblem::OutOfRange {
                        value: v,
                        max: 0xFF,
                    },
                )
            })
        })
        .collect()
}

/// Encodes `posted-desc`. `pir` is a list of vectors (`pir=0x45,0x80`); `ndst` is an APIC ID,
/// placed per `--xapic`.
pub fn encode(assignments: &[Assignment], opts: Options) -> Result<Vec<u8>, CliError> {
    let ty = HwType::PostedDesc;
    let (pir, rest): (Vec<Assignment>, Vec<Assignment>) =
        assignments.iter().cloned().partition(|a| a.field == "pir");
    let v = Values::parse(ty.name(), FIELDS, &rest)?;
    let mut d = PostedDescriptor::new();
    for a in &pir {
        for vector in parse_pir(&a.value)? {
            d.set_pir(vector);
        }
    }
    d.set_on(v.flag("on"));
    d.set_sn(v.flag("sn"));
    d.set_nv(v.num("nv")?);
    d.set_ndst(opts.apic_mode, v.num("ndst")?)
        .map_err(|e| HwError::new(ty, HwErrorKind::Posted(e)))?;
    Ok(d.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::PostedError;

    const X2: Options = Options {
        apic_mode: ApicMode::X2Apic,
        ext_dest_id: false,
        x2apic_hi: false,
    };
    const XAPIC: Options = Options {
        apic_mode: ApicMode::XApic,
        ext_dest_id: false,
        x2apic_hi: false,
    };

    fn a(f: &str, v: &str) -> Assignment {
        Assignment {
            field: f.into(),
            value: v.into(),
        }
    }

    #[test]
    fn round_trip_with_pir_list() {
        let bytes = encode(
            &[
                a("pir", "0x45,0x80,255"),
                a("on", "1"),
                a("nv", "0xf2"),
                a("ndst", "3"),
            ],
            XAPIC,
        )
        .expect("encodes");
        assert_eq!(bytes[8], 0x20, "vector 0x45 is bit 5 of byte 8");
        assert_eq!(
            bytes[36..40],
            [0x00, 0x03, 0x00, 0x00],
            "xAPIC NDST in bits 15:8"
        );
        let r = decode(&bytes, XAPIC).expect("decodes");
        assert_eq!(r.get("pir"), Some(&Value::Vectors(vec![0x45, 0x80, 0xff])));
        assert_eq!(r.get("on"), Some(&Value::Flag(true)));
        assert_eq!(r.get("nv"), Some(&Value::Num(0xf2)));
        assert_eq!(r.get("ndst"), Some(&Value::Num(3)));
        // Read in x2APIC mode the same NDST is 0x300.
        let r = decode(&bytes, X2).expect("decodes");
        assert_eq!(r.get("ndst"), Some(&Value::Num(0x300)));
    }

    #[test]
    fn errors_are_typed() {
        let mut bytes = [0u8; 64];
        bytes[50] = 1;
        assert_eq!(
            decode(&bytes, X2),
            Err(HwError {
                ty: "posted-desc",
                kind: HwErrorKind::Posted(PostedError::ReservedBit(400))
            })
        );
        assert_eq!(
            parse_pir("0x45,256"),
            Err(ValueError::new(
                "pir",
                ValueProblem::OutOfRange {
                    value: 256,
                    max: 255
                }
            ))
        );
        let err = encode(&[a("ndst", "256")], XAPIC);
        assert!(
            matches!(
                &err,
                Err(CliError::Hw(HwError {
                    kind: HwErrorKind::Posted(PostedError::XApicDestinationTooLarge(256)),
                    ..
                }))
            ),
            "{err:?}"
        );
    }
}

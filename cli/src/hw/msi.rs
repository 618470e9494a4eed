//! MSI messages: any (classified), compatibility format, VT-d remappable, AMD-Vi.
//!
//! A message is 12 bytes, `address_lo`, `address_hi`, `data`, each little-endian (the
//! `0xADDRESS 0xDATA` integer form is converted to that by the input parser).

use vir_abi::hw::{
    AmdMsi, CompatAddress, CompatData, CompatMsi, DeliveryMode, DestForm, MessageKind, MsiMessage,
    RemappableMsi, classify,
};

use vir_abi::hw::fields::{FieldDesc, find};

use super::{
    FieldSpec, HwError, HwErrorKind, HwType, Options, Values, delivery_mode_name,
    delivery_mode_names, dest_mode_name, dest_mode_names, trigger_name, trigger_names,
};
use crate::error::CliError;
use crate::report::{Line, Position, Report, Value};
use crate::value::{Assignment, ValueError, ValueProblem};

/// Fields of `msi`: the raw words.
pub const ANY_FIELDS: &[FieldSpec] = &[
    FieldSpec::num("address", u64::MAX as u128),
    FieldSpec::num("data", u32::MAX as u128),
];

/// Fields of `msi-compat`.
pub const COMPAT_FIELDS: &[FieldSpec] = &[
    FieldSpec::num("dest_id", u32::MAX as u128),
    FieldSpec::flag("dest_mode_logical").named(dest_mode_names),
    FieldSpec::flag("redirection_hint").kernel_from(CompatAddress::FIELDS, "redirection_hint"),
    FieldSpec::num("vector", 0xFF),
    FieldSpec::num("delivery_mode", 7).named(delivery_mode_names),
    FieldSpec::flag("level_assert"),
    FieldSpec::flag("trigger_level")
        .named(trigger_names)
        .kernel_from(CompatData::FIELDS, "trigger_level"),
];

/// Fields of `vtd-msi`. SHV defaults to 1, as Linux always sets it.
pub const VTD_FIELDS: &[FieldSpec] = &[
    FieldSpec::num("handle", 0xFFFF),
    FieldSpec::flag("shv").default(1),
    FieldSpec::num("subhandle", 0xFFFF),
];

/// Fields of `amd-msi`.
pub const AMD_FIELDS: &[FieldSpec] = &[
    FieldSpec::num("index", AmdMsi::MAX_INDEX as u128),
    FieldSpec::flag("address_dm"),
];

/// The message in `bytes`.
fn message(ty: HwType, bytes: &[u8]) -> Result<MsiMessage, HwError> {
    MsiMessage::from_bytes(bytes).map_err(|e| HwError::new(ty, HwErrorKind::Length(e)))
}

/// A report starting with the message's address and data words.
fn report(ty: HwType, msg: MsiMessage) -> Report {
    let mut r = Report::new(ty.name(), &msg.to_bytes());
    r.push(Line::new(
        "address",
        Value::Num(u128::from(msg.address())),
        Position::Bytes { offset: 0, len: 8 },
    ));
    r.push(Line::new(
        "data",
        Value::Num(u128::from(msg.data)),
        Position::Bytes { offset: 8, len: 4 },
    ));
    r
}

/// The position of the field `name` of a 32-bit message word from the abi's descriptor table.
fn word_position(word: &'static str, fields: &'static [FieldDesc], name: &str) -> Position {
    match find(fields, name) {
        Some(d) => Position::word_bits(word, d.hi(), d.lo),
        None => Position::Derived,
    }
}

/// Appends the fields of a compatibility-format message.
fn compat_lines(r: &mut Report, m: &CompatMsi, form: DestForm) {
    let dest_bits = match form {
        DestForm::ExtDestId => vec![(11, 5), (19, 12)],
        DestForm::HighAddress => vec![(63, 40), (19, 12)],
        DestForm::Xapic => vec![(19, 12)],
    };
    r.push(
        Line::new(
            "dest_id",
            Value::Num(u128::from(m.dest_id)),
            Position::Bits {
                word: Some("address"),
                ranges: dest_bits,
            },
        )
        .meaning(format!("APIC ID, {} form", form.name())),
    );
    if form == DestForm::HighAddress {
        r.note("x2APIC high-address form: APIC ID bits 31:8 in address bits 63:40 (QEMU's emulated IOMMUs deliver remapped interrupts this way; Linux composes the IOMMU's own interrupts so)");
    }
    r.push(
        Line::new(
            "dest_mode_logical",
            Value::Flag(m.dest_mode_logical),
            word_position("address", CompatAddress::FIELDS, "dest_mode_logical"),
        )
        .meaning(dest_mode_name(m.dest_mode_logical)),
    );
    r.push(Line::new(
        "redirection_hint",
        Value::Flag(m.redirection_hint),
        word_position("address", CompatAddress::FIELDS, "redirection_hint"),
    ));
    r.push(Line::new(
        "vector",
        Value::Num(u128::from(m.vector)),
        word_position("data", CompatData::FIELDS, "vector"),
    ));
    r.push(
        Line::new(
            "delivery_mode",
            Value::Num(u128::from(m.delivery_mode.bits())),
            word_position("data", CompatData::FIELDS, "delivery_mode"),
        )
        .meaning(delivery_mode_name(m.delivery_mode.bits())),
    );
    r.push(Line::new(
        "level_assert",
        Value::Flag(m.level_assert),
        word_position("data", CompatData::FIELDS, "level_assert"),
    ));
    r.push(
        Line::new(
            "trigger_level",
            Value::Flag(m.trigger_level),
            word_position("data", CompatData::FIELDS, "trigger_level"),
        )
        .meaning(trigger_name(m.trigger_level)),
    );
    r.note(
        "compatibility format: a vIR host never returns it (VIR-FMT-H-002); an IOMMU with CFI clear blocks it (VT-d fault 0x25)",
    );
}

/// Appends the fields of a VT-d remappable message.
fn vtd_lines(r: &mut Report, m: &RemappableMsi, msg: MsiMessage) {
    r.push(Line::new(
        "handle",
        Value::Num(u128::from(m.handle)),
        Position::Bits {
            word: Some("address"),
            ranges: vec![(2, 2), (19, 5)],
        },
    ));
    r.push(Line::new(
        "shv",
        Value::Flag(m.shv),
        Position::word_bits("address", 3, 3),
    ));
    r.push(Line::new(
        "subhandle",
        Value::Num(u128::from(m.subhandle)),
        Position::word_bits("data", 15, 0),
    ));
    r.push(Line::new(
        "irte_index",
        Value::Num(u128::from(m.irte_index())),
        Position::Derived,
    ));
    let dont_care = msg.address_lo & 0x3;
    if dont_care != 0 {
        r.note(format!("address bits 1:0 (don't care) are {dont_care:#x}"));
    }
    if !m.shv {
        r.note("SHV = 0: the data is don't care and the IRTE index is the handle (a vIR host always sets SHV, VIR-FMT-H-001)");
    }
}

/// Decodes `msi`: classified by address bit 4.
pub fn decode_any(bytes: &[u8], opts: Options) -> Result<Report, HwError> {
    let ty = HwType::Msi;
    let msg = message(ty, bytes)?;
    // The x2APIC high-address form is a compatibility message with a nonzero high address.
    let low = MsiMessage::new(msg.address_lo, 0, msg.data);
    let kind = classify(low).map_err(|e| HwError::new(ty, HwErrorKind::Msi(e)))?;
    if kind == MessageKind::Remappable && msg.address_hi != 0 {
        return Err(HwError::new(
            ty,
            HwErrorKind::Msi(vir_abi::hw::MsiError::AddressHighNonZero(msg.address_hi)),
        ));
    }
    let mut r = report(ty, msg);
    match kind {
        MessageKind::Compat => {
            let (m, form) = CompatMsi::decode_form(msg, opts.ext_dest_id)
                .map_err(|e| HwError::new(ty, HwErrorKind::Msi(e)))?;
            r.format = Some(if form == DestForm::HighAddress {
                "compat-x2apic-hi"
            } else {
                "compat"
            });
            compat_lines(&mut r, &m, form);
            if let Ok(amd) = AmdMsi::decode(msg) {
                r.note(format!(
                    "also an AMD-Vi remapped message with IRTE index {:#x} (decode it as amd-msi)",
                    amd.index
                ));
            }
        }
        MessageKind::Remappable => {
            let m =
                RemappableMsi::decode(msg).map_err(|e| HwError::new(ty, HwErrorKind::VtdMsi(e)))?;
            r.format = Some("remappable");
            vtd_lines(&mut r, &m, msg);
        }
    }
    Ok(r)
}

/// Decodes `msi-compat`.
pub fn decode_compat(bytes: &[u8], opts: Options) -> Result<Report, HwError> {
    let ty = HwType::MsiCompat;
    let msg = message(ty, bytes)?;
    let (m, form) = CompatMsi::decode_form(msg, opts.ext_dest_id)
        .map_err(|e| HwError::new(ty, HwErrorKind::Msi(e)))?;
    let mut r = report(ty, msg);
    r.format = Some(if form == DestForm::HighAddress {
        "compat-x2apic-hi"
    } else {
        "compat"
    });
    compat_lines(&mut r, &m, form);
    Ok(r)
}

/// Decodes `vtd-msi`.
pub fn decode_vtd(bytes: &[u8]) -> Result<Report, HwError> {
    let ty = HwType::VtdMsi;
    let msg = message(ty, bytes)?;
    let m = RemappableMsi::decode(msg).map_err(|e| HwError::new(ty, HwErrorKind::VtdMsi(e)))?;
    let mut r = report(ty, msg);
    vtd_lines(&mut r, &m, msg);
    Ok(r)
}

/// Decodes `amd-msi`.
pub fn decode_amd(bytes: &[u8]) -> Result<Report, HwError> {
    let ty = HwType::AmdMsi;
    let msg = message(ty, bytes)?;
    let m = AmdMsi::decode(msg).map_err(|e| HwError::new(ty, HwErrorKind::AmdMsi(e)))?;
    let mut r = report(ty, msg);
    r.push(Line::new(
        "index",
        Value::Num(u128::from(m.index)),
        Position::word_bits("data", 10, 0),
    ));
    r.push(Line::new(
        "address_dm",
        Value::Flag(m.address_dm),
        Position::word_bits("address", 2, 2),
    ));
    Ok(r)
}

/// Encodes `msi` from its raw words.
pub fn encode_any(assignments: &[Assignment]) -> Result<Vec<u8>, CliError> {
    let v = Values::parse(HwType::Msi.name(), ANY_FIELDS, assignments)?;
    let address: u64 = v.num("address")?;
    let data: u32 = v.num("data")?;
    let lo = (address & 0xFFFF_FFFF) as u32;
    let hi = (address >> 32) as u32;
    Ok(MsiMessage::new(lo, hi, data).to_bytes().to_vec())
}

/// Encodes `msi-compat`.
pub fn encode_compat(assignments: &[Assignment], opts: Options) -> Result<Vec<u8>, CliError> {
    let ty = HwType::MsiCompat;
    let v = Values::parse(ty.name(), COMPAT_FIELDS, assignments)?;
    let dlm: u8 = v.num("delivery_mode")?;
    let Some(delivery_mode) = DeliveryMode::from_bits(dlm) else {
        return Err(ValueError::new(
            "delivery_mode",
            ValueProblem::NotAllowed {
                value: u128::from(dlm),
                why: "delivery modes 3 and 6 are reserved",
            },
        )
        .into());
    };
    let m = CompatMsi {
        dest_id: v.num("dest_id")?,
        dest_mode_logical: v.flag("dest_mode_logical"),
        redirection_hint: v.flag("redirection_hint"),
        vector: v.num("vector")?,
        delivery_mode,
        level_assert: v.flag("level_assert"),
        trigger_level: v.flag("trigger_level"),
    };
    let form = if opts.x2apic_hi {
        DestForm::HighAddress
    } else if opts.ext_dest_id {
        DestForm::ExtDestId
    } else {
        DestForm::Xapic
    };
    let msg = m
        .encode_form(form)
        .map_err(|e| HwError::new(ty, HwErrorKind::Msi(e)))?;
    Ok(msg.to_bytes().to_vec())
}

/// Encodes `vtd-msi`.
pub fn encode_vtd(assignments: &[Assignment]) -> Result<Vec<u8>, CliError> {
    let v = Values::parse(HwType::VtdMsi.name(), VTD_FIELDS, assignments)?;
    let m = RemappableMsi {
        handle: v.num("handle")?,
        shv: v.flag("shv"),
        subhandle: v.num("subhandle")?,
    };
    if !m.shv && m.subhandle != 0 {
        return Err(ValueError::new(
            "subhandle",
            ValueProblem::NotAllowed {
                value: u128::from(m.subhandle),
                why: "a sub-handle needs shv=1",
            },
        )
        .into());
    }
    Ok(m.encode().to_bytes().to_vec())
}

/// Encodes `amd-msi`.
pub fn encode_amd(assignments: &[Assignment]) -> Result<Vec<u8>, CliError> {
    let ty = HwType::AmdMsi;
    let v = Values::parse(ty.name(), AMD_FIELDS, assignments)?;
    let m = AmdMsi {
        index: v.num("index")?,
        address_dm: v.flag("address_dm"),
    };
    let msg = m
        .encode()
        .map_err(|e| HwError::new(ty, HwErrorKind::AmdMsi(e)))?;
    Ok(msg.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::ApicMode;

    const OPTS: Options = Options {
        apic_mode: ApicMode::X2Apic,
        ext_dest_id: false,
        x2apic_hi: false,
    };

    #[test]
    fn qemu_high_address_form_round_trips() {
        // QEMU's remapped interrupt for APIC ID 0x1234, vector 0x45, level asserted.
        let msg = MsiMessage::new(0xFEE3_4000, 0x1200, 0x4045);
        for r in [
            decode_any(&msg.to_bytes(), OPTS).expect("msi decodes"),
            decode_compat(&msg.to_bytes(), OPTS).expect("msi-compat decodes"),
        ] {
            assert_eq!(r.format, Some("compat-x2apic-hi"));
            assert_eq!(num(&r, "dest_id"), Some(0x1234));
            assert_eq!(num(&r, "vector"), Some(0x45));
        }
        let a = |f: &str, v: &str| Assignment {
            field: f.into(),
            value: v.into(),
        };
        let hi = Options {
            x2apic_hi: true,
            ..OPTS
        };
        let bytes = encode_compat(
            &[
                a("dest_id", "0x1234"),
                a("vector", "0x45"),
                a("level_assert", "1"),
            ],
            hi,
        )
        .expect("encodes");
        assert_eq!(bytes, msg.to_bytes().to_vec());
        let err = encode_compat(&[a("dest_id", "0x1234")], OPTS).expect_err("needs a flag");
        let text = err.to_string();
        assert!(
            text.contains("--ext-dest-id") && text.contains("--x2apic-hi"),
            "{text}"
        );
    }

    #[test]
    fn amd_index_0x200_needs_dm() {
        let a = |f: &str, v: &str| Assignment {
            field: f.into(),
            value: v.into(),
        };
        let err = encode_amd(&[a("index", "0x345")]).expect_err("needs DM");
        assert!(err.to_string().contains("address_dm"), "{err}");
        let bytes = encode_amd(&[a("index", "0x345"), a("address_dm", "1")]).expect("encodes");
        let r = decode_amd(&bytes).expect("decodes");
        assert_eq!(num(&r, "index"), Some(0x345));
        assert!(decode_amd(&MsiMessage::new(0xFEE0_0000, 0, 0x345).to_bytes()).is_err());
    }

    fn num(r: &Report, name: &str) -> Option<u128> {
        match r.get(name) {
            Some(Value::Num(n)) => Some(*n),
            Some(Value::Flag(b)) => Some(u128::from(*b)),
            _ => None,
        }
    }

    // VIR-FMT-H-001: the VT-d message of a vIR host: handle in the address, SHV = 1, data 0.
    #[test]
    fn vtd_message_fields() {
        let msg = RemappableMsi {
            handle: 0x8123,
            shv: true,
            subhandle: 2,
        }
        .encode();
        let r = decode_any(&msg.to_bytes(), OPTS).expect("decodes");
        assert_eq!(r.format, Some("remappable"));
        assert_eq!(num(&r, "handle"), Some(0x8123));
        assert_eq!(num(&r, "shv"), Some(1));
        assert_eq!(num(&r, "subhandle"), Some(2));
        assert_eq!(num(&r, "irte_index"), Some(0x8125));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn compat_with_and_without_ext_dest_id() {
        // APIC ID 0x123: 0x23 in address 19:12, 0x1 in address 11:5.
        let msg = MsiMessage::new(0xFEE2_3020, 0, 0x0000_4041);
        let err = decode_compat(&msg.to_bytes(), OPTS);
        assert_eq!(
            err,
            Err(HwError {
                ty: "msi-compat",
                kind: HwErrorKind::Msi(vir_abi::hw::MsiError::ExtDestIdNotEnabled(1))
            })
        );
        let ext = Options {
            ext_dest_id: true,
            ..OPTS
        };
        assert!(
            encode_compat(
                &[],
                Options {
                    x2apic_hi: true,
                    ..OPTS
                }
            )
            .is_ok(),
            "the high-address form of APIC ID 0 is the xAPIC form"
        );
        let r = decode_compat(&msg.to_bytes(), ext).expect("decodes");
        assert_eq!(num(&r, "dest_id"), Some(0x123));
        assert_eq!(num(&r, "vector"), Some(0x41));
        assert_eq!(num(&r, "level_assert"), Some(1));
        assert_eq!(num(&r, "trigger_level"), Some(0));
    }

    #[test]
    fn amd_shaped_message_is_noted() {
        let msg = MsiMessage::new(0xFEE0_0000, 0, 0x0000_0045);
        let r = decode_any(&msg.to_bytes(), OPTS).expect("decodes");
        assert_eq!(r.format, Some("compat"));
        assert!(
            r.notes.iter().any(|n| n.contains("IRTE index 0x45")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn encode_rejects_reserved_delivery_mode_and_orphan_subhandle() {
        let a = |f: &str, v: &str| Assignment {
            field: f.into(),
            value: v.into(),
        };
        let err = encode_compat(&[a("delivery_mode", "3")], OPTS);
        assert!(
            matches!(
                &err,
                Err(CliError::Value(ValueError {
                    problem: ValueProblem::NotAllowed { value: 3, .. },
                    ..
                }))
            ),
            "{err:?}"
        );
        let err = encode_vtd(&[a("shv", "0"), a("subhandle", "1")]);
        assert!(
            matches!(
                &err,
                Err(CliError::Value(ValueError {
                    problem: ValueProblem::NotAllowed { value: 1, .. },
                    ..
                }))
            ),
            "{err:?}"
        );
        let err = encode_compat(&[a("dest_id", "256")], OPTS);
        assert!(
            matches!(
                &err,
                Err(CliError::Hw(HwError {
                    kind: HwErrorKind::Msi(vir_abi::hw::MsiError::DestinationTooLarge {
                        dest_id: 256,
                        max: 255
                    }),
                    ..
                }))
            ),
            "{err:?}"
        );
    }
}

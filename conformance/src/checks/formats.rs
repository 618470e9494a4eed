//! Message and IRTE formats (VIR-FMT-H-*).

use vir_abi::feature::Features;
use vir_abi::hw::amd::{AmdIrte128, AmdMsi, INT_TYPE_FIXED};
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{Irte, RemappableMsi, Svt};
use vir_abi::status::Status;
use vir_abi::wire::{ActivateResponse, MessageFormat};

use crate::ctx::{Alloc, Ctx, VECTOR, ensure, expect, expect_eq};
use crate::hut::{IrteFormat, SourceId, VmRef};
use crate::outcome::{CheckResult, Stop};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-FMT-H-001"],
        "fmt_vtd_message_shape",
        "a VT-d host returns address 0xFEEx_xxxx with the remappable format bit and SHV set, bits 1:0 clear, high address 0, data 0",
        vtd_shape
    ),
    check!(
        ["VIR-FMT-H-001"],
        "fmt_vtd_message_handle",
        "the VT-d message's handle is the index of the allocation's first IRTE",
        vtd_handle
    ),
    check!(
        ["VIR-FMT-H-002"],
        "fmt_never_compat",
        "neither QUERY nor any ActivateResponse reports X86_COMPAT, and VT-d messages are remappable",
        never_compat
    ),
    check!(
        ["VIR-FMT-H-003"],
        "fmt_vtd_active_irte",
        "an active vector's VT-d IRTE is posted (P, IM, URG=0, guest vector, the target's descriptor) or remapped (P, IM=0, DM=DLM=TM=RH=0)",
        vtd_active_irte
    ),
    check!(
        ["VIR-FMT-H-004", "VIR-SEC-H-001"],
        "fmt_vtd_bus_range_sid",
        "a device behind a bridge gets SVT=2 with the start bus in SID 15:8 and the end bus in SID 7:0",
        vtd_bus_range
    ),
    check!(
        ["VIR-FMT-H-005"],
        "fmt_amd_message",
        "an AMD-Vi host returns address 0xFEE00000 (or 0xFEE00004), high 0, data = first IRTE index with bits 31:11 clear",
        amd_message
    ),
    check!(
        ["VIR-FMT-H-006"],
        "fmt_amd_active_irte",
        "an active vector's AMD-Vi IRTE has RemapEn, IntType fixed, DM=0, and the guest vector in guest mode",
        amd_active_irte
    ),
    check!(
        ["VIR-FMT-H-007"],
        "fmt_msi_block_data",
        "an MSI block of 2^n vectors gets a message whose data has its low n bits clear",
        msi_block_data
    ),
    check!(
        ["VIR-FMT-H-007"],
        "fmt_msi_block_entries",
        "sub-handle i of an MSI block of 2^n is backed by the IRTE at the first index + i, the first a multiple of 2^n",
        msi_block_entries
    ),
];

const P: VmRef = VmRef::Primary;

fn msg(r: &ActivateResponse) -> MsiMessage {
    MsiMessage::new(r.address_lo.get(), r.address_hi.get(), r.data.get())
}

fn require_format(ctx: &mut Ctx<'_>, format: MessageFormat) -> CheckResult {
    let f = ctx.query(P)?.message_format;
    if f == format.0 {
        Ok(())
    } else {
        Err(Stop::NotApplicable(format!(
            "the host reports message format {f}, not {format:?}"
        )))
    }
}

/// Single-vector allocations and (if possible) MSI blocks of 2 and 4, each activated: (alloc,
/// message).
fn sample(ctx: &mut Ctx<'_>) -> Result<Vec<(Alloc, ActivateResponse)>, Stop> {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(ctx.allocate_active(P)?);
    }
    if f.contains(Features::MSI) {
        let devs: Vec<_> = ctx
            .vm(P)?
            .devices
            .iter()
            .filter(|d| d.msi_vectors >= 2)
            .copied()
            .collect();
        for (d, log2) in devs.iter().zip([1u8, 2]) {
            if (1u32 << log2) > u32::from(d.msi_vectors) {
                continue;
            }
            let a = ctx.allocate_msi(P, d.device_id, log2)?;
            let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
            out.push((a, m));
        }
    }
    Ok(out)
}

fn vtd_shape(ctx: &mut Ctx<'_>) -> CheckResult {
    require_format(ctx, MessageFormat::VTD_REMAPPABLE)?;
    for (a, r) in sample(ctx)? {
        let step = format!("ACTIVATE of handle {:#x} ({} vectors)", a.handle, a.count);
        let lo = r.address_lo.get();
        expect_eq(&step, "address_hi", 0, r.address_hi.get())?;
        expect_eq(&step, "data", 0, r.data.get())?;
        expect_eq(&step, "address_lo bits 31:20", 0xfee, lo >> 20)?;
        expect_eq(
            &step,
            "address_lo bit 4 (remappable format)",
            1,
            (lo >> 4) & 1,
        )?;
        expect_eq(&step, "address_lo bit 3 (SHV)", 1, (lo >> 3) & 1)?;
        expect_eq(&step, "address_lo bits 1:0", 0, lo & 3)?;
        let decoded = RemappableMsi::decode(msg(&r)).map_err(|e| {
            crate::ctx::value_failure(
                &step,
                "message",
                "a VT-d remappable message",
                format!("{e:?}"),
            )
        })?;
        expect_eq(&step, "sub-handle", 0, decoded.subhandle)?;
    }
    Ok(())
}

fn vtd_handle(ctx: &mut Ctx<'_>) -> CheckResult {
    require_format(ctx, MessageFormat::VTD_REMAPPABLE)?;
    for (a, r) in sample(ctx)? {
        let step = format!("ACTIVATE of handle {:#x} ({} vectors)", a.handle, a.count);
        let first = ctx.irte(P, a.handle, 0)?.index;
        let expected = 0xfee0_0000
            | ((first & 0x7fff) << 5)
            | (1 << 4)
            | (1 << 3)
            | (((first >> 15) & 1) << 2);
        expect_eq(
            &step,
            "address_lo (handle = first IRTE index)",
            format!("{expected:#010x}"),
            format!("{:#010x}", r.address_lo.get()),
        )?;
    }
    Ok(())
}

fn never_compat(ctx: &mut Ctx<'_>) -> CheckResult {
    let q = ctx.query(P)?;
    ensure(
        q.message_format != MessageFormat::X86_COMPAT.0,
        "QUERY",
        "message_format",
        "not X86_COMPAT (3)",
        "3",
    )?;
    let mut msgs = sample(ctx)?;
    if ctx.session_features(P).contains(Features::RESERVATION) {
        let a = ctx.allocate(P)?;
        let m = ctx.reserve(P, a.handle, 0)?;
        msgs.push((a, m));
    }
    for (a, r) in msgs {
        let step = format!("ACTIVATE of handle {:#x}", a.handle);
        ensure(
            r.format != MessageFormat::X86_COMPAT.0,
            &step,
            "format",
            "not X86_COMPAT (3)",
            "3",
        )?;
        if r.format == MessageFormat::VTD_REMAPPABLE.0 {
            expect_eq(
                &step,
                "address_lo bit 4 (remappable format)",
                1,
                (r.address_lo.get() >> 4) & 1,
            )?;
        }
    }
    Ok(())
}

fn vtd_mode(ctx: &Ctx<'_>) -> Result<vir_abi::hw::ApicMode, Stop> {
    match ctx.fixture().irte_format {
        Some(IrteFormat::Vtd(mode)) => Ok(mode),
        Some(IrteFormat::AmdVi) => Err(Stop::NotApplicable(
            "the host's IRTEs are AMD-Vi entries".into(),
        )),
        None => Err(Stop::NotTestable(
            "the fixture does not describe the IRTE format".into(),
        )),
    }
}

fn decode_vtd(ctx: &Ctx<'_>, step: &str, raw: u128) -> Result<Irte, Stop> {
    let mode = vtd_mode(ctx)?;
    Irte::decode(raw, mode).map_err(|e| {
        crate::ctx::value_failure(
            step,
            "IRTE",
            "a valid VT-d entry",
            format!("{e:?} in {raw:#034x}"),
        )
    })
}

fn vtd_active_irte(ctx: &mut Ctx<'_>) -> CheckResult {
    vtd_mode(ctx)?;
    ctx.negotiate_all(P)?;
    let vcpus = ctx.vm(P)?.vcpus.clone();
    let a = ctx.allocate(P)?;
    for (i, v) in vcpus.iter().enumerate() {
        let vector = 0x41 + 0x11 * i as u8;
        if i == 0 {
            ctx.activate(P, a.handle, 0, v.apic_id, vector)?;
        } else {
            expect(
                "SET_AFFINITY",
                Status::SUCCESS,
                ctx.set_affinity(P, a.handle, 0, v.apic_id, vector)?,
            )?;
        }
        let step = format!(
            "IRTE of a vector targeting APIC id {} vector {vector:#x}",
            v.apic_id
        );
        let raw = ctx.irte(P, a.handle, 0)?.raw;
        match decode_vtd(ctx, &step, raw)? {
            Irte::Posted(p) => {
                ensure(p.present, &step, "P", "1", "0")?;
                ensure(!p.urgent, &step, "URG", "0", "1")?;
                expect_eq(&step, "vector (guest vector)", vector, p.vector)?;
                if let Some(pda) = v.posted_descriptor {
                    expect_eq(
                        &step,
                        "posted descriptor address",
                        format!("{pda:#x}"),
                        format!("{:#x}", p.pda),
                    )?;
                }
            }
            Irte::Remapped(r) => {
                ensure(r.present, &step, "P", "1", "0")?;
                ensure(!r.dest_mode_logical, &step, "DM", "0 (physical)", "1")?;
                expect_eq(&step, "DLM", 0, r.delivery_mode)?;
                ensure(!r.trigger_level, &step, "TM", "0 (edge)", "1")?;
                ensure(!r.redirection_hint, &step, "RH", "0", "1")?;
                ensure(
                    r.vector >= 0x10,
                    &step,
                    "vector (host vector)",
                    ">= 0x10",
                    format!("{:#x}", r.vector),
                )?;
            }
        }
    }
    Ok(())
}

fn vtd_bus_range(ctx: &mut Ctx<'_>) -> CheckResult {
    vtd_mode(ctx)?;
    let f = ctx.negotiate_all(P)?;
    let devs = ctx.vm(P)?.devices.clone();
    let Some(d) = devs
        .iter()
        .find(|d| matches!(d.source, Some(SourceId::BusRange { .. })))
    else {
        return Err(Stop::NotTestable(
            "no fixture device sits behind a PCIe-to-PCI bridge".into(),
        ));
    };
    let Some(SourceId::BusRange { start_bus, end_bus }) = d.source else {
        return Err(Stop::NotTestable("no bus range".into()));
    };
    let slot = ctx
        .slots_for(P, f)?
        .into_iter()
        .find(|s| s.device_id == d.device_id)
        .ok_or_else(|| Stop::NotTestable("the bridged device has no single-vector slot".into()))?;
    let a = ctx.allocate_slot(P, slot)?;
    let apic = ctx.apic(P, 0)?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    let step = format!(
        "IRTE of device {:#x} behind a bridge (buses {start_bus:#x}..={end_bus:#x})",
        d.device_id
    );
    let raw = ctx.irte(P, a.handle, 0)?.raw;
    let (svt, sid) = match decode_vtd(ctx, &step, raw)? {
        Irte::Posted(p) => (p.svt, p.sid),
        Irte::Remapped(r) => (r.svt, r.sid),
    };
    expect_eq(&step, "SVT", Svt::VerifyBus, svt)?;
    expect_eq(
        &step,
        "SID",
        format!("{:#06x}", (u16::from(start_bus) << 8) | u16::from(end_bus)),
        format!("{sid:#06x}"),
    )
}

fn amd_message(ctx: &mut Ctx<'_>) -> CheckResult {
    require_format(ctx, MessageFormat::AMD_VI)?;
    for (a, r) in sample(ctx)? {
        let step = format!("ACTIVATE of handle {:#x}", a.handle);
        let m = AmdMsi::decode(msg(&r)).map_err(|e| {
            crate::ctx::value_failure(
                &step,
                "message",
                "an AMD-Vi remapped message",
                format!("{e:?}"),
            )
        })?;
        let first = ctx.irte(P, a.handle, 0)?.index;
        expect_eq(&step, "data (first IRTE index)", first, u32::from(m.index))?;
    }
    Ok(())
}

fn amd_active_irte(ctx: &mut Ctx<'_>) -> CheckResult {
    match ctx.fixture().irte_format {
        Some(IrteFormat::AmdVi) => {}
        Some(IrteFormat::Vtd(_)) => {
            return Err(Stop::NotApplicable(
                "the host's IRTEs are VT-d entries".into(),
            ));
        }
        None => {
            return Err(Stop::NotTestable(
                "the fixture does not describe the IRTE format".into(),
            ));
        }
    }
    ctx.negotiate_all(P)?;
    let (a, _) = ctx.allocate_active(P)?;
    let raw = ctx.irte(P, a.handle, 0)?.raw;
    let step = "IRTE of an ACTIVE vector";
    match AmdIrte128::decode(raw) {
        Ok(AmdIrte128::Remapped(r)) => {
            ensure(r.remap_en, step, "RemapEn", "1", "0")?;
            expect_eq(step, "IntType", INT_TYPE_FIXED, r.int_type)?;
            ensure(!r.dest_mode_logical, step, "DM", "0", "1")
        }
        Ok(AmdIrte128::Guest(g)) => {
            ensure(g.remap_en, step, "RemapEn", "1", "0")?;
            expect_eq(step, "vector (guest vector)", VECTOR, g.vector)
        }
        Err(e) => Err(crate::ctx::value_failure(
            step,
            "IRTE",
            "a valid AMD-Vi entry",
            format!("{e:?}"),
        )),
    }
}

fn msi_blocks(ctx: &mut Ctx<'_>) -> Result<Vec<(Alloc, u8, ActivateResponse)>, Stop> {
    ctx.require_offered(P, Features::MSI)?;
    ctx.negotiate_all(P)?;
    let max = ctx.query(P)?.max_msi_log2;
    let apic = ctx.apic(P, 0)?;
    let devs: Vec<_> = ctx
        .vm(P)?
        .devices
        .iter()
        .filter(|d| d.msi_vectors >= 2)
        .copied()
        .collect();
    let mut out = Vec::new();
    for d in devs {
        for log2 in 1..=max {
            if (1u32 << log2) > u32::from(d.msi_vectors) {
                break;
            }
            let a = ctx.allocate_msi(P, d.device_id, log2)?;
            let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
            out.push((a, log2, m));
            expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
        }
    }
    if out.is_empty() {
        return Err(Stop::NotTestable(
            "no fixture device has an MSI capability of 2 or more vectors".into(),
        ));
    }
    Ok(out)
}

fn msi_block_data(ctx: &mut Ctx<'_>) -> CheckResult {
    for (a, log2, m) in msi_blocks(ctx)? {
        let mask = (1u32 << log2) - 1;
        expect_eq(
            format!(
                "ACTIVATE of an MSI block of {} (handle {:#x})",
                a.count, a.handle
            ),
            &format!("data bits {}:0", log2 - 1),
            0,
            m.data.get() & mask,
        )?;
    }
    Ok(())
}

fn msi_block_entries(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.require_offered(P, Features::MSI)?;
    ctx.negotiate_all(P)?;
    let max = ctx.query(P)?.max_msi_log2;
    let devs: Vec<_> = ctx
        .vm(P)?
        .devices
        .iter()
        .filter(|d| d.msi_vectors >= 2)
        .copied()
        .collect();
    let mut tried = 0;
    for d in devs {
        for log2 in 1..=max {
            let n = 1u32 << log2;
            if n > u32::from(d.msi_vectors) {
                break;
            }
            let a = ctx.allocate_msi(P, d.device_id, log2)?;
            let first = ctx.irte(P, a.handle, 0)?.index;
            let step = format!("MSI block of {n} (handle {:#x})", a.handle);
            expect_eq(&step, &format!("first IRTE index mod {n}"), 0, first % n)?;
            for sub in 1..n as u16 {
                expect_eq(
                    &step,
                    &format!("IRTE index of sub-handle {sub}"),
                    first + u32::from(sub),
                    ctx.irte(P, a.handle, sub)?.index,
                )?;
            }
            expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
            tried += 1;
        }
    }
    if tried == 0 {
        return Err(Stop::NotTestable(
            "no fixture device has an MSI capability of 2 or more vectors".into(),
        ));
    }
    Ok(())
}

//! Discovery: the CPUID leaves (VIR-DISC-H-*).

use vir_abi::discovery::{CPUID_INFO_OFFSET, CPUID1_ECX_HYPERVISOR, binding};
use vir_abi::feature::Features;

use super::{cpuid, discover, signed_bases};
use crate::ctx::{Ctx, ensure, expect, expect_eq};
use crate::hut::{Variant, VmRef};
use crate::outcome::{CheckResult, Stop};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-DISC-H-001"],
        "disc_hidden_without_physical_ir",
        "a host whose physical interrupt remapping is off shows no vIR leaves on any vCPU",
        hidden_leaves,
        Variant::PhysicalIrDisabled
    ),
    check!(
        ["VIR-DISC-H-001"],
        "disc_hidden_with_compat_format",
        "a host that does not block compatibility-format interrupts shows no vIR leaves",
        hidden_leaves,
        Variant::CompatFormatAllowed
    ),
    check!(
        ["VIR-DISC-H-003"],
        "disc_single_signed_base",
        "CPUID.1:ECX[31] is set and exactly one base leaf carries the signature with EAX >= base+1",
        single_base
    ),
    check!(
        ["VIR-DISC-H-002"],
        "disc_info_leaf_valid",
        "the info leaf offers 1 <= min <= max, a binding, and a non-zero port with the doorbell",
        info_leaf
    ),
    check!(
        ["VIR-DISC-H-004"],
        "disc_identical_on_all_vcpus",
        "the vIR leaves are identical on every vCPU, before and after negotiation and resets",
        identical_everywhere
    ),
    check!(
        ["VIR-DISC-H-005"],
        "disc_doorbell_ports_free",
        "the doorbell base is at most 0xFFF8 and its eight ports overlap no other device's ports",
        doorbell_ports
    ),
    check!(
        ["VIR-DISC-H-006"],
        "disc_info_reserved_zero",
        "info leaf EBX 31:3, ECX 31:16 and EDX are zero",
        info_reserved
    ),
];

fn hidden_leaves(ctx: &mut Ctx<'_>) -> CheckResult {
    let n = ctx.vm(VmRef::Primary)?.vcpus.len() as u32;
    for vcpu in 0..n {
        let found = signed_bases(ctx, VmRef::Primary, vcpu)?;
        ensure(
            found.is_empty(),
            format!("CPUID scan on vCPU {vcpu} of a host without usable interrupt remapping"),
            "bases with the vIR signature",
            "none",
            format!("{:#x?}", found.iter().map(|f| f.0).collect::<Vec<_>>()),
        )?;
    }
    Ok(())
}

fn single_base(ctx: &mut Ctx<'_>) -> CheckResult {
    let leaf1 = cpuid(ctx, VmRef::Primary, 0, 1)?;
    ensure(
        leaf1[2] & CPUID1_ECX_HYPERVISOR != 0,
        "CPUID leaf 1",
        "ECX bit 31 (hypervisor present)",
        "1",
        "0",
    )?;
    let found = signed_bases(ctx, VmRef::Primary, 0)?;
    expect_eq(
        "CPUID scan of the 256 candidate bases",
        "number of bases with the vIR signature",
        1,
        found.len(),
    )?;
    let (base, regs) = found[0];
    ensure(
        regs[0] >= base + CPUID_INFO_OFFSET,
        format!("base leaf {base:#x}"),
        "EAX (highest vIR leaf)",
        format!(">= {:#x}", base + CPUID_INFO_OFFSET),
        format!("{:#x}", regs[0]),
    )
}

fn info_leaf(ctx: &mut Ctx<'_>) -> CheckResult {
    // discover() decodes the leaf with the guest's rules: 1 <= min <= max, a known binding, a
    // port with the doorbell.
    let d = discover(ctx, VmRef::Primary, 0)?;
    let step = format!("info leaf {:#x}", d.base + CPUID_INFO_OFFSET);
    ensure(
        d.info.min_version >= 1,
        &step,
        "min_version",
        ">= 1",
        d.info.min_version.to_string(),
    )?;
    ensure(
        d.info.min_version <= d.info.max_version,
        &step,
        "min_version <= max_version",
        "true",
        format!("{} > {}", d.info.min_version, d.info.max_version),
    )?;
    ensure(
        d.info.bindings & binding::V1_DEFINED != 0,
        &step,
        "bindings offered",
        "at least one",
        format!("{:#x}", d.info.bindings),
    )?;
    if d.info.bindings & binding::PORT_DOORBELL != 0 {
        ensure(
            d.info.doorbell_port != 0,
            &step,
            "doorbell port base",
            "non-zero",
            "0",
        )?;
    }
    Ok(())
}

fn leaves_on_all(
    ctx: &mut Ctx<'_>,
    when: &str,
    reference: &[[u32; 4]; 2],
    base: u32,
) -> CheckResult {
    let n = ctx.vm(VmRef::Primary)?.vcpus.len() as u32;
    for vcpu in 0..n {
        let b = cpuid(ctx, VmRef::Primary, vcpu, base)?;
        let i = cpuid(ctx, VmRef::Primary, vcpu, base + CPUID_INFO_OFFSET)?;
        expect_eq(
            format!("CPUID {base:#x} and {:#x} on vCPU {vcpu} {when}", base + 1),
            "leaf registers",
            *reference,
            [b, i],
        )?;
    }
    Ok(())
}

fn identical_everywhere(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = discover(ctx, VmRef::Primary, 0)?;
    let reference = [d.base_regs, d.info_regs];
    leaves_on_all(ctx, "at creation", &reference, d.base)?;
    ctx.negotiate_all(VmRef::Primary)?;
    ctx.allocate_active(VmRef::Primary)?;
    leaves_on_all(ctx, "in NEGOTIATED", &reference, d.base)?;
    let s = ctx.reset(VmRef::Primary)?;
    expect("RESET", vir_abi::status::Status::SUCCESS, s)?;
    leaves_on_all(ctx, "after RESET", &reference, d.base)?;
    ctx.negotiate(VmRef::Primary, Features::NONE)?;
    ctx.reset_vm(VmRef::Primary)?;
    leaves_on_all(ctx, "after a platform reset", &reference, d.base)
}

fn doorbell_ports(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = discover(ctx, VmRef::Primary, 0)?;
    if d.info.bindings & binding::PORT_DOORBELL == 0 {
        return Err(Stop::NotApplicable(
            "the host does not offer the doorbell binding".into(),
        ));
    }
    let port = d.info.doorbell_port;
    ensure(
        port <= 0xfff8,
        "info leaf",
        "doorbell port base",
        "<= 0xfff8",
        format!("{port:#x}"),
    )?;
    let last = port.saturating_add(7);
    for &(lo, hi) in &ctx.vm(VmRef::Primary)?.io_ports_in_use.clone() {
        ensure(
            last < lo || port > hi,
            "info leaf",
            "doorbell ports",
            format!("outside {lo:#x}..={hi:#x} (another device's ports)"),
            format!("{port:#x}..={last:#x}"),
        )?;
    }
    Ok(())
}

fn info_reserved(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = discover(ctx, VmRef::Primary, 0)?;
    let [_, ebx, ecx, edx] = d.info_regs;
    let step = format!("info leaf {:#x}", d.base + CPUID_INFO_OFFSET);
    ensure(
        ebx >> 3 == 0,
        &step,
        "EBX bits 31:3",
        "0",
        format!("{:#x}", ebx >> 3),
    )?;
    ensure(
        ecx >> 16 == 0,
        &step,
        "ECX bits 31:16",
        "0",
        format!("{:#x}", ecx >> 16),
    )?;
    ensure(edx == 0, &step, "EDX", "0", format!("{edx:#x}"))
}

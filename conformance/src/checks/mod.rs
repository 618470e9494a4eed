//! The checks, one module per group of specification areas, and helpers they share.

pub mod activate;
pub mod allocate;
pub mod bindings;
pub mod common;
pub mod discovery;
pub mod formats;
pub mod lifecycle;
pub mod memory;
pub mod negotiate;
pub mod security;

use vir_abi::call::CallCode;
use vir_abi::discovery::{
    CPUID_BASES, CPUID_INFO_OFFSET, CPUID_RANGE_FIRST, CPUID_STRIDE, InfoLeaf, signature_regs,
};
use vir_abi::layout::{FieldType, StructDesc};
use vir_abi::status::Status;
use vir_abi::wire::ALL_STRUCTS;

use crate::ctx::{Ctx, ensure, value_failure};
use crate::hut::VmRef;
use crate::outcome::{Stop, harness};

/// The vIR leaves as a vCPU sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovered {
    /// The base leaf.
    pub base: u32,
    /// The base leaf's registers.
    pub base_regs: [u32; 4],
    /// The info leaf's registers.
    pub info_regs: [u32; 4],
    /// The info leaf, decoded.
    pub info: InfoLeaf,
}

/// CPUID of `vm`'s vCPU `vcpu`.
pub fn cpuid(ctx: &mut Ctx<'_>, vm: VmRef, vcpu: u32, leaf: u32) -> Result<[u32; 4], Stop> {
    ctx.host()
        .cpuid(vm, vcpu, leaf, 0)
        .map_err(|e| harness(&format!("CPUID {leaf:#x}"), e))
}

/// Every candidate base leaf whose EBX, ECX, EDX carry the vIR signature.
pub fn signed_bases(ctx: &mut Ctx<'_>, vm: VmRef, vcpu: u32) -> Result<Vec<(u32, [u32; 4])>, Stop> {
    let sig = signature_regs();
    let mut out = Vec::new();
    for k in 0..CPUID_BASES {
        let base = CPUID_RANGE_FIRST + k * CPUID_STRIDE;
        let r = cpuid(ctx, vm, vcpu, base)?;
        if [r[1], r[2], r[3]] == sig {
            out.push((base, r));
        }
    }
    Ok(out)
}

/// Find the vIR leaves (failing when they are missing or the info leaf does not decode).
pub fn discover(ctx: &mut Ctx<'_>, vm: VmRef, vcpu: u32) -> Result<Discovered, Stop> {
    let bases = signed_bases(ctx, vm, vcpu)?;
    let Some(&(base, base_regs)) = bases.first() else {
        return Err(value_failure(
            format!("CPUID scan of the hypervisor range on vCPU {vcpu}"),
            "vIR signature",
            "at one base",
            "none found",
        ));
    };
    let info_regs = cpuid(ctx, vm, vcpu, base + CPUID_INFO_OFFSET)?;
    let [a, b, c, d] = info_regs;
    let info = InfoLeaf::decode(a, b, c, d).map_err(|e| {
        value_failure(
            format!("info leaf {:#x}", base + CPUID_INFO_OFFSET),
            "decoding",
            "a valid info leaf",
            e.to_string(),
        )
    })?;
    Ok(Discovered {
        base,
        base_regs,
        info_regs,
        info,
    })
}

/// One reserved bit of a request structure: a field name (nested fields dotted) and the bit's
/// position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedBit {
    /// Field name, e.g. `target.reserved1`.
    pub field: String,
    /// Byte offset in the structure.
    pub byte: usize,
    /// Bit within that byte.
    pub bit: u8,
}

fn collect_reserved(
    desc: &StructDesc,
    prefix: &str,
    base: usize,
    out: &mut Vec<(String, usize, usize)>,
) {
    for f in desc.fields {
        let name = format!("{prefix}{}", f.name);
        if let FieldType::Struct(c_name) = f.ty {
            if let Some(inner) = ALL_STRUCTS.iter().find(|s| s.c_name == c_name) {
                collect_reserved(inner, &format!("{name}."), base + f.offset, out);
            }
        } else if f.is_reserved() {
            out.push((name, base + f.offset, f.size));
        }
    }
}

/// The `reserved*` fields of a wire structure, nested structures included: (dotted name, byte
/// offset, size in bytes).
pub fn reserved_ranges(desc: &StructDesc) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    collect_reserved(desc, "", 0, &mut out);
    out
}

/// Every bit of every `reserved*` field of a wire structure, nested structures included.
pub fn reserved_bits(desc: &StructDesc) -> Vec<ReservedBit> {
    reserved_ranges(desc)
        .into_iter()
        .flat_map(|(field, offset, size)| {
            (offset..offset + size).flat_map(move |byte| {
                let field = field.clone();
                (0..8).map(move |bit| ReservedBit {
                    field: field.clone(),
                    byte,
                    bit,
                })
            })
        })
        .collect()
}

/// The structure a call sends as its request, or receives as its response.
pub fn request_desc(code: CallCode) -> Option<StructDesc> {
    vir_abi::wire::call_layout(code).and_then(|l| l.request)
}

/// See [`request_desc`].
pub fn response_desc(code: CallCode) -> Option<StructDesc> {
    vir_abi::wire::call_layout(code).and_then(|l| l.response)
}

/// Fail unless every `reserved*` byte of `bytes` (a `desc` structure a host wrote) is zero.
pub fn check_response_reserved(step: &str, desc: &StructDesc, bytes: &[u8]) -> Result<(), Stop> {
    for (field, byte, len) in reserved_ranges(desc) {
        let v = bytes.get(byte..byte + len).unwrap_or(&[]);
        ensure(
            v.len() == len && v.iter().all(|&b| b == 0),
            step,
            &format!("{}.{field}", desc.name),
            "0",
            format!("{v:02x?}"),
        )?;
    }
    Ok(())
}

/// The state of a vector, as the checks track it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VecState {
    /// No live allocation covers it.
    Free,
    /// ALLOCATED (never activated or deactivated).
    Allocated,
    /// RESERVED.
    Reserved,
    /// ACTIVE with this target (guest APIC id, vector).
    Active(u32, u8),
}

/// Find out the state of sub-handle `sub` of `handle` by calls (which may change it): a
/// SET_AFFINITY to `known_target` (the target in force if it is active) succeeds only when
/// ACTIVE; INVALID_HANDLE means freed; otherwise a DEACTIVATE tells RESERVED (SUCCESS) from
/// ALLOCATED (INVALID_STATE).
pub fn probe_state(
    ctx: &mut Ctx<'_>,
    vm: VmRef,
    handle: u32,
    sub: u16,
    known_target: (u32, u8),
) -> Result<VecState, Stop> {
    let step = format!("probing the state of handle {handle:#x} sub-handle {sub}");
    match ctx.set_affinity(vm, handle, sub, known_target.0, known_target.1)? {
        Status::SUCCESS => return Ok(VecState::Active(known_target.0, known_target.1)),
        Status::INVALID_HANDLE => return Ok(VecState::Free),
        Status::INVALID_STATE => {}
        s => {
            return Err(value_failure(
                step,
                "SET_AFFINITY to the current target",
                "SUCCESS, INVALID_STATE or INVALID_HANDLE",
                s.to_string(),
            ));
        }
    }
    match ctx.deactivate(vm, handle, sub)? {
        Status::SUCCESS => Ok(VecState::Reserved),
        Status::INVALID_STATE => Ok(VecState::Allocated),
        s => Err(value_failure(
            step,
            "DEACTIVATE of a vector that is not active",
            "SUCCESS or INVALID_STATE",
            s.to_string(),
        )),
    }
}

/// A deterministic pseudo-random generator (xorshift64*), so that every run of a check makes
/// the same calls.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `true` with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// An element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len() as u64) as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::layout::WireLayout;
    use vir_abi::wire::{ActivateRequest, ActivateResponse, QueryResponse};

    #[test]
    fn reserved_bits_include_nested_target_fields() {
        let bits = reserved_bits(&StructDesc::of::<ActivateRequest>());
        let fields: Vec<&str> = bits.iter().map(|b| b.field.as_str()).collect();
        assert_eq!(
            bits.len(),
            24,
            "target.reserved0 (8 bits) + target.reserved1 (16 bits)"
        );
        assert!(fields.contains(&"target.reserved0"));
        assert_eq!(bits[0].byte, 13);
        assert_eq!(bits.last().map(|b| (b.byte, b.bit)), Some((15, 7)));
        assert_eq!(ActivateRequest::FIELDS.len(), 4);
    }

    #[test]
    fn reserved_ranges_of_responses() {
        assert_eq!(
            reserved_ranges(&StructDesc::of::<QueryResponse>()),
            vec![
                ("reserved0".to_string(), 7, 1),
                ("reserved1".to_string(), 26, 2),
                ("reserved2".to_string(), 36, 4)
            ]
        );
        let d = StructDesc::of::<ActivateResponse>();
        let mut bytes = [0u8; 24];
        assert_eq!(check_response_reserved("s", &d, &bytes), Ok(()));
        bytes[20] = 1;
        assert_eq!(
            check_response_reserved("s", &d, &bytes),
            Err(value_failure(
                "s",
                "ActivateResponse.reserved2",
                "0",
                "[00, 00, 00, 00, 01, 00, 00, 00]"
            ))
        );
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(a.below(10) < 10);
        assert_eq!(a.below(0), 0);
        assert_eq!(a.pick::<u8>(&[]), None);
    }
}

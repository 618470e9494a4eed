//! Remapping domains that program VT-d interrupt remapping table entries themselves, like
//! Linux's `intel_irq_remapping` domain: bare metal and a VM without vIR
//! (situations 1 and 2 of `spec/vir-v1.md` §2.2).
//!
//! * [`BareMetalVtdDomain`] (situation 1): the kernel owns a real remapping unit
//!   ([`RemappingHardware`]): it writes IRTEs into the unit's table and invalidates the interrupt
//!   entry cache. IMS is safe — every message names an IRTE bound to its device by the
//!   source-id check — so [`RemapDomain::supports_ims`] is true.
//! * [`EmulatedVtdDomain`] (situation 2): the kernel runs under a hypervisor whose vIOMMU
//!   emulates interrupt remapping but offers no vIR call. The table lives in guest memory
//!   ([`IrteMemory`]); the unit's registers and invalidations are trapped by the hypervisor
//!   ([`VtdRegisters`]), which then re-reads the entries and retargets its own routes. The
//!   messages are in the remappable format with this domain's handles and are written into
//!   storage the hypervisor traps (MSI, MSI-X). IMS storage cannot be trapped, so IMS is refused
//!   (`VIR-LEG-G-001`, `VIR-LEG-G-002`, B6): [`RemapDomain::supports_ims`] is false and an IMS
//!   slot gets [`DomainError::Unsupported`].
//!
//! Both use one core: a naturally aligned allocator of table entries (an MSI block of 2^n
//! vectors gets 2^n contiguous entries and a message with SHV = 1 whose sub-handle the device
//! adds), the message of an allocation (handle = first entry, SHV = 1, data 0) fixed at
//! allocation, and entries programmed as Linux does for device MSIs: remapped format, physical
//! destination, fixed delivery, edge, SVT = 1, SQ = 0, SID = the device's requester id. A
//! reservation (B11) programs the entry not present with FPD = 1 (blocked silently, as a vIR host
//! does). Every entry change is followed by an index-selective invalidation; nothing takes effect
//! without it.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{Irta, RemappableMsi, RemappedIrte, Svt};

use crate::device::StorageType;
pub use crate::domain::HardwareError;
use crate::domain::{
    Activation, AllocationId, DomainError, IrSlot, IrqTarget, RemapDomain, VectorState,
};

/// The VT-d global command register bits, defined once in the ABI crate.
pub use vir_abi::hw::vtd::{GCMD_CFI, GCMD_IRE, GCMD_SIRTP};

/// A real VT-d remapping unit owned by this kernel (situation 1).
pub trait RemappingHardware {
    /// Points the unit at a table of `irta.entries()` entries in `irta`'s destination format
    /// (SIRTP), turns remapping on with compatibility-format interrupts blocked (IRE = 1,
    /// CFI = 0) and invalidates the whole entry cache.
    fn enable(&mut self, irta: Irta) -> Result<(), HardwareError>;

    /// Writes table entry `index` (128 bits; effective after invalidation).
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError>;

    /// Invalidates the interrupt entry cache for the 2^`index_mask` entries of the naturally
    /// aligned block containing `index`.
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError>;
}

/// The remapping table of an emulated unit, in guest memory (situation 2).
pub trait IrteMemory {
    /// Writes table entry `index` (16 bytes, little-endian, at IRTA base + 16 × `index`).
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError>;
}

/// The registers of an emulated unit; every write is trapped by the hypervisor (situation 2).
pub trait VtdRegisters {
    /// Writes the IRTA register.
    fn write_irta(&mut self, irta: u64) -> Result<(), HardwareError>;

    /// Writes the global command register ([`GCMD_IRE`], [`GCMD_SIRTP`], [`GCMD_CFI`]).
    fn write_global_command(&mut self, command: u32) -> Result<(), HardwareError>;

    /// Submits an index-selective interrupt entry cache invalidation (queued invalidation:
    /// descriptor plus tail-register write) and waits for it.
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError>;

    /// Submits a global interrupt entry cache invalidation and waits for it.
    fn invalidate_all(&mut self) -> Result<(), HardwareError>;
}

impl<T: RemappingHardware + ?Sized> RemappingHardware for &mut T {
    fn enable(&mut self, irta: Irta) -> Result<(), HardwareError> {
        (**self).enable(irta)
    }
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        (**self).write_irte(index, irte)
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        (**self).invalidate(index, index_mask)
    }
}

impl<T: IrteMemory + ?Sized> IrteMemory for &mut T {
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        (**self).write_irte(index, irte)
    }
}

impl<T: VtdRegisters + ?Sized> VtdRegisters for &mut T {
    fn write_irta(&mut self, irta: u64) -> Result<(), HardwareError> {
        (**self).write_irta(irta)
    }
    fn write_global_command(&mut self, command: u32) -> Result<(), HardwareError> {
        (**self).write_global_command(command)
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        (**self).invalidate(index, index_mask)
    }
    fn invalidate_all(&mut self) -> Result<(), HardwareError> {
        (**self).invalidate_all()
    }
}

/// How the core reaches the table: write an entry, invalidate a block.
trait Table {
    fn write(&mut self, index: u16, raw: u128) -> Result<(), HardwareError>;
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError>;
}

struct Hw<'a, H: ?Sized>(&'a mut H);

impl<H: RemappingHardware + ?Sized> Table for Hw<'_, H> {
    fn write(&mut self, index: u16, raw: u128) -> Result<(), HardwareError> {
        self.0.write_irte(index, raw)
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.0.invalidate(index, index_mask)
    }
}

struct Emu<'a, M: ?Sized, R: ?Sized>(&'a mut M, &'a mut R);

impl<M: IrteMemory + ?Sized, R: VtdRegisters + ?Sized> Table for Emu<'_, M, R> {
    fn write(&mut self, index: u16, raw: u128) -> Result<(), HardwareError> {
        self.0.write_irte(index, raw)
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.1.invalidate(index, index_mask)
    }
}

/// Counters of a VT-d domain's table accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VtdStats {
    /// Entries written.
    pub irte_writes: u64,
    /// Index-selective invalidations submitted.
    pub invalidations: u64,
}

#[derive(Debug)]
struct VtdAllocation {
    slot: IrSlot,
    base: u16,
    subs: Vec<VectorState>,
}

/// The allocator, allocations and entry composition shared by both domains.
#[derive(Debug)]
struct VtdCore {
    irta: Irta,
    /// Bit `i % 64` of word `i / 64` set: entry `i` in use. Bits past the end are set.
    used: Vec<u64>,
    allocs: BTreeMap<u32, VtdAllocation>,
    next_id: u32,
    stats: VtdStats,
}

impl VtdCore {
    fn new(irta: Irta) -> Self {
        let entries = irta.entries();
        let mut used = vec![0u64; entries.div_ceil(64) as usize];
        if !entries.is_multiple_of(64)
            && let Some(last) = used.last_mut()
        {
            *last = !0u64 << (entries % 64);
        }
        VtdCore {
            irta,
            used,
            allocs: BTreeMap::new(),
            next_id: 1,
            stats: VtdStats::default(),
        }
    }

    /// Lowest free naturally aligned run of 2^`log2` entries (`log2` ≤ 5: a run stays in one
    /// word).
    fn find(&self, log2: u8) -> Option<u16> {
        let n = 1u32 << log2.min(vir_abi::wire::MSI_MAX_LOG2);
        let mask = (1u64 << n) - 1;
        for (w, &word) in self.used.iter().enumerate() {
            let mut off = 0;
            while off < 64 {
                if word & (mask << off) == 0 {
                    return u16::try_from(w as u32 * 64 + off).ok();
                }
                off += n;
            }
        }
        None
    }

    fn mark(&mut self, base: u16, log2: u8, used: bool) {
        let n = 1u32 << log2.min(vir_abi::wire::MSI_MAX_LOG2);
        let mask = ((1u64 << n) - 1) << (u32::from(base) % 64);
        if let Some(w) = self.used.get_mut(usize::from(base) / 64) {
            if used {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }

    fn lookup(
        &self,
        id: AllocationId,
        sub: u16,
    ) -> Result<(&VtdAllocation, VectorState), DomainError> {
        let a = self
            .allocs
            .get(&id.0)
            .ok_or(DomainError::UnknownAllocation(id))?;
        let s = *a
            .subs
            .get(usize::from(sub))
            .ok_or(DomainError::InvalidSubhandle {
                id,
                sub,
                count: a.subs.len() as u16,
            })?;
        Ok((a, s))
    }

    fn set_state(&mut self, id: AllocationId, sub: u16, state: VectorState) {
        if let Some(s) = self
            .allocs
            .get_mut(&id.0)
            .and_then(|a| a.subs.get_mut(usize::from(sub)))
        {
            *s = state;
        }
    }

    fn message(base: u16) -> MsiMessage {
        RemappableMsi {
            handle: base,
            shv: true,
            subhandle: 0,
        }
        .encode()
    }

    /// The entry for `how`: present towards the target, or a reservation (not present,
    /// FPD = 1). SVT = 1, SQ = 0, SID = the device's requester id.
    fn entry(&self, slot: &IrSlot, how: Activation) -> Result<u128, DomainError> {
        let (present, fpd, target) = match how {
            Activation::Reserve => (
                false,
                true,
                IrqTarget {
                    apic_id: 0,
                    vector: 0,
                },
            ),
            Activation::Target(t) => (true, false, t),
        };
        let mode: ApicMode = self.irta.apic_mode();
        if target.apic_id > mode.max_apic_id() {
            return Err(DomainError::UnreachableDestination {
                apic_id: target.apic_id,
            });
        }
        RemappedIrte {
            present,
            fpd,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: target.vector,
            dest: target.apic_id,
            sid: slot.device.requester_id(),
            sq: 0,
            svt: Svt::VerifySid,
        }
        .encode(mode)
        .map_err(|_| DomainError::UnreachableDestination {
            apic_id: target.apic_id,
        })
    }

    /// Writes entry `index` and invalidates it; counted.
    fn program(&mut self, t: &mut dyn Table, index: u16, raw: u128) -> Result<(), DomainError> {
        t.write(index, raw).map_err(DomainError::Hardware)?;
        self.stats.irte_writes += 1;
        t.invalidate(index, 0).map_err(DomainError::Hardware)?;
        self.stats.invalidations += 1;
        Ok(())
    }

    /// A fresh id: never 0, never a live one (ids of freed allocations come back only after
    /// 2^32 allocations).
    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != 0 && !self.allocs.contains_key(&id) {
                return id;
            }
        }
    }

    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
        let shape_ok = match slot.storage {
            StorageType::Msi => slot.index == 0,
            _ => slot.log2_count == 0,
        };
        let Some(count) = slot.count().filter(|_| shape_ok) else {
            return Err(DomainError::InvalidSlot(slot));
        };
        let base = self.find(slot.log2_count).ok_or(DomainError::TableFull {
            log2_count: slot.log2_count,
        })?;
        // The entries start not present (the table is zeroed at boot and after every free).
        self.mark(base, slot.log2_count, true);
        let id = self.fresh_id();
        self.allocs.insert(
            id,
            VtdAllocation {
                slot,
                base,
                subs: vec![VectorState::Allocated; usize::from(count)],
            },
        );
        Ok(AllocationId(id))
    }

    fn activate(
        &mut self,
        t: &mut dyn Table,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError> {
        let (a, prior) = self.lookup(id, sub)?;
        let allowed = match how {
            Activation::Reserve => prior == VectorState::Allocated,
            Activation::Target(_) => !matches!(prior, VectorState::Active(_)),
        };
        if !allowed {
            return Err(DomainError::InvalidState {
                id,
                sub,
                state: prior,
            });
        }
        let (base, slot) = (a.base, a.slot);
        let raw = self.entry(&slot, how)?;
        // sub < count and base + count ≤ the table size ≤ 65536: no overflow.
        self.program(t, base + sub, raw)?;
        let now = match how {
            Activation::Reserve => VectorState::Reserved,
            Activation::Target(t) => VectorState::Active(t),
        };
        self.set_state(id, sub, now);
        Ok(Self::message(base))
    }

    fn set_affinity(
        &mut self,
        t: &mut dyn Table,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError> {
        let (a, state) = self.lookup(id, sub)?;
        if !matches!(state, VectorState::Active(_)) {
            return Err(DomainError::InvalidState { id, sub, state });
        }
        let (base, slot) = (a.base, a.slot);
        let raw = self.entry(&slot, Activation::Target(target))?;
        self.program(t, base + sub, raw)?;
        self.set_state(id, sub, VectorState::Active(target));
        Ok(())
    }

    fn deactivate(
        &mut self,
        t: &mut dyn Table,
        id: AllocationId,
        sub: u16,
    ) -> Result<(), DomainError> {
        let (a, state) = self.lookup(id, sub)?;
        if state == VectorState::Allocated {
            return Err(DomainError::InvalidState { id, sub, state });
        }
        let base = a.base;
        self.program(t, base + sub, 0)?;
        self.set_state(id, sub, VectorState::Allocated);
        Ok(())
    }

    fn free(&mut self, t: &mut dyn Table, id: AllocationId) -> Result<(), DomainError> {
        let a = self
            .allocs
            .get(&id.0)
            .ok_or(DomainError::UnknownAllocation(id))?;
        let (base, log2) = (a.base, a.slot.log2_count);
        let live: Vec<u16> = (0u16..)
            .zip(a.subs.iter())
            .filter(|(_, s)| **s != VectorState::Allocated)
            .map(|(i, _)| i)
            .collect();
        for i in &live {
            t.write(base + i, 0).map_err(DomainError::Hardware)?;
            self.stats.irte_writes += 1;
            self.set_state(id, *i, VectorState::Allocated);
        }
        if !live.is_empty() {
            t.invalidate(base, log2).map_err(DomainError::Hardware)?;
            self.stats.invalidations += 1;
        }
        self.mark(base, log2, false);
        self.allocs.remove(&id.0);
        Ok(())
    }
}

/// The VT-d remapping domain of a bare-metal kernel (situation 1).
#[derive(Debug)]
pub struct BareMetalVtdDomain<H> {
    hw: H,
    core: VtdCore,
}

impl<H: RemappingHardware> BareMetalVtdDomain<H> {
    /// Sets the unit up with a table of `irta` and turns remapping on
    /// ([`RemappingHardware::enable`]).
    pub fn new(mut hw: H, irta: Irta) -> Result<Self, HardwareError> {
        hw.enable(irta)?;
        Ok(BareMetalVtdDomain {
            hw,
            core: VtdCore::new(irta),
        })
    }

    /// The hardware.
    pub fn hardware(&self) -> &H {
        &self.hw
    }

    /// The hardware, mutably.
    pub fn hardware_mut(&mut self) -> &mut H {
        &mut self.hw
    }

    /// Table accesses so far.
    pub fn stats(&self) -> VtdStats {
        self.core.stats
    }

    /// Live allocations.
    pub fn live_allocations(&self) -> usize {
        self.core.allocs.len()
    }

    /// The first table entry of allocation `id`.
    pub fn allocation_base(&self, id: AllocationId) -> Option<u16> {
        self.core.allocs.get(&id.0).map(|a| a.base)
    }
}

impl<H: RemappingHardware> RemapDomain for BareMetalVtdDomain<H> {
    fn supports_ims(&self) -> bool {
        true
    }
    fn supports(&self, _storage: StorageType) -> bool {
        true
    }
    fn supports_reservation(&self) -> bool {
        true
    }
    fn max_msi_log2(&self) -> u8 {
        vir_abi::wire::MSI_MAX_LOG2
    }
    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
        self.core.alloc(slot)
    }
    fn activate(
        &mut self,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError> {
        self.core.activate(&mut Hw(&mut self.hw), id, sub, how)
    }
    fn set_affinity(
        &mut self,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError> {
        self.core
            .set_affinity(&mut Hw(&mut self.hw), id, sub, target)
    }
    fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError> {
        self.core.deactivate(&mut Hw(&mut self.hw), id, sub)
    }
    fn free(&mut self, id: AllocationId) -> Result<(), DomainError> {
        self.core.free(&mut Hw(&mut self.hw), id)
    }
}

/// The VT-d remapping domain of a guest whose vIOMMU emulates remapping without vIR
/// (situation 2).
#[derive(Debug)]
pub struct EmulatedVtdDomain<M, R> {
    mem: M,
    regs: R,
    core: VtdCore,
}

impl<M: IrteMemory, R: VtdRegisters> EmulatedVtdDomain<M, R> {
    /// Points the emulated unit at a table of `irta` in guest memory (IRTA, then SIRTP), turns
    /// remapping on with compatibility-format interrupts blocked (IRE, CFI clear) and
    /// invalidates the entry cache globally — Linux's order. The table's memory must be zero.
    pub fn new(mem: M, mut regs: R, irta: Irta) -> Result<Self, HardwareError> {
        let raw = irta.encode().map_err(|_| HardwareError::Register)?;
        regs.write_irta(raw)?;
        regs.write_global_command(GCMD_SIRTP)?;
        regs.write_global_command(GCMD_IRE)?;
        regs.invalidate_all()?;
        Ok(EmulatedVtdDomain {
            mem,
            regs,
            core: VtdCore::new(irta),
        })
    }

    /// The table memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The registers.
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// The registers, mutably.
    pub fn registers_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Table accesses so far.
    pub fn stats(&self) -> VtdStats {
        self.core.stats
    }

    /// Live allocations.
    pub fn live_allocations(&self) -> usize {
        self.core.allocs.len()
    }

    /// The first table entry of allocation `id`.
    pub fn allocation_base(&self, id: AllocationId) -> Option<u16> {
        self.core.allocs.get(&id.0).map(|a| a.base)
    }
}

impl<M: IrteMemory, R: VtdRegisters> RemapDomain for EmulatedVtdDomain<M, R> {
    /// False: IMS storage cannot be trapped, so a guest without vIR must not offer IMS
    /// (`VIR-LEG-G-001`, `VIR-LEG-G-002`).
    fn supports_ims(&self) -> bool {
        false
    }
    fn supports(&self, storage: StorageType) -> bool {
        !storage.is_ims()
    }
    fn supports_reservation(&self) -> bool {
        true
    }
    fn max_msi_log2(&self) -> u8 {
        vir_abi::wire::MSI_MAX_LOG2
    }
    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
        if slot.storage.is_ims() {
            return Err(DomainError::Unsupported(slot.storage));
        }
        self.core.alloc(slot)
    }
    fn activate(
        &mut self,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError> {
        self.core
            .activate(&mut Emu(&mut self.mem, &mut self.regs), id, sub, how)
    }
    fn set_affinity(
        &mut self,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError> {
        self.core
            .set_affinity(&mut Emu(&mut self.mem, &mut self.regs), id, sub, target)
    }
    fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError> {
        self.core
            .deactivate(&mut Emu(&mut self.mem, &mut self.regs), id, sub)
    }
    fn free(&mut self, id: AllocationId) -> Result<(), DomainError> {
        self.core.free(&mut Emu(&mut self.mem, &mut self.regs), id)
    }
}

#[cfg(test)]
mod tests;

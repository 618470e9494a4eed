//! An Intel VT-d interrupt-remapping unit.
//!
//! The unit holds an interrupt remapping table of up to 65536 128-bit IRTEs, stored raw in the
//! layout of `spec/vir-v1.md` §8.3 and §8.4 and decoded with [`vir_abi::hw::vtd`] on every use. Its state:
//!
//! * **IRTA** ([`Irta`]): the table has 2^(S+1) entries; EIME selects the x2APIC destination
//!   format (full 32-bit DST) over xAPIC (APIC id in DST bits 15:8).
//! * **IRES** ([`RemappingUnit::enable_remapping`]): with remapping off, every interrupt write
//!   passes through untranslated ([`RemapOutcome::PassThrough`]).
//! * **CFI** ([`RemappingUnit::set_cfi`]): with remapping on and CFI clear, a
//!   compatibility-format write is blocked with fault 0x25; with CFI set it passes through. A
//!   host offering vIR must run with remapping on and CFI clear (VIR-DISC-H-001).
//! * **Interrupt entry cache**: hardware uses cached entries. The model is the strictest legal
//!   cache — every entry is cached — so an IRTE write takes effect only after an invalidation of
//!   its index ([`RemappingUnit::invalidate_entries`]) or a global one
//!   ([`RemappingUnit::invalidate_all`]). A host that forgets to invalidate keeps the old entry
//!   in force, and tests see it. Changing IRTA does not flush the cache either: VT-d requires a
//!   global invalidation after it.
//!
//! # Check order
//!
//! [`RemappingUnit::remap`] checks an interrupt write (requester id, address, data) in VT-d's
//! order (Intel VT-d specification, chapter 5; IRTE fields in `spec/vir-v1.md` §8.3), with these
//! [`VtdFaultReason`]s — the order is kept once, in [`vir_abi::vtd_remap::decide`], which the
//! host's emulated vIOMMU uses too; this unit supplies its table, cache and fault log:
//!
//! 1. high address ≠ 0 or address 31:20 ≠ `0xFEE` → 0x20;
//! 2. format bit 4 = 0 (compatibility format): with CFI clear → 0x25, with CFI set → passed
//!    through;
//! 3. index (handle, plus sub-handle when SHV = 1, 16-bit arithmetic) ≥ table size → 0x21;
//! 4. (0x23, table unreadable, cannot happen: the table is the unit's own storage);
//! 5. P = 0 → 0x22;
//! 6. reserved bits set (xAPIC mode: DST bits outside 15:8 included) → 0x24;
//! 7. SID check failed, or SVT = 3 → 0x26 ([`vir_abi::hw::vtd::sid_matches`]: SQ masks for
//!    SVT = 1, bus range with the start bus in the high byte for SVT = 2 — the Linux
//!    convention);
//! 8. SHV = 1 and data 31:16 ≠ 0 → 0x20.
//!
//! A faulting write is always blocked. It is recorded in the fault log ([`FaultRecord`]: reason,
//! index, requester id, address, data) unless the IRTE it reached has FPD = 1: FPD suppresses
//! recording, not blocking (faults 5–8 read the entry; faults 1–3 are always recorded).
//!
//! A write that is not to the interrupt window is, on real hardware, a DMA write handled by DMA
//! remapping; this model treats every write it is given as an interrupt request, so such a
//! write faults with 0x20 — it is never delivered as an interrupt.

use core::fmt;
use std::collections::VecDeque;

use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{Irta, Irte, IrteError, IrteRaw, VtdFaultReason};

use vir_abi::vtd_remap::{Decision, Lookup, UnitState, decide};

use crate::ids::{HostApicId, RequesterId};

/// The largest interrupt remapping table (S = 15).
pub const MAX_ENTRIES: u32 = 65536;

/// How many fault records the unit keeps before it counts overflows instead (the project's
/// one VT-d figure, [`vir_abi::vtd_remap::FAULT_LOG_CAPACITY`]).
pub use vir_abi::vtd_remap::FAULT_LOG_CAPACITY;

/// The largest index mask of an interrupt entry cache invalidation (2^16 entries).
pub const MAX_INDEX_MASK: u8 = 16;

/// A recorded interrupt-remapping fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultRecord {
    /// The fault reason.
    pub reason: VtdFaultReason,
    /// The IRTE index, when the fault occurred after it was computed (reasons 0x21, 0x22, 0x24,
    /// 0x26 and the trailing 0x20).
    pub index: Option<u16>,
    /// The requester id of the write.
    pub requester_id: RequesterId,
    /// The 64-bit address written.
    pub address: u64,
    /// The data written.
    pub data: u32,
}

/// A write the unit blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemapFault {
    /// The fault reason.
    pub reason: VtdFaultReason,
    /// The IRTE index, if computed.
    pub index: Option<u16>,
    /// Whether the fault was recorded (`false` when the IRTE's FPD = 1 suppressed it).
    pub recorded: bool,
}

/// A write remapped through a remapped-format IRTE (IM = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemappedInterrupt {
    /// The IRTE index used.
    pub index: u16,
    /// Destination APIC id (from DST per the IRTA's xAPIC/x2APIC mode).
    pub dest: HostApicId,
    /// Host vector.
    pub vector: u8,
    /// Trigger mode: `true` = level.
    pub trigger_level: bool,
    /// Delivery mode (DLM, 3 bits).
    pub delivery_mode: u8,
    /// Destination mode: `true` = logical.
    pub dest_mode_logical: bool,
    /// Redirection hint.
    pub redirection_hint: bool,
}

/// A write remapped through a posted-format IRTE (IM = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PostedInterrupt {
    /// The IRTE index used.
    pub index: u16,
    /// Posted-interrupt descriptor address.
    pub pda: u64,
    /// Guest vector to set in the descriptor's PIR.
    pub vector: u8,
    /// Urgent.
    pub urgent: bool,
}

/// The result of one interrupt write through the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemapOutcome {
    /// Remapped format: deliver `vector` to physical CPU `dest`.
    Remapped(RemappedInterrupt),
    /// Posted format: post `vector` into the descriptor at `pda`.
    Posted(PostedInterrupt),
    /// Not translated (remapping off, or a compatibility-format write with CFI set): the write
    /// goes on to the APIC bus as it is.
    PassThrough(MsiMessage),
    /// Blocked.
    Fault(RemapFault),
}

/// Counters of a remapping unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemapStats {
    /// IRTE writes (full, low half or high half: each counts one).
    pub irte_writes: u64,
    /// Interrupt entry cache invalidations (index-selective or global: each counts one).
    pub invalidations: u64,
    /// Writes remapped to a physical CPU.
    pub remapped: u64,
    /// Writes posted.
    pub posted: u64,
    /// Writes passed through.
    pub passed_through: u64,
    /// Faults recorded.
    pub faults_recorded: u64,
    /// Faults not recorded because of FPD = 1.
    pub faults_suppressed: u64,
}

/// Errors of the remapping unit's programming interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuError {
    /// The index is beyond the table.
    IndexOutOfRange {
        /// The index given.
        index: u32,
        /// Entries in the table.
        entries: u32,
    },
    /// An invalidation's index mask (carried) exceeds 16.
    IndexMaskTooLarge(u8),
    /// Encoding a decoded entry failed.
    Encode(IrteError),
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IndexOutOfRange { index, entries } => {
                write!(f, "IRTE index {index} is beyond the {entries}-entry table")
            }
            Self::IndexMaskTooLarge(im) => {
                write!(f, "invalidation index mask {im} exceeds {MAX_INDEX_MASK}")
            }
            Self::Encode(e) => write!(f, "cannot encode IRTE: {e}"),
        }
    }
}

impl std::error::Error for IommuError {}

/// A VT-d interrupt-remapping unit.
#[derive(Debug, Clone)]
pub struct RemappingUnit {
    irta: Irta,
    /// The table as software wrote it.
    memory: Vec<u128>,
    /// The entries hardware uses (interrupt entry cache).
    cache: Vec<u128>,
    remapping: bool,
    cfi: bool,
    faults: VecDeque<FaultRecord>,
    fault_overflows: u64,
    stats: RemapStats,
}

impl RemappingUnit {
    /// A unit with table register `irta`, every entry zero (not present), remapping off and
    /// CFI clear.
    pub fn new(irta: Irta) -> Self {
        let n = irta.entries() as usize;
        Self {
            irta,
            memory: vec![0; n],
            cache: vec![0; n],
            remapping: false,
            cfi: false,
            faults: VecDeque::new(),
            fault_overflows: 0,
            stats: RemapStats::default(),
        }
    }

    /// The table register.
    pub const fn irta(&self) -> Irta {
        self.irta
    }

    /// Sets the table register (SIRTP). Entries below the new size keep their contents; the
    /// cache is not flushed (invalidate globally afterwards, as VT-d requires).
    pub fn set_irta(&mut self, irta: Irta) {
        let n = irta.entries() as usize;
        self.memory.resize(n, 0);
        self.cache.resize(n, 0);
        self.irta = irta;
    }

    /// The APIC mode IRTE destinations use (IRTA.EIME).
    pub const fn apic_mode(&self) -> ApicMode {
        self.irta.apic_mode()
    }

    /// Entries in the table.
    pub const fn entries(&self) -> u32 {
        self.irta.entries()
    }

    /// Turns interrupt remapping on or off (GCMD.IRE; status GSTS.IRES).
    pub fn enable_remapping(&mut self, on: bool) {
        self.remapping = on;
    }

    /// Whether interrupt remapping is on (GSTS.IRES).
    pub const fn remapping_enabled(&self) -> bool {
        self.remapping
    }

    /// Sets CFI (GCMD.CFI; status GSTS.CFIS): `true` lets compatibility-format interrupts
    /// bypass remapping, `false` blocks them (fault 0x25) while remapping is on.
    pub fn set_cfi(&mut self, cfi: bool) {
        self.cfi = cfi;
    }

    /// CFI status (GSTS.CFIS).
    pub const fn cfi(&self) -> bool {
        self.cfi
    }

    /// Whether compatibility-format interrupts are blocked: remapping on and CFI clear (the
    /// condition VIR-DISC-H-001 asks of a host offering vIR).
    pub const fn compat_blocked(&self) -> bool {
        self.remapping && !self.cfi
    }

    fn check_index(&self, index: u16) -> Result<usize, IommuError> {
        let entries = self.entries();
        if u32::from(index) >= entries {
            return Err(IommuError::IndexOutOfRange {
                index: index.into(),
                entries,
            });
        }
        Ok(index as usize)
    }

    /// Writes a whole entry to the table in memory (effective after invalidation).
    pub fn write_irte(&mut self, index: u16, raw: u128) -> Result<(), IommuError> {
        let i = self.check_index(index)?;
        self.memory[i] = raw;
        self.stats.irte_writes += 1;
        Ok(())
    }

    /// Writes bits 63:0 of an entry (Linux updates a remapped entry's vector and DST this way).
    pub fn write_irte_low(&mut self, index: u16, low: u64) -> Result<(), IommuError> {
        let i = self.check_index(index)?;
        self.memory[i] = (self.memory[i] & !u128::from(u64::MAX)) | u128::from(low);
        self.stats.irte_writes += 1;
        Ok(())
    }

    /// Writes bits 127:64 of an entry.
    pub fn write_irte_high(&mut self, index: u16, high: u64) -> Result<(), IommuError> {
        let i = self.check_index(index)?;
        self.memory[i] = (self.memory[i] & u128::from(u64::MAX)) | (u128::from(high) << 64);
        self.stats.irte_writes += 1;
        Ok(())
    }

    /// Encodes `entry` in the unit's APIC mode and writes it ([`RemappingUnit::write_irte`]).
    pub fn write_entry(&mut self, index: u16, entry: &Irte) -> Result<(), IommuError> {
        self.check_index(index)?;
        let raw = entry.encode(self.apic_mode()).map_err(IommuError::Encode)?;
        self.write_irte(index, raw)
    }

    /// The entry as written in memory.
    pub fn irte(&self, index: u16) -> Result<u128, IommuError> {
        Ok(self.memory[self.check_index(index)?])
    }

    /// The entry hardware currently uses (the cached copy).
    pub fn cached_irte(&self, index: u16) -> Result<u128, IommuError> {
        Ok(self.cache[self.check_index(index)?])
    }

    /// Index-selective interrupt entry cache invalidation: the 2^`index_mask` entries of the
    /// naturally aligned block containing `index` (IIDX and IM of the invalidation descriptor).
    /// Entries of the block beyond the table are ignored.
    pub fn invalidate_entries(&mut self, index: u16, index_mask: u8) -> Result<(), IommuError> {
        if index_mask > MAX_INDEX_MASK {
            return Err(IommuError::IndexMaskTooLarge(index_mask));
        }
        let count = 1usize << index_mask;
        let start = (index as usize) & !(count - 1);
        let end = start.saturating_add(count).min(self.memory.len());
        if start < end {
            self.cache[start..end].copy_from_slice(&self.memory[start..end]);
        }
        self.stats.invalidations += 1;
        Ok(())
    }

    /// Invalidates one entry.
    pub fn invalidate_entry(&mut self, index: u16) {
        // An index mask of 0 is always valid.
        let _ = self.invalidate_entries(index, 0);
    }

    /// Global interrupt entry cache invalidation.
    pub fn invalidate_all(&mut self) {
        self.cache.copy_from_slice(&self.memory);
        self.stats.invalidations += 1;
    }

    /// Counters.
    pub const fn stats(&self) -> RemapStats {
        self.stats
    }

    /// The recorded faults, oldest first.
    pub fn faults(&self) -> impl Iterator<Item = &FaultRecord> {
        self.faults.iter()
    }

    /// Removes and returns the recorded faults, oldest first.
    pub fn take_faults(&mut self) -> Vec<FaultRecord> {
        self.faults.drain(..).collect()
    }

    /// Faults not kept because the log was full (the primary fault overflow condition).
    pub const fn fault_overflows(&self) -> u64 {
        self.fault_overflows
    }

    fn fault(
        &mut self,
        reason: VtdFaultReason,
        index: Option<u16>,
        fpd: bool,
        requester_id: RequesterId,
        msg: MsiMessage,
    ) -> RemapOutcome {
        if fpd {
            self.stats.faults_suppressed += 1;
        } else {
            self.stats.faults_recorded += 1;
            if self.faults.len() < FAULT_LOG_CAPACITY {
                self.faults.push_back(FaultRecord {
                    reason,
                    index,
                    requester_id,
                    address: msg.address(),
                    data: msg.data,
                });
            } else {
                self.fault_overflows += 1;
            }
        }
        RemapOutcome::Fault(RemapFault {
            reason,
            index,
            recorded: !fpd,
        })
    }

    /// Processes one interrupt write from `requester_id`, in VT-d's check order (see the module
    /// documentation). Total: any input gives an outcome, nothing panics.
    pub fn remap(&mut self, requester_id: RequesterId, msg: MsiMessage) -> RemapOutcome {
        let state = UnitState {
            remapping: self.remapping,
            cfi: self.cfi,
            table_entries: Some(self.entries()),
        };
        let mode = self.apic_mode();
        let cache = &self.cache;
        let decision = decide(state, requester_id.0, msg, |index| {
            // decide asks only for an index below the table size, which is the cache's length.
            let Some(&raw) = cache.get(usize::from(index)) else {
                return Lookup::Unreadable;
            };
            let raw = IrteRaw::from_u128(raw);
            let fpd = raw.fpd();
            if !raw.present() {
                return Lookup::NotPresent { fpd };
            }
            match Irte::decode(raw, mode) {
                Ok(entry) => Lookup::Present(entry),
                Err(e) => Lookup::Reserved {
                    fpd,
                    reason: e.fault_reason().unwrap_or(VtdFaultReason::IRTE_RESERVED),
                },
            }
        });
        match decision {
            Decision::PassThrough => {
                self.stats.passed_through += 1;
                RemapOutcome::PassThrough(msg)
            }
            Decision::Fault { reason, index, fpd } => {
                self.fault(reason, index, fpd, requester_id, msg)
            }
            Decision::Remap {
                index,
                entry: Irte::Remapped(r),
            } => {
                self.stats.remapped += 1;
                RemapOutcome::Remapped(RemappedInterrupt {
                    index,
                    dest: HostApicId(r.dest),
                    vector: r.vector,
                    trigger_level: r.trigger_level,
                    delivery_mode: r.delivery_mode,
                    dest_mode_logical: r.dest_mode_logical,
                    redirection_hint: r.redirection_hint,
                })
            }
            Decision::Remap {
                index,
                entry: Irte::Posted(p),
            } => {
                self.stats.posted += 1;
                RemapOutcome::Posted(PostedInterrupt {
                    index,
                    pda: p.pda,
                    vector: p.vector,
                    urgent: p.urgent,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vir_abi::hw::vtd::{PostedIrte, RemappableMsi, RemappedIrte, Svt};

    const RID: RequesterId = RequesterId(0x0310); // 03:02.0
    const XA: ApicMode = ApicMode::XApic;
    const X2: ApicMode = ApicMode::X2Apic;

    fn irta(size_s: u8, eime: bool) -> Irta {
        Irta {
            size_s,
            eime,
            base: 0x10_0000,
        }
    }

    fn unit(size_s: u8, eime: bool) -> RemappingUnit {
        let mut u = RemappingUnit::new(irta(size_s, eime));
        u.enable_remapping(true);
        u
    }

    fn remapped(vector: u8, dest: u32) -> RemappedIrte {
        RemappedIrte {
            present: true,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector,
            dest,
            sid: RID.0,
            sq: 0,
            svt: Svt::VerifySid,
        }
    }

    fn program(u: &mut RemappingUnit, index: u16, e: Irte) {
        u.write_entry(index, &e).unwrap();
        u.invalidate_entry(index);
    }

    fn msg(handle: u16, sub: u16) -> MsiMessage {
        RemappableMsi {
            handle,
            shv: true,
            subhandle: sub,
        }
        .encode()
    }

    fn fault_of(o: RemapOutcome) -> RemapFault {
        match o {
            RemapOutcome::Fault(f) => f,
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[test]
    fn remapped_entry_delivers_dest_vector_trigger_mode() {
        let mut u = unit(7, true);
        let e = RemappedIrte {
            trigger_level: true,
            delivery_mode: 1,
            redirection_hint: true,
            ..remapped(0x45, 0x1_0203)
        };
        program(&mut u, 5, Irte::Remapped(e));
        assert_eq!(
            u.remap(RID, msg(5, 0)),
            RemapOutcome::Remapped(RemappedInterrupt {
                index: 5,
                dest: HostApicId(0x1_0203),
                vector: 0x45,
                trigger_level: true,
                delivery_mode: 1,
                dest_mode_logical: false,
                redirection_hint: true,
            })
        );
        assert_eq!(u.stats().remapped, 1);
    }

    #[test]
    fn xapic_dst_bits_15_8_and_x2apic_full_dst() {
        // The same raw entry, DST field 0x0000_0500: xAPIC reads APIC id 5 from bits 15:8,
        // x2APIC reads the whole field, 0x500.
        let raw = remapped(0x30, 5).encode(XA).unwrap();
        assert_eq!((raw >> 32) as u32, 0x0500);
        for (eime, want) in [(false, 5u32), (true, 0x500)] {
            let mut u = unit(3, eime);
            u.write_irte(1, raw).unwrap();
            u.invalidate_entry(1);
            match u.remap(RID, msg(1, 0)) {
                RemapOutcome::Remapped(r) => assert_eq!(r.dest, HostApicId(want), "eime {eime}"),
                other => panic!("eime {eime}: {other:?}"),
            }
        }
        // x2APIC destination 0x1_0005 in xAPIC mode: DST bits 31:16 are reserved -> 0x24.
        let raw = remapped(0x30, 0x1_0005).encode(X2).unwrap();
        let mut u = unit(3, false);
        u.write_irte(1, raw).unwrap();
        u.invalidate_entry(1);
        assert_eq!(
            fault_of(u.remap(RID, msg(1, 0))).reason,
            VtdFaultReason::IRTE_RESERVED
        );
    }

    #[test]
    fn posted_entry_yields_pda_vector_urgent() {
        let mut u = unit(7, true);
        let p = PostedIrte {
            present: true,
            fpd: false,
            avail: 0,
            urgent: true,
            vector: 0x61,
            pda: 0x1_2345_6780,
            sid: RID.0,
            sq: 0,
            svt: Svt::VerifySid,
        };
        program(&mut u, 9, Irte::Posted(p));
        assert_eq!(
            u.remap(RID, msg(8, 1)),
            RemapOutcome::Posted(PostedInterrupt {
                index: 9,
                pda: 0x1_2345_6780,
                vector: 0x61,
                urgent: true
            })
        );
    }

    // VIR-DISC-H-001: remapping on and CFI clear block compatibility-format interrupts (0x25);
    // with remapping off they pass through.
    #[test]
    fn compat_format_blocked_with_cfi_clear_vir_disc_h_001() {
        let compat = MsiMessage::new(0xFEE0_1000, 0, 0x41);
        let mut u = RemappingUnit::new(irta(3, true));
        assert!(!u.compat_blocked());
        assert_eq!(u.remap(RID, compat), RemapOutcome::PassThrough(compat));
        u.enable_remapping(true);
        assert!(u.compat_blocked());
        assert_eq!(
            u.remap(RID, compat),
            RemapOutcome::Fault(RemapFault {
                reason: VtdFaultReason::COMPAT_BLOCKED,
                index: None,
                recorded: true
            })
        );
        u.set_cfi(true);
        assert!(u.cfi());
        assert!(!u.compat_blocked());
        assert_eq!(u.remap(RID, compat), RemapOutcome::PassThrough(compat));
        assert_eq!(u.stats().passed_through, 2);
        assert_eq!(
            u.take_faults(),
            vec![FaultRecord {
                reason: VtdFaultReason::COMPAT_BLOCKED,
                index: None,
                requester_id: RID,
                address: 0xFEE0_1000,
                data: 0x41
            }]
        );
    }

    /// Builds one write per fault reason, where each write would pass every earlier check, and
    /// checks the reason codes come out exactly in VT-d's order.
    #[test]
    fn every_fault_reason_in_order() {
        let mut u = unit(3, true); // 16 entries
        // 2: not present. 3: reserved bit 100 set. 4: SID for another requester. 5: good.
        program(&mut u, 4, Irte::Remapped(remapped(0x40, 1)));
        u.write_irte(3, remapped(0x40, 1).encode(X2).unwrap() | 1 << 100)
            .unwrap();
        u.invalidate_entry(3);
        program(
            &mut u,
            5,
            Irte::Remapped(RemappedIrte {
                sid: 0x0400,
                ..remapped(0x40, 1)
            }),
        );
        let good = msg(4, 0);
        let cases: [(MsiMessage, u8, Option<u16>); 8] = [
            // high address non-zero, on an otherwise good message
            (
                MsiMessage {
                    address_hi: 1,
                    ..good
                },
                0x20,
                None,
            ),
            // address outside 0xFEE
            (
                MsiMessage {
                    address_lo: good.address_lo & 0x000F_FFFF | 0xFED0_0000,
                    ..good
                },
                0x20,
                None,
            ),
            // compatibility format
            (MsiMessage::new(0xFEE0_0000, 0, 0x40), 0x25, None),
            // index 16 >= 16 entries (handle 15 + subhandle 1)
            (msg(15, 1), 0x21, Some(16)),
            (msg(2, 0), 0x22, Some(2)),
            (msg(3, 0), 0x24, Some(3)),
            (msg(5, 0), 0x26, Some(5)),
            // SHV with data 31:16 != 0 on the good entry: checked last
            (
                MsiMessage {
                    data: 0x1_0000,
                    ..good
                },
                0x20,
                Some(4),
            ),
        ];
        for (m, reason, index) in cases {
            assert_eq!(
                u.remap(RID, m),
                RemapOutcome::Fault(RemapFault {
                    reason: VtdFaultReason(reason),
                    index,
                    recorded: true
                }),
                "{m:?}"
            );
        }
        let log = u.take_faults();
        assert_eq!(
            log.iter().map(|f| f.reason.0).collect::<Vec<_>>(),
            vec![0x20, 0x20, 0x25, 0x21, 0x22, 0x24, 0x26, 0x20]
        );
        assert_eq!(log[3].address, msg(15, 1).address());
        assert_eq!(log[3].data, 1);
        assert_eq!(log[7].data, 0x1_0000);
        assert!(log.iter().all(|f| f.requester_id == RID));
        assert_eq!(u.remap(RID, good), u.remap(RID, good));
        assert!(matches!(u.remap(RID, good), RemapOutcome::Remapped(_)));
    }

    #[test]
    fn earlier_checks_win_over_later_ones() {
        let mut u = unit(3, true);
        // Index out of range beats the subhandle data check.
        let m = MsiMessage {
            data: 0xFFFF_0010,
            ..msg(0, 0)
        };
        assert_eq!(
            fault_of(u.remap(RID, m)).reason,
            VtdFaultReason::INDEX_OUT_OF_RANGE
        );
        // Not present beats the SID check: the entry has the wrong SID but P = 0.
        let e = RemappedIrte {
            present: false,
            sid: 0x9999,
            ..remapped(0x40, 1)
        };
        program(&mut u, 1, Irte::Remapped(e));
        assert_eq!(
            fault_of(u.remap(RID, msg(1, 0))).reason,
            VtdFaultReason::NOT_PRESENT
        );
        // Reserved bits beat the SID check.
        u.write_irte(1, e.encode(X2).unwrap() | 1 | 1 << 13)
            .unwrap();
        u.invalidate_entry(1);
        assert_eq!(
            fault_of(u.remap(RID, msg(1, 0))).reason,
            VtdFaultReason::IRTE_RESERVED
        );
        // High address beats the compatibility check.
        let compat_hi = MsiMessage::new(0xFEE0_0000, 2, 0);
        assert_eq!(
            fault_of(u.remap(RID, compat_hi)).reason,
            VtdFaultReason::MALFORMED_REQUEST
        );
    }

    #[test]
    fn shv_zero_uses_handle_and_ignores_data() {
        let mut u = unit(3, true);
        program(&mut u, 6, Irte::Remapped(remapped(0x50, 2)));
        let m = RemappableMsi {
            handle: 6,
            shv: false,
            subhandle: 0,
        }
        .encode();
        let m = MsiMessage {
            data: 0xDEAD_BEEF,
            ..m
        };
        match u.remap(RID, m) {
            RemapOutcome::Remapped(r) => assert_eq!((r.index, r.vector), (6, 0x50)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handle_plus_subhandle_is_16_bit_arithmetic() {
        let mut u = unit(15, true); // 65536 entries
        program(&mut u, 1, Irte::Remapped(remapped(0x51, 3)));
        program(&mut u, 0xFFFF, Irte::Remapped(remapped(0x52, 3)));
        match u.remap(RID, msg(0xFFFF, 2)) {
            RemapOutcome::Remapped(r) => assert_eq!((r.index, r.vector), (1, 0x51)),
            other => panic!("{other:?}"),
        }
        match u.remap(RID, msg(0xFFFF, 0)) {
            RemapOutcome::Remapped(r) => assert_eq!((r.index, r.vector), (0xFFFF, 0x52)),
            other => panic!("{other:?}"),
        }
        assert_eq!(u.entries(), MAX_ENTRIES);
    }

    #[test]
    fn fpd_suppresses_recording_not_blocking() {
        let mut u = unit(3, true);
        // Not present with FPD = 1: blocked, not recorded.
        u.write_irte(1, 0b10).unwrap();
        u.invalidate_entry(1);
        assert_eq!(
            u.remap(RID, msg(1, 0)),
            RemapOutcome::Fault(RemapFault {
                reason: VtdFaultReason::NOT_PRESENT,
                index: Some(1),
                recorded: false
            })
        );
        // SID mismatch with FPD = 1.
        let e = RemappedIrte {
            fpd: true,
            sid: 0x0500,
            ..remapped(0x40, 1)
        };
        program(&mut u, 2, Irte::Remapped(e));
        assert_eq!(
            fault_of(u.remap(RID, msg(2, 0))),
            RemapFault {
                reason: VtdFaultReason::SID_CHECK_FAILED,
                index: Some(2),
                recorded: false
            }
        );
        // Reserved bits with FPD = 1.
        u.write_irte(3, 0b11 | 1 << 12).unwrap();
        u.invalidate_entry(3);
        assert_eq!(
            fault_of(u.remap(RID, msg(3, 0))),
            RemapFault {
                reason: VtdFaultReason::IRTE_RESERVED,
                index: Some(3),
                recorded: false
            }
        );
        // FPD = 0 on the same not-present fault: recorded.
        assert!(fault_of(u.remap(RID, msg(4, 0))).recorded);
        // Index out of range is detected before any entry is read: always recorded.
        assert!(fault_of(u.remap(RID, msg(16, 0))).recorded);
        assert_eq!(u.faults().count(), 2);
        assert_eq!(u.stats().faults_suppressed, 3);
        assert_eq!(u.stats().faults_recorded, 2);
    }

    #[test]
    fn entry_cache_needs_invalidation() {
        let mut u = unit(7, true);
        u.write_entry(10, &Irte::Remapped(remapped(0x40, 1)))
            .unwrap();
        // Written but not invalidated: hardware still sees the old, not-present entry.
        assert_eq!(
            fault_of(u.remap(RID, msg(10, 0))).reason,
            VtdFaultReason::NOT_PRESENT
        );
        assert_eq!(u.cached_irte(10), Ok(0));
        u.invalidate_entry(10);
        assert!(matches!(u.remap(RID, msg(10, 0)), RemapOutcome::Remapped(r) if r.vector == 0x40));
        // Retarget via the low half only; stale until invalidated.
        let new = remapped(0x41, 2).encode(X2).unwrap();
        u.write_irte_low(10, new as u64).unwrap();
        assert!(matches!(u.remap(RID, msg(10, 0)), RemapOutcome::Remapped(r) if r.vector == 0x40));
        // Invalidating another index does not help.
        u.invalidate_entry(11);
        assert!(matches!(u.remap(RID, msg(10, 0)), RemapOutcome::Remapped(r) if r.vector == 0x40));
        // A block invalidation covering it does (IM = 3: entries 8..16).
        u.invalidate_entries(15, 3).unwrap();
        assert!(matches!(u.remap(RID, msg(10, 0)),
            RemapOutcome::Remapped(r) if r.vector == 0x41 && r.dest == HostApicId(2)));
        // Global invalidation.
        u.write_irte(10, 0).unwrap();
        u.write_irte_high(11, 0x4_0310).unwrap();
        assert_eq!(u.irte(11), Ok(0x4_0310u128 << 64));
        u.invalidate_all();
        assert_eq!(
            fault_of(u.remap(RID, msg(10, 0))).reason,
            VtdFaultReason::NOT_PRESENT
        );
        assert_eq!(u.stats().irte_writes, 4);
        assert_eq!(u.stats().invalidations, 4);
        assert_eq!(
            u.invalidate_entries(0, 17),
            Err(IommuError::IndexMaskTooLarge(17))
        );
    }

    #[test]
    fn programming_interface_checks_index() {
        let mut u = unit(0, true); // 2 entries
        assert_eq!(
            u.write_irte(2, 1),
            Err(IommuError::IndexOutOfRange {
                index: 2,
                entries: 2
            })
        );
        assert_eq!(
            u.irte(9),
            Err(IommuError::IndexOutOfRange {
                index: 9,
                entries: 2
            })
        );
        assert_eq!(u.write_entry(0, &Irte::Remapped(remapped(1, 256))), Ok(()));
        let mut xa = unit(0, false);
        assert_eq!(
            xa.write_entry(0, &Irte::Remapped(remapped(1, 256))),
            Err(IommuError::Encode(IrteError::XApicDestinationTooLarge(256)))
        );
        // Shrinking IRTA keeps the low entries; growing adds zeroed ones.
        u.invalidate_all();
        u.set_irta(irta(1, true));
        assert_eq!(u.entries(), 4);
        assert_eq!(u.irte(3), Ok(0));
        assert!(matches!(u.remap(RID, msg(0, 0)), RemapOutcome::Remapped(_)));
    }

    // VIR-SEC-H-001: SVT=1 with SQ masks and SVT=2 bus ranges (start bus in the high byte).
    #[test]
    fn sid_checks_sq_masks_and_bus_range_vir_sec_h_001() {
        let mut u = unit(3, true);
        let base = remapped(0x40, 1);
        let cases: [(u16, u8, Svt, u16, bool); 10] = [
            (0x0310, 0, Svt::VerifySid, 0x0310, true),
            (0x0310, 0, Svt::VerifySid, 0x0311, false),
            (0x0310, 1, Svt::VerifySid, 0x0314, true),
            (0x0310, 1, Svt::VerifySid, 0x0312, false),
            (0x0310, 2, Svt::VerifySid, 0x0316, true),
            (0x0310, 3, Svt::VerifySid, 0x0317, true),
            (0x0310, 3, Svt::VerifySid, 0x0318, false),
            // Bus range 0x02..=0x05, start bus in the high byte (Linux PCI_DEVID(start, end)).
            (0x0205, 0, Svt::VerifyBus, 0x0538, true),
            (0x0205, 0, Svt::VerifyBus, 0x0600, false),
            (0x0310, 0, Svt::Reserved, 0x0310, false),
        ];
        for (sid, sq, svt, rid, ok) in cases {
            program(
                &mut u,
                1,
                Irte::Remapped(RemappedIrte {
                    sid,
                    sq,
                    svt,
                    ..base
                }),
            );
            let out = u.remap(RequesterId(rid), msg(1, 0));
            if ok {
                assert!(
                    matches!(out, RemapOutcome::Remapped(_)),
                    "{sid:#x} {sq} {svt:?} {rid:#x}: {out:?}"
                );
            } else {
                assert_eq!(
                    out,
                    RemapOutcome::Fault(RemapFault {
                        reason: VtdFaultReason::SID_CHECK_FAILED,
                        index: Some(1),
                        recorded: true
                    }),
                    "{sid:#x} {sq} {svt:?} {rid:#x}"
                );
            }
        }
        // The QEMU reading (high byte = end) would accept bus 3 for SID 0x0502; Linux does not.
        program(
            &mut u,
            1,
            Irte::Remapped(RemappedIrte {
                sid: 0x0502,
                svt: Svt::VerifyBus,
                ..base
            }),
        );
        assert_eq!(
            fault_of(u.remap(RequesterId(0x0300), msg(1, 0))).reason,
            VtdFaultReason::SID_CHECK_FAILED
        );
    }

    #[test]
    fn fault_log_is_bounded() {
        let mut u = unit(0, true);
        for _ in 0..FAULT_LOG_CAPACITY + 5 {
            u.remap(RID, msg(7, 0));
        }
        assert_eq!(u.faults().count(), FAULT_LOG_CAPACITY);
        assert_eq!(u.fault_overflows(), 5);
        assert_eq!(u.take_faults().len(), FAULT_LOG_CAPACITY);
        assert_eq!(u.faults().count(), 0);
    }

    proptest! {
        // VIR-SEC-H-001 / B17: a forged write (any address, any data) from a requester whose id
        // no present entry names is never remapped nor posted.
        #[test]
        fn forged_writes_from_other_sid_never_delivered_vir_sec_h_001(
            lo in any::<u32>(), hi in prop_oneof![Just(0u32), any::<u32>()], data in any::<u32>(),
            shape in 0u8..3, rid in any::<u16>(), eime in any::<bool>(),
        ) {
            prop_assume!(rid & !0x7 != 0x0310 & !0x7);
            let mut u = unit(7, eime);
            // Present entries for 03:02.x, every one of the 256 in the table: remapped, posted and
            // an SQ-qualified one.
            for i in 0..=255u16 {
                let e = match i % 3 {
                    0 => Irte::Remapped(remapped(0x20 + (i % 200) as u8, u32::from(i % 4))),
                    1 => Irte::Posted(PostedIrte {
                        present: true, fpd: false, avail: 0, urgent: false, vector: 0x30,
                        pda: 0x1000, sid: RID.0, sq: 0, svt: Svt::VerifySid,
                    }),
                    _ => Irte::Remapped(RemappedIrte { sq: 3, ..remapped(0x60, 0) }),
                };
                u.write_entry(i, &e).unwrap();
            }
            u.invalidate_all();
            // Shapes: 0 any write; 1 any remappable write in the window; 2 one naming a present
            // entry (handle < 128, sub-handle < 128, with or without SHV).
            let (lo, hi, data) = match shape {
                0 => (lo, hi, data),
                1 => ((lo & 0x000F_FFFF) | 0xFEE0_0010, 0, data),
                _ => ((lo & 0x0000_0FE8) | 0xFEE0_0010, 0, data & 0x7F),
            };
            let out = u.remap(RequesterId(rid), MsiMessage::new(lo, hi, data));
            prop_assert!(matches!(out, RemapOutcome::Fault(_)), "{:?}", out);
            // The same write from the right requester is delivered only if well formed.
            let out = u.remap(RID, MsiMessage::new(lo, hi, data));
            if let RemapOutcome::Remapped(_) | RemapOutcome::Posted(_) = out {
                prop_assert_eq!(hi, 0);
                prop_assert_eq!(lo >> 20, 0xFEE);
            }
        }

        #[test]
        fn remap_is_total(lo in any::<u32>(), hi in any::<u32>(), data in any::<u32>(),
                          raw in any::<u128>(), rid in any::<u16>(), cfi in any::<bool>()) {
            let mut u = unit(0, true);
            u.set_cfi(cfi);
            u.write_irte(0, raw).unwrap();
            u.write_irte(1, raw | 1).unwrap();
            u.invalidate_all();
            let m = MsiMessage::new(lo, hi, data);
            let out = u.remap(RequesterId(rid), m);
            if let RemapOutcome::PassThrough(p) = out {
                prop_assert!(cfi);
                prop_assert_eq!(p, m);
            }
        }
    }
}

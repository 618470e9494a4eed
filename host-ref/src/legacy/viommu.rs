//! The emulated VT-d interrupt-remapping unit of a VM (situation 2 of `spec/vir-v1.md` §2.2 and
//! §9: a vIOMMU that emulates interrupt remapping but offers no vIR call).
//!
//! The guest keeps its interrupt remapping table in its own memory, in the VT-d format, and
//! tells the unit where with the IRTA register (base, size S: 2^(S+1) entries, EIME for the
//! x2APIC destination format). It turns remapping on with the global command register (IRE),
//! chooses whether compatibility-format interrupts pass (CFI), and invalidates the interrupt
//! entry cache after changing entries (a queued invalidation, modelled as one trapped
//! submission, [`ViommuWrite::InvalidateEntries`] / [`ViommuWrite::InvalidateAll`]).
//!
//! The host decodes a trapped remappable-format message through that table with VT-d's checks
//! and fault reasons, in VT-d's order, kept once in `vir_abi::vtd_remap::decide` (which the
//! platform's simulated unit uses too; this unit supplies its cache and fault log):
//!
//! 1. high address ≠ 0 or address 31:20 ≠ `0xFEE` → 0x20;
//! 2. compatibility format: passed on to the compatibility decoder with CFI set, else → 0x25;
//! 3. index (handle + sub-handle) ≥ table size → 0x21 (no table latched yet → 0x23);
//! 4. entry not readable from guest memory → 0x23;
//! 5. P = 0 → 0x22;
//! 6. reserved bits set → 0x24 (the unit does not offer posted interrupts, so IM = 1 is
//!    reserved too);
//! 7. source-id check against the device's guest requester id fails, or SVT = 3 → 0x26;
//! 8. SHV = 1 with data 31:16 ≠ 0 → 0x20.
//!
//! Faults are recorded in a bounded log unless the entry reached has FPD = 1.
//!
//! Entries are read from guest memory once and kept, decoded, in a host-side cache; a changed
//! entry takes effect only after the guest invalidates it (as on hardware). Each invalidation,
//! and each change of IRTA, IRE or CFI, re-resolves every wanted vector whose message names an
//! affected entry: a changed entry retargets the live route without touching the device.

use std::collections::{BTreeMap, VecDeque};

use core::fmt;

use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{
    Irta, IrtaBits, IrteError, IrteRaw, RemappedIrte, RemappedIrteBits, VtdFaultReason,
};
use vir_abi::vtd_remap::{Decision, Lookup, UnitState, decide};

/// The VT-d global command register bits, defined once in the ABI crate.
pub use vir_abi::hw::vtd::{GCMD_CFI, GCMD_IRE, GCMD_SIRTP};

/// Largest index mask of an index-selective invalidation that still names a block of the
/// 16-bit index space; larger masks invalidate everything.
pub const MAX_INDEX_MASK: u8 = 16;

/// Capacity of the fault log (the project's one VT-d figure, shared with the platform's unit).
pub use vir_abi::vtd_remap::FAULT_LOG_CAPACITY;

/// A trapped access to a register of the emulated remapping unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViommuWrite {
    /// The IRTA register (latched by [`GCMD_SIRTP`]); reserved bits 10:4 are ignored.
    Irta(u64),
    /// The global command register: [`GCMD_IRE`] and [`GCMD_CFI`] are persistent bits,
    /// [`GCMD_SIRTP`] is a one-shot that latches IRTA and flushes the entry cache; other bits
    /// are ignored.
    GlobalCommand(u32),
    /// An index-selective interrupt entry cache invalidation: the 2^`index_mask` entries of the
    /// naturally aligned block containing `index` (IIDX, IM).
    InvalidateEntries {
        /// IIDX.
        index: u16,
        /// IM (masks of 16 and above invalidate every entry).
        index_mask: u8,
    },
    /// A global interrupt entry cache invalidation.
    InvalidateAll,
}

/// A fault of the emulated remapping unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtualFault {
    /// The VT-d fault reason.
    pub reason: VtdFaultReason,
    /// The entry index, once computed (reasons 0x21–0x24, 0x26, and 0x20 from the data check).
    pub index: Option<u16>,
    /// The guest requester id of the device.
    pub requester_id: u16,
    /// The message.
    pub message: MsiMessage,
    /// Whether the fault was recorded (FPD clear).
    pub recorded: bool,
}

impl fmt::Display for VirtualFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {:#06x}", self.reason, self.requester_id)?;
        if let Some(i) = self.index {
            write!(f, " at index {i}")?;
        }
        Ok(())
    }
}

/// A cached, decoded entry of the guest's remapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CachedEntry {
    /// Guest memory could not be read at the entry's address.
    Unreadable,
    /// P = 0.
    NotPresent {
        /// FPD.
        fpd: bool,
    },
    /// Reserved bits set (IM = 1 included).
    Reserved {
        /// FPD.
        fpd: bool,
        /// The offending bits.
        mask: u128,
    },
    /// A present remapped-format entry.
    Present(RemappedIrte),
}

impl CachedEntry {
    /// Decodes a raw entry in `mode`.
    pub fn decode(raw: u128, mode: ApicMode) -> Self {
        let r = IrteRaw::from_u128(raw);
        let fpd = r.fpd();
        if !r.present() {
            return Self::NotPresent { fpd };
        }
        let posted = if r.is_posted() { 1u128 << 15 } else { 0 };
        let other = raw & RemappedIrteBits::reserved_mask(mode);
        if posted | other != 0 {
            return Self::Reserved {
                fpd,
                mask: posted | other,
            };
        }
        match RemappedIrte::decode(raw, mode) {
            Ok(e) => Self::Present(e),
            Err(IrteError::ReservedBits { mask }) => Self::Reserved { fpd, mask },
            // decode reports nothing else; keep the entry blocked rather than trust it.
            Err(_) => Self::Reserved { fpd, mask: 0 },
        }
    }
}

/// What a trapped message resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Translation {
    /// Decode it in the compatibility format (remapping off, or CFI set).
    Compat,
    /// A present entry accepted it.
    Remapped {
        /// The entry.
        irte: RemappedIrte,
        /// Its index.
        index: u16,
    },
    /// Blocked.
    Fault(VirtualFault),
}

/// State of the emulated remapping unit of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Viommu {
    irta_reg: u64,
    irta: Option<Irta>,
    ir_enabled: bool,
    cfi: bool,
    cache: BTreeMap<u16, CachedEntry>,
    faults: VecDeque<VirtualFault>,
    fault_overflows: u64,
    faults_suppressed: u64,
}

impl Viommu {
    /// The IRTA register as last written.
    pub fn irta_register(&self) -> u64 {
        self.irta_reg
    }

    /// The table latched by the last SIRTP (`None` before the first).
    pub fn irta(&self) -> Option<Irta> {
        self.irta
    }

    /// GSTS.IRES.
    pub fn remapping_enabled(&self) -> bool {
        self.ir_enabled
    }

    /// GSTS.CFIS.
    pub fn cfi(&self) -> bool {
        self.cfi
    }

    /// The cached entry at `index`.
    pub fn cached(&self, index: u16) -> Option<CachedEntry> {
        self.cache.get(&index).copied()
    }

    /// Number of cached entries.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    /// The recorded faults, oldest first.
    pub fn faults(&self) -> impl Iterator<Item = &VirtualFault> {
        self.faults.iter()
    }

    /// Faults not kept because the log was full.
    pub fn fault_overflows(&self) -> u64 {
        self.fault_overflows
    }

    /// Faults not recorded because the entry had FPD = 1.
    pub fn faults_suppressed(&self) -> u64 {
        self.faults_suppressed
    }

    /// Apply a register write. Returns the entries whose meaning may have changed: `None` for
    /// "every entry" (IRTA latched, IRE or CFI changed, global invalidation), `Some(range)` for
    /// an index-selective invalidation, `Some(empty)` for nothing.
    pub(crate) fn write(&mut self, w: ViommuWrite) -> Option<core::ops::Range<u32>> {
        match w {
            ViommuWrite::Irta(raw) => {
                self.irta_reg = raw & !IrtaBits::RESERVED_MASK;
                Some(0..0)
            }
            ViommuWrite::GlobalCommand(v) => {
                let ire = v & GCMD_IRE != 0;
                let cfi = v & GCMD_CFI != 0;
                let mut changed = ire != self.ir_enabled || cfi != self.cfi;
                self.ir_enabled = ire;
                self.cfi = cfi;
                if v & GCMD_SIRTP != 0 {
                    // Reserved bits were cleared when the register was written.
                    self.irta = Irta::decode(self.irta_reg).ok();
                    self.cache.clear();
                    changed = true;
                }
                if changed { None } else { Some(0..0) }
            }
            ViommuWrite::InvalidateEntries { index, index_mask } => {
                if index_mask >= MAX_INDEX_MASK {
                    self.cache.clear();
                    return None;
                }
                let count = 1u32 << index_mask;
                let start = u32::from(index) & !(count - 1);
                let end = start + count;
                let keys: Vec<u16> = self
                    .cache
                    .range(start as u16..)
                    .map(|(&k, _)| k)
                    .take_while(|&k| u32::from(k) < end)
                    .collect();
                for k in keys {
                    self.cache.remove(&k);
                }
                Some(start..end)
            }
            ViommuWrite::InvalidateAll => {
                self.cache.clear();
                None
            }
        }
    }

    fn fault(
        &mut self,
        reason: VtdFaultReason,
        index: Option<u16>,
        fpd: bool,
        requester_id: u16,
        message: MsiMessage,
    ) -> Translation {
        let f = VirtualFault {
            reason,
            index,
            requester_id,
            message,
            recorded: !fpd,
        };
        if fpd {
            self.faults_suppressed += 1;
        } else if self.faults.len() < FAULT_LOG_CAPACITY {
            self.faults.push_back(f);
        } else {
            self.fault_overflows += 1;
        }
        Translation::Fault(f)
    }

    /// The entry at `index`, from the cache or read once from guest memory (`read` returns the
    /// 16 bytes at a guest-physical address). Counts reads in `reads`.
    fn entry(
        &mut self,
        irta: Irta,
        index: u16,
        read: &dyn Fn(u64) -> Option<u128>,
        reads: &mut u64,
    ) -> CachedEntry {
        if let Some(&e) = self.cache.get(&index) {
            return e;
        }
        *reads += 1;
        // base < 2^64 and index * 16 < 2^20: only the sum can overflow.
        let e = match irta
            .base
            .checked_add(u64::from(index) * IrteRaw::SIZE as u64)
            .and_then(read)
        {
            Some(raw) => CachedEntry::decode(raw, irta.apic_mode()),
            None => CachedEntry::Unreadable,
        };
        self.cache.insert(index, e);
        e
    }

    /// Resolves a trapped message of the device with guest requester id `requester_id` (see
    /// the module documentation for the order). Also returns the entry index once computed.
    pub(crate) fn translate(
        &mut self,
        msg: MsiMessage,
        requester_id: u16,
        read: &dyn Fn(u64) -> Option<u128>,
        reads: &mut u64,
    ) -> (Translation, Option<u16>) {
        let state = UnitState {
            remapping: self.ir_enabled,
            cfi: self.cfi,
            table_entries: self.irta.map(|irta| irta.entries()),
        };
        let irta = self.irta;
        let decision = decide(state, requester_id, msg, |index| {
            // decide asks only once a table is latched.
            let Some(irta) = irta else {
                return Lookup::Unreadable;
            };
            match self.entry(irta, index, read, reads) {
                CachedEntry::Unreadable => Lookup::Unreadable,
                CachedEntry::NotPresent { fpd } => Lookup::NotPresent { fpd },
                CachedEntry::Reserved { fpd, .. } => Lookup::Reserved {
                    fpd,
                    reason: VtdFaultReason::IRTE_RESERVED,
                },
                CachedEntry::Present(e) => Lookup::Present(e),
            }
        });
        match decision {
            Decision::PassThrough => (Translation::Compat, None),
            Decision::Remap { index, entry } => {
                (Translation::Remapped { irte: entry, index }, Some(index))
            }
            Decision::Fault { reason, index, fpd } => {
                (self.fault(reason, index, fpd, requester_id, msg), index)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::vtd::{RemappableMsi, Svt};

    fn entry(vector: u8, dest: u32, sid: u16) -> RemappedIrte {
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
            sid,
            sq: 0,
            svt: Svt::VerifySid,
        }
    }

    fn unit(size_s: u8, eime: bool) -> Viommu {
        let mut v = Viommu::default();
        let irta = Irta {
            size_s,
            eime,
            base: 0x8000,
        }
        .encode()
        .unwrap();
        assert_eq!(v.write(ViommuWrite::Irta(irta)), Some(0..0));
        assert_eq!(
            v.write(ViommuWrite::GlobalCommand(GCMD_SIRTP | GCMD_IRE)),
            None
        );
        v
    }

    fn msg(handle: u16, data: u32) -> MsiMessage {
        let mut m = RemappableMsi {
            handle,
            shv: true,
            subhandle: 0,
        }
        .encode();
        m.data = data;
        m
    }

    #[test]
    fn vtd_check_order_and_fault_reasons() {
        let mut v = unit(3, true); // 16 entries
        let good = entry(0x41, 7, 0x0010).encode(ApicMode::X2Apic).unwrap();
        let mut fpd_np = 0u128;
        fpd_np |= 2; // not present, FPD
        let table = move |gpa: u64| -> Option<u128> {
            match (gpa - 0x8000) / 16 {
                1 => Some(good),
                2 => Some(0),
                3 => Some(fpd_np),
                4 => Some(good | 1 << 15),
                5 => Some(good | 1 << 100),
                15 => None,
                _ => Some(good),
            }
        };
        let mut reads = 0;
        let mut t =
            |v: &mut Viommu, m: MsiMessage, rid: u16| v.translate(m, rid, &table, &mut reads);
        let reason = |x: (Translation, Option<u16>)| match x.0 {
            Translation::Fault(f) => Some((f.reason, f.index, f.recorded)),
            _ => None,
        };
        // 1: high address.
        let mut m = msg(1, 0);
        m.address_hi = 1;
        assert_eq!(
            reason(t(&mut v, m, 0x10)),
            Some((VtdFaultReason(0x20), None, true))
        );
        // 2: compatibility format blocked with CFI clear.
        let compat = MsiMessage::new(0xFEE0_1000, 0, 0x41);
        assert_eq!(
            reason(t(&mut v, compat, 0x10)),
            Some((VtdFaultReason(0x25), None, true))
        );
        // 3: index 16 of 16.
        assert_eq!(
            reason(t(&mut v, msg(16, 0), 0x10)),
            Some((VtdFaultReason(0x21), Some(16), true))
        );
        // 3 via the sub-handle: 15 + 1.
        assert_eq!(
            reason(t(&mut v, msg(15, 1), 0x10)),
            Some((VtdFaultReason(0x21), Some(16), true))
        );
        // 4: unreadable.
        assert_eq!(
            reason(t(&mut v, msg(15, 0), 0x10)),
            Some((VtdFaultReason(0x23), Some(15), true))
        );
        // 5: not present; with FPD not recorded.
        assert_eq!(
            reason(t(&mut v, msg(2, 0), 0x10)),
            Some((VtdFaultReason(0x22), Some(2), true))
        );
        assert_eq!(
            reason(t(&mut v, msg(3, 0), 0x10)),
            Some((VtdFaultReason(0x22), Some(3), false))
        );
        // 6: posted format (IM) and high reserved bits.
        assert_eq!(
            reason(t(&mut v, msg(4, 0), 0x10)),
            Some((VtdFaultReason(0x24), Some(4), true))
        );
        assert_eq!(
            reason(t(&mut v, msg(5, 0), 0x10)),
            Some((VtdFaultReason(0x24), Some(5), true))
        );
        // 7: SID.
        assert_eq!(
            reason(t(&mut v, msg(1, 0), 0x11)),
            Some((VtdFaultReason(0x26), Some(1), true))
        );
        // 8: SHV with data 31:16 set, after the SID check passed.
        assert_eq!(
            reason(t(&mut v, msg(1, 0x1_0000), 0x10)),
            Some((VtdFaultReason(0x20), Some(1), true))
        );
        // Success.
        assert_eq!(
            t(&mut v, msg(1, 0), 0x10),
            (
                Translation::Remapped {
                    irte: entry(0x41, 7, 0x10),
                    index: 1
                },
                Some(1)
            )
        );
        assert_eq!(v.faults().count(), 10);
        assert_eq!(v.faults_suppressed(), 1);
        // Each entry was read once, then served from the cache.
        assert_eq!(reads, 6);
    }

    #[test]
    fn remapping_off_and_cfi_pass_compatibility_messages() {
        let mut v = Viommu::default();
        let table = |_: u64| None;
        let mut reads = 0;
        let compat = MsiMessage::new(0xFEE0_1000, 0, 0x41);
        assert_eq!(
            v.translate(compat, 1, &table, &mut reads).0,
            Translation::Compat
        );
        assert_eq!(
            v.write(ViommuWrite::GlobalCommand(GCMD_IRE | GCMD_CFI)),
            None
        );
        assert_eq!(
            v.translate(compat, 1, &table, &mut reads).0,
            Translation::Compat
        );
        // Remapping on but no table latched: 0x23.
        let (t, i) = v.translate(msg(0, 0), 1, &table, &mut reads);
        assert_eq!(i, Some(0));
        assert!(matches!(t, Translation::Fault(f) if f.reason == VtdFaultReason::TABLE_UNREADABLE));
        assert_eq!(reads, 0);
    }

    #[test]
    fn invalidation_drops_exactly_the_aligned_block() {
        let mut v = unit(7, false);
        let good = entry(0x41, 7, 0x10).encode(ApicMode::XApic).unwrap();
        let table = move |_: u64| Some(good);
        let mut reads = 0;
        for h in 0..16 {
            v.translate(msg(h, 0), 0x10, &table, &mut reads);
        }
        assert_eq!(v.cached_entries(), 16);
        assert_eq!(
            v.write(ViommuWrite::InvalidateEntries {
                index: 5,
                index_mask: 2
            }),
            Some(4..8)
        );
        assert_eq!(v.cached_entries(), 12);
        assert_eq!(v.cached(4), None);
        assert_eq!(
            v.cached(8),
            Some(CachedEntry::Present(entry(0x41, 7, 0x10)))
        );
        assert_eq!(
            v.write(ViommuWrite::InvalidateEntries {
                index: 0,
                index_mask: 31
            }),
            None
        );
        assert_eq!(v.cached_entries(), 0);
        // Same command twice changes nothing the second time.
        assert_eq!(v.write(ViommuWrite::GlobalCommand(GCMD_IRE)), Some(0..0));
    }

    #[test]
    fn fault_log_is_bounded() {
        let mut v = unit(0, true);
        let table = |_: u64| Some(0u128);
        let mut reads = 0;
        for _ in 0..FAULT_LOG_CAPACITY + 3 {
            v.translate(msg(0, 0), 0x10, &table, &mut reads);
        }
        assert_eq!(v.faults().count(), FAULT_LOG_CAPACITY);
        assert_eq!(v.fault_overflows(), 3);
    }
}

//! The VT-d interrupt-remapping decision, written once.
//!
//! Two units in the project remap interrupt writes the VT-d way: the simulated physical unit of
//! the platform (`vir-platform`, `RemappingUnit::remap`) and the emulated vIOMMU a host offers a
//! legacy guest (`vir-host`, `Viommu`). Each keeps its own table storage, entry cache and fault
//! log; the order of the checks and the fault reason each returns live here, in [`decide`]:
//!
//! 1. remapping disabled → [`Decision::PassThrough`];
//! 2. high address ≠ 0 or address 31:20 ≠ `0xFEE` → 0x20 (from
//!    [`RemappableMsi::decode_address`]);
//! 3. compatibility format (address bit 4 = 0): with CFI set → [`Decision::PassThrough`], else
//!    → 0x25;
//! 4. no table (the unit has not latched one) → 0x23; index (handle, plus sub-handle when SHV =
//!    1, 16-bit arithmetic) ≥ table size → 0x21;
//! 5. the entry could not be read → 0x23;
//! 6. P = 0 → 0x22;
//! 7. reserved bits set → the reason the unit's decoder reports (0x24 for every entry format
//!    the project decodes);
//! 8. source-id check failed (SVT = 3 included) → 0x26;
//! 9. SHV = 1 and data 31:16 ≠ 0 → 0x20.
//!
//! Steps 5 to 7 depend on how a unit stores and decodes its entries (the platform keeps raw
//! entries and accepts the posted format; the vIOMMU caches decoded entries read from guest
//! memory and treats IM = 1 as reserved): the unit answers them through its [`Lookup`], the
//! decision keeps their order. The [`Decision::Fault`] carries the entry's FPD bit; recording
//! the fault (unless FPD = 1) is the unit's job, in a log bounded by [`FAULT_LOG_CAPACITY`].
//!
//! Field layouts are those of `spec/vir-v1.md` §8.2 to §8.4; the check order is that of the Intel
//! VT-d specification, chapter 5 (interrupt remapping).

use crate::hw::msi::MsiMessage;
use crate::hw::vtd::{Irte, RemappableMsi, RemappedIrte, VtdFaultReason, VtdMsiError};

/// How many fault records a VT-d unit of this project keeps before it counts overflows instead:
/// 256, the most fault-recording registers VT-d's 8-bit NFR field can describe. Both the
/// platform's unit and the host's emulated vIOMMU use it, so a fault storm costs each at most
/// this many records.
pub const FAULT_LOG_CAPACITY: usize = 256;

/// The unit state the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnitState {
    /// Interrupt remapping is enabled (IRES).
    pub remapping: bool,
    /// Compatibility-format interrupts pass through (CFI).
    pub cfi: bool,
    /// Entries of the latched table (2^(S+1)); `None` if the unit has latched none.
    pub table_entries: Option<u32>,
}

/// An entry the unit accepted: what the source-id check needs.
pub trait RemapEntry: Copy {
    /// FPD, fault processing disable.
    fn fpd(&self) -> bool;
    /// The source-id check for `requester_id`.
    fn sid_matches(&self, requester_id: u16) -> bool;
}

impl RemapEntry for Irte {
    fn fpd(&self) -> bool {
        Irte::fpd(self)
    }
    fn sid_matches(&self, requester_id: u16) -> bool {
        Irte::sid_matches(self, requester_id)
    }
}

impl RemapEntry for RemappedIrte {
    fn fpd(&self) -> bool {
        self.fpd
    }
    fn sid_matches(&self, requester_id: u16) -> bool {
        RemappedIrte::sid_matches(self, requester_id)
    }
}

/// What a unit finds at an index within its table (steps 5 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<E> {
    /// The entry could not be read (a table in guest memory that is not there).
    Unreadable,
    /// P = 0.
    NotPresent {
        /// FPD of the entry.
        fpd: bool,
    },
    /// Present with reserved bits set (or a format the unit does not accept).
    Reserved {
        /// FPD of the entry.
        fpd: bool,
        /// The fault reason the unit's decoder reports.
        reason: VtdFaultReason,
    },
    /// A present, well-formed entry.
    Present(E),
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<E> {
    /// Not remapped: remapping is off, or a compatibility-format write with CFI set.
    PassThrough,
    /// The entry at `index` accepted the write.
    Remap {
        /// The entry's index.
        index: u16,
        /// The entry.
        entry: E,
    },
    /// The write is blocked.
    Fault {
        /// Why.
        reason: VtdFaultReason,
        /// The entry index, once computed (step 4 on).
        index: Option<u16>,
        /// FPD of the entry reached: the fault is then not recorded (it is still blocked).
        fpd: bool,
    },
}

/// Decides what a VT-d unit in `state` does with the interrupt write `msg` from `requester_id`
/// (see the module documentation for the order). `lookup` is asked for at most one index, one
/// within the table, and only once steps 1 to 4 passed.
pub fn decide<E: RemapEntry>(
    state: UnitState,
    requester_id: u16,
    msg: MsiMessage,
    lookup: impl FnOnce(u16) -> Lookup<E>,
) -> Decision<E> {
    if !state.remapping {
        return Decision::PassThrough;
    }
    let req = match RemappableMsi::decode_address(msg) {
        Ok(req) => req,
        Err(VtdMsiError::CompatibilityFormat(_)) if state.cfi => return Decision::PassThrough,
        Err(e) => {
            return Decision::Fault {
                reason: e.fault_reason(),
                index: None,
                fpd: false,
            };
        }
    };
    let index = req.irte_index();
    let fault = |reason, fpd| Decision::Fault {
        reason,
        index: Some(index),
        fpd,
    };
    let Some(entries) = state.table_entries else {
        return fault(VtdFaultReason::TABLE_UNREADABLE, false);
    };
    if u32::from(index) >= entries {
        return fault(VtdFaultReason::INDEX_OUT_OF_RANGE, false);
    }
    let entry = match lookup(index) {
        Lookup::Unreadable => return fault(VtdFaultReason::TABLE_UNREADABLE, false),
        Lookup::NotPresent { fpd } => return fault(VtdFaultReason::NOT_PRESENT, fpd),
        Lookup::Reserved { fpd, reason } => return fault(reason, fpd),
        Lookup::Present(e) => e,
    };
    if !entry.sid_matches(requester_id) {
        return fault(VtdFaultReason::SID_CHECK_FAILED, entry.fpd());
    }
    if let Err(e) = RemappableMsi::check_data(req.shv, msg.data) {
        return fault(e.fault_reason(), entry.fpd());
    }
    Decision::Remap { index, entry }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::vtd::Svt;

    const RID: u16 = 0x0310;

    fn entry(fpd: bool) -> RemappedIrte {
        RemappedIrte {
            present: true,
            fpd,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0x41,
            dest: 1,
            sid: RID,
            sq: 0,
            svt: Svt::VerifySid,
        }
    }

    fn on(entries: u32) -> UnitState {
        UnitState {
            remapping: true,
            cfi: false,
            table_entries: Some(entries),
        }
    }

    fn remappable(handle: u16, shv: bool, subhandle: u16) -> MsiMessage {
        RemappableMsi {
            handle,
            shv,
            subhandle,
        }
        .encode()
    }

    fn present(_: u16) -> Lookup<RemappedIrte> {
        Lookup::Present(entry(false))
    }

    fn reason(d: Decision<RemappedIrte>) -> Option<u8> {
        match d {
            Decision::Fault { reason, .. } => Some(reason.0),
            _ => None,
        }
    }

    #[test]
    fn remapping_off_and_cfi_pass_through() {
        let compat = MsiMessage {
            address_lo: 0xFEE0_0000,
            address_hi: 0,
            data: 0x41,
        };
        let off = UnitState {
            remapping: false,
            ..on(16)
        };
        assert_eq!(decide(off, RID, compat, present), Decision::PassThrough);
        let cfi = UnitState {
            cfi: true,
            ..on(16)
        };
        assert_eq!(decide(cfi, RID, compat, present), Decision::PassThrough);
        assert_eq!(reason(decide(on(16), RID, compat, present)), Some(0x25));
    }

    #[test]
    fn checks_in_order() {
        let mut bad_addr = remappable(0, false, 0);
        bad_addr.address_hi = 1;
        assert_eq!(reason(decide(on(16), RID, bad_addr, present)), Some(0x20));
        let no_table = UnitState {
            table_entries: None,
            ..on(16)
        };
        let m = remappable(3, false, 0);
        assert_eq!(reason(decide(no_table, RID, m, present)), Some(0x23));
        let far = remappable(15, true, 1);
        assert_eq!(reason(decide(on(16), RID, far, present)), Some(0x21));
        let unread = |_| Lookup::<RemappedIrte>::Unreadable;
        assert_eq!(reason(decide(on(16), RID, m, unread)), Some(0x23));
        let np = |_| Lookup::<RemappedIrte>::NotPresent { fpd: true };
        assert_eq!(
            decide(on(16), RID, m, np),
            Decision::Fault {
                reason: VtdFaultReason::NOT_PRESENT,
                index: Some(3),
                fpd: true
            }
        );
        let rsv = |_| Lookup::<RemappedIrte>::Reserved {
            fpd: false,
            reason: VtdFaultReason::IRTE_RESERVED,
        };
        assert_eq!(reason(decide(on(16), RID, m, rsv)), Some(0x24));
        assert_eq!(reason(decide(on(16), RID ^ 1, m, present)), Some(0x26));
        let mut high_data = remappable(3, true, 0);
        high_data.data |= 0x1_0000;
        assert_eq!(reason(decide(on(16), RID, high_data, present)), Some(0x20));
        assert_eq!(
            decide(on(16), RID, remappable(3, true, 2), |i| {
                assert_eq!(i, 5);
                present(i)
            }),
            Decision::Remap {
                index: 5,
                entry: entry(false)
            }
        );
    }

    #[test]
    fn lookup_is_not_asked_before_the_index_checks_pass() {
        let m = remappable(20, false, 0);
        let d = decide(on(16), RID, m, |_| -> Lookup<RemappedIrte> {
            panic!("looked up an index outside the table")
        });
        assert_eq!(reason(d), Some(0x21));
    }
}

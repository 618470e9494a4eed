//! The local APIC of a vCPU: IRR, ISR, task priority, acknowledge and EOI.
//!
//! The model follows the x2APIC architecture for fixed interrupts:
//!
//! * accepting a vector sets its IRR bit (a second accept before acknowledge coalesces); vectors
//!   0–15 are illegal and are dropped (the "received illegal vector" error);
//! * the processor priority is `PPR = TPR` if `TPR[7:4] ≥ ISRV[7:4]`, else `ISRV & 0xF0`, where
//!   ISRV is the highest in-service vector;
//! * acknowledge delivers the highest IRR vector whose priority class (`vector[7:4]`) is above
//!   `PPR[7:4]`, moving it from IRR to ISR;
//! * EOI retires the highest in-service vector.
//!
//! APIC ids are 32-bit (x2APIC), so ids beyond 255 work. Every accepted vector is counted and
//! kept in a bounded log of recent accepts.

use core::fmt;
use std::collections::VecDeque;

use crate::bitmap::Bitmap256;
use crate::ids::GuestApicId;

/// How many recent accepts [`Lapic::recent_accepts`] keeps.
pub const ACCEPT_LOG_CAPACITY: usize = 4096;

/// The lowest legal vector; 0–15 are reserved and rejected by a local APIC.
pub const FIRST_LEGAL_VECTOR: u8 = 16;

/// What happened to an accepted vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acceptance {
    /// The IRR bit was clear and is now set.
    Pending,
    /// The IRR bit was already set: the interrupt merged with the pending one.
    Coalesced,
}

/// Errors of a local APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LapicError {
    /// The vector (carried) is below 16; the APIC drops it and flags an illegal vector.
    IllegalVector(u8),
}

impl fmt::Display for LapicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IllegalVector(v) => write!(f, "illegal vector {v:#04x} (below 16)"),
        }
    }
}

impl std::error::Error for LapicError {}

/// The local APIC of one vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapic {
    apic_id: GuestApicId,
    irr: Bitmap256,
    isr: Bitmap256,
    tpr: u8,
    accepted: [u64; 256],
    coalesced: u64,
    illegal: u64,
    recent: VecDeque<u8>,
}

impl Lapic {
    /// A local APIC with x2APIC id `apic_id`, nothing pending, TPR 0.
    pub fn new(apic_id: GuestApicId) -> Self {
        Self {
            apic_id,
            irr: Bitmap256::default(),
            isr: Bitmap256::default(),
            tpr: 0,
            accepted: [0; 256],
            coalesced: 0,
            illegal: 0,
            recent: VecDeque::new(),
        }
    }

    /// The APIC id.
    pub const fn apic_id(&self) -> GuestApicId {
        self.apic_id
    }

    /// Accepts a fixed interrupt with `vector`: sets its IRR bit.
    pub fn accept(&mut self, vector: u8) -> Result<Acceptance, LapicError> {
        if vector < FIRST_LEGAL_VECTOR {
            self.illegal = self.illegal.saturating_add(1);
            return Err(LapicError::IllegalVector(vector));
        }
        let n = &mut self.accepted[vector as usize];
        *n = n.saturating_add(1);
        if self.recent.len() == ACCEPT_LOG_CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(vector);
        if self.irr.contains(vector) {
            self.coalesced = self.coalesced.saturating_add(1);
            Ok(Acceptance::Coalesced)
        } else {
            self.irr.set(vector);
            Ok(Acceptance::Pending)
        }
    }

    /// Task priority register.
    pub const fn tpr(&self) -> u8 {
        self.tpr
    }

    /// Writes the task priority register.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// Processor priority: TPR if its class is at least the highest in-service vector's class,
    /// else that vector's class (low nibble 0).
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The vector [`Lapic::acknowledge`] would deliver now, if any.
    pub fn deliverable(&self) -> Option<u8> {
        let v = self.irr.highest()?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// Acknowledges the highest deliverable vector: moves it from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.deliverable()?;
        self.irr.clear(v);
        self.isr.set(v);
        Some(v)
    }

    /// End of interrupt: retires the highest in-service vector and returns it.
    pub fn eoi(&mut self) -> Option<u8> {
        let v = self.isr.highest()?;
        self.isr.clear(v);
        Some(v)
    }

    /// Whether `vector` is pending (IRR).
    pub const fn irr_contains(&self, vector: u8) -> bool {
        self.irr.contains(vector)
    }

    /// Whether `vector` is in service (ISR).
    pub const fn isr_contains(&self, vector: u8) -> bool {
        self.isr.contains(vector)
    }

    /// The pending vectors, ascending.
    pub fn irr_vectors(&self) -> Vec<u8> {
        self.irr.iter().collect()
    }

    /// The in-service vectors, ascending.
    pub fn isr_vectors(&self) -> Vec<u8> {
        self.isr.iter().collect()
    }

    /// The IRR as four 64-bit words (bit `v % 64` of word `v / 64`).
    pub const fn irr_words(&self) -> [u64; 4] {
        self.irr.0
    }

    /// The ISR as four 64-bit words.
    pub const fn isr_words(&self) -> [u64; 4] {
        self.isr.0
    }

    /// How often `vector` was accepted (coalesced accepts included).
    pub const fn accepted(&self, vector: u8) -> u64 {
        self.accepted[vector as usize]
    }

    /// How many vectors were accepted in total.
    pub fn total_accepted(&self) -> u64 {
        self.accepted.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    /// How many accepts coalesced with an already pending vector.
    pub const fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// How many illegal vectors were dropped.
    pub const fn illegal_dropped(&self) -> u64 {
        self.illegal
    }

    /// The most recent accepted vectors, oldest first (at most [`ACCEPT_LOG_CAPACITY`]).
    pub fn recent_accepts(&self) -> impl Iterator<Item = u8> + '_ {
        self.recent.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_sets_irr_and_coalesces() {
        let mut l = Lapic::new(GuestApicId(1000));
        assert_eq!(l.apic_id(), GuestApicId(1000));
        assert_eq!(l.accept(0x41), Ok(Acceptance::Pending));
        assert_eq!(l.accept(0x41), Ok(Acceptance::Coalesced));
        assert_eq!(l.irr_vectors(), vec![0x41]);
        assert_eq!(l.accepted(0x41), 2);
        assert_eq!(l.coalesced(), 1);
        assert_eq!(l.irr_words(), [0, 1 << 1, 0, 0]);
    }

    #[test]
    fn illegal_vectors_dropped() {
        let mut l = Lapic::new(GuestApicId(0));
        assert_eq!(l.accept(15), Err(LapicError::IllegalVector(15)));
        assert_eq!(l.accept(0), Err(LapicError::IllegalVector(0)));
        assert_eq!(l.accept(16), Ok(Acceptance::Pending));
        assert_eq!(l.illegal_dropped(), 2);
        assert_eq!(l.irr_vectors(), vec![16]);
        assert_eq!(l.total_accepted(), 1);
    }

    #[test]
    fn acknowledge_highest_priority_then_eoi() {
        let mut l = Lapic::new(GuestApicId(0));
        for v in [0x31, 0x52, 0x51, 0xE0] {
            l.accept(v).unwrap();
        }
        assert_eq!(l.acknowledge(), Some(0xE0));
        assert_eq!(l.isr_vectors(), vec![0xE0]);
        // 0x52 is class 5 < class 0xE in service: nothing deliverable.
        assert_eq!(l.ppr(), 0xE0);
        assert_eq!(l.acknowledge(), None);
        assert_eq!(l.eoi(), Some(0xE0));
        assert_eq!(l.acknowledge(), Some(0x52));
        // Same class as in service (5): 0x51 must wait.
        assert_eq!(l.deliverable(), None);
        assert_eq!(l.eoi(), Some(0x52));
        assert_eq!(l.acknowledge(), Some(0x51));
        // Nested: a higher class interrupts 0x51.
        l.accept(0x70).unwrap();
        assert_eq!(l.acknowledge(), Some(0x70));
        assert_eq!(l.isr_vectors(), vec![0x51, 0x70]);
        assert_eq!(l.eoi(), Some(0x70));
        assert_eq!(l.eoi(), Some(0x51));
        assert_eq!(l.acknowledge(), Some(0x31));
        assert_eq!(l.eoi(), Some(0x31));
        assert_eq!(l.eoi(), None);
        assert_eq!(l.acknowledge(), None);
    }

    #[test]
    fn tpr_blocks_lower_classes() {
        let mut l = Lapic::new(GuestApicId(0));
        l.set_tpr(0x50);
        l.accept(0x5F).unwrap();
        assert_eq!(l.ppr(), 0x50);
        assert_eq!(l.acknowledge(), None);
        l.accept(0x60).unwrap();
        assert_eq!(l.acknowledge(), Some(0x60));
        // ISR class 6 > TPR class 5: PPR follows the ISR.
        assert_eq!(l.ppr(), 0x60);
        l.set_tpr(0x00);
        assert_eq!(l.eoi(), Some(0x60));
        assert_eq!(l.acknowledge(), Some(0x5F));
        assert_eq!(l.tpr(), 0);
    }

    #[test]
    fn recent_log_is_bounded_oldest_dropped() {
        let mut l = Lapic::new(GuestApicId(0));
        for i in 0..ACCEPT_LOG_CAPACITY + 3 {
            l.accept(0x20 + (i % 8) as u8).unwrap();
        }
        let recent: Vec<u8> = l.recent_accepts().collect();
        assert_eq!(recent.len(), ACCEPT_LOG_CAPACITY);
        assert_eq!(recent[0], 0x23);
        assert_eq!(l.total_accepted(), (ACCEPT_LOG_CAPACITY + 3) as u64);
    }
}

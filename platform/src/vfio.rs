//! A VFIO-like model of host IRQs for assigned devices.
//!
//! The physical half of the ACTIVATE flow (`spec/vir-v1.md` §5.3): for each interrupt source of an
//! assigned device — named by the device's requester id and a [`StorageSlot`] — the VMM starts a
//! host IRQ bound to an eventfd. Starting allocates a host vector on a physical CPU from that
//! CPU's vector space ([`Pcpus`]); an affinity change moves it to a vector on another CPU. When
//! the remapping unit delivers (physical CPU, host vector), [`Vfio::handle`] finds the owning
//! host IRQ and returns its eventfd, which the [`kvm`](crate::kvm) model turns into a guest
//! interrupt through an irqfd.
//!
//! Failure injection: [`Vfio::fail_next_irq_starts`] and [`Vfio::fail_next_affinity_changes`]
//! make the next N such calls fail and change nothing.

use core::fmt;
use std::collections::BTreeMap;

use crate::failpoint::FailPoint;
use crate::ids::{EventFdId, HostApicId, RequesterId, StorageSlot};
use crate::pcpu::{PcpuError, Pcpus};

/// Names a host IRQ: the device's requester id and the interrupt source in its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostIrqKey {
    /// The device's requester id.
    pub requester_id: RequesterId,
    /// The interrupt source.
    pub slot: StorageSlot,
}

impl fmt::Display for HostIrqKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host IRQ {} {}", self.requester_id, self.slot)
    }
}

/// A started host IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostIrq {
    /// Its name.
    pub key: HostIrqKey,
    /// The physical CPU its vector is on.
    pub pcpu: HostApicId,
    /// The host vector.
    pub vector: u8,
    /// The eventfd it signals.
    pub eventfd: EventFdId,
    /// How often it fired.
    pub fired: u64,
}

/// Errors of the VFIO model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VfioError {
    /// The IRQ is already started.
    AlreadyStarted(HostIrqKey),
    /// The IRQ is not started.
    NotStarted(HostIrqKey),
    /// Starting failed by failure injection.
    InjectedStartFailure(HostIrqKey),
    /// The affinity change failed by failure injection.
    InjectedAffinityFailure(HostIrqKey),
    /// No vector could be had (no such CPU, or its vectors are exhausted).
    Pcpu(PcpuError),
}

impl fmt::Display for VfioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AlreadyStarted(k) => write!(f, "{k} already started"),
            Self::NotStarted(k) => write!(f, "{k} not started"),
            Self::InjectedStartFailure(k) => write!(f, "injected failure starting {k}"),
            Self::InjectedAffinityFailure(k) => {
                write!(f, "injected failure changing the affinity of {k}")
            }
            Self::Pcpu(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for VfioError {}

/// Counters of the VFIO model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VfioStats {
    /// Successful starts.
    pub starts: u64,
    /// Stops.
    pub stops: u64,
    /// Successful affinity changes that moved the vector.
    pub affinity_changes: u64,
    /// Host IRQs fired.
    pub fired: u64,
}

/// The VFIO model.
#[derive(Debug, Clone, Default)]
pub struct Vfio {
    irqs: BTreeMap<HostIrqKey, HostIrq>,
    by_vector: BTreeMap<(HostApicId, u8), HostIrqKey>,
    fail_start: FailPoint,
    fail_affinity: FailPoint,
    stats: VfioStats,
}

impl Vfio {
    /// A model with no host IRQs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` [`Vfio::start_irq`] calls fail.
    pub fn fail_next_irq_starts(&mut self, count: u32) {
        self.fail_start.arm(count);
    }

    /// Makes the next `count` [`Vfio::set_affinity`] calls that would move the IRQ fail.
    pub fn fail_next_affinity_changes(&mut self, count: u32) {
        self.fail_affinity.arm(count);
    }

    /// Starts host IRQ `key` on `pcpu` with a newly allocated vector, signalling `eventfd`.
    pub fn start_irq(
        &mut self,
        pcpus: &mut Pcpus,
        key: HostIrqKey,
        pcpu: HostApicId,
        eventfd: EventFdId,
    ) -> Result<HostIrq, VfioError> {
        if self.irqs.contains_key(&key) {
            return Err(VfioError::AlreadyStarted(key));
        }
        if self.fail_start.trip() {
            return Err(VfioError::InjectedStartFailure(key));
        }
        let vector = pcpus.alloc_vector(pcpu).map_err(VfioError::Pcpu)?;
        let irq = HostIrq {
            key,
            pcpu,
            vector,
            eventfd,
            fired: 0,
        };
        self.irqs.insert(key, irq);
        self.by_vector.insert((pcpu, vector), key);
        self.stats.starts += 1;
        Ok(irq)
    }

    /// Stops host IRQ `key` and returns its vector to its CPU.
    pub fn stop_irq(&mut self, pcpus: &mut Pcpus, key: HostIrqKey) -> Result<HostIrq, VfioError> {
        let irq = self.irqs.remove(&key).ok_or(VfioError::NotStarted(key))?;
        self.by_vector.remove(&(irq.pcpu, irq.vector));
        // The vector was allocated by `start_irq`/`set_affinity` and is still held.
        pcpus
            .free_vector(irq.pcpu, irq.vector)
            .map_err(VfioError::Pcpu)?;
        self.stats.stops += 1;
        Ok(irq)
    }

    /// Moves host IRQ `key` to `pcpu`: a vector is allocated there first, then the old one is
    /// freed; on failure the IRQ stays where it was. Moving to the CPU it is on changes nothing.
    pub fn set_affinity(
        &mut self,
        pcpus: &mut Pcpus,
        key: HostIrqKey,
        pcpu: HostApicId,
    ) -> Result<HostIrq, VfioError> {
        let old = *self.irqs.get(&key).ok_or(VfioError::NotStarted(key))?;
        if old.pcpu == pcpu {
            return Ok(old);
        }
        if self.fail_affinity.trip() {
            return Err(VfioError::InjectedAffinityFailure(key));
        }
        let vector = pcpus.alloc_vector(pcpu).map_err(VfioError::Pcpu)?;
        if let Err(e) = pcpus.free_vector(old.pcpu, old.vector) {
            // Cannot happen while the model owns the vector; undo the new allocation.
            let _ = pcpus.free_vector(pcpu, vector);
            return Err(VfioError::Pcpu(e));
        }
        self.by_vector.remove(&(old.pcpu, old.vector));
        let irq = HostIrq {
            pcpu,
            vector,
            ..old
        };
        self.irqs.insert(key, irq);
        self.by_vector.insert((pcpu, vector), key);
        self.stats.affinity_changes += 1;
        Ok(irq)
    }

    /// Host IRQ `key`.
    pub fn irq(&self, key: HostIrqKey) -> Option<&HostIrq> {
        self.irqs.get(&key)
    }

    /// The host IRQ owning `vector` on `pcpu`.
    pub fn irq_at(&self, pcpu: HostApicId, vector: u8) -> Option<&HostIrq> {
        self.by_vector
            .get(&(pcpu, vector))
            .and_then(|k| self.irqs.get(k))
    }

    /// All started host IRQs, by key.
    pub fn irqs(&self) -> impl Iterator<Item = &HostIrq> {
        self.irqs.values()
    }

    /// Number of started host IRQs.
    pub fn irq_count(&self) -> usize {
        self.irqs.len()
    }

    /// `vector` arrived on `pcpu`: if a host IRQ owns it, counts the firing and returns the IRQ
    /// (whose eventfd the caller signals).
    pub fn handle(&mut self, pcpu: HostApicId, vector: u8) -> Option<HostIrq> {
        let key = *self.by_vector.get(&(pcpu, vector))?;
        let irq = self.irqs.get_mut(&key)?;
        irq.fired = irq.fired.saturating_add(1);
        self.stats.fired += 1;
        Some(*irq)
    }

    /// Counters.
    pub const fn stats(&self) -> VfioStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcpu::VectorError;

    fn key(i: u32) -> HostIrqKey {
        HostIrqKey {
            requester_id: RequesterId(0x0310),
            slot: StorageSlot::msix(i),
        }
    }

    fn pcpus() -> Pcpus {
        Pcpus::new(&[HostApicId(0), HostApicId(1)], 2).unwrap()
    }

    #[test]
    fn start_allocates_vector_and_handle_finds_eventfd() {
        let mut p = pcpus();
        let mut v = Vfio::new();
        let irq = v
            .start_irq(&mut p, key(0), HostApicId(1), EventFdId(5))
            .unwrap();
        assert_eq!(
            (irq.pcpu, irq.vector, irq.eventfd),
            (HostApicId(1), 0x20, EventFdId(5))
        );
        assert!(p.get(HostApicId(1)).unwrap().vectors().is_allocated(0x20));
        assert_eq!(
            v.start_irq(&mut p, key(0), HostApicId(0), EventFdId(6)),
            Err(VfioError::AlreadyStarted(key(0)))
        );
        assert_eq!(
            v.handle(HostApicId(1), 0x20).map(|i| i.eventfd),
            Some(EventFdId(5))
        );
        assert_eq!(v.handle(HostApicId(0), 0x20), None);
        assert_eq!(v.irq(key(0)).unwrap().fired, 1);
        assert_eq!(v.stop_irq(&mut p, key(0)).unwrap().vector, 0x20);
        assert!(!p.get(HostApicId(1)).unwrap().vectors().is_allocated(0x20));
        assert_eq!(v.handle(HostApicId(1), 0x20), None);
        assert_eq!(
            v.stop_irq(&mut p, key(0)),
            Err(VfioError::NotStarted(key(0)))
        );
    }

    // VIR-ACT-H-006: the physical IRQ step may fail with VECTORS_EXHAUSTED.
    #[test]
    fn start_fails_when_pcpu_exhausted_vir_act_h_006() {
        let mut p = pcpus();
        let mut v = Vfio::new();
        v.start_irq(&mut p, key(0), HostApicId(0), EventFdId(0))
            .unwrap();
        v.start_irq(&mut p, key(1), HostApicId(0), EventFdId(1))
            .unwrap();
        assert_eq!(
            v.start_irq(&mut p, key(2), HostApicId(0), EventFdId(2)),
            Err(VfioError::Pcpu(PcpuError::Vector {
                pcpu: HostApicId(0),
                error: VectorError::Exhausted { capacity: 2 }
            }))
        );
        assert_eq!(
            v.start_irq(&mut p, key(2), HostApicId(4), EventFdId(2)),
            Err(VfioError::Pcpu(PcpuError::NoSuchPcpu(HostApicId(4))))
        );
        assert_eq!(v.irq_count(), 2);
    }

    // VIR-AFF-H-004: a failed affinity change leaves the old target in force.
    #[test]
    fn affinity_moves_vector_or_leaves_old_vir_aff_h_004() {
        let mut p = pcpus();
        let mut v = Vfio::new();
        v.start_irq(&mut p, key(0), HostApicId(0), EventFdId(0))
            .unwrap();
        // Same CPU: no change.
        assert_eq!(
            v.set_affinity(&mut p, key(0), HostApicId(0))
                .unwrap()
                .vector,
            0x20
        );
        let moved = v.set_affinity(&mut p, key(0), HostApicId(1)).unwrap();
        assert_eq!((moved.pcpu, moved.vector), (HostApicId(1), 0x20));
        assert_eq!(p.get(HostApicId(0)).unwrap().vectors().in_use(), 0);
        assert_eq!(v.irq_at(HostApicId(1), 0x20).map(|i| i.key), Some(key(0)));
        assert_eq!(v.irq_at(HostApicId(0), 0x20), None);
        // Injected failure: nothing changes.
        v.fail_next_affinity_changes(1);
        assert_eq!(
            v.set_affinity(&mut p, key(0), HostApicId(0)),
            Err(VfioError::InjectedAffinityFailure(key(0)))
        );
        assert_eq!(v.irq(key(0)).unwrap().pcpu, HostApicId(1));
        // Exhausted target: nothing changes.
        p.alloc_vector(HostApicId(0)).unwrap();
        p.alloc_vector(HostApicId(0)).unwrap();
        assert!(matches!(
            v.set_affinity(&mut p, key(0), HostApicId(0)),
            Err(VfioError::Pcpu(PcpuError::Vector { .. }))
        ));
        assert_eq!(v.irq(key(0)).unwrap().pcpu, HostApicId(1));
        assert_eq!(p.get(HostApicId(1)).unwrap().vectors().in_use(), 1);
        assert_eq!(v.stats().affinity_changes, 1);
        assert_eq!(
            v.set_affinity(&mut p, key(9), HostApicId(0)),
            Err(VfioError::NotStarted(key(9)))
        );
    }

    #[test]
    fn injected_start_failure_changes_nothing() {
        let mut p = pcpus();
        let mut v = Vfio::new();
        v.fail_next_irq_starts(1);
        assert_eq!(
            v.start_irq(&mut p, key(0), HostApicId(0), EventFdId(0)),
            Err(VfioError::InjectedStartFailure(key(0)))
        );
        assert_eq!(p.get(HostApicId(0)).unwrap().vectors().in_use(), 0);
        assert_eq!(v.irq_count(), 0);
        assert!(
            v.start_irq(&mut p, key(0), HostApicId(0), EventFdId(0))
                .is_ok_and(|i| i.vector == 0x20)
        );
    }
}

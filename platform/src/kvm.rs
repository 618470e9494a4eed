//! A KVM-like hypervisor kernel model: VMs with guest memory and vCPUs (local APICs), a GSI
//! routing table per VM, irqfds, and injection into vCPU local APICs.
//!
//! The virtual half of the ACTIVATE flow (`spec/vir-v1.md` §5.3): a VMM registers a route
//! *GSI → (vCPU APIC id, vector)* and binds an eventfd to the GSI (an irqfd). When the eventfd is
//! signalled — by a host IRQ of the [`vfio`](crate::vfio) model — KVM looks up the route and sets
//! the vector in the target vCPU's IRR.
//!
//! Routes are not checked against the vCPUs when set (KVM does not either); a route to a missing
//! vCPU fails at delivery ([`InjectError::NoSuchVcpu`]).
//!
//! Failure injection: [`Kvm::fail_next_route_sets`] and [`Kvm::fail_next_irqfd_assigns`] make the
//! next N such calls fail with an injected error and change nothing.

use core::fmt;
use std::collections::BTreeMap;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::failpoint::FailPoint;
use crate::ids::{EventFdId, Gsi, GuestApicId, HostApicId, VcpuRef, VmId};
use crate::lapic::{Acceptance, Lapic, LapicError};

/// Where a GSI delivers: a vCPU of the route's VM and a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GsiRoute {
    /// The target vCPU's APIC id.
    pub dest: GuestApicId,
    /// The guest vector.
    pub vector: u8,
}

/// A vCPU: its local APIC and the physical CPU it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    lapic: Lapic,
    pcpu: HostApicId,
}

impl Vcpu {
    /// The local APIC.
    pub const fn lapic(&self) -> &Lapic {
        &self.lapic
    }

    /// The local APIC, mutable (acknowledge, EOI, TPR).
    pub fn lapic_mut(&mut self) -> &mut Lapic {
        &mut self.lapic
    }

    /// The physical CPU the vCPU runs on.
    pub const fn pcpu(&self) -> HostApicId {
        self.pcpu
    }
}

/// Configuration of a new VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmConfig {
    /// Guest memory: (guest physical address, length in bytes), ascending, not overlapping.
    pub memory: Vec<(u64, usize)>,
    /// vCPUs: (APIC id, physical CPU it runs on).
    pub vcpus: Vec<(GuestApicId, HostApicId)>,
}

/// One VM.
#[derive(Debug)]
pub struct KvmVm {
    memory: GuestMemoryMmap,
    vcpus: BTreeMap<GuestApicId, Vcpu>,
    routes: BTreeMap<Gsi, GsiRoute>,
}

impl KvmVm {
    /// Guest memory.
    pub const fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The vCPU with APIC id `id`.
    pub fn vcpu(&self, id: GuestApicId) -> Option<&Vcpu> {
        self.vcpus.get(&id)
    }

    /// The vCPU with APIC id `id`, mutable.
    pub fn vcpu_mut(&mut self, id: GuestApicId) -> Option<&mut Vcpu> {
        self.vcpus.get_mut(&id)
    }

    /// The vCPUs, by ascending APIC id.
    pub fn vcpus(&self) -> impl Iterator<Item = (GuestApicId, &Vcpu)> {
        self.vcpus.iter().map(|(&id, v)| (id, v))
    }

    /// The route of `gsi`.
    pub fn route(&self, gsi: Gsi) -> Option<GsiRoute> {
        self.routes.get(&gsi).copied()
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

/// Errors of KVM's configuration interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvmError {
    /// No such VM.
    NoSuchVm(VmId),
    /// A VM with this id exists.
    VmExists(VmId),
    /// No such vCPU.
    NoSuchVcpu(VcpuRef),
    /// Two vCPUs of a VM were configured with the same APIC id.
    DuplicateVcpu(VcpuRef),
    /// A guest memory range is empty, wraps, or overlaps or precedes the previous one.
    InvalidMemoryRange {
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: usize,
    },
    /// Guest memory of this many bytes could not be mapped.
    MemoryAllocation(u64),
    /// No route for the GSI.
    NoSuchRoute {
        /// The VM.
        vm: VmId,
        /// The GSI.
        gsi: Gsi,
    },
    /// The eventfd is already bound to an irqfd.
    IrqfdInUse {
        /// The eventfd.
        eventfd: EventFdId,
        /// The VM it is bound in.
        vm: VmId,
        /// The GSI it is bound to.
        gsi: Gsi,
    },
    /// The eventfd is not bound to an irqfd.
    NoSuchIrqfd(EventFdId),
    /// A route set failed by failure injection.
    InjectedRouteFailure {
        /// The VM.
        vm: VmId,
        /// The GSI.
        gsi: Gsi,
    },
    /// An irqfd assignment failed by failure injection.
    InjectedIrqfdFailure(EventFdId),
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchVm(vm) => write!(f, "no {vm}"),
            Self::VmExists(vm) => write!(f, "{vm} exists"),
            Self::NoSuchVcpu(v) => write!(f, "no {v}"),
            Self::DuplicateVcpu(v) => write!(f, "{v} configured twice"),
            Self::InvalidMemoryRange { start, len } => {
                write!(f, "invalid guest memory range {start:#x}+{len:#x}")
            }
            Self::MemoryAllocation(n) => write!(f, "cannot map {n} bytes of guest memory"),
            Self::NoSuchRoute { vm, gsi } => write!(f, "no route for {gsi} in {vm}"),
            Self::IrqfdInUse { eventfd, vm, gsi } => {
                write!(f, "{eventfd} already an irqfd for {gsi} of {vm}")
            }
            Self::NoSuchIrqfd(e) => write!(f, "{e} is not an irqfd"),
            Self::InjectedRouteFailure { vm, gsi } => {
                write!(f, "injected failure setting {gsi} of {vm}")
            }
            Self::InjectedIrqfdFailure(e) => write!(f, "injected failure assigning {e}"),
        }
    }
}

impl std::error::Error for KvmError {}

/// Why a signal or an injection did not reach a local APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectError {
    /// The eventfd is not bound to an irqfd.
    NoIrqfd(EventFdId),
    /// The irqfd's GSI has no route.
    NoRoute {
        /// The VM.
        vm: VmId,
        /// The GSI.
        gsi: Gsi,
    },
    /// No such VM.
    NoSuchVm(VmId),
    /// The target vCPU does not exist.
    NoSuchVcpu(VcpuRef),
    /// The local APIC rejected the vector.
    Lapic {
        /// The vCPU.
        vcpu: VcpuRef,
        /// The rejection.
        error: LapicError,
    },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoIrqfd(e) => write!(f, "{e} is not an irqfd"),
            Self::NoRoute { vm, gsi } => write!(f, "no route for {gsi} in {vm}"),
            Self::NoSuchVm(vm) => write!(f, "no {vm}"),
            Self::NoSuchVcpu(v) => write!(f, "no {v}"),
            Self::Lapic { vcpu, error } => write!(f, "{vcpu}: {error}"),
        }
    }
}

impl std::error::Error for InjectError {}

/// An interrupt KVM set in a local APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Injection {
    /// The vCPU.
    pub vcpu: VcpuRef,
    /// The vector.
    pub vector: u8,
    /// Whether it became pending or coalesced.
    pub acceptance: Acceptance,
}

/// Counters of the KVM model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvmStats {
    /// Successful route sets.
    pub route_sets: u64,
    /// Route removals.
    pub route_removals: u64,
    /// Eventfd signals received through irqfds (delivered or not).
    pub irqfd_signals: u64,
    /// Interrupts set in local APICs.
    pub injections: u64,
}

/// The KVM model.
#[derive(Debug, Default)]
pub struct Kvm {
    vms: BTreeMap<VmId, KvmVm>,
    irqfds: BTreeMap<EventFdId, (VmId, Gsi)>,
    fail_route: FailPoint,
    fail_irqfd: FailPoint,
    stats: KvmStats,
}

impl Kvm {
    /// A KVM with no VMs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates VM `id` with guest memory and vCPUs per `config`.
    pub fn create_vm(&mut self, id: VmId, config: &VmConfig) -> Result<(), KvmError> {
        if self.vms.contains_key(&id) {
            return Err(KvmError::VmExists(id));
        }
        let mut next_free = 0u64;
        let mut total = 0u64;
        for (i, &(start, len)) in config.memory.iter().enumerate() {
            let bad = KvmError::InvalidMemoryRange { start, len };
            let end = start.checked_add(len as u64).ok_or(bad)?;
            if len == 0 || (i > 0 && start < next_free) {
                return Err(bad);
            }
            next_free = end;
            total = total.saturating_add(len as u64);
        }
        let mut vcpus = BTreeMap::new();
        for &(apic_id, pcpu) in &config.vcpus {
            let vcpu = Vcpu {
                lapic: Lapic::new(apic_id),
                pcpu,
            };
            if vcpus.insert(apic_id, vcpu).is_some() {
                return Err(KvmError::DuplicateVcpu(VcpuRef::new(id, apic_id)));
            }
        }
        let ranges: Vec<(GuestAddress, usize)> = config
            .memory
            .iter()
            .map(|&(start, len)| (GuestAddress(start), len))
            .collect();
        let memory =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|_| KvmError::MemoryAllocation(total))?;
        self.vms.insert(
            id,
            KvmVm {
                memory,
                vcpus,
                routes: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Destroys VM `id`, its routes and its irqfds.
    pub fn destroy_vm(&mut self, id: VmId) -> Result<(), KvmError> {
        self.vms.remove(&id).ok_or(KvmError::NoSuchVm(id))?;
        self.irqfds.retain(|_, (vm, _)| *vm != id);
        Ok(())
    }

    /// VM `id`.
    pub fn vm(&self, id: VmId) -> Result<&KvmVm, KvmError> {
        self.vms.get(&id).ok_or(KvmError::NoSuchVm(id))
    }

    /// VM `id`, mutable.
    pub fn vm_mut(&mut self, id: VmId) -> Result<&mut KvmVm, KvmError> {
        self.vms.get_mut(&id).ok_or(KvmError::NoSuchVm(id))
    }

    /// The VMs, by ascending id.
    pub fn vms(&self) -> impl Iterator<Item = (VmId, &KvmVm)> {
        self.vms.iter().map(|(&id, vm)| (id, vm))
    }

    /// A vCPU.
    pub fn vcpu(&self, vcpu: VcpuRef) -> Result<&Vcpu, KvmError> {
        self.vm(vcpu.vm)?
            .vcpu(vcpu.apic_id)
            .ok_or(KvmError::NoSuchVcpu(vcpu))
    }

    /// A vCPU, mutable.
    pub fn vcpu_mut(&mut self, vcpu: VcpuRef) -> Result<&mut Vcpu, KvmError> {
        self.vm_mut(vcpu.vm)?
            .vcpu_mut(vcpu.apic_id)
            .ok_or(KvmError::NoSuchVcpu(vcpu))
    }

    /// Moves a vCPU to another physical CPU (the scheduler's doing; the VMM updates the vCPU's
    /// posted descriptor NDST itself).
    pub fn set_vcpu_pcpu(&mut self, vcpu: VcpuRef, pcpu: HostApicId) -> Result<(), KvmError> {
        self.vcpu_mut(vcpu)?.pcpu = pcpu;
        Ok(())
    }

    /// Makes the next `count` [`Kvm::set_route`] calls fail.
    pub fn fail_next_route_sets(&mut self, count: u32) {
        self.fail_route.arm(count);
    }

    /// Makes the next `count` [`Kvm::assign_irqfd`] calls fail.
    pub fn fail_next_irqfd_assigns(&mut self, count: u32) {
        self.fail_irqfd.arm(count);
    }

    /// Adds or replaces the route of `gsi` in `vm`; returns the replaced route.
    pub fn set_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        route: GsiRoute,
    ) -> Result<Option<GsiRoute>, KvmError> {
        let v = self.vms.get_mut(&vm).ok_or(KvmError::NoSuchVm(vm))?;
        if self.fail_route.trip() {
            return Err(KvmError::InjectedRouteFailure { vm, gsi });
        }
        self.stats.route_sets += 1;
        Ok(v.routes.insert(gsi, route))
    }

    /// Removes the route of `gsi` in `vm`.
    pub fn remove_route(&mut self, vm: VmId, gsi: Gsi) -> Result<GsiRoute, KvmError> {
        let v = self.vm_mut(vm)?;
        let r = v
            .routes
            .remove(&gsi)
            .ok_or(KvmError::NoSuchRoute { vm, gsi })?;
        self.stats.route_removals += 1;
        Ok(r)
    }

    /// Binds `eventfd` to `gsi` of `vm` (KVM_IRQFD).
    pub fn assign_irqfd(&mut self, vm: VmId, eventfd: EventFdId, gsi: Gsi) -> Result<(), KvmError> {
        self.vm(vm)?;
        if let Some(&(vm, gsi)) = self.irqfds.get(&eventfd) {
            return Err(KvmError::IrqfdInUse { eventfd, vm, gsi });
        }
        if self.fail_irqfd.trip() {
            return Err(KvmError::InjectedIrqfdFailure(eventfd));
        }
        self.irqfds.insert(eventfd, (vm, gsi));
        Ok(())
    }

    /// Unbinds `eventfd` (KVM_IRQFD with DEASSIGN); returns what it was bound to.
    pub fn deassign_irqfd(&mut self, eventfd: EventFdId) -> Result<(VmId, Gsi), KvmError> {
        self.irqfds
            .remove(&eventfd)
            .ok_or(KvmError::NoSuchIrqfd(eventfd))
    }

    /// What `eventfd` is bound to.
    pub fn irqfd(&self, eventfd: EventFdId) -> Option<(VmId, Gsi)> {
        self.irqfds.get(&eventfd).copied()
    }

    /// Number of irqfds.
    pub fn irqfd_count(&self) -> usize {
        self.irqfds.len()
    }

    /// An eventfd was signalled: irqfd → route → local APIC.
    pub fn signal(&mut self, eventfd: EventFdId) -> Result<Injection, InjectError> {
        let (vm, gsi) = self
            .irqfds
            .get(&eventfd)
            .copied()
            .ok_or(InjectError::NoIrqfd(eventfd))?;
        self.stats.irqfd_signals += 1;
        let route = self
            .vms
            .get(&vm)
            .ok_or(InjectError::NoSuchVm(vm))?
            .route(gsi)
            .ok_or(InjectError::NoRoute { vm, gsi })?;
        self.inject(VcpuRef::new(vm, route.dest), route.vector)
    }

    /// Sets `vector` in the local APIC of `vcpu` (as KVM_SIGNAL_MSI or an emulated device would).
    pub fn inject(&mut self, vcpu: VcpuRef, vector: u8) -> Result<Injection, InjectError> {
        let v = self
            .vms
            .get_mut(&vcpu.vm)
            .ok_or(InjectError::NoSuchVm(vcpu.vm))?
            .vcpus
            .get_mut(&vcpu.apic_id)
            .ok_or(InjectError::NoSuchVcpu(vcpu))?;
        let acceptance = v
            .lapic
            .accept(vector)
            .map_err(|error| InjectError::Lapic { vcpu, error })?;
        self.stats.injections += 1;
        Ok(Injection {
            vcpu,
            vector,
            acceptance,
        })
    }

    /// Counters.
    pub const fn stats(&self) -> KvmStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    const VM: VmId = VmId(1);

    fn kvm() -> Kvm {
        let mut k = Kvm::new();
        k.create_vm(
            VM,
            &VmConfig {
                memory: vec![(0, 0x10000)],
                vcpus: vec![
                    (GuestApicId(0), HostApicId(0)),
                    (GuestApicId(300), HostApicId(1)),
                ],
            },
        )
        .unwrap();
        k
    }

    #[test]
    fn vm_creation_checks() {
        let mut k = kvm();
        assert_eq!(
            k.create_vm(VM, &VmConfig::default()),
            Err(KvmError::VmExists(VM))
        );
        let bad = |memory| VmConfig {
            memory,
            vcpus: vec![],
        };
        assert_eq!(
            k.create_vm(VmId(2), &bad(vec![(0x1000, 0)])),
            Err(KvmError::InvalidMemoryRange {
                start: 0x1000,
                len: 0
            })
        );
        assert_eq!(
            k.create_vm(VmId(2), &bad(vec![(0, 0x2000), (0x1000, 0x1000)])),
            Err(KvmError::InvalidMemoryRange {
                start: 0x1000,
                len: 0x1000
            })
        );
        assert_eq!(
            k.create_vm(VmId(2), &bad(vec![(u64::MAX - 10, 0x1000)])),
            Err(KvmError::InvalidMemoryRange {
                start: u64::MAX - 10,
                len: 0x1000
            })
        );
        let dup = VmConfig {
            memory: vec![(0, 0x1000)],
            vcpus: vec![
                (GuestApicId(3), HostApicId(0)),
                (GuestApicId(3), HostApicId(1)),
            ],
        };
        assert_eq!(
            k.create_vm(VmId(2), &dup),
            Err(KvmError::DuplicateVcpu(VcpuRef::new(
                VmId(2),
                GuestApicId(3)
            )))
        );
        assert_eq!(k.vm(VmId(2)).err(), Some(KvmError::NoSuchVm(VmId(2))));
        // Guest memory is usable.
        let mem = k.vm(VM).unwrap().memory();
        mem.write_obj(0x1234_5678u32, GuestAddress(0x100)).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x100)).unwrap(),
            0x1234_5678
        );
    }

    #[test]
    fn irqfd_route_lapic_path() {
        let mut k = kvm();
        let efd = EventFdId(7);
        let target = VcpuRef::new(VM, GuestApicId(300));
        assert_eq!(k.signal(efd), Err(InjectError::NoIrqfd(efd)));
        k.assign_irqfd(VM, efd, Gsi(24)).unwrap();
        assert_eq!(
            k.signal(efd),
            Err(InjectError::NoRoute {
                vm: VM,
                gsi: Gsi(24)
            })
        );
        let route = GsiRoute {
            dest: GuestApicId(300),
            vector: 0x41,
        };
        assert_eq!(k.set_route(VM, Gsi(24), route), Ok(None));
        assert_eq!(
            k.signal(efd),
            Ok(Injection {
                vcpu: target,
                vector: 0x41,
                acceptance: Acceptance::Pending
            })
        );
        assert_eq!(k.signal(efd).unwrap().acceptance, Acceptance::Coalesced);
        assert!(k.vcpu(target).unwrap().lapic().irr_contains(0x41));
        // Retarget the route (affinity change): same irqfd, new vCPU and vector.
        let new = GsiRoute {
            dest: GuestApicId(0),
            vector: 0x42,
        };
        assert_eq!(k.set_route(VM, Gsi(24), new), Ok(Some(route)));
        assert_eq!(
            k.signal(efd).unwrap().vcpu,
            VcpuRef::new(VM, GuestApicId(0))
        );
        // A route to a missing vCPU fails at delivery.
        k.set_route(
            VM,
            Gsi(24),
            GsiRoute {
                dest: GuestApicId(5),
                vector: 0x42,
            },
        )
        .unwrap();
        assert_eq!(
            k.signal(efd),
            Err(InjectError::NoSuchVcpu(VcpuRef::new(VM, GuestApicId(5))))
        );
        // An illegal vector is rejected by the APIC.
        k.set_route(
            VM,
            Gsi(24),
            GsiRoute {
                dest: GuestApicId(0),
                vector: 3,
            },
        )
        .unwrap();
        assert_eq!(
            k.signal(efd),
            Err(InjectError::Lapic {
                vcpu: VcpuRef::new(VM, GuestApicId(0)),
                error: LapicError::IllegalVector(3)
            })
        );
        assert_eq!(k.stats().irqfd_signals, 6);
        assert_eq!(k.stats().injections, 3);
        assert_eq!(k.remove_route(VM, Gsi(24)).unwrap().vector, 3);
        assert_eq!(
            k.remove_route(VM, Gsi(24)),
            Err(KvmError::NoSuchRoute {
                vm: VM,
                gsi: Gsi(24)
            })
        );
        assert_eq!(k.deassign_irqfd(efd), Ok((VM, Gsi(24))));
        assert_eq!(k.deassign_irqfd(efd), Err(KvmError::NoSuchIrqfd(efd)));
    }

    #[test]
    fn irqfd_is_exclusive_and_vm_scoped() {
        let mut k = kvm();
        k.create_vm(
            VmId(2),
            &VmConfig {
                memory: vec![(0, 0x1000)],
                vcpus: vec![],
            },
        )
        .unwrap();
        k.assign_irqfd(VM, EventFdId(1), Gsi(1)).unwrap();
        assert_eq!(
            k.assign_irqfd(VmId(2), EventFdId(1), Gsi(5)),
            Err(KvmError::IrqfdInUse {
                eventfd: EventFdId(1),
                vm: VM,
                gsi: Gsi(1)
            })
        );
        assert_eq!(
            k.assign_irqfd(VmId(3), EventFdId(2), Gsi(1)),
            Err(KvmError::NoSuchVm(VmId(3)))
        );
        k.destroy_vm(VM).unwrap();
        assert_eq!(k.irqfd(EventFdId(1)), None);
        assert_eq!(k.irqfd_count(), 0);
    }

    // VIR-ACT-H-007: backend failures are injectable so unwinding can be tested.
    #[test]
    fn failure_injection_changes_nothing_vir_act_h_007() {
        let mut k = kvm();
        let route = GsiRoute {
            dest: GuestApicId(0),
            vector: 0x30,
        };
        k.fail_next_route_sets(2);
        assert_eq!(
            k.set_route(VM, Gsi(3), route),
            Err(KvmError::InjectedRouteFailure {
                vm: VM,
                gsi: Gsi(3)
            })
        );
        assert_eq!(
            k.set_route(VM, Gsi(3), route),
            Err(KvmError::InjectedRouteFailure {
                vm: VM,
                gsi: Gsi(3)
            })
        );
        assert_eq!(k.vm(VM).unwrap().route_count(), 0);
        assert_eq!(k.set_route(VM, Gsi(3), route), Ok(None));
        k.fail_next_irqfd_assigns(1);
        assert_eq!(
            k.assign_irqfd(VM, EventFdId(9), Gsi(3)),
            Err(KvmError::InjectedIrqfdFailure(EventFdId(9)))
        );
        assert_eq!(k.irqfd(EventFdId(9)), None);
        assert_eq!(k.assign_irqfd(VM, EventFdId(9), Gsi(3)), Ok(()));
        assert_eq!(k.stats().route_sets, 1);
    }

    #[test]
    fn vcpu_migration_and_direct_inject() {
        let mut k = kvm();
        let v = VcpuRef::new(VM, GuestApicId(0));
        k.set_vcpu_pcpu(v, HostApicId(9)).unwrap();
        assert_eq!(k.vcpu(v).unwrap().pcpu(), HostApicId(9));
        assert_eq!(k.inject(v, 0x99).unwrap().acceptance, Acceptance::Pending);
        assert_eq!(k.vcpu_mut(v).unwrap().lapic_mut().acknowledge(), Some(0x99));
        let missing = VcpuRef::new(VM, GuestApicId(1));
        assert_eq!(
            k.inject(missing, 0x99),
            Err(InjectError::NoSuchVcpu(missing))
        );
        assert_eq!(
            k.set_vcpu_pcpu(missing, HostApicId(0)),
            Err(KvmError::NoSuchVcpu(missing))
        );
    }
}

//! The reference host's three backends over the simulated platform.
//!
//! `vir-host` reaches the physical side through three traits (the ACTIVATE flow of
//! `spec/vir-v1.md` §5.3); here each one is
//! implemented over the shared [`Machine`]:
//!
//! * [`SimIrteTable`] ([`IrteTable`]): the VT-d remapping unit's table. A posted entry is stored
//!   as one 128-bit update, a remapped entry as its low then its high 64 bits (as Linux does),
//!   and the interrupt entry cache is invalidated for the index afterwards — the unit models the
//!   strictest cache, so without the invalidation the old entry would stay in force. On a
//!   machine with the AMD-Vi IOMMU enabled, the per-device tables instead: each entry stored in
//!   one update, then `INVALIDATE_INTERRUPT_TABLE` for the device.
//! * [`SimRouting`] ([`VirtualRouting`]): the KVM model's GSI routes and irqfds. GSIs are handed
//!   out per VM from [`FIRST_GSI`] up to a capacity; the irqfd of a GSI is the eventfd
//!   [`eventfd_for`] names, so the VFIO side can signal it without shared bookkeeping.
//! * [`SimPhysicalIrqs`] ([`PhysicalIrqs`]): the VFIO model's host IRQs with host vectors on the
//!   physical CPUs. Placement follows Linux's `assign_irq_vector_any_locked`: the CPU the host
//!   asks for (the one the target vCPU runs on) while it has a free vector, otherwise the online
//!   CPU with the most free vectors. An affinity move is two-phase as the trait requires: the new
//!   vector is reserved in the CPU's vector space at `prepare_affinity` and the VFIO IRQ moves at
//!   `commit_affinity`, onto exactly that vector (the platform hands out the lowest free vector,
//!   and the reserved one is the lowest free at that point).
//!
//! Failures of the platform models (their failure injection included) become
//! [`BackendError`]s that name the operation and an errno, so the host unwinds (VIR-ACT-H-007,
//! VIR-AFF-H-004) and the guest sees `BACKEND_FAILURE` or `VECTORS_EXHAUSTED`. Operations the
//! trait declares infallible never panic: a platform refusal there is counted as an anomaly.
//!
//! The platform's own affinity failure point
//! ([`vir_platform::vfio::Vfio::fail_next_affinity_changes`]) guards the move done at commit, which the trait makes infallible; inject affinity failures
//! with [`SimPhysicalIrqs::fail_next_affinity_prepares`] instead.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use vir_abi::hw::vtd::IrteRaw;
use vir_abi::status::errno;
use vir_abi::wire::StorageKind as WireKind;
use vir_host::{
    BackendError, BackendOp, Gsi, HostIrq, HostIrqId, HostVector, IrqSource, IrteTable,
    IrteTableId, PhysicalIrqs, RouteTarget, VirtualRouting, VmId,
};
use vir_platform::failpoint::FailPoint;
use vir_platform::kvm::{GsiRoute, KvmError};
use vir_platform::pcpu::PcpuError;
use vir_platform::vfio::{HostIrqKey, VfioError};
use vir_platform::{
    EventFdId, GuestApicId, HostApicId, Machine, RequesterId, StorageKind, StorageSlot,
};

/// The platform shared by the host's backends, the guests' storage and the world.
pub type SharedMachine = Rc<RefCell<Machine>>;

/// The first GSI handed out to device interrupts (0–23 are the IO-APIC's pins on x86).
pub const FIRST_GSI: u32 = 24;

/// KVM's `KVM_MAX_IRQ_ROUTES`: the default number of GSIs per VM.
pub const KVM_MAX_IRQ_ROUTES: u32 = 4096;

/// Linux's `ENOMEM` (not among the errnos of `vir_abi::status::errno`).
pub const ENOMEM: i32 = 12;

/// The platform VM behind a host VM: the world and the situations create both with the same
/// number and check that the host agrees ([`crate::WorldError::VmIdMismatch`],
/// [`crate::situations::SituationError::VmIdMismatch`]).
pub const fn platform_vm(vm: VmId) -> vir_platform::VmId {
    vir_platform::VmId(vm.0)
}

/// The eventfd of the irqfd bound to `gsi` of `vm`: the VMM numbers its irqfds after the VM
/// (bits 31:16) and the GSI (bits 15:0). GSIs stay below 65536 ([`SimRouting::new`] caps the
/// capacity), so two (VM, GSI) pairs of VMs below 65536 never share an eventfd.
pub const fn eventfd_for(vm: vir_platform::VmId, gsi: Gsi) -> EventFdId {
    EventFdId((vm.0 << 16) | (gsi.0 & 0xFFFF))
}

/// The platform's storage kind for a wire storage kind (`None` for an undefined kind).
pub const fn platform_kind(kind: WireKind) -> Option<StorageKind> {
    match kind {
        WireKind::MSI => Some(StorageKind::Msi),
        WireKind::MSIX => Some(StorageKind::MsiX),
        WireKind::IMS_DEVICE => Some(StorageKind::ImsDevice),
        WireKind::IMS_SYSTEM => Some(StorageKind::ImsSystem),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// IRTE table
// ---------------------------------------------------------------------------------------------

/// Counters of [`SimIrteTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrteTableStats {
    /// Posted entries stored as one 128-bit update.
    pub full_writes: u64,
    /// Remapped (or not present) entries stored low half, then high half.
    pub split_writes: u64,
    /// Index-selective interrupt entry cache invalidations.
    pub invalidations: u64,
    /// Writes refused because the index is beyond the table (a host bug; never panics).
    pub rejected: u64,
}

/// Entries of each AMD-Vi device table (IntTabLen = 11).
pub const AMD_TABLE_ENTRIES: u32 = 2048;

/// [`IrteTable`] over the machine's VT-d remapping unit (or its AMD-Vi per-device tables).
#[derive(Debug)]
pub struct SimIrteTable {
    machine: SharedMachine,
    size: u32,
    stats: IrteTableStats,
}

impl SimIrteTable {
    /// The table of `machine`'s remapping unit, or the per-device tables of its AMD-Vi IOMMU
    /// ([`AMD_TABLE_ENTRIES`] each) when that is enabled; the size is read now (the host reads
    /// it once).
    pub fn new(machine: SharedMachine) -> Self {
        let size = if machine.borrow().amd_iommu().is_some() {
            AMD_TABLE_ENTRIES
        } else {
            machine.borrow().iommu().entries()
        };
        Self {
            machine,
            size,
            stats: IrteTableStats::default(),
        }
    }

    /// Counters.
    pub const fn stats(&self) -> IrteTableStats {
        self.stats
    }
}

impl IrteTable for SimIrteTable {
    fn size(&self) -> u32 {
        self.size
    }

    fn write(&mut self, table: IrteTableId, index: u32, entry: u128) {
        if let IrteTableId::Device(rid) = table {
            let mut m = self.machine.borrow_mut();
            let stored = m.amd_iommu_mut().map(|amd| {
                let r = amd.write_irte(RequesterId(rid), index, entry);
                if r.is_ok() {
                    amd.invalidate_interrupt_table(RequesterId(rid));
                }
                r
            });
            if let Some(Ok(())) = stored {
                self.stats.full_writes += 1;
                self.stats.invalidations += 1;
            } else {
                self.stats.rejected += 1;
            }
            return;
        }
        let Ok(i) = u16::try_from(index) else {
            self.stats.rejected += 1;
            return;
        };
        let mut m = self.machine.borrow_mut();
        let iommu = m.iommu_mut();
        let stored = if IrteRaw::from_u128(entry).is_posted() {
            // cmpxchg16b: the IOMMU never sees half a posted entry.
            iommu.write_irte(i, entry).map(|()| true)
        } else {
            // Low word (P, vector, DST) then high word (SID, SQ, SVT).
            iommu
                .write_irte_low(i, entry as u64)
                .and_then(|()| iommu.write_irte_high(i, (entry >> 64) as u64))
                .map(|()| false)
        };
        match stored {
            Ok(full) => {
                iommu.invalidate_entry(i);
                self.stats.invalidations += 1;
                if full {
                    self.stats.full_writes += 1;
                } else {
                    self.stats.split_writes += 1;
                }
            }
            Err(_) => self.stats.rejected += 1,
        }
    }

    fn read(&self, table: IrteTableId, index: u32) -> Option<u128> {
        if let IrteTableId::Device(rid) = table {
            let m = self.machine.borrow();
            return m.amd_iommu()?.irte(RequesterId(rid), index).ok();
        }
        let i = u16::try_from(index).ok()?;
        self.machine.borrow().iommu().irte(i).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual routing
// ---------------------------------------------------------------------------------------------

/// Counters of [`SimRouting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoutingStats {
    /// Routes added with their irqfd.
    pub added: u64,
    /// Routes re-targeted.
    pub updated: u64,
    /// Routes removed with their irqfd.
    pub removed: u64,
    /// Failed `add_route` / `update_route` calls.
    pub failures: u64,
    /// Removals or unwinds the KVM model refused (a host or VMM bug; never panics).
    pub anomalies: u64,
}

fn kvm_error(op: BackendOp, e: KvmError) -> BackendError {
    let errno = match e {
        KvmError::InjectedRouteFailure { .. }
        | KvmError::InjectedIrqfdFailure(_)
        | KvmError::MemoryAllocation(_) => ENOMEM,
        KvmError::IrqfdInUse { .. } | KvmError::VmExists(_) => errno::EBUSY,
        KvmError::NoSuchVm(_)
        | KvmError::NoSuchVcpu(_)
        | KvmError::NoSuchRoute { .. }
        | KvmError::NoSuchIrqfd(_) => errno::ENOENT,
        KvmError::DuplicateVcpu(_) | KvmError::InvalidMemoryRange { .. } => errno::EINVAL,
    };
    BackendError::Os { op, errno }
}

/// [`VirtualRouting`] over the machine's KVM model: `KVM_SET_GSI_ROUTING` plus `KVM_IRQFD`.
#[derive(Debug)]
pub struct SimRouting {
    machine: SharedMachine,
    capacity: u32,
    used: BTreeMap<VmId, GsiSet>,
    stats: RoutingStats,
}

/// The GSIs one VM holds, with the lowest free one found in O(log n): every GSI below `next`
/// is either in `used` or in `free`.
#[derive(Debug)]
struct GsiSet {
    used: BTreeSet<u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl Default for GsiSet {
    fn default() -> Self {
        Self {
            used: BTreeSet::new(),
            free: BTreeSet::new(),
            next: FIRST_GSI,
        }
    }
}

impl GsiSet {
    /// The lowest GSI not in use, if below `end`.
    fn lowest_free(&self, end: u32) -> Option<u32> {
        let g = self.free.first().copied().unwrap_or(self.next);
        (g < end).then_some(g)
    }

    fn insert(&mut self, gsi: u32) {
        if !self.free.remove(&gsi) && gsi == self.next {
            self.next += 1;
        }
        self.used.insert(gsi);
    }

    fn remove(&mut self, gsi: u32) -> bool {
        let removed = self.used.remove(&gsi);
        if removed {
            self.free.insert(gsi);
        }
        removed
    }

    fn contains(&self, gsi: u32) -> bool {
        self.used.contains(&gsi)
    }
}

impl SimRouting {
    /// Routing over `machine` with `capacity` GSIs per VM (capped so GSIs stay below 65536).
    pub fn new(machine: SharedMachine, capacity: u32) -> Self {
        Self {
            machine,
            capacity: capacity.min(0x1_0000 - FIRST_GSI),
            used: BTreeMap::new(),
            stats: RoutingStats::default(),
        }
    }

    /// GSIs per VM.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// GSIs `vm` holds.
    pub fn gsis_in_use(&self, vm: VmId) -> usize {
        self.used.get(&vm).map_or(0, |s| s.used.len())
    }

    /// Counters.
    pub const fn stats(&self) -> RoutingStats {
        self.stats
    }

    fn route(target: RouteTarget) -> GsiRoute {
        GsiRoute {
            dest: GuestApicId(target.apic_id),
            vector: target.vector,
        }
    }
}

impl VirtualRouting for SimRouting {
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError> {
        let used = self.used.entry(vm).or_default();
        let Some(gsi) = used.lowest_free(FIRST_GSI + self.capacity) else {
            self.stats.failures += 1;
            return Err(BackendError::RoutesExhausted {
                capacity: self.capacity,
            });
        };
        let pvm = platform_vm(vm);
        let mut m = self.machine.borrow_mut();
        let kvm = m.kvm_mut();
        if let Err(e) = kvm.set_route(pvm, Gsi(gsi).into_platform(), Self::route(target)) {
            self.stats.failures += 1;
            return Err(kvm_error(BackendOp::AddRoute, e));
        }
        let eventfd = eventfd_for(pvm, Gsi(gsi));
        if let Err(e) = kvm.assign_irqfd(pvm, eventfd, Gsi(gsi).into_platform()) {
            // Unwind the route just set: the call changes nothing when it fails.
            if kvm.remove_route(pvm, Gsi(gsi).into_platform()).is_err() {
                self.stats.anomalies += 1;
            }
            self.stats.failures += 1;
            return Err(kvm_error(BackendOp::AddRoute, e));
        }
        used.insert(gsi);
        self.stats.added += 1;
        Ok(Gsi(gsi))
    }

    fn update_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        target: RouteTarget,
    ) -> Result<(), BackendError> {
        if !self.used.get(&vm).is_some_and(|u| u.contains(gsi.0)) {
            self.stats.failures += 1;
            return Err(BackendError::UnknownGsi(gsi));
        }
        let mut m = self.machine.borrow_mut();
        match m
            .kvm_mut()
            .set_route(platform_vm(vm), gsi.into_platform(), Self::route(target))
        {
            Ok(_) => {
                self.stats.updated += 1;
                Ok(())
            }
            Err(e) => {
                self.stats.failures += 1;
                Err(kvm_error(BackendOp::UpdateRoute, e))
            }
        }
    }

    fn remove_route(&mut self, vm: VmId, gsi: Gsi) {
        if !self.used.get_mut(&vm).is_some_and(|u| u.remove(gsi.0)) {
            self.stats.anomalies += 1;
            return;
        }
        let pvm = platform_vm(vm);
        let mut m = self.machine.borrow_mut();
        let kvm = m.kvm_mut();
        let unbound = kvm.deassign_irqfd(eventfd_for(pvm, gsi)).is_ok();
        let removed = kvm.remove_route(pvm, gsi.into_platform()).is_ok();
        if unbound && removed {
            self.stats.removed += 1;
        } else {
            self.stats.anomalies += 1;
        }
    }
}

/// Conversion of the host's GSI to the platform's.
trait IntoPlatformGsi {
    fn into_platform(self) -> vir_platform::Gsi;
}

impl IntoPlatformGsi for Gsi {
    fn into_platform(self) -> vir_platform::Gsi {
        vir_platform::Gsi(self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Physical IRQs
// ---------------------------------------------------------------------------------------------

/// Counters of [`SimPhysicalIrqs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhysicalIrqStats {
    /// Host IRQs started.
    pub started: u64,
    /// Host IRQs stopped.
    pub stopped: u64,
    /// Placements (start or move) that could not use the requested CPU and went elsewhere.
    pub spilled: u64,
    /// Moves prepared (a vector reserved on another CPU).
    pub prepared: u64,
    /// Moves committed.
    pub committed: u64,
    /// Moves aborted.
    pub aborted: u64,
    /// Failed `start` / `prepare_affinity` calls.
    pub failures: u64,
    /// Infallible steps the platform refused (a host or VMM bug; never panics).
    pub anomalies: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingMove {
    apic: HostApicId,
    vector: u8,
}

fn vfio_error(op: BackendOp, cpu: u32, e: VfioError) -> BackendError {
    match e {
        VfioError::Pcpu(PcpuError::Vector { .. }) => BackendError::VectorsExhausted { cpu },
        VfioError::Pcpu(_) => BackendError::Os {
            op,
            errno: errno::ENODEV,
        },
        VfioError::AlreadyStarted(_) => BackendError::Os {
            op,
            errno: errno::EBUSY,
        },
        VfioError::NotStarted(k) => BackendError::UnknownIrq(irq_id(k)),
        VfioError::InjectedStartFailure(_) | VfioError::InjectedAffinityFailure(_) => {
            BackendError::Os {
                op,
                errno: errno::EIO,
            }
        }
    }
}

/// The host IRQ id of a VFIO IRQ: requester id in bits 55:40, storage kind (index in
/// [`StorageKind::ALL`]) in bits 39:32, storage index in bits 31:0.
pub fn irq_id(key: HostIrqKey) -> HostIrqId {
    HostIrqId(
        (u64::from(key.requester_id.0) << 40)
            | ((key.slot.kind.index() as u64) << 32)
            | u64::from(key.slot.index),
    )
}

/// The VFIO IRQ named by a host IRQ id (`None` for an id [`irq_id`] never makes).
pub fn irq_key(id: HostIrqId) -> Option<HostIrqKey> {
    if id.0 >> 56 != 0 {
        return None;
    }
    let kind = *StorageKind::ALL.get(((id.0 >> 32) & 0xFF) as usize)?;
    Some(HostIrqKey {
        requester_id: RequesterId((id.0 >> 40) as u16),
        slot: StorageSlot {
            kind,
            index: id.0 as u32,
        },
    })
}

/// [`PhysicalIrqs`] over the machine's VFIO model and physical CPUs.
///
/// The host names CPUs by index: index `i` is the machine's `i`-th physical CPU in ascending
/// APIC-id order.
#[derive(Debug)]
pub struct SimPhysicalIrqs {
    machine: SharedMachine,
    cpus: Vec<HostApicId>,
    pending: BTreeMap<HostIrqId, PendingMove>,
    fail_prepare: FailPoint,
    stats: PhysicalIrqStats,
}

impl SimPhysicalIrqs {
    /// Host IRQs over `machine`; its physical CPUs are read now.
    pub fn new(machine: SharedMachine) -> Self {
        let cpus = machine
            .borrow()
            .pcpus()
            .iter()
            .map(|c| c.apic_id())
            .collect();
        Self {
            machine,
            cpus,
            pending: BTreeMap::new(),
            fail_prepare: FailPoint::default(),
            stats: PhysicalIrqStats::default(),
        }
    }

    /// The APIC id of physical CPU index `cpu`.
    pub fn apic_id(&self, cpu: u32) -> Option<HostApicId> {
        self.cpus.get(cpu as usize).copied()
    }

    /// The index of the physical CPU with APIC id `apic`.
    pub fn cpu_index(&self, apic: HostApicId) -> Option<u32> {
        self.cpus
            .iter()
            .position(|&a| a == apic)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Makes the next `count` [`PhysicalIrqs::prepare_affinity`] calls fail with `EIO`.
    pub fn fail_next_affinity_prepares(&mut self, count: u32) {
        self.fail_prepare.arm(count);
    }

    /// Moves prepared and neither committed nor aborted.
    pub fn pending_moves(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    pub const fn stats(&self) -> PhysicalIrqStats {
        self.stats
    }

    fn available(&self, apic: HostApicId) -> u16 {
        self.machine
            .borrow()
            .pcpus()
            .get(apic)
            .map_or(0, |c| c.vectors().available())
    }

    /// The requested CPU if it has a free vector, else the CPU with the most free vectors
    /// (lowest index on ties).
    fn place(&mut self, cpu: u32) -> Result<(u32, HostApicId), BackendError> {
        if let Some(apic) = self.apic_id(cpu)
            && self.available(apic) > 0
        {
            return Ok((cpu, apic));
        }
        let mut best: Option<(u32, HostApicId, u16)> = None;
        for (i, &apic) in self.cpus.iter().enumerate() {
            let avail = self.available(apic);
            if avail > 0 && best.is_none_or(|(_, _, b)| avail > b) {
                best = u32::try_from(i).ok().map(|i| (i, apic, avail));
            }
        }
        match best {
            Some((i, apic, _)) => {
                self.stats.spilled += 1;
                Ok((i, apic))
            }
            None => Err(BackendError::VectorsExhausted { cpu }),
        }
    }

    fn release_pending(&mut self, m: &mut Machine, p: PendingMove) {
        if m.pcpus_mut().free_vector(p.apic, p.vector).is_err() {
            self.stats.anomalies += 1;
        }
    }
}

impl PhysicalIrqs for SimPhysicalIrqs {
    fn start(
        &mut self,
        vm: VmId,
        source: IrqSource,
        gsi: Gsi,
        cpu: u32,
    ) -> Result<HostIrq, BackendError> {
        let Some(kind) = platform_kind(source.kind) else {
            self.stats.failures += 1;
            return Err(BackendError::Os {
                op: BackendOp::StartIrq,
                errno: errno::EINVAL,
            });
        };
        let key = HostIrqKey {
            requester_id: RequesterId(source.requester_id),
            slot: StorageSlot {
                kind,
                index: source.slot,
            },
        };
        let (index, apic) = self.place(cpu).inspect_err(|_| self.stats.failures += 1)?;
        let eventfd = eventfd_for(platform_vm(vm), gsi);
        let started = self.machine.borrow_mut().start_host_irq(key, apic, eventfd);
        match started {
            Ok(irq) => {
                self.stats.started += 1;
                Ok(HostIrq {
                    id: irq_id(key),
                    vector: HostVector {
                        cpu: index,
                        apic_id: apic.0,
                        vector: irq.vector,
                    },
                })
            }
            Err(e) => {
                self.stats.failures += 1;
                Err(vfio_error(BackendOp::StartIrq, index, e))
            }
        }
    }

    fn stop(&mut self, irq: HostIrqId) {
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        if let Some(p) = self.pending.remove(&irq) {
            self.release_pending(&mut m, p);
        }
        match irq_key(irq).map(|k| m.stop_host_irq(k)) {
            Some(Ok(_)) => self.stats.stopped += 1,
            _ => self.stats.anomalies += 1,
        }
    }

    fn prepare_affinity(&mut self, irq: HostIrqId, cpu: u32) -> Result<HostVector, BackendError> {
        let fail = |s: &mut Self, e: BackendError| {
            s.stats.failures += 1;
            Err(e)
        };
        if self.pending.contains_key(&irq) {
            return fail(
                self,
                BackendError::Os {
                    op: BackendOp::PrepareAffinity,
                    errno: errno::EBUSY,
                },
            );
        }
        let current = irq_key(irq).and_then(|k| self.machine.borrow().vfio().irq(k).copied());
        let Some(current) = current else {
            return fail(self, BackendError::UnknownIrq(irq));
        };
        let Some(current_index) = self.cpu_index(current.pcpu) else {
            return fail(self, BackendError::UnknownIrq(irq));
        };
        let stay = HostVector {
            cpu: current_index,
            apic_id: current.pcpu.0,
            vector: current.vector,
        };
        if self.fail_prepare.trip() {
            return fail(
                self,
                BackendError::Os {
                    op: BackendOp::PrepareAffinity,
                    errno: errno::EIO,
                },
            );
        }
        // The requested CPU if it has room; otherwise the IRQ stays where it is (its vector
        // only carries traffic in remapped mode, where the irqfd reaches any vCPU from any CPU).
        let Some(apic) = self.apic_id(cpu).filter(|&a| self.available(a) > 0) else {
            if self.apic_id(cpu) != Some(current.pcpu) {
                self.stats.spilled += 1;
            }
            return Ok(stay);
        };
        if apic == current.pcpu {
            return Ok(stay);
        }
        let reserved = self.machine.borrow_mut().pcpus_mut().alloc_vector(apic);
        match reserved {
            Ok(vector) => {
                self.pending.insert(irq, PendingMove { apic, vector });
                self.stats.prepared += 1;
                Ok(HostVector {
                    cpu,
                    apic_id: apic.0,
                    vector,
                })
            }
            Err(_) => fail(self, BackendError::VectorsExhausted { cpu }),
        }
    }

    fn commit_affinity(&mut self, irq: HostIrqId) {
        let Some(p) = self.pending.remove(&irq) else {
            // A move that stayed on the same CPU: nothing was reserved.
            return;
        };
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        self.release_pending(&mut m, p);
        let moved = irq_key(irq).map(|k| m.set_host_irq_affinity(k, p.apic));
        match moved {
            Some(Ok(h)) if h.pcpu == p.apic && h.vector == p.vector => self.stats.committed += 1,
            _ => self.stats.anomalies += 1,
        }
    }

    fn abort_affinity(&mut self, irq: HostIrqId) {
        if let Some(p) = self.pending.remove(&irq) {
            let machine = Rc::clone(&self.machine);
            let mut m = machine.borrow_mut();
            self.release_pending(&mut m, p);
            self.stats.aborted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::ApicMode;
    use vir_abi::hw::vtd::{Irta, PostedIrte, RemappedIrte, Svt};
    use vir_platform::MachineConfig;
    use vir_platform::kvm::VmConfig;

    fn machine(pcpus: u32, vectors: u16) -> SharedMachine {
        let mut cfg = MachineConfig::new(pcpus);
        cfg.vectors_per_pcpu = vectors;
        cfg.irta = Irta {
            size_s: 3,
            eime: true,
            base: 0x2000_0000,
        };
        let mut m = Machine::new(&cfg).unwrap();
        m.create_vm(
            vir_platform::VmId(0),
            &VmConfig {
                memory: vec![(0, 0x10000)],
                vcpus: vec![(GuestApicId(0), HostApicId(0))],
            },
        )
        .unwrap();
        Rc::new(RefCell::new(m))
    }

    fn posted(vector: u8) -> u128 {
        PostedIrte {
            present: true,
            fpd: false,
            avail: 0,
            urgent: false,
            vector,
            pda: 0x1_0000_0000,
            sid: 0x8100,
            sq: 0,
            svt: Svt::VerifySid,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn irte_writes_take_effect_only_through_the_invalidation() {
        let m = machine(1, 10);
        let mut t = SimIrteTable::new(Rc::clone(&m));
        assert_eq!(t.size(), 16);
        t.write(IrteTableId::Unit, 5, posted(0x41));
        let remapped = RemappedIrte {
            present: true,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0x42,
            dest: 300,
            sid: 0x8100,
            sq: 0,
            svt: Svt::VerifySid,
        }
        .encode(ApicMode::X2Apic)
        .unwrap();
        t.write(IrteTableId::Unit, 6, remapped);
        t.write(IrteTableId::Unit, 16, 1); // beyond the table
        assert_eq!(t.read(IrteTableId::Unit, 5), Some(posted(0x41)));
        assert_eq!(m.borrow().iommu().cached_irte(5), Ok(posted(0x41)));
        assert_eq!(m.borrow().iommu().cached_irte(6), Ok(remapped));
        assert_eq!(t.read(IrteTableId::Unit, 16), None);
        assert_eq!(t.read(IrteTableId::Unit, 0x1_0000), None);
        assert_eq!(
            t.stats(),
            IrteTableStats {
                full_writes: 1,
                split_writes: 1,
                invalidations: 2,
                rejected: 1
            }
        );
        // Remapped entries are two stores, posted ones one.
        assert_eq!(m.borrow().iommu().stats().irte_writes, 3);
    }

    #[test]
    fn gsis_are_lowest_free_first_and_reused() {
        let m = machine(1, 10);
        let mut r = SimRouting::new(Rc::clone(&m), 4);
        let target = RouteTarget {
            vcpu_index: 0,
            apic_id: 0,
            vector: 0x41,
        };
        let add = |r: &mut SimRouting| r.add_route(VmId(0), target);
        assert_eq!(add(&mut r), Ok(Gsi(24)));
        assert_eq!(add(&mut r), Ok(Gsi(25)));
        assert_eq!(add(&mut r), Ok(Gsi(26)));
        r.remove_route(VmId(0), Gsi(25));
        r.remove_route(VmId(0), Gsi(24));
        assert_eq!(add(&mut r), Ok(Gsi(24)), "lowest free first");
        assert_eq!(add(&mut r), Ok(Gsi(25)));
        assert_eq!(add(&mut r), Ok(Gsi(27)));
        assert_eq!(
            add(&mut r),
            Err(BackendError::RoutesExhausted { capacity: 4 })
        );
        assert_eq!(r.gsis_in_use(VmId(0)), 4);
    }

    #[test]
    fn routes_bind_irqfds_and_unwind_on_failure_vir_act_h_007() {
        let m = machine(1, 10);
        let mut r = SimRouting::new(Rc::clone(&m), 2);
        let target = RouteTarget {
            vcpu_index: 0,
            apic_id: 0,
            vector: 0x41,
        };
        assert_eq!(r.add_route(VmId(0), target), Ok(Gsi(24)));
        // irqfd failure: the route set just before is removed again.
        m.borrow_mut().kvm_mut().fail_next_irqfd_assigns(1);
        assert_eq!(
            r.add_route(VmId(0), target),
            Err(BackendError::Os {
                op: BackendOp::AddRoute,
                errno: ENOMEM
            })
        );
        assert_eq!(
            m.borrow()
                .kvm()
                .vm(vir_platform::VmId(0))
                .unwrap()
                .route_count(),
            1
        );
        m.borrow_mut().kvm_mut().fail_next_route_sets(1);
        assert_eq!(
            r.update_route(VmId(0), Gsi(24), target),
            Err(BackendError::Os {
                op: BackendOp::UpdateRoute,
                errno: ENOMEM
            })
        );
        assert_eq!(r.add_route(VmId(0), target), Ok(Gsi(25)));
        assert_eq!(
            r.add_route(VmId(0), target),
            Err(BackendError::RoutesExhausted { capacity: 2 })
        );
        assert_eq!(
            r.update_route(VmId(0), Gsi(99), target),
            Err(BackendError::UnknownGsi(Gsi(99)))
        );
        r.remove_route(VmId(0), Gsi(24));
        r.remove_route(VmId(0), Gsi(24));
        assert_eq!(r.gsis_in_use(VmId(0)), 1);
        assert_eq!(
            m.borrow()
                .kvm()
                .irqfd(eventfd_for(vir_platform::VmId(0), Gsi(25))),
            Some((vir_platform::VmId(0), vir_platform::Gsi(25)))
        );
        let s = r.stats();
        assert_eq!((s.added, s.removed, s.failures, s.anomalies), (2, 1, 4, 1));
    }

    #[test]
    fn host_irqs_spill_when_the_requested_cpu_is_full_and_move_in_two_phases() {
        let m = machine(2, 2);
        let mut p = SimPhysicalIrqs::new(Rc::clone(&m));
        let src = |slot| IrqSource {
            requester_id: 0x8100,
            kind: WireKind::MSIX,
            slot,
        };
        let a = p.start(VmId(0), src(0), Gsi(24), 0).unwrap();
        let b = p.start(VmId(0), src(1), Gsi(25), 0).unwrap();
        let c = p.start(VmId(0), src(2), Gsi(26), 0).unwrap();
        assert_eq!((a.vector.cpu, a.vector.vector), (0, 0x20));
        assert_eq!((b.vector.cpu, b.vector.vector), (0, 0x21));
        assert_eq!((c.vector.cpu, c.vector.vector), (1, 0x20));
        assert_eq!(p.stats().spilled, 1);
        assert_eq!(
            p.start(VmId(0), src(3), Gsi(27), 0),
            Ok(HostIrq {
                id: irq_id(HostIrqKey {
                    requester_id: RequesterId(0x8100),
                    slot: StorageSlot::msix(3)
                }),
                vector: HostVector {
                    cpu: 1,
                    apic_id: 1,
                    vector: 0x21
                }
            })
        );
        assert_eq!(
            p.start(VmId(0), src(4), Gsi(28), 0),
            Err(BackendError::VectorsExhausted { cpu: 0 })
        );
        // Free a vector on CPU 1, then move `a` there: reserved at prepare, moved at commit.
        p.stop(c.id);
        let hv = p.prepare_affinity(a.id, 1).unwrap();
        assert_eq!((hv.cpu, hv.apic_id, hv.vector), (1, 1, 0x20));
        assert_eq!(p.pending_moves(), 1);
        p.commit_affinity(a.id);
        let key = irq_key(a.id).unwrap();
        let moved = *m.borrow().vfio().irq(key).unwrap();
        assert_eq!((moved.pcpu, moved.vector), (HostApicId(1), 0x20));
        // Abort gives the reserved vector back.
        p.fail_next_affinity_prepares(1);
        assert_eq!(
            p.prepare_affinity(b.id, 1),
            Err(BackendError::Os {
                op: BackendOp::PrepareAffinity,
                errno: errno::EIO
            })
        );
        // CPU 1 is full now: the IRQ stays.
        assert_eq!(p.prepare_affinity(b.id, 1), Ok(b.vector));
        p.abort_affinity(b.id);
        assert_eq!(p.stats().anomalies, 0);
        assert_eq!(p.stats().committed, 1);
    }

    #[test]
    fn irq_ids_round_trip() {
        for kind in StorageKind::ALL {
            let key = HostIrqKey {
                requester_id: RequesterId(0xFFFF),
                slot: StorageSlot {
                    kind,
                    index: u32::MAX,
                },
            };
            assert_eq!(irq_key(irq_id(key)), Some(key));
        }
        assert_eq!(irq_key(HostIrqId(1 << 56)), None);
        assert_eq!(irq_key(HostIrqId(9 << 32)), None);
    }
}

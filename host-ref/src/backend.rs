//! The physical side of the host, behind three small traits (the ACTIVATE flow of
//! `spec/vir-v1.md` §5.3).
//!
//! Before a host can answer `ACTIVATE` it must (a) set up the *virtual routing* of the
//! interrupt — a GSI routed to the target vCPU and vector, with an irqfd bound to it (KVM's
//! `KVM_SET_GSI_ROUTING` + `KVM_IRQFD`): [`VirtualRouting`]; (b) allocate and start the
//! *physical IRQ* of the device's storage slot, signalling that irqfd (VFIO's
//! `VFIO_DEVICE_SET_IRQS`): [`PhysicalIrqs`]; and (c) program the *physical IRTE* the returned
//! message names: [`IrteTable`].
//!
//! The traits are object safe and implemented for `Box<T>` and `&mut T`, so a VMM can plug in
//! real KVM/VFIO/IOMMU code, a simulation can plug in its models, and tests use the in-memory
//! implementations of `crate::testing` (feature `test-utils`).
//!
//! # Contract shared by the traits
//!
//! * Every operation that can fail reports a [`BackendError`] and, when it fails, has changed
//!   nothing. The host maps the error to `VECTORS_EXHAUSTED` or `BACKEND_FAILURE`
//!   ([`BackendError::status`]).
//! * Operations that undo a successful one (`remove_route`, `stop`, `abort_affinity`,
//!   `commit_affinity`, IRTE writes) cannot fail: the host relies on them to unwind
//!   (VIR-ACT-H-007, VIR-AFF-H-004). An implementation that meets an error there must handle it
//!   itself (retry, quarantine the IRQ, log), never leave the step half done.
//! * Identifiers the host passes back ([`Gsi`], [`HostIrqId`], table indices) are always ones the
//!   backend issued (or, for the table, `< size()`); no guest value reaches a backend unchecked.

use core::fmt;

use vir_abi::status::Status;
use vir_abi::wire::StorageKind;

/// Identifies a VM towards the backends (and in the host API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(pub u32);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vm{}", self.0)
    }
}

/// A guest system interrupt number in a VM's routing table (KVM: a GSI with an MSI-style route
/// and an irqfd bound to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gsi(pub u32);

/// Where a virtual route delivers: a vCPU of the VM and the guest vector (fixed delivery,
/// physical destination, edge-triggered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    /// Index of the vCPU in the VM's configuration.
    pub vcpu_index: u32,
    /// The guest (virtual) APIC id of that vCPU.
    pub apic_id: u32,
    /// Guest vector.
    pub vector: u8,
}

/// The physical interrupt source: one vector of a device's interrupt storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IrqSource {
    /// The device's physical requester id.
    pub requester_id: u16,
    /// Storage kind.
    pub kind: StorageKind,
    /// Storage slot: the MSI vector index within the block, the MSI-X table index, or the IMS
    /// index.
    pub slot: u32,
}

/// Identifies a started physical IRQ (VFIO: a device IRQ index/subindex with its host IRQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostIrqId(pub u64);

/// A host vector on a physical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostVector {
    /// Physical CPU index.
    pub cpu: u32,
    /// That CPU's (x2)APIC id: the destination written into a remapped IRTE.
    pub apic_id: u32,
    /// The vector on that CPU.
    pub vector: u8,
}

/// A started physical IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostIrq {
    /// Its id, for later calls.
    pub id: HostIrqId,
    /// The host vector it fires on.
    pub vector: HostVector,
}

/// A backend operation that can fail (used in errors and by the failure injection of
/// `crate::testing` (feature `test-utils`)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendOp {
    /// [`VirtualRouting::add_route`].
    AddRoute,
    /// [`VirtualRouting::update_route`].
    UpdateRoute,
    /// [`PhysicalIrqs::start`].
    StartIrq,
    /// [`PhysicalIrqs::prepare_affinity`].
    PrepareAffinity,
}

impl BackendOp {
    /// Every fallible operation.
    pub const ALL: [BackendOp; 4] = [
        BackendOp::AddRoute,
        BackendOp::UpdateRoute,
        BackendOp::StartIrq,
        BackendOp::PrepareAffinity,
    ];
}

/// Why a backend operation failed. Nothing was changed by the failing operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendError {
    /// No free host vector on the physical CPU (Linux: the vector matrix of that CPU is full).
    VectorsExhausted {
        /// The physical CPU.
        cpu: u32,
    },
    /// The VM's routing table has no free GSI (KVM: `KVM_MAX_IRQ_ROUTES`).
    RoutesExhausted {
        /// The table's capacity.
        capacity: u32,
    },
    /// The host kernel refused the operation (an ioctl returned an error).
    Os {
        /// The operation.
        op: BackendOp,
        /// The (positive) errno.
        errno: i32,
    },
    /// The backend does not know the id passed (a host bug, reported rather than panicking).
    UnknownIrq(HostIrqId),
    /// The backend does not know the GSI passed (a host bug, reported rather than panicking).
    UnknownGsi(Gsi),
}

impl BackendError {
    /// The status a call that failed with this error returns (VIR-ACT-H-006, VIR-AFF-H-004).
    pub const fn status(&self) -> Status {
        match self {
            Self::VectorsExhausted { .. } => Status::VECTORS_EXHAUSTED,
            Self::RoutesExhausted { .. }
            | Self::Os { .. }
            | Self::UnknownIrq(_)
            | Self::UnknownGsi(_) => Status::BACKEND_FAILURE,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VectorsExhausted { cpu } => write!(f, "no host vector free on CPU {cpu}"),
            Self::RoutesExhausted { capacity } => write!(f, "routing table full ({capacity} GSIs)"),
            Self::Os { op, errno } => write!(f, "{op:?} failed with errno {errno}"),
            Self::UnknownIrq(id) => write!(f, "unknown host IRQ {}", id.0),
            Self::UnknownGsi(g) => write!(f, "unknown GSI {}", g.0),
        }
    }
}

impl std::error::Error for BackendError {}

/// Which physical interrupt remapping table an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IrteTableId {
    /// VT-d: the remapping unit's one table (IRTA), shared by every device behind the unit;
    /// the source check is in the entry.
    Unit,
    /// AMD-Vi: the interrupt remapping table of the device with this requester id (its device
    /// table entry has IntCtl = remapped, IV = 1 and IntTabLen covering [`IrteTable::size`]).
    Device(u16),
}

/// The host's physical interrupt remapping tables, shared by every VM of the host.
///
/// Which tables exist is the vendor's business ([`crate::iommu::RemappingVendor::table_of`]):
/// one table per unit on VT-d ([`IrteTableId::Unit`]), one table per device on AMD-Vi
/// ([`IrteTableId::Device`]). Every table has [`IrteTable::size`] entries and the host
/// allocates indices from one host-wide space, so an index names at most one live entry in
/// all tables together.
///
/// Entries are raw IRTEs as defined by `vir_abi::hw::vtd` (128 bits) or `vir_abi::hw::amd`
/// (32-bit entries in the low 32 bits, or 128-bit entries); the host encodes them.
pub trait IrteTable {
    /// Number of entries of each table (1–65536; at most 2048 on AMD-Vi). Read once when the
    /// host is created.
    fn size(&self) -> u32;

    /// Store `entry` at `index` of `table` and invalidate the IOMMU's cached copy of it (VT-d:
    /// interrupt entry cache invalidation; AMD-Vi: INVALIDATE_INTERRUPT_TABLE for the device,
    /// then COMPLETION_WAIT); when this returns, the IOMMU uses the new entry. A posted / guest
    /// mode entry must be stored as one 128-bit update (`cmpxchg16b`); a remapped entry may be
    /// stored low 64 bits, then high 64 bits (its vector and destination share the low word, so
    /// a retarget is one store). `index < size()`.
    fn write(&mut self, table: IrteTableId, index: u32, entry: u128);

    /// Read back the entry at `index` of `table` (`None` if `index >= size()`).
    fn read(&self, table: IrteTableId, index: u32) -> Option<u128>;
}

/// KVM-like virtual routing of one host: per VM, GSIs routed to a vCPU and vector, each with an
/// irqfd the physical IRQ signals.
pub trait VirtualRouting {
    /// Allocate a GSI of `vm`, route it to `target` and bind an irqfd to it.
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError>;

    /// Re-route an existing GSI of `vm` to `target` (the irqfd stays bound). On error the old
    /// route is still in force.
    fn update_route(&mut self, vm: VmId, gsi: Gsi, target: RouteTarget)
    -> Result<(), BackendError>;

    /// Unbind the irqfd of a GSI of `vm` and remove its route.
    fn remove_route(&mut self, vm: VmId, gsi: Gsi);
}

/// VFIO-like physical IRQs of assigned devices.
///
/// Moving an IRQ to another CPU is two-phase, like Linux's vector move: `prepare_affinity`
/// reserves a vector on the new CPU while the old one stays in service, then the host either
/// commits (after it rewrote the IRTE) or aborts. Both ends are infallible, so a failed affinity
/// change always leaves the old target in force (VIR-AFF-H-004).
pub trait PhysicalIrqs {
    /// Allocate and start the host IRQ of `source` (a device of `vm`) on physical CPU `cpu`,
    /// signalling the irqfd bound to `gsi`.
    fn start(
        &mut self,
        vm: VmId,
        source: IrqSource,
        gsi: Gsi,
        cpu: u32,
    ) -> Result<HostIrq, BackendError>;

    /// Stop and free a started IRQ (its vector returns to its CPU).
    fn stop(&mut self, irq: HostIrqId);

    /// Reserve a vector on physical CPU `cpu` for `irq`, which keeps firing on its current
    /// vector. At most one move is prepared per IRQ at a time.
    fn prepare_affinity(&mut self, irq: HostIrqId, cpu: u32) -> Result<HostVector, BackendError>;

    /// Switch `irq` to the prepared vector and free the old one.
    fn commit_affinity(&mut self, irq: HostIrqId);

    /// Drop the prepared vector; `irq` stays where it was.
    fn abort_affinity(&mut self, irq: HostIrqId);
}

impl<T: IrteTable + ?Sized> IrteTable for Box<T> {
    fn size(&self) -> u32 {
        (**self).size()
    }
    fn write(&mut self, table: IrteTableId, index: u32, entry: u128) {
        (**self).write(table, index, entry)
    }
    fn read(&self, table: IrteTableId, index: u32) -> Option<u128> {
        (**self).read(table, index)
    }
}

impl<T: IrteTable + ?Sized> IrteTable for &mut T {
    fn size(&self) -> u32 {
        (**self).size()
    }
    fn write(&mut self, table: IrteTableId, index: u32, entry: u128) {
        (**self).write(table, index, entry)
    }
    fn read(&self, table: IrteTableId, index: u32) -> Option<u128> {
        (**self).read(table, index)
    }
}

impl<T: VirtualRouting + ?Sized> VirtualRouting for Box<T> {
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError> {
        (**self).add_route(vm, target)
    }
    fn update_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        target: RouteTarget,
    ) -> Result<(), BackendError> {
        (**self).update_route(vm, gsi, target)
    }
    fn remove_route(&mut self, vm: VmId, gsi: Gsi) {
        (**self).remove_route(vm, gsi)
    }
}

impl<T: VirtualRouting + ?Sized> VirtualRouting for &mut T {
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError> {
        (**self).add_route(vm, target)
    }
    fn update_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        target: RouteTarget,
    ) -> Result<(), BackendError> {
        (**self).update_route(vm, gsi, target)
    }
    fn remove_route(&mut self, vm: VmId, gsi: Gsi) {
        (**self).remove_route(vm, gsi)
    }
}

impl<T: PhysicalIrqs + ?Sized> PhysicalIrqs for Box<T> {
    fn start(
        &mut self,
        vm: VmId,
        source: IrqSource,
        gsi: Gsi,
        cpu: u32,
    ) -> Result<HostIrq, BackendError> {
        (**self).start(vm, source, gsi, cpu)
    }
    fn stop(&mut self, irq: HostIrqId) {
        (**self).stop(irq)
    }
    fn prepare_affinity(&mut self, irq: HostIrqId, cpu: u32) -> Result<HostVector, BackendError> {
        (**self).prepare_affinity(irq, cpu)
    }
    fn commit_affinity(&mut self, irq: HostIrqId) {
        (**self).commit_affinity(irq)
    }
    fn abort_affinity(&mut self, irq: HostIrqId) {
        (**self).abort_affinity(irq)
    }
}

impl<T: PhysicalIrqs + ?Sized> PhysicalIrqs for &mut T {
    fn start(
        &mut self,
        vm: VmId,
        source: IrqSource,
        gsi: Gsi,
        cpu: u32,
    ) -> Result<HostIrq, BackendError> {
        (**self).start(vm, source, gsi, cpu)
    }
    fn stop(&mut self, irq: HostIrqId) {
        (**self).stop(irq)
    }
    fn prepare_affinity(&mut self, irq: HostIrqId, cpu: u32) -> Result<HostVector, BackendError> {
        (**self).prepare_affinity(irq, cpu)
    }
    fn commit_affinity(&mut self, irq: HostIrqId) {
        (**self).commit_affinity(irq)
    }
    fn abort_affinity(&mut self, irq: HostIrqId) {
        (**self).abort_affinity(irq)
    }
}

// The traits are object safe: these fail to compile otherwise.
const _: Option<&dyn IrteTable> = None;
const _: Option<&dyn VirtualRouting> = None;
const _: Option<&dyn PhysicalIrqs> = None;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_to_exact_statuses() {
        // VIR-ACT-H-006: VECTORS_EXHAUSTED or BACKEND_FAILURE as the backend error says.
        assert_eq!(
            BackendError::VectorsExhausted { cpu: 3 }.status(),
            Status::VECTORS_EXHAUSTED
        );
        assert_eq!(
            BackendError::RoutesExhausted { capacity: 4 }.status(),
            Status::BACKEND_FAILURE
        );
        assert_eq!(
            BackendError::Os {
                op: BackendOp::StartIrq,
                errno: 5
            }
            .status(),
            Status::BACKEND_FAILURE
        );
        assert_eq!(
            BackendError::UnknownIrq(HostIrqId(9)).status(),
            Status::BACKEND_FAILURE
        );
        assert_eq!(
            BackendError::UnknownGsi(Gsi(9)).status(),
            Status::BACKEND_FAILURE
        );
    }
}

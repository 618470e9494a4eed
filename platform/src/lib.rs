//! # vir-platform — a simulated x86 interrupt platform for vIR tests
//!
//! Hardware that behaves like the real thing, bit for bit, for both reference sides of vIR (the
//! host model and the guest model) to run on in tests. One module per piece:
//!
//! * [`iommu`]: an Intel VT-d interrupt-remapping unit — a table of raw 128-bit IRTEs in the
//!   hardware layout, IRTA, remapping enable and compatibility-format blocking, an interrupt entry
//!   cache that needs invalidation, VT-d's check order and fault reasons, a fault log with FPD;
//! * [`pcpu`]: physical CPUs with x2APIC ids and host vector spaces (`0x20..=0xEA`, configurable
//!   capacity);
//! * [`lapic`]: vCPU local APICs — IRR, ISR, TPR/PPR, acknowledge, EOI, accept counts;
//! * [`posted`]: posted-interrupt descriptors in host memory — PIR, ON, SN, NV, NDST;
//! * [`kvm`]: a KVM-like model — VMs with guest memory (`vm-memory`) and vCPUs, GSI routes,
//!   irqfds, injection into local APICs, failure injection;
//! * [`vfio`]: a VFIO-like model — host IRQs per (requester id, storage slot) with host vectors
//!   on physical CPUs, bound to eventfds, failure injection;
//! * [`device`]: devices with MSI, MSI-X, IMS in device memory and IMS in system memory, with
//!   per-kind write counters;
//! * [`machine`]: the [`Machine`] composing all of it, running an interrupt end to end
//!   ([`Machine::fire`], [`Machine::inject_write`]) into a [`FireOutcome`] and a delivery log.
//!
//! The crate depends on `vir-abi` for every hardware format and on nothing of the reference
//! sides: adapters connecting `host-ref` and `guest-ref` to it live elsewhere.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod amd_iommu;
mod bitmap;
pub mod device;
pub mod failpoint;
pub mod ids;
pub mod iommu;
pub mod kvm;
pub mod lapic;
pub mod machine;
pub mod pcpu;
pub mod posted;
pub mod vfio;

pub use ids::{
    DeviceId, EventFdId, Gsi, GuestApicId, HostApicId, RequesterId, StorageKind, StorageSlot,
    VcpuRef, VmId,
};
pub use machine::{
    DeliveryRecord, DropReason, FireOutcome, Machine, MachineConfig, MachineError, Notification,
    PostedDelivery, Source,
};

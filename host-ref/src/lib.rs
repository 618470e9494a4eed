//! # vir-host — the vIR reference hypervisor side
//!
//! A model of what a hypervisor (a VMM over KVM, VFIO and the host IOMMU) does to offer vIR
//! version 1 to its guests, written to be read, vendored and tested against:
//!
//! * **Discovery** — [`Host::cpuid`] answers the vIR CPUID leaves, and only when the host's own
//!   interrupt remapping is on with compatibility-format interrupts blocked (VIR-DISC-H-001).
//! * **Calls** — every version 1 call (`QUERY`, `NEGOTIATE`, `RESET`, `ALLOCATE`, `ACTIVATE`
//!   with `RESERVE`, `SET_AFFINITY`, `DEACTIVATE`, `FREE`, `QUERY_QUOTA`), validated in the
//!   specification's order, reading the request from guest memory exactly once through
//!   rust-vmm's [`vm_memory::GuestMemory`]. Three bindings lead to one core:
//!   [`Host::handle_call`] (memory binding), [`Host::vmcall`] (register binding) and
//!   [`Host::pio_write`] (port-I/O doorbell).
//! * **Per-VM state** — [`Vm`]: assigned devices, negotiation, allocations with per-vector
//!   states, generation-checked handles ([`handles`]), quotas, and the hooks the legacy
//!   trap-and-emulate code needs ([`Vm::set_legacy_interrupts_enabled`], [`Vm::msix_trapped`],
//!   [`Vm::msi_message_issued`]).
//! * **Physical side** — the three traits of [`backend`]: the shared remapping table
//!   ([`IrteTable`]), KVM-like routing ([`VirtualRouting`]) and VFIO-like IRQs
//!   ([`PhysicalIrqs`]). `ACTIVATE` follows the flow of the specification's §5.3: route, then physical
//!   IRQ, then the IRTE — in posted mode the entry exists only once both succeeded — and any
//!   failure unwinds what came before.
//! * **Legacy scheme** — [`legacy`]: trap-and-emulate of the MSI capability and the MSI-X
//!   table for guests that never negotiate ([`Host::trap_write`], [`Host::trap_read`]), an
//!   emulated VT-d remapping unit with the guest's table in guest memory
//!   ([`Host::viommu_write`]), every trapped access counted as an exit, and the switch: MSI-X
//!   untrapped after `NEGOTIATE`, the MSI capability admitting only the issued message, a reset
//!   trapping everything again (VIR-LEG-H-001..005, VIR-NEG-H-004, VIR-RST-H-006).
//! * **Atomicity** — a call that does not return `SUCCESS` changes nothing (VIR-CALL-H-006);
//!   [`Host::snapshot`] captures the state to prove it.
//! * **Observability** — [`Counters`] of calls, statuses and binding events.
//!
//! `testing` (behind the `test-utils` feature, off by default) holds in-memory backends with
//! failure injection and guest-side helpers for tests and conformance suites; the product crate
//! builds without it.
//!
//! ## Example
//!
//! ```
//! use vir_abi::feature::Features;
//! use vir_abi::status::Status;
//! use vir_abi::wire::StorageKind;
//! use vir_host::config::*;
//! use vir_host::testing::{mock_host, guest_ram, Caller};
//!
//! let (mut host, _journal) = mock_host(HostConfig::default(), 1024, 4, 200).unwrap();
//! let vm = host
//!     .add_vm(VmConfig {
//!         vcpus: vec![VcpuConfig { apic_id: 0, pda: 0x10_0000, pcpu: 0 }],
//!         devices: vec![DeviceConfig {
//!             device_id: 0x0000_0300,
//!             requester_id: 0x8100,
//!             source_validation: SourceValidation::RequesterId,
//!             storage: StorageSizes { msix_entries: 64, ..Default::default() },
//!         }],
//!         quotas: Quotas::default(),
//!         guest_writable: vir_host::GuestWritable::AllRam,
//!     })
//!     .unwrap();
//! let mem = guest_ram(0x10000);
//! let guest = Caller::new(vm);
//! guest.negotiate(&mut host, &mem, 1, Features::MSIX).unwrap();
//! let a = guest.allocate(&mut host, &mem, 0x300, StorageKind::MSIX, 0, 5).unwrap();
//! let msg = guest.activate(&mut host, &mem, a.handle.get(), 0, 0, 0x41).unwrap();
//! assert_eq!(msg.address_lo.get(), 0xFEE0_0018); // handle 0, SHV, remappable
//! assert_eq!(guest.free(&mut host, &mem, 0xdead), Err(Status::INVALID_HANDLE));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
mod calls;
pub mod config;
pub mod counters;
#[cfg(test)]
mod fixture;
pub mod handles;
mod host;
pub mod iommu;
pub mod legacy;
mod memory;
pub mod snapshot;
pub mod table;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod vm;

pub use backend::{
    BackendError, BackendOp, Gsi, HostIrq, HostIrqId, HostVector, IrqSource, IrteTable,
    IrteTableId, PhysicalIrqs, RouteTarget, VirtualRouting, VmId,
};
pub use calls::{MAX_VERSION, MIN_VERSION};
pub use config::{
    ConfigError, DeviceConfig, GpaRange, GuestWritable, HostConfig, IrMode, QuotaAdmission,
    QuotaResource, Quotas, RequesterIdRange, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
};
pub use counters::{Binding, Counters};
pub use host::{DoorbellIgnored, Host, HostError, PioOutcome, X86Regs};
pub use iommu::{AmdIrteFormat, AmdViConfig, IommuKind, RemappingVendor};
pub use legacy::viommu::{Viommu, ViommuWrite, VirtualFault};
pub use legacy::{
    DeviceStorage, LegacyConfig, LegacyCounters, LegacySetupError, LegacySlot, MsiRefusal,
    MsiRegister, MsixField, TrapError, TrapKind, TrapOutcome, TrapRead, TrapWrite, VectorEvent,
    VirtualTarget,
};
pub use snapshot::VmSnapshot;
pub use vm::{ActiveVector, Allocation, GuestTarget, VectorState, Vm, VmState};

//! # vir-simvm — the vIR reference host and reference guest, end to end
//!
//! `vir-host` and `vir-guest` never depend on each other; this crate combines them on the
//! simulated platform of `vir-platform`, so that the new scheme runs end to end: a guest
//! discovers vIR through CPUID, negotiates through a real binding (the register binding's
//! `VMCALL` exit or the port-I/O doorbell, with its buffers in guest memory), allocates and
//! activates interrupts of MSI, MSI-X and IMS storage, writes the returned messages into the
//! devices' storage, and the devices' interrupts travel through the VT-d remapping unit —
//! posted (IRTE → posted descriptor → PIR → notification → IRR) or remapped (host vector → VFIO
//! host IRQ → irqfd → GSI route → LAPIC) — to the vCPU and vector the guest chose, where the
//! guest's vector→irq table maps them back to their irq number.
//!
//! * [`host_backends`]: the host's three backend traits over the remapping unit, the KVM model
//!   and the VFIO model;
//! * [`guest_env`]: the guest's CPUID, transports and interrupt storage over the host and the
//!   devices;
//! * [`vm`]: [`World`] (machine, host, VMs and guests) and its [`WorldBuilder`];
//! * [`scenario`]: the default scenario and its serializable [`Report`].
//!
//! ```
//! use vir_simvm::scenario::{self, ScenarioConfig};
//!
//! let config = ScenarioConfig {
//!     msix_entries: 4,
//!     ims_device_entries: 8,
//!     ims_system_queues: 2,
//!     msi_log2: Some(1),
//!     affinity_changes: 16,
//!     ..ScenarioConfig::default()
//! };
//! let report = scenario::run(&config).unwrap();
//! assert!(report.passed());
//! assert_eq!(report.total_interrupts, 16);
//! assert_eq!(report.delivery_initial.correct, 16);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compare;
pub mod guest_env;
pub mod host_backends;
pub mod legacy;
pub mod scenario;
pub mod situations;
pub mod vm;

pub use guest_env::{CallBinding, SharedHost, SimHost, SimStorage, SimTransport};
pub use host_backends::{SharedMachine, SimIrteTable, SimPhysicalIrqs, SimRouting};
pub use scenario::{Report, ScenarioConfig, ScenarioError};
pub use vm::{
    Delivery, DeliveryCheck, DeviceSpec, Expected, Handled, SimDevice, SimGuest, SimVm, Verdict,
    VmSpec, World, WorldBuilder, WorldError,
};

//! # vir-guest — the reference guest side of vIR
//!
//! This crate is a model of what a guest kernel does to use vIR, written so that guest-kernel
//! teams can read it next to their own interrupt code and conformance tests can run it against a
//! host. It depends only on [`vir_abi`]; the hypercall instruction, the doorbell and the
//! hardware that holds interrupt messages are reached through traits implemented elsewhere.
//!
//! The layers, bottom to top:
//!
//! * [`discovery`]: CPUID through the [`Cpuid`] trait — the hypervisor bit first
//!   (`VIR-DISC-G-001`), then the scan of the hypervisor range for the vIR signature;
//! * [`hypercall`]: the [`Hypervisor`] transport trait and one typed function per call;
//! * [`negotiation`]: QUERY → NEGOTIATE → confirm, or RESET and stay legacy (`VIR-NEG-G-001..003`);
//! * [`domain`]: the interrupt-remapping domain interface ([`RemapDomain`]) at the level of a Linux
//!   IR irqdomain (alloc, activate, set affinity, deactivate, free, `supports_ims`);
//! * [`vir_domain`]: [`VirDomain`], the implementation that makes vIR hypercalls;
//! * [`vtd_domain`]: [`BareMetalVtdDomain`] (a kernel on real VT-d) and [`EmulatedVtdDomain`]
//!   (a guest whose vIOMMU emulates remapping without vIR: IMS refused), programming IRTEs
//!   themselves;
//! * [`select`]: [`select_ir_domain`], the choice among the three without heuristics (spec §2.2), and
//!   [`IrDomain`], the three behind one type;
//! * [`matrix`]: [`VectorMatrix`], a per-vCPU vector allocator like Linux's `irq_matrix`, with
//!   reservation mode and CPU online/offline;
//! * [`storage`]: the [`InterruptStorage`] trait (MSI capability, MSI-X table, IMS in device or
//!   system memory);
//! * [`irq`]: [`IrqSubsystem`], the driver-facing interrupt lifecycle with Linux semantics and
//!   Linux-style irq numbers: `alloc_irq_vectors`, `request_irq`, `set_affinity`, `free_irq`,
//!   `free_irq_vectors`, CPU hot-unplug, and the per-CPU vector→irq table.
//!
//! The driver-facing API does not depend on which domain is underneath: bare-metal VT-d and an
//! emulated vIOMMU implement [`RemapDomain`] the same way [`VirDomain`] does; only the IMS
//! capability differs (`VIR-LEG-G-001`).
//!
//! Errors are one enum per concern, each carrying the offending values, and each has an
//! `errno()` (positive, as [`vir_abi::status::Status::errno`]): what a kernel returns to the
//! original caller (`VIR-STA-G-001`).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod cpu;
pub mod device;
pub mod discovery;
pub mod domain;
pub mod hypercall;
pub mod irq;
pub mod matrix;
pub mod negotiation;
pub mod select;
pub mod storage;
pub mod vir_domain;
pub mod vtd_domain;

pub use cpu::{CpuId, CpuMask};
pub use device::{DeviceId, StorageType};
pub use discovery::{Cpuid, CpuidResult, DiscoveryError, Platform, VirInterface, discover};
pub use domain::{
    Activation, AllocationId, DomainError, IrSlot, IrqTarget, ProtocolError, RemapDomain,
    VectorState,
};
pub use hypercall::{CallError, Hypervisor};
pub use irq::{
    AllocRequest, ConfigError, HotplugReport, Irq, IrqConfig, IrqError, IrqInfo, IrqState,
    IrqStats, IrqSubsystem, Migration, TeardownError, TeardownReport,
};
pub use matrix::{VectorConfig, VectorError, VectorMatrix, VectorSet};
pub use negotiation::{NegotiationError, Session};
pub use select::{IrDomain, IrSituation, NoVirReason, select_ir_domain};
pub use storage::{InterruptStorage, StorageError, StorageSlot, StorageStats};
pub use vir_domain::{Quota, VirDomain};
pub use vtd_domain::{
    BareMetalVtdDomain, EmulatedVtdDomain, HardwareError, IrteMemory, RemappingHardware,
    VtdRegisters, VtdStats,
};

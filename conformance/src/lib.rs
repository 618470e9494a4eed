//! # vir-conform — the vIR host conformance suite
//!
//! Checks every host requirement of the vIR version 1 specification (`spec/vir-v1.md`, side H)
//! against any host implementation. Requirement IDs are the unit: each [`Check`] names the IDs
//! it verifies, and the [`Report`] gives a verdict per requirement — pass, fail (with the
//! expected and actual behaviour), not testable (the host lacks a hook the check needs, or the
//! suite has no check), not applicable. MUST requirements decide the result; SHOULD and MAY
//! requirements are reported as advisory. Guest-side requirements (side G) are not this suite's
//! job: they bind guest kernels and are tested against a guest implementation.
//!
//! ## How a host plugs in
//!
//! Implement [`HostUnderTest`] for one freshly created host with its VMs, and [`HostFactory`] to
//! create one per check:
//!
//! * the required methods are what any VMM test harness can do: [`HostUnderTest::call`] (make a
//!   vIR call with given buffers, through the host's usual binding),
//!   [`HostUnderTest::hypercall`] (execute `VMCALL`/`VMMCALL` with given registers and CPL),
//!   [`HostUnderTest::pio_write`] / [`HostUnderTest::pio_read`] (the doorbell),
//!   [`HostUnderTest::cpuid`], [`HostUnderTest::read_guest`] / [`HostUnderTest::write_guest`]
//!   (so the suite can place, corrupt and inspect buffers) and [`HostUnderTest::reset_vm`];
//! * [`HostUnderTest::fixture`] describes what the host was set up with ([`Fixture`]): the vCPUs
//!   and their APIC ids, the assigned devices with their storage sizes, the quotas, scratch
//!   pages of guest RAM the suite may use, an unbacked and a read-only GPA, and a second VM for
//!   isolation checks;
//! * the optional hooks — snapshots of host state, IRTE introspection, a table scan, interrupt
//!   delivery introspection, a guest-memory access log, mutation of a request after the host's
//!   first read, backend failure injection, a physical-side event log, legacy MSI enable
//!   control, MSI-X trap introspection, guest accesses to the MSI/MSI-X registers and the
//!   device's physical interrupt state, host variants — have defaults that answer
//!   [`HarnessError::Unsupported`]; checks that need them are then *not testable*.
//!
//! A VMM over KVM would implement `call` by running a small guest stub that executes `VMCALL`
//! (or rings the doorbell) with the given buffers, `read_guest`/`write_guest` over its guest
//! memory mapping, `cpuid` through `KVM_GET_CPUID2` or a guest stub, and the hooks from its own
//! state (the IRTEs it programmed through the host IOMMU driver's debug interface, its KVM GSI
//! routes, its VFIO interrupts). Then:
//!
//! ```no_run
//! # use vir_conform::*;
//! # fn my_factory() -> Box<dyn HostFactory> { unimplemented!() }
//! let mut factory = my_factory(); // your HostFactory
//! let report = run(factory.as_mut(), &RunOptions::default())?;
//! print!("{}", report::text(&report));
//! std::fs::write("conformance.xml", report::junit(&report))?;
//! assert!(!report.failed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The suite does not depend on any host implementation. The reference host (`ReferenceHost`,
//! `vir-host` over its in-memory backends) lives in its own crate, `vir-conform-ref`
//! (`conformance-ref/`): it is the first implementation and offers every hook; `vir conform`
//! runs the suite against it. The deliberately broken hosts of that crate's `mutants` module
//! show that the suite catches departures.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checks;
pub mod ctx;
pub mod hut;
pub mod outcome;
pub mod registry;
pub mod report;
pub mod runner;

pub use hut::{
    Buffer, CapRegister, Delivery, DeviceFixture, DeviceInterrupts, Fault, Fixture, HarnessError,
    Hook, HostFactory, HostUnderTest, HypercallInsn, IoWidth, IrteFormat, IrteView, MemAccess,
    PhysEvent, Regs, Scope, SetupError, Snapshot, SourceId, Variant, VcpuFixture, VmFixture, VmRef,
};
pub use outcome::{Expected, Failure, Outcome};
pub use registry::{Check, HostKind, UNCHECKED};
pub use runner::{
    CheckRun, Report, RequirementResult, RunError, RunOptions, Summary, Verdict, run, run_check,
};

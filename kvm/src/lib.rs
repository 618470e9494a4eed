//! # vir-kvm — vIR's doorbell binding on real KVM
//!
//! KVM handles `VMCALL`/`VMMCALL` inside the kernel and forwards to user space only the
//! hypercalls enabled by `KVM_CAP_EXIT_HYPERCALL` (today only `MAP_GPA_RANGE`); any other call
//! number, vIR's included, returns `-KVM_ENOSYS` (-1000) to the guest. A VMM-side vIR
//! implementation on an unmodified KVM therefore uses the specification's port-I/O doorbell
//! binding (spec §3.4), whose `OUT` instructions exit to user space.
//!
//! This crate is the smallest VMM that shows it: one VM, one vCPU in real mode, its RAM a
//! rust-vmm `vm-memory` mapping shared with the vIR reference host ([`vir_host`]), CPUID leaves
//! answered by the host, and doorbell port writes served by [`vir_host::Host::pio_write`]. The
//! physical side (IRTE table, routing, physical IRQs) is the reference host's in-memory model.
//!
//! [`machine`] grows it into a multi-vCPU VMM that boots the vIR guest image ([`image`],
//! `guest-image/` in the source tree) in long mode with an in-kernel irqchip, serves the
//! doorbell and a test device, and delivers the device's interrupts through real KVM routes and
//! irqfds ([`routing`]), in the vIR and in the legacy situation.
//!
//! Everything that needs `/dev/kvm` first calls [`kvm_available`], which says clearly why KVM
//! cannot be used; the tests skip with that reason printed.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod host_io;
pub mod image;
pub mod iommu;
pub mod machine;
pub mod program;
pub mod routing;
mod vmm;

pub use host_io::{IoLog, IoWrite};
pub use vmm::{
    EXCEPTION_MARKER, KVM_DEVICE, KvmUnavailable, KvmVmm, REPORT_PORT, VmmError, kvm_available,
};

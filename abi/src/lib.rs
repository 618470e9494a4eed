//! # vir-abi — the vIR version 1 wire ABI
//!
//! vIR is a versioned paravirtual interface for interrupt remapping. A guest that negotiates vIR
//! obtains the MSI address/data pair for any interrupt storage (PCI MSI, MSI-X, IMS) from its
//! hypervisor by a hypercall instead of having its MSI-X writes trapped.
//!
//! This crate is meant to be vendored as-is by hypervisors and guest kernels. It holds:
//!
//! * [`discovery`]: how a guest finds the interface (x86 CPUID leaves, bindings, doorbell);
//! * [`call`]: call codes and the calling-convention constants;
//! * [`status`]: the open [`Status`](status::Status) newtype and the errno a guest surfaces;
//! * [`feature`]: the feature-bit space, including bits reserved for planned extensions;
//! * [`wire`]: every request and response structure, little-endian, with explicit reserved fields;
//! * [`layout`]: machine-readable layout descriptors of the wire structures (used to generate the
//!   specification's tables and the C header);
//! * [`hw`]: the hardware formats behind the messages: x86 MSI compatibility format, VT-d
//!   remappable MSI, VT-d IRTEs (remapped and posted), the posted-interrupt descriptor, AMD-Vi
//!   IRTEs and MSI data.
//! * [`vtd_remap`]: the VT-d interrupt-remapping decision (check order and fault reasons), shared
//!   by the platform's simulated unit and the host's emulated vIOMMU.
//!
//! Decoding never panics: reserved bits, out-of-range values and wrong lengths are typed errors.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "arbitrary")]
extern crate std;

pub mod call;
pub mod discovery;
pub mod feature;
pub mod hw;
pub mod layout;
pub mod status;
pub mod vtd_remap;
pub mod wire;

/// The vIR interface version this crate describes.
pub const VIR_VERSION_1: u16 = 1;

//! # vir-platform — a simulated x86 interrupt platform
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bitmap;
pub mod device;
pub mod failpoint;
pub mod ids;
pub mod iommu;
pub mod kvm;
pub mod lapic;
pub mod pcpu;
pub mod posted;
pub mod vfio;

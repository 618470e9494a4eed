//! A `#![no_std]` consumer of the vIR crates (see Cargo.toml).
#![no_std]

use vir_abi::wire::{ActivateRequest, Target};
use zerocopy_check::as_bytes_len;

mod zerocopy_check {
    /// Length of a wire structure, through the crate's own layout descriptor.
    pub fn as_bytes_len<T: vir_abi::layout::WireLayout>() -> usize {
        T::SIZE
    }
}

/// Size of an ACTIVATE request and a target (uses the crate from a no_std context).
pub fn vir_nostd_sizes() -> usize {
    as_bytes_len::<ActivateRequest>() + as_bytes_len::<Target>()
}

/// Device vectors a 4-CPU guest vector matrix offers (uses vir-guest from a no_std context).
pub fn vir_nostd_guest_capacity() -> u32 {
    let m = vir_guest::VectorMatrix::new(4, &vir_guest::VectorConfig::default());
    m.capacity()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

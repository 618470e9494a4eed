//! `decode_wire`: see `vir_harness::fuzz::decode_wire` for what the body checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vir_harness::fuzz::decode_wire(data));

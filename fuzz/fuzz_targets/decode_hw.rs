//! `decode_hw`: see `vir_harness::fuzz::decode_hw` for what the body checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vir_harness::fuzz::decode_hw(data));

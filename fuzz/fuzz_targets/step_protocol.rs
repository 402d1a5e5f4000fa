#![no_main]
//! Fuzz target `step_protocol`: see databelt_fuzz_targets::step_protocol.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::step_protocol(data));

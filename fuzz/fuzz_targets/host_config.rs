#![no_main]
//! Fuzz target `host_config`: see databelt_fuzz_targets::host_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::host_config(data));

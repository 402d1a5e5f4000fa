#![no_main]
//! Fuzz target `schema_conversion`: see databelt_fuzz_targets::schema_conversion.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::schema_conversion(data));

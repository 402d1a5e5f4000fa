#![no_main]
//! Fuzz target `describe_schema`: see databelt_fuzz_targets::describe_schema.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::describe_schema(data));

#![no_main]
//! Fuzz target `scenario_workflow`: see databelt_fuzz_targets::scenario_workflow.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::scenario_workflow(data));

#![no_main]
//! Fuzz target `peer_bodies`: see databelt_fuzz_targets::peer_bodies.
libfuzzer_sys::fuzz_target!(|data: &[u8]| databelt_fuzz_targets::peer_bodies(data));

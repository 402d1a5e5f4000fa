//! Every input of the committed fuzz corpora (`fuzz/corpus/<target>/`) and
//! of the inputs that once failed (`fuzz/regressions/<target>/`), run
//! through its target: none may panic. The corpora are what libFuzzer
//! kept from the documented fuzzing runs (docs/security.md), minimised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn every_committed_corpus_input_is_handled_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut total = 0;
    for (name, target) in databelt_fuzz_targets::TARGETS {
        let dir = root.join("corpus").join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
        // The inputs that once failed (kept apart: minimising a corpus may
        // drop them).
        let regressions = std::fs::read_dir(root.join("regressions").join(name)).into_iter().flatten();
        let mut n = 0;
        for entry in entries.chain(regressions) {
            let path = entry.unwrap().path();
            // A fuzzer running on the same corpus may remove inputs meanwhile.
            let Ok(data) = std::fs::read(&path) else { continue };
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
            n += 1;
        }
        assert!(n > 0, "corpus {name} is empty");
        total += n;
    }
    eprintln!("replayed {total} corpus inputs");
}

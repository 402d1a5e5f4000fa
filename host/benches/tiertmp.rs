#![allow(clippy::unwrap_used)]
use databelt_host::StateLimits;
use databelt_host::state::{MemoryStore, StateTier};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let tier = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());
    let v = vec![7u8; 1024];
    let n = 2_000_000;
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            tier.set("default", "k", v.clone(), Default::default()).unwrap();
            let g = tier.get("default", "k").unwrap().unwrap();
            assert_eq!(g.len(), 1024);
        }
        let a = t.elapsed().as_secs_f64() / n as f64 * 1e9;
        let mut m: std::collections::HashMap<String, Vec<u8>> = Default::default();
        let t = Instant::now();
        for _ in 0..n {
            m.insert("k".to_string(), v.clone());
            let g = m.get("k").cloned().unwrap();
            assert_eq!(g.len(), 1024);
        }
        let b = t.elapsed().as_secs_f64() / n as f64 * 1e9;
        let t = Instant::now();
        for _ in 0..n {
            let g = v.clone();
            assert_eq!(g.len(), 1024);
        }
        let c = t.elapsed().as_secs_f64() / n as f64 * 1e9;
        println!("round {round}: tier {a:.0} ns, hashmap {b:.0} ns, clone {c:.0} ns");
    }
}

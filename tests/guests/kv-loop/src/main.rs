//! `kv-loop <bucket> <rounds>`: each round sets key `k` to 1 KiB and gets it
//! back through `wasi:keyvalue@0.2.0-draft`; any failure panics. Runs the
//! same on every host that serves the draft, so hosts compare like for like.

wit_bindgen::generate!({
    path: "../../../wit/wasi-keyvalue/0.2.0-draft",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use wasi::keyvalue::store;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bucket = store::open(args.get(1).map(String::as_str).unwrap_or("bench")).expect("open");
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let value = vec![7u8; 1024];
    for _ in 0..rounds {
        bucket.set("k", &value).expect("set");
        let got = bucket.get("k").expect("get").expect("present");
        assert_eq!(got.len(), 1024);
    }
}

//! Exercises `wasi:keyvalue@0.2.0-draft2` as Spin components use it. Args:
//! `<bucket> <keys>`: the bucket must start empty; `<keys>` keys are written
//! and listed back page by page. Any mismatch panics (non-zero exit).

wit_bindgen::generate!({
    path: "../../../wit/wasi-keyvalue/0.2.0-draft2",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use std::collections::BTreeSet;

use wasi::keyvalue::atomics::{self, Cas, CasError};
use wasi::keyvalue::{batch, store};

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) {
    if got != want {
        panic!("{what}: got {got:?}, want {want:?}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_else(|| "draft2".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let bucket = store::open(&name).expect("open");

    // Negative increments, decimal text underneath.
    check("increment -5", atomics::increment(&bucket, "ctr", -5).expect("increment"), -5);
    check("increment +3", atomics::increment(&bucket, "ctr", 3).expect("increment"), -2);
    check("stored as text", bucket.get("ctr").expect("get"), Some(b"-2".to_vec()));
    bucket.set("text", b"not a number").expect("set");
    match atomics::increment(&bucket, "text", 1) {
        Err(store::Error::Other(_)) => {}
        other => panic!("increment of text: {other:?}"),
    }
    check("text unchanged", bucket.get("text").expect("get"), Some(b"not a number".to_vec()));

    // CAS: a swap on an absent key, then a conflict, then a retry.
    let cas = Cas::new(&bucket, "cas").expect("cas new");
    check("absent current", cas.current().expect("current"), None);
    atomics::swap(cas, b"first").expect("swap on absent key");
    let stale = Cas::new(&bucket, "cas").expect("cas new");
    check("current", stale.current().expect("current"), Some(b"first".to_vec()));
    bucket.set("cas", b"concurrent").expect("concurrent write");
    let again = match atomics::swap(stale, b"lost") {
        Err(CasError::CasFailed(again)) => again,
        other => {
            panic!("swap after a concurrent write: {:?}", other.err().map(|e| matches!(e, CasError::StoreError(_))))
        }
    };
    check("the failed swap changed nothing", bucket.get("cas").expect("get"), Some(b"concurrent".to_vec()));
    check("the returned handle read the new value", again.current().expect("current"), Some(b"concurrent".to_vec()));
    atomics::swap(again, b"second").expect("retried swap");
    check("after the retry", bucket.get("cas").expect("get"), Some(b"second".to_vec()));

    // Paging over thousands of keys, with writes between pages.
    let keys: Vec<String> = (0..n).map(|i| format!("page/{i:06}")).collect();
    for chunk in keys.chunks(100) {
        let entries: Vec<(String, Vec<u8>)> = chunk.iter().map(|k| (k.clone(), k.as_bytes().to_vec())).collect();
        batch::set_many(&bucket, &entries).expect("set-many");
    }
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = bucket.list_keys(cursor.as_deref()).expect("list-keys");
        pages += 1;
        for k in page.keys {
            assert!(seen.insert(k.clone()), "key {k} listed twice");
        }
        // A write behind the cursor does not disturb the listing.
        bucket.set("a-before-every-page", b"x").expect("set");
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: BTreeSet<String> = keys.iter().cloned().chain(["cas", "ctr", "text"].map(String::from)).collect();
    let listed: BTreeSet<String> = seen.into_iter().filter(|k| k != "a-before-every-page").collect();
    check("every key listed once", listed, want);
    assert!(pages > 1, "{n} keys came in one page");
    println!("draft2: ok ({n} keys in {pages} pages)");
}

//! The scenario of wasmtime's `keyvalue_main` test program, as a plain
//! `wasi:cli/command` against `wasi:keyvalue@0.2.0-draft` (nothing
//! Databelt-specific): bucket from `$IDENTIFIER`; with the empty identifier
//! the host has preset `atomics_key` to `"5"`, as wasmtime's in-memory test
//! does. Any mismatch panics, so the command exits non-zero.

wit_bindgen::generate!({
    path: "../../../wit/wasi-keyvalue/0.2.0-draft",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) {
    if got != want {
        panic!("{what}: got {got:?}, want {want:?}");
    }
}

fn main() {
    let identifier = std::env::args().nth(1).unwrap_or_default();
    let bucket = store::open(&identifier).expect("open the bucket");
    if !identifier.is_empty() {
        // A fresh bucket: the first increment starts from zero.
        check("first increment", atomics::increment(&bucket, "atomics_key", 5).expect("increment"), 5);
    }
    check("second increment", atomics::increment(&bucket, "atomics_key", 1).expect("increment"), 6);
    let listed = bucket.list_keys(None).expect("list keys");
    check("keys", listed.keys, vec!["atomics_key".to_string()]);
    check("cursor", listed.cursor, None);

    bucket.set("hello", b"world").expect("set");
    check("get", bucket.get("hello").expect("get"), Some(b"world".to_vec()));
    check("exists", bucket.exists("hello").expect("exists"), true);
    bucket.delete("hello").expect("delete");
    check("exists after delete", bucket.exists("hello").expect("exists"), false);

    let three: Vec<(String, Vec<u8>)> = ["a1", "b1", "c1"].iter().map(|k| (k.to_string(), b"v1".to_vec())).collect();
    batch::set_many(&bucket, &three).expect("set-many");
    batch::delete_many(&bucket, &["a1".to_string(), "c1".to_string()]).expect("delete-many");
    let got = batch::get_many(&bucket, &["a1".to_string(), "b1".to_string(), "c1".to_string()]).expect("get-many");
    check("get-many", got, vec![None, Some(("b1".to_string(), b"v1".to_vec())), None]);
    println!("keyvalue_main: ok");
}

//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! (`cargo run -p databelt-fuzz-targets --example seeds`): real bodies,
//! schemas and files, from which libFuzzer starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use databelt_net::continuum::{Locator, Policy};
use databelt_net::peer::{BatchGet, BatchPut, Place};
use databelt_net::workflow::protocol::{StepInput, StepRequest, Successor};
use postcard_schema::Schema;
use postcard_schema::schema::owned::OwnedNamedType;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn schema_seed<T: Schema + ?Sized>(value: &[u8]) -> Vec<u8> {
    let schema: OwnedNamedType = T::SCHEMA.into();
    let schema = postcard::to_stdvec(&schema).unwrap();
    let mut out = vec![u8::try_from(schema.len()).unwrap_or(u8::MAX)];
    out.extend_from_slice(&schema);
    out.extend_from_slice(value);
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");

    let dir = root.join("peer_bodies");
    let put = BatchPut {
        scope: "wildfire".into(),
        entries: vec![("run-1/detect".into(), vec![1, 2, 3, 4]), ("k".into(), vec![])],
        ttl_ms: Some(60_000),
    };
    write(&dir, "batch-put", &postcard::to_stdvec(&put).unwrap());
    let get = BatchGet { scope: "databelt.runs".into(), keys: vec!["run-1/a".into(), "run-1/b".into()] };
    write(&dir, "batch-get", &postcard::to_stdvec(&get).unwrap());
    write(&dir, "values", &postcard::to_stdvec(&vec![Some(vec![9u8; 5]), None]).unwrap());

    let dir = root.join("step_protocol");
    let locator = Locator {
        scope: "wf".into(),
        key: "run-1/pre".into(),
        node: "sat2".into(),
        size_bytes: 4,
        place: Place::Sandbox,
    };
    let request = StepRequest {
        run_id: "run-1".parse().unwrap(),
        step: "detect".parse().unwrap(),
        function: "wildfire-detect".parse().unwrap(),
        input: StepInput::Handed(vec![locator.clone()]),
        successors: vec![Successor { step: "alarm".parse().unwrap(), node: "cloud".into(), tmax_ms: 150.0 }],
        policy: Policy::Databelt,
        ttl_ms: 60_000,
        fusion: true,
        durable: false,
        sole_reader: vec![true],
        run_states: vec![locator],
        fallbacks: Vec::new(),
        deadline_ms: None,
        early_release: false,
        arrival_wait_ms: 0,
    };
    write(&dir, "handed", &postcard::to_stdvec(&request).unwrap());
    let inline = StepRequest { input: StepInput::Inline(vec![3, 1, 2, 3]), successors: vec![], ..request };
    write(&dir, "inline", &postcard::to_stdvec(&inline).unwrap());

    let dir = root.join("describe_schema");
    write(&dir, "u64", &schema_seed::<u64>(&[0x96, 0x01]));
    write(&dir, "tuple", &schema_seed::<(String, Option<Vec<i16>>)>(&[1, b'a', 1, 2, 4, 3]));
    write(&dir, "map", &schema_seed::<std::collections::BTreeMap<String, f32>>(&[0]));

    let dir = root.join("schema_conversion");
    write(&dir, "u64", b"\x00 42");
    write(&dir, "string", b"\x01\"hello\"");
    write(&dir, "tuple", b"\x03[-4, 2.5]");
    write(&dir, "pairs", b"\x04[[\"a\", [1, 2]], [\"b\", []]]");
    write(&dir, "map", b"\x05{\"x\": -1, \"y\": 9}");
    write(&dir, "postcard", b"\x02\x03abc");

    let dir = root.join("host_config");
    write(&dir, "limits", b"deadline_ms = 900\nmax_concurrent_instances = 3\n[limits]\nmax_value_bytes = 1024\n");
    write(&dir, "memory", b"[backend]\nkind = \"memory\"\n");
    write(&dir, "redb", b"node_id = \"sat1\"\n[backend]\nkind = \"redb\"\npath = \"/tmp/x.redb\"\n");

    let dir = root.join("scenario_workflow");
    write(&dir, "paper-testbed.toml", &std::fs::read(repo.join("scenarios/paper-testbed.toml")).unwrap());
    write(&dir, "wildfire.toml", &std::fs::read(repo.join("examples/wildfire/wildfire.toml")).unwrap());
    println!("seeds written under {}", root.display());
}

//! The fuzz targets of Databelt, one function per decoder that takes bytes
//! from the network or from a user. Each takes arbitrary bytes and must
//! return — an error is fine, a panic, an abort, a stack overflow or a hang
//! is a bug. `fuzz/` (cargo-fuzz, libFuzzer) drives them; the replay test
//! in this crate runs every input of the committed corpora
//! (`fuzz/corpus/<target>/`) through them in the normal test suite.

use databelt_host::HostConfig;
use databelt_host::schema::{
    check_postcard, decode_schema, json_text_to_postcard, json_to_postcard, postcard_to_json, postcard_to_json_text,
};
use databelt_net::http::decode_postcard;
use databelt_net::peer::{BatchGet, BatchPut, byte_strings};
use databelt_net::workflow::protocol::{StepFrame, StepRequest, StepResult};
use databelt_placement::{Topology, Workflow};
use postcard_schema::Schema;
use postcard_schema::schema::owned::OwnedNamedType;

/// A target: its name (the corpus directory) and what it does.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("peer_bodies", peer_bodies),
    ("step_protocol", step_protocol),
    ("describe_schema", describe_schema),
    ("schema_conversion", schema_conversion),
    ("host_config", host_config),
    ("scenario_workflow", scenario_workflow),
];

/// The postcard bodies of the peer protocol: `batch-get` and `batch-put`
/// requests, and a `batch-get` answer. What decodes must encode back to the
/// same bytes.
pub fn peer_bodies(data: &[u8]) {
    // Postcard accepts over-long varints, so the bytes need not come back
    // the same; the value must.
    if let Ok(put) = decode_postcard::<BatchPut>(data, "BatchPut") {
        let again = postcard::to_stdvec(&put).unwrap_or_default();
        assert_eq!(decode_postcard::<BatchPut>(&again, "BatchPut").ok(), Some(put), "BatchPut round trip");
    }
    let _ = decode_postcard::<BatchGet>(data, "BatchGet");
    let _ = byte_strings::decode_values(data);
}

/// The step protocol's request and answer bodies (postcard).
pub fn step_protocol(data: &[u8]) {
    // Compared as bytes: a NaN SLO is not equal to itself (the executor
    // refuses non-finite SLOs).
    if let Ok(request) = decode_postcard::<StepRequest>(data, "StepRequest") {
        let again = postcard::to_stdvec(&request).unwrap_or_default();
        let third = decode_postcard::<StepRequest>(&again, "StepRequest").map(|r| postcard::to_stdvec(&r).ok());
        assert_eq!(third.ok().flatten(), Some(again), "round trip");
    }
    let _ = decode_postcard::<StepResult>(data, "StepResult");
    // The framed answer: whatever the bytes, a frame or a clear error.
    let mut buffer = data.to_vec();
    while let Ok(Some(_)) = StepFrame::take(&mut buffer, 1 << 20) {}
}

/// A component's `describe()` answer: a schema, then (with what follows it
/// in the input) the walks over it every invocation makes: checking postcard
/// bytes, converting them to JSON and back, printing the type.
pub fn describe_schema(data: &[u8]) {
    let split = data.first().map_or(0, |n| usize::from(*n)).min(data.len().saturating_sub(1));
    let (schema, value) = data.get(1..).unwrap_or_default().split_at(split);
    let Ok(schema) = decode_schema(schema, "input") else { return };
    let _ = schema.to_string();
    let _ = check_postcard(&schema, value);
    if let Ok(json) = postcard_to_json(&schema, value) {
        let back = json_to_postcard(&schema, &json);
        assert!(back.is_ok(), "JSON made from valid postcard converts back: {back:?}");
    }
    // The text path (the host API's answers): valid JSON whenever it succeeds.
    if let Ok(text) = postcard_to_json_text(&schema, value) {
        // (serde_json stops at 128 levels; deeper schemas are legal.)
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&text) {
            assert!(e.to_string().contains("recursion limit"), "the JSON text does not parse: {e}");
        }
    }
}

/// JSON from a user through a fixed set of real schemas to postcard, and
/// postcard back to JSON: the byte that starts the input picks the schema.
pub fn schema_conversion(data: &[u8]) {
    let schemas = fixed_schemas();
    let Some((pick, rest)) = data.split_first() else { return };
    let Some(schema) = schemas.get(usize::from(*pick) % schemas.len().max(1)) else { return };
    let tree = serde_json::from_slice::<serde_json::Value>(rest).ok().map(|json| json_to_postcard(schema, &json));
    if let Some(Ok(bytes)) = &tree {
        assert!(check_postcard(schema, bytes).is_ok(), "postcard made from JSON is valid");
    }
    // The streaming path (the host API's input) agrees with the value path.
    let streamed = json_text_to_postcard(schema, rest);
    if let (Ok(streamed), Some(Ok(bytes))) = (&streamed, &tree) {
        assert_eq!(streamed, bytes, "streamed and value-tree conversions agree");
    }
    if streamed.is_ok() {
        assert!(matches!(tree, Some(Ok(_))), "the streaming path accepts only what the value path accepts");
    }
    // Valid postcard may still have no JSON form (a map with a repeated
    // key); it must then be an error, which returning at all shows.
    if check_postcard(schema, rest).is_ok() {
        let _ = postcard_to_json(schema, rest);
    }
}

fn fixed_schemas() -> Vec<OwnedNamedType> {
    fn of<T: Schema + ?Sized>() -> OwnedNamedType {
        T::SCHEMA.into()
    }
    vec![
        of::<u64>(),
        of::<String>(),
        of::<Vec<u8>>(),
        of::<Option<(i32, f64)>>(),
        of::<Vec<(String, Vec<u16>)>>(),
        of::<std::collections::BTreeMap<String, i64>>(),
        of::<(bool, char, i128, Option<u8>)>(),
    ]
}

/// A host configuration file (TOML) laid over the defaults, then validated.
pub fn host_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = HostConfig::default().layered(text) {
        let _ = config.validate();
    }
}

/// A scenario (topology) and a workflow file (TOML), then what is derived
/// from them: validation, snapshots and routes, the step order.
pub fn scenario_workflow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(topology) = Topology::from_toml(text)
        && topology.validate().is_ok()
    {
        let snapshot = topology.snapshot(0);
        if let (Some(a), Some(b)) = (topology.nodes.first(), topology.nodes.last()) {
            let _ = snapshot.route(&a.id, &b.id);
        }
    }
    if let Ok(workflow) = Workflow::from_toml(text) {
        let _ = workflow.order();
    }
}

//! The kube-scheduler extender on JSON in the shapes kube-scheduler sends:
//! a v1.29 request with full Node objects, a `nodeCacheCapable` request with
//! names, a request from an older scheduler with capitalised field names,
//! and a pod with a malformed annotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_placement::SchedulerConfig;
use databelt_placement::Topology;
use databelt_placement::kube::{self, ExtenderArgs, ExtenderFilterResult, HostPriority};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scenario() -> Topology {
    Topology::from_toml(&fixture("scenario.toml")).unwrap()
}

fn args(name: &str) -> ExtenderArgs {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn names(r: &ExtenderFilterResult) -> Vec<String> {
    match (&r.nodes, &r.nodenames) {
        (Some(list), _) => list.items.iter().map(|n| n.metadata.name.clone()).collect(),
        (None, Some(names)) => names.clone(),
        (None, None) => Vec::new(),
    }
}

#[test]
fn filter_with_full_nodes_keeps_the_nodes_that_pass_and_says_why_the_others_fail() {
    let a = args("filter-nodes-v1.29.json");
    let pod = a.pod.as_ref().unwrap();
    assert!(pod.is_managed());
    let d = pod.demand().unwrap();
    assert_eq!(d.cpu, 0.5, "requests win over limits");
    assert_eq!(d.memory_mb, 256.0);
    assert_eq!(d.inputs[0].node, "sat-1");
    assert_eq!(d.successors[0].node, "cloud");

    let r = kube::filter(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert_eq!(names(&r), ["leo-node-a", "gs-1", "cloud-worker-0"], "{r:?}");
    assert!(r.nodenames.is_none(), "answered in the shape asked");
    // The passing nodes come back whole, as sent.
    let a_node = &r.nodes.as_ref().unwrap().items[0];
    assert_eq!(a_node.metadata.labels["databelt.io/node"], "sat-1");
    assert!(r.failed_nodes["leo-node-b"].contains("temperature"), "{r:?}");
    assert!(r.failed_and_unresolvable_nodes["worker-x"].contains("not in the scenario"), "{r:?}");
    assert!(r.error.is_empty());

    // The answer is in the field names current schedulers write.
    let json = serde_json::to_value(&r).unwrap();
    assert!(json.get("failedNodes").is_some() && json.get("failedAndUnresolvableNodes").is_some(), "{json}");
    assert!(json.get("nodes").is_some() && json.get("error").is_none(), "{json}");
}

#[test]
fn filter_with_node_names_applies_the_pods_latency_bound() {
    let a = args("filter-nodenames-cache-capable.json");
    let r = kube::filter(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert_eq!(names(&r), ["sat-1", "gs-1"], "{r:?}");
    assert!(r.nodes.is_none());
    assert!(r.failed_nodes["cloud"].contains("network"), "{r:?}");
    assert!(r.failed_nodes["sat-2"].contains("temperature"), "{r:?}");
    assert!(r.failed_and_unresolvable_nodes.contains_key("worker-x"));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["nodenames"], serde_json::json!(["sat-1", "gs-1"]));
}

#[test]
fn prioritize_scores_0_to_10_best_near_the_input_and_0_for_failing_nodes() {
    let a = args("filter-nodenames-cache-capable.json");
    let p = kube::prioritize(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    let score = |h: &str| p.iter().find(|x| x.host == h).unwrap().score;
    assert_eq!(p.len(), 5, "one score per node sent: {p:?}");
    assert!(p.iter().all(|h| (0..=kube::MAX_EXTENDER_PRIORITY).contains(&h.score)), "{p:?}");
    assert!(score("sat-1") > score("gs-1"), "{p:?}");
    assert!(score("gs-1") > 0, "{p:?}");
    assert_eq!((score("sat-2"), score("cloud"), score("worker-x")), (0, 0, 0), "{p:?}");
    let json = serde_json::to_value(&p).unwrap();
    assert!(json[0].get("host").is_some() && json[0].get("score").is_some(), "{json}");
}

#[test]
fn requests_from_older_schedulers_with_capitalised_fields_are_read() {
    let a = args("legacy-capitalised.json");
    assert!(a.nodes.is_none());
    assert_eq!(a.nodenames.as_deref().unwrap(), ["sat-1", "gs-1", "cloud"]);
    let d = a.pod.as_ref().unwrap().demand().unwrap();
    assert_eq!((d.cpu, d.memory_mb), (2.0, 1024.0), "limits stand in for missing requests");
    let r = kube::filter(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert_eq!(names(&r), ["sat-1", "gs-1", "cloud"]);
    let p = kube::prioritize(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert_eq!(p.iter().max_by_key(|h| h.score).unwrap().host, "gs-1", "{p:?}");
    // The old answer shapes parse as well.
    let old: ExtenderFilterResult =
        serde_json::from_str(r#"{"Nodes":null,"NodeNames":["a"],"FailedNodes":{"b":"why"},"Error":""}"#).unwrap();
    assert_eq!(old.nodenames.unwrap(), ["a"]);
    assert_eq!(old.failed_nodes["b"], "why");
    let h: HostPriority = serde_json::from_str(r#"{"Host":"a","Score":7}"#).unwrap();
    assert_eq!(h, HostPriority { host: "a".into(), score: 7 });
}

#[test]
fn a_malformed_annotation_fails_the_call_with_a_clear_error_and_passes_no_node() {
    let a = args("bad-annotation.json");
    let r = kube::filter(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert!(r.error.contains("databelt.io/input-bytes") && r.error.contains("five megabytes"), "{r:?}");
    assert!(names(&r).is_empty());
    assert!(kube::prioritize(&scenario(), 0, &SchedulerConfig::default(), &a).is_err());
}

#[test]
fn an_unknown_input_node_or_missing_pod_is_an_error() {
    let mut a = args("filter-nodenames-cache-capable.json");
    a.pod.as_mut().unwrap().metadata.annotations.insert("databelt.io/input-node".into(), "mars".into());
    let r = kube::filter(&scenario(), 0, &SchedulerConfig::default(), &a).unwrap();
    assert!(r.error.contains("mars"), "{r:?}");
    let none = ExtenderArgs { pod: None, ..args("legacy-capitalised.json") };
    assert!(kube::filter(&scenario(), 0, &SchedulerConfig::default(), &none).is_err());
    let no_nodes = ExtenderArgs { nodes: None, nodenames: None, ..args("legacy-capitalised.json") };
    assert!(kube::filter(&scenario(), 0, &SchedulerConfig::default(), &no_nodes).is_err());
}

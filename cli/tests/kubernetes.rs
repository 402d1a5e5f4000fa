//! The Kubernetes manifests under deploy/kubernetes: valid against the
//! Kubernetes OpenAPI schemas (PyPI's `kubernetes-validate`, strict, which
//! scripts/test.sh installs), consistent with the extender the placement
//! service serves, and using only flags the `databelt` commands have.
//!
//! No cluster runs here; what a cluster would add (scheduling real pods,
//! probes against real hosts) is listed in docs/kubernetes.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use databelt_placement::Topology;
use databelt_placement::kube::{self, ExtenderArgs};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The validator: `$DATABELT_KUBERNETES_VALIDATE`, else on the PATH.
fn validator() -> PathBuf {
    let path = std::env::var_os("DATABELT_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubernetes-validate".into());
    match Command::new(&path).arg("--version").output() {
        Ok(o) if o.status.success() => path,
        _ => panic!(
            "kubernetes-validate not found ({}): run scripts/test.sh, which installs it, or `pip install \
             kubernetes-validate` and set DATABELT_KUBERNETES_VALIDATE",
            path.display()
        ),
    }
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(validator()).args(["--strict", "--quiet", "--no-warn"]).args(files).output().unwrap()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    // The scheduler's own configuration is not an API object (no OpenAPI
    // schema); the next test checks it.
    let objects: Vec<PathBuf> =
        manifests().into_iter().filter(|p| !p.ends_with("kube-scheduler-config.yaml")).collect();
    assert!(objects.len() >= 5, "{objects:?}");
    let out = validate(&objects);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The validator does reject what is wrong (so the pass above means
    // something): a wrong type and an unknown field.
    let dir = tempfile::tempdir().unwrap();
    let placement = std::fs::read_to_string(deploy_dir().join("placement.yaml")).unwrap();
    for (i, broken) in [
        placement.replacen("replicas: 1", "replicas: \"one\"", 1),
        placement.replacen("      containers:", "      containerz: []\n      containers:", 1),
    ]
    .into_iter()
    .enumerate()
    {
        assert_ne!(broken, placement);
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, broken).unwrap();
        assert!(!validate(&[path]).status.success(), "broken manifest {i} passed");
    }
}

/// The `extenders` entry of the KubeSchedulerConfiguration, as key → value
/// lines (a flat reading of the YAML this repository writes).
fn extender_keys(text: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut keys = Vec::new();
    for line in text.lines() {
        if line.starts_with("extenders:") {
            inside = true;
            continue;
        }
        if inside && !line.starts_with(' ') && !line.trim().is_empty() {
            break;
        }
        let trimmed = line.trim_start().trim_start_matches("- ");
        let indent = line.len() - line.trim_start().len();
        // The list item's first key (indent 2) and its siblings (indent 4).
        let top_level = indent == 2 || (indent == 4 && !line.trim_start().starts_with("- "));
        if inside
            && top_level
            && let Some((k, v)) = trimmed.split_once(':')
        {
            keys.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    keys
}

#[test]
fn the_scheduler_configuration_registers_the_extender_the_service_serves() {
    let text = std::fs::read_to_string(deploy_dir().join("kube-scheduler-config.yaml")).unwrap();
    assert!(text.contains("apiVersion: kubescheduler.config.k8s.io/v1\n"));
    assert!(text.contains("kind: KubeSchedulerConfiguration\n"));
    let keys = extender_keys(&text);
    let get = |k: &str| keys.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    // Only fields of kube-scheduler's v1 Extender type.
    let known = [
        "urlPrefix",
        "filterVerb",
        "preemptVerb",
        "prioritizeVerb",
        "bindVerb",
        "weight",
        "enableHTTPS",
        "tlsConfig",
        "httpTimeout",
        "nodeCacheCapable",
        "managedResources",
        "ignorable",
    ];
    for (k, _) in &keys {
        assert!(known.contains(&k.as_str()), "unknown extender field `{k}`");
    }
    let url = get("urlPrefix").unwrap();
    assert!(url.starts_with("https://databelt-placement.databelt.svc:7300"), "{url}");
    // kube-scheduler calls <urlPrefix>/<verb>: the routes of the service.
    let (filter, prioritize) = (get("filterVerb").unwrap(), get("prioritizeVerb").unwrap());
    for verb in [filter, prioritize] {
        let path = format!("{}/{verb}", url.trim_start_matches("https://databelt-placement.databelt.svc:7300"));
        assert!(["/v1/kube/filter", "/v1/kube/prioritize"].contains(&path.as_str()), "{path}");
    }
    assert!(text.contains(&format!("- name: {}\n        ignoredByScheduler: true", kube::MANAGED_RESOURCE)), "{text}");
    assert_eq!(get("enableHTTPS"), Some("true"));
}

/// `--flag` names a container passes to `databelt <command>`.
fn container_flags(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut command: Option<String> = None;
    let mut in_args = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "args:" {
            in_args = true;
            command = None;
            continue;
        }
        if in_args {
            let Some(item) = t.strip_prefix("- ") else {
                in_args = false;
                continue;
            };
            match &command {
                None => command = Some(item.to_string()),
                Some(c) => {
                    let flag = item.split('=').next().unwrap().to_string();
                    out.push((c.clone(), flag));
                }
            }
        }
    }
    out
}

#[test]
fn manifests_pass_only_flags_the_commands_have() {
    let mut checked = 0;
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (command, flag) in container_flags(&text) {
            if !text.contains("image: ghcr.io/databelt/databelt") {
                continue;
            }
            let help =
                Command::new(env!("CARGO_BIN_EXE_databelt")).args([command.as_str(), "--help"]).output().unwrap();
            assert!(help.status.success(), "databelt {command} --help");
            let help = String::from_utf8_lossy(&help.stdout);
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: databelt {command} has no {flag}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "{checked} flags checked");
}

#[test]
fn the_example_scenario_and_workload_fit_together() {
    let text = std::fs::read_to_string(deploy_dir().join("scenario-configmap.yaml")).unwrap();
    let (_, body) = text.split_once("scenario.toml: |\n").unwrap();
    let toml: String = body.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let topology = Topology::from_toml(&toml).unwrap();
    // The example workload's pod, as kube-scheduler would send it, against
    // that scenario: the extender answers, and the input's node wins.
    let workload = std::fs::read_to_string(deploy_dir().join("example-function.yaml")).unwrap();
    let annotation = |key: &str| {
        workload
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap()
    };
    let pod = serde_json::json!({
        "metadata": {"name": "wildfire-detect-1", "namespace": "databelt", "annotations": {
            "databelt.io/input-node": annotation("databelt.io/input-node"),
            "databelt.io/input-bytes": annotation("databelt.io/input-bytes"),
            "databelt.io/successor-node": annotation("databelt.io/successor-node"),
            "databelt.io/output-bytes": annotation("databelt.io/output-bytes"),
            "databelt.io/duration-ms": annotation("databelt.io/duration-ms"),
            "databelt.io/power-w": annotation("databelt.io/power-w"),
            "databelt.io/max-latency-ms": annotation("databelt.io/max-latency-ms"),
        }},
        "spec": {"containers": [{"name": "detect", "resources": {"requests": {"cpu": "500m", "memory": "256Mi", "databelt.io/function": "1"}}}]}
    });
    let args: ExtenderArgs = serde_json::from_value(serde_json::json!({
        "pod": pod,
        "nodenames": topology.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert!(args.pod.as_ref().unwrap().is_managed());
    let scores = kube::prioritize(&topology, 0, &Default::default(), &args).unwrap();
    let best = scores.iter().max_by_key(|h| h.score).unwrap();
    assert_eq!(best.host, annotation("databelt.io/input-node"), "{scores:?}");
}

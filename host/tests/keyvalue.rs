//! Components written for other hosts, unchanged, on a Databelt host:
//! `wasi:keyvalue` (both drafts) from `wasi:cli/command` programs and from a
//! `wasi:http/proxy` app, on the same state as `databelt:state`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use common::{guest, memory_host, temp_config};
use databelt_host::state::SetOptions;
use databelt_host::{BackendConfig, Error, Host};

fn command(host: &Host, name: &str, args: &[&str]) -> Result<i32, Error> {
    let bytes = std::fs::read(guest(name)).unwrap();
    let mut argv = vec![name.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    host.run_command(&bytes, &argv)
}

fn hosts() -> Vec<(&'static str, Host, tempfile::TempDir)> {
    let (mut durable, dir) = temp_config();
    durable.deadline_ms = 20_000;
    let (_, mem_dir) = temp_config();
    vec![("memory", memory_host(), mem_dir), ("redb", Host::new(durable).unwrap(), dir)]
}

#[test]
fn wasmtimes_keyvalue_main_scenario_passes_on_a_fresh_bucket_and_on_the_preset_default_bucket() {
    for (backend, host, _dir) in hosts() {
        assert_eq!(command(&host, "kv-main", &["fresh"]).unwrap(), 0, "{backend}");
        assert_eq!(host.state().get("fresh", "atomics_key").unwrap(), Some(b"6".to_vec()), "{backend}");
        // The empty identifier is the default scope; preset as wasmtime's in-memory test does.
        host.state().set("default", "atomics_key", b"5".to_vec(), SetOptions::default()).unwrap();
        assert_eq!(command(&host, "kv-main", &[]).unwrap(), 0, "{backend}");
        assert_eq!(host.state().get("default", "atomics_key").unwrap(), Some(b"6".to_vec()), "{backend}");
    }
}

#[test]
fn a_failing_keyvalue_check_fails_the_command() {
    let host = memory_host();
    assert_eq!(command(&host, "kv-main", &["again"]).unwrap(), 0);
    // The second run's first increment returns 11, not 5: the program panics.
    let err = command(&host, "kv-main", &["again"]).unwrap_err();
    assert!(matches!(err, Error::Trap(_)), "{err}");
}

#[test]
fn draft2_cas_conflicts_negative_increments_and_paging_over_thousands_of_keys() {
    let (mut config, _dir) = temp_config();
    config.backend = BackendConfig::Memory;
    config.deadline_ms = 60_000;
    let host = Host::new(config).unwrap();
    assert_eq!(command(&host, "kv-draft2", &["d2", "3000"]).unwrap(), 0);
    assert_eq!(host.state().get("d2", "ctr").unwrap(), Some(b"-2".to_vec()));
    assert_eq!(host.state().get("d2", "cas").unwrap(), Some(b"second".to_vec()));
    assert_eq!(host.state().list_keys("d2", "page/", None, Some(1000)).unwrap().keys.len(), 1000);
}

#[test]
fn buckets_obey_the_hosts_scope_allowlist_and_reserved_names() {
    let (mut config, _dir) = temp_config();
    config.backend = BackendConfig::Memory;
    config.allowed_scopes = Some(vec!["default".into()]);
    let host = Host::new(config).unwrap();
    // `kv-main fresh` opens a bucket the host does not allow: `open` fails and the program panics.
    assert!(command(&host, "kv-main", &["fresh"]).is_err());
    assert_eq!(host.state().get("fresh", "atomics_key").ok().flatten(), None);
    let err = command(&memory_host(), "kv-main", &["databelt.txn"]).unwrap_err();
    assert!(matches!(err, Error::Trap(_)), "{err}");
}

#[cfg(feature = "http-apps")]
#[test]
fn databelt_functions_and_http_apps_are_not_commands() {
    let host = memory_host();
    let err = command(&host, "kv_probe", &[]).unwrap_err();
    assert!(matches!(err, Error::WrongWorld(_)), "{err}");
    let err = command(&host, "kv_http", &[]).unwrap_err();
    assert!(matches!(err, Error::WrongWorld(_)), "{err}");
    let err = host.deploy_app("probe", &std::fs::read(guest("kv_probe")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("PUT /functions"), "{err}");
    assert!(host.apps_list().is_empty());
}

#[cfg(feature = "http-apps")]
mod http_app {
    use super::*;
    use http_body_util::{BodyExt, Full};

    async fn request(host: &Host, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .unwrap();
        let resp = host.handle_http("web", req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http_proxy_app_reads_and_writes_state_through_wasi_keyvalue() {
        let host = memory_host();
        host.deploy_app("web", &std::fs::read(guest("kv_http")).unwrap()).unwrap();
        assert_eq!(host.apps_list().len(), 1);
        assert_eq!(request(&host, "GET", "/hits", b"").await, (200, b"1".to_vec()));
        assert_eq!(request(&host, "GET", "/hits", b"").await, (200, b"2".to_vec()));
        assert_eq!(request(&host, "PUT", "/kv/greeting", b"hello").await.0, 204);
        assert_eq!(request(&host, "GET", "/kv/greeting", b"").await, (200, b"hello".to_vec()));
        assert_eq!(request(&host, "GET", "/kv/none", b"").await.0, 404);
        // The same state, seen from the host (and so from databelt:state functions).
        assert_eq!(host.state().get("web", "hits").unwrap(), Some(b"2".to_vec()));
        assert_eq!(host.state().get("web", "greeting").unwrap(), Some(b"hello".to_vec()));
        assert!(host.undeploy_app("web").unwrap());
        let req = hyper::Request::builder().uri("http://localhost/hits").body(Full::new(bytes::Bytes::new())).unwrap();
        assert!(matches!(host.handle_http("web", req).await, Err(Error::UnknownFunction(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_app_is_served_again_after_a_restart() {
        let (config, _dir) = temp_config();
        let host = Host::new(config.clone()).unwrap();
        host.deploy_app("web", &std::fs::read(guest("kv_http")).unwrap()).unwrap();
        assert_eq!(request(&host, "GET", "/hits", b"").await, (200, b"1".to_vec()));
        drop(host);
        // An app instance finishes on its own task after its body is sent,
        // holding the store for a moment: wait for the database to be free.
        let started = std::time::Instant::now();
        let host = loop {
            match Host::new(config.clone()) {
                Ok(h) => break h,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    assert!(e.to_string().contains("already open"), "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(host.apps_list().len(), 1);
        assert_eq!(request(&host, "GET", "/hits", b"").await, (200, b"2".to_vec()));
    }
}

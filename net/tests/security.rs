//! Authentication on real servers over real TLS on 127.0.0.1: every request
//! of the issue's list, unauthenticated or wrongly authenticated, is refused
//! and changes nothing (read back); members with a certificate from another
//! CA, for a node outside the topology, for another node than claimed, or
//! expired are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::Duration;

use databelt_host::{BackendConfig, Host};
use databelt_net::auth::{Credentials, MemberSecurity, Permission, TokenFile};
use databelt_net::continuum::Policy;
use databelt_net::peer::{PeerClient, RUN_ID_HEADER};
use databelt_net::placement::PlacementService;
use databelt_net::tls::{Authority, Identity, MemberTls, Members, Validity, client_config};
use databelt_net::workflow::protocol::WarmRequest;
use databelt_placement::Topology;
use databelt_types::NodeId;

const SCENARIO: &str = r#"
[[node]]
id = "sat1"
kind = "satellite"
address = "127.0.0.1:1"
[[node]]
id = "sat2"
kind = "satellite"
address = "127.0.0.1:2"
[[link]]
a = "sat1"
b = "sat2"
latency_ms = 10
bandwidth_mbps = 40
"#;

struct World {
    ca: Authority,
    members: Members,
    host: Host,
    addr: String,
    placement: String,
    admin: String,
    reader: String,
    invoker: String,
    _dir: tempfile::TempDir,
}

fn node(id: &str) -> Identity {
    Identity::Node(NodeId::new(id).unwrap())
}

async fn world() -> World {
    let ca = Authority::generate("test CA", Validity::days(1)).unwrap();
    let members = Members::of(["sat1", "sat2"]);
    let mut tokens = TokenFile::default();
    let admin = tokens.add("admin", vec![Permission::Admin], None);
    let reader = tokens.add("reader", vec![Permission::Read], None);
    let invoker = tokens.add("probe-only", vec![Permission::Invoke], Some(vec!["probe".parse().unwrap()]));

    let (mut config, dir) = common::temp_config();
    config.backend = BackendConfig::Memory;
    config.node_id = "sat1".into();
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &common::guest("kv_probe")).unwrap();
    let tls = MemberTls::new(&ca.issue(&node("sat1"), Validity::days(1)).unwrap(), members.clone()).unwrap();
    let security = MemberSecurity::new(&tls, &tokens, members.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(databelt_net::api::serve(host.clone(), security.server, listener, std::future::pending()));

    let tls = MemberTls::new(&ca.issue(&Identity::Placement, Validity::days(1)).unwrap(), members.clone()).unwrap();
    let security = MemberSecurity::new(&tls, &tokens, members.clone());
    let service = PlacementService::new(Topology::from_toml(SCENARIO).unwrap()).unwrap();
    let (paddr, stop) = service.spawn("127.0.0.1:0".parse().unwrap(), security.server).await.unwrap();
    std::mem::forget(stop);
    World { ca, members, host, addr, placement: format!("https://{paddr}"), admin, reader, invoker, _dir: dir }
}

impl World {
    /// A user's client: trusts the CA, presents `token`.
    fn user(&self, token: Option<&str>) -> reqwest::Client {
        let tls = client_config(self.ca.cert_pem(), None, self.members.clone()).unwrap();
        Credentials { tls: Some(tls), token: token.map(str::to_string), node: None }
            .client_builder()
            .unwrap()
            .build()
            .unwrap()
    }

    /// A node's credentials, with a certificate for `who` from `ca`.
    fn member(&self, ca: &Authority, who: &Identity, validity: Validity) -> Credentials {
        let tls = MemberTls::new(&ca.issue(who, validity).unwrap(), self.members.clone()).unwrap();
        MemberSecurity::new(&tls, &TokenFile::default(), self.members.clone()).client
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

/// The status of a request with a large body, or 0 when the server refused
/// it before reading the body and closed the connection while the client
/// was still sending (it answers without reading an unauthorised body).
async fn status_or_cut(r: reqwest::RequestBuilder) -> u16 {
    match r.send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) if format!("{e:?}").contains("BodyWrite") => 0,
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unauthenticated_request_is_refused_and_changes_nothing() {
    let w = world().await;
    w.host.state().set("hello-counter", "visits/ada", b"\x01".to_vec(), Default::default()).unwrap();
    let anonymous = w.user(None);
    let reader = w.user(Some(&w.reader));

    // Overwrite a function's state through the peer protocol (the issue's
    // first finding), and write into the reserved run scope.
    for client in [&anonymous, &w.user(Some(&w.admin))] {
        let put = client
            .put(w.url("/peer/v1/state/hello-counter/visits%2Fada"))
            .header(RUN_ID_HEADER, "r1")
            .body(b"\x7f".to_vec());
        assert!(matches!(status(put).await, 401 | 403), "tokens are not node certificates");
        let put = client.put(w.url("/peer/v1/state/databelt.runs/r1%2Fx")).header(RUN_ID_HEADER, "r1").body(vec![1u8]);
        assert!(matches!(status(put).await, 401 | 403));
        let get = client.get(w.url("/peer/v1/state/hello-counter/visits%2Fada")).header(RUN_ID_HEADER, "r1");
        assert!(matches!(status(get).await, 401 | 403));
    }
    assert_eq!(w.host.state().get("hello-counter", "visits/ada").unwrap(), Some(b"\x01".to_vec()));
    assert_eq!(w.host.state().get("databelt.runs", "r1/x").unwrap(), None);

    // Deploy, replace and delete functions.
    let component = std::fs::read(common::guest("kv_probe")).unwrap();
    assert!(matches!(status_or_cut(anonymous.put(w.url("/functions/evil")).body(component.clone())).await, 401 | 0));
    assert!(matches!(status_or_cut(reader.put(w.url("/functions/probe")).body(component.clone())).await, 403 | 0));
    assert_eq!(status(anonymous.delete(w.url("/functions/probe"))).await, 401);
    assert_eq!(status(reader.delete(w.url("/functions/probe"))).await, 403);
    let names: Vec<String> = w.host.functions().iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, ["probe"]);

    // List runs; delete a run.
    assert_eq!(status(anonymous.get(w.url("/workflow/v1/runs"))).await, 401);
    assert_eq!(status(reader.get(w.url("/workflow/v1/runs"))).await, 403);
    assert_eq!(status(anonymous.delete(w.url("/workflow/v1/runs/r1"))).await, 401);

    // Invoke: no token 401, read-only 403, a token for another function
    // 403; the token for this function works.
    let input = serde_json::to_vec(&serde_json::json!(null)).unwrap();
    let invoke = |c: &reqwest::Client, f: &str| {
        c.post(w.url(&format!("/functions/{f}/invoke"))).header("content-type", "application/json").body(input.clone())
    };
    assert_eq!(status(invoke(&anonymous, "probe")).await, 401);
    assert_eq!(status(invoke(&reader, "probe")).await, 403);
    let invoker = w.user(Some(&w.invoker));
    assert_ne!(status(invoke(&invoker, "probe")).await, 403, "allowed to invoke probe");
    assert_eq!(status(invoke(&invoker, "other")).await, 403);

    // Ask a host to connect ahead of a run: an invoke token (or a node) is
    // needed.
    let warm = |nodes: usize| {
        let request = WarmRequest { policy: Policy::Databelt, nodes: vec!["sat2".to_string(); nodes] };
        postcard::to_stdvec(&request).unwrap()
    };
    let post_warm = |c: &reqwest::Client, body: Vec<u8>| c.post(w.url("/workflow/v1/warm")).body(body);
    assert_eq!(status(post_warm(&anonymous, warm(1))).await, 401);
    assert_eq!(status(post_warm(&reader, warm(1))).await, 403);
    // A wrong token is 401 even where nothing would be needed otherwise.
    assert_eq!(status(w.user(Some("dbt_forged")).get(w.url("/functions"))).await, 401);
    assert_eq!(status(reader.get(w.url("/functions"))).await, 200);

    // Change SLOs on the placement service.
    let slos = serde_json::json!({"a": 1.0});
    let put_slos = |c: &reqwest::Client| c.put(format!("{}/v1/slos/wf", w.placement)).json(&slos);
    assert_eq!(status(put_slos(&anonymous)).await, 401);
    assert_eq!(status(put_slos(&reader)).await, 403);
    assert_eq!(status(reader.get(format!("{}/v1/slos/wf", w.placement))).await, 404, "still none");
    assert_eq!(status(put_slos(&w.user(Some(&w.admin)))).await, 204);

    // Plain HTTP to a TLS port gets no answer.
    databelt_net::tls::install_default_provider();
    let plain = reqwest::Client::new().get(format!("http://{}/functions", w.addr)).send().await;
    assert!(plain.is_err() || plain.unwrap().status() == 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_must_hold_a_current_certificate_of_the_ca_for_a_topology_node() {
    let w = world().await;
    let write = |creds: &Credentials| {
        let peers = PeerClient::new(creds, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        let addr = w.addr.clone();
        async move { peers.put(&addr, &"r1".parse().unwrap(), "hello-counter", "visits/ada", b"\x7f".to_vec(), None).await }
    };

    // The right CA and a topology node: accepted (the control).
    let sat2 = w.member(&w.ca, &node("sat2"), Validity::days(1));
    write(&sat2).await.unwrap();
    assert_eq!(w.host.state().get("hello-counter", "visits/ada").unwrap(), Some(b"\x7f".to_vec()));
    w.host.state().set("hello-counter", "visits/ada", b"\x01".to_vec(), Default::default()).unwrap();

    // Another CA: the handshake fails.
    let other_ca = Authority::generate("another CA", Validity::days(1)).unwrap();
    let e = write(&w.member(&other_ca, &node("sat2"), Validity::days(1))).await.unwrap_err();
    let text = format!("{e:#} {:?}", std::error::Error::source(&e));
    assert!(text.contains("UnknownIssuer") || text.contains("nknown") || text.contains("certificate"), "{text}");

    // A node that is not in the topology.
    let e = write(&w.member(&w.ca, &node("sat9"), Validity::days(1))).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::AccessDenied, "{e}");
    assert!(e.to_string().contains("sat9") && e.to_string().contains("not in the topology"), "{e}");

    // A certificate for sat2 claiming to be sat1.
    let mut liar = w.member(&w.ca, &node("sat2"), Validity::days(1));
    liar.node = Some(NodeId::new("sat1").unwrap());
    let e = write(&liar).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::AccessDenied, "{e}");
    assert!(e.to_string().contains("claims node `sat1`"), "{e}");

    // An expired certificate.
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    let expired = Validity { not_before: past, not_after: past + time::Duration::days(1) };
    let e = write(&w.member(&w.ca, &node("sat2"), expired)).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::Unavailable, "{e}");

    assert_eq!(w.host.state().get("hello-counter", "visits/ada").unwrap(), Some(b"\x01".to_vec()), "nothing changed");

    // A client checks the server too: a server whose certificate names a
    // node outside the topology is refused before anything is sent.
    let rogue_members = Members::of(["sat2"]);
    let tls = client_config(w.ca.cert_pem(), None, rogue_members).unwrap();
    let creds = Credentials { tls: Some(tls), token: Some(w.admin.clone()), node: None };
    let r = creds.client_builder().unwrap().build().unwrap().get(w.url("/functions")).send().await;
    let e = r.unwrap_err();
    assert!(format!("{e:?}").contains("not in the topology"), "{e:?}");
}

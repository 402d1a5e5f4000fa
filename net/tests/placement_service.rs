//! The placement service on loopback, and the client's fallback to local
//! election when it is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use databelt_net::placement::{HintSource, PlacementClient, PlacementService, Slos};
use databelt_placement::{Decision, ElectionRequest, Error, FunctionRequest, Topology};

fn testbed() -> Topology {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/paper-testbed.toml");
    Topology::from_file(&path).unwrap()
}

fn request(size: u64, tmax: f64) -> ElectionRequest {
    ElectionRequest {
        producer: "sat2".into(),
        consumer: "sat6".into(),
        size_bytes: size,
        tmax_ms: tmax,
        one_way: false,
    }
}

#[tokio::test]
async fn hints_slos_errors_and_local_fallback() {
    let service = PlacementService::new(testbed()).unwrap();
    let (addr, stop) =
        service.spawn("127.0.0.1:0".parse().unwrap(), databelt_net::auth::ServerSecurity::development()).await.unwrap();
    let client = PlacementClient::new(
        &format!("http://{addr}"),
        &databelt_net::auth::Credentials::development(),
        Duration::from_millis(500),
    )
    .unwrap();

    let view = client.refresh().await.unwrap();
    assert_eq!(view.topology.nodes.len(), 9);

    // 1 MB in 100 ms over 40 Mbit/s links cannot be met (200 ms of transfer
    // alone): best effort, all the way to the consumer, SLO missed.
    let (d, src) = client.storage_hint(&request(1_000_000, 100.0)).await.unwrap();
    assert_eq!(src, HintSource::Service);
    assert!(matches!(&d, Decision::BestEffort { node, .. } if node == "sat6"), "{d:?}");
    assert!(d.slo_missed());
    // 100 kB in 100 ms: 20 ms transfer + 2·(10+9)·hops — two hops fit (96 ms), three do not.
    let (d, _) = client.storage_hint(&request(100_000, 100.0)).await.unwrap();
    match &d {
        Decision::Propagate { node, hops_to_consumer, .. } => {
            assert_eq!(node, "sat4");
            assert_eq!(*hops_to_consumer, 2);
        }
        other => panic!("{other:?}"),
    }
    // The same state for a consumer that waits only for the bytes: the
    // latency counts once, 20 + (10+9)·4 = 96 ms reaches the consumer itself.
    let one_way = ElectionRequest { one_way: true, ..request(100_000, 100.0) };
    let (consumer_side, _) = client.storage_hint(&one_way).await.unwrap();
    match &consumer_side {
        Decision::Propagate { node, path, .. } => {
            assert_eq!(node, "sat6");
            assert!((path[4].latency_ms - 40.0).abs() < 1e-9, "{path:?}");
        }
        other => panic!("{other:?}"),
    }

    let f = client
        .function_hint(&FunctionRequest {
            near: "sat3".into(),
            cpu: 2.0,
            memory_mb: 1024.0,
            ..FunctionRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(f.0.node, "sat3");

    let slos: Slos = [("detect".to_string(), 150.0)].into_iter().collect();
    client.set_slos("wildfire", &slos).await.unwrap();
    assert_eq!(client.slos("wildfire").await.unwrap(), slos);
    assert!(client.slos("nope").await.is_err());

    // Malformed and wrong requests are 4xx.
    let http = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let r = http.post(format!("http://{addr}/v1/hints/storage")).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let mut bad = request(1, 1.0);
    bad.consumer = "mars".into();
    match client.storage_hint(&bad).await {
        Err(Error::UnknownNode(node)) => assert_eq!(node, "mars"),
        other => panic!("{other:?}"),
    }
    let r = http.put(format!("http://{addr}/v1/slos/w")).json(&serde_json::json!({"s": -5.0})).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // The service goes away: the client elects on its cache, same answer.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (again, src) = client.storage_hint(&request(100_000, 100.0)).await.unwrap();
    assert_eq!(src, HintSource::LocalCache);
    assert_eq!(again, d);

    // A client that never reached a service and has no cache says so.
    let orphan = PlacementClient::new(
        &format!("http://{addr}"),
        &databelt_net::auth::Credentials::development(),
        Duration::from_millis(200),
    )
    .unwrap();
    assert!(matches!(orphan.storage_hint(&request(1, 1.0)).await, Err(Error::Unavailable(_))));
    orphan.seed(testbed());
    assert_eq!(orphan.storage_hint(&request(100_000, 100.0)).await.unwrap().1, HintSource::LocalCache);
}

/// A hung placement service (it accepts connections and never answers):
/// the first hint pays the client's timeout and elects locally; the breaker
/// then skips the service, so the next hints are local at once; after the
/// cooldown the service is asked again.
#[tokio::test]
async fn a_hung_service_costs_one_timeout_per_cooldown_not_one_per_hint() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hung.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            let (c, _) = hung.accept().await.unwrap();
            conns.push(c); // never read, never answered
        }
    });
    let client = PlacementClient::new(
        &format!("http://{addr}"),
        &databelt_net::auth::Credentials::development(),
        Duration::from_millis(300),
    )
    .unwrap()
    .with_breaker_cooldown(Duration::from_millis(800));
    client.seed(testbed());
    let t = std::time::Instant::now();
    let (_, src) = client.storage_hint(&request(1_000, 1000.0)).await.unwrap();
    assert_eq!(src, HintSource::LocalCache);
    assert!(t.elapsed() >= Duration::from_millis(250), "the first hint waited for the service");
    assert!(client.breaker_open());
    let t = std::time::Instant::now();
    for _ in 0..20 {
        let (_, src) = client.storage_hint(&request(1_000, 1000.0)).await.unwrap();
        assert_eq!(src, HintSource::LocalCache);
        let (_, src) =
            client.function_hint(&FunctionRequest { near: "sat2".into(), ..FunctionRequest::default() }).await.unwrap();
        assert_eq!(src, HintSource::LocalCache);
    }
    assert!(t.elapsed() < Duration::from_millis(200), "40 hints with the breaker open took {:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!client.breaker_open(), "half-open after the cooldown: the next hint asks the service again");
    held.abort();
}

/// The kube-scheduler extender verbs over HTTP, with the request bodies
/// kube-scheduler sends (the fixtures of the placement crate's tests).
#[tokio::test]
async fn kube_scheduler_extender_verbs_answer_over_http() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../placement/tests/fixtures/kube");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap();
    let service = PlacementService::new(Topology::from_toml(&read("scenario.toml")).unwrap()).unwrap();
    let (addr, stop) =
        service.spawn("127.0.0.1:0".parse().unwrap(), databelt_net::auth::ServerSecurity::development()).await.unwrap();
    let http = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let post = |verb: &'static str, body: String| {
        http.post(format!("http://{addr}/v1/kube/{verb}?t_ms=0"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = post("filter", read("filter-nodes-v1.29.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> =
        body["nodes"]["items"].as_array().unwrap().iter().map(|n| n["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["leo-node-a", "gs-1", "cloud-worker-0"], "{body}");
    assert!(body["failedNodes"]["leo-node-b"].as_str().unwrap().contains("temperature"), "{body}");

    let r = post("prioritize", read("filter-nodenames-cache-capable.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let scores = body.as_array().unwrap();
    assert_eq!(scores.len(), 5, "{body}");
    assert!(scores.iter().all(|h| (0..=10).contains(&h["score"].as_i64().unwrap())), "{body}");

    // Malformed bodies and requests without a pod are 400 with the shared
    // error body.
    for bad in ["{not json", "{}", r#"{"pod": {"metadata": {"name": "p"}}}"#] {
        let r = post("filter", bad.to_string()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"], "bad-input", "{bad}: {e}");
    }
    stop.send(()).unwrap();
}

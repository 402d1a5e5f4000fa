//! Embedding: an existing wasmtime runtime, with its own engine and its own
//! Store data, mounts the Databelt interfaces with `add_to_linker` and runs a
//! Databelt function (the code docs/embedding.md walks through).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::sync::Arc;

use databelt_host::bindings::generated::FunctionPre;
use databelt_host::state::{MemoryStore, StateTier};
use databelt_host::{DatabeltCtx, DatabeltCtxView, DatabeltView, Invocation, StateLimits};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The embedder's own Store data: WASI, Databelt, and something of its own.
struct MyRuntimeState {
    wasi: WasiCtx,
    table: ResourceTable,
    databelt: DatabeltCtx,
    request_count: u32,
}

impl WasiView for MyRuntimeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl DatabeltView for MyRuntimeState {
    fn databelt(&mut self) -> DatabeltCtxView<'_> {
        DatabeltCtxView { ctx: &mut self.databelt, table: &mut self.table }
    }
}

#[test]
fn a_foreign_runtime_mounts_databelt_on_its_own_store() {
    let engine = Engine::default();
    let mut linker: Linker<MyRuntimeState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    databelt_host::add_to_linker(&mut linker).unwrap();

    let component = Component::from_file(&engine, common::guest("hello_counter")).unwrap();
    let pre = FunctionPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let tier = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());

    for (n, name) in ["ada", "ada", "grace"].into_iter().enumerate() {
        let invocation = Invocation {
            run_id: format!("embedded-{n}"),
            function: "hello".into(),
            step: 0,
            node_id: "my-runtime".into(),
        };
        let state = MyRuntimeState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            databelt: DatabeltCtx::new(tier.clone(), invocation),
            request_count: n as u32,
        };
        let mut store = Store::new(&engine, state);
        let function = pre.instantiate(&mut store).unwrap();
        let input = postcard::to_stdvec(&(name.to_string(),)).unwrap();
        let out = function.databelt_state_handler().call_handle(&mut store, &input).unwrap().unwrap();
        // Greeting { message, visits, total, first_seen_run } in postcard.
        let (message, visits, total, first_seen_run): (String, i64, i64, String) = postcard::from_bytes(&out).unwrap();
        assert!(message.contains(name) && message.contains("my-runtime"), "{message}");
        assert_eq!(total, n as i64 + 1);
        assert_eq!(visits, if name == "ada" { n as i64 + 1 } else { 1 });
        assert_eq!(first_seen_run, if name == "ada" { "embedded-0" } else { "embedded-2" });
        assert_eq!(store.data().request_count, n as u32, "the embedder's own data is untouched");
    }
    // The state the function wrote is in the embedder's tier.
    let total = tier.get("hello-counter", "total").unwrap().unwrap();
    assert_eq!(databelt_host::state::decode_counter(&total).unwrap(), 3);
}

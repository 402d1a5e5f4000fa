//! Components of the standard WASI worlds, run on the host next to
//! Databelt functions and on the same state tier:
//!
//! - `wasi:cli/command` ([`Host::run_command`]): run once; the command's
//!   exit code is returned.
//! - `wasi:http/proxy` ([`Host::deploy_app`], [`Host::handle_http`], with
//!   the `http-apps` feature): deployed under a name, one instance per
//!   request (wasmtime-wasi-http).
//!
//! Both get `wasi:keyvalue` (both drafts) and `databelt:state`, with the
//! host's limits: memory, deadline, instance slots. Outgoing HTTP requests
//! from an app are refused (`HTTP-request-denied`): a node in orbit does not
//! let a component open arbitrary connections.

use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use crate::error::{Error, Result};
use crate::host::{Host, InvocationState};

#[cfg(feature = "http-apps")]
pub use http_apps::AppInfo;
#[cfg(feature = "http-apps")]
pub(crate) use http_apps::{APP_SUFFIX, App, NoOutgoing};

/// Which standard world a component's exports make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// Exports `databelt:state/handler`: a Databelt function.
    Function,
    /// Exports `wasi:http/incoming-handler`: an HTTP app.
    HttpProxy,
    /// Exports `wasi:cli/run`: a command.
    Command,
    /// None of these.
    Other,
}

/// Classify `component` by its exports.
pub fn component_kind(engine: &wasmtime::Engine, component: &Component) -> ComponentKind {
    let ty = component.component_type();
    let mut kind = ComponentKind::Other;
    for (name, _) in ty.exports(engine) {
        let base = name.split('@').next().unwrap_or(name);
        match base {
            "databelt:state/handler" => return ComponentKind::Function,
            "wasi:http/incoming-handler" => kind = ComponentKind::HttpProxy,
            "wasi:cli/run" if kind == ComponentKind::Other => kind = ComponentKind::Command,
            _ => {}
        }
    }
    kind
}

impl Host {
    /// Which world a component is (compiling it with this host's engine).
    pub fn component_kind(&self, bytes: &[u8]) -> Result<ComponentKind> {
        Ok(component_kind(self.engine(), &self.compile_component(bytes)?))
    }

    /// Run a `wasi:cli/command` component once with `args` (the program
    /// name first), its stdout and stderr inherited when the host's
    /// `inherit_stdio` is on; returns its exit code (0 when `run` returned
    /// ok, 1 when it returned an error, the code it passed to `exit`
    /// otherwise). The host's memory limit and deadline apply.
    pub fn run_command(&self, bytes: &[u8], args: &[String]) -> Result<i32> {
        let component = self.compile_component(bytes)?;
        if component_kind(self.engine(), &component) != ComponentKind::Command {
            return Err(Error::WrongWorld("the component does not export `wasi:cli/run` (not a command)".into()));
        }
        let instance_pre =
            self.linker().instantiate_pre(&component).map_err(|e| Error::WrongWorld(crate::host::one_line(&e)))?;
        let pre = CommandPre::new(instance_pre).map_err(|e| Error::WrongWorld(crate::host::one_line(&e)))?;
        let slot = self.slots().acquire()?;
        let result = (|| {
            let mut store = self.app_store("command", args)?;
            let command = pre.instantiate(&mut store).map_err(|e| self.classify(&store, e))?;
            match command.wasi_cli_run().call_run(&mut store) {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(e) => match e.downcast_ref::<I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(self.classify(&store, e)),
                },
            }
        })();
        drop(slot);
        result
    }

    /// A Store for one command or app instance.
    fn app_store(&self, name: &str, args: &[String]) -> Result<Store<InvocationState>> {
        let invocation = crate::bindings::Invocation {
            run_id: self.fresh_run_id().to_string(),
            function: name.to_string(),
            step: 0,
            node_id: self.config().node_id.clone(),
        };
        Ok(self.new_store(invocation, self.state().clone(), None, None, self.config().deadline_ms, args))
    }

    fn compile_component(&self, bytes: &[u8]) -> Result<Component> {
        crate::host::check_component_bytes(bytes)?;
        Component::new(self.engine(), bytes).map_err(|e| Error::InvalidComponent(crate::host::one_line(&e)))
    }
}

/// `wasi:http/proxy` apps (the `http-apps` feature).
#[cfg(feature = "http-apps")]
mod http_apps {
    use std::sync::Arc;

    use wasmtime_wasi_http::p2::bindings::ProxyPre;
    use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
    use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
    use wasmtime_wasi_http::{Error as HttpError, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

    use super::{ComponentKind, component_kind};
    use crate::error::{Error, Result};
    use crate::host::{Host, InvocationState};
    use databelt_types::FunctionName;

    /// Refuses every outgoing request of an app.
    pub(crate) struct NoOutgoing;

    impl WasiHttpHooks for NoOutgoing {
        fn send_request(
            &mut self,
            _request: http::Request<WasiBody>,
            _options: Option<wasmtime_wasi_http::RequestOptions>,
            _fut: Box<dyn Future<Output = std::result::Result<(), HttpError>> + Send>,
        ) -> Box<dyn Future<Output = std::result::Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
        {
            Box::new(async { Err(HttpError::HttpRequestDenied) })
        }
    }

    type IoFuture = Box<dyn Future<Output = std::result::Result<(), HttpError>> + Send>;

    impl WasiHttpView for InvocationState {
        fn http(&mut self) -> WasiHttpCtxView<'_> {
            WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
        }
    }

    /// A deployed HTTP app.
    pub(crate) struct App {
        pub(crate) pre: ProxyPre<InvocationState>,
    }

    /// A deployed HTTP app as the host lists it.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct AppInfo {
        /// The name it is deployed under.
        pub name: String,
    }

    impl Host {
        /// Deploy a `wasi:http/proxy` component as app `name` (replacing one of
        /// that name). It is kept in the functions directory, if the host has
        /// one, and redeployed at start.
        pub fn deploy_app(&self, name: &str, bytes: &[u8]) -> Result<AppInfo> {
            self.load_app(name, bytes)?;
            if let Some(dir) = &self.config().functions_dir {
                let keep = || -> std::io::Result<()> {
                    std::fs::create_dir_all(dir)?;
                    crate::host::write_whole(&dir.join(format!("{name}.{APP_SUFFIX}")), bytes)
                };
                keep().map_err(|e| Error::storage_in(format!("cannot keep app `{name}` in {}", dir.display()), e))?;
            }
            Ok(AppInfo { name: name.to_string() })
        }

        pub(crate) fn load_app(&self, name: &str, bytes: &[u8]) -> Result<()> {
            FunctionName::new(name)?;
            let component = self.compile_component(bytes)?;
            match component_kind(self.engine(), &component) {
                ComponentKind::HttpProxy => {}
                ComponentKind::Function => {
                    return Err(Error::WrongWorld(
                        "this is a Databelt function: deploy it with PUT /functions/{name}, not as an app".into(),
                    ));
                }
                _ => {
                    return Err(Error::WrongWorld(
                        "the component does not export `wasi:http/incoming-handler` (not a wasi:http/proxy app)".into(),
                    ));
                }
            }
            let instance_pre = self
                .http_linker()
                .instantiate_pre(&component)
                .map_err(|e| Error::WrongWorld(crate::host::one_line(&e)))?;
            let pre = ProxyPre::new(instance_pre).map_err(|e| Error::WrongWorld(crate::host::one_line(&e)))?;
            self.apps()
                .write()
                .map_err(|_| Error::Runtime("app registry lock poisoned".into()))?
                .insert(name.to_string(), Arc::new(App { pre }));
            Ok(())
        }

        /// Remove app `name`; returns whether it existed.
        pub fn undeploy_app(&self, name: &str) -> Result<bool> {
            if let Some(dir) = &self.config().functions_dir {
                let _ = std::fs::remove_file(dir.join(format!("{name}.{APP_SUFFIX}")));
            }
            let mut apps = self.apps().write().map_err(|_| Error::Runtime("app registry lock poisoned".into()))?;
            Ok(apps.remove(name).is_some())
        }

        /// The deployed apps, sorted by name.
        pub fn apps_list(&self) -> Vec<AppInfo> {
            let apps = match self.apps().read() {
                Ok(a) => a,
                Err(p) => p.into_inner(),
            };
            let mut v: Vec<AppInfo> = apps.keys().map(|name| AppInfo { name: name.clone() }).collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        }

        /// Serve one request with app `name`: a fresh instance, the host's
        /// memory limit, deadline and instance slots. The app sees the request
        /// as it came (the caller strips any routing prefix from the path).
        pub async fn handle_http<B>(
            &self,
            name: &str,
            req: hyper::Request<B>,
        ) -> Result<hyper::Response<HyperOutgoingBody>>
        where
            B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
            B::Error: std::fmt::Display,
        {
            use http_body_util::BodyExt;
            let req =
                req.map(|b| b.map_err(|e| HttpError::InternalError(Some(format!("reading the request body: {e}")))));
            let app = {
                let apps = self.apps().read().map_err(|_| Error::Runtime("app registry lock poisoned".into()))?;
                apps.get(name).cloned().ok_or_else(|| Error::UnknownFunction(format!("app `{name}`")))?
            };
            let slot = self.slots().acquire_async().await?;
            let mut store = self.app_store(name, &[])?;
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(runtime)?;
            let out = store.data_mut().http().new_response_outparam(sender).map_err(runtime)?;
            let host = self.clone();
            // The instance runs on its own task so that it can go on writing
            // the body after the head is sent; the slot goes with it.
            let task = tokio::spawn(async move {
                let _slot = slot;
                let proxy = app.pre.instantiate_async(&mut store).await.map_err(|e| host.classify(&store, e))?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
                    .map_err(|e| host.classify(&store, e))
            });
            match receiver.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(code)) => {
                    Err(Error::Function(format!("the app answered with an error: {}", error_code_text(&code))))
                }
                Err(_) => match task.await {
                    Ok(Ok(())) => Err(Error::Function("the app returned without setting a response".into())),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Error::Runtime(format!("the app's task failed: {e}"))),
                },
            }
        }
    }

    /// File suffix of an app kept in the functions directory.
    pub(crate) const APP_SUFFIX: &str = "app.wasm";

    fn runtime(e: impl std::fmt::Display) -> Error {
        Error::Runtime(e.to_string())
    }

    fn error_code_text(code: &ErrorCode) -> String {
        format!("{code:?}")
    }
}

//! Who may call what, on every Databelt server.
//!
//! A caller proves who it is with a node certificate (mutual TLS, see
//! [`crate::tls`]) or a bearer token (`authorization: Bearer <secret>`), or
//! both. [`need`] is the one table of what each route needs:
//!
//! | route | needs |
//! |---|---|
//! | `GET /healthz` | nothing |
//! | `GET /functions`, `GET /functions/{name}` | `read` |
//! | `PUT`/`DELETE /functions/{name}` | `admin` |
//! | `POST /functions/{name}/invoke` | `invoke` (all, or that function) |
//! | `GET /apps` | `read` |
//! | `PUT`/`DELETE /apps/{name}` | `admin` |
//! | any method, `/http/{name}/...` | `invoke` (all, or that app) |
//! | `GET /metrics` | a node, or `read` |
//! | `/state/...` (look at and fix function state) | `admin` |
//! | `/peer/v1/...` | a node of the topology |
//! | `POST /workflow/v1/step`, `POST /workflow/v1/warm`, `DELETE /workflow/v1/runs/{id}` | a node, or `invoke` |
//! | `GET /workflow/v1/runs` | `admin` |
//! | `GET /v1/topology`, `GET /v1/slos/{workflow}` | a node, or `read` |
//! | `POST /v1/hints/...` | a node, or `invoke` |
//! | `POST /v1/kube/{filter,prioritize}` (kube-scheduler extender) | a member certificate, or `read` |
//! | `PUT /v1/slos/{workflow}` | `admin` |
//! | anything else | `admin` |
//!
//! `admin` implies `invoke` and `read`; `invoke` implies `read`. No or an
//! unknown token, and no node certificate where one is needed: 401
//! (`unauthenticated`). A valid caller without the permission: 403
//! (`access-denied`). Either way the request is refused before its handler
//! runs, so nothing changes.
//!
//! Tokens are kept as SHA-256 digests in a token file ([`TokenFile`]); the
//! secret is shown once, when it is made. [`Access::development`] turns all
//! of this off — only for the explicit development flag.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use databelt_host::{Error, ErrorKind, Result};
use databelt_types::{FunctionName, NodeId};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::http::ApiError;
use crate::tls::{Identity, Members};

/// Header in which a member names the node it sends for; it must match the
/// node its certificate names.
pub const NODE_HEADER: &str = "x-databelt-node";

/// A permission a bearer token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Deploy and delete functions, set SLOs, list runs; implies the others.
    Admin,
    /// Invoke functions (all, or those the token names) and run workflows;
    /// implies `read`.
    Invoke,
    /// List and describe functions, read the topology and SLOs.
    Read,
}

/// One token in a token file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for people and logs (never the secret).
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// With `invoke`: only these functions (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionName>>,
}

/// A token file (TOML): `[[token]]` tables.
///
/// ```toml
/// [[token]]
/// name = "admin"
/// sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// permissions = ["admin"]
///
/// [[token]]
/// name = "alarm-only"
/// sha256 = "..."
/// permissions = ["invoke"]
/// functions = ["wildfire-alarm"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The tokens.
    #[serde(rename = "token", default)]
    pub tokens: Vec<TokenEntry>,
}

impl TokenFile {
    /// Parse a token file.
    pub fn parse(text: &str) -> Result<TokenFile> {
        let file: TokenFile = toml::from_str(text).map_err(|e| Error::Config(format!("token file: {e}")))?;
        for t in &file.tokens {
            if t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
                return Err(Error::Config(format!("token `{}`: sha256 must be 64 hex digits", t.name)));
            }
            if t.permissions.is_empty() {
                return Err(Error::Config(format!("token `{}` has no permissions", t.name)));
            }
        }
        Ok(file)
    }

    /// Read and parse the token file at `path`.
    pub fn load(path: &Path) -> Result<TokenFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the token file {}: {e}", path.display())))?;
        TokenFile::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The file as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Runtime(format!("token file: {e}")))
    }

    /// Add a token named `name` with `permissions`; returns its secret
    /// (shown once: the file keeps only its digest).
    pub fn add(&mut self, name: &str, permissions: Vec<Permission>, functions: Option<Vec<FunctionName>>) -> String {
        let secret = new_secret();
        self.tokens.push(TokenEntry { name: name.into(), sha256: digest(&secret), permissions, functions });
        secret
    }
}

/// A fresh token secret: `dbt_` and 64 hex digits (256 random bits).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("dbt_{}", hex::encode(bytes))
}

/// The SHA-256 digest (hex) of `secret`, as a token file keeps it.
pub fn digest(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Write `contents` to `path`, readable by its owner only (0600 on Unix),
/// replacing what was there.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::Config(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name.
    pub name: String,
    permissions: BTreeSet<Permission>,
    functions: Option<BTreeSet<FunctionName>>,
}

impl Grant {
    fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&Permission::Admin)
            || self.permissions.contains(&p)
            || (p == Permission::Read && self.permissions.contains(&Permission::Invoke))
    }

    /// Whether it may invoke `function` (`None`: some function).
    pub fn may_invoke(&self, function: Option<&str>) -> bool {
        if self.permissions.contains(&Permission::Admin) {
            return true;
        }
        if !self.permissions.contains(&Permission::Invoke) {
            return false;
        }
        match (&self.functions, function) {
            (None, _) | (Some(_), None) => true,
            (Some(allowed), Some(f)) => allowed.iter().any(|a| a.as_str() == f),
        }
    }
}

/// Who is calling, as proven by its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The node its certificate names, when it is a node of the topology.
    pub node: Option<NodeId>,
    /// The placement service (its certificate says so).
    pub placement: bool,
    /// What its bearer token grants.
    pub grant: Option<Grant>,
    /// Authentication is off (development flag): it may do anything.
    pub development: bool,
}

impl Caller {
    /// Whether it may invoke `function` (`None`: some function): a node, or
    /// a token with `invoke` for it.
    pub fn may_invoke(&self, function: Option<&str>) -> bool {
        self.development || self.node.is_some() || self.grant.as_ref().is_some_and(|g| g.may_invoke(function))
    }

    fn satisfies(&self, need: &Need) -> bool {
        if self.development {
            return true;
        }
        let grant = |p| self.grant.as_ref().is_some_and(|g| g.has(p));
        match need {
            Need::Nothing => true,
            Need::Permission(p) => grant(*p),
            Need::Invoke(f) => self.grant.as_ref().is_some_and(|g| g.may_invoke(f.as_deref())),
            Need::Node => self.node.is_some() || self.placement,
            Need::NodeOr(other) => self.node.is_some() || self.placement || self.satisfies(other),
        }
    }

    fn proven(&self) -> bool {
        self.development || self.node.is_some() || self.placement || self.grant.is_some()
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (health checks).
    Nothing,
    /// A token with this permission.
    Permission(Permission),
    /// A token that may invoke this function (`None`: some function).
    Invoke(Option<String>),
    /// A member's certificate (node of the topology, or the placement
    /// service).
    Node,
    /// A member's certificate, or what the inner need says.
    NodeOr(Box<Need>),
}

/// What `method path` needs: the table in this module's documentation.
pub fn need(method: &Method, path: &str) -> Need {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = || Need::Permission(Permission::Read);
    let admin = Need::Permission(Permission::Admin);
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["healthz"]) => Need::Nothing,
        ("GET", ["functions"]) | ("GET", ["functions", _]) | ("GET", ["apps"]) => read(),
        (_, ["http", name, ..]) => Need::Invoke(Some(percent_decode(name).unwrap_or_else(|| (*name).to_string()))),
        ("GET", ["metrics"]) => Need::NodeOr(Box::new(read())),
        ("POST", ["functions", name, "invoke"]) => {
            Need::Invoke(Some(percent_decode(name).unwrap_or_else(|| (*name).to_string())))
        }
        (_, ["peer", "v1", ..]) => Need::Node,
        ("POST", ["workflow", "v1", "step" | "warm"]) | ("DELETE", ["workflow", "v1", "runs", _]) => {
            Need::NodeOr(Box::new(Need::Invoke(None)))
        }
        ("POST", ["workflow", "v1", "deliver"]) => Need::Node,
        ("POST", ["workflows", _, "runs"]) => Need::Invoke(None),
        ("GET", ["runs"]) | ("GET", ["runs", _]) | ("GET", ["replicas", _, _]) => read(),
        ("GET", ["v1", "topology"]) | ("GET", ["v1", "slos", _]) => Need::NodeOr(Box::new(read())),
        ("POST", ["v1", "hints", _]) => Need::NodeOr(Box::new(Need::Invoke(None))),
        // kube-scheduler sends no token: it presents a member certificate
        // (docs/kubernetes.md); the verbs only read the scenario.
        ("POST", ["v1", "kube", "filter" | "prioritize"]) => Need::NodeOr(Box::new(read())),
        _ => admin,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The member identity a request's connection proved (set by the accept
/// loop for every request of a TLS connection with a client certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionIdentity(pub Option<Identity>);

enum Policy {
    Development,
    Enforced(HashMap<String, Grant>),
}

/// A server's access policy: its tokens and the topology's members.
#[derive(Clone)]
pub struct Access {
    policy: Arc<Policy>,
    members: Members,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.policy {
            Policy::Development => f.write_str("Access::development"),
            Policy::Enforced(t) => write!(f, "Access({} tokens)", t.len()),
        }
    }
}

impl Access {
    /// No authentication at all: every caller may do anything. Only for
    /// the explicit development flag.
    pub fn development() -> Access {
        Access { policy: Arc::new(Policy::Development), members: Members::default() }
    }

    /// Tokens from `file`; node certificates of `members`.
    pub fn enforced(file: &TokenFile, members: Members) -> Access {
        let tokens = file
            .tokens
            .iter()
            .map(|t| {
                let grant = Grant {
                    name: t.name.clone(),
                    permissions: t.permissions.iter().copied().collect(),
                    functions: t.functions.as_ref().map(|f| f.iter().cloned().collect()),
                };
                (t.sha256.to_ascii_lowercase(), grant)
            })
            .collect();
        Access { policy: Arc::new(Policy::Enforced(tokens)), members }
    }

    /// Whether authentication is off.
    pub fn is_development(&self) -> bool {
        matches!(*self.policy, Policy::Development)
    }

    /// The caller of a request with `headers` on a connection that proved
    /// `connection`. A token that is present but unknown or malformed is an
    /// error even when a certificate would do; so is a certificate for a
    /// node that is not in the topology, or a node header that names
    /// another node than the certificate.
    pub fn authenticate(&self, headers: &HeaderMap, connection: &ConnectionIdentity) -> Result<Caller> {
        let tokens = match &*self.policy {
            Policy::Development => return Ok(Caller { development: true, ..Caller::default() }),
            Policy::Enforced(tokens) => tokens,
        };
        let mut caller = Caller::default();
        match &connection.0 {
            Some(Identity::Node(id)) => {
                if !self.members.admits(id) {
                    return Err(Error::AccessDenied(format!(
                        "the client certificate is for node `{id}`, which is not in the topology"
                    )));
                }
                caller.node = Some(id.clone());
            }
            Some(Identity::Placement) => caller.placement = true,
            None => {}
        }
        if let Some(claimed) = headers.get(NODE_HEADER) {
            let claimed = claimed.to_str().unwrap_or("(not UTF-8)");
            match &caller.node {
                Some(id) if id.as_str() == claimed => {}
                Some(id) => {
                    return Err(Error::AccessDenied(format!(
                        "the request claims node `{claimed}` but its certificate is for node `{id}`"
                    )));
                }
                None => {
                    return Err(Error::Unauthenticated(format!(
                        "the request claims node `{claimed}` without a node certificate"
                    )));
                }
            }
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let secret = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Error::Unauthenticated("the authorization header is not `Bearer <token>`".into()))?;
            let grant = tokens
                .get(&digest(secret.trim()))
                .ok_or_else(|| Error::Unauthenticated("unknown bearer token".into()))?;
            caller.grant = Some(grant.clone());
        }
        Ok(caller)
    }

    /// Whether `caller` may make a request that needs `need`: `Ok`, or the
    /// error to answer with (401 when it proved nothing, 403 otherwise).
    pub fn authorize(caller: &Caller, need: &Need) -> Result<()> {
        if caller.satisfies(need) {
            return Ok(());
        }
        let what = match need {
            Need::Nothing => "nothing",
            Need::Permission(Permission::Admin) => "the `admin` permission",
            Need::Permission(Permission::Invoke) | Need::Invoke(_) => "the `invoke` permission for this function",
            Need::Permission(Permission::Read) => "the `read` permission",
            Need::Node => "a node certificate of the continuum",
            Need::NodeOr(_) => "a node certificate or a token with the permission",
        };
        if caller.proven() {
            let who = match (&caller.node, &caller.grant) {
                (_, Some(g)) => format!("token `{}`", g.name),
                (Some(n), None) => format!("node `{n}`"),
                (None, None) => "the placement service".into(),
            };
            Err(Error::AccessDenied(format!("{who} lacks {what}")))
        } else {
            Err(Error::Unauthenticated(format!("this request needs {what}: pass `authorization: Bearer <token>`")))
        }
    }
}

/// Middleware on every router: authenticate the caller, check the route's
/// [`need`], and hand the [`Caller`] to the handler as an extension.
pub async fn authorize(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let connection = request.extensions().get::<ConnectionIdentity>().cloned().unwrap_or_default();
    let need = need(request.method(), request.uri().path());
    let caller = match access
        .authenticate(request.headers(), &connection)
        .and_then(|caller| Access::authorize(&caller, &need).map(|()| caller))
    {
        Ok(caller) => caller,
        Err(e) => return refuse(e),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn refuse(e: Error) -> Response {
    let kind = e.kind();
    tracing::info!(error = %e, "request refused");
    let mut answer = ApiError::from(e).into_response();
    if kind == ErrorKind::Unauthenticated {
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    answer
}

/// What a server enforces: TLS (which lets callers prove a node identity)
/// and who may call what.
#[derive(Clone, Debug)]
pub struct ServerSecurity {
    /// The server's TLS; `None`: plain TCP (no caller can prove a node
    /// identity, so peer routes are closed unless `access` is development).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Tokens and members.
    pub access: Access,
}

impl ServerSecurity {
    /// Plain TCP and no authentication: only for the explicit development
    /// flag and for tests of other concerns.
    pub fn development() -> ServerSecurity {
        ServerSecurity { tls: None, access: Access::development() }
    }
}

/// What a client presents to Databelt servers: TLS (its member
/// certificate, if it is a member, and the CA it trusts), a bearer token,
/// and the node it sends for.
#[derive(Clone, Default)]
pub struct Credentials {
    /// TLS; `None`: plain `http://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The bearer token sent with every request.
    pub token: Option<String>,
    /// The node this client sends for ([`NODE_HEADER`]); its certificate
    /// must name it.
    pub node: Option<NodeId>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "(secret)"))
            .field("node", &self.node)
            .finish()
    }
}

impl Credentials {
    /// Plain HTTP, no token: for servers in development mode.
    pub fn development() -> Credentials {
        Credentials::default()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The base URL of the server at `address` (`host:port`).
    pub fn base_url(&self, address: &str) -> String {
        format!("{}://{address}", self.scheme())
    }

    /// A reqwest client builder with this TLS and these headers.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder> {
        crate::tls::install_default_provider();
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        if let Some(node) = &self.node {
            let v = HeaderValue::from_str(node.as_str()).map_err(|_| Error::Config("node id header".into()))?;
            headers.insert(NODE_HEADER, v);
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(tls) = &self.tls {
            builder = builder.tls_backend_preconfigured((**tls).clone()).https_only(true);
        }
        Ok(builder)
    }
}

/// A member's security (a host or the placement service): what its servers
/// enforce and what its clients present.
#[derive(Clone, Debug)]
pub struct MemberSecurity {
    /// Its servers'.
    pub server: ServerSecurity,
    /// Its clients' (peer, placement and step clients).
    pub client: Credentials,
}

impl MemberSecurity {
    /// Plain TCP, no authentication: the development flag only.
    pub fn development() -> MemberSecurity {
        MemberSecurity { server: ServerSecurity::development(), client: Credentials::development() }
    }

    /// Mutual TLS with `tls`, tokens from `tokens`, node certificates of
    /// `members` (the same set `tls` was made with).
    pub fn new(tls: &crate::tls::MemberTls, tokens: &TokenFile, members: Members) -> MemberSecurity {
        let node = match &tls.identity {
            Identity::Node(id) => Some(id.clone()),
            Identity::Placement => None,
        };
        MemberSecurity {
            server: ServerSecurity { tls: Some(tls.server.clone()), access: Access::enforced(tokens, members) },
            client: Credentials { tls: Some(tls.client.clone()), token: None, node },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (TokenFile, String, String, String) {
        let mut f = TokenFile::default();
        let admin = f.add("admin", vec![Permission::Admin], None);
        let alarm = f.add("alarm", vec![Permission::Invoke], Some(vec!["alarm".parse().unwrap_or_else(|_| panic!())]));
        let reader = f.add("reader", vec![Permission::Read], None);
        (f, admin, alarm, reader)
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or_else(|_| panic!()));
        h
    }

    fn check(access: &Access, h: &HeaderMap, c: &ConnectionIdentity, m: Method, path: &str) -> Option<ErrorKind> {
        access.authenticate(h, c).and_then(|caller| Access::authorize(&caller, &need(&m, path))).err().map(|e| e.kind())
    }

    #[test]
    fn permissions_decide_every_route() {
        let (f, admin, alarm, reader) = file();
        let a = Access::enforced(&f, Members::of(["sat1"]));
        let none = ConnectionIdentity::default();
        let no_token = HeaderMap::new();
        let u = Some(ErrorKind::Unauthenticated);
        let d = Some(ErrorKind::AccessDenied);
        assert_eq!(check(&a, &no_token, &none, Method::GET, "/healthz"), None);
        assert_eq!(check(&a, &no_token, &none, Method::GET, "/functions"), u);
        assert_eq!(check(&a, &headers("dbt_wrong"), &none, Method::GET, "/functions"), u);
        assert_eq!(check(&a, &headers(&reader), &none, Method::GET, "/functions"), None);
        assert_eq!(check(&a, &headers(&reader), &none, Method::PUT, "/functions/x"), d);
        assert_eq!(check(&a, &headers(&reader), &none, Method::POST, "/functions/alarm/invoke"), d);
        assert_eq!(check(&a, &headers(&alarm), &none, Method::POST, "/functions/alarm/invoke"), None);
        assert_eq!(check(&a, &headers(&alarm), &none, Method::POST, "/functions/other/invoke"), d);
        assert_eq!(check(&a, &headers(&alarm), &none, Method::DELETE, "/functions/alarm"), d);
        assert_eq!(check(&a, &headers(&admin), &none, Method::DELETE, "/functions/alarm"), None);
        assert_eq!(check(&a, &headers(&admin), &none, Method::PUT, "/peer/v1/state/s/k"), d, "tokens are not nodes");
        assert_eq!(check(&a, &headers(&admin), &none, Method::GET, "/workflow/v1/runs"), None);
        assert_eq!(check(&a, &headers(&alarm), &none, Method::GET, "/workflow/v1/runs"), d);
        assert_eq!(check(&a, &headers(&alarm), &none, Method::POST, "/workflow/v1/warm"), None);
        assert_eq!(check(&a, &headers(&reader), &none, Method::POST, "/workflow/v1/warm"), d);
        assert_eq!(check(&a, &headers(&admin), &none, Method::PUT, "/v1/slos/wf"), None);
        assert_eq!(check(&a, &headers(&reader), &none, Method::PUT, "/v1/slos/wf"), d);
        assert_eq!(check(&a, &no_token, &none, Method::GET, "/no/such/route"), u);
        assert_eq!(check(&a, &no_token, &none, Method::POST, "/v1/kube/filter"), u, "no anonymous extender calls");
        assert_eq!(check(&a, &headers(&reader), &none, Method::POST, "/v1/kube/prioritize"), None);
        let placement = ConnectionIdentity(Some(Identity::Placement));
        assert_eq!(check(&a, &no_token, &placement, Method::POST, "/v1/kube/filter"), None, "a member certificate");
        assert_eq!(check(&a, &headers(&reader), &none, Method::POST, "/v1/kube/bind"), d, "no other verbs");
    }

    #[test]
    fn node_certificates_open_the_peer_routes_for_topology_nodes_only() {
        let (f, ..) = file();
        let a = Access::enforced(&f, Members::of(["sat1"]));
        let node = |id: &str| ConnectionIdentity(Some(Identity::Node(NodeId::new(id).unwrap_or_else(|_| panic!()))));
        let h = HeaderMap::new();
        assert_eq!(check(&a, &h, &node("sat1"), Method::PUT, "/peer/v1/state/s/k"), None);
        assert_eq!(check(&a, &h, &node("sat9"), Method::PUT, "/peer/v1/state/s/k"), Some(ErrorKind::AccessDenied));
        assert_eq!(check(&a, &h, &node("sat1"), Method::PUT, "/functions/f"), Some(ErrorKind::AccessDenied));
        let mut claims = HeaderMap::new();
        claims.insert(NODE_HEADER, HeaderValue::from_static("sat2"));
        assert_eq!(check(&a, &claims, &node("sat1"), Method::GET, "/peer/v1/state/s/k"), Some(ErrorKind::AccessDenied));
        claims.insert(NODE_HEADER, HeaderValue::from_static("sat1"));
        assert_eq!(check(&a, &claims, &node("sat1"), Method::GET, "/peer/v1/state/s/k"), None);
    }

    #[test]
    fn development_lets_everything_through() {
        let a = Access::development();
        assert_eq!(check(&a, &HeaderMap::new(), &ConnectionIdentity::default(), Method::PUT, "/functions/x"), None);
    }

    #[test]
    fn token_files_round_trip_and_refuse_garbage() {
        let (f, admin, ..) = file();
        let text = f.to_toml().unwrap_or_default();
        assert_eq!(TokenFile::parse(&text).ok(), Some(f));
        assert!(!text.contains(&admin), "the secret is never written");
        assert!(TokenFile::parse("[[token]]\nname='x'\nsha256='zz'\npermissions=['admin']\n").is_err());
        assert!(TokenFile::parse("[[token]]\nname='x'\nsha256='00'\npermissions=['root']\n").is_err());
        assert!(TokenFile::parse("bogus = 1\n").is_err());
    }
}

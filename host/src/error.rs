//! The crate's one error type, shared by the network layer (`databelt-net`).
//! Its [`Error::kind`] decides the kind string, the HTTP status and the WIT
//! error case alike ([`ErrorKind`]).

use std::fmt;
use std::sync::Arc;

pub use databelt_types::ErrorKind;
use databelt_types::NameError;

/// Every way a Databelt host operation can fail.
///
/// The first group mirrors the WIT `error` variant one to one (see
/// [`Error::kind`] and [`crate::ErrorKind::wit_case`]); the second group is about loading and running
/// components; the last about configuration and storage.
#[derive(Debug, thiserror::Error, Clone)]
pub enum Error {
    /// The scope name is not valid or the scope cannot be opened.
    #[error("no such scope: {0}")]
    NoSuchScope(String),
    /// The host's policy does not let the function use the scope.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The caller did not prove who it is (no or a wrong token, no node
    /// certificate).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A configured limit was hit; the text names the limit and its value.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A precondition (`if-not-exists`, counter encoding) did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The operation took longer than allowed.
    #[error("timeout: {0}")]
    Timeout(String),
    /// A step's transaction read state that another commit changed before it
    /// could commit; nothing was written, and running it again may succeed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The state tier cannot be reached now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A state operation failed for another reason.
    #[error("{0}")]
    Other(String),

    /// The bytes are not a WebAssembly binary, or not a valid one.
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// A core module was given where a component is required.
    #[error(
        "this is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` or `cargo component build`"
    )]
    CoreModule,
    /// The component does not target the `databelt:state/function` world.
    #[error("component does not implement the databelt:state/function world: {0}")]
    WrongWorld(String),
    /// No function is deployed under this name.
    #[error("no function named `{0}` is deployed")]
    UnknownFunction(String),
    /// No workflow (or run) is known under this name here; the text says which.
    #[error("{0}")]
    UnknownWorkflow(String),
    /// A name (function, run id, scope, step, node) that breaks its rule.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The input does not match the function's declared input type.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The guest trapped (panicked, hit `unreachable`, ...).
    #[error("function trapped: {0}")]
    Trap(String),
    /// The guest ran past the invocation deadline and was stopped.
    #[error("function exceeded its deadline of {0} ms and was stopped")]
    DeadlineExceeded(u64),
    /// The guest tried to grow its memory past the per-instance limit.
    #[error("function exceeded its memory limit of {0} bytes")]
    MemoryLimitExceeded(u64),
    /// The guest returned an error value from its handler.
    #[error("function returned an error: {0}")]
    Function(String),
    /// Too many workflow steps were chained by hand-offs.
    #[error("workflow exceeded the limit of {0} chained steps")]
    TooManySteps(u32),

    /// A workflow run failed; the text names the step and node.
    #[error("workflow failed: {0}")]
    Workflow(String),

    /// A workflow step failed on its node; `source` is why (its kind stays
    /// readable through [`Error::cause_kind`]).
    #[error("workflow failed: step `{step}` on node `{node}`: {source}")]
    StepFailed {
        /// The step.
        step: String,
        /// The node it ran on.
        node: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },

    /// Another node or service could not be reached, or broke off.
    #[error("{peer}: {source}")]
    Unreachable {
        /// Who (`peer 127.0.0.1:7001`, `placement service`, ...).
        peer: String,
        /// The transport's error.
        #[source]
        source: Cause,
    },
    /// Another node answered with an error; `kind` is the kind it reported
    /// (its error body's `error`), so a remote `precondition-failed` stays
    /// one here.
    #[error("{peer}: {message}")]
    Remote {
        /// Who answered.
        peer: String,
        /// The kind the remote side reported.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },

    /// A configuration value or file is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The durable store failed (I/O, corruption, ...).
    #[error("storage failure: {message}")]
    Storage {
        /// What failed, with the cause's text.
        message: String,
        /// The store's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Setting up the engine or an instance failed for an internal reason.
    #[error("runtime failure: {0}")]
    Runtime(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The underlying error of an [`Error`], kept for [`std::error::Error::source`]
/// (shared, so that [`Error`] stays `Clone`).
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keep `e` as a cause.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    /// The kind: decides the kind string, the HTTP status and the WIT case.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoSuchScope(_) => ErrorKind::NoSuchScope,
            Error::AccessDenied(_) => ErrorKind::AccessDenied,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Error::PreconditionFailed(_) => ErrorKind::PreconditionFailed,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_) | Error::Unreachable { .. } => ErrorKind::Unavailable,
            Error::Other(_) => ErrorKind::Other,
            Error::InvalidComponent(_) => ErrorKind::InvalidComponent,
            Error::CoreModule => ErrorKind::CoreModule,
            Error::WrongWorld(_) => ErrorKind::WrongWorld,
            Error::UnknownFunction(_) => ErrorKind::UnknownFunction,
            Error::UnknownWorkflow(_) => ErrorKind::UnknownWorkflow,
            Error::InvalidName(_) => ErrorKind::InvalidName,
            Error::BadInput(_) => ErrorKind::BadInput,
            Error::Trap(_) => ErrorKind::Trap,
            Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            Error::MemoryLimitExceeded(_) => ErrorKind::MemoryLimitExceeded,
            Error::Function(_) => ErrorKind::FunctionError,
            Error::TooManySteps(_) => ErrorKind::TooManySteps,
            Error::Workflow(_) => ErrorKind::Workflow,
            Error::Config(_) => ErrorKind::Config,
            Error::Storage { .. } => ErrorKind::Storage,
            Error::Runtime(_) => ErrorKind::Runtime,
            Error::StepFailed { .. } => ErrorKind::Workflow,
            Error::Remote { kind, .. } => *kind,
        }
    }

    /// The kind of the innermost Databelt error behind this one: for a failed
    /// workflow step, the kind of the step's own failure (a `quota-exceeded`
    /// on the node stays visible behind the `workflow` error).
    pub fn cause_kind(&self) -> ErrorKind {
        match self {
            Error::StepFailed { source, .. } => source.cause_kind(),
            other => other.kind(),
        }
    }

    /// Build an [`Error::QuotaExceeded`] for a size limit.
    pub fn over_limit(what: &str, actual: usize, limit: usize) -> Self {
        Error::QuotaExceeded(format!("{what} is {actual}; the limit is {limit}"))
    }

    /// Wrap a failure of the storage layer, keeping it as the source.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage { message: e.to_string(), source: Some(Cause::new(e)) }
    }

    /// A storage failure described by `context`, keeping `e` as the source.
    pub fn storage_in(context: impl fmt::Display, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage { message: format!("{context}: {e}"), source: Some(Cause::new(e)) }
    }

    /// A storage failure with no underlying error (a corrupt record, a
    /// poisoned lock).
    pub fn storage_msg(message: impl Into<String>) -> Self {
        Error::Storage { message: message.into(), source: None }
    }

    /// A node or service that could not be reached; `source` is kept.
    pub fn unreachable(peer: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Unreachable { peer: peer.into(), source: Cause::new(source) }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn causes_are_kept_as_sources() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::storage_in("cannot open x.redb", io);
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert_eq!(e.source().map(|s| s.to_string()), Some("disk on fire".to_string()));
        let e = Error::unreachable("peer a:1", std::io::Error::other("refused"));
        assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::Unavailable, "peer a:1: refused"));
        assert!(e.source().is_some());
    }

    #[test]
    fn a_failed_step_keeps_the_kind_of_its_cause() {
        let remote =
            Error::Remote { peer: "peer n1".into(), kind: ErrorKind::QuotaExceeded, message: "too big".into() };
        let e = Error::StepFailed { step: "a".into(), node: "n1".into(), source: Box::new(remote) };
        assert_eq!(e.kind(), ErrorKind::Workflow);
        assert_eq!(e.cause_kind(), ErrorKind::QuotaExceeded);
        assert_eq!(e.to_string(), "workflow failed: step `a` on node `n1`: peer n1: too big");
        assert_eq!(e.source().map(|s| s.to_string()), Some("peer n1: too big".to_string()));
    }

    #[test]
    fn every_kind_has_one_wit_case_and_one_status() {
        let cases = [
            (Error::PreconditionFailed(String::new()), 412),
            (Error::QuotaExceeded(String::new()), 413),
            (Error::DeadlineExceeded(5), 504),
            (Error::UnknownFunction(String::new()), 404),
        ];
        for (e, status) in cases {
            assert_eq!(e.kind().http_status(), status, "{e}");
        }
        assert_eq!(Error::DeadlineExceeded(5).kind().wit_case(), databelt_types::WitErrorCase::Timeout);
    }
}

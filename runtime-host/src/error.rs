//! The crate's one error type.

use std::fmt;

/// Every way a Databelt host operation can fail.
///
/// The first group mirrors the WIT `error` variant one to one (see
/// [`Error::to_wit`]); the second group is about loading and running
/// components; the last about configuration and storage.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The scope name is not valid or the scope cannot be opened.
    #[error("no such scope: {0}")]
    NoSuchScope(String),
    /// The host's policy does not let the function use the scope.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// A configured limit was hit; the text names the limit and its value.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A precondition (`if-not-exists`, counter encoding) did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The operation took longer than allowed.
    #[error("timeout: {0}")]
    Timeout(String),
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
    #[error("this is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` or `cargo component build`")]
    CoreModule,
    /// The component does not target the `databelt:state/function` world.
    #[error("component does not implement the databelt:state/function world: {0}")]
    WrongWorld(String),
    /// No function is deployed under this name.
    #[error("no function named `{0}` is deployed")]
    UnknownFunction(String),
    /// A function name that cannot be used.
    #[error("invalid function name `{0}`: use 1-64 ASCII letters, digits, `-` or `_`")]
    InvalidFunctionName(String),
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

    /// A configuration value or file is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The durable store failed (I/O, corruption, ...).
    #[error("storage failure: {0}")]
    Storage(String),
    /// Setting up the engine or an instance failed for an internal reason.
    #[error("runtime failure: {0}")]
    Runtime(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build an [`Error::QuotaExceeded`] for a size limit.
    pub fn over_limit(what: &str, actual: usize, limit: usize) -> Self {
        Error::QuotaExceeded(format!("{what} is {actual}; the limit is {limit}"))
    }

    /// Wrap any displayable failure of the storage layer.
    pub fn storage(e: impl fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}

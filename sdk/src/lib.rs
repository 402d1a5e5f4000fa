//! # Databelt function SDK
//!
//! The only dependency a Databelt function needs. Write a plain Rust function,
//! annotate it with [`function`], and build it as a WASI component:
//!
//! ```no_run
//! use databelt::{Context, Error, Scope};
//!
//! #[databelt::data]
//! pub struct Visit { pub name: String }
//!
//! #[databelt::data]
//! pub struct Greeting { pub text: String, pub visits: i64 }
//!
//! #[databelt::function]
//! fn hello(ctx: &Context, input: Visit) -> Result<Greeting, Error> {
//!     let visits = ctx.scope("visits")?.increment(&input.name, 1)?;
//!     Ok(Greeting { text: format!("hello {}", input.name), visits })
//! }
//! ```
//!
//! `cargo build --target wasm32-wasip2 --release` (or `cargo component build
//! --release`) produces a component the Databelt host runs.
//!
//! Input and output travel as postcard; [`data`] derives serde and a
//! postcard-schema description so hosts can convert JSON to your types.
//!
//! Byte buffers: serde sees a `Vec<u8>` as a sequence and postcard then
//! encodes and decodes it one byte at a time. Mark such fields
//! `#[serde(with = "databelt::serde_bytes")]` to move them with one copy
//! instead — the encoding is the same (a length, then the bytes), so the
//! attribute can be added or dropped without breaking readers:
//!
//! ```no_run
//! #[databelt::data]
//! pub struct Scene {
//!     #[serde(with = "databelt::serde_bytes")]
//!     pub pixels: Vec<u8>,
//! }
//! ```

#![warn(missing_docs)]

extern crate self as databelt;

/// The quickstart (`docs/quickstart.md`), compiled as doc tests so its
/// function example stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/quickstart.md")]
pub struct Quickstart;

/// The Rust API guide (`docs/rust-api.md`), compiled as doc tests so its
/// examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/rust-api.md")]
pub struct RustApi;

mod error;
mod scope;

pub use databelt_macros::{data, function};
pub use error::{Error, Result};
pub use scope::{Cas, KeyPage, Scope, SetOptions, Sibling, Version, Versioned};
/// serde (de)serialisers for byte buffers, for
/// `#[serde(with = "databelt::serde_bytes")]` on `Vec<u8>` fields (see the
/// crate documentation).
pub use serde_bytes;

/// What a function's input and output must be: serialisable with serde and
/// described by a postcard schema (which hosts use to map JSON to the type
/// and to print it). `#[databelt::data]` gives a struct or enum all of it;
/// primitives, `String`, `Vec`, `Option`, tuples, arrays and maps of data
/// types have it already. Implemented for every type that has the three
/// parts, so it never needs implementing by hand.
///
/// A function whose input or output type lacks it fails to compile with
/// "`T` is not a Databelt data type" at the type in the signature.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Databelt data type",
    label = "a function's input and output must be Databelt data",
    note = "add `#[databelt::data]` above the definition of `{Self}` (it derives serde's Serialize and Deserialize and a postcard Schema)",
    note = "primitives, String, Vec, Option, tuples, arrays and maps of data types are data already"
)]
pub trait Data: serde::Serialize + serde::de::DeserializeOwned + postcard_schema::Schema {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + postcard_schema::Schema> Data for T {}

/// The generated bindings of the `databelt:state/function` world. Most code
/// uses the typed API ([`Scope`], [`Context`]) instead.
#[allow(missing_docs, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "databelt:state/function",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::databelt::wit",
        runtime_path: "::databelt::__private::wit_bindgen::rt",
    });
}

use wit::databelt::state::context as wit_context;

/// What a function knows of the invocation it runs in, and its way to hand
/// work to the next step.
#[derive(Debug, Clone)]
pub struct Context {
    invocation: wit_context::Invocation,
}

impl Context {
    /// The context of the running invocation (asks the host).
    pub fn current() -> Self {
        Context { invocation: wit_context::current() }
    }

    /// The workflow run this invocation belongs to.
    pub fn run_id(&self) -> &str {
        &self.invocation.run_id
    }

    /// The name this function is deployed under.
    pub fn function(&self) -> &str {
        &self.invocation.function
    }

    /// This invocation's step in its run (0 for the first).
    pub fn step(&self) -> u32 {
        self.invocation.step
    }

    /// The node (host) running this invocation.
    pub fn node_id(&self) -> &str {
        &self.invocation.node_id
    }

    /// Open the scope called `name` (see [`Scope::open`]).
    pub fn scope(&self, name: &str) -> Result<Scope> {
        Scope::open(name)
    }

    /// The run's own state: a scope shared only by the steps of this workflow
    /// run. What a step writes here travels with its output to the nodes its
    /// successors run on; keys declared with
    /// `#[databelt::function(reads = ["key", ...])]` are fetched before the
    /// function starts, one batch per node that holds them. With fusion on
    /// (the default) it lives in memory, one sandbox per run and host,
    /// dropped when the run ends.
    pub fn run_state(&self) -> Result<Scope> {
        Scope::run_state()
    }

    /// Hand `input` (encoded with postcard) to the function deployed as
    /// `successor`, which runs as the next step of this run once this function
    /// returns `Ok`. At most one hand-off per invocation.
    pub fn hand_off<T: serde::Serialize + ?Sized>(&self, successor: &str, input: &T) -> Result<()> {
        let bytes = postcard::to_allocvec(input).map_err(|e| Error::Encode(e.to_string()))?;
        self.hand_off_bytes(successor, &bytes)
    }

    /// Hand raw `input` bytes to `successor` (see [`Context::hand_off`]).
    pub fn hand_off_bytes(&self, successor: &str, input: &[u8]) -> Result<()> {
        wit_context::hand_off(successor, input).map_err(Error::from)
    }
}

/// Support for the code the macros generate. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use postcard_schema;
    pub use postcard_schema::Schema;
    pub use serde;
    pub use wit_bindgen;

    use crate::wit::exports::databelt::state::handler::FunctionInfo;

    pub use crate::wit::databelt::state::types::Error as WitError;
    pub use crate::wit::exports::databelt::state::handler::{FunctionInfo as WitFunctionInfo, Guest};

    /// Turn whatever error a user function returns into the WIT error: an SDK
    /// [`crate::Error`] keeps its case, anything else becomes `other`.
    pub fn to_wit_error<E: core::fmt::Display + 'static>(e: E) -> WitError {
        match (&e as &dyn core::any::Any).downcast_ref::<crate::Error>() {
            Some(err) => err.clone().into(),
            None => WitError::Other(e.to_string()),
        }
    }

    /// Decode the input, run `f`, encode the output.
    pub fn run<I, O, E, F>(input: Vec<u8>, f: F) -> Result<Vec<u8>, WitError>
    where
        I: crate::Data,
        O: crate::Data,
        E: core::fmt::Display + 'static,
        F: FnOnce(&crate::Context, I) -> Result<O, E>,
    {
        let input: I = postcard::from_bytes(&input).map_err(|e| WitError::Other(format!("malformed input: {e}")))?;
        let ctx = crate::Context::current();
        let output = f(&ctx, input).map_err(to_wit_error)?;
        postcard::to_allocvec(&output).map_err(|e| WitError::Other(format!("cannot encode output: {e}")))
    }

    /// The function's self-description; `reads` are the run-scope keys it
    /// declared.
    pub fn describe<I: crate::Data, O: crate::Data>(name: &str, reads: &[&str]) -> FunctionInfo {
        let schema = |s: &'static postcard_schema::schema::NamedType| {
            let owned = postcard_schema::schema::owned::OwnedNamedType::from(s);
            postcard::to_allocvec(&owned).unwrap_or_default()
        };
        FunctionInfo {
            name: name.to_string(),
            input_schema: schema(I::SCHEMA),
            output_schema: schema(O::SCHEMA),
            reads: reads.iter().map(|k| k.to_string()).collect(),
        }
    }
}

//! What several commands read the same way: JSON input, a function name
//! from a component's file name, an async runtime.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use databelt_types::FunctionName;

/// `--input`: JSON text, or `@path` of a JSON file.
pub fn read_json(input: &str) -> Result<serde_json::Value> {
    let text = match input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read input file {path}"))?,
        None => input.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("--input is not valid JSON: {e}"))
}

/// The name a component file is deployed under: its file stem, sanitised.
pub fn function_name(path: &Path) -> FunctionName {
    FunctionName::sanitized(path.file_stem().and_then(|s| s.to_str()).unwrap_or("function"))
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Resolves on Ctrl-C.
pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

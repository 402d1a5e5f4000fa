//! `databelt state ls|get|put|rm`: look at and fix function state, in a
//! data directory (the host must not be running on it) or on a running
//! host (`--node`, with its credentials; the `admin` permission).
//!
//! Values print as JSON where they are JSON text, as text where they are
//! UTF-8, as hex otherwise; an 8-byte value also shows its reading as a
//! `databelt:state` counter.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use databelt_host::{Host, HostConfig};
use serde_json::{Value, json};

use crate::config::HostArgs;
use crate::input::runtime;
use crate::security::ClientArgs;

/// Where the state is.
#[derive(clap::Args)]
pub struct Target {
    /// The scope.
    #[arg(long)]
    scope: String,
    /// A running host's address (`host:port`); without, the data directory
    /// (`--data-dir`, `--config`) is opened directly.
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    host: HostArgs,
}

/// The value to write.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Value_ {
    /// UTF-8 text (e.g. a JSON document).
    #[arg(long)]
    text: Option<String>,
    /// Bytes, as hex.
    #[arg(long)]
    hex: Option<String>,
    /// A `databelt:state` counter (8-byte little-endian s64).
    #[arg(long, allow_hyphen_values = true)]
    counter: Option<i64>,
    /// A `wasi:keyvalue` counter (decimal text).
    #[arg(long, allow_hyphen_values = true)]
    decimal: Option<i64>,
}

/// `databelt state …`
#[derive(clap::Subcommand)]
pub enum Command {
    /// List the scope's keys (all pages), as a JSON array.
    Ls {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print one key's value and version as JSON.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Write one key.
    Put {
        /// The key.
        key: String,
        #[command(flatten)]
        value: Value_,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one key.
    Rm {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
}

/// How a value prints: JSON, text or hex, and as a counter when 8 bytes.
pub fn render(key: &str, version: Option<u64>, bytes: &[u8]) -> Value {
    let mut out = json!({"key": key, "bytes": bytes.len()});
    if let Some(v) = version {
        out["version"] = json!(v);
    }
    // Text is UTF-8 without control characters (but line breaks and tabs).
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
    match text {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) if !text.trim().is_empty() => out["json"] = v,
            _ => out["text"] = json!(text),
        },
        None => out["hex"] = json!(hex_encode(bytes)),
    }
    if let Ok(arr) = <[u8; 8]>::try_from(bytes) {
        out["counter"] = json!(i64::from_le_bytes(arr));
    }
    out
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        bail!("--hex takes an even number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| anyhow!("--hex: `{}` is not hex", &text[i..i + 2]))
        })
        .collect()
}

impl Value_ {
    fn bytes(&self) -> Result<Vec<u8>> {
        Ok(match (&self.text, &self.hex, self.counter, self.decimal) {
            (Some(t), ..) => t.clone().into_bytes(),
            (_, Some(h), ..) => hex_decode(h)?,
            (_, _, Some(c), _) => c.to_le_bytes().to_vec(),
            (_, _, _, Some(d)) => d.to_string().into_bytes(),
            _ => bail!("give the value with --text, --hex, --counter or --decimal"),
        })
    }
}

/// Run the command.
pub fn run(command: Command) -> Result<()> {
    let target = match &command {
        Command::Ls { target, .. }
        | Command::Get { target, .. }
        | Command::Put { target, .. }
        | Command::Rm { target, .. } => target,
    };
    if let Some(node) = &target.node {
        return remote(&command, node, &target.client, &target.scope);
    }
    let config = target.host.layer(HostConfig::default())?;
    let host = Host::new(config)
        .context("opening the data directory (if a host is running on it, ask it instead: --node host:port)")?;
    let tier = host.state();
    let scope = &target.scope;
    if databelt_types::ScopeName::is_reserved_name(scope) {
        bail!("scope `{scope}` is the host's own; `databelt state` works on function state");
    }
    match &command {
        Command::Ls { prefix, .. } => {
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = tier.list_keys(scope, prefix, cursor.as_deref(), None)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        Command::Get { key, .. } => match tier.get_entry(scope, key)? {
            Some(e) => println!("{}", serde_json::to_string_pretty(&render(key, Some(e.version), &e.value))?),
            None => bail!("no key `{key}` in scope `{scope}`"),
        },
        Command::Put { key, value, .. } => {
            tier.set(scope, key, value.bytes()?, Default::default())?;
        }
        Command::Rm { key, .. } => tier.delete(scope, key)?,
    }
    Ok(())
}

fn remote(command: &Command, node: &str, client: &ClientArgs, scope: &str) -> Result<()> {
    let node_args =
        crate::node::NodeArgs { node: Some(node.to_string()), placement: String::new(), client: client.clone() };
    runtime()?.block_on(async move {
        let api = node_args.connect(Duration::from_secs(30)).await?;
        let base = format!("{}/state/{}", api.base, encode(scope));
        match command {
            Command::Ls { prefix, .. } => {
                let mut keys: Vec<Value> = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut url = format!("{base}?prefix={}", encode(prefix));
                    if let Some(c) = &cursor {
                        url += &format!("&cursor={}", encode(c));
                    }
                    let page = api.json(api.http.get(url)).await?;
                    keys.extend(page["keys"].as_array().cloned().unwrap_or_default());
                    match page["cursor"].as_str() {
                        Some(c) => cursor = Some(c.to_string()),
                        None => break,
                    }
                }
                println!("{}", serde_json::to_string_pretty(&keys)?);
            }
            Command::Get { key, .. } => {
                let answer = api.json(api.http.get(format!("{base}/{}", encode(key)))).await?;
                if answer["found"] != json!(true) {
                    bail!("no key `{key}` in scope `{scope}`");
                }
                let bytes = hex_decode(answer["hex"].as_str().unwrap_or_default())?;
                println!("{}", serde_json::to_string_pretty(&render(key, answer["version"].as_u64(), &bytes))?);
            }
            Command::Put { key, value, .. } => {
                api.json(api.http.put(format!("{base}/{}", encode(key))).body(value.bytes()?)).await?;
            }
            Command::Rm { key, .. } => {
                api.json(api.http.delete(format!("{base}/{}", encode(key)))).await?;
            }
        }
        Ok(())
    })
}

/// Percent-encode a path segment (keys may hold `/`, spaces, anything).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_json_text_hex_and_counter() {
        assert_eq!(render("k", None, br#"{"a":1}"#)["json"], json!({"a": 1}));
        assert_eq!(render("k", None, b"hello")["text"], json!("hello"));
        let r = render("k", Some(3), &7i64.to_le_bytes());
        assert_eq!((r["hex"].as_str(), &r["counter"], &r["version"]), (Some("0700000000000000"), &json!(7), &json!(3)));
        assert_eq!(hex_decode("00ff").unwrap(), vec![0, 255]);
        assert!(hex_decode("0").is_err() && hex_decode("zz").is_err());
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}

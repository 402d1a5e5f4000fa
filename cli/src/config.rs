//! The one place where a command's host configuration is layered:
//! the command's defaults → the `--config` file → flags. Every command that
//! starts hosts (`run`, `serve`, `up`) goes through [`HostArgs::layer`].

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use databelt_host::{BackendConfig, HostConfig};

/// Flags every command that starts a host takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HostArgs {
    /// Host configuration file (TOML), laid over the command's defaults;
    /// flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the state database (when the backend is redb), kept
    /// deployments and the compiled-code cache. Default: `./databelt-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep state in memory only (lost on exit).
    #[arg(long)]
    pub memory: bool,
}

impl HostArgs {
    /// `defaults`, then the config file, then the flags.
    pub fn layer(&self, defaults: HostConfig) -> Result<HostConfig> {
        let mut config = match &self.config {
            Some(path) => from_file(&defaults, path)?,
            None => defaults,
        };
        if let Some(dir) = &self.data_dir {
            let d = HostConfig::in_dir(dir);
            // The data dir moves the redb file and the cache; it never turns a
            // memory backend chosen in the config file into a durable one.
            if matches!(config.backend, BackendConfig::Redb { .. }) {
                config.backend = d.backend;
            }
            config.cache_dir = d.cache_dir;
            config.functions_dir = d.functions_dir;
        }
        if self.memory {
            config.backend = BackendConfig::Memory;
        }
        config.validate()?;
        Ok(config)
    }
}

/// The file at `path` laid over `base`.
fn from_file(base: &HostConfig, path: &Path) -> Result<HostConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    base.layered(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(&file, "deadline_ms = 900\nmax_concurrent_instances = 3\n").unwrap();
        let defaults = HostConfig { max_concurrent_instances: 16, deadline_ms: 100, ..HostConfig::default() };
        let args = HostArgs { config: Some(file), data_dir: Some(dir.path().join("d")), memory: false };
        let c = args.layer(defaults.clone()).unwrap();
        assert_eq!((c.deadline_ms, c.max_concurrent_instances), (900, 3));
        assert_eq!(c.backend, BackendConfig::Redb { path: dir.path().join("d/databelt-state.redb") });
        let c = HostArgs { memory: true, ..HostArgs::default() }.layer(defaults.clone()).unwrap();
        assert_eq!((c.backend, c.max_concurrent_instances), (BackendConfig::Memory, 16));
    }

    #[test]
    fn a_memory_backend_from_the_file_stays_memory_with_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(&file, "[backend]\nkind = \"memory\"\n").unwrap();
        let args = HostArgs { config: Some(file), data_dir: Some(dir.path().into()), memory: false };
        let c = args.layer(HostConfig::default()).unwrap();
        assert_eq!(c.backend, BackendConfig::Memory);
        assert_eq!(c.cache_dir, Some(dir.path().join("cache")));
    }
}

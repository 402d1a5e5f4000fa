//! The security flags of the commands that start servers (`serve`,
//! `placement`) and of the clients (`invoke`), and the one place that turns
//! them into a [`MemberSecurity`] or [`Credentials`].
//!
//! Secure by default: a server without a token file creates one, with an
//! admin token, in its data directory on first start; a continuum member
//! without certificates refuses to start. Only `--insecure-dev-no-auth`
//! turns TLS and authentication off, and says so loudly.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use databelt_net::auth::{Access, Credentials, MemberSecurity, Permission, ServerSecurity, TokenFile, write_private};
use databelt_net::tls::{Identity, MemberTls, Members, TlsFiles, client_config};

/// The token file of a server's data directory.
pub const TOKENS_FILE: &str = "tokens.toml";
/// The admin token a server creates in its data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Where `databelt up` keeps its continuum's data; `invoke` looks there
/// for the CA and the admin token when not told.
pub const UP_DATA_DIR: &str = "databelt-data/continuum";

/// Flags of a command that starts a server.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Directory with the continuum CA's certificate (`ca.pem`) and this
    /// member's certificate and key (`<node-id>.pem`, `<node-id>.key`; for
    /// the placement service `placement.pem`, `placement.key`), as
    /// `databelt certs` writes them. Turns on mutual TLS.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Token file (TOML, `[[token]]` tables of name, sha256, permissions).
    /// Default: `tokens.toml` in the data directory, created with one admin
    /// token (written to `admin.token`, mode 0600) on first start.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// DEVELOPMENT ONLY: no TLS and no authentication — anyone who reaches
    /// the port may read and write every state and deploy code.
    #[arg(long)]
    pub insecure_dev_no_auth: bool,
}

impl ServerArgs {
    /// The security of member `name` whose data directory is `data_dir`,
    /// with the topology's `members`. `continuum`: it talks to other
    /// members, so mutual TLS is required.
    pub fn member(&self, name: &str, data_dir: &Path, members: Members, continuum: bool) -> Result<MemberSecurity> {
        if self.insecure_dev_no_auth {
            warn_insecure();
            return Ok(MemberSecurity::development());
        }
        let tokens = match &self.tokens {
            Some(path) => TokenFile::load(path)?,
            None => ensure_tokens(data_dir)?,
        };
        match &self.tls_dir {
            Some(dir) => {
                let tls = MemberTls::load(&TlsFiles::in_dir(dir, name), members.clone())
                    .with_context(|| format!("TLS material of `{name}` in {}", dir.display()))?;
                let named = match &tls.identity {
                    Identity::Node(id) => id.as_str(),
                    Identity::Placement => "placement",
                };
                if named != name {
                    bail!("{}/{name}.pem is a certificate for `{named}`, not for `{name}`", dir.display());
                }
                Ok(MemberSecurity::new(&tls, &tokens, members))
            }
            None if continuum => bail!(
                "a continuum member needs mutual TLS: create a CA and certificates with `databelt certs init` and \
                 `databelt certs issue {name}`, then pass --tls-dir (or --insecure-dev-no-auth for development only)"
            ),
            None => Ok(MemberSecurity {
                server: ServerSecurity { tls: None, access: Access::enforced(&tokens, members) },
                client: Credentials::development(),
            }),
        }
    }
}

fn warn_insecure() {
    eprintln!("WARNING: --insecure-dev-no-auth: no TLS and no authentication; anyone who reaches this port can read");
    eprintln!("WARNING: and overwrite every state and deploy code. Development only.");
}

/// The token file of `data_dir`; on first start, a new one with an admin
/// token whose secret goes to `admin.token` (0600).
pub fn ensure_tokens(data_dir: &Path) -> Result<TokenFile> {
    let path = data_dir.join(TOKENS_FILE);
    if path.exists() {
        return Ok(TokenFile::load(&path)?);
    }
    let mut file = TokenFile::default();
    let secret = file.add("admin", vec![Permission::Admin], None);
    let token_path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&token_path, &format!("{secret}\n"))?;
    write_private(&path, &file.to_toml()?)?;
    eprintln!("databelt: created an admin token in {} (mode 0600)", token_path.display());
    Ok(file)
}

/// Flags of a client command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// The continuum CA's certificate (PEM). Default: the one `databelt up`
    /// wrote, `databelt-data/continuum/tls/ca.pem`.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// File holding the bearer token. Default: `$DATABELT_TOKEN`, else the
    /// admin token `databelt up` wrote, `databelt-data/continuum/admin.token`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: plain HTTP, no token (for servers started with the
    /// same flag).
    #[arg(long)]
    pub insecure_dev_no_auth: bool,
    /// Plain HTTP with the token: for a standalone `databelt serve` (one
    /// that joined no continuum serves without TLS, on loopback by default).
    #[arg(long)]
    pub no_tls: bool,
}

impl ClientArgs {
    /// What the client presents.
    pub fn credentials(&self) -> Result<Credentials> {
        if self.insecure_dev_no_auth {
            return Ok(Credentials::development());
        }
        if self.no_tls {
            return Ok(Credentials { tls: None, token: Some(self.token()?), node: None });
        }
        let ca_path = self.ca.clone().unwrap_or_else(|| Path::new(UP_DATA_DIR).join("tls/ca.pem"));
        let ca = std::fs::read_to_string(&ca_path).with_context(|| {
            format!("cannot read the CA certificate {} (pass --ca, or --insecure-dev-no-auth)", ca_path.display())
        })?;
        let token = self.token()?;
        Ok(Credentials { tls: Some(client_config(&ca, None, Members::default())?), token: Some(token), node: None })
    }

    /// The bearer token: `--token-file`, `$DATABELT_TOKEN`, or the admin
    /// token `databelt up` wrote.
    fn token(&self) -> Result<String> {
        Ok(match (&self.token_file, std::env::var("DATABELT_TOKEN")) {
            (Some(path), _) => read_token(path)?,
            (None, Ok(t)) if !t.trim().is_empty() => t.trim().to_string(),
            (None, _) => read_token(&Path::new(UP_DATA_DIR).join(ADMIN_TOKEN_FILE))?,
        })
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {} (pass --token-file)", path.display()))?;
    Ok(text.trim().to_string())
}

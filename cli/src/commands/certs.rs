//! `databelt certs`: a continuum's certificate authority and its members'
//! certificates.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use databelt_net::auth::write_private;
use databelt_net::tls::{Authority, DEFAULT_VALIDITY_DAYS, Identity, TlsFiles, Validity};
use databelt_types::NodeId;

/// `databelt certs` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create the continuum's CA: `ca.pem` (give it to every member) and
    /// `ca.key` (mode 0600; keep it off the nodes).
    Init {
        /// Where to write them.
        #[arg(long, default_value = "databelt-data/tls")]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (every member certificate it issued stops
        /// being trusted once members get the new `ca.pem`).
        #[arg(long)]
        force: bool,
    },
    /// Issue a member certificate: `<node-id>.pem` and `<node-id>.key`
    /// (0600), naming the node (or, with `--placement`, the placement
    /// service: `placement.pem`, `placement.key`).
    Issue {
        /// The node id, as the topology names it.
        node_id: Option<NodeId>,
        /// Issue the placement service's certificate instead.
        #[arg(long, conflicts_with = "node_id")]
        placement: bool,
        /// Directory holding `ca.pem` and `ca.key`; the new files go there.
        #[arg(long, default_value = "databelt-data/tls")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        days: u32,
    },
}

/// Run the command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Init { dir, days, force } => init(&dir, days, force),
        Command::Issue { node_id, placement, dir, days } => {
            let who = match (node_id, placement) {
                (Some(id), false) => Identity::Node(id),
                (None, true) => Identity::Placement,
                _ => bail!("name a node id, or pass --placement"),
            };
            issue(&dir, &who, days)
        }
    }
}

fn init(dir: &Path, days: u32, force: bool) -> Result<()> {
    let cert = dir.join("ca.pem");
    if cert.exists() && !force {
        bail!("{} exists; pass --force to replace the continuum's CA", cert.display());
    }
    let ca = Authority::generate("databelt continuum CA", Validity::days(days))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    std::fs::write(&cert, ca.cert_pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    eprintln!("CA written: {} (public) and {} (secret, 0600)", cert.display(), dir.join("ca.key").display());
    Ok(())
}

fn issue(dir: &Path, who: &Identity, days: u32) -> Result<()> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {} (run `databelt certs init`)", p.display()))
    };
    let ca = Authority::from_pem(&read("ca.pem")?, &read("ca.key")?)?;
    let pem = ca.issue(who, Validity::days(days))?;
    let name = match who {
        Identity::Node(id) => id.to_string(),
        Identity::Placement => "placement".to_string(),
    };
    let files = TlsFiles::in_dir(dir, &name);
    std::fs::write(&files.cert, &pem.cert).with_context(|| format!("cannot write {}", files.cert.display()))?;
    write_private(&files.key, &pem.key)?;
    eprintln!("certificate for {who} written: {} and {} (0600)", files.cert.display(), files.key.display());
    Ok(())
}

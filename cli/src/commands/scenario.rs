//! `databelt scenario`: generate scenario files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use databelt_placement::constellation::{self, CloudSite, ConstellationSpec, Shell, TleSet};

/// `databelt scenario …`
#[derive(clap::Subcommand)]
pub enum Command {
    /// A scenario from orbits: a Walker-delta shell with +Grid
    /// inter-satellite links (or satellites from TLEs, propagated with SGP4),
    /// ground stations seen above an elevation mask, eclipse windows, and a
    /// cloud linked to every station. Give a spec file (see
    /// docs/scheduler.md), the shell's parameters as flags, or `--tle`.
    Walker(WalkerArgs),
}

/// Flags of `databelt scenario walker`.
#[derive(clap::Args)]
pub struct WalkerArgs {
    /// A constellation spec (TOML: [[shell]], [[ground_station]], [cloud],
    /// sample_ms, …). The flags below describe a single shell instead.
    #[arg(long, conflicts_with_all = ["altitude_km", "inclination_deg", "planes", "per_plane", "phasing"])]
    spec: Option<PathBuf>,
    /// Satellites from a TLE file (two- or three-line format; repeatable):
    /// each file becomes a `[[tle_set]]` named after it, propagated with
    /// SGP4, with nearest-neighbour inter-satellite links. Without
    /// `--spec`, the scenario then has no Walker shell.
    #[arg(long, conflicts_with_all = ["altitude_km", "inclination_deg", "planes", "per_plane", "phasing"])]
    tle: Vec<PathBuf>,
    /// The scenario's t = 0 (RFC 3339, e.g. 2024-05-01T00:00:00Z); with
    /// TLEs the default is their newest epoch.
    #[arg(long)]
    start_utc: Option<String>,
    /// Orbit altitude, km.
    #[arg(long, default_value_t = 550.0)]
    altitude_km: f64,
    /// Inclination, degrees.
    #[arg(long, default_value_t = 53.0)]
    inclination_deg: f64,
    /// Orbital planes.
    #[arg(long, default_value_t = 72)]
    planes: u32,
    /// Satellites per plane.
    #[arg(long, default_value_t = 22)]
    per_plane: u32,
    /// Walker phasing factor F (below `planes`).
    #[arg(long, default_value_t = 1)]
    phasing: u32,
    /// Add this many ground stations spread evenly between ±60° latitude
    /// (ids gs-0, gs-1, …) to the spec's own.
    #[arg(long, default_value_t = 0)]
    ground_stations: usize,
    /// Elevation mask of the spread ground stations, degrees.
    #[arg(long, default_value_t = 25.0)]
    min_elevation_deg: f64,
    /// Add a cloud node `cloud` (at 50.1°N 8.7°E) linked to every ground
    /// station, unless the spec has one.
    #[arg(long)]
    cloud: bool,
    /// Sample the geometry this often, ms (window precision).
    #[arg(long)]
    sample_ms: Option<u64>,
    /// The scenario's period, ms (default: one orbital period).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Where to write the scenario (TOML).
    #[arg(long)]
    out: PathBuf,
}

/// Run the command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Walker(args) => walker(args),
    }
}

fn walker(args: WalkerArgs) -> Result<()> {
    let mut spec = match &args.spec {
        Some(path) => ConstellationSpec::from_file(path)?,
        None if !args.tle.is_empty() => {
            let mut spec = ConstellationSpec::starlink_like();
            spec.shells.clear();
            spec.ground_stations.clear();
            spec.cloud = None;
            spec
        }
        None => ConstellationSpec::single_shell(Shell {
            name: "sat".into(),
            altitude_km: args.altitude_km,
            inclination_deg: args.inclination_deg,
            planes: args.planes,
            per_plane: args.per_plane,
            phasing: args.phasing,
        }),
    };
    if !(0.0..90.0).contains(&args.min_elevation_deg) {
        bail!("--min-elevation-deg must be 0-90, got {}", args.min_elevation_deg);
    }
    spec.ground_stations.extend(constellation::spread_ground_stations(
        args.ground_stations,
        60.0,
        args.min_elevation_deg,
    ));
    if args.cloud && spec.cloud.is_none() {
        spec.cloud = Some(CloudSite::at("cloud", 50.1, 8.7));
    }
    for path in &args.tle {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let name: String = path
            .file_stem()
            .map(|s| s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect())
            .unwrap_or_else(|| "tle".into());
        spec.tle_sets.push(TleSet::from_text(&name, text));
    }
    if args.start_utc.is_some() {
        spec.start_utc = args.start_utc.clone();
    }
    if let Some(s) = args.sample_ms {
        spec.sample_ms = s;
    }
    if args.duration_ms.is_some() {
        spec.duration_ms = args.duration_ms;
    }
    let started = Instant::now();
    let topology = constellation::generate(&spec)?;
    let generated = started.elapsed();
    let started = Instant::now();
    let text = toml::to_string(&topology).context("writing the scenario as TOML")?;
    let written = started.elapsed();
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    let windowed = topology.links.iter().filter(|l| !l.windows.is_empty()).count();
    println!(
        "{}: {} nodes, {} links ({windowed} with windows), period {} ms; generated in {:.2} s, TOML ({:.1} MB) in {:.2} s",
        args.out.display(),
        topology.nodes.len(),
        topology.links.len(),
        topology.period_ms.unwrap_or(0),
        generated.as_secs_f64(),
        text.len() as f64 / 1e6,
        written.as_secs_f64(),
    );
    Ok(())
}

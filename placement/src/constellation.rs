//! Scenarios from orbits: Walker-delta shells, +Grid inter-satellite links,
//! ground stations with an elevation mask and a cloud site, turned into the
//! [`Topology`] the rest of Databelt reads (pure computation).
//!
//! ```toml
//! sample_ms = 10000          # geometry sampled this often (window precision)
//! # duration_ms = 5739000    # default: the first shell's orbital period
//!
//! [[shell]]
//! name = "s"                 # satellites are `s-<plane>-<index>`
//! altitude_km = 550
//! inclination_deg = 53
//! planes = 72
//! per_plane = 22
//! phasing = 17               # Walker F: plane p is shifted p·F·360°/(P·S)
//!
//! [[ground_station]]
//! id = "gs-vienna"
//! lat_deg = 48.2
//! lon_deg = 16.4
//! min_elevation_deg = 25     # default 25
//!
//! [cloud]
//! id = "cloud"
//! lat_deg = 50.1
//! lon_deg = 8.7
//! ```
//!
//! Satellites may also come from TLEs (`[[tle_set]]`, see [`TleSet`]),
//! propagated with SGP4; the scenario is then dated (`start_utc`) and the
//! Earth's rotation and the sun follow the calendar.
//!
//! The model of shells: circular orbits around a spherical Earth (radius 6,371 km,
//! μ = 398,600.4418 km³/s²) that rotates under them; the sun fixed in the
//! inertial frame along +x with a cylindrical Earth shadow. Over
//! `duration_ms` the geometry is sampled every `sample_ms`:
//!
//! - **ISLs** (+Grid): every satellite links to the next one in its plane
//!   and to the one with the same index in the next plane (the last plane
//!   wraps to the first). They are permanent; latency is the mean distance
//!   over the samples at the speed of light in vacuum.
//! - **Ground links**: a station sees a satellite while its elevation is at
//!   or above the station's mask. Each pair's link exists in the windows
//!   where it sees it (to `sample_ms` precision); its latency is the mean
//!   distance while visible. A pair that never sees each other has no link.
//! - **Cloud**: linked to every ground station over fibre: great-circle
//!   distance at ⅔ c plus `extra_ms`.
//! - **Eclipse**: each satellite's shadow windows become its
//!   `resources.eclipse`, so the battery model charges it only in sunlight.
//!
//! The scenario's `period_ms` is `duration_ms`: windows repeat with it. Over
//! one orbital period the satellites return to their positions but the
//! Earth has turned by ~24°; the repetition ignores that (as scenario files
//! written by hand do). Generate over a longer `duration_ms` for runs that
//! need the ground track to move on.

use serde::{Deserialize, Serialize};

use std::path::Path;

use sgp4::chrono::{NaiveDateTime, TimeDelta};

use crate::error::{Error, Result};
pub use crate::tle::TleSet;
use crate::tle::{self, Satellite};
use crate::topology::{Link, Node, NodeKind, Resources, Topology, Window};

/// Mean Earth radius, km.
pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// Earth's gravitational parameter, km³/s².
pub const MU_KM3_S2: f64 = 398_600.441_8;
/// Earth's rotation rate, rad/s (sidereal).
pub const EARTH_ROTATION_RAD_S: f64 = 7.292_115_9e-5;
/// Speed of light in vacuum, km/ms.
pub const LIGHT_KM_PER_MS: f64 = 299.792_458;

/// One Walker-delta shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// Prefix of its satellites' ids (`<name>-<plane>-<index>`).
    pub name: String,
    /// Orbit altitude above the surface, km.
    pub altitude_km: f64,
    /// Inclination, degrees.
    pub inclination_deg: f64,
    /// Orbital planes, equally spaced in right ascension over 360°.
    pub planes: u32,
    /// Satellites per plane, equally spaced.
    pub per_plane: u32,
    /// Walker phasing factor F (0 ≤ F < planes).
    #[serde(default)]
    pub phasing: u32,
}

impl Shell {
    /// Orbital period, ms.
    pub fn period_ms(&self) -> f64 {
        let a = EARTH_RADIUS_KM + self.altitude_km;
        2.0 * std::f64::consts::PI * (a * a * a / MU_KM3_S2).sqrt() * 1000.0
    }
}

/// A ground station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroundStation {
    /// Its node id.
    pub id: String,
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// Lowest elevation at which it can talk to a satellite, degrees.
    #[serde(default = "default_mask")]
    pub min_elevation_deg: f64,
}

fn default_mask() -> f64 {
    25.0
}

/// The cloud site, linked to every ground station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSite {
    /// Its node id.
    pub id: String,
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// Bandwidth of each station's link to it, Mbit/s.
    #[serde(default = "default_cloud_bandwidth")]
    pub bandwidth_mbps: f64,
    /// Latency added to the fibre's (routing, peering), ms.
    #[serde(default = "default_cloud_extra")]
    pub extra_ms: f64,
    /// What it offers.
    #[serde(default = "cloud_resources")]
    pub resources: Resources,
}

impl CloudSite {
    /// A cloud site at the given place with the defaults (1 Gbit/s to each
    /// station, 5 ms added, a large data centre's resources).
    pub fn at(id: &str, lat_deg: f64, lon_deg: f64) -> CloudSite {
        CloudSite {
            id: id.to_string(),
            lat_deg,
            lon_deg,
            bandwidth_mbps: default_cloud_bandwidth(),
            extra_ms: default_cloud_extra(),
            resources: cloud_resources(),
        }
    }
}

fn default_cloud_bandwidth() -> f64 {
    1000.0
}

fn default_cloud_extra() -> f64 {
    5.0
}

fn cloud_resources() -> Resources {
    Resources { cpu: 256.0, memory_mb: 1_048_576.0, battery_pct: 100.0, ..Resources::default() }
}

/// A satellite as the paper's prototype models one: a small board, a
/// battery recharged by solar panels, a passive radiator.
pub fn satellite_resources() -> Resources {
    Resources {
        cpu: 4.0,
        memory_mb: 8192.0,
        power_w: 60.0,
        battery_pct: 80.0,
        temperature_c: 30.0,
        max_temperature_c: 80.0,
        battery_wh: 100.0,
        solar_w: 80.0,
        idle_w: 15.0,
        heat_c_per_w: 0.8,
        thermal_tau_s: 600.0,
        ambient_c: 10.0,
        eclipse: Vec::new(),
    }
}

fn station_resources() -> Resources {
    Resources { cpu: 16.0, memory_mb: 65536.0, battery_pct: 100.0, temperature_c: 25.0, ..Resources::default() }
}

/// A whole constellation scenario's parameters (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstellationSpec {
    /// The Walker-delta shells.
    #[serde(rename = "shell", default)]
    pub shells: Vec<Shell>,
    /// Satellites given by their TLEs, propagated with SGP4.
    #[serde(rename = "tle_set", default)]
    pub tle_sets: Vec<TleSet>,
    /// The scenario's t = 0 as a UTC instant (RFC 3339). With TLE sets it
    /// defaults to the newest TLE epoch and places the Earth and the sun
    /// as on that date; without, the frames start aligned and the sun is
    /// along +x (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_utc: Option<String>,
    /// The ground stations.
    #[serde(rename = "ground_station", default)]
    pub ground_stations: Vec<GroundStation>,
    /// The cloud site (none: no cloud node).
    #[serde(default)]
    pub cloud: Option<CloudSite>,
    /// How often the geometry is sampled, ms.
    #[serde(default = "default_sample")]
    pub sample_ms: u64,
    /// The scenario's period, ms (default: the first shell's orbital
    /// period, rounded up to a whole `sample_ms`).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Bandwidth of an inter-satellite link, Mbit/s.
    #[serde(default = "default_isl")]
    pub isl_bandwidth_mbps: f64,
    /// Bandwidth of a ground–satellite link, Mbit/s.
    #[serde(default = "default_gsl")]
    pub gsl_bandwidth_mbps: f64,
    /// Every satellite's resources (its eclipse windows are computed).
    #[serde(default = "satellite_resources")]
    pub satellite: Resources,
    /// Every ground station's resources.
    #[serde(default = "station_resources")]
    pub ground: Resources,
}

fn default_sample() -> u64 {
    10_000
}

fn default_isl() -> f64 {
    1000.0
}

fn default_gsl() -> f64 {
    200.0
}

impl ConstellationSpec {
    /// A spec with one shell and nothing else (defaults everywhere).
    pub fn single_shell(shell: Shell) -> ConstellationSpec {
        ConstellationSpec {
            shells: vec![shell],
            tle_sets: Vec::new(),
            start_utc: None,
            ground_stations: Vec::new(),
            cloud: None,
            sample_ms: default_sample(),
            duration_ms: None,
            isl_bandwidth_mbps: default_isl(),
            gsl_bandwidth_mbps: default_gsl(),
            satellite: satellite_resources(),
            ground: station_resources(),
        }
    }

    /// The Starlink-like shell the benchmarks and the scheduler evaluation
    /// use: 72 planes × 22 satellites at 550 km and 53° (phasing 17, ids
    /// `sat-<plane>-<index>`), 100 ground stations spread between ±60°
    /// latitude, and a cloud (`cloud`, at 50.1°N 8.7°E).
    pub fn starlink_like() -> ConstellationSpec {
        let mut spec = ConstellationSpec::single_shell(Shell {
            name: "sat".into(),
            altitude_km: 550.0,
            inclination_deg: 53.0,
            planes: 72,
            per_plane: 22,
            phasing: 17,
        });
        spec.ground_stations = spread_ground_stations(100, 60.0, default_mask());
        spec.cloud = Some(CloudSite::at("cloud", 50.1, 8.7));
        spec
    }

    /// Parse and check a spec written in TOML.
    pub fn from_toml(text: &str) -> Result<ConstellationSpec> {
        let spec: ConstellationSpec = toml::from_str(text)
            .map_err(|e| Error::BadRequest(format!("constellation, {}", crate::topology::toml_error(text, &e))))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Read a spec file and the TLE files it names (relative to it).
    pub fn from_file(path: &Path) -> Result<ConstellationSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::BadRequest(format!("cannot read {}: {e}", path.display())))?;
        let mut spec =
            ConstellationSpec::from_toml(&text).map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
        spec.load_files(path.parent().unwrap_or(Path::new(".")))?;
        Ok(spec)
    }

    /// Read every TLE set's `file` (relative to `base`) into its `text`.
    pub fn load_files(&mut self, base: &Path) -> Result<()> {
        for set in &mut self.tle_sets {
            if let (Some(file), None) = (&set.file, &set.text) {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::BadRequest(format!("tle_set `{}`: cannot read {}: {e}", set.name, path.display()))
                })?;
                set.text = Some(text);
            }
        }
        Ok(())
    }

    /// Refuse parameters no orbit has.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(format!("constellation: {m}")));
        if self.shells.is_empty() && self.tle_sets.is_empty() {
            return bad("needs at least one [[shell]] or [[tle_set]]".into());
        }
        for set in &self.tle_sets {
            set.validate()?;
        }
        if let Some(start) = &self.start_utc {
            tle::parse_instant(start)?;
        }
        for s in &self.shells {
            let name = &s.name;
            if !(s.altitude_km.is_finite() && (160.0..=40_000.0).contains(&s.altitude_km)) {
                return bad(format!("shell `{name}`: altitude_km must be 160–40000, got {}", s.altitude_km));
            }
            if !(s.inclination_deg.is_finite() && (0.0..=180.0).contains(&s.inclination_deg)) {
                return bad(format!("shell `{name}`: inclination_deg must be 0–180, got {}", s.inclination_deg));
            }
            if s.planes == 0 || s.per_plane == 0 {
                return bad(format!("shell `{name}`: planes and per_plane must be at least 1"));
            }
            if u64::from(s.planes) * u64::from(s.per_plane) > 100_000 {
                return bad(format!("shell `{name}`: more than 100,000 satellites"));
            }
            if s.phasing >= s.planes {
                return bad(format!("shell `{name}`: phasing must be below planes ({}), got {}", s.planes, s.phasing));
            }
        }
        for g in &self.ground_stations {
            if !(g.lat_deg.is_finite() && (-90.0..=90.0).contains(&g.lat_deg)) {
                return bad(format!("ground station `{}`: lat_deg must be -90–90", g.id));
            }
            if !(g.lon_deg.is_finite() && (-180.0..=360.0).contains(&g.lon_deg)) {
                return bad(format!("ground station `{}`: lon_deg must be -180–360", g.id));
            }
            if !(g.min_elevation_deg.is_finite() && (0.0..90.0).contains(&g.min_elevation_deg)) {
                return bad(format!("ground station `{}`: min_elevation_deg must be 0–90", g.id));
            }
        }
        if self.sample_ms == 0 {
            return bad("sample_ms must be at least 1".into());
        }
        if self.duration_ms == Some(0) {
            return bad("duration_ms must be at least 1".into());
        }
        if self.samples() > 1_000_000 {
            return bad("more than 1,000,000 samples: raise sample_ms or shorten duration_ms".into());
        }
        for (name, v) in
            [("isl_bandwidth_mbps", self.isl_bandwidth_mbps), ("gsl_bandwidth_mbps", self.gsl_bandwidth_mbps)]
        {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        Ok(())
    }

    /// The scenario's period, ms (without a shell or an explicit
    /// `duration_ms`, 100 minutes; [`generate`] uses the first TLE
    /// satellite's period instead).
    pub fn duration(&self) -> u64 {
        self.duration_with(self.shells.first().map_or(100.0 * 60_000.0, Shell::period_ms))
    }

    fn duration_with(&self, period_ms: f64) -> u64 {
        self.duration_ms.unwrap_or_else(|| {
            let period = period_ms.ceil().max(1.0) as u64;
            period.div_ceil(self.sample_ms.max(1)) * self.sample_ms.max(1)
        })
    }

    fn samples(&self) -> u64 {
        self.duration().div_ceil(self.sample_ms.max(1))
    }
}

/// Where the Earth and the sun are at each sample: the angle the Earth has
/// turned through (a surface point at longitude λ is at λ + angle in the
/// inertial frame) and the unit vector to the sun.
struct Frames {
    earth_angle: Vec<f64>,
    sun: Vec<Vec3>,
}

impl Frames {
    /// Walker-only scenarios: frames aligned at t = 0, the sun along +x.
    fn aligned(times: &[f64]) -> Frames {
        Frames {
            earth_angle: times.iter().map(|t| EARTH_ROTATION_RAD_S * t).collect(),
            sun: vec![[1.0, 0.0, 0.0]; times.len()],
        }
    }

    /// As on the calendar from `start` (TEME: GMST and the sun's place).
    fn dated(start: NaiveDateTime, times: &[f64]) -> Frames {
        let years: Vec<f64> = times.iter().map(|t| tle::years_since_j2000(&start) + t / (365.25 * 86_400.0)).collect();
        Frames {
            earth_angle: years.iter().map(|y| tle::earth_rotation(*y)).collect(),
            sun: years.iter().map(|y| tle::sun_direction(*y)).collect(),
        }
    }
}

type Vec3 = [f64; 3];

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// A satellite's inertial position at `t_s`: plane right ascension `raan`,
/// argument of latitude `u0` at t = 0, radius `a`, inclination `inc`.
fn orbit_position(a: f64, inc: f64, raan: f64, u0: f64, mean_motion: f64, t_s: f64) -> Vec3 {
    let u = u0 + mean_motion * t_s;
    let (su, cu) = u.sin_cos();
    let (so, co) = raan.sin_cos();
    let (si, ci) = inc.sin_cos();
    [a * (co * cu - so * su * ci), a * (so * cu + co * su * ci), a * (su * si)]
}

/// A point on the surface in the inertial frame once the Earth has turned
/// by `earth_angle` radians.
fn surface_position(lat_deg: f64, lon_deg: f64, earth_angle: f64) -> Vec3 {
    let lat = lat_deg.to_radians();
    let lon = lon_deg.to_radians() + earth_angle;
    let (sl, cl) = lat.sin_cos();
    let (so, co) = lon.sin_cos();
    [EARTH_RADIUS_KM * cl * co, EARTH_RADIUS_KM * cl * so, EARTH_RADIUS_KM * sl]
}

/// Great-circle distance between two surface points, km.
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let a = surface_position(lat1, lon1, 0.0);
    let b = surface_position(lat2, lon2, 0.0);
    let cos = (dot(a, b) / (EARTH_RADIUS_KM * EARTH_RADIUS_KM)).clamp(-1.0, 1.0);
    EARTH_RADIUS_KM * cos.acos()
}

/// Whether a satellite at `r` is in the Earth's cylindrical shadow with the
/// sun along the unit vector `sun`.
fn in_shadow(r: Vec3, sun: Vec3) -> bool {
    let along = dot(r, sun);
    along < 0.0 && dot(r, r) - along * along < EARTH_RADIUS_KM * EARTH_RADIUS_KM
}

/// Lowest altitude a line of sight between satellites may graze, km.
const GRAZING_KM: f64 = 80.0;

/// Whether the segment between `a` and `b` stays above the grazing height.
fn clear_of_earth(a: Vec3, b: Vec3) -> bool {
    let d = sub(b, a);
    let len2 = dot(d, d);
    let t = if len2 == 0.0 { 0.0 } else { (-dot(a, d) / len2).clamp(0.0, 1.0) };
    let closest = [a[0] + t * d[0], a[1] + t * d[1], a[2] + t * d[2]];
    norm(closest) >= EARTH_RADIUS_KM + GRAZING_KM
}

/// Runs of `true` in `flags` (sample k covers `[k·sample, (k+1)·sample)`,
/// clipped to `duration`) as windows.
fn windows_of(flags: &[bool], sample_ms: u64, duration_ms: u64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = None;
    for (k, &f) in flags.iter().enumerate() {
        let t = k as u64 * sample_ms;
        match (f, start) {
            (true, None) => start = Some(t),
            (false, Some(s)) => {
                out.push(Window { start_ms: s, end_ms: t });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Window { start_ms: s, end_ms: duration_ms });
    }
    out
}

fn round_ms(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Generate the scenario `spec` describes (validated first).
pub fn generate(spec: &ConstellationSpec) -> Result<Topology> {
    spec.validate()?;
    let catalogues = spec
        .tle_sets
        .iter()
        .map(|set| Ok((set, set.satellites()?)))
        .collect::<Result<Vec<(&TleSet, Vec<Satellite>)>>>()?;
    let tle_count: usize = catalogues.iter().map(|(_, s)| s.len()).sum();
    if tle_count > MAX_TLE_SATELLITES {
        return Err(Error::BadRequest(format!(
            "constellation: {tle_count} TLE satellites, at most {MAX_TLE_SATELLITES}"
        )));
    }
    let duration = match (spec.shells.first(), catalogues.first().and_then(|(_, s)| s.first())) {
        (None, Some(sat)) => spec.duration_with(sat.period_ms()),
        _ => spec.duration(),
    };
    let sample = spec.sample_ms;
    let samples = duration.div_ceil(sample) as usize;
    if samples > 1_000_000 {
        return Err(Error::BadRequest(
            "constellation: more than 1,000,000 samples: raise sample_ms or shorten duration_ms".into(),
        ));
    }
    let offsets: Vec<u64> = (0..samples as u64).map(|k| k * sample).collect();
    let times: Vec<f64> = offsets.iter().map(|ms| *ms as f64 / 1000.0).collect();
    let start = match &spec.start_utc {
        Some(text) => Some(tle::parse_instant(text)?),
        None => catalogues.iter().flat_map(|(_, sats)| sats.iter().map(|s| s.epoch)).max(),
    };
    let frames = match start {
        Some(start) => Frames::dated(start, &times),
        None => Frames::aligned(&times),
    };

    let mut nodes = Vec::new();
    let mut links = Vec::new();
    // Satellite positions at every sample, satellite-major.
    let mut positions: Vec<Vec<Vec3>> = Vec::new();
    for shell in &spec.shells {
        let a = EARTH_RADIUS_KM + shell.altitude_km;
        let inc = shell.inclination_deg.to_radians();
        let n = (MU_KM3_S2 / (a * a * a)).sqrt();
        let (planes, per) = (shell.planes, shell.per_plane);
        let total = f64::from(planes) * f64::from(per);
        let first = positions.len();
        for p in 0..planes {
            let raan = 2.0 * std::f64::consts::PI * f64::from(p) / f64::from(planes);
            for s in 0..per {
                let u0 = 2.0
                    * std::f64::consts::PI
                    * (f64::from(s) / f64::from(per) + f64::from(shell.phasing) * f64::from(p) / total);
                let track: Vec<Vec3> = times.iter().map(|&t| orbit_position(a, inc, raan, u0, n, t)).collect();
                nodes.push(satellite_node(spec, format!("{}-{p}-{s}", shell.name), &track, &frames, duration));
                positions.push(track);
            }
        }
        // +Grid: next in plane, same index in the next plane (a set, as
        // with two satellites per plane or two planes a pair comes twice).
        let idx = |p: u32, s: u32| first + (p * per + s) as usize;
        let mut joined = std::collections::HashSet::new();
        for p in 0..planes {
            for s in 0..per {
                let me = idx(p, s);
                let mut neighbours = Vec::new();
                if per > 1 {
                    neighbours.push(idx(p, (s + 1) % per));
                }
                if planes > 1 {
                    neighbours.push(idx((p + 1) % planes, s));
                }
                for other in neighbours {
                    if other == me || !joined.insert((me.min(other), me.max(other))) {
                        continue;
                    }
                    let mean_km =
                        positions[me].iter().zip(&positions[other]).map(|(x, y)| norm(sub(*x, *y))).sum::<f64>()
                            / samples as f64;
                    links.push(Link {
                        a: nodes[me].id.clone(),
                        b: nodes[other].id.clone(),
                        latency_ms: round_ms(mean_km / LIGHT_KM_PER_MS),
                        jitter_ms: 0.0,
                        bandwidth_mbps: spec.isl_bandwidth_mbps,
                        windows: Vec::new(),
                    });
                }
            }
        }
    }

    for (set, sats) in &catalogues {
        let Some(start) = start else { break };
        let first = positions.len();
        for sat in sats {
            let track = offsets
                .iter()
                .map(|ms| sat.position(start + TimeDelta::milliseconds(*ms as i64)))
                .collect::<Result<Vec<Vec3>>>()?;
            nodes.push(satellite_node(spec, sat.id.clone(), &track, &frames, duration));
            positions.push(track);
        }
        links.extend(nearest_neighbour_isls(spec, set, &nodes, &positions[first..], first, sample, duration));
    }

    for g in &spec.ground_stations {
        nodes.push(Node {
            id: g.id.clone(),
            kind: NodeKind::Edge,
            address: String::new(),
            resources: spec.ground.clone(),
        });
        let sin_mask = g.min_elevation_deg.to_radians().sin();
        let ground: Vec<Vec3> =
            frames.earth_angle.iter().map(|&angle| surface_position(g.lat_deg, g.lon_deg, angle)).collect();
        for (sat, track) in positions.iter().enumerate() {
            let mut visible = vec![false; samples];
            let (mut sum_km, mut count) = (0.0, 0u64);
            for k in 0..samples {
                let (r, q) = (track[k], ground[k]);
                let los = sub(r, q);
                let range = norm(los);
                // Elevation ≥ mask ⟺ the line of sight's component along
                // the local vertical is at least range · sin(mask).
                if dot(los, q) / EARTH_RADIUS_KM >= range * sin_mask {
                    visible[k] = true;
                    sum_km += range;
                    count += 1;
                }
            }
            if count == 0 {
                continue;
            }
            let windows = if count as usize == samples { Vec::new() } else { windows_of(&visible, sample, duration) };
            links.push(Link {
                a: g.id.clone(),
                b: nodes[sat].id.clone(),
                latency_ms: round_ms(sum_km / count as f64 / LIGHT_KM_PER_MS),
                jitter_ms: 0.0,
                bandwidth_mbps: spec.gsl_bandwidth_mbps,
                windows,
            });
        }
    }

    if let Some(cloud) = &spec.cloud {
        nodes.push(Node {
            id: cloud.id.clone(),
            kind: NodeKind::Cloud,
            address: String::new(),
            resources: cloud.resources.clone(),
        });
        for g in &spec.ground_stations {
            let km = great_circle_km(g.lat_deg, g.lon_deg, cloud.lat_deg, cloud.lon_deg);
            links.push(Link {
                a: g.id.clone(),
                b: cloud.id.clone(),
                latency_ms: round_ms(km / (LIGHT_KM_PER_MS * 2.0 / 3.0) + cloud.extra_ms),
                jitter_ms: 0.0,
                bandwidth_mbps: cloud.bandwidth_mbps,
                windows: Vec::new(),
            });
        }
    }

    let topology = Topology { period_ms: Some(duration), nodes, links };
    topology.validate()?;
    Ok(topology)
}

/// Most satellites all TLE sets may hold together (their links are found
/// by comparing every pair).
pub const MAX_TLE_SATELLITES: usize = 20_000;

/// A satellite node whose eclipse windows follow its `track`.
fn satellite_node(spec: &ConstellationSpec, id: String, track: &[Vec3], frames: &Frames, duration: u64) -> Node {
    let shadow: Vec<bool> = track.iter().zip(&frames.sun).map(|(&r, &sun)| in_shadow(r, sun)).collect();
    let mut resources = spec.satellite.clone();
    resources.eclipse = windows_of(&shadow, spec.sample_ms, duration);
    Node { id, kind: NodeKind::Satellite, address: String::new(), resources }
}

/// A TLE set's inter-satellite links: each satellite picks its
/// `isl_neighbours` nearest at t = 0 (within `max_isl_km`, line of sight
/// clear of the Earth); a pair's link exists while both hold, its latency
/// the mean distance then. `tracks[i]` is node `first + i`.
fn nearest_neighbour_isls(
    spec: &ConstellationSpec,
    set: &TleSet,
    nodes: &[Node],
    tracks: &[Vec<Vec3>],
    first: usize,
    sample: u64,
    duration: u64,
) -> Vec<Link> {
    let up = |a: Vec3, b: Vec3| norm(sub(a, b)) <= set.max_isl_km && clear_of_earth(a, b);
    let mut pairs = Vec::new();
    let mut joined = std::collections::HashSet::new();
    for i in 0..tracks.len() {
        let Some(&here) = tracks[i].first() else { continue };
        let mut near: Vec<(f64, usize)> = (0..tracks.len())
            .filter(|&j| j != i)
            .filter_map(|j| tracks[j].first().map(|&there| (j, there)))
            .filter(|&(_, there)| up(here, there))
            .map(|(j, there)| (norm(sub(here, there)), j))
            .collect();
        near.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for (_, j) in near.into_iter().take(set.isl_neighbours as usize) {
            if joined.insert((i.min(j), i.max(j))) {
                pairs.push((i.min(j), i.max(j)));
            }
        }
    }
    pairs
        .into_iter()
        .map(|(i, j)| {
            let mut visible = Vec::with_capacity(tracks[i].len());
            let (mut sum_km, mut count) = (0.0, 0u64);
            for (&a, &b) in tracks[i].iter().zip(&tracks[j]) {
                let open = up(a, b);
                if open {
                    sum_km += norm(sub(a, b));
                    count += 1;
                }
                visible.push(open);
            }
            let windows =
                if count as usize == visible.len() { Vec::new() } else { windows_of(&visible, sample, duration) };
            Link {
                a: nodes[first + i].id.clone(),
                b: nodes[first + j].id.clone(),
                latency_ms: round_ms(sum_km / count.max(1) as f64 / LIGHT_KM_PER_MS),
                jitter_ms: 0.0,
                bandwidth_mbps: spec.isl_bandwidth_mbps,
                windows,
            }
        })
        .collect()
}

/// `n` ground stations spread evenly (a Fibonacci lattice) between the
/// latitudes ±`max_lat_deg`, ids `gs-0` … — a stand-in for a real network
/// of stations when none is given.
pub fn spread_ground_stations(n: usize, max_lat_deg: f64, min_elevation_deg: f64) -> Vec<GroundStation> {
    let golden = std::f64::consts::PI * (3.0 - 5.0f64.sqrt());
    let z_max = max_lat_deg.to_radians().sin();
    (0..n)
        .map(|i| {
            let z = if n == 1 { 0.0 } else { z_max - 2.0 * z_max * i as f64 / (n - 1) as f64 };
            let lon = (golden * i as f64).to_degrees().rem_euclid(360.0) - 180.0;
            GroundStation {
                id: format!("gs-{i}"),
                lat_deg: round_ms(z.asin().to_degrees()),
                lon_deg: round_ms(lon),
                min_elevation_deg,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(planes: u32, per_plane: u32) -> Shell {
        Shell { name: "s".into(), altitude_km: 550.0, inclination_deg: 53.0, planes, per_plane, phasing: 1 }
    }

    #[test]
    fn orbital_period_matches_keplers_law() {
        // A 550 km orbit (over a 6,371 km sphere) takes about 95.5 minutes.
        let p = shell(1, 1).period_ms() / 60_000.0;
        assert!((p - 95.5).abs() < 0.05, "{p}");
    }

    #[test]
    fn walker_shell_has_every_satellite_at_its_altitude_and_a_plus_grid() {
        let spec = ConstellationSpec { sample_ms: 60_000, ..ConstellationSpec::single_shell(shell(6, 8)) };
        let t = generate(&spec).unwrap();
        assert_eq!(t.nodes.len(), 48);
        assert_eq!(t.links.len(), 96, "two links per satellite");
        let mut degree = std::collections::HashMap::<&str, usize>::new();
        for l in &t.links {
            *degree.entry(&l.a).or_default() += 1;
            *degree.entry(&l.b).or_default() += 1;
            assert!(l.windows.is_empty(), "ISLs are permanent");
        }
        assert!(degree.values().all(|d| *d == 4), "+Grid: degree 4");
        // In-plane neighbours: chord 2a·sin(π/8) at c.
        let a = EARTH_RADIUS_KM + 550.0;
        let expect = 2.0 * a * (std::f64::consts::PI / 8.0).sin() / LIGHT_KM_PER_MS;
        let l = t.links.iter().find(|l| l.a == "s-0-0" && l.b == "s-0-1").unwrap();
        assert!((l.latency_ms - expect).abs() < 0.01, "{} vs {expect}", l.latency_ms);
        assert_eq!(t.period_ms, Some(spec.duration()));
        assert!(t.snapshot(0).route("s-0-0", "s-3-4").is_some(), "the grid is connected");
    }

    #[test]
    fn satellites_spend_part_of_each_orbit_in_eclipse() {
        let spec = ConstellationSpec { sample_ms: 10_000, ..ConstellationSpec::single_shell(shell(4, 4)) };
        let t = generate(&spec).unwrap();
        let period = t.period_ms.unwrap() as f64;
        // A 550 km orbit whose plane contains the sun direction is in shadow
        // about 36% of the time (asin(R/a)/π + ½·…); planes at other angles
        // less, none more.
        let fractions: Vec<f64> = t
            .nodes
            .iter()
            .map(|n| n.resources.eclipse.iter().map(|w| (w.end_ms - w.start_ms) as f64).sum::<f64>() / period)
            .collect();
        assert!(fractions.iter().all(|f| *f <= 0.40), "{fractions:?}");
        assert!(fractions.iter().any(|f| *f >= 0.30), "{fractions:?}");
    }

    #[test]
    fn a_ground_station_sees_passing_satellites_in_windows_above_its_mask() {
        let mut spec = ConstellationSpec::single_shell(shell(12, 12));
        spec.sample_ms = 5_000;
        spec.ground_stations =
            vec![GroundStation { id: "gs".into(), lat_deg: 30.0, lon_deg: 10.0, min_elevation_deg: 25.0 }];
        spec.cloud = Some(CloudSite::at("cloud", 50.0, 8.0));
        let t = generate(&spec).unwrap();
        let gsl: Vec<&Link> = t.links.iter().filter(|l| l.a == "gs" && l.b != "cloud").collect();
        assert!(gsl.len() >= 2, "several satellites pass over in an orbit: {}", gsl.len());
        let a = EARTH_RADIUS_KM + 550.0;
        // Farthest visible at 25° elevation: slant range ≈ 1,120 km.
        let max_range = -EARTH_RADIUS_KM * 25f64.to_radians().sin()
            + ((EARTH_RADIUS_KM * 25f64.to_radians().sin()).powi(2) + a * a - EARTH_RADIUS_KM * EARTH_RADIUS_KM).sqrt();
        for l in &gsl {
            assert!(l.latency_ms >= 550.0 / LIGHT_KM_PER_MS - 0.01, "{l:?}");
            assert!(l.latency_ms <= max_range / LIGHT_KM_PER_MS + 0.01, "{l:?}");
            assert!(!l.windows.is_empty(), "no satellite of a LEO shell stays overhead: {l:?}");
        }
        // The cloud: Frankfurt-ish to 30°N 10°E over fibre, plus 5 ms.
        let c = t.links.iter().find(|l| l.b == "cloud").unwrap();
        let km = great_circle_km(30.0, 10.0, 50.0, 8.0);
        assert!((c.latency_ms - (km / 199.861_638_7 + 5.0)).abs() < 0.01, "{c:?}");
        // At some instant the station reaches the cloud and a satellite.
        let visible_at = gsl[0].windows[0].start_ms;
        let s = t.snapshot(visible_at);
        assert!(s.route("cloud", &gsl[0].b).is_some());
    }

    #[test]
    fn spread_stations_stay_within_the_latitude_band() {
        let g = spread_ground_stations(100, 60.0, 25.0);
        assert_eq!(g.len(), 100);
        assert!(g.iter().all(|s| s.lat_deg.abs() <= 60.0 + 1e-9 && (-180.0..180.0).contains(&s.lon_deg)));
        let ids: std::collections::HashSet<_> = g.iter().map(|s| &s.id).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        for (bad, field) in [
            (Shell { altitude_km: -5.0, ..shell(2, 2) }, "altitude_km"),
            (Shell { planes: 0, ..shell(2, 2) }, "planes"),
            (Shell { phasing: 2, ..shell(2, 2) }, "phasing"),
            (Shell { inclination_deg: 200.0, ..shell(2, 2) }, "inclination_deg"),
        ] {
            let e = generate(&ConstellationSpec::single_shell(bad)).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let e = ConstellationSpec::from_toml("[[shell]]\nname = \"s\"\naltitude_km = 550\n").unwrap_err();
        assert!(e.to_string().contains("inclination_deg"), "{e}");
        let e = ConstellationSpec::from_toml(
            "sample_ms = 0\n[[shell]]\nname=\"s\"\naltitude_km=550\ninclination_deg=53\nplanes=2\nper_plane=2\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("sample_ms"), "{e}");
    }

    /// A TLE catalogue flying the Walker shell `planes` × `per` at 550 km,
    /// 53° (phasing 1), epoch 2024-04-10 12:00 UTC.
    fn walker_tles(planes: u32, per: u32) -> String {
        let a: f64 = EARTH_RADIUS_KM + 550.0;
        let rev = (MU_KM3_S2 / (a * a * a)).sqrt() * 86_400.0 / (2.0 * std::f64::consts::PI);
        let mut text = String::new();
        for p in 0..planes {
            for s in 0..per {
                let anomaly = 360.0 * (f64::from(s) / f64::from(per) + f64::from(p) / f64::from(planes * per));
                let raan = 360.0 * f64::from(p) / f64::from(planes);
                text.push_str(&format!("SAT {p}-{s}\n"));
                text.push_str(&crate::tle::tests::tle(70_000 + p * 100 + s, 101.5, 53.0, raan, anomaly, rev));
            }
        }
        text
    }

    fn tle_spec(planes: u32, per: u32) -> ConstellationSpec {
        let mut spec = ConstellationSpec::single_shell(shell(1, 1));
        spec.shells.clear();
        spec.tle_sets = vec![TleSet::from_text("t", walker_tles(planes, per))];
        spec.sample_ms = 20_000;
        spec
    }

    #[test]
    fn a_tle_catalogue_becomes_satellites_with_nearest_neighbour_links() {
        let spec = tle_spec(8, 16);
        let t = generate(&spec).unwrap();
        assert_eq!(t.nodes.len(), 128);
        assert!(t.nodes.iter().all(|n| n.kind == NodeKind::Satellite && n.id.starts_with("t-7")));
        // The period is the first satellite's, from its mean motion.
        let period = t.period_ms.unwrap() as f64 / 60_000.0;
        assert!((period - 95.5).abs() < 0.5, "{period}");
        let mut degree = std::collections::HashMap::<&str, usize>::new();
        for l in &t.links {
            *degree.entry(&l.a).or_default() += 1;
            *degree.entry(&l.b).or_default() += 1;
            assert!(l.latency_ms > 0.0 && l.latency_ms <= 5000.0 / LIGHT_KM_PER_MS + 1e-6, "{l:?}");
        }
        assert!(t.nodes.iter().all(|n| degree.get(n.id.as_str()).copied().unwrap_or(0) >= 4), "{degree:?}");
        // In-plane neighbours (22.5° apart: chord 2a·sin(11.25°) ≈ 2,700 km)
        // are among the nearest and stay in range all orbit long.
        let a = EARTH_RADIUS_KM + 550.0;
        let chord = 2.0 * a * (std::f64::consts::PI / 16.0).sin() / LIGHT_KM_PER_MS;
        let l = t.links.iter().find(|l| l.a == "t-70000" && l.b == "t-70001").expect("in-plane link");
        assert!((l.latency_ms - chord).abs() / chord < 0.03, "{} vs {chord}", l.latency_ms);
        assert!(l.windows.is_empty(), "{l:?}");
        assert!(t.snapshot(0).route("t-70000", "t-70715").is_some(), "connected at the start");
        // The same spec gives the same scenario.
        assert_eq!(generate(&spec).unwrap(), t);
    }

    #[test]
    fn tle_satellites_pass_over_ground_stations_and_cross_the_shadow() {
        let mut spec = tle_spec(8, 16);
        spec.ground_stations =
            vec![GroundStation { id: "gs".into(), lat_deg: 48.2, lon_deg: 16.4, min_elevation_deg: 25.0 }];
        let t = generate(&spec).unwrap();
        let gsl: Vec<&Link> = t.links.iter().filter(|l| l.a == "gs").collect();
        assert!(gsl.len() >= 2, "{}", gsl.len());
        for l in &gsl {
            // SGP4's radius wanders ±20 km around 550 km; 25° mask: ≤ ~1,150 km.
            assert!(l.latency_ms >= 520.0 / LIGHT_KM_PER_MS && l.latency_ms <= 1_160.0 / LIGHT_KM_PER_MS, "{l:?}");
            assert!(!l.windows.is_empty(), "{l:?}");
        }
        let period = t.period_ms.unwrap() as f64;
        let fractions: Vec<f64> = t
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Satellite)
            .map(|n| n.resources.eclipse.iter().map(|w| (w.end_ms - w.start_ms) as f64).sum::<f64>() / period)
            .collect();
        assert!(fractions.iter().all(|f| *f <= 0.41), "{fractions:?}");
        assert!(fractions.iter().filter(|f| **f > 0.2).count() > fractions.len() / 2, "{fractions:?}");
        // Another start date turns the Earth (and the windows) elsewhere.
        spec.start_utc = Some("2024-04-11T06:00:00Z".into());
        let later = generate(&spec).unwrap();
        let later_gsl: Vec<&Link> = later.links.iter().filter(|l| l.a == "gs").collect();
        assert_ne!(
            gsl.iter().map(|l| (&l.b, &l.windows)).collect::<Vec<_>>(),
            later_gsl.iter().map(|l| (&l.b, &l.windows)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_spec_file_reads_its_tle_file_beside_it() {
        let dir = std::env::temp_dir().join(format!("databelt-tle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("shell.tle"), walker_tles(4, 8)).unwrap();
        std::fs::write(
            dir.join("spec.toml"),
            "sample_ms = 60000\n[[tle_set]]\nname = \"leo\"\nfile = \"shell.tle\"\nmax_isl_km = 6000\n",
        )
        .unwrap();
        let spec = ConstellationSpec::from_file(&dir.join("spec.toml")).unwrap();
        let t = generate(&spec).unwrap();
        assert_eq!(t.nodes.len(), 32);
        std::fs::write(dir.join("spec.toml"), "[[tle_set]]\nname = \"leo\"\nfile = \"missing.tle\"\n").unwrap();
        let e = ConstellationSpec::from_file(&dir.join("spec.toml")).unwrap_err().to_string();
        assert!(e.contains("missing.tle"), "{e}");
        let mut unread = spec.clone();
        unread.tle_sets[0].text = None;
        assert!(generate(&unread).unwrap_err().to_string().contains("was not read"));
        let e = ConstellationSpec::from_toml("[[tle_set]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("file") && e.contains("text"), "{e}");
        let e = ConstellationSpec::from_toml("start_utc = \"soon\"\n[[tle_set]]\nname = \"x\"\ntext = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("start_utc"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_generated_scenario_round_trips_through_toml() {
        let mut spec = ConstellationSpec::single_shell(shell(3, 4));
        spec.sample_ms = 30_000;
        spec.ground_stations = spread_ground_stations(3, 50.0, 20.0);
        let t = generate(&spec).unwrap();
        let text = toml::to_string(&t).unwrap();
        assert_eq!(Topology::from_toml(&text).unwrap(), t);
    }
}

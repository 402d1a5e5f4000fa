//! Satellites from two-line element sets (TLEs), as CelesTrak and
//! Space-Track publish them: parsing (two-line and three-line formats),
//! SGP4 propagation (the `sgp4` crate) in the TEME frame, and the two facts
//! about the Earth a scenario needs at a UTC instant — how far it has
//! turned (Greenwich mean sidereal time) and where the sun is. Pure
//! computation; [`crate::constellation`] turns the positions into a
//! scenario.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sgp4::chrono::{DateTime, NaiveDateTime};

use crate::error::{Error, Result};

/// One catalogue of satellites given by their TLEs: a `[[tle_set]]` of a
/// constellation spec.
///
/// ```toml
/// [[tle_set]]
/// name = "starlink"          # satellites are `starlink-<NORAD id>`
/// file = "starlink.tle"      # relative to the spec file; or `text = """…"""`
/// max_isl_km = 5000          # default 5000: longest inter-satellite link
/// isl_neighbours = 4         # default 4: links per satellite, nearest first
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TleSet {
    /// Prefix of its satellites' ids (`<name>-<NORAD catalogue number>`).
    pub name: String,
    /// A TLE file (2LE or 3LE), relative to the spec file. Read by
    /// [`crate::constellation::ConstellationSpec::load_files`] into `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
    /// The TLEs themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Longest inter-satellite link, km: a pair farther apart (or whose
    /// line of sight passes below 80 km altitude) has no link then.
    #[serde(default = "default_max_isl_km")]
    pub max_isl_km: f64,
    /// Inter-satellite links per satellite: each links to its nearest
    /// neighbours at the scenario's start (a satellite may end up with
    /// more, as others pick it).
    #[serde(default = "default_isl_neighbours")]
    pub isl_neighbours: u32,
}

fn default_max_isl_km() -> f64 {
    5000.0
}

fn default_isl_neighbours() -> u32 {
    4
}

impl TleSet {
    /// A set of the given TLE text with the default link rules.
    pub fn from_text(name: &str, text: String) -> TleSet {
        TleSet {
            name: name.to_string(),
            file: None,
            text: Some(text),
            max_isl_km: default_max_isl_km(),
            isl_neighbours: default_isl_neighbours(),
        }
    }

    /// Check the set's own fields (not the TLEs: [`TleSet::satellites`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(format!("constellation: tle_set `{}`: {m}", self.name)));
        if self.name.is_empty() {
            return bad("name must not be empty".into());
        }
        if self.text.is_none() && self.file.is_none() {
            return bad("give `file` or `text`".into());
        }
        if !(self.max_isl_km.is_finite() && self.max_isl_km > 0.0) {
            return bad(format!("max_isl_km must be positive, got {}", self.max_isl_km));
        }
        if self.isl_neighbours > 16 {
            return bad(format!("isl_neighbours must be 0–16, got {}", self.isl_neighbours));
        }
        Ok(())
    }

    /// Parse the set's TLEs into propagators.
    pub fn satellites(&self) -> Result<Vec<Satellite>> {
        let text = self.text.as_deref().ok_or_else(|| {
            Error::BadRequest(format!(
                "constellation: tle_set `{}`: its file was not read (ConstellationSpec::load_files)",
                self.name
            ))
        })?;
        let parsed = parse(text).map_err(|e| Error::BadRequest(format!("tle_set `{}`: {e}", self.name)))?;
        if parsed.is_empty() {
            return Err(Error::BadRequest(format!("tle_set `{}`: no TLE in it", self.name)));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(parsed.len());
        for elements in parsed {
            if !seen.insert(elements.norad_id) {
                return Err(Error::BadRequest(format!(
                    "tle_set `{}`: NORAD id {} appears twice",
                    self.name, elements.norad_id
                )));
            }
            let id = format!("{}-{}", self.name, elements.norad_id);
            let constants = sgp4::Constants::from_elements(&elements)
                .map_err(|e| Error::BadRequest(format!("tle_set `{}`: satellite {id}: {e}", self.name)))?;
            out.push(Satellite { id, epoch: elements.datetime, mean_motion: elements.mean_motion, constants });
        }
        Ok(out)
    }
}

/// One satellite of a TLE set, ready to propagate.
pub struct Satellite {
    /// Its node id.
    pub id: String,
    /// The epoch of its elements (UTC).
    pub epoch: NaiveDateTime,
    /// Mean motion, revolutions per day.
    pub mean_motion: f64,
    constants: sgp4::Constants,
}

impl std::fmt::Debug for Satellite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Satellite")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("mean_motion", &self.mean_motion)
            .finish_non_exhaustive()
    }
}

impl Satellite {
    /// Its TEME position, km, at the UTC instant `at`.
    pub fn position(&self, at: NaiveDateTime) -> Result<[f64; 3]> {
        let minutes = (at - self.epoch)
            .num_nanoseconds()
            .map(|ns| ns as f64 / 60e9)
            .ok_or_else(|| Error::BadRequest(format!("satellite {}: instant too far from its epoch", self.id)))?;
        self.constants
            .propagate(sgp4::MinutesSinceEpoch(minutes))
            .map(|p| p.position)
            .map_err(|e| Error::BadRequest(format!("satellite {}: SGP4 at {minutes:.1} min from epoch: {e}", self.id)))
    }

    /// Orbital period, ms (from the mean motion).
    pub fn period_ms(&self) -> f64 {
        86_400_000.0 / self.mean_motion.max(1e-9)
    }
}

/// Parse TLEs in the two-line or three-line format (a name line before
/// each pair, optionally `0 `-prefixed as Space-Track writes it). Blank
/// lines are skipped; an error names the line.
pub fn parse(text: &str) -> std::result::Result<Vec<sgp4::Elements>, String> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    let mut line1: Option<(usize, &str)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("1 ") && line1.is_none() {
            line1 = Some((n, line));
        } else if line.starts_with("2 ") {
            let Some((n1, l1)) = line1.take() else {
                return Err(format!("line {n}: a TLE line 2 without its line 1"));
            };
            let elements = sgp4::Elements::from_tle(name.take(), l1.as_bytes(), line.as_bytes())
                .map_err(|e| format!("lines {n1}–{n}: {e}"))?;
            out.push(elements);
        } else if line1.is_some() {
            return Err(format!("line {n}: expected a TLE line 2 (starting `2 `)"));
        } else {
            let title = line.strip_prefix("0 ").unwrap_or(line).trim();
            name = Some(title.to_string());
        }
    }
    if let Some((n, _)) = line1 {
        return Err(format!("line {n}: a TLE line 1 without its line 2"));
    }
    Ok(out)
}

/// Parse an RFC 3339 UTC instant (`2024-05-01T00:00:00Z`).
pub fn parse_instant(text: &str) -> Result<NaiveDateTime> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.naive_utc())
        .map_err(|e| Error::BadRequest(format!("constellation: start_utc `{text}` is not an RFC 3339 instant: {e}")))
}

/// Julian years since J2000 (2000-01-01 12:00 UTC) of `at`.
pub fn years_since_j2000(at: &NaiveDateTime) -> f64 {
    sgp4::julian_years_since_j2000(at)
}

/// Greenwich mean sidereal time at `years` since J2000, radians: how far
/// the Earth has turned, so a point at longitude λ is at λ + GMST in TEME.
pub fn earth_rotation(years: f64) -> f64 {
    sgp4::iau_epoch_to_sidereal_time(years)
}

/// Unit vector towards the sun at `years` since J2000 in an Earth-centred
/// equatorial frame (the Astronomical Almanac's low-precision formula,
/// good to ~0.01°; TEME and the mean equator differ by less).
pub fn sun_direction(years: f64) -> [f64; 3] {
    let n = years * 365.25;
    let l = (280.460 + 0.985_647_4 * n).to_radians();
    let g = (357.528 + 0.985_600_3 * n).to_radians();
    let lambda = l + (1.915f64.to_radians()) * g.sin() + (0.020f64.to_radians()) * (2.0 * g).sin();
    let eps = (23.439 - 4e-7 * n).to_radians();
    [lambda.cos(), eps.cos() * lambda.sin(), eps.sin() * lambda.sin()]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The ISS example the `sgp4` crate documents (checksums valid).
    pub(crate) const ISS: &str = "ISS (ZARYA)
1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927
2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537
";

    fn checksum(line: &str) -> u32 {
        line.chars()
            .map(|c| match c {
                '0'..='9' => c as u32 - '0' as u32,
                '-' => 1,
                _ => 0,
            })
            .sum::<u32>()
            % 10
    }

    /// One TLE (2LE) for a near-circular orbit, with valid checksums.
    pub(crate) fn tle(norad: u32, epoch_day: f64, inc: f64, raan: f64, mean_anomaly: f64, rev_per_day: f64) -> String {
        let l1 = format!("1 {norad:05}U 24001A   24{epoch_day:012.8}  .00000000  00000-0  00000-0 0  999");
        let l2 =
            format!("2 {norad:05} {inc:8.4} {raan:8.4} 0001000   0.0000 {mean_anomaly:8.4} {rev_per_day:11.8}    1");
        format!("{l1}{}\n{l2}{}\n", checksum(&l1), checksum(&l2))
    }

    #[test]
    fn parses_three_line_and_two_line_formats() {
        let three = parse(ISS).unwrap();
        assert_eq!(three.len(), 1);
        assert_eq!(three[0].norad_id, 25544);
        assert_eq!(three[0].object_name.as_deref(), Some("ISS (ZARYA)"));
        let two: String = ISS.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let p = parse(&two).unwrap();
        assert_eq!(p[0].object_name, None);
        assert_eq!(p[0].inclination, three[0].inclination);
        let space_track = format!("0 ISS (ZARYA)\n\n{two}");
        assert_eq!(parse(&space_track).unwrap()[0].object_name.as_deref(), Some("ISS (ZARYA)"));
    }

    #[test]
    fn malformed_tles_are_refused_with_the_line_named() {
        let lines: Vec<&str> = ISS.lines().collect();
        let e = parse(&format!("{}\n", lines[1])).unwrap_err();
        assert!(e.contains("line 1") && e.contains("without its line 2"), "{e}");
        let e = parse(&format!("{}\n", lines[2])).unwrap_err();
        assert!(e.contains("line 1") && e.contains("line 2 without"), "{e}");
        // A flipped digit breaks the checksum.
        let broken = lines[2].replacen("51.6416", "51.6417", 1);
        let e = parse(&format!("{}\n{broken}\n", lines[1])).unwrap_err();
        assert!(e.contains("lines 1–2"), "{e}");
        let set = TleSet::from_text("iss", String::new());
        assert!(set.satellites().unwrap_err().to_string().contains("no TLE"));
        let twice = TleSet::from_text("iss", format!("{ISS}{ISS}"));
        assert!(twice.satellites().unwrap_err().to_string().contains("appears twice"));
    }

    #[test]
    fn the_iss_propagates_to_its_altitude_and_period() {
        let sats = TleSet::from_text("iss", ISS.to_string()).satellites().unwrap();
        let iss = &sats[0];
        assert_eq!(iss.id, "iss-25544");
        assert!((iss.period_ms() / 60_000.0 - 91.6).abs() < 0.1, "{}", iss.period_ms());
        for minutes in [0i64, 30, 60, 90] {
            let at = iss.epoch + sgp4::chrono::Duration::minutes(minutes);
            let r = iss.position(at).unwrap();
            let altitude = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt() - 6371.0;
            // 2008's ISS: ~340–360 km above a 6,371 km sphere (the
            // equatorial bulge makes it vary).
            assert!((320.0..380.0).contains(&altitude), "t={minutes} min: {altitude} km");
        }
    }

    #[test]
    fn the_sun_and_the_earth_turn_as_the_calendar_says() {
        // March equinox 2024 (2024-03-20 03:06 UTC): the sun at the vernal
        // equinox direction (+x).
        let equinox = parse_instant("2024-03-20T03:06:00Z").unwrap();
        let s = sun_direction(years_since_j2000(&equinox));
        assert!(s[0] > 0.9999 && s[2].abs() < 1e-3, "{s:?}");
        // June solstice: the sun 23.44° north.
        let solstice = parse_instant("2024-06-20T20:51:00Z").unwrap();
        let s = sun_direction(years_since_j2000(&solstice));
        assert!((s[2].asin().to_degrees() - 23.44).abs() < 0.05, "{s:?}");
        // GMST at J2000 is 280.46°; one sidereal day later it is back.
        let j2000 = earth_rotation(0.0).to_degrees();
        assert!((j2000 - 280.46).abs() < 0.01, "{j2000}");
        let sidereal_day_years = 86_164.090_5 / (365.25 * 86_400.0);
        let back = earth_rotation(sidereal_day_years).to_degrees();
        assert!((back - j2000).abs() < 0.01, "{back}");
        assert!(parse_instant("yesterday").unwrap_err().to_string().contains("RFC 3339"));
    }

    #[test]
    fn generated_tles_parse_and_fly_at_their_altitude() {
        // 550 km: n = sqrt(μ/a³) → 15.05 revolutions a day.
        let a: f64 = 6371.0 + 550.0;
        let rev = (398_600.441_8 / (a * a * a)).sqrt() * 86_400.0 / (2.0 * std::f64::consts::PI);
        let text = tle(90001, 100.5, 53.0, 10.0, 20.0, rev);
        let sats = TleSet::from_text("t", text).satellites().unwrap();
        let r = sats[0].position(sats[0].epoch).unwrap();
        let alt = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt() - 6371.0;
        assert!((alt - 550.0).abs() < 25.0, "{alt}");
    }
}

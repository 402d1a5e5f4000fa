//! The built-in scores. Each gives a raw value per surviving candidate; the
//! scheduler scales them to 0–1 ([`Scale`]) and sums them by weight.

use crate::topology::NodeKind;

use super::{Candidate, Demand, Scale, SchedulerConfig, Score, models};

/// Time to fetch every input and hand the output to every successor
/// (latency plus serialisation at each path's bottleneck), as
/// `1 / (1 + t / reference)`: 1 when everything is local, ½ at the
/// reference — the step's `max_latency_ms` when it has one, else the
/// configuration's `latency_ref_ms`. A fixed reference (rather than min–max
/// over the survivors) keeps a node's score independent of which other
/// nodes happen to be candidates. A missing path scores 0 (the network
/// filter normally removes such candidates first).
#[derive(Debug, Clone, Copy)]
pub struct Latency;

impl Score for Latency {
    fn name(&self) -> &'static str {
        "latency"
    }

    fn scale(&self) -> Scale {
        Scale::Absolute
    }

    fn raw(&self, c: &Candidate<'_>, d: &Demand, config: &SchedulerConfig) -> f64 {
        let endpoints = d.inputs.iter().chain(d.successors.iter());
        let mut total = 0.0;
        for (e, p) in endpoints.zip(c.all_paths()) {
            match p {
                Some(p) => total += p.transfer_ms(e.bytes),
                None => return 0.0,
            }
        }
        let reference = d.max_latency_ms.filter(|l| *l > 0.0).unwrap_or(config.latency_ref_ms).max(f64::MIN_POSITIVE);
        1.0 / (1.0 + total / reference)
    }
}

/// The paper's heat score of the temperature the node reaches by the end of
/// the step (1 at or below `heat_ok_c`, 0 at or above `heat_stop_c`).
#[derive(Debug, Clone, Copy)]
pub struct Heat;

impl Score for Heat {
    fn name(&self) -> &'static str {
        "heat"
    }

    fn scale(&self) -> Scale {
        Scale::Absolute
    }

    fn raw(&self, c: &Candidate<'_>, d: &Demand, config: &SchedulerConfig) -> f64 {
        let after = models::temperature_after(&c.node.resources, &c.state, d.duration_ms, d.power_w);
        models::heat_score(after.max(c.state.temperature_c), config.heat_ok_c, config.heat_stop_c)
    }
}

/// The lowest battery charge over the step as a fraction of capacity (with
/// a battery model), `battery_pct / 100` for a satellite without one, and 1
/// for nodes on mains power.
#[derive(Debug, Clone, Copy)]
pub struct Battery;

impl Score for Battery {
    fn name(&self) -> &'static str {
        "battery"
    }

    fn scale(&self) -> Scale {
        Scale::Absolute
    }

    fn raw(&self, c: &Candidate<'_>, d: &Demand, _config: &SchedulerConfig) -> f64 {
        let r = &c.node.resources;
        match models::battery_over(r, &c.state, c.period_ms, c.t_ms, d.duration_ms, d.power_w) {
            Some((lowest, _)) => lowest / r.battery_wh,
            None if c.node.kind == NodeKind::Satellite => r.battery_pct / 100.0,
            None => 1.0,
        }
    }
}

/// The narrowest bottleneck bandwidth `b` to any input or successor, as
/// `b / (b + reference)` with the configuration's `bandwidth_ref_mbps`: 1
/// when every endpoint is local, ½ at the reference, 0 without a path.
#[derive(Debug, Clone, Copy)]
pub struct Bandwidth;

impl Score for Bandwidth {
    fn name(&self) -> &'static str {
        "bandwidth"
    }

    fn scale(&self) -> Scale {
        Scale::Absolute
    }

    fn raw(&self, c: &Candidate<'_>, _d: &Demand, config: &SchedulerConfig) -> f64 {
        let b = c.all_paths().map(|p| p.map_or(0.0, |p| p.bandwidth_bps)).fold(f64::INFINITY, f64::min);
        if b.is_infinite() {
            return 1.0;
        }
        let reference = config.bandwidth_ref_mbps.max(f64::MIN_POSITIVE) * 1e6;
        b / (b + reference)
    }
}

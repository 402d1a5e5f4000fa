//! The built-in filters. Each answers for one candidate; a candidate runs a
//! step only when it passes every enabled one.

use crate::topology::NodeKind;

use super::{Candidate, Demand, Filter, SchedulerConfig, models};

/// CPU and memory left after what runs there now, and a battery that stays
/// above the reserve for the step's duration (solar recharge while sunlit
/// included). A satellite without a battery model needs `battery_pct > 0`.
#[derive(Debug, Clone, Copy)]
pub struct ResourcesFit;

impl Filter for ResourcesFit {
    fn name(&self) -> &'static str {
        "resources"
    }

    fn check(&self, c: &Candidate<'_>, d: &Demand, config: &SchedulerConfig) -> Result<(), String> {
        let r = &c.node.resources;
        let cpu_free = r.cpu - c.state.cpu_used;
        if cpu_free < d.cpu {
            return Err(format!("needs {} cpu, {cpu_free} free", d.cpu));
        }
        let mem_free = r.memory_mb - c.state.memory_used_mb;
        if mem_free < d.memory_mb {
            return Err(format!("needs {} MiB, {mem_free} MiB free", d.memory_mb));
        }
        match models::battery_over(r, &c.state, c.period_ms, c.t_ms, d.duration_ms, d.power_w) {
            Some((lowest, _)) => {
                let reserve = r.battery_wh * config.min_battery_pct / 100.0;
                if lowest < reserve {
                    return Err(format!("battery would fall to {:.1} Wh, below its {reserve:.1} Wh reserve", lowest));
                }
            }
            None if c.node.kind == NodeKind::Satellite && r.battery_pct <= 0.0 => {
                return Err("battery empty".into());
            }
            None => {}
        }
        Ok(())
    }
}

/// A live path to every input now and to every successor at the hand-off,
/// none slower than `max_latency_ms`, none narrower than
/// `min_bandwidth_mbps`.
#[derive(Debug, Clone, Copy)]
pub struct NetworkQos;

impl Filter for NetworkQos {
    fn name(&self) -> &'static str {
        "network"
    }

    fn check(&self, c: &Candidate<'_>, d: &Demand, _config: &SchedulerConfig) -> Result<(), String> {
        let endpoints = d.inputs.iter().chain(d.successors.iter());
        for (i, (endpoint, path)) in endpoints.zip(c.all_paths()).enumerate() {
            let Some(path) = path else {
                let when = if i < d.inputs.len() || d.duration_ms == 0 { "now" } else { "at the hand-off" };
                return Err(format!("no path to `{}` {when}", endpoint.node));
            };
            if let Some(limit) = d.max_latency_ms
                && path.latency_ms > limit
            {
                return Err(format!("{} ms to `{}`, over {limit} ms", path.latency_ms, endpoint.node));
            }
            let floor = d.min_bandwidth_mbps * 1e6;
            if path.bandwidth_bps < floor {
                return Err(format!(
                    "{} Mbit/s to `{}`, under {} Mbit/s",
                    path.bandwidth_bps / 1e6,
                    endpoint.node,
                    d.min_bandwidth_mbps
                ));
            }
        }
        Ok(())
    }
}

/// The paths stay up long enough: to each input for its transfer, to each
/// successor (as it is at the hand-off) for the output's transfer.
#[derive(Debug, Clone, Copy)]
pub struct LinkAvailability;

impl Filter for LinkAvailability {
    fn name(&self) -> &'static str {
        "links"
    }

    fn check(&self, c: &Candidate<'_>, d: &Demand, _config: &SchedulerConfig) -> Result<(), String> {
        for (endpoint, path) in d.inputs.iter().zip(&c.inputs) {
            let Some(path) = path else { continue };
            let needed = path.transfer_ms(endpoint.bytes);
            if (path.remaining_ms as f64) < needed {
                return Err(format!(
                    "path to `{}` goes down in {} ms, the input needs {needed:.0} ms",
                    endpoint.node, path.remaining_ms
                ));
            }
        }
        for (endpoint, path) in d.successors.iter().zip(&c.successors) {
            let Some(path) = path else { continue };
            let needed = path.transfer_ms(endpoint.bytes);
            if (path.remaining_ms as f64) < needed {
                return Err(format!(
                    "at the hand-off the path to `{}` goes down in {} ms, the output needs {needed:.0} ms",
                    endpoint.node, path.remaining_ms
                ));
            }
        }
        Ok(())
    }
}

/// Below the node's temperature limit now and, by the heating model, still
/// below it at the end of the step under its load.
#[derive(Debug, Clone, Copy)]
pub struct Temperature;

impl Filter for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn check(&self, c: &Candidate<'_>, d: &Demand, _config: &SchedulerConfig) -> Result<(), String> {
        let limit = c.node.resources.max_temperature_c;
        if limit <= 0.0 {
            return Ok(());
        }
        let now = c.state.temperature_c;
        if now >= limit {
            return Err(format!("{now:.1} °C, at or over its {limit} °C limit"));
        }
        let after = models::temperature_after(&c.node.resources, &c.state, d.duration_ms, d.power_w);
        if after >= limit {
            return Err(format!("would reach {after:.1} °C under the step's load, limit {limit} °C"));
        }
        Ok(())
    }
}

/// Idle draw, what runs now and the step together within the node's power
/// budget (`power_w`; 0: unconstrained).
#[derive(Debug, Clone, Copy)]
pub struct PowerBudget;

impl Filter for PowerBudget {
    fn name(&self) -> &'static str {
        "power"
    }

    fn check(&self, c: &Candidate<'_>, d: &Demand, _config: &SchedulerConfig) -> Result<(), String> {
        let r = &c.node.resources;
        if r.power_w <= 0.0 {
            return Ok(());
        }
        let draw = r.idle_w + c.state.power_used_w + d.power_w;
        if draw > r.power_w {
            return Err(format!("would draw {draw} W of its {} W budget", r.power_w));
        }
        Ok(())
    }
}

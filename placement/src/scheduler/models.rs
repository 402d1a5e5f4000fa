//! The physical models the scheduler's filters and scores consult: a battery
//! charged by solar panels while the node is sunlit (eclipse windows repeat
//! with the orbit), and a first-order heating model driven by load. Pure
//! functions of a node's [`Resources`] and its [`NodeState`].

use crate::topology::{Resources, Window};

use super::NodeState;

/// Default thermal time constant when a node has a heating model but sets
/// none, s.
pub const DEFAULT_THERMAL_TAU_S: f64 = 600.0;

/// Whether the node is sunlit at `t_ms` (not inside an eclipse window of the
/// repeating `period_ms`).
pub fn sunlit(r: &Resources, period_ms: Option<u64>, t_ms: u64) -> bool {
    match period_ms {
        Some(p) if p > 0 && !r.eclipse.is_empty() => {
            let phase = t_ms % p;
            !r.eclipse.iter().any(|w| w.start_ms <= phase && phase < w.end_ms)
        }
        _ => true,
    }
}

/// The instants in `(from, to)` at which the node enters or leaves an
/// eclipse, in order: between two of them the net power is constant.
fn eclipse_edges(eclipse: &[Window], period_ms: u64, from: u64, to: u64) -> Vec<u64> {
    let mut edges = Vec::new();
    if period_ms == 0 || eclipse.is_empty() || to <= from {
        return edges;
    }
    let mut cycle = from / period_ms;
    loop {
        let base = cycle.saturating_mul(period_ms);
        if base >= to {
            break;
        }
        for w in eclipse {
            for edge in [base + w.start_ms, base + w.end_ms] {
                if edge > from && edge < to {
                    edges.push(edge);
                }
            }
        }
        cycle += 1;
        // A window far longer than a period would loop long: a step longer
        // than 10,000 orbits is treated as ending there.
        if cycle > from / period_ms + 10_000 {
            break;
        }
    }
    edges.sort_unstable();
    edges.dedup();
    edges
}

/// The lowest and the final battery charge (Wh) while the node draws
/// `extra_w` above what it draws now for `duration_ms` from `t_ms`: the
/// charge moves by (solar when sunlit − idle − current load − extra) and is
/// clamped to the capacity. `None` when the node has no battery model.
pub fn battery_over(
    r: &Resources,
    state: &NodeState,
    period_ms: Option<u64>,
    t_ms: u64,
    duration_ms: u64,
    extra_w: f64,
) -> Option<(f64, f64)> {
    if r.battery_wh <= 0.0 {
        return None;
    }
    let end = t_ms.saturating_add(duration_ms);
    let mut points = vec![t_ms];
    points.extend(eclipse_edges(&r.eclipse, period_ms.unwrap_or(0), t_ms, end));
    points.push(end);
    let draw = r.idle_w + state.power_used_w + extra_w;
    let mut charge = state.battery_wh.clamp(0.0, r.battery_wh);
    let mut lowest = charge;
    for pair in points.windows(2) {
        let solar = if sunlit(r, period_ms, pair[0]) { r.solar_w } else { 0.0 };
        let hours = (pair[1] - pair[0]) as f64 / 3_600_000.0;
        charge = (charge + (solar - draw) * hours).clamp(0.0, r.battery_wh);
        lowest = lowest.min(charge);
    }
    Some((lowest, charge))
}

/// The node's temperature after `duration_ms` with `extra_w` more load than
/// now: it approaches `ambient + heat_c_per_w × load` with the node's
/// thermal time constant. Without a heating model: the current temperature.
pub fn temperature_after(r: &Resources, state: &NodeState, duration_ms: u64, extra_w: f64) -> f64 {
    if r.heat_c_per_w <= 0.0 {
        return state.temperature_c;
    }
    let tau_s = if r.thermal_tau_s > 0.0 { r.thermal_tau_s } else { DEFAULT_THERMAL_TAU_S };
    let load = r.idle_w + state.power_used_w + extra_w;
    let steady = r.ambient_c + r.heat_c_per_w * load;
    let decay = (-(duration_ms as f64 / 1000.0) / tau_s).exp();
    steady + (state.temperature_c - steady) * decay
}

/// The paper's heat score: 1 at or below `ok_c`, 0 at or above `stop_c`,
/// linear between (100 and 0 in the paper's percent).
pub fn heat_score(temperature_c: f64, ok_c: f64, stop_c: f64) -> f64 {
    if temperature_c <= ok_c {
        1.0
    } else if temperature_c >= stop_c || stop_c <= ok_c {
        0.0
    } else {
        (stop_c - temperature_c) / (stop_c - ok_c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat() -> Resources {
        Resources {
            battery_wh: 100.0,
            solar_w: 60.0,
            idle_w: 20.0,
            eclipse: vec![Window { start_ms: 3_600_000, end_ms: 5_400_000 }],
            heat_c_per_w: 0.5,
            thermal_tau_s: 600.0,
            ambient_c: 10.0,
            ..Resources::default()
        }
    }

    fn state(battery_wh: f64, temperature_c: f64) -> NodeState {
        NodeState { battery_wh, temperature_c, ..NodeState::default() }
    }

    #[test]
    fn battery_charges_in_sunlight_and_drains_in_eclipse() {
        let r = sat();
        let period = Some(5_400_000);
        // Sunlit hour: +40 W net, from 50 Wh to 90 Wh.
        let (low, end) = battery_over(&r, &state(50.0, 20.0), period, 0, 3_600_000, 0.0).unwrap();
        assert!((low - 50.0).abs() < 1e-9 && (end - 90.0).abs() < 1e-9, "{low} {end}");
        // Half an hour of eclipse at 20 W idle + 30 W load: −25 Wh.
        let (low, end) = battery_over(&r, &state(50.0, 20.0), period, 3_600_000, 1_800_000, 30.0).unwrap();
        assert!((low - 25.0).abs() < 1e-9 && (end - 25.0).abs() < 1e-9, "{low} {end}");
        // Across the edge: −10 Wh over the half hour of eclipse (idle only),
        // the lowest point at its end, then +10 Wh over a sunlit quarter hour.
        let (low, end) = battery_over(&r, &state(30.0, 20.0), period, 3_600_000, 2_700_000, 0.0).unwrap();
        assert!((low - 20.0).abs() < 1e-9 && (end - 30.0).abs() < 1e-9, "{low} {end}");
        // Clamped at capacity and at empty.
        let (_, end) = battery_over(&r, &state(99.0, 20.0), period, 0, 3_600_000, 0.0).unwrap();
        assert_eq!(end, 100.0);
        let (low, _) = battery_over(&r, &state(5.0, 20.0), period, 3_600_000, 1_800_000, 100.0).unwrap();
        assert_eq!(low, 0.0);
        assert!(battery_over(&Resources::default(), &state(0.0, 0.0), period, 0, 1, 1.0).is_none());
    }

    #[test]
    fn eclipse_repeats_with_the_period() {
        let r = sat();
        assert!(sunlit(&r, Some(5_400_000), 0));
        assert!(!sunlit(&r, Some(5_400_000), 3_600_000));
        assert!(!sunlit(&r, Some(5_400_000), 5_400_000 + 4_000_000));
        assert!(sunlit(&r, Some(5_400_000), 5_400_000 + 100));
        assert!(sunlit(&r, None, 3_600_000));
    }

    #[test]
    fn temperature_approaches_the_load_steady_state() {
        let r = sat();
        // idle 20 W + 40 W load: steady 10 + 0.5 × 60 = 40 °C.
        let t0 = temperature_after(&r, &state(50.0, 20.0), 0, 40.0);
        assert!((t0 - 20.0).abs() < 1e-9);
        let t_tau = temperature_after(&r, &state(50.0, 20.0), 600_000, 40.0);
        assert!((t_tau - (40.0 - 20.0 * (-1.0f64).exp())).abs() < 1e-9, "{t_tau}");
        let t_long = temperature_after(&r, &state(50.0, 20.0), 100_000_000, 40.0);
        assert!((t_long - 40.0).abs() < 1e-6);
        // Without a model the temperature stays.
        assert_eq!(temperature_after(&Resources::default(), &state(0.0, 33.0), 600_000, 500.0), 33.0);
    }

    #[test]
    fn heat_score_is_the_papers_ramp() {
        assert_eq!(heat_score(20.0, 65.0, 75.0), 1.0);
        assert_eq!(heat_score(65.0, 65.0, 75.0), 1.0);
        assert!((heat_score(70.0, 65.0, 75.0) - 0.5).abs() < 1e-12);
        assert_eq!(heat_score(75.0, 65.0, 75.0), 0.0);
        assert_eq!(heat_score(90.0, 65.0, 75.0), 0.0);
    }
}

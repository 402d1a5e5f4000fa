//! A median and its confidence interval from order statistics, with no
//! assumption about the distribution the samples come from.
//!
//! The number of samples below the true median is Binomial(n, ½), so the
//! interval between the `j`-th smallest and the `j`-th largest sample holds
//! the median with probability `1 − 2·P(B ≤ j − 1)`. [`median_interval`]
//! takes the narrowest such interval that reaches the level asked for.

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for no values or a value that is not a number.
pub fn median(values: &[f64]) -> Option<f64> {
    let sorted = sorted(values)?;
    let n = sorted.len();
    Some(if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 })
}

/// A distribution-free interval that holds the median of the distribution
/// `values` were drawn from (independently) with probability at least
/// `level` (e.g. 0.95): `(low, high, coverage)`, coverage being the
/// interval's exact probability. `None` when even the widest interval
/// (smallest to largest value) falls short of `level` — fewer than 6 values
/// at 95% — or for a value that is not a number, or `level` not in (0, 1).
pub fn median_interval(values: &[f64], level: f64) -> Option<(f64, f64, f64)> {
    if !(level > 0.0 && level < 1.0) {
        return None;
    }
    let sorted = sorted(values)?;
    let n = sorted.len();
    // P(B ≤ i) for B ~ Binomial(n, ½), term by term in log space (no
    // underflow for large n).
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_term = ln_half_n;
    let mut below = 0.0; // P(B ≤ j − 1)
    let mut best = None;
    for j in 1..=n / 2 {
        below += ln_term.exp();
        let coverage = 1.0 - 2.0 * below;
        if coverage < level {
            break;
        }
        best = Some((sorted[j - 1], sorted[n - j], coverage));
        let i = (j - 1) as f64;
        ln_term += ((n as f64 - i) / (i + 1.0)).ln();
    }
    best
}

fn sorted(values: &[f64]) -> Option<Vec<f64>> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn the_interval_takes_the_ranks_the_binomial_gives() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        // n = 20: P(B ≤ 5) = 0.0207, P(B ≤ 6) = 0.0577, so ranks 6 and 15.
        let (lo, hi, coverage) = median_interval(&values, 0.95).unwrap();
        assert_eq!((lo, hi), (6.0, 15.0));
        assert!((coverage - 0.9586).abs() < 1e-4, "{coverage}");
        // n = 6: only the smallest and largest, at 1 − 2/64.
        let (lo, hi, coverage) = median_interval(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 0.95).unwrap();
        assert_eq!((lo, hi), (1.0, 6.0));
        assert!((coverage - 62.0 / 64.0).abs() < 1e-12);
        // n = 5 reaches 1 − 2/32 = 93.75% at most.
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95), None);
        assert!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9).is_some());
        assert_eq!(median_interval(&[], 0.95), None);
        assert_eq!(median_interval(&values, 1.0), None);
        assert_eq!(median_interval(&[1.0, f64::NAN, 2.0, 3.0, 4.0, 5.0, 6.0], 0.95), None);
    }

    #[test]
    fn the_interval_holds_the_median_as_often_as_it_says() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in [6usize, 15, 30, 101] {
            let trials = 4000;
            let (mut held, mut said) = (0, 0.0);
            for _ in 0..trials {
                // A skewed distribution whose median is 1: e^(N(0, 1)).
                let values: Vec<f64> = (0..n)
                    .map(|_| {
                        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()).exp()
                    })
                    .collect();
                let (lo, hi, coverage) = median_interval(&values, 0.95).unwrap();
                held += usize::from(lo <= 1.0 && 1.0 <= hi);
                said += coverage;
            }
            let (held, said) = (held as f64 / trials as f64, said / trials as f64);
            assert!(said >= 0.95, "n {n}: coverage {said}");
            assert!((held - said).abs() < 0.015, "n {n}: held {held}, said {said}");
        }
    }

    #[test]
    fn large_counts_do_not_underflow() {
        let values: Vec<f64> = (0..5000).map(f64::from).collect();
        let (lo, hi, coverage) = median_interval(&values, 0.95).unwrap();
        assert!(lo < 2499.5 && hi > 2499.5 && hi - lo < 200.0, "{lo} {hi}");
        assert!((0.95..0.96).contains(&coverage), "{coverage}");
    }
}

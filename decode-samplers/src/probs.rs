//! Softmax and friends on one step's logits, shared by processors, selectors and verification.

/// `softmax(logits)` into `out` (resized), in f32 with an f64 sum. `-inf` gives exactly 0.
/// All `-inf` gives all 0.
pub fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    out.clear();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        out.resize(logits.len(), 0.0);
        return;
    }
    // Removed tokens are common (after top-k, all but k): skip their exp.
    out.extend(logits.iter().map(|&x| {
        if x == f32::NEG_INFINITY {
            0.0
        } else {
            (x - max).exp()
        }
    }));
    let sum: f64 = out.iter().map(|&p| p as f64).sum();
    let sum = sum as f32;
    out.iter_mut().for_each(|p| *p /= sum);
}

/// `softmax(logits)` as a new vector.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    softmax_into(logits, &mut out);
    out
}

/// `log_softmax(logits)` into `out`, in f32 with an f64 sum.
pub fn log_softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    out.clear();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        out.resize(logits.len(), f32::NEG_INFINITY);
        return;
    }
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_sum = sum.ln() as f32;
    out.extend(logits.iter().map(|&x| x - max - log_sum));
}

/// Indices of the finite entries of `logits`, sorted by value ascending (ties: lower id first),
/// into `out`. Removed (`-inf`) entries are left out, so after a top-k only k remain to sort.
pub fn finite_ascending(logits: &[f32], out: &mut Vec<u32>) {
    out.clear();
    out.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .map(|(i, _)| i as u32),
    );
    out.sort_by(|&a, &b| {
        logits[a as usize]
            .total_cmp(&logits[b as usize])
            .then(a.cmp(&b))
    });
}

/// The finite entries of `logits` as (value, index) pairs sorted by value ascending (ties: lower
/// index first), into `out`: the order of [`finite_ascending`], but sorting pairs, which is
/// several times faster on a whole vocabulary than sorting indices through the row.
pub fn finite_ascending_pairs(logits: &[f32], out: &mut Vec<(f32, u32)>) {
    out.clear();
    out.extend(
        logits
            .iter()
            .copied()
            .zip(0u32..)
            .filter(|(x, _)| x.is_finite()),
    );
    // Indices break ties, so the order is total and an unstable sort gives the stable one's.
    out.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
}

/// Pearson's chi-square statistic of `counts` (from `draws` draws) against the probabilities
/// `probs`, over the bins expecting at least 5 draws (the rest pooled into one), with its degrees of
/// freedom. For checking that a sampler draws from the distribution it claims.
pub fn chi_square(counts: &[u64], probs: &[f64], draws: u64) -> (f64, usize) {
    let (mut stat, mut bins, mut pooled_obs, mut pooled_exp) = (0.0, 0usize, 0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let expected = p * draws as f64;
        if expected >= 5.0 {
            stat += (c as f64 - expected).powi(2) / expected;
            bins += 1;
        } else {
            pooled_obs += c as f64;
            pooled_exp += expected;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(5.0);
        bins += 1;
    }
    (stat, bins.saturating_sub(1))
}

/// The value a chi-square variable with `df` degrees of freedom exceeds with probability 1e-4
/// (Wilson–Hilferty approximation).
pub fn chi_square_critical_1e4(df: usize) -> f64 {
    let k = df.max(1) as f64;
    let z = 3.719; // the standard normal's 1 − 1e-4 quantile
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_ignores_removed_tokens() {
        let p = softmax(&[0.0, f32::NEG_INFINITY, 0.0]);
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
        assert_eq!(softmax(&[f32::NEG_INFINITY; 2]), vec![0.0, 0.0]);
    }

    #[test]
    fn ascending_order_skips_removed() {
        let mut idx = Vec::new();
        finite_ascending(&[3.0, f32::NEG_INFINITY, 1.0, 3.0], &mut idx);
        assert_eq!(idx, vec![2, 0, 3]);
        let mut pairs = Vec::new();
        finite_ascending_pairs(&[3.0, f32::NEG_INFINITY, 1.0, 3.0], &mut pairs);
        assert_eq!(pairs, vec![(1.0, 2), (3.0, 0), (3.0, 3)]);
    }
}

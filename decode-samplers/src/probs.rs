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
    }
}

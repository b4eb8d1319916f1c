//! The numeric checks of every step: raw logits must be finite, processed logits usable, and the
//! log-probability reported for a chosen token.

use decode_core::{Error, Result};

/// Refuses a row of raw logits holding NaN or ±∞ (the model's weights or inputs are not finite):
/// [`Error::NonFinite`] naming the step and the sequence. One pass that vectorises: multiplying
/// by zero turns only NaN and ±∞ into NaN, and a NaN survives any sum.
pub fn check_logits(raw: &[f32], step: usize, sequence: usize) -> Result<()> {
    let mut lanes = [0f32; 16];
    let chunks = raw.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * 0.0).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v * 0.0;
        }
    }
    if raw.is_empty() || (lanes.iter().sum::<f32>() + tail).is_nan() {
        let what = match raw.iter().find(|v| !v.is_finite()) {
            Some(v) if v.is_nan() => "NaN",
            Some(_) => "an infinite value",
            None => "no values",
        };
        return Err(Error::NonFinite(format!(
            "the model's logits hold {what} at step {step} of sequence {sequence}: its weights \
             or inputs are not finite"
        )));
    }
    Ok(())
}

/// Refuses processed logits that are not usable: NaN or +∞ anywhere (a setting's effect
/// overflowed f32: a tiny temperature, a huge penalty or bias; the softmax would be NaN), or a
/// chosen token at −∞ (the processors masked every token). [`Error::NonFinite`], naming the step
/// and the sequence. One pass without early exit, so it vectorises (−∞ is a masked token, fine).
pub fn check_chosen(processed: &[f32], id: u32, step: usize, sequence: usize) -> Result<()> {
    let broken = processed
        .iter()
        .fold(false, |acc, &v| acc | v.is_nan() | (v == f32::INFINITY));
    if broken {
        let v = processed
            .iter()
            .find(|v| v.is_nan() || **v == f32::INFINITY)
            .copied()
            .unwrap_or(f32::NAN);
        return Err(Error::NonFinite(format!(
            "the processed logits hold {v} at step {step} of sequence {sequence}: a setting's \
             effect overflows f32 (temperature, penalty or logit bias)"
        )));
    }
    match processed.get(id as usize) {
        Some(v) if v.is_finite() => Ok(()),
        Some(_) => Err(Error::NonFinite(format!(
            "every token was masked at step {step} of sequence {sequence} (banned tokens, \
             penalties or filters left none)"
        ))),
        None => Err(Error::Shape(format!(
            "token {id} chosen from {} logits",
            processed.len()
        ))),
    }
}

/// `log_softmax(values)[index]`, computed stably in f64.
pub fn log_softmax_at(values: &[f32], index: u32) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = values.iter().map(|&v| (v as f64 - max).exp()).sum();
    (values[index as usize] as f64 - max - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_logits_are_errors() {
        let mut row = vec![0.5f32; 103];
        assert!(check_logits(&row, 0, 0).is_ok());
        for (i, bad) in [(0, f32::NAN), (50, f32::INFINITY), (102, f32::NEG_INFINITY)] {
            let keep = row[i];
            row[i] = bad;
            let err = check_logits(&row, 4, 1).unwrap_err().to_string();
            assert!(err.contains("step 4 of sequence 1"), "{err}");
            row[i] = keep;
        }
        assert!(check_logits(&[], 0, 0).is_err());
        assert!(check_chosen(&[0.0, f32::NEG_INFINITY], 1, 0, 0).is_err());
        assert!(check_chosen(&[f32::NAN, 1.0], 0, 0, 0).is_err());
        assert!(check_chosen(&[f32::INFINITY], 0, 0, 0).is_err());
        assert!(check_chosen(&[1.0], 0, 0, 0).is_ok());
    }

    #[test]
    fn log_softmax_of_uniform() {
        let lp = log_softmax_at(&[0.5; 4], 2);
        assert!((lp - (0.25f32).ln()).abs() < 1e-6);
    }
}

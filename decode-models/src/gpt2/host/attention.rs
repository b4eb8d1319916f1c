//! Causal self-attention over the KV cache, on the host.
//!
//! The new keys and values are written into the cache's slots first; then each new token attends
//! to every earlier real slot and to itself. Padding and rolled-back slots (`real == false`) are
//! skipped, which is the same as transformers' additive mask.

use decode_core::HostLayer;
use rayon::prelude::*;

/// Below this many multiply-adds the heads run on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// Where the new tokens of a pass go.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Tokens per row in this pass.
    pub steps: usize,
    /// First cache slot they are written to.
    pub start: usize,
}

/// `qkv` is `[rows·steps, 3·embd]` (queries, keys, values side by side, heads contiguous within
/// each); `real[row]` says which of the row's slots `0..start + steps` hold real tokens. Writes the
/// new keys and values into `cache` and returns the attention output `[rows·steps, embd]`.
pub fn attend(
    qkv: &[f32],
    cache: &mut HostLayer,
    span: Span,
    real: &[&[bool]],
    scale: f32,
) -> Vec<f32> {
    let [rows, heads, capacity, head_dim] = cache.shape;
    let Span { steps, start } = span;
    let embd = heads * head_dim;
    let len = start + steps;
    for r in 0..rows {
        for i in 0..steps {
            let token = &qkv[(r * steps + i) * 3 * embd..(r * steps + i + 1) * 3 * embd];
            for h in 0..heads {
                let dst = ((r * heads + h) * capacity + start + i) * head_dim;
                let src = h * head_dim;
                cache.keys[dst..dst + head_dim]
                    .copy_from_slice(&token[embd + src..embd + src + head_dim]);
                cache.values[dst..dst + head_dim]
                    .copy_from_slice(&token[2 * embd + src..2 * embd + src + head_dim]);
            }
        }
    }

    // Per (row, head): `[steps, head_dim]` outputs.
    let mut per_head = vec![0f32; rows * heads * steps * head_dim];
    let (keys, values) = (&cache.keys, &cache.values);
    let one = |(rh, out): (usize, &mut [f32])| {
        let (r, h) = (rh / heads, rh % heads);
        let base = rh * capacity * head_dim;
        let k = &keys[base..base + len * head_dim];
        let v = &values[base..base + len * head_dim];
        let mut scores = vec![0f32; len];
        for i in 0..steps {
            let me = start + i;
            let q = &qkv[(r * steps + i) * 3 * embd + h * head_dim..][..head_dim];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores[..=me].iter_mut().enumerate() {
                *s = if j == me || real[r][j] {
                    dot(q, &k[j * head_dim..(j + 1) * head_dim]) * scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*s);
            }
            let mut sum = 0f32;
            for s in &mut scores[..=me] {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[i * head_dim..(i + 1) * head_dim];
            for (j, &s) in scores[..=me].iter().enumerate() {
                if s > 0.0 {
                    let p = s / sum;
                    for (o, &v) in o.iter_mut().zip(&v[j * head_dim..(j + 1) * head_dim]) {
                        *o += p * v;
                    }
                }
            }
        }
    };
    let chunk = steps * head_dim;
    if rows * heads * steps * len * head_dim >= PARALLEL_WORK {
        per_head.par_chunks_mut(chunk).enumerate().for_each(one);
    } else {
        per_head.chunks_mut(chunk).enumerate().for_each(one);
    }

    // `[rows, heads, steps, head_dim]` → `[rows·steps, embd]`.
    let mut out = vec![0f32; rows * steps * embd];
    for (rh, block) in per_head.chunks_exact(chunk).enumerate() {
        let (r, h) = (rh / heads, rh % heads);
        for (i, src) in block.chunks_exact(head_dim).enumerate() {
            let dst = (r * steps + i) * embd + h * head_dim;
            out[dst..dst + head_dim].copy_from_slice(src);
        }
    }
    out
}

/// `a · b`, in eight lanes so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two heads of width 2, one row: the second token attends to both, equally when keys match.
    #[test]
    fn attends_to_earlier_real_slots_and_itself() {
        let (heads, head_dim, capacity) = (2, 2, 4);
        let mut cache = HostLayer {
            keys: vec![0.0; heads * capacity * head_dim],
            values: vec![0.0; heads * capacity * head_dim],
            shape: [1, heads, capacity, head_dim],
        };
        // Token: q (4), k (4), v (4). Equal keys → equal weights.
        let t0 = [1., 0., 1., 0., 1., 1., 1., 1., 2., 4., 6., 8.];
        let t1 = [1., 0., 1., 0., 1., 1., 1., 1., 4., 8., 10., 12.];
        let first = attend(
            &t0,
            &mut cache,
            Span { steps: 1, start: 0 },
            &[&[true]],
            1.0,
        );
        assert_eq!(first, [2., 4., 6., 8.]);
        let both = [true, true];
        let second = attend(&t1, &mut cache, Span { steps: 1, start: 1 }, &[&both], 1.0);
        assert_eq!(second, [3., 6., 8., 10.]);
        // Slot 0 hidden: only itself.
        let hidden = [false, true];
        let third = attend(
            &t1,
            &mut cache,
            Span { steps: 1, start: 1 },
            &[&hidden],
            1.0,
        );
        assert_eq!(third, [4., 8., 10., 12.]);
    }
}

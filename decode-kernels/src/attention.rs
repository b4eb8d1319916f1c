//! Causal self-attention over a KV cache held in host memory, with grouped-query attention
//! (several query heads sharing one key/value head; one each is plain multi-head attention).
//!
//! The new keys and values are written into the cache's slots first; then each new token attends
//! to every earlier real slot and to itself. Padding and rolled-back slots (`real == false`) are
//! skipped, which is the same as transformers' additive mask.

use crate::activation::exp;
use crate::dense::{self, TILE};
use crate::scratch::with_scratch;

/// One layer's keys and values, `[rows, kv_heads, capacity, head_dim]` each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct KvLayer {
    /// Keys.
    pub keys: Vec<f32>,
    /// Values.
    pub values: Vec<f32>,
    /// `[rows, kv_heads, capacity, head_dim]`.
    pub shape: [usize; 4],
}

/// Below this many multiply-adds the heads run on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;
/// From this many new tokens a head of size 64 computes as two matrix products (laying the keys
/// out as tiles costs about one query's work).
const PRODUCTS_FROM: usize = 8;

/// Where the new tokens of a pass go.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Tokens per row in this pass.
    pub steps: usize,
    /// First cache slot they are written to.
    pub start: usize,
}

/// `qkv` is `[rows·steps, (heads + 2·kv_heads)·head_dim]`: each token's queries (`heads` of
/// them), keys and values (`kv_heads` each, the cache's second dimension) side by side, heads
/// contiguous within each; query head `h` reads key/value head `h / (heads / kv_heads)`.
/// `real[row]` says which of the row's slots `0..start + steps` hold real tokens. Writes the new
/// keys and values into `cache` and returns the attention output `[rows·steps, heads·head_dim]`.
///
/// # Panics
///
/// If `heads` is not a multiple of the cache's `kv_heads`, or the slices are shorter than the
/// shapes say (callers size them from the same configuration).
pub fn attend(
    qkv: &[f32],
    heads: usize,
    cache: &mut KvLayer,
    span: Span,
    real: &[&[bool]],
    scale: f32,
) -> Vec<f32> {
    let [rows, kv_heads, capacity, head_dim] = cache.shape;
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{heads} query heads over {kv_heads} key/value heads"
    );
    let group = heads / kv_heads;
    let Span { steps, start } = span;
    let embd = heads * head_dim;
    let kv_embd = kv_heads * head_dim;
    let width = embd + 2 * kv_embd;
    let len = start + steps;
    for r in 0..rows {
        for i in 0..steps {
            let token = &qkv[(r * steps + i) * width..(r * steps + i + 1) * width];
            let (keys, values) = token[embd..].split_at(kv_embd);
            for h in 0..kv_heads {
                let dst = ((r * kv_heads + h) * capacity + start + i) * head_dim;
                let src = h * head_dim;
                cache.keys[dst..dst + head_dim].copy_from_slice(&keys[src..src + head_dim]);
                cache.values[dst..dst + head_dim].copy_from_slice(&values[src..src + head_dim]);
            }
        }
    }

    // Per (row, head): `[steps, head_dim]` outputs.
    let mut per_head = vec![0f32; rows * heads * steps * head_dim];
    let one = |rh: usize, out: &mut [f32]| {
        let (r, h) = (rh / heads, rh % heads);
        let base = (r * kv_heads + h / group) * capacity * head_dim;
        let head = Head {
            queries: &qkv[r * steps * width + h * head_dim..],
            query_stride: width,
            keys: &cache.keys[base..base + len * head_dim],
            values: &cache.values[base..base + len * head_dim],
            real: real[r],
            head_dim,
            start,
            scale,
        };
        head.attend(out);
    };
    let chunk = steps * head_dim;
    if rows * heads * steps * len * head_dim >= PARALLEL_WORK {
        crate::pool::for_each_chunk_mut(&mut per_head, chunk, one);
    } else {
        per_head
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(rh, out)| one(rh, out));
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

/// One (row, head) pair of a pass.
struct Head<'a> {
    /// The first new token's query; the next ones are `query_stride` apart.
    queries: &'a [f32],
    query_stride: usize,
    /// `[len, head_dim]`, the new tokens' slots included.
    keys: &'a [f32],
    values: &'a [f32],
    real: &'a [bool],
    head_dim: usize,
    start: usize,
    scale: f32,
}

impl Head<'_> {
    /// Writes `[steps, head_dim]` outputs, vectorised for AVX-512 or AVX2 where the CPU has it.
    fn attend(&self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match crate::cpu::level() {
            // SAFETY: the CPU has AVX-512F (`cpu::level` checked).
            crate::cpu::Simd::Avx512 => return unsafe { self.attend_avx512(out) },
            // SAFETY: the CPU has AVX2 and FMA (`cpu::level` checked).
            crate::cpu::Simd::Avx2 => return unsafe { self.attend_avx2(out) },
            crate::cpu::Simd::Portable => {}
        }
        self.attend_lanes(out);
    }

    /// # Safety
    ///
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn attend_avx512(&self, out: &mut [f32]) {
        self.attend_lanes(out);
    }

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_avx2(&self, out: &mut [f32]) {
        self.attend_lanes(out);
    }

    #[inline(always)]
    fn attend_lanes(&self, out: &mut [f32]) {
        let hd = self.head_dim;
        let len = self.keys.len() / hd;
        if hd == TILE && out.len() / hd >= PRODUCTS_FROM {
            return self.attend_as_products(out, len);
        }
        let mut scores = vec![0f32; len];
        for (i, o) in out.chunks_exact_mut(hd).enumerate() {
            let me = self.start + i;
            let q = &self.queries[i * self.query_stride..][..hd];
            let scores = &mut scores[..=me];
            for (s, k) in scores.iter_mut().zip(self.keys.chunks_exact(hd)) {
                *s = dot(q, k);
            }
            self.softmax(scores);
            for (&p, v) in scores.iter().zip(self.values.chunks_exact(hd)) {
                // Hidden slots (weight 0) are skipped; a NaN weight is not.
                if p > 0.0 || p.is_nan() {
                    for (o, &v) in o.iter_mut().zip(v) {
                        *o += p * v;
                    }
                }
            }
        }
    }
}

impl Head<'_> {
    /// Turns the raw scores of one query against slots `0..=me` (`me` the query's own slot) into
    /// attention weights: scaled, hidden slots at zero weight, normalised.
    #[inline(always)]
    fn softmax(&self, scores: &mut [f32]) {
        let me = scores.len() - 1;
        let mut max = f32::NEG_INFINITY;
        // A NaN or +∞ score (non-finite activations) must reach the logits, where the engine
        // refuses them: `max` and the vectorised `exp` would clamp it to a plausible weight.
        let mut poisoned = false;
        for (j, s) in scores.iter_mut().enumerate() {
            *s = if j == me || self.real[j] {
                *s * self.scale
            } else {
                f32::NEG_INFINITY
            };
            poisoned |= s.is_nan() || *s == f32::INFINITY;
            max = max.max(*s);
        }
        if poisoned {
            scores.fill(f32::NAN);
            return;
        }
        for s in scores.iter_mut() {
            // exp(−∞) must be 0: the vectorised exp saturates, so hidden slots are zeroed.
            // (No running sum here: a sequential f32 sum would keep the loop scalar.)
            let e = exp(*s - max);
            *s = if *s == f32::NEG_INFINITY { 0.0 } else { e };
        }
        let inv = 1.0 / sum(scores);
        scores.iter_mut().for_each(|s| *s *= inv);
    }

    /// A prompt's attention (`head_dim` = 64) as two products on the float tile kernel
    /// (compute-bound work at the FMA units' rate): the scores `Q·Kᵀ`, the keys laid out as tiles
    /// of 64 keys, then `P·V`, the values already being one tile (`[len][64]`). The products run
    /// over every key, the causal half masked to zero weight: twice the multiply-adds of the
    /// triangle, several times faster than a loop per query.
    #[inline(always)]
    fn attend_as_products(&self, out: &mut [f32], len: usize) {
        let hd = TILE;
        let steps = out.len() / hd;
        let tiles = len.div_ceil(TILE);
        with_scratch(
            steps * hd + tiles * hd * TILE + tiles * steps * TILE + steps * len,
            |buf| {
                let (q, rest) = buf.split_at_mut(steps * hd);
                let (kt, rest) = rest.split_at_mut(tiles * hd * TILE);
                let (scores, p) = rest.split_at_mut(tiles * steps * TILE);
                for (i, q) in q.chunks_exact_mut(hd).enumerate() {
                    q.copy_from_slice(&self.queries[i * self.query_stride..][..hd]);
                }
                kt.fill(0.0);
                for (j, k) in self.keys.chunks_exact(hd).enumerate() {
                    let (t, c) = (j / TILE, j % TILE);
                    for (d, &v) in k.iter().enumerate() {
                        kt[(t * hd + d) * TILE + c] = v;
                    }
                }
                for (kt, s) in kt
                    .chunks_exact(hd * TILE)
                    .zip(scores.chunks_exact_mut(steps * TILE))
                {
                    dense::tile(kt, q, steps, hd, s);
                }
                for (i, row) in p.chunks_exact_mut(len).enumerate() {
                    let me = self.start + i;
                    for (j, v) in row[..=me].iter_mut().enumerate() {
                        *v = scores[((j / TILE) * steps + i) * TILE + j % TILE];
                    }
                    self.softmax(&mut row[..=me]);
                    row[me + 1..].fill(0.0);
                }
                dense::tile(self.values, p, steps, len, out);
            },
        );
    }
}

/// `Σ v`, in sixteen lanes so it vectorises.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `a · b`, in sixteen lanes so it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a16.zip(b16) {
        for l in 0..16 {
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
        let mut cache = KvLayer {
            keys: vec![0.0; heads * capacity * head_dim],
            values: vec![0.0; heads * capacity * head_dim],
            shape: [1, heads, capacity, head_dim],
        };
        // Token: q (4), k (4), v (4). Equal keys → equal weights.
        let t0 = [1., 0., 1., 0., 1., 1., 1., 1., 2., 4., 6., 8.];
        let t1 = [1., 0., 1., 0., 1., 1., 1., 1., 4., 8., 10., 12.];
        let first = attend(
            &t0,
            heads,
            &mut cache,
            Span { steps: 1, start: 0 },
            &[&[true]],
            1.0,
        );
        assert_eq!(first, [2., 4., 6., 8.]);
        let both = [true, true];
        let second = attend(
            &t1,
            heads,
            &mut cache,
            Span { steps: 1, start: 1 },
            &[&both],
            1.0,
        );
        assert_eq!(second, [3., 6., 8., 10.]);
        // Slot 0 hidden: only itself.
        let hidden = [false, true];
        let third = attend(
            &t1,
            heads,
            &mut cache,
            Span { steps: 1, start: 1 },
            &[&hidden],
            1.0,
        );
        assert_eq!(third, [4., 8., 10., 12.]);
    }

    /// A NaN or +∞ activation reaches the output on both paths (the step path and, for a long
    /// prompt of head size 64, the products), never a clamped, plausible weight.
    #[test]
    fn non_finite_scores_reach_the_output() {
        for (head_dim, steps) in [(4, 3), (64, 10)] {
            for poison in [f32::NAN, f32::INFINITY] {
                let embd = head_dim;
                let mut qkv = vec![0.25f32; steps * 3 * embd];
                // The first token's key: every later query's score against it is non-finite.
                qkv[embd] = poison;
                let mut cache = KvLayer {
                    keys: vec![0.0; steps * head_dim],
                    values: vec![0.0; steps * head_dim],
                    shape: [1, 1, steps, head_dim],
                };
                let real = vec![true; steps];
                let out = attend(&qkv, 1, &mut cache, Span { steps, start: 0 }, &[&real], 1.0);
                for (i, token) in out.chunks_exact(embd).enumerate() {
                    assert!(
                        token.iter().all(|v| v.is_nan()),
                        "head_dim {head_dim}, {poison}: token {i} gave {token:?}"
                    );
                }
            }
        }
    }

    /// A prompt long enough for the products path gives what one token at a time gives
    /// (the per-key dot products), padding slots included.
    #[test]
    fn prompt_paths_match_the_step_path() {
        // head_dim 16: one dot product per key; 64: the tile products (70 keys: a partial tile).
        for (head_dim, steps) in [(16, 20), (64, 70)] {
            prompt_path_matches_the_step_path(2, head_dim, steps);
        }
    }

    fn prompt_path_matches_the_step_path(heads: usize, head_dim: usize, steps: usize) {
        let embd = heads * head_dim;
        let qkv: Vec<f32> = (0..steps * 3 * embd)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0)
            .collect();
        let real: Vec<bool> = (0..steps).map(|j| j % 5 != 3).collect();
        let layer = || KvLayer {
            keys: vec![0.0; heads * steps * head_dim],
            values: vec![0.0; heads * steps * head_dim],
            shape: [1, heads, steps, head_dim],
        };
        let mut whole = layer();
        let at_once = attend(
            &qkv,
            heads,
            &mut whole,
            Span { steps, start: 0 },
            &[&real],
            0.25,
        );
        let mut stepped = layer();
        for i in 0..steps {
            let token = &qkv[i * 3 * embd..(i + 1) * 3 * embd];
            let got = attend(
                token,
                heads,
                &mut stepped,
                Span { steps: 1, start: i },
                &[&real[..=i]],
                0.25,
            );
            for (a, b) in got.iter().zip(&at_once[i * embd..(i + 1) * embd]) {
                assert!((a - b).abs() < 1e-5, "token {i}: {a} vs {b}");
            }
        }
    }

    /// Grouped-query attention equals multi-head attention with each key/value head repeated
    /// for its group of query heads (transformers' `repeat_kv`), for every ratio from 1 to 7.
    #[test]
    fn grouped_query_attention_is_repeated_key_value_heads() {
        let (head_dim, steps, kv_heads) = (8, 5, 2);
        for group in 1..=7 {
            let heads = kv_heads * group;
            let width = (heads + 2 * kv_heads) * head_dim;
            let qkv: Vec<f32> = (0..steps * width)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0)
                .collect();
            // The same tokens with each key/value head written out once per query head.
            let mut repeated = Vec::new();
            for token in qkv.chunks_exact(width) {
                let (q, kv) = token.split_at(heads * head_dim);
                let (k, v) = kv.split_at(kv_heads * head_dim);
                repeated.extend_from_slice(q);
                for part in [k, v] {
                    for h in 0..heads {
                        let src = (h / group) * head_dim;
                        repeated.extend_from_slice(&part[src..src + head_dim]);
                    }
                }
            }
            let layer = |kv| KvLayer {
                keys: vec![0.0; kv * steps * head_dim],
                values: vec![0.0; kv * steps * head_dim],
                shape: [1, kv, steps, head_dim],
            };
            let real = vec![true; steps];
            let span = Span { steps, start: 0 };
            let gqa = attend(&qkv, heads, &mut layer(kv_heads), span, &[&real], 0.3);
            let mha = attend(&repeated, heads, &mut layer(heads), span, &[&real], 0.3);
            assert_eq!(gqa, mha, "{group} query heads per key/value head");
        }
    }
}

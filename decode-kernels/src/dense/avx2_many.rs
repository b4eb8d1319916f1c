//! The tile product for many rows (a prompt, a batch, a speculative verify) on AVX2 CPUs without
//! AVX-512: compute-bound, so written for the FMA units rather than for the weight stream.
//!
//! The AVX2 kernel of [`super::avx2`] keeps a row's 64 accumulators in registers, two rows
//! sharing each weight load: the weights stream once, but at about a third of the FMA peak.
//! Here the tile is cut into blocks of `KC` inputs (32 KiB of f32; half as many where L1 holds
//! no more than that), which stay in L1 while every row group uses them, the groups taking turns
//! asking for the next block; f16/bf16 blocks are widened
//! once into an f32 scratch block, and a register-blocked micro-kernel sweeps the rows: up to 6
//! rows × 16 columns (12 accumulators, each weight load feeding 6 FMAs), the tile in 4 column
//! strips. Measured (`tile_many_timing`): about 97% of the FMA peak from 16 rows on Zen 5, and
//! on Zen 3 1.3–1.7× [`super::avx2`]'s kernel from 32 rows; there it loses to it on passes of
//! fewer than 16 rows (which stream the weights from memory), so [`super::tile`] calls
//! [`tile_many`] from `AVX2_MANY_ROWS` rows. Rows are split into groups of near-equal size (32 rows:
//! 6+6+5+5+5+5, not 6·5 + 2), so no pass runs with too few accumulators to hide the FMA latency.
//!
//! There is no AVX-512 kernel here: [`super::avx512`]'s (6 rows × 64 columns, 24 of the 32 registers
//! holding accumulators) already reaches the FMA peak, and a blocked AVX-512 version of this
//! kernel measured no faster on Zen 5 (tied with weights widened in registers, slower widening them
//! per block).

use std::any::TypeId;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::avx2::load8;
use super::{TILE, Weight, groups};

/// Inputs per block at most: `KC × TILE` f32 weights (32 KiB) stay in L1 while every row group
/// uses them (see [`block_inputs`]).
const KC: usize = 128;
/// Rows per group at most: 6 × 2 vectors = 12 accumulators, 2 of weights, 1 broadcast (of 16).
const ROWS: usize = 6;
/// Vectors of 8 columns per micro-kernel: 16 columns, the tile in 4 strips.
const VECS: usize = 2;
/// Columns per micro-kernel.
const STRIP: usize = 8 * VECS;

/// A block of widened weights, `[KC][TILE]` f32, cache-line aligned.
#[repr(C, align(64))]
struct Block([f32; KC * TILE]);

/// Where a micro-kernel asks for the weights it will need next (the next block's rows, same
/// columns).
#[derive(Clone, Copy)]
struct Ahead {
    at: *const u8,
    /// Asks for every `every`-th weight row, from row `phase`: the row groups of a block take
    /// turns, so the next block's requests spread over the whole block's work.
    every: usize,
    phase: usize,
    /// Bytes from one weight row to the next (`TILE` weights).
    row: usize,
    /// Bytes of one row a strip takes (`STRIP` weights).
    width: usize,
}

impl Ahead {
    /// From the next block's start, over weights of type `T`, for the group `phase` of
    /// `every`.
    #[inline(always)]
    fn new<T>(at: *const u8, every: usize, phase: usize) -> Self {
        let size = std::mem::size_of::<T>();
        Ahead {
            at,
            every,
            phase,
            row: TILE * size,
            width: STRIP * size,
        }
    }

    /// The same for column strip `s`.
    #[inline(always)]
    fn strip(self, s: usize) -> Self {
        Ahead {
            at: self.at.wrapping_add(s * self.width),
            ..self
        }
    }

    /// Asks for the strip's part of weight row `kk` (into L2: L1 holds the current block).
    ///
    /// # Safety
    ///
    /// The CPU has SSE (every x86-64 does); a prefetch reads nothing, so any address will do.
    #[inline(always)]
    unsafe fn fetch(self, kk: usize) {
        let p = self.at.wrapping_add(kk * self.row);
        let mut off = 0;
        while off < self.width {
            // SAFETY: prefetching never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
}

/// `n` weights (a multiple of 8) widened into `dst` (32-byte aligned).
///
/// # Safety
///
/// The CPU has AVX2 and F16C; `src` holds `n` readable values and `dst` has room for `n` (a
/// multiple of 8).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen<T: Weight>(src: *const T, n: usize, dst: *mut f32) {
    unsafe {
        for i in (0..n).step_by(8) {
            _mm256_store_ps(dst.add(i), load8(src.add(i)));
        }
    }
}

/// `R` rows × `STRIP` columns of f32 weights `w` (`[kc]` rows `TILE` apart):
/// `out[r][..] (+)= Σ_{kk < kc} x[r·k + kk] · w[kk][..]`; `add` when `out` holds the previous
/// blocks' sums.
///
/// # Safety
///
/// The CPU has AVX2 and FMA; the pointers cover the rows, inputs and columns the arguments
/// name ([`tile_many`] checked the slices they come from).
#[inline(always)]
unsafe fn kernel<const R: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
    kc: usize,
    out: *mut f32,
    add: bool,
    ahead: Ahead,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); VECS]; R];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(out.add(r * TILE + j * 8));
                }
            }
        }
        let mut next = ahead.phase;
        for kk in 0..kc {
            if kk == next {
                ahead.fetch(kk);
                next += ahead.every;
            }
            let row = w.add(kk * TILE);
            let mut v = [_mm256_setzero_ps(); VECS];
            for (j, v) in v.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(row.add(j * 8));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let s = _mm256_broadcast_ss(&*x.add(r * k + kk));
                for (a, &v) in acc.iter_mut().zip(&v) {
                    *a = _mm256_fmadd_ps(s, v, *a);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * TILE + j * 8), *a);
            }
        }
    }
}

/// One group of `R` rows over the block, the tile's columns `STRIP` at a time.
///
/// # Safety
///
/// As [`kernel`]'s.
#[inline(always)]
unsafe fn pass<const R: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
    kc: usize,
    out: *mut f32,
    add: bool,
    ahead: Ahead,
) {
    for s in 0..TILE / STRIP {
        // SAFETY: strip `s` of the block and of the outputs.
        unsafe {
            let (w, o) = (w.add(s * STRIP), out.add(s * STRIP));
            kernel::<R>(w, x, k, kc, o, add, ahead.strip(s));
        }
    }
}

/// Inputs per block on this CPU: [`KC`] where its block (32 KiB of f32) leaves room in L1 for
/// the rows and sums beside it, else half as many. Measured on a Zen 3 EPYC (32 KiB of L1D),
/// GPT-2 small, a pass of 16 / 128 rows ÷ a step, interleaved: f16 3.12 / 19.3 at 128 inputs,
/// 2.91 / 19.5 at 64; f32 2.20 / 12.9 and 2.06 / 11.9 (one process each, 32 and 128 rows: f16
/// 91 / 148 GFLOP/s → 111 / 195, f32 75 / 96 → 94 / 122); on a Zen 5 (48 KiB) the 32 KiB
/// block ran at 97% of the FMA peak.
fn block_inputs() -> usize {
    if crate::cpu::l1d_bytes() > KC * TILE * 4 {
        KC
    } else {
        KC / 2
    }
}

/// The tile (the contract of [`super::tile`]) in blocks of [`block_inputs`].
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C ([`super::avx2::available`]). The slices' lengths are checked.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_many<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    // SAFETY: as this function's.
    unsafe { tile_blocks(w, xs, rows, k, out, block_inputs()) }
}

/// The tile in blocks of `kc_max` inputs (at most [`KC`]): per block, the block's weights as
/// f32 (f16/bf16 widened into a scratch block, f32 read in place), then every row group's pass
/// over it, the groups taking turns asking for the next block (one group asking for all of it,
/// in a burst, left the weight stream idle while the others computed: measured on a Zen 3 EPYC,
/// GPT-2 small, a pass of 16 / 24 / 32 rows ÷ a step, f32 2.78 / 3.43 / 4.59 → 1.96 / 2.38 /
/// 3.20, f16 2.68 / 4.18 / 4.99 → 2.57 / 3.59 / 4.56).
///
/// # Safety
///
/// As [`tile_many`]'s.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_blocks<T: Weight>(
    w: &[T],
    xs: &[f32],
    rows: usize,
    k: usize,
    out: &mut [f32],
    kc_max: usize,
) {
    assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
    assert!((1..=KC).contains(&kc_max));
    if k == 0 {
        out[..rows * TILE].fill(0.0);
        return;
    }
    let mut scratch = MaybeUninit::<Block>::uninit();
    let scratch = scratch.as_mut_ptr() as *mut f32;
    let (x, o) = (xs.as_ptr(), out.as_mut_ptr());
    let every = rows.div_ceil(ROWS);
    for k0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - k0);
        let add = k0 > 0;
        // SAFETY (all pointer offsets): within `w`, `xs` and `out`, whose lengths were checked.
        unsafe {
            let src = w.as_ptr().add(k0 * TILE);
            let block = if TypeId::of::<T>() == TypeId::of::<f32>() {
                src as *const f32
            } else {
                widen(src, kc * TILE, scratch);
                scratch as *const f32
            };
            // The next block (past the last one: the next tile's first, which a forward pass
            // reads next; prefetching past the slice is harmless).
            let next = w.as_ptr().wrapping_add((k0 + kc_max) * TILE) as *const u8;
            for (phase, (i, n)) in groups(rows, ROWS).enumerate() {
                let ahead = Ahead::new::<T>(next, every, phase);
                let (x, o) = (x.add(i * k + k0), o.add(i * TILE));
                match n {
                    1 => pass::<1>(block, x, k, kc, o, add, ahead),
                    2 => pass::<2>(block, x, k, kc, o, add, ahead),
                    3 => pass::<3>(block, x, k, kc, o, add, ahead),
                    4 => pass::<4>(block, x, k, kc, o, add, ahead),
                    5 => pass::<5>(block, x, k, kc, o, add, ahead),
                    6 => pass::<6>(block, x, k, kc, o, add, ahead),
                    _ => unreachable!("row groups have 1 to {ROWS} rows"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::super::{groups, tile_portable, tile_with};
    use super::*;
    use crate::cpu::Simd;

    /// `xs · w` in f64 (`w` widened) and, per output, the sum of the products' magnitudes (the
    /// scale of the rounding error an f32 sum can make).
    fn reference<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize) -> (Vec<f32>, Vec<f64>) {
        let mut y = vec![0f32; rows * TILE];
        let mut mag = vec![0f64; rows * TILE];
        for i in 0..rows {
            for j in 0..TILE {
                let (mut s, mut m) = (0f64, 0f64);
                for kk in 0..k {
                    let p = xs[i * k + kk] as f64 * w[kk * TILE + j].widen() as f64;
                    s += p;
                    m += p.abs();
                }
                y[i * TILE + j] = s as f32;
                mag[i * TILE + j] = m;
            }
        }
        (y, mag)
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 1999) as f32 - 999.0) / 997.0)
            .collect()
    }

    type Kernel<T> = unsafe fn(&[T], &[f32], usize, usize, &mut [f32]);

    /// The kernels this CPU can run: the dispatcher capped at AVX2, the AVX2 kernel (with this
    /// CPU's blocks and with each size) and the portable loop (the fallback).
    fn kernels<T: Weight>() -> Vec<(&'static str, Kernel<T>)> {
        let mut v: Vec<(&'static str, Kernel<T>)> = vec![
            ("dispatch, AVX2 at most", |w, x, r, k, o| {
                tile_with(Simd::Avx2.min(crate::cpu::level()), w, x, r, k, o)
            }),
            ("tile_portable", |w, x, r, k, o| {
                tile_portable(w, x, r, k, o)
            }),
        ];
        if super::super::avx2::available() {
            v.push(("avx2", tile_many::<T>));
            // Both block sizes, whatever this CPU's L1 picks.
            v.push(("avx2, 64-input blocks", |w, x, r, k, o| unsafe {
                tile_blocks(w, x, r, k, o, 64)
            }));
            v.push(("avx2, 128-input blocks", |w, x, r, k, o| unsafe {
                tile_blocks(w, x, r, k, o, 128)
            }));
        }
        v
    }

    /// Every kernel against an f64 product, for every dtype, for row counts that exercise every
    /// group size, and for `k` below, at and past a block (41, 128, 300, 768).
    #[test]
    fn tile_many_matches_a_plain_product() {
        fn check<T: Weight>(widen: impl Fn(f32) -> T, dtype: &str) {
            for k in [0, 1, 41, 128, 300, 768] {
                let w: Vec<T> = values(k * TILE, 1).into_iter().map(&widen).collect();
                for rows in [1, 2, 5, 7, 12, 13, 16, 31, 32, 64] {
                    let xs = values(rows * k, rows);
                    let (want, mag) = reference(&w, &xs, rows, k);
                    for (name, kernel) in kernels::<T>() {
                        // Stale values in `out` must not leak into the result.
                        let mut got = vec![f32::NAN; rows * TILE + 3];
                        // SAFETY: `kernels` lists only kernels this CPU can run.
                        unsafe { kernel(&w, &xs, rows, k, &mut got) };
                        for (i, ((g, w), m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                            let tol = 1e-6 * m + 1e-6;
                            assert!(
                                ((g - w).abs() as f64) <= tol,
                                "{name} {dtype}, k={k}, {rows} rows, out[{i}]: {g} vs {w}"
                            );
                        }
                        assert!(
                            got[rows * TILE..].iter().all(|v| v.is_nan()),
                            "{name}: overrun"
                        );
                    }
                }
            }
        }
        check(|v| v, "f32");
        check(f16::from_f32, "f16");
        check(bf16::from_f32, "bf16");
    }

    #[test]
    fn row_groups_are_balanced_and_cover_the_rows() {
        for max in 1..=8 {
            for rows in 0..100 {
                let g: Vec<_> = groups(rows, max).collect();
                assert_eq!(g.len(), rows.div_ceil(max));
                let mut next = 0;
                for &(i, n) in &g {
                    assert_eq!(i, next);
                    assert!(n >= 1 && n <= max);
                    next += n;
                }
                assert_eq!(next, rows);
                if let (Some(lo), Some(hi)) =
                    (g.iter().map(|g| g.1).min(), g.iter().map(|g| g.1).max())
                {
                    assert!(hi - lo <= 1);
                }
            }
        }
    }

    /// GFLOP/s of each kernel, single-threaded, best of several runs: `hot` runs one tile over
    /// and over (L2-resident), `stream` runs each tile of a `k × 3072` matrix in turn (c_fc's
    /// shape at k = 768: the weights come from L3/memory, as in a forward pass).
    /// `cargo test --release -p decode-kernels --lib tile_many_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn tile_many_timing() {
        use std::hint::black_box;
        use std::time::Instant;

        use super::super::{avx2 as simd, avx512};

        fn time<T: Weight>(dtype: &str, k: usize, widen: impl Fn(f32) -> T) {
            let tiles = 3072 / TILE;
            let w: Vec<T> = values(tiles * k * TILE, 3).into_iter().map(widen).collect();
            let mut variants: Vec<(&str, Kernel<T>)> = Vec::new();
            if simd::available() {
                variants.push(("linear avx2 (2x64)", simd::tile::<T>));
                variants.push(("many-row avx2 6x16", tile_many::<T>));
            }
            if avx512::available() {
                variants.push(("linear avx512 (6x64)", avx512::tile::<T>));
            }
            for rows in [1, 2, 4, 8, 16, 32, 64] {
                let xs = values(rows * k, 5);
                let mut out = vec![0f32; rows * TILE];
                let flop = 2.0 * (rows * k * TILE) as f64;
                for &(name, kernel) in &variants {
                    let run = |t: usize, out: &mut [f32]| {
                        let wt = &w[t * k * TILE..(t + 1) * k * TILE];
                        // SAFETY: only kernels this CPU can run were listed.
                        unsafe { kernel(black_box(wt), black_box(&xs), rows, k, out) };
                        black_box(&out);
                    };
                    let reps = (4_000_000.0 / flop).ceil() as usize;
                    let mut hot = f64::INFINITY;
                    for _ in 0..15 {
                        let t0 = Instant::now();
                        for _ in 0..reps {
                            run(0, &mut out);
                        }
                        hot = hot.min(t0.elapsed().as_secs_f64() / reps as f64);
                    }
                    let mut stream = f64::INFINITY;
                    for _ in 0..5 {
                        let t0 = Instant::now();
                        for t in 0..tiles {
                            run(t, &mut out);
                        }
                        stream = stream.min(t0.elapsed().as_secs_f64() / tiles as f64);
                    }
                    println!(
                        "{dtype} k={k:4} rows={rows:2} {name:22} hot {:6.1} GFLOP/s  stream {:6.1} GFLOP/s",
                        flop / hot / 1e9,
                        flop / stream / 1e9
                    );
                }
            }
        }
        for k in [768, 3072] {
            time("f32", k, |v| v);
            time("f16", k, f16::from_f32);
        }
        println!(
            "loadavg: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
}

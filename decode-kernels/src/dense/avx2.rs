//! The float tile on AVX2 + FMA + F16C: 8-wide FMAs, two rows sharing each weight load.

use std::any::TypeId;
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{Prefetch, TILE, Weight};

/// Whether the AVX2 + FMA + F16C kernel can run here.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Eight weights widened to f32.
///
/// # Safety
///
/// The CPU has AVX2 and F16C, and `p` points to eight readable values of `T`.
#[inline(always)]
pub unsafe fn load8<T: Weight>(p: *const T) -> __m256 {
    unsafe {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            _mm256_loadu_ps(p as *const f32)
        } else if TypeId::of::<T>() == TypeId::of::<f16>() {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        } else {
            debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<bf16>());
            let halves = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(halves, 16))
        }
    }
}

/// Asks for weight row `row + ahead` (`TILE` values) into the cache level `HINT` names.
///
/// # Safety
///
/// The CPU has SSE (every x86-64 does); `row` may point anywhere (nothing is read through it).
#[inline(always)]
pub(super) unsafe fn prefetch_rows<T, const HINT: i32>(row: *const T, ahead: usize) {
    let ahead = row.wrapping_add(ahead * TILE) as *const i8;
    let bytes = TILE * std::mem::size_of::<T>();
    let mut off = 0;
    while off < bytes {
        unsafe { _mm_prefetch::<HINT>(ahead.wrapping_add(off)) };
        off += 64;
    }
}

/// Inputs per block when more than two rows share the tile: `KC × TILE` weights (16 KiB of
/// f32) stay in L1 while every row pair uses them, so the weights stream from memory once, in
/// order, for the first pair.
const KC: usize = 64;

/// What a pass over a block asks for ahead of its loads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// Nothing (the hardware prefetcher).
    Nothing,
    /// The weights as far ahead as [`Prefetch`] says (the tile as one block).
    Rows(Prefetch),
    /// The next block's weight row `kk` into L2, for each `kk ≡ phase (mod every)`: the passes
    /// over a block take turns asking, so the requests spread over the block's whole work.
    NextBlock { every: usize, phase: usize },
}

/// `R` (1 or 2) rows over a block of `kc` inputs: `out[r][..] (+)= Σ_kk x[r·k + kk] · w[kk][..]`,
/// adding to `out` when `add` (the previous blocks' sums).
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C; the pointers cover the `R` rows (`k` apart), the block's
/// `kc` weight rows and `R × TILE` outputs ([`tile`] checked the slices they come from).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<T: Weight, const R: usize>(
    w: *const T,
    x: *const f32,
    k: usize,
    kc: usize,
    out: *mut f32,
    add: bool,
    ahead: Ahead,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); TILE / 8]; R];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(out.add(r * TILE + j * 8));
                }
            }
        }
        // The next row this pass asks for, with `Ahead::NextBlock`.
        let mut next = match ahead {
            Ahead::NextBlock { phase, .. } => phase,
            _ => usize::MAX,
        };
        for kk in 0..kc {
            let s: [__m256; R] = std::array::from_fn(|r| _mm256_set1_ps(*x.add(r * k + kk)));
            let row = w.add(kk * TILE);
            match ahead {
                Ahead::Nothing => {}
                Ahead::Rows(p) => p.ahead(row),
                Ahead::NextBlock { every, .. } => {
                    if kk == next {
                        prefetch_rows::<T, _MM_HINT_T1>(row, KC);
                        next += every;
                    }
                }
            }
            for j in 0..TILE / 8 {
                let v = load8(row.add(j * 8));
                for (acc, &s) in acc.iter_mut().zip(&s) {
                    acc[j] = _mm256_fmadd_ps(s, v, acc[j]);
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

/// The tile with 8-wide FMAs: a row's 64 accumulators in 8 registers, two rows sharing each
/// weight load. On AMD one row streams the tile on the hardware prefetcher alone (measured on a
/// Zen 3 EPYC, interleaved with a bandwidth probe: asking for the weights 48 rows ahead read f16
/// 2–3 points of the ceiling slower, f32 no faster); on Intel it asks ahead into L2 (measured on
/// a KVM Xeon, `DECODE_SIMD=avx2`, batch-1 GPT-2 small: f16 73–75 → 83–88 tokens/s, f32 42–44
/// → 48). Two rows ask ahead. More rows run in blocks of
/// [`KC`] inputs, pair after pair over each block while it is in L1, the next block asked for
/// into L2 meanwhile, the pairs taking turns (the first pair asking for all of it, in a burst,
/// left the weight stream idle while the later pairs computed). Measured on a Zen 3 EPYC,
/// GPT-2 small, a pass of k rows ÷ a one-row step, k = 6 / 8 / 12, the two orders interleaved
/// in one process: f32 1.59 / 1.96 / 2.42 → 1.58 / 1.82 / 1.87, f16 1.64 / 2.06 / 2.70 →
/// 1.38 / 1.80 / 2.42. Measured there too and left: groups of two or three rows over half
/// tiles (no register spills; more FMA throughput on a hot tile, but slower passes from
/// memory at 3–8 rows), and widening each f16 block into f32 once for the pairs to share
/// (slower at every k).
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C ([`available`]). The slices' lengths are checked.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
    let (w, x, o) = (w.as_ptr(), xs.as_ptr(), out.as_mut_ptr());
    if rows <= 2 {
        // SAFETY: the whole tile as one block, for the rows present.
        unsafe {
            let prefetch = Prefetch::here();
            match rows {
                2 => self::rows::<T, 2>(w, x, k, k, o, false, Ahead::Rows(prefetch)),
                1 => {
                    let ahead = if prefetch.avx2_one_row {
                        Ahead::Rows(prefetch)
                    } else {
                        Ahead::Nothing
                    };
                    self::rows::<T, 1>(w, x, k, k, o, false, ahead)
                }
                _ => {}
            }
        }
        return;
    }
    // Passes over each block: the pairs, then the odd row if any.
    let passes = rows.div_ceil(2);
    for k0 in (0..k.max(1)).step_by(KC) {
        let kc = KC.min(k - k0);
        let add = k0 > 0;
        // SAFETY (all pointer offsets): block `k0..k0 + kc` of `w`, rows `i..i + 2` (or `i`) of
        // `xs` and `out` from input `k0`: within the slices, whose lengths were checked.
        unsafe {
            let block = w.add(k0 * TILE);
            for (pass, i) in (0..rows).step_by(2).enumerate() {
                let (x, o) = (x.add(i * k + k0), o.add(i * TILE));
                let ahead = Ahead::NextBlock {
                    every: passes,
                    phase: pass,
                };
                if i + 2 <= rows {
                    self::rows::<T, 2>(block, x, k, kc, o, add, ahead);
                } else {
                    self::rows::<T, 1>(block, x, k, kc, o, add, ahead);
                }
            }
        }
    }
}

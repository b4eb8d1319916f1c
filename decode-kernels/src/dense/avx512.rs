//! The float tile on AVX-512F: a row's 64 accumulators are 4 registers, so up to 6 rows share
//! each weight load (of the 32 registers, 24 hold the accumulators, 4 the weights and the rest
//! the broadcasts); a remainder of 1 to 5 rows runs as one narrower pass.

use std::any::TypeId;
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{Prefetch, TILE, Weight};

/// Whether the AVX-512 kernel can run here (the tests ask; the dispatch goes by `cpu::level`).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Sixteen weights widened to f32.
///
/// # Safety
///
/// The CPU has AVX-512F; `p` points to sixteen readable values of `T`.
#[inline(always)]
unsafe fn load16<T: Weight>(p: *const T) -> __m512 {
    unsafe {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            _mm512_loadu_ps(p as *const f32)
        } else if TypeId::of::<T>() == TypeId::of::<f16>() {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        } else {
            debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<bf16>());
            let halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
            _mm512_castsi512_ps(_mm512_slli_epi32(halves, 16))
        }
    }
}

/// Inputs per block when several row groups share the tile: `KC × TILE` weights (16 KiB of
/// f32) stay in L1 while every group uses them.
const KC: usize = 64;

/// `R` rows of inputs `kk0..kk0 + kc` of the tile: `out[r][..TILE] (+)= Σ_kk x[r][kk0 + kk] ·
/// w[kk][..TILE]` for `kk < kc`, `w` pointing at input `kk0`'s weights and `x` rows `k` apart
/// (`add`: onto what `out` holds; `prefetch`: this group asks for the weights ahead, as only the
/// first group over a block needs to, as far as [`Prefetch`] says).
///
/// # Safety
///
/// The CPU has AVX-512F; `w` holds `kc × TILE` values, `x` `R` rows `k` apart and `out` room for
/// `R × TILE` ([`tile`] checked the slices they come from), and `kk0 + kc ≤ k`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<T: Weight, const R: usize>(
    w: *const T,
    x: *const f32,
    k: usize,
    kk0: usize,
    kc: usize,
    out: *mut f32,
    add: bool,
    prefetch: Option<Prefetch>,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); TILE / 16]; R];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(out.add(r * TILE + j * 16));
                }
            }
        }
        let x = x.add(kk0);
        for kk in 0..kc {
            let row = w.add(kk * TILE);
            if let Some(p) = prefetch {
                p.ahead(row);
            }
            let v = [
                load16(row),
                load16(row.add(16)),
                load16(row.add(32)),
                load16(row.add(48)),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*x.add(r * k + kk));
                for (a, &v) in acc.iter_mut().zip(&v) {
                    *a = _mm512_fmadd_ps(s, v, *a);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(r * TILE + j * 16), *a);
            }
        }
    }
}

/// One block of [`KC`] × [`TILE`] weights widened to f32, 64-byte aligned.
#[repr(C, align(64))]
struct Wide([f32; KC * TILE]);

/// The tile. Up to six rows run as one group over all the inputs (each weight load feeding every
/// row). More rows split into near-equal groups of at most six (8 = 4 + 4), and the inputs into
/// blocks of [`KC`] that every group uses while the block is in L1: the weights then stream
/// from memory at an even pace, once, instead of in a burst for the first group while the
/// others compute from cache. f16 and bf16 blocks are then widened to f32 once, into a block on
/// the stack, rather than once per group (a long prompt's 64 rows are 11 groups).
///
/// # Safety
///
/// The CPU has AVX-512F ([`available`]). The slices' lengths are checked.
#[target_feature(enable = "avx512f")]
pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
    let (w, x, o) = (w.as_ptr(), xs.as_ptr(), out.as_mut_ptr());
    let kc = if rows <= 6 { k.max(1) } else { KC };
    let widen = rows > 6 && TypeId::of::<T>() != TypeId::of::<f32>();
    let ahead = Prefetch::here();
    // Written (rows `..kc` of it) before each block's groups read it.
    let mut wide = std::mem::MaybeUninit::<Wide>::uninit();
    let wide = wide.as_mut_ptr() as *mut f32;
    for kk0 in (0..k.max(1)).step_by(kc) {
        let kc = kc.min(k - kk0);
        let add = kk0 > 0;
        // SAFETY: inputs `kk0..kk0 + kc` of the checked `k × TILE` weights.
        let block = unsafe { w.add(kk0 * TILE) };
        if widen {
            // SAFETY: `kc ≤ KC` rows of TILE values, read from the block and written to `wide`.
            unsafe {
                for kk in 0..kc {
                    let row = block.add(kk * TILE);
                    ahead.ahead(row);
                    for j in (0..TILE).step_by(16) {
                        let v = load16(row.add(j));
                        _mm512_store_ps(wide.add(kk * TILE + j), v);
                    }
                }
            }
        }
        for (g, (i, n)) in super::groups(rows, 6).enumerate() {
            let (x, o) = (x.wrapping_add(i * k), o.wrapping_add(i * TILE));
            let prefetch = (g == 0 && !widen).then_some(ahead);
            // SAFETY: rows `i..i + n` and inputs `kk0..kk0 + kc` lie inside the checked slices
            // (or, widened, inside `wide`).
            unsafe {
                if widen {
                    group::<f32>(wide, x, k, kk0, kc, o, n, add, None);
                } else {
                    group::<T>(block, x, k, kk0, kc, o, n, add, prefetch);
                }
            }
        }
    }
}

/// [`rows`] for a group of `n` (1 to 6) rows.
///
/// # Safety
///
/// As [`rows`]'s, for `R = n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group<T: Weight>(
    w: *const T,
    x: *const f32,
    k: usize,
    kk0: usize,
    kc: usize,
    o: *mut f32,
    n: usize,
    add: bool,
    prefetch: Option<Prefetch>,
) {
    unsafe {
        match n {
            1 => rows::<T, 1>(w, x, k, kk0, kc, o, add, prefetch),
            2 => rows::<T, 2>(w, x, k, kk0, kc, o, add, prefetch),
            3 => rows::<T, 3>(w, x, k, kk0, kc, o, add, prefetch),
            4 => rows::<T, 4>(w, x, k, kk0, kc, o, add, prefetch),
            5 => rows::<T, 5>(w, x, k, kk0, kc, o, add, prefetch),
            6 => rows::<T, 6>(w, x, k, kk0, kc, o, add, prefetch),
            _ => unreachable!("row groups have 1 to 6 rows"),
        }
    }
}

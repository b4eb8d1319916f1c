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

/// Which weight rows a group asks for ahead: input `kk` when `kk % every == phase`, in the stored
/// weights `w` (the block's own, also when the group reads a widened copy). The groups over a
/// block take turns, so the requests go out at an even pace through all of their FMAs: asked
/// for by one group in a burst, they stall it (a request waits for a fill buffer) and then
/// memory idles while the others compute.
#[derive(Clone, Copy)]
struct Ask<W> {
    prefetch: Prefetch,
    w: *const W,
    every: usize,
    phase: usize,
}

/// `R` rows of inputs `kk0..kk0 + kc` over `V` of the tile's four 16-column vectors: `out[r][..16
/// V] (+)= Σ_kk x[r][kk0 + kk] · w[kk][..16 V]` for `kk < kc`, `w` pointing at input `kk0`'s
/// weights (at the first of the `V` vectors), `out` at the same column of row 0, `x` rows `k`
/// apart (`add`: onto what `out` holds; `ask`: which weights this group asks for ahead).
///
/// # Safety
///
/// The CPU has AVX-512F; `w` holds `kc` tile rows (`TILE` apart) of `16 V` values, `x` `R` rows
/// `k` apart and `out` `R` rows (`TILE` apart) of `16 V` ([`tile`] checked the slices they
/// come from), and `kk0 + kc ≤ k`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<T: Weight, W: Weight, const R: usize, const V: usize>(
    w: *const T,
    x: *const f32,
    k: usize,
    kk0: usize,
    kc: usize,
    out: *mut f32,
    add: bool,
    ask: Option<Ask<W>>,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(out.add(r * TILE + j * 16));
                }
            }
        }
        let x = x.add(kk0);
        // Inputs until this group next asks.
        let mut wait = ask.map_or(0, |a| a.phase);
        for kk in 0..kc {
            let row = w.add(kk * TILE);
            if let Some(a) = ask {
                if wait == 0 {
                    a.prefetch.ahead(a.w.add(kk * TILE));
                    wait = a.every;
                }
                wait -= 1;
            }
            let mut v = [_mm512_setzero_ps(); V];
            for (j, v) in v.iter_mut().enumerate() {
                *v = load16(row.add(16 * j));
            }
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

/// Above this many rows (four groups or more) an f16/bf16 block is widened to f32 once for all
/// groups; up to it each group widens as it loads. Measured on a KVM Xeon (AVX-512, one thread,
/// 245 MB of f16 from memory, the tile at GPT-2 small's 768 inputs): 8 rows 24.5 ms widening as
/// they load against 27.3 once, 12 rows 29.0 against 30.9, 16 rows level, 24 rows 44.7
/// against 41.6, 64 rows 109 against 95 (widening once, the block's loads come in a burst of
/// L1 misses ahead of the FMAs; with few groups that costs more than the conversions saved).
const WIDEN_ABOVE: usize = 18;

/// One block of [`KC`] × [`TILE`] weights widened to f32, 64-byte aligned.
#[repr(C, align(64))]
struct Wide([f32; KC * TILE]);

/// The tile. Up to six rows run as one group over all the inputs (each weight load feeding every
/// row). Seven to twelve rows run as one group too, over each half of the tile's columns in turn
/// (24 accumulators either way): an f16/bf16 weight's conversion, which takes the FMA ports,
/// then feeds up to twelve rows instead of six. More rows split into near-equal groups of at
/// most six (13 = 5 + 4 + 4). Beyond six rows the inputs go in blocks of [`KC`] that each half
/// or group uses while the block is in L1, and the groups take turns asking for the weights
/// ahead ([`Ask`]), so the weights stream from memory once, at an even pace. Above
/// [`WIDEN_ABOVE`] rows an f16/bf16 block is widened to f32 once, into a block on the stack,
/// rather than once per group (a long prompt's 64 rows are 11 groups).
///
/// # Safety
///
/// The CPU has AVX-512F ([`available`]). The slices' lengths are checked.
#[target_feature(enable = "avx512f")]
pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
    let (w, x, o) = (w.as_ptr(), xs.as_ptr(), out.as_mut_ptr());
    let prefetch = Prefetch::here();
    let ask = |w: *const T, every: usize, phase: usize| {
        Some(Ask {
            prefetch,
            w,
            every,
            phase,
        })
    };
    if rows <= 6 {
        // SAFETY: all `rows` rows and `k` inputs of the checked slices.
        unsafe { group::<T, T>(w, x, k, 0, k, o, rows, false, ask(w, 1, 0)) };
        return;
    }
    let halves = rows <= 12 && TypeId::of::<T>() != TypeId::of::<f32>();
    let widen = rows > WIDEN_ABOVE && TypeId::of::<T>() != TypeId::of::<f32>();
    let groups = rows.div_ceil(6);
    // Written (rows `..kc` of it) before each block's groups read it.
    let mut wide = std::mem::MaybeUninit::<Wide>::uninit();
    let wide = wide.as_mut_ptr() as *mut f32;
    for kk0 in (0..k).step_by(KC) {
        let kc = KC.min(k - kk0);
        let add = kk0 > 0;
        // SAFETY: inputs `kk0..kk0 + kc` of the checked `k × TILE` weights.
        let block = unsafe { w.add(kk0 * TILE) };
        if halves {
            for half in 0..2 {
                let c = half * TILE / 2;
                // SAFETY: columns `c..c + TILE / 2` of all `rows` rows, inputs `kk0..kk0 + kc`.
                unsafe {
                    group::<T, T>(
                        block.add(c),
                        x,
                        k,
                        kk0,
                        kc,
                        o.add(c),
                        rows,
                        add,
                        ask(block, 2, half),
                    )
                };
            }
            continue;
        }
        if widen {
            // SAFETY: `kc ≤ KC` rows of TILE values, read from the block and written to `wide`.
            unsafe {
                for kk in 0..kc {
                    let row = block.add(kk * TILE);
                    for j in (0..TILE).step_by(16) {
                        let v = load16(row.add(j));
                        _mm512_store_ps(wide.add(kk * TILE + j), v);
                    }
                }
            }
        }
        for (g, (i, n)) in super::groups(rows, 6).enumerate() {
            let (x, o) = (x.wrapping_add(i * k), o.wrapping_add(i * TILE));
            // SAFETY: rows `i..i + n` and inputs `kk0..kk0 + kc` lie inside the checked slices
            // (or, widened, inside `wide`).
            unsafe {
                if widen {
                    group::<f32, T>(wide, x, k, kk0, kc, o, n, add, ask(block, groups, g));
                } else {
                    group::<T, T>(block, x, k, kk0, kc, o, n, add, ask(block, groups, g));
                }
            }
        }
    }
}

/// [`rows`] for a group of `n` rows: over the whole tile (`V = 4`) for 1 to 6 rows, over half
/// of it (`V = 2`, `w` and `o` at that half's first column) for 7 to 12.
///
/// # Safety
///
/// As [`rows`]'s, for `R = n` and that `V`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group<T: Weight, W: Weight>(
    w: *const T,
    x: *const f32,
    k: usize,
    kk0: usize,
    kc: usize,
    o: *mut f32,
    n: usize,
    add: bool,
    ask: Option<Ask<W>>,
) {
    unsafe {
        match n {
            1 => rows::<T, W, 1, 4>(w, x, k, kk0, kc, o, add, ask),
            2 => rows::<T, W, 2, 4>(w, x, k, kk0, kc, o, add, ask),
            3 => rows::<T, W, 3, 4>(w, x, k, kk0, kc, o, add, ask),
            4 => rows::<T, W, 4, 4>(w, x, k, kk0, kc, o, add, ask),
            5 => rows::<T, W, 5, 4>(w, x, k, kk0, kc, o, add, ask),
            6 => rows::<T, W, 6, 4>(w, x, k, kk0, kc, o, add, ask),
            7 => rows::<T, W, 7, 2>(w, x, k, kk0, kc, o, add, ask),
            8 => rows::<T, W, 8, 2>(w, x, k, kk0, kc, o, add, ask),
            9 => rows::<T, W, 9, 2>(w, x, k, kk0, kc, o, add, ask),
            10 => rows::<T, W, 10, 2>(w, x, k, kk0, kc, o, add, ask),
            11 => rows::<T, W, 11, 2>(w, x, k, kk0, kc, o, add, ask),
            12 => rows::<T, W, 12, 2>(w, x, k, kk0, kc, o, add, ask),
            _ => unreachable!("row groups have 1 to 12 rows"),
        }
    }
}

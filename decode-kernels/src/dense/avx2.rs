//! The float tile on AVX2 + FMA + F16C: 8-wide FMAs, two rows sharing each weight load.

use std::any::TypeId;
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{PREFETCH_ROWS, TILE, Weight};

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

/// Asks for the weights `PREFETCH_ROWS` rows ahead (a 64-byte line every 16 f32 / 32 f16
/// values), so memory requests overlap with the FMAs. Prefetching past the end of the slice is
/// harmless.
///
/// # Safety
///
/// The CPU has SSE (every x86-64 does); `row` may point anywhere (nothing is read through it).
#[inline(always)]
pub unsafe fn prefetch_ahead<T>(row: *const T) {
    let ahead = row.wrapping_add(PREFETCH_ROWS * TILE) as *const i8;
    let bytes = TILE * std::mem::size_of::<T>();
    let mut off = 0;
    while off < bytes {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off)) };
        off += 64;
    }
}

/// The tile with 8-wide FMAs; the TILE = 64 accumulators of a row stay in 8 registers.
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C ([`available`]). The slices' lengths are checked.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
    unsafe {
        // Two rows at a time: 16 accumulators, and each weight load feeds two FMAs.
        let mut i = 0;
        while i + 2 <= rows {
            let mut a0 = [_mm256_setzero_ps(); TILE / 8];
            let mut a1 = [_mm256_setzero_ps(); TILE / 8];
            let x0 = xs.as_ptr().add(i * k);
            let x1 = xs.as_ptr().add((i + 1) * k);
            for kk in 0..k {
                let s0 = _mm256_set1_ps(*x0.add(kk));
                let s1 = _mm256_set1_ps(*x1.add(kk));
                let row = w.as_ptr().add(kk * TILE);
                prefetch_ahead(row);
                for (j, (a, b)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                    let v = load8(row.add(j * 8));
                    *a = _mm256_fmadd_ps(s0, v, *a);
                    *b = _mm256_fmadd_ps(s1, v, *b);
                }
            }
            for j in 0..TILE / 8 {
                _mm256_storeu_ps(out.as_mut_ptr().add(i * TILE + j * 8), a0[j]);
                _mm256_storeu_ps(out.as_mut_ptr().add((i + 1) * TILE + j * 8), a1[j]);
            }
            i += 2;
        }
        // The odd row (a single decode step is one).
        if i < rows {
            let mut a0 = [_mm256_setzero_ps(); TILE / 8];
            let x0 = xs.as_ptr().add(i * k);
            for kk in 0..k {
                let s0 = _mm256_set1_ps(*x0.add(kk));
                let row = w.as_ptr().add(kk * TILE);
                prefetch_ahead(row);
                for (j, a) in a0.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(s0, load8(row.add(j * 8)), *a);
                }
            }
            for (j, a) in a0.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(i * TILE + j * 8), *a);
            }
        }
    }
}

//! The x86 integer kernels: what the 512-bit (AVX-512 VNNI, [`avx512`]) and 256-bit (AVX2 and
//! AVX-VNNI, [`avx2`]) products share, and the AVX2 activation quantizer.

use std::arch::x86_64::*;

use super::product::Job;
use super::{BLOCK, PANEL};

mod avx2;
mod avx512;

pub(in crate::quant) use avx2::{product_avx2, product_avxvnni};
pub(in crate::quant) use avx512::product_avx512;

/// [`super::QuantRows::new`]'s quantizer for one whole block, the same operations as the
/// scalar code (`round` as `trunc` plus one away from zero when the fraction is ≥ ½, exact):
/// returns the scale and `Σ q`.
///
/// # Safety
///
/// The CPU has AVX2. The slices' lengths are checked.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() >= BLOCK && q.len() >= BLOCK);
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let sign = _mm256_set1_ps(-0.0);
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        let d = _mm_cvtss_f32(m) / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let i = v.map(|v| {
            let p = _mm256_mul_ps(v, id);
            let t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
            let away = _mm256_or_ps(_mm256_and_ps(p, sign), one);
            let up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), away);
            _mm256_cvttps_epi32(_mm256_add_ps(t, up))
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        let p01 = _mm256_packs_epi32(i[0], i[1]);
        let p23 = _mm256_packs_epi32(i[2], i[3]);
        let bytes = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(p01, p23),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        );
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, bytes);
        (d, _mm_cvtsi128_si32(s))
    }
}

impl Job<'_> {
    pub(super) fn panels(&self) -> (usize, usize) {
        (
            self.first / PANEL,
            (self.first + self.width).div_ceil(PANEL),
        )
    }

    /// Writes row `r`'s outputs of panel `p` (sixteen lanes in `lanes`).
    ///
    /// # Safety
    ///
    /// `p` is one of the job's panels and `r < job.rows`: `job.out` has room for that row's
    /// outputs (checked by [`crate::quant::product`]).
    #[inline(always)]
    pub(super) unsafe fn store(&self, r: usize, p: usize, lanes: &[f32; PANEL]) {
        let c0 = p * PANEL;
        let lo = c0.max(self.first);
        let hi = (c0 + PANEL).min(self.first + self.width);
        unsafe {
            let dst = self.out.add(r * self.stride + lo - self.first);
            std::ptr::copy_nonoverlapping(lanes.as_ptr().add(lo - c0), dst, hi - lo);
        }
    }
}

impl Job<'_> {
    /// Writes row `r`'s outputs of half-panel `g` (outputs `8g..8g + 8`, in `lanes`).
    ///
    /// # Safety
    ///
    /// As [`Job::store`]'s, for half-panel `g`.
    #[inline(always)]
    pub(super) unsafe fn store_half(&self, r: usize, g: usize, lanes: &[f32; PANEL / 2]) {
        let c0 = g * PANEL / 2;
        let lo = c0.max(self.first);
        let hi = (c0 + PANEL / 2).min(self.first + self.width);
        if lo < hi {
            unsafe {
                let dst = self.out.add(r * self.stride + lo - self.first);
                std::ptr::copy_nonoverlapping(lanes.as_ptr().add(lo - c0), dst, hi - lo);
            }
        }
    }
}

/// `-(Σx << shift)` for row `r`, block `b`: the offset's correction.
///
/// # Safety
///
/// `r < job.rows` and `b` is a block of the padded inputs (nothing is bounds-checked).
#[inline(always)]
pub(super) unsafe fn correction(job: &Job, r: usize, b: usize, shift: u32) -> i32 {
    let blocks = job.w.padded / BLOCK;
    // `shift` is a constant at every call: the choice folds away, and the value is loaded.
    let corrections = &job.x.corrections[if shift == 7 { 0 } else { 1 }];
    debug_assert!(shift == 7 || shift == 3);
    unsafe { *corrections.get_unchecked(r * blocks + b) }
}

/// # Safety
///
/// As [`correction`]'s.
#[inline(always)]
pub(super) unsafe fn x_scale(job: &Job, r: usize, b: usize) -> f32 {
    let blocks = job.w.padded / BLOCK;
    unsafe { *job.x.scales.get_unchecked(r * blocks + b) }
}

/// Four activations of row `r` from input `k`, as one `i32`.
///
/// # Safety
///
/// `r < job.rows` and `k + 4` is within the padded inputs (nothing is bounds-checked).
#[inline(always)]
pub(super) unsafe fn x4(job: &Job, r: usize, k: usize) -> i32 {
    unsafe { (job.x.values.as_ptr().add(r * job.x.padded + k) as *const i32).read_unaligned() }
}

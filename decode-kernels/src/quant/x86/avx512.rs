//! q8_0/q4_0 products on 512-bit vectors with AVX-512 VNNI's `vpdpbusd`: one panel of sixteen
//! outputs per vector.

// The kernels index several per-row and per-panel register arrays with one counter.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::super::product::Job;
use super::super::{BLOCK, Format, PANEL};
use super::{correction, x_scale, x4};

/// How far ahead (in blocks of each panel) the kernels prefetch the weights: 8 measured best of
/// 2, 4, 8 and 16 for several rows (4 KiB of q8_0 ahead).
const PREFETCH_BLOCKS: usize = 8;

/// `R` rows × `P` panels from panel `p0`, row `r0`: sixteen lanes per panel.
///
/// # Safety
///
/// The CPU has AVX-512F, BW and VNNI; `job`'s bounds were checked by [`crate::quant::product`],
/// and the panels and rows named lie inside them.
#[inline(always)]
unsafe fn tile512<const R: usize, const P: usize, const Q4: bool>(
    job: &Job,
    p0: usize,
    r0: usize,
    prefetch: bool,
) {
    unsafe {
        let w = job.w;
        let blocks = w.padded / BLOCK;
        let pb = w.panel_block_bytes();
        let quants = w.quant_bytes().as_ptr().add(p0 * blocks * pb);
        let scales = w.scales.as_ptr().add(p0 * blocks * PANEL);
        let shift = if Q4 { 3 } else { 7 };
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // Several rows compute long enough per line to fall behind the hardware prefetcher:
        // they ask ahead into L1. Of several groups over the same panels, only the first asks
        // (the rest read cache). One row asks only where [`run512`] says so, into L2.
        let ahead = if prefetch { PREFETCH_BLOCKS } else { 0 };
        for b in 0..blocks {
            if ahead > 0 {
                for p in 0..P {
                    let at = (p * blocks + b + ahead) * pb;
                    for l in (0..pb).step_by(64) {
                        let line = quants.wrapping_add(at + l) as *const i8;
                        if R == 1 {
                            _mm_prefetch::<_MM_HINT_T1>(line);
                        } else {
                            _mm_prefetch::<_MM_HINT_T0>(line);
                        }
                    }
                    if b % 2 == 0 {
                        let s = scales.wrapping_add((p * blocks + b + ahead) * PANEL);
                        _mm_prefetch::<_MM_HINT_T0>(s as *const i8);
                    }
                }
            }
            let mut sums = [[_mm512_setzero_si512(); P]; R];
            for (r, s) in sums.iter_mut().enumerate() {
                *s = [_mm512_set1_epi32(correction(job, r0 + r, b, shift)); P];
            }
            if Q4 {
                let low = _mm512_set1_epi8(0x0f);
                for l in 0..4 {
                    let mut lo = [_mm512_setzero_si512(); P];
                    let mut hi = [_mm512_setzero_si512(); P];
                    for p in 0..P {
                        let v = _mm512_load_si512(
                            quants.add((p * blocks + b) * pb + l * 64) as *const _
                        );
                        lo[p] = _mm512_and_si512(v, low);
                        hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                    }
                    for r in 0..R {
                        let xl = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l));
                        let xh = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l + 4));
                        for p in 0..P {
                            sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], lo[p], xl);
                            sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], hi[p], xh);
                        }
                    }
                }
            } else {
                let flip = _mm512_set1_epi8(-128);
                for l in 0..8 {
                    let mut u = [_mm512_setzero_si512(); P];
                    for p in 0..P {
                        let v = _mm512_load_si512(
                            quants.add((p * blocks + b) * pb + l * 64) as *const _
                        );
                        u[p] = _mm512_xor_si512(v, flip);
                    }
                    for r in 0..R {
                        let xb = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 4 * l));
                        for p in 0..P {
                            sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], u[p], xb);
                        }
                    }
                }
            }
            let mut dw = [_mm512_setzero_ps(); P];
            for (p, d) in dw.iter_mut().enumerate() {
                *d = _mm512_cvtph_ps(_mm256_loadu_si256(
                    scales.add((p * blocks + b) * PANEL) as *const _
                ));
            }
            for r in 0..R {
                let dx = _mm512_set1_ps(x_scale(job, r0 + r, b));
                for p in 0..P {
                    let s = _mm512_mul_ps(dw[p], dx);
                    acc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[r][p]), s, acc[r][p]);
                }
            }
        }
        for r in 0..R {
            for p in 0..P {
                let mut lanes = [0f32; PANEL];
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][p]);
                job.store(r0 + r, p0 + p, &lanes);
            }
        }
    }
}

/// One row: a panel at a time, one stream for the hardware prefetcher (measured: two or four
/// panels at once, four streams, read memory 10–40% slower). On AMD it streams on the hardware
/// prefetcher alone (measured on Zen 3: asking for more only slowed it); on Intel it asks
/// [`PREFETCH_BLOCKS`] ahead into L2 (measured on a KVM Xeon, batch-1 GPT-2 small: q8_0
/// 132–140 tokens/s → 175–181, q4_0 279–296 → 318–336; 16 or 32 blocks ahead no better).
/// Several rows: still a panel at a time (one stream, prefetched ahead through the panels that
/// follow), all of them in one group up to eight rows (each weight load feeding every row's
/// `dpbusd`: the weights stream once, at an even pace), more in near-equal groups of at most
/// eight over the panel, which the later groups read from cache.
///
/// # Safety
///
/// As [`tile512`]'s.
#[inline(always)]
unsafe fn run512<const Q4: bool>(job: &Job) {
    unsafe {
        let (first, end) = job.panels();
        let one_asks = crate::cpu::maker() == crate::cpu::Maker::Intel;
        for p in first..end {
            if job.rows == 1 {
                tile512::<1, 1, Q4>(job, p, 0, one_asks);
                continue;
            }
            for (g, (r, n)) in crate::dense::groups(job.rows, 8).enumerate() {
                let prefetch = g == 0;
                match n {
                    1 => tile512::<1, 1, Q4>(job, p, r, prefetch),
                    2 => tile512::<2, 1, Q4>(job, p, r, prefetch),
                    3 => tile512::<3, 1, Q4>(job, p, r, prefetch),
                    4 => tile512::<4, 1, Q4>(job, p, r, prefetch),
                    5 => tile512::<5, 1, Q4>(job, p, r, prefetch),
                    6 => tile512::<6, 1, Q4>(job, p, r, prefetch),
                    7 => tile512::<7, 1, Q4>(job, p, r, prefetch),
                    8 => tile512::<8, 1, Q4>(job, p, r, prefetch),
                    _ => unreachable!("row groups have 1 to 8 rows"),
                }
            }
        }
    }
}

/// # Safety
///
/// The CPU has AVX-512F, BW and VNNI (and AVX2, FMA, F16C); `job`'s bounds were checked by
/// [`crate::quant::product`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) unsafe fn product_avx512(job: &Job) {
    unsafe {
        match job.w.format {
            Format::Q8_0 => run512::<false>(job),
            Format::Q4_0 => run512::<true>(job),
        }
    }
}

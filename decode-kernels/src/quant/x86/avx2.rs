//! q8_0/q4_0 products on 256-bit vectors: AVX2's `maddubs` + `madd`, or AVX-VNNI's `dpbusd`
//! (the same loops, chosen by a const parameter).

// The kernels index several per-row and per-panel register arrays with one counter.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use half::f16;

use super::super::product::Job;
use super::super::{BLOCK, Format, PANEL};
use super::{correction, x_scale, x4};

/// Which blocks of the next panel a pass asks for while it works on its own: block `b` when
/// `b ≡ phase (mod every)` (passes over the same panel take turns); `every == 0` asks for
/// nothing.
#[derive(Clone, Copy)]
struct Ahead {
    every: usize,
    phase: usize,
}

impl Ahead {
    const NOTHING: Ahead = Ahead { every: 0, phase: 0 };

    /// Asks for `bytes` from `at` into L2 if block `b` is this pass's to ask for.
    ///
    /// # Safety
    ///
    /// The CPU has SSE (every x86-64 does); a prefetch reads nothing, so any address will do.
    #[inline(always)]
    unsafe fn fetch(self, at: *const u8, b: usize, bytes: usize) {
        if self.every != 0 && b % self.every == self.phase {
            for off in (0..bytes).step_by(64) {
                // SAFETY: prefetching never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(off) as *const i8) };
            }
        }
    }
}

/// `R` rows × `H / 2` panels (`H` 256-bit halves of eight outputs) from panel `p0`, row
/// `r0`. `VNNI`: `dpbusd` on unsigned weights, as the 512-bit `tile512`; otherwise AVX2's `maddubs` on
/// `|w|` and `sign(x, w)` (q8_0: `|w|` ≤ 128 read as `u8`, so even −128 is exact, and a pair
/// sums to at most 2 · 128 · 127 < 2^15) or on the nibbles, summed in `i16` over a block
/// (q4_0: at most 8 · 2 · 15 · 127 < 2^15) before the offset's correction.
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C, and AVX-VNNI when `VNNI`; `job`'s bounds were checked by
/// [`crate::quant::product`], and the panels and rows named lie inside them.
#[inline(always)]
unsafe fn tile256<const R: usize, const H: usize, const Q4: bool, const VNNI: bool>(
    job: &Job,
    p0: usize,
    r0: usize,
    ahead: Ahead,
) {
    unsafe {
        let w = job.w;
        let blocks = w.padded / BLOCK;
        let pb = w.panel_block_bytes();
        let quants = w.quant_bytes().as_ptr().add(p0 * blocks * pb);
        let scales = w.scales.as_ptr().add(p0 * blocks * PANEL);
        let at = |h: usize, b: usize, l: usize| {
            quants.add(((h / 2) * blocks + b) * pb + l * 64 + 32 * (h % 2)) as *const __m256i
        };
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); H]; R];
        for b in 0..blocks {
            // The next panel's block `b`, all of it.
            ahead.fetch(quants.wrapping_add((blocks + b) * pb), b, pb);
            let mut sums = [[_mm256_setzero_si256(); H]; R];
            if Q4 {
                let low = _mm256_set1_epi8(0x0f);
                let mut s16 = [[_mm256_setzero_si256(); H]; R];
                for (r, s) in sums.iter_mut().enumerate() {
                    *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 3)); H];
                }
                for l in 0..4 {
                    let mut lo = [_mm256_setzero_si256(); H];
                    let mut hi = [_mm256_setzero_si256(); H];
                    for h in 0..H {
                        let v = _mm256_load_si256(at(h, b, l));
                        lo[h] = _mm256_and_si256(v, low);
                        hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    }
                    for r in 0..R {
                        let xl = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l));
                        let xh = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l + 4));
                        for h in 0..H {
                            if VNNI {
                                sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], lo[h], xl);
                                sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], hi[h], xh);
                            } else {
                                let t = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo[h], xl),
                                    _mm256_maddubs_epi16(hi[h], xh),
                                );
                                s16[r][h] = _mm256_add_epi16(s16[r][h], t);
                            }
                        }
                    }
                }
                if !VNNI {
                    for r in 0..R {
                        for h in 0..H {
                            let s = _mm256_madd_epi16(s16[r][h], ones);
                            sums[r][h] = _mm256_add_epi32(sums[r][h], s);
                        }
                    }
                }
            } else {
                if VNNI {
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 7)); H];
                    }
                }
                let flip = _mm256_set1_epi8(-128);
                for l in 0..8 {
                    let mut v = [_mm256_setzero_si256(); H];
                    let mut a = [_mm256_setzero_si256(); H];
                    for h in 0..H {
                        v[h] = _mm256_load_si256(at(h, b, l));
                        a[h] = if VNNI {
                            _mm256_xor_si256(v[h], flip)
                        } else {
                            _mm256_abs_epi8(v[h])
                        };
                    }
                    for r in 0..R {
                        let xb = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 4 * l));
                        for h in 0..H {
                            sums[r][h] = if VNNI {
                                _mm256_dpbusd_avx_epi32(sums[r][h], a[h], xb)
                            } else {
                                let pairs = _mm256_maddubs_epi16(a[h], _mm256_sign_epi8(xb, v[h]));
                                _mm256_add_epi32(sums[r][h], _mm256_madd_epi16(pairs, ones))
                            };
                        }
                    }
                }
            }
            let mut dw = [_mm256_setzero_ps(); H];
            for (h, d) in dw.iter_mut().enumerate() {
                let s = scales.add(((h / 2) * blocks + b) * PANEL + 8 * (h % 2));
                *d = _mm256_cvtph_ps(_mm_loadu_si128(s as *const _));
            }
            for r in 0..R {
                let dx = _mm256_set1_ps(x_scale(job, r0 + r, b));
                for h in 0..H {
                    let s = _mm256_mul_ps(dw[h], dx);
                    acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][h]), s, acc[r][h]);
                }
            }
        }
        for r in 0..R {
            for p in 0..H / 2 {
                let mut lanes = [0f32; PANEL];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][2 * p]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[r][2 * p + 1]);
                job.store(r0 + r, p0 + p, &lanes);
            }
        }
    }
}

/// `R` rows × `H` half-panels (eight outputs each) from half-panel `g0` (outputs
/// `8g0..8g0 + 8H`), row `r0`; the same sums as [`tile256`], looped half by half within each
/// line so that `R · H` accumulators, one line and one broadcast are live (`R · H` ≤ 8 fits
/// the sixteen `ymm` registers; the `f32` sums live in memory, touched once a block).
///
/// # Safety
///
/// As [`tile256`]'s.
#[inline(always)]
unsafe fn tile_halves<const R: usize, const H: usize, const Q4: bool, const VNNI: bool>(
    job: &Job,
    g0: usize,
    r0: usize,
    ahead: Ahead,
) {
    unsafe {
        let w = job.w;
        let blocks = w.padded / BLOCK;
        let pb = w.panel_block_bytes();
        let base = w.quant_bytes().as_ptr();
        let q: [*const u8; H] =
            std::array::from_fn(|h| base.add(((g0 + h) / 2) * blocks * pb + 32 * ((g0 + h) % 2)));
        let sc: [*const f16; H] = std::array::from_fn(|h| {
            w.scales
                .as_ptr()
                .add(((g0 + h) / 2) * blocks * PANEL + 8 * ((g0 + h) % 2))
        });
        let xs: [*const u8; R] = std::array::from_fn(|r| {
            job.x.values.as_ptr().add((r0 + r) * job.x.padded) as *const u8
        });
        let bcast =
            |r: usize, k: usize| _mm256_set1_epi32((xs[r].add(k) as *const i32).read_unaligned());
        let ones = _mm256_set1_epi16(1);
        // The next panel's share of the bytes this pass reads (a first half-panel the first
        // half of each panel block, a second the rest; both halves all of it).
        let next = base.wrapping_add((g0 / 2 + 1) * blocks * pb + (g0 % 2) * pb / 2);
        let share = pb / 2 * H;
        let mut acc = [[_mm256_setzero_ps(); H]; R];
        for b in 0..blocks {
            ahead.fetch(next.wrapping_add(b * pb), b, share);
            let mut sums = [[_mm256_setzero_si256(); H]; R];
            if Q4 {
                let low = _mm256_set1_epi8(0x0f);
                if VNNI {
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 3)); H];
                    }
                }
                let mut s16 = [[_mm256_setzero_si256(); H]; R];
                for l in 0..4 {
                    for h in 0..H {
                        let v = _mm256_load_si256(q[h].add(b * pb + l * 64) as *const __m256i);
                        let lo = _mm256_and_si256(v, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                        for r in 0..R {
                            let xl = bcast(r, b * BLOCK + 8 * l);
                            let xh = bcast(r, b * BLOCK + 8 * l + 4);
                            if VNNI {
                                sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], lo, xl);
                                sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], hi, xh);
                            } else {
                                let t = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo, xl),
                                    _mm256_maddubs_epi16(hi, xh),
                                );
                                s16[r][h] = _mm256_add_epi16(s16[r][h], t);
                            }
                        }
                    }
                }
                if !VNNI {
                    for r in 0..R {
                        let c = _mm256_set1_epi32(correction(job, r0 + r, b, 3));
                        for h in 0..H {
                            sums[r][h] = _mm256_add_epi32(_mm256_madd_epi16(s16[r][h], ones), c);
                        }
                    }
                }
            } else {
                if VNNI {
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 7)); H];
                    }
                }
                let flip = _mm256_set1_epi8(-128);
                for l in 0..8 {
                    for h in 0..H {
                        let v = _mm256_load_si256(q[h].add(b * pb + l * 64) as *const __m256i);
                        let a = if VNNI {
                            _mm256_xor_si256(v, flip)
                        } else {
                            _mm256_abs_epi8(v)
                        };
                        for r in 0..R {
                            let xb = bcast(r, b * BLOCK + 4 * l);
                            sums[r][h] = if VNNI {
                                _mm256_dpbusd_avx_epi32(sums[r][h], a, xb)
                            } else {
                                let pairs = _mm256_maddubs_epi16(a, _mm256_sign_epi8(xb, v));
                                _mm256_add_epi32(sums[r][h], _mm256_madd_epi16(pairs, ones))
                            };
                        }
                    }
                }
            }
            for h in 0..H {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc[h].add(b * PANEL) as *const _));
                for r in 0..R {
                    let dx = _mm256_set1_ps(x_scale(job, r0 + r, b));
                    let s = _mm256_mul_ps(dw, dx);
                    acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][h]), s, acc[r][h]);
                }
            }
        }
        for r in 0..R {
            for h in 0..H {
                let mut lanes = [0f32; PANEL / 2];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][h]);
                job.store_half(r0 + r, g0 + h, &lanes);
            }
        }
    }
}

/// One row: [`tile256`] a panel at a time (the decode path). Several rows, panel by panel: every
/// row group while the panel is in cache (the rows left over once ran after all the panels,
/// streaming the weights a second time): AVX2 eight rows × one half-panel ([`tile_halves`]: measured best of 4×1, 6×1,
/// 8×1, 3×2 and 4×2 on Zen 5, +25–30% over two rows × one panel), AVX-VNNI q8_0 four rows ×
/// two halves (+55%); the rows left over, and AVX-VNNI q4_0 (no faster), two rows × one panel.
/// Smaller `tile_halves` shapes for the leftover rows measured fragile: q4_0's four rows × one
/// half spilled into a 2× slower loop in some builds. The passes over a panel take turns asking
/// for the next one (measured on a Zen 3 EPYC, GPT-2 small, interleaved in one process: c(2)
/// q8_0 1.09 → 1.02, q4_0 1.18 → 0.96; c(8) q8_0 1.86 → 1.72, q4_0 level).
///
/// # Safety
///
/// As [`tile256`]'s.
#[inline(always)]
unsafe fn run256<const Q4: bool, const VNNI: bool>(job: &Job) {
    unsafe {
        let (p0, end) = job.panels();
        if job.rows == 1 {
            // The hardware prefetcher alone (asking for the next panel measured no faster).
            for p in p0..end {
                tile256::<1, 2, Q4, VNNI>(job, p, 0, Ahead::NOTHING);
            }
            return;
        }
        let turn = |every: usize, phase: usize| Ahead { every, phase };
        // Per panel, every row group while the panel is in cache: VNNI q8_0 four rows × two
        // halves, AVX2 eight rows × one half (only the halves that hold requested outputs),
        // then the rows left over in pairs.
        let (group, halves) = match (VNNI, Q4) {
            (true, true) => (0, false),
            (true, false) => (4, false),
            (false, _) => (8, true),
        };
        // `group` 0: no row groups (every row in pairs).
        let groups = job.rows.checked_div(group).unwrap_or(0);
        let done = groups * group;
        // The next panel is asked for once: by the row groups' passes if any, else the pairs'.
        let passes = if done > 0 { 0 } else { job.rows.div_ceil(2) };
        let (first, last) = (
            job.first / (PANEL / 2),
            (job.first + job.width).div_ceil(PANEL / 2),
        );
        for p in p0..end {
            if halves {
                for g in (2 * p).max(first)..(2 * p + 2).min(last) {
                    for r in (0..done).step_by(8) {
                        tile_halves::<8, 1, Q4, VNNI>(job, g, r, turn(groups, r / 8));
                    }
                }
            } else {
                for r in (0..done).step_by(4) {
                    tile_halves::<4, 2, Q4, VNNI>(job, 2 * p, r, turn(groups, r / 4));
                }
            }
            let mut r = done;
            while r + 2 <= job.rows {
                tile256::<2, 2, Q4, VNNI>(job, p, r, turn(passes, (r - done) / 2));
                r += 2;
            }
            if r < job.rows {
                tile256::<1, 2, Q4, VNNI>(job, p, r, turn(passes, (r - done) / 2));
            }
        }
    }
}

/// # Safety
///
/// The CPU has AVX2, FMA and F16C; `job`'s bounds were checked by [`crate::quant::product`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) unsafe fn product_avx2(job: &Job) {
    unsafe {
        match job.w.format {
            Format::Q8_0 => run256::<false, false>(job),
            Format::Q4_0 => run256::<true, false>(job),
        }
    }
}

/// # Safety
///
/// The CPU has AVX2, FMA, F16C and AVX-VNNI; `job`'s bounds were checked by
/// [`crate::quant::product`].
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(in crate::quant) unsafe fn product_avxvnni(job: &Job) {
    unsafe {
        match job.w.format {
            Format::Q8_0 => run256::<false, true>(job),
            Format::Q4_0 => run256::<true, true>(job),
        }
    }
}

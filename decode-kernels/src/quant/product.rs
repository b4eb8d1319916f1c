//! The q8_0/q4_0 matrix product: which kernel runs ([`Kernel`], detected once per CPU), the
//! checked entry point ([`product`]) and the portable reference every SIMD kernel is tested
//! against.

#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{BLOCK, QuantMatrix, QuantRows};
use crate::cpu::{self, Simd};

/// The dot-product kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI's `dpbusd` on 512-bit vectors: a panel of sixteen outputs per vector.
    Avx512Vnni,
    /// AVX-VNNI's `dpbusd` on 256-bit vectors.
    AvxVnni,
    /// AVX2's `maddubs` + `madd`.
    Avx2,
    /// Plain Rust: the reference.
    Portable,
}

impl Kernel {
    const ALL: [Kernel; 4] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Portable,
    ];

    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Kernel::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
                Kernel::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Kernel::Avx2 => avx2,
                Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The best kernel this CPU runs (no better than `DECODE_SIMD` allows: `avx2` leaves the
    /// AVX2 kernel, `portable` the portable one).
    pub fn detect() -> Kernel {
        let ceiling = match cpu::cap() {
            Some(Simd::Portable) => Kernel::Portable,
            Some(Simd::Avx2) => Kernel::Avx2,
            _ => Kernel::Avx512Vnni,
        };
        Kernel::ALL
            .into_iter()
            .filter(|&k| k >= ceiling)
            .find(|k| k.supported())
            .unwrap_or(Kernel::Portable)
    }

    /// Every kernel this CPU runs (for tests).
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }
}

impl PartialOrd for Kernel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kernel {
    /// Best first: `Avx512Vnni < AvxVnni < Avx2 < Portable`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// `out[r][c] = Σ_k x[r][k] · w[first + c][k]` for `c < width` (out rows `stride` apart).
#[allow(clippy::too_many_arguments)]
pub fn product(
    kernel: Kernel,
    w: &QuantMatrix,
    first: usize,
    width: usize,
    x: &QuantRows,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(
        first + width <= w.outputs,
        "columns {first}+{width} of {}",
        w.outputs
    );
    assert!(
        rows <= x.rows && x.padded == w.padded,
        "activations do not fit the weights"
    );
    assert!(
        rows == 0 || out.len() >= (rows - 1) * stride + width,
        "output too short"
    );
    assert!(
        width <= stride || rows <= 1,
        "stride {stride} < width {width}"
    );
    if width == 0 || rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let job = Job {
            w,
            first,
            width,
            x,
            rows,
            out: out.as_mut_ptr(),
            stride,
        };
        assert!(
            kernel.supported(),
            "{kernel:?} is not supported on this CPU"
        );
        match kernel {
            // SAFETY: `supported` checked the features; `job`'s bounds were checked above.
            Kernel::Avx512Vnni => return unsafe { x86::product_avx512(&job) },
            // SAFETY: as above.
            Kernel::AvxVnni => return unsafe { x86::product_avxvnni(&job) },
            // SAFETY: as above.
            Kernel::Avx2 => return unsafe { x86::product_avx2(&job) },
            Kernel::Portable => {}
        }
    }
    product_portable(w, first, width, x, rows, out, stride);
}

/// One product's operands (bounds checked by [`product`]).
#[cfg(target_arch = "x86_64")]
pub(super) struct Job<'a> {
    pub(super) w: &'a QuantMatrix,
    pub(super) first: usize,
    pub(super) width: usize,
    pub(super) x: &'a QuantRows,
    pub(super) rows: usize,
    pub(super) out: *mut f32,
    pub(super) stride: usize,
}

/// The reference: exact integer sums per block, then `acc += (d_w · d_x) · sum`.
fn product_portable(
    w: &QuantMatrix,
    first: usize,
    width: usize,
    x: &QuantRows,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    let blocks = w.block_count();
    let mut acc = vec![0f32; rows];
    for c in 0..width {
        acc.fill(0.0);
        for b in 0..blocks {
            let (d, q) = w.load_block(first + c, b);
            let d = d.to_f32();
            let q = w.format.unpack(&q[..w.format.value_bytes()]);
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = &x.values[r * x.padded + b * BLOCK..][..BLOCK];
                let sum: i32 = q.iter().zip(xv).map(|(&w, &x)| w as i32 * x as i32).sum();
                *a += d * x.scales[r * blocks + b] * sum as f32;
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * stride + c] = *a;
        }
    }
}

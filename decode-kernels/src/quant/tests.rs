use super::*;

/// test-quantize-fns' synthetic data: `0.1 + 2·cos(i + offset)`.
fn synthetic(n: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

/// test-quantize-fns' `array_rmse`: √(Σ diff²) / n.
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    s.sqrt() as f32 / a.len() as f32
}

/// Round trip and dot product within llama.cpp's own bounds, measured as test-quantize-fns
/// measures them (its data, its size, its error formulas): total quantization error < 0.002,
/// dot-product error < 0.02.
#[test]
fn errors_within_test_quantize_fns_bounds() {
    let n = 32 * 128;
    let x = synthetic(n, 0.0);
    let y = synthetic(n, 1.0);
    for format in [Format::Q8_0, Format::Q4_0] {
        let mut m = QuantMatrix::zeroed(format, 1, n).unwrap();
        m.set_row(0, &x);
        let mut back = vec![0f32; n];
        m.row_into(0, &mut back);
        let e = array_rmse(&x, &back);
        assert!(e < 0.002, "{format:?}: total quantization error {e}");
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let yq = QuantRows::new(&y, 1, n, n);
        for kernel in Kernel::available() {
            let mut got = [0f32];
            product(kernel, &m, 0, 1, &yq, 1, &mut got, 1);
            let e = (got[0] as f64 - exact).abs() / n as f64;
            assert!(e < 0.02, "{format:?} {kernel:?}: dot product error {e}");
        }
        // Per value: within half a step (q8_0) or one step (q4_0's asymmetric grid), plus the
        // scale's own f16 rounding (2^-11 relative) times the largest value, 127 or 8.
        for (b, (d, _)) in m.blocks(0).enumerate() {
            let step = d.to_f32().abs();
            for i in 0..BLOCK {
                let err = (x[b * BLOCK + i] - back[b * BLOCK + i]).abs();
                let tol = match format {
                    Format::Q8_0 => 0.5 + 127.0 / 2048.0,
                    Format::Q4_0 => 1.0 + 8.0 / 2048.0,
                };
                assert!(err <= step * tol + 1e-7, "{format:?} {b}/{i}: {err}");
            }
        }
    }
}

/// The activations' SIMD quantizer gives the scalar one's bits, ties included.
#[test]
fn activation_quantizer_simd_matches_scalar() {
    let mut x: Vec<f32> = (0..32 * 64)
        .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 37.0)
        .collect();
    // Blocks whose products land exactly on halves: amax 127 makes `x · id` ≈ `x`.
    for (i, v) in x[..64].iter_mut().enumerate() {
        *v = if i % 32 == 0 {
            127.0
        } else {
            (i as f32 - 40.0) + 0.5
        };
    }
    x[64..96].fill(0.0);
    let q = QuantRows::new(&x, 1, x.len(), x.len());
    for (b, chunk) in x.chunks(BLOCK).enumerate() {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let want: Vec<i8> = chunk.iter().map(|&v| (v * id).round() as i8).collect();
        assert_eq!(
            &q.values[b * BLOCK..(b + 1) * BLOCK],
            &want[..],
            "block {b}"
        );
        assert_eq!(q.scales[b], d);
        let sum = want.iter().map(|&v| v as i32).sum::<i32>();
        assert_eq!(
            (q.corrections[0][b], q.corrections[1][b]),
            (-128 * sum, -8 * sum)
        );
    }
}

/// ggml's reference formulas, written out on known values.
#[test]
fn quantizers_match_ggml_reference_on_known_blocks() {
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 12.0).collect(); // -12..19
    let mut q = [0u8; 32];
    let d = quantize_q8_0(&x, &mut q);
    assert_eq!(d, f16::from_f32(19.0 / 127.0));
    let id = 1.0 / (19.0f32 / 127.0);
    for i in 0..32 {
        assert_eq!(q[i] as i8, (x[i] * id).round() as i8);
    }
    assert_eq!(q[31] as i8, 127);
    let d = quantize_q4_0(&x, &mut q[..16]);
    // The largest magnitude is 19 (positive): d = 19 / −8, and 19 maps to nibble 0.
    assert_eq!(d, f16::from_f32(19.0 / -8.0));
    let vals = Format::Q4_0.unpack(&q[..16]);
    assert_eq!(vals[31], -8);
    assert_eq!(vals[12], 0); // x = 0
    // An all-zero block: scale 0, values 0 (q8_0) or the offset (q4_0, nibble 8).
    let z = [0f32; 32];
    assert_eq!(quantize_q8_0(&z, &mut q), f16::ZERO);
    assert!(q.iter().all(|&b| b == 0));
    assert_eq!(quantize_q4_0(&z, &mut q[..16]), f16::from_f32(-0.0));
    assert!(q[..16].iter().all(|&b| b == 0x88));
}

fn matrix(format: Format, outputs: usize, inputs: usize) -> (QuantMatrix, Vec<f32>) {
    let mut m = QuantMatrix::zeroed(format, outputs, inputs).unwrap();
    let mut dense = Vec::with_capacity(outputs * inputs);
    for j in 0..outputs {
        let row = synthetic(inputs, j as f32 * 0.37);
        m.set_row(j, &row);
        let mut back = vec![0f32; inputs];
        m.row_into(j, &mut back);
        dense.extend(back);
    }
    (m, dense)
}

/// Every kernel this CPU has gives the portable kernel's products, for both formats, every
/// row-group remainder, column ranges that start and end inside a panel, and a width that is
/// not a whole block (padded).
#[test]
fn every_kernel_matches_the_portable_one() {
    let kernels = Kernel::available();
    eprintln!("q8_0/q4_0 kernels tested here: {kernels:?}");
    for format in [Format::Q8_0, Format::Q4_0] {
        for inputs in [32, 100, 768] {
            let outputs = 77;
            let (m, _) = matrix(format, outputs, inputs);
            for rows in [1, 2, 3, 4, 5, 7, 9, 13] {
                let x: Vec<f32> = (0..rows * inputs)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                    .collect();
                let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
                for (first, width) in [(0, outputs), (0, 64), (64, 13), (5, 20), (16, 61)] {
                    check_kernels(&kernels, &m, first, width, &xq, rows, inputs);
                }
            }
        }
    }
}

fn check_kernels(
    kernels: &[Kernel],
    m: &QuantMatrix,
    first: usize,
    width: usize,
    xq: &QuantRows,
    rows: usize,
    inputs: usize,
) {
    // A stride wider than the width: the kernels must leave the gaps alone.
    let stride = width + 3;
    let mut want = vec![f32::NAN; rows * stride];
    product(
        Kernel::Portable,
        m,
        first,
        width,
        xq,
        rows,
        &mut want,
        stride,
    );
    for &k in kernels {
        let mut got = vec![f32::NAN; rows * stride];
        product(k, m, first, width, xq, rows, &mut got, stride);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if i % stride >= width {
                assert!(g.is_nan(), "{k:?} wrote outside the output at {i}");
                continue;
            }
            // Sums of the same block products in another order: f32 rounding grows with the
            // number of blocks.
            assert!(
                (g - w).abs() <= 1e-6 * inputs as f32 * w.abs().max(1.0),
                "{k:?} {:?} {inputs}×{rows} [{first}+{width}] at {i}: {g} vs {w}",
                m.format
            );
        }
    }
}

/// q8_0's −128 (never written by llama.cpp) and the extremes of both formats are exact in
/// every kernel: the weights' offset and AVX2's `|w|` cover the whole `i8` range.
#[test]
fn extreme_values_are_exact_in_every_kernel() {
    let kernels = Kernel::available();
    let (outputs, inputs, rows) = (19, 256, 6);
    for format in [Format::Q8_0, Format::Q4_0] {
        let bytes = format.value_bytes();
        let mut m = QuantMatrix::zeroed(format, outputs, inputs).unwrap();
        for j in 0..outputs {
            let mut raw = Vec::new();
            for b in 0..inputs / BLOCK {
                raw.extend_from_slice(&f16::from_f32(0.01 * (1 + j + b) as f32).to_le_bytes());
                raw.extend((0..bytes).map(|i| match (i + j + b) % 3 {
                    0 => 0x80,
                    1 => 0x7f,
                    _ => 0x08,
                }));
            }
            m.set_gguf_row(j, &raw);
        }
        // Activations at ±127 after quantizing: each block's extreme is ±amax.
        let x: Vec<f32> = (0..rows * inputs)
            .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 } * (1 + i % 5) as f32)
            .collect();
        let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
        check_kernels(&kernels, &m, 0, outputs, &xq, rows, inputs);
        let mut got = vec![0f32; rows * outputs];
        product(
            Kernel::Portable,
            &m,
            0,
            outputs,
            &xq,
            rows,
            &mut got,
            outputs,
        );
        // The portable kernel against the dequantized values, in f64.
        let mut dense = vec![0f32; inputs];
        for j in 0..outputs {
            m.row_into(j, &mut dense);
            for r in 0..rows {
                let mut want = 0f64;
                for b in 0..inputs / BLOCK {
                    let d = xq.scales[r * (inputs / BLOCK) + b] as f64;
                    for i in 0..BLOCK {
                        let k = b * BLOCK + i;
                        want += dense[k] as f64 * d * xq.values[r * inputs + k] as f64;
                    }
                }
                let g = got[r * outputs + j] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
    }
}

/// The quantized product is close to the f32 product of the dequantized weights (the error
/// is the activations' q8_0 rounding): llama.cpp's dot-product bound, 0.02 per value.
#[test]
fn products_close_to_the_dequantized_f32_product() {
    let (inputs, outputs, rows) = (256, 8, 3);
    for format in [Format::Q8_0, Format::Q4_0] {
        let (m, dense) = matrix(format, outputs, inputs);
        let x = synthetic(rows * inputs, 1.5);
        let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
        let mut got = vec![0f32; rows * outputs];
        product(
            Kernel::detect(),
            &m,
            0,
            outputs,
            &xq,
            rows,
            &mut got,
            outputs,
        );
        for r in 0..rows {
            for j in 0..outputs {
                let want: f32 = (0..inputs)
                    .map(|k| x[r * inputs + k] * dense[j * inputs + k])
                    .sum();
                let err = (got[r * outputs + j] - want).abs() / inputs as f32;
                assert!(err < 0.02, "{format:?} [{r}][{j}]: {err}");
            }
        }
    }
}

#[test]
fn gguf_blocks_read_back_as_pushed() {
    let (m, _) = matrix(Format::Q4_0, 2, 64);
    let mut back = QuantMatrix::zeroed(Format::Q4_0, 2, 64).unwrap();
    for j in 0..2 {
        let mut raw = Vec::new();
        for b in 0..2 {
            let (d, q) = m.load_block(j, b);
            raw.extend_from_slice(&d.to_le_bytes());
            raw.extend_from_slice(&q[..16]);
        }
        back.set_gguf_row(j, &raw);
    }
    assert_eq!(back.quant_bytes(), m.quant_bytes());
    assert_eq!(back.scales, m.scales);
}
/// Single-threaded throughput of every kernel on one tile (64 outputs), both formats:
/// `cargo test --release -p decode-models --features wgpu --lib quant_timing -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn quant_timing() {
    let n = 64;
    for format in [Format::Q8_0, Format::Q4_0] {
        for k in [768, 3072] {
            let (m, _) = matrix(format, n, k);
            for rows in [1, 4, 8, 32, 64] {
                let x = synthetic(rows * k, 0.5);
                let xq = QuantRows::new(&x, rows, k, m.padded_inputs());
                let mut line = format!("{format:?} k={k:5} rows={rows:2}:");
                for kernel in Kernel::available() {
                    let mut out = vec![0f32; rows * n];
                    let work = 2.0 * (rows * k * n) as f64;
                    let reps = ((2e8 / work) as usize).max(3);
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let t = std::time::Instant::now();
                        for _ in 0..reps {
                            product(kernel, &m, 0, n, &xq, rows, &mut out, n);
                            std::hint::black_box(&mut out);
                        }
                        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                    }
                    line += &format!("  {kernel:?} {:7.1}", work / best / 1e9);
                }
                eprintln!("{line}  GOPS");
            }
        }
    }
    // Streaming from memory: every tile of a matrix larger than the caches, once per pass.
    let (n, k) = (16384, 3072);
    for format in [Format::Q8_0, Format::Q4_0] {
        let mut m = QuantMatrix::zeroed(format, n, k).unwrap();
        let row = synthetic(k, 0.25);
        for j in 0..n {
            m.set_row(j, &row);
        }
        for rows in [1, 4, 32] {
            let x = synthetic(rows * k, 0.5);
            let xq = QuantRows::new(&x, rows, k, m.padded_inputs());
            let mut line = format!("{format:?} stream {n}×{k} rows={rows:2}:");
            for kernel in Kernel::available().into_iter().take(2) {
                let mut out = vec![0f32; rows * 64];
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    for tile in 0..n / 64 {
                        product(kernel, &m, tile * 64, 64, &xq, rows, &mut out, 64);
                        std::hint::black_box(&mut out);
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let gops = 2.0 * (rows * k * n) as f64 / best / 1e9;
                let gbs = m.bytes() as f64 / best / 1e9;
                line += &format!("  {kernel:?} {gops:7.1} GOPS {gbs:5.1} GB/s");
            }
            eprintln!("{line}");
        }
    }
}

//! The wgpu device a GPU test runs on, or a skip that says so.
//!
//! Without an adapter (a machine with neither a GPU nor Mesa's lavapipe) a wgpu test is skipped
//! with a line on stderr, written past the test harness's capture so it shows in a normal run. CI
//! sets `DECODE_REQUIRE_GPU=1`: there a missing adapter fails the test instead, so the GPU tests
//! cannot pass by not running.

#![cfg(feature = "wgpu")]

use std::io::Write;

use decode_models::backend::wgpu_device;

/// The wgpu device for `test`, or `None` (after saying why) when this machine has no adapter
/// and `DECODE_REQUIRE_GPU` is not set.
pub fn wgpu(test: &str) -> Option<burn::backend::wgpu::WgpuDevice> {
    match wgpu_device() {
        Ok(device) => Some(device.burn_device()),
        Err(e) if std::env::var_os("DECODE_REQUIRE_GPU").is_some_and(|v| v != "0") => {
            panic!("{test}: DECODE_REQUIRE_GPU is set, but {e}")
        }
        Err(e) => {
            // Straight to the process's stderr: `eprintln!` would be captured and never shown.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {e} (set DECODE_REQUIRE_GPU=1 to make this a failure)"
            );
            None
        }
    }
}

/// The share of a GPU test's cases that runs on wgpu: every `WGPU_SAMPLE`-th. On lavapipe, the
/// software Vulkan driver CI runs these tests on, every new tensor shape compiles its kernels on
/// the CPU (a cached decode step of a new length is a new shape), and the whole suites took most
/// of CI's time; each case still runs on the CPU (both paths) and, in CUDA builds, on CUDA. The
/// sample keeps each kind of case (the tests choose it so).
pub const WGPU_SAMPLE: usize = 3;

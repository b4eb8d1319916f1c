//! Which burn backend runs the model.
//!
//! The CPU default is burn-flex: measured several times faster than burn-ndarray at batch-1 decode
//! (see the README's benchmark table). burn-ndarray is available behind the `ndarray` feature,
//! burn-candle behind `candle` (both for comparison), and burn-cuda behind `cuda`, chosen at run
//! time after [`cuda_device`] finds a usable driver.

pub use burn::tensor::backend::Backend;
use decode_core::Result;

/// The default CPU backend (burn-flex, f32).
pub type Cpu = burn::backend::Flex;

/// The CPU device.
pub fn cpu_device() -> burn::backend::flex::FlexDevice {
    burn::backend::flex::FlexDevice
}

/// burn-ndarray, f32.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray;

/// burn-candle (candle-core on the CPU), f32: for the backend comparison in `benches/gpt2.rs`.
#[cfg(feature = "candle")]
#[allow(deprecated)] // burn 0.21 deprecates burn-candle; it stays here only to be measured.
pub type Candle = burn::backend::Candle<f32, i64>;

/// burn-cuda, f32.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// The CUDA device `index`, after checking that a driver is installed and sees that GPU.
///
/// burn panics on first use of a CUDA tensor when there is no driver; this turns that case into
/// [`decode_core::Error::Unsupported`].
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> Result<burn::backend::cuda::CudaDevice> {
    use cudarc::driver::{result, sys};
    use decode_core::Error;
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "--backend cuda: no NVIDIA driver (libcuda) found on this machine".into(),
        ));
    }
    result::init().map_err(|e| {
        Error::Unsupported(format!(
            "--backend cuda: the CUDA driver failed to start: {e}"
        ))
    })?;
    let count = result::device::get_count()
        .map_err(|e| Error::Unsupported(format!("--backend cuda: cannot count GPUs: {e}")))?;
    if index >= count as usize {
        return Err(Error::Unsupported(format!(
            "--backend cuda: GPU {index} requested but the driver sees {count}"
        )));
    }
    Ok(burn::backend::cuda::CudaDevice { index })
}

/// Without the `cuda` feature, CUDA is always refused.
#[cfg(not(feature = "cuda"))]
pub fn cuda_device(_index: usize) -> Result<()> {
    Err(decode_core::Error::Unsupported(
        "--backend cuda: this build has no CUDA support (rebuild with --features cuda)".into(),
    ))
}

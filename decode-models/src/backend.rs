//! Which burn backend runs the model.
//!
//! The CPU default is burn-flex: measured several times faster than burn-ndarray at batch-1 decode
//! (see the README's benchmark table). burn-ndarray is available behind the `ndarray` feature,
//! burn-candle behind `candle` (both for comparison). GPUs: burn-cuda behind `cuda`, chosen at run
//! time after [`cuda_device`] finds a usable driver, and burn-wgpu behind `wgpu` (Vulkan, Metal,
//! DX12; Mesa's lavapipe on a machine without a GPU), after [`wgpu_device`] finds an adapter.
//!
//! [`cuda_device`] and [`wgpu_device`] exist in every build, with the same signatures: without the
//! backend's feature they return [`decode_core::Error::Unsupported`], so a caller can offer the
//! choice unconditionally and only name burn's backend types (`Cuda`, `Wgpu`) where the
//! feature is on.

pub use burn::tensor::backend::Backend;
use decode_core::{Error, Result};

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

/// A CUDA GPU that [`cuda_device`] found a working driver for.
///
/// Defined in every build; with the `cuda` feature, `CudaDevice::burn_device` (or `From`) gives
/// the device of burn's `Cuda` backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CudaDevice {
    index: usize,
}

impl CudaDevice {
    /// The GPU's index, as the CUDA driver numbers them.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The device of burn's [`Cuda`] backend, for [`crate::Gpt2::load`] and the like.
    #[cfg(feature = "cuda")]
    pub fn burn_device(&self) -> burn::backend::cuda::CudaDevice {
        burn::backend::cuda::CudaDevice { index: self.index }
    }
}

#[cfg(feature = "cuda")]
impl From<CudaDevice> for burn::backend::cuda::CudaDevice {
    fn from(device: CudaDevice) -> Self {
        device.burn_device()
    }
}

/// The CUDA device `index`, after checking that a driver is installed and sees that GPU.
///
/// burn panics on first use of a CUDA tensor when there is no driver; this turns that case into
/// [`decode_core::Error::Unsupported`], as it does every case in a build without the `cuda`
/// feature.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> Result<CudaDevice> {
    use cudarc::driver::{result, sys};
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "CUDA: no NVIDIA driver (libcuda) found on this machine".into(),
        ));
    }
    // SAFETY: as above, for NVRTC, which burn-cuda compiles its kernels with.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "CUDA: NVRTC (libnvrtc, from the CUDA toolkit or pip's nvidia-cuda-nvrtc-cu12) is \
             not on the library path"
                .into(),
        ));
    }
    result::init()
        .map_err(|e| Error::Unsupported(format!("CUDA: the driver failed to start: {e}")))?;
    let count = result::device::get_count()
        .map_err(|e| Error::Unsupported(format!("CUDA: cannot count GPUs: {e}")))?;
    if index >= count as usize {
        return Err(Error::Unsupported(format!(
            "CUDA: GPU {index} requested but the driver sees {count}"
        )));
    }
    Ok(CudaDevice { index })
}

/// The CUDA device `index`: in this build (without the `cuda` feature), always
/// [`decode_core::Error::Unsupported`].
#[cfg(not(feature = "cuda"))]
pub fn cuda_device(_index: usize) -> Result<CudaDevice> {
    Err(Error::Unsupported(
        "this build has no CUDA support: enable the `cuda` feature of decode (or decode-models)"
            .into(),
    ))
}

/// burn-wgpu (Vulkan, Metal, DX12 or WebGPU, through wgpu), f32 by default, with burn's kernel fusion.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// The wgpu adapter that [`wgpu_device`] found (a GPU, or a software driver such as Mesa's
/// lavapipe).
///
/// Defined in every build; with the `wgpu` feature, `WgpuDevice::burn_device` (or `From`) gives
/// the device of burn's `Wgpu` backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WgpuDevice {
    adapter: String,
}

impl WgpuDevice {
    /// The adapter's name, driver and graphics API, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) /
    /// Mesa 22.3.6 (Vulkan)`.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The device of burn's [`Wgpu`] backend (`WgpuDevice::DefaultDevice`: the adapter
    /// [`WgpuDevice::adapter`] names), for [`crate::Gpt2::load`] and the like.
    #[cfg(feature = "wgpu")]
    pub fn burn_device(&self) -> burn::backend::wgpu::WgpuDevice {
        burn::backend::wgpu::WgpuDevice::DefaultDevice
    }
}

#[cfg(feature = "wgpu")]
impl From<WgpuDevice> for burn::backend::wgpu::WgpuDevice {
    fn from(device: WgpuDevice) -> Self {
        device.burn_device()
    }
}

/// The wgpu device, after checking that wgpu finds an adapter (a GPU, or a software driver such as
/// Mesa's lavapipe).
///
/// burn panics on first use of a wgpu tensor when there is no adapter; this turns that case into
/// [`decode_core::Error::Unsupported`], as it does every case in a build without the `wgpu`
/// feature. The adapter is the one burn itself picks for its default device (high-performance
/// preference).
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Result<WgpuDevice> {
    probe_wgpu().map(|adapter| WgpuDevice { adapter })
}

/// The wgpu device: in this build (without the `wgpu` feature), always
/// [`decode_core::Error::Unsupported`].
#[cfg(not(feature = "wgpu"))]
pub fn wgpu_device() -> Result<WgpuDevice> {
    Err(Error::Unsupported(
        "this build has no wgpu support: enable the `wgpu` feature of decode (or decode-models)"
            .into(),
    ))
}

/// Asks wgpu for the adapter burn's default device uses; returns its name, driver and graphics
/// API, and records its buffer limit for [`max_tensor_bytes`].
#[cfg(feature = "wgpu")]
fn probe_wgpu() -> Result<String> {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    // The graphics API burn uses for the default device (Vulkan on Linux, Metal on macOS, …).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: AutoGraphicsApi::backend().into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
    };
    let adapter = burn::tensor::try_read_sync(instance.request_adapter(&options))
        .ok_or_else(|| wgpu_missing("the adapter request did not complete"))?
        .map_err(|e| wgpu_missing(&e.to_string()))?;
    let limits = adapter.limits();
    let _ = WGPU_MAX_BUFFER.set(
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size),
    );
    let info = adapter.get_info();
    Ok(format!(
        "{} / {} ({:?})",
        info.name, info.driver, info.backend
    ))
}

/// The largest buffer the wgpu adapter binds, read when it is probed (burn asks for the adapter's
/// own limits; Mesa's lavapipe binds 128 MiB, NVIDIA's Vulkan driver 4 GiB).
#[cfg(feature = "wgpu")]
static WGPU_MAX_BUFFER: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The largest tensor, in bytes, `device` can hold, when its backend has such a limit (wgpu: the
/// adapter's storage-buffer binding size); `None` when it has none worth checking. A weight above
/// it would make burn panic on upload, so [`crate::Gpt2::load`] refuses it first.
pub fn max_tensor_bytes<B: Backend>(device: &B::Device) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    if B::name(device).contains("wgpu") {
        if WGPU_MAX_BUFFER.get().is_none() {
            let _ = probe_wgpu();
        }
        return WGPU_MAX_BUFFER.get().copied();
    }
    let _ = device;
    None
}

#[cfg(feature = "wgpu")]
fn wgpu_missing(why: &str) -> Error {
    Error::Unsupported(format!(
        "wgpu: no GPU adapter found ({why}); without a GPU on Linux, Mesa's software Vulkan \
         driver works (Debian and Ubuntu: the mesa-vulkan-drivers package)"
    ))
}

/// Whether `device` is a CPU backend's: the host path runs there, and its tensors live in host
/// memory (so the KV cache is allocated, grown and reordered there, fallibly).
pub(crate) fn is_cpu<B: Backend>(device: &B::Device) -> bool {
    matches!(B::name(device).as_str(), "flex" | "ndarray")
}

//! Which SIMD instructions the host kernels use: the best this CPU has, unless the environment
//! variable `DECODE_SIMD` caps it (`avx2` or `portable`), so the AVX2 and portable kernels can be
//! measured on a machine that has AVX-512 (`DECODE_SIMD=avx2 cargo bench --bench gpt2`).

use std::sync::OnceLock;

use decode_core::{Error, Result};

/// A level of SIMD support, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// Plain Rust.
    Portable,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 (F; BW, VL and VNNI where the kernels ask for them too).
    Avx512,
}

/// The level the kernels use. An unreadable `DECODE_SIMD` leaves the CPU's best (loading a model
/// reports it: [`check_env`]).
pub fn level() -> Simd {
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| match cap() {
        Some(cap) => detected().min(cap),
        None => detected(),
    })
}

/// The level `DECODE_SIMD` caps the kernels at, if it names one.
pub fn cap() -> Option<Simd> {
    read_cap().ok().flatten()
}

/// Refuses a `DECODE_SIMD` that names no level.
pub fn check_env() -> Result<()> {
    read_cap().map(|_| ())
}

fn read_cap() -> Result<Option<Simd>> {
    let Some(value) = std::env::var_os("DECODE_SIMD") else {
        return Ok(None);
    };
    match value.to_str() {
        Some("avx512") => Ok(Some(Simd::Avx512)),
        Some("avx2") => Ok(Some(Simd::Avx2)),
        Some("portable") => Ok(Some(Simd::Portable)),
        _ => Err(Error::invalid(
            "DECODE_SIMD",
            format!("{value:?} is not avx512, avx2 or portable"),
        )),
    }
}

/// The best level this CPU has.
fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

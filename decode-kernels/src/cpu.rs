//! Which SIMD instructions the kernels use: the best this CPU has, unless the environment
//! variable `DECODE_SIMD` caps it (`avx2` or `portable`), so the AVX2 and portable kernels can be
//! measured on a machine that has AVX-512 (`DECODE_SIMD=avx2 cargo bench --bench gpt2`); and how
//! many threads they run on (`RAYON_NUM_THREADS`, checked).

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

/// Refuses a `DECODE_SIMD` that names no level and a `RAYON_NUM_THREADS` that is not a thread
/// count (rayon would quietly ignore the first and try to spawn any number of the second).
pub fn check_env() -> Result<()> {
    read_cap()?;
    threads().map(|_| ())
}

/// The threads the kernels' pool ([`crate::pool`]) runs: `RAYON_NUM_THREADS` when set (the
/// variable rayon, and so burn's CPU backends, read too; 0 or empty: one per logical CPU),
/// checked against [`max_threads`].
pub fn threads() -> Result<Option<usize>> {
    let Some(value) = std::env::var_os("RAYON_NUM_THREADS") else {
        return Ok(None);
    };
    let n = match value.to_str().map(str::trim) {
        Some("") => return Ok(None),
        Some(s) => s.parse::<usize>().ok(),
        None => None,
    };
    let limit = max_threads();
    match n {
        Some(0) => Ok(None),
        Some(n) if n <= limit => Ok(Some(n)),
        Some(n) => Err(Error::invalid(
            "RAYON_NUM_THREADS",
            format!(
                "{n} threads is more than {limit} (4 per logical CPU, at least 1024): the pool \
                 would spend its time starting threads"
            ),
        )),
        None => Err(Error::invalid(
            "RAYON_NUM_THREADS",
            format!("{value:?} is not a number of threads"),
        )),
    }
}

/// The most threads `RAYON_NUM_THREADS` may ask for: 4 per logical CPU, and never fewer than 1024.
pub fn max_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus.saturating_mul(4).max(1024)
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

/// Who made the CPU: some kernel settings (how far ahead, and into which cache, a kernel asks for
/// its weights) were measured best differently on AMD's and Intel's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maker {
    /// `AuthenticAMD`.
    Amd,
    /// `GenuineIntel`.
    Intel,
    /// Any other, or not x86.
    Other,
}

/// The CPU's maker, from `cpuid`'s vendor string.
pub fn maker() -> Maker {
    static MAKER: OnceLock<Maker> = OnceLock::new();
    *MAKER.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: every x86-64 CPU has `cpuid` and its leaf 0.
            #[allow(unused_unsafe)]
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let mut name = [0u8; 12];
            for (bytes, reg) in name.chunks_exact_mut(4).zip([id.ebx, id.edx, id.ecx]) {
                bytes.copy_from_slice(&reg.to_le_bytes());
            }
            match &name {
                b"AuthenticAMD" => return Maker::Amd,
                b"GenuineIntel" => return Maker::Intel,
                _ => {}
            }
        }
        Maker::Other
    })
}

/// The size of one core's L1 data cache in bytes, from `cpuid` (AMD's leaf `0x8000_0005`,
/// Intel's leaf 4); 32 KiB where it does not say. The many-row kernel sizes its blocks by it.
pub fn l1d_bytes() -> usize {
    static L1D: OnceLock<usize> = OnceLock::new();
    *L1D.get_or_init(|| read_l1d().unwrap_or(32 << 10))
}

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn read_l1d() -> Option<usize> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY (every call): every x86-64 CPU has `cpuid` and its leaves 0 and 0x8000_0000;
    // other leaves are read only where those say they exist.
    unsafe {
        match maker() {
            Maker::Amd if __cpuid(0x8000_0000).eax >= 0x8000_0005 => {
                let kib = (__cpuid(0x8000_0005).ecx >> 24) as usize;
                (kib > 0).then_some(kib << 10)
            }
            Maker::Intel if __cpuid(0).eax >= 4 => (0..16).find_map(|sub| {
                let r = __cpuid_count(4, sub);
                let (kind, level) = (r.eax & 0x1f, (r.eax >> 5) & 0x7);
                // Type 1 is a data cache; type 0 ends the list.
                (kind == 1 && level == 1).then(|| {
                    let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
                    let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                    let line = (r.ebx & 0xfff) as usize + 1;
                    ways * parts * line * (r.ecx as usize + 1)
                })
            }),
            _ => None,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_l1d() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    /// Whatever `cpuid` says, the size is a plausible L1 (AMD and Intel cores have 16–80 KiB).
    #[test]
    fn l1d_size_is_plausible() {
        let l1d = super::l1d_bytes();
        assert!((8 << 10..=1 << 20).contains(&l1d), "L1D of {l1d} bytes");
    }
}

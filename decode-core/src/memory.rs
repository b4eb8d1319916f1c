//! Memory: how much this process may still use ([`available_bytes`]), what a request's estimate
//! is checked against before anything is allocated; and allocations that fail with an error
//! instead of aborting the process ([`zeroed_f32`]).
//!
//! A Rust allocation that fails aborts the process ("memory allocation of … bytes failed"), so
//! the large ones (a KV cache, a batch's logits) are estimated first and then made with a call
//! that can fail.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What limits the memory this process may still use, each where the system says it: the
/// address-space limit (`ulimit -v`) less what is already mapped, the memory cgroup's limit less
/// its usage (v2 `memory.max`, v1 `memory.limit_in_bytes`, every level up to the root), and the
/// machine's `MemAvailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryLimits {
    /// Address space left under `RLIMIT_AS`, when it is limited.
    pub address_space: Option<u64>,
    /// Bytes left under the tightest memory cgroup, when one limits.
    pub cgroup: Option<u64>,
    /// The machine's available memory (`MemAvailable` in `/proc/meminfo`).
    pub available: Option<u64>,
}

impl MemoryLimits {
    /// The limits as the system reports them now (all `None` where it says nothing: outside
    /// Linux).
    pub fn read() -> Self {
        if !cfg!(target_os = "linux") {
            return MemoryLimits::default();
        }
        let read = |path: &str| std::fs::read_to_string(path).ok();
        MemoryLimits {
            address_space: read("/proc/self/limits")
                .zip(read("/proc/self/status"))
                .and_then(|(limits, status)| address_space_left(&limits, &status)),
            cgroup: read("/proc/self/cgroup")
                .and_then(|cgroups| cgroup_left(&cgroups, Path::new("/sys/fs/cgroup"))),
            available: read("/proc/meminfo").and_then(|m| kib_field(&m, "MemAvailable:")),
        }
    }

    /// The tightest of the limits, or `None` when none is known.
    pub fn tightest(&self) -> Option<u64> {
        [self.address_space, self.cgroup, self.available]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Bytes this process may still allocate: the tightest of [`MemoryLimits::read`], or `None` where
/// the system reports none.
pub fn available_bytes() -> Option<u64> {
    MemoryLimits::read().tightest()
}

/// `RLIMIT_AS` (the "Max address space" line of `/proc/self/limits`) less `VmSize`.
fn address_space_left(limits: &str, status: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?;
    let limit: u64 = soft.parse().ok()?; // "unlimited" does not parse: no limit
    let mapped = kib_field(status, "VmSize:")?;
    Some(limit.saturating_sub(mapped))
}

/// A `Name:  1234 kB` field, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The least room left at any level of this process's memory cgroup, from its line in
/// `/proc/self/cgroup` (`0::/path` for v2, `N:memory:/path` for v1) and the hierarchy mounted
/// at `root`.
fn cgroup_left(cgroups: &str, root: &Path) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (base, limit, usage) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // From the process's own group up to the root of what this namespace shows.
        let mut dir: PathBuf = base.join(path.trim_start_matches('/'));
        loop {
            let number = |file: &str| -> Option<u64> {
                std::fs::read_to_string(dir.join(file))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            // "max" (v2) does not parse: no limit at this level.
            if let (Some(limit), Some(usage)) = (number(limit), number(usage)) {
                let left = limit.saturating_sub(usage);
                least = Some(least.map_or(left, |l| l.min(left)));
            }
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
    }
    least
}

/// A vector of `n` zeros, or [`Error::OutOfMemory`] naming `what` when the allocator cannot give
/// the memory (where `vec![0.0; n]` would abort the process). Zeroed pages come from the system
/// as they are touched, as with `vec!`.
pub fn zeroed_f32(n: usize, what: &str) -> Result<Vec<f32>> {
    let refused = || {
        Error::OutOfMemory(format!(
            "{what} needs {:.2} GiB that the system will not give this process",
            n as f64 * 4.0 / (1u64 << 30) as f64
        ))
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| refused())?;
    // SAFETY: `layout` has a non-zero size (n > 0, f32 is 4 bytes).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(refused());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `[f32; n]` (the capacity
    // `n` gives the same layout back when the vector frees it), and all-zero bytes are the f32
    // 0.0, so all `n` values are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_space_left_is_the_limit_less_what_is_mapped() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         4294967296           unlimited            bytes\n";
        let status = "Name:\tx\nVmSize:\t  1048576 kB\n";
        assert_eq!(address_space_left(limits, status), Some(3 << 30));
        let unlimited = limits.replace("4294967296", "unlimited");
        assert_eq!(address_space_left(&unlimited, status), None);
    }

    #[test]
    fn cgroups_are_read_at_every_level_v1_and_v2() {
        let root = std::env::temp_dir().join(format!("decode-cgroup-test-{}", std::process::id()));
        let v2 = root.join("a/b");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        std::fs::write(v2.join("memory.current"), "100\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "1000\n").unwrap();
        std::fs::write(root.join("a/memory.current"), "400\n").unwrap();
        assert_eq!(cgroup_left("0::/a/b\n", &root), Some(600));
        let v1 = root.join("memory/x");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "5000\n").unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "1000\n").unwrap();
        assert_eq!(cgroup_left("4:memory:/x\n1:cpu:/\n", &root), Some(4000));
        assert_eq!(cgroup_left("1:cpu:/\n", &root), None);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn this_machine_reports_its_available_memory() {
        if cfg!(target_os = "linux") {
            let limits = MemoryLimits::read();
            assert!(limits.available.is_some_and(|b| b > 0), "{limits:?}");
            assert!(available_bytes().is_some());
        }
    }

    #[test]
    fn impossible_allocations_are_errors() {
        let v = zeroed_f32(1000, "a test").unwrap();
        assert!(v.len() == 1000 && v.iter().all(|&x| x == 0.0));
        // More than the layout can describe, and more than any address space (2^47 bytes).
        for n in [usize::MAX / 4, 1 << 45] {
            let err = zeroed_f32(n, "a huge cache").unwrap_err();
            assert!(err.to_string().contains("a huge cache"), "{err}");
        }
    }
}

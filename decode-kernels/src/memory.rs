//! Large buffers for weights ([`Buffer`]): zeroed memory whose pages are mapped only as they are
//! first written (laying out a matrix while its source pages are released never holds two
//! copies), on Linux mapped fresh from the system and backed by transparent huge pages where the
//! system grants them.
//!
//! A decode step reads every weight once: on 4 KiB pages that is a TLB miss every 4 KiB, each a
//! page walk (two levels of them in a virtual machine). Measured on a 2-core Zen 3 EPYC (KVM),
//! summing 512 MB: one thread 10.2–11.6 GB/s on 4 KiB pages, 11.9–13.4 on huge pages; two
//! threads 16.6–20.2 against 20.4–21.2. The global allocator cannot give that: glibc serves
//! allocations below its moving `mmap` threshold (up to 32 MiB once a large block was freed)
//! from its heap, already touched, where advice comes too late.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use decode_core::{Error, Result};

/// The huge page size the mappings are aligned to (x86-64's and most aarch64 kernels').
const HUGE: usize = 2 << 20;

/// `len` values of `T` in memory of their own: below [`HUGE`] bytes (or outside Linux) from the
/// global allocator, zeroed; from there an anonymous mapping aligned to a huge page, its whole
/// huge pages advised `MADV_HUGEPAGE`.
pub struct Buffer<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// The values' layout (their size and `T`'s alignment).
    layout: Layout,
    /// Where the mapping starts and its length in bytes; `None`: from the global allocator.
    mapping: Option<(NonNull<u8>, usize)>,
}

// SAFETY: a `Buffer` owns its values as a `Vec` would.
unsafe impl<T: Copy + Send> Send for Buffer<T> {}
// SAFETY: as above: shared access is to `&[T]` only.
unsafe impl<T: Copy + Sync> Sync for Buffer<T> {}

impl<T: Copy> Buffer<T> {
    /// `len` values whose bits are all zero; `what` names them in the error. Too many values to
    /// address, or memory the system refuses, is [`Error::OutOfMemory`] (not an abort, as a
    /// `Vec`'s would be).
    ///
    /// # Safety
    ///
    /// All-zero bits must be a valid `T` (f32, f16, bf16, integers, arrays of them).
    pub unsafe fn zeroed(len: usize, what: &str) -> Result<Self> {
        let refused = |bytes: Option<usize>| {
            let size = match bytes {
                Some(b) => format!("{b} bytes"),
                None => format!("{len} values of {} bytes", size_of::<T>()),
            };
            Error::OutOfMemory(format!("{size} for {what}: the system refused them"))
        };
        let layout = Layout::array::<T>(len).map_err(|_| refused(None))?;
        // SAFETY: the caller's promise.
        unsafe { Self::allocate(len, layout) }.ok_or_else(|| refused(Some(layout.size())))
    }

    /// The allocation itself: `None` when the system refuses it.
    ///
    /// # Safety
    ///
    /// As [`Buffer::zeroed`]'s; `layout` is `len` values of `T`.
    unsafe fn allocate(len: usize, layout: Layout) -> Option<Self> {
        if layout.size() == 0 {
            return Some(Buffer {
                ptr: NonNull::dangling(),
                len,
                layout,
                mapping: None,
            });
        }
        #[cfg(target_os = "linux")]
        if layout.size() >= HUGE {
            return Self::mapped(len, layout);
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }.cast::<T>())?;
        Some(Buffer {
            ptr,
            len,
            layout,
            mapping: None,
        })
    }

    /// Maps `layout.size()` bytes plus a huge page of slack, starts the values at the first
    /// huge-page boundary and advises the whole huge pages that follow (the partial last one
    /// stays on small pages: no memory beyond the values is touched). Fresh anonymous pages are
    /// zero.
    #[cfg(target_os = "linux")]
    fn mapped(len: usize, layout: Layout) -> Option<Self> {
        let size = layout.size().checked_add(HUGE)?;
        // SAFETY: an anonymous private mapping of `size` bytes at an address the kernel picks.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(HUGE);
        let whole = layout.size() / HUGE * HUGE;
        // SAFETY: `start..start + whole` lies inside the mapping (`start - base < HUGE`); the
        // advice changes how its pages are backed, never their contents. A refusal (a kernel
        // without THP) is harmless and ignored.
        unsafe { libc::madvise(start as *mut libc::c_void, whole, libc::MADV_HUGEPAGE) };
        Some(Buffer {
            // SAFETY: `start` is inside a successful mapping, so not null; huge-page aligned, so
            // aligned for `T` (whose alignment is at most a page).
            ptr: unsafe { NonNull::new_unchecked(start as *mut T) },
            len,
            layout,
            // SAFETY: `base` is a successful mapping, not null.
            mapping: Some((unsafe { NonNull::new_unchecked(base.cast()) }, size)),
        })
    }
}

impl<T: Copy> Drop for Buffer<T> {
    fn drop(&mut self) {
        match self.mapping {
            #[cfg(target_os = "linux")]
            Some((base, size)) => {
                // SAFETY: `base..base + size` is the mapping this buffer made, unmapped once.
                unsafe { libc::munmap(base.as_ptr().cast(), size) };
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => unreachable!("mappings are made on Linux only"),
            None => {
                if self.layout.size() > 0 {
                    // SAFETY: allocated by the global allocator with this layout.
                    unsafe { dealloc(self.ptr.as_ptr().cast(), self.layout) };
                }
            }
        }
    }
}

impl<T: Copy> Deref for Buffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values (zeroed, then written through `&mut`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Clone for Buffer<T> {
    /// A copy; memory the system refuses aborts, as a `Vec`'s clone does.
    fn clone(&self) -> Self {
        // SAFETY: the zero bits are never read as `T`s: every value is copied over them first,
        // through raw pointers (no slice of the zeroed values is made).
        let copy = unsafe { Self::allocate(self.len, self.layout) }
            .unwrap_or_else(|| handle_alloc_error(self.layout));
        // SAFETY: both hold `len` values and are distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), copy.ptr.as_ptr(), self.len) };
        copy
    }
}

impl<T: Copy + PartialEq> PartialEq for Buffer<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .field("mapped", &self.mapping.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_are_zero_of_every_size() {
        for n in [0, 1, 1000, 3 << 20] {
            // SAFETY: zero bits are a valid f32 and u16.
            let (a, mut b) = unsafe {
                (
                    Buffer::<f32>::zeroed(n, "a").unwrap(),
                    Buffer::<u16>::zeroed(n, "b").unwrap(),
                )
            };
            assert_eq!((a.len(), b.len()), (n, n));
            assert!(a.iter().all(|&v| v == 0.0) && b.iter().all(|&v| v == 0));
            b.iter_mut().enumerate().for_each(|(i, v)| *v = i as u16);
            let c = b.clone();
            assert!(c == b && c.iter().enumerate().all(|(i, &v)| v == i as u16));
        }
    }

    /// More values than an allocation can address are an error naming them, not a panic.
    #[test]
    fn impossible_sizes_are_errors() {
        // SAFETY: zero bits are a valid u64.
        let err = unsafe { Buffer::<u64>::zeroed(usize::MAX / 4, "the test's weights") }
            .expect_err("refused");
        assert!(
            matches!(&err, Error::OutOfMemory(m) if m.contains("the test's weights")),
            "{err}"
        );
    }

    /// Where the system grants transparent huge pages on advice (`madvise` or `always`), a
    /// large buffer lands on them once written: the kernel's own accounting of the mapping
    /// that holds the buffer (`AnonHugePages` in `/proc/self/smaps`) says so.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_land_on_huge_pages_where_the_system_grants_them() {
        let setting = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !(setting.contains("[madvise]") || setting.contains("[always]")) {
            eprintln!("transparent huge pages are off here ({setting:?}): nothing to check");
            return;
        }
        // SAFETY: zero bits are a valid u8.
        let mut v = unsafe { Buffer::<u8>::zeroed(16 << 20, "a test").unwrap() };
        v.iter_mut().step_by(4096).for_each(|b| *b = 1);
        let at = v.as_ptr() as usize + (8 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps is readable");
        let mut inside = false;
        let mut huge_kb = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
            } else if inside && let Some(kb) = line.strip_prefix("AnonHugePages:") {
                huge_kb = kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok();
            }
        }
        let huge_kb = huge_kb.expect("the buffer's mapping is in smaps");
        assert!(
            huge_kb >= 2048,
            "no huge pages under the buffer ({huge_kb} kB)"
        );
    }
}

//! A per-thread scratch buffer, reused across calls.

/// Runs `f` on this thread's scratch buffer of at least `n` values, reused across calls (with
/// arbitrary contents): a prompt's pass would otherwise fault in megabytes of fresh pages for
/// every layer's temporaries.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        // A nested call (none today) gets a buffer of its own rather than a borrow panic.
        match cell.try_borrow_mut() {
            Ok(mut buf) => {
                if buf.len() < n {
                    buf.resize(n, 0.0);
                }
                f(&mut buf[..n])
            }
            Err(_) => f(&mut vec![0f32; n]),
        }
    })
}

//! The kernels' thread pool: the calling thread and `threads − 1` workers share out a loop's
//! iterations, and the workers spin for a while after each loop before they sleep.
//!
//! Why not rayon: a decode step is about fifty short loops (one per weight matrix, a few tens of
//! microseconds each for a small model), one after the other. rayon's idle workers yield and
//! then sleep between them, and waking one costs a futex call and, in a VM, an interrupt to
//! another virtual CPU; its work stealing also cuts a loop into pieces that the two threads
//! read in turns. Measured on a 2-vCPU KVM Xeon, GPT-2 small's 48 q8_0 layer matrices one after
//! the other, old and new in alternating processes: one row level (1.72–1.77 ms), 8 rows
//! 1.94–1.96 → 1.58–1.66 times one row, 16 rows 3.7–3.8 → 3.0–3.05; f16 8 rows 1.77–1.85 →
//! 1.70–1.75.
//!
//! One loop runs at a time: a caller that finds the pool busy (another thread's loop, or a loop
//! started from inside a loop) runs its own iterations itself.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long a worker spins for the next loop before it sleeps: long enough to span the gaps
/// inside a decode step (norms, attention's bookkeeping, sampling a greedy token), short enough
/// that an idle pool costs next to nothing.
const SPIN: Duration = Duration::from_micros(500);

/// A loop's body with its lifetime erased: valid while [`Pool::run`] waits for every worker.
#[derive(Clone, Copy)]
struct Body(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until every worker is done.
unsafe impl Send for Body {}

struct Loop {
    body: Body,
    /// Iterations in all, claimed `chunk` at a time.
    len: usize,
    chunk: usize,
}

struct Pool {
    /// Worker threads (set once they are started, before any loop).
    workers: AtomicUsize,
    /// Held by the thread whose loop runs.
    busy: Mutex<()>,
    /// The current loop (written before `epoch` moves on, read after a worker sees it move).
    current: Mutex<Option<Loop>>,
    /// Counts loops: a worker takes part in each once.
    epoch: AtomicUsize,
    /// The next unclaimed iteration of the current loop.
    next: AtomicUsize,
    /// Workers that have not finished the current loop.
    running: AtomicUsize,
    /// Workers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Set when an iteration on a worker panicked; the caller panics in turn.
    panicked: AtomicBool,
}

thread_local! {
    /// Whether this thread is inside a loop's iteration (a nested loop then runs in place).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // `cpu::check_env` refused an unreadable or absurd RAYON_NUM_THREADS before any model
        // was built; here an unreadable one means the machine's count.
        let threads = crate::cpu::threads()
            .ok()
            .flatten()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers: AtomicUsize::new(0),
            busy: Mutex::new(()),
            current: Mutex::new(None),
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            panicked: AtomicBool::new(false),
        }));
        let mut started = 0;
        for i in 1..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("decode-kernels-{i}"))
                .spawn(move || pool.work());
            if spawned.is_err() {
                break;
            }
            started += 1;
        }
        // Read by callers only, after `get_or_init` has returned.
        pool.workers.store(started, Ordering::Relaxed);
        pool
    })
}

/// The threads a loop runs on: the caller and the pool's workers.
pub fn threads() -> usize {
    pool().workers() + 1
}

/// Calls `f(i)` for every `i < len`, shared out over the calling thread and the pool's workers
/// (contiguous runs of iterations, so each thread streams its part of the weights in order);
/// returns when all are done. A panic in `f` is passed on to the caller once every thread has
/// stopped.
pub fn for_each(len: usize, f: impl Fn(usize) + Sync) {
    if len == 0 {
        return;
    }
    let pool = pool();
    if len == 1 || pool.workers() == 0 || INSIDE.with(Cell::get) {
        return (0..len).for_each(f);
    }
    let busy = match pool.busy.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return (0..len).for_each(f),
    };
    pool.run(len, &f);
    drop(busy);
}

/// [`for_each`] over `data` cut into `chunk`-long pieces (the last may be shorter): `f(i,
/// piece)` for piece `i`.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0, "chunks of 0 elements");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: `for_each` calls each `i` once, so the pieces handed out are disjoint parts
        // of `data`, which is borrowed mutably for the whole call.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(i, piece)
    });
}

struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: used only to hand disjoint pieces of one `&mut [T]` (with `T: Send`) to other threads.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Pool {
    fn workers(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    /// Runs one loop with the `busy` lock held.
    fn run(&self, len: usize, f: &(dyn Fn(usize) + Sync)) {
        let workers = self.workers();
        let threads = workers + 1;
        // One contiguous share a thread, each streaming its weights in order (measured: four
        // shares a thread, claimed in turn, made the layers of a q8_0 GPT-2 small step 5–10%
        // slower). A share is still claimed, not assigned: a worker that is late (asleep, or
        // descheduled) leaves its share to the threads that came.
        let chunk = len.div_ceil(threads).max(1);
        // SAFETY (of the erased lifetime): `f` outlives this call, and the call returns only
        // after `running` is 0, when no worker touches `f` any more.
        let body: *const (dyn Fn(usize) + Sync + '_) = f;
        let body = Body(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                body,
            )
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Loop { body, len, chunk });
        self.next.store(0, Ordering::Relaxed);
        self.running.store(workers, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _sleep = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // Waits for the workers even if an iteration here panics.
        struct Join<'a>(&'a Pool);
        impl Drop for Join<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.running.load(Ordering::Acquire) != 0 {
                    pause(&mut spins);
                }
            }
        }
        let join = Join(self);
        INSIDE.with(|inside| inside.set(true));
        let mine = catch_unwind(AssertUnwindSafe(|| self.claim(len, chunk, f)));
        INSIDE.with(|inside| inside.set(false));
        drop(join);
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if self.panicked.swap(false, Ordering::Relaxed) {
            panic!("an iteration of a kernel loop panicked on a pool thread");
        }
    }

    /// Claims and runs runs of iterations until none is left.
    fn claim(&self, len: usize, chunk: usize, f: &(dyn Fn(usize) + Sync)) {
        loop {
            let start = self.next.fetch_add(chunk, Ordering::Relaxed);
            if start >= len {
                return;
            }
            (start..len.min(start + chunk)).for_each(f);
        }
    }

    /// A worker: waits for each loop, takes part, says it is done.
    fn work(&self) {
        INSIDE.with(|inside| inside.set(true));
        let mut seen = 0;
        loop {
            seen = self.wait(seen);
            let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let job = current.as_ref().map(|l| (l.body, l.len, l.chunk));
            drop(current);
            if let Some((body, len, chunk)) = job {
                // SAFETY: `run` keeps the body alive until `running` is 0, which this worker's
                // decrement below is part of.
                let f = unsafe { &*body.0 };
                if catch_unwind(AssertUnwindSafe(|| self.claim(len, chunk, f))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
            self.running.fetch_sub(1, Ordering::Release);
        }
    }

    /// Spins for a loop after `seen`, then sleeps until one comes; returns its epoch.
    fn wait(&self, seen: usize) -> usize {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen {
                return epoch;
            }
            pause(&mut spins);
            if spins.is_multiple_of(1024) && started.elapsed() >= SPIN {
                break;
            }
        }
        let mut sleep = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return epoch;
            }
            sleep = self.wake.wait(sleep).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One turn of a spin-wait: a pause instruction, and from the 4096th turn on a yield every 64
/// turns, so that on a machine with more runnable threads than cores (tests in parallel, other
/// programs) the thread waited for gets the core.
fn pause(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if *spins >= 4096 && spins.is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_iteration_runs_once() {
        for len in [0, 1, 2, 3, 7, 64, 1000] {
            let counts: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
            for_each(len, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "len {len}"
            );
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut data = vec![0usize; 1001];
        for_each_chunk_mut(&mut data, 64, |i, piece| {
            for (j, v) in piece.iter_mut().enumerate() {
                *v += i * 64 + j + 1;
            }
        });
        assert!(data.iter().enumerate().all(|(i, &v)| v == i + 1));
    }

    #[test]
    fn nested_and_concurrent_loops_run() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        for_each(8, |_| {
                            for_each(8, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 64);
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let caught = catch_unwind(|| {
            for_each(100, |i| {
                if i == 57 {
                    panic!("iteration 57");
                }
            })
        });
        assert!(caught.is_err());
        let sum = AtomicUsize::new(0);
        for_each(100, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn sleeping_workers_wake() {
        for_each(4, |_| {});
        std::thread::sleep(SPIN * 3);
        let sum = AtomicUsize::new(0);
        for_each(1000, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 499_500);
    }
}

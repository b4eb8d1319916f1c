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
//!
//! Whether sharing out pays is measured, not assumed: a [`Split`] times a unit of work (a
//! model's forward pass) run with its loops shared out and run on the calling thread alone
//! ([`alone`]), as the program runs, and keeps to the faster. On a 2-vCPU KVM Zen 3 EPYC the
//! two vCPUs sat, from one second to the next, on cores that shared an L3 (a cache line there
//! and back in ~100 ns) or on cores that did not (~450 ns); the embedded KJV target (8.6 MB,
//! products of 256 × 768 and smaller) ran its decode steps up to twice as fast alone, while
//! GPT-2 small, whose weights stream from memory, runs faster shared. Timing the loops one by
//! one did not tell: each product ran faster shared, but the step did not (presumably the
//! results each worker wrote crossing to the caller's core after the loop).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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
    /// Whether this thread's loops run on it alone ([`alone`]).
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every loop it starts on the calling thread alone (the pool's workers are not
/// asked); returns what `f` returns.
pub fn alone<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALONE.with(|alone| alone.set(self.0));
        }
    }
    let _restore = Restore(ALONE.with(|alone| alone.replace(true)));
    f()
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
    if len == 1 || pool.workers() == 0 || INSIDE.with(Cell::get) || ALONE.with(Cell::get) {
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

/// A unit of work that learns whether its loops should be shared out over the pool (a model's
/// forward pass, say): it times the work done both ways, separately for each size (powers of
/// two of the `size` its caller states: a pass's tokens), keeps to the faster, and now and then
/// runs the other way to see whether that has changed (every 32nd call, less often the slower
/// that way was, so that looking costs a few percent).
///
/// Either way every iteration of every loop runs once, so the results are the same bit for
/// bit.
#[derive(Default)]
pub struct Split {
    sizes: [Timings; 32],
}

/// What a [`Split`] has seen of work of one size.
#[derive(Default)]
struct Timings {
    /// Calls so far.
    calls: AtomicU32,
    /// Nanoseconds per unit of size, as f32 bits (0: not yet timed), alone and shared out.
    alone: AtomicU32,
    shared: AtomicU32,
}

impl Split {
    /// Runs `f` (work of `size` units) with its loops shared out or alone, whichever has run
    /// work of its size faster; returns what `f` returns.
    pub fn run<R>(&self, size: usize, f: impl FnOnce() -> R) -> R {
        if threads() == 1 {
            return f();
        }
        let size = size.max(1);
        let timings = &self.sizes[(size.ilog2() as usize).min(31)];
        let calls = timings.calls.fetch_add(1, Ordering::Relaxed);
        let (alone_ns, shared_ns) = (read(&timings.alone), read(&timings.shared));
        let share = chooses_shared(calls, alone_ns, shared_ns);
        let started = Instant::now();
        let result = if share { f() } else { alone(f) };
        let sample = started.elapsed().as_nanos() as f32 / size as f32;
        let (timing, old) = match share {
            true => (&timings.shared, shared_ns),
            false => (&timings.alone, alone_ns),
        };
        // The first call each way warms caches and pages: not counted.
        if calls >= 2 {
            timing.store(learn(old, sample).to_bits(), Ordering::Relaxed);
        }
        result
    }
}

impl Clone for Split {
    /// A split with nothing learnt (what was timed belongs to the original's work).
    fn clone(&self) -> Self {
        Split::default()
    }
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split").finish_non_exhaustive()
    }
}

/// Calls of a size that try each way in turn before a [`Split`] chooses (the first two are
/// not counted).
const WARMING: u32 = 4;

/// Whether call `calls` of a size shares its loops out, given the time each way: shared and
/// alone in turn for the first [`WARMING`] calls (shared first: a size seen once, a prompt's,
/// is most often large), then the faster, but the slower once every 32 × 2^⌊log₂ ratio⌋ calls
/// (up to every 256th).
fn chooses_shared(calls: u32, alone: f32, shared: f32) -> bool {
    if calls < WARMING {
        return calls.is_multiple_of(2);
    }
    let ratio = (alone.max(shared) / alone.min(shared)).clamp(1.0, 8.0);
    let every = 32u32 << (ratio as u32).ilog2();
    (shared < alone) != calls.is_multiple_of(every)
}

/// A timing as [`Timings`] stores it; not yet timed reads as +∞.
fn read(timing: &AtomicU32) -> f32 {
    match timing.load(Ordering::Relaxed) {
        0 => f32::INFINITY,
        bits => f32::from_bits(bits),
    }
}

/// The new estimate from the old (+∞: none) and a sample: a faster sample at once, a slower
/// one as a moving average that counts it at most twice the old. A way that looked slow once
/// (a thread descheduled) is taken again as soon as it is seen fast; a way that looked fast by
/// chance is the one then run, and its estimate rises to the truth within a few calls.
fn learn(old: f32, sample: f32) -> f32 {
    let sample = sample.max(f32::MIN_POSITIVE);
    if sample < old {
        sample
    } else {
        old + (sample.min(2.0 * old) - old) / 4.0
    }
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
    fn alone_keeps_every_loop_on_the_calling_thread() {
        let me = std::thread::current().id();
        let others = AtomicUsize::new(0);
        alone(|| {
            for_each(1000, |_| {
                if std::thread::current().id() != me {
                    others.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        assert_eq!(others.load(Ordering::Relaxed), 0);
        assert!(
            !ALONE.with(Cell::get),
            "alone() restores the thread's setting"
        );
    }

    /// Work that takes `alone_ms` run alone and `shared_ms` shared out; returns whether it ran
    /// shared.
    fn timed(split: &Split, alone_ms: u64, shared_ms: u64) -> bool {
        split.run(1, || {
            let shared = !ALONE.with(Cell::get);
            let ms = if shared { shared_ms } else { alone_ms };
            std::thread::sleep(Duration::from_millis(ms));
            shared
        })
    }

    #[test]
    fn a_split_keeps_to_the_faster_way_and_looks_at_the_other() {
        if threads() == 1 {
            return;
        }
        for (alone_ms, shared_ms, faster_shared) in [(6, 1, true), (1, 6, false)] {
            let split = Split::default();
            let ways: Vec<bool> = (0..40)
                .map(|_| timed(&split, alone_ms, shared_ms))
                .collect();
            // Warming up: shared, alone, shared, alone.
            assert_eq!(ways[..4], [true, false, true, false]);
            let other: Vec<usize> = (4..40).filter(|&i| ways[i] != faster_shared).collect();
            // A ratio of about 6: the other way once every 128 calls.
            assert!(other.is_empty(), "{alone_ms}/{shared_ms}: {other:?}");
        }
    }

    #[test]
    fn an_estimate_falls_at_once_and_rises_slowly() {
        assert_eq!(learn(f32::INFINITY, 3.0), 3.0);
        assert_eq!(learn(4.0, 1.0), 1.0);
        assert_eq!(learn(1.0, 2.0), 1.25);
        // A sample of 100 counts as 2 (twice the old).
        assert_eq!(learn(1.0, 100.0), 1.25);
        // The slower way every 32 × 2^⌊log₂ ratio⌋ calls, up to every 256th.
        let looks = |alone: f32, shared: f32| {
            (WARMING..WARMING + 1024)
                .filter(|&c| chooses_shared(c, alone, shared) != (shared < alone))
                .count()
        };
        assert_eq!(looks(1.0, 1.5), 32);
        assert_eq!(looks(2.5, 1.0), 16);
        assert_eq!(looks(1.0, 100.0), 4);
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

//! Taking a storage lock from an async worker without stalling the worker.
//!
//! The append path takes short `parking_lot` locks on the request's own
//! thread: the category's writer lock (held while the next step of the
//! file is allocated, which can take milliseconds while writeback is busy)
//! and a chunk's copy lock (held across a `pwrite`). When such a lock is
//! taken, the waiting thread is a tokio worker: parking it stalls every
//! other task queued on that worker — measured as write and read replies
//! delayed by several milliseconds at a tenth of the disk's rate (see
//! docs/architecture.md, "Where the latency goes"). [`lock`] first tries
//! the lock; only when it is held does it wait inside
//! `tokio::task::block_in_place`, which hands the worker's queue to another
//! thread for the duration. Never used for locks held only for
//! bookkeeping without I/O.

use parking_lot::{Mutex, MutexGuard};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Locks `m`; if it is held and this thread is a worker of a multi-thread
/// runtime, waits without holding up the worker's other tasks.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    if let Some(g) = m.try_lock() {
        return g;
    }
    let on_worker = Handle::try_current()
        .is_ok_and(|h| matches!(h.runtime_flavor(), RuntimeFlavor::MultiThread));
    if on_worker {
        // Outside a worker (the blocking pool) this just runs the closure.
        tokio::task::block_in_place(|| m.lock())
    } else {
        m.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lock_does_not_stall_other_tasks_of_the_waiting_worker() {
        let m = Arc::new(Mutex::new(0u32));
        // Another thread holds the lock until told to let go.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let _held = m.lock();
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(Duration::from_secs(30));
            })
        };
        locked_rx.recv().unwrap();
        // Two waiters, one per worker, so a plain lock would park both.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let m = Arc::clone(&m);
                tokio::spawn(async move {
                    *lock(&m) += 1;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The workers stay free for other tasks while the waiters wait.
        for _ in 0..4 {
            let t = tokio::spawn(async { 7 });
            let done = tokio::time::timeout(Duration::from_secs(5), t).await;
            assert!(matches!(done, Ok(Ok(7))), "a task was stalled: {done:?}");
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*m.lock(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_a_current_thread_runtime_it_is_a_plain_lock() {
        let m = Mutex::new(1u32);
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}

//! The threads that parse and score mail: one per core (at most four),
//! started on first use and kept for the life of the process.
//!
//! Parsing and FAQ scoring are CPU work, so they must not run on the
//! async workers. Tokio's blocking pool would do, but it starts a thread
//! whenever none is idle, and with glibc every thread that allocates gets
//! its own malloc arena that keeps its high-water mark: a backlog used to
//! end up with four parsing threads and four arenas. A fixed set of
//! threads keeps the memory of a backlog to one arena per core.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The job panicked (the thread survives and takes the next job).
    #[error("the job panicked")]
    Panicked,
    /// No thread could be started.
    #[error("no thread to run it on: {0}")]
    NoThread(String),
}

struct Pool {
    jobs: Mutex<Sender<Job>>,
}

static POOL: OnceLock<Pool> = OnceLock::new();
/// Serialises starting the pool, so that one start runs at a time.
static STARTING: Mutex<()> = Mutex::new(());

/// How many threads the pool has: the cores this process may use, 1–4.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
}

/// The pool, started on first use. A failed start (no thread could be
/// created) is not remembered: the next call tries again.
fn pool() -> Result<&'static Pool, String> {
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    let mut error = None;
    for i in 0..threads() {
        let rx = rx.clone();
        match std::thread::Builder::new()
            .name(format!("switchboard-cpu-{i}"))
            .spawn(move || work(&rx))
        {
            Ok(_) => started += 1,
            Err(e) => error = Some(e.to_string()),
        }
    }
    // With fewer threads than wanted the pool still works, only slower.
    if started == 0 {
        return Err(error.unwrap_or_else(|| "no thread was started".into()));
    }
    Ok(POOL.get_or_init(|| Pool {
        jobs: Mutex::new(tx),
    }))
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // A poisoned lock only means another worker panicked while
        // holding it, which `recv` cannot do; the receiver is intact.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return, // the process is exiting
        }
    }
}

/// Hands `f` to one of the threads at once (before the returned future
/// is awaited, so that several jobs run side by side) and returns its
/// result without blocking the async worker. A panic in `f` is caught and
/// returned as [`CpuError::Panicked`].
pub fn run<T, F>(f: F) -> impl std::future::Future<Output = Result<T, CpuError>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    let submitted = pool().and_then(|pool| {
        let sent = match pool.jobs.lock() {
            Ok(jobs) => jobs.send(job),
            Err(poisoned) => poisoned.into_inner().send(job),
        };
        sent.map_err(|_| "the threads have stopped".to_string())
    });
    async move {
        submitted.map_err(CpuError::NoThread)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) | Err(_) => Err(CpuError::Panicked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_named_threads_and_survives_a_panic() {
        let name = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("switchboard-cpu-"));
        let panicked = run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(CpuError::Panicked)));
        // A job starts when it is handed over, not when it is awaited.
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = run(move || tx.send(()).is_ok());
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok(),
            "the job did not start before it was awaited"
        );
        assert!(pending.await.unwrap());
        // Every thread still takes jobs after the panic.
        let mut all = Vec::new();
        for i in 0..(threads() * 3) as u32 {
            all.push(run(move || i * 2));
        }
        let got: Vec<u32> = futures::future::join_all(all)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            got,
            (0..(threads() * 3) as u32)
                .map(|i| i * 2)
                .collect::<Vec<_>>()
        );
    }
}

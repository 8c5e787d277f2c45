//! The two ways of loading a server, each measured with the server's CPU time and the
//! machine's steal over exactly the loaded window:
//! - saturation: every connection sends its next review as soon as the last is answered;
//! - open loop: a pacer thread schedules reviews at a fixed rate in advance and each latency
//!   counts from the scheduled time, so a server that stalls is charged for every review that
//!   waited behind the stall, as the API server's pods would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::{Mutex, mpsc};

use crate::client::{Conn, Target};
use crate::procfs::{self, Machine};

/// A server that keeps a review (or a handshake) longer than this has hung: the run fails
/// rather than waits.
const HUNG: Duration = Duration::from_secs(10);

/// Latencies in microseconds, from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Scenario {
    /// Closed loop on this many connections.
    Saturate(usize),
    /// Open loop at this many reviews per second.
    Rate(u32),
}

pub struct Measured {
    pub answered: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Open loop: scheduled but not answered by the end of the drain period.
    pub unanswered: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    pub steal_pct: f64,
    /// Open loop: from scheduled time to the answer's last byte.
    pub latency: Histogram<u64>,
    /// Open loop: how late the pacer itself released each review (the generator's own stalls).
    pub pacer_lag: Histogram<u64>,
    /// Open loop: (ms since the first scheduled review, latency ms) of every review slower
    /// than [`SLOW_MS`], to see whether slow answers come together (a stall) or alone.
    pub slow: Vec<(f64, f64)>,
}

pub const SLOW_MS: f64 = 5.0;

impl Measured {
    pub fn per_sec(&self) -> f64 {
        self.answered as f64 / self.secs
    }

    pub fn cpu_per_1000(&self) -> f64 {
        1000.0 * self.cpu_secs / self.answered.max(1) as f64
    }
}

/// What every connection task counts.
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Counts {
    fn record(&self, result: anyhow::Result<()>) {
        match result {
            Ok(()) => self.answered.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                self.first_failure
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| format!("{e:#}"));
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The server's CPU and the machine's steal over one window.
struct Window {
    pid: u32,
    cpu: f64,
    machine: Machine,
    at: Instant,
}

impl Window {
    fn open(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu: procfs::cpu_secs(pid)?,
            machine: Machine::now()?,
            at: Instant::now(),
        })
    }

    fn close(
        self,
        counts: Counts,
        latency: Histogram<u64>,
        lag: Histogram<u64>,
    ) -> anyhow::Result<Measured> {
        let secs = self.at.elapsed().as_secs_f64();
        Ok(Measured {
            answered: counts.answered.into_inner(),
            failed: counts.failed.into_inner(),
            first_failure: counts.first_failure.into_inner().expect("not poisoned"),
            unanswered: 0,
            secs,
            cpu_secs: procfs::cpu_secs(self.pid)? - self.cpu,
            steal_pct: Machine::now()?.steal_pct_since(&self.machine),
            latency,
            pacer_lag: lag,
            slow: Vec::new(),
        })
    }
}

async fn connect_all(target: &Target, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = tokio::time::timeout(HUNG, target.connect()).await;
        conns.push(conn.map_err(|_| anyhow::anyhow!("no TLS connection within {HUNG:?}"))??);
    }
    Ok(conns)
}

/// Closed loop on `conns` connections for `secs`.
pub async fn saturate(
    target: &Target,
    pid: u32,
    body: &Bytes,
    conns: usize,
    secs: f64,
) -> anyhow::Result<Measured> {
    let conns = connect_all(target, conns).await?;
    let counts = Arc::new(Counts::default());
    let window = Window::open(pid)?;
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (counts, body) = (counts.clone(), body.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < end {
                    let Ok(answer) = tokio::time::timeout_at(end + HUNG, conn.review(&body)).await
                    else {
                        counts.record(Err(anyhow::anyhow!("no answer within {HUNG:?}")));
                        break;
                    };
                    counts.record(answer);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let counts = Arc::into_inner(counts).expect("every task ended");
    window.close(counts, histogram(), histogram())
}

/// Open loop at `rate` reviews/s for `secs` over `conns` connections; reviews still unanswered
/// `drain` after the last one was scheduled are counted as such.
pub async fn open_loop(
    target: &Target,
    pid: u32,
    body: &Bytes,
    (rate, conns): (u32, usize),
    secs: f64,
    drain: Duration,
) -> anyhow::Result<Measured> {
    let conns = connect_all(target, conns).await?;
    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let total = (rate as f64 * secs).round() as u64;
    let first = Instant::now() + Duration::from_millis(10);
    let end = tokio::time::Instant::from_std(first + Duration::from_secs_f64(secs) + drain);
    let window = Window::open(pid)?;
    let pacer = std::thread::spawn(move || pace(tx, first, rate, total));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (counts, body, rx) = (counts.clone(), body.clone(), rx.clone());
            tokio::spawn(serve_schedule(conn, body, rx, counts, (first, end)))
        })
        .collect();
    let (mut latency, mut slow) = (histogram(), Vec::new());
    for t in tasks {
        let (l, s) = t.await?;
        latency.add(l)?;
        slow.extend(s);
    }
    slow.sort_by(|a: &(f64, f64), b| a.0.total_cmp(&b.0));
    let lag = pacer.join().expect("the pacer does not panic");
    let counts = Arc::into_inner(counts).expect("every task ended");
    let mut measured = window.close(counts, latency, lag)?;
    measured.slow = slow;
    measured.unanswered = total.saturating_sub(measured.answered + measured.failed);
    measured.secs = secs;
    Ok(measured)
}

/// Releases `total` scheduled times, `1/rate` apart from `first`, sleeping (with the OS's
/// sub-millisecond timers, not tokio's 1 ms wheel) until each is due.
fn pace(
    tx: mpsc::UnboundedSender<Instant>,
    first: Instant,
    rate: u32,
    total: u64,
) -> Histogram<u64> {
    let mut lag = histogram();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..total {
        let due = first + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let _ = lag.record(due.elapsed().as_micros().max(1) as u64);
        if tx.send(due).is_err() {
            break;
        }
    }
    lag
}

/// One connection: takes the next scheduled review, sends it, records its latency from the
/// scheduled time; stops at `end`.
async fn serve_schedule(
    mut conn: Conn,
    body: Bytes,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    counts: Arc<Counts>,
    (first, end): (Instant, tokio::time::Instant),
) -> (Histogram<u64>, Vec<(f64, f64)>) {
    let (mut latency, mut slow) = (histogram(), Vec::new());
    loop {
        let next = async { rx.lock().await.recv().await };
        let due = tokio::select! {
            due = next => match due { Some(d) => d, None => break },
            _ = tokio::time::sleep_until(end) => break,
        };
        let answered = tokio::time::timeout_at(end, conn.review(&body)).await;
        let Ok(result) = answered else { break };
        if result.is_ok() {
            let took = due.elapsed();
            let _ = latency.record(took.as_micros().max(1) as u64);
            let ms = took.as_secs_f64() * 1e3;
            if ms > SLOW_MS {
                slow.push(((due - first).as_secs_f64() * 1e3, ms));
            }
        }
        counts.record(result);
    }
    (latency, slow)
}

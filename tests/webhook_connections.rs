//! Thousands of idle connections against the real `mlflow-operator run` process, with the limits
//! it ships with (`Limits::default()`: 1,024 connections): idle TCP connections that never start
//! TLS, then connections idle after their TLS handshake, 4,000 in all, twice. Open connections
//! never exceed the limit (past it the longest idle are closed at once to make room), a
//! well-behaved client opening a fresh connection is answered throughout, and the process's
//! memory stays bounded and does not accumulate: its RSS is read from /proc before, with each
//! round's connections held, and after.

use mlflow_operator_test_support as common;

use std::time::{Duration, Instant};

use common::eventually;
use common::operator::{OperatorProcess, answered};
use futures::future::join_all;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

const IDLE_TCP: usize = 2_000;
const IDLE_TLS: usize = 2_000;
/// `Limits::default().max_connections`, what the process runs with.
const LIMIT: usize = 1_024;
/// The chart's default `timeoutSeconds`: the API server gives up on the webhook after this.
const BUDGET: Duration = Duration::from_secs(5);
/// A well-behaved client is tried after every this many idle connections.
const PROBE_EVERY: usize = 250;
/// Growth of RSS allowed with the limit's worth of connections held open after their TLS
/// handshake: rustls keeps each connection's state and buffers (a few KiB), hyper its read
/// buffer (up to 8 KiB once a connection has sent bytes; idle ones sent none), tokio a task and
/// a socket registration. 32 KiB per connection, 32 MiB in all, leaves the chart's 128 Mi
/// memory limit far away from the 16 MiB the process uses at rest.
const GROWTH_BOUND_KIB: u64 = 32 * LIMIT as u64;

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Whether the server has closed `conn` (end of stream or reset), waiting at most `within`.
async fn closed<S: AsyncRead + Unpin>(conn: &mut S, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, conn.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// What the idle connections came to: how many the server still holds, how many it closed.
struct Held {
    open: usize,
    closed: usize,
}

async fn census<S: AsyncRead + Unpin>(conns: &mut [S]) -> Held {
    let outcomes = join_all(
        conns
            .iter_mut()
            .map(|c| closed(c, Duration::from_millis(500))),
    )
    .await;
    let closed = outcomes.iter().filter(|c| **c).count();
    Held {
        open: outcomes.len() - closed,
        closed,
    }
}

/// Idle connections the server closed for new ones, and connections it closed at once because
/// every open one was busy, as its metrics count them.
async fn closes_counted(op: &OperatorProcess) -> (f64, f64) {
    let evicted = op.metric("mlflow_operator_webhook_connections_evicted_total");
    let full =
        op.metric(r#"mlflow_operator_admissions_total{outcome="error-too-many-connections"}"#);
    (
        evicted.await.expect("evictions counted"),
        full.await.unwrap_or(0.0),
    )
}

/// Every probe client was answered; prints how fast.
fn assert_all_answered(probes: &[Result<Duration, String>]) {
    let mut latencies: Vec<Duration> = probes.iter().filter_map(|p| p.clone().ok()).collect();
    latencies.sort();
    let unanswered: Vec<&String> = probes.iter().filter_map(|p| p.as_ref().err()).collect();
    println!(
        "{} of {} clients answered meanwhile: median {:?}, slowest {:?}",
        latencies.len(),
        probes.len(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    assert!(
        unanswered.is_empty(),
        "clients not answered: {unanswered:#?}"
    );
}

/// One round: the idle connections opened with a client probed every [`PROBE_EVERY`], what
/// the server kept of them, and the RSS of `op` while they were held (KiB). Asserts the limit
/// held, every client was answered and every close was counted; the connections are closed
/// before it returns.
async fn flood(
    round: usize,
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    op: &OperatorProcess,
) -> u64 {
    let counted_before = closes_counted(op).await;
    // Every probe's time to its answer, or why it was not answered.
    let mut probes: Vec<Result<Duration, String>> = Vec::new();
    let started = Instant::now();
    let mut idle_tcp = Vec::with_capacity(IDLE_TCP);
    for i in 1..=IDLE_TCP {
        idle_tcp.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        if i % PROBE_EVERY == 0 {
            let probe = answered(port, tls, BUDGET).await;
            probes.push(probe.map_err(|e| format!("after {i} idle TCP: {e}")));
        }
    }
    let mut idle_tls = Vec::with_capacity(IDLE_TLS);
    for i in 1..=IDLE_TLS {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        // Past the limit the server may close a connection before or during its handshake.
        if let Ok(s) = tls.connect(name, tcp).await {
            idle_tls.push(s);
        }
        if i % PROBE_EVERY == 0 {
            let probe = answered(port, tls, BUDGET).await;
            probes.push(probe.map_err(|e| format!("after {i} idle TLS: {e}")));
        }
    }
    let opened = started.elapsed();
    let during = rss_kib(op.pid());
    let tcp = census(&mut idle_tcp).await;
    let tls_held = census(&mut idle_tls).await;
    let refused_handshakes = IDLE_TLS - idle_tls.len();
    let held = tcp.open + tls_held.open;
    println!(
        "round {round}: {} idle connections opened in {:.1} s: {} still open ({} TCP, {} TLS), {} TCP and {} TLS closed, {refused_handshakes} TLS handshakes cut",
        IDLE_TCP + IDLE_TLS,
        opened.as_secs_f64(),
        held,
        tcp.open,
        tls_held.open,
        tcp.closed,
        tls_held.closed,
    );
    assert!(held <= LIMIT, "{held} connections held, limit {LIMIT}");
    assert!(
        tcp.closed + tls_held.closed + refused_handshakes >= IDLE_TCP + IDLE_TLS - LIMIT,
        "the connections past the limit are closed"
    );
    let counted = closes_counted(op).await;
    let (evicted, full) = (counted.0 - counted_before.0, counted.1 - counted_before.1);
    println!("closes counted: {evicted} idle connections evicted, {full} closed at once");
    assert!(
        evicted + full >= (IDLE_TCP + IDLE_TLS - LIMIT) as f64,
        "every connection closed past the limit is counted: {evicted} evicted + {full} closed at once"
    );
    assert_all_answered(&probes);

    drop(idle_tcp);
    drop(idle_tls);
    eventually(
        "a client answered once the idle connections are gone",
        Duration::from_secs(30),
        || async { answered(port, tls, BUDGET).await.ok() },
    )
    .await;
    during
}

#[tokio::test]
async fn thousands_of_idle_connections_are_bounded_and_clients_are_still_answered() {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let want = (2 * (IDLE_TCP + IDLE_TLS) + 1_000) as u64;
    rlimit::increase_nofile_limit(want).unwrap();
    let (now_soft, _) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        now_soft >= want,
        "open-file limit {soft}/{hard}: this test needs {want} (`ulimit -n {want}`)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (op, ca_pem, port) = OperatorProcess::webhook_only(dir.path()).await;
    let tls = common::fake_tls::connector(&ca_pem);
    // Warm: the allocator's arenas and the TLS session state of a few real exchanges.
    for _ in 0..20 {
        answered(port, &tls, BUDGET)
            .await
            .expect("answered at rest");
    }
    let before = rss_kib(op.pid());
    let rounds = [
        flood(1, port, &tls, &op).await,
        flood(2, port, &tls, &op).await,
    ];
    let after = rss_kib(op.pid());
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "RSS: {:.1} MiB before, {:.1} MiB with round 1's connections held (+{:.1} MiB), {:.1} MiB with round 2's (+{:.1} MiB), {:.1} MiB after",
        mib(before),
        mib(rounds[0]),
        mib(rounds[0].saturating_sub(before)),
        mib(rounds[1]),
        mib(rounds[1].saturating_sub(before)),
        mib(after)
    );
    // Bounded, and a second flood costs no more than the first: nothing accumulates.
    for (i, during) in rounds.iter().enumerate() {
        let growth = during.saturating_sub(before);
        assert!(
            growth <= GROWTH_BOUND_KIB,
            "round {}: RSS grew by {growth} KiB with the limit's worth of idle connections held (bound {GROWTH_BOUND_KIB} KiB)",
            i + 1
        );
    }
}

//! The run: set up the cluster side once, then rounds. Each round starts every server afresh
//! (timing its start), then for each payload and scenario loads the servers one after another,
//! in an order that rotates between rounds, so that a noisy moment hits all of them alike.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mlflow_operator::certs;

use crate::payloads::{self, Payload};
use crate::report::{RATES, Results, SATURATE, Start};
use crate::runs::{self, Measured, Scenario};
use crate::servers::{Kind, Launch, Server};
use crate::{Config, cluster, procfs};

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let namespace = format!("loadgen-{}", std::process::id());
    cluster::prepare(&client, &namespace).await?;
    let logs = tempfile::Builder::new().prefix("loadgen-").tempdir()?;
    let outcome = measure(config, &client, &namespace, logs.path().into()).await;
    cluster::remove(&client, &namespace).await;
    let results = match outcome {
        Ok(r) => r,
        Err(e) => {
            let kept = logs.keep();
            bail!("{e:#}\n(the servers' logs are in {})", kept.display());
        }
    };
    println!("{}", results.markdown());
    println!(
        "\nload average at the end: {}; {} cores",
        procfs::load_average(),
        cores()
    );
    check(&results)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn measure(
    config: &Config,
    client: &kube::Client,
    namespace: &str,
    logs: PathBuf,
) -> anyhow::Result<Results> {
    let mut launch = launch(config, client, namespace, logs).await?;
    let payloads = payloads::all(namespace);
    learn_ours_answers(&mut launch, &payloads).await?;
    let mut results = Results {
        payloads: payloads.iter().map(|p| p.name).collect(),
        servers: vec![
            Kind::Ours,
            Kind::Floor,
            Kind::ReadingFloor,
            Kind::AnsweringFloor,
        ],
        ..Default::default()
    };
    match &config.azwi {
        Some(_) => results.servers.push(Kind::Azwi),
        None => eprintln!(
            "azwi skipped: no --azwi PATH (or MLFLOW_OPERATOR_AZWI_WEBHOOK) to its webhook binary"
        ),
    }
    println!(
        "{} round(s), {} cores, load average at the start: {}; payloads: {}",
        config.rounds,
        cores(),
        procfs::load_average(),
        payloads
            .iter()
            .map(|p| format!("{} ({} bytes)", p.name, p.body.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for round in 0..config.rounds {
        one_round(config, &launch, &payloads, round, &mut results).await?;
    }
    Ok(results)
}

async fn launch(
    config: &Config,
    client: &kube::Client,
    namespace: &str,
    logs: PathBuf,
) -> anyhow::Result<Launch> {
    let kubeconfig: PathBuf = std::env::var_os("KUBECONFIG")
        .context("KUBECONFIG names no file: the servers under test need one")?
        .into();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let pems = certs::generate(&["127.0.0.1".into()], 30, 10, now.as_secs() as i64)?;
    let cert_dir = logs.join("certs");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::write(cert_dir.join("tls.crt"), &pems.cert)?;
    std::fs::write(cert_dir.join("tls.key"), &pems.key)?;
    let mut launch = Launch {
        kubeconfig,
        namespace: namespace.to_string(),
        our_secret: "loadgen-webhook-cert".into(),
        our_ca: Vec::new(),
        cert_dir,
        ca: pems.ca_cert.into_bytes(),
        ours: (config.ours.clone()).unwrap_or_else(|| env!("CARGO_BIN_EXE_mlflow-operator").into()),
        azwi: config.azwi.clone(),
        logs,
        answers: Vec::new(),
    };
    launch.create_our_certificate(client).await?;
    Ok(launch)
}

/// Gives the answering floor ours' patch for each payload, by its length, from one start of
/// ours; then checks that it answers each payload with that patch.
async fn learn_ours_answers(launch: &mut Launch, payloads: &[Payload]) -> anyhow::Result<()> {
    let ours = launch.start(Kind::Ours, &payloads[0].body).await?;
    let mut conn = ours.target.connect().await?;
    for p in payloads {
        let len = p.body.len();
        if launch.answers.iter().any(|(l, _)| *l == len) {
            bail!("two payloads of {len} bytes: the answering floor tells them by length");
        }
        launch.answers.push((len, conn.patch(&p.body).await?));
    }
    drop(ours);
    let floor = launch
        .start(Kind::AnsweringFloor, &payloads[0].body)
        .await?;
    let mut conn = floor.target.connect().await?;
    for (p, (_, ours)) in payloads.iter().zip(&launch.answers) {
        if conn.patch(&p.body).await? != *ours {
            bail!(
                "the answering floor's patch for the {} differs from ours'",
                p.name
            );
        }
    }
    Ok(())
}

fn scenarios() -> impl Iterator<Item = Scenario> {
    SATURATE
        .into_iter()
        .map(Scenario::Saturate)
        .chain(RATES.into_iter().map(Scenario::Rate))
}

async fn one_round(
    config: &Config,
    launch: &Launch,
    payloads: &[Payload],
    round: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut order = results.servers.clone();
    let n = order.len();
    order.rotate_left(round % n);
    let mut running: Vec<(Server, f64)> = Vec::new();
    for kind in order {
        let server = launch.start(kind, &payloads[0].body).await?;
        let rest = procfs::rss_mib(server.pid())?;
        eprintln!(
            "round {} | {} | ready after {:.1} ms | RSS at rest {rest:.1} MiB",
            round + 1,
            kind.name(),
            server.ready_after.as_secs_f64() * 1e3
        );
        running.push((server, rest));
    }
    for (p, payload) in payloads.iter().enumerate() {
        for scenario in scenarios() {
            for (server, _) in &running {
                let m = load(config, server, payload, scenario).await?;
                eprintln!(
                    "round {} | {} | {} | {}",
                    round + 1,
                    server.kind.name(),
                    payload.name,
                    describe(scenario, &m)
                );
                if config.show_stalls && !m.slow.is_empty() {
                    eprintln!("  slow reviews: {}", bursts(&m.slow));
                }
                results
                    .runs
                    .entry((server.kind, p, scenario))
                    .or_default()
                    .push(m);
            }
        }
    }
    for (server, rss_rest_mib) in running {
        let start = Start {
            ready_ms: server.ready_after.as_secs_f64() * 1e3,
            rss_rest_mib,
            rss_after_mib: procfs::rss_mib(server.pid())?,
        };
        results.starts.entry(server.kind).or_default().push(start);
    }
    Ok(())
}

async fn load(
    config: &Config,
    server: &Server,
    payload: &Payload,
    scenario: Scenario,
) -> anyhow::Result<Measured> {
    let (target, pid, body) = (&server.target, server.pid(), &payload.body);
    match scenario {
        Scenario::Saturate(conns) => {
            runs::saturate(target, pid, body, conns, config.saturate_secs).await
        }
        Scenario::Rate(rate) => {
            let shape = (rate, config.open_connections);
            runs::open_loop(target, pid, body, shape, config.rate_secs, config.drain()).await
        }
    }
}

fn describe(scenario: Scenario, m: &Measured) -> String {
    let common = format!(
        "{:.0}/s answered | CPU {:.3} s/1000 | steal {:.1}% | failed {}",
        m.per_sec(),
        m.cpu_per_1000(),
        m.steal_pct,
        m.failed
    );
    match scenario {
        Scenario::Saturate(c) => format!("{c} connections saturated | {common}"),
        Scenario::Rate(r) => {
            let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1000.0;
            format!(
                "{r}/s open loop | p50 {:.3} p99 {:.3} p99.9 {:.3} ms | unanswered {} | pacer lag p99 {:.3} ms | {common}",
                ms(0.5),
                ms(0.99),
                ms(0.999),
                m.unanswered,
                m.pacer_lag.value_at_quantile(0.99) as f64 / 1000.0
            )
        }
    }
}

/// Slow reviews less than 20 ms apart as one burst: `at <ms>: <count> up to <ms>`.
fn bursts(slow: &[(f64, f64)]) -> String {
    let mut out: Vec<(f64, f64, usize, f64)> = Vec::new();
    for &(at, ms) in slow {
        match out.last_mut() {
            Some((_, last, n, max)) if at - *last < 20.0 => {
                (*last, *n, *max) = (at, *n + 1, max.max(ms));
            }
            _ => out.push((at, at, 1, ms)),
        }
    }
    out.iter()
        .map(|(at, _, n, max)| format!("at {at:.0} ms: {n} up to {max:.1} ms"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every answer carried a patch, and every run produced its numbers.
fn check(results: &Results) -> anyhow::Result<()> {
    for ((kind, p, scenario), runs) in &results.runs {
        for m in runs {
            let what = format!("{} {} {scenario:?}", kind.name(), results.payloads[*p]);
            if let Some(failure) = &m.first_failure {
                bail!("{what}: {} reviews failed; the first: {failure}", m.failed);
            }
            if m.answered == 0 {
                bail!("{what}: no review answered");
            }
        }
    }
    Ok(())
}

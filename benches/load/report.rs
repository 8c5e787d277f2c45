//! The Markdown tables: medians over the rounds with their spread (min-max), every figure of
//! ours beside the floor's and azwi's, as ratios, and the goals beside the measurements.

use std::collections::BTreeMap;

use crate::runs::{Measured, Scenario};
use crate::servers::Kind;
use crate::spread::{Spread, spread};

pub const SATURATE: [usize; 3] = [1, 8, 64];
pub const RATES: [u32; 3] = [500, 2_000, 5_000];
/// An open-loop run that left more than this share unanswered was beyond the server.
const SATURATED_SHARE: f64 = 0.001;

/// One server's start in one round.
pub struct Start {
    pub ready_ms: f64,
    pub rss_rest_mib: f64,
    pub rss_after_mib: f64,
}

#[derive(Default)]
pub struct Results {
    pub payloads: Vec<&'static str>,
    pub servers: Vec<Kind>,
    pub runs: BTreeMap<(Kind, usize, Scenario), Vec<Measured>>,
    pub starts: BTreeMap<Kind, Vec<Start>>,
}

pub(crate) fn number(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

fn cell(s: Option<Spread>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => number(s.median),
        Some(s) => format!("{} ({}-{})", number(s.median), number(s.min), number(s.max)),
    }
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    Some(a?.median / b?.median).filter(|r| r.is_finite())
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "–".into())
}

fn saturated(m: &Measured) -> bool {
    let scheduled = (m.answered + m.failed + m.unanswered).max(1);
    m.unanswered as f64 / scheduled as f64 > SATURATED_SHARE
}

impl Results {
    pub(crate) fn figure(
        &self,
        kind: Kind,
        payload: usize,
        s: Scenario,
        f: impl Fn(&Measured) -> f64,
    ) -> Option<Spread> {
        spread(self.runs.get(&(kind, payload, s))?.iter().map(f).collect())
    }

    pub(crate) fn start_figure(&self, kind: Kind, f: impl Fn(&Start) -> f64) -> Option<Spread> {
        spread(self.starts.get(&kind)?.iter().map(f).collect())
    }

    /// A row: the figure for each server, then ours/floor, each other floor's/floor and
    /// ours/azwi.
    fn row(&self, label: &str, figure: impl Fn(Kind) -> Option<Spread>) -> String {
        let kinds = [
            Kind::Ours,
            Kind::Floor,
            Kind::ReadingFloor,
            Kind::AnsweringFloor,
            Kind::Azwi,
        ];
        let [ours, floor, reading, answering, azwi] = kinds.map(&figure);
        let cells = [ours, floor, reading, answering, azwi]
            .map(cell)
            .join(" | ");
        let ratios = [
            (ours, floor),
            (reading, floor),
            (answering, floor),
            (ours, azwi),
        ]
        .map(|(a, b)| ratio_cell(ratio(a, b)))
        .join(" | ");
        format!("| {label} | {cells} | {ratios} |")
    }

    fn header(title: &str) -> String {
        format!(
            "\n**{title}**\n\n| | ours | floor | reading floor | answering floor | azwi | ours/floor | reading floor/floor | answering floor/floor | ours/azwi |\n|---|---|---|---|---|---|---|---|---|---|"
        )
    }

    pub fn markdown(&self) -> String {
        let mut out = vec![Self::header("Throughput at saturation, reviews/s")];
        for (p, name) in self.payloads.iter().enumerate() {
            for c in SATURATE {
                let label = format!("{name}, {c} connection{}", if c == 1 { "" } else { "s" });
                let s = Scenario::Saturate(c);
                out.push(self.row(&label, |k| self.figure(k, p, s, Measured::per_sec)));
            }
        }
        out.push(Self::header(
            "Open loop latency, ms from the scheduled send time (p50 / p99 / p99.9)",
        ));
        for (p, name) in self.payloads.iter().enumerate() {
            for r in RATES {
                out.extend(self.latency_rows(p, name, r));
            }
        }
        out.push(Self::header(
            "CPU seconds per 1,000 admissions (server process)",
        ));
        for (p, name) in self.payloads.iter().enumerate() {
            for (label, s) in [
                ("8 connections, saturated", Scenario::Saturate(8)),
                ("2,000/s open loop", Scenario::Rate(2_000)),
            ] {
                let label = format!("{name}, {label}");
                out.push(self.row(&label, |k| self.figure(k, p, s, Measured::cpu_per_1000)));
            }
        }
        out.push(Self::header("Memory and start"));
        out.push(self.row("RSS at rest (after start), MiB", |k| {
            self.start_figure(k, |s| s.rss_rest_mib)
        }));
        out.push(self.row("RSS after the round's load, MiB", |k| {
            self.start_figure(k, |s| s.rss_after_mib)
        }));
        out.push(self.row("process start -> first patched answer, ms", |k| {
            self.start_figure(k, |s| s.ready_ms)
        }));
        out.push(self.goals());
        out.push(self.noise());
        out.join("\n")
    }

    fn latency_rows(&self, p: usize, name: &str, rate: u32) -> Vec<String> {
        let s = Scenario::Rate(rate);
        let mut rows = Vec::new();
        for (q, pct) in [(50.0, "p50"), (99.0, "p99"), (99.9, "p99.9")] {
            let label = format!("{name}, {rate}/s, {pct}");
            rows.push(self.row(&label, |k| {
                self.figure(k, p, s, |m| {
                    m.latency.value_at_quantile(q / 100.0) as f64 / 1000.0
                })
            }));
        }
        let beyond: Vec<String> = self
            .servers
            .iter()
            .filter_map(|&k| {
                let runs = self.runs.get(&(k, p, s))?;
                let n = runs.iter().filter(|m| saturated(m)).count();
                let served = spread(runs.iter().map(Measured::per_sec).collect())?;
                (n > 0).then(|| {
                    format!(
                        "{} in {n}/{} rounds (served {} /s)",
                        k.name(),
                        runs.len(),
                        number(served.median)
                    )
                })
            })
            .collect();
        if !beyond.is_empty() {
            rows.push(format!("| {name}, {rate}/s: beyond the server (latencies of the answered only) | {} | | | | | | |", beyond.join("; ")));
        }
        rows
    }

    /// Steal during the runs, and how late the generator's own pacer was.
    fn noise(&self) -> String {
        let mut lines = vec!["\n**Noise**\n".to_string()];
        for &k in &self.servers {
            let steal: Vec<f64> = self
                .runs
                .iter()
                .filter(|((kind, _, _), _)| *kind == k)
                .flat_map(|(_, ms)| ms.iter().map(|m| m.steal_pct))
                .collect();
            if let Some(s) = spread(steal) {
                lines.push(format!(
                    "- steal during {}'s runs: median {:.1}%, max {:.1}%",
                    k.name(),
                    s.median,
                    s.max
                ));
            }
        }
        for r in RATES {
            let lag: Vec<f64> = self
                .runs
                .iter()
                .filter(|((_, _, s), _)| *s == Scenario::Rate(r))
                .flat_map(|(_, ms)| {
                    ms.iter()
                        .map(|m| m.pacer_lag.value_at_quantile(0.99) as f64 / 1000.0)
                })
                .collect();
            if let Some(s) = spread(lag) {
                lines.push(format!(
                    "- generator's own send lag at {r}/s, p99: median {} ms, max {} ms",
                    number(s.median),
                    number(s.max)
                ));
            }
        }
        lines.join("\n")
    }
}

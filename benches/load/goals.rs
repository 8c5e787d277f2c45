//! The goals of the performance issue that the load generator measures, each beside the
//! medians it is judged on.

use crate::report::{Results, Start, number};
use crate::runs::{Measured, Scenario};
use crate::servers::Kind;

fn p99_ms(m: &Measured) -> f64 {
    m.latency.value_at_quantile(0.99) as f64 / 1000.0
}

/// "–" when a figure is missing (azwi skipped), else whether every figure meets the goal.
fn verdict(values: &[Option<f64>], ok: fn(f64) -> bool) -> &'static str {
    if values.iter().any(Option::is_none) {
        "–"
    } else if values.iter().flatten().all(|&v| ok(v)) {
        "yes"
    } else {
        "no"
    }
}

impl Results {
    pub(crate) fn goals(&self) -> String {
        let rows = [
            self.ratio_goal(
                "CPU per admission at most 1.5x the floor (8 connections saturated)",
                (Kind::Ours, Kind::Floor, Scenario::Saturate(8)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.ratio_goal(
                "(bound) the floor that reads the request: CPU per admission at most 1.5x the floor (8 connections saturated)",
                (Kind::ReadingFloor, Kind::Floor, Scenario::Saturate(8)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.ratio_goal(
                "(bound) the floor that reads the request and sends ours' patch: CPU per admission at most 1.5x the floor (8 connections saturated)",
                (Kind::AnsweringFloor, Kind::Floor, Scenario::Saturate(8)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.ratio_goal(
                "CPU per admission at most 1.5x the floor (2,000/s)",
                (Kind::Ours, Kind::Floor, Scenario::Rate(2_000)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.ratio_goal(
                "(bound) the floor that reads the request: CPU per admission at most 1.5x the floor (2,000/s)",
                (Kind::ReadingFloor, Kind::Floor, Scenario::Rate(2_000)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.ratio_goal(
                "(bound) the floor that reads the request and sends ours' patch: CPU per admission at most 1.5x the floor (2,000/s)",
                (Kind::AnsweringFloor, Kind::Floor, Scenario::Rate(2_000)),
                Measured::cpu_per_1000,
                |r| r <= 1.5,
            ),
            self.payload_goal(
                "p99 at most 2 ms at 2,000 admissions/s",
                |p| self.median(Kind::Ours, p, Scenario::Rate(2_000), p99_ms),
                |v| v <= 2.0,
            ),
            self.ratio_goal(
                "at least 3x azwi's saturated throughput (64 connections)",
                (Kind::Ours, Kind::Azwi, Scenario::Saturate(64)),
                Measured::per_sec,
                |r| r >= 3.0,
            ),
            self.ratio_goal(
                "at most 1/3 of azwi's p99 (500/s, where both keep up)",
                (Kind::Ours, Kind::Azwi, Scenario::Rate(500)),
                p99_ms,
                |r| r <= 1.0 / 3.0,
            ),
            self.start_goal(
                "RSS at most 20 MiB (at rest)",
                |s| s.rss_rest_mib,
                "MiB",
                20.0,
            ),
            self.start_goal(
                "ready to admit within 0.5 s of start",
                |s| s.ready_ms,
                "ms",
                500.0,
            ),
        ];
        format!(
            "\n**Goals**\n\n| goal | measured (medians) | met |\n|---|---|---|\n{}",
            rows.join("\n")
        )
    }

    fn median(&self, k: Kind, p: usize, s: Scenario, f: fn(&Measured) -> f64) -> Option<f64> {
        self.figure(k, p, s, f).map(|s| s.median)
    }

    /// A figure of `a` over the same figure of `b`, per payload.
    fn ratio_goal(
        &self,
        name: &str,
        (a, b, s): (Kind, Kind, Scenario),
        f: fn(&Measured) -> f64,
        ok: fn(f64) -> bool,
    ) -> String {
        let ratio = |p| Some(self.median(a, p, s, f)? / self.median(b, p, s, f)?);
        self.payload_goal(name, ratio, ok)
    }

    fn payload_goal(
        &self,
        name: &str,
        value: impl Fn(usize) -> Option<f64>,
        ok: fn(f64) -> bool,
    ) -> String {
        let values: Vec<Option<f64>> = (0..self.payloads.len()).map(value).collect();
        let measured = self
            .payloads
            .iter()
            .zip(&values)
            .map(|(n, v)| format!("{n} {}", v.map(number).unwrap_or_else(|| "–".into())))
            .collect::<Vec<_>>()
            .join(", ");
        format!("| {name} | {measured} | {} |", verdict(&values, ok))
    }

    /// A figure of ours' starts, at most `max`.
    fn start_goal(&self, name: &str, f: fn(&Start) -> f64, unit: &str, max: f64) -> String {
        let v = self.start_figure(Kind::Ours, f).map(|s| s.median);
        let measured = v.map_or_else(|| "–".into(), |v| format!("{} {unit}", number(v)));
        let met = match v {
            None => "–",
            Some(v) if v <= max => "yes",
            Some(_) => "no",
        };
        format!("| {name} | {measured} | {met} |")
    }
}

//! What the rounds saw, checked and printed as Markdown: per round, per setup, and the goals of
//! ours against the floor.

use crate::histogram::Histogram;
use crate::machine::Window;
use crate::setups::{Scrape, Setup};
use crate::{Plan, Round};

/// The API server's admission-duration histogram of each webhook over its own rounds.
#[derive(Default)]
pub struct Observed {
    floor: Histogram,
    ours: Histogram,
}

impl Observed {
    /// Adds what `setup`'s webhook was seen doing between `start` and `now`.
    pub fn add(&mut self, setup: Setup, now: &Scrape, start: &Scrape) {
        let (Some(now), Some(start)) = (now.of(setup), start.of(setup)) else {
            return;
        };
        let delta = now.since(start);
        match setup {
            Setup::Floor => self.floor = self.floor.plus(&delta),
            Setup::Ours => self.ours = self.ours.plus(&delta),
            Setup::Bare => {}
        }
    }

    fn of(&self, setup: Setup) -> &Histogram {
        match setup {
            Setup::Floor => &self.floor,
            _ => &self.ours,
        }
    }
}

/// Every pod created through a webhook injected and none without; every admission counted by
/// the API server for the webhook that made it.
pub fn check(rounds: &[Round], seen: &Observed) {
    for r in rounds {
        let through_webhook = r.setup.webhook().is_some();
        assert_eq!(
            r.injected,
            if through_webhook { r.created } else { 0 },
            "{}: with a webhook every pod is injected, without one none",
            r.setup.name()
        );
    }
    for setup in [Setup::Floor, Setup::Ours] {
        let created: usize = of(rounds, setup).map(|r| r.created).sum();
        assert!(
            seen.of(setup).count() >= created as f64,
            "the API server counted every admission of {}",
            setup.name()
        );
    }
}

fn of(rounds: &[Round], setup: Setup) -> impl Iterator<Item = &Round> {
    rounds.iter().filter(move |r| r.setup == setup)
}

/// Pods/s of `setup`: the mean over its rounds, and the spread. The mean, not the median:
/// etcd fills round after round and the rate falls with it, and the rotation puts each setup
/// once in each place of a round, so only the mean weighs that alike for all three.
fn rate(rounds: &[Round], setup: Setup) -> (f64, String) {
    let v: Vec<f64> = of(rounds, setup).map(Round::per_second).collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
    (
        v.iter().sum::<f64>() / v.len() as f64,
        format!("{lo:.1}-{hi:.1}"),
    )
}

/// Client-side create latency over every round of `setup`, in ms at quantile `q`.
fn create_ms(rounds: &[Round], setup: Setup, q: f64) -> f64 {
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for r in of(rounds, setup) {
        all.add(&r.latency).unwrap();
    }
    all.value_at_quantile(q) as f64 / 1e3
}

pub fn print(plan: &Plan, rounds: &[Round], seen: &Observed, machine: &Window) {
    println!(
        "\n{} rounds, {} s per setup each, {} creators; {machine}\n",
        plan.rounds,
        plan.each.as_secs(),
        plan.creators
    );
    println!(
        "| round | setup | pods created | pods/s | injected | failed | create p50 / p99 |\n|---|---|---|---|---|---|---|"
    );
    for (i, r) in rounds.iter().enumerate() {
        let error = r.first_error.as_deref().map(|e| format!(" ({e})"));
        println!(
            "| {} | {} | {} | {:.1} | {} | {}{} | {:.1} / {:.1} ms |",
            i / 3,
            r.setup.name(),
            r.created,
            r.per_second(),
            r.injected,
            r.failed,
            error.unwrap_or_default(),
            r.latency.value_at_quantile(0.5) as f64 / 1e3,
            r.latency.value_at_quantile(0.99) as f64 / 1e3,
        );
    }
    summary(rounds, seen);
}

fn summary(rounds: &[Round], seen: &Observed) {
    let webhook_ms = |s: Setup, q: f64| seen.of(s).quantile(q).map_or(f64::NAN, |v| v * 1e3);
    println!(
        "\n| setup | pods/s, mean (spread) | create p50 / p99 | API server's admission duration p50 / p99 (admissions) |\n|---|---|---|---|"
    );
    for setup in [Setup::Bare, Setup::Floor, Setup::Ours] {
        let (median, spread) = rate(rounds, setup);
        let admission = match setup.webhook() {
            None => "-".to_string(),
            Some(_) => format!(
                "{:.1} / {:.1} ms ({})",
                webhook_ms(setup, 0.5),
                webhook_ms(setup, 0.99),
                seen.of(setup).count()
            ),
        };
        println!(
            "| {} | {median:.1} ({spread}) | {:.1} / {:.1} ms | {admission} |",
            setup.name(),
            create_ms(rounds, setup, 0.5),
            create_ms(rounds, setup, 0.99),
        );
    }
    let pods = rate(rounds, Setup::Ours).0 / rate(rounds, Setup::Floor).0;
    let p99 = webhook_ms(Setup::Ours, 0.99) / webhook_ms(Setup::Floor, 0.99);
    let create_p99 = create_ms(rounds, Setup::Ours, 0.99) / create_ms(rounds, Setup::Floor, 0.99);
    println!(
        "\n| goal | measured | met |\n|---|---|---|\n| ours' pods/s at least 0.95x the floor's | {pods:.2}x | {} |\n| ours' p99 (API server's histogram) at most 1.2x the floor's | {p99:.2}x (client's create p99: {create_p99:.2}x) | {} |",
        yes(pods >= 0.95),
        yes(p99 <= 1.2)
    );
    let bare = rate(rounds, Setup::Bare).0;
    println!(
        "\npods/s against no webhook: floor {:.2}x, ours {:.2}x",
        rate(rounds, Setup::Floor).0 / bare,
        rate(rounds, Setup::Ours).0 / bare
    );
}

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "no" }
}

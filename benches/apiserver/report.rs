//! What the loads saw, checked and printed as Markdown: each load, each setup over the run, and
//! the goals of ours against the floor, judged round by round.

use crate::histogram::Histogram;
use crate::machine::Window;
use crate::setups::Setup;
use crate::spread::spread;
use crate::{Plan, Round};

/// Every pod created through a webhook injected and none without; every admission counted by
/// the API server for the webhook that made it.
pub fn check(rounds: &[Round]) {
    for r in rounds {
        let through_webhook = r.setup.webhook().is_some();
        assert_eq!(
            r.injected,
            if through_webhook { r.created } else { 0 },
            "{}: with a webhook every pod is injected, without one none",
            r.setup.name()
        );
        if through_webhook {
            let counted = r.webhook.as_ref().map_or(0.0, Histogram::count);
            assert!(
                counted >= r.created as f64,
                "round {}: the API server counted every admission of {}",
                r.round,
                r.setup.name()
            );
        }
    }
}

fn of(rounds: &[Round], setup: Setup) -> impl Iterator<Item = &Round> {
    rounds.iter().filter(move |r| r.setup == setup)
}

/// Pods/s of `setup` over its loads.
fn rates(rounds: &[Round], setup: Setup) -> Vec<f64> {
    of(rounds, setup).map(Round::per_second).collect()
}

/// Client-side create latency over every load of `setup`, in ms at quantile `q`.
fn create_ms(rounds: &[Round], setup: Setup, q: f64) -> f64 {
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for r in of(rounds, setup) {
        all.add(&r.latency).unwrap();
    }
    all.value_at_quantile(q) as f64 / 1e3
}

/// The API server's admission-duration histogram of `setup`'s webhook over all its loads.
fn pooled(rounds: &[Round], setup: Setup) -> Histogram {
    of(rounds, setup)
        .filter_map(|r| r.webhook.as_ref())
        .fold(Histogram::default(), |sum, h| sum.plus(h))
}

fn ms(h: Option<&Histogram>, q: f64) -> f64 {
    h.and_then(|h| h.quantile(q)).map_or(f64::NAN, |v| v * 1e3)
}

fn webhook_ms(r: &Round, q: f64) -> f64 {
    ms(r.webhook.as_ref(), q)
}

/// The API server's buckets are 5, 25 and 100 ms: a p99 between 25 and 100 ms is interpolated
/// from the share of admissions over 25 ms, so that share is printed beside it.
const SLOW: f64 = 0.025;

fn slow_percent(h: Option<&Histogram>) -> f64 {
    h.and_then(|h| h.share_above(SLOW))
        .map_or(f64::NAN, |s| s * 100.0)
}

/// Ours over the floor in each round by `measure`: both loads of a round ran on the same
/// cluster minutes apart, each from an empty namespace.
fn paired(rounds: &[Round], measure: impl Fn(&Round) -> f64) -> Vec<f64> {
    let n = rounds.iter().map(|r| r.round + 1).max().unwrap_or(0);
    let load = |i: usize, s: Setup| rounds.iter().find(|r| r.round == i && r.setup == s);
    (0..n)
        .filter_map(|i| Some(measure(load(i, Setup::Ours)?) / measure(load(i, Setup::Floor)?)))
        .collect()
}

/// "median (min-max)" of pods/s, or "–" when none was measured.
fn rate_cell(v: &[f64]) -> String {
    match spread(v.to_vec()) {
        None => "–".to_string(),
        Some(s) => format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max),
    }
}

/// "median x (min-max)" of ratios, or "–" when none was measured.
fn ratio_cell(v: &[f64]) -> String {
    match spread(v.to_vec()) {
        None => "–".to_string(),
        Some(s) => format!("{:.2}x ({:.2}-{:.2})", s.median, s.min, s.max),
    }
}

fn median(v: &[f64]) -> f64 {
    spread(v.to_vec()).map_or(f64::NAN, |s| s.median)
}

pub fn print(plan: &Plan, rounds: &[Round], machine: &Window) {
    let from = match plan.during_deletion {
        Some(n) => format!(
            "each from a namespace of only {n} other labelled pods, which one collection delete removes under the load"
        ),
        None => "each from an empty namespace".to_string(),
    };
    println!(
        "\n{} rounds, {} s per setup {from}, {} creators; {machine}\n",
        plan.rounds,
        plan.each.as_secs(),
        plan.creators
    );
    println!(
        "| round | setup | pods created | pods/s | injected | failed | create p50 / p99 | API server's p50 / p99 | over 25 ms | deletion under it | operators' CPU |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rounds {
        let error = r.first_error.as_deref().map(|e| format!(" ({e})"));
        let admission = match r.webhook {
            None => "- | -".to_string(),
            Some(_) => format!(
                "{:.1} / {:.1} ms | {:.2}%",
                webhook_ms(r, 0.5),
                webhook_ms(r, 0.99),
                slow_percent(r.webhook.as_ref())
            ),
        };
        let deletion = r
            .deletion
            .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "| {} | {} | {} | {:.1} | {} | {}{} | {:.1} / {:.1} ms | {admission} | {deletion} | {:.1} s |",
            r.round,
            r.setup.name(),
            r.created,
            r.per_second(),
            r.injected,
            r.failed,
            error.unwrap_or_default(),
            r.latency.value_at_quantile(0.5) as f64 / 1e3,
            r.latency.value_at_quantile(0.99) as f64 / 1e3,
            r.operators_cpu,
        );
    }
    summary(rounds);
    goals(rounds);
}

/// Each setup over the whole run.
fn summary(rounds: &[Round]) {
    println!(
        "\n| setup | pods/s, median (spread) | create p50 / p99 | API server's admission duration p50 / p99 (admissions) |\n|---|---|---|---|"
    );
    for setup in [Setup::Bare, Setup::Floor, Setup::Ours] {
        let all = pooled(rounds, setup);
        let admission = match setup.webhook() {
            None => "-".to_string(),
            Some(_) => format!(
                "{:.1} / {:.1} ms ({}, {:.2}% over 25 ms)",
                ms(Some(&all), 0.5),
                ms(Some(&all), 0.99),
                all.count(),
                slow_percent(Some(&all))
            ),
        };
        println!(
            "| {} | {} | {:.1} / {:.1} ms | {admission} |",
            setup.name(),
            rate_cell(&rates(rounds, setup)),
            create_ms(rounds, setup, 0.5),
            create_ms(rounds, setup, 0.99),
        );
    }
    let bare = median(&rates(rounds, Setup::Bare));
    println!(
        "\npods/s against no webhook (medians): floor {:.2}x, ours {:.2}x",
        median(&rates(rounds, Setup::Floor)) / bare,
        median(&rates(rounds, Setup::Ours)) / bare
    );
    let cpu = |setup| {
        median(
            &of(rounds, setup)
                .map(|r| r.operators_cpu)
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "operators' CPU over a load (medians): no webhook {:.2} s, floor {:.2} s, ours {:.2} s",
        cpu(Setup::Bare),
        cpu(Setup::Floor),
        cpu(Setup::Ours)
    );
}

/// The goals, on the median over the rounds of ours over the floor in the same round; the
/// ratios over the whole run beside them.
fn goals(rounds: &[Round]) {
    let pods = paired(rounds, Round::per_second);
    let p99 = paired(rounds, |r| webhook_ms(r, 0.99));
    let create_p99 = paired(rounds, |r| r.latency.value_at_quantile(0.99) as f64);
    println!(
        "\n| ours over the floor, by round | pods/s | p99, API server's | create p99, client's |\n|---|---|---|---|"
    );
    for (i, ((a, b), c)) in pods.iter().zip(&p99).zip(&create_p99).enumerate() {
        println!("| {i} | {a:.2}x | {b:.2}x | {c:.2}x |");
    }
    let whole_rate = |setup| {
        let created: usize = of(rounds, setup).map(|r| r.created).sum();
        let secs: f64 = of(rounds, setup).map(|r| r.elapsed.as_secs_f64()).sum();
        created as f64 / secs
    };
    let whole_p99 = |setup| ms(Some(&pooled(rounds, setup)), 0.99);
    println!(
        "\n| goal | median over rounds (spread) | over the whole run | met |\n|---|---|---|---|"
    );
    println!(
        "| ours' pods/s at least 0.95x the floor's | {} | {:.2}x | {} |",
        ratio_cell(&pods),
        whole_rate(Setup::Ours) / whole_rate(Setup::Floor),
        yes(median(&pods) >= 0.95)
    );
    println!(
        "| ours' p99 (API server's histogram) at most 1.2x the floor's | {} | {:.2}x | {} |",
        ratio_cell(&p99),
        whole_p99(Setup::Ours) / whole_p99(Setup::Floor),
        yes(median(&p99) <= 1.2)
    );
    let slow = paired(rounds, |r| slow_percent(r.webhook.as_ref()));
    println!(
        "\nours over the floor by round: admissions over 25 ms {}, the client's create p99 {}",
        ratio_cell(&slow),
        ratio_cell(&create_p99)
    );
}

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "no" }
}

//! A Prometheus histogram read from a text exposition, and its quantiles interpolated within
//! buckets (as PromQL's histogram_quantile does).

/// Cumulative bucket counts by upper bound (the last bound is +Inf), summed over every series
/// of `metric` whose labels contain each of `labels` (e.g. `name="pods.example.io"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    pub fn parse(text: &str, metric: &str, labels: &[&str]) -> Self {
        let prefix = format!("{metric}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !labels.iter().all(|l| series.contains(l)) {
                continue;
            }
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(|v| {
                    if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse().unwrap_or(f64::NAN)
                    }
                });
            let (Some(le), Ok(count)) = (le, value.parse::<f64>()) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += count,
                None => buckets.push((le, count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self { buckets }
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, c - before(le)))
                .collect(),
        }
    }

    /// Both histograms' observations together.
    pub fn plus(&self, other: &Histogram) -> Histogram {
        let mut sum = self.clone();
        for &(le, c) in &other.buckets {
            match sum.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, s)) => *s += c,
                None => sum.buckets.push((le, c)),
            }
        }
        sum.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        sum
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The share of observations above `bound`, which must be one of the buckets' bounds.
    pub fn share_above(&self, bound: f64) -> Option<f64> {
        let (_, at) = self.buckets.iter().find(|(le, _)| *le == bound)?;
        (self.count() > 0.0).then(|| 1.0 - at / self.count())
    }

    /// The q-quantile, linear within its bucket; the largest finite bound when it falls in +Inf.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let target = q * self.count();
        if self.count() == 0.0 {
            return None;
        }
        let mut lower = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= target {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let share = if c > lower.1 {
                    (target - lower.1) / (c - lower.1)
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, c);
        }
        None
    }
}

/// Checks the interpolation against a hand-computed case (run in every mode of a benchmark).
pub fn self_check() {
    let text = "m_bucket{name=\"a\",le=\"0.005\"} 10\nm_bucket{name=\"a\",le=\"0.01\"} 90\n\
                m_bucket{name=\"a\",le=\"0.025\"} 100\nm_bucket{name=\"a\",le=\"+Inf\"} 100\n\
                m_bucket{name=\"b\",le=\"0.005\"} 7\n";
    let h = Histogram::parse(text, "m", &["name=\"a\""]);
    assert_eq!(h.count(), 100.0);
    // 50th of 100: in (0.005, 0.01], 40 of its 80 observations in.
    assert!((h.quantile(0.5).unwrap() - 0.0075).abs() < 1e-9);
    // 99th: in (0.01, 0.025], 9 of its 10.
    assert!((h.quantile(0.99).unwrap() - 0.0235).abs() < 1e-9);
    assert!((h.share_above(0.01).unwrap() - 0.1).abs() < 1e-9);
    assert_eq!(h.share_above(0.02), None);
    let earlier = Histogram::parse(text, "m", &["name=\"a\""]);
    assert_eq!(h.since(&earlier).count(), 0.0);
    assert_eq!(h.since(&earlier).quantile(0.99), None);
    assert_eq!(Histogram::default().plus(&h), h);
}

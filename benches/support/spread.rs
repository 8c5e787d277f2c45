//! The median and range of one figure over a benchmark's rounds: the median, because one slow
//! round on a busy two-core machine must not move the figure a goal is judged on.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of the finite values, or `None` when there is none.
pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: values[0],
        max: values[n - 1],
    })
}

/// Checks the median of odd and even counts and the dropping of NaN (run in every mode).
pub fn self_check() {
    let s = spread(vec![3.0, f64::NAN, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    assert_eq!(spread(vec![4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    assert_eq!(spread(vec![f64::NAN]), None);
}

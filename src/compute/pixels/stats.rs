//! The statistics of a summarised image: moments and lower-rank percentiles walked from the
//! histogram (or the sorted wide values) as (value, count) pairs, exact integer sums for the
//! stored values and two f64 passes for the modality values.

use super::accumulator::Accumulator;
use super::{Moments, PixelSummary};
use crate::compute::InstanceMeta;

impl Accumulator {
    /// (value, count) in ascending value order, from the histogram or the sorted values
    /// (walked again for each pass: nothing of the image's size is collected).
    fn pairs(&self) -> impl Iterator<Item = (i64, u64)> + Clone + '_ {
        let lo = self.lo;
        let from_hist = self
            .hist
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(i, &c)| (lo + i as i64, u64::from(c)));
        let from_wide = RunLengths::new(&self.wide).map(move |(v, c)| (lo + i64::from(v), c));
        from_hist.chain(from_wide)
    }

    /// The summary: statistics of the stored and the modality values, and the digest.
    pub(super) fn finish(mut self, meta: &InstanceMeta) -> PixelSummary {
        self.wide.sort_unstable();
        let pairs = self.pairs();
        let n = self.layout.values();
        let ranks = [1.0, 50.0, 99.0].map(|q: f64| ((q / 100.0) * (n - 1) as f64).floor() as u64);
        let mut pct = [0i64; 3];
        let (mut sum, mut sumsq, mut seen) = (0i128, 0i128, 0u64);
        let (mut first, mut last) = (None, None);
        for (v, c) in pairs.clone() {
            first.get_or_insert(v);
            last = Some(v);
            for (p, &rank) in pct.iter_mut().zip(&ranks) {
                if seen <= rank && rank < seen + c {
                    *p = v;
                }
            }
            seen += c;
            sum += i128::from(v) * i128::from(c);
            sumsq += i128::from(v) * i128::from(v) * i128::from(c);
        }
        let (min, max) = match (first, last) {
            (Some(lo), Some(hi)) => (lo as f64, hi as f64),
            _ => (0.0, 0.0),
        };
        let nn = i128::from(n);
        let mean = sum as f64 / n as f64;
        // Exact: n²·var = n·Σv² − (Σv)².
        let std = (((nn * sumsq - sum * sum) as f64) / (n as f64 * n as f64)).sqrt();
        let modality = (self.layout.samples == 1).then(|| match &meta.modality_lut {
            Some(lut) => moments(pairs.clone(), n, |v| lut.apply(v) as f64),
            None => {
                let slope = meta.rescale_slope.unwrap_or(1.0);
                let intercept = meta.rescale_intercept.unwrap_or(0.0);
                moments(pairs.clone(), n, |v| v as f64 * slope + intercept)
            }
        });
        PixelSummary {
            values: n,
            min,
            max,
            mean,
            std,
            p01: pct[0] as f64,
            p50: pct[1] as f64,
            p99: pct[2] as f64,
            modality,
            digest: self.hasher.finalize().to_hex().to_string(),
        }
    }
}

/// Moments of `f(v)` over (value, count) pairs: two passes in f64.
fn moments(
    pairs: impl Iterator<Item = (i64, u64)> + Clone,
    n: u64,
    f: impl Fn(i64) -> f64,
) -> Moments {
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for (v, c) in pairs.clone() {
        let x = f(v);
        min = min.min(x);
        max = max.max(x);
        sum += x * c as f64;
    }
    let mean = sum / n as f64;
    let var = pairs
        .map(|(v, c)| {
            let d = f(v) - mean;
            d * d * c as f64
        })
        .sum::<f64>()
        / n as f64;
    Moments {
        min,
        max,
        mean,
        std: var.sqrt(),
    }
}

/// (value, count) runs of a sorted slice.
#[derive(Clone)]
struct RunLengths<'a> {
    rest: &'a [u32],
}

impl<'a> RunLengths<'a> {
    fn new(sorted: &'a [u32]) -> Self {
        RunLengths { rest: sorted }
    }
}

impl Iterator for RunLengths<'_> {
    type Item = (u32, u64);
    fn next(&mut self) -> Option<Self::Item> {
        let &v = self.rest.first()?;
        let run = self.rest.iter().take_while(|&&x| x == v).count();
        self.rest = &self.rest[run..];
        Some((v, run as u64))
    }
}

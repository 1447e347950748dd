//! Progress of a backfill: shared counters, and the reporter that shows them.
//!
//! On a terminal (stderr is a TTY) one line on stderr is redrawn in place a few times a
//! second: files published, files/s and MB/s over the last few seconds, and — once the
//! total is known — done/total and an ETA. Otherwise (a log file, a CI job, journald) a
//! plain `backfill progress` log event every 5 s with structured fields. Log lines written
//! while the progress line is shown erase it first ([`stderr_for_logs`]), so they never get
//! glued to it.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::BackfillSummary;

/// How often the terminal line is redrawn.
const TTY_INTERVAL: Duration = Duration::from_millis(250);
/// How often the plain progress event is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Rates are over this much recent time (ETA too), not since the start.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Whether the progress line is on screen (so a log line must erase it first).
static LINE_SHOWN: AtomicBool = AtomicBool::new(false);
/// Erase sequence: carriage return, clear the whole line.
const ERASE: &[u8] = b"\r\x1b[2K";

/// The writer for log output: stderr, with the progress line erased first if it is shown.
/// Pass it to `tracing_subscriber::fmt().with_writer(...)`.
pub fn stderr_for_logs() -> std::io::Stderr {
    let err = std::io::stderr();
    if LINE_SHOWN.swap(false, Ordering::AcqRel) {
        let _ = err.lock().write_all(ERASE);
    }
    err
}

/// Counters of one source, updated by its task and read by the reporter.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub bytes: AtomicU64,
    pub skipped: AtomicU64,
    pub indexed: AtomicU64,
    pub errors: AtomicU64,
    pub failed: AtomicU64,
    /// Entries the counting pass found (valid once `counted`).
    pub total: AtomicU64,
    pub counted: AtomicBool,
}

impl Counters {
    pub fn summary(&self) -> BackfillSummary {
        BackfillSummary {
            published: self.published.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            indexed: self.indexed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Entries accounted for, whatever became of them.
fn finished(s: &BackfillSummary) -> u64 {
    s.published + s.skipped + s.indexed + s.errors + s.failed
}

/// One observation of the totals.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    published: u64,
    bytes: u64,
    finished: u64,
}

/// What the reporter shows, computed from the samples (pure, for the tests).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub total: BackfillSummary,
    pub files_per_s: f64,
    pub mb_per_s: f64,
    /// Entries to do in all (once every source's count is in).
    pub expected: Option<u64>,
    pub eta: Option<Duration>,
}

struct Rates {
    samples: VecDeque<Sample>,
}

impl Rates {
    fn new() -> Rates {
        Rates {
            samples: VecDeque::with_capacity(64),
        }
    }

    fn view(&mut self, now: Instant, total: BackfillSummary, expected: Option<u64>) -> View {
        let s = Sample {
            at: now,
            published: total.published,
            bytes: total.bytes,
            finished: finished(&total),
        };
        self.samples.push_back(s);
        while self
            .samples
            .front()
            .is_some_and(|f| now.saturating_duration_since(f.at) > RATE_WINDOW)
            || self.samples.len() > 256
        {
            self.samples.pop_front();
        }
        let first = self.samples.front().copied().unwrap_or(s);
        let secs = now.saturating_duration_since(first.at).as_secs_f64();
        let per_s = |a: u64, b: u64| {
            if secs > 0.0 {
                a.saturating_sub(b) as f64 / secs
            } else {
                0.0
            }
        };
        let done_rate = per_s(s.finished, first.finished);
        let eta = expected.and_then(|e| {
            let left = e.saturating_sub(s.finished);
            if left == 0 {
                Some(Duration::ZERO)
            } else if done_rate > 0.0 {
                // Whole seconds, rounded up: "0s" only when nothing is left.
                Some(Duration::from_secs(
                    (left as f64 / done_rate).ceil().min(1e9) as u64,
                ))
            } else {
                None
            }
        });
        View {
            total,
            files_per_s: per_s(s.published, first.published),
            mb_per_s: per_s(s.bytes, first.bytes) / 1e6,
            expected,
            eta,
        }
    }
}

/// All sources together: counts and rates add up, the total is known once every source's
/// is, and the ETA is the latest source's (unknown while any source's is).
pub fn combine(views: &[View]) -> View {
    let mut out = View {
        total: BackfillSummary::default(),
        files_per_s: 0.0,
        mb_per_s: 0.0,
        expected: Some(0),
        eta: Some(Duration::ZERO),
    };
    for v in views {
        out.total = out.total.plus(&v.total);
        out.files_per_s += v.files_per_s;
        out.mb_per_s += v.mb_per_s;
        out.expected = out.expected.zip(v.expected).map(|(a, b)| a + b);
        out.eta = out.eta.zip(v.eta).map(|(a, b)| a.max(b));
    }
    if out.expected.is_none() {
        out.eta = None;
    }
    out
}

/// `1h02m03s`, `4m05s`, `6s`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The terminal line.
pub fn line(v: &View) -> String {
    let t = &v.total;
    let mut out = format!(
        "backfill: {} published, {:.0} files/s, {:.1} MB/s",
        t.published, v.files_per_s, v.mb_per_s
    );
    if t.indexed > 0 {
        out.push_str(&format!(", {} already indexed", t.indexed));
    }
    if t.errors + t.failed > 0 {
        out.push_str(&format!(", {} errors, {} failed", t.errors, t.failed));
    }
    match (v.expected, v.eta) {
        (Some(e), Some(eta)) => {
            let pct = (finished(t) as f64 / e.max(1) as f64 * 100.0).min(100.0);
            out.push_str(&format!(
                ", {}/{e} ({pct:.0}%), ETA {}",
                finished(t),
                hms(eta)
            ));
        }
        (Some(e), None) => out.push_str(&format!(", {}/{e}", finished(t))),
        (None, _) => out.push_str(", counting…"),
    }
    out
}

/// The reporter: runs until `stop`, then erases its line.
pub async fn report(
    sources: Vec<Arc<Counters>>,
    unacked: impl Fn() -> usize + Send + 'static,
    stop: CancellationToken,
) {
    let tty = std::io::stderr().is_terminal();
    let interval = if tty { TTY_INTERVAL } else { LOG_INTERVAL };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per source: sources run at different rates (and one may be done), so the ETA is
    // the slowest source's, not the total's.
    let mut rates: Vec<Rates> = sources.iter().map(|_| Rates::new()).collect();
    let observe = |rates: &mut Vec<Rates>| {
        let now = Instant::now();
        let views: Vec<View> = sources
            .iter()
            .zip(rates.iter_mut())
            .map(|(c, r)| {
                let expected = c
                    .counted
                    .load(Ordering::Acquire)
                    .then(|| c.total.load(Ordering::Relaxed));
                r.view(now, c.summary(), expected)
            })
            .collect();
        combine(&views)
    };
    // The first tick is immediate: a starting sample, so the first report has a rate.
    tick.tick().await;
    observe(&mut rates);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let v = observe(&mut rates);
        if tty {
            show_line(&line(&v));
        } else {
            let t = &v.total;
            let (files_per_s, mb_per_s) = (
                v.files_per_s.round() as u64,
                (v.mb_per_s * 10.0).round() / 10.0,
            );
            // The total and the ETA are shown together or not at all (an absent field is
            // not recorded).
            let (expected, eta_s) = match (v.expected, v.eta) {
                (Some(expected), Some(eta)) => (Some(expected), Some(eta.as_secs())),
                _ => (None, None),
            };
            tracing::info!(
                files = t.published,
                bytes = t.bytes,
                rate = files_per_s,
                mb_per_s,
                indexed = t.indexed,
                skipped = t.skipped,
                errors = t.errors,
                failed = t.failed,
                unacked = unacked(),
                done = finished(t),
                expected,
                eta_s,
                "backfill progress"
            );
        }
    }
    if tty {
        clear_line();
    }
}

/// Draw `text` as the progress line on stderr (a terminal), replacing the one shown.
pub fn show_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(ERASE);
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
    LINE_SHOWN.store(true, Ordering::Release);
}

/// Erase the progress line, if one is shown.
pub fn clear_line() {
    if LINE_SHOWN.swap(false, Ordering::AcqRel) {
        let _ = std::io::stderr().lock().write_all(ERASE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(published: u64, bytes: u64, indexed: u64) -> BackfillSummary {
        BackfillSummary {
            published,
            bytes,
            indexed,
            ..BackfillSummary::default()
        }
    }

    #[test]
    fn rates_and_eta_come_from_the_recent_window() {
        let t0 = Instant::now();
        let mut r = Rates::new();
        let v = r.view(t0, summary(0, 0, 0), None);
        assert_eq!((v.files_per_s, v.eta), (0.0, None));
        assert!(line(&v).contains("counting"), "{}", line(&v));
        let v = r.view(
            t0 + Duration::from_secs(2),
            summary(100, 50_000_000, 0),
            Some(1100),
        );
        assert_eq!(v.files_per_s, 50.0);
        assert_eq!(v.mb_per_s, 25.0);
        assert_eq!(v.eta, Some(Duration::from_secs(20)));
        let text = line(&v);
        assert!(
            text.contains("100 published, 50 files/s, 25.0 MB/s"),
            "{text}"
        );
        assert!(text.contains("100/1100 (9%), ETA 20s"), "{text}");
        // 20 s later the first samples are out of the window: only recent speed counts.
        let v = r.view(
            t0 + Duration::from_secs(22),
            summary(100, 50_000_000, 900),
            Some(1100),
        );
        assert_eq!(v.files_per_s, 0.0);
        assert_eq!(v.eta, None, "nothing moved within the window");
        let v = r.view(
            t0 + Duration::from_secs(24),
            summary(150, 50_000_000, 950),
            Some(1100),
        );
        assert_eq!(v.files_per_s, 25.0);
        assert_eq!(v.eta, Some(Duration::ZERO));
        assert!(line(&v).contains("950 already indexed"));
    }

    #[test]
    fn sources_add_up_and_the_slowest_sets_the_eta() {
        let view = |published, per_s: f64, expected: Option<u64>, eta: Option<u64>| View {
            total: summary(published, published * 10, 0),
            files_per_s: per_s,
            mb_per_s: per_s / 1e5,
            expected,
            eta: eta.map(Duration::from_secs),
        };
        let fast = view(500, 60.0, Some(500), Some(0)); // finished
        let slow = view(200, 40.0, Some(300), Some(3));
        let v = combine(&[fast.clone(), slow.clone()]);
        assert_eq!(v.total.published, 700);
        assert_eq!(v.files_per_s, 100.0);
        assert_eq!(v.expected, Some(800));
        assert_eq!(v.eta, Some(Duration::from_secs(3)));
        // One source still counting (or not started): no total, no ETA.
        let counting = view(0, 0.0, None, None);
        let v = combine(&[fast, slow, counting]);
        assert_eq!((v.expected, v.eta), (None, None));
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(hms(Duration::from_secs(6)), "6s");
        assert_eq!(hms(Duration::from_secs(245)), "4m05s");
        assert_eq!(hms(Duration::from_secs(3723)), "1h02m03s");
    }
}

//! `GET /metrics`: the service's counters in the Prometheus text format (version 0.0.4), every
//! name prefixed `pare_`. Written by hand: a few counters, one gauge family read from the
//! queue, one histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::queue::State;

/// Upper bounds (seconds) of the harden-time histogram's buckets.
const BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Default)]
struct Inner {
    /// (source, outcome) → events.
    events: BTreeMap<(String, String), u64>,
    /// (endpoint, status code) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// outcome → jobs finished (an attempt that will be retried counts as `retried`).
    finished: BTreeMap<String, u64>,
    /// Per bucket (not cumulative), then +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    seconds_sum: f64,
    seconds_count: u64,
    bytes_saved: u64,
}

#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event read from `source` (`distribution`, `harbor`, `api`) with its outcome
    /// (`queued`, `duplicate`, `skipped`).
    pub fn event(&self, source: &str, outcome: &str) {
        *self
            .inner()
            .events
            .entry((source.into(), outcome.into()))
            .or_default() += 1;
    }

    /// A request answered.
    pub fn request(&self, endpoint: &str, code: u16) {
        *self
            .inner()
            .requests
            .entry((endpoint.into(), code))
            .or_default() += 1;
    }

    /// A job's attempt ended (`hardened`, `up_to_date`, `skipped`, `retried`, `failed`)
    /// after `seconds`, saving `saved` bytes (uncompressed).
    pub fn finished(&self, outcome: &str, seconds: f64, saved: u64) {
        let mut m = self.inner();
        *m.finished.entry(outcome.into()).or_default() += 1;
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        m.buckets[i] += 1;
        m.seconds_sum += seconds;
        m.seconds_count += 1;
        m.bytes_saved += saved;
    }

    /// The text exposition, with the queue's `jobs` per state.
    pub fn render(&self, jobs: &BTreeMap<State, u64>) -> String {
        let m = self.inner();
        let mut out = String::new();
        family(
            &mut out,
            "pare_events_total",
            "counter",
            "Registry events and API requests read, by source and outcome (queued, duplicate, skipped).",
        );
        for ((s, o), n) in &m.events {
            let _ = writeln!(
                out,
                "pare_events_total{{source=\"{}\",outcome=\"{}\"}} {n}",
                esc(s),
                esc(o)
            );
        }
        family(
            &mut out,
            "pare_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status code.",
        );
        for ((e, c), n) in &m.requests {
            let _ = writeln!(
                out,
                "pare_requests_total{{endpoint=\"{}\",code=\"{c}\"}} {n}",
                esc(e)
            );
        }
        family(
            &mut out,
            "pare_jobs",
            "gauge",
            "Jobs in the queue, by state.",
        );
        for s in [
            State::Queued,
            State::Running,
            State::Done,
            State::Skipped,
            State::Failed,
        ] {
            let n = jobs.get(&s).copied().unwrap_or(0);
            let _ = writeln!(out, "pare_jobs{{state=\"{}\"}} {n}", s.as_str());
        }
        family(
            &mut out,
            "pare_jobs_finished_total",
            "counter",
            "Job attempts ended, by outcome (hardened, up_to_date, skipped, retried, failed).",
        );
        for (o, n) in &m.finished {
            let _ = writeln!(
                out,
                "pare_jobs_finished_total{{outcome=\"{}\"}} {n}",
                esc(o)
            );
        }
        family(
            &mut out,
            "pare_harden_seconds",
            "histogram",
            "Seconds each job attempt took.",
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += m.buckets[i];
            let _ = writeln!(out, "pare_harden_seconds_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += m.buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "pare_harden_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "pare_harden_seconds_sum {}", m.seconds_sum);
        let _ = writeln!(out, "pare_harden_seconds_count {}", m.seconds_count);
        family(
            &mut out,
            "pare_bytes_saved_total",
            "counter",
            "Uncompressed bytes the hardened images are smaller than their sources.",
        );
        let _ = writeln!(out, "pare_bytes_saved_total {}", m.bytes_saved);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the text format asks (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histogram_and_escaping() {
        let m = Metrics::default();
        m.event("distribution", "queued");
        m.event("distribution", "queued");
        m.event("harbor", "skip\"ped\n");
        m.request("/events/distribution", 202);
        m.finished("hardened", 1.5, 1000);
        m.finished("failed", 700.0, 0);
        let mut jobs = BTreeMap::new();
        jobs.insert(State::Done, 3);
        let t = m.render(&jobs);
        for line in [
            "pare_events_total{source=\"distribution\",outcome=\"queued\"} 2",
            "pare_events_total{source=\"harbor\",outcome=\"skip\\\"ped\\n\"} 1",
            "pare_requests_total{endpoint=\"/events/distribution\",code=\"202\"} 1",
            "pare_jobs{state=\"done\"} 3",
            "pare_jobs{state=\"queued\"} 0",
            "pare_harden_seconds_bucket{le=\"1\"} 0",
            "pare_harden_seconds_bucket{le=\"2\"} 1",
            "pare_harden_seconds_bucket{le=\"600\"} 1",
            "pare_harden_seconds_bucket{le=\"+Inf\"} 2",
            "pare_harden_seconds_count 2",
            "pare_harden_seconds_sum 701.5",
            "pare_bytes_saved_total 1000",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} not in\n{t}");
        }
    }
}

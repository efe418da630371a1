//! The daemon's metrics, as `GET /metrics` serves them in Prometheus' text
//! exposition format. What happens (events taken in, attempts, reloads, API
//! requests) is counted in memory, with atomics, where it happens: an increment
//! takes no lock across an await and allocates nothing once its label set has
//! been seen. What the database holds (runs and outbox rows by state, the oldest
//! queued message) is read when scraped, by indexed queries (`store::queue_gauges`),
//! never by the writer. Every label's values are bounded: kinds, states,
//! outcomes, route templates, and the names the admin gives workflows,
//! channels and plugins; never a contact, an address or a raw path.
//!
//! One registry per process (`get`): the counters belong to the process, as
//! Prometheus expects of a target, not to one `Store` or `Engine`.

use std::sync::LazyLock;

use crate::model::Reason;

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The counters and histograms, and the gauges filled in at each scrape.
pub(crate) struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    runs_finished: IntCounterVec,
    timer_lateness: Histogram,
    delivery_attempts: IntCounterVec,
    delivery_held: IntCounterVec,
    message_latency: HistogramVec,
    plugin_failures: IntCounterVec,
    reloads: IntCounterVec,
    api_requests: IntCounterVec,
    api_latency: HistogramVec,
    gauges: Gauges,
}

/// Timers fired and how late, summed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct TimerLateness {
    pub(crate) fired: u64,
    pub(crate) late_seconds: f64,
}

/// The gauges: set at each scrape, or as the state they show changes.
struct Gauges {
    runs: IntGaugeVec,
    outbox: IntGaugeVec,
    oldest_queued: Gauge,
    relay_open: IntGauge,
    throttled_domains: IntGauge,
    reload_failing: IntGauge,
}

impl Gauges {
    fn new(r: &Registry) -> Gauges {
        let gauges =
            |name: &str, help: &str, labels: &[&str]| registered(r, IntGaugeVec::new(Opts::new(name, help), labels));
        let gauge = |name: &str, help: &str| registered(r, IntGauge::new(name, help));
        Gauges {
            runs: gauges(
                "nudge_runs",
                "Runs not yet ended, by state (ready, waiting).",
                &["state"],
            ),
            outbox: gauges(
                "nudge_outbox_messages",
                "Outbox messages by status, for those not sent: pending, unknown, dead, failed.",
                &["status"],
            ),
            oldest_queued: registered(
                r,
                Gauge::new(
                    "nudge_outbox_oldest_queued_seconds",
                    "Age of the oldest pending outbox message (0 when none is queued), on the daemon's clock.",
                ),
            ),
            relay_open: gauge(
                "nudge_relay_circuit_open",
                "1 while the SMTP relay's circuit is open (email held), else 0.",
            ),
            throttled_domains: gauge(
                "nudge_throttled_domains",
                "Recipient domains slowed down by a throttling reply now (their mail paced and paused).",
            ),
            reload_failing: gauge(
                "nudge_workflow_reload_failing",
                "1 while the workflow folder holds an edit the daemon refused (it runs the set before it), else 0.",
            ),
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

/// Seconds, from sub-second (an API answer, a timer on time) to days (a
/// message queued behind a closed send window is not late, but an hour is).
const SECONDS: &[f64] = &[
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Increments decided inside a transaction, made once it has committed: a
/// batch rolled back and tried again step by step must not count twice.
#[derive(Default)]
pub(crate) struct Tally(Vec<prometheus::IntCounter>);

impl Tally {
    /// Takes over `other`'s increments (its transaction became part of this one).
    pub(crate) fn append(&mut self, other: &mut Tally) {
        self.0.append(&mut other.0);
    }

    /// Makes the increments: call once the transaction has committed.
    pub(crate) fn count(self) {
        for counter in self.0 {
            counter.inc();
        }
    }
}

/// What the database says at scrape time (`store::queue_gauges`).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct QueueGauges {
    /// (run state, count) for the states a run is still in: ready, waiting.
    pub(crate) runs: Vec<(&'static str, i64)>,
    /// (outbox status, count) for the statuses that are not settled for good.
    pub(crate) outbox: Vec<(&'static str, i64)>,
    /// Seconds the oldest pending message has been queued, on the daemon's clock.
    pub(crate) oldest_queued_secs: f64,
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(SECONDS.to_vec());
            registered(&r, HistogramVec::new(opts, labels))
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| registered(&r, IntCounterVec::new(Opts::new(name, help), labels));
        Metrics {
            events: counter(
                "nudge_events_total",
                "Events taken in by the engine, by kind.",
                &["kind"],
            ),
            runs_finished: counter(
                "nudge_runs_finished_total",
                "Runs that ended, by workflow, outcome (done, cancelled, failed) and stop reason.",
                &["workflow", "outcome", "reason"],
            ),
            timer_lateness: histogram(
                "nudge_timer_lateness_seconds",
                "How long after its due time a timer fired, on the daemon's clock.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            delivery_attempts: counter(
                "nudge_delivery_attempts_total",
                "Delivery attempts recorded, by channel and outcome.",
                &["channel", "outcome"],
            ),
            delivery_held: counter(
                "nudge_delivery_held_total",
                "Email held in the outbox untried, by reason (domain_paced, domain_throttled, warmup_cap).",
                &["reason"],
            ),
            message_latency: histogram(
                "nudge_message_latency_seconds",
                "From a message queued (with its event, for a run's first step) to the server accepting it.",
                &["channel"],
            ),
            plugin_failures: counter(
                "nudge_plugin_failures_total",
                "Failed plugin calls, by plugin and reason (template, refused, limit, crash).",
                &["plugin", "reason"],
            ),
            reloads: counter(
                "nudge_workflow_reloads_total",
                "Reloads of the workflow folder, by result (ok, failed).",
                &["result"],
            ),
            api_requests: counter(
                "nudge_api_requests_total",
                "API requests answered, by route template, method and status.",
                &["route", "method", "status"],
            ),
            api_latency: histogram(
                "nudge_api_request_duration_seconds",
                "Time to answer an API request, by route template.",
                &["route"],
            ),
            gauges: Gauges::new(&r),
            registry: r,
        }
    }

    /// An event the engine took in.
    pub(crate) fn event_in(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }

    /// A run of `workflow` that ended with `status` (done, cancelled, failed),
    /// counted in `tally` once its transaction commits. The reason label is its
    /// stable code (`model::Reason`: what `nudge explain`, `nudge status` and the
    /// logs show; a bounded set, never the outcome's text).
    pub(crate) fn run_finished(&self, tally: &mut Tally, workflow: &str, status: &str, reason: Reason) {
        tally.0.push(
            self.runs_finished
                .with_label_values(&[workflow, status, reason.as_str()]),
        );
    }

    /// A timer fired `late_ms` after it was due.
    pub(crate) fn timer_fired(&self, late_ms: i64) {
        self.timer_lateness.observe(late_ms.max(0) as f64 / 1000.0);
    }

    /// The timers fired since the daemon started and their total lateness,
    /// from the histogram `/metrics` serves (the console's overview shows it).
    pub(crate) fn timer_lateness(&self) -> TimerLateness {
        TimerLateness {
            fired: self.timer_lateness.get_sample_count(),
            late_seconds: self.timer_lateness.get_sample_sum(),
        }
    }

    /// A recorded delivery attempt.
    pub(crate) fn delivery_attempt(&self, channel: &str, outcome: &str) {
        self.delivery_attempts.with_label_values(&[channel, outcome]).inc();
    }

    /// A message accepted by its server `latency_ms` after it was queued.
    pub(crate) fn message_accepted(&self, channel: &str, latency_ms: i64) {
        self.message_latency
            .with_label_values(&[channel])
            .observe(latency_ms.max(0) as f64 / 1000.0);
    }

    /// A plugin call that failed.
    pub(crate) fn plugin_failure(&self, plugin: &str, reason: &str) {
        self.plugin_failures.with_label_values(&[plugin, reason]).inc();
    }

    /// A plugin loaded: its failure counters, one per reason, start at zero.
    pub(crate) fn plugin_loaded(&self, plugin: &str, reasons: &[&str]) {
        for reason in reasons {
            self.plugin_failures.with_label_values(&[plugin, reason]);
        }
    }

    /// A reload of the workflow folder, applied or refused.
    pub(crate) fn workflow_reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.gauges.reload_failing.set(i64::from(!ok));
    }

    /// The workflow folder holds the running set again (an edit undone).
    pub(crate) fn workflow_folder_runs(&self) {
        self.gauges.reload_failing.set(0);
    }

    /// An answered API request: `route` is the matched template (or `unmatched`).
    pub(crate) fn api_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status_text(status);
        self.api_requests.with_label_values(&[route, method, status]).inc();
        self.api_latency.with_label_values(&[route]).observe(seconds);
    }

    /// An email held untried by its domain's pace or the warm-up plan.
    pub(crate) fn delivery_held(&self, reason: &str) {
        self.delivery_held.with_label_values(&[reason]).inc();
    }

    /// Recipient domains slowed by throttling, set at each scrape.
    pub(crate) fn set_throttled_domains(&self, domains: usize) {
        self.gauges.throttled_domains.set(domains as i64);
    }

    /// Whether the relay's circuit is open, set at each scrape.
    pub(crate) fn set_relay_open(&self, open: bool) {
        self.gauges.relay_open.set(i64::from(open));
    }

    /// The exposition of every metric, with the database's gauges as given.
    pub(crate) fn render(&self, queue: &QueueGauges) -> String {
        for (state, count) in &queue.runs {
            self.gauges.runs.with_label_values(&[*state]).set(*count);
        }
        for (status, count) in &queue.outbox {
            self.gauges.outbox.with_label_values(&[*status]).set(*count);
        }
        self.gauges.oldest_queued.set(queue.oldest_queued_secs);
        let mut out = Vec::new();
        // Encoding into memory cannot fail but on a metric without a value, which none is.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A metric registered in `registry`. The names and labels are constants of
/// this file, each registered once: an error here is a bug caught by any test.
fn registered<C: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<C>) -> C {
    let metric = metric.expect("a valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

/// The status code as text, without allocating for the ones the API answers.
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        303 => "303",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// The content type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// The overview's lateness is the histogram's, not counted a second time.
    #[test]
    fn the_timer_lateness_is_the_histograms() {
        let before = get().timer_lateness();
        get().timer_fired(90_000);
        let after = get().timer_lateness();
        // Other tests fire timers on the same registry: at least this one is counted.
        assert!(after.fired > before.fired, "{before:?} -> {after:?}");
        assert!(
            after.late_seconds >= before.late_seconds + 90.0,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn the_exposition_names_each_metric_with_its_labels() {
        let m = Metrics::new();
        m.event_in("stage_changed");
        let mut tally = Tally::default();
        m.run_finished(&mut tally, "welcome", "cancelled", Reason::ExitReplied);
        tally.count();
        m.timer_fired(90_000);
        m.api_request("/contacts/{contact}", "GET", 404, 0.002);
        let text = m.render(&QueueGauges {
            runs: vec![("waiting", 3)],
            outbox: vec![("dead", 1)],
            oldest_queued_secs: 42.0,
        });
        for line in [
            "nudge_events_total{kind=\"stage_changed\"} 1",
            "nudge_runs_finished_total{outcome=\"cancelled\",reason=\"exit_replied\",workflow=\"welcome\"} 1",
            "nudge_timer_lateness_seconds_bucket{le=\"60\"} 0",
            "nudge_timer_lateness_seconds_bucket{le=\"300\"} 1",
            "nudge_api_requests_total{method=\"GET\",route=\"/contacts/{contact}\",status=\"404\"} 1",
            "nudge_runs{state=\"waiting\"} 3",
            "nudge_outbox_messages{status=\"dead\"} 1",
            "nudge_outbox_oldest_queued_seconds 42",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in\n{text}");
        }
    }

    #[test]
    fn statuses_outside_the_known_ones_fall_in_their_class() {
        assert_eq!(status_text(418), "4xx");
        assert_eq!(status_text(502), "5xx");
        assert_eq!(status_text(422), "422");
    }
}

//! `/metrics` in the Prometheus text format, with Eraser's metric names.
//! Eraser pushes these over OTLP with a `node name` attribute; a Prometheus
//! label cannot hold a space, so the label here is `node_name`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of `imagejob_duration_run_seconds`. Eraser's stop at 60 s;
/// a run over many nodes with scans takes minutes.
const DURATION_BUCKETS: [f64; 10] = [10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    imagejob_run_total: u64,
    pods_completed_run_total: u64,
    pods_failed_run_total: u64,
    images_removed: BTreeMap<String, u64>,
    vulnerable_images: BTreeMap<String, u64>,
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_count: u64,
    duration_sum: f64,
    leader: bool,
    config_valid: bool,
    watches_failing: usize,
    nodes_degraded: BTreeMap<String, u64>,
}

/// One finished run, as the metrics see it.
pub struct RunOutcome<'a> {
    pub succeeded: u64,
    pub failed: u64,
    pub duration_seconds: f64,
    pub nodes: Vec<NodeOutcome<'a>>,
}

/// What one node's worker reported.
pub struct NodeOutcome<'a> {
    pub node: &'a str,
    pub removed: u64,
    /// Images its scans found vulnerable.
    pub vulnerable: u64,
    /// Its pass completed degraded.
    pub degraded: bool,
}

impl Metrics {
    pub fn record_run(&self, run: &RunOutcome<'_>) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.imagejob_run_total += 1;
        m.pods_completed_run_total += run.succeeded;
        m.pods_failed_run_total += run.failed;
        for n in &run.nodes {
            let c = m.images_removed.entry(n.node.to_owned()).or_default();
            *c = c.saturating_add(n.removed);
            let c = m.vulnerable_images.entry(n.node.to_owned()).or_default();
            *c = c.saturating_add(n.vulnerable);
            if n.degraded {
                *m.nodes_degraded.entry(n.node.to_owned()).or_default() += 1;
            }
        }
        for (count, bound) in m.duration_buckets.iter_mut().zip(DURATION_BUCKETS) {
            if run.duration_seconds <= bound {
                *count += 1;
            }
        }
        m.duration_count += 1;
        m.duration_sum += run.duration_seconds;
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).leader = leader;
    }

    pub fn set_config_valid(&self, valid: bool) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).config_valid = valid;
    }

    pub fn set_watches_failing(&self, failing: usize) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).watches_failing = failing;
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "imagejob_run_total",
            "Runs (ImageJobs) completed.",
            m.imagejob_run_total,
        );
        counter(
            &mut out,
            "pods_completed_run_total",
            "Worker pods that succeeded.",
            m.pods_completed_run_total,
        );
        counter(
            &mut out,
            "pods_failed_run_total",
            "Worker pods that failed, timed out in Pending or could not start.",
            m.pods_failed_run_total,
        );
        for (name, help, values) in [
            (
                "images_removed_run_total",
                "Images removed, by node.",
                &m.images_removed,
            ),
            (
                "vulnerable_images_run_total",
                "Images found vulnerable by the scans, by node.",
                &m.vulnerable_images,
            ),
            (
                "scour_nodes_degraded_run_total",
                "Runs in which a node's pass completed degraded (failed scans or removals), by node.",
                &m.nodes_degraded,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (node, v) in values {
                let _ = writeln!(out, "{name}{{node_name=\"{}\"}} {v}", escape(node));
            }
        }
        let name = "imagejob_duration_run_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of a run from start to completion.\n# TYPE {name} histogram"
        );
        for (bound, count) in DURATION_BUCKETS.iter().zip(m.duration_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.duration_count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", m.duration_sum, m.duration_count);
        for (name, help, v) in [
            (
                "scour_controller_leader",
                "1 while this replica holds the lease.",
                m.leader,
            ),
            (
                "scour_controller_config_valid",
                "0 while the config ConfigMap is invalid (no runs start).",
                m.config_valid,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", u8::from(v));
        }
        let name = "scour_controller_watches_failing";
        let _ = writeln!(
            out,
            "# HELP {name} Watches of the leader failing now (the reconcile works from stale data).\n# TYPE {name} gauge\n{name} {}",
            m.watches_failing
        );
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_shows_in_eraser_named_series() {
        let m = Metrics::default();
        m.record_run(&RunOutcome {
            succeeded: 2,
            failed: 1,
            duration_seconds: 45.0,
            nodes: vec![
                NodeOutcome {
                    node: "node-a",
                    removed: 3,
                    vulnerable: 4,
                    degraded: true,
                },
                NodeOutcome {
                    node: "node-b",
                    removed: 0,
                    vulnerable: 0,
                    degraded: false,
                },
            ],
        });
        let text = m.render();
        for line in [
            "imagejob_run_total 1",
            "pods_completed_run_total 2",
            "pods_failed_run_total 1",
            "images_removed_run_total{node_name=\"node-a\"} 3",
            "vulnerable_images_run_total{node_name=\"node-a\"} 4",
            "scour_nodes_degraded_run_total{node_name=\"node-a\"} 1",
            "imagejob_duration_run_seconds_bucket{le=\"30\"} 0",
            "imagejob_duration_run_seconds_bucket{le=\"60\"} 1",
            "imagejob_duration_run_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}

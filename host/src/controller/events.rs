//! Kubernetes Events (`events.k8s.io/v1`) about scour's objects.
//!
//! A repeat of an event (same object, reason and note) within
//! [`SERIES_WINDOW`] is folded into the first one's series, as kubectl shows
//! it ("x3 over 5m"); after that it is a new Event. kube-runtime's recorder
//! keys repeats without the note, so a second, different message would only
//! bump the first one's count: this one keeps every message.
//!
//! Standing problems (an invalid config, a missing system exclusion list)
//! are published when they start, not on every reconcile, and forgotten
//! when they clear, so a problem that comes back is published again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Repeats within this long join the first event's series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// The API server refuses longer notes.
const NOTE_LIMIT: usize = 1024;
pub const REPORTING_CONTROLLER: &str = "scour.dev/controller";
/// Where events about cluster-scoped objects (ImageList, ImageJob) go:
/// events.k8s.io/v1 on a 1.20 API server refuses them in any other
/// namespace (`default` included). `kubectl describe` finds them there.
pub const CLUSTER_SCOPED_EVENTS: &str = "kube-system";

#[derive(Debug, Clone)]
pub struct Event {
    pub regarding: ObjectReference,
    pub warning: bool,
    /// Why, in PascalCase: `RunStarted`, `InvalidConfig`.
    pub reason: &'static str,
    /// What the controller did or would not do, in PascalCase.
    pub action: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    reason: &'static str,
    note: String,
}

struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

pub struct Recorder {
    client: Client,
    instance: String,
    published: HashMap<Key, Published>,
    standing: HashSet<String>,
}

impl Recorder {
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            client,
            instance: instance.to_owned(),
            published: HashMap::new(),
            standing: HashSet::new(),
        }
    }

    /// Records an event; failures are logged, never fatal.
    pub async fn publish(&mut self, event: Event, now: Timestamp) {
        let window = super::clock::sub(now, SERIES_WINDOW);
        self.published.retain(|_, p| p.last > window);
        let note = crate::text::prefix_within(&event.note, NOTE_LIMIT).to_owned();
        let key = Key {
            regarding: (
                event.regarding.kind.clone(),
                event.regarding.namespace.clone(),
                event.regarding.name.clone(),
                event.regarding.uid.clone(),
            ),
            reason: event.reason,
            note: note.clone(),
        };
        let namespace = event
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| CLUSTER_SCOPED_EVENTS.into());
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &namespace);
        let outcome = match self.published.get_mut(&key) {
            Some(p) => {
                p.count += 1;
                p.last = now;
                let patch = json!({ "series": EventSeries { count: p.count, last_observed_time: MicroTime(now) } });
                api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            None => {
                let object = event.regarding.name.clone().unwrap_or_else(|| "scour".into());
                let created = KubeEvent {
                    metadata: ObjectMeta {
                        // The API server makes the name unique.
                        generate_name: Some(format!("{object}-")),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    event_time: Some(MicroTime(now)),
                    action: Some(event.action.into()),
                    reason: Some(event.reason.into()),
                    note: Some(note),
                    regarding: Some(event.regarding),
                    reporting_controller: Some(REPORTING_CONTROLLER.into()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &created).await.map(|e| {
                    self.published.insert(
                        key,
                        Published {
                            name: e.metadata.name.unwrap_or_default(),
                            count: 1,
                            last: now,
                        },
                    );
                })
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(reason = event.reason, "recording an event failed: {e}");
        }
    }

    /// Marks `problem` as standing; true if it was not.
    pub fn stand(&mut self, problem: &str) -> bool {
        self.standing.insert(problem.to_owned())
    }

    /// The problem is gone; if it comes back it is published again.
    pub fn clear(&mut self, problem: &str) {
        self.standing.remove(problem);
    }

    /// Clears every standing problem whose key starts with `prefix` and is
    /// not in `still`.
    pub fn clear_except(&mut self, prefix: &str, still: &HashSet<String>) {
        self.standing.retain(|p| !p.starts_with(prefix) || still.contains(p));
    }
}

//! What the fake knows about each resource type; anything not listed is served generically.

use std::borrow::Cow;

/// What happens to a `status` sent with a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusOnCreate {
    /// Stored as sent.
    Keep,
    /// Dropped (custom resources and workloads with a status subresource).
    Drop,
    /// Replaced by `{"phase": "Pending"}`, as the API server does for pods.
    PodPending,
}

/// Behaviour of one resource type.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub group: &'static str,
    pub plural: &'static str,
    pub kind: Cow<'static, str>,
    /// `None` when unknown: the request path decides.
    pub namespaced: Option<bool>,
    pub status_subresource: bool,
    pub status_on_create: StatusOnCreate,
    /// DELETE answers with the deleted object (pods) rather than a success `Status`.
    pub returns_deleted_object: bool,
    /// Field paths accepted by `fieldSelector`, besides `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

macro_rules! info {
    ($group:literal, $plural:literal, $kind:literal, $namespaced:expr, $sub:expr, $create:ident) => {
        info!($group, $plural, $kind, $namespaced, $sub, $create, false, &[])
    };
    ($group:literal, $plural:literal, $kind:literal, $namespaced:expr, $sub:expr, $create:ident, $ret:expr, $fields:expr) => {
        Info {
            group: $group,
            plural: $plural,
            kind: Cow::Borrowed($kind),
            namespaced: Some($namespaced),
            status_subresource: $sub,
            status_on_create: StatusOnCreate::$create,
            returns_deleted_object: $ret,
            fields: $fields,
        }
    };
}

static KNOWN: &[Info] = &[
    info!("", "pods", "Pod", true, true, PodPending, true, POD_FIELDS),
    info!("", "configmaps", "ConfigMap", true, false, Keep),
    info!("", "secrets", "Secret", true, false, Keep, false, &["type"]),
    info!("", "nodes", "Node", false, true, Keep, false, &["spec.unschedulable"]),
    info!(
        "",
        "namespaces",
        "Namespace",
        false,
        true,
        Keep,
        false,
        &["status.phase"]
    ),
    info!("", "events", "Event", true, false, Keep, false, CORE_EVENT_FIELDS),
    info!("", "services", "Service", true, true, Keep),
    info!("", "serviceaccounts", "ServiceAccount", true, false, Keep),
    info!("coordination.k8s.io", "leases", "Lease", true, false, Keep),
    info!(
        "events.k8s.io",
        "events", "Event", true, false, Keep, false, EVENTS_V1_FIELDS
    ),
    info!("apps", "deployments", "Deployment", true, true, Drop),
    info!("apps", "daemonsets", "DaemonSet", true, true, Drop),
    info!("batch", "jobs", "Job", true, true, Drop),
    info!("eraser.sh", "imagelists", "ImageList", false, true, Drop),
    info!("eraser.sh", "imagejobs", "ImageJob", false, true, Drop),
];

/// The behaviour of `group`/`plural`: a known type, or a custom resource with a status subresource whose kind is
/// `kind` (learnt from stored objects) or guessed from the plural.
pub(crate) fn info(group: &str, plural: &str, kind: Option<&str>) -> Info {
    if let Some(known) = KNOWN.iter().find(|i| i.group == group && i.plural == plural) {
        return known.clone();
    }
    Info {
        group: "",
        plural: "",
        kind: Cow::Owned(kind.map_or_else(|| guess_kind(plural), str::to_string)),
        namespaced: None,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        returns_deleted_object: false,
        fields: &[],
    }
}

/// The plural of a kind in a group: from the table, else kube's own pluralisation.
pub(crate) fn plural_for(group: &str, version: &str, kind: &str) -> String {
    if let Some(known) = KNOWN.iter().find(|i| i.group == group && i.kind == kind) {
        return known.plural.to_string();
    }
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    kube::core::ApiResource::from_gvk(&gvk).plural
}

/// Whether a kind is known to be namespaced (`None` when unknown).
pub(crate) fn namespaced(group: &str, plural: &str) -> Option<bool> {
    KNOWN
        .iter()
        .find(|i| i.group == group && i.plural == plural)
        .and_then(|i| i.namespaced)
}

fn guess_kind(plural: &str) -> String {
    let singular = plural.strip_suffix('s').unwrap_or(plural);
    let mut chars = singular.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

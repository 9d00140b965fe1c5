//! Which nodes a run covers. Label selectors are evaluated by the API
//! server (one list per selector), so they mean exactly what `kubectl -l`
//! means, with no selector parser of our own to drift from it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use super::api::each_page;
use super::error::{Error, Result, api_code};
use crate::config::Loaded;

/// Always part of the node filter, as in Eraser.
pub const CLEANUP_FILTER_LABEL: &str = "eraser.sh/cleanup.filter";

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Why the node is left out, if it is.
    pub skip: Option<String>,
}

/// Every node, each either selected or skipped with a reason, reduced to
/// name and labels as it is read.
pub async fn select(api: &Api<Node>, loaded: &Loaded, config_map: &str) -> Result<Vec<Candidate>> {
    let filter = &loaded.config.manager.node_filter;
    let include = filter.kind.as_deref() == Some("include");
    let mut selectors: Vec<String> = filter.selectors.clone();
    if !selectors.iter().any(|s| s.trim() == CLEANUP_FILTER_LABEL) {
        selectors.push(CLEANUP_FILTER_LABEL.to_owned());
    }
    let mut matched: BTreeMap<String, String> = BTreeMap::new();
    for (i, selector) in selectors.iter().enumerate() {
        let params = ListParams::default().labels(selector);
        each_page(
            params,
            |p| async move { api.list_metadata(&p).await },
            |n| {
                if let Some(name) = n.metadata.name {
                    matched.entry(name).or_insert_with(|| selector.clone());
                }
            },
        )
        .await
        .map_err(|e| match api_code(&e) {
            Some(400) => Error::Config {
                config_map: config_map.to_owned(),
                message: format!("manager.nodeFilter.selectors[{i}]: {selector:?} is not a valid label selector ({e})"),
            },
            _ => e.into(),
        })?;
    }
    let mut out = Vec::new();
    each_page(
        ListParams::default(),
        |p| async move { api.list(&p).await },
        |node| {
            let Some(name) = node.metadata.name.clone() else {
                return;
            };
            let skip = unsupported(&node).or_else(|| match (include, matched.get(&name)) {
                (false, Some(sel)) => Some(format!("matches node filter {sel:?}")),
                (true, None) => Some("matches no node filter selector (include mode)".to_owned()),
                _ => None,
            });
            out.push(Candidate {
                labels: node.metadata.labels.unwrap_or_default(),
                name,
                skip,
            });
        },
    )
    .await?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Windows and virtual-kubelet nodes cannot run the worker.
fn unsupported(node: &Node) -> Option<String> {
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let os = label("kubernetes.io/os").or_else(|| {
        node.status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.operating_system.as_str())
    });
    if os == Some("windows") {
        return Some("Windows node".into());
    }
    let virtual_taint = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key.starts_with("virtual-kubelet.io/")));
    if label("type") == Some("virtual-kubelet") || virtual_taint {
        return Some("virtual-kubelet node".into());
    }
    None
}

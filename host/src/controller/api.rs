//! Helpers over kube's `Api` shared by the controller's parts.

use std::fmt::Debug;
use std::future::Future;

use kube::api::{DeleteParams, ListParams, ObjectList, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::FIELD_MANAGER;
use super::error::api_code;

/// Objects per list request. A Node carries its node's whole image list, so
/// lists are read a page at a time and reduced as they arrive.
const PAGE: u32 = 100;

/// Lists page by page, handing each item to `each` as its page arrives.
pub async fn each_page<T, Fut>(
    params: ListParams,
    mut fetch: impl FnMut(ListParams) -> Fut,
    mut each: impl FnMut(T),
) -> kube::Result<()>
where
    T: Clone,
    Fut: Future<Output = kube::Result<ObjectList<T>>>,
{
    let mut params = params.limit(PAGE);
    loop {
        let page = fetch(params.clone()).await?;
        page.items.into_iter().for_each(&mut each);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Deletes an object; one that is already gone is not an error.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Server-side applies `status` (forced, as the controller's field
/// manager) to the cluster-scoped object `name`, made over
/// `resource_version`: if the object changed since that version was read,
/// the API server refuses it with a 409 rather than let it overwrite the
/// change. It is serialized straight from `status`, and the object the API
/// server sends back is read but not decoded: an ImageJob over many nodes
/// is a big one, and no copy of it is needed.
pub async fn apply_status<K, S>(
    client: &Client,
    name: &str,
    resource_version: Option<&str>,
    status: &S,
) -> kube::Result<()>
where
    K: Resource<DynamicType = ()>,
    S: Serialize + Debug,
{
    let patch = StatusApply {
        api_version: K::api_version(&()),
        kind: K::kind(&()),
        metadata: ApplyMeta { name, resource_version },
        status,
    };
    let request = kube::core::Request::new(K::url_path(&(), None))
        .patch_subresource(
            "status",
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await.map(|_| ())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a, S> {
    api_version: std::borrow::Cow<'static, str>,
    kind: std::borrow::Cow<'static, str>,
    metadata: ApplyMeta<'a>,
    status: &'a S,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyMeta<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
}

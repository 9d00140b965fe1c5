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

/// Server-side applies `patch` (forced, as the controller's field manager)
/// to an object's status. The object the API server sends back is read
/// but not decoded: an ImageJob over many nodes is a big one.
pub async fn apply_status<K, P>(client: &Client, name: &str, patch: &P) -> kube::Result<()>
where
    K: Resource<DynamicType = ()>,
    P: Serialize + Debug,
{
    let request = kube::core::Request::new(K::url_path(&(), None))
        .patch_subresource(
            "status",
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await.map(|_| ())
}

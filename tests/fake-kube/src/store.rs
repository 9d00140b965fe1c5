//! The in-memory object store and the HTTP semantics of the fake API server.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Uri};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::patch::{json_patch, merge_patch};
use crate::resources::{self, Info, StatusOnCreate};
use crate::selector::{FieldSelector, LabelSelector, is_dns_subdomain};

/// (group, plural) of a resource type.
pub(crate) type ResKey = (String, String);
/// (namespace, or "" when cluster-scoped; name) of an object.
pub(crate) type ObjKey = (String, String);

/// An HTTP answer: status code and JSON body.
pub(crate) struct Reply {
    pub code: u16,
    pub body: Vec<u8>,
}

impl Reply {
    fn json<T: Serialize + ?Sized>(code: u16, body: &T) -> Self {
        Self {
            code,
            body: serde_json::to_vec(body).expect("JSON values always serialize"),
        }
    }

    /// A failure with a `Status` body, which kube turns into `kube::Error::Api`.
    pub(crate) fn status(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "reason": reason,
            "code": code,
        });
        if let Some(details) = details {
            status["details"] = details;
        }
        Self::json(code, &status)
    }
}

/// The `reason` the API server pairs with an HTTP status code.
pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

struct Failure {
    method: Method,
    path_contains: String,
    code: u16,
    remaining: usize,
}

/// Everything the fake API server holds.
pub(crate) struct Store {
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    /// Kinds learnt from stored objects, for types the resource table does not know.
    kinds: HashMap<ResKey, String>,
    resource_version: u64,
    uids: u64,
    rng: u64,
    requests: Vec<(Method, String)>,
    failures: Vec<Failure>,
}

impl Default for Store {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            objects: HashMap::new(),
            kinds: HashMap::new(),
            resource_version: 0,
            uids: 0,
            rng: seed | 1,
            requests: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// The request's target, as parsed from its path.
#[derive(Clone)]
struct Ctx {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    info: Info,
    dry_run: bool,
    meta_only: bool,
}

impl Ctx {
    fn res_key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    fn obj_key(&self, name: &str) -> ObjKey {
        (self.namespace.clone().unwrap_or_default(), name.to_string())
    }

    fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// "pods" or "imagelists.eraser.sh", as in the API server's messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        json!({"name": name, "group": self.group, "kind": self.plural})
    }

    fn not_found(&self, name: &str) -> Reply {
        let message = format!("{} \"{name}\" not found", self.qualified());
        Reply::status(404, "NotFound", message, Some(self.details(name)))
    }

    fn conflict(&self, name: &str, why: &str) -> Reply {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            self.qualified()
        );
        Reply::status(409, "Conflict", message, Some(self.details(name)))
    }

    fn invalid(&self, name: &str, why: impl std::fmt::Display) -> Reply {
        let message = format!("{} \"{name}\" is invalid: {why}", self.info.kind);
        Reply::status(422, "Invalid", message, Some(self.details(name)))
    }

    /// The object as the client asked to see it: whole, or only its metadata.
    fn present<'a>(&self, obj: &'a Value) -> Cow<'a, Value> {
        if self.meta_only {
            Cow::Owned(json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }))
        } else {
            Cow::Borrowed(obj)
        }
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The current time as RFC 3339 with whole seconds, as Kubernetes writes timestamps.
pub(crate) fn now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .expect("the current time is a valid timestamp")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let obj = obj.as_object_mut().expect("stored objects are JSON objects");
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

fn has_finalizers(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Whether two objects are equal apart from metadata and, when `skip_status`, status.
fn same_spec(a: &Value, b: &Value, skip_status: bool) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let relevant = |(k, _): &(&String, &Value)| k.as_str() != "metadata" && !(skip_status && k.as_str() == "status");
    a.iter().filter(relevant).count() == b.iter().filter(relevant).count()
        && a.iter().filter(relevant).all(|(k, v)| b.get(k) == Some(v))
}

/// Copies `from`'s status into `to`, or removes `to`'s status when `from` has none.
fn copy_status(from: &Value, to: &mut Value) {
    let to = to.as_object_mut().expect("objects are JSON objects");
    match from.get("status") {
        Some(status) => {
            to.insert("status".into(), status.clone());
        }
        None => {
            to.remove("status");
        }
    }
}

enum PatchType {
    Merge,
    Json,
    Apply,
}

impl Store {
    // ----- direct access, used by `FakeApi` -----

    /// Every request seen so far.
    pub(crate) fn requests(&self) -> Vec<(Method, String)> {
        self.requests.clone()
    }

    pub(crate) fn clear_requests(&mut self) {
        self.requests.clear();
    }

    pub(crate) fn fail_next(&mut self, method: Method, path_contains: &str, code: u16, count: usize) {
        self.failures.push(Failure {
            method,
            path_contains: path_contains.to_string(),
            code,
            remaining: count,
        });
    }

    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        let r = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            r >> 32,
            (r >> 16) & 0xffff,
            r & 0xfff,
            0x8000 | (self.uids >> 48) & 0x3fff,
            self.uids & 0xffff_ffff_ffff
        )
    }

    fn random_suffix(&mut self) -> String {
        // The alphabet the API server uses for generateName: no vowels, no confusable characters.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.next_random() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// Fills the server-set metadata that is absent.
    fn fill_metadata(&mut self, obj: &mut Value) {
        let uid = self.next_uid();
        let rv = self.next_resource_version();
        let meta = metadata_mut(obj);
        meta.entry("uid").or_insert(Value::String(uid));
        meta.entry("resourceVersion").or_insert(Value::String(rv));
        meta.entry("creationTimestamp").or_insert_with(|| Value::String(now()));
        meta.entry("generation").or_insert(json!(1));
    }

    /// Stores an object as-is (bar missing server-set metadata), inferring its resource from apiVersion and kind.
    pub(crate) fn seed(&mut self, mut obj: Value) -> Result<(), String> {
        if !obj.is_object() {
            return Err(format!("seeded objects must serialize to a JSON object, not {obj}"));
        }
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or("the object has no apiVersion")?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("the object has no kind")?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = resources::plural_for(group, version, kind);
        let res_key = (group.to_string(), plural.clone());
        let kind = kind.to_string();
        let name = meta_str(&obj, "name")
            .filter(|n| !n.is_empty())
            .ok_or("the object has no metadata.name")?;
        let name = name.to_string();
        let namespace = match (meta_str(&obj, "namespace"), resources::namespaced(&res_key.0, &plural)) {
            (_, Some(false)) => String::new(),
            (Some(ns), _) => ns.to_string(),
            (None, Some(true)) => "default".to_string(),
            (None, None) => String::new(),
        };
        if !namespace.is_empty() {
            metadata_mut(&mut obj).insert("namespace".into(), Value::String(namespace.clone()));
        }
        self.fill_metadata(&mut obj);
        self.kinds.entry(res_key.clone()).or_insert(kind);
        self.objects.entry(res_key).or_default().insert((namespace, name), obj);
        Ok(())
    }

    pub(crate) fn get(&self, res: &ResKey, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .get(res)?
            .get(&(ns.unwrap_or_default().to_string(), name.to_string()))
    }

    pub(crate) fn list(&self, res: &ResKey) -> Vec<Value> {
        self.objects
            .get(res)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn remove(&mut self, res: &ResKey, ns: Option<&str>, name: &str) -> bool {
        let key = (ns.unwrap_or_default().to_string(), name.to_string());
        self.objects.get_mut(res).and_then(|m| m.remove(&key)).is_some()
    }

    /// Changes a stored object in place and bumps its resourceVersion; false when there is no such object.
    pub(crate) fn update(&mut self, res: &ResKey, ns: Option<&str>, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        let rv = self.resource_version + 1;
        let key = (ns.unwrap_or_default().to_string(), name.to_string());
        let Some(obj) = self.objects.get_mut(res).and_then(|m| m.get_mut(&key)) else {
            return false;
        };
        f(obj);
        metadata_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.resource_version = rv;
        true
    }

    // ----- HTTP -----

    /// Answers one API request.
    pub(crate) fn handle(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
        let path_and_query = uri.path_and_query().map_or_else(|| uri.path(), |p| p.as_str());
        self.requests.push((method.clone(), path_and_query.to_string()));
        if let Some(failure) = self
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && path_and_query.contains(&f.path_contains))
        {
            failure.remaining -= 1;
            let code = failure.code;
            self.failures.retain(|f| f.remaining > 0);
            let message = format!("injected failure {code} for {method} {path_and_query} (fake API server)");
            return Reply::status(code, reason_for(code), message, None);
        }

        let query: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let Some(ctx) = self.parse_target(method, uri.path(), &query, headers) else {
            let message = format!(
                "the server could not find the requested resource ({method} {})",
                uri.path()
            );
            return Reply::status(404, "NotFound", message, None);
        };
        if let Some(sub) = &ctx.sub
            && !(sub == "status" && ctx.info.status_subresource)
        {
            let message = format!(
                "the fake API server does not serve the {sub} subresource of {}",
                ctx.qualified()
            );
            return Reply::status(404, "NotFound", message, None);
        }
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let result = match (method.as_str(), ctx.name.clone()) {
            ("GET", _) if watch => Err(Reply::status(
                405,
                "MethodNotAllowed",
                "the fake API server does not support watch requests; poll with list instead",
                None,
            )),
            ("GET", Some(name)) => match self.get(&ctx.res_key(), ctx.namespace.as_deref(), &name) {
                Some(obj) => Ok(Reply::json(200, &ctx.present(obj))),
                None => Err(ctx.not_found(&name)),
            },
            ("GET", None) => self.list_request(&ctx, &query),
            ("POST", None) => parse_body(body).and_then(|obj| {
                let created = self.create(&ctx, obj)?;
                Ok(Reply::json(201, &ctx.present(&created)))
            }),
            ("PUT", Some(name)) => parse_body(body).and_then(|obj| self.replace(&ctx, &name, obj)),
            ("PATCH", Some(name)) => self.patch(&ctx, &name, headers, body),
            ("DELETE", Some(name)) => self.delete_request(&ctx, &name, body),
            ("DELETE", None) => self.delete_collection(&ctx, &query, body),
            _ => Err(Reply::status(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported on {}", uri.path()),
                None,
            )),
        };
        result.unwrap_or_else(|e| e)
    }

    fn parse_target(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Option<Ctx> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, more @ ..] if !(more.is_empty() && ["status", "finalize"].contains(plural)) => {
                (Some(ns.to_string()), &rest[2..])
            }
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return None,
        };
        let res_key = (group.to_string(), plural.to_string());
        let info = resources::info(group, plural, self.kinds.get(&res_key).map(String::as_str));
        match (info.namespaced, &namespace) {
            (Some(false), Some(_)) => return None,
            // Only listing spans namespaces.
            (Some(true), None) if !(method == Method::GET && name.is_none()) => return None,
            _ => {}
        }
        let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
        let meta_only = headers
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        Some(Ctx {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace,
            name,
            sub,
            info,
            dry_run,
            meta_only,
        })
    }

    /// Parses `labelSelector` and `fieldSelector`; a malformed one is a 400.
    fn selectors(ctx: &Ctx, query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), Reply> {
        let bad = |what: &str, value: &str, e: String| {
            Reply::status(
                400,
                "BadRequest",
                format!("unable to parse {what} \"{value}\": {e}"),
                None,
            )
        };
        let labels = match query.get("labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(|e| bad("labelSelector", s, e))?,
            None => LabelSelector::default(),
        };
        let fields = match query.get("fieldSelector") {
            Some(s) => {
                let mut supported = vec!["metadata.name", "metadata.namespace"];
                supported.extend_from_slice(ctx.info.fields);
                FieldSelector::parse(s, &supported).map_err(|e| bad("fieldSelector", s, e))?
            }
            None => FieldSelector::default(),
        };
        Ok((labels, fields))
    }

    /// The stored objects in the request's namespace (all namespaces when it has none) that the selectors pick,
    /// starting after `after`.
    fn select<'a>(
        &'a self,
        ctx: &'a Ctx,
        selectors: &'a (LabelSelector, FieldSelector),
        after: Option<ObjKey>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let lower = match (after, &ctx.namespace) {
            (Some(after), _) => Bound::Excluded(after),
            (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        self.objects
            .get(&ctx.res_key())
            .into_iter()
            .flat_map(move |m| m.range((lower.clone(), Bound::Unbounded)))
            .take_while(|(k, _)| ctx.namespace.as_ref().is_none_or(|ns| &k.0 == ns))
            .filter(|(_, v)| selectors.0.matches(labels(v)) && selectors.1.matches(v))
    }

    fn list_request(&self, ctx: &Ctx, query: &HashMap<String, String>) -> Result<Reply, Reply> {
        let selectors = Self::selectors(ctx, query)?;
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None => None,
            Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(Reply::status(
                    400,
                    "BadRequest",
                    "limit must be a non-negative integer",
                    None,
                ));
            }
        };
        let after = match query.get("continue").filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => {
                let key = token
                    .split_once('/')
                    .filter(|(ns, _)| ctx.namespace.as_ref().is_none_or(|n| n == ns))
                    .ok_or_else(|| {
                        Reply::status(400, "BadRequest", format!("invalid continue token {token:?}"), None)
                    })?;
                Some((key.0.to_string(), key.1.to_string()))
            }
        };
        let mut matched = self.select(ctx, &selectors, after);
        let items: Vec<(&ObjKey, &Value)> = match limit {
            Some(n) => matched.by_ref().take(n).collect(),
            None => matched.by_ref().collect(),
        };
        let mut metadata = json!({"resourceVersion": self.resource_version.to_string()});
        if limit.is_some()
            && matched.next().is_some()
            && let Some((last, _)) = items.last()
        {
            metadata["continue"] = Value::String(format!("{}/{}", last.0, last.1));
        }
        let (api_version, kind) = if ctx.meta_only {
            ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
        } else {
            (ctx.api_version(), format!("{}List", ctx.info.kind))
        };
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct List<'a> {
            api_version: String,
            kind: String,
            metadata: Value,
            items: Vec<Cow<'a, Value>>,
        }
        Ok(Reply::json(
            200,
            &List {
                api_version,
                kind,
                metadata,
                items: items.into_iter().map(|(_, v)| ctx.present(v)).collect(),
            },
        ))
    }

    /// POST: stores a new object (or, when `ctx.dry_run`, only validates it).
    fn create(&mut self, ctx: &Ctx, mut obj: Value) -> Result<Value, Reply> {
        if ctx.name.is_some() || ctx.sub.is_some() {
            return Err(Reply::status(
                405,
                "MethodNotAllowed",
                "POST is only supported on collections",
                None,
            ));
        }
        let top = obj.as_object_mut().expect("parse_body only yields objects");
        top.entry("apiVersion")
            .or_insert_with(|| Value::String(ctx.api_version()));
        let kind = top
            .entry("kind")
            .or_insert_with(|| Value::String(ctx.info.kind.to_string()));
        let kind = kind.as_str().unwrap_or_default().to_string();
        // Only types from the resource table have a known scope, and a kind to check against.
        if ctx.info.namespaced.is_some() && kind != ctx.info.kind {
            let message = format!(
                "the kind {kind:?} does not match the resource {} ({})",
                ctx.qualified(),
                ctx.info.kind
            );
            return Err(Reply::status(400, "BadRequest", message, None));
        }
        let generated = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(_) => None,
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => Some(prefix.to_string()),
                None => return Err(ctx.invalid("", "metadata.name: Required value: name or generateName is required")),
            },
        };
        if let Some(prefix) = generated {
            let name = loop {
                let name = format!("{prefix}{}", self.random_suffix());
                if self.get(&ctx.res_key(), ctx.namespace.as_deref(), &name).is_none() {
                    break name;
                }
            };
            metadata_mut(&mut obj).insert("name".into(), Value::String(name));
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        self.check_namespace(ctx, &mut obj)?;
        if !is_dns_subdomain(&name) {
            return Err(ctx.invalid(
                &name,
                format!("metadata.name: Invalid value: {name:?}: must be a lowercase RFC 1123 subdomain"),
            ));
        }
        if ctx.group.is_empty() && ctx.plural == "events" {
            check_core_event(ctx, &name, &obj)?;
        }
        if self.get(&ctx.res_key(), ctx.namespace.as_deref(), &name).is_some() {
            let message = format!("{} \"{name}\" already exists", ctx.qualified());
            return Err(Reply::status(409, "AlreadyExists", message, Some(ctx.details(&name))));
        }
        let top = obj.as_object_mut().expect("an object");
        match ctx.info.status_on_create {
            StatusOnCreate::Keep => {}
            StatusOnCreate::Drop => {
                top.remove("status");
            }
            StatusOnCreate::PodPending => {
                top.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
        let uid = self.next_uid();
        let meta = metadata_mut(&mut obj);
        for server_set in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(server_set);
        }
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(now()));
        meta.insert("generation".into(), json!(1));
        if !ctx.dry_run {
            let rv = self.next_resource_version();
            metadata_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv));
            self.kinds.entry(ctx.res_key()).or_insert(kind);
            self.objects
                .entry(ctx.res_key())
                .or_default()
                .insert(ctx.obj_key(&name), obj.clone());
        }
        Ok(obj)
    }

    /// Checks the body's namespace against the path's and sets it from the path.
    fn check_namespace(&self, ctx: &Ctx, obj: &mut Value) -> Result<(), Reply> {
        let meta = metadata_mut(obj);
        match &ctx.namespace {
            Some(ns) => {
                if meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|b| !b.is_empty() && b != ns)
                {
                    return Err(Reply::status(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                        None,
                    ));
                }
                meta.insert("namespace".into(), Value::String(ns.clone()));
            }
            None => {
                meta.remove("namespace");
            }
        }
        Ok(())
    }

    fn stored(&self, ctx: &Ctx, name: &str) -> Result<Value, Reply> {
        self.get(&ctx.res_key(), ctx.namespace.as_deref(), name)
            .cloned()
            .ok_or_else(|| ctx.not_found(name))
    }

    /// 409 when `candidate` carries a resourceVersion other than the stored one.
    fn check_resource_version(ctx: &Ctx, name: &str, stored: &Value, candidate: &Value) -> Result<(), Reply> {
        match meta_str(candidate, "resourceVersion").filter(|rv| !rv.is_empty()) {
            Some(rv) if Some(rv) != meta_str(stored, "resourceVersion") => Err(ctx.conflict(
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )),
            _ => Ok(()),
        }
    }

    fn replace(&mut self, ctx: &Ctx, name: &str, body: Value) -> Result<Reply, Reply> {
        let stored = self.stored(ctx, name)?;
        if let Some(body_name) = meta_str(&body, "name").filter(|n| *n != name) {
            let message = format!("the name of the object ({body_name}) does not match the name on the URL ({name})");
            return Err(Reply::status(400, "BadRequest", message, None));
        }
        Self::check_resource_version(ctx, name, &stored, &body)?;
        let new = self.merge_into(ctx, &stored, body)?;
        let updated = self.commit_update(ctx, name, &stored, new)?;
        Ok(Reply::json(200, &ctx.present(&updated)))
    }

    /// The object an update of `stored` with `candidate` produces: the main resource keeps the stored status (when
    /// the kind has a status subresource); `/status` changes only the status.
    fn merge_into(&self, ctx: &Ctx, stored: &Value, mut candidate: Value) -> Result<Value, Reply> {
        if !candidate.is_object() {
            return Err(Reply::status(
                400,
                "BadRequest",
                "the object must be a JSON object",
                None,
            ));
        }
        if ctx.sub.is_some() {
            let mut new = stored.clone();
            copy_status(&candidate, &mut new);
            return Ok(new);
        }
        if ctx.info.status_subresource {
            copy_status(stored, &mut candidate);
        }
        self.check_namespace(ctx, &mut candidate)?;
        Ok(candidate)
    }

    /// Stores `new` in place of `old`, keeping server-set metadata, bumping generation on spec changes and
    /// resourceVersion on any change. A no-op update changes nothing, as on a real API server.
    fn commit_update(&mut self, ctx: &Ctx, name: &str, old: &Value, mut new: Value) -> Result<Value, Reply> {
        let top = new.as_object_mut().expect("an object");
        for field in ["apiVersion", "kind"] {
            if let Some(v) = old.get(field) {
                top.entry(field).or_insert_with(|| v.clone());
            }
        }
        let skip_status = ctx.info.status_subresource;
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let generation = if same_spec(old, &new, skip_status) {
            generation
        } else {
            generation + 1
        };
        let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
        let meta = metadata_mut(&mut new);
        meta.insert("name".into(), Value::String(name.to_string()));
        for kept in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
        ] {
            match old_meta.get(kept) {
                Some(v) => meta.insert(kept.into(), v.clone()),
                None => meta.remove(kept),
            };
        }
        meta.insert("generation".into(), json!(generation));
        meta.insert(
            "resourceVersion".into(),
            old_meta.get("resourceVersion").cloned().unwrap_or(Value::Null),
        );
        if new == *old {
            return Ok(new);
        }
        if new["metadata"].get("deletionTimestamp").is_some()
            && let Some(added) = new["metadata"]["finalizers"].as_array().and_then(|f| {
                let before = old["metadata"]["finalizers"].as_array();
                f.iter().find(|x| before.is_none_or(|b| !b.contains(x))).cloned()
            })
        {
            return Err(ctx.invalid(
                name,
                format!("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizer {added}"),
            ));
        }
        if ctx.dry_run {
            return Ok(new);
        }
        let rv = self.next_resource_version();
        metadata_mut(&mut new).insert("resourceVersion".into(), Value::String(rv));
        let objects = self.objects.entry(ctx.res_key()).or_default();
        if new["metadata"].get("deletionTimestamp").is_some() && !has_finalizers(&new) {
            objects.remove(&ctx.obj_key(name));
        } else {
            objects.insert(ctx.obj_key(name), new.clone());
        }
        Ok(new)
    }

    fn patch(&mut self, ctx: &Ctx, name: &str, headers: &HeaderMap, body: &[u8]) -> Result<Reply, Reply> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default();
        let patch_type = match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/apply-patch+yaml" => PatchType::Apply,
            other => {
                let message = format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                );
                return Err(Reply::status(415, "UnsupportedMediaType", message, None));
            }
        };
        let patch: Value = serde_json::from_slice(body).map_err(|e| {
            Reply::status(
                400,
                "BadRequest",
                format!("the patch is not valid JSON (the fake accepts JSON only): {e}"),
                None,
            )
        })?;
        let stored = match self.get(&ctx.res_key(), ctx.namespace.as_deref(), name) {
            Some(stored) => stored.clone(),
            None if matches!(patch_type, PatchType::Apply) && ctx.sub.is_none() => {
                // Server-side apply creates missing objects.
                let mut obj = json!({"metadata": {"name": name}});
                merge_patch(&mut obj, &patch);
                if meta_str(&obj, "name") != Some(name) {
                    return Err(ctx.invalid(name, "metadata.name: Invalid value: must match the name on the URL"));
                }
                let create_ctx = Ctx {
                    name: None,
                    ..ctx.clone()
                };
                let created = self.create(&create_ctx, obj)?;
                return Ok(Reply::json(201, &ctx.present(&created)));
            }
            None => return Err(ctx.not_found(name)),
        };
        let patched = match patch_type {
            PatchType::Json => json_patch(&stored, &patch).map_err(|e| ctx.invalid(name, e))?,
            PatchType::Merge | PatchType::Apply => {
                let mut patched = stored.clone();
                merge_patch(&mut patched, &patch);
                patched
            }
        };
        if !patched.is_object() {
            return Err(ctx.invalid(name, "the patched object is not a JSON object"));
        }
        if meta_str(&patched, "name").is_some_and(|n| n != name) {
            return Err(ctx.invalid(name, "metadata.name: Invalid value: field is immutable"));
        }
        Self::check_resource_version(ctx, name, &stored, &patched)?;
        let new = self.merge_into(ctx, &stored, patched)?;
        let updated = self.commit_update(ctx, name, &stored, new)?;
        Ok(Reply::json(200, &ctx.present(&updated)))
    }

    /// Deletes one object, or marks it for deletion while it has finalizers. Returns what DELETE answers.
    fn delete_one(&mut self, ctx: &Ctx, key: &ObjKey, options: &Value) -> Result<Value, Reply> {
        let name = key.1.as_str();
        let stored = self.stored(ctx, name)?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let wanted = options["preconditions"][field].as_str().filter(|s| !s.is_empty());
            if let Some(wanted) = wanted
                && Some(wanted) != meta_str(&stored, field)
            {
                let why = format!(
                    "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                    meta_str(&stored, field).unwrap_or_default()
                );
                return Err(ctx.conflict(name, &why));
            }
        }
        let dry_run = ctx.dry_run
            || options["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"));
        if has_finalizers(&stored) {
            if stored["metadata"].get("deletionTimestamp").is_some() || dry_run {
                return Ok(stored);
            }
            let rv = self.next_resource_version();
            let mut marked = stored;
            let meta = metadata_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.insert("resourceVersion".into(), Value::String(rv));
            self.objects
                .entry(ctx.res_key())
                .or_default()
                .insert(key.clone(), marked.clone());
            return Ok(marked);
        }
        if !dry_run {
            self.objects.entry(ctx.res_key()).or_default().remove(key);
        }
        Ok(stored)
    }

    fn delete_request(&mut self, ctx: &Ctx, name: &str, body: &[u8]) -> Result<Reply, Reply> {
        let options = if body.is_empty() { json!({}) } else { parse_body(body)? };
        let deleted = self.delete_one(ctx, &ctx.obj_key(name), &options)?;
        if ctx.info.returns_deleted_object || has_finalizers(&deleted) {
            return Ok(Reply::json(200, &ctx.present(&deleted)));
        }
        let mut details = ctx.details(name);
        details["uid"] = json!(meta_str(&deleted, "uid"));
        Ok(Reply::json(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ))
    }

    fn delete_collection(&mut self, ctx: &Ctx, query: &HashMap<String, String>, body: &[u8]) -> Result<Reply, Reply> {
        let options = if body.is_empty() { json!({}) } else { parse_body(body)? };
        let selectors = Self::selectors(ctx, query)?;
        let keys: Vec<ObjKey> = self.select(ctx, &selectors, None).map(|(k, _)| k.clone()).collect();
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let item_ctx = Ctx {
                namespace: (!key.0.is_empty()).then(|| key.0.clone()),
                name: Some(key.1.clone()),
                ..ctx.clone()
            };
            let deleted = self.delete_one(&item_ctx, &key, &options)?;
            items.push(ctx.present(&deleted).into_owned());
        }
        Ok(Reply::json(
            200,
            &json!({
                "apiVersion": ctx.api_version(),
                "kind": format!("{}List", ctx.info.kind),
                "metadata": {"resourceVersion": self.resource_version.to_string()},
                "items": items,
            }),
        ))
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Reply::status(
            400,
            "BadRequest",
            "the request body must be a JSON object",
            None,
        )),
        Err(e) => Err(Reply::status(
            400,
            "BadRequest",
            format!("the request body is not valid JSON: {e}"),
            None,
        )),
    }
}

/// The API server's rule for core/v1 Events without `eventTime`: an event
/// about a cluster-scoped object lives in `default`, one about a namespaced
/// object in that object's namespace.
fn check_core_event(ctx: &Ctx, name: &str, obj: &Value) -> Result<(), Reply> {
    if obj.get("eventTime").is_some_and(|t| !t.is_null()) {
        return Ok(());
    }
    let involved = obj["involvedObject"]["namespace"].as_str().unwrap_or("");
    let namespace = ctx.namespace.as_deref().unwrap_or("");
    let ok = if involved.is_empty() {
        namespace.is_empty() || namespace == "default"
    } else {
        namespace == involved
    };
    if ok {
        Ok(())
    } else {
        Err(ctx.invalid(
            name,
            format!("involvedObject.namespace: Invalid value: {involved:?}: does not match event.namespace"),
        ))
    }
}

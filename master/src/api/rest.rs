//! REST handlers: create, get, list, update, patch, delete, deletecollection, the status,
//! scale and binding subresources, bootstrap objects and the namespace controller.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::{Server, Target, json_response, object_key, semantics, services, typed_response};
use crate::resources::{
    FieldError, PatchType, RESOURCES, ResourceInfo, convert, find, is_storage, storage_of,
};
use crate::store::{KeyValue, StoreError};

/// What every handler gets.
pub(crate) struct Ctx<'a> {
    pub(crate) server: &'a std::sync::Arc<Server>,
    pub(crate) target: &'a Target,
    pub(crate) query: &'a HashMap<String, String>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) accept: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn info(&self) -> &'static ResourceInfo {
        self.target.info
    }
    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    /// The field manager of a create/update/non-apply patch: `fieldManager`, else the
    /// client's user agent up to the first `/` (as the apiserver derives it). None for
    /// server-side apply, whose ownership `apply_patch` records itself.
    fn update_manager(&self) -> Option<String> {
        let ct = self
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if ct.starts_with("application/apply-patch") {
            return None;
        }
        if let Some(m) = self.q("fieldManager") {
            return Some(m.to_string());
        }
        let ua = self
            .headers
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        Some(ua.split('/').next().unwrap_or("unknown").to_string())
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }
    fn not_found(&self) -> ApiError {
        ApiError::not_found(self.info().group, self.info().plural, self.name())
    }
}

/// The current time as Kubernetes writes it.
pub(crate) fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A random (v4) UUID.
fn uuid_v4() -> Result<String, ApiError> {
    let mut b =
        crate::certs::random_bytes::<16>().map_err(|e| ApiError::internal(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Five characters for generateName, from Kubernetes' alphabet.
fn name_suffix() -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let b = crate::certs::random_bytes::<5>().map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect())
}

/// The stored object with its resourceVersion.
pub(crate) fn decode_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    set_rv(&mut v, kv.mod_revision);
    Ok(v)
}

fn set_rv(v: &mut Value, rev: u64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

/// The bytes to store: the object without its resourceVersion.
pub(crate) fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Parses a request body: JSON, or YAML or Kubernetes protobuf when the content type says so.
pub(crate) fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let v: Value = if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
    } else if super::protobuf::is_protobuf(ct) {
        super::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("the protobuf body could not be decoded: {e}"))
        })?
    } else if ct.starts_with("application/json") || ct.is_empty() || ct == "*/*" {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    } else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct})"
            ),
        ));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// Checks apiVersion/kind of a body against the URL's resource, filling them in if absent.
fn check_kind(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => obj["apiVersion"] = json!(want_av),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        _ => obj["kind"] = json!(info.kind),
    }
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    Ok(())
}

/// fieldValidation: Strict rejects unknown fields, Warn returns them as warnings.
fn field_validation(ctx: &Ctx<'_>, obj: &Value) -> Result<Vec<String>, ApiError> {
    let mode = ctx.q("fieldValidation").unwrap_or("Warn");
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown = semantics::unknown_fields(ctx.info(), obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown.iter().map(|f| f.message.clone()).collect();
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        )));
    }
    Ok(msgs)
}

fn invalid(info: &ResourceInfo, name: &str, errs: &[FieldError]) -> ApiError {
    ApiError::invalid(info.group, info.kind, name, errs)
}

/// The response for one object: JSON, or a Table when asked for.
fn respond(ctx: &Ctx<'_>, code: StatusCode, obj: &Value, warnings: &[String]) -> Response {
    let mut converted;
    let mut obj = obj;
    if !is_storage(ctx.info()) {
        converted = obj.clone();
        convert(ctx.info(), &mut converted);
        obj = &converted;
    }
    let body = if wants_table(ctx.accept) {
        let mut t = make_table(
            ctx.info(),
            ctx.q("includeObject").unwrap_or("Metadata"),
            std::slice::from_ref(obj),
        );
        if let Some(rv) = meta_str(obj, "resourceVersion") {
            t["metadata"]["resourceVersion"] = json!(rv);
        }
        t
    } else {
        obj.clone()
    };
    let mut r = json_response(code, &body);
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

/// Whether the client asks for a meta.k8s.io Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|a| a.contains("as=Table") && a.contains("g=meta.k8s.io"))
}

/// A Table of `items`, with rows' objects as `includeObject` asks (default Metadata).
pub(crate) fn make_table(info: &'static ResourceInfo, include: &str, items: &[Value]) -> Value {
    // the columns are computed from the storage version
    let storage = storage_of(info);
    let mut t = if is_storage(info) {
        semantics::table(info, items, Utc::now())
    } else {
        let stored: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut i = i.clone();
                convert(storage, &mut i);
                i
            })
            .collect();
        semantics::table(storage, &stored, Utc::now())
    };
    if let Some(rows) = t.get_mut("rows").and_then(Value::as_array_mut) {
        for (row, item) in rows.iter_mut().zip(items) {
            match include {
                "None" => {
                    if let Some(o) = row.as_object_mut() {
                        o.remove("object");
                    }
                }
                "Object" => row["object"] = item.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
        }
    }
    t
}

/// Requires the namespace to exist (and not be terminating) for a create.
async fn check_namespace(
    server: &Server,
    info: &ResourceInfo,
    ns: &str,
    create: bool,
) -> Result<(), ApiError> {
    if !info.namespaced {
        return Ok(());
    }
    let Some(nsinfo) = find("", "namespaces") else {
        return Ok(());
    };
    let Some(kv) = server.store.get(&object_key(nsinfo, None, ns)).await? else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    if create {
        let o = decode_kv(&kv)?;
        if o.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
    }
    Ok(())
}

/// Creates `obj` (already kind-checked) in `ns`: naming, metadata, semantics, allocation,
/// store. Returns the stored object.
pub(crate) async fn create_object(
    server: &Server,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
    manager: Option<&str>,
) -> Result<Value, ApiError> {
    // objects are kept in the storage version; callers convert the result back
    let info = storage_of(info);
    convert(info, &mut obj);
    if info.namespaced {
        let ns = ns.unwrap_or("default");
        match meta_str(&obj, "namespace") {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let has_name = meta_str(&obj, "name").is_some_and(|n| !n.is_empty());
    if !has_name {
        match meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
            Some(g) => obj["metadata"]["name"] = json!(format!("{g}{}", name_suffix()?)),
            None => {
                return Err(invalid(
                    info,
                    "",
                    &[FieldError {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        }
    }
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        m.insert("uid".into(), json!(uuid_v4()?));
        m.insert("creationTimestamp".into(), json!(now_ts()));
        m.insert("generation".into(), json!(1));
    }
    if info.kind == "Namespace" {
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        obj["status"] = json!({"phase": "Active"});
    }
    if let Some(ns) = ns.filter(|_| info.namespaced) {
        check_namespace(server, info, ns, true).await?;
    }
    if info.kind == "Pod" {
        let seconds = server
            .default_toleration_seconds
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::resources::defaults::default_tolerations(&mut obj, seconds);
        super::serviceaccount::admit(server, ns.unwrap_or("default"), &mut obj).await?;
    }
    semantics::prepare_create(info, &mut obj).map_err(|e| invalid(info, &name, &e))?;
    if let Some(m) = manager {
        semantics::track_update(info, &json!({}), &mut obj, m);
    }
    let key = object_key(info, ns, &name);
    let _guard = if info.kind == "Service" {
        let g = server.alloc_lock.lock().await;
        services::allocate(server, &key, &mut obj, None).await?;
        Some(g)
    } else {
        None
    };
    if dry_run {
        if server.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(info.group, info.plural, &name));
        }
        return Ok(obj);
    }
    let kv = match server.store.create(&key, encode(&obj)?).await {
        Ok(kv) => kv,
        Err(StoreError::AlreadyExists(_)) => {
            return Err(ApiError::already_exists(info.group, info.plural, &name));
        }
        Err(e) => return Err(e.into()),
    };
    set_rv(&mut obj, kv.mod_revision);
    if info.kind == "Namespace" {
        ensure_default_service_account(server, &name).await?;
    }
    Ok(obj)
}

/// Makes the namespace's `default` ServiceAccount unless it has one (the ServiceAccounts
/// controller's job upstream; done with the namespace so that its first pod finds it).
async fn ensure_default_service_account(server: &Server, ns: &str) -> Result<(), ApiError> {
    let info = find("", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts not served"))?;
    if server
        .store
        .get(&object_key(info, Some(ns), "default"))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let sa = super::serviceaccount::default_account(ns);
    match Box::pin(create_object(server, info, Some(ns), sa, false, None)).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// POST on a collection (and the binding subresource).
pub(crate) async fn create(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    let info = ctx.info();
    match ctx.target.sub.as_deref() {
        None if ctx.target.name.is_none() => {}
        Some("binding") => return binding(ctx, body).await,
        Some("eviction") if info.plural == "pods" => {
            return super::eviction::evict(ctx, body).await;
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let mut obj = decode_body(ctx.headers, body)?;
    check_kind(info, &mut obj)?;
    let warnings = field_validation(ctx, &obj)?;
    let ns = ctx.target.namespace.clone();
    if info.namespaced && ns.is_none() {
        // POST /api/v1/pods: take the body's namespace
        let ns = meta_str(&obj, "namespace").unwrap_or("default").to_string();
        let obj = create_object(
            ctx.server,
            info,
            Some(&ns),
            obj,
            ctx.dry_run(),
            ctx.update_manager().as_deref(),
        )
        .await?;
        return Ok(respond(ctx, StatusCode::CREATED, &obj, &warnings));
    }
    let obj = create_object(
        ctx.server,
        info,
        ns.as_deref(),
        obj,
        ctx.dry_run(),
        ctx.update_manager().as_deref(),
    )
    .await?;
    Ok(respond(ctx, StatusCode::CREATED, &obj, &warnings))
}

async fn load(ctx: &Ctx<'_>) -> Result<(KeyValue, Value), ApiError> {
    let key = ctx.target.key(ctx.name());
    let kv = ctx
        .server
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ctx.not_found())?;
    let obj = decode_kv(&kv)?;
    Ok((kv, obj))
}

/// GET of one object or a subresource.
pub(crate) async fn get(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    match ctx.target.sub.as_deref() {
        None | Some("status") => {
            let (_, obj) = load(ctx).await?;
            Ok(respond(ctx, StatusCode::OK, &obj, &[]))
        }
        Some("scale") if ctx.info().subresources.contains(&"scale") => {
            let (_, obj) = load(ctx).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj)))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Selectors of a list or watch.
pub(crate) fn selectors(ctx: &Ctx<'_>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let l = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let f = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

/// Lists matching objects: (items, list revision, continue token).
pub(crate) async fn list_objects(
    ctx: &Ctx<'_>,
    limit: usize,
) -> Result<(Vec<Value>, u64, Option<String>), ApiError> {
    let mut walk = ListWalk::new(ctx, limit)?;
    let mut items = Vec::new();
    while !walk.done {
        items.extend(
            walk.next_page(ctx.server, |kv, decoded| match decoded {
                Some(o) => Ok(o),
                None => decode_kv(kv),
            })
            .await?,
        );
    }
    Ok((items, walk.revision, walk.token))
}

/// Stored objects read from the store per page of a list: a list of 10,000 pods is read,
/// rendered and sent a page at a time instead of being held whole, several times over.
const LIST_PAGE: usize = 500;

/// A list request's walk over the store, a page at a time: the objects the selectors match,
/// from the continue point, at most `limit` (0: all). Every page after the first is read at
/// the first one's revision, so the whole list is one snapshot.
struct ListWalk {
    label: LabelSelector,
    field: FieldSelector,
    prefix: String,
    limit: usize,
    /// Items handed out so far.
    taken: usize,
    /// The last key read: the next page starts after it.
    after: Option<String>,
    /// The last key handed out: where a continue token starts.
    last: Option<String>,
    /// The store revision the pages are read at, once the first is read.
    at: Option<u64>,
    /// The list's resourceVersion: the continue token's, else the first page's revision.
    revision: u64,
    /// The continue token, once the limit is reached with more matching objects.
    token: Option<String>,
    done: bool,
}

impl ListWalk {
    fn new(ctx: &Ctx<'_>, limit: usize) -> Result<ListWalk, ApiError> {
        use base64::Engine;
        let (label, field) = selectors(ctx)?;
        let mut walk = ListWalk {
            label,
            field,
            prefix: ctx.target.prefix(),
            limit,
            taken: 0,
            after: None,
            last: None,
            at: None,
            revision: 0,
            token: None,
            done: false,
        };
        if let Some(c) = ctx.q("continue").filter(|c| !c.is_empty()) {
            let tok: Continue = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            walk.revision = tok.rv;
            walk.after = Some(tok.start);
        }
        Ok(walk)
    }

    /// The next page's items, each made into an item by `item` (given the object when the
    /// selectors needed it decoded); empty once `done`.
    async fn next_page<T>(
        &mut self,
        server: &Server,
        mut item: impl FnMut(&KeyValue, Option<Value>) -> Result<T, ApiError>,
    ) -> Result<Vec<T>, ApiError> {
        use base64::Engine;
        if self.done {
            return Ok(Vec::new());
        }
        let res = server
            .store
            .list(&self.prefix, self.after.as_deref(), LIST_PAGE, self.at)
            .await?;
        if self.at.is_none() {
            self.at = Some(res.revision);
            if self.revision == 0 {
                self.revision = res.revision;
            }
        }
        self.done = !res.more;
        let selecting = !self.label.0.is_empty() || !self.field.0.is_empty();
        let mut items = Vec::new();
        for kv in &res.items {
            let decoded = if selecting {
                let o = decode_kv(kv)?;
                if !self.label.matches(&o) || !self.field.matches(&o) {
                    continue;
                }
                Some(o)
            } else {
                None
            };
            if self.limit > 0 && self.taken == self.limit {
                if let Some(start) = self.last.take() {
                    let raw = serde_json::to_vec(&Continue {
                        rv: self.revision,
                        start,
                    })
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                    self.token = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
                }
                self.done = true;
                return Ok(items);
            }
            self.last = Some(kv.key.clone());
            self.taken += 1;
            items.push(item(kv, decoded)?);
        }
        if let Some(last) = res.items.last() {
            self.after = Some(last.key.clone());
        }
        Ok(items)
    }
}

/// A stored object as JSON text with its resourceVersion set. Only the top level and
/// `metadata` are parsed; the rest (spec, status, data) is copied as it is stored, which
/// makes large lists several times cheaper than decoding every object. Objects whose top
/// level does not parse this way go the long way round.
pub(crate) fn raw_item(kv: &KeyValue) -> Result<Vec<u8>, ApiError> {
    use serde_json::value::RawValue;
    let Ok(top) = serde_json::from_slice::<BTreeMap<&str, &RawValue>>(&kv.value) else {
        return serde_json::to_vec(&decode_kv(kv)?).map_err(|e| ApiError::internal(e.to_string()));
    };
    let mut out = Vec::with_capacity(kv.value.len() + 32);
    out.push(b'{');
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).map_err(|e| ApiError::internal(e.to_string()))?;
        out.push(b':');
        if *k == "metadata" {
            splice_resource_version(&mut out, v.get(), kv)?;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

/// Writes the stored `metadata` object text with `"resourceVersion"` added as its first
/// member. Stored objects carry no resourceVersion ([`encode`] removes it), so the text is
/// spliced without parsing the metadata; one that does carry a key of that name (written by
/// hand into the store) is parsed and the key replaced, never duplicated.
fn splice_resource_version(out: &mut Vec<u8>, meta: &str, kv: &KeyValue) -> Result<(), ApiError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key))
    };
    let Some(rest) = meta.strip_prefix('{') else {
        return Err(corrupt(&"metadata is not an object"));
    };
    let rv = format!("{{\"resourceVersion\":\"{}\"", kv.mod_revision);
    if meta.contains("\"resourceVersion\"") {
        let mut m: serde_json::Map<String, Value> =
            serde_json::from_str(meta).map_err(|e| corrupt(&e))?;
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        return serde_json::to_writer(out, &m).map_err(|e| ApiError::internal(e.to_string()));
    }
    out.extend_from_slice(rv.as_bytes());
    // `rest` is the members after `{` (or just `}` for an empty object)
    if !rest.trim_start().starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(())
}

/// A stored object as JSON text in `info`'s version: as stored ([`raw_item`]) when that is
/// the storage version, converted otherwise.
pub(crate) fn item_bytes(info: &'static ResourceInfo, kv: &KeyValue) -> Result<Vec<u8>, ApiError> {
    if is_storage(info) {
        return raw_item(kv);
    }
    let mut o = decode_kv(kv)?;
    convert(info, &mut o);
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))
}

/// GET of a collection.
pub(crate) async fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    if ctx.target.sub.is_some() {
        return Err(ApiError::no_route());
    }
    let limit = ctx
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let list_meta = |revision: u64, token: Option<String>| {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if let Some(t) = token {
            meta["continue"] = json!(t);
        }
        meta
    };
    if wants_table(ctx.accept) {
        let (items, revision, token) = list_objects(ctx, limit).await?;
        let mut t = make_table(
            ctx.info(),
            ctx.q("includeObject").unwrap_or("Metadata"),
            &items,
        );
        t["metadata"] = list_meta(revision, token);
        return Ok(json_response(StatusCode::OK, &t));
    }
    // The items are spliced in as JSON text, never decoded as a whole.
    let info = ctx.info();
    let render = move |kv: &KeyValue, _: Option<Value>| item_bytes(info, kv);
    let mut walk = ListWalk::new(ctx, limit)?;
    let mut items = Vec::new();
    let mut joined = 0;
    join_items(
        &mut items,
        walk.next_page(ctx.server, render).await?,
        &mut joined,
    );
    // With a limit the list is bounded and read whole, as its continue token goes in the
    // metadata, ahead of the items.
    while limit > 0 && !walk.done {
        join_items(
            &mut items,
            walk.next_page(ctx.server, render).await?,
            &mut joined,
        );
    }
    let head = json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": list_meta(walk.revision, walk.token.take()),
    })
    .to_string();
    let mut body = Vec::with_capacity(head.len() + 16 + items.len());
    // `head` is an object: drop its closing brace and append the items.
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":[");
    body.extend_from_slice(&items);
    if walk.done {
        body.extend_from_slice(b"]}");
        return Ok(typed_response(StatusCode::OK, body, "application/json"));
    }
    // The rest streams a page at a time: the first page was read before answering, so an
    // error there still gets its status; a later one can only cut the body short.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let server = ctx.server.clone();
    let key_prefix = walk.prefix.clone();
    tokio::spawn(async move {
        let mut chunk = body;
        while !walk.done {
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            chunk = Vec::new();
            match walk.next_page(&server, render).await {
                Ok(page) => join_items(&mut chunk, page, &mut joined),
                Err(e) => {
                    tracing::warn!(prefix = %key_prefix, error = %e.message, "list cut short");
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            }
        }
        chunk.extend_from_slice(b"]}");
        let _ = tx.send(Ok(Bytes::from(chunk))).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut r = Response::new(axum::body::Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Appends list items (JSON texts) to `out`, comma separated; `joined` counts the items of
/// the array so far, across chunks.
fn join_items(out: &mut Vec<u8>, items: Vec<Vec<u8>>, joined: &mut usize) {
    for item in items {
        if *joined > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item);
        *joined += 1;
    }
}

/// Writes `new` over `kv` (CAS), handling generation, finalizers and services. `new` has
/// passed the kind check.
async fn write_update(
    ctx: &Ctx<'_>,
    kv: &KeyValue,
    old: &Value,
    mut new: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    // both sides in the storage version (the request's may differ)
    let info = storage_of(ctx.info());
    let mut old_stored = old.clone();
    convert(info, &mut old_stored);
    let old = &old_stored;
    convert(info, &mut new);
    let name = ctx.name().to_string();
    match meta_str(&new, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => new["metadata"]["name"] = json!(name),
    }
    if let Some(ns) = &ctx.target.namespace {
        match meta_str(&new, "namespace") {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => new["metadata"]["namespace"] = json!(ns),
        }
    }
    // compare-and-swap on the body's resourceVersion (empty = unconditional)
    let expected = match meta_str(&new, "resourceVersion").filter(|s| !s.is_empty()) {
        Some(rv) => rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        None => kv.mod_revision,
    };
    if expected != kv.mod_revision {
        return Err(ApiError::conflict(info.group, info.plural, &name));
    }
    let has_status = info.subresources.contains(&"status");
    if status_only {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        new = merged;
    } else if has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    // system metadata is kept
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{f}")) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        // finalizers may only be removed once deletion started
    }
    if semantics::spec_changed(info, old, &new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    semantics::prepare_update(info, old, &mut new).map_err(|e| invalid(info, &name, &e))?;
    if let Some(m) = ctx.update_manager() {
        semantics::track_update(info, old, &mut new, &m);
    }
    let _guard = if info.kind == "Service" && !status_only {
        let g = ctx.server.alloc_lock.lock().await;
        services::allocate(ctx.server, &kv.key, &mut new, Some(old)).await?;
        Some(g)
    } else {
        None
    };
    if ctx.dry_run() {
        return Ok(new);
    }
    if same_but_version(old, &new) {
        // a no-op update writes nothing and keeps the resourceVersion, as upstream
        let mut unchanged = old.clone();
        set_rv(&mut unchanged, kv.mod_revision);
        return Ok(unchanged);
    }
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty());
    let stored = match ctx
        .server
        .store
        .update(&kv.key, encode(&new)?, kv.mod_revision)
        .await
    {
        Ok(s) => s,
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(info.group, info.plural, &name));
        }
        Err(StoreError::NotFound(_)) => return Err(ctx.not_found()),
        Err(e) => return Err(e.into()),
    };
    set_rv(&mut new, stored.mod_revision);
    let zero_grace = new.pointer("/metadata/deletionGracePeriodSeconds") == Some(&json!(0));
    if deleting && no_finalizers && info.kind != "Namespace" && (info.kind != "Pod" || zero_grace) {
        let _ = ctx
            .server
            .store
            .delete(&kv.key, Some(stored.mod_revision))
            .await;
    }
    Ok(new)
}

/// Whether two versions of an object differ in nothing but their resourceVersion.
fn same_but_version(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// PUT of an object or its status/scale.
pub(crate) async fn update(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.target.name.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let info = ctx.info();
    let sub = ctx.target.sub.as_deref();
    match sub {
        None | Some("status") | Some("finalize") => {}
        Some("scale") if info.subresources.contains(&"scale") => {
            let scale = decode_body(ctx.headers, body)?;
            return set_scale(ctx, scale).await;
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let mut new = decode_body(ctx.headers, body)?;
    check_kind(info, &mut new)?;
    let warnings = field_validation(ctx, &new)?;
    // An update without a resourceVersion is unconditional: retried on concurrent writes.
    let pinned = meta_str(&new, "resourceVersion").is_some_and(|rv| !rv.is_empty());
    let mut attempt = 0;
    loop {
        let (kv, old) = load(ctx).await?;
        match write_update(ctx, &kv, &old, new.clone(), sub == Some("status")).await {
            Err(e) if e.code == 409 && !pinned && attempt < PATCH_RETRIES => attempt += 1,
            result => return Ok(respond(ctx, StatusCode::OK, &result?, &warnings)),
        }
    }
}

fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim();
    match base {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )),
    }
}

fn patch_error(e: crate::resources::PatchError) -> ApiError {
    use crate::resources::PatchError as P;
    match e {
        P::Invalid(m) => ApiError::bad_request(m),
        P::Failed(m) => ApiError::new(422, "Invalid", m),
        P::Conflict(m) => ApiError::new(409, "Conflict", m),
    }
}

/// PATCH of an object, its status or scale.
pub(crate) async fn patch(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.target.name.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let info = ctx.info();
    let ty = patch_type(ctx.headers)?;
    let manager = ctx.q("fieldManager").unwrap_or("unknown").to_string();
    let force = ctx.q("force").is_some_and(|f| f == "true");
    if ty == PatchType::Apply && ctx.q("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let sub = ctx.target.sub.as_deref();
    match sub {
        None | Some("status") => {}
        Some("scale") if info.subresources.contains(&"scale") => {
            let (_, obj) = load(ctx).await?;
            let scale = scale_of(&obj);
            let mut patched = scale.clone();
            match ty {
                PatchType::Json => {
                    let p: json_patch::Patch = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    json_patch::patch(&mut patched, &p)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                }
                _ => {
                    let p: Value = if ty == PatchType::Apply {
                        let t = std::str::from_utf8(body)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                        serde_saphyr::from_str(t)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?
                    } else {
                        serde_json::from_slice(body)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?
                    };
                    json_patch::merge(&mut patched, &p);
                }
            }
            return set_scale(ctx, patched).await;
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let existing = ctx.server.store.get(&ctx.target.key(ctx.name())).await?;
    let Some(kv) = existing else {
        if ty == PatchType::Apply && sub.is_none() {
            let mut base = json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": {"name": ctx.name()}});
            if let Some(ns) = &ctx.target.namespace {
                base["metadata"]["namespace"] = json!(ns);
            }
            let mut obj = semantics::apply_patch(info, &base, ty, body, &manager, force)
                .map_err(patch_error)?;
            check_kind(info, &mut obj)?;
            if meta_str(&obj, "name").is_some_and(|n| n != ctx.name()) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({})",
                    meta_str(&obj, "name").unwrap_or_default(),
                    ctx.name()
                )));
            }
            let warnings = field_validation(ctx, &obj)?;
            let obj = create_object(
                ctx.server,
                info,
                ctx.target.namespace.as_deref(),
                obj,
                ctx.dry_run(),
                None,
            )
            .await?;
            return Ok(respond(ctx, StatusCode::CREATED, &obj, &warnings));
        }
        return Err(ctx.not_found());
    };
    // As kube-apiserver's GuaranteedUpdate: a patch that does not pin a resourceVersion is
    // applied again to the newest object when another write came between read and write.
    let mut kv = kv;
    let mut attempt = 0;
    loop {
        let mut old = decode_kv(&kv)?;
        convert(info, &mut old);
        let mut new =
            semantics::apply_patch(info, &old, ty, body, &manager, force).map_err(patch_error)?;
        check_kind(info, &mut new)?;
        let pinned =
            new.pointer("/metadata/resourceVersion") != old.pointer("/metadata/resourceVersion");
        let warnings = field_validation(ctx, &new)?;
        match write_update(ctx, &kv, &old, new, sub == Some("status")).await {
            Err(e) if e.code == 409 && !pinned && attempt < PATCH_RETRIES => {
                attempt += 1;
                kv = ctx
                    .server
                    .store
                    .get(&ctx.target.key(ctx.name()))
                    .await?
                    .ok_or_else(|| ctx.not_found())?;
            }
            result => return Ok(respond(ctx, StatusCode::OK, &result?, &warnings)),
        }
    }
}

/// How often a patch is re-applied after a concurrent write before 409 goes to the client.
const PATCH_RETRIES: u32 = 16;

/// The autoscaling/v1 Scale of a deployment or replicaset.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut m = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(f) {
            m[f] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector
        }
    })
}

async fn set_scale(ctx: &Ctx<'_>, scale: Value) -> Result<Response, ApiError> {
    let info = ctx.info();
    let (kv, old) = load(ctx).await?;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            ctx.name(),
            &[FieldError {
                reason: "FieldValueInvalid",
                field: "spec.replicas".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            }],
        ));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    let _ = info;
    let new = write_update(ctx, &kv, &old, new, false).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&new)))
}

/// POST pods/{name}/binding: sets spec.nodeName.
async fn binding(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.info().plural != "pods" {
        return Err(ApiError::method_not_allowed());
    }
    let b = decode_body(ctx.headers, body)?;
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding target name is required"))?
        .to_string();
    if let Some(n) = b
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && *n != ctx.name())
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Binding object: {} != {n}",
            ctx.name()
        )));
    }
    if let Some(kind) = b
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && *k != "Node")
    {
        return Err(ApiError::bad_request(format!(
            "binding target kind must be Node, not {kind:?}"
        )));
    }
    let (kv, old) = load(ctx).await?;
    let conflict = |why: String| {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": {why}",
                ctx.name()
            ),
        )
    };
    if let Some(uid) = b
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        && meta_str(&old, "uid") != Some(uid)
    {
        return Err(conflict(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_str(&old, "uid").unwrap_or_default()
        )));
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(conflict(format!(
            "pod {} is being deleted, cannot be assigned to a host",
            ctx.name()
        )));
    }
    if let Some(n) = old
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{n}\"",
                ctx.name(),
                ctx.name()
            ),
        ));
    }
    let mut new = old.clone();
    new["spec"]["nodeName"] = json!(node);
    if let Some(a) = b
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in a {
            new["metadata"]["annotations"][k] = v.clone();
        }
    }
    set_pod_scheduled(&mut new);
    match ctx
        .server
        .store
        .update(&kv.key, encode(&new)?, kv.mod_revision)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => return Err(ApiError::conflict("", "pods", ctx.name())),
        Err(e) => return Err(e.into()),
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Sets the pod's `PodScheduled` condition to True, as a binding does.
fn set_pod_scheduled(pod: &mut Value) {
    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                      "lastTransitionTime": now_ts()});
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    match pod["status"]["conditions"].as_array_mut() {
        Some(conds) => match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
            Some(c) if c["status"] == "True" => {}
            Some(c) => *c = cond,
            None => conds.push(cond),
        },
        None => pod["status"]["conditions"] = json!([cond]),
    }
}

/// DeleteOptions from the body and query.
pub(crate) struct DeleteOptions {
    grace: Option<i64>,
    uid: Option<String>,
    pub(crate) rv: Option<String>,
    propagation: Option<String>,
    pub(crate) dry_run: bool,
}

fn delete_options(ctx: &Ctx<'_>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_body(ctx.headers, body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message)))?
    };
    delete_options_of(ctx, &b)
}

/// DeleteOptions from a decoded body (`b`) and the request's query.
pub(crate) fn delete_options_of(ctx: &Ctx<'_>, b: &Value) -> Result<DeleteOptions, ApiError> {
    let grace = b
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let propagation = b
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ctx.q("propagationPolicy").map(str::to_string));
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "invalid propagationPolicy {p:?}"
        )));
    }
    // the deprecated orphanDependents: true is Orphan, false is Background
    let orphan = b
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| ctx.q("orphanDependents").and_then(|o| o.parse().ok()));
    let propagation = match (orphan, propagation) {
        (Some(_), Some(p)) => {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"
                ),
            ));
        }
        (Some(true), None) => Some("Orphan".to_string()),
        (Some(false), None) => Some("Background".to_string()),
        (None, p) => p,
    };
    let dry_run = ctx.dry_run()
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        grace,
        uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        propagation,
        dry_run,
    })
}

/// Deletes one object; returns (object, whether it is gone now).
pub(crate) async fn delete_one(
    server: &Server,
    info: &ResourceInfo,
    kv: &KeyValue,
    opts: &DeleteOptions,
) -> Result<(Value, bool), ApiError> {
    let mut obj = decode_kv(kv)?;
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if let Some(uid) = &opts.uid
        && meta_str(&obj, "uid") != Some(uid.as_str())
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                info.plural,
                meta_str(&obj, "uid").unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = &opts.rv
        && *rv != kv.mod_revision.to_string()
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                info.plural, kv.mod_revision
            ),
        ));
    }
    let existing: Vec<String> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let finalizers = if info.kind == "Namespace" {
        existing.clone()
    } else {
        gc_finalizers(&existing, opts.propagation.as_deref())
    };
    let finalizers_changed = {
        let set = |f: &[String]| f.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        set(&existing) != set(&finalizers)
    };
    let bound_pod = info.kind == "Pod"
        && obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        && opts.grace != Some(0);
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    let graceful_pod = bound_pod
        && (!deleting
            || obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0));
    let graceful = info.kind == "Namespace" || !finalizers.is_empty() || graceful_pod;
    if !graceful {
        if opts.dry_run {
            return Ok((obj, true));
        }
        let last = match server.store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(l) => l,
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::conflict(info.group, info.plural, &name));
            }
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::not_found(info.group, info.plural, &name));
            }
            Err(e) => return Err(e.into()),
        };
        let mut o = decode_kv(&last)?;
        set_rv(&mut o, last.mod_revision);
        return Ok((o, true));
    }
    let mut changed = false;
    if !deleting {
        obj["metadata"]["deletionTimestamp"] = json!(now_ts());
        let grace = if bound_pod {
            opts.grace
                .or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
        } else {
            0
        };
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if info.kind == "Namespace" {
            obj["status"]["phase"] = json!("Terminating");
        }
        changed = true;
    } else if info.kind == "Pod"
        && opts.grace == Some(0)
        && obj.pointer("/metadata/deletionGracePeriodSeconds") != Some(&json!(0))
    {
        // a forced delete of a pod held by finalizers: gone as soon as they are
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        changed = true;
    }
    if finalizers_changed {
        obj["metadata"]["finalizers"] = json!(finalizers);
        changed = true;
    }
    if changed {
        if opts.dry_run {
            return Ok((obj, false));
        }
        match server
            .store
            .update(&kv.key, encode(&obj)?, kv.mod_revision)
            .await
        {
            Ok(s) => set_rv(&mut obj, s.mod_revision),
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::conflict(info.group, info.plural, &name));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((obj, false))
}

/// The object's finalizers after a delete with `propagation`, as the Kubernetes API server
/// sets them for the garbage collector: Orphan adds `orphan`, Foreground adds
/// `foregroundDeletion`, Background removes both; without a policy a finalizer already there
/// stays, and the default of every kind served is Background.
pub(crate) fn gc_finalizers(existing: &[String], propagation: Option<&str>) -> Vec<String> {
    use crate::controllers::gc::{FINALIZER_FOREGROUND, FINALIZER_ORPHAN};
    let has = |f: &str| existing.iter().any(|e| e == f);
    let (orphan, foreground) = match propagation {
        Some("Orphan") => (true, false),
        Some("Foreground") => (false, true),
        Some(_) => (false, false),
        None if has(FINALIZER_ORPHAN) => (true, false),
        None => (false, has(FINALIZER_FOREGROUND)),
    };
    let mut out: Vec<String> = existing
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        out.push(FINALIZER_ORPHAN.into());
    }
    if foreground {
        out.push(FINALIZER_FOREGROUND.into());
    }
    out
}

/// DELETE of one object.
pub(crate) async fn delete(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.target.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_options(ctx, body)?;
    let (kv, _) = load(ctx).await?;
    if ctx.info().kind == "Namespace"
        && matches!(ctx.name(), "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{}\" is forbidden: this namespace may not be deleted",
            ctx.name()
        )));
    }
    let (mut obj, gone) = delete_one(ctx.server, ctx.info(), &kv, &opts).await?;
    convert(ctx.info(), &mut obj);
    let code = if gone {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json_response(code, &obj))
}

/// DELETE of a collection (with selectors).
pub(crate) async fn delete_collection(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.target.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_options(ctx, body)?;
    let (items, revision, _) = list_objects(ctx, 0).await?;
    let mut deleted = Vec::new();
    for o in items {
        let name = meta_str(&o, "name").unwrap_or_default();
        let key = object_key(ctx.info(), meta_str(&o, "namespace"), name);
        let Some(kv) = ctx.server.store.get(&key).await? else {
            continue;
        };
        let (obj, _) = delete_one(ctx.server, ctx.info(), &kv, &opts).await?;
        deleted.push(obj);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", ctx.info().kind),
            "apiVersion": ctx.info().api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        }),
    ))
}

/// `/openapi/v2`: an empty protobuf document (kubectl accepts it and validates on the
/// server instead).
pub(crate) fn openapi_v2() -> Response {
    typed_response(
        StatusCode::OK,
        Vec::new(),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
    )
}

/// Creates the bootstrap namespaces and the `kubernetes` Service when missing.
pub(crate) async fn bootstrap(
    server: &Server,
    service_ip: std::net::IpAddr,
) -> Result<(), ApiError> {
    let nsinfo =
        find("", "namespaces").ok_or_else(|| ApiError::internal("namespaces not served"))?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if server
            .store
            .get(&object_key(nsinfo, None, ns))
            .await?
            .is_none()
        {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
            match create_object(server, nsinfo, None, obj, false, None).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        ensure_default_service_account(server, ns).await?;
    }
    let svc = find("", "services").ok_or_else(|| ApiError::internal("services not served"))?;
    let kubernetes = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip.to_string(),
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                 "sessionAffinity": "None"}
    });
    // the cluster DNS Service at the CIDR's tenth address, as kubeadm makes it; every agent
    // serves that address itself (docs/network.md), so it selects no pods of ours
    let primary = server.service_cidrs.primary();
    let dns_ip = primary.nth(10);
    let kube_dns = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                                "kubernetes.io/cluster-service": "true"}},
        "spec": {"type": "ClusterIP", "clusterIP": dns_ip.to_string(),
                 "selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}],
                 "sessionAffinity": "None"}
    });
    let in_net = primary.last_offset() > 10 && primary.allocatable(dns_ip);
    for (ns, name, obj) in [
        ("default", "kubernetes", Some(kubernetes)),
        ("kube-system", "kube-dns", in_net.then_some(kube_dns)),
    ] {
        let Some(obj) = obj else { continue };
        if server
            .store
            .get(&object_key(svc, Some(ns), name))
            .await?
            .is_some()
        {
            continue;
        }
        match create_object(server, svc, Some(ns), obj, false, None).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The namespace controller: empties terminating namespaces, then removes them.
pub(crate) async fn reconcile_namespaces(server: &Server) -> Result<(), ApiError> {
    let Some(nsinfo) = find("", "namespaces") else {
        return Ok(());
    };
    let all = server
        .store
        .list(&nsinfo.key_prefix(), None, 0, None)
        .await?;
    for kv in all.items {
        let ns = decode_kv(&kv)?;
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = meta_str(&ns, "name").unwrap_or_default().to_string();
        let mut remaining = 0usize;
        for info in RESOURCES.iter().filter(|r| r.namespaced && is_storage(r)) {
            let prefix = format!("{}{}/", info.key_prefix(), name);
            let items = server.store.list(&prefix, None, 0, None).await?;
            for item in items.items {
                let o = decode_kv(&item)?;
                let has_finalizers = o
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    remaining += 1;
                    if o.pointer("/metadata/deletionTimestamp").is_none() {
                        let opts = DeleteOptions {
                            grace: Some(0),
                            uid: None,
                            rv: None,
                            propagation: None,
                            dry_run: false,
                        };
                        let _ = delete_one(server, info, &item, &opts).await;
                    }
                    continue;
                }
                match server.store.delete(&item.key, None).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if remaining == 0 {
            tracing::info!(namespace = %name, "namespace emptied, removing it");
            match server.store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decode_kv, encode, gc_finalizers, raw_item};
    use crate::store::KeyValue;
    use serde_json::json;

    #[test]
    fn raw_list_items_equal_decoded_objects() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
                   "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "\"metadata\":{"}]}]},
                   "status": {"phase": "Running"}}),
            json!({"apiVersion": "v1", "data": {"k": "v"}, "kind": "ConfigMap", "metadata": {"name": "é\u{1}"}}),
            json!({"kind": "Odd"}),
            json!({"kind": "Empty", "metadata": {}}),
            json!({"kind": "Spaced", "metadata": { }}),
        ];
        for (i, o) in objects.iter().enumerate() {
            let kv = KeyValue {
                key: format!("/k/{i}"),
                value: encode(o).unwrap(),
                create_revision: 3,
                mod_revision: 7 + i as u64,
            };
            let raw: serde_json::Value = serde_json::from_slice(&raw_item(&kv).unwrap()).unwrap();
            assert_eq!(raw, decode_kv(&kv).unwrap(), "object {i}");
        }
    }

    #[test]
    fn raw_items_never_duplicate_a_stored_resource_version() {
        // written into the store by hand (not through `encode`), with a stale version
        let kv = KeyValue {
            key: "/k/stale".into(),
            value: br#"{"kind":"Pod","metadata":{"name":"p","resourceVersion":"1"}}"#.to_vec(),
            create_revision: 1,
            mod_revision: 9,
        };
        let text = String::from_utf8(raw_item(&kv).unwrap()).unwrap();
        assert_eq!(text.matches("resourceVersion").count(), 1, "{text}");
        // typed decoding rejects duplicate fields, so this is what a client would see
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_str(&text).unwrap();
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("9"));
        let spliced = KeyValue {
            value: br#"{"kind":"Pod","metadata":{"name":"p"}}"#.to_vec(),
            ..kv
        };
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_slice(&raw_item(&spliced).unwrap()).unwrap();
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn deletion_finalizers_follow_the_propagation_policy() {
        let cases: [(&[&str], Option<&str>, &[&str]); 9] = [
            (&[], None, &[]),
            (&[], Some("Background"), &[]),
            (&[], Some("Orphan"), &["orphan"]),
            (&[], Some("Foreground"), &["foregroundDeletion"]),
            (&["x"], Some("Foreground"), &["x", "foregroundDeletion"]),
            (&["orphan"], None, &["orphan"]),
            (&["foregroundDeletion"], None, &["foregroundDeletion"]),
            (
                &["orphan", "x"],
                Some("Foreground"),
                &["x", "foregroundDeletion"],
            ),
            (&["foregroundDeletion"], Some("Background"), &[]),
        ];
        for (existing, policy, want) in cases {
            let existing: Vec<String> = existing.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                gc_finalizers(&existing, policy),
                want,
                "{existing:?} {policy:?}"
            );
        }
    }
}

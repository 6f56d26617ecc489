//! The `pods/eviction` subresource (policy/v1 and v1beta1 Eviction), as kubectl drain uses
//! it: a pod that is not running, or that no PodDisruptionBudget covers, is deleted with the
//! eviction's deleteOptions; one covered by a budget is deleted only when the budget's status
//! allows a disruption, which is then taken off it and the pod recorded in `disruptedPods`;
//! otherwise 429 "Cannot evict pod as it would violate the pod's disruption budget.". Several
//! budgets over one pod are refused with 500, as upstream does.

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::rest::{self, Ctx, DeleteOptions, decode_kv};
use super::status::ApiError;
use super::{json_response, object_key};
use crate::controllers::disruption::core::{self, Verdict};
use crate::resources::find;
use crate::store::{KeyValue, StoreError};

/// Tries of the read-decide-write cycle when the budget changes under it (upstream retries
/// on conflict likewise).
const TRIES: usize = 5;

/// POST `pods/{name}/eviction`.
pub(crate) async fn evict(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    let ev = rest::decode_body(ctx.headers, body)?;
    let api_version = ev.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    if !matches!(api_version, "policy/v1" | "policy/v1beta1" | "")
        || !matches!(kind, "Eviction" | "")
    {
        return Err(ApiError::bad_request(format!(
            "the body of the request was of kind {api_version}/{kind}, not policy/v1 Eviction"
        )));
    }
    let name = ctx.target.name.clone().unwrap_or_default();
    let ns = ctx.target.namespace.clone().unwrap_or_default();
    if let Some(n) = ev.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} != {n}"
        )));
    }
    if let Some(n) = ev
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        && n != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let delete_body = ev
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut opts = rest::delete_options_of(ctx, &delete_body)?;
    let pods = find("", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let budgets = find("policy", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
    for _ in 0..TRIES {
        let kv = ctx
            .server
            .store
            .get(&object_key(pods, Some(&ns), &name))
            .await?
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let pod: Pod = typed(&decode_kv(&kv)?)?;
        if core::ignores_budget(&pod) {
            debug!(pod = %format!("{ns}/{name}"), "evicting a pod no budget guards");
            return delete(ctx, &kv, &opts).await;
        }
        let mut covering: Vec<(KeyValue, PodDisruptionBudget)> = Vec::new();
        let listed = ctx
            .server
            .store
            .list(&format!("{}{ns}/", budgets.key_prefix()), None, 0, None)
            .await?;
        for b in listed.items {
            let pdb: PodDisruptionBudget = typed(&decode_kv(&b)?)?;
            if core::selects(&pdb, &pod) {
                covering.push((b, pdb));
            }
        }
        let (bkv, pdb) = match covering.len() {
            0 => return delete(ctx, &kv, &opts).await,
            1 => covering.remove(0),
            _ => {
                return Err(ApiError::internal(
                    "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
        match core::verdict(&pdb, &pod) {
            Verdict::Unhealthy => {
                // only the pod that was judged unhealthy
                if opts.rv.is_none() {
                    opts.rv = Some(kv.mod_revision.to_string());
                }
                return delete(ctx, &kv, &opts).await;
            }
            Verdict::TooManyRequests { cause, retry_after } => {
                info!(pod = %format!("{ns}/{name}"), pdb = %pdb_name, %cause, "eviction refused");
                let mut e = ApiError::new(429, "TooManyRequests", core::VIOLATION);
                let mut details = json!({"causes": [{"reason": core::DISRUPTION_BUDGET_CAUSE, "message": cause}]});
                if retry_after > 0 {
                    details["retryAfterSeconds"] = json!(retry_after);
                }
                e.details = Some(details);
                return Err(e);
            }
            Verdict::Forbidden(why) => {
                return Err(ApiError::forbidden(format!(
                    "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: {why}"
                )));
            }
            Verdict::Decrement => {}
        }
        if !opts.dry_run {
            let mut updated = decode_kv(&bkv)?;
            let status = core::decremented(
                &pdb.status.clone().unwrap_or_default(),
                &name,
                Timestamp::now(),
            );
            updated["status"] = serde_json::to_value(&status).map_err(|e| {
                ApiError::internal(format!("cannot encode the budget's status: {e}"))
            })?;
            match ctx
                .server
                .store
                .update(&bkv.key, rest::encode(&updated)?, bkv.mod_revision)
                .await
            {
                Ok(_) => {}
                // the controller or another eviction wrote the budget: decide again
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        info!(pod = %format!("{ns}/{name}"), pdb = %pdb_name, "evicting");
        return delete(ctx, &kv, &opts).await;
    }
    Err(ApiError::conflict("policy", "poddisruptionbudgets", &name))
}

/// Deletes the evicted pod with the eviction's options; 201 with a Success Status.
async fn delete(ctx: &Ctx<'_>, kv: &KeyValue, opts: &DeleteOptions) -> Result<Response, ApiError> {
    rest::delete_one(ctx.server, ctx.target.info, kv, opts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// A stored object as its k8s-openapi type.
fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::internal(format!("stored object is malformed: {e}")))
}

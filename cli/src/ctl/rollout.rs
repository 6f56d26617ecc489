//! `rollout status`, `undo` and `history`: kubectl's status viewers and Deployment rollback,
//! as pure functions of the objects.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_json::{Value, json};

const REVISION: &str = "deployment.kubernetes.io/revision";

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// kubectl's message for a Deployment's rollout, and whether it is done. An error when the
/// rollout went past its progress deadline.
pub fn deployment_status(d: &Value) -> Result<(String, bool)> {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    if int(d, "/metadata/generation") > int(d, "/status/observedGeneration") {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let timed_out = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let spec = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (replicas, updated, available) = (
        int(d, "/status/replicas"),
        int(d, "/status/updatedReplicas"),
        int(d, "/status/availableReplicas"),
    );
    let waiting = |what: String| {
        Ok((
            format!("Waiting for deployment {name:?} rollout to finish: {what}"),
            false,
        ))
    };
    if updated < spec {
        return waiting(format!(
            "{updated} out of {spec} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "{available} of {updated} updated replicas are available..."
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

/// kubectl's message for a DaemonSet's rollout, and whether it is done.
pub fn daemonset_status(ds: &Value) -> Result<(String, bool)> {
    let name = ds["metadata"]["name"].as_str().unwrap_or("");
    if ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        bail!("rollout status is only available for RollingUpdate strategy type");
    }
    if int(ds, "/metadata/generation") > int(ds, "/status/observedGeneration") {
        return Ok((
            "Waiting for daemon set spec update to be observed...".into(),
            false,
        ));
    }
    let desired = int(ds, "/status/desiredNumberScheduled");
    let updated = int(ds, "/status/updatedNumberScheduled");
    let available = int(ds, "/status/numberAvailable");
    if updated < desired {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
            ),
            false,
        ));
    }
    if available < desired {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
            ),
            false,
        ));
    }
    Ok((format!("daemon set {name:?} successfully rolled out"), true))
}

fn revision(rs: &Value) -> Option<i64> {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The ReplicaSets of Deployment `d` among `all` (by controller reference), by revision.
pub fn history<'a>(d: &Value, all: &'a [Value]) -> BTreeMap<i64, &'a Value> {
    let uid = &d["metadata"]["uid"];
    all.iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|o| o["uid"] == *uid && o["controller"] == true)
        })
        .filter_map(|rs| revision(rs).map(|r| (r, rs)))
        .collect()
}

/// The patch that rolls Deployment `d` back to `to_revision` (0: the one before the latest),
/// with the revision it goes to; `None` for the patch when the template already matches.
pub fn rollback(d: &Value, all: &[Value], to_revision: i64) -> Result<(i64, Option<Value>)> {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'skiff ctl rollout resume' and try again"
        );
    }
    let revisions = history(d, all);
    let (rev, rs) = if to_revision == 0 {
        let mut it = revisions.iter().rev();
        it.next();
        match it.next() {
            Some((r, rs)) => (*r, *rs),
            None => bail!("no rollout history found for deployment {name:?}"),
        }
    } else {
        match revisions.get(&to_revision) {
            Some(rs) => (to_revision, *rs),
            None => bail!("unable to find specified revision {to_revision} in history"),
        }
    };
    let mut template = rs["spec"]["template"].clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    if template == d["spec"]["template"] {
        return Ok((rev, None));
    }
    Ok((
        rev,
        Some(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": d["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec/template", "value": template},
        ])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(generation: i64, observed: i64, status: Value) -> Value {
        let mut status = status;
        status["observedGeneration"] = json!(observed);
        json!({
            "metadata": {"name": "web", "generation": generation, "uid": "u1", "resourceVersion": "7"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}}},
            "status": status,
        })
    }

    #[test]
    fn deployment_messages_are_kubectls() {
        let cases = [
            (
                deploy(2, 1, json!({})),
                "Waiting for deployment spec update to be observed...",
                false,
            ),
            (
                deploy(2, 2, json!({"replicas": 3, "updatedReplicas": 1})),
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...",
                false,
            ),
            (
                deploy(2, 2, json!({"replicas": 4, "updatedReplicas": 3})),
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...",
                false,
            ),
            (
                deploy(
                    2,
                    2,
                    json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                ),
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...",
                false,
            ),
            (
                deploy(
                    2,
                    2,
                    json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                ),
                "deployment \"web\" successfully rolled out",
                true,
            ),
        ];
        for (d, msg, done) in cases {
            assert_eq!(deployment_status(&d).unwrap(), (msg.to_string(), done));
        }
        let stuck = deploy(
            1,
            1,
            json!({"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            deployment_status(&stuck).unwrap_err().to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn daemonset_messages_are_kubectls() {
        let ds = |status: Value| json!({"metadata": {"name": "agent", "generation": 1}, "status": status});
        let s = daemonset_status(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2}))).unwrap();
        assert_eq!(
            s.0,
            "Waiting for daemon set \"agent\" rollout to finish: 2 out of 3 new pods have been updated..."
        );
        let s = daemonset_status(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}))).unwrap();
        assert_eq!(
            s,
            (
                "daemon set \"agent\" successfully rolled out".to_string(),
                true
            )
        );
        assert!(!daemonset_status(&ds(json!({}))).unwrap().1);
    }

    fn rs(rev: i64, image: &str, owner: &str) -> Value {
        json!({
            "metadata": {
                "name": format!("web-{rev}"),
                "annotations": {REVISION: rev.to_string()},
                "ownerReferences": [{"uid": owner, "controller": true}],
            },
            "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "h"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        })
    }

    #[test]
    fn undo_goes_to_the_previous_revision_or_the_one_asked() {
        let d = deploy(3, 3, json!({}));
        let all = vec![
            rs(1, "v1", "u1"),
            rs(2, "v2", "u1"),
            rs(3, "v3", "u1"),
            rs(9, "x", "other"),
        ];
        let (rev, patch) = rollback(&d, &all, 0).unwrap();
        assert_eq!(rev, 2);
        assert!(patch.is_none(), "revision 2's template is the current one");
        let (rev, patch) = rollback(&d, &all, 1).unwrap();
        assert_eq!(rev, 1);
        let patch = patch.unwrap();
        assert_eq!(patch[1]["value"]["spec"]["containers"][0]["image"], "v1");
        assert!(
            patch[1]["value"]["metadata"]["labels"]
                .get("pod-template-hash")
                .is_none()
        );
        assert_eq!(patch[0]["value"], "7");
        assert_eq!(
            rollback(&d, &all, 5).unwrap_err().to_string(),
            "unable to find specified revision 5 in history"
        );
        assert!(rollback(&d, &all[..1], 0).is_err());
        let mut paused = d.clone();
        paused["spec"]["paused"] = json!(true);
        assert!(rollback(&paused, &all, 0).is_err());
        assert_eq!(
            history(&d, &all).keys().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
}

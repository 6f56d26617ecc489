//! Container lifecycle hooks as the kubelet runs them: postStart right after the container
//! started (the container is not Running until it returns; a failure kills it with reason
//! `FailedPostStartHook`), preStop before the stop signal, within the grace period. Handlers
//! are exec (in the container), httpGet (from the pod's network namespace) or sleep (1.30+).
//! This module holds the pure parts; the worker runs them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};

/// What a hook does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run a command in the container.
    Exec(Vec<String>),
    /// An HTTP GET, run as an httpGet probe with a 200–399 answer succeeding.
    HttpGet(Box<Probe>),
    /// Wait.
    Sleep(Duration),
}

/// Hook handlers with nothing to do (or only a tcpSocket, which Kubernetes refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lifecycle handler has no exec, httpGet or sleep action")]
pub struct NoAction;

/// The action of `h`; `timeout` bounds an httpGet.
pub fn action(h: &LifecycleHandler, timeout: Duration) -> Result<Action, NoAction> {
    if let Some(cmd) = h.exec.as_ref().and_then(|e| e.command.clone()) {
        return Ok(Action::Exec(cmd));
    }
    if let Some(get) = &h.http_get {
        return Ok(Action::HttpGet(Box::new(Probe {
            http_get: Some(get.clone()),
            timeout_seconds: Some(timeout.as_secs().max(1) as i32),
            ..Default::default()
        })));
    }
    if let Some(s) = &h.sleep {
        return Ok(Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
    }
    Err(NoAction)
}

/// The grace left for the stop signal after a preStop hook took `spent` of `grace`: as the
/// kubelet, never less than 2 s.
pub fn grace_after_prestop(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(Duration::from_secs(2))
}

/// The kubelet's FailedPostStartHook / FailedPreStopHook event message for an exec hook.
pub fn exec_failure(
    cmd: &[String],
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
    error: &str,
    output: &str,
) -> String {
    format!(
        "Exec lifecycle hook ([{}]) for Container {container:?} in Pod \"{pod}_{namespace}({uid})\" failed - error: {error}, message: {output:?}",
        cmd.join(" ")
    )
}

/// The kubelet's event message for an httpGet hook.
pub fn http_failure(container: &str, pod: &str, namespace: &str, uid: &str, error: &str) -> String {
    format!(
        "HTTP lifecycle hook for Container {container:?} in Pod \"{pod}_{namespace}({uid})\" failed - error: {error}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(v: serde_json::Value) -> LifecycleHandler {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn actions_from_handlers() {
        let t = Duration::from_secs(5);
        let table = [
            (
                serde_json::json!({"exec": {"command": ["sh", "-c", "true"]}}),
                Ok(Action::Exec(vec!["sh".into(), "-c".into(), "true".into()])),
            ),
            (
                serde_json::json!({"sleep": {"seconds": 3}}),
                Ok(Action::Sleep(Duration::from_secs(3))),
            ),
            (
                serde_json::json!({"sleep": {"seconds": -1}}),
                Ok(Action::Sleep(Duration::ZERO)),
            ),
            (
                serde_json::json!({"tcpSocket": {"port": 80}}),
                Err(NoAction),
            ),
            (serde_json::json!({}), Err(NoAction)),
        ];
        for (h, want) in table {
            assert_eq!(action(&handler(h.clone()), t), want, "{h}");
        }
        let Ok(Action::HttpGet(p)) = action(
            &handler(serde_json::json!({"httpGet": {"path": "/x", "port": 80}})),
            t,
        ) else {
            panic!("not an httpGet")
        };
        assert_eq!(p.timeout_seconds, Some(5));
        assert_eq!(p.http_get.unwrap().path.as_deref(), Some("/x"));
    }

    #[test]
    fn grace_left_after_the_hook() {
        let s = Duration::from_secs;
        for (grace, spent, left) in [(30, 5, 25), (30, 29, 2), (30, 40, 2), (1, 0, 2)] {
            assert_eq!(grace_after_prestop(s(grace), s(spent)), s(left));
        }
    }

    #[test]
    fn failure_messages_as_the_kubelet() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(
            exec_failure(
                &cmd,
                "c",
                "p",
                "ns",
                "u1",
                "command 'sh -c exit 3' exited with 3",
                ""
            ),
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"c\" in Pod \"p_ns(u1)\" failed - error: command 'sh -c exit 3' exited with 3, message: \"\""
        );
        assert_eq!(
            http_failure("c", "p", "ns", "u1", "HTTP probe failed"),
            "HTTP lifecycle hook for Container \"c\" in Pod \"p_ns(u1)\" failed - error: HTTP probe failed"
        );
    }
}

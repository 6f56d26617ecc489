//! OCI hooks. Each hook gets the container state as JSON on stdin and runs with its own
//! args and env; a hook that outlives its `timeout` is killed.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// The lifecycle points hooks attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Deprecated alias of createRuntime, run just before it.
    Prestart,
    /// In the runtime namespace, after namespaces exist, before pivot_root.
    CreateRuntime,
    /// In the container namespace, before pivot_root.
    CreateContainer,
    /// In the container, at start, before the user program.
    StartContainer,
    /// In the runtime namespace, after the user program started.
    Poststart,
    /// In the runtime namespace, after the container is deleted.
    Poststop,
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        })
    }
}

/// A hook that failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It could not be started.
    #[error("{kind} hook {path} could not run")]
    Spawn {
        /// Which lifecycle point.
        kind: HookKind,
        /// The program.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited non-zero.
    #[error("{kind} hook {path} failed with {status}: {stderr}")]
    Failed {
        /// Which lifecycle point.
        kind: HookKind,
        /// The program.
        path: PathBuf,
        /// Exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// It ran past its timeout and was killed.
    #[error("{kind} hook {path} timed out after {secs} s")]
    Timeout {
        /// Which lifecycle point.
        kind: HookKind,
        /// The program.
        path: PathBuf,
        /// The timeout.
        secs: i64,
    },
}

/// Runs `hooks` in order with `state` (OCI state JSON) on stdin; stops at the first failure.
pub fn run(kind: HookKind, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for hook in hooks {
        run_one(kind, hook, state)?;
    }
    Ok(())
}

fn run_one(kind: HookKind, hook: &Hook, state: &str) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    tracing::debug!(%kind, path = %path.display(), "running hook");
    let spawn_err = |source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // a hook that does not read its stdin is fine: ignore EPIPE
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = match deadline {
        None => child.wait().map_err(spawn_err)?,
        // poll with a deadline: std has no wait-with-timeout for a child
        Some((secs, at)) => loop {
            if let Some(status) = child.try_wait().map_err(spawn_err)? {
                break status;
            }
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { kind, path, secs });
            }
            std::thread::sleep(Duration::from_millis(2));
        },
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        return Err(HookError::Failed {
            kind,
            path,
            status,
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default().path("/bin/sh").args(vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
        ]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hooks_get_state_on_stdin_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = out.display();
        let hooks = vec![
            sh(&format!("cat >> {o}; echo >> {o}"), None),
            sh(&format!("echo second >> {o}"), None),
        ];
        run(HookKind::Prestart, &hooks, r#"{"id":"c"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "{\"id\":\"c\"}\nsecond\n"
        );
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let err = run(
            HookKind::Poststart,
            &[sh("echo bad >&2; exit 3", None)],
            "{}",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("poststart hook /bin/sh failed"),
            "{err}"
        );
        assert!(err.to_string().contains("bad"), "{err}");
        let err = run(HookKind::Prestart, &[sh("sleep 5", Some(1))], "{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { secs: 1, .. }), "{err}");
    }
}

//! Commands run inside a running container for exec probes and exec lifecycle hooks:
//! `skiff runtime --root <runtime root> exec --pid-file F <id> -- cmd…` as a child process
//! (the agent is multi-threaded, so it never forks into a container itself). The
//! command gets the container's env, cwd and user. As the kubelet, stdout and stderr are
//! kept up to [`MAX_OUTPUT`] bytes and a command over its timeout is killed (SIGKILL to
//! the process in the container, then to the runtime) and counts as failed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Output kept of an exec (the kubelet's `maxReadLength` for probes, 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// Failures to run an exec at all (a command that runs and fails is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The runtime binary could not be started.
    #[error("cannot run {exe}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the runtime failed.
    #[error("cannot wait for the exec of {id}")]
    Wait {
        /// The container id.
        id: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code (`None` when killed by a signal or on timeout).
    pub exit_code: Option<i32>,
    /// stdout then stderr, at most [`MAX_OUTPUT`] bytes.
    pub output: Vec<u8>,
    /// It ran over its timeout and was killed.
    pub timed_out: bool,
}

impl Outcome {
    /// Exit code 0 within the timeout.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// A one-line account as the kubelet puts it in events: the output, or what ended it.
    pub fn describe(&self, command: &[String]) -> String {
        let out = String::from_utf8_lossy(&self.output).trim().to_string();
        if self.timed_out {
            // the kubelet's words
            format!("command {:?} timed out", command.join(" "))
        } else if !out.is_empty() {
            out
        } else {
            match self.exit_code {
                Some(c) => format!("command {:?} exited with {c}", command.join(" ")),
                None => format!("command {:?} was killed", command.join(" ")),
            }
        }
    }
}

/// Keeps the first `limit` bytes of `r` and drains the rest (the writer must never block).
async fn read_bounded(mut r: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Runs `command` in container `id` of the runtime at `runtime_root` through `exe`
/// (the skiff binary), killing it after `timeout`. `scratch` is a directory for the pid file.
pub async fn run(
    exe: &Path,
    runtime_root: &Path,
    scratch: &Path,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<Outcome, ExecError> {
    let _ = std::fs::create_dir_all(scratch);
    let pid_file = scratch.join(format!(
        "{id}-{}.pid",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("runtime")
        .arg("--root")
        .arg(runtime_root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(read_bounded(o, MAX_OUTPUT)));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(read_bounded(e, MAX_OUTPUT)));
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => (s, false),
        Err(_) => {
            tracing::debug!(container = %id, command = ?command, "exec timed out, killing it");
            kill_from_pid_file(&pid_file);
            let _ = child.start_kill();
            (child.wait().await, true)
        }
    };
    let _ = std::fs::remove_file(&pid_file);
    let status = status.map_err(|source| ExecError::Wait {
        id: id.to_string(),
        source,
    })?;
    let mut output = Vec::new();
    for task in [out, err].into_iter().flatten() {
        // a process the command left behind may hold the pipe open: do not wait for it
        match tokio::time::timeout(Duration::from_millis(500), task).await {
            Ok(Ok(bytes)) => output.extend(bytes),
            _ => tracing::debug!(container = %id, "exec output still open, not read to its end"),
        }
    }
    output.truncate(MAX_OUTPUT);
    Ok(Outcome {
        exit_code: if timed_out { None } else { status.code() },
        output,
        timed_out,
    })
}

/// SIGKILL to the pid the runtime wrote (the command inside the container).
fn kill_from_pid_file(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_bounded_and_drained() {
        let data = vec![b'x'; MAX_OUTPUT * 3];
        let kept = read_bounded(&data[..], MAX_OUTPUT).await;
        assert_eq!(kept.len(), MAX_OUTPUT);
        assert_eq!(read_bounded(&b"ok\n"[..], MAX_OUTPUT).await, b"ok\n");
    }

    #[test]
    fn success_and_description() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 2".to_string()];
        let table = [
            (
                Some(0),
                "",
                false,
                true,
                "command \"sh -c exit 2\" exited with 0",
            ),
            (
                Some(2),
                "",
                false,
                false,
                "command \"sh -c exit 2\" exited with 2",
            ),
            (Some(1), " not ready\n", false, false, "not ready"),
            (
                None,
                "partial",
                true,
                false,
                "command \"sh -c exit 2\" timed out",
            ),
            (
                None,
                "",
                false,
                false,
                "command \"sh -c exit 2\" was killed",
            ),
        ];
        for (code, out, timed_out, ok, text) in table {
            let o = Outcome {
                exit_code: code,
                output: out.as_bytes().to_vec(),
                timed_out,
            };
            assert_eq!(o.success(), ok, "{o:?}");
            assert_eq!(o.describe(&cmd), text);
        }
    }

    /// A real child through the same path: a stand-in "runtime" script that ignores its
    /// runtime arguments and runs the command after `--`.
    #[tokio::test]
    async fn timeout_kills_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("fake-runtime");
        std::fs::write(
            &exe,
            "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done; shift\nexec \"$@\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        let t = Duration::from_secs(1);
        let ok = run(
            &exe,
            dir.path(),
            dir.path(),
            "c",
            &sh("echo hi; echo err >&2"),
            t,
        )
        .await
        .unwrap();
        assert!(ok.success());
        assert_eq!(ok.output, b"hi\nerr\n");
        let fail = run(&exe, dir.path(), dir.path(), "c", &sh("exit 3"), t)
            .await
            .unwrap();
        assert_eq!(fail.exit_code, Some(3));
        let started = std::time::Instant::now();
        let slow = run(&exe, dir.path(), dir.path(), "c", &sh("sleep 30"), t)
            .await
            .unwrap();
        assert!(slow.timed_out && !slow.success());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

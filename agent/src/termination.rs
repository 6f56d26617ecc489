//! Termination messages as the kubelet makes them: a file per container run, bind-mounted
//! at `terminationMessagePath` (default `/dev/termination-log`), read when the run ended
//! (its last 4096 bytes); with `terminationMessagePolicy: FallbackToLogsOnError` a failed
//! run with an empty file gets the end of its log instead (the last 80 lines, at most their
//! last 2048 bytes). The status then keeps at most 12 KiB of messages per pod, split evenly
//! over the pod's containers (the kubelet status manager's `normalizeStatus`).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus};

use crate::logs::{Decoder, LogLine};

/// The default `terminationMessagePath`.
pub const DEFAULT_PATH: &str = "/dev/termination-log";
/// The most one container's message file gives (the kubelet's
/// `MaxContainerTerminationMessageLength`).
pub const MAX_CONTAINER_MESSAGE: usize = 4096;
/// The lines of the log a fallback message takes (`MaxContainerTerminationMessageLogLines`).
pub const MAX_LOG_LINES: usize = 80;
/// The bytes of the log a fallback message takes (`MaxContainerTerminationMessageLogLength`).
pub const MAX_LOG_BYTES: usize = 2048;
/// The most all of a pod's messages take (`MaxPodTerminationMessageLogLength`).
pub const MAX_POD_MESSAGES: usize = 12 * 1024;

/// Errors making a run's message file.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the termination message file {path}")]
pub struct TerminationError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The container's `terminationMessagePath`, `None` when set to the empty string (no file).
pub fn container_path(c: &Container) -> Option<String> {
    match c.termination_message_path.as_deref() {
        None => Some(DEFAULT_PATH.to_string()),
        Some("") => None,
        Some(p) => Some(p.to_string()),
    }
}

/// Whether the container falls back to its log on error.
pub fn falls_back_to_logs(c: &Container) -> bool {
    c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
}

/// The host file of run `restart` of container `name`, under the pod's dir in the root dir.
pub fn host_file(pod_root: &Path, name: &str, restart: u32) -> PathBuf {
    pod_root
        .join("containers")
        .join(name)
        .join(format!("{restart}.termination-log"))
}

/// Makes the (empty) message file of a run, writable by every user as the kubelet does so
/// that containers running as non-root can write it.
pub fn create(file: &Path) -> Result<(), TerminationError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| TerminationError {
        path: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::File::create(file).map_err(err)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)).map_err(err)
}

/// The last `max` bytes of a file (the kubelet's `tail.ReadAtMost`).
fn read_at_most(file: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(file)?;
    let len = f.metadata()?.len();
    if len > max as u64 {
        f.seek(SeekFrom::Start(len - max as u64))?;
    }
    let mut buf = Vec::with_capacity(max.min(len as usize));
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The end of a container's CRI log as a fallback message: the last [`MAX_LOG_LINES`]
/// lines of both streams, of which the last [`MAX_LOG_BYTES`] bytes (a circular buffer in
/// the kubelet).
pub fn log_tail(log: &[u8]) -> String {
    let mut dec = Decoder::default();
    let lines: Vec<LogLine> = log
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .filter_map(|r| dec.push(r))
        .collect();
    let skip = lines.len().saturating_sub(MAX_LOG_LINES);
    let text: Vec<u8> = lines[skip..]
        .iter()
        .flat_map(|l| l.text.iter().copied())
        .collect();
    let start = text.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// What the kubelet puts in `state.terminated.message` for a finished run: the run's
/// message file (`file`, `None` without a terminationMessagePath), or with `fallback` (the
/// policy is FallbackToLogsOnError and the run failed) and an empty or missing file, the end
/// of the run's log. `None` when there is nothing to say.
pub fn message(file: Option<&Path>, fallback: bool, log: &Path) -> Option<String> {
    let (text, check_logs) = match file {
        None => (String::new(), fallback),
        Some(f) => match read_at_most(f, MAX_CONTAINER_MESSAGE) {
            Ok(data) => (
                String::from_utf8_lossy(&data).into_owned(),
                fallback && data.is_empty(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), fallback),
            Err(e) => (
                format!("Error on reading termination log {}: {e}", f.display()),
                false,
            ),
        },
    };
    let text = if check_logs {
        match std::fs::read(log) {
            Ok(data) => log_tail(&data),
            Err(e) => format!("Error on reading termination message from logs: {e}"),
        }
    } else {
        text
    };
    (!text.is_empty()).then_some(text)
}

/// Joins the runtime's message (a start error) and the container's, as the kubelet does.
pub fn join(runtime: Option<String>, container: Option<String>) -> Option<String> {
    match (runtime, container) {
        (Some(r), Some(c)) if !r.is_empty() => Some(format!("{r}: {c}")),
        (r, None) => r,
        (_, c) => c,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Keeps the pod's messages within [`MAX_POD_MESSAGES`]: each terminated state and last
/// state keeps at most its share (12 KiB over the number of containers and init
/// containers), as the kubelet's status manager does before it sends a status.
pub fn limit_pod_messages(pod: &Pod, status: &mut PodStatus) {
    let count = pod
        .spec
        .as_ref()
        .map(|s| s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len))
        .unwrap_or(0);
    let share = MAX_POD_MESSAGES / count.max(1);
    let cut = |cs: &mut Vec<ContainerStatus>| {
        for c in cs {
            for st in [c.state.as_mut(), c.last_state.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(m) = st.terminated.as_mut().and_then(|t| t.message.as_mut()) {
                    truncate(m, share);
                }
            }
        }
    };
    if let Some(cs) = status.container_statuses.as_mut() {
        cut(cs);
    }
    if let Some(cs) = status.init_container_statuses.as_mut() {
        cut(cs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cri(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(format!("2026-12-01T10:00:00.000000000Z {l}\n").as_bytes());
        }
        out
    }

    #[test]
    fn paths_and_policy() {
        let c = |v: serde_json::Value| -> Container { serde_json::from_value(v).unwrap() };
        let table = [
            (json!({"name": "a"}), Some(DEFAULT_PATH), false),
            (
                json!({"name": "a", "terminationMessagePath": "/tmp/m"}),
                Some("/tmp/m"),
                false,
            ),
            (
                json!({"name": "a", "terminationMessagePath": ""}),
                None,
                false,
            ),
            (
                json!({"name": "a", "terminationMessagePolicy": "FallbackToLogsOnError"}),
                Some(DEFAULT_PATH),
                true,
            ),
            (
                json!({"name": "a", "terminationMessagePolicy": "File"}),
                Some(DEFAULT_PATH),
                false,
            ),
        ];
        for (v, path, fb) in table {
            let c = c(v.clone());
            assert_eq!(container_path(&c).as_deref(), path, "{v}");
            assert_eq!(falls_back_to_logs(&c), fb, "{v}");
        }
    }

    #[test]
    fn log_tail_takes_80_lines_and_2048_bytes() {
        // partial records join; both streams count
        let log = cri(&["stdout P hel", "stdout F lo", "stderr F oops"]);
        assert_eq!(log_tail(&log), "hello\noops\n");
        let many: Vec<String> = (0..100).map(|i| format!("stdout F l{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = log_tail(&cri(&refs));
        assert!(t.starts_with("l20\n") && t.ends_with("l99\n"), "{t}");
        let long: Vec<String> = (0..10)
            .map(|i| format!("stdout F {}", i.to_string().repeat(300)))
            .collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let t = log_tail(&cri(&refs));
        assert_eq!(t.len(), MAX_LOG_BYTES);
        assert!(t.ends_with(&format!("{}\n", "9".repeat(300))));
        assert_eq!(log_tail(b""), "");
    }

    #[test]
    fn message_from_file_or_log() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m");
        let log = dir.path().join("0.log");
        std::fs::write(&log, cri(&["stdout F from the log"])).unwrap();
        // missing file: nothing, or the log when falling back
        assert_eq!(message(Some(&file), false, &log), None);
        assert_eq!(
            message(Some(&file), true, &log).as_deref(),
            Some("from the log\n")
        );
        create(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o666
        );
        assert_eq!(message(Some(&file), false, &log), None);
        assert_eq!(
            message(Some(&file), true, &log).as_deref(),
            Some("from the log\n")
        );
        std::fs::write(&file, "bye").unwrap();
        assert_eq!(message(Some(&file), true, &log).as_deref(), Some("bye"));
        // the file's last 4096 bytes
        let big = format!("{}{}", "a".repeat(5000), "z".repeat(10));
        std::fs::write(&file, &big).unwrap();
        let m = message(Some(&file), false, &log).unwrap();
        assert_eq!(m.len(), MAX_CONTAINER_MESSAGE);
        assert!(m.ends_with("zzzzzzzzzz"));
        // no path: only the log fallback
        assert_eq!(message(None, false, &log), None);
        assert_eq!(message(None, true, &log).as_deref(), Some("from the log\n"));
        // an unreadable log says so
        let gone = dir.path().join("none.log");
        assert!(
            message(None, true, &gone)
                .unwrap()
                .starts_with("Error on reading termination message from logs")
        );
    }

    #[test]
    fn join_runtime_and_container_messages() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(join(None, None), None);
        assert_eq!(join(s("boom"), None), s("boom"));
        assert_eq!(join(None, s("bye")), s("bye"));
        assert_eq!(join(s("boom"), s("bye")), s("boom: bye"));
        assert_eq!(join(s(""), s("bye")), s("bye"));
    }

    #[test]
    fn pod_messages_share_12k() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b"}]}}))
        .unwrap();
        let term = |m: &str| json!({"terminated": {"exitCode": 1, "message": m}});
        let long = "x".repeat(5000);
        let mut st: PodStatus = serde_json::from_value(json!({
            "containerStatuses": [
                {"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
                 "state": term(&long), "lastState": term(&long)},
                {"name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": term("short")}],
            "initContainerStatuses": [
                {"name": "i", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": term(&"€".repeat(2000))}]
        }))
        .unwrap();
        limit_pod_messages(&pod, &mut st);
        let msg = |c: &ContainerStatus, last: bool| {
            let s = if last { &c.last_state } else { &c.state };
            s.as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .message
                .clone()
                .unwrap()
        };
        let cs = st.container_statuses.as_ref().unwrap();
        assert_eq!(msg(&cs[0], false).len(), 4096);
        assert_eq!(msg(&cs[0], true).len(), 4096);
        assert_eq!(msg(&cs[1], false), "short");
        // cut on a character boundary
        let init = msg(&st.init_container_statuses.as_ref().unwrap()[0], false);
        assert_eq!(init.len(), 4095);
        assert!(init.chars().all(|c| c == '€'));
    }
}

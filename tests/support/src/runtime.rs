//! Driving a runc-compatible command line. [`Runtime::from_env`] picks the binary (skiff
//! under a `skiff-runc` symlink, or `SKIFF_TEST_RUNTIME`) and gives it a private `--root`
//! state directory, so tests run in parallel without seeing each other's containers.
//! [`Container`] is a guard for one container id: dropping it force-deletes the container,
//! and it borrows its [`Bundle`], so the bundle directory always outlives the container.
//!
//! The runtime's stdout and stderr go to files, not pipes: a detached container inherits
//! them, and a pipe would not reach end-of-file until the container exits.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::bundle::Bundle;
use crate::host::process_alive;

/// Environment variable naming the runtime under test: a program name or path, optionally
/// followed by leading arguments (`runc`, `/usr/bin/crun`, `/path/to/skiff runtime`).
pub const RUNTIME_ENV: &str = "SKIFF_TEST_RUNTIME";

/// How long one runtime command may take before it is killed and the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// What a runtime command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it (and, for detached containers, the container so far) wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code; `None` if a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `self` if the command exited 0, else an error with the whole output.
    pub fn ok(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }

    /// `self` if the command exited non-zero, else an error with the whole output.
    pub fn failed(self) -> Result<Self> {
        if self.status.success() {
            bail!("command succeeded but should have failed: {self}")
        } else {
            Ok(self)
        }
    }

    /// stdout without surrounding whitespace.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` → {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// A runtime binary with a private state directory.
#[derive(Debug)]
pub struct Runtime {
    program: OsString,
    leading_args: Vec<String>,
    name: String,
    scratch: TempDir,
    root: PathBuf,
    ids: Mutex<Vec<String>>,
    calls: AtomicU32,
}

impl Runtime {
    /// The runtime named by `SKIFF_TEST_RUNTIME`, or else skiff: `skiff_bin` (the test
    /// passes `env!("CARGO_BIN_EXE_skiff")`) invoked through a symlink named `skiff-runc`,
    /// which makes it behave as runc.
    pub fn from_env(skiff_bin: &str) -> Self {
        let scratch = match tempfile::Builder::new().prefix("skiff-rt-").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("cannot create a scratch directory for the runtime: {e}"),
        };
        let chosen = std::env::var(RUNTIME_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let (program, leading_args, name) = match chosen {
            Some(value) => {
                let mut words = value.split_whitespace().map(str::to_string);
                let program = words.next().unwrap_or_default();
                let name = Path::new(&program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| program.clone());
                (OsString::from(program), words.collect(), name)
            }
            None => {
                if !Path::new(skiff_bin).is_file() {
                    panic!("the skiff binary {skiff_bin} does not exist; build it with cargo");
                }
                let link = scratch.path().join("skiff-runc");
                if let Err(e) = std::os::unix::fs::symlink(skiff_bin, &link) {
                    panic!("cannot link {} to {skiff_bin}: {e}", link.display());
                }
                (link.into_os_string(), Vec::new(), "skiff-runc".to_string())
            }
        };
        let root = scratch.path().join("state");
        Runtime {
            program,
            leading_args,
            name,
            scratch,
            root,
            ids: Mutex::new(Vec::new()),
            calls: AtomicU32::new(0),
        }
    }

    /// The runtime's name (`skiff-runc`, `runc`, …), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `--root` state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Entries of the state directory (one per container a runc-like runtime knows).
    pub fn state_entries(&self) -> Vec<String> {
        match fs::read_dir(&self.root) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A container id unique across parallel tests and test processes; it is registered
    /// so that dropping the runtime force-deletes it.
    pub fn new_id(&self, tag: &str) -> String {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = format!("sk-{tag}-{}-{n}", std::process::id());
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.clone());
        }
        id
    }

    /// A guard for a new container id running `bundle`.
    pub fn container<'a>(&'a self, tag: &str, bundle: &'a Bundle) -> Container<'a> {
        Container {
            rt: self,
            id: self.new_id(tag),
            bundle,
        }
    }

    /// Runs `<runtime> --root <root> args…` with the default timeout.
    pub fn call(&self, args: &[&str]) -> Result<Output> {
        self.call_with(args, None, DEFAULT_TIMEOUT)
    }

    /// `<runtime> --root <root> args…`, for a test that handles the process itself.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.leading_args)
            .arg("--root")
            .arg(&self.root)
            .args(args);
        cmd
    }

    /// Runs `<runtime> --root <root> args…`, feeding `stdin` (or nothing), killing the
    /// runtime after `timeout`.
    pub fn call_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let out_path = self.scratch.path().join(format!("out-{n}"));
        let err_path = self.scratch.path().join(format!("err-{n}"));
        let in_path = self.scratch.path().join(format!("in-{n}"));
        let mut cmd = self.command(args);
        let command = format!(
            "{} --root {} {}",
            std::iter::once(self.name.as_str())
                .chain(self.leading_args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            self.root.display(),
            args.join(" ")
        );
        cmd.stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?);
        match stdin {
            Some(bytes) => {
                File::create(&in_path)?.write_all(bytes)?;
                cmd.stdin(File::open(&in_path)?);
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}` (is {} installed?)", self.name))?;
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = fs::read_to_string(&out_path).unwrap_or_default();
                let stderr = fs::read_to_string(&err_path).unwrap_or_default();
                bail!(
                    "`{command}` did not return within {timeout:?} and was killed\n\
                     --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                );
            }
            std::thread::sleep(interval);
            interval = (interval * 2).min(Duration::from_millis(10));
        };
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        for path in [&out_path, &err_path, &in_path] {
            let _ = fs::remove_file(path);
        }
        Ok(Output {
            command,
            status,
            stdout,
            stderr,
        })
    }

    /// `list` with extra flags (`--format json`, `-q`).
    pub fn list(&self, flags: &[&str]) -> Result<Output> {
        self.call(&[&["list"], flags].concat())
    }

    /// `features`.
    pub fn features(&self) -> Result<Output> {
        self.call(&["features"])
    }

    /// `spec --bundle dir` (plus flags such as `--rootless`).
    pub fn spec(&self, dir: &Path, flags: &[&str]) -> Result<Output> {
        self.call(&[&["spec", "--bundle", path_str(dir)?], flags].concat())
    }

    /// `state id`.
    pub fn state(&self, id: &str) -> Result<Output> {
        self.call(&["state", id])
    }

    /// `state id`, parsed.
    pub fn state_json(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.state(id)?.ok()?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`state {id}` did not print JSON: {:?}", out.stdout))
    }

    /// Force-deletes `id` whatever state it is in, best effort, for cleanup: `delete -f`,
    /// and if the runtime still knows the container afterwards, SIGKILL its init process
    /// and try again. Problems are reported on stderr, never as a panic.
    pub fn force_remove(&self, id: &str) {
        let Ok(state) = self.call_with(&["state", id], None, Duration::from_secs(20)) else {
            eprintln!("cleanup: `{} state {id}` hung", self.name);
            return;
        };
        if !state.status.success() {
            return; // not known to the runtime: nothing to remove
        }
        let pid = serde_json::from_str::<serde_json::Value>(&state.stdout)
            .ok()
            .and_then(|v| v["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 1);
        let delete = || self.call_with(&["delete", "--force", id], None, Duration::from_secs(20));
        if matches!(delete(), Ok(out) if out.status.success()) {
            return;
        }
        if let Some(pid) = pid.filter(|&p| process_alive(p)) {
            eprintln!(
                "cleanup: `{} delete --force {id}` failed; killing pid {pid}",
                self.name
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match delete() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("cleanup: could not delete container {id}: {out}"),
            Err(e) => eprintln!("cleanup: could not delete container {id}: {e:#}"),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let mut ids = self.ids.lock().map(|ids| ids.clone()).unwrap_or_default();
        if let Ok(out) = self.call_with(&["list", "-q"], None, Duration::from_secs(20)) {
            ids.extend(
                out.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            self.force_remove(&id);
        }
    }
}

/// One container id of a [`Runtime`], force-deleted on drop.
#[derive(Debug)]
pub struct Container<'a> {
    rt: &'a Runtime,
    id: String,
    bundle: &'a Bundle,
}

impl Container<'_> {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bundle it runs.
    pub fn bundle(&self) -> &Bundle {
        self.bundle
    }

    /// The runtime it belongs to.
    pub fn runtime(&self) -> &Runtime {
        self.rt
    }

    fn bundle_arg(&self) -> Result<&str> {
        path_str(self.bundle.path())
    }

    /// `run --bundle B [flags] id`: runs in the foreground, returns the container's exit.
    pub fn run(&self, flags: &[&str]) -> Result<Output> {
        self.run_with_timeout(flags, DEFAULT_TIMEOUT)
    }

    /// `run` with a timeout of its own.
    pub fn run_with_timeout(&self, flags: &[&str], timeout: Duration) -> Result<Output> {
        let args = [
            &["run", "--bundle", self.bundle_arg()?],
            flags,
            &[self.id.as_str()],
        ]
        .concat();
        self.rt.call_with(&args, None, timeout)
    }

    /// `run -d`, checked, and the init process's pid from `state`.
    pub fn run_detached(&self) -> Result<u32> {
        self.run(&["--detach"])?.ok()?;
        self.pid()
    }

    /// `create --bundle B [flags] id`.
    pub fn create(&self, flags: &[&str]) -> Result<Output> {
        let args = [
            &["create", "--bundle", self.bundle_arg()?],
            flags,
            &[self.id.as_str()],
        ]
        .concat();
        self.rt.call(&args)
    }

    /// `start id`.
    pub fn start(&self) -> Result<Output> {
        self.rt.call(&["start", &self.id])
    }

    /// `state id`.
    pub fn state(&self) -> Result<Output> {
        self.rt.state(&self.id)
    }

    /// `state id`, parsed.
    pub fn state_json(&self) -> Result<serde_json::Value> {
        self.rt.state_json(&self.id)
    }

    /// The `status` field of `state` (`created`, `running`, `paused`, `stopped`).
    pub fn status(&self) -> Result<String> {
        let state = self.state_json()?;
        state["status"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("state has no status: {state}"))
    }

    /// The `pid` field of `state`.
    pub fn pid(&self) -> Result<u32> {
        let state = self.state_json()?;
        let pid = state["pid"]
            .as_u64()
            .with_context(|| format!("state has no pid: {state}"))?;
        Ok(u32::try_from(pid)?)
    }

    /// `kill id signal`.
    pub fn kill(&self, signal: &str) -> Result<Output> {
        self.rt.call(&["kill", &self.id, signal])
    }

    /// `delete id` (without `--force`).
    pub fn delete(&self) -> Result<Output> {
        self.rt.call(&["delete", &self.id])
    }

    /// `delete --force id`.
    pub fn delete_force(&self) -> Result<Output> {
        self.rt.call(&["delete", "--force", &self.id])
    }

    /// `exec [flags] id args…`.
    pub fn exec(&self, flags: &[&str], args: &[&str]) -> Result<Output> {
        self.rt
            .call(&[&["exec"], flags, &[self.id.as_str()], args].concat())
    }

    /// `pause id`.
    pub fn pause(&self) -> Result<Output> {
        self.rt.call(&["pause", &self.id])
    }

    /// `resume id`.
    pub fn resume(&self) -> Result<Output> {
        self.rt.call(&["resume", &self.id])
    }

    /// `update [flags] id`.
    pub fn update(&self, flags: &[&str]) -> Result<Output> {
        self.rt
            .call(&[&["update"], flags, &[self.id.as_str()]].concat())
    }

    /// `events [flags] id`.
    pub fn events(&self, flags: &[&str]) -> Result<Output> {
        self.rt
            .call(&[&["events"], flags, &[self.id.as_str()]].concat())
    }

    /// `ps [flags] id`.
    pub fn ps(&self, flags: &[&str]) -> Result<Output> {
        self.rt
            .call(&[&["ps"], flags, &[self.id.as_str()]].concat())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.rt.force_remove(&self.id);
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path is not UTF-8: {}", path.display()))
}

//! `skiff master` as a child process on a loopback port, and the real kubectl against it.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running `skiff master`; killed (SIGKILL) and reaped when dropped.
pub struct MasterProcess(pub Child);

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl MasterProcess {
    /// Starts `skiff master` (the binary `skiff`) on `127.0.0.1:port` with its data in
    /// `dir` and `extra` arguments, its log appended to `dir/master.log`, and waits until
    /// `/readyz` answers through its admin kubeconfig.
    pub fn start(skiff: &Path, dir: &Path, port: u16, extra: &[&str]) -> Result<MasterProcess> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("master.log"))?;
        let child = Command::new(skiff)
            .args(["master", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", skiff.display()))?;
        let m = MasterProcess(child);
        let kubeconfig = dir.join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if kubeconfig.exists() && kubectl(&kubeconfig, &["get", "--raw", "/readyz"], None)?.0 {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!(
                    "the master did not become ready; its log:\n{}",
                    std::fs::read_to_string(dir.join("master.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs the real kubectl with `kubeconfig`, `args` and optional `stdin`: whether it
/// succeeded, and its stdout followed by its stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<(bool, String)> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("kubectl is installed on these machines")?;
    let mut input = child.stdin.take().context("kubectl's stdin")?;
    if let Some(s) = stdin {
        input.write_all(s.as_bytes())?;
    }
    drop(input);
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

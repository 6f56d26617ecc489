//! `skiff install` / `skiff uninstall` into a temp root, `skiff agent` refusing bad flags,
//! and the config file and `--log-format json` of a real `skiff master`. Needs root
//! (uninstall unmounts a tmpfs the test mounts under the temp root). Nothing outside the
//! temp dirs is touched: with a `--root` other than `/` neither systemd nor the host's
//! network are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file and symlink under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn is_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == p)
}

/// Unmounts what a failed test left under its root.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn install_then_uninstall_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let r = root.to_str().unwrap();
    let out = ok(&["install", "--root", r]);
    // no systemd for a root that is not `/`: it says how to start skiff by hand
    assert!(out.contains("systemd is not running"), "{out}");
    assert!(
        out.contains("/usr/local/bin/skiff --config /etc/skiff/config.yaml master"),
        "{out}"
    );

    let lib = root.join("usr/local/lib/skiff");
    let bin = lib.join("skiff");
    let built = std::fs::read(env!("CARGO_BIN_EXE_skiff")).unwrap();
    assert!(std::fs::read(&bin).unwrap() == built, "the binary differs");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/local/bin/skiff")).unwrap(),
        PathBuf::from("../lib/skiff/skiff")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/local/bin/skiff-runc")).unwrap(),
        PathBuf::from("skiff")
    );
    let mount = read(&root.join("etc/systemd/system/usr-local-lib-skiff.mount"));
    for want in [
        "What=/usr/local/lib/skiff",
        "Where=/usr/local/lib/skiff",
        "Options=bind,ro",
    ] {
        assert!(mount.lines().any(|l| l == want), "{want} missing:\n{mount}");
    }
    let master = read(&root.join("etc/systemd/system/skiff-master.service"));
    let agent = read(&root.join("etc/systemd/system/skiff-agent.service"));
    for unit in [&master, &agent] {
        for want in [
            "Wants=network-online.target usr-local-lib-skiff.mount",
            "Delegate=yes",
            "KillMode=process",
            "Restart=always",
            "LimitNOFILE=1048576",
            "ExecStartPre=-/sbin/modprobe overlay",
            "ExecStartPre=-/sbin/modprobe br_netfilter",
        ] {
            assert!(unit.lines().any(|l| l == want), "{want} missing:\n{unit}");
        }
    }
    assert!(
        master.contains("ExecStart=/usr/local/bin/skiff --config /etc/skiff/config.yaml master\n")
    );
    assert!(
        agent.contains(
            "After=network-online.target skiff-master.service usr-local-lib-skiff.mount\n"
        ),
        "{agent}"
    );
    let config = root.join("etc/skiff/config.yaml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(read(&config).contains("token-file: /var/lib/skiff/master/node-token"));
    assert_eq!(
        std::fs::read_link(root.join("etc/skiff/admin.kubeconfig")).unwrap(),
        PathBuf::from("/var/lib/skiff/master/admin.kubeconfig")
    );
    assert!(read(&root.join("usr/share/bash-completion/completions/skiff")).contains("skiff"));

    // a second install keeps an edited config file
    std::fs::write(&config, "master:\n  data-dir: /srv/skiff\n").unwrap();
    let out = ok(&["install", "--root", r]);
    assert!(out.contains("kept /etc/skiff/config.yaml"), "{out}");
    assert_eq!(read(&config), "master:\n  data-dir: /srv/skiff\n");
    std::fs::write(&config, "").unwrap();

    // an update while the binary's directory is the read-only mount the unit makes: the new
    // binary is written beneath it and shows through it, and the mount stays
    std::fs::write(&bin, "an older skiff").unwrap();
    let _lib_guard = Unmount(lib.clone());
    let st = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&lib)
        .arg(&lib)
        .status()
        .unwrap();
    assert!(st.success(), "read-only bind mount of {}", lib.display());
    assert_eq!(
        std::fs::write(lib.join("x"), "")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    ok(&["install", "--root", r]);
    assert!(is_mounted(&lib), "the install lifted the host's mount");
    assert!(
        std::fs::read(&bin).unwrap() == built,
        "the update did not land"
    );
    assert!(std::fs::OpenOptions::new().append(true).open(&bin).is_err());

    // what a running node leaves: a pod's mount, its cgroups, its logs, state
    let uid = "0c1d2e3f-aaaa-bbbb-cccc-000000000001";
    let rootfs = root.join(format!("var/lib/skiff/pods/{uid}/rootfs"));
    std::fs::create_dir_all(&rootfs).unwrap();
    let _guard = Unmount(rootfs.clone());
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs (the test needs root)");
    std::fs::write(rootfs.join("file"), "x").unwrap();
    for d in [
        "sys/fs/cgroup/skiff/burstable/podx/c1".to_string(),
        "sys/fs/cgroup/memory/skiff/podx".into(),
        "sys/fs/cgroup/memory/system.slice".into(),
        format!("var/log/pods/default_web_{uid}/web"),
        "var/log/pods/default_other_ffff".into(),
        "run/skiff/runtime/c1".into(),
        "var/lib/skiff/master".into(),
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/skiff/master/store.redb"), "db").unwrap();

    let out = ok(&["uninstall", "--root", r]);
    assert!(out.contains("skiff is uninstalled"), "{out}");
    assert!(!is_mounted(&rootfs));
    assert!(!is_mounted(&lib));
    // only what is not skiff's is left: another pod log dir and a foreign cgroup
    let mut left = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            stack.push(e.path());
            left.push(e.path().strip_prefix(root).unwrap().display().to_string());
        }
    }
    for gone in [
        "usr/local/lib/skiff",
        "etc/systemd/system/usr-local-lib-skiff.mount",
        "usr/local/bin/skiff",
        "usr/local/bin/skiff-runc",
        "etc/skiff",
        "etc/systemd/system/skiff-master.service",
        "etc/systemd/system/skiff-agent.service",
        "var/lib/skiff",
        "run/skiff",
        "sys/fs/cgroup/skiff",
        "sys/fs/cgroup/memory/skiff",
        "usr/share/bash-completion/completions/skiff",
    ] {
        assert!(!left.iter().any(|l| l == gone), "{gone} left: {left:#?}");
    }
    assert!(left.iter().any(|l| l == "var/log/pods/default_other_ffff"));
    assert!(
        left.iter()
            .any(|l| l == "sys/fs/cgroup/memory/system.slice")
    );
    assert!(tree(root).is_empty(), "files left: {:?}", tree(root));
}

#[test]
fn worker_install_writes_its_credentials() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let ca = t.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let r = root.to_str().unwrap();
    let out = ok(&[
        "install",
        "--root",
        r,
        "--server",
        "https://10.0.0.1:6443",
        "--token",
        "abc123",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(
        out.contains("skiff --config /etc/skiff/config.yaml agent"),
        "{out}"
    );
    assert!(!out.contains("master &"), "{out}");
    assert!(
        !root
            .join("etc/systemd/system/skiff-master.service")
            .exists()
    );
    assert!(root.join("etc/systemd/system/skiff-agent.service").exists());
    assert!(!root.join("etc/skiff/admin.kubeconfig").exists());
    assert_eq!(read(&root.join("etc/skiff/node-token")), "abc123\n");
    assert_eq!(read(&root.join("etc/skiff/ca.crt")), read(&ca));
    let config = read(&root.join("etc/skiff/config.yaml"));
    assert!(config.contains("server: https://10.0.0.1:6443"), "{config}");
    assert!(!config.contains("master:"), "{config}");
    // the written config is one the agent accepts (parsing stops at the missing CA chain)
    ok(&["uninstall", "--root", r]);
    assert!(tree(&root).is_empty(), "{:?}", tree(&root));

    // a worker needs all three
    let out = skiff(&["install", "--root", r, "--server", "https://10.0.0.1:6443"]);
    assert!(!out.status.success());
    let out = skiff(&["install", "--root", r, "--role", "agent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_file(p: &Path, child: &mut Proc, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!("skiff exited ({st}): {}", read(log));
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear: {}",
            p.display(),
            read(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn master_takes_config_file_flags_win_logs_json() {
    let t = tempfile::tempdir().unwrap();
    let from_file = t.path().join("from-file");
    let config = t.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "master:\n  data-dir: {}\n  listen: 127.0.0.1:1\n  no-controllers: true\n",
            from_file.display()
        ),
    )
    .unwrap();
    let log = t.path().join("master.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // data-dir comes from the file; --listen on the command line wins over the file's
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
            "master",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SKIFF_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    wait_file(&from_file.join("admin.kubeconfig"), &mut child, &log);
    let kubeconfig = read(&from_file.join("admin.kubeconfig"));
    assert!(
        kubeconfig.contains(&format!("127.0.0.1:{port}")),
        "{kubeconfig}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&log).contains("api server listening") {
        assert!(
            Instant::now() < deadline,
            "no startup log line: {}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);
    // every log line is one JSON object with a level and a message
    let text = read(&log);
    let mut n = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(n > 0, "no JSON log lines in {text:?}");

    // a bad key: exit 2 naming the key and the file
    std::fs::write(&config, "master:\n  data-dirr: /x\n").unwrap();
    let out = skiff(&["--config", config.to_str().unwrap(), "master"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master.data-dirr") && err.contains(config.to_str().unwrap()),
        "{err}"
    );
    // a named file that is missing is an error; other commands are not affected by the file
    let missing = t.path().join("missing.yaml");
    let out = skiff(&[
        "--config",
        missing.to_str().unwrap(),
        "master",
        "--data-dir",
        "/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn completions_for_each_shell() {
    for (shell, want) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef skiff"),
        ("fish", "complete -c skiff"),
    ] {
        let out = ok(&["completion", shell]);
        assert!(out.contains(want), "{shell}: {want} missing");
        for sub in ["master", "agent", "install", "uninstall"] {
            assert!(out.contains(sub), "{shell}: {sub} missing");
        }
    }
}

/// `skiff agent` checks its eviction flags before it makes anything: a bad
/// `--eviction-minimum-reclaim` (or threshold) is a clear error and no directory appears.
#[test]
fn agent_refuses_bad_eviction_flags_and_makes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = |d: &str| t.path().join(d).to_str().unwrap().to_string();
    let (root, run, log) = (dir("root"), dir("run"), dir("log"));
    for (flag, want) in [
        (
            "--eviction-minimum-reclaim=memory.available<1Gi",
            "invalid eviction minimum reclaim \"memory.available<1Gi\"",
        ),
        (
            "--eviction-minimum-reclaim=nodefs.available=-5Mi",
            "invalid eviction minimum reclaim \"nodefs.available=-5Mi\"",
        ),
        (
            "--eviction-minimum-reclaim=pid.available=1",
            "unknown eviction signal \"pid.available\"",
        ),
        (
            "--eviction-hard=memory.available>1Gi",
            "invalid eviction threshold",
        ),
    ] {
        let out = skiff(&[
            "agent",
            "--server",
            "https://127.0.0.1:1",
            "--token",
            "x",
            "--node-ip",
            "127.0.0.1",
            "--root-dir",
            &root,
            "--run-dir",
            &run,
            "--log-dir",
            &log,
            flag,
        ]);
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{flag}: {err}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "{flag}");
    }
}

//! End-to-end tests of the image side of the command line: `skiff image …`, `skiff run`,
//! `skiff ps` and `skiff rm`, driven through the real binary with a private `--root` per
//! test. Images are built from the static busybox (with umoci, or layer by layer with the
//! tar crate into a hand-written OCI layout), pushed with skopeo to Debian's
//! `docker-registry` on loopback, pulled, unpacked and run for real. They need root and the
//! tools `common` names; a test that cannot run fails saying what is missing.
//!
//! Every test owns a temp dir (store root, layouts, host-side marker files) and cleans it
//! up when it fails too: containers are force-removed and mounts under the dir detached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../rootfs-tools/tests/common/mod.rs"]
mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Layout, TestRegistry};
use skiff_rootfs::digest::Digest;
use skiff_rootfs::snapshot::chain_ids;
use skiff_testsupport::{poll_until, require_root};
use tar::{EntryType, Header};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Longest any one skiff command may take before the test kills it and fails.
const CMD_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for an asynchronous effect (a detached container's cleanup, a partial file).
const WAIT: Duration = Duration::from_secs(60);

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// What a finished skiff command left.
#[derive(Debug)]
struct Out {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts success.
    fn ok(self) -> Out {
        assert!(
            self.status.success(),
            "{} failed ({}):\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts an orderly failure (an exit code, not a crash or a signal).
    fn failed(self) -> Out {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{} should have failed but ended with {}:\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "{} panicked: {}",
            self.what,
            self.stderr
        );
        self
    }

    /// Asserts that stderr mentions every one of `needles`.
    fn says(self, needles: &[&str]) -> Out {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{}: stderr does not mention {n:?}:\n{}",
                self.what,
                self.stderr
            );
        }
        self
    }
}

/// Waits for `child` at most `timeout`; kills it and fails the test after that.
fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    match poll_until(timeout, what, || child.try_wait().unwrap()) {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e:#}");
        }
    }
}

/// A test's private world: a temp dir holding the skiff root (`root/`), a directory that
/// stands for the host (`host/`, with a canary file), layouts and command output. Dropping
/// it force-removes every container of the root and detaches leftover mounts before the
/// temp dir goes.
struct Env {
    tmp: tempfile::TempDir,
    root: PathBuf,
    seq: AtomicU32,
}

const CANARY: &str = "host canary, must not change\n";

impl Env {
    fn new(tag: &str) -> Env {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("skiff-image-cli-{tag}-"))
            .tempdir()
            .unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(tmp.path().join("host")).unwrap();
        fs::write(tmp.path().join("host/canary"), CANARY).unwrap();
        Env {
            tmp,
            root,
            seq: AtomicU32::new(0),
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The directory standing for the host.
    fn host(&self) -> PathBuf {
        self.tmp.path().join("host")
    }

    /// `skiff ARGS` with this test's environment: no credentials of the machine's user.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SKIFF);
        cmd.args(args)
            .env("HOME", self.path())
            .env("DOCKER_CONFIG", self.path().join("no-docker-config"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("SKIFF_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `skiff ARGS` with stdout and stderr going to files; returns the child and the
    /// two paths.
    fn spawn(&self, args: &[&str]) -> (Child, PathBuf, PathBuf) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let out = self.path().join(format!("cmd-{n}.out"));
        let err = self.path().join(format!("cmd-{n}.err"));
        let child = self
            .command(args)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SKIFF}: {e}"));
        (child, out, err)
    }

    /// Runs `skiff ARGS` to completion (files, not pipes: a detached container keeps its
    /// stdio open long after skiff has exited).
    fn skiff(&self, args: &[&str]) -> Out {
        let what = format!("skiff {}", args.join(" "));
        let (mut child, out, err) = self.spawn(args);
        let status = wait_child(&mut child, CMD_TIMEOUT, &what);
        Out {
            what,
            status,
            stdout: fs::read_to_string(out).unwrap(),
            stderr: fs::read_to_string(err).unwrap(),
        }
    }

    fn root_str(&self) -> &str {
        self.root.to_str().unwrap()
    }

    /// `skiff image --root ROOT ARGS`.
    fn image(&self, args: &[&str]) -> Out {
        let mut all = vec!["image", "--root", self.root_str()];
        all.extend_from_slice(args);
        self.skiff(&all)
    }

    /// `skiff VERB --root ROOT ARGS` for `run`, `ps`, `rm`.
    fn verb(&self, verb: &str, args: &[&str]) -> Out {
        let mut all = vec![verb, "--root", self.root_str()];
        all.extend_from_slice(args);
        self.skiff(&all)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.verb("run", args)
    }

    /// The image record and config `skiff image inspect` prints.
    fn inspect(&self, image: &str) -> serde_json::Value {
        let out = self.image(&["inspect", image]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect printed no JSON ({e}): {}", out.stdout))
    }

    /// Names of the images in the store (`skiff image ls --format json`).
    fn image_names(&self) -> Vec<String> {
        let out = self.image(&["ls", "--format", "json"]).ok();
        let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Entries of a directory under the root (empty if it does not exist).
    fn entries(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.root.join(dir)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot list {dir}: {e}"),
        };
        names.sort();
        names
    }

    /// Mount points at or below this test's temp dir, deepest first.
    fn mounts(&self) -> Vec<PathBuf> {
        mounts_below(self.path())
    }

    /// Asserts that no container of this root left anything: runtime state, overlay mount,
    /// rootfs directory or bundle.
    fn assert_no_containers(&self) {
        let mounts = self.mounts();
        assert!(mounts.is_empty(), "mounts left under the root: {mounts:?}");
        for dir in ["containers", "bundles", "state"] {
            let left: Vec<String> = self
                .entries(dir)
                .into_iter()
                .filter(|e| !e.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "{dir}/ still holds {left:?}");
        }
    }

    /// Asserts that the host stand-in holds exactly the untouched canary.
    fn assert_host_untouched(&self) {
        let names: Vec<String> = fs::read_dir(self.host())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["canary"], "the host directory changed");
        let canary = self.host().join("canary");
        assert_eq!(fs::read_to_string(&canary).unwrap(), CANARY);
        assert_eq!(
            fs::metadata(&canary).unwrap().nlink(),
            1,
            "canary was linked"
        );
    }

    /// Imports an OCI layout (or archive) at `path` as `name`.
    fn import(&self, path: &Path, name: &str) -> Out {
        self.image(&["import", path.to_str().unwrap(), "--name", name])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.entries("state") {
            if id.starts_with('.') {
                continue;
            }
            let (mut child, _, _) = self.spawn(&["rm", "--root", self.root_str(), "-f", &id]);
            let _ = poll_until(Duration::from_secs(30), "skiff rm -f", || {
                child.try_wait().ok().flatten()
            });
            let _ = child.kill();
            let _ = child.wait();
        }
        for m in self.mounts() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points
}

/// A layer tar built entry by entry with raw names (the tar crate's setters refuse `..`
/// and absolute names, which the malicious layers need).
struct LayerTar(tar::Builder<Vec<u8>>);

impl LayerTar {
    fn new() -> LayerTar {
        LayerTar(tar::Builder::new(Vec::new()))
    }

    fn add(&mut self, kind: EntryType, name: &str, link: &str, mode: u32, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        let old = h.as_old_mut();
        assert!(name.len() <= old.name.len() && link.len() <= old.linkname.len());
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    fn dir(mut self, name: &str) -> LayerTar {
        self.add(EntryType::Directory, name, "", 0o755, b"");
        self
    }

    fn file(mut self, name: &str, data: &[u8]) -> LayerTar {
        self.add(EntryType::Regular, name, "", 0o644, data);
        self
    }

    fn exe(mut self, name: &str, data: &[u8]) -> LayerTar {
        self.add(EntryType::Regular, name, "", 0o755, data);
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> LayerTar {
        self.add(EntryType::Symlink, name, target, 0o777, b"");
        self
    }

    fn hardlink(mut self, name: &str, target: &str) -> LayerTar {
        self.add(EntryType::Link, name, target, 0o644, b"");
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A base layer: `/bin/busybox`, `/bin/sh -> busybox`, `/etc/skiff-test` holding `marker`.
fn busybox_layer(marker: &str) -> LayerTar {
    let busybox = fs::read(common::BUSYBOX).unwrap();
    LayerTar::new()
        .dir("bin/")
        .exe("bin/busybox", &busybox)
        .symlink("bin/sh", "busybox")
        .dir("etc/")
        .file("etc/skiff-test", marker.as_bytes())
}

/// One layer of a hand-written image: media type, blob bytes, uncompressed digest.
struct LayerBlob {
    media_type: &'static str,
    blob: Vec<u8>,
    diff_id: Digest,
}

impl LayerBlob {
    fn plain(tar: Vec<u8>) -> LayerBlob {
        LayerBlob {
            media_type: MEDIA_TAR,
            diff_id: Digest::sha256_of(&tar),
            blob: tar,
        }
    }

    fn zstd(tar: Vec<u8>) -> LayerBlob {
        LayerBlob {
            media_type: MEDIA_ZSTD,
            diff_id: Digest::sha256_of(&tar),
            blob: zstd::encode_all(&tar[..], 3).unwrap(),
        }
    }

    fn digest(&self) -> Digest {
        Digest::sha256_of(&self.blob)
    }
}

/// Writes an OCI image layout at `dir` holding one linux/amd64 image tagged `tag` with
/// `layers` (bottom first) and `/bin/sh` as its command. Returns the manifest digest.
fn write_layout(dir: &Path, tag: &str, layers: &[LayerBlob]) -> Digest {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        fs::write(blobs.join(d.hex()), data).unwrap();
        d
    };
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
    }))
    .unwrap();
    let config_digest = put(&config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.media_type,
                "digest": put(&l.blob).to_string(),
                "size": l.blob.len(),
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_digest
}

/// A umoci-built busybox layout at `<env>/oci` (tag `latest`, linux/amd64) whose
/// `/etc/skiff-test` holds `marker`.
fn umoci_busybox(env: &Env, marker: &str) -> Layout {
    let layout = Layout::init(&env.path().join("oci"));
    layout.add_busybox("latest", "amd64", marker);
    layout
}

/// A unique name for host-global things (container names become cgroup paths).
fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "skiff-t{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------------------
// 1. one layer: pull, run, ls, inspect, exit codes, --rm leaves nothing
// ---------------------------------------------------------------------------------------

#[test]
fn one_layer_image_is_pulled_listed_inspected_and_run() {
    let env = Env::new("one-layer");
    let layout = umoci_busybox(&env, "hello from one layer");
    let registry = TestRegistry::start();
    registry.push(&layout.dir, "latest", "test/busybox:latest", &[]);
    let image = registry.reference("test/busybox:latest");

    let pulled = env.image(&["pull", "-q", &image]).ok();
    let lines: Vec<&str> = pulled.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&image.as_str()), "{}", pulled.stdout);
    let id = lines
        .get(1)
        .and_then(|l| l.strip_prefix("sha256:"))
        .unwrap();

    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "hello from one layer");
    env.assert_no_containers();

    let ls = env.image(&["ls"]).ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with(&image) && l.contains(&id[..12]) && l.contains("linux/amd64")),
        "{}",
        ls.stdout
    );
    assert_eq!(env.image_names(), std::slice::from_ref(&image));
    let quiet = env.image(&["ls", "-q"]).ok();
    assert_eq!(quiet.stdout.trim(), &id[..12]);

    let v = env.inspect(&image);
    assert_eq!(v["record"]["name"], image.as_str());
    assert_eq!(v["record"]["manifest"], layout.digest("latest").to_string());
    assert_eq!(v["config"]["architecture"], "amd64");
    assert_eq!(v["config"]["os"], "linux");
    assert_eq!(v["config"]["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    // by id prefix too
    assert_eq!(env.inspect(&id[..12])["record"]["name"], image.as_str());

    let out = env.run(&["--rm", &image, "sh", "-c", "exit 3"]).failed();
    assert_eq!(out.code(), Some(3), "{out:?}");
    env.assert_no_containers();
    // the layers stay unpacked for the next container
    assert_eq!(
        env.entries("snapshots").len(),
        2,
        "{:?}",
        env.entries("snapshots")
    );

    // untagged and pruned: blobs and snapshots go; not while a pull holds its lease
    env.image(&["rm", &image]).ok();
    assert!(env.image_names().is_empty());
    let store = skiff_rootfs::store::Store::open(&env.root).unwrap();
    let lease = store.lease().unwrap();
    let busy = env.image(&["prune"]).failed();
    assert!(busy.stderr.contains("in use by a pull"), "{}", busy.stderr);
    assert_eq!(env.entries("snapshots").len(), 2);
    drop(lease);
    let pruned = env.image(&["prune"]).ok();
    assert!(
        pruned.stdout.starts_with("removed 4 blobs")
            && pruned.stdout.trim_end().ends_with("and 2 snapshots"),
        "{}",
        pruned.stdout
    );
    assert!(
        env.entries("snapshots").is_empty(),
        "{:?}",
        env.entries("snapshots")
    );
}

// ---------------------------------------------------------------------------------------
// 2. several layers: whiteout, opaque directory, added file
// ---------------------------------------------------------------------------------------

#[test]
fn multi_layer_image_with_whiteout_and_opaque_dir() {
    let env = Env::new("multi-layer");
    let base = busybox_layer("base")
        .dir("data/")
        .file("data/keep", b"kept\n")
        .file("data/gone", b"deleted by layer 2\n")
        .dir("opq/")
        .file("opq/old1", b"hidden\n")
        .dir("opq/sub/")
        .file("opq/sub/old2", b"hidden\n")
        .finish();
    let second = LayerTar::new()
        .dir("data/")
        .file("data/.wh.gone", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new1", b"new\n")
        .finish();
    let third = LayerTar::new()
        .dir("added/")
        .file("added/file3", b"three\n")
        .finish();
    let layers = [
        LayerBlob::plain(base),
        LayerBlob::plain(second),
        LayerBlob::plain(third),
    ];
    let oci = env.path().join("oci");
    write_layout(&oci, "latest", &layers);
    let registry = TestRegistry::start();
    registry.push(&oci, "latest", "test/layers:v1", &[]);
    let image = registry.reference("test/layers:v1");

    env.image(&["pull", "-q", &image]).ok();
    let v = env.inspect(&image);
    assert_eq!(v["record"]["layers"].as_array().unwrap().len(), 3);
    let script = "cd / && \
        echo data: $(busybox ls -A /data) && \
        echo opq: $(busybox ls -A /opq) && \
        busybox cat /added/file3 /data/keep && \
        if test -e /data/gone; then echo gone-exists; fi && \
        if test -e /opq/sub; then echo sub-exists; fi && \
        if test -e /opq/old1; then echo old1-exists; fi";
    let out = env.run(&["--rm", &image, "sh", "-c", script]).ok();
    assert_eq!(out.stdout, "data: keep\nopq: new1\nthree\nkept\n");
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 3. multi-platform index
// ---------------------------------------------------------------------------------------

#[test]
fn multi_platform_index_picks_the_platform() {
    let env = Env::new("multi-platform");
    let layout = common::multi_platform_layout(env.path());
    let registry = TestRegistry::start();
    registry.push(&layout.dir, "multi", "test/multi:latest", &["--all"]);
    let image = registry.reference("test/multi:latest");

    env.image(&["pull", "-q", &image]).ok();
    let v = env.inspect(&image);
    assert_eq!(v["config"]["architecture"], "amd64");
    assert_eq!(v["record"]["platform"], "linux/amd64");
    assert_eq!(v["record"]["manifest"], layout.digest("amd64").to_string());
    assert_eq!(v["record"]["index"], layout.digest("multi").to_string());
    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "amd64");

    // Another platform replaces the record of the same name (not run: wrong machine).
    env.image(&["--platform", "linux/arm64", "pull", "-q", &image])
        .ok();
    let v = env.inspect(&image);
    assert_eq!(v["config"]["architecture"], "arm64");
    assert_eq!(v["record"]["platform"], "linux/arm64");
    assert_eq!(v["record"]["manifest"], layout.digest("arm64").to_string());

    env.image(&["--platform", "linux/s390x", "pull", "-q", &image])
        .failed()
        .says(&[
            "no manifest for platform linux/s390x",
            "linux/amd64",
            "linux/arm64",
        ]);
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 4. zstd layer
// ---------------------------------------------------------------------------------------

#[test]
fn zstd_layer_is_pulled_and_run() {
    let env = Env::new("zstd");
    let layer = LayerBlob::zstd(busybox_layer("zstd compressed").finish());
    assert_eq!(
        &layer.blob[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "not a zstd frame"
    );
    let layer_digest = layer.digest();
    let oci = env.path().join("oci");
    let manifest = write_layout(&oci, "latest", &[layer]);
    let registry = TestRegistry::start();
    registry.push(&oci, "latest", "test/zstd:latest", &["--preserve-digests"]);
    let image = registry.reference("test/zstd:latest");

    env.image(&["pull", "-q", &image]).ok();
    let v = env.inspect(&image);
    assert_eq!(v["record"]["manifest"], manifest.to_string());
    assert_eq!(v["record"]["layers"][0]["media_type"], MEDIA_ZSTD);
    assert_eq!(v["record"]["layers"][0]["digest"], layer_digest.to_string());
    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "zstd compressed");
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 5. malicious layers
// ---------------------------------------------------------------------------------------

/// Imports, then pushes (digests kept) and pulls, an image of a busybox base and `evil` on
/// top: both must fail naming the layer digest and the entry, record no image, leave no
/// snapshot of the evil layer nor a temp unpack, and leave the host stand-in alone. A run
/// of it fails too.
fn assert_malicious_layer_rejected(env: &Env, evil: Vec<u8>, entry: &str) {
    let base = LayerBlob::plain(busybox_layer("base").finish());
    let evil = LayerBlob::plain(evil);
    let evil_digest = evil.digest();
    let chain = chain_ids(&[base.diff_id.clone(), evil.diff_id.clone()]);
    let oci = env.path().join("oci");
    write_layout(&oci, "latest", &[base, evil]);
    let quoted = format!("entry {entry:?}");

    let check_store = |when: &str| {
        env.assert_host_untouched();
        let snaps = env.entries("snapshots");
        assert!(
            !snaps.contains(&chain[1].hex().to_string()),
            "{when}: the evil layer's snapshot exists"
        );
        assert!(
            !snaps.iter().any(|s| s.starts_with(".tmp-")),
            "{when}: an unpack was left behind: {snaps:?}"
        );
        assert!(env.mounts().is_empty(), "{when}: {:?}", env.mounts());
    };

    let name = "localhost/skiff-test/evil:latest";
    env.import(&oci, name)
        .failed()
        .says(&[&format!("layer {evil_digest}"), &quoted]);
    check_store("after import");
    assert!(
        env.image_names().is_empty(),
        "a failed import recorded the image: {:?}",
        env.image_names()
    );
    env.run(&["--rm", "--pull", "never", name, "busybox", "true"])
        .failed()
        .says(&["not in the store"]);
    check_store("after run of the failed import");

    let registry = TestRegistry::start();
    registry.push(&oci, "latest", "test/evil:latest", &["--preserve-digests"]);
    let image = registry.reference("test/evil:latest");
    env.image(&["pull", "-q", &image])
        .failed()
        .says(&[&format!("layer {evil_digest}"), &quoted]);
    check_store("after pull");
    assert!(
        !env.image_names().contains(&image),
        "a failed pull recorded the image: {:?}",
        env.image_names()
    );
    env.run(&["--rm", &image, "busybox", "true"])
        .failed()
        .says(&[&quoted]);
    check_store("after run with pull");
    env.assert_no_containers();
}

#[test]
fn layer_entry_climbing_out_is_rejected() {
    let env = Env::new("evil-dotdot");
    // From <root>/snapshots/.tmp-…/fs, four levels up is the test dir holding host/.
    let entry = "../../../../host/escaped";
    let evil = LayerTar::new()
        .file("innocent", b"x")
        .file(entry, b"escaped\n")
        .finish();
    assert_malicious_layer_rejected(&env, evil, entry);
}

#[test]
fn layer_write_through_absolute_symlink_is_rejected() {
    let env = Env::new("evil-symlink");
    let host = env.host().to_str().unwrap().to_string();
    let evil = LayerTar::new()
        .symlink("evil", &host)
        .file("evil/file", b"written through the symlink\n")
        .finish();
    assert_malicious_layer_rejected(&env, evil, "evil/file");
}

#[test]
fn layer_hardlink_to_host_file_is_rejected() {
    let env = Env::new("evil-hardlink");
    let canary = env.host().join("canary");
    let evil = LayerTar::new()
        .hardlink("stolen", canary.to_str().unwrap())
        .finish();
    assert_malicious_layer_rejected(&env, evil, "stolen");
}

#[test]
fn layer_hardlink_climbing_out_is_rejected() {
    let env = Env::new("evil-hardlink-up");
    let evil = LayerTar::new()
        .hardlink("stolen", "../../../../host/canary")
        .finish();
    assert_malicious_layer_rejected(&env, evil, "stolen");
}

// ---------------------------------------------------------------------------------------
// 6. a blob that does not match its digest
// ---------------------------------------------------------------------------------------

#[test]
fn corrupt_blob_in_registry_is_rejected() {
    let env = Env::new("corrupt");
    let layout = umoci_busybox(&env, "corrupt");
    let registry = TestRegistry::start();
    registry.push(&layout.dir, "latest", "test/corrupt:latest", &[]);
    let image = registry.reference("test/corrupt:latest");

    // The biggest blob is the busybox layer; flip a byte in its middle.
    let blobs = registry.storage().join("docker/registry/v2/blobs/sha256");
    let mut biggest: Option<(u64, PathBuf)> = None;
    for prefix in fs::read_dir(&blobs).unwrap() {
        for blob in fs::read_dir(prefix.unwrap().path()).unwrap() {
            let data = blob.unwrap().path().join("data");
            let len = fs::metadata(&data).unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, data));
            }
        }
    }
    let (len, data) = biggest.expect("no blobs in the registry storage");
    let hex = data
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let digest = format!("sha256:{hex}");
    let mut bytes = fs::read(&data).unwrap();
    bytes[(len / 2) as usize] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    env.image(&["pull", "-q", &image])
        .failed()
        .says(&[&format!("blob digest mismatch for {digest}")]);
    assert!(env.image_names().is_empty(), "{:?}", env.image_names());
    assert!(
        !env.root.join("content/blobs/sha256").join(hex).exists(),
        "the corrupt blob was stored"
    );
    let ingest = env.entries("content/ingest");
    assert!(
        !ingest.iter().any(|e| e.contains(hex)),
        "the corrupt download was kept: {ingest:?}"
    );
    env.run(&["--rm", "--pull", "never", &image, "busybox", "true"])
        .failed()
        .says(&["not in the store"]);

    // Repaired, the registry serves the image again and the next pull takes it afresh.
    bytes[(len / 2) as usize] ^= 0xff;
    fs::write(&data, &bytes).unwrap();
    env.image(&["pull", "-q", &image]).ok();
    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "corrupt");
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 7. registry down, registry wanting credentials
// ---------------------------------------------------------------------------------------

#[test]
fn unreachable_registry_is_a_clear_error() {
    let env = Env::new("unreachable");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = format!("127.0.0.1:{port}/test/nothing:latest");
    let start = Instant::now();
    env.image(&["pull", "-q", &image])
        .failed()
        .says(&[&format!("registry 127.0.0.1:{port} is unreachable")]);
    // no retry loop with long timeouts for a refused connection
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    env.run(&["--rm", &image, "busybox", "true"])
        .failed()
        .says(&["unreachable"]);
    assert!(env.image_names().is_empty());
}

/// Docker's `auth` field: base64 of `user:password`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn registry_with_auth_needs_the_authfile() {
    assert_eq!(base64(b"skiff:s3cret"), "c2tpZmY6czNjcmV0");
    let env = Env::new("auth");
    let layout = umoci_busybox(&env, "behind auth");
    let registry = TestRegistry::start_with_auth("skiff", "s3cret");
    registry.push(&layout.dir, "latest", "team/app:v1", &[]);
    let image = registry.reference("team/app:v1");

    env.image(&["pull", "-q", &image]).failed().says(&[
        "unauthorized",
        "requires credentials",
        "401",
    ]);

    let write_auth = |file: &str, creds: &str| {
        let path = env.path().join(file);
        let json =
            serde_json::json!({"auths": {registry.addr(): {"auth": base64(creds.as_bytes())}}});
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    };
    let wrong = write_auth("wrong.json", "skiff:nope");
    env.image(&["--authfile", wrong.to_str().unwrap(), "pull", "-q", &image])
        .failed()
        .says(&["unauthorized", "refused the credentials"]);
    assert!(env.image_names().is_empty());

    let right = write_auth("right.json", "skiff:s3cret");
    let authfile = right.to_str().unwrap();
    env.image(&["--authfile", authfile, "pull", "-q", &image])
        .ok();
    assert_eq!(env.image_names(), std::slice::from_ref(&image));
    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "behind auth");
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 8. a pull killed halfway is resumed
// ---------------------------------------------------------------------------------------

/// A minimal registry serving one OCI layout (`/v2/<any repo>/manifests/<tag or digest>`
/// and `/blobs/<digest>`, ranges honoured), one thread per connection. While its gate is
/// closed it sends only the first `hold_at` bytes of blob `held` and then waits: a pull
/// stuck halfway, deterministically, without timing.
struct GatedRegistry {
    addr: String,
    stop: Arc<AtomicBool>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    requests: RequestLog,
    thread: Option<JoinHandle<()>>,
}

/// `(path, Range header)` of each request a [`GatedRegistry`] saw.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// What a [`GatedRegistry`] serves and holds back.
struct Served {
    layout: PathBuf,
    tag: String,
    manifest: Digest,
    held: String,
    hold_at: usize,
}

impl GatedRegistry {
    fn start(served: Served) -> GatedRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(served);
        let thread = {
            let (stop, gate, requests) = (stop.clone(), gate.clone(), requests.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (gate, requests, served) = (gate.clone(), requests.clone(), served.clone());
                    std::thread::spawn(move || {
                        let _ = serve_gated(conn, &served, &gate, &requests);
                    });
                }
            })
        };
        GatedRegistry {
            addr,
            stop,
            gate,
            requests,
            thread: Some(thread),
        }
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    /// `(path, Range header)` of every request so far.
    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for GatedRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.open_gate();
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_gated(
    conn: TcpStream,
    served: &Served,
    gate: &(Mutex<bool>, Condvar),
    requests: &Mutex<Vec<(String, Option<String>)>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    requests.lock().unwrap().push((path.clone(), range.clone()));
    let mut out = conn;
    let reply = |out: &mut TcpStream, status: u16, headers: &[(&str, String)], len: usize| {
        write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n"
        )?;
        for (k, v) in headers {
            write!(out, "{k}: {v}\r\n")?;
        }
        write!(out, "\r\n")
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let blob = |d: &str| -> Option<Vec<u8>> {
        let hex = d.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        fs::read(served.layout.join("blobs/sha256").join(hex)).ok()
    };
    let n = segments.len();
    if path == "/v2/" || path == "/v2" {
        reply(&mut out, 200, &[], 2)?;
        out.write_all(b"{}")?;
    } else if n >= 4 && segments[n - 2] == "manifests" {
        let r = segments[n - 1];
        if r == served.tag || r == served.manifest.to_string() {
            let body = blob(&served.manifest.to_string()).unwrap_or_default();
            let headers = [
                ("Content-Type", MEDIA_MANIFEST.to_string()),
                ("Docker-Content-Digest", served.manifest.to_string()),
            ];
            reply(&mut out, 200, &headers, body.len())?;
            if method != "HEAD" {
                out.write_all(&body)?;
            }
        } else {
            reply(&mut out, 404, &[], 0)?;
        }
    } else if n >= 4 && segments[n - 2] == "blobs" {
        let Some(body) = blob(segments[n - 1]) else {
            reply(&mut out, 404, &[], 0)?;
            return Ok(());
        };
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|s| *s < body.len());
        let from = start.unwrap_or(0);
        if let Some(s) = start {
            let headers = [(
                "Content-Range",
                format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
            )];
            reply(&mut out, 206, &headers, body.len() - s)?;
        } else {
            reply(&mut out, 200, &[], body.len())?;
        }
        if method == "HEAD" {
            return Ok(());
        }
        let held = segments[n - 1] == served.held && !*gate.0.lock().unwrap();
        if held && from < served.hold_at {
            out.write_all(&body[from..served.hold_at])?;
            out.flush()?;
            let deadline = Instant::now() + WAIT;
            let mut open = gate.0.lock().unwrap();
            while !*open && Instant::now() < deadline {
                open = gate.1.wait_timeout(open, WAIT).unwrap().0;
            }
            drop(open);
            out.write_all(&body[served.hold_at..])?;
        } else {
            out.write_all(&body[from..])?;
        }
    } else {
        reply(&mut out, 404, &[], 0)?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[test]
fn killed_pull_is_resumed() {
    let env = Env::new("resume");
    let layout = umoci_busybox(&env, "resumed");
    let manifest_digest = layout.digest("latest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&layout.blob(&manifest_digest)).unwrap();
    let (layer, size) = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .max_by_key(|(_, s)| *s)
        .unwrap();
    assert!(size > 100_000, "the busybox layer is only {size} bytes");
    let hold_at = (size / 2) as usize;
    let registry = GatedRegistry::start(Served {
        layout: layout.dir.clone(),
        tag: "latest".to_string(),
        manifest: manifest_digest,
        held: layer.clone(),
        hold_at,
    });
    let image = format!("{}/test/resume:latest", registry.addr);
    let hex = layer.strip_prefix("sha256:").unwrap();
    let partial = env
        .root
        .join("content/ingest")
        .join(format!("sha256-{hex}.partial"));

    let (mut child, _, err) = env.spawn(&["image", "--root", env.root_str(), "pull", "-q", &image]);
    let got = poll_until(WAIT, "half the layer in the ingest file", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the pull ended ({status}) before it was killed: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        let len = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        (len >= hold_at as u64).then_some(len)
    });
    if let Err(e) = got {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{e:#}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    registry.open_gate();
    assert_eq!(fs::metadata(&partial).unwrap().len(), hold_at as u64);
    assert!(
        env.image_names().is_empty(),
        "a killed pull recorded the image"
    );

    env.image(&["pull", "-q", &image]).ok();
    let resumed = registry
        .requests()
        .iter()
        .filter(|(p, _)| p.ends_with(&format!("/blobs/{layer}")))
        .map(|(_, r)| r.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        resumed,
        [None, Some(format!("bytes={hold_at}-"))],
        "the second pull did not resume the layer"
    );
    assert!(!partial.exists(), "the partial file was not consumed");
    let stored = env.root.join("content/blobs/sha256").join(hex);
    assert_eq!(fs::metadata(&stored).unwrap().len(), size);
    assert_eq!(env.image_names(), std::slice::from_ref(&image));
    let out = env
        .run(&["--rm", &image, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "resumed");
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 9. detached containers, names, pull policy
// ---------------------------------------------------------------------------------------

/// `skiff ps` rows as (id, status).
fn ps(env: &Env, all: bool) -> Vec<(String, String)> {
    let out = env.verb("ps", if all { &["-a"] } else { &[] }).ok();
    out.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn detached_rm_container_runs_and_is_cleaned_up() {
    let env = Env::new("detached");
    let layout = umoci_busybox(&env, "detached");
    let name = "localhost/skiff-test/detached:latest";
    env.import(&layout.dir, name).ok();

    let out = env
        .run(&[
            "-d",
            "--rm",
            name,
            "sh",
            "-c",
            "while ! test -e /go; do busybox sleep 0.05; done",
        ])
        .ok();
    let id = out.stdout.lines().next().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "no id printed: {out:?}");
    assert_eq!(ps(&env, false), [(id.clone(), "running".to_string())]);
    let merged = env.root.join("containers").join(&id).join("merged");
    assert_eq!(
        fs::read_to_string(merged.join("etc/skiff-test")).unwrap(),
        "detached"
    );

    fs::write(merged.join("go"), b"").unwrap();
    poll_until(WAIT, "the detached container to be cleaned up", || {
        let gone = ps(&env, true).is_empty()
            && env.entries("containers").is_empty()
            && env.entries("bundles").is_empty()
            && env.mounts().is_empty();
        gone.then_some(())
    })
    .unwrap();
    env.assert_no_containers();
}

#[test]
fn container_name_in_use_is_refused() {
    let env = Env::new("names");
    let layout = umoci_busybox(&env, "names");
    let image = "localhost/skiff-test/names:latest";
    env.import(&layout.dir, image).ok();
    let name = unique("dup");

    env.run(&["--name", &name, image, "busybox", "true"]).ok();
    assert_eq!(ps(&env, true), [(name.clone(), "stopped".to_string())]);
    env.run(&["--name", &name, image, "busybox", "true"])
        .failed()
        .says(&[&format!("a container named {name} exists already")]);
    // the refused run took nothing of the first container's
    assert!(
        env.root
            .join("containers")
            .join(&name)
            .join("merged")
            .is_dir()
    );
    assert!(env.root.join("bundles").join(&name).is_dir());

    env.verb("rm", &[&name]).ok();
    env.assert_no_containers();
    let out = env
        .run(&[
            "--rm",
            "--name",
            &name,
            image,
            "busybox",
            "cat",
            "/etc/skiff-test",
        ])
        .ok();
    assert_eq!(out.stdout, "names");
    env.assert_no_containers();
}

#[test]
fn pull_never_of_a_missing_image_fails() {
    let env = Env::new("pull-never");
    env.run(&[
        "--rm",
        "--pull",
        "never",
        "localhost/skiff-test/absent:1",
        "busybox",
        "true",
    ])
    .failed()
    .says(&[
        "localhost/skiff-test/absent:1",
        "not in the store",
        "--pull=never",
    ]);
    assert!(env.image_names().is_empty());
    env.assert_no_containers();
}

// ---------------------------------------------------------------------------------------
// 10. export / import round trip
// ---------------------------------------------------------------------------------------

#[test]
fn export_import_round_trip() {
    let env = Env::new("export");
    let layout = umoci_busybox(&env, "exported");
    let name = "localhost/skiff-test/export:v1";
    env.import(&layout.dir, name).ok();
    let before = env.inspect(name);

    let tar = env.path().join("image.tar");
    env.image(&[
        "export",
        "--format",
        "oci-tar",
        "-o",
        tar.to_str().unwrap(),
        name,
    ])
    .ok();
    let mut magic = [0u8; 262];
    File::open(&tar).unwrap().read_exact(&mut magic).unwrap();
    assert_eq!(&magic[257..262], b"ustar", "the export is not a tar");

    // A second store, importing the tar.
    let other = Env::new("import");
    let out = other.import(&tar, name).ok();
    assert_eq!(out.stdout.trim(), name);
    let after = other.inspect(name);
    assert_eq!(after["record"]["manifest"], before["record"]["manifest"]);
    assert_eq!(after["record"]["config"], before["record"]["config"]);
    assert_eq!(after["config"], before["config"]);
    let out = other
        .run(&["--rm", name, "busybox", "cat", "/etc/skiff-test"])
        .ok();
    assert_eq!(out.stdout, "exported");
    other.assert_no_containers();

    // The same archive without --name keeps the name it was exported under.
    let third = Env::new("import-named");
    third.image(&["import", tar.to_str().unwrap()]).ok();
    assert_eq!(third.image_names(), [name.to_string()]);
    let snapshots = third.entries("snapshots");
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
}

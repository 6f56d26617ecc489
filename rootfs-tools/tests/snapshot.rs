//! Overlay snapshots on the real kernel, as root: layers unpacked from compressed blobs,
//! container rootfs mounted with overlayfs and cleaned up, diff id checks, the page-size
//! limit of mount options, and gc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_rootfs::digest::Digest;
use skiff_rootfs::snapshot::{SnapshotError, Snapshots, chain_ids};
use tar::{EntryType, Header};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const BUSYBOX: &str = "/usr/bin/busybox";

/// Overlay mounts, mknod and trusted xattrs need root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the snapshot integration tests must run as root (overlay mounts, mknod, trusted xattrs)"
    );
}

/// A snapshot root in a temp dir; `Drop` unmounts every container left mounted (a failed
/// assertion must not leave mounts behind), then the temp dir goes.
struct Root {
    snaps: Snapshots,
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root::with_depth(0)
    }

    /// A root nested `depth` directories of 200 characters deep.
    fn with_depth(depth: usize) -> Root {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-test-snap-")
            .tempdir()
            .unwrap();
        let mut path = tmp.path().to_path_buf();
        for i in 0..depth {
            path.push(format!("{i}{}", "r".repeat(199)));
        }
        let snaps = Snapshots::open(&path).unwrap();
        Root {
            snaps,
            path,
            _tmp: tmp,
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.path.join("containers").join(id)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(self.path.join("containers")) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Err(e) = self.snaps.unmount(&id) {
                eprintln!("cleanup: cannot unmount {id}: {e}; detaching");
                let merged = entry.path().join("merged");
                let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Builds an uncompressed layer tar.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, kind: EntryType, name: &str, mode: u32, data: &[u8]) -> &mut Layer {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str) -> &mut Layer {
        self.entry(EntryType::Directory, name, 0o755, b"")
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.entry(EntryType::Regular, name, 0o644, data)
    }

    fn exe(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.entry(EntryType::Regular, name, 0o755, data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        self.0.append_link(&mut h, name, target).unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Unpacks `layers` (tar, media type of the blob) as one image; returns the chain ids.
fn unpack_image(root: &Root, layers: &[(Vec<u8>, &str)]) -> Vec<Digest> {
    let diff_ids: Vec<Digest> = layers
        .iter()
        .map(|(tar, _)| Digest::sha256_of(tar))
        .collect();
    let chain = chain_ids(&diff_ids);
    for (i, ((tar, media_type), chain_id)) in layers.iter().zip(&chain).enumerate() {
        let blob = match *media_type {
            GZIP => gzip(tar),
            ZSTD => zstd::encode_all(&tar[..], 3).unwrap(),
            _ => tar.clone(),
        };
        root.snaps
            .unpack(
                chain_id,
                &diff_ids[i],
                media_type,
                &blob[..],
                &format!("layer-{i}"),
            )
            .unwrap();
        assert!(root.snaps.has(chain_id));
    }
    chain
}

fn is_mount_point(p: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn chroot(merged: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chroot")
        .arg(merged)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn three_layer_image_mounts_with_whiteouts_and_busybox_runs() {
    require_root();
    let busybox = fs::read(BUSYBOX).expect("busybox-static must be installed at /usr/bin/busybox");
    let root = Root::new();
    let l1 = Layer::new()
        .dir("bin")
        .exe("bin/busybox", &busybox)
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/motd", b"deleted in layer 2\n")
        .dir("var")
        .dir("var/cache")
        .file("var/cache/old1", b"hidden by opaque")
        .dir("var/cache/sub")
        .file("var/cache/sub/old2", b"hidden by opaque")
        .entry(EntryType::Directory, "tmp", 0o1777, b"")
        .finish();
    let l2 = Layer::new()
        .dir("etc")
        .file("etc/.wh.motd", b"")
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new2", b"layer 2\n")
        .finish();
    let l3 = Layer::new()
        .symlink("bin/sh", "busybox")
        .dir("srv")
        .file("srv/data.txt", b"layer 3\n")
        .finish();
    let chain = unpack_image(&root, &[(l1, GZIP), (l2, ZSTD), (l3, TAR)]);
    assert_eq!(root.snaps.list().unwrap(), {
        let mut c = chain.clone();
        c.sort();
        c
    });
    // Layer 2's snapshot holds the overlay markers.
    let l2_dir = root.snaps.layer_dir(&chain[1]);
    assert!(
        fs::symlink_metadata(l2_dir.join("etc/motd"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        xattr::get(l2_dir.join("var/cache"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );

    let cwd = std::env::current_dir().unwrap();
    let merged = root.snaps.mount("c1", &chain).unwrap();
    assert!(is_mount_point(&merged));
    // The mount helper changed only its own thread's working directory.
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    assert_eq!(merged, root.container_dir("c1").join("merged"));
    // Mounting again with the same layers is a no-op; other layers are refused.
    assert_eq!(root.snaps.mount("c1", &chain).unwrap(), merged);
    assert!(matches!(
        root.snaps.mount("c1", &chain[..2]),
        Err(SnapshotError::LowersMismatch { .. })
    ));
    assert_eq!(
        root.snaps.in_use().unwrap(),
        chain.iter().cloned().collect::<HashSet<_>>()
    );

    // The merged view.
    assert!(
        !merged.join("etc/motd").exists(),
        "whiteout did not hide etc/motd"
    );
    assert_eq!(
        fs::read(merged.join("etc/passwd")).unwrap(),
        b"root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(names(&merged.join("var/cache")), ["new2"]);
    assert_eq!(fs::read(merged.join("srv/data.txt")).unwrap(), b"layer 3\n");
    assert_eq!(
        fs::metadata(merged.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(names(&merged), ["bin", "etc", "srv", "tmp", "var"]);

    let out = chroot(&merged, &["/bin/busybox", "true"]);
    assert!(out.status.success(), "busybox true: {out:?}");
    let out = chroot(
        &merged,
        &[
            "/bin/sh",
            "-c",
            "echo written > /new && echo changed >> /etc/passwd && busybox rm /srv/data.txt && busybox cat /etc/passwd",
        ],
    );
    assert!(out.status.success(), "busybox sh: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed"));

    // Writes went to the upper directory only.
    let upper = root.container_dir("c1").join("upper");
    assert_eq!(fs::read(upper.join("new")).unwrap(), b"written\n");
    assert!(
        fs::read_to_string(upper.join("etc/passwd"))
            .unwrap()
            .ends_with("changed\n")
    );
    assert!(
        fs::symlink_metadata(upper.join("srv/data.txt"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        fs::read(root.snaps.layer_dir(&chain[0]).join("etc/passwd")).unwrap(),
        b"root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(
        fs::read(root.snaps.layer_dir(&chain[2]).join("srv/data.txt")).unwrap(),
        b"layer 3\n"
    );
    for c in &chain {
        assert!(!root.snaps.layer_dir(c).join("new").exists());
    }

    root.snaps.unmount("c1").unwrap();
    assert!(!is_mount_point(&merged));
    assert!(!root.container_dir("c1").exists());
    root.snaps.unmount("c1").unwrap();
    assert!(root.snaps.in_use().unwrap().is_empty());
    // The layers are untouched by the container's life.
    assert!(
        root.snaps
            .layer_dir(&chain[2])
            .join("srv/data.txt")
            .exists()
    );
}

#[test]
fn diff_id_mismatch_leaves_no_snapshot() {
    require_root();
    let root = Root::new();
    let tar = Layer::new().file("hello", b"world").finish();
    let blob = gzip(&tar);
    let wrong = Digest::sha256_of(b"something else");
    let chain_id = wrong.clone();
    let err = root
        .snaps
        .unpack(&chain_id, &wrong, GZIP, &blob[..], "layer-wrong")
        .unwrap_err();
    match &err {
        SnapshotError::DiffIdMismatch {
            layer,
            expected,
            actual,
        } => {
            assert_eq!(layer, "layer-wrong");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &Digest::sha256_of(&tar));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(!root.snaps.has(&chain_id));
    assert!(root.snaps.list().unwrap().is_empty());
    assert!(
        names(&root.path.join("snapshots")).is_empty(),
        "temp dir left behind"
    );

    // Not a layer media type.
    let err = root
        .snaps
        .unpack(
            &chain_id,
            &wrong,
            "application/vnd.oci.image.config.v1+json",
            &blob[..],
            "layer-config",
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::NotALayer { .. }), "{err:?}");

    // A layer that fails to unpack leaves nothing either.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(1);
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    evil.append(&h, &b"x"[..]).unwrap();
    let evil = evil.into_inner().unwrap();
    let err = root
        .snaps
        .unpack(
            &Digest::sha256_of(&evil),
            &Digest::sha256_of(&evil),
            TAR,
            &evil[..],
            "layer-evil",
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Unpack { .. }), "{err:?}");
    assert!(names(&root.path.join("snapshots")).is_empty());
    assert!(!root.path.join("escape").exists());

    // A plain tar labelled gzip (as some exports do) is sniffed and accepted.
    let diff = Digest::sha256_of(&tar);
    root.snaps
        .unpack(&diff, &diff, GZIP, &tar[..], "layer-lying")
        .unwrap();
    assert_eq!(
        fs::read(root.snaps.layer_dir(&diff).join("hello")).unwrap(),
        b"world"
    );
}

#[test]
fn sixty_layers_under_a_long_root_mount() {
    require_root();
    const LAYERS: usize = 60;
    // ~1400 bytes of root path: `lowerdir=` with absolute paths would need ~90 KB.
    let root = Root::with_depth(7);
    let layer_path_len = root.path.join("snapshots").as_os_str().len() + 1 + 64 + 3;
    assert!(
        LAYERS * (layer_path_len + 1) > 4096,
        "the test must exceed the page limit with absolute paths"
    );
    let layers: Vec<(Vec<u8>, &str)> = (0..LAYERS)
        .map(|i| {
            let tar = Layer::new()
                .file(&format!("layer-{i:02}"), format!("{i}").as_bytes())
                .file("same", format!("{i}").as_bytes())
                .finish();
            (tar, TAR)
        })
        .collect();
    let chain = unpack_image(&root, &layers);
    let merged = root.snaps.mount("long", &chain).unwrap();
    assert!(is_mount_point(&merged));
    let mut expected: Vec<String> = (0..LAYERS).map(|i| format!("layer-{i:02}")).collect();
    expected.push("same".to_string());
    assert_eq!(names(&merged), expected);
    // The top-most layer (the last one given) wins.
    assert_eq!(fs::read_to_string(merged.join("same")).unwrap(), "59");
    root.snaps.unmount("long").unwrap();
    assert!(!root.container_dir("long").exists());
}

#[test]
fn gc_removes_unused_snapshots_only() {
    require_root();
    let root = Root::new();
    let image = |name: &str| {
        let tar = Layer::new().file(name, name.as_bytes()).finish();
        unpack_image(&root, &[(tar, TAR)])[0].clone()
    };
    let (a, b, c) = (image("a"), image("b"), image("c"));
    root.snaps
        .mount("uses-a", std::slice::from_ref(&a))
        .unwrap();
    // A stale unpack of a process that no longer exists.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = root
        .path
        .join("snapshots")
        .join(format!(".tmp-{dead}-0-{}", c.hex()));
    fs::create_dir_all(stale.join("fs")).unwrap();

    let keep: HashSet<Digest> = [b.clone()].into_iter().collect();
    assert_eq!(root.snaps.gc(&keep).unwrap(), 1);
    let mut left = vec![a.clone(), b.clone()];
    left.sort();
    assert_eq!(root.snaps.list().unwrap(), left);
    assert!(!root.snaps.has(&c));
    assert!(!stale.exists(), "stale temp not removed");
    // The mounted container still works.
    let merged = root.container_dir("uses-a").join("merged");
    assert_eq!(fs::read(merged.join("a")).unwrap(), b"a");

    root.snaps.unmount("uses-a").unwrap();
    assert_eq!(root.snaps.gc(&HashSet::new()).unwrap(), 2);
    assert!(root.snaps.list().unwrap().is_empty());

    // Mounting a removed snapshot fails and leaves no container behind.
    assert!(matches!(
        root.snaps.mount("late", &[a]),
        Err(SnapshotError::MissingSnapshot { .. })
    ));
    assert!(!root.container_dir("late").exists());
    assert!(matches!(
        root.snaps.mount("../x", &[b]),
        Err(SnapshotError::InvalidContainerId(_))
    ));
}

#[test]
fn mount_recovers_after_a_reboot_or_a_crashed_setup() {
    require_root();
    let root = Root::new();
    let tar = Layer::new().file("base", b"base").finish();
    let chain = unpack_image(&root, &[(tar, TAR)]);

    // After a reboot the mount is gone but the upper stays: mounting again keeps writes.
    let merged = root.snaps.mount("rebooted", &chain).unwrap();
    fs::write(merged.join("kept"), b"container write").unwrap();
    // Detached lazily: a process forked by a parallel test may briefly hold an open file.
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!merged.join("kept").exists());
    let again = root.snaps.mount("rebooted", &chain).unwrap();
    assert_eq!(again, merged);
    assert_eq!(fs::read(merged.join("kept")).unwrap(), b"container write");
    assert_eq!(fs::read(merged.join("base")).unwrap(), b"base");
    root.snaps.unmount("rebooted").unwrap();

    // A setup that died before writing lowers.json is redone from scratch.
    let dir = root.container_dir("crashed");
    fs::create_dir_all(dir.join("upper")).unwrap();
    fs::write(dir.join("upper/junk"), b"junk").unwrap();
    let merged = root.snaps.mount("crashed", &chain).unwrap();
    assert_eq!(names(&merged), ["base"]);
    root.snaps.unmount("crashed").unwrap();
    assert!(!dir.exists());
}

//! Layer unpacking against the real filesystem, as root: entries and their metadata, OCI
//! whiteouts, and malicious layers that try to write outside the destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use skiff_rootfs::unpack::{
    Compression, UnpackError, UnpackStats, compression_for, decompress, sniff, unpack_layer,
};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

/// These tests create device nodes, set owners and trusted xattrs: they need root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the unpack integration tests must run as root (mknod, chown, trusted.* xattrs)"
    );
}

/// A tar stream built entry by entry, with raw names (the tar crate's own setters refuse
/// `..` and absolute names, which is exactly what these tests need to write).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: EntryType, name: &str, link: &str, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        let old = h.as_old_mut();
        assert!(name.len() <= old.name.len() && link.len() <= old.linkname.len());
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        h
    }

    fn add(&mut self, mut h: Header, data: &[u8]) -> &mut Layer {
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Layer {
        self.add(Self::header(EntryType::Directory, name, "", mode, 0), b"")
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.file_with(name, data, 0o644, 0, 0)
    }

    fn file_with(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Layer {
        let mut h = Self::header(EntryType::Regular, name, "", mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.add(h, data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.add(
            Self::header(EntryType::Symlink, name, target, 0o777, 0),
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.add(Self::header(EntryType::Link, name, target, 0o644, 0), b"")
    }

    fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Layer {
        let mut h = Self::header(kind, name, "", 0o660, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.add(h, b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// A temp dir holding `dest/` (the snapshot) and `host/` (a marker directory standing for
/// the host, with a canary file), so that escapes are visible.
struct Sandbox {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    host: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-test-unpack-")
            .tempdir()
            .unwrap();
        let dest = tmp.path().join("dest");
        let host = tmp.path().join("host");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&host).unwrap();
        fs::write(host.join("canary"), b"canary").unwrap();
        Sandbox {
            _tmp: tmp,
            dest,
            host,
        }
    }

    fn unpack(&self, tar: &[u8], layer: &str) -> Result<UnpackStats, UnpackError> {
        unpack_layer(tar, &self.dest, layer)
    }

    /// Everything under the temp dir except `dest/`: names, types, sizes, modes, owners,
    /// link counts, contents of files and the opaque xattr.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let top = self.dest.parent().unwrap();
        walk(top, &mut |p| {
            if p.starts_with(&self.dest) {
                return;
            }
            let m = fs::symlink_metadata(p).unwrap();
            let content = if m.is_file() {
                String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned()
            } else {
                String::new()
            };
            let opaque = xattr::get(p, "trusted.overlay.opaque").unwrap();
            out.insert(
                p.to_path_buf(),
                format!(
                    "{:o} {}:{} n{} s{} {content:?} {opaque:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.nlink(),
                    m.size()
                ),
            );
        });
        out
    }
}

fn walk(p: &Path, f: &mut dyn FnMut(&Path)) {
    f(p);
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_dir() && !p.ends_with("dest") {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            walk(&n, f);
        }
    }
}

#[test]
fn entries_land_with_their_metadata() {
    require_root();
    let sb = Sandbox::new();
    // security.capability v2: effective, permitted = CAP_NET_RAW (13).
    let cap: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tar = Layer::new()
        .dir("./", 0o755)
        .dir("etc/", 0o755)
        .file_with("etc/hosts", b"127.0.0.1 localhost\n", 0o640, 1000, 1001)
        .dir("bin/", 0o755)
        .file_with("bin/su", b"setuid binary", 0o4755, 0, 0)
        .file_with("bin/sg", b"setgid binary", 0o2711, 0, 42)
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.user.note", b"kept"),
            (
                "SCHILY.xattr.security.selinux",
                b"system_u:object_r:bin_t:s0",
            ),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("mtime", b"1600000001.25"),
        ])
        .file_with("bin/ping", b"capable binary", 0o755, 0, 0)
        .symlink("bin/sh", "busybox")
        .symlink("etc/abs", "/etc/passwd")
        .hardlink("bin/su2", "bin/su")
        .hardlink("bin/su3", "/bin/su")
        .dir("tmp/", 0o1777)
        .dir("shared/", 0o2775)
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/loop0", EntryType::Block, 7, 0)
        .device("run/fifo", EntryType::Fifo, 0, 0)
        // Later entries replace earlier ones.
        .file("a", b"file first")
        .dir("a/", 0o750)
        .file("a/x", b"inside")
        .dir("b/", 0o755)
        .file("b/y", b"gone")
        .file("b", b"file now")
        .file("c", b"old")
        .file("c", b"new")
        .finish();

    let stats = sb.unpack(&tar, "layer-meta").unwrap();
    assert_eq!(stats.entries, 24);
    assert_eq!(stats.whiteouts, 0);
    let d = &sb.dest;
    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();

    let hosts = meta("etc/hosts");
    assert!(hosts.is_file());
    assert_eq!(
        (hosts.mode() & 0o7777, hosts.uid(), hosts.gid()),
        (0o640, 1000, 1001)
    );
    assert_eq!(hosts.mtime(), MTIME as i64);
    assert_eq!(
        fs::read(d.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );

    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/sg").mode() & 0o7777, 0o2711);
    assert_eq!(meta("bin/sg").gid(), 42);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("shared").mode() & 0o7777, 0o2775);
    assert!(meta("tmp").is_dir());

    let ping = d.join("bin/ping");
    assert_eq!(
        xattr::get(&ping, "security.capability").unwrap().unwrap(),
        cap
    );
    assert_eq!(xattr::get(&ping, "user.note").unwrap().unwrap(), b"kept");
    assert_eq!(xattr::get(&ping, "trusted.overlay.redirect").unwrap(), None);
    // Either SELinux is off (no label at all) or the label is the host policy's, not ours.
    assert_ne!(
        xattr::get(&ping, "security.selinux").unwrap().as_deref(),
        Some(&b"system_u:object_r:bin_t:s0"[..])
    );
    assert_eq!(
        (meta("bin/ping").mtime(), meta("bin/ping").mtime_nsec()),
        (1_600_000_001, 250_000_000)
    );

    assert_eq!(
        fs::read_link(d.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(d.join("etc/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(meta("etc/abs").file_type().is_symlink());
    assert_eq!(meta("bin/su2").ino(), meta("bin/su").ino());
    assert_eq!(meta("bin/su3").ino(), meta("bin/su").ino());
    assert_eq!(meta("bin/su").nlink(), 3);

    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o660);
    let lp = meta("dev/loop0");
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 0));
    assert!(meta("run/fifo").file_type().is_fifo());
    // Implicit parents get 0755.
    assert_eq!(meta("run").mode() & 0o7777, 0o755);

    assert!(meta("a").is_dir());
    assert_eq!(meta("a").mode() & 0o7777, 0o750);
    assert_eq!(fs::read(d.join("a/x")).unwrap(), b"inside");
    assert!(meta("b").is_file());
    assert_eq!(fs::read(d.join("b")).unwrap(), b"file now");
    assert_eq!(fs::read(d.join("c")).unwrap(), b"new");

    // Directory mtimes survive the creation of their children.
    assert_eq!(meta("etc").mtime(), MTIME as i64);
    assert_eq!(meta("bin").mtime(), MTIME as i64);
    assert_eq!(fs::metadata(d).unwrap().mtime(), MTIME as i64);
}

#[test]
fn compressed_layers_unpack() {
    require_root();
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", b"ID=skiff\n")
        .finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (media_type, blob) in [
        ("application/vnd.oci.image.layer.v1.tar", &tar),
        ("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", &gz),
        ("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
    ] {
        let c = compression_for(media_type).unwrap();
        assert_eq!(sniff(blob), c, "{media_type}");
        let sb = Sandbox::new();
        let stream = decompress(&blob[..], c).unwrap();
        unpack_layer(stream, &sb.dest, media_type).unwrap();
        assert_eq!(
            fs::read(sb.dest.join("etc/os-release")).unwrap(),
            b"ID=skiff\n"
        );
    }
    // A corrupt gzip stream is a read error naming the layer.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let sb = Sandbox::new();
    let mut stream = decompress(&bad[..], Compression::Gzip).unwrap();
    let res = unpack_layer(&mut stream, &sb.dest, "layer-corrupt").and_then(|s| {
        // The tar may end before the damage; draining surfaces it then.
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .map(|_| s)
            .map_err(|source| UnpackError::Read {
                layer: "layer-corrupt".into(),
                after: None,
                source,
            })
    });
    let err = res.unwrap_err();
    assert!(err.to_string().contains("layer-corrupt"), "{err}");
}

#[test]
fn whiteouts_become_overlay_markers() {
    require_root();
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.passwd", b"")
        .dir("var/", 0o755)
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"new content")
        .file(".wh.topfile", b"")
        // The opaque marker creates its directory if the layer does not list it.
        .file("opt/app/.wh..wh..opq", b"")
        // Whiteouts only hide lower layers: a file of this layer stays, a directory of
        // this layer becomes opaque.
        .file("same", b"mine")
        .file(".wh.same", b"")
        .dir("mydir/", 0o755)
        .file("mydir/f", b"mine too")
        .file(".wh.mydir", b"")
        .finish();
    let stats = sb.unpack(&tar, "layer-wh").unwrap();
    assert_eq!(stats.whiteouts, 6);
    let d = &sb.dest;
    for p in ["etc/passwd", "topfile"] {
        let m = fs::symlink_metadata(d.join(p)).unwrap();
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert!(!d.join("etc/.wh.passwd").exists());
    assert!(!d.join("var/.wh..wh..opq").exists());
    for p in ["var", "opt/app", "mydir"] {
        assert_eq!(
            xattr::get(d.join(p), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..]),
            "{p}"
        );
    }
    assert_eq!(
        xattr::get(d.join("etc"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(fs::read(d.join("var/new")).unwrap(), b"new content");
    assert_eq!(fs::read(d.join("same")).unwrap(), b"mine");
    assert_eq!(fs::read(d.join("mydir/f")).unwrap(), b"mine too");

    for bad in [".wh..wh.plnk", "dir/.wh.", "dir/.wh..", ".wh..wh..opqx"] {
        let sb = Sandbox::new();
        let tar = Layer::new().file(bad, b"").finish();
        let err = sb.unpack(&tar, "layer-badwh").unwrap_err();
        assert!(matches!(err, UnpackError::Whiteout { .. }), "{bad}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("layer-badwh") && msg.contains(bad), "{msg}");
    }
}

#[test]
fn absolute_names_land_inside() {
    require_root();
    let sb = Sandbox::new();
    let host_path = PathBuf::from(format!("/skiff-test-abs-{}", std::process::id()));
    let name = format!("{}/escape", host_path.display());
    let tar = Layer::new()
        .file(&name, b"inside")
        .file("/etc/../abs2", b"also inside")
        .finish();
    sb.unpack(&tar, "layer-abs").unwrap();
    assert!(!host_path.exists(), "absolute name written on the host");
    let inside = sb
        .dest
        .join(host_path.strip_prefix("/").unwrap())
        .join("escape");
    assert_eq!(fs::read(inside).unwrap(), b"inside");
    assert_eq!(fs::read(sb.dest.join("abs2")).unwrap(), b"also inside");
}

#[test]
fn malicious_layers_are_rejected_and_nothing_outside_changes() {
    require_root();
    let passwd_links = fs::symlink_metadata("/etc/passwd").unwrap().nlink();

    /// Builds the layer, given the host marker directory's absolute path.
    type Build = fn(&mut Layer, &str) -> Vec<u8>;
    /// Whether the error is the expected kind.
    type Expect = fn(&UnpackError) -> bool;
    let cases: &[(&str, &str, Build, Expect)] = &[
        (
            "dotdot name",
            "../escape",
            |l, _| l.file("../escape", b"x").finish(),
            |e| matches!(e, UnpackError::Escape { .. }),
        ),
        (
            "dotdot deep",
            "a/../../escape",
            |l, _| l.dir("a/", 0o755).file("a/../../escape", b"x").finish(),
            |e| matches!(e, UnpackError::Escape { .. }),
        ),
        (
            "dotdot dir",
            "../../",
            |l, _| l.dir("../../", 0o777).finish(),
            |e| matches!(e, UnpackError::Escape { .. }),
        ),
        (
            "file through absolute symlink",
            "link/evil",
            |l, host| l.symlink("link", host).file("link/evil", b"x").finish(),
            |e| matches!(e, UnpackError::Parent { .. }),
        ),
        (
            "dir through absolute symlink",
            "link/sub/",
            |l, host| l.symlink("link", host).dir("link/sub/", 0o755).finish(),
            |e| matches!(e, UnpackError::Parent { .. }),
        ),
        (
            "symlink chain up",
            "up/up/evil",
            |l, _| l.symlink("up", "..").file("up/up/evil", b"x").finish(),
            |e| matches!(e, UnpackError::Parent { .. }),
        ),
        (
            "relative symlink out",
            "rel/canary",
            |l, _| {
                l.symlink("rel", "../host")
                    .file("rel/canary", b"owned")
                    .finish()
            },
            |e| matches!(e, UnpackError::Parent { .. }),
        ),
        (
            "whiteout through symlink",
            "link/.wh.canary",
            |l, host| {
                l.symlink("link", host)
                    .file("link/.wh.canary", b"")
                    .finish()
            },
            |e| matches!(e, UnpackError::Parent { .. }),
        ),
        (
            "opaque through symlink",
            "link/.wh..wh..opq",
            |l, host| {
                l.symlink("link", host)
                    .file("link/.wh..wh..opq", b"")
                    .finish()
            },
            // `link` exists but is no directory: refused, nothing followed.
            |e| matches!(e, UnpackError::Write { .. }),
        ),
        (
            "hardlink to host file",
            "pw",
            |l, _| l.hardlink("pw", "/etc/passwd").finish(),
            |e| matches!(e, UnpackError::HardlinkTarget { .. }),
        ),
        (
            "hardlink climbing out",
            "x",
            |l, _| l.hardlink("x", "../../x").finish(),
            |e| matches!(e, UnpackError::HardlinkEscape { .. }),
        ),
        (
            "hardlink through symlink",
            "h",
            |l, host| {
                l.symlink("link", host)
                    .hardlink("h", "link/canary")
                    .finish()
            },
            |e| matches!(e, UnpackError::HardlinkTarget { .. }),
        ),
        (
            "hardlink to a directory",
            "h",
            |l, _| l.dir("d/", 0o755).hardlink("h", "d").finish(),
            |e| matches!(e, UnpackError::HardlinkTarget { .. }),
        ),
        (
            "hardlink to a later entry",
            "h",
            |l, _| l.hardlink("h", "later").file("later", b"x").finish(),
            |e| matches!(e, UnpackError::HardlinkTarget { .. }),
        ),
    ];

    for (what, entry, build, expected) in cases {
        let sb = Sandbox::new();
        let before = sb.outside();
        let host = sb.host.to_str().unwrap().to_string();
        let tar = build(&mut Layer::new(), &host);
        let layer = format!("layer-{}", what.replace(' ', "-"));
        let err = sb.unpack(&tar, &layer).unwrap_err();
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&layer) && msg.contains(entry),
            "{what}: error does not name layer and entry: {msg}"
        );
        assert_eq!(
            sb.outside(),
            before,
            "{what}: something outside the layer changed"
        );
    }
    assert_eq!(
        fs::symlink_metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
}

#[test]
fn symlink_entries_are_never_followed() {
    require_root();
    let sb = Sandbox::new();
    let before = sb.outside();
    let host = sb.host.to_str().unwrap().to_string();
    let canary = format!("{host}/canary");
    let tar = Layer::new()
        // A file entry over a symlink replaces the symlink, it does not write through it.
        .symlink("f", &canary)
        .file_with("f", b"replaced", 0o600, 0, 0)
        // So does a directory entry, and a device.
        .symlink("d", &host)
        .dir("d/", 0o700)
        .symlink("n", &canary)
        .device("n", EntryType::Fifo, 0, 0)
        // Owner, mode and mtime of a symlink entry apply to the link itself.
        .symlink("s", &canary)
        // A hardlink to a symlink entry links the symlink, not its target.
        .hardlink("h", "s")
        .finish();
    sb.unpack(&tar, "layer-symlinks").unwrap();
    let d = &sb.dest;
    assert_eq!(fs::read(d.join("f")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(d.join("d")).unwrap().is_dir());
    assert!(
        fs::symlink_metadata(d.join("n"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(d.join("h"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::symlink_metadata(d.join("s")).unwrap().mtime(),
        MTIME as i64
    );
    assert_eq!(sb.outside(), before);
}

#[test]
fn broken_archives_name_the_layer() {
    require_root();
    let sb = Sandbox::new();
    let mut tar = Layer::new()
        .file("ok", b"fine")
        .file("second", b"data")
        .finish();
    // Damage the second header's checksum.
    tar[1024 + 148] ^= 0x01;
    let err = sb.unpack(&tar, "layer-broken").unwrap_err();
    assert!(matches!(err, UnpackError::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "layer layer-broken: cannot read the tar stream after entry \"ok\""
    );

    let sb = Sandbox::new();
    let mut tar = Layer::new().file("truncated", &[7u8; 4096]).finish();
    tar.truncate(512 + 1000);
    let err = sb.unpack(&tar, "layer-short").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("layer-short") && msg.contains("truncated"),
        "{msg}"
    );

    let sb = Sandbox::new();
    let tar = Layer::new()
        .add(
            Layer::header(EntryType::new(b'V'), "label", "", 0o644, 0),
            b"",
        )
        .finish();
    let err = sb.unpack(&tar, "layer-odd").unwrap_err();
    assert!(
        matches!(err, UnpackError::UnsupportedType { kind: 'V', .. }),
        "{err:?}"
    );

    let sb = Sandbox::new();
    let tar = Layer::new().symlink("/", "elsewhere").finish();
    let err = sb.unpack(&tar, "layer-root").unwrap_err();
    assert!(matches!(err, UnpackError::Root { .. }), "{err:?}");
}

/// umoci writes layers that stop right after the last file's data (no padding, no
/// end-of-archive blocks); they unpack, while a stream cut inside a file's data fails.
#[test]
fn layers_without_trailer_unpack_but_cut_data_fails() {
    require_root();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(30);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/passwd", &[b'x'; 30][..])
        .unwrap();
    let full = b.into_inner().unwrap();
    // header (512) + 30 bytes of data, nothing after
    let cut = &full[..512 + 30];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    fs::create_dir(&dest).unwrap();
    unpack_layer(cut, &dest, "no-trailer").unwrap();
    assert_eq!(fs::read(dest.join("etc/passwd")).unwrap(), vec![b'x'; 30]);

    let dest2 = dir.path().join("fs2");
    fs::create_dir(&dest2).unwrap();
    let err = unpack_layer(&full[..512 + 10], &dest2, "cut-data").unwrap_err();
    assert!(err.to_string().contains("cut-data"), "{err}");
}

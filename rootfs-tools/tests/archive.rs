//! Import and export against images built by `umoci` and checked by `skopeo`.
//!
//! Needs `umoci`, `skopeo`, `tar` and a static `/bin/busybox`; a missing tool fails the test
//! with the command to install it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use skiff_rootfs::archive::{self, ArchiveError, ExportFormat};
use skiff_rootfs::digest::Digest;
use skiff_rootfs::reference::Reference;
use skiff_rootfs::store::{ImageRecord, Store};

const NAME: &str = "docker.io/skiff-test/busybox:latest";

fn run(cmd: &mut Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install it: apt-get install -y umoci skopeo tar busybox-static")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temp dir with an OCI layout at `<dir>/oci`, tag `latest`: one layer holding a static
/// busybox and `/bin/sh`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: apt-get install -y busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        let layout = dir.path().join("oci");
        let image = format!("{}:latest", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&rootfs)
            .arg("/"));
        run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/sh"]));
        Fixture { dir }
    }

    fn layout(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self, name: &str) -> Store {
        Store::open(&self.path(name)).unwrap()
    }

    /// The manifest descriptor umoci wrote for `latest`.
    fn manifest_digest(&self) -> Digest {
        let index = ImageIndex::from_file(self.layout().join("index.json")).unwrap();
        index.manifests()[0].digest().to_string().parse().unwrap()
    }

    fn manifest(&self) -> ImageManifest {
        let d = self.manifest_digest();
        ImageManifest::from_file(self.layout().join("blobs/sha256").join(d.hex())).unwrap()
    }

    /// A copy of the layout to tamper with.
    fn copy_layout(&self, name: &str) -> PathBuf {
        let dest = self.path(name);
        run(Command::new("cp").arg("-a").arg(self.layout()).arg(&dest));
        dest
    }

    fn tar_layout(&self, layout: &Path, name: &str, gzip: bool) -> PathBuf {
        let dest = self.path(name);
        run(Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg(if gzip { "-czf" } else { "-cf" })
            .arg(&dest)
            .arg("."));
        dest
    }
}

fn name() -> Reference {
    "skiff-test/busybox".parse().unwrap()
}

fn digest(d: &impl ToString) -> Digest {
    d.to_string().parse().unwrap()
}

/// Checks the record against the umoci layout it came from.
fn check_record(fx: &Fixture, store: &Store, rec: &ImageRecord) {
    let manifest = fx.manifest();
    assert_eq!(rec.name, NAME);
    assert_eq!(rec.manifest, fx.manifest_digest());
    assert_eq!(rec.index, None);
    assert_eq!(rec.config, digest(manifest.config().digest()));
    assert_eq!(rec.platform, "linux/amd64");
    assert_eq!(rec.layers.len(), 1);
    let layer = &rec.layers[0];
    assert_eq!(layer.digest, digest(manifest.layers()[0].digest()));
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(layer.size, manifest.layers()[0].size());
    assert_eq!(rec.size, manifest.config().size() + layer.size);
    chrono::DateTime::parse_from_rfc3339(&rec.created).unwrap();

    let config: ImageConfiguration =
        serde_json::from_slice(&store.read_blob(&rec.config).unwrap()).unwrap();
    assert_eq!(
        config.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &["/bin/sh".to_string()]
    );
    assert_eq!(digest(&config.rootfs().diff_ids()[0]), layer.diff_id);
    // The diff_id is the digest of the uncompressed layer, which holds busybox.
    let gz = store.read_blob(&layer.digest).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(Digest::sha256_of(&tar), layer.diff_id);
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("bin/busybox")),
        "{names:?}"
    );
    for d in rec.blobs() {
        store.read_blob(d).unwrap();
    }
    assert_eq!(
        store.get_image("skiff-test/busybox").unwrap().as_ref(),
        Some(rec)
    );
}

#[test]
fn import_oci_layout_directory() {
    let fx = Fixture::new();
    let store = fx.store("store");

    // ref.name is the bare tag `latest`: without a name there is no repository.
    let err = archive::import(&store, &fx.layout(), None).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TagOnly { ref tag, .. } if tag == "latest"),
        "{err:?}"
    );
    assert!(store.list_images().unwrap().is_empty());

    let records = archive::import(&store, &fx.layout(), Some(&name())).unwrap();
    assert_eq!(records.len(), 1);
    check_record(&fx, &store, &records[0]);
    assert_eq!(store.list_images().unwrap(), records);

    // Importing again is idempotent on content.
    let again = archive::import(&store, &fx.layout(), Some(&name())).unwrap();
    assert_eq!(again[0].manifest, records[0].manifest);
    assert!(store.gc().unwrap().blobs.is_empty());
}

#[test]
fn import_oci_layout_tar_and_tar_gz() {
    let fx = Fixture::new();
    for (file, gzip) in [("oci.tar", false), ("oci.tar.gz", true)] {
        let tar = fx.tar_layout(&fx.layout(), file, gzip);
        let store = fx.store(&format!("store-{file}"));
        let records = archive::import(&store, &tar, Some(&name())).unwrap();
        assert_eq!(records.len(), 1, "{file}");
        check_record(&fx, &store, &records[0]);
    }
}

fn skopeo_inspect(transport_ref: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args(["inspect", transport_ref]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn export_is_accepted_by_skopeo_and_round_trips() {
    let fx = Fixture::new();
    let store = fx.store("store");
    let rec = archive::import(&store, &fx.layout(), Some(&name()))
        .unwrap()
        .remove(0);

    // OCI directory.
    let dir = fx.path("out-oci");
    archive::export(&store, &["skiff-test/busybox"], &dir, ExportFormat::OciDir).unwrap();
    let inspected = skopeo_inspect(&format!("oci:{}:latest", dir.display()));
    assert_eq!(inspected["Digest"], rec.manifest.to_string());
    assert_eq!(inspected["Layers"][0], rec.layers[0].digest.to_string());
    assert_eq!(inspected["Architecture"], "amd64");
    let index = ImageIndex::from_file(dir.join("index.json")).unwrap();
    let ann = index.manifests()[0].annotations().as_ref().unwrap();
    assert_eq!(ann["org.opencontainers.image.ref.name"], "latest");
    assert_eq!(ann["io.containerd.image.name"], NAME);

    // OCI tar.
    let oci_tar = fx.path("out-oci.tar");
    archive::export(&store, &[NAME], &oci_tar, ExportFormat::OciTar).unwrap();
    let inspected = skopeo_inspect(&format!("oci-archive:{}:latest", oci_tar.display()));
    assert_eq!(inspected["Digest"], rec.manifest.to_string());

    // Docker tar, by image id.
    let docker_tar = fx.path("out-docker.tar");
    archive::export(
        &store,
        &[&rec.config.hex()[..12]],
        &docker_tar,
        ExportFormat::DockerTar,
    )
    .unwrap();
    let inspected = skopeo_inspect(&format!("docker-archive:{}", docker_tar.display()));
    assert_eq!(inspected["Architecture"], "amd64");
    // docker-archive layers are the uncompressed tars: their digests are the diff_ids.
    assert_eq!(inspected["Layers"][0], rec.layers[0].diff_id.to_string());
    let config = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--config"])
        .arg(format!("docker-archive:{}", docker_tar.display())));
    assert_eq!(Digest::sha256_of(config.as_bytes()), rec.config);

    // Round trips: OCI formats keep the manifest digest; docker keeps the image id.
    for (src, fmt) in [(&dir, "dir"), (&oci_tar, "oci tar")] {
        let store2 = fx.store(&format!("store-rt-{}", fmt.replace(' ', "-")));
        let back = archive::import(&store2, src, None).unwrap();
        assert_eq!(back.len(), 1, "{fmt}");
        assert_eq!(
            back[0].name, NAME,
            "{fmt}: named by the io.containerd.image.name annotation"
        );
        assert_eq!(back[0].manifest, rec.manifest, "{fmt}");
        assert_eq!(back[0].config, rec.config, "{fmt}");
        assert_eq!(back[0].layers, rec.layers, "{fmt}");
    }
    let store3 = fx.store("store-rt-docker");
    let back = archive::import(&store3, &docker_tar, None).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].name, NAME);
    assert_eq!(back[0].config, rec.config);
    assert_eq!(back[0].layers[0].diff_id, rec.layers[0].diff_id);
    assert_eq!(back[0].layers[0].digest, rec.layers[0].diff_id);
    assert_eq!(
        back[0].layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    // ...and what it imported exports again as a valid OCI layout.
    let dir2 = fx.path("out-oci-from-docker");
    archive::export(&store3, &[NAME], &dir2, ExportFormat::OciDir).unwrap();
    let inspected = skopeo_inspect(&format!("oci:{}:latest", dir2.display()));
    assert_eq!(inspected["Digest"], back[0].manifest.to_string());
    // ...and as a docker archive again (uncompressed layers are copied as they are).
    let docker_tar2 = fx.path("out-docker2.tar");
    archive::export(&store3, &[NAME], &docker_tar2, ExportFormat::DockerTar).unwrap();
    let inspected = skopeo_inspect(&format!("docker-archive:{}", docker_tar2.display()));
    assert_eq!(inspected["Layers"][0], rec.layers[0].diff_id.to_string());

    // An OCI directory export needs an empty destination; unknown names are refused.
    let err = archive::export(&store, &[NAME], &dir, ExportFormat::OciDir).unwrap_err();
    assert!(matches!(err, ArchiveError::DestinationExists(_)), "{err:?}");
    let err =
        archive::export(&store, &["nginx"], &fx.path("nope"), ExportFormat::OciTar).unwrap_err();
    assert!(matches!(err, ArchiveError::ImageNotFound(_)), "{err:?}");
    assert!(!fx.path("nope").exists());
}

#[test]
fn import_docker_archive_from_skopeo() {
    let fx = Fixture::new();
    let tar = fx.path("docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:latest", fx.layout().display()),
        &format!("docker-archive:{}:skiff-test/busybox:v1", tar.display()),
    ]));
    let store = fx.store("store");
    let records = archive::import(&store, &tar, None).unwrap();
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec.name, "docker.io/skiff-test/busybox:v1");
    let manifest = fx.manifest();
    assert_eq!(rec.config, digest(manifest.config().digest()));
    assert_eq!(rec.platform, "linux/amd64");
    assert_eq!(
        rec.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(rec.layers[0].digest, rec.layers[0].diff_id);
    // The manifest built for it is a valid OCI manifest naming the stored blobs.
    let built: ImageManifest =
        serde_json::from_slice(&store.read_blob(&rec.manifest).unwrap()).unwrap();
    assert_eq!(digest(built.config().digest()), rec.config);
    assert_eq!(digest(built.layers()[0].digest()), rec.layers[0].digest);

    // A name given for a single-image archive wins over RepoTags.
    let store2 = fx.store("store2");
    let renamed = archive::import(&store2, &tar, Some(&"other:2".parse().unwrap())).unwrap();
    assert_eq!(renamed[0].name, "docker.io/library/other:2");
    assert_eq!(
        renamed[0].manifest, rec.manifest,
        "the built manifest is deterministic"
    );

    // The same archive unpacked into a directory.
    let unpacked = fx.path("docker-dir");
    fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-xf")
        .arg(&tar));
    let store3 = fx.store("store3");
    let from_dir = archive::import(&store3, &unpacked, None).unwrap();
    assert_eq!(from_dir[0].manifest, rec.manifest);
}

fn layer_blob(fx: &Fixture, layout: &Path) -> (Digest, PathBuf) {
    let d = digest(fx.manifest().layers()[0].digest());
    let path = layout.join("blobs/sha256").join(d.hex());
    (d, path)
}

#[test]
fn tampered_blob_is_rejected_and_nothing_recorded() {
    let fx = Fixture::new();
    let layout = fx.copy_layout("tampered");
    let (layer, path) = layer_blob(&fx, &layout);
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    fs::write(&path, &data).unwrap();
    let tar = fx.tar_layout(&layout, "tampered.tar", false);

    for src in [&layout, &tar] {
        let store = fx.store(&format!(
            "store-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        let err = archive::import(&store, src, Some(&name())).unwrap_err();
        assert!(matches!(err, ArchiveError::Blob { .. }), "{err:?}");
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
        assert!(store.list_images().unwrap().is_empty());
        assert!(!store.has_blob(&layer));
    }

    // A docker archive whose config does not match its name.
    let docker = fx.path("docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:latest", fx.layout().display()),
        &format!("docker-archive:{}:skiff-test/busybox:v1", docker.display()),
    ]));
    let unpacked = fx.path("docker-dir");
    fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-xf")
        .arg(&docker));
    let config = digest(fx.manifest().config().digest());
    let config_path = unpacked.join(format!("{}.json", config.hex()));
    let text = fs::read_to_string(&config_path)
        .unwrap()
        .replace("/bin/sh", "/bin/xx");
    fs::write(&config_path, text).unwrap();
    let store = fx.store("store-docker");
    let err = archive::import(&store, &unpacked, None).unwrap_err();
    assert!(err.to_string().contains(&config.to_string()), "{err}");
    assert!(store.list_images().unwrap().is_empty());
}

#[test]
fn missing_blob_is_a_clear_error() {
    let fx = Fixture::new();
    let layout = fx.copy_layout("missing");
    let (layer, path) = layer_blob(&fx, &layout);
    fs::remove_file(&path).unwrap();
    let tar = fx.tar_layout(&layout, "missing.tar", false);
    for src in [&layout, &tar] {
        let store = fx.store(&format!(
            "store-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        let err = archive::import(&store, src, Some(&name())).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::MissingBlob { digest, .. } if *digest == layer),
            "{err:?}"
        );
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
        assert!(store.list_images().unwrap().is_empty());
    }
    // A path that is no image at all.
    let store = fx.store("store-empty");
    let empty = fx.path("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        archive::import(&store, &empty, None),
        Err(ArchiveError::UnknownFormat { .. })
    ));
}

/// A tar with the layout's files plus one member named `member`, written with a raw header
/// (the tar crate refuses to write `..` itself).
fn tar_with_member(fx: &Fixture, file: &str, member: &str) -> PathBuf {
    let dest = fx.path(file);
    let mut builder = tar::Builder::new(fs::File::create(&dest).unwrap());
    builder.append_dir_all(".", fx.layout()).unwrap();
    let data = b"escape";
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_gnu_mut().unwrap().name;
    name[..member.len()].copy_from_slice(member.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &data[..]).unwrap();
    builder.into_inner().unwrap();
    dest
}

#[test]
fn tar_with_escaping_member_is_refused() {
    let fx = Fixture::new();
    for (i, member) in ["../evil", "blobs/../../evil", "/etc/evil"]
        .iter()
        .enumerate()
    {
        let tar = tar_with_member(&fx, &format!("evil-{i}.tar"), member);
        let store = fx.store(&format!("store-{i}"));
        let err = archive::import(&store, &tar, Some(&name())).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::UnsafePath { member: m, .. } if m == member),
            "{member}: {err:?}"
        );
        assert!(err.to_string().contains(member), "{err}");
        assert!(store.list_images().unwrap().is_empty());
    }
    assert!(!fx.dir.path().parent().unwrap().join("evil").exists());
}

#[test]
fn platform_is_chosen_from_a_nested_index() {
    let fx = Fixture::new();
    let layout = fx.copy_layout("multi");
    let real = fx.manifest_digest();
    let real_size = fs::metadata(layout.join("blobs/sha256").join(real.hex()))
        .unwrap()
        .len();
    // An index with the real manifest as linux/amd64 and an absent one as linux/arm64/v8.
    let absent = Digest::sha256_of(b"arm64 manifest not in the layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": absent.to_string(),
             "size": 100, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": real.to_string(),
             "size": real_size, "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = Digest::sha256_of(&index_bytes);
    fs::write(
        layout.join("blobs/sha256").join(index_digest.hex()),
        &index_bytes,
    )
    .unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest.to_string(),
            "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "example.com/multi/busybox:1"}
        }]
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let store = fx.store("store");
    let records = archive::import(&store, &layout, None).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "example.com/multi/busybox:1");
    assert_eq!(records[0].manifest, real);
    assert_eq!(records[0].index.as_ref(), Some(&index_digest));
    assert!(store.read_blob(&index_digest).is_ok());

    let store = fx.store("store-arm");
    let err = archive::import_platform(&store, &layout, None, "linux/arm64").unwrap_err();
    assert!(
        matches!(&err, ArchiveError::MissingBlob { digest, .. } if *digest == absent),
        "{err:?}"
    );
    let err = archive::import_platform(&store, &layout, None, "linux/s390x").unwrap_err();
    assert!(matches!(err, ArchiveError::NoPlatform { .. }), "{err:?}");
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
    assert!(store.list_images().unwrap().is_empty());

    // Platforms on the top-level entries of index.json select too.
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": real.to_string(),
            "size": real_size,
            "platform": {"os": "linux", "architecture": "amd64"},
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let err = archive::import_platform(&store, &layout, Some(&name()), "linux/arm64").unwrap_err();
    assert!(
        matches!(&err, ArchiveError::NoPlatform { index, .. } if index == "index.json"),
        "{err:?}"
    );
    let records = archive::import_platform(&store, &layout, Some(&name()), "linux/amd64").unwrap();
    assert_eq!(records[0].manifest, real);
    assert_eq!(records[0].index, None);
}

#[test]
fn export_of_several_images_with_the_same_tag() {
    let fx = Fixture::new();
    let store = fx.store("store");
    archive::import(&store, &fx.layout(), Some(&name())).unwrap();
    let other: Reference = "example.com/team/app:latest".parse().unwrap();
    archive::import(&store, &fx.layout(), Some(&other)).unwrap();
    let dir = fx.path("out");
    archive::export(
        &store,
        &[NAME, "example.com/team/app"],
        &dir,
        ExportFormat::OciDir,
    )
    .unwrap();
    // Both are `latest`: the layout names them in full.
    let index = ImageIndex::from_file(dir.join("index.json")).unwrap();
    let refs: HashMap<String, String> = index
        .manifests()
        .iter()
        .map(|m| {
            let a = m.annotations().as_ref().unwrap();
            (
                a["io.containerd.image.name"].clone(),
                a["org.opencontainers.image.ref.name"].clone(),
            )
        })
        .collect();
    assert_eq!(refs[NAME], NAME);
    skopeo_inspect(&format!("oci:{}:{NAME}", dir.display()));
    let store2 = fx.store("store2");
    let back = archive::import(&store2, &dir, None).unwrap();
    let names: Vec<&str> = back.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [NAME, "example.com/team/app:latest"]);

    // One docker archive entry per image id, with both tags.
    let tar = fx.path("out.tar");
    archive::export(
        &store,
        &[NAME, "example.com/team/app"],
        &tar,
        ExportFormat::DockerTar,
    )
    .unwrap();
    let mut manifest = String::new();
    let mut archive_file = tar::Archive::new(fs::File::open(&tar).unwrap());
    for entry in archive_file.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("manifest.json") {
            entry.read_to_string(&mut manifest).unwrap();
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1);
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["skiff-test/busybox:latest", "example.com/team/app:latest"])
    );
}

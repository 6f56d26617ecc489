//! The content store against real files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use skiff_rootfs::digest::{Digest, DigestError};
use skiff_rootfs::store::{ImageRecord, LayerRecord, Store, StoreError};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Files in `<root>/content/ingest` (temporary and partial).
fn ingest_files(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.root().join("content/ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn record(store: &Store, name: &str, tag: &[u8]) -> ImageRecord {
    let blob = |suffix: &str| {
        let data = [tag, suffix.as_bytes()].concat();
        let d = Digest::sha256_of(&data);
        store.write_blob(&d, &data).unwrap();
        (d, data.len() as u64)
    };
    let (manifest, _) = blob("manifest");
    let (config, config_size) = blob("config");
    let (layer, layer_size) = blob("layer");
    ImageRecord {
        name: name.to_string(),
        manifest,
        index: None,
        config,
        layers: vec![LayerRecord {
            digest: layer.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
            size: layer_size,
            diff_id: layer,
        }],
        platform: "linux/amd64".to_string(),
        created: "2024-01-01T00:00:00Z".to_string(),
        size: config_size + layer_size,
    }
}

#[test]
fn open_creates_layout_and_cleans_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    for sub in ["content/blobs", "content/ingest", "images"] {
        assert!(root.join(sub).is_dir(), "{sub}");
    }
    // pid 4194304 is above the kernel's pid_max: its owner is surely dead.
    let dead = root.join("content/ingest/.tmp-4194304-0-0");
    let dead_record = root.join("images/.tmp-4194304-1-0");
    let ours = root.join(format!("content/ingest/.tmp-{}-9-9", std::process::id()));
    let partial = root.join(format!("content/ingest/sha256-{}.partial", "a".repeat(64)));
    for f in [&dead, &dead_record, &ours, &partial] {
        fs::write(f, b"x").unwrap();
    }
    Store::open(&root).unwrap();
    assert!(!dead.exists());
    assert!(!dead_record.exists());
    assert!(ours.exists(), "a live process's temp file is kept");
    assert!(partial.exists(), "partial downloads are kept for resuming");
}

#[test]
fn write_read_and_dedup() {
    let (_dir, store) = store();
    let data = b"hello blob".to_vec();
    let d = Digest::sha256_of(&data);
    assert!(!store.has_blob(&d));
    store.write_blob(&d, &data).unwrap();
    assert!(store.has_blob(&d));
    assert_eq!(
        store.blob_path(&d),
        store.root().join("content/blobs/sha256").join(d.hex())
    );
    assert_eq!(store.read_blob(&d).unwrap(), data);
    let mut streamed = Vec::new();
    store
        .open_blob(&d)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, data);

    // Writing it again is a no-op: same file.
    let ino = fs::metadata(store.blob_path(&d)).unwrap().ino();
    store.write_blob(&d, &data).unwrap();
    assert_eq!(fs::metadata(store.blob_path(&d)).unwrap().ino(), ino);
    assert_eq!(
        store.write_blob_from(&d, None, io::empty()).unwrap(),
        data.len() as u64
    );
    assert!(ingest_files(&store).is_empty());
}

#[test]
fn digest_mismatch_is_rejected_and_leaves_nothing() {
    let (_dir, store) = store();
    let d = Digest::sha256_of(b"the real content");
    let err = store.write_blob(&d, b"something else").unwrap_err();
    assert!(matches!(err, StoreError::Verify { .. }), "{err:?}");
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    assert!(!store.has_blob(&d));

    // Streaming: wrong content, and right content of the wrong size.
    let err = store
        .write_blob_from(&d, None, &b"something else"[..])
        .unwrap_err();
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    let err = store
        .write_blob_from(&d, Some(3), &b"the real content"[..])
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Verify {
            source: DigestError::Size { .. },
            ..
        }
    ));
    assert!(!store.has_blob(&d));
    assert!(
        ingest_files(&store).is_empty(),
        "{:?}",
        ingest_files(&store)
    );
}

#[test]
fn interrupted_ingest_resumes_at_the_right_offset() {
    let (_dir, store) = store();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    let size = Some(data.len() as u64);

    let mut ingest = store.ingest(&d, size).unwrap();
    assert_eq!(ingest.offset(), 0);
    ingest.write_all(&data[..123_457]).unwrap();
    drop(ingest); // the "crash"
    assert!(
        !store.has_blob(&d),
        "a partial blob never shows under blobs/"
    );
    assert_eq!(
        ingest_files(&store),
        [format!("sha256-{}.partial", d.hex())]
    );

    let mut ingest = store.ingest(&d, size).unwrap();
    assert_eq!(ingest.offset(), 123_457);
    // While one writer holds the partial, another cannot interleave.
    assert!(matches!(
        store.ingest(&d, size),
        Err(StoreError::IngestBusy { .. })
    ));
    ingest.write_all(&data[123_457..]).unwrap();
    ingest.commit().unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), data);
    assert!(ingest_files(&store).is_empty());
}

#[test]
fn ingest_rejects_bad_content_and_removes_the_partial() {
    let (_dir, store) = store();
    let d = Digest::sha256_of(b"good content");

    let mut ingest = store.ingest(&d, None).unwrap();
    ingest.write_all(b"bad content!").unwrap();
    let err = ingest.commit().unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Verify {
                source: DigestError::Mismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    assert!(!store.has_blob(&d));
    assert!(ingest_files(&store).is_empty());

    // Too short for the expected size.
    let mut ingest = store.ingest(&d, Some(12)).unwrap();
    ingest.write_all(b"good").unwrap();
    assert!(matches!(
        ingest.commit(),
        Err(StoreError::Verify {
            source: DigestError::Size { .. },
            ..
        })
    ));
    assert!(ingest_files(&store).is_empty());

    // Writing past the expected size fails at once.
    let mut ingest = store.ingest(&d, Some(4)).unwrap();
    assert!(ingest.write_all(b"good content").is_err());
    ingest.abort();
    assert!(ingest_files(&store).is_empty());

    // A partial longer than the expected size is discarded on reopen.
    let mut ingest = store.ingest(&d, None).unwrap();
    ingest.write_all(b"good content and more").unwrap();
    drop(ingest);
    let mut ingest = store.ingest(&d, Some(12)).unwrap();
    assert_eq!(ingest.offset(), 0);
    ingest.write_all(b"good content").unwrap();
    ingest.commit().unwrap();
    assert!(store.has_blob(&d));
}

#[test]
fn verification_on_read_catches_corruption_on_disk() {
    let (_dir, store) = store();
    let data = vec![7u8; 100_000];
    let d = Digest::sha256_of(&data);
    store.write_blob(&d, &data).unwrap();
    let mut corrupt = data.clone();
    corrupt[50_000] ^= 1;
    fs::write(store.blob_path(&d), &corrupt).unwrap();

    let err = store.read_blob(&d).unwrap_err();
    assert!(matches!(err, StoreError::Verify { .. }), "{err:?}");
    assert!(err.to_string().contains(&d.to_string()));

    let mut reader = store.open_blob(&d).unwrap();
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let inner = err
        .get_ref()
        .unwrap()
        .downcast_ref::<DigestError>()
        .unwrap();
    assert!(matches!(inner, DigestError::Mismatch { expected, .. } if *expected == d));

    assert!(matches!(
        store.read_blob(&Digest::sha256_of(b"absent")),
        Err(StoreError::BlobNotFound { .. })
    ));
}

#[test]
fn concurrent_writers_of_one_blob() {
    let (_dir, store) = store();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let d = Digest::sha256_of(&data);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                store
                    .write_blob_from(&d, Some(data.len() as u64), &data[..])
                    .unwrap()
            });
        }
    });
    assert_eq!(store.read_blob(&d).unwrap(), data);
    assert!(ingest_files(&store).is_empty());
}

#[test]
fn image_records() {
    let (_dir, store) = store();
    let busybox = record(&store, "docker.io/library/busybox:latest", b"busybox");
    let alias = ImageRecord {
        name: "example.com/mirror/busybox:1".to_string(),
        ..busybox.clone()
    };
    let other = record(&store, "docker.io/library/alpine:3", b"alpine");

    // A record never points to absent blobs.
    let dangling = ImageRecord {
        name: "docker.io/library/broken:1".to_string(),
        config: Digest::sha256_of(b"never written"),
        ..busybox.clone()
    };
    let err = store.put_image(&dangling).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&Digest::sha256_of(b"never written").to_string())
    );

    for r in [&busybox, &alias, &other] {
        store.put_image(r).unwrap();
    }
    let names: Vec<String> = store
        .list_images()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/library/alpine:3",
            "docker.io/library/busybox:latest",
            "example.com/mirror/busybox:1"
        ]
    );
    // By full name, by short name, by id and id prefix.
    let get = |n: &str| store.get_image(n).unwrap().map(|r| r.name);
    assert_eq!(
        get("docker.io/library/busybox:latest").as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(
        get("busybox").as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(
        get("alpine:3").as_deref(),
        Some("docker.io/library/alpine:3")
    );
    assert_eq!(
        get(other.config.hex()).as_deref(),
        Some("docker.io/library/alpine:3")
    );
    assert_eq!(
        get(&other.config.hex()[..12]).as_deref(),
        Some("docker.io/library/alpine:3")
    );
    assert_eq!(
        get(&format!("sha256:{}", &other.config.hex()[..8])).as_deref(),
        Some("docker.io/library/alpine:3")
    );
    assert!(
        get(&busybox.config.hex()[..12]).is_some(),
        "two names, one id"
    );
    assert_eq!(get("nginx"), None);
    // Replacing a record keeps one per name.
    store.put_image(&busybox).unwrap();
    assert_eq!(store.list_images().unwrap().len(), 3);

    let referenced = store.referenced_blobs().unwrap();
    let want: HashSet<Digest> = [&busybox, &other]
        .iter()
        .flat_map(|r| r.blobs().cloned().collect::<Vec<_>>())
        .collect();
    assert_eq!(referenced, want);

    // Removing by an id that two names share is refused; by name it works.
    assert!(matches!(
        store.remove_image(busybox.config.hex()),
        Err(StoreError::Ambiguous { .. })
    ));
    assert_eq!(
        store.remove_image("example.com/mirror/busybox:1").unwrap(),
        alias
    );
    assert_eq!(
        store.remove_image(&busybox.config.hex()[..10]).unwrap(),
        busybox
    );
    assert!(matches!(
        store.remove_image("busybox"),
        Err(StoreError::ImageNotFound { .. })
    ));
    assert_eq!(store.list_images().unwrap(), vec![other]);
}

fn set_age(path: &Path, age: Duration) {
    let f = fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn gc_removes_exactly_the_unreferenced_blobs() {
    let (_dir, store) = store();
    let kept = record(&store, "docker.io/library/busybox:latest", b"busybox");
    store.put_image(&kept).unwrap();
    let removed_record = record(&store, "docker.io/library/alpine:3", b"alpine");
    store.put_image(&removed_record).unwrap();
    store.remove_image("alpine:3").unwrap();
    let loose = Digest::sha256_of(b"loose blob");
    store.write_blob(&loose, b"loose blob").unwrap();

    // Partial downloads: one stale, one fresh.
    let stale = Digest::sha256_of(b"stale");
    let mut i = store.ingest(&stale, None).unwrap();
    i.write_all(b"sta").unwrap();
    drop(i);
    let stale_path = store
        .root()
        .join(format!("content/ingest/sha256-{}.partial", stale.hex()));
    set_age(&stale_path, Duration::from_secs(2 * 3600));
    let fresh = Digest::sha256_of(b"fresh");
    let mut i = store.ingest(&fresh, None).unwrap();
    i.write_all(b"fre").unwrap();
    drop(i);

    // Not while a pull or import holds a lease.
    let lease = store.lease().unwrap();
    assert!(matches!(store.gc(), Err(StoreError::Busy { .. })));
    drop(lease);

    let report = store.gc().unwrap();
    let mut want: Vec<Digest> = removed_record.blobs().cloned().collect();
    want.push(loose.clone());
    want.sort();
    assert_eq!(report.blobs, want);
    let expected_bytes = b"alpinemanifest".len()
        + b"alpineconfig".len()
        + b"alpinelayer".len()
        + b"loose blob".len();
    assert_eq!(report.blob_bytes, expected_bytes as u64);
    assert_eq!(report.ingests, 1);
    assert_eq!(report.ingest_bytes, 3);

    for d in kept.blobs() {
        assert!(store.has_blob(d), "{d} kept");
        store.read_blob(d).unwrap();
    }
    for d in &report.blobs {
        assert!(!store.has_blob(d), "{d} removed");
    }
    assert!(!stale_path.exists());
    assert_eq!(store.ingest(&fresh, None).unwrap().offset(), 3);

    // Nothing left to collect.
    let again = store.gc().unwrap();
    assert!(again.blobs.is_empty());
    assert_eq!(again.bytes(), 0);

    // gc_then: a pull that starts meanwhile (its lease) waits until `then` is done
    let (report, leased) = store
        .gc_then(|s| {
            let s = s.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let lease = s.lease();
                let _ = tx.send(lease.is_ok());
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "a lease was granted while gc_then ran"
            );
            Ok::<_, StoreError>(rx)
        })
        .unwrap();
    assert!(report.blobs.is_empty());
    assert_eq!(leased.recv_timeout(Duration::from_secs(10)), Ok(true));
}

/// Content of the blob the killed writer downloads.
fn killed_writer_data() -> Vec<u8> {
    (0..400_000u32).map(|i| (i % 253) as u8).collect()
}

/// Not a test on its own: the writer process that `killed_writer_resumes` runs and kills.
/// Without `SKIFF_STORE_WRITER_ROOT` it does nothing.
#[test]
fn killed_writer_child() {
    let Some(root) = std::env::var_os("SKIFF_STORE_WRITER_ROOT") else {
        return;
    };
    let root = Path::new(&root);
    let store = Store::open(root).unwrap();
    let data = killed_writer_data();
    let d = Digest::sha256_of(&data);
    let mut ingest = store.ingest(&d, Some(data.len() as u64)).unwrap();
    ingest.write_all(&data[..150_000]).unwrap();
    // Also leave a half-written temporary blob behind.
    fs::write(
        root.join(format!("content/ingest/.tmp-{}-0-0", std::process::id())),
        &data[..1000],
    )
    .unwrap();
    fs::write(root.join("ready"), b"").unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn killed_writer_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SKIFF_STORE_WRITER_ROOT", root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !root.join("ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("writer exited early: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writer never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no destructors run
    child.wait().unwrap();

    let store = Store::open(root).unwrap();
    let data = killed_writer_data();
    let d = Digest::sha256_of(&data);
    assert!(!store.has_blob(&d));
    // The dead writer's temporary file is gone; its partial download is resumable.
    assert_eq!(
        ingest_files(&store),
        [format!("sha256-{}.partial", d.hex())]
    );
    let mut ingest = store.ingest(&d, Some(data.len() as u64)).unwrap();
    assert_eq!(ingest.offset(), 150_000);
    ingest.write_all(&data[150_000..]).unwrap();
    ingest.commit().unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), data);
}

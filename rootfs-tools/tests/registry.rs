//! The registry client against a real `docker-registry` on loopback (and a fake one for
//! misbehaviours). Needs docker-registry, skopeo, umoci, apache2-utils and busybox-static.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{FakeRegistry, Reply, TestRegistry};
use oci_spec::image::ImageManifest;
use skiff_rootfs::digest::Digest;
use skiff_rootfs::reference::Reference;
use skiff_rootfs::registry::{
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Registry, RegistryError, RegistryOptions,
};

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

fn registry() -> Registry {
    common::init_tls();
    Registry::new(RegistryOptions::default())
}

fn registry_for(platform: &str) -> Registry {
    common::init_tls();
    Registry::new(RegistryOptions {
        platform: platform.to_string(),
        ..RegistryOptions::default()
    })
}

/// Fetches a whole blob into memory, returning it and the last progress value.
async fn fetch(
    reg: &Registry,
    r: &Reference,
    digest: &Digest,
    size: u64,
    offset: u64,
) -> Result<(Vec<u8>, Option<u64>), RegistryError> {
    let last = Mutex::new(None);
    let mut out = Vec::new();
    reg.fetch_blob(r, digest, size, offset, &mut out, &|n| {
        let mut l = last.lock().unwrap();
        assert!(l.is_none_or(|prev| n >= prev), "progress went backwards");
        *l = Some(n);
    })
    .await?;
    let last = *last.lock().unwrap();
    Ok((out, last))
}

#[tokio::test]
async fn resolve_by_tag_and_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::busybox_layout(tmp.path());
    let server = TestRegistry::start();
    server.push(&layout.dir, "latest", "test/busybox:latest", &[]);
    server.push(
        &layout.dir,
        "latest",
        "test/docker:v1",
        &["--format", "v2s2"],
    );
    let reg = registry();

    // OCI manifest by tag: exactly the bytes of the layout.
    let by_tag = reg
        .resolve(&reference(&server.reference("test/busybox:latest")))
        .await
        .unwrap();
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert!(by_tag.index.is_none());
    assert_eq!(by_tag.manifest_digest, layout.digest("latest"));
    assert_eq!(by_tag.manifest, layout.blob(&layout.digest("latest")));
    assert_eq!(Digest::sha256_of(&by_tag.manifest), by_tag.manifest_digest);

    // By digest, with and without the tag.
    for r in [
        format!("{}/test/busybox@{}", server.addr(), by_tag.manifest_digest),
        format!(
            "{}/test/busybox:latest@{}",
            server.addr(),
            by_tag.manifest_digest
        ),
    ] {
        let by_digest = reg.resolve(&reference(&r)).await.unwrap();
        assert_eq!(by_digest.manifest_digest, by_tag.manifest_digest, "{r}");
        assert_eq!(by_digest.manifest, by_tag.manifest, "{r}");
    }

    // Docker schema 2, converted by skopeo on push.
    let docker = reg
        .resolve(&reference(&server.reference("test/docker:v1")))
        .await
        .unwrap();
    assert_eq!(docker.media_type, DOCKER_MANIFEST);
    assert_eq!(Digest::sha256_of(&docker.manifest), docker.manifest_digest);
    assert_ne!(docker.manifest_digest, by_tag.manifest_digest);

    // Unknown tag and unknown repository.
    for missing in ["test/busybox:missing", "test/nothing:latest"] {
        let r = server.reference(missing);
        let err = reg.resolve(&reference(&r)).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::ManifestUnknown { .. }),
            "{missing}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("manifest unknown: {r}"));
    }
}

#[tokio::test]
async fn platform_selection_from_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::multi_platform_layout(tmp.path());
    let server = TestRegistry::start();
    server.push(&layout.dir, "multi", "test/multi:1", &["--all"]);
    let r = reference(&server.reference("test/multi:1"));
    let index_digest = layout.digest("multi");

    let mut picked = Vec::new();
    for (platform, tag) in [
        ("linux/amd64", "amd64"),
        ("linux/x86_64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/aarch64", "arm64"),
    ] {
        let resolved = registry_for(platform).resolve(&r).await.unwrap();
        assert_eq!(resolved.manifest_digest, layout.digest(tag), "{platform}");
        assert_eq!(resolved.media_type, OCI_MANIFEST, "{platform}");
        let (d, bytes) = resolved.index.expect("resolved through the index");
        assert_eq!(d, index_digest);
        assert_eq!(bytes, layout.blob(&index_digest));
        assert!(String::from_utf8_lossy(&bytes).contains(OCI_INDEX));
        picked.push(resolved.manifest_digest);
    }
    assert_ne!(
        picked[0], picked[2],
        "amd64 and arm64 must pick different manifests"
    );

    // The index by digest works the same.
    let by_digest = reference(&format!("{}/test/multi@{index_digest}", server.addr()));
    let resolved = registry_for("linux/arm64")
        .resolve(&by_digest)
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, layout.digest("arm64"));

    for platform in [
        "linux/s390x",
        "linux/arm/v7",
        "windows/amd64",
        "linux/arm64/v9",
    ] {
        let err = registry_for(platform).resolve(&r).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::NoMatchingPlatform { .. }),
            "{platform}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "no manifest for platform {} in {r} (available: linux/amd64, linux/arm64/v8)",
                skiff_rootfs::registry::platform_string(
                    &skiff_rootfs::registry::parse_platform(platform).unwrap()
                )
            )
        );
    }

    let err = registry_for("linux").resolve(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::InvalidPlatform(_)), "{err:?}");
}

#[tokio::test]
async fn fetch_blob_whole_and_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::busybox_layout(tmp.path());
    let server = TestRegistry::start();
    server.push(&layout.dir, "latest", "test/busybox:latest", &[]);
    let reg = registry();
    let r = reference(&server.reference("test/busybox:latest"));
    let resolved = reg.resolve(&r).await.unwrap();
    let manifest: ImageManifest = serde_json::from_slice(&resolved.manifest).unwrap();
    let layer = manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap()
        .clone();
    let digest: Digest = layer.digest().to_string().parse().unwrap();
    let size = layer.size();
    assert!(size > 100_000, "the busybox layer should be big: {size}");

    // Whole.
    let (whole, last) = fetch(&reg, &r, &digest, size, 0).await.unwrap();
    assert_eq!(whole.len() as u64, size);
    assert_eq!(Digest::sha256_of(&whole), digest);
    assert_eq!(whole, layout.blob(&digest));
    assert_eq!(last, Some(size));

    // The config too (small blob, no layer).
    let config: Digest = manifest.config().digest().to_string().parse().unwrap();
    let (bytes, _) = fetch(&reg, &r, &config, manifest.config().size(), 0)
        .await
        .unwrap();
    assert_eq!(Digest::sha256_of(&bytes), config);

    // Resumed from offsets: the tail, and the whole hashes right when joined.
    for offset in [1, size / 3, size - 1] {
        let (tail, last) = fetch(&reg, &r, &digest, size, offset).await.unwrap();
        assert_eq!(tail.len() as u64, size - offset, "offset {offset}");
        assert_eq!(last, Some(size), "offset {offset}");
        let mut joined = whole[..offset as usize].to_vec();
        joined.extend_from_slice(&tail);
        assert_eq!(Digest::sha256_of(&joined), digest, "offset {offset}");
    }

    // At the end: nothing to fetch; past it: an error.
    let (empty, last) = fetch(&reg, &r, &digest, size, size).await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(last, Some(size));
    let err = fetch(&reg, &r, &digest, size, size + 1).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::OffsetPastEnd { .. }),
        "{err:?}"
    );

    // A size that lies: too small and too big.
    let err = fetch(&reg, &r, &digest, size - 10, 0).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobSize { .. }), "{err:?}");
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    let err = fetch(&reg, &r, &digest, size + 10, 0).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobSize { .. }), "{err:?}");

    // An unknown blob.
    let unknown = Digest::sha256_of(b"not there");
    let err = fetch(&reg, &r, &unknown, 9, 0).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("blob unknown: {unknown} in {}/test/busybox", server.addr())
    );
}

#[tokio::test]
async fn wrong_digests_are_errors() {
    // A real registry has no manifest under a digest nobody pushed.
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::busybox_layout(tmp.path());
    let server = TestRegistry::start();
    server.push(&layout.dir, "latest", "test/busybox:latest", &[]);
    let reg = registry();
    let wrong = Digest::sha256_of(b"something else");
    let err = reg
        .resolve(&reference(&format!(
            "{}/test/busybox:latest@{wrong}",
            server.addr()
        )))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestUnknown { .. }),
        "{err:?}"
    );

    // A lying registry serving other bytes under that digest, with or without a header.
    let manifest = layout.blob(&layout.digest("latest"));
    let served = manifest.clone();
    let announced = wrong.to_string();
    let fake = FakeRegistry::start(move |req| {
        if req.path.ends_with("/manifests/lying") {
            Reply::ok(served.clone()).header("Docker-Content-Digest", &announced)
        } else {
            Reply::ok(served.clone())
        }
    });
    let err = reg
        .resolve(&reference(&format!("{}/app@{wrong}", fake.addr())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestDigest { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&wrong.to_string()), "{err}");

    // By tag the announced digest must match the bytes too.
    let err = reg
        .resolve(&reference(&format!("{}/app:lying", fake.addr())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestDigest { .. }),
        "{err:?}"
    );

    // By tag without a header the digest is computed.
    let ok = reg
        .resolve(&reference(&format!("{}/app:plain", fake.addr())))
        .await
        .unwrap();
    assert_eq!(ok.manifest_digest, Digest::sha256_of(&manifest));

    // A blob served whole (the caller verifies resumed ones) with other content.
    let err = fetch(
        &reg,
        &reference(&format!("{}/app:x", fake.addr())),
        &wrong,
        manifest.len() as u64,
        0,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::BlobDigest { .. }), "{err:?}");
}

#[tokio::test]
async fn registry_ignoring_range_is_handled() {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&blob);
    let served = blob.clone();
    let fake = FakeRegistry::start(move |req| {
        if req.path.contains("/blobs/") {
            Reply::ok(served.clone())
        } else {
            Reply::status(404)
        }
    });
    let reg = registry();
    let r = reference(&format!("{}/app:latest", fake.addr()));
    for offset in [0, 1, 4096, 99_999] {
        let (tail, last) = fetch(&reg, &r, &digest, blob.len() as u64, offset)
            .await
            .unwrap();
        assert_eq!(tail, blob[offset as usize..], "offset {offset}");
        assert_eq!(last, Some(blob.len() as u64));
    }
    let ranges: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, ["bytes=1-", "bytes=4096-", "bytes=99999-"]);
}

#[tokio::test]
async fn unreachable_registry_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg = registry();
    let r = reference(&format!("127.0.0.1:{port}/app:latest"));
    let start = Instant::now();
    let err = reg.resolve(&r).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!("registry 127.0.0.1:{port} is unreachable: connection refused")
    );
    let d = Digest::sha256_of(b"x");
    let err = fetch(&reg, &r, &d, 1, 0).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::busybox_layout(tmp.path());
    let server = TestRegistry::start_with_auth("skiff", "s3cret");
    server.push(&layout.dir, "latest", "team/app:v1", &[]);
    let r = reference(&server.reference("team/app:v1"));
    common::init_tls();
    let with = |user: Option<&str>, pass: Option<&str>, file: Option<std::path::PathBuf>| {
        Registry::new(RegistryOptions {
            username: user.map(str::to_string),
            password: pass.map(str::to_string),
            // An empty file by default so the test machine's own credentials stay out.
            auth_file: Some(file.unwrap_or_else(|| {
                let f = tmp.path().join("empty.json");
                std::fs::write(&f, "{}").unwrap();
                f
            })),
            ..RegistryOptions::default()
        })
    };

    // Right credentials, from the options.
    let ok = with(Some("skiff"), Some("s3cret"), None)
        .resolve(&r)
        .await
        .unwrap();
    assert_eq!(ok.manifest_digest, layout.digest("latest"));
    let manifest: ImageManifest = serde_json::from_slice(&ok.manifest).unwrap();
    let config = manifest.config();
    let d: Digest = config.digest().to_string().parse().unwrap();
    let (bytes, _) = fetch(
        &with(Some("skiff"), Some("s3cret"), None),
        &r,
        &d,
        config.size(),
        0,
    )
    .await
    .unwrap();
    assert_eq!(Digest::sha256_of(&bytes), d);

    // Right credentials, from a Docker config.json (auth is base64 of "skiff:s3cret").
    let file = tmp.path().join("config.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "c2tpZmY6czNjcmV0"}}}}}}"#,
            server.addr()
        ),
    )
    .unwrap();
    let ok = with(None, None, Some(file.clone()))
        .resolve(&r)
        .await
        .unwrap();
    assert_eq!(ok.manifest_digest, layout.digest("latest"));
    // Explicit credentials win over the file.
    let err = with(Some("skiff"), Some("wrong"), Some(file))
        .resolve(&r)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    // No credentials, wrong ones.
    let err = with(None, None, None).resolve(&r).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "unauthorized: registry {} requires credentials for team/app (401)",
            server.addr()
        )
    );
    let err = with(Some("skiff"), Some("nope"), None)
        .resolve(&r)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unauthorized: registry {} refused the credentials for team/app (401)",
            server.addr()
        )
    );
    let err = fetch(&with(None, None, None), &r, &d, config.size(), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
}

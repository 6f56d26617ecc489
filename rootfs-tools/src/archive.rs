//! Import and export of images: OCI image layouts (a directory or a tar of one, possibly
//! gzip or zstd compressed) and `docker save` archives.
//!
//! Import copies every blob an image needs into the [`Store`], verified against its digest,
//! then records the image. Nothing is recorded unless every image in the archive checks out;
//! blobs written before a failure stay unreferenced until [`Store::gc`].
//!
//! Names: a `name` given by the caller names the image when the archive holds one image.
//! Otherwise names come from the archive: `io.containerd.image.name` and
//! `org.opencontainers.image.ref.name` annotations holding a full reference, or `RepoTags`;
//! a bare tag (`ref.name` = `latest`) is applied to the caller's `name` repository and is an
//! error without one.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, OciLayout, OciLayoutBuilder, Os, Platform, PlatformBuilder,
};
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, DigestError, Hasher};
use crate::reference::{DEFAULT_REGISTRY, Reference, ReferenceError};
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

/// The platform chosen from multi-platform indexes unless told otherwise.
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// Annotation naming an image in an OCI layout: a tag or a full reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the full image name (containerd, docker ≥ 25).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Largest manifest, index or config read into memory.
const METADATA_LIMIT: u64 = 16 << 20;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Errors of import and export.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file of the archive or destination could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The path is neither an OCI layout nor a `docker save` archive.
    #[error(
        "{path} is not an OCI image layout or docker save archive (no index.json or manifest.json)"
    )]
    UnknownFormat {
        /// The archive.
        path: PathBuf,
    },
    /// A tar member or path inside the archive would leave it (`..`, absolute path).
    #[error("archive {archive} has an unsafe member path {member:?}")]
    UnsafePath {
        /// The archive.
        archive: PathBuf,
        /// The offending name.
        member: String,
    },
    /// A file under `blobs/` whose name is not a supported digest.
    #[error("archive {archive} has a blob with an invalid name {member:?}")]
    BadBlobName {
        /// The archive.
        archive: PathBuf,
        /// The offending name.
        member: String,
    },
    /// A file the archive needs is absent.
    #[error("archive {archive} lacks {member}")]
    MissingFile {
        /// The archive.
        archive: PathBuf,
        /// The absent file.
        member: String,
    },
    /// A blob the archive refers to is absent.
    #[error("archive {archive} lacks blob {digest}")]
    MissingBlob {
        /// The archive.
        archive: PathBuf,
        /// The absent blob.
        digest: Digest,
    },
    /// A blob could not be stored: most often its content does not match its digest.
    #[error("blob {digest} from {archive} was rejected")]
    Blob {
        /// The archive.
        archive: PathBuf,
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// A descriptor's size differs from its blob's.
    #[error("blob {digest} in {archive} has {actual} bytes but its descriptor says {expected}")]
    BlobSize {
        /// The archive.
        archive: PathBuf,
        /// The blob.
        digest: Digest,
        /// Descriptor size.
        expected: u64,
        /// Blob size.
        actual: u64,
    },
    /// A metadata file is larger than anything legitimate.
    #[error("{member} in {archive} is too large ({size} bytes)")]
    TooLarge {
        /// The archive.
        archive: PathBuf,
        /// The file.
        member: String,
        /// Its size.
        size: u64,
    },
    /// A JSON document of the archive is malformed.
    #[error("invalid {member} in {archive}")]
    Json {
        /// The archive.
        archive: PathBuf,
        /// The document.
        member: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A digest in a document is not `sha256:`/`sha512:` lower-case hex.
    #[error("unsupported digest {value:?} in {archive}")]
    BadDigest {
        /// The archive.
        archive: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: DigestError,
    },
    /// The `oci-layout` file names a version we do not read.
    #[error("{archive} has unsupported image layout version {version:?}")]
    LayoutVersion {
        /// The archive.
        archive: PathBuf,
        /// The version found.
        version: String,
    },
    /// An index has no manifest for the platform.
    #[error("{index} in {archive} has no manifest for {platform} (it has: {})", available.join(", "))]
    NoPlatform {
        /// The archive.
        archive: PathBuf,
        /// The index: `index.json` or a nested index's digest.
        index: String,
        /// What was asked for.
        platform: String,
        /// What there is.
        available: Vec<String>,
    },
    /// A platform string is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
    /// A manifest's layer count differs from its config's `rootfs.diff_ids`.
    #[error(
        "manifest {manifest} has {layers} layers but its config {config} lists {diff_ids} diff_ids"
    )]
    LayerCount {
        /// The manifest (or, for docker archives, the config).
        manifest: Digest,
        /// The config.
        config: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Entries in `rootfs.diff_ids`.
        diff_ids: usize,
    },
    /// A layer's uncompressed content does not match the config's diff_id.
    #[error("layer {layer} of {archive} does not match diff_id {diff_id} (it is {actual})")]
    DiffId {
        /// The archive.
        archive: PathBuf,
        /// The layer (path or digest).
        layer: String,
        /// From the config.
        diff_id: Digest,
        /// What it hashes to.
        actual: Digest,
    },
    /// An archive holds nothing importable.
    #[error("archive {archive} holds no image")]
    NoImages {
        /// The archive.
        archive: PathBuf,
    },
    /// An image has no name in the archive and none was given.
    #[error("image {manifest} in {archive} has no name; give one")]
    NoName {
        /// The archive.
        archive: PathBuf,
        /// Its manifest.
        manifest: Digest,
    },
    /// An image is named only by a tag and no repository was given.
    #[error("image {manifest} in {archive} is named only by tag {tag:?}; give a name")]
    TagOnly {
        /// The archive.
        archive: PathBuf,
        /// Its manifest.
        manifest: Digest,
        /// The bare tag.
        tag: String,
    },
    /// One name given for an archive of several unnamed images.
    #[error("archive {archive} holds {count} images; a single name cannot name them all")]
    NameForMany {
        /// The archive.
        archive: PathBuf,
        /// Images in it.
        count: usize,
    },
    /// Two images of an archive carry the same name.
    #[error("archive {archive} gives the name {name} to two images ({first} and {second})")]
    DuplicateName {
        /// The archive.
        archive: PathBuf,
        /// The name.
        name: String,
        /// One manifest.
        first: Digest,
        /// The other.
        second: Digest,
    },
    /// An image name in the archive is not a valid reference.
    #[error("invalid image name in {archive}")]
    BadName {
        /// The archive.
        archive: PathBuf,
        /// The cause.
        #[source]
        source: ReferenceError,
    },
    /// Building an OCI document failed.
    #[error("cannot build {what}")]
    Oci {
        /// The document.
        what: &'static str,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// `export` was given a name the store does not know.
    #[error("no image named {0:?} in the store")]
    ImageNotFound(String),
    /// `export` was given no names.
    #[error("no images to export")]
    NothingToExport,
    /// The export destination exists (and, for a directory, is not empty).
    #[error("export destination {0} already exists")]
    DestinationExists(PathBuf),
    /// A stored blob failed verification while being exported.
    #[error("stored blob {digest} is corrupt or unreadable")]
    CorruptBlob {
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A store operation failed.
    #[error("content store")]
    Store(#[from] StoreError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + use<> {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

fn blob_err(archive: &Path, d: &Digest) -> impl FnOnce(StoreError) -> ArchiveError + use<> {
    let archive = archive.to_path_buf();
    let digest = d.clone();
    move |source| ArchiveError::Blob {
        archive,
        digest,
        source: Box::new(source),
    }
}

/// What [`export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout directory.
    OciDir,
    /// An OCI image layout as a tar file (`oci-archive:` to skopeo).
    OciTar,
    /// A `docker save` tar (`docker load`, `docker-archive:` to skopeo).
    DockerTar,
}

/// A platform to select from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlatformSpec {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl PlatformSpec {
    fn parse(s: &str) -> Result<PlatformSpec, ArchiveError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformSpec {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(PlatformSpec {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(ArchiveError::BadPlatform(s.to_string())),
        }
    }

    /// How well `p` matches: `None` not at all, `Some(true)` exactly.
    fn matches(&self, p: &Platform) -> Option<bool> {
        if p.os().to_string() != self.os || p.architecture().to_string() != self.arch {
            return None;
        }
        match (&self.variant, p.variant()) {
            (Some(want), Some(have)) => (want == have).then_some(true),
            (Some(_), None) => Some(false),
            (None, have) => Some(have.is_none()),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&platform_string(
            &self.os,
            &self.arch,
            self.variant.as_deref(),
        ))
    }
}

fn platform_string(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

fn describe_platform(p: &Platform) -> String {
    platform_string(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref(),
    )
}

// ---------------------------------------------------------------------------------------------
// Archive member paths

/// Normalises an archive-relative path: strips `./` and empty components; refuses `..` and
/// absolute paths.
fn clean_member(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Resolves a symlink target relative to the link's directory, staying inside the archive.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// `blobs/<alg>/<hex>` → the digest; `Err` for a malformed name under `blobs/`; `Ok(None)`
/// for paths outside `blobs/`.
fn blob_member(member: &str) -> Result<Option<Digest>, ()> {
    let Some(rest) = member.strip_prefix("blobs/") else {
        return Ok(None);
    };
    let (alg, hex) = rest.split_once('/').ok_or(())?;
    format!("{alg}:{hex}").parse().map(Some).map_err(|_| ())
}

fn blob_member_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// Small documents kept in memory while streaming a tar: everything else is stored as a blob.
fn is_metadata(member: &str) -> bool {
    let base = member.rsplit('/').next().unwrap_or(member);
    matches!(base, "oci-layout" | "repositories" | "json" | "VERSION") || base.ends_with(".json")
}

/// The digest a docker archive file name carries, if any (`<hex>.json`, `blobs/sha256/<hex>`).
fn digest_in_name(member: &str) -> Option<Digest> {
    if let Ok(Some(d)) = blob_member(member) {
        return Some(d);
    }
    let base = member.rsplit('/').next()?;
    let stem = base.strip_suffix(".json").unwrap_or(base);
    format!("sha256:{stem}").parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Sources: a directory, or a tar streamed once into the store

enum TarFile {
    Metadata(Vec<u8>),
    Blob(Digest, u64),
}

enum Source {
    Dir {
        root: PathBuf,
    },
    Tar {
        files: HashMap<String, TarFile>,
        links: HashMap<String, String>,
    },
}

/// Wraps a reader in a decompressor if it starts with a gzip or zstd magic number.
fn decompressing<'a>(mut r: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Compression of a stored blob, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff_blob(store: &Store, d: &Digest) -> Result<Compression, StoreError> {
    let mut head = [0u8; 4];
    let mut r = store.open_blob(d)?;
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StoreError::ReadBlob {
                    digest: d.clone(),
                    path: store.blob_path(d),
                    source,
                });
            }
        }
    }
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// The uncompressed content of a stored layer, verified against the blob digest at its end.
fn uncompressed_layer(
    store: &Store,
    d: &Digest,
) -> Result<(Compression, Box<dyn Read>), StoreError> {
    let compression = sniff_blob(store, d)?;
    let reader = BufReader::new(store.open_blob(d)?);
    let boxed: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(
            |source| StoreError::ReadBlob {
                digest: d.clone(),
                path: store.blob_path(d),
                source,
            },
        )?),
    };
    Ok((compression, boxed))
}

impl Source {
    /// Streams a tar once: blobs go straight into the store (verified), small documents are
    /// kept in memory, links are remembered.
    fn read_tar(store: &Store, archive: &Path) -> Result<Source, ArchiveError> {
        let file = File::open(archive).map_err(io_err("open", archive))?;
        let reader = decompressing(BufReader::new(file)).map_err(io_err("read", archive))?;
        let mut tar = tar::Archive::new(reader);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let unsafe_path = |member: &str| ArchiveError::UnsafePath {
            archive: archive.to_path_buf(),
            member: member.to_string(),
        };
        for entry in tar.entries().map_err(io_err("read", archive))? {
            let mut entry = entry.map_err(io_err("read", archive))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let member = clean_member(&raw).ok_or_else(|| unsafe_path(&raw))?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if member.is_empty() {
                return Err(unsafe_path(&raw));
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let resolved = if kind.is_symlink() {
                    resolve_link(&member, &target)
                } else {
                    clean_member(&target)
                };
                let resolved =
                    resolved.ok_or_else(|| unsafe_path(&format!("{raw} -> {target}")))?;
                links.insert(member, resolved);
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                tracing::debug!(member = %member, "ignoring tar entry of type {kind:?}");
                continue;
            }
            let size = entry.size();
            let stored = match blob_member(&member) {
                Err(()) => {
                    return Err(ArchiveError::BadBlobName {
                        archive: archive.to_path_buf(),
                        member,
                    });
                }
                Ok(Some(d)) => {
                    store
                        .write_blob_from(&d, Some(size), &mut entry)
                        .map_err(blob_err(archive, &d))?;
                    TarFile::Blob(d, size)
                }
                Ok(None) if is_metadata(&member) => {
                    if size > METADATA_LIMIT {
                        return Err(ArchiveError::TooLarge {
                            archive: archive.to_path_buf(),
                            member,
                            size,
                        });
                    }
                    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                    entry
                        .read_to_end(&mut data)
                        .map_err(io_err("read", archive))?;
                    TarFile::Metadata(data)
                }
                Ok(None) => {
                    let (d, n) = store.add_blob(Algorithm::Sha256, &mut entry)?;
                    TarFile::Blob(d, n)
                }
            };
            links.remove(&member);
            files.insert(member, stored);
        }
        Ok(Source::Tar { files, links })
    }

    fn has(&self, member: &str) -> bool {
        match self {
            Source::Dir { root } => root.join(member).exists(),
            Source::Tar { files, links } => {
                follow(links, member).is_some_and(|m| files.contains_key(&m))
            }
        }
    }

    /// A path inside a directory source, refusing anything that leaves it (also by symlink).
    fn dir_path(root: &Path, archive: &Path, member: &str) -> Result<PathBuf, ArchiveError> {
        let unsafe_path = || ArchiveError::UnsafePath {
            archive: archive.to_path_buf(),
            member: member.to_string(),
        };
        let clean = clean_member(member).ok_or_else(unsafe_path)?;
        let path = root.join(&clean);
        match path.canonicalize() {
            Ok(real) if real.starts_with(root) => Ok(real),
            Ok(_) => Err(unsafe_path()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ArchiveError::MissingFile {
                archive: archive.to_path_buf(),
                member: clean,
            }),
            Err(source) => Err(ArchiveError::Io {
                action: "open",
                path,
                source,
            }),
        }
    }

    /// Reads a small document.
    fn read(&self, store: &Store, archive: &Path, member: &str) -> Result<Vec<u8>, ArchiveError> {
        check_member(archive, member)?;
        let missing = || ArchiveError::MissingFile {
            archive: archive.to_path_buf(),
            member: member.to_string(),
        };
        let too_large = |size| ArchiveError::TooLarge {
            archive: archive.to_path_buf(),
            member: member.to_string(),
            size,
        };
        match self {
            Source::Dir { root } => {
                let path = Source::dir_path(root, archive, member)?;
                let file = File::open(&path).map_err(io_err("open", &path))?;
                let size = file.metadata().map_err(io_err("stat", &path))?.len();
                if size > METADATA_LIMIT {
                    return Err(too_large(size));
                }
                let mut data = Vec::new();
                file.take(METADATA_LIMIT)
                    .read_to_end(&mut data)
                    .map_err(io_err("read", &path))?;
                Ok(data)
            }
            Source::Tar { files, links } => {
                let m = follow(links, member).ok_or_else(missing)?;
                match files.get(&m).ok_or_else(missing)? {
                    TarFile::Metadata(data) => Ok(data.clone()),
                    TarFile::Blob(d, size) => {
                        if *size > METADATA_LIMIT {
                            return Err(too_large(*size));
                        }
                        Ok(store.read_blob(d)?)
                    }
                }
            }
        }
    }

    /// Makes sure blob `d` of `size` bytes is in the store, copied from the archive if needed.
    fn blob(
        &self,
        store: &Store,
        archive: &Path,
        d: &Digest,
        size: u64,
    ) -> Result<(), ArchiveError> {
        if !store.has_blob(d) {
            match self {
                Source::Dir { root } => {
                    let path = match Source::dir_path(root, archive, &blob_member_path(d)) {
                        Err(ArchiveError::MissingFile { .. }) => {
                            return Err(ArchiveError::MissingBlob {
                                archive: archive.to_path_buf(),
                                digest: d.clone(),
                            });
                        }
                        other => other?,
                    };
                    let file = File::open(&path).map_err(io_err("open", &path))?;
                    store
                        .write_blob_from(d, Some(size), BufReader::new(file))
                        .map_err(blob_err(archive, d))?;
                }
                // Every blob of a tar was stored while streaming it.
                Source::Tar { .. } => {
                    return Err(ArchiveError::MissingBlob {
                        archive: archive.to_path_buf(),
                        digest: d.clone(),
                    });
                }
            }
        }
        let actual = store.blob_size(d)?;
        if actual != size {
            return Err(ArchiveError::BlobSize {
                archive: archive.to_path_buf(),
                digest: d.clone(),
                expected: size,
                actual,
            });
        }
        Ok(())
    }

    /// Stores the file at `member` (a docker archive layer) and returns its digest and size.
    fn file_blob(
        &self,
        store: &Store,
        archive: &Path,
        member: &str,
    ) -> Result<(Digest, u64), ArchiveError> {
        check_member(archive, member)?;
        match self {
            Source::Dir { root } => {
                let path = Source::dir_path(root, archive, member)?;
                let file = BufReader::new(File::open(&path).map_err(io_err("open", &path))?);
                match blob_member(&clean_member(member).unwrap_or_default()) {
                    Ok(Some(d)) => {
                        let size = store
                            .write_blob_from(&d, None, file)
                            .map_err(blob_err(archive, &d))?;
                        Ok((d, size))
                    }
                    _ => Ok(store.add_blob(Algorithm::Sha256, file)?),
                }
            }
            Source::Tar { files, links } => {
                let missing = || ArchiveError::MissingFile {
                    archive: archive.to_path_buf(),
                    member: member.to_string(),
                };
                let m = follow(links, member).ok_or_else(missing)?;
                match files.get(&m).ok_or_else(missing)? {
                    TarFile::Blob(d, size) => Ok((d.clone(), *size)),
                    TarFile::Metadata(data) => {
                        Ok(store.add_blob(Algorithm::Sha256, data.as_slice())?)
                    }
                }
            }
        }
    }
}

/// Refuses a path from an archive's own documents that would leave the archive.
fn check_member(archive: &Path, member: &str) -> Result<(), ArchiveError> {
    match clean_member(member) {
        Some(m) if !m.is_empty() => Ok(()),
        _ => Err(ArchiveError::UnsafePath {
            archive: archive.to_path_buf(),
            member: member.to_string(),
        }),
    }
}

/// Follows tar links (at most a few hops) from a cleaned member name.
fn follow(links: &HashMap<String, String>, member: &str) -> Option<String> {
    let mut m = clean_member(member)?;
    for _ in 0..16 {
        match links.get(&m) {
            Some(next) => m = next.clone(),
            None => return Some(m),
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Import

/// An image of an archive, loaded and verified, before it is named and recorded.
struct Loaded {
    manifest: Digest,
    index: Option<Digest>,
    config: Digest,
    layers: Vec<LayerRecord>,
    platform: String,
    size: u64,
    /// Full references the archive gives it.
    names: Vec<String>,
    /// A bare tag the archive gives it.
    tag: Option<String>,
}

struct Importer<'a> {
    store: &'a Store,
    archive: &'a Path,
    source: Source,
    platform: PlatformSpec,
}

/// Imports every image of an OCI layout (directory or tar) or `docker save` archive, choosing
/// [`DEFAULT_PLATFORM`] from multi-platform indexes. See [`import_platform`].
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&Reference>,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    import_platform(store, path, name, DEFAULT_PLATFORM)
}

/// Imports every image of an OCI layout (directory or tar, optionally gzip/zstd compressed)
/// or `docker save` archive at `path`, choosing `platform` (`os/arch[/variant]`) from
/// multi-platform indexes. Every blob is verified; images are recorded only if all of them
/// check out. `name` names the image of a single-image archive, or supplies the repository
/// for images the archive names by a bare tag.
pub fn import_platform(
    store: &Store,
    path: &Path,
    name: Option<&Reference>,
    platform: &str,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let platform = PlatformSpec::parse(platform)?;
    let _lease = store.lease()?;
    let meta = fs::metadata(path).map_err(io_err("open", path))?;
    let source = if meta.is_dir() {
        Source::Dir {
            root: path.canonicalize().map_err(io_err("open", path))?,
        }
    } else {
        Source::read_tar(store, path)?
    };
    let importer = Importer {
        store,
        archive: path,
        source,
        platform,
    };
    let loaded = if importer.source.has("index.json") {
        importer.load_oci()?
    } else if importer.source.has("manifest.json") {
        importer.load_docker()?
    } else {
        return Err(ArchiveError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    if loaded.is_empty() {
        return Err(ArchiveError::NoImages {
            archive: path.to_path_buf(),
        });
    }
    let named = assign_names(path, &loaded, name)?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let records: Vec<ImageRecord> = named
        .into_iter()
        .map(|(name, i)| {
            let l = &loaded[i];
            ImageRecord {
                name,
                manifest: l.manifest.clone(),
                index: l.index.clone(),
                config: l.config.clone(),
                layers: l.layers.clone(),
                platform: l.platform.clone(),
                created: created.clone(),
                size: l.size,
            }
        })
        .collect();
    for rec in &records {
        store.put_image(rec)?;
        tracing::info!(image = %rec.name, manifest = %rec.manifest, archive = %path.display(), "image imported");
    }
    Ok(records)
}

/// Decides the record names: `(name, index into loaded)`.
fn assign_names(
    archive: &Path,
    loaded: &[Loaded],
    name: Option<&Reference>,
) -> Result<Vec<(String, usize)>, ArchiveError> {
    if let (Some(n), [_]) = (name, loaded) {
        return Ok(vec![(n.to_string(), 0)]);
    }
    let mut out: Vec<(String, usize)> = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let mut names = l.names.clone();
        if names.is_empty() {
            match (&l.tag, name) {
                (Some(tag), Some(n)) => names.push(format!("{}:{tag}", n.name())),
                (Some(tag), None) => {
                    return Err(ArchiveError::TagOnly {
                        archive: archive.to_path_buf(),
                        manifest: l.manifest.clone(),
                        tag: tag.clone(),
                    });
                }
                (None, Some(_)) => {
                    return Err(ArchiveError::NameForMany {
                        archive: archive.to_path_buf(),
                        count: loaded.len(),
                    });
                }
                (None, None) => {
                    return Err(ArchiveError::NoName {
                        archive: archive.to_path_buf(),
                        manifest: l.manifest.clone(),
                    });
                }
            }
        }
        for n in names {
            match out.iter().find(|(m, _)| *m == n) {
                Some((_, j)) if *j == i => {}
                Some((_, j)) => {
                    return Err(ArchiveError::DuplicateName {
                        archive: archive.to_path_buf(),
                        name: n,
                        first: loaded[*j].manifest.clone(),
                        second: l.manifest.clone(),
                    });
                }
                None => out.push((n, i)),
            }
        }
    }
    Ok(out)
}

impl Importer<'_> {
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        data: &[u8],
        member: &str,
    ) -> Result<T, ArchiveError> {
        serde_json::from_slice(data).map_err(|source| ArchiveError::Json {
            archive: self.archive.to_path_buf(),
            member: member.to_string(),
            source,
        })
    }

    fn digest(&self, value: &str) -> Result<Digest, ArchiveError> {
        value.parse().map_err(|source| ArchiveError::BadDigest {
            archive: self.archive.to_path_buf(),
            value: value.to_string(),
            source,
        })
    }

    /// Copies the blob of a descriptor into the store and parses it.
    fn blob_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
    ) -> Result<(Digest, T), ArchiveError> {
        let d = self.digest(desc.digest().as_ref())?;
        if desc.size() > METADATA_LIMIT {
            return Err(ArchiveError::TooLarge {
                archive: self.archive.to_path_buf(),
                member: blob_member_path(&d),
                size: desc.size(),
            });
        }
        self.source
            .blob(self.store, self.archive, &d, desc.size())?;
        let data = self.store.read_blob(&d)?;
        let value = self.json(&data, &blob_member_path(&d))?;
        Ok((d, value))
    }

    fn load_oci(&self) -> Result<Vec<Loaded>, ArchiveError> {
        let layout: OciLayout = self.json(
            &self.source.read(self.store, self.archive, "oci-layout")?,
            "oci-layout",
        )?;
        if !layout.image_layout_version().starts_with("1.") {
            return Err(ArchiveError::LayoutVersion {
                archive: self.archive.to_path_buf(),
                version: layout.image_layout_version().clone(),
            });
        }
        let index: ImageIndex = self.json(
            &self.source.read(self.store, self.archive, "index.json")?,
            "index.json",
        )?;
        let mut loaded: Vec<Loaded> = Vec::new();
        let mut other_platforms = Vec::new();
        for desc in index.manifests() {
            if !(Self::is_index(desc.media_type()) || Self::is_manifest(desc.media_type())) {
                tracing::debug!(digest = %desc.digest(), media_type = %desc.media_type(), "skipping an entry that is not an image");
                continue;
            }
            if let Some(p) = desc.platform() {
                if self.platform.matches(p).is_none() {
                    tracing::debug!(digest = %desc.digest(), platform = %describe_platform(p), "skipping manifest of another platform");
                    other_platforms.push(describe_platform(p));
                    continue;
                }
            }
            let (names, tag) = self.annotated_names(desc)?;
            let Some(mut image) = self.load_descriptor(desc)? else {
                continue;
            };
            match loaded.iter_mut().find(|l| l.manifest == image.manifest) {
                Some(same) => {
                    same.names.extend(names);
                    same.tag = same.tag.take().or(tag);
                }
                None => {
                    image.names = names;
                    image.tag = tag;
                    loaded.push(image);
                }
            }
        }
        if loaded.is_empty() && !other_platforms.is_empty() {
            return Err(ArchiveError::NoPlatform {
                archive: self.archive.to_path_buf(),
                index: "index.json".to_string(),
                platform: self.platform.to_string(),
                available: other_platforms,
            });
        }
        Ok(loaded)
    }

    /// Names from annotations: full references, and a bare tag if that is all there is.
    fn annotated_names(
        &self,
        desc: &Descriptor,
    ) -> Result<(Vec<String>, Option<String>), ArchiveError> {
        let Some(ann) = desc.annotations() else {
            return Ok((Vec::new(), None));
        };
        let parse = |s: &str| {
            s.parse::<Reference>()
                .map(|r| r.to_string())
                .map_err(|source| ArchiveError::BadName {
                    archive: self.archive.to_path_buf(),
                    source,
                })
        };
        let mut names = Vec::new();
        let mut tag = None;
        if let Some(full) = ann.get(ANNOTATION_IMAGE_NAME) {
            names.push(parse(full)?);
        }
        if let Some(r) = ann.get(ANNOTATION_REF_NAME) {
            if r.contains(['/', ':', '@']) {
                let full = parse(r)?;
                if !names.contains(&full) {
                    names.push(full);
                }
            } else if names.is_empty() {
                tag = Some(r.clone());
            }
        }
        Ok((names, tag))
    }

    fn is_index(media_type: &MediaType) -> bool {
        matches!(media_type, MediaType::ImageIndex) || media_type.as_ref() == DOCKER_MANIFEST_LIST
    }

    fn is_manifest(media_type: &MediaType) -> bool {
        matches!(media_type, MediaType::ImageManifest) || media_type.as_ref() == DOCKER_MANIFEST
    }

    /// Loads the image a top-level descriptor points to, choosing from an index.
    fn load_descriptor(&self, desc: &Descriptor) -> Result<Option<Loaded>, ArchiveError> {
        if !Self::is_index(desc.media_type()) {
            return self.load_manifest(desc, None);
        }
        let (index_digest, index): (Digest, ImageIndex) = self.blob_json(desc)?;
        let mut best: Option<(&Descriptor, bool)> = None;
        for m in index.manifests() {
            if Self::is_index(m.media_type()) {
                continue;
            }
            let Some(exact) = m.platform().as_ref().and_then(|p| self.platform.matches(p)) else {
                continue;
            };
            if best.is_none_or(|(_, e)| exact && !e) {
                best = Some((m, exact));
            }
        }
        let Some((chosen, _)) = best else {
            return Err(ArchiveError::NoPlatform {
                archive: self.archive.to_path_buf(),
                index: index_digest.to_string(),
                platform: self.platform.to_string(),
                available: index
                    .manifests()
                    .iter()
                    .filter_map(|m| m.platform().as_ref().map(describe_platform))
                    .collect(),
            });
        };
        self.load_manifest(chosen, Some(index_digest))
    }

    /// Loads and verifies a manifest, its config and layers. `None` for manifests that are
    /// not container images (signatures, attestations, other artifacts).
    fn load_manifest(
        &self,
        desc: &Descriptor,
        index: Option<Digest>,
    ) -> Result<Option<Loaded>, ArchiveError> {
        let (manifest_digest, manifest): (Digest, ImageManifest) = self.blob_json(desc)?;
        let config_type = manifest.config().media_type();
        if !(matches!(config_type, MediaType::ImageConfig) || config_type.as_ref() == DOCKER_CONFIG)
        {
            tracing::debug!(manifest = %manifest_digest, config_type = %config_type, "skipping a manifest that is not a container image");
            return Ok(None);
        }
        let (config_digest, config): (Digest, ImageConfiguration) =
            self.blob_json(manifest.config())?;
        let diff_ids = self.diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ArchiveError::LayerCount {
                manifest: manifest_digest,
                config: config_digest,
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        let mut size = manifest.config().size();
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let d = self.digest(layer.digest().as_ref())?;
            self.source
                .blob(self.store, self.archive, &d, layer.size())?;
            size += layer.size();
            layers.push(LayerRecord {
                digest: d,
                media_type: layer.media_type().to_string(),
                size: layer.size(),
                diff_id,
            });
        }
        Ok(Some(Loaded {
            manifest: manifest_digest,
            index,
            config: config_digest,
            layers,
            platform: config_platform(&config),
            size,
            names: Vec::new(),
            tag: None,
        }))
    }

    fn diff_ids(&self, config: &ImageConfiguration) -> Result<Vec<Digest>, ArchiveError> {
        config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| self.digest(d))
            .collect()
    }

    fn load_docker(&self) -> Result<Vec<Loaded>, ArchiveError> {
        let entries: Vec<DockerManifest> = self.json(
            &self
                .source
                .read(self.store, self.archive, "manifest.json")?,
            "manifest.json",
        )?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_bytes = self.source.read(self.store, self.archive, &entry.config)?;
            let config_digest = Digest::sha256_of(&config_bytes);
            if let Some(named) = digest_in_name(&entry.config) {
                if named != config_digest {
                    return Err(ArchiveError::Blob {
                        archive: self.archive.to_path_buf(),
                        digest: named.clone(),
                        source: Box::new(StoreError::Verify {
                            digest: named.clone(),
                            source: DigestError::Mismatch {
                                expected: named,
                                actual: config_digest,
                            },
                        }),
                    });
                }
            }
            let config: ImageConfiguration = self.json(&config_bytes, &entry.config)?;
            self.store.write_blob(&config_digest, &config_bytes)?;
            let diff_ids = self.diff_ids(&config)?;
            if diff_ids.len() != entry.layers.len() {
                return Err(ArchiveError::LayerCount {
                    manifest: config_digest.clone(),
                    config: config_digest,
                    layers: entry.layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let mut layers = Vec::new();
            let mut descriptors = Vec::new();
            let mut size = config_bytes.len() as u64;
            for (member, diff_id) in entry.layers.iter().zip(diff_ids) {
                let (d, n) = self.source.file_blob(self.store, self.archive, member)?;
                let compression = self.check_diff_id(member, &d, &diff_id)?;
                let media_type = match compression {
                    Compression::None => MediaType::ImageLayer,
                    Compression::Gzip => MediaType::ImageLayerGzip,
                    Compression::Zstd => MediaType::ImageLayerZstd,
                };
                descriptors.push(Descriptor::new(media_type.clone(), n, oci_digest(&d)?));
                layers.push(LayerRecord {
                    digest: d,
                    media_type: media_type.to_string(),
                    size: n,
                    diff_id,
                });
                size += n;
            }
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(Descriptor::new(
                    MediaType::ImageConfig,
                    config_bytes.len() as u64,
                    oci_digest(&config_digest)?,
                ))
                .layers(descriptors)
                .build()
                .map_err(|source| ArchiveError::Oci {
                    what: "image manifest",
                    source,
                })?;
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|source| ArchiveError::Oci {
                    what: "image manifest",
                    source: source.into(),
                })?;
            let manifest_digest = Digest::sha256_of(&manifest_bytes);
            self.store.write_blob(&manifest_digest, &manifest_bytes)?;
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    t.parse::<Reference>()
                        .map(|r| r.to_string())
                        .map_err(|source| ArchiveError::BadName {
                            archive: self.archive.to_path_buf(),
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            loaded.push(Loaded {
                manifest: manifest_digest,
                index: None,
                config: config_digest,
                layers,
                platform: config_platform(&config),
                size,
                names,
                tag: None,
            });
        }
        Ok(loaded)
    }

    /// Checks a docker archive layer against its diff_id (decompressing it if needed).
    fn check_diff_id(
        &self,
        member: &str,
        d: &Digest,
        diff_id: &Digest,
    ) -> Result<Compression, ArchiveError> {
        let (compression, mut reader) = uncompressed_layer(self.store, d)?;
        let actual = if compression == Compression::None {
            d.clone()
        } else {
            let mut hasher = Hasher::new(diff_id.algorithm());
            io::copy(&mut reader, &mut hasher).map_err(|source| ArchiveError::CorruptBlob {
                digest: d.clone(),
                source,
            })?;
            hasher.finish()
        };
        if &actual != diff_id {
            return Err(ArchiveError::DiffId {
                archive: self.archive.to_path_buf(),
                layer: member.to_string(),
                diff_id: diff_id.clone(),
                actual,
            });
        }
        Ok(compression)
    }
}

fn config_platform(config: &ImageConfiguration) -> String {
    platform_string(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    )
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, ArchiveError> {
    oci_spec::image::Digest::try_from(d.to_string()).map_err(|source| ArchiveError::Oci {
        what: "digest",
        source,
    })
}

/// One entry of a `docker save` `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Export

/// Where exported files go: a directory or a tar stream.
trait Sink {
    fn dir(&mut self, member: &str) -> io::Result<()>;
    fn file(&mut self, member: &str, size: u64, data: &mut dyn Read) -> io::Result<()>;
}

struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn dir(&mut self, member: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(member))
    }

    fn file(&mut self, member: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut file = File::create(self.root.join(member))?;
        let n = io::copy(&mut data.take(size), &mut file)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{member}: expected {size} bytes, got {n}"),
            ));
        }
        // A reader that verifies at end of file must be read to its end.
        io::copy(data, &mut io::sink())?;
        file.sync_all()
    }
}

struct TarSink<W: Write> {
    builder: tar::Builder<W>,
}

fn tar_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, member: &str) -> io::Result<()> {
        let mut h = tar_header(tar::EntryType::Directory, 0, 0o755);
        self.builder
            .append_data(&mut h, format!("{member}/"), io::empty())
    }

    fn file(&mut self, member: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut h = tar_header(tar::EntryType::Regular, size, 0o644);
        // A short reader would leave a corrupt tar: count what is copied.
        let mut counted = CountingReader { inner: data, n: 0 };
        self.builder.append_data(&mut h, member, &mut counted)?;
        let n = counted.n;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{member}: expected {size} bytes, got {n}"),
            ));
        }
        Ok(())
    }
}

struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Removes a path on drop unless disarmed.
struct Cleanup {
    path: PathBuf,
    armed: bool,
}

impl Cleanup {
    fn new(path: PathBuf) -> Cleanup {
        Cleanup { path, armed: true }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                fs::remove_dir_all(&self.path)
            } else {
                fs::remove_file(&self.path)
            };
        }
    }
}

/// A hidden sibling of `dest` for building it before the final rename.
fn sibling(dest: &Path, what: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".to_string());
    dest.with_file_name(format!(".{name}.{what}-{}-{n}", std::process::id()))
}

/// Writes the images named by `names` (references or ids, as [`Store::get_image`] takes them)
/// to `dest`. `OciDir` needs `dest` absent or an empty directory; the tar formats replace an
/// existing file. The result appears at `dest` only when complete. Blobs are verified as they
/// are read from the store.
pub fn export(
    store: &Store,
    names: &[&str],
    dest: &Path,
    format: ExportFormat,
) -> Result<(), ArchiveError> {
    if names.is_empty() {
        return Err(ArchiveError::NothingToExport);
    }
    let mut records: Vec<ImageRecord> = Vec::new();
    for n in names {
        let rec = store
            .get_image(n)?
            .ok_or_else(|| ArchiveError::ImageNotFound(n.to_string()))?;
        if !records.iter().any(|r| r.name == rec.name) {
            records.push(rec);
        }
    }
    match format {
        ExportFormat::OciDir => {
            if dest.exists() {
                let empty = fs::read_dir(dest)
                    .map_err(io_err("list", dest))?
                    .next()
                    .is_none();
                if !empty {
                    return Err(ArchiveError::DestinationExists(dest.to_path_buf()));
                }
            }
            let temp = sibling(dest, "tmp");
            fs::create_dir(&temp).map_err(io_err("create directory", &temp))?;
            let mut guard = Cleanup::new(temp.clone());
            write_oci(store, &records, &mut DirSink { root: temp.clone() }, &temp)?;
            if dest.exists() {
                fs::remove_dir(dest).map_err(io_err("replace", dest))?;
            }
            fs::rename(&temp, dest).map_err(io_err("create", dest))?;
            guard.armed = false;
        }
        ExportFormat::OciTar | ExportFormat::DockerTar => {
            if dest.is_dir() {
                return Err(ArchiveError::DestinationExists(dest.to_path_buf()));
            }
            let temp = sibling(dest, "tmp");
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(io_err("create", &temp))?;
            let mut guard = Cleanup::new(temp.clone());
            let mut sink = TarSink {
                builder: tar::Builder::new(io::BufWriter::new(file)),
            };
            if format == ExportFormat::OciTar {
                write_oci(store, &records, &mut sink, &temp)?;
            } else {
                write_docker(store, &records, &mut sink, dest, &temp)?;
            }
            let file = sink
                .builder
                .into_inner()
                .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                .map_err(io_err("write", &temp))?;
            file.sync_all().map_err(io_err("write", &temp))?;
            fs::rename(&temp, dest).map_err(io_err("create", dest))?;
            guard.armed = false;
        }
    }
    tracing::info!(images = records.len(), dest = %dest.display(), format = ?format, "images exported");
    Ok(())
}

/// Maps an error of copying a blob: verification failures name the blob.
fn copy_err(d: &Digest, out: &Path) -> impl FnOnce(io::Error) -> ArchiveError + use<> {
    let d = d.clone();
    let out = out.to_path_buf();
    move |e| {
        let corrupt = e.get_ref().is_some_and(|inner| inner.is::<DigestError>());
        if corrupt {
            ArchiveError::CorruptBlob {
                digest: d,
                source: e,
            }
        } else {
            ArchiveError::Io {
                action: "write",
                path: out,
                source: e,
            }
        }
    }
}

fn copy_blob(
    store: &Store,
    sink: &mut dyn Sink,
    d: &Digest,
    member: &str,
    out: &Path,
) -> Result<(), ArchiveError> {
    let size = store.blob_size(d)?;
    let mut reader = store.open_blob(d)?;
    sink.file(member, size, &mut reader)
        .map_err(copy_err(d, out))
}

fn export_name_tag(name: &str) -> Option<String> {
    name.parse::<Reference>()
        .ok()
        .and_then(|r| r.tag().map(str::to_string))
}

fn write_oci(
    store: &Store,
    records: &[ImageRecord],
    sink: &mut dyn Sink,
    out: &Path,
) -> Result<(), ArchiveError> {
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|source| ArchiveError::Oci {
            what: "oci-layout",
            source,
        })?;
    let layout = serde_json::to_vec(&layout).map_err(|source| ArchiveError::Oci {
        what: "oci-layout",
        source: source.into(),
    })?;
    sink.file("oci-layout", layout.len() as u64, &mut layout.as_slice())
        .map_err(io_err("write", out))?;
    sink.dir("blobs").map_err(io_err("write", out))?;
    let mut dirs = HashSet::new();
    let mut written = HashSet::new();
    let mut descriptors = Vec::new();
    let tags: Vec<Option<String>> = records.iter().map(|r| export_name_tag(&r.name)).collect();
    for (rec, tag) in records.iter().zip(&tags) {
        let manifest_bytes = store.read_blob(&rec.manifest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| ArchiveError::Json {
                archive: store.blob_path(&rec.manifest),
                member: rec.manifest.to_string(),
                source,
            })?;
        let blobs = std::iter::once(&rec.manifest)
            .chain(std::iter::once(&rec.config))
            .chain(rec.layers.iter().map(|l| &l.digest));
        for d in blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            if dirs.insert(d.algorithm()) {
                sink.dir(&format!("blobs/{}", d.algorithm().name()))
                    .map_err(io_err("write", out))?;
            }
            copy_blob(store, sink, d, &blob_member_path(d), out)?;
        }
        let media_type = manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        let mut desc = Descriptor::new(
            media_type,
            manifest_bytes.len() as u64,
            oci_digest(&rec.manifest)?,
        );
        // A bare tag when it names one image (what `skopeo oci:DIR:TAG` looks up), the full
        // name otherwise.
        let unique_tag = tag
            .as_ref()
            .filter(|t| tags.iter().filter(|o| o.as_ref() == Some(*t)).count() == 1);
        let ref_name = unique_tag.cloned().unwrap_or_else(|| rec.name.clone());
        desc.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), ref_name),
            (ANNOTATION_IMAGE_NAME.to_string(), rec.name.clone()),
        ])));
        desc.set_platform(Some(record_platform(&rec.platform)?));
        descriptors.push(desc);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descriptors)
        .build()
        .map_err(|source| ArchiveError::Oci {
            what: "index.json",
            source,
        })?;
    let index = serde_json::to_vec(&index).map_err(|source| ArchiveError::Oci {
        what: "index.json",
        source: source.into(),
    })?;
    sink.file("index.json", index.len() as u64, &mut index.as_slice())
        .map_err(io_err("write", out))
}

fn record_platform(p: &str) -> Result<Platform, ArchiveError> {
    let spec = PlatformSpec::parse(p)?;
    let mut b = PlatformBuilder::default()
        .os(Os::from(spec.os.as_str()))
        .architecture(Arch::from(spec.arch.as_str()));
    if let Some(v) = spec.variant {
        b = b.variant(v);
    }
    b.build().map_err(|source| ArchiveError::Oci {
        what: "platform",
        source,
    })
}

/// The short name docker shows: `busybox:latest` for `docker.io/library/busybox:latest`.
fn familiar_name(r: &Reference) -> Option<String> {
    let tag = r.tag()?;
    let name = if r.registry() == DEFAULT_REGISTRY {
        r.repository()
            .strip_prefix("library/")
            .filter(|rest| !rest.contains('/'))
            .unwrap_or(r.repository())
            .to_string()
    } else {
        r.name()
    };
    Some(format!("{name}:{tag}"))
}

fn write_docker(
    store: &Store,
    records: &[ImageRecord],
    sink: &mut dyn Sink,
    dest: &Path,
    out: &Path,
) -> Result<(), ArchiveError> {
    // One manifest.json entry per image id, with all its tags.
    let mut groups: Vec<(&ImageRecord, Vec<String>)> = Vec::new();
    for rec in records {
        let tag = rec
            .name
            .parse::<Reference>()
            .ok()
            .as_ref()
            .and_then(familiar_name);
        match groups.iter_mut().find(|(r, _)| r.config == rec.config) {
            Some((_, tags)) => tags.extend(tag),
            None => groups.push((rec, tag.into_iter().collect())),
        }
    }
    sink.dir("blobs").map_err(io_err("write", out))?;
    let mut dirs = HashSet::new();
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    for (rec, tags) in groups {
        for d in std::iter::once(&rec.config).chain(rec.layers.iter().map(|l| &l.diff_id)) {
            if dirs.insert(d.algorithm()) {
                sink.dir(&format!("blobs/{}", d.algorithm().name()))
                    .map_err(io_err("write", out))?;
            }
        }
        let config_member = blob_member_path(&rec.config);
        if written.insert(config_member.clone()) {
            copy_blob(store, sink, &rec.config, &config_member, out)?;
        }
        let mut layers = Vec::new();
        for layer in &rec.layers {
            let member = blob_member_path(&layer.diff_id);
            if written.insert(member.clone()) {
                write_docker_layer(store, sink, layer, &member, dest, out)?;
            }
            layers.push(member);
        }
        entries.push(DockerManifest {
            config: config_member,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers,
        });
    }
    let json = serde_json::to_vec(&entries).map_err(|source| ArchiveError::Oci {
        what: "manifest.json",
        source: source.into(),
    })?;
    sink.file("manifest.json", json.len() as u64, &mut json.as_slice())
        .map_err(io_err("write", out))
}

/// Docker archives hold uncompressed layers: compressed ones are decompressed into a
/// scratch file next to `dest` (checked against the diff_id) first.
fn write_docker_layer(
    store: &Store,
    sink: &mut dyn Sink,
    layer: &LayerRecord,
    member: &str,
    dest: &Path,
    out: &Path,
) -> Result<(), ArchiveError> {
    let (compression, mut reader) = uncompressed_layer(store, &layer.digest)?;
    if compression == Compression::None && layer.digest == layer.diff_id {
        drop(reader);
        return copy_blob(store, sink, &layer.digest, member, out);
    }
    let scratch = sibling(dest, "layer");
    let _guard = Cleanup::new(scratch.clone());
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&scratch)
        .map_err(io_err("create", &scratch))?;
    let mut hasher = Hasher::new(layer.diff_id.algorithm());
    let size = {
        let mut tee = HashingWriter {
            inner: &mut file,
            hasher: &mut hasher,
        };
        io::copy(&mut reader, &mut tee).map_err(copy_err(&layer.digest, &scratch))?
    };
    let actual = hasher.finish();
    if actual != layer.diff_id {
        return Err(ArchiveError::DiffId {
            archive: store.blob_path(&layer.digest),
            layer: layer.digest.to_string(),
            diff_id: layer.diff_id.clone(),
            actual,
        });
    }
    io::Seek::rewind(&mut file).map_err(io_err("read", &scratch))?;
    sink.file(member, size, &mut BufReader::new(file))
        .map_err(io_err("write", out))
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: &'a mut Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        let cases = [
            ("index.json", Some("index.json")),
            ("./blobs/sha256/", Some("blobs/sha256")),
            ("a//b/./c", Some("a/b/c")),
            ("../etc/passwd", None),
            ("blobs/../../x", None),
            ("/etc/passwd", None),
            ("./", Some("")),
        ];
        for (input, want) in cases {
            assert_eq!(clean_member(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn link_targets() {
        let cases = [
            ("abc/layer.tar", "../blobs/sha256/x", Some("blobs/sha256/x")),
            ("abc/layer.tar", "./y.tar", Some("abc/y.tar")),
            ("layer.tar", "other.tar", Some("other.tar")),
            ("layer.tar", "../outside", None),
            ("abc/layer.tar", "/etc/passwd", None),
        ];
        for (link, target, want) in cases {
            assert_eq!(
                resolve_link(link, target).as_deref(),
                want,
                "{link} -> {target}"
            );
        }
        let links = HashMap::from([
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "c".to_string()),
            ("loop".to_string(), "loop".to_string()),
        ]);
        assert_eq!(follow(&links, "./a").as_deref(), Some("c"));
        assert_eq!(follow(&links, "z").as_deref(), Some("z"));
        assert_eq!(follow(&links, "loop"), None);
    }

    #[test]
    fn blob_members_and_metadata() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(blob_member(&blob_member_path(&d)), Ok(Some(d.clone())));
        assert_eq!(blob_member("index.json"), Ok(None));
        assert_eq!(blob_member("blobs/sha256/nothex"), Err(()));
        assert_eq!(blob_member("blobs/md5/abc"), Err(()));
        assert_eq!(blob_member("blobs/sha256"), Err(()));
        assert_eq!(
            digest_in_name(&format!("{}.json", d.hex())),
            Some(d.clone())
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{}", d.hex())),
            Some(d.clone())
        );
        assert_eq!(digest_in_name("config.json"), None);
        for (m, meta) in [
            ("index.json", true),
            ("oci-layout", true),
            ("abc/json", true),
            ("abc/VERSION", true),
            ("abc/layer.tar", false),
            ("blobs/sha256/abc", false),
        ] {
            assert_eq!(is_metadata(m), meta, "{m}");
        }
    }

    #[test]
    fn platforms() {
        let p = |os: &str, arch: &str, variant: Option<&str>| {
            let mut b = PlatformBuilder::default()
                .os(Os::from(os))
                .architecture(Arch::from(arch));
            if let Some(v) = variant {
                b = b.variant(v);
            }
            b.build().unwrap()
        };
        let amd64 = PlatformSpec::parse("linux/amd64").unwrap();
        assert_eq!(amd64.matches(&p("linux", "amd64", None)), Some(true));
        assert_eq!(amd64.matches(&p("linux", "arm64", None)), None);
        assert_eq!(amd64.matches(&p("windows", "amd64", None)), None);
        let arm = PlatformSpec::parse("linux/arm/v7").unwrap();
        assert_eq!(arm.matches(&p("linux", "arm", Some("v7"))), Some(true));
        assert_eq!(arm.matches(&p("linux", "arm", Some("v6"))), None);
        assert_eq!(arm.matches(&p("linux", "arm", None)), Some(false));
        let any_arm = PlatformSpec::parse("linux/arm").unwrap();
        assert_eq!(any_arm.matches(&p("linux", "arm", Some("v6"))), Some(false));
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(PlatformSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            describe_platform(&p("linux", "arm64", Some("v8"))),
            "linux/arm64/v8"
        );
        assert_eq!(
            record_platform("linux/arm/v7").unwrap(),
            p("linux", "arm", Some("v7"))
        );
    }

    #[test]
    fn familiar_names() {
        let cases = [
            ("busybox", Some("busybox:latest")),
            ("team/app:v1", Some("team/app:v1")),
            ("localhost:5000/app:1", Some("localhost:5000/app:1")),
            (
                "busybox@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                None,
            ),
        ];
        for (input, want) in cases {
            let r: Reference = input.parse().unwrap();
            assert_eq!(familiar_name(&r).as_deref(), want, "{input}");
        }
    }

    fn loaded(manifest: &[u8], names: &[&str], tag: Option<&str>) -> Loaded {
        Loaded {
            manifest: Digest::sha256_of(manifest),
            index: None,
            config: Digest::sha256_of(b"c"),
            layers: Vec::new(),
            platform: "linux/amd64".to_string(),
            size: 0,
            names: names.iter().map(|n| n.to_string()).collect(),
            tag: tag.map(str::to_string),
        }
    }

    #[test]
    fn naming_rules() {
        let a = Path::new("a.tar");
        let given: Reference = "example.com/team/app:v2".parse().unwrap();
        let names = |r: Vec<(String, usize)>| r.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        // A given name wins for a single image.
        let one = [loaded(b"1", &["docker.io/library/x:1"], None)];
        assert_eq!(
            names(assign_names(a, &one, Some(&given)).unwrap()),
            ["example.com/team/app:v2"]
        );
        assert_eq!(
            names(assign_names(a, &one, None).unwrap()),
            ["docker.io/library/x:1"]
        );
        // A bare tag needs a repository.
        let tagged = [loaded(b"1", &[], Some("latest"))];
        assert!(matches!(
            assign_names(a, &tagged, None),
            Err(ArchiveError::TagOnly { .. })
        ));
        let two = [
            loaded(b"1", &[], Some("1.0")),
            loaded(b"2", &["docker.io/library/y:2"], None),
        ];
        assert_eq!(
            names(assign_names(a, &two, Some(&given)).unwrap()),
            ["example.com/team/app:1.0", "docker.io/library/y:2"]
        );
        assert!(matches!(
            assign_names(a, &[loaded(b"1", &[], None)], None),
            Err(ArchiveError::NoName { .. })
        ));
        let unnamed = [loaded(b"1", &[], None), loaded(b"2", &[], None)];
        assert!(matches!(
            assign_names(a, &unnamed, Some(&given)),
            Err(ArchiveError::NameForMany { count: 2, .. })
        ));
        let clash = [
            loaded(b"1", &["docker.io/library/x:1"], None),
            loaded(b"2", &["docker.io/library/x:1"], None),
        ];
        assert!(matches!(
            assign_names(a, &clash, None),
            Err(ArchiveError::DuplicateName { .. })
        ));
    }
}

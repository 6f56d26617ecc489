//! The content store: blobs addressed by digest, image records naming them, and garbage
//! collection.
//!
//! Layout under the root (default [`DEFAULT_ROOT`]):
//!
//! ```text
//! <root>/lock                         flock: shared by writers (leases), exclusive by gc
//! <root>/content/blobs/<alg>/<hex>    complete, verified blobs (never partial)
//! <root>/content/ingest/              <alg>-<hex>.partial resumable downloads, .tmp-* files
//! <root>/images/<sha256(name)>.json   one ImageRecord per image name
//! ```
//!
//! Every write goes to a temporary file that is fsynced, renamed into place and followed by an
//! fsync of the directory, so a process killed at any point leaves either the old state or the
//! new one. Blobs are verified against their digest before they are renamed into `blobs/` and
//! again when they are read.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, DigestError, Hasher};
use crate::reference::Reference;

/// Where the store lives unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/skiff";

/// Partial downloads untouched for this long are removed by [`Store::gc`].
pub const INGEST_MAX_AGE: Duration = Duration::from_secs(3600);

/// Temporary files of a dead process are removed at once by [`Store::open`]; those whose
/// owner looks alive only after this long (the pid may have been reused).
const TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Prefix of temporary files; never a valid digest or record name.
const TEMP_PREFIX: &str = ".tmp-";

/// Errors of the content store. Each names the blob, path or image concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store directory or file could not be created, read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`create directory`, `write`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {digest} not found in the store")]
    BlobNotFound {
        /// The blob.
        digest: Digest,
    },
    /// The blob could not be read.
    #[error("cannot read blob {digest} at {path}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The blob could not be written.
    #[error("cannot write blob {digest} at {path}")]
    WriteBlob {
        /// The blob.
        digest: Digest,
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The content does not match its digest or expected size.
    #[error("blob {digest} failed verification")]
    Verify {
        /// The blob.
        digest: Digest,
        /// Mismatch details.
        #[source]
        source: DigestError,
    },
    /// Another writer holds the partial download of this blob.
    #[error("blob {digest} is being downloaded by another process")]
    IngestBusy {
        /// The blob.
        digest: Digest,
    },
    /// An image record could not be read.
    #[error("cannot read image record {path}")]
    ReadRecord {
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An image record is not valid JSON.
    #[error("corrupt image record {path}")]
    ParseRecord {
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An image record could not be written.
    #[error("cannot write image record for {name} at {path}")]
    WriteRecord {
        /// The image name.
        name: String,
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `put_image` was given a record whose blobs are not all in the store.
    #[error("image {name} references blob {digest}, which is not in the store")]
    MissingBlob {
        /// The image name.
        name: String,
        /// The absent blob.
        digest: Digest,
    },
    /// No image has this name or id.
    #[error("no image named {name:?} in the store")]
    ImageNotFound {
        /// What was asked for.
        name: String,
    },
    /// An id prefix matches several images.
    #[error("{name:?} matches several images: {}", matches.join(", "))]
    Ambiguous {
        /// What was asked for.
        name: String,
        /// The names it matches.
        matches: Vec<String>,
    },
    /// A lock on the store could not be taken.
    #[error("cannot lock the store at {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Garbage collection needs the store to itself, but a pull or import holds a lease.
    #[error("the store at {path} is in use by a pull or import; try again when it finishes")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What is recorded about one layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    /// Digest of the layer blob as stored (compressed or not).
    pub digest: Digest,
    /// The layer's media type from the manifest.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// An image known to the store: a name and the blobs it consists of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest` (or `name@digest`).
    pub name: String,
    /// The platform manifest.
    pub manifest: Digest,
    /// The index or manifest list the manifest was chosen from, if any.
    pub index: Option<Digest>,
    /// The image config; its digest is the image id.
    pub config: Digest,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// `os/arch[/variant]`, e.g. `linux/amd64`.
    pub platform: String,
    /// When the record was stored (RFC 3339).
    pub created: String,
    /// Sum of the layer blob sizes and the config size.
    pub size: u64,
}

impl ImageRecord {
    /// The image id: the hex of the config digest, as docker shows it.
    pub fn id(&self) -> &str {
        self.config.hex()
    }

    /// Every blob the record needs: manifest, index, config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.manifest)
            .chain(self.index.iter())
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    /// Blobs removed because no image references them.
    pub blobs: Vec<Digest>,
    /// Bytes freed by removing them.
    pub blob_bytes: u64,
    /// Partial downloads removed because they were older than [`INGEST_MAX_AGE`].
    pub ingests: usize,
    /// Bytes freed by removing them.
    pub ingest_bytes: u64,
}

impl GcReport {
    /// Total bytes freed.
    pub fn bytes(&self) -> u64 {
        self.blob_bytes + self.ingest_bytes
    }
}

/// A shared lock on the store: while any lease is held, [`Store::gc`] refuses to run, so blobs
/// written by a pull or import survive until its image record is written.
#[derive(Debug)]
pub struct Lease {
    _lock: Flock<File>,
}

/// The content store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and removes temporary files left by dead
    /// processes.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [store.blobs_dir(), store.ingest_dir(), store.images_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        let lock = store.lock_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lock)
            .map_err(io_err("create", &lock))?;
        for dir in [store.ingest_dir(), store.images_dir()] {
            clean_temp_files(&dir)?;
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("content").join("blobs")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("content").join("ingest")
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Where the blob lives (whether or not it is there).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.algorithm().name()).join(d.hex())
    }

    fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.ingest_dir()
            .join(format!("{}-{}.partial", d.algorithm().name(), d.hex()))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.images_dir()
            .join(format!("{}.json", Digest::sha256_of(name.as_bytes()).hex()))
    }

    /// Whether the blob is in the store (complete; its content is checked when read).
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, d: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(d);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound { digest: d.clone() })
            }
            Err(source) => Err(StoreError::ReadBlob {
                digest: d.clone(),
                path,
                source,
            }),
        }
    }

    /// Reads a whole blob and checks it against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut data = Vec::new();
        let path = self.blob_path(d);
        self.open_file(d)?
            .read_to_end(&mut data)
            .map_err(|source| StoreError::ReadBlob {
                digest: d.clone(),
                path,
                source,
            })?;
        d.verify(&data).map_err(|source| StoreError::Verify {
            digest: d.clone(),
            source,
        })?;
        Ok(data)
    }

    /// Opens a blob for streaming; the reader fails at end of file if the content does not
    /// match the digest.
    pub fn open_blob(&self, d: &Digest) -> Result<VerifiedReader, StoreError> {
        Ok(VerifiedReader::new(self.open_file(d)?, d.clone()))
    }

    fn open_file(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound { digest: d.clone() }
            } else {
                StoreError::ReadBlob {
                    digest: d.clone(),
                    path,
                    source,
                }
            }
        })
    }

    /// Stores `data` as blob `d` after checking it hashes to `d`. A blob already present is
    /// left alone.
    pub fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<(), StoreError> {
        d.verify(data).map_err(|source| StoreError::Verify {
            digest: d.clone(),
            source,
        })?;
        self.write_blob_from(d, Some(data.len() as u64), data)
            .map(|_| ())
    }

    /// Streams `reader` into blob `d`, checking its size (if given) and digest before the blob
    /// appears in the store. Returns the blob's size. If the blob is already present the
    /// reader is not read.
    pub fn write_blob_from(
        &self,
        d: &Digest,
        size: Option<u64>,
        reader: impl Read,
    ) -> Result<u64, StoreError> {
        if self.has_blob(d) {
            return self.blob_size(d);
        }
        let mut temp =
            TempFile::create(&self.ingest_dir()).map_err(|source| StoreError::WriteBlob {
                digest: d.clone(),
                path: self.ingest_dir(),
                source,
            })?;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            let digest = d.clone();
            move |source| StoreError::WriteBlob {
                digest,
                path,
                source,
            }
        };
        // One byte more than expected is enough to know the content is too long.
        let limit = size.map_or(u64::MAX, |s| s.saturating_add(1));
        let mut hasher = Hasher::new(d.algorithm());
        let written = copy_hashing(reader.take(limit), &mut temp.file, &mut hasher)
            .map_err(write_err(&temp.path))?;
        if let Some(expected) = size {
            if written != expected {
                return Err(StoreError::Verify {
                    digest: d.clone(),
                    source: DigestError::Size {
                        digest: d.clone(),
                        expected,
                        actual: written,
                    },
                });
            }
        }
        let actual = hasher.finish();
        if &actual != d {
            return Err(StoreError::Verify {
                digest: d.clone(),
                source: DigestError::Mismatch {
                    expected: d.clone(),
                    actual,
                },
            });
        }
        let dest = self.blob_path(d);
        temp.persist(&dest).map_err(write_err(&dest))?;
        Ok(written)
    }

    /// Streams `reader` into the store under the digest it hashes to, and returns that
    /// digest and the size. For content whose digest is not known beforehand (layers of
    /// `docker save` archives); the caller checks the digest against whatever vouches for it.
    pub fn add_blob(
        &self,
        algorithm: Algorithm,
        reader: impl Read,
    ) -> Result<(Digest, u64), StoreError> {
        let dir = self.ingest_dir();
        let mut temp = TempFile::create(&dir).map_err(io_err("create a file in", &dir))?;
        let mut hasher = Hasher::new(algorithm);
        let written = copy_hashing(reader, &mut temp.file, &mut hasher)
            .map_err(io_err("write", &temp.path))?;
        let digest = hasher.finish();
        if self.has_blob(&digest) {
            return Ok((digest, written));
        }
        let dest = self.blob_path(&digest);
        temp.persist(&dest)
            .map_err(|source| StoreError::WriteBlob {
                digest: digest.clone(),
                path: dest,
                source,
            })?;
        Ok((digest, written))
    }

    /// Starts or resumes the download of blob `d`. The partial file survives a crash or a
    /// dropped [`Ingest`]; the next call reopens it and reports how much is already there.
    pub fn ingest(&self, d: &Digest, size: Option<u64>) -> Result<Ingest, StoreError> {
        let path = self.ingest_path(d);
        let err = |source| StoreError::WriteBlob {
            digest: d.clone(),
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::IngestBusy { digest: d.clone() });
            }
            Err((_, errno)) => return Err(err(io::Error::from(errno))),
        };
        // Hash what is already there so that commit need not read it again.
        let mut hasher = Hasher::new(d.algorithm());
        let mut offset = copy_hashing(&mut *file, &mut io::sink(), &mut hasher).map_err(err)?;
        if size.is_some_and(|s| offset > s) {
            file.set_len(0).map_err(err)?;
            hasher = Hasher::new(d.algorithm());
            offset = 0;
        }
        if offset > 0 {
            tracing::debug!(digest = %d, offset, "resuming partial blob");
        }
        Ok(Ingest {
            file,
            path,
            dest: self.blob_path(d),
            digest: d.clone(),
            size,
            offset,
            hasher,
        })
    }

    /// Takes a shared lease on the store; [`Store::gc`] refuses to run while one is held.
    /// Hold one from the first blob written until the image record is stored.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        self.lock(FlockArg::LockShared)
    }

    fn lock(&self, arg: FlockArg) -> Result<Lease, StoreError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Lease { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(StoreError::Busy { path }),
            Err((_, source)) => Err(StoreError::Lock { path, source }),
        }
    }

    /// Records an image, replacing any record of the same name. Every blob the record
    /// names must already be in the store.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        // gc cannot run between the check and the rename.
        let _lease = self.lease()?;
        if let Some(missing) = rec.blobs().find(|d| !self.has_blob(d)) {
            return Err(StoreError::MissingBlob {
                name: rec.name.clone(),
                digest: missing.clone(),
            });
        }
        let path = self.record_path(&rec.name);
        let err = |source| StoreError::WriteRecord {
            name: rec.name.clone(),
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(rec).map_err(|e| err(e.into()))?;
        let mut temp = TempFile::create(&self.images_dir()).map_err(err)?;
        temp.file.write_all(&json).map_err(err)?;
        temp.persist(&path).map_err(err)?;
        tracing::debug!(image = %rec.name, manifest = %rec.manifest, "image recorded");
        Ok(())
    }

    /// Finds an image by normalised reference (`busybox` finds
    /// `docker.io/library/busybox:latest`) or by image id or a unique prefix of it
    /// (`sha256:` optional).
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.resolve(name)
    }

    fn read_record(&self, path: &Path) -> Result<Option<ImageRecord>, StoreError> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::ReadRecord {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StoreError::ParseRecord {
                path: path.to_path_buf(),
                source,
            })
    }

    fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        if let Some(rec) = self.read_record(&self.record_path(name))? {
            return Ok(Some(rec));
        }
        if let Ok(reference) = name.parse::<Reference>() {
            let normal = reference.to_string();
            if normal != name {
                if let Some(rec) = self.read_record(&self.record_path(&normal))? {
                    return Ok(Some(rec));
                }
            }
        }
        let Some(prefix) = id_prefix(name) else {
            return Ok(None);
        };
        let matches: Vec<ImageRecord> = self
            .list_images()?
            .into_iter()
            .filter(|r| r.config.hex().starts_with(prefix))
            .collect();
        let ids: HashSet<&Digest> = matches.iter().map(|r| &r.config).collect();
        if ids.len() > 1 {
            return Err(StoreError::Ambiguous {
                name: name.to_string(),
                matches: matches.iter().map(|r| r.name.clone()).collect(),
            });
        }
        Ok(matches.into_iter().next())
    }

    /// All image records, sorted by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.images_dir();
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let path = entry.map_err(io_err("list", &dir))?.path();
            let is_record = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with(TEMP_PREFIX));
            if !is_record {
                continue;
            }
            if let Some(rec) = self.read_record(&path)? {
                records.insert(rec.name.clone(), rec);
            }
        }
        Ok(records.into_values().collect())
    }

    /// Removes an image record (its blobs stay until [`Store::gc`]). An image id naming
    /// several records is refused; remove them by name.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let rec = self
            .resolve(name)?
            .ok_or_else(|| StoreError::ImageNotFound {
                name: name.to_string(),
            })?;
        if rec.name != name && id_prefix(name).is_some() {
            let same: Vec<String> = self
                .list_images()?
                .into_iter()
                .filter(|r| r.config == rec.config)
                .map(|r| r.name)
                .collect();
            if same.len() > 1 {
                return Err(StoreError::Ambiguous {
                    name: name.to_string(),
                    matches: same,
                });
            }
        }
        let path = self.record_path(&rec.name);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        sync_dir(&self.images_dir()).map_err(io_err("sync", &self.images_dir()))?;
        Ok(rec)
    }

    /// Every blob some image record needs.
    pub fn referenced_blobs(&self) -> Result<HashSet<Digest>, StoreError> {
        Ok(self
            .list_images()?
            .iter()
            .flat_map(|r| r.blobs().cloned().collect::<Vec<_>>())
            .collect())
    }

    /// Removes blobs no image references and partial downloads older than
    /// [`INGEST_MAX_AGE`]. Fails with [`StoreError::Busy`] while a lease is held.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _exclusive = self.lock(FlockArg::LockExclusiveNonblock)?;
        self.gc_locked()
    }

    /// [`Store::gc`], then `then` while gc's exclusive lock is still held: no pull stores a
    /// blob or an image record meanwhile (its lease waits), so the images `then` reads are
    /// the ones that stay. A prune needs that to compute the snapshots to keep.
    pub fn gc_then<T, E: From<StoreError>>(
        &self,
        then: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<(GcReport, T), E> {
        let _exclusive = self.lock(FlockArg::LockExclusiveNonblock)?;
        let report = self.gc_locked()?;
        Ok((report, then(self)?))
    }

    /// The work of [`Store::gc`]; the caller holds the exclusive lock.
    fn gc_locked(&self) -> Result<GcReport, StoreError> {
        let keep = self.referenced_blobs()?;
        let mut report = GcReport::default();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.blobs_dir().join(algorithm.name());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io_err("list", &dir)(source)),
            };
            let mut removed_any = false;
            for entry in entries {
                let entry = entry.map_err(io_err("list", &dir))?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("{}:{hex}", algorithm.name()).parse::<Digest>().ok())
                else {
                    tracing::warn!(path = %entry.path().display(), "unexpected file in blob store left alone");
                    continue;
                };
                if keep.contains(&digest) {
                    continue;
                }
                let path = entry.path();
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                tracing::debug!(%digest, bytes = len, "removed unreferenced blob");
                report.blobs.push(digest);
                report.blob_bytes += len;
                removed_any = true;
            }
            if removed_any {
                sync_dir(&dir).map_err(io_err("sync", &dir))?;
            }
        }
        report.blobs.sort();
        let dir = self.ingest_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "partial") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !older_than(&meta, INGEST_MAX_AGE) {
                continue;
            }
            // Skip a partial whose download is still running (its Ingest holds the lock).
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(_locked) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            report.ingests += 1;
            report.ingest_bytes += meta.len();
        }
        tracing::info!(
            blobs = report.blobs.len(),
            bytes = report.bytes(),
            ingests = report.ingests,
            "garbage collected the content store"
        );
        Ok(report)
    }
}

/// The hex of an image id or id prefix (`sha256:` optional), if `name` looks like one.
fn id_prefix(name: &str) -> Option<&str> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    (!hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Copies `reader` to `writer`, feeding the hasher; returns the byte count.
fn copy_hashing(
    mut reader: impl Read,
    writer: &mut impl Write,
    hasher: &mut Hasher,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `.tmp-<pid>-…` files whose process is gone, or that are very old.
fn clean_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let owner_alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(process_alive);
        let stale = !owner_alive
            || entry
                .metadata()
                .is_ok_and(|meta| older_than(&meta, TEMP_MAX_AGE));
        if stale {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed stale temporary file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_err("remove", &path)(source)),
            }
        }
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists but belongs to someone else.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// A uniquely named temporary file, removed on drop unless persisted.
struct TempFile {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn create(dir: &Path) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        loop {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{pid}-{n}-{nanos}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path,
                        persisted: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// fsync, rename to `dest` (creating its directory), fsync the directory.
    fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
        fs::create_dir_all(dir)?;
        fs::rename(&self.path, dest)?;
        self.persisted = true;
        sync_dir(dir)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A blob being downloaded into `<root>/content/ingest/<alg>-<hex>.partial`.
///
/// Write the remaining bytes (from [`Ingest::offset`] on), then [`Ingest::commit`]. Dropping
/// it keeps the partial file for a later resume; [`Ingest::abort`] deletes it. The partial is
/// locked while the `Ingest` lives, so two writers cannot interleave.
#[derive(Debug)]
pub struct Ingest {
    file: Flock<File>,
    path: PathBuf,
    dest: PathBuf,
    digest: Digest,
    size: Option<u64>,
    offset: u64,
    hasher: Hasher,
}

impl Ingest {
    /// Bytes already in the partial file: where the download continues.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The blob being written.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Discards what is there and starts again from offset 0.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(|source| StoreError::WriteBlob {
                digest: self.digest.clone(),
                path: self.path.clone(),
                source,
            })?;
        self.offset = 0;
        self.hasher = Hasher::new(self.digest.algorithm());
        Ok(())
    }

    /// Checks size and digest and moves the blob into the store. On a mismatch the partial
    /// file is deleted (the next attempt starts afresh) and the error names the digest.
    pub fn commit(self) -> Result<(), StoreError> {
        let digest = self.digest.clone();
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            let digest = digest.clone();
            move |source| StoreError::WriteBlob {
                digest,
                path,
                source,
            }
        };
        self.file.sync_all().map_err(werr(&self.path))?;
        let mismatch = match self.size {
            Some(expected) if expected != self.offset => Some(DigestError::Size {
                digest: digest.clone(),
                expected,
                actual: self.offset,
            }),
            _ => {
                let actual = self.hasher.finish();
                (actual != digest).then(|| DigestError::Mismatch {
                    expected: digest.clone(),
                    actual,
                })
            }
        };
        if let Some(source) = mismatch {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::Verify { digest, source });
        }
        if self.dest.is_file() {
            // Someone else stored it meanwhile: same content by construction.
            fs::remove_file(&self.path).map_err(werr(&self.path))?;
            return Ok(());
        }
        let dir = self
            .dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        fs::create_dir_all(&dir).map_err(werr(&dir))?;
        fs::rename(&self.path, &self.dest).map_err(werr(&self.dest))?;
        sync_dir(&dir).map_err(werr(&dir))?;
        tracing::debug!(%digest, bytes = self.offset, "blob committed");
        Ok(())
    }

    /// Gives up the download and deletes the partial file.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(size) = self.size {
            if self.offset + buf.len() as u64 > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::Size {
                        digest: self.digest.clone(),
                        expected: size,
                        actual: self.offset + buf.len() as u64,
                    },
                ));
            }
        }
        let n = (&*self.file).write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.file).flush()
    }
}

/// A blob reader that hashes what it reads and fails at end of file (with an
/// `io::ErrorKind::InvalidData` error wrapping [`DigestError::Mismatch`]) if the content
/// does not match the digest. Only a reader that reached end of file has verified anything.
#[derive(Debug)]
pub struct VerifiedReader {
    file: File,
    expected: Digest,
    hasher: Option<Hasher>,
    failed: Option<Digest>,
}

impl VerifiedReader {
    fn new(file: File, expected: Digest) -> VerifiedReader {
        VerifiedReader {
            hasher: Some(Hasher::new(expected.algorithm())),
            file,
            expected,
            failed: None,
        }
    }

    /// The digest the content is checked against.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    fn mismatch(&self, actual: Digest) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            DigestError::Mismatch {
                expected: self.expected.clone(),
                actual,
            },
        )
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(actual) = &self.failed {
            return Err(self.mismatch(actual.clone()));
        }
        let n = self.file.read(buf)?;
        if n > 0 {
            if let Some(h) = &mut self.hasher {
                h.update(&buf[..n]);
            }
            return Ok(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(h) = self.hasher.take() {
            let actual = h.finish();
            if actual != self.expected {
                self.failed = Some(actual.clone());
                return Err(self.mismatch(actual));
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn record(name: &str, config: &Digest) -> ImageRecord {
        ImageRecord {
            name: name.to_string(),
            manifest: Digest::sha256_of(b"m"),
            index: Some(Digest::sha256_of(b"i")),
            config: config.clone(),
            layers: vec![LayerRecord {
                digest: Digest::sha256_of(b"l"),
                media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
                size: 1,
                diff_id: Digest::sha256_of(b"l"),
            }],
            platform: "linux/amd64".to_string(),
            created: "2024-01-01T00:00:00Z".to_string(),
            size: 2,
        }
    }

    #[test]
    fn id_prefixes() {
        let cases = [
            ("2cf24d", Some("2cf24d")),
            ("sha256:2cf2", Some("2cf2")),
            (HEX, Some(HEX)),
            ("busybox", None),
            ("", None),
            ("sha256:", None),
            ("2CF2", None),
        ];
        for (input, want) in cases {
            assert_eq!(id_prefix(input), want, "{input}");
        }
        assert_eq!(id_prefix(&format!("{HEX}0")), None);
    }

    #[test]
    fn record_lists_all_blobs() {
        let config = Digest::sha256_of(b"c");
        let rec = record("docker.io/library/busybox:latest", &config);
        let blobs: Vec<&Digest> = rec.blobs().collect();
        assert_eq!(blobs.len(), 4);
        assert!(blobs.contains(&&config));
        assert_eq!(rec.id(), config.hex());
        let json = serde_json::to_string(&rec).unwrap();
        let back: ImageRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn paths_come_from_digests() {
        let store = Store {
            root: PathBuf::from("/s"),
        };
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(
            store.blob_path(&d),
            PathBuf::from(format!("/s/content/blobs/sha256/{HEX}"))
        );
        assert_eq!(
            store.ingest_path(&d),
            PathBuf::from(format!("/s/content/ingest/sha256-{HEX}.partial"))
        );
        // Record files are named by a hash, so no name can escape images/.
        let p = store.record_path("../../etc/passwd");
        assert_eq!(p.parent(), Some(Path::new("/s/images")));
    }

    #[test]
    fn verified_reader_detects_mismatch_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, b"hello").unwrap();
        let mut ok = VerifiedReader::new(File::open(&path).unwrap(), Digest::sha256_of(b"hello"));
        let mut out = Vec::new();
        ok.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        let mut bad = VerifiedReader::new(File::open(&path).unwrap(), Digest::sha256_of(b"world"));
        let err = bad.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err
            .get_ref()
            .unwrap()
            .downcast_ref::<DigestError>()
            .unwrap();
        assert!(matches!(inner, DigestError::Mismatch { .. }));
        // The failure is sticky.
        assert!(bad.read(&mut [0u8; 4]).is_err());
    }
}

//! Overlay snapshots: each layer unpacked once under its chain id, and per container an
//! overlay mount of those layers under a fresh writable upper directory.
//!
//! Layout under the root given to [`Snapshots::open`]:
//!
//! ```text
//! <root>/snapshots.lock                        flock: mount and gc exclude each other
//! <root>/snapshots/<chain hex>/fs              one layer, as overlayfs reads a lower layer
//! <root>/snapshots/.tmp-<pid>-<n>-<hex>/fs     an unpack in progress (renamed into place)
//! <root>/containers/<id>/lowers.json           the chain ids mounted, bottom-most first
//! <root>/containers/<id>/l/<n>                 short symlinks to the layers (see below)
//! <root>/containers/<id>/{upper,work,merged}   the overlay's upper, work and mount point
//! ```
//!
//! `snapshots/` is mode 0700: layers hold setuid binaries that host users must not reach.
//!
//! **The page limit.** `mount(2)` copies at most one page of option text, so
//! `lowerdir=/long/root/snapshots/<64 hex>/fs:…` overflows at a few dozen layers, fewer
//! with a long root. [`Snapshots::mount`] therefore writes one symlink per layer,
//! `containers/<id>/l/<n> -> ../../../snapshots/<hex>/fs`, and mounts from a helper
//! thread that first unshares its filesystem attributes (`unshare(CLONE_FS)`, which only
//! that thread sees) and `fchdir`s into the container directory, so the options read
//! `lowerdir=l/59:l/58:…:l/0,upperdir=upper,workdir=work,…`: about six bytes per layer,
//! whatever the root, which fits overlayfs' own limit of 500 layers. The process's working
//! directory, shared by all its threads, is never touched, and no `unsafe` is needed.
//! (overlayfs resolves the paths, following the symlinks, once at mount time.)

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, RenameFlags};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::digest::{Digest, Hasher};
use crate::unpack::{self, UnpackError};

/// Prefix of unpacks in progress in the snapshots directory.
const TMP_PREFIX: &str = ".tmp-";
/// Prefix of snapshots being removed by gc.
const GC_PREFIX: &str = ".gc-";
/// How often an unmount that fails with EBUSY is retried (20 ms, 40 ms, … apart).
const UNMOUNT_BUSY_RETRIES: u64 = 5;
/// overlayfs options besides the directories: no inode index (not needed without hard
/// link copy-up across layers or NFS export), and no following of `redirect` xattrs (the
/// unpacker never writes them, so none in a layer are ours).
const OVERLAY_FLAGS: &str = "index=off,redirect_dir=nofollow";
/// The most options text `mount(2)` accepts (one page, NUL included) where the page size
/// cannot be read.
const DEFAULT_PAGE_SIZE: usize = 4096;

/// Errors of snapshot management.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The media type is not a layer type.
    #[error("layer {layer}: media type {media_type:?} is not a layer")]
    NotALayer {
        /// The layer.
        layer: String,
        /// Its media type.
        media_type: String,
    },
    /// The layer could not be unpacked.
    #[error("cannot unpack snapshot {chain_id}")]
    Unpack {
        /// The snapshot being created.
        chain_id: Digest,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// Reading the rest of the layer stream after the tar's end failed.
    #[error("layer {layer}: cannot read the layer stream")]
    Read {
        /// The layer.
        layer: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The uncompressed layer does not hash to its diff id.
    #[error(
        "layer {layer}: uncompressed content hashes to {actual}, not to the diff id {expected}"
    )]
    DiffIdMismatch {
        /// The layer.
        layer: String,
        /// The diff id from the image config.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// A snapshot to mount does not exist.
    #[error("container {container}: snapshot {chain_id} does not exist")]
    MissingSnapshot {
        /// The container.
        container: String,
        /// The missing snapshot.
        chain_id: Digest,
    },
    /// The container id cannot name a directory.
    #[error("invalid container id {0:?}")]
    InvalidContainerId(String),
    /// A container needs at least one layer.
    #[error("container {container}: no layers to mount")]
    NoLayers {
        /// The container.
        container: String,
    },
    /// The container already has a rootfs from other layers.
    #[error("container {container} already has a rootfs of other layers")]
    LowersMismatch {
        /// The container.
        container: String,
    },
    /// Even the short options do not fit in a page.
    #[error("container {container}: overlay options for {layers} layers exceed {limit} bytes")]
    TooManyLayers {
        /// The container.
        container: String,
        /// How many layers.
        layers: usize,
        /// The limit.
        limit: usize,
    },
    /// The container's `lowers.json` cannot be read.
    #[error("cannot parse {}", path.display())]
    Lowers {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The overlay mount failed.
    #[error("cannot mount overlay of {layers} layers on {}", merged.display())]
    Mount {
        /// The mount point.
        merged: PathBuf,
        /// How many layers.
        layers: usize,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The helper thread that mounts could not run.
    #[error("overlay mount helper thread for {} failed", merged.display())]
    MountThread {
        /// The mount point.
        merged: PathBuf,
    },
    /// The unmount failed (busy: processes still use the rootfs).
    #[error("cannot unmount {}", merged.display())]
    Unmount {
        /// The mount point.
        merged: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The OCI ChainIDs of a stack of layers given by their diff ids, bottom-most first:
/// `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Layer snapshots and container rootfs mounts under one root directory.
#[derive(Debug)]
pub struct Snapshots {
    root: PathBuf,
    snapshots: PathBuf,
    containers: PathBuf,
}

/// Distinguishes temp directories of one process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes a directory tree when dropped unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_dir_all(&path) {
                warn!(path = %path.display(), error = %e, "cannot remove temporary snapshot");
            }
        }
    }
}

/// Hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the stream.
fn read_prefix(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `path` is the root of a mount other than its parent's (overlayfs gets its own
/// device number). `false` if it does not exist.
fn is_mount_point(path: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    Ok(meta.dev() != fs::symlink_metadata(parent)?.dev())
}

/// Container ids name directories: letters, digits, `_`, `-`, `.`, not starting with `.`.
fn validate_container_id(id: &str) -> Result<(), SnapshotError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::InvalidContainerId(id.to_string()))
    }
}

/// The digest a snapshot directory name stands for.
fn digest_of_dir_name(name: &str) -> Option<Digest> {
    let algorithm = match name.len() {
        64 => "sha256",
        128 => "sha512",
        _ => return None,
    };
    format!("{algorithm}:{name}").parse().ok()
}

/// The pid in a temp directory name `<prefix><pid>-…`.
fn temp_owner(name: &str) -> Option<Pid> {
    let rest = name
        .strip_prefix(TMP_PREFIX)
        .or_else(|| name.strip_prefix(GC_PREFIX))?;
    let pid: i32 = rest.split('-').next()?.parse().ok()?;
    Some(Pid::from_raw(pid))
}

/// The `lowerdir=…` options, top-most layer first, naming the `l/<n>` links.
fn overlay_options(layers: usize) -> String {
    let lowers: Vec<String> = (0..layers).rev().map(|i| format!("l/{i}")).collect();
    format!(
        "lowerdir={},upperdir=upper,workdir=work,{OVERLAY_FLAGS}",
        lowers.join(":")
    )
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_PAGE_SIZE)
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SnapshotError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_error("create", &tmp))?;
    f.write_all(data).map_err(io_error("write", &tmp))?;
    f.sync_all().map_err(io_error("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename into place", path))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<(), SnapshotError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", parent))
}

/// Mounts the overlay `options` (relative paths) on `merged` from a thread whose working
/// directory is `dir` (see the module documentation).
fn mount_from(
    dir: &Path,
    merged: &Path,
    options: &str,
    layers: usize,
) -> Result<(), SnapshotError> {
    let dir_file = File::open(dir).map_err(io_error("open", dir))?;
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> nix::Result<()> {
                // Only this thread gets a private cwd; without it, fchdir would move
                // every thread of the process.
                nix::sched::unshare(CloneFlags::CLONE_FS)?;
                nix::unistd::fchdir(dir_file.as_raw_fd())?;
                nix::mount::mount(
                    Some("overlay"),
                    "merged",
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(options),
                )
            })
            .join()
    });
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(SnapshotError::Mount {
            merged: merged.to_path_buf(),
            layers,
            source,
        }),
        Err(_) => Err(SnapshotError::MountThread {
            merged: merged.to_path_buf(),
        }),
    }
}

impl Snapshots {
    /// Opens (creating if needed) the snapshot root, and removes unpacks left behind by
    /// processes that died.
    pub fn open(root: &Path) -> Result<Snapshots, SnapshotError> {
        let snapshots = root.join("snapshots");
        let containers = root.join("containers");
        for (dir, mode) in [(root, 0o711), (&snapshots, 0o700), (&containers, 0o711)] {
            DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(io_error("create", dir))?;
        }
        let s = Snapshots {
            root: root.to_path_buf(),
            snapshots,
            containers,
        };
        s.remove_stale_temps()?;
        Ok(s)
    }

    /// Whether snapshot `chain_id` exists.
    pub fn has(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    /// The directory holding snapshot `chain_id`'s files.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots.join(chain_id.hex()).join("fs")
    }

    /// Unpacks a compressed layer blob as snapshot `chain_id` unless it exists: picks the
    /// decompressor by the blob's magic bytes (the media type only has to be a layer type;
    /// some archives label plain tars as gzip), unpacks into a temp directory under the
    /// snapshots directory, checks that the uncompressed stream hashes to `diff_id`, syncs
    /// and renames it into place. On any error the temp directory is removed; a crash leaves
    /// only a temp directory, removed by the next [`Snapshots::open`] or [`Snapshots::gc`].
    pub fn unpack(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        media_type: &str,
        blob: impl Read,
        layer_name: &str,
    ) -> Result<(), SnapshotError> {
        if self.has(chain_id) {
            return Ok(());
        }
        let declared =
            unpack::compression_for(media_type).ok_or_else(|| SnapshotError::NotALayer {
                layer: layer_name.to_string(),
                media_type: media_type.to_string(),
            })?;
        let read_error = |source| SnapshotError::Read {
            layer: layer_name.to_string(),
            source,
        };
        let mut blob = blob;
        let mut prefix = [0u8; 4];
        let n = read_prefix(&mut blob, &mut prefix).map_err(read_error)?;
        let compression = unpack::sniff(&prefix[..n]);
        if compression != declared {
            warn!(
                layer = layer_name,
                media_type,
                ?compression,
                "layer compression differs from its media type, using the content's"
            );
        }
        let unpack_error = |source| SnapshotError::Unpack {
            chain_id: chain_id.clone(),
            source,
        };
        let stream = unpack::decompress(
            io::Cursor::new(prefix[..n].to_vec()).chain(blob),
            compression,
        )
        .map_err(unpack_error)?;
        let mut hashing = HashingReader {
            inner: stream,
            hasher: Hasher::new(diff_id.algorithm()),
        };

        let tmp = self.snapshots.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            chain_id.hex()
        ));
        let fs_dir = tmp.join("fs");
        DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_error("create", &tmp))?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        DirBuilder::new()
            .mode(0o755)
            .create(&fs_dir)
            .map_err(io_error("create", &fs_dir))?;

        let stats =
            unpack::unpack_layer(&mut hashing, &fs_dir, layer_name).map_err(unpack_error)?;
        // The tar reader stops at the first end-of-archive block; the diff id covers the
        // whole stream, padding included.
        io::copy(&mut hashing, &mut io::sink()).map_err(read_error)?;
        let actual = hashing.hasher.finish();
        if &actual != diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                layer: layer_name.to_string(),
                expected: diff_id.clone(),
                actual,
            });
        }

        let tmp_dir = File::open(&tmp).map_err(io_error("open", &tmp))?;
        nix::unistd::syncfs(tmp_dir.as_raw_fd())
            .map_err(|e| io_error("sync", &tmp)(io::Error::from(e)))?;
        let target = self.snapshots.join(chain_id.hex());
        match nix::fcntl::renameat2(None, &tmp, None, &target, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => guard.disarm(),
            // Another unpack of the same layer won the race; ours is dropped.
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => return Ok(()),
            Err(e) => return Err(io_error("rename into place", &target)(io::Error::from(e))),
        }
        sync_parent(&target)?;
        info!(
            chain_id = %chain_id,
            layer = layer_name,
            entries = stats.entries,
            bytes = stats.bytes,
            whiteouts = stats.whiteouts,
            "layer unpacked"
        );
        Ok(())
    }

    /// Sets up and mounts the rootfs of `container_id`: an overlay of `layers` (chain ids,
    /// bottom-most first) under a fresh upper directory. Returns the mount point. Calling it
    /// again with the same layers returns the existing mount (or remounts it, keeping the
    /// upper, after a reboot); with other layers it fails.
    pub fn mount(&self, container_id: &str, layers: &[Digest]) -> Result<PathBuf, SnapshotError> {
        validate_container_id(container_id)?;
        if layers.is_empty() {
            return Err(SnapshotError::NoLayers {
                container: container_id.to_string(),
            });
        }
        let options = overlay_options(layers.len());
        let limit = page_size();
        if options.len() >= limit {
            return Err(SnapshotError::TooManyLayers {
                container: container_id.to_string(),
                layers: layers.len(),
                limit,
            });
        }

        let _lock = self.lock()?;
        for chain_id in layers {
            if !self.has(chain_id) {
                return Err(SnapshotError::MissingSnapshot {
                    container: container_id.to_string(),
                    chain_id: chain_id.clone(),
                });
            }
        }
        let dir = self.containers.join(container_id);
        let merged = dir.join("merged");
        let lowers_path = dir.join("lowers.json");
        let created = match fs::symlink_metadata(&dir) {
            Ok(_) => match self.read_lowers(&lowers_path)? {
                Some(lowers) if lowers == layers => {
                    if is_mount_point(&merged).map_err(io_error("stat", &merged))? {
                        return Ok(merged);
                    }
                    // Set up before (a reboot since): mount again over the same upper.
                    false
                }
                Some(_) => {
                    return Err(SnapshotError::LowersMismatch {
                        container: container_id.to_string(),
                    });
                }
                // A setup that died before recording its layers: start afresh.
                None if !is_mount_point(&merged).map_err(io_error("stat", &merged))? => {
                    fs::remove_dir_all(&dir).map_err(io_error("remove", &dir))?;
                    true
                }
                None => {
                    return Err(SnapshotError::LowersMismatch {
                        container: container_id.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_error("stat", &dir)(e)),
        };
        let result = self.prepare_and_mount(&dir, &merged, layers, &options, created);
        if result.is_err() && created {
            if let Err(e) = fs::remove_dir_all(&dir) {
                warn!(container = container_id, error = %e, "cannot remove failed rootfs");
            }
        }
        result?;
        info!(
            container = container_id,
            layers = layers.len(),
            "overlay rootfs mounted"
        );
        Ok(merged)
    }

    fn prepare_and_mount(
        &self,
        dir: &Path,
        merged: &Path,
        layers: &[Digest],
        options: &str,
        created: bool,
    ) -> Result<(), SnapshotError> {
        if created {
            DirBuilder::new()
                .mode(0o711)
                .create(dir)
                .map_err(io_error("create", dir))?;
            // The merged root takes the upper root's attributes: make it a usual `/`.
            for (name, mode) in [("upper", 0o755), ("work", 0o700), ("merged", 0o755)] {
                let path = dir.join(name);
                DirBuilder::new()
                    .mode(mode)
                    .create(&path)
                    .map_err(io_error("create", &path))?;
            }
            let json = serde_json::to_vec(layers).map_err(|source| SnapshotError::Lowers {
                path: dir.join("lowers.json"),
                source,
            })?;
            write_atomic(&dir.join("lowers.json"), &json)?;
        }
        let links = dir.join("l");
        match fs::remove_dir_all(&links) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &links)(e)),
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&links)
            .map_err(io_error("create", &links))?;
        for (i, chain_id) in layers.iter().enumerate() {
            let link = links.join(i.to_string());
            let target = Path::new("../../../snapshots")
                .join(chain_id.hex())
                .join("fs");
            std::os::unix::fs::symlink(&target, &link)
                .map_err(io_error("create symlink", &link))?;
        }
        mount_from(dir, merged, options, layers.len())
    }

    /// Unmounts the rootfs of `container_id` and removes its upper, work and mount point.
    /// Does nothing if there is none. Fails, removing nothing, if the mount is busy.
    pub fn unmount(&self, container_id: &str) -> Result<(), SnapshotError> {
        validate_container_id(container_id)?;
        let dir = self.containers.join(container_id);
        match fs::symlink_metadata(&dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("stat", &dir)(e)),
        }
        let merged = dir.join("merged");
        // Mounts may be stacked; each umount removes the top one. A process forked elsewhere
        // in this program holds copies of our open files until it execs, so EBUSY may be
        // transient: retry a few times before giving up.
        let mut busy_retries = 0;
        while is_mount_point(&merged).map_err(io_error("stat", &merged))? {
            match nix::mount::umount2(&merged, MntFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EINVAL) => break,
                Err(Errno::EBUSY) if busy_retries < UNMOUNT_BUSY_RETRIES => {
                    busy_retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * busy_retries));
                }
                Err(source) => {
                    return Err(SnapshotError::Unmount {
                        merged: merged.clone(),
                        source,
                    });
                }
            }
        }
        if is_mount_point(&merged).map_err(io_error("stat", &merged))? {
            return Err(SnapshotError::Unmount {
                merged,
                source: Errno::EBUSY,
            });
        }
        fs::remove_dir_all(&dir).map_err(io_error("remove", &dir))?;
        info!(container = container_id, "overlay rootfs removed");
        Ok(())
    }

    /// The chain ids used by containers' rootfs.
    pub fn in_use(&self) -> Result<HashSet<Digest>, SnapshotError> {
        let mut used = HashSet::new();
        let entries = fs::read_dir(&self.containers).map_err(io_error("list", &self.containers))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.containers))?;
            if let Some(lowers) = self.read_lowers(&entry.path().join("lowers.json"))? {
                used.extend(lowers);
            }
        }
        Ok(used)
    }

    /// All snapshots, sorted.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.snapshots).map_err(io_error("list", &self.snapshots))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.snapshots))?;
            if let Some(digest) = entry.file_name().to_str().and_then(digest_of_dir_name) {
                out.push(digest);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the snapshots neither in `keep` nor used by a container (and unpacks left
    /// by dead processes). Returns how many snapshots were removed. The caller's `keep`
    /// must cover every layer of the images it keeps, including images being pulled.
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<usize, SnapshotError> {
        let _lock = self.lock()?;
        let used = self.in_use()?;
        let mut removed = 0;
        for chain_id in self.list()? {
            if keep.contains(&chain_id) || used.contains(&chain_id) {
                continue;
            }
            let path = self.snapshots.join(chain_id.hex());
            // Renamed first so that a crash mid-removal leaves no half snapshot.
            let doomed = self.snapshots.join(format!(
                "{GC_PREFIX}{}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                chain_id.hex()
            ));
            fs::rename(&path, &doomed).map_err(io_error("rename for removal", &path))?;
            fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))?;
            info!(chain_id = %chain_id, "snapshot removed");
            removed += 1;
        }
        self.remove_stale_temps()?;
        Ok(removed)
    }

    /// Reads a container's `lowers.json`; `None` if it does not exist.
    fn read_lowers(&self, path: &Path) -> Result<Option<Vec<Digest>>, SnapshotError> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", path)(e)),
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| SnapshotError::Lowers {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Takes the snapshots' lock (mount and gc exclude each other). Not the image store's
    /// `<root>/lock`, which a pull holds shared from its first blob to its record: a
    /// container's mount must not wait for some other image's download.
    fn lock(&self) -> Result<Flock<File>, SnapshotError> {
        let path = self.root.join("snapshots.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_error("lock", &path)(io::Error::from(e)))
    }

    /// Removes temp directories of processes that no longer run.
    fn remove_stale_temps(&self) -> Result<(), SnapshotError> {
        let me = Pid::this();
        let entries = fs::read_dir(&self.snapshots).map_err(io_error("list", &self.snapshots))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.snapshots))?;
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_owner) else {
                continue;
            };
            if pid == me || nix::sys::signal::kill(pid, None) != Err(Errno::ESRCH) {
                continue;
            }
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_error("remove", &path))?;
            info!(path = %path.display(), "stale snapshot temp removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        s.parse().unwrap()
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = d("sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4");
        let b = d("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(chain_ids(&[]).is_empty());
        assert_eq!(chain_ids(std::slice::from_ref(&a)), vec![a.clone()]);
        let chain = chain_ids(&[a.clone(), b.clone(), a.clone()]);
        // Computed independently: printf '%s %s' "$prev" "$diff" | sha256sum
        let expected = [
            a.clone(),
            d("sha256:d587417f0a217771bf1e9d926ffed3a84610f861c354fc04ce90ba6c3f849355"),
            d("sha256:fa7d490d3f2abf7b2a801a854c9a7d724233fc1c61dc3b6794bbc3766f5e6dc7"),
        ];
        assert_eq!(chain, expected);
    }

    #[test]
    fn a_pull_in_progress_does_not_hold_up_mounts() {
        let root = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(root.path()).unwrap();
        let snaps = Snapshots::open(root.path()).unwrap();
        // what a pull holds from its first blob until its record is stored
        let _lease = store.lease().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // gc takes the same lock as mount
            let _ = tx.send(snaps.gc(&HashSet::new()).map_err(|e| e.to_string()));
        });
        let done = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            done,
            Ok(Ok(0)),
            "the snapshots' lock waited for the store's lease"
        );
    }

    #[test]
    fn options_stay_short() {
        assert_eq!(
            overlay_options(3),
            "lowerdir=l/2:l/1:l/0,upperdir=upper,workdir=work,index=off,redirect_dir=nofollow"
        );
        // overlayfs stacks at most 500 layers; their options fit a 4 KiB page.
        assert!(overlay_options(500).len() < DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn container_ids() {
        for ok in ["abc", "pod_a-1.c", "0123456789abcdef"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "../x",
            &"x".repeat(201),
        ] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dir_names() {
        let hex = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        assert_eq!(digest_of_dir_name(hex), Some(d(&format!("sha256:{hex}"))));
        assert_eq!(digest_of_dir_name(".tmp-1-2-x"), None);
        assert_eq!(digest_of_dir_name(&hex.to_uppercase()), None);
        assert_eq!(
            temp_owner(&format!(".tmp-123-4-{hex}")),
            Some(Pid::from_raw(123))
        );
        assert_eq!(
            temp_owner(&format!(".gc-9-0-{hex}")),
            Some(Pid::from_raw(9))
        );
        assert_eq!(temp_owner(hex), None);
    }
}

//! Layer unpacking: one uncompressed layer tar into an empty snapshot directory, in the form
//! overlayfs reads as a lower layer.
//!
//! The rules, in the order an entry meets them:
//!
//! - **Names are cleaned lexically.** A leading `/` and `.` components are dropped (as Docker
//!   and the tar crate do: an absolute name means the container's root, which is this
//!   layer's root), `..` is applied, and a name that climbs above the layer root is rejected.
//! - **Symlinks are never followed.** Every parent directory is resolved by libpathrs inside
//!   the destination with `RESOLVE_NO_SYMLINKS`, so an entry whose path goes through a
//!   symlink (`link/evil` after `link -> /tmp`, `up/up/x` after `up -> ..`) is rejected. A
//!   layer diff records real paths, so a well-formed layer never needs to go through one.
//!   The entry itself is then created with `*at` calls on its last name only, without
//!   following it. Symlink *entries* may point anywhere: they are resolved by the container
//!   at run time, inside its root.
//! - **Hardlinks** may only point at an earlier non-directory entry of the same layer.
//! - **Later entries replace earlier ones**, except that a directory over a directory keeps
//!   the contents and only takes the new metadata.
//! - **OCI whiteouts** become what overlayfs understands: `dir/.wh.name` a 0/0 character
//!   device `dir/name`, `dir/.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on `dir`.
//!   Whiteouts only hide content of *lower* layers (OCI image spec), so they are applied
//!   after the last entry: a whiteout for a path this layer itself creates leaves a file in
//!   place and turns a directory opaque.
//! - **Xattrs** come from PAX `SCHILY.xattr.*` records. `trusted.overlay.*` is dropped (an
//!   image must not steer overlayfs with redirects, metacopy or opaque markers of its own)
//!   and so is `security.*` except `security.capability` (SELinux, IMA and similar labels
//!   belong to the host's policy, file capabilities belong to the image).
//! - **Ownership, modes** (with setuid, setgid and sticky) **and mtimes** are restored;
//!   directory mtimes at the very end, since creating children changes them.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use oci_spec::image::MediaType;
use pathrs::flags::{OpenFlags, ResolverFlags};
use pathrs::{Handle, Root, RootRef};

/// The prefix of OCI whiteout names.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The xattr overlayfs reads to hide everything below a directory.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The PAX record prefix carrying xattrs.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Mode of directories an entry needs but the layer does not list (as Docker and containerd).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Errors of layer decompression and unpacking. Every entry error names the layer and the
/// entry as the archive spells it.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The decompressor could not start (for zstd, allocating its context).
    #[error("cannot start {compression:?} decompression")]
    Decompress {
        /// The compression asked for.
        compression: Compression,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The destination directory cannot be opened.
    #[error("layer {layer}: cannot open destination {}", path.display())]
    Destination {
        /// The layer being unpacked.
        layer: String,
        /// The destination.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The tar stream is corrupt or truncated, or reading (decompressing) it failed.
    #[error("layer {layer}: cannot read the tar stream{}", after_entry(.after.as_deref()))]
    Read {
        /// The layer being unpacked.
        layer: String,
        /// The last entry read before the failure, if any.
        after: Option<String>,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The entry's name climbs out of the layer root (`../x`, `a/../../x`).
    #[error("layer {layer}: entry {entry:?} climbs out of the layer root")]
    Escape {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
    },
    /// The entry names the layer root itself but is not a directory.
    #[error("layer {layer}: entry {entry:?} would replace the layer root with a non-directory")]
    Root {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
    },
    /// The entry's parent cannot be resolved or created inside the layer without following
    /// a symlink (or a parent is not a directory).
    #[error(
        "layer {layer}: entry {entry:?}: parent is not a directory inside the layer (symlinks are never followed)"
    )]
    Parent {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// What libpathrs said.
        #[source]
        source: pathrs::error::Error,
    },
    /// A hardlink's target climbs out of the layer root.
    #[error(
        "layer {layer}: entry {entry:?}: hardlink target {target:?} climbs out of the layer root"
    )]
    HardlinkEscape {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// The link target as the archive spells it.
        target: String,
    },
    /// A hardlink's target is not an earlier non-directory entry of this layer.
    #[error(
        "layer {layer}: entry {entry:?}: hardlink target {target:?} is not an earlier non-directory entry of this layer"
    )]
    HardlinkTarget {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// The link target as the archive spells it.
        target: String,
    },
    /// A `.wh.` name that is neither a whiteout of a plain name nor the opaque marker.
    #[error("layer {layer}: entry {entry:?} is not a valid whiteout")]
    Whiteout {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
    },
    /// An entry type a layer cannot hold (sockets, multi-volume parts, …).
    #[error("layer {layer}: entry {entry:?} has unsupported type {kind:?}")]
    UnsupportedType {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// The tar type flag.
        kind: char,
    },
    /// A header field (mode, owner, mtime, device numbers) cannot be parsed.
    #[error("layer {layer}: entry {entry:?}: invalid header field {field}")]
    Header {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// Which field.
        field: &'static str,
    },
    /// A system call on the entry failed.
    #[error("layer {layer}: entry {entry:?}: cannot {op}")]
    Write {
        /// The layer being unpacked.
        layer: String,
        /// The entry's name in the archive.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn after_entry(entry: Option<&str>) -> String {
    entry.map_or_else(String::new, |e| format!(" after entry {e:?}"))
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members, as pigz writes).
    Gzip,
    /// zstd.
    Zstd,
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries read (whiteouts included, PAX and GNU long-name records not).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteout markers (`.wh.name` and `.wh..wh..opq`) applied.
    pub whiteouts: u64,
}

/// The compression of a layer with this media type, or `None` if it is not a layer type.
/// Knows the OCI layer types (plain, gzip, zstd, and their non-distributable variants) and
/// Docker's `rootfs.diff.tar`, `rootfs.diff.tar.gzip` and `rootfs.foreign.diff.tar.gzip`.
pub fn compression_for(media_type: &str) -> Option<Compression> {
    match MediaType::from(media_type) {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Some(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Some(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Some(Compression::Zstd)
        }
        _ => match media_type {
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            _ => None,
        },
    }
}

/// The compression a blob really has, from its first bytes (4 are enough): for archives
/// whose media type lies (`docker save` tars labelled gzip, and the like).
pub fn sniff(prefix: &[u8]) -> Compression {
    match prefix {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        // A zstd frame, or a skippable frame (magic 0x184D2A50 to 0x184D2A5F) before one.
        [0x28, 0xb5, 0x2f, 0xfd, ..] | [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Wraps `r` in the decompressor for `c`. Errors in the compressed data surface later, as
/// read errors of the returned reader.
pub fn decompress<'a, R: Read + 'a>(
    r: R,
    c: Compression,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r).map_err(|source| {
            UnpackError::Decompress {
                compression: c,
                source,
            }
        })?),
    })
}

/// Extracts one uncompressed layer tar into `dest` (an empty snapshot directory) following
/// the rules in this module's documentation. `layer` names the layer in errors. On error,
/// `dest` holds a partial tree and should be removed by the caller; nothing outside it has
/// been touched.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path, layer: &str) -> Result<UnpackStats, UnpackError> {
    let mut unpacker = Unpacker::new(dest, layer)?;
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|source| unpacker.read_error(source))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            // Some writers (umoci among them) end a layer right after the last file's data,
            // without its block padding or the end-of-archive blocks. Every entry so far was
            // read whole, and the caller checks the stream against the layer's diff_id, so a
            // stream cut in transit is still caught there: treat this as the end.
            Err(e) if truncated_after_entry(&e) && unpacker.last_entry.is_some() => {
                tracing::debug!(layer, "layer tar ends without padding or trailer");
                break;
            }
            Err(source) => return Err(unpacker.read_error(source)),
        };
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
}

/// The tar crate's error for a stream that ends inside the padding after an entry
/// (it reports it as `Other` with this text).
fn truncated_after_entry(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof || e.to_string() == "unexpected EOF during skip"
}

/// A cleaned relative path: its components, none empty, `.` or `..`.
type Components = Vec<OsString>;

/// Cleans an archive name: drops a leading `/`, empty and `.` components, applies `..`
/// lexically. `None` if it climbs above the root; an empty result is the root itself.
fn clean_path(raw: &[u8]) -> Option<Components> {
    let mut out: Components = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            name => out.push(OsStr::from_bytes(name).to_os_string()),
        }
    }
    Some(out)
}

/// Joins cleaned components into a relative path.
fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// What a name beginning with `.wh.` means.
#[derive(Debug, PartialEq, Eq)]
enum WhiteoutName<'a> {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything below it.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Delete(&'a OsStr),
    /// Any other `.wh.` name.
    Invalid,
}

fn whiteout_name(name: &OsStr) -> WhiteoutName<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return WhiteoutName::Opaque;
    }
    match bytes.strip_prefix(WHITEOUT_PREFIX) {
        None => WhiteoutName::None,
        Some(b"" | b"." | b"..") => WhiteoutName::Invalid,
        Some(rest) if rest.starts_with(WHITEOUT_PREFIX) => WhiteoutName::Invalid,
        Some(rest) => WhiteoutName::Delete(OsStr::from_bytes(rest)),
    }
}

/// Whether an xattr from an image is applied (see the module documentation).
fn keep_xattr(name: &[u8]) -> bool {
    if name.starts_with(b"trusted.overlay.") {
        return false;
    }
    if name.starts_with(b"security.") {
        return name == b"security.capability";
    }
    !name.is_empty()
}

/// A numeric header field. A blank one (all NUL or space) reads as 0, as in Go's
/// archive/tar, which writes most image layers.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// Parses a PAX time (`seconds[.fraction]`, possibly negative) into a timespec.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for digit in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + i64::from(digit - b'0');
    }
    if negative {
        // -1.25 is 1.25 s before the epoch: -2 s + 0.75 s.
        if nanos == 0 {
            Some(TimeSpec::new(-secs, 0))
        } else {
            Some(TimeSpec::new(-secs - 1, 1_000_000_000 - nanos))
        }
    } else {
        Some(TimeSpec::new(secs, nanos))
    }
}

/// The metadata an entry carries.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// An operation applied after the last entry.
enum Deferred {
    /// `.wh.<name>`: a 0/0 character device at `path` unless the layer created `path`.
    Whiteout { entry: String, path: Components },
    /// `.wh..wh..opq`: `dir` is opaque.
    Opaque { entry: String, dir: Components },
}

/// The state of one `unpack_layer` call.
struct Unpacker<'l> {
    layer: &'l str,
    /// The destination, opened once; everything is resolved beneath it.
    root: Root,
    /// Non-directory entries created so far (hardlink targets must be among them).
    files: HashSet<Components>,
    /// Directory entries and their mtimes, applied at the end.
    dir_times: BTreeMap<Components, TimeSpec>,
    deferred: Vec<Deferred>,
    stats: UnpackStats,
    /// The name of the entry being or last unpacked, for errors of the stream.
    last_entry: Option<String>,
}

/// The parent directory of an entry and its last name (`.` for the root itself).
struct Target {
    parent: OwnedFd,
    name: OsString,
}

impl Target {
    fn dirfd(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }

    /// The `/proc/self/fd/N/name` path of the entry, for the xattr calls that only take a
    /// path (`lsetxattr` on symlinks and device nodes, which cannot be opened safely).
    fn proc_path(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.parent.as_raw_fd()));
        p.push(&self.name);
        p
    }
}

/// The file type at an existing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Absent,
    Dir,
    Other,
}

fn io_err(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

impl<'l> Unpacker<'l> {
    fn new(dest: &Path, layer: &'l str) -> Result<Unpacker<'l>, UnpackError> {
        let destination = |source| UnpackError::Destination {
            layer: layer.to_string(),
            path: dest.to_path_buf(),
            source,
        };
        let dir = File::open(dest).map_err(destination)?;
        if !dir.metadata().map_err(destination)?.is_dir() {
            return Err(destination(io_err(Errno::ENOTDIR)));
        }
        let root =
            Root::from_fd(OwnedFd::from(dir)).with_resolver_flags(ResolverFlags::NO_SYMLINKS);
        Ok(Unpacker {
            layer,
            root,
            files: HashSet::new(),
            dir_times: BTreeMap::new(),
            deferred: Vec::new(),
            stats: UnpackStats::default(),
            last_entry: None,
        })
    }

    fn read_error(&self, source: io::Error) -> UnpackError {
        UnpackError::Read {
            layer: self.layer.to_string(),
            after: self.last_entry.clone(),
            source,
        }
    }

    fn write_error(&self, entry: &str, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError {
        let layer = self.layer.to_string();
        let entry = entry.to_string();
        move |source| UnpackError::Write {
            layer,
            entry,
            op,
            source,
        }
    }

    fn errno_error(&self, entry: &str, op: &'static str) -> impl FnOnce(Errno) -> UnpackError {
        let f = self.write_error(entry, op);
        move |errno| f(io_err(errno))
    }

    /// Resolves (creating missing directories, mode 0755) the parent of `path`, never
    /// following a symlink. An empty `path` is the root itself, named `.` in its own
    /// directory.
    fn target(&self, entry: &str, path: &[OsString]) -> Result<Target, UnpackError> {
        let (name, parent) = match path.split_last() {
            Some((name, parent)) => (name.clone(), parent),
            None => (OsString::from("."), path),
        };
        let parent_error = |source| UnpackError::Parent {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            source,
        };
        let handle: Handle = if parent.is_empty() {
            self.root.resolve(".").map_err(parent_error)?
        } else {
            self.root
                .mkdir_all(join(parent), &Permissions::from_mode(IMPLICIT_DIR_MODE))
                .map_err(parent_error)?
        };
        Ok(Target {
            parent: OwnedFd::from(handle),
            name,
        })
    }

    /// Like [`Unpacker::target`] but only resolves: `None` if the parent does not exist.
    fn existing_target(
        &self,
        entry: &str,
        path: &[OsString],
    ) -> Result<Option<Target>, UnpackError> {
        let Some((name, parent)) = path.split_last() else {
            return Ok(None);
        };
        let resolved = if parent.is_empty() {
            self.root.resolve(".")
        } else {
            self.root.resolve(join(parent))
        };
        match resolved {
            Ok(handle) => Ok(Some(Target {
                parent: OwnedFd::from(handle),
                name: name.clone(),
            })),
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => Ok(None),
            Err(source) => Err(UnpackError::Parent {
                layer: self.layer.to_string(),
                entry: entry.to_string(),
                source,
            }),
        }
    }

    fn existing(&self, entry: &str, t: &Target) -> Result<Existing, UnpackError> {
        match stat::fstatat(
            Some(t.parent.as_raw_fd()),
            t.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Existing::Dir),
            Ok(_) => Ok(Existing::Other),
            Err(Errno::ENOENT) => Ok(Existing::Absent),
            Err(e) => Err(self.errno_error(entry, "stat the existing entry")(e)),
        }
    }

    /// Removes whatever an earlier entry left at `t` (a directory with its contents).
    fn remove(&self, entry: &str, t: &Target, existing: Existing) -> Result<(), UnpackError> {
        match existing {
            Existing::Absent => Ok(()),
            Existing::Other => unistd::unlinkat(
                Some(t.parent.as_raw_fd()),
                t.name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(self.errno_error(entry, "remove the earlier entry")),
            Existing::Dir => RootRef::from_fd(t.dirfd())
                .with_resolver_flags(ResolverFlags::NO_SYMLINKS)
                .remove_all(&t.name)
                .map_err(|e| {
                    self.write_error(entry, "remove the earlier directory")(io::Error::other(e))
                }),
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let raw = header.as_old();
        let bad = |field| UnpackError::Header {
            layer: self.layer.to_string(),
            entry: name.to_string(),
            field,
        };
        let mode = numeric(header.mode().map(u64::from), &raw.mode).ok_or_else(|| bad("mode"))?;
        let uid = numeric(header.uid(), &raw.uid).ok_or_else(|| bad("uid"))?;
        let gid = numeric(header.gid(), &raw.gid).ok_or_else(|| bad("gid"))?;
        let header_mtime = numeric(header.mtime(), &raw.mtime).ok_or_else(|| bad("mtime"))?;
        let mode = u32::try_from(mode & 0o7777).map_err(|_| bad("mode"))?;
        let uid = u32::try_from(uid).map_err(|_| bad("uid"))?;
        let gid = u32::try_from(gid).map_err(|_| bad("gid"))?;
        let mut mtime = TimeSpec::new(i64::try_from(header_mtime).map_err(|_| bad("mtime"))?, 0);
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|source| self.read_error(source))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|source| self.read_error(source))?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    mtime = parse_pax_time(ext.value_bytes()).ok_or_else(|| bad("mtime"))?;
                } else if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if keep_xattr(xattr) {
                        xattrs.push((
                            OsStr::from_bytes(xattr).to_os_string(),
                            ext.value_bytes().to_vec(),
                        ));
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs (chown clears
    /// `security.capability`), then times unless deferred.
    fn apply_meta(
        &self,
        entry: &str,
        t: &Target,
        meta: &Meta,
        symlink: bool,
        times: bool,
    ) -> Result<(), UnpackError> {
        let fd = Some(t.parent.as_raw_fd());
        let name = t.name.as_os_str();
        unistd::fchownat(
            fd,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.errno_error(entry, "set the owner"))?;
        if !symlink {
            stat::fchmodat(
                fd,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(self.errno_error(entry, "set the mode"))?;
        }
        if !meta.xattrs.is_empty() {
            let path = t.proc_path();
            for (key, value) in &meta.xattrs {
                match xattr::set(&path, key, value) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        tracing::warn!(
                            layer = self.layer,
                            entry,
                            xattr = %key.to_string_lossy(),
                            "filesystem does not support this xattr, skipped"
                        );
                    }
                    Err(e) => return Err(self.write_error(entry, "set an xattr")(e)),
                }
            }
        }
        if times {
            stat::utimensat(
                fd,
                name,
                &meta.mtime,
                &meta.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(self.errno_error(entry, "set the mtime"))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        self.last_entry = Some(name.clone());
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        let path = clean_path(&raw_name).ok_or_else(|| UnpackError::Escape {
            layer: self.layer.to_string(),
            entry: name.clone(),
        })?;

        if let Some((last, parent)) = path.split_last() {
            match whiteout_name(last) {
                WhiteoutName::None => {}
                WhiteoutName::Opaque => {
                    self.deferred.push(Deferred::Opaque {
                        entry: name,
                        dir: parent.to_vec(),
                    });
                    return Ok(());
                }
                WhiteoutName::Delete(hidden) => {
                    let mut hidden_path = parent.to_vec();
                    hidden_path.push(hidden.to_os_string());
                    self.deferred.push(Deferred::Whiteout {
                        entry: name,
                        path: hidden_path,
                    });
                    return Ok(());
                }
                WhiteoutName::Invalid => {
                    return Err(UnpackError::Whiteout {
                        layer: self.layer.to_string(),
                        entry: name,
                    });
                }
            }
        }

        let trailing_slash = raw_name.ends_with(b"/");
        let meta = self.meta(entry, &name)?;
        use tar::EntryType as T;
        let is_dir =
            kind == T::Directory || (trailing_slash && matches!(kind, T::Regular | T::Continuous));
        if path.is_empty() && !is_dir {
            return Err(UnpackError::Root {
                layer: self.layer.to_string(),
                entry: name,
            });
        }

        if is_dir {
            return self.directory(&name, path, &meta);
        }
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => self.regular(entry, &name, path, &meta),
            T::Symlink => self.symlink(entry, &name, path, &meta),
            T::Link => self.hardlink(entry, &name, path),
            T::Char | T::Block | T::Fifo => self.special(entry, &name, path, &meta),
            other => Err(UnpackError::UnsupportedType {
                layer: self.layer.to_string(),
                entry: name,
                kind: char::from(other.as_byte()),
            }),
        }
    }

    /// Resolves the parent of a non-directory entry and clears its name.
    fn replace(&mut self, entry: &str, path: &[OsString]) -> Result<Target, UnpackError> {
        let t = self.target(entry, path)?;
        let existing = self.existing(entry, &t)?;
        self.remove(entry, &t, existing)?;
        if existing == Existing::Dir {
            self.forget_subtree(path);
        }
        Ok(t)
    }

    /// Forgets what was recorded below a directory that a later entry replaced: its
    /// files (no longer hardlink targets), its directories' mtimes, and whiteouts below
    /// it (the replacing entry hides the lower layers' directory anyway).
    fn forget_subtree(&mut self, dir: &[OsString]) {
        self.files.retain(|p| !p.starts_with(dir));
        self.dir_times.retain(|p, _| !p.starts_with(dir));
        self.deferred.retain(|op| match op {
            Deferred::Whiteout { path, .. } => !path.starts_with(dir),
            Deferred::Opaque { dir: d, .. } => !d.starts_with(dir),
        });
    }

    /// Records a non-directory entry (a possible hardlink target).
    fn created_file(&mut self, path: Components) {
        self.dir_times.remove(&path);
        self.files.insert(path);
    }

    fn directory(&mut self, entry: &str, path: Components, meta: &Meta) -> Result<(), UnpackError> {
        let t = self.target(entry, &path)?;
        if !path.is_empty() {
            match self.existing(entry, &t)? {
                Existing::Dir => {}
                existing => {
                    self.remove(entry, &t, existing)?;
                    stat::mkdirat(
                        Some(t.parent.as_raw_fd()),
                        t.name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(self.errno_error(entry, "create the directory"))?;
                }
            }
        }
        self.apply_meta(entry, &t, meta, false, false)?;
        self.files.remove(&path);
        self.dir_times.insert(path, meta.mtime);
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        path: Components,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let t = self.replace(name, &path)?;
        let mut file = RootRef::from_fd(t.dirfd())
            .with_resolver_flags(ResolverFlags::NO_SYMLINKS)
            .create_file(
                &t.name,
                OpenFlags::O_WRONLY
                    | OpenFlags::O_EXCL
                    | OpenFlags::O_NOFOLLOW
                    | OpenFlags::O_CLOEXEC,
                &Permissions::from_mode(0o600),
            )
            .map_err(|e| self.write_error(name, "create the file")(io::Error::other(e)))?;
        // A read error here is the archive's (truncated or corrupt stream), a write error
        // the destination's; io::copy does not say which, so name both.
        let written = io::copy(entry, &mut file)
            .map_err(self.write_error(name, "read or write the file content"))?;
        drop(file);
        // The entry reader ends early, without an error, when the stream is truncated.
        if entry.header().entry_type() != tar::EntryType::GNUSparse && written != entry.size() {
            return Err(self.write_error(name, "read the file content")(
                io::Error::from(io::ErrorKind::UnexpectedEof),
            ));
        }
        self.stats.bytes += written;
        self.apply_meta(name, &t, meta, false, true)?;
        self.created_file(path);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        path: Components,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let t = self.replace(name, &path)?;
        unistd::symlinkat(
            OsStr::from_bytes(&target),
            Some(t.parent.as_raw_fd()),
            t.name.as_os_str(),
        )
        .map_err(self.errno_error(name, "create the symlink"))?;
        self.apply_meta(name, &t, meta, true, true)?;
        self.created_file(path);
        Ok(())
    }

    /// Character and block devices, fifos.
    fn special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        path: Components,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let sflag = match header.entry_type() {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let dev = if sflag == SFlag::S_IFIFO {
            0
        } else {
            let (raw_major, raw_minor) = match (header.as_ustar(), header.as_gnu()) {
                (Some(u), _) => (Some(&u.dev_major), Some(&u.dev_minor)),
                (None, Some(g)) => (Some(&g.dev_major), Some(&g.dev_minor)),
                (None, None) => (None, None),
            };
            let number = |parsed: io::Result<Option<u32>>, raw: Option<&[u8; 8]>, field| {
                let parsed = parsed.map(|v| u64::from(v.unwrap_or(0)));
                numeric(parsed, raw.map_or(&[][..], |r| &r[..])).ok_or_else(|| {
                    UnpackError::Header {
                        layer: self.layer.to_string(),
                        entry: name.to_string(),
                        field,
                    }
                })
            };
            let major = number(header.device_major(), raw_major, "device major")?;
            let minor = number(header.device_minor(), raw_minor, "device minor")?;
            stat::makedev(major, minor)
        };
        let t = self.replace(name, &path)?;
        stat::mknodat(
            Some(t.parent.as_raw_fd()),
            t.name.as_os_str(),
            sflag,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(self.errno_error(name, "create the device node"))?;
        self.apply_meta(name, &t, meta, false, true)?;
        self.created_file(path);
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        path: Components,
    ) -> Result<(), UnpackError> {
        let raw_target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let target_name = String::from_utf8_lossy(&raw_target).into_owned();
        let target = clean_path(&raw_target).ok_or_else(|| UnpackError::HardlinkEscape {
            layer: self.layer.to_string(),
            entry: name.to_string(),
            target: target_name.clone(),
        })?;
        let not_an_entry = || UnpackError::HardlinkTarget {
            layer: self.layer.to_string(),
            entry: name.to_string(),
            target: target_name.clone(),
        };
        if !self.files.contains(&target) {
            return Err(not_an_entry());
        }
        if target == path {
            return Ok(());
        }
        let Some(from) = self.existing_target(name, &target)? else {
            return Err(not_an_entry());
        };
        let t = self.replace(name, &path)?;
        unistd::linkat(
            Some(from.parent.as_raw_fd()),
            from.name.as_os_str(),
            Some(t.parent.as_raw_fd()),
            t.name.as_os_str(),
            AtFlags::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT | Errno::EPERM => not_an_entry(),
            e => self.errno_error(name, "create the hardlink")(e),
        })?;
        self.created_file(path);
        Ok(())
    }

    /// Applies whiteouts and opaque markers, then directory mtimes.
    fn finish(mut self) -> Result<UnpackStats, UnpackError> {
        for op in std::mem::take(&mut self.deferred) {
            self.stats.whiteouts += 1;
            match op {
                Deferred::Opaque { entry, dir } => {
                    let t = if dir.is_empty() {
                        self.target(&entry, &dir)?
                    } else {
                        let t = self.target(&entry, &dir)?;
                        match self.existing(&entry, &t)? {
                            Existing::Dir => {}
                            Existing::Absent => {
                                stat::mkdirat(
                                    Some(t.parent.as_raw_fd()),
                                    t.name.as_os_str(),
                                    Mode::from_bits_truncate(IMPLICIT_DIR_MODE),
                                )
                                .map_err(self.errno_error(&entry, "create the opaque directory"))?;
                            }
                            Existing::Other => {
                                return Err(self.errno_error(&entry, "mark the directory opaque")(
                                    Errno::ENOTDIR,
                                ));
                            }
                        }
                        t
                    };
                    xattr::set(t.proc_path(), OPAQUE_XATTR, b"y")
                        .map_err(self.write_error(&entry, "set trusted.overlay.opaque"))?;
                }
                Deferred::Whiteout { entry, path } => {
                    let t = self.target(&entry, &path)?;
                    match self.existing(&entry, &t)? {
                        // The layer itself creates this file: the whiteout only hid lower ones.
                        Existing::Other => {}
                        // The layer itself creates this directory: only its own content shows.
                        Existing::Dir => {
                            xattr::set(t.proc_path(), OPAQUE_XATTR, b"y")
                                .map_err(self.write_error(&entry, "set trusted.overlay.opaque"))?;
                        }
                        Existing::Absent => {
                            stat::mknodat(
                                Some(t.parent.as_raw_fd()),
                                t.name.as_os_str(),
                                SFlag::S_IFCHR,
                                Mode::empty(),
                                stat::makedev(0, 0),
                            )
                            .map_err(self.errno_error(&entry, "create the whiteout device"))?;
                        }
                    }
                }
            }
        }
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let entry = join(&path).display().to_string();
            let t = if path.is_empty() {
                Some(self.target(&entry, &path)?)
            } else {
                self.existing_target(&entry, &path)?
            };
            let Some(t) = t else { continue };
            match stat::utimensat(
                Some(t.parent.as_raw_fd()),
                t.name.as_os_str(),
                &mtime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(self.errno_error(&entry, "set the directory mtime")(e)),
            }
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(parts: &[&str]) -> Components {
        parts.iter().map(OsString::from).collect()
    }

    #[test]
    fn clean_paths() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("a/b", Some(&["a", "b"])),
            ("./a//b/", Some(&["a", "b"])),
            ("/abs/x", Some(&["abs", "x"])),
            ("a/../b", Some(&["b"])),
            (".", Some(&[])),
            ("./", Some(&[])),
            ("/", Some(&[])),
            ("..", None),
            ("../escape", None),
            ("a/../../x", None),
            ("/../x", None),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_path(raw.as_bytes()), want.map(comps), "{raw}");
        }
    }

    #[test]
    fn whiteout_names() {
        let cases: &[(&str, WhiteoutName<'_>)] = &[
            ("file", WhiteoutName::None),
            (".whfile", WhiteoutName::None),
            (".wh..wh..opq", WhiteoutName::Opaque),
            (".wh.file", WhiteoutName::Delete(OsStr::new("file"))),
            (".wh..hidden", WhiteoutName::Delete(OsStr::new(".hidden"))),
            (".wh.", WhiteoutName::Invalid),
            (".wh..", WhiteoutName::Invalid),
            (".wh...", WhiteoutName::Invalid),
            (".wh..wh.plnk", WhiteoutName::Invalid),
            (".wh..wh..opq2", WhiteoutName::Invalid),
        ];
        for (name, want) in cases {
            assert_eq!(&whiteout_name(OsStr::new(name)), want, "{name}");
        }
    }

    #[test]
    fn media_types() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.oci.image.manifest.v1+json", None),
            ("application/vnd.docker.container.image.v1+json", None),
            ("", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(compression_for(media_type), want, "{media_type}");
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0x00]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(sniff(&[0x5f, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
        assert_eq!(sniff(&[0x28, 0xb5]), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }

    #[test]
    fn xattr_policy() {
        for keep in [
            "user.foo",
            "trusted.foo",
            "security.capability",
            "system.posix_acl_access",
        ] {
            assert!(keep_xattr(keep.as_bytes()), "{keep}");
        }
        for drop in [
            "trusted.overlay.opaque",
            "trusted.overlay.redirect",
            "trusted.overlay.metacopy",
            "security.selinux",
            "security.ima",
            "",
        ] {
            assert!(!keep_xattr(drop.as_bytes()), "{drop}");
        }
    }

    #[test]
    fn pax_times() {
        let cases = [
            ("1700000000", Some((1_700_000_000, 0))),
            ("1700000000.5", Some((1_700_000_000, 500_000_000))),
            ("1.123456789123", Some((1, 123_456_789))),
            ("-1.25", Some((-2, 750_000_000))),
            ("-3", Some((-3, 0))),
            ("", None),
            ("abc", None),
            ("1.x", None),
            (".5", None),
        ];
        for (raw, want) in cases {
            let got = parse_pax_time(raw.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn decompress_round_trip() {
        use std::io::Write;
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 0).unwrap();
        for (blob, c) in [
            (&data[..], Compression::None),
            (&gz[..], Compression::Gzip),
            (&zst[..], Compression::Zstd),
        ] {
            assert_eq!(sniff(blob), c);
            let mut out = Vec::new();
            decompress(blob, c).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}

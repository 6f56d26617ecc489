//! The container's root filesystem: mounts, devices, `pivot_root`, masked and read-only paths.
//!
//! Everything here runs in the container's init process, which is already in its new mount
//! namespace (and possibly new user, cgroup and pid namespaces). The work is split in three
//! steps around the `createContainer` hooks and the sysctls, as runc does:
//!
//! 1. [`prepare_rootfs`]: root propagation, the rootfs bound onto itself, every spec mount in
//!    order, the devices and the `/dev` symlinks.
//! 2. [`pivot_rootfs`]: `pivot_root(".", ".")` into the rootfs (or `MS_MOVE` + `chroot` with
//!    `--no-pivot`).
//! 3. [`finish_rootfs`]: read-only paths, masked paths, read-only root, final propagation.
//!
//! Every path inside the rootfs is resolved with libpathrs, so a symlink planted in the image
//! can never send a mount or a device node to the host: mounts are made onto
//! `/proc/self/fd/<fd>` of the resolved `O_PATH` handle, never onto a joined string path. After a
//! mount the destination is resolved again, because the old handle still points below the new
//! mount.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::Permissions;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statvfs::FsFlags;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Mount, Spec};
use pathrs::{Handle, InodeType};
use tracing::{debug, info_span};

/// Where the host's (or, after the pivot, the container's) cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Mount table of the calling thread's mount namespace (`self` would be the main thread's,
/// which is not the same if a multi-threaded caller unshared the namespace in one thread).
const PROC_SELF_MOUNTINFO: &str = "/proc/thread-self/mountinfo";
/// Cgroup membership of the calling thread.
const PROC_SELF_CGROUP: &str = "/proc/thread-self/cgroup";
/// The cgroup v1 controllers the kernel knows.
const PROC_CGROUPS: &str = "/proc/cgroups";

/// Errors of root filesystem setup; every variant names the path/mount it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount option skiff knows but does not implement.
    #[error("unsupported mount option {option} for the mount on {destination}")]
    UnsupportedOption {
        /// Destination of the mount inside the container.
        destination: PathBuf,
        /// The option as written in the spec.
        option: String,
    },
    /// `linux.rootfsPropagation` is not one of the propagation names.
    #[error("invalid rootfs propagation {value:?}")]
    InvalidPropagation {
        /// The value from the spec.
        value: String,
    },
    /// A spec mount that is not a bind mount has no type.
    #[error("mount on {destination} has no type")]
    MissingType {
        /// Destination of the mount inside the container.
        destination: PathBuf,
    },
    /// A bind mount has no source.
    #[error("bind mount on {destination} has no source")]
    MissingSource {
        /// Destination of the mount inside the container.
        destination: PathBuf,
    },
    /// The source of a bind mount cannot be inspected.
    #[error("cannot stat the source {path} of the bind mount on {destination}")]
    BindSource {
        /// Host path of the source.
        path: PathBuf,
        /// Destination of the mount inside the container.
        destination: PathBuf,
        /// Why stat failed.
        source: std::io::Error,
    },
    /// A directory cannot be opened as a libpathrs root.
    #[error("cannot open {path} as a root for safe path resolution")]
    OpenRoot {
        /// The directory.
        path: PathBuf,
        /// Why libpathrs failed.
        source: pathrs::error::Error,
    },
    /// A path inside the root cannot be resolved or created.
    #[error("cannot {action} {path} inside {root}")]
    InRoot {
        /// What was attempted: "resolve", "create directory", "create file", ...
        action: &'static str,
        /// The root directory (the rootfs before the pivot, `/` after).
        root: PathBuf,
        /// The path inside the root.
        path: PathBuf,
        /// Why libpathrs failed.
        source: pathrs::error::Error,
    },
    /// A mount(2) call for a mount failed.
    #[error("{syscall} failed for the {fstype} mount of {mount_source} on {destination}")]
    Mount {
        /// The failing call, e.g. "mount(2)", "mount(2) remount", "mount(2) propagation".
        syscall: &'static str,
        /// Destination of the mount inside the container.
        destination: PathBuf,
        /// Filesystem type ("bind" for bind mounts).
        fstype: String,
        /// Source of the mount.
        mount_source: String,
        /// The errno.
        source: Errno,
    },
    /// Any other system call on a path failed.
    #[error("{syscall} failed on {path}")]
    Syscall {
        /// The failing call.
        syscall: &'static str,
        /// The path it was called on.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// A directory cannot be opened (the old and new root around pivot_root).
    #[error("cannot open {path}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why opening failed.
        source: std::io::Error,
    },
    /// A host file (mountinfo, cgroup membership) cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A device in `linux.devices` cannot be created as given.
    #[error("invalid device {path}: {reason}")]
    InvalidDevice {
        /// Path of the device inside the container.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The process's own cgroup of a hierarchy was not found in /proc/self/cgroup.
    #[error("no entry for the cgroup hierarchy {hierarchy} in {path}")]
    CgroupMembership {
        /// The hierarchy's controllers ("cpu,cpuacct", "name=systemd", "" for cgroup2).
        hierarchy: String,
        /// The file that was searched.
        path: PathBuf,
    },
    /// No procfs at /proc after the pivot, but masked/read-only paths need one (the spec has
    /// no proc mount).
    #[error("no procfs mounted at {path} in the container, needed for masked and read-only paths")]
    ProcNotMounted {
        /// Where procfs was expected.
        path: PathBuf,
    },
    /// The container's /dev/null, used to mask files, is not the null device.
    #[error("{path} is not the null device (char 1:3)")]
    NotDevNull {
        /// The path that was checked.
        path: PathBuf,
    },
}

/// What rootfs setup needs besides the spec.
#[derive(Debug, Clone, Copy)]
pub struct RootfsConfig<'a> {
    /// The container's OCI spec.
    pub spec: &'a Spec,
    /// Absolute, canonical path of the root filesystem on the host.
    pub rootfs: &'a Path,
    /// runc's --no-pivot: MS_MOVE the rootfs onto / and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container got a new user namespace: device nodes cannot be created with mknod,
    /// bind-mount them from the host instead.
    pub in_user_ns: bool,
    /// The container got a new cgroup namespace (cgroup mounts can then be done natively).
    pub in_cgroup_ns: bool,
}

/// Step 1, before pivot_root: rootfs propagation, bind rootfs onto itself, every spec mount
/// in order, default devices, spec devices, /dev symlinks.
pub fn prepare_rootfs(cfg: &RootfsConfig) -> Result<(), RootfsError> {
    let _span = info_span!("prepare_rootfs", rootfs = %cfg.rootfs.display()).entered();
    // Validated before anything is mounted.
    let devices = devices_to_create(cfg.spec)?;

    // Nothing we mount may propagate back to the host.
    let propagation = rootfs_propagation(cfg.spec)?.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    set_propagation(Path::new("/"), propagation)?;
    make_parent_mount_private(cfg.rootfs)?;
    // The rootfs must be a mount point for pivot_root; the libpathrs root is opened only
    // afterwards so that its handle refers to the new mount, not the directory below it.
    sys_mount(
        Some(cfg.rootfs),
        cfg.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|source| RootfsError::Mount {
        syscall: "mount(2)",
        destination: cfg.rootfs.to_path_buf(),
        fstype: "bind".into(),
        mount_source: cfg.rootfs.display().to_string(),
        source,
    })?;

    let ctx = Ctx::open(cfg.rootfs, cfg.in_user_ns, cfg.in_cgroup_ns)?;
    let new_netns = has_new_namespace(cfg.spec, LinuxNamespaceType::Network);
    let mounts = cfg.spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        ctx.mount_entry(m, new_netns)?;
    }

    // Devices go into /dev unless /dev is the host's /dev bound in.
    let dev_is_bind = mounts
        .iter()
        .any(|m| clean_destination(m.destination()) == Path::new("/dev") && is_bind_mount(m));
    if dev_is_bind {
        debug!("/dev is a bind mount, devices are not created");
        return Ok(());
    }
    {
        let _umask = UmaskGuard::set(Mode::empty());
        for dev in &devices {
            ctx.create_device(dev)?;
        }
    }
    ctx.create_dev_symlinks()?;
    let devpts = mounts.iter().any(|m| {
        clean_destination(m.destination()) == Path::new("/dev/pts")
            && m.typ().as_deref() == Some("devpts")
    });
    if devpts {
        ctx.create_ptmx_symlink()?;
    }
    Ok(())
}

/// Step 2: pivot_root into the rootfs (or MS_MOVE + chroot with no_pivot), detach the old
/// root, chdir("/").
pub fn pivot_rootfs(cfg: &RootfsConfig) -> Result<(), RootfsError> {
    let _span = info_span!("pivot_rootfs", rootfs = %cfg.rootfs.display(), no_pivot = cfg.no_pivot)
        .entered();
    nix::unistd::chdir(cfg.rootfs).map_err(|source| syscall_err("chdir(2)", cfg.rootfs, source))?;
    if cfg.no_pivot {
        move_root(cfg.rootfs)
    } else {
        pivot_root_dot(cfg.rootfs)
    }
}

/// Step 3, after pivot (and after the caller wrote sysctls): readonlyPaths, maskedPaths,
/// read-only root (root.readonly), final rootfs propagation.
pub fn finish_rootfs(cfg: &RootfsConfig) -> Result<(), RootfsError> {
    let _span = info_span!("finish_rootfs").entered();
    let linux = cfg.spec.linux().as_ref();
    let readonly = linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default();
    let masked = linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default();
    // A read-only /dev was mounted read-write so that devices could be created in it.
    let mounts = cfg.spec.mounts().as_deref().unwrap_or_default();
    let ro_dev = mounts
        .iter()
        .find(|m| clean_destination(m.destination()) == Path::new("/dev"))
        .map(|m| {
            (
                MountDesc::of(m),
                parse_mount_options(m.options().as_deref().unwrap_or_default()),
            )
        })
        .filter(|(_, opts)| opts.flags.contains(MsFlags::MS_RDONLY));

    if !readonly.is_empty() || !masked.is_empty() || ro_dev.is_some() {
        // Mounts are made through /proc/self/fd, and libpathrs needs a procfs as well.
        ensure_proc_mounted()?;
        let ctx = Ctx::open(Path::new("/"), cfg.in_user_ns, cfg.in_cgroup_ns)?;
        for path in readonly {
            ctx.readonly_path(Path::new(path))?;
        }
        let mut dev_null = None;
        for path in masked {
            ctx.mask_path(Path::new(path), &mut dev_null)?;
        }
        if let Some((desc, opts)) = &ro_dev {
            ctx.remount_bind(Path::new("/dev"), opts.flags, desc)?;
        }
    }

    if cfg.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        readonly_root()?;
    }
    if let Some(propagation) = rootfs_propagation(cfg.spec)? {
        set_propagation(Path::new("/"), propagation)?;
    }
    Ok(())
}

/// Fails unless a procfs is mounted at /proc (in the container, after the pivot).
fn ensure_proc_mounted() -> Result<(), RootfsError> {
    let proc = Path::new("/proc");
    match nix::sys::statfs::statfs(proc) {
        Ok(st) if st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC => Ok(()),
        Ok(_) | Err(Errno::ENOENT) => Err(RootfsError::ProcNotMounted {
            path: proc.to_path_buf(),
        }),
        Err(e) => Err(syscall_err("statfs(2)", proc, e)),
    }
}

/// Mount options of a spec mount, split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags of the mount(2) call itself (`MS_RDONLY`, `MS_NOSUID`, `MS_BIND`, ...).
    pub flags: MsFlags,
    /// Propagation changes, applied in order, each by its own mount(2) call after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755,size=65536k`), passed as mount(2) data.
    pub data: String,
    /// Options skiff recognises but does not implement (recursive `r*` attributes, `idmap`,
    /// `tmpcopyup`); a mount that has any is refused.
    pub unsupported: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
            unsupported: Vec::new(),
        }
    }
}

/// runc's option table: name, whether the option clears the flag, the flag.
const FLAG_OPTIONS: &[(&str, bool, MsFlags)] = &[
    ("acl", false, MsFlags::MS_POSIXACL),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("iversion", false, MsFlags::MS_I_VERSION),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("loud", true, MsFlags::MS_SILENT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noacl", true, MsFlags::MS_POSIXACL),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("noiversion", true, MsFlags::MS_I_VERSION),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("nosymfollow", false, MS_NOSYMFOLLOW),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("silent", false, MsFlags::MS_SILENT),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("symfollow", true, MS_NOSYMFOLLOW),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);

/// Propagation options and their mount(2) flags.
const PROPAGATION_OPTIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Options runc implements with mount_setattr(2), id-mapped mounts or copy-up.
const UNSUPPORTED_OPTIONS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
    "idmap",
    "ridmap",
    "tmpcopyup",
];

/// Splits spec mount options into mount(2) flags, propagation flags and the data string,
/// with runc's table: later options win (`ro` then `rw` is read-write), unknown options
/// (`mode=755`, `newinstance`) go to the data string in their order.
pub fn parse_mount_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_ref();
        if let Some((_, clear, flag)) = FLAG_OPTIONS.iter().find(|(name, _, _)| *name == opt) {
            if *clear {
                out.flags.remove(*flag);
            } else {
                out.flags.insert(*flag);
            }
        } else if let Some((_, flag)) = PROPAGATION_OPTIONS.iter().find(|(name, _)| *name == opt) {
            out.propagation.push(*flag);
        } else if UNSUPPORTED_OPTIONS.contains(&opt) {
            out.unsupported.push(opt.to_string());
        } else if !opt.is_empty() {
            data.push(opt);
        }
    }
    out.data = data.join(",");
    out
}

/// Parses a propagation name (`linux.rootfsPropagation`: private, rslave, ...).
pub fn parse_propagation(value: &str) -> Result<MsFlags, RootfsError> {
    PROPAGATION_OPTIONS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, flag)| *flag)
        .ok_or_else(|| RootfsError::InvalidPropagation {
            value: value.to_string(),
        })
}

/// The spec's `linux.rootfsPropagation`, if set and not empty.
fn rootfs_propagation(spec: &Spec) -> Result<Option<MsFlags>, RootfsError> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(None),
        Some(value) => parse_propagation(value).map(Some),
    }
}

/// Whether the spec asks for a new (not joined) namespace of this type.
fn has_new_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| nss.iter().any(|ns| ns.typ() == typ && ns.path().is_none()))
}

/// The destination as an absolute path (runc treats relative destinations as relative to /).
fn clean_destination(dest: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether a spec mount is a bind mount (type "bind" or a bind/rbind option).
fn is_bind_mount(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "bind" || o == "rbind")
}

/// Description of a mount for error messages.
#[derive(Debug, Clone)]
struct MountDesc {
    destination: PathBuf,
    fstype: String,
    source: String,
}

impl MountDesc {
    fn of(m: &Mount) -> Self {
        let fstype = if is_bind_mount(m) {
            "bind".to_string()
        } else {
            m.typ().clone().unwrap_or_default()
        };
        Self {
            destination: clean_destination(m.destination()),
            source: m
                .source()
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| fstype.clone()),
            fstype,
        }
    }

    fn new(destination: &Path, fstype: &str, source: &str) -> Self {
        Self {
            destination: destination.to_path_buf(),
            fstype: fstype.to_string(),
            source: source.to_string(),
        }
    }

    fn err(&self, syscall: &'static str, source: Errno) -> RootfsError {
        RootfsError::Mount {
            syscall,
            destination: self.destination.clone(),
            fstype: self.fstype.clone(),
            mount_source: self.source.clone(),
            source,
        }
    }
}

fn syscall_err(syscall: &'static str, path: &Path, source: Errno) -> RootfsError {
    RootfsError::Syscall {
        syscall,
        path: path.to_path_buf(),
        source,
    }
}

/// The errno behind a libpathrs error, if it came from a system call.
fn pathrs_errno(err: &pathrs::error::Error) -> Option<Errno> {
    match err.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => Some(Errno::from_raw(errno)),
        _ => None,
    }
}

/// mount(2) with optional source, type and data.
fn sys_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Errno> {
    nix::mount::mount(source, target, fstype, flags, data)
}

/// The magic link through which a resolved handle is used as a mount(2) path.
fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Changes the propagation of the mount at `path` (a host path or `/`).
fn set_propagation(path: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    sys_mount(None, path, None, flags, None).map_err(|source| RootfsError::Mount {
        syscall: "mount(2) propagation",
        destination: path.to_path_buf(),
        fstype: "propagation".into(),
        mount_source: format!("{:#x}", flags.bits()),
        source,
    })
}

/// The per-mount flags of an existing mount that a bind remount must repeat: the kernel
/// refuses (EPERM) to clear nosuid/nodev/noexec/atime flags that are locked in a user
/// namespace, and keeping them is what the mount already does anyway. Atime flags are only
/// carried over when the requested flags choose none.
pub fn locked_flags(current: FsFlags, requested: MsFlags) -> MsFlags {
    let mut out = MsFlags::empty();
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if current.contains(st) {
            out |= ms;
        }
    }
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
    if !requested.intersects(atime) {
        for (st, ms) in [
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        ] {
            if current.contains(st) {
                out |= ms;
            }
        }
    }
    out
}

/// Sets the umask and restores the previous one when dropped.
struct UmaskGuard(Mode);

impl UmaskGuard {
    fn set(mode: Mode) -> Self {
        Self(nix::sys::stat::umask(mode))
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}

/// A libpathrs root plus what the mount helpers need to know.
struct Ctx {
    root: pathrs::Root,
    root_path: PathBuf,
    in_user_ns: bool,
    in_cgroup_ns: bool,
}

impl Ctx {
    fn open(root_path: &Path, in_user_ns: bool, in_cgroup_ns: bool) -> Result<Self, RootfsError> {
        let root = pathrs::Root::open(root_path).map_err(|source| RootfsError::OpenRoot {
            path: root_path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root,
            root_path: root_path.to_path_buf(),
            in_user_ns,
            in_cgroup_ns,
        })
    }

    fn in_root_err(
        &self,
        action: &'static str,
        path: &Path,
        source: pathrs::error::Error,
    ) -> RootfsError {
        RootfsError::InRoot {
            action,
            root: self.root_path.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Resolves `path` (symlinks followed, never leaving the root).
    fn resolve(&self, path: &Path) -> Result<Handle, RootfsError> {
        match self.resolve_in_kernel(path) {
            Some(Ok(h)) => Ok(h),
            _ => self
                .root
                .resolve(path)
                .map_err(|e| self.in_root_err("resolve", path, e)),
        }
    }

    /// Resolves `path`, `None` when it (or a component) does not exist.
    fn resolve_optional(&self, path: &Path) -> Result<Option<Handle>, RootfsError> {
        match self.resolve_in_kernel(path) {
            Some(Ok(h)) => return Ok(Some(h)),
            Some(Err(Errno::ENOENT)) => return Ok(None),
            _ => {}
        }
        match self.root.resolve(path) {
            Ok(h) => Ok(Some(h)),
            Err(e) if pathrs_errno(&e) == Some(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.in_root_err("resolve", path, e)),
        }
    }

    /// The resolution libpathrs itself makes on kernels with `openat2` (5.6+): one
    /// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so symlinks and `..`
    /// stay inside the root. Done here because libpathrs describes each failure, a
    /// missing path included, with the root's path read back through a checked procfs
    /// (about ten system calls), and a container start asks for a dozen paths that are
    /// not there yet. `None`: ask libpathrs (no `openat2`, or `EAGAIN` from a concurrent
    /// rename, which it retries).
    fn resolve_in_kernel(&self, path: &Path) -> Option<Result<Handle, Errno>> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match nix::fcntl::openat2(self.root.as_fd().as_raw_fd(), path, how) {
            Ok(fd) => Some(Ok(Handle::from_fd(crate::sys::owned_fd(fd)))),
            Err(Errno::ENOSYS | Errno::EAGAIN | Errno::E2BIG | Errno::EINVAL) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Creates the directory `path` and its parents (mode 0755) and returns a handle to it.
    ///
    /// libpathrs' `mkdir_all` checks its procfs handle on every component (≈ 70 system
    /// calls a directory), so the common cases go first: the directory exists (one
    /// `openat2` resolution), or only its last component is missing (the parent resolved,
    /// then `mkdirat` and a no-follow `openat` of that one name relative to it). Anything
    /// else (a missing parent, something that is not a directory, a race) is left to
    /// `mkdir_all`, which reports it.
    fn ensure_dir(&self, path: &Path) -> Result<Handle, RootfsError> {
        if let Some(h) = self.existing_or_new_leaf_dir(path) {
            return Ok(h);
        }
        self.root
            .mkdir_all(path, &Permissions::from_mode(0o755))
            .map_err(|e| self.in_root_err("create directory", path, e))
    }

    /// The fast paths of [`Ctx::ensure_dir`]; `None` means "ask `mkdir_all`".
    fn existing_or_new_leaf_dir(&self, path: &Path) -> Option<Handle> {
        use std::path::Component;
        let is_dir = |fd: &Handle| {
            nix::sys::stat::fstat(fd.as_fd().as_raw_fd()).is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
            })
        };
        match self.resolve_optional(path) {
            Ok(Some(h)) => return is_dir(&h).then_some(h),
            Ok(None) => {}
            Err(_) => return None,
        }
        let Some(Component::Normal(leaf)) = path.components().next_back() else {
            return None;
        };
        let parent = self.resolve(path.parent()?).ok()?;
        if !is_dir(&parent) {
            return None;
        }
        let dirfd = Some(parent.as_fd().as_raw_fd());
        nix::sys::stat::mkdirat(dirfd, leaf, Mode::from_bits_truncate(0o755)).ok()?;
        // O_NOFOLLOW with O_DIRECTORY: a symlink put there meanwhile fails with ENOTDIR
        let fd = nix::fcntl::openat(
            dirfd,
            leaf,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Some(Handle::from_fd(crate::sys::owned_fd(fd)))
    }

    /// Creates an empty file at `path` if nothing is there (parents 0755) and returns a
    /// handle to what is there.
    fn ensure_file(&self, path: &Path) -> Result<Handle, RootfsError> {
        if let Some(h) = self.resolve_optional(path)? {
            return Ok(h);
        }
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        match self
            .root
            .create(path, &InodeType::File(Permissions::from_mode(0o644)))
        {
            Ok(()) => {}
            Err(e) if pathrs_errno(&e) == Some(Errno::EEXIST) => {}
            Err(e) => return Err(self.in_root_err("create file", path, e)),
        }
        self.resolve(path)
    }

    /// Creates a symlink unless something already exists at `path`.
    fn ensure_symlink(&self, path: &Path, target: &str) -> Result<(), RootfsError> {
        match self
            .root
            .create(path, &InodeType::Symlink(PathBuf::from(target)))
        {
            Ok(()) => Ok(()),
            Err(e) if pathrs_errno(&e) == Some(Errno::EEXIST) => Ok(()),
            Err(e) => Err(self.in_root_err("create symlink", path, e)),
        }
    }

    /// One spec mount.
    fn mount_entry(&self, m: &Mount, new_netns: bool) -> Result<(), RootfsError> {
        let desc = MountDesc::of(m);
        let dest = desc.destination.clone();
        let opts = parse_mount_options(m.options().as_deref().unwrap_or_default());
        if let Some(option) = opts.unsupported.first() {
            return Err(RootfsError::UnsupportedOption {
                destination: dest,
                option: option.clone(),
            });
        }
        debug!(destination = %dest.display(), fstype = %desc.fstype, source = %desc.source, "mount");

        if desc.fstype == "bind" {
            let source = m
                .source()
                .as_deref()
                .ok_or_else(|| RootfsError::MissingSource {
                    destination: dest.clone(),
                })?;
            return self.mount_bind_entry(source, &dest, &opts, &desc);
        }
        match desc.fstype.as_str() {
            "" => Err(RootfsError::MissingType { destination: dest }),
            "sysfs" => self.mount_sysfs(m, &dest, &opts, &desc, new_netns),
            "cgroup" => {
                if cgroup_unified()? {
                    self.mount_cgroup_v2(&dest, &opts, &desc)
                } else {
                    self.mount_cgroup_v1(&dest, &opts, &desc)
                }
            }
            "cgroup2" if cgroup_unified()? => self.mount_cgroup_v2(&dest, &opts, &desc),
            _ => self.mount_fs(m, &dest, &opts, &desc),
        }
    }

    /// A filesystem mount (proc, tmpfs, devpts, mqueue, ...).
    fn mount_fs(
        &self,
        m: &Mount,
        dest: &Path,
        opts: &MountOptions,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        let fstype = desc.fstype.as_str();
        let source = m
            .source()
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| fstype.to_string());
        let handle = self.ensure_dir(dest)?;
        // A read-only tmpfs is mounted read-write and remounted afterwards, so that devices
        // (for /dev, remounted in finish_rootfs) can be created in it.
        let mut flags = opts.flags;
        let ro_later = fstype == "tmpfs" && flags.contains(MsFlags::MS_RDONLY);
        if ro_later {
            flags.remove(MsFlags::MS_RDONLY);
        }
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        sys_mount(
            Some(Path::new(&source)),
            &fd_path(&handle),
            Some(fstype),
            flags,
            data,
        )
        .map_err(|e| desc.err("mount(2)", e))?;
        drop(handle);
        if ro_later && dest != Path::new("/dev") {
            self.remount_bind(dest, opts.flags, desc)?;
        }
        self.apply_propagation(dest, &opts.propagation, desc)
    }

    /// sysfs; in a user namespace without its own network namespace the kernel refuses a
    /// new sysfs, and the host's /sys is bound instead (as runc does).
    fn mount_sysfs(
        &self,
        m: &Mount,
        dest: &Path,
        opts: &MountOptions,
        desc: &MountDesc,
        new_netns: bool,
    ) -> Result<(), RootfsError> {
        let rbind = |this: &Self| {
            let mut flags = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REC;
            flags.remove(MsFlags::MS_REMOUNT);
            let bind_desc = MountDesc::new(dest, "bind", "/sys");
            this.mount_bind_entry(
                Path::new("/sys"),
                dest,
                &MountOptions {
                    flags,
                    ..opts.clone()
                },
                &bind_desc,
            )
        };
        if self.in_user_ns && !new_netns {
            return rbind(self);
        }
        match self.mount_fs(m, dest, opts, desc) {
            Err(RootfsError::Mount {
                source: Errno::EPERM,
                ..
            }) if self.in_user_ns => rbind(self),
            other => other,
        }
    }

    /// A bind mount from a host path: the destination is created as a directory or an empty
    /// file depending on the source, bound, remounted for the flags, then propagated.
    fn mount_bind_entry(
        &self,
        source: &Path,
        dest: &Path,
        opts: &MountOptions,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        let meta = std::fs::metadata(source).map_err(|e| RootfsError::BindSource {
            path: source.to_path_buf(),
            destination: dest.to_path_buf(),
            source: e,
        })?;
        let handle = if meta.is_dir() {
            self.ensure_dir(dest)?
        } else {
            self.ensure_file(dest)?
        };
        self.bind(source, dest, handle, opts.flags | MsFlags::MS_BIND, desc)?;
        self.apply_propagation(dest, &opts.propagation, desc)
    }

    /// Binds `source` onto the resolved `handle` of `dest`, then remounts if `flags` ask for
    /// more than a plain bind (ro, nosuid, ...).
    fn bind(
        &self,
        source: &Path,
        dest: &Path,
        handle: Handle,
        flags: MsFlags,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        let bind_flags = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
        sys_mount(Some(source), &fd_path(&handle), None, bind_flags, None)
            .map_err(|e| desc.err("mount(2)", e))?;
        drop(handle);
        let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            self.remount_bind(dest, flags, desc)?;
        }
        Ok(())
    }

    /// Changes the per-mount flags of the mount at `dest` (MS_REMOUNT|MS_BIND), keeping the
    /// flags the mount already has that may be locked.
    fn remount_bind(
        &self,
        dest: &Path,
        flags: MsFlags,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        // The handle used for the mount points below it: resolve again to reach the new mount.
        let handle = self.resolve(dest)?;
        let current = nix::sys::statvfs::fstatvfs(&handle)
            .map_err(|e| desc.err("fstatvfs(2)", e))?
            .flags();
        let mut flags = flags - (MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_BIND);
        flags |= locked_flags(current, flags) | MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        sys_mount(None, &fd_path(&handle), None, flags, None)
            .map_err(|e| desc.err("mount(2) remount", e))
    }

    /// Applies the propagation options of a mount, each with its own mount(2) call.
    fn apply_propagation(
        &self,
        dest: &Path,
        propagation: &[MsFlags],
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        if propagation.is_empty() {
            return Ok(());
        }
        let handle = self.resolve(dest)?;
        for flags in propagation {
            sys_mount(None, &fd_path(&handle), None, *flags, None)
                .map_err(|e| desc.err("mount(2) propagation", e))?;
        }
        Ok(())
    }

    /// cgroup v2 host: a native cgroup2 mount in a cgroup namespace, otherwise (or when the
    /// kernel refuses) the container's own cgroup directory bound in.
    fn mount_cgroup_v2(
        &self,
        dest: &Path,
        opts: &MountOptions,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        let flags = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if self.in_cgroup_ns {
            let handle = self.ensure_dir(dest)?;
            let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
            match sys_mount(
                Some(Path::new("cgroup2")),
                &fd_path(&handle),
                Some("cgroup2"),
                flags,
                data,
            ) {
                Ok(()) => return self.apply_propagation(dest, &opts.propagation, desc),
                Err(Errno::EPERM | Errno::EBUSY) => {
                    debug!(destination = %dest.display(), "cgroup2 mount refused, binding instead");
                }
                Err(e) => return Err(desc.err("mount(2)", e)),
            }
        }
        let membership = read_host_file(Path::new(PROC_SELF_CGROUP))?;
        let own = own_cgroup(&membership, &[]).ok_or_else(|| RootfsError::CgroupMembership {
            hierarchy: String::new(),
            path: PathBuf::from(PROC_SELF_CGROUP),
        })?;
        let source = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
        let handle = self.ensure_dir(dest)?;
        let bind_desc = MountDesc::new(dest, "bind", &source.display().to_string());
        self.bind(
            &source,
            dest,
            handle,
            flags | MsFlags::MS_BIND | MsFlags::MS_REC,
            &bind_desc,
        )?;
        self.apply_propagation(dest, &opts.propagation, desc)
    }

    /// cgroup v1 or hybrid host: a tmpfs at the destination and every host hierarchy inside.
    fn mount_cgroup_v1(
        &self,
        dest: &Path,
        opts: &MountOptions,
        desc: &MountDesc,
    ) -> Result<(), RootfsError> {
        let mountinfo = read_host_file(Path::new(PROC_SELF_MOUNTINFO))?;
        let known = read_host_file(Path::new(PROC_CGROUPS))?;
        let hierarchies = cgroup_hierarchies(
            &parse_mountinfo(&mountinfo),
            &known_controllers(&known),
            &self.root_path,
        );
        let membership = if self.in_cgroup_ns {
            Vec::new()
        } else {
            read_host_file(Path::new(PROC_SELF_CGROUP))?
        };

        let base = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let tmpfs_flags = (base - MsFlags::MS_RDONLY)
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        let handle = self.ensure_dir(dest)?;
        let tmpfs_desc = MountDesc::new(dest, "tmpfs", "tmpfs");
        sys_mount(
            Some(Path::new("tmpfs")),
            &fd_path(&handle),
            Some("tmpfs"),
            tmpfs_flags,
            Some("mode=755"),
        )
        .map_err(|e| tmpfs_desc.err("mount(2)", e))?;
        drop(handle);

        for h in &hierarchies {
            let sub = dest.join(&h.name);
            let handle = self.ensure_dir(&sub)?;
            if self.in_cgroup_ns {
                let data = (h.fstype == "cgroup").then(|| h.subsystems.join(","));
                let sub_desc = MountDesc::new(&sub, &h.fstype, &h.fstype);
                sys_mount(
                    Some(Path::new(&h.fstype)),
                    &fd_path(&handle),
                    Some(&h.fstype),
                    base,
                    data.as_deref(),
                )
                .map_err(|e| sub_desc.err("mount(2)", e))?;
            } else {
                let own = own_cgroup(&membership, &h.subsystems).ok_or_else(|| {
                    RootfsError::CgroupMembership {
                        hierarchy: h.subsystems.join(","),
                        path: PathBuf::from(PROC_SELF_CGROUP),
                    }
                })?;
                let source = cgroup_bind_source(h, &own);
                let sub_desc = MountDesc::new(&sub, "bind", &source.display().to_string());
                self.bind(
                    &source,
                    &sub,
                    handle,
                    base | MsFlags::MS_BIND | MsFlags::MS_REC,
                    &sub_desc,
                )?;
            }
            // cpu,cpuacct is also reachable as cpu and cpuacct.
            if h.name.contains(',') {
                for ss in h.name.split(',') {
                    self.ensure_symlink(&dest.join(ss), &h.name)?;
                }
            }
        }

        if opts.flags.contains(MsFlags::MS_RDONLY) {
            self.remount_bind(dest, tmpfs_flags | MsFlags::MS_RDONLY, &tmpfs_desc)?;
        }
        self.apply_propagation(dest, &opts.propagation, desc)
    }

    /// One device node: mknod, or a bind mount of the host's node in a user namespace (or
    /// when mknod is refused). An existing node is left as it is.
    fn create_device(&self, dev: &DeviceNode) -> Result<(), RootfsError> {
        if let Some(parent) = dev.path.parent() {
            self.ensure_dir(parent)?;
        }
        if self.in_user_ns && dev.kind != DeviceKind::Fifo {
            return self.bind_device(dev);
        }
        let perm = Permissions::from_mode(dev.mode & 0o7777);
        let rdev = nix::sys::stat::makedev(dev.major, dev.minor);
        let inode = match dev.kind {
            DeviceKind::Char => InodeType::CharacterDevice(perm, rdev),
            DeviceKind::Block => InodeType::BlockDevice(perm, rdev),
            DeviceKind::Fifo => InodeType::Fifo(perm),
        };
        match self.root.create(&dev.path, &inode) {
            Ok(()) => {}
            Err(e) if pathrs_errno(&e) == Some(Errno::EEXIST) => return Ok(()),
            Err(e) if pathrs_errno(&e) == Some(Errno::EPERM) => return self.bind_device(dev),
            Err(e) => return Err(self.in_root_err("create device", &dev.path, e)),
        }
        if dev.uid != 0 || dev.gid != 0 {
            let handle = self
                .root
                .resolve_nofollow(&dev.path)
                .map_err(|e| self.in_root_err("resolve", &dev.path, e))?;
            nix::unistd::fchownat(
                Some(handle.as_fd().as_raw_fd()),
                "",
                Some(nix::unistd::Uid::from_raw(dev.uid)),
                Some(nix::unistd::Gid::from_raw(dev.gid)),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| syscall_err("fchownat(2)", &dev.path, e))?;
        }
        Ok(())
    }

    /// Binds the host's device node at the same path over an empty file.
    fn bind_device(&self, dev: &DeviceNode) -> Result<(), RootfsError> {
        let handle = self.ensure_file(&dev.path)?;
        let host = clean_destination(&dev.path);
        let desc = MountDesc::new(&dev.path, "bind", &host.display().to_string());
        sys_mount(
            Some(host.as_path()),
            &fd_path(&handle),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| desc.err("mount(2)", e))
    }

    /// /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr and (if the kernel has it) /dev/core.
    fn create_dev_symlinks(&self) -> Result<(), RootfsError> {
        let mut links = vec![
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ];
        if Path::new("/proc/kcore").exists() {
            links.push(("/proc/kcore", "/dev/core"));
        }
        for (target, link) in links {
            self.ensure_symlink(Path::new(link), target)?;
        }
        Ok(())
    }

    /// /dev/ptmx → pts/ptmx, for the devpts instance mounted at /dev/pts.
    fn create_ptmx_symlink(&self) -> Result<(), RootfsError> {
        let ptmx = Path::new("/dev/ptmx");
        match self.root.remove_file(ptmx) {
            Ok(()) => {}
            Err(e) if pathrs_errno(&e) == Some(Errno::ENOENT) => {}
            Err(e) => return Err(self.in_root_err("remove", ptmx, e)),
        }
        self.root
            .create(ptmx, &InodeType::Symlink(PathBuf::from("pts/ptmx")))
            .map_err(|e| self.in_root_err("create symlink", ptmx, e))
    }

    /// A read-only path: bound onto itself and remounted read-only; missing paths are skipped.
    fn readonly_path(&self, path: &Path) -> Result<(), RootfsError> {
        let Some(handle) = self.resolve_optional(path)? else {
            debug!(path = %path.display(), "read-only path does not exist, skipped");
            return Ok(());
        };
        let fd = fd_path(&handle);
        let desc = MountDesc::new(path, "bind", &path.display().to_string());
        sys_mount(
            Some(fd.as_path()),
            &fd,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| desc.err("mount(2)", e))?;
        drop(handle);
        self.remount_bind(path, MsFlags::MS_RDONLY, &desc)
    }

    /// A masked path: an empty read-only tmpfs over a directory, /dev/null over anything
    /// else; missing paths are skipped.
    fn mask_path(&self, path: &Path, dev_null: &mut Option<Handle>) -> Result<(), RootfsError> {
        let Some(handle) = self.resolve_optional(path)? else {
            debug!(path = %path.display(), "masked path does not exist, skipped");
            return Ok(());
        };
        let st = nix::sys::stat::fstat(handle.as_fd().as_raw_fd())
            .map_err(|e| syscall_err("fstat(2)", path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            let desc = MountDesc::new(path, "tmpfs", "tmpfs");
            return sys_mount(
                Some(Path::new("tmpfs")),
                &fd_path(&handle),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
            .map_err(|e| desc.err("mount(2)", e));
        }
        let null = match dev_null {
            Some(h) => h,
            None => dev_null.insert(self.dev_null()?),
        };
        let desc = MountDesc::new(path, "bind", "/dev/null");
        sys_mount(
            Some(fd_path(null).as_path()),
            &fd_path(&handle),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| desc.err("mount(2)", e))
    }

    /// The container's /dev/null, checked to be the null device before it is used to mask.
    fn dev_null(&self) -> Result<Handle, RootfsError> {
        let path = Path::new("/dev/null");
        let handle = self.resolve(path)?;
        let st = nix::sys::stat::fstat(handle.as_fd().as_raw_fd())
            .map_err(|e| syscall_err("fstat(2)", path, e))?;
        let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
        if !is_char || st.st_rdev != nix::sys::stat::makedev(1, 3) {
            return Err(RootfsError::NotDevNull {
                path: path.to_path_buf(),
            });
        }
        Ok(handle)
    }
}

/// Whether /sys/fs/cgroup is the cgroup v2 unified hierarchy.
fn cgroup_unified() -> Result<bool, RootfsError> {
    let st = nix::sys::statfs::statfs(CGROUP_ROOT)
        .map_err(|e| syscall_err("statfs(2)", Path::new(CGROUP_ROOT), e))?;
    Ok(st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn read_host_file(path: &Path) -> Result<Vec<u8>, RootfsError> {
    std::fs::read(path).map_err(|source| RootfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes the mount holding `rootfs` private if it is shared: pivot_root refuses a new root
/// whose parent mount is shared, and the bind of the rootfs would propagate to the host.
fn make_parent_mount_private(rootfs: &Path) -> Result<(), RootfsError> {
    let mountinfo = read_host_file(Path::new(PROC_SELF_MOUNTINFO))?;
    let mounts = parse_mountinfo(&mountinfo);
    let Some(parent) = parent_mount(&mounts, rootfs) else {
        return Ok(());
    };
    if parent.optional.iter().any(|o| o.starts_with("shared:")) {
        debug!(mount = %parent.mount_point.display(), "making the rootfs parent mount private");
        set_propagation(&parent.mount_point, MsFlags::MS_PRIVATE)?;
    }
    Ok(())
}

/// runc's pivot_root(".", "."): the old root ends up stacked under the new one at "/", is
/// made rslave so that the unmount cannot reach the host, then detached.
fn pivot_root_dot(rootfs: &Path) -> Result<(), RootfsError> {
    let old_root = std::fs::File::open("/").map_err(|source| RootfsError::Open {
        path: PathBuf::from("/"),
        source,
    })?;
    let new_root = std::fs::File::open(rootfs).map_err(|source| RootfsError::Open {
        path: rootfs.to_path_buf(),
        source,
    })?;
    nix::unistd::fchdir(new_root.as_raw_fd()).map_err(|e| syscall_err("fchdir(2)", rootfs, e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| syscall_err("pivot_root(2)", rootfs, e))?;
    // The kernel leaves "." at the old root, but do not rely on it.
    nix::unistd::fchdir(old_root.as_raw_fd())
        .map_err(|e| syscall_err("fchdir(2)", Path::new("/"), e))?;
    set_propagation(Path::new("."), MsFlags::MS_SLAVE | MsFlags::MS_REC)?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| syscall_err("umount2(2)", Path::new("old root ."), e))?;
    nix::unistd::chdir("/").map_err(|e| syscall_err("chdir(2)", Path::new("/"), e))
}

/// --no-pivot: detach the host's full proc and sysfs mounts (or cover them), move the rootfs
/// onto "/" and chroot into it. The caller made the rootfs the working directory.
fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let mountinfo = read_host_file(Path::new(PROC_SELF_MOUNTINFO))?;
    for info in parse_mountinfo(&mountinfo) {
        if info.root != Path::new("/")
            || (info.fstype != "proc" && info.fstype != "sysfs")
            || info.mount_point.starts_with(rootfs)
        {
            continue;
        }
        let p = &info.mount_point;
        match sys_mount(None, p, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None) {
            Ok(()) => {}
            // Already gone with a parent that was detached before.
            Err(Errno::ENOENT | Errno::EINVAL) => continue,
            Err(e) => return Err(syscall_err("mount(2) propagation", p, e)),
        }
        match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::EPERM) => {
                // Not allowed to unmount (locked in a user namespace): cover it.
                let desc = MountDesc::new(p, "tmpfs", "tmpfs");
                sys_mount(
                    Some(Path::new("tmpfs")),
                    p,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None,
                )
                .map_err(|e| desc.err("mount(2)", e))?;
            }
            Err(e) => return Err(syscall_err("umount2(2)", p, e)),
        }
    }
    sys_mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None).map_err(|e| {
        RootfsError::Mount {
            syscall: "mount(2) move",
            destination: PathBuf::from("/"),
            fstype: "move".into(),
            mount_source: rootfs.display().to_string(),
            source: e,
        }
    })?;
    nix::unistd::chroot(".").map_err(|e| syscall_err("chroot(2)", rootfs, e))?;
    nix::unistd::chdir("/").map_err(|e| syscall_err("chdir(2)", Path::new("/"), e))
}

/// root.readonly: the root mount (only it, not the mounts on it) becomes read-only.
fn readonly_root() -> Result<(), RootfsError> {
    let root = Path::new("/");
    let current = nix::sys::statvfs::statvfs(root)
        .map_err(|e| syscall_err("statvfs(2)", root, e))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC;
    flags |= locked_flags(current, MsFlags::empty());
    sys_mount(None, root, None, flags, None).map_err(|e| RootfsError::Mount {
        syscall: "mount(2) remount",
        destination: root.to_path_buf(),
        fstype: "bind".into(),
        mount_source: "/".into(),
        source: e,
    })
}

/// Kind of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceKind {
    Char,
    Block,
    Fifo,
}

/// A device node to create inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceNode {
    path: PathBuf,
    kind: DeviceKind,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl DeviceNode {
    fn default_char(path: &str, major: u64, minor: u64) -> Self {
        Self {
            path: PathBuf::from(path),
            kind: DeviceKind::Char,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    fn from_spec(d: &LinuxDevice) -> Result<Self, RootfsError> {
        let path = clean_destination(d.path());
        let invalid = |reason| RootfsError::InvalidDevice {
            path: d.path().clone(),
            reason,
        };
        if !d.path().is_absolute() || path == Path::new("/") {
            return Err(invalid("the path must be absolute and not /"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => DeviceKind::Fifo,
            LinuxDeviceType::A => return Err(invalid("type \"a\" is not a device node type")),
        };
        let major = u64::try_from(d.major()).map_err(|_| invalid("negative major number"))?;
        let minor = u64::try_from(d.minor()).map_err(|_| invalid("negative minor number"))?;
        Ok(Self {
            path,
            kind,
            major,
            minor,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        })
    }
}

/// The default devices the spec does not list itself, then the spec's devices.
fn devices_to_create(spec: &Spec) -> Result<Vec<DeviceNode>, RootfsError> {
    let spec_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default()
        .iter()
        .map(DeviceNode::from_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = [
        DeviceNode::default_char("/dev/null", 1, 3),
        DeviceNode::default_char("/dev/zero", 1, 5),
        DeviceNode::default_char("/dev/full", 1, 7),
        DeviceNode::default_char("/dev/random", 1, 8),
        DeviceNode::default_char("/dev/urandom", 1, 9),
        DeviceNode::default_char("/dev/tty", 5, 0),
    ];
    let mut out: Vec<DeviceNode> = defaults
        .into_iter()
        .filter(|d| !spec_devices.iter().any(|s| s.path == d.path))
        .collect();
    out.extend(spec_devices);
    Ok(out)
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    /// Path of the mount's root inside its filesystem.
    root: PathBuf,
    /// Where it is mounted.
    mount_point: PathBuf,
    /// Optional fields (`shared:1`, `master:2`, ...).
    optional: Vec<String>,
    fstype: String,
    source: String,
    super_options: Vec<String>,
}

/// Undoes the octal escapes (`\040`) mountinfo uses for spaces and such.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Parses /proc/self/mountinfo; malformed lines are skipped.
fn parse_mountinfo(content: &[u8]) -> Vec<MountInfo> {
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    let path = |f: &[u8]| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f)));
    content
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            if sep < 6 || fields.len() < sep + 3 {
                return None;
            }
            Some(MountInfo {
                root: path(fields[3]),
                mount_point: path(fields[4]),
                optional: fields[6..sep].iter().map(|f| text(f)).collect(),
                fstype: text(fields[sep + 1]),
                source: text(fields[sep + 2]),
                super_options: fields
                    .get(sep + 3)
                    .map(|f| text(f).split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The mount that holds `path`: the last (top-most) entry whose mount point is the longest
/// ancestor of `path` (or `path` itself).
fn parent_mount<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&MountInfo>, m| match best {
            Some(b) if b.mount_point.components().count() > m.mount_point.components().count() => {
                Some(b)
            }
            _ => Some(m),
        })
}

/// The controllers listed in /proc/cgroups.
fn known_controllers(proc_cgroups: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(proc_cgroups)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A host cgroup hierarchy to reproduce inside the container's cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupHierarchy {
    /// Name inside the container: the base name of the host mount point ("cpu,cpuacct").
    name: String,
    /// "cgroup" (v1) or "cgroup2" (the unified hierarchy of a hybrid host).
    fstype: String,
    /// Controllers and `name=` of a v1 hierarchy, empty for cgroup2.
    subsystems: Vec<String>,
    /// Host mount point.
    mount_point: PathBuf,
    /// Root of that mount inside the hierarchy.
    root: PathBuf,
}

/// The cgroup hierarchies mounted on the host, once each, leaving out mounts inside the
/// container's rootfs.
fn cgroup_hierarchies(
    mounts: &[MountInfo],
    known: &BTreeSet<String>,
    rootfs: &Path,
) -> Vec<CgroupHierarchy> {
    let mut out: Vec<CgroupHierarchy> = Vec::new();
    for m in mounts {
        if m.mount_point.starts_with(rootfs) || (m.fstype != "cgroup" && m.fstype != "cgroup2") {
            continue;
        }
        let subsystems: Vec<String> = if m.fstype == "cgroup" {
            m.super_options
                .iter()
                .filter(|o| known.contains(*o) || o.starts_with("name="))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if m.fstype == "cgroup" && subsystems.is_empty() {
            continue;
        }
        let Some(name) = m.mount_point.file_name() else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        if out
            .iter()
            .any(|h| (h.fstype == m.fstype && h.subsystems == subsystems) || h.name == name)
        {
            continue;
        }
        out.push(CgroupHierarchy {
            name,
            fstype: m.fstype.clone(),
            subsystems,
            mount_point: m.mount_point.clone(),
            root: m.root.clone(),
        });
    }
    out
}

/// The process's cgroup path in the hierarchy with these controllers (empty: cgroup2) from
/// /proc/self/cgroup.
fn own_cgroup(proc_self_cgroup: &[u8], subsystems: &[String]) -> Option<String> {
    let wanted: BTreeSet<&str> = subsystems.iter().map(String::as_str).collect();
    String::from_utf8_lossy(proc_self_cgroup)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((controllers, path))
        })
        .find(|(controllers, _)| {
            let have: BTreeSet<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
            have == wanted
        })
        .map(|(_, path)| path.to_string())
}

/// Host directory of the process's own cgroup in a hierarchy.
fn cgroup_bind_source(h: &CgroupHierarchy, own: &str) -> PathBuf {
    let own = Path::new(own);
    let rel = own.strip_prefix(&h.root).unwrap_or(own);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    h.mount_point.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_mount_options(&["ro", "nosuid", "mode=755", "rprivate"]);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, "mode=755");
        assert!(o.unsupported.is_empty());
    }

    #[test]
    fn option_table() {
        let cases: &[(&str, MsFlags)] = &[
            ("ro", MsFlags::MS_RDONLY),
            ("nosuid", MsFlags::MS_NOSUID),
            ("nodev", MsFlags::MS_NODEV),
            ("noexec", MsFlags::MS_NOEXEC),
            ("relatime", MsFlags::MS_RELATIME),
            ("strictatime", MsFlags::MS_STRICTATIME),
            ("noatime", MsFlags::MS_NOATIME),
            ("nodiratime", MsFlags::MS_NODIRATIME),
            ("bind", MsFlags::MS_BIND),
            ("rbind", MsFlags::MS_BIND | MsFlags::MS_REC),
            ("remount", MsFlags::MS_REMOUNT),
            ("sync", MsFlags::MS_SYNCHRONOUS),
            ("dirsync", MsFlags::MS_DIRSYNC),
            ("mand", MsFlags::MS_MANDLOCK),
            ("defaults", MsFlags::empty()),
            ("rw", MsFlags::empty()),
        ];
        for (opt, want) in cases {
            let o = parse_mount_options(&[*opt]);
            assert_eq!(o.flags, *want, "option {opt}");
            assert!(o.data.is_empty(), "option {opt}");
            assert!(o.propagation.is_empty(), "option {opt}");
        }
    }

    #[test]
    fn clearing_options_undo_earlier_ones() {
        let o = parse_mount_options(&["ro", "nosuid", "noexec", "rw", "suid", "exec", "nodev"]);
        assert_eq!(o.flags, MsFlags::MS_NODEV);
        let o = parse_mount_options(&["noatime", "atime", "nodiratime", "diratime"]);
        assert_eq!(o.flags, MsFlags::empty());
    }

    #[test]
    fn propagation_options_keep_their_order() {
        let o = parse_mount_options(&[
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "unbindable",
            "runbindable",
        ]);
        let r = MsFlags::MS_REC;
        assert_eq!(
            o.propagation,
            vec![
                MsFlags::MS_PRIVATE,
                MsFlags::MS_PRIVATE | r,
                MsFlags::MS_SLAVE,
                MsFlags::MS_SLAVE | r,
                MsFlags::MS_SHARED,
                MsFlags::MS_SHARED | r,
                MsFlags::MS_UNBINDABLE,
                MsFlags::MS_UNBINDABLE | r,
            ]
        );
        assert_eq!(o.flags, MsFlags::empty());
    }

    #[test]
    fn unknown_options_become_data_in_order() {
        let o = parse_mount_options(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
        let o = parse_mount_options(&["mode=755", "size=65536k", ""]);
        assert_eq!(o.data, "mode=755,size=65536k");
    }

    #[test]
    fn recursive_attributes_are_reported_unsupported() {
        let o = parse_mount_options(&["rbind", "rro", "tmpcopyup", "idmap"]);
        assert_eq!(o.unsupported, vec!["rro", "tmpcopyup", "idmap"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(o.data.is_empty());
    }

    #[test]
    fn rootfs_propagation_names() {
        assert_eq!(
            parse_propagation("rslave").unwrap(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert_eq!(parse_propagation("private").unwrap(), MsFlags::MS_PRIVATE);
        assert!(matches!(
            parse_propagation("sideways"),
            Err(RootfsError::InvalidPropagation { .. })
        ));
    }

    #[test]
    fn locked_flags_keep_security_flags_and_atime_unless_asked() {
        let current = FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_NOATIME;
        assert_eq!(
            locked_flags(current, MsFlags::MS_RDONLY),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME
        );
        assert_eq!(
            locked_flags(current, MsFlags::MS_RELATIME),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        );
        assert_eq!(
            locked_flags(FsFlags::ST_RDONLY, MsFlags::empty()),
            MsFlags::empty()
        );
    }

    #[test]
    fn destinations_are_made_absolute_and_clean() {
        assert_eq!(clean_destination(Path::new("dev/")), Path::new("/dev"));
        assert_eq!(
            clean_destination(Path::new("/a/./b/../c")),
            Path::new("/a/c")
        );
        assert_eq!(clean_destination(Path::new("/../..")), Path::new("/"));
    }

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime master:3 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 27 0:40 / /tmp/with\\040space rw - tmpfs tmpfs rw
60 27 0:32 /kubepods /run/rootfs/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_is_parsed() {
        let m = parse_mountinfo(MOUNTINFO.as_bytes());
        assert_eq!(m.len(), 9);
        assert_eq!(m[1].mount_point, Path::new("/"));
        assert_eq!(m[1].optional, vec!["shared:1"]);
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[3].super_options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(m[7].mount_point, Path::new("/tmp/with space"));
        assert_eq!(m[8].root, Path::new("/kubepods"));
    }

    #[test]
    fn parent_mount_is_the_longest_prefix() {
        let m = parse_mountinfo(MOUNTINFO.as_bytes());
        let p = parent_mount(&m, Path::new("/tmp/with space/rootfs")).unwrap();
        assert_eq!(p.mount_point, Path::new("/tmp/with space"));
        let p = parent_mount(&m, Path::new("/var/lib/rootfs")).unwrap();
        assert_eq!(p.mount_point, Path::new("/"));
        // /sys/fs/cgroupfoo is not below /sys/fs/cgroup
        let p = parent_mount(&m, Path::new("/sys/fs/cgroupfoo")).unwrap();
        assert_eq!(p.mount_point, Path::new("/"));
    }

    #[test]
    fn cgroup_hierarchies_from_mountinfo() {
        let known: BTreeSet<String> = ["cpu", "cpuacct", "memory", "pids"]
            .into_iter()
            .map(String::from)
            .collect();
        let m = parse_mountinfo(MOUNTINFO.as_bytes());
        let h = cgroup_hierarchies(&m, &known, Path::new("/run/rootfs"));
        let names: Vec<&str> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["cpu,cpuacct", "memory", "systemd", "unified"]);
        assert_eq!(h[0].subsystems, vec!["cpu", "cpuacct"]);
        assert_eq!(h[2].subsystems, vec!["name=systemd"]);
        assert_eq!(h[3].fstype, "cgroup2");
        assert!(h[3].subsystems.is_empty());
    }

    #[test]
    fn own_cgroup_matches_the_controller_set() {
        let cg = b"9:name=systemd:/user\n4:memory:/process_api/abc\n2:cpuacct,cpu:/x\n0::/unified/path\n";
        assert_eq!(
            own_cgroup(cg, &["memory".into()]).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(
            own_cgroup(cg, &["cpu".into(), "cpuacct".into()]).as_deref(),
            Some("/x")
        );
        assert_eq!(
            own_cgroup(cg, &["name=systemd".into()]).as_deref(),
            Some("/user")
        );
        assert_eq!(own_cgroup(cg, &[]).as_deref(), Some("/unified/path"));
        assert_eq!(own_cgroup(cg, &["pids".into()]), None);
    }

    #[test]
    fn cgroup_bind_source_is_relative_to_the_mount_root() {
        let h = CgroupHierarchy {
            name: "memory".into(),
            fstype: "cgroup".into(),
            subsystems: vec!["memory".into()],
            mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
            root: PathBuf::from("/"),
        };
        assert_eq!(
            cgroup_bind_source(&h, "/a/b"),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            cgroup_bind_source(&h, "/"),
            Path::new("/sys/fs/cgroup/memory")
        );
        let h = CgroupHierarchy {
            root: PathBuf::from("/a"),
            ..h
        };
        assert_eq!(
            cgroup_bind_source(&h, "/a/b"),
            Path::new("/sys/fs/cgroup/memory/b")
        );
    }

    #[test]
    fn default_devices_unless_the_spec_has_them() {
        let mut spec = Spec::default();
        let dev: LinuxDevice = serde_json::from_value(serde_json::json!({
            "path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600
        }))
        .unwrap();
        let fifo: LinuxDevice = serde_json::from_value(serde_json::json!({
            "path": "/dev/myfifo", "type": "p", "major": 0, "minor": 0, "uid": 7, "gid": 8
        }))
        .unwrap();
        if let Some(l) = spec.linux_mut().as_mut() {
            l.set_devices(Some(vec![dev, fifo]));
        }
        let devs = devices_to_create(&spec).unwrap();
        let paths: Vec<&Path> = devs.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(
            paths,
            vec![
                Path::new("/dev/zero"),
                Path::new("/dev/full"),
                Path::new("/dev/random"),
                Path::new("/dev/urandom"),
                Path::new("/dev/tty"),
                Path::new("/dev/null"),
                Path::new("/dev/myfifo"),
            ]
        );
        assert_eq!(devs[5].mode, 0o600);
        assert_eq!(devs[6].kind, DeviceKind::Fifo);
        assert_eq!((devs[6].uid, devs[6].gid), (7, 8));
        assert_eq!(devs[4].major, 5);
    }

    #[test]
    fn device_type_a_is_invalid() {
        let dev: LinuxDevice = serde_json::from_value(serde_json::json!({
            "path": "/dev/x", "type": "a", "major": 1, "minor": 3
        }))
        .unwrap();
        assert!(matches!(
            DeviceNode::from_spec(&dev),
            Err(RootfsError::InvalidDevice { .. })
        ));
    }
}

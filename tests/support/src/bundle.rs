//! A bundle is a directory holding `config.json` and `rootfs/`. [`Bundle::busybox`] fills
//! `rootfs/` from the host's statically linked `/bin/busybox` and starts from the same
//! `config.json` that `runc spec` writes, with `terminal` off so a test can capture output.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{
    Hook, HookBuilder, Hooks, LinuxCapabilities, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, PosixRlimitBuilder, PosixRlimitType,
    Process, Spec,
};
use tempfile::TempDir;

/// Where the busybox binary is copied from; Debian/Ubuntu package `busybox-static`.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The `config.json` that `runc spec` (runc 1.1) writes, byte for byte in content.
const RUNC_DEFAULT_CONFIG: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": true,
    "user": { "uid": 0, "gid": 0 },
    "args": ["sh"],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "runc",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
  ],
  "linux": {
    "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
    "namespaces": [
      { "type": "pid" },
      { "type": "network" },
      { "type": "ipc" },
      { "type": "uts" },
      { "type": "mount" }
    ],
    "maskedPaths": [
      "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
      "/proc/scsi"
    ],
    "readonlyPaths": [
      "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
    ]
  }
}"#;

/// The spec `runc spec` writes: args `["sh"]`, a terminal, a read-only rootfs, new pid,
/// network, ipc, uts and mount namespaces, three capabilities, masked and read-only paths.
pub fn runc_default_spec() -> Spec {
    match serde_json::from_str(RUNC_DEFAULT_CONFIG) {
        Ok(spec) => spec,
        Err(e) => panic!("the built-in runc default config.json does not parse: {e}"),
    }
}

/// The hook points of the OCI runtime spec, in the order a runtime runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// Deprecated but still run by runc, right before `createRuntime`.
    Prestart,
    /// In the runtime namespace, after the environment is created, before `pivot_root`.
    CreateRuntime,
    /// In the container namespace, before `pivot_root`.
    CreateContainer,
    /// In the container, after `pivot_root`, right before the user process.
    StartContainer,
    /// In the runtime namespace, after the user process started.
    Poststart,
    /// In the runtime namespace, when the container is deleted.
    Poststop,
}

impl HookPoint {
    /// Every hook point, in the order the spec runs them.
    pub const ALL: [HookPoint; 6] = [
        HookPoint::Prestart,
        HookPoint::CreateRuntime,
        HookPoint::CreateContainer,
        HookPoint::StartContainer,
        HookPoint::Poststart,
        HookPoint::Poststop,
    ];

    /// The name used in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prestart => "prestart",
            HookPoint::CreateRuntime => "createRuntime",
            HookPoint::CreateContainer => "createContainer",
            HookPoint::StartContainer => "startContainer",
            HookPoint::Poststart => "poststart",
            HookPoint::Poststop => "poststop",
        }
    }
}

/// An OCI bundle in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct Bundle {
    dir: TempDir,
    spec: Spec,
}

impl Bundle {
    /// A bundle under the system temporary directory.
    pub fn busybox() -> Result<Self> {
        Self::busybox_in(&std::env::temp_dir())
    }

    /// A bundle in a new directory under `parent`: `rootfs/` with busybox and its applets,
    /// `/etc/passwd` and `/etc/group` with root and nobody; the spec is `runc spec`'s with
    /// `terminal: false` and args `["sh"]`. Call [`Bundle::write_spec`] after editing.
    pub fn busybox_in(parent: &Path) -> Result<Self> {
        if !Path::new(HOST_BUSYBOX).is_file() {
            bail!(
                "{HOST_BUSYBOX} is missing: the test root filesystems are built from it \
                 (apt-get install busybox-static)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("skiff-bundle-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a bundle directory in {}", parent.display()))?;
        // 0755 so that a container whose root is mapped to another uid can reach rootfs/.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let rootfs = dir.path().join("rootfs");
        build_busybox_rootfs(&rootfs)?;
        let mut spec = runc_default_spec();
        if let Some(process) = spec.process_mut() {
            process.set_terminal(Some(false));
        }
        let bundle = Bundle { dir, spec };
        bundle.write_spec()?;
        Ok(bundle)
    }

    /// The bundle directory (the `--bundle` argument).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The root filesystem directory on the host.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The path of `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// The spec as it stands (written or not).
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The spec, for edits the helpers below do not cover.
    pub fn spec_mut(&mut self) -> &mut Spec {
        &mut self.spec
    }

    /// Writes the spec to `config.json`.
    pub fn write_spec(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.spec)?;
        fs::write(self.config_path(), json)
            .with_context(|| format!("cannot write {}", self.config_path().display()))
    }

    /// The spec as JSON, for edits that the typed spec cannot express (an unknown
    /// namespace type, say); write it back with [`Bundle::write_raw_config`].
    pub fn spec_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(&self.spec)?)
    }

    /// Writes `config.json` verbatim.
    pub fn write_raw_config(&self, contents: impl AsRef<[u8]>) -> Result<()> {
        fs::write(self.config_path(), contents)
            .with_context(|| format!("cannot write {}", self.config_path().display()))
    }

    /// Edits `process` (always present in a busybox bundle).
    pub fn process(&mut self, edit: impl FnOnce(&mut Process)) -> &mut Self {
        let process = self.spec.process_mut().get_or_insert_with(Process::default);
        edit(process);
        self
    }

    /// Sets the process arguments.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.process(|p| {
            p.set_args(Some(args));
        })
    }

    /// `["/bin/sh", "-c", script]`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["/bin/sh", "-c", script])
    }

    /// Turns the terminal on or off.
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.process(|p| {
            p.set_terminal(Some(on));
        })
    }

    /// Makes the root filesystem writable (`root.readonly = false`).
    pub fn writable_rootfs(&mut self) -> &mut Self {
        if let Some(root) = self.spec.root_mut() {
            root.set_readonly(Some(false));
        }
        self
    }

    /// Edits `linux.resources`, creating it if needed.
    pub fn resources(&mut self, edit: impl FnOnce(&mut LinuxResources)) -> &mut Self {
        let linux = self.spec.linux_mut().get_or_insert_with(Default::default);
        edit(linux.resources_mut().get_or_insert_with(Default::default));
        self
    }

    /// The namespace list (`linux.namespaces`), creating it if needed.
    pub fn namespaces_mut(&mut self) -> &mut Vec<LinuxNamespace> {
        let linux = self.spec.linux_mut().get_or_insert_with(Default::default);
        linux.namespaces_mut().get_or_insert_with(Vec::new)
    }

    /// Adds a namespace of type `typ`, or replaces the existing one, to be created new
    /// (`path: None`) or joined (`path: Some`).
    pub fn namespace(&mut self, typ: LinuxNamespaceType, path: Option<&Path>) -> &mut Self {
        let mut builder = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(path) = path {
            builder = builder.path(path);
        }
        let ns = match builder.build() {
            Ok(ns) => ns,
            Err(e) => panic!("cannot build namespace {typ:?}: {e}"),
        };
        let list = self.namespaces_mut();
        list.retain(|n| n.typ() != typ);
        list.push(ns);
        self
    }

    /// Sets the process capability sets (bounding, effective, permitted; inheritable and
    /// ambient cleared) to exactly `caps`.
    pub fn capabilities(&mut self, caps: &[oci_spec::runtime::Capability]) -> &mut Self {
        let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
        self.process(|p| {
            let mut c = LinuxCapabilities::default();
            c.set_bounding(Some(set.clone()));
            c.set_effective(Some(set.clone()));
            c.set_permitted(Some(set.clone()));
            c.set_inheritable(None);
            c.set_ambient(None);
            p.set_capabilities(Some(c));
        })
    }

    /// Replaces the rlimits with one limit.
    pub fn rlimit(&mut self, typ: PosixRlimitType, soft: u64, hard: u64) -> &mut Self {
        let limit = match PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
        {
            Ok(l) => l,
            Err(e) => panic!("cannot build rlimit: {e}"),
        };
        self.process(|p| {
            p.set_rlimits(Some(vec![limit]));
        })
    }

    /// A new user namespace mapping container ids 0..size to host ids host..host+size,
    /// for both uids and gids.
    pub fn user_namespace(&mut self, host: u32, size: u32) -> &mut Self {
        let mapping = match LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(size)
            .build()
        {
            Ok(m) => m,
            Err(e) => panic!("cannot build id mapping: {e}"),
        };
        self.namespace(LinuxNamespaceType::User, None);
        let linux = self.spec.linux_mut().get_or_insert_with(Default::default);
        linux.set_uid_mappings(Some(vec![mapping]));
        linux.set_gid_mappings(Some(vec![mapping]));
        self
    }

    /// Adds one hook that runs `/bin/sh -c script` at `point`.
    pub fn hook(&mut self, point: HookPoint, script: &str) -> &mut Self {
        let hook: Hook = match HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".to_string(), script.to_string()])
            .build()
        {
            Ok(h) => h,
            Err(e) => panic!("cannot build hook: {e}"),
        };
        let hooks = self.spec.hooks_mut().get_or_insert_with(Hooks::default);
        #[allow(deprecated)] // prestart is deprecated in the spec, but runtimes still run it
        let list = match point {
            HookPoint::Prestart => hooks.prestart_mut(),
            HookPoint::CreateRuntime => hooks.create_runtime_mut(),
            HookPoint::CreateContainer => hooks.create_container_mut(),
            HookPoint::StartContainer => hooks.start_container_mut(),
            HookPoint::Poststart => hooks.poststart_mut(),
            HookPoint::Poststop => hooks.poststop_mut(),
        };
        list.get_or_insert_with(Vec::new).push(hook);
        self
    }

    /// Changes the owner of everything in the rootfs (symlinks themselves, not targets).
    pub fn chown_rootfs(&self, uid: u32, gid: u32) -> Result<()> {
        chown_tree(&self.rootfs(), uid, gid)
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The applets a test may call; ash builtins (`ulimit`, `trap`, …) need none.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "echo", "ls", "sleep", "usleep", "mount", "umount", "id",
    "hostname", "ps", "grep", "head", "tail", "readlink", "stat", "touch", "mkdir", "rm", "wc",
    "dd", "tr", "seq", "kill", "pwd", "env", "test", "[", "printf", "tty", "stty", "mknod",
    "chown", "chmod", "sync", "whoami", "uname", "nproc",
];

/// Fills `rootfs` with busybox, its applet symlinks and the directories a runtime mounts
/// onto.
pub fn build_busybox_rootfs(rootfs: &Path) -> Result<()> {
    for dir in [
        "bin", "etc", "dev", "proc", "sys", "tmp", "mnt", "root", "run", "var",
    ] {
        fs::create_dir_all(rootfs.join(dir))
            .with_context(|| format!("cannot create {}", rootfs.join(dir).display()))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755))?;
    let busybox = rootfs.join("bin/busybox");
    fs::copy(HOST_BUSYBOX, &busybox)
        .with_context(|| format!("cannot copy {HOST_BUSYBOX} into {}", rootfs.display()))?;
    check_static(HOST_BUSYBOX)?;
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet))
            .with_context(|| format!("cannot link applet {applet}"))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
    Ok(())
}

/// A dynamically linked busybox would not start in a rootfs without its libraries; say so
/// up front instead of failing inside the container.
fn check_static(path: &str) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {path}"))?;
    if has_interpreter(&bytes).with_context(|| format!("{path} is not a 64-bit ELF"))? {
        bail!(
            "{path} is dynamically linked: install busybox-static (apt-get install busybox-static)"
        );
    }
    Ok(())
}

/// Whether a little-endian ELF64 image has a `PT_INTERP` program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |off: usize| {
        elf.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        elf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |off: usize| {
        elf.get(off..off + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        bail!("no ELF64 magic");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        bail!("truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff)? + i * usize::from(phentsize);
        if u32_at(off) == Some(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_default_round_trips_through_oci_spec() {
        let spec = runc_default_spec();
        let json = serde_json::to_string(&spec).unwrap();
        let again: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(spec, again);
        let raw: serde_json::Value = serde_json::from_str(RUNC_DEFAULT_CONFIG).unwrap();
        let ours = serde_json::to_value(&spec).unwrap();
        assert_eq!(raw["linux"]["maskedPaths"], ours["linux"]["maskedPaths"]);
        assert_eq!(raw["mounts"], ours["mounts"]);
        assert_eq!(raw["linux"]["namespaces"], ours["linux"]["namespaces"]);
    }

    #[test]
    fn busybox_bundle_has_rootfs_and_config() {
        let mut bundle = Bundle::busybox().unwrap();
        assert!(bundle.rootfs().join("bin/busybox").is_file());
        assert_eq!(
            fs::read_link(bundle.rootfs().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        bundle.args(&["/bin/true"]).write_spec().unwrap();
        let written: Spec = Spec::load(bundle.config_path()).unwrap();
        assert_eq!(written.process().as_ref().unwrap().terminal(), Some(false));
        assert_eq!(
            written.process().as_ref().unwrap().args().as_deref(),
            Some(&["/bin/true".to_string()][..])
        );
        let path = bundle.path().to_path_buf();
        drop(bundle);
        assert!(!path.exists(), "bundle directory outlives its Bundle");
    }

    #[test]
    fn tells_static_from_dynamic_binaries() {
        assert!(!has_interpreter(&fs::read(HOST_BUSYBOX).unwrap()).unwrap());
        assert!(has_interpreter(&fs::read("/bin/ls").unwrap()).unwrap());
    }
}

//! Image config → OCI runtime spec, with the rules container engines use: Kubernetes'
//! command/args over the image's entrypoint/cmd, env merged over the image's, user names
//! resolved through the image's own /etc/passwd and /etc/group, the default mounts,
//! capability set and seccomp profile.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec,
};

/// Errors of building a runtime spec from an image.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the image nor the caller names a program to run.
    #[error("no command: the image has no entrypoint or cmd and none was given")]
    NoCommand,
    /// A user or group name is not in the image's passwd/group files.
    #[error("unable to find {kind} {name:?} in the image's {file}")]
    UnknownUser {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
        /// The file searched.
        file: &'static str,
    },
    /// An env entry is not NAME=value.
    #[error("invalid environment entry {0:?}: expected NAME=value")]
    Env(String),
    /// The spec builder rejected a value.
    #[error("cannot build the runtime spec")]
    Build(#[from] oci_spec::OciSpecError),
}

/// How the container gets its network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only loopback.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Join the network namespace at this path (a pod sandbox).
    Join(PathBuf),
}

/// What the caller adds to or overrides in the image's config.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// Kubernetes `command`: replaces the image's entrypoint (and drops its cmd).
    pub command: Option<Vec<String>>,
    /// Kubernetes `args`: replaces the image's cmd.
    pub args: Option<Vec<String>>,
    /// Extra `NAME=value` entries; they win over the image's.
    pub env: Vec<String>,
    /// Working directory (default: the image's, else `/`).
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid` (default: the image's, else root).
    pub user: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Hostname (a new uts namespace is always made).
    pub hostname: Option<String>,
    /// Network namespace.
    pub network: Network,
    /// Read-only root filesystem.
    pub read_only_rootfs: bool,
    /// Capabilities added to the default set.
    pub cap_add: Vec<Capability>,
    /// Capabilities dropped from the default set.
    pub cap_drop: Vec<Capability>,
    /// Annotations for the runtime spec.
    pub annotations: HashMap<String, String>,
    /// cgroups path for the container.
    pub cgroups_path: Option<PathBuf>,
}

/// The capability set Docker, containerd and CRI-O give containers by default.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The runtime config annotation that carries the image's `StopSignal` (the OCI image
/// spec's conversion rules), the signal that asks the container to stop.
pub const STOP_SIGNAL: &str = "org.opencontainers.image.stopSignal";

/// The PATH used when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' rule for the process's argv: `command` replaces the entrypoint and drops the
/// image's cmd; `args` replaces cmd.
pub fn argv(
    entrypoint: &[String],
    cmd: &[String],
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    match (command, args) {
        (Some(c), Some(a)) => c.iter().chain(a).cloned().collect(),
        (Some(c), None) => c.to_vec(),
        (None, Some(a)) => entrypoint.iter().chain(a).cloned().collect(),
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// Merges env lists: later entries replace earlier ones with the same name, order kept.
pub fn merge_env(base: &[String], extra: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(extra) {
        let (name, _) = e.split_once('=').ok_or_else(|| SpecError::Env(e.clone()))?;
        if let Some(slot) = out
            .iter_mut()
            .find(|x| x.split_once('=').is_some_and(|(n, _)| n == name))
        {
            *slot = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups from /etc/group membership.
    pub additional_gids: Vec<u32>,
    /// Home directory (for HOME), if known.
    pub home: Option<String>,
}

/// Reads a file of the image safely (resolved inside `rootfs`; missing is `None`).
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = pathrs::Root::open(rootfs).ok()?;
    let handle = root.resolve(path).ok()?;
    let mut f = handle.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    Some(s)
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) through the image's
/// /etc/passwd and /etc/group texts, as runc's user package does.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let group_entries: Vec<Vec<&str>> = group
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let by_name = passwd_entries.iter().find(|f| f[0] == user_part);
    let (uid, mut gid, name, home) = match (user_part.parse::<u32>(), by_name) {
        (_, Some(f)) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0]),
            Some(f[5].to_string()),
        ),
        (Ok(uid), None) => {
            let f = passwd_entries
                .iter()
                .find(|f| f[2].parse::<u32>().ok() == Some(uid));
            (
                uid,
                f.and_then(|f| f[3].parse().ok()).unwrap_or(0),
                f.map(|f| f[0]),
                f.map(|f| f[5].to_string()),
            )
        }
        (Err(_), None) => {
            return Err(SpecError::UnknownUser {
                kind: "user",
                name: user_part.to_string(),
                file: "/etc/passwd",
            });
        }
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| SpecError::UnknownUser {
                    kind: "group",
                    name: g.to_string(),
                    file: "/etc/group",
                })?,
        };
    }
    let mut additional_gids: Vec<u32> = match name {
        Some(n) => group_entries
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => vec![],
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Builds the runtime spec for a container of this image whose root filesystem is at
/// `rootfs` (the merged overlay; its /etc/passwd and /etc/group are read from there).
pub fn build_spec(
    image: &ImageConfiguration,
    rootfs: &Path,
    opts: &ContainerOptions,
) -> Result<Spec, SpecError> {
    let cfg = image.config().clone().unwrap_or_default();
    let entrypoint = cfg.entrypoint().clone().unwrap_or_default();
    let cmd = cfg.cmd().clone().unwrap_or_default();
    let args = argv(
        &entrypoint,
        &cmd,
        opts.command.as_deref(),
        opts.args.as_deref(),
    );
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let user_spec = opts
        .user
        .clone()
        .or_else(|| cfg.user().clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "0".into());
    let user = resolve_user(
        &user_spec,
        read_in_root(rootfs, "/etc/passwd").as_deref(),
        read_in_root(rootfs, "/etc/group").as_deref(),
    )?;
    let mut base_env = cfg.env().clone().unwrap_or_default();
    if !base_env.iter().any(|e| e.starts_with("PATH=")) {
        base_env.insert(0, DEFAULT_PATH.to_string());
    }
    if let Some(h) = &opts.hostname {
        base_env.push(format!("HOSTNAME={h}"));
    }
    if opts.tty {
        base_env.push("TERM=xterm".into());
    }
    let mut env = merge_env(&base_env, &opts.env)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            user.home.clone().unwrap_or_else(|| "/".into())
        ));
    }
    let cwd = opts
        .working_dir
        .clone()
        .or_else(|| cfg.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());

    let mut caps: Vec<Capability> = DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| !opts.cap_drop.contains(c))
        .collect();
    for c in &opts.cap_add {
        if !caps.contains(c) {
            caps.push(*c);
        }
    }
    let capset: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capset.clone())
        .effective(capset.clone())
        .permitted(capset)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()?;

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_terminal(Some(opts.tty));
    let mut u = process.user().clone();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids((!user.additional_gids.is_empty()).then_some(user.additional_gids));
    process.set_user(u);
    process.set_capabilities(Some(capabilities));
    process.set_no_new_privileges(Some(false));
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(opts.read_only_rootfs));
    spec.set_root(Some(root));
    spec.set_hostname(opts.hostname.clone());
    let mut annotations = opts.annotations.clone();
    if let Some(sig) = cfg.stop_signal().clone().filter(|s| !s.is_empty()) {
        // as the image spec's conversion to a runtime config says; `stop` sends it
        annotations.entry(STOP_SIGNAL.to_string()).or_insert(sig);
    }
    if !annotations.is_empty() {
        spec.set_annotations(Some(annotations));
    }

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = Vec::new();
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build()?);
    }
    match &opts.network {
        Network::Host => {}
        Network::None => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        Network::Join(p) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(p.clone())
                .build()?,
        ),
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_seccomp(Some(skiff_runtime::seccomp::default_profile(&caps)));
    linux.set_cgroups_path(opts.cgroups_path.clone());
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kubernetes_command_args_table() {
        let ep = v(&["/ep"]);
        let cmd = v(&["c1", "c2"]);
        type Case = (Option<Vec<String>>, Option<Vec<String>>, Vec<String>);
        let cases: [Case; 4] = [
            (None, None, v(&["/ep", "c1", "c2"])),
            (Some(v(&["/x"])), None, v(&["/x"])),
            (None, Some(v(&["a"])), v(&["/ep", "a"])),
            (Some(v(&["/x"])), Some(v(&["a"])), v(&["/x", "a"])),
        ];
        for (command, args, want) in cases {
            assert_eq!(argv(&ep, &cmd, command.as_deref(), args.as_deref()), want);
        }
    }

    #[test]
    fn env_merge_replaces_by_name() {
        let out = merge_env(&v(&["PATH=/bin", "A=1"]), &v(&["A=2", "B=3"])).unwrap();
        assert_eq!(out, v(&["PATH=/bin", "A=2", "B=3"]));
        assert!(merge_env(&[], &v(&["NOEQ"])).is_err());
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nweb:x:1000:1000::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nweb:x:1000:\nstaff:x:50:web\naudio:x:29:web,other\n";

    #[test]
    fn user_resolution_table() {
        let r = |s| resolve_user(s, Some(PASSWD), Some(GROUP));
        assert_eq!(r("web").unwrap().uid, 1000);
        assert_eq!(r("web").unwrap().gid, 1000);
        assert_eq!(r("web").unwrap().additional_gids, vec![29, 50]);
        assert_eq!(r("web").unwrap().home.as_deref(), Some("/home/web"));
        assert_eq!(r("1000").unwrap().gid, 1000);
        assert_eq!(r("4242").unwrap().gid, 0);
        assert_eq!(r("web:staff").unwrap().gid, 50);
        assert_eq!(
            r("4242:7").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 7,
                additional_gids: vec![],
                home: None
            }
        );
        assert!(matches!(
            r("ghost"),
            Err(SpecError::UnknownUser { kind: "user", .. })
        ));
        assert!(matches!(
            r("web:ghosts"),
            Err(SpecError::UnknownUser { kind: "group", .. })
        ));
        // no passwd file at all: numeric ids still work
        assert_eq!(resolve_user("5:6", None, None).unwrap().uid, 5);
    }

    #[test]
    fn spec_from_image_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let image: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"],
                       "WorkingDir": "/srv", "User": "web", "StopSignal": "SIGQUIT"},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let opts = ContainerOptions {
            env: v(&["A=2"]),
            hostname: Some("h".into()),
            ..Default::default()
        };
        let spec = build_spec(&image, dir.path(), &opts).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &v(&["/bin/sh", "-c", "echo hi"])
        );
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=2".to_string()) && !env.contains(&"A=1".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(env.contains(&"HOME=/home/web".to_string()));
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(
            spec.annotations().as_ref().unwrap().get(STOP_SIGNAL),
            Some(&"SIGQUIT".to_string())
        );
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert!(
            caps.contains(&Capability::NetBindService) && !caps.contains(&Capability::SysAdmin)
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert!(
            linux
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network)
        );
        // the result is a spec the runtime accepts
        skiff_runtime::spec::validate(&spec).unwrap();
    }

    #[test]
    fn image_without_command_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let image: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        assert!(matches!(
            build_spec(&image, dir.path(), &ContainerOptions::default()),
            Err(SpecError::NoCommand)
        ));
    }
}

//! Privileged containers (`securityContext.privileged: true`) as containerd's CRI plugin
//! makes them for the kubelet: every capability the agent itself has (bounding, effective,
//! permitted), no seccomp filter, no masked or read-only paths, /sys and the cgroup
//! filesystem read-write, no `no_new_privs`, and the host's devices created in the
//! container's /dev with a device cgroup allowing every device.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceType, Spec,
};

use crate::container::ContainerError;

/// The capabilities by kernel number (`CAP_CHOWN` is 0, `CAP_CHECKPOINT_RESTORE` 40).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Whether the container asks to be privileged.
pub fn is_privileged(c: &Container) -> bool {
    c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
}

/// The capability bounding set of this process (`CapBnd` in `/proc/self/status`): what a
/// privileged container can get, as containerd's `WithAllCurrentCapabilities` takes the
/// caller's. `None` when it cannot be read.
pub fn current_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities whose bits are set in `mask` (bit n is capability n).
pub fn capabilities_from_mask(mask: u64) -> Vec<Capability> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .filter_map(|(_, n)| serde_json::from_value(serde_json::Value::String((*n).into())).ok())
        .collect()
}

/// Directories of /dev whose contents are not host devices to copy (containerd's
/// `HostDevices` skips them; the container gets its own pts, shm and mqueue).
const SKIPPED_DIRS: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts"];

/// The character and block devices under `dev` (recursively, but not in [`SKIPPED_DIRS`];
/// `/dev/console` is left out as containerd does), as spec devices with their modes and
/// owners.
pub fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    walk(dev, dev, &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<LinuxDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            let name = e.file_name();
            if dir == root && SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            walk(root, &path, out);
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        if rel == Path::new("console") {
            continue;
        }
        let rdev = meta.rdev();
        let built = LinuxDeviceBuilder::default()
            .path(PathBuf::from("/dev").join(rel))
            .typ(typ)
            .major(nix::sys::stat::major(rdev) as i64)
            .minor(nix::sys::stat::minor(rdev) as i64)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build();
        if let Ok(d) = built {
            out.push(d);
        }
    }
}

/// Makes `spec` privileged: all of `caps`, no seccomp, no masked or read-only paths,
/// /sys and cgroupfs read-write, `devices` created with every device allowed.
pub fn apply(
    spec: &mut Spec,
    caps: &[Capability],
    devices: Vec<LinuxDevice>,
) -> Result<(), ContainerError> {
    let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
    if let Some(mut p) = spec.process().clone() {
        let ambient = p
            .capabilities()
            .as_ref()
            .and_then(|c| c.ambient().clone())
            .unwrap_or_default();
        p.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(set.clone())
                .effective(set.clone())
                .permitted(set)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(ambient)
                .build()?,
        ));
        p.set_no_new_privileges(Some(false));
        p.set_apparmor_profile(None);
        spec.set_process(Some(p));
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_seccomp(None);
    linux.set_masked_paths(Some(Vec::new()));
    linux.set_readonly_paths(Some(Vec::new()));
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut allow_all = LinuxDeviceCgroup::default();
    allow_all.set_allow(true);
    allow_all.set_typ(Some(LinuxDeviceType::A));
    allow_all.set_access(Some("rwm".into()));
    resources.set_devices(Some(vec![allow_all]));
    linux.set_resources(Some(resources));
    let mut all = linux.devices().clone().unwrap_or_default();
    for d in devices {
        if !all.iter().any(|x| x.path() == d.path()) {
            all.push(d);
        }
    }
    linux.set_devices(Some(all));
    spec.set_linux(Some(linux));
    if let Some(mut mounts) = spec.mounts().clone() {
        for m in &mut mounts {
            let writable = matches!(m.typ().as_deref(), Some("sysfs" | "cgroup" | "cgroup2"));
            if writable && let Some(opts) = m.options().clone() {
                let opts = opts
                    .into_iter()
                    .map(|o| if o == "ro" { "rw".to_string() } else { o })
                    .collect();
                m.set_options(Some(opts));
            }
        }
        spec.set_mounts(Some(mounts));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn capabilities_of_a_mask() {
        let all = capabilities_from_mask((1 << 41) - 1);
        assert_eq!(all.len(), 41);
        assert!(all.contains(&Capability::SysAdmin) && all.contains(&Capability::Bpf));
        // bit 24 (CAP_SYS_RESOURCE) missing, as in a container that dropped it
        let some = capabilities_from_mask(0x01ff_feff_ffff);
        assert_eq!(some.len(), 40);
        assert!(!some.contains(&Capability::SysResource));
        assert_eq!(capabilities_from_mask(1), vec![Capability::Chown]);
        assert!(current_bounding_set().is_some_and(|m| m & 1 == 1));
    }

    #[test]
    fn privileged_spec() {
        let mut spec = Spec::default();
        let devices = vec![
            LinuxDeviceBuilder::default()
                .path("/dev/loop0")
                .typ(LinuxDeviceType::B)
                .major(7)
                .minor(0)
                .build()
                .unwrap(),
        ];
        apply(&mut spec, &capabilities_from_mask((1 << 41) - 1), devices).unwrap();
        let p = spec.process().as_ref().unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert_eq!(set.as_ref().unwrap().len(), 41);
        }
        assert_eq!(p.no_new_privileges(), Some(false));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
        assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
        let dev = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(dev.len(), 1);
        assert!(dev[0].allow() && dev[0].typ() == Some(LinuxDeviceType::A));
        assert_eq!(dev[0].access().as_deref(), Some("rwm"));
        assert_eq!(
            linux.devices().as_ref().unwrap()[0].path(),
            Path::new("/dev/loop0")
        );
        for m in spec.mounts().as_ref().unwrap() {
            if matches!(m.typ().as_deref(), Some("sysfs" | "cgroup")) {
                let o = m.options().as_ref().unwrap();
                assert!(o.contains(&"rw".to_string()) && !o.contains(&"ro".to_string()));
            }
        }
    }

    #[test]
    fn host_devices_of_this_machine() {
        let devs = host_devices(Path::new("/dev"));
        let has = |p: &str| devs.iter().any(|d| d.path() == Path::new(p));
        assert!(has("/dev/null"), "{devs:?}");
        assert!(!devs.iter().any(|d| d.path().starts_with("/dev/pts")));
        assert!(!has("/dev/console"));
        let null = devs
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .unwrap();
        assert_eq!(
            (null.typ(), null.major(), null.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
    }
}

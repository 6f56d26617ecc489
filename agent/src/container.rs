//! From a pod's container to a runtime spec: Kubernetes' env (valueFrom, envFrom, the
//! Service variables, `$(VAR)` expansion), command/args over the image's
//! entrypoint/cmd (skiff-rootfs has the rule), workingDir, resources → cgroup limits,
//! securityContext basics, the sandbox's namespaces and files, and volume mounts. The
//! functions here are pure; the worker gathers their inputs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxMemory, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    MountBuilder, Spec,
};
use skiff_rootfs::spec::{ContainerOptions, Network, build_spec};

use crate::qos::parse_quantity;
use crate::sandbox::SandboxPaths;

/// Errors building a container (shown as the container's waiting message).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A referenced ConfigMap/Secret/key is missing and not optional.
    #[error("{0}")]
    Config(String),
    /// The runtime spec could not be built.
    #[error("cannot build the runtime spec")]
    Spec(#[from] skiff_rootfs::spec::SpecError),
    /// An oci-spec builder refused a value.
    #[error("invalid runtime spec value")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Objects env vars refer to, fetched by the worker.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// ConfigMaps by name: data.
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    /// Secrets by name: decoded data.
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// Services of the pod's namespace (for the Service env vars).
    pub services: Vec<Service>,
}

/// Facts about the pod the downward API exposes.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// Pod IPs.
    pub pod_ips: Vec<IpAddr>,
    /// Node IP.
    pub host_ip: Option<IpAddr>,
}

fn env_name(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// The variables Kubernetes injects for every Service of the namespace (`enableServiceLinks`):
/// `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<PORT>]` and the Docker-link style
/// `<SVC>_PORT`, `<SVC>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`. Headless Services and
/// Services without an IP are skipped, as the kubelet does.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for s in sorted {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let name = env_name(s.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_ascii_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_ascii_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, unknown
/// references stay as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The value of a fieldRef (env and downwardAPI volumes).
pub(crate) fn field_ref(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, ContainerError> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => facts.host_ip.map(|i| i.to_string()).unwrap_or_default(),
        "status.hostIPs" => facts.host_ip.map(|i| i.to_string()).unwrap_or_default(),
        "status.podIP" => facts
            .pod_ips
            .first()
            .map(|i| i.to_string())
            .unwrap_or_default(),
        "status.podIPs" => facts
            .pod_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
        p => {
            if let Some(k) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&m.labels, k)
            } else if let Some(k) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&m.annotations, k)
            } else {
                return Err(ContainerError::Config(format!("unsupported fieldRef {p}")));
            }
        }
    })
}

/// The value of a resourceFieldRef (`limits.memory`, …) over its divisor, rounded up.
pub(crate) fn resource_ref(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let res = c.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = if kind == "requests" {
        res.requests
    } else {
        res.limits
    };
    let v = map
        .and_then(|m| m.get(name).and_then(parse_quantity))
        .unwrap_or(0.0);
    let d = divisor
        .and_then(|d| {
            parse_quantity(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                d.into(),
            ))
        })
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    ((v / d).ceil() as i64).to_string()
}

/// The container's environment in Kubernetes' order: Service variables first, then envFrom,
/// then env (each `$(VAR)`-expanded against what came before).
pub fn container_env(
    pod: &Pod,
    c: &Container,
    src: &EnvSources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, ContainerError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    if spec.enable_service_links != Some(false) {
        for (k, v) in service_env(&src.services) {
            set(&mut out, k, v);
        }
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, name, optional, kind) = if let Some(cm) = &from.config_map_ref {
            (
                src.config_maps.get(&cm.name),
                cm.name.clone(),
                cm.optional,
                "configmap",
            )
        } else if let Some(s) = &from.secret_ref {
            (
                src.secrets.get(&s.name),
                s.name.clone(),
                s.optional,
                "secret",
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(&mut out, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(ContainerError::Config(format!(
                    "{kind} \"{name}\" not found"
                )));
            }
        }
    }
    for e in c.env.iter().flatten() {
        let vars: HashMap<String, String> = out.iter().cloned().collect();
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, facts, &f.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_ref(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
            } else if let Some(k) = &from.config_map_key_ref {
                match src.config_maps.get(&k.name).and_then(|d| d.get(&k.key)) {
                    Some(v) => v.clone(),
                    None if k.optional == Some(true) => continue,
                    None => {
                        return Err(ContainerError::Config(format!(
                            "couldn't find key {} in ConfigMap {}/{}",
                            k.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            k.name
                        )));
                    }
                }
            } else if let Some(k) = &from.secret_key_ref {
                match src.secrets.get(&k.name).and_then(|d| d.get(&k.key)) {
                    Some(v) => v.clone(),
                    None if k.optional == Some(true) => continue,
                    None => {
                        return Err(ContainerError::Config(format!(
                            "couldn't find key {} in Secret {}/{}",
                            k.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            k.name
                        )));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

/// cgroup limits from the container's resources, as the kubelet computes them: shares from
/// the cpu request (limit when no request), quota from the cpu limit over a 100 ms period,
/// the memory limit.
pub fn resources(c: &Container) -> LinuxResources {
    let res = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).and_then(parse_quantity) };
    let cpu_req = get(&res.requests, "cpu").or_else(|| get(&res.limits, "cpu"));
    let cpu_lim = get(&res.limits, "cpu");
    let mem_lim = get(&res.limits, "memory");
    let mut cpu = LinuxCpu::default();
    let millis = |v: f64| (v * 1000.0).ceil() as u64;
    cpu.set_shares(Some(
        cpu_req
            .map(|v| (millis(v) * 1024 / 1000).max(2))
            .unwrap_or(2),
    ));
    if let Some(l) = cpu_lim {
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some((millis(l) * 100_000 / 1000).max(1000) as i64));
    }
    let mut r = LinuxResources::default();
    r.set_cpu(Some(cpu));
    if let Some(m) = mem_lim {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m as i64));
        r.set_memory(Some(mem));
    }
    r
}

/// One bind mount for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path in the container.
    pub destination: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// Everything besides the pod and the image a container's spec depends on.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    /// The sandbox.
    pub sandbox: &'a SandboxPaths,
    /// Environment (already resolved).
    pub env: Vec<(String, String)>,
    /// The container's cgroup path.
    pub cgroup: PathBuf,
    /// Volume mounts (already resolved to host paths).
    pub mounts: Vec<BindMount>,
}

fn capability(name: &str) -> Result<Capability, ContainerError> {
    let full = if name.starts_with("CAP_") {
        name.to_string()
    } else {
        format!("CAP_{name}")
    };
    serde_json::from_value(serde_json::Value::String(full.to_ascii_uppercase()))
        .map_err(|_| ContainerError::Config(format!("unknown capability {name}")))
}

/// Builds the runtime spec of container `c` of `pod` from the image config, rooted at
/// `rootfs`.
pub fn spec(
    pod: &Pod,
    c: &Container,
    image: &oci_spec::image::ImageConfiguration,
    rootfs: &Path,
    inputs: &SpecInputs<'_>,
) -> Result<Spec, ContainerError> {
    let pspec = pod.spec.clone().unwrap_or_default();
    let host_network = pspec.host_network == Some(true);
    let vars: HashMap<String, String> = inputs.env.iter().cloned().collect();
    let exp = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|list| list.iter().map(|s| expand(s, &vars)).collect::<Vec<_>>())
    };
    let psc = pspec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let uid = sc.run_as_user.or(psc.run_as_user);
    let gid = sc.run_as_group.or(psc.run_as_group);
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    let opts = ContainerOptions {
        command: exp(&c.command),
        args: exp(&c.args),
        env: inputs.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        tty: c.tty == Some(true),
        hostname: (!host_network).then(|| hostname.clone()),
        network: match &inputs.sandbox.netns {
            Some(p) => Network::Join(p.clone()),
            None => Network::Host,
        },
        read_only_rootfs: sc.read_only_root_filesystem == Some(true),
        cap_add: caps
            .add
            .iter()
            .flatten()
            .map(|n| capability(n))
            .collect::<Result<_, _>>()?,
        cap_drop: caps
            .drop
            .iter()
            .flatten()
            .map(|n| capability(n))
            .collect::<Result<_, _>>()?,
        annotations: HashMap::new(),
        cgroups_path: Some(inputs.cgroup.clone()),
    };
    let mut spec = build_spec(image, rootfs, &opts)?;
    // namespaces: the pod's IPC and UTS joined by path; the host's UTS for hostNetwork pods
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = Vec::new();
    for ns in linux.namespaces().clone().unwrap_or_default() {
        match ns.typ() {
            LinuxNamespaceType::Ipc => namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Ipc)
                    .path(inputs.sandbox.ipc.clone())
                    .build()?,
            ),
            LinuxNamespaceType::Uts => {
                if let Some(uts) = &inputs.sandbox.uts {
                    namespaces.push(
                        LinuxNamespaceBuilder::default()
                            .typ(LinuxNamespaceType::Uts)
                            .path(uts.clone())
                            .build()?,
                    );
                }
            }
            _ => namespaces.push(ns),
        }
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources(c)));
    spec.set_linux(Some(linux));
    if host_network {
        spec.set_hostname(None);
    }
    if let Some(p) = spec.process().clone() {
        let mut p = p;
        if sc.allow_privilege_escalation == Some(false) {
            p.set_no_new_privileges(Some(true));
        }
        spec.set_process(Some(p));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut bind = |src: &Path, dst: &str, ro: bool| -> Result<(), ContainerError> {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if ro { "ro" } else { "rw" }.to_string());
        mounts.retain(|m| m.destination() != Path::new(dst));
        mounts.push(
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(options)
                .build()?,
        );
        Ok(())
    };
    bind(&inputs.sandbox.hosts, "/etc/hosts", false)?;
    bind(&inputs.sandbox.hostname, "/etc/hostname", false)?;
    bind(&inputs.sandbox.resolv, "/etc/resolv.conf", false)?;
    for m in &inputs.mounts {
        bind(&m.source, &m.destination.to_string_lossy(), m.read_only)?;
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn svc(name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": ports}}),
        )
        .unwrap()
    }

    #[test]
    fn service_variables_as_kubelet() {
        let services = vec![
            svc(
                "web-svc",
                "10.96.0.20",
                json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
            ),
            svc("headless", "None", json!([{"port": 80}])),
        ];
        let env: HashMap<_, _> = service_env(&services).into_iter().collect();
        let want = [
            ("WEB_SVC_SERVICE_HOST", "10.96.0.20"),
            ("WEB_SVC_SERVICE_PORT", "80"),
            ("WEB_SVC_SERVICE_PORT_HTTP", "80"),
            ("WEB_SVC_PORT", "tcp://10.96.0.20:80"),
            ("WEB_SVC_PORT_80_TCP", "tcp://10.96.0.20:80"),
            ("WEB_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("WEB_SVC_PORT_80_TCP_PORT", "80"),
            ("WEB_SVC_PORT_80_TCP_ADDR", "10.96.0.20"),
            ("WEB_SVC_PORT_53_UDP", "udp://10.96.0.20:53"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(env.len(), 12);
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
    }

    #[test]
    fn expansion_table() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y", "x1y"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$", "$"),
            ("$(A", "$(A"),
            ("é$(A)", "é1"),
        ] {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    #[test]
    fn env_sources_and_order() {
        let p = pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{
            "name": "c", "image": "i",
            "resources": {"limits": {"memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                {"name": "GREETING", "value": "hi $(NAME) on $(NODE)"}
            ]}]}}));
        let mut src = EnvSources::default();
        src.config_maps
            .insert("cm".into(), [("k".to_string(), "v".to_string())].into());
        src.secrets.insert(
            "s".into(),
            [("pw".to_string(), "hunter2".to_string())].into(),
        );
        src.services
            .push(svc("db", "10.96.0.9", json!([{"port": 5432}])));
        let facts = PodFacts {
            pod_ips: vec!["10.244.0.7".parse().unwrap()],
            host_ip: None,
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = container_env(&p, c, &src, &facts).unwrap();
        let m: HashMap<_, _> = env.iter().cloned().collect();
        assert_eq!(env[0].0, "DB_SERVICE_HOST", "service variables come first");
        assert_eq!(m["CM_k"], "v");
        assert_eq!(m["NAME"], "p");
        assert_eq!(m["NODE"], "n1");
        assert_eq!(m["APP"], "web");
        assert_eq!(m["IP"], "10.244.0.7");
        assert_eq!(m["MEM"], "64");
        assert_eq!(m["K"], "v");
        assert_eq!(m["S"], "hunter2");
        assert!(!m.contains_key("OPT"));
        assert_eq!(m["GREETING"], "hi p on n1");
        // service links off
        let mut p2 = p.clone();
        p2.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = container_env(&p2, c, &src, &facts).unwrap();
        assert!(!env.iter().any(|(k, _)| k.starts_with("DB_")));
        // a missing required key is an error naming it
        src.secrets.clear();
        let err = container_env(&p, c, &src, &facts).unwrap_err().to_string();
        assert_eq!(err, "couldn't find key pw in Secret ns/s");
    }

    #[test]
    fn resources_to_cgroup_limits() {
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "128Mi"}}}))
        .unwrap();
        let r = resources(&c);
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(128 << 20));
        let none: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let r = resources(&none);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), None);
        assert!(r.memory().is_none());
    }

    #[test]
    fn spec_joins_the_sandbox_and_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "command": ["/bin/sh", "-c"],
                "args": ["echo $(X)"], "workingDir": "/w",
                "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"], "drop": ["KILL"]}}}]}}),
        );
        let image: oci_spec::image::ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": []}}))
        .unwrap();
        // real namespace files, so the runtime's validation can open them
        let mut sb = SandboxPaths::new(Path::new("/run/a"), Path::new("/run/a/pods/u"), "u", false);
        sb.netns = Some("/proc/self/ns/net".into());
        sb.ipc = "/proc/self/ns/ipc".into();
        sb.uts = Some("/proc/self/ns/uts".into());
        let inputs = SpecInputs {
            sandbox: &sb,
            env: vec![("X".into(), "1".into())],
            cgroup: "/t/besteffort/podu/u-c".into(),
            mounts: vec![BindMount {
                source: "/v/data".into(),
                destination: "/data".into(),
                read_only: true,
            }],
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let s = spec(&p, c, &image, dir.path(), &inputs).unwrap();
        let proc_ = s.process().as_ref().unwrap();
        assert_eq!(
            proc_.args().as_ref().unwrap(),
            &vec!["/bin/sh".to_string(), "-c".into(), "echo 1".into()]
        );
        assert_eq!(proc_.cwd(), Path::new("/w"));
        assert_eq!(proc_.user().uid(), 1000);
        assert_eq!(proc_.no_new_privileges(), Some(true));
        let bounding = proc_
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert!(bounding.contains(&Capability::NetAdmin) && !bounding.contains(&Capability::Kill));
        assert_eq!(s.hostname().as_deref(), Some("web"));
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
        let linux = s.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        let path_of = |t| {
            ns.iter()
                .find(|n| n.typ() == t)
                .and_then(|n| n.path().clone())
        };
        assert_eq!(
            path_of(LinuxNamespaceType::Network),
            Some(PathBuf::from("/proc/self/ns/net"))
        );
        assert_eq!(
            path_of(LinuxNamespaceType::Ipc),
            Some(PathBuf::from("/proc/self/ns/ipc"))
        );
        assert_eq!(
            path_of(LinuxNamespaceType::Uts),
            Some(PathBuf::from("/proc/self/ns/uts"))
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/t/besteffort/podu/u-c"))
        );
        let mounts = s.mounts().as_ref().unwrap();
        let m = |d: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        assert_eq!(
            m("/etc/hosts").source().as_deref(),
            Some(Path::new("/run/a/pods/u/etc/hosts"))
        );
        assert!(
            m("/data")
                .options()
                .as_ref()
                .unwrap()
                .contains(&"ro".to_string())
        );
        skiff_runtime::spec::validate(&s).unwrap();
        // hostNetwork: no netns or uts entries, no hostname
        let mut hp = p.clone();
        hp.spec.as_mut().unwrap().host_network = Some(true);
        let mut sb = SandboxPaths::new(Path::new("/run/a"), Path::new("/run/a/pods/u"), "u", true);
        sb.ipc = "/proc/self/ns/ipc".into();
        let inputs = SpecInputs {
            sandbox: &sb,
            ..inputs.clone()
        };
        let s = spec(&hp, c, &image, dir.path(), &inputs).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| matches!(
            n.typ(),
            LinuxNamespaceType::Network | LinuxNamespaceType::Uts
        )));
        assert_eq!(s.hostname(), &None);
        skiff_runtime::spec::validate(&s).unwrap();
    }
}

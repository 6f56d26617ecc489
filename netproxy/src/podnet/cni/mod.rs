//! Standard CNI plugins as the pod network (`skiff agent --pod-network cni`), run as libcni
//! runs them for the kubelet (CNI spec 1.0):
//!
//! - the network is the first configuration file of the conf dir ([`conf`]);
//! - ADD runs the list's plugins in order, each with `CNI_COMMAND`, `CNI_CONTAINERID`,
//!   `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
//!   `K8S_POD_INFRA_CONTAINER_ID`, `K8S_POD_UID`), `CNI_PATH`, and its configuration on stdin
//!   with `name` and `cniVersion` injected, the capability arguments it declares as
//!   `runtimeConfig` (`portMappings` from hostPorts) and the previous plugin's result as
//!   `prevResult`; the last result holds the pod's addresses;
//! - DEL runs them in reverse order with the cached result as `prevResult`; CHECK in order;
//!   VERSION asks a plugin which spec versions it speaks;
//! - the result is cached as libcni's `cniCacheV1` record under
//!   `<cache-dir>/results/<network>-<container id>-<ifname>`, written before ADD runs (so a
//!   half-failed ADD is deleted too, also after a restart) and removed after a DEL that
//!   succeeded; DEL takes the configuration it needs from the record, so the plugins get
//!   the same configuration and prevResult after an agent restart or a conf change.
//!
//! A plugin that fails answers with the spec's error JSON (`code`, `msg`, `details`), which
//! becomes [`Error::Plugin`].

pub mod conf;
pub mod result;

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use conf::NetworkList;
pub use result::PluginError;

use super::PortMapping;

/// Errors of the CNI provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A network configuration file is not valid.
    #[error("invalid CNI network configuration {path}: {message}")]
    InvalidConf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The conf dir holds no network configuration.
    #[error("no CNI network configuration in {dir}")]
    NoConfig {
        /// The conf dir.
        dir: PathBuf,
    },
    /// No plugin binary of that type in the bin dirs.
    #[error("failed to find plugin {plugin_type:?} in path {path}")]
    PluginNotFound {
        /// The plugin type.
        plugin_type: String,
        /// `CNI_PATH`.
        path: String,
    },
    /// A plugin could not be started or its stdin not written.
    #[error("cannot run the CNI plugin {path}")]
    Exec {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A plugin failed.
    #[error("plugin type={plugin_type:?} name={network:?} failed ({command}): {error}")]
    Plugin {
        /// The plugin type.
        plugin_type: String,
        /// The network name.
        network: String,
        /// `add`, `del`, `check` or `version`.
        command: &'static str,
        /// What it answered.
        error: PluginError,
    },
    /// A plugin printed something that is not a JSON result.
    #[error("plugin type={plugin_type:?} printed an invalid result: {message}")]
    BadResult {
        /// The plugin type.
        plugin_type: String,
        /// Why it is invalid.
        message: String,
    },
    /// A plugin does not speak the configuration's spec version.
    #[error(
        "plugin type={plugin_type:?} does not support CNI version {version:?} (it does {supported:?})"
    )]
    Unsupported {
        /// The plugin type.
        plugin_type: String,
        /// The configuration's `cniVersion`.
        version: String,
        /// The plugin's `supportedVersions`.
        supported: Vec<String>,
    },
    /// CHECK of a pod that has no cached result.
    #[error("no cached CNI result for container {container_id}")]
    NotAttached {
        /// The container id.
        container_id: String,
    },
    /// Entering the node's network namespace failed.
    #[error("cannot run the CNI plugin in the node's network namespace")]
    Namespace(#[source] Box<super::Error>),
}

/// The CNI provider's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the provider finds its configuration and plugins and keeps its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// `--cni-conf-dir` (default /etc/cni/net.d).
    pub conf_dir: PathBuf,
    /// `--cni-bin-dir` (default /opt/cni/bin; repeatable: `CNI_PATH` holds them all).
    pub bin_dirs: Vec<PathBuf>,
    /// The result cache (libcni: /var/lib/cni).
    pub cache_dir: PathBuf,
    /// The pod's interface name (eth0).
    pub ifname: String,
    /// The node's network namespace (`None`: the caller's; tests give a path).
    pub node_netns: Option<PathBuf>,
}

/// Default `--cni-conf-dir`.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Default `--cni-bin-dir`.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// The pod being attached, as the kubelet describes it to the plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// `CNI_CONTAINERID` and `K8S_POD_INFRA_CONTAINER_ID` (skiff has no infra container:
    /// the sandbox is named by the pod uid).
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`.
    pub uid: String,
    /// hostPorts, for the `portMappings` capability.
    pub port_mappings: Vec<PortMapping>,
}

/// What ADD gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// The last plugin's result.
    pub result: Value,
}

/// libcni's cache record (`cniCacheV1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    /// Always `cniCacheV1`.
    pub kind: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The network configuration list, base64 (Go's `[]byte` in JSON).
    pub config: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The network's name.
    pub network_name: String,
    /// `CNI_NETNS` at ADD.
    #[serde(default)]
    pub netns: String,
    /// The `CNI_ARGS` pairs.
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments given at ADD.
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The ADD result (absent while ADD runs or after it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Whether a spec version has DEL with `prevResult` and CHECK (0.4.0 and later).
pub fn has_check(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major >= 1 || minor >= 4
}

/// The CNI provider.
#[derive(Debug, Clone)]
pub struct Cni {
    cfg: CniConfig,
}

impl Cni {
    /// A provider with these settings.
    pub fn new(cfg: CniConfig) -> Cni {
        Cni { cfg }
    }

    /// Its settings.
    pub fn config(&self) -> &CniConfig {
        &self.cfg
    }

    /// The network configuration in use now (`None`: the conf dir holds none yet).
    pub fn network(&self) -> Result<Option<NetworkList>> {
        Ok(conf::load_dir(&self.cfg.conf_dir)?.map(|(_, l)| l))
    }

    fn cni_path(&self) -> String {
        let dirs: Vec<String> = self
            .cfg
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }

    fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        self.cfg
            .bin_dirs
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::PluginNotFound {
                plugin_type: plugin_type.into(),
                path: self.cni_path(),
            })
    }

    /// Runs one plugin; its stdout on success.
    fn exec(
        &self,
        command: &'static str,
        network: &str,
        plugin_type: &str,
        env: &[(&str, String)],
        stdin: &Value,
    ) -> Result<Vec<u8>> {
        let path = self.find_plugin(plugin_type)?;
        let input = serde_json::to_vec(stdin).map_err(|e| Error::BadResult {
            plugin_type: plugin_type.into(),
            message: e.to_string(),
        })?;
        let mut cmd = Command::new(&path);
        cmd.env("CNI_COMMAND", command.to_uppercase())
            .env("CNI_PATH", self.cni_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut run = move || -> Result<std::process::Output> {
            let exec_err = |source| Error::Exec {
                path: path.clone(),
                source,
            };
            let mut child = cmd.spawn().map_err(exec_err)?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(&input).map_err(exec_err)?;
            }
            child.wait_with_output().map_err(exec_err)
        };
        let out = match &self.cfg.node_netns {
            None => run()?,
            Some(ns) => super::Netns::open(ns)
                .and_then(|n| n.run(move || Ok(run())))
                .map_err(|e| Error::Namespace(Box::new(e)))??,
        };
        tracing::debug!(command, plugin_type, status = ?out.status, "CNI plugin ran");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::Plugin {
                plugin_type: plugin_type.into(),
                network: network.into(),
                command,
                error: result::plugin_error(&out.stdout, &out.stderr),
            })
        }
    }

    /// The spec versions a plugin speaks (VERSION).
    pub fn versions(&self, plugin_type: &str, cni_version: &str) -> Result<Vec<String>> {
        let out = self.exec(
            "version",
            "",
            plugin_type,
            &[],
            &serde_json::json!({ "cniVersion": cni_version }),
        )?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| Error::BadResult {
            plugin_type: plugin_type.into(),
            message: e.to_string(),
        })?;
        Ok(v.get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Checks that every plugin of the list (and its IPAM plugin) exists and speaks the
    /// list's version, as libcni's `ValidateNetworkList`.
    pub fn validate(&self, list: &NetworkList) -> Result<()> {
        let mut types: Vec<&str> = Vec::new();
        for p in &list.plugins {
            types.extend(p.get("type").and_then(Value::as_str));
            types.extend(
                p.get("ipam")
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str),
            );
        }
        types.dedup();
        for t in types {
            let supported = self.versions(t, &list.cni_version)?;
            if !supported.contains(&list.cni_version) {
                return Err(Error::Unsupported {
                    plugin_type: t.into(),
                    version: list.cni_version.clone(),
                    supported,
                });
            }
        }
        Ok(())
    }

    fn results_dir(&self) -> PathBuf {
        self.cfg.cache_dir.join("results")
    }

    fn record_path(&self, network: &str, container_id: &str) -> PathBuf {
        self.results_dir()
            .join(format!("{network}-{container_id}-{}", self.cfg.ifname))
    }

    fn save(&self, rec: &CacheRecord) -> Result<()> {
        let dir = self.results_dir();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let path = self.record_path(&rec.network_name, &rec.container_id);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(rec).map_err(|e| Error::BadResult {
            plugin_type: String::new(),
            message: e.to_string(),
        })?;
        let io = |what, p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io {
                what,
                path: p,
                source,
            }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))
    }

    /// Every cache record of this interface name, with its file.
    pub fn records(&self) -> Result<Vec<(PathBuf, CacheRecord)>> {
        let dir = self.results_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    what: "read",
                    path: dir,
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<CacheRecord>(&bytes) {
                Ok(r) if r.kind == "cniCacheV1" && r.if_name == self.cfg.ifname => {
                    out.push((path, r))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "ignoring an unreadable CNI cache record"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn env(
        container_id: &str,
        netns: &str,
        ifname: &str,
        args: &[(String, String)],
    ) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_CONTAINERID", container_id.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", ifname.to_string()),
            ("CNI_ARGS", result::cni_args(args)),
        ]
    }

    /// ADD: attaches the pod to the network of the conf dir and returns its addresses.
    /// On failure the cache record stays, so [`Cni::del`] cleans up what the plugins that
    /// ran did.
    pub fn add(&self, pod: &PodAttachment) -> Result<Added> {
        let list = self.network()?.ok_or_else(|| Error::NoConfig {
            dir: self.cfg.conf_dir.clone(),
        })?;
        let args = vec![
            ("K8S_POD_NAMESPACE".to_string(), pod.namespace.clone()),
            ("K8S_POD_NAME".to_string(), pod.name.clone()),
            (
                "K8S_POD_INFRA_CONTAINER_ID".to_string(),
                pod.container_id.clone(),
            ),
            ("K8S_POD_UID".to_string(), pod.uid.clone()),
        ];
        let mut caps = Map::new();
        if !pod.port_mappings.is_empty() {
            caps.insert(
                "portMappings".into(),
                result::port_mappings(&pod.port_mappings),
            );
        }
        let netns = pod.netns.display().to_string();
        let mut rec = CacheRecord {
            kind: "cniCacheV1".into(),
            container_id: pod.container_id.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(&list.bytes),
            if_name: self.cfg.ifname.clone(),
            network_name: list.name.clone(),
            netns: netns.clone(),
            cni_args: args.clone(),
            capability_args: caps.clone(),
            result: None,
        };
        self.save(&rec)?;
        let env = Self::env(&pod.container_id, &netns, &self.cfg.ifname, &args);
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let t = plugin
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let stdin =
                result::plugin_stdin(&list.name, &list.cni_version, plugin, &caps, prev.as_ref());
            let out = self.exec("add", &list.name, t, &env, &stdin)?;
            let r: Value = serde_json::from_slice(&out).map_err(|e| Error::BadResult {
                plugin_type: t.into(),
                message: e.to_string(),
            })?;
            prev = Some(r);
        }
        let result = prev.unwrap_or(Value::Null);
        rec.result = Some(result.clone());
        self.save(&rec)?;
        let ips = result::pod_ips(&result);
        tracing::info!(network = %list.name, container_id = %pod.container_id, ips = ?ips,
            "CNI ADD done");
        Ok(Added { ips, result })
    }

    /// DEL of every network the container was added to (its cache records), each list in
    /// reverse order with the cached result as `prevResult`; `netns` is given to the plugins
    /// while it exists (else empty, as after a reboot). Returns whether there was anything.
    pub fn del(&self, container_id: &str, netns: &Path) -> Result<bool> {
        let mut any = false;
        for (path, rec) in self.records()? {
            if rec.container_id != container_id {
                continue;
            }
            any = true;
            self.del_record(&path, &rec, netns)?;
        }
        Ok(any)
    }

    /// The configuration list a cache record was made with.
    fn cached_list(path: &Path, rec: &CacheRecord) -> Result<NetworkList> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&rec.config)
            .map_err(|e| Error::InvalidConf {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        conf::parse_list(&bytes, path)
    }

    /// Runs `command` for `plugins` with one `prevResult` for all (DEL, CHECK).
    fn run_all<'a>(
        &self,
        command: &'static str,
        list: &NetworkList,
        plugins: impl Iterator<Item = &'a Map<String, Value>>,
        rec: &CacheRecord,
        netns: &str,
        prev: Option<&Value>,
    ) -> Result<()> {
        let env = Self::env(&rec.container_id, netns, &rec.if_name, &rec.cni_args);
        for plugin in plugins {
            let t = plugin
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let stdin = result::plugin_stdin(
                &list.name,
                &list.cni_version,
                plugin,
                &rec.capability_args,
                prev,
            );
            self.exec(command, &list.name, t, &env, &stdin)?;
        }
        Ok(())
    }

    fn del_record(&self, path: &Path, rec: &CacheRecord, netns: &Path) -> Result<()> {
        let list = Self::cached_list(path, rec)?;
        let ns = if netns.exists() {
            netns.display().to_string()
        } else {
            String::new()
        };
        let prev = rec.result.as_ref().filter(|_| has_check(&list.cni_version));
        self.run_all("del", &list, list.plugins.iter().rev(), rec, &ns, prev)?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                what: "remove",
                path: path.to_path_buf(),
                source: e,
            }),
            _ => {
                tracing::info!(network = %list.name, container_id = %rec.container_id,
                    "CNI DEL done");
                Ok(())
            }
        }
    }

    /// CHECK of the container's networks (spec 0.4.0 and later, unless `disableCheck`).
    pub fn check(&self, container_id: &str, netns: &Path) -> Result<()> {
        let recs: Vec<_> = self
            .records()?
            .into_iter()
            .filter(|(_, r)| r.container_id == container_id && r.result.is_some())
            .collect();
        if recs.is_empty() {
            return Err(Error::NotAttached {
                container_id: container_id.into(),
            });
        }
        for (path, rec) in recs {
            let list = Self::cached_list(&path, &rec)?;
            if list.disable_check || !has_check(&list.cni_version) {
                continue;
            }
            let ns = netns.display().to_string();
            self.run_all(
                "check",
                &list,
                list.plugins.iter(),
                &rec,
                &ns,
                rec.result.as_ref(),
            )?;
        }
        Ok(())
    }

    /// DEL of every cached container not in `live` (pods removed while the agent was
    /// down); returns their ids. A failed DEL is logged and kept for the next time.
    pub fn retain(&self, live: &HashSet<String>) -> Result<Vec<String>> {
        let mut gone = Vec::new();
        for (path, rec) in self.records()? {
            if live.contains(&rec.container_id) {
                continue;
            }
            match self.del_record(&path, &rec, Path::new(&rec.netns)) {
                Ok(()) => gone.push(rec.container_id),
                Err(e) => tracing::warn!(container_id = %rec.container_id, error = %e,
                    "cannot delete a stale CNI attachment"),
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests;

//! The plugin protocol, with shell-script plugins that log what they were given (env and
//! stdin) and answer as the spec says. The real plugins run in the agent's CNI test.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;
use crate::podnet::hostport::Protocol;

struct Setup {
    dir: tempfile::TempDir,
    cni: Cni,
}

/// A plugin: logs `COMMAND TYPE CONTAINERID NETNS IFNAME ARGS` and its stdin (one line of
/// JSON) to `<dir>/log`; fails when `<dir>/fail-<type>` exists; ADD prints a result with its
/// type and the pod address 10.9.0.5 on the sandbox interface.
const PLUGIN: &str = r#"#!/bin/sh
t=$(basename "$0")
d=$(dirname "$0")/..
in=$(cat)
echo "$CNI_COMMAND $t $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_ARGS" >> "$d/log"
echo "$in" >> "$d/log"
if [ -e "$d/fail-$t" ]; then
  echo '{"cniVersion":"1.0.0","code":7,"msg":"cannot do it","details":"'"$t"'"}'
  exit 1
fi
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
ADD) echo '{"cniVersion":"1.0.0","by":"'"$t"'","interfaces":[{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"address":"10.9.0.5/24","interface":0}]}' ;;
esac
"#;

fn setup(conflist: Value) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for t in ["first", "second"] {
        let p = bin.join(t);
        std::fs::write(&p, PLUGIN).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conf = dir.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("10-test.conflist"), conflist.to_string()).unwrap();
    let cni = Cni::new(CniConfig {
        conf_dir: conf,
        bin_dirs: vec![dir.path().join("nothing-here"), bin],
        cache_dir: dir.path().join("cache"),
        ifname: "eth0".into(),
        node_netns: None,
    });
    Setup { dir, cni }
}

impl Setup {
    /// The logged calls: (header words, stdin JSON).
    fn calls(&self) -> Vec<(Vec<String>, Value)> {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .chunks(2)
            .map(|c| {
                (
                    c[0].split(' ').map(String::from).collect(),
                    serde_json::from_str(c[1]).unwrap(),
                )
            })
            .collect()
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("log"));
    }
}

fn list() -> Value {
    json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [
        {"type": "first", "ipam": {"type": "second"}},
        {"type": "second", "capabilities": {"portMappings": true}},
    ]})
}

fn pod(netns: &Path) -> PodAttachment {
    PodAttachment {
        container_id: "uid-1".into(),
        netns: netns.to_path_buf(),
        namespace: "default".into(),
        name: "web".into(),
        uid: "uid-1".into(),
        port_mappings: vec![PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        }],
    }
}

#[test]
fn add_check_del_run_the_chain_as_libcni() {
    let s = setup(list());
    let netns = s.dir.path().join("netns");
    std::fs::write(&netns, "").unwrap();
    let list = s.cni.network().unwrap().unwrap();
    s.cni.validate(&list).unwrap();
    s.clear();

    let added = s.cni.add(&pod(&netns)).unwrap();
    assert_eq!(added.ips, vec!["10.9.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(added.result["by"], "second");
    let calls = s.calls();
    assert_eq!(calls.len(), 2);
    let ns = netns.display().to_string();
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
        K8S_POD_INFRA_CONTAINER_ID=uid-1;K8S_POD_UID=uid-1";
    for ((head, _), t) in calls.iter().zip(["first", "second"]) {
        assert_eq!(head, &["ADD", t, "uid-1", &ns, "eth0", args]);
    }
    // name and version injected; no prevResult for the first, the first's result for the
    // second; portMappings only for the plugin that declares the capability
    assert_eq!(calls[0].1["name"], "testnet");
    assert_eq!(calls[0].1["cniVersion"], "1.0.0");
    assert!(calls[0].1.get("prevResult").is_none() && calls[0].1.get("runtimeConfig").is_none());
    assert_eq!(calls[1].1["prevResult"]["by"], "first");
    assert_eq!(
        calls[1].1["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]})
    );
    // the cache record, as libcni names and writes it
    let recs = s.cni.records().unwrap();
    assert_eq!(recs.len(), 1);
    let (path, rec) = &recs[0];
    assert_eq!(path, &s.dir.path().join("cache/results/testnet-uid-1-eth0"));
    assert_eq!(rec.kind, "cniCacheV1");
    assert_eq!(rec.result.as_ref().unwrap()["by"], "second");
    let config = base64::engine::general_purpose::STANDARD
        .decode(&rec.config)
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&config).unwrap(),
        list.bytes_json()
    );

    s.clear();
    s.cni.check("uid-1", &netns).unwrap();
    let calls = s.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0[0].as_str(), c.0[1].as_str()))
            .collect::<Vec<_>>(),
        [("CHECK", "first"), ("CHECK", "second")]
    );
    assert!(calls.iter().all(|c| c.1["prevResult"]["by"] == "second"));

    // DEL uses the cached configuration even when the conf dir changed meanwhile
    std::fs::remove_file(s.dir.path().join("net.d/10-test.conflist")).unwrap();
    s.clear();
    assert!(s.cni.del("uid-1", &netns).unwrap());
    let calls = s.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0[0].as_str(), c.0[1].as_str()))
            .collect::<Vec<_>>(),
        [("DEL", "second"), ("DEL", "first")]
    );
    for (head, stdin) in &calls {
        assert_eq!(head[5], args);
        assert_eq!(stdin["prevResult"]["by"], "second");
    }
    assert_eq!(
        calls[0].1["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(s.cni.records().unwrap().is_empty());
    // nothing recorded: nothing to do
    s.clear();
    assert!(!s.cni.del("uid-1", &netns).unwrap());
    assert!(s.calls().is_empty());
    assert!(matches!(
        s.cni.check("uid-1", &netns),
        Err(Error::NotAttached { .. })
    ));
}

#[test]
fn a_half_failed_add_is_deleted_and_retain_cleans_up() {
    let s = setup(list());
    let netns = s.dir.path().join("netns");
    std::fs::write(s.dir.path().join("fail-second"), "").unwrap();
    let err = s.cni.add(&pod(&netns)).unwrap_err();
    match &err {
        Error::Plugin {
            plugin_type,
            network,
            command,
            error,
        } => {
            assert_eq!(
                (plugin_type.as_str(), network.as_str(), *command),
                ("second", "testnet", "add")
            );
            assert_eq!(error.code, 7);
            assert_eq!(error.to_string(), "cannot do it; second");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        err.to_string(),
        r#"plugin type="second" name="testnet" failed (add): cannot do it; second"#
    );
    // the record stays without a result; DEL (the netns gone: empty CNI_NETNS) runs the
    // whole list in reverse, without prevResult, and fails while a plugin fails
    let recs = s.cni.records().unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].1.result.is_none());
    s.clear();
    assert!(s.cni.del("uid-1", &netns).is_err());
    assert_eq!(s.cni.records().unwrap().len(), 1);
    std::fs::remove_file(s.dir.path().join("fail-second")).unwrap();
    s.clear();
    assert!(s.cni.del("uid-1", &netns).unwrap());
    let calls = s.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0[..5], ["DEL", "second", "uid-1", "", "eth0"]);
    assert_eq!(calls[1].0[1], "first");
    assert!(calls.iter().all(|c| c.1.get("prevResult").is_none()));

    // retain deletes what is not live and keeps the rest
    for id in ["a", "b"] {
        let mut p = pod(&netns);
        p.container_id = id.into();
        s.cni.add(&p).unwrap();
    }
    let gone = s.cni.retain(&HashSet::from(["b".to_string()])).unwrap();
    assert_eq!(gone, ["a"]);
    let left: Vec<String> = s
        .cni
        .records()
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.container_id)
        .collect();
    assert_eq!(left, ["b"]);
}

#[test]
fn errors_before_any_plugin_runs() {
    let s = setup(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "absent"}]}));
    let netns = s.dir.path().join("netns");
    match s.cni.add(&pod(&netns)) {
        Err(Error::PluginNotFound { plugin_type, path }) => {
            assert_eq!(plugin_type, "absent");
            assert!(path.contains(':'), "{path}");
        }
        r => panic!("{r:?}"),
    }
    let old = setup(json!({"cniVersion": "0.3.1", "name": "n", "plugins": [{"type": "first"}]}));
    let l = old.cni.network().unwrap().unwrap();
    assert!(matches!(
        old.cni.validate(&l),
        Err(Error::Unsupported { .. })
    ));
    std::fs::remove_file(old.dir.path().join("net.d/10-test.conflist")).unwrap();
    assert!(matches!(
        old.cni.add(&pod(&netns)),
        Err(Error::NoConfig { .. })
    ));
}

#[test]
fn versions_with_check() {
    for (v, want) in [
        ("0.1.0", false),
        ("0.3.1", false),
        ("0.4.0", true),
        ("1.0.0", true),
        ("1.1.0", true),
    ] {
        assert_eq!(has_check(v), want, "{v}");
    }
}

impl NetworkList {
    fn bytes_json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap()
    }
}

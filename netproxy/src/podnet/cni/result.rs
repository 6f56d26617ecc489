//! What plugins print: results (for the pod's addresses) and errors (CNI spec 1.0, "Result"
//! and "Error"), and the stdin and `CNI_ARGS` they are given.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::podnet::PortMapping;

/// A plugin's error answer (`{"cniVersion", "code", "msg", "details"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// `code` (1–99 are the spec's, e.g. 7 invalid network config, 11 try again later).
    pub code: u32,
    /// `msg`.
    pub msg: String,
    /// `details`.
    pub details: String,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

/// The error of a plugin that exited non-zero: its error JSON on stdout, else (a plugin
/// that does not follow the spec) its stderr or stdout as the message.
pub fn plugin_error(stdout: &[u8], stderr: &[u8]) -> PluginError {
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(stdout)
        && let Some(msg) = o.get("msg").and_then(Value::as_str)
    {
        return PluginError {
            code: o
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            msg: msg.to_string(),
            details: o
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    let msg = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        text(stderr)
    } else {
        text(stdout)
    };
    PluginError {
        code: 0,
        msg,
        details: String::new(),
    }
}

/// The pod's addresses in a result: the `ips` on an interface inside the sandbox (or on no
/// interface), IPv4 first as the kubelet orders podIPs; 0.2.0's `ip4`/`ip6` too.
pub fn pod_ips(result: &Value) -> Vec<IpAddr> {
    let parse = |cidr: &str| -> Option<IpAddr> { cidr.split('/').next()?.parse().ok() };
    let mut out: Vec<IpAddr> = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        let ifaces = result.get("interfaces").and_then(Value::as_array);
        for ip in ips {
            let in_sandbox = match ip.get("interface").and_then(Value::as_u64) {
                None => true,
                Some(i) => ifaces
                    .and_then(|f| f.get(usize::try_from(i).ok()?))
                    .and_then(|f| f.get("sandbox"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
            };
            if in_sandbox && let Some(a) = ip.get("address").and_then(Value::as_str).and_then(parse)
            {
                out.push(a);
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(a) = result
                .get(key)
                .and_then(|v| v.get("ip"))
                .and_then(Value::as_str)
                .and_then(parse)
            {
                out.push(a);
            }
        }
    }
    out.dedup();
    out.sort_by_key(|a| a.is_ipv6());
    out
}

/// `CNI_ARGS` as the kubelet passes them (`IgnoreUnknown=1;K8S_POD_NAMESPACE=…;…`).
pub fn cni_args(args: &[(String, String)]) -> String {
    let mut parts = vec!["IgnoreUnknown=1".to_string()];
    parts.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(";")
}

/// The kubelet's `portMappings` capability from hostPorts.
pub fn port_mappings(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                serde_json::json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.to_string(),
                    "hostIP": p.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                })
            })
            .collect(),
    )
}

/// A plugin's stdin: its configuration with the list's `name` and `cniVersion` injected,
/// `runtimeConfig` holding the capability arguments the plugin declares in `capabilities`
/// (only those), and the previous plugin's result as `prevResult`.
pub fn plugin_stdin(
    list_name: &str,
    cni_version: &str,
    plugin: &Map<String, Value>,
    capability_args: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list_name.into()));
    conf.insert("cniVersion".into(), Value::String(cni_version.into()));
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let runtime: Map<String, Value> = capability_args
        .iter()
        .filter(|(k, _)| {
            declared
                .and_then(|d| d.get(k.as_str()))
                .and_then(Value::as_bool)
                == Some(true)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    match prev_result {
        Some(r) => {
            conf.insert("prevResult".into(), r.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podnet::hostport::Protocol;
    use serde_json::json;

    #[test]
    fn errors_from_plugins() {
        let cases: [(&[u8], &[u8], PluginError); 4] = [
            (
                br#"{"cniVersion":"1.0.0","code":7,"msg":"invalid config","details":"no subnet"}"#,
                b"",
                PluginError {
                    code: 7,
                    msg: "invalid config".into(),
                    details: "no subnet".into(),
                },
            ),
            (
                br#"{"code":11,"msg":"busy"}"#,
                b"ignored",
                PluginError {
                    code: 11,
                    msg: "busy".into(),
                    details: String::new(),
                },
            ),
            (
                b"",
                b"panic: boom\n",
                PluginError {
                    code: 0,
                    msg: "panic: boom".into(),
                    details: String::new(),
                },
            ),
            (
                b"plain words\n",
                b"  ",
                PluginError {
                    code: 0,
                    msg: "plain words".into(),
                    details: String::new(),
                },
            ),
        ];
        for (out, err, want) in cases {
            assert_eq!(plugin_error(out, err), want);
        }
        assert_eq!(
            plugin_error(br#"{"code":7,"msg":"a","details":"b"}"#, b"").to_string(),
            "a; b"
        );
    }

    #[test]
    fn addresses_from_results() {
        let cases = [
            // bridge + host-local, 1.0.0: host side interfaces have no sandbox
            (
                json!({"cniVersion":"1.0.0","interfaces":[
                    {"name":"cni0","mac":"aa"},{"name":"veth1","mac":"bb"},
                    {"name":"eth0","mac":"cc","sandbox":"/run/netns/x"}],
                  "ips":[{"address":"fd00::5/64","gateway":"fd00::1","interface":2},
                         {"address":"10.88.0.5/24","gateway":"10.88.0.1","interface":2},
                         {"address":"10.99.0.1/24","interface":0}]}),
                vec!["10.88.0.5", "fd00::5"],
            ),
            // 0.3.1 result without interface indexes
            (
                json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.2.3/16"}]}),
                vec!["10.1.2.3"],
            ),
            // 0.2.0
            (
                json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.9/16"},"ip6":{"ip":"fd::9/64"}}),
                vec!["10.1.0.9", "fd::9"],
            ),
            (json!({"cniVersion":"1.0.0"}), vec![]),
            // an index past the interfaces is not the sandbox's
            (
                json!({"ips":[{"address":"10.0.0.1/8","interface":4}],"interfaces":[]}),
                vec![],
            ),
        ];
        for (r, want) in cases {
            let want: Vec<IpAddr> = want.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(pod_ips(&r), want, "{r}");
        }
    }

    #[test]
    fn stdin_and_args() {
        let plugin = json!({"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},
            "snat":true,"prevResult":{"stale":1}});
        let caps = json!({"portMappings":[{"hostPort":8080}],"bandwidth":{"ingressRate":1},
            "ipRanges":[]});
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let got = plugin_stdin(
            "k8s",
            "1.0.0",
            plugin.as_object().unwrap(),
            caps.as_object().unwrap(),
            Some(&prev),
        );
        assert_eq!(
            got,
            json!({"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},
                "snat":true,"name":"k8s","cniVersion":"1.0.0",
                "runtimeConfig":{"portMappings":[{"hostPort":8080}]},
                "prevResult":{"cniVersion":"1.0.0","ips":[]}})
        );
        // no capabilities declared, no previous result: neither key
        let bridge = json!({"type":"bridge"});
        assert_eq!(
            plugin_stdin(
                "k8s",
                "0.4.0",
                bridge.as_object().unwrap(),
                caps.as_object().unwrap(),
                None
            ),
            json!({"type":"bridge","name":"k8s","cniVersion":"0.4.0"})
        );
        assert_eq!(
            cni_args(&[
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), "web".into()),
            ]),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
        );
        assert_eq!(
            port_mappings(&[PortMapping {
                protocol: Protocol::Udp,
                host_ip: Some("192.168.1.2".parse().unwrap()),
                host_port: 5353,
                container_port: 53,
            }]),
            json!([{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"192.168.1.2"}])
        );
    }
}

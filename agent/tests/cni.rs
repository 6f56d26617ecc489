//! `skiff agent --pod-network cni` with Debian's containernetworking-plugins (bridge,
//! host-local, portmap in /usr/lib/cni): the whole node (API server, registry, agent, the
//! bridge the plugin makes and the pods) lives in a network namespace of the test, joined by
//! the test's thread before anything starts; the conflist is written by the test.
//!
//! Needs root, `ip`, `curl`, `iptables` (portmap and the bridge plugin's ipMasq use it, inside the
//! namespace), the plugins in /usr/lib/cni, and what `pods.rs` needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use node_common::*;
use skiff_testsupport::netns::Netns;

const PLUGINS: &str = "/usr/lib/cni";
const NETWORK: &str = "skiff-cni-test";
const BRIDGE: &str = "cnitest0";
/// host-local hands out this one address only: a second pod waits for it.
const POD_IP: &str = "10.88.7.10";

#[test]
fn cni_plugins_give_pods_addresses_host_ports_and_clean_up() {
    skiff_testsupport::require_root();
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new(PLUGINS).join(p).is_file(),
            "{PLUGINS}/{p} is missing: install containernetworking-plugins"
        );
    }
    let ns = Netns::create(&format!("skiff-cni-{}", std::process::id())).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // this thread, its runtime and every process it starts live in the node's namespace
            ns.enter_thread().unwrap();
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(2).enable_all();
            rt.build().unwrap().block_on(cni_in_node_netns());
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

/// `ip` or `iptables` in the calling thread's (the node's) namespace; stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The links on the CNI bridge (the pods' host-side veths).
fn bridge_ports() -> usize {
    run("ip", &["-o", "link", "show", "master", BRIDGE])
        .lines()
        .count()
}

/// busybox httpd's index page at `ip:port`, fetched by `curl` from the node's namespace.
async fn http_get(ip: &str, port: u16) -> Option<String> {
    let url = format!("http://{ip}:{port}/index.html");
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", "--max-time", "3", &url])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn cni_in_node_netns() {
    let c = cluster().await;
    let conf = tempfile::tempdir().unwrap();
    let ipam_dir = conf.path().join("ipam");
    let net_d = conf.path().join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    // a file later in lexical order that must not be used
    std::fs::write(
        net_d.join("99-other.conflist"),
        json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "absent"}]})
            .to_string(),
    )
    .unwrap();
    let skiff_conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": ipam_dir,
                "ranges": [[{"subnet": "10.88.7.0/24", "rangeStart": POD_IP,
                    "rangeEnd": POD_IP, "gateway": "10.88.7.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string();
    let conf_dir = net_d.display().to_string();
    let mut node = TestNode::with_args(
        &c.server,
        "n-cni",
        &[
            "--pod-network",
            "cni",
            "--cni-conf-dir",
            &conf_dir,
            "--cni-bin-dir",
            PLUGINS,
            "--proxy=false",
            "--dns=false",
        ],
    );
    // no usable configuration yet (only one with a missing plugin): Ready=False, as the
    // kubelet's NetworkReady=false; once it is there the node becomes Ready
    let nodes: Api<Node> = Api::all(c.client.clone());
    let message = api_common::wait_for("node NotReady", Duration::from_secs(30), || async {
        let n = nodes.get_opt("n-cni").await.ok().flatten()?;
        let ready = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason.as_deref() == Some("KubeletNotReady"))
            .then_some(ready.message?)
    })
    .await;
    assert!(
        message.starts_with(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"
        ) && message.contains(&conf_dir),
        "{message}"
    );
    std::fs::write(net_d.join("10-skiff.conflist"), skiff_conf).unwrap();
    wait_node_ready(&c.client, &node).await;
    // hostPorts are on the node's addresses (not loopback): give the namespace one
    let node_addr = "192.168.78.1";
    run("ip", &["addr", "add", "192.168.78.1/32", "dev", "lo"]);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let httpd = "mkdir /www && echo hello-from-$POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www";
    let mut web = pod("web", "n-cni", &c.image, httpd, json!({}));
    web.spec.as_mut().unwrap().containers[0].ports = Some(vec![
        serde_json::from_value(json!({"containerPort": 8080, "hostPort": 18081})).unwrap(),
    ]);
    let uid = pods
        .create(&PostParams::default(), &web)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    wait_pod(
        &pods,
        "web",
        "web Running and Ready",
        60,
        &node,
        running_ready,
    )
    .await;
    let st = pods.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.pod_ip.as_deref(), Some(POD_IP));
    assert_eq!(st.pod_ips.unwrap()[0].ip, POD_IP);
    // host-local's record names the container id (the pod uid) and eth0
    let lease = ipam_dir.join(NETWORK).join(POD_IP);
    assert_eq!(
        std::fs::read_to_string(&lease).unwrap(),
        format!("{uid}\r\neth0")
    );
    // libcni's cache record, with the result
    let cached = node.path(&format!("root/cni/cache/results/{NETWORK}-{uid}-eth0"));
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
    assert_eq!(rec["kind"], "cniCacheV1");
    assert_eq!(rec["result"]["ips"][0]["address"], format!("{POD_IP}/24"));
    assert!(
        rec["cniArgs"]
            .as_array()
            .unwrap()
            .contains(&json!(["K8S_POD_NAME", "web"]))
    );
    assert_eq!(
        rec["capabilityArgs"]["portMappings"],
        json!([{"hostPort": 18081, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}])
    );
    assert_eq!(bridge_ports(), 1);
    let get = |ip: &'static str, port: u16, what: &'static str| async move {
        api_common::wait_for(what, Duration::from_secs(20), || http_get(ip, port)).await
    };
    assert_eq!(
        get(POD_IP, 8080, "httpd at the pod IP").await,
        "hello-from-web"
    );
    assert_eq!(
        get(node_addr, 18081, "httpd at the hostPort (portmap)").await,
        "hello-from-web"
    );

    // a second pod finds the range exhausted: the plugin's error is the pod's event
    pods.create(
        &PostParams::default(),
        &pod("web2", "n-cni", &c.image, httpd, json!({})),
    )
    .await
    .unwrap();
    let msg = api_common::wait_for(
        "FailedCreatePodSandBox",
        Duration::from_secs(30),
        || async {
            pod_events(&c.client, "web2")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
                .and_then(|e| e.message)
        },
    )
    .await;
    assert!(
        msg.starts_with("Failed to create pod sandbox: ")
            && msg.contains(&format!(
                r#"plugin type="bridge" name="{NETWORK}" failed (add)"#
            ))
            && msg.contains("no IP addresses available"),
        "{msg}"
    );

    // deleting the first pod releases its address (DEL), which the second then gets
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait_pod(
        &pods,
        "web2",
        "web2 gets the released address",
        60,
        &node,
        |p| {
            running_ready(p)?;
            (p.status.as_ref()?.pod_ip.as_deref() == Some(POD_IP)).then_some(())
        },
    )
    .await;
    let lease_owner = std::fs::read_to_string(&lease).unwrap();
    assert!(!lease_owner.starts_with(&uid), "{lease_owner}");
    assert!(!cached.exists());
    api_common::wait_for(
        "web's veth and hostPort gone",
        Duration::from_secs(20),
        || async {
            let nat = run("iptables-save", &["-t", "nat"]);
            (bridge_ports() == 1 && !nat.contains("18081")).then_some(())
        },
    )
    .await;
    assert_eq!(
        get(POD_IP, 8080, "web2 at the pod IP").await,
        "hello-from-web2"
    );

    // after an agent restart, DEL comes from the cache record
    let uid2 = pods.get("web2").await.unwrap().metadata.uid.unwrap();
    node.kill_agent();
    node.start_agent();
    api_common::wait_for("agent back", Duration::from_secs(30), || async {
        (node.log().matches("CNI network ready").count() >= 2).then_some(())
    })
    .await;
    wait_pod(&pods, "web2", "web2 still Ready", 30, &node, running_ready).await;
    pods.delete("web2", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("web2 gone", Duration::from_secs(30), || async {
        matches!(pods.get_opt("web2").await, Ok(None)).then_some(())
    })
    .await;
    api_common::wait_for(
        "address released, veth gone",
        Duration::from_secs(20),
        || async { (!lease.exists() && bridge_ports() == 0).then_some(()) },
    )
    .await;
    let results = node.path("root/cni/cache/results");
    let left: Vec<_> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{uid2}: {left:?}");
}

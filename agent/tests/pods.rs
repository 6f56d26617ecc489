//! The agent for real: an in-process API server, a `docker-registry` on loopback serving a
//! busybox-static image, and `skiff agent` (the built binary) with private root/run/log
//! dirs and its own cgroup prefix. Pods are created with `spec.nodeName` set.
//!
//! Needs root, `docker-registry`, `umoci`, `skopeo`, `/bin/busybox` (busybox-static) and the
//! skiff binary built (`cargo build -p skiff`). Everything the agent made (containers,
//! shims, mounts, cgroups) is removed when a test ends, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use node_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_with_lease_and_status() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-reg");
    wait_node_ready(&c.client, &node).await;
    let n: Node = Api::all(c.client.clone()).get("n-reg").await.unwrap();
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "n-reg");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    let st = n.status.unwrap();
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(
            st.capacity.as_ref().unwrap().contains_key(r),
            "capacity {r}"
        );
        assert!(
            st.allocatable.as_ref().unwrap().contains_key(r),
            "allocatable {r}"
        );
    }
    let addrs = st.addresses.unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );
    let conds = st.conditions.unwrap();
    // the pressures depend on this machine; each reason must match its status
    for (t, if_false, if_true) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
        ),
        ("Ready", "", "KubeletReady"),
    ] {
        let c = conds
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("{t}: {conds:?}"));
        let want = if c.status == "True" {
            if_true
        } else {
            if_false
        };
        assert_eq!(c.reason.as_deref(), Some(want), "{t}: {c:?}");
        assert!(c.last_heartbeat_time.is_some() && c.last_transition_time.is_some());
    }
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert_eq!(st.node_info.unwrap().operating_system, "linux");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client.clone(), "kube-node-lease");
    let l = api_common::wait_for("node lease", Duration::from_secs(20), || async {
        leases.get_opt("n-reg").await.ok().flatten()
    })
    .await;
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("n-reg"));
    assert!(spec.renew_time.is_some());
}

/// An agent whose master does not answer yet (not started, or restarting with it) waits and
/// registers once it does, instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_before_its_master_registers_when_it_answers() {
    let c = cluster().await;
    // the master is reached through a port where nothing listens yet
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = TestNode::unstarted(
        &c.server,
        "n-early",
        &["--pod-network", "none", "--proxy=false", "--dns=false"],
    );
    let server = node.args.iter().position(|a| a == "--server").unwrap() + 1;
    node.args[server] = format!("https://127.0.0.1:{port}");
    node.start_agent();
    api_common::wait_for("a failed registration", Duration::from_secs(20), || async {
        node.log()
            .contains("unable to register the node with the API server")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.log()
    );
    // now the master answers there
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let master = c.server.handle.addr;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(master).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    wait_node_ready(&c.client, &node).await;
    // the Node is registered Ready; the agent logs it just after the API server's answer
    api_common::wait_for(
        "the registration logged",
        Duration::from_secs(10),
        || async { node.log().contains("node registered").then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_with_logs_env_and_deletion_removes_everything() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-run");
    wait_node_ready(&c.client, &node).await;
    // a Service and a ConfigMap the pod's env refers to
    let svcs: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), "default");
    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "db"},
                "spec": {"ports": [{"port": 5432, "name": "pg"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let db_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "ahoy"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut p = pod(
        "web",
        "n-run",
        &c.image,
        "echo hello from $(POD_NAME); echo host=$(hostname); echo db=$DB_SERVICE_HOST:$DB_SERVICE_PORT_PG; echo greeting=$GREETING; cat /data/greeting; echo; echo err >&2; exec sleep 1000",
        json!({"volumes": [{"name": "cfgvol", "configMap": {"name": "cfg"}}]}),
    );
    let ctr = &mut p.spec.as_mut().unwrap().containers[0];
    ctr.env.as_mut().unwrap().push(
        serde_json::from_value(json!({"name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}))
        .unwrap(),
    );
    ctr.volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "cfgvol", "mountPath": "/data", "readOnly": true}))
            .unwrap(),
    ]);
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    wait_pod(
        &pods,
        "web",
        "pod Running and Ready",
        60,
        &node,
        running_ready,
    )
    .await;
    let p = pods.get("web").await.unwrap();
    let st = p.status.clone().unwrap();
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    assert!(st.start_time.is_some());
    let cs = &st.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.restart_count, 0);
    assert!(cs.image_id.contains("@sha256:"), "{}", cs.image_id);
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let conds = st.conditions.unwrap();
    for t in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}: {conds:?}"
        );
    }
    // the CRI log
    let log_file = node.path(&format!("log/default_web_{uid}/c/0.log"));
    let log = api_common::wait_for("log lines", Duration::from_secs(20), || {
        let f = log_file.clone();
        async move {
            let s = std::fs::read_to_string(&f).ok()?;
            (s.lines().count() >= 6).then_some(s)
        }
    })
    .await;
    let lines: Vec<&str> = log.lines().collect();
    let texts: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert!(ts.ends_with('Z') && ts.len() == 30, "timestamp {ts}");
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect();
    let has = |stream: &str, text: &str| {
        texts
            .iter()
            .any(|(s, tag, t)| s == stream && tag == "F" && t == text)
    };
    assert!(has("stdout", "hello from web"), "{log}");
    assert!(has("stdout", "host=web"), "{log}");
    assert!(has("stdout", &format!("db={db_ip}:5432")), "{log}");
    assert!(has("stdout", "greeting=ahoy"), "{log}");
    assert!(has("stdout", "ahoy"), "{log}");
    assert!(has("stderr", "err"), "{log}");

    // what the pod holds on the node
    let netns = node.path(&format!("run/netns/{uid}"));
    assert!(netns.exists());
    let pod_cgroup = format!("/{}/besteffort/pod{uid}", node.prefix);
    let cg_dirs =
        skiff_agent::qos::cgroup_dirs(Path::new("/sys/fs/cgroup"), Path::new(&pod_cgroup));
    assert!(
        cg_dirs.iter().any(|d| d.exists()),
        "pod cgroup {pod_cgroup}"
    );
    assert!(!mounts_under(node.dir.path()).is_empty());

    // graceful deletion: the agent stops the container and finishes the deletion
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("pod gone from the API", Duration::from_secs(30), || async {
        matches!(pods.get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
    assert_eq!(
        mounts_under(node.dir.path()),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    assert!(!netns.exists(), "netns left");
    assert!(cg_dirs.iter().all(|d| !d.exists()), "cgroups left");
    assert!(
        !node.path(&format!("log/default_web_{uid}")).exists(),
        "logs left"
    );
    assert!(
        !node.path(&format!("run/pods/{uid}")).exists(),
        "run dir left"
    );
    let rt = skiff_runtime::Runtime::new(node.path("run/runtime"));
    assert!(rt.list().unwrap().is_empty(), "containers left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_container_crash_loops_with_backoff() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-crash");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(
            "crash",
            "n-crash",
            &c.image,
            "echo crashing; exit 1",
            json!({"restartPolicy": "Always"}),
        ),
    )
    .await
    .unwrap();
    // the first restart is immediate, the next waits 10 s: CrashLoopBackOff in between
    let backoff = wait_pod(&pods, "crash", "CrashLoopBackOff", 60, &node, |p| {
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        (w.reason.as_deref() == Some("CrashLoopBackOff")).then_some(cs)
    })
    .await;
    assert!(backoff.restart_count >= 1);
    let last = backoff.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(
        pods.get("crash")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
    let first = backoff.restart_count;
    let started = std::time::Instant::now();
    wait_pod(
        &pods,
        "crash",
        "another restart after the back-off",
        60,
        &node,
        |p| {
            let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            (cs.restart_count > first).then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "restarted after {:?}, inside the back-off",
        started.elapsed()
    );
    pods.delete("crash", &DeleteParams::default())
        .await
        .unwrap();
    api_common::wait_for("pod gone", Duration::from_secs(30), || async {
        matches!(pods.get_opt("crash").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_restarts_and_adopts_running_pods() {
    let c = cluster().await;
    let mut node = TestNode::new(&c.server, "n-adopt");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let created = pods
        .create(
            &PostParams::default(),
            &pod("keep", "n-adopt", &c.image, "exec sleep 1000", json!({})),
        )
        .await
        .unwrap();
    let uid = created.metadata.uid.unwrap();
    wait_pod(&pods, "keep", "pod Running", 60, &node, running_ready).await;
    let before = pods.get("keep").await.unwrap().status.unwrap();
    let pid = node.record(&uid, "c", 0).unwrap()["pid"].as_i64().unwrap() as i32;
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(alive(pid));

    // kill -9 the agent: the container lives on under its shim
    node.kill_agent();
    assert!(alive(pid), "the container died with the agent");
    node.start_agent();
    // a second pod running proves the new agent is up and syncing
    pods.create(
        &PostParams::default(),
        &pod("probe", "n-adopt", &c.image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    wait_pod(
        &pods,
        "probe",
        "second pod Running",
        60,
        &node,
        running_ready,
    )
    .await;
    let after = pods.get("keep").await.unwrap().status.unwrap();
    assert!(alive(pid), "the container was restarted");
    assert_eq!(
        node.record(&uid, "c", 0).unwrap()["pid"].as_i64().unwrap() as i32,
        pid
    );
    assert!(
        node.record(&uid, "c", 1).is_none(),
        "a second run was started"
    );
    let cs = |s: &k8s_openapi::api::core::v1::PodStatus| {
        s.container_statuses.clone().unwrap()[0].clone()
    };
    assert_eq!(cs(&after).restart_count, 0);
    assert_eq!(cs(&after).container_id, cs(&before).container_id);
    assert_eq!(cs(&after).state, cs(&before).state);
    assert_eq!(after.phase, before.phase);
    assert_eq!(after.start_time, before.start_time);
    for name in ["keep", "probe"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        let l = pods.list(&Default::default()).await.ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_oom_kill_and_sigterm_grace() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-end");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let never = json!({"restartPolicy": "Never"});
    pods.create(
        &PostParams::default(),
        &pod("done", "n-end", &c.image, "echo bye", never.clone()),
    )
    .await
    .unwrap();
    let mut oom = pod(
        "oom",
        "n-end",
        &c.image,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        never.clone(),
    );
    oom.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({"limits": {"memory": "32Mi"}})).unwrap());
    pods.create(&PostParams::default(), &oom).await.unwrap();
    // a SIGTERM trap that writes to a hostPath file and exits: the pod goes well before the
    // 20 s grace period, and the trap ran. Only init gets the signal (as with containerd):
    // the child's trap, which would write at once, never runs while init waits a second.
    let host_pod = |name: &str, image: &str, script: &str| {
        let mut p = pod(
            name,
            "n-end",
            image,
            script,
            json!({"terminationGracePeriodSeconds": 20,
                   "volumes": [{"name": "h", "hostPath": {"path": node.dir.path(), "type": "Directory"}}]}),
        );
        p.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![
            serde_json::from_value(json!({"name": "h", "mountPath": "/host"})).unwrap(),
        ]);
        p
    };
    let term = host_pod(
        "term",
        &c.image,
        "(trap 'echo child got TERM > /host/child; exit 0' TERM; while true; do sleep 0.1; done) &
         trap 'sleep 1; echo got TERM > /host/marker; exit 0' TERM; while true; do sleep 0.1; done",
    );
    pods.create(&PostParams::default(), &term).await.unwrap();
    // an image whose config says STOPSIGNAL SIGQUIT: that signal, not SIGTERM
    let layout = c._images.path().join("oci");
    common::run(std::process::Command::new("umoci").args([
        "config",
        "--image",
        &format!("{}:latest", layout.display()),
        "--tag",
        "quit",
        "--config.stopsignal",
        "SIGQUIT",
    ]));
    c._registry.push(&layout, "quit", "busybox:quit", &[]);
    let quit_image = c._registry.reference("busybox:quit");
    let quit = host_pod(
        "quit",
        &quit_image,
        "trap 'echo got TERM > /host/quit; exit 0' TERM
         trap 'echo got QUIT > /host/quit; exit 0' QUIT
         while true; do sleep 0.1; done",
    );
    pods.create(&PostParams::default(), &quit).await.unwrap();

    let done = wait_pod(&pods, "done", "pod Succeeded", 60, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then(|| p.clone())
    })
    .await;
    let t = container_status(&done)
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let ready = done.status.unwrap().conditions.unwrap();
    let ready = ready.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );

    let oomed = wait_pod(&pods, "oom", "pod Failed", 60, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then(|| p.clone())
    })
    .await;
    let t = container_status(&oomed)
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (137, Some("OOMKilled")),
        "{t:?}"
    );
    assert_eq!(
        oomed.status.unwrap().qos_class.as_deref(),
        Some("Burstable")
    );

    wait_pod(&pods, "term", "pod Running", 60, &node, running_ready).await;
    wait_pod(&pods, "quit", "pod Running", 60, &node, running_ready).await;
    let started = std::time::Instant::now();
    pods.delete("term", &DeleteParams::default()).await.unwrap();
    pods.delete("quit", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        let term = pods.get_opt("term").await.ok()?;
        let quit = pods.get_opt("quit").await.ok()?;
        (term.is_none() && quit.is_none()).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(node.path("marker")).unwrap(),
        "got TERM\n"
    );
    assert!(
        !node.path("child").exists(),
        "the stop signal reached init's child too"
    );
    assert_eq!(
        std::fs::read_to_string(node.path("quit")).unwrap(),
        "got QUIT\n"
    );
    for name in ["done", "oom"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        mounts_under(node.dir.path()),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_before_the_app() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-init");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut p = pod(
        "init",
        "n-init",
        &c.image,
        "cat /work/steps; exec sleep 1000",
        json!({"volumes": [{"name": "work", "emptyDir": {}}]}),
    );
    let mount = json!([{"name": "work", "mountPath": "/work"}]);
    let spec = p.spec.as_mut().unwrap();
    spec.containers[0].volume_mounts = Some(serde_json::from_value(mount.clone()).unwrap());
    spec.init_containers = Some(
        serde_json::from_value(json!([
            {"name": "one", "image": c.image, "command": ["/bin/sh", "-c", "echo one >> /work/steps"],
             "volumeMounts": mount},
            {"name": "two", "image": c.image, "command": ["/bin/sh", "-c", "echo two >> /work/steps"],
             "volumeMounts": mount}
        ]))
        .unwrap(),
    );
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    wait_pod(&pods, "init", "pod Running", 60, &node, running_ready).await;
    let st = pods.get("init").await.unwrap().status.unwrap();
    let inits = st.init_container_statuses.unwrap();
    assert_eq!(inits.len(), 2);
    for i in &inits {
        let t = i.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (0, Some("Completed")),
            "{}",
            i.name
        );
        assert!(i.ready);
    }
    let conds = st.conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True")
    );
    let log_file = node.path(&format!("log/default_init_{uid}/c/0.log"));
    let log = api_common::wait_for("app log", Duration::from_secs(20), || {
        let f = log_file.clone();
        async move {
            let s = std::fs::read_to_string(&f).ok()?;
            (s.lines().count() >= 2).then_some(s)
        }
    })
    .await;
    let texts: Vec<&str> = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["one", "two"],
        "init containers ran in order, once"
    );
    pods.delete("init", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("pod gone", Duration::from_secs(30), || async {
        matches!(pods.get_opt("init").await, Ok(None)).then_some(())
    })
    .await;
    assert_eq!(
        mounts_under(node.dir.path()),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_ready_and_liveness_restarts() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-probe");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    // busybox httpd serves /www; /www/ready appears after 3 s
    let mut ready = pod(
        "ready",
        "n-probe",
        &c.image,
        "mkdir -p /www; httpd -p 8080 -h /www; sleep 3; echo ok > /www/ready; exec sleep 1000",
        json!({}),
    );
    let ctr = &mut ready.spec.as_mut().unwrap().containers[0];
    ctr.ports = Some(vec![
        serde_json::from_value(json!({"name": "http", "containerPort": 8080})).unwrap(),
    ]);
    ctr.readiness_probe = Some(
        serde_json::from_value(json!({"httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 1, "failureThreshold": 1}))
        .unwrap(),
    );
    pods.create(&PostParams::default(), &ready).await.unwrap();
    let mut live = pod("live", "n-probe", &c.image, "exec sleep 1000", json!({}));
    live.spec.as_mut().unwrap().containers[0].liveness_probe = Some(
        serde_json::from_value(json!({"tcpSocket": {"port": 9999},
            "periodSeconds": 1, "failureThreshold": 2}))
        .unwrap(),
    );
    pods.create(&PostParams::default(), &live).await.unwrap();

    // Running but not ready while /ready is missing, then Ready
    wait_pod(&pods, "ready", "Running and not ready", 60, &node, |p| {
        let st = p.status.as_ref()?;
        let cs = container_status(p)?;
        (st.phase.as_deref() == Some("Running")
            && cs.state.as_ref()?.running.is_some()
            && !cs.ready)
            .then_some(())
    })
    .await;
    wait_pod(
        &pods,
        "ready",
        "Ready after the readiness probe passed",
        60,
        &node,
        running_ready,
    )
    .await;
    let st = pods.get("ready").await.unwrap().status.unwrap();
    assert!(
        st.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert_eq!(
        container_status(&pods.get("ready").await.unwrap())
            .unwrap()
            .restart_count,
        0
    );

    // the failing liveness probe kills the container; it is restarted
    let cs = wait_pod(
        &pods,
        "live",
        "a restart by the liveness probe",
        60,
        &node,
        |p| {
            let cs = container_status(p)?;
            (cs.restart_count >= 1).then_some(cs)
        },
    )
    .await;
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.signal), (137, Some(9)));
    for name in ["ready", "live"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// A network namespace made by the test under a unique name, removed on drop.
struct NodeNetns(String);

impl NodeNetns {
    fn new(tag: &str) -> NodeNetns {
        let name = format!("skiff-agent-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {:?}", out);
        };
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        NodeNetns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The bridge pod network through the agent: the whole node (API server, registry, agent,
/// its bridge and pods) lives in a network namespace of the test. The test's thread joins
/// it before anything starts, so the runtime's threads, the registry and the agent it
/// spawns are all inside; the host's network is never touched.
#[test]
fn bridge_network_gives_pods_reachable_addresses() {
    skiff_testsupport::require_root();
    let ns = NodeNetns::new("net");
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(bridge_network_in_node_netns());
    })
    .join()
    .unwrap();
    drop(ns);
}

/// The body of a plain HTTP/1.0 GET, from the calling thread's network namespace.
async fn http_get(ip: std::net::Ipv4Addr, port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    (head.starts_with("HTTP/1.") && status == "200").then(|| body.to_string())
}

fn ip_in_ns(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().unwrap()
}

async fn bridge_network_in_node_netns() {
    let c = cluster().await;
    let mut node = TestNode::with_args(
        &c.server,
        "n-net",
        &[
            "--pod-network",
            "bridge",
            "--pod-mtu",
            "1400",
            "--proxy=false",
            "--dns=false",
        ],
    );
    let nodes: Api<Node> = Api::all(c.client.clone());
    api_common::wait_for("node registered", Duration::from_secs(30), || async {
        nodes.get_opt("n-net").await.ok().flatten()
    })
    .await;
    // the master's node IPAM is not part of this in-process server: give the CIDR here
    nodes
        .patch(
            "n-net",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"podCIDR": "10.244.7.0/24",
                "podCIDRs": ["10.244.7.0/24"]}})),
        )
        .await
        .unwrap();
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut p = pod(
        "web",
        "n-net",
        &c.image,
        "mkdir /www && echo hello-from-$POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www",
        json!({}),
    );
    // hostPort 18080 on the node's addresses (loopback excluded, as CNI portmap does): give
    // the node namespace one that is not loopback
    p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
        serde_json::from_value(json!({"containerPort": 8080, "hostPort": 18080})).unwrap(),
    ]);
    let node_addr: std::net::Ipv4Addr = "192.168.77.1".parse().unwrap();
    assert!(
        ip_in_ns(&["addr", "add", "192.168.77.1/32", "dev", "lo"])
            .status
            .success()
    );
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    wait_pod(
        &pods,
        "web",
        "pod Running and Ready",
        60,
        &node,
        running_ready,
    )
    .await;
    let st = pods.get("web").await.unwrap().status.unwrap();
    let ip: std::net::Ipv4Addr = st.pod_ip.as_deref().unwrap().parse().unwrap();
    let cidr: ipnet::Ipv4Net = "10.244.7.0/24".parse().unwrap();
    assert!(cidr.contains(&ip) && ip.octets()[3] >= 2, "{ip}");
    assert_eq!(st.pod_ips.unwrap()[0].ip, ip.to_string());
    // /etc/hosts names the pod's address
    let hosts = std::fs::read_to_string(node.path(&format!("run/pods/{uid}/etc/hosts"))).unwrap();
    assert!(hosts.contains(&format!("{ip}\tweb\n")), "{hosts}");
    // the address is recorded for the pod under the root dir
    let record = node.path(&format!("root/podnet/ipam/10.244.7.0-24/{ip}"));
    assert!(std::fs::read_to_string(&record).unwrap().starts_with(&uid));
    // the node side: bridge with the gateway, the pod's veth on it
    let br = String::from_utf8(ip_in_ns(&["-4", "addr", "show", "skiff0"]).stdout).unwrap();
    assert!(br.contains("inet 10.244.7.1/24"), "{br}");
    let veth = skiff_netproxy::podnet::host_veth_name(&uid);
    let link = String::from_utf8(ip_in_ns(&["link", "show", &veth]).stdout).unwrap();
    assert!(
        link.contains("master skiff0") && link.contains("mtu 1400"),
        "{link}"
    );
    // the pod answers from the node's namespace
    let answer = || async move {
        api_common::wait_for(
            "httpd answers at the pod IP",
            Duration::from_secs(20),
            || http_get(ip, 8080, "/index.html"),
        )
        .await
    };
    assert_eq!(answer().await.trim(), "hello-from-web");
    let via_host_port = || async move {
        api_common::wait_for(
            "httpd answers at the node's hostPort",
            Duration::from_secs(20),
            || http_get(node_addr, 18080, "/index.html"),
        )
        .await
    };
    assert_eq!(via_host_port().await.trim(), "hello-from-web");

    // an agent restart keeps the pod, its address and its record
    node.kill_agent();
    node.start_agent();
    api_common::wait_for("agent back", Duration::from_secs(30), || async {
        // the log is appended to: the second setup is the new agent's
        (node.log().matches("pod network ready").count() >= 2).then_some(())
    })
    .await;
    wait_pod(&pods, "web", "pod still Ready", 30, &node, running_ready).await;
    let st = pods.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.pod_ip, Some(ip.to_string()));
    assert!(std::fs::read_to_string(&record).unwrap().starts_with(&uid));
    assert_eq!(answer().await.trim(), "hello-from-web");
    assert_eq!(via_host_port().await.trim(), "hello-from-web");

    // deletion: veth gone, address released
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("pod gone", Duration::from_secs(30), || async {
        matches!(pods.get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
    api_common::wait_for("address released", Duration::from_secs(10), || async {
        (!record.exists()).then_some(())
    })
    .await;
    assert!(!ip_in_ns(&["link", "show", &veth]).status.success());
    // and its hostPort mapping is gone
    let table = Command::new("nft")
        .args(["list", "table", "ip", "skiff_hostport"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains("dport 18080"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_master_and_agent() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-logs");
    wait_node_ready(&c.client, &node).await;
    let port = kubelet_port(&c.client, "n-logs").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    // first run prints and exits; the restart prints "second run" and stays
    let mut p = pod(
        "talk",
        "n-logs",
        &c.image,
        "echo start; if [ -f /data/ran ]; then echo second run; exec sleep 1000; fi; touch /data/ran; echo first run; exit 0",
        json!({"volumes": [{"name": "d", "emptyDir": {}}]}),
    );
    p.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "d", "mountPath": "/data"})).unwrap(),
    ]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_pod(&pods, "talk", "second run Running", 60, &node, |p| {
        let cs = container_status(p)?;
        (cs.restart_count == 1 && cs.state?.running.is_some()).then_some(())
    })
    .await;
    // the second run's log is written by the shim's copier: wait for its last line
    api_common::wait_for("second run logged", Duration::from_secs(20), || async {
        let out = kubectl_timed(&c, "1.32", &["logs", "talk"], None).await;
        (text(&out.stdout) == "start\nsecond run\n").then_some(())
    })
    .await;
    for v in ["1.30", "1.32", "1.33"] {
        let c = &c;
        let ok = |args: &'static [&'static str]| async move {
            let out = kubectl_timed(c, v, args, None).await;
            assert!(
                out.status.success(),
                "kubectl {v} {args:?}: {}",
                text(&out.stderr)
            );
            text(&out.stdout)
        };
        assert_eq!(ok(&["logs", "talk"]).await, "start\nsecond run\n", "{v}");
        assert_eq!(
            ok(&["logs", "talk", "-c", "c"]).await,
            "start\nsecond run\n"
        );
        assert_eq!(
            ok(&["logs", "talk", "--previous"]).await,
            "start\nfirst run\n"
        );
        assert_eq!(ok(&["logs", "talk", "--tail=1"]).await, "second run\n");
        assert_eq!(ok(&["logs", "talk", "--tail=0"]).await, "");
        assert_eq!(ok(&["logs", "talk", "--limit-bytes=3"]).await, "sta");
        assert_eq!(
            ok(&["logs", "talk", "--since=1h"]).await,
            "start\nsecond run\n"
        );
        let ts = ok(&["logs", "talk", "--timestamps"]).await;
        let lines: Vec<&str> = ts.lines().collect();
        assert_eq!(lines.len(), 2, "{ts}");
        for (l, want) in lines.iter().zip(["start", "second run"]) {
            let (t, msg) = l.split_once(' ').unwrap();
            assert_eq!(msg, want);
            chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(t.ends_with('Z'), "{t}");
        }
    }
    // kube-apiserver's errors
    let out = kubectl_timed(&c, "1.32", &["logs", "talk", "-c", "nope"], None).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod talk"),
        "{}",
        text(&out.stderr)
    );
    let unbound = pod("unbound", "", &c.image, "true", json!({}));
    let mut unbound = unbound;
    unbound.spec.as_mut().unwrap().node_name = None;
    pods.create(&PostParams::default(), &unbound).await.unwrap();
    let (code, body) = c
        .server
        .admin(
            "GET",
            "/api/v1/namespaces/default/pods/unbound/log",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "pod unbound does not have a host assigned");
    let two: Pod = serde_json::from_value(json!({
        "metadata": {"name": "two"},
        "spec": {"nodeName": "elsewhere", "containers": [
            {"name": "a", "image": c.image}, {"name": "b", "image": c.image}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &two).await.unwrap();
    let (code, body) = c
        .server
        .admin("GET", "/api/v1/namespaces/default/pods/two/log", "", b"")
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    // a node that is not there: the backend cannot be reached
    let (code, body) = c
        .server
        .admin(
            "GET",
            "/api/v1/namespaces/default/pods/two/log?container=a",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 503, "{body}");
    // the node token may not read logs
    let (code, _) = c
        .server
        .request(
            "GET",
            "/api/v1/namespaces/default/pods/talk/log",
            Some(&c.server.handle.node_token.clone()),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 403);
    // the agent serves only the master's client certificate
    let curl = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{port}/containerLogs/default/talk/c"
        ))
        .output()
        .unwrap();
    assert_eq!(text(&curl.stdout), "401");

    // follow: streams while the container writes and ends with it
    let mut f = pod(
        "ticker",
        "n-logs",
        &c.image,
        "for i in 1 2 3 4; do echo tick $i; sleep 1; done",
        json!({"restartPolicy": "Never"}),
    );
    f.spec.as_mut().unwrap().containers[0].env = None;
    pods.create(&PostParams::default(), &f).await.unwrap();
    wait_pod(&pods, "ticker", "ticker Running", 60, &node, |p| {
        container_status(p)?.state?.running.map(|_| ())
    })
    .await;
    let mut follow = tokio::process::Command::new(api_common::kubectl_path("1.33"))
        .arg("--kubeconfig")
        .arg(c.server.kubeconfig())
        .args(["logs", "-f", "ticker"])
        .env("HOME", c.server.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(first.starts_with("tick "), "{first:?}");
    // a line arrives while the container still runs
    let p = pods.get("ticker").await.unwrap();
    let mut rest = String::new();
    let out = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
            .await
            .unwrap();
        follow.wait().await.unwrap()
    })
    .await
    .expect("kubectl logs -f did not end with the container");
    assert!(out.success());
    let all = format!("{first}{rest}");
    assert_eq!(
        all,
        "tick 1\ntick 2\ntick 3\ntick 4\n",
        "first read while {:?}",
        p.status.and_then(|s| s.phase)
    );
    wait_pod(&pods, "ticker", "ticker Succeeded", 20, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_through_master_and_agent() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-exec");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("shell", "n-exec", &c.image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    wait_pod(&pods, "shell", "pod Running", 60, &node, running_ready).await;
    for v in ["1.30", "1.32", "1.33"] {
        let out = kubectl_timed(
            &c,
            v,
            &["exec", "shell", "--", "/bin/sh", "-c", "echo hi there"],
            None,
        )
        .await;
        assert!(out.status.success(), "{v}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hi there\n", "{v}");
        // exit code, stdout and stderr apart, the container's env
        let out = kubectl_timed(
            &c,
            v,
            &[
                "exec",
                "shell",
                "--",
                "/bin/sh",
                "-c",
                "echo out $POD_NAME; echo err >&2; exit 3",
            ],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(3), "{v}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "out shell\n");
        assert!(
            text(&out.stderr).starts_with("err\n"),
            "{}",
            text(&out.stderr)
        );
        // stdin to the end of file
        let out = kubectl_timed(
            &c,
            v,
            &[
                "exec",
                "-i",
                "shell",
                "--",
                "/bin/sh",
                "-c",
                "cat; echo done",
            ],
            Some("piped line\nsecond\n"),
        )
        .await;
        assert!(out.status.success(), "{v}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "piped line\nsecond\ndone\n", "{v}");
    }
    // a terminal of the caller's size from the start, over SPDY too (kubectl 1.27)
    let (shown, code) = exec_in_terminal(&c, "1.27", "shell", "stty size; exit 5").await;
    assert!(shown.contains("40 100"), "{shown:?}");
    assert_eq!(code, Some(5), "{shown:?}");
    // a terminal of the caller's size, then attach to a ticking pod (WebSocket)
    terminal_then_attach(&c, &node, &pods, "1.32", "1.33").await;
    // the node token may not exec
    let (code, _) = c
        .server
        .request(
            "POST",
            "/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=true",
            Some(&c.server.handle.node_token.clone()),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 403);
}

/// CPU time of a cgroup over `window`, in nanocores.
async fn cgroup_rate(reader: &skiff_agent::stats::Reader, cg: &Path, window: Duration) -> u64 {
    let t0 = std::time::Instant::now();
    let a = reader.cgroup(cg).unwrap().cpu_ns;
    // a measurement window, not synchronisation
    tokio::time::sleep(window).await;
    let b = reader.cgroup(cg).unwrap().cpu_ns;
    ((b - a) as f64 / t0.elapsed().as_secs_f64()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_burner_in_metrics_api_and_kubectl_top() {
    let c = cluster().await;
    c.server.handle.set_metrics_interval(Duration::from_secs(3));
    let node = TestNode::new(&c.server, "n-top");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut p = pod("burn", "n-top", &c.image, "while :; do :; done", json!({}));
    p.metadata.labels = Some([("app".to_string(), "burn".to_string())].into());
    p.spec.as_mut().unwrap().containers[0].resources = Some(
        serde_json::from_value(json!({"requests": {"cpu": "50m", "memory": "16Mi"}})).unwrap(),
    );
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    wait_pod(&pods, "burn", "Running", 60, &node, running_ready).await;
    let reader = skiff_agent::stats::Reader::new("/sys/fs/cgroup", "/proc");
    let pod_cg =
        skiff_agent::qos::pod_cgroup(&node.prefix, skiff_agent::qos::QosClass::Burstable, &uid);
    let cg = pod_cg.join(skiff_agent::worker::container_id(&uid, "c"));
    // the metrics API has the pod once the collector rated it
    let raw = |path: &'static str| {
        let c = &c;
        async move {
            let out = kubectl_timed(c, "1.33", &["get", "--raw", path], None).await;
            out.status
                .success()
                .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
        }
    };
    let pm = api_common::wait_for("PodMetrics of burn", Duration::from_secs(60), || async {
        raw("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn").await
    })
    .await;
    assert_eq!(pm["kind"], "PodMetrics");
    assert_eq!(pm["metadata"]["labels"]["app"], "burn");
    assert_eq!(pm["containers"][0]["name"], "c");
    let q = |v: &serde_json::Value| {
        skiff_agent::qos::parse_quantity(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            v.as_str().unwrap().to_string(),
        ))
        .unwrap()
    };
    let served = q(&pm["containers"][0]["usage"]["cpu"]) * 1e9;
    let measured = cgroup_rate(&reader, &cg, Duration::from_secs(2)).await as f64;
    assert!(
        measured > 1e8,
        "the burner runs: {measured} nanocores from its cgroup"
    );
    // a busy loop on a shared machine: the served rate is of the same order as the cgroup's
    assert!(
        served > measured / 4.0 && served < measured * 4.0,
        "served {served} vs cgroup {measured} nanocores"
    );
    let ws = reader.cgroup(&cg).unwrap().working_set as f64;
    let served_mem = q(&pm["containers"][0]["usage"]["memory"]);
    assert!(
        (served_mem - ws).abs() <= 2.0 * 1024.0 * 1024.0,
        "memory served {served_mem} vs cgroup {ws}"
    );
    // NodeMetrics, with label selectors
    let nm =
        raw("/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=kubernetes.io%2Fhostname%3Dn-top")
            .await
            .unwrap();
    assert_eq!(nm["items"][0]["metadata"]["name"], "n-top");
    assert!(q(&nm["items"][0]["usage"]["cpu"]) > 0.0);
    let none =
        raw("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dother")
            .await
            .unwrap();
    assert_eq!(none["items"], json!([]));
    // kubectl top, three versions
    for v in ["1.27", "1.32", "1.33"] {
        let c = &c;
        let top = |args: &'static [&'static str]| async move {
            let out = kubectl_timed(c, v, args, None).await;
            assert!(
                out.status.success(),
                "kubectl {v} {args:?}: {}",
                text(&out.stderr)
            );
            text(&out.stdout)
        };
        let out = top(&["top", "pod", "burn"]).await;
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "burn", "{v}: {out}");
        let milli: u64 = row[1].trim_end_matches('m').parse().unwrap();
        assert!(milli > 0, "{v}: {out}");
        assert!(row[2].ends_with("Mi"), "{v}: {out}");
        let out = top(&["top", "pod", "--containers", "-l", "app=burn"]).await;
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&row[..2], ["burn", "c"], "{v}: {out}");
        let out = top(&["top", "node"]).await;
        assert!(out.starts_with("NAME"), "{v}: {out}");
        assert!(out.lines().any(|l| l.starts_with("n-top ")), "{v}: {out}");
    }
}

/// Waits for a restart of the pod's container and checks the run before was SIGKILLed.
async fn assert_killed_and_restarted(pods: &Api<Pod>, name: &str, node: &TestNode) {
    let cs = wait_pod(
        pods,
        name,
        "a restart by the liveness probe",
        60,
        node,
        |p| {
            let cs = container_status(p)?;
            (cs.restart_count >= 1).then_some(cs)
        },
    )
    .await;
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.signal), (137, Some(9)));
}

/// Exec probes run in the container through the runtime (`sh` found through the default
/// PATH the image lacks): readiness flips Ready when a file appears; a failing liveness
/// probe restarts the container with the kubelet's Unhealthy and Killing events; an exec
/// over its timeoutSeconds is killed and counts as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_gate_ready_and_restart() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-exec");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut ready = pod(
        "exec-ready",
        "n-exec",
        &c.image,
        "mkdir -p /tmp; sleep 3; touch /tmp/ready; exec sleep 1000",
        json!({}),
    );
    ready.spec.as_mut().unwrap().containers[0].readiness_probe = Some(exec_probe(
        "test -f /tmp/ready",
        json!({"periodSeconds": 1, "failureThreshold": 1}),
    ));
    pods.create(&PostParams::default(), &ready).await.unwrap();
    let mut live = pod(
        "exec-live",
        "n-exec",
        &c.image,
        "mkdir -p /tmp; touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 1000",
        json!({}),
    );
    live.spec.as_mut().unwrap().containers[0].liveness_probe = Some(exec_probe(
        "test -f /tmp/healthy",
        json!({"initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2}),
    ));
    pods.create(&PostParams::default(), &live).await.unwrap();
    // a readiness exec over its timeout: killed each time, so they never pile up
    let mut slow = pod(
        "exec-slow",
        "n-exec",
        &c.image,
        "exec sleep 1000",
        json!({}),
    );
    slow.spec.as_mut().unwrap().containers[0].readiness_probe = Some(exec_probe(
        "exec sleep 3517",
        json!({"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1}),
    ));
    pods.create(&PostParams::default(), &slow).await.unwrap();

    wait_pod(
        &pods,
        "exec-ready",
        "Running and not ready",
        60,
        &node,
        |p| {
            let cs = container_status(p)?;
            (cs.state.as_ref()?.running.is_some() && !cs.ready).then_some(())
        },
    )
    .await;
    wait_pod(
        &pods,
        "exec-ready",
        "Ready by the exec probe",
        60,
        &node,
        running_ready,
    )
    .await;
    assert_eq!(
        container_status(&pods.get("exec-ready").await.unwrap())
            .unwrap()
            .restart_count,
        0
    );

    assert_killed_and_restarted(&pods, "exec-live", &node).await;
    let has = |evs: &[k8s_openapi::api::core::v1::Event], reason: &str| {
        evs.iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .count()
    };
    let (live, slow) = api_common::wait_for("probe events", Duration::from_secs(30), || async {
        let live = pod_events(&c.client, "exec-live").await;
        let slow = pod_events(&c.client, "exec-slow").await;
        (has(&live, "Unhealthy") >= 1 && has(&live, "Killing") >= 1 && has(&slow, "Unhealthy") >= 3)
            .then_some((live, slow))
    })
    .await;
    let unhealthy = live
        .iter()
        .find(|e| e.reason.as_deref() == Some("Unhealthy"))
        .unwrap();
    assert_eq!(unhealthy.type_.as_deref(), Some("Warning"));
    assert_eq!(
        unhealthy.involved_object.field_path.as_deref(),
        Some("spec.containers{c}")
    );
    assert!(
        unhealthy
            .message
            .as_deref()
            .unwrap()
            .starts_with("Liveness probe failed: "),
        "{unhealthy:?}"
    );
    let killing = live
        .iter()
        .find(|e| e.reason.as_deref() == Some("Killing"))
        .unwrap();
    assert_eq!(
        killing.message.as_deref(),
        Some("Container c failed liveness probe, will be restarted")
    );
    for e in slow
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
    {
        assert_eq!(
            e.message.as_deref(),
            Some("Readiness probe failed: command \"sh -c exec sleep 3517\" timed out")
        );
    }
    let cs = container_status(&pods.get("exec-slow").await.unwrap()).unwrap();
    assert!(!cs.ready && cs.restart_count == 0, "{cs:?}");
    // each timed-out probe was killed: at most the one in flight is left
    let left = std::process::Command::new("pgrep")
        .args(["-x", "-f", "sleep 3517"])
        .output()
        .unwrap();
    assert!(
        text(&left.stdout).lines().count() <= 1,
        "probe processes left: {}",
        text(&left.stdout)
    );
    for name in ["exec-ready", "exec-live", "exec-slow"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// postStart holds the container in ContainerCreating until it returns and its file is seen
/// by the main process; a failing postStart kills the container (FailedPostStartHook);
/// preStop runs before SIGTERM on deletion and writes where the test reads it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_post_start_and_pre_stop() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-hooks");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let out = tempfile::tempdir().unwrap();
    let mut hooked = pod(
        "hooked",
        "n-hooks",
        &c.image,
        "until [ -f /data/post ]; do sleep 0.1; done; read l < /data/post; echo \"main saw $l\"; \
         trap 'if [ -f /out/prestop ]; then echo after-prestop > /out/term; fi; exit 0' TERM; \
         while true; do sleep 0.2; done",
        json!({
            "terminationGracePeriodSeconds": 10,
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "out", "hostPath": {"path": out.path(), "type": "Directory"}}
            ]
        }),
    );
    let ctr = &mut hooked.spec.as_mut().unwrap().containers[0];
    ctr.volume_mounts = Some(
        serde_json::from_value(json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "out", "mountPath": "/out"}
        ]))
        .unwrap(),
    );
    ctr.lifecycle = Some(
        serde_json::from_value(json!({
            "postStart": {"exec": {"command": ["sh", "-c", "sleep 2; echo hook > /data/post"]}},
            "preStop": {"exec": {"command": ["sh", "-c", "echo bye > /out/prestop"]}}
        }))
        .unwrap(),
    );
    let uid = pods
        .create(&PostParams::default(), &hooked)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut bad = pod(
        "badhook",
        "n-hooks",
        &c.image,
        "exec sleep 1000",
        json!({"restartPolicy": "Never"}),
    );
    bad.spec.as_mut().unwrap().containers[0].lifecycle = Some(
        serde_json::from_value(
            json!({"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}}),
        )
        .unwrap(),
    );
    pods.create(&PostParams::default(), &bad).await.unwrap();

    // Running only once postStart returned: its file is there when Running shows
    wait_pod(&pods, "hooked", "Running", 60, &node, |p| {
        container_status(p)?.state?.running.map(|_| ())
    })
    .await;
    let post = node
        .dir
        .path()
        .join("root/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/data/post");
    assert_eq!(std::fs::read_to_string(&post).unwrap(), "hook\n");
    let log = node
        .dir
        .path()
        .join(format!("log/default_hooked_{uid}/c/0.log"));
    api_common::wait_for(
        "the main process saw the hook's file",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("stdout F main saw hook")
                .then_some(())
        },
    )
    .await;

    // a failing postStart: killed, and with restartPolicy Never the pod fails
    let cs = wait_pod(&pods, "badhook", "terminated by its hook", 60, &node, |p| {
        let cs = container_status(p)?;
        cs.state.as_ref()?.terminated.as_ref()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(cs)
    })
    .await;
    assert_eq!(cs.state.unwrap().terminated.unwrap().exit_code, 137);
    let ev = api_common::wait_for(
        "FailedPostStartHook event",
        Duration::from_secs(30),
        || async {
            pod_events(&c.client, "badhook")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        },
    )
    .await;
    let msg = ev.message.unwrap();
    assert!(
        msg.starts_with("Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container \"c\" in Pod \"badhook_default(")
            && msg.ends_with("failed - error: command 'sh -c echo nope; exit 3' exited with 3: nope\n, message: \"nope\\n\""),
        "{msg}"
    );

    // preStop before SIGTERM, within the grace period
    for name in ["hooked", "badhook"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(60), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(out.path().join("prestop")).unwrap(),
        "bye\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("term")).unwrap(),
        "after-prestop\n",
        "the SIGTERM trap ran after preStop"
    );
}

/// A downwardAPI volume (labels, one label, name, a memory limit over a divisor) and a
/// projected volume with a configMap: the main process reads them, and a label added later
/// reaches the running container through the `..data` swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downward_api_volume_follows_labels() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-down");
    wait_node_ready(&c.client, &node).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "proj"}, "data": {"greeting": "hello"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut p = pod(
        "down",
        "n-down",
        &c.image,
        "read l < /etc/podinfo/labels; echo \"labels $l\"; read n < /etc/podinfo/name; \
         echo \"name $n\"; read m < /etc/podinfo/mem; echo \"mem $m\"; \
         read g < /etc/proj/conf/greeting; echo \"greeting $g\"; read pn < /etc/proj/pod; echo \"proj $pn\"; \
         while true; do read t < /etc/podinfo/tier; \
         if [ \"$t\" = front ]; then echo \"saw tier $t\"; exec sleep 1000; fi; sleep 0.2; done",
        json!({"volumes": [
            {"name": "podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
            ]}},
            {"name": "proj", "projected": {"sources": [
                {"configMap": {"name": "proj", "items": [{"key": "greeting", "path": "conf/greeting"}]}},
                {"downwardAPI": {"items": [{"path": "pod", "fieldRef": {"fieldPath": "metadata.name"}}]}}
            ]}}
        ]}),
    );
    p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let ctr = &mut p.spec.as_mut().unwrap().containers[0];
    ctr.resources = Some(serde_json::from_value(json!({"limits": {"memory": "64Mi"}})).unwrap());
    ctr.volume_mounts = Some(
        serde_json::from_value(json!([
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "proj", "mountPath": "/etc/proj", "readOnly": true}
        ]))
        .unwrap(),
    );
    let uid = pods
        .create(&PostParams::default(), &p)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let log = node
        .dir
        .path()
        .join(format!("log/default_down_{uid}/c/0.log"));
    let nref = &node;
    let wait_log = |want: &'static str| {
        let log = log.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(want) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no {want:?} in the log:\n{text}\nlogs: {:?}\nagent: {}",
                    std::fs::read_dir(log.parent().unwrap().parent().unwrap().parent().unwrap())
                        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()),
                    nref.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for want in [
        "stdout F labels app=\"web\"",
        "stdout F name down",
        "stdout F mem 64",
        "stdout F greeting hello",
        "stdout F proj down",
    ] {
        wait_log(want).await;
    }
    let vol = node.dir.path().join(format!(
        "root/pods/{uid}/volumes/kubernetes.io~downward-api/podinfo"
    ));
    assert_eq!(
        std::fs::read_link(vol.join("labels")).unwrap(),
        Path::new("..data/labels")
    );
    pods.patch(
        "down",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
    )
    .await
    .unwrap();
    wait_log("stdout F saw tier front").await;
    assert_eq!(
        std::fs::read_to_string(vol.join("labels")).unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
    pods.delete("down", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// A registry behind htpasswd basic auth: a pod without a pull secret gets ErrImagePull /
/// ImagePullBackOff with the registry's refusal; with a `kubernetes.io/dockerconfigjson`
/// Secret in imagePullSecrets it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_authenticate_the_pull() {
    let c = cluster().await;
    let (registry, image, _images) = private_registry();
    let node = TestNode::new(&c.server, "n-pull");
    wait_node_ready(&c.client, &node).await;
    create_pull_secret(&c.client, "default", &registry).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("nocred", "n-pull", &image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    let (reason, message) = wait_pod(&pods, "nocred", "a refused pull", 60, &node, |p| {
        let w = container_status(p)?.state?.waiting?;
        let reason = w.reason?;
        (reason == "ErrImagePull" || reason == "ImagePullBackOff")
            .then_some((reason, w.message.unwrap_or_default()))
    })
    .await;
    assert!(
        message.contains("401") || message.to_lowercase().contains("unauthorized"),
        "{reason}: {message}"
    );
    // a pull with the secret makes the image present; IfNotPresent pods of it then run
    // without one, as on a kubelet: the refusal is checked first
    pods.create(
        &PostParams::default(),
        &pod(
            "withcred",
            "n-pull",
            &image,
            "exec sleep 1000",
            json!({"imagePullSecrets": [{"name": "regcred"}]}),
        ),
    )
    .await
    .unwrap();
    wait_pod(
        &pods,
        "withcred",
        "Running with the pull secret",
        60,
        &node,
        |p| container_status(p)?.state?.running.map(|_| ()),
    )
    .await;
    for name in ["nocred", "withcred"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// A pod whose one container `c` runs `script` with the given `stdin`/`stdinOnce`.
fn stdin_pod(name: &str, node: &str, image: &str, script: &str, once: bool, tty: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["/bin/sh", "-c", script],
                "stdin": true, "stdinOnce": once, "tty": tty}]
        }
    }))
    .unwrap()
}

/// `kubectl attach -i` (kubectl `version`) to `pod` with `input` piped in and closed; with
/// the container still running after its stdin's end, kubectl does not end: it is stopped
/// once `want` is in the container's log.
async fn attach_until_logged(c: &Cluster, version: &str, pod: &str, input: &str, want: &str) {
    use tokio::io::AsyncWriteExt;
    let (mut child, mut w) = attach_stdin(c, version, pod);
    w.write_all(input.as_bytes()).await.unwrap();
    drop(w);
    wait_logged(c, version, pod, want).await;
    let _ = child.kill().await;
}

/// `kubectl attach -i` with its stdin left to the caller.
fn attach_stdin(
    c: &Cluster,
    version: &str,
    pod: &str,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let mut child = tokio::process::Command::new(api_common::kubectl_path(version))
        .arg("--kubeconfig")
        .arg(c.server.kubeconfig())
        .args(["attach", "-i", pod])
        .env("HOME", c.server.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let w = child.stdin.take().unwrap();
    (child, w)
}

/// Waits (60 s at most) until the pod's log has `want`.
async fn wait_logged(c: &Cluster, version: &str, pod: &str, want: &str) {
    api_common::wait_for(want, Duration::from_secs(60), || async {
        let out = kubectl_timed(c, version, &["logs", pod], None).await;
        text(&out.stdout).contains(want).then_some(())
    })
    .await;
}

/// Attach with stdin as the kubelet serves it (kubectl 1.32, WebSocket): lines sent by
/// several `kubectl attach -i` in turn reach a `stdin: true` container, also after an agent
/// restart (the shim owns the pipe) and over SPDY (kubectl 1.27); the last one ends the container and kubectl with it.
/// Two attaches feed stdin at the same time. With `stdinOnce` the first attach's end of file
/// is the container's (on a terminal: its end-of-file character); a container without
/// `stdin` refuses stdin; `kubectl run -i --rm --restart=Never` runs, feeds and deletes a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_with_stdin() {
    let c = cluster().await;
    let mut node = TestNode::new(&c.server, "n-attach");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let v = "1.32";
    let echo = "while read l; do echo \"got $l\"; [ \"$l\" = quit ] && exit 0; done; echo eof";
    for (name, once, tty) in [
        ("reader", false, false),
        ("once", true, false),
        ("term", false, true),
        ("termonce", true, true),
    ] {
        let p = stdin_pod(name, "n-attach", &c.image, echo, once, tty);
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    // waits (10 s at most) for the attach's resize to reach its terminal
    let sized = "i=0; while [ \"$(stty size)\" != '40 100' ] && [ $i -lt 100 ]; do \
        sleep 0.1; i=$((i+1)); done; echo \"size $(stty size)\"";
    let p = stdin_pod("sized", "n-attach", &c.image, sized, false, true);
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod("plain", "n-attach", &c.image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    for name in ["reader", "once", "plain", "term", "termonce", "sized"] {
        wait_pod(&pods, name, "Running", 60, &node, running_ready).await;
    }
    // attach -it in a 40x100 terminal: the size reaches the container's terminal
    let (shown, code) = kubectl_in_terminal(&c, v, "attach -it sized").await;
    assert_eq!(code, Some(0), "{shown:?}");
    let log = text(&kubectl_timed(&c, v, &["logs", "sized"], None).await.stdout);
    assert!(log.contains("size 40 100"), "{log:?} (shown: {shown:?})");
    attach_until_logged(&c, v, "reader", "one\n", "got one\n").await;
    attach_until_logged(&c, v, "reader", "two\n", "got two\n").await;
    node.kill_agent();
    node.start_agent();
    wait_node_ready(&c.client, &node).await;
    // kubectl 1.27 speaks SPDY only
    attach_until_logged(&c, "1.27", "reader", "spdy\n", "got spdy\n").await;
    // two at the same time: the second one's input arrives while the first one holds stdin
    {
        use tokio::io::AsyncWriteExt;
        let (mut first, mut w) = attach_stdin(&c, v, "reader");
        w.write_all(b"four\n").await.unwrap();
        wait_logged(&c, v, "reader", "got four\n").await;
        attach_until_logged(&c, "1.33", "reader", "five\n", "got five\n").await;
        w.write_all(b"six\n").await.unwrap();
        wait_logged(&c, v, "reader", "got six\n").await;
        drop(w);
        let _ = first.kill().await;
    }
    let out = kubectl_timed(&c, v, &["attach", "-i", "reader"], Some("three\nquit\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("got three\ngot quit\n"), "{shown:?}");
    let log = text(&kubectl_timed(&c, v, &["logs", "reader"], None).await.stdout);
    assert_eq!(
        log,
        "got one\ngot two\ngot spdy\ngot four\ngot five\ngot six\ngot three\ngot quit\n"
    );
    // stdinOnce: the first attach's end of file closes the container's stdin
    let out = kubectl_timed(&c, v, &["attach", "-i", "once"], Some("a\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("got a\neof\n"),
        "{}",
        text(&out.stdout)
    );
    // a tty container: its terminal is logged as stdout (with the terminal's echo and
    // CRLF), its stdin is the terminal
    let out = kubectl_timed(&c, v, &["attach", "-i", "term"], Some("hi\nquit\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&kubectl_timed(&c, v, &["logs", "term"], None).await.stdout);
    assert!(
        log.contains("got hi\r\n") && log.contains("got quit\r\n"),
        "{log:?}"
    );
    // stdinOnce on a terminal: the first attach's end of file ends the reader's input
    let out = kubectl_timed(&c, v, &["attach", "-i", "termonce"], Some("b\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(
        &kubectl_timed(&c, v, &["logs", "termonce"], None)
            .await
            .stdout,
    );
    assert!(log.contains("got b\r\n") && log.contains("eof"), "{log:?}");
    // no stdin: true, no stdin
    let out = kubectl_timed(&c, v, &["attach", "-i", "plain"], Some("x\n")).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("stdin is not enabled for container c in pod plain"),
        "{}",
        text(&out.stderr)
    );
    // kubectl run -i --rm: stdin and stdinOnce set by kubectl, the pod deleted after
    let overrides = json!({"spec": {"nodeName": "n-attach"}}).to_string();
    let out = kubectl_timed(
        &c,
        v,
        &[
            "run",
            "-i",
            "--rm",
            "--restart=Never",
            "runner",
            "--image",
            &c.image,
            "--overrides",
            &overrides,
            "--",
            "/bin/sh",
            "-c",
            "read l; echo \"got $l\"",
        ],
        Some("hello\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("got hello"),
        "{}",
        text(&out.stdout)
    );
    api_common::wait_for("runner deleted", Duration::from_secs(60), || async {
        pods.get_opt("runner").await.ok()?.is_none().then_some(())
    })
    .await;
    for name in ["reader", "once", "plain", "term", "termonce", "sized"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    node.kill_agent();
}

//! skiff-agent: the node agent, skiff's kubelet (issue 6).
//!
//! It joins the cluster with the node token, registers and heartbeats its Node, watches the
//! pods bound to it and makes them real with skiff-rootfs (images, overlay snapshots) and
//! skiff-runtime (containers), each pod's containers under a small per-pod shim process so
//! that pods outlive the agent. See docs/agent.md.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// CNI plugins as the pod network (`--pod-network cni`): conf dir, plugin chain, cache.
pub mod cni;
/// The agent's settings: server, credentials, node name and every path.
pub mod config;
/// Turning a pod's container into a runtime spec: command, env, mounts, resources.
pub mod container;
/// downwardAPI and projected volume files, written with the kubelet's atomic `..data` swap.
pub mod downward;
/// The crate-wide error type.
pub mod error;
/// Kubernetes Events the agent records about pods (component `kubelet`).
pub mod events;
/// Node-pressure eviction: thresholds, pressure conditions, pod ranking, admission.
pub mod eviction;
/// Commands run inside a running container (exec probes and hooks), bounded and timed.
pub mod exec;
/// gRPC probes (grpc.health.v1 over HTTP/2).
pub mod grpcprobe;
/// Image garbage collection under disk pressure.
pub mod imagegc;
/// Images for pods: pull policies over the node's store, snapshot chains.
pub mod images;
/// Container lifecycle hooks (postStart, preStop): actions and the kubelet's messages.
pub mod lifecycle;
/// Container log rotation by size, with the kubelet's names, gzip and file count.
pub mod logrotate;
/// CRI-format container log lines.
pub mod logs;
/// emptyDir volumes with medium Memory (tmpfs).
pub mod memvolume;
/// Prometheus metrics at `/metrics`: pod start latency, worker syncs, pods per phase.
pub mod metrics;
/// The pod network: the node bridge from the podCIDR, host-gw routes kept in sync with Nodes.
pub mod network;
/// Node registration, status (capacity, conditions) and the Lease heartbeat.
pub mod node;
/// Pod-level cgroup limits (the kubelet's `ResourceConfigForPod`).
pub mod podcgroup;
/// The watch on this node's pods and one worker per pod.
pub mod pods;
/// Port-forward over SPDY/3.1 (or SPDY tunnelled in WebSocket) to localhost in the pod's network namespace.
pub mod portforward;
/// Privileged containers.
pub mod privileged;
/// Probes: tcpSocket and httpGet from inside the pod network namespace, with their timing.
pub mod probes;
/// QoS classes and the pod cgroup layout under the agent's cgroup prefix.
pub mod qos;
/// Kubernetes' remotecommand protocol (exec/attach over WebSocket): channels, status.
pub mod remotecommand;
/// The pod sandbox: network, IPC and UTS namespaces kept by bind mounts, /etc/hosts, resolv.conf.
pub mod sandbox;
/// The HTTPS endpoint on port 10250: container logs, exec and attach for the master.
pub mod server;
/// The Service proxy and cluster DNS as tasks of the agent.
pub mod services;
/// The per-pod shim process (the skiff binary re-executed) and the agent's client for it.
pub mod shim;
/// SPDY/3.1 framing, header compression and flow control (exec, attach, port-forward of kubectl 1.27–1.29).
pub mod spdy;
/// The server side of a SPDY/3.1 connection: streams replied to, data, FIN, pings, windows.
pub mod spdy_conn;
/// CPU and memory usage from cgroups: the kubelet's Summary API and resource metrics.
pub mod stats;
/// Pod status as Kubernetes reports it, computed from the containers' records.
pub mod status;
/// The transports of exec and attach sessions: WebSocket and SPDY/3.1 streams.
pub mod streams;
/// Termination messages: the per-run file, the log fallback, the per-pod limit.
pub mod termination;
/// Pod volumes (emptyDir, hostPath, configMap, secret) and volumeMounts.
pub mod volumes;
/// The per-pod worker: an explicit state machine driving one pod.
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};

/// Runs the agent until `shutdown` resolves: registers the node, heartbeats, runs pods.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let client = config.client().await?;
    let mut config = config;
    let listener = server::bind(&config).await?;
    if let Ok(addr) = listener.local_addr() {
        config.listen_port = addr.port();
    }
    let tls = server::tls_config(&config)?;
    let cfg = std::sync::Arc::new(config);
    let mut shutdown = std::pin::pin!(shutdown);
    // the kubelet's NetworkReady: a node with a pod network to set up is Ready=False until
    // it is (registration keeps Ready for a node that is Ready already: an agent restart)
    let net = node::network(&cfg.node_name);
    net.set(network::waiting_for(&cfg));
    // as the kubelet: until the API server takes the Node, retry (100 ms doubling to 7 s);
    // a master that starts later, or restarts with its agents, is no reason to exit
    let mut delay = std::time::Duration::from_millis(100);
    while let Err(e) = node::register(&client, &cfg).await {
        tracing::warn!(error = %e, retry_in = ?delay, "unable to register the node with the API server");
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(7));
    }
    tracing::info!(node = %cfg.node_name, "node registered");
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), cfg.clone()));
    let endpoint = tokio::spawn(server::serve(listener, tls, cfg.clone(), client.clone()));
    let node_services = services::start(&client, &cfg)?;
    tracing::info!(port = cfg.listen_port, "logs/exec endpoint listening");
    let (c, pcfg) = (client.clone(), cfg.clone());
    // pods wait for the pod network (the Node's podCIDR); a shutdown meanwhile still ends
    let mut pods = tokio::spawn(async move {
        let network = network::start(&c, &pcfg).await?;
        net.set(None);
        pods::run(c, pcfg, network).await
    });
    let result = tokio::select! {
        _ = &mut shutdown => Ok(()),
        r = &mut pods => match r {
            Ok(r) => r,
            Err(e) => Err(Error::Task(e.to_string())),
        },
    };
    // the pods' containers live on under their shims; only the agent's tasks end
    pods.abort();
    heartbeat.abort();
    endpoint.abort();
    node_services.iter().for_each(|t| t.abort());
    result
}

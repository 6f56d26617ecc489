//! Two API servers on one etcd allocate Service ClusterIPs and NodePorts at the same time:
//! no address or port is handed out twice (each server's own lock does not cover the other;
//! the CAS reservation in the store does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod etcd_common;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};
use skiff_master::api::{Config, serve};
use skiff_master::controllers::client_from_kubeconfig;
use skiff_master::store::etcd::EtcdStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_allocate_the_same_cluster_ip_or_node_port() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = tokio::task::spawn_blocking(|| etcd_common::EtcdCluster::start(1))
        .await
        .unwrap();
    let mut handles = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            EtcdStore::connect(&etcd.endpoints(), "/skiff")
                .await
                .unwrap(),
        );
        handles.push(
            serve(Config {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                // a small range, so collisions would be likely
                service_cidr: "10.96.0.0/24".into(),
                node_port_range: (30000, 30100),
                store,
            })
            .await
            .unwrap(),
        );
        dirs.push(dir);
    }
    let mut clients = Vec::new();
    for h in &handles {
        clients.push(client_from_kubeconfig(&h.kubeconfig).await.unwrap());
    }
    // 2 × 20 NodePort Services created at once, half through each server
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        for i in 0..20 {
            let api: Api<Service> = Api::namespaced(client.clone(), "default");
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("s{n}-{i}")},
                "spec": {"type": "NodePort", "selector": {"app": "x"},
                         "ports": [{"port": 80}]}
            }))
            .unwrap();
            tasks.push(tokio::spawn(async move {
                api.create(&PostParams::default(), &svc).await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().expect("every create succeeds");
    }
    let api: Api<Service> = Api::namespaced(clients[0].clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    let mut n = 0;
    for s in list.items.iter().filter(|s| {
        s.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with('s'))
    }) {
        n += 1;
        let spec = s.spec.as_ref().unwrap();
        let ip = spec.cluster_ip.clone().unwrap();
        assert!(ips.insert(ip.clone()), "ClusterIP {ip} handed out twice");
        for p in spec.ports.iter().flatten() {
            let port = p.node_port.unwrap();
            assert!(ports.insert(port), "NodePort {port} handed out twice");
        }
    }
    assert_eq!(n, 40);
    // the `kubernetes` Service's 10.96.0.1 is not among them
    assert!(!ips.contains("10.96.0.1"));
    for h in handles {
        h.shutdown().await;
    }
}

//! The HorizontalPodAutoscaler for real: an in-process API server with its controllers, one
//! `skiff agent` node, and a Deployment of CPU burners (busybox busy loops with a 50m
//! request) under an HPA at 50 %. The burners scale up from their own cgroup figures, and
//! once their work is gone (a file on a hostPath stops the loops) scale back down after the
//! shortened stabilization window. At most three burners: the machine is shared.
//!
//! Needs what `pods.rs` needs: root, `docker-registry`, `umoci`, `skopeo`, busybox-static and
//! the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;
use skiff_master::controllers::Settings;

use node_common::*;

const WINDOW: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_burners_scale_up_and_back_down() {
    let c = cluster().await;
    c.server.handle.set_metrics_interval(Duration::from_secs(2));
    let _controllers = start_controllers(
        &c,
        Settings {
            hpa_sync_period: Duration::from_secs(2),
            hpa_downscale_stabilization: WINDOW,
            ..Default::default()
        },
    );
    let node = TestNode::new(&c.server, "n-hpa");
    wait_node_ready(&c.client, &node).await;
    let load_dir = node.path("load");
    std::fs::create_dir_all(&load_dir).unwrap();

    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burn", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burn"}},
            "template": {
                "metadata": {"labels": {"app": "burn"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "c", "image": c.image,
                        "command": ["/bin/sh", "-c",
                            "while [ ! -f /load/stop ]; do :; done; exec sleep 100000"],
                        "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
                        "volumeMounts": [{"name": "load", "mountPath": "/load"}]
                    }],
                    "volumes": [{"name": "load",
                        "hostPath": {"path": load_dir.display().to_string(), "type": "Directory"}}]
                }
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burn"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]
        }
    });
    let (code, body) = c
        .server
        .admin(
            "POST",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
            "application/json",
            hpa.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let get_hpa = || async {
        let (code, v) = c
            .server
            .admin(
                "GET",
                "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/burn",
                "",
                b"",
            )
            .await;
        assert_eq!(code, 200, "{v}");
        v
    };
    let replicas = || async {
        deployments
            .get("burn")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap()
    };

    // a busy loop burns far more than 50 % of 50m: up to maxReplicas within a minute
    let t0 = Instant::now();
    api_common::wait_for("scaled up to 3", Duration::from_secs(90), || async {
        (replicas().await == 3).then_some(())
    })
    .await;
    let up = t0.elapsed();
    let h = get_hpa().await;
    let util = h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or_default();
    assert!(util > 50, "utilization {util}: {h}");
    println!("scaled 1 → 3 in {up:?} at {util} % of the request");
    assert!(up < Duration::from_secs(60), "scale up took {up:?}");

    // kubectl top shows the burners' figures
    let top = c.server.ok("1.32", &["top", "pod", "-l", "app=burn"]).await;
    let busiest = top
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .trim_end_matches('m')
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(busiest > 0, "{top}");

    // the work stops: held for the window, then down to minReplicas
    std::fs::write(load_dir.join("stop"), b"").unwrap();
    let low = api_common::wait_for("low utilization seen", Duration::from_secs(90), || async {
        let h = get_hpa().await;
        h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .filter(|u| *u < 50)
            .map(|_| Instant::now())
    })
    .await;
    api_common::wait_for("scaled down to 1", Duration::from_secs(120), || async {
        (replicas().await == 1).then_some(())
    })
    .await;
    let held = low.elapsed();
    println!("scaled 3 → 1 {held:?} after the load was gone (window {WINDOW:?})");
    assert!(
        held >= WINDOW - Duration::from_secs(4),
        "scaled down after {held:?}, inside the {WINDOW:?} window"
    );
    let h = get_hpa().await;
    let reasons: Vec<&Value> = h["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["reason"])
        .collect();
    assert!(!reasons.is_empty(), "{h}");
}

//! The official Rust client (`kube`) against the API server: create, get, list with a
//! selector, patch in three types, a stale update rejected with 409, watch from a list's
//! resourceVersion (resume without gaps), and kube-runtime's watcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

async fn client(server: &api_common::TestServer) -> Client {
    let kc = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "kube-test"}},
        "data": {"v": v}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_patch_and_conflicts_with_the_kube_client() {
    let server = api_common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");

    let created = api
        .create(&PostParams::default(), &cm("one", "1"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["v"], "1");

    api.create(&PostParams::default(), &cm("two", "2"))
        .await
        .unwrap();
    let listed = api
        .list(&ListParams::default().labels("app=kube-test"))
        .await
        .unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);

    let merged = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["m"], "x");
    let strategic = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"s": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.data.as_ref().unwrap()["s"], "y");
    let applied = api
        .patch(
            "three",
            &PatchParams::apply("kube-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "three"}, "data": {"a": "z"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "z");

    // an update based on the first resourceVersion is stale now: 409 Conflict
    let mut stale = created.clone();
    stale.metadata.resource_version = Some(rv);
    let err = api
        .replace("one", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a 409 Status, got {other:?}"),
    }
    // and a missing object is a 404 Status
    match api.get("missing").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 404),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_list_resource_version() {
    let server = api_common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();

    // changes made after the list, before the watch starts, must all arrive, in order
    api.create(&PostParams::default(), &cm("b", "2"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "9"}})),
    )
    .await
    .unwrap();
    api.delete("b", &Default::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("stream open");
        match ev {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED b", "MODIFIED a", "DELETED b"]);
}

#[tokio::test]
async fn kube_runtime_watcher_sees_initial_state_and_changes() {
    use kube::runtime::watcher::{self, Event};
    let server = api_common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &cm("first", "1"))
        .await
        .unwrap();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        match ev {
            Event::Init => {}
            Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(initial.contains(&"first".to_string()), "{initial:?}");
    api.create(&PostParams::default(), &cm("second", "2"))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        if let Event::Apply(c) = ev {
            assert_eq!(c.metadata.name.as_deref(), Some("second"));
            break;
        }
    }
}

#[tokio::test]
async fn concurrent_patches_without_resource_version_all_apply() {
    // kube-apiserver re-applies a patch that pins no resourceVersion when another write got
    // in between; clients never see a 409 for it, and no patch is lost.
    let server = api_common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &cm("shared", "0"))
        .await
        .unwrap();
    let patches = (0..40).map(|i| {
        let api = api.clone();
        async move {
            let p = json!({"data": {format!("k{i}"): i.to_string()}});
            api.patch("shared", &PatchParams::default(), &Patch::Merge(&p))
                .await
        }
    });
    for r in futures::future::join_all(patches).await {
        r.unwrap();
    }
    let data = api.get("shared").await.unwrap().data.unwrap();
    assert_eq!(data.len(), 41, "{data:?}");
    // A patch that pins an old resourceVersion still conflicts.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}});
    let err = api
        .patch("shared", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err}"
    );
}

/// Lists longer than the server's page of store reads: a full list has every object once, in
/// order; a selector with a limit pages through with continue tokens at one resourceVersion,
/// and the last page has no token.
#[tokio::test]
async fn lists_longer_than_a_store_page_are_whole_and_page_with_tokens() {
    let server = api_common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let n = 1_234;
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut c = cm(&format!("page-{i:05}"), &i.to_string());
                let parity = if i % 2 == 0 { "even" } else { "odd" };
                c.metadata
                    .labels
                    .get_or_insert_default()
                    .insert("parity".into(), parity.into());
                api.create(&PostParams::default(), &c).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    let all = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = all
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("page-{i:05}")).collect();
    assert_eq!(names, want);
    assert!(
        all.items
            .iter()
            .all(|c| c.metadata.resource_version.is_some())
    );

    let mut params = ListParams::default().labels("parity=even").limit(300);
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    loop {
        let page = api.list(&params).await.unwrap();
        assert!(page.items.len() <= 300);
        seen.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        versions.push(page.metadata.resource_version.clone().unwrap());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let even: Vec<String> = (0..n).step_by(2).map(|i| format!("page-{i:05}")).collect();
    assert_eq!(seen, even);
    assert_eq!(versions.len(), 3, "617 objects in pages of 300");
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
}

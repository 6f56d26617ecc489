//! `/metrics` of a real API server: the requests made show up by verb, resource and code, a
//! watch is counted while it is open, the store is timed, and only the admin may scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchParams};

/// Samples of a Prometheus text exposition: `name{labels}` → value. Panics on a line that is
/// neither a comment nor a well-formed sample, so a broken exposition fails the test.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            assert!(
                rest.starts_with(" HELP ") || rest.starts_with(" TYPE ") || rest == " EOF",
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        out.insert(series.to_string(), value);
    }
    out
}

async fn scrape(s: &api_common::TestServer) -> BTreeMap<String, f64> {
    let (code, text) = s
        .request(
            "GET",
            "/metrics",
            Some(&s.handle.admin_token.clone()),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200, "{text}");
    parse(&text)
}

async fn client(s: &api_common::TestServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_watches_and_store_are_measured() {
    let s = api_common::start().await;
    let admin = s.handle.admin_token.clone();
    for _ in 0..3 {
        let (code, _) = s
            .request(
                "GET",
                "/api/v1/namespaces/default/pods",
                Some(&admin),
                "",
                b"",
            )
            .await;
        assert_eq!(code, 200);
    }
    let (code, _) = s
        .request(
            "GET",
            "/api/v1/namespaces/default/pods/nope",
            Some(&admin),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 404);
    let m = scrape(&s).await;
    let list = r#"apiserver_request_total{verb="list",group="",resource="pods",subresource="",code="200"}"#;
    assert_eq!(m.get(list), Some(&3.0), "{m:#?}");
    let get404 =
        r#"apiserver_request_total{verb="get",group="",resource="pods",subresource="",code="404"}"#;
    assert_eq!(m.get(get404), Some(&1.0));
    let count = r#"apiserver_request_duration_seconds_count{verb="list",group="",resource="pods",subresource=""}"#;
    assert_eq!(m.get(count), Some(&3.0));
    let inf = r#"apiserver_request_duration_seconds_bucket{le="+Inf",verb="list",group="",resource="pods",subresource=""}"#;
    assert_eq!(m.get(inf), Some(&3.0));
    // the store under the API was timed (lists and gets of the requests above)
    let store_lists = m
        .get(r#"etcd_request_duration_seconds_count{operation="list"}"#)
        .copied()
        .unwrap_or_default();
    assert!(store_lists >= 3.0, "{m:#?}");

    // a watch is counted while it is open
    let watched = r#"apiserver_longrunning_requests{verb="WATCH",group="",resource="pods"}"#;
    let pods: Api<Pod> = Api::namespaced(client(&s).await, "default");
    let stream = pods.watch(&WatchParams::default(), "0").await.unwrap();
    let mut stream = Box::pin(stream);
    api_common::wait_for("the watch counted", Duration::from_secs(10), || async {
        (scrape(&s).await.get(watched) == Some(&1.0)).then_some(())
    })
    .await;
    // the stream really is a live watch
    let _ = tokio::time::timeout(Duration::from_millis(10), stream.next()).await;
    drop(stream);
    api_common::wait_for("the watch uncounted", Duration::from_secs(10), || async {
        (scrape(&s).await.get(watched) == Some(&0.0)).then_some(())
    })
    .await;
    let m = scrape(&s).await;
    let watch200 = r#"apiserver_request_total{verb="watch",group="",resource="pods",subresource="",code="200"}"#;
    assert_eq!(m.get(watch200), Some(&1.0));
    // the scrapes themselves are requests of a non-resource path
    assert!(
        m.get(
            r#"apiserver_request_total{verb="get",group="",resource="",subresource="",code="200"}"#
        )
        .is_some_and(|n| *n >= 1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_may_scrape() {
    let s = api_common::start().await;
    let (code, _) = s.request("GET", "/metrics", None, "", b"").await;
    assert_eq!(code, 401);
    let node = s.handle.node_token.clone();
    let (code, text) = s.request("GET", "/metrics", Some(&node), "", b"").await;
    assert_eq!(code, 403, "{text}");
    let (code, text) = s
        .request(
            "GET",
            "/metrics",
            Some(&s.handle.admin_token.clone()),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        text.contains("# TYPE apiserver_request_duration_seconds histogram"),
        "{text}"
    );
}

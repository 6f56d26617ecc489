//! What the server serves, and which of it a name on the command line means: `po`, `pods`,
//! `pod`, `Pod`, `deployments.apps`, `deploy/web`.

use anyhow::{Context, Result, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList};
use kube::Client;
use kube::core::ApiResource;

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Served {
    /// kube's description of it, for dynamic requests.
    pub fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version,
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// `deployment.apps`, `pod`: how kubectl names the kind in its messages.
    pub fn qualified_singular(&self) -> String {
        qualified(&self.singular_or_kind(), &self.group)
    }

    /// `deployments.apps`, `pods`: how the server names the resource in its errors.
    pub fn qualified_plural(&self) -> String {
        qualified(&self.plural, &self.group)
    }

    fn singular_or_kind(&self) -> String {
        if self.singular.is_empty() {
            self.kind.to_lowercase()
        } else {
            self.singular.clone()
        }
    }

    /// The collection's path: `/apis/apps/v1/namespaces/ns/deployments`.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.plural),
            None => format!("{base}/{}", self.plural),
        }
    }
}

fn qualified(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

/// Everything the server serves, in its preferred versions (legacy discovery documents).
pub async fn discover(client: &Client) -> Result<Vec<Served>> {
    let mut lists = Vec::new();
    let core: APIResourceList = client
        .request(get("/api/v1")?)
        .await
        .context("reading /api/v1")?;
    lists.push(core);
    let groups: APIGroupList = client
        .request(get("/apis")?)
        .await
        .context("reading /apis")?;
    for g in groups.groups {
        let Some(v) = g
            .preferred_version
            .or_else(|| g.versions.into_iter().next())
        else {
            continue;
        };
        let list: APIResourceList = client
            .request(get(&format!("/apis/{}", v.group_version))?)
            .await
            .with_context(|| format!("reading /apis/{}", v.group_version))?;
        lists.push(list);
    }
    Ok(flatten(lists))
}

fn get(path: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

/// The top-level resources of discovery documents (subresources like `pods/log` left out).
pub fn flatten(lists: Vec<APIResourceList>) -> Vec<Served> {
    let mut out = Vec::new();
    for list in lists {
        let (group, version) = match list.group_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), list.group_version.clone()),
        };
        for r in list.resources {
            if r.name.contains('/') {
                continue;
            }
            out.push(Served {
                group: r.group.clone().unwrap_or_else(|| group.clone()),
                version: r.version.clone().unwrap_or_else(|| version.clone()),
                kind: r.kind,
                plural: r.name,
                singular: r.singular_name,
                short_names: r.short_names.unwrap_or_default(),
                namespaced: r.namespaced,
                verbs: r.verbs,
            });
        }
    }
    out
}

/// The resource `name` means: a plural, singular, short name or kind (any case), optionally
/// qualified by group (`deployments.apps`, `deploy.apps`). As kubectl, the core group wins
/// a name that several groups serve (`events` over `events.events.k8s.io`).
pub fn resolve<'a>(served: &'a [Served], name: &str) -> Result<&'a Served> {
    let lower = name.to_lowercase();
    let candidates = |word: &str, group: Option<&str>| -> Vec<&'a Served> {
        served
            .iter()
            .filter(|s| group.is_none_or(|g| s.group == g))
            .filter(|s| {
                s.plural == word
                    || s.singular == word
                    || s.kind.to_lowercase() == word
                    || s.short_names.iter().any(|n| n == word)
            })
            .collect()
    };
    let mut found = candidates(&lower, None);
    if found.is_empty()
        && let Some((word, group)) = lower.split_once('.')
    {
        found = candidates(word, Some(group));
    }
    found.sort_by_key(|s| (!s.group.is_empty(), s.group.clone()));
    match found.first() {
        Some(s) => Ok(s),
        None => bail!("the server doesn't have a resource type \"{name}\""),
    }
}

/// The resource of `kind` in `api_version` (`apps/v1`, `v1`), as a manifest names it.
pub fn by_kind<'a>(served: &'a [Served], api_version: &str, kind: &str) -> Result<&'a Served> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    served
        .iter()
        .find(|s| s.group == group && s.kind == kind)
        .with_context(|| {
            format!(
                "resource mapping not found for kind \"{kind}\" in version \"{api_version}\"; \
                 the server serves {}",
                if served
                    .iter()
                    .any(|s| s.group == group && s.version == version)
                {
                    "the version but not that kind"
                } else {
                    "no such version"
                }
            )
        })
}

/// A (type, name) pair of the command line.
pub type Target = (String, String);

/// `TYPE NAME…` or `TYPE/NAME…` from the command line, as (type, name) pairs; `TYPE` alone
/// (or `TYPE,TYPE…`) gives the types and no names.
pub fn split_targets(args: &[String]) -> Result<(Vec<String>, Vec<Target>)> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource to get");
    };
    if args.iter().any(|a| a.contains('/')) {
        let mut pairs = Vec::new();
        for a in args {
            match a.split_once('/') {
                Some((t, n)) if !t.is_empty() && !n.is_empty() => {
                    pairs.push((t.to_string(), n.to_string()))
                }
                _ => bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff ctl get resource/<resource_name>' instead of 'skiff ctl get resource resource/<resource_name>')"
                ),
            }
        }
        return Ok((Vec::new(), pairs));
    }
    let types: Vec<String> = first.split(',').map(str::to_string).collect();
    let names = &args[1..];
    if !names.is_empty() && types.len() > 1 {
        bail!("names cannot be given with several resource types");
    }
    let pairs = names
        .iter()
        .map(|n| (types[0].clone(), n.clone()))
        .collect();
    if names.is_empty() {
        Ok((types, Vec::new()))
    } else {
        Ok((Vec::new(), pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn resource(name: &str, singular: &str, kind: &str, short: &[&str]) -> APIResource {
        APIResource {
            name: name.into(),
            singular_name: singular.into(),
            kind: kind.into(),
            namespaced: true,
            short_names: Some(short.iter().map(|s| s.to_string()).collect()),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }
    }

    fn served() -> Vec<Served> {
        flatten(vec![
            APIResourceList {
                group_version: "v1".into(),
                resources: vec![
                    resource("pods", "pod", "Pod", &["po"]),
                    resource("pods/log", "", "Pod", &[]),
                    resource("events", "event", "Event", &["ev"]),
                ],
            },
            APIResourceList {
                group_version: "apps/v1".into(),
                resources: vec![resource(
                    "deployments",
                    "deployment",
                    "Deployment",
                    &["deploy"],
                )],
            },
            APIResourceList {
                group_version: "events.k8s.io/v1".into(),
                resources: vec![resource("events", "event", "Event", &["ev"])],
            },
        ])
    }

    #[test]
    fn names_resolve_as_kubectl_resolves_them() {
        let s = served();
        for (name, group, plural) in [
            ("po", "", "pods"),
            ("pods", "", "pods"),
            ("Pod", "", "pods"),
            ("deploy", "apps", "deployments"),
            ("Deployment", "apps", "deployments"),
            ("deployments.apps", "apps", "deployments"),
            ("deploy.apps", "apps", "deployments"),
            ("events", "", "events"),
            ("events.events.k8s.io", "events.k8s.io", "events"),
        ] {
            let r = resolve(&s, name).unwrap();
            assert_eq!(
                (r.group.as_str(), r.plural.as_str()),
                (group, plural),
                "{name}"
            );
        }
        let err = resolve(&s, "widgets").unwrap_err().to_string();
        assert_eq!(err, "the server doesn't have a resource type \"widgets\"");
        assert!(resolve(&s, "log").is_err(), "subresources are not types");
    }

    #[test]
    fn names_and_paths_of_a_resource() {
        let s = served();
        let d = resolve(&s, "deploy").unwrap();
        assert_eq!(d.qualified_singular(), "deployment.apps");
        assert_eq!(d.qualified_plural(), "deployments.apps");
        assert_eq!(
            d.collection_path(Some("ns")),
            "/apis/apps/v1/namespaces/ns/deployments"
        );
        assert_eq!(d.collection_path(None), "/apis/apps/v1/deployments");
        let p = resolve(&s, "po").unwrap();
        assert_eq!(p.qualified_singular(), "pod");
        assert_eq!(p.collection_path(Some("a")), "/api/v1/namespaces/a/pods");
        assert_eq!(p.api_resource().api_version, "v1");
        assert_eq!(
            by_kind(&s, "apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(by_kind(&s, "apps/v1", "Widget").is_err());
    }

    #[test]
    fn targets_from_the_command_line() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pair = |t: &str, n: &str| (t.to_string(), n.to_string());
        assert_eq!(
            split_targets(&v(&["pods"])).unwrap(),
            (v(&["pods"]), vec![])
        );
        assert_eq!(
            split_targets(&v(&["pods,svc"])).unwrap(),
            (v(&["pods", "svc"]), vec![])
        );
        assert_eq!(
            split_targets(&v(&["pod", "a", "b"])).unwrap(),
            (vec![], vec![pair("pod", "a"), pair("pod", "b")])
        );
        assert_eq!(
            split_targets(&v(&["deploy/web", "svc/web"])).unwrap(),
            (vec![], vec![pair("deploy", "web"), pair("svc", "web")])
        );
        assert!(split_targets(&v(&["pod", "deploy/web"])).is_err());
        assert!(split_targets(&v(&["pods,svc", "a"])).is_err());
        assert!(split_targets(&v(&[])).is_err());
    }
}

//! Manifests on the command line: files, directories and stdin, YAML (several documents)
//! or JSON, `List`s unpacked; every document checked before anything is sent.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// `file.yaml` or `file.yaml (document 2)`, for messages.
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub body: Value,
}

/// The documents of `paths` in order (a directory's `.yaml`, `.yml` and `.json` files by
/// name; `-` is stdin).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for path in paths {
        for file in files(path)? {
            let text = if file == Path::new("-") {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            docs.extend(parse(&file.display().to_string(), &text)?);
        }
    }
    if docs.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(docs)
}

fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if path == Path::new("-") || !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The objects of one file's text.
pub fn parse(source: &str, text: &str) -> Result<Vec<Doc>> {
    let values: Vec<Value> = serde_saphyr::from_str_multiple(text)
        .map_err(|e| anyhow::anyhow!("error parsing {source}: {e}"))?;
    let several = values.len() > 1;
    let mut docs = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        if v.is_null() {
            continue;
        }
        let src = if several {
            format!("{source} (document {})", i + 1)
        } else {
            source.to_string()
        };
        if v["kind"] == "List" || v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                docs.push(doc(&format!("{src} item {}", j + 1), item)?);
            }
        } else {
            docs.push(doc(&src, v)?);
        }
    }
    Ok(docs)
}

fn doc(source: &str, body: Value) -> Result<Doc> {
    if !body.is_object() {
        bail!("error validating {source}: an object is expected, not {body}");
    }
    let field = |ptr: &str| {
        body.pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let Some(api_version) = field("/apiVersion").filter(|s| !s.is_empty()) else {
        bail!("error validating data in {source}: apiVersion not set");
    };
    let Some(kind) = field("/kind").filter(|s| !s.is_empty()) else {
        bail!("error validating data in {source}: kind not set");
    };
    let Some(name) = field("/metadata/name").filter(|s| !s.is_empty()) else {
        if field("/metadata/generateName").is_some() {
            bail!("error in {source}: cannot use generate name with apply");
        }
        bail!("error in {source}: metadata.name is required");
    };
    let namespace = field("/metadata/namespace");
    Ok(Doc {
        source: source.to_string(),
        api_version,
        kind,
        name,
        namespace,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_json() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  \
                    metadata: {name: web, namespace: prod}\n";
        let docs = parse("m.yaml", text).unwrap();
        let ids: Vec<_> = docs
            .iter()
            .map(|d| (d.kind.as_str(), d.name.as_str(), d.namespace.as_deref()))
            .collect();
        assert_eq!(
            ids,
            [
                ("Deployment", "web", None),
                ("Service", "web", Some("prod"))
            ]
        );
        assert_eq!(docs[0].source, "m.yaml (document 1)");
        let json = parse(
            "m.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        assert_eq!(json[0].api_version, "v1");
    }

    #[test]
    fn bad_documents_are_refused_with_their_place() {
        for (text, want) in [
            (
                "kind: Pod\nmetadata: {name: a}\n",
                "m.yaml: apiVersion not set",
            ),
            (
                "apiVersion: v1\nmetadata: {name: a}\n",
                "m.yaml: kind not set",
            ),
            ("apiVersion: v1\nkind: Pod\n", "metadata.name is required"),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {generateName: a-}\n",
                "cannot use generate name",
            ),
            ("- 1\n- 2\n", "an object is expected"),
            ("apiVersion: v1\nkind: [\n", "error parsing m.yaml"),
        ] {
            let err = parse("m.yaml", text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn directories_give_their_manifests_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cm = |n: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.path().join("b.yaml"), cm("b")).unwrap();
        std::fs::write(dir.path().join("a.yml"), cm("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let names: Vec<String> = load(&[dir.path().to_path_buf()])
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(load(&[dir.path().join("missing.yaml")]).is_err());
    }
}

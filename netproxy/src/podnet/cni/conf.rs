//! Network configurations as libcni reads them: the first file of the conf dir in lexical
//! order ending in `.conflist`, `.conf` or `.json`; a single-plugin `.conf`/`.json` is
//! wrapped into a list of one (libcni's `ConfListFromConf`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Error, Result};

/// A network configuration list (CNI spec 1.0 "network configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// `name`.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// `disableCheck`.
    pub disable_check: bool,
    /// The plugin configurations, in order.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as JSON (what the result cache records as `config`).
    pub bytes: Vec<u8>,
}

impl NetworkList {
    /// Each plugin's `type`.
    pub fn types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::InvalidConf {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(path, format!("no {key}"))),
    }
}

/// Parses a `.conflist`.
pub fn parse_list(bytes: &[u8], path: &Path) -> Result<NetworkList> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(path, e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(invalid(path, "not a JSON object"));
    };
    let name = string_field(&obj, "name", path)?;
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let plugins = match obj.get("plugins") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|p| match p {
                Value::Object(m) => {
                    string_field(m, "type", path)?;
                    Ok(m.clone())
                }
                _ => Err(invalid(path, "a plugin is not a JSON object")),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(invalid(path, "no plugins")),
    };
    Ok(NetworkList {
        name,
        cni_version,
        disable_check: obj.get("disableCheck").and_then(Value::as_bool) == Some(true),
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// Parses a single-plugin `.conf` and wraps it into a list, as libcni does: the list takes
/// `name` and `cniVersion`, the plugin keeps every key.
pub fn parse_single(bytes: &[u8], path: &Path) -> Result<NetworkList> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(path, e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(invalid(path, "not a JSON object"));
    };
    if obj.contains_key("plugins") {
        return Err(invalid(path, "a network list in a single-network file"));
    }
    let name = string_field(&obj, "name", path)?;
    string_field(&obj, "type", path)?;
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let list = serde_json::json!({
        "name": name,
        "cniVersion": cni_version,
        "plugins": [Value::Object(obj.clone())],
    });
    let bytes = serde_json::to_vec(&list).map_err(|e| invalid(path, e.to_string()))?;
    Ok(NetworkList {
        name,
        cni_version,
        disable_check: false,
        plugins: vec![obj],
        bytes,
    })
}

/// The configuration files of `dir` libcni considers, in lexical order.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                what: "read the CNI conf dir",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The network of `dir`: its first configuration file in lexical order (`None`: there is
/// none yet — a network add-on may write it later).
pub fn load_dir(dir: &Path) -> Result<Option<(PathBuf, NetworkList)>> {
    let Some(path) = conf_files(dir)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        what: "read",
        path: path.clone(),
        source,
    })?;
    let list = if path.extension().and_then(|x| x.to_str()) == Some("conflist") {
        parse_list(&bytes, &path)?
    } else {
        parse_single(&bytes, &path)?
    };
    Ok(Some((path, list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_confs() {
        let p = Path::new("/x");
        let list = parse_list(
            br#"{"cniVersion":"1.0.0","name":"k8s","disableCheck":true,"plugins":[
                {"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            p,
        )
        .unwrap();
        assert_eq!(list.name, "k8s");
        assert_eq!(list.cni_version, "1.0.0");
        assert!(list.disable_check);
        assert_eq!(list.types(), ["bridge", "portmap"]);

        let single = parse_single(
            br#"{"cniVersion":"0.4.0","name":"one","type":"bridge","ipam":{"type":"host-local"}}"#,
            p,
        )
        .unwrap();
        assert_eq!(single.name, "one");
        assert_eq!(single.cni_version, "0.4.0");
        assert_eq!(single.types(), ["bridge"]);
        // the plugin keeps every key, the wrapped list is what the cache records
        assert_eq!(single.plugins[0]["ipam"]["type"], "host-local");
        let wrapped: Value = serde_json::from_slice(&single.bytes).unwrap();
        assert_eq!(wrapped["plugins"][0]["name"], "one");
        assert_eq!(wrapped["cniVersion"], "0.4.0");

        let bad: [(&[u8], bool); 7] = [
            (b"not json", true),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                true,
            ),
            (br#"{"name":"n","plugins":[]}"#, true),
            (br#"{"name":"n","plugins":[{"bridge":"x"}]}"#, true),
            (br#"{"name":"n","plugins":[3]}"#, true),
            (br#"{"name":"n"}"#, false),
            (br#"{"name":"n","plugins":[{"type":"a"}]}"#, false),
        ];
        for (i, (b, as_list)) in bad.iter().enumerate() {
            let r = if *as_list {
                parse_list(b, p)
            } else {
                parse_single(b, p)
            };
            assert!(
                matches!(r, Err(Error::InvalidConf { .. })),
                "case {i}: {r:?}"
            );
        }
    }

    #[test]
    fn first_file_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_dir(dir.path()).unwrap(), None);
        assert_eq!(load_dir(&dir.path().join("missing")).unwrap(), None);
        let write = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
        write("README", "ignored");
        write(
            "99-late.conflist",
            r#"{"name":"late","plugins":[{"type":"a"}]}"#,
        );
        write("20-mid.json", r#"{"name":"mid","type":"b"}"#);
        let (path, list) = load_dir(dir.path()).unwrap().unwrap();
        assert_eq!(path, dir.path().join("20-mid.json"));
        assert_eq!((list.name.as_str(), list.types()), ("mid", vec!["b"]));
        write(
            "10-calico.conflist",
            r#"{"name":"k8s-pod-network","plugins":[{"type":"calico"},{"type":"portmap"}]}"#,
        );
        let (_, list) = load_dir(dir.path()).unwrap().unwrap();
        assert_eq!(list.types(), ["calico", "portmap"]);
        write("05-flannel.conf", r#"{"name":"cbr0","type":"flannel"}"#);
        let (_, list) = load_dir(dir.path()).unwrap().unwrap();
        assert_eq!(list.name, "cbr0");
    }
}

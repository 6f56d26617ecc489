//! Output as kubectl prints it: the server's Tables in aligned columns, objects as YAML or JSON.

use anyhow::Result;
use serde_json::Value;

/// kubectl's tabwriter: a column is at least 10 wide and 3 spaces separate columns.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// The text of `rows` under `headers`, aligned as kubectl aligns it (the last column is not
/// padded).
pub fn columns(headers: &[String], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut widths = vec![0usize; n];
    for row in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        for (i, cell) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(n) {
            if i + 1 < n {
                let w = (widths[i] + PADDING).max(MIN_WIDTH);
                line.push_str(&format!("{cell:<w$}"));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One cell of a server-side Table as kubectl shows it.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<none>".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Headers and rows of a `meta.k8s.io/v1` Table: columns of priority 0 (all of them when
/// `wide`), with a NAMESPACE column in front when `with_namespace`.
pub fn table_rows(
    table: &Value,
    wide: bool,
    with_namespace: bool,
) -> (Vec<String>, Vec<Vec<String>>) {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keep: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut headers: Vec<String> = keep
        .iter()
        .map(|&i| defs[i]["name"].as_str().unwrap_or("").to_uppercase())
        .collect();
    if with_namespace {
        headers.insert(0, "NAMESPACE".into());
    }
    let rows = table["rows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|row| {
            let cells = row["cells"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut out: Vec<String> = keep
                .iter()
                .map(|&i| cells.get(i).map(cell).unwrap_or_default())
                .collect();
            if with_namespace {
                let ns = row["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("");
                out.insert(0, ns.to_string());
            }
            out
        })
        .collect();
    (headers, rows)
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns with the extra ones (node, IP…).
    Wide,
    Yaml,
    Json,
    /// `kind.group/name` per line.
    Name,
}

/// `objects` as YAML or JSON: one object as itself, several as a `v1` `List`.
pub fn objects(objects: Vec<Value>, format: Format, single: bool) -> Result<String> {
    let mut objects: Vec<Value> = objects.into_iter().map(without_managed_fields).collect();
    let doc = if single && objects.len() == 1 {
        objects.remove(0)
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects,
            "metadata": {"resourceVersion": ""},
        })
    };
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&doc)? + "\n",
        _ => serde_saphyr::to_string(&doc)?,
    })
}

/// kubectl hides `metadata.managedFields` unless asked.
fn without_managed_fields(mut o: Value) -> Value {
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_as_kubectl_aligns_them() {
        let h = vec!["NAME".to_string(), "READY".into(), "AGE".into()];
        let rows = vec![
            vec!["web-1".to_string(), "1/1".into(), "5s".into()],
            vec!["a-much-longer-name".to_string(), "0/1".into(), "10m".into()],
        ];
        assert_eq!(
            columns(&h, &rows),
            "NAME                 READY     AGE\n\
             web-1                1/1       5s\n\
             a-much-longer-name   0/1       10m\n"
        );
    }

    #[test]
    fn tables_keep_priority_zero_columns_unless_wide() {
        let t = json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Status", "priority": 0},
                {"name": "Node", "priority": 1},
            ],
            "rows": [
                {"cells": ["a", "Running", "n1"], "object": {"metadata": {"namespace": "x"}}},
                {"cells": ["b", null, "n2"], "object": {"metadata": {"namespace": "y"}}},
            ],
        });
        let (h, r) = table_rows(&t, false, false);
        assert_eq!(h, ["NAME", "STATUS"]);
        assert_eq!(r, [["a", "Running"], ["b", "<none>"]]);
        let (h, r) = table_rows(&t, true, true);
        assert_eq!(h, ["NAMESPACE", "NAME", "STATUS", "NODE"]);
        assert_eq!(r[1], ["y", "b", "<none>", "n2"]);
    }

    #[test]
    fn one_object_or_a_list() {
        let o = json!({"kind": "Pod", "metadata": {"name": "a", "managedFields": [{}]}});
        let one = objects(vec![o.clone()], Format::Json, true).unwrap();
        let v: Value = serde_json::from_str(&one).unwrap();
        assert_eq!(v, json!({"kind": "Pod", "metadata": {"name": "a"}}));
        let list = objects(vec![o.clone(), o], Format::Yaml, false).unwrap();
        assert!(list.contains("kind: List"), "{list}");
        assert!(!list.contains("managedFields"), "{list}");
    }
}

//! Validation of objects on create and update, worded as the apiserver words it.

use serde_json::{Map, Value};

use super::FieldError;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Formats a value as the apiserver's `%#v`-ish rendering in `Invalid value: …`.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Collects field errors.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn required(&mut self, field: &str) {
        self.push("FieldValueRequired", field, "Required value".into());
    }
    pub(crate) fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {detail}", show(value)),
        );
    }
    pub(crate) fn duplicate(&mut self, field: &str, value: &Value) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", show(value)),
        );
    }
    pub(crate) fn not_supported(&mut self, field: &str, value: &Value, allowed: &[&str]) {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        self.push(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ),
        );
    }
    pub(crate) fn forbidden(&mut self, field: &str, detail: &str) {
        self.push("FieldValueForbidden", field, format!("Forbidden: {detail}"));
    }
    pub(crate) fn push(&mut self, reason: &'static str, field: &str, message: String) {
        self.0.push(FieldError {
            reason,
            field: field.to_string(),
            message,
        });
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Lower-case letters, digits and '-', starting and ending with a letter or digit (the
/// character rules of an RFC 1123 label; RFC 1035 also wants a letter first).
fn label_chars_ok(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
}

/// RFC 1123 label problems (empty when valid).
pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !label_chars_ok(s.as_bytes()) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// RFC 1123 subdomain problems (empty when valid).
pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok = !s.is_empty() && s.split('.').all(|p| label_chars_ok(p.as_bytes()));
    if !ok {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// RFC 1035 label problems (service names).
pub(crate) fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let b = s.as_bytes();
    if !(label_chars_ok(b) && b[0].is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Qualified name (label and annotation keys) problems.
pub(crate) fn qualified_name(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        errs.push("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string());
        return errs;
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !name_part_ok(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// Label value problems.
pub(crate) fn label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !name_part_ok(v) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// How the kind's object names are checked.
fn name_rule(kind: &str) -> fn(&str) -> Vec<String> {
    match kind {
        "Namespace" => dns1123_label,
        "Service" => dns1035_label,
        _ => dns1123_subdomain,
    }
}

/// Validates `metadata` (name, generateName, labels, annotations).
pub(crate) fn metadata(kind: &str, namespaced: bool, obj: &Value, errs: &mut Errors) {
    let meta = obj.get("metadata").and_then(Value::as_object);
    let empty = Map::new();
    let meta = meta.unwrap_or(&empty);
    let rule = name_rule(kind);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required".into(),
            );
        } else {
            // generateName gets a 5-character suffix; the prefix must be valid with one.
            let probe = format!("{generate}a");
            for m in rule(&probe) {
                errs.invalid("metadata.generateName", &Value::from(generate), &m);
            }
        }
    } else {
        for m in rule(name) {
            errs.invalid("metadata.name", &Value::from(name), &m);
        }
    }
    if namespaced {
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
            if !ns.is_empty() {
                for m in dns1123_label(ns) {
                    errs.invalid("metadata.namespace", &Value::from(ns), &m);
                }
            }
        }
    } else if meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_some_and(|ns| !ns.is_empty())
    {
        errs.forbidden("metadata.namespace", "not allowed on this type");
    }
    labels(meta.get("labels"), "metadata.labels", errs);
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            for m in qualified_name(&k.to_lowercase()) {
                errs.invalid("metadata.annotations", &Value::from(k.as_str()), &m);
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE {
            errs.push(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: must have at most {TOTAL_ANNOTATION_SIZE} bytes"),
            );
        }
    }
}

/// Validates a label map at `field`.
pub(crate) fn labels(labels: Option<&Value>, field: &str, errs: &mut Errors) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        for m in qualified_name(k) {
            errs.invalid(field, &Value::from(k.as_str()), &m);
        }
        let val = v.as_str().unwrap_or("");
        for m in label_value(val) {
            errs.invalid(&format!("{field}[{k}]"), v, &m);
        }
    }
}

fn port_range(v: &Value, field: &str, errs: &mut Errors) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        _ => errs.invalid(field, v, "must be between 1 and 65535, inclusive"),
    }
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn protocol(v: Option<&Value>, field: &str, errs: &mut Errors) {
    match v {
        None => errs.required(field),
        Some(p) if p.as_str().is_some_and(|s| PROTOCOLS.contains(&s)) => {}
        Some(p) => errs.not_supported(field, p, PROTOCOLS),
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub(crate) fn pod_spec(spec: Option<&Value>, path: &str, errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required(path);
        return;
    };
    let mut names: Vec<&str> = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.required(&format!("{path}.containers"));
    }
    for key in ["initContainers", "containers"] {
        let list = spec.get(key).and_then(Value::as_array);
        for (i, c) in list.into_iter().flatten().enumerate() {
            let cp = format!("{path}.{key}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.required(&format!("{cp}.name")),
                Some(n) => {
                    for m in dns1123_label(n) {
                        errs.invalid(&format!("{cp}.name"), &Value::from(n), &m);
                    }
                    if names.contains(&n) {
                        errs.duplicate(&format!("{cp}.name"), &Value::from(n));
                    }
                    names.push(n);
                }
            }
            match c.get("image").and_then(Value::as_str) {
                None | Some("") => errs.required(&format!("{cp}.image")),
                Some(img) if img.trim() != img => errs.invalid(
                    &format!("{cp}.image"),
                    &Value::from(img),
                    "must not have leading or trailing whitespace",
                ),
                Some(_) => {}
            }
            if let Some(sc) = c.get("securityContext") {
                security_context(sc, &format!("{cp}.securityContext"), errs);
            }
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut port_names: Vec<&str> = Vec::new();
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let pp = format!("{cp}.ports[{j}]");
                match p.get("containerPort") {
                    None => errs.required(&format!("{pp}.containerPort")),
                    Some(v) => port_range(v, &format!("{pp}.containerPort"), errs),
                }
                if let Some(hp) = p.get("hostPort") {
                    if hp.as_i64() != Some(0) {
                        port_range(hp, &format!("{pp}.hostPort"), errs);
                    }
                }
                protocol(p.get("protocol"), &format!("{pp}.protocol"), errs);
                if let Some(n) = p.get("name").and_then(Value::as_str) {
                    port_name(n, &format!("{pp}.name"), errs);
                    if port_names.contains(&n) {
                        errs.duplicate(&format!("{pp}.name"), &Value::from(n));
                    }
                    port_names.push(n);
                }
                let key = (
                    p.get("containerPort").and_then(Value::as_i64).unwrap_or(0),
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                );
                if seen.contains(&key) {
                    errs.duplicate(&pp, p);
                }
                seen.push(key);
            }
            let mut env_names = Vec::new();
            for (j, e) in c
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                match e.get("name").and_then(Value::as_str) {
                    None | Some("") => errs.required(&format!("{cp}.env[{j}].name")),
                    Some(n) => env_names.push(n),
                }
            }
            let mut mounts = Vec::new();
            for (j, m) in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mp = format!("{cp}.volumeMounts[{j}]");
                match m.get("name").and_then(Value::as_str) {
                    None | Some("") => errs.required(&format!("{mp}.name")),
                    Some(n) => mounts.push((n, mp.clone())),
                }
                match m.get("mountPath").and_then(Value::as_str) {
                    None | Some("") => errs.required(&format!("{mp}.mountPath")),
                    Some(_) => {}
                }
            }
            let volumes: Vec<&str> = spec
                .get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .collect();
            for (n, mp) in mounts {
                if !volumes.contains(&n) {
                    errs.push(
                        "FieldValueNotFound",
                        &format!("{mp}.name"),
                        format!("Not found: {:?}", n),
                    );
                }
            }
        }
    }
    let mut vol_names = Vec::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let vp = format!("{path}.volumes[{i}]");
        match v.get("name").and_then(Value::as_str) {
            None | Some("") => errs.required(&format!("{vp}.name")),
            Some(n) => {
                for m in dns1123_label(n) {
                    errs.invalid(&format!("{vp}.name"), &Value::from(n), &m);
                }
                if vol_names.contains(&n) {
                    errs.duplicate(&format!("{vp}.name"), &Value::from(n));
                }
                vol_names.push(n);
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy") {
        let allowed = ["Always", "OnFailure", "Never"];
        if !rp.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.not_supported(&format!("{path}.restartPolicy"), rp, &allowed);
        }
    }
    if let Some(dp) = spec.get("dnsPolicy") {
        let allowed = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !dp.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.not_supported(&format!("{path}.dnsPolicy"), dp, &allowed);
        }
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds") {
        if g.as_i64().is_some_and(|g| g < 0) {
            errs.invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                g,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(a) = spec.get("activeDeadlineSeconds") {
        if a.as_i64().is_none_or(|a| a <= 0) {
            errs.invalid(
                &format!("{path}.activeDeadlineSeconds"),
                a,
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    labels(
        spec.get("nodeSelector"),
        &format!("{path}.nodeSelector"),
        errs,
    );
}

/// Kubernetes' `ValidateSecurityContext` rules on privilege escalation: it cannot be turned
/// off for a privileged container or one that adds CAP_SYS_ADMIN.
fn security_context(sc: &Value, field: &str, errs: &mut Errors) {
    if sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
        return;
    }
    if sc.get("privileged").and_then(Value::as_bool) == Some(true) {
        errs.invalid(
            field,
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        );
    }
    let adds = sc.pointer("/capabilities/add").and_then(Value::as_array);
    if adds
        .into_iter()
        .flatten()
        .any(|c| c.as_str() == Some("CAP_SYS_ADMIN"))
    {
        errs.invalid(
            field,
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
        );
    }
}

fn port_name(n: &str, field: &str, errs: &mut Errors) {
    let b = n.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !n.contains("--");
    if !ok {
        let detail = if b.len() > 15 {
            "must be no more than 15 characters"
        } else {
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
        };
        errs.invalid(field, &Value::from(n), detail);
    }
}

/// Validates a workload (Deployment/ReplicaSet/DaemonSet/Job) spec: selector, template, replicas.
pub(crate) fn workload(kind: &str, obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec");
    let selector = spec.and_then(|s| s.get("selector"));
    let match_labels = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let exprs = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array);
    if selector.is_none() {
        errs.required("spec.selector");
    } else if match_labels.is_none_or(Map::is_empty) && exprs.is_none_or(Vec::is_empty) {
        errs.invalid(
            "spec.selector",
            selector.unwrap_or(&Value::Null),
            "empty selector is invalid for deployment",
        );
    }
    labels(
        selector.and_then(|s| s.get("matchLabels")),
        "spec.selector.matchLabels",
        errs,
    );
    if let Some(r) = spec.and_then(|s| s.get("replicas")) {
        if r.as_i64().is_none_or(|r| r < 0) {
            errs.invalid("spec.replicas", r, "must be greater than or equal to 0");
        }
    }
    let template = spec.and_then(|s| s.get("template"));
    let Some(template) = template else {
        errs.required("spec.template");
        return;
    };
    let tpl_labels = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    labels(
        template.get("metadata").and_then(|m| m.get("labels")),
        "spec.template.metadata.labels",
        errs,
    );
    if selector.is_some() && !selector_matches(selector, tpl_labels) {
        let shown = Value::Object(tpl_labels.cloned().unwrap_or_default());
        errs.invalid(
            "spec.template.metadata.labels",
            &shown,
            "`selector` does not match template `labels`",
        );
    }
    pod_spec(template.get("spec"), "spec.template.spec", errs);
    // A Job's restart policies are checked with its own rules.
    if let Some(rp) = template
        .pointer("/spec/restartPolicy")
        .filter(|_| kind != "Job")
    {
        if rp.as_str() != Some("Always") {
            errs.not_supported("spec.template.spec.restartPolicy", rp, &["Always"]);
        }
    }
    if kind == "Deployment" {
        if let Some(t) = spec.and_then(|s| s.pointer("/strategy/type")) {
            let allowed = ["Recreate", "RollingUpdate"];
            if !t.as_str().is_some_and(|s| allowed.contains(&s)) {
                errs.not_supported("spec.strategy.type", t, &allowed);
            }
        }
    }
}

/// Whether a label selector (matchLabels + matchExpressions) matches `labels`.
pub(crate) fn selector_matches(
    selector: Option<&Value>,
    labels: Option<&Map<String, Value>>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&Value> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let have = labels.get(key);
        let ok = match e.get("operator").and_then(Value::as_str) {
            Some("In") => have.is_some_and(|h| values.contains(&h)),
            Some("NotIn") => !have.is_some_and(|h| values.contains(&h)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Validates a Service spec.
pub(crate) fn service(obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec");
    let ty = spec
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !types.contains(&ty) {
        errs.not_supported("spec.type", &Value::from(ty), &types);
    }
    let ports = spec.and_then(|s| s.get("ports")).and_then(Value::as_array);
    if ty != "ExternalName" && ports.is_none_or(Vec::is_empty) {
        errs.required("spec.ports");
    }
    if ty == "ExternalName"
        && spec
            .and_then(|s| s.get("externalName"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errs.required("spec.externalName");
    }
    let many = ports.is_some_and(|p| p.len() > 1);
    let mut names = Vec::new();
    let mut seen = Vec::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.get("name").and_then(Value::as_str) {
            None | Some("") if many => errs.required(&format!("{pp}.name")),
            None | Some("") => {}
            Some(n) => {
                for m in dns1123_label(n) {
                    errs.invalid(&format!("{pp}.name"), &Value::from(n), &m);
                }
                if names.contains(&n) {
                    errs.duplicate(&format!("{pp}.name"), &Value::from(n));
                }
                names.push(n);
            }
        }
        match p.get("port") {
            None => errs.required(&format!("{pp}.port")),
            Some(v) => port_range(v, &format!("{pp}.port"), errs),
        }
        protocol(p.get("protocol"), &format!("{pp}.protocol"), errs);
        match p.get("targetPort") {
            Some(Value::String(s)) => port_name(s, &format!("{pp}.targetPort"), errs),
            Some(v @ Value::Number(_)) => port_range(v, &format!("{pp}.targetPort"), errs),
            _ => {}
        }
        if let Some(np) = p.get("nodePort") {
            if ty == "ClusterIP" && np.as_i64().is_some_and(|n| n != 0) {
                errs.forbidden(
                    &format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            }
        }
        let key = (
            p.get("port").and_then(Value::as_i64),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        );
        if seen.contains(&key) {
            errs.duplicate(&pp, p);
        }
        seen.push(key);
    }
    if let Some(sel) = spec.and_then(|s| s.get("selector")) {
        labels(Some(sel), "spec.selector", errs);
    }
    if let Some(sa) = spec.and_then(|s| s.get("sessionAffinity")) {
        let allowed = ["ClientIP", "None"];
        if !sa.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.not_supported("spec.sessionAffinity", sa, &allowed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_without_privilege_escalation_is_invalid() {
        let table = [
            (serde_json::json!({"privileged": true}), 0),
            (serde_json::json!({"allowPrivilegeEscalation": false}), 0),
            (
                serde_json::json!({"privileged": true, "allowPrivilegeEscalation": true}),
                0,
            ),
            (
                serde_json::json!({"privileged": true, "allowPrivilegeEscalation": false}),
                1,
            ),
            (
                serde_json::json!({"allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["CAP_SYS_ADMIN"]}}),
                1,
            ),
        ];
        for (sc, want) in table {
            let spec = serde_json::json!({"containers": [
                {"name": "c", "image": "i", "securityContext": sc}]});
            let mut errs = Errors::default();
            pod_spec(Some(&spec), "spec", &mut errs);
            assert_eq!(errs.0.len(), want, "{sc}: {:?}", errs.0);
            if want == 1 {
                let text = format!("{:?}", errs.0);
                assert!(
                    text.contains("spec.containers[0].securityContext")
                        && text.contains("cannot set `allowPrivilegeEscalation` to false"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn names() {
        assert!(dns1123_subdomain("a.b-c").is_empty());
        assert_eq!(dns1123_subdomain("Foo_Bar"), vec![DNS1123_SUBDOMAIN_MSG]);
        assert_eq!(dns1123_subdomain(&"a".repeat(254)).len(), 1);
        assert!(dns1123_label("a-1").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(dns1035_label("abc-1").is_empty());
    }

    #[test]
    fn keys_and_values() {
        for (k, ok) in [
            ("app", true),
            ("example.com/app", true),
            ("Example.com/app", false),
            ("/app", false),
            ("a/b/c", false),
            ("-app", false),
            ("app_x.Y", true),
        ] {
            assert_eq!(qualified_name(k).is_empty(), ok, "{k}");
        }
        for (v, ok) in [("", true), ("a", true), ("a b", false), ("-a", false)] {
            assert_eq!(label_value(v).is_empty(), ok, "{v}");
        }
        assert!(!label_value(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn selectors() {
        let labels: Map<String, Value> =
            serde_json::from_str(r#"{"app":"x","tier":"web"}"#).unwrap();
        for (sel, want) in [
            (r#"{"matchLabels":{"app":"x"}}"#, true),
            (r#"{"matchLabels":{"app":"y"}}"#, false),
            (
                r#"{"matchExpressions":[{"key":"tier","operator":"In","values":["web"]}]}"#,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"tier","operator":"NotIn","values":["web"]}]}"#,
                false,
            ),
            (
                r#"{"matchExpressions":[{"key":"z","operator":"DoesNotExist"}]}"#,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"z","operator":"Exists"}]}"#,
                false,
            ),
        ] {
            let sel: Value = serde_json::from_str(sel).unwrap();
            assert_eq!(selector_matches(Some(&sel), Some(&labels)), want, "{sel}");
        }
    }
}

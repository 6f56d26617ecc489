//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to the
//! JSON our handlers take.
//!
//! client-go's typed clients (kubectl `create job`, `create deployment`, `run`, `expose`,
//! `autoscale`, `drain`…) send objects as the 4-byte magic `k8s\0` followed by a
//! `runtime.Unknown` whose `raw` bytes are the object's own message from the `generated.proto`
//! files of k8s.io/api and k8s.io/apimachinery. Decoding is generic: the message is looked up
//! by the Unknown's apiVersion and kind in a table of every message (field number → JSON name,
//! cardinality and type), `protobuf_schema.txt`, which `scripts/gen-proto-schema.py` generates
//! from the `k8s-pb` crate's prost messages and `k8s-openapi`'s JSON names. Kubernetes' special
//! types map to their JSON forms: `Time`/`MicroTime` to RFC 3339, `Duration` to Go's duration
//! string, `Quantity` to its string, `IntOrString` to a number or string, `RawExtension` and
//! `FieldsV1` to the JSON they carry, `bytes` to base64, and Go structs embedded inline are
//! flattened into their parent.
//!
//! Protobuf cannot tell an unset field from a zero one, and gogo-protobuf writes every
//! non-pointer Go field even when it is zero. As Go's JSON encoder drops those (`omitempty`),
//! zero values are omitted, except for fields k8s-openapi requires and the pointer fields in
//! [`KEEP_ZERO`] where an explicit `0` or `false` means something (`replicas: 0`, `suspend:
//! false`).

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const SCHEMA: &str = include_str!("protobuf_schema.txt");
const META: &str = "apimachinery.pkg.apis.meta.v1";

/// Optional fields that are Go pointers in the served types, whose zero value (`0`, `false`)
/// is a choice of the client and so is kept.
const KEEP_ZERO: &[&str] = &[
    // apps/v1 workloads and scale
    "replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    // batch/v1 Job and CronJob
    "parallelism",
    "completions",
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "ttlSecondsAfterFinished",
    "suspend",
    "manualSelector",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    // core/v1 pods and their security contexts, probes, volumes
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "shareProcessNamespace",
    "enableServiceLinks",
    "setHostnameAsFQDN",
    "hostUsers",
    "priority",
    "privileged",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "defaultMode",
    "mode",
    "optional",
    "expirationSeconds",
    "tolerationSeconds",
    "immutable",
    // services, endpoint slices, leases
    "allocateLoadBalancerNodePorts",
    "timeoutSeconds",
    "ready",
    "serving",
    "terminating",
    "leaseDurationSeconds",
    "leaseTransitions",
    // metadata and DeleteOptions
    "deletionGracePeriodSeconds",
    "controller",
    "blockOwnerDeletion",
    "gracePeriodSeconds",
    "orphanDependents",
    // autoscaling
    "minReplicas",
    "targetCPUUtilizationPercentage",
    "averageUtilization",
    "stabilizationWindowSeconds",
];

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body lacks the `k8s\0` prefix.
    #[error("the body does not start with the Kubernetes protobuf prefix \"k8s\\x00\"")]
    NoMagic,
    /// A varint or length runs past the end of a message.
    #[error("truncated or malformed protobuf data in {message}")]
    Truncated {
        /// The message being read.
        message: String,
    },
    /// Groups (wire types 3 and 4) or an invalid wire type.
    #[error("unsupported protobuf wire type {wire_type} in {message}")]
    WireType {
        /// The wire type found.
        wire_type: u64,
        /// The message being read.
        message: String,
    },
    /// A field's wire type does not fit its declared type.
    #[error("field {field} of {message} has wire type {wire_type}, not its declared type")]
    FieldType {
        /// The field's JSON name.
        field: String,
        /// The message being read.
        message: String,
        /// The wire type found.
        wire_type: u8,
    },
    /// A string field is not UTF-8.
    #[error("field {field} of {message} is not valid UTF-8")]
    Utf8 {
        /// The field's JSON name.
        field: String,
        /// The message being read.
        message: String,
    },
    /// The envelope has no apiVersion or kind.
    #[error("the protobuf body names no apiVersion and kind")]
    NoKind,
    /// No message is known for the envelope's apiVersion and kind.
    #[error("no protobuf message is known for kind {kind} of {api_version}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The envelope's contentEncoding is set (client-go never sets it).
    #[error("content encoding {0:?} of the protobuf body is not supported")]
    ContentEncoding(String),
    /// A RawExtension or FieldsV1 holds bytes that are not JSON.
    #[error("field {field} of {message} holds invalid JSON: {source}")]
    Json {
        /// The field's JSON name.
        field: String,
        /// The message being read.
        message: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A Time or MicroTime out of range.
    #[error("field {field} of {message} holds a time out of range")]
    Time {
        /// The field's JSON name.
        field: String,
        /// The message being read.
        message: String,
    },
    /// The built-in message table is malformed (a build defect).
    #[error("protobuf schema line {line} is malformed")]
    Schema {
        /// The line of protobuf_schema.txt.
        line: usize,
    },
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) to the object's JSON,
/// with `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let raw = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let unknown = "runtime.Unknown";
    let (mut api_version, mut kind, mut inner, mut encoding) = (None, None, None, None);
    for (tag, w) in scan(raw, unknown)? {
        match (tag, w) {
            (1, Wire::Bytes(tm)) => {
                for (t, w) in scan(tm, "runtime.TypeMeta")? {
                    match (t, w) {
                        (1, Wire::Bytes(b)) => api_version = Some(utf8(b, "apiVersion", unknown)?),
                        (2, Wire::Bytes(b)) => kind = Some(utf8(b, "kind", unknown)?),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => inner = Some(b),
            (3, Wire::Bytes(b)) => encoding = Some(utf8(b, "contentEncoding", unknown)?),
            _ => {}
        }
    }
    if let Some(enc) = encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::ContentEncoding(enc));
    }
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(ProtobufError::NoKind);
    };
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::NoKind);
    }
    let schema = schema()?;
    let message =
        schema
            .message_for(&api_version, &kind)
            .ok_or_else(|| ProtobufError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
            })?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    obj.extend(schema.decode_message(message, inner.unwrap_or_default())?);
    Ok(Value::Object(obj))
}

/// Whether a Content-Type header names Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

// --- the wire format ---------------------------------------------------------------------

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl Wire<'_> {
    fn wire_type(&self) -> u8 {
        match self {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Bytes(_) => 2,
            Wire::Fixed32 => 5,
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = buf.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

/// The fields of one message in wire order.
fn scan<'a>(buf: &'a [u8], message: &str) -> Result<Vec<(u32, Wire<'a>)>, ProtobufError> {
    let truncated = || ProtobufError::Truncated {
        message: message.to_string(),
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos).ok_or_else(truncated)?;
        let tag = u32::try_from(key >> 3).map_err(|_| truncated())?;
        if tag == 0 {
            return Err(truncated());
        }
        let w = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos).ok_or_else(truncated)?),
            1 => {
                let b = take(buf, &mut pos, 8).ok_or_else(truncated)?;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| truncated())?))
            }
            2 => {
                let n = varint(buf, &mut pos).ok_or_else(truncated)?;
                let n = usize::try_from(n).map_err(|_| truncated())?;
                Wire::Bytes(take(buf, &mut pos, n).ok_or_else(truncated)?)
            }
            5 => {
                take(buf, &mut pos, 4).ok_or_else(truncated)?;
                Wire::Fixed32
            }
            wire_type => {
                return Err(ProtobufError::WireType {
                    wire_type,
                    message: message.to_string(),
                });
            }
        };
        out.push((tag, w));
    }
    Ok(out)
}

fn utf8(b: &[u8], field: &str, message: &str) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Utf8 {
        field: field.to_string(),
        message: message.to_string(),
    })
}

// --- the schema ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Ty {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    Bytes,
    Message(String),
}

impl Ty {
    fn parse(s: &str) -> Ty {
        match s {
            "string" => Ty::String,
            "bool" => Ty::Bool,
            "int32" => Ty::Int32,
            "int64" => Ty::Int64,
            "double" => Ty::Double,
            "bytes" => Ty::Bytes,
            m => Ty::Message(m.to_string()),
        }
    }
}

#[derive(Debug)]
enum Card {
    Optional,
    Repeated,
    Map(Ty),
}

#[derive(Debug)]
struct Field {
    json: String,
    card: Card,
    ty: Ty,
    required: bool,
    inline: bool,
}

#[derive(Debug, Default)]
struct Message {
    fields: HashMap<u32, Field>,
}

#[derive(Debug)]
struct Schema {
    messages: HashMap<String, Message>,
    /// (package, lower-case message name) → full name, to find a kind's message.
    by_name: HashMap<(String, String), String>,
}

fn schema() -> Result<&'static Schema, ProtobufError> {
    static SCHEMA_CELL: OnceLock<Result<Schema, usize>> = OnceLock::new();
    SCHEMA_CELL
        .get_or_init(|| Schema::parse(SCHEMA))
        .as_ref()
        .map_err(|&line| ProtobufError::Schema { line })
}

impl Schema {
    fn parse(text: &str) -> Result<Schema, usize> {
        let mut messages = HashMap::new();
        let mut by_name = HashMap::new();
        let mut current: Option<(String, Message)> = None;
        for (i, line) in text.lines().enumerate() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["M", pkg, name] => {
                    if let Some((full, m)) = current.take() {
                        messages.insert(full, m);
                    }
                    let full = format!("{pkg}.{name}");
                    by_name.insert((pkg.to_string(), name.to_ascii_lowercase()), full.clone());
                    current = Some((full, Message::default()));
                }
                ["F", tag, json, card, ty, flags @ ..] => {
                    let (_, m) = current.as_mut().ok_or(i + 1)?;
                    let tag: u32 = tag.parse().map_err(|_| i + 1)?;
                    let (card, ty) = match *card {
                        "o" => (Card::Optional, Ty::parse(ty)),
                        "r" => (Card::Repeated, Ty::parse(ty)),
                        "m" => {
                            let (k, v) = ty.split_once(',').ok_or(i + 1)?;
                            (Card::Map(Ty::parse(v)), Ty::parse(k))
                        }
                        _ => return Err(i + 1),
                    };
                    m.fields.insert(
                        tag,
                        Field {
                            json: json.to_string(),
                            card,
                            ty,
                            required: flags.contains(&"R"),
                            inline: flags.contains(&"I"),
                        },
                    );
                }
                [""] => {}
                _ => return Err(i + 1),
            }
        }
        if let Some((full, m)) = current {
            messages.insert(full, m);
        }
        Ok(Schema { messages, by_name })
    }

    /// The message of an apiVersion and kind: `apps/v1` → package `api.apps.v1`, the core
    /// group → `api.core.v1`; meta types (DeleteOptions…) are registered in every group.
    fn message_for(&self, api_version: &str, kind: &str) -> Option<&str> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = kind.to_ascii_lowercase();
        let pkg = match group {
            "" => format!("api.core.{version}"),
            "metrics.k8s.io" => format!("metrics.pkg.apis.metrics.{version}"),
            "meta.k8s.io" => META.to_string(),
            g => format!("api.{}.{version}", g.split('.').next().unwrap_or(g)),
        };
        self.by_name
            .get(&(pkg, kind.clone()))
            .or_else(|| self.by_name.get(&(META.to_string(), kind)))
            .map(String::as_str)
    }

    fn decode_message(&self, name: &str, buf: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
        let mut out = Map::new();
        let Some(message) = self.messages.get(name) else {
            return Ok(out);
        };
        for (tag, w) in scan(buf, name)? {
            let Some(field) = message.fields.get(&tag) else {
                continue; // a field newer than our table: skipped, as protobuf does
            };
            match &field.card {
                Card::Optional => {
                    if field.inline {
                        let Wire::Bytes(b) = w else {
                            return Err(field_type(field, name, w));
                        };
                        if let Ty::Message(m) = &field.ty {
                            out.extend(self.decode_message(m, b)?);
                        }
                        continue;
                    }
                    match self.value(&field.ty, w, field, name)? {
                        Some(v) if keep(field, &v) => {
                            out.insert(field.json.clone(), v);
                        }
                        _ => {
                            out.remove(&field.json);
                        }
                    }
                }
                Card::Repeated => {
                    let list = out
                        .entry(field.json.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    let Value::Array(list) = list else { continue };
                    match (w, &field.ty) {
                        // packed repeated numbers
                        (Wire::Bytes(b), Ty::Int32 | Ty::Int64 | Ty::Bool) => {
                            let mut pos = 0;
                            while pos < b.len() {
                                let v = varint(b, &mut pos).ok_or_else(|| {
                                    ProtobufError::Truncated {
                                        message: name.to_string(),
                                    }
                                })?;
                                if let Some(v) =
                                    self.value(&field.ty, Wire::Varint(v), field, name)?
                                {
                                    list.push(v);
                                }
                            }
                        }
                        _ => {
                            // An element is kept even when zero: a list keeps its length.
                            let v = self.value(&field.ty, w, field, name)?;
                            list.push(v.unwrap_or(Value::Null));
                        }
                    }
                }
                Card::Map(value_ty) => {
                    let Wire::Bytes(entry) = w else {
                        return Err(field_type(field, name, w));
                    };
                    let (mut k, mut v) = (String::new(), None);
                    for (t, ew) in scan(entry, name)? {
                        match t {
                            1 => {
                                if let Some(Value::String(s)) =
                                    self.value(&field.ty, ew, field, name)?
                                {
                                    k = s;
                                }
                            }
                            2 => v = self.value(value_ty, ew, field, name)?,
                            _ => {}
                        }
                    }
                    let v = v.unwrap_or_else(|| zero(value_ty));
                    if let Value::Object(map) = out
                        .entry(field.json.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                    {
                        map.insert(k, v);
                    }
                }
            }
        }
        // Fields k8s-openapi requires get their zero value when the wire had none, as Go's
        // JSON encoder writes non-omitempty fields.
        for field in message.fields.values() {
            if field.required && !field.inline && !out.contains_key(&field.json) {
                let z = match field.card {
                    Card::Optional => zero(&field.ty),
                    Card::Repeated => Value::Array(Vec::new()),
                    Card::Map(_) => Value::Object(Map::new()),
                };
                out.insert(field.json.clone(), z);
            }
        }
        Ok(out)
    }

    /// The JSON of one value; None for a special type that stands for "unset" (a zero Time).
    fn value(
        &self,
        ty: &Ty,
        w: Wire<'_>,
        field: &Field,
        message: &str,
    ) -> Result<Option<Value>, ProtobufError> {
        let v = match (ty, w) {
            (Ty::String, Wire::Bytes(b)) => Value::String(utf8(b, &field.json, message)?),
            (Ty::Bytes, Wire::Bytes(b)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
            // int32 is sign-extended to 64 bits on the wire; the truncation is the decoding
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            (Ty::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
            #[allow(clippy::cast_possible_wrap)]
            (Ty::Int64, Wire::Varint(v)) => Value::from(v as i64),
            (Ty::Double, Wire::Fixed64(v)) => Value::from(f64::from_bits(v)),
            (Ty::Message(m), Wire::Bytes(b)) => return self.special(m, b, field, message),
            _ => return Err(field_type(field, message, w)),
        };
        Ok(Some(v))
    }

    /// A message value: Kubernetes' types with their own JSON form, else an object.
    fn special(
        &self,
        m: &str,
        b: &[u8],
        field: &Field,
        message: &str,
    ) -> Result<Option<Value>, ProtobufError> {
        let ints = |b: &[u8]| -> Result<[i64; 4], ProtobufError> {
            let mut v = [0i64; 4];
            for (t, w) in scan(b, m)? {
                if let (1..=3, Wire::Varint(x)) = (t, w) {
                    #[allow(clippy::cast_possible_wrap)]
                    let x = x as i64;
                    v[t as usize] = x;
                }
            }
            Ok(v)
        };
        let bytes_field = |b: &'_ [u8], tag: u32| -> Result<Vec<u8>, ProtobufError> {
            let mut out = Vec::new();
            for (t, w) in scan(b, m)? {
                if let (true, Wire::Bytes(x)) = (t == tag, w) {
                    out = x.to_vec();
                }
            }
            Ok(out)
        };
        let json = |raw: &[u8]| -> Result<Option<Value>, ProtobufError> {
            if raw.is_empty() {
                return Ok(None);
            }
            if raw.starts_with(MAGIC) {
                return decode(raw).map(Some);
            }
            serde_json::from_slice(raw)
                .map(Some)
                .map_err(|source| ProtobufError::Json {
                    field: field.json.clone(),
                    message: message.to_string(),
                    source,
                })
        };
        let v = match m.strip_prefix("apimachinery.pkg.") {
            Some("apis.meta.v1.Time" | "apis.meta.v1.MicroTime") => {
                let [_, secs, nanos, _] = ints(b)?;
                if secs == 0 && nanos == 0 {
                    return Ok(None);
                }
                let bad = || ProtobufError::Time {
                    field: field.json.clone(),
                    message: message.to_string(),
                };
                let nanos = u32::try_from(nanos).map_err(|_| bad())?;
                let t = chrono::DateTime::from_timestamp(secs, nanos).ok_or_else(bad)?;
                let fmt = if m.ends_with("MicroTime") {
                    "%Y-%m-%dT%H:%M:%S%.6fZ"
                } else {
                    "%Y-%m-%dT%H:%M:%SZ"
                };
                Value::String(t.format(fmt).to_string())
            }
            Some("apis.meta.v1.Duration") => Value::String(go_duration(ints(b)?[1])),
            Some("api.resource.Quantity") => {
                Value::String(utf8(&bytes_field(b, 1)?, &field.json, message)?)
            }
            Some("util.intstr.IntOrString") => {
                let [_, kind, int_val, _] = ints(b)?;
                if kind == 0 {
                    Value::from(int_val)
                } else {
                    Value::String(utf8(&bytes_field(b, 3)?, &field.json, message)?)
                }
            }
            Some("runtime.RawExtension" | "apis.meta.v1.FieldsV1") => {
                return json(&bytes_field(b, 1)?);
            }
            _ if m.ends_with(".ExtraValue") || m == "apimachinery.pkg.apis.meta.v1.Verbs" => {
                let mut items = Vec::new();
                for (t, w) in scan(b, m)? {
                    if let (1, Wire::Bytes(x)) = (t, w) {
                        items.push(Value::String(utf8(x, &field.json, message)?));
                    }
                }
                Value::Array(items)
            }
            _ => Value::Object(self.decode_message(m, b)?),
        };
        Ok(Some(v))
    }
}

fn field_type(field: &Field, message: &str, w: Wire<'_>) -> ProtobufError {
    ProtobufError::FieldType {
        field: field.json.clone(),
        message: message.to_string(),
        wire_type: w.wire_type(),
    }
}

/// Whether an optional field's value goes into the JSON (see the module docs).
fn keep(field: &Field, v: &Value) -> bool {
    let is_zero = match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    !is_zero || field.required || (!v.is_string() && KEEP_ZERO.contains(&field.json.as_str()))
}

fn zero(ty: &Ty) -> Value {
    match ty {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 | Ty::Double => Value::from(0),
        Ty::Message(_) => Value::Object(Map::new()),
    }
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let (h, rem) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
    let (m, s) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = format!("{}s", frac(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, m) => format!("{sign}{m}m{secs}"),
        (h, m) => format!("{sign}{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (ns, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn schema_parses_and_finds_kinds() {
        let s = schema().unwrap();
        for (av, kind, want) in [
            ("v1", "Pod", "api.core.v1.Pod"),
            ("apps/v1", "Deployment", "api.apps.v1.Deployment"),
            ("batch/v1", "Job", "api.batch.v1.Job"),
            ("autoscaling/v1", "Scale", "api.autoscaling.v1.Scale"),
            (
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                "api.autoscaling.v2.HorizontalPodAutoscaler",
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                "api.coordination.v1.Lease",
            ),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                "api.discovery.v1.EndpointSlice",
            ),
            ("policy/v1", "Eviction", "api.policy.v1.Eviction"),
            (
                "apps/v1",
                "DeleteOptions",
                "apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
            (
                "meta.k8s.io/v1",
                "DeleteOptions",
                "apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
        ] {
            assert_eq!(s.message_for(av, kind), Some(want), "{av} {kind}");
        }
        assert_eq!(s.message_for("v1", "NoSuchKind"), None);
    }

    #[test]
    fn malformed_input() {
        for (body, want) in [
            (&b"{}"[..], "prefix"),
            (&b"k8s\0\x0a\x05"[..], "truncated"),
            (&b"k8s\0\x0a\x00"[..], "no apiVersion"),
            (
                &b"k8s\0\x0a\x08\x0a\x02v1\x12\x02Xy"[..],
                "no protobuf message is known",
            ),
            (&b"k8s\0\x0b"[..], "wire type 3"),
        ] {
            let err = decode(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
    }
}

//! `skiff ctl`: the seed workflow for machines without kubectl — apply, get, describe,
//! delete, scale, rollout status/undo/history, logs, exec — against any Kubernetes API
//! (skiff's master or another), with kubectl's messages and output shapes.

mod manifest;
mod print;
mod resources;
mod rollout;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use print::Format;
use resources::Served;

/// Where the admin kubeconfig is on a machine `skiff install` or `skiff up` set up.
const SKIFF_KUBECONFIGS: &[&str] = &[
    "/etc/skiff/admin.kubeconfig",
    "/var/lib/skiff/master/admin.kubeconfig",
];

/// `skiff ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then skiff's admin kubeconfig).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Namespace (default: the kubeconfig context's, or `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create or update objects from YAML/JSON files (server-side apply).
    Apply(ApplyArgs),
    /// List objects or show some: `get pods`, `get deploy/web`, `get svc web -o yaml`.
    Get(GetArgs),
    /// An object in full with its events.
    Describe(TargetArgs),
    /// Delete objects by name, from files, or by label.
    Delete(DeleteArgs),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(ScaleArgs),
    /// Watch, undo or list the rollouts of a Deployment (status also for DaemonSets).
    #[command(subcommand)]
    Rollout(RolloutVerb),
    /// Print a container's log.
    Logs(LogsArgs),
    /// Run a command in a container.
    Exec(ExecArgs),
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// File, directory of .yaml/.yml/.json files, or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// TYPE[,TYPE…] [NAME…] or TYPE/NAME…
    #[arg(required = true)]
    targets: Vec<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Format>,
    /// Label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Args, Debug)]
struct TargetArgs {
    /// TYPE NAME or TYPE/NAME
    #[arg(required = true)]
    targets: Vec<String>,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// TYPE NAME… or TYPE/NAME…
    targets: Vec<String>,
    /// Delete what these files describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Delete the objects of TYPE with these labels.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    wait: bool,
    /// Ignore objects that are not there.
    #[arg(long)]
    ignore_not_found: bool,
}

#[derive(Args, Debug)]
struct ScaleArgs {
    /// TYPE/NAME or TYPE NAME
    #[arg(required = true)]
    targets: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    replicas: i32,
}

#[derive(Subcommand, Debug)]
enum RolloutVerb {
    /// Wait until the rollout is complete.
    Status(RolloutStatusArgs),
    /// Go back to the previous revision or `--to-revision`.
    Undo(RolloutUndoArgs),
    /// The revisions of a Deployment.
    History(TargetArgs),
}

#[derive(Args, Debug)]
struct RolloutStatusArgs {
    /// deploy/NAME or ds/NAME
    #[arg(required = true)]
    targets: Vec<String>,
    /// Give up after this long (`90s`, `5m`; 0 = never).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct RolloutUndoArgs {
    /// deploy/NAME
    #[arg(required = true)]
    targets: Vec<String>,
    /// The revision to go back to (0: the previous one).
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
}

#[derive(Args, Debug)]
struct LogsArgs {
    /// POD or TYPE/NAME (a pod of that Deployment, ReplicaSet, Job…)
    target: String,
    /// Container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Stream the log as it grows.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The last N lines only.
    #[arg(long)]
    tail: Option<i64>,
    /// The previous run of the container.
    #[arg(short = 'p', long)]
    previous: bool,
    /// Each line with its timestamp.
    #[arg(long)]
    timestamps: bool,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// POD or TYPE/NAME
    target: String,
    /// Container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::master_cmd::parse_duration(s)
}

/// The kubeconfig to use: the flag, $KUBECONFIG, ~/.kube/config, skiff's admin kubeconfig.
fn kubeconfig_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    let env = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    env.into_iter()
        .chain(home)
        .chain(SKIFF_KUBECONFIGS.iter().map(PathBuf::from))
        .find(|p| p.exists())
        .context("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run `skiff up`/`skiff install` first")
}

/// A connected client with what the server serves.
struct Ctl {
    client: Client,
    namespace: String,
    served: Vec<Served>,
}

impl Ctl {
    async fn connect(args: &CtlArgs) -> Result<Ctl> {
        let path = kubeconfig_path(args.kubeconfig.as_deref())?;
        let kubeconfig = Kubeconfig::read_from(&path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)?;
        let served = resources::discover(&client).await?;
        Ok(Ctl {
            client,
            namespace,
            served,
        })
    }

    fn resolve(&self, name: &str) -> Result<&Served> {
        resources::resolve(&self.served, name)
    }

    fn api(&self, r: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = r.api_resource();
        match (r.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (true, None) => Api::all_with(self.client.clone(), &ar),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        }
    }

    async fn get_json(&self, r: &Served, name: &str, namespace: &str) -> Result<Value> {
        let o = self
            .api(r, Some(namespace))
            .get(name)
            .await
            .map_err(|e| server_error(e, r, name))?;
        Ok(serde_json::to_value(o)?)
    }

    /// (type, name) pairs of the command line, resolved.
    fn targets(&self, args: &[String]) -> Result<Vec<(&Served, String)>> {
        let (types, pairs) = resources::split_targets(args)?;
        if !types.is_empty() {
            bail!("a resource name is needed: TYPE NAME or TYPE/NAME");
        }
        pairs
            .into_iter()
            .map(|(t, n)| Ok((self.resolve(&t)?, n)))
            .collect()
    }
}

/// kubectl's wording for an API error about `name` of `r`.
fn server_error(e: kube::Error, r: &Served, name: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            anyhow::anyhow!(
                "Error from server (NotFound): {} {name:?} not found",
                r.qualified_plural()
            )
        }
        kube::Error::Api(s) => anyhow::anyhow!("Error from server ({}): {}", s.reason, s.message),
        other => anyhow::Error::new(other),
    }
}

/// Runs `skiff ctl`; the exit code (a command's own with `exec`). Errors are printed as
/// kubectl prints them (`Error from server (NotFound): …`, `error: …`) with exit code 1.
pub fn main(args: CtlArgs) -> Result<i32> {
    match run(args) {
        Ok(code) => Ok(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.starts_with("Error from server") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            Ok(1)
        }
    }
}

fn run(args: CtlArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctl = Ctl::connect(&args).await?;
        match &args.verb {
            Verb::Apply(a) => apply(&ctl, a).await.map(|()| 0),
            Verb::Get(a) => get(&ctl, a).await.map(|()| 0),
            Verb::Describe(a) => describe(&ctl, a).await.map(|()| 0),
            Verb::Delete(a) => delete(&ctl, a).await.map(|()| 0),
            Verb::Scale(a) => scale(&ctl, a).await.map(|()| 0),
            Verb::Rollout(RolloutVerb::Status(a)) => rollout_status(&ctl, a).await.map(|()| 0),
            Verb::Rollout(RolloutVerb::Undo(a)) => rollout_undo(&ctl, a).await.map(|()| 0),
            Verb::Rollout(RolloutVerb::History(a)) => rollout_history(&ctl, a).await.map(|()| 0),
            Verb::Logs(a) => logs(&ctl, a).await.map(|()| 0),
            Verb::Exec(a) => exec(&ctl, a).await,
        }
    })
}

async fn apply(ctl: &Ctl, a: &ApplyArgs) -> Result<()> {
    let docs = manifest::load(&a.files)?;
    // every document is checked before anything is sent: a bad one changes nothing
    let mut planned = Vec::new();
    for doc in docs {
        let r = resources::by_kind(&ctl.served, &doc.api_version, &doc.kind)
            .with_context(|| format!("in {}", doc.source))?;
        planned.push((r, doc));
    }
    for (r, doc) in planned {
        let ns = doc
            .namespace
            .clone()
            .unwrap_or_else(|| ctl.namespace.clone());
        let api = ctl.api(r, Some(&ns));
        let before = api
            .get_opt(&doc.name)
            .await
            .map_err(|e| server_error(e, r, &doc.name))?;
        let pp = PatchParams::apply("skiff-ctl").force();
        let after = api
            .patch(&doc.name, &pp, &Patch::Apply(&doc.body))
            .await
            .map_err(|e| server_error(e, r, &doc.name))
            .with_context(|| format!("applying {}", doc.source))?;
        let verb = match before {
            None => "created",
            Some(b) if same_config(&serde_json::to_value(&b)?, &serde_json::to_value(&after)?) => {
                "unchanged"
            }
            Some(_) => "configured",
        };
        outln!("{}/{} {verb}", r.qualified_singular(), doc.name);
    }
    Ok(())
}

/// Whether two versions of an object differ only where controllers write (status) or the
/// server keeps its books (resourceVersion, managedFields).
fn same_config(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
        }
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

async fn get(ctl: &Ctl, a: &GetArgs) -> Result<()> {
    let (types, pairs) = resources::split_targets(&a.targets)?;
    let ns = (!a.all_namespaces).then_some(ctl.namespace.as_str());
    let mut out = String::new();
    if !pairs.is_empty() {
        let mut objects = Vec::new();
        let mut tables: Vec<(&Served, Vec<Value>)> = Vec::new();
        for (t, n) in &pairs {
            let r = ctl.resolve(t)?;
            let o = ctl.get_json(r, n, &ctl.namespace).await?;
            match tables.iter_mut().find(|(s, _)| *s == r) {
                Some((_, names)) => names.push(o.clone()),
                None => tables.push((r, vec![o.clone()])),
            }
            objects.push(o);
        }
        match a.output {
            Some(f @ (Format::Yaml | Format::Json)) => {
                out = print::objects(objects, f, pairs.len() == 1)?
            }
            Some(Format::Name) => {
                for (r, objs) in &tables {
                    for o in objs {
                        out.push_str(&format!(
                            "{}/{}\n",
                            r.qualified_singular(),
                            o["metadata"]["name"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
            _ => {
                for (r, objs) in &tables {
                    let names: Vec<&str> = objs
                        .iter()
                        .filter_map(|o| o["metadata"]["name"].as_str())
                        .collect();
                    let table = table_of(ctl, r, Some(&ctl.namespace), None).await?;
                    let mut table = table;
                    if let Some(rows) = table["rows"].as_array_mut() {
                        rows.retain(|row| {
                            names
                                .contains(&row["object"]["metadata"]["name"].as_str().unwrap_or(""))
                        });
                    }
                    let (h, rows) =
                        print::table_rows(&table, a.output == Some(Format::Wide), false);
                    out.push_str(&print::columns(&h, &rows));
                }
            }
        }
        out!("{out}");
        return Ok(());
    }
    let mut objects = Vec::new();
    let mut any = false;
    for t in &types {
        let r = ctl.resolve(t)?;
        match a.output {
            Some(Format::Yaml | Format::Json | Format::Name) => {
                let mut lp = ListParams::default();
                if let Some(s) = &a.selector {
                    lp = lp.labels(s);
                }
                let list = ctl
                    .api(r, ns)
                    .list(&lp)
                    .await
                    .map_err(|e| server_error(e, r, ""))?;
                for o in list.items {
                    if a.output == Some(Format::Name) {
                        out.push_str(&format!(
                            "{}/{}\n",
                            r.qualified_singular(),
                            o.metadata.name.clone().unwrap_or_default()
                        ));
                    }
                    objects.push(serde_json::to_value(o)?);
                }
            }
            _ => {
                let table = table_of(ctl, r, ns, a.selector.as_deref()).await?;
                let (h, rows) = print::table_rows(
                    &table,
                    a.output == Some(Format::Wide),
                    a.all_namespaces && r.namespaced,
                );
                if rows.is_empty() {
                    continue;
                }
                any = true;
                if types.len() > 1 {
                    // kubectl prefixes names with the type when several types are listed
                    let mut rows = rows;
                    for row in &mut rows {
                        let i = usize::from(a.all_namespaces && r.namespaced);
                        row[i] = format!("{}/{}", r.qualified_singular(), row[i]);
                    }
                    out.push_str(&print::columns(&h, &rows));
                    out.push('\n');
                } else {
                    out.push_str(&print::columns(&h, &rows));
                }
            }
        }
    }
    match a.output {
        Some(f @ (Format::Yaml | Format::Json)) => out = print::objects(objects, f, false)?,
        Some(Format::Name) => {}
        _ if !any => match ns {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        },
        _ => {}
    }
    out!(
        "{}",
        out.trim_end_matches("\n\n").to_string() + if out.ends_with("\n\n") { "\n" } else { "" }
    );
    Ok(())
}

/// The server's Table of `r` (kubectl's columns, computed by the server).
async fn table_of(
    ctl: &Ctl,
    r: &Served,
    ns: Option<&str>,
    selector: Option<&str>,
) -> Result<Value> {
    let mut path = r.collection_path(ns);
    if let Some(s) = selector {
        path.push_str("?labelSelector=");
        path.push_str(&urlencode(s));
    }
    let req = http::Request::get(&path)
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())?;
    let v: Value = ctl
        .client
        .request(req)
        .await
        .map_err(|e| server_error(e, r, ""))?;
    if v["kind"] != "Table" {
        bail!(
            "the server did not answer with a Table for {}",
            r.qualified_plural()
        );
    }
    Ok(v)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn describe(ctl: &Ctl, a: &TargetArgs) -> Result<()> {
    for (r, name) in ctl.targets(&a.targets)? {
        let o = ctl.get_json(r, &name, &ctl.namespace).await?;
        out!("{}", print::objects(vec![o.clone()], Format::Yaml, true)?);
        let uid = o["metadata"]["uid"].as_str().unwrap_or("");
        let ev = ctl.resolve("events")?;
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&ctl.namespace)
            .to_string();
        let list = ctl
            .api(ev, Some(&ns))
            .list(&ListParams::default())
            .await
            .map_err(|e| server_error(e, ev, ""))?;
        let mut rows: Vec<(String, Vec<String>)> = list
            .items
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .filter(|e| e["involvedObject"]["uid"] == uid)
            .map(|e| {
                let last = e["lastTimestamp"]
                    .as_str()
                    .or(e["eventTime"].as_str())
                    .unwrap_or("")
                    .to_string();
                let cells = vec![
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                    last.clone(),
                    e["source"]["component"]
                        .as_str()
                        .or(e["reportingComponent"].as_str())
                        .unwrap_or("")
                        .to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                ];
                (last, cells)
            })
            .collect();
        rows.sort();
        if rows.is_empty() {
            outln!("Events: <none>");
        } else {
            outln!("Events:");
            let h: Vec<String> = ["Type", "Reason", "Last seen", "From", "Message"]
                .map(String::from)
                .to_vec();
            let body: Vec<Vec<String>> = rows.into_iter().map(|(_, c)| c).collect();
            for line in print::columns(&h, &body).lines() {
                outln!("  {line}");
            }
        }
        outln!();
    }
    Ok(())
}

async fn delete(ctl: &Ctl, a: &DeleteArgs) -> Result<()> {
    let mut targets: Vec<(&Served, String, String)> = Vec::new();
    if !a.files.is_empty() {
        for doc in manifest::load(&a.files)? {
            let r = resources::by_kind(&ctl.served, &doc.api_version, &doc.kind)?;
            let ns = doc.namespace.unwrap_or_else(|| ctl.namespace.clone());
            targets.push((r, doc.name, ns));
        }
    } else if let Some(sel) = &a.selector {
        let Some(t) = a.targets.first() else {
            bail!("a resource type is needed with --selector");
        };
        for t in t.split(',') {
            let r = ctl.resolve(t)?;
            let list = ctl
                .api(r, Some(&ctl.namespace))
                .list(&ListParams::default().labels(sel))
                .await
                .map_err(|e| server_error(e, r, ""))?;
            for o in list.items {
                targets.push((
                    r,
                    o.metadata.name.unwrap_or_default(),
                    ctl.namespace.clone(),
                ));
            }
        }
    } else {
        if a.targets.is_empty() {
            bail!("you must provide one or more resources by argument or filename");
        }
        for (r, n) in ctl.targets(&a.targets)? {
            targets.push((r, n, ctl.namespace.clone()));
        }
    }
    let dp = DeleteParams::background();
    let mut gone = Vec::new();
    for (r, name, ns) in &targets {
        match ctl.api(r, Some(ns)).delete(name, &dp).await {
            Ok(_) => {
                outln!("{} {name:?} deleted", r.qualified_singular());
                gone.push((*r, name.clone(), ns.clone()));
            }
            Err(kube::Error::Api(s)) if s.code == 404 && a.ignore_not_found => {}
            Err(e) => return Err(server_error(e, r, name)),
        }
    }
    if a.wait {
        for (r, name, ns) in gone {
            let api = ctl.api(r, Some(&ns));
            let deadline = Instant::now() + Duration::from_secs(300);
            while api.get_opt(&name).await?.is_some() {
                if Instant::now() > deadline {
                    bail!(
                        "timed out waiting for {} {name:?} to be deleted",
                        r.qualified_singular()
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Ok(())
}

async fn scale(ctl: &Ctl, a: &ScaleArgs) -> Result<()> {
    if a.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    for (r, name) in ctl.targets(&a.targets)? {
        let api = ctl.api(r, Some(&ctl.namespace));
        api.patch_scale(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": a.replicas}})),
        )
        .await
        .map_err(|e| server_error(e, r, &name))?;
        outln!("{}/{name} scaled", r.qualified_singular());
    }
    Ok(())
}

async fn rollout_status(ctl: &Ctl, a: &RolloutStatusArgs) -> Result<()> {
    for (r, name) in ctl.targets(&a.targets)? {
        let view: fn(&Value) -> Result<(String, bool)> = match r.kind.as_str() {
            "Deployment" => rollout::deployment_status,
            "DaemonSet" => rollout::daemonset_status,
            other => bail!("no status viewer has been implemented for {other}"),
        };
        let deadline = (!a.timeout.is_zero()).then(|| Instant::now() + a.timeout);
        let mut last = String::new();
        loop {
            let o = ctl.get_json(r, &name, &ctl.namespace).await?;
            let (msg, done) = view(&o)?;
            if msg != last {
                outln!("{msg}");
                last = msg;
            }
            if done {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                bail!("timed out waiting for the condition");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// The ReplicaSets in the Deployment's namespace, as JSON.
async fn replicasets(ctl: &Ctl, ns: &str) -> Result<Vec<Value>> {
    let rs = ctl.resolve("replicasets.apps")?;
    let list = ctl
        .api(rs, Some(ns))
        .list(&ListParams::default())
        .await
        .map_err(|e| server_error(e, rs, ""))?;
    list.items
        .into_iter()
        .map(|o| Ok(serde_json::to_value(o)?))
        .collect()
}

fn deployment_only(r: &Served) -> Result<()> {
    if r.kind != "Deployment" {
        bail!("no rollback or history has been implemented for {}", r.kind);
    }
    Ok(())
}

async fn rollout_undo(ctl: &Ctl, a: &RolloutUndoArgs) -> Result<()> {
    for (r, name) in ctl.targets(&a.targets)? {
        deployment_only(r)?;
        let d = ctl.get_json(r, &name, &ctl.namespace).await?;
        let all = replicasets(ctl, &ctl.namespace).await?;
        match rollout::rollback(&d, &all, a.to_revision)? {
            (rev, None) => outln!(
                "{}/{name} skipped rollback (current template already matches revision {rev})",
                r.qualified_singular()
            ),
            (_, Some(patch)) => {
                let path = format!("{}/{name}", r.collection_path(Some(&ctl.namespace)));
                let req = http::Request::patch(path)
                    .header("Content-Type", "application/json-patch+json")
                    .body(serde_json::to_vec(&patch)?)?;
                ctl.client
                    .request::<Value>(req)
                    .await
                    .map_err(|e| server_error(e, r, &name))?;
                outln!("{}/{name} rolled back", r.qualified_singular());
            }
        }
    }
    Ok(())
}

async fn rollout_history(ctl: &Ctl, a: &TargetArgs) -> Result<()> {
    for (r, name) in ctl.targets(&a.targets)? {
        deployment_only(r)?;
        let d = ctl.get_json(r, &name, &ctl.namespace).await?;
        let all = replicasets(ctl, &ctl.namespace).await?;
        outln!("{}/{name} ", r.qualified_singular());
        let rows: Vec<Vec<String>> = rollout::history(&d, &all)
            .into_iter()
            .map(|(rev, rs)| {
                let cause = rs
                    .pointer("/metadata/annotations/kubernetes.io~1change-cause")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>");
                vec![rev.to_string(), cause.to_string()]
            })
            .collect();
        out!(
            "{}",
            print::columns(&["REVISION".into(), "CHANGE-CAUSE".into()], &rows)
        );
        outln!();
    }
    Ok(())
}

/// The pod a `logs`/`exec` target means: `POD`, `pod/NAME`, or a pod selected by a
/// workload's `spec.selector` (the first by name, as kubectl picks one).
async fn pod_for(ctl: &Ctl, target: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(ctl.client.clone(), &ctl.namespace);
    let pod_res = ctl.resolve("pods")?;
    let (kind, name) = match target.split_once('/') {
        Some((t, n)) => (ctl.resolve(t)?, n),
        None => (pod_res, target),
    };
    if kind.kind == "Pod" {
        return pods
            .get(name)
            .await
            .map_err(|e| server_error(e, pod_res, name));
    }
    let o = ctl.get_json(kind, name, &ctl.namespace).await?;
    let labels = o
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .or_else(|| o.pointer("/spec/selector").and_then(Value::as_object))
        .with_context(|| {
            format!(
                "cannot attach to {}/{name}: selector not supported",
                kind.qualified_singular()
            )
        })?;
    let selector = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut list = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list.into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .with_context(|| format!("no pods found for {}/{name}", kind.qualified_singular()))
}

fn container_of(pod: &Pod, asked: Option<&String>) -> Result<String> {
    if let Some(c) = asked {
        return Ok(c.clone());
    }
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    spec.containers
        .first()
        .map(|c| c.name.clone())
        .context("pod has no containers")
}

async fn logs(ctl: &Ctl, a: &LogsArgs) -> Result<()> {
    let pod = pod_for(ctl, &a.target).await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let lp = LogParams {
        container: Some(container_of(&pod, a.container.as_ref())?),
        follow: a.follow,
        tail_lines: a.tail.filter(|n| *n >= 0),
        previous: a.previous,
        timestamps: a.timestamps,
        ..LogParams::default()
    };
    let pods: Api<Pod> = Api::namespaced(ctl.client.clone(), &ctl.namespace);
    let pod_res = ctl.resolve("pods")?;
    let mut lines = pods
        .log_stream(&name, &lp)
        .await
        .map_err(|e| server_error(e, pod_res, &name))?
        .lines();
    // standard output is line-buffered: each line is out as it comes, also with --follow
    while let Some(line) = lines.try_next().await? {
        outln!("{line}");
    }
    Ok(())
}

async fn exec(ctl: &Ctl, a: &ExecArgs) -> Result<i32> {
    let pod = pod_for(ctl, &a.target).await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = AttachParams::default()
        .container(container_of(&pod, a.container.as_ref())?)
        .stdin(a.stdin)
        .stdout(true)
        .stderr(!a.tty)
        .tty(a.tty);
    let pods: Api<Pod> = Api::namespaced(ctl.client.clone(), &ctl.namespace);
    let mut proc = pods
        .exec(&name, a.command.clone(), &params)
        .await
        .with_context(|| format!("exec in pod {name}"))?;
    let stdin_task = proc.stdin().map(|mut w| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
            // kube-client's stdin is a simplex pipe: only a shutdown (not a drop) is its end
            // of file, which it then sends as v5's close of stdin
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
        })
    });
    let out = proc.stdout().map(|mut r| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stdout()).await;
        })
    });
    let err = proc.stderr().map(|mut r| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stderr()).await;
        })
    });
    let status = proc.take_status();
    for t in [out, err].into_iter().flatten() {
        let _ = t.await;
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    Ok(exit_code(status.as_ref()))
}

/// The command's exit code from the final Status of an exec (kubectl's rule).
fn exit_code(s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(s) = s else { return 0 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn exec_exit_codes_as_kubectl_reads_them() {
        assert_eq!(exit_code(None), 0);
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&ok)), 0);
        let failed = |cause: Option<&str>| Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: cause.map(|_| "ExitCode".to_string()),
                    message: cause.map(str::to_string),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&failed(Some("7")))), 7);
        assert_eq!(exit_code(Some(&failed(None))), 1);
    }

    #[test]
    fn explicit_kubeconfig_wins() {
        assert_eq!(
            kubeconfig_path(Some(Path::new("/x/y"))).unwrap(),
            PathBuf::from("/x/y")
        );
    }
}

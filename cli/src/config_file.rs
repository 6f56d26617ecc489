//! `/etc/skiff/config.yaml`: defaults for the flags of `skiff master` and `skiff agent`.
//!
//! The file has one section per command (`master:`, `agent:`) whose keys are that command's
//! long flags without the dashes (`data-dir: /var/lib/skiff/master`). Each value becomes the
//! flag's default before clap parses, so a flag given on the command line (or its environment
//! variable) wins over the file, and the file wins over the built-in default. This works for
//! every flag of those commands without a list to keep in step: the keys are checked against
//! clap's own definition, and an unknown one is an error naming the key and the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/skiff/config.yaml";

/// The commands that take their defaults from the file, one section each.
pub const SECTIONS: &[&str] = &["master", "agent"];

/// Flags that are not settings and so cannot be keys.
const NOT_KEYS: &[&str] = &["help", "version", "config", "log-format"];

/// Reading or applying the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown section {section:?} (the sections are {known})")]
    UnknownSection {
        path: PathBuf,
        section: String,
        known: String,
    },
    #[error("config file {path}: unknown key {section}.{key} (it is no flag of `skiff {section}`)")]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
    },
    #[error(
        "config file {path}: {section}.{key} must be a string, number, boolean or list of them"
    )]
    BadValue {
        path: PathBuf,
        section: String,
        key: String,
    },
    #[error("config file {path}: {section}.{key} is a list but `--{key}` takes one value")]
    NotAList {
        path: PathBuf,
        section: String,
        key: String,
    },
}

/// One value in the file: a scalar or a list of scalars (for repeatable flags).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Null(()),
}

impl Value {
    fn scalar(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::List(_) | Value::Map(_) | Value::Null(()) => None,
        }
    }
}

/// The parsed file: section → key → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    path: PathBuf,
    sections: BTreeMap<String, BTreeMap<String, Value>>,
}

impl ConfigFile {
    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        if text.trim().is_empty() {
            return Ok(Self {
                path: path.to_path_buf(),
                sections: BTreeMap::new(),
            });
        }
        let raw: Option<BTreeMap<String, Option<BTreeMap<String, Value>>>> =
            serde_saphyr::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut sections = BTreeMap::new();
        for (section, keys) in raw.unwrap_or_default() {
            if !SECTIONS.contains(&section.as_str()) {
                return Err(ConfigError::UnknownSection {
                    path: path.to_path_buf(),
                    section,
                    known: SECTIONS.join(", "),
                });
            }
            sections.insert(section, keys.unwrap_or_default());
        }
        Ok(Self {
            path: path.to_path_buf(),
            sections,
        })
    }

    /// Reads the file. A missing file is no error when it is the default path (a machine
    /// without a config file), and an error when the user named it.
    pub fn load(path: &Path, explicit: bool) -> Result<Option<Self>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The value of `section.key` as a flag value, when the file sets it to a scalar.
    pub fn value(&self, section: &str, key: &str) -> Option<String> {
        self.sections.get(section)?.get(key)?.scalar()
    }

    /// Makes each key the default of its flag in `cmd`'s subcommand of the section's name.
    pub fn apply(&self, mut cmd: clap::Command) -> Result<clap::Command, ConfigError> {
        for (section, keys) in &self.sections {
            let Some(sub) = cmd.find_subcommand(section) else {
                return Err(ConfigError::UnknownSection {
                    path: self.path.clone(),
                    section: section.clone(),
                    known: SECTIONS.join(", "),
                });
            };
            let mut defaults = Vec::new();
            for (key, value) in keys {
                let err = |make: fn(PathBuf, String, String) -> ConfigError| {
                    make(self.path.clone(), section.clone(), key.clone())
                };
                let arg = sub
                    .get_arguments()
                    .find(|a| {
                        let alias = a
                            .get_all_aliases()
                            .is_some_and(|names| names.contains(&key.as_str()));
                        (a.get_long() == Some(key.as_str()) || alias) && !a.is_hide_set()
                    })
                    .filter(|_| !NOT_KEYS.contains(&key.as_str()))
                    .ok_or_else(|| {
                        err(|path, section, key| ConfigError::UnknownKey { path, section, key })
                    })?;
                let values = match value {
                    Value::List(items) => {
                        let multiple = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
                            || matches!(arg.get_action(), clap::ArgAction::Append)
                            || arg.get_value_delimiter().is_some();
                        if !multiple {
                            return Err(err(|path, section, key| ConfigError::NotAList {
                                path,
                                section,
                                key,
                            }));
                        }
                        items.iter().map(Value::scalar).collect::<Option<Vec<_>>>()
                    }
                    v => v.scalar().map(|s| vec![s]),
                }
                .ok_or_else(|| {
                    err(|path, section, key| ConfigError::BadValue { path, section, key })
                })?;
                defaults.push((arg.get_id().clone(), values));
            }
            cmd = cmd.mut_subcommand(section, |mut sub| {
                for (id, values) in defaults {
                    sub = sub.mut_arg(id, |a| a.default_values(values).required(false));
                }
                sub
            });
        }
        Ok(cmd)
    }
}

/// The `--config` path in raw arguments (before clap parses them), and whether it was given.
pub fn config_path(args: &[OsString]) -> (PathBuf, bool) {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            if let Some(v) = it.next() {
                return (PathBuf::from(v), true);
            }
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return (PathBuf::from(v), true);
        }
    }
    (PathBuf::from(DEFAULT_PATH), false)
}

/// Builds `cmd` with the defaults of the config file `args` name (or the default one).
pub fn command_with_config(
    cmd: clap::Command,
    args: &[OsString],
) -> Result<clap::Command, ConfigError> {
    let (path, explicit) = config_path(args);
    match ConfigFile::load(&path, explicit)? {
        Some(file) => file.apply(cmd),
        None => Ok(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{ArgAction, Args, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Cmd,
    }
    #[derive(Subcommand, Debug)]
    enum Cmd {
        Master(M),
        Agent(A),
    }
    #[derive(Args, Debug, PartialEq)]
    struct M {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0:6443")]
        listen: String,
        #[arg(long, default_value_t = 40)]
        grace: u64,
        #[arg(long)]
        no_controllers: bool,
        #[arg(long, action = ArgAction::Set)]
        leader_elect: Option<bool>,
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        #[arg(
            long = "service-cluster-ip-range",
            visible_alias = "service-cidr",
            default_value = "10.96.0.0/12"
        )]
        service_range: String,
    }
    #[derive(Args, Debug, PartialEq)]
    struct A {
        #[arg(long)]
        server: String,
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
        #[arg(long, default_value_t = 0.5)]
        rate: f64,
    }

    fn parse(yaml: &str, argv: &[&str]) -> Result<Cmd, String> {
        let file = ConfigFile::parse(Path::new("/etc/skiff/config.yaml"), yaml)
            .map_err(|e| e.to_string())?;
        let cmd = file
            .apply(<Cli as clap::CommandFactory>::command())
            .map_err(|e| e.to_string())?;
        let m = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&m)
            .map(|c| c.command)
            .map_err(|e| e.to_string())
    }

    fn master(c: Cmd) -> M {
        match c {
            Cmd::Master(m) => m,
            Cmd::Agent(a) => panic!("not master: {a:?}"),
        }
    }

    #[test]
    fn precedence_flag_over_file_over_builtin() {
        let yaml = "master:\n  data-dir: /srv/m\n  listen: 127.0.0.1:7443\n  grace: 10\n";
        // file over built-in default; a required flag is satisfied by the file
        let m = master(parse(yaml, &["skiff", "master"]).unwrap());
        assert_eq!(m.data_dir, PathBuf::from("/srv/m"));
        assert_eq!(m.listen, "127.0.0.1:7443");
        assert_eq!(m.grace, 10);
        // flag over file
        let m = master(
            parse(
                yaml,
                &["skiff", "master", "--listen", "0.0.0.0:1", "--data-dir=/x"],
            )
            .unwrap(),
        );
        assert_eq!(m.listen, "0.0.0.0:1");
        assert_eq!(m.data_dir, PathBuf::from("/x"));
        assert_eq!(m.grace, 10);
        // without the file: built-in defaults, and the required flag is required again
        let m = master(parse("", &["skiff", "master", "--data-dir", "/d"]).unwrap());
        assert_eq!(m.listen, "0.0.0.0:6443");
        assert_eq!(m.grace, 40);
        assert!(parse("", &["skiff", "master"]).is_err());
    }

    #[test]
    fn a_flag_alias_is_a_key_too() {
        for key in ["service-cluster-ip-range", "service-cidr"] {
            let yaml = format!("master:\n  data-dir: /d\n  {key}: 10.0.0.0/16,fd00::/108\n");
            let m = master(parse(&yaml, &["skiff", "master"]).unwrap());
            assert_eq!(m.service_range, "10.0.0.0/16,fd00::/108", "{key}");
        }
        let m = master(parse("", &["skiff", "master", "--data-dir=/d"]).unwrap());
        assert_eq!(m.service_range, "10.96.0.0/12");
    }

    #[test]
    fn value_kinds() {
        let yaml = "master:\n  data-dir: /d\n  no-controllers: true\n  leader-elect: false\n  \
                    etcd-endpoints: [http://a:2379, http://b:2379]\n\
                    agent:\n  server: https://m:6443\n  insecure-registry:\n    - r1:5000\n    - r2\n  rate: 0.25\n";
        let m = master(parse(yaml, &["skiff", "master"]).unwrap());
        assert!(m.no_controllers);
        assert_eq!(m.leader_elect, Some(false));
        assert_eq!(m.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
        // an explicit list flag replaces the file's whole list
        let m = master(parse(yaml, &["skiff", "master", "--etcd-endpoints", "http://c"]).unwrap());
        assert_eq!(m.etcd_endpoints, ["http://c"]);
        match parse(yaml, &["skiff", "agent"]).unwrap() {
            Cmd::Agent(a) => {
                assert_eq!(a.server, "https://m:6443");
                assert_eq!(a.insecure_registries, ["r1:5000", "r2"]);
                assert_eq!(a.rate, 0.25);
            }
            Cmd::Master(m) => panic!("not agent: {m:?}"),
        }
    }

    #[test]
    fn bad_input_names_key_and_file() {
        let cases: &[(&str, &[&str])] = &[
            (
                "master:\n  data-dirr: /d\n",
                &["master.data-dirr", "/etc/skiff/config.yaml"],
            ),
            ("agent:\n  help: true\n", &["agent.help"]),
            ("agent:\n  config: /x\n", &["agent.config"]),
            ("proxy:\n  x: 1\n", &["unknown section \"proxy\""]),
            ("master:\n  listen: [a, b]\n", &["master.listen is a list"]),
            ("master:\n  listen: {a: b}\n", &["master.listen must be"]),
            ("master:\n  listen:\n", &["master.listen must be"]),
            ("master: [1, 2]\n", &["is not valid"]),
            ("master:\n\tlisten: x\n", &["is not valid"]),
        ];
        for (yaml, wants) in cases {
            let err = parse(yaml, &["skiff", "master", "--data-dir", "/d"]).unwrap_err();
            for want in *wants {
                assert!(err.contains(want), "{yaml:?}: {err:?} lacks {want:?}");
            }
        }
        // a value clap rejects is reported by clap
        let err = parse(
            "master:\n  grace: soon\n",
            &["skiff", "master", "--data-dir", "/d"],
        )
        .unwrap_err();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn empty_file_and_sections() {
        for yaml in ["", "\n", "# nothing\n", "master:\n", "master:\nagent:\n"] {
            let m = master(parse(yaml, &["skiff", "master", "--data-dir", "/d"]).unwrap());
            assert_eq!(m.listen, "0.0.0.0:6443", "{yaml:?}");
        }
    }

    #[test]
    fn config_path_from_raw_args() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let cases: &[(&[&str], &str, bool)] = &[
            (&["skiff", "master"], DEFAULT_PATH, false),
            (&["skiff", "--config", "/a.yaml", "master"], "/a.yaml", true),
            (&["skiff", "master", "--config=/b.yaml"], "/b.yaml", true),
            (
                &["skiff", "run", "--", "x", "--config", "/c"],
                DEFAULT_PATH,
                false,
            ),
        ];
        for (argv, path, explicit) in cases {
            assert_eq!(
                config_path(&os(argv)),
                (PathBuf::from(path), *explicit),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.yaml");
        assert_eq!(ConfigFile::load(&p, false).unwrap(), None);
        let err = ConfigFile::load(&p, true).unwrap_err().to_string();
        assert!(err.contains("none.yaml"), "{err}");
    }
}

//! Container log rotation as the kubelet does it (`containerLogMaxSize`,
//! `containerLogMaxFiles`): before a record would take `<n>.log` past the maximum size it is
//! renamed to
//! `<n>.log.<YYYYMMDD-hhmmss>` (the kubelet's timestamp) and a fresh `<n>.log` is opened;
//! every rotated file but the newest is gzip-compressed to `….gz`, and the oldest rotated files
//! are removed so that at most `max_files` files (the live one included) are left.
//!
//! The shim writes every record through [`RotatingLog`] under one lock for both streams and
//! rotates between two records, so a record is never lost or split across files. Two
//! rotations within one second get `.1`, `.2`, … after the timestamp (the kubelet rotates at
//! most every 10 s and never needs it).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The kubelet's default `containerLogMaxSize`, 10Mi.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// The kubelet's default `containerLogMaxFiles`.
pub const DEFAULT_MAX_FILES: u32 = 5;
/// The timestamp of a rotated file's name (Go's `20060102-150405`).
const STAMP: &str = "%Y%m%d-%H%M%S";
/// The suffix of a compressed rotated file.
const GZ: &str = ".gz";
/// The suffix of a file being compressed.
const TMP: &str = ".tmp";

/// When to rotate and how many files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPolicy {
    /// Rotate once the live file has this many bytes (0: never rotate).
    pub max_size: u64,
    /// Files kept per container run, the live one included (at least 2).
    pub max_files: u32,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// A `--container-log-max-size`/`--container-log-max-files` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a quantity.
    #[error("invalid size {0:?}: want a quantity such as 10Mi or 500Ki")]
    Size(String),
    /// Fewer than two files.
    #[error("container-log-max-files must be at least 2, not {0}")]
    Files(u32),
}

/// Parses a size as a Kubernetes quantity (`10Mi`, `500Ki`, `1G`, `4096`).
pub fn parse_size(s: &str) -> Result<u64, PolicyError> {
    let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.to_string());
    match crate::qos::parse_quantity(&q) {
        Some(v) if v >= 0.0 && v.is_finite() => Ok(v.ceil() as u64),
        _ => Err(PolicyError::Size(s.to_string())),
    }
}

impl LogPolicy {
    /// A policy from the flags' values, checked as the kubelet checks them.
    pub fn new(max_size: u64, max_files: u32) -> Result<LogPolicy, PolicyError> {
        if max_files < 2 {
            return Err(PolicyError::Files(max_files));
        }
        Ok(LogPolicy {
            max_size,
            max_files,
        })
    }
}

/// A rotated file of a log: its timestamp, the sequence within that second, compressed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rotated {
    /// `YYYYMMDD-hhmmss`.
    pub stamp: String,
    /// 0, or the `.N` of a second rotation in the same second.
    pub seq: u32,
    /// Ends in `.gz`.
    pub compressed: bool,
    /// The file name.
    pub name: String,
}

/// Reads a directory entry's name as a rotated file of `base` (`0.log`), if it is one.
/// Files being compressed (`.tmp`) are not.
pub fn parse_rotated(base: &str, name: &str) -> Option<Rotated> {
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    if rest.ends_with(TMP) {
        return None;
    }
    let (rest, compressed) = match rest.strip_suffix(GZ) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (stamp, seq) = match rest.split_once('.') {
        Some((s, n)) => (s, n.parse().ok()?),
        None => (rest, 0),
    };
    chrono::NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
    Some(Rotated {
        stamp: stamp.to_string(),
        seq,
        compressed,
        name: name.to_string(),
    })
}

/// The name for a file rotated at `at`, given the rotated files there are.
pub fn rotated_name(base: &str, at: chrono::DateTime<chrono::Utc>, existing: &[Rotated]) -> String {
    let stamp = at.format(STAMP).to_string();
    let seq = existing
        .iter()
        .filter(|r| r.stamp == stamp)
        .map(|r| r.seq + 1)
        .max()
        .unwrap_or(0);
    match seq {
        0 => format!("{base}.{stamp}"),
        n => format!("{base}.{stamp}.{n}"),
    }
}

/// What to do with the rotated files after a rotation: (compress, remove). The newest stays
/// as it is; the oldest go until `max_files - 1` rotated files are left.
pub fn plan(mut rotated: Vec<Rotated>, max_files: u32) -> (Vec<Rotated>, Vec<Rotated>) {
    rotated.sort();
    let keep = max_files.saturating_sub(1) as usize;
    let excess = rotated.len().saturating_sub(keep);
    let kept = rotated.split_off(excess);
    let newest = kept.len().saturating_sub(1);
    let compress = kept
        .into_iter()
        .enumerate()
        .filter(|(i, r)| *i < newest && !r.compressed)
        .map(|(_, r)| r)
        .collect();
    (compress, rotated)
}

/// Where CRI records go: one call per whole record.
pub trait RecordSink {
    /// Appends one record.
    fn append(&mut self, record: &[u8]) -> std::io::Result<()>;
}

impl RecordSink for Vec<u8> {
    fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(record);
        Ok(())
    }
}

/// A container run's live log file, rotated by a [`LogPolicy`].
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    policy: LogPolicy,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl RotatingLog {
    /// Opens (appending to) the live file.
    pub fn open(path: &Path, policy: LogPolicy) -> std::io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            policy,
        })
    }

    fn base(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn rotated(&self) -> std::io::Result<Vec<Rotated>> {
        let base = self.base();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(r) = parse_rotated(&base, &e.file_name().to_string_lossy()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Renames the live file away, opens a new one, compresses and removes old ones.
    fn rotate(&mut self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let existing = self.rotated()?;
        let name = rotated_name(&self.base(), chrono::Utc::now(), &existing);
        std::fs::rename(&self.path, dir.join(&name))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        let (compress, remove) = plan(self.rotated()?, self.policy.max_files);
        for r in remove {
            std::fs::remove_file(dir.join(&r.name))?;
        }
        for r in compress {
            gzip(&dir.join(&r.name))?;
        }
        tracing::debug!(log = %self.path.display(), rotated = %name, "log rotated");
        Ok(())
    }
}

/// Compresses `path` to `path.gz` (through `path.gz.tmp` and a rename) and removes it.
fn gzip(path: &Path) -> std::io::Result<()> {
    let mut gz_name = path.as_os_str().to_owned();
    gz_name.push(GZ);
    let gz = PathBuf::from(gz_name);
    let mut tmp_name = gz.as_os_str().to_owned();
    tmp_name.push(TMP);
    let tmp = PathBuf::from(tmp_name);
    let mut input = std::fs::File::open(path)?;
    let mut enc =
        flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::default());
    std::io::copy(&mut input, &mut enc)?;
    enc.finish()?.sync_all()?;
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(path)
}

impl RecordSink for RotatingLog {
    fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        let len = record.len() as u64;
        // rotate before a record that would take the file past the size, so that the live
        // file always ends with the latest record (`kubectl logs --tail` reads only it)
        if self.policy.max_size > 0
            && self.size > 0
            && self.size + len > self.policy.max_size
            && let Err(e) = self.rotate()
        {
            tracing::warn!(log = %self.path.display(), error = %e, "cannot rotate the log");
        }
        self.file.write_all(record)?;
        self.size += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> Rotated {
        parse_rotated("0.log", name).unwrap()
    }

    /// A rotated file's stamp, sequence number and whether it is compressed.
    type Parsed<'a> = Option<(&'a str, u32, bool)>;

    #[test]
    fn parses_rotated_names() {
        let cases: &[(&str, Parsed)] = &[
            ("0.log.20261202-091500", Some(("20261202-091500", 0, false))),
            (
                "0.log.20261202-091500.gz",
                Some(("20261202-091500", 0, true)),
            ),
            (
                "0.log.20261202-091500.3.gz",
                Some(("20261202-091500", 3, true)),
            ),
            ("0.log.20261202-091500.gz.tmp", None),
            ("0.log", None),
            ("1.log.20261202-091500", None),
            ("0.log.garbage", None),
            ("10.log.20261202-091500", None),
        ];
        for (name, want) in cases {
            let got = parse_rotated("0.log", name).map(|r| (r.stamp, r.seq, r.compressed));
            let want = want.map(|(s, n, c)| (s.to_string(), n, c));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn names_get_a_sequence_within_one_second() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T09:15:00.7Z")
            .unwrap()
            .to_utc();
        assert_eq!(rotated_name("0.log", at, &[]), "0.log.20261202-091500");
        let one = [r("0.log.20261202-091459.gz"), r("0.log.20261202-091500")];
        assert_eq!(rotated_name("0.log", at, &one), "0.log.20261202-091500.1");
        let two = [r("0.log.20261202-091500.gz"), r("0.log.20261202-091500.1")];
        assert_eq!(rotated_name("0.log", at, &two), "0.log.20261202-091500.2");
    }

    #[test]
    fn plan_keeps_newest_plain_and_at_most_max_files() {
        let names = |v: Vec<Rotated>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        let files = vec![
            r("0.log.20261202-091502"),
            r("0.log.20261202-091500.gz"),
            r("0.log.20261202-091501.1"),
            r("0.log.20261202-091501.gz"),
            r("0.log.20261202-091459.gz"),
        ];
        // 5 files in all: 4 rotated kept, the oldest goes
        let (compress, remove) = plan(files.clone(), 5);
        assert_eq!(names(remove), vec!["0.log.20261202-091459.gz"]);
        assert_eq!(names(compress), vec!["0.log.20261202-091501.1"]);
        // 2 files in all: the newest rotated one only
        let (compress, remove) = plan(files.clone(), 2);
        assert_eq!(compress, vec![]);
        assert_eq!(remove.len(), 4);
        assert!(remove.iter().all(|x| x.name != "0.log.20261202-091502"));
        // nothing to do
        let (compress, remove) = plan(vec![r("0.log.20261202-091502")], 5);
        assert!(compress.is_empty() && remove.is_empty());
    }

    #[test]
    fn sizes_and_policy() {
        assert_eq!(parse_size("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("500Ki"), Ok(500 * 1024));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("-1Mi").is_err());
        assert_eq!(LogPolicy::new(1, 1), Err(PolicyError::Files(1)));
        assert_eq!(LogPolicy::default().max_files, 5);
    }

    #[test]
    fn rotating_log_bounds_files_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("0.log");
        let policy = LogPolicy::new(1000, 3).unwrap();
        let mut log = RotatingLog::open(&live, policy).unwrap();
        let mut last = Vec::new();
        for i in 0..2000 {
            last = format!("2026-12-02T09:15:00.000000000Z stdout F line {i:05}\n").into_bytes();
            log.append(&last).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_string()));
        assert_eq!(names.iter().filter(|n| n.ends_with(".gz")).count(), 1);
        // whole records everywhere, none over the size; the live file ends with the last one
        let text = std::fs::read_to_string(&live).unwrap();
        assert!(text.ends_with(std::str::from_utf8(&last).unwrap()));
        assert!(text.len() <= 1000);
        let newest_plain = names
            .iter()
            .find(|n| n.starts_with("0.log.") && !n.ends_with(".gz"))
            .unwrap();
        let rotated = std::fs::read_to_string(dir.path().join(newest_plain)).unwrap();
        let joined = rotated + &text;
        assert!(joined.ends_with(std::str::from_utf8(&last).unwrap()));
        let gz = names.iter().find(|n| n.ends_with(".gz")).unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join(gz)).unwrap()),
            &mut plain,
        )
        .unwrap();
        // the three files hold consecutive records
        let all = plain + &joined;
        let nums: Vec<u32> = all
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "records lost");
        assert_eq!(*nums.last().unwrap(), 1999);
    }
}

//! CRI-format container logs, as containerd and CRI-O write them and `kubectl logs` reads
//! them through the kubelet: one line per record,
//! `2026-12-01T10:00:00.000000000Z stdout F text`; `P` marks a partial line (longer than
//! [`MAX_LINE`] and continued by the next record).

use std::io::{BufRead, Read};

/// Longest record body; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record: timestamp with nanoseconds, stream, tag, the text without its newline.
pub fn record(
    at: chrono::DateTime<chrono::Utc>,
    stream: Stream,
    partial: bool,
    text: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} ",
        at.format("%Y-%m-%dT%H:%M:%S%.9fZ"),
        stream.as_str(),
        if partial { "P" } else { "F" }
    )
    .into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Copies `input` to `out` as CRI records until end of file, one `append` per record. A final fragment without a
/// newline is a full (`F`) record, as containerd writes it.
pub fn copy(
    input: impl std::io::Read,
    stream: Stream,
    out: &std::sync::Mutex<impl crate::logrotate::RecordSink>,
) -> std::io::Result<()> {
    let mut r = std::io::BufReader::with_capacity(MAX_LINE, input);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let (text, partial) = match line.strip_suffix(b"\n") {
            Some(t) => (t, false),
            None => (&line[..], n == MAX_LINE),
        };
        let rec = record(chrono::Utc::now(), stream, partial, text);
        let mut w = out
            .lock()
            .map_err(|_| std::io::Error::other("log writer poisoned"))?;
        w.append(&rec)?;
    }
}

/// Parses one record into (timestamp, stream, partial, text).
pub fn parse(line: &str) -> Option<(&str, &str, bool, &str)> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some((ts, stream, tag == "P", text))
}

/// What `GET /containerLogs/...` was asked (the kubelet's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Keep streaming new lines until the container ends.
    pub follow: bool,
    /// The previous run's log instead of the current one.
    pub previous: bool,
    /// Prefix every line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time (`sinceSeconds` is turned into one).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A query parameter that is not valid, as the kubelet words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn query_bool(v: &str) -> Result<bool, QueryError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        _ => Err(QueryError(format!("invalid boolean value {v:?}"))),
    }
}

fn query_int(name: &str, v: &str) -> Result<i64, QueryError> {
    v.parse()
        .map_err(|_| QueryError(format!("{name}: invalid integer value {v:?}")))
}

impl LogQuery {
    /// Parses the decoded query parameters; `now` turns `sinceSeconds` into a time.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<LogQuery, QueryError> {
        let mut q = LogQuery::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in params {
            match k {
                "follow" => q.follow = query_bool(v)?,
                "previous" => q.previous = query_bool(v)?,
                "timestamps" => q.timestamps = query_bool(v)?,
                "tailLines" => {
                    let n = query_int(k, v)?;
                    if n < 0 {
                        return Err(QueryError(
                            "tailLines: must be greater than or equal to 0".into(),
                        ));
                    }
                    q.tail_lines = Some(n as usize);
                }
                "limitBytes" => {
                    let n = query_int(k, v)?;
                    if n < 1 {
                        return Err(QueryError("limitBytes: must be greater than 0".into()));
                    }
                    q.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = query_int(k, v)?;
                    if n < 1 {
                        return Err(QueryError("sinceSeconds: must be greater than 0".into()));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = chrono::DateTime::parse_from_rfc3339(v)
                        .map_err(|e| QueryError(format!("sinceTime: {e}")))?;
                    since_time = Some(t.to_utc());
                }
                _ => {}
            }
        }
        q.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(QueryError(
                    "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
                ));
            }
            (Some(s), None) => Some(now - chrono::Duration::seconds(s)),
            (None, t) => t,
        };
        Ok(q)
    }
}

/// One log line as `kubectl logs` shows it: partial records joined.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// When its first record was written.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Its stream.
    pub stream: Stream,
    /// The text, with the newline the program wrote.
    pub text: Vec<u8>,
}

impl LogLine {
    /// The bytes sent to the client: the text, after the time when asked for.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 32);
        if timestamps {
            out.extend_from_slice(rfc3339_nano(self.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.text);
        out
    }
}

/// Go's `time.RFC3339Nano`, as the kubelet prints `--timestamps`: fraction without
/// trailing zeros, none at all on a whole second.
pub fn rfc3339_nano(t: chrono::DateTime<chrono::Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = format!("{:09}", t.timestamp_subsec_nanos());
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{frac}Z")
    }
}

/// Turns CRI records (one per call, without the file's newline) into [`LogLine`]s, joining
/// `P` records with the ones that complete them. Malformed records are skipped, as the
/// kubelet does.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Option<LogLine>,
}

impl Decoder {
    /// Feeds one record; returns a line when this record completes one.
    pub fn push(&mut self, record: &[u8]) -> Option<LogLine> {
        let mut it = record.splitn(4, |b| *b == b' ');
        let ts = std::str::from_utf8(it.next()?).ok()?;
        let stream = match it.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let partial = match it.next()? {
            b"P" => true,
            b"F" => false,
            _ => return None,
        };
        let text = it.next().unwrap_or_default();
        let time = chrono::DateTime::parse_from_rfc3339(ts).ok()?.to_utc();
        let line = self.pending.get_or_insert_with(|| LogLine {
            time,
            stream,
            text: Vec::new(),
        });
        line.text.extend_from_slice(text);
        if partial {
            return None;
        }
        let mut line = self.pending.take()?;
        line.text.push(b'\n');
        Some(line)
    }
}

/// Applies `since` and `tailLines` to the lines of a whole file.
pub fn select(lines: impl IntoIterator<Item = LogLine>, q: &LogQuery) -> Vec<LogLine> {
    let kept = lines
        .into_iter()
        .filter(|l| q.since.is_none_or(|s| l.time >= s));
    match q.tail_lines {
        None => kept.collect(),
        Some(n) => {
            let mut ring = std::collections::VecDeque::with_capacity(n.min(4096));
            for l in kept {
                if n == 0 {
                    continue;
                }
                if ring.len() == n {
                    ring.pop_front();
                }
                ring.push_back(l);
            }
            ring.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.5Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            record(at, Stream::Stdout, false, b"hello"),
            b"2026-12-01T10:00:00.500000000Z stdout F hello\n"
        );
        assert_eq!(
            record(at, Stream::Stderr, true, b"x"),
            b"2026-12-01T10:00:00.500000000Z stderr P x\n"
        );
    }

    #[test]
    fn copy_splits_lines_and_long_ones() {
        let long = "a".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nlast");
        let out = std::sync::Mutex::new(Vec::new());
        copy(input.as_bytes(), Stream::Stdout, &out).unwrap();
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let recs: Vec<_> = text.lines().map(|l| parse(l).unwrap()).collect();
        let got: Vec<(bool, usize)> = recs.iter().map(|r| (r.2, r.3.len())).collect();
        assert_eq!(
            got,
            vec![
                (false, 3),
                (false, 3),
                (true, MAX_LINE),
                (false, 10),
                (false, 4)
            ]
        );
        assert!(
            recs.iter()
                .all(|r| r.1 == "stdout" && r.0.ends_with('Z') && r.0.len() == 30)
        );
        assert_eq!(recs[4].3, "last");
    }

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn query_parses_as_the_kubelet() {
        let now = t("2026-12-01T10:00:00Z");
        let q = LogQuery::parse(
            [
                ("follow", "true"),
                ("tailLines", "3"),
                ("timestamps", "1"),
                ("limitBytes", "10"),
            ],
            now,
        )
        .unwrap();
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                timestamps: true,
                tail_lines: Some(3),
                limit_bytes: Some(10),
                ..Default::default()
            }
        );
        let q = LogQuery::parse([("sinceSeconds", "60"), ("previous", "false")], now).unwrap();
        assert_eq!(q.since, Some(t("2026-12-01T09:59:00Z")));
        assert!(!q.previous);
        let q = LogQuery::parse([("sinceTime", "2026-12-01T09:00:00+01:00")], now).unwrap();
        assert_eq!(q.since, Some(t("2026-12-01T08:00:00Z")));
        for bad in [
            vec![("tailLines", "-1")],
            vec![("tailLines", "x")],
            vec![("limitBytes", "0")],
            vec![("sinceSeconds", "0")],
            vec![("follow", "maybe")],
            vec![("sinceSeconds", "5"), ("sinceTime", "2026-12-01T09:00:00Z")],
        ] {
            assert!(LogQuery::parse(bad.clone(), now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoder_joins_partials_and_skips_garbage() {
        let mut d = Decoder::default();
        let recs: &[&[u8]] = &[
            b"2026-12-01T10:00:00.100000000Z stdout F one",
            b"2026-12-01T10:00:01.000000000Z stderr P par",
            b"2026-12-01T10:00:01.500000000Z stderr P ti",
            b"2026-12-01T10:00:02.000000000Z stderr F al",
            b"garbage",
            b"2026-12-01T10:00:03.000000000Z stdout X bad tag",
            b"2026-12-01T10:00:04.000000000Z stdout F ",
            b"2026-12-01T10:00:05.000000000Z stdout F with  two spaces",
        ];
        let got: Vec<_> = recs.iter().filter_map(|r| d.push(r)).collect();
        let texts: Vec<_> = got
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect();
        assert_eq!(texts, ["one\n", "partial\n", "\n", "with  two spaces\n"]);
        assert_eq!(got[1].stream, Stream::Stderr);
        assert_eq!(got[1].time, t("2026-12-01T10:00:01Z"));
    }

    #[test]
    fn render_with_go_rfc3339_nano() {
        let line = |ts: &str| LogLine {
            time: t(ts),
            stream: Stream::Stdout,
            text: b"x\n".to_vec(),
        };
        for (ts, want) in [
            (
                "2026-12-01T10:00:00.123456789Z",
                "2026-12-01T10:00:00.123456789Z x\n",
            ),
            (
                "2026-12-01T10:00:00.500000000Z",
                "2026-12-01T10:00:00.5Z x\n",
            ),
            ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z x\n"),
            (
                "2026-12-01T10:00:00.000001Z",
                "2026-12-01T10:00:00.000001Z x\n",
            ),
        ] {
            assert_eq!(String::from_utf8(line(ts).render(true)).unwrap(), want);
        }
        assert_eq!(line("2026-12-01T10:00:00Z").render(false), b"x\n");
    }

    #[test]
    fn select_applies_since_then_tail() {
        let lines: Vec<LogLine> = (0..6)
            .map(|i| LogLine {
                time: t(&format!("2026-12-01T10:00:0{i}Z")),
                stream: Stream::Stdout,
                text: format!("{i}\n").into_bytes(),
            })
            .collect();
        let pick = |q: LogQuery| -> String {
            select(lines.clone(), &q)
                .iter()
                .map(|l| String::from_utf8_lossy(&l.text).into_owned())
                .collect()
        };
        let since = Some(t("2026-12-01T10:00:02Z"));
        for (q, want) in [
            (LogQuery::default(), "0\n1\n2\n3\n4\n5\n"),
            (
                LogQuery {
                    tail_lines: Some(2),
                    ..Default::default()
                },
                "4\n5\n",
            ),
            (
                LogQuery {
                    tail_lines: Some(0),
                    ..Default::default()
                },
                "",
            ),
            (
                LogQuery {
                    tail_lines: Some(10),
                    ..Default::default()
                },
                "0\n1\n2\n3\n4\n5\n",
            ),
            (
                LogQuery {
                    since,
                    ..Default::default()
                },
                "2\n3\n4\n5\n",
            ),
            (
                LogQuery {
                    since,
                    tail_lines: Some(3),
                    ..Default::default()
                },
                "3\n4\n5\n",
            ),
        ] {
            assert_eq!(pick(q.clone()), want, "{q:?}");
        }
    }
}

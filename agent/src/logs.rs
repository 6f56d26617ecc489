//! CRI-format container logs, as containerd and CRI-O write them and `kubectl logs` reads
//! them through the kubelet: one line per record,
//! `2026-12-01T10:00:00.000000000Z stdout F text`; `P` marks a partial line (longer than
//! [`MAX_LINE`] and continued by the next record).

use std::io::{BufRead, Read, Write};

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

/// Copies `input` to `out` as CRI records until end of file. A final fragment without a
/// newline is a full (`F`) record, as containerd writes it.
pub fn copy(
    input: impl std::io::Read,
    stream: Stream,
    out: &std::sync::Mutex<impl Write>,
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
        w.write_all(&rec)?;
        w.flush()?;
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
}

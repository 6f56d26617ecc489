//! Kubernetes' remotecommand protocol over WebSocket, as the kubelet serves exec and attach
//! (k8s.io/apimachinery `util/remotecommand`, `util/httpstream/wsstream`): every binary
//! message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 the final status
//! (a `metav1.Status` in JSON), 4 terminal resize (`{"Width":…,"Height":…}`); in
//! `v5.channel.k8s.io` a message `[255, n]` closes channel n (stdin's end of file).
//! Pure: the server in `server.rs` does the I/O.

use serde_json::{Value, json};

/// Standard input.
pub const STDIN: u8 = 0;
/// Standard output (also the terminal's output).
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// The status at the end.
pub const ERROR: u8 = 3;
/// Terminal size changes.
pub const RESIZE: u8 = 4;
/// v5: closes the channel named by the next byte.
pub const CLOSE: u8 = 255;

/// The subprotocols served, newest first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The first protocol of the client's `Sec-WebSocket-Protocol` list (in its order of
/// preference, as wsstream's `NegotiateProtocol`) that is served.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().find(|s| **s == p).copied())
}

/// The `X-Stream-Protocol-Version`s served over SPDY/3.1, newest first (the kubelet's
/// `SupportedStreamingProtocols`).
pub const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The SPDY protocol version, as client-go's `httpstream.Handshake`: the first of the
/// client's `X-Stream-Protocol-Version` values (several headers or a comma list) that is
/// served; a client that names none gets the original `channel.k8s.io`. `Err` carries
/// the kubelet's message for a client whose versions are all unknown (403).
pub fn negotiate_spdy<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Result<&'static str, String> {
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(SPDY_PROTOCOLS[3]);
    }
    offered
        .iter()
        .find_map(|p| SPDY_PROTOCOLS.iter().find(|s| *s == p).copied())
        .ok_or_else(|| {
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {:?}, server accepts {:?}",
                offered, SPDY_PROTOCOLS
            )
        })
}

/// What goes on the SPDY error stream at the end: v4's `Status` JSON, or in the older
/// versions only a failure's message as text (nothing on success).
pub fn spdy_status(protocol: &str, outcome: &Result<i32, String>) -> Option<Vec<u8>> {
    if protocol == SPDY_PROTOCOLS[0] {
        return Some(status(outcome).to_string().into_bytes());
    }
    let text = status(outcome);
    match text["status"].as_str() {
        Some("Success") => None,
        _ => text["message"].as_str().map(|m| m.as_bytes().to_vec()),
    }
}

/// Whether the SPDY version has the resize stream (v3 and later).
pub fn spdy_has_resize(protocol: &str) -> bool {
    matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io")
}

/// Terminal sizes from a resize stream: whole JSON objects as client-go's encoder writes
/// them one after another; an unfinished one stays in `buf`.
pub fn resize_events(buf: &mut Vec<u8>) -> Vec<Incoming> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(size)) => {
                used = it.byte_offset();
                out.push(Incoming::Resize {
                    width: size.width,
                    height: size.height,
                });
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // not a size: drop what cannot be read
                used = buf.len();
                break;
            }
            None => {
                used = it.byte_offset();
                break;
            }
        }
    }
    buf.drain(..used);
    out
}

/// Whether the protocol has the close message.
pub fn supports_close(protocol: &str) -> bool {
    protocol == "v5.channel.k8s.io"
}

/// One outgoing message on a channel.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// What a client's message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// The terminal's new size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The client closed this channel (v5).
    Close(u8),
    /// An empty message or one for a channel the server does not read: ignored.
    Ignored,
}

/// A message that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid remotecommand message: {0}")]
pub struct FrameError(pub String);

#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Decodes one binary message from the client.
pub fn decode(msg: &[u8], protocol: &str) -> Result<Incoming, FrameError> {
    let Some((&channel, data)) = msg.split_first() else {
        return Ok(Incoming::Ignored);
    };
    match channel {
        STDIN => Ok(Incoming::Stdin(data.to_vec())),
        RESIZE => {
            let size: TerminalSize =
                serde_json::from_slice(data).map_err(|e| FrameError(format!("resize: {e}")))?;
            Ok(Incoming::Resize {
                width: size.width,
                height: size.height,
            })
        }
        CLOSE if supports_close(protocol) => match data.first() {
            Some(&c) => Ok(Incoming::Close(c)),
            None => Err(FrameError("close message without a channel".into())),
        },
        _ => Ok(Incoming::Ignored),
    }
}

/// The final status on the error channel: Success, the exit code as kubectl reads it
/// (`NonZeroExitCode` with an `ExitCode` cause), or an internal error.
pub fn status(outcome: &Result<i32, String>) -> Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("error executing command in container: {message}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    }
}

/// What `/exec` and `/attach` were asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// The command (exec only).
    pub command: Vec<String>,
    /// Stream stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr (never with a terminal: it is merged into stdout).
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
}

impl StreamQuery {
    /// Parses decoded query parameters as the kubelet does; `exec` requires a command.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        exec: bool,
    ) -> Result<StreamQuery, FrameError> {
        let mut q = StreamQuery::default();
        let flag = |v: &str| matches!(v, "" | "1" | "true" | "True" | "TRUE" | "t" | "T");
        for (k, v) in params {
            match k {
                "command" => q.command.push(v.to_string()),
                "input" | "stdin" => q.stdin = flag(v),
                "output" | "stdout" => q.stdout = flag(v),
                "error" | "stderr" => q.stderr = flag(v),
                "tty" => q.tty = flag(v),
                _ => {}
            }
        }
        if exec && q.command.is_empty() {
            return Err(FrameError("you must specify a command".into()));
        }
        if !(q.stdin || q.stdout || q.stderr) {
            return Err(FrameError(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        if q.tty {
            q.stderr = false;
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_in_the_clients_order() {
        for (offered, want) in [
            (
                vec!["v5.channel.k8s.io, v4.channel.k8s.io"],
                Some(PROTOCOLS[0]),
            ),
            (
                vec!["v4.channel.k8s.io,v5.channel.k8s.io"],
                Some(PROTOCOLS[1]),
            ),
            (
                vec!["v3.channel.k8s.io", "v4.channel.k8s.io"],
                Some(PROTOCOLS[1]),
            ),
            (vec!["channel.k8s.io", "base64.channel.k8s.io"], None),
            (vec![], None),
        ] {
            assert_eq!(negotiate(offered.clone()), want, "{offered:?}");
        }
    }

    #[test]
    fn negotiates_spdy_as_the_kubelet() {
        for (offered, want) in [
            (
                vec!["v4.channel.k8s.io", "v3.channel.k8s.io"],
                Ok("v4.channel.k8s.io"),
            ),
            (
                vec!["v3.channel.k8s.io,v4.channel.k8s.io"],
                Ok("v3.channel.k8s.io"),
            ),
            (
                vec!["v5.channel.k8s.io", "v2.channel.k8s.io"],
                Ok("v2.channel.k8s.io"),
            ),
            (vec![], Ok("channel.k8s.io")),
            (vec!["portforward.k8s.io"], Err(())),
        ] {
            assert_eq!(
                negotiate_spdy(offered.clone()).map_err(|_| ()),
                want,
                "{offered:?}"
            );
        }
        assert!(
            negotiate_spdy(["x"])
                .unwrap_err()
                .contains("unable to negotiate protocol")
        );
    }

    #[test]
    fn spdy_status_by_version() {
        let v4 = spdy_status("v4.channel.k8s.io", &Ok(3)).unwrap();
        let v: Value = serde_json::from_slice(&v4).unwrap();
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert!(spdy_status("v4.channel.k8s.io", &Ok(0)).is_some());
        assert_eq!(spdy_status("v3.channel.k8s.io", &Ok(0)), None);
        assert_eq!(
            spdy_status("v2.channel.k8s.io", &Ok(2)).unwrap(),
            b"command terminated with non-zero exit code: exit status 2"
        );
        assert!(spdy_has_resize("v3.channel.k8s.io") && !spdy_has_resize("v2.channel.k8s.io"));
    }

    #[test]
    fn resize_stream_in_pieces() {
        let mut buf = b"{\"Width\":80,\"Height\":24}\n{\"Width\":100,".to_vec();
        assert_eq!(
            resize_events(&mut buf),
            vec![Incoming::Resize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(buf, b"\n{\"Width\":100,");
        buf.extend_from_slice(b"\"Height\":40}\n");
        assert_eq!(
            resize_events(&mut buf),
            vec![Incoming::Resize {
                width: 100,
                height: 40
            }]
        );
        let mut bad = b"nonsense".to_vec();
        assert!(resize_events(&mut bad).is_empty());
        assert!(bad.is_empty());
    }

    #[test]
    fn frames_and_decodes() {
        assert_eq!(frame(STDOUT, b"hi"), b"\x01hi");
        assert_eq!(frame(ERROR, b""), b"\x03");
        let v5 = PROTOCOLS[0];
        let v4 = PROTOCOLS[1];
        for (msg, proto, want) in [
            (&b"\x00abc"[..], v5, Ok(Incoming::Stdin(b"abc".to_vec()))),
            (
                &b"\x04{\"Width\":120,\"Height\":40}"[..],
                v4,
                Ok(Incoming::Resize {
                    width: 120,
                    height: 40,
                }),
            ),
            (&b"\xff\x00"[..], v5, Ok(Incoming::Close(0))),
            (&b"\xff\x00"[..], v4, Ok(Incoming::Ignored)),
            (&b""[..], v5, Ok(Incoming::Ignored)),
            (&b"\x01x"[..], v5, Ok(Incoming::Ignored)),
            (&b"\x04{bad"[..], v5, Err(())),
            (&b"\xff"[..], v5, Err(())),
        ] {
            assert_eq!(decode(msg, proto).map_err(|_| ()), want, "{msg:?}");
        }
    }

    #[test]
    fn status_carries_the_exit_code() {
        assert_eq!(status(&Ok(0))["status"], "Success");
        let s = status(&Ok(3));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let e = status(&Err("no such container".into()));
        assert_eq!(e["reason"], "InternalError");
        assert!(e["message"].as_str().unwrap().contains("no such container"));
    }

    #[test]
    fn stream_query_as_the_kubelet() {
        let q = StreamQuery::parse(
            [
                ("command", "sh"),
                ("command", "-c"),
                ("command", "exit 3"),
                ("stdout", "true"),
                ("stderr", "true"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(q.command, ["sh", "-c", "exit 3"]);
        assert!(q.stdout && q.stderr && !q.stdin && !q.tty);
        let q = StreamQuery::parse(
            [
                ("command", "sh"),
                ("stdin", "1"),
                ("stderr", "1"),
                ("tty", "1"),
            ],
            true,
        )
        .unwrap();
        assert!(q.tty && q.stdin && !q.stderr, "a terminal merges stderr");
        assert!(StreamQuery::parse([("stdout", "true")], true).is_err());
        assert!(StreamQuery::parse([("command", "ls")], true).is_err());
        assert!(StreamQuery::parse([("stdout", "true")], false).is_ok());
    }
}

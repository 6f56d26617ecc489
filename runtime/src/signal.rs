//! Signal names as runc, containerd and image configs (`STOPSIGNAL`) spell them: `9`,
//! `KILL`, `SIGKILL`, `sigterm`, and the real-time signals `RTMIN`, `RTMIN+3`, `RTMAX-1`
//! (numbered as glibc does, so `SIGRTMIN+3` is systemd's 37).

use nix::sys::signal::Signal;

/// The first real-time signal as glibc numbers it (the kernel's 32 and 33 are taken by the
/// C library).
pub const RTMIN: i32 = 34;
/// The last real-time signal.
pub const RTMAX: i32 = 64;

/// An unknown signal name or number.
#[derive(Debug, thiserror::Error)]
#[error("unknown signal {0:?}")]
pub struct UnknownSignal(pub String);

/// The number of signal `s`.
pub fn parse(s: &str) -> Result<i32, UnknownSignal> {
    let unknown = || UnknownSignal(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        // a number goes to kill(2) as given, as runc passes it: the kernel's 32 and 33 too
        return (1..=RTMAX).contains(&n).then_some(n).ok_or_else(unknown);
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let offset = |rest: &str, sign: char| -> Option<i32> {
        match rest {
            "" => Some(0),
            _ => rest.strip_prefix(sign)?.parse::<i32>().ok(),
        }
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest, '+').map(|o| RTMIN + o)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest, '-').map(|o| RTMAX - o)
    } else {
        format!("SIG{name}")
            .parse::<Signal>()
            .ok()
            .map(|s| s as i32)
    };
    n.and_then(valid).ok_or_else(unknown)
}

/// `n` if a name may stand for it (1 to 64, not glibc's own 32 and 33, which have none).
fn valid(n: i32) -> Option<i32> {
    ((1..=31).contains(&n) || (RTMIN..=RTMAX).contains(&n)).then_some(n)
}

/// The usual name of signal `n`: `SIGTERM`, `SIGRTMIN+3`, or the number.
pub fn name(n: i32) -> String {
    match Signal::try_from(n) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if (RTMIN..=RTMAX).contains(&n) => format!("SIGRTMIN+{}", n - RTMIN),
        Err(_) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let cases = [
            ("9", Some(9)),
            ("KILL", Some(9)),
            ("sigterm", Some(15)),
            ("SIGQUIT", Some(3)),
            (" SIGWINCH ", Some(28)),
            ("SIGRTMIN", Some(34)),
            ("SIGRTMIN+3", Some(37)),
            ("rtmin+30", Some(64)),
            ("RTMAX", Some(64)),
            ("SIGRTMAX-2", Some(62)),
            ("37", Some(37)),
            ("0", None),
            ("32", Some(32)),
            ("33", Some(33)),
            ("65", None),
            ("SIGRTMIN+31", None),
            ("SIGRTMIN-1", None),
            ("SIGRTMINX", None),
            ("BOGUS", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).ok(), want, "{s:?}");
        }
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(37), "SIGRTMIN+3");
        assert_eq!(parse(&name(37)).unwrap(), 37);
    }
}

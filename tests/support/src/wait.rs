//! Tests wait for conditions, never for fixed times: [`poll_until`] retries a probe with a
//! short, growing interval until it yields a value or the deadline passes.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Calls `probe` until it returns `Some`, at most for `timeout`; the error names `what`
/// was awaited.
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let got = poll_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(got.unwrap(), 3);
    }

    #[test]
    fn names_what_timed_out() {
        let err = poll_until(Duration::from_millis(20), "never", || None::<()>).unwrap_err();
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }
}

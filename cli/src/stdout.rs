//! Standard output for commands whose output another program reads (`skiff-runc events |
//! head -1`, `skiff ctl get pods | head`). skiff ignores SIGPIPE, so that a closed socket is
//! an error and not the end of an agent; `println!` then panics on a closed pipe. These
//! macros end the process by SIGPIPE instead, quietly, as runc, kubectl and coreutils end.

use std::io::Write;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};

/// `println!` that dies of SIGPIPE when the reader has gone.
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that dies of SIGPIPE when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::write(format_args!($($arg)*)) };
}

/// Writes to stdout; a closed pipe ends the process by SIGPIPE, another error with a message
/// and exit code 1 (where `println!` would panic).
pub fn write(text: std::fmt::Arguments<'_>) {
    handle(std::io::stdout().lock().write_fmt(text))
}

/// [`write`] for bytes.
pub fn write_bytes(bytes: &[u8]) {
    handle(std::io::stdout().lock().write_all(bytes))
}

fn handle(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        Err(e) => {
            eprintln!("skiff: cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}

fn die_of_sigpipe() -> ! {
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&pipe), None);
    // SAFETY: SIG_DFL is a valid disposition, and no handler of ours is replaced.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = signal::raise(Signal::SIGPIPE);
    std::process::exit(128 + libc::SIGPIPE)
}

//! Seccomp: the spec's `linux.seccomp` section compiled with libseccomp, and the
//! default profile Docker, containerd and Kubernetes' `RuntimeDefault` use.
//!
//! The work is split the way runc does it:
//!
//! 1. [`validate`](crate::seccomp::validate) checks the section when the bundle is
//!    validated, before anything is created, and builds the filter once in memory so
//!    that libseccomp's own objections (an architecture it does not know, …) surface
//!    early.
//! 2. [`compile`](crate::seccomp::compile) builds the libseccomp filter while the
//!    process still holds its privileges.
//! 3. [`load`](crate::seccomp::load), or [`load_compiled`](crate::seccomp::load_compiled)
//!    for a filter compiled earlier, loads it into the kernel as the last step before
//!    `execve`, with `TSYNC` so that every thread of the process is covered.
//!
//! The rules themselves are computed by a pure function (`Plan::from_spec`) that
//! holds every check; only the last step talks to libseccomp. libseccomp is never
//! allowed to set `no_new_privs` itself: the runtime sets it from
//! `process.noNewPrivileges`.
//!
//! What runc does and skiff does too: syscall names libseccomp does not know are
//! skipped (profiles list the syscalls of newer kernels), rules whose action is the
//! default action are skipped (libseccomp rejects them), several conditions on the
//! same argument are alternatives (one rule each) while conditions on different
//! arguments must all hold. Where runc turns *every* condition into its own rule
//! as soon as one argument repeats, skiff keeps the conditions on the other
//! arguments in each rule, which is what the spec's wording asks for.
#![forbid(unsafe_code)]

use std::path::Path;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, error::SeccompError as LibseccompError};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use tracing::{debug, warn};

/// A syscall takes at most six arguments, so a rule can compare at most six.
const MAX_SYSCALL_ARGS: usize = 6;

/// Above this many syscall entries, ask libseccomp for a binary-tree filter (as runc).
const OPTIMIZE_THRESHOLD: usize = 8;

/// The errno an `SCMP_ACT_ERRNO` without `errnoRet` returns, and the message value
/// of an `SCMP_ACT_TRACE` without one (runc's choice).
const DEFAULT_ERRNO: u16 = libc::EPERM as u16;

/// Errors of the seccomp module: each names the syscall, field or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `SCMP_ACT_NOTIFY` as `defaultAction`.
    #[error("the seccomp default action cannot be SCMP_ACT_NOTIFY")]
    NotifyDefaultAction,
    /// A rule uses `SCMP_ACT_NOTIFY` but the section has no `listenerPath`.
    #[error("seccomp rule {index} ({syscall}) uses SCMP_ACT_NOTIFY without a listenerPath")]
    NotifyWithoutListenerPath {
        /// Position of the rule in `syscalls`.
        index: usize,
        /// First syscall name of the rule.
        syscall: String,
    },
    /// A well-formed `SCMP_ACT_NOTIFY` rule: passing the listener fd is not implemented.
    #[error("seccomp notify (SCMP_ACT_NOTIFY for {syscall}, listener {listener}) is not supported")]
    NotifyUnsupported {
        /// First syscall name of the rule.
        syscall: String,
        /// The `listenerPath` of the section.
        listener: String,
    },
    /// A rule with an empty `names` list.
    #[error("seccomp rule {index} has an empty names list")]
    EmptyNames {
        /// Position of the rule in `syscalls`.
        index: usize,
    },
    /// A rule with an empty string among its names.
    #[error("seccomp rule {index} has an empty syscall name")]
    EmptyName {
        /// Position of the rule in `syscalls`.
        index: usize,
    },
    /// `errnoRet` on a rule whose action returns no errno.
    #[error("errnoRet {errno} is set for syscall {syscall} but its action {action} takes no errno")]
    ErrnoRetWithoutErrnoAction {
        /// First syscall name of the rule.
        syscall: String,
        /// The rule's action.
        action: LinuxSeccompAction,
        /// The rejected `errnoRet`.
        errno: u32,
    },
    /// `defaultErrnoRet` with a default action that returns no errno.
    #[error("defaultErrnoRet {errno} is set but the default action {action} takes no errno")]
    DefaultErrnoRetWithoutErrnoAction {
        /// The default action.
        action: LinuxSeccompAction,
        /// The rejected `defaultErrnoRet`.
        errno: u32,
    },
    /// An `errnoRet` that does not fit the 16 bits seccomp has for it.
    #[error("errnoRet {errno} of syscall {syscall} is out of range (at most 65535)")]
    ErrnoOutOfRange {
        /// First syscall name of the rule.
        syscall: String,
        /// The rejected value.
        errno: u32,
    },
    /// A `defaultErrnoRet` that does not fit the 16 bits seccomp has for it.
    #[error("defaultErrnoRet {errno} is out of range (at most 65535)")]
    DefaultErrnoOutOfRange {
        /// The rejected value.
        errno: u32,
    },
    /// More argument conditions than a syscall has arguments.
    #[error("syscall {syscall} has {count} argument conditions, at most 6 are allowed")]
    TooManyArgs {
        /// First syscall name of the rule.
        syscall: String,
        /// How many conditions the rule has.
        count: usize,
    },
    /// A condition on an argument past the sixth.
    #[error("argument index {arg_index} of syscall {syscall} is out of range (0 to 5)")]
    ArgIndexOutOfRange {
        /// First syscall name of the rule.
        syscall: String,
        /// The rejected index.
        arg_index: usize,
    },
    /// libseccomp could not create a filter.
    #[error("cannot create a seccomp filter with default action {action}")]
    NewFilter {
        /// The default action.
        action: LinuxSeccompAction,
        /// libseccomp's error.
        #[source]
        source: LibseccompError,
    },
    /// libseccomp refused a filter attribute skiff needs.
    #[error("cannot set seccomp filter attribute {attribute}")]
    SetAttribute {
        /// The attribute, as libseccomp names it.
        attribute: &'static str,
        /// libseccomp's error.
        #[source]
        source: LibseccompError,
    },
    /// An architecture the installed libseccomp does not support.
    #[error("seccomp architecture {arch} is not supported by this libseccomp")]
    UnsupportedArch {
        /// The architecture from the spec.
        arch: Arch,
        /// libseccomp's error.
        #[source]
        source: LibseccompError,
    },
    /// libseccomp refused a rule (for instance two actions for the same call).
    #[error("cannot add seccomp rule {action} for syscall {syscall}")]
    AddRule {
        /// The syscall.
        syscall: String,
        /// The action, as libseccomp sees it.
        action: String,
        /// libseccomp's error.
        #[source]
        source: LibseccompError,
    },
    /// The kernel refused the filter.
    #[error("cannot load the seccomp filter")]
    Load {
        /// libseccomp's error (with the kernel's errno).
        #[source]
        source: LibseccompError,
    },
    /// libseccomp could not export the compiled program.
    #[error("cannot export the compiled seccomp filter")]
    Export {
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a compiled program.
    #[error("cannot load the compiled seccomp filter ({len} instructions)")]
    LoadBpf {
        /// Program length.
        len: usize,
        /// The kernel's errno.
        #[source]
        source: nix::Error,
    },
}

/// A filter compiled to classic BPF, ready for `seccomp(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    /// The program: `sock_filter` instructions of 8 bytes, native byte order.
    pub bpf: Vec<u8>,
    /// `SECCOMP_FILTER_FLAG_*` to load it with (TSYNC always; LOG, SPEC_ALLOW per spec).
    pub flags: u32,
}

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

/// Compiles the spec's filter to BPF with libseccomp (the expensive step: a few
/// milliseconds for the default profile).
pub fn compile_bpf(seccomp: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    use std::io::{Read, Seek};
    let plan = Plan::from_spec(seccomp)?;
    let filter = plan.build()?;
    let memfd = nix::sys::memfd::memfd_create(
        c"skiff-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| SeccompError::Export { source: e.into() })?;
    let mut file = std::fs::File::from(memfd);
    filter.export_bpf(&file).map_err(|e| SeccompError::Export {
        source: std::io::Error::other(e),
    })?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|source| SeccompError::Export { source })?;
    let mut flags = SECCOMP_FILTER_FLAG_TSYNC;
    for flag in &plan.flags {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            _ => {}
        }
    }
    Ok(CompiledFilter { bpf, flags })
}

/// [`compile_bpf`] with a cache in `cache_dir`, keyed by the SHA-256 of the profile, the
/// libseccomp version and the architecture: the same profile (every pod with the default
/// one) is compiled once per node. A cache that cannot be written is only logged.
pub fn compile_cached(
    seccomp: &LinuxSeccomp,
    cache_dir: &Path,
) -> Result<CompiledFilter, SeccompError> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(seccomp).unwrap_or_default());
    let v = libseccomp::ScmpVersion::current().ok();
    h.update(format!("{v:?}/{}", std::env::consts::ARCH));
    let key = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let path = cache_dir.join(format!("{key}.bpf"));
    if let Ok(data) = std::fs::read(&path) {
        if data.len() > 4 && (data.len() - 4) % 8 == 0 {
            let mut f = [0u8; 4];
            f.copy_from_slice(&data[..4]);
            return Ok(CompiledFilter {
                flags: u32::from_le_bytes(f),
                bpf: data[4..].to_vec(),
            });
        }
    }
    let compiled = compile_bpf(seccomp)?;
    let mut data = compiled.flags.to_le_bytes().to_vec();
    data.extend_from_slice(&compiled.bpf);
    let tmp = cache_dir.join(format!(".{key}.{}", std::process::id()));
    let written = std::fs::create_dir_all(cache_dir)
        .and_then(|_| std::fs::write(&tmp, &data))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        debug!(%error, path = %path.display(), "seccomp cache not written");
    }
    Ok(compiled)
}

/// Loads a compiled filter into the calling process (all threads): the last step before
/// `execve`. Needs no_new_privs or CAP_SYS_ADMIN.
pub fn load_bpf(filter: &CompiledFilter) -> Result<(), SeccompError> {
    crate::sys::seccomp_set_filter(&filter.bpf, filter.flags).map_err(|source| {
        SeccompError::LoadBpf {
            len: filter.bpf.len() / 8,
            source,
        }
    })
}

/// Check a spec's seccomp section without loading it.
///
/// Called at validation time, before anything is created. Rejects malformed
/// sections (an empty names list, `errnoRet` with an action that takes no errno,
/// more than six argument conditions or an index past the sixth argument,
/// `SCMP_ACT_NOTIFY`, which is not supported) and then builds the filter in memory,
/// so that architectures or flags the installed libseccomp refuses are reported
/// here too. Syscall names libseccomp does not know are ignored, as runc does.
pub fn validate(seccomp: &LinuxSeccomp) -> Result<(), SeccompError> {
    // rules are checked by `Plan::from_spec`; adding them to a libseccomp context is the
    // expensive part, done once when the filter is compiled
    Plan::from_spec(seccomp)?.header().map(drop)
}

/// Compile the filter without loading it.
///
/// Separate from [`load_compiled`] so that it can run before the process loses its
/// privileges, and the filter be loaded at the last moment. The filter has `TSYNC`
/// set and leaves `no_new_privs` alone.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    Plan::from_spec(seccomp)?.build()
}

/// Load a filter made by [`compile`] into the calling thread and, through `TSYNC`,
/// every other thread of the process.
pub fn load_compiled(filter: &ScmpFilterContext) -> Result<(), SeccompError> {
    filter
        .load()
        .map_err(|source| SeccompError::Load { source })
}

/// Compile and load into the calling process (with `TSYNC`): the last step before
/// `execve`. Irreversible for the calling process.
pub fn load(seccomp: &LinuxSeccomp) -> Result<(), SeccompError> {
    let filter = compile(seccomp)?;
    load_compiled(&filter)?;
    debug!(
        default_action = %seccomp.default_action(),
        syscalls = seccomp.syscalls().as_ref().map_or(0, Vec::len),
        "seccomp filter loaded"
    );
    Ok(())
}

/// The default profile of Docker / containerd / Kubernetes `RuntimeDefault`, for the
/// native architecture and the given granted capabilities (the bounding set).
///
/// The profile's includes and excludes (by capability, by architecture and by
/// minimum kernel version) are resolved here, as containerd's generator does, so
/// the result is a plain OCI seccomp section.
pub fn default_profile(granted_caps: &[Capability]) -> LinuxSeccomp {
    profile_for(
        granted_caps,
        ProfileArch::native(),
        kernel_version(Path::new("/proc/sys/kernel/osrelease")),
    )
}

// ---------------------------------------------------------------------------------
// The pure core: from the spec to a list of rules.
// ---------------------------------------------------------------------------------

/// One libseccomp rule: the syscall gets `action` when every condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    syscall: String,
    action: ScmpAction,
    conditions: Vec<ScmpArgCompare>,
}

/// Everything [`compile`] needs, checked: the pure result of a seccomp section.
#[derive(Debug)]
struct Plan {
    default_action: ScmpAction,
    /// The spec's default action, for messages.
    spec_default: LinuxSeccompAction,
    /// Architectures to add besides the native one, with their spec names.
    arches: Vec<(Arch, ScmpArch)>,
    flags: Vec<LinuxSeccompFilterFlag>,
    /// Number of syscall entries in the spec (decides the optimisation level).
    entries: usize,
    rules: Vec<Rule>,
}

/// Why a spec action cannot become a libseccomp action (context added by the caller).
enum ActionError {
    Notify,
    ErrnoNotAllowed(u32),
    ErrnoOutOfRange(u32),
}

impl Plan {
    /// Check a seccomp section and turn it into rules. Pure: no libseccomp call.
    fn from_spec(seccomp: &LinuxSeccomp) -> Result<Self, SeccompError> {
        let spec_default = seccomp.default_action();
        let default_action =
            scmp_action(spec_default, seccomp.default_errno_ret()).map_err(|e| match e {
                ActionError::Notify => SeccompError::NotifyDefaultAction,
                ActionError::ErrnoNotAllowed(errno) => {
                    SeccompError::DefaultErrnoRetWithoutErrnoAction {
                        action: spec_default,
                        errno,
                    }
                }
                ActionError::ErrnoOutOfRange(errno) => {
                    SeccompError::DefaultErrnoOutOfRange { errno }
                }
            })?;

        let arches = seccomp
            .architectures()
            .iter()
            .flatten()
            .filter_map(|&arch| scmp_arch(arch).map(|scmp| (arch, scmp)))
            .collect();

        let syscalls = seccomp.syscalls().as_deref().unwrap_or_default();
        let mut rules = Vec::new();
        for (index, syscall) in syscalls.iter().enumerate() {
            let first = check_names(index, syscall)?;
            let action =
                scmp_action(syscall.action(), syscall.errno_ret()).map_err(|e| match e {
                    ActionError::Notify => match seccomp.listener_path() {
                        None => SeccompError::NotifyWithoutListenerPath {
                            index,
                            syscall: first.to_owned(),
                        },
                        Some(listener) => SeccompError::NotifyUnsupported {
                            syscall: first.to_owned(),
                            listener: listener.display().to_string(),
                        },
                    },
                    ActionError::ErrnoNotAllowed(errno) => {
                        SeccompError::ErrnoRetWithoutErrnoAction {
                            syscall: first.to_owned(),
                            action: syscall.action(),
                            errno,
                        }
                    }
                    ActionError::ErrnoOutOfRange(errno) => SeccompError::ErrnoOutOfRange {
                        syscall: first.to_owned(),
                        errno,
                    },
                })?;
            let condition_sets =
                condition_sets(first, syscall.args().as_deref().unwrap_or_default())?;
            if action == default_action {
                // libseccomp refuses a rule that repeats the default action; it
                // would change nothing anyway.
                debug!(
                    syscall = first,
                    action = %syscall.action(),
                    "seccomp rule with the default action skipped"
                );
                continue;
            }
            for name in syscall.names() {
                for conditions in &condition_sets {
                    rules.push(Rule {
                        syscall: name.clone(),
                        action,
                        conditions: conditions.clone(),
                    });
                }
            }
        }

        Ok(Self {
            default_action,
            spec_default,
            arches,
            flags: seccomp.flags().clone().unwrap_or_default(),
            entries: syscalls.len(),
            rules,
        })
    }

    /// Build the libseccomp filter from the checked plan.
    fn build(&self) -> Result<ScmpFilterContext, SeccompError> {
        let mut filter = self.header()?;
        self.add_rules(&mut filter)?;
        Ok(filter)
    }

    /// The filter context with its default action, attributes, architectures and flags,
    /// but no rules: enough to check everything libseccomp could refuse about the profile
    /// as a whole, cheaply.
    fn header(&self) -> Result<ScmpFilterContext, SeccompError> {
        let mut filter = ScmpFilterContext::new(self.default_action).map_err(|source| {
            SeccompError::NewFilter {
                action: self.spec_default,
                source,
            }
        })?;
        // The runtime sets no_new_privs from the spec; libseccomp must not.
        filter
            .set_ctl_nnp(false)
            .map_err(|source| SeccompError::SetAttribute {
                attribute: "SCMP_FLTATR_CTL_NNP",
                source,
            })?;
        // Every thread of the process gets the filter.
        filter
            .set_ctl_tsync(true)
            .map_err(|source| SeccompError::SetAttribute {
                attribute: "SCMP_FLTATR_CTL_TSYNC",
                source,
            })?;
        // Report the kernel's errno rather than ECANCELED when loading fails.
        if let Err(error) = filter.set_api_sysrawrc(true) {
            debug!(%error, "libseccomp cannot return raw error codes");
        }

        for &(arch, scmp) in &self.arches {
            filter
                .add_arch(scmp)
                .map_err(|source| SeccompError::UnsupportedArch { arch, source })?;
        }

        for &flag in &self.flags {
            let applied = match flag {
                // Always set above.
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Ok(()),
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true).map(drop),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    filter.set_ctl_ssb(true).map(drop)
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    filter.set_ctl_waitkill(true).map(drop)
                }
            };
            if let Err(error) = applied {
                warn!(
                    %flag,
                    %error,
                    "seccomp flag not supported by libseccomp or the kernel, ignored"
                );
            }
        }

        let optimised = (self.entries > OPTIMIZE_THRESHOLD).then(|| filter.set_ctl_optimize(2));
        if let Some(Err(error)) = optimised {
            debug!(%error, "libseccomp binary tree optimisation not available");
        }

        Ok(filter)
    }

    /// Adds the rules to a filter made by [`Plan::header`].
    fn add_rules(&self, filter: &mut ScmpFilterContext) -> Result<(), SeccompError> {
        for rule in &self.rules {
            let Ok(syscall) = ScmpSyscall::from_name(&rule.syscall) else {
                debug!(
                    syscall = %rule.syscall,
                    "syscall unknown to libseccomp, seccomp rule ignored"
                );
                continue;
            };
            filter
                .add_rule_conditional(rule.action, syscall, &rule.conditions)
                .map_err(|source| SeccompError::AddRule {
                    syscall: rule.syscall.clone(),
                    action: format!("{:?}", rule.action),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Check a rule's names and return the first, to name the rule in errors.
fn check_names(index: usize, syscall: &LinuxSyscall) -> Result<&str, SeccompError> {
    let names = syscall.names();
    if names.iter().any(String::is_empty) {
        return Err(SeccompError::EmptyName { index });
    }
    names
        .first()
        .map(String::as_str)
        .ok_or(SeccompError::EmptyNames { index })
}

/// The libseccomp action for a spec action and its optional errno.
fn scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<ScmpAction, ActionError> {
    let errno = |errno_ret: Option<u32>| -> Result<u16, ActionError> {
        errno_ret.map_or(Ok(DEFAULT_ERRNO), |errno| {
            u16::try_from(errno).map_err(|_| ActionError::ErrnoOutOfRange(errno))
        })
    };
    match action {
        LinuxSeccompAction::ScmpActErrno => return Ok(ScmpAction::Errno(errno(errno_ret)?.into())),
        LinuxSeccompAction::ScmpActTrace => return Ok(ScmpAction::Trace(errno(errno_ret)?)),
        LinuxSeccompAction::ScmpActNotify => return Err(ActionError::Notify),
        _ => {}
    }
    if let Some(errno) = errno_ret {
        return Err(ActionError::ErrnoNotAllowed(errno));
    }
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        // Errno, Trace and Notify are handled above.
        LinuxSeccompAction::ScmpActAllow
        | LinuxSeccompAction::ScmpActErrno
        | LinuxSeccompAction::ScmpActTrace
        | LinuxSeccompAction::ScmpActNotify => ScmpAction::Allow,
    })
}

/// The libseccomp architecture for a spec one; `None` for the native token, which
/// every filter has already.
fn scmp_arch(arch: Arch) -> Option<ScmpArch> {
    Some(match arch {
        Arch::ScmpArchNative => return None,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    })
}

/// The condition sets of one rule: one libseccomp rule per set.
///
/// Conditions on the same argument are alternatives, conditions on different
/// arguments must all hold: the result is the cross product of the alternatives of
/// each argument (a single empty set when there are no conditions).
fn condition_sets(
    syscall: &str,
    args: &[LinuxSeccompArg],
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    if args.len() > MAX_SYSCALL_ARGS {
        return Err(SeccompError::TooManyArgs {
            syscall: syscall.to_owned(),
            count: args.len(),
        });
    }
    // Alternatives per argument index, in the order the indices first appear.
    let mut by_index: Vec<(usize, Vec<ScmpArgCompare>)> = Vec::new();
    for arg in args {
        let compare = arg_compare(syscall, arg)?;
        match by_index.iter_mut().find(|(index, _)| *index == arg.index()) {
            Some((_, alternatives)) => alternatives.push(compare),
            None => by_index.push((arg.index(), vec![compare])),
        }
    }
    let mut sets = vec![Vec::new()];
    for (_, alternatives) in by_index {
        sets = sets
            .iter()
            .flat_map(|set: &Vec<ScmpArgCompare>| {
                alternatives.iter().map(move |&alternative| {
                    let mut set = set.clone();
                    set.push(alternative);
                    set
                })
            })
            .collect();
    }
    Ok(sets)
}

/// One argument condition. For `SCMP_CMP_MASKED_EQ`, `value` is the mask and
/// `valueTwo` the value the masked argument must equal (as runc reads it).
fn arg_compare(syscall: &str, arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, SeccompError> {
    let out_of_range = || SeccompError::ArgIndexOutOfRange {
        syscall: syscall.to_owned(),
        arg_index: arg.index(),
    };
    if arg.index() >= MAX_SYSCALL_ARGS {
        return Err(out_of_range());
    }
    let index = u32::try_from(arg.index()).map_err(|_| out_of_range())?;
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

// ---------------------------------------------------------------------------------
// The default profile, as data.
// ---------------------------------------------------------------------------------

/// Architectures as the default profile's includes and excludes name them (the Go
/// names moby's profile uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProfileArch {
    Amd64,
    X86,
    X32,
    Arm64,
    Arm,
    S390x,
    S390,
    Riscv64,
    Ppc64le,
    /// An architecture no group of the profile names.
    Other,
}

impl ProfileArch {
    /// The architecture this runtime was built for.
    fn native() -> Self {
        if cfg!(target_arch = "x86_64") && cfg!(target_pointer_width = "32") {
            Self::X32
        } else if cfg!(target_arch = "x86_64") {
            Self::Amd64
        } else if cfg!(target_arch = "x86") {
            Self::X86
        } else if cfg!(target_arch = "aarch64") {
            Self::Arm64
        } else if cfg!(target_arch = "arm") {
            Self::Arm
        } else if cfg!(target_arch = "s390x") {
            Self::S390x
        } else if cfg!(target_arch = "riscv64") {
            Self::Riscv64
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            Self::Ppc64le
        } else {
            Self::Other
        }
    }

    /// The seccomp architectures of the profile for a native architecture: the
    /// native one and the ones its kernel also runs (moby's `archMap`).
    fn seccomp_arches(self) -> &'static [Arch] {
        match self {
            Self::Amd64 | Self::X32 => {
                &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            }
            Self::X86 => &[Arch::ScmpArchX86],
            Self::Arm64 => &[Arch::ScmpArchAarch64, Arch::ScmpArchArm],
            Self::Arm => &[Arch::ScmpArchArm],
            Self::S390x => &[Arch::ScmpArchS390x, Arch::ScmpArchS390],
            Self::S390 => &[Arch::ScmpArchS390],
            Self::Riscv64 => &[Arch::ScmpArchRiscv64],
            Self::Ppc64le => &[Arch::ScmpArchPpc64le],
            Self::Other => &[Arch::ScmpArchNative],
        }
    }
}

/// A kernel version, major and minor.
type KernelVersion = (u32, u32);

/// When a group of the profile applies (`includes`) or does not (`excludes`).
#[derive(Clone, Copy, Debug)]
struct When {
    /// Includes: every one granted. Excludes: any one granted.
    caps: &'static [Capability],
    /// The native architecture is one of these (empty: no condition).
    arches: &'static [ProfileArch],
    /// Includes only: the running kernel is at least this version.
    min_kernel: Option<KernelVersion>,
}

impl When {
    /// No condition: as `includes` always holds, as `excludes` never does.
    const EMPTY: Self = Self {
        caps: &[],
        arches: &[],
        min_kernel: None,
    };
    const fn caps(caps: &'static [Capability]) -> Self {
        Self {
            caps,
            ..Self::EMPTY
        }
    }
    const fn arches(arches: &'static [ProfileArch]) -> Self {
        Self {
            arches,
            ..Self::EMPTY
        }
    }
}

/// One argument condition of a group.
#[derive(Clone, Copy, Debug)]
struct GroupArg {
    index: usize,
    value: u64,
    op: LinuxSeccompOperator,
}

/// One entry of the default profile: its syscalls get `action` when `includes`
/// holds and `excludes` does not.
#[derive(Clone, Copy, Debug)]
struct Group {
    names: &'static [&'static str],
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: &'static [GroupArg],
    includes: When,
    /// `min_kernel` is not used here.
    excludes: When,
}

impl Group {
    /// Allowed unconditionally.
    const fn allow(names: &'static [&'static str]) -> Self {
        Self {
            names,
            action: LinuxSeccompAction::ScmpActAllow,
            errno_ret: None,
            args: &[],
            includes: When::EMPTY,
            excludes: When::EMPTY,
        }
    }
    /// Allowed when every capability is granted.
    const fn allow_with(caps: &'static [Capability], names: &'static [&'static str]) -> Self {
        Self {
            includes: When::caps(caps),
            ..Self::allow(names)
        }
    }
    /// Allowed on the given native architectures.
    const fn allow_on(arches: &'static [ProfileArch], names: &'static [&'static str]) -> Self {
        Self {
            includes: When::arches(arches),
            ..Self::allow(names)
        }
    }
    /// Allowed when the argument conditions hold.
    const fn allow_if(names: &'static [&'static str], args: &'static [GroupArg]) -> Self {
        Self {
            args,
            ..Self::allow(names)
        }
    }

    /// Whether the group applies to a container with these capabilities, on this
    /// architecture and kernel (an unknown kernel counts as new enough).
    fn applies(
        &self,
        caps: &[Capability],
        arch: ProfileArch,
        kernel: Option<KernelVersion>,
    ) -> bool {
        let includes = &self.includes;
        let excludes = &self.excludes;
        includes.caps.iter().all(|cap| caps.contains(cap))
            && (includes.arches.is_empty() || includes.arches.contains(&arch))
            && includes
                .min_kernel
                .is_none_or(|min| kernel.is_none_or(|running| running >= min))
            && !excludes.caps.iter().any(|cap| caps.contains(cap))
            && !excludes.arches.contains(&arch)
    }

    /// The group as a spec entry. Fails only if oci-spec's builder does.
    fn to_syscall(self) -> Result<LinuxSyscall, oci_spec::OciSpecError> {
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(self.names.iter().map(|&name| name.to_owned()).collect());
        syscall.set_action(self.action);
        syscall.set_errno_ret(self.errno_ret);
        if !self.args.is_empty() {
            let args = self
                .args
                .iter()
                .map(|arg| {
                    LinuxSeccompArgBuilder::default()
                        .index(arg.index)
                        .value(arg.value)
                        .op(arg.op)
                        .build()
                })
                .collect::<Result<_, _>>()?;
            syscall.set_args(Some(args));
        }
        Ok(syscall)
    }
}

/// The namespace flags of `clone` that need CAP_SYS_ADMIN (0x7e020000).
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `personality` values a container may set: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26 and the 0xffffffff query.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const fn arg0_eq(value: u64) -> GroupArg {
    GroupArg {
        index: 0,
        value,
        op: LinuxSeccompOperator::ScmpCmpEq,
    }
}

const fn clone_without_namespaces(index: usize) -> GroupArg {
    GroupArg {
        index,
        value: CLONE_NAMESPACE_FLAGS,
        op: LinuxSeccompOperator::ScmpCmpMaskedEq,
    }
}

use Capability as Cap;
use ProfileArch as PA;

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls CAP_SYS_ADMIN unlocks (with it, `clone` and `clone3` are unrestricted).
const SYS_ADMIN: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// The default profile, group by group (after moby's `profiles/seccomp/default.json`).
const DEFAULT_PROFILE: &[Group] = &[
    Group::allow(ALLOWED),
    // ptrace became safe for containers with kernel 4.8 (seccomp checks after ptrace).
    Group {
        includes: When {
            min_kernel: Some((4, 8)),
            ..When::EMPTY
        },
        ..Group::allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    },
    // Any socket but AF_VSOCK (40).
    Group::allow_if(
        &["socket"],
        &[GroupArg {
            index: 0,
            value: 40,
            op: LinuxSeccompOperator::ScmpCmpNe,
        }],
    ),
    Group::allow_if(&["personality"], &[arg0_eq(PERSONALITIES[0])]),
    Group::allow_if(&["personality"], &[arg0_eq(PERSONALITIES[1])]),
    Group::allow_if(&["personality"], &[arg0_eq(PERSONALITIES[2])]),
    Group::allow_if(&["personality"], &[arg0_eq(PERSONALITIES[3])]),
    Group::allow_if(&["personality"], &[arg0_eq(PERSONALITIES[4])]),
    // Architecture-specific calls.
    Group::allow_on(&[PA::Ppc64le], &["sync_file_range2", "swapcontext"]),
    Group::allow_on(
        &[PA::Arm, PA::Arm64],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    Group::allow_on(&[PA::Amd64, PA::X32], &["arch_prctl"]),
    Group::allow_on(&[PA::Amd64, PA::X32, PA::X86], &["modify_ldt"]),
    Group::allow_on(
        &[PA::S390, PA::S390x],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    Group::allow_on(&[PA::Riscv64], &["riscv_flush_icache", "riscv_hwprobe"]),
    // Capability groups.
    Group::allow_with(&[Cap::DacReadSearch], &["open_by_handle_at"]),
    Group::allow_with(&[Cap::SysAdmin], SYS_ADMIN),
    // Without CAP_SYS_ADMIN: clone without namespace flags (s390 swaps the first two
    // arguments of clone), and clone3, whose flags seccomp cannot see, fails with
    // ENOSYS so that libc falls back to clone.
    Group {
        args: &[clone_without_namespaces(0)],
        excludes: When {
            caps: &[Cap::SysAdmin],
            arches: &[PA::S390, PA::S390x],
            min_kernel: None,
        },
        ..Group::allow(&["clone"])
    },
    Group {
        args: &[clone_without_namespaces(1)],
        includes: When::arches(&[PA::S390, PA::S390x]),
        excludes: When::caps(&[Cap::SysAdmin]),
        ..Group::allow(&["clone"])
    },
    Group {
        action: LinuxSeccompAction::ScmpActErrno,
        errno_ret: Some(libc::ENOSYS as u32),
        excludes: When::caps(&[Cap::SysAdmin]),
        ..Group::allow(&["clone3"])
    },
    Group::allow_with(&[Cap::SysBoot], &["reboot"]),
    Group::allow_with(&[Cap::SysChroot], &["chroot"]),
    Group::allow_with(
        &[Cap::SysModule],
        &["delete_module", "init_module", "finit_module"],
    ),
    Group::allow_with(&[Cap::SysPacct], &["acct"]),
    Group::allow_with(
        &[Cap::SysPtrace],
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    Group::allow_with(&[Cap::SysRawio], &["iopl", "ioperm"]),
    Group::allow_with(
        &[Cap::SysTime],
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    Group::allow_with(&[Cap::SysTtyConfig], &["vhangup"]),
    Group::allow_with(
        &[Cap::SysNice],
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    Group::allow_with(&[Cap::Syslog], &["syslog"]),
    Group::allow_with(&[Cap::Bpf], &["bpf"]),
    Group::allow_with(&[Cap::Perfmon], &["perf_event_open"]),
];

/// The default profile for given capabilities, architecture and kernel. Pure.
fn profile_for(
    granted_caps: &[Capability],
    arch: ProfileArch,
    kernel: Option<KernelVersion>,
) -> LinuxSeccomp {
    let syscalls = DEFAULT_PROFILE
        .iter()
        .filter(|group| group.applies(granted_caps, arch, kernel))
        .filter_map(|group| {
            // Leaving a group out only denies more: the default action is an error.
            group
                .to_syscall()
                .inspect_err(|error| {
                    warn!(
                        syscalls = ?group.names,
                        %error,
                        "default seccomp profile group left out"
                    );
                })
                .ok()
        })
        .collect();
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    profile.set_architectures(Some(arch.seccomp_arches().to_vec()));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// The running kernel's version from `osrelease` (`/proc/sys/kernel/osrelease`);
/// `None` if it cannot be read or parsed.
fn kernel_version(osrelease: &Path) -> Option<KernelVersion> {
    let release = std::fs::read_to_string(osrelease)
        .inspect_err(
            |error| debug!(path = %osrelease.display(), %error, "cannot read the kernel version"),
        )
        .ok()?;
    parse_kernel_version(&release)
}

/// `6.1.0-18-amd64` → `(6, 1)`.
fn parse_kernel_version(release: &str) -> Option<KernelVersion> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A seccomp section from its config.json form.
    fn spec(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    fn rules(value: serde_json::Value) -> Vec<Rule> {
        Plan::from_spec(&spec(value)).unwrap().rules
    }

    fn err(value: serde_json::Value) -> SeccompError {
        validate(&spec(value)).unwrap_err()
    }

    fn eq(index: u32, value: u64) -> ScmpArgCompare {
        ScmpArgCompare::new(index, ScmpCompareOp::Equal, value)
    }

    /// The syscall entries of a profile that name `name`.
    fn entries<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|syscall| syscall.names().iter().any(|n| n == name))
            .collect()
    }

    /// Whether `name` is allowed without condition.
    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        entries(profile, name).iter().any(|syscall| {
            syscall.action() == LinuxSeccompAction::ScmpActAllow && syscall.args().is_none()
        })
    }

    #[test]
    fn compiles_hand_written_specs() {
        let spec = spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_NATIVE"],
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                      "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chroot"], "action": "SCMP_ACT_KILL"},
                {"names": ["pivot_root"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["acct"], "action": "SCMP_ACT_TRAP"},
                {"names": ["swapon"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
                {"names": ["swapoff"], "action": "SCMP_ACT_LOG"},
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["not_a_syscall_at_all"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 15, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}
                ]},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 1, "value": 0, "op": "SCMP_CMP_NE"},
                    {"index": 0, "value": 1, "op": "SCMP_CMP_LE"}
                ]},
                {"names": ["setpriority"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 2, "value": 0, "op": "SCMP_CMP_LT"},
                    {"index": 0, "value": 0, "op": "SCMP_CMP_GE"},
                    {"index": 1, "value": 9, "op": "SCMP_CMP_GT"}
                ]}
            ]
        }));
        validate(&spec).unwrap();
        let filter = compile(&spec).unwrap();
        assert!(
            !filter.get_ctl_nnp().unwrap(),
            "libseccomp must not set no_new_privs"
        );
        assert!(
            filter.get_ctl_tsync().unwrap(),
            "the filter must synchronise threads"
        );
        assert!(filter.get_ctl_log().unwrap());
        assert_eq!(filter.get_act_default().unwrap(), ScmpAction::Allow);
    }

    #[test]
    fn compiles_with_an_errno_default_and_extra_arches() {
        let mut arches = vec!["SCMP_ARCH_NATIVE"];
        if cfg!(target_arch = "x86_64") {
            arches.extend(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
        } else if cfg!(target_arch = "aarch64") {
            arches.extend(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        }
        let spec = spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": arches,
            "syscalls": [
                {"names": ["read", "write", "exit_group", "socketcall", "_llseek"],
                 "action": "SCMP_ACT_ALLOW"},
                // Same as the default action: skipped, not refused by libseccomp.
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        let filter = compile(&spec).unwrap();
        assert_eq!(filter.get_act_default().unwrap(), ScmpAction::Errno(38));
        if cfg!(target_arch = "x86_64") {
            assert!(filter.is_arch_present(ScmpArch::X86).unwrap());
            assert!(filter.is_arch_present(ScmpArch::X32).unwrap());
        }
    }

    #[test]
    fn compiles_the_default_profile_for_any_capabilities() {
        let docker_caps = [
            Cap::Chown,
            Cap::DacOverride,
            Cap::Fsetid,
            Cap::Fowner,
            Cap::Mknod,
            Cap::NetRaw,
            Cap::Setgid,
            Cap::Setuid,
            Cap::Setfcap,
            Cap::Setpcap,
            Cap::NetBindService,
            Cap::SysChroot,
            Cap::Kill,
            Cap::AuditWrite,
        ];
        let all_caps = [
            Cap::SysAdmin,
            Cap::SysBoot,
            Cap::SysChroot,
            Cap::SysModule,
            Cap::SysPacct,
            Cap::SysPtrace,
            Cap::SysRawio,
            Cap::SysTime,
            Cap::SysTtyConfig,
            Cap::Syslog,
            Cap::SysNice,
            Cap::Bpf,
            Cap::Perfmon,
            Cap::DacReadSearch,
        ];
        for caps in [&[][..], &docker_caps[..], &all_caps[..]] {
            let profile = default_profile(caps);
            validate(&profile).unwrap();
            let filter = compile(&profile).unwrap();
            assert_eq!(filter.get_act_default().unwrap(), ScmpAction::Errno(1));
        }
        // Every architecture's variant compiles too (its arches may not be this
        // machine's, so only the plan is checked).
        for arch in [
            PA::Amd64,
            PA::X86,
            PA::Arm64,
            PA::Arm,
            PA::S390x,
            PA::Riscv64,
            PA::Ppc64le,
        ] {
            for caps in [&[][..], &all_caps[..]] {
                Plan::from_spec(&profile_for(caps, arch, Some((6, 1)))).unwrap();
            }
        }
    }

    #[test]
    fn same_index_args_become_separate_rules() {
        let rules = rules(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 131072, "op": "SCMP_CMP_EQ"}
            ]}]
        }));
        let conditions: Vec<_> = rules.iter().map(|r| r.conditions.clone()).collect();
        assert_eq!(conditions, vec![vec![eq(0, 8)], vec![eq(0, 131072)]]);
        assert!(rules.iter().all(|r| r.syscall == "personality"));
        assert!(rules.iter().all(|r| r.action == ScmpAction::Errno(1)));
    }

    #[test]
    fn different_index_args_stay_in_one_rule() {
        let rules = rules(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 15, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}
            ]}]
        }));
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].conditions,
            vec![
                eq(0, 2),
                // Masked: `value` is the mask, `valueTwo` the expected value.
                ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(15), 2),
            ]
        );
    }

    #[test]
    fn mixed_args_are_the_cross_product() {
        let rules = rules(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}
            ]}]
        }));
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.syscall.as_str(), r.conditions.clone()))
            .collect();
        let product = [vec![eq(0, 2), eq(1, 1)], vec![eq(0, 10), eq(1, 1)]];
        let want: Vec<_> = ["socket", "socketpair"]
            .into_iter()
            .flat_map(|name| product.iter().map(move |c| (name, c.clone())))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn no_args_is_one_unconditional_rule_per_name() {
        let rules = rules(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
        }));
        assert_eq!(
            rules,
            vec![
                Rule {
                    syscall: "read".into(),
                    action: ScmpAction::Allow,
                    conditions: vec![]
                },
                Rule {
                    syscall: "write".into(),
                    action: ScmpAction::Allow,
                    conditions: vec![]
                },
            ]
        );
    }

    #[test]
    fn rules_with_the_default_action_are_skipped() {
        let rules = rules(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["umount2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
            ]
        }));
        let names: Vec<_> = rules.iter().map(|r| r.syscall.as_str()).collect();
        assert_eq!(names, ["clone3", "getpid"]);
        assert_eq!(rules[0].action, ScmpAction::Errno(38));
        // SCMP_ACT_KILL and SCMP_ACT_KILL_THREAD are the same action.
        let rules = super::tests::rules(json!({
            "defaultAction": "SCMP_ACT_KILL",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"}]
        }));
        assert!(rules.is_empty());
    }

    #[test]
    fn actions_map_to_libseccomp() {
        let cases = [
            ("SCMP_ACT_KILL", None, ScmpAction::KillThread),
            ("SCMP_ACT_KILL_THREAD", None, ScmpAction::KillThread),
            ("SCMP_ACT_KILL_PROCESS", None, ScmpAction::KillProcess),
            ("SCMP_ACT_TRAP", None, ScmpAction::Trap),
            ("SCMP_ACT_ERRNO", None, ScmpAction::Errno(libc::EPERM)),
            ("SCMP_ACT_ERRNO", Some(13), ScmpAction::Errno(13)),
            ("SCMP_ACT_ERRNO", Some(0), ScmpAction::Errno(0)),
            ("SCMP_ACT_TRACE", None, ScmpAction::Trace(1)),
            ("SCMP_ACT_TRACE", Some(42), ScmpAction::Trace(42)),
            ("SCMP_ACT_LOG", None, ScmpAction::Log),
        ];
        for (action, errno_ret, want) in cases {
            let rules = rules(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getpid"], "action": action, "errnoRet": errno_ret}]
            }));
            assert_eq!(rules[0].action, want, "{action} {errno_ret:?}");
        }
    }

    #[test]
    fn rejects_an_empty_names_list() {
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": [], "action": "SCMP_ACT_ALLOW"}
            ]
        }));
        assert!(matches!(e, SeccompError::EmptyNames { index: 1 }), "{e:?}");
        assert_eq!(e.to_string(), "seccomp rule 1 has an empty names list");
    }

    #[test]
    fn rejects_an_empty_name() {
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ALLOW"}]
        }));
        assert!(matches!(e, SeccompError::EmptyName { index: 0 }), "{e:?}");
    }

    #[test]
    fn rejects_errno_ret_with_an_action_without_errno() {
        for action in [
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_LOG",
        ] {
            let e = err(json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["chroot"], "action": action, "errnoRet": 5}]
            }));
            match &e {
                SeccompError::ErrnoRetWithoutErrnoAction {
                    syscall, errno: 5, ..
                } => {
                    assert_eq!(syscall, "chroot")
                }
                other => panic!("{action}: unexpected {other:?}"),
            }
        }
        let e = err(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [{"names": ["chroot"], "action": "SCMP_ACT_KILL_THREAD", "errnoRet": 1}]
        }));
        assert_eq!(
            e.to_string(),
            "errnoRet 1 is set for syscall chroot \
             but its action SCMP_ACT_KILL_THREAD takes no errno"
        );
    }

    #[test]
    fn rejects_default_errno_ret_with_a_default_action_without_errno() {
        let e = err(json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}));
        assert!(
            matches!(
                e,
                SeccompError::DefaultErrnoRetWithoutErrnoAction {
                    action: LinuxSeccompAction::ScmpActAllow,
                    errno: 1
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_errno_out_of_range() {
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]
        }));
        let SeccompError::ErrnoOutOfRange { syscall, errno } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((syscall.as_str(), *errno), ("mkdir", 70000));
        let e = err(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}));
        assert!(
            matches!(e, SeccompError::DefaultErrnoOutOfRange { errno: 65536 }),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_more_than_six_args() {
        let args: Vec<_> = (0..7)
            .map(|i| json!({"index": i % 6, "value": i, "op": "SCMP_CMP_EQ"}))
            .collect();
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": args}]
        }));
        assert!(
            matches!(&e, SeccompError::TooManyArgs { syscall, count: 7 } if syscall == "kill"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_an_arg_index_past_the_sixth() {
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}
            ]}]
        }));
        let SeccompError::ArgIndexOutOfRange { syscall, arg_index } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((syscall.as_str(), *arg_index), ("kill", 6));
    }

    #[test]
    fn rejects_notify() {
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let SeccompError::NotifyWithoutListenerPath { index, syscall } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((*index, syscall.as_str()), (0, "mkdir"));
        let e = err(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(
            matches!(&e, SeccompError::NotifyUnsupported { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("seccomp notify"), "{e}");
        let e = err(json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/a.sock"}));
        assert!(matches!(e, SeccompError::NotifyDefaultAction), "{e:?}");
    }

    #[test]
    fn unknown_syscall_names_are_ignored() {
        validate(&spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["no_such_syscall", "read"], "action": "SCMP_ACT_ALLOW"}]
        })))
        .unwrap();
    }

    #[test]
    fn default_profile_without_sys_admin_restricts_clone_and_mounts() {
        let profile = profile_for(&[], PA::Amd64, Some((6, 1)));
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(1));
        for name in [
            "mount", "umount", "umount2", "unshare", "setns", "clone3", "bpf", "chroot",
        ] {
            assert!(!allowed(&profile, name), "{name} must not be allowed");
        }
        let clone = entries(&profile, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].value(), 0x7e02_0000);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = entries(&profile, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
    }

    #[test]
    fn default_profile_with_sys_admin_allows_clone_and_mounts() {
        let profile = profile_for(&[Cap::SysAdmin], PA::Amd64, Some((6, 1)));
        for name in [
            "mount", "umount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
        ] {
            assert!(allowed(&profile, name), "{name} must be allowed");
        }
        assert!(
            entries(&profile, "clone")
                .iter()
                .all(|s| s.args().is_none())
        );
        assert!(
            entries(&profile, "clone3")
                .iter()
                .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
        );
        assert!(!allowed(&profile, "reboot"));
    }

    #[test]
    fn default_profile_capability_groups() {
        let cases: [(Capability, &[&str]); 13] = [
            (Cap::SysBoot, &["reboot"]),
            (Cap::SysChroot, &["chroot"]),
            (
                Cap::SysModule,
                &["init_module", "finit_module", "delete_module"],
            ),
            (Cap::SysPacct, &["acct"]),
            (Cap::SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise"]),
            (Cap::SysRawio, &["iopl", "ioperm"]),
            (Cap::SysTime, &["settimeofday", "stime", "clock_settime"]),
            (Cap::SysTtyConfig, &["vhangup"]),
            (Cap::Syslog, &["syslog"]),
            (Cap::SysNice, &["mbind", "set_mempolicy", "get_mempolicy"]),
            (Cap::Bpf, &["bpf"]),
            (Cap::Perfmon, &["perf_event_open"]),
            (Cap::DacReadSearch, &["open_by_handle_at"]),
        ];
        let without = profile_for(&[], PA::Amd64, Some((6, 1)));
        for (cap, names) in cases {
            let with = profile_for(&[cap], PA::Amd64, Some((6, 1)));
            for name in names {
                assert!(allowed(&with, name), "{name} must be allowed with {cap}");
                assert!(
                    !allowed(&without, name),
                    "{name} must be denied without {cap}"
                );
            }
        }
    }

    #[test]
    fn default_profile_arch_groups() {
        let amd64 = profile_for(&[], PA::Amd64, None);
        assert!(allowed(&amd64, "arch_prctl") && allowed(&amd64, "modify_ldt"));
        assert!(!allowed(&amd64, "set_tls"));
        assert_eq!(
            amd64.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );

        let arm64 = profile_for(&[], PA::Arm64, None);
        assert!(allowed(&arm64, "set_tls") && allowed(&arm64, "arm_fadvise64_64"));
        assert!(!allowed(&arm64, "arch_prctl") && !allowed(&arm64, "modify_ldt"));
        assert_eq!(
            arm64.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );

        // s390 passes the clone flags as the second argument.
        let s390x = profile_for(&[], PA::S390x, None);
        let clone = entries(&s390x, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
        assert!(allowed(&s390x, "s390_runtime_instr"));
    }

    #[test]
    fn default_profile_common_calls() {
        let profile = profile_for(&[], PA::Amd64, Some((6, 1)));
        for name in [
            "read",
            "write",
            "openat",
            "getpid",
            "futex",
            "execve",
            "exit_group",
            "mkdir",
        ] {
            assert!(allowed(&profile, name), "{name}");
        }
        // personality: only the listed values.
        let personality: Vec<u64> = entries(&profile, "personality")
            .iter()
            .map(|s| s.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(personality, PERSONALITIES);
        // ptrace needs kernel 4.8, or CAP_SYS_PTRACE.
        assert!(allowed(&profile, "ptrace"));
        assert!(!allowed(
            &profile_for(&[], PA::Amd64, Some((4, 4))),
            "ptrace"
        ));
        assert!(allowed(
            &profile_for(&[Cap::SysPtrace], PA::Amd64, Some((4, 4))),
            "ptrace"
        ));
        // A name appears at most once in the common allow list.
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
    }

    #[test]
    fn default_profile_serialises_like_docker() {
        let profile = profile_for(&[], PA::Amd64, Some((6, 1)));
        let value = serde_json::to_value(&profile).unwrap();
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(value["defaultErrnoRet"], 1);
        let clone3 = value["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == json!(["clone3"]))
            .unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        // And back.
        let back: LinuxSeccomp = serde_json::from_value(value).unwrap();
        assert_eq!(back, profile);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("5.15.0+"), Some((5, 15)));
        assert_eq!(parse_kernel_version("6.12rc1"), Some((6, 12)));
        assert_eq!(parse_kernel_version("garbage"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osrelease");
        std::fs::write(&path, "5.10.0-28-cloud-amd64\n").unwrap();
        assert_eq!(kernel_version(&path), Some((5, 10)));
        assert_eq!(kernel_version(&dir.path().join("missing")), None);
    }

    #[test]
    fn compiled_filters_are_cached_by_profile() {
        let dir = tempfile::tempdir().unwrap();
        let profile = default_profile(&[]);
        let first = compile_cached(&profile, dir.path()).unwrap();
        assert!(!first.bpf.is_empty() && first.bpf.len() % 8 == 0);
        assert_eq!(
            first.flags & SECCOMP_FILTER_FLAG_TSYNC,
            SECCOMP_FILTER_FLAG_TSYNC
        );
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        // the second call reads the cache and gives the same program
        assert_eq!(compile_cached(&profile, dir.path()).unwrap(), first);
        assert_eq!(compile_bpf(&profile).unwrap(), first);
        // another profile gets another entry
        let other = default_profile(&[Capability::SysAdmin]);
        assert_ne!(compile_cached(&other, dir.path()).unwrap(), first);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

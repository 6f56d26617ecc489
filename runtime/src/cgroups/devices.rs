//! Device rules on cgroup v2. v2 has no devices controller: access to device nodes is
//! decided by an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup,
//! as runc and crun do it. The kernel runs it at every `open` and `mknod` of a device node
//! by a process in the cgroup (or below it); the program answers allow (1) or deny (0).
//!
//! The spec's rules keep their cgroup v1 meaning ([`Filter::from_rules`]): a rule for all
//! devices (`a`, no major and minor, `rwm`) sets the default and drops the exceptions
//! before it; any other rule is an exception, and the last exception that matches an access
//! decides it. A new cgroup starts from its parent's "allow everything".

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// `bpf_cgroup_dev_ctx.access_type`'s low half: the device type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// Its high half: the access.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One rule, resolved: `None` matches any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    typ: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: u32,
    allow: bool,
}

/// What the program decides: the exceptions, checked last first, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default_allow: bool,
    exceptions: Vec<Rule>,
}

impl Filter {
    /// The filter for `rules` applied in order to a new cgroup, or the first rule
    /// [`check`] refuses.
    pub fn from_rules<'a>(
        rules: impl IntoIterator<Item = &'a LinuxDeviceCgroup>,
    ) -> Result<Filter, String> {
        let mut filter = Filter {
            default_allow: true,
            exceptions: Vec::new(),
        };
        for r in rules {
            check(r)?;
            let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => None,
                LinuxDeviceType::B => Some(DEV_BLOCK),
                LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
                LinuxDeviceType::P => unreachable!("refused by check"),
            };
            let number = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n as i32);
            let access = match r.access().as_deref() {
                None | Some("") => ACC_ALL,
                Some(a) => a.chars().fold(0, |bits, c| {
                    bits | match c {
                        'm' => ACC_MKNOD,
                        'r' => ACC_READ,
                        _ => ACC_WRITE, // check let only r, w and m through
                    }
                }),
            };
            let rule = Rule {
                typ,
                major: number(r.major()),
                minor: number(r.minor()),
                access,
                allow: r.allow(),
            };
            if rule.typ.is_none()
                && rule.major.is_none()
                && rule.minor.is_none()
                && rule.access == ACC_ALL
            {
                filter.default_allow = rule.allow;
                filter.exceptions.clear();
            } else {
                filter.exceptions.push(rule);
            }
        }
        Ok(filter)
    }

    /// Whether the filter allows everything, so no program is needed.
    pub fn allows_all(&self) -> bool {
        self.default_allow && self.exceptions.iter().all(|r| r.allow)
    }

    /// The decision for one access (what the program computes), for tests.
    pub fn allows(&self, typ: i32, major: i32, minor: i32, access: u32) -> bool {
        let matches = |r: &&Rule| {
            r.typ.is_none_or(|t| t == typ)
                && access & !r.access == 0
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
        };
        self.exceptions
            .iter()
            .rev()
            .find(matches)
            .map_or(self.default_allow, |r| r.allow)
    }

    /// The eBPF program. Registers: r1 the context (`bpf_cgroup_dev_ctx`: access_type,
    /// major, minor, each u32), r2 the access bits, r3 the type, r4 the major, r5 the
    /// minor, r6 scratch. Each exception is a block that jumps to the next one on the first
    /// field that does not match, or returns its answer.
    fn program(&self) -> Vec<Insn> {
        let mut p = vec![
            Insn::load_u32(2, 1, 0),
            Insn::mov_reg(3, 2),
            Insn::and_imm(3, 0xffff),
            Insn::rsh_imm(2, 16),
            Insn::load_u32(4, 1, 4),
            Insn::load_u32(5, 1, 8),
        ];
        for r in self.exceptions.iter().rev() {
            // the tests, as (instructions before the jump, register, value); the jump
            // offsets need the block's length first
            let mut tests: Vec<(Vec<Insn>, u8, i32)> = Vec::new();
            if let Some(t) = r.typ {
                tests.push((vec![], 3, t));
            }
            if r.access != ACC_ALL {
                // any access bit the rule does not cover: no match
                let other = (!r.access & ACC_ALL) as i32;
                tests.push((vec![Insn::mov_reg(6, 2), Insn::and_imm(6, other)], 6, 0));
            }
            if let Some(m) = r.major {
                tests.push((vec![], 4, m));
            }
            if let Some(m) = r.minor {
                tests.push((vec![], 5, m));
            }
            let len: usize = tests.iter().map(|(pre, ..)| pre.len() + 1).sum::<usize>() + 2;
            let mut at = 0;
            for (pre, reg, value) in tests {
                at += pre.len() + 1;
                p.extend(pre);
                p.push(Insn::jne_imm(reg, value, (len - at) as i16));
            }
            p.push(Insn::mov_imm(0, i32::from(r.allow)));
            p.push(Insn::exit());
        }
        p.push(Insn::mov_imm(0, i32::from(self.default_allow)));
        p.push(Insn::exit());
        p
    }
}

/// Why a device cgroup rule is refused, if it is: its access may name only `r`, `w` and
/// `m`, and its type must be a device type the cgroup sees (`a`, `b`, `c`, `u`; not the
/// fifo type `p`), as for cgroup v1's `devices.allow`.
pub fn check(rule: &LinuxDeviceCgroup) -> Result<(), String> {
    if rule.typ() == Some(LinuxDeviceType::P) {
        return Err("type \"p\" (fifo) is not a device type the device cgroup checks".into());
    }
    if let Some(bad) = rule
        .access()
        .as_deref()
        .and_then(|a| a.chars().find(|c| !"rwm".contains(*c)))
    {
        return Err(format!("access {bad:?} is not one of r, w, m"));
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and source registers,
/// offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }
    /// `dst = *(u32 *)(src + off)` (BPF_LDX | BPF_MEM | BPF_W)
    fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x61, dst, src, off, 0)
    }
    /// `dst = src` (BPF_ALU64 | BPF_MOV | BPF_X)
    fn mov_reg(dst: u8, src: u8) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0)
    }
    /// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K)
    fn mov_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0xb7, dst, 0, 0, imm)
    }
    /// `dst &= imm` (BPF_ALU64 | BPF_AND | BPF_K)
    fn and_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x57, dst, 0, 0, imm)
    }
    /// `dst >>= imm` (BPF_ALU64 | BPF_RSH | BPF_K)
    fn rsh_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x77, dst, 0, 0, imm)
    }
    /// `if dst != imm goto +off` (BPF_JMP | BPF_JNE | BPF_K)
    fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(0x55, dst, 0, off, imm)
    }
    /// return r0 (BPF_JMP | BPF_EXIT)
    fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h)
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for BPF_PROG_LOAD (the fields up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`
    // and the size passed is its own; the kernel reads at most that many bytes and writes
    // only the fields of `cmd` (the query's count and, through `prog_ids`, a buffer the
    // caller sized).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Replaces the device programs attached to the v2 cgroup at `dir` with one for `filter`:
/// the new program is attached first, then the others detached (several attached programs
/// must all allow an access, so an `update` must not leave the old one behind). A filter
/// that allows everything leaves no program.
pub fn apply(dir: &Path, filter: &Filter) -> std::io::Result<()> {
    let cgroup = std::fs::File::open(dir)?;
    let cgroup_fd = cgroup.as_raw_fd() as u32;
    let new = if filter.allows_all() {
        None
    } else {
        Some(load(filter)?)
    };
    if let Some(prog) = &new {
        bpf(
            BPF_PROG_ATTACH,
            &mut AttachAttr {
                target_fd: cgroup_fd,
                attach_bpf_fd: prog.as_raw_fd() as u32,
                attach_type: BPF_CGROUP_DEVICE,
                attach_flags: BPF_F_ALLOW_MULTI,
            },
        )?;
    }
    let new_id = new.as_ref().map(prog_id).transpose()?;
    for id in attached(cgroup_fd)? {
        if Some(id) == new_id {
            continue;
        }
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get)?;
        // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new descriptor that nothing else owns.
        let old = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        bpf(
            BPF_PROG_DETACH,
            &mut AttachAttr {
                target_fd: cgroup_fd,
                attach_bpf_fd: old.as_raw_fd() as u32,
                attach_type: BPF_CGROUP_DEVICE,
                attach_flags: 0,
            },
        )?;
    }
    Ok(())
}

fn load(filter: &Filter) -> std::io::Result<OwnedFd> {
    let insns = filter.program();
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"skiff_device");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("load the device program: {e}")))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The id of a loaded program (BPF_OBJ_GET_INFO_BY_FD).
fn prog_id(prog: &OwnedFd) -> std::io::Result<u32> {
    // struct bpf_prog_info starts with type and id; the kernel fills what fits in `info_len`
    let mut info = [0u32; 2];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info[1])
}

/// The ids of the device programs attached to the cgroup.
fn attached(cgroup_fd: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut q = QueryAttr {
        target_fd: cgroup_fd,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    ids.truncate(q.prog_cnt as usize);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow)
            .set_typ(Some(typ))
            .set_major((major >= 0).then_some(major))
            .set_minor((minor >= 0).then_some(minor))
            .set_access(Some(access.to_string()));
        r
    }

    #[test]
    fn rules_keep_their_v1_meaning() {
        use LinuxDeviceType::{A, B, C};
        // runc's default spec: deny everything, then the standard nodes
        let rules = [
            rule(false, A, -1, -1, "rwm"),
            rule(true, C, 1, 3, "rwm"),
            rule(true, C, 136, -1, "rw"),
            rule(true, B, -1, -1, "m"),
            rule(false, C, 136, 4, "w"),
        ];
        let f = Filter::from_rules(&rules).unwrap();
        assert!(!f.allows_all());
        assert!(f.allows(DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE)); // /dev/null
        assert!(!f.allows(DEV_CHAR, 1, 5, ACC_READ)); // /dev/zero: the default
        assert!(f.allows(DEV_CHAR, 136, 9, ACC_WRITE)); // any pts
        assert!(!f.allows(DEV_CHAR, 136, 9, ACC_MKNOD)); // but not mknod of one
        assert!(!f.allows(DEV_CHAR, 136, 4, ACC_WRITE)); // the later deny wins
        assert!(f.allows(DEV_CHAR, 136, 4, ACC_READ));
        assert!(f.allows(DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(!f.allows(DEV_BLOCK, 8, 0, ACC_READ));
        // a rule for all devices resets: what came before it is gone
        let reset = [rule(true, C, 1, 5, "rwm"), rule(false, A, -1, -1, "rwm")];
        assert!(
            !Filter::from_rules(&reset)
                .unwrap()
                .allows(DEV_CHAR, 1, 5, ACC_READ)
        );
        // no rules, or only allows: everything, and no program
        assert!(Filter::from_rules(&[]).unwrap().allows_all());
        assert!(
            Filter::from_rules(&[rule(true, C, 1, 3, "rwm")])
                .unwrap()
                .allows_all()
        );
        // bad rules are refused, not skipped
        let err = Filter::from_rules(&[rule(true, C, 1, 3, "rx")]).unwrap_err();
        assert!(err.contains("'x'"), "{err}");
        assert!(Filter::from_rules(&[rule(true, LinuxDeviceType::P, 1, 3, "r")]).is_err());
    }

    #[test]
    fn program_blocks_jump_to_the_next_rule() {
        let f = Filter::from_rules(&[
            rule(false, LinuxDeviceType::A, -1, -1, "rwm"),
            rule(true, LinuxDeviceType::C, 1, 3, "rw"),
        ])
        .unwrap();
        let p = f.program();
        // 6 of context, one block (type, access: 3, major, minor, answer: 2), the default
        assert_eq!(p.len(), 6 + 8 + 2);
        let block = &p[6..14];
        // each test jumps past the rest of its block, to the default
        assert_eq!(block[0], Insn::jne_imm(3, DEV_CHAR, 7));
        assert_eq!(block[3], Insn::jne_imm(6, 0, 4));
        assert_eq!(block[4], Insn::jne_imm(4, 1, 3));
        assert_eq!(block[5], Insn::jne_imm(5, 3, 2));
        assert_eq!(&block[6..], &[Insn::mov_imm(0, 1), Insn::exit()]);
        assert_eq!(&p[14..], &[Insn::mov_imm(0, 0), Insn::exit()]);
    }
}

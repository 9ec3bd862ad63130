//! `--learn`: record which files a probe's program (and its children) opens, executes, stats,
//! reads as a link or checks for, with ptrace from PID 1 of the sandbox (fanotify would need
//! privileges pare does not want). Each path is resolved like the kernel saw it (relative names
//! against the process's cwd or the directory fd), kept with whether the call succeeded, and
//! bounded in number. Uses PTRACE_GET_SYSCALL_INFO, so one code path serves every architecture.
//!
//! Where pare knows the architecture's audit number (x86_64, aarch64), the program is started
//! under a seccomp filter that stops it for the tracer only at the path syscalls above
//! (`SECCOMP_RET_TRACE`); every other syscall runs at full speed, where plain `PTRACE_SYSCALL`
//! would stop it twice at each one. Syscalls of another ABI (e.g. i386 programs on x86_64) are
//! let through unrecorded by the filter.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Most distinct paths recorded.
pub const MAX_PATHS: usize = 100_000;
/// Most bytes of path names recorded.
pub const MAX_PATH_BYTES: usize = 16 << 20;

/// (syscall number, index of the dirfd argument if any, index of the path argument).
fn path_syscalls() -> Vec<(i64, Option<usize>, usize)> {
    let mut v = vec![
        (libc::SYS_openat, Some(0), 1),
        (libc::SYS_openat2, Some(0), 1),
        (libc::SYS_execve, None, 0),
        (libc::SYS_execveat, Some(0), 1),
        (libc::SYS_newfstatat, Some(0), 1),
        (libc::SYS_statx, Some(0), 1),
        (libc::SYS_faccessat, Some(0), 1),
        (libc::SYS_faccessat2, Some(0), 1),
        (libc::SYS_readlinkat, Some(0), 1),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_open, None, 0),
        (libc::SYS_stat, None, 0),
        (libc::SYS_lstat, None, 0),
        (libc::SYS_access, None, 0),
        (libc::SYS_readlink, None, 0),
    ]);
    v
}

/// `AUDIT_ARCH_*` of the host, as seccomp reports it (`None`: no filter, every syscall stops).
const AUDIT_ARCH: Option<u32> = if cfg!(target_arch = "x86_64") {
    Some(0xC000_003E)
} else if cfg!(target_arch = "aarch64") {
    Some(0xC000_00B7)
} else {
    None
};

/// The host's `AUDIT_ARCH_*`, where pare knows it.
pub fn host_arch() -> Option<u32> {
    AUDIT_ARCH
}

/// Whether the program runs under the filter (and the tracer waits for seccomp stops).
pub fn filtered() -> bool {
    AUDIT_ARCH.is_some()
}

/// The BPF program: the host's ABI and one of the path syscalls → `SECCOMP_RET_TRACE`,
/// anything else → allow.
fn filter_program(arch: u32) -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8| libc::sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf: 0,
        k,
    };
    let nrs: Vec<u32> = path_syscalls()
        .iter()
        .map(|(nr, _, _)| *nr as u32)
        .collect();
    let n = nrs.len();
    let mut f = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, 4), // seccomp_data.arch
        jeq(arch, 1),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
    ];
    // fstat() is newfstatat(fd, "", buf, AT_EMPTY_PATH) (statx likewise): no name to record,
    // and the most frequent of these calls; let them through. (Low word of the flags argument:
    // seccomp_data.args starts at byte 16, both hosts are little-endian.)
    for (nr, flags_arg) in [(libc::SYS_newfstatat, 3u32), (libc::SYS_statx, 2)] {
        f.extend([
            libc::sock_filter {
                code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
                jt: 0,
                jf: 4,
                k: nr as u32,
            },
            stmt(BPF_LD | BPF_W | BPF_ABS, 16 + 8 * flags_arg),
            libc::sock_filter {
                code: (BPF_JMP | libc::BPF_JSET | BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: libc::AT_EMPTY_PATH as u32,
            },
            stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
            stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_TRACE),
        ]);
    }
    for (i, nr) in nrs.iter().enumerate() {
        // A match skips the jumps after it and the ALLOW, landing on TRACE.
        f.push(jeq(*nr, (n - i) as u8));
    }
    f.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    f.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_TRACE));
    f
}

/// In the program's process, after `no_new_privs` and once the tracer is attached (without a
/// tracer, a traced syscall fails with ENOSYS): install the filter, inherited by every child.
/// With `every`, every system call of every ABI stops once (to record which calls the program
/// makes, for a seccomp profile).
pub fn install_filter(every: bool) -> Result<(), String> {
    let mut f = if every {
        vec![super::seccomp::ret(libc::SECCOMP_RET_TRACE)]
    } else {
        match AUDIT_ARCH {
            Some(arch) => filter_program(arch),
            None => return Ok(()),
        }
    };
    super::seccomp::load(&mut f).map_err(|e| format!("install the learn filter: {e}"))
}

/// A NUL-terminated string at `addr` in `pid`'s memory (at most 4 KiB), read with one
/// `process_vm_readv` split at the page boundary (a transfer stops at the first unmapped piece).
fn read_path(pid: Pid, addr: u64) -> Option<String> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    const MAX: usize = 4096;
    const PAGE: u64 = 4096;
    let first = ((PAGE - addr % PAGE) as usize).min(MAX);
    let mut remote = vec![RemoteIoVec {
        base: addr as usize,
        len: first,
    }];
    if first < MAX {
        remote.push(RemoteIoVec {
            base: addr as usize + first,
            len: MAX - first,
        });
    }
    let mut buf = vec![0u8; MAX];
    let got = process_vm_readv(pid, &mut [std::io::IoSliceMut::new(&mut buf)], &remote).ok()?;
    let end = buf[..got].iter().position(|b| *b == 0)?;
    buf.truncate(end);
    String::from_utf8(buf).ok()
}

/// `path` as the kernel resolves its start: absolute, or under the cwd / the directory fd.
fn absolute(pid: Pid, dirfd: Option<u64>, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return Some(path.to_string());
    }
    let base = match dirfd {
        Some(fd) if fd as i32 != libc::AT_FDCWD => {
            std::fs::read_link(format!("/proc/{pid}/fd/{}", fd as i32)).ok()?
        }
        _ => std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
    };
    let base = base.to_str()?.trim_end_matches('/').to_string();
    Some(if path.is_empty() {
        base
    } else {
        format!("{base}/{path}")
    })
}

/// A path syscall's name, resolved in `pid`, if it is one pare records.
fn entry_path(
    wanted: &HashMap<i64, (Option<usize>, usize)>,
    pid: Pid,
    nr: i64,
    args: &[u64; 6],
) -> Option<String> {
    let (dirfd, arg) = wanted.get(&nr)?;
    read_path(pid, args[*arg])
        .filter(|p| !p.is_empty())
        .and_then(|p| absolute(pid, dirfd.map(|i| args[i]), &p))
        .filter(|p| p.starts_with('/'))
}

/// Trace `child` (stopped by its own SIGSTOP after PTRACE_TRACEME, and about to install the
/// filter when [`filtered`]) and its descendants until it exits; write one line per path
/// (`1\tPATH` there, `0\tPATH` looked up and absent) to `out`. Returns the child's exit status
/// (128 + N for a signal).
///
/// Whether a name is there is looked up by the tracer at the syscall's entry (the tracer shares
/// the sandbox's root), not read from the syscall's result: one stop per recorded call instead
/// of two. A name the program creates itself is then absent, as it is from the image; a name
/// the program may not open is there, as it is in the image.
///
/// With `every` (the filter stops every call), each (ABI, number) seen is written too, as
/// `S\tARCH\tNR` lines.
pub fn trace(child: Pid, out: &mut std::fs::File, every: bool) -> Result<i32, String> {
    let e = |what: &'static str| move |err: nix::Error| format!("{what}: {}", err.desc());
    let filtered = filtered() || every;
    let mut calls: std::collections::BTreeSet<(u32, i64)> = Default::default();
    waitpid(child, Some(WaitPidFlag::__WALL)).map_err(e("wait for the traced program"))?;
    let mut options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL;
    if filtered {
        options |= Options::PTRACE_O_TRACESECCOMP;
    }
    ptrace::setoptions(child, options).map_err(e("ptrace options"))?;
    let wanted: HashMap<i64, (Option<usize>, usize)> = path_syscalls()
        .into_iter()
        .map(|(nr, d, p)| (nr, (d, p)))
        .collect();
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    let mut bytes = 0usize;
    // Filtered, a process runs freely between recorded calls; unfiltered, it stops at each
    // syscall's entry and exit.
    let resume = |pid: Pid, sig: Option<Signal>| {
        let _ = if filtered {
            ptrace::cont(pid, sig)
        } else {
            ptrace::syscall(pid, sig)
        };
    };
    // Each new path or call is written as it is seen: a server stopped at the time limit
    // (SIGKILL, no chance to flush) keeps what it used until then.
    let mut record = |pid: Pid, arch: u32, nr: i64, args: &[u64; 6]| {
        if every && calls.insert((arch, nr)) {
            let _ = writeln!(out, "S\t{arch}\t{nr}");
        }
        // Path calls are the host ABI's numbers.
        if AUDIT_ARCH.is_some_and(|a| a != arch) {
            return;
        }
        let Some(path) = entry_path(&wanted, pid, nr, args) else {
            return;
        };
        if seen.len() < MAX_PATHS
            && bytes + path.len() <= MAX_PATH_BYTES
            && !seen.contains_key(&path)
        {
            let there = std::fs::symlink_metadata(&path).is_ok();
            bytes += path.len();
            if !path.contains('\n') {
                let _ = writeln!(out, "{}\t{path}", if there { 1 } else { 0 });
            }
            seen.insert(path, there);
        }
    };
    resume(child, None);
    let status = loop {
        let st = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(st) => st,
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECHILD) => break 0,
            Err(err) => return Err(format!("wait: {}", err.desc())),
        };
        match st {
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_SECCOMP) => {
                if let Ok(info) = ptrace::syscall_info(pid)
                    && info.op == libc::PTRACE_SYSCALL_INFO_SECCOMP
                {
                    // SAFETY: the union member read is the one `op` says the kernel filled.
                    let (nr, args) = unsafe { (info.u.seccomp.nr as i64, info.u.seccomp.args) };
                    record(pid, info.arch, nr, &args);
                }
                resume(pid, None);
            }
            WaitStatus::PtraceSyscall(pid) => {
                if let Ok(info) = ptrace::syscall_info(pid)
                    && info.op == libc::PTRACE_SYSCALL_INFO_ENTRY
                {
                    // SAFETY: as above.
                    let (nr, args) = unsafe { (info.u.entry.nr as i64, info.u.entry.args) };
                    record(pid, info.arch, nr, &args);
                }
                resume(pid, None);
            }
            WaitStatus::PtraceEvent(pid, _, _) => resume(pid, None),
            WaitStatus::Stopped(pid, sig) => {
                // New children start stopped; other signals are delivered.
                let deliver = (sig != Signal::SIGSTOP && sig != Signal::SIGTRAP).then_some(sig);
                resume(pid, deliver);
            }
            WaitStatus::Exited(pid, code) if pid == child => break code,
            WaitStatus::Signaled(pid, sig, _) if pid == child => break 128 + sig as i32,
            _ => {}
        }
    };
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump of the filter lands on an instruction, and every path ends in a return.
    #[test]
    fn the_filter_program_is_well_formed() {
        let f = filter_program(0xC000_003E);
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        assert_eq!(f.last().map(|i| i.code), Some(ret));
        assert_eq!(f.last().map(|i| i.k), Some(libc::SECCOMP_RET_TRACE));
        for (i, ins) in f.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(
                    i + 1 + (ins.jt as usize) < f.len(),
                    "jt of {i} leaves the program"
                );
                assert!(
                    i + 1 + (ins.jf as usize) < f.len(),
                    "jf of {i} leaves the program"
                );
            }
        }
        // Each path syscall reaches a TRACE return: follow its path through the program.
        let run = |nr: u32, flags: u32| -> u32 {
            let mut pc = 0;
            let mut acc = 0u32;
            loop {
                let ins = &f[pc];
                match ins.code & 0x07 {
                    0x00 => {
                        acc = match ins.k {
                            0 => nr,
                            4 => 0xC000_003E,
                            _ => flags,
                        }
                    }
                    0x05 => {
                        let op = ins.code & 0xf0;
                        let hit = if op == libc::BPF_JSET as u16 {
                            acc & ins.k != 0
                        } else {
                            acc == ins.k
                        };
                        pc += 1 + if hit { ins.jt } else { ins.jf } as usize;
                        continue;
                    }
                    0x06 => return ins.k,
                    other => panic!("unexpected class {other}"),
                }
                pc += 1;
            }
        };
        for (nr, _, _) in path_syscalls() {
            assert_eq!(run(nr as u32, 0), libc::SECCOMP_RET_TRACE, "syscall {nr}");
        }
        assert_eq!(run(libc::SYS_read as u32, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            run(libc::SYS_newfstatat as u32, libc::AT_EMPTY_PATH as u32),
            libc::SECCOMP_RET_ALLOW
        );
    }
}

//! `--learn`: record which files a probe's program (and its children) opens, executes, stats,
//! reads as a link or checks for, with ptrace from PID 1 of the sandbox (fanotify would need
//! privileges pare does not want). Each path is resolved like the kernel saw it (relative names
//! against the process's cwd or the directory fd), kept with whether the call succeeded, and
//! bounded in number. Uses PTRACE_GET_SYSCALL_INFO, so one code path serves every architecture.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt;

use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Most distinct paths recorded.
pub const MAX_PATHS: usize = 100_000;

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

#[cfg(target_arch = "x86_64")]
fn is_readlink(nr: i64) -> bool {
    nr == libc::SYS_readlink
}

#[cfg(not(target_arch = "x86_64"))]
fn is_readlink(_: i64) -> bool {
    false
}

/// A NUL-terminated string at `addr` in `pid`'s memory (at most 4 KiB).
fn read_path(pid: Pid, addr: u64) -> Option<String> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < buf.len() {
        let n = mem.read_at(&mut buf[got..], addr + got as u64).ok()?;
        if n == 0 {
            break;
        }
        if let Some(end) = buf[got..got + n].iter().position(|b| *b == 0) {
            buf.truncate(got + end);
            return String::from_utf8(buf).ok();
        }
        got += n;
    }
    None
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

/// Trace `child` (stopped by its own SIGSTOP after PTRACE_TRACEME) and its descendants until it
/// exits; write one line per path (`1\tPATH` found, `0\tPATH` looked up and absent) to `out`.
/// Returns the child's exit status (128 + N for a signal).
pub fn trace(child: Pid, out: &mut std::fs::File) -> Result<i32, String> {
    let e = |what: &'static str| move |err: nix::Error| format!("{what}: {}", err.desc());
    waitpid(child, Some(WaitPidFlag::__WALL)).map_err(e("wait for the traced program"))?;
    ptrace::setoptions(
        child,
        Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL,
    )
    .map_err(e("ptrace options"))?;
    ptrace::syscall(child, None).map_err(e("ptrace"))?;
    let wanted: HashMap<i64, (Option<usize>, usize)> = path_syscalls()
        .into_iter()
        .map(|(nr, d, p)| (nr, (d, p)))
        .collect();
    let mut pending: HashMap<Pid, (i64, String)> = HashMap::new();
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    let status = loop {
        let st = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(st) => st,
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECHILD) => break 0,
            Err(err) => return Err(format!("wait: {}", err.desc())),
        };
        match st {
            WaitStatus::PtraceSyscall(pid) => {
                if let Ok(info) = ptrace::syscall_info(pid) {
                    // SAFETY: the union member read is the one `op` says the kernel filled.
                    unsafe {
                        if info.op == libc::PTRACE_SYSCALL_INFO_ENTRY {
                            let nr = info.u.entry.nr as i64;
                            if let Some((dirfd, arg)) = wanted.get(&nr) {
                                let a = info.u.entry.args;
                                if let Some(p) = read_path(pid, a[*arg])
                                    .filter(|p| !p.is_empty())
                                    .and_then(|p| absolute(pid, dirfd.map(|i| a[i]), &p))
                                    .filter(|p| p.starts_with('/'))
                                {
                                    pending.insert(pid, (nr, p));
                                }
                            }
                        } else if info.op == libc::PTRACE_SYSCALL_INFO_EXIT
                            && let Some((nr, p)) = pending.remove(&pid)
                            && (seen.len() < MAX_PATHS || seen.contains_key(&p))
                        {
                            // readlink of something that is not a link: it is there.
                            let readlink = nr == libc::SYS_readlinkat || is_readlink(nr);
                            let ok = info.u.exit.is_error == 0
                                || (readlink && info.u.exit.sval == -(libc::EINVAL as i64));
                            let e = seen.entry(p).or_insert(false);
                            *e |= ok;
                        }
                    }
                }
                let _ = ptrace::syscall(pid, None);
            }
            WaitStatus::PtraceEvent(pid, _, _) => {
                // execve's exit stop does not come as a syscall exit for the old image.
                pending.remove(&pid);
                let _ = ptrace::syscall(pid, None);
            }
            WaitStatus::Stopped(pid, sig) => {
                // New children start stopped; other signals are delivered.
                let deliver = (sig != Signal::SIGSTOP && sig != Signal::SIGTRAP).then_some(sig);
                let _ = ptrace::syscall(pid, deliver);
            }
            WaitStatus::Exited(pid, code) if pid == child => break code,
            WaitStatus::Signaled(pid, sig, _) if pid == child => break 128 + sig as i32,
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                pending.remove(&pid);
            }
            _ => {}
        }
    };
    let mut w = std::io::BufWriter::new(out);
    for (p, ok) in &seen {
        if p.contains('\n') {
            continue;
        }
        let _ = writeln!(w, "{}\t{p}", if *ok { 1 } else { 0 });
    }
    let _ = w.flush();
    Ok(status)
}

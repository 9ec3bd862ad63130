//! The sandbox probes run in: the only place pare runs image code, which is hostile until
//! proven otherwise. A helper process (pare itself, re-executed as `pare __sandbox`, so the
//! namespace calls happen in a fresh single-threaded process) enters a new user namespace
//! (always: image code never runs as host uid 0, see [`super::idmap`]), waits while pare
//! writes its id maps and moves it into a cgroup ([`super::cgroup`]), then enters new mount,
//! PID, network (loopback only), IPC, UTS and cgroup namespaces. PID 1 of the new PID
//! namespace copies the materialized tree into a size-bounded tmpfs root, mounts a masked and
//! read-only `/proc` and `/sys` and a minimal `/dev` ([`super::mounts`]), `pivot_root`s, brings
//! `lo` up, sets resource limits, and starts the program as the image's user with no
//! capabilities, `no_new_privs` and the default seccomp filter ([`super::seccomp`]). When the
//! program ends, or the time limit kills PID 1, every process it left goes with the namespace.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use serde::{Deserialize, Serialize};

use super::mounts::errno;

pub use super::idmap::Mapping;

/// Exit status of the helper when the sandbox could not be set up (its stderr says why).
pub const SETUP_FAILED: i32 = 125;
/// Exit status when the time limit killed the program.
pub const TIMED_OUT: i32 = 124;
/// Marks the helper's own error lines on stderr.
pub const ERROR_MARK: &str = "pare-sandbox: ";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub seconds: u64,
    /// RLIMIT_AS.
    pub address_space: u64,
    /// RLIMIT_NPROC (processes of the run user).
    pub processes: u64,
    /// RLIMIT_FSIZE.
    pub file_size: u64,
    /// stdout and stderr bytes kept (the rest is counted, not kept).
    pub output: u64,
    /// Memory of the whole sandbox beyond its tmpfs root (cgroup `memory.max`).
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// Bytes the program may write into its root beyond the image (the tmpfs's margin).
    #[serde(default = "default_scratch")]
    pub scratch: u64,
}

fn default_memory() -> u64 {
    4 << 30
}

fn default_scratch() -> u64 {
    1 << 30
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            seconds: 60,
            address_space: 4 << 30,
            processes: 256,
            file_size: 1 << 30,
            output: 4 << 20,
            memory: default_memory(),
            scratch: default_scratch(),
        }
    }
}

/// What to run, where and as whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The materialized root (a directory pare made and owns).
    pub root: PathBuf,
    pub argv: Vec<String>,
    /// `NAME=VALUE`, the image's Env.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    /// Start the program as a server and GET this from it on the sandbox's loopback; the
    /// answer is written to `http_out` (a file outside the root, opened before `pivot_root`).
    #[serde(default)]
    pub http: Option<HttpProbe>,
    #[serde(default)]
    pub http_out: Option<PathBuf>,
    /// `--learn`: record the paths the program uses into this file (outside the root).
    #[serde(default)]
    pub learn_out: Option<PathBuf>,
    /// With `learn_out`: record every system call too (for `--seccomp-profile`).
    #[serde(default)]
    pub learn_syscalls: bool,
    /// `--seccomp FILE`: a profile loaded on top of the default filter.
    #[serde(default)]
    pub profile: Option<super::profile::Program>,
    /// How ids are mapped ([`Mapping::choose`]).
    pub mapping: Mapping,
    /// Where ownership is faithful: the image owners to set on the sandbox's copy (root-owned
    /// entries are left out).
    #[serde(default)]
    pub owners: Vec<super::idmap::Owner>,
    /// Bytes and inodes of the tmpfs root (the image's and the scratch margin).
    pub size: u64,
    pub inodes: u64,
}

/// `--http-probe PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbe {
    pub port: u16,
    pub path: String,
    /// `--learn-tcp PORT`: only wait until something listens on the port (no request); the
    /// run counts as answered (status 200) once it does.
    #[serde(default)]
    pub listen_only: bool,
}

impl HttpProbe {
    /// `PORT/PATH` (e.g. `80/`, `8080/healthz`).
    pub fn parse(s: &str) -> Option<HttpProbe> {
        let (port, path) = match s.split_once('/') {
            Some((p, rest)) => (p, format!("/{rest}")),
            None => (s, "/".to_string()),
        };
        let port = port.parse().ok().filter(|p| *p > 0)?;
        (!path.contains(char::is_whitespace)).then_some(HttpProbe {
            port,
            path,
            listen_only: false,
        })
    }
}

/// The result of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// The program's exit code (128 + N for signal N), `None` when it timed out.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    #[serde(with = "lossy")]
    pub stdout: Vec<u8>,
    #[serde(with = "lossy")]
    pub stderr: Vec<u8>,
    /// Output bytes past the limit, not kept.
    pub truncated: u64,
    pub seconds: f64,
    /// `--http-probe`: the server's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAnswer>,
    /// `--learn`: each path the program used, and whether it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<Vec<(String, bool)>>,
    /// `--learn` for a seccomp profile: the names of the system calls the program made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<String>>,
    /// What bounded the whole sandbox's memory and processes: a cgroup, or only the
    /// per-process rlimits (and why no cgroup could be made).
    pub bounded_by: String,
}

/// An HTTP answer: its status and body.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpAnswer {
    pub status: u16,
    #[serde(with = "lossy")]
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn parse(raw: &[u8]) -> Option<HttpAnswer> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(HttpAnswer {
            status,
            body: raw[end + 4..].to_vec(),
        })
    }
}

mod lossy {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper: {0}")]
    Spawn(std::io::Error),
    #[error("cannot set up the sandbox: {0}")]
    Setup(String),
}

/// A thread reading `r` to its end, keeping its first `limit` bytes: what it kept, and how
/// many bytes it dropped.
fn read_bounded(
    mut r: Box<dyn Read + Send>,
    limit: u64,
) -> std::thread::JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        let mut buf = [0u8; 64 << 10];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = (limit as usize).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            dropped += (n - n.min(room)) as u64;
        }
        (kept, dropped)
    })
}

/// Wait for the helper to end (`ended`: its status when already known), killing it once
/// `deadline` has passed since `started`: its exit code (128 + the signal that ended it).
fn wait_helper(
    pid: Pid,
    mut ended: Option<WaitStatus>,
    started: Instant,
    deadline: Duration,
) -> Result<Option<i32>, SandboxError> {
    Ok(loop {
        if let Some(st) = ended.take() {
            match st {
                WaitStatus::Exited(_, c) => break Some(c),
                WaitStatus::Signaled(_, s, _) => break Some(128 + s as i32),
                _ => {}
            }
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if started.elapsed() > deadline => {
                let _ = kill(pid, Signal::SIGKILL);
                ended = waitpid(pid, None).ok();
            }
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => ended = Some(st),
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(SandboxError::Spawn(e.into())),
        }
    })
}

/// Run `spec` in a new sandbox and wait for it (bounded by its limits).
pub fn run(spec: &Spec, stdin: &[u8]) -> Result<Outcome, SandboxError> {
    use std::process::{Command, Stdio};
    let json = serde_json::to_vec(spec).map_err(|e| SandboxError::Setup(e.to_string()))?;
    // The spec goes in a file only pare can read (the helper removes it), not in the
    // environment, which the sandboxed program could read from /proc/1/environ.
    let mut file = tempfile::Builder::new()
        .prefix("pare-sandbox-")
        .tempfile()
        .map_err(SandboxError::Spawn)?;
    std::io::Write::write_all(&mut file, &json).map_err(SandboxError::Spawn)?;
    let (_, spec_path) = file.keep().map_err(|e| SandboxError::Spawn(e.error))?;
    let exe = std::env::current_exe().map_err(SandboxError::Spawn)?;
    let started = Instant::now();
    let spawned = Command::new(exe)
        .arg("__sandbox")
        .arg(&spec_path)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&spec_path);
            return Err(SandboxError::Spawn(e));
        }
    };
    let limit = spec.limits.output;
    let out = read_bounded(Box::new(child.stdout.take().expect("piped")), limit);
    let err = read_bounded(Box::new(child.stderr.take().expect("piped")), limit);
    if let Some(mut w) = child.stdin.take() {
        let input = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut w, &input);
        });
    }
    let pid = Pid::from_raw(child.id() as i32);
    // Made once the helper runs (it waits for it below), so a failed spawn leaves none.
    let mut cgroup = super::cgroup::Cgroup::create(
        spec.limits.memory.saturating_add(spec.size),
        spec.limits.processes,
    );
    // Setup failed before the program ran: end the helper, remove what was made for it.
    let abandon = |cgroup: Result<super::cgroup::Cgroup, String>| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let _ = std::fs::remove_file(&spec_path);
        if let Ok(cg) = cgroup {
            cg.remove();
        }
    };
    // The helper stops itself once its user namespace exists; its id maps are written from
    // here (as root directly, else with the setuid newuidmap, which checks /etc/subuid) and it
    // is moved into the sandbox's cgroup, then it goes on.
    let mut ended = None;
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(..)) => {
            let attached = match &cgroup {
                Ok(cg) => cg.attach(child.id()),
                Err(e) => Err(e.clone()),
            };
            if let Err(e) = attached
                && let Ok(cg) = std::mem::replace(&mut cgroup, Err(e.clone()))
            {
                cg.remove();
            }
            if let Err(e) = super::idmap::write_maps(child.id(), &spec.mapping) {
                abandon(cgroup);
                return Err(SandboxError::Setup(e));
            }
            let _ = kill(pid, Signal::SIGCONT);
        }
        Ok(st) => ended = Some(st),
        Err(e) => {
            abandon(cgroup);
            return Err(SandboxError::Spawn(e.into()));
        }
    }
    // The helper enforces the time limit; this is the backstop should it hang itself.
    let deadline = Duration::from_secs(spec.limits.seconds + 30);
    let status = wait_helper(pid, ended, started, deadline)?;
    // The helper removed it, unless it died first.
    let _ = std::fs::remove_file(&spec_path);
    let bounded_by = match cgroup {
        Ok(cg) => {
            let d = cg.describe.clone();
            cg.remove();
            d
        }
        Err(e) => format!("rlimits only (no cgroup could be made: {e})"),
    };
    let (stdout, d1) = out.join().unwrap_or_default();
    let (stderr, d2) = err.join().unwrap_or_default();
    let code = status;
    if code == Some(SETUP_FAILED) {
        let text = String::from_utf8_lossy(&stderr);
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix(ERROR_MARK)) {
            return Err(SandboxError::Setup(line.to_string()));
        }
    }
    let timed_out = code == Some(TIMED_OUT)
        && String::from_utf8_lossy(&stderr).contains(&format!("{ERROR_MARK}timed out"));
    let http = spec
        .http_out
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|raw| HttpAnswer::parse(&raw));
    let learned = spec
        .learn_out
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let observed = learned.as_ref().map(|t| {
        t.lines()
            .filter(|l| !l.starts_with("S\t"))
            .filter_map(|l| l.split_once('\t'))
            .map(|(ok, p)| (p.to_string(), ok == "1"))
            .collect()
    });
    let syscalls = learned.filter(|_| spec.learn_syscalls).map(|t| {
        let names: std::collections::BTreeSet<String> = t
            .lines()
            .filter_map(|l| l.strip_prefix("S\t")?.split_once('\t'))
            .filter_map(|(a, n)| super::profile::name(a.parse().ok()?, n.parse().ok()?))
            .map(String::from)
            .collect();
        names.into_iter().collect()
    });
    Ok(Outcome {
        exit_code: if timed_out { None } else { code },
        observed,
        timed_out,
        stdout,
        stderr,
        truncated: d1 + d2,
        seconds: started.elapsed().as_secs_f64(),
        http,
        syscalls,
        bounded_by,
    })
}

/// `pare __sandbox SPEC_FILE`: the helper. Never returns.
pub fn helper_main(spec: &Path) -> ! {
    let code = match helper(spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{ERROR_MARK}{e}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn helper(spec_file: &Path) -> Result<i32, String> {
    let json = std::fs::read(spec_file).map_err(|e| format!("{}: {e}", spec_file.display()))?;
    let _ = std::fs::remove_file(spec_file);
    let spec: Spec = serde_json::from_slice(&json).map_err(|e| format!("bad sandbox spec: {e}"))?;
    let mapping = spec.mapping;
    // Opened before the user namespace exists (as pare's user, in pare's temp dir, which the
    // sandbox's ids may not write): the HTTP answer, the learn record, and the materialized
    // tree the root is copied from.
    let create = |p: &Option<PathBuf>| -> Result<Option<std::fs::File>, String> {
        p.as_ref()
            .map(|p| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display())))
            .transpose()
    };
    let outs = Outputs {
        http: create(&spec.http_out)?,
        learn: create(&spec.learn_out)?,
    };
    let src: OwnedFd = std::fs::File::open(&spec.root)
        .map_err(|e| format!("{}: {e}", spec.root.display()))?
        .into();
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
        format!(
            "unshare(CLONE_NEWUSER): {}: this kernel does not let pare create a user \
             namespace (enable it with `sysctl kernel.unprivileged_userns_clone=1`, and on \
             Ubuntu `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; inside a \
             container, allow unshare in its seccomp profile)",
            e.desc()
        )
    })?;
    // pare writes the id maps (as root, or with newuidmap) and moves this process into the
    // sandbox's cgroup while it waits here.
    nix::sys::signal::raise(Signal::SIGSTOP).map_err(errno("raise"))?;
    let write = |p: &str, s: &str| std::fs::write(p, s).map_err(|e| format!("write {p}: {e}"));
    match mapping {
        // Image root is the range's first id: become it (this process's host uid 0 is not
        // mapped), with no host group left.
        Mapping::Root { .. } => {
            nix::unistd::setgroups(&[]).map_err(errno("setgroups"))?;
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(errno("setresgid"))?;
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(errno("setresuid"))?;
        }
        // An ordinary user: a user namespace where the run user is the caller.
        Mapping::Single {
            outer_uid,
            outer_gid,
        } => {
            write("/proc/self/setgroups", "deny")?;
            write(
                "/proc/self/uid_map",
                &format!("{} {outer_uid} 1\n", spec.uid),
            )?;
            write(
                "/proc/self/gid_map",
                &format!("{} {outer_gid} 1\n", spec.gid),
            )?;
        }
        Mapping::Ranges { .. } => {}
    }
    if mapping.faithful() && !Uid::current().is_root() {
        return Err("the user namespace's id maps were not written".into());
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| {
        format!(
            "unshare(mount, pid, net, ipc, uts, cgroup): {}: namespaces are not allowed here \
             (inside a container, run it with CAP_SYS_ADMIN or a seccomp profile that allows \
             unshare)",
            e.desc()
        )
    })?;
    // SAFETY: the helper is single-threaded (a fresh exec of pare that started no runtime).
    match unsafe { fork() }.map_err(errno("fork"))? {
        ForkResult::Child => {
            let code = match init(&spec, mapping, src, outs) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("{ERROR_MARK}{e}");
                    SETUP_FAILED
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(src);
            Ok(supervise(child, spec.limits.seconds))
        }
    }
}

/// Files PID 1 writes outside the root, opened by the helper before anything else.
struct Outputs {
    http: Option<std::fs::File>,
    learn: Option<std::fs::File>,
}

/// Wait for PID 1 of the sandbox; kill it (and so every process in it) at the time limit.
fn supervise(child: Pid, seconds: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(_) => return SETUP_FAILED,
        }
        if Instant::now() >= deadline {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            eprintln!("{ERROR_MARK}timed out after {seconds}s: killed");
            return TIMED_OUT;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

/// PID 1 of the sandbox: build the root, start the program, reap, exit with its status.
fn init(spec: &Spec, mapping: Mapping, src: OwnedFd, outs: Outputs) -> Result<i32, String> {
    // Nothing the program runs may ptrace this process or read its memory.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let root = &spec.root;
    let faithful = mapping.faithful();
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(errno("make / private"))?;
    super::mounts::root(
        &super::mounts::RootFs {
            at: &spec.root,
            size: spec.size,
            inodes: spec.inodes,
            owners: &spec.owners,
        },
        &src,
        faithful,
    )?;
    drop(src);
    let real_dir = |d: &str| std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir());
    for d in ["proc", "dev", "tmp", "sys"] {
        if !real_dir(d) {
            return Err(format!("/{d} is not a directory of the materialized root"));
        }
    }
    super::mounts::proc(root)?;
    super::mounts::sys(root);
    super::mounts::mask(root)?;
    super::mounts::dev(root)?;
    if !faithful {
        super::mounts::read_only(root)?;
    }
    let http_out = outs.http;
    let mut learn_out = outs.learn;
    nix::unistd::chdir(root.as_path()).map_err(errno("chdir to the root"))?;
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(errno("detach the old root"))?;
    nix::unistd::chdir("/").map_err(errno("chdir /"))?;
    let _ = nix::unistd::sethostname("pare-probe");
    loopback_up()?;
    let lim = &spec.limits;
    for (r, v) in [
        (Resource::RLIMIT_AS, lim.address_space),
        (Resource::RLIMIT_NPROC, lim.processes),
        (Resource::RLIMIT_FSIZE, lim.file_size),
        (Resource::RLIMIT_CORE, 0),
    ] {
        setrlimit(r, v, v).map_err(errno("setrlimit"))?;
    }
    let program = resolve_program(spec)?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec.env.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    // SAFETY: PID 1 is single-threaded too (a child of the single-threaded helper).
    match unsafe { fork() }.map_err(errno("fork"))? {
        ForkResult::Child => {
            let e = become_user(spec, faithful)
                .and_then(|()| {
                    nix::unistd::chdir(spec.cwd.as_str())
                        .or_else(|_| nix::unistd::chdir("/"))
                        .map_err(errno("chdir"))
                })
                .and_then(|()| {
                    if learn_out.is_some() {
                        // Stopped until PID 1 has attached as the tracer.
                        nix::sys::ptrace::traceme().map_err(errno("ptrace(TRACEME)"))?;
                        nix::sys::signal::raise(Signal::SIGSTOP).map_err(errno("raise"))?;
                        // Only the path syscalls stop for the tracer from here on.
                        super::learn::install_filter(spec.learn_syscalls)?;
                    }
                    // The default filter, stacked on learn's, and a --seccomp profile on top:
                    // the strictest answer wins.
                    super::seccomp::install()?;
                    match &spec.profile {
                        Some(p) => super::profile::install(p),
                        None => Ok(()),
                    }
                })
                .and_then(|()| {
                    nix::unistd::execve(&program, &argv, &env)
                        .map(|_| ())
                        .map_err(errno("exec"))
                });
            if let Err(e) = e {
                eprintln!("{ERROR_MARK}{}: {e}", spec.argv.first().map_or("", |s| s));
            }
            std::process::exit(127)
        }
        ForkResult::Parent { child } => loop {
            if let Some(out) = learn_out.as_mut() {
                let Some((h, answer_out)) = spec.http.clone().zip(http_out.as_ref()) else {
                    return super::learn::trace(child, out, spec.learn_syscalls);
                };
                // --learn-http: this thread traces (it is the tracer, and it reaps); a second
                // one asks the server and then stops it.
                let deadline = Instant::now() + Duration::from_secs(spec.limits.seconds);
                let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let client = {
                    let ended = ended.clone();
                    std::thread::spawn(move || {
                        let got = http_get(&h, deadline, || {
                            ended.load(std::sync::atomic::Ordering::SeqCst)
                        });
                        let _ = kill(child, Signal::SIGKILL);
                        got
                    })
                };
                let traced = super::learn::trace(child, out, spec.learn_syscalls);
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
                let got = client.join().ok().flatten();
                traced?;
                return write_answer(answer_out, got);
            }
            if let (Some(h), Some(out)) = (&spec.http, &http_out) {
                // A server: ask it once it listens, then stop it (and everything it started).
                let deadline = Instant::now() + Duration::from_secs(spec.limits.seconds);
                let got = http_get(h, deadline, || {
                    // Reap whatever ended; the server itself ending is the end.
                    while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        match st {
                            WaitStatus::StillAlive => break,
                            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _)
                                if p == child =>
                            {
                                return true;
                            }
                            _ => {}
                        }
                    }
                    false
                });
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return write_answer(out, got);
            }
            // Reap everything; leave when the program itself ends.
            match waitpid(None, None) {
                Ok(WaitStatus::Exited(p, code)) if p == child => return Ok(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p == child => return Ok(128 + sig as i32),
                Ok(_) => {}
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(format!("wait: {}", e.desc())),
            }
        },
    }
}

/// PID 1's status for an HTTP probe: 0 with the answer written to `out`, 1 without one.
fn write_answer(mut out: &std::fs::File, got: Option<Vec<u8>>) -> Result<i32, String> {
    match got {
        Some(answer) => {
            std::io::Write::write_all(&mut out, &answer)
                .map_err(|e| format!("write the HTTP answer: {e}"))?;
            Ok(0)
        }
        None => Ok(1),
    }
}

/// GET `h.path` from 127.0.0.1:`h.port` once something listens there, while the server runs
/// (`ended` says when it stopped) and before `deadline`; the raw answer (bounded).
fn http_get(h: &HttpProbe, deadline: Instant, mut ended: impl FnMut() -> bool) -> Option<Vec<u8>> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], h.port));
    loop {
        if ended() {
            eprintln!(
                "{ERROR_MARK}the server exited before it answered on port {}",
                h.port
            );
            return None;
        }
        if Instant::now() >= deadline {
            eprintln!("{ERROR_MARK}nothing answered on port {} in time", h.port);
            return None;
        }
        if let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            if h.listen_only {
                return Some(b"HTTP/1.0 200 listening\r\n\r\n".to_vec());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = c.set_read_timeout(Some(left.max(Duration::from_millis(100))));
            let req = format!(
                "GET {} HTTP/1.0\r\nHost: localhost:{}\r\nUser-Agent: pare-probe\r\nConnection: close\r\n\r\n",
                h.path, h.port
            );
            if c.write_all(req.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = c.take(4 << 20).read_to_end(&mut answer);
                if !answer.is_empty() {
                    return Some(answer);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// argv[0] through the image's PATH, inside the new root.
fn resolve_program(spec: &Spec) -> Result<CString, String> {
    let arg0 = spec.argv.first().ok_or("no program to run")?;
    if arg0.contains('/') {
        return cstr(arg0);
    }
    let path = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = format!("{}/{arg0}", dir.trim_end_matches('/'));
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            return cstr(&p);
        }
    }
    Err(format!("{arg0}: not found in PATH {path}"))
}

/// Drop to the image's user with no capabilities and no way to gain privileges.
fn become_user(spec: &Spec, faithful: bool) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    if faithful {
        nix::unistd::setgroups(&[gid]).map_err(errno("setgroups"))?;
    }
    nix::unistd::setgid(gid).map_err(errno("setgid"))?;
    nix::unistd::setuid(uid).map_err(errno("setuid"))?;
    nix::sys::prctl::set_no_new_privs().map_err(errno("no_new_privs"))?;
    // A root run user keeps capabilities over the namespace after setuid(0): drop them all.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    let header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset with a valid v3 header and two zeroed data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `ip link set lo up`, with the classic ioctls.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(format!("bring lo up: {err}"));
        }
    }
    Ok(())
}

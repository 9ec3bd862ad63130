//! [`parse_strace`]: the regular files a traced workload touched, resolved inside its root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use super::*;

/// A regular file a traced workload touched.
#[derive(Clone, Debug, Default)]
pub struct TracedFile {
    /// Size before the run.
    pub size: u64,
    /// The absolute paths it was asked for by (before symlinks were followed).
    pub requested: BTreeSet<String>,
    /// How: `openat`, `execve`, `newfstatat`, … and `interp` (loaded by the kernel as an
    /// executable's `PT_INTERP` or `#!` interpreter, which strace cannot see).
    pub how: BTreeSet<String>,
}

/// What [`parse_strace`] found.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Canonical image path → file.
    pub files: BTreeMap<String, TracedFile>,
    /// Successful calls whose path could not be placed (relative to an unknown directory).
    pub unresolved: Vec<String>,
    /// Processes seen after their chroot.
    pub processes: usize,
    /// Successful execs (canonical paths), in order.
    pub execs: Vec<String>,
}

impl Trace {
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// Add another run's files.
    pub fn merge(&mut self, other: Trace) {
        for (k, v) in other.files {
            let e = self.files.entry(k).or_default();
            e.size = v.size;
            e.requested.extend(v.requested);
            e.how.extend(v.how);
        }
        self.unresolved.extend(other.unresolved);
        self.processes += other.processes;
        self.execs.extend(other.execs);
    }
}

#[derive(Clone, Debug, Default)]
struct ProcState {
    chrooted: bool,
    cwd: Option<String>,
    fds: HashMap<i64, String>,
}

/// One syscall of an strace log, `<unfinished ...>`/`<... resumed>` halves joined.
#[derive(Clone, Debug)]
struct Call {
    pid: i64,
    name: String,
    args: Vec<String>,
    ret: Option<i64>,
}

fn decode_c_string(tok: &str) -> Option<String> {
    let t = tok.trim();
    let inner = t.strip_prefix('"')?;
    let mut out: Vec<u8> = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
            b'\\' if i + 1 < b.len() => {
                i += 1;
                match b[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(h, 16).ok()?);
                        i += 2;
                    }
                    c @ b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        let mut n = 1;
                        while n < 3 && i + 1 < b.len() && (b'0'..=b'7').contains(&b[i + 1]) {
                            i += 1;
                            v = v * 8 + u32::from(b[i] - b'0');
                            n += 1;
                        }
                        out.push(v as u8);
                    }
                    c => out.push(c),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    None
}

/// Split `name(args) = ret …` into the top-level argument texts and the return value.
fn split_call(text: &str) -> Option<(String, Vec<String>, Option<i64>)> {
    let open = text.find('(')?;
    let name = text[..open].trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut args = Vec::new();
    let mut start = open + 1;
    let mut i = open + 1;
    let mut close = None;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth > 0 => depth -= 1,
                b')' => {
                    args.push(text[start..i].trim().to_string());
                    close = Some(i);
                    break;
                }
                b',' if depth == 0 => {
                    args.push(text[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    let close = close?;
    let rest = text[close + 1..].trim_start();
    let ret = rest
        .strip_prefix('=')
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| {
            r.strip_prefix("0x")
                .map(|h| i64::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| r.parse().ok())
        });
    Some((name, args, ret))
}

fn parse_calls(log: &str) -> Vec<Call> {
    let mut pending: HashMap<i64, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let line = line.trim_start();
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let text = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.trim_end().to_string());
            continue;
        } else if let Some(r) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = r.split_once("resumed>") else {
                continue;
            };
            match pending.remove(&pid) {
                Some(head) => format!("{head}{tail}"),
                None => continue,
            }
        } else {
            rest.to_string()
        };
        if let Some((name, args, ret)) = split_call(&text) {
            calls.push(Call {
                pid,
                name,
                args,
                ret,
            });
        }
    }
    calls
}

fn join_path(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else if base == "/" {
        format!("/{p}")
    } else {
        format!("{base}/{p}")
    }
}

/// The regular files a workload traced by [`run_workload`] touched after its `chroot()`:
/// successful `open`/`openat`/`openat2`, `execve`/`execveat`, and the stat family (`stat`,
/// `lstat`, `newfstatat`, `statx`, `access`, `faccessat`, `faccessat2`, `readlink`,
/// `readlinkat`), relative paths resolved against the process's cwd (`chdir`, `fchdir`) or
/// directory fd, each resolved inside `root`; kept when it was a regular file before the run
/// (`before`: [`regular_files`] of the root before it ran, so files the run created do not
/// count). The `PT_INTERP` and `#!` interpreters of executed files are added: the kernel loads
/// them without a syscall strace shows. `/proc`, `/sys` and `/dev` are skipped.
pub fn parse_strace(log: &str, root: &Path, before: &BTreeMap<String, u64>) -> Trace {
    let calls = parse_calls(log);
    let mut parent: HashMap<i64, i64> = HashMap::new();
    for c in &calls {
        if matches!(c.name.as_str(), "clone" | "clone3" | "fork" | "vfork")
            && let Some(r) = c.ret
            && r > 0
        {
            parent.entry(r).or_insert(c.pid);
        }
    }
    let mut states: HashMap<i64, ProcState> = HashMap::new();
    let mut trace = Trace::default();
    let mut seen_procs = BTreeSet::new();
    for c in &calls {
        if !states.contains_key(&c.pid) {
            let inherited = parent
                .get(&c.pid)
                .and_then(|pp| states.get(pp))
                .cloned()
                .unwrap_or_default();
            states.insert(c.pid, inherited);
        }
        let st = states.get(&c.pid).cloned().unwrap_or_default();
        let ok = c.ret.is_some_and(|r| r >= 0);
        if c.name == "chroot" {
            if ok {
                let s = states.get_mut(&c.pid).unwrap();
                s.chrooted = true;
                s.cwd = None;
                s.fds.clear();
            }
            continue;
        }
        if !st.chrooted || !ok {
            continue;
        }
        seen_procs.insert(c.pid);
        if c.name == "fchdir" {
            if let Some(d) = c
                .args
                .first()
                .and_then(|a| a.parse::<i64>().ok())
                .and_then(|fd| st.fds.get(&fd).cloned())
            {
                states.get_mut(&c.pid).unwrap().cwd = Some(d);
            }
            continue;
        }
        let Some((base, path, follow)) = call_target(c, &st) else {
            continue;
        };
        let base = match (path.starts_with('/'), base) {
            (true, _) => "/".to_string(),
            (false, Some(b)) => b,
            (false, None) => {
                trace.unresolved.push(format!(
                    "pid {}: {}({:?}) relative to an unknown directory",
                    c.pid, c.name, path
                ));
                continue;
            }
        };
        let requested = join_path(&base, &path);
        if is_virtual(&requested) {
            continue;
        }
        let canonical = resolve_in_root(root, &base, &path, follow);
        if c.name == "chdir" {
            if let Some(d) = canonical {
                states.get_mut(&c.pid).unwrap().cwd = Some(d);
            }
            continue;
        }
        if matches!(c.name.as_str(), "open" | "openat" | "openat2")
            && let (Some(fd), Some(canon)) = (c.ret, canonical.clone())
        {
            states.get_mut(&c.pid).unwrap().fds.insert(fd, canon);
        }
        let Some(canonical) = canonical else {
            continue;
        };
        if is_virtual(&canonical) {
            continue;
        }
        if matches!(c.name.as_str(), "execve" | "execveat") {
            trace.execs.push(canonical.clone());
            add_interpreters(&mut trace, root, before, &canonical);
        }
        add_file(&mut trace, before, requested, canonical, &c.name);
    }
    trace.processes = seen_procs.len();
    trace
}

/// Under `/proc`, `/sys` or `/dev`.
fn is_virtual(p: &str) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|pre| p == *pre || p.starts_with(&format!("{pre}/")))
}

/// Count `canonical` (asked for as `requested`, by `how`) when it was a regular file before.
fn add_file(
    trace: &mut Trace,
    before: &BTreeMap<String, u64>,
    requested: String,
    canonical: String,
    how: &str,
) {
    let Some(size) = before.get(&canonical) else {
        return;
    };
    let e = trace.files.entry(canonical).or_default();
    e.size = *size;
    e.requested.insert(requested);
    e.how.insert(how.to_string());
}

/// The path call `c` names, for a process in state `st`: (the directory it is relative to,
/// the path, whether the last symlink is followed). `None` for calls that name no file.
fn call_target(c: &Call, st: &ProcState) -> Option<(Option<String>, String, bool)> {
    let arg_str = |i: usize| c.args.get(i).and_then(|a| decode_c_string(a));
    let dir_of = |fdarg: &str| -> Option<String> {
        if fdarg == "AT_FDCWD" {
            st.cwd.clone()
        } else {
            fdarg
                .parse::<i64>()
                .ok()
                .and_then(|fd| st.fds.get(&fd).cloned())
        }
    };
    match c.name.as_str() {
        "open" | "stat" | "stat64" | "access" | "execve" | "chdir" | "uselib" => {
            arg_str(0).map(|p| (st.cwd.clone(), p, true))
        }
        "lstat" | "lstat64" | "readlink" => arg_str(0).map(|p| (st.cwd.clone(), p, false)),
        "openat" | "openat2" | "newfstatat" | "fstatat64" | "statx" | "faccessat"
        | "faccessat2" | "readlinkat" | "execveat" => {
            let nofollow = c.name == "readlinkat"
                || c.args
                    .iter()
                    .skip(2)
                    .any(|a| a.contains("AT_SYMLINK_NOFOLLOW"));
            match (c.args.first(), arg_str(1)) {
                (Some(fd), Some(p)) if !p.is_empty() => Some((dir_of(fd), p, !nofollow)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What the kernel loads for an exec of `exe`: `#!` interpreters and `PT_INTERP`, recursively.
fn add_interpreters(trace: &mut Trace, root: &Path, before: &BTreeMap<String, u64>, exe: &str) {
    let mut queue = vec![exe.to_string()];
    let mut hops = 0;
    while let Some(exe) = queue.pop() {
        hops += 1;
        if hops > 8 {
            break;
        }
        let Ok(bytes) = fs::read(root.join(exe.trim_start_matches('/'))) else {
            continue;
        };
        let interp = if bytes.starts_with(b"#!") {
            let line = bytes[2..].split(|b| *b == b'\n').next().unwrap_or_default();
            String::from_utf8_lossy(line)
                .split_whitespace()
                .next()
                .map(str::to_string)
        } else {
            elf_interp(&bytes)
        };
        if let Some(i) = interp
            && let Some(ic) = resolve_in_root(root, "/", &i, true)
        {
            add_file(trace, before, i, ic.clone(), "interp");
            queue.push(ic);
        }
    }
}

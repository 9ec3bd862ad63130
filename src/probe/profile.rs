//! Seccomp profiles in the OCI/Docker JSON format (what `docker run --security-opt seccomp=`,
//! Podman, containerd and the kubelet's `seccompProfile: Localhost` read): written from the
//! system calls a `--learn` run recorded, and applied to a probe's program (`pare probe
//! --seccomp FILE`) so a profile is proven on the image before a cluster enforces it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::json;

/// A compiled profile: classic-BPF instructions (code, jt, jf, k), as the sandbox loads them.
pub type Program = Vec<(u16, u8, u8, u32)>;

/// Largest profile file read.
const MAX_FILE: u64 = 1 << 20;

/// What an OCI runtime itself calls between loading the filter and the program's first
/// instruction (runc's and crun's init: `execve` and the libc and Go runtime calls around it),
/// added to every learned profile so the container can start at all.
pub const RUNTIME_BASELINE: &[&str] = &[
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "close",
    "close_range",
    "dup3",
    "epoll_ctl",
    "epoll_pwait",
    "execve",
    "exit",
    "exit_group",
    "fchdir",
    "fcntl",
    "fstat",
    "futex",
    "getdents64",
    "getpid",
    "getppid",
    "gettid",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "prctl",
    "read",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setresgid",
    "setresuid",
    "setuid",
    "sigaltstack",
    "tgkill",
    "write",
];

/// The name of system call `nr` of ABI `arch` (an `AUDIT_ARCH_*` value), where pare knows it.
pub fn name(arch: u32, nr: i64) -> Option<&'static str> {
    let nr = usize::try_from(nr).ok()?;
    match arch {
        a if Some(a) == super::learn::host_arch() => syscalls::Sysno::new(nr).map(|s| s.name()),
        #[cfg(target_arch = "x86_64")]
        0x4000_0003 => syscalls::x86::Sysno::new(nr).map(|s| s.name()),
        _ => None,
    }
}

/// The `architectures` a profile for this host lists (as Docker's default does).
fn architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        Vec::new()
    }
}

/// A profile allowing `used` (the recorded calls' names) and [`RUNTIME_BASELINE`], every other
/// call failing with EPERM.
pub fn learned(used: &BTreeSet<String>) -> serde_json::Value {
    let mut names: BTreeSet<&str> = used.iter().map(String::as_str).collect();
    names.extend(RUNTIME_BASELINE);
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": architectures(),
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
    })
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<serde_json::Value>>,
}

/// A seccomp return value for an action name.
fn action(name: &str, errno: Option<u32>) -> Result<u32, String> {
    let data = |e: u32| e & libc::SECCOMP_RET_DATA;
    Ok(match name {
        "SCMP_ACT_ALLOW" => libc::SECCOMP_RET_ALLOW,
        "SCMP_ACT_ERRNO" => libc::SECCOMP_RET_ERRNO | data(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => libc::SECCOMP_RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => libc::SECCOMP_RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => libc::SECCOMP_RET_TRAP,
        "SCMP_ACT_LOG" => libc::SECCOMP_RET_LOG,
        // No tracer watches a probe's program: the kernel answers ENOSYS.
        "SCMP_ACT_TRACE" => libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        other => return Err(format!("action {other} is not supported")),
    })
}

/// Read and compile a profile file (host ABI; calls of any other ABI get the default action).
pub fn load(path: &std::path::Path) -> Result<Program, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    compile(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Compile profile JSON into a filter for this host.
pub fn compile(json: &[u8]) -> Result<Program, String> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_LD, BPF_W};
    let p: Profile =
        serde_json::from_slice(json).map_err(|e| format!("not a seccomp profile: {e}"))?;
    let default = action(&p.default_action, p.default_errno_ret)?;
    let arch = super::learn::host_arch().ok_or("no seccomp profiles on this architecture")?;
    let mut rules: Vec<(u32, u32)> = Vec::new();
    for r in &p.syscalls {
        if r.args.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(format!(
                "rule for {}: conditions on arguments are not supported",
                r.names.first().or(r.name.as_ref()).map_or("?", |s| s)
            ));
        }
        let act = action(&r.action, r.errno_ret.or(p.default_errno_ret))?;
        for n in r.names.iter().chain(&r.name) {
            // A name this ABI does not have is passed over, as libseccomp does.
            if let Ok(s) = n.parse::<syscalls::Sysno>()
                && !rules.iter().any(|(nr, _)| *nr == s.id() as u32)
            {
                rules.push((s.id() as u32, act));
            }
        }
    }
    use super::seccomp::{X32_BIT, jump, ret, stmt};
    let mut f = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ, arch, 1, 0),
        ret(default),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 numbers: the default.
        f.push(jump(BPF_JGE, X32_BIT, 0, 1));
        f.push(ret(default));
    }
    for (nr, act) in rules {
        f.push(jump(BPF_JEQ, nr, 0, 1));
        f.push(ret(act));
    }
    f.push(ret(default));
    if f.len() > 4096 {
        return Err("more rules than a seccomp filter holds".into());
    }
    Ok(f.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect())
}

/// In the program's process, after the default filter: load `p` too.
pub fn install(p: &Program) -> Result<(), String> {
    let mut f: Vec<libc::sock_filter> = p
        .iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    super::seccomp::load(&mut f).map_err(|e| format!("install the --seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_learned_profile_round_trips_into_a_filter() {
        let used: BTreeSet<String> = ["read", "uname", "sysinfo"].map(String::from).into();
        let v = learned(&used);
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        let names: Vec<&str> = v["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(names.contains(&"uname") && names.contains(&"execve"));
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        let f = compile(&serde_json::to_vec(&v).unwrap()).unwrap();
        // Walk it: uname allowed, keyctl refused with EPERM, x32 and other ABIs refused.
        let f: Vec<libc::sock_filter> = f
            .iter()
            .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
            .collect();
        let eval = |arch: u32, nr: u32| super::super::seccomp::tests::eval(&f, arch, nr, 0);
        let x86_64 = 0xC000_003E;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(
            eval(x86_64, libc::SYS_uname as u32),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(eval(x86_64, libc::SYS_keyctl as u32), eperm);
        assert_eq!(eval(x86_64, 0x4000_0000 | libc::SYS_uname as u32), eperm);
        assert_eq!(eval(0x4000_0003, 122), eperm);
        assert_eq!(name(x86_64, libc::SYS_uname), Some("uname"));
        assert_eq!(name(0x4000_0003, 122), Some("uname"));
    }

    #[test]
    fn unsupported_profiles_are_one_clear_error() {
        let e = compile(br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#).unwrap_err();
        assert!(e.contains("personality") && e.contains("arguments"), "{e}");
        let e = compile(br#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap_err();
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
        assert!(
            compile(b"[1]")
                .unwrap_err()
                .contains("not a seccomp profile")
        );
    }
}

//! The default seccomp filter for image code, in the shape of Docker's and Podman's default
//! profile: the calls that reach past a container (keys, BPF, perf, modules, kexec, reboot,
//! swap, mounts, `pivot_root`, new namespaces, `userfaultfd`, `open_by_handle_at`, io_uring,
//! the clock, the kernel log…) fail with EPERM; `clone` with a namespace flag fails with EPERM
//! and `clone3` with ENOSYS (its flags sit in memory seccomp cannot read; libc then falls back
//! to `clone`, as under Docker). `ptrace` stays: seccomp sees neither namespaces nor parentage,
//! and the PID namespace keeps it inside. Stacked on `--learn`'s `SECCOMP_RET_TRACE` filter,
//! the strictest answer wins.
//!
//! Written as BPF here rather than with `seccompiler`: its programs kill any process of another
//! ABI (i386 programs on x86_64 hosts, which Docker's profile serves), keep one action per
//! filter (EPERM and ENOSYS both are needed) and let x32 system call numbers through, which a
//! deny list must not.

use libc::sock_filter;

/// `AUDIT_ARCH_X86_64`, `AUDIT_ARCH_I386`, `AUDIT_ARCH_AARCH64`.
const ARCH_X86_64: u32 = 0xC000_003E;
const ARCH_I386: u32 = 0x4000_0003;
const ARCH_AARCH64: u32 = 0xC000_00B7;
/// x32 system calls are x86_64's with this bit set.
pub(super) const X32_BIT: u32 = 0x4000_0000;

/// Every namespace flag of clone(2) (time, mount, cgroup, uts, ipc, user, pid, net).
const NAMESPACE_FLAGS: u32 = 0x0000_0080
    | 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

/// One architecture's numbers: the denied calls, `clone` and `clone3`.
struct Table {
    arch: u32,
    deny: Vec<u32>,
    clone: u32,
    clone3: u32,
    x32: bool,
}

/// The host's table.
fn host() -> Option<Table> {
    #[allow(unused_mut)]
    let mut deny: Vec<libc::c_long> = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_acct,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_mount_setattr,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_lookup_dcookie,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_fanotify_init,
    ];
    #[cfg(target_arch = "x86_64")]
    deny.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_nfsservctl,
        // create_module, get_kernel_syms, query_module (asm/unistd_64.h; libc leaves them out).
        174,
        177,
        178,
    ]);
    let arch = if cfg!(target_arch = "x86_64") {
        ARCH_X86_64
    } else if cfg!(target_arch = "aarch64") {
        ARCH_AARCH64
    } else {
        return None;
    };
    Some(Table {
        arch,
        deny: deny.into_iter().map(|n| n as u32).collect(),
        clone: libc::SYS_clone as u32,
        clone3: libc::SYS_clone3 as u32,
        x32: cfg!(target_arch = "x86_64"),
    })
}

/// i386 programs on an x86_64 host: the same calls by their i386 numbers
/// (`asm/unistd_32.h`), with i386's own extras (`umount`, `stime`, `vm86`, the 64-bit time
/// variants).
const I386_DENY: &[u32] = &[
    21, 22, 52, 217, 310, 346, 288, 286, 287, 357, 336, 283, 128, 350, 129, 88, 87, 115, 374, 342,
    51, 425, 426, 427, 430, 431, 432, 433, 428, 429, 442, 131, 103, 253, 79, 264, 343, 338, 110,
    101, 86, 62, 135, 149, 127, 130, 167, 169, 25, 113, 166, 404, 405,
];

fn i386() -> Table {
    Table {
        arch: ARCH_I386,
        deny: I386_DENY.to_vec(),
        clone: 120,
        clone3: 435,
        x32: false,
    }
}

pub(super) fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump: `op` is `BPF_JEQ`, `BPF_JGE` or `BPF_JSET` against `k`.
pub(super) fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

pub(super) fn ret(action: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action)
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// One architecture's part: the number in the accumulator, then a decision.
fn block(t: &Table) -> Vec<sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_LD, BPF_W};
    let mut f = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 0)]; // seccomp_data.nr
    if t.x32 {
        f.push(jump(BPF_JGE, X32_BIT, 0, 1));
        f.push(ret(errno(libc::ENOSYS)));
    }
    f.push(jump(BPF_JEQ, t.clone3, 0, 1));
    f.push(ret(errno(libc::ENOSYS)));
    // clone: the flags are the first argument (low word at byte 16 on little-endian hosts).
    f.push(jump(BPF_JEQ, t.clone, 0, 4));
    f.push(stmt(BPF_LD | BPF_W | BPF_ABS, 16));
    f.push(jump(BPF_JSET, NAMESPACE_FLAGS, 0, 1));
    f.push(ret(errno(libc::EPERM)));
    f.push(ret(libc::SECCOMP_RET_ALLOW));
    for nr in &t.deny {
        f.push(jump(BPF_JEQ, *nr, 0, 1));
        f.push(ret(errno(libc::EPERM)));
    }
    f.push(ret(libc::SECCOMP_RET_ALLOW));
    f
}

/// The whole program: the host's ABI, on x86_64 also i386's; any other ABI is killed.
fn program() -> Option<Vec<sock_filter>> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_LD, BPF_W};
    let host = host()?;
    let mut tables = vec![host];
    if cfg!(target_arch = "x86_64") {
        tables.push(i386());
    }
    let blocks: Vec<Vec<sock_filter>> = tables.iter().map(block).collect();
    // The dispatch: one jump per ABI to its block, then the kill.
    let n = blocks.len();
    let mut f = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 4)]; // seccomp_data.arch
    let mut skip = 0usize;
    for (i, t) in tables.iter().enumerate() {
        // From jump i: past the other jumps and the kill, then past the blocks before it.
        let to = (n - 1 - i) + 1 + skip;
        f.push(jump(BPF_JEQ, t.arch, u8::try_from(to).ok()?, 0));
        skip += blocks[i].len();
    }
    f.push(ret(libc::SECCOMP_RET_KILL_PROCESS));
    for b in blocks {
        f.extend(b);
    }
    Some(f)
}

/// In the program's process, after `no_new_privs`: install the filter, inherited by every
/// child and kept across exec.
pub fn install() -> Result<(), String> {
    let Some(mut f) = program() else {
        return Err("no default seccomp filter for this architecture".into());
    };
    load(&mut f).map_err(|e| format!("install the default seccomp filter: {e}"))
}

/// Load a classic-BPF program as a seccomp filter of this thread (`no_new_privs` set).
pub fn load(f: &mut [sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(f.len()).map_err(|_| std::io::Error::other("program too long"))?,
        filter: f.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `f`, alive across the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions pare's filters use: the action for a
    /// call.
    pub(in crate::probe) fn eval(f: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = f[pc];
            let code = i.code as u32;
            if code == BPF_LD | BPF_W | BPF_ABS {
                let k = i.k as usize;
                acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                pc += 1;
            } else if code == BPF_RET | BPF_K {
                return i.k;
            } else {
                let hit = match code {
                    c if c == BPF_JMP | BPF_JEQ | BPF_K => acc == i.k,
                    c if c == BPF_JMP | BPF_JGE | BPF_K => acc >= i.k,
                    c if c == BPF_JMP | BPF_JSET | BPF_K => acc & i.k != 0,
                    c => panic!("unexpected instruction {c:#x}"),
                };
                pc += 1 + if hit { i.jt } else { i.jf } as usize;
            }
            assert!(pc < f.len(), "jumped past the end");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_filter_denies_what_reaches_past_a_container() {
        let f = program().unwrap();
        let eperm = errno(libc::EPERM);
        let enosys = errno(libc::ENOSYS);
        let allow = libc::SECCOMP_RET_ALLOW;
        let host = |nr: libc::c_long, arg: u64| eval(&f, ARCH_X86_64, nr as u32, arg);
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_bpf,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_perf_event_open,
            libc::SYS_kexec_load,
            libc::SYS_finit_module,
            libc::SYS_reboot,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_io_uring_setup,
            libc::SYS_nfsservctl,
        ] {
            assert_eq!(host(nr, 0), eperm, "{nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_fork,
            libc::SYS_wait4,
        ] {
            assert_eq!(host(nr, 0), allow, "{nr}");
        }
        // fork-like clone passes, a new namespace does not; clone3 falls back.
        assert_eq!(host(libc::SYS_clone, libc::SIGCHLD as u64), allow);
        assert_eq!(host(libc::SYS_clone, 0x003d_0f00), allow); // pthread_create's flags
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            assert_eq!(host(libc::SYS_clone, ns as u64 | 17), eperm);
        }
        assert_eq!(host(libc::SYS_clone3, 0), enosys);
        // x32 numbers never reach the deny list's gaps.
        assert_eq!(
            eval(&f, ARCH_X86_64, X32_BIT | libc::SYS_keyctl as u32, 0),
            enosys
        );
        // i386: its own numbers.
        assert_eq!(eval(&f, ARCH_I386, 288, 0), eperm); // keyctl
        assert_eq!(eval(&f, ARCH_I386, 21, 0), eperm); // mount
        assert_eq!(eval(&f, ARCH_I386, 3, 0), allow); // read
        assert_eq!(eval(&f, ARCH_I386, 120, 0x1000_0000), eperm); // clone(CLONE_NEWUSER)
        assert_eq!(eval(&f, ARCH_I386, 435, 0), enosys);
        // Any other ABI is killed.
        assert_eq!(eval(&f, 0xC000_00F3, 0, 0), libc::SECCOMP_RET_KILL_PROCESS);
    }

    /// The i386 numbers are the kernel headers' (where the machine has them).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn i386_numbers_match_the_kernel_headers() {
        let Ok(h) = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_32.h") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "asm/unistd_32.h (linux-libc-dev) is missing"
            );
            eprintln!("SKIP: no asm/unistd_32.h (linux-libc-dev) to compare with");
            return;
        };
        let nr = |name: &str| -> u32 {
            h.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("#define __NR_{name} "))
                        .and_then(|n| n.trim().parse().ok())
                })
                .unwrap_or_else(|| panic!("{name} not in unistd_32.h"))
        };
        let names = [
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapon",
            "swapoff",
            "userfaultfd",
            "open_by_handle_at",
            "acct",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "quotactl",
            "syslog",
            "lookup_dcookie",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "fanotify_init",
            "iopl",
            "ioperm",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "stime",
            "vm86old",
            "vm86",
            "clock_settime64",
            "clock_adjtime64",
        ];
        let mut want: Vec<u32> = names.iter().map(|n| nr(n)).collect();
        let mut have = I386_DENY.to_vec();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want);
        assert_eq!((nr("clone"), nr("clone3")), (120, 435));
    }
}

//! The sandbox's filesystem, built by its PID 1 in its own mount namespace before
//! `pivot_root`: the root as a size-bounded tmpfs holding a copy of the materialized tree
//! ([`super::rootcopy`]), a fresh `/proc` masked and frozen as runc and crun do by default, a
//! read-only `/sys` (where the kernel lets a user namespace mount one), a minimal `/dev` and a
//! `/dev/shm`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};

const NONE: Option<&str> = None;

/// Read-only in `/proc` (runc's `readonlyPaths`).
pub const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// Hidden in `/proc` and `/sys` (runc's `maskedPaths`): files read as `/dev/null`, directories
/// as an empty read-only tmpfs.
pub const MASKED: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/latency_stats",
    "proc/timer_stats",
    "proc/acpi",
    "proc/scsi",
    "proc/asound",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// The sandbox's root file system: a tmpfs at `at` of this many bytes and inodes, with the
/// image's owners where ownership is faithful.
pub struct RootFs<'a> {
    pub at: &'a Path,
    pub size: u64,
    pub inodes: u64,
    pub owners: &'a [super::idmap::Owner],
}

/// A failed system call as one line: what was being done and the errno's text.
pub(super) fn errno(what: &str) -> impl Fn(nix::Error) -> String + '_ {
    move |e| format!("{what}: {}", e.desc())
}

/// Mount the tmpfs root at `spec.at` (over the materialized tree, whose descriptor `src`
/// the copy reads) and copy the tree into it, with the image's owners where ownership is
/// faithful.
pub fn root(spec: &RootFs, src: &OwnedFd, faithful: bool) -> Result<(), String> {
    let root = spec.at;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(
            format!(
                "mode=755,size={},nr_inodes={}",
                spec.size.max(1 << 20),
                spec.inodes
            )
            .as_str(),
        ),
    )
    .map_err(errno("mount the root tmpfs"))?;
    let dst: OwnedFd = std::fs::File::open(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .into();
    let owners: HashMap<String, (u32, u32)> = spec
        .owners
        .iter()
        .map(|(p, u, g)| (p.clone(), (*u, *g)))
        .collect();
    super::rootcopy::copy_tree(src, &dst, faithful.then_some(&owners))
        .map_err(|e| format!("copy the image into the sandbox's tmpfs: {e}"))?;
    Ok(())
}

/// `/proc`, masked and frozen; the sandbox's own `ip_unprivileged_port_start` is set first.
pub fn proc(root: &Path) -> Result<(), String> {
    let at = root.join("proc");
    mount(
        Some("proc"),
        &at,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(errno("mount /proc"))?;
    // Unprivileged users may bind any port, as in a container (the network namespace's own
    // sysctl, writable here before /proc/sys is frozen).
    let _ = std::fs::write(at.join("sys/net/ipv4/ip_unprivileged_port_start"), "0");
    for p in PROC_READONLY {
        let p = at.join(p);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        mount(
            Some(p.as_path()),
            &p,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(errno("bind a /proc path"))?;
        mount(
            NONE,
            &p,
            NONE,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            NONE,
        )
        .map_err(errno("make a /proc path read-only"))?;
    }
    Ok(())
}

/// `/sys` read-only, where the kernel lets this user namespace mount one (it does when the
/// host's own sysfs is fully visible); else it stays an empty directory.
pub fn sys(root: &Path) {
    let _ = mount(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    );
}

/// Hide [`MASKED`] (after `/proc` and `/sys` are mounted).
pub fn mask(root: &Path) -> Result<(), String> {
    for p in MASKED {
        let p = root.join(p);
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )
            .map_err(errno("mask a directory"))?;
        } else {
            mount(Some("/dev/null"), &p, NONE, MsFlags::MS_BIND, NONE)
                .map_err(errno("mask a file"))?;
        }
    }
    Ok(())
}

/// A tmpfs `/dev` with the usual nodes bound from the host's, the `/proc/self/fd` links and a
/// `/dev/shm`.
pub fn dev(root: &Path) -> Result<(), String> {
    let at = root.join("dev");
    mount(
        Some("tmpfs"),
        &at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )
    .map_err(errno("mount /dev"))?;
    for d in ["null", "zero", "random", "urandom", "tty", "full"] {
        let target = at.join(d);
        std::fs::write(&target, b"").map_err(|e| format!("/dev/{d}: {e}"))?;
        mount(
            Some(Path::new("/dev").join(d).as_path()),
            &target,
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .map_err(errno("bind a /dev node"))?;
    }
    for (l, t) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(t, at.join(l)).map_err(|e| format!("/dev/{l}: {e}"))?;
    }
    std::fs::create_dir(at.join("shm")).map_err(|e| format!("/dev/shm: {e}"))?;
    mount(
        Some("tmpfs"),
        &at.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .map_err(errno("mount /dev/shm"))?;
    Ok(())
}

/// Only the run user is mapped: the root is read-only but for the scratch dirs, as
/// `readOnlyRootFilesystem` with emptyDir volumes would have it.
pub fn read_only(root: &Path) -> Result<(), String> {
    for d in ["tmp", "var/tmp"] {
        if !std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        mount(
            Some("tmpfs"),
            &root.join(d),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777,size=262144k"),
        )
        .map_err(errno("mount a tmpfs"))?;
    }
    mount(
        NONE,
        root,
        NONE,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        NONE,
    )
    .map_err(errno("make the root read-only"))
}

//! How the sandbox maps user and group ids, decided by who runs pare:
//!
//! - as root, no user namespace: every id is itself, the materialized files carry the image's
//!   owners;
//! - as an ordinary user with subordinate ranges (`/etc/subuid`, `/etc/subgid`, Debian's
//!   `uidmap` for the setuid `newuidmap`/`newgidmap`), as rootless Podman does: inside the
//!   user namespace 0 is the caller and 1..=N the range, the image's owners are set from inside
//!   before the program starts and given back to the caller once it has ended (so pare can
//!   remove the copy);
//! - otherwise only the run user is mapped (to the caller): ownership is not faithful, and the
//!   root is read-only but for the scratch directories.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{Gid, Uid, fchownat};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mapping {
    /// pare runs as root: every id maps to itself.
    Identity,
    /// An ordinary user without subordinate ranges: the run user is the caller, nothing else
    /// is mapped.
    Single { outer_uid: u32, outer_gid: u32 },
    /// An ordinary user with subordinate ranges: 0 is the caller, 1..=count the range.
    Ranges {
        outer_uid: u32,
        outer_gid: u32,
        uid_start: u32,
        uid_count: u32,
        gid_start: u32,
        gid_count: u32,
    },
}

impl Mapping {
    /// The mapping for a sandbox whose program runs as `uid`:`gid`.
    pub fn choose(uid: u32, gid: u32) -> Mapping {
        let (outer_uid, outer_gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
        if outer_uid == 0 {
            return Mapping::Identity;
        }
        let ranges = subordinate(Path::new("/etc/subuid"), outer_uid)
            .zip(subordinate(Path::new("/etc/subgid"), outer_uid));
        match ranges {
            Some(((uid_start, uid_count), (gid_start, gid_count)))
                if uid <= uid_count
                    && gid <= gid_count
                    && tool("newuidmap").is_some()
                    && tool("newgidmap").is_some() =>
            {
                Mapping::Ranges {
                    outer_uid,
                    outer_gid,
                    uid_start,
                    uid_count,
                    gid_start,
                    gid_count,
                }
            }
            _ => Mapping::Single {
                outer_uid,
                outer_gid,
            },
        }
    }

    /// Whether `id` (a uid, or a gid with `group`) can be seen inside.
    pub fn maps(&self, id: u32, group: bool) -> bool {
        match *self {
            Mapping::Identity => true,
            Mapping::Single { .. } => false,
            Mapping::Ranges {
                uid_count,
                gid_count,
                ..
            } => id <= if group { gid_count } else { uid_count },
        }
    }

    /// Whether file ownership inside is the image's.
    pub fn faithful(&self) -> bool {
        !matches!(self, Mapping::Single { .. })
    }

    /// A line saying what the sandbox cannot reproduce under this mapping.
    pub fn note(&self) -> Option<String> {
        match self {
            Mapping::Single { .. } => Some(
                "not running as root and no subordinate id range (/etc/subuid, /etc/subgid with newuidmap from Debian's uidmap) for this user: only the run user is mapped, so file ownership is not faithful (the root is read-only but for /tmp)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The first `start:count` range of `/etc/subuid`-style `file` for the user `uid` (by name or
/// number).
pub fn subordinate(file: &Path, uid: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    parse_subordinate(&text, name.as_deref(), uid)
}

fn parse_subordinate(text: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let number = uid.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != number && Some(who) != name {
            return None;
        }
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

/// A setuid helper in the usual places.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// From pare (outside): write `pid`'s id maps with `newuidmap` and `newgidmap`. `pid` has just
/// made its user namespace.
pub fn write_maps(pid: u32, m: &Mapping) -> Result<(), String> {
    let Mapping::Ranges {
        outer_uid,
        outer_gid,
        uid_start,
        uid_count,
        gid_start,
        gid_count,
    } = *m
    else {
        return Ok(());
    };
    for (name, outer, start, count) in [
        ("newuidmap", outer_uid, uid_start, uid_count),
        ("newgidmap", outer_gid, gid_start, gid_count),
    ] {
        let exe = tool(name).ok_or_else(|| format!("{name} is not installed"))?;
        let out = std::process::Command::new(&exe)
            .arg(pid.to_string())
            .args(["0", &outer.to_string(), "1"])
            .args(["1", &start.to_string(), &count.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{name} {pid} 0 {outer} 1 1 {start} {count}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// An image path's owner, set from inside the user namespace (ranges mapping).
pub type Owner = (String, u32, u32);

/// Inside the user namespace, before anything of the image runs: give the materialized
/// entries their image owners (pare left out those the ranges cannot map). Each path's parents
/// are walked with `O_NOFOLLOW` from `root`, so nothing outside it is touched; an entry that
/// cannot be reached that way keeps its owner.
pub fn set_owners(root: &OwnedFd, owners: &[Owner]) {
    for (path, uid, gid) in owners {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path.as_str()),
        };
        if let Some(dir) = open_beneath(root, parent) {
            let _ = fchownat(
                &dir,
                name,
                Some(Uid::from_raw(*uid)),
                Some(Gid::from_raw(*gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
}

/// `rel` under `root`, each component a real directory (never a symlink).
fn open_beneath(root: &OwnedFd, rel: &str) -> Option<OwnedFd> {
    let mut cur = root.try_clone().ok()?;
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        if c == ".." || c == "." {
            return None;
        }
        cur = openat(
            &cur,
            c,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
    }
    Some(cur)
}

/// Most entries walked when giving the copy back.
const MAX_ENTRIES: usize = 2_000_000;

/// Inside the user namespace, once the program has ended: every entry under `root` (on its
/// filesystem, no symlink followed) owned by anyone else goes back to 0 (the caller), so pare
/// can remove the copy, including what the program made.
pub fn give_back(root: &OwnedFd) {
    let Ok(st) = nix::sys::stat::fstat(root) else {
        return;
    };
    let mut budget = MAX_ENTRIES;
    walk(root, st.st_dev, &mut budget);
}

fn walk(dir: &OwnedFd, dev: u64, budget: &mut usize) {
    let Ok(fd) = nix::unistd::dup(dir) else {
        return;
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(fd) else {
        return;
    };
    let names: Vec<std::ffi::CString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(st) = fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if st.st_uid != 0 || st.st_gid != 0 {
            let _ = fchownat(
                dir,
                name.as_c_str(),
                Some(Uid::from_raw(0)),
                Some(Gid::from_raw(0)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        if is_dir(&st)
            && st.st_dev == dev
            && let Ok(sub) = openat(
                dir,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        {
            walk(&sub, dev, budget);
        }
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_found_by_name_or_number() {
        let text = "alice:100000:65536\n# x\n1001:200000:1000\nbob:abc:1\ncarol:1:0\n";
        assert_eq!(
            parse_subordinate(text, Some("alice"), 1000),
            Some((100000, 65536))
        );
        assert_eq!(parse_subordinate(text, None, 1001), Some((200000, 1000)));
        assert_eq!(parse_subordinate(text, Some("bob"), 5), None);
        assert_eq!(parse_subordinate(text, Some("carol"), 6), None);
        assert_eq!(parse_subordinate(text, Some("dave"), 7), None);
        assert_eq!(
            parse_subordinate("eve:4294967295:2\n", Some("eve"), 8),
            None
        );
    }
}

//! How the sandbox maps user and group ids, decided by who runs pare. Image code never runs as
//! host uid 0: every sandbox has a user namespace.
//!
//! - as root: the image's ids 0..N map to an unprivileged host range (a `pare` or `root` entry
//!   of `/etc/subuid`/`/etc/subgid`, else [`FIXED_START`]..+[`FIXED_COUNT`], moved above any
//!   `/etc/subuid` entry it would overlap), written by pare into the helper's
//!   `/proc/PID/uid_map`; "root" in the image is nobody on the host, ownership inside is the
//!   image's;
//! - as an ordinary user with subordinate ranges (`/etc/subuid`, `/etc/subgid`, Debian's
//!   `uidmap` for the setuid `newuidmap`/`newgidmap`), as rootless Podman does: inside the
//!   user namespace 0 is the caller and 1..=N the range;
//! - otherwise only the run user is mapped (to the caller): ownership is not faithful, and the
//!   root is read-only but for the scratch directories.
//!
//! In the first two cases the sandbox's writable root is a copy in its own tmpfs, where the
//! image owners ([`Owner`]) are set from inside.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

/// First host id of the range root's sandboxes use when `/etc/subuid` names neither `pare`
/// nor `root`: 0x70000000, above useradd's default subordinate ranges (100000..600100000)
/// and systemd-nspawn's container ranges (up to 0x6FFFFFFF), below systemd's foreign range
/// (0x7FFE0000) and the ids at and above 2^31 that some tools read as negative.
pub const FIXED_START: u32 = 0x7000_0000;
/// How many ids that range maps (0..=65535: every id a Debian image uses, nobody included).
pub const FIXED_COUNT: u32 = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mapping {
    /// pare runs as root: inside ids 0..count are host ids start..start+count.
    Root {
        uid_start: u32,
        uid_count: u32,
        gid_start: u32,
        gid_count: u32,
    },
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
            let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
            let ((uid_start, uid_count), (gid_start, gid_count)) =
                root_ranges(&text("/etc/subuid"), &text("/etc/subgid"));
            return Mapping::Root {
                uid_start,
                uid_count,
                gid_start,
                gid_count,
            };
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
            Mapping::Root {
                uid_count,
                gid_count,
                ..
            } => id < if group { gid_count } else { uid_count },
            Mapping::Single { .. } => false,
            Mapping::Ranges {
                uid_count,
                gid_count,
                ..
            } => id <= if group { gid_count } else { uid_count },
        }
    }

    /// The host uid an inside uid runs as (what `ps` on the host shows).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        match *self {
            Mapping::Root {
                uid_start,
                uid_count,
                ..
            } => (id < uid_count).then(|| uid_start + id),
            Mapping::Single { outer_uid, .. } => Some(outer_uid),
            Mapping::Ranges {
                outer_uid,
                uid_start,
                uid_count,
                ..
            } => match id {
                0 => Some(outer_uid),
                n if n <= uid_count => Some(uid_start + n - 1),
                _ => None,
            },
        }
    }

    /// The host ids that own the materialized copy, so that the sandbox's root (inside 0) can
    /// read it: root's range start; `None` where pare's own ids already are inside 0 or the run
    /// user.
    pub fn copy_owner(&self) -> Option<(u32, u32)> {
        match *self {
            Mapping::Root {
                uid_start,
                gid_start,
                ..
            } => Some((uid_start, gid_start)),
            _ => None,
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

/// Root's ranges: a `pare`, else `root`, entry of each file; else the fixed range, moved above
/// every entry of the file that it would overlap.
fn root_ranges(subuid: &str, subgid: &str) -> ((u32, u32), (u32, u32)) {
    let pick = |text: &str| {
        parse_subordinate(text, Some("pare"), u32::MAX)
            .or_else(|| parse_subordinate(text, Some("root"), 0))
            .unwrap_or_else(|| (clear_of(text, FIXED_START, FIXED_COUNT), FIXED_COUNT))
    };
    (pick(subuid), pick(subgid))
}

/// `start`, or the first 64 Ki-aligned start above every range of `text` that
/// `start..start+count` overlaps.
fn clear_of(text: &str, mut start: u32, count: u32) -> u32 {
    let ranges: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (_, s, c) = (f.next()?, f.next()?, f.next()?);
            let (s, c) = (s.parse::<u64>().ok()?, c.parse::<u64>().ok()?);
            Some((s, s + c))
        })
        .collect();
    // Each move passes one range; as many moves as ranges settle it.
    for _ in 0..=ranges.len() {
        let (lo, hi) = (start as u64, start as u64 + count as u64);
        let Some(end) = ranges
            .iter()
            .filter(|(s, e)| *s < hi && lo < *e)
            .map(|(_, e)| *e)
            .max()
        else {
            break;
        };
        let next = end.div_ceil(0x10000) * 0x10000;
        match u32::try_from(next) {
            Ok(n) if n.checked_add(count).is_some_and(|e| e < u32::MAX) => start = n,
            _ => break,
        }
    }
    start
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

/// From pare (outside): write `pid`'s id maps (as root directly, else with `newuidmap` and
/// `newgidmap`). `pid` has just made its user namespace.
pub fn write_maps(pid: u32, m: &Mapping) -> Result<(), String> {
    match *m {
        Mapping::Root {
            uid_start,
            uid_count,
            gid_start,
            gid_count,
        } => {
            // Root writes any map of a child namespace itself.
            for (file, start, count) in [
                ("uid_map", uid_start, uid_count),
                ("gid_map", gid_start, gid_count),
            ] {
                let p = format!("/proc/{pid}/{file}");
                std::fs::write(&p, format!("0 {start} {count}\n"))
                    .map_err(|e| format!("write {p}: {e}"))?;
            }
            Ok(())
        }
        // The fields in the order the two maps take them.
        Mapping::Ranges {
            outer_uid,
            uid_start,
            uid_count,
            outer_gid,
            gid_start,
            gid_count,
        } => {
            newidmap(pid, "newuidmap", outer_uid, uid_start, uid_count)?;
            newidmap(pid, "newgidmap", outer_gid, gid_start, gid_count)
        }
        Mapping::Single { .. } => Ok(()),
    }
}

/// `newuidmap PID 0 OUTER 1 1 START COUNT` (likewise newgidmap).
fn newidmap(pid: u32, name: &str, outer: u32, start: u32, count: u32) -> Result<(), String> {
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
    Ok(())
}

/// An image path's owner (relative path, uid, gid), set from inside the user namespace on the
/// sandbox's copy.
pub type Owner = (String, u32, u32);

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

    #[test]
    fn roots_range_avoids_every_subordinate_range() {
        // Nothing configured: the fixed range.
        assert_eq!(
            root_ranges("", ""),
            ((FIXED_START, FIXED_COUNT), (FIXED_START, FIXED_COUNT))
        );
        // A pare (else root) entry wins.
        let text = "root:300000:65536\npare:400000:70000\n";
        assert_eq!(root_ranges(text, "root:5:6\n").0, (400000, 70000));
        assert_eq!(root_ranges(text, "root:500000:65536\n").1, (500000, 65536));
        // Entries overlapping the fixed range push it above them, 64 Ki-aligned, along a chain.
        let text = format!(
            "alice:{}:100\nbob:{}:65536\n",
            FIXED_START + 10,
            FIXED_START + 0x10000
        );
        assert_eq!(
            root_ranges(&text, "").0,
            (FIXED_START + 0x20000, FIXED_COUNT)
        );
        // Useradd's default ranges never touch it.
        let useradd = "u:100000:65536\nv:600100000:65536\n";
        assert_eq!(clear_of(useradd, FIXED_START, FIXED_COUNT), FIXED_START);
    }

    #[test]
    fn host_ids_under_each_mapping() {
        let root = Mapping::Root {
            uid_start: FIXED_START,
            uid_count: FIXED_COUNT,
            gid_start: FIXED_START,
            gid_count: FIXED_COUNT,
        };
        assert_eq!(root.host_uid(0), Some(FIXED_START));
        assert_eq!(root.host_uid(65532), Some(FIXED_START + 65532));
        assert_eq!(root.host_uid(70000), None);
        assert!(root.maps(65535, false) && !root.maps(65536, true));
        assert_eq!(root.copy_owner(), Some((FIXED_START, FIXED_START)));
        let ranges = Mapping::Ranges {
            outer_uid: 1000,
            outer_gid: 1000,
            uid_start: 100000,
            uid_count: 65536,
            gid_start: 100000,
            gid_count: 65536,
        };
        assert_eq!(ranges.host_uid(0), Some(1000));
        assert_eq!(ranges.host_uid(1), Some(100000));
        assert_eq!(ranges.copy_owner(), None);
    }
}

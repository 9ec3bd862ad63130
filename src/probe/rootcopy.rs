//! The sandbox's root: the materialized tree copied, inside the sandbox's own mount namespace
//! and user namespace, into a tmpfs sized to the image plus a scratch margin. What the program
//! writes stays in that tmpfs (it stops at ENOSPC, and goes when the sandbox does), the copy
//! pare made on disk is never written by image code, the host path never shows in the
//! program's `mountinfo`, and the image's owners are set on the copy from inside.
//!
//! The walk opens every directory with `O_NOFOLLOW` from a descriptor of the materialized root
//! and never follows a symlink; hard links stay hard links; modes, owners and times are set on
//! each directory after its children.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat, linkat, symlinkat};

/// Most entries copied.
const MAX_ENTRIES: usize = 4_000_000;
/// Deepest directory nesting copied (each level holds two descriptors).
const MAX_DEPTH: usize = 400;

/// What the copy made.
#[derive(Debug, Default, PartialEq)]
pub struct Copied {
    pub entries: usize,
    pub bytes: u64,
}

/// Copy the tree under `src` into `dst` (an empty directory). With `owners`, entries get
/// their image owner (0:0 when not listed); without, they keep the copier's.
pub fn copy_tree(
    src: &OwnedFd,
    dst: &OwnedFd,
    owners: Option<&HashMap<String, (u32, u32)>>,
) -> Result<Copied, String> {
    let mut cx = Cx {
        dst_root: dst.try_clone().map_err(|e| format!("dup: {e}"))?,
        owners,
        links: HashMap::new(),
        done: Copied::default(),
    };
    cx.dir(src, dst, "", 0)?;
    let st = nix::sys::stat::fstat(src).map_err(|e| format!("stat the root: {e}"))?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o1777);
    nix::sys::stat::fchmod(dst, mode).map_err(|e| format!("chmod the root: {e}"))?;
    Ok(cx.done)
}

struct Cx<'a> {
    dst_root: OwnedFd,
    owners: Option<&'a HashMap<String, (u32, u32)>>,
    /// (dev, inode) of a source file with several links → its path in the copy.
    links: HashMap<(u64, u64), String>,
    done: Copied,
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn open_dir(at: &OwnedFd, name: &std::ffi::CStr) -> nix::Result<OwnedFd> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl Cx<'_> {
    fn dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "/{rel}: nested deeper than {MAX_DEPTH} directories"
            ));
        }
        let fd = nix::unistd::dup(src).map_err(|e| format!("dup: {e}"))?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| format!("/{rel}: {e}"))?;
        let names: Vec<std::ffi::CString> = d
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            self.done.entries += 1;
            if self.done.entries > MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            let path = match rel {
                "" => name.to_string_lossy().into_owned(),
                _ => format!("{rel}/{}", name.to_string_lossy()),
            };
            let e = |what: &str| {
                let path = path.clone();
                let what = what.to_string();
                move |err: nix::Error| format!("/{path}: {what}: {}", err.desc())
            };
            let st =
                fstatat(src, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(e("stat"))?;
            let mode = Mode::from_bits_truncate(st.st_mode & 0o1777);
            match kind(&st) {
                SFlag::S_IFDIR => {
                    mkdirat(dst, name.as_c_str(), Mode::from_bits_truncate(0o700))
                        .map_err(e("mkdir"))?;
                    let s = open_dir(src, &name).map_err(e("open"))?;
                    let t = open_dir(dst, &name).map_err(e("open"))?;
                    self.dir(&s, &t, &path, depth + 1)?;
                    fchmodat(dst, name.as_c_str(), mode, FchmodatFlags::FollowSymlink)
                        .map_err(e("chmod"))?;
                }
                SFlag::S_IFREG => {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = (st.st_nlink > 1).then(|| self.links.get(&key)).flatten() {
                        linkat(
                            &self.dst_root,
                            first.as_str(),
                            dst,
                            name.as_c_str(),
                            AtFlags::empty(),
                        )
                        .map_err(e("link"))?;
                        continue;
                    }
                    let from = openat(
                        src,
                        name.as_c_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(e("open"))?;
                    let to = openat(
                        dst,
                        name.as_c_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                    .map_err(e("create"))?;
                    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
                    self.done.bytes += std::io::copy(&mut from, &mut to)
                        .map_err(|err| format!("/{path}: copy: {err}"))?;
                    nix::sys::stat::fchmod(to.as_fd(), mode).map_err(e("chmod"))?;
                    if st.st_nlink > 1 {
                        self.links.insert(key, path.clone());
                    }
                }
                SFlag::S_IFLNK => {
                    let target = readlinkat(src, name.as_c_str()).map_err(e("readlink"))?;
                    symlinkat(target.as_os_str(), dst, name.as_c_str()).map_err(e("symlink"))?;
                }
                // The materializer makes no devices, FIFOs or sockets.
                _ => continue,
            }
            if let Some(owners) = self.owners {
                let (uid, gid) = owners.get(&path).copied().unwrap_or((0, 0));
                fchownat(
                    dst,
                    name.as_c_str(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(e("chown"))?;
            }
            set_times(dst, &name, &st);
        }
        Ok(())
    }
}

/// The source's modification time on the copy (not following a symlink); best effort.
fn set_times(dir: &OwnedFd, name: &std::ffi::CStr, st: &FileStat) {
    let t = libc::timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec,
    };
    let times = [t, t];
    // SAFETY: a directory descriptor, a NUL-terminated name and two timespecs.
    unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    /// Files, modes, a hard link, a symlink pointing out (copied as a link, not followed), a
    /// read-only directory and the times come across; nothing outside `dst` is written.
    #[test]
    fn the_copy_is_faithful_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst, host) = (d.path().join("s"), d.path().join("d"), d.path().join("h"));
        for p in [&src, &dst, &host] {
            std::fs::create_dir(p).unwrap();
        }
        std::fs::create_dir_all(src.join("etc/ro")).unwrap();
        std::fs::write(src.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::fs::hard_link(src.join("etc/passwd"), src.join("etc/link")).unwrap();
        std::fs::write(src.join("etc/ro/f"), "x").unwrap();
        std::fs::set_permissions(src.join("etc/ro/f"), PermissionsExt::from_mode(0o640)).unwrap();
        std::fs::set_permissions(src.join("etc/ro"), PermissionsExt::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink(&host, src.join("escape")).unwrap();
        let f = std::fs::File::open(src.join("etc/passwd")).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        let got = copy_tree(&open(&src), &open(&dst), None).unwrap();
        assert_eq!(got.entries, 6);
        assert_eq!(got.bytes, 11 + 1);
        let a = std::fs::metadata(dst.join("etc/passwd")).unwrap();
        let b = std::fs::metadata(dst.join("etc/link")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(a.mtime(), 1000);
        assert_eq!(
            std::fs::metadata(dst.join("etc/ro/f")).unwrap().mode() & 0o7777,
            0o640
        );
        assert_eq!(
            std::fs::metadata(dst.join("etc/ro")).unwrap().mode() & 0o7777,
            0o555
        );
        assert_eq!(std::fs::read_link(dst.join("escape")).unwrap(), host);
        assert!(std::fs::read_dir(&host).unwrap().next().is_none());
        std::fs::set_permissions(src.join("etc/ro"), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dst.join("etc/ro"), PermissionsExt::from_mode(0o755)).unwrap();
    }
}

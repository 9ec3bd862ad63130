//! An image's merged filesystem written out as a directory tree for the sandbox, inside a temp
//! dir pare owns. Image paths come from the merged index (normalized, never `..`); every parent
//! is checked to be a directory pare made before anything is created under it, so nothing is
//! ever written through a symlink of the image. Devices and FIFOs are not made; setuid and
//! setgid bits are not kept (the sandbox sets `no_new_privs` anyway); the image's owners are
//! listed for the sandbox to set on its own copy.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rootfs::{Kind, Rootfs, display};
use crate::trace::LayerContents;

/// What was written, and what was not.
#[derive(Debug, Default)]
pub struct Materialized {
    pub files: usize,
    pub bytes: u64,
    /// Entries left out, with why (a device, a path under one of the image's symlinks).
    pub skipped: Vec<String>,
    /// The entries the image gives another owner than root (path relative to the root, uid,
    /// gid), for the sandbox to set on its copy from inside its user namespace.
    pub owners: Vec<(String, u32, u32)>,
    /// Entries written (hard links and directories included).
    pub entries: usize,
}

/// Directories the sandbox mounts over: made empty and real whatever the image has there.
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
];

fn io_err(p: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |e| Error::io(p, e)
}

/// Whether `dir` (a path under `root`) is a directory pare made: every component from `root`
/// down is a real directory, not a symlink.
fn real_dir(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Write `fs` under `root` (an empty directory), every entry owned by `owner` when given
/// (the sandbox's root), the image's owners listed apart.
pub fn materialize(
    fs: &Rootfs,
    contents: &mut LayerContents,
    root: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Materialized> {
    use crate::trace::Contents as _;
    let files: Vec<String> = fs
        .nodes
        .iter()
        .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
        .map(|(p, _)| p.clone())
        .collect();
    contents.prefetch(fs, &files)?;
    let mut out = Materialized::default();
    let mut links: HashMap<(usize, u64), PathBuf> = HashMap::new();
    let mut dir_modes: Vec<(PathBuf, u32, u64)> = Vec::new();
    for (path, node) in &fs.nodes {
        if path.is_empty() {
            continue;
        }
        let top = path.split('/').next().unwrap_or("");
        if MOUNT_POINTS.iter().any(|(m, _)| *m == top) && top != "tmp" {
            continue;
        }
        let parent = match path.rsplit_once('/') {
            Some((p, _)) => p,
            None => "",
        };
        if !real_dir(root, parent) {
            out.skipped
                .push(format!("{}: under a symlink or a file", display(path)));
            continue;
        }
        let host = root.join(path);
        let mode = node.mode & 0o1777;
        match &node.kind {
            Kind::Dir => {
                match std::fs::create_dir(&host) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(&host, e)),
                }
                // Writable by pare until every child is in; the image's mode afterwards.
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(&host))?;
                dir_modes.push((host.clone(), mode, node.mtime));
            }
            Kind::File { layer, entry, .. } => {
                if let Some(first) = links.get(&(*layer, *entry)) {
                    std::fs::hard_link(first, &host).map_err(io_err(&host))?;
                } else {
                    let local = contents.local(fs, path)?;
                    let mut src = local.open().map_err(io_err(&local.path))?;
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&host)
                        .map_err(io_err(&host))?;
                    out.bytes += io::copy(&mut src, &mut f).map_err(io_err(&host))?;
                    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode & 0o777))
                        .map_err(io_err(&host))?;
                    links.insert((*layer, *entry), host.clone());
                    out.files += 1;
                }
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &host).map_err(io_err(&host))?;
            }
            Kind::Device | Kind::Fifo => {
                out.skipped
                    .push(format!("{}: device or FIFO, not made", display(path)));
                continue;
            }
        }
        let (uid, gid) = (
            node.uid.min(u32::MAX as u64) as u32,
            node.gid.min(u32::MAX as u64) as u32,
        );
        out.entries += 1;
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&host, Some(u), Some(g)).map_err(io_err(&host))?;
        }
        if (uid, gid) != (0, 0) {
            out.owners.push((path.clone(), uid, gid));
        }
        if !node.is_dir() {
            set_mtime(&host, node.mtime);
        }
    }
    for (m, mode) in MOUNT_POINTS {
        let host = root.join(m);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&host).map_err(io_err(&host))?;
                std::fs::create_dir(&host).map_err(io_err(&host))?;
            }
            Err(_) => std::fs::create_dir(&host).map_err(io_err(&host))?,
        }
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&host, Some(u), Some(g)).map_err(io_err(&host))?;
        }
        // The image's own /tmp keeps its mode.
        if *m != "tmp" || !fs.nodes.get("tmp").is_some_and(|n| n.is_dir()) {
            dir_modes.push((host, *mode, 0));
        }
    }
    // Children first, so a read-only directory does not stop pare setting its children; a
    // directory's time last, as adding children changes it.
    for (host, mode, mtime) in dir_modes.into_iter().rev() {
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(&host))?;
        set_mtime(&host, mtime);
    }
    Ok(out)
}

/// The image's modification time on `host` (not following a symlink); best effort: a time
/// that cannot be set leaves the time of writing.
fn set_mtime(host: &Path, mtime: u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(host.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: mtime.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat(2) takes them.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::tar_of;

    /// A hostile tree: mount points that are symlinks out of the root, files under a symlink
    /// to a host directory, a hard link. Everything lands inside `root`; the mount points are
    /// real directories.
    #[test]
    fn nothing_is_written_through_the_images_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        let host_s = host.to_str().unwrap().to_string();
        let layer = tar_of(&[
            ("proc", "l:/"),
            ("tmp", "l:/etc"),
            ("escape", &format!("l:{host_s}")),
            ("etc", "d"),
            ("etc/passwd", "f:root:x:0:0::/root:/bin/sh\n"),
            ("etc/link", "h:etc/passwd"),
            ("dev", "d"),
            ("dev/evil", "f:x"),
        ]);
        // A second layer writing through the symlinks.
        let upper = tar_of(&[("escape/pwned", "f:x"), ("tmp/pwned", "f:x")]);
        let mut fs = Rootfs::empty();
        fs.apply_layer(0, &layer[..]).unwrap();
        let _ = fs.apply_layer(1, &upper[..]);
        // Files come from the layer bytes: spool them as the merge would.
        let spool = d.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let blob = |name: &str, bytes: &[u8]| crate::rootfs::tests::blob_at(d.path(), name, bytes);
        let fs = Rootfs::merge(vec![blob("l0", &layer), blob("l1", &upper)], None).unwrap_or(fs);
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let mut contents = LayerContents::new(&spool);
        let m = materialize(&fs, &mut contents, &root, None).unwrap();
        assert!(
            std::fs::read_dir(&host).unwrap().next().is_none(),
            "wrote into the host dir"
        );
        for mp in ["proc", "tmp", "dev"] {
            let md = std::fs::symlink_metadata(root.join(mp)).unwrap();
            assert!(md.is_dir() && !md.file_type().is_symlink(), "{mp}");
        }
        assert!(!root.join("dev/evil").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/link")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert!(m.files >= 1);
        // The image's times (0 in these layers), also on directories and symlinks.
        use std::os::unix::fs::MetadataExt;
        for p in ["etc/passwd", "etc", "escape"] {
            let md = std::fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!(md.mtime(), 0, "{p}");
        }
    }
}

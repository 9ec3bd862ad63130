//! Inspecting unpacked root filesystems and running programs in them with `chroot`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;

/// Every path under `rootfs` (symlinks not followed) as image-absolute paths (`/usr/bin/jq`)
/// with their lstat metadata, sorted.
pub fn walk_rootfs(rootfs: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let image_path = Path::new("/").join(path.strip_prefix(root).expect("under root"));
            let is_dir = meta.is_dir();
            out.push((image_path, meta));
            if is_dir {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(rootfs, rootfs, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// All image-absolute paths in `rootfs`.
pub fn list_paths(rootfs: &Path) -> BTreeSet<String> {
    walk_rootfs(rootfs)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

/// Image-absolute paths of files with setuid or setgid bits.
pub fn find_setid_files(rootfs: &Path) -> Vec<PathBuf> {
    walk_rootfs(rootfs)
        .into_iter()
        .filter(|(_, meta)| meta.mode() & 0o6000 != 0)
        .map(|(p, _)| p)
        .collect()
}

/// lstat permission bits (`& 0o7777`) of `image_path` in `rootfs`, if it exists.
pub fn mode_of(rootfs: &Path, image_path: &str) -> Option<u32> {
    fs::symlink_metadata(rootfs.join(image_path.trim_start_matches('/')))
        .ok()
        .map(|m| m.mode() & 0o7777)
}

/// Run `argv` inside `rootfs` via `chroot --userspec=65532:65532` with only `env` set.
/// Requires root (guard tests with [`is_root`]).
pub fn run_chroot(rootfs: &Path, argv: &[&str], env: &[(&str, &str)]) -> Output {
    run_chroot_as(rootfs, &format!("{NONROOT_UID}:{NONROOT_UID}"), argv, env)
}

/// Like [`run_chroot`] with an explicit `--userspec` (e.g. `"0:0"`).
pub fn run_chroot_as(rootfs: &Path, userspec: &str, argv: &[&str], env: &[(&str, &str)]) -> Output {
    assert!(
        is_root(),
        "run_chroot needs root; guard the test with is_root()"
    );
    assert!(!argv.is_empty(), "run_chroot needs a program");
    // A container runtime gives the process a /proc (glibc needs /proc/self/exe to expand
    // $ORIGIN in the executable's RUNPATH): mount one, in a private mount namespace so it
    // goes away with the process.
    let proc_dir = rootfs.join("proc");
    if !proc_dir.exists() {
        fs::create_dir(&proc_dir).expect("create /proc mount point in the unpacked rootfs");
    }
    run_capture(
        Command::new(require_tool("unshare"))
            .arg("--mount")
            .arg("--pid")
            .arg("--fork")
            .arg(format!("--mount-proc={}", proc_dir.display()))
            .arg(require_tool("chroot"))
            .arg(format!("--userspec={userspec}"))
            .arg(rootfs)
            .args(argv)
            .env_clear()
            .envs(env.iter().copied()),
    )
}

/// [`run_chroot`] when this runs as root; else `None`, after [`skip`] (`not root: chroot run`).
#[track_caller]
pub fn run_chroot_if_root(rootfs: &Path, argv: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    root_or_skip("chroot run").then(|| run_chroot(rootfs, argv, env))
}

/// `argv` run in `rootfs` by [`run_chroot`] succeeds and prints `expect` (trimmed); when this
/// does not run as root, a [`skip`] instead.
#[track_caller]
pub fn assert_chroot_prints(rootfs: &Path, argv: &[&str], env: &[(&str, &str)], expect: &str) {
    if let Some(out) = run_chroot_if_root(rootfs, argv, env) {
        assert!(out.status.success(), "{argv:?}: {}", describe_output(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect);
    }
}

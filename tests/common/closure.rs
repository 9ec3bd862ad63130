//! Host closures: a binary, its `PT_INTERP` and libraries (via `ldd`), with their symlink chains.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::*;

/// One item needed to reproduce a host path inside an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClosureEntry {
    /// A regular file: copy `host` (a canonical host path) to `image_path` (no leading slash).
    File {
        host: PathBuf,
        image_path: String,
        mode: u32,
    },
    /// A symlink met while resolving, with its literal target.
    Symlink { image_path: String, target: String },
}

impl ClosureEntry {
    pub fn image_path(&self) -> &str {
        match self {
            ClosureEntry::File { image_path, .. } | ClosureEntry::Symlink { image_path, .. } => {
                image_path
            }
        }
    }
}

/// The paths `ldd` prints for `binary`: the interpreter and every shared library, exactly as
/// printed (not canonicalised), in ldd's order. Empty for static binaries. Panics on
/// "not found" libraries.
pub fn ldd_paths(binary: &Path) -> Vec<PathBuf> {
    let output = run_capture(Command::new("ldd").arg(binary));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let text = format!("{stdout}{stderr}");
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "ldd {} failed:\n{}",
            binary.display(),
            describe_output(&output)
        );
        return Vec::new();
    }
    let mut paths = Vec::new();
    for line in stdout.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        let candidate = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                assert!(
                    !rest.starts_with("not found"),
                    "ldd {}: library {} not found",
                    binary.display(),
                    name.trim()
                );
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if candidate.starts_with('/') {
            let path = PathBuf::from(candidate);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// Resolve absolute host `path` component by component like the kernel does, recording every
/// symlink met (at its location, with its literal target) and finally the regular file at its
/// canonical location.
///
/// E.g. `/lib64/ld-linux-x86-64.so.2` on usrmerged Debian yields
/// `lib64 -> usr/lib64`, `usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`,
/// `lib -> usr/lib`, and the file `usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`.
pub fn host_path_chain(path: &Path) -> Vec<ClosureEntry> {
    assert!(
        path.is_absolute(),
        "host path {} must be absolute",
        path.display()
    );
    let mut out = Vec::new();
    let mut current = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir => None,
            other => Some(other.as_os_str().to_owned()),
        })
        .collect();
    let mut hops = 0;
    let rel = |p: &Path| {
        p.strip_prefix("/")
            .expect("absolute")
            .to_string_lossy()
            .into_owned()
    };
    while let Some(component) = pending.pop_front() {
        if component == "." {
            continue;
        }
        if component == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&component);
        let meta = fs::symlink_metadata(&candidate).unwrap_or_else(|e| {
            panic!(
                "resolving {}: lstat {}: {e}",
                path.display(),
                candidate.display()
            )
        });
        if meta.file_type().is_symlink() {
            hops += 1;
            assert!(hops <= 40, "too many symlinks resolving {}", path.display());
            let target = fs::read_link(&candidate)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", candidate.display()));
            let entry = ClosureEntry::Symlink {
                image_path: rel(&candidate),
                target: target.to_string_lossy().into_owned(),
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            for c in target.components().rev() {
                if c != Component::RootDir {
                    pending.push_front(c.as_os_str().to_owned());
                }
            }
        } else if meta.is_dir() {
            current = candidate;
        } else {
            assert!(
                pending.is_empty(),
                "resolving {}: {} is not a directory",
                path.display(),
                candidate.display()
            );
            out.push(ClosureEntry::File {
                image_path: rel(&candidate),
                host: candidate,
                mode: meta.mode() & 0o7777,
            });
        }
    }
    out
}

/// Everything needed to run host `binary` in an otherwise empty image: the binary itself, its
/// `PT_INTERP` and all libraries `ldd` lists, each via [`host_path_chain`]. Deduplicated.
pub fn host_closure(binary: &Path) -> Vec<ClosureEntry> {
    let mut out: Vec<ClosureEntry> = Vec::new();
    for path in std::iter::once(binary.to_path_buf()).chain(ldd_paths(binary)) {
        for entry in host_path_chain(&path) {
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

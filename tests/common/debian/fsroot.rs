//! Unpacked roots: resolving paths inside them, their regular files, ELF interpreters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Resolve image path `path` (relative ones against image directory `cwd`) inside `root` the
/// way the kernel would inside a chroot: symlinks followed within the root (an absolute target
/// starts again at the root, `..` stops at it), the last component only when `follow_last`.
/// The canonical image path when every component exists.
pub fn resolve_in_root(root: &Path, cwd: &str, path: &str, follow_last: bool) -> Option<String> {
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut current: Vec<String> = Vec::new();
    if !path.starts_with('/') {
        current = cwd
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
    }
    pending.extend(
        path.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    );
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            current.pop();
            continue;
        }
        let mut cand = current.clone();
        cand.push(c);
        let host = root.join(cand.join("/"));
        let meta = fs::symlink_metadata(&host).ok()?;
        let last = pending.is_empty();
        if meta.file_type().is_symlink() && (!last || follow_last) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&host).ok()?.to_string_lossy().into_owned();
            if target.starts_with('/') {
                current.clear();
            }
            for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                pending.push_front(t.to_string());
            }
        } else if meta.is_dir() {
            current = cand;
        } else {
            if !last {
                return None;
            }
            current = cand;
        }
    }
    Some(format!("/{}", current.join("/")))
}

/// Every regular file of an unpacked root: image path → size (hard links counted once, at
/// their first path).
pub fn regular_files(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
                out.insert(rel, m.len());
            }
        }
    }
    out
}

/// `PT_INTERP` of an ELF file, if it has one.
pub fn elf_interp(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = bytes[4] == 2;
    let le = bytes[5] == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let b = bytes.get(off..off + n)?;
        let mut v: u64 = 0;
        for i in 0..n {
            let byte = if le { b[n - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if is64 {
        (rd(32, 8)?, rd(54, 2)?, rd(56, 2)?)
    } else {
        (rd(28, 4)?, rd(42, 2)?, rd(44, 2)?)
    };
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        if rd(ph, 4)? != 3 {
            continue;
        }
        let (off, size) = if is64 {
            (rd(ph + 8, 8)?, rd(ph + 32, 8)?)
        } else {
            (rd(ph + 4, 4)?, rd(ph + 16, 4)?)
        };
        let s = bytes.get(off as usize..(off + size) as usize)?;
        let s = s.split(|b| *b == 0).next()?;
        return Some(String::from_utf8_lossy(s).into_owned());
    }
    None
}

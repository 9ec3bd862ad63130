//! The index's nodes and paths: what a node is, where a copied file's bytes are, why a path
//! did not resolve, and the path helpers (stored paths have no leading slash; root is "").

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use crate::error::Error;

/// Where a file's bytes were copied: `len` bytes at `offset` of a local spool file (one spool
/// holds every file copied in one pass over a layer, so a pass writes one file, not thousands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub path: Arc<Path>,
    pub offset: u64,
    pub len: u64,
}

impl Local {
    /// A reader of exactly the file's bytes.
    pub fn open(&self) -> io::Result<io::Take<std::fs::File>> {
        use std::io::Seek;
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(io::SeekFrom::Start(self.offset))?;
        Ok(f.take(self.len))
    }

    /// The file's bytes, when there are at most `max`.
    pub fn read(&self, max: u64) -> io::Result<Vec<u8>> {
        if self.len > max {
            return Err(io::Error::other(format!("larger than {max} bytes")));
        }
        let mut out = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut out)?;
        if out.len() as u64 != self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the local copy is shorter than the file",
            ));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Bytes are entry number `entry` of layer `layer`.
    File {
        layer: usize,
        entry: u64,
        size: u64,
    },
    Dir,
    Symlink(String),
    Device,
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Layer the node comes from.
    pub layer: usize,
    /// Carries a `security.capability` xattr.
    pub capability: bool,
    /// Modification time from the tar header (seconds since the epoch).
    pub mtime: u64,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// Why a path did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    NotADirectory(String),
    Loop,
    Escape { link: String },
}

impl ResolveError {
    pub fn into_error(self, path: &str) -> Error {
        let reason = match self {
            ResolveError::NotFound => "no such file in the image".to_string(),
            ResolveError::NotADirectory(p) => format!("/{p} is not a directory"),
            ResolveError::Loop => "too many levels of symbolic links (a loop)".to_string(),
            ResolveError::Escape { link } => {
                format!("symlink /{link} points outside the image root")
            }
        };
        Error::path(display(path), reason)
    }
}

/// A resolved path: the canonical path (no symlink in it) and every symlink passed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: String,
    pub symlinks: Vec<String>,
}

/// A link name taken inside the root: empty, `.` and `..`-above-the-root components dropped.
pub(super) fn clamp(name: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// `usr/bin/jq` → `/usr/bin/jq` (paths are stored without the leading slash; root is "").
pub fn display(p: &str) -> String {
    format!("/{}", p.trim_start_matches('/'))
}

/// Normalise an archive path: strip `./` and `/`, drop `.` components, resolve `..` lexically.
/// Paths that climb above the root are refused.
pub fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

pub(super) fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

pub(super) fn base_of(p: &str) -> &str {
    p.rfind('/').map_or(p, |i| &p[i + 1..])
}

pub(super) fn dir_node(mode: u32, layer: usize) -> Node {
    Node {
        kind: Kind::Dir,
        mode,
        uid: 0,
        gid: 0,
        layer,
        capability: false,
        mtime: 0,
    }
}

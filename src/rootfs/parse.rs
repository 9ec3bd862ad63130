//! A layer's tar stream read into ops (what each entry does to the filesystem below it), the
//! part of a merge that depends only on the layer's bytes; its diff_id hashed on the way.

use std::io::{self, Read};
use std::sync::Arc;

use super::capture::{self, Capture, Captured};
use super::node::{Kind, Node, base_of, clamp, normalize, parent_of};
use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::targuard::TarGuard;

/// Longest path or link target accepted from a layer.
const MAX_PATH: usize = 4096;

/// One tar entry, as it acts on the filesystem below it.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// The root directory's own entry: its mode.
    RootMode(u32),
    /// `DIR/.wh..wh..opq`: hide what lower layers have under DIR.
    Opaque(String),
    /// `.wh.NAME`: delete NAME from lower layers.
    Whiteout(String),
    /// A hard link to an earlier path (normalized).
    HardLink { path: String, target: String },
    /// A file, directory, symlink, device or fifo (`layer` fields are set when applied).
    Put { path: String, node: Node },
    /// An entry skipped, and why (`numbered`: prefixed with the layer's number when applied).
    Warn { text: String, numbered: bool },
}

/// A layer's tar stream read once into what it does to the filesystem: the part of a merge
/// that depends only on the layer's bytes, so images sharing a layer can share its parse.
#[derive(Debug)]
pub struct ParsedLayer {
    pub(super) ops: Vec<Op>,
    /// sha256 of the uncompressed stream, when the parse was asked to hash it.
    pub diff_id: Option<String>,
    /// Bytes of the uncompressed stream.
    pub size: u64,
    /// Tar entries (whiteouts included, long-name and PAX records not) and their sizes.
    pub(super) entries: u64,
    pub(super) bytes: u64,
    /// Approximate bytes of memory held.
    pub footprint: usize,
    /// Files whose bytes this parse captured.
    pub captured: Arc<Captured>,
}

/// Most bytes of memory one kept parse may take.
const MAX_PARSE_BYTES: usize = 1 << 30;

impl ParsedLayer {
    /// Read a layer's tar stream to the end, keeping its ops. `layer` numbers error messages
    /// only.
    pub fn parse(layer: usize, reader: impl Read) -> Result<Self> {
        Self::parse_capturing(layer, reader, None)
    }

    /// [`ParsedLayer::parse`], copying the bytes of the files worth it into a spool in
    /// `capture`'s dir as they stream by.
    pub fn parse_capturing(
        layer: usize,
        reader: impl Read,
        capture: Option<Capture>,
    ) -> Result<Self> {
        Self::parse_with(layer, reader, capture, true)
    }

    /// [`ParsedLayer::parse_capturing`]; `hash`: whether to take the stream's diff_id (a
    /// sha256 of every uncompressed byte: a tenth of a merge's CPU).
    pub fn parse_with(
        layer: usize,
        reader: impl Read,
        capture: Option<Capture>,
        hash: bool,
    ) -> Result<Self> {
        let mut ops = Vec::new();
        let mut footprint = 0;
        let mut spooler = capture.map(capture::Spooler::new);
        let facts = parse_stream(layer, reader, spooler.as_mut(), hash, |op| {
            footprint += op_footprint(&op);
            if footprint > MAX_PARSE_BYTES {
                return Err(Error::malformed(
                    format!("layer {}", layer + 1),
                    format!("its index would take more than {MAX_PARSE_BYTES} bytes"),
                ));
            }
            ops.push(op);
            Ok(())
        })?;
        ops.shrink_to_fit();
        let captured = match spooler {
            Some(s) => Arc::new(s.finish()?),
            None => Arc::default(),
        };
        Ok(ParsedLayer {
            ops,
            diff_id: facts.diff_id,
            size: facts.size,
            entries: facts.entries,
            bytes: facts.bytes,
            footprint,
            captured,
        })
    }
}

/// What a layer's stream came to, besides its ops.
pub(super) struct StreamFacts {
    pub(super) diff_id: Option<String>,
    pub(super) size: u64,
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

/// Read a layer's tar stream to the end, handing each entry's op to `sink` in order.
pub(super) fn parse_stream(
    layer: usize,
    reader: impl Read,
    mut spooler: Option<&mut capture::Spooler>,
    hash: bool,
    mut sink: impl FnMut(Op) -> Result<()>,
) -> Result<StreamFacts> {
    let io_err = |e: io::Error| Error::io(format!("layer {}", layer + 1), e);
    let mut hashing = HashingReader::new(reader, hash);
    let (mut entries, mut bytes) = (0, 0);
    {
        let mut archive = tar::Archive::new(TarGuard::new(&mut hashing));
        for (ordinal, entry) in archive.entries().map_err(io_err)?.enumerate() {
            let mut entry = entry.map_err(io_err)?;
            if let Some(op) = parse_entry(layer, ordinal as u64, &mut entry)? {
                if let (
                    Some(sp),
                    Op::Put {
                        path,
                        node:
                            Node {
                                kind: Kind::File { size, .. },
                                ..
                            },
                    },
                ) = (spooler.as_deref_mut(), &op)
                {
                    sp.offer(ordinal as u64, path, *size, &mut entry)?;
                }
                sink(op)?;
            }
            if !is_meta(entry.header().entry_type()) {
                entries += 1;
                bytes += entry.size();
            }
        }
    }
    // Read to the end: the diff_id covers the whole stream, and a tar's trailing bytes are
    // read (and checked against the blob's digest) either way.
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err)?;
    let (diff_id, size) = hashing.finish();
    Ok(StreamFacts {
        diff_id,
        size,
        entries,
        bytes,
    })
}

fn op_footprint(op: &Op) -> usize {
    std::mem::size_of::<Op>()
        + match op {
            Op::Opaque(s) | Op::Whiteout(s) | Op::Warn { text: s, .. } => s.len(),
            Op::HardLink { path, target } => path.len() + target.len(),
            Op::Put { path, node } => {
                path.len()
                    + match &node.kind {
                        Kind::Symlink(t) => t.len(),
                        _ => 0,
                    }
            }
            Op::RootMode(_) => 0,
        }
}

/// Long-name and PAX records: part of the next entry, not entries of their own.
fn is_meta(et: tar::EntryType) -> bool {
    matches!(
        et,
        tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
    )
}

/// What one tar entry does, or `None` for records that do nothing on their own.
fn parse_entry<R: Read>(
    layer: usize,
    ordinal: u64,
    entry: &mut tar::Entry<R>,
) -> Result<Option<Op>> {
    let et = entry.header().entry_type();
    if is_meta(et) {
        return Ok(None);
    }
    let bad = |what: String| Error::malformed(format!("layer {}", layer + 1), what);
    let raw = entry.path_bytes().into_owned();
    let Ok(raw) = String::from_utf8(raw) else {
        return Ok(Some(Op::Warn {
            text: "skipped an entry with a non-UTF-8 name".into(),
            numbered: true,
        }));
    };
    if raw.len() > MAX_PATH || raw.contains('\0') {
        return Err(bad("entry name too long or with NUL".into()));
    }
    let Some(path) = normalize(&raw) else {
        return Err(bad(format!("entry {raw:?} climbs out of the root with ..")));
    };
    if path.is_empty() {
        // The root itself: take its metadata if it is a directory.
        if et == tar::EntryType::Directory {
            let mode = entry.header().mode().unwrap_or(0o755);
            return Ok(Some(Op::RootMode(mode & 0o7777)));
        }
        return Ok(None);
    }
    let base = base_of(&path);
    let dir = parent_of(&path).to_string();
    if base == ".wh..wh..opq" {
        return Ok(Some(Op::Opaque(dir)));
    }
    if let Some(name) = base.strip_prefix(".wh.") {
        // `.wh.`, `.wh..`, `.wh...` delete nothing a layer could mean (a naive extractor would
        // delete the parent directory): an attack or a broken producer.
        if name.is_empty() || name == "." || name == ".." {
            return Err(bad(format!("whiteout {raw:?} names no entry: refused")));
        }
        if name.starts_with(".wh.") {
            // Other aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not changes.
            return Ok(Some(Op::Warn {
                text: format!("skipped aufs metadata entry {raw:?}"),
                numbered: true,
            }));
        }
        let target = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        return Ok(Some(Op::Whiteout(target)));
    }
    let h = entry.header();
    let mode = h.mode().unwrap_or(0o644) & 0o7777;
    let uid = h.uid().unwrap_or(0);
    let gid = h.gid().unwrap_or(0);
    let mtime = h.mtime().unwrap_or(0);
    let capability = match entry.pax_extensions() {
        Ok(Some(exts)) => exts
            .flatten()
            .any(|x| x.key_bytes() == b"SCHILY.xattr.security.capability"),
        _ => false,
    };
    let link = || -> Result<String> {
        let l = entry
            .link_name_bytes()
            .map(|b| b.into_owned())
            .unwrap_or_default();
        let l = String::from_utf8(l)
            .map_err(|_| bad(format!("link target of /{path} is not UTF-8")))?;
        if l.len() > MAX_PATH || l.contains('\0') {
            return Err(bad(format!("bad link target for /{path}")));
        }
        Ok(l)
    };
    let kind = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File {
                layer,
                entry: ordinal,
                size: entry.size(),
            }
        }
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink(link()?),
        tar::EntryType::Link => {
            // containerd takes the name inside the root: absolute names and `..` above the
            // root are clamped to it.
            let target = clamp(&link()?);
            if target.is_empty() {
                return Err(bad(format!(
                    "hard link /{path} names the root directory: the layer cannot be extracted"
                )));
            }
            return Ok(Some(Op::HardLink { path, target }));
        }
        tar::EntryType::Char | tar::EntryType::Block => Kind::Device,
        tar::EntryType::Fifo => Kind::Fifo,
        other => {
            return Ok(Some(Op::Warn {
                text: format!("/{path}: unsupported tar entry type {other:?}; skipped"),
                numbered: false,
            }));
        }
    };
    Ok(Some(Op::Put {
        path,
        node: Node {
            kind,
            mode,
            uid,
            gid,
            layer,
            capability,
            mtime,
        },
    }))
}

/// A reader that hashes and counts what passes through it.
/// Counts the stream's bytes, and hashes them when asked.
struct HashingReader<R> {
    inner: R,
    hasher: Option<HashingWriter<io::Sink>>,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R, hash: bool) -> Self {
        HashingReader {
            inner,
            hasher: hash.then(|| HashingWriter::new(io::sink())),
            count: 0,
        }
    }
    fn finish(self) -> (Option<String>, u64) {
        match self.hasher {
            Some(h) => {
                let (_, d, n) = h.finish();
                (Some(d), n)
            }
            None => (None, self.count),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            io::Write::write_all(h, &buf[..n])?;
        }
        Ok(n)
    }
}
#[cfg(test)]
mod tests {
    use crate::rootfs::tests::{merged, tar_of};

    #[test]
    fn rejects_escaping_entries() {
        let evil = tar_of(&[("a", "f:1")]);
        let mut evil = evil;
        // Patch the name to "../a" directly in the header (tar-rs refuses to write it).
        evil[..4].copy_from_slice(b"../a");
        let mut h = tar::Header::from_byte_slice(&evil[..512]).clone();
        h.set_cksum();
        evil[..512].copy_from_slice(h.as_bytes());
        let mut fs = merged(&[]);
        assert!(fs.apply_layer(0, &evil[..]).is_err());
    }
}

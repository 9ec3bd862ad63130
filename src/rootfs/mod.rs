//! The merged image filesystem, as an in-memory index built by streaming each layer once
//! (layers are parsed in parallel, applied in manifest order). Nothing is extracted: a node
//! records which layer entry holds its bytes; the same pass captures the bytes later stages may
//! read into one spool file per layer ([`capture`]), and [`Rootfs::read_files`] serves files from
//! there, streaming a layer again only for a file that was not captured (counted in
//! [`Inflated`]). Local copies live under counter names, never under image paths. All path
//! resolution, symlinks included, happens inside this virtual root.

pub mod capture;

pub use capture::{Budget, Capture, Captured};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::image::LayerBlob;
use crate::targuard::TarGuard;

/// Longest path or link target accepted from a layer.
const MAX_PATH: usize = 4096;
/// Most entries accepted in one image.
const MAX_ENTRIES: usize = 5_000_000;
/// Largest single file pare copies out of a layer.
pub const MAX_FILE_BYTES: u64 = crate::targuard::MAX_SPARSE;
/// Most bytes of paths held in the index.
const MAX_KEY_BYTES: usize = 512 << 20;
/// Symlinks followed while resolving one path (Linux's MAXSYMLINKS is 40).
const MAX_SYMLINKS: usize = 40;

/// Spool files made by this process (their names).
static SPOOLS: AtomicU64 = AtomicU64::new(0);

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
fn clamp(name: &str) -> String {
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

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn base_of(p: &str) -> &str {
    p.rfind('/').map_or(p, |i| &p[i + 1..])
}

/// Open a layer blob as a tar stream, whatever its compression (sniffed from magic bytes, so a
/// mislabelled media type still reads).
pub fn open_layer(path: &Path) -> Result<Box<dyn Read + Send>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    decompressing(f, path)
}

/// A layer blob's uncompressed stream; a blob still downloading is read as it arrives (the
/// stream ends only once the download is verified).
pub fn open_blob(blob: &LayerBlob) -> Result<Box<dyn Read + Send>> {
    match &blob.growing {
        Some(g) if !g.complete() => decompressing(g.follow(blob.path.clone()), &blob.path),
        _ => open_layer(&blob.path),
    }
}

/// `r` read on a thread of its own, up to a few MiB ahead of the caller: a layer's inflate then
/// runs beside the tar parse and the captures instead of taking turns with them.
pub fn read_ahead(mut r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    const BLOCK: usize = 1 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; BLOCK];
            let mut n = 0;
            let mut failed = None;
            while n < BLOCK {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            buf.truncate(n);
            let end = n < BLOCK;
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e));
                return;
            }
            if end {
                return;
            }
        }
    });
    Box::new(ReadAhead {
        rx,
        cur: Vec::new(),
        pos: 0,
    })
}

struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The reader thread ended: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `f` decompressed as its first bytes say (gzip, zstd, or a plain tar).
fn decompressing(mut f: impl Read + Send + 'static, path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = f.read(&mut magic[n..]).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let r = BufReader::with_capacity(256 * 1024, head.chain(f));
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(MultiZstd::new(Box::new(r)))
    } else {
        Box::new(r)
    })
}

/// A zstd stream of any number of frames (zstd:chunked layers have many), skippable frames
/// skipped; ruzstd's decoder reads one frame.
struct MultiZstd {
    cur: Option<ruzstd::decoding::StreamingDecoder<Prefixed, ruzstd::decoding::FrameDecoder>>,
    spare: Option<(Box<dyn Read + Send>, ruzstd::decoding::FrameDecoder)>,
}

/// A reader with 4 bytes put back in front.
struct Prefixed {
    head: [u8; 4],
    used: usize,
    inner: Box<dyn Read + Send>,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used < 4 {
            let n = (4 - self.used).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.used..self.used + n]);
            self.used += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl MultiZstd {
    fn new(src: Box<dyn Read + Send>) -> Self {
        MultiZstd {
            cur: None,
            spare: Some((src, ruzstd::decoding::FrameDecoder::new())),
        }
    }
}

impl Read for MultiZstd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let zerr = |e: ruzstd::decoding::errors::FrameDecoderError| {
            io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
        };
        loop {
            if let Some(d) = &mut self.cur {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let d = self.cur.take().expect("current frame");
                let (p, dec) = d.into_parts();
                self.spare = Some((p.inner, dec));
            }
            let Some((mut src, dec)) = self.spare.take() else {
                return Ok(0);
            };
            let mut magic = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let k = src.read(&mut magic[got..])?;
                if k == 0 {
                    break;
                }
                got += k;
            }
            if got == 0 {
                return Ok(0);
            }
            if got < 4 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "zstd: truncated frame",
                ));
            }
            if (0x184D_2A50..=0x184D_2A5F).contains(&u32::from_le_bytes(magic)) {
                let mut len = [0u8; 4];
                src.read_exact(&mut len)?;
                let len = u64::from(u32::from_le_bytes(len));
                let skipped = io::copy(&mut (&mut src).take(len), &mut io::sink())?;
                if skipped != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "zstd: truncated skippable frame",
                    ));
                }
                self.spare = Some((src, dec));
                continue;
            }
            let p = Prefixed {
                head: magic,
                used: 0,
                inner: src,
            };
            self.cur =
                Some(ruzstd::decoding::StreamingDecoder::new_with_decoder(p, dec).map_err(zerr)?);
        }
    }
}

/// What one layer did to the filesystem below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayerStats {
    /// Tar entries (whiteouts included, long-name and PAX records not).
    pub entries: u64,
    /// Sum of the entries' sizes, as dive counts a layer.
    pub size: u64,
    /// Non-directories at paths no lower layer had.
    pub added: u64,
    /// Non-directories replacing something a lower layer had.
    pub changed: u64,
    /// Lower-layer files (non-directories) deleted by whiteouts or opaque directories.
    pub removed: u64,
    /// Bytes of lower-layer files this layer replaced or deleted: still shipped, never seen.
    pub wasted: u64,
}

/// One path's appearances across layers (dive's `EfficiencyData`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathUse {
    pub cumulative: u64,
    pub min: u64,
    pub count: u32,
}

/// dive's efficiency figures: `score` = Σ smallest size of each path / Σ all sizes of each path;
/// `wasted` = Σ all sizes of the paths that appear in more than one layer (whiteouts count as
/// an appearance sized by the directory tree they delete, 0 for a file).
#[derive(Debug, Clone, PartialEq)]
pub struct Efficiency {
    pub score: f64,
    pub wasted_bytes: u64,
    /// Paths seen more than once, largest first: (path, cumulative bytes, appearances).
    pub inefficiencies: Vec<(String, u64, u32)>,
}

pub struct Rootfs {
    pub nodes: BTreeMap<String, Node>,
    pub layers: Vec<LayerBlob>,
    /// Uncompressed size of each layer (the tar stream).
    pub layer_sizes: Vec<u64>,
    /// Things skipped while merging (non-UTF-8 names, dangling hard links, …).
    pub warnings: Vec<String>,
    /// What each layer did (entries, bytes, files added/changed/removed, bytes it hid).
    pub stats: Vec<LayerStats>,
    /// Every leaf path seen in any layer, with the sizes it had (dive's efficiency data).
    pub uses: HashMap<String, PathUse>,
    /// Non-directory nodes removed while applying the current entry: (path, size).
    removed_log: Vec<(String, u64)>,
    /// Bytes of all paths in `nodes` (bounded, like the node count).
    key_bytes: usize,
    /// Whiteout targets and opaque directories already applied in the current layer.
    applied: HashSet<String>,
    /// Paths the current layer has written, and whether as a directory.
    written: HashMap<String, bool>,
    /// Parses and copied files shared with the other images of this process.
    cache: Option<Arc<LayerCache>>,
    /// Each layer's files captured during the merge pass.
    captured: Vec<Arc<Captured>>,
    /// Layers whose parse (and captures) another image of the process made.
    reused: Vec<bool>,
    /// Layers that served a file from those captures.
    served: Vec<std::sync::atomic::AtomicBool>,
    /// How many bytes were inflated for this image, and the reads after the merge.
    pub inflated: Inflated,
}

/// Bytes of layer streams decompressed for one image: by the merge (0 for a layer another
/// image of the process parsed), and by reads after it of files the merge did not capture.
#[derive(Debug, Default)]
pub struct Inflated {
    pub merge_bytes: AtomicU64,
    pub later_bytes: AtomicU64,
    /// Passes over a layer after the merge, and the files they copied.
    pub later_passes: AtomicU64,
    pub later_files: AtomicU64,
}

impl Inflated {
    pub fn total(&self) -> u64 {
        self.merge_bytes.load(Ordering::Relaxed) + self.later_bytes.load(Ordering::Relaxed)
    }
}

/// How layers are merged.
#[derive(Clone, Default)]
pub struct MergeOptions {
    /// Parses (and their captures) shared with the other images of the process.
    pub cache: Option<Arc<LayerCache>>,
    /// Where to capture file bytes during the merge pass; `None`: capture nothing. With a
    /// cache, captures go to the cache's dir instead (other images use them).
    pub capture: Option<Capture>,
    /// Layers parsed at once (0: one per core). The result does not depend on it.
    pub threads: usize,
}

/// Threads for parsing layers: `PARE_THREADS` when set, else one per core.
pub fn default_threads() -> usize {
    std::env::var("PARE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Rootfs {
    /// An image with nothing but its root directory.
    pub fn empty() -> Self {
        let mut fs = Rootfs {
            nodes: BTreeMap::new(),
            layers: Vec::new(),
            layer_sizes: Vec::new(),
            warnings: Vec::new(),
            stats: Vec::new(),
            uses: HashMap::new(),
            removed_log: Vec::new(),
            key_bytes: 0,
            applied: HashSet::new(),
            written: HashMap::new(),
            cache: None,
            captured: Vec::new(),
            reused: Vec::new(),
            served: Vec::new(),
            inflated: Inflated::default(),
        };
        fs.nodes.insert(String::new(), dir_node(0o755, 0));
        fs
    }

    /// Merge the layers in order, applying whiteouts as the OCI image-spec says. `diff_ids`
    /// (from the config) are checked against the uncompressed streams when given.
    pub fn merge(layers: Vec<LayerBlob>, diff_ids: Option<&[String]>) -> Result<Self> {
        Self::merge_with(
            layers,
            diff_ids,
            MergeOptions {
                threads: 1,
                ..Default::default()
            },
        )
    }

    /// [`Rootfs::merge`], taking each layer's parse from `cache` when another image of this
    /// process parsed it already (layers are keyed by their verified digest).
    pub fn merge_cached(
        layers: Vec<LayerBlob>,
        diff_ids: Option<&[String]>,
        cache: Option<Arc<LayerCache>>,
    ) -> Result<Self> {
        Self::merge_with(
            layers,
            diff_ids,
            MergeOptions {
                cache,
                capture: None,
                threads: 0,
            },
        )
    }

    /// The merge: each layer inflated and parsed once (up to `threads` at once, capturing file
    /// bytes as [`MergeOptions::capture`] says), then applied in manifest order, so the result
    /// is the same whatever the thread count. The first failing layer in manifest order is the
    /// error.
    pub fn merge_with(
        layers: Vec<LayerBlob>,
        diff_ids: Option<&[String]>,
        opts: MergeOptions,
    ) -> Result<Self> {
        if let Some(ids) = diff_ids
            && ids.len() != layers.len()
        {
            return Err(Error::malformed(
                "config",
                format!("{} diff_ids for {} layers", ids.len(), layers.len()),
            ));
        }
        let capture = match (&opts.cache, &opts.capture) {
            (Some(c), Some(cap)) => Some(Capture {
                dir: c.dir.clone(),
                budget: cap.budget.clone(),
            }),
            (_, cap) => cap.clone(),
        };
        let inflated = AtomicU64::new(0);
        // Which layers this merge parsed (the others' parses came from another image).
        let fresh: Vec<std::sync::atomic::AtomicBool> =
            layers.iter().map(|_| Default::default()).collect();
        let layers_ref = &layers;
        let parse_one = |i: usize| -> Result<Arc<ParsedLayer>> {
            let layer = &layers_ref[i];
            let what = format!("layer {} ({})", i + 1, layer.descriptor.digest);
            // A read error inside the stream is the layer's fault, not the disk's.
            let layer_name = format!("layer {}", i + 1);
            let malformed = |e| match e {
                Error::Io { source, .. } => Error::malformed(what.clone(), source),
                Error::Malformed { what: w, reason } if w == layer_name => Error::Malformed {
                    what: what.clone(),
                    reason,
                },
                other => other,
            };
            let parse = || -> Result<ParsedLayer> {
                let p =
                    ParsedLayer::parse_capturing(i, read_ahead(open_blob(layer)?), capture.clone())
                        .map_err(malformed)?;
                inflated.fetch_add(p.size, Ordering::Relaxed);
                fresh[i].store(true, Ordering::Relaxed);
                Ok(p)
            };
            match &opts.cache {
                Some(c) => c.parsed(&layer.descriptor.digest, parse),
                None => parse().map(Arc::new),
            }
        };
        let threads = match opts.threads {
            0 => default_threads(),
            n => n,
        }
        .min(layers.len())
        .max(1);
        let mut fs = Rootfs::empty();
        let apply = |fs: &mut Rootfs, i: usize, parsed: &ParsedLayer| -> Result<()> {
            let what = format!("layer {} ({})", i + 1, layers_ref[i].descriptor.digest);
            let layer_name = format!("layer {}", i + 1);
            fs.apply_parsed(i, parsed).map_err(|e| match e {
                Error::Malformed { what: w, reason } if w == layer_name => Error::Malformed {
                    what: what.clone(),
                    reason,
                },
                other => other,
            })?;
            if let Some(ids) = diff_ids
                && ids[i] != parsed.diff_id
            {
                return Err(Error::malformed(
                    what,
                    format!(
                        "uncompressed content hashes to {}, but the config's diff_id is {}",
                        parsed.diff_id, ids[i]
                    ),
                ));
            }
            fs.layer_sizes.push(parsed.size);
            Ok(())
        };
        let n = layers.len();
        if threads == 1 {
            for i in 0..n {
                let parsed = parse_one(i)?;
                apply(&mut fs, i, &parsed)?;
            }
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Arc<ParsedLayer>>)>();
            std::thread::scope(|scope| -> Result<()> {
                for _ in 0..threads {
                    let tx = tx.clone();
                    let (next, stop, parse_one) = (&next, &stop, &parse_one);
                    scope.spawn(move || {
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            if tx.send((i, parse_one(i))).is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                let mut ready = BTreeMap::new();
                let result = (|| -> Result<()> {
                    for want in 0..n {
                        while !ready.contains_key(&want) {
                            let Ok((i, r)) = rx.recv() else {
                                return Err(Error::Other(format!(
                                    "layer {} was never parsed (a parse thread died)",
                                    want + 1
                                )));
                            };
                            ready.insert(i, r);
                        }
                        let parsed = ready.remove(&want).expect("just checked")?;
                        apply(&mut fs, want, &parsed)?;
                    }
                    Ok(())
                })();
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                // Let the threads finish the layer they hold (scope joins them).
                drop(rx);
                result
            })?;
        }
        fs.layers = layers;
        fs.reused = fresh.iter().map(|f| !f.load(Ordering::Relaxed)).collect();
        fs.served = fresh.iter().map(|_| Default::default()).collect();
        fs.cache = opts.cache;
        fs.inflated
            .merge_bytes
            .store(inflated.into_inner(), Ordering::Relaxed);
        Ok(fs)
    }

    /// Apply one layer's tar stream as it is read; returns its diff_id and size.
    pub fn apply_layer(&mut self, layer: usize, reader: impl Read) -> Result<(String, u64)> {
        self.begin_layer(layer);
        let facts = parse_stream(layer, reader, None, |op| self.apply_checked(layer, &op))?;
        self.stats[layer].entries += facts.entries;
        self.stats[layer].size += facts.bytes;
        Ok((facts.diff_id, facts.size))
    }

    /// Apply a layer already parsed (perhaps for another image: the parse depends on the
    /// layer's bytes only).
    pub fn apply_parsed(&mut self, layer: usize, parsed: &ParsedLayer) -> Result<()> {
        self.begin_layer(layer);
        self.stats[layer].entries += parsed.entries;
        self.stats[layer].size += parsed.bytes;
        self.captured[layer] = parsed.captured.clone();
        for op in &parsed.ops {
            self.apply_checked(layer, op)?;
        }
        Ok(())
    }

    fn begin_layer(&mut self, layer: usize) {
        self.applied.clear();
        self.written.clear();
        while self.stats.len() <= layer {
            self.stats.push(LayerStats::default());
        }
        while self.captured.len() <= layer {
            self.captured.push(Arc::default());
        }
    }

    fn apply_checked(&mut self, layer: usize, op: &Op) -> Result<()> {
        let what = || format!("layer {}", layer + 1);
        // The image-spec (layer.md, "Changesets"): a layer "MUST NOT include duplicate
        // entries for file paths". A directory given twice is taken as its last entry (common
        // and harmless: only metadata); any other duplicate is refused, as overlay2 does.
        if let Op::Put { path, .. } | Op::HardLink { path, .. } = op {
            let is_dir = matches!(op, Op::Put { node, .. } if node.is_dir());
            if let Some(was_dir) = self.written.insert(path.clone(), is_dir)
                && !(was_dir && is_dir)
            {
                return Err(Error::malformed(
                    what(),
                    format!(
                        "/{path} appears twice in the layer (a layer must not include duplicate entries for a path: OCI image-spec, layer.md)"
                    ),
                ));
            }
        }
        // A hard link is made as containerd makes it: its name resolved inside the root
        // (absolute and `..` names clamped to the root, the image's own symlinks followed)
        // against what is merged so far, and it must be a regular file there; else the layer
        // cannot be extracted and is refused.
        if let Op::HardLink { path, target } = op {
            let why = match self.resolve(target, true) {
                Ok(r) => match self.nodes.get(&r.path).map(|n| &n.kind) {
                    Some(Kind::File { .. }) => None,
                    Some(Kind::Dir) => Some("a directory".to_string()),
                    Some(_) => Some("not a regular file".to_string()),
                    None => Some("missing".to_string()),
                },
                Err(ResolveError::NotFound) => {
                    Some("missing (or not yet written in this layer)".to_string())
                }
                Err(e) => Some(e.into_error(target).to_string()),
            };
            if let Some(why) = why {
                return Err(Error::malformed(
                    what(),
                    format!(
                        "hard link /{path} names /{target}, which is {why}: the layer cannot be extracted"
                    ),
                ));
            }
        }
        self.apply_op(layer, op);
        if self.nodes.len() > MAX_ENTRIES || self.key_bytes > MAX_KEY_BYTES {
            return Err(Error::malformed(
                format!("layer {}", layer + 1),
                format!("more than {MAX_ENTRIES} entries or {MAX_KEY_BYTES} bytes of paths"),
            ));
        }
        Ok(())
    }

    fn apply_op(&mut self, layer: usize, op: &Op) {
        self.removed_log.clear();
        match op {
            Op::Warn { text, numbered } => self.warnings.push(if *numbered {
                format!("layer {}: {text}", layer + 1)
            } else {
                text.clone()
            }),
            Op::RootMode(mode) => {
                if let Some(n) = self.nodes.get_mut("") {
                    n.mode = *mode;
                }
            }
            Op::Opaque(dir) => {
                if self.applied.insert(format!("{dir}/")) {
                    self.remove_lower_children(dir, layer);
                    let log = std::mem::take(&mut self.removed_log);
                    self.count_removed(layer, &log);
                    for (p, _) in &log {
                        self.use_path(p, 0);
                    }
                }
            }
            Op::Whiteout(target) => {
                if self.applied.insert(target.clone()) {
                    self.remove_lower(target, layer);
                    let log = std::mem::take(&mut self.removed_log);
                    self.count_removed(layer, &log);
                    // dive sizes a whiteout by the directory tree it deletes (a file's: 0).
                    let under = format!("{target}/");
                    let size = log
                        .iter()
                        .filter(|(p, _)| p.starts_with(&under))
                        .map(|(_, n)| n)
                        .sum();
                    self.use_path(target, size);
                }
            }
            Op::HardLink { path, target } => match self
                .resolve(target, true)
                .ok()
                .and_then(|r| self.nodes.get(&r.path))
            {
                Some(
                    n @ Node {
                        kind: Kind::File { .. },
                        ..
                    },
                ) => {
                    let n = n.clone();
                    let at = self.insert(path, Node { layer, ..n });
                    self.count_written(layer, &at, 0);
                }
                _ => self.warnings.push(format!(
                    "/{path}: hard link to /{target}, which is not a regular file; skipped"
                )),
            },
            Op::Put { path, node } => {
                let mut node = node.clone();
                node.layer = layer;
                if let Kind::File { layer: l, .. } = &mut node.kind {
                    *l = layer;
                }
                let size = node.size();
                let is_dir = node.is_dir();
                let at = self.insert(path, node);
                if !is_dir {
                    self.count_written(layer, &at, size);
                }
            }
        }
    }

    /// Whiteouts and opaque directories: what they deleted from lower layers.
    fn count_removed(&mut self, layer: usize, log: &[(String, u64)]) {
        let st = &mut self.stats[layer];
        st.removed += log.len() as u64;
        st.wasted += log.iter().map(|(_, n)| n).sum::<u64>();
    }

    /// A non-directory written at `path`: added, or changed (what it replaced is wasted).
    fn count_written(&mut self, layer: usize, path: &str, size: u64) {
        let log = std::mem::take(&mut self.removed_log);
        let st = &mut self.stats[layer];
        if log.is_empty() {
            st.added += 1;
        } else {
            st.changed += 1;
            st.wasted += log.iter().map(|(_, n)| n).sum::<u64>();
        }
        self.use_path(path, size);
    }

    fn use_path(&mut self, path: &str, size: u64) {
        let u = self.uses.entry(path.to_string()).or_default();
        u.min = if u.count == 0 { size } else { u.min.min(size) };
        u.cumulative += size;
        u.count += 1;
    }

    /// dive's efficiency score and wasted bytes over all layers.
    pub fn efficiency(&self) -> Efficiency {
        let (mut min, mut total, mut wasted) = (0u64, 0u64, 0u64);
        let mut ineff = Vec::new();
        for (p, u) in &self.uses {
            min += u.min;
            total += u.cumulative;
            if u.count >= 2 {
                wasted += u.cumulative;
                ineff.push((p.clone(), u.cumulative, u.count));
            }
        }
        ineff.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Efficiency {
            score: if total == 0 {
                1.0
            } else {
                min as f64 / total as f64
            },
            wasted_bytes: wasted,
            inefficiencies: ineff,
        }
    }

    /// Put a node in place: a directory over a directory keeps the children and takes the new
    /// metadata; anything else replaces the old node and its subtree. Parent directories are
    /// found as an extracting runtime would: through symlinks (inside the root), made when
    /// missing, and a non-directory in the way is replaced.
    fn insert(&mut self, path: &str, node: Node) -> String {
        let parent = self.real_dir(parent_of(path), node.layer);
        let base = base_of(path);
        let path = if parent.is_empty() {
            base.to_string()
        } else {
            format!("{parent}/{base}")
        };
        if let Some(old) = self.nodes.get(&path)
            && !(old.is_dir() && node.is_dir())
        {
            self.remove_subtree(&path, |_| true, node.layer);
        }
        self.put(path.clone(), node);
        path
    }

    fn put(&mut self, path: String, node: Node) {
        let len = path.len();
        if self.nodes.insert(path, node).is_none() {
            self.key_bytes += len;
        }
    }

    fn del(&mut self, path: &str) {
        if let Some(n) = self.nodes.remove(path) {
            self.key_bytes -= path.len();
            if !n.is_dir() {
                self.removed_log.push((path.to_string(), n.size()));
            }
        }
    }

    /// The directory `dir` names, as a canonical path: symlinks followed inside the root,
    /// missing directories made, non-directories replaced.
    fn real_dir(&mut self, dir: &str, layer: usize) -> String {
        let mut cur = String::new();
        for comp in dir.split('/').filter(|c| !c.is_empty()) {
            let p = if cur.is_empty() {
                comp.to_string()
            } else {
                format!("{cur}/{comp}")
            };
            match self.nodes.get(&p).map(|n| n.kind.clone()) {
                Some(Kind::Dir) => cur = p,
                Some(Kind::Symlink(_)) => match self.resolve(&p, true) {
                    Ok(r) if self.nodes.get(&r.path).is_some_and(Node::is_dir) => cur = r.path,
                    _ => {
                        self.remove_subtree(&p, |_| true, layer);
                        self.put(p.clone(), dir_node(0o755, layer));
                        cur = p;
                    }
                },
                Some(_) => {
                    self.remove_subtree(&p, |_| true, layer);
                    self.put(p.clone(), dir_node(0o755, layer));
                    cur = p;
                }
                None => {
                    self.put(p.clone(), dir_node(0o755, layer));
                    cur = p;
                }
            }
        }
        cur
    }

    /// Remove `path` and its subtree where they come from layers below `layer`.
    fn remove_lower(&mut self, path: &str, layer: usize) {
        self.remove_subtree(path, |n| n.layer < layer, layer);
    }

    /// Opaque directory: hide every lower-layer child of `dir`.
    fn remove_lower_children(&mut self, dir: &str, layer: usize) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.remove_range(&prefix, |n| n.layer < layer, layer);
    }

    fn remove_subtree(&mut self, path: &str, pred: impl Fn(&Node) -> bool, layer: usize) {
        if path.is_empty() {
            return;
        }
        if self.nodes.get(path).is_some_and(&pred) {
            self.del(path);
        }
        self.remove_range(&format!("{path}/"), pred, layer);
    }

    /// Remove the nodes under `prefix` that match; what survives keeps a parent chain (a
    /// directory of this layer, as the layer's own entries imply one).
    fn remove_range(&mut self, prefix: &str, pred: impl Fn(&Node) -> bool, layer: usize) {
        let mut doomed = Vec::new();
        let mut survivors = Vec::new();
        for (k, n) in self
            .nodes
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if k.is_empty() {
                continue;
            }
            if pred(n) {
                doomed.push(k.clone())
            } else {
                survivors.push(k.clone())
            }
        }
        for k in doomed {
            self.del(&k);
        }
        for k in survivors {
            let mut p = parent_of(&k);
            while !p.is_empty() && !self.nodes.contains_key(p) {
                let owned = p.to_string();
                p = parent_of(p);
                self.put(owned, dir_node(0o755, layer));
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    /// Children paths of a directory (direct and indirect), in order.
    pub fn subtree<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty())
    }

    /// Resolve `path` (absolute, or relative to the root) inside the image. `follow_last`
    /// decides whether a symlink in the last component is followed.
    pub fn resolve(
        &self,
        path: &str,
        follow_last: bool,
    ) -> std::result::Result<Resolved, ResolveError> {
        let mut cur: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut symlinks = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if cur.pop().is_none() {
                    return Err(ResolveError::Escape {
                        link: symlinks.last().cloned().unwrap_or_default(),
                    });
                }
                continue;
            }
            cur.push(c);
            let here = cur.join("/");
            let last = todo.is_empty();
            match self.nodes.get(&here) {
                None => return Err(ResolveError::NotFound),
                Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) if !last || follow_last => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(ResolveError::Loop);
                    }
                    symlinks.push(here.clone());
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                        todo.push(t.to_string());
                    }
                }
                Some(n) if !last && !n.is_dir() && !matches!(n.kind, Kind::Symlink(_)) => {
                    return Err(ResolveError::NotADirectory(here));
                }
                Some(_) => {}
            }
        }
        Ok(Resolved {
            path: cur.join("/"),
            symlinks,
        })
    }

    /// Copy the bytes of the wanted files (canonical paths of regular files) into `dir`, one
    /// streaming pass per layer that holds any of them, into one spool file per pass. Returns
    /// path → where its bytes are.
    pub fn read_files(&self, wanted: &[String], dir: &Path) -> Result<HashMap<String, Local>> {
        // Hard links share one entry: every path of it maps to the same copy.
        let mut by_layer: BTreeMap<usize, HashMap<u64, (Vec<String>, u64)>> = BTreeMap::new();
        for p in wanted {
            if let Some(Node {
                kind: Kind::File { layer, entry, size },
                ..
            }) = self.nodes.get(p)
            {
                if *size > MAX_FILE_BYTES {
                    return Err(Error::path(
                        display(p),
                        format!("larger than {MAX_FILE_BYTES} bytes"),
                    ));
                }
                let slot = by_layer
                    .entry(*layer)
                    .or_default()
                    .entry(*entry)
                    .or_insert((vec![], *size));
                if !slot.0.contains(p) {
                    slot.0.push(p.clone());
                }
            }
        }
        let mut out = HashMap::new();
        for (layer, mut want) in by_layer {
            // What the merge pass captured needs no read at all.
            if let Some(c) = self.captured.get(layer) {
                serve(&mut want, &mut out, |entry| c.files.get(&entry).cloned());
                if want.is_empty() {
                    self.note_served(layer);
                    continue;
                }
            }
            let started = std::time::Instant::now();
            let nfiles = want.len();
            let blob = &self.layers[layer];
            let digest = &blob.descriptor.digest;
            if let Some(cache) = &self.cache {
                serve(&mut want, &mut out, |entry| cache.file(digest, entry));
                if want.is_empty() {
                    cache.read_hits.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let what = format!("layer {} ({})", layer + 1, digest);
            let total: u64 = want.values().map(|(_, size)| *size).sum();
            let shared = self.cache.as_ref().and_then(|c| c.spool_slot(total));
            // A counter name: never anything taken from the image.
            let spool: Arc<Path> = shared
                .clone()
                .unwrap_or_else(|| dir.join(format!("s{}", SPOOLS.fetch_add(1, Ordering::Relaxed))))
                .into();
            let copied = (|| -> Result<Vec<(u64, Vec<String>, Local)>> {
                let file = std::fs::File::create(&spool).map_err(|e| Error::io(&*spool, e))?;
                let mut w = io::BufWriter::with_capacity(1 << 20, file);
                self.inflated.later_passes.fetch_add(1, Ordering::Relaxed);
                self.inflated
                    .later_files
                    .fetch_add(want.len() as u64, Ordering::Relaxed);
                let reader = Counting {
                    inner: open_blob(blob)?,
                    count: &self.inflated.later_bytes,
                };
                let mut archive = tar::Archive::new(TarGuard::new(reader));
                let entries = archive
                    .entries()
                    .map_err(|e| Error::malformed(what.clone(), e))?;
                let mut copied = Vec::with_capacity(want.len());
                let mut offset = 0u64;
                // Entry ordinals must count exactly as in `apply_layer`.
                for (ordinal, entry) in entries.enumerate() {
                    let mut entry = entry.map_err(|e| Error::malformed(what.clone(), e))?;
                    let ordinal = ordinal as u64;
                    if let Some((paths, size)) = want.remove(&ordinal) {
                        let n = io::copy(&mut (&mut entry).take(size), &mut w)
                            .map_err(|e| Error::malformed(what.clone(), e))?;
                        if n != size {
                            return Err(Error::malformed(
                                what.clone(),
                                format!("/{} is truncated", paths[0]),
                            ));
                        }
                        let local = Local {
                            path: spool.clone(),
                            offset,
                            len: size,
                        };
                        offset += size;
                        copied.push((ordinal, paths, local));
                    }
                    if want.is_empty() {
                        break;
                    }
                }
                if let Some((_, (p, _))) = want.iter().next() {
                    return Err(Error::malformed(
                        what.clone(),
                        format!("/{} vanished on a second read", p[0]),
                    ));
                }
                w.into_inner()
                    .map_err(|e| Error::io(&*spool, e.into_error()))?;
                Ok(copied)
            })();
            let copied = match (copied, &self.cache, &shared) {
                (Ok(c), _, _) => c,
                (Err(e), Some(c), Some(_)) => {
                    c.drop_spool(&spool, total);
                    return Err(e);
                }
                (Err(e), _, _) => {
                    let _ = std::fs::remove_file(&spool);
                    return Err(e);
                }
            };
            for (ordinal, paths, local) in copied {
                let local = match (&self.cache, &shared) {
                    (Some(c), Some(_)) => c.put_file(digest, ordinal, local),
                    _ => local,
                };
                for p in paths {
                    out.insert(p, local.clone());
                }
            }
            tracing::debug!(
                layer,
                files = nfiles,
                seconds = started.elapsed().as_secs_f64(),
                "read files from a layer"
            );
        }
        Ok(out)
    }

    pub fn uncompressed_size(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }

    /// Where the merge pass captured the bytes of a regular file (canonical path), if it did.
    pub fn captured_local(&self, path: &str) -> Option<Local> {
        match self.nodes.get(path)?.kind {
            Kind::File { layer, entry, .. } => {
                let l = self.captured.get(layer)?.files.get(&entry).cloned()?;
                self.note_served(layer);
                Some(l)
            }
            _ => None,
        }
    }

    /// A layer served files from captures another image's pass made: a read avoided (counted
    /// once per layer, for the batch summary).
    fn note_served(&self, layer: usize) {
        if let Some(cache) = &self.cache
            && self.reused.get(layer) == Some(&true)
            && self
                .served
                .get(layer)
                .is_some_and(|s| !s.swap(true, Ordering::Relaxed))
        {
            cache.read_hits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Answer from `found` the wanted entries (ordinal → (paths, size)) it has a copy of, moving
/// them from `want` into `out` under each of their paths.
fn serve(
    want: &mut HashMap<u64, (Vec<String>, u64)>,
    out: &mut HashMap<String, Local>,
    found: impl Fn(u64) -> Option<Local>,
) {
    want.retain(|entry, (paths, _)| match found(*entry) {
        Some(local) => {
            for p in paths.drain(..) {
                out.insert(p, local.clone());
            }
            false
        }
        None => true,
    });
}

/// A reader that counts the bytes read through it.
struct Counting<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One tar entry, as it acts on the filesystem below it.
#[derive(Debug, Clone)]
enum Op {
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
    ops: Vec<Op>,
    /// sha256 of the uncompressed stream.
    pub diff_id: String,
    /// Bytes of the uncompressed stream.
    pub size: u64,
    /// Tar entries (whiteouts included, long-name and PAX records not) and their sizes.
    entries: u64,
    bytes: u64,
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
        let mut ops = Vec::new();
        let mut footprint = 0;
        let mut spooler = capture.map(capture::Spooler::new);
        let facts = parse_stream(layer, reader, spooler.as_mut(), |op| {
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
struct StreamFacts {
    diff_id: String,
    size: u64,
    entries: u64,
    bytes: u64,
}

/// Read a layer's tar stream to the end, handing each entry's op to `sink` in order.
fn parse_stream(
    layer: usize,
    reader: impl Read,
    mut spooler: Option<&mut capture::Spooler>,
    mut sink: impl FnMut(Op) -> Result<()>,
) -> Result<StreamFacts> {
    let io_err = |e: io::Error| Error::io(format!("layer {}", layer + 1), e);
    let mut hashing = HashingReader::new(reader);
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
    // Read to the end so the diff_id covers the whole stream.
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

/// Most bytes of parsed layers a [`LayerCache`] keeps for later images.
pub const PARSED_BUDGET: usize = 512 << 20;
/// Most bytes of files a [`LayerCache`] keeps copied out of layers for later images.
pub const FILES_BUDGET: u64 = 4 << 30;

/// What the images of one process (a batch) share, by layer digest: each layer's parse (so a
/// layer is inflated and indexed once, not once per image), and the files already copied out
/// of it for tracing (so a shared base layer is not inflated again to read its libc). Both are
/// bounded: parses by [`PARSED_BUDGET`] bytes, least recently used dropped first; files by
/// [`FILES_BUDGET`] bytes, past which copies go to the image's own work dir.
pub struct LayerCache {
    dir: PathBuf,
    parsed: std::sync::Mutex<ParsedSlots>,
    files: std::sync::Mutex<CopiedFiles>,
    parsed_budget: usize,
    /// Layers whose parse was reused.
    pub parse_hits: AtomicU64,
    /// Layers not inflated at all for tracing because every wanted file was already copied.
    pub read_hits: AtomicU64,
}

#[derive(Default)]
struct CopiedFiles {
    /// (layer digest, entry ordinal) → copy.
    map: HashMap<(String, u64), Local>,
    bytes: u64,
    count: u64,
}

type ParsedCell = Arc<std::sync::Mutex<Option<Arc<ParsedLayer>>>>;

#[derive(Default)]
struct ParsedSlots {
    map: HashMap<String, ParsedSlot>,
    tick: u64,
    held: usize,
}

struct ParsedSlot {
    cell: ParsedCell,
    used: u64,
    footprint: usize,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LayerCache {
    /// A cache whose copied files live in `dir` (which the caller owns and removes).
    pub fn new(dir: &Path) -> Self {
        Self::with_budget(dir, PARSED_BUDGET)
    }

    pub fn with_budget(dir: &Path, parsed_budget: usize) -> Self {
        LayerCache {
            dir: dir.to_path_buf(),
            parsed: Default::default(),
            files: Default::default(),
            parsed_budget,
            parse_hits: AtomicU64::new(0),
            read_hits: AtomicU64::new(0),
        }
    }

    /// The parse of layer `digest`, made by `parse` unless an earlier image made it. Images
    /// asking for the same layer at once wait for one parse.
    pub fn parsed(
        &self,
        digest: &str,
        parse: impl FnOnce() -> Result<ParsedLayer>,
    ) -> Result<Arc<ParsedLayer>> {
        let cell = {
            let mut s = lock(&self.parsed);
            s.tick += 1;
            let tick = s.tick;
            let slot = s
                .map
                .entry(digest.to_string())
                .or_insert_with(|| ParsedSlot {
                    cell: Default::default(),
                    used: 0,
                    footprint: 0,
                });
            slot.used = tick;
            slot.cell.clone()
        };
        let mut guard = lock(&cell);
        if let Some(p) = guard.as_ref() {
            self.parse_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p.clone());
        }
        let parsed = Arc::new(parse()?);
        *guard = Some(parsed.clone());
        drop(guard);
        let mut s = lock(&self.parsed);
        let s = &mut *s;
        if let Some(slot) = s.map.get_mut(digest)
            && Arc::ptr_eq(&slot.cell, &cell)
        {
            slot.footprint = parsed.footprint;
            s.held += parsed.footprint;
        }
        // Drop the least recently used parses (never the one just made) until under budget.
        // Images already holding one keep it; the memory goes when they finish.
        while s.held > self.parsed_budget {
            let victim = s
                .map
                .iter()
                .filter(|(d, slot)| slot.footprint > 0 && d.as_str() != digest)
                .min_by_key(|(_, slot)| slot.used)
                .map(|(d, _)| d.clone());
            let Some(v) = victim else { break };
            if let Some(slot) = s.map.remove(&v) {
                s.held -= slot.footprint;
            }
        }
        Ok(parsed)
    }

    /// Bytes of parses held for later images.
    pub fn parsed_bytes(&self) -> usize {
        lock(&self.parsed).held
    }

    fn file(&self, digest: &str, entry: u64) -> Option<Local> {
        lock(&self.files)
            .map
            .get(&(digest.to_string(), entry))
            .cloned()
    }

    /// Where to spool `size` bytes of files so later images find them: `None` when the
    /// budget is spent.
    fn spool_slot(&self, size: u64) -> Option<PathBuf> {
        let mut f = lock(&self.files);
        if f.bytes + size > FILES_BUDGET {
            return None;
        }
        f.bytes += size;
        f.count += 1;
        // A counter name: never anything taken from the image.
        Some(self.dir.join(format!("c{}", f.count)))
    }

    /// Record a finished copy; the copy to use. When another image copied the same entry
    /// meanwhile, the first copy stays (this one's bytes stay in its spool until the end).
    fn put_file(&self, digest: &str, entry: u64, local: Local) -> Local {
        let mut f = lock(&self.files);
        f.map
            .entry((digest.to_string(), entry))
            .or_insert(local)
            .clone()
    }

    /// A spool that is not kept: removed, its bytes given back to the budget.
    fn drop_spool(&self, path: &Path, size: u64) {
        let _ = std::fs::remove_file(path);
        let mut f = lock(&self.files);
        f.bytes = f.bytes.saturating_sub(size);
    }
}

fn dir_node(mode: u32, layer: usize) -> Node {
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

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: HashingWriter::new(io::sink()),
        }
    }
    fn finish(self) -> (String, u64) {
        let (_, d, n) = self.hasher.finish();
        (d, n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.hasher, &buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar built in memory: (path, kind) with kind "d", "f:content", "l:target", "h:target".
    pub fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, spec) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            if *spec == "d" {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else if let Some(c) = spec.strip_prefix("f:") {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            } else if let Some(t) = spec.strip_prefix("l:") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, t).unwrap();
            } else if let Some(t) = spec.strip_prefix("h:") {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, path, t).unwrap();
            } else {
                panic!("bad spec {spec}");
            }
        }
        b.into_inner().unwrap()
    }

    /// The error applying `layers` gives (panics when they are accepted).
    fn refusal(layers: &[Vec<u8>]) -> String {
        let mut fs = Rootfs::empty();
        for (i, l) in layers.iter().enumerate() {
            if let Err(e) = fs.apply_layer(i, &l[..]) {
                return e.to_string();
            }
        }
        panic!("accepted: {:?}", fs.nodes.keys().collect::<Vec<_>>());
    }

    #[test]
    fn hard_links_resolve_like_containerd_and_bad_ones_are_refused() {
        let base = tar_of(&[
            ("etc/a", "f:a"),
            ("d", "d"),
            ("lnk", "l:etc/a"),
            ("dangling", "l:nowhere"),
        ]);
        // Absolute and `..` names are clamped to the root; a symlink is followed; the target
        // may be in a lower layer or earlier in the same one.
        let fs = merged(&[
            base.clone(),
            tar_of(&[
                ("x1", "h:/etc/a"),
                ("x2", "h:../../etc/a"),
                ("x3", "h:lnk"),
                ("n", "f:n"),
                ("x4", "h:n"),
            ]),
        ]);
        for x in ["x1", "x2", "x3"] {
            assert_eq!(fs.nodes[x].kind, fs.nodes["etc/a"].kind, "{x}");
        }
        assert_eq!(fs.nodes["x4"].kind, fs.nodes["n"].kind);
        for (entries, why) in [
            (vec![("y", "h:missing")], "missing"),
            (vec![("y", "h:d")], "a directory"),
            (vec![("y", "h:dangling")], "missing"),
            (vec![("y", "h:later"), ("later", "f:x")], "not yet written"),
            (vec![("y", "h:/")], "the root directory"),
        ] {
            let e = refusal(&[base.clone(), tar_of(&entries)]);
            assert!(e.contains(why) && e.contains("layer 2"), "{entries:?}: {e}");
        }
    }

    #[test]
    fn bare_whiteouts_and_duplicates_are_refused() {
        for name in [".wh.", ".wh..", "d/.wh...", "d/.wh."] {
            let e = refusal(&[tar_of(&[("d", "d"), (name, "f:")])]);
            assert!(e.contains("names no entry"), "{name}: {e}");
        }
        let e = refusal(&[tar_of(&[("a", "f:1"), ("a", "f:2")])]);
        assert!(e.contains("/a appears twice"), "{e}");
        let e = refusal(&[tar_of(&[("a", "d"), ("a", "f:2")])]);
        assert!(e.contains("appears twice"), "{e}");
        // A directory given twice: its last entry.
        let fs = merged(&[tar_of(&[("d", "d"), ("d", "d"), ("d/f", "f:1")])]);
        assert!(fs.nodes["d"].is_dir());
        // aufs metadata is not a change.
        let fs = merged(&[tar_of(&[(".wh..wh.plnk", "d"), ("a", "f:1")])]);
        assert!(fs.warnings.iter().any(|w| w.contains("aufs")));
    }

    fn merged(layers: &[Vec<u8>]) -> Rootfs {
        let mut fs = Rootfs::empty();
        for (i, l) in layers.iter().enumerate() {
            fs.apply_layer(i, &l[..]).unwrap();
        }
        fs
    }

    fn paths(fs: &Rootfs) -> Vec<&str> {
        fs.nodes
            .keys()
            .filter(|k| !k.is_empty())
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn plain_whiteout_removes_file_and_subtree_of_lower_layers() {
        let base = tar_of(&[
            ("etc", "d"),
            ("etc/a", "f:1"),
            ("etc/b", "f:2"),
            ("opt/x/y", "f:3"),
        ]);
        let top = tar_of(&[("etc/.wh.a", "f:"), ("opt/.wh.x", "f:")]);
        let fs = merged(&[base, top]);
        assert_eq!(paths(&fs), vec!["etc", "etc/b", "opt"]);
    }

    #[test]
    fn whiteout_does_not_hide_same_layer_entries() {
        let base = tar_of(&[("a", "f:old")]);
        // Same layer re-creates `a` and whites it out: the whiteout only applies to lower layers.
        let top = tar_of(&[("a", "f:new"), (".wh.a", "f:")]);
        let fs = merged(&[base, top]);
        assert_eq!(paths(&fs), vec!["a"]);
        assert_eq!(fs.nodes["a"].layer, 1);
    }

    #[test]
    fn opaque_directory_hides_lower_children_only() {
        let base = tar_of(&[
            ("d", "d"),
            ("d/old", "f:1"),
            ("d/sub/deep", "f:2"),
            ("e", "f:3"),
        ]);
        // The marker comes after a same-layer child: order must not matter.
        let top = tar_of(&[("d", "d"), ("d/new", "f:4"), ("d/.wh..wh..opq", "f:")]);
        let fs = merged(&[base, top]);
        assert_eq!(paths(&fs), vec!["d", "d/new", "e"]);
    }

    #[test]
    fn replaced_directory_and_type_changes() {
        let base = tar_of(&[("x", "d"), ("x/child", "f:1"), ("y", "f:file")]);
        // A file replaces directory x (subtree gone); a directory replaces file y.
        let top = tar_of(&[("x", "f:now a file"), ("y", "d"), ("y/in", "f:2")]);
        let fs = merged(&[base, top]);
        assert_eq!(paths(&fs), vec!["x", "y", "y/in"]);
        assert!(matches!(fs.nodes["x"].kind, Kind::File { .. }));
        // A directory over a directory keeps lower children.
        let l1 = tar_of(&[("d", "d"), ("d/keep", "f:1")]);
        let l2 = tar_of(&[("d", "d")]);
        let fs = merged(&[l1, l2]);
        assert_eq!(paths(&fs), vec!["d", "d/keep"]);
        assert_eq!(fs.nodes["d"].layer, 1);
    }

    #[test]
    fn hardlinks_and_implicit_parents() {
        let l = tar_of(&[("usr/bin/a", "f:abc"), ("usr/bin/b", "h:usr/bin/a")]);
        let d = tempfile::tempdir().unwrap();
        let lp = d.path().join("layer");
        std::fs::write(&lp, &l).unwrap();
        let blob = LayerBlob {
            descriptor: crate::image::Descriptor::of(crate::image::OCI_LAYER_TAR, &l),
            path: lp,
            growing: None,
        };
        let fs = Rootfs::merge(vec![blob], None).unwrap();
        // Both names of a hard link read back, from one pass.
        let got = fs
            .read_files(&["usr/bin/a".into(), "usr/bin/b".into()], d.path())
            .unwrap();
        assert_eq!(got["usr/bin/a"].read(10).unwrap(), b"abc");
        assert_eq!(got["usr/bin/b"].read(10).unwrap(), b"abc");
        assert_eq!(paths(&fs), vec!["usr", "usr/bin", "usr/bin/a", "usr/bin/b"]);
        assert_eq!(fs.nodes["usr/bin/b"].size(), 3);
    }

    /// `bytes` written to `dir/name` as an uncompressed layer blob.
    pub(crate) fn blob_at(dir: &Path, name: &str, bytes: &[u8]) -> LayerBlob {
        let lp = dir.join(name);
        std::fs::write(&lp, bytes).unwrap();
        LayerBlob {
            descriptor: crate::image::Descriptor::of(crate::image::OCI_LAYER_TAR, bytes),
            path: lp,
            growing: None,
        }
    }

    #[test]
    fn a_shared_layer_is_parsed_and_read_once() {
        let base = tar_of(&[("lib/libc.so", "f:libc"), ("etc/passwd", "f:root")]);
        let app = tar_of(&[("app", "f:app"), ("etc/.wh.passwd", "f:")]);
        let d = tempfile::tempdir().unwrap();
        let files = d.path().join("files");
        std::fs::create_dir(&files).unwrap();
        let cache = Arc::new(LayerCache::new(&files));
        let first = vec![
            blob_at(d.path(), "b1", &base),
            blob_at(d.path(), "a1", &app),
        ];
        let fs1 = Rootfs::merge_cached(first.clone(), None, Some(cache.clone())).unwrap();
        let got = fs1.read_files(&["lib/libc.so".into()], d.path()).unwrap();
        assert_eq!(got["lib/libc.so"].read(10).unwrap(), b"libc");
        assert_eq!(cache.parse_hits.load(Ordering::Relaxed), 0);
        // A second image on the same base, whose base blob is gone from disk: neither the
        // merge nor the read may open it.
        let second = vec![blob_at(d.path(), "b2", &base)];
        std::fs::remove_file(d.path().join("b2")).unwrap();
        let fs2 = Rootfs::merge_cached(second, None, Some(cache.clone())).unwrap();
        assert_eq!(cache.parse_hits.load(Ordering::Relaxed), 1);
        assert_eq!(paths(&fs2), vec!["etc", "etc/passwd", "lib", "lib/libc.so"]);
        assert_eq!(fs2.stats, fs1.stats[..1].to_vec());
        let got = fs2.read_files(&["lib/libc.so".into()], d.path()).unwrap();
        assert_eq!(got["lib/libc.so"].read(10).unwrap(), b"libc");
        assert_eq!(cache.read_hits.load(Ordering::Relaxed), 1);
        // A file not copied before needs the layer: now an error, the blob being gone.
        assert!(fs2.read_files(&["etc/passwd".into()], d.path()).is_err());
        // Same result as merging without a cache.
        let plain = Rootfs::merge(first, None).unwrap();
        assert_eq!(plain.nodes, fs1.nodes);
        assert_eq!(plain.stats, fs1.stats);
    }

    #[test]
    fn parsed_layers_are_bounded_least_recently_used_first() {
        let d = tempfile::tempdir().unwrap();
        let layers: Vec<Vec<u8>> = (0..4)
            .map(|i| tar_of(&[(format!("f{i}").as_str(), "f:x")]))
            .collect();
        let one = ParsedLayer::parse(0, &layers[0][..]).unwrap().footprint;
        // Room for two parses.
        let cache = LayerCache::with_budget(d.path(), one * 2 + one / 2);
        let parse = |i: usize| {
            let l = layers[i].clone();
            move || ParsedLayer::parse(0, &l[..])
        };
        let key = |i: usize| format!("sha256:{i}");
        cache.parsed(&key(0), parse(0)).unwrap();
        cache.parsed(&key(1), parse(1)).unwrap();
        cache.parsed(&key(0), parse(0)).unwrap(); // 0 is now the most recent
        assert_eq!(cache.parse_hits.load(Ordering::Relaxed), 1);
        cache.parsed(&key(2), parse(2)).unwrap(); // evicts 1
        assert!(cache.parsed_bytes() <= one * 2 + one / 2);
        cache.parsed(&key(0), parse(0)).unwrap();
        assert_eq!(cache.parse_hits.load(Ordering::Relaxed), 2);
        cache
            .parsed(&key(1), || Err(Error::Other("parsed again".into())))
            .expect_err("1 was dropped, so it is parsed again");
        // A failed parse is not kept: the next asker parses.
        cache.parsed(&key(1), parse(1)).unwrap();
    }

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

    #[test]
    fn layer_stats_and_dive_efficiency() {
        let l0 = tar_of(&[
            ("a", "f:0123456789"),
            ("d/x", "f:12345"),
            ("d/y", "f:1234567"),
        ]);
        let l1 = tar_of(&[("a", "f:01234567890123456789"), (".wh.d", "f:")]);
        let l2 = tar_of(&[(".wh.a", "f:"), ("new", "f:abc")]);
        let fs = merged(&[l0, l1, l2]);
        assert_eq!(paths(&fs), vec!["new"]);
        let s1 = &fs.stats[1];
        assert_eq!(
            (
                s1.entries, s1.size, s1.added, s1.changed, s1.removed, s1.wasted
            ),
            (2, 20, 0, 1, 2, 22)
        );
        let s2 = &fs.stats[2];
        assert_eq!(
            (
                s2.entries, s2.size, s2.added, s2.changed, s2.removed, s2.wasted
            ),
            (2, 3, 1, 0, 1, 20)
        );
        let e = fs.efficiency();
        // a: 10+20+0 (3 appearances), d: 12 (the whiteout, sized by its tree), d/x 5, d/y 7, new 3.
        assert_eq!(e.wasted_bytes, 30);
        assert!((e.score - 27.0 / 57.0).abs() < 1e-9, "{}", e.score);
        assert_eq!(e.inefficiencies, vec![("a".to_string(), 30, 3)]);
    }

    #[test]
    fn parents_are_found_through_symlinks() {
        // usrmerge: an upper layer writing lib/x.so lands in usr/lib, and lib stays a link.
        let base = tar_of(&[("usr/lib/libc.so", "f:c"), ("lib", "l:usr/lib")]);
        let top = tar_of(&[("lib/x.so", "f:x")]);
        let fs = merged(&[base, top]);
        assert_eq!(
            paths(&fs),
            vec!["lib", "usr", "usr/lib", "usr/lib/libc.so", "usr/lib/x.so"]
        );
        assert_eq!(fs.nodes["lib"].kind, Kind::Symlink("usr/lib".into()));
    }

    #[test]
    fn survivors_of_a_whiteout_keep_their_parents() {
        let base = tar_of(&[("d/sub/x", "f:1")]);
        // New child of a lower directory, then the parent made opaque: d/sub is now implied
        // by this layer.
        let top = tar_of(&[("d/sub/new", "f:2"), ("d/.wh..wh..opq", "f:")]);
        let fs = merged(&[base, top]);
        assert_eq!(paths(&fs), vec!["d", "d/sub", "d/sub/new"]);
        assert_eq!(fs.nodes["d/sub"].layer, 1);
    }

    #[test]
    fn repeated_whiteouts_are_applied_once() {
        let n = 20_000;
        let mut entries: Vec<(String, &str)> = (0..n).map(|i| (format!("x/f{i}"), "f:1")).collect();
        entries.extend((0..n).map(|_| ("x/.wh..wh..opq".to_string(), "f:")));
        let borrowed: Vec<(&str, &str)> = entries.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        let t = std::time::Instant::now();
        let fs = merged(&[tar_of(&borrowed)]);
        assert_eq!(fs.nodes.len(), n + 2);
        assert!(t.elapsed().as_secs() < 20, "quadratic whiteouts");
    }

    #[test]
    fn zstd_with_several_frames_and_a_skippable_one() {
        let tar1 = tar_of(&[("a", "f:first")]);
        let tar2 = tar_of(&[("b", "f:second")]);
        // One tar split over two frames, with a skippable frame between them.
        let mut whole = tar1[..tar1.len() - 1024].to_vec();
        whole.extend_from_slice(&tar2);
        let (p1, p2) = whole.split_at(700);
        let mut z =
            ruzstd::encoding::compress_to_vec(p1, ruzstd::encoding::CompressionLevel::Fastest);
        z.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        z.extend_from_slice(&3u32.to_le_bytes());
        z.extend_from_slice(b"xyz");
        z.extend(ruzstd::encoding::compress_to_vec(
            p2,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("l");
        std::fs::write(&path, z).unwrap();
        let mut fs = Rootfs::empty();
        let (diff_id, n) = fs.apply_layer(0, open_layer(&path).unwrap()).unwrap();
        assert_eq!(n, whole.len() as u64);
        assert_eq!(diff_id, crate::digest::sha256_bytes(&whole));
        assert_eq!(paths(&fs), vec!["a", "b"]);
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_root() {
        let l = tar_of(&[
            ("usr/lib/x/libz.so.1.2", "f:z"),
            ("usr/lib/x/libz.so.1", "l:libz.so.1.2"),
            ("lib", "l:usr/lib"),
            ("lib64", "l:/usr/lib/x/../x"),
            ("loop1", "l:loop2"),
            ("loop2", "l:loop1"),
            ("esc", "l:../../../etc/passwd"),
            ("f", "f:"),
        ]);
        let fs = merged(&[l]);
        let r = fs.resolve("/lib/x/libz.so.1", true).unwrap();
        assert_eq!(r.path, "usr/lib/x/libz.so.1.2");
        assert_eq!(r.symlinks, vec!["lib", "usr/lib/x/libz.so.1"]);
        let r = fs.resolve("/lib64/libz.so.1", false).unwrap();
        assert_eq!(r.path, "usr/lib/x/libz.so.1");
        assert_eq!(fs.resolve("/loop1", true), Err(ResolveError::Loop));
        assert!(matches!(
            fs.resolve("/esc", true),
            Err(ResolveError::Escape { .. })
        ));
        assert_eq!(fs.resolve("/nope", true), Err(ResolveError::NotFound));
        assert!(matches!(
            fs.resolve("/f/x", true),
            Err(ResolveError::NotADirectory(_))
        ));
    }

    fn layers_in(dir: &Path, layers: &[Vec<u8>]) -> Vec<LayerBlob> {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| blob_at(dir, &format!("l{i}"), l))
            .collect()
    }

    #[test]
    fn a_parallel_merge_equals_the_sequential_one_and_captures_what_is_visible() {
        let d = tempfile::tempdir().unwrap();
        let layers = vec![
            tar_of(&[
                ("etc", "d"),
                ("etc/a", "f:one"),
                ("etc/b", "f:bee"),
                ("usr", "d"),
            ]),
            tar_of(&[("usr/share/man/x.1", "f:manual"), ("usr/bin", "d")]),
            tar_of(&[("etc/a", "f:two"), ("etc/.wh.b", "f:")]),
            tar_of(&[("usr/bin/h", "h:etc/a"), ("opt", "d")]),
        ];
        let merge = |threads: usize| {
            let spool = d.path().join(format!("cap{threads}"));
            std::fs::create_dir(&spool).unwrap();
            Rootfs::merge_with(
                layers_in(d.path(), &layers),
                None,
                MergeOptions {
                    cache: None,
                    capture: Some(Capture {
                        dir: spool,
                        budget: Budget::new(1 << 20),
                    }),
                    threads,
                },
            )
            .unwrap()
        };
        let one = merge(1);
        let four = merge(4);
        assert_eq!(one.nodes, four.nodes);
        assert_eq!(one.layer_sizes, four.layer_sizes);
        for fs in [&one, &four] {
            assert_eq!(
                fs.inflated.merge_bytes.load(Ordering::Relaxed),
                fs.uncompressed_size()
            );
            // The upper `etc/a`, through its hard link too; `etc/b` is gone; the man page
            // was not captured.
            let a = fs.captured_local("etc/a").unwrap();
            assert_eq!(a.read(10).unwrap(), b"two");
            assert_eq!(fs.captured_local("usr/bin/h"), Some(a));
            assert!(fs.get("etc/b").is_none());
            assert!(fs.captured_local("usr/share/man/x.1").is_none());
            // Reading files serves the captures without a pass; the man page costs one.
            let got = fs
                .read_files(
                    &["etc/a".to_string(), "usr/share/man/x.1".to_string()],
                    d.path(),
                )
                .unwrap();
            assert_eq!(got["usr/share/man/x.1"].read(10).unwrap(), b"manual");
            assert_eq!(fs.inflated.later_passes.load(Ordering::Relaxed), 1);
            assert_eq!(fs.inflated.later_files.load(Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn a_parallel_merge_reports_the_first_bad_layer_in_manifest_order() {
        let d = tempfile::tempdir().unwrap();
        let bad = |name: &str| {
            let mut t = tar_of(&[("x", "d")]);
            t.truncate(100);
            t.extend_from_slice(name.as_bytes());
            t
        };
        let layers = vec![
            tar_of(&[("a", "f:1")]),
            tar_of(&[("b", "h:missing")]),
            tar_of(&[("c", "f:3")]),
            bad("broken"),
        ];
        for threads in [1, 2, 4] {
            let err = Rootfs::merge_with(
                layers_in(d.path(), &layers),
                None,
                MergeOptions {
                    threads,
                    ..Default::default()
                },
            )
            .err()
            .expect("refused")
            .to_string();
            assert!(err.contains("layer 2"), "{threads} threads: {err}");
        }
    }
}

//! Access to file contents for the tracer: files are copied out of their layers into a work
//! dir on first use (many at once, one pass per layer), and ELF facts are parsed once per file.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::elf::{self, ElfFacts};
use crate::error::{Error, Result};
use crate::rootfs::{Kind, Local, Rootfs, display};

/// Largest file read as an ELF object or script.
pub const MAX_OBJECT_BYTES: u64 = 2 << 30;

/// Access to file contents, so the search logic can be tested apart from layer streaming.
pub trait Contents {
    /// Hint: these files will be read soon (lets a layer be streamed once for many files).
    fn prefetch(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()>;
    /// Up to `max` bytes of a regular file (canonical path).
    fn read(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>>;
    /// ELF facts of a regular file, `None` when it is not ELF.
    fn elf(&mut self, fs: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>>;
    /// Hint: [`Contents::elf`] will soon be asked about these files (parsed ahead, side by
    /// side, when their bytes are at hand; a file that fails is left for `elf` to report).
    fn elf_ahead(&mut self, _fs: &Rootfs, _paths: &[String]) {}
    /// The first `n` bytes of a regular file (fewer when it is shorter).
    fn head(&mut self, fs: &Rootfs, path: &str, n: usize) -> Result<Vec<u8>> {
        let mut b = self.read(fs, path, MAX_OBJECT_BYTES)?;
        b.truncate(n);
        Ok(b)
    }
    /// A local copy of a regular file to open (jars are read as zip archives); `None` when
    /// the contents are not on disk.
    fn local_path(&mut self, _fs: &Rootfs, _path: &str) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    /// Whether a regular file contains `needle`.
    fn contains(&mut self, fs: &Rootfs, path: &str, needle: &[u8]) -> Result<bool> {
        let b = self.read(fs, path, MAX_OBJECT_BYTES)?;
        Ok(b.windows(needle.len()).any(|w| w == needle))
    }
}

/// A layer's first read also copies its other visible files up to this size each
/// (sources, libraries, configuration: what the rules read next)...
pub const SPOOL_FILE_BYTES: u64 = 8 << 20;
/// ...and up to this many bytes over the whole image, so the tracer streams each layer about
/// once instead of once per question (a Ruby or Python require graph asks hundreds).
pub const SPOOL_BYTES: u64 = 1 << 30;

impl<T: Contents + ?Sized> crate::packages::Reader for T {
    fn prefetch_files(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()> {
        self.prefetch(fs, paths)
    }
    fn read_file(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>> {
        self.read(fs, path, max)
    }
}

/// [`Contents`] over the real layers: files are copied into a work dir on first use.
pub struct LayerContents {
    dir: PathBuf,
    files: HashMap<String, Local>,
    /// Files copied to a file of their own, to open as a whole (jars).
    whole: HashMap<String, PathBuf>,
    /// Layers whose visible files were copied along with a first read.
    spooled: HashSet<usize>,
    spool_budget: u64,
    facts: HashMap<String, Option<Arc<ElfFacts>>>,
    /// How many times files were read out of the layers, and how many files.
    pub passes: usize,
    pub files_read: usize,
}

impl LayerContents {
    pub fn new(dir: &Path) -> Self {
        LayerContents {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            whole: HashMap::new(),
            spooled: HashSet::new(),
            spool_budget: SPOOL_BYTES,
            facts: HashMap::new(),
            passes: 0,
            files_read: 0,
        }
    }

    /// Local copy of a file, reading it from its layer if needed.
    pub fn local(&mut self, fs: &Rootfs, path: &str) -> Result<Local> {
        if let Some(p) = self.files.get(path) {
            return Ok(p.clone());
        }
        self.prefetch(fs, &[path.to_string()])?;
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| Error::path(display(path), "not a regular file"))
    }

    pub fn into_files(self) -> HashMap<String, Local> {
        self.files
    }
}

impl Contents for LayerContents {
    fn prefetch(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()> {
        // What the merge pass captured is there already.
        for p in paths {
            if !self.files.contains_key(p)
                && let Some(local) = fs.captured_local(p)
            {
                self.files.insert(p.clone(), local);
            }
        }
        let mut missing: Vec<String> = paths
            .iter()
            .filter(|p| !self.files.contains_key(*p))
            .filter(|p| matches!(fs.get(p).map(|n| &n.kind), Some(Kind::File { .. })))
            .cloned()
            .collect();
        if !missing.is_empty() {
            // The first pass over a layer copies its other small visible files too.
            let layers: BTreeSet<usize> = missing
                .iter()
                .filter_map(|p| match fs.get(p).map(|n| &n.kind) {
                    Some(Kind::File { layer, .. }) => Some(*layer),
                    _ => None,
                })
                .collect();
            let wanted: HashSet<String> = missing.iter().cloned().collect();
            for layer in layers {
                if !self.spooled.insert(layer) {
                    continue;
                }
                for (path, node) in &fs.nodes {
                    if let Kind::File { layer: l, size, .. } = node.kind
                        && l == layer
                        && size <= SPOOL_FILE_BYTES
                        && size <= self.spool_budget
                        && !self.files.contains_key(path)
                        && !wanted.contains(path)
                        && fs.captured_local(path).is_none()
                    {
                        self.spool_budget -= size;
                        missing.push(path.clone());
                    }
                }
            }
            self.passes += 1;
            self.files_read += missing.len();
            tracing::trace!(pass = self.passes, files = missing.len(), first = %missing[0], "read from layers");
            let got = fs.read_files(&missing, &self.dir)?;
            self.files.extend(got);
        }
        Ok(())
    }

    fn local_path(&mut self, fs: &Rootfs, path: &str) -> Result<Option<PathBuf>> {
        if let Some(p) = self.whole.get(path) {
            return Ok(Some(p.clone()));
        }
        let local = self.local(fs, path)?;
        let whole = self.dir.join(format!("w{}", self.whole.len()));
        let copied = (|| {
            let mut f = std::fs::File::create(&whole)?;
            std::io::copy(&mut local.open()?, &mut f)
        })();
        match copied {
            Ok(n) if n == local.len => {}
            Ok(_) => return Err(Error::path(display(path), "its local copy is short")),
            Err(e) => return Err(Error::io(&whole, e)),
        }
        self.whole.insert(path.to_string(), whole.clone());
        Ok(Some(whole))
    }

    fn read(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>> {
        if fs.get(path).map_or(0, |n| n.size()) > max {
            return Err(Error::path(
                display(path),
                format!("larger than {max} bytes"),
            ));
        }
        let local = self.local(fs, path)?;
        local
            .read(max)
            .map_err(|e| Error::path(display(path), e.to_string()))
    }

    fn head(&mut self, fs: &Rootfs, path: &str, n: usize) -> Result<Vec<u8>> {
        let local = self.local(fs, path)?;
        let f = local.open().map_err(|e| Error::io(&*local.path, e))?;
        let mut out = Vec::with_capacity(n);
        std::io::Read::read_to_end(&mut std::io::Read::take(f, n as u64), &mut out)
            .map_err(|e| Error::io(&*local.path, e))?;
        Ok(out)
    }

    fn contains(&mut self, fs: &Rootfs, path: &str, needle: &[u8]) -> Result<bool> {
        let local = self.local(fs, path)?;
        let mut f = local.open().map_err(|e| Error::io(&*local.path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let keep = needle.len().saturating_sub(1);
        let mut filled = 0;
        loop {
            let k = std::io::Read::read(&mut f, &mut buf[filled..])
                .map_err(|e| Error::io(&*local.path, e))?;
            if k == 0 {
                return Ok(false);
            }
            filled += k;
            if buf[..filled].windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
            // Keep the tail that could start a match across the boundary.
            let tail = filled.saturating_sub(keep);
            buf.copy_within(tail..filled, 0);
            filled -= tail;
        }
    }

    fn elf(&mut self, fs: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>> {
        if let Some(f) = self.facts.get(path) {
            return Ok(f.clone());
        }
        // Another image of the process parsed the same bytes (a batch's shared base).
        if let Some(f) = fs.shared_facts(path) {
            self.facts.insert(path.to_string(), f.clone());
            return Ok(f);
        }
        let size = fs.get(path).map_or(0, |n| n.size());
        if size > MAX_OBJECT_BYTES {
            return Err(Error::path(
                display(path),
                "larger than 2 GiB; refusing to parse",
            ));
        }
        let local = self.local(fs, path)?;
        let facts = parse_local(path, &local, size)?;
        fs.share_facts(path, &facts);
        self.facts.insert(path.to_string(), facts.clone());
        Ok(facts)
    }

    fn elf_ahead(&mut self, fs: &Rootfs, paths: &[String]) {
        // Files the merge captured, not parsed yet: no layer is read for a guess.
        let mut todo: Vec<(String, Local, u64)> = Vec::new();
        for p in paths {
            if self.facts.contains_key(p) || todo.iter().any(|(q, _, _)| q == p) {
                continue;
            }
            let size = fs.get(p).map_or(0, |n| n.size());
            let local = self.files.get(p).cloned().or_else(|| fs.captured_local(p));
            if let Some(local) = local
                && size <= MAX_OBJECT_BYTES
                && fs.shared_facts(p).is_none()
            {
                todo.push((p.clone(), local, size));
            }
        }
        if todo.len() < 2 {
            return;
        }
        let done = crate::par::map(&todo, crate::par::cores(), |(p, local, size)| {
            parse_local(p, local, *size).ok()
        });
        for ((p, local, _), f) in todo.into_iter().zip(done) {
            if let Some(f) = f {
                fs.share_facts(&p, &f);
                self.files.entry(p.clone()).or_insert(local);
                self.facts.insert(p, f);
            }
        }
    }
}

/// The ELF facts of a file whose bytes are at `local` (`None`: not ELF).
fn parse_local(path: &str, local: &Local, size: u64) -> Result<Option<Arc<ElfFacts>>> {
    if size < 4 {
        return Ok(None);
    }
    let file = std::fs::File::open(&local.path).map_err(|e| Error::io(&*local.path, e))?;
    // SAFETY: the spool is pare's private copy in its own work dir; nothing else writes it.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(local.offset)
            .len(local.len as usize)
            .map(&file)
    }
    .map_err(|e| Error::io(&*local.path, e))?;
    if !elf::is_elf(&map) {
        return Ok(None);
    }
    elf::parse(&map)
        .map(|f| Some(Arc::new(f)))
        .map_err(|reason| Error::Elf {
            path: display(path),
            reason,
        })
}

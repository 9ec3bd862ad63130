//! What the images of one process share, by layer digest: parses and copied files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::node::Local;
use super::parse::ParsedLayer;
use crate::elf::ElfFacts;
use crate::error::Result;

/// Most bytes of parsed layers a [`LayerCache`] keeps for later images.
pub const PARSED_BUDGET: usize = 512 << 20;
/// Most bytes of files a [`LayerCache`] keeps copied out of layers for later images.
pub const FILES_BUDGET: u64 = 4 << 30;
/// Most bytes (as [`ElfFacts::footprint`] counts them) of ELF facts a [`LayerCache`] keeps.
pub const FACTS_BUDGET: usize = 64 << 20;

/// What the images of one process (a batch) share, by layer digest: each layer's parse (so a
/// layer is inflated and indexed once, not once per image), and the files already copied out
/// of it for tracing (so a shared base layer is not inflated again to read its libc). Both are
/// bounded: parses by [`PARSED_BUDGET`] bytes, least recently used dropped first; files by
/// [`FILES_BUDGET`] bytes, past which copies go to the image's own work dir.
pub struct LayerCache {
    pub(super) dir: PathBuf,
    parsed: std::sync::Mutex<ParsedSlots>,
    files: std::sync::Mutex<CopiedFiles>,
    parsed_budget: usize,
    facts: std::sync::Mutex<KnownFacts>,
    /// Objects whose ELF facts another image had parsed.
    pub facts_hits: AtomicU64,
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

/// ELF facts by (layer digest, entry ordinal): `None` for a file that is not ELF.
#[derive(Default)]
struct KnownFacts {
    map: HashMap<(String, u64), Option<Arc<ElfFacts>>>,
    bytes: usize,
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
            facts: Default::default(),
            facts_hits: AtomicU64::new(0),
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

    pub(super) fn file(&self, digest: &str, entry: u64) -> Option<Local> {
        lock(&self.files)
            .map
            .get(&(digest.to_string(), entry))
            .cloned()
    }

    /// Where to spool `size` bytes of files so later images find them: `None` when the
    /// budget is spent.
    pub(super) fn spool_slot(&self, size: u64) -> Option<PathBuf> {
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
    pub(super) fn put_file(&self, digest: &str, entry: u64, local: Local) -> Local {
        let mut f = lock(&self.files);
        f.map
            .entry((digest.to_string(), entry))
            .or_insert(local)
            .clone()
    }

    /// The ELF facts of entry `entry` of layer `digest`, when an image parsed them.
    pub(super) fn facts(&self, digest: &str, entry: u64) -> Option<Option<Arc<ElfFacts>>> {
        let found = lock(&self.facts)
            .map
            .get(&(digest.to_string(), entry))
            .cloned();
        if found.is_some() {
            self.facts_hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keep the facts of entry `entry` of layer `digest` for later images, while under
    /// [`FACTS_BUDGET`].
    pub(super) fn put_facts(&self, digest: &str, entry: u64, facts: &Option<Arc<ElfFacts>>) {
        let size = 64 + digest.len() + facts.as_deref().map_or(0, ElfFacts::footprint);
        let mut f = lock(&self.facts);
        if f.bytes + size > FACTS_BUDGET {
            return;
        }
        if f.map
            .insert((digest.to_string(), entry), facts.clone())
            .is_none()
        {
            f.bytes += size;
        }
    }

    /// A spool that is not kept: removed, its bytes given back to the budget.
    pub(super) fn drop_spool(&self, path: &Path, size: u64) {
        let _ = std::fs::remove_file(path);
        let mut f = lock(&self.files);
        f.bytes = f.bytes.saturating_sub(size);
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::rootfs::Rootfs;
    use crate::rootfs::tests::{blob_at, paths, tar_of};

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

    /// ELF facts are shared by the bytes they were parsed from: the same entry of the same
    /// layer digest in another image, never a file of the same name elsewhere.
    #[test]
    fn facts_are_shared_by_layer_and_entry() {
        let base = tar_of(&[("lib/libc.so", "f:libc")]);
        let other = tar_of(&[("lib/libc.so", "f:other")]);
        let d = tempfile::tempdir().unwrap();
        let cache = Arc::new(LayerCache::new(d.path()));
        let fs1 = Rootfs::merge_cached(
            vec![blob_at(d.path(), "b1", &base)],
            None,
            Some(cache.clone()),
        )
        .unwrap();
        assert_eq!(fs1.shared_facts("lib/libc.so"), None);
        let facts = Some(Arc::new(ElfFacts {
            soname: Some("libc.so.6".into()),
            ..Default::default()
        }));
        fs1.share_facts("lib/libc.so", &facts);
        fs1.share_facts("lib", &facts); // not a file: nothing kept
        let fs2 = Rootfs::merge_cached(
            vec![blob_at(d.path(), "b2", &base)],
            None,
            Some(cache.clone()),
        )
        .unwrap();
        assert_eq!(fs2.shared_facts("lib/libc.so"), Some(facts));
        assert_eq!(fs2.shared_facts("lib"), None);
        let fs3 = Rootfs::merge_cached(
            vec![blob_at(d.path(), "o", &other)],
            None,
            Some(cache.clone()),
        )
        .unwrap();
        assert_eq!(fs3.shared_facts("lib/libc.so"), None, "other bytes");
        assert_eq!(cache.facts_hits.load(Ordering::Relaxed), 1);
        // Without a cache nothing is shared.
        let plain = Rootfs::merge(vec![blob_at(d.path(), "b3", &base)], None).unwrap();
        assert_eq!(plain.shared_facts("lib/libc.so"), None);
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
}

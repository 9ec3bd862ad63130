//! Files read out of the merged image: from the merge pass's captures, the process's cache, or
//! one more streaming pass over a layer into a spool file.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Rootfs;
use super::decompress::open_blob;
use super::node::{Kind, Local, Node, display};
use crate::error::{Error, Result};
use crate::targuard::TarGuard;

/// Largest single file pare copies out of a layer.
pub const MAX_FILE_BYTES: u64 = crate::targuard::MAX_SPARSE;

/// Spool files made by this process (their names).
static SPOOLS: AtomicU64 = AtomicU64::new(0);

impl Rootfs {
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

    /// The ELF facts another image of the process parsed from this file's bytes (the same
    /// entry of the same layer blob): `Some(None)` for a file known not to be ELF.
    pub fn shared_facts(&self, path: &str) -> Option<Option<Arc<crate::elf::ElfFacts>>> {
        let (digest, entry) = self.identity(path)?;
        self.cache.as_ref()?.facts(digest, entry)
    }

    /// Give the process's other images the facts parsed from this file.
    pub fn share_facts(&self, path: &str, facts: &Option<Arc<crate::elf::ElfFacts>>) {
        if let (Some(cache), Some((digest, entry))) = (&self.cache, self.identity(path)) {
            cache.put_facts(digest, entry, facts);
        }
    }

    /// A regular file's bytes by name: its layer's digest and its entry there.
    fn identity(&self, path: &str) -> Option<(&str, u64)> {
        match self.nodes.get(path)?.kind {
            Kind::File { layer, entry, .. } => {
                Some((self.layers.get(layer)?.descriptor.digest.as_str(), entry))
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
#[cfg(test)]
mod tests {
    use crate::image::LayerBlob;
    use crate::rootfs::Rootfs;
    use crate::rootfs::tests::{paths, tar_of};

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
            unverified: None,
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
}

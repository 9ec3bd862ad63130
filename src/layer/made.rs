//! Layers a process already wrote, by what their bytes depend on ([`super::split::Group::key`]):
//! a batch writes the layer of a shared base's kept files once, however many images on that
//! base it hardens.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Written, WrittenLayer};
use crate::error::{Error, Result};
use crate::sbom::Sums;

/// Most bytes of written layers a [`Made`] keeps on disk for later images.
pub const MADE_BUDGET: u64 = 2 << 30;

#[derive(Clone)]
struct Kept {
    layer: WrittenLayer,
    sums: BTreeMap<String, Sums>,
    /// Whether the sums were taken (a layer written without them is not reused by an image
    /// that needs them).
    summed: bool,
}

type Cell = Arc<Mutex<Option<Kept>>>;

/// Written layers by key, their files in a directory the cache owns, at most `budget` bytes.
pub struct Made {
    dir: tempfile::TempDir,
    cells: Mutex<HashMap<String, Cell>>,
    held: AtomicU64,
    budget: u64,
    /// Layers reused instead of written.
    pub hits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Made {
    pub fn new() -> Result<Self> {
        Self::with_budget(MADE_BUDGET)
    }

    pub fn with_budget(budget: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pare-layers-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        Ok(Made {
            dir,
            cells: Default::default(),
            held: AtomicU64::new(0),
            budget,
            hits: AtomicU64::new(0),
        })
    }

    /// The layer of `key`: an earlier one when this process wrote it (with sums when `sums`),
    /// else `write(path)`'s, kept for later images while under the budget (past it, written
    /// at `fallback`). Images asking for one key at once wait for one write.
    pub fn get_or_write(
        &self,
        key: &str,
        sums: bool,
        fallback: &Path,
        write: impl FnOnce(&Path) -> Result<Written>,
    ) -> Result<Written> {
        let cell = lock(&self.cells)
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut slot = lock(&cell);
        if let Some(k) = slot.as_ref()
            && (k.summed || !sums)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Written {
                layer: k.layer.clone(),
                sums: k.sums.clone(),
            });
        }
        if self.held.load(Ordering::Relaxed) >= self.budget {
            return write(fallback);
        }
        // Rewritten only to add the sums, under another name: a kept file never changes while
        // an image reads it.
        let path = self.dir.path().join(format!("{key}-{}", sums as u8));
        // What a failed write of this key left.
        let _ = std::fs::remove_file(&path);
        let written = write(&path)?;
        self.held.fetch_add(written.layer.size, Ordering::Relaxed);
        *slot = Some(Kept {
            layer: written.layer.clone(),
            sums: written.sums.clone(),
            summed: sums,
        });
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::LayerCompression;

    fn written(path: &Path, n: u64) -> Result<Written> {
        std::fs::write(path, vec![0; n as usize]).unwrap();
        let sums = [("f".to_string(), Sums::of_reader(&b"x"[..]).unwrap())].into();
        Ok(Written {
            layer: WrittenLayer {
                path: path.to_path_buf(),
                digest: format!("sha256:{n}"),
                size: n,
                diff_id: String::new(),
                uncompressed_size: n,
                compression: LayerCompression::Gzip,
            },
            sums,
        })
    }

    #[test]
    fn a_key_is_written_once_and_its_file_kept() {
        let made = Made::new().unwrap();
        let work = tempfile::tempdir().unwrap();
        let fallback = work.path().join("l");
        let a = made
            .get_or_write("k", true, &fallback, |p| written(p, 10))
            .unwrap();
        assert_ne!(a.layer.path, fallback, "kept in the cache's own dir");
        let b = made
            .get_or_write("k", true, &fallback, |_| panic!("written twice"))
            .unwrap();
        assert_eq!(
            (a.layer.path.clone(), a.sums.len()),
            (b.layer.path, b.sums.len())
        );
        // Without sums asked, the one with sums serves too.
        made.get_or_write("k", false, &fallback, |_| panic!("written twice"))
            .unwrap();
        assert_eq!(made.hits.load(Ordering::Relaxed), 2);
        // Another key is written.
        let c = made
            .get_or_write("j", true, &fallback, |p| written(p, 5))
            .unwrap();
        assert_eq!(c.layer.size, 5);
        assert!(a.layer.path.exists() && c.layer.path.exists());
    }

    #[test]
    fn without_sums_a_layer_is_written_again_for_an_image_that_needs_them() {
        let made = Made::new().unwrap();
        let work = tempfile::tempdir().unwrap();
        let fallback = work.path().join("l");
        let a = made
            .get_or_write("k", false, &fallback, |p| written(p, 3))
            .unwrap();
        let b = made
            .get_or_write("k", true, &fallback, |p| written(p, 3))
            .unwrap();
        assert_ne!(
            a.layer.path, b.layer.path,
            "the first file is never rewritten"
        );
        assert!(a.layer.path.exists());
        made.get_or_write("k", true, &fallback, |_| panic!("written twice"))
            .unwrap();
    }

    #[test]
    fn past_the_budget_layers_are_written_in_the_image_s_dir() {
        let made = Made::with_budget(8).unwrap();
        let work = tempfile::tempdir().unwrap();
        let fallback = work.path().join("l");
        made.get_or_write("a", true, &fallback, |p| written(p, 10))
            .unwrap();
        let b = made
            .get_or_write("b", true, &fallback, |p| written(p, 1))
            .unwrap();
        assert_eq!(b.layer.path, fallback);
        let again = made
            .get_or_write("b", true, &fallback, |p| written(p, 1))
            .unwrap();
        assert_eq!(again.layer.path, fallback, "not kept, so written again");
        assert_eq!(made.hits.load(Ordering::Relaxed), 0);
    }
}

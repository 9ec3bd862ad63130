//! What each layer did (entries, added/changed/removed files, bytes it hid) and dive's
//! efficiency figures, counted as the layers are applied.

use super::Rootfs;

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

impl Rootfs {
    /// Whiteouts and opaque directories: what they deleted from lower layers.
    pub(super) fn count_removed(&mut self, layer: usize, log: &[(String, u64)]) {
        let st = &mut self.stats[layer];
        st.removed += log.len() as u64;
        st.wasted += log.iter().map(|(_, n)| n).sum::<u64>();
    }

    /// A non-directory written at `path`: added, or changed (what it replaced is wasted).
    pub(super) fn count_written(&mut self, layer: usize, path: &str, size: u64) {
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

    pub(super) fn use_path(&mut self, path: &str, size: u64) {
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
}

#[cfg(test)]
mod tests {
    use crate::rootfs::tests::{merged, paths, tar_of};

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
}

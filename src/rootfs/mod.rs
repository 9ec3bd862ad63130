//! The merged image filesystem, as an in-memory index built by streaming each layer once
//! (layers are parsed in parallel, applied in manifest order). Nothing is extracted: a node
//! records which layer entry holds its bytes; the same pass captures the bytes later stages may
//! read into one spool file per layer ([`capture`]), and [`Rootfs::read_files`] serves files from
//! there, streaming a layer again only for a file that was not captured (counted in
//! [`Inflated`]). Local copies live under counter names, never under image paths. All path
//! resolution, symlinks included, happens inside this virtual root.
//!
//! The parts: `node` (nodes, paths), `decompress` (gzip/zstd/plain streams), `parse` (a tar
//! stream into ops), `merge` (the layers in order, in parallel), `apply` (an op on the tree:
//! whiteouts, hard links, parents), `resolve` (lookups), `read` (file bytes), `cache` (what the
//! images of a process share), `stats` (per-layer counts, dive's efficiency), `capture`.

mod apply;
mod cache;
pub mod capture;
mod decompress;
mod merge;
mod node;
mod parse;
mod read;
mod resolve;
mod stats;
#[cfg(test)]
pub(crate) mod tests;

pub use cache::{FILES_BUDGET, LayerCache, PARSED_BUDGET};
pub use capture::{Budget, Capture, Captured};
pub use decompress::{open_blob, open_layer, read_ahead};
pub use merge::{MergeOptions, default_threads};
pub use node::{Kind, Local, Node, ResolveError, Resolved, display, normalize};
pub use parse::ParsedLayer;
pub use read::MAX_FILE_BYTES;
pub use stats::{Efficiency, LayerStats, PathUse};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::image::LayerBlob;
use node::dir_node;

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
    /// The last directory the merge resolved (as named → canonical): a layer's entries come
    /// directory by directory. Forgotten at any change but a regular file's.
    dir_memo: Option<(String, String)>,
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
            dir_memo: None,
        };
        fs.nodes.insert(String::new(), dir_node(0o755, 0));
        fs
    }

    pub fn uncompressed_size(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }
}

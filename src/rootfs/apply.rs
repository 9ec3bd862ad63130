//! One parsed entry applied to the merged tree: whiteouts, opaque directories, hard links,
//! parents found through symlinks, and the node and path bounds.

use std::sync::Arc;

use super::Rootfs;
use super::node::{Kind, Node, ResolveError, base_of, dir_node, parent_of};
use super::parse::Op;
use super::stats::LayerStats;
use crate::error::{Error, Result};

/// Most entries accepted in one image.
const MAX_ENTRIES: usize = 5_000_000;
/// Most bytes of paths held in the index.
const MAX_KEY_BYTES: usize = 512 << 20;

impl Rootfs {
    pub(super) fn begin_layer(&mut self, layer: usize) {
        self.applied.clear();
        self.written.clear();
        while self.stats.len() <= layer {
            self.stats.push(LayerStats::default());
        }
        while self.captured.len() <= layer {
            self.captured.push(Arc::default());
        }
    }

    pub(super) fn apply_checked(&mut self, layer: usize, op: &Op) -> Result<()> {
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
        if !matches!(node.kind, Kind::File { .. }) {
            self.dir_memo = None;
        }
        let len = path.len();
        if self.nodes.insert(path, node).is_none() {
            self.key_bytes += len;
        }
    }

    fn del(&mut self, path: &str) {
        self.dir_memo = None;
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
        if let Some((named, canonical)) = &self.dir_memo
            && named == dir
        {
            return canonical.clone();
        }
        let cur = self.walk_dir(dir, layer);
        self.dir_memo = Some((dir.to_string(), cur.clone()));
        cur
    }

    /// [`Rootfs::real_dir`], component by component.
    fn walk_dir(&mut self, dir: &str, layer: usize) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::{merged, paths, refusal, tar_of};

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
}

//! The hardened image's layers follow its source's: each kept entry goes in a layer made from
//! the source layer it came from, with its own time; what pare made or changed (the users, a
//! file's new bytes) and groups too small to be worth a layer of their own go in a last one.
//! A layer made from a shared base layer is then the same blob in every image on that base
//! that keeps the same files of it: pulled, stored and pushed once.

use crate::plan::{Content, Entry, Plan};
use crate::rootfs::{Kind, Rootfs};

/// A source layer whose kept entries hold fewer bytes than this has them in the last layer
/// (a layer costs a blob, a request and a mount for each image).
pub const SMALL: u64 = 256 << 10;

/// One entry of a layer to write, with its file time.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub path: &'a str,
    pub entry: &'a Entry,
    pub mtime: u64,
}

/// The entries of one output layer.
#[derive(Debug)]
pub struct Group<'a> {
    /// The source layer they came from (`None`: the last layer, pare's own).
    pub source: Option<usize>,
    /// In path order.
    pub items: Vec<Item<'a>>,
    /// What the layer's bytes depend on, hashed (with the layer format): equal keys give equal
    /// blobs, so a process writes each once. `None`: an entry's bytes are not named by the
    /// source's digests (never shared).
    pub key: Option<String>,
}

/// Every entry of `plan` in one layer, each with time `mtime` (tests, and a plan without a
/// source).
pub fn all(plan: &Plan, mtime: u64) -> Vec<Item<'_>> {
    plan.entries
        .iter()
        .map(|(path, entry)| Item { path, entry, mtime })
        .collect()
}

/// `plan`'s entries in layers by the source layer of `fs` each came from, in the source's
/// order, then the last: pare's own entries (with time `mtime`) and small groups. An entry
/// from the source keeps its time, no later than `clamp` (`SOURCE_DATE_EPOCH`) when set.
/// `format` (the layer format) goes into each group's key.
pub fn split<'a>(
    plan: &'a Plan,
    fs: &Rootfs,
    mtime: u64,
    clamp: Option<u64>,
    format: &str,
) -> Vec<Group<'a>> {
    let mut by_layer: Vec<Vec<Item<'a>>> = vec![Vec::new(); fs.layers.len()];
    let mut own = Vec::new();
    for (path, entry) in &plan.entries {
        match source_layer(fs, path, entry) {
            Some((layer, t)) if layer < by_layer.len() => by_layer[layer].push(Item {
                path,
                entry,
                mtime: clamp.map_or(t, |c| t.min(c)),
            }),
            _ => own.push(Item { path, entry, mtime }),
        }
    }
    let mut groups = Vec::new();
    for (i, items) in by_layer.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let bytes: u64 = items.iter().map(|it| it.entry.size).sum();
        if bytes < SMALL {
            own.extend(items);
        } else {
            groups.push((Some(i), items));
        }
    }
    if !own.is_empty() || groups.is_empty() {
        own.sort_by(|a, b| a.path.cmp(b.path));
        groups.push((None, own));
    }
    groups
        .into_iter()
        .map(|(source, items)| Group {
            key: key(fs, &items, format),
            source,
            items,
        })
        .collect()
}

/// The source layer an entry comes from unchanged in kind, and its time there.
fn source_layer(fs: &Rootfs, path: &str, entry: &Entry) -> Option<(usize, u64)> {
    let node = fs.get(path)?;
    let same = match (&entry.content, &node.kind) {
        (Content::Dir, Kind::Dir) => true,
        (Content::Symlink(a), Kind::Symlink(b)) => a == b,
        (Content::Image(src), Kind::File { .. }) => src == path,
        _ => false,
    };
    same.then_some((node.layer, node.mtime))
}

/// The hash of everything a group's layer bytes depend on: the format, and each entry's path,
/// mode, owner, time and content (a source file by its layer's digest and entry number, which
/// name its bytes; pare's bytes by their hash).
fn key(fs: &Rootfs, items: &[Item], format: &str) -> Option<String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(format.as_bytes());
    h.update([0]);
    for it in items {
        let e = it.entry;
        h.update(it.path.as_bytes());
        h.update(
            format!(
                "\0{:o} {} {} {} {}\0",
                e.mode, e.uid, e.gid, it.mtime, e.size
            )
            .as_bytes(),
        );
        match &e.content {
            Content::Dir => h.update(b"d"),
            Content::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
            }
            Content::Bytes(b) => {
                h.update(b"b");
                h.update(sha2::Sha256::digest(b));
            }
            Content::Image(src) => match fs.get(src).map(|n| &n.kind) {
                Some(Kind::File { layer, entry, .. }) => {
                    let digest = &fs.layers.get(*layer)?.descriptor.digest;
                    h.update(format!("f{digest} {entry}").as_bytes());
                }
                _ => return None,
            },
        }
        h.update([0]);
    }
    Some(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Descriptor, LayerBlob};
    use crate::rootfs::Node;

    fn blob(digest: &str) -> LayerBlob {
        LayerBlob {
            descriptor: Descriptor {
                media_type: crate::image::OCI_LAYER_GZIP.into(),
                digest: digest.into(),
                size: 1,
                urls: None,
                annotations: None,
                platform: None,
                artifact_type: None,
            },
            path: "/nonexistent".into(),
            growing: None,
            unverified: None,
        }
    }

    /// A source of two layers (`digests`): `usr/lib/a` (600 KiB, layer 0, time 100),
    /// `opt/b` (300 KiB, layer 1, time 200), `opt/small` (1 KiB, layer 1), `usr` and `opt`
    /// from layer 0, `etc/passwd` in layer 1; and the plan keeping all of them, the users'
    /// file rewritten.
    fn source(digests: [&str; 2]) -> (Rootfs, Plan) {
        let mut fs = Rootfs::empty();
        fs.layers = digests.iter().map(|d| blob(d)).collect();
        let mut plan = Plan::default();
        let mut add = |path: &str, kind: Kind, layer: usize, mtime: u64, content: Content| {
            let size = match &kind {
                Kind::File { size, .. } => *size,
                _ => 0,
            };
            let node = Node {
                kind,
                mode: 0o755,
                uid: 0,
                gid: 0,
                layer,
                capability: false,
                mtime,
            };
            fs.nodes.insert(path.into(), node);
            let entry = Entry {
                content,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size,
                reason: String::new(),
                evidence: Vec::new(),
            };
            plan.entries.insert(path.into(), entry);
        };
        let file = |layer, entry, size| Kind::File { layer, entry, size };
        let img = |p: &str| Content::Image(p.into());
        add("usr", Kind::Dir, 0, 100, Content::Dir);
        add("opt", Kind::Dir, 0, 100, Content::Dir);
        add(
            "usr/lib",
            Kind::Symlink("x".into()),
            0,
            100,
            Content::Symlink("x".into()),
        );
        add("usr/lib/a", file(0, 3, 600 << 10), 0, 100, img("usr/lib/a"));
        add("opt/b", file(1, 1, 300 << 10), 1, 200, img("opt/b"));
        add("opt/small", file(1, 2, 1024), 1, 200, img("opt/small"));
        add(
            "etc/passwd",
            file(1, 0, 9),
            1,
            200,
            Content::Bytes(b"root:x:0\n".to_vec()),
        );
        (fs, plan)
    }

    fn paths<'a>(g: &'a Group<'a>) -> Vec<&'a str> {
        g.items.iter().map(|i| i.path).collect()
    }

    #[test]
    fn entries_go_in_the_layer_they_came_from_and_pare_s_own_last() {
        let (fs, plan) = source(["sha256:aa", "sha256:bb"]);
        let groups = split(&plan, &fs, 7, None, "f");
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].source, Some(0));
        assert_eq!(paths(&groups[0]), ["opt", "usr", "usr/lib", "usr/lib/a"]);
        assert!(
            groups[0].items.iter().all(|i| i.mtime == 100),
            "source times kept"
        );
        assert_eq!(groups[1].source, Some(1));
        assert_eq!(paths(&groups[1]), ["opt/b", "opt/small"]);
        assert!(groups[1].items.iter().all(|i| i.mtime == 200));
        // The rewritten users' file is pare's: the last layer, with the image's time.
        assert_eq!(groups[2].source, None);
        assert_eq!(paths(&groups[2]), ["etc/passwd"]);
        assert_eq!(groups[2].items[0].mtime, 7);
        assert!(groups.iter().all(|g| g.key.is_some()));
        // SOURCE_DATE_EPOCH: no time later than it.
        let clamped = split(&plan, &fs, 7, Some(150), "f");
        assert!(clamped[1].items.iter().all(|i| i.mtime == 150));
        assert!(clamped[0].items.iter().all(|i| i.mtime == 100));
    }

    #[test]
    fn a_small_share_of_a_layer_goes_in_the_last_one() {
        let (fs, mut plan) = source(["sha256:aa", "sha256:bb"]);
        plan.entries.remove("opt/b");
        let groups = split(&plan, &fs, 7, None, "f");
        assert_eq!(groups.len(), 2);
        assert_eq!(
            paths(&groups[1]),
            ["etc/passwd", "opt/small"],
            "in path order"
        );
        assert_eq!(groups[1].items[1].mtime, 200, "its own time still");
        // An empty plan still gives one (empty) layer.
        let empty = Plan::default();
        let groups = split(&empty, &fs, 7, None, "f");
        assert_eq!(groups.len(), 1);
        assert!(groups[0].items.is_empty());
    }

    #[test]
    fn changed_entries_are_pare_s_own() {
        let (fs, mut plan) = source(["sha256:aa", "sha256:bb"]);
        // Another target than the source's link; the bytes of another path.
        plan.entries.get_mut("usr/lib").unwrap().content = Content::Symlink("y".into());
        plan.entries.get_mut("opt/b").unwrap().content = Content::Image("usr/lib/a".into());
        let groups = split(&plan, &fs, 7, None, "f");
        let last = groups.last().unwrap();
        assert!(paths(last).contains(&"usr/lib"));
        assert!(paths(last).contains(&"opt/b"));
    }

    /// Keys name the bytes: the same share of the same base layer gives the same key in two
    /// images, whatever their other layers; anything else that shapes the bytes changes it.
    #[test]
    fn keys_follow_what_the_bytes_depend_on() {
        let (fs1, plan1) = source(["sha256:aa", "sha256:bb"]);
        let (fs2, plan2) = source(["sha256:aa", "sha256:cc"]);
        let (g1, g2) = (
            split(&plan1, &fs1, 7, None, "f"),
            split(&plan2, &fs2, 9, None, "f"),
        );
        assert_eq!(g1[0].key, g2[0].key, "the shared base's share");
        assert_ne!(g1[1].key, g2[1].key, "another layer's");
        assert_ne!(g1[2].key, g2[2].key, "another time for pare's own");
        let other_format = split(&plan1, &fs1, 7, None, "g");
        assert_ne!(g1[0].key, other_format[0].key);
        let (_, mut plan3) = source(["sha256:aa", "sha256:bb"]);
        plan3.entries.get_mut("usr/lib/a").unwrap().mode = 0o555;
        assert_ne!(g1[0].key, split(&plan3, &fs1, 7, None, "f")[0].key);
        let clamped = split(&plan1, &fs1, 7, Some(50), "f");
        assert_ne!(g1[0].key, clamped[0].key);
    }
}

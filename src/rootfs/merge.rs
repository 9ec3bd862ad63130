//! The merge: every layer inflated and parsed once (in parallel), then applied in manifest
//! order.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Rootfs;
use super::cache::LayerCache;
use super::capture::Capture;
use super::decompress::{open_blob, read_ahead};
use super::parse::{ParsedLayer, parse_stream};
use crate::error::{Error, Result};
use crate::image::LayerBlob;

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
        // Each uncompressed stream is hashed only when there are diff_ids to check it against.
        let hash = diff_ids.is_some();
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
                let p = ParsedLayer::parse_with(
                    i,
                    read_ahead(open_blob(layer)?),
                    capture.clone(),
                    hash,
                );
                // A blob not yet checked: its digest first (a changed blob is reported as
                // that, not as whatever its changed bytes broke), and checked whole even if
                // the parse stopped short of its end.
                if let Some(v) = &layer.unverified {
                    v.ensure(&layer.path).map_err(malformed)?;
                }
                let p = p.map_err(malformed)?;
                inflated.fetch_add(p.size, Ordering::Relaxed);
                fresh[i].store(true, Ordering::Relaxed);
                Ok(p)
            };
            // A shared parse holds no diff_id: one to check is always taken afresh.
            match (&opts.cache, hash) {
                (Some(c), false) => c.parsed(&layer.descriptor.digest, parse),
                _ => parse().map(Arc::new),
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
                && parsed.diff_id.as_deref() != Some(ids[i].as_str())
            {
                return Err(Error::malformed(
                    what,
                    format!(
                        "uncompressed content hashes to {}, but the config's diff_id is {}",
                        parsed.diff_id.as_deref().unwrap_or("(not hashed)"),
                        ids[i]
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
        let facts = parse_stream(layer, reader, None, true, |op| {
            self.apply_checked(layer, &op)
        })?;
        self.stats[layer].entries += facts.entries;
        self.stats[layer].size += facts.bytes;
        Ok((facts.diff_id.unwrap_or_default(), facts.size))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::capture::Budget;
    use crate::rootfs::tests::{layers_in, tar_of};

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

    /// diff_ids given are checked (pare's own layers, read back for probes); a shared parse,
    /// which holds none, is never taken for a merge that checks them.
    #[test]
    fn given_diff_ids_are_checked_even_with_a_shared_parse() {
        let d = tempfile::tempdir().unwrap();
        let tar = crate::rootfs::tests::tar_of(&[("a", "f:x")]);
        let right = crate::digest::sha256_bytes(&tar);
        let layers = crate::rootfs::tests::layers_in(d.path(), std::slice::from_ref(&tar));
        let cache = Some(Arc::new(LayerCache::new(d.path())));
        // The cache now holds a parse without a diff_id.
        Rootfs::merge_cached(layers.clone(), None, cache.clone()).unwrap();
        let hits = |c: &Option<Arc<LayerCache>>| {
            c.as_ref()
                .unwrap()
                .parse_hits
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let wrong = vec!["sha256:00".to_string()];
        let Err(err) = Rootfs::merge_cached(layers.clone(), Some(&wrong), cache.clone()) else {
            panic!("a wrong diff_id was accepted");
        };
        let err = err.to_string();
        assert!(err.contains(&right) && err.contains("diff_id"), "{err}");
        Rootfs::merge_cached(layers.clone(), Some(&[right]), cache.clone()).unwrap();
        assert_eq!(
            hits(&cache),
            0,
            "a merge checking diff_ids used the shared parse"
        );
        Rootfs::merge_cached(layers.clone(), None, cache.clone()).unwrap();
        assert_eq!(hits(&cache), 1);
        Rootfs::merge(layers, None).unwrap();
    }
}

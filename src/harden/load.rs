//! Pull and merge a source, then trace it: the first half of every command that reads an image.

use std::time::Instant;

use super::*;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::rootfs::Rootfs;
use crate::trace::{self, LayerContents, RunConfig, Trace, TraceOptions};
use crate::transport::source::{self, PulledImage, SourceOptions};

/// A traced image, for `pare trace` (and the first half of `harden`).
pub struct Analysis {
    pub pulled: PulledImage,
    pub rootfs: Rootfs,
    pub trace: Trace,
    pub contents: LayerContents,
    pub work: tempfile::TempDir,
    /// `--learn`: what the probes looked up and did not find, and their troubles.
    pub learned: Learned,
}

/// What the `--learn` probes showed beside the paths kept.
#[derive(Debug, Default)]
pub struct Learned {
    /// Paths looked up and absent in the source (the program probes for them; not kept).
    pub absent: Vec<String>,
    /// A probe that did not pass in the source: what it used is kept all the same.
    pub warnings: Vec<String>,
    /// With `--seccomp-profile`: the system calls the probes' programs made.
    pub syscalls: std::collections::BTreeSet<String>,
}

/// A pulled and merged image, before tracing.
pub struct Loaded {
    pub pulled: PulledImage,
    pub rootfs: Rootfs,
    pub contents: LayerContents,
    pub work: tempfile::TempDir,
}

/// Pull and merge.
pub async fn load(src: &ImageRef, opts: &SourceOptions, progress: &Progress) -> Result<Loaded> {
    let work = tempfile::Builder::new()
        .prefix("pare-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let t = Instant::now();
    // Registry layers are merged as they arrive (each stream ends only once its blob is
    // verified, so the merge cannot finish on bytes that fail their digest).
    let (pulled, downloads) = source::pull_streaming(src, opts, work.path(), progress).await?;
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        layers = pulled.layers.len(),
        streaming = downloads.is_some(),
        "pulled the manifest and config"
    );
    let layers = pulled.layers.clone();
    // The config's diff_ids are not re-derived from the layers: every blob is checked against
    // the digest its manifest pins (the bytes pare reads), pare writes its own diff_ids, and
    // hashing every uncompressed byte again cost a tenth of a merge's CPU. A config whose
    // count of them does not match the layers is still refused.
    let diff_ids: Option<Vec<String>> = pulled
        .config
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        });
    let files_dir = work.path().join("files");
    std::fs::create_dir_all(&files_dir).map_err(|e| Error::io(&files_dir, e))?;
    let cache = opts.blobs.as_ref().map(|b| b.layers.clone());
    let capture_dir = files_dir.clone();
    let threads = opts.threads;
    let rootfs = tokio::task::spawn_blocking(move || -> Result<_> {
        let t = Instant::now();
        let opts = crate::rootfs::MergeOptions {
            cache,
            capture: Some(crate::rootfs::Capture {
                dir: capture_dir,
                budget: crate::rootfs::Budget::global(),
            }),
            threads,
        };
        if let Some(ids) = &diff_ids
            && ids.len() != layers.len()
        {
            return Err(Error::malformed(
                "config",
                format!("{} diff_ids for {} layers", ids.len(), layers.len()),
            ));
        }
        let rootfs = Rootfs::merge_with(layers, None, opts)?;
        tracing::debug!(
            seconds = t.elapsed().as_secs_f64(),
            entries = rootfs.nodes.len(),
            inflated = rootfs.inflated.total(),
            "merged layers"
        );
        Ok(rootfs)
    })
    .await
    .map_err(Error::join)?;
    let rootfs = match (rootfs, downloads) {
        (Ok(fs), Some(d)) => {
            d.wait().await?;
            fs
        }
        (Ok(fs), None) => fs,
        // A download that failed shows in the merge as a read error: report the cause.
        (Err(e), Some(d)) => return Err(d.failure().await.unwrap_or(e)),
        (Err(e), None) => return Err(e),
    };
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "pulled and merged");
    Ok(Loaded {
        pulled,
        rootfs,
        contents: LayerContents::new(&files_dir),
        work,
    })
}

/// Pull, merge and trace.
pub async fn analyze(
    src: &ImageRef,
    opts: &HardenOptions,
    progress: &Progress,
) -> Result<Analysis> {
    let Loaded {
        pulled,
        rootfs,
        mut contents,
        work,
    } = load(src, &opts.source, progress).await?;
    let run = RunConfig::from_config(&pulled.config);
    let mut topts = TraceOptions {
        allow_missing: opts.allow_missing,
        keep: opts.keep.clone(),
        runtime_full: opts.runtime_full,
        no_packages: opts.no_packages,
        observed: Vec::new(),
    };
    let learn = opts.learn.clone();
    let (limits, config, dir) = (
        opts.probe_limits.clone(),
        pulled.config.clone(),
        work.path().join("learn"),
    );
    let (rootfs, trace, contents, learned) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut learned = Learned::default();
        if !learn.is_empty() {
            // --learn: what the probes' programs use in the source, kept with the rest.
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let mut p = crate::probe::Prepared::new(&rootfs, LayerContents::new(&dir), &config)?;
            let mut seen = std::collections::BTreeSet::new();
            let mut absent = std::collections::BTreeSet::new();
            for probe in &learn {
                let o = p.run(probe, &limits)?;
                if let Err(why) = crate::probe::judge(&o, None, None) {
                    learned.warnings.push(format!(
                        "--learn {}: did not pass in the source ({why}); the files it used are kept all the same",
                        probe.describe()
                    ));
                }
                learned.syscalls.extend(o.syscalls.unwrap_or_default());
                for (path, found) in o.observed.unwrap_or_default() {
                    if crate::probe::sandbox_path(&path) {
                        continue;
                    }
                    if found {
                        seen.insert(path);
                    } else {
                        absent.insert(path);
                    }
                }
            }
            // Absent in one run, there in another: it is there.
            learned.absent = absent.difference(&seen).cloned().collect();
            topts.observed = seen.into_iter().collect();
        }
        let t = Instant::now();
        let trace = trace::trace(&rootfs, &mut contents, &run, &topts)?;
        tracing::debug!(
            seconds = t.elapsed().as_secs_f64(),
            objects = trace.objects.len(),
            kept = trace.files.len(),
            reads = contents.passes,
            files_read = contents.files_read,
            "traced"
        );
        Ok((rootfs, trace, contents, learned))
    })
    .await
    .map_err(Error::join)??;
    Ok(Analysis {
        pulled,
        rootfs,
        trace,
        contents,
        work,
        learned,
    })
}

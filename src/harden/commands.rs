//! The library side of `pare check`, `pare inspect` and `pare probe`.

use super::*;
use crate::error::{Error, Result};
use crate::layer::WrittenLayer;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::rootfs::Rootfs;
use crate::trace::{self, LayerContents, RunConfig, TraceOptions};
use crate::transport::source::SourceOptions;

/// `pare check`: pull, merge, and run the checklist.
pub async fn check_image(
    src: &ImageRef,
    opts: &SourceOptions,
    cfg: &crate::policy::CheckConfig,
    progress: &Progress,
) -> Result<crate::policy::CheckReport> {
    let Loaded {
        pulled,
        rootfs,
        mut contents,
        work: _work,
    } = load(src, opts, progress).await?;
    let cfg = cfg.clone();
    let image = src.to_string();
    tokio::task::spawn_blocking(move || -> Result<_> {
        use crate::trace::Contents as _;
        let passwd = match rootfs.resolve("/etc/passwd", true) {
            Ok(r)
                if matches!(
                    rootfs.get(&r.path).map(|n| &n.kind),
                    Some(crate::rootfs::Kind::File { .. })
                ) =>
            {
                Some(
                    String::from_utf8_lossy(&contents.read(&rootfs, &r.path, 4 << 20)?)
                        .into_owned(),
                )
            }
            _ => None,
        };
        let run = RunConfig::from_config(&pulled.config);
        let entry = run
            .argv()
            .first()
            .and_then(|a| trace::find_program(&rootfs, &run, a).ok())
            .map(|r| r.path);
        // What the entrypoint needs is reported, not counted: the same trace harden runs.
        // When it cannot be traced (no entrypoint, a missing library), nothing is exempt.
        let needed = match trace::trace(&rootfs, &mut contents, &run, &TraceOptions::default()) {
            Ok(t) => Some(t.needed()),
            Err(e) => {
                tracing::debug!(error = %e, "check: the entrypoint could not be traced");
                None
            }
        };
        let subject = crate::policy::Subject {
            fs: &rootfs,
            config: &pulled.config,
            passwd: passwd.as_deref(),
            entrypoint: entry.as_deref(),
            needed: needed.as_ref(),
        };
        Ok(crate::policy::check(&subject, &cfg, &image, &pulled.digest))
    })
    .await
    .map_err(Error::join)?
}

/// `pare inspect`: pull, merge, and describe.
pub async fn inspect_image(
    src: &ImageRef,
    opts: &SourceOptions,
    progress: &Progress,
) -> Result<crate::inspect::InspectReport> {
    let mut loaded = load(src, opts, progress).await?;
    let mut report =
        crate::inspect::InspectReport::new(&src.to_string(), &loaded.pulled, &loaded.rootfs);
    report.packages = inspect_packages(&mut loaded)?;
    Ok(report)
}

/// The packages of a loaded image, for `pare inspect`.
pub fn inspect_packages(loaded: &mut Loaded) -> Result<Option<crate::inspect::InspectPackages>> {
    Ok(crate::packages::read(&loaded.rootfs, &mut loaded.contents)?
        .map(|db| crate::inspect::InspectPackages::new(&db, &loaded.rootfs)))
}

/// `pare probe`: run each probe in a sandbox of `image` (and of `against`, to compare).
pub async fn probe_image(
    image: &ImageRef,
    against: Option<&ImageRef>,
    probes: &[crate::probe::Probe],
    expect: Option<&regex::bytes::Regex>,
    limits: &crate::probe::Limits,
    opts: &SourceOptions,
    progress: &Progress,
) -> Result<crate::probe::ProbeReport> {
    let mine = load(image, opts, progress).await?;
    let theirs = match against {
        Some(a) => Some(load(a, opts, progress).await?),
        None => None,
    };
    let (probes, limits, expect) = (probes.to_vec(), limits.clone(), expect.cloned());
    let (results, note) = tokio::task::spawn_blocking(move || -> Result<_> {
        let fresh = |l: &Loaded| -> Result<LayerContents> {
            let d = l.work.path().join("probe");
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            Ok(LayerContents::new(&d))
        };
        let mut m = crate::probe::Prepared::new(&mine.rootfs, fresh(&mine)?, &mine.pulled.config)?;
        let mut t = match &theirs {
            Some(l) => Some(crate::probe::Prepared::new(
                &l.rootfs,
                fresh(l)?,
                &l.pulled.config,
            )?),
            None => None,
        };
        let results = crate::probe::run_all(&mut m, t.as_mut(), &probes, expect.as_ref(), &limits)?;
        Ok((results, m.note.clone()))
    })
    .await
    .map_err(Error::join)??;
    // The calls recorded (in the original's runs, when there is one).
    let syscalls = results
        .iter()
        .filter_map(|r| r.original.as_ref().unwrap_or(&r.outcome).syscalls.clone())
        .flatten()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(crate::probe::ProbeReport {
        image: image.to_string(),
        against: against.map(|a| a.to_string()),
        passed: results.iter().all(|r| r.passed),
        probes: results,
        note,
        syscalls,
    })
}

/// The probes of `--probe` in the hardened result (read back from its layers) and in the
/// source, before anything is written.
pub(super) fn probe_built(
    source: &Rootfs,
    source_config: &serde_json::Value,
    layers: &[WrittenLayer],
    config_bytes: &[u8],
    opts: &HardenOptions,
    work: &std::path::Path,
) -> Result<Vec<crate::probe::ProbeResult>> {
    let dir = |name: &str| -> Result<std::path::PathBuf> {
        let d = work.join(name);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        Ok(d)
    };
    let config: serde_json::Value =
        serde_json::from_slice(config_bytes).map_err(|e| Error::Other(e.to_string()))?;
    let hardened = Rootfs::merge_with(
        layers.iter().map(WrittenLayer::blob).collect(),
        None,
        crate::rootfs::MergeOptions {
            cache: None,
            capture: Some(crate::rootfs::Capture {
                dir: dir("probe-capture")?,
                budget: crate::rootfs::Budget::global(),
            }),
            threads: 1,
        },
    )?;
    let mut mine =
        crate::probe::Prepared::new(&hardened, LayerContents::new(&dir("probe-h")?), &config)?;
    let mut theirs =
        crate::probe::Prepared::new(source, LayerContents::new(&dir("probe-s")?), source_config)?;
    crate::probe::run_all(
        &mut mine,
        Some(&mut theirs),
        &opts.probes,
        None,
        &opts.probe_limits,
    )
}

/// The `--learn` option that settles open questions: the entrypoint run with the image's own
/// Cmd in a sandbox of the source (what it uses is kept).
pub(super) fn learn_option(config: &serde_json::Value) -> String {
    let cmd = RunConfig::from_config(config).cmd;
    format!(
        "--learn {}",
        crate::probe::join(&[crate::probe::join(&cmd)])
    )
}

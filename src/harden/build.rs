//! One hardened image built (not yet written): the plan, the layer, the config and manifest, verified by the probes and the checklist asked for.

use std::time::Instant;

use super::commands::{learn_option, probe_built};
use super::report::{
    FileSums, files_info, layer_reads, os_release, packages_info, setid_cleared, setid_removed,
    sizes,
};
use super::*;
use crate::error::{Error, Result};
use crate::image::{
    ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME, Descriptor, Manifest, OCI_CONFIG, OCI_MANIFEST,
};
use crate::layer::{LayerOptions, WrittenLayer};
use crate::plan::{self, Content, Plan, PlanInput};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::report::{ImageInfo, Report, UserInfo};
use crate::rootfs::Rootfs;
use crate::trace::LayerContents;
use crate::trace::{self, Trace};
use crate::transport::sink::ImageParts;
use std::sync::Arc;

/// Seconds since the epoch for layer mtimes: `SOURCE_DATE_EPOCH`, else the source's `created`.
pub(super) fn build_time(config: &serde_json::Value) -> Result<(u64, String)> {
    use time::format_description::well_known::Rfc3339;
    if let Some(n) = source_date_epoch()? {
        let t = time::OffsetDateTime::from_unix_timestamp(n)
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH={n} is out of range")))?;
        let created = t
            .format(&Rfc3339)
            .map_err(|e| Error::Other(e.to_string()))?;
        return Ok((n.max(0) as u64, created));
    }
    let created = config.get("created").and_then(|c| c.as_str()).unwrap_or("");
    match time::OffsetDateTime::parse(created, &Rfc3339) {
        Ok(t) => Ok((t.unix_timestamp().max(0) as u64, created.to_string())),
        Err(_) => Ok((0, "1970-01-01T00:00:00Z".to_string())),
    }
}

/// `SOURCE_DATE_EPOCH`, when set.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
            ))
        }),
        Err(_) => Ok(None),
    }
}

/// The new config: the source's JSON with only User, rootfs, history and created changed, so
/// keys pare does not know (Healthcheck, Shell, OnBuild, …) survive byte for byte in meaning.
pub(super) fn new_config(
    src: &serde_json::Value,
    plan: &Plan,
    layers: &[(WrittenLayer, Option<String>)],
    created: &str,
    source_ref: &str,
) -> Result<Vec<u8>> {
    let mut cfg = src.clone();
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::malformed("config", "not a JSON object"))?;
    let u = plan.user();
    let inner = obj.entry("config").or_insert_with(|| serde_json::json!({}));
    if !inner.is_object() {
        *inner = serde_json::json!({});
    }
    inner["User"] = serde_json::Value::String(format!("{}:{}", u.uid, u.gid));
    obj.insert(
        "rootfs".into(),
        serde_json::json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|(l, _)| l.diff_id.as_str()).collect::<Vec<_>>(),
        }),
    );
    let history: Vec<_> = layers
        .iter()
        .map(|(_, from)| {
            let comment = match from {
                Some(digest) => format!("the entrypoint's closure kept from source layer {digest}"),
                None => "pare's own files and small shares; setuid/setgid cleared; non-root user"
                    .to_string(),
            };
            serde_json::json!({
                "created": created,
                "created_by": format!("pare harden {source_ref}"),
                "comment": comment,
            })
        })
        .collect();
    obj.insert("history".into(), serde_json::Value::Array(history));
    obj.insert(
        "created".into(),
        serde_json::Value::String(created.to_string()),
    );
    serde_json::to_vec(&cfg).map_err(|e| Error::Other(e.to_string()))
}

/// Harden `src` into `dest` (default: the same repository, tag `TAG-hardened`).
/// One hardened image, built and not yet written (its layer lives in `_work`).
pub(super) struct Built {
    pub(super) layers: Vec<WrittenLayer>,
    pub(super) config_bytes: Vec<u8>,
    pub(super) config_digest: String,
    pub(super) manifest_bytes: Vec<u8>,
    pub(super) platform: crate::image::Platform,
    /// The SPDX document of the image (unless `--no-sbom`).
    pub(super) sbom: Option<Vec<u8>>,
    /// The image's creation time (RFC 3339), for the SBOM's referrer.
    pub(super) created: String,
    pub(super) mtime: u64,
    /// Dropped before `_work`: the work dir is removed once the cleanup is done with it.
    _cleanup: Cleanup,
    pub(super) _work: tempfile::TempDir,
}

/// What the build no longer needs, freed on a thread of its own while the image is pushed:
/// the merged tree, the trace and the plan (their captured files' spools are unlinked as they
/// go), and the source's downloaded layer blobs in the work dir. Joined when dropped.
struct Cleanup(Option<std::thread::JoinHandle<()>>);

impl Cleanup {
    fn start(rootfs: Rootfs, trace: Trace, plan: Plan, work: &std::path::Path) -> Self {
        let work = work.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("pare-cleanup".into())
            .spawn(move || {
                // Only blobs this build downloaded into its own work dir: never a layout's
                // blob, nor one a batch shares.
                let blobs: Vec<std::path::PathBuf> = rootfs
                    .layers
                    .iter()
                    .map(|l| l.path.clone())
                    .filter(|p| p.starts_with(&work))
                    .collect();
                drop((rootfs, trace, plan));
                for b in blobs {
                    let _ = std::fs::remove_file(b);
                }
            });
        // When no thread can start, its closure and all it holds were dropped here already;
        // the work dir's removal then takes the blobs.
        Cleanup(handle.ok())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Built {
    pub(super) fn parts(&self) -> ImageParts<'_> {
        ImageParts {
            layers: &self.layers,
            config: &self.config_bytes,
            config_digest: &self.config_digest,
            manifest: &self.manifest_bytes,
            sbom: self.sbom.as_deref(),
            created: &self.created,
            mtime: self.mtime,
        }
    }
}

pub(super) async fn build_one(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &HardenOptions,
    progress: &Progress,
) -> Result<(Report, Built)> {
    let started = Instant::now();
    let analysis = analyze(src, opts, progress).await?;
    let (pulled, work, learned) = (analysis.pulled, analysis.work, analysis.learned);
    let (rootfs, trace, contents) = (analysis.rootfs, analysis.trace, analysis.contents);
    let (mtime, created) = build_time(&pulled.config)?;
    let input = WriteInput {
        config: pulled.config.clone(),
        user_flag: opts.user,
        dir: work.path().to_path_buf(),
        mtime,
        clamp: source_date_epoch()?.map(|n| n.max(0) as u64),
        made: opts.made.clone(),
        layer: LayerOptions {
            compression: opts.compression,
            threads: opts.source.threads,
            sums: !opts.no_sbom,
        },
    };
    let (plan, trace, layers, rootfs, sums, packages) =
        tokio::task::spawn_blocking(move || plan_and_write(rootfs, trace, contents, input))
            .await
            .map_err(Error::join)??;
    let config_bytes = new_config(&pulled.config, &plan, &layers, &created, &src.to_string())?;
    let layers: Vec<WrittenLayer> = layers.into_iter().map(|(l, _)| l).collect();
    let config_digest = crate::digest::sha256_bytes(&config_bytes);
    let manifest = manifest_of(
        src,
        opts,
        &pulled.digest,
        &config_digest,
        config_bytes.len(),
        &layers,
    );
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Other(e.to_string()))?;
    let manifest_digest = crate::digest::sha256_bytes(&manifest_bytes);

    let candidate = Candidate {
        src,
        dest,
        rootfs: &rootfs,
        plan: &plan,
        trace: &trace,
        layers: &layers,
        source_config: &pulled.config,
        config_bytes: &config_bytes,
        manifest_digest: &manifest_digest,
        work: work.path(),
    };
    let probes = probe(&candidate, opts)?;
    let check = check(&candidate, opts).await?;

    let u = plan.user();
    let files = files_info(&plan);
    let mut warnings = rootfs.warnings.clone();
    warnings.extend(plan.warnings.iter().cloned());
    warnings.extend(learned.warnings.iter().cloned());
    let report = Report {
        source_signature: pulled.verified.clone(),
        signed: opts.sign_key.is_some() && !opts.dry_run,
        source: ImageInfo {
            reference: src.to_string(),
            digest: pulled.digest.clone(),
            manifest_digest: pulled.manifest_digest.clone(),
            platform: pulled.platform.to_string(),
        },
        destination: ImageInfo {
            reference: dest.to_string(),
            digest: manifest_digest.clone(),
            manifest_digest,
            platform: pulled.platform.to_string(),
        },
        dry_run: opts.dry_run,
        user: UserInfo {
            uid: u.uid,
            gid: u.gid,
            name: u.name.clone(),
            source: u.source.clone(),
        },
        argv: trace.argv.clone(),
        entrypoint: crate::rootfs::display(&trace.entrypoint),
        files,
        setid_cleared: setid_cleared(&plan),
        setid_removed: setid_removed(&plan, &rootfs),
        capabilities_dropped: plan.capabilities_dropped.clone(),
        sizes: sizes(&pulled, &rootfs, &layers),
        layer_reads: layer_reads(&rootfs),
        layers_before: pulled.layers.len(),
        layers_after: layers.len(),
        warnings,
        features: trace.features.clone(),
        dropped: trace
            .dropped
            .iter()
            .map(|(p, why)| (crate::rootfs::display(p), why.clone()))
            .collect(),
        withheld: trace
            .withheld
            .iter()
            .map(|(p, why)| (crate::rootfs::display(p), why.clone()))
            .collect(),
        open_questions: trace.questions.clone(),
        learn: if trace.questions.is_empty() {
            String::new()
        } else {
            learn_option(&pulled.config)
        },
        seconds: started.elapsed().as_secs_f64(),
        security_context: plan::security_context(&plan),
        check,
        probes,
        observed_only: trace
            .files
            .iter()
            .filter(|(_, ev)| !ev.is_empty() && ev.iter().all(|e| e.kind == trace::Why::Observed))
            .map(|(p, _)| crate::rootfs::display(p))
            .collect(),
        observed_absent: learned.absent.clone(),
        syscalls: learned.syscalls.iter().cloned().collect(),
        packages,
    };
    let sbom = sums.map(|(files, os_release)| {
        crate::sbom::spdx(&crate::sbom::Input {
            name: &dest.to_string(),
            digest: &report.destination.digest,
            created: &created,
            db: trace.packages.as_deref(),
            packages: &plan.packages,
            files: &files,
            os_release: &os_release,
        })
    });
    // An archive's file times: the written config's creation time.
    let mtime = build_time(&serde_json::from_slice(&config_bytes).unwrap_or_default())?.0;
    let cleanup = Cleanup::start(rootfs, trace, plan, work.path());
    let built = Built {
        layers,
        mtime,
        config_bytes,
        config_digest,
        manifest_bytes,
        platform: pulled.platform.clone(),
        sbom,
        created: created.clone(),
        _cleanup: cleanup,
        _work: work,
    };
    Ok((report, built))
}

/// The checklist on the hardened result, read back from the layer just written.
pub(super) async fn check_result(
    plan: &Plan,
    trace: &Trace,
    layers: &[WrittenLayer],
    config_bytes: &[u8],
    cfg: &crate::policy::CheckConfig,
    image: &str,
    digest: &str,
) -> Result<crate::policy::CheckReport> {
    let config: serde_json::Value =
        serde_json::from_slice(config_bytes).map_err(|e| Error::Other(e.to_string()))?;
    let passwd = match plan.entries.get("etc/passwd").map(|e| &e.content) {
        Some(Content::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let blobs = layers.iter().map(WrittenLayer::blob).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let entry = trace.entrypoint.clone();
    let needed = trace.needed();
    let (cfg, image, digest) = (cfg.clone(), image.to_string(), digest.to_string());
    tokio::task::spawn_blocking(move || -> Result<_> {
        let fs = Rootfs::merge(blobs, Some(&diff_ids))?;
        let subject = crate::policy::Subject {
            fs: &fs,
            config: &config,
            passwd: passwd.as_deref(),
            entrypoint: Some(&entry),
            needed: Some(&needed),
        };
        Ok(crate::policy::check(&subject, &cfg, &image, &digest))
    })
    .await
    .map_err(Error::join)?
}

/// The hardened image's manifest: its config, its layers, and what it was made from.
fn manifest_of(
    src: &ImageRef,
    opts: &HardenOptions,
    source_digest: &str,
    config_digest: &str,
    config_size: usize,
    layers: &[WrittenLayer],
) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        subject: None,
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest.to_string(),
            size: config_size as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        },
        layers: layers.iter().map(WrittenLayer::descriptor).collect(),
        annotations: Some(
            [
                (
                    ANNOTATION_BASE_DIGEST.to_string(),
                    source_digest.to_string(),
                ),
                (ANNOTATION_BASE_NAME.to_string(), src.to_string()),
                (
                    crate::image::ANNOTATION_PARE_RECIPE.to_string(),
                    opts.recipe(),
                ),
            ]
            .into(),
        ),
    }
}

/// What the plan and layer writing need besides the traced image.
struct WriteInput {
    config: serde_json::Value,
    user_flag: Option<(u32, u32)>,
    /// Where the layers are written (the image's work dir).
    dir: std::path::PathBuf,
    /// The time of pare's own entries.
    mtime: u64,
    /// `SOURCE_DATE_EPOCH`: no entry's time is later.
    clamp: Option<u64>,
    /// Layers this process wrote already.
    made: Option<Arc<crate::layer::Made>>,
    layer: LayerOptions,
}

/// The plan, the trace, each layer with the digest of the source layer it was made from
/// (`None`: pare's own), the source, the SBOM's sums.
type Written = (
    Plan,
    Trace,
    Vec<(WrittenLayer, Option<String>)>,
    Rootfs,
    Option<FileSums>,
    Option<crate::report::PackagesInfo>,
);

/// The plan, then its layers written (with the SBOM's checksums).
fn plan_and_write(
    rootfs: Rootfs,
    trace: Trace,
    mut contents: LayerContents,
    input: WriteInput,
) -> Result<Written> {
    use crate::trace::Contents as _;
    let plan_input = PlanInput {
        fs: &rootfs,
        trace: &trace,
        config: &input.config,
        user_flag: input.user_flag,
    };
    let t = Instant::now();
    let plan = plan::build(plan_input, &mut contents)?;
    contents.prefetch(&rootfs, &plan.image_files())?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "planned");
    let t = Instant::now();
    let files = contents.into_files();
    let format = crate::layer::format(input.layer.compression);
    let groups = crate::layer::split(&plan, &rootfs, input.mtime, input.clamp, &format);
    // The SBOM's checksums are taken as the layer writer reads each file; the report's
    // package lists are made beside it (they read only the rootfs, the plan and the trace).
    let (written, packages) = std::thread::scope(|s| {
        let packages = s.spawn(|| {
            trace
                .packages
                .as_deref()
                .map(|db| packages_info(db, &rootfs, &plan, &trace))
        });
        let written = crate::layer::write_groups(
            &groups,
            &files,
            &input.dir,
            &input.layer,
            input.made.as_deref(),
        );
        (written, packages.join())
    });
    let written = written?;
    let packages =
        packages.map_err(|_| Error::Other("the package report's thread panicked".into()))?;
    let (mut layers, mut all_sums) = (Vec::new(), std::collections::BTreeMap::new());
    for (w, g) in written.into_iter().zip(&groups) {
        all_sums.extend(w.sums);
        let from = g
            .source
            .and_then(|i| rootfs.layers.get(i))
            .map(|l| l.descriptor.digest.clone());
        layers.push((w.layer, from));
    }
    let sums = input
        .layer
        .sums
        .then(|| (all_sums, os_release(&plan, &files)));
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        bytes = layers.iter().map(|(l, _)| l.size).sum::<u64>(),
        layers = layers.len(),
        "wrote layer"
    );
    Ok((plan, trace, layers, rootfs, sums, packages))
}

/// A built image before it is written, as the probes and the checklist see it.
struct Candidate<'a> {
    src: &'a ImageRef,
    dest: &'a ImageRef,
    rootfs: &'a Rootfs,
    plan: &'a Plan,
    trace: &'a Trace,
    layers: &'a [WrittenLayer],
    source_config: &'a serde_json::Value,
    config_bytes: &'a [u8],
    manifest_digest: &'a str,
    work: &'a std::path::Path,
}

/// `--probe`: the probes' results; a probe that fails writes nothing (unless a dry run).
fn probe(c: &Candidate, opts: &HardenOptions) -> Result<Option<Vec<crate::probe::ProbeResult>>> {
    let (src, dest) = (c.src, c.dest);
    if opts.probes.is_empty() {
        return Ok(None);
    }
    let results = tokio::task::block_in_place(|| {
        probe_built(
            c.rootfs,
            c.source_config,
            c.layers,
            c.config_bytes,
            opts,
            c.work,
        )
    })?;
    if !opts.dry_run && results.iter().any(|r| !r.passed) {
        let report = crate::probe::ProbeReport {
            image: dest.to_string(),
            against: Some(src.to_string()),
            passed: false,
            probes: results,
            note: None,
            syscalls: Vec::new(),
        };
        return Err(Error::ProbeFailed {
            dest: dest.to_string(),
            failed: report.probes.iter().filter(|p| !p.passed).count(),
            total: report.probes.len(),
            text: report.text(),
        });
    }
    Ok(Some(results))
}

/// `--check`: the checklist on the result; a failing one writes nothing (unless a dry run).
async fn check(
    c: &Candidate<'_>,
    opts: &HardenOptions,
) -> Result<Option<crate::policy::CheckReport>> {
    let dest = c.dest;
    let Some(cfg) = &opts.check else {
        return Ok(None);
    };
    let report = check_result(
        c.plan,
        c.trace,
        c.layers,
        c.config_bytes,
        cfg,
        &dest.to_string(),
        c.manifest_digest,
    )
    .await?;
    if !report.passed && !opts.dry_run {
        return Err(Error::CheckFailed {
            dest: dest.to_string(),
            rules: report
                .findings
                .iter()
                .filter(|f| f.severity >= report.fail_on)
                .map(|f| f.rule.to_string())
                .collect(),
            text: report.text(),
        });
    }
    Ok(Some(report))
}

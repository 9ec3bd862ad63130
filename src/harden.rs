//! `pare harden` and `pare trace`, end to end: source → rootfs → trace → plan → layer → sink.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::image::{
    ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME, Descriptor, Manifest, OCI_CONFIG, OCI_MANIFEST,
};
use crate::layer::{WrittenLayer, write_layer};
use crate::plan::{self, Content, Plan, PlanInput};
use crate::progress::Progress;
use crate::reference::{self, ImageRef};
use crate::report::{FileInfo, ImageInfo, Report, SetIdInfo, SizeChange, Sizes, UserInfo};
use crate::rootfs::Rootfs;
use crate::trace::{self, LayerContents, RunConfig, Trace, TraceOptions};
use crate::transport::sink::{ImageParts, Sink, SinkOptions};
use crate::transport::source::{self, PulledImage, SourceOptions};

#[derive(Clone, Default)]
pub struct HardenOptions {
    pub source: SourceOptions,
    /// `--user UID[:GID]`.
    pub user: Option<(u32, u32)>,
    pub keep: Vec<String>,
    pub allow_missing: bool,
    /// `--runtime-full`: keep a language runtime's whole standard library.
    pub runtime_full: bool,
    /// `--no-packages`: do not follow the package database.
    pub no_packages: bool,
    /// `--sbom FILE`: write the SPDX document here too.
    pub sbom_file: Option<std::path::PathBuf>,
    /// `--no-sbom`: no SBOM is made or pushed.
    pub no_sbom: bool,
    pub dry_run: bool,
    /// `--dest-creds`; else `--creds` when DEST is on the source's registry, else the auth files.
    pub dest_creds: Option<crate::transport::auth::Credentials>,
    /// `--check`: run the checklist on the result and refuse to write one that fails.
    pub check: Option<crate::policy::CheckConfig>,
    /// `--in-place`: DEST may be the source itself (its previous manifest is reported, and for
    /// a registry kept under `TAG-original` unless `no_backup`).
    pub in_place: bool,
    /// `--no-backup`: with `--in-place`, no `TAG-original`.
    pub no_backup: bool,
    /// Platforms to harden from a multi-platform source (empty: all it lists). One platform
    /// goes in `source.platform` instead and gives a single-platform result.
    pub platforms: Vec<crate::image::Platform>,
    /// Blobs this process pushed (a batch mounts them into other repositories).
    pub push_log: Option<std::sync::Arc<crate::transport::registry::PushLog>>,
    /// `--force`: harden even when DEST already holds this result.
    pub force: bool,
    /// `--probe`: run these in the result and in the source before writing; a probe that
    /// behaves differently writes nothing.
    pub probes: Vec<crate::probe::Probe>,
    /// `--learn`: run these in the source first, recording the paths their programs use; those
    /// are kept (evidence `observed`).
    pub learn: Vec<crate::probe::Probe>,
    pub probe_limits: crate::probe::Limits,
    /// `--sign-key`: sign each pushed manifest (and index), and attest the SBOM.
    pub sign_key: Option<std::sync::Arc<crate::sign::PrivateKey>>,
}

impl HardenOptions {
    /// pare's version and the options that change what it writes (not where, nor how it
    /// reports): recorded on the result so a batch knows whether it is still current.
    pub fn recipe(&self) -> String {
        let mut keep = self.keep.clone();
        keep.sort();
        let mut recipe = format!(
            "pare {}; user={}; keep={}; allow-missing={}; runtime-full={}; packages={}",
            env!("CARGO_PKG_VERSION"),
            self.user
                .map(|(u, g)| format!("{u}:{g}"))
                .unwrap_or_else(|| "image".into()),
            keep.join(","),
            self.allow_missing,
            self.runtime_full,
            !self.no_packages
        );
        // Platforms picked out of an index change the result too (named only when picked, so
        // results of earlier versions keep their recipe).
        let mut platforms: Vec<String> = self.platforms.iter().map(|p| p.to_string()).collect();
        platforms.extend(self.source.platform.iter().map(|p| p.to_string()));
        if !platforms.is_empty() {
            platforms.sort();
            recipe.push_str(&format!("; platforms={}", platforms.join(",")));
        }
        if !self.learn.is_empty() {
            let l: Vec<String> = self.learn.iter().map(|p| p.describe()).collect();
            recipe.push_str(&format!("; learn={}", l.join(" | ")));
        }
        recipe
    }
}

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

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Other(format!("worker failed: {e}"))
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
    let rootfs = tokio::task::spawn_blocking(move || -> Result<_> {
        let t = Instant::now();
        let opts = crate::rootfs::MergeOptions {
            cache,
            capture: Some(crate::rootfs::Capture {
                dir: capture_dir,
                budget: crate::rootfs::Budget::global(),
            }),
            threads: 0,
        };
        let rootfs = Rootfs::merge_with(layers, diff_ids.as_deref(), opts)?;
        tracing::debug!(
            seconds = t.elapsed().as_secs_f64(),
            entries = rootfs.nodes.len(),
            inflated = rootfs.inflated.total(),
            "merged layers"
        );
        Ok(rootfs)
    })
    .await
    .map_err(join_err)?;
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
    .map_err(join_err)??;
    Ok(Analysis {
        pulled,
        rootfs,
        trace,
        contents,
        work,
        learned,
    })
}

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
    .map_err(join_err)?
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

/// Seconds since the epoch for layer mtimes: `SOURCE_DATE_EPOCH`, else the source's `created`.
fn build_time(config: &serde_json::Value) -> Result<(u64, String)> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        let n: i64 = s.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
            ))
        })?;
        let t = time::OffsetDateTime::from_unix_timestamp(n)
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH={s:?} is out of range")))?;
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

/// The new config: the source's JSON with only User, rootfs, history and created changed, so
/// keys pare does not know (Healthcheck, Shell, OnBuild, …) survive byte for byte in meaning.
fn new_config(
    src: &serde_json::Value,
    plan: &Plan,
    layer: &WrittenLayer,
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
        serde_json::json!({"type": "layers", "diff_ids": [layer.diff_id]}),
    );
    obj.insert(
        "history".into(),
        serde_json::json!([{
            "created": created,
            "created_by": format!("pare harden {source_ref}"),
            "comment": "minimal closure of the entrypoint; setuid/setgid cleared; non-root user",
        }]),
    );
    obj.insert(
        "created".into(),
        serde_json::Value::String(created.to_string()),
    );
    serde_json::to_vec(&cfg).map_err(|e| Error::Other(e.to_string()))
}

/// Harden `src` into `dest` (default: the same repository, tag `TAG-hardened`).
/// One hardened image, built and not yet written (its layer lives in `_work`).
struct Built {
    layer: WrittenLayer,
    config_bytes: Vec<u8>,
    config_digest: String,
    manifest_bytes: Vec<u8>,
    platform: crate::image::Platform,
    /// The SPDX document of the image (unless `--no-sbom`).
    sbom: Option<Vec<u8>>,
    /// The image's creation time (RFC 3339), for the SBOM's referrer.
    created: String,
    mtime: u64,
    _work: tempfile::TempDir,
}

impl Built {
    fn parts(&self) -> ImageParts<'_> {
        ImageParts {
            layer: &self.layer,
            config: &self.config_bytes,
            config_digest: &self.config_digest,
            manifest: &self.manifest_bytes,
            sbom: self.sbom.as_deref(),
            created: &self.created,
            mtime: self.mtime,
        }
    }
}

/// What `pare harden` made: one image, or one per platform behind an index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hardened {
    /// Set when the source was a multi-platform index and so is the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexInfo>,
    pub images: Vec<Report>,
    /// `--in-place`: what DEST held before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replaced>,
    /// DEST already held this result: nothing was pulled or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<UpToDate>,
}

/// A destination that already holds what `pare harden` would write: hardened from the same
/// source digest by the same pare with the same options (the annotations it records).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpToDate {
    pub source: String,
    pub source_digest: String,
    pub destination: String,
    /// DEST's manifest (or index) digest.
    pub digest: String,
    pub recipe: String,
}

/// The source digest, the recipe (pare's version and options) and the manifest digest a
/// hardened registry tag records, when the tag exists and records them.
/// Whether `dest` already holds what hardening `src` with `opts` would write; only manifests
/// are read (no layer).
async fn up_to_date(
    src: &ImageRef,
    dest: &ImageRef,
    sink: &dyn Sink,
    opts: &HardenOptions,
) -> Result<Option<UpToDate>> {
    let Some(source_digest) = source::current_digest(src, &opts.source).await? else {
        return Ok(None);
    };
    let recipe = opts.recipe();
    let Some((from, Some(r), digest)) = sink.recorded().await else {
        return Ok(None);
    };
    if from != source_digest || r != recipe {
        return Ok(None);
    }
    // Nothing is pulled, but the source must still carry a valid signature; when only a
    // platform's manifest is signed, the full run decides (and says why it fails).
    if !source::still_signed(src, &opts.source, &source_digest).await? {
        return Ok(None);
    }
    // The result is there; make sure it is signed (signing again adds nothing).
    sink.ensure_signed(&digest).await?;
    Ok(Some(UpToDate {
        source: src.to_string(),
        source_digest,
        destination: dest.to_string(),
        digest,
        recipe,
    }))
}

pub use crate::transport::source::Replaced;

#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexInfo {
    pub source: String,
    pub source_digest: String,
    pub destination: String,
    pub digest: String,
    /// Index entries left out (attestations, `unknown/unknown`, platforms not asked for).
    pub skipped: Vec<String>,
}

impl Hardened {
    /// The single image's report (the index case has several).
    pub fn single(&self) -> Option<&Report> {
        match (&self.index, self.images.as_slice()) {
            (None, [one]) => Some(one),
            _ => None,
        }
    }
}

/// Harden `src` into `dest` (default: the same repository, tag `TAG-hardened`). A
/// multi-platform source gives a multi-platform result: every platform it lists (or those in
/// `opts.platforms`) hardened with its own architecture's rules, then an index of them.
pub async fn harden(
    src: &ImageRef,
    dest: Option<&ImageRef>,
    opts: &HardenOptions,
    progress: &Progress,
) -> Result<Hardened> {
    let dest = match dest {
        Some(d) => d.clone(),
        None => reference::default_destination(src)?,
    };
    let sink = crate::transport::sink::open(&dest, sink_options(src, &dest, opts))?;
    let replaced = protect_source(src, &dest, opts).await?;
    // Nothing to do when DEST holds this result already (unless asked to redo it, or to
    // produce something only a run makes: a check report, an SBOM file).
    if !opts.force
        && !opts.dry_run
        && replaced.is_none()
        && opts.check.is_none()
        && opts.probes.is_empty()
        && opts.learn.is_empty()
        && opts.sbom_file.is_none()
        && let Some(u) = up_to_date(src, &dest, sink.as_ref(), opts).await?
    {
        return Ok(Hardened {
            index: None,
            images: Vec::new(),
            replaced: None,
            up_to_date: Some(u),
        });
    }
    let listed = if opts.source.platform.is_some() {
        None
    } else {
        source::index_platforms(src, &opts.source).await?
    };
    let Some((index_digest, entries)) = listed else {
        let (report, built) = build_one(src, &dest, opts, progress).await?;
        if !opts.dry_run {
            let t = Instant::now();
            sink.write_image(&built.parts(), true, progress).await?;
            tracing::debug!(seconds = t.elapsed().as_secs_f64(), "wrote the image");
        }
        write_sbom_file(opts, &built, false)?;
        return Ok(Hardened {
            index: None,
            images: vec![report],
            replaced,
            up_to_date: None,
        });
    };
    if !sink.holds_an_index() {
        return Err(Error::Usage(format!(
            "{src} is a multi-platform image and a docker-archive holds one: pick one with --platform"
        )));
    }
    // Every platform's signature before any is built.
    source::verify_platforms(src, &opts.source, &opts.platforms).await?;
    let mut skipped = Vec::new();
    let mut images = Vec::new();
    let mut children = Vec::new();
    for (platform, note) in entries {
        let Some(platform) = platform else {
            skipped.push(note);
            continue;
        };
        if !opts.platforms.is_empty() && !opts.platforms.iter().any(|p| p.matches(&platform)) {
            skipped.push(format!("{platform}: not asked for"));
            continue;
        }
        let mut o = opts.clone();
        o.source.platform = Some(platform.clone());
        progress.note(&format!("{platform}:"));
        let (report, built) = build_one(src, &dest, &o, progress).await?;
        if !opts.dry_run {
            sink.write_image(&built.parts(), false, progress).await?;
        }
        write_sbom_file(opts, &built, true)?;
        children.push(Descriptor {
            platform: Some(built.platform.clone()),
            ..Descriptor::of(OCI_MANIFEST, &built.manifest_bytes)
        });
        images.push(report);
    }
    if children.is_empty() {
        return Err(Error::Usage(format!(
            "{src}: no platform left to harden ({})",
            skipped.join("; ")
        )));
    }
    let index = crate::image::Index {
        schema_version: 2,
        media_type: Some(crate::image::OCI_INDEX.into()),
        manifests: children,
        annotations: Some(
            [
                (ANNOTATION_BASE_DIGEST.to_string(), index_digest.clone()),
                (ANNOTATION_BASE_NAME.to_string(), src.to_string()),
                (
                    crate::image::ANNOTATION_PARE_RECIPE.to_string(),
                    opts.recipe(),
                ),
            ]
            .into(),
        ),
    };
    let index_bytes = serde_json::to_vec(&index).map_err(|e| Error::Other(e.to_string()))?;
    let digest = crate::digest::sha256_bytes(&index_bytes);
    if !opts.dry_run {
        sink.write_index(index_bytes).await?;
    }
    Ok(Hardened {
        index: Some(IndexInfo {
            source: src.to_string(),
            source_digest: index_digest,
            destination: dest.to_string(),
            digest,
            skipped,
        }),
        images,
        replaced,
        up_to_date: None,
    })
}

/// Where to write and with what: DEST's credentials (`--dest-creds`, else `--creds` when DEST
/// is on the source's registry, else the auth files), the signing key, the push log.
fn sink_options(src: &ImageRef, dest: &ImageRef, opts: &HardenOptions) -> SinkOptions {
    let creds = match (&opts.dest_creds, &opts.source.creds) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(c)) if src.same_registry(dest) => Some(c.clone()),
        _ => None,
    };
    SinkOptions {
        insecure_registries: opts.source.insecure_registries.clone(),
        creds,
        sign_key: opts.sign_key.clone(),
        push_log: opts.push_log.clone(),
    }
}

/// Refuse a DEST that is the source itself unless `--in-place`; with it, note what is
/// replaced and (registry) keep it under `TAG-original`, never overwriting an existing one.
async fn protect_source(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &HardenOptions,
) -> Result<Option<Replaced>> {
    if !source::is_replaced_by(src, dest) {
        return Ok(None);
    }
    if !opts.in_place {
        return Err(Error::Usage(format!(
            "{dest} is the source image itself: pare never overwrites its source; name another destination, or pass --in-place to replace it"
        )));
    }
    if opts.dry_run {
        return Ok(None);
    }
    let backup_creds = match (opts.no_backup, src.as_registry()) {
        (false, Some(r)) => Some(match sink_options(src, src, opts).creds {
            Some(c) => c,
            None => crate::transport::auth::lookup(&r.registry)?,
        }),
        _ => None,
    };
    source::keep_original(src, &opts.source, backup_creds)
        .await
        .map(Some)
}

async fn build_one(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &HardenOptions,
    progress: &Progress,
) -> Result<(Report, Built)> {
    let started = Instant::now();
    let Analysis {
        pulled,
        rootfs,
        trace,
        mut contents,
        work,
        learned,
    } = analyze(src, opts, progress).await?;
    let user_flag = opts.user;
    let config = pulled.config.clone();
    let (mtime, created) = build_time(&config)?;
    let layer_path = work.path().join("layer.tar.gz");
    let want_sbom = !opts.no_sbom;
    let (plan, trace, layer, rootfs, sums) = tokio::task::spawn_blocking(move || -> Result<_> {
        use crate::trace::Contents as _;
        let input = PlanInput {
            fs: &rootfs,
            trace: &trace,
            config: &config,
            user_flag,
        };
        let t = Instant::now();
        let plan = plan::build(input, &mut contents)?;
        contents.prefetch(&rootfs, &plan.image_files())?;
        tracing::debug!(seconds = t.elapsed().as_secs_f64(), "planned");
        let t = Instant::now();
        let files = contents.into_files();
        // The SBOM's checksums are taken on another core while the layer is compressed.
        let (layer, sums) = std::thread::scope(|scope| {
            let sums = want_sbom.then(|| scope.spawn(|| file_sums(&plan, &files)));
            let layer = write_layer(&plan, &files, &layer_path, mtime);
            let sums = sums
                .map(|h| {
                    h.join()
                        .map_err(|_| Error::Other("the SBOM checksum thread panicked".into()))?
                })
                .transpose();
            (layer, sums)
        });
        let (layer, sums) = (layer?, sums?);
        tracing::debug!(
            seconds = t.elapsed().as_secs_f64(),
            bytes = layer.size,
            "wrote layer"
        );
        Ok((plan, trace, layer, rootfs, sums))
    })
    .await
    .map_err(join_err)??;
    let config_bytes = new_config(&pulled.config, &plan, &layer, &created, &src.to_string())?;
    let config_digest = crate::digest::sha256_bytes(&config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        subject: None,
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        },
        layers: vec![layer.descriptor()],
        annotations: Some(
            [
                (ANNOTATION_BASE_DIGEST.to_string(), pulled.digest.clone()),
                (ANNOTATION_BASE_NAME.to_string(), src.to_string()),
                (
                    crate::image::ANNOTATION_PARE_RECIPE.to_string(),
                    opts.recipe(),
                ),
            ]
            .into(),
        ),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Other(e.to_string()))?;
    let manifest_digest = crate::digest::sha256_bytes(&manifest_bytes);

    let probes = if opts.probes.is_empty() {
        None
    } else {
        let results = tokio::task::block_in_place(|| {
            probe_built(
                &rootfs,
                &pulled.config,
                &layer,
                &config_bytes,
                opts,
                work.path(),
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
        Some(results)
    };
    let check = match &opts.check {
        Some(cfg) => {
            let report = check_result(
                &plan,
                &trace,
                &layer,
                &config_bytes,
                cfg,
                &dest.to_string(),
                &manifest_digest,
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
            Some(report)
        }
        None => None,
    };

    let u = plan.user();
    let files = plan
        .entries
        .iter()
        .map(|(p, e)| FileInfo {
            path: crate::rootfs::display(p),
            kind: match e.content {
                Content::Dir => "dir",
                Content::Symlink(_) => "symlink",
                _ => "file",
            },
            size: e.size,
            mode: format!("{:04o}", e.mode),
            target: match &e.content {
                Content::Symlink(t) => Some(t.clone()),
                _ => None,
            },
            reason: e.reason.clone(),
            evidence: e.evidence.clone(),
        })
        .collect();
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
        setid_cleared: plan
            .setid_cleared
            .iter()
            .map(|s| SetIdInfo {
                path: s.path.clone(),
                mode_before: format!("{:04o}", s.mode_before),
                mode_after: format!("{:04o}", s.mode_after),
                uid: s.uid,
                gid: s.gid,
            })
            .collect(),
        setid_removed: rootfs
            .nodes
            .iter()
            .filter(|(p, n)| {
                matches!(n.kind, crate::rootfs::Kind::File { .. })
                    && n.mode & 0o6000 != 0
                    && !plan.entries.contains_key(*p)
            })
            .map(|(p, n)| SetIdInfo {
                path: crate::rootfs::display(p),
                mode_before: format!("{:04o}", n.mode),
                mode_after: "removed".into(),
                uid: n.uid,
                gid: n.gid,
            })
            .collect(),
        capabilities_dropped: plan.capabilities_dropped.clone(),
        sizes: SizeChange {
            before: Sizes {
                compressed: pulled.compressed_size(),
                uncompressed: rootfs.uncompressed_size(),
            },
            after: Sizes {
                compressed: layer.size,
                uncompressed: layer.uncompressed_size,
            },
        },
        layer_reads: {
            use std::sync::atomic::Ordering::Relaxed;
            let r = &rootfs.inflated;
            crate::report::LayerReads {
                uncompressed_bytes: rootfs.uncompressed_size(),
                merge_bytes: r.merge_bytes.load(Relaxed),
                later_bytes: r.later_bytes.load(Relaxed),
                later_passes: r.later_passes.load(Relaxed),
                later_files: r.later_files.load(Relaxed),
            }
        },
        layers_before: pulled.layers.len(),
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
        packages: trace
            .packages
            .as_deref()
            .map(|db| packages_info(db, &rootfs, &plan, &trace)),
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
    let built = Built {
        layer,
        mtime,
        config_bytes,
        config_digest,
        manifest_bytes,
        platform: pulled.platform.clone(),
        sbom,
        created: created.clone(),
        _work: work,
    };
    Ok((report, built))
}

/// Per package: the files kept and dropped.
fn packages_info(
    db: &crate::packages::Db,
    fs: &Rootfs,
    plan: &Plan,
    trace: &Trace,
) -> crate::report::PackagesInfo {
    use crate::report::PackageInfo;
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (i, p) in db.packages.iter().enumerate() {
        let kept_here: std::collections::HashSet<&String> =
            plan.packages.get(&i).into_iter().flatten().collect();
        let (k, d): (Vec<String>, Vec<String>) = db
            .files_of(fs, i)
            .into_iter()
            .partition(|f| kept_here.contains(f));
        let mut info = PackageInfo {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            source: p.source.clone(),
            kept_count: k.len(),
            dropped_count: d.len(),
            files_kept: k.iter().map(|f| crate::rootfs::display(f)).collect(),
            files_dropped: d.iter().map(|f| crate::rootfs::display(f)).collect(),
        };
        if plan.packages.contains_key(&i) {
            kept.push(info);
        } else {
            // All of it is gone: the counts say enough.
            info.files_dropped.clear();
            dropped.push(info);
        }
    }
    crate::report::PackagesInfo {
        format: db.format.name(),
        kept,
        dropped,
        missing: trace
            .missing_from_packages
            .iter()
            .map(|(file, needed_by, package)| crate::report::MissingFile {
                file: file.clone(),
                needed_by: needed_by.clone(),
                package: package.clone(),
            })
            .collect(),
    }
}

/// SHA1 and SHA256 of every regular file of the plan (for the SBOM), and its os-release.
type FileSums = (
    std::collections::BTreeMap<String, crate::sbom::Sums>,
    std::collections::BTreeMap<String, String>,
);

fn file_sums(
    plan: &Plan,
    files: &std::collections::HashMap<String, crate::rootfs::Local>,
) -> Result<FileSums> {
    let mut sums = std::collections::BTreeMap::new();
    let mut os_release = std::collections::BTreeMap::new();
    for (p, e) in &plan.entries {
        let s = match &e.content {
            Content::Image(src) => {
                let local = files
                    .get(src)
                    .ok_or_else(|| Error::Other(format!("internal: no bytes read for /{src}")))?;
                let r = local.open().map_err(|e| Error::io(&*local.path, e))?;
                crate::sbom::Sums::of_reader(r).map_err(|e| Error::io(&*local.path, e))?
            }
            Content::Bytes(b) => {
                crate::sbom::Sums::of_reader(&b[..]).map_err(|e| Error::Other(e.to_string()))?
            }
            _ => continue,
        };
        sums.insert(p.clone(), s);
        if (p == "etc/os-release" || p == "usr/lib/os-release")
            && os_release.is_empty()
            && let Content::Image(src) = &e.content
            && let Some(local) = files.get(src)
            && let Ok(b) = local.read(1 << 20)
        {
            os_release = crate::sbom::parse_os_release(&String::from_utf8_lossy(&b));
        }
    }
    Ok((sums, os_release))
}

/// The checklist on the hardened result, read back from the layer just written.
async fn check_result(
    plan: &Plan,
    trace: &Trace,
    layer: &WrittenLayer,
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
    let blob = crate::image::LayerBlob {
        descriptor: layer.descriptor(),
        path: layer.path.clone(),
        growing: None,
    };
    let diff_id = layer.diff_id.clone();
    let entry = trace.entrypoint.clone();
    let needed = trace.needed();
    let (cfg, image, digest) = (cfg.clone(), image.to_string(), digest.to_string());
    tokio::task::spawn_blocking(move || -> Result<_> {
        let fs = Rootfs::merge(vec![blob], Some(&[diff_id]))?;
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
    .map_err(join_err)?
}

/// Write `--sbom FILE` (for a platform of a multi-platform result, `FILE.OS-ARCH[-VARIANT]`).
fn write_sbom_file(opts: &HardenOptions, built: &Built, multi: bool) -> Result<()> {
    let (Some(path), Some(sbom)) = (&opts.sbom_file, &built.sbom) else {
        return Ok(());
    };
    let path = if multi {
        let p = &built.platform;
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}-{}", p.os, p.architecture));
        if let Some(v) = &p.variant {
            name.push(format!("-{v}"));
        }
        std::path::PathBuf::from(name)
    } else {
        path.clone()
    };
    std::fs::write(&path, sbom).map_err(|e| Error::io(&path, e))
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
    .map_err(join_err)??;
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

/// The probes of `--probe` in the hardened result (read back from its layer) and in the
/// source, before anything is written.
fn probe_built(
    source: &Rootfs,
    source_config: &serde_json::Value,
    layer: &WrittenLayer,
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
    let blob = crate::image::LayerBlob {
        descriptor: layer.descriptor(),
        path: layer.path.clone(),
        growing: None,
    };
    let hardened = Rootfs::merge_with(
        vec![blob],
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
fn learn_option(config: &serde_json::Value) -> String {
    let cmd = RunConfig::from_config(config).cmd;
    format!(
        "--learn {}",
        crate::probe::join(&[crate::probe::join(&cmd)])
    )
}

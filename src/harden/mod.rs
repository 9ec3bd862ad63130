//! `pare harden` and `pare trace`, end to end: source → rootfs → trace → plan → layer → sink.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::image::{ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME, Descriptor, OCI_MANIFEST};
use crate::progress::Progress;
use crate::reference::{self, ImageRef};
use crate::report::Report;
use crate::transport::sink::SinkOptions;
use crate::transport::source::{self, SourceOptions};

mod build;
mod commands;
mod load;
mod report;
mod uptodate;

use build::{Built, build_one};
pub use commands::{check_image, inspect_image, inspect_packages, probe_image};
pub use load::{Analysis, Learned, Loaded, analyze, load};
use uptodate::up_to_date;

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
    /// `--compression`: the layers' format.
    pub compression: crate::image::LayerCompression,
    /// Layers this process wrote already (a batch writes a shared base's kept files once).
    pub made: Option<std::sync::Arc<crate::layer::Made>>,
}

impl HardenOptions {
    /// pare's version and the options that change what it writes (not where, nor how it
    /// reports): recorded on the result so a batch knows whether it is still current.
    pub fn recipe(&self) -> String {
        let mut keep = self.keep.clone();
        keep.sort();
        let mut recipe = format!(
            "pare {}; user={}; keep={}; allow-missing={}; runtime-full={}; packages={}; layer={}",
            env!("CARGO_PKG_VERSION"),
            self.user
                .map(|(u, g)| format!("{u}:{g}"))
                .unwrap_or_else(|| "image".into()),
            keep.join(","),
            self.allow_missing,
            self.runtime_full,
            !self.no_packages,
            crate::layer::format(self.compression)
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
    // One client per registry and credentials for the whole run: the source's manifest
    // reads, its layers and the destination's pushes share connections and the `/v2/` answer.
    let pooled;
    let opts = if opts.source.clients.is_none() {
        let mut o = opts.clone();
        o.source.clients = Some(Default::default());
        pooled = o;
        &pooled
    } else {
        opts
    };
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
    SinkOptions {
        insecure_registries: opts.source.insecure_registries.clone(),
        creds: dest_creds(src, dest, opts).cloned(),
        sign_key: opts.sign_key.clone(),
        push_log: opts.push_log.clone(),
        clients: opts.source.clients.clone(),
    }
}

/// The credentials given for DEST: `--dest-creds`, else `--creds` when DEST is on the
/// source's registry; `None`: the auth files.
fn dest_creds<'a>(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &'a HardenOptions,
) -> Option<&'a crate::transport::auth::Credentials> {
    match (&opts.dest_creds, &opts.source.creds) {
        (Some(c), _) => Some(c),
        (None, Some(c)) if src.same_registry(dest) => Some(c),
        _ => None,
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
        (false, Some(r)) => Some(crate::transport::auth::given_or_lookup(
            dest_creds(src, src, opts),
            &r.registry,
        )?),
        _ => None,
    };
    source::keep_original(src, &opts.source, backup_creds)
        .await
        .map(Some)
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

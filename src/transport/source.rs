//! Image sources: resolve a reference to one platform's manifest, its config, and its layers as
//! verified local files (registry blobs are downloaded into the work dir; layout blobs are read
//! in place after their digest is checked).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::growing::Growing;
use crate::image::{self, Descriptor, MAX_CONFIG_BYTES, Manifest, ManifestDoc, Platform};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::transport::auth::{self, Credentials};
use crate::transport::layout::Layout;
use crate::transport::registry::RegistryClient;

#[derive(Clone, Default)]
pub struct SourceOptions {
    /// Platform to pick from an index (default linux/amd64).
    pub platform: Option<Platform>,
    pub insecure_registries: Vec<String>,
    /// `--creds`; otherwise the auth files are consulted.
    pub creds: Option<Credentials>,
    /// Layers already downloaded by this process (a batch shares base layers across images).
    pub blobs: Option<std::sync::Arc<BlobCache>>,
    /// `--verify-key`: the source must carry a valid cosign signature by one of these, checked
    /// before anything but its manifest is read.
    pub verify_keys: Vec<crate::sign::PublicKey>,
}

/// Most bytes of layer blobs a [`BlobCache`] keeps on disk for later images.
pub const BLOB_BUDGET: u64 = 8 << 30;

/// Verified layer blobs by digest, downloaded once per process however many images use them.
/// Each image gets its own hard link to a cached blob, so the cache can drop a blob (least
/// recently used first, past [`BLOB_BUDGET`] bytes) while images still read it.
pub struct BlobCache {
    dir: tempfile::TempDir,
    slots: std::sync::Mutex<BlobSlots>,
    budget: u64,
    /// How many layer pulls the cache answered.
    pub hits: std::sync::atomic::AtomicU64,
    /// Downloads started (names their partial files).
    downloads: std::sync::atomic::AtomicU64,
    /// Each layer's parse and the files copied out of it, shared by the images.
    pub layers: std::sync::Arc<crate::rootfs::LayerCache>,
}

type BlobCell = std::sync::Arc<tokio::sync::OnceCell<PathBuf>>;

#[derive(Default)]
struct BlobSlots {
    map: std::collections::HashMap<String, BlobSlot>,
    tick: u64,
    held: u64,
}

struct BlobSlot {
    cell: BlobCell,
    used: u64,
    size: u64,
}

impl BlobCache {
    pub fn new() -> Result<Self> {
        Self::with_budget(BLOB_BUDGET)
    }

    pub fn with_budget(budget: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pare-blobs-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let files = dir.path().join("files");
        std::fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
        Ok(BlobCache {
            layers: std::sync::Arc::new(crate::rootfs::LayerCache::new(&files)),
            dir,
            slots: Default::default(),
            budget,
            hits: Default::default(),
            downloads: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlobSlots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, digest: &str) -> BlobCell {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        let slot = s.map.entry(digest.to_string()).or_insert_with(|| BlobSlot {
            cell: Default::default(),
            used: 0,
            size: 0,
        });
        slot.used = tick;
        slot.cell.clone()
    }

    /// `digest` (of `size` bytes) is now on disk: count it, and drop the least recently used
    /// other blobs past the budget.
    fn account(&self, digest: &str, cell: &BlobCell, size: u64) {
        let mut s = self.lock();
        let s = &mut *s;
        if let Some(slot) = s.map.get_mut(digest)
            && std::sync::Arc::ptr_eq(&slot.cell, cell)
            && slot.size == 0
        {
            slot.size = size.max(1);
            s.held += slot.size;
        }
        while s.held > self.budget {
            let victim = s
                .map
                .iter()
                .filter(|(d, slot)| slot.size > 0 && d.as_str() != digest)
                .min_by_key(|(_, slot)| slot.used)
                .map(|(d, _)| d.clone());
            let Some(v) = victim else { break };
            if let Some(slot) = s.map.remove(&v) {
                s.held -= slot.size;
                if let Some(p) = slot.cell.get() {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    /// Bytes of blobs the cache holds on disk.
    pub fn held_bytes(&self) -> u64 {
        self.lock().held
    }

    /// The verified blob `d` as the file `mine` (a hard link to the cached copy), downloading
    /// it only when no earlier image did.
    async fn fetch(
        &self,
        client: &RegistryClient,
        r: &crate::reference::RegistryRef,
        d: &Descriptor,
        mine: &Path,
        progress: &Progress,
    ) -> Result<()> {
        let hex = d
            .digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                Error::malformed(r.to_string(), format!("layer digest {:?}", d.digest))
            })?;
        for _ in 0..3 {
            let cell = self.slot(&d.digest);
            let mut fetched = false;
            let cached = cell
                .get_or_try_init(|| async {
                    fetched = true;
                    // Downloaded and verified under a name of its own, then renamed: the
                    // cache's name never shows a partial blob, even to an image that races
                    // an eviction and a new download of the same digest.
                    let p = self.dir.path().join(hex);
                    let n = self
                        .downloads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let part = self.dir.path().join(format!("part-{n}"));
                    let got = client.get_blob_to_file(r, d, &part, progress).await;
                    if let Err(e) = got {
                        let _ = std::fs::remove_file(&part);
                        return Err(e);
                    }
                    std::fs::rename(&part, &p).map_err(|e| Error::io(&p, e))?;
                    Ok::<_, Error>(p)
                })
                .await?
                .clone();
            self.account(&d.digest, &cell, d.size);
            // A link, or a copy across filesystems; the cache may have dropped the blob
            // between the two steps: then fetch it again.
            let linked = std::fs::hard_link(&cached, mine).is_ok()
                || (cached.exists() && std::fs::copy(&cached, mine).is_ok());
            if linked {
                if !fetched {
                    self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(());
            }
        }
        client.get_blob_to_file(r, d, mine, progress).await
    }
}

pub use crate::image::LayerBlob;

/// What pare read of the source image.
pub struct PulledImage {
    pub reference: ImageRef,
    /// Digest the reference resolves to (an index's, when it names an index).
    pub digest: String,
    /// Digest of the selected platform's manifest.
    pub manifest_digest: String,
    /// `--verify-key`: the signature that verified.
    pub verified: Option<crate::sign::Verified>,
    pub manifest: Manifest,
    pub config: serde_json::Value,
    pub config_size: u64,
    pub platform: Platform,
    pub layers: Vec<LayerBlob>,
}

impl PulledImage {
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.descriptor.size).sum()
    }
}

pub fn credentials_for(registry: &str, opts: &SourceOptions) -> Result<Credentials> {
    match &opts.creds {
        Some(c) => Ok(c.clone()),
        None => auth::lookup(registry),
    }
}

/// A client for `registry` with the source's credentials and plain-HTTP rules.
pub fn connect(registry: &str, opts: &SourceOptions) -> Result<RegistryClient> {
    RegistryClient::connect(
        registry,
        &opts.insecure_registries,
        credentials_for(registry, opts)?,
    )
}

fn platform_of(config: &serde_json::Value) -> Platform {
    let s = |k: &str| config.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Platform {
        architecture: s("architecture").unwrap_or_else(|| "amd64".into()),
        os: s("os").unwrap_or_else(|| "linux".into()),
        variant: s("variant"),
    }
}

/// A single-platform image must be the platform the user named with `--platform`.
fn check_platform(
    opts: &SourceOptions,
    config: &serde_json::Value,
    top: &str,
    manifest: &str,
    what: &str,
) -> Result<()> {
    let Some(want) = &opts.platform else {
        return Ok(());
    };
    if top != manifest {
        return Ok(()); // picked from an index already
    }
    let have = platform_of(config);
    if !want.matches(&have) {
        return Err(Error::Usage(format!(
            "{what} is a {have} image, not {want}"
        )));
    }
    Ok(())
}

fn parse_config(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::malformed(format!("config of {what}"), e))?;
    if !v.is_object() {
        return Err(Error::malformed(
            format!("config of {what}"),
            "not a JSON object",
        ));
    }
    Ok(v)
}

fn check_child(desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(())
}

/// An index entry: its platform (`None` for attestations and `unknown/unknown`) and a note
/// saying why it is skipped when it is.
pub type IndexEntry = (Option<Platform>, String);

/// When `reference` names a multi-platform index: its digest and its entries, in order.
pub async fn index_platforms(
    reference: &ImageRef,
    opts: &SourceOptions,
) -> Result<Option<(String, Vec<IndexEntry>)>> {
    let what = reference.to_string();
    let (bytes, digest, media_type) = match reference {
        ImageRef::Registry(r) => {
            let client = connect(&r.registry, opts)?;
            let (b, d) = client.get_manifest(r).await?;
            (b, d, None)
        }
        ImageRef::Layout { dir, tag } => {
            let layout = Layout::open(dir)?;
            let top = layout.find(tag.as_deref())?;
            let b = layout.read_blob(&top, image::MAX_MANIFEST_BYTES as u64)?;
            (b, top.digest.clone(), Some(top.media_type.clone()))
        }
        ImageRef::Archive { .. } => return Ok(None),
    };
    let ManifestDoc::Index(idx) = image::parse_manifest(&bytes, media_type.as_deref(), &what)?
    else {
        return Ok(None);
    };
    let entries = idx
        .manifests
        .iter()
        .map(|d| match &d.platform {
            Some(p) if p.os != "unknown" && p.architecture != "unknown" => {
                (Some(p.clone()), String::new())
            }
            p => (
                None,
                format!(
                    "{} ({}): attestation or unknown platform, skipped",
                    crate::transport::registry::short_digest(&d.digest),
                    p.as_ref()
                        .map_or("no platform".to_string(), |p| p.to_string())
                ),
            ),
        })
        .collect();
    Ok(Some((digest, entries)))
}

/// `--verify-key`: the image (or, for a platform picked from an index, the index or that
/// platform's manifest, as cosign signs with and without `--recursive`) must carry a valid
/// signature by one of the keys.
async fn verify_signature(
    client: &RegistryClient,
    r: &crate::reference::RegistryRef,
    top: &str,
    manifest: &str,
    opts: &SourceOptions,
) -> Result<Option<crate::sign::Verified>> {
    if opts.verify_keys.is_empty() {
        return Ok(None);
    }
    match crate::sign::verify(client, r, top, &opts.verify_keys).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if top == manifest => Err(e),
        Err(index_err) => match crate::sign::verify(client, r, manifest, &opts.verify_keys).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::Signature(m)) => Err(Error::Signature(format!(
                "{m}; nor is its index: {}",
                index_err.to_string().trim_start_matches("signature: ")
            ))),
            Err(e) => Err(e),
        },
    }
}

/// `--verify-key` for a multi-platform source, before any platform is built: the index's own
/// signature, else a signature of every platform to be hardened (`platforms`; empty: every
/// platform the index lists), so a source with one unsigned platform is refused before
/// anything is pulled or pushed.
pub async fn verify_platforms(
    reference: &ImageRef,
    opts: &SourceOptions,
    platforms: &[Platform],
) -> Result<()> {
    let ImageRef::Registry(r) = reference else {
        return Ok(());
    };
    if opts.verify_keys.is_empty() {
        return Ok(());
    }
    let client = connect(&r.registry, opts)?;
    let (bytes, digest) = client.get_manifest(r).await?;
    let ManifestDoc::Index(idx) = image::parse_manifest(&bytes, None, &reference.to_string())?
    else {
        return Ok(());
    };
    let Err(index_err) = crate::sign::verify(&client, r, &digest, &opts.verify_keys).await else {
        return Ok(());
    };
    for d in &idx.manifests {
        let Some(p) = &d.platform else { continue };
        if p.os == "unknown" || p.architecture == "unknown" {
            continue;
        }
        if !platforms.is_empty() && !platforms.iter().any(|w| w.matches(p)) {
            continue;
        }
        if let Err(e) = crate::sign::verify(&client, r, &d.digest, &opts.verify_keys).await {
            return Err(match e {
                Error::Signature(m) => Error::Signature(format!(
                    "{p}: {m}; nor is its index: {}",
                    index_err.to_string().trim_start_matches("signature: ")
                )),
                e => e,
            });
        }
    }
    Ok(())
}

/// `--verify-key` needs a registry source: signatures live beside the image in its repository.
fn signatures_need_a_registry(reference: &ImageRef, opts: &SourceOptions) -> Result<()> {
    if opts.verify_keys.is_empty() || matches!(reference, ImageRef::Registry(_)) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--verify-key: {reference} is not in a registry; cosign signatures are looked up in the image's registry repository"
    )))
}

/// Resolve and fetch the image. Registry layers land in `work`.
pub async fn pull(
    reference: &ImageRef,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
) -> Result<PulledImage> {
    Ok(pull_inner(reference, opts, work, progress, false).await?.0)
}

/// Every layer of `manifest` downloaded (through the blob cache when there is one) and verified
/// into `work`, three at a time.
async fn fetch_layers(
    client: &RegistryClient,
    r: &crate::reference::RegistryRef,
    manifest: &Manifest,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
) -> Result<Vec<LayerBlob>> {
    let jobs = manifest.layers.iter().enumerate().map(|(i, d)| async move {
        let path = work.join(format!("layer-{i}"));
        match &opts.blobs {
            Some(cache) => cache.fetch(client, r, d, &path, progress).await?,
            None => client.get_blob_to_file(r, d, &path, progress).await?,
        }
        Ok::<_, Error>(LayerBlob {
            descriptor: d.clone(),
            path,
            growing: None,
        })
    });
    let layers: Vec<Result<LayerBlob>> =
        futures_util::stream::iter(jobs).buffered(3).collect().await;
    layers.into_iter().collect()
}

/// Layer downloads still running after [`pull_streaming`] returned.
pub struct Downloads {
    handle: tokio::task::JoinHandle<Result<()>>,
    growing: Vec<Arc<Growing>>,
}

impl Downloads {
    /// Wait for every layer to be downloaded and verified.
    pub async fn wait(self) -> Result<()> {
        self.handle
            .await
            .map_err(|e| Error::Other(format!("download task failed: {e}")))?
    }

    /// After a failed merge: the download error that caused it, when one did (the merge only
    /// saw its echo); `None` when the downloads were fine so far (they are stopped).
    pub async fn failure(self) -> Option<Error> {
        if self.growing.iter().any(|g| g.failed()) {
            self.wait().await.err()
        } else {
            self.handle.abort();
            None
        }
    }
}

/// Ends every download a stopped pull left running, so no reader waits for it.
struct FinishAll(Vec<Arc<Growing>>);

impl Drop for FinishAll {
    fn drop(&mut self) {
        for g in &self.0 {
            g.finish(Err(
                "the pull stopped before this layer was downloaded".into()
            ));
        }
    }
}

/// [`pull`], returning as soon as the manifest and config are read: registry layers are then
/// still downloading, each [`LayerBlob`] readable as it arrives (`growing`), and the
/// [`Downloads`] say when they are done. Other sources, and pulls through a blob cache, are
/// fetched whole first as [`pull`] does.
pub async fn pull_streaming(
    reference: &ImageRef,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
) -> Result<(PulledImage, Option<Downloads>)> {
    pull_inner(reference, opts, work, progress, true).await
}

async fn pull_inner(
    reference: &ImageRef,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
    stream: bool,
) -> Result<(PulledImage, Option<Downloads>)> {
    signatures_need_a_registry(reference, opts)?;
    match reference {
        ImageRef::Registry(r) => pull_registry(reference, r, opts, work, progress, stream).await,
        ImageRef::Archive { path, reference: r } => {
            pull_archive(reference, path, r.as_deref(), opts, work).await
        }
        ImageRef::Layout { dir, tag } => {
            pull_layout(reference, dir, tag.as_deref(), opts, progress).await
        }
    }
}

/// A registry image: the manifest (a platform's, from an index), the signature, the config,
/// then the layers (streamed when `stream`).
async fn pull_registry(
    reference: &ImageRef,
    r: &crate::reference::RegistryRef,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
    stream: bool,
) -> Result<(PulledImage, Option<Downloads>)> {
    let want = opts.platform.clone().unwrap_or_else(Platform::linux_amd64);
    let what = reference.to_string();
    let client = connect(&r.registry, opts)?;
    let (bytes, digest) = client.get_manifest(r).await?;
    let (manifest, manifest_digest) = match image::parse_manifest(&bytes, None, &what)? {
        ManifestDoc::Image(m) => (m, digest.clone()),
        ManifestDoc::Index(idx) => {
            let d = image::select_platform(&idx, &want)?.clone();
            let child = client.get_manifest_by_digest(r, &d.digest).await?;
            check_child(&d, &child)?;
            match image::parse_manifest(&child, Some(&d.media_type), &what)? {
                ManifestDoc::Image(m) => (m, d.digest.clone()),
                ManifestDoc::Index(_) => {
                    return Err(Error::malformed(what, "nested index inside an index"));
                }
            }
        }
    };
    // Signatures before anything else of the image is read.
    let verified = verify_signature(&client, r, &digest, &manifest_digest, opts).await?;
    let config_bytes = client
        .get_blob_bytes(r, &manifest.config, MAX_CONFIG_BYTES)
        .await?;
    let config = parse_config(&config_bytes, &what)?;
    check_platform(opts, &config, &digest, &manifest_digest, &what)?;
    let (layers, downloads) = if stream && opts.blobs.is_none() {
        let layers: Vec<LayerBlob> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| LayerBlob {
                descriptor: d.clone(),
                path: work.join(format!("layer-{i}")),
                growing: Some(Growing::new()),
            })
            .collect();
        let growing: Vec<Arc<Growing>> = layers.iter().filter_map(|l| l.growing.clone()).collect();
        let (todo, r, progress) = (layers.clone(), r.clone(), progress.clone());
        let finish = FinishAll(growing.clone());
        let client = Arc::new(client);
        let handle = tokio::spawn(async move {
            let _finish = finish;
            let jobs = todo.into_iter().map(move |l| {
                let (client, r, progress) = (client.clone(), r.clone(), progress.clone());
                async move {
                    client
                        .get_blob_growing(
                            &r,
                            &l.descriptor,
                            &l.path,
                            &progress,
                            l.growing.as_deref(),
                        )
                        .await
                }
            });
            futures_util::stream::iter(jobs)
                .buffered(3)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        });
        (layers, Some(Downloads { handle, growing }))
    } else {
        (
            fetch_layers(&client, r, &manifest, opts, work, progress).await?,
            None,
        )
    };
    Ok((
        PulledImage {
            reference: reference.clone(),
            digest,
            manifest_digest,
            verified,
            platform: platform_of(&config),
            config,
            config_size: manifest.config.size,
            manifest,
            layers,
        },
        downloads,
    ))
}

/// A `docker save` archive: its layers extracted into `work`.
async fn pull_archive(
    reference: &ImageRef,
    path: &Path,
    r: Option<&str>,
    opts: &SourceOptions,
    work: &Path,
) -> Result<(PulledImage, Option<Downloads>)> {
    let what = reference.to_string();
    let (path, r) = (path.to_path_buf(), r.map(str::to_string));
    let work = work.to_path_buf();
    let a = tokio::task::spawn_blocking(move || {
        crate::transport::archive::read(&path, r.as_deref(), &work)
    })
    .await
    .map_err(|e| Error::Other(format!("archive task failed: {e}")))??;
    let config = parse_config(&a.config_bytes, &what)?;
    check_platform(opts, &config, &a.config_digest, &a.config_digest, &what)?;
    Ok((
        PulledImage {
            reference: reference.clone(),
            verified: None,
            digest: a.config_digest.clone(),
            manifest_digest: a.config_digest.clone(),
            platform: platform_of(&config),
            config_size: a.config_bytes.len() as u64,
            manifest: Manifest {
                schema_version: 2,
                media_type: Some(image::DOCKER_MANIFEST.into()),
                artifact_type: None,
                subject: None,
                config: Descriptor {
                    media_type: image::DOCKER_CONFIG.into(),
                    digest: a.config_digest.clone(),
                    size: a.config_bytes.len() as u64,
                    urls: None,
                    annotations: None,
                    platform: None,
                    artifact_type: None,
                },
                layers: a.layers.iter().map(|l| l.descriptor.clone()).collect(),
                annotations: None,
            },
            config,
            layers: a.layers,
        },
        None,
    ))
}

/// An OCI layout: blobs read in place once their digests are checked.
async fn pull_layout(
    reference: &ImageRef,
    dir: &Path,
    tag: Option<&str>,
    opts: &SourceOptions,
    progress: &Progress,
) -> Result<(PulledImage, Option<Downloads>)> {
    let want = opts.platform.clone().unwrap_or_else(Platform::linux_amd64);
    let what = reference.to_string();
    let layout = Layout::open(dir)?;
    let top = layout.find(tag)?;
    let top_bytes = layout.read_blob(&top, image::MAX_MANIFEST_BYTES as u64)?;
    let (manifest, manifest_digest) =
        match image::parse_manifest(&top_bytes, Some(&top.media_type), &what)? {
            ManifestDoc::Image(m) => (m, top.digest.clone()),
            ManifestDoc::Index(idx) => {
                let d = image::select_platform(&idx, &want)?.clone();
                let child = layout.read_blob(&d, image::MAX_MANIFEST_BYTES as u64)?;
                match image::parse_manifest(&child, Some(&d.media_type), &what)? {
                    ManifestDoc::Image(m) => (m, d.digest.clone()),
                    ManifestDoc::Index(_) => {
                        return Err(Error::malformed(what, "nested index inside an index"));
                    }
                }
            }
        };
    let config_bytes = layout.read_blob(&manifest.config, MAX_CONFIG_BYTES)?;
    let config = parse_config(&config_bytes, &what)?;
    check_platform(opts, &config, &top.digest, &manifest_digest, &what)?;
    let mut layers = Vec::new();
    for d in &manifest.layers {
        let path = layout.blob_path(&d.digest)?;
        let (p2, dg, sz) = (path.clone(), d.digest.clone(), d.size);
        let task = progress.task(
            "verify",
            crate::transport::registry::short_digest(&d.digest),
            d.size,
        );
        let t2 = task.clone();
        tokio::task::spawn_blocking(move || {
            crate::digest::verify_file_with(&p2, &dg, sz, |n| t2.inc(n))
        })
        .await
        .map_err(|e| Error::Other(format!("verify task failed: {e}")))??;
        task.finish();
        layers.push(LayerBlob {
            descriptor: d.clone(),
            path,
            growing: None,
        });
    }
    Ok((
        PulledImage {
            reference: reference.clone(),
            verified: None,
            digest: top.digest.clone(),
            manifest_digest,
            platform: platform_of(&config),
            config,
            config_size: manifest.config.size,
            manifest,
            layers,
        },
        None,
    ))
}

#[cfg(test)]
mod blob_cache_tests {
    use super::*;

    #[test]
    fn blobs_past_the_budget_are_dropped_least_recently_used_first() {
        let cache = BlobCache::with_budget(250).unwrap();
        let put = |name: &str| {
            let cell = cache.slot(name);
            let p = cache.dir.path().join(name);
            std::fs::write(&p, [0u8; 100]).unwrap();
            cell.set(p.clone()).unwrap();
            cache.account(name, &cell, 100);
            p
        };
        let a = put("a");
        // An image holds its own link to a: dropping a from the cache leaves that intact.
        let held = cache.dir.path().join("image-a");
        std::fs::hard_link(&a, &held).unwrap();
        let b = put("b");
        cache.slot("a"); // a is used again: b is now the oldest
        let c = put("c");
        assert_eq!(cache.held_bytes(), 200);
        assert!(a.exists() && !b.exists() && c.exists());
        put("d");
        assert!(!a.exists() && c.exists());
        assert_eq!(std::fs::read(&held).unwrap().len(), 100);
        assert!(!cache.lock().map.contains_key("a"));
    }
}

/// The digest `src` names now (a registry's manifest or index, a layout entry's); `None` for an
/// archive, which records no digest of its own. Only manifests are read.
pub async fn current_digest(src: &ImageRef, opts: &SourceOptions) -> Result<Option<String>> {
    Ok(match src {
        ImageRef::Registry(r) => Some(connect(&r.registry, opts)?.get_manifest(r).await?.1),
        ImageRef::Layout { dir, tag } => Some(Layout::open(dir)?.find(tag.as_deref())?.digest),
        ImageRef::Archive { .. } => None,
    })
}

/// `--verify-key` on a source nothing is pulled from: whether it still carries a valid
/// signature at `digest` (true without keys, and for a source outside a registry).
pub async fn still_signed(src: &ImageRef, opts: &SourceOptions, digest: &str) -> Result<bool> {
    let ImageRef::Registry(r) = src else {
        return Ok(true);
    };
    if opts.verify_keys.is_empty() {
        return Ok(true);
    }
    let client = connect(&r.registry, opts)?;
    Ok(crate::sign::verify(&client, r, digest, &opts.verify_keys)
        .await
        .is_ok())
}

/// The source an `--in-place` harden replaced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replaced {
    /// Its manifest (or index) digest.
    pub digest: String,
    /// Where it stays reachable (`REPO:TAG-original`), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// Whether writing `dest` would replace `src` itself (a layout named without a tag stands for
/// its one entry's tag).
pub fn is_replaced_by(src: &ImageRef, dest: &ImageRef) -> bool {
    crate::reference::replaces_source(src, dest, layout_entry_tag(src).as_deref())
}

fn layout_entry_tag(src: &ImageRef) -> Option<String> {
    match src {
        ImageRef::Layout { dir, tag: None } => Layout::open(dir)
            .and_then(|l| l.find(None))
            .ok()
            .and_then(|d| {
                d.annotations
                    .and_then(|a| a.get(image::ANNOTATION_REF_NAME).cloned())
            }),
        _ => None,
    }
}

/// `--in-place`: what the source is before it is replaced; a registry source is kept under
/// `TAG-original` (with `backup_creds`) unless `backup_creds` is `None`, and an existing
/// backup is never overwritten (the first original is never lost).
pub async fn keep_original(
    src: &ImageRef,
    opts: &SourceOptions,
    backup_creds: Option<Credentials>,
) -> Result<Replaced> {
    match src {
        ImageRef::Registry(r) => {
            let client = connect(&r.registry, opts)?;
            let (bytes, digest) = client.get_manifest(r).await?;
            let mut backup = None;
            if let Some(creds) = backup_creds {
                let tag = format!("{}-original", r.tag_or_default().unwrap_or("latest"));
                let b = crate::reference::RegistryRef {
                    tag: Some(tag),
                    digest: None,
                    ..r.clone()
                };
                if client.get_manifest_opt(&b).await?.is_none() {
                    let media = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                        .unwrap_or_else(|| image::OCI_MANIFEST.to_string());
                    RegistryClient::connect(&r.registry, &opts.insecure_registries, creds)?
                        .put_manifest(&b, bytes, &media)
                        .await?;
                }
                backup = Some(b.to_string());
            }
            Ok(Replaced { digest, backup })
        }
        ImageRef::Layout { dir, tag } => {
            let entry = layout_entry_tag(src);
            let d = Layout::open(dir)?.find(tag.as_deref().or(entry.as_deref()))?;
            Ok(Replaced {
                digest: d.digest,
                backup: None,
            })
        }
        ImageRef::Archive { path, .. } => {
            let mut h = crate::digest::Hasher::default();
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(Replaced {
                digest: h.finish().0,
                backup: None,
            })
        }
    }
}

//! Image sources: resolve a reference to one platform's manifest, its config, and its layers as
//! verified local files (registry blobs are downloaded into the work dir; layout blobs are read
//! in place after their digest is checked).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::growing::Growing;
use crate::image::{self, Descriptor, MAX_CONFIG_BYTES, Manifest, ManifestDoc, Platform};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::transport::auth::{self, Credentials};
use crate::transport::layout::Layout;
use crate::transport::registry::RegistryClient;

mod archive;
mod layout;
mod registry;

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
    /// `--threads` (`PARE_THREADS`): threads parsing the layers and compressing a result (0:
    /// one per core; the bytes written do not depend on it).
    pub threads: usize,
    /// Registry clients shared by a batch's images (sources and destinations alike).
    pub clients: Option<std::sync::Arc<crate::transport::registry::ClientPool>>,
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
    auth::given_or_lookup(opts.creds.as_ref(), registry)
}

/// A client for `registry` with the source's credentials and plain-HTTP rules.
pub fn connect(registry: &str, opts: &SourceOptions) -> Result<RegistryClient> {
    let creds = credentials_for(registry, opts)?;
    match &opts.clients {
        Some(pool) => pool.get(registry, &opts.insecure_registries, creds),
        None => RegistryClient::connect(registry, &opts.insecure_registries, creds),
    }
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

/// What a pull is given: the options, the work directory (registry layers land there), the
/// progress display, and whether layers may still be downloading when it returns.
#[derive(Clone, Copy)]
pub struct Pull<'a> {
    pub opts: &'a SourceOptions,
    pub work: &'a Path,
    pub progress: &'a Progress,
    pub stream: bool,
}

/// A pulled image, and the downloads still running (a streamed registry pull).
pub type Pulled = (PulledImage, Option<Downloads>);

/// A source's answer, later.
pub type Fut<'a, T> = BoxFuture<'a, Result<T>>;

/// Credentials to keep the original under `TAG-original` with, or `None` for no backup.
pub type Backup = Option<Credentials>;

/// The top manifest (or index) as stored: its bytes, digest and media type (when the store
/// says it).
pub type Top = (Vec<u8>, String, Option<String>);

/// Where images are read from: a registry repository, an OCI image layout, a `docker save`
/// archive (the go-containerregistry idiom: `remote`, `layout`, `tarball`). The functions of
/// this module ask [`open`] for the source and never match on the transport themselves.
pub trait Source: Send + Sync {
    /// One platform's image: manifest, config, and the layers as verified local files
    /// (registry layers land in `work`, streamed when `stream`).
    fn pull<'a>(&'a self, how: Pull<'a>) -> Fut<'a, Pulled>;
    /// The top manifest; `None` when the source records none (an archive).
    fn top<'a>(&'a self, opts: &'a SourceOptions) -> Fut<'a, Option<Top>>;
    /// `--in-place`: what the source is before it is replaced; a registry source is kept
    /// under `TAG-original` (with the `backup` credentials) unless they are `None`, and an
    /// existing backup is never overwritten (the first original is never lost).
    fn keep_original<'a>(&'a self, opts: &'a SourceOptions, backup: Backup) -> Fut<'a, Replaced>;
    /// `--verify-key` on a source nothing is pulled from: whether it still carries a valid
    /// signature at `digest` (only a registry holds signatures).
    fn still_signed<'a>(&'a self, _: &'a SourceOptions, _digest: &'a str) -> Fut<'a, bool> {
        Box::pin(async { Ok(true) })
    }
    /// `--verify-key` for a multi-platform source, before any platform is built.
    fn verify_platforms<'a>(&'a self, _: &'a SourceOptions, _: &'a [Platform]) -> Fut<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    /// A layout named without a tag: the tag of its one entry.
    fn entry_tag(&self) -> Option<String> {
        None
    }
}

/// The source `reference` names.
pub fn open(reference: &ImageRef) -> Box<dyn Source> {
    match reference {
        ImageRef::Registry(r) => Box::new(registry::RegistrySource {
            reference: reference.clone(),
            r: r.clone(),
        }),
        ImageRef::Layout { dir, tag } => Box::new(layout::LayoutSource {
            reference: reference.clone(),
            dir: dir.clone(),
            tag: tag.clone(),
        }),
        ImageRef::Archive {
            path,
            reference: member,
        } => Box::new(archive::ArchiveSource {
            reference: reference.clone(),
            path: path.clone(),
            member: member.clone(),
        }),
    }
}

/// When `reference` names a multi-platform index: its digest and its entries, in order.
pub async fn index_platforms(
    reference: &ImageRef,
    opts: &SourceOptions,
) -> Result<Option<(String, Vec<IndexEntry>)>> {
    let what = reference.to_string();
    let Some((bytes, digest, media_type)) = open(reference).top(opts).await? else {
        return Ok(None);
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

/// `--verify-key` for a multi-platform source, before any platform is built: the index's own
/// signature, else a signature of every platform to be hardened (`platforms`; empty: every
/// platform the index lists), so a source with one unsigned platform is refused before
/// anything is pulled or pushed.
pub async fn verify_platforms(
    reference: &ImageRef,
    opts: &SourceOptions,
    platforms: &[Platform],
) -> Result<()> {
    open(reference).verify_platforms(opts, platforms).await
}

async fn pull_inner(
    reference: &ImageRef,
    opts: &SourceOptions,
    work: &Path,
    progress: &Progress,
    stream: bool,
) -> Result<(PulledImage, Option<Downloads>)> {
    signatures_need_a_registry(reference, opts)?;
    let how = Pull {
        opts,
        work,
        progress,
        stream,
    };
    open(reference).pull(how).await
}

/// The digest `src` names now (a registry's manifest or index, a layout entry's); `None` for an
/// archive, which records no digest of its own. Only manifests are read.
pub async fn current_digest(src: &ImageRef, opts: &SourceOptions) -> Result<Option<String>> {
    Ok(top(src, opts).await?.map(|(_, digest, _)| digest))
}

/// The top manifest (or index) `src` names now: bytes, digest, media type; `None` for an
/// archive.
pub async fn top(src: &ImageRef, opts: &SourceOptions) -> Result<Option<Top>> {
    open(src).top(opts).await
}

/// `--verify-key` on a source nothing is pulled from: whether it still carries a valid
/// signature at `digest` (true without keys, and for a source outside a registry).
pub async fn still_signed(src: &ImageRef, opts: &SourceOptions, digest: &str) -> Result<bool> {
    open(src).still_signed(opts, digest).await
}

/// `--in-place`: see [`Source::keep_original`].
pub async fn keep_original(
    src: &ImageRef,
    opts: &SourceOptions,
    backup_creds: Option<Credentials>,
) -> Result<Replaced> {
    open(src).keep_original(opts, backup_creds).await
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
    crate::reference::replaces_source(src, dest, open(src).entry_tag().as_deref())
}

//! Where a hardened image is written, behind one interface ([`Sink`]): a registry repository,
//! an OCI image layout directory, a `docker save` archive. Each writes blobs first, the config
//! next and the manifest last, so a failure never leaves a tag naming a half-written image; the
//! referrers (the SBOM, signatures) go after the manifest they point at.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::{Error, Result};
use crate::image::{ANNOTATION_BASE_DIGEST, Descriptor, OCI_INDEX, OCI_MANIFEST, WrittenLayer};
use crate::progress::Progress;
use crate::reference::{ImageRef, RegistryRef};
use crate::transport::auth::Credentials;
use crate::transport::layout::Layout;
use crate::transport::registry::{PushLog, RegistryClient};

/// How to reach and what to add to a destination.
#[derive(Clone, Default)]
pub struct SinkOptions {
    pub insecure_registries: Vec<String>,
    /// `--dest-creds`, else the source's `--creds` when DEST is on the source's registry;
    /// `None`: the auth files.
    pub creds: Option<Credentials>,
    /// `--sign-key`: sign each manifest (and index) before it is tagged, attest the SBOM.
    pub sign_key: Option<Arc<crate::sign::PrivateKey>>,
    /// Blobs this process pushed (a batch mounts them into other repositories).
    pub push_log: Option<Arc<PushLog>>,
    /// A batch's shared registry clients.
    pub clients: Option<Arc<crate::transport::registry::ClientPool>>,
}

/// One image to write: its layers, config and manifest, and its SBOM.
pub struct ImageParts<'a> {
    pub layers: &'a [WrittenLayer],
    pub config: &'a [u8],
    pub config_digest: &'a str,
    pub manifest: &'a [u8],
    /// The SPDX document, written as a referrer of the manifest.
    pub sbom: Option<&'a [u8]>,
    /// The image's creation time (RFC 3339), the SBOM referrer's.
    pub created: &'a str,
    /// The same as seconds since the epoch (an archive's file times).
    pub mtime: u64,
}

/// What an earlier harden recorded on the destination: the source's digest, the recipe, and
/// the result's own digest.
pub type Recorded = (String, Option<String>, String);

/// A destination. `tagged`: under the destination's tag, else by digest only (a platform's
/// image behind an index).
pub trait Sink: Send + Sync {
    fn write_image<'a>(
        &'a self,
        image: &'a ImageParts<'a>,
        tagged: bool,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<()>>;
    /// The index of a multi-platform result, under the tag (its manifests are written).
    fn write_index(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<()>>;
    /// What the destination holds now, when pare wrote it (read from its annotations).
    fn recorded(&self) -> BoxFuture<'_, Option<Recorded>>;
    /// Make sure the result at `digest` is signed (a result found up to date).
    fn ensure_signed<'a>(&'a self, _digest: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether it holds several platforms behind an index.
    fn holds_an_index(&self) -> bool {
        true
    }
}

/// The sink for `dest`; refuses what the destination cannot hold (a digest to write to, a
/// signature outside a registry).
pub fn open(dest: &ImageRef, opts: SinkOptions) -> Result<Box<dyn Sink>> {
    if opts.sign_key.is_some() && !matches!(dest, ImageRef::Registry(_)) {
        return Err(Error::Usage(format!(
            "--sign-key: {dest} is not in a registry; cosign signatures are pushed beside the image in its repository"
        )));
    }
    Ok(match dest {
        ImageRef::Registry(r) => {
            if r.digest.is_some() {
                return Err(Error::Usage(format!(
                    "destination {dest} names a digest; name a tag instead"
                )));
            }
            let creds = crate::transport::auth::given_or_lookup(opts.creds.as_ref(), &r.registry)?;
            let client = match &opts.clients {
                Some(pool) => pool.get(&r.registry, &opts.insecure_registries, creds)?,
                None => RegistryClient::connect(&r.registry, &opts.insecure_registries, creds)?,
            };
            Box::new(RegistrySink {
                client,
                r: r.clone(),
                opts,
            })
        }
        ImageRef::Layout { dir, tag } => Box::new(LayoutSink {
            dir: dir.clone(),
            tag: tag.clone().unwrap_or_else(|| "latest".into()),
        }),
        ImageRef::Archive { path, reference } => Box::new(ArchiveSink {
            path: path.clone(),
            reference: reference.clone().filter(|r| !r.starts_with('@')),
        }),
    })
}

/// The source digest and recipe a manifest's annotations record.
pub fn recorded_in(manifest: &[u8]) -> Option<(String, Option<String>)> {
    let annotations = match crate::image::parse_manifest(manifest, None, "destination").ok()? {
        crate::image::ManifestDoc::Image(m) => m.annotations,
        crate::image::ManifestDoc::Index(i) => i.annotations,
    }?;
    Some((
        annotations.get(ANNOTATION_BASE_DIGEST).cloned()?,
        annotations
            .get(crate::image::ANNOTATION_PARE_RECIPE)
            .cloned(),
    ))
}

/// The artifact manifest of an image's SBOM.
fn sbom_manifest(image: &ImageParts, sbom: &[u8], manifest_digest: &str) -> Vec<u8> {
    let subject = Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: manifest_digest.to_string(),
        size: image.manifest.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    };
    crate::transport::referrer::artifact_manifest(
        crate::image::SPDX_JSON,
        crate::image::SPDX_JSON,
        sbom,
        &subject,
        image.created,
    )
}

struct RegistrySink {
    client: RegistryClient,
    r: RegistryRef,
    opts: SinkOptions,
}

impl RegistrySink {
    fn at(&self, tagged: bool, digest: &str) -> RegistryRef {
        if tagged {
            RegistryRef {
                tag: Some(self.r.tag_or_default().unwrap_or("latest").to_string()),
                digest: None,
                ..self.r.clone()
            }
        } else {
            RegistryRef {
                tag: None,
                digest: Some(digest.to_string()),
                ..self.r.clone()
            }
        }
    }

    async fn image(&self, image: &ImageParts<'_>, tagged: bool, progress: &Progress) -> Result<()> {
        let (client, r, log) = (&self.client, &self.r, self.opts.push_log.as_deref());
        let manifest_digest = crate::digest::sha256_bytes(image.manifest);
        let target = self.at(tagged, &manifest_digest);
        // The blobs side by side (the SBOM's too): only the manifests wait for them.
        let sbom = image
            .sbom
            .map(|sbom| (sbom_manifest(image, sbom, &manifest_digest), sbom));
        let sbom_blobs = async {
            match &sbom {
                Some((m, blob)) => {
                    crate::transport::referrer::push_blobs(client, r, m, blob.to_vec(), log).await
                }
                None => Ok(()),
            }
        };
        let layers = futures_util::future::try_join_all(
            image
                .layers
                .iter()
                .map(|l| client.put_blob_file(&target, &l.path, &l.digest, l.size, progress, log)),
        );
        tokio::try_join!(
            layers,
            client.put_blob_bytes(&target, image.config.to_vec(), image.config_digest, log),
            sbom_blobs,
        )?;
        if let Some(key) = &self.opts.sign_key {
            // Signed before it is tagged: a tag never names an unsigned result.
            client
                .put_manifest(
                    &self.at(false, &manifest_digest),
                    image.manifest.to_vec(),
                    OCI_MANIFEST,
                )
                .await?;
            crate::sign::sign(client, r, &manifest_digest, key).await?;
            if let Some(sbom) = image.sbom {
                let doc: serde_json::Value = serde_json::from_slice(sbom)
                    .map_err(|e| Error::Other(format!("internal: the SBOM: {e}")))?;
                crate::sign::attest_spdx(client, r, &manifest_digest, key, &doc).await?;
            }
        }
        client
            .put_manifest(&target, image.manifest.to_vec(), OCI_MANIFEST)
            .await?;
        if let Some(log) = log {
            for l in image.layers {
                log.record(&r.registry, &r.repository, &l.digest);
            }
            log.record(&r.registry, &r.repository, image.config_digest);
        }
        // The SBOM's manifest, after the image it describes.
        if let Some((manifest, _)) = sbom {
            crate::transport::referrer::push_manifest(client, r, manifest, &manifest_digest)
                .await?;
        }
        Ok(())
    }
}

impl Sink for RegistrySink {
    fn write_image<'a>(
        &'a self,
        image: &'a ImageParts<'a>,
        tagged: bool,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.image(image, tagged, progress))
    }

    fn write_index(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(key) = &self.opts.sign_key {
                let digest = crate::digest::sha256_bytes(&bytes);
                self.client
                    .put_manifest(&self.at(false, &digest), bytes.clone(), OCI_INDEX)
                    .await?;
                crate::sign::sign(&self.client, &self.r, &digest, key).await?;
            }
            self.client
                .put_manifest(&self.at(true, ""), bytes, OCI_INDEX)
                .await
        })
    }

    fn recorded(&self) -> BoxFuture<'_, Option<Recorded>> {
        Box::pin(recorded_at(&self.client, &self.r))
    }

    fn ensure_signed<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match &self.opts.sign_key {
                Some(key) => sign_existing(&self.client, &self.r, digest, key).await,
                None => Ok(()),
            }
        })
    }
}

/// Sign a result already in the registry: the manifest (or index) at `digest` and, for an
/// index, each platform manifest it lists.
pub async fn sign_existing(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
    key: &crate::sign::PrivateKey,
) -> Result<()> {
    let bytes = client.get_manifest_by_digest(r, digest).await?;
    if let Ok(idx) = serde_json::from_slice::<crate::image::Index>(&bytes)
        && idx.media_type.as_deref().is_some_and(|m| m == OCI_INDEX)
    {
        for m in &idx.manifests {
            crate::sign::sign(client, r, &m.digest, key).await?;
        }
    }
    crate::sign::sign(client, r, digest, key).await
}

struct LayoutSink {
    dir: std::path::PathBuf,
    tag: String,
}

impl Sink for LayoutSink {
    fn write_image<'a>(
        &'a self,
        image: &'a ImageParts<'a>,
        tagged: bool,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<()>> {
        let (dir, tag) = (self.dir.clone(), self.tag.clone());
        let layers: Vec<_> = (image.layers.iter())
            .map(|l| (l.path.clone(), l.digest.clone()))
            .collect();
        let (config, config_digest, manifest) = (
            image.config.to_vec(),
            image.config_digest.to_string(),
            image.manifest.to_vec(),
        );
        let manifest_digest = crate::digest::sha256_bytes(image.manifest);
        let sbom = image
            .sbom
            .map(|b| (b.to_vec(), sbom_manifest(image, b, &manifest_digest)));
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> Result<()> {
                let l = Layout::create(&dir)?;
                for (path, digest) in &layers {
                    l.put_blob_file(path, digest)?;
                }
                if l.put_blob_bytes(&config)? != config_digest {
                    return Err(Error::Other("internal: config digest changed".into()));
                }
                if tagged {
                    l.put_manifest(&manifest, OCI_MANIFEST, &tag)?;
                } else {
                    l.put_blob_bytes(&manifest)?;
                }
                // The SBOM: its artifact manifest listed in index.json, untagged, after the
                // image (as oras and cosign do in a layout).
                if let Some((sbom, sbom_manifest)) = sbom {
                    l.put_blob_bytes(crate::transport::referrer::EMPTY_JSON_BYTES)?;
                    l.put_blob_bytes(&sbom)?;
                    l.add_manifest(&sbom_manifest, OCI_MANIFEST, Some(crate::image::SPDX_JSON))?;
                }
                Ok(())
            })
            .await
            .map_err(Error::join)?
        })
    }

    fn write_index(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            Layout::create(&self.dir)?.put_manifest(&bytes, OCI_INDEX, &self.tag)?;
            Ok(())
        })
    }

    fn recorded(&self) -> BoxFuture<'_, Option<Recorded>> {
        Box::pin(async move {
            let l = Layout::open(&self.dir).ok()?;
            let top = l.find(Some(&self.tag)).ok()?;
            let bytes = l
                .read_blob(&top, crate::image::MAX_MANIFEST_BYTES as u64)
                .ok()?;
            recorded_in(&bytes).map(|(s, r)| (s, r, top.digest.clone()))
        })
    }
}

struct ArchiveSink {
    path: std::path::PathBuf,
    reference: Option<String>,
}

impl Sink for ArchiveSink {
    fn write_image<'a>(
        &'a self,
        image: &'a ImageParts<'a>,
        _tagged: bool,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<()>> {
        let (path, layers, config) = (
            self.path.clone(),
            image.layers.to_vec(),
            image.config.to_vec(),
        );
        let (reference, mtime) = (self.reference.clone(), image.mtime);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                crate::transport::archive::write(
                    &path,
                    reference.as_deref(),
                    &config,
                    &layers,
                    mtime,
                )
            })
            .await
            .map_err(Error::join)?
        })
    }

    fn write_index(&self, _bytes: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Err(Error::Usage("a docker-archive holds one platform".into())) })
    }

    fn recorded(&self) -> BoxFuture<'_, Option<Recorded>> {
        Box::pin(async { None })
    }

    fn holds_an_index(&self) -> bool {
        false
    }
}

/// What an earlier harden recorded at `r` (a registry tag), read with `client`.
pub async fn recorded_at(client: &RegistryClient, r: &RegistryRef) -> Option<Recorded> {
    let (bytes, digest) = client.get_manifest(r).await.ok()?;
    recorded_in(&bytes).map(|(s, r)| (s, r, digest))
}

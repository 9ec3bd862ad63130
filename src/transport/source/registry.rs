//! A registry repository as a source: the manifest (a platform's, from an index), the
//! signature, the config, then the layers (downloaded through the blob cache, or streamed).

use super::*;

pub(super) struct RegistrySource {
    pub(super) reference: ImageRef,
    pub(super) r: crate::reference::RegistryRef,
}

impl Source for RegistrySource {
    fn pull<'a>(&'a self, how: Pull<'a>) -> Fut<'a, Pulled> {
        let Pull {
            opts,
            work,
            progress,
            stream,
        } = how;
        Box::pin(pull_registry(
            &self.reference,
            &self.r,
            opts,
            work,
            progress,
            stream,
        ))
    }

    fn top<'a>(&'a self, opts: &'a SourceOptions) -> Fut<'a, Option<Top>> {
        Box::pin(async move {
            let (bytes, digest) = connect(&self.r.registry, opts)?
                .get_manifest(&self.r)
                .await?;
            Ok(Some((bytes, digest, None)))
        })
    }

    fn keep_original<'a>(
        &'a self,
        opts: &'a SourceOptions,
        backup_creds: Backup,
    ) -> Fut<'a, Replaced> {
        let r = &self.r;
        Box::pin(async move {
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
        })
    }

    fn still_signed<'a>(&'a self, opts: &'a SourceOptions, digest: &'a str) -> Fut<'a, bool> {
        let r = &self.r;
        Box::pin(async move {
            if opts.verify_keys.is_empty() {
                return Ok(true);
            }
            let client = connect(&r.registry, opts)?;
            Ok(crate::sign::verify(&client, r, digest, &opts.verify_keys)
                .await
                .is_ok())
        })
    }

    /// `--verify-key` for a multi-platform source, before any platform is built: the index's own
    /// signature, else a signature of every platform to be hardened (`platforms`; empty: every
    /// platform the index lists), so a source with one unsigned platform is refused before
    /// anything is pulled or pushed.
    fn verify_platforms<'a>(
        &'a self,
        opts: &'a SourceOptions,
        platforms: &'a [Platform],
    ) -> Fut<'a, ()> {
        let r = &self.r;
        Box::pin(async move {
            if opts.verify_keys.is_empty() {
                return Ok(());
            }
            let client = connect(&r.registry, opts)?;
            let (bytes, digest) = client.get_manifest(r).await?;
            let ManifestDoc::Index(idx) =
                image::parse_manifest(&bytes, None, &self.reference.to_string())?
            else {
                return Ok(());
            };
            let Err(index_err) = crate::sign::verify(&client, r, &digest, &opts.verify_keys).await
            else {
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
                if let Err(e) = crate::sign::verify(&client, r, &d.digest, &opts.verify_keys).await
                {
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
        })
    }
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
    // Owned descriptors: the jobs' futures borrow nothing per item (they stay `Send` inside
    // a boxed source future).
    let jobs = manifest
        .layers
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, d)| async move {
            let path = work.join(format!("layer-{i}"));
            match &opts.blobs {
                Some(cache) => cache.fetch(client, r, &d, &path, progress).await?,
                None => client.get_blob_to_file(r, &d, &path, progress).await?,
            }
            Ok::<_, Error>(LayerBlob {
                descriptor: d,
                path,
                growing: None,
                unverified: None,
            })
        });
    let layers: Vec<Result<LayerBlob>> =
        futures_util::stream::iter(jobs).buffered(3).collect().await;
    layers.into_iter().collect()
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
    // The config is fetched while the layers start downloading (one round trip less).
    let config_of = |client: &RegistryClient| {
        let (what, digest, manifest_digest) =
            (what.clone(), digest.clone(), manifest_digest.clone());
        let config = manifest.config.clone();
        let client = client.clone();
        let r = r.clone();
        async move {
            let bytes = client.get_blob_bytes(&r, &config, MAX_CONFIG_BYTES).await?;
            let config = parse_config(&bytes, &what)?;
            check_platform(opts, &config, &digest, &manifest_digest, &what)?;
            Ok::<_, Error>(config)
        }
    };
    let (layers, downloads, config) = if stream && opts.blobs.is_none() {
        let layers: Vec<LayerBlob> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| LayerBlob {
                descriptor: d.clone(),
                path: work.join(format!("layer-{i}")),
                growing: Some(Growing::new()),
                unverified: None,
            })
            .collect();
        let growing: Vec<Arc<Growing>> = layers.iter().filter_map(|l| l.growing.clone()).collect();
        let (todo, r, progress) = (layers.clone(), r.clone(), progress.clone());
        let finish = FinishAll(growing.clone());
        let config = config_of(&client);
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
        let config = match config.await {
            Ok(c) => c,
            Err(e) => {
                // Nothing is merged from layers of an image whose config fails.
                handle.abort();
                return Err(e);
            }
        };
        (layers, Some(Downloads { handle, growing }), config)
    } else {
        let (layers, config) = futures_util::future::try_join(
            fetch_layers(&client, r, &manifest, opts, work, progress),
            config_of(&client),
        )
        .await?;
        (layers, None, config)
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

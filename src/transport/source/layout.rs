//! An OCI image layout as a source: blobs read in place once their digests are checked.

use super::*;

pub(super) struct LayoutSource {
    pub(super) reference: ImageRef,
    pub(super) dir: std::path::PathBuf,
    pub(super) tag: Option<String>,
}

impl Source for LayoutSource {
    fn pull<'a>(&'a self, how: Pull<'a>) -> Fut<'a, Pulled> {
        let Pull { opts, .. } = how;
        Box::pin(pull_layout(
            &self.reference,
            &self.dir,
            self.tag.as_deref(),
            opts,
        ))
    }

    fn top<'a>(&'a self, _opts: &'a SourceOptions) -> Fut<'a, Option<Top>> {
        Box::pin(async move {
            let layout = Layout::open(&self.dir)?;
            let top = layout.find(self.tag.as_deref())?;
            let b = layout.read_blob(&top, image::MAX_MANIFEST_BYTES as u64)?;
            Ok(Some((b, top.digest.clone(), Some(top.media_type.clone()))))
        })
    }

    fn keep_original<'a>(&'a self, _opts: &'a SourceOptions, _backup: Backup) -> Fut<'a, Replaced> {
        Box::pin(async move {
            let entry = self.entry_tag();
            let d = Layout::open(&self.dir)?.find(self.tag.as_deref().or(entry.as_deref()))?;
            Ok(Replaced {
                digest: d.digest,
                backup: None,
            })
        })
    }

    fn entry_tag(&self) -> Option<String> {
        if self.tag.is_some() {
            return None;
        }
        Layout::open(&self.dir)
            .and_then(|l| l.find(None))
            .ok()
            .and_then(|d| {
                d.annotations
                    .and_then(|a| a.get(image::ANNOTATION_REF_NAME).cloned())
            })
    }
}

/// An OCI layout: blobs read in place once their digests are checked.
async fn pull_layout(
    reference: &ImageRef,
    dir: &Path,
    tag: Option<&str>,
    opts: &SourceOptions,
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
    // Each layer's digest is checked as the merge reads it (`Unverified`), not in a pass of
    // its own; a mismatch fails the merge.
    let mut layers = Vec::new();
    for d in &manifest.layers {
        layers.push(LayerBlob {
            descriptor: d.clone(),
            path: layout.blob_path(&d.digest)?,
            growing: None,
            unverified: Some(crate::digest::Unverified::new(&d.digest, d.size)),
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

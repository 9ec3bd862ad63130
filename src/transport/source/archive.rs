//! A `docker save` archive as a source: its layers extracted into the work directory.

use super::*;

pub(super) struct ArchiveSource {
    pub(super) reference: ImageRef,
    pub(super) path: std::path::PathBuf,
    /// A RepoTag, or `@N` (an index into manifest.json).
    pub(super) member: Option<String>,
}

impl Source for ArchiveSource {
    fn pull<'a>(&'a self, how: Pull<'a>) -> Fut<'a, Pulled> {
        let Pull { opts, work, .. } = how;
        Box::pin(pull_archive(
            &self.reference,
            &self.path,
            self.member.as_deref(),
            opts,
            work,
        ))
    }

    /// An archive records no digest of its own.
    fn top<'a>(&'a self, _opts: &'a SourceOptions) -> Fut<'a, Option<Top>> {
        Box::pin(async { Ok(None) })
    }

    fn keep_original<'a>(&'a self, _opts: &'a SourceOptions, _backup: Backup) -> Fut<'a, Replaced> {
        let path = &self.path;
        Box::pin(async move {
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
        })
    }
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

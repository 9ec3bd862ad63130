//! Registry source and sink, over `oci-client`: manifests, verified blob downloads to local
//! files, blob existence checks, streaming monolithic blob uploads, manifest push.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;

use crate::auth::Credentials;
use crate::digest::{Hasher, sha256_bytes};
use crate::error::{Error, Result};
use crate::image::{Descriptor, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::progress::Progress;
use crate::reference::{RegistryRef, host_without_port, is_loopback_host};

/// A connection to one registry with one set of credentials.
pub struct RegistryClient {
    client: oci_client::Client,
    pub registry: String,
    creds: Credentials,
}

/// Whether `registry` is spoken to over plain HTTP: loopback, or named by `--insecure-registry`
/// (as `host` or `host:port`).
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    is_loopback_host(registry)
        || insecure
            .iter()
            .any(|i| i == registry || i == host_without_port(registry))
}

impl RegistryClient {
    pub fn connect(registry: &str, insecure: &[String], creds: Credentials) -> Result<Self> {
        let config = ClientConfig {
            protocol: if plain_http(registry, insecure) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            user_agent: concat!("pare/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| Error::Registry {
            op: "connect to",
            target: registry.to_string(),
            message: e.to_string(),
        })?;
        Ok(RegistryClient {
            client,
            registry: registry.to_string(),
            creds,
        })
    }

    async fn prepare(&self, r: &oci_client::Reference) {
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.creds.auth)
            .await;
    }

    fn error(&self, op: &'static str, target: String, e: OciDistributionError) -> Error {
        let anonymous = matches!(self.creds.auth, RegistryAuth::Anonymous);
        let denied = |detail: &str| {
            if anonymous {
                format!(
                    "{detail}: the registry wants credentials (docker login, or --creds USER:PASS)"
                )
            } else {
                format!(
                    "{detail}: the registry refused the credentials from {}",
                    self.creds.source
                )
            }
        };
        let message = match e {
            OciDistributionError::UnauthorizedError { .. } => denied("unauthorized (401)"),
            OciDistributionError::AuthenticationFailure(m) => {
                denied(&format!("authentication failed ({m})"))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}", e.code))
                    .collect();
                let text: Vec<String> = envelope.errors.iter().map(|e| e.message.clone()).collect();
                let joined = codes.join(", ");
                if joined.contains("Denied") || joined.contains("Unauthorized") {
                    denied(&format!("access denied ({})", text.join("; ")))
                } else if joined.contains("Unknown") || joined.contains("NotFound") {
                    format!("not found ({})", text.join("; "))
                } else {
                    format!("{joined}: {}", text.join("; "))
                }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => "not found (404)".to_string(),
            OciDistributionError::ServerError { code: 403, .. } => denied("forbidden (403)"),
            OciDistributionError::ServerError { code, message, .. } => {
                let m = message.trim();
                let m = if m.len() > 200 {
                    &m[..m.floor_char_boundary(200)]
                } else {
                    m
                };
                format!("HTTP {code} {m}")
            }
            OciDistributionError::RequestError(e) => {
                let mut msg = format!("cannot reach {}", self.registry);
                let mut src: Option<&dyn std::error::Error> = Some(&e);
                let mut last = String::new();
                while let Some(s) = src {
                    last = s.to_string();
                    src = s.source();
                }
                if !last.is_empty() {
                    msg.push_str(&format!(": {last}"));
                }
                msg
            }
            other => other.to_string(),
        };
        Error::Registry {
            op,
            target,
            message,
        }
    }

    /// Fetch a manifest or index: `(bytes, digest)`. The digest is computed here from the
    /// bytes and checked against the reference's digest when it has one.
    pub async fn get_manifest(&self, r: &RegistryRef) -> Result<(Vec<u8>, String)> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&oref, &RegistryAuth::Anonymous, MANIFEST_ACCEPT)
            .await
            .map_err(|e| self.error("pull manifest", r.to_string(), e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::malformed(
                r.to_string(),
                "manifest larger than 4 MiB",
            ));
        }
        let digest = sha256_bytes(&bytes);
        if let Some(want) = &r.digest
            && &digest != want
        {
            return Err(Error::DigestMismatch {
                digest: want.clone(),
                actual: digest,
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Every repository of the registry whose name starts with `prefix`, through `/v2/_catalog`
    /// pages of `page` (following `last`).
    pub async fn catalog_all(&self, prefix: &str, page: usize) -> Result<Vec<String>> {
        let probe =
            oci_client::Reference::with_tag(self.registry.clone(), "x".into(), "latest".into());
        self.prepare(&probe).await;
        let all = all_pages(page, async |last: Option<String>| {
            self.client
                .catalog(&probe, &self.creds.auth, Some(page), last.as_deref())
                .await
                .map(|r| r.repositories)
                .map_err(|e| self.error("list repositories of", self.registry.clone(), e))
        })
        .await?;
        Ok(all.into_iter().filter(|r| r.starts_with(prefix)).collect())
    }

    /// Every tag of `repository`, through `/v2/NAME/tags/list` pages of `page`.
    pub async fn tags_all(&self, repository: &str, page: usize) -> Result<Vec<String>> {
        let r = oci_client::Reference::with_tag(
            self.registry.clone(),
            repository.into(),
            "latest".into(),
        );
        self.prepare(&r).await;
        all_pages(page, async |last: Option<String>| {
            self.client
                .list_tags(&r, &self.creds.auth, Some(page), last.as_deref())
                .await
                .map(|t| t.tags)
                .map_err(|e| {
                    self.error("list tags of", format!("{}/{repository}", self.registry), e)
                })
        })
        .await
    }

    /// Fetch a manifest by digest from the same repository.
    pub async fn get_manifest_by_digest(&self, r: &RegistryRef, digest: &str) -> Result<Vec<u8>> {
        let by_digest = RegistryRef {
            tag: None,
            digest: Some(digest.to_string()),
            ..r.clone()
        };
        Ok(self.get_manifest(&by_digest).await?.0)
    }

    /// Download a blob into `dest`, verifying size and digest as the bytes arrive. The file is
    /// never larger than the descriptor says.
    pub async fn get_blob_to_file(
        &self,
        r: &RegistryRef,
        desc: &Descriptor,
        dest: &Path,
        progress: &Progress,
    ) -> Result<()> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        let target = format!("{}/{}@{}", r.registry, r.repository, desc.digest);
        let mut stream = self
            .client
            .pull_blob_stream(&oref, desc.digest.as_str())
            .await
            .map_err(|e| self.error("pull blob", target.clone(), e))?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        let task = progress.task("pull", short_digest(&desc.digest), desc.size);
        let mut h = Hasher::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Registry {
                op: "pull blob",
                target: target.clone(),
                message: e.to_string(),
            })?;
            h.update(&chunk);
            if h.count() > desc.size {
                return Err(Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: h.count(),
                });
            }
            task.inc(chunk.len() as u64);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(dest, e))?;
        }
        file.flush().await.map_err(|e| Error::io(dest, e))?;
        task.finish();
        crate::digest::check(&desc.digest, desc.size, h)
    }

    /// Download a small blob (a config) into memory, bounded by `max` bytes.
    pub async fn get_blob_bytes(
        &self,
        r: &RegistryRef,
        desc: &Descriptor,
        max: u64,
    ) -> Result<Vec<u8>> {
        if desc.size > max {
            return Err(Error::malformed(
                r.to_string(),
                format!(
                    "blob {} is {} bytes, more than the {max} allowed",
                    desc.digest, desc.size
                ),
            ));
        }
        let oref = r.to_oci();
        self.prepare(&oref).await;
        let mut out = Vec::with_capacity(desc.size as usize);
        let target = format!("{}/{}@{}", r.registry, r.repository, desc.digest);
        let mut stream = self
            .client
            .pull_blob_stream(&oref, desc.digest.as_str())
            .await
            .map_err(|e| self.error("pull blob", target.clone(), e))?;
        let mut h = Hasher::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Registry {
                op: "pull blob",
                target: target.clone(),
                message: e.to_string(),
            })?;
            h.update(&chunk);
            if h.count() > desc.size {
                return Err(Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: h.count(),
                });
            }
            out.extend_from_slice(&chunk);
        }
        crate::digest::check(&desc.digest, desc.size, h)?;
        Ok(out)
    }

    pub async fn blob_exists(&self, r: &RegistryRef, digest: &str) -> Result<bool> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        self.client.blob_exists(&oref, digest).await.map_err(|e| {
            self.error(
                "check blob",
                format!("{}/{}@{digest}", r.registry, r.repository),
                e,
            )
        })
    }

    /// Upload a blob from a local file in one streaming PUT, unless the registry has it.
    /// Returns whether bytes were sent.
    pub async fn put_blob_file(
        &self,
        r: &RegistryRef,
        path: &Path,
        digest: &str,
        size: u64,
        progress: &Progress,
        log: Option<&PushLog>,
    ) -> Result<bool> {
        if self.blob_exists(r, digest).await? || self.try_mount(r, digest, log).await {
            return Ok(false);
        }
        let oref = r.to_oci();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        let task = progress.task("push", short_digest(digest), size);
        let done = task.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |c| {
            if let Ok(b) = &c {
                task.inc(b.len() as u64);
            }
            c.map_err(OciDistributionError::IoError)
        });
        self.client
            .push_blob_stream(&oref, stream, digest, Some(size))
            .await
            .map_err(|e| {
                self.error(
                    "push blob",
                    format!("{}/{}@{digest}", r.registry, r.repository),
                    e,
                )
            })?;
        done.finish();
        Ok(true)
    }

    /// Upload a small in-memory blob (a config) unless the registry has it.
    pub async fn put_blob_bytes(
        &self,
        r: &RegistryRef,
        data: Vec<u8>,
        digest: &str,
        log: Option<&PushLog>,
    ) -> Result<()> {
        if self.blob_exists(r, digest).await? || self.try_mount(r, digest, log).await {
            return Ok(());
        }
        let oref = r.to_oci();
        self.client
            .push_blob(&oref, data, digest)
            .await
            .map_err(|e| {
                self.error(
                    "push blob",
                    format!("{}/{}@{digest}", r.registry, r.repository),
                    e,
                )
            })?;
        Ok(())
    }

    /// Mount `digest` from another repository of this registry that `log` says holds it
    /// (`POST …/blobs/uploads/?mount=&from=`). Any answer but "mounted" means: upload it.
    async fn try_mount(&self, r: &RegistryRef, digest: &str, log: Option<&PushLog>) -> bool {
        let Some(log) = log else { return false };
        let Some(from) = log.holder(&self.registry, digest) else {
            return false;
        };
        if from == r.repository {
            return false;
        }
        let target = r.to_oci();
        let source =
            oci_client::Reference::with_digest(self.registry.clone(), from, digest.to_string());
        self.prepare(&target).await;
        match self.client.mount_blob(&target, &source, digest).await {
            Ok(()) => {
                log.mounted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!(%digest, error = %e, "mount declined; uploading");
                false
            }
        }
    }

    /// Push a manifest under `r`'s tag (or digest). Call this last.
    pub async fn put_manifest(
        &self,
        r: &RegistryRef,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<()> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        let ct = http::HeaderValue::from_str(media_type)
            .map_err(|e| Error::Other(format!("bad media type {media_type}: {e}")))?;
        self.client
            .push_manifest_raw(&oref, bytes, ct)
            .await
            .map_err(|e| self.error("push manifest", r.to_string(), e))?;
        Ok(())
    }
}

/// Where this process has put blobs, so a blob can be mounted across repositories of one
/// registry instead of uploaded again.
#[derive(Default)]
pub struct PushLog {
    holders: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
    /// Blobs mounted instead of uploaded.
    pub mounted: std::sync::atomic::AtomicU64,
}

impl PushLog {
    fn holder(&self, registry: &str, digest: &str) -> Option<String> {
        let m = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(registry.to_string(), digest.to_string())).cloned()
    }

    /// `repository` on `registry` now holds `digest`.
    pub fn record(&self, registry: &str, repository: &str, digest: &str) {
        let mut m = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((registry.to_string(), digest.to_string()))
            .or_insert_with(|| repository.to_string());
    }
}

/// Page through a list with `n` and `last` until a short page (bounded), sorted and deduplicated.
async fn all_pages(
    page: usize,
    mut fetch: impl AsyncFnMut(Option<String>) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..100_000 {
        let items = fetch(last.clone()).await?;
        let n = items.len();
        let next = items.last().cloned();
        out.extend(items);
        if n < page || next.is_none() || next == last {
            break;
        }
        last = next;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `sha256:0123456789ab` (12 hex digits), for progress and messages.
pub fn short_digest(d: &str) -> &str {
    let end = "sha256:".len() + 12;
    if d.len() >= end && d.is_char_boundary(end) {
        &d[..end]
    } else {
        d
    }
}

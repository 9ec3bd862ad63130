//! Blobs: verified downloads to local files (growing while they arrive), existence checks,
//! streamed uploads, cross-repository mounts, and the log of what was pushed.

use std::path::Path;

use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use tokio::io::AsyncWriteExt;

use super::*;
use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::progress::Progress;
use crate::reference::RegistryRef;

impl RegistryClient {
    /// Download a blob into `dest`, verifying size and digest as the bytes arrive. The file is
    /// never larger than the descriptor says.
    pub async fn get_blob_to_file(
        &self,
        r: &RegistryRef,
        desc: &Descriptor,
        dest: &Path,
        progress: &Progress,
    ) -> Result<()> {
        self.get_blob_growing(r, desc, dest, progress, None).await
    }

    /// [`Self::get_blob_to_file`], telling `growing` how far the file is written (so a reader
    /// can consume it meanwhile) and how the download ended. A cut connection is resumed where
    /// it stopped (a `Range` request; a registry that answers with the whole blob has the bytes
    /// already written skipped), so the file only grows and the digest checked is the digest
    /// of exactly the bytes a follower read.
    pub async fn get_blob_growing(
        &self,
        r: &RegistryRef,
        desc: &Descriptor,
        dest: &Path,
        progress: &Progress,
        growing: Option<&crate::growing::Growing>,
    ) -> Result<()> {
        let result = async {
            let mut file = tokio::fs::File::create(dest)
                .await
                .map_err(|e| Error::io(dest, e))?;
            let task = progress.task("pull", short_digest(&desc.digest), desc.size);
            let mut h = Hasher::default();
            let mut attempt = 1;
            loop {
                match self
                    .download_from(r, desc, dest, &mut file, &mut h, &task, growing)
                    .await
                {
                    Err((e, true)) if attempt < ATTEMPTS => {
                        tokio::time::sleep(retry_after(
                            &format!("pull blob {}", short_digest(&desc.digest)),
                            &mut attempt,
                            &e,
                        ))
                        .await;
                    }
                    other => break other.map_err(|(e, _)| e)?,
                }
            }
            task.finish();
            crate::digest::check(&desc.digest, desc.size, h)
        }
        .await;
        if let Some(g) = growing {
            g.finish(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        result
    }

    /// One request for the rest of a blob (all of it when nothing is written yet), appended
    /// to `file`; on failure, whether another try may help.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::transport::registry) async fn download_from(
        &self,
        r: &RegistryRef,
        desc: &Descriptor,
        dest: &Path,
        file: &mut tokio::fs::File,
        h: &mut Hasher,
        task: &crate::progress::Task,
        growing: Option<&crate::growing::Growing>,
    ) -> std::result::Result<(), (Error, bool)> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        let target = format!("{}/{}@{}", r.registry, r.repository, desc.digest);
        let failed = |e: OciDistributionError| {
            let again = transient(&e);
            (self.error("pull blob", target.clone(), e), again)
        };
        let have = h.count();
        // A whole blob is asked for as the range from byte 0 when it has any bytes: a
        // registry answering 206 sends the same bytes, and oci-client then leaves them
        // unhashed (`h` checks them), instead of hashing every byte a second time.
        let (mut stream, mut skip) = if have == 0 && desc.size == 0 {
            let s = self
                .client
                .pull_blob_stream(&oref, desc.digest.as_str())
                .await
                .map_err(failed)?;
            (s, 0u64)
        } else {
            match self
                .client
                .pull_blob_stream_partial(&oref, desc.digest.as_str(), have, None)
                .await
                .map_err(failed)?
            {
                oci_client::client::BlobResponse::Full(s) => (s, have),
                oci_client::client::BlobResponse::Partial(s) => (s, 0),
            }
        };
        let fatal = |e: Error| (e, false);
        // Bytes not yet written: the stream's small chunks are written (and shown to a
        // follower) a few hundred KiB at a time, not one blocking-pool trip each.
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
        while let Some(chunk) = stream.next().await {
            // A connection lost mid-body: worth another try, from what is written.
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    write_out(file, &mut pending, growing, h.count())
                        .await
                        .map_err(|e| fatal(Error::io(dest, e)))?;
                    return Err((
                        Error::Registry {
                            op: "pull blob",
                            target: target.clone(),
                            message: e.to_string(),
                        },
                        true,
                    ));
                }
            };
            let mut data = &chunk[..];
            if skip > 0 {
                let k = (skip as usize).min(data.len());
                data = &data[k..];
                skip -= k as u64;
            }
            if data.is_empty() {
                continue;
            }
            h.update(data);
            if h.count() > desc.size {
                return Err(fatal(Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: h.count(),
                }));
            }
            task.inc(data.len() as u64);
            pending.extend_from_slice(data);
            if pending.len() >= WRITE_BATCH {
                write_out(file, &mut pending, growing, h.count())
                    .await
                    .map_err(|e| fatal(Error::io(dest, e)))?;
            }
        }
        write_out(file, &mut pending, growing, h.count())
            .await
            .map_err(|e| fatal(Error::io(dest, e)))?;
        if skip > 0 {
            return Err(fatal(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: have - skip,
            }));
        }
        Ok(())
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
        let target = format!("{}/{}@{}", r.registry, r.repository, desc.digest);
        let mut attempt = 1;
        'again: loop {
            let mut out = Vec::with_capacity(desc.size as usize);
            let mut stream = self
                .retrying("pull blob", || {
                    self.client.pull_blob_stream(&oref, desc.digest.as_str())
                })
                .await
                .map_err(|e| self.error("pull blob", target.clone(), e))?;
            let mut h = Hasher::default();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // A body that breaks off: fetched again from the start.
                    Err(e) if attempt < ATTEMPTS => {
                        tokio::time::sleep(retry_after(
                            &format!("pull blob {}", short_digest(&desc.digest)),
                            &mut attempt,
                            &e,
                        ))
                        .await;
                        continue 'again;
                    }
                    Err(e) => {
                        return Err(Error::Registry {
                            op: "pull blob",
                            target: target.clone(),
                            message: e.to_string(),
                        });
                    }
                };
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
            return Ok(out);
        }
    }

    pub async fn blob_exists(&self, r: &RegistryRef, digest: &str) -> Result<bool> {
        let oref = r.to_oci();
        self.prepare(&oref).await;
        self.retrying("check blob", || self.client.blob_exists(&oref, digest))
            .await
            .map_err(|e| {
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
        if self.present(r, digest, log, size > SMALL_BLOB).await? {
            return Ok(false);
        }
        let oref = r.to_oci();
        // Opened here so a missing file is an I/O error, not a registry one.
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let task = progress.task("push", short_digest(digest), size);
        let done = task.clone();
        // Each try streams the file again from its start.
        self.retrying("push blob", || {
            let task = task.clone();
            let oref = &oref;
            async move {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(OciDistributionError::IoError)?;
                task.restart();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |c| {
                        if let Ok(b) = &c {
                            task.inc(b.len() as u64);
                        }
                        c.map_err(OciDistributionError::IoError)
                    });
                self.client
                    .push_blob_stream(oref, stream, digest, Some(size))
                    .await
            }
        })
        .await
        .map_err(|e| self.push_error(r, digest, e))?;
        done.finish();
        if let Some(log) = log {
            log.note(&self.registry, &r.repository, digest);
        }
        Ok(true)
    }

    /// Whether `r`'s repository holds `digest` already, or now (mounted from another one
    /// this process pushed it to). Asked in as few requests as it takes: none when this
    /// process put it there, a mount when another repository has it, then a HEAD when `ask`
    /// (a small blob is uploaded without asking: the upload costs what the question would).
    async fn present(
        &self,
        r: &RegistryRef,
        digest: &str,
        log: Option<&PushLog>,
        ask: bool,
    ) -> Result<bool> {
        if log.is_some_and(|l| l.holds(&self.registry, &r.repository, digest)) {
            return Ok(true);
        }
        let found =
            self.try_mount(r, digest, log).await || (ask && self.blob_exists(r, digest).await?);
        if found && let Some(log) = log {
            log.note(&self.registry, &r.repository, digest);
        }
        Ok(found)
    }

    /// Upload a small in-memory blob (a config) unless the registry has it.
    pub async fn put_blob_bytes(
        &self,
        r: &RegistryRef,
        data: Vec<u8>,
        digest: &str,
        log: Option<&PushLog>,
    ) -> Result<()> {
        if self
            .present(r, digest, log, data.len() as u64 > SMALL_BLOB)
            .await?
        {
            return Ok(());
        }
        let oref = r.to_oci();
        self.retrying("push blob", || {
            self.client.push_blob(&oref, data.clone(), digest)
        })
        .await
        .map_err(|e| self.push_error(r, digest, e))?;
        if let Some(log) = log {
            log.note(&self.registry, &r.repository, digest);
        }
        Ok(())
    }

    /// Mount `digest` from another repository of this registry that `log` says holds it
    /// (`POST …/blobs/uploads/?mount=&from=`). Any answer but "mounted" means: upload it.
    pub(in crate::transport::registry) async fn try_mount(
        &self,
        r: &RegistryRef,
        digest: &str,
        log: Option<&PushLog>,
    ) -> bool {
        let Some(log) = log else { return false };
        let Some(from) = log.holder(&self.registry, digest) else {
            return false;
        };
        if from == r.repository {
            return false;
        }
        match self.mount(r, &from, digest).await {
            Ok(true) => {
                log.mounted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Ok(false) => false,
            Err(e) => {
                let e = self.raw_error("mount blob", r.to_string(), e);
                tracing::debug!(%digest, error = %e, "mount failed; uploading");
                false
            }
        }
    }

    /// `POST /v2/R/blobs/uploads/?mount=D&from=F`: 201 is mounted; 202 is the registry
    /// declining (the spec's answer: an upload session opened instead, which is cancelled).
    /// oci-client's own call asks no pull scope on F (token registries then refuse) and takes
    /// 202 for an error.
    pub(in crate::transport::registry) async fn mount(
        &self,
        r: &RegistryRef,
        from: &str,
        digest: &str,
    ) -> RawResult<bool> {
        let mut url = self
            .url(&format!("v2/{}/blobs/uploads/", r.repository))
            .map_err(RawError::Other)?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let mut auth = self
            .raw_auth(&r.to_oci(), oci_client::RegistryOperation::Push)
            .await?;
        let res = self
            // Not retried: a lost answer may have opened an upload session; uploading instead
            // is cheap.
            .send_raw(&mut auth, false, |c| {
                c.post(url.clone())
                    .header(http::header::CONTENT_LENGTH, "0")
            })
            .await?;
        match res.status().as_u16() {
            201 => Ok(true),
            202 => {
                let location = res
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                if let Some(loc) = location
                    && loc.host_str() == url.host_str()
                    && loc.port_or_known_default() == url.port_or_known_default()
                {
                    let _ = self
                        .send_raw(&mut auth, false, |c| c.delete(loc.clone()))
                        .await;
                }
                Ok(false)
            }
            code => {
                let mut res = res;
                let body = read_capped(&mut res, 64 << 10).await.unwrap_or_default();
                Err(RawError::Status(
                    code,
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            }
        }
    }
}

/// Blobs up to this size are uploaded without asking whether the registry has them: what pare
/// makes small (a config, an SBOM, a result's own layer) is new almost always, and its upload
/// costs about what the question would.
const SMALL_BLOB: u64 = 256 << 10;

/// Where this process has put blobs, so a blob can be mounted across repositories of one
/// registry instead of uploaded again, and is not asked about again where it is.
#[derive(Default)]
pub struct PushLog {
    holders: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
    /// (registry, repository, digest) this process uploaded, mounted or found.
    present: std::sync::Mutex<std::collections::HashSet<(String, String, String)>>,
    /// Blobs mounted instead of uploaded.
    pub mounted: std::sync::atomic::AtomicU64,
}

impl PushLog {
    pub(in crate::transport::registry) fn holder(
        &self,
        registry: &str,
        digest: &str,
    ) -> Option<String> {
        let m = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(registry.to_string(), digest.to_string())).cloned()
    }

    /// Whether this process put (or found) `digest` in `repository` on `registry`.
    fn holds(&self, registry: &str, repository: &str, digest: &str) -> bool {
        let p = self.present.lock().unwrap_or_else(|p| p.into_inner());
        p.contains(&(registry.into(), repository.into(), digest.into()))
    }

    /// This process put (or found) `digest` in `repository` on `registry`.
    fn note(&self, registry: &str, repository: &str, digest: &str) {
        let mut p = self.present.lock().unwrap_or_else(|p| p.into_inner());
        p.insert((registry.into(), repository.into(), digest.into()));
    }

    /// `repository` on `registry` now holds `digest` (a manifest there names it: others may
    /// mount it from there).
    pub fn record(&self, registry: &str, repository: &str, digest: &str) {
        let mut m = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((registry.to_string(), digest.to_string()))
            .or_insert_with(|| repository.to_string());
    }
}

impl RegistryClient {
    /// A failed blob upload as pare's error, naming the blob.
    fn push_error(&self, r: &RegistryRef, digest: &str, e: OciDistributionError) -> Error {
        self.error(
            "push blob",
            format!("{}/{}@{digest}", r.registry, r.repository),
            e,
        )
    }
}

/// How many downloaded bytes are gathered before one write to the blob's file.
const WRITE_BATCH: usize = 256 * 1024;

/// Write the gathered bytes, flush them, and tell a follower how far the file now goes
/// (`count`: every byte hashed so far, all of them now written).
async fn write_out(
    file: &mut tokio::fs::File,
    pending: &mut Vec<u8>,
    growing: Option<&crate::growing::Growing>,
    count: u64,
) -> std::io::Result<()> {
    if !pending.is_empty() {
        file.write_all(pending).await?;
        pending.clear();
    }
    file.flush().await?;
    if let Some(g) = growing {
        g.advance(count);
    }
    Ok(())
}

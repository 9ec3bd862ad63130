//! Registry source and sink, over `oci-client`: manifests, verified blob downloads to local
//! files, blob existence checks, streaming monolithic blob uploads, manifest push.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;

use crate::digest::{Hasher, sha256_bytes};
use crate::error::{Error, Result};
use crate::image::{Descriptor, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::progress::Progress;
use crate::reference::{RegistryRef, host_without_port, is_loopback_host};
use crate::transport::auth::Credentials;

/// A connection to one registry with one set of credentials.
pub struct RegistryClient {
    client: oci_client::Client,
    /// For the list endpoints, whose `Link` headers oci-client does not expose; authorized
    /// with oci-client's own token exchange.
    http: reqwest::Client,
    scheme: &'static str,
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

/// Tries of a registry call that failed for a reason that may pass (connection refused or
/// reset, timeout, 429, 5xx): waits of 0.5, 1, 2 and 4 s in between.
const ATTEMPTS: u32 = 5;

static READ_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How long a request may go without progress before it fails (and is retried): `--timeout`,
/// 60 s by default. Set once, before the first client connects.
pub fn set_read_timeout(d: Duration) {
    let _ = READ_TIMEOUT.set(d);
}

fn read_timeout() -> Duration {
    *READ_TIMEOUT.get_or_init(|| Duration::from_secs(60))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << (attempt - 1).min(6))
}

/// Whether an oci-client error may pass on a second try.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(e) => transient_http(e),
        OciDistributionError::ServerError { code, .. } => transient_status(*code),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == oci_client::errors::OciErrorCode::Toomanyrequests),
        _ => false,
    }
}

/// One warning line for a retry: what failed, its root cause, and when the next try is.
fn note_retry(what: &str, attempt: u32, error: &dyn std::error::Error) {
    let mut cause = error.to_string();
    let mut src = error.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    tracing::warn!(
        "pare: warning: {what}: {cause}; try {} of {ATTEMPTS} in {:.1}s",
        attempt + 1,
        backoff(attempt).as_secs_f64()
    );
}

/// Whether a manifest push may pass on a second try: besides [`transient`], a registry that
/// says a blob just pushed is unknown or unreadable (the distribution registry rewrites a
/// blob's link in place, so a concurrent push of the same blob, such as another shard of a
/// batch on a shared base, can make it briefly unreadable).
fn transient_manifest(e: &OciDistributionError) -> bool {
    const RACY: [&str; 2] = ["MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID"];
    match e {
        OciDistributionError::ServerError {
            code: 400, message, ..
        } => RACY.iter().any(|c| message.contains(c)),
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestBlobUnknown
                    | oci_client::errors::OciErrorCode::DigestInvalid
            )
        }),
        _ => transient(e),
    }
}

fn transient_http(e: &reqwest::Error) -> bool {
    // A name that does not resolve, or a certificate that does not verify, will not on a
    // second try either.
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let m = s.to_string().to_ascii_lowercase();
        if m.contains("dns error")
            || m.contains("failed to lookup address")
            || m.contains("certificate")
            || m.contains("invalid peer")
        {
            return false;
        }
        src = s.source();
    }
    // A status turned into an error (oci-client's HEAD of a blob does that): as a status.
    if let Some(code) = e.status() {
        return transient_status(code.as_u16());
    }
    e.is_connect() || e.is_timeout() || e.is_body() || e.is_request()
}

fn transient_status(code: u16) -> bool {
    matches!(code, 408 | 429 | 500 | 502 | 503 | 504)
}

impl RegistryClient {
    /// Run `call` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
    /// Only idempotent calls, or uploads from a replayable source, go through here.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        call: F,
    ) -> std::result::Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.retrying_if(what, transient, call).await
    }

    /// [`Self::retrying`] with the caller's idea of a transient error.
    async fn retrying_if<T, F, Fut>(
        &self,
        what: &str,
        transient: fn(&OciDistributionError) -> bool,
        mut call: F,
    ) -> std::result::Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    note_retry(what, attempt, &e);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    pub fn connect(registry: &str, insecure: &[String], creds: Credentials) -> Result<Self> {
        let plain = plain_http(registry, insecure);
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(read_timeout()),
            user_agent: concat!("pare/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| Error::Registry {
            op: "connect to",
            target: registry.to_string(),
            message: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(read_timeout())
            .user_agent(concat!("pare/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Registry {
                op: "connect to",
                target: registry.to_string(),
                message: e.to_string(),
            })?;
        Ok(RegistryClient {
            client,
            http,
            scheme: if plain { "http" } else { "https" },
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
            OciDistributionError::ServerError { code: 401, .. } => denied("unauthorized (401)"),
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
            .retrying("pull manifest", || {
                self.client
                    .pull_manifest_raw(&oref, &RegistryAuth::Anonymous, MANIFEST_ACCEPT)
            })
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
    /// pages of `page`, following the registry's `Link` headers.
    pub async fn catalog_all(&self, prefix: &str, page: usize) -> Result<Vec<String>> {
        let probe =
            oci_client::Reference::with_tag(self.registry.clone(), "x".into(), "latest".into());
        let all = self
            .list_pages(&probe, "_catalog", "repositories", page)
            .await
            .map_err(|m| self.raw_error("list repositories of", self.registry.clone(), m))?;
        Ok(all.into_iter().filter(|r| r.starts_with(prefix)).collect())
    }

    /// Every tag of `repository`, through `/v2/NAME/tags/list` pages of `page`.
    pub async fn tags_all(&self, repository: &str, page: usize) -> Result<Vec<String>> {
        let r = oci_client::Reference::with_tag(
            self.registry.clone(),
            repository.into(),
            "latest".into(),
        );
        self.list_pages(&r, &format!("{repository}/tags/list"), "tags", page)
            .await
            .map_err(|m| {
                self.raw_error("list tags of", format!("{}/{repository}", self.registry), m)
            })
    }

    fn raw_error(&self, op: &'static str, target: String, e: RawError) -> Error {
        match e {
            RawError::Oci(e) => self.error(op, target, e),
            RawError::Http(e) => self.error(op, target, OciDistributionError::RequestError(e)),
            RawError::Status(code, body) => self.error(
                op,
                target,
                match serde_json::from_str(&body) {
                    Ok(envelope) if code != 401 => OciDistributionError::RegistryError {
                        envelope,
                        url: String::new(),
                    },
                    _ if code == 401 => {
                        OciDistributionError::UnauthorizedError { url: String::new() }
                    }
                    _ => OciDistributionError::ServerError {
                        code,
                        url: String::new(),
                        message: body,
                    },
                },
            ),
            RawError::Other(m) => Error::Registry {
                op,
                target,
                message: m,
            },
        }
    }

    /// GET `/v2/{path}?n={page}`, then each page the `Link: <…>; rel="next"` header names
    /// (OCI distribution-spec; `last=` when a full page comes without one), collecting the
    /// JSON array `key`; sorted and deduplicated.
    /// Bounded: 16 MiB per page, 10,000 pages, 1,000,000 names.
    async fn list_pages(
        &self,
        scope: &oci_client::Reference,
        path: &str,
        key: &str,
        page: usize,
    ) -> RawResult<Vec<String>> {
        const MAX_PAGES: usize = 10_000;
        const MAX_NAMES: usize = 1_000_000;
        const MAX_NAME_BYTES: usize = 64 << 20;
        let mut url = self
            .url(&format!("v2/{path}"))
            .map_err(|e| RawError::Other(format!("bad list address: {e}")))?;
        url.query_pairs_mut().append_pair("n", &page.to_string());
        let mut auth = self
            .raw_auth(scope, oci_client::RegistryOperation::Pull)
            .await?;
        let mut out: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut visited = std::collections::HashSet::new();
        let mut name_bytes = 0;
        for _ in 0..MAX_PAGES {
            visited.insert(url.clone());
            let (next, body) = self.list_page(&mut auth, &url).await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| RawError::Other(format!("the list is not JSON: {e}")))?;
            // A repository without tags may answer `"tags": null`.
            let names: Vec<String> = match v.get(key) {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| RawError::Other(format!("a non-string in \"{key}\"")))
                    })
                    .collect::<RawResult<_>>()?,
                Some(_) => return Err(RawError::Other(format!("\"{key}\" is not a list"))),
            };
            let got = names.len();
            let last = names.last().cloned();
            let mut new_names = false;
            for n in names {
                if seen.insert(n.clone()) {
                    new_names = true;
                    name_bytes += n.len();
                    out.push(n);
                }
            }
            if out.len() > MAX_NAMES || name_bytes > MAX_NAME_BYTES {
                return Err(RawError::Other(format!(
                    "more than {MAX_NAMES} names or {MAX_NAME_BYTES} bytes of them"
                )));
            }
            // The Link header names the next page (even after an empty one). Without one, a
            // full page that brought new names may come from a registry that pages by `last`
            // without saying so (the spec's older form): ask once more from the last name.
            let next = match (next, last) {
                (Some(n), _) => Some(n),
                (None, Some(last)) if got >= page && new_names => {
                    let mut u = url.clone();
                    let keep: Vec<(String, String)> = u
                        .query_pairs()
                        .filter(|(k, _)| k != "last")
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    u.query_pairs_mut()
                        .clear()
                        .extend_pairs(keep)
                        .append_pair("last", &last);
                    Some(u)
                }
                _ => None,
            };
            match next {
                Some(n) if !visited.contains(&n) => url = n,
                _ => {
                    out.sort();
                    return Ok(out);
                }
            }
        }
        Err(RawError::Other(format!("more than {MAX_PAGES} pages")))
    }

    /// One list page: its `rel="next"` link and its body (at most 16 MiB). A body that
    /// breaks off is fetched again, like a failed request.
    async fn list_page(
        &self,
        auth: &mut RawAuth,
        url: &reqwest::Url,
    ) -> RawResult<(Option<reqwest::Url>, Vec<u8>)> {
        const MAX_PAGE_BYTES: usize = 16 << 20;
        let mut attempt = 1;
        loop {
            let mut res = self
                .send_raw(auth, true, |c| {
                    c.get(url.clone()).header("Accept", "application/json")
                })
                .await?;
            let status = res.status();
            let next = next_link(res.headers().get_all(http::header::LINK), url)
                .map_err(RawError::Other)?;
            let body = read_capped(&mut res, MAX_PAGE_BYTES).await;
            let body = match body {
                Err(RawError::Http(e)) if attempt < ATTEMPTS => {
                    note_retry(url.path(), attempt, &e);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                b => b?,
            };
            if !status.is_success() {
                return Err(RawError::Status(
                    status.as_u16(),
                    String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned(),
                ));
            }
            return Ok((next, body));
        }
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
                        note_retry(
                            &format!("pull blob {}", short_digest(&desc.digest)),
                            attempt,
                            &e,
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
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
    async fn download_from(
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
        let (mut stream, mut skip) = if have == 0 {
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
        while let Some(chunk) = stream.next().await {
            // A connection lost mid-body: worth another try.
            let chunk = chunk.map_err(|e| {
                (
                    Error::Registry {
                        op: "pull blob",
                        target: target.clone(),
                        message: e.to_string(),
                    },
                    true,
                )
            })?;
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
            file.write_all(data)
                .await
                .map_err(|e| fatal(Error::io(dest, e)))?;
            if let Some(g) = growing {
                file.flush().await.map_err(|e| fatal(Error::io(dest, e)))?;
                g.advance(h.count());
            }
        }
        file.flush().await.map_err(|e| fatal(Error::io(dest, e)))?;
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
                        note_retry(
                            &format!("pull blob {}", short_digest(&desc.digest)),
                            attempt,
                            &e,
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
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
        if self.blob_exists(r, digest).await? || self.try_mount(r, digest, log).await {
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
        self.retrying("push blob", || {
            self.client.push_blob(&oref, data.clone(), digest)
        })
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
    async fn mount(&self, r: &RegistryRef, from: &str, digest: &str) -> RawResult<bool> {
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

    /// Whether the registry serves the OCI 1.1 referrers API (`GET /v2/NAME/referrers/D`
    /// answers with an index); without it, referrers go under the fallback tag.
    pub async fn referrers_api(&self, r: &RegistryRef, digest: &str) -> Result<bool> {
        Ok(self.referrers_index(r, digest).await?.is_some())
    }

    /// The referrers API's index for `digest` (bounded like a manifest), or `None` when the
    /// registry does not serve the API.
    pub async fn referrers_index(&self, r: &RegistryRef, digest: &str) -> Result<Option<Vec<u8>>> {
        let target = format!("{}/{}", r.registry, r.repository);
        let url = self
            .url(&format!("v2/{}/referrers/{digest}", r.repository))
            .map_err(|m| self.raw_error("list referrers of", target.clone(), RawError::Other(m)))?;
        let mut auth = self
            .raw_auth(&r.to_oci(), oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| self.raw_error("list referrers of", target.clone(), e))?;
        let res = self
            .send_raw(&mut auth, true, |c| {
                c.get(url.clone()).header("Accept", crate::image::OCI_INDEX)
            })
            .await
            .map_err(|e| self.raw_error("list referrers of", target.clone(), e))?;
        let index = res
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(crate::image::OCI_INDEX));
        if !(res.status().is_success() && index) {
            return Ok(None);
        }
        let mut body = Vec::new();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Registry {
                op: "list referrers of",
                target: target.clone(),
                message: e.to_string(),
            })?;
            if body.len() + chunk.len() > crate::image::MAX_MANIFEST_BYTES {
                return Err(Error::malformed(
                    target,
                    format!(
                        "referrers index larger than {} bytes",
                        crate::image::MAX_MANIFEST_BYTES
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// A manifest under `r`'s tag, or `None` when the tag does not exist.
    pub async fn get_manifest_opt(&self, r: &RegistryRef) -> Result<Option<Vec<u8>>> {
        match self.get_manifest(r).await {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(Error::Registry { message, .. }) if message.starts_with("not found") => Ok(None),
            Err(e) => Err(e),
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
        self.retrying_if("push manifest", transient_manifest, || {
            self.client
                .push_manifest_raw(&oref, bytes.clone(), ct.clone())
        })
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

/// A token from a registry's token server.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

/// Credentials for requests oci-client has no call for: a Bearer token, or Basic as given.
struct RawAuth {
    token: Option<String>,
    /// A token was fetched for a challenge's scope already (done once per call).
    rescoped: bool,
}

impl RegistryClient {
    /// `https://REGISTRY/` + `path` (`http` for plain-http registries), the API host resolved
    /// as oci-client resolves it (`docker.io` is `index.docker.io`).
    fn url(&self, path: &str) -> std::result::Result<reqwest::Url, String> {
        let probe =
            oci_client::Reference::with_tag(self.registry.clone(), "x".into(), "latest".into());
        reqwest::Url::parse(&format!("{}://{}/", self.scheme, probe.resolve_registry()))
            .and_then(|b| b.join(path))
            .map_err(|e| e.to_string())
    }

    /// oci-client's token exchange for `scope`'s repository and `op`.
    async fn raw_auth(
        &self,
        scope: &oci_client::Reference,
        op: oci_client::RegistryOperation,
    ) -> std::result::Result<RawAuth, RawError> {
        let token = self
            .retrying("authenticate", || {
                self.client.auth(scope, &self.creds.auth, op)
            })
            .await
            .map_err(RawError::Oci)?;
        Ok(RawAuth {
            token,
            rescoped: false,
        })
    }

    /// Send the request `build` makes, with `auth`. On a 401 whose Bearer challenge names a
    /// scope (the catalog's `registry:catalog:*`, a mount's pull on the source repository:
    /// scopes oci-client never asks for), fetch a token for that scope and send it again, once.
    async fn send_raw(
        &self,
        auth: &mut RawAuth,
        retry: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> RawResult<reqwest::Response> {
        let mut attempt = 1;
        let tries = if retry { ATTEMPTS } else { 1 };
        loop {
            let req = match (&auth.token, &self.creds.auth) {
                (Some(t), _) => build(&self.http).bearer_auth(t),
                (None, RegistryAuth::Basic(u, p)) => build(&self.http).basic_auth(u, Some(p)),
                (None, _) => build(&self.http),
            };
            let path = || {
                build(&self.http)
                    .build()
                    .map_or_else(|_| "request".to_string(), |r| r.url().path().to_string())
            };
            let res = match req.send().await {
                Err(e) if attempt < tries && transient_http(&e) => {
                    note_retry(&path(), attempt, &e);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                r => r.map_err(RawError::Http)?,
            };
            if attempt < tries && transient_status(res.status().as_u16()) {
                let status = std::io::Error::other(format!("HTTP {}", res.status()));
                note_retry(&path(), attempt, &status);
                // A registry that says how long to wait (429, 503) is waited on, up to a minute.
                let wait = res
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60)))
                    .unwrap_or_else(|| backoff(attempt));
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            if res.status() == reqwest::StatusCode::UNAUTHORIZED
                && !auth.rescoped
                && let Some(t) = self.token_for_challenge(res.headers()).await?
            {
                auth.rescoped = true;
                auth.token = Some(t);
                continue;
            }
            // A token that expires later (long pagination) may be renewed once more.
            if res.status() != reqwest::StatusCode::UNAUTHORIZED {
                auth.rescoped = false;
            }
            return Ok(res);
        }
    }
}

impl RegistryClient {
    /// When `headers` carry a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge,
    /// a token for that scope from the realm (with the Basic credentials, if any: the
    /// distribution token flow). `None` when there is no such challenge.
    async fn token_for_challenge(
        &self,
        headers: &http::HeaderMap,
    ) -> std::result::Result<Option<String>, RawError> {
        let Some(value) = headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let Some(challenge) = http_auth::ChallengeParser::new(value)
            .flatten()
            .find(|c| c.scheme.eq_ignore_ascii_case("Bearer"))
        else {
            return Ok(None);
        };
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        let (Some(realm), Some(scope)) = (param("realm"), param("scope")) else {
            return Ok(None);
        };
        let mut realm = reqwest::Url::parse(&realm)
            .map_err(|e| RawError::Other(format!("bad token realm {realm:?}: {e}")))?;
        // Credentials go to the realm only over https, unless the registry itself is plain
        // http (loopback or --insecure-registry).
        if realm.scheme() != "https" && self.scheme == "https" {
            return Err(RawError::Other(format!(
                "the token realm {realm} is not https; not sending credentials there"
            )));
        }
        {
            // A challenge may name several scopes, space-separated: one `scope` each.
            let mut q = realm.query_pairs_mut();
            for s in scope.split_ascii_whitespace() {
                q.append_pair("scope", s);
            }
            if let Some(service) = param("service") {
                q.append_pair("service", &service);
            }
        }
        let host = realm.host_str().unwrap_or("").to_string();
        let unreachable = |e: reqwest::Error| {
            let mut cause = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                cause = s.to_string();
                src = s.source();
            }
            RawError::Other(format!("cannot reach the token server {host}: {cause}"))
        };
        let mut attempt = 1;
        let (status, body) = loop {
            let mut req = self.http.get(realm.clone());
            if let RegistryAuth::Basic(u, p) = &self.creds.auth {
                req = req.basic_auth(u, Some(p));
            }
            let sent = match req.send().await {
                Ok(mut res) => {
                    let status = res.status();
                    read_capped(&mut res, 1 << 20).await.map(|b| (status, b))
                }
                Err(e) => Err(RawError::Http(e)),
            };
            match sent {
                Ok((status, _)) if attempt < ATTEMPTS && transient_status(status.as_u16()) => {
                    let e = std::io::Error::other(format!("HTTP {status}"));
                    note_retry(&format!("token from {host}"), attempt, &e);
                }
                Err(RawError::Http(e)) if attempt < ATTEMPTS && transient_http(&e) => {
                    note_retry(&format!("token from {host}"), attempt, &e);
                }
                Err(RawError::Http(e)) => return Err(unreachable(e)),
                other => break other?,
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        };
        if !status.is_success() {
            return Err(RawError::Oci(OciDistributionError::AuthenticationFailure(
                format!(
                    "token server: HTTP {status} for scope {scope}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
                ),
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| RawError::Other(format!("the token server's answer: {e}")))?;
        Ok(answer.token.or(answer.access_token))
    }
}

type RawResult<T> = std::result::Result<T, RawError>;

/// A response body, refused past `max` bytes.
async fn read_capped(res: &mut reqwest::Response, max: usize) -> RawResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(RawError::Http)? {
        if body.len() + chunk.len() > max {
            return Err(RawError::Other(format!(
                "an answer larger than {max} bytes from {}",
                res.url().host_str().unwrap_or("the registry")
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a request oci-client has no call for failed (turned into [`Error`] with the
/// registry's words by [`RegistryClient::raw_error`]).
enum RawError {
    Oci(OciDistributionError),
    Http(reqwest::Error),
    Status(u16, String),
    Other(String),
}

/// The `rel="next"` target of `Link` headers (RFC 8288), resolved against the page's URL.
/// A next page on another host or scheme is refused: credentials must not follow it there.
fn next_link<'a>(
    headers: impl IntoIterator<Item = &'a http::HeaderValue>,
    current: &reqwest::Url,
) -> std::result::Result<Option<reqwest::Url>, String> {
    for h in headers {
        let Ok(h) = h.to_str() else { continue };
        for link in h.split(',') {
            let mut parts = link.split(';');
            let target = parts.next().unwrap_or("").trim();
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|v| {
                    v.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            if !is_next {
                continue;
            }
            let next = current
                .join(target)
                .map_err(|e| format!("bad Link header {target:?}: {e}"))?;
            if next.scheme() != current.scheme()
                || next.host_str() != current.host_str()
                || next.port_or_known_default() != current.port_or_known_default()
            {
                return Err(format!(
                    "the Link header points the next page at another server ({next}); not followed"
                ));
            }
            return Ok(Some(next));
        }
    }
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server answering 500 to the first `count500` blob requests, 200 after.
    fn flaky_server(count500: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let status =
                    if first.contains("/blobs/") && h.fetch_add(1, Ordering::SeqCst) < count500 {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                let _ = (&s).write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        (port, hits)
    }

    #[tokio::test]
    async fn a_500_on_a_blob_check_is_retried() {
        let (port, hits) = flaky_server(2);
        let reg = format!("127.0.0.1:{port}");
        let client =
            RegistryClient::connect(&reg, &[], crate::transport::auth::Credentials::anonymous())
                .unwrap();
        let r: crate::reference::ImageRef = format!("{reg}/a/b:1").parse().unwrap();
        let crate::reference::ImageRef::Registry(r) = r else {
            unreachable!()
        };
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(client.blob_exists(&r, &d).await.unwrap());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn a_manifest_push_retries_a_blob_the_registry_cannot_read_yet() {
        let e = |code: u16, message: &str| OciDistributionError::ServerError {
            code,
            url: "http://r/v2/a/manifests/t".into(),
            message: message.into(),
        };
        let racy = e(
            400,
            r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#,
        );
        assert!(transient_manifest(&racy));
        assert!(!transient(&racy), "other calls do not retry a 400");
        assert!(transient_manifest(&e(
            400,
            r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}"#
        )));
        assert!(!transient_manifest(&e(
            400,
            r#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#
        )));
        assert!(transient_manifest(&e(503, "busy")));
        assert!(!transient_manifest(&e(401, "no")));
    }

    fn next(headers: &[&str], current: &str) -> std::result::Result<Option<String>, String> {
        let values: Vec<http::HeaderValue> = headers
            .iter()
            .map(|h| http::HeaderValue::from_str(h).unwrap())
            .collect();
        let cur = reqwest::Url::parse(current).unwrap();
        next_link(&values, &cur).map(|u| u.map(|u| u.to_string()))
    }

    #[test]
    fn link_headers_name_the_next_page() {
        let cur = "http://127.0.0.1:5000/v2/_catalog?n=5";
        // The distribution registry's form: a path relative to the host.
        assert_eq!(
            next(&[r#"</v2/_catalog?last=b&n=5>; rel="next""#], cur).unwrap(),
            Some("http://127.0.0.1:5000/v2/_catalog?last=b&n=5".into())
        );
        // Absolute on the same server, unquoted rel, several links in one header or several.
        assert_eq!(
            next(
                &[
                    r#"<http://127.0.0.1:5000/v2/_catalog?n=5>; rel="prev""#,
                    r#"<http://127.0.0.1:5000/v2/a/tags/list?last=x&n=5>;rel=next"#,
                ],
                cur
            )
            .unwrap(),
            Some("http://127.0.0.1:5000/v2/a/tags/list?last=x&n=5".into())
        );
        assert_eq!(
            next(&[r#"</first>; rel="first", </v2/x?c=1>; rel="next""#], cur).unwrap(),
            Some("http://127.0.0.1:5000/v2/x?c=1".into())
        );
        // No next: the last page.
        assert_eq!(next(&[], cur).unwrap(), None);
        assert_eq!(next(&[r#"</v2/y>; rel="prev""#], cur).unwrap(), None);
        // Another server (or scheme, or port) is refused, not followed with credentials.
        assert!(next(&[r#"<http://evil.example/v2/_catalog>; rel="next""#], cur).is_err());
        assert!(
            next(
                &[r#"<https://127.0.0.1:5000/v2/_catalog>; rel="next""#],
                cur
            )
            .is_err()
        );
        assert!(next(&[r#"<//127.0.0.1:6000/v2/_catalog>; rel="next""#], cur).is_err());
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn api_urls_resolve_docker_hub_like_oci_client() {
        let c = RegistryClient::connect("docker.io", &[], Credentials::anonymous()).unwrap();
        assert_eq!(
            c.url("v2/library/nginx/tags/list").unwrap().as_str(),
            "https://index.docker.io/v2/library/nginx/tags/list"
        );
        let c = RegistryClient::connect("127.0.0.1:5000", &[], Credentials::anonymous()).unwrap();
        assert_eq!(
            c.url("v2/_catalog").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/_catalog"
        );
    }
}

#[cfg(test)]
mod paging_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A loopback HTTP server answering `GET /v2/_catalog…` from `pages` (path+query → (body,
    /// Link header)); every request's path+query is recorded.
    fn serve(
        pages: Vec<(&'static str, &'static str, Option<&'static str>)>,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().unwrap());
                r.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(target.clone());
                let (body, link) = pages
                    .iter()
                    .find(|(p, _, _)| *p == target)
                    .map(|(_, b, l)| (*b, *l))
                    .unwrap_or((r#"{"repositories":[]}"#, None));
                let link = link.map(|l| format!("Link: {l}\r\n")).unwrap_or_default();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (addr, log)
    }

    /// How many catalog pages the server was asked for.
    fn catalog_requests(log: &std::sync::Mutex<Vec<String>>) -> usize {
        let log = log.lock().unwrap();
        log.iter().filter(|p| p.contains("_catalog")).count()
    }

    fn catalog(addr: &str, page: usize) -> Vec<String> {
        let c = RegistryClient::connect(addr, &[], Credentials::anonymous()).unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(c.catalog_all("", page))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_empty_page_with_a_link_is_followed() {
        let (addr, _) = serve(vec![
            (
                "/v2/_catalog?n=2",
                r#"{"repositories":["a","b"]}"#,
                Some(r#"</v2/_catalog?n=2&last=b>; rel="next""#),
            ),
            (
                "/v2/_catalog?n=2&last=b",
                r#"{"repositories":[]}"#,
                Some(r#"</v2/_catalog?n=2&last=b2>; rel="next""#),
            ),
            (
                "/v2/_catalog?n=2&last=b2",
                r#"{"repositories":["c"]}"#,
                None,
            ),
        ]);
        assert_eq!(catalog(&addr, 2), ["a", "b", "c"]);
    }

    #[test]
    fn a_full_page_without_a_link_falls_back_to_last() {
        let (addr, log) = serve(vec![
            ("/v2/_catalog?n=2", r#"{"repositories":["a","b"]}"#, None),
            (
                "/v2/_catalog?n=2&last=b",
                r#"{"repositories":["c","d"]}"#,
                None,
            ),
            ("/v2/_catalog?n=2&last=d", r#"{"repositories":[]}"#, None),
        ]);
        assert_eq!(catalog(&addr, 2), ["a", "b", "c", "d"]);
        assert_eq!(catalog_requests(&log), 3);
        // A registry that ignores `last` (the same page again) ends the listing.
        let (addr, log) = serve(vec![
            ("/v2/_catalog?n=2", r#"{"repositories":["a","b"]}"#, None),
            (
                "/v2/_catalog?n=2&last=b",
                r#"{"repositories":["a","b"]}"#,
                None,
            ),
        ]);
        assert_eq!(catalog(&addr, 2), ["a", "b"]);
        assert_eq!(catalog_requests(&log), 2);
    }

    #[test]
    fn a_link_loop_ends() {
        let (addr, log) = serve(vec![
            (
                "/v2/_catalog?n=2",
                r#"{"repositories":["a","b"]}"#,
                Some(r#"</v2/_catalog?n=2&last=b>; rel="next""#),
            ),
            (
                "/v2/_catalog?n=2&last=b",
                r#"{"repositories":["c"]}"#,
                Some(r#"</v2/_catalog?n=2>; rel="next""#),
            ),
        ]);
        assert_eq!(catalog(&addr, 2), ["a", "b", "c"]);
        assert_eq!(catalog_requests(&log), 2);
    }
}

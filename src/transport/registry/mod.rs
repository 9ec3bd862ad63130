//! Registry source and sink, over `oci-client`: manifests, verified blob downloads to local
//! files, blob existence checks, streaming monolithic blob uploads, manifest push.
//!
//! The client ([`RegistryClient`]) and its manifest calls here; transient faults retried in
//! `retry`; blob downloads and uploads in `blobs`; the list endpoints in `list` and the calls
//! oci-client has no API for, with their own token exchange, in `raw`.

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::digest::sha256_bytes;
use crate::error::{Error, Result};
use crate::image::{MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::reference::{RegistryRef, host_without_port, is_loopback_host};
use crate::transport::auth::Credentials;

mod blobs;
mod list;
mod raw;
mod retry;

pub use blobs::PushLog;
use raw::*;
pub use retry::set_read_timeout;
use retry::*;

/// A connection to one registry with one set of credentials (cheap to clone: the clones share
/// connections and tokens).
#[derive(Clone)]
pub struct RegistryClient {
    client: oci_client::Client,
    /// For the list endpoints, whose `Link` headers oci-client does not expose; authorized
    /// with oci-client's own token exchange.
    http: reqwest::Client,
    scheme: &'static str,
    pub registry: String,
    creds: Credentials,
    /// Anonymous, and the registry's `/v2/` answered 200: no credentials to present, so
    /// oci-client is given none (else it asks `/v2/` again before every request).
    open: std::sync::Arc<tokio::sync::OnceCell<bool>>,
    /// Manifests read, by repository and digest (immutable: a batch reads a tag's manifest to
    /// decide, then the pinned digest to harden, once).
    manifests: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    /// The registry answered that it serves no referrers API: not asked again (pushes use
    /// the tag scheme, reads look there).
    no_referrers: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Whether `registry` is spoken to over plain HTTP: loopback, or named by `--insecure-registry`
/// (as `host` or `host:port`).
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    is_loopback_host(registry)
        || insecure
            .iter()
            .any(|i| i == registry || i == host_without_port(registry))
}

/// Clients shared by the images of a batch: one per registry and credentials, so connections,
/// tokens and the `/v2/` answer are had once, not per image.
#[derive(Default)]
pub struct ClientPool {
    clients: std::sync::Mutex<std::collections::HashMap<String, RegistryClient>>,
}

impl ClientPool {
    /// The pool's client for `registry` with `creds`, connected on first use.
    pub fn get(
        &self,
        registry: &str,
        insecure: &[String],
        creds: Credentials,
    ) -> Result<RegistryClient> {
        let who = match &creds.auth {
            RegistryAuth::Anonymous => "-".to_string(),
            RegistryAuth::Basic(u, p) => format!("basic:{u}:{}", sha256_bytes(p.as_bytes())),
            RegistryAuth::Bearer(t) => format!("bearer:{}", sha256_bytes(t.as_bytes())),
        };
        let key = format!("{registry}|{}|{who}", plain_http(registry, insecure));
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let c = RegistryClient::connect(registry, insecure, creds)?;
        clients.insert(key, c.clone());
        Ok(c)
    }
}

impl RegistryClient {
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
        let failed = |message: String| Error::Registry {
            op: "connect to",
            target: registry.to_string(),
            message,
        };
        // Each client loads the system's root certificates when built: the two side by side.
        let (client, http) = std::thread::scope(|s| {
            let http = s.spawn(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(30))
                    .read_timeout(read_timeout())
                    .user_agent(concat!("pare/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
            });
            let client = oci_client::Client::try_from(config);
            (client, http.join())
        });
        let client = client.map_err(|e| failed(e.to_string()))?;
        let http = http
            .map_err(|_| failed("the HTTP client's thread panicked".into()))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(RegistryClient {
            client,
            http,
            scheme: if plain { "http" } else { "https" },
            registry: registry.to_string(),
            creds,
            open: Default::default(),
            manifests: Default::default(),
            no_referrers: Default::default(),
        })
    }

    async fn prepare(&self, r: &oci_client::Reference) {
        if self.is_open().await {
            return;
        }
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.creds.auth)
            .await;
    }

    /// Whether this client is anonymous and the registry asks no credentials (`GET /v2/` is
    /// 200), asked once. Any other answer, or none, leaves oci-client's token exchange on.
    async fn is_open(&self) -> bool {
        if !matches!(self.creds.auth, RegistryAuth::Anonymous) {
            return false;
        }
        *self
            .open
            .get_or_init(|| async {
                let url = format!("{}://{}/v2/", self.scheme, self.registry);
                matches!(self.http.get(url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK)
            })
            .await
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
        let key = |d: &str| format!("{}@{d}", r.repository);
        if let Some(d) = &r.digest
            && let Some(bytes) = self.cached_manifests().get(&key(d))
        {
            return Ok((bytes.clone(), d.clone()));
        }
        let bytes = if self.is_open().await {
            self.get_manifest_open(r).await?
        } else {
            let oref = r.to_oci();
            self.prepare(&oref).await;
            let (bytes, _) = self
                .retrying("pull manifest", || {
                    self.client
                        .pull_manifest_raw(&oref, &RegistryAuth::Anonymous, MANIFEST_ACCEPT)
                })
                .await
                .map_err(|e| self.error("pull manifest", r.to_string(), e))?;
            bytes.to_vec()
        };
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
        let mut cache = self.cached_manifests();
        // A bound on a long batch's memory: manifests are small, and a batch reads each twice
        // in a row.
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(key(&digest), bytes.clone());
        Ok((bytes, digest))
    }

    fn cached_manifests(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<u8>>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Whether the registry serves the OCI 1.1 referrers API (`GET /v2/NAME/referrers/D`
    /// answers with an index); without it, referrers go under the fallback tag.
    pub async fn referrers_api(&self, r: &RegistryRef, digest: &str) -> Result<bool> {
        Ok(self.referrers_index(r, digest).await?.is_some())
    }

    /// The referrers API's index for `digest` (bounded like a manifest), or `None` when the
    /// registry does not serve the API.
    pub async fn referrers_index(&self, r: &RegistryRef, digest: &str) -> Result<Option<Vec<u8>>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.no_referrers.load(Relaxed) {
            return Ok(None);
        }
        let target = format!("{}/{}", r.registry, r.repository);
        let path = format!("v2/{}/referrers/{digest}", r.repository);
        let res = self
            .raw_get(
                r,
                &path,
                crate::image::OCI_INDEX,
                "list referrers of",
                &target,
            )
            .await?;
        let index = res
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(crate::image::OCI_INDEX));
        if !(res.status().is_success() && index) {
            // 404 (or another page than an index): the API is not there. Other answers (a
            // denied or failing request) say nothing of the API: asked again next time.
            if res.status() == http::StatusCode::NOT_FOUND || res.status().is_success() {
                self.no_referrers.store(true, Relaxed);
            }
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

    /// `a`, `b` and a `Link` to the page after `b`.
    const FIRST_PAGE: (&str, &str, Option<&str>) = (
        "/v2/_catalog?n=2",
        r#"{"repositories":["a","b"]}"#,
        Some(r#"</v2/_catalog?n=2&last=b>; rel="next""#),
    );

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
            FIRST_PAGE,
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
            FIRST_PAGE,
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

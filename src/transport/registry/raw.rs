//! Requests oci-client has no call for (lists, mounts, referrers), with their own Bearer token
//! exchange for the challenge's scope.

use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use super::*;

/// A token from a registry's token server.
#[derive(serde::Deserialize)]
pub(super) struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

/// Credentials for requests oci-client has no call for: a Bearer token, or Basic as given.
pub(super) struct RawAuth {
    token: Option<String>,
    /// A token was fetched for a challenge's scope already (done once per call).
    rescoped: bool,
}

impl RegistryClient {
    /// `https://REGISTRY/` + `path` (`http` for plain-http registries), the API host resolved
    /// as oci-client resolves it (`docker.io` is `index.docker.io`).
    pub(in crate::transport::registry) fn url(
        &self,
        path: &str,
    ) -> std::result::Result<reqwest::Url, String> {
        let probe =
            oci_client::Reference::with_tag(self.registry.clone(), "x".into(), "latest".into());
        reqwest::Url::parse(&format!("{}://{}/", self.scheme, probe.resolve_registry()))
            .and_then(|b| b.join(path))
            .map_err(|e| e.to_string())
    }

    /// oci-client's token exchange for `scope`'s repository and `op`.
    pub(in crate::transport::registry) async fn raw_auth(
        &self,
        scope: &oci_client::Reference,
        op: oci_client::RegistryOperation,
    ) -> std::result::Result<RawAuth, RawError> {
        if self.is_open().await {
            return Ok(RawAuth {
                token: None,
                rescoped: false,
            });
        }
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
    pub(in crate::transport::registry) async fn send_raw(
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
                    tokio::time::sleep(retry_after(&path(), &mut attempt, &e)).await;
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
    pub(in crate::transport::registry) async fn token_for_challenge(
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

impl RegistryClient {
    /// GET `path` (under the registry's URL) with `accept`, authorized to pull from `r`'s
    /// repository: how the reads oci-client is not used for begin. Errors name `op` and
    /// `target`.
    pub(in crate::transport::registry) async fn raw_get(
        &self,
        r: &RegistryRef,
        path: &str,
        accept: &str,
        op: &'static str,
        target: &str,
    ) -> Result<reqwest::Response> {
        let fail = |e| self.raw_error(op, target.to_string(), e);
        let url = self.url(path).map_err(|m| fail(RawError::Other(m)))?;
        let mut auth = self
            .raw_auth(&r.to_oci(), oci_client::RegistryOperation::Pull)
            .await
            .map_err(fail)?;
        self.send_raw(&mut auth, true, |c| {
            c.get(url.clone()).header(http::header::ACCEPT, accept)
        })
        .await
        .map_err(fail)
    }

    /// A manifest from a registry that asks no credentials, in one request (oci-client asks
    /// `/v2/` before each of its own): what a batch's up-to-date check costs per tag.
    pub(in crate::transport::registry) async fn get_manifest_open(
        &self,
        r: &RegistryRef,
    ) -> Result<Vec<u8>> {
        let target = r.to_string();
        let reference = match &r.digest {
            Some(d) => d.as_str(),
            None => r.tag_or_default().unwrap_or("latest"),
        };
        let path = format!("v2/{}/manifests/{reference}", r.repository);
        let accept = MANIFEST_ACCEPT.join(", ");
        let mut res = self
            .raw_get(r, &path, &accept, "pull manifest", &target)
            .await?;
        let fail = |e| self.raw_error("pull manifest", target.clone(), e);
        let status = res.status();
        let body = read_capped(&mut res, MAX_MANIFEST_BYTES + 1)
            .await
            .map_err(fail)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(fail(RawError::Status(status.as_u16(), text)));
        }
        Ok(body)
    }
}

pub(super) type RawResult<T> = std::result::Result<T, RawError>;

/// A response body, refused past `max` bytes.
pub(super) async fn read_capped(res: &mut reqwest::Response, max: usize) -> RawResult<Vec<u8>> {
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
pub(super) enum RawError {
    Oci(OciDistributionError),
    Http(reqwest::Error),
    Status(u16, String),
    Other(String),
}

/// The `rel="next"` target of `Link` headers (RFC 8288), resolved against the page's URL.
/// A next page on another host or scheme is refused: credentials must not follow it there.
pub(super) fn next_link<'a>(
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

//! The list endpoints (`_catalog`, `tags/list`), page by page through their `Link` headers.

use oci_client::errors::OciDistributionError;

use super::*;
use crate::error::{Error, Result};

impl RegistryClient {
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

    pub(in crate::transport::registry) fn raw_error(
        &self,
        op: &'static str,
        target: String,
        e: RawError,
    ) -> Error {
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
    pub(in crate::transport::registry) async fn list_pages(
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
    pub(in crate::transport::registry) async fn list_page(
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
                    tokio::time::sleep(retry_after(url.path(), &mut attempt, &e)).await;
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
}

//! What a registry's announcement asks of pare: each event becomes a push to harden or a
//! skip with its reason. Pure functions of the request body (no network): the distribution
//! registry's notification envelope and Harbor's default webhook payload.

use serde::Deserialize;

use crate::image::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// A tagged image manifest (or index) pushed to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The registry's host (and port) as the event names it.
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// One event's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Push(Push),
    /// Not a job, and why (`what` names the event's target for the log).
    Skip {
        what: String,
        reason: &'static str,
    },
}

/// A body that is not an envelope of the kind the endpoint takes (answered 400).
#[derive(Debug, thiserror::Error)]
#[error("malformed event body: {0}")]
pub struct Malformed(String);

/// Largest body read from any endpoint.
pub const MAX_BODY: usize = 1 << 20;
/// Most events one body may carry.
const MAX_EVENTS: usize = 1000;

#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistEvent>,
}

#[derive(Deserialize)]
struct DistEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: DistTarget,
    #[serde(default)]
    request: DistRequest,
}

#[derive(Deserialize, Default)]
struct DistTarget {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
}

#[derive(Deserialize, Default)]
struct DistRequest {
    #[serde(default)]
    host: String,
}

/// The events of a distribution registry's notification envelope (`events[]`).
pub fn distribution(body: &[u8]) -> Result<Vec<Event>, Malformed> {
    let env: Envelope = parse(body)?;
    if env.events.len() > MAX_EVENTS {
        return Err(Malformed(format!("more than {MAX_EVENTS} events")));
    }
    Ok(env
        .events
        .into_iter()
        .map(|e| {
            let t = e.target;
            let what = format!("{}@{} ({})", t.repository, t.digest, e.action);
            if e.action != "push" {
                return Event::Skip {
                    what,
                    reason: "not a push",
                };
            }
            if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
                .contains(&t.media_type.as_str())
            {
                return Event::Skip {
                    what,
                    reason: "a blob, or a manifest of a kind pare does not harden",
                };
            }
            judge(Push {
                registry: e.request.host,
                repository: t.repository,
                tag: t.tag,
                digest: t.digest,
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct HarborPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event_data: HarborData,
}

#[derive(Deserialize, Default)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
    #[serde(default)]
    repository: HarborRepository,
}

#[derive(Deserialize, Default)]
struct HarborResource {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    resource_url: String,
}

#[derive(Deserialize, Default)]
struct HarborRepository {
    #[serde(default)]
    repo_full_name: String,
}

/// The artifacts of a Harbor webhook (`Default` payload format).
pub fn harbor(body: &[u8]) -> Result<Vec<Event>, Malformed> {
    let p: HarborPayload = parse(body)?;
    let resources = p.event_data.resources;
    if resources.len() > MAX_EVENTS {
        return Err(Malformed(format!("more than {MAX_EVENTS} resources")));
    }
    let repo = p.event_data.repository.repo_full_name;
    Ok(resources
        .into_iter()
        .map(|r| {
            let what = format!("{repo}@{} ({})", r.digest, p.kind);
            if p.kind != "PUSH_ARTIFACT" {
                return Event::Skip {
                    what,
                    reason: "not a push",
                };
            }
            // `resource_url` is `HOST/PROJECT/REPO:TAG` (or `@DIGEST`).
            let registry = r.resource_url.split('/').next().unwrap_or("").to_string();
            judge(Push {
                registry,
                repository: repo.clone(),
                tag: r.tag,
                digest: r.digest,
            })
        })
        .collect())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Malformed> {
    if body.len() > MAX_BODY {
        return Err(Malformed(format!("larger than {MAX_BODY} bytes")));
    }
    // An object: serde would also read a struct from an array (`[]` as every field's default).
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    if !v.is_object() {
        return Err(Malformed("not a JSON object".into()));
    }
    T::deserialize(v).map_err(|e| Malformed(e.to_string()))
}

/// The rules every source shares: a well-formed tagged push that pare did not write.
fn judge(p: Push) -> Event {
    let tag = if p.tag.is_empty() {
        String::new()
    } else {
        format!(":{}", p.tag)
    };
    let what = format!("{}/{}{tag}@{}", p.registry, p.repository, p.digest);
    let skip = |reason| Event::Skip {
        what: what.clone(),
        reason,
    };
    if p.tag.is_empty() {
        return skip("no tag (a push by digest, or an index's child)");
    }
    if is_result_tag(&p.tag) {
        return skip("a tag pare writes (a result, a backup, a signature or referrer)");
    }
    if crate::reference::validate_digest(&p.digest).is_err() || !crate::reference::valid_tag(&p.tag)
    {
        return skip("not a valid tag and sha256 digest");
    }
    if p.registry.is_empty() || p.repository.is_empty() {
        return skip("no registry host or repository");
    }
    Event::Push(p)
}

/// A tag pare writes: a result or referrer ([`crate::reference::is_output_tag`]), or the
/// in-place backup `TAG-original`.
pub fn is_result_tag(tag: &str) -> bool {
    crate::reference::is_output_tag(tag) || tag.ends_with("-original")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4f98543ac6f792c1352e8c5a0555601ab3fd3497810581606c36c7416c5ffe37";

    fn envelope(events: &[(&str, &str, &str)]) -> Vec<u8> {
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|(action, media, tag)| {
                serde_json::json!({
                    "id": "e1", "timestamp": "2026-12-06T00:00:00Z", "action": action,
                    "target": {"mediaType": media, "size": 1234, "digest": D, "length": 1234,
                               "repository": "team/api", "url": "http://r/v2/team/api/manifests/x",
                               "tag": tag},
                    "request": {"id": "r1", "addr": "10.0.0.1:5555", "host": "registry.example.com:5000",
                                "method": "PUT", "useragent": "skopeo"},
                    "actor": {}, "source": {"addr": "h:5000", "instanceID": "i"}
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
    }

    fn reasons(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .map(|e| match e {
                Event::Push(_) => "push",
                Event::Skip { reason, .. } => reason,
            })
            .collect()
    }

    #[test]
    fn a_tagged_manifest_push_is_the_one_job() {
        let body = envelope(&[
            ("push", OCI_MANIFEST, "1.4"),
            ("pull", OCI_MANIFEST, "1.4"),
            ("push", "application/vnd.oci.image.layer.v1.tar+gzip", ""),
            ("push", OCI_MANIFEST, ""),
            ("push", OCI_MANIFEST, "1.4-hardened"),
            ("push", OCI_MANIFEST, "1.4-original"),
            ("push", DOCKER_LIST, "multi"),
            ("mount", DOCKER_MANIFEST, "1.4"),
        ]);
        let got = distribution(&body).unwrap();
        assert_eq!(
            reasons(&got),
            vec![
                "push",
                "not a push",
                "a blob, or a manifest of a kind pare does not harden",
                "no tag (a push by digest, or an index's child)",
                "a tag pare writes (a result, a backup, a signature or referrer)",
                "a tag pare writes (a result, a backup, a signature or referrer)",
                "push",
                "not a push",
            ]
        );
        assert_eq!(
            got[0],
            Event::Push(Push {
                registry: "registry.example.com:5000".into(),
                repository: "team/api".into(),
                tag: "1.4".into(),
                digest: D.into(),
            })
        );
    }

    #[test]
    fn malformed_bodies_are_errors_and_odd_events_are_skips() {
        for bad in [&b"{"[..], b"[]", b"{\"events\": 3}", b"not json"] {
            assert!(
                distribution(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; MAX_BODY + 1];
        assert!(distribution(&big).is_err());
        // Well-formed but odd: a bad digest, an invalid tag, no host.
        let odd = serde_json::json!({"events": [
            {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": "md5:x",
             "repository": "a", "tag": "t"}, "request": {"host": "h"}},
            {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": D,
             "repository": "a", "tag": "bad tag"}, "request": {"host": "h"}},
            {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": D,
             "repository": "a", "tag": "t"}},
            {}
        ]});
        let got = distribution(&serde_json::to_vec(&odd).unwrap()).unwrap();
        assert_eq!(
            reasons(&got),
            vec![
                "not a valid tag and sha256 digest",
                "not a valid tag and sha256 digest",
                "no registry host or repository",
                "not a push",
            ]
        );
    }

    #[test]
    fn harbor_push_artifact() {
        let body = serde_json::json!({
            "type": "PUSH_ARTIFACT", "occur_at": 1586922308, "operator": "admin",
            "event_data": {
                "resources": [
                    {"digest": D, "tag": "latest",
                     "resource_url": "harbor.example.com/library/nginx:latest"},
                    {"digest": D, "tag": "latest-hardened",
                     "resource_url": "harbor.example.com/library/nginx:latest-hardened"}
                ],
                "repository": {"date_created": 1586922308, "name": "nginx",
                               "namespace": "library", "repo_full_name": "library/nginx",
                               "repo_type": "private"}
            }
        });
        let got = harbor(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            got[0],
            Event::Push(Push {
                registry: "harbor.example.com".into(),
                repository: "library/nginx".into(),
                tag: "latest".into(),
                digest: D.into(),
            })
        );
        assert!(matches!(got[1], Event::Skip { .. }));
        let pull = serde_json::json!({"type": "PULL_ARTIFACT", "event_data": body["event_data"]});
        let got = harbor(&serde_json::to_vec(&pull).unwrap()).unwrap();
        assert_eq!(reasons(&got), vec!["not a push", "not a push"]);
        assert!(harbor(b"{\"type\": 1}").is_err());
        assert!(harbor(b"[]").is_err());
        assert!(harbor(b"{}").is_err(), "no type");
        assert!(distribution(b"[[]]").is_err());
    }

    #[test]
    fn result_tags() {
        for t in [
            "1.4-hardened",
            "hardened-0123456789ab",
            "1.4-original",
            &format!("sha256-{}", "a".repeat(64)),
            &format!("sha256-{}.sig", "0".repeat(64)),
        ] {
            assert!(is_result_tag(t), "{t}");
        }
        for t in ["1.4", "latest", "sha256-abc", "hardening", "original"] {
            assert!(!is_result_tag(t), "{t}");
        }
    }
}

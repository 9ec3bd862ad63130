//! Signatures, key-based and offline as cosign makes them with `--key` (no transparency log):
//! verify that a source carries a valid signature by one of the given keys before anything of
//! it is pulled, and sign what pare pushes (and its SBOM, as an attestation) so a cluster's
//! admission policy accepts it.
//!
//! Where signatures are looked for: the tag scheme (`sha256-<hex>.sig` in the image's
//! repository) and, when the registry has the referrers API or keeps the referrers fallback tag
//! (`sha256-<hex>`), the referrers whose artifact type is cosign's signature type.

pub mod cosign;
pub mod keys;

use std::collections::BTreeMap;

pub use keys::{PrivateKey, PublicKey};

use crate::error::{Error, Result};
use crate::image::{Index, Manifest, OCI_MANIFEST};
use crate::reference::RegistryRef;
use crate::transport::registry::{RegistryClient, short_digest};

/// Most signature layers (and signature manifests) looked at for one digest.
const MAX_SIGNATURES: usize = 64;
/// Largest payload read.
const MAX_PAYLOAD: u64 = 64 << 10;

/// A signature that verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// The manifest (or index) digest the signature covers.
    pub digest: String,
    /// Which of the keys (0-based, in the order given).
    pub key: usize,
    /// `tag sha256-….sig` or `referrer sha256:…`.
    pub found_in: String,
    pub identity: String,
}

/// The repository a `docker-reference` names, normalised as pare normalises references
/// (`index.docker.io` → `docker.io`, `library/` for official images, `:443` dropped).
fn identity_repository(s: &str) -> Option<(String, String)> {
    let r: crate::reference::ImageRef = s.trim().parse().ok()?;
    let r = r.as_registry()?;
    let registry = r.registry.strip_suffix(":443").unwrap_or(&r.registry);
    Some((registry.to_string(), r.repository.clone()))
}

fn same_repository(identity: &str, r: &RegistryRef) -> bool {
    let want = (
        r.registry
            .strip_suffix(":443")
            .unwrap_or(&r.registry)
            .to_string(),
        r.repository.clone(),
    );
    identity_repository(identity).is_some_and(|have| have == want)
}

/// Signature manifests of `digest` in `r`'s repository: under the tag, and among its referrers.
async fn signature_manifests(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
) -> Result<Vec<(String, Manifest)>> {
    let mut out = Vec::new();
    let tag = cosign::tag(digest, "sig");
    let tagged = RegistryRef {
        tag: Some(tag.clone()),
        digest: None,
        ..r.clone()
    };
    if let Some(bytes) = client.get_manifest_opt(&tagged).await?
        && let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
    {
        out.push((format!("tag {tag}"), m));
    }
    for d in referrers(client, r, digest)
        .await?
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() == Some(cosign::SIG_ARTIFACT))
        .take(MAX_SIGNATURES)
    {
        let bytes = client.get_manifest_by_digest(r, &d.digest).await?;
        if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
            out.push((format!("referrer {}", short_digest(&d.digest)), m));
        }
    }
    Ok(out)
}

/// The referrers of `digest`: from the referrers API, else from the fallback tag's index.
async fn referrers(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
) -> Result<Vec<crate::image::Descriptor>> {
    let bytes = match client.referrers_index(r, digest).await? {
        Some(b) => Some(b),
        None => {
            let fallback = RegistryRef {
                tag: Some(crate::transport::referrer::fallback_tag(digest)),
                digest: None,
                ..r.clone()
            };
            client.get_manifest_opt(&fallback).await?
        }
    };
    Ok(bytes
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .map(|i| i.manifests)
        .unwrap_or_default())
}

/// Check that `digest` in `r`'s repository carries a signature by one of `keys` whose payload
/// names that digest and repository. `Err(Error::Signature)` with every reason otherwise.
pub async fn verify(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
    keys: &[PublicKey],
) -> Result<Verified> {
    let manifests = signature_manifests(client, r, digest).await?;
    let what = format!("{}/{}@{}", r.registry, r.repository, short_digest(digest));
    if manifests.is_empty() {
        return Err(Error::Signature(format!(
            "{what} is not signed (no tag {} and no signature referrer)",
            cosign::tag(digest, "sig")
        )));
    }
    let mut reasons: Vec<String> = Vec::new();
    let mut seen = 0;
    for (found_in, m) in &manifests {
        for layer in m
            .layers
            .iter()
            .filter(|l| l.media_type == cosign::SIMPLE_SIGNING)
        {
            seen += 1;
            if seen > MAX_SIGNATURES {
                break;
            }
            let Some(sig) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(cosign::SIGNATURE_ANNOTATION))
                .and_then(|s| keys::unb64(s))
            else {
                reasons.push("a signature layer without a readable signature".into());
                continue;
            };
            let payload = client.get_blob_bytes(r, layer, MAX_PAYLOAD).await?;
            let Some(key) = keys.iter().position(|k| k.verify(&payload, &sig)) else {
                reasons.push("a signature by another key".into());
                continue;
            };
            let p: cosign::Payload = match serde_json::from_slice(&payload) {
                Ok(p) => p,
                Err(e) => {
                    reasons.push(format!("a signed payload that is not cosign's ({e})"));
                    continue;
                }
            };
            if p.critical.image.docker_manifest_digest != digest {
                reasons.push(format!(
                    "a signature of another image ({})",
                    short_digest(&p.critical.image.docker_manifest_digest)
                ));
                continue;
            }
            let identity = &p.critical.identity.docker_reference;
            if !same_repository(identity, r) {
                reasons.push(format!(
                    "a signature naming another repository ({identity})"
                ));
                continue;
            }
            return Ok(Verified {
                digest: digest.to_string(),
                key,
                found_in: found_in.clone(),
                identity: identity.clone(),
            });
        }
    }
    reasons.sort();
    reasons.dedup();
    if reasons.is_empty() {
        reasons.push("no signature layer".into());
    }
    Err(Error::Signature(format!(
        "{what} has no valid signature by the given key{}: {}",
        if keys.len() == 1 { "" } else { "s" },
        reasons.join("; ")
    )))
}

/// Push `layer` (with `blob`) into the manifest under `tag`, keeping the layers already there
/// (other signers') unless one is the same blob with the same annotations (a re-run).
async fn append_layer(
    client: &RegistryClient,
    r: &RegistryRef,
    tag: &str,
    layer: crate::image::Descriptor,
    blob: Vec<u8>,
) -> Result<()> {
    let tagged = RegistryRef {
        tag: Some(tag.to_string()),
        digest: None,
        ..r.clone()
    };
    let mut layers: Vec<crate::image::Descriptor> = match client.get_manifest_opt(&tagged).await? {
        Some(bytes) => serde_json::from_slice::<Manifest>(&bytes)
            .map(|m| m.layers)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if layers
        .iter()
        .any(|l| l.digest == layer.digest && l.annotations == layer.annotations)
    {
        return Ok(());
    }
    client
        .put_blob_bytes(r, blob, &layer.digest.clone(), None)
        .await?;
    layers.push(layer);
    let (manifest, config) = cosign::manifest(layers);
    let m: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Error::Other(format!("internal: signature manifest: {e}")))?;
    client
        .put_blob_bytes(r, config, &m.config.digest, None)
        .await?;
    client.put_manifest(&tagged, manifest, OCI_MANIFEST).await
}

/// Sign `digest` (pushed to `r`'s repository) with `key`, the way `cosign sign --key` does
/// with `--tlog-upload=false`: the payload naming this repository and digest under the tag
/// `sha256-<hex>.sig` (and as a referrer where the registry serves the referrers API).
/// Signing is deterministic, so a re-run adds nothing.
pub async fn sign(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
    key: &PrivateKey,
) -> Result<()> {
    let payload =
        cosign::Payload::new(&cosign::identity_of(&r.registry, &r.repository), digest).to_bytes();
    let sig = key.sign(&payload);
    let layer = cosign::layer(
        cosign::SIMPLE_SIGNING,
        &payload,
        BTreeMap::from([(cosign::SIGNATURE_ANNOTATION.to_string(), keys::b64(&sig))]),
    );
    append_layer(
        client,
        r,
        &cosign::tag(digest, "sig"),
        layer.clone(),
        payload.clone(),
    )
    .await?;
    // Where the registry has the referrers API, also as an OCI 1.1 referrer of the signed
    // manifest (cosign's experimental mode), for verifiers that look there.
    if client.referrers_api(r, digest).await? {
        push_signature_referrer(client, r, digest, layer, payload).await?;
    }
    Ok(())
}

/// The signature as an artifact manifest whose subject is `digest`.
async fn push_signature_referrer(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
    layer: crate::image::Descriptor,
    payload: Vec<u8>,
) -> Result<()> {
    let subject_bytes = client.get_manifest_by_digest(r, digest).await?;
    let subject_type = serde_json::from_slice::<serde_json::Value>(&subject_bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let empty = crate::transport::referrer::EMPTY_JSON_BYTES;
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(cosign::SIG_ARTIFACT.into()),
        config: crate::image::Descriptor::of(crate::transport::referrer::EMPTY_JSON, empty),
        layers: vec![layer.clone()],
        subject: Some(Box::new(crate::image::Descriptor {
            media_type: subject_type,
            digest: digest.to_string(),
            size: subject_bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        })),
        annotations: None,
    };
    let bytes = serde_json::to_vec(&m).map_err(|e| Error::Other(e.to_string()))?;
    client
        .put_blob_bytes(r, empty.to_vec(), &m.config.digest, None)
        .await?;
    client
        .put_blob_bytes(r, payload, &layer.digest, None)
        .await?;
    let by_digest = RegistryRef {
        tag: None,
        digest: Some(crate::digest::sha256_bytes(&bytes)),
        ..r.clone()
    };
    client.put_manifest(&by_digest, bytes, OCI_MANIFEST).await
}

/// Attach `spdx` as a signed in-toto attestation of `digest`, under `sha256-<hex>.att`, as
/// `cosign attest --key --type spdxjson` does.
pub async fn attest_spdx(
    client: &RegistryClient,
    r: &RegistryRef,
    digest: &str,
    key: &PrivateKey,
    spdx: &serde_json::Value,
) -> Result<()> {
    let statement = cosign::spdx_statement(
        &cosign::identity_of(&r.registry, &r.repository),
        digest,
        spdx,
    );
    let sig = key.sign(&cosign::pae(cosign::IN_TOTO, &statement));
    let envelope = cosign::Envelope {
        payload_type: cosign::IN_TOTO.into(),
        payload: keys::b64(&statement),
        signatures: vec![cosign::EnvelopeSignature {
            keyid: String::new(),
            sig: keys::b64(&sig),
        }],
    };
    let blob = serde_json::to_vec(&envelope).map_err(|e| Error::Other(e.to_string()))?;
    let layer = cosign::layer(
        cosign::DSSE_ENVELOPE,
        &blob,
        BTreeMap::from([
            (cosign::SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                "predicateType".to_string(),
                cosign::SPDX_PREDICATE.to_string(),
            ),
        ]),
    );
    append_layer(client, r, &cosign::tag(digest, "att"), layer, blob).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_compare_as_repositories() {
        let r = |reg: &str, repo: &str| RegistryRef {
            registry: reg.into(),
            repository: repo.into(),
            tag: Some("1".into()),
            digest: None,
        };
        assert!(same_repository(
            "index.docker.io/library/nginx",
            &r("docker.io", "library/nginx")
        ));
        assert!(same_repository(
            "127.0.0.1:5000/team/app",
            &r("127.0.0.1:5000", "team/app")
        ));
        assert!(!same_repository(
            "127.0.0.1:5000/team/other",
            &r("127.0.0.1:5000", "team/app")
        ));
        assert!(!same_repository(
            "evil.example/team/app",
            &r("127.0.0.1:5000", "team/app")
        ));
        assert!(same_repository(
            "reg.example:443/team/app",
            &r("reg.example", "team/app")
        ));
    }
}

//! OCI 1.1 referrers: an artifact (the SBOM) pushed next to the image it describes, as a
//! manifest whose `subject` is that image. Registries with the referrers API
//! (`GET /v2/NAME/referrers/DIGEST`) index it themselves; for the others (Debian's
//! distribution registry 2.8) the client maintains the fallback tag `sha256-<hex>`: an index
//! listing the referrers of that digest (distribution-spec, "Referrers Tag Schema").

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::image::{Descriptor, Index, Manifest, OCI_INDEX, OCI_MANIFEST};
use crate::reference::RegistryRef;
use crate::transport::registry::{PushLog, RegistryClient};

/// The empty config of an artifact manifest (`{}`).
pub const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON_BYTES: &[u8] = b"{}";

/// The artifact manifest carrying `blob` (one layer of `media_type`) about `subject`.
pub fn artifact_manifest(
    artifact_type: &str,
    media_type: &str,
    blob: &[u8],
    subject: &Descriptor,
    created: &str,
) -> Vec<u8> {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(artifact_type.into()),
        config: Descriptor::of(EMPTY_JSON, EMPTY_JSON_BYTES),
        layers: vec![Descriptor::of(media_type, blob)],
        subject: Some(Box::new(Descriptor {
            media_type: subject.media_type.clone(),
            digest: subject.digest.clone(),
            size: subject.size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        })),
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.created".to_string(),
            created.to_string(),
        )])),
    };
    serde_json::to_vec(&m).expect("serialising a manifest")
}

/// The fallback tag for the referrers of `digest`.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Push an artifact about `subject` into `r`'s repository: blobs, the artifact manifest by
/// digest, then (when the registry has no referrers API) the fallback tag's index with it
/// added. Returns the artifact manifest's digest.
pub async fn push(
    client: &RegistryClient,
    r: &RegistryRef,
    manifest: Vec<u8>,
    blob: Vec<u8>,
    subject_digest: &str,
    log: Option<&PushLog>,
) -> Result<String> {
    push_blobs(client, r, &manifest, blob, log).await?;
    push_manifest(client, r, manifest, subject_digest).await
}

/// The artifact's blobs (its empty config and its one layer, side by side): [`push`]'s first
/// half, for a caller that uploads them beside other blobs.
pub async fn push_blobs(
    client: &RegistryClient,
    r: &RegistryRef,
    manifest: &[u8],
    blob: Vec<u8>,
    log: Option<&PushLog>,
) -> Result<()> {
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| Error::Other(format!("internal: artifact manifest: {e}")))?;
    tokio::try_join!(
        client.put_blob_bytes(r, EMPTY_JSON_BYTES.to_vec(), &m.config.digest, log),
        client.put_blob_bytes(r, blob, &m.layers[0].digest, log),
    )?;
    Ok(())
}

/// The artifact's manifest, its blobs being there, and its entry in the subject's referrers
/// (the API, else the `sha256-<hex>` tag's index): [`push`]'s second half.
pub async fn push_manifest(
    client: &RegistryClient,
    r: &RegistryRef,
    manifest: Vec<u8>,
    subject_digest: &str,
) -> Result<String> {
    let by_digest = |d: &str| RegistryRef {
        tag: None,
        digest: Some(d.to_string()),
        ..r.clone()
    };
    let m: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Error::Other(format!("internal: artifact manifest: {e}")))?;
    let digest = crate::digest::sha256_bytes(&manifest);
    client
        .put_manifest(&by_digest(&digest), manifest.clone(), OCI_MANIFEST)
        .await?;
    if client.referrers_api(r, subject_digest).await? {
        return Ok(digest);
    }
    // The tag scheme: read the index under the tag (if any), add this manifest, put it back.
    let tag_ref = RegistryRef {
        tag: Some(fallback_tag(subject_digest)),
        digest: None,
        ..r.clone()
    };
    let mut index = match client.get_manifest_opt(&tag_ref).await? {
        Some(bytes) => serde_json::from_slice::<Index>(&bytes).unwrap_or_else(|_| empty_index()),
        None => empty_index(),
    };
    index.manifests.retain(|d| d.digest != digest);
    index.manifests.push(Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: digest.clone(),
        size: manifest.len() as u64,
        urls: None,
        annotations: m.annotations.clone(),
        platform: None,
        artifact_type: m.artifact_type.clone(),
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::Other(e.to_string()))?;
    client.put_manifest(&tag_ref, bytes, OCI_INDEX).await?;
    Ok(digest)
}

fn empty_index() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        manifests: Vec::new(),
        annotations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_manifest_points_at_its_subject() {
        let subject = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 123,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        };
        let m = artifact_manifest(
            "application/spdx+json",
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
            &subject,
            "2024-01-01T00:00:00Z",
        );
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["artifactType"], "application/spdx+json");
        assert_eq!(v["subject"]["digest"], subject.digest);
        assert_eq!(v["subject"]["size"], 123);
        assert_eq!(v["config"]["mediaType"], EMPTY_JSON);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["layers"][0]["mediaType"], "application/spdx+json");
        assert_eq!(
            fallback_tag(&subject.digest),
            format!("sha256-{}", "a".repeat(64))
        );
    }
}

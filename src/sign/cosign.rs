//! cosign's published formats: the "simple signing" payload a signature covers, the tag a
//! signature (`.sig`) or an attestation (`.att`) of a manifest lives under, the manifest that
//! carries them (one layer per signature, the base64 signature in the layer annotation
//! `dev.cosignproject.cosign/signature`), and the in-toto statement in a DSSE envelope that an
//! attestation is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::image::{Descriptor, Manifest, OCI_CONFIG, OCI_MANIFEST};

/// Media type of a signature layer (its blob is the payload).
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Artifact type of a signature pushed as an OCI 1.1 referrer (cosign's experimental mode).
pub const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Media type of an attestation layer.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const IN_TOTO_STATEMENT: &str = "https://in-toto.io/Statement/v0.1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";

/// The tag cosign keeps `digest`'s signatures (`suffix` "sig") or attestations ("att") under.
pub fn tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replacen(':', "-", 1))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Payload {
    pub critical: Critical,
    /// cosign writes `null` when there are no annotations.
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Critical {
    pub identity: Identity,
    pub image: ImageId,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageId {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload cosign signs for `digest` in `repository` (registry/repository, no tag).
    pub fn new(repository: &str, digest: &str) -> Payload {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_string(),
                },
                image: ImageId {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: PAYLOAD_TYPE.to_string(),
            },
            optional: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising a payload")
    }
}

/// The repository name cosign writes in `docker-reference`: go-containerregistry's
/// `Context().Name()`, i.e. `index.docker.io/library/x` for Docker Hub.
pub fn identity_of(registry: &str, repository: &str) -> String {
    let registry = if registry == crate::reference::DOCKER_HUB {
        "index.docker.io"
    } else {
        registry
    };
    format!("{registry}/{repository}")
}

/// The config blob of a signature or attestation manifest, as cosign writes it: an image
/// config whose one diff_id is each layer's digest.
pub fn config(layers: &[Descriptor]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {}
    }))
    .expect("serialising a config")
}

/// A layer of a signature (or attestation) manifest: `blob` with its annotations.
pub fn layer(media_type: &str, blob: &[u8], annotations: BTreeMap<String, String>) -> Descriptor {
    let mut d = Descriptor::of(media_type, blob);
    d.annotations = Some(annotations);
    d
}

/// The manifest carrying `layers`, with its config blob.
pub fn manifest(layers: Vec<Descriptor>) -> (Vec<u8>, Vec<u8>) {
    let config_bytes = config(&layers);
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::of(OCI_CONFIG, &config_bytes),
        layers,
        subject: None,
        annotations: None,
    };
    (
        serde_json::to_vec(&m).expect("serialising a manifest"),
        config_bytes,
    )
}

/// DSSE's pre-authentication encoding: what an envelope's signature covers.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// base64
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// base64
    pub sig: String,
}

/// The in-toto statement of an SPDX document about `digest` in `repository`.
pub fn spdx_statement(repository: &str, digest: &str, spdx: &serde_json::Value) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    serde_json::to_vec(&serde_json::json!({
        "_type": IN_TOTO_STATEMENT,
        "predicateType": SPDX_PREDICATE,
        "subject": [{"name": repository, "digest": {"sha256": hex}}],
        "predicate": spdx
    }))
    .expect("serialising a statement")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_cosigns() {
        let p = Payload::new("reg.example/team/app", "sha256:abc");
        assert_eq!(
            String::from_utf8(p.to_bytes()).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"reg.example/team/app"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert_eq!(tag("sha256:abc", "sig"), "sha256-abc.sig");
        assert_eq!(
            identity_of("docker.io", "library/nginx"),
            "index.docker.io/library/nginx"
        );
        assert_eq!(
            String::from_utf8(pae("application/vnd.in-toto+json", b"{}")).unwrap(),
            "DSSEv1 28 application/vnd.in-toto+json 2 {}"
        );
    }
}

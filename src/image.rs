//! Manifests, indexes, descriptors and platforms (OCI image-spec and Docker v2 schema 2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reference::validate_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an SPDX 2.3 JSON document (an SBOM referrer's artifact and layer).
pub const SPDX_JSON: &str = "application/spdx+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// pare's version and the options that shape its output, on every manifest it writes: a batch
/// re-hardens an image made by another pare or with other options.
pub const ANNOTATION_PARE_RECIPE: &str = "dev.pare.recipe";

/// Manifests are small; anything bigger is hostile.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Configs are small too (the largest seen in the wild are a few hundred KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

pub const MANIFEST_ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux_amd64() -> Self {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::Usage(format!("--platform {s:?}: expected OS/ARCH[/VARIANT]"));
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(bad()),
        }
    }

    /// The variant with the defaults spelled out (arm64 is v8, arm is v7), as containerd's
    /// platform matcher normalises them.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            (_, v) => v,
        }
    }

    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.normalized_variant() == other.normalized_variant()
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// OCI 1.1: the type of an artifact a referrer descriptor points at.
    #[serde(
        default,
        rename = "artifactType",
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// The descriptor of `bytes` as a blob of `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: crate::digest::sha256_bytes(bytes),
            size: bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        validate_digest(&self.digest).map_err(|r| Error::malformed(what, r))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// OCI 1.1: what an artifact manifest carries.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// OCI 1.1: the manifest an artifact is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A parsed top-level manifest document.
#[derive(Debug, Clone)]
// One per pulled image, moved rarely: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ManifestDoc {
    Image(Manifest),
    Index(Index),
}

/// Parse a manifest or index, using the media type the registry or descriptor gave, falling back
/// to the document's own `mediaType` and shape.
pub fn parse_manifest(bytes: &[u8], media_type: Option<&str>, what: &str) -> Result<ManifestDoc> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Error::malformed(what, "manifest larger than 4 MiB"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    let mt = declared.or(media_type);
    let is_index = match mt {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) if v.get("manifests").is_none() && v.get("layers").is_none() => {
            return Err(Error::malformed(
                what,
                format!("unsupported manifest media type {other}"),
            ));
        }
        _ => v.get("manifests").is_some(),
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(Error::malformed(
            what,
            "schemaVersion is not 2 (Docker schema 1 images are not supported)",
        ));
    }
    if is_index {
        let idx: Index = serde_json::from_value(v).map_err(|e| Error::malformed(what, e))?;
        for d in &idx.manifests {
            d.validate(what)?;
        }
        Ok(ManifestDoc::Index(idx))
    } else {
        let m: Manifest = serde_json::from_value(v).map_err(|e| Error::malformed(what, e))?;
        m.config.validate(what)?;
        for l in &m.layers {
            l.validate(what)?;
            if !is_layer_media_type(&l.media_type) {
                return Err(Error::malformed(
                    what,
                    format!(
                        "layer {} has unsupported media type {}",
                        l.digest, l.media_type
                    ),
                ));
            }
        }
        Ok(ManifestDoc::Image(m))
    }
}

pub fn is_layer_media_type(mt: &str) -> bool {
    matches!(
        mt,
        OCI_LAYER_TAR | OCI_LAYER_GZIP | OCI_LAYER_ZSTD | DOCKER_LAYER_GZIP | DOCKER_LAYER_TAR
    ) || mt.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
        || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

/// Pick the manifest for `want` from an index. Attestation entries (`unknown/unknown`) never match.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| p.to_string())
                .collect();
            Error::Usage(format!(
                "the image has no {want} variant (it has: {}); pick one with --platform",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ))
        })
}

/// One layer blob, verified, on local disk (a source's output, the merge's input).
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub descriptor: Descriptor,
    pub path: std::path::PathBuf,
    /// Set while the blob is still downloading into `path` (`source::pull_streaming`).
    pub growing: Option<std::sync::Arc<crate::growing::Growing>>,
    /// Set when the blob's digest is still to be checked, by the first reader that reads it
    /// whole (an `oci:` layout's layers).
    pub unverified: Option<std::sync::Arc<crate::digest::Unverified>>,
}

/// A layer blob pare wrote: the file, its digest and size, and its uncompressed diff_id.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub path: std::path::PathBuf,
    /// sha256 of the compressed blob.
    pub digest: String,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub compression: LayerCompression,
}

/// How pare compresses the layer it writes (`--compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip (every runtime reads it), written as 1 MiB blocks compressed in parallel.
    #[default]
    Gzip,
    /// zstd (containerd ≥ 1.5, podman, Docker ≥ 23): faster to write and to read.
    Zstd,
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => OCI_LAYER_GZIP,
            LayerCompression::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

impl std::str::FromStr for LayerCompression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            _ => Err(Error::Other(format!(
                "unknown compression {s:?}: expected gzip or zstd"
            ))),
        }
    }
}

impl WrittenLayer {
    /// Its descriptor in a manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.compression.media_type().into(),
            digest: self.digest.clone(),
            size: self.size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// The written file as a layer to read back (verified as it was written).
    pub fn blob(&self) -> LayerBlob {
        LayerBlob {
            descriptor: self.descriptor(),
            path: self.path.clone(),
            growing: None,
            unverified: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_selects_platform() {
        let d = |arch: &str, hex: char| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
                hex.to_string().repeat(64)
            )
        };
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
            d("arm64", 'a'),
            d("amd64", 'b')
        );
        let ManifestDoc::Index(idx) = parse_manifest(doc.as_bytes(), None, "t").unwrap() else {
            panic!("not an index")
        };
        let sel = select_platform(&idx, &Platform::linux_amd64()).unwrap();
        assert!(sel.digest.ends_with("bbbb"));
        // arm64 without a variant is arm64/v8.
        let sel = select_platform(&idx, &Platform::parse("linux/arm64/v8").unwrap()).unwrap();
        assert!(sel.digest.ends_with("aaaa"));
        let e = select_platform(&idx, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(e.to_string().contains("linux/arm64, linux/amd64"), "{e}");
    }

    #[test]
    fn rejects_hostile_descriptors() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"sha256:../../etc/passwd","size":1}},"layers":[]}}"#
        );
        assert!(parse_manifest(m.as_bytes(), None, "t").is_err());
        assert!(parse_manifest(b"{\"schemaVersion\":1}", None, "t").is_err());
        assert!(parse_manifest(b"not json", None, "t").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }
}

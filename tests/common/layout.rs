//! OCI image layouts: writing images and indexes, reading them back, listing layer blobs.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};

use super::*;

/// What [`write_oci_layout`] produced.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
    /// Compressed layer blob digests, bottom first.
    pub layer_digests: Vec<String>,
    /// Uncompressed layer tar digests, bottom first.
    pub diff_ids: Vec<String>,
}

impl BuiltImage {
    /// An index/manifest descriptor for this image's manifest.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": self.manifest_digest,
            "size": self.manifest_size,
        })
    }
}

/// Write `bytes` as a blob of the layout at `dir`; returns its digest.
pub fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("mkdir {}: {e}", blobs.display()));
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("write blob {}: {e}", path.display()));
    digest
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs").join("sha256"))
        .unwrap_or_else(|e| panic!("create layout {}: {e}", dir.display()));
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
}

/// Write layers, config and manifest blobs of `spec` into the layout at `dir` without touching
/// `index.json`.
pub fn write_image_blobs(dir: &Path, spec: &ImageSpec) -> BuiltImage {
    init_layout(dir);
    let mut layers = WrittenLayers::default();
    for layer in &spec.layers {
        let (blob, media_type, diff_id) = layer.blob();
        layers.add(dir, &blob, media_type, diff_id);
    }
    write_config_and_manifest(dir, spec, layers)
}

/// Layer blobs written into a layout: their descriptors, digests and diff_ids, bottom first.
#[derive(Clone, Debug, Default)]
pub struct WrittenLayers {
    pub descriptors: Vec<Value>,
    pub digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl WrittenLayers {
    /// Write `blob` (of `media_type`, uncompressed digest `diff_id`) into the layout at `dir`.
    pub fn add(&mut self, dir: &Path, blob: &[u8], media_type: &str, diff_id: String) {
        let digest = write_blob(dir, blob);
        self.descriptors.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": blob.len(),
        }));
        self.digests.push(digest);
        self.diff_ids.push(diff_id);
    }
}

/// `spec`'s config for `layers` and the manifest naming them, written into the layout at
/// `dir` (its `index.json` untouched).
pub fn write_config_and_manifest(
    dir: &Path,
    spec: &ImageSpec,
    layers: WrittenLayers,
) -> BuiltImage {
    let config = spec.config_json(&layers.diff_ids);
    let config_bytes = serde_json::to_vec(&config).expect("serialise config");
    let config_digest = write_blob(dir, &config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layers.descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("serialise manifest");
    let manifest_digest = write_blob(dir, &manifest_bytes);
    BuiltImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        manifest,
        config_digest,
        config,
        layer_digests: layers.digests,
        diff_ids: layers.diff_ids,
    }
}

/// Point `tag` of the layout at `dir` to `descriptor` (replacing an older entry for the tag).
pub fn set_layout_tag(dir: &Path, tag: &str, descriptor: &Value) {
    init_layout(dir);
    let index_path = dir.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("parse {}: {e}", index_path.display())),
        Err(_) => json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [],
        }),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json has a manifests array");
    manifests.retain(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() != Some(tag));
    let mut descriptor = descriptor.clone();
    descriptor["annotations"] = json!({ ANNOTATION_REF_NAME: tag });
    manifests.push(descriptor);
    fs::write(
        &index_path,
        serde_json::to_vec_pretty(&index).expect("serialise index.json"),
    )
    .expect("write index.json");
}

/// Write `spec` as image `tag` of the OCI image layout at `dir` (created if needed; an existing
/// layout keeps its other tags).
pub fn write_oci_layout(dir: &Path, tag: &str, spec: &ImageSpec) -> BuiltImage {
    let built = write_image_blobs(dir, spec);
    let mut descriptor = built.descriptor();
    descriptor["platform"] = spec.platform();
    set_layout_tag(dir, tag, &descriptor);
    built
}

/// What [`write_oci_multiarch_layout`] produced.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index_digest: String,
    pub index: Value,
    pub images: Vec<BuiltImage>,
}

/// Write several images (one per platform, taken from each spec) behind one OCI image index,
/// tagged `tag`. Push with `push_layout_with_args(.., &["--all"])` to keep all platforms.
pub fn write_oci_multiarch_layout(dir: &Path, tag: &str, specs: &[ImageSpec]) -> BuiltIndex {
    let images: Vec<BuiltImage> = specs.iter().map(|s| write_image_blobs(dir, s)).collect();
    let manifests: Vec<Value> = images
        .iter()
        .zip(specs)
        .map(|(image, spec)| {
            let mut d = image.descriptor();
            d["platform"] = spec.platform();
            d
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).expect("serialise image index");
    let index_digest = write_blob(dir, &bytes);
    set_layout_tag(
        dir,
        tag,
        &json!({ "mediaType": MEDIA_TYPE_OCI_INDEX, "digest": index_digest, "size": bytes.len() }),
    );
    BuiltIndex {
        index_digest,
        index,
        images,
    }
}

/// Read and digest-verify a blob of the layout at `dir`.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("unsupported digest {digest}"));
    let path = dir.join("blobs").join("sha256").join(hex);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()));
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "blob {} is corrupt",
        path.display()
    );
    bytes
}

fn read_json_blob(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&read_blob(dir, digest))
        .unwrap_or_else(|e| panic!("blob {digest} is not JSON: {e}"))
}

/// One image read back from an OCI layout.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    /// Digest of the image index the tag pointed to, when it pointed to one.
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub manifest: Value,
    pub config: Value,
}

impl LayoutImage {
    /// The config's `config` object (Entrypoint, Cmd, Env, User, ...), or `Null`.
    pub fn exec_config(&self) -> &Value {
        &self.config["config"]
    }

    /// Layer descriptors of the manifest, bottom first.
    pub fn layers(&self) -> Vec<Value> {
        self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Read image `tag` of the OCI layout at `dir` (index.json -> [index ->] manifest -> config),
/// verifying blob digests. An image index is resolved to its linux/amd64 entry.
pub fn read_layout_image(dir: &Path, tag: &str) -> LayoutImage {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path).unwrap_or_else(|e| panic!("read {}: {e}", index_path.display())),
    )
    .unwrap_or_else(|e| panic!("parse {}: {e}", index_path.display()));
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() == Some(tag))
        .unwrap_or_else(|| panic!("tag {tag:?} not in {}: {index:#}", index_path.display()))
        .clone();
    let digest = entry["digest"]
        .as_str()
        .expect("descriptor digest")
        .to_string();
    let (index_digest, manifest_digest) = match entry["mediaType"].as_str() {
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST) => {
            let image_index = read_json_blob(dir, &digest);
            let chosen = image_index["manifests"]
                .as_array()
                .and_then(|ms| {
                    ms.iter().find(|m| {
                        m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux"
                    })
                })
                .unwrap_or_else(|| panic!("no linux/amd64 manifest in {image_index:#}"));
            let manifest_digest = chosen["digest"].as_str().expect("digest").to_string();
            (Some(digest), manifest_digest)
        }
        _ => (None, digest),
    };
    let manifest = read_json_blob(dir, &manifest_digest);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("manifest without config digest: {manifest:#}"));
    let config = read_json_blob(dir, config_digest);
    LayoutImage {
        index_digest,
        manifest_digest,
        manifest,
        config,
    }
}

/// Metadata of one tar entry, as stored in a layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntryInfo {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link_target: Option<String>,
}

/// Decompress (gzip, zstd or plain, sniffed from the bytes) and list a layer blob.
pub fn list_layer_blob(blob: &[u8]) -> Vec<TarEntryInfo> {
    let tar_bytes: Vec<u8> = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip layer");
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(blob)
            .expect("zstd layer header")
            .read_to_end(&mut out)
            .expect("unzstd layer");
        out
    } else {
        blob.to_vec()
    };
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    archive
        .entries()
        .expect("read layer tar")
        .map(|entry| {
            let entry = entry.expect("layer tar entry");
            let header = entry.header();
            TarEntryInfo {
                path: entry
                    .path()
                    .expect("entry path")
                    .to_string_lossy()
                    .into_owned(),
                kind: header.entry_type(),
                mode: header.mode().expect("entry mode"),
                uid: header.uid().expect("entry uid"),
                gid: header.gid().expect("entry gid"),
                size: header.size().expect("entry size"),
                link_target: entry
                    .link_name()
                    .expect("entry link name")
                    .map(|l| l.to_string_lossy().into_owned()),
            }
        })
        .collect()
}

/// The string `field` of each object of the JSON array `array` (which must be one, with such
/// fields).
pub fn strings_of(array: &Value, field: &str) -> Vec<String> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[field].as_str().unwrap().to_string())
        .collect()
}

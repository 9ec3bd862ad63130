//! OCI image-layout directories (`oci:DIR[:TAG]`): read as a source, write as a sink.
//! Blob paths are built only from validated `sha256:<hex>` digests, never from image content.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::sha256_bytes;
use crate::error::{Error, Result};
use crate::image::{ANNOTATION_REF_NAME, Descriptor, Index, MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::reference::validate_digest;

pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Open an existing layout for reading.
    pub fn open(dir: &Path) -> Result<Self> {
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            return Err(Error::path(
                dir.display().to_string(),
                "not an OCI image layout (no oci-layout file)",
            ));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    /// Open for writing, creating the layout when it does not exist yet.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs").join("sha256")).map_err(|e| Error::io(dir, e))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").exists() {
            let idx = Index {
                schema_version: 2,
                media_type: Some(OCI_INDEX.into()),
                manifests: vec![],
                annotations: None,
            };
            write_atomic(&dir.join("index.json"), &to_json(&idx)?)?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(|r| Error::malformed(self.dir.display().to_string(), r))?;
        Ok(self
            .dir
            .join("blobs")
            .join("sha256")
            .join(&digest["sha256:".len()..]))
    }

    pub fn index(&self) -> Result<Index> {
        let p = self.dir.join("index.json");
        let bytes = read_bounded(&p, MAX_MANIFEST_BYTES as u64)?;
        let idx: Index = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed(p.display().to_string(), e))?;
        for d in &idx.manifests {
            d.validate(&p.display().to_string())?;
        }
        Ok(idx)
    }

    /// The descriptor named `tag` in `index.json`, or the only one when no tag is given.
    pub fn find(&self, tag: Option<&str>) -> Result<Descriptor> {
        let idx = self.index()?;
        let name = |d: &Descriptor| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .cloned()
        };
        match tag {
            Some(t) => idx
                .manifests
                .iter()
                .find(|d| name(d).as_deref() == Some(t))
                .cloned()
                .ok_or_else(|| {
                    let tags: Vec<String> = idx.manifests.iter().filter_map(name).collect();
                    Error::path(
                        format!("oci:{}:{t}", self.dir.display()),
                        format!(
                            "no such tag in index.json (tags: {})",
                            if tags.is_empty() {
                                "none".into()
                            } else {
                                tags.join(", ")
                            }
                        ),
                    )
                }),
            // Referrers (an SBOM listed untagged) are not images to pick.
            None => match idx
                .manifests
                .iter()
                .filter(|d| d.artifact_type.is_none())
                .cloned()
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] => Ok(one.clone()),
                [] => Err(Error::path(
                    format!("oci:{}", self.dir.display()),
                    "the layout holds no image",
                )),
                _ => Err(Error::path(
                    format!("oci:{}", self.dir.display()),
                    "the layout holds several images: name one with oci:DIR:TAG",
                )),
            },
        }
    }

    /// Read a small blob (manifest, config), verifying digest and size.
    pub fn read_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        if desc.size > max {
            return Err(Error::malformed(
                desc.digest.clone(),
                format!("blob is {} bytes, more than the {max} allowed", desc.size),
            ));
        }
        let p = self.blob_path(&desc.digest)?;
        let bytes = read_bounded(&p, max)?;
        let actual = sha256_bytes(&bytes);
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                digest: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Copy a blob into the layout (through a temp file and a rename), unless it is there.
    pub fn put_blob_file(&self, src: &Path, digest: &str) -> Result<bool> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(false);
        }
        let tmp = tempfile::NamedTempFile::new_in(self.dir.join("blobs").join("sha256"))
            .map_err(|e| Error::io(&self.dir, e))?;
        std::fs::copy(src, tmp.path()).map_err(|e| Error::io(src, e))?;
        tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        Ok(true)
    }

    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<String> {
        let digest = sha256_bytes(data);
        let dest = self.blob_path(&digest)?;
        if !dest.is_file() {
            write_atomic(&dest, data)?;
        }
        Ok(digest)
    }

    /// Store a manifest and point `tag` at it in `index.json` (written last, atomically).
    pub fn put_manifest(&self, bytes: &[u8], media_type: &str, tag: &str) -> Result<String> {
        let digest = self.put_blob_bytes(bytes)?;
        let mut idx = self.index()?;
        idx.manifests.retain(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .map(String::as_str)
                != Some(tag)
        });
        idx.manifests.push(Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            urls: None,
            annotations: Some([(ANNOTATION_REF_NAME.to_string(), tag.to_string())].into()),
            platform: None,
            artifact_type: None,
        });
        write_atomic(&self.dir.join("index.json"), &to_json(&idx)?)?;
        Ok(digest)
    }
}

impl Layout {
    /// Store a manifest and list it in `index.json` without a tag (a referrer: found through
    /// its `subject`), once.
    pub fn add_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        artifact_type: Option<&str>,
    ) -> Result<String> {
        let digest = self.put_blob_bytes(bytes)?;
        let mut idx = self.index()?;
        if idx.manifests.iter().any(|d| d.digest == digest) {
            return Ok(digest);
        }
        idx.manifests.push(Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: artifact_type.map(str::to_string),
        });
        write_atomic(&self.dir.join("index.json"), &to_json(&idx)?)?;
        Ok(digest)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(e.to_string()))
}

/// Read a whole file, refusing more than `max` bytes.
pub fn read_bounded(p: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(p, e))?;
    if out.len() as u64 > max {
        return Err(Error::path(
            p.display().to_string(),
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}

fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io(parent, e))?;
    tmp.write_all(data).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(&dir.path().join("lay")).unwrap();
        let d = l
            .put_manifest(b"{}", "application/vnd.oci.image.manifest.v1+json", "v1")
            .unwrap();
        l.put_manifest(b"{ }", "application/vnd.oci.image.manifest.v1+json", "v2")
            .unwrap();
        // Re-tagging replaces the old entry.
        let d1 = l
            .put_manifest(b"{  }", "application/vnd.oci.image.manifest.v1+json", "v1")
            .unwrap();
        let l = Layout::open(&dir.path().join("lay")).unwrap();
        assert_eq!(l.index().unwrap().manifests.len(), 2);
        let found = l.find(Some("v1")).unwrap();
        assert_eq!(found.digest, d1);
        assert_ne!(d, d1);
        assert_eq!(l.read_blob(&found, 100).unwrap(), b"{  }");
        assert!(l.find(Some("nope")).unwrap_err().to_string().contains("v1"));
        assert!(l.find(None).is_err());
        assert!(l.blob_path("sha256:../../x").is_err());
    }
}

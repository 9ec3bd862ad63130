//! The deterministic layer writer: entries in path order, fixed mtime, numeric owners, no
//! user/group names, no xattrs, gzip with a fixed header. diff_id (sha256 of the tar) and
//! digest (sha256 of the gzip) are computed while streaming to a file.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::plan::{Content, Plan};

#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub path: PathBuf,
    /// sha256 of the compressed blob.
    pub digest: String,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
}

impl WrittenLayer {
    /// Its descriptor in a manifest.
    pub fn descriptor(&self) -> crate::image::Descriptor {
        crate::image::Descriptor {
            media_type: crate::image::OCI_LAYER_GZIP.into(),
            digest: self.digest.clone(),
            size: self.size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }
}

/// Write the plan as a gzip'd tar at `out`. `files` maps canonical image paths to local copies.
pub fn write_layer(
    plan: &Plan,
    files: &HashMap<String, crate::rootfs::Local>,
    out: &Path,
    mtime: u64,
) -> Result<WrittenLayer> {
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let outer = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(outer, Compression::new(6));
    let inner = HashingWriter::new(gz);
    let mut tar = tar::Builder::new(inner);
    tar.mode(tar::HeaderMode::Deterministic);
    let werr = |e: io::Error| Error::io(out, e);
    for (path, e) in &plan.entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mode(e.mode);
        match &e.content {
            Content::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(werr)?;
            }
            Content::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, path, target).map_err(werr)?;
            }
            Content::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(b.len() as u64);
                tar.append_data(&mut h, path, &b[..]).map_err(werr)?;
            }
            Content::Image(src) => {
                let local = files
                    .get(src)
                    .ok_or_else(|| Error::Other(format!("internal: no bytes read for /{src}")))?;
                let f = local.open().map_err(|e| Error::io(&*local.path, e))?;
                let len = local.len;
                if len != e.size {
                    return Err(Error::Other(format!(
                        "internal: /{src} is {len} bytes, expected {}",
                        e.size
                    )));
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                tar.append_data(&mut h, path, f).map_err(werr)?;
            }
        }
    }
    let inner = tar.into_inner().map_err(werr)?;
    let (gz, diff_id, uncompressed_size) = inner.finish();
    let outer = gz.finish().map_err(werr)?;
    let (mut buf, digest, size) = outer.finish();
    buf.flush().map_err(werr)?;
    Ok(WrittenLayer {
        path: out.to_path_buf(),
        digest,
        size,
        diff_id,
        uncompressed_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Entry;

    fn plan() -> Plan {
        let mut p = Plan::default();
        let e = |content, mode| Entry {
            content,
            mode,
            uid: 0,
            gid: 0,
            size: 3,
            reason: String::new(),
            evidence: Vec::new(),
        };
        p.entries.insert("etc".into(), e(Content::Dir, 0o755));
        p.entries
            .insert("etc/x".into(), e(Content::Bytes(b"abc".to_vec()), 0o644));
        p.entries
            .insert("etc/y".into(), e(Content::Symlink("x".into()), 0o777));
        p.entries.insert(
            format!("long/{}", "n".repeat(150)),
            e(Content::Bytes(b"def".to_vec()), 0o600),
        );
        p
    }

    #[test]
    fn deterministic_and_readable() {
        let d = tempfile::tempdir().unwrap();
        let a = write_layer(&plan(), &HashMap::new(), &d.path().join("a"), 1_700_000_000).unwrap();
        let b = write_layer(&plan(), &HashMap::new(), &d.path().join("b"), 1_700_000_000).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        crate::digest::verify_file(&a.path, &a.digest, a.size).unwrap();
        let c = write_layer(&plan(), &HashMap::new(), &d.path().join("c"), 1).unwrap();
        assert_ne!(a.digest, c.digest, "mtime is part of the bytes");
        // Read it back with the rootfs merger.
        let mut fs = crate::rootfs::Rootfs::merge(vec![], None).unwrap();
        let (diff_id, n) = fs
            .apply_layer(0, crate::rootfs::open_layer(&a.path).unwrap())
            .unwrap();
        assert_eq!(diff_id, a.diff_id);
        assert_eq!(n, a.uncompressed_size);
        assert!(fs.get(&format!("long/{}", "n".repeat(150))).is_some());
        assert_eq!(
            fs.get("etc/y").unwrap().kind,
            crate::rootfs::Kind::Symlink("x".into())
        );
    }
}

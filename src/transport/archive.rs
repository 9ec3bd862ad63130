//! `docker-archive:FILE[:REF]`: the `docker save` / `docker load` tarball (`manifest.json`,
//! the config, one tar per layer, `repositories`), read as a source and written as a sink in
//! the layout skopeo writes. Names inside the archive are only looked up, never joined onto a
//! host path: layers are copied out under counter names.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Hasher, sha256_bytes};
use crate::error::{Error, Result};
use crate::image::LayerBlob;
use crate::image::WrittenLayer;
use crate::image::{Descriptor, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, OCI_LAYER_TAR};
use crate::rootfs::{normalize, open_layer};
use crate::targuard::TarGuard;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// What was read from an archive.
pub struct ArchiveImage {
    pub config_bytes: Vec<u8>,
    /// sha256 of the config (the image ID).
    pub config_digest: String,
    pub layers: Vec<LayerBlob>,
    pub repo_tags: Vec<String>,
}

struct Member {
    ordinal: usize,
    size: u64,
    link: Option<String>,
}

fn what(path: &Path) -> String {
    format!("docker-archive:{}", path.display())
}

/// Members by normalised name.
type Members = HashMap<String, Member>;

/// Each member of the archive with its ordinal, in one streaming pass.
fn for_each_member(
    path: &Path,
    mut f: impl FnMut(usize, &mut tar::Entry<'_, TarGuard<Box<dyn Read + Send>>>) -> Result<()>,
) -> Result<()> {
    let mut a = tar::Archive::new(TarGuard::new(open_layer(path)?));
    for (ordinal, e) in a
        .entries()
        .map_err(|e| Error::malformed(what(path), e))?
        .enumerate()
    {
        let mut e = e.map_err(|e| Error::malformed(what(path), e))?;
        f(ordinal, &mut e)?;
    }
    Ok(())
}

/// Every member of the archive by normalised name, and manifest.json (one streaming pass).
fn index(path: &Path) -> Result<(Members, Option<Vec<u8>>)> {
    let mut members = HashMap::new();
    let mut manifest = None;
    for_each_member(path, |ordinal, e| {
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(name) = normalize(&name) else {
            return Ok(());
        };
        let link = match e.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
            _ => None,
        };
        if name == "manifest.json" {
            let mut buf = Vec::new();
            (&mut *e)
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Error::malformed(what(path), e))?;
            if buf.len() > MAX_MANIFEST_BYTES {
                return Err(Error::malformed(
                    what(path),
                    "manifest.json larger than 4 MiB",
                ));
            }
            manifest = Some(buf);
        }
        members.insert(
            name,
            Member {
                ordinal,
                size: e.size(),
                link,
            },
        );
        Ok(())
    })?;
    Ok((members, manifest))
}

/// Follow links between members (layer.tar -> ../<id>.tar), relative to the member's directory.
fn resolve<'a>(
    members: &'a HashMap<String, Member>,
    name: &str,
    path: &Path,
) -> Result<(&'a Member, String)> {
    let mut cur = normalize(name).ok_or_else(|| {
        Error::malformed(what(path), format!("member {name:?} climbs out with .."))
    })?;
    for _ in 0..16 {
        let m = members
            .get(&cur)
            .ok_or_else(|| Error::malformed(what(path), format!("no member {cur:?}")))?;
        match &m.link {
            None => return Ok((m, cur)),
            Some(t) => {
                let base = cur.rfind('/').map_or("", |i| &cur[..i]);
                let joined = if t.starts_with('/') {
                    t.clone()
                } else {
                    format!("{base}/{t}")
                };
                cur = normalize(&joined).ok_or_else(|| {
                    Error::malformed(what(path), format!("link {t:?} climbs out with .."))
                })?;
            }
        }
    }
    Err(Error::malformed(
        what(path),
        format!("too many links from {name:?}"),
    ))
}

/// Read the image `reference` names (a RepoTag, or `@N`), or the only one.
pub fn read(path: &Path, reference: Option<&str>, work: &Path) -> Result<ArchiveImage> {
    let (members, manifest) = index(path)?;
    let manifest = manifest.ok_or_else(|| {
        Error::malformed(what(path), "no manifest.json (not a docker save archive)")
    })?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&manifest)
        .map_err(|e| Error::malformed(format!("{}: manifest.json", what(path)), e))?;
    let entry = match reference {
        Some(r) if r.starts_with('@') => {
            let i: usize = r[1..]
                .parse()
                .map_err(|_| Error::Usage(format!("{r:?}: expected @INDEX")))?;
            entries.get(i).cloned().ok_or_else(|| {
                Error::path(
                    what(path),
                    format!("no image {r} (it holds {})", entries.len()),
                )
            })?
        }
        Some(r) => {
            let want = normalize_tag(r);
            entries
                .iter()
                .find(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| normalize_tag(t) == want)
                })
                .cloned()
                .ok_or_else(|| {
                    let tags: Vec<String> = entries
                        .iter()
                        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
                        .collect();
                    Error::path(
                        what(path),
                        format!("no image tagged {r} (tags: {})", tags.join(", ")),
                    )
                })?
        }
        None => match entries.as_slice() {
            [one] => one.clone(),
            [] => return Err(Error::path(what(path), "the archive holds no image")),
            _ => {
                return Err(Error::path(
                    what(path),
                    "the archive holds several images: name one with docker-archive:FILE:REF",
                ));
            }
        },
    };
    // Which members to copy out, by ordinal.
    let (config_member, config_name) = resolve(&members, &entry.config, path)?;
    if config_member.size > MAX_CONFIG_BYTES {
        return Err(Error::malformed(what(path), "config larger than 16 MiB"));
    }
    let mut want: HashMap<usize, Vec<usize>> = HashMap::new(); // ordinal -> layer indexes
    for (i, l) in entry.layers.iter().enumerate() {
        let (m, _) = resolve(&members, l, path)?;
        want.entry(m.ordinal).or_default().push(i);
    }
    let mut config_bytes = None;
    let mut layers: Vec<Option<LayerBlob>> = vec![None; entry.layers.len()];
    for_each_member(path, |ordinal, e| {
        if ordinal == config_member.ordinal {
            let mut buf = Vec::new();
            (&mut *e)
                .take(MAX_CONFIG_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Error::malformed(what(path), e))?;
            config_bytes = Some(buf);
        } else if let Some(idxs) = want.get(&ordinal) {
            let local = work.join(format!("archive-layer-{ordinal}"));
            let mut f = std::fs::File::create(&local).map_err(|e| Error::io(&local, e))?;
            let mut h = Hasher::default();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = e
                    .read(&mut buf)
                    .map_err(|e| Error::malformed(what(path), e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                f.write_all(&buf[..n]).map_err(|e| Error::io(&local, e))?;
            }
            let (digest, size) = h.finish();
            for &i in idxs {
                layers[i] = Some(LayerBlob {
                    descriptor: Descriptor {
                        media_type: OCI_LAYER_TAR.into(),
                        digest: digest.clone(),
                        size,
                        urls: None,
                        annotations: None,
                        platform: None,
                        artifact_type: None,
                    },
                    path: local.clone(),
                    growing: None,
                    unverified: None,
                });
            }
        }
        Ok(())
    })?;
    let config_bytes = config_bytes
        .ok_or_else(|| Error::malformed(what(path), format!("config {config_name} vanished")))?;
    let config_digest = sha256_bytes(&config_bytes);
    // Classic archives name the config by its digest: check it when they do.
    if let Some(hex) = config_name
        .strip_suffix(".json")
        .map(|n| n.rsplit('/').next().unwrap_or(n))
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && config_digest != format!("sha256:{hex}")
    {
        return Err(Error::DigestMismatch {
            digest: format!("sha256:{hex}"),
            actual: config_digest,
        });
    }
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            l.ok_or_else(|| {
                Error::malformed(what(path), format!("layer {} vanished", entry.layers[i]))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ArchiveImage {
        config_bytes,
        config_digest,
        layers,
        repo_tags: entry.repo_tags.unwrap_or_default(),
    })
}

/// `app:1`, `docker.io/library/app:1` and `library/app:1` name the same image.
fn normalize_tag(t: &str) -> String {
    match crate::reference::parse(t) {
        Ok(crate::reference::ImageRef::Registry(r)) => format!(
            "{}/{}:{}",
            r.registry,
            r.repository,
            r.tag_or_default().unwrap_or("latest")
        ),
        _ => t.to_string(),
    }
}

/// Write a one-image archive (uncompressed layers, as `docker save` and skopeo write them),
/// through a temp file renamed into place.
pub fn write(
    path: &Path,
    reference: Option<&str>,
    config_bytes: &[u8],
    layers: &[WrittenLayer],
    mtime: u64,
) -> Result<()> {
    let top = layers
        .last()
        .ok_or_else(|| Error::Other("internal: an image without layers".into()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(&dir, e))?;
    let werr = |e: io::Error| Error::io(path, e);
    {
        let mut b = tar::Builder::new(io::BufWriter::new(tmp.as_file()));
        let mut add = |name: &str, size: u64, data: &mut dyn Read| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o444);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).map_err(werr)
        };
        let mut names = Vec::new();
        for layer in layers {
            let name = format!("{}.tar", &layer.diff_id["sha256:".len()..]);
            let mut tar = crate::rootfs::open_layer(&layer.path)?;
            add(&name, layer.uncompressed_size, &mut tar)?;
            names.push(name);
        }
        let config_name = format!("{}.json", &sha256_bytes(config_bytes)["sha256:".len()..]);
        add(
            &config_name,
            config_bytes.len() as u64,
            &mut &config_bytes[..],
        )?;
        let tag = reference.map(normalize_tag);
        let manifest = serde_json::to_vec(&[ManifestEntry {
            config: config_name,
            repo_tags: tag.clone().map(|t| vec![t]),
            layers: names,
        }])
        .map_err(|e| Error::Other(e.to_string()))?;
        add("manifest.json", manifest.len() as u64, &mut &manifest[..])?;
        if let Some(t) = tag
            && let Some((repo, tag)) = t.rsplit_once(':')
        {
            let repos = serde_json::json!({ repo: { tag: &top.diff_id["sha256:".len()..] } });
            let bytes = serde_json::to_vec(&repos).map_err(|e| Error::Other(e.to_string()))?;
            add("repositories", bytes.len() as u64, &mut &bytes[..])?;
        }
        b.into_inner().map_err(werr)?.flush().map_err(werr)?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

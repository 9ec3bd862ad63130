//! Layers built in memory for the tests here and elsewhere.

use std::io;
use std::path::Path;

use super::Rootfs;
use crate::image::LayerBlob;

/// A tar built in memory: (path, kind) with kind "d", "f:content", "l:target", "h:target".
pub fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, spec) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if *spec == "d" {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, path, io::empty()).unwrap();
        } else if let Some(c) = spec.strip_prefix("f:") {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(c.len() as u64);
            b.append_data(&mut h, path, c.as_bytes()).unwrap();
        } else if let Some(t) = spec.strip_prefix("l:") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, path, t).unwrap();
        } else if let Some(t) = spec.strip_prefix("h:") {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, t).unwrap();
        } else {
            panic!("bad spec {spec}");
        }
    }
    b.into_inner().unwrap()
}

/// The error applying `layers` gives (panics when they are accepted).
pub(crate) fn refusal(layers: &[Vec<u8>]) -> String {
    let mut fs = Rootfs::empty();
    for (i, l) in layers.iter().enumerate() {
        if let Err(e) = fs.apply_layer(i, &l[..]) {
            return e.to_string();
        }
    }
    panic!("accepted: {:?}", fs.nodes.keys().collect::<Vec<_>>());
}

pub(crate) fn merged(layers: &[Vec<u8>]) -> Rootfs {
    let mut fs = Rootfs::empty();
    for (i, l) in layers.iter().enumerate() {
        fs.apply_layer(i, &l[..]).unwrap();
    }
    fs
}

pub(crate) fn paths(fs: &Rootfs) -> Vec<&str> {
    fs.nodes
        .keys()
        .filter(|k| !k.is_empty())
        .map(String::as_str)
        .collect()
}

/// `bytes` written to `dir/name` as an uncompressed layer blob.
pub(crate) fn blob_at(dir: &Path, name: &str, bytes: &[u8]) -> LayerBlob {
    let lp = dir.join(name);
    std::fs::write(&lp, bytes).unwrap();
    LayerBlob {
        descriptor: crate::image::Descriptor::of(crate::image::OCI_LAYER_TAR, bytes),
        path: lp,
        growing: None,
        unverified: None,
    }
}

pub(crate) fn layers_in(dir: &Path, layers: &[Vec<u8>]) -> Vec<LayerBlob> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| blob_at(dir, &format!("l{i}"), l))
        .collect()
}

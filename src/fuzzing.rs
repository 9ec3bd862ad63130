//! Entry points for the cargo-fuzz targets in `fuzz/` (not an API): each takes arbitrary
//! bytes and must return, never panic, whatever they are.

use crate::rootfs::Rootfs;

/// A layer merged twice (the second time over itself: whiteouts then hide lower entries),
/// then parsed again capturing its files, as the merge pass does.
pub fn layer(bytes: &[u8]) {
    let mut fs = Rootfs::empty();
    if fs.apply_layer(0, bytes).is_ok() {
        let _ = fs.apply_layer(1, bytes);
        for p in fs.nodes.keys().take(64).cloned().collect::<Vec<_>>() {
            let _ = fs.resolve(&p, true);
        }
        static DIR: std::sync::OnceLock<Option<tempfile::TempDir>> = std::sync::OnceLock::new();
        if let Some(dir) = DIR.get_or_init(|| tempfile::tempdir().ok()) {
            let capture = crate::rootfs::Capture {
                dir: dir.path().to_path_buf(),
                budget: crate::rootfs::Budget::new(1 << 20),
            };
            if let Ok(p) = crate::rootfs::ParsedLayer::parse_capturing(0, bytes, Some(capture)) {
                let mut fs = Rootfs::empty();
                if fs.apply_parsed(0, &p).is_ok() {
                    for path in fs.nodes.keys().take(64) {
                        if let Some(local) = fs.captured_local(path) {
                            let _ = local.read(1 << 20);
                        }
                    }
                }
            }
        }
    }
}

pub fn elf(bytes: &[u8]) {
    if crate::elf::is_elf(bytes) {
        let _ = crate::elf::parse(bytes);
    }
}

pub fn ldcache(bytes: &[u8]) {
    let _ = crate::ldcache::parse_cache(bytes);
}

pub fn reference(bytes: &[u8]) {
    if let Ok(s) = std::str::from_utf8(bytes)
        && let Ok(r) = s.parse::<crate::reference::ImageRef>()
    {
        let _ = r.to_string();
        let _ = crate::reference::default_destination(&r);
    }
}

/// Manifests, indexes, configs and docker config.json auth files.
pub fn manifest(bytes: &[u8]) {
    let _ = crate::image::parse_manifest(bytes, None, "fuzz");
    // Signatures: public keys, payloads and envelopes as found in registries and key files.
    let text = String::from_utf8_lossy(bytes);
    if let Ok(k) = crate::sign::PublicKey::from_pem(&text) {
        let _ = k.verify(bytes, bytes);
    }
    let _ = serde_json::from_slice::<crate::sign::cosign::Payload>(bytes);
    let _ = serde_json::from_slice::<crate::sign::cosign::Envelope>(bytes);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = crate::trace::RunConfig::from_config(&v);
        // An auth file naming a credential helper would run a program: not from a fuzzer.
        if v.get("credsStore").is_none() && v.get("credHelpers").is_none() {
            let _ = docker_credential::get_credential_from_reader(bytes, "registry.example");
        }
    }
}

/// The package databases' text and binary parsers.
pub fn packages(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for st in crate::packages::dpkg::stanzas(&text) {
        if let Some(d) = st.get("Depends") {
            let _ = crate::packages::dpkg::relations(&d);
        }
    }
    for b in crate::packages::apk::blocks(&text) {
        for l in b.lines() {
            let _ = crate::packages::apk::dep_name(l);
        }
    }
    let _ = crate::packages::rpm::parse_header(bytes);
}

/// Shell scripts and configuration files with includes.
pub fn scripts(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = crate::trace::shell::parse(&text, None, "/usr/bin:/bin");
    let _ = crate::trace::config::includes(&text);
    let _ = crate::trace::config::runs(&text);
    let _ = crate::trace::fontconfig::names(&text);
    for attr in ["uri", "catalog", "rewritePrefix"] {
        for v in crate::trace::xmlcatalog::values(&text, attr) {
            let _ = crate::trace::xmlcatalog::local(v, "/etc/xml");
        }
    }
}

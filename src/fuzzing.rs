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

/// Manifests, indexes, configs and docker config.json auth files; and the event bodies
/// `pare serve` takes (the distribution registry's envelope, Harbor's webhook), each push
/// routed by a `[serve]` table.
pub fn manifest(bytes: &[u8]) {
    let _ = crate::image::parse_manifest(bytes, None, "fuzz");
    static RULES: std::sync::OnceLock<Option<crate::serve::config::Rules>> =
        std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| {
        crate::serve::config::Rules::new(crate::serve::config::ServeConfig {
            registries: vec!["registry.example".into(), "harbor.example".into()],
            exclude: vec!["*:*-rc*".into()],
            ..Default::default()
        })
        .ok()
    });
    for events in [
        crate::serve::events::distribution(bytes),
        crate::serve::events::harbor(bytes),
    ]
    .into_iter()
    .flatten()
    {
        for e in events {
            if let (crate::serve::events::Event::Push(p), Some(r)) = (e, rules) {
                let _ = r.route(&p);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    /// The event bodies, mutated byte by byte (a seeded xorshift: the same inputs every run),
    /// never panic the parsers or the routing.
    #[test]
    fn mutated_event_bodies_never_panic() {
        let harbor = include_str!("../testdata/harbor/push_artifact.json")
            .replace("@DIGEST@", &format!("sha256:{}", "a".repeat(64)))
            .replace("@TAG@", "1.4")
            .replace("@HOST@", "harbor.example")
            .replace("@REPOSITORY@", "library/api")
            .replace("@NAMESPACE@", "library")
            .replace("@NAME@", "api");
        let envelope = format!(
            r#"{{"events":[{{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","repository":"team/api","tag":"1.4"}},"request":{{"host":"registry.example"}}}}]}}"#,
            "b".repeat(64)
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}[]\":,. -_/@0123456789abcdefhsptuTA\\\n\x00\xff";
        for seed in [harbor.as_bytes(), envelope.as_bytes()] {
            super::manifest(seed);
            for _ in 0..3000 {
                let mut b = seed.to_vec();
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[i] = alphabet[(next() as usize) % alphabet.len()],
                        1 => {
                            b.remove(i);
                        }
                        _ => b.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                    }
                }
                super::manifest(&b);
            }
        }
    }
}

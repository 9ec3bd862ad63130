//! Package databases other than dpkg (dpkg is checked on real Debian images by tests/works.rs):
//! an apk image is read and its trimmed database written, and syft sees exactly the packages
//! that keep a file.
//!
//! This machine (Debian) has no apk-tools, so the test writes an Alpine-style
//! `/lib/apk/db/installed` itself for binaries of this machine (jq and its libraries).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::debian::in_ci;
use common::scan::*;
use common::*;

/// One apk database block: package fields, then `F:dir` / `R:name` (with `Z:` checksums) for
/// each path.
fn apk_block(name: &str, version: &str, origin: &str, deps: &str, paths: &[&str]) -> String {
    let mut s = format!(
        "C:Q1{}=\nP:{name}\nV:{version}\nA:x86_64\nS:1000\nI:2000\nT:{name} for pare's tests\nU:https://example.invalid/{name}\nL:MIT\no:{origin}\nm:pare tests <tests@example.invalid>\nt:1700000000\n",
        "A".repeat(27)
    );
    if !deps.is_empty() {
        s.push_str(&format!("D:{deps}\n"));
    }
    let mut by_dir: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in paths {
        let p = p.trim_start_matches('/');
        let (d, f) = p.rsplit_once('/').unwrap_or(("", p));
        by_dir.entry(d).or_default().push(f);
    }
    for (d, files) in by_dir {
        s.push_str(&format!("F:{d}\n"));
        for f in files {
            s.push_str(&format!("R:{f}\na:0:0:755\nZ:Q1{}=\n", "B".repeat(27)));
        }
    }
    s
}

#[test]
fn apk_database_is_read_and_trimmed() {
    let reg = Registry::start();
    let closure = host_closure(Path::new(HOST_JQ));
    let jq = vec![HOST_JQ];
    let libs: Vec<&str> = closure
        .iter()
        .map(|e| e.image_path())
        .filter(|p| *p != HOST_JQ)
        .collect();
    let db = [
        apk_block(
            "jq",
            "1.7.1-r0",
            "jq",
            "so:libjq.so.1 so:libc.musl-x86_64.so.1",
            &jq,
        ),
        apk_block("runtime-libs", "1.0-r3", "runtime", "", &libs),
        apk_block(
            "alpine-release",
            "3.19.1-r0",
            "alpine-base",
            "",
            &["/etc/os-release", "/etc/alpine-release"],
        ),
        apk_block(
            "unused-tool",
            "2.0-r1",
            "unused",
            "",
            &["/usr/bin/unused-tool", "/usr/share/unused/data.txt"],
        ),
    ]
    .join("\n");
    let spec = ImageSpec::new(vec![
        Layer::new()
            .host_closure(HOST_JQ)
            .file("/usr/bin/unused-tool", "#!/bin/false\n", 0o755)
            .file("/usr/share/unused/data.txt", "x\n", 0o644)
            .file(
                "/etc/os-release",
                "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n",
                0o644,
            )
            .file("/etc/alpine-release", "3.19.1\n", 0o644)
            // This machine is /usr-merged: its closure has `/lib -> usr/lib`, so the database
            // that apk keeps in /lib/apk/db is written through that link.
            .file("/usr/lib/apk/db/installed", &db, 0o644),
    ])
    .with_entrypoint(&[HOST_JQ])
    .with_cmd(&["-n", "6*7"]);
    let src = reg.image("pkgs/apk:1");
    build_and_push(&spec, &src, None);
    let out = pare()
        .args(["-q", "harden", &src])
        .output()
        .expect("run pare");
    assert!(out.status.success(), "{}", describe_output(&out));

    let hard = pull_and_unpack(&format!("{src}-hardened"));
    let root = hard.rootfs();
    let text = std::fs::read_to_string(root.join("lib/apk/db/installed"))
        .expect("the hardened image has /lib/apk/db/installed");
    let names: BTreeSet<&str> = text.lines().filter_map(|l| l.strip_prefix("P:")).collect();
    assert_eq!(
        names,
        BTreeSet::from(["jq", "runtime-libs", "alpine-release"]),
        "{text}"
    );
    // Every file the database lists is in the image; the unused package's are not listed.
    let mut dir = String::new();
    for l in text.lines() {
        if let Some(d) = l.strip_prefix("F:") {
            dir = d.to_string();
        } else if let Some(f) = l.strip_prefix("R:") {
            let p = root.join(&dir).join(f);
            assert!(
                std::fs::symlink_metadata(&p).is_ok(),
                "{dir}/{f} is listed but not in the image"
            );
        }
    }
    assert!(!text.contains("unused"), "{text}");
    // The package fields are the original's.
    let block = |t: &str, name: &str| -> Vec<String> {
        t.split("\n\n")
            .find(|b| b.lines().any(|l| l == format!("P:{name}")))
            .unwrap_or("")
            .lines()
            .filter(|l| {
                !["F:", "R:", "a:", "Z:", "M:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(block(&text, "jq"), block(&db, "jq"));

    // What syft sees: the same packages, same versions.
    match syft_packages(&hard.layout) {
        Ok(pkgs) => {
            let apk: BTreeMap<String, String> = pkgs
                .into_iter()
                .filter(|((t, _), _)| t == "apk")
                .map(|((_, n), v)| (n, v))
                .collect();
            assert_eq!(
                apk,
                BTreeMap::from([
                    ("jq".to_string(), "1.7.1-r0".to_string()),
                    ("runtime-libs".into(), "1.0-r3".into()),
                    ("alpine-release".into(), "3.19.1-r0".into()),
                ])
            );
        }
        Err(e) if !in_ci() => eprintln!("SKIP syft: {e}"),
        Err(e) => panic!("{e}"),
    }
}

//! Package databases other than dpkg (dpkg is checked on real Debian images by tests/works.rs):
//! an apk image is read and its trimmed database written, and syft sees exactly the packages
//! that keep a file.
//!
//! This machine (Debian) has no apk-tools, so the test writes an Alpine-style
//! `/lib/apk/db/installed` itself for binaries of this machine (jq and its libraries).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::scan::*;
use common::*;

/// syft's packages of `layout` of one type: name → version (`None` when syft is not installed
/// outside CI).
fn syft_of_type(layout: &Path, ty: &str) -> Option<BTreeMap<String, String>> {
    match syft_packages(layout) {
        Ok(pkgs) => Some(
            pkgs.into_iter()
                .filter(|((t, _), _)| t == ty)
                .map(|((_, n), v)| (n, v))
                .collect(),
        ),
        Err(e) => {
            skip(&format!("syft: {e}"));
            None
        }
    }
}

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

/// The apk database of the test image: jq, its libraries (`libs`), alpine-release, and a
/// package no kept file belongs to.
fn apk_db(libs: &[&str]) -> String {
    let jq = vec![HOST_JQ];
    [
        apk_block(
            "jq",
            "1.7.1-r0",
            "jq",
            "so:libjq.so.1 so:libc.musl-x86_64.so.1",
            &jq,
        ),
        apk_block("runtime-libs", "1.0-r3", "runtime", "", libs),
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
    .join("\n")
}

/// jq's closure, the unused package's files, Alpine's release files and `db`.
fn apk_image(db: &str) -> ImageSpec {
    ImageSpec::new(vec![
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
            .file("/usr/lib/apk/db/installed", db, 0o644),
    ])
    .with_entrypoint(&[HOST_JQ])
    .with_cmd(&["-n", "6*7"])
}

/// The hardened image's database `text` (in `root`) lists the kept packages, every file it
/// lists is there, and their fields are those of the original `db`.
fn assert_trimmed_apk_db(root: &Path, text: &str, db: &str) {
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
    assert_eq!(block(text, "jq"), block(db, "jq"));
}

#[test]
fn apk_database_is_read_and_trimmed() {
    let reg = Registry::start();
    let closure = host_closure(Path::new(HOST_JQ));
    let libs: Vec<&str> = closure
        .iter()
        .map(|e| e.image_path())
        .filter(|p| *p != HOST_JQ)
        .collect();
    let db = apk_db(&libs);
    let spec = apk_image(&db);
    let src = reg.image("pkgs/apk:1");
    build_and_push(&spec, &src, None);
    pare_ok(&["-q", "harden", &src]);

    // `pare inspect` lists the packages and which of their files are present; the report says
    // which packages keep files and which are gone.
    let inspect: serde_json::Value =
        serde_json::from_slice(&pare_ok(&["-q", "inspect", "--format", "json", &src]).stdout)
            .unwrap();
    assert_eq!(inspect["packages"]["format"], "apk");
    let unused = inspect["packages"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "unused-tool")
        .cloned()
        .expect("unused-tool listed by inspect");
    assert_eq!(unused["files_present"], 2, "{unused}");
    let report_path = tempfile::NamedTempFile::new().unwrap();
    let out = pare()
        .args(["-q", "harden", "--dry-run", "--report"])
        .arg(report_path.path())
        .arg(&src)
        .output()
        .expect("run pare");
    assert!(out.status.success(), "{}", describe_output(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_path.path()).unwrap()).unwrap();
    let names = |k: &str| -> BTreeSet<String> {
        report["packages"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("kept"),
        BTreeSet::from(["jq".into(), "runtime-libs".into(), "alpine-release".into()])
    );
    assert_eq!(
        names("dropped"),
        BTreeSet::from(["unused-tool".to_string()])
    );

    // A library the database lists but a later layer deleted: with --allow-missing, the
    // report names the package that would have provided it.
    let libjq = libs
        .iter()
        .find(|p| p.contains("libjq.so") && !p.ends_with(".so.1"))
        .or_else(|| libs.iter().find(|p| p.contains("libjq.so")))
        .expect("jq links libjq");
    let broken = spec.clone().with_layer(Layer::new().whiteout(libjq));
    let src2 = reg.image("pkgs/apk:broken");
    build_and_push(&broken, &src2, None);
    let out = pare()
        .args([
            "-q",
            "harden",
            "--dry-run",
            "--allow-missing",
            "--report",
            "-",
            &src2,
        ])
        .output()
        .expect("run pare");
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing = r["packages"]["missing"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        missing
            .iter()
            .any(|m| m["package"] == "runtime-libs 1.0-r3" && m["needed_by"] == HOST_JQ),
        "{}",
        r["packages"]
    );

    let hard = pull_and_unpack(&format!("{src}-hardened"));
    let root = hard.rootfs();
    let text = std::fs::read_to_string(root.join("lib/apk/db/installed"))
        .expect("the hardened image has /lib/apk/db/installed");
    assert_trimmed_apk_db(&root, &text, &db);

    // What syft sees: the same packages, same versions.
    if let Some(apk) = syft_of_type(&hard.layout, "apk") {
        assert_eq!(
            apk,
            BTreeMap::from([
                ("jq".to_string(), "1.7.1-r0".to_string()),
                ("runtime-libs".into(), "1.0-r3".into()),
                ("alpine-release".into(), "3.19.1-r0".into()),
            ])
        );
    }
}

/// Build a binary rpm with rpmbuild: `files` are (image path, host source or contents, config?).
fn rpmbuild(
    top: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &str, bool)],
) -> std::path::PathBuf {
    for d in ["SPECS", "BUILD", "RPMS", "SOURCES", "SRPMS", "BUILDROOT"] {
        std::fs::create_dir_all(top.join(d)).unwrap();
    }
    let mut install = String::new();
    let mut list = String::new();
    for (path, from, config) in files {
        let dir = Path::new(path).parent().unwrap().display().to_string();
        install.push_str(&format!("mkdir -p %{{buildroot}}{dir}\n"));
        if from.starts_with('/') {
            install.push_str(&format!("cp {from} %{{buildroot}}{path}\n"));
        } else {
            install.push_str(&format!("printf '%s\\n' '{from}' > %{{buildroot}}{path}\n"));
        }
        list.push_str(&if *config {
            format!("%config(noreplace) {path}\n")
        } else {
            format!("{path}\n")
        });
    }
    let spec = format!(
        "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: pare test\nLicense: MIT\nBuildArch: x86_64\n%description\npare test package\n%install\n{install}%files\n{list}"
    );
    let spec_path = top.join("SPECS").join(format!("{name}.spec"));
    std::fs::write(&spec_path, spec).unwrap();
    run_ok(
        std::process::Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args([
                "--define",
                "__os_install_post %{nil}",
                "--define",
                "_build_id_links none",
            ])
            .arg("-bb")
            .arg(&spec_path),
    );
    top.join("RPMS/x86_64")
        .join(format!("{name}-{version}-1.x86_64.rpm"))
}

#[test]
fn rpm_sqlite_database_is_read_and_trimmed() {
    if find_tool("rpmbuild").is_none() || find_tool("rpm").is_none() {
        skip("rpm and rpmbuild are not installed (scripts/test.sh installs rpm)");
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    let hello = rpmbuild(
        &top,
        "pare-hello",
        "1.2",
        &[
            ("/usr/bin/jq", HOST_JQ, false),
            ("/etc/hello/hello.conf", "greeting = hi", true),
        ],
    );
    let unused = rpmbuild(
        &top,
        "pare-unused",
        "2.0",
        &[("/usr/bin/unused-tool", "#!/bin/false", false)],
    );
    // The database, made by Debian's rpm (4.18, sqlite backend), packages recorded only.
    let db = work.path().join("db");
    run_ok(
        std::process::Command::new("rpm")
            .arg("--dbpath")
            .arg(&db)
            .arg("--initdb"),
    );
    run_ok(
        std::process::Command::new("rpm")
            .arg("--dbpath")
            .arg(&db)
            .args(["-i", "--nodeps", "--justdb", "--ignorearch", "--ignoreos"])
            .arg(&hello)
            .arg(&unused),
    );
    let sqlite = std::fs::read(db.join("rpmdb.sqlite")).unwrap();
    let spec = ImageSpec::new(vec![
        Layer::new()
            .host_closure(HOST_JQ)
            .file("/etc/hello/hello.conf", "greeting = hi\n", 0o644)
            .file("/usr/bin/unused-tool", "#!/bin/false\n", 0o755)
            .file(
                "/etc/os-release",
                "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n",
                0o644,
            )
            .file("/var/lib/rpm/rpmdb.sqlite", &sqlite, 0o644),
    ])
    .with_entrypoint(&[HOST_JQ])
    .with_cmd(&["-n", "6*7"]);
    let src = reg.image("pkgs/rpm:1");
    build_and_push(&spec, &src, None);
    pare_ok(&["-q", "harden", &src]);
    let why = pare()
        .args(["-q", "trace", "--why", "/etc/hello/hello.conf", &src])
        .output()
        .expect("run pare trace");
    let why = String::from_utf8_lossy(&why.stdout);
    assert!(
        why.contains("[package] configuration file of package pare-hello"),
        "{why}"
    );

    // Deterministic, the rewritten sqlite database included.
    let again = reg.image("pkgs/rpm:again");
    pare_ok(&["-q", "harden", &src, &again]);
    assert_eq!(
        skopeo_manifest_digest(&format!("{src}-hardened"), None),
        skopeo_manifest_digest(&again, None)
    );

    let hard = pull_and_unpack(&format!("{src}-hardened"));
    let root = hard.rootfs();
    assert!(root.join("etc/hello/hello.conf").is_file());
    assert!(!root.join("usr/bin/unused-tool").exists());
    // rpm itself reads the trimmed database: only the package that keeps a file is left.
    let hdb = root.join("var/lib/rpm");
    let q = run_ok(
        std::process::Command::new("rpm")
            .arg("--dbpath")
            .arg(&hdb)
            .args(["-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\\n"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim(),
        "pare-hello-1.2-1"
    );
    assert!(
        !hdb.join("rpmdb.sqlite-wal").exists(),
        "the database is written without a write-ahead log"
    );
    if let Some(rpms) = syft_of_type(&hard.layout, "rpm") {
        assert_eq!(
            rpms,
            BTreeMap::from([("pare-hello".to_string(), "1.2-1".to_string())])
        );
    }
}

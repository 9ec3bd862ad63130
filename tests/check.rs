//! `pare check`, `pare inspect`, `harden --check` and `--print-security-context` on real
//! multi-layer images in a real registry, with independent verification (umoci + find,
//! gzip, the SARIF 2.1.0 JSON schema via Python's jsonschema).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn unhardened_fails_hardened_passes_unreachable_is_2() {
    let reg = Registry::start();
    build_and_push(&jq_image(), &reg.image("c/jq:1"), None);
    let out = run(pare().args(["-q", "check", &reg.image("c/jq:1")]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let text = stdout(&out);
    for needle in [
        "FAIL root-user [high]",
        "FAIL setuid-setgid [high]: 3 setuid/setgid files",
        "/usr/bin/passwd  (setuid, mode 4755 0:0)",
        "/usr/bin/su  (setuid",
        "/usr/bin/chage  (setgid, mode 2755 0:0)",
        "FAIL shell [medium]",
        "/usr/bin/sh  (link to /usr/bin/busybox)",
        "/usr/bin/busybox",
        "FAIL network-tool [medium]",
        "/usr/bin/wget  (link to /usr/bin/busybox)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    pare_ok(&["-q", "harden", &reg.image("c/jq:1")]);
    let out = run(pare().args(["-q", "check", &reg.image("c/jq:1-hardened")]));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(stdout(&out).contains("PASS"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(pare().args(["-q", "check", &format!("127.0.0.1:{port}/x/y:1")]));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pare: error: pull manifest"));
    let out = run(pare().args(["-q", "check", "Not A Reference"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn formats_sarif_schema_json_and_github_annotations() {
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "jq", &jq_image());
    let src = format!("oci:{}:jq", dir.path().display());
    let sarif_path = dir.path().join("out.sarif");
    let out = run(pare()
        .args(["-q", "check", &src, "--format", "sarif", "-o"])
        .arg(&sarif_path));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/sarif-schema-2.1.0.json"
    );
    let v = run_capture(Command::new("python3").args([
        "-c",
        "import json,sys,jsonschema\nschema=json.load(open(sys.argv[1]))\ndoc=json.load(open(sys.argv[2]))\njsonschema.Draft4Validator(schema).validate(doc)\nprint(len(doc['runs'][0]['results']))",
        schema,
    ]).arg(&sarif_path));
    assert!(
        v.status.success(),
        "SARIF does not validate: {}",
        describe_output(&v)
    );
    assert!(
        String::from_utf8_lossy(&v.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
            >= 5
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&sarif_path).unwrap()).unwrap();
    let rules: Vec<&str> = doc["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), 7);
    assert!(
        doc["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ruleId"] == "setuid-setgid"
                && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    == "usr/bin/passwd")
    );

    // JSON, and GitHub Actions annotations on stdout when GITHUB_ACTIONS=true.
    let out = run(pare()
        .args(["-q", "check", &src, "--format", "json"])
        .env("GITHUB_ACTIONS", "true"));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let (json, annotations) = text.split_at(text.find("::error").expect("annotations"));
    let r: Value = serde_json::from_str(json).unwrap();
    assert_eq!(r["passed"], false);
    assert!(
        annotations.contains("::error title=pare root-user::"),
        "{annotations}"
    );
    assert!(
        annotations.contains("::error title=pare setuid-setgid::"),
        "{annotations}"
    );

    // --allow and --fail-on, then the same from .pare.toml in the working directory.
    let out = run(pare().args([
        "-q",
        "check",
        &src,
        "--allow",
        "root-user",
        "--allow",
        "setuid-setgid",
        "--fail-on",
        "high",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(
        stdout(&out).contains("warn shell [medium]"),
        "{}",
        stdout(&out)
    );
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join(".pare.toml"),
        "[check]\nallow = [\"root-user\", \"setuid-setgid\"]\nfail-on = \"high\"\n",
    )
    .unwrap();
    let out = run(pare().current_dir(cwd.path()).args(["-q", "check", &src]));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let out = run(pare().args(["-q", "check", &src, "--allow", "no-such-rule"]));
    assert_eq!(out.status.code(), Some(2));
}

/// Regular files under `root` as seen by `find`, with sizes (independent of pare).
fn find_files(root: &std::path::Path) -> (u64, u64) {
    let o = run_ok(
        Command::new("find")
            .arg(root)
            .args(["-type", "f", "-printf", "%s\n"]),
    );
    let sizes: Vec<u64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    (sizes.len() as u64, sizes.iter().sum())
}

#[test]
fn inspect_agrees_with_umoci_and_find() {
    let dir = tempfile::tempdir().unwrap();
    let built = write_oci_layout(dir.path(), "jq", &jq_image());
    let src = format!("oci:{}:jq", dir.path().display());
    let out = pare_ok(&["-q", "inspect", &src, "--format", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();

    let u = pull_and_unpack(&src);
    let (files, bytes) = find_files(&u.rootfs());
    assert_eq!(r["totals"]["files"], files, "file count vs find -type f");
    assert_eq!(
        r["totals"]["file_bytes"], bytes,
        "file bytes vs find -printf %s"
    );
    let setid: BTreeSet<String> = find_setid_files(&u.rootfs())
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let ours: BTreeSet<String> = strings_of(&r["setid_files"], "path").into_iter().collect();
    assert_eq!(ours, setid);
    // Uncompressed layer sizes vs gzip -dc of each blob.
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (l, digest) in layers.iter().zip(&built.layer_digests) {
        let blob = dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let o = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc '{}' | wc -c", blob.display())),
        );
        let n: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert_eq!(l["uncompressed_size"], n);
        assert_eq!(l["digest"], Value::String(digest.clone()));
    }
    let app = &layers[1];
    assert_eq!(app["created_by"], "pare-test: jq app layer");
    // The whiteout removes one base file, the opaque directory two.
    assert_eq!(app["removed"], 3);
    assert!(r["totals"]["efficiency"].as_f64().unwrap() <= 1.0);
    assert_eq!(r["entrypoint"][0], "/usr/bin/jq");

    let out = run(pare().args(["-q", "inspect", &src, "--tree"]));
    assert!(out.status.success());
    let t = stdout(&out);
    assert!(
        t.contains("Efficiency") && t.contains("passwd") && t.contains("bin -> usr/bin"),
        "{t}"
    );
}

#[test]
fn harden_check_and_security_context() {
    let reg = Registry::start();
    build_and_push(&jq_image(), &reg.image("h/jq:1"), None);
    let out = pare_ok(&[
        "-q",
        "harden",
        "--check",
        "--print-security-context",
        &reg.image("h/jq:1"),
    ]);
    let yaml = stdout(&out);
    for line in [
        "securityContext:",
        "  runAsNonRoot: true",
        "  runAsUser: 65532",
        "  runAsGroup: 65532",
        "  allowPrivilegeEscalation: false",
        "  readOnlyRootFilesystem: true",
        "      - ALL",
    ] {
        assert!(yaml.contains(line), "{line:?} not in:\n{yaml}");
    }
    assert!(skopeo_inspect_exists(&reg.image("h/jq:1-hardened"), None));

    // Keeping busybox brings a shell: --check refuses to push, nothing is written.
    let out = run(pare().args([
        "-q",
        "harden",
        "--check",
        &reg.image("h/jq:1"),
        &reg.image("h/jq:shell"),
        "--keep",
        "/usr/bin/busybox",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FAIL shell [medium]") && err.contains("refusing to write"),
        "{err}"
    );
    assert!(!skopeo_inspect_exists(&reg.image("h/jq:shell"), None));

    // An entrypoint that is itself a network tool: a note (it is what the image is for), not
    // a violation; --strict counts it.
    let curl =
        ImageSpec::new(vec![Layer::new().host_closure("/usr/bin/curl")]).with_entrypoint(&["curl"]);
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "curl", &curl);
    let src = format!("oci:{}:curl", dir.path().display());
    let out = run(pare().args(["-q", "check", &src]));
    assert_eq!(out.status.code(), Some(1), "root-user still fails it");
    let text = stdout(&out);
    assert!(
        text.contains(
            "note network-tool: /usr/bin/curl  (mode 0755 0:0; it is the entrypoint; needed by the entrypoint)"
        ) && !text.contains("FAIL network-tool"),
        "{text}"
    );
    let out = run(pare().args(["-q", "check", "--strict", &src]));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL network-tool")
            && text.contains("/usr/bin/curl  (mode 0755 0:0; it is the entrypoint)"),
        "{text}"
    );
}

/// The CI flow before anything is pushed: `docker save`'s format in, checked, hardened, out as
/// an archive (read back by skopeo) and to a registry.
#[test]
fn docker_archive_in_and_out() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    // skopeo writes the docker-archive (docker save) format.
    let saved = save_docker_archive(dir.path(), &jq_image());
    let src = format!("docker-archive:{}", saved.display());

    let out = run(pare().args(["-q", "check", &src]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(stdout(&out).contains("FAIL setuid-setgid"));

    // Archive → archive, read back by skopeo and run.
    let hardened = dir.path().join("app-hardened.tar");
    pare_ok(&["-q", "harden", &format!("{src}:app:1")]);
    assert!(hardened.is_file(), "default DEST is app-hardened.tar");
    let back = dir.path().join("back");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!(
                "docker-archive:{}:app:1-hardened",
                hardened.display()
            ))
            .arg(format!("oci:{}:h", back.display())),
    );
    let u = pull_and_unpack(&format!("oci:{}:h", back.display()));
    assert_eq!(u.exec_config()["User"], "65532:65532");
    assert!(find_setid_files(&u.rootfs()).is_empty());
    if is_root() {
        let o = run_chroot(&u.rootfs(), &["/usr/bin/jq", "-n", "1+1"], &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2");
    }
    // Archive → registry, as `docker save app:1 -o app.tar && pare harden docker-archive:app.tar registry/app:1`.
    pare_ok(&["-q", "harden", &src, &reg.image("ci/app:1")]);
    let out = run(pare().args(["-q", "check", &reg.image("ci/app:1")]));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    // A tag the archive does not hold is a clear error.
    let out = run(pare().args(["-q", "harden", &format!("{src}:nope:1"), "--dry-run"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no image tagged nope:1"),
        "{}",
        describe_output(&out)
    );
}

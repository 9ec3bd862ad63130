//! `pare harden` end to end: real images built from this machine's programs, a real
//! `docker-registry`, and independent verification with skopeo and umoci.

mod common;

use common::*;
use serde_json::{Value, json};

/// The jq image: a Debian-like base (busybox sh, setuid/setgid programs, ld.so.conf.d) and an
/// app layer with jq's real closure, a whiteout of a base file and an opaque directory.
fn jq_spec() -> ImageSpec {
    let app = jq_app_layer().dir("/srv/app", 0o755);
    ImageSpec::new(vec![usrmerge_base_layer(), app])
        .with_entrypoint(&["/usr/bin/jq"])
        .with_cmd(&["-n", "1+1"])
        .with_env("LANG", "C.UTF-8")
        .with_workdir("/srv/app")
        .with_exposed_port("8080/tcp")
        .with_label("org.example.team", "platform")
        .with_extra_config(
            "Healthcheck",
            json!({"Test": ["CMD", "/usr/bin/jq", "-n", "1"], "Interval": 30000000000u64}),
        )
        .with_extra_config("StopSignal", json!("SIGTERM"))
}

/// Everything the acceptance criteria ask of a hardened jq image, checked on the unpacked root.
fn check_hardened_jq(u: &Unpacked, source_config: &Value) {
    let c = u.exec_config();
    assert_eq!(c["User"], "65532:65532", "config: {c}");
    for key in [
        "Env",
        "Entrypoint",
        "Cmd",
        "WorkingDir",
        "ExposedPorts",
        "Labels",
        "Healthcheck",
        "StopSignal",
    ] {
        assert_eq!(
            c[key], source_config["config"][key],
            "config key {key} must survive"
        );
    }
    // Layers follow the source's two (the kept share of each that is worth a layer) and a
    // last one of pare's own: the config lists each once, with its history.
    let layers = u.manifest["layers"].as_array().unwrap().len();
    assert!((1..=3).contains(&layers), "{layers} layers");
    assert_eq!(
        u.config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers
    );
    assert_eq!(u.config["history"].as_array().unwrap().len(), layers);
    let root = u.rootfs();
    assert_eq!(
        find_setid_files(&root),
        Vec::<std::path::PathBuf>::new(),
        "no setuid/setgid file"
    );
    for gone in [
        "/usr/bin/sh",
        "/bin/sh",
        "/usr/bin/busybox",
        BASE_ONLY_FILE,
        "/opt/data/a.txt",
    ] {
        assert!(
            std::fs::symlink_metadata(u.path(gone)).is_err(),
            "{gone} must not be in the hardened image"
        );
    }
    assert_eq!(mode_of(&root, "/tmp"), Some(0o1777));
    let passwd = std::fs::read_to_string(u.path("/etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(passwd.contains("root:x:0:0:") && passwd.contains("nobody:x:65534:65534:"));
    let home = std::fs::metadata(u.path("/home/nonroot")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&home), NONROOT_UID);
    assert!(u.path("/srv/app").is_dir(), "WorkingDir kept");
    assert_chroot_prints(&root, &["/usr/bin/jq", "-n", "1+1"], &[], "2");
}

#[test]
fn hardens_a_registry_image_and_leaves_the_source_alone() {
    let reg = Registry::start();
    let spec = jq_spec();
    let built = build_and_push(&spec, &reg.image("team/jq:1.4"), None);
    let src_digest_before = skopeo_manifest_digest(&reg.image("team/jq:1.4"), None);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let out = run(pare()
        .args(["harden", &reg.image("team/jq:1.4"), "--report"])
        .arg(&report_path));
    assert!(
        out.status.success(),
        "pare harden failed: {}",
        describe_output(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("team/jq:1.4 → team/jq:1.4-hardened"),
        "summary line: {err}"
    );
    assert!(err.contains("user 65532"), "{err}");
    assert!(err.contains("3 setuid/setgid files removed"), "{err}");

    // Verified by independent clients.
    let dest = reg.image("team/jq:1.4-hardened");
    assert!(skopeo_inspect_exists(&dest, None));
    assert_eq!(
        skopeo_manifest_digest(&reg.image("team/jq:1.4"), None),
        src_digest_before,
        "source untouched"
    );
    let raw: Value = serde_json::from_slice(&skopeo_raw_manifest(&dest, None)).unwrap();
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.digest"],
        json!(src_digest_before)
    );
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.name"],
        json!(reg.image("team/jq:1.4"))
    );
    let u = pull_and_unpack(&format!("docker://{dest}"));
    check_hardened_jq(&u, &built.config);

    // The report.
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(r["source"]["digest"], json!(src_digest_before));
    assert_eq!(
        r["destination"]["digest"],
        json!(skopeo_manifest_digest(&dest, None))
    );
    assert_eq!(r["user"]["uid"], 65532);
    let files = r["files"].as_array().unwrap();
    let jq = files
        .iter()
        .find(|f| f["path"] == "/usr/bin/jq")
        .expect("jq in report");
    assert_eq!(jq["reason"], "entrypoint");
    assert!(jq["size"].as_u64().unwrap() > 10_000);
    assert!(files.iter().any(|f| {
        f["path"].as_str().unwrap().contains("libjq.so.1")
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("needed by /usr/bin/jq")
    }));
    let removed: Vec<&str> = r["setid_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        removed,
        vec!["/usr/bin/chage", "/usr/bin/passwd", "/usr/bin/su"]
    );
    let before = r["sizes"]["before"]["uncompressed"].as_u64().unwrap();
    let after = r["sizes"]["after"]["uncompressed"].as_u64().unwrap();
    assert!(after < before, "{after} < {before}");
    assert!(r["sizes"]["after"]["compressed"].as_u64().unwrap() > 0);
}

#[test]
fn hardening_twice_gives_the_same_digest_and_keep_clears_setid() {
    let reg = Registry::start();
    build_and_push(&jq_spec(), &reg.image("app/jq:1"), None);
    // The same options twice, into two tags (the first run also prints its report).
    let flags = [
        "--keep",
        "/usr/bin/passwd",
        "--keep",
        "/usr/bin/chage",
        "--allow-missing",
    ];
    let (src, a_tag, b_tag) = (
        reg.image("app/jq:1"),
        reg.image("app/jq:a"),
        reg.image("app/jq:b"),
    );
    let a = pare_ok(&[&["harden", &src, &a_tag][..], &flags, &["--report", "-"]].concat());
    pare_ok(&[&["harden", &src, &b_tag][..], &flags].concat());
    let da = skopeo_manifest_digest(&reg.image("app/jq:a"), None);
    assert_eq!(
        da,
        skopeo_manifest_digest(&reg.image("app/jq:b"), None),
        "deterministic"
    );
    let r: Value = serde_json::from_slice(&a.stdout).unwrap();
    let cleared: Vec<&str> = r["setid_cleared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(
        cleared.contains(&"/usr/bin/passwd") && cleared.contains(&"/usr/bin/chage"),
        "{cleared:?}"
    );
    assert!(
        stderr(&a).contains("2 setuid/setgid bits cleared"),
        "{}",
        stderr(&a)
    );
    let u = pull_and_unpack(&reg.docker_ref("app/jq:a"));
    assert_eq!(mode_of(&u.rootfs(), "/usr/bin/passwd"), Some(0o755));
    assert_eq!(mode_of(&u.rootfs(), "/usr/bin/chage"), Some(0o755));
    assert!(find_setid_files(&u.rootfs()).is_empty());
}

#[test]
fn oci_layout_to_oci_layout_without_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let built = write_oci_layout(&src, "app", &jq_spec());
    let out_dir = dir.path().join("out");
    let dest = format!("oci:{}:hardened", out_dir.display());
    pare_ok(&["harden", &format!("oci:{}:app", src.display()), &dest]);
    let u = pull_and_unpack(&dest);
    check_hardened_jq(&u, &built.config);
    // Default destination inside the same layout: tag app-hardened; same bytes as before.
    pare_ok(&["harden", &format!("oci:{}:app", src.display())]);
    assert_eq!(
        skopeo_manifest_digest(&format!("oci:{}:app-hardened", src.display()), None),
        skopeo_manifest_digest(&dest, None)
    );
    // --keep with a glob: the opaque directory's new file comes along, the hidden ones do not.
    let kept = format!("oci:{}:kept", out_dir.display());
    pare_ok(&[
        "harden",
        &format!("oci:{}:app", src.display()),
        &kept,
        "--keep",
        "/opt/data/*.txt",
    ]);
    let k = pull_and_unpack(&kept);
    assert_eq!(
        std::fs::read_to_string(k.path("/opt/data/c.txt")).unwrap(),
        "c\n"
    );
    assert!(!k.path("/opt/data/a.txt").exists() && !k.path("/opt/data/b.txt").exists());
    // --dry-run writes nothing.
    let dry = dir.path().join("dry");
    pare_ok(&[
        "harden",
        "--dry-run",
        &format!("oci:{}:app", src.display()),
        &format!("oci:{}:x", dry.display()),
    ]);
    assert!(!dry.exists(), "dry run created the destination");
}

#[test]
fn trace_prints_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "app", &jq_spec());
    let out = pare_ok(&["trace", &format!("oci:{}:app", dir.path().display())]);
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.starts_with("/usr/bin/jq (interpreter => /lib64/ld-linux-x86-64.so.2)"),
        "{tree}"
    );
    assert!(
        tree.contains("libjq.so.1 => /usr/lib/x86_64-linux-gnu/libjq.so.1"),
        "{tree}"
    );
    assert!(tree.contains("libc.so.6 => "), "{tree}");
}

/// gcc fixtures: a binary with DT_RUNPATH `$ORIGIN/../lib`, and a library found only through
/// /etc/ld.so.conf.d (no ld.so.cache in the source image).
#[test]
fn runpath_origin_and_ld_so_conf_libraries() {
    let Some(gcc) = find_tool("gcc") else {
        panic!("gcc is needed for this test (apt-get install gcc)");
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("foo.c"), "int foo(void){return 40;}\n").unwrap();
    std::fs::write(d.join("bar.c"), "int bar(void){return 2;}\n").unwrap();
    std::fs::write(
        d.join("app.c"),
        "#include <stdio.h>\nint foo(void);int bar(void);\nint main(void){printf(\"answer=%d\\n\",foo()+bar());return 0;}\n",
    )
    .unwrap();
    let cc = |args: &[&str]| run_ok(std::process::Command::new(&gcc).current_dir(d).args(args));
    cc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libfoo.so.1",
        "-o",
        "libfoo.so.1.0",
        "foo.c",
    ]);
    cc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libbar.so.2",
        "-o",
        "libbar.so.2.5",
        "bar.c",
    ]);
    std::os::unix::fs::symlink("libfoo.so.1.0", d.join("libfoo.so.1")).unwrap();
    std::os::unix::fs::symlink("libbar.so.2.5", d.join("libbar.so.2")).unwrap();
    cc(&[
        "-o",
        "app",
        "app.c",
        "-L.",
        "-l:libfoo.so.1",
        "-l:libbar.so.2",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
    ]);
    let readelf = run_ok(
        std::process::Command::new("readelf")
            .args(["-d"])
            .arg(d.join("app")),
    );
    assert!(
        String::from_utf8_lossy(&readelf.stdout).contains("RUNPATH"),
        "fixture must carry DT_RUNPATH"
    );

    let app = Layer::new()
        .host_closure("/usr/bin/true")
        .file_from_host(d.join("app"), "/opt/app/bin/app", Some(0o755))
        .file_from_host(
            d.join("libfoo.so.1.0"),
            "/opt/app/lib/libfoo.so.1.0",
            Some(0o644),
        )
        .symlink("/opt/app/lib/libfoo.so.1", "libfoo.so.1.0")
        .file_from_host(
            d.join("libbar.so.2.5"),
            "/usr/local/lib/pare-test/libbar.so.2.5",
            Some(0o644),
        )
        .symlink("/usr/local/lib/pare-test/libbar.so.2", "libbar.so.2.5")
        .file(
            "/etc/ld.so.conf.d/pare-test.conf",
            "/usr/local/lib/pare-test\n",
            0o644,
        );
    let spec =
        ImageSpec::new(vec![usrmerge_base_layer(), app]).with_entrypoint(&["/opt/app/bin/app"]);
    let layout = d.join("layout");
    write_oci_layout(&layout, "app", &spec);
    let out_dir = d.join("out");
    let dest = format!("oci:{}:h", out_dir.display());
    let out = pare_ok(&[
        "harden",
        &format!("oci:{}:app", layout.display()),
        &dest,
        "--report",
        "-",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = |p: &str| {
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .map(|f| f["reason"].as_str().unwrap().to_string())
    };
    assert!(
        reason("/opt/app/lib/libfoo.so.1.0")
            .unwrap()
            .contains("RUNPATH"),
        "{r}"
    );
    assert!(
        reason("/usr/local/lib/pare-test/libbar.so.2.5")
            .unwrap()
            .contains("ld.so.conf")
    );
    assert!(
        reason("/etc/ld.so.cache").is_some(),
        "an ld.so.cache is written"
    );

    let u = pull_and_unpack(&dest);
    // The independent reader of the cache: ldconfig itself.
    let p = run_ok(
        std::process::Command::new("ldconfig")
            .arg("-p")
            .arg("-C")
            .arg(u.path("/etc/ld.so.cache")),
    );
    let listing = String::from_utf8_lossy(&p.stdout);
    assert!(
        listing.contains("libbar.so.2 (libc6,x86-64) => /usr/local/lib/pare-test/libbar.so.2"),
        "{listing}"
    );
    assert_chroot_prints(&u.rootfs(), &["/opt/app/bin/app"], &[], "answer=42");
}

/// Two apps on one base (the same jq layer under each, then a layer of their own): each
/// result's layers follow its source's, so the kept share of the shared layer is one blob in
/// both (stored and pulled once), and each still runs as 65532 with its own program.
#[test]
fn images_on_one_base_share_the_layer_made_from_it() {
    let reg = Registry::start();
    let app = |name: &str, prog: &str| {
        let own = Layer::new().file(&format!("/srv/{name}.jq"), prog, 0o644);
        ImageSpec::new(vec![usrmerge_base_layer(), jq_app_layer(), own])
            .with_entrypoint(&["/usr/bin/jq"])
            .with_cmd(&["-n", "-f", &format!("/srv/{name}.jq")])
    };
    let mut results = Vec::new();
    for (name, prog, prints) in [("a", "1+1", "2"), ("b", "[3,4]|add", "7")] {
        let spec = app(name, prog);
        build_and_push(&spec, &reg.image(&format!("apps/{name}:1")), None);
        let out = pare_ok(&[
            "harden",
            &reg.image(&format!("apps/{name}:1")),
            "--report",
            "-",
        ]);
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let dest = reg.image(&format!("apps/{name}:1-hardened"));
        let raw: Value = serde_json::from_slice(&skopeo_raw_manifest(&dest, None)).unwrap();
        let layers: Vec<String> = raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(r["layers_after"].as_u64(), Some(layers.len() as u64));
        let u = pull_and_unpack(&format!("docker://{dest}"));
        assert_eq!(
            u.config["rootfs"]["diff_ids"].as_array().unwrap().len(),
            layers.len()
        );
        // Each layer's history names the source layer it was made from (the jq layer).
        let src_raw: Value = serde_json::from_slice(&skopeo_raw_manifest(
            &reg.image(&format!("apps/{name}:1")),
            None,
        ))
        .unwrap();
        let jq_layer = src_raw["layers"][1]["digest"].as_str().unwrap();
        let history = u.config["history"].as_array().unwrap();
        assert_eq!(history.len(), layers.len());
        assert!(
            history[0]["comment"].as_str().unwrap().contains(jq_layer),
            "{history:?}"
        );
        let root = u.rootfs();
        assert!(u.path(&format!("/srv/{name}.jq")).is_file());
        assert!(find_setid_files(&root).is_empty());
        assert_chroot_prints(
            &root,
            &["/usr/bin/jq", "-n", "-f", &format!("/srv/{name}.jq")],
            &[],
            prints,
        );
        results.push(layers);
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(a.len() >= 2, "the jq layer's share and pare's own: {a:?}");
    assert_eq!(a[0], b[0], "the jq layer's kept files: one blob for both");
    assert_ne!(a.last(), b.last(), "each app's own files");
}

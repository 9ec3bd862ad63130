//! Bad input and access: every failure is one clear line, a non-zero exit, and nothing written
//! to the destination (checked with skopeo).

mod common;

use common::*;
use serde_json::Value;

fn jq_only_closure() -> Layer {
    Layer::new().host_closure(HOST_JQ)
}

#[test]
fn missing_tag_unreachable_registry_and_bad_references() {
    let reg = Registry::start();
    build_and_push(&jq_only_image(), &reg.image("a/jq:1"), None);
    let out = run(pare().args(["harden", &reg.image("a/jq:nope")]));
    assert_one_line_error(&out, &["a/jq:nope", "not found"]);
    assert!(!skopeo_inspect_exists(
        &reg.image("a/jq:nope-hardened"),
        None
    ));

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(pare().args(["harden", &format!("127.0.0.1:{port}/x/y:1")]));
    assert_one_line_error(&out, &["cannot reach 127.0.0.1"]);

    for bad in ["UPPER/case:1", "x@sha256:123", "oci-archive:foo.tar"] {
        let out = run(pare().args(["harden", bad]));
        assert_one_line_error(&out, &["invalid image reference"]);
    }
    // A digest destination is refused before anything is pulled.
    let out = run(pare().args([
        "harden",
        &reg.image("a/jq:1"),
        &format!("{}@sha256:{}", reg.image("a/jq"), "0".repeat(64)),
    ]));
    assert_one_line_error(&out, &["names a digest"]);
}

#[test]
fn credentials_right_wrong_and_from_docker_config() {
    let reg = Registry::start_with_auth("alice", "s3cret-pw");
    let creds = Some(("alice", "s3cret-pw"));
    build_and_push(&jq_only_image(), &reg.image("p/jq:1"), creds);
    let home = tempfile::tempdir().unwrap();
    // `pare harden p/jq:1 p/jq:TAG EXTRA…` with only the given credential sources.
    let harden_to = |tag: &str, extra: &[&str], env: &[(&str, &std::path::Path)]| {
        let mut c = pare();
        c.args([
            "harden",
            &reg.image("p/jq:1"),
            &reg.image(&format!("p/jq:{tag}")),
        ])
        .args(extra)
        .env("HOME", home.path())
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE");
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    };

    // Anonymous.
    assert_one_line_error(
        &harden_to("1-hardened", &[], &[]),
        &["unauthorized", "wants credentials"],
    );

    // Wrong password: refused, nothing written, and the password never printed.
    let out = harden_to("1-hardened", &["-v", "--creds", "alice:wrong-pw-123"], &[]);
    assert_one_line_error(&out, &["refused the credentials from --creds"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("wrong-pw-123"), "secret printed");
    assert!(!skopeo_inspect_exists(&reg.image("p/jq:1-hardened"), creds));

    // Right password via --creds.
    let out = harden_to("via-flag", &["-v", "--creds", "alice:s3cret-pw"], &[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("s3cret-pw"),
        "secret printed in verbose log"
    );
    assert!(skopeo_inspect_exists(&reg.image("p/jq:via-flag"), creds));

    // Right password from auth files: base64 `auth` in $DOCKER_CONFIG/config.json and in
    // $REGISTRY_AUTH_FILE (podman/skopeo auth.json), username/password in ~/.docker/config.json.
    let cfg = tempfile::tempdir().unwrap();
    // base64("alice:s3cret-pw")
    let auths = format!(
        r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0LXB3"}}}}}}"#,
        reg.host()
    );
    std::fs::write(cfg.path().join("config.json"), &auths).unwrap();
    let auth_file = cfg.path().join("auth.json");
    std::fs::write(&auth_file, &auths).unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"alice","password":"s3cret-pw"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    for (tag, env) in [
        ("via-config", vec![("DOCKER_CONFIG", cfg.path())]),
        (
            "via-authfile",
            vec![("REGISTRY_AUTH_FILE", auth_file.as_path())],
        ),
        ("via-home", vec![]),
    ] {
        let out = harden_to(tag, &[], &env);
        assert!(out.status.success(), "{tag}: {}", describe_output(&out));
        assert!(skopeo_inspect_exists(
            &reg.image(&format!("p/jq:{tag}")),
            creds
        ));
    }

    // `pare batch` lists the catalog and tags (pages of 1, so every page after the first is
    // reached through the registry's Link header) with the same credentials, and refuses
    // without them.
    let batch = |extra: &[&str]| {
        let report = home.path().join("batch.json");
        let mut c = pare();
        c.args(["batch", &format!("{}/p", reg.host()), "--dry-run"])
            .args(["--page-size", "1", "--report"])
            .arg(&report)
            .args(extra)
            .env("HOME", home.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE");
        (run(&mut c), report)
    };
    let (out, report) = batch(&["--creds", "alice:s3cret-pw"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let mut tags: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tag"].as_str().unwrap())
        .collect();
    tags.sort();
    // Hardened outputs (1-hardened) are not sources; the other tags are.
    assert_eq!(
        tags,
        ["1", "via-authfile", "via-config", "via-flag", "via-home"]
    );
    std::fs::remove_dir_all(home.path().join(".docker")).unwrap();
    let (out, _) = batch(&[]);
    assert_one_line_error(&out, &["unauthorized", "wants credentials"]);
}

#[test]
fn missing_entrypoint_and_missing_library() {
    let reg = Registry::start();
    let no_entry = ImageSpec::new(vec![usrmerge_base_layer(), jq_only_closure()])
        .with_entrypoint(&["/usr/bin/nope"]);
    build_and_push(&no_entry, &reg.image("b/noentry:1"), None);
    let out = run(pare().args(["harden", &reg.image("b/noentry:1")]));
    assert_one_line_error(&out, &["entrypoint", "/usr/bin/nope does not exist"]);
    assert!(!skopeo_inspect_exists(
        &reg.image("b/noentry:1-hardened"),
        None
    ));

    let not_in_path = ImageSpec::new(vec![jq_only_closure()]).with_cmd(&["jqq"]);
    build_and_push(&not_in_path, &reg.image("b/nopath:1"), None);
    let out = run(pare().args(["harden", &reg.image("b/nopath:1")]));
    assert_one_line_error(&out, &["\"jqq\" is not an executable in the image's PATH"]);

    // jq without libjq: the error names the object and the soname.
    let closure: Vec<ClosureEntry> = host_closure(std::path::Path::new(HOST_JQ))
        .into_iter()
        .filter(|e| !e.image_path().contains("libjq"))
        .collect();
    let mut layer = Layer::new();
    for e in closure {
        layer = match e {
            ClosureEntry::File {
                host,
                image_path,
                mode,
            } => layer.file_from_host(host, &format!("/{image_path}"), Some(mode)),
            ClosureEntry::Symlink { image_path, target } => {
                layer.symlink(&format!("/{image_path}"), &target)
            }
        };
    }
    let nolib = ImageSpec::new(vec![layer]).with_entrypoint(&["/usr/bin/jq"]);
    build_and_push(&nolib, &reg.image("b/nolib:1"), None);
    let out = run(pare().args(["harden", &reg.image("b/nolib:1")]));
    assert_one_line_error(
        &out,
        &[
            "/usr/bin/jq: needs libjq.so.1",
            "cannot be found",
            "/usr/lib/x86_64-linux-gnu",
        ],
    );
    assert!(!skopeo_inspect_exists(
        &reg.image("b/nolib:1-hardened"),
        None
    ));
    // --allow-missing proceeds and says so.
    let out = pare_ok(&["harden", &reg.image("b/nolib:1"), "--allow-missing"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: /usr/bin/jq: needs libjq.so.1")
    );
    assert!(skopeo_inspect_exists(
        &reg.image("b/nolib:1-hardened"),
        None
    ));
}

/// An `oci:` layout's layers are checked as the merge reads them (no pass of their own): a
/// flipped byte, bytes appended after a whole gzip stream, or a cut blob is one error line
/// naming the digest, and nothing is written.
#[test]
fn corrupted_blob_is_refused() {
    type Tamper = fn(&mut Vec<u8>);
    let tampers: [(&str, Tamper, &str); 3] = [
        (
            "a flipped byte",
            |b| {
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
            },
            "digest mismatch",
        ),
        (
            "bytes appended",
            |b| b.extend_from_slice(&[0u8; 100]),
            "size mismatch",
        ),
        ("a cut blob", |b| b.truncate(b.len() - 100), "size mismatch"),
    ];
    for (what, tamper, needle) in tampers {
        let dir = tempfile::tempdir().unwrap();
        let built = write_oci_layout(dir.path(), "app", &jq_only_image());
        let layer = &built.layer_digests[0];
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"));
        let mut bytes = std::fs::read(&path).unwrap();
        tamper(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        let out_dir = dir.path().join("out");
        let out = run(pare().args([
            "harden",
            &format!("oci:{}:app", dir.path().display()),
            &format!("oci:{}:h", out_dir.display()),
        ]));
        let line = assert_one_line_error(&out, &[needle, layer]);
        assert!(!out_dir.exists(), "{what}: something was written ({line})");
    }
}

#[test]
fn users_scripts_and_env_shebangs() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("l");
    let app = Layer::new()
        .host_closure(HOST_JQ)
        .host_closure("/usr/bin/env")
        // Real entrypoint scripts are often larger than a page.
        .file(
            "/usr/local/bin/calc",
            format!("#!/usr/bin/jq -nf\n{}1+2\n", "# padding\n".repeat(800)),
            0o755,
        )
        .file(
            "/usr/local/bin/calc-env",
            "#!/usr/bin/env -S jq -nf\n2+2\n",
            0o755,
        )
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/srv/app:/bin/sh\n",
            0o644,
        )
        .file("/etc/group", "root:x:0:\napp:x:1000:\n", 0o644);
    let base = usrmerge_base_layer();
    write_oci_layout(
        &layout,
        "script",
        &ImageSpec::new(vec![base.clone(), app.clone()]).with_cmd(&["calc"]),
    );
    write_oci_layout(
        &layout,
        "envscript",
        &ImageSpec::new(vec![base.clone(), app.clone()]).with_entrypoint(&["calc-env"]),
    );
    write_oci_layout(
        &layout,
        "appuser",
        &ImageSpec::new(vec![base, app])
            .with_entrypoint(&["/usr/bin/jq"])
            .with_user("app"),
    );
    let src = |t: &str| format!("oci:{}:{t}", layout.display());
    let dst = |t: &str| format!("oci:{}:{t}", dir.path().join("out").display());

    for (tag, argv, expect) in [
        ("script", "/usr/local/bin/calc", "3"),
        ("envscript", "/usr/local/bin/calc-env", "4"),
    ] {
        pare_ok(&["harden", &src(tag), &dst(tag)]);
        let u = pull_and_unpack(&dst(tag));
        assert!(!u.path("/usr/bin/sh").exists() && !u.path("/usr/bin/busybox").exists());
        assert_chroot_prints(&u.rootfs(), &[argv], &[("PATH", DEFAULT_PATH)], expect);
    }

    // The image's own non-root user is kept; --user overrides; --user 0 is refused.
    pare_ok(&["harden", &src("appuser"), &dst("appuser")]);
    let u = pull_and_unpack(&dst("appuser"));
    assert_eq!(u.exec_config()["User"], "1000:1000");
    let passwd = std::fs::read_to_string(u.path("/etc/passwd")).unwrap();
    assert!(passwd.contains("app:x:1000:1000:App:/srv/app:"), "{passwd}");
    pare_ok(&["harden", &src("appuser"), &dst("u2"), "--user", "4242:4243"]);
    let cfg: Value = pull_and_unpack(&dst("u2")).config;
    assert_eq!(cfg["config"]["User"], "4242:4243");
    let out = run(pare().args(["harden", &src("appuser"), &dst("u3"), "--user", "0"]));
    assert_one_line_error(&out, &["--user 0"]);
}

#[test]
fn a_missing_archive_is_one_clean_line() {
    let out = run(pare().args(["harden", "docker-archive:/nonexistent/app.tar"]));
    let line = assert_one_line_error(&out, &["/nonexistent/app.tar", "No such file or directory"]);
    assert_eq!(line.matches("No such file").count(), 1, "{line}");
}

#[test]
fn a_registry_that_goes_away_for_a_moment_is_retried() {
    let mut reg = Registry::start();
    build_and_push(&jq_only_image(), &reg.image("r/jq:1"), None);
    // The registry is down when pare starts and back a second later.
    reg.stop();
    let child = pare()
        .args(["harden", &reg.image("r/jq:1")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    reg.restart();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pare: warning: pull manifest:") && err.contains("try 2 of 5"),
        "{err}"
    );
    assert!(skopeo_inspect_exists(&reg.image("r/jq:1-hardened"), None));
}

/// Layers containerd could not extract, or that mean an attack: a hard link to a directory or
/// to nothing, a bare `.wh.` whiteout, a path given twice. Each is one error line naming the
/// layer's digest and the entry; nothing is written.
#[test]
fn layers_that_cannot_be_extracted_are_refused() {
    let cases: Vec<(&str, Layer, &str)> = vec![
        (
            "hard link to a directory",
            Layer::new()
                .dir("/srv/d", 0o755)
                .hardlink("/srv/x", "/srv/d"),
            "/srv/x names /srv/d, which is a directory",
        ),
        (
            "hard link to nothing",
            Layer::new().hardlink("/srv/x", "/srv/nothing"),
            "/srv/x names /srv/nothing, which is missing",
        ),
        (
            "bare whiteout",
            Layer::new().file("/srv/.wh.", b"", 0o644),
            "names no entry",
        ),
        (
            // The harness's layer builder keeps the last of two entries: write the tar here.
            "a path twice",
            Layer::from_tar({
                let mut b = tar::Builder::new(Vec::new());
                for data in [&b"1"[..], &b"2"[..]] {
                    let mut h = tar::Header::new_gnu();
                    h.set_mode(0o644);
                    h.set_size(1);
                    b.append_data(&mut h, "srv/a", data).unwrap();
                }
                b.into_inner().unwrap()
            }),
            "/srv/a appears twice",
        ),
    ];
    for (what, bad, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let spec = jq_only_image().with_layer(bad);
        let built = write_oci_layout(dir.path(), "app", &spec);
        let digest = built.layer_digests.last().unwrap().clone();
        let out_dir = dir.path().join("out");
        let out = run(pare().args([
            "harden",
            &format!("oci:{}:app", dir.path().display()),
            &format!("oci:{}:h", out_dir.display()),
        ]));
        let line = assert_one_line_error(&out, &[needle, &digest, "layer 2"]);
        assert!(!out_dir.exists(), "{what}: something was written ({line})");
    }
}

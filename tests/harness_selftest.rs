//! Exercises the shared test harness itself (registry, image builder, skopeo/umoci helpers)
//! without involving pare, so harness bugs are not mistaken for pare bugs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

fn jq_layer() -> Layer {
    Layer::new()
        .created_by("pare-test: jq + whiteouts")
        .host_closure(HOST_JQ)
        .whiteout(BASE_ONLY_FILE)
        .opaque(BASE_OPAQUE_DIR)
        .file("/opt/data/c.txt", "c\n", 0o644)
}

fn jq_spec() -> ImageSpec {
    ImageSpec::new(vec![usrmerge_base_layer(), jq_layer()])
        .with_entrypoint(&["/usr/bin/jq"])
        .with_cmd(&["-n", "1+1"])
        .with_workdir("/")
        .with_user("0")
        .with_exposed_port("8080/tcp")
        .with_label("org.example.team", "platform")
        .with_extra_config(
            "Healthcheck",
            json!({ "Test": ["CMD", "/usr/bin/jq", "-n", "1"], "Interval": 30_000_000_000u64 }),
        )
}

fn assert_runs_jq(rootfs: &Path) {
    let Some(out) = run_chroot_if_root(
        rootfs,
        &["/usr/bin/jq", "-n", "1+1"],
        &[("PATH", DEFAULT_PATH)],
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "jq in chroot:\n{}",
        describe_output(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
}

#[test]
fn ldd_closure_follows_host_symlink_chains() {
    let ldd = ldd_paths(Path::new(HOST_JQ));
    assert!(
        ldd.contains(&PathBuf::from("/lib64/ld-linux-x86-64.so.2")),
        "{ldd:?}"
    );
    assert!(ldd.iter().any(|p| p.ends_with("libjq.so.1")), "{ldd:?}");

    let closure = host_closure(Path::new(HOST_JQ));
    let has_link = |path: &str, target: &str| {
        closure.contains(&ClosureEntry::Symlink {
            image_path: path.into(),
            target: target.into(),
        })
    };
    assert!(has_link("lib", "usr/lib"), "{closure:#?}");
    assert!(has_link("lib64", "usr/lib64"), "{closure:#?}");
    let libjq_link = fs::read_link("/usr/lib/x86_64-linux-gnu/libjq.so.1").expect("host libjq");
    assert!(has_link(
        "usr/lib/x86_64-linux-gnu/libjq.so.1",
        &libjq_link.to_string_lossy()
    ));
    let files: Vec<&str> = closure
        .iter()
        .filter(|e| matches!(e, ClosureEntry::File { .. }))
        .map(ClosureEntry::image_path)
        .collect();
    assert!(files.contains(&"usr/bin/jq"), "{files:?}");
    assert!(
        files.contains(&"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        "{files:?}"
    );
    assert!(
        files.contains(&"usr/lib/x86_64-linux-gnu/libc.so.6"),
        "{files:?}"
    );
    assert!(
        ldd_paths(Path::new(HOST_BUSYBOX)).is_empty(),
        "busybox is static"
    );
}

#[test]
fn layer_tar_has_whiteouts_parents_and_root_ownership() {
    let layer = jq_layer().compression(Compression::Zstd);
    let (blob, media_type, diff_id) = layer.blob();
    assert_eq!(media_type, MEDIA_TYPE_LAYER_ZSTD);
    assert_eq!(diff_id, sha256_digest(&layer.tar_bytes()));
    let entries = list_layer_blob(&blob);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "etc/.wh.base-only.txt",
        "opt/data/.wh..wh..opq",
        "opt/data/c.txt",
        "usr/bin/jq",
        "usr/",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    // Parents precede children.
    for (i, entry) in entries.iter().enumerate() {
        let trimmed = entry.path.trim_end_matches('/');
        if let Some((parent, _)) = trimmed.rsplit_once('/') {
            let parent_pos = paths.iter().position(|p| p.trim_end_matches('/') == parent);
            assert!(
                parent_pos.is_some_and(|p| p < i),
                "parent of {} after it",
                entry.path
            );
        }
    }
    assert!(entries.iter().all(|e| e.uid == 0 && e.gid == 0));
    assert!(!paths.iter().any(|p| p.starts_with('/')));
}

#[test]
fn image_round_trips_through_registry_skopeo_and_umoci() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().expect("layout tempdir");
    let spec = jq_spec();
    let built = write_oci_layout(layout.path(), "v1", &spec);
    // A second tag in the same layout must not disturb the first.
    write_oci_layout(
        layout.path(),
        "other",
        &ImageSpec::new(vec![Layer::new().file("/x", "x", 0o644)]),
    );
    assert_eq!(
        read_layout_image(layout.path(), "v1").manifest_digest,
        built.manifest_digest
    );

    let dest = registry.image("team/jq:1");
    push_layout(layout.path(), "v1", &dest, None);
    assert!(skopeo_inspect_exists(&dest, None));
    assert!(!skopeo_inspect_exists(
        &registry.image("team/jq:nope"),
        None
    ));
    assert_eq!(skopeo_manifest_digest(&dest, None), built.manifest_digest);
    assert_eq!(registry.tags("team/jq"), vec!["1".to_string()]);
    assert_eq!(
        skopeo_config(&dest, None)["config"]["Entrypoint"],
        json!(["/usr/bin/jq"])
    );

    let unpacked = pull_and_unpack(&registry.docker_ref("team/jq:1"));
    let rootfs = unpacked.rootfs();

    // Config survived untouched.
    let cfg = unpacked.exec_config();
    assert_eq!(cfg["Entrypoint"], json!(["/usr/bin/jq"]));
    assert_eq!(cfg["Cmd"], json!(["-n", "1+1"]));
    assert_eq!(cfg["Env"], json!([format!("PATH={DEFAULT_PATH}")]));
    assert_eq!(cfg["User"], "0");
    assert_eq!(cfg["ExposedPorts"], json!({ "8080/tcp": {} }));
    assert_eq!(cfg["Labels"]["org.example.team"], "platform");
    assert_eq!(cfg["Healthcheck"]["Test"][1], "/usr/bin/jq");
    assert_eq!(unpacked.config["rootfs"]["diff_ids"], json!(built.diff_ids));
    assert_eq!(unpacked.config["history"].as_array().map(Vec::len), Some(2));

    // Whiteout and opaque directory as applied by umoci.
    assert!(!unpacked.path(BASE_ONLY_FILE).exists());
    let data: Vec<String> = fs::read_dir(unpacked.path(BASE_OPAQUE_DIR))
        .expect("opaque dir exists")
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(data, vec!["c.txt".to_string()]);

    // Base layer content.
    for (link, target) in USRMERGE_LINKS {
        assert_eq!(
            fs::read_link(unpacked.path(link)).expect(link),
            PathBuf::from(target)
        );
    }
    assert_eq!(
        fs::read_link(unpacked.path("/usr/lib/x86_64-linux-gnu/libjq.so.1")).expect("libjq link"),
        fs::read_link("/usr/lib/x86_64-linux-gnu/libjq.so.1").expect("host libjq link")
    );
    assert_eq!(mode_of(&rootfs, "/tmp"), Some(0o1777));
    let mut expected_setid: Vec<PathBuf> = BASE_SETUID_FILES
        .iter()
        .chain(BASE_SETGID_FILES.iter())
        .map(PathBuf::from)
        .collect();
    expected_setid.sort();
    assert_eq!(find_setid_files(&rootfs), expected_setid);
    assert!(list_paths(&rootfs).contains("/usr/bin/busybox"));

    assert_runs_jq(&rootfs);
    if is_root() {
        let out = run_chroot(
            &rootfs,
            &["/bin/sh", "-c", "id -u; cat /opt/data/c.txt"],
            &[],
        );
        assert!(out.status.success(), "{}", describe_output(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{NONROOT_UID}\nc\n")
        );
    }
}

#[test]
fn closure_alone_runs_from_a_local_oci_layout() {
    let layout = tempfile::tempdir().expect("layout tempdir");
    let spec = ImageSpec::new(vec![Layer::new().host_closure(HOST_JQ)]).with_entrypoint(&[HOST_JQ]);
    write_oci_layout(layout.path(), "jq", &spec);
    let unpacked = pull_and_unpack(&format!("oci:{}:jq", layout.path().display()));
    assert_eq!(
        unpacked.layout,
        layout.path(),
        "local single-manifest layouts are not copied"
    );
    assert_runs_jq(&unpacked.rootfs());
}

#[test]
fn auth_registry_requires_credentials() {
    let registry = Registry::start_with_auth("alice", "s3cret");
    let layout = tempfile::tempdir().expect("layout tempdir");
    write_oci_layout(
        layout.path(),
        "t",
        &ImageSpec::new(vec![Layer::new().file("/hello.txt", "hello\n", 0o644)]),
    );
    let dest = registry.image("private/hello:1");

    let denied = try_push_layout(layout.path(), "t", &dest, None, &[]);
    assert!(denied.is_err(), "anonymous push must fail");
    let wrong = try_push_layout(layout.path(), "t", &dest, Some(("alice", "wrong")), &[]);
    assert!(wrong.is_err(), "push with a wrong password must fail");

    push_layout(layout.path(), "t", &dest, registry.creds());
    assert!(!skopeo_inspect_exists(&dest, None));
    assert!(skopeo_inspect_exists(&dest, registry.creds()));
    assert_eq!(registry.get("/v2/", None).status, 200);
    assert_eq!(registry.tags("private/hello"), vec!["1".to_string()]);

    let unpacked = pull_and_unpack_with_creds(&dest, registry.creds());
    assert_eq!(
        fs::read_to_string(unpacked.path("/hello.txt")).expect("hello"),
        "hello\n"
    );
}

#[test]
fn multiarch_index_and_docker_format_push() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().expect("layout tempdir");
    let amd64 = ImageSpec::new(vec![Layer::new().file("/arch", "amd64\n", 0o644)]);
    let arm64 = ImageSpec::new(vec![Layer::new().file("/arch", "arm64\n", 0o644)])
        .with_platform("arm64", Some("v8"));
    let built = write_oci_multiarch_layout(layout.path(), "multi", &[amd64, arm64]);

    let dest = registry.image("multi/arch:1");
    push_layout_with_args(layout.path(), "multi", &dest, None, &["--all"]);
    assert_eq!(skopeo_manifest_digest(&dest, None), built.index_digest);
    let index: serde_json::Value =
        serde_json::from_slice(&skopeo_raw_manifest(&dest, None)).expect("index JSON");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    let unpacked = pull_and_unpack(&dest);
    assert_eq!(
        fs::read_to_string(unpacked.path("/arch")).expect("arch"),
        "amd64\n"
    );

    // Docker schema 2 manifests for the single-platform case.
    let single = tempfile::tempdir().expect("layout tempdir");
    write_oci_layout(single.path(), "d", &jq_spec());
    let docker_dest = registry.image("docker/jq:1");
    push_layout_with_args(
        single.path(),
        "d",
        &docker_dest,
        None,
        &["--format", "v2s2"],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo_raw_manifest(&docker_dest, None)).expect("manifest JSON");
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
    let response = registry.get(
        "/v2/docker/jq/manifests/1",
        Some(MEDIA_TYPE_DOCKER_MANIFEST),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_runs_jq(&pull_and_unpack(&docker_dest).rootfs());
}

//! Image formats and program kinds: Docker v2 schema 2 manifests, multi-platform indexes,
//! zstd and plain-tar layers, static binaries, musl programs, and malformed ELF.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn jq_spec(compression: Compression) -> ImageSpec {
    ImageSpec::new(vec![
        usrmerge_base_layer().compression(compression),
        Layer::new().host_closure(HOST_JQ).compression(compression),
    ])
    .with_entrypoint(&["/usr/bin/jq"])
    .with_cmd(&["-n", "6*7"])
}

fn runs_jq(image: &str) {
    let u = pull_and_unpack(image);
    assert_eq!(u.exec_config()["User"], "65532:65532");
    assert_chroot_prints(&u.rootfs(), &["/usr/bin/jq", "-n", "6*7"], &[], "42");
}

#[test]
fn docker_v2s2_zstd_and_plain_tar_sources() {
    let reg = Registry::start();
    // Docker v2 schema 2 (skopeo converts the manifest and layer media types).
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "img", &jq_spec(Compression::Gzip));
    push_layout_with_args(
        dir.path(),
        "img",
        &reg.image("f/docker:1"),
        None,
        &["--format", "v2s2"],
    );
    let raw: Value =
        serde_json::from_slice(&skopeo_raw_manifest(&reg.image("f/docker:1"), None)).unwrap();
    assert_eq!(raw["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
    pare_ok(&["harden", &reg.image("f/docker:1")]);
    runs_jq(&reg.docker_ref("f/docker:1-hardened"));

    for (name, c) in [("zstd", Compression::Zstd), ("tar", Compression::None)] {
        let dir = tempfile::tempdir().unwrap();
        let src = format!("oci:{}:img", dir.path().display());
        write_oci_layout(dir.path(), "img", &jq_spec(c));
        let dest = format!("oci:{}:h", dir.path().join(name).display());
        let out = run(pare().args(["harden", &src, &dest]));
        assert!(out.status.success(), "{name}: {}", describe_output(&out));
        runs_jq(&dest);
    }
}

/// `--compression zstd`: the layer is `tar+zstd`, the recipe says so, and the result is read
/// by skopeo (decompressed to gzip, then unpacked by umoci and run as 65532 in a chroot) and
/// by podman (containers/storage unpacks it; its export runs the same). One thread and all cores give the same manifest, gzip and
/// zstd alike.
#[test]
fn zstd_results_are_read_by_skopeo_umoci_and_podman() {
    let reg = Registry::start();
    build_and_push(&jq_spec(Compression::Gzip), &reg.image("f/jq:1"), None);
    let digest = |tag: &str| {
        sha256_digest(&skopeo_raw_manifest(
            &reg.image(&format!("f/jq:{tag}")),
            None,
        ))
    };
    for (c, tag) in [("zstd", "z"), ("gzip", "g")] {
        let src = reg.image("f/jq:1");
        pare_ok(&[
            "harden",
            &src,
            &reg.image(&format!("f/jq:{tag}1")),
            "--compression",
            c,
            "--threads",
            "1",
        ]);
        pare_ok(&[
            "harden",
            &src,
            &reg.image(&format!("f/jq:{tag}n")),
            "--compression",
            c,
            "--threads",
            "16",
        ]);
        assert_eq!(
            digest(&format!("{tag}1")),
            digest(&format!("{tag}n")),
            "{c}: threads changed the bytes"
        );
        let raw: Value = serde_json::from_slice(&skopeo_raw_manifest(
            &reg.image(&format!("f/jq:{tag}1")),
            None,
        ))
        .unwrap();
        let media = raw["layers"][0]["mediaType"].as_str().unwrap();
        assert_eq!(media, format!("application/vnd.oci.image.layer.v1.tar+{c}"));
        let recipe = raw["annotations"]["dev.pare.recipe"].as_str().unwrap();
        assert!(recipe.contains(&format!("layer={c}-")), "{recipe}");
    }
    // umoci 0.4 reads no zstd: skopeo (containers/image) decompresses and recompresses it.
    let g = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", "--dest-compress"])
            .args(["--dest-compress-format", "gzip", &reg.docker_ref("f/jq:z1")])
            .arg(format!("oci:{}:img", g.path().display())),
    );
    runs_jq(&format!("oci:{}:img", g.path().display()));
    let Some(podman) = find_tool("podman") else {
        return skip("podman is not installed: no runtime read the zstd result");
    };
    let d = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let mut c = Command::new(&podman);
        c.arg("--root")
            .arg(d.path().join("root"))
            .arg("--runroot")
            .arg(d.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args);
        let out = run(&mut c);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        &reg.docker_ref("f/jq:z1"),
    ]);
    let id = podman(&["create", &reg.docker_ref("f/jq:z1")]);
    let tar = d.path().join("export.tar");
    podman(&["export", "-o", tar.to_str().unwrap(), &id]);
    let rootfs = d.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs),
    );
    assert_chroot_prints(&rootfs, &["/usr/bin/jq", "-n", "6*7"], &[], "42");
}

#[test]
fn multi_platform_index_picks_the_platform() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let amd64 = jq_spec(Compression::Gzip).with_label("arch", "amd64");
    // A second platform: the tests only need its index entry to be distinct.
    let arm64 = ImageSpec::new(vec![Layer::new().file(
        "/usr/bin/app",
        "#!/usr/bin/app\n",
        0o755,
    )])
    .with_entrypoint(&["/usr/bin/app"])
    .with_platform("arm64", Some("v8"))
    .with_label("arch", "arm64");
    let built = write_oci_multiarch_layout(dir.path(), "multi", &[arm64, amd64]);
    push_layout_with_args(
        dir.path(),
        "multi",
        &reg.image("f/multi:1"),
        None,
        &["--all"],
    );
    // Every platform by default: the arm64 entry's entrypoint is broken, so nothing is written.
    let out = run(pare().args(["harden", &reg.image("f/multi:1")]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/usr/bin/app"),
        "{}",
        describe_output(&out)
    );
    assert!(!skopeo_inspect_exists(
        &reg.image("f/multi:1-hardened"),
        None
    ));
    // One named platform: a single-platform result.
    let out = pare_ok(&[
        "harden",
        &reg.image("f/multi:1"),
        "--platform",
        "linux/amd64",
        "--report",
        "-",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["source"]["platform"], "linux/amd64");
    assert_eq!(
        r["source"]["digest"],
        Value::String(built.index_digest.clone()),
        "base digest is the index's"
    );
    let u = pull_and_unpack(&reg.docker_ref("f/multi:1-hardened"));
    assert_eq!(u.config["config"]["Labels"]["arch"], "amd64");

    // --platform selects the other one (whose "entrypoint" is a broken script: a clean error).
    let out = run(pare().args([
        "harden",
        &reg.image("f/multi:1"),
        "--platform",
        "linux/arm64",
        "--dry-run",
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/usr/bin/app"),
        "{}",
        describe_output(&out)
    );
    let out = run(pare().args([
        "harden",
        &reg.image("f/multi:1"),
        "--platform",
        "linux/s390x",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no linux/s390x variant") && err.contains("linux/arm64/v8, linux/amd64"),
        "{err}"
    );
}

#[test]
fn platform_named_for_a_single_platform_image_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "one", &jq_spec(Compression::Gzip));
    let src = format!("oci:{}:one", dir.path().display());
    let out = run(pare().args(["harden", "--dry-run", &src, "--platform", "linux/arm64"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a linux/amd64 image, not linux/arm64"),
        "{err}"
    );
    pare_ok(&["harden", "--dry-run", &src, "--platform", "linux/amd64"]);
}

#[test]
fn static_binary() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new().file_from_host(HOST_BUSYBOX, "/usr/bin/busybox", Some(0o755));
    write_oci_layout(
        dir.path(),
        "s",
        &ImageSpec::new(vec![layer]).with_entrypoint(&["/usr/bin/busybox", "true"]),
    );
    let dest = format!("oci:{}:h", dir.path().join("out").display());
    let out = pare_ok(&[
        "harden",
        &format!("oci:{}:s", dir.path().display()),
        &dest,
        "--report",
        "-",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "file")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec!["/etc/group", "/etc/passwd", "/usr/bin/busybox"]);
    if is_root() {
        let u = pull_and_unpack(&dest);
        let o = run_chroot(&u.rootfs(), &["/usr/bin/busybox", "true"], &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
    }
}

#[test]
fn musl_program_with_path_file() {
    let Some(musl_gcc) = find_tool("musl-gcc") else {
        panic!("musl-gcc is needed for this test (apt-get install musl-tools)");
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("greet.c"),
        "const char *greet(void){return \"hello from musl\";}\n",
    )
    .unwrap();
    std::fs::write(
        p.join("main.c"),
        "#include <stdio.h>\nconst char *greet(void);\nint main(void){puts(greet());return 0;}\n",
    )
    .unwrap();
    let cc = |args: &[&str]| run_ok(Command::new(&musl_gcc).current_dir(p).args(args));
    cc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libgreet.so.1",
        "-o",
        "libgreet.so.1",
        "greet.c",
    ]);
    cc(&["-o", "hello", "main.c", "-L.", "-l:libgreet.so.1"]);
    let musl_libc = std::fs::canonicalize("/lib/ld-musl-x86_64.so.1").unwrap();
    let layer = Layer::new()
        .file_from_host(&musl_libc, "/lib/ld-musl-x86_64.so.1", Some(0o755))
        .symlink("/lib/libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1")
        .file(
            "/etc/ld-musl-x86_64.path",
            "/opt/greet/lib\n/lib\n/usr/lib\n",
            0o644,
        )
        .file_from_host(
            p.join("libgreet.so.1"),
            "/opt/greet/lib/libgreet.so.1",
            Some(0o755),
        )
        .file_from_host(
            p.join("libgreet.so.1"),
            "/usr/lib/libgreet.so.1",
            Some(0o755),
        )
        .file_from_host(p.join("hello"), "/usr/bin/hello", Some(0o755))
        .file_from_host(HOST_BUSYBOX, "/bin/busybox", Some(0o755))
        .symlink("/bin/sh", "busybox");
    let layout = p.join("l");
    write_oci_layout(
        &layout,
        "m",
        &ImageSpec::new(vec![layer]).with_entrypoint(&["/usr/bin/hello"]),
    );
    let dest = format!("oci:{}:h", p.join("out").display());
    let out = pare_ok(&[
        "harden",
        &format!("oci:{}:m", layout.display()),
        &dest,
        "--report",
        "-",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/opt/greet/lib/libgreet.so.1"),
        "found through the musl path file: {paths:?}"
    );
    assert!(!paths.contains(&"/usr/lib/libgreet.so.1"));
    assert!(paths.contains(&"/etc/ld-musl-x86_64.path"));
    assert!(!paths.contains(&"/bin/busybox"));
    if is_root() {
        let u = pull_and_unpack(&dest);
        let o = run_chroot(&u.rootfs(), &["/usr/bin/hello"], &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello from musl");
    }
}

#[test]
fn malformed_elf_entrypoint_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let jq = std::fs::read(HOST_JQ).unwrap();
    // Valid header, program headers pointing past the end of a truncated file.
    let mut bad = jq[..200].to_vec();
    bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes()[..8]);
    let layer = Layer::new().file("/usr/bin/app", &bad, 0o755);
    write_oci_layout(
        dir.path(),
        "bad",
        &ImageSpec::new(vec![layer]).with_entrypoint(&["/usr/bin/app"]),
    );
    let out = run(pare().args([
        "harden",
        &format!("oci:{}:bad", dir.path().display()),
        "--dry-run",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pare: error: /usr/bin/app: malformed ELF"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(Path::new(HOST_JQ).exists());
}

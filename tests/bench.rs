//! `just bench`: the figures quoted in issue notes. A large Debian-like image (this machine's
//! /usr/bin and a slice of its libraries, ~hundreds of MB) with curl as the application, in a
//! real registry: time `pare harden` against `skopeo copy` of the same image between two
//! repositories of the same registry. Ignored by default (run with --ignored), never asserts
//! on time.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;

const LIB_BUDGET: u64 = 250 << 20;

fn userland_layer() -> Layer {
    let mut layer = Layer::new().created_by("bench: debian userland");
    let mut budget = LIB_BUDGET;
    for dir in ["/usr/bin", "/usr/lib/x86_64-linux-gnu"] {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if !meta.is_file() || meta.len() > (32 << 20) {
                continue;
            }
            if dir.ends_with("gnu") {
                if budget < meta.len() {
                    continue;
                }
                budget -= meta.len();
            }
            layer = layer.file_from_host(&p, p.to_str().unwrap(), None);
        }
    }
    layer
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn large_image_pare_vs_skopeo() {
    let reg = Registry::start();
    let app = Layer::new()
        .created_by("bench: curl app")
        .host_closure("/usr/bin/curl")
        .file_from_host(
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/ssl/certs/ca-certificates.crt",
            Some(0o644),
        )
        .whiteout(BASE_ONLY_FILE);
    let spec = ImageSpec::new(vec![usrmerge_base_layer(), userland_layer(), app])
        .with_entrypoint(&["/usr/bin/curl"])
        .with_cmd(&["--version"]);
    let t = Instant::now();
    build_and_push(&spec, &reg.image("big/curl:1"), None);
    eprintln!(
        "built and pushed the source image in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let t = Instant::now();
    let out = pare()
        .args(["-v", "harden", &reg.image("big/curl:1"), "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let pare_secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", describe_output(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    for l in log
        .lines()
        .filter(|l| l.contains("seconds") || l.contains('→'))
    {
        eprintln!("{l}");
    }

    let t = Instant::now();
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &reg.docker_ref("big/curl:1"),
        &reg.docker_ref("other/curl:1"),
    ]));
    let skopeo_secs = t.elapsed().as_secs_f64();
    // A full pull, for scale (the copy above can mount blobs inside one registry).
    let t = Instant::now();
    run_ok(
        std::process::Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                &reg.docker_ref("big/curl:1"),
            ])
            .arg(format!("oci:{}:x", dir.path().join("pulled").display())),
    );
    let pull_secs = t.elapsed().as_secs_f64();

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let files = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "file")
        .count();
    eprintln!(
        "FIGURES: before {} B uncompressed / {} B compressed in {} layers; after {} B / {} B; {} files; pare harden {:.2}s; skopeo copy between repositories {:.2}s; skopeo copy to an oci layout {:.2}s",
        r["sizes"]["before"]["uncompressed"],
        r["sizes"]["before"]["compressed"],
        r["layers_before"],
        r["sizes"]["after"]["uncompressed"],
        r["sizes"]["after"]["compressed"],
        files,
        pare_secs,
        skopeo_secs,
        pull_secs
    );
    if is_root() {
        let u = pull_and_unpack(&reg.docker_ref("big/curl:1-hardened"));
        let o = run_chroot(&u.rootfs(), &["/usr/bin/curl", "--version"], &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
        let o = run_chroot(
            &u.rootfs(),
            &["/usr/bin/curl", "-sS", "file:///etc/os-release"],
            &[],
        );
        assert!(o.status.success(), "{}", describe_output(&o));
        assert!(Path::new(&u.path("/etc/ssl/certs/ca-certificates.crt")).is_file());
    }
}

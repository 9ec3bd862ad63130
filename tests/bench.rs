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

/// `pare batch` over 8 tags in 4 repositories that share the large base (two layers, ~490 MB
/// uncompressed) and differ in a small top layer, against `pare harden` of each, one after
/// another. Peak memory (max RSS) by /usr/bin/time when it is there.
#[test]
#[ignore = "benchmark: run with `just bench`"]
fn batch_of_images_sharing_a_large_base() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let app = Layer::new()
        .created_by("bench: curl app")
        .host_closure("/usr/bin/curl");
    let spec = ImageSpec::new(vec![usrmerge_base_layer(), userland_layer(), app])
        .with_entrypoint(&["/usr/bin/curl"])
        .with_cmd(&["--version"]);
    let t = Instant::now();
    let built = write_oci_layout(&layout, "v0", &spec);
    // Variants: the same layers plus a small one of their own (no recompression of the base).
    for k in 1..8 {
        let extra = Layer::new().file("/etc/variant", format!("{k}\n"), 0o644);
        let (blob, media_type, diff_id) = extra.blob();
        let digest = write_blob(&layout, &blob);
        let mut diff_ids = built.diff_ids.clone();
        diff_ids.push(diff_id);
        let config = serde_json::to_vec(&spec.config_json(&diff_ids)).unwrap();
        let config_digest = write_blob(&layout, &config);
        let mut manifest = built.manifest.clone();
        manifest["config"]["digest"] = config_digest.into();
        manifest["config"]["size"] = config.len().into();
        manifest["layers"].as_array_mut().unwrap().push(
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": blob.len()}),
        );
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let md = write_blob(&layout, &bytes);
        set_layout_tag(
            &layout,
            &format!("v{k}"),
            &serde_json::json!({"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": md, "size": bytes.len()}),
        );
    }
    let names: Vec<String> = (0..8)
        .map(|k| format!("fleet/svc{}:{}", k % 4, k / 4))
        .collect();
    for (k, name) in names.iter().enumerate() {
        push_layout(&layout, &format!("v{k}"), &reg.image(name), None);
    }
    eprintln!(
        "built and pushed 8 images sharing a large base in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let target = format!("{}/fleet", reg.host());
    let time = std::path::Path::new("/usr/bin/time").exists();
    // (seconds, max RSS in KiB when measured)
    let timed = |args: &[&str]| -> (f64, Option<u64>) {
        let rss = dir.path().join("rss");
        let mut c = if time {
            let mut c = std::process::Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o"])
                .arg(&rss)
                .arg(env!("CARGO_BIN_EXE_pare"));
            c
        } else {
            pare()
        };
        c.args(args);
        let t = Instant::now();
        let out = c.output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "{}", describe_output(&out));
        let kib = std::fs::read_to_string(&rss)
            .ok()
            .and_then(|s| s.trim().lines().last()?.trim().parse().ok());
        (secs, kib)
    };
    let report = dir.path().join("b.json");
    let report_s = report.to_str().unwrap();
    let jobs1 = timed(&["batch", &target, "--jobs", "1", "--report", report_s]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["hardened"], 8, "{r}");
    let jobs2 = timed(&["batch", &target, "--jobs", "2", "--force"]);
    let noop = timed(&["batch", &target, "--jobs", "2"]);
    let t = Instant::now();
    let mut one_rss = None;
    for name in &names {
        let (_, kib) = timed(&[
            "harden",
            &reg.image(name),
            &reg.image(&format!("{name}-one")),
        ]);
        one_rss = one_rss.max(kib);
    }
    let separate = t.elapsed().as_secs_f64();
    let mb = |k: Option<u64>| k.map_or("n/a".to_string(), |k| format!("{} MiB", k / 1024));
    eprintln!(
        "FIGURES: 8 images of {} B each (uncompressed), sharing their base: pare batch --jobs 1 {:.2}s (max RSS {}); --jobs 2 --force {:.2}s (max RSS {}); no-op re-run {:.2}s; pare harden of each, one after another {:.2}s (max RSS {}); shared: {} downloads, {} parses, {} reads avoided",
        r["items"][0]["size_before"],
        jobs1.0,
        mb(jobs1.1),
        jobs2.0,
        mb(jobs2.1),
        noop.0,
        separate,
        mb(one_rss),
        r["layers_reused"],
        r["parses_reused"],
        r["reads_avoided"],
    );
}

//! `just bench`: the figures quoted in issue notes and the README. Debian-like images made of
//! this machine's /usr/bin and libraries with curl as the application, in a real registry:
//! `pare harden` against the `gzip -dc` floor of the same layer blobs and `skopeo copy`, side by
//! side in one run; then `pare batch` over images sharing a base. Ignored by default (run with
//! --ignored), never asserts on time.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;

const LIB_BUDGET: u64 = 420 << 20;

/// Host files of `dir` (sorted, regular, at most 32 MiB each) whose names fall in
/// `part`/`of` of the list, up to `budget` bytes.
fn host_files(dir: &str, part: usize, of: usize, mut budget: u64) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (i, p) in names.into_iter().enumerate() {
        if i % of != part {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() > (32 << 20) || budget < meta.len() {
            continue;
        }
        budget -= meta.len();
        out.push(p);
    }
    out
}

fn layer_of(what: &str, files: &[std::path::PathBuf]) -> Layer {
    let mut layer = Layer::new().created_by(what);
    for p in files {
        layer = layer.file_from_host(p, p.to_str().unwrap(), None);
    }
    layer
}

fn userland_layer() -> Layer {
    let mut files = host_files("/usr/bin", 0, 1, u64::MAX);
    files.extend(host_files("/usr/lib/x86_64-linux-gnu", 0, 1, LIB_BUDGET));
    layer_of("bench: debian userland", &files)
}

fn curl_app() -> Layer {
    Layer::new()
        .created_by("bench: curl app")
        .host_closure("/usr/bin/curl")
        .file_from_host(
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/ssl/certs/ca-certificates.crt",
            Some(0o644),
        )
        .whiteout(BASE_ONLY_FILE)
}

fn curl_spec(layers: Vec<Layer>) -> ImageSpec {
    ImageSpec::new(layers)
        .with_entrypoint(&["/usr/bin/curl"])
        .with_cmd(&["--version"])
}

/// pare, under `/usr/bin/time` writing its maximum RSS (KiB) to `rss` when `time`.
fn pare_timed(time: bool, rss: &Path) -> std::process::Command {
    if time {
        let mut c = std::process::Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(rss)
            .arg(env!("CARGO_BIN_EXE_pare"));
        c
    } else {
        pare()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One bench image, side by side in one run: the `gzip -dc` floor of its layer blobs (one
/// thread, to /dev/null), `skopeo copy` registry→registry and registry→oci layout, and `pare
/// harden` registry→registry five times (median, min–max, peak RSS, phase times of the median
/// run), with the ratio pare ÷ floor.
fn bench_image(reg: &Registry, name: &str, spec: &ImageSpec) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let t = Instant::now();
    let built = write_oci_layout(&layout, "img", spec);
    let src = reg.image(&format!("bench/{name}:1"));
    push_layout(&layout, "img", &src, None);
    eprintln!(
        "[{name}] built and pushed in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    for d in &built.layer_digests {
        let blob = layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::fs::File::open(blob).unwrap())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(out.success());
    }
    let floor = t.elapsed().as_secs_f64();

    let t = Instant::now();
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &reg.docker_ref(&format!("bench/{name}:1")),
        &reg.docker_ref(&format!("bench-copy/{name}:1")),
    ]));
    let skopeo_reg = t.elapsed().as_secs_f64();
    let t = Instant::now();
    run_ok(
        std::process::Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                &reg.docker_ref(&format!("bench/{name}:1")),
            ])
            .arg(format!("oci:{}:x", dir.path().join("pulled").display())),
    );
    let skopeo_oci = t.elapsed().as_secs_f64();

    let time = Path::new("/usr/bin/time").exists();
    let mut runs = Vec::new();
    for i in 0..5 {
        let rss = dir.path().join("rss");
        let report = dir.path().join(format!("r{i}.json"));
        let mut c = pare_timed(time, &rss);
        c.args([
            "-v",
            "harden",
            &src,
            &reg.image(&format!("bench/{name}:h{i}")),
        ])
        .arg("--report")
        .arg(&report);
        let t = Instant::now();
        let out = c.output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "{}", describe_output(&out));
        let kib: Option<u64> = std::fs::read_to_string(&rss)
            .ok()
            .and_then(|s| s.trim().lines().last()?.trim().parse().ok());
        runs.push((
            secs,
            kib,
            String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
        ));
    }
    let mut secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let med = median(&mut secs);
    let (min, max) = (secs[0], secs[secs.len() - 1]);
    let rss = runs.iter().filter_map(|r| r.1).max();
    let mid = runs
        .iter()
        .find(|r| r.0 == med)
        .expect("the median is one of the runs");
    let phases: Vec<String> = mid
        .2
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" seconds=")?;
            let secs: f64 = tail.split_whitespace().next()?.parse().ok()?;
            let what = head.rsplit(": ").next()?.trim();
            Some(format!("{what} {secs:.2}s"))
        })
        .collect();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mid.3).unwrap()).unwrap();
    let lr = &r["layer_reads"];
    let inflated = (lr["merge_bytes"].as_u64().unwrap() + lr["later_bytes"].as_u64().unwrap())
        as f64
        / lr["uncompressed_bytes"].as_u64().unwrap().max(1) as f64;
    eprintln!(
        "FIGURES [{name}]: {} layers, {} B compressed, {} B uncompressed → {} B; gzip -dc floor {floor:.2}s; skopeo copy registry→registry {skopeo_reg:.2}s, registry→oci {skopeo_oci:.2}s; pare harden median {med:.2}s (min {min:.2}s, max {max:.2}s) = {:.2}x the floor; peak RSS {}; layers inflated {inflated:.3}x; phases of the median run: {}",
        r["layers_before"],
        r["sizes"]["before"]["compressed"],
        r["sizes"]["before"]["uncompressed"],
        r["sizes"]["after"]["compressed"],
        med / floor,
        rss.map_or("n/a".into(), |k| format!("{} MiB", k / 1024)),
        phases.join(", "),
    );
}

/// The bench images: nginx-like (two layers, ~150 MB), six layers (~400 MB), and a large one
/// (three layers, ~1 GiB uncompressed). A hardened result is run to show it works.
#[test]
#[ignore = "benchmark: run with `just bench`"]
fn harden_against_the_inflate_floor() {
    let reg = Registry::start();
    let mut base = usrmerge_base_layer();
    for p in host_files("/usr/lib/x86_64-linux-gnu", 0, 1, 110 << 20) {
        base = base.file_from_host(&p, p.to_str().unwrap(), None);
    }
    bench_image(&reg, "two-layers", &curl_spec(vec![base, curl_app()]));
    let six = vec![
        usrmerge_base_layer(),
        layer_of("bench: bin 1", &host_files("/usr/bin", 0, 2, 150 << 20)),
        layer_of("bench: bin 2", &host_files("/usr/bin", 1, 2, 150 << 20)),
        layer_of(
            "bench: lib 1",
            &host_files("/usr/lib/x86_64-linux-gnu", 0, 2, 60 << 20),
        ),
        layer_of(
            "bench: lib 2",
            &host_files("/usr/lib/x86_64-linux-gnu", 1, 2, 60 << 20),
        ),
        curl_app(),
    ];
    bench_image(&reg, "six-layers", &curl_spec(six));
    bench_image(
        &reg,
        "large",
        &curl_spec(vec![usrmerge_base_layer(), userland_layer(), curl_app()]),
    );
    if is_root() {
        let u = pull_and_unpack(&reg.docker_ref("bench/large:h0"));
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
        let mut c = pare_timed(time, &rss);
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

//! Each layer is decompressed once per `pare harden`: the merge pass captures what the trace and
//! the plan read, so neither inflates a layer again. The report's `layer_reads` counts the
//! bytes decompressed (pare's own count, checked here against the layers' sizes as skopeo sees
//! them), and the result does not depend on the capture or on the number of threads.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// The real file behind one of jq's libraries on this machine.
fn jq_library(name: &str) -> std::path::PathBuf {
    let out = run_ok(std::process::Command::new("ldd").arg(HOST_JQ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("{name} not among jq's libraries:\n{text}"));
    let path = line
        .split("=>")
        .nth(1)
        .unwrap()
        .split('(')
        .next()
        .unwrap()
        .trim();
    std::fs::canonicalize(path).unwrap()
}

/// Three layers: jq and its libraries at the bottom, an unrelated middle layer (documentation
/// and a data file), and a top layer that replaces one of jq's libraries.
fn three_layers() -> ImageSpec {
    let onig = jq_library("libonig");
    let image_path = onig.to_str().unwrap().to_string();
    let docs = "x".repeat(3 << 20);
    ImageSpec::new(vec![
        usrmerge_base_layer().host_closure(HOST_JQ),
        Layer::new()
            .dir("/usr/share/doc/app", 0o755)
            .file("/usr/share/doc/app/manual.txt", docs, 0o644)
            .file("/opt/data/c.txt", "c\n", 0o644),
        Layer::new().file_from_host(&onig, &image_path, Some(0o644)),
    ])
    .with_entrypoint(&["/usr/bin/jq"])
    .with_cmd(&["-n", "1+1"])
}

fn layer_reads(out: &Output) -> Value {
    let r: Value = serde_json::from_slice(&out.stdout).expect("report");
    r["layer_reads"].clone()
}

#[test]
fn each_layer_is_inflated_once_and_the_result_does_not_depend_on_threads_or_capture() {
    let reg = Registry::start();
    let src = reg.image("once/app:1");
    let dir = tempfile::tempdir().unwrap();
    let built = write_oci_layout(dir.path(), "img", &three_layers());
    push_layout(dir.path(), "img", &src, None);
    // The layers' uncompressed sizes, counted here by gunzipping the blobs the harness wrote.
    let layers_size: u64 = built
        .layer_digests
        .iter()
        .map(|d| {
            let blob = dir
                .path()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            let f = std::fs::File::open(blob).unwrap();
            std::io::copy(&mut flate2::read::GzDecoder::new(f), &mut std::io::sink()).unwrap()
        })
        .sum();
    assert_eq!(built.layer_digests.len(), 3);

    let harden = |tag: &str, env: &[(&str, &str)]| {
        let mut c = pare();
        c.args([
            "harden",
            &src,
            &reg.image(&format!("once/app:{tag}")),
            "--report",
            "-",
        ]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(&mut c);
        assert!(out.status.success(), "{tag}: {}", describe_output(&out));
        out
    };
    let one = harden("t1", &[("PARE_THREADS", "1")]);
    let all = harden("tall", &[]);
    let none = harden("nocapture", &[("PARE_CAPTURE_BYTES", "0")]);

    for (what, out) in [("1 thread", &one), ("all cores", &all)] {
        let r = layer_reads(out);
        let total = r["uncompressed_bytes"].as_u64().unwrap();
        assert_eq!(total, layers_size, "{what}: {r}");
        let inflated = r["merge_bytes"].as_u64().unwrap() + r["later_bytes"].as_u64().unwrap();
        assert!(total > 3 << 20, "{r}");
        assert!(
            inflated as f64 <= 1.05 * total as f64,
            "{what}: {inflated} bytes inflated for {total} bytes of layers: {r}"
        );
        assert_eq!(r["later_passes"], 0, "{what}: {r}");
    }
    // Without captures the same result costs passes after the merge: the counter sees them.
    let r = layer_reads(&none);
    assert!(r["later_passes"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["merge_bytes"].as_u64().unwrap() + r["later_bytes"].as_u64().unwrap()
            > r["uncompressed_bytes"].as_u64().unwrap(),
        "{r}"
    );

    let digest = |tag: &str| skopeo_manifest_digest(&reg.image(&format!("once/app:{tag}")), None);
    assert_eq!(
        digest("t1"),
        digest("tall"),
        "the thread count changed the result"
    );
    assert_eq!(
        digest("t1"),
        digest("nocapture"),
        "capturing changed the result"
    );

    // The replaced library is the top layer's, and the result runs.
    let u = pull_and_unpack(&reg.image("once/app:t1"));
    let onig = jq_library("libonig");
    let kept = std::fs::read(
        u.rootfs()
            .join(onig.to_str().unwrap().trim_start_matches('/')),
    )
    .expect("libonig kept");
    assert_eq!(kept, std::fs::read(&onig).unwrap());
    assert_chroot_prints(&u.rootfs(), &["/usr/bin/jq", "-n", "1+1"], &[], "2");
}

/// A harden whose result DEST already holds (same source digest, same pare, same options)
/// reads manifests only: no blob is downloaded. Other options, `--force`, or a new source
/// digest harden again.
#[test]
fn an_up_to_date_destination_costs_no_layer_download() {
    let reg = Registry::start();
    build_and_push(&three_layers(), &reg.image("utd/app:1"), None);
    let proxy = common::faults::FaultProxy::start(reg.port());
    let src = format!("{}/utd/app:1", proxy.host());
    let dest = format!("{}/utd/app:1-h", proxy.host());
    let blob_gets = || {
        proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/"))
            .count()
    };
    let harden = |extra: &[&str]| {
        let out = run(pare()
            .args(["harden", "--no-sbom", &src, &dest])
            .args(extra));
        assert!(out.status.success(), "{}", describe_output(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = harden(&[]);
    assert!(!first.contains("up to date"), "{first}");
    let gets = blob_gets();
    assert!(gets >= 3, "the first harden pulled {gets} blobs");
    let digest = skopeo_manifest_digest(&reg.image("utd/app:1-h"), None);

    let again = harden(&[]);
    assert!(again.contains("is up to date"), "{again}");
    assert_eq!(blob_gets(), gets, "an up-to-date harden downloaded blobs");
    assert_eq!(
        skopeo_manifest_digest(&reg.image("utd/app:1-h"), None),
        digest
    );

    // Options that change the result, and --force, harden again.
    let other = harden(&["--keep", "/opt/data/c.txt"]);
    assert!(!other.contains("up to date"), "{other}");
    assert!(blob_gets() > gets);
    assert_ne!(
        skopeo_manifest_digest(&reg.image("utd/app:1-h"), None),
        digest
    );
    let n = blob_gets();
    let forced = harden(&["--force"]);
    assert!(!forced.contains("up to date"), "{forced}");
    assert!(blob_gets() > n);
    assert_eq!(
        skopeo_manifest_digest(&reg.image("utd/app:1-h"), None),
        digest
    );

    // A new source digest under the same tag hardens again.
    build_and_push(
        &three_layers().with_env("NEW", "1"),
        &reg.image("utd/app:1"),
        None,
    );
    let n = blob_gets();
    let moved = harden(&[]);
    assert!(!moved.contains("up to date"), "{moved}");
    assert!(blob_gets() > n);

    // The same for an oci: layout destination.
    let dir = tempfile::tempdir().unwrap();
    let out_ref = format!("oci:{}:h", dir.path().join("out").display());
    let run_layout = || {
        let out = pare_ok(&["harden", "--no-sbom", &src, &out_ref]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!run_layout().contains("up to date"));
    let n = blob_gets();
    assert!(run_layout().contains("is up to date"));
    assert_eq!(blob_gets(), n);
}

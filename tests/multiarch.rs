//! Multi-platform sources: every platform of an index hardened with its own architecture's
//! rules (linux/amd64 from this machine's programs, linux/arm64 from Debian's arm64 packages),
//! pushed as an index with the same platform fields; attestation entries skipped.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn index_in_index_out_with_arm64_traced_by_aarch64_rules() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let Some(built) = or_skip(write_jq_multiarch_layout(&layout, "multi")) else {
        return;
    };
    let reg = Registry::start();
    // An attestation-like entry, as BuildKit adds: unknown/unknown.
    let mut index: Value =
        serde_json::from_slice(&read_blob(&layout, &built.index_digest)).unwrap();
    let mut att = index["manifests"][0].clone();
    att["platform"] = serde_json::json!({"architecture": "unknown", "os": "unknown"});
    index["manifests"].as_array_mut().unwrap().push(att);
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = write_blob(&layout, &bytes);
    set_layout_tag(
        &layout,
        "multi",
        &serde_json::json!({"mediaType": MEDIA_TYPE_OCI_INDEX, "digest": digest, "size": bytes.len()}),
    );
    push_layout_with_args(&layout, "multi", &reg.image("m/jq:1"), None, &["--all"]);

    let out = pare_ok(&["harden", &reg.image("m/jq:1"), "--report", "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("index of 2 platforms (linux/amd64, linux/arm64/v8)"),
        "{err}"
    );
    assert!(
        err.contains("unknown/unknown): attestation or unknown platform, skipped"),
        "{err}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["images"].as_array().unwrap().len(), 2);

    // The result is an index with both platforms (read by skopeo).
    let raw: Value =
        serde_json::from_slice(&skopeo_raw_manifest(&reg.image("m/jq:1-hardened"), None)).unwrap();
    assert_eq!(raw["mediaType"], MEDIA_TYPE_OCI_INDEX);
    let plats: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(plats, vec!["linux/amd64", "linux/arm64"]);
    assert_eq!(raw["manifests"][1]["platform"]["variant"], "v8");
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.digest"],
        Value::String(digest.clone())
    );

    // The arm64 image was traced with the aarch64 rules: its own loader and libraries.
    let arm = &r["images"][1];
    assert_eq!(arm["source"]["platform"], "linux/arm64/v8");
    let files: Vec<&str> = arm["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "/usr/bin/jq",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib/aarch64-linux-gnu/libjq.so.1",
    ] {
        assert!(
            files.iter().any(|f| f == &want),
            "{want} missing from {files:?}"
        );
    }
    assert!(!files.iter().any(|f| f.contains("x86_64")), "{files:?}");
    let out_dir = dir.path().join("arm-out");
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--override-arch",
                "arm64",
            ])
            .arg(reg.docker_ref("m/jq:1-hardened"))
            .arg(format!("oci:{}:a", out_dir.display())),
    );
    let u = pull_and_unpack(&format!("oci:{}:a", out_dir.display()));
    assert_eq!(u.config["architecture"], "arm64");
    assert_eq!(u.exec_config()["User"], "65532:65532");
    // Where qemu-user-static is installed, run the hardened arm64 entrypoint with the image
    // root as its sysroot (-L): its own ld-linux-aarch64 and libraries, nothing from the host.
    let qemu = std::path::Path::new("/usr/bin/qemu-aarch64-static");
    if qemu.exists() {
        let root = u.rootfs();
        let o = run_capture(
            Command::new(qemu)
                .arg("-L")
                .arg(&root)
                .arg(root.join("usr/bin/jq"))
                .args(["-n", "1+1"])
                .env_clear(),
        );
        assert!(o.status.success(), "{}", describe_output(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2");
    } else {
        skip("running the arm64 image: qemu-user-static is not installed");
    }

    // --platform twice: an index of just those; once: a single image.
    pare_ok(&[
        "harden",
        &reg.image("m/jq:1"),
        &reg.image("m/jq:arm"),
        "--platform",
        "linux/arm64",
        "--report",
        "-",
    ]);
    let raw: Value =
        serde_json::from_slice(&skopeo_raw_manifest(&reg.image("m/jq:arm"), None)).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

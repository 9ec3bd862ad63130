//! The source is never changed unless the user says `--in-place`: DEST naming the source
//! itself (registry tag, layout tag, archive file) is refused with one line and nothing is
//! written; `--in-place` replaces it, reports the previous digest and (registry) keeps it as
//! `TAG-original`, never overwriting an earlier backup. Checked with skopeo, byte for byte.

mod common;

use std::process::Output;

use common::*;

fn refused(out: &Output) {
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is the source image itself") && err.contains("--in-place"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
}

#[test]
fn a_registry_source_is_refused_then_replaced_in_place_with_a_backup() {
    let reg = Registry::start();
    let (src, original) = push_jq_image(&reg, "prot/app:1");

    // The same tag, spelled the same or differently (the default HTTPS port is not the same
    // endpoint for a loopback registry, so spell it identically).
    refused(&run(pare().args(["-q", "harden", &src, &src])));
    assert_eq!(skopeo_manifest_digest(&src, None), original);
    assert!(
        !reg.tags("prot/app").iter().any(|t| t != "1"),
        "{:?}",
        reg.tags("prot/app")
    );

    // --in-place: replaced, the original kept as 1-original.
    let out = pare_ok(&["-q", "harden", "--in-place", "--no-sbom", &src, &src]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&original),
        "the previous digest is printed: {}",
        describe_output(&out)
    );
    let backup = reg.image("prot/app:1-original");
    assert_eq!(skopeo_manifest_digest(&backup, None), original);
    let hardened = skopeo_manifest_digest(&src, None);
    assert_ne!(hardened, original);
    assert_eq!(skopeo_config(&src, None)["config"]["User"], "65532:65532");
    // The backup is a complete image skopeo can copy.
    let u = pull_and_unpack(&backup);
    assert!(u.rootfs().join("usr/bin/jq").exists());

    // Again in place: the first original is never lost.
    pare_ok(&["-q", "harden", "--in-place", "--no-sbom", &src, &src]);
    assert_eq!(skopeo_manifest_digest(&backup, None), original);

    // --no-backup: no TAG-original.
    let other = reg.image("prot/app:2");
    build_and_push(&jq_image(), &other, None);
    pare_ok(&[
        "-q",
        "harden",
        "--in-place",
        "--no-backup",
        "--no-sbom",
        &other,
        &other,
    ]);
    assert!(!reg.tags("prot/app").contains(&"2-original".to_string()));
}

#[test]
fn a_layout_source_is_refused_and_a_new_tag_adds_only_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, "v1", &jq_image());
    let index_before = std::fs::read(layout.join("index.json")).unwrap();
    let blobs = |d: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let blobs_before = blobs(&layout);
    let src = format!("oci:{}:v1", layout.display());

    // The same layout and tag, through another spelling of the directory.
    let same = format!("oci:{}/../layout:v1", layout.display());
    refused(&run(pare().args(["-q", "harden", &src, &same])));
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(blobs(&layout), blobs_before);

    // Another tag in the same layout: the source's entry is unchanged byte for byte, its blobs
    // too; only new blobs are added.
    pare_ok(&[
        "-q",
        "harden",
        &src,
        &format!("oci:{}:v1-hardened", layout.display()),
    ]);
    let entry = |idx: &[u8]| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(idx).unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "v1")
            .cloned()
            .unwrap()
    };
    let index_after = std::fs::read(layout.join("index.json")).unwrap();
    assert_eq!(
        serde_json::to_vec(&entry(&index_after)).unwrap(),
        serde_json::to_vec(&entry(&index_before)).unwrap()
    );
    let after = blobs(&layout);
    for (k, v) in &blobs_before {
        assert_eq!(after.get(k), Some(v), "blob {k} changed or vanished");
    }
    assert!(after.len() > blobs_before.len());
    // skopeo still reads the source.
    let u = pull_and_unpack(&src);
    assert!(u.rootfs().join("usr/bin/jq").exists());

    // --in-place on the layout: the tag now points at the hardened image.
    pare_ok(&["-q", "harden", "--in-place", &src, &src]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_ne!(
        entry(&serde_json::to_vec(&v).unwrap())["digest"],
        entry(&index_before)["digest"]
    );
}

#[test]
fn an_archive_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save_docker_archive(dir.path(), &jq_image());
    let before = std::fs::read(&saved).unwrap();
    let src = format!("docker-archive:{}", saved.display());
    refused(&run(pare().args([
        "-q",
        "harden",
        &src,
        &format!("docker-archive:{}:app:2", saved.display()),
    ])));
    assert_eq!(std::fs::read(&saved).unwrap(), before);
}

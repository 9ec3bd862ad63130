//! A registry with token auth (the flow of Docker Hub, GHCR, Harbor, GitLab): Debian's
//! docker-registry verifying RS256 JWTs from a token server the harness starts beside it
//! (tests/common/token_server.py).

mod common;

use common::*;
use serde_json::Value;

#[test]
fn token_auth_harden_batch_catalog_scope_and_mounts() {
    let reg = Registry::start_with_token_auth("alice", "s3cret-pw");
    let creds = Some(("alice", "s3cret-pw"));
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, "jq", &jq_only_image());
    for name in [
        "team/a:1",
        "team/a:2",
        "team/b:1",
        "team/c:1",
        "public/jq:1",
    ] {
        push_layout(&layout, "jq", &reg.image(name), creds);
    }
    let home = tempfile::tempdir().unwrap();
    let pare_as = |args: &[&str]| {
        pare()
            .args(args)
            .env("HOME", home.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .unwrap()
    };

    // One image: oci-client's token exchange for pull and push.
    let out = pare_as(&[
        "harden",
        &reg.image("team/a:1"),
        "--creds",
        "alice:s3cret-pw",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(skopeo_inspect_exists(
        &reg.image("team/a:1-hardened"),
        creds
    ));

    // Anonymous: pulling public/ is allowed, pushing is not; one clear line.
    let out = pare_as(&["harden", &reg.image("public/jq:1")]);
    assert_one_line_error(&out, &["public/jq", "wants credentials"]);
    // The catalog needs `registry:catalog:*`, which anonymous clients are not given.
    let out = pare_as(&["batch", &reg.host(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("list repositories") && err.contains("401"),
        "{err}"
    );

    // The batch: the catalog token is fetched for the scope the registry's challenge names
    // (pages of 1: every page through the Link header, with that token); the hardened layer,
    // pushed to the first repository, is mounted into the others with a token that also
    // carries pull on the source repository.
    let report = dir.path().join("r.json");
    let out = pare_as(&[
        "batch",
        &format!("{}/team", reg.host()),
        "--page-size",
        "1",
        "--jobs",
        "1",
        "--creds",
        "alice:s3cret-pw",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        batch_report_items(&report),
        [
            "team/a:1 skipped",
            "team/a:2 hardened",
            "team/b:1 hardened",
            "team/c:1 hardened"
        ]
    );
    for name in ["team/a:2", "team/b:1", "team/c:1"] {
        assert!(skopeo_inspect_exists(
            &reg.image(&format!("{name}-hardened")),
            creds
        ));
    }
    // a already holds the layer (a:1-hardened); b and c get it mounted from a.
    assert!(r["blobs_mounted"].as_u64().unwrap() >= 2, "{r}");
}

//! Signatures in cosign's formats, checked against an independent implementation of those
//! formats (`tests/common/cosign_helper.py`: Python's scrypt, PyNaCl's secretbox,
//! cryptography's ECDSA and the registry's HTTP API; no code shared with pare):
//!
//! - keys: a key the helper made is read by `pare harden --sign-key`; a key `pare keygen`
//!   made is decrypted by the helper and matches its `.pub`;
//! - verify: a source the helper signed is accepted by `--verify-key`; a moved tag, another
//!   key, a payload naming another digest or repository, and no signature are each refused
//!   with one line and exit 1, nothing pushed;
//! - sign: pare's signature of a hardened image (single and multi-platform) verifies with the
//!   helper and names the hardened digest and repository; the SBOM attestation's subject is
//!   the hardened digest and its predicate the SPDX document.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

fn helper() -> Option<Command> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/cosign_helper.py");
    let ok = Command::new("python3")
        .args(["-c", "import nacl.secret, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            "python3 with PyNaCl and cryptography is not installed (scripts/test.sh installs them)",
        );
        return None;
    }
    let mut c = Command::new("python3");
    c.arg(script);
    Some(c)
}

fn helper_run(args: &[&str]) -> Output {
    run(helper().expect("helper").args(args))
}

/// Another image (a different digest) for the "moved tag" case.
fn other_image() -> ImageSpec {
    jq_image().with_cmd(&["-n", "2+2"])
}

/// `pare keygen DIR/NAME`: (the .key, the .pub).
fn keygen_pare(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = run(pare()
        .args(["keygen"])
        .arg(&prefix)
        .env("PARE_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", describe_output(&out));
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

fn keygen_helper(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    keygen_helper_kind(dir, name, "ecdsa")
}

fn keygen_helper_kind(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = helper_run(&["keygen", prefix.to_str().unwrap(), PASSWORD, kind]);
    assert!(out.status.success(), "{}", describe_output(&out));
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// `REGISTRY REPO` of an image reference `HOST/REPO:TAG`.
fn parts(image: &str) -> (String, String) {
    let (host, rest) = image.split_once('/').unwrap();
    let repo = rest.split(':').next().unwrap();
    (host.to_string(), repo.to_string())
}

fn sign_with_helper(image: &str, digest: &str, key: &Path, extra: &[&str]) {
    let (host, repo) = parts(image);
    let mut args = vec![
        "sign",
        &host,
        &repo,
        digest,
        key.to_str().unwrap(),
        PASSWORD,
    ];
    args.extend_from_slice(extra);
    let out = helper_run(&args);
    assert!(out.status.success(), "{}", describe_output(&out));
}

fn harden(args: &[&str]) -> Output {
    run(pare()
        .args(["-q", "harden", "--no-sbom"])
        .args(args)
        .env("PARE_PASSWORD", PASSWORD))
}

/// A refusal: exit 1, one `pare: error: signature:` line, DEST not written.
fn assert_refused(out: &Output, dest: &str, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{why}: {}",
        describe_output(out)
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{why}: one line expected: {err}");
    assert!(
        lines[0].starts_with("pare: error: signature:"),
        "{why}: {err}"
    );
    assert!(
        !skopeo_inspect_exists(dest, None),
        "{why}: {dest} was written"
    );
}

/// `harden SRC DEST --verify-key PUBS`, DEST being `dest` in `reg`, is refused (see
/// [`assert_refused`]); its output.
fn harden_refused(reg: &Registry, src: &str, dest: &str, pubs: &str, why: &str) -> Output {
    let dest = reg.image(dest);
    let out = harden(&[src, &dest, "--verify-key", pubs]);
    assert_refused(&out, &dest, why);
    out
}

#[test]
fn keys_made_by_either_side_are_read_by_the_other() {
    let Some(_) = helper() else { return };
    let dir = tempfile::tempdir().unwrap();
    // pare keygen → the helper decrypts it, and its public key is PREFIX.pub.
    let prefix = dir.path().join("pare");
    let (key, public) = keygen_pare(dir.path(), "pare");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let out = helper_run(&["public", key.to_str().unwrap(), PASSWORD]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        std::fs::read_to_string(&public).unwrap().trim()
    );
    // keygen never overwrites.
    let out = run(pare()
        .args(["keygen"])
        .arg(&prefix)
        .env("PARE_PASSWORD", PASSWORD));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    // A wrong passphrase is one clear line.
    let reg = Registry::start();
    let src = reg.image("keys/app:1");
    build_and_push(&jq_image(), &src, None);
    let (hkey, _) = keygen_helper(dir.path(), "helper");
    let out = run(pare()
        .args(["-q", "harden", "--no-sbom", &src, "--sign-key"])
        .arg(&hkey)
        .env("PARE_PASSWORD", "wrong"));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"),
        "{}",
        describe_output(&out)
    );
    // The helper's key signs with pare (read through --sign-passphrase-file).
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
    let out = run(pare()
        .args(["-q", "harden", "--no-sbom", &src, "--sign-key"])
        .arg(&hkey)
        .arg("--sign-passphrase-file")
        .arg(&pass)
        .env_remove("PARE_PASSWORD"));
    assert!(out.status.success(), "{}", describe_output(&out));
    let dest = reg.image("keys/app:1-hardened");
    let digest = skopeo_manifest_digest(&dest, None);
    let (host, repo) = parts(&dest);
    let out = helper_run(&[
        "verify",
        &host,
        &repo,
        &digest,
        dir.path().join("helper.pub").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
}

#[test]
fn a_source_must_carry_a_valid_signature_by_the_key() {
    let Some(_) = helper() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen_helper(dir.path(), "signer");
    let (other_key, other_public) = keygen_helper(dir.path(), "other");
    let reg = Registry::start();
    let pubs = public.to_str().unwrap();
    let (src, digest) =
        a_signed_source_is_accepted(&reg, &key, pubs, other_public.to_str().unwrap());
    a_referrer_signature_is_accepted(&reg, &key, pubs);
    a_moved_tag_is_refused(&reg, &src, &digest, pubs);
    signatures_of_something_else_are_refused(&reg, &key, &other_key, pubs);
    an_unsigned_source_is_refused(&reg, pubs);
    a_multi_platform_source_needs_its_index_or_every_platform_signed(&reg, dir.path(), &key, pubs);
    ed25519_and_rsa_keys_verify(&reg, dir.path());
    keys_from_pare_toml_are_used(&reg, &public);
}

/// Signed by the helper: accepted (with any of several keys); the source and its digest.
fn a_signed_source_is_accepted(
    reg: &Registry,
    key: &Path,
    pubs: &str,
    other_pubs: &str,
) -> (String, String) {
    // Signed by the helper: accepted, the report names the signature.
    let (src, digest) = push_jq_image(reg, "verify/app:1");
    sign_with_helper(&src, &digest, key, &[]);
    let dest = reg.image("verify/app:ok");
    let out = harden(&[&src, &dest, "--verify-key", pubs, "--report", "-"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["source_signature"]["digest"], digest.as_str(), "{r}");
    assert!(skopeo_inspect_exists(&dest, None));
    // Any of several keys may match; `pare signature verify` and `pare check` agree.
    let out = harden(&[
        &src,
        &reg.image("verify/app:ok2"),
        "--verify-key",
        other_pubs,
        "--verify-key",
        pubs,
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = pare_ok(&["signature", "verify", &src, "--key", pubs]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    (src, digest)
}

fn a_referrer_signature_is_accepted(reg: &Registry, key: &Path, pubs: &str) {
    // Signed as an OCI 1.1 referrer only (cosign's experimental mode; this registry has no
    // referrers API, so the referrer is listed under the fallback tag): accepted too.
    let (rsrc, rd) = push_jq_image(reg, "verify/referrer:1");
    let (host, repo) = parts(&rsrc);
    let out = helper_run(&[
        "sign-referrer",
        &host,
        &repo,
        &rd,
        key.to_str().unwrap(),
        PASSWORD,
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = harden(&[
        &rsrc,
        &reg.image("verify/referrer:h"),
        "--verify-key",
        pubs,
        "--report",
        "-",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["source_signature"]["found_in"]
            .as_str()
            .unwrap()
            .starts_with("referrer"),
        "{r}"
    );
}

fn a_moved_tag_is_refused(reg: &Registry, src: &str, digest: &str, pubs: &str) {
    // The same tag moved to another image: its signature names the old digest.
    build_and_push(&other_image(), src, None);
    let moved = skopeo_manifest_digest(src, None);
    assert_ne!(moved, digest);
    let dest = reg.image("verify/app:moved");
    let out = harden(&[src, &dest, "--verify-key", pubs]);
    assert_refused(&out, &dest, "moved tag");
    let out = run(pare().args(["signature", "verify", src, "--key", pubs]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let out = run(pare().args(["-q", "check", src, "--verify-key", pubs]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
}

/// Another key, a payload naming another digest or another repository: refused.
fn signatures_of_something_else_are_refused(
    reg: &Registry,
    key: &Path,
    other_key: &Path,
    pubs: &str,
) {
    // Signed, but by another key.
    let (src, d) = push_jq_image(reg, "verify/other-key:1");
    sign_with_helper(&src, &d, other_key, &[]);
    let out = harden_refused(reg, &src, "verify/other-key:h", pubs, "another key");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another key"));

    // A payload naming another digest (signed under this digest's tag).
    let (src, d) = push_jq_image(reg, "verify/other-digest:1");
    let fake = format!("sha256:{}", "ab".repeat(32));
    let (host, repo) = parts(&src);
    sign_with_helper(&src, &d, key, &[&format!("{host}/{repo}"), &fake]);
    let out = harden_refused(reg, &src, "verify/other-digest:h", pubs, "another digest");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another image"));

    // A payload naming another repository.
    let (src, d) = push_jq_image(reg, "verify/other-repo:1");
    sign_with_helper(&src, &d, key, &[&format!("{host}/somewhere/else")]);
    let out = harden_refused(reg, &src, "verify/other-repo:h", pubs, "another repository");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another repository"));
}

fn an_unsigned_source_is_refused(reg: &Registry, pubs: &str) {
    // No signature at all.
    let src = reg.image("verify/unsigned:1");
    build_and_push(&jq_image(), &src, None);
    let out = harden_refused(reg, &src, "verify/unsigned:h", pubs, "unsigned");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not signed"));
    // Through a recording proxy: the refusal reads the manifest and the signature tags, never a
    // blob of the image (no config, no layer).
    let proxy = common::faults::FaultProxy::start(reg.port());
    let psrc = format!("{}/verify/unsigned:1", proxy.host());
    let pdest = format!("{}/verify/unsigned:hp", proxy.host());
    let out = harden(&[&psrc, &pdest, "--verify-key", pubs]);
    assert_refused(
        &out,
        &reg.image("verify/unsigned:hp"),
        "unsigned, through a proxy",
    );
    let log = proxy.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|(_, p, _)| p.contains("/manifests/")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|(_, p, _)| p.contains("/blobs/")),
        "a blob was read before the signature was checked: {log:?}"
    );
}

fn a_multi_platform_source_needs_its_index_or_every_platform_signed(
    reg: &Registry,
    dir: &Path,
    key: &Path,
    pubs: &str,
) {
    // A multi-platform source: the index's own signature counts, or every platform's.
    let layout = dir.join("multi");
    match write_jq_multiarch_layout(&layout, "m") {
        Ok(_) => {
            let msrc = reg.image("verify/multi:1");
            push_layout_with_args(&layout, "m", &msrc, None, &["--all"]);
            let index: Value = serde_json::from_slice(&skopeo_raw_manifest(&msrc, None)).unwrap();
            let children = strings_of(&index["manifests"], "digest");
            harden_refused(
                reg,
                &msrc,
                "verify/multi:unsigned",
                pubs,
                "unsigned index and platforms",
            );
            // One platform signed is not enough.
            sign_with_helper(&msrc, &children[0], key, &[]);
            let out = harden_refused(
                reg,
                &msrc,
                "verify/multi:one",
                pubs,
                "one platform of two signed",
            );
            // Refused before any platform was built: the message names the unsigned platform.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("signature: linux/") && err.contains("nor is its index"),
                "{err}"
            );
            for d in &children[1..] {
                sign_with_helper(&msrc, d, key, &[]);
            }
            let out = harden(&[&msrc, &reg.image("verify/multi:each"), "--verify-key", pubs]);
            assert!(out.status.success(), "{}", describe_output(&out));
            // `signature verify`: the index itself is unsigned; a platform of it is signed.
            let out = run(pare().args(["signature", "verify", &msrc, "--key", pubs]));
            assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
            pare_ok(&[
                "signature",
                "verify",
                &msrc,
                "--key",
                pubs,
                "--platform",
                "linux/arm64",
            ]);
            // Another copy whose index alone is signed.
            let isrc = reg.image("verify/multi-index:1");
            push_layout_with_args(&layout, "m", &isrc, None, &["--all"]);
            sign_with_helper(&isrc, &skopeo_manifest_digest(&isrc, None), key, &[]);
            let out = harden(&[
                &isrc,
                &reg.image("verify/multi-index:h"),
                "--verify-key",
                pubs,
            ]);
            assert!(out.status.success(), "{}", describe_output(&out));
        }
        Err(why) => skip(&format!("the multi-platform source: {why}")),
    }
}

fn ed25519_and_rsa_keys_verify(reg: &Registry, dir: &Path) {
    // Ed25519 and RSA keys (cosign makes them from KMS and imported keys) verify too; pare
    // signs with an Ed25519 key, and refuses to sign with RSA in one line.
    for kind in ["ed25519", "rsa"] {
        let (k, p) = keygen_helper_kind(dir, &format!("k-{kind}"), kind);
        let (src, d) = push_jq_image(reg, &format!("verify/{kind}:1"));
        sign_with_helper(&src, &d, &k, &[]);
        let dest = reg.image(&format!("verify/{kind}:h"));
        let out = harden(&[&src, &dest, "--verify-key", p.to_str().unwrap()]);
        assert!(out.status.success(), "{kind}: {}", describe_output(&out));
        let out = harden(&[&src, &dest, "--force", "--sign-key", k.to_str().unwrap()]);
        if kind == "rsa" {
            assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
            assert!(String::from_utf8_lossy(&out.stderr).contains("RSA"));
        } else {
            assert!(out.status.success(), "{kind}: {}", describe_output(&out));
            let hd = skopeo_manifest_digest(&dest, None);
            let (host, repo) = parts(&dest);
            let out = helper_run(&["verify", &host, &repo, &hd, p.to_str().unwrap()]);
            assert!(out.status.success(), "{kind}: {}", describe_output(&out));
        }
    }
}

/// The unsigned source again, checked with the keys of pare.toml.
fn keys_from_pare_toml_are_used(reg: &Registry, public: &Path) {
    let src = reg.image("verify/unsigned:1");
    let dest = reg.image("verify/unsigned:h");
    // The keys of [signatures] in pare.toml when no --verify-key is given.
    let cfg_dir = tempfile::tempdir().unwrap();
    std::fs::copy(public, cfg_dir.path().join("team.pub")).unwrap();
    std::fs::write(
        cfg_dir.path().join("pare.toml"),
        "[signatures]\nkeys = [\"team.pub\"]\n",
    )
    .unwrap();
    let out =
        run(pare()
            .current_dir(cfg_dir.path())
            .args(["-q", "harden", "--no-sbom", &src, &dest]));
    assert_refused(&out, &dest, "unsigned, keys from pare.toml");
}

#[test]
fn what_pare_pushes_is_signed_and_its_sbom_attested() {
    let Some(_) = helper() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen_pare(dir.path(), "pare");
    let reg = Registry::start();
    let src = reg.image("signed/app:1");
    build_and_push(&jq_image(), &src, None);
    let out = run(pare()
        .args(["-q", "harden", &src, "--sign-key"])
        .arg(&key)
        .args(["--report", "-"])
        .env("PARE_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["signed"], true);
    let dest = reg.image("signed/app:1-hardened");
    let digest = skopeo_manifest_digest(&dest, None);
    let (host, repo) = parts(&dest);
    let out = helper_run(&["verify", &host, &repo, &digest, public.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let payload: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        payload["critical"]["identity"]["docker-reference"],
        format!("{host}/{repo}")
    );
    assert_eq!(
        payload["critical"]["type"],
        "cosign container image signature"
    );
    // The attestation: an in-toto statement about the hardened digest, predicate SPDX.
    let out = helper_run(&[
        "verify-att",
        &host,
        &repo,
        &digest,
        public.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let att: Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &att["statement"];
    assert_eq!(st["predicateType"], "https://spdx.dev/Document");
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(st["predicate"]["spdxVersion"], "SPDX-2.3", "{st}");
    assert_eq!(
        att["annotations"]["predicateType"],
        "https://spdx.dev/Document"
    );
    // pare verifies its own signature, and a re-run adds no second signature layer.
    pare_ok(&[
        "signature",
        "verify",
        &dest,
        "--key",
        public.to_str().unwrap(),
    ]);
    let sig_tag = format!("{host}/{repo}:{}.sig", digest.replacen(':', "-", 1));
    let before = skopeo_raw_manifest(&sig_tag, None);
    let out = run(pare()
        .args(["-q", "harden", &src, "--force", "--sign-key"])
        .arg(&key)
        .env("PARE_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(skopeo_manifest_digest(&dest, None), digest, "deterministic");
    assert_eq!(skopeo_raw_manifest(&sig_tag, None), before, "one signature");
    // A layout destination cannot carry a signature: one line, exit 1.
    let out = run(pare()
        .args(["-q", "harden", &src])
        .arg(format!("oci:{}:x", dir.path().join("l").display()))
        .arg("--sign-key")
        .arg(&key)
        .env("PARE_PASSWORD", PASSWORD));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));

    // Multi-platform: the index and every platform manifest are signed.
    let layout = dir.path().join("multi");
    match write_jq_multiarch_layout(&layout, "m") {
        Ok(_) => {
            let msrc = reg.image("signed/multi:1");
            push_layout_with_args(&layout, "m", &msrc, None, &["--all"]);
            let out = run(pare()
                .args(["-q", "harden", "--no-sbom", &msrc, "--sign-key"])
                .arg(&key)
                .env("PARE_PASSWORD", PASSWORD));
            assert!(out.status.success(), "{}", describe_output(&out));
            let mdest = reg.image("signed/multi:1-hardened");
            let index: Value = serde_json::from_slice(&skopeo_raw_manifest(&mdest, None)).unwrap();
            let idigest = skopeo_manifest_digest(&mdest, None);
            let (host, repo) = parts(&mdest);
            let mut digests = vec![idigest];
            for m in index["manifests"].as_array().unwrap() {
                digests.push(m["digest"].as_str().unwrap().to_string());
            }
            assert!(digests.len() >= 3, "{index}");
            for d in &digests {
                let out = helper_run(&["verify", &host, &repo, d, public.to_str().unwrap()]);
                assert!(out.status.success(), "{d}: {}", describe_output(&out));
            }
        }
        Err(why) => skip(&format!("the multi-platform part: {why}")),
    }
}

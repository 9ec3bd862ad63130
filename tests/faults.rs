//! Registry faults in the middle of transfers, injected by a loopback proxy in front of the
//! real registry (tests/common/faults.rs): cut connections, 5xx and 429 answers (with
//! `Retry-After`), truncated bodies, slow answers. Transient faults are survived; persistent
//! ones end in one error line with the destination untouched. Results are checked with skopeo
//! against the registry directly, not through the proxy.

mod common;

use std::time::{Duration, Instant};

use common::faults::*;
use common::*;

/// Start `cmd` (its output discarded) and kill it (SIGKILL) after `after`.
fn kill_after(cmd: &mut std::process::Command, after: Duration) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn pare");
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// A registry with `prox/app:1`, and a proxy in front of it.
fn setup() -> (Registry, FaultProxy, String) {
    let reg = Registry::start();
    build_and_push(&jq_image(), &reg.image("prox/app:1"), None);
    let proxy = FaultProxy::start(reg.port());
    let src = format!("{}/prox/app:1", proxy.host());
    (reg, proxy, src)
}

#[test]
fn pulls_survive_cut_truncated_failed_and_slow_answers() {
    let (reg, proxy, src) = setup();
    proxy.set(vec![
        Rule::new("GET", "/manifests/", Fault::Status(503, None), 1),
        Rule::new(
            "GET",
            "/manifests/",
            Fault::Delay(Duration::from_secs(2)),
            1,
        ),
        Rule::new("GET", "/blobs/sha256:", Fault::CutAfter(400), 1),
        Rule::new("GET", "/blobs/sha256:", Fault::CutAfter(300_000), 1),
        Rule::new("GET", "/blobs/sha256:", Fault::Truncate, 1),
        Rule::new("GET", "/blobs/sha256:", Fault::Status(500, None), 1),
    ]);
    pare_ok(&[
        "harden",
        "--no-sbom",
        &src,
        &format!("{}/prox/app:ok", proxy.host()),
    ]);
    assert!(proxy.faults() >= 5, "{:?}", proxy.log.lock().unwrap());
    // A cut download is resumed where it stopped, not started over.
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|(p, v)| p.contains("/blobs/")
            && v.starts_with("bytes=")
            && !v.starts_with("bytes=0-")),
        "no resumed blob download: {ranges:?}"
    );
    let u = pull_and_unpack(&reg.image("prox/app:ok"));
    assert!(u.rootfs().join("usr/bin/jq").is_file());
}

#[test]
fn pushes_survive_failed_uploads_and_manifest_puts_and_honour_retry_after() {
    let (reg, proxy, src) = setup();
    proxy.set(vec![
        Rule::new("HEAD", "/blobs/", Fault::Status(429, Some(2)), 1),
        Rule::new("POST", "/blobs/uploads/", Fault::Status(502, None), 1),
        Rule::new("PUT", "/blobs/uploads/", Fault::Status(500, None), 1),
        Rule::new("PUT", "/manifests/", Fault::Status(500, None), 2),
    ]);
    let t = Instant::now();
    pare_ok(&[
        "harden",
        "--no-sbom",
        &src,
        &format!("{}/prox/app:pushed", proxy.host()),
    ]);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );
    assert!(proxy.faults() >= 4, "{:?}", proxy.log.lock().unwrap());
    let u = pull_and_unpack(&reg.image("prox/app:pushed"));
    assert!(u.rootfs().join("usr/bin/jq").is_file());
}

#[test]
fn a_persistent_fault_is_one_error_line_and_the_destination_is_untouched() {
    let (reg, proxy, src) = setup();
    let before = skopeo_manifest_digest(&reg.image("prox/app:1"), None);
    proxy.set(vec![Rule::new(
        "PUT",
        "/manifests/",
        Fault::Status(500, None),
        usize::MAX,
    )]);
    let out = run(pare().args([
        "harden",
        "--no-sbom",
        &src,
        &format!("{}/prox/app:never", proxy.host()),
    ]));
    assert_one_line_error(&out, &["push manifest"]);
    assert!(!reg.tags("prox/app").contains(&"never".to_string()));
    assert_eq!(
        skopeo_manifest_digest(&reg.image("prox/app:1"), None),
        before
    );
    // Five tries, no more.
    let puts = proxy
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("/manifests/"))
        .count();
    assert_eq!(puts, 5);
}

#[test]
fn a_stalled_answer_times_out_and_is_retried() {
    let (reg, proxy, src) = setup();
    proxy.set(vec![Rule::new(
        "GET",
        "/manifests/",
        Fault::Delay(Duration::from_secs(8)),
        1,
    )]);
    let t = Instant::now();
    let out = pare_ok(&[
        "harden",
        "--timeout",
        "2",
        "--no-sbom",
        &src,
        &format!("{}/prox/app:slow", proxy.host()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("try 2 of 5"),
        "the stalled request was retried: {err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "it did not wait for the stall"
    );
    assert!(skopeo_inspect_exists(&reg.image("prox/app:slow"), None));
}

/// `pare harden` killed (SIGKILL) at 20 points of its run: the destination tag is then absent
/// or a complete image skopeo pulls with every blob verified, and the source is unchanged.
#[test]
fn a_killed_harden_never_leaves_a_half_written_tag() {
    let reg = Registry::start();
    let (src, before) = push_jq_image(&reg, "kill/app:1");
    // How long a whole run takes here, to spread the kills over it.
    let t = Instant::now();
    pare_ok(&["-q", "harden", &src, &reg.image("kill/app:timing")]);
    let whole = t.elapsed();
    let mut complete = 0;
    for i in 0..20u32 {
        let dest = reg.image(&format!("kill/app:k{i}"));
        kill_after(pare().args(["-q", "harden", &src, &dest]), whole * i / 20);
        if reg.tags("kill/app").contains(&format!("k{i}")) {
            // A tag is there: the image behind it is whole (skopeo verifies every blob).
            let u = pull_and_unpack(&dest);
            assert!(u.rootfs().join("usr/bin/jq").is_file(), "k{i}");
            complete += 1;
        }
        assert_eq!(
            skopeo_manifest_digest(&src, None),
            before,
            "the source changed (k{i})"
        );
    }
    eprintln!("{complete} of 20 killed runs had pushed their manifest");
    assert!(complete < 20, "no kill landed before the manifest push");
}

/// `pare batch` listing through faults: the catalog answers 503 once and a tags page is cut
/// mid-body; the batch still hardens every image of the namespace.
#[test]
fn batch_listing_survives_faults() {
    let reg = Registry::start();
    for i in 0..3 {
        build_and_push(&jq_image(), &reg.image(&format!("bat/svc{i}:1")), None);
    }
    let proxy = FaultProxy::start(reg.port());
    proxy.set(vec![
        Rule::new("GET", "/v2/_catalog", Fault::Status(503, None), 1),
        Rule::new("GET", "/tags/list", Fault::Truncate, 1),
        Rule::new("GET", "/tags/list", Fault::Status(502, None), 1),
    ]);
    pare_ok(&[
        "batch",
        &format!("{}/bat", proxy.host()),
        "--page-size",
        "2",
        "--no-sbom",
    ]);
    assert!(proxy.faults() >= 3, "{:?}", proxy.log.lock().unwrap());
    for i in 0..3 {
        assert!(skopeo_inspect_exists(
            &reg.image(&format!("bat/svc{i}:1-hardened")),
            None
        ));
    }
}

/// `pare batch` killed (SIGKILL) at 20 points of its run, each over a fresh namespace of three
/// images: every `-hardened` tag present afterwards is a complete image (skopeo pulls it with
/// every blob verified), the sources are unchanged, and a batch run after the kill finishes the
/// namespace (hardening only what the killed run had not pushed).
#[test]
fn a_killed_batch_never_leaves_a_half_written_tag() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), "img", &jq_image());
    let names = |i: u32| (0..3).map(move |j| format!("kb{i}/svc{j}"));
    for i in 0..=20u32 {
        for repo in names(i) {
            push_layout(dir.path(), "img", &reg.image(&format!("{repo}:1")), None);
        }
    }
    let before = skopeo_manifest_digest(&reg.image("kb0/svc0:1"), None);
    let batch = |i: u32| {
        let mut c = pare();
        c.args([
            "-q",
            "batch",
            &format!("{}/kb{i}", reg.host()),
            "--jobs",
            "1",
        ]);
        c
    };
    // How long a whole run takes here (namespace kb20), to spread the kills over it.
    let t = Instant::now();
    let out = run(&mut batch(20));
    assert!(out.status.success(), "{}", describe_output(&out));
    let whole = t.elapsed();
    let (mut landed, mut partial) = (0, 0);
    for i in 0..20u32 {
        kill_after(&mut batch(i), whole * i / 20);
        let mut done = 0;
        for repo in names(i) {
            if reg.tags(&repo).contains(&"1-hardened".to_string()) {
                let u = pull_and_unpack(&reg.image(&format!("{repo}:1-hardened")));
                assert!(u.rootfs().join("usr/bin/jq").is_file(), "{repo} (k{i})");
                done += 1;
            }
            assert_eq!(
                skopeo_manifest_digest(&reg.image(&format!("{repo}:1")), None),
                before,
                "the source {repo}:1 changed (k{i})"
            );
        }
        landed += done;
        if (1..3).contains(&done) {
            partial += 1;
        }
        // Resuming finishes the namespace.
        let out = run(&mut batch(i));
        assert!(out.status.success(), "k{i}: {}", describe_output(&out));
        for repo in names(i) {
            assert!(
                reg.tags(&repo).contains(&"1-hardened".to_string()),
                "{repo}"
            );
        }
    }
    eprintln!(
        "{landed} of 60 images were pushed before the kill; {partial} runs were cut between images"
    );
    assert!(landed < 60, "no kill landed before a manifest push");
}

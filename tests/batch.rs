//! `pare batch` over a real registry: 13 repositories and 32 tags under two namespaces plus
//! one outside, catalog and tag pages of 5, a multi-platform index, a broken image.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use common::faults::FaultProxy;
use common::*;
use serde_json::Value;

fn items(report: &std::path::Path) -> Vec<Value> {
    let r: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    r["items"].as_array().unwrap().clone()
}

#[test]
fn batch_a_namespace_resumably_and_in_shards() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (good, has_multi) = push_the_namespace(&reg, dir.path());
    let target = format!("{}/payments", reg.host());
    let report = dir.path().join("r1.json");
    let done_before = interrupted_run(&reg, &target, &good);

    // The re-run does what is left: what the killed run finished is skipped.
    let out = run(paged_batch(&target, "1").arg("--report").arg(&report));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the broken image fails the batch: {}",
        describe_output(&out)
    );
    let it = items(&report);
    let broken = it
        .iter()
        .find(|i| i["repository"] == "payments/broken")
        .unwrap();
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("/usr/bin/missing")
    );
    let skipped = it.iter().filter(|i| i["status"] == "skipped").count();
    assert_eq!(skipped, done_before, "{it:?}");
    assert_eq!(
        it.iter().filter(|i| i["status"] == "hardened").count() + skipped,
        good.len()
    );
    // The 21 svc tags harden to the same layer: pushed to the first of the 7 repositories,
    // then mounted into the 6 others (tags of one repository already have it).
    let r1v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r1v["blobs_mounted"].as_u64().unwrap() >= 6,
        "{}",
        r1v["blobs_mounted"]
    );
    for g in &good {
        assert!(
            skopeo_inspect_exists(&reg.image(&format!("{g}-hardened")), None),
            "{g}-hardened missing"
        );
    }
    if has_multi {
        let raw: Value = serde_json::from_slice(&skopeo_raw_manifest(
            &reg.image("payments/multi:1-hardened"),
            None,
        ))
        .unwrap();
        assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    }
    // Nothing outside the namespace was touched.
    for (repo, tags) in [("platform/tool0", 2), ("other/app", 1)] {
        let listed = reg.tags(repo);
        assert_eq!(listed.len(), tags, "{repo}: {listed:?}");
        assert!(!listed.iter().any(|t| t.contains("hardened")));
    }
    let digests = hardened_digests(&reg, &good);

    // Second run: all skipped (the broken one fails again), nothing pushed.
    let t = Instant::now();
    let report2 = dir.path().join("r2.json");
    let out = run(pare()
        .args(["batch", &target, "--page-size", "5", "--report"])
        .arg(&report2));
    let noop = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1));
    let it2 = items(&report2);
    assert_eq!(
        it2.iter().filter(|i| i["status"] == "skipped").count(),
        good.len()
    );
    assert_eq!(it2.iter().filter(|i| i["status"] == "hardened").count(), 0);
    let after = hardened_digests(&reg, &good);
    assert_eq!(digests, after);

    // Other options that change the output (a --keep): not skipped, re-hardened with a note.
    let report3 = dir.path().join("r3.json");
    let out = run(pare()
        .args(["batch", &target, "--keep", "/usr/bin/jq", "--report"])
        .arg(&report3));
    assert_eq!(out.status.code(), Some(1), "the broken image fails again");
    let it3 = items(&report3);
    let rehardened: Vec<&Value> = it3.iter().filter(|i| i["status"] == "hardened").collect();
    assert_eq!(rehardened.len(), good.len(), "{it3:?}");
    assert!(
        rehardened.iter().all(|i| i["note"]
            .as_str()
            .is_some_and(|n| n.contains("re-hardened"))),
        "{it3:?}"
    );

    // --force re-does the work (the same digests: hardening is deterministic), with one job
    // and with two.
    let mut timings = Vec::new();
    for jobs in ["1", "2"] {
        let r = dir.path().join(format!("force{jobs}.json"));
        let t = Instant::now();
        let out = run(paged_batch(&target, jobs)
            .args(["--force", "--exclude", "payments/broken:*", "--report"])
            .arg(&r));
        timings.push(t.elapsed().as_secs_f64());
        assert!(out.status.success(), "{}", describe_output(&out));
        let again = hardened_digests(&reg, &good);
        assert_eq!(digests, again);
        // The 21 svc tags share one layer: it is downloaded once and reused 20 times, parsed
        // once, and the files the trace needs are copied out of it once.
        let rv: Value = serde_json::from_slice(&std::fs::read(&r).unwrap()).unwrap();
        assert_eq!(rv["hardened"].as_u64().unwrap() as usize, good.len());
        // ... and the result's layer made from it is written once.
        for key in [
            "layers_reused",
            "parses_reused",
            "reads_avoided",
            "layers_written_once",
        ] {
            assert!(rv[key].as_u64().unwrap() >= 20, "{key}: {}", rv[key]);
        }
    }
    let (jobs1, jobs2) = (timings[0], timings[1]);

    let seen = three_shards(dir.path(), &target);
    repos_from_a_list(&reg, dir.path(), &target);

    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a tag in two shards");
    let all: BTreeSet<String> = it
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["repository"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<String>>(),
        all
    );
    eprintln!(
        "FIGURES: batch of {} images: --jobs 1 --force {jobs1:.2}s, --jobs 2 --force {jobs2:.2}s, no-op rerun {noop:.2}s",
        all.len()
    );
}

/// `pare batch TARGET --page-size 5 --jobs JOBS`.
fn paged_batch(target: &str, jobs: &str) -> std::process::Command {
    let mut c = pare();
    c.args(["batch", target, "--page-size", "5", "--jobs", jobs]);
    c
}

/// The `-hardened` digests of `good`, as the registry serves them.
fn hardened_digests(reg: &Registry, good: &[String]) -> Vec<String> {
    good.iter()
        .map(|g| skopeo_manifest_digest(&reg.image(&format!("{g}-hardened")), None))
        .collect()
}

/// 21 tags under payments/svc*, 10 under platform/, one outside, a broken image and (when the
/// arm64 packages can be had) a multi-platform one: the tags that harden, and whether the
/// multi-platform one is there.
fn push_the_namespace(reg: &Registry, dir: &Path) -> (Vec<String>, bool) {
    let layout = dir.join("layout");
    write_oci_layout(&layout, "jq", &jq_only_image());
    let mut good: Vec<String> = Vec::new();
    for r in 0..7 {
        for t in 0..3 {
            let name = format!("payments/svc{r}:{t}.0");
            push_layout(&layout, "jq", &reg.image(&name), None);
            good.push(name);
        }
    }
    for r in 0..5 {
        for t in 0..2 {
            push_layout(
                &layout,
                "jq",
                &reg.image(&format!("platform/tool{r}:v{t}")),
                None,
            );
        }
    }
    push_layout(&layout, "jq", &reg.image("other/app:1"), None);
    build_and_push(
        &ImageSpec::new(vec![Layer::new().host_closure(HOST_JQ)])
            .with_entrypoint(&["/usr/bin/missing"]),
        &reg.image("payments/broken:1"),
        None,
    );
    let multi = dir.join("multi");
    let has_multi = match write_jq_multiarch_layout(&multi, "m") {
        Ok(_) => {
            push_layout_with_args(
                &multi,
                "m",
                &reg.image("payments/multi:1"),
                None,
                &["--all"],
            );
            good.push("payments/multi:1".into());
            true
        }
        Err(why) => {
            skip(&format!("the multi-platform image in the batch: {why}"));
            false
        }
    };
    (good, has_multi)
}

/// A first run, interrupted (killed) once the first svc image is hardened: how many images it
/// hardened.
fn interrupted_run(reg: &Registry, target: &str, good: &[String]) -> usize {
    let mut child = paged_batch(target, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    let mut interrupted = false;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if reg
            .tags("payments/svc0")
            .iter()
            .any(|t| t.ends_with("-hardened"))
        {
            child.kill().unwrap();
            interrupted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().unwrap();
    // A request the killed process had sent (a manifest PUT) may still complete in the
    // registry: let it land before counting what is there.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        interrupted,
        "the batch ended before it could be interrupted"
    );
    let done_before: usize = good
        .iter()
        .filter(|g| skopeo_inspect_exists(&reg.image(&format!("{g}-hardened")), None))
        .count();
    assert!(
        done_before >= 1 && done_before < good.len(),
        "{done_before}"
    );
    eprintln!(
        "interrupted after {done_before} of {} images were hardened",
        good.len()
    );
    done_before
}

/// Three shards, one after another: the tags they cover.
fn three_shards(dir: &Path, target: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        let r = dir.join(format!("s{i}.json"));
        let out = run(pare()
            .args([
                "batch",
                target,
                "--page-size",
                "5",
                "--dry-run",
                "--shard",
                &format!("{i}/3"),
                "--report",
            ])
            .arg(&r));
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}",
            describe_output(&out)
        );
        seen.extend(items(&r).iter().map(|i| {
            format!(
                "{}:{}",
                i["repository"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            )
        }));
    }
    seen
}

// --repos-from (registries without a catalog): comments, host prefixes, duplicates, a
// repository outside the namespace (ignored) and one that does not exist (a failed item;
// the others still run).
fn repos_from_a_list(reg: &Registry, dir: &Path, target: &str) {
    let list = dir.join("repos.txt");
    std::fs::write(
        &list,
        format!(
            "# payments\npayments/svc0\n{}/payments/svc1\npayments/svc0\nother/app\npayments/gone\n",
            reg.host()
        ),
    )
    .unwrap();
    let r = dir.join("from.json");
    let out = run(pare()
        .args(["batch", target, "--dry-run", "--repos-from"])
        .arg(&list)
        .arg("--report")
        .arg(&r));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_eq!(
        batch_report_items(&r),
        [
            "payments/gone:* failed",
            "payments/svc0:0.0 skipped",
            "payments/svc0:1.0 skipped",
            "payments/svc0:2.0 skipped",
            "payments/svc1:0.0 skipped",
            "payments/svc1:1.0 skipped",
            "payments/svc1:2.0 skipped",
        ]
    );
    // A repository the filters rule out is not a failure, listed or not.
    let out = run(pare()
        .args(["batch", target, "--dry-run", "--exclude", "payments/gone:*"])
        .arg("--repos-from")
        .arg(&list));
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = run(pare()
        .args(["batch", target, "--dry-run", "--include", "payments/svc1:*"])
        .arg("--repos-from")
        .arg(&list));
    assert!(out.status.success(), "{}", describe_output(&out));
}

/// A batch asks the registry about each blob at most once per repository: a blob it pushed,
/// mounted or found there is not asked about again; one another repository of the batch holds
/// is mounted without asking first; small new blobs (configs, SBOMs) are uploaded without
/// asking. Three tags in two repositories on one base, through a counting proxy.
#[test]
fn a_batch_asks_about_each_blob_at_most_once_per_repository() {
    let reg = Registry::start();
    for (image, prog) in [("ns/a:1", "1+1"), ("ns/a:2", "2+2"), ("ns/b:1", "3+3")] {
        let own = Layer::new().file("/srv/p.jq", prog, 0o644);
        let spec = ImageSpec::new(vec![usrmerge_base_layer(), jq_app_layer(), own])
            .with_entrypoint(&["/usr/bin/jq"])
            .with_cmd(&["-n", "-f", "/srv/p.jq"]);
        build_and_push(&spec, &reg.image(image), None);
    }
    let proxy = FaultProxy::start(reg.port());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    run_ok(
        pare()
            .args([
                "batch",
                &format!("{}/ns", proxy.host()),
                "--jobs",
                "1",
                "--report",
            ])
            .arg(&report),
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["hardened"], 3, "{r}");
    assert!(r["layers_written_once"].as_u64().unwrap() >= 2, "{r}");
    let log = proxy.log.lock().unwrap().clone();
    let mut asked: std::collections::BTreeMap<String, usize> = Default::default();
    for (method, path, _) in &log {
        if method == "HEAD" && path.contains("/blobs/sha256:") {
            *asked.entry(path.clone()).or_default() += 1;
        }
    }
    assert!(asked.values().all(|n| *n == 1), "{asked:?}");
    // The jq layer's kept share: pushed to ns/a once, then mounted into ns/b.
    let shared = {
        let m: Value =
            serde_json::from_slice(&skopeo_raw_manifest(&reg.image("ns/a:1-hardened"), None))
                .unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let b: Value =
        serde_json::from_slice(&skopeo_raw_manifest(&reg.image("ns/b:1-hardened"), None)).unwrap();
    assert_eq!(b["layers"][0]["digest"], shared.as_str());
    let about = |repo: &str| {
        log.iter()
            .filter(|(m, p, _)| {
                (m == "HEAD" || m == "POST" || m == "PUT")
                    && p.contains(&format!("/v2/ns/{repo}/blobs/"))
                    && p.contains(shared.trim_start_matches("sha256:"))
            })
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect::<Vec<_>>()
    };
    let in_b = about("b");
    assert_eq!(in_b.len(), 1, "one mount, no HEAD: {in_b:?}");
    assert!(
        in_b[0].starts_with("POST") && in_b[0].contains("mount="),
        "{in_b:?}"
    );
    // The second tag of ns/a pushed nothing about it: the first one's push is known.
    assert_eq!(
        about("a").iter().filter(|l| l.starts_with("HEAD")).count(),
        1,
        "{:?}",
        about("a")
    );
    // No hardened tag was listed: none is asked for before it is pushed.
    assert!(
        !log.iter()
            .any(|(m, p, _)| m == "GET" && p.contains("/manifests/") && p.ends_with("-hardened")),
        "{log:?}"
    );
    // This registry serves no referrers API (it answers 404): asked once, then the SBOMs
    // go straight to the tag scheme.
    let referrers = log
        .iter()
        .filter(|(_, p, _)| p.contains("/referrers/"))
        .count();
    assert_eq!(referrers, 1, "{log:?}");
    // Every result runs.
    let u = pull_and_unpack(&reg.docker_ref("ns/b:1-hardened"));
    assert_chroot_prints(
        &u.rootfs(),
        &["/usr/bin/jq", "-n", "-f", "/srv/p.jq"],
        &[],
        "6",
    );
}

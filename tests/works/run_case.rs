//! [`run_case`]: one acceptance case end to end, checks (a) to (i) of tests/works.rs, each a
//! named step.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;

/// Failures found so far: (one-line summary for the table, full message).
type Failures = Vec<(String, String)>;

/// A pare run started in the background, with how long it took.
type PareRun = JoinHandle<(Output, Duration)>;

/// The figures of a case's table row.
struct Row<'a> {
    orig: u64,
    hard: Option<u64>,
    min: u64,
    kept: Option<usize>,
    risky: &'a str,
    smoke: &'a str,
}

/// The case's row: kept for the sweep ([`LAST_ROW`]), printed, and appended to
/// `target/works-table.md`.
fn row(name: &str, r: &Row<'_>, f: &[(String, String)]) {
    let Row {
        orig,
        hard,
        min,
        kept,
        risky,
        smoke,
    } = *r;
    *LAST_ROW.lock().unwrap_or_else(|e| e.into_inner()) = Some(SweepRow {
        ratio: hard.filter(|_| min > 0).map(|h| h as f64 / min as f64),
        hard_bytes: hard,
        min_bytes: min,
        risky: risky.to_string(),
        failures: f.iter().map(|(s, _)| s.clone()).collect(),
    });
    let ratio = match hard {
        Some(h) if min > 0 => format!("{:.2}", h as f64 / min as f64),
        _ => "-".to_string(),
    };
    let summary: Vec<String> = f.iter().map(|(s, _)| s.replace('|', "\\|")).collect();
    let line = format!(
        "| {name} | {} | {} | {} | {ratio} | {} | {} | {smoke} | {} |",
        mb(orig),
        hard.map(mb).unwrap_or_else(|| "-".into()),
        mb(min),
        kept.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
        if risky.is_empty() { "-" } else { risky },
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join("; ")
        }
    );
    eprintln!("{TABLE_HEADER}\n{line}");
    append_table_row(TABLE_HEADER, &line);
}

/// A row for a case that stopped before the hardened image could be measured.
fn early_row(name: &str, orig: u64, min: u64, smoke: &str, f: &[(String, String)]) {
    let r = Row {
        orig,
        hard: None,
        min,
        kept: None,
        risky: "",
        smoke,
    };
    row(name, &r, f);
}

/// Bytes of `files` outside /usr/share/zoneinfo.
fn without_zoneinfo<'a>(files: impl Iterator<Item = (&'a String, &'a u64)>) -> u64 {
    files
        .filter(|(p, _)| !p.starts_with(&format!("{ZONEINFO}/")))
        .map(|(_, s)| s)
        .sum()
}

/// Run one case end to end; panics with every failure found.
pub(crate) fn run_case(case: Case) {
    let name = case.name.clone();
    let reg = Registry::start();
    let src = reg.image(&format!("works/{name}:1"));
    let layers: Vec<&PreparedLayer> = case.layers.iter().collect();
    let mut laps = Laps::new();
    push_prepared_image(&src, &case.spec, &layers);
    laps.lap("push");
    keep_source(&name, &src);
    // pare's three runs go in parallel with the original's runs: `pare check` (e), the
    // harden under test (no flags), `pare harden --check` (d) to another tag.
    let checked = format!("{src}-checked");
    let check_run = pare_spawn(&["check", &src]);
    let harden_run = pare_spawn(&["harden", &src, "--report", "-"]);
    let hc_run = pare_spawn(&["harden", "--check", &src, &checked]);
    // Measurement mode (PARE_WORKS_PACKAGES=1): the same harden without the package rule.
    let nopkg_run = std::env::var_os("PARE_WORKS_PACKAGES").map(|_| {
        pare_spawn(&[
            "harden",
            "--no-packages",
            "--no-sbom",
            &src,
            &format!("{src}-nopkg"),
        ])
    });
    let mut exceptions: Vec<(&str, &str)> = COMMON_EXCEPTIONS.to_vec();
    exceptions.extend(case.exceptions.iter().copied());
    let mut failures: Failures = Vec::new();

    // The original: what the workload does, and which files it touches.
    let orig = pull_and_unpack(&src);
    laps.lap("unpack original");
    let oroot = orig.rootfs();
    let before = regular_files(&oroot);
    let original_bytes: u64 = before.values().sum();
    let (trace, orig_results) = trace_original(&case, &orig, &before, original_bytes);
    let min_bytes = without_zoneinfo(trace.files.iter().map(|(p, f)| (p, &f.size)));

    // The image pare makes, with no flags.
    laps.lap("strace runs");
    let (harden, harden_time) = harden_run.join().expect("pare harden thread");
    laps.lap("wait for pare harden");
    laps.laps.push(format!("pare harden {harden_time:.1?}"));
    eprintln!("[{name}] pare harden: {}", text(&harden.stderr).trim());
    if !harden.status.success() {
        failures.push((
            format!("pare harden failed: {}", error_line(&harden.stderr)),
            format!(
                "pare harden {src} failed (exit {:?}): {}",
                harden.status.code(),
                text(&harden.stderr).trim()
            ),
        ));
        early_row(&name, original_bytes, min_bytes, "harden failed", &failures);
        panic!("{name}:\n{}", failures[0].1);
    }
    let report = check_layer_reads(&name, &harden.stdout, &mut failures);
    let hard = pull_and_unpack(&format!("{src}-hardened"));
    laps.lap("unpack hardened");
    let hroot = hard.rootfs();
    let hfiles = regular_files(&hroot);

    // `pare harden --check` writes the same image (and the same SBOM referrer tag) to another
    // tag of this repository: let it finish before the referrer is read, since the registry
    // rewrites a tag's link in place and a concurrent read can miss it.
    let (hc, hc_time) = hc_run.join().expect("pare harden --check thread");

    why_checks(&case, &src, &mut failures);
    if oroot.join("var/lib/dpkg/status").is_file() {
        let images = Images {
            name: &name,
            src: &src,
            orig: &orig,
            hard: &hard,
            hfiles: &hfiles,
        };
        scanner_checks(&reg, &images, nopkg_run, &mut failures);
    }
    let kept = hfiles.len();
    let hard_bytes = without_zoneinfo(hfiles.iter());
    file_checks(&trace, &exceptions, &oroot, &hroot, &mut failures);
    size_checks(&case, &trace, &hfiles, hard_bytes, min_bytes, &mut failures);
    zoneinfo_check(&case, &hroot, &hfiles, &mut failures);

    laps.lap("compare files");
    let smoke = smoke_checks(&case, &hard, &orig_results, &mut failures);

    // (e) `pare check` on the original: it runs as root, has shells and setuid programs.
    let (check, check_time) = check_run.join().expect("pare check thread");
    laps.laps.push(format!("pare check {check_time:.1?}"));
    if check.status.code() != Some(1) {
        failures.push((
            format!("(e) pare check exit {:?}", check.status.code()),
            format!(
                "(e) `pare check {src}` (the original) exited {:?}, expected 1 (violations)\n{}",
                check.status.code(),
                describe_output(&check)
            ),
        ));
    }

    // (d) `pare harden --check` passes on the original.
    laps.lap("hardened runs");
    laps.lap("wait for pare harden --check");
    laps.laps.push(format!("pare harden --check {hc_time:.1?}"));
    if hc.status.code() != Some(0) {
        failures.push((
            format!(
                "(d) harden --check exit {:?}: {}",
                hc.status.code(),
                error_line(&hc.stderr)
            ),
            format!(
                "(d) `pare harden --check {src} {checked}` exited {:?}, expected 0\n{}",
                hc.status.code(),
                describe_output(&hc)
            ),
        ));
    }

    eprintln!("[{name}] timings: {}", laps.laps.join(", "));
    let risky = risky_with_causes(&risky_programs(&hfiles), report.as_ref());
    let figures = Row {
        orig: original_bytes,
        hard: Some(hard_bytes),
        min: min_bytes,
        kept: Some(kept),
        risky: &risky,
        smoke: &smoke,
    };
    row(&name, &figures, &failures);
    assert!(
        failures.is_empty(),
        "{name}: {} failure(s):\n\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(_, d)| d.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// PARE_WORKS_KEEP=DIR (investigation): a copy of the source as the OCI layout DIR/NAME.
fn keep_source(name: &str, src: &str) {
    if let Some(dir) = std::env::var_os("PARE_WORKS_KEEP") {
        let dest = PathBuf::from(dir).join(name);
        let _ = fs::remove_dir_all(&dest);
        let out = run_capture(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--src-tls-verify=false", "-q"])
                .arg(format!("docker://{src}"))
                .arg(format!("oci:{}:1", dest.display())),
        );
        eprintln!(
            "[{name}] kept the source as oci:{}:1 ({})",
            dest.display(),
            out.status
        );
    }
}

/// Each check's workload run on the original under strace: what it gave, and the files it
/// touched (a harness failure when a workload does not work on the original).
fn trace_original(
    case: &Case,
    orig: &Unpacked,
    before: &BTreeMap<String, u64>,
    original_bytes: u64,
) -> (Trace, Vec<WorkloadResult>) {
    let name = &case.name;
    let oroot = orig.rootfs();
    let logs = tempfile::tempdir().expect("tempdir for strace logs");
    let mut trace = Trace::default();
    let mut orig_results = Vec::new();
    for (i, c) in case.checks.iter().enumerate() {
        let log = logs.path().join(format!("strace-{i}.log"));
        let r = run_workload(&oroot, &orig.config, &c.w, Some(&log));
        let expect_ok = c
            .expect
            .as_ref()
            .is_none_or(|e| r.stdout.windows(e.len().max(1)).any(|w| w == e.as_slice()));
        if r.code != Some(c.exit) || !expect_ok {
            early_row(name, original_bytes, 0, "harness failed", &[]);
            panic!(
                "HARNESS: workload `{}` of {name} does not work on the ORIGINAL image (expected \
                 stdout to contain {:?}):\n{}",
                c.w.label,
                c.expect.as_deref().map(text),
                r.describe()
            );
        }
        let log_text = fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("read strace log {}: {e}", log.display()));
        let t = parse_strace(&log_text, &oroot, before);
        assert!(
            !t.execs.is_empty() && !t.files.is_empty(),
            "HARNESS: strace of `{}` on {name} found no exec or no file (log {} lines)",
            c.w.label,
            log_text.lines().count()
        );
        eprintln!(
            "[{name}] original `{}`: exit 0, {} processes, execs {:?}, {} files, {}{}",
            c.w.label,
            t.processes,
            t.execs.iter().collect::<BTreeSet<_>>(),
            t.files.len(),
            mb(t.bytes()),
            if t.unresolved.is_empty() {
                String::new()
            } else {
                format!(", {} unresolved: {:?}", t.unresolved.len(), t.unresolved)
            }
        );
        trace.merge(t);
        orig_results.push(r);
    }
    if verbose() {
        for (p, f) in &trace.files {
            eprintln!("[{name}]   {p} {} {:?} {:?}", f.size, f.how, f.requested);
        }
    }
    (trace, orig_results)
}

/// Each layer decompressed once: the merge pass captured what the trace and plan read. The
/// harden's report, when it has one.
fn check_layer_reads(
    name: &str,
    stdout: &[u8],
    failures: &mut Failures,
) -> Option<serde_json::Value> {
    let report: Option<serde_json::Value> = serde_json::from_slice(stdout).ok();
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(r) => {
            let r = &r["layer_reads"];
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            let ratio = (n("merge_bytes") + n("later_bytes")) as f64
                / n("uncompressed_bytes").max(1) as f64;
            eprintln!("[{name}] layers inflated {ratio:.3}x: {r}");
            if ratio > 1.05 {
                failures.push((
                    format!("layers inflated {ratio:.2}x"),
                    format!("pare harden decompressed {ratio:.2}x the layers' size: {r}"),
                ));
            }
        }
        Err(e) => failures.push(("no report".into(), format!("pare harden's report: {e}"))),
    }
    report
}

/// (h) the evidence pare gives for chosen paths.
fn why_checks(case: &Case, src: &str, failures: &mut Failures) {
    let name = &case.name;
    // PARE_WORKS_WHY=PATH,PATH (investigation): print what `pare trace --why` says of them.
    for path in std::env::var("PARE_WORKS_WHY")
        .unwrap_or_default()
        .split(',')
    {
        if path.is_empty() {
            continue;
        }
        let out = pare_cmd()
            .args(["trace", "-q", "--why", path, src])
            .output()
            .expect("run pare trace --why");
        eprintln!("[{name}] --why {path}:\n{}", text(&out.stdout));
    }
    for (path, must) in &case.why {
        let out = pare_cmd()
            .args(["trace", "-q", "--why", path, src])
            .output()
            .expect("run pare trace --why");
        let text = text(&out.stdout);
        for m in must {
            if !text.contains(m) {
                failures.push((
                    format!("(h) --why {path}: no {m:?}"),
                    format!(
                        "(h) `pare trace --why {path}` does not say {m:?}:\n{text}{}",
                        text_err(&out.stderr)
                    ),
                ));
            }
        }
    }
}

/// A case's two images: the source's reference, the original and the hardened image unpacked,
/// and the hardened image's regular files.
struct Images<'a> {
    name: &'a str,
    src: &'a str,
    orig: &'a Unpacked,
    hard: &'a Unpacked,
    hfiles: &'a BTreeMap<String, u64>,
}

/// (f), (i), (g): scanners still see the packages that keep a file (syft, the SBOM referrer,
/// the status.d stanzas).
fn scanner_checks(
    reg: &Registry,
    images: &Images<'_>,
    nopkg_run: Option<PareRun>,
    failures: &mut Failures,
) {
    let (oroot, hroot) = (images.orig.rootfs(), images.hard.rootfs());
    let expected = packages_with_kept_files(&oroot, &hroot);
    syft_check(images, &expected, nopkg_run, failures);
    sbom_check(reg, images, &expected, failures);
    let problems = check_status_d(&oroot, &hroot);
    if !problems.is_empty() {
        failures.push((
            format!("(g) status.d: {}", problems[0]),
            format!(
                "(g) the hardened image's status.d:\n  {}",
                problems.join("\n  ")
            ),
        ));
    }
}

/// (f) syft's `deb` packages of the hardened image are exactly the original's packages owning
/// a kept path (read here from the original's dpkg database), at the same versions.
fn syft_check(
    images: &Images<'_>,
    expected: &BTreeMap<String, String>,
    nopkg_run: Option<PareRun>,
    failures: &mut Failures,
) {
    let Images {
        name,
        src,
        orig,
        hard,
        hfiles,
    } = *images;
    let (before, after) = match (syft_packages(&orig.layout), syft_packages(&hard.layout)) {
        (Ok(before), Ok(after)) => (before, after),
        (Err(e), _) | (_, Err(e)) => {
            if in_ci() {
                failures.push(("(f) syft failed".into(), format!("(f) {e}")));
            } else {
                skip(&format!("[{name}] (f) {e}"));
            }
            return;
        }
    };
    let debs = |m: &BTreeMap<(String, String), String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|((t, _), _)| t == "deb")
            .map(|((_, n), v)| (n.clone(), v.clone()))
            .collect()
    };
    let (b, a) = (debs(&before), debs(&after));
    eprintln!(
        "[{name}] syft: {} deb packages ({} in all) → {} ({} in all); {} expected",
        b.len(),
        before.len(),
        a.len(),
        after.len(),
        expected.len()
    );
    if let Some(run) = nopkg_run {
        let (out, _) = run.join().expect("pare harden --no-packages thread");
        let nopkg = if out.status.success() {
            let u = pull_and_unpack(&format!("{src}-nopkg"));
            mb(regular_files(&u.rootfs()).values().sum())
        } else {
            format!("failed: {}", error_line(&out.stderr))
        };
        append_named_row(
            "works-packages.md",
            "| image | dpkg packages | syft deb before | syft deb after | syft all before | syft all after | bytes | bytes with --no-packages |\n|---|---|---|---|---|---|---|---|",
            &format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {nopkg} |",
                dpkg_status(&orig.rootfs()).len(),
                b.len(),
                a.len(),
                before.len(),
                after.len(),
                mb(hfiles.values().sum())
            ),
        );
    }
    if &a != expected {
        let extra: Vec<_> = a
            .iter()
            .filter(|(k, v)| expected.get(*k) != Some(v))
            .collect();
        let gone: Vec<_> = expected
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .collect();
        failures.push((
            format!("(f) syft packages differ: {} extra, {} missing", extra.len(), gone.len()),
            format!(
                "(f) syft's deb packages of the hardened image are not the packages owning a kept file:\n  listed but not expected: {extra:?}\n  expected but not listed: {gone:?}"
            ),
        ));
    }
    for (n, v) in &a {
        if b.get(n) != Some(v) {
            failures.push((
                format!("(f) {n} {v} not in the original"),
                format!(
                    "(f) syft lists {n} {v} in the hardened image, not in the original ({:?})",
                    b.get(n)
                ),
            ));
        }
    }
}

/// (i) the SPDX SBOM pushed as a referrer of the hardened image (tag scheme: Debian's
/// registry has no referrers API) validates against the SPDX 2.3 schema, names the same
/// packages, and gives every file a SHA1.
fn sbom_check(
    reg: &Registry,
    images: &Images<'_>,
    expected: &BTreeMap<String, String>,
    failures: &mut Failures,
) {
    let Images {
        name, src, hfiles, ..
    } = *images;
    let repo = format!("works/{name}");
    let subject = skopeo_manifest_digest(&format!("{src}-hardened"), reg.creds());
    let doc = match sbom_referrer(reg, &repo, &subject) {
        Err(e) => {
            failures.push(("(i) no SBOM referrer".into(), format!("(i) {e}")));
            return;
        }
        Ok(doc) => doc,
    };
    if let Err(e) = validate_json_schema(&doc, "spdx-schema-2.3.json") {
        failures.push(("(i) SBOM not valid SPDX 2.3".into(), format!("(i) {e}")));
    }
    let pkgs: BTreeMap<String, String> = doc["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["versionInfo"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    if &pkgs != expected {
        failures.push((
            "(i) SBOM packages differ".into(),
            format!("(i) the SBOM lists {pkgs:?}, expected {expected:?}"),
        ));
    }
    let files = doc["files"].as_array().cloned().unwrap_or_default();
    let no_sha1 = files
        .iter()
        .filter(|f| {
            !f["checksums"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["algorithm"] == "SHA1")
        })
        .count();
    let names: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f["fileName"].as_str())
        .collect();
    let unlisted: Vec<&String> = hfiles
        .keys()
        .filter(|p| !names.contains(p.as_str()))
        .collect();
    if !unlisted.is_empty() || no_sha1 > 0 {
        failures.push((
            "(i) SBOM files".into(),
            format!(
                "(i) the SBOM lists {} files ({no_sha1} without SHA1); not listed: {:?}",
                files.len(),
                &unlisted[..unlisted.len().min(10)]
            ),
        ));
    }
}

/// (b) every file the original used is there, with the same bytes.
fn file_checks(
    trace: &Trace,
    exceptions: &[(&str, &str)],
    oroot: &Path,
    hroot: &Path,
    failures: &mut Failures,
) {
    let mut missing = Vec::new();
    let mut differing = Vec::new();
    for (canon, f) in &trace.files {
        let mut names: Vec<&str> = f.requested.iter().map(String::as_str).collect();
        names.push(canon);
        if excluded(exceptions, &names).is_some() {
            continue;
        }
        let orig_bytes = fs::read(oroot.join(canon.trim_start_matches('/'))).unwrap_or_default();
        for req in &f.requested {
            let got = resolve_in_root(hroot, "/", req, true)
                .map(|h| hroot.join(h.trim_start_matches('/')))
                .filter(|h| fs::symlink_metadata(h).is_ok_and(|m| m.is_file()));
            match got {
                None => {
                    let via = if req == canon {
                        String::new()
                    } else {
                        format!(" (→ {canon})")
                    };
                    missing.push((
                        req.clone(),
                        format!(
                            "  {req}{via}  {} bytes, used by {}",
                            f.size,
                            f.how.iter().cloned().collect::<Vec<_>>().join(",")
                        ),
                    ));
                }
                Some(h) => {
                    let hb = fs::read(&h).unwrap_or_default();
                    if hb != orig_bytes {
                        differing.push((
                            req.clone(),
                            format!(
                                "  {req}: original {} bytes, hardened {} bytes",
                                orig_bytes.len(),
                                hb.len()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if !missing.is_empty() {
        failures.push((
            format!("(b) {} missing: {}", missing.len(), few(&missing)),
            format!(
                "(b) {} file(s) the original uses (strace) are missing from the hardened image:\n{}",
                missing.len(),
                missing.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("\n")
            ),
        ));
    }
    if !differing.is_empty() {
        failures.push((
            format!("(b) {} differ: {}", differing.len(), few(&differing)),
            format!(
                "(b) {} file(s) the original uses differ in the hardened image:\n{}",
                differing.len(),
                differing
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ));
    }
}

/// (c) little more than what is used.
fn size_checks(
    case: &Case,
    trace: &Trace,
    hfiles: &BTreeMap<String, u64>,
    hard_bytes: u64,
    min_bytes: u64,
    failures: &mut Failures,
) {
    let name = &case.name;
    let limit = case.max_ratio.map_or(1.5, |(l, _)| l);
    if let Some((l, why)) = case.max_ratio {
        eprintln!("[{name}] (c) limit {l} instead of 1.5: {why}");
    }
    if min_bytes > 0 && hard_bytes as f64 > limit * min_bytes as f64 {
        let extra: u64 = hfiles
            .iter()
            .filter(|(p, _)| {
                !p.starts_with(&format!("{ZONEINFO}/")) && !trace.files.contains_key(*p)
            })
            .map(|(_, s)| s)
            .sum();
        let mut biggest: Vec<(&String, &u64)> = hfiles
            .iter()
            .filter(|(p, _)| {
                !p.starts_with(&format!("{ZONEINFO}/")) && !trace.files.contains_key(*p)
            })
            .collect();
        biggest.sort_by(|a, b| b.1.cmp(a.1));
        failures.push((
            format!(
                "(c) ratio {:.2} > {limit}",
                hard_bytes as f64 / min_bytes as f64
            ),
            format!(
            "(c) the hardened image keeps {} of regular files (excl. {ZONEINFO}), {:.2} × the {} the \
             workload uses (limit {limit} ×); {} of it in files the workload never touched, the \
             largest:\n{}",
            mb(hard_bytes),
            hard_bytes as f64 / min_bytes as f64,
            mb(min_bytes),
            mb(extra),
            biggest
                .iter()
                .take(15)
                .map(|(p, s)| format!("  {p} {s} bytes"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
}

/// A case that never formats local time keeps no /usr/share/zoneinfo.
fn zoneinfo_check(
    case: &Case,
    hroot: &Path,
    hfiles: &BTreeMap<String, u64>,
    failures: &mut Failures,
) {
    if case.no_zoneinfo && fs::symlink_metadata(hroot.join("usr/share/zoneinfo")).is_ok() {
        let n = hfiles
            .keys()
            .filter(|p| p.starts_with(&format!("{ZONEINFO}/")))
            .count();
        failures.push((
            format!("has {ZONEINFO} ({n} files)"),
            format!(
                "the program never formats local time, yet the hardened image has {ZONEINFO} ({n} files)"
            ),
        ));
    }
}

/// (a) the same output on the hardened image; `ok` or `FAIL` for the table.
fn smoke_checks(
    case: &Case,
    hard: &Unpacked,
    orig_results: &[WorkloadResult],
    failures: &mut Failures,
) -> String {
    let name = &case.name;
    let hroot = hard.rootfs();
    let mut smoke = "ok".to_string();
    for (c, o) in case.checks.iter().zip(orig_results) {
        let r = run_workload(&hroot, &hard.config, &c.w, None);
        let (want, got) = match c.compare {
            Compare::Exact => (o.stdout.clone(), r.stdout.clone()),
            Compare::PasswdRoot => (
                passwd_root_ids(&o.stdout).into_bytes(),
                passwd_root_ids(&r.stdout).into_bytes(),
            ),
        };
        if r.code != o.code || want != got {
            smoke = "FAIL".to_string();
            let how = if r.code != o.code {
                format!("exit {:?} instead of {:?}", r.code, o.code)
            } else {
                "different stdout".to_string()
            };
            failures.push((
                format!("(a) `{}`: {how}", c.w.label),
                format!(
                    "(a) workload `{}` differs on the hardened image ({how}):\n=== original ===\n{}\n=== hardened ===\n{}",
                    c.w.label,
                    o.describe(),
                    r.describe()
                ),
            ));
        } else {
            eprintln!("[{name}] hardened `{}`: same output", c.w.label);
        }
    }
    smoke
}

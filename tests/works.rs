//! Acceptance: images made of real Debian bookworm packages still work after `pare harden`
//! (no flags), and keep little more than what they use.
//!
//! Each case pushes an image (the Debian slim base layer + a layer with the app's packages and
//! files) to a real registry, runs its workload on the original under `strace` (as 65532, in
//! its own namespaces) to learn which files it touches, hardens it with `pare harden REG/…:1`,
//! pulls `…:1-hardened` back with skopeo + umoci and checks:
//!
//! (a) the workload's stdout and exit code are the same on the hardened image;
//! (b) every regular file the original's strace shows in use is in the hardened root, with the
//!     same bytes (per-case exceptions, each with its reason);
//! (c) the hardened root's regular files (not counting /usr/share/zoneinfo) weigh at most 1.5 ×
//!     the strace minimum (also without zoneinfo);
//! (d) `pare harden --check` on the original exits 0;
//! (e) `pare check` on the original exits 1 (it runs as root, with shells and setuid files);
//! (f) `syft` lists as `deb` packages of the hardened image exactly the original's packages that
//!     own a kept file (from the original's `info/*.list`, /usr-merge aliases resolved), at the
//!     original's versions;
//! (g) the hardened image's `/var/lib/dpkg/status.d/NAME` stanzas are the original's `status`
//!     stanzas (`Conffiles` limited to the kept ones), its `NAME.md5sums` the original's lines
//!     for kept files;
//! (h) `pare trace --why PATH` gives the expected reasons (where a case names some);
//! (i) the SPDX 2.3 SBOM pushed as an OCI referrer (found through the `sha256-<hex>` tag) is
//!     valid against the published schema, lists the same packages and every file with SHA1.
//!
//! One table row per case goes to stderr and to `target/works-table.md` (written afresh by each
//! run). Set `PARE_WORKS_VERBOSE=1` to print every traced file, `PARE_BIN=target/release/pare`
//! to test another pare binary than the one cargo builds. Needs root (chroot, namespaces); without
//! it, or without a download or tool a case needs, the case prints SKIP (a failure under
//! `CI=true`).

mod common;
#[path = "works/sweep.rs"]
mod sweep;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::debian::*;
use common::scan::*;
use common::*;
use sha2::{Digest, Sha256};

const TABLE_HEADER: &str = "| image | original | hardened (excl. zoneinfo) | strace minimum (excl. zoneinfo) | ratio | files kept | shells, interpreters, network tools kept | smoke | failures |\n|---|---|---|---|---|---|---|---|---|";

/// The last table row `run_case` made (the sweep collects them).
static LAST_ROW: std::sync::Mutex<Option<SweepRow>> = std::sync::Mutex::new(None);

/// One case's figures, for `docs/sweep.md`.
#[derive(Clone, Debug, Default)]
struct SweepRow {
    ratio: Option<f64>,
    hard_bytes: Option<u64>,
    min_bytes: u64,
    risky: String,
    failures: Vec<String>,
}

/// Programs a hardened image should keep only with cause: shells, interpreters, network tools,
/// package managers (by base name, in the usual program directories).
fn risky_programs(files: &BTreeMap<String, u64>) -> Vec<String> {
    const NAMES: &[&str] = &[
        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "perl", "ruby", "node",
        "nodejs", "php", "lua", "tclsh", "curl", "wget", "nc", "ncat", "netcat", "socat", "telnet",
        "ssh", "apt", "apt-get", "dpkg", "pip", "pip3",
    ];
    let mut out: Vec<String> = files
        .keys()
        .filter(|p| {
            [
                "/bin/",
                "/usr/bin/",
                "/sbin/",
                "/usr/sbin/",
                "/usr/local/bin/",
            ]
            .iter()
            .any(|d| p.strip_prefix(d).is_some_and(|n| !n.contains('/')))
        })
        .filter_map(|p| p.rsplit('/').next())
        .filter(|n| {
            NAMES.contains(n)
                || n.starts_with("python")
                || n.starts_with("perl5")
                || n.starts_with("ruby")
                || n.starts_with("lua5")
                || n.starts_with("tclsh")
                || n.starts_with("php")
        })
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Each kept risky program with the reason pare's report gives for keeping it (the first
/// kept path of that base name), e.g. `dash (the entrypoint: …)`: the table shows why each
/// shell or interpreter is there, not only that it is.
fn risky_with_causes(names: &[String], report: Option<&serde_json::Value>) -> String {
    let files = report
        .and_then(|r| r["files"].as_array())
        .cloned()
        .unwrap_or_default();
    names
        .iter()
        .map(|n| {
            let reason = files
                .iter()
                .filter(|f| f["kind"] != "dir")
                .find(|f| {
                    f["path"]
                        .as_str()
                        .is_some_and(|p| p.rsplit('/').next() == Some(n.as_str()))
                })
                .and_then(|f| f["reason"].as_str())
                .map(|r| {
                    let r: String = r.replace('|', "\\|").chars().take(90).collect();
                    format!(" ({r})")
                })
                .unwrap_or_default();
            format!("{n}{reason}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Files the original uses that the hardened image may have without the same bytes, or not at
/// all, with the reason. Every case has these.
const COMMON_EXCEPTIONS: &[(&str, &str)] = &[
    (
        "/etc/passwd",
        "pare writes its own /etc/passwd (root, nobody, nonroot 65532)",
    ),
    ("/etc/group", "pare writes its own /etc/group"),
    (
        "/etc/ld.so.cache",
        "pare may write its own loader cache (the originals have none)",
    ),
];

const ZONEINFO: &str = "/usr/share/zoneinfo";

/// How the hardened run's output is compared with the original's.
#[derive(Clone, Copy, Debug)]
enum Compare {
    /// stdout byte for byte.
    Exact,
    /// `getent passwd root`: name, password field, uid and gid (pare writes its own
    /// /etc/passwd by design, so the shell and GECOS of root may differ).
    PasswdRoot,
}

struct Check {
    w: Workload,
    /// The original's stdout must contain this (proves the workload did its work).
    expect: Option<Vec<u8>>,
    compare: Compare,
    /// The original's exit code (0 unless a case says its program reports findings).
    exit: i32,
}

impl Check {
    fn new(w: Workload, expect: impl AsRef<[u8]>) -> Check {
        Check {
            w,
            expect: Some(expect.as_ref().to_vec()),
            compare: Compare::Exact,
            exit: 0,
        }
    }
}

struct Case {
    name: String,
    spec: ImageSpec,
    layers: Vec<PreparedLayer>,
    checks: Vec<Check>,
    exceptions: Vec<(&'static str, &'static str)>,
    /// Assert the hardened image has no /usr/share/zoneinfo.
    no_zoneinfo: bool,
    /// (c)'s limit when not 1.5, with why this program needs more than one run shows.
    max_ratio: Option<(f64, &'static str)>,
    /// `pare trace --why PATH` on the original must print each of these.
    why: Vec<(&'static str, Vec<&'static str>)>,
}

impl Case {
    fn new(name: &str, spec: ImageSpec, layers: Vec<PreparedLayer>) -> Case {
        Case {
            name: name.to_string(),
            spec,
            layers,
            checks: Vec::new(),
            exceptions: Vec::new(),
            no_zoneinfo: false,
            max_ratio: None,
            why: Vec::new(),
        }
    }

    fn why(mut self, path: &'static str, must: &[&'static str]) -> Self {
        self.why.push((path, must.to_vec()));
        self
    }

    /// A file the original's run uses that the hardened image may lack, with why.
    fn except(mut self, path: &'static str, why: &'static str) -> Self {
        self.exceptions.push((path, why));
        self
    }

    fn max_ratio(mut self, limit: f64, why: &'static str) -> Self {
        self.max_ratio = Some((limit, why));
        self
    }

    fn check(mut self, c: Check) -> Self {
        self.checks.push(c);
        self
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// pare's error line (`pare: error: …`), else the last line of its stderr.
fn text_err(b: &[u8]) -> String {
    let t = text(b);
    if t.trim().is_empty() {
        String::new()
    } else {
        format!("stderr: {t}")
    }
}

fn error_line(b: &[u8]) -> String {
    let t = text(b);
    t.lines()
        .rev()
        .find(|l| l.starts_with("pare: error"))
        .or_else(|| t.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .to_string()
}

/// The first few names of a list, for the table.
fn few(items: &[(String, String)]) -> String {
    let mut s: Vec<&str> = items.iter().take(4).map(|(n, _)| n.as_str()).collect();
    if items.len() > 4 {
        s.push("…");
    }
    s.join(", ")
}

fn verbose() -> bool {
    std::env::var_os("PARE_WORKS_VERBOSE").is_some()
}

fn excluded<'a>(exceptions: &'a [(&'a str, &'a str)], paths: &[&str]) -> Option<&'a str> {
    exceptions.iter().find_map(|(pat, why)| {
        let hit = paths.iter().any(|p| match pat.strip_suffix('*') {
            Some(prefix) => p.starts_with(prefix),
            None => p == pat,
        });
        hit.then_some(*why)
    })
}

fn passwd_root_ids(out: &[u8]) -> String {
    text(out)
        .lines()
        .find(|l| l.starts_with("root:"))
        .map(|l| l.split(':').take(4).collect::<Vec<_>>().join(":"))
        .unwrap_or_else(|| format!("<no root line in {:?}>", text(out)))
}

/// The pare under test: `$PARE_BIN` when set (e.g. a release build), else the one cargo built.
fn pare_cmd() -> Command {
    match std::env::var_os("PARE_BIN") {
        Some(bin) => Command::new(bin),
        None => pare(),
    }
}

/// `pare ARGS` started now, its output collected on a thread.
fn pare_spawn(args: &[&str]) -> std::thread::JoinHandle<(Output, Duration)> {
    let mut cmd = pare_cmd();
    cmd.args(args);
    std::thread::spawn(move || {
        let started = Instant::now();
        let out = run_capture(&mut cmd);
        (out, started.elapsed())
    })
}

/// Phase timings of a case, printed at its end.
struct Laps {
    last: Instant,
    laps: Vec<String>,
}

impl Laps {
    fn new() -> Laps {
        Laps {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, what: &str) {
        self.laps
            .push(format!("{what} {:.1?}", self.last.elapsed()));
        self.last = Instant::now();
    }
}

/// Run one case end to end; panics with every failure found.
fn run_case(case: Case) {
    let name = case.name.clone();
    let reg = Registry::start();
    let src = reg.image(&format!("works/{name}:1"));
    let layers: Vec<&PreparedLayer> = case.layers.iter().collect();
    let mut laps = Laps::new();
    push_prepared_image(&src, &case.spec, &layers);
    laps.lap("push");
    // PARE_WORKS_KEEP=DIR (investigation): a copy of the source as the OCI layout DIR/NAME.
    if let Some(dir) = std::env::var_os("PARE_WORKS_KEEP") {
        let dest = PathBuf::from(dir).join(&name);
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
    // (one-line summary for the table, full message)
    let mut failures: Vec<(String, String)> = Vec::new();
    let row = |orig: u64,
               hard: Option<u64>,
               min: u64,
               kept: Option<usize>,
               risky: &str,
               smoke: &str,
               f: &[(String, String)]| {
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
    };

    // The original: what the workload does, and which files it touches.
    let orig = pull_and_unpack(&src);
    laps.lap("unpack original");
    let oroot = orig.rootfs();
    let before = regular_files(&oroot);
    let original_bytes: u64 = before.values().sum();
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
            row(original_bytes, None, 0, None, "", "harness failed", &[]);
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
        let t = parse_strace(&log_text, &oroot, &before);
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
    let min_bytes: u64 = trace
        .files
        .iter()
        .filter(|(p, _)| !p.starts_with(&format!("{ZONEINFO}/")))
        .map(|(_, f)| f.size)
        .sum();

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
        row(
            original_bytes,
            None,
            min_bytes,
            None,
            "",
            "harden failed",
            &failures,
        );
        panic!("{name}:\n{}", failures[0].1);
    }
    // Each layer decompressed once: the merge pass captured what the trace and plan read.
    let report: Option<serde_json::Value> = serde_json::from_slice(&harden.stdout).ok();
    match serde_json::from_slice::<serde_json::Value>(&harden.stdout) {
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
    let hard = pull_and_unpack(&format!("{src}-hardened"));
    laps.lap("unpack hardened");
    let hroot = hard.rootfs();
    let hfiles = regular_files(&hroot);

    // `pare harden --check` writes the same image (and the same SBOM referrer tag) to another
    // tag of this repository: let it finish before the referrer is read, since the registry
    // rewrites a tag's link in place and a concurrent read can miss it.
    let (hc, hc_time) = hc_run.join().expect("pare harden --check thread");

    // (h) the evidence pare gives for chosen paths.
    // PARE_WORKS_WHY=PATH,PATH (investigation): print what `pare trace --why` says of them.
    for path in std::env::var("PARE_WORKS_WHY")
        .unwrap_or_default()
        .split(',')
    {
        if path.is_empty() {
            continue;
        }
        let out = pare_cmd()
            .args(["trace", "-q", "--why", path, &src])
            .output()
            .expect("run pare trace --why");
        eprintln!("[{name}] --why {path}:\n{}", text(&out.stdout));
    }
    for (path, must) in &case.why {
        let out = pare_cmd()
            .args(["trace", "-q", "--why", path, &src])
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

    // (f) scanners still see the packages that keep a file: syft's `deb` packages of the
    // hardened image are exactly the original's packages owning a kept path (read here from
    // the original's dpkg database), at the same versions; the status.d stanzas are the
    // original's.
    if oroot.join("var/lib/dpkg/status").is_file() {
        let expected = packages_with_kept_files(&oroot, &hroot);
        match (syft_packages(&orig.layout), syft_packages(&hard.layout)) {
            (Ok(before), Ok(after)) => {
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
                            dpkg_status(&oroot).len(),
                            b.len(),
                            a.len(),
                            before.len(),
                            after.len(),
                            mb(hfiles.values().sum())
                        ),
                    );
                }
                if a != expected {
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
                            format!("(f) syft lists {n} {v} in the hardened image, not in the original ({:?})", b.get(n)),
                        ));
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                if in_ci() {
                    failures.push(("(f) syft failed".into(), format!("(f) {e}")));
                } else {
                    skip(&format!("[{name}] (f) {e}"));
                }
            }
        }
        // (i) the SPDX SBOM pushed as a referrer of the hardened image (tag scheme: Debian's
        // registry has no referrers API) validates against the SPDX 2.3 schema, names the
        // same packages, and gives every file a SHA1.
        let repo = format!("works/{name}");
        let subject = skopeo_manifest_digest(&format!("{src}-hardened"), reg.creds());
        match sbom_referrer(&reg, &repo, &subject) {
            Err(e) => failures.push(("(i) no SBOM referrer".into(), format!("(i) {e}"))),
            Ok(doc) => {
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
                if pkgs != expected {
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
        }
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
    let kept = hfiles.len();
    let hard_bytes: u64 = hfiles
        .iter()
        .filter(|(p, _)| !p.starts_with(&format!("{ZONEINFO}/")))
        .map(|(_, s)| s)
        .sum();

    // (b) every file the original used is there, with the same bytes.
    let mut missing = Vec::new();
    let mut differing = Vec::new();
    for (canon, f) in &trace.files {
        let mut names: Vec<&str> = f.requested.iter().map(String::as_str).collect();
        names.push(canon);
        if excluded(&exceptions, &names).is_some() {
            continue;
        }
        let orig_bytes = fs::read(oroot.join(canon.trim_start_matches('/'))).unwrap_or_default();
        for req in &f.requested {
            let got = resolve_in_root(&hroot, "/", req, true)
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

    // (c) little more than what is used.
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

    laps.lap("compare files");
    // (a) the same output on the hardened image.
    let mut smoke = "ok".to_string();
    for (c, o) in case.checks.iter().zip(&orig_results) {
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
    row(
        original_bytes,
        Some(hard_bytes),
        min_bytes,
        Some(kept),
        &risky_with_causes(&risky_programs(&hfiles), report.as_ref()),
        &smoke,
        &failures,
    );
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

// ------------------------------------------------------------------------------------------------
// Building blocks
// ------------------------------------------------------------------------------------------------

/// Root and the base, or why the test cannot run (printed as SKIP; a failure in CI).
fn setup() -> Option<&'static BaseImage> {
    if !root_or_skip("the cases need chroot and namespaces") {
        return None;
    }
    if find_tool("strace").is_none() {
        skip("strace is not installed (scripts/test.sh installs it)");
        return None;
    }
    or_skip(bookworm_base())
}

/// An app layer: `packages` over the base, then `f` adds files.
fn app_layer(
    base: &BaseImage,
    packages: &[&str],
    f: impl FnOnce(DebianRootBuilder) -> DebianRootBuilder,
) -> Option<PreparedLayer> {
    let root = f(or_skip(app_root_builder(base, packages))?).build();
    Some(root.layer(&format!("apt-get install {}", packages.join(" "))))
}

fn spec(entrypoint: &[&str], cmd: &[&str]) -> ImageSpec {
    let mut s = ImageSpec::new(Vec::new()).with_entrypoint(entrypoint);
    if !cmd.is_empty() {
        s = s.with_cmd(cmd);
    }
    s
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Compile `source` (C) with `compiler` and `flags` into a temporary file.
fn compile_c(
    compiler: &str,
    source: &str,
    flags: &[&str],
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let cc = find_tool(compiler).ok_or_else(|| format!("{compiler} is not installed"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = dir.path().join("prog.c");
    fs::write(&src, source).map_err(|e| e.to_string())?;
    let out = dir.path().join("prog");
    let o = run_capture(
        Command::new(cc)
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .args(flags),
    );
    if !o.status.success() {
        return Err(format!("{compiler} failed:\n{}", describe_output(&o)));
    }
    Ok((dir, out))
}

fn compiled(compiler: &str, source: &str, flags: &[&str]) -> Option<(tempfile::TempDir, PathBuf)> {
    or_skip(compile_c(compiler, source, flags))
}

// ------------------------------------------------------------------------------------------------
// 1. nginx with a dynamic module
// ------------------------------------------------------------------------------------------------

/// Debian's nginx.conf made to run as a non-root user: pid, logs and temporary files under
/// /tmp, one worker; the includes (modules-enabled, mime.types, conf.d, sites-enabled) kept.
const NGINX_CONF: &str = "worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 64;
}

http {
\tsendfile on;
\ttcp_nopush on;
\ttypes_hash_max_size 2048;
\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;
\taccess_log /tmp/access.log;
\tclient_body_temp_path /tmp/client_body;
\tproxy_temp_path /tmp/proxy;
\tfastcgi_temp_path /tmp/fastcgi;
\tuwsgi_temp_path /tmp/uwsgi;
\tscgi_temp_path /tmp/scgi;
\tgzip on;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
";

#[test]
fn nginx_with_echo_module() {
    let Some(base) = setup() else { return };
    let port = free_port();
    let site = format!(
        "server {{
\tlisten 127.0.0.1:{port};
\troot /var/www/html;
\tindex index.html;
\tlocation / {{
\t\ttry_files $uri $uri/ =404;
\t}}
\tlocation /echo {{
\t\tdefault_type text/plain;
\t\techo \"hello from echo: $arg_name\";
\t}}
}}
"
    );
    let Some(app) = app_layer(base, &["nginx-light", "libnginx-mod-http-echo"], |b| {
        b.file("/etc/nginx/nginx.conf", NGINX_CONF, 0o644)
            .file("/etc/nginx/sites-available/default", &site, 0o644)
            .file(
                "/var/www/html/index.html",
                "<!doctype html><h1>served by pare's hardened nginx</h1>\n",
                0o644,
            )
    }) else {
        return;
    };
    let spec = spec(&["nginx", "-g", "daemon off;"], &[])
        .with_exposed_port(&format!("{port}/tcp"))
        .with_extra_config("StopSignal", serde_json::json!("SIGQUIT"));
    run_case(
        Case::new("nginx", spec, vec![base.layer.clone(), app])
            .check(Check::new(
                Workload::new("GET / and /echo?name=pare").http(port, &["/", "/echo?name=pare"]),
                "hello from echo: pare",
            ))
            .why(
                "/etc/nginx/mime.types",
                &[
                    "[config-include]",
                    "[package] configuration file of package nginx-common",
                ],
            ),
    );
}

/// `pare probe --http-probe` against the hardened nginx-light of Debian, as a non-root nginx
/// must be configured (pid, logs and temporary files under /tmp) listening on port 80 inside
/// pare's sandbox, compared with the original's answer.
#[test]
fn nginx_light_answers_an_http_probe_on_port_80() {
    let Some(base) = setup() else { return };
    let site = "server {
\tlisten 80;
\troot /var/www/html;
\tindex index.html;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
";
    let Some(app) = app_layer(base, &["nginx-light"], |b| {
        b.file("/etc/nginx/nginx.conf", NGINX_CONF, 0o644)
            .file("/etc/nginx/sites-available/default", site, 0o644)
            .file(
                "/var/www/html/index.html",
                "<!doctype html><h1>port 80, no root</h1>\n",
                0o644,
            )
    }) else {
        return;
    };
    let spec = spec(&["nginx", "-g", "daemon off;"], &[])
        .with_exposed_port("80/tcp")
        .with_user("65532:65532");
    let reg = Registry::start();
    let src = reg.image("works/nginx80:1");
    push_prepared_image(&src, &spec, &[&base.layer, &app]);
    let out = pare_cmd()
        .args(["-q", "harden", "--no-sbom", &src, "--http-probe", "80/"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = pare_cmd()
        .args([
            "-q",
            "probe",
            &format!("{src}-hardened"),
            "--against",
            &src,
            "--http-probe",
            "80/",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let http = &r["probes"][0]["outcome"]["http"];
    assert_eq!(http["status"], 200, "{r}");
    assert!(
        http["body"].as_str().unwrap().contains("port 80, no root"),
        "{r}"
    );
}

// ------------------------------------------------------------------------------------------------
// 2. python3
// ------------------------------------------------------------------------------------------------

const PY_MAIN: &str = r#"import datetime
import hashlib
import json
import sqlite3

db = sqlite3.connect(":memory:")
db.execute("create table t (k text, v integer)")
db.executemany("insert into t values (?, ?)", [("a", 1), ("b", 2), ("c", 39)])
total = db.execute("select sum(v) from t").fetchone()[0]
when = datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc) + datetime.timedelta(days=1)
print(json.dumps({
    "sum": total,
    "sha256": hashlib.sha256(b"pare").hexdigest(),
    "when": when.isoformat(),
    "sqlite3": sqlite3.sqlite_version_info >= (3, 0, 0),
}, sort_keys=True))
"#;

fn python_check(label: &str) -> Check {
    Check::new(
        Workload::new(label),
        format!("\"sha256\": \"{}\"", sha256_hex(b"pare")),
    )
}

#[test]
fn python_app() {
    let Some(base) = setup() else { return };
    let Some(app) = app_layer(base, &["python3"], |b| {
        b.file("/app/main.py", PY_MAIN, 0o644)
    }) else {
        return;
    };
    let spec = spec(&["python3", "/app/main.py"], &[]).with_workdir("/app");
    run_case(
        Case::new("python", spec, vec![base.layer.clone(), app])
            .check(python_check("python3 /app/main.py")),
    );
}

#[test]
fn python_relocated_without_dpkg_entries() {
    let Some(base) = setup() else { return };
    let Some(builder) = or_skip(app_root_builder(base, &["python3"])) else {
        return;
    };
    // The interpreter and its standard library moved under /opt/python (as a hand-built or
    // copied Python would be), its shared libraries left in /usr/lib, no dpkg entries.
    let root = builder
        .without_dpkg_db()
        .file("/app/main.py", PY_MAIN, 0o644)
        .build();
    fs::create_dir_all(root.host("/opt/python/bin")).unwrap();
    fs::create_dir_all(root.host("/opt/python/lib")).unwrap();
    fs::rename(
        root.host("/usr/bin/python3.11"),
        root.host("/opt/python/bin/python3.11"),
    )
    .unwrap();
    fs::rename(
        root.host("/usr/lib/python3.11"),
        root.host("/opt/python/lib/python3.11"),
    )
    .unwrap();
    for stale in ["/usr/bin/python3", "/usr/bin/python3.11"] {
        let _ = fs::remove_file(root.host(stale));
    }
    let app = root.layer("python3.11 copied to /opt/python");
    let spec = spec(&["/opt/python/bin/python3.11", "/app/main.py"], &[]).with_workdir("/app");
    run_case(
        Case::new("python-relocated", spec, vec![base.layer.clone(), app])
            .check(python_check("/opt/python/bin/python3.11 /app/main.py")),
    );
}

// ------------------------------------------------------------------------------------------------
// 3. ruby, java -jar
// ------------------------------------------------------------------------------------------------

#[test]
fn ruby_script() {
    let Some(base) = setup() else { return };
    let main = r#"require "json"
require "digest"
require "time"

t = Time.utc(2024, 2, 29, 12, 30, 0) + 86400
puts JSON.generate({"sha256" => Digest::SHA256.hexdigest("pare"), "time" => t.iso8601, "sum" => [1, 2, 39].sum})
"#;
    let Some(app) = app_layer(base, &["ruby"], |b| b.file("/app/main.rb", main, 0o644)) else {
        return;
    };
    let spec = spec(&["ruby", "/app/main.rb"], &[]).with_workdir("/app");
    run_case(
        Case::new("ruby", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("ruby /app/main.rb"),
            format!("\"sha256\":\"{}\"", sha256_hex(b"pare")),
        )),
    );
}

/// `App.java` compiled with the host's javac and packed with its jar into an executable jar.
fn build_jar() -> Result<(tempfile::TempDir, PathBuf), String> {
    let javac = find_tool("javac").ok_or("javac is not installed (default-jdk-headless)")?;
    let jar = find_tool("jar").ok_or("jar is not installed (default-jdk-headless)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::write(
        dir.path().join("App.java"),
        r#"import java.util.List;
import java.util.stream.Collectors;

public class App {
    public static void main(String[] args) {
        String sorted = List.of(3, 1, 2).stream().sorted().map(String::valueOf)
            .collect(Collectors.joining(","));
        System.out.println("java ok " + sorted + " " + java.time.LocalDate.of(2024, 2, 29).plusDays(1));
    }
}
"#,
    )
    .map_err(|e| e.to_string())?;
    let o = run_capture(
        Command::new(javac)
            .args(["--release", "17", "-d", "classes", "App.java"])
            .current_dir(dir.path()),
    );
    if !o.status.success() {
        return Err(format!("javac failed:\n{}", describe_output(&o)));
    }
    let o = run_capture(
        Command::new(jar)
            .args([
                "--create",
                "--file",
                "app.jar",
                "--main-class",
                "App",
                "-C",
                "classes",
                ".",
            ])
            .current_dir(dir.path()),
    );
    if !o.status.success() {
        return Err(format!("jar failed:\n{}", describe_output(&o)));
    }
    let path = dir.path().join("app.jar");
    Ok((dir, path))
}

#[test]
fn java_jar() {
    let Some(base) = setup() else { return };
    let Some((_jdir, jar)) = or_skip(build_jar()) else {
        return;
    };
    let Some(app) = app_layer(base, &["default-jre-headless"], |b| {
        b.host_file(&jar, "/app/app.jar", 0o644)
    }) else {
        return;
    };
    let spec = spec(&["java", "-jar", "/app/app.jar"], &[]).with_workdir("/app");
    run_case(
        Case::new("java", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("java -jar /app/app.jar"),
            "java ok 1,2,3 2024-03-01",
        )),
    );
}

// ------------------------------------------------------------------------------------------------
// 4. Shell scripts, env, tini
// ------------------------------------------------------------------------------------------------

const GREET: &str = r#"#!/bin/sh
# Greets through jq, found on PATH.
set -e
exec jq -n --arg who "${1:-world}" '{greeting: ("hello " + $who)}'
"#;

#[test]
fn sh_wrapper_execs_jq() {
    let Some(base) = setup() else { return };
    let Some(app) = app_layer(base, &["jq"], |b| {
        b.file("/usr/local/bin/greet", GREET, 0o755)
    }) else {
        return;
    };
    let spec = spec(&["/usr/local/bin/greet"], &["pare"]);
    run_case(
        Case::new("sh-wrapper", spec, vec![base.layer.clone(), app])
            .check(Check::new(Workload::new("greet pare"), "\"hello pare\"")),
    );
}

#[test]
fn bash_entrypoint_with_case() {
    let Some(base) = setup() else { return };
    let entry = r#"#!/bin/bash
# One image, two tools: the first argument picks.
set -euo pipefail
mode=${1:-}
shift || true
case "$mode" in
  json) exec jq -c -n "$@" ;;
  hash) exec sha256sum - ;;
  *) echo "usage: $0 json EXPR | hash < FILE" >&2; exit 2 ;;
esac
"#;
    let data = "some data to hash\n";
    let Some(app) = app_layer(base, &["jq"], |b| b.file("/app/entry.sh", entry, 0o755)) else {
        return;
    };
    let spec = spec(&["/app/entry.sh"], &["json", "{a: 1}"]).with_workdir("/app");
    run_case(
        Case::new("bash-case", spec, vec![base.layer.clone(), app])
            .check(Check::new(
                Workload::new("entry.sh json").args(&["json", "[1, 2, 39] | add"]),
                "42",
            ))
            .check(Check::new(
                Workload::new("entry.sh hash < data")
                    .args(&["hash"])
                    .stdin(data),
                sha256_hex(data.as_bytes()),
            )),
    );
}

#[test]
fn env_runs_jq() {
    let Some(base) = setup() else { return };
    let Some(app) = app_layer(base, &["jq"], |b| b) else {
        return;
    };
    let spec = spec(
        &["/usr/bin/env", "jq"],
        &["-n", "-c", "[1, 2, 3] | map(. * 14)"],
    );
    run_case(
        Case::new("env-jq", spec, vec![base.layer.clone(), app])
            .check(Check::new(Workload::new("env jq -n"), "[14,28,42]")),
    );
}

/// fontconfig's `fc-match`: libfontconfig reads /etc/fonts/fonts.conf, the conf.d files it
/// includes (links into conf.avail) and the font directories they list; without them it finds
/// no font at all.
#[test]
fn fontconfig_matches_a_font() {
    let Some(base) = setup() else { return };
    let Some(app) = app_layer(base, &["fontconfig", "fonts-dejavu-core"], |b| b) else {
        return;
    };
    let spec = spec(&["fc-match"], &["sans-serif:bold"]);
    run_case(
        Case::new("fc-match", spec, vec![base.layer.clone(), app])
            .check(Check::new(
                Workload::new("fc-match sans-serif:bold"),
                "DejaVu",
            ))
            .check(Check::new(
                Workload::new("fc-match -s monospace").args(&["-s", "monospace:italic"]),
                "DejaVuSansMono",
            ))
            .why("/etc/fonts/fonts.conf", &["fontconfig"]),
    );
}

/// xsltproc resolves an XHTML DTD (for its entities) through the XML catalogs: /etc/xml/catalog
/// delegates to w3c-sgml-lib's catalogs, whose `uri` entries are relative to them.
#[test]
fn xsltproc_resolves_a_dtd_through_xml_catalogs() {
    let Some(base) = setup() else { return };
    let xsl = r#"<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:h="http://www.w3.org/1999/xhtml">
  <xsl:output method="text" encoding="UTF-8"/>
  <xsl:template match="/"><xsl:value-of select="//h:p"/><xsl:text>&#10;</xsl:text></xsl:template>
</xsl:stylesheet>
"#;
    let doc = r#"<?xml version="1.0"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>t</title></head><body><p>caf&eacute;&nbsp;&copy;</p></body></html>
"#;
    let Some(app) = app_layer(base, &["xsltproc", "w3c-sgml-lib"], |b| {
        b.file("/app/main.xsl", xsl, 0o644)
            .file("/app/doc.xml", doc, 0o644)
    }) else {
        return;
    };
    let spec = spec(
        &["xsltproc", "--nonet", "/app/main.xsl", "/app/doc.xml"],
        &[],
    );
    run_case(
        Case::new("xsltproc", spec, vec![base.layer.clone(), app])
            .check(Check::new(Workload::new("xsltproc --nonet"), "caf\u{e9}"))
            .why(
                "/usr/share/xml/w3c-sgml-lib/schema/dtd/REC-xhtml1-20020801/xhtml1-strict.dtd",
                &["XML catalog"],
            ),
    );
}

/// groff runs troff, tbl and the device's postprocessor by bare name (named in its binary and
/// in the font DESC files of groff-base and of the `groff` add-on package).
#[test]
fn groff_runs_its_pipeline() {
    let Some(base) = setup() else { return };
    let page = ".TH HELLO 1 2024 hello\n.SH NAME\nhello \\- say hello\n.SH DESCRIPTION\n.B hello\nprints a \\fIgreeting\\fP and a table:\n.TS\nl l.\na\tb\nc\td\n.TE\n";
    let Some(app) = app_layer(base, &["groff"], |b| b.file("/app/hello.1", page, 0o644)) else {
        return;
    };
    let spec = spec(&["groff"], &["-t", "-man", "-Tutf8", "/app/hello.1"]);
    run_case(
        Case::new("groff", spec, vec![base.layer.clone(), app])
            .check(Check::new(Workload::new("groff -Tutf8"), "a   b"))
            .check(Check::new(
                Workload::new("groff -Thtml")
                    .args(&["-t", "-man", "-Thtml", "/app/hello.1"])
                    .env("SOURCE_DATE_EPOCH", "0"),
                "<html",
            ))
            .why("/usr/bin/grotty", &["run by name", "DESC"])
            .why("/usr/bin/troff", &["run by name", "/usr/bin/groff"])
            .except(
                "/bin/sh",
                "groff runs its pipeline through `sh -c` (popen), which is no cause to keep a \
                 shell: the hardened image gives the same output without one",
            )
            .max_ratio(
                3.5,
                "every device's postprocessor the font DESC files name is kept (gropdf with perl, \
                 gxditview with the X11 libraries): which one runs depends on -T at run time",
            ),
    );
}

#[test]
fn tini_runs_app() {
    let Some(base) = setup() else { return };
    let Some(app) = app_layer(base, &["jq", "tini"], |b| b) else {
        return;
    };
    let spec = spec(
        &["tini", "--", "jq"],
        &["-n", "-c", "{init: \"tini\", ok: true}"],
    );
    run_case(
        Case::new("tini", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("tini -- jq -n"),
            "{\"init\":\"tini\",\"ok\":true}",
        )),
    );
}

// ------------------------------------------------------------------------------------------------
// 5. C programs and libc features
// ------------------------------------------------------------------------------------------------

#[test]
fn c_program_reads_compiled_in_path() {
    let Some(base) = setup() else { return };
    let Some((_d, bin)) = compiled(
        "gcc",
        r#"#include <stdio.h>
#define MESSAGE "/usr/local/share/app/message.txt"
int main(void) {
    FILE *f = fopen(MESSAGE, "r");
    if (!f) { perror(MESSAGE); return 1; }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf, f);
    fwrite(buf, 1, n, stdout);
    return 0;
}
"#,
        &[],
    ) else {
        return;
    };
    let Some(app) = app_layer(base, &[], |b| {
        b.host_file(&bin, "/usr/local/bin/show-message", 0o755)
            .file(
                "/usr/local/share/app/message.txt",
                "read from a path compiled into the program\n",
                0o644,
            )
    }) else {
        return;
    };
    let spec = spec(&["/usr/local/bin/show-message"], &[]);
    run_case(
        Case::new("c-data-file", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("show-message"),
            "read from a path compiled into the program",
        )),
    );
}

#[test]
fn getent_hosts_localhost() {
    let Some(base) = setup() else { return };
    let spec = spec(&["getent", "hosts", "localhost"], &[]);
    run_case(
        Case::new("getent-hosts", spec, vec![base.layer.clone()]).check(Check::new(
            Workload::new("getent hosts localhost"),
            "localhost",
        )),
    );
}

#[test]
fn getent_passwd() {
    let Some(base) = setup() else { return };
    let spec = spec(&["getent"], &["passwd"]);
    run_case(
        Case::new("getent-passwd", spec, vec![base.layer.clone()]).check(Check {
            w: Workload::new("getent passwd root").args(&["passwd", "root"]),
            expect: Some(b"root:x:0:0:".to_vec()),
            compare: Compare::PasswdRoot,
            exit: 0,
        }),
    );
}

#[test]
fn iconv_utf8_to_utf16() {
    let Some(base) = setup() else { return };
    let input = "pare: héllo wörld ✓\n";
    // glibc's UTF-16 writes a byte order mark, then this machine's byte order (little endian).
    let mut expect = vec![0xff, 0xfe];
    for u in input.encode_utf16() {
        expect.extend_from_slice(&u.to_le_bytes());
    }
    let spec = spec(&["iconv", "-f", "UTF-8", "-t", "UTF-16"], &[]);
    run_case(
        Case::new("iconv", spec, vec![base.layer.clone()]).check(Check::new(
            Workload::new("iconv -f UTF-8 -t UTF-16").stdin(input),
            expect,
        )),
    );
}

#[test]
fn date_with_tz_given_at_run_time() {
    let Some(base) = setup() else { return };
    // TZ is not in the image's Env: only `docker run -e TZ=…` sets it.
    let spec = spec(&["date", "-d", "@0", "+%F_%T_%Z"], &[]);
    run_case(
        Case::new("date-tz", spec, vec![base.layer.clone()]).check(Check::new(
            Workload::new("TZ=America/New_York date -d @0").env("TZ", "America/New_York"),
            "1969-12-31_19:00:00_EST",
        )),
    );
}

#[test]
fn static_c_binary_has_no_zoneinfo() {
    let Some(base) = setup() else { return };
    let Some((_d, bin)) = compiled(
        "gcc",
        r#"#include <stdio.h>
int main(void) {
    unsigned long s = 0;
    for (int i = 1; i <= 100; i++) s += i;
    printf("static sum %lu\n", s);
    return 0;
}
"#,
        &["-static"],
    ) else {
        return;
    };
    let Some(app) = app_layer(base, &[], |b| {
        b.host_file(&bin, "/usr/local/bin/static-sum", 0o755)
    }) else {
        return;
    };
    let mut case = Case::new(
        "static-c",
        spec(&["/usr/local/bin/static-sum"], &[]),
        vec![base.layer.clone(), app],
    )
    .check(Check::new(Workload::new("static-sum"), "static sum 5050"));
    case.no_zoneinfo = true;
    run_case(case);
}

#[test]
fn c_program_without_local_time_has_no_zoneinfo() {
    let Some(base) = setup() else { return };
    // gmtime_r and printf only: no tzset, localtime, mktime or strftime (which calls tzset).
    let Some((_d, bin)) = compiled(
        "gcc",
        r#"#include <stdio.h>
#include <time.h>
int main(void) {
    time_t t = 86400L * 365;
    struct tm tm;
    gmtime_r(&t, &tm);
    printf("utc %04d-%02d-%02d %02d:%02d:%02d\n", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return 0;
}
"#,
        &[],
    ) else {
        return;
    };
    let Some(app) = app_layer(base, &[], |b| {
        b.host_file(&bin, "/usr/local/bin/utc-date", 0o755)
    }) else {
        return;
    };
    let mut case = Case::new(
        "c-utc-only",
        spec(&["/usr/local/bin/utc-date"], &[]),
        vec![base.layer.clone(), app],
    )
    .check(Check::new(
        Workload::new("utc-date"),
        "utc 1971-01-01 00:00:00",
    ));
    case.no_zoneinfo = true;
    case.exceptions = vec![
        (
            "/etc/localtime",
            "glibc's gmtime_r loads the zone once (tzset_internal) though it never uses it; \
             without /etc/localtime glibc takes UTC and prints the same",
        ),
        (
            "/usr/share/zoneinfo/*",
            "what /etc/localtime points to (Etc/UTC), see above",
        ),
    ];
    run_case(case);
}

/// `openssl s_server -WWW` on 127.0.0.1, serving `index.html`, with a server certificate signed
/// by a CA made here; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(body: &str) -> Result<TlsServer, String> {
    let openssl = find_tool("openssl").ok_or("openssl is not installed")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let ossl = |args: &[&str]| -> Result<(), String> {
        let o = run_capture(Command::new(&openssl).args(args).current_dir(d));
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("openssl {args:?}:\n{}", describe_output(&o)))
        }
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pare test CA",
    ])?;
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    let www = d.join("www");
    fs::create_dir(&www).map_err(|e| e.to_string())?;
    fs::write(www.join("index.html"), body).map_err(|e| e.to_string())?;
    let port = free_port();
    let child = Command::new(&openssl)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(d.join("srv.crt"))
        .arg("-key")
        .arg(d.join("srv.key"))
        .current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start openssl s_server: {e}"))?;
    let ca = fs::read(d.join("ca.crt")).map_err(|e| e.to_string())?;
    let server = TlsServer {
        child,
        port,
        ca,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("openssl s_server did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

#[test]
fn curl_https_with_local_ca() {
    let Some(base) = setup() else { return };
    let body = "hello over TLS, verified with the image's CA store\n";
    let Some(server) = or_skip(tls_server(body)) else {
        return;
    };
    let ca = server.ca.clone();
    let Some(app) = app_layer(base, &["curl", "ca-certificates", "openssl"], |b| {
        b.file(
            "/usr/local/share/ca-certificates/pare-test-ca.crt",
            &ca,
            0o644,
        )
    }) else {
        return;
    };
    let url = format!("https://127.0.0.1:{}/index.html", server.port);
    let spec = spec(&["curl", "-sS", "--fail"], &[&url]);
    run_case(
        Case::new("curl-tls", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("curl https://127.0.0.1/index.html"),
            body,
        )),
    );
    drop(server);
}

// ------------------------------------------------------------------------------------------------
// 6. musl, arm64
// ------------------------------------------------------------------------------------------------

#[test]
fn musl_program() {
    let Some(base) = setup() else { return };
    let Some((_d, bin)) = compiled(
        "musl-gcc",
        r#"#include <stdio.h>
#include <time.h>
int main(void) {
    FILE *f = fopen("/usr/local/share/app/message.txt", "r");
    if (!f) { perror("message"); return 1; }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fwrite(buf, 1, n, stdout);
    time_t t = 0;
    struct tm tm;
    localtime_r(&t, &tm);
    char out[64];
    strftime(out, sizeof out, "%F %T %Z", &tm);
    printf("%s\n", out);
    return 0;
}
"#,
        &[],
    ) else {
        return;
    };
    let Some(musl) = or_skip(debs(&base.arch, &["musl"])) else {
        return;
    };
    // A musl image: Debian's musl (/lib/ld-musl-x86_64.so.1) and tzdata's zone files, no glibc.
    let mut pkgs: Vec<PathBuf> = musl;
    pkgs.push(
        deb_named(&base.debs, "tzdata")
            .expect("tzdata is in the base")
            .clone(),
    );
    let root = DebianRoot::builder(&base.arch)
        .debs(&pkgs)
        .host_file(&bin, "/usr/local/bin/musl-app", 0o755)
        .file(
            "/usr/local/share/app/message.txt",
            "hello from musl\n",
            0o644,
        )
        .build();
    let layer = root.layer("musl + tzdata + app");
    run_case(
        Case::new("musl", spec(&["/usr/local/bin/musl-app"], &[]), vec![layer]).check(Check::new(
            Workload::new("TZ=Asia/Tokyo musl-app").env("TZ", "Asia/Tokyo"),
            "hello from musl\n1970-01-01 09:00:00 JST",
        )),
    );
}

#[test]
fn arm64_sh_wrapper_and_date() {
    let Some(_base) = setup() else { return };
    if or_skip(foreign_arch_support("arm64")).is_none() {
        return;
    }
    let Some(pkgs) = or_skip(debs("arm64", &["dash", "jq", "coreutils", "tzdata"])) else {
        return;
    };
    let script = r#"#!/bin/sh
set -e
date -d @0 +%F_%T_%Z
exec jq -n -c --arg who "${1:-world}" '{hello: $who}'
"#;
    let root = DebianRoot::builder("arm64")
        .debs(&pkgs)
        .file("/usr/local/bin/app", script, 0o755)
        .build();
    let layer = root.layer("arm64: dash jq coreutils tzdata + app");
    let spec = spec(&["/usr/local/bin/app"], &["arm64"]).with_platform("arm64", Some("v8"));
    run_case(Case::new("arm64", spec, vec![layer]).check(Check::new(
        Workload::new("TZ=Europe/Berlin app arm64").env("TZ", "Europe/Berlin"),
        "1970-01-01_01:00:00_CET\n{\"hello\":\"arm64\"}",
    )));
}

// ------------------------------------------------------------------------------------------------
// The harness itself
// ------------------------------------------------------------------------------------------------

/// The strace parser on a hand-written log: only events after each process's chroot count,
/// children inherit the chroot and cwd, unfinished/resumed halves are joined, relative paths
/// resolve against chdir and directory fds, symlinks resolve inside the root, files the run
/// created and failed calls do not count, `#!` and `PT_INTERP` interpreters are added.
#[test]
fn strace_parser_selftest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = |p: &str, b: &[u8]| {
        let h = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(h.parent().unwrap()).unwrap();
        fs::write(h, b).unwrap();
    };
    w("/usr/bin/app.sh", b"#!/bin/sh\nexec tool\n");
    w("/usr/bin/dash", b"not really elf");
    w("/usr/bin/tool", b"tool");
    w("/etc/conf/a.conf", b"aaaa");
    w("/etc/conf/b.conf", b"bb");
    w("/app/data.txt", b"data");
    w("/host-only", b"outside the chroot, never counted");
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
    std::os::unix::fs::symlink("/etc/conf/../conf/a.conf", root.join("etc/link.conf")).unwrap();
    std::os::unix::fs::symlink("../../../../etc/conf/b.conf", root.join("app/up.conf")).unwrap();
    let before = regular_files(root);
    w("/tmp/created.log", b"made by the run");
    let r = root.display();
    let log = format!(
        r#"7     openat(AT_FDCWD, "/host-only", O_RDONLY) = 3
7     chroot("{r}")       = 0
7     chdir("/app")                     = 0
7     execve("/usr/bin/app.sh", ["/usr/bin/app.sh"], 0x7ffd /* 1 var */) = 0
7     openat(AT_FDCWD, "data.txt", O_RDONLY) = 3
7     openat(AT_FDCWD, "/nope", O_RDONLY) = -1 ENOENT (No such file or directory)
7     openat(AT_FDCWD, "/etc/conf", O_RDONLY|O_DIRECTORY) = 4
7     clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>
8     openat(4, "b.conf", O_RDONLY) = 5
8     newfstatat(AT_FDCWD, "/etc/link.conf", {{st_mode=S_IFREG|0644, st_size=4, ...}}, 0) = 0
8     openat(AT_FDCWD, "up.conf", O_RDONLY) = 6
8     openat(AT_FDCWD, "/tmp/created.log", O_WRONLY|O_CREAT, 0644) = 7
8     openat(AT_FDCWD, "/proc/self/status", O_RDONLY) = 8
8     execve("/bin/tool", ["tool", "a \"quoted\" arg)"], 0x55 /* 1 var */) = 0
7     <... clone resumed>) = 8
9     openat(AT_FDCWD, "/usr/bin/tool", O_RDONLY) = 3
"#
    );
    let t = parse_strace(&log, root, &before);
    let got: BTreeMap<&str, Vec<&str>> = t
        .files
        .iter()
        .map(|(k, v)| (k.as_str(), v.how.iter().map(String::as_str).collect()))
        .collect();
    let want: BTreeMap<&str, Vec<&str>> = [
        ("/app/data.txt", vec!["openat"]),
        ("/etc/conf/a.conf", vec!["newfstatat"]),
        ("/etc/conf/b.conf", vec!["openat"]),
        ("/usr/bin/app.sh", vec!["execve"]),
        ("/usr/bin/dash", vec!["interp"]),
        ("/usr/bin/tool", vec!["execve"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{t:#?}");
    assert_eq!(
        t.files["/usr/bin/tool"].requested,
        BTreeSet::from(["/bin/tool".to_string()])
    );
    assert_eq!(
        t.files["/usr/bin/dash"].requested,
        BTreeSet::from(["/bin/sh".to_string()])
    );
    assert_eq!(t.bytes(), 4 + 4 + 2 + 20 + 14 + 4);
    assert_eq!(t.execs, vec!["/usr/bin/app.sh", "/usr/bin/tool"]);
    // Pid 9 never chrooted and has no known parent: ignored.
    assert_eq!(t.processes, 2);
    assert!(t.unresolved.is_empty(), "{:?}", t.unresolved);

    // resolve_in_root never leaves the root.
    assert_eq!(
        resolve_in_root(root, "/", "/app/up.conf", true).as_deref(),
        Some("/etc/conf/b.conf")
    );
    assert_eq!(
        resolve_in_root(root, "/app", "../../bin/sh", true).as_deref(),
        Some("/usr/bin/dash")
    );
    assert_eq!(
        resolve_in_root(root, "/", "/bin/sh", false).as_deref(),
        Some("/usr/bin/sh")
    );
    assert_eq!(resolve_in_root(root, "/", "/usr/bin/tool/x", true), None);
}

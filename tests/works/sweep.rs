//! `just sweep`: the breadth sweep. Every case of `tests/sweep/*.toml` (a real Debian bookworm
//! program with a workload that does real work) goes through [`run_case`], the acceptance run
//! of `tests/works.rs`: the original under `strace` as 65532, `pare harden` with no flags, the
//! hardened image run the same way and compared on exit code and output, the kept bytes against
//! the strace minimum, the shells, interpreters and network tools kept. The verdicts go to
//! `docs/sweep.md` (a case's first verdict is kept there; later runs update the last one).
//! `SWEEP_ONLY=REGEX` runs the matching cases only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::*;

#[derive(serde::Deserialize)]
struct CaseFile {
    case: Vec<Def>,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Def {
    name: String,
    class: String,
    packages: Vec<String>,
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    #[serde(default)]
    files: Vec<FileDef>,
    /// A tree a real installer builds (pip into a virtualenv, npm into an app directory).
    build: Option<BuildDef>,
    args: Option<Vec<String>>,
    stdin: Option<String>,
    expect: Option<String>,
    /// The original's exit code, when the program reports findings (default 0).
    exit: Option<i32>,
    tcp: Option<Tcp>,
    http: Option<Http>,
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct FileDef {
    path: String,
    mode: Option<u32>,
    text: String,
}

/// A tree built on this (bookworm) host by a real installer at the very path it has in the
/// image (virtualenvs and npm write absolute paths into what they install), then copied into
/// the image: `run` is a bash script, `$DEST` the path. Cached under `target/sweep-builds/`
/// by the hash of `path` and `run`.
#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct BuildDef {
    path: String,
    run: String,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Tcp {
    port: u16,
    send: String,
    expect: Option<String>,
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Http {
    port: u16,
    paths: Vec<String>,
    expect: Option<String>,
}

/// Every case, in file order (files sorted by name); names are unique.
fn load(dir: &Path) -> Vec<Def> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut all: Vec<Def> = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let cases: CaseFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        all.extend(cases.case);
    }
    let mut names = BTreeSet::new();
    for d in &all {
        assert!(names.insert(d.name.clone()), "case {} twice", d.name);
    }
    all
}

/// A [`Case`] for `def`: the base, a layer with its packages and files, its workload.
fn case_of(base: &BaseImage, def: &Def) -> Result<Case, String> {
    let files = def.files.clone();
    let packages: Vec<&str> = def.packages.iter().map(String::as_str).collect();
    let mut b = app_root_builder(base, &packages)?;
    if let Some(bd) = &def.build {
        let tree = host_build(bd)?;
        for (image_path, host, mode, link) in tree_entries(&tree, &bd.path)? {
            b = match link {
                Some(t) => b.symlink(&image_path, &t),
                None => b.host_file(&host, &image_path, mode),
            };
        }
    }
    for f in &files {
        b = b.file(&f.path, &f.text, f.mode.unwrap_or(0o644));
    }
    let layer = b
        .build()
        .layer(&format!("apt-get install {}", def.packages.join(" ")));
    let ep: Vec<&str> = def.entrypoint.iter().map(String::as_str).collect();
    // The image's Cmd is the workload (what a user hardens is an image that does this work),
    // unless the case gives one of its own.
    let cmd: Vec<&str> = match (&def.args, def.cmd.is_empty()) {
        (Some(a), true) => a.iter().map(String::as_str).collect(),
        _ => def.cmd.iter().map(String::as_str).collect(),
    };
    let mut s = spec(&ep, &cmd);
    for (k, v) in &def.env {
        s = s.with_env(k, v);
    }
    if let Some(w) = &def.workdir {
        s = s.with_workdir(w);
    }
    let mut w = Workload::new(&def.name);
    let expect = match (&def.tcp, &def.http) {
        (Some(t), _) => {
            w = w.tcp(t.port, t.send.as_bytes());
            t.expect.clone()
        }
        (None, Some(h)) => {
            let paths: Vec<&str> = h.paths.iter().map(String::as_str).collect();
            w = w.http(h.port, &paths);
            h.expect.clone()
        }
        (None, None) => def.expect.clone(),
    };
    if let Some(a) = &def.args {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        w = w.args(&a);
    }
    if let Some(i) = &def.stdin {
        w = w.stdin(i);
    }
    let check = Check {
        w,
        expect: expect.map(String::into_bytes),
        compare: Compare::Exact,
        exit: def.exit.unwrap_or(0),
    };
    Ok(Case::new(&def.name, s, vec![base.layer.clone(), layer]).check(check))
}

/// The tree of `bd`, built once (see [`BuildDef`]): its cached copy on the host.
fn host_build(bd: &BuildDef) -> Result<PathBuf, String> {
    use sha2::{Digest, Sha256};
    let ok = bd.path.starts_with("/opt/") || bd.path.starts_with("/srv/");
    if !ok || bd.path.contains("..") {
        return Err(format!(
            "build path {}: must be under /opt/ or /srv/",
            bd.path
        ));
    }
    let key = hex::encode(Sha256::digest(format!("{}\0{}", bd.path, bd.run)));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = manifest.join("target/sweep-builds").join(&key[..16]);
    if cache.join("tree").is_dir() {
        return Ok(cache.join("tree"));
    }
    let dest = Path::new(&bd.path);
    let marker = dest.join(".pare-sweep-build");
    if dest.exists() {
        if !marker.exists() {
            return Err(format!(
                "{} exists on this host: not a sweep build, not touched",
                bd.path
            ));
        }
        fs::remove_dir_all(dest).map_err(|e| format!("rm {}: {e}", bd.path))?;
    }
    fs::create_dir_all(dest).map_err(|e| format!("mkdir {}: {e}", bd.path))?;
    fs::write(&marker, "").map_err(|e| format!("{}: {e}", marker.display()))?;
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &bd.run])
        .env("DEST", &bd.path)
        .current_dir(dest)
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "build of {} failed: {}",
            bd.path,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::remove_file(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    fs::create_dir_all(&cache).map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    // `mv` across filesystems copies; symlinks stay symlinks.
    let st = Command::new("mv")
        .arg(dest)
        .arg(cache.join("tree"))
        .status()
        .map_err(|e| format!("mv: {e}"))?;
    if !st.success() {
        return Err(format!("mv {} {}: failed", bd.path, cache.display()));
    }
    Ok(cache.join("tree"))
}

/// Every file and symlink under `tree` as (image path under `at`, host path, mode, target).
#[allow(clippy::type_complexity)]
fn tree_entries(
    tree: &Path,
    at: &str,
) -> Result<Vec<(String, PathBuf, u32, Option<String>)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(tree).map_err(|e| e.to_string())?;
            let image_path = format!("{}/{}", at.trim_end_matches('/'), rel.display());
            let m = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                out.push((image_path, p, 0o777, Some(t.display().to_string())));
            } else if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.push((image_path, p, m.permissions().mode() & 0o7777, None));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The verdict of one case: `same` (the hardened image gives the same exit code and output),
/// `MISS` (it does not, or pare failed), `harness` (the workload does not work on the
/// original: a case to fix); and the cause of a miss, or the other checks of tests/works.rs
/// that failed.
fn verdict(row: &Option<SweepRow>, panic: Option<String>) -> (String, String, String) {
    let Some(msg) = panic else {
        return ("same".into(), String::new(), String::new());
    };
    if msg.contains("HARNESS") {
        return ("harness".into(), first_line(&msg), String::new());
    }
    let failures = row.as_ref().map(|r| r.failures.clone()).unwrap_or_default();
    let (miss, other): (Vec<String>, Vec<String>) = failures
        .into_iter()
        .partition(|f| f.starts_with("(a)") || f.starts_with("pare harden failed"));
    let other = other.join("; ");
    match miss.first() {
        Some(m) => ("MISS".into(), m.clone(), other),
        None if other.is_empty() => ("MISS".into(), first_line(&msg), other),
        None => ("same".into(), String::new(), other),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

/// The case rows of an earlier `docs/sweep.md`, by case name.
fn table_rows(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| case"))
        .filter_map(|l| {
            let name = l.split(" | ").next()?.trim_start_matches("| ");
            Some((name.to_string(), l.to_string()))
        })
        .collect()
}

/// The acceptance figures of the table: behaving the same (first and last verdicts, by class),
/// the distribution of kept / minimum, and the results that keep a shell or interpreter.
fn summary(rows: &BTreeMap<String, String>, defs: &[Def]) -> String {
    let n = defs.len().max(1);
    let pct = |k: usize| format!("{k} of {n} ({:.1}%)", 100.0 * k as f64 / n as f64);
    let last = |d: &Def| rows.get(&d.name).and_then(|l| column(l, 3)).unwrap_or("");
    let first = |d: &Def| rows.get(&d.name).and_then(|l| column(l, 2)).unwrap_or("");
    let same = defs.iter().filter(|d| last(d) == "same").count();
    let first_same = defs.iter().filter(|d| first(d) == "same").count();
    let mut classes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for d in defs {
        let e = classes.entry(d.class.as_str()).or_default();
        e.1 += 1;
        if last(d) == "same" {
            e.0 += 1;
        }
    }
    let by_class: Vec<String> = classes
        .iter()
        .map(|(c, (s, t))| format!("{c} {s}/{t}"))
        .collect();
    let ratios: Vec<f64> = defs
        .iter()
        .filter_map(|d| rows.get(&d.name).and_then(|l| column(l, 6)))
        .filter_map(|c| c.rsplit("= ").next()?.trim().parse::<f64>().ok())
        .collect();
    let within = |lo: f64, hi: f64| ratios.iter().filter(|r| **r > lo && **r <= hi).count();
    let risky: Vec<&Def> = defs
        .iter()
        .filter(|d| {
            rows.get(&d.name)
                .and_then(|l| column(l, 7))
                .is_some_and(|c| c != "-")
        })
        .collect();
    let without_cause = risky
        .iter()
        .filter(|d| {
            let c = rows.get(&d.name).and_then(|l| column(l, 7)).unwrap_or("");
            c.split("; ").any(|k| !k.contains(" ("))
        })
        .count();
    let check_failed = defs
        .iter()
        .filter(|d| {
            rows.get(&d.name)
                .and_then(|l| column(l, 5))
                .is_some_and(|c| c.contains("(d)"))
        })
        .count();
    format!(
        "- **Same behaviour with no flags**: {} (first verdicts: {}); by class: {}.\n\
         - **Kept / strace minimum** (zoneinfo aside), {} measured: within 1.5x {} (≤ 1.1: {}, ≤ 1.25: {}, ≤ 1.5: {}); ≤ 2: {}; > 2: {}.\n\
         - **Shells, interpreters, network tools kept**: {} results, each with pare's reason in the table ({} without one). `pare harden --check` (check (d): the harden/check agreement) fails on {} results.\n",
        pct(same),
        pct(first_same),
        by_class.join(", "),
        ratios.len(),
        pct(within(0.0, 1.5)),
        within(0.0, 1.1),
        within(1.1, 1.25),
        within(1.25, 1.5),
        within(1.5, 2.0),
        within(2.0, f64::INFINITY),
        risky.len(),
        without_cause,
        check_failed
    )
}

/// A row's column `i` (0: the case's name).
fn column(row: &str, i: usize) -> Option<&str> {
    row.split(" | ").nth(i)
}

#[test]
#[ignore = "the breadth sweep (just sweep): hours of downloads and runs"]
fn sweep() {
    let Some(base) = setup() else { return };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defs = load(&manifest.join("tests/sweep"));
    // SWEEP_EXTRA=DIR: more case files (programs tried by hand), run and printed, not written
    // to the table.
    let extra = std::env::var_os("SWEEP_EXTRA")
        .map(|d| load(Path::new(&d)))
        .unwrap_or_default();
    let only = std::env::var("SWEEP_ONLY")
        .ok()
        .map(|r| regex::Regex::new(&r).expect("SWEEP_ONLY is a regex"));
    let doc_path = manifest.join("docs/sweep.md");
    let old = fs::read_to_string(&doc_path).unwrap_or_default();
    // Rows of cases not run this time stay as they were; a case's first verdict stays.
    let mut rows = table_rows(&old);
    let first: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|(n, l)| Some((n.clone(), column(l, 2)?.to_string())))
        .collect();
    // A case no longer in the case files leaves the table.
    rows.retain(|n, _| defs.iter().any(|d| &d.name == n));
    for def in defs.iter().chain(&extra) {
        if only.as_ref().is_some_and(|r| !r.is_match(&def.name)) {
            continue;
        }
        *LAST_ROW.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let started = Instant::now();
        let outcome = match case_of(base, def) {
            Err(e) => Some(format!("HARNESS: {e}")),
            Ok(case) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case)))
                .err()
                .map(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                }),
        };
        let row = LAST_ROW.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (v, cause, other) = verdict(&row, outcome);
        let r = row.unwrap_or_default();
        let size = match (r.hard_bytes, r.ratio) {
            (Some(h), Some(x)) => format!("{} / {} = {x:.2}", mb(h), mb(r.min_bytes)),
            _ => "-".into(),
        };
        let first_v = first.get(&def.name).cloned().unwrap_or_else(|| v.clone());
        let line = format!(
            "| {} | {} | {first_v} | {v} | {} | {} | {size} | {} | {:.0}s |",
            def.name,
            def.class,
            if cause.is_empty() {
                "-".into()
            } else {
                cause.replace('|', "\\|")
            },
            if other.is_empty() {
                "-".into()
            } else {
                other
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .replace('|', "\\|")
            },
            if r.risky.is_empty() { "-" } else { &r.risky },
            started.elapsed().as_secs_f64()
        );
        eprintln!("SWEEP {line}");
        if defs.iter().any(|d| d.name == def.name) {
            rows.insert(def.name.clone(), line);
        }
    }
    // The table in case-file order.
    let order: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let count = |v: &str| rows.values().filter(|l| column(l, 3) == Some(v)).count();
    let mut doc = format!(
        "# The breadth sweep\n\n`just sweep` (tests/works/sweep.rs) runs every case of `tests/sweep/*.toml`: \
         a real Debian bookworm program in an image of the slim base plus its packages, its \
         workload run as 65532 on the original (under strace) and on `pare harden`'s result \
         with no flags, compared on exit code and output. `same`: identical; `MISS`: the \
         hardened image differs or fails a check of tests/works.rs (the cause is its first \
         failure); `harness`: the workload does not work on the original (a case to fix). \
         Other checks: the rest of tests/works.rs's checks ((b) every file the original's run \
         used is kept, (c) kept bytes within 1.5x the minimum, (d) harden --check, (e) check of \
         the original, (f)/(g) what scanners see). \
         Kept is the hardened image's regular files (zoneinfo aside) against the strace \
         minimum of the original's run.\n\n{} cases: {} same, {} MISS, {} harness, {} not run yet.\n\n{}\n\
         | case | class | first verdict | last verdict | cause of a miss | other checks failed | kept / minimum | shells, interpreters, network tools kept | time |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        order.len(),
        count("same"),
        count("MISS"),
        count("harness"),
        order.iter().filter(|n| !rows.contains_key(**n)).count(),
        summary(&rows, &defs),
    );
    for n in &order {
        if let Some(l) = rows.get(*n) {
            doc.push_str(l);
            doc.push('\n');
        }
    }
    fs::create_dir_all(doc_path.parent().unwrap()).unwrap();
    fs::write(&doc_path, doc).unwrap();
    eprintln!("wrote {}", doc_path.display());
}

/// The sweep's CI subset: ten cases across the classes (each exercising a rule of the sweep:
/// hook loops, a loaded library's data package, a helper run by computed path, an
/// extension module's imports, a daemon, compiled programs), run by the default test run. Each
/// must pass every check of [`run_case`].
const CI_SUBSET: &[&str] = &[
    "ep-dash-envsubst-jq",
    "ep-ksh93-openssl-asn1",
    "file-magic",
    "lspci-dump-ids",
    "tclsh-clock-tz",
    "calendar-history",
    "python-lxml",
    "redis",
    "go-esbuild",
    "rust-rsass",
];

#[test]
fn sweep_ci_subset() {
    let Some(base) = setup() else { return };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defs = load(&manifest.join("tests/sweep"));
    let mut failures = Vec::new();
    for name in CI_SUBSET {
        let def = defs
            .iter()
            .find(|d| d.name == *name)
            .unwrap_or_else(|| panic!("CI subset: no case {name} in tests/sweep"));
        let case = case_of(base, def).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {}", first_line(&msg)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sweep cases failed:\n{}",
        failures.len(),
        CI_SUBSET.len(),
        failures.join("\n")
    );
}

//! `just bench`: the figures quoted in issue notes, the README and `docs/bench.md`. Ignored by
//! default (run with --ignored, one test at a time), never asserts on time.
//!
//! - `harden_against_the_inflate_floor`: real Debian images (the bookworm minbase layer plus
//!   one `apt-get install` layer: nginx-light, curl, a Node.js app on Debian's node modules) and
//!   a ≥ 1 GiB image of 6 layers, in a real registry: `pare harden` (gzip and zstd) against the
//!   `gzip -dc` floor of the same layer blobs and `skopeo copy`, alternating, medians of 5.
//! - `batch_of_a_thousand_tags`: 1,000 tags in 100 repositories on three Debian bases, pushed
//!   to the registry: `pare batch` against the sum of single `pare harden` runs (sampled), the
//!   no-op re-run, registry requests per tag, peak RSS.
//!
//! Each writes its table into its section of `docs/bench.md`, with the machine it ran on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::debian::*;
use common::faults::FaultProxy;
use common::*;

/// Host files of `dir` (sorted, regular, at most 32 MiB each) whose names fall in
/// `part`/`of` of the list, up to `budget` bytes.
fn host_files(dir: &str, part: usize, of: usize, mut budget: u64) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (i, p) in names.into_iter().enumerate() {
        if i % of != part {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() > (32 << 20) || budget < meta.len() {
            continue;
        }
        budget -= meta.len();
        out.push(p);
    }
    out
}

fn host_layer(what: &str, files: &[std::path::PathBuf]) -> PreparedLayer {
    let mut layer = Layer::new().created_by(what);
    for p in files {
        layer = layer.file_from_host(p, p.to_str().unwrap(), None);
    }
    PreparedLayer::new(&layer, what)
}

/// `apt-get install PACKAGES` on the bookworm base, as one layer (plus `files`).
fn apt_layer(base: &BaseImage, packages: &[&str], files: &[(&str, &str)]) -> PreparedLayer {
    let mut b = app_root_builder(base, packages).expect("the bench's Debian packages");
    for (path, text) in files {
        b = b.file(path, text, 0o644);
    }
    b.build()
        .layer(&format!("apt-get install {}", packages.join(" ")))
}

fn spec(entrypoint: &[&str], cmd: &[&str]) -> ImageSpec {
    let s = ImageSpec::new(Vec::new()).with_entrypoint(entrypoint);
    if cmd.is_empty() { s } else { s.with_cmd(cmd) }
}

const NODE_APP: &str = "'use strict';
const express = require('express');
const yaml = require('js-yaml');
const app = express();
app.get('/', (req, res) => res.type('text').send(yaml.dump({ hello: 'from express' })));
app.listen(8140, '127.0.0.1');
";

/// pare, under `/usr/bin/time` writing its maximum RSS (KiB) to `rss` when it is there.
fn pare_timed(rss: &Path) -> Command {
    if Path::new("/usr/bin/time").exists() {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(rss)
            .arg(env!("CARGO_BIN_EXE_pare"));
        c
    } else {
        pare()
    }
}

/// One timed run: seconds, peak RSS (KiB) when measured, stderr.
fn timed(mut c: Command, rss: &Path) -> (f64, Option<u64>, String) {
    let _ = std::fs::remove_file(rss);
    let t = Instant::now();
    let out = c.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", describe_output(&out));
    let kib = std::fs::read_to_string(rss)
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok());
    (secs, kib, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mib(k: Option<u64>) -> String {
    k.map_or("n/a".into(), |k| format!("{} MiB", k / 1024))
}

/// The seconds of the phase `what` in a `pare -v` log (`… what seconds=S …`).
fn phase(log: &str, what: &str) -> Option<f64> {
    log.lines().find_map(|l| {
        let (head, tail) = l.split_once(" seconds=")?;
        head.ends_with(what)
            .then(|| tail.split_whitespace().next()?.parse().ok())?
    })
}

/// The machine, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kb: u64 = s.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kb as f64 / (1 << 20) as f64))
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), {mem} memory")
}

/// Replace the section `name` of docs/bench.md (between its markers) with `body`.
fn write_section(name: &str, body: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `just bench` (tests/bench.rs); each section keeps its last run.\n".into()
    });
    let (start, end) = (format!("<!-- {name} -->\n"), format!("<!-- /{name} -->\n"));
    let section = format!("{start}{body}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{old}\n{section}"),
    };
    std::fs::write(&path, new).unwrap();
    eprintln!("wrote the {name} section of {}", path.display());
}

/// What one image measured.
struct Figures {
    row: String,
}

/// One bench image, side by side in one run: the `gzip -dc` floor of its layer blobs (one
/// thread, to /dev/null), `pare harden` registry→registry with gzip and with zstd, alternating
/// five times (medians, peak RSS), and `skopeo copy` registry→registry once.
fn bench_image(
    reg: &Registry,
    name: &str,
    spec: &ImageSpec,
    layers: &[&PreparedLayer],
) -> Option<Figures> {
    if let Ok(only) = std::env::var("BENCH_ONLY")
        && !name.contains(&only)
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let t = Instant::now();
    let built = write_prepared_image(&layout, "img", spec, layers);
    if let Ok(keep) = std::env::var("BENCH_KEEP") {
        // For profiling by hand: the source image as an OCI layout.
        run_ok(
            Command::new("cp")
                .arg("-r")
                .arg(&layout)
                .arg(format!("{keep}/{name}")),
        );
    }
    let src = reg.image(&format!("bench/{name}:1"));
    push_layout(&layout, "img", &src, None);
    eprintln!(
        "[{name}] built and pushed in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let blobs: Vec<std::path::PathBuf> = built
        .layer_digests
        .iter()
        .map(|d| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        })
        .collect();
    let compressed: u64 = blobs.iter().map(|b| b.metadata().unwrap().len()).sum();
    let floor_once = || {
        let t = Instant::now();
        for b in &blobs {
            let ok = Command::new("gzip")
                .arg("-dc")
                .stdin(std::fs::File::open(b).unwrap())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success(), "gzip -dc {}", b.display());
        }
        t.elapsed().as_secs_f64()
    };
    let rss = dir.path().join("rss");
    let harden = |i: usize, c: &str| {
        let report = dir.path().join(format!("{c}{i}.json"));
        let mut cmd = pare_timed(&rss);
        cmd.args(["-v", "harden", "--force", &src])
            .arg(reg.image(&format!("bench/{name}:{c}{i}")))
            .args(["--compression", c, "--report"])
            .arg(&report);
        let (secs, kib, log) = timed(cmd, &rss);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        (secs, kib, log, r)
    };
    let (mut floor, mut gz, mut zs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        floor.push(floor_once());
        gz.push(harden(i, "gzip"));
        zs.push(harden(i, "zstd"));
    }
    // skopeo copy to a local layout: every blob downloaded and verified (registry to the same
    // registry would only mount them).
    let t = Instant::now();
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(reg.docker_ref(&format!("bench/{name}:1")))
            .arg(format!("oci:{}:x", dir.path().join("pulled").display())),
    );
    let skopeo = t.elapsed().as_secs_f64();
    let floor = median(&floor);
    let summary = |runs: &[(f64, Option<u64>, String, serde_json::Value)]| {
        let secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let med = median(&secs);
        let mid = runs.iter().find(|r| r.0 == med).unwrap();
        let rss = runs.iter().filter_map(|r| r.1).max();
        let write = phase(&mid.2, "wrote layer").unwrap_or(0.0);
        (med, rss, write, mid.3.clone())
    };
    let phases = |log: &str| -> String {
        log.lines()
            .filter_map(|l| {
                let (head, tail) = l.split_once(" seconds=")?;
                let secs: f64 = tail.split_whitespace().next()?.parse().ok()?;
                Some(format!("{} {secs:.2}s", head.rsplit(": ").next()?.trim()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (c, runs) in [("gzip", &gz), ("zstd", &zs)] {
        let secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let mid = runs.iter().find(|r| r.0 == median(&secs)).unwrap();
        eprintln!("[{name}] {c} phases of the median run: {}", phases(&mid.2));
    }
    let (g, gz_rss, g_write, report) = summary(&gz);
    let (z, zs_rss, z_write, zreport) = summary(&zs);
    let sizes = &report["sizes"];
    let (before, after) = (
        sizes["before"]["uncompressed"].as_u64().unwrap(),
        sizes["after"]["uncompressed"].as_u64().unwrap(),
    );
    let out_gz = sizes["after"]["compressed"].as_u64().unwrap();
    let out_zs = zreport["sizes"]["after"]["compressed"].as_u64().unwrap();
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let row = format!(
        "| {name} | {} | {} / {} | {} ({:.0}%) | {floor:.2}s | {skopeo:.2}s | {g:.2}s = **{:.2}x** (layer write {:.0}%) | {z:.2}s = **{:.2}x** (layer write {:.0}%) | {} / {} | {} / {} |\n",
        built.layer_digests.len(),
        mb(compressed),
        mb(before),
        mb(after),
        after as f64 * 100.0 / before as f64,
        g / floor,
        g_write * 100.0 / g,
        z / floor,
        z_write * 100.0 / z,
        mb(out_gz),
        mb(out_zs),
        mib(gz_rss),
        mib(zs_rss),
    );
    eprintln!("FIGURES {row}");
    Some(Figures { row })
}

/// The bench images; the hardened large one is run to show it works.
#[test]
#[ignore = "benchmark: run with `just bench`"]
fn harden_against_the_inflate_floor() {
    let Some(base) = or_skip(bookworm_base()) else {
        return;
    };
    let reg = Registry::start_in_memory();
    let nginx = apt_layer(base, &["nginx-light"], &[]);
    let curl = apt_layer(base, &["curl"], &[]);
    let node = apt_layer(
        base,
        &["nodejs", "node-express", "node-js-yaml"],
        &[("/srv/app/server.js", NODE_APP)],
    );
    let mut rows = Vec::new();
    rows.push(bench_image(
        &reg,
        "nginx-light",
        &spec(&["nginx", "-g", "daemon off;"], &[]),
        &[&base.layer, &nginx],
    ));
    rows.push(bench_image(
        &reg,
        "curl",
        &spec(&["curl"], &["--version"]),
        &[&base.layer, &curl],
    ));
    rows.push(bench_image(
        &reg,
        "node-express",
        &spec(&["/usr/bin/node", "/srv/app/server.js"], &[]),
        &[&base.layer, &node],
    ));
    // ≥ 1 GiB in 6 layers: the base, this machine's programs and libraries in four, curl.
    let large: Vec<PreparedLayer> = vec![
        host_layer("bench: bin 1", &host_files("/usr/bin", 0, 2, 340 << 20)),
        host_layer("bench: bin 2", &host_files("/usr/bin", 1, 2, 340 << 20)),
        host_layer(
            "bench: lib 1",
            &host_files("/usr/lib/x86_64-linux-gnu", 0, 2, 320 << 20),
        ),
        host_layer(
            "bench: lib 2",
            &host_files("/usr/lib/x86_64-linux-gnu", 1, 2, 320 << 20),
        ),
    ];
    let mut layers: Vec<&PreparedLayer> = vec![&base.layer];
    layers.extend(large.iter());
    layers.push(&curl);
    rows.push(bench_image(
        &reg,
        "large",
        &spec(&["curl"], &["--version"]),
        &layers,
    ));
    if is_root() && rows.last().is_some_and(Option::is_some) {
        let u = pull_and_unpack(&reg.docker_ref("bench/large:gzip0"));
        let o = run_chroot(&u.rootfs(), &["/usr/bin/curl", "--version"], &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
    }
    let mut body = format!(
        "## `pare harden` against the inflate floor\n\n{}; pare {}. Registry → registry \
         (the Debian `docker-registry` on loopback, its storage in `/dev/shm`), `--force`; medians of 5 alternating runs \
         (floor, gzip, zstd). The floor is `gzip -dc` of the source's layer blobs, one thread, \
         to /dev/null; `skopeo copy` is registry → local OCI layout (every blob downloaded and \
         verified). \"layer write\" is the share of pare's time spent writing the new layer.\n\n\
         | image | layers | source (gzip / tar) | kept | gzip -dc floor | skopeo copy | pare (gzip) | pare (zstd) | result gzip / zstd | peak RSS gzip / zstd |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        machine(),
        env!("CARGO_PKG_VERSION"),
    );
    if rows.iter().any(Option::is_none) {
        eprintln!("BENCH_ONLY is set: docs/bench.md is left as it is");
        return;
    }
    for f in rows.into_iter().flatten() {
        body.push_str(&f.row);
    }
    write_section("harden", &body);
}

/// One source image of the fleet: `layers` (prepared) plus its own small layer, pushed to
/// `repo:tag` through the registry API (blobs the registry has are mounted from `from`).
struct Fleet<'a> {
    reg: &'a Registry,
    /// Where each base blob was first uploaded.
    first: std::collections::HashMap<String, String>,
}

impl Fleet<'_> {
    fn push(&mut self, repo: &str, tag: &str, spec: &ImageSpec, base: &[&PreparedLayer]) -> String {
        let own = Layer::new().file("/etc/app-id", format!("{repo}:{tag}\n"), 0o644);
        let (blob, media_type, diff_id) = own.blob();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in base {
            let digest = sha256_digest(&l.blob);
            match self.first.get(&digest) {
                Some(from) if from == repo => {}
                Some(from) => {
                    self.reg.put_blob(repo, &l.blob, Some(from));
                }
                None => {
                    self.reg.put_blob(repo, &l.blob, None);
                    self.first.insert(digest.clone(), repo.to_string());
                }
            }
            descs.push(serde_json::json!({"mediaType": l.media_type, "digest": digest, "size": l.blob.len()}));
            diff_ids.push(l.diff_id.clone());
        }
        let digest = self.reg.put_blob(repo, &blob, None);
        descs.push(
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": blob.len()}),
        );
        diff_ids.push(diff_id);
        let mut spec = spec.clone();
        spec.layers = (0..diff_ids.len()).map(|_| Layer::new()).collect();
        let config = serde_json::to_vec(&spec.config_json(&diff_ids)).unwrap();
        let config_digest = self.reg.put_blob(repo, &config, None);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        self.reg
            .put_manifest(repo, tag, MEDIA_TYPE_OCI_MANIFEST, &manifest);
        sha256_digest(&manifest)
    }
}

/// 1,000 tags in 100 repositories, each a Debian base (minbase; + curl; + nginx-light) plus a
/// layer of its own, so 1,000 distinct source digests sharing three bases: `pare batch`, its
/// no-op re-run, the registry requests per tag (counted by a relaying proxy), against the
/// sum of single `pare harden` runs (20 sampled, times 50).
#[test]
#[ignore = "benchmark: run with `just bench`"]
fn batch_of_a_thousand_tags() {
    let Some(base) = or_skip(bookworm_base()) else {
        return;
    };
    let reg = Registry::start_in_memory();
    let curl = apt_layer(base, &["curl"], &[]);
    let nginx = apt_layer(base, &["nginx-light"], &[]);
    let kinds: [(Vec<&PreparedLayer>, ImageSpec); 3] = [
        (
            vec![&base.layer],
            spec(&["/usr/bin/sha256sum"], &["/etc/app-id"]),
        ),
        (vec![&base.layer, &curl], spec(&["curl"], &["--version"])),
        (
            vec![&base.layer, &nginx],
            spec(&["nginx", "-g", "daemon off;"], &[]),
        ),
    ];
    let t = Instant::now();
    let mut fleet = Fleet {
        reg: &reg,
        first: Default::default(),
    };
    let mut digests = std::collections::BTreeSet::new();
    let mut tags = Vec::new();
    // BENCH_REPOS: fewer repositories (of 10 tags each), to try the bench quickly.
    let repos: usize = std::env::var("BENCH_REPOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for r in 0..repos {
        let repo = format!("fleet/svc{r:03}");
        let (layers, spec) = &kinds[r % 3];
        for t in 0..10 {
            let tag = format!("1.{t}");
            digests.insert(fleet.push(&repo, &tag, spec, layers));
            tags.push(format!("{repo}:{tag}"));
        }
    }
    let pushed = t.elapsed().as_secs_f64();
    eprintln!(
        "pushed {} tags ({} distinct digests) in {pushed:.1}s",
        tags.len(),
        digests.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let rss = dir.path().join("rss");
    let target = format!("{}/fleet", reg.host());
    let report = dir.path().join("batch.json");
    // The single runs of the reference: every 50th tag hardened alone, three rounds, one
    // before the batch and two after it (the machine's speed drifts; each tag's median).
    let sampled: Vec<&String> = tags.iter().step_by(50).collect();
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); sampled.len()];
    let mut single_rss = None;
    let mut singles_round = |runs: &mut Vec<Vec<f64>>| {
        for (i, tag) in sampled.iter().enumerate() {
            let mut c = pare_timed(&rss);
            c.args([
                "harden",
                "--force",
                &reg.image(tag),
                // Outside the batch's namespace, so the batch does not see it.
                &reg.image(&format!("single/{tag}")),
            ]);
            let (secs, kib, _) = timed(c, &rss);
            runs[i].push(secs);
            single_rss = single_rss.max(kib);
        }
    };
    singles_round(&mut runs);
    let mut c = pare_timed(&rss);
    c.args(["-v", "batch", &target, "--report"]).arg(&report);
    let (full, full_rss, log) = timed(c, &rss);
    // Where the batch's time went: each phase summed over the images.
    let mut sums: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for l in log.lines() {
        if let Some((head, tail)) = l.split_once(" seconds=")
            && let Some(secs) = tail
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        {
            let e = sums
                .entry(head.rsplit(": ").next().unwrap_or("").trim().to_string())
                .or_default();
            e.0 += secs;
            e.1 += 1;
        }
    }
    eprintln!("batch phases (summed over images): {sums:?}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["hardened"], tags.len(), "{}", r["items"][0]);
    let mut c = pare_timed(&rss);
    c.args(["batch", &target, "--report"]).arg(&report);
    let (noop, noop_rss, _) = timed(c, &rss);
    let r2: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r2["skipped"], tags.len());
    // Requests, counted by a proxy relaying to the registry: the no-op re-run, and a forced
    // tenth of the batch.
    let proxy = FaultProxy::start(reg.port());
    let count = || proxy.log.lock().unwrap().len();
    let ptarget = format!("{}/fleet", proxy.host());
    run_ok(pare().args(["batch", &ptarget]));
    let noop_requests = count();
    run_ok(
        pare()
            .args(["batch", &ptarget, "--force", "--shard", "0/10", "--report"])
            .arg(&report),
    );
    let r3: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let forced = r3["hardened"].as_u64().unwrap();
    let forced_requests = count() - noop_requests;
    singles_round(&mut runs);
    singles_round(&mut runs);
    let singles: Vec<f64> = runs.iter().map(|r| median(r)).collect();
    eprintln!("single runs (per tag: median of 3): {singles:.2?}");
    let mean = singles.iter().sum::<f64>() / singles.len() as f64;
    let sum = mean * tags.len() as f64;
    let body = format!(
        "## `pare batch` of 1,000 tags\n\n{}; pare {}. 100 repositories × 10 tags under `fleet/`, \
         1,000 distinct source digests on three bases (bookworm minbase; + curl; + nginx-light), \
         each with a small layer of its own, pushed through the registry API (its storage in `/dev/shm`) in {pushed:.0}s. \
         `pare batch` with its defaults (jobs = cores).\n\n\
         | figure | value | reference |\n|---|---|---|\n\
         | batch, 1,000 tags hardened | {full:.1}s, peak RSS {} | sum of single runs ≈ {sum:.0}s ({} sampled, each the median of 3 runs; mean {mean:.2}s, peak RSS {}): **{:.3}x** |\n\
         | no-op re-run (all up to date) | **{noop:.2}s**, peak RSS {} | |\n\
         | registry requests per up-to-date tag | **{:.2}** ({noop_requests} for {}) | |\n\
         | registry requests per hardened tag | {:.1} ({forced_requests} for {forced}, `--force --shard 0/10`) | |\n\
         | shared | {} layer downloads, {} parses, {} reads, {} ELF parses, {} result layer writes avoided; {} blobs mounted | |\n",
        machine(),
        env!("CARGO_PKG_VERSION"),
        mib(full_rss),
        singles.len(),
        mib(single_rss),
        full / sum,
        mib(noop_rss),
        noop_requests as f64 / tags.len() as f64,
        tags.len(),
        forced_requests as f64 / forced.max(1) as f64,
        r["layers_reused"],
        r["parses_reused"],
        r["reads_avoided"],
        r["elf_facts_reused"],
        r["layers_written_once"],
        r["blobs_mounted"],
    );
    eprintln!("FIGURES {body}");
    write_section("batch", &body);
}

//! `pare serve` against the real distribution registry, whose `notifications` endpoint points
//! at the service the test started: a push is hardened (and signed, with its SBOM referrer)
//! within 30 s; a `kill -9` mid-job loses nothing and does the job once; a burst of 200 pushes
//! over 20 repositories is hardened exactly once each within the memory bound; bad requests
//! queue nothing, skipped events never stall the registry; `/metrics` is read by the Prometheus
//! client library's parser and matches what happened.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy, Rule};
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "serve-test-token-5f2c";
const PASSWORD: &str = "serve-test-passphrase";

/// A `pare serve` process with its queue, configuration and log in `dir`.
struct Serve {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Serve {
    fn start(dir: &Path, port: u16, config: &str, args: &[&str]) -> Serve {
        std::fs::write(dir.join("pare.toml"), config).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        let mut s = Serve {
            child: None,
            port,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let d = &self.dir;
        let child = pare()
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--token-file")
            .arg(d.join("token"))
            .arg("--queue")
            .arg(d.join("queue"))
            .arg("--config")
            .arg(d.join("pare.toml"))
            .args(&self.args)
            .env("PARE_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pare serve");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(30), || {
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().unwrap()) {
                panic!("pare serve exited with {status}:\n{}", self.log());
            }
            http(self.port, "GET", "/healthz", &[], b"").is_some_and(|(c, _)| c == 200)
        });
        assert!(up, "pare serve did not answer /healthz:\n{}", self.log());
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as `kill -9`.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit status.
    fn term(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Every line the service logged is a JSON object with a timestamp, level and message
    /// (the library's warnings included).
    fn log_is_json(&self) {
        let log = self.log();
        for line in log.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{log}"));
            for k in ["timestamp", "level", "message"] {
                assert!(v.get(k).is_some(), "no {k}: {line}");
            }
        }
    }

    /// `pare serve jobs --format json`: (jobs, skips).
    fn jobs(&self, skips: usize) -> (Vec<Value>, Vec<Value>) {
        let out = pare_ok(&[
            "serve",
            "jobs",
            "--queue",
            self.dir.join("queue").to_str().unwrap(),
            "--format",
            "json",
            "--skips",
            &skips.to_string(),
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["jobs"].as_array().unwrap().clone(),
            v["skips"].as_array().unwrap().clone(),
        )
    }

    /// Wait (at most `secs`) until a job whose destination contains `needle` is in `state`;
    /// that job, or a panic with the service's log.
    fn wait_job(&self, needle: &str, state: &str, secs: u64) -> Value {
        let mut found = None;
        let seen = wait_for(Duration::from_secs(secs), || {
            found = jobs_for(&self.jobs(0).0, needle)
                .into_iter()
                .find(|j| j["state"] == state);
            found.is_some()
        });
        assert!(seen, "no {state} job for {needle}:\n{}", self.log());
        found.unwrap()
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http(self.port, "POST", path, headers, body)
            .unwrap_or_else(|| panic!("POST {path}: no answer\n{}", self.log()))
    }

    /// The metrics as the Prometheus client library parses them: `name{labels}` → value.
    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (code, text) = http(self.port, "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(code, 200, "{text}");
        parse_metrics(&text)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Poll `f` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request (`Connection: close`); the status and body, `None` when nothing
/// answered. The body is written from a thread, so an answer sent before it is read (413)
/// is still seen.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut w = s.try_clone().ok()?;
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Chunked bodies are short here: the JSON line is what matters.
    Some((code, body.to_string()))
}

/// The text format read by `prometheus_client.parser` (Python), as `name{k="v",…}` → value
/// with the labels sorted.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics (python3-prometheus-client installed?): {}\n{text}",
        describe_output(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metric(m: &std::collections::BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn notify_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/events/distribution")
}

/// A registry announcing its events to a `pare serve` that will listen on `sport` (not yet
/// bound: the registry must not have taken that port for itself).
fn registry_notifying(sport: u16) -> Registry {
    loop {
        let reg = Registry::start_notifying(&notify_url(sport), TOKEN);
        if reg.port() != sport {
            return reg;
        }
    }
}

/// The jobs whose destination contains `needle`.
fn jobs_for(jobs: &[Value], needle: &str) -> Vec<Value> {
    jobs.iter()
        .filter(|j| j["dest"].as_str().unwrap().contains(needle))
        .cloned()
        .collect()
}

/// The referrers fallback tag of `digest` in `repo` lists an SPDX SBOM; the cosign signature
/// tag exists and `pare signature verify` accepts it.
fn check_sbom_and_signature(host: &str, repo: &str, digest: &str, public: &Path) {
    let hex = digest.trim_start_matches("sha256:");
    let refs: Value = serde_json::from_slice(&skopeo_raw_manifest(
        &format!("{host}/{repo}:sha256-{hex}"),
        None,
    ))
    .unwrap();
    assert!(
        refs["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["artifactType"] == "application/spdx+json"),
        "no SBOM referrer: {refs}"
    );
    assert!(skopeo_inspect_exists(
        &format!("{host}/{repo}:sha256-{hex}.sig"),
        None
    ));
    pare_ok(&[
        "signature",
        "verify",
        &format!("{host}/{repo}@{digest}"),
        "--key",
        public.to_str().unwrap(),
    ]);
}

/// Unpacked by umoci, the hardened jq answers as 65532.
fn runs_as_nonroot(image: &str) {
    if !root_or_skip("running the hardened jq under chroot --userspec=65532:65532") {
        return;
    }
    let u = pull_and_unpack(&format!("docker://{image}"));
    let out = run_chroot(&u.rootfs(), &["/usr/bin/jq", "-n", "[1,2]|add"], &[]);
    assert_eq!(stdout(&out).trim(), "3", "{}", describe_output(&out));
}

#[test]
fn a_push_is_hardened_and_signed_within_30_s_and_kill_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sport = free_port();
    let reg = registry_notifying(sport);
    // Pushes through the proxy are announced with its host; pare then pulls through it too,
    // where the layers can be made slow.
    let proxy = FaultProxy::start(reg.port());
    let out = run(pare()
        .arg("keygen")
        .arg(dir.path().join("sign"))
        .env("PARE_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", describe_output(&out));
    let config = format!(
        "[serve]\nregistries = [\"{}\", \"{}\"]\ninclude = [\"team/*\", \"slow/*\"]\nsign-key = \"sign.key\"\n",
        reg.host(),
        proxy.host()
    );
    let mut serve = Serve::start(dir.path(), sport, &config, &[]);

    let started = Instant::now();
    let (_, digest) = push_jq_image(&reg, "team/jq:1");
    let dest = reg.image("team/jq:1-hardened");
    assert!(
        wait_for(Duration::from_secs(30), || skopeo_inspect_exists(
            &dest, None
        )),
        "team/jq:1-hardened did not appear within 30 s:\n{}",
        serve.log()
    );
    eprintln!("hardened tag after {:?}", started.elapsed());
    let raw: Value = serde_json::from_slice(&skopeo_raw_manifest(&dest, None)).unwrap();
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.digest"],
        json!(digest)
    );
    let dest_digest = skopeo_manifest_digest(&dest, None);
    check_sbom_and_signature(
        &reg.host(),
        "team/jq",
        &dest_digest,
        &dir.path().join("sign.pub"),
    );
    runs_as_nonroot(&dest);
    let (jobs, _) = serve.jobs(0);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        (jobs[0]["state"].as_str(), jobs[0]["attempts"].as_u64()),
        (Some("done"), Some(1))
    );

    // kill -9 while a job runs (its layers are slow to come), then a restart.
    proxy.set(vec![Rule::new(
        "GET",
        "/blobs/",
        Fault::Delay(Duration::from_secs(3)),
        usize::MAX,
    )]);
    build_and_push(&jq_image(), &format!("{}/slow/jq:1", proxy.host()), None);
    serve.wait_job("slow/jq", "running", 30);
    std::thread::sleep(Duration::from_millis(500));
    serve.kill9();
    let slow_dest = reg.image("slow/jq:1-hardened");
    assert!(
        !skopeo_inspect_exists(&slow_dest, None),
        "written before the kill?"
    );
    proxy.set(Vec::new());
    let log_before = serve.log().len();
    serve.spawn();
    assert!(
        wait_for(Duration::from_secs(30), || skopeo_inspect_exists(
            &slow_dest, None
        )),
        "the interrupted job did not complete after the restart:\n{}",
        serve.log()
    );
    // Done once: one job, its second attempt; one `hardened` line after the restart, none
    // before it.
    assert!(wait_for(Duration::from_secs(10), || {
        jobs_for(&serve.jobs(0).0, "slow/jq")[0]["state"] == "done"
    }));
    let slow = jobs_for(&serve.jobs(0).0, "slow/jq");
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0]["attempts"], 2, "{slow:?}");
    let log = serve.log();
    let hardened = |text: &str| {
        text.lines()
            .filter(|l| l.contains("slow/jq") && l.contains("\"outcome\":\"hardened\""))
            .count()
    };
    assert_eq!(hardened(&log[..log_before]), 0, "{log}");
    assert_eq!(hardened(&log[log_before..]), 1, "{log}");
    runs_as_nonroot(&slow_dest);
    // The whole tag: every blob there and matching its digest (umoci verifies them).
    let u = pull_and_unpack(&format!("docker://{slow_dest}"));
    assert!(u.path("/usr/bin/jq").exists());

    // SIGTERM while a job runs: no new connection is taken, the job finishes within the
    // grace period, the service exits 0 with nothing left running.
    proxy.set(vec![Rule::new(
        "GET",
        "/blobs/",
        Fault::Delay(Duration::from_millis(700)),
        usize::MAX,
    )]);
    build_and_push(&jq_image(), &format!("{}/slow/jq:2", proxy.host()), None);
    serve.wait_job("slow/jq:2", "running", 30);
    let status = serve.term();
    assert!(status.success(), "{status}\n{}", serve.log());
    assert!(serve.log().contains("\"message\":\"stopped\""));
    assert!(
        http(sport, "GET", "/healthz", &[], b"").is_none(),
        "still listening"
    );
    let (jobs, _) = serve.jobs(0);
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:?}");
    assert!(skopeo_inspect_exists(
        &reg.image("slow/jq:2-hardened"),
        None
    ));
    serve.log_is_json();
}

/// Push image `i` (a jq image with its own `/etc/build-id`, so every digest differs) as
/// `repo:tag` through the registry API; the base layer is mounted from `base_repo` when
/// given. The manifest's digest.
fn push_raw(reg: &Registry, repo: &str, tag: &str, i: usize, base_repo: Option<&str>) -> String {
    let spec = jq_only_image();
    // Its own build id, and documentation the entrypoint does not need.
    let extra = Layer::new()
        .file("/etc/build-id", format!("{i}\n"), 0o644)
        .file(
            "/usr/share/doc/app/notes.txt",
            "pare serve burst\n".repeat(4096),
            0o644,
        );
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (k, layer) in spec.layers.iter().chain([&extra]).enumerate() {
        let (blob, media_type, diff_id) = layer.blob();
        let from = if k < spec.layers.len() {
            base_repo
        } else {
            None
        };
        let digest = reg.put_blob(repo, &blob, from);
        descriptors.push(json!({ "mediaType": media_type, "digest": digest, "size": blob.len() }));
        diff_ids.push(diff_id);
    }
    let config = serde_json::to_vec(&spec.config_json(&diff_ids)).unwrap();
    let config_digest = reg.put_blob(repo, &config, None);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": { "mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": descriptors,
    }))
    .unwrap();
    reg.put_manifest(repo, tag, MEDIA_TYPE_OCI_MANIFEST, &manifest);
    sha256_digest(&manifest)
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_burst_of_200_pushes_is_hardened_exactly_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let sport = free_port();
    let reg = registry_notifying(sport);
    let config = format!(
        "[serve]\nregistries = [\"{}\"]\ninclude = [\"burst/*\"]\n",
        reg.host()
    );
    let serve = Serve::start(dir.path(), sport, &config, &["--jobs", "2"]);
    let started = Instant::now();
    // The first repository first (the others mount its base layer), then the rest from four
    // threads at once.
    let push_repo = |r: usize| -> Vec<(String, String, String)> {
        let repo = format!("burst/app{r}");
        (0..10)
            .map(|t| {
                let base = (r > 0).then_some("burst/app0");
                let digest = push_raw(&reg, &repo, &format!("v{t}"), r * 10 + t, base);
                (repo.clone(), format!("v{t}"), digest)
            })
            .collect()
    };
    let mut pushed = push_repo(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                s.spawn(move || {
                    (1..20)
                        .filter(|r| r % 4 == k)
                        .flat_map(push_repo)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            pushed.extend(h.join().unwrap());
        }
    });
    eprintln!("200 pushes in {:?}", started.elapsed());
    let all_done = wait_for(Duration::from_secs(600), || {
        let (jobs, _) = serve.jobs(0);
        jobs.len() == 200 && jobs.iter().all(|j| j["state"] == "done")
    });
    let (jobs, _) = serve.jobs(0);
    assert!(
        all_done,
        "{} jobs, not all done: {jobs:?}\n{}",
        jobs.len(),
        serve.log()
    );
    eprintln!("200 hardened in {:?}", started.elapsed());
    // Exactly once each: one job per pushed digest, one attempt, one hardened tag.
    for (repo, tag, digest) in &pushed {
        let mine: Vec<&Value> = jobs
            .iter()
            .filter(|j| j["digest"] == json!(digest))
            .collect();
        assert_eq!(mine.len(), 1, "{repo}:{tag}: {mine:?}");
        assert_eq!(mine[0]["attempts"], 1, "{mine:?}");
    }
    for r in 0..20 {
        let tags = reg.tags(&format!("burst/app{r}"));
        let hardened = tags.iter().filter(|t| t.ends_with("-hardened")).count();
        assert_eq!(hardened, 10, "burst/app{r}: {tags:?}");
    }
    let rss = peak_rss_kib(serve.pid());
    eprintln!("peak RSS of pare serve: {} MiB", rss / 1024);
    assert!(rss <= 200 * 1024, "peak RSS {rss} KiB");
    let log = serve.log();
    let job_lines = log
        .lines()
        .filter(|l| l.contains("\"message\":\"job\""))
        .count();
    assert_eq!(job_lines, 200, "one log line per job");

    // The same manifest announced again: no work.
    let (repo, tag, _) = &pushed[0];
    push_raw(&reg, repo, tag, 0, None);
    let key = "pare_events_total{outcome=\"duplicate\",source=\"distribution\"}";
    assert!(
        wait_for(Duration::from_secs(30), || metric(&serve.metrics(), key)
            >= 1.0),
        "the second notification was not seen:\n{}",
        serve.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let (jobs, _) = serve.jobs(0);
    assert_eq!(jobs.len(), 200);
    let m = serve.metrics();
    assert_eq!(metric(&m, "pare_jobs{state=\"done\"}"), 200.0, "{m:?}");
    assert_eq!(
        metric(&m, "pare_jobs_finished_total{outcome=\"hardened\"}"),
        200.0
    );
    assert_eq!(metric(&m, "pare_harden_seconds_count"), 200.0);
    assert_eq!(
        metric(
            &m,
            "pare_events_total{outcome=\"queued\",source=\"distribution\"}"
        ),
        200.0
    );
    let saved: u64 = log
        .lines()
        .filter(|l| l.contains("\"message\":\"job\""))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["bytes_saved"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(saved > 200 * 60_000, "{saved}");
    assert_eq!(metric(&m, "pare_bytes_saved_total"), saved as f64);
    assert_eq!(
        metric(&m, "pare_harden_seconds_bucket{le=\"+Inf\"}"),
        200.0,
        "{m:?}"
    );
    serve.log_is_json();
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` under `key` (GitHub's signature header).
fn signature(key: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Harbor's `PUSH_ARTIFACT` webhook (its default payload, testdata/harbor/) for an image.
fn harbor_push(host: &str, namespace: &str, name: &str, tag: &str, digest: &str) -> Vec<u8> {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/harbor/push_artifact.json"),
    )
    .unwrap()
    .replace("@HOST@", host)
    .replace("@REPOSITORY@", &format!("{namespace}/{name}"))
    .replace("@NAMESPACE@", namespace)
    .replace("@NAME@", name)
    .replace("@TAG@", tag)
    .replace("@DIGEST@", digest)
    .into_bytes()
}

#[test]
fn bad_requests_queue_nothing_and_skipped_events_never_stall_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let sport = free_port();
    let reg = registry_notifying(sport);
    // Harbor's and the API's images live in a registry that announces nothing itself.
    let other = Registry::start();
    let hmac_key = "hmac-secret-77";
    std::fs::write(dir.path().join("hmac"), hmac_key).unwrap();
    let config = format!(
        "[serve]\nregistries = [\"{}\", \"{}\"]\ninclude = [\"team/*\", \"library/*\", \"api/*\"]\nexclude = [\"team/skip-*\"]\nmax-attempts = 1\n\
         [[serve.probe]]\nmatch = \"api/jq:*\"\nargs = [\"-n 1+1\"]\n\
         [[serve.probe]]\nmatch = \"api/bad:*\"\nargs = [\"--rawfile p /etc/passwd -n $p\"]\n",
        reg.host(),
        other.host()
    );
    let hmac_file = dir.path().join("hmac");
    let serve = Serve::start(
        dir.path(),
        sport,
        &config,
        &["--hmac-secret-file", hmac_file.to_str().unwrap()],
    );
    refused_requests(&serve, &reg.host());
    skipped_events(&serve, &reg.host(), hmac_key);
    pushes_webhooks_and_api(&serve, &reg, &other);
    counters_match(&serve);
    serve.log_is_json();
}

const D: &str = "sha256:4f98543ac6f792c1352e8c5a0555601ab3fd3497810581606c36c7416c5ffe37";

/// A distribution registry's push event for `repo:tag` on `host`.
fn push_event(repo: &str, tag: &str, host: &str) -> Value {
    json!({"action": "push", "target": {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": D,
           "repository": repo, "tag": tag}, "request": {"host": host}})
}

/// Malformed, unauthenticated, wrongly signed and oversized requests: 400, 401, 413; nothing
/// stored.
fn refused_requests(serve: &Serve, host: &str) {
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let good = serde_json::to_vec(&json!({"events": [push_event("team/api", "1", host)]})).unwrap();
    let sport = serve.port;
    // Refused, nothing stored.
    let big = vec![b' '; 10 << 20];
    let wrong_sig = signature("not-the-key", &good);
    for (path, headers, body, code) in [
        (
            "/events/distribution",
            vec![auth[0]],
            &b"{not json"[..],
            400,
        ),
        ("/events/harbor", vec![auth[0]], &b"[]"[..], 400),
        ("/harden", vec![auth[0]], &b"{\"img\": 1}"[..], 400),
        ("/events/distribution", vec![], &good[..], 401),
        (
            "/events/distribution",
            vec![("Authorization", "Bearer wrong")],
            &good[..],
            401,
        ),
        (
            "/events/distribution",
            vec![("X-Hub-Signature-256", wrong_sig.as_str())],
            &good[..],
            401,
        ),
        (
            "/events/distribution",
            vec![auth[0], ("X-Hub-Signature-256", wrong_sig.as_str())],
            &good[..],
            401,
        ),
        ("/events/distribution", vec![auth[0]], &big[..], 413),
    ] {
        let (got, text) = serve.post(path, &headers, body);
        assert_eq!(got, code, "{path} {headers:?}: {text}");
    }
    assert_eq!(
        http(sport, "GET", "/events/distribution", &[], b"")
            .unwrap()
            .0,
        405
    );
    assert_eq!(http(sport, "GET", "/nowhere", &[], b"").unwrap().0, 404);
    let (jobs, skips) = serve.jobs(100);
    assert!(jobs.is_empty() && skips.is_empty(), "{jobs:?} {skips:?}");
}

/// A well-formed, signed envelope whose events are all skips: 202, each recorded.
fn skipped_events(serve: &Serve, host: &str, hmac_key: &str) {
    // Well-formed and signed (no token): every event a skip, answered 202, recorded.
    let tagless = push_event("team/api", "", host);
    let blob = json!({"action": "push", "target": {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": D, "repository": "team/api"}, "request": {"host": host}});
    let pull = json!({"action": "pull", "target": {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": D,
                      "repository": "team/api", "tag": "1"}, "request": {"host": host}});
    let skipped = serde_json::to_vec(&json!({"events": [
        push_event("team/skip-me", "1", host),
        push_event("team/api", "1-hardened", host),
        push_event("team/api", "1", "evil.example:5000"),
        push_event("other/api", "1", host),
        tagless, blob, pull,
    ]}))
    .unwrap();
    let sig = signature(hmac_key, &skipped);
    let (code, text) = serve.post(
        "/events/distribution",
        &[("X-Hub-Signature-256", sig.as_str())],
        &skipped,
    );
    assert_eq!(
        (code, text.trim()),
        (202, "{\"duplicate\":0,\"queued\":0,\"skipped\":7}")
    );
    let (jobs, skips) = serve.jobs(100);
    assert!(jobs.is_empty(), "{jobs:?}");
    let reasons: Vec<&str> = skips
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    for why in [
        "exclude",
        "a tag pare writes",
        "not one [serve] registries",
        "include",
        "no tag",
        "a blob",
        "not a push",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "{why}: {reasons:?}"
        );
    }
}

/// A real push after the skips, Harbor's webhook and `POST /harden`: each hardened once.
fn pushes_webhooks_and_api(serve: &Serve, reg: &Registry, other: &Registry) {
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    // A push after them is still hardened within 30 s.
    push_jq_image(reg, "team/jq:2");
    let dest = reg.image("team/jq:2-hardened");
    assert!(
        wait_for(Duration::from_secs(30), || skopeo_inspect_exists(
            &dest, None
        )),
        "{}",
        serve.log()
    );

    // A result under a tag that is not one of pare's (as an in-place result is): its job
    // finds pare's recipe on the manifest and skips it, so a result never starts a loop.
    copy_image(&dest, &reg.image("team/jq:copied"));
    serve.wait_job("team/jq:copied", "skipped", 30);
    assert!(!skopeo_inspect_exists(
        &reg.image("team/jq:copied-hardened"),
        None
    ));

    // Harbor's webhook, its auth header sent verbatim (no `Bearer`).
    let (_, hd) = push_jq_image(other, "library/jq:1");
    let body = harbor_push(&other.host(), "library", "jq", "1", &hd);
    let (code, text) = serve.post("/events/harbor", &[("Authorization", TOKEN)], &body);
    assert_eq!(
        (code, text.trim()),
        (202, "{\"duplicate\":0,\"queued\":1,\"skipped\":0}")
    );
    let hdest = other.image("library/jq:1-hardened");
    assert!(
        wait_for(Duration::from_secs(30), || skopeo_inspect_exists(
            &hdest, None
        )),
        "{}",
        serve.log()
    );
    runs_as_nonroot(&hdest);

    // POST /harden: the same rules; a second request for the same digest is a duplicate.
    push_jq_image(other, "api/jq:1");
    let req = |image: String, dest: Option<&str>| {
        let mut v = json!({ "image": image });
        if let Some(d) = dest {
            v["dest"] = json!(d);
        }
        serde_json::to_vec(&v).unwrap()
    };
    let (code, text) = serve.post("/harden", &auth, &req(other.image("api/jq:1"), None));
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("\"outcome\":\"queued\""), "{text}");
    let adest = other.image("api/jq:1-hardened");
    assert!(
        wait_for(Duration::from_secs(30), || skopeo_inspect_exists(
            &adest, None
        )),
        "{}",
        serve.log()
    );
    let (code, text) = serve.post("/harden", &auth, &req(other.image("api/jq:1"), None));
    assert!(code == 202 && text.contains("duplicate"), "{code} {text}");
    // A probe that behaves differently in the result (pare writes its own /etc/passwd): the
    // job fails with the probe's verdict and nothing is pushed.
    push_jq_image(other, "api/bad:1");
    let (code, text) = serve.post("/harden", &auth, &req(other.image("api/bad:1"), None));
    assert_eq!(code, 202, "{text}");
    let bad = serve.wait_job("api/bad", "failed", 60);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("probes behave differently"),
        "{bad:?}"
    );
    assert!(!skopeo_inspect_exists(
        &other.image("api/bad:1-hardened"),
        None
    ));
    for (image, dest) in [
        (other.image("team/skip-x:1"), None),
        (other.image("api/jq:1"), Some("elsewhere.example/x:1")),
        ("evil.example/api/jq:1".to_string(), None),
    ] {
        let (code, text) = serve.post("/harden", &auth, &req(image.clone(), dest));
        assert_eq!(code, 403, "{image} {dest:?}: {text}");
    }
}

/// The counters match what happened.
fn counters_match(serve: &Serve) {
    assert!(wait_for(Duration::from_secs(10), || {
        serve
            .jobs(0)
            .0
            .iter()
            .all(|j| j["state"] != "queued" && j["state"] != "running")
    }));
    let m = serve.metrics();
    let req_count = |endpoint: &str, code: u16| {
        metric(
            &m,
            &format!("pare_requests_total{{code=\"{code}\",endpoint=\"{endpoint}\"}}"),
        )
    };
    assert_eq!(req_count("/events/distribution", 400), 1.0, "{m:?}");
    assert_eq!(req_count("/events/harbor", 400), 1.0);
    assert_eq!(req_count("/harden", 400), 1.0);
    assert_eq!(req_count("/events/distribution", 401), 4.0);
    assert_eq!(req_count("/events/distribution", 413), 1.0);
    assert_eq!(req_count("/harden", 403), 3.0);
    assert_eq!(req_count("/other", 404) + req_count("other", 404), 1.0);
    let ev = |source: &str, outcome: &str| {
        metric(
            &m,
            &format!("pare_events_total{{outcome=\"{outcome}\",source=\"{source}\"}}"),
        )
    };
    assert_eq!(ev("distribution", "queued"), 2.0);
    assert_eq!(ev("harbor", "queued"), 1.0);
    assert_eq!(
        (
            ev("api", "queued"),
            ev("api", "duplicate"),
            ev("api", "skipped")
        ),
        (2.0, 1.0, 3.0)
    );
    let (jobs, skips) = serve.jobs(10_000);
    assert_eq!(jobs.len(), 5, "{jobs:?}");
    assert_eq!(
        skips.len() as f64,
        ev("distribution", "skipped") + ev("harbor", "skipped"),
        "every skipped event recorded"
    );
    assert_eq!(metric(&m, "pare_jobs{state=\"done\"}"), 3.0);
    assert_eq!(metric(&m, "pare_jobs{state=\"skipped\"}"), 1.0);
    assert_eq!(metric(&m, "pare_jobs{state=\"failed\"}"), 1.0);
    assert_eq!(
        metric(&m, "pare_jobs_finished_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "pare_jobs_finished_total{outcome=\"skipped\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "pare_jobs_finished_total{outcome=\"hardened\"}"),
        3.0
    );
}

#[test]
fn sources_must_be_signed_when_the_config_names_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sport = free_port();
    let reg = registry_notifying(sport);
    let out = run(pare()
        .arg("keygen")
        .arg(dir.path().join("ci"))
        .env("PARE_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", describe_output(&out));
    let config = format!(
        "[serve]\nregistries = [\"{}\"]\nmax-attempts = 1\n[signatures]\nkeys = [\"ci.pub\"]\n",
        reg.host()
    );
    let serve = Serve::start(dir.path(), sport, &config, &[]);
    push_jq_image(&reg, "team/jq:unsigned");
    let job = serve.wait_job("team/jq:unsigned", "failed", 30);
    let err = job["error"].as_str().unwrap();
    assert!(err.contains("signature"), "{err}");
    assert!(!skopeo_inspect_exists(
        &reg.image("team/jq:unsigned-hardened"),
        None
    ));
    serve.log_is_json();
}

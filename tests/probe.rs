//! `pare probe`: the hardened image's entrypoint run in pare's rootless sandbox, alone and
//! against the original; and what the sandbox keeps in (the host's processes, files, network,
//! process count and time). Runs as root and, through `setpriv`, as an ordinary user (SKIP with
//! the reason where the kernel forbids user namespaces).

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("probe JSON: {e}\n{}", describe_output(out)))
}

/// Run pare as an ordinary user without subordinate ranges (uid/gid 65534); `None` (with the
/// reason; a failure under CI) where that cannot work here.
fn as_user(args: &[&str]) -> Option<Output> {
    if !root_or_skip("cannot switch to another user for the unprivileged run") {
        return None;
    }
    Some(OtherUser::new(&["--reuid=65534", "--regid=65534", "--clear-groups"])?.pare(args))
}

#[test]
fn a_hardened_image_passes_and_a_broken_one_fails_with_both_outputs() {
    let reg = Registry::start();
    let src = reg.image("probe/jq:1");
    build_and_push(&jq_image(), &src, None);
    let hard = reg.image("probe/jq:1-hardened");
    pare_ok(&["-q", "harden", "--no-sbom", &src]);

    let json_probe = r#"-c -n {"a":[1,2,3]}|.a|add"#;
    let out = pare_ok(&[
        "-q", "probe", &hard, "--probe", json_probe, "--format", "json",
    ]);
    let r = report(&out);
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["probes"][0]["outcome"]["stdout"], "6\n", "{r}");
    // Against the original, with the image's own Cmd too.
    let out = pare_ok(&[
        "-q",
        "probe",
        &hard,
        "--against",
        &src,
        "--probe",
        json_probe,
        "--probe",
        "-n 1+1",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 of 2 probes passed"));

    // A hardened image missing a library jq needs (hidden by a top layer of its source and
    // hardened with --allow-missing): the probe fails, and shows both runs.
    let libjq = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libjq.so.1")
        .or_else(|_| std::fs::canonicalize("/usr/lib/aarch64-linux-gnu/libjq.so.1"))
        .expect("libjq on this machine");
    let broken_src = reg.image("probe/broken:1");
    let spec = jq_image().with_layer(Layer::new().whiteout(libjq.to_str().unwrap()));
    build_and_push(&spec, &broken_src, None);
    let broken = reg.image("probe/broken:1-hardened");
    pare_ok(&["-q", "harden", "--no-sbom", "--allow-missing", &broken_src]);
    let out = run(pare().args([
        "-q",
        "probe",
        &broken,
        "--against",
        &src,
        "--probe",
        "-n 1+1",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL"), "{text}");
    assert!(text.contains("exit 127"), "{text}");
    assert!(
        text.contains("libjq"),
        "the loader's error is shown: {text}"
    );
    assert!(text.contains("original: exit 0"), "{text}");
    assert!(
        text.contains("| 2"),
        "the original's stdout is shown: {text}"
    );

    // The same as an ordinary user.
    if let Some(out) = as_user(&[
        "-q", "probe", &hard, "--probe", json_probe, "--format", "json",
    ]) {
        assert!(out.status.success(), "{}", describe_output(&out));
        let r = report(&out);
        assert_eq!(r["probes"][0]["outcome"]["stdout"], "6\n", "{r}");
        assert!(
            r["note"].as_str().unwrap_or("").contains("not faithful"),
            "{r}"
        );
        let out = as_user(&["-q", "probe", &broken, "--probe", "-n 1+1"]).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    }
}

/// A shell image (busybox) running as 65532, for the containment checks.
fn shell_image(marker: &str) -> ImageSpec {
    ImageSpec::new(vec![
        usrmerge_base_layer()
            .symlink("/escape", marker)
            .dir("/data", 0o755),
    ])
    .with_entrypoint(&["/usr/bin/busybox", "sh", "-c"])
    .with_cmd(&["true"])
    .with_user("65532:65532")
}

#[test]
fn the_sandbox_keeps_the_program_in() {
    if !root_or_skip("ownership checks need the one-to-one id mapping") {
        return;
    }
    let reg = Registry::start();
    let marker = format!("/tmp/pare-host-marker-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let img = reg.image("probe/sh:1");
    build_and_push(&shell_image(&marker), &img, None);
    let probe = |script: &str, timeout: &str| {
        let out = run(pare()
            .args([
                "-q",
                "probe",
                &img,
                "--format",
                "json",
                "--probe-timeout",
                timeout,
                "--probe",
            ])
            .arg(format!("'{}'", script.replace('\'', "'\\''")))
            .env("PARE_TEST_SECRET", "host-secret-value"));
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            describe_output(&out)
        );
        let r = report(&out);
        r["probes"][0].clone()
    };
    // A write as 65532 into root-owned /data fails with the permission error.
    let p = probe("echo x > /data/f", "20");
    assert_eq!(p["passed"], false, "{p}");
    assert!(
        p["outcome"]["stderr"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{p}"
    );
    // The host's processes are not visible: PID 1 is the sandbox's, and nothing of the
    // host's environment is there.
    let p = probe(
        "ls /proc | grep -c '^[0-9]' ; cat /proc/1/environ; cat /proc/1/cmdline",
        "20",
    );
    let out = p["outcome"]["stdout"].as_str().unwrap();
    let pids: u32 = out
        .lines()
        .next()
        .unwrap_or("99")
        .trim()
        .parse()
        .unwrap_or(99);
    assert!(pids <= 5, "{pids} processes visible: {p}");
    assert!(!out.contains("host-secret-value") && !format!("{p}").contains("host-secret-value"));
    // A write through a symlink to a host path lands inside the sandbox.
    let p = probe("echo escaped > /escape; cat /escape", "20");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the write reached the host: {p}"
    );
    // Only the loopback interface.
    let p = probe("cat /proc/net/dev", "20");
    let dev = p["outcome"]["stdout"].as_str().unwrap();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{dev}");
    // A fork bomb hits the process limit and dies with the sandbox at the time limit.
    let t = std::time::Instant::now();
    let p = probe("f() { f | f & }; f; while :; do :; done", "3");
    assert_eq!(p["outcome"]["timed_out"], true, "{p}");
    assert!(t.elapsed().as_secs() < 20);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Seen from the host, the run user is the mapped unprivileged uid.
    let left = Command::new("pgrep")
        .args(["-u", &mapped_host_uid(65532).to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes of 65532 left on the host: {left:?}"
    );
    // A program that never ends is killed at the time limit.
    let t = std::time::Instant::now();
    let p = probe("sleep 1000", "2");
    assert_eq!(p["outcome"]["timed_out"], true, "{p}");
    assert!(t.elapsed().as_secs() < 15, "{:?}", t.elapsed());
}

/// `pare harden --probe`: probes run in the result and in the source before anything is
/// written; the same behaviour writes the image (with the probes in the report), a different
/// one writes nothing and exits 1 showing both runs.
#[test]
fn harden_probe_writes_only_what_behaves_like_the_source() {
    let reg = Registry::start();
    let src = reg.image("hprobe/jq:1");
    build_and_push(&jq_image(), &src, None);
    let ok = reg.image("hprobe/jq:ok");
    let out = pare_ok(&[
        "-q",
        "harden",
        "--no-sbom",
        &src,
        &ok,
        "--probe",
        "-n 1+1",
        "--report",
        "-",
    ]);
    let r = report(&out);
    assert_eq!(r["probes"][0]["passed"], true, "{r}");
    assert_eq!(r["probes"][0]["outcome"]["stdout"], "2\n");
    assert_eq!(r["probes"][0]["original"]["stdout"], "2\n");
    assert!(skopeo_inspect_exists(&ok, None));
    // With no probe named, the [probe] table of pare.toml is used.
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("pare.toml"),
        "[probe]\nargs = [\"-n 2+2\"]\ntimeout = 30\n",
    )
    .unwrap();
    let out = run(pare()
        .current_dir(cfg.path())
        .args(["-q", "probe", &ok, "--format", "json"]));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(report(&out)["probes"][0]["outcome"]["stdout"], "4\n");

    // /usr/bin/passwd is in the source (setuid) and not in the result: a probe reading it
    // behaves differently, and nothing is written.
    let bad = reg.image("hprobe/jq:bad");
    let out = run(pare().args([
        "-q",
        "harden",
        "--no-sbom",
        &src,
        &bad,
        "--probe",
        "-n 1+1",
        "--probe",
        "-n --rawfile f /usr/bin/passwd '$f|length > 0'",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 of 2 probes behave differently"), "{err}");
    assert!(err.contains("original: exit 0"), "{err}");
    assert!(
        !reg.tags("hprobe/jq").contains(&"bad".to_string()),
        "a tag was written"
    );
}

/// `--http-probe`: a server run as 65532 binds port 80 on the sandbox's loopback (unprivileged
/// ports start at 0 there, as in a container) and answers; the hardened image answers as the
/// original does.
#[test]
fn an_http_probe_gets_the_page_from_a_non_root_server_on_port_80() {
    let reg = Registry::start();
    let src = reg.image("web/httpd:1");
    let spec = ImageSpec::new(vec![usrmerge_base_layer().dir("/www", 0o755).file(
        "/www/index.html",
        "<h1>hello from the sandbox</h1>\n",
        0o644,
    )])
    .with_entrypoint(&["/usr/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"])
    .with_user("65532:65532");
    build_and_push(&spec, &src, None);
    let out = pare_ok(&[
        "-q",
        "probe",
        &src,
        "--http-probe",
        "80/index.html",
        "--format",
        "json",
    ]);
    let r = report(&out);
    let http = &r["probes"][0]["outcome"]["http"];
    assert_eq!(http["status"], 200, "{r}");
    assert_eq!(http["body"], "<h1>hello from the sandbox</h1>\n", "{r}");
    // A missing page is a failed probe.
    let out = run(pare().args(["-q", "probe", &src, "--http-probe", "80/nope.html"]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 404"));
    // Hardened (the page kept with --keep), it serves the same page as the original.
    let hard = reg.image("web/httpd:1-hardened");
    pare_ok(&[
        "-q",
        "harden",
        "--no-sbom",
        &src,
        "--keep",
        "/www",
        "--http-probe",
        "80/index.html",
    ]);
    pare_ok(&[
        "-q",
        "probe",
        &hard,
        "--against",
        &src,
        "--http-probe",
        "80/index.html",
    ]);
}

/// `harden --learn-http`: the server is watched while it answers in the source; the page it
/// served, which nothing in the image names (httpd serves `/`, the request names the page), is
/// kept and listed as missed by static analysis, and what it looked for and the source lacks is
/// listed apart.
#[test]
fn harden_learn_http_keeps_what_the_server_served() {
    let reg = Registry::start();
    let src = reg.image("web/httpd-root:1");
    let spec = ImageSpec::new(vec![
        usrmerge_base_layer()
            .dir("/srv", 0o755)
            .dir("/srv/site", 0o755)
            .file("/srv/site/page.html", "<p>served from /srv</p>\n", 0o644),
    ])
    .with_entrypoint(&["/usr/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/"])
    .with_user("65532:65532");
    build_and_push(&spec, &src, None);
    // Static analysis alone drops the page: the probe fails and nothing is written.
    let out = run(pare().args([
        "-q",
        "harden",
        "--no-sbom",
        &src,
        "--http-probe",
        "80/srv/site/page.html",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let learned = reg.image("web/httpd-root:learned");
    let out = pare_ok(&[
        "-q",
        "harden",
        "--no-sbom",
        &src,
        &learned,
        "--learn-http",
        "80/srv/site/page.html",
        "--http-probe",
        "80/srv/site/page.html",
        "--report",
        "-",
    ]);
    let r = report(&out);
    let list = |k: &str| -> Vec<String> {
        r[k].as_array()
            .unwrap_or_else(|| panic!("no {k}: {r}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        list("observed_only").contains(&"/srv/site/page.html".to_string()),
        "{r}"
    );
    assert_eq!(r["probes"][0]["passed"], true, "{r}");
    // busybox httpd looks for its configuration, which the source does not have.
    let absent = list("observed_absent");
    assert!(
        absent.contains(&"/etc/httpd.conf".to_string()),
        "{absent:?}"
    );
    let u = pull_and_unpack(&learned);
    assert!(u.rootfs().join("srv/site/page.html").is_file());
    for a in &absent {
        assert!(
            !u.rootfs().join(a.trim_start_matches('/')).exists(),
            "{a} is listed as absent but is in the image"
        );
    }
}

/// `--learn`: the original's run is watched (ptrace in the sandbox), and a file it used that
/// the hardened image lacks is named as missed by static analysis.
#[test]
fn learn_names_a_file_the_hardened_image_lacks() {
    let reg = Registry::start();
    let src = reg.image("learn/jq:1");
    build_and_push(&jq_image(), &src, None);
    pare_ok(&["-q", "harden", "--no-sbom", &src]);
    let hard = reg.image("learn/jq:1-hardened");
    // The file is named only at run time, by the probe's arguments.
    let out = run(pare().args([
        "-q",
        "probe",
        &hard,
        "--against",
        &src,
        "--learn",
        "--format",
        "json",
        "--probe",
        "-n --rawfile f /usr/bin/passwd '$f|length > 0'",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let r = report(&out);
    let p = &r["probes"][0];
    let missed: Vec<&str> = p["missed"]
        .as_array()
        .unwrap_or_else(|| panic!("no missed list: {p}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(missed.contains(&"/usr/bin/passwd"), "{missed:?}");
    // What the original used includes jq's own libraries, found.
    let observed = p["original"]["observed"].as_array().unwrap();
    assert!(
        observed
            .iter()
            .any(|o| o[0].as_str().unwrap().contains("libjq") && o[1] == true),
        "{observed:?}"
    );
    assert!(!missed.iter().any(|m| m.contains("libjq")), "{missed:?}");
}

/// `pare harden --learn`: what the probe's program used in the source is kept (evidence
/// `observed`), the report names what only the probe showed, and the result then behaves as
/// the source for that probe.
#[test]
fn harden_learn_keeps_what_the_probe_used() {
    let reg = Registry::start();
    let src = reg.image("hlearn/jq:1");
    build_and_push(&jq_image(), &src, None);
    let args = "-n --rawfile f /usr/bin/passwd '$f|length > 0'";
    let dest = reg.image("hlearn/jq:learned");
    let out = pare_ok(&[
        "-q",
        "harden",
        "--no-sbom",
        &src,
        &dest,
        "--learn",
        args,
        "--probe",
        args,
        "--report",
        "-",
    ]);
    let r = report(&out);
    let only: Vec<&str> = r["observed_only"]
        .as_array()
        .unwrap_or_else(|| panic!("no observed_only: {r}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(only.contains(&"/usr/bin/passwd"), "{only:?}");
    assert!(!only.iter().any(|p| p.contains("libjq")), "{only:?}");
    assert_eq!(r["probes"][0]["passed"], true, "{r}");
    let u = pull_and_unpack(&dest);
    assert!(u.rootfs().join("usr/bin/passwd").is_file());
}

/// The user .ci/run makes for this test: an ordinary user with /etc/subuid and /etc/subgid
/// ranges (Debian's useradd assigns 65536 ids).
const SUB_USER: &str = "pare-sub";

/// A layer whose `/owned` directory (and a file in it) belong to 65532, as a Dockerfile's
/// `chown` would leave them.
fn owned_layer() -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode) in [
        ("owned/", tar::EntryType::Directory, 0o755),
        ("owned/mine", tar::EntryType::Regular, 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(65532);
        h.set_gid(65532);
        h.set_mtime(0);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"x\n"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    Layer::from_tar(b.into_inner().unwrap())
}

/// pare run as another user through `setpriv`, from a copy of the binary it can execute, with
/// its own TMPDIR.
struct OtherUser {
    dir: tempfile::TempDir,
    setpriv: std::path::PathBuf,
    who: Vec<String>,
}

impl OtherUser {
    /// `who`: setpriv's options naming the user. `None` (with the reason; a failure under CI)
    /// where setpriv is missing.
    fn new(who: &[&str]) -> Option<OtherUser> {
        let Some(setpriv) = find_tool("setpriv") else {
            skip("setpriv (util-linux) is not installed");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("pare-user-")
            .tempdir()
            .unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let bin = dir.path().join("pare");
        std::fs::copy(env!("CARGO_BIN_EXE_pare"), &bin).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let who = who.iter().map(|s| s.to_string()).collect();
        Some(OtherUser { dir, setpriv, who })
    }

    /// [`SUB_USER`], an ordinary user with /etc/subuid and /etc/subgid ranges.
    fn sub() -> Option<OtherUser> {
        let has_range = |f: &str| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{SUB_USER}:")))
        };
        let known = Command::new("id")
            .arg(SUB_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !known || !has_range("/etc/subuid") || !has_range("/etc/subgid") {
            skip(&format!(
                "no user {SUB_USER} with /etc/subuid and /etc/subgid ranges (scripts/test.sh makes one: useradd {SUB_USER})"
            ));
            return None;
        }
        if find_tool("newuidmap").is_none() {
            skip("newuidmap is not installed (Debian's uidmap)");
            return None;
        }
        OtherUser::new(&[
            &format!("--reuid={SUB_USER}"),
            &format!("--regid={SUB_USER}"),
            "--init-groups",
        ])
    }

    fn tmp(&self) -> std::path::PathBuf {
        self.dir.path().join("tmp")
    }

    /// The kernel must let the user make namespaces (it does on the machines the suite runs on).
    fn pare(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.setpriv)
            .args(&self.who)
            .arg(self.dir.path().join("pare"))
            .args(args)
            .env("TMPDIR", self.tmp())
            .env("HOME", self.tmp())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !(out.status.code() == Some(2) && err.contains("namespace")),
            "the kernel refused {:?} a user namespace: {}",
            self.who,
            err.trim()
        );
        out
    }
}

/// As an ordinary user with subordinate id ranges, the sandbox maps the image's ids through
/// them (newuidmap/newgidmap): owners are the image's, a write as 65532 into its own directory
/// works and into a root-owned one fails, as in a cluster; the copy is removed.
#[test]
fn an_ordinary_user_with_subordinate_ranges_gets_faithful_ownership() {
    if !root_or_skip("cannot switch to the test user") {
        return;
    }
    let Some(user) = OtherUser::sub() else {
        return;
    };
    let reg = Registry::start();
    let img = reg.image("probe/owned:1");
    let spec = shell_image("/nonexistent").with_layer(owned_layer());
    build_and_push(&spec, &img, None);
    let script = "id -u; id -g; stat -c '%u:%g' /owned /owned/mine /etc/passwd; \
                  echo y > /owned/new && mkdir /owned/sub && echo z > /owned/sub/f && echo wrote; \
                  echo n > /data/f";
    let quoted = format!("'{script}'");
    let out = user.pare(&["-q", "probe", &img, "--format", "json", "--probe", &quoted]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let r = report(&out);
    let p = &r["probes"][0]["outcome"];
    assert_eq!(
        p["stdout"], "65532\n65532\n65532:65532\n65532:65532\n0:0\nwrote\n",
        "{r}"
    );
    assert!(
        p["stderr"].as_str().unwrap().contains("Permission denied"),
        "{r}"
    );
    assert!(
        !format!("{r}").contains("not faithful"),
        "the ranges were not used: {r}"
    );
    // The materialized copy was removed.
    let left: Vec<_> = std::fs::read_dir(user.tmp()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// The host uid an image uid runs as in a sandbox pare starts as root: root's range from
/// /etc/subuid (a `pare`, else `root` entry), else pare's fixed range.
fn mapped_host_uid(uid: u32) -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let entry = |who: &str| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && f[0] == who).then(|| f[1].parse::<u32>().ok())?
        })
    };
    entry("pare")
        .or_else(|| entry("root"))
        .unwrap_or(0x7000_0000)
        + uid
}

/// The hostile entrypoint (tests/common/hostile.c), built static with the machine's gcc.
fn hostile_image(dir: &std::path::Path) -> ImageSpec {
    let bin = dir.join("hostile");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/hostile.c");
    run_ok(
        Command::new(require_tool("gcc"))
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(&src),
    );
    ImageSpec::new(vec![
        Layer::new()
            .dir("/etc", 0o755)
            .file("/etc/passwd", "root:x:0:0::/root:/nonexistent\n", 0o644)
            .file_from_host(&bin, "/hostile", Some(0o755)),
        owned_layer(),
    ])
    .with_entrypoint(&["/hostile"])
    .with_cmd(&["status"])
}

/// Processes on the host whose command line starts with `/hostile`: (pid, real uid).
fn hostile_processes() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmd.starts_with(b"/hostile\0") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(uid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
        {
            out.push((pid, uid));
        }
    }
    out
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn free_disk(path: &str) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// The escapes every run of the hostile image must fail at, through `probe` (a pare run with
/// the given Cmd, its first probe's outcome).
fn assert_contained(who: &str, probe: &dyn Fn(&str, &str) -> Value) {
    // Sysctls: nothing global is writable (randomize_va_space is written with its own value).
    let before = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").unwrap();
    let p = probe("sysctl", "20");
    let out = p["stdout"].as_str().unwrap().to_string();
    assert_eq!(out.lines().count(), 5, "{who}: {p}");
    assert!(
        !out.contains(": ok"),
        "{who}: a host sysctl is writable: {out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").unwrap(),
        before
    );
    // Masked: kcore, keys and timer_list read nothing, /sys/firmware and /proc/acpi are empty.
    let p = probe("proc", "20");
    let out = p["stdout"].as_str().unwrap();
    for line in out.lines() {
        assert!(
            line.ends_with("read 0 bytes")
                || line.ends_with(" 0 entries")
                || line.contains("ENOENT"),
            "{who}: {line}\n{p}"
        );
    }
    // Kernel interfaces: every attempt fails; nothing outside is reached or killed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let p = probe(&format!("kernel {port}"), "20");
    let out = p["stdout"].as_str().unwrap().to_string();
    let said = |what: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("{who}: no line for {what}: {out}"))
            .to_string()
    };
    for call in [
        "add_key",
        "keyctl",
        "bpf",
        "mount",
        "mount proc",
        "ptrace pid 1",
        "unshare user",
        "unshare mount",
        "setns",
    ] {
        assert_eq!(said(call), "EPERM", "{who}: {call}: {out}");
    }
    assert!(
        matches!(said("open /proc/1/mem").as_str(), "EACCES" | "EPERM"),
        "{out}"
    );
    assert_eq!(said("clone3"), "ENOSYS", "{who}: {out}");
    assert_ne!(said("connect host port"), "ok", "{who}: {out}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{who}: the host's loopback port was reached"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "{who}: kill -1 reached a host process"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    // The filter and the dropped privileges, as the program sees them.
    let p = probe("status", "20");
    let out = p["stdout"].as_str().unwrap();
    assert!(out.contains("Seccomp:\t2"), "{who}: {out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{who}: {out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{who}: {out}");
    assert!(out.contains("uid: 0\n"), "{who}: {out}");
    assert!(out.contains("/owned: 65532:65532"), "{who}: {out}");
    assert!(out.contains("/etc/passwd: 0:0"), "{who}: {out}");
    // A many-file disk fill stops at the tmpfs's bound, on no host disk.
    let disk = free_disk("/tmp");
    let p = probe("diskfill", "60");
    let out = p["stdout"].as_str().unwrap();
    assert!(out.contains("ENOSPC"), "{who}: {p}");
    let mib: u64 = out
        .split(" files (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (512..=1100).contains(&mib),
        "{who}: filled {mib} MiB: {out}"
    );
    // The ~1 GiB written went to no disk of the host (other tests may write a little at the
    // same time).
    let after = free_disk("/tmp");
    assert!(
        after + (512 << 20) > disk,
        "{who}: host disk went from {disk} to {after} free"
    );
    // A fork bomb ends at the time limit and leaves nothing.
    let p = probe("forkbomb", "3");
    assert_eq!(p["timed_out"], true, "{who}: {p}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        hostile_processes().is_empty(),
        "{who}: left on the host: {:?}",
        hostile_processes()
    );
}

/// `pare probe IMG` with one probe, as JSON.
fn probe_args<'a>(img: &'a str, cmd: &'a str, timeout: &'a str) -> [&'a str; 9] {
    [
        "-q",
        "probe",
        img,
        "--format",
        "json",
        "--probe-timeout",
        timeout,
        "--probe",
        cmd,
    ]
}

/// The first probe's outcome of a pare run that ran (passed or failed).
fn first_outcome(out: &Output) -> Value {
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        describe_output(out)
    );
    report(out)["probes"][0]["outcome"].clone()
}

/// A hostile image run as the image's root: every escape fails, from pare as root and from pare
/// as an ordinary user with subordinate ranges; as root, the host sees the program under the
/// mapped unprivileged uid, and memory and processes are bounded by a cgroup.
#[test]
fn a_hostile_image_changes_nothing_outside_the_sandbox() {
    if !root_or_skip("the escapes are tried as the image's root under pare as root") {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let img = reg.image("probe/hostile:1");
    build_and_push(&hostile_image(work.path()), &img, None);
    let probe_as_root =
        |cmd: &str, timeout: &str| first_outcome(&run(pare().args(probe_args(&img, cmd, timeout))));
    assert_contained("root", &probe_as_root);

    // Seen from the host while it runs: the mapped uid, never 0.
    let mut child = pare()
        .args([
            "-q",
            "probe",
            &img,
            "--probe-timeout",
            "4",
            "--probe",
            "sleep 30",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() && t.elapsed().as_secs() < 4 {
        seen = hostile_processes();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.wait();
    assert!(!seen.is_empty(), "the probe's program was never seen");
    for (pid, uid) in &seen {
        assert_eq!(*uid, mapped_host_uid(0), "pid {pid} runs as host uid {uid}");
    }

    // Bounds for the whole sandbox: a cgroup here (root on a machine with cgroups).
    let p = probe_as_root("status", "20");
    let bounded = p["bounded_by"].as_str().unwrap().to_string();
    if bounded.starts_with("rlimits only") {
        skip(&format!("no cgroup for the memory bomb: {bounded}"));
    } else {
        assert!(
            bounded.contains("memory") && bounded.contains("pids"),
            "{bounded}"
        );
        // A forking memory bomb (8 children of 1 GiB against 4 GiB + the root): the OOM killer
        // ends some, the host's memory comes back.
        let avail = meminfo("MemAvailable:");
        let p = probe_as_root("membomb 8", "60");
        let out = p["stdout"].as_str().unwrap();
        let killed: u32 = out
            .strip_prefix("memory bomb: ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{p}"));
        assert!(
            killed >= 1,
            "no child was stopped at the cgroup's bound: {p}"
        );
        // The kernel gives the killed processes' memory back (5 GiB were taken); with the
        // other tests of this file running beside it, that was seen to take up to ~25 s.
        let t = std::time::Instant::now();
        let mut back = meminfo("MemAvailable:");
        while back + (1 << 30) < avail && t.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            back = meminfo("MemAvailable:");
        }
        assert!(
            back + (1 << 30) > avail,
            "memory went from {avail} to {back} available"
        );
    }

    // The same escapes from pare run as an ordinary user with subordinate ranges.
    let Some(user) = OtherUser::sub() else {
        return;
    };
    let probe_as_user =
        |cmd: &str, timeout: &str| first_outcome(&user.pare(&probe_args(&img, cmd, timeout)));
    assert_contained("an ordinary user", &probe_as_user);
}

/// `--seccomp-profile`: the calls a learn run made become an OCI seccomp profile; the hardened
/// image's probe passes under it in the sandbox (`--seccomp`), a call outside it fails there,
/// and `--print-security-context` points a pod at it.
#[test]
fn a_learned_seccomp_profile_allows_what_the_program_called_and_nothing_else() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    // jq, hardened with a learn run recording its calls.
    let src = reg.image("seccomp/jq:1");
    build_and_push(&jq_image(), &src, None);
    let profile = work.path().join("jq.json");
    let out = run(pare()
        .args(["-q", "harden", "--no-sbom", &src, "--learn", "-n 1+1"])
        .arg("--seccomp-profile")
        .arg(&profile)
        .arg("--print-security-context"));
    assert!(out.status.success(), "{}", describe_output(&out));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("seccompProfile:\n    type: Localhost\n    localhostProfile: pare/jq.json"),
        "{yaml}"
    );
    let p: Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO", "{p}");
    let names: Vec<&str> = p["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for call in ["execve", "openat", "mmap", "write", "exit_group"] {
        assert!(names.contains(&call), "{call} missing: {names:?}");
    }
    assert!(
        !names.contains(&"ptrace") && !names.contains(&"sysinfo"),
        "{names:?}"
    );
    let hard = reg.image("seccomp/jq:1-hardened");
    let out = run(pare()
        .args(["-q", "probe", &hard, "--probe", "-n 1+1", "--seccomp"])
        .arg(&profile));
    assert!(out.status.success(), "{}", describe_output(&out));

    // A call outside the profile fails under it, and works without it.
    let img = reg.image("seccomp/hostile:1");
    build_and_push(&hostile_image(work.path()), &img, None);
    let learned = work.path().join("hostile.json");
    let out = run(pare()
        .args([
            "-q",
            "probe",
            &img,
            "--learn",
            "--probe",
            "status",
            "--seccomp-profile",
        ])
        .arg(&learned));
    assert!(out.status.success(), "{}", describe_output(&out));
    let stdout = |out: &Output| report(out)["probes"][0]["outcome"]["stdout"].clone();
    let under = |probe: &str| {
        run(pare()
            .args([
                "-q",
                "probe",
                &img,
                "--format",
                "json",
                "--probe",
                probe,
                "--seccomp",
            ])
            .arg(&learned))
    };
    let out = under("status");
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stdout(&out).as_str().unwrap().contains("Seccomp:\t2"));
    assert_eq!(stdout(&under("sysinfo")), "sysinfo: EPERM\n");
    let free = run(pare().args([
        "-q", "probe", &img, "--format", "json", "--probe", "sysinfo",
    ]));
    assert_eq!(stdout(&free), "sysinfo: ok\n");
    // Recording stacks its filter on the default one, which still refuses (the strictest
    // answer wins).
    let learning = run(pare().args([
        "-q", "probe", &img, "--format", "json", "--learn", "--probe", "kernel 1",
    ]));
    let out = stdout(&learning);
    let out = out.as_str().unwrap();
    for call in [
        "keyctl: EPERM",
        "bpf: EPERM",
        "unshare user: EPERM",
        "clone3: ENOSYS",
    ] {
        assert!(out.contains(call), "{call}: {out}");
    }
    // A profile pare cannot apply is one line and exit 2.
    let bad = work.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap();
    let out = run(pare().args(["-q", "probe", &img, "--seccomp"]).arg(&bad));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1,
        "{}",
        describe_output(&out)
    );
}

/// `harden --learn-tcp`: a server that does not speak HTTP is started in the source, watched
/// until its port listens, then stopped; a file it read by a computed path is kept. The same
/// server under `--learn` never exits: what it read before the time limit's kill is kept too.
#[test]
fn harden_learn_tcp_and_learn_until_the_time_limit_keep_what_a_server_read() {
    let reg = Registry::start();
    let src = reg.image("learn/tcp:1");
    let spec = ImageSpec::new(vec![
        usrmerge_base_layer()
            .dir("/srv", 0o755)
            .file("/srv/motd.txt", "welcome aboard\n", 0o644),
    ])
    .with_entrypoint(&[
        "/usr/bin/busybox",
        "sh",
        "-c",
        "d=$(/usr/bin/busybox echo /s)rv; /usr/bin/busybox cat \"$d/motd.txt\" >/dev/null; exec /usr/bin/busybox nc -l -p 7000",
    ])
    .with_user("65532:65532");
    build_and_push(&spec, &src, None);
    let observed = |args: &[&str], dest: &str| -> Vec<String> {
        let mut a = vec!["-q", "harden", "--no-sbom", &src, dest];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--report", "-"]);
        let out = run(pare().args(&a));
        assert!(out.status.success(), "{}", describe_output(&out));
        let r = report(&out);
        let u = pull_and_unpack(dest);
        assert!(
            u.rootfs().join("srv/motd.txt").is_file(),
            "{args:?}: the file the server read is not kept: {r}"
        );
        r["observed_only"]
            .as_array()
            .unwrap_or_else(|| panic!("no observed_only: {r}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    let tcp = observed(&["--learn-tcp", "7000"], &reg.image("learn/tcp:tcp"));
    assert!(tcp.contains(&"/srv/motd.txt".to_string()), "{tcp:?}");
    let timed = observed(
        &["--learn", "", "--probe-timeout", "3"],
        &reg.image("learn/tcp:timed"),
    );
    assert!(timed.contains(&"/srv/motd.txt".to_string()), "{timed:?}");
    // Static analysis alone does not see it.
    let plain = reg.image("learn/tcp:plain");
    pare_ok(&["-q", "harden", "--no-sbom", &src, &plain]);
    assert!(
        !pull_and_unpack(&plain)
            .rootfs()
            .join("srv/motd.txt")
            .exists()
    );
}

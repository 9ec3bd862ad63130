//! A sweep of real Debian programs run in pare's probe sandbox as their image's root: that the
//! sandbox's bounds (user namespace, tmpfs root, masked /proc and /sys, seccomp filter, cgroup)
//! leave ordinary programs working: interpreters, a JVM reading its cgroup limits, Node reading
//! the CPU count, Go's runtime, git writing a repository, TLS libraries, `df` and `nproc`.
//! Ignored by default (it downloads ~100 MB of packages); run it with
//! `cargo test --release --test sandbox_sweep -- --ignored --nocapture`, and with `PARE_BIN`
//! set to compare another pare binary on the same images.

mod common;

use std::process::Command;

use common::debian::*;
use common::*;
use serde_json::Value;

/// (name, packages, bash script, what its stdout must match).
const CASES: &[(&str, &[&str], &str, &str)] = &[
    (
        "python3",
        &["python3"],
        "python3 -c 'import json,ssl,sqlite3,hashlib,os; print(json.dumps([os.cpu_count()>0, ssl.OPENSSL_VERSION[:7]]))'",
        r#"^\[true, "OpenSSL"\]"#,
    ),
    (
        "perl",
        &["perl"],
        "perl -MPOSIX -e 'print strftime(q(%Y), gmtime(0)), qq(\\n)'",
        "^1970",
    ),
    (
        "openssl",
        &["openssl"],
        "echo hi | openssl sha256",
        "SHA2-256",
    ),
    (
        "git",
        &["git"],
        "git init -q /tmp/r && cd /tmp/r && echo x > f && git add f && git -c user.email=a@b -c user.name=a commit -qm m && git log --oneline | wc -l",
        "^1",
    ),
    (
        "sqlite3",
        &["sqlite3"],
        "sqlite3 :memory: 'select 1+1'",
        "^2",
    ),
    ("gawk", &["gawk"], "gawk 'BEGIN{print 2+2}'", "^4"),
    (
        "coreutils",
        &[],
        "nproc && df -P / | tail -1 && id -u && touch /etc/x && ls /sys/kernel >/dev/null && echo ok",
        "ok",
    ),
    (
        "nodejs",
        &["nodejs"],
        "node -e 'console.log(require(\"os\").cpus().length > 0)'",
        "^true",
    ),
    (
        "ruby",
        &["ruby"],
        "ruby -e 'require \"json\"; puts JSON.generate([1+1])'",
        r"^\[2\]",
    ),
    ("go (age)", &["age"], "age --version", r"^v?\d"),
    (
        "java",
        &["default-jre-headless"],
        "java -XshowSettings:system -version 2>&1 | head -20",
        "(?i)openjdk",
    ),
];

#[test]
#[ignore = "a breadth sweep: downloads packages; run it by hand"]
fn real_programs_work_in_the_probe_sandbox() {
    if !root_or_skip("the Debian roots are built as root") {
        return;
    }
    let Some(base) = or_skip(bookworm_base()) else {
        return;
    };
    let bin = std::env::var_os("PARE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_pare").into());
    let dir = target_dir().join("sandbox-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    for (name, packages, script, want) in CASES {
        let layout = dir.join(name.replace(' ', "_").replace(['(', ')'], ""));
        if !layout.join("index.json").exists() {
            let app = app_root_builder(base, packages)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .build()
                .layer(&format!("apt-get install {}", packages.join(" ")));
            let spec = ImageSpec::new(Vec::new())
                .with_entrypoint(&["/bin/bash", "-c"])
                .with_env("PATH", "/usr/local/bin:/usr/bin:/bin");
            std::fs::create_dir_all(&layout).unwrap();
            write_prepared_image(&layout, "img", &spec, &[&base.layer, &app]);
        }
        let image = format!("oci:{}:img", layout.display());
        let out = Command::new(&bin)
            .args([
                "-q",
                "probe",
                &image,
                "--format",
                "json",
                "--probe-timeout",
                "120",
                "--probe",
            ])
            .arg(format!("'{}'", script.replace('\'', "'\\''")))
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let o = &r["probes"][0]["outcome"];
        let stdout = o["stdout"].as_str().unwrap_or("");
        let ok = out.status.success()
            && regex::Regex::new(&format!("(?m){want}"))
                .unwrap()
                .is_match(stdout);
        eprintln!(
            "{:<10} {:<4} exit {:<4} {:>6.2}s  {}",
            name,
            if ok { "PASS" } else { "FAIL" },
            o["exit_code"],
            o["seconds"].as_f64().unwrap_or(0.0),
            stdout.lines().next().unwrap_or("")
        );
        if !ok {
            eprintln!("{}\n{}", describe_output(&out), o["stderr"]);
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "failed in the sandbox: {failed:?}");
}

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

#[path = "works/case.rs"]
mod case;
mod common;
#[path = "works/run_case.rs"]
mod run_case;
#[path = "works/support.rs"]
mod support;
#[path = "works/sweep.rs"]
mod sweep;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use case::*;
use common::debian::*;
use common::scan::*;
use common::*;
use run_case::run_case;
use support::*;

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

/// GNU Guile, the runtime added as one file and one table row (issue 20): modules through
/// `%load-path` and `%load-compiled-path`, the start-up set read from libguile and boot-9.
#[test]
fn guile_script() {
    let Some(base) = setup() else { return };
    let main = r#"(use-modules (ice-9 match) (srfi srfi-1) (ice-9 format) (ice-9 rdelim))
(define line (call-with-input-file "/app/in.txt" read-line))
(define numbers (map string->number (string-split line #\space)))
(format #t "total ~a~%" (fold + 0 numbers))
(format #t "match ~a~%" (match numbers ((a b . rest) (* a b))))
"#;
    let Some(app) = app_layer(base, &["guile-3.0"], |b| {
        b.file("/app/main.scm", main, 0o644)
            .file("/app/in.txt", "6 7 29\n", 0o644)
    }) else {
        return;
    };
    let spec = spec(&["guile-3.0", "/app/main.scm"], &[]).with_workdir("/app");
    run_case(
        Case::new("guile", spec, vec![base.layer.clone(), app]).check(Check::new(
            Workload::new("guile-3.0 /app/main.scm"),
            "total 42\nmatch 42",
        )),
    );
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

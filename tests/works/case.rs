//! What an acceptance case is (its image, its checks, its exceptions), and the small helpers
//! [`run_case`] and the sweep share: the table, the pare under test, phase timings.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::*;

pub(crate) const TABLE_HEADER: &str = "| image | original | hardened (excl. zoneinfo) | strace minimum (excl. zoneinfo) | ratio | files kept | shells, interpreters, network tools kept | smoke | failures |\n|---|---|---|---|---|---|---|---|---|";

/// The last table row `run_case` made (the sweep collects them).
pub(crate) static LAST_ROW: std::sync::Mutex<Option<SweepRow>> = std::sync::Mutex::new(None);

/// One case's figures, for `docs/sweep.md`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SweepRow {
    pub(crate) ratio: Option<f64>,
    pub(crate) hard_bytes: Option<u64>,
    pub(crate) min_bytes: u64,
    pub(crate) risky: String,
    pub(crate) failures: Vec<String>,
}

/// Programs a hardened image should keep only with cause: shells, interpreters, network tools,
/// package managers (by base name, in the usual program directories).
pub(crate) fn risky_programs(files: &BTreeMap<String, u64>) -> Vec<String> {
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
pub(crate) fn risky_with_causes(names: &[String], report: Option<&serde_json::Value>) -> String {
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
pub(crate) const COMMON_EXCEPTIONS: &[(&str, &str)] = &[
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

pub(crate) const ZONEINFO: &str = "/usr/share/zoneinfo";

/// How the hardened run's output is compared with the original's.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Compare {
    /// stdout byte for byte.
    Exact,
    /// `getent passwd root`: name, password field, uid and gid (pare writes its own
    /// /etc/passwd by design, so the shell and GECOS of root may differ).
    PasswdRoot,
}

pub(crate) struct Check {
    pub(crate) w: Workload,
    /// The original's stdout must contain this (proves the workload did its work).
    pub(crate) expect: Option<Vec<u8>>,
    pub(crate) compare: Compare,
    /// The original's exit code (0 unless a case says its program reports findings).
    pub(crate) exit: i32,
}

impl Check {
    pub(crate) fn new(w: Workload, expect: impl AsRef<[u8]>) -> Check {
        Check {
            w,
            expect: Some(expect.as_ref().to_vec()),
            compare: Compare::Exact,
            exit: 0,
        }
    }
}

pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) spec: ImageSpec,
    pub(crate) layers: Vec<PreparedLayer>,
    pub(crate) checks: Vec<Check>,
    pub(crate) exceptions: Vec<(&'static str, &'static str)>,
    /// Assert the hardened image has no /usr/share/zoneinfo.
    pub(crate) no_zoneinfo: bool,
    /// (c)'s limit when not 1.5, with why this program needs more than one run shows.
    pub(crate) max_ratio: Option<(f64, &'static str)>,
    /// `pare trace --why PATH` on the original must print each of these.
    pub(crate) why: Vec<(&'static str, Vec<&'static str>)>,
}

impl Case {
    pub(crate) fn new(name: &str, spec: ImageSpec, layers: Vec<PreparedLayer>) -> Case {
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

    pub(crate) fn why(mut self, path: &'static str, must: &[&'static str]) -> Self {
        self.why.push((path, must.to_vec()));
        self
    }

    /// A file the original's run uses that the hardened image may lack, with why.
    pub(crate) fn except(mut self, path: &'static str, why: &'static str) -> Self {
        self.exceptions.push((path, why));
        self
    }

    pub(crate) fn max_ratio(mut self, limit: f64, why: &'static str) -> Self {
        self.max_ratio = Some((limit, why));
        self
    }

    pub(crate) fn check(mut self, c: Check) -> Self {
        self.checks.push(c);
        self
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// pare's error line (`pare: error: …`), else the last line of its stderr.
pub(crate) fn text_err(b: &[u8]) -> String {
    let t = text(b);
    if t.trim().is_empty() {
        String::new()
    } else {
        format!("stderr: {t}")
    }
}

pub(crate) fn error_line(b: &[u8]) -> String {
    let t = text(b);
    t.lines()
        .rev()
        .find(|l| l.starts_with("pare: error"))
        .or_else(|| t.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .to_string()
}

/// The first few names of a list, for the table.
pub(crate) fn few(items: &[(String, String)]) -> String {
    let mut s: Vec<&str> = items.iter().take(4).map(|(n, _)| n.as_str()).collect();
    if items.len() > 4 {
        s.push("…");
    }
    s.join(", ")
}

pub(crate) fn verbose() -> bool {
    std::env::var_os("PARE_WORKS_VERBOSE").is_some()
}

pub(crate) fn excluded<'a>(
    exceptions: &'a [(&'a str, &'a str)],
    paths: &[&str],
) -> Option<&'a str> {
    exceptions.iter().find_map(|(pat, why)| {
        let hit = paths.iter().any(|p| match pat.strip_suffix('*') {
            Some(prefix) => p.starts_with(prefix),
            None => p == pat,
        });
        hit.then_some(*why)
    })
}

pub(crate) fn passwd_root_ids(out: &[u8]) -> String {
    text(out)
        .lines()
        .find(|l| l.starts_with("root:"))
        .map(|l| l.split(':').take(4).collect::<Vec<_>>().join(":"))
        .unwrap_or_else(|| format!("<no root line in {:?}>", text(out)))
}

/// The pare under test: `$PARE_BIN` when set (e.g. a release build), else the one cargo built.
pub(crate) fn pare_cmd() -> Command {
    match std::env::var_os("PARE_BIN") {
        Some(bin) => Command::new(bin),
        None => pare(),
    }
}

/// `pare ARGS` started now, its output collected on a thread.
pub(crate) fn pare_spawn(args: &[&str]) -> std::thread::JoinHandle<(Output, Duration)> {
    let mut cmd = pare_cmd();
    cmd.args(args);
    std::thread::spawn(move || {
        let started = Instant::now();
        let out = run_capture(&mut cmd);
        (out, started.elapsed())
    })
}

/// Phase timings of a case, printed at its end.
pub(crate) struct Laps {
    pub(crate) last: Instant,
    pub(crate) laps: Vec<String>,
}

impl Laps {
    pub(crate) fn new() -> Laps {
        Laps {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    pub(crate) fn lap(&mut self, what: &str) {
        self.laps
            .push(format!("{what} {:.1?}", self.last.elapsed()));
        self.last = Instant::now();
    }
}

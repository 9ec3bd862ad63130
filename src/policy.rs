//! `pare check`: the hardening checklist as rules with stable ids and severities, evaluated on
//! a merged image; configured by flags or `pare.toml`; printed as text, JSON, SARIF 2.1.0 or
//! GitHub Actions workflow commands.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rootfs::{Kind, Node, Rootfs, display};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl std::str::FromStr for Severity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            _ => Err(Error::Usage(format!(
                "severity {s:?}: expected low, medium or high"
            ))),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        })
    }
}

impl Severity {
    /// SARIF `level`.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low => "note",
        }
    }
}

/// A rule of the checklist.
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub help: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        id: "root-user",
        severity: Severity::High,
        title: "The image runs as root",
        help: "Set a non-root USER (numeric, e.g. 65532:65532, so Kubernetes runAsNonRoot can verify it), or run `pare harden`.",
    },
    Rule {
        id: "setuid-setgid",
        severity: Severity::High,
        title: "Files with the setuid or setgid bit",
        help: "setuid/setgid programs are privilege-escalation paths (`find / -perm /6000 -type f`). Remove them or clear the bits (`pare harden` does both).",
    },
    Rule {
        id: "shell",
        severity: Severity::Medium,
        title: "A shell is present",
        help: "A shell (sh, bash, dash, ash, zsh, busybox and its applet links) lets an attacker run anything. Ship only the program's closure.",
    },
    Rule {
        id: "network-tool",
        severity: Severity::Medium,
        title: "Network tools are present",
        help: "nc, socat, curl, wget, ssh and friends help an attacker fetch tools and exfiltrate data. Remove them unless the entrypoint is one.",
    },
    Rule {
        id: "package-manager",
        severity: Severity::Low,
        title: "A package manager is present",
        help: "apt, dpkg, apk, yum, dnf, rpm, microdnf or pip let an attacker install anything. Build it out of the final image.",
    },
    Rule {
        id: "world-writable",
        severity: Severity::Medium,
        title: "World-writable files or directories",
        help: "Files and directories anyone can write (without the sticky bit, outside /tmp) let one process tamper with another's files. Fix their modes.",
    },
    Rule {
        id: "wasted-space",
        severity: Severity::Low,
        title: "Layers waste space",
        help: "Bytes that lower layers ship and upper layers replace or delete are pulled and stored for nothing. Measured as dive does: efficiency = Σ smallest size of each path / Σ all its sizes across layers; wasted = Σ sizes of paths that appear in more than one layer. Squash the layers, or `pare harden`.",
    },
];

pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "busybox"];
const NETWORK_TOOLS: &[&str] = &[
    "nc", "ncat", "netcat", "socat", "curl", "wget", "telnet", "ssh", "scp", "ftp", "tftp",
];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt", "apt-get", "dpkg", "apk", "yum", "dnf", "rpm", "microdnf", "pip",
];

/// `wasted-space` thresholds; dive's `.dive-ci` defaults.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WastedConfig {
    /// Fail when the efficiency score is below this (dive's `lowestEfficiency`, 0.9).
    pub lowest_efficiency: f64,
    /// Fail when wasted bytes exceed this (dive's `highestWastedBytes`; off by default).
    pub highest_wasted_bytes: Option<u64>,
    /// Fail when wasted bytes / bytes of all layers but the first exceed this (dive's
    /// `highestUserWastedPercent`, 0.1).
    pub highest_user_wasted_percent: f64,
}

impl Default for WastedConfig {
    fn default() -> Self {
        WastedConfig {
            lowest_efficiency: 0.9,
            highest_wasted_bytes: None,
            highest_user_wasted_percent: 0.1,
        }
    }
}

/// The `[check]` table of `pare.toml` / `.pare.toml`, merged with flags.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Rules not evaluated.
    pub allow: Vec<String>,
    /// Lowest severity that fails the check (default: low, so any finding fails).
    pub fail_on: Option<Severity>,
    /// Severity overrides per rule id.
    pub severity: BTreeMap<String, Severity>,
    /// Paths (globs on absolute paths) a rule ignores, per rule id.
    pub ignore: BTreeMap<String, Vec<String>>,
    pub wasted_space: WastedConfig,
    /// Report a shell, network tool or package manager the entrypoint needs as a violation
    /// too (`--strict`).
    pub strict: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    check: CheckConfig,
    #[serde(default)]
    probe: crate::probe::ProbeConfig,
    #[serde(default)]
    signatures: SignatureConfig,
    /// `pare serve`'s table, read by its own module.
    #[serde(default)]
    serve: Option<toml::Value>,
}

/// The `[signatures]` table of `pare.toml`: public keys a source must be signed by (any one).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SignatureConfig {
    /// `.pub` files (cosign's PEM), relative to the configuration file's directory.
    pub keys: Vec<std::path::PathBuf>,
}

/// `file`, else `pare.toml` or `.pare.toml` in `dir`: the first that exists, parsed, with its
/// path; `None` when there is none.
fn read_config(
    dir: &Path,
    file: Option<&Path>,
) -> Result<Option<(ConfigFile, std::path::PathBuf)>> {
    let candidates: Vec<std::path::PathBuf> = match file {
        Some(f) => vec![f.to_path_buf()],
        None => ["pare.toml", ".pare.toml"]
            .iter()
            .map(|n| dir.join(n))
            .collect(),
    };
    for p in candidates {
        if p.is_file() {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            let cfg: ConfigFile = toml::from_str(&text)
                .map_err(|e| Error::Usage(format!("{}: {}", p.display(), e.message())))?;
            return Ok(Some((cfg, p)));
        }
    }
    Ok(None)
}

/// The keys of the `[signatures]` table of `pare.toml` / `.pare.toml` in `dir` (or of
/// `file`), as paths resolved against the file's directory; empty when there is none.
pub fn load_signature_keys(dir: &Path, file: Option<&Path>) -> Result<Vec<std::path::PathBuf>> {
    let Some((cfg, p)) = read_config(dir, file)? else {
        return Ok(Vec::new());
    };
    let base = p.parent().unwrap_or(Path::new("."));
    Ok(cfg.signatures.keys.iter().map(|k| base.join(k)).collect())
}

/// The `[probe]` table of `pare.toml` / `.pare.toml` in `dir` (or of `file`), when there is one.
pub fn load_probe_config(
    dir: &Path,
    file: Option<&Path>,
) -> Result<Option<crate::probe::ProbeConfig>> {
    Ok(read_config(dir, file)?.map(|(cfg, _)| cfg.probe))
}

/// The `[serve]` table of `pare.toml` / `.pare.toml` in `dir` (or of `file`), unparsed, with
/// the file's path; `None` when there is no file or no table.
pub fn load_serve_table(
    dir: &Path,
    file: Option<&Path>,
) -> Result<Option<(toml::Value, std::path::PathBuf)>> {
    Ok(read_config(dir, file)?.and_then(|(cfg, p)| cfg.serve.map(|t| (t, p))))
}

impl CheckConfig {
    /// `pare.toml` or `.pare.toml` in `dir`, when there is one.
    pub fn load(dir: &Path) -> Result<Option<(CheckConfig, std::path::PathBuf)>> {
        let Some((cfg, p)) = read_config(dir, None)? else {
            return Ok(None);
        };
        cfg.check
            .validate()
            .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
        Ok(Some((cfg.check, p)))
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let known = |id: &String| rule(id).is_some();
        for id in self
            .allow
            .iter()
            .chain(self.severity.keys())
            .chain(self.ignore.keys())
        {
            if !known(id) {
                return Err(format!(
                    "unknown rule {id:?} (rules: {})",
                    RULES.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for pats in self.ignore.values() {
            for p in pats {
                globset::Glob::new(p).map_err(|e| format!("ignore pattern {p:?}: {e}"))?;
            }
        }
        Ok(())
    }

    pub fn fail_on(&self) -> Severity {
        self.fail_on.unwrap_or(Severity::Low)
    }

    fn severity_of(&self, r: &Rule) -> Severity {
        self.severity.get(r.id).copied().unwrap_or(r.severity)
    }

    fn ignored(&self, rule: &str, path: &str) -> bool {
        self.ignore.get(rule).is_some_and(|pats| {
            pats.iter().any(|p| {
                globset::Glob::new(p)
                    .map(|g| g.compile_matcher().is_match(path))
                    .unwrap_or(false)
            })
        })
    }
}

/// One offending path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    pub path: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub items: Vec<Item>,
}

/// What the rules look at, besides the filesystem.
pub struct Subject<'a> {
    pub fs: &'a Rootfs,
    pub config: &'a serde_json::Value,
    /// The image's /etc/passwd, to map a user name to its uid.
    pub passwd: Option<&'a str>,
    /// Canonical path of the entrypoint's program, when it resolves.
    pub entrypoint: Option<&'a str>,
    /// What the entrypoint needs, as the tracer found it: the programs it runs and the links
    /// on the way to them (paths without a leading slash). A shell, network tool or package
    /// manager among them is a note, not a violation (unless `strict`).
    pub needed: Option<&'a std::collections::BTreeSet<String>>,
}

/// A rule's hit on something the entrypoint needs: reported, not counted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Note {
    pub rule: &'static str,
    pub path: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub image: String,
    pub digest: String,
    pub fail_on: Severity,
    pub passed: bool,
    pub findings: Vec<Finding>,
    /// Hits on what the entrypoint needs (a shell its script runs, the network tool it is):
    /// reported, not failing. `--strict` makes them findings.
    pub notes: Vec<Note>,
    /// Rules evaluated and not fired.
    pub passed_rules: Vec<&'static str>,
    /// Rules skipped by `--allow` / `allow`.
    pub allowed_rules: Vec<String>,
    pub efficiency: f64,
    pub wasted_bytes: u64,
}

fn is_exec_file(n: &Node) -> bool {
    matches!(n.kind, Kind::File { .. }) && n.mode & 0o111 != 0
}

fn owner(n: &Node) -> String {
    format!("{:04o} {}:{}", n.mode, n.uid, n.gid)
}

/// Evaluate every rule not allowed.
pub fn evaluate(
    s: &Subject<'_>,
    cfg: &CheckConfig,
) -> (Vec<Finding>, Vec<&'static str>, Vec<Note>) {
    let mut findings = Vec::new();
    let mut passed = Vec::new();
    let mut notes = Vec::new();
    for r in RULES {
        if cfg.allow.iter().any(|a| a == r.id) {
            continue;
        }
        let found = match r.id {
            "root-user" => root_user(s),
            "setuid-setgid" => setid(s, cfg),
            "shell" => named(s, cfg, r.id, SHELLS, "shell", &mut notes),
            "network-tool" => named(s, cfg, r.id, NETWORK_TOOLS, "network tool", &mut notes),
            "package-manager" => named(
                s,
                cfg,
                r.id,
                PACKAGE_MANAGERS,
                "package manager",
                &mut notes,
            ),
            "world-writable" => world_writable(s, cfg),
            "wasted-space" => wasted(s, cfg),
            _ => None,
        };
        match found {
            Some((message, items)) => findings.push(Finding {
                rule: r.id,
                severity: cfg.severity_of(r),
                message,
                items,
            }),
            None => passed.push(r.id),
        }
    }
    (findings, passed, notes)
}

type Found = Option<(String, Vec<Item>)>;

fn root_user(s: &Subject<'_>) -> Found {
    let user = s
        .config
        .get("config")
        .and_then(|c| c.get("User"))
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let name = user.split(':').next().unwrap_or("");
    let why = if name.is_empty() {
        Some("the config has no User, so the container runs as root".to_string())
    } else if name == "root" || name == "0" {
        Some(format!("User is {user:?}"))
    } else if name.parse::<u32>().is_err() {
        // A name: root if /etc/passwd maps it to uid 0 (or when it cannot be found at all).
        let uid = s.passwd.and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[0] == name)
                    .then(|| f[2].parse::<u32>().ok())
                    .flatten()
            })
        });
        match uid {
            Some(0) => Some(format!(
                "User {user:?} maps to uid 0 in the image's /etc/passwd"
            )),
            None => Some(format!(
                "User {user:?} is not in the image's /etc/passwd: the runtime will refuse to start it, or fall back to root"
            )),
            Some(_) => None,
        }
    } else {
        None
    };
    why.map(|w| {
        (
            format!("the image runs as root: {w}"),
            vec![Item {
                path: "config.User".into(),
                detail: if user.is_empty() {
                    "(empty)".into()
                } else {
                    user.to_string()
                },
            }],
        )
    })
}

fn setid(s: &Subject<'_>, cfg: &CheckConfig) -> Found {
    let items: Vec<Item> =
        s.fs.nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }) && n.mode & 0o6000 != 0)
            .map(|(p, n)| (display(p), n))
            .filter(|(p, _)| !cfg.ignored("setuid-setgid", p))
            .map(|(p, n)| {
                let bits = match (n.mode & 0o4000 != 0, n.mode & 0o2000 != 0) {
                    (true, true) => "setuid+setgid",
                    (true, false) => "setuid",
                    _ => "setgid",
                };
                Item {
                    detail: format!("{bits}, mode {}", owner(n)),
                    path: p,
                }
            })
            .collect();
    (!items.is_empty()).then(|| {
        (
            format!(
                "{} setuid/setgid file{}",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ),
            items,
        )
    })
}

/// Executables (files or links to them) whose name is one of `names`; for shells also every
/// link to busybox (its applets).
fn named(
    s: &Subject<'_>,
    cfg: &CheckConfig,
    rule: &'static str,
    names: &[&str],
    what: &str,
    notes: &mut Vec<Note>,
) -> Found {
    let mut items = Vec::new();
    for (p, n) in &s.fs.nodes {
        let base = p.rsplit('/').next().unwrap_or(p);
        let wanted = names.contains(&base) || (rule == "package-manager" && is_pip(base));
        let target = match &n.kind {
            Kind::Symlink(_) => match s.fs.resolve(p, true) {
                Ok(r) => {
                    s.fs.get(&r.path)
                        .filter(|t| is_exec_file(t))
                        .map(|_| r.path)
                }
                Err(_) => None,
            },
            _ if is_exec_file(n) => Some(p.clone()),
            _ => None,
        };
        let Some(target) = target else { continue };
        let applet =
            rule == "shell" && target.rsplit('/').next() == Some("busybox") && target != *p;
        if !(wanted || applet) {
            continue;
        }
        let path = display(p);
        if cfg.ignored(rule, &path) {
            continue;
        }
        let mut detail = if target != *p {
            format!("link to {}", display(&target))
        } else {
            format!("mode {}", owner(n))
        };
        if s.entrypoint == Some(target.as_str()) {
            detail.push_str("; it is the entrypoint");
        }
        if !cfg.strict
            && s.needed
                .is_some_and(|n| n.contains(p) && n.contains(&target))
        {
            detail.push_str("; needed by the entrypoint");
            notes.push(Note { rule, path, detail });
            continue;
        }
        items.push(Item { path, detail });
    }
    if items.is_empty() {
        return None;
    }
    let entry = items
        .iter()
        .any(|i| i.detail.ends_with("it is the entrypoint"));
    Some((
        format!(
            "{} {what}{} present{}",
            items.len(),
            if items.len() == 1 { " is" } else { "s are" },
            if entry {
                " (the entrypoint is one of them: the rule still applies)"
            } else {
                ""
            }
        ),
        items,
    ))
}

fn is_pip(base: &str) -> bool {
    base.strip_prefix("pip").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

fn world_writable(s: &Subject<'_>, cfg: &CheckConfig) -> Found {
    let items: Vec<Item> =
        s.fs.nodes
            .iter()
            .filter(|(p, _)| !p.is_empty() && *p != "tmp" && !p.starts_with("tmp/"))
            .filter(|(_, n)| match n.kind {
                Kind::Symlink(_) => false,
                Kind::Dir => n.mode & 0o002 != 0 && n.mode & 0o1000 == 0,
                _ => n.mode & 0o002 != 0,
            })
            .map(|(p, n)| (display(p), n))
            .filter(|(p, _)| !cfg.ignored("world-writable", p))
            .map(|(p, n)| Item {
                detail: format!(
                    "{}, mode {}",
                    if n.is_dir() {
                        "directory without the sticky bit"
                    } else {
                        "file"
                    },
                    owner(n)
                ),
                path: p,
            })
            .collect();
    (!items.is_empty()).then(|| {
        (
            format!(
                "{} world-writable path{}",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ),
            items,
        )
    })
}

fn wasted(s: &Subject<'_>, cfg: &CheckConfig) -> Found {
    let e = s.fs.efficiency();
    let w = &cfg.wasted_space;
    let user_size: u64 = s.fs.stats.iter().skip(1).map(|l| l.size).sum();
    let user_pct = if user_size == 0 {
        0.0
    } else {
        e.wasted_bytes as f64 / user_size as f64
    };
    let mut why = Vec::new();
    if e.score < w.lowest_efficiency {
        why.push(format!(
            "efficiency {:.1}% is below {:.1}%",
            e.score * 100.0,
            w.lowest_efficiency * 100.0
        ));
    }
    if let Some(max) = w.highest_wasted_bytes
        && e.wasted_bytes > max
    {
        why.push(format!("{} wasted bytes exceed {max}", e.wasted_bytes));
    }
    if user_pct > w.highest_user_wasted_percent {
        why.push(format!(
            "wasted bytes are {:.1}% of the layers above the base (more than {:.1}%)",
            user_pct * 100.0,
            w.highest_user_wasted_percent * 100.0
        ));
    }
    if why.is_empty() {
        return None;
    }
    let items = e
        .inefficiencies
        .iter()
        .take(20)
        .map(|(p, bytes, count)| Item {
            path: display(p),
            detail: format!("{bytes} bytes over {count} layers"),
        })
        .collect();
    Some((
        format!("{} wasted bytes: {}", e.wasted_bytes, why.join("; ")),
        items,
    ))
}

/// Run the checklist and decide.
pub fn check(s: &Subject<'_>, cfg: &CheckConfig, image: &str, digest: &str) -> CheckReport {
    let (findings, passed_rules, notes) = evaluate(s, cfg);
    let fail_on = cfg.fail_on();
    let e = s.fs.efficiency();
    CheckReport {
        image: image.to_string(),
        digest: digest.to_string(),
        fail_on,
        passed: !findings.iter().any(|f| f.severity >= fail_on),
        findings,
        notes,
        passed_rules,
        allowed_rules: cfg.allow.clone(),
        efficiency: e.score,
        wasted_bytes: e.wasted_bytes,
    }
}

impl CheckReport {
    /// Human text, grouped by rule.
    pub fn text(&self) -> String {
        let mut out = format!("pare check {} ({})\n", self.image, self.digest);
        for f in &self.findings {
            let mark = if f.severity >= self.fail_on {
                "FAIL"
            } else {
                "warn"
            };
            out.push_str(&format!(
                "{mark} {} [{}]: {}\n",
                f.rule, f.severity, f.message
            ));
            for i in f.items.iter().take(50) {
                out.push_str(&format!("       {}  ({})\n", i.path, i.detail));
            }
            if f.items.len() > 50 {
                out.push_str(&format!("       … and {} more\n", f.items.len() - 50));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note {}: {}  ({})\n", n.rule, n.path, n.detail));
        }
        if !self.passed_rules.is_empty() {
            out.push_str(&format!("ok   {}\n", self.passed_rules.join(", ")));
        }
        if !self.allowed_rules.is_empty() {
            out.push_str(&format!(
                "skip {} (allowed)\n",
                self.allowed_rules.join(", ")
            ));
        }
        let failing = self
            .findings
            .iter()
            .filter(|f| f.severity >= self.fail_on)
            .count();
        out.push_str(&if self.passed {
            format!("PASS: no finding at or above {} severity\n", self.fail_on)
        } else {
            format!(
                "FAIL: {failing} rule{} at or above {} severity\n",
                if failing == 1 { "" } else { "s" },
                self.fail_on
            )
        });
        out
    }

    /// GitHub Actions workflow commands: one annotation per finding.
    pub fn github(&self) -> String {
        let esc = |s: &str| {
            s.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        };
        let mut out = String::new();
        for f in &self.findings {
            let cmd = if f.severity >= self.fail_on {
                "error"
            } else {
                "warning"
            };
            let paths: Vec<&str> = f.items.iter().take(10).map(|i| i.path.as_str()).collect();
            out.push_str(&format!(
                "::{cmd} title=pare {}::{}\n",
                f.rule,
                esc(&format!(
                    "{}: {} ({})",
                    self.image,
                    f.message,
                    paths.join(", ")
                ))
            ));
        }
        for n in &self.notes {
            out.push_str(&format!(
                "::notice title=pare {}::{}\n",
                n.rule,
                esc(&format!("{}: {} ({})", self.image, n.path, n.detail))
            ));
        }
        out
    }

    /// SARIF 2.1.0: one run, the rules as the driver's rules, one result per offending path.
    pub fn sarif(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = RULES
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "name": r.id,
                    "shortDescription": {"text": r.title},
                    "fullDescription": {"text": r.help},
                    "help": {"text": r.help},
                    "defaultConfiguration": {"level": r.severity.sarif_level()},
                    "properties": {"tags": ["security", "container"], "severity": r.severity.to_string()},
                })
            })
            .collect();
        let mut results = Vec::new();
        for f in &self.findings {
            let index = RULES.iter().position(|r| r.id == f.rule).unwrap_or(0);
            let level = if f.severity >= self.fail_on {
                f.severity.sarif_level()
            } else {
                "note"
            };
            let items: Vec<Item> = if f.items.is_empty() {
                vec![Item {
                    path: "/".into(),
                    detail: String::new(),
                }]
            } else {
                f.items.clone()
            };
            for i in items {
                let uri = if i.path.starts_with('/') {
                    i.path.trim_start_matches('/').to_string()
                } else {
                    i.path.clone()
                };
                results.push(serde_json::json!({
                    "ruleId": f.rule,
                    "ruleIndex": index,
                    "level": level,
                    "message": {"text": format!("{}: {} ({})", f.message, i.path, i.detail)},
                    "locations": [{
                        "physicalLocation": {"artifactLocation": {"uri": if uri.is_empty() { ".".into() } else { uri }, "uriBaseId": "IMAGEROOT"}},
                        "logicalLocations": [{"fullyQualifiedName": self.image, "kind": "module"}],
                    }],
                    "partialFingerprints": {"pareFinding/v1": format!("{}:{}", f.rule, i.path)},
                }));
            }
        }
        // What the entrypoint needs: results suppressed with the reason.
        for n in &self.notes {
            let index = RULES.iter().position(|r| r.id == n.rule).unwrap_or(0);
            let uri = n.path.trim_start_matches('/').to_string();
            results.push(serde_json::json!({
                "ruleId": n.rule,
                "ruleIndex": index,
                "level": "note",
                "message": {"text": format!("{} ({})", n.path, n.detail)},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": if uri.is_empty() { ".".into() } else { uri }, "uriBaseId": "IMAGEROOT"}},
                    "logicalLocations": [{"fullyQualifiedName": self.image, "kind": "module"}],
                }],
                "suppressions": [{"kind": "external", "justification": "needed by the entrypoint"}],
                "partialFingerprints": {"pareFinding/v1": format!("{}:{}", n.rule, n.path)},
            }));
        }
        serde_json::json!({
            "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "pare",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "originalUriBaseIds": {"IMAGEROOT": {"description": {"text": format!("the root filesystem of {}", self.image)}}},
                "properties": {"image": self.image, "digest": self.digest, "passed": self.passed},
                "results": results,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::tar_of;

    fn image(entries: &[(&str, &str)]) -> Rootfs {
        let mut fs = Rootfs::empty();
        fs.apply_layer(0, &tar_of(entries)[..]).unwrap();
        fs
    }

    fn set_mode(fs: &mut Rootfs, p: &str, mode: u32) {
        fs.nodes.get_mut(p).unwrap().mode = mode;
    }

    #[test]
    fn rules_fire_and_pass() {
        let mut fs = image(&[
            ("bin/busybox", "f:x"),
            ("bin/sh", "l:busybox"),
            ("bin/ls", "l:busybox"),
            ("usr/bin/passwd", "f:x"),
            ("usr/bin/curl", "f:x"),
            ("usr/bin/pip3", "f:x"),
            ("usr/share/doc/sh", "f:not executable"),
            ("var/open", "d"),
            ("tmp", "d"),
        ]);
        for p in [
            "bin/busybox",
            "usr/bin/curl",
            "usr/bin/pip3",
            "usr/bin/passwd",
        ] {
            set_mode(&mut fs, p, 0o755);
        }
        set_mode(&mut fs, "usr/bin/passwd", 0o4755);
        set_mode(&mut fs, "var/open", 0o777);
        set_mode(&mut fs, "tmp", 0o777);
        let config = serde_json::json!({"config": {"User": ""}});
        let s = Subject {
            fs: &fs,
            config: &config,
            passwd: None,
            entrypoint: Some("usr/bin/curl"),
            needed: None,
        };
        let r = check(&s, &CheckConfig::default(), "img", "sha256:x");
        let by: BTreeMap<&str, &Finding> = r.findings.iter().map(|f| (f.rule, f)).collect();
        assert!(!r.passed);
        assert!(by["root-user"].message.contains("no User"));
        assert_eq!(by["setuid-setgid"].items[0].path, "/usr/bin/passwd");
        let shells: Vec<&str> = by["shell"].items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            shells,
            vec!["/bin/busybox", "/bin/ls", "/bin/sh"],
            "applet links count, docs do not"
        );
        assert!(
            by["network-tool"]
                .message
                .contains("the entrypoint is one of them")
        );
        assert_eq!(by["package-manager"].items[0].path, "/usr/bin/pip3");
        let ww: Vec<&str> = by["world-writable"]
            .items
            .iter()
            .map(|i| i.path.as_str())
            .collect();
        assert_eq!(ww, vec!["/var/open"], "/tmp is exempt");
        assert!(r.passed_rules.contains(&"wasted-space"));

        // allow, severity and fail-on.
        let cfg = CheckConfig {
            allow: vec![
                "root-user".into(),
                "setuid-setgid".into(),
                "package-manager".into(),
            ],
            fail_on: Some(Severity::High),
            ..Default::default()
        };
        let r = check(&s, &cfg, "img", "sha256:x");
        assert!(r.passed, "medium findings do not fail at --fail-on high");
        assert!(!r.findings.iter().any(|f| f.rule == "root-user"));
        let cfg = CheckConfig {
            ignore: [("network-tool".to_string(), vec!["/usr/bin/*".to_string()])].into(),
            severity: [("shell".to_string(), Severity::High)].into(),
            ..Default::default()
        };
        let r = check(&s, &cfg, "img", "sha256:x");
        assert!(!r.findings.iter().any(|f| f.rule == "network-tool"));
        assert_eq!(
            r.findings
                .iter()
                .find(|f| f.rule == "shell")
                .unwrap()
                .severity,
            Severity::High
        );
    }

    #[test]
    fn user_names_map_through_passwd() {
        let fs = image(&[("x", "f:")]);
        let passwd =
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n";
        for (user, root) in [
            ("toor", true),
            ("app", false),
            ("1000:1000", false),
            ("0:0", true),
            ("ghost", true),
        ] {
            let config = serde_json::json!({"config": {"User": user}});
            let s = Subject {
                fs: &fs,
                config: &config,
                passwd: Some(passwd),
                entrypoint: None,
                needed: None,
            };
            assert_eq!(root_user(&s).is_some(), root, "{user}");
        }
    }

    #[test]
    fn config_file_parses_and_rejects_unknown_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".pare.toml"),
            "[check]\nallow = [\"package-manager\"]\nfail-on = \"medium\"\n[check.severity]\nshell = \"high\"\n[check.ignore]\nnetwork-tool = [\"/usr/bin/curl\"]\n[check.wasted-space]\nlowest-efficiency = 0.95\n",
        )
        .unwrap();
        let (c, _) = CheckConfig::load(d.path()).unwrap().unwrap();
        assert_eq!(c.allow, vec!["package-manager"]);
        assert_eq!(c.fail_on(), Severity::Medium);
        assert_eq!(c.wasted_space.lowest_efficiency, 0.95);
        assert_eq!(c.wasted_space.highest_user_wasted_percent, 0.1);
        std::fs::write(
            d.path().join("pare.toml"),
            "[check]\nallow = [\"no-such-rule\"]\n",
        )
        .unwrap();
        assert!(
            CheckConfig::load(d.path())
                .unwrap_err()
                .to_string()
                .contains("unknown rule")
        );
    }
}

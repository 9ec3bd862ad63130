//! `pare probe`: prove an image works by running its entrypoint, with each probe's arguments as
//! its Cmd, in a rootless sandbox ([`sandbox`]) built from pare's merged view of the image
//! ([`materialize`]); with an original to compare against, a probe passes when both give the
//! same exit code and output.

pub mod cgroup;
pub mod idmap;
pub mod learn;
pub mod materialize;
pub mod mounts;
pub mod profile;
pub mod rootcopy;
pub mod sandbox;
pub mod seccomp;

use crate::error::{Error, Result};
use crate::rootfs::Rootfs;
use crate::trace::{Contents, LayerContents, RunConfig};

pub use sandbox::{HttpAnswer, HttpProbe, Limits, Outcome};

/// The `[probe]` table of `pare.toml`: the probes `pare probe` and `pare harden` run when no
/// probe is given on the command line.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Each one's arguments, as `--probe` takes them.
    pub args: Vec<String>,
    /// `PORT/PATH`, as `--http-probe` takes them.
    pub http: Vec<String>,
    /// Seconds per probe.
    pub timeout: Option<u64>,
}

impl ProbeConfig {
    pub fn probes(&self) -> Result<Vec<Probe>> {
        let mut out = self
            .args
            .iter()
            .map(|a| Probe::parse(a))
            .collect::<Result<Vec<_>>>()?;
        for h in &self.http {
            out.push(Probe::http(h)?);
        }
        Ok(out)
    }
}

/// One probe: the arguments given as Cmd (`None`: the image's own Cmd).
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub args: Option<Vec<String>>,
    /// stdin bytes.
    pub stdin: Vec<u8>,
    /// Run the entrypoint as a server and GET this from it (its output is not compared).
    pub http: Option<HttpProbe>,
    /// Record the paths the program uses (`--learn`).
    pub learn: bool,
    /// With `learn`: record every system call too (`--seccomp-profile`).
    pub syscalls: bool,
    /// `--seccomp FILE`: run the program under this profile too.
    pub profile: Option<std::sync::Arc<profile::Program>>,
}

impl Probe {
    /// `ARGS` as a shell would split it (quotes and backslashes; no expansion).
    pub fn parse(args: &str) -> Result<Probe> {
        Ok(Probe {
            args: Some(split(args)?),
            stdin: Vec::new(),
            ..Default::default()
        })
    }

    /// `--http-probe PORT/PATH`: the image's own Cmd, run as a server.
    pub fn http(spec: &str) -> Result<Probe> {
        let http = HttpProbe::parse(spec).ok_or_else(|| {
            Error::Usage(format!(
                "--http-probe {spec:?}: expected PORT/PATH, e.g. 80/ or 8080/healthz"
            ))
        })?;
        Ok(Probe {
            args: None,
            http: Some(http),
            ..Default::default()
        })
    }

    /// `--learn-tcp PORT`: the image's own Cmd, run as a server until PORT listens.
    pub fn tcp(spec: &str) -> Result<Probe> {
        let port = spec.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::Usage(format!(
                "--learn-tcp {spec:?}: expected a port number, e.g. 6379"
            ))
        })?;
        Ok(Probe {
            args: None,
            http: Some(HttpProbe {
                port,
                path: String::new(),
                listen_only: true,
            }),
            ..Default::default()
        })
    }

    pub fn describe(&self) -> String {
        let what = match &self.args {
            Some(a) => a.join(" "),
            None => "(the image's Cmd)".into(),
        };
        match &self.http {
            Some(h) if h.listen_only => format!("{what}, until port {} listens", h.port),
            Some(h) => format!("{what}, GET http://localhost:{}{}", h.port, h.path),
            None => what,
        }
    }
}

/// Words as one `ARGS` string that [`split`] reads back: plain words as they are, others in
/// single quotes (`'` as `'\''`).
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split a probe's `ARGS` like a shell (single and double quotes, backslash escapes).
pub fn split(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Error::Usage(format!("probe {s:?}: unterminated '"))),
                    }
                }
            }
            '"' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => {
                                return Err(Error::Usage(format!("probe {s:?}: unterminated \"")));
                            }
                        },
                        Some(c) => cur.push(c),
                        None => return Err(Error::Usage(format!("probe {s:?}: unterminated \""))),
                    }
                }
            }
            '\\' => {
                any = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                any = true;
                cur.push(c);
            }
        }
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// An image ready to run probes in: its config, its run user, and its filesystem.
pub struct Prepared<'a> {
    pub run: RunConfig,
    pub uid: u32,
    pub gid: u32,
    /// A line saying what the sandbox cannot reproduce here (ownership when not root).
    pub note: Option<String>,
    pub mapping: sandbox::Mapping,
    fs: &'a Rootfs,
    contents: LayerContents,
}

impl<'a> Prepared<'a> {
    /// `contents` reads `fs`'s files (a fresh one serves them from the merge's captures).
    pub fn new(
        fs: &'a Rootfs,
        mut contents: LayerContents,
        config: &serde_json::Value,
    ) -> Result<Self> {
        runnable_here(config)?;
        let run = RunConfig::from_config(config);
        let user = config
            .get("config")
            .and_then(|c| c.get("User"))
            .and_then(|u| u.as_str())
            .unwrap_or("");
        let (uid, gid) = run_user(fs, &mut contents, user)?;
        let mapping = sandbox::Mapping::choose(uid, gid);
        let mut note = mapping.note();
        if mapping.faithful() {
            let outside = fs
                .nodes
                .values()
                .filter(|n| {
                    !mapping.maps(n.uid.min(u32::MAX as u64) as u32, false)
                        || !mapping.maps(n.gid.min(u32::MAX as u64) as u32, true)
                })
                .count();
            if outside > 0 {
                note = Some(format!(
                    "{outside} entries are owned by ids beyond the sandbox's id range: they are owned by root in the sandbox"
                ));
            }
        }
        Ok(Prepared {
            run,
            uid,
            gid,
            note,
            mapping,
            fs,
            contents,
        })
    }

    /// The argv a probe runs.
    pub fn argv(&self, probe: &Probe) -> Vec<String> {
        let mut argv = self.run.entrypoint.clone();
        argv.extend(probe.args.clone().unwrap_or_else(|| self.run.cmd.clone()));
        argv
    }

    /// Run one probe in a fresh copy of the filesystem.
    pub fn run(&mut self, probe: &Probe, limits: &Limits) -> Result<Outcome> {
        let argv = self.argv(probe);
        if argv.is_empty() {
            return Err(Error::Usage(
                "the image has no Entrypoint or Cmd, and the probe gives no arguments".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("pare-probe-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(|e| Error::io(&root, e))?;
        // Reachable by the run user, whatever pare's umask.
        std::fs::set_permissions(
            dir.path(),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .map_err(|e| Error::io(dir.path(), e))?;
        // Owned by whoever is root inside (root's range, else pare's own user), so the
        // sandbox can copy it; the image's owners are set on the copy.
        let owner = self.mapping.copy_owner();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&root, Some(u), Some(g)).map_err(|e| Error::io(&root, e))?;
        }
        let made = materialize::materialize(self.fs, &mut self.contents, &root, owner)?;
        let owners = if self.mapping.faithful() {
            made.owners
                .into_iter()
                .filter(|(_, u, g)| self.mapping.maps(*u, false) && self.mapping.maps(*g, true))
                .collect()
        } else {
            Vec::new()
        };
        let spec = sandbox::Spec {
            root: root.clone(),
            argv,
            env: self.run.env.clone(),
            cwd: if self.run.workdir.is_empty() {
                "/".into()
            } else {
                self.run.workdir.clone()
            },
            uid: self.uid,
            gid: self.gid,
            limits: limits.clone(),
            http: probe.http.clone(),
            http_out: probe.http.as_ref().map(|_| dir.path().join("http-answer")),
            learn_out: probe.learn.then(|| dir.path().join("observed")),
            learn_syscalls: probe.learn && probe.syscalls,
            profile: probe.profile.as_deref().cloned(),
            mapping: self.mapping,
            owners,
            // Each file takes whole pages in the tmpfs.
            size: made
                .bytes
                .saturating_add(made.files as u64 * 4096)
                .saturating_add(limits.scratch),
            inodes: made.entries as u64 + 262_144,
        };
        let outcome = sandbox::run(&spec, &probe.stdin).map_err(|e| Error::Sandbox(e.to_string()));
        // The copy has read-only directories: make them removable.
        let _ = make_removable(&root);
        outcome
    }
}

/// An image of another CPU architecture runs only where the kernel hands its programs to an
/// emulator (binfmt_misc, e.g. Debian's qemu-user-static); else one clear error.
fn runnable_here(config: &serde_json::Value) -> Result<()> {
    let arch = config
        .get("architecture")
        .and_then(|a| a.as_str())
        .unwrap_or("amd64");
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    if arch == host {
        return Ok(());
    }
    let qemu = match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        other => other,
    };
    let handler = std::path::Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    match std::fs::read_to_string(&handler) {
        Ok(t) if t.starts_with("enabled") => Ok(()),
        _ => Err(Error::Sandbox(format!(
            "the image is for {arch} and this machine runs {host} with no emulator registered for it ({} missing): install qemu-user-static (binfmt_misc) to probe it here",
            handler.display()
        ))),
    }
}

fn make_removable(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(root)?.flatten() {
        let p = e.path();
        if let Ok(m) = std::fs::symlink_metadata(&p)
            && m.is_dir()
        {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
            let _ = make_removable(&p);
        }
    }
    Ok(())
}

/// The image's `User` as uid and gid, through its /etc/passwd and /etc/group as a container
/// runtime reads them (a name must be there; a number need not; no group: the user's, else 0).
fn run_user(fs: &Rootfs, contents: &mut LayerContents, user: &str) -> Result<(u32, u32)> {
    let read = |contents: &mut LayerContents, p: &str| -> Option<String> {
        let r = fs.resolve(p, true).ok()?;
        if !matches!(fs.get(&r.path)?.kind, crate::rootfs::Kind::File { .. }) {
            return None;
        }
        Some(String::from_utf8_lossy(&contents.read(fs, &r.path, 4 << 20).ok()?).into_owned())
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read(contents, "/etc/passwd").unwrap_or_default();
    let entry = |name_or_id: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && (f[0] == name_or_id || f[2] == name_or_id))
                .then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        })
    };
    let (uid, user_gid) = if u.is_empty() {
        (0, Some(0))
    } else if let Ok(n) = u.parse::<u32>() {
        (n, entry(u).and_then(|e| e.1))
    } else {
        match entry(u) {
            Some((Some(uid), gid)) => (uid, gid),
            _ => {
                return Err(Error::Usage(format!(
                    "the image's User {u:?} is not in its /etc/passwd"
                )));
            }
        }
    };
    let gid = match g {
        None => user_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = read(contents, "/etc/group").unwrap_or_default();
                group
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                    })
                    .ok_or_else(|| {
                        Error::Usage(format!("the image's group {g:?} is not in its /etc/group"))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// One probe's result, and the original's when compared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    pub argv: Vec<String>,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Outcome>,
    /// `--learn` with an original: paths the original's run used that this image lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<String>,
}

/// Paths the sandbox provides whatever the image holds.
pub fn sandbox_path(p: &str) -> bool {
    ["/proc", "/dev", "/sys", "/tmp"]
        .iter()
        .any(|m| p == *m || p.strip_prefix(m).is_some_and(|r| r.starts_with('/')))
}

/// What `pare probe` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    pub passed: bool,
    pub probes: Vec<ProbeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `--learn` with `--seccomp-profile`: the system calls the programs made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<String>,
}

impl ProbeReport {
    /// One line per probe; both outputs of a failed one.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(n) = &self.note {
            out.push_str(&format!("note: {n}\n"));
        }
        if let Some(b) = self
            .probes
            .iter()
            .map(|p| &p.outcome.bounded_by)
            .find(|b| b.starts_with("rlimits only"))
        {
            out.push_str(&format!("note: memory and processes bounded by {b}\n"));
        }
        for p in &self.probes {
            let argv = p.argv.join(" ");
            let watched = p
                .original
                .as_ref()
                .and_then(|o| o.observed.as_ref())
                .or(p.outcome.observed.as_ref());
            if let Some(obs) = watched {
                let absent = obs.iter().filter(|(_, f)| !f).count();
                out.push_str(&format!(
                    "LEARN {argv}: {} paths used ({absent} looked up and absent){}\n",
                    obs.len(),
                    if p.original.is_some() {
                        format!("; {} missing in {}", p.missed.len(), self.image)
                    } else {
                        String::new()
                    }
                ));
                for m in &p.missed {
                    out.push_str(&format!("  missed: {m}\n"));
                }
            }
            if p.passed {
                out.push_str(&format!(
                    "PASS  {argv}  (exit {}, {:.2}s)\n",
                    code(&p.outcome),
                    p.outcome.seconds
                ));
                continue;
            }
            out.push_str(&format!("FAIL  {argv}: {}\n", p.reason));
            let show = |out: &mut String, who: &str, o: &Outcome| {
                out.push_str(&format!("  {who}: exit {}\n", code(o)));
                for (name, b) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
                    let t = String::from_utf8_lossy(b);
                    let t: String = t.chars().take(2000).collect();
                    if !t.trim().is_empty() {
                        out.push_str(&format!("  {who} {name}:\n"));
                        for l in t.lines().take(20) {
                            out.push_str(&format!("    | {l}\n"));
                        }
                    }
                }
            };
            show(&mut out, "image", &p.outcome);
            if let Some(o) = &p.original {
                show(&mut out, "original", o);
            }
        }
        let failed = self.probes.iter().filter(|p| !p.passed).count();
        out.push_str(&format!(
            "{}: {} of {} probes passed\n",
            self.image,
            self.probes.len() - failed,
            self.probes.len()
        ));
        out
    }
}

/// Run every probe in `image` (and in `original`, to compare); no probe: the image's own Cmd.
pub fn run_all(
    image: &mut Prepared<'_>,
    mut original: Option<&mut Prepared<'_>>,
    probes: &[Probe],
    expect: Option<&regex::bytes::Regex>,
    limits: &Limits,
) -> Result<Vec<ProbeResult>> {
    let own_cmd = [Probe::default()];
    let probes = if probes.is_empty() {
        &own_cmd[..]
    } else {
        probes
    };
    let mut results = Vec::new();
    for probe in probes {
        // With an original, it is the one watched (what the image lacks is the finding).
        let watched_here = probe.learn && original.is_none();
        let ours = image.run(
            &Probe {
                learn: watched_here,
                ..probe.clone()
            },
            limits,
        )?;
        let theirs = match original.as_deref_mut() {
            Some(o) => Some(o.run(probe, limits)?),
            None => None,
        };
        let verdict = judge(&ours, theirs.as_ref(), expect);
        let missed = theirs
            .as_ref()
            .and_then(|t| t.observed.as_ref())
            .map(|obs| {
                obs.iter()
                    .filter(|(p, found)| *found && !sandbox_path(p))
                    .filter(|(p, _)| image.fs.resolve(p, true).is_err())
                    .map(|(p, _)| p.clone())
                    .collect()
            })
            .unwrap_or_default();
        results.push(ProbeResult {
            argv: image.argv(probe),
            passed: verdict.is_ok(),
            reason: verdict.err().unwrap_or_default(),
            outcome: ours,
            original: theirs,
            missed,
        });
    }
    Ok(results)
}

/// Whether a probe passed: alone, it must exit 0 (and match `expect`); against an original,
/// the exit code, stdout and stderr must be the same. The reason when it did not.
pub fn judge(
    ours: &Outcome,
    original: Option<&Outcome>,
    expect: Option<&regex::bytes::Regex>,
) -> std::result::Result<(), String> {
    if ours.timed_out {
        return Err("timed out".into());
    }
    // A server probe: its answer counts, not its logs.
    if let Some(h) = &ours.http {
        match original {
            Some(o) => match &o.http {
                None => return Err("the original gave no HTTP answer".into()),
                Some(oh) if oh.status != h.status => {
                    return Err(format!(
                        "HTTP {} here, {} in the original",
                        h.status, oh.status
                    ));
                }
                Some(oh) if oh.body != h.body => {
                    return Err("the HTTP body differs from the original's".into());
                }
                Some(_) => {}
            },
            None if !(200..300).contains(&h.status) => {
                return Err(format!("HTTP {}", h.status));
            }
            None => {}
        }
        if let Some(re) = expect
            && !re.is_match(&h.body)
        {
            return Err(format!("the HTTP body does not match {:?}", re.as_str()));
        }
        return Ok(());
    }
    if let Some(o) = original {
        if o.timed_out {
            return Err("the original timed out".into());
        }
        if o.exit_code != ours.exit_code {
            return Err(format!(
                "exit code {} here, {} in the original",
                code(ours),
                code(o)
            ));
        }
        if o.stdout != ours.stdout {
            return Err("stdout differs from the original's".into());
        }
        if o.stderr != ours.stderr {
            return Err("stderr differs from the original's".into());
        }
    } else if ours.exit_code != Some(0) {
        return Err(format!("exit code {}", code(ours)));
    }
    if let Some(re) = expect
        && !re.is_match(&ours.stdout)
    {
        return Err(format!("stdout does not match {:?}", re.as_str()));
    }
    Ok(())
}

fn code(o: &Outcome) -> String {
    o.exit_code.map_or("none".into(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_architecture_needs_an_emulator() {
        let host = serde_json::json!({});
        assert!(runnable_here(&host).is_ok() || std::env::consts::ARCH != "x86_64");
        let other = serde_json::json!({"architecture": "pare-test-arch"});
        let e = runnable_here(&other).unwrap_err().to_string();
        assert!(
            e.contains("pare-test-arch") && e.contains("qemu-user-static"),
            "{e}"
        );
    }

    #[test]
    fn probe_arguments_split_like_a_shell() {
        assert_eq!(split("-n '1 + 1'").unwrap(), vec!["-n", "1 + 1"]);
        assert_eq!(
            split(r#"a "b \"c\"" d\ e ''"#).unwrap(),
            vec!["a", "b \"c\"", "d e", ""]
        );
        assert!(split("'open").is_err());
        assert!(split("").unwrap().is_empty());
        // join is split's inverse, quotes included.
        for words in [
            vec!["-n", "1 + 1"],
            vec!["it's", "", "$HOME", "a\\b", "plain-word=1"],
            vec![],
        ] {
            let words: Vec<String> = words.into_iter().map(String::from).collect();
            assert_eq!(split(&join(&words)).unwrap(), words, "{}", join(&words));
        }
        assert_eq!(join(&["-c".into(), "x.conf".into()]), "-c x.conf");
    }

    #[test]
    fn judging_alone_and_against_an_original() {
        let ok = Outcome {
            exit_code: Some(0),
            stdout: b"2\n".to_vec(),
            ..Default::default()
        };
        assert!(judge(&ok, None, None).is_ok());
        let re = regex::bytes::Regex::new("^2").unwrap();
        assert!(judge(&ok, None, Some(&re)).is_ok());
        let re = regex::bytes::Regex::new("^3").unwrap();
        assert!(judge(&ok, None, Some(&re)).is_err());
        let broken = Outcome {
            exit_code: Some(127),
            stderr: b"error while loading shared libraries".to_vec(),
            ..Default::default()
        };
        assert!(judge(&broken, None, None).is_err());
        assert!(
            judge(&broken, Some(&ok), None)
                .unwrap_err()
                .contains("exit code 127")
        );
        let other = Outcome {
            stdout: b"3\n".to_vec(),
            ..ok.clone()
        };
        assert!(
            judge(&other, Some(&ok), None)
                .unwrap_err()
                .contains("stdout")
        );
    }
}

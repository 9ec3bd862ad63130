//! The harden plan: every entry of the new layer and why it is there. The traced closure, the
//! data files a program expects (CA bundle, zoneinfo, os-release, libc's config files), the
//! WorkingDir, `/tmp`, `/etc/passwd` and `/etc/group` for the run user, and the user's home.
//! setuid/setgid bits are cleared here and file capabilities dropped (and both reported).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::rootfs::{Kind, ResolveError, Rootfs, display};
use crate::trace::{Contents, Evidence, RunConfig, Trace};

pub const NONROOT_UID: u32 = 65532;
const MAX_PASSWD_BYTES: u64 = 4 << 20;

/// Data files kept when present, with why. (What a program reads (CA bundles, time zones,
/// libc's configuration) is the tracer's business: kept with evidence, not by default.)
const DATA_FILES: &[(&str, &str)] = &[
    ("/etc/os-release", "OS identification (scanners read it)"),
    (
        "/usr/lib/os-release",
        "OS identification (scanners read it)",
    ),
    // Trivy identifies Debian by this file, Ubuntu by lsb-release, not by os-release.
    ("/etc/debian_version", "OS identification (Trivy reads it)"),
    ("/etc/lsb-release", "OS identification (Trivy reads it)"),
    (
        "/etc/alpine-release",
        "OS identification (scanners read it)",
    ),
    (
        "/etc/redhat-release",
        "OS identification (scanners read it)",
    ),
    (
        "/etc/system-release",
        "OS identification (scanners read it)",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    Symlink(String),
    /// Bytes of this canonical image path.
    Image(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub reason: String,
    /// Every reason the tracer found (empty for what the plan adds itself).
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
    /// "image", "default" or "--user".
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct SetIdCleared {
    pub path: String,
    pub mode_before: u32,
    pub mode_after: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Path (no leading slash) → entry; BTreeMap order puts parents before children.
    pub entries: BTreeMap<String, Entry>,
    pub user: Option<RunUser>,
    pub setid_cleared: Vec<SetIdCleared>,
    pub capabilities_dropped: Vec<String>,
    pub warnings: Vec<String>,
    /// Packages (index in the trace's database) that keep a file, with those files.
    pub packages: BTreeMap<usize, Vec<String>>,
}

impl Plan {
    pub fn user(&self) -> &RunUser {
        self.user.as_ref().expect("plan has a user")
    }

    /// Canonical image paths whose bytes the layer needs.
    pub fn image_files(&self) -> Vec<String> {
        self.entries
            .values()
            .filter_map(|e| match &e.content {
                Content::Image(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.content, Content::Image(_) | Content::Bytes(_)))
            .count()
    }
}

/// One passwd line.
#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    line: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                line: l.to_string(),
            })
        })
        .collect()
}

/// group name → (gid, line).
fn parse_group(text: &str) -> Vec<(String, u32, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?, l.to_string()))
        })
        .collect()
}

/// `--user UID[:GID]`.
pub fn parse_user_flag(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::Usage(format!("--user {s:?}: expected a numeric UID[:GID]"));
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (
            u.parse::<u32>().map_err(|_| bad())?,
            g.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let u = s.parse::<u32>().map_err(|_| bad())?;
            (u, u)
        }
    };
    if u == 0 {
        return Err(Error::Usage(
            "--user 0: pare does not produce images that run as root".into(),
        ));
    }
    if g == 0 {
        return Err(Error::Usage(
            "--user with GID 0 (root group) is refused".into(),
        ));
    }
    Ok((u, g))
}

pub struct PlanInput<'a> {
    pub fs: &'a Rootfs,
    pub trace: &'a Trace,
    pub config: &'a serde_json::Value,
    pub user_flag: Option<(u32, u32)>,
}

struct Builder<'a, C: Contents> {
    fs: &'a Rootfs,
    contents: &'a mut C,
    plan: Plan,
}

impl<C: Contents> Builder<'_, C> {
    /// Add an entry unless one is there.
    fn add(&mut self, path: &str, e: Entry) {
        self.plan.entries.entry(path.to_string()).or_insert(e);
    }

    fn add_from_image(&mut self, path: &str, reason: &str) {
        let Some(n) = self.fs.get(path) else { return };
        let content = match &n.kind {
            Kind::File { .. } => Content::Image(path.to_string()),
            Kind::Dir => Content::Dir,
            Kind::Symlink(t) => Content::Symlink(t.clone()),
            Kind::Device | Kind::Fifo => {
                self.plan.warnings.push(format!(
                    "{}: device or fifo not kept (the runtime provides /dev)",
                    display(path)
                ));
                return;
            }
        };
        if n.capability {
            self.plan.capabilities_dropped.push(display(path));
        }
        let mode = if matches!(n.kind, Kind::Symlink(_)) {
            0o777
        } else {
            n.mode & 0o7777
        };
        self.add(
            path,
            Entry {
                content,
                mode,
                uid: n.uid,
                gid: n.gid,
                size: n.size(),
                reason: reason.to_string(),
                evidence: Vec::new(),
            },
        );
    }

    /// A path the tracer keeps, with its evidence.
    fn add_traced(&mut self, path: &str, ev: &[Evidence]) {
        let reason = ev.first().map(|e| e.detail.clone()).unwrap_or_default();
        self.add_from_image(path, &reason);
        if let Some(e) = self.plan.entries.get_mut(path)
            && e.evidence.is_empty()
        {
            e.evidence = ev.to_vec();
        }
    }

    /// Keep a path (resolving symlinks inside the image, keeping each) when it exists.
    fn keep_if_present(&mut self, path: &str, reason: &str) -> Result<Option<String>> {
        match self.fs.resolve(path, true) {
            Ok(r) => {
                for l in &r.symlinks {
                    self.add_from_image(l, &format!("symlink on the way to {}", display(&r.path)));
                }
                self.add_from_image(&r.path, reason);
                Ok(Some(r.path))
            }
            Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => Ok(None),
            Err(e) => {
                // Optional data files: a bad link there is worth a warning, not a failure.
                self.plan
                    .warnings
                    .push(format!("{}; not kept", e.into_error(path)));
                Ok(None)
            }
        }
    }

    /// Where a directory that the source lacks should be made: under its parent as resolved
    /// inside the image (keeping the symlinks on the way), so a link like /var/run stays a
    /// link. `None` (with a warning) when the parent cannot be resolved.
    fn new_dir_path(&mut self, path: &str, what: &str) -> Option<String> {
        let norm = crate::rootfs::normalize(path).filter(|p| !p.is_empty())?;
        let (parent, base) = match norm.rfind('/') {
            Some(i) => (&norm[..i], &norm[i + 1..]),
            None => ("", norm.as_str()),
        };
        match self.fs.resolve(parent, true) {
            Ok(r) if self.fs.get(&r.path).is_some_and(|n| n.is_dir()) => {
                for l in &r.symlinks {
                    self.add_from_image(l, &format!("symlink on the way to the {what}"));
                }
                Some(if r.path.is_empty() {
                    base.to_string()
                } else {
                    format!("{}/{base}", r.path)
                })
            }
            Err(ResolveError::NotFound) => Some(norm.clone()),
            _ => {
                self.plan.warnings.push(format!(
                    "the {what} {path} cannot be made: its parent is not a directory"
                ));
                None
            }
        }
    }

    fn text(&mut self, path: &str) -> Result<Option<String>> {
        match self.fs.resolve(path, true) {
            Ok(r)
                if matches!(
                    self.fs.get(&r.path).map(|n| &n.kind),
                    Some(Kind::File { .. })
                ) =>
            {
                let b = self.contents.read(self.fs, &r.path, MAX_PASSWD_BYTES)?;
                Ok(Some(String::from_utf8_lossy(&b).into_owned()))
            }
            Ok(_) | Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into_error(path)),
        }
    }
}

/// Build the plan.
pub fn build<C: Contents>(input: PlanInput<'_>, contents: &mut C) -> Result<Plan> {
    let PlanInput {
        fs,
        trace,
        config,
        user_flag,
    } = input;
    let mut b = Builder {
        fs,
        contents,
        plan: Plan::default(),
    };
    b.plan.warnings.extend(trace.warnings.iter().cloned());

    for (p, ev) in &trace.files {
        b.add_traced(p, ev);
        if fs.get(p).is_some_and(|n| n.is_dir())
            && ev.iter().any(|e| e.kind == crate::trace::Why::KeepFlag)
        {
            // `--keep DIR`: the whole subtree.
            let sub: Vec<String> = fs.subtree(p).map(|(k, _)| k.clone()).collect();
            for s in sub {
                b.add_traced(&s, ev);
            }
        }
    }
    for (p, ev) in &trace.symlinks {
        b.add_traced(p, ev);
    }
    for (p, why) in DATA_FILES {
        b.keep_if_present(p, why)?;
    }

    // The run user.
    let run = RunConfig::from_config(config);
    let image_user = config
        .get("config")
        .and_then(|c| c.get("User"))
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_string();
    let both: Vec<String> = ["/etc/passwd", "/etc/group"]
        .iter()
        .filter_map(|p| fs.resolve(p, true).ok().map(|r| r.path))
        .collect();
    b.contents.prefetch(fs, &both)?;
    let passwd_text = b.text("/etc/passwd")?.unwrap_or_default();
    let group_text = b.text("/etc/group")?.unwrap_or_default();
    let passwd = parse_passwd(&passwd_text);
    let groups = parse_group(&group_text);
    let user = choose_user(
        &image_user,
        user_flag,
        &passwd,
        &groups,
        &mut b.plan.warnings,
    );

    // /etc/passwd and /etc/group: root, nobody, and the run user.
    // The run user's line: its own gecos and shell when the image has it, the chosen gid.
    let (gecos, shell) = passwd
        .iter()
        .find(|p| p.uid == user.uid && p.name == user.name)
        .and_then(|p| {
            let f: Vec<&str> = p.line.split(':').collect();
            Some((f.get(4)?.to_string(), f.get(6)?.to_string()))
        })
        .unwrap_or_else(|| (user.name.clone(), "/sbin/nologin".into()));
    let user_line = format!(
        "{}:x:{}:{}:{gecos}:{}:{shell}",
        user.name, user.uid, user.gid, user.home
    );
    let mut pw = String::from(
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    );
    if user.uid != 65534 {
        pw.push_str(&user_line);
        pw.push('\n');
    }
    let group_name = groups
        .iter()
        .find(|g| g.1 == user.gid)
        .map(|g| g.0.clone())
        .unwrap_or_else(|| {
            if user.gid == user.uid {
                user.name.clone()
            } else {
                format!("g{}", user.gid)
            }
        });
    let mut gr = String::from("root:x:0:\nnobody:x:65534:\n");
    if user.gid != 65534 && user.gid != 0 {
        gr.push_str(&format!("{group_name}:x:{}:\n", user.gid));
    }
    let generated = |bytes: Vec<u8>, reason: &str| Entry {
        size: bytes.len() as u64,
        content: Content::Bytes(bytes),
        mode: 0o644,
        uid: 0,
        gid: 0,
        reason: reason.into(),
        evidence: Vec::new(),
    };
    // These replace whatever the image had at the same path.
    for link in ["etc/passwd", "etc/group"] {
        if matches!(fs.get(link).map(|n| &n.kind), Some(Kind::Symlink(_))) {
            b.plan.warnings.push(format!(
                "/{link} was a symlink in the source; replaced by a plain file"
            ));
        }
    }
    b.plan.entries.insert(
        "etc/passwd".into(),
        generated(pw.into_bytes(), "users: root, nobody and the run user"),
    );
    b.plan.entries.insert(
        "etc/group".into(),
        generated(
            gr.into_bytes(),
            "groups: root, nobody and the run user's group",
        ),
    );
    // Scratch space: /tmp always, /var/tmp (FHS) when the source has one.
    let var_tmp = fs.get("var/tmp").is_some_and(|n| n.is_dir());
    for dir in std::iter::once("tmp").chain(var_tmp.then_some("var/tmp")) {
        b.plan.entries.insert(
            dir.into(),
            Entry {
                content: Content::Dir,
                mode: 0o1777,
                uid: 0,
                gid: 0,
                size: 0,
                reason: "scratch space (mode 1777)".into(),
                evidence: Vec::new(),
            },
        );
    }
    // Directories the image gives its own non-root user (a data or log directory it writes
    // to): kept, as directories.
    if user.source == "image" && user.uid != 0 {
        let owned: Vec<String> = fs
            .nodes
            .iter()
            .filter(|(p, n)| !p.is_empty() && n.is_dir() && n.uid == u64::from(user.uid))
            .map(|(p, _)| p.clone())
            .take(10_000)
            .collect();
        for p in owned {
            b.add_from_image(&p, "a directory owned by the run user (it writes there)");
        }
    }
    // Home directory of the run user, owned by it, made only when the source has none: an
    // existing directory (say /usr/sbin for `daemon`) is never handed to the run user.
    if fs.resolve(&user.home, true).is_err()
        && let Some(home) = b.new_dir_path(&user.home, "home directory")
    {
        b.add(
            &home,
            Entry {
                content: Content::Dir,
                mode: 0o700,
                uid: user.uid as u64,
                gid: user.gid as u64,
                size: 0,
                reason: "home of the run user".into(),
                evidence: Vec::new(),
            },
        );
    }
    // WorkingDir: kept as a directory (with its symlinks), or created.
    if !run.workdir.is_empty() && run.workdir != "/" {
        match fs.resolve(&run.workdir, true) {
            Ok(r) if fs.get(&r.path).is_some_and(|n| n.is_dir()) => {
                for l in &r.symlinks {
                    b.add_from_image(l, "symlink on the way to the WorkingDir");
                }
                b.add_from_image(&r.path, "WorkingDir");
            }
            Ok(_) | Err(ResolveError::NotFound) => {
                if let Some(w) = b.new_dir_path(&run.workdir, "WorkingDir") {
                    b.add(
                        &w,
                        Entry {
                            content: Content::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            size: 0,
                            reason: "WorkingDir".into(),
                            evidence: Vec::new(),
                        },
                    );
                }
            }
            Err(e) => return Err(e.into_error(&run.workdir)),
        }
    }

    // ld.so finds ld.so.conf directories only through /etc/ld.so.cache: write one that covers
    // the libraries found there.
    if matches!(trace.libc, Some(crate::trace::Libc::Glibc { .. })) && !trace.ldconf_libs.is_empty()
    {
        let f = &trace.objects[trace.roots[0]].facts;
        match crate::ldcache::CacheArch::from_elf(f.machine, f.is_64, f.little_endian, f.flags) {
            Some(arch) => {
                let entries: Vec<crate::ldcache::CacheEntry> = trace
                    .ldconf_libs
                    .iter()
                    .map(|(soname, path)| crate::ldcache::CacheEntry { soname: soname.clone(), path: path.clone() })
                    .collect();
                let bytes = crate::ldcache::build_cache(&entries, arch);
                b.plan.entries.insert(
                    "etc/ld.so.cache".into(),
                    generated(bytes, "ld.so cache for libraries found through /etc/ld.so.conf"),
                );
            }
            None => b.plan.warnings.push(
                "libraries come from /etc/ld.so.conf directories, but pare cannot write an ld.so.cache for this architecture; keep the image's own with --keep /etc/ld.so.cache".into(),
            ),
        }
    }

    // The package database of what is kept, for scanners.
    if let Some(db) = &trace.packages {
        let kept: std::collections::BTreeSet<String> = b
            .plan
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.content, Content::Image(_) | Content::Symlink(_)))
            .map(|(p, _)| p.clone())
            .collect();
        let meta = crate::packages::metadata(db, fs, b.contents, &kept)?;
        for p in &meta.keep {
            b.keep_if_present(
                p,
                "copyright of a kept package (licence compliance; scanners read it)",
            )?;
        }
        for p in &meta.named {
            b.keep_if_present(p, "named by the package database of what is kept")?;
        }
        b.plan.packages = meta.packages.clone();
        for (path, bytes) in meta.files {
            b.plan.entries.insert(
                path,
                generated(bytes, "package metadata of what is kept (scanners read it)"),
            );
        }
    }

    // Parent directories with their source metadata.
    let paths: Vec<String> = b.plan.entries.keys().cloned().collect();
    for p in paths {
        let mut cur = p.as_str();
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            if b.plan.entries.contains_key(cur) {
                continue;
            }
            let (mode, uid, gid) = match fs.get(cur) {
                Some(n) if n.is_dir() => (n.mode, n.uid, n.gid),
                _ => (0o755, 0, 0),
            };
            b.plan.entries.insert(
                cur.to_string(),
                Entry {
                    content: Content::Dir,
                    mode,
                    uid,
                    gid,
                    size: 0,
                    reason: "parent directory".into(),
                    evidence: Vec::new(),
                },
            );
        }
    }

    // Clear setuid and setgid everywhere.
    for (p, e) in b.plan.entries.iter_mut() {
        if e.mode & 0o6000 != 0 {
            let before = e.mode;
            e.mode &= !0o6000;
            b.plan.setid_cleared.push(SetIdCleared {
                path: display(p),
                mode_before: before,
                mode_after: e.mode,
                uid: e.uid,
                gid: e.gid,
            });
        }
    }
    b.plan.capabilities_dropped.sort();
    b.plan.capabilities_dropped.dedup();
    let entry = trace.entrypoint.clone();
    access_warnings(&mut b.plan, &user, &entry);
    b.plan.user = Some(user);
    Ok(b.plan)
}

/// The securityContext for the plan: writable paths are the directories the run user can
/// write; the root filesystem can be read-only when those are only /tmp and its home.
pub fn security_context(plan: &Plan) -> crate::report::SecurityContext {
    let u = plan.user();
    let home = crate::rootfs::normalize(&u.home).unwrap_or_default();
    let writable: Vec<String> = plan
        .entries
        .iter()
        .filter(|(_, e)| e.content == Content::Dir && can(e, u, 2))
        .map(|(p, _)| p.clone())
        .collect();
    // Scratch directories and the home take emptyDir volumes.
    let read_only = writable
        .iter()
        .all(|p| p == "tmp" || p == "var/tmp" || *p == home);
    crate::report::SecurityContext {
        run_as_non_root: true,
        run_as_user: u.uid,
        run_as_group: u.gid,
        allow_privilege_escalation: false,
        read_only_root_filesystem: read_only,
        capabilities_drop: vec!["ALL".into()],
        writable_paths: writable.iter().map(|p| display(p)).collect(),
        localhost_profile: None,
    }
}

/// Whether the run user has `bit` (4 read, 2 write, 1 execute) on an entry.
fn can(e: &Entry, u: &RunUser, bit: u32) -> bool {
    let m = if e.uid == u64::from(u.uid) {
        e.mode >> 6
    } else if e.gid == u64::from(u.gid) {
        e.mode >> 3
    } else {
        e.mode
    };
    m & bit != 0
}

/// Warn when the non-root user cannot reach what was kept: a directory it cannot enter, a
/// file it cannot read, an entrypoint it cannot run. (Running as root hid these in the source.)
fn access_warnings(plan: &mut Plan, u: &RunUser, entrypoint: &str) {
    let mut blocked: BTreeMap<String, usize> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (p, e) in &plan.entries {
        if !matches!(e.content, Content::Image(_) | Content::Bytes(_)) {
            continue;
        }
        let mut cur = p.as_str();
        let mut reachable = true;
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            if let Some(d) = plan.entries.get(cur)
                && !can(d, u, 1)
            {
                *blocked.entry(cur.to_string()).or_default() += 1;
                reachable = false;
            }
        }
        if reachable && !can(e, u, 4) {
            unreadable.push(format!(
                "{} ({:04o}, owner {}:{})",
                display(p),
                e.mode,
                e.uid,
                e.gid
            ));
        }
    }
    for (d, n) in &blocked {
        let e = &plan.entries[d];
        plan.warnings.push(format!(
            "the run user ({}:{}) cannot enter {} (mode {:04o}, owner {}:{}): {n} kept file{} under it will be unreachable",
            u.uid, u.gid, display(d), e.mode, e.uid, e.gid, if *n == 1 { "" } else { "s" }
        ));
    }
    if !unreadable.is_empty() {
        plan.warnings.push(format!(
            "{} kept file{} not readable by the run user ({}:{}): {}",
            unreadable.len(),
            if unreadable.len() == 1 {
                " is"
            } else {
                "s are"
            },
            u.uid,
            u.gid,
            unreadable
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(e) = plan.entries.get(entrypoint)
        && !can(e, u, 1)
    {
        plan.warnings.push(format!(
                "the entrypoint {} (mode {:04o}, owner {}:{}) is not executable by the run user ({}:{})",
                display(entrypoint), e.mode, e.uid, e.gid, u.uid, u.gid
            ));
    }
}

fn choose_user(
    image_user: &str,
    flag: Option<(u32, u32)>,
    passwd: &[PasswdEntry],
    groups: &[(String, u32, String)],
    warnings: &mut Vec<String>,
) -> RunUser {
    let named = |uid: u32, gid: u32, source: &str| {
        let p = passwd.iter().find(|p| p.uid == uid && p.uid != 0);
        RunUser {
            uid,
            gid,
            name: p.map_or_else(
                || {
                    if uid == NONROOT_UID {
                        "nonroot".into()
                    } else {
                        format!("u{uid}")
                    }
                },
                |p| p.name.clone(),
            ),
            home: p.map_or_else(|| "/home/nonroot".into(), |p| p.home.clone()),
            source: source.into(),
        }
    };
    if let Some((u, g)) = flag {
        return named(u, g, "--user");
    }
    let default = || named(NONROOT_UID, NONROOT_UID, "default");
    if image_user.is_empty() {
        return default();
    }
    let (u, g) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: uid,
                home: "/home/nonroot".into(),
                line: String::new(),
            })),
        Err(_) => passwd.iter().find(|p| p.name == u).cloned(),
    };
    let Some(entry) = entry else {
        warnings.push(format!("the image's User {image_user:?} is not in its /etc/passwd; running as {NONROOT_UID} instead"));
        return default();
    };
    if entry.uid == 0 {
        return default();
    }
    let gid = match g {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match groups.iter().find(|x| x.0 == g) {
                Some(x) => x.1,
                None => {
                    warnings.push(format!(
                        "the image's group {g:?} is not in its /etc/group; using gid {}",
                        entry.gid
                    ));
                    entry.gid
                }
            },
        },
    };
    if gid == 0 {
        warnings.push(format!(
            "the image's User {image_user:?} has the root group; using gid {}",
            entry.uid
        ));
    }
    let gid = if gid == 0 { entry.uid } else { gid };
    let mut u = named(entry.uid, gid, "image");
    if u.name.starts_with('u') && !entry.name.is_empty() {
        u.name = entry.name.clone();
    }
    if !entry.home.is_empty() {
        u.home = entry.home.clone();
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001:App:/srv/app:/bin/sh\nadmin:x:0:0::/root:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:\n";

    fn pick(user: &str, flag: Option<(u32, u32)>) -> RunUser {
        let mut w = vec![];
        choose_user(
            user,
            flag,
            &parse_passwd(PASSWD),
            &parse_group(GROUP),
            &mut w,
        )
    }

    #[test]
    fn setid_cleared_capabilities_dropped_and_essentials_added() {
        // A layer with a setuid file, a setgid directory and a file with a capability xattr.
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, mode: u32, dir: bool, cap: bool| {
            if cap {
                b.append_pax_extensions([(
                    "SCHILY.xattr.security.capability",
                    &b"\x01\0\0\x02"[..],
                )])
                .unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(mode);
            h.set_size(if dir { 0 } else { 1 });
            b.append_data(&mut h, path, if dir { &b""[..] } else { &b"x"[..] })
                .unwrap();
        };
        add("usr/bin/ping", 0o755, false, true);
        add("root", 0o700, true, false);
        add("root/.local/app", 0o755, false, false);
        add("etc/secret", 0o600, false, false);
        add("usr/bin/su", 0o4755, false, false);
        add("var/mail", 0o2775, true, false);
        let tar = b.into_inner().unwrap();
        let mut fs = Rootfs::merge(vec![], None).unwrap();
        fs.apply_layer(0, &tar[..]).unwrap();
        assert!(fs.get("usr/bin/ping").unwrap().capability);
        let mut trace = Trace::default();
        for p in [
            "usr/bin/ping",
            "usr/bin/su",
            "var/mail",
            "root/.local/app",
            "etc/secret",
        ] {
            trace.files.insert(
                p.into(),
                vec![crate::trace::Evidence::new(
                    crate::trace::Why::KeepFlag,
                    None,
                    "test",
                )],
            );
        }
        let config = serde_json::json!({"config": {"WorkingDir": "/work"}});
        let plan = build(
            PlanInput {
                fs: &fs,
                trace: &trace,
                config: &config,
                user_flag: None,
            },
            // No file is read.
            &mut OneText("\0", b""),
        )
        .unwrap();
        assert_eq!(plan.capabilities_dropped, vec!["/usr/bin/ping"]);
        let cleared: Vec<(&str, u32, u32)> = plan
            .setid_cleared
            .iter()
            .map(|s| (s.path.as_str(), s.mode_before, s.mode_after))
            .collect();
        assert_eq!(
            cleared,
            vec![("/usr/bin/su", 0o4755, 0o755), ("/var/mail", 0o2775, 0o775)]
        );
        assert!(plan.entries.values().all(|e| e.mode & 0o6000 == 0));
        assert_eq!(plan.entries["tmp"].mode, 0o1777);
        assert_eq!(plan.entries["work"].content, Content::Dir);
        assert_eq!(plan.entries["home/nonroot"].uid, 65532);
        assert!(plan.entries.contains_key("etc/passwd") && plan.entries.contains_key("usr/bin"));
        assert_eq!(plan.user().uid, NONROOT_UID);
        let w = plan.warnings.join("\n");
        assert!(
            w.contains("cannot enter /root (mode 0700, owner 0:0): 1 kept file under it"),
            "{w}"
        );
        assert!(
            w.contains(
                "1 kept file is not readable by the run user (65532:65532): /etc/secret (0600"
            ),
            "{w}"
        );
    }

    /// Contents with one text file.
    struct OneText(&'static str, &'static [u8]);
    impl Contents for OneText {
        fn prefetch(&mut self, _: &Rootfs, _: &[String]) -> Result<()> {
            Ok(())
        }
        fn read(&mut self, _: &Rootfs, p: &str, _: u64) -> Result<Vec<u8>> {
            if p == self.0 {
                Ok(self.1.to_vec())
            } else {
                Err(Error::Other(format!("unexpected read of {p}")))
            }
        }
        fn elf(
            &mut self,
            _: &Rootfs,
            _: &str,
        ) -> Result<Option<std::sync::Arc<crate::elf::ElfFacts>>> {
            Ok(None)
        }
    }

    #[test]
    fn directories_of_the_image_user_are_kept() {
        let mut b = tar::Builder::new(Vec::new());
        let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
        for (path, uid, dir) in [
            ("etc/passwd", 0, false),
            ("var/lib/app", 1000, true),
            ("var/lib/other", 0, true),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(0o755);
            h.set_uid(uid);
            let data: &[u8] = if dir { b"" } else { passwd };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut fs = Rootfs::merge(vec![], None).unwrap();
        fs.apply_layer(0, &tar[..]).unwrap();
        let config = serde_json::json!({"config": {"User": "app"}});
        let plan = build(
            PlanInput {
                fs: &fs,
                trace: &Trace::default(),
                config: &config,
                user_flag: None,
            },
            &mut OneText("etc/passwd", passwd),
        )
        .unwrap();
        assert_eq!(plan.user().uid, 1000);
        assert_eq!(plan.entries["var/lib/app"].uid, 1000);
        assert!(!plan.entries.contains_key("var/lib/other"));
    }

    #[test]
    fn users() {
        assert_eq!(pick("", None).uid, NONROOT_UID);
        assert_eq!(pick("", None).name, "nonroot");
        assert_eq!(pick("root", None).uid, NONROOT_UID);
        assert_eq!(pick("0", None).uid, NONROOT_UID);
        assert_eq!(
            pick("admin", None).uid,
            NONROOT_UID,
            "a name mapping to uid 0 is root"
        );
        let u = pick("app", None);
        assert_eq!(
            (u.uid, u.gid, u.home.as_str(), u.source.as_str()),
            (1000, 1001, "/srv/app", "image")
        );
        assert_eq!(pick("app:staff", None).gid, 50);
        assert_eq!(pick("4242", None).uid, 4242);
        assert_eq!(pick("ghost", None).uid, NONROOT_UID);
        assert_eq!(pick("app", Some((7, 8))).uid, 7);
        assert!(parse_user_flag("0").is_err());
        assert!(parse_user_flag("10:0").is_err());
        assert!(parse_user_flag("abc").is_err());
        assert_eq!(parse_user_flag("10").unwrap(), (10, 10));
        assert_eq!(parse_user_flag("10:20").unwrap(), (10, 20));
    }
}

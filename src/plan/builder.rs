//! The plan's builder: what it adds from the image, and the named steps [`super::build`]
//! takes in turn.

use super::security::access_warnings;
use super::user::{PasswdEntry, choose_user, parse_group, parse_passwd, passwd_and_group};
use super::{Content, Entry, Plan, RunUser, SetIdCleared};
use crate::error::Result;
use crate::rootfs::{Kind, ResolveError, Rootfs, display};
use crate::trace::{Contents, Evidence, RunConfig, Trace};

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

pub(super) struct Builder<'a, C: Contents> {
    pub(super) fs: &'a Rootfs,
    pub(super) contents: &'a mut C,
    pub(super) plan: Plan,
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

/// The run user, and the image's passwd and group entries it was chosen from.
type RunUserFrom = (RunUser, Vec<PasswdEntry>, Vec<(String, u32, String)>);

/// A generated file: root-owned, mode 0644.
fn generated(bytes: Vec<u8>, reason: &str) -> Entry {
    Entry {
        size: bytes.len() as u64,
        content: Content::Bytes(bytes),
        mode: 0o644,
        uid: 0,
        gid: 0,
        reason: reason.into(),
        evidence: Vec::new(),
    }
}

/// The steps of [`super::build`], in the order it takes them.
impl<C: Contents> Builder<'_, C> {
    /// What the tracer keeps (a `--keep DIR` with its whole subtree), and the data files.
    pub(super) fn keep_traced(&mut self, trace: &Trace) -> Result<()> {
        let fs = self.fs;
        for (p, ev) in &trace.files {
            self.add_traced(p, ev);
            if fs.get(p).is_some_and(|n| n.is_dir())
                && ev.iter().any(|e| e.kind == crate::trace::Why::KeepFlag)
            {
                // `--keep DIR`: the whole subtree.
                let sub: Vec<String> = fs.subtree(p).map(|(k, _)| k.clone()).collect();
                for s in sub {
                    self.add_traced(&s, ev);
                }
            }
        }
        for (p, ev) in &trace.symlinks {
            self.add_traced(p, ev);
        }
        for (p, why) in DATA_FILES {
            self.keep_if_present(p, why)?;
        }
        Ok(())
    }

    /// The run user, and the image's passwd and group entries.
    pub(super) fn run_user(
        &mut self,
        config: &serde_json::Value,
        user_flag: Option<(u32, u32)>,
    ) -> Result<RunUserFrom> {
        let fs = self.fs;
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
        self.contents.prefetch(fs, &both)?;
        let passwd_text = self.text("/etc/passwd")?.unwrap_or_default();
        let group_text = self.text("/etc/group")?.unwrap_or_default();
        let passwd = parse_passwd(&passwd_text);
        let groups = parse_group(&group_text);
        let user = choose_user(
            &image_user,
            user_flag,
            &passwd,
            &groups,
            &mut self.plan.warnings,
        );
        Ok((user, passwd, groups))
    }

    /// /etc/passwd and /etc/group: root, nobody, and the run user.
    pub(super) fn users_and_groups(
        &mut self,
        user: &RunUser,
        passwd: &[PasswdEntry],
        groups: &[(String, u32, String)],
    ) {
        let (pw, gr) = passwd_and_group(user, passwd, groups);
        // These replace whatever the image had at the same path.
        for link in ["etc/passwd", "etc/group"] {
            if matches!(self.fs.get(link).map(|n| &n.kind), Some(Kind::Symlink(_))) {
                self.plan.warnings.push(format!(
                    "/{link} was a symlink in the source; replaced by a plain file"
                ));
            }
        }
        self.plan.entries.insert(
            "etc/passwd".into(),
            generated(pw.into_bytes(), "users: root, nobody and the run user"),
        );
        self.plan.entries.insert(
            "etc/group".into(),
            generated(
                gr.into_bytes(),
                "groups: root, nobody and the run user's group",
            ),
        );
    }

    /// Scratch space: /tmp always, /var/tmp (FHS) when the source has one.
    pub(super) fn scratch_dirs(&mut self) {
        let var_tmp = self.fs.get("var/tmp").is_some_and(|n| n.is_dir());
        for dir in std::iter::once("tmp").chain(var_tmp.then_some("var/tmp")) {
            self.plan.entries.insert(
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
    }

    /// Directories the image gives its own non-root user (a data or log directory it writes
    /// to): kept, as directories. Then the home directory of the run user, owned by it, made
    /// only when the source has none: an existing directory (say /usr/sbin for `daemon`) is
    /// never handed to the run user.
    pub(super) fn user_dirs(&mut self, user: &RunUser) {
        let fs = self.fs;
        if user.source == "image" && user.uid != 0 {
            let owned: Vec<String> = fs
                .nodes
                .iter()
                .filter(|(p, n)| !p.is_empty() && n.is_dir() && n.uid == u64::from(user.uid))
                .map(|(p, _)| p.clone())
                .take(10_000)
                .collect();
            for p in owned {
                self.add_from_image(&p, "a directory owned by the run user (it writes there)");
            }
        }
        if fs.resolve(&user.home, true).is_err()
            && let Some(home) = self.new_dir_path(&user.home, "home directory")
        {
            self.add(
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
    }

    /// WorkingDir: kept as a directory (with its symlinks), or created.
    pub(super) fn workdir(&mut self, run: &RunConfig) -> Result<()> {
        let fs = self.fs;
        if !run.workdir.is_empty() && run.workdir != "/" {
            match fs.resolve(&run.workdir, true) {
                Ok(r) if fs.get(&r.path).is_some_and(|n| n.is_dir()) => {
                    for l in &r.symlinks {
                        self.add_from_image(l, "symlink on the way to the WorkingDir");
                    }
                    self.add_from_image(&r.path, "WorkingDir");
                }
                Ok(_) | Err(ResolveError::NotFound) => {
                    if let Some(w) = self.new_dir_path(&run.workdir, "WorkingDir") {
                        self.add(
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
        Ok(())
    }

    /// ld.so finds ld.so.conf directories only through /etc/ld.so.cache: write one that covers
    /// the libraries found there.
    pub(super) fn ld_cache(&mut self, trace: &Trace) {
        if matches!(trace.libc, Some(crate::trace::Libc::Glibc { .. }))
            && !trace.ldconf_libs.is_empty()
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
                    self.plan.entries.insert(
                        "etc/ld.so.cache".into(),
                        generated(bytes, "ld.so cache for libraries found through /etc/ld.so.conf"),
                    );
                }
                None => self.plan.warnings.push(
                    "libraries come from /etc/ld.so.conf directories, but pare cannot write an ld.so.cache for this architecture; keep the image's own with --keep /etc/ld.so.cache".into(),
                ),
            }
        }
    }

    /// The package database of what is kept, for scanners.
    pub(super) fn package_metadata(&mut self, trace: &Trace) -> Result<()> {
        let fs = self.fs;
        if let Some(db) = &trace.packages {
            let kept: std::collections::BTreeSet<String> = self
                .plan
                .entries
                .iter()
                .filter(|(_, e)| matches!(e.content, Content::Image(_) | Content::Symlink(_)))
                .map(|(p, _)| p.clone())
                .collect();
            let meta = crate::packages::metadata(db, fs, self.contents, &kept)?;
            for p in &meta.keep {
                self.keep_if_present(
                    p,
                    "copyright of a kept package (licence compliance; scanners read it)",
                )?;
            }
            for p in &meta.named {
                self.keep_if_present(p, "named by the package database of what is kept")?;
            }
            self.plan.packages = meta.packages.clone();
            for (path, bytes) in meta.files {
                self.plan.entries.insert(
                    path,
                    generated(bytes, "package metadata of what is kept (scanners read it)"),
                );
            }
        }
        Ok(())
    }

    /// Parent directories with their source metadata.
    pub(super) fn parents(&mut self) {
        let fs = self.fs;
        let paths: Vec<String> = self.plan.entries.keys().cloned().collect();
        for p in paths {
            let mut cur = p.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                if self.plan.entries.contains_key(cur) {
                    continue;
                }
                let (mode, uid, gid) = match fs.get(cur) {
                    Some(n) if n.is_dir() => (n.mode, n.uid, n.gid),
                    _ => (0o755, 0, 0),
                };
                self.plan.entries.insert(
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
    }

    /// Clear setuid and setgid everywhere.
    pub(super) fn clear_setid(&mut self) {
        for (p, e) in self.plan.entries.iter_mut() {
            if e.mode & 0o6000 != 0 {
                let before = e.mode;
                e.mode &= !0o6000;
                self.plan.setid_cleared.push(SetIdCleared {
                    path: display(p),
                    mode_before: before,
                    mode_after: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                });
            }
        }
    }
}

impl<C: Contents> Builder<'_, C> {
    /// The last steps: capabilities sorted, access warned about, the user set.
    pub(super) fn finish(mut self, user: RunUser, entrypoint: &str) -> Plan {
        self.plan.capabilities_dropped.sort();
        self.plan.capabilities_dropped.dedup();
        access_warnings(&mut self.plan, &user, entrypoint);
        self.plan.user = Some(user);
        self.plan
    }
}

//! The context the rules share ([`Cx`]): the kept set, the queue of work, the content store, and
//! the helpers every rule uses to keep a file, a tree or a program.

use super::*;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::elf::ElfFacts;
use crate::error::{Error, Result};
use crate::rootfs::{Kind, ResolveError, Rootfs, display};

/// A program started with an argv.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    /// Canonical path of the executable.
    pub path: String,
    /// argv as the process sees it; words the tracer could not compute are in `unknown`.
    pub argv: Vec<String>,
    pub unknown: Vec<usize>,
    /// Environment given on the way (`env NAME=VALUE`, a script's `PATH=…`), over the image's.
    pub env: Vec<(String, String)>,
    /// How many programs led here (bounds `#!` and wrapper chains).
    pub depth: usize,
    /// Part of the entrypoint's own chain (its interpreter, `env` or wrapper target): what is
    /// missing there is an error, as the container would not start. What a script runs only
    /// gives warnings.
    pub hard: bool,
}

impl Exec {
    /// argv[i] when it is known.
    pub fn arg(&self, i: usize) -> Option<&str> {
        if self.unknown.contains(&i) {
            None
        } else {
            self.argv.get(i).map(String::as_str)
        }
    }

    /// The basename the program was started as (what busybox and multi-call programs look at),
    /// and the basename of the file it is.
    pub fn names(&self) -> (&str, &str) {
        let a0 = self
            .argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("");
        let file = self.path.rsplit('/').next().unwrap_or(&self.path);
        (a0, file)
    }

    /// argv from index `i` on, as a new command (the unknown indexes shifted).
    pub fn tail(&self, i: usize) -> (Vec<String>, Vec<usize>) {
        (
            self.argv
                .get(i..)
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            self.unknown
                .iter()
                .filter(|&&u| u >= i)
                .map(|u| u - i)
                .collect(),
        )
    }
}

pub(crate) enum Work {
    Exec(Exec),
    File(String),
    Object(usize),
}

/// An evidence rule. Each method sees one kind of work; `finish` runs when the queue is empty
/// and may add more.
pub(crate) trait Rule {
    /// Before the entrypoint is traced.
    fn start(&mut self, _cx: &mut Cx) -> Result<()> {
        Ok(())
    }
    /// Files this batch of work will read (one pass per layer reads them all).
    fn wanted(&mut self, _cx: &mut Cx, _work: &[Work]) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn exec(&mut self, _cx: &mut Cx, _e: &Exec) -> Result<()> {
        Ok(())
    }
    /// A regular file (canonical path) was kept for the first time.
    fn file(&mut self, _cx: &mut Cx, _path: &str) -> Result<()> {
        Ok(())
    }
    fn object(&mut self, _cx: &mut Cx, _idx: usize) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _cx: &mut Cx) -> Result<()> {
        Ok(())
    }
}

/// The state the rules share.
pub(crate) struct Cx<'a> {
    pub fs: &'a Rootfs,
    pub contents: &'a mut dyn Contents,
    pub run: &'a RunConfig,
    pub opts: &'a TraceOptions,
    pub out: Trace,
    pub(crate) queue: VecDeque<Work>,
    pub ld: State,
    /// Trees a runtime rule answers for (canonical, no leading slash): path references, text
    /// scans and the app-dir rule leave them alone.
    pub claimed: Vec<String>,
    pub(crate) warned: HashSet<String>,
    /// Programs already queued with the same argv.
    pub(crate) execs: HashSet<(String, Vec<String>)>,
}

/// argv[0] → the executable file it runs (canonical path and the symlinks on the way), through
/// the image's PATH when it has no slash, as the runtime's exec does.
pub fn find_program(fs: &Rootfs, run: &RunConfig, argv0: &str) -> Result<crate::rootfs::Resolved> {
    find_program_in(fs, run, argv0, run.env_var("PATH").unwrap_or(DEFAULT_PATH))
}

fn find_program_in(
    fs: &Rootfs,
    run: &RunConfig,
    argv0: &str,
    path_var: &str,
) -> Result<crate::rootfs::Resolved> {
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![abs_in(run.cwd(), argv0)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| join(&abs_in(run.cwd(), d), argv0))
            .collect()
    };
    for c in &candidates {
        match fs.resolve(c, true) {
            Ok(r) => {
                if let Some(n) = fs.get(&r.path)
                    && matches!(n.kind, Kind::File { .. })
                    && n.mode & 0o111 != 0
                {
                    return Ok(r);
                }
            }
            Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => {}
            Err(e) => return Err(e.into_error(c)),
        }
    }
    Err(Error::Entrypoint(if argv0.contains('/') {
        format!(
            "{} does not exist in the image (or is not an executable file)",
            candidates.first().map_or(argv0, String::as_str)
        )
    } else {
        format!("{argv0:?} is not an executable in the image's PATH ({path_var})")
    }))
}

/// Add a reason to a path's list: strongest kind first (what runs it before what names it),
/// at most [`MAX_EVIDENCE`].
pub(crate) fn add_evidence(list: &mut Vec<Evidence>, ev: Evidence) {
    if list.len() >= MAX_EVIDENCE || list.contains(&ev) {
        return;
    }
    let at = list.partition_point(|e| e.kind <= ev.kind);
    list.insert(at, ev);
}

impl Cx<'_> {
    /// Keep a canonical path (regular file or directory) for a reason. A regular file kept for
    /// the first time is queued for the rules that read kept files. Returns whether it is new.
    pub fn keep(&mut self, path: &str, ev: Evidence) -> bool {
        let new = !self.out.files.contains_key(path);
        let list = self.out.files.entry(path.to_string()).or_default();
        // Kept so far only as part of a directory (data, not read for what it names), now
        // named itself (sourced by a script, run): the rules see it again.
        let promoted = !new
            && ev.within.is_none()
            && !list.is_empty()
            && list.iter().all(|e| e.within.is_some());
        add_evidence(list, ev);
        if (new || promoted)
            && matches!(self.fs.get(path).map(|n| &n.kind), Some(Kind::File { .. }))
        {
            self.queue.push_back(Work::File(path.to_string()));
        }
        new
    }

    pub fn keep_links(&mut self, links: &[String], target: &str) {
        for l in links {
            let ev = Evidence::new(
                Why::Symlink,
                None,
                format!("symlink on the way to {}", display(target)),
            );
            add_evidence(self.out.symlinks.entry(l.clone()).or_default(), ev);
        }
    }

    /// Resolve an absolute path to a regular file (canonical path, symlinks on the way).
    /// `Ok(None)` when absent or not a regular file.
    pub fn resolve_file(&mut self, path: &str) -> Result<Option<(String, Vec<String>)>> {
        match self.fs.resolve(path, true) {
            Ok(r) => match self.fs.get(&r.path).map(|n| &n.kind) {
                Some(Kind::File { .. }) => Ok(Some((r.path, r.symlinks))),
                _ => Ok(None),
            },
            Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into_error(path)),
        }
    }

    /// Keep an absolute path when it is a regular file in the image (with its symlinks).
    /// Bad links (escapes, loops) give a warning. Returns the canonical path.
    pub fn keep_if_file(&mut self, path: &str, ev: Evidence) -> Option<String> {
        match self.resolve_file(path) {
            Ok(Some((canon, links))) => {
                self.keep_links(&links, &canon);
                self.keep(&canon, ev);
                Some(canon)
            }
            Ok(None) => None,
            Err(e) => {
                self.warn(format!("{e}; not kept"));
                None
            }
        }
    }

    /// Keep a directory and everything under it (symlinks inside it kept as links, with the
    /// regular files they lead to).
    pub fn keep_tree(&mut self, dir: &str, ev: &Evidence) {
        self.keep_tree_except(dir, ev, |_| false);
    }

    /// [`Cx::keep_tree`] without the entries `skip` says no to (paths relative to `dir`).
    pub fn keep_tree_except(&mut self, dir: &str, ev: &Evidence, skip: impl Fn(&str) -> bool) {
        self.keep(dir, ev.clone());
        let ev = &ev.inside(dir);
        let entries = self.entries_under(dir, skip);
        for (p, kind) in entries {
            match kind {
                Kind::File { .. } | Kind::Dir => {
                    self.keep(&p, ev.clone());
                }
                Kind::Symlink(_) => {
                    add_evidence(self.out.symlinks.entry(p.clone()).or_default(), ev.clone());
                    if let Ok(r) = self.fs.resolve(&p, true)
                        && matches!(
                            self.fs.get(&r.path).map(|n| &n.kind),
                            Some(Kind::File { .. })
                        )
                    {
                        self.keep_links(&r.symlinks, &r.path);
                        self.keep(
                            &r.path,
                            Evidence::new(
                                ev.kind,
                                ev.from.as_deref(),
                                format!("target of {}, {}", display(&p), ev.detail),
                            ),
                        );
                    }
                }
                Kind::Device | Kind::Fifo => {}
            }
        }
    }

    /// The entries under `dir` (canonical) with their kinds, less those `skip` names by their
    /// path relative to `dir` (and what is under them).
    pub fn entries_under(&self, dir: &str, skip: impl Fn(&str) -> bool) -> Vec<(String, Kind)> {
        self.fs
            .subtree(dir)
            .filter(|(k, _)| !skip(k.get(dir.len() + 1..).unwrap_or("")))
            .map(|(k, n)| (k.clone(), n.kind.clone()))
            .collect()
    }

    /// Read every regular file under `dir` (canonical) in one pass over the layers, before a
    /// rule reads or keeps them one by one.
    pub fn prefetch_tree(&mut self, dir: &str) -> Result<()> {
        let files: Vec<String> = self
            .fs
            .subtree(dir)
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        self.contents.prefetch(self.fs, &files)
    }

    /// Bytes a directory's subtree takes in a layer (its files' sizes and a tar header per
    /// entry), stopping once past `limit`.
    pub fn tree_bytes(&self, dir: &str, limit: u64) -> u64 {
        let mut total = 0u64;
        for (_, n) in self.fs.subtree(dir) {
            // Each entry costs at least its tar header: a tree of many empty files is large.
            total = total.saturating_add(n.size() + 512);
            if total > limit {
                break;
            }
        }
        total
    }

    /// Why a canonical path is kept (empty when it is not).
    pub fn evidence_of(&self, path: &str) -> Vec<Evidence> {
        self.out.files.get(path).cloned().unwrap_or_default()
    }

    pub fn warn(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.warned.insert(msg.clone()) {
            self.out.warnings.push(msg);
        }
    }

    /// Record an open question: something the rules could not decide statically (the report's
    /// `open_questions`, the summary line after harden).
    pub fn question(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.warned.insert(msg.clone()) {
            self.out.questions.push(msg);
        }
    }

    /// Record that a path was looked at and not kept.
    pub fn drop_path(&mut self, path: &str, why: impl Into<String>) {
        self.out
            .dropped
            .entry(path.trim_start_matches('/').to_string())
            .or_insert_with(|| why.into());
    }

    /// Each of `paths` not kept: listed as dropped with `why`; how many.
    pub fn drop_unkept(&mut self, paths: impl IntoIterator<Item = String>, why: &str) -> usize {
        let mut left = 0;
        for p in paths {
            if !self.out.files.contains_key(&p) {
                left += 1;
                self.drop_path(&p, why);
            }
        }
        left
    }

    /// An executable only weak evidence points at: not kept, reported with why.
    pub fn withhold(&mut self, path: &str, why: impl Into<String>) {
        let p = path.trim_start_matches('/').to_string();
        if !self.out.files.contains_key(&p) {
            self.out.withheld.entry(p).or_insert_with(|| why.into());
        }
    }

    pub fn is_claimed(&self, path: &str) -> bool {
        self.claimed.iter().any(|t| under(path, t))
    }

    pub fn claim(&mut self, tree: &str) {
        let t = tree
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        if !t.is_empty() && !self.claimed.contains(&t) {
            self.claimed.push(t);
        }
    }

    /// argv[0] → canonical path, through PATH (the one given, else the image's) when it has
    /// no slash; the symlinks on the way are kept.
    pub fn find_program(&mut self, argv0: &str, env: &[(String, String)]) -> Result<String> {
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.run.env_var("PATH").unwrap_or(DEFAULT_PATH).to_string());
        let r = find_program_in(self.fs, self.run, argv0, &path_var)?;
        self.keep_links(&r.symlinks, &r.path);
        Ok(r.path)
    }

    /// A program runs another: find it and queue it. The entrypoint's own forms fail hard
    /// (the container would not start); a command a script or wrapper runs that is not in the
    /// image gives a warning (the original fails the same way at that point).
    /// The loaded objects whose soname `matches` says is the one sought (`libcrypto.so.3`).
    pub fn objects_with_soname(&self, matches: impl Fn(&str) -> bool) -> Vec<&Object> {
        self.out
            .objects
            .iter()
            .filter(|o| o.facts.soname.as_deref().is_some_and(&matches))
            .collect()
    }

    /// The canonical path of `path` (symlinks followed), or `""` when it does not resolve.
    pub fn canonical(&self, path: &str) -> String {
        self.fs
            .resolve(path, true)
            .map(|r| r.path)
            .unwrap_or_default()
    }

    /// A program `e` starts: `argv` (with its unknown words), in `e`'s environment, one level
    /// deeper, kept with `why` and `detail` as evidence from `e`; a miss is an error only
    /// when `hard` (the entrypoint's own chain), else a warning.
    pub fn exec_child(
        &mut self,
        e: &Exec,
        (argv, unknown): (Vec<String>, Vec<usize>),
        why: Why,
        detail: String,
        hard: bool,
    ) -> Result<Option<String>> {
        let ev = Evidence::new(why, Some(&e.path), detail);
        self.exec(argv, unknown, e.env.clone(), e.depth + 1, ev, hard)
    }

    pub fn exec(
        &mut self,
        argv: Vec<String>,
        unknown: Vec<usize>,
        env: Vec<(String, String)>,
        depth: usize,
        ev: Evidence,
        hard: bool,
    ) -> Result<Option<String>> {
        if depth > 16 {
            self.warn(format!(
                "{}: programs nest more than 16 deep; not followed further",
                argv.join(" ")
            ));
            return Ok(None);
        }
        let Some(a0) = argv.first().cloned() else {
            return Ok(None);
        };
        let path = match self.find_program(&a0, &env) {
            Ok(p) => p,
            Err(e) if !hard => {
                let from = ev.from.clone().unwrap_or_default();
                self.warn(format!("{from}: {}: {e}", ev.detail));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.keep(&path, ev);
        self.out.programs.insert(path.clone());
        if self.execs.len() > 10_000 || !self.execs.insert((path.clone(), argv.clone())) {
            return Ok(Some(path));
        }
        self.queue.push_back(Work::Exec(Exec {
            path: path.clone(),
            argv,
            unknown,
            env,
            depth,
            hard,
        }));
        Ok(Some(path))
    }

    /// Queue a program again under another argv (`busybox APPLET …`).
    pub fn requeue(&mut self, e: Exec) {
        if e.depth <= 16 && self.execs.insert((e.path.clone(), e.argv.clone())) {
            self.queue.push_back(Work::Exec(e));
        }
    }

    /// Read a small text file (canonical path); `None` when too large or not text.
    pub fn text(&mut self, path: &str) -> Result<Option<String>> {
        let size = self.fs.get(path).map_or(0, |n| n.size());
        if size > MAX_TEXT_BYTES {
            return Ok(None);
        }
        let b = self.contents.read(self.fs, path, MAX_TEXT_BYTES)?;
        if b.iter().take(8192).any(|&c| c == 0) {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }

    /// A local copy of a canonical regular file, to open.
    pub fn local_path(&mut self, path: &str) -> Result<std::path::PathBuf> {
        self.contents
            .local_path(self.fs, path)?
            .ok_or_else(|| Error::path(display(path), "its contents are not available"))
    }

    /// ELF facts of a canonical regular file; `None` when it is not ELF.
    pub fn elf(&mut self, path: &str) -> Result<Option<Arc<ElfFacts>>> {
        self.contents.elf(self.fs, path)
    }

    /// The regular files under a directory (absolute, any depth, symlinked directory
    /// followed once), sorted, under the directory's own spelling; at most 10,000.
    pub fn files_under(&self, dir: &str) -> Vec<String> {
        let Ok(r) = self.fs.resolve(dir, true) else {
            return vec![];
        };
        let prefix = if r.path.is_empty() {
            String::new()
        } else {
            format!("{}/", r.path)
        };
        let base = dir.trim_end_matches('/');
        let mut out: Vec<String> = self
            .fs
            .subtree(&r.path)
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .filter_map(|(k, _)| k.strip_prefix(&prefix))
            .map(|rest| join(if base.is_empty() { "/" } else { base }, rest))
            .collect();
        out.sort();
        out.truncate(10_000);
        out
    }

    /// Files matching a glob (absolute, wildcards anywhere), sorted, as absolute paths under
    /// the pattern's own spelling of its fixed prefix.
    pub fn glob(&self, pattern: &str) -> Vec<String> {
        let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let first_wild = comps
            .iter()
            .position(|c| c.contains(['*', '?', '[']))
            .unwrap_or(comps.len());
        let base = format!("/{}", comps[..first_wild].join("/"));
        if first_wild == comps.len() {
            return if self.fs.resolve(&base, true).is_ok() {
                vec![base]
            } else {
                vec![]
            };
        }
        let Ok(r) = self.fs.resolve(&base, true) else {
            return vec![];
        };
        let rest = comps[first_wild..].join("/");
        let Ok(m) = globset::GlobBuilder::new(&rest)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher())
        else {
            return vec![];
        };
        let depth = comps.len() - first_wild;
        let prefix = if r.path.is_empty() {
            String::new()
        } else {
            format!("{}/", r.path)
        };
        let mut out: Vec<String> = self
            .fs
            .subtree(&r.path)
            .filter_map(|(k, _)| k.strip_prefix(&prefix))
            .filter(|rest| rest.split('/').count() == depth && m.is_match(rest))
            .map(|rest| join(&base, rest))
            .collect();
        out.sort();
        out.truncate(10_000);
        out
    }
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        fs: &'a Rootfs,
        contents: &'a mut dyn Contents,
        run: &'a RunConfig,
        opts: &'a TraceOptions,
    ) -> Self {
        Cx {
            fs,
            contents,
            run,
            opts,
            out: Trace::default(),
            queue: VecDeque::new(),
            ld: State::default(),
            claimed: Vec::new(),
            warned: HashSet::new(),
            execs: HashSet::new(),
        }
    }
}

/// Run the rules to a fixed point from the entrypoint: each batch of work is shown to every
/// rule in table order (after one pass reads the files the rules want), then `finish` runs
/// until no rule adds work.
pub(crate) fn run(mut cx: Cx, rules: &mut [Box<dyn Rule>]) -> Result<Trace> {
    let run = cx.run;
    cx.out.argv = run.argv();
    if cx.out.argv.is_empty() {
        return Err(Error::Entrypoint(
            "the image config has neither Entrypoint nor Cmd".into(),
        ));
    }
    for r in rules.iter_mut() {
        r.start(&mut cx)?;
    }
    let argv = cx.out.argv.clone();
    let entry = cx.find_program(&argv[0], &[])?;
    cx.out.entrypoint = entry.clone();
    cx.keep(&entry, Evidence::new(Why::Entrypoint, None, "entrypoint"));
    cx.out.programs.insert(entry.clone());
    cx.queue.push_back(Work::Exec(Exec {
        path: entry,
        argv,
        unknown: Vec::new(),
        env: Vec::new(),
        depth: 0,
        hard: true,
    }));
    loop {
        while !cx.queue.is_empty() {
            let batch: Vec<Work> = cx.queue.drain(..).collect();
            let mut wanted = Vec::new();
            for r in rules.iter_mut() {
                wanted.extend(r.wanted(&mut cx, &batch)?);
            }
            wanted.sort();
            wanted.dedup();
            cx.contents.prefetch(cx.fs, &wanted)?;
            for w in &batch {
                for r in rules.iter_mut() {
                    match w {
                        Work::Exec(e) => r.exec(&mut cx, e)?,
                        Work::File(p) => r.file(&mut cx, p)?,
                        Work::Object(i) => r.object(&mut cx, *i)?,
                    }
                }
            }
        }
        for r in rules.iter_mut() {
            r.finish(&mut cx)?;
        }
        if cx.queue.is_empty() {
            break;
        }
    }
    Ok(cx.out)
}

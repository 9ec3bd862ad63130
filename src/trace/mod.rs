//! What the entrypoint needs, found statically, each kept file with the evidence that keeps it.
//!
//! A tracer runs a set of *evidence rules* to a fixed point over a work queue. The work is of
//! three kinds: a program started with an argv ([`Exec`]), a regular file that was just kept,
//! and an ELF object loaded into a process. Each rule answers, for the work it understands,
//! which further paths become necessary and why:
//!
//! - [`program`]: how a program runs: ELF or `#!` script, and the forms that run another
//!   command (`env`, `tini`, `dumb-init`, `gosu`, `su-exec`, `timeout`, `xargs`, …);
//! - [`loader`]: the dynamic loader's search (glibc and musl order, `$ORIGIN`, ld.so.conf);
//! - [`shell`]: the commands a shell script or `sh -c` string runs, and the scripts it sources;
//! - [`pathref`]: absolute paths named by the image config, by a kept program's read-only data
//!   or by a kept text file, and the include directives of configuration files ([`config`]);
//! - [`libc`]: what the C library loads or reads for the symbols the kept objects import
//!   (name service, iconv, locales, time zones, OpenSSL, SASL, fontconfig ([`fontconfig`]),
//!   libgcc_s), as a table;
//! - [`xmlcatalog`]: what an OASIS XML catalog points at (delegated catalogs, DTDs by relative
//!   `uri`, `rewritePrefix` trees);
//! - [`packages`]: the configuration and data of the packages whose programs run, and
//!   [`helpers`]: the package's helper programs it runs by bare name;
//! - [`runtime`]: language runtimes (Python, Node.js, Perl, Ruby, Java, PHP, Lua): their standard
//!   library and the import graph of the application;
//! - [`appdir`]: the application's own directory; [`keep`]: `--keep`; [`observed`]: what a
//!   `--learn` probe used.
//!
//! A new rule is a new file implementing [`Rule`]. Rules share one context ([`Cx`]) that owns
//! the kept set, the loader's state and the queue.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::elf::ElfFacts;
use crate::error::{Error, Result};
use crate::rootfs::{Kind, ResolveError, Rootfs, display};

mod active;
mod appdir;
pub(crate) mod config;
mod contents;
pub(crate) mod fontconfig;
mod helpers;
mod keep;
mod libc;
mod loader;
mod observed;
mod packages;
mod pathref;
mod plugins;
mod program;
pub(crate) mod risky;
mod runtime;
pub(crate) mod shell;
pub(crate) mod xmlcatalog;

pub use contents::{Contents, LayerContents, MAX_OBJECT_BYTES};
pub use loader::default_dirs;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest text file (config, script, ld.so.conf, …) read for tracing.
pub(crate) const MAX_TEXT_BYTES: u64 = 1 << 20;
/// At most this many evidence records are kept per path.
const MAX_EVIDENCE: usize = 8;

/// Which C library the closure uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Libc {
    Glibc {
        path: String,
        builtin_files_dns: bool,
    },
    Musl {
        interpreter: String,
    },
}

/// One line of the dependency tree.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: usize,
    pub name: String,
    /// Object index, or `None` when missing (with `--allow-missing`).
    pub to: Option<usize>,
    pub via: String,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub path: String,
    /// The name it was asked for (soname, interpreter path, argv[0]).
    pub name: String,
    pub facts: Arc<ElfFacts>,
    pub loader: Option<usize>,
    /// Loaded only by dlopen (NSS modules, libgcc_s, .note.dlopen, modules named by a config)
    /// or by such an object: what it misses makes a warning, not an error, as the dlopen would
    /// fail softly at run time.
    pub optional: bool,
    /// What `$ORIGIN` means for it: the executable's real directory (/proc/self/exe), and for
    /// a library the directory of the path it was opened by, symlinks not resolved, as glibc
    /// and musl do.
    pub origin: String,
    /// The executable of the process it is loaded into (its RPATH is the last resort).
    pub main: usize,
}

/// The kind of evidence that keeps a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// argv[0] of the image config.
    Entrypoint,
    /// A `#!` interpreter or an ELF PT_INTERP.
    Interpreter,
    /// Run by `env` or a wrapper (`tini`, `gosu`, `timeout`, …).
    Command,
    /// Run or sourced by a shell script or `sh -c` string.
    ScriptCommand,
    /// DT_NEEDED of a kept object.
    NeededBy,
    /// Loaded at run time (dlopen): `.note.dlopen`, NSS modules, modules a config names,
    /// extension modules.
    Dlopen,
    /// An absolute path named by the image config or by a kept file.
    PathReference,
    /// Included by a configuration file.
    ConfigInclude,
    /// Loaded or read by the C library for a symbol a kept object imports.
    LibcFeature,
    /// A language runtime's start-up set, standard library or the application's imports.
    Runtime,
    /// The application's own directory.
    AppDir,
    /// `--keep`.
    KeepFlag,
    /// Used by a probe's program in the source (`--learn`).
    Observed,
    /// A symlink on the way to a kept path.
    Symlink,
    /// Configuration or data of a package that owns a program the entrypoint runs, or of its
    /// dependencies (the image's package database).
    Package,
}

/// Why one path is kept: the kind of evidence, the kept file (or config key) that caused it,
/// and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub kind: Why,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub detail: String,
    /// Kept as part of this directory (kept whole), not named itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

impl Evidence {
    pub fn new(kind: Why, from: Option<&str>, detail: impl Into<String>) -> Self {
        Evidence {
            kind,
            from: from.map(display),
            detail: detail.into(),
            within: None,
        }
    }

    /// The same reason, for an entry kept because its directory `dir` is kept whole.
    pub fn inside(&self, dir: &str) -> Self {
        Evidence {
            within: self.within.clone().or_else(|| Some(display(dir))),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A libc feature that fired: which symbol (or library) of which object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureHit {
    pub feature: String,
    /// The symbol (`localtime@GLIBC_2.2.5`) or library (`libssl.so.3`) that triggered it.
    pub trigger: String,
    pub object: String,
}

#[derive(Debug, Default)]
pub struct Trace {
    /// argv as the image runs it.
    pub argv: Vec<String>,
    /// Canonical path of argv[0].
    pub entrypoint: String,
    /// Canonical regular files and directories → why kept (first reason first). A directory
    /// kept by `--keep` stands for its whole subtree.
    pub files: BTreeMap<String, Vec<Evidence>>,
    /// Symlinks passed on the way → why kept.
    pub symlinks: BTreeMap<String, Vec<Evidence>>,
    pub objects: Vec<Object>,
    /// Roots of the tree (programs, and objects loaded by dlopen outside any tree).
    pub roots: Vec<usize>,
    pub edges: Vec<Edge>,
    pub libc: Option<Libc>,
    /// Libraries found only through ld.so.conf: (soname, path ld.so opens) for a new ld.so.cache.
    pub ldconf_libs: Vec<(String, String)>,
    /// Programs the entrypoint runs (canonical paths): argv[0], interpreters, the commands of
    /// its scripts and wrappers. `pare check` reports these as needed, not as violations.
    pub programs: BTreeSet<String>,
    /// libc features that fired.
    pub features: Vec<FeatureHit>,
    /// Paths a rule looked at and did not keep, with why (`pare trace --why`).
    pub dropped: BTreeMap<String, String>,
    /// Executables (shells, helpers) that only weak evidence points at: not kept, with what
    /// would have brought them and how to keep them (`--keep`).
    pub withheld: BTreeMap<String, String>,
    pub warnings: Vec<String>,
    /// What static analysis could not decide (a command computed at run time at FILE:LINE, a
    /// large tree not kept, charsets chosen at run time): `--learn` with the image's own Cmd
    /// settles them.
    pub questions: Vec<String>,
    /// The image's package database, when it has one.
    pub packages: Option<std::sync::Arc<crate::packages::Db>>,
    /// Libraries not in the image (`--allow-missing`) that a package of the database lists:
    /// (library, the object that needs it, `package version`).
    pub missing_from_packages: Vec<(String, String, String)>,
}

impl Trace {
    /// Every reason a path (canonical, no leading slash) is kept, empty when it is not.
    pub fn evidence(&self, path: &str) -> &[Evidence] {
        let p = path.trim_start_matches('/');
        self.files
            .get(p)
            .or_else(|| self.symlinks.get(p))
            .map_or(&[], |v| v.as_slice())
    }

    /// What the entrypoint needs for `pare check`: the programs it runs and the links on the
    /// way to kept paths.
    pub fn needed(&self) -> BTreeSet<String> {
        self.programs
            .iter()
            .chain(self.symlinks.keys())
            .cloned()
            .collect()
    }

    /// The first reason, as one sentence.
    pub fn reason(&self, path: &str) -> String {
        self.evidence(path)
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default()
    }

    /// Answer "why is PATH kept (or not)" for `pare trace --why`: the path as resolved in the
    /// image, and one line per reason.
    pub fn why(&self, fs: &Rootfs, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let resolved = fs.resolve(path, true).ok();
        let mut asked = vec![path.trim_start_matches('/').to_string()];
        if let Some(r) = &resolved {
            for l in &r.symlinks {
                asked.push(l.clone());
            }
            asked.push(r.path.clone());
        }
        asked.dedup();
        let mut any = false;
        for p in &asked {
            let ev = self.evidence(p);
            if !ev.is_empty() {
                any = true;
                out.push(format!("{} is kept:", display(p)));
                for e in ev {
                    out.push(format!("  [{}] {}", kind_name(e.kind), e.detail));
                }
            } else if let Some(d) = self.withheld.get(p) {
                out.push(format!("{} is withheld: {d}", display(p)));
                any = true;
            } else if let Some(d) = self.dropped.get(p) {
                out.push(format!("{} is not kept: {d}", display(p)));
                any = true;
            }
        }
        // A path inside a kept directory (`--keep DIR`).
        if !any {
            for p in &asked {
                let mut cur = p.as_str();
                while let Some(i) = cur.rfind('/') {
                    cur = &cur[..i];
                    if fs.get(cur).is_some_and(|n| n.is_dir())
                        && let Some(ev) = self.files.get(cur)
                        && ev.iter().any(|e| e.kind == Why::KeepFlag)
                    {
                        out.push(format!("{} is kept: inside {}", display(p), display(cur)));
                        any = true;
                        break;
                    }
                }
            }
        }
        if !any {
            match resolved {
                None if fs.get(path).is_none() => {
                    out.push(format!("{} is not in the image", display(path)))
                }
                _ => out.push(format!(
                    "{} is not kept: nothing the entrypoint runs, loads, reads or names leads to it",
                    display(path)
                )),
            }
        }
        out
    }
}

/// The kebab-case name of an evidence kind, as the JSON report spells it.
pub fn kind_name(k: Why) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub allow_missing: bool,
    /// `--keep` patterns (globs on absolute paths).
    pub keep: Vec<String>,
    /// `--runtime-full`: keep a language runtime's whole standard library.
    pub runtime_full: bool,
    /// `--no-packages`: the package database's configuration and data are not followed.
    pub no_packages: bool,
    /// `--learn`: absolute paths a probe's program used in the source (kept).
    pub observed: Vec<String>,
}

/// What the image config says about running it.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
}

impl RunConfig {
    pub fn from_config(config: &serde_json::Value) -> Self {
        let c = config.get("config").cloned().unwrap_or_default();
        let strs = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        RunConfig {
            entrypoint: strs("Entrypoint"),
            cmd: strs("Cmd"),
            env: strs("Env"),
            workdir: c
                .get("WorkingDir")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        }
    }

    pub fn argv(&self) -> Vec<String> {
        if self.entrypoint.is_empty() {
            self.cmd.clone()
        } else {
            self.entrypoint
                .iter()
                .chain(self.cmd.iter())
                .cloned()
                .collect()
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    }

    /// The working directory, `/` when unset.
    pub fn cwd(&self) -> &str {
        if self.workdir.is_empty() {
            "/"
        } else {
            &self.workdir
        }
    }
}

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
    queue: VecDeque<Work>,
    pub ld: loader::State,
    /// Trees a runtime rule answers for (canonical, no leading slash): path references, text
    /// scans and the app-dir rule leave them alone.
    pub claimed: Vec<String>,
    warned: HashSet<String>,
    /// Programs already queued with the same argv.
    execs: HashSet<(String, Vec<String>)>,
}

/// Trace what the image's entrypoint needs.
pub fn trace<C: Contents>(
    fs: &Rootfs,
    contents: &mut C,
    run: &RunConfig,
    opts: &TraceOptions,
) -> Result<Trace> {
    let mut cx = Cx {
        fs,
        contents,
        run,
        opts,
        out: Trace::default(),
        queue: VecDeque::new(),
        ld: loader::State::default(),
        claimed: Vec::new(),
        warned: HashSet::new(),
        execs: HashSet::new(),
    };
    let mut rules: Vec<Box<dyn Rule>> = vec![
        Box::new(program::Programs),
        Box::new(loader::Loader),
        Box::new(shell::Shells),
        Box::new(runtime::python::Python::default()),
        Box::new(runtime::node::Node),
        Box::new(runtime::perl::Perl),
        Box::new(runtime::ruby::Ruby::default()),
        Box::new(runtime::java::Java::default()),
        Box::new(runtime::php::Php),
        Box::new(runtime::lua::Lua::default()),
        Box::new(runtime::tcl::Tcl),
        Box::new(pathref::PathRefs::default()),
        Box::new(packages::Packages::default()),
        Box::new(helpers::Helpers::default()),
        Box::new(libc::Features::default()),
        Box::new(appdir::AppDir::default()),
        Box::new(xmlcatalog::XmlCatalogs),
        Box::new(keep::Keep),
        Box::new(observed::Observed),
    ];
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

/// `p` made absolute against directory `cwd`.
pub(crate) fn abs_in(cwd: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        join(cwd, p)
    }
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// The directory of a canonical path, displayed (`usr/bin/jq` → `/usr/bin`).
pub(crate) fn dir_of(canonical: &str) -> String {
    display(canonical.rfind('/').map_or("", |i| &canonical[..i]))
}

/// Whether `path` (canonical) is `tree` or inside it.
pub(crate) fn under(path: &str, tree: &str) -> bool {
    tree.is_empty()
        || path == tree
        || (path.starts_with(tree) && path.as_bytes().get(tree.len()) == Some(&b'/'))
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
        let entries: Vec<(String, Kind)> = self
            .fs
            .subtree(dir)
            .filter(|(k, _)| !skip(k.get(dir.len() + 1..).unwrap_or("")))
            .map(|(k, n)| (k.clone(), n.kind.clone()))
            .collect();
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

/// Print the tree like lddtree: each object once, with how each name was found. Iterative, so
/// a hostile chain of thousands of libraries cannot overflow the stack.
pub fn render_tree(t: &Trace) -> String {
    enum Item {
        Expand(usize, usize),
        Line(usize, usize),
    }
    let mut by_from: std::collections::HashMap<usize, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, e) in t.edges.iter().enumerate() {
        by_from.entry(e.from).or_default().push(i);
    }
    let mut out = String::new();
    let mut expanded = HashSet::new();
    for &r in &t.roots {
        let o = &t.objects[r];
        out.push_str(&display(&o.path));
        if let Some(i) = &o.facts.interpreter {
            out.push_str(&format!(" (interpreter => {i})"));
        }
        out.push('\n');
        let mut stack = vec![Item::Expand(r, 0)];
        while let Some(item) = stack.pop() {
            match item {
                Item::Expand(idx, depth) => {
                    if !expanded.insert(idx) {
                        continue;
                    }
                    for &e in by_from.get(&idx).into_iter().flatten().rev() {
                        stack.push(Item::Line(e, depth + 1));
                    }
                }
                Item::Line(e, depth) => {
                    let e = &t.edges[e];
                    let pad = "    ".repeat(depth.min(32));
                    match e.to {
                        Some(to) if e.via != "already loaded" => {
                            out.push_str(&format!(
                                "{pad}{} => {} [{}]\n",
                                e.name,
                                display(&t.objects[to].path),
                                e.via
                            ));
                            stack.push(Item::Expand(to, depth));
                        }
                        Some(_) => {}
                        None => out.push_str(&format!("{pad}{} => not found\n", e.name)),
                    }
                }
            }
        }
    }
    out
}

/// Every kept path with its evidence, one per line (files, then symlinks), and the libc
/// features that fired: what `pare trace` prints after the tree.
pub fn render_kept(t: &Trace) -> String {
    let mut out = String::new();
    if !t.features.is_empty() {
        out.push_str("libc features:\n");
        for f in &t.features {
            out.push_str(&format!(
                "    {} <= {} in {}\n",
                f.feature, f.trigger, f.object
            ));
        }
    }
    out.push_str("kept:\n");
    for (p, ev) in t.files.iter().chain(t.symlinks.iter()) {
        let first = ev.first();
        out.push_str(&format!(
            "    {:<56} [{}] {}",
            display(p),
            first.map(|e| kind_name(e.kind)).unwrap_or_default(),
            first.map(|e| e.detail.as_str()).unwrap_or("")
        ));
        if ev.len() > 1 {
            out.push_str(&format!(" (+{} more)", ev.len() - 1));
        }
        out.push('\n');
    }
    out
}

/// The trace as JSON: every kept path with its evidence, the libc features that fired, what
/// was looked at and dropped, and the warnings.
pub fn json(t: &Trace) -> serde_json::Value {
    let files: serde_json::Map<String, serde_json::Value> = t
        .files
        .iter()
        .chain(t.symlinks.iter())
        .map(|(p, ev)| {
            (
                display(p),
                serde_json::json!({
                    "reason": ev.first().map(|e| e.detail.clone()).unwrap_or_default(),
                    "evidence": ev,
                }),
            )
        })
        .collect();
    let dropped: serde_json::Map<String, serde_json::Value> = t
        .dropped
        .iter()
        .map(|(p, why)| (display(p), serde_json::Value::String(why.clone())))
        .collect();
    serde_json::json!({
        "argv": t.argv,
        "entrypoint": display(&t.entrypoint),
        "files": files,
        "features": t.features,
        "programs": t.programs.iter().map(|p| display(p)).collect::<Vec<_>>(),
        "dropped": dropped,
        "warnings": t.warnings,
        "open_questions": t.questions,
    })
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod evidence_tests;

//! The ELF closure of an entrypoint, resolved inside the image the way the dynamic loader
//! would: argv[0] through the image's PATH, `#!` interpreters (and `/usr/bin/env NAME`),
//! PT_INTERP, and each DT_NEEDED through glibc's order (DT_RPATH up the loader chain unless the
//! object has DT_RUNPATH, LD_LIBRARY_PATH, DT_RUNPATH, the ld.so.conf directories, the default
//! directories, each probed under `glibc-hwcaps/*` first) or musl's. Every symlink on the way
//! is recorded, and each kept file says why it is kept.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::elf::{self, ElfFacts};
use crate::error::{Error, Result};
use crate::rootfs::{Kind, ResolveError, Rootfs, display};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest file read as an ELF object or script.
pub const MAX_OBJECT_BYTES: u64 = 2 << 30;
/// Largest text file (ld.so.conf, nsswitch.conf, …) read for tracing.
const MAX_TEXT_BYTES: u64 = 1 << 20;

/// Access to file contents, so the search logic can be tested apart from layer streaming.
pub trait Contents {
    /// Hint: these files will be read soon (lets a layer be streamed once for many files).
    fn prefetch(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()>;
    /// Up to `max` bytes of a regular file (canonical path).
    fn read(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>>;
    /// ELF facts of a regular file, `None` when it is not ELF.
    fn elf(&mut self, fs: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>>;
    /// The first `n` bytes of a regular file (fewer when it is shorter).
    fn head(&mut self, fs: &Rootfs, path: &str, n: usize) -> Result<Vec<u8>> {
        let mut b = self.read(fs, path, MAX_OBJECT_BYTES)?;
        b.truncate(n);
        Ok(b)
    }
    /// Whether a regular file contains `needle`.
    fn contains(&mut self, fs: &Rootfs, path: &str, needle: &[u8]) -> Result<bool> {
        let b = self.read(fs, path, MAX_OBJECT_BYTES)?;
        Ok(b.windows(needle.len()).any(|w| w == needle))
    }
}

/// [`Contents`] over the real layers: files are copied into a work dir on first use.
pub struct LayerContents {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    facts: HashMap<String, Option<Arc<ElfFacts>>>,
}

impl LayerContents {
    pub fn new(dir: &Path) -> Self {
        LayerContents {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            facts: HashMap::new(),
        }
    }

    /// Local copy of a file, reading it from its layer if needed.
    pub fn local(&mut self, fs: &Rootfs, path: &str) -> Result<PathBuf> {
        if let Some(p) = self.files.get(path) {
            return Ok(p.clone());
        }
        self.prefetch(fs, &[path.to_string()])?;
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| Error::path(display(path), "not a regular file"))
    }

    pub fn into_files(self) -> HashMap<String, PathBuf> {
        self.files
    }
}

impl Contents for LayerContents {
    fn prefetch(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()> {
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !self.files.contains_key(*p))
            .filter(|p| matches!(fs.get(p).map(|n| &n.kind), Some(Kind::File { .. })))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let got = fs.read_files(&missing, &self.dir)?;
            self.files.extend(got);
        }
        Ok(())
    }

    fn read(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>> {
        if fs.get(path).map_or(0, |n| n.size()) > max {
            return Err(Error::path(
                display(path),
                format!("larger than {max} bytes"),
            ));
        }
        let local = self.local(fs, path)?;
        crate::layout::read_bounded(&local, max)
            .map_err(|_| Error::path(display(path), format!("larger than {max} bytes")))
    }

    fn head(&mut self, fs: &Rootfs, path: &str, n: usize) -> Result<Vec<u8>> {
        let local = self.local(fs, path)?;
        let f = std::fs::File::open(&local).map_err(|e| Error::io(&local, e))?;
        let mut out = Vec::with_capacity(n);
        std::io::Read::read_to_end(&mut std::io::Read::take(f, n as u64), &mut out)
            .map_err(|e| Error::io(&local, e))?;
        Ok(out)
    }

    fn contains(&mut self, fs: &Rootfs, path: &str, needle: &[u8]) -> Result<bool> {
        let local = self.local(fs, path)?;
        let mut f = std::fs::File::open(&local).map_err(|e| Error::io(&local, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let keep = needle.len().saturating_sub(1);
        let mut filled = 0;
        loop {
            let k = std::io::Read::read(&mut f, &mut buf[filled..])
                .map_err(|e| Error::io(&local, e))?;
            if k == 0 {
                return Ok(false);
            }
            filled += k;
            if buf[..filled].windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
            // Keep the tail that could start a match across the boundary.
            let tail = filled.saturating_sub(keep);
            buf.copy_within(tail..filled, 0);
            filled -= tail;
        }
    }

    fn elf(&mut self, fs: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>> {
        if let Some(f) = self.facts.get(path) {
            return Ok(f.clone());
        }
        let size = fs.get(path).map_or(0, |n| n.size());
        if size > MAX_OBJECT_BYTES {
            return Err(Error::path(
                display(path),
                "larger than 2 GiB; refusing to parse",
            ));
        }
        let local = self.local(fs, path)?;
        let file = std::fs::File::open(&local).map_err(|e| Error::io(&local, e))?;
        let facts = if size < 4 {
            None
        } else {
            // SAFETY: the file is pare's private copy in its own work dir; nothing else writes it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&local, e))?;
            if elf::is_elf(&map) {
                Some(Arc::new(elf::parse(&map).map_err(|reason| Error::Elf {
                    path: display(path),
                    reason,
                })?))
            } else {
                None
            }
        };
        self.facts.insert(path.to_string(), facts.clone());
        Ok(facts)
    }
}

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
    /// Loaded only by dlopen (NSS modules, libgcc_s, .note.dlopen) or by such an object: what
    /// it misses makes a warning, not an error, as the dlopen would fail softly at run time.
    pub optional: bool,
    /// What `$ORIGIN` means for it: the executable's real directory (/proc/self/exe), and for
    /// a library the directory of the path it was opened by, symlinks not resolved, as glibc
    /// and musl do.
    pub origin: String,
    /// The executable of the process it is loaded into (its RPATH is the last resort).
    pub main: usize,
}

#[derive(Debug, Default)]
pub struct Trace {
    /// argv as the image runs it.
    pub argv: Vec<String>,
    /// Canonical path of argv[0].
    pub entrypoint: String,
    /// Canonical regular files (and directories for `--keep`) → why kept.
    pub files: BTreeMap<String, String>,
    /// Symlinks passed on the way → why kept.
    pub symlinks: BTreeMap<String, String>,
    pub objects: Vec<Object>,
    /// Roots of the tree (entrypoint, interpreter chain, extra roots).
    pub roots: Vec<usize>,
    pub edges: Vec<Edge>,
    pub libc: Option<Libc>,
    /// Libraries found only through ld.so.conf: (soname, path ld.so opens) for a new ld.so.cache.
    pub ldconf_libs: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub allow_missing: bool,
    /// `--keep` patterns (globs on absolute paths).
    pub keep: Vec<String>,
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
}

struct Tracer<'a, C: Contents> {
    fs: &'a Rootfs,
    contents: &'a mut C,
    run: &'a RunConfig,
    opts: &'a TraceOptions,
    out: Trace,
    /// Loaded objects by every name they answer to (request name, soname, canonical path).
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    queue: VecDeque<usize>,
    ldconf_dirs: Option<Vec<String>>,
    musl_path: Option<Vec<String>>,
}

/// Trace the closure of the image's entrypoint (plus `--keep` ELF files).
pub fn trace<C: Contents>(
    fs: &Rootfs,
    contents: &mut C,
    run: &RunConfig,
    opts: &TraceOptions,
) -> Result<Trace> {
    let mut t = Tracer {
        fs,
        contents,
        run,
        opts,
        out: Trace::default(),
        by_name: HashMap::new(),
        by_path: HashMap::new(),
        queue: VecDeque::new(),
        ldconf_dirs: None,
        musl_path: None,
    };
    t.out.argv = run.argv();
    if t.out.argv.is_empty() {
        return Err(Error::Entrypoint(
            "the image config has neither Entrypoint nor Cmd".into(),
        ));
    }
    let argv0 = t.out.argv[0].clone();
    let entry = t.find_program(&argv0)?;
    t.out.entrypoint = entry.clone();
    let base = argv0.rsplit('/').next().unwrap_or("");
    if matches!(base, "sh" | "bash" | "dash" | "ash" | "zsh" | "busybox")
        && t.out.argv.iter().any(|a| a == "-c")
    {
        t.out.warnings.push(format!(
            "the entrypoint runs a shell command string ({:?}): the programs it starts are not traced; keep them with --keep",
            t.out.argv.join(" ")
        ));
    }
    t.add_program(&entry, &argv0, "entrypoint", 0)?;
    t.run_queue()?;
    t.keep_patterns()?;
    t.run_queue()?;
    t.libc_extras()?;
    t.run_queue()?;
    Ok(t.out)
}

fn expand_tokens(s: &str, origin: &str, facts: &ElfFacts) -> String {
    let lib = if facts.is_64 { "lib64" } else { "lib" };
    let plat = elf::platform_string(facts.machine);
    s.replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", lib)
        .replace("$LIB", lib)
        .replace("${PLATFORM}", plat)
        .replace("$PLATFORM", plat)
}

/// argv[0] → the executable file it runs (canonical path and the symlinks on the way), through
/// the image's PATH when it has no slash, as the runtime's exec does.
pub fn find_program(fs: &Rootfs, run: &RunConfig, argv0: &str) -> Result<crate::rootfs::Resolved> {
    let in_workdir = |p: &str| {
        if p.starts_with('/') {
            p.to_string()
        } else {
            join(
                if run.workdir.is_empty() {
                    "/"
                } else {
                    &run.workdir
                },
                p,
            )
        }
    };
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![in_workdir(argv0)]
    } else {
        run.env_var("PATH")
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| join(&in_workdir(d), argv0))
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
            candidates[0]
        )
    } else {
        format!(
            "{argv0:?} is not an executable in the image's PATH ({})",
            run.env_var("PATH").unwrap_or(DEFAULT_PATH)
        )
    }))
}

/// `$ORIGIN` alone (musl expands no other token).
fn expand_origin(s: &str, origin: &str) -> String {
    s.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
}

/// The directory part of a path as written (`/a/b/../lib/x.so` → `/a/b/../lib`).
fn dir_of_raw(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

fn dir_of(canonical: &str) -> String {
    display(canonical.rfind('/').map_or("", |i| &canonical[..i]))
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// musl resolves these names to itself (`libc.*`, `libpthread.*`, …).
fn musl_reserved(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("lib") else {
        return false;
    };
    ["c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet."]
        .iter()
        .any(|r| rest.starts_with(r))
}

impl<C: Contents> Tracer<'_, C> {
    fn keep_file(&mut self, path: &str, why: impl Into<String>) {
        self.out
            .files
            .entry(path.to_string())
            .or_insert_with(|| why.into());
    }

    fn keep_links(&mut self, links: &[String], target: &str) {
        for l in links {
            self.out
                .symlinks
                .entry(l.clone())
                .or_insert_with(|| format!("symlink on the way to {}", display(target)));
        }
    }

    /// Resolve an absolute path to a regular file, keeping its symlinks. `Ok(None)` when absent.
    fn resolve_file(&mut self, path: &str) -> Result<Option<(String, Vec<String>)>> {
        match self.fs.resolve(path, true) {
            Ok(r) => match self.fs.get(&r.path).map(|n| &n.kind) {
                Some(Kind::File { .. }) => Ok(Some((r.path, r.symlinks))),
                _ => Ok(None),
            },
            Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into_error(path)),
        }
    }

    fn abs_in_workdir(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            join(
                if self.run.workdir.is_empty() {
                    "/"
                } else {
                    &self.run.workdir
                },
                p,
            )
        }
    }

    /// argv[0] → canonical path, through the image's PATH when it has no slash.
    fn find_program(&mut self, argv0: &str) -> Result<String> {
        let r = find_program(self.fs, self.run, argv0)?;
        self.keep_links(&r.symlinks, &r.path);
        Ok(r.path)
    }

    /// Keep a program: a `#!` script (and its interpreter) or an ELF executable.
    fn add_program(&mut self, path: &str, name: &str, why: &str, depth: usize) -> Result<()> {
        if depth > 4 {
            return Err(Error::Entrypoint(format!(
                "{}: too many nested #! interpreters",
                display(path)
            )));
        }
        self.keep_file(path, why);
        if let Some(facts) = self.contents.elf(self.fs, path)? {
            self.add_root(path, name, facts);
            return Ok(());
        }
        let head = self.contents.head(self.fs, path, 4096)?;
        if !head.starts_with(b"#!") {
            return Err(Error::Entrypoint(format!(
                "{} is neither an ELF executable nor a #! script",
                display(path)
            )));
        }
        let line_end = head.iter().position(|&b| b == b'\n').ok_or_else(|| {
            Error::Entrypoint(format!("{}: #! line longer than 4096 bytes", display(path)))
        })?;
        let line = String::from_utf8_lossy(&head[2..line_end])
            .trim()
            .to_string();
        let mut parts = line.splitn(2, [' ', '\t']);
        let interp = parts.next().unwrap_or("").to_string();
        let arg = parts.next().unwrap_or("").trim().to_string();
        if interp.is_empty() {
            return Err(Error::Entrypoint(format!(
                "{}: empty #! line",
                display(path)
            )));
        }
        let Some((ipath, links)) = self.resolve_file(&interp)? else {
            return Err(Error::Entrypoint(format!(
                "{}: its #! interpreter {interp} is not in the image",
                display(path)
            )));
        };
        self.keep_links(&links, &ipath);
        let why_i = format!("#! interpreter of {}", display(path));
        self.add_program(&ipath, &interp, &why_i, depth + 1)?;
        if interp.rsplit('/').next() == Some("env") {
            // `/usr/bin/env [-S] [VAR=x] NAME args`: NAME is found through PATH.
            let target = arg
                .split_whitespace()
                .find(|w| !w.starts_with('-') && !w.contains('='));
            if let Some(target) = target {
                let p = self.find_program(target).map_err(|e| {
                    Error::Entrypoint(format!(
                        "{} (via /usr/bin/env in {}): {e}",
                        target,
                        display(path)
                    ))
                })?;
                let why_t = format!("run by /usr/bin/env from {}", display(path));
                self.add_program(&p, target, &why_t, depth + 1)?;
            }
        }
        Ok(())
    }

    /// A program: the root of a process.
    fn add_root(&mut self, path: &str, name: &str, facts: Arc<ElfFacts>) -> usize {
        let existed = self.by_path.contains_key(path);
        let idx = self.add_object_opt(path, name, facts, None, false, dir_of(path));
        if !existed {
            self.out.objects[idx].main = idx;
            self.out.roots.push(idx);
        }
        idx
    }

    fn add_object_opt(
        &mut self,
        path: &str,
        name: &str,
        facts: Arc<ElfFacts>,
        loader: Option<usize>,
        optional: bool,
        origin: String,
    ) -> usize {
        if let Some(&i) = self.by_path.get(path) {
            self.by_name.insert(name.to_string(), i);
            return i;
        }
        let idx = self.out.objects.len();
        let main = loader.map_or(idx, |l| self.out.objects[l].main);
        self.out.objects.push(Object {
            path: path.to_string(),
            name: name.to_string(),
            facts: facts.clone(),
            loader,
            optional,
            origin,
            main,
        });
        self.by_path.insert(path.to_string(), idx);
        self.by_name.insert(name.to_string(), idx);
        if let Some(s) = &facts.soname {
            self.by_name.entry(s.clone()).or_insert(idx);
        }
        self.queue.push_back(idx);
        idx
    }

    /// Breadth-first, a level at a time: the files every object of a level may need are read
    /// in one pass over each layer before the level is processed.
    fn run_queue(&mut self) -> Result<()> {
        while !self.queue.is_empty() {
            let level: Vec<usize> = self.queue.drain(..).collect();
            let mut wanted = Vec::new();
            for &idx in &level {
                wanted.extend(self.wanted_by(idx)?);
            }
            self.contents.prefetch(self.fs, &wanted)?;
            for idx in level {
                self.process(idx)?;
            }
        }
        Ok(())
    }

    /// Canonical paths of every existing candidate for the names object `idx` needs.
    fn wanted_by(&mut self, idx: usize) -> Result<Vec<String>> {
        let facts = self.out.objects[idx].facts.clone();
        let mut wanted = Vec::new();
        if let Some(interp) = &facts.interpreter
            && let Ok(r) = self.fs.resolve(interp, true)
        {
            wanted.push(r.path);
        }
        for n in facts.needed.iter().chain(facts.dlopen.iter()) {
            if self.by_name.contains_key(n) {
                continue;
            }
            for (cand, _) in self.candidates(idx, n)? {
                if let Ok(r) = self.fs.resolve(&cand, true) {
                    wanted.push(r.path);
                }
            }
        }
        Ok(wanted)
    }

    fn is_musl(&self) -> bool {
        matches!(self.out.libc, Some(Libc::Musl { .. }))
    }

    fn process(&mut self, idx: usize) -> Result<()> {
        let obj = self.out.objects[idx].clone();
        let facts = obj.facts.clone();
        if let Some(interp) = &facts.interpreter {
            let Some((ipath, links)) = self.resolve_file(interp)? else {
                return Err(Error::MissingLibrary {
                    object: display(&obj.path),
                    name: interp.clone(),
                    searched: "PT_INTERP".into(),
                });
            };
            self.keep_links(&links, &ipath);
            self.keep_file(
                &ipath,
                format!("interpreter (PT_INTERP) of {}", display(&obj.path)),
            );
            if interp.contains("ld-musl-") && self.out.libc.is_none() {
                self.out.libc = Some(Libc::Musl {
                    interpreter: ipath.clone(),
                });
            }
            if !self.by_path.contains_key(&ipath)
                && let Some(f) = self.contents.elf(self.fs, &ipath)?
            {
                self.add_object_opt(&ipath, interp, f, Some(idx), false, dir_of(interp));
            }
        }
        let names: Vec<(String, bool)> = facts
            .needed
            .iter()
            .map(|n| (n.clone(), true))
            .chain(facts.dlopen.iter().map(|n| (n.clone(), false)))
            .collect();
        for (n, required) in names {
            let why = if required {
                format!("needed by {}", display(&obj.path))
            } else {
                format!("named in the .note.dlopen of {}", display(&obj.path))
            };
            self.load(idx, &n, &why, required)?;
        }
        if self.out.libc.is_none() && facts.soname.as_deref() == Some("libc.so.6") {
            let builtin = self.glibc_builtin_nss(&obj.path)?;
            self.out.libc = Some(Libc::Glibc {
                path: obj.path.clone(),
                builtin_files_dns: builtin,
            });
        }
        Ok(())
    }

    /// Resolve `name` as needed by object `idx` and keep it. `required` makes absence an error
    /// (unless `--allow-missing`).
    fn load(&mut self, idx: usize, name: &str, why: &str, required: bool) -> Result<Option<usize>> {
        let optional = !required || self.out.objects[idx].optional;
        if self.is_musl()
            && musl_reserved(name)
            && let Some(Libc::Musl { interpreter }) = &self.out.libc
        {
            let to = self.by_path.get(interpreter).copied();
            self.out.edges.push(Edge {
                from: idx,
                name: name.into(),
                to,
                via: "musl libc".into(),
            });
            return Ok(to);
        }
        if let Some(&to) = self.by_name.get(name) {
            self.out.edges.push(Edge {
                from: idx,
                name: name.into(),
                to: Some(to),
                via: "already loaded".into(),
            });
            return Ok(Some(to));
        }
        let obj_facts = self.out.objects[idx].facts.clone();
        let mut found: Option<(String, String, String)> = None; // (canonical, requested path, via)
        let mut extra_hwcaps = Vec::new();
        let mut searched = Vec::new();
        for (cand, via) in self.candidates(idx, name)? {
            searched.push(cand.clone());
            let Some((canon, links)) = self.resolve_file(&cand)? else {
                continue;
            };
            let Some(f) = self.contents.elf(self.fs, &canon)? else {
                continue;
            };
            if !obj_facts.compatible(&f) {
                continue;
            }
            if cand.contains("/glibc-hwcaps/") {
                // Keep every hwcaps variant (the CPU is unknown); keep looking for the baseline.
                extra_hwcaps.push((canon, links, cand, f));
                continue;
            }
            self.keep_links(&links, &canon);
            found = Some((canon, cand, via));
            break;
        }
        if found.is_none()
            && let Some((canon, links, cand, _)) = extra_hwcaps.pop()
        {
            self.keep_links(&links, &canon);
            found = Some((canon, cand, "glibc-hwcaps".into()));
        }
        let Some((canon, requested, via)) = found else {
            if !optional && !self.opts.allow_missing {
                // Name the directories searched (without the glibc-hwcaps probes).
                let mut dirs: Vec<String> = Vec::new();
                for c in searched.iter().filter(|c| !c.contains("/glibc-hwcaps/")) {
                    let d = c.rfind('/').map_or("/", |i| &c[..i.max(1)]).to_string();
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                let mut s = dirs.join(", ");
                if s.len() > 600 {
                    s.truncate(s.floor_char_boundary(600));
                    s.push_str(", …");
                }
                return Err(Error::MissingLibrary {
                    object: display(&self.out.objects[idx].path),
                    name: name.into(),
                    searched: if s.is_empty() { "nowhere".into() } else { s },
                });
            }
            if required {
                self.out.warnings.push(format!(
                    "{}: needs {name}, which is not in the image{}",
                    display(&self.out.objects[idx].path),
                    if optional {
                        " (it is only loaded by dlopen, which will fail as in the source image)"
                    } else {
                        " (--allow-missing)"
                    }
                ));
            }
            self.out.edges.push(Edge {
                from: idx,
                name: name.into(),
                to: None,
                via: "not found".into(),
            });
            return Ok(None);
        };
        for (hcanon, hlinks, hcand, hf) in extra_hwcaps {
            self.keep_links(&hlinks, &hcanon);
            self.keep_file(&hcanon, format!("glibc-hwcaps variant of {name}, {why}"));
            self.add_object_opt(&hcanon, name, hf, Some(idx), optional, dir_of_raw(&hcand));
        }
        self.keep_file(&canon, format!("{name}, {why} (found via {via})"));
        if via == "ld.so.conf" {
            let soname = self
                .contents
                .elf(self.fs, &canon)?
                .and_then(|f| f.soname.clone())
                .unwrap_or_else(|| name.to_string());
            self.out.ldconf_libs.push((soname, requested.clone()));
        }
        let f = self
            .contents
            .elf(self.fs, &canon)?
            .ok_or_else(|| Error::path(display(&canon), "not ELF"))?;
        let to = self.add_object_opt(&canon, name, f, Some(idx), optional, dir_of_raw(&requested));
        self.out.edges.push(Edge {
            from: idx,
            name: name.into(),
            to: Some(to),
            via,
        });
        Ok(Some(to))
    }

    /// Candidate absolute paths for `name` needed by object `idx`, in the loader's order, each
    /// with how it was found.
    fn candidates(&mut self, idx: usize, name: &str) -> Result<Vec<(String, String)>> {
        let obj = &self.out.objects[idx];
        let facts = obj.facts.clone();
        let origin = obj.origin.clone();
        let main = obj.main;
        let musl = self.is_musl()
            || facts
                .interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-musl-"));
        if name.contains('/') {
            let p = if musl {
                expand_origin(name, &origin)
            } else {
                expand_tokens(name, &origin, &facts)
            };
            return Ok(vec![(self.abs_in_workdir(&p), "path in DT_NEEDED".into())]);
        }
        let mut dirs: Vec<(String, &'static str)> = Vec::new();
        let exe_origin = self.out.objects[main].origin.clone();
        let ld_library_path = self
            .run
            .env_var("LD_LIBRARY_PATH")
            .unwrap_or("")
            .to_string();
        if musl {
            // musl: LD_LIBRARY_PATH (split on ':'), then the RUNPATH, else RPATH, of the object
            // and of everything that loaded it, then the path file; only $ORIGIN expands.
            for d in ld_library_path.split(':').filter(|d| !d.is_empty()) {
                dirs.push((expand_origin(d, &exe_origin), "LD_LIBRARY_PATH"));
            }
            let mut cur = Some(idx);
            while let Some(i) = cur {
                let o = &self.out.objects[i];
                let paths = if o.facts.runpath.is_empty() {
                    &o.facts.rpath
                } else {
                    &o.facts.runpath
                };
                for d in paths {
                    dirs.push((expand_origin(d, &o.origin), "RPATH/RUNPATH"));
                }
                cur = o.loader;
            }
            for d in self.musl_path(facts.interpreter.as_deref())? {
                dirs.push((d, "musl path"));
            }
        } else {
            if facts.runpath.is_empty() {
                // DT_RPATH of the object, then of its loader, and up to the executable. An
                // object with DT_RUNPATH has its DT_RPATH ignored.
                let mut cur = Some(idx);
                let mut seen_main = false;
                while let Some(i) = cur {
                    let o = &self.out.objects[i];
                    if o.facts.runpath.is_empty() {
                        for d in &o.facts.rpath {
                            dirs.push((expand_tokens(d, &o.origin, &o.facts), "RPATH"));
                        }
                    }
                    seen_main |= i == main;
                    cur = o.loader;
                }
                let m = &self.out.objects[main];
                if !seen_main && m.facts.runpath.is_empty() {
                    for d in &m.facts.rpath {
                        dirs.push((
                            expand_tokens(d, &m.origin, &m.facts),
                            "RPATH of the executable",
                        ));
                    }
                }
            }
            for d in ld_library_path.split([':', ';']).filter(|d| !d.is_empty()) {
                dirs.push((expand_tokens(d, &exe_origin, &facts), "LD_LIBRARY_PATH"));
            }
            for d in &facts.runpath {
                dirs.push((expand_tokens(d, &origin, &facts), "RUNPATH"));
            }
            for d in self.ldconf_dirs()? {
                dirs.push((d, "ld.so.conf"));
            }
            for d in default_dirs(&facts) {
                dirs.push((d, "default dirs"));
            }
        }
        let hw = if musl {
            &[][..]
        } else {
            elf::hwcaps_dirs(facts.machine)
        };
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (d, via) in dirs {
            let d = self.abs_in_workdir(&d);
            for h in hw {
                let p = join(&d, &format!("glibc-hwcaps/{h}/{name}"));
                if seen.insert(p.clone()) {
                    out.push((p, "glibc-hwcaps".to_string()));
                }
            }
            let p = join(&d, name);
            if seen.insert(p.clone()) {
                out.push((p, via.to_string()));
            }
        }
        Ok(out)
    }

    /// Directories of /etc/ld.so.conf and its includes, in order.
    fn ldconf_dirs(&mut self) -> Result<Vec<String>> {
        if let Some(d) = &self.ldconf_dirs {
            return Ok(d.clone());
        }
        let mut dirs = Vec::new();
        let mut visited = std::collections::HashSet::new();
        self.read_ldconf("/etc/ld.so.conf", 0, &mut dirs, &mut visited)?;
        self.ldconf_dirs = Some(dirs.clone());
        Ok(dirs)
    }

    fn read_ldconf(
        &mut self,
        path: &str,
        depth: usize,
        dirs: &mut Vec<String>,
        visited: &mut std::collections::HashSet<String>,
    ) -> Result<()> {
        if depth > 8 || visited.len() >= 1000 {
            self.out.warnings.push(format!(
                "{path}: ld.so.conf includes nest too deep or are too many; ignored"
            ));
            return Ok(());
        }
        let Some((canon, _)) = self.resolve_file(path)? else {
            return Ok(());
        };
        // Each file once: an include cycle or a file included twice adds nothing.
        if !visited.insert(canon.clone()) {
            return Ok(());
        }
        let text = self.contents.read(self.fs, &canon, MAX_TEXT_BYTES)?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let conf_dir = path.rfind('/').map_or("/", |i| &path[..i]).to_string();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with("hwcap ") {
                continue;
            }
            if let Some(pat) = line
                .strip_prefix("include")
                .filter(|r| r.starts_with([' ', '\t']))
            {
                for pat in pat.split_whitespace() {
                    let pat = if pat.starts_with('/') {
                        pat.to_string()
                    } else {
                        join(&conf_dir, pat)
                    };
                    for f in self.glob(&pat) {
                        self.read_ldconf(&f, depth + 1, dirs, visited)?;
                    }
                }
                continue;
            }
            for d in line.split([' ', '\t', ',', ':']).filter(|d| !d.is_empty()) {
                let d = d.split('=').next().unwrap_or(d).trim_end_matches('/');
                if d.starts_with('/') && !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_string());
                }
            }
        }
        Ok(())
    }

    /// Files matching a glob whose wildcards are in the last component (as ld.so.conf uses).
    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, pat) = match pattern.rfind('/') {
            Some(i) => (&pattern[..i], &pattern[i + 1..]),
            None => ("/", pattern),
        };
        let Ok(m) = globset::Glob::new(pat).map(|g| g.compile_matcher()) else {
            return vec![];
        };
        let Ok(r) = self.fs.resolve(dir, true) else {
            return vec![];
        };
        let prefix = if r.path.is_empty() {
            String::new()
        } else {
            format!("{}/", r.path)
        };
        let mut out: Vec<String> = self
            .fs
            .subtree(&r.path)
            .filter_map(|(k, _)| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/') && m.is_match(rest))
            .map(|rest| join(dir, rest))
            .collect();
        out.sort();
        out
    }

    /// musl's search path: `/etc/ld-musl-ARCH.path`, ARCH from the interpreter's name (the
    /// libc already found, or the PT_INTERP of the object asking).
    fn musl_path(&mut self, interp: Option<&str>) -> Result<Vec<String>> {
        if let Some(p) = &self.musl_path {
            return Ok(p.clone());
        }
        let name = match &self.out.libc {
            Some(Libc::Musl { interpreter }) => Some(interpreter.clone()),
            _ => interp.map(str::to_string),
        };
        let arch = name.as_deref().and_then(|i| {
            i.rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix("ld-musl-"))
                .and_then(|n| n.strip_suffix(".so.1"))
                .map(str::to_string)
        });
        let mut dirs = vec![
            "/lib".to_string(),
            "/usr/local/lib".into(),
            "/usr/lib".into(),
        ];
        if let Some(arch) = arch {
            let file = format!("/etc/ld-musl-{arch}.path");
            if let Some((canon, links)) = self.resolve_file(&file)? {
                let text = self.contents.read(self.fs, &canon, MAX_TEXT_BYTES)?;
                dirs = String::from_utf8_lossy(&text)
                    .split([':', '\n'])
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect();
                self.keep_links(&links, &canon);
                self.keep_file(&canon, "musl library search path");
            }
        }
        self.musl_path = Some(dirs.clone());
        Ok(dirs)
    }

    /// glibc ≥ 2.34 has the `files` and `dns` NSS services built in.
    fn glibc_builtin_nss(&mut self, libc: &str) -> Result<bool> {
        self.contents.contains(self.fs, libc, b"GLIBC_2.34\0")
    }

    /// `--keep` patterns: matching files and directories are kept; ELF files among them traced.
    fn keep_patterns(&mut self) -> Result<()> {
        let pats = self.opts.keep.clone();
        for pat in pats {
            let abs = if pat.starts_with('/') {
                pat.clone()
            } else {
                format!("/{pat}")
            };
            let matcher = globset::GlobBuilder::new(&abs)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("--keep {pat:?}: {e}")))?
                .compile_matcher();
            let mut matched: Vec<String> = self
                .fs
                .nodes
                .keys()
                .filter(|k| !k.is_empty() && matcher.is_match(display(k)))
                .cloned()
                .collect();
            if matched.is_empty() {
                // A literal path may go through symlinks.
                if let Ok(r) = self.fs.resolve(&abs, true)
                    && self.fs.get(&r.path).is_some()
                {
                    self.keep_links(&r.symlinks, &r.path);
                    matched.push(r.path);
                }
            }
            if matched.is_empty() {
                return Err(Error::Usage(format!(
                    "--keep {pat:?} matches nothing in the image"
                )));
            }
            let why = format!("--keep {pat}");
            let mut all = Vec::new();
            for m in matched {
                all.push(m.clone());
                if self.fs.get(&m).is_some_and(|n| n.is_dir()) {
                    all.extend(self.fs.subtree(&m).map(|(k, _)| k.clone()));
                }
            }
            let files: Vec<String> = all
                .iter()
                .filter(|p| matches!(self.fs.get(p).map(|n| &n.kind), Some(Kind::File { .. })))
                .cloned()
                .collect();
            self.contents.prefetch(self.fs, &files)?;
            for p in all {
                match self.fs.get(&p).map(|n| n.kind.clone()) {
                    Some(Kind::File { .. }) => {
                        self.keep_file(&p, why.clone());
                        if let Some(f) = self.contents.elf(self.fs, &p)?
                            && f.dynamic
                            && !self.by_path.contains_key(&p)
                        {
                            self.add_root(&p, &display(&p), f);
                        }
                    }
                    Some(Kind::Dir) => self.keep_file(&p, why.clone()),
                    Some(Kind::Symlink(_)) => {
                        self.out
                            .symlinks
                            .entry(p.clone())
                            .or_insert_with(|| why.clone());
                        if let Ok(r) = self.fs.resolve(&p, true)
                            && self
                                .fs
                                .get(&r.path)
                                .is_some_and(|n| matches!(n.kind, Kind::File { .. }))
                        {
                            self.keep_links(&r.symlinks, &r.path);
                            self.keep_file(&r.path, format!("target of {}", display(&p)));
                        }
                    }
                    _ => self
                        .out
                        .warnings
                        .push(format!("{}: device or fifo not kept", display(&p))),
                }
            }
        }
        Ok(())
    }

    /// What libc loads at run time without DT_NEEDED: NSS modules named in nsswitch.conf and
    /// libgcc_s (thread cancellation).
    fn libc_extras(&mut self) -> Result<()> {
        let Some(Libc::Glibc {
            path,
            builtin_files_dns,
        }) = self.out.libc.clone()
        else {
            return Ok(());
        };
        let Some(&libc_idx) = self.by_path.get(&path) else {
            return Ok(());
        };
        let mut services: Vec<String> = Vec::new();
        let conf = self.resolve_file("/etc/nsswitch.conf")?;
        if conf.is_none() {
            // glibc's defaults without the file: `files` for everything, and `dns` for hosts.
            services = vec!["files".into(), "dns".into()];
        }
        if let Some((canon, links)) = conf {
            self.keep_links(&links, &canon);
            self.keep_file(&canon, "name service switch config (glibc)");
            let text = self.contents.read(self.fs, &canon, MAX_TEXT_BYTES)?;
            for line in String::from_utf8_lossy(&text).lines() {
                let line = line.split('#').next().unwrap_or("");
                let Some((_, rest)) = line.split_once(':') else {
                    continue;
                };
                for w in rest.split_whitespace() {
                    if w.starts_with('[') || w.ends_with(']') || w.contains('=') {
                        continue;
                    }
                    if !services.iter().any(|s| s == w) {
                        services.push(w.to_string());
                    }
                }
            }
        }
        let services: Vec<String> = services
            .into_iter()
            .filter(|s| !(builtin_files_dns && (s == "files" || s == "dns")))
            .collect();
        // Read every candidate in one pass per layer.
        let mut wanted = Vec::new();
        for name in services
            .iter()
            .map(|s| format!("libnss_{s}.so.2"))
            .chain(["libgcc_s.so.1".to_string()])
        {
            for (cand, _) in self.candidates(libc_idx, &name)? {
                if let Ok(r) = self.fs.resolve(&cand, true) {
                    wanted.push(r.path);
                }
            }
        }
        self.contents.prefetch(self.fs, &wanted)?;
        for s in services {
            let module = format!("libnss_{s}.so.2");
            let why = format!("NSS module for '{s}' in /etc/nsswitch.conf (loaded by libc)");
            if self.load(libc_idx, &module, &why, false)?.is_none() {
                self.out.warnings.push(format!(
                    "/etc/nsswitch.conf names '{s}', but {module} is not in the image"
                ));
            }
        }
        self.load(
            libc_idx,
            "libgcc_s.so.1",
            "loaded by libc for thread cancellation",
            false,
        )?;
        Ok(())
    }
}

/// The loader's built-in directories for an object of this class and machine.
pub fn default_dirs(f: &ElfFacts) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(t) = elf::multiarch_triplet(f.machine, f.is_64) {
        d.push(format!("/lib/{t}"));
        d.push(format!("/usr/lib/{t}"));
    }
    if f.is_64 {
        d.push("/lib64".into());
        d.push("/usr/lib64".into());
    }
    d.push("/lib".into());
    d.push("/usr/lib".into());
    d
}

/// Print the tree like lddtree: each object once, with how each name was found. Iterative, so
/// a hostile chain of thousands of libraries cannot overflow the stack.
pub fn render_tree(t: &Trace) -> String {
    enum Item {
        Expand(usize, usize),
        Line(usize, usize),
    }
    let mut by_from: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in t.edges.iter().enumerate() {
        by_from.entry(e.from).or_default().push(i);
    }
    let mut out = String::new();
    let mut expanded = std::collections::HashSet::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Node, Rootfs};

    /// An image described as (path, what): "elf" entries get facts from `facts`, "l:T" is a
    /// symlink, "t:TEXT" a text file, "d" a directory.
    struct Fake {
        facts: HashMap<String, ElfFacts>,
        text: HashMap<String, Vec<u8>>,
    }

    impl Contents for Fake {
        fn prefetch(&mut self, _: &Rootfs, _: &[String]) -> Result<()> {
            Ok(())
        }
        fn read(&mut self, _: &Rootfs, path: &str, _: u64) -> Result<Vec<u8>> {
            Ok(self.text.get(path).cloned().unwrap_or_default())
        }
        fn elf(&mut self, _: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>> {
            Ok(self.facts.get(path).cloned().map(Arc::new))
        }
    }

    fn lib(soname: &str) -> ElfFacts {
        ElfFacts {
            is_64: true,
            little_endian: true,
            machine: elf::EM_X86_64,
            soname: Some(soname.into()),
            dynamic: true,
            ..Default::default()
        }
    }

    fn image(entries: &[(&str, &str)], facts: Vec<(&str, ElfFacts)>) -> (Rootfs, Fake) {
        let mut fs = Rootfs::empty();
        let node = |kind| Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            layer: 0,
            capability: false,
        };
        fs.nodes.insert(String::new(), node(Kind::Dir));
        let mut text = HashMap::new();
        for (i, (p, what)) in entries.iter().enumerate() {
            let p = p.trim_start_matches('/');
            // parents
            let mut acc = String::new();
            for c in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(c);
                fs.nodes
                    .entry(acc.clone())
                    .or_insert_with(|| node(Kind::Dir));
            }
            let kind = if *what == "d" {
                Kind::Dir
            } else if let Some(t) = what.strip_prefix("l:") {
                Kind::Symlink(t.into())
            } else {
                if let Some(t) = what.strip_prefix("t:") {
                    text.insert(p.to_string(), t.as_bytes().to_vec());
                }
                Kind::File {
                    layer: 0,
                    entry: i as u64,
                    size: 1,
                }
            };
            fs.nodes.insert(p.to_string(), node(kind));
        }
        let facts = facts
            .into_iter()
            .map(|(p, f)| (p.trim_start_matches('/').to_string(), f))
            .collect();
        (fs, Fake { facts, text })
    }

    fn exe(needed: &[&str]) -> ElfFacts {
        ElfFacts {
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            soname: None,
            ..lib("")
        }
    }

    const LDSO: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("/lib64", "l:usr/lib64"),
            (
                "/usr/lib64/ld-linux-x86-64.so.2",
                "l:../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            (LDSO, "elf"),
        ]
    }

    fn run(
        entries: Vec<(&str, &str)>,
        facts: Vec<(&str, ElfFacts)>,
        argv0: &str,
        env: &[&str],
    ) -> Result<Trace> {
        let mut facts = facts;
        facts.push((LDSO, lib("ld-linux-x86-64.so.2")));
        let (fs, mut c) = image(&entries, facts);
        let run = RunConfig {
            entrypoint: vec![argv0.into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        trace(&fs, &mut c, &run, &TraceOptions::default())
    }

    fn found(t: &Trace, name: &str) -> String {
        let e = t
            .edges
            .iter()
            .find(|e| e.name == name && e.via != "already loaded")
            .expect(name);
        display(&t.objects[e.to.unwrap()].path)
    }

    #[test]
    fn rpath_is_inherited_but_ignored_with_runpath() {
        // app (RPATH /r) → liba (no paths) → libb: found through app's RPATH (inherited).
        let mut app = exe(&["liba.so"]);
        app.rpath = vec!["/r".into()];
        let mut liba = lib("liba.so");
        liba.needed = vec!["libb.so".into()];
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/r/liba.so", "elf"),
            ("/r/libb.so", "elf"),
            ("/usr/lib/libb.so", "elf"),
        ]);
        let t = run(
            e.clone(),
            vec![
                ("/app", app.clone()),
                ("/r/liba.so", liba.clone()),
                ("/r/libb.so", lib("libb.so")),
                ("/usr/lib/libb.so", lib("libb.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libb.so"), "/r/libb.so");

        // The same, but liba has a DT_RUNPATH: then no RPATH is used for its deps, and libb
        // comes from the default dirs.
        liba.runpath = vec!["/nowhere".into()];
        let t = run(
            e,
            vec![
                ("/app", app),
                ("/r/liba.so", liba),
                ("/r/libb.so", lib("libb.so")),
                ("/usr/lib/libb.so", lib("libb.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libb.so"), "/usr/lib/libb.so");
    }

    #[test]
    fn runpath_applies_to_direct_deps_only_and_origin_expands() {
        // app RUNPATH $ORIGIN/../lib → liba; liba needs libb, which exists only in ../lib:
        // RUNPATH is not inherited, so libb must not be found there.
        let mut app = exe(&["liba.so"]);
        app.runpath = vec!["$ORIGIN/../lib".into()];
        let mut liba = lib("liba.so");
        liba.needed = vec!["libb.so".into()];
        let mut e = base();
        e.extend([
            ("/opt/x/bin/app", "elf"),
            ("/opt/x/lib/liba.so", "elf"),
            ("/opt/x/lib/libb.so", "elf"),
        ]);
        let facts = vec![
            ("/opt/x/bin/app", app.clone()),
            ("/opt/x/lib/liba.so", liba.clone()),
            ("/opt/x/lib/libb.so", lib("libb.so")),
        ];
        let err = run(e.clone(), facts.clone(), "/opt/x/bin/app", &[]).unwrap_err();
        assert!(
            matches!(err, Error::MissingLibrary { ref name, .. } if name == "libb.so"),
            "{err}"
        );
        // With LD_LIBRARY_PATH it is found.
        let t = run(e, facts, "/opt/x/bin/app", &["LD_LIBRARY_PATH=/opt/x/lib"]).unwrap();
        assert_eq!(found(&t, "liba.so"), "/opt/x/lib/liba.so");
        assert_eq!(found(&t, "libb.so"), "/opt/x/lib/libb.so");
    }

    #[test]
    fn order_rpath_ldpath_runpath_conf_default_and_class_check() {
        // LD_LIBRARY_PATH beats RUNPATH; RUNPATH beats ld.so.conf; a 32-bit candidate is skipped.
        let mut app = exe(&["libz.so.1", "libq.so"]);
        app.runpath = vec!["/rp".into()];
        let mut z32 = lib("libz.so.1");
        z32.is_64 = false;
        z32.machine = elf::EM_386;
        let mut e = base();
        e.extend([
            ("/usr/bin/app", "elf"),
            ("/ld/libz.so.1", "elf"),
            ("/rp/libz.so.1", "elf"),
            ("/rp/libq.so", "elf"),
            ("/etc/ld.so.conf", "t:include /etc/ld.so.conf.d/*.conf\n"),
            ("/etc/ld.so.conf.d/a.conf", "t:/conf\n"),
            ("/conf/libq.so", "elf"),
            ("/conf/libw.so", "elf"),
        ]);
        let facts = vec![
            ("/usr/bin/app", app),
            ("/ld/libz.so.1", z32),
            ("/rp/libz.so.1", lib("libz.so.1")),
            ("/rp/libq.so", lib("libq.so")),
            ("/conf/libq.so", lib("libq.so")),
        ];
        let t = run(e, facts, "app", &["LD_LIBRARY_PATH=/ld", "PATH=/usr/bin"]).unwrap();
        assert_eq!(t.entrypoint, "usr/bin/app");
        assert_eq!(
            found(&t, "libz.so.1"),
            "/rp/libz.so.1",
            "32-bit one in LD_LIBRARY_PATH is skipped"
        );
        assert_eq!(found(&t, "libq.so"), "/rp/libq.so");
        assert!(t.symlinks.contains_key("lib64"));
        assert!(
            t.files
                .contains_key("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
    }

    #[test]
    fn ldconf_dirs_are_recorded_for_the_cache_and_hwcaps_kept() {
        let app = exe(&["libp.so.1", "libm.so.6"]);
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/etc/ld.so.conf", "t:/usr/local/lib\n"),
            ("/usr/local/lib/libp.so.1", "l:libp.so.1.0"),
            ("/usr/local/lib/libp.so.1.0", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libm.so.6", "elf"),
            (
                "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6",
                "elf",
            ),
        ]);
        let facts = vec![
            ("/app", app),
            ("/usr/local/lib/libp.so.1.0", lib("libp.so.1")),
            ("/usr/lib/x86_64-linux-gnu/libm.so.6", lib("libm.so.6")),
            (
                "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6",
                lib("libm.so.6"),
            ),
        ];
        let t = run(e, facts, "/app", &[]).unwrap();
        assert_eq!(found(&t, "libp.so.1"), "/usr/local/lib/libp.so.1.0");
        assert!(t.symlinks.contains_key("usr/local/lib/libp.so.1"));
        assert_eq!(
            t.ldconf_libs,
            vec![(
                "libp.so.1".to_string(),
                "/usr/local/lib/libp.so.1".to_string()
            )]
        );
        assert!(t.files.contains_key("usr/lib/x86_64-linux-gnu/libm.so.6"));
        assert!(
            t.files
                .contains_key("usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6")
        );
    }

    #[test]
    fn scripts_env_and_errors() {
        let mut e = base();
        e.extend([
            ("/usr/bin/run.sh", "t:#!/usr/bin/env -S jq -f\n."),
            ("/usr/bin/env", "elf"),
            ("/usr/bin/jq", "elf"),
        ]);
        let facts = vec![("/usr/bin/env", exe(&[])), ("/usr/bin/jq", exe(&[]))];
        let t = run(e.clone(), facts.clone(), "run.sh", &[]).unwrap();
        assert!(t.files.contains_key("usr/bin/run.sh"));
        assert!(t.files.contains_key("usr/bin/env"));
        assert!(t.files.contains_key("usr/bin/jq"));
        let err = run(e.clone(), facts.clone(), "/nope", &[]).unwrap_err();
        assert!(err.to_string().contains("/nope does not exist"), "{err}");
        let err = run(e.clone(), facts.clone(), "nope", &[]).unwrap_err();
        assert!(err.to_string().contains("PATH"), "{err}");
        // Missing library names the object and the soname.
        let mut facts2 = facts.clone();
        facts2.push(("/usr/bin/jq", exe(&["libjq.so.1"])));
        facts2.remove(1);
        let err = run(e, facts2, "/usr/bin/jq", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/usr/bin/jq") && msg.contains("libjq.so.1"),
            "{msg}"
        );
    }

    #[test]
    fn library_origin_is_the_directory_it_was_opened_from() {
        // /a/libfoo.so.1 -> ../b/libfoo.so.1.0 with RUNPATH $ORIGIN/dep: glibc looks in /a/dep
        // (the directory of the path it opened), not /b/dep.
        let mut app = exe(&["libfoo.so.1"]);
        app.runpath = vec!["/a".into()];
        let mut foo = lib("libfoo.so.1");
        foo.runpath = vec!["$ORIGIN/dep".into()];
        foo.needed = vec!["libdep.so".into()];
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/a/libfoo.so.1", "l:../b/libfoo.so.1.0"),
            ("/b/libfoo.so.1.0", "elf"),
            ("/a/dep/libdep.so", "elf"),
        ]);
        let t = run(
            e,
            vec![
                ("/app", app),
                ("/b/libfoo.so.1.0", foo),
                ("/a/dep/libdep.so", lib("libdep.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libdep.so"), "/a/dep/libdep.so");
    }

    #[test]
    fn ld_so_conf_include_cycles_terminate() {
        let app = exe(&["libq.so"]);
        let mut e = base();
        let conf = format!("t:{}/q\n", "include /etc/ld.so.conf\n".repeat(10));
        e.extend([("/app", "elf"), ("/q/libq.so", "elf")]);
        e.push(("/etc/ld.so.conf", Box::leak(conf.into_boxed_str())));
        let t = run(
            e,
            vec![("/app", app), ("/q/libq.so", lib("libq.so"))],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libq.so"), "/q/libq.so");
    }

    #[test]
    fn symlink_escape_is_an_error() {
        let mut e = base();
        e.extend([("/app", "l:../../../host/bin/app")]);
        let err = run(e, vec![], "/app", &[]).unwrap_err();
        assert!(err.to_string().contains("outside the image root"), "{err}");
    }

    #[test]
    fn musl_rules() {
        let mut app = exe(&["libc.musl-x86_64.so.1", "libz.so.1"]);
        app.interpreter = Some("/lib/ld-musl-x86_64.so.1".into());
        let mut e = vec![
            ("/lib/ld-musl-x86_64.so.1", "elf"),
            ("/etc/ld-musl-x86_64.path", "t:/opt/lib\n/lib"),
            ("/opt/lib/libz.so.1", "elf"),
            ("/usr/lib/libz.so.1", "elf"),
            ("/bin/app", "elf"),
        ];
        e.sort();
        let (fs, mut c) = image(
            &e,
            vec![
                ("/lib/ld-musl-x86_64.so.1", lib("libc.musl-x86_64.so.1")),
                ("/opt/lib/libz.so.1", lib("libz.so.1")),
                ("/usr/lib/libz.so.1", lib("libz.so.1")),
                ("/bin/app", app),
            ],
        );
        let run = RunConfig {
            entrypoint: vec!["/bin/app".into()],
            ..Default::default()
        };
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/opt/lib/libz.so.1");
        // musl: RUNPATH, when present, replaces RPATH (glibc would ignore RPATH the same way,
        // but musl also inherits it).
        let mut app2 = c.facts["bin/app"].clone();
        app2.rpath = vec!["/usr/lib".into()];
        app2.runpath = vec!["/opt/lib".into()];
        c.facts.insert("bin/app".into(), app2.clone());
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/opt/lib/libz.so.1");
        app2.runpath = vec![];
        c.facts.insert("bin/app".into(), app2);
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/usr/lib/libz.so.1");
        assert!(matches!(t.libc, Some(Libc::Musl { .. })));
        assert!(t.files.contains_key("etc/ld-musl-x86_64.path"));
    }
}

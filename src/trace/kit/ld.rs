//! The dynamic loader's search, inside the image: PT_INTERP, and each DT_NEEDED (and
//! `.note.dlopen` soname) through glibc's order (DT_RPATH up the loader chain unless the object
//! has DT_RUNPATH, LD_LIBRARY_PATH, DT_RUNPATH, the ld.so.conf directories, the default
//! directories, each probed under `glibc-hwcaps/*` first) or musl's (LD_LIBRARY_PATH, RUNPATH
//! or RPATH up the chain, `/etc/ld-musl-ARCH.path`). Every symlink on the way is kept.
//!
//! The loader is part of the rule kit: every rule that loads an object (`dlopen`, a runtime's C
//! extension) asks [`Cx`] here; the `Loader` rule only feeds it the work.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    Cx, Edge, Evidence, Exec, Libc, MAX_TEXT_BYTES, Object, Why, Work, abs_in, dir_of, join,
};
use crate::elf::{self, ElfFacts};
use crate::error::{Error, Result};
use crate::rootfs::display;

/// The loader's state: objects by every name they answer to, and the search paths read once.
#[derive(Default)]
pub(crate) struct State {
    /// Loaded objects by every name they answer to (request name, soname, canonical path).
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    ldconf_dirs: Option<Vec<String>>,
    musl_path: Option<Vec<String>>,
}

impl State {
    /// The object loaded from this canonical path, if any.
    pub fn object_at(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }
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

/// musl resolves these names to itself (`libc.*`, `libpthread.*`, …).
fn musl_reserved(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("lib") else {
        return false;
    };
    ["c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet."]
        .iter()
        .any(|r| rest.starts_with(r))
}

impl Cx<'_> {
    /// An ELF program started by `e`: the root of a process.
    pub fn add_program_object(&mut self, e: &Exec, facts: Arc<ElfFacts>) -> usize {
        let name = e.argv.first().cloned().unwrap_or_else(|| display(&e.path));
        self.add_root(&e.path, &name, facts)
    }

    /// An object loaded by dlopen into the process of `main` (or on its own when unknown):
    /// what it needs is traced, and what it misses is a warning.
    pub fn add_dlopened(&mut self, path: &str, facts: Arc<ElfFacts>, by: Option<usize>) -> usize {
        if let Some(&i) = self.ld.by_path.get(path) {
            return i;
        }
        let idx = self.add_object_opt(path, &display(path), facts, by, true, dir_of(path));
        if by.is_none() {
            self.out.objects[idx].main = idx;
            self.out.roots.push(idx);
        }
        idx
    }

    /// Load `name` (a soname) as object `idx` would with dlopen: kept when found, a warning
    /// naming `why` when not.
    pub fn dlopen(&mut self, idx: usize, name: &str, why: &str) -> Result<Option<usize>> {
        self.load(idx, name, why, false, Why::Dlopen)
    }

    /// A program: the root of a process.
    pub fn add_root(&mut self, path: &str, name: &str, facts: Arc<ElfFacts>) -> usize {
        let existed = self.ld.by_path.contains_key(path);
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
        if let Some(&i) = self.ld.by_path.get(path) {
            self.ld.by_name.insert(name.to_string(), i);
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
        self.ld.by_path.insert(path.to_string(), idx);
        self.ld.by_name.insert(name.to_string(), idx);
        if let Some(s) = &facts.soname {
            self.ld.by_name.entry(s.clone()).or_insert(idx);
        }
        self.queue.push_back(Work::Object(idx));
        idx
    }

    /// Canonical paths of every existing candidate for the names object `idx` needs.
    pub fn wanted_by(&mut self, idx: usize) -> Result<Vec<String>> {
        let facts = self.out.objects[idx].facts.clone();
        let mut wanted = Vec::new();
        if let Some(interp) = &facts.interpreter
            && let Ok(r) = self.fs.resolve(interp, true)
        {
            wanted.push(r.path);
        }
        for n in facts.needed.iter().chain(facts.dlopen.iter()) {
            if self.ld.by_name.contains_key(n) {
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

    pub fn is_musl(&self) -> bool {
        matches!(self.out.libc, Some(Libc::Musl { .. }))
    }

    pub fn process(&mut self, idx: usize) -> Result<()> {
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
            self.keep(
                &ipath,
                Evidence::new(
                    Why::Interpreter,
                    Some(&obj.path),
                    format!("interpreter (PT_INTERP) of {}", display(&obj.path)),
                ),
            );
            if interp.contains("ld-musl-") && self.out.libc.is_none() {
                self.out.libc = Some(Libc::Musl {
                    interpreter: ipath.clone(),
                });
            }
            if !self.ld.by_path.contains_key(&ipath)
                && let Some(f) = self.elf(&ipath)?
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
        self.parse_ahead(idx, &names);
        for (n, required) in names {
            let why = if required {
                format!("needed by {}", display(&obj.path))
            } else {
                format!("named in the .note.dlopen of {}", display(&obj.path))
            };
            let kind = if required { Why::NeededBy } else { Why::Dlopen };
            self.load(idx, &n, &why, required, kind)?;
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

    /// The first file each of `names` (not loaded yet) would be found as, parsed on all cores
    /// before [`Cx::load`] takes them one by one (the same parse: only sooner).
    fn parse_ahead(&mut self, idx: usize, names: &[(String, bool)]) {
        let mut paths = Vec::new();
        for (name, _) in names {
            if self.ld.by_name.contains_key(name) {
                continue;
            }
            for (cand, _) in self.candidates(idx, name).unwrap_or_default() {
                if let Ok(Some((canon, _))) = self.resolve_file(&cand) {
                    paths.push(canon);
                    break;
                }
            }
        }
        self.contents.elf_ahead(self.fs, &paths);
    }

    /// Resolve `name` as needed by object `idx` and keep it. `required` makes absence an error
    /// (unless `--allow-missing`).
    pub fn load(
        &mut self,
        idx: usize,
        name: &str,
        why: &str,
        required: bool,
        kind: Why,
    ) -> Result<Option<usize>> {
        let optional = !required || self.out.objects[idx].optional;
        if self.is_musl()
            && musl_reserved(name)
            && let Some(Libc::Musl { interpreter }) = &self.out.libc
        {
            let to = self.ld.by_path.get(interpreter).copied();
            self.out.edges.push(Edge {
                from: idx,
                name: name.into(),
                to,
                via: "musl libc".into(),
            });
            return Ok(to);
        }
        if let Some(&to) = self.ld.by_name.get(name) {
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
            let Some(f) = self.elf(&canon)? else {
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
            let from = self.out.objects[idx].path.clone();
            self.keep(
                &hcanon,
                Evidence::new(
                    kind,
                    Some(&from),
                    format!("glibc-hwcaps variant of {name}, {why}"),
                ),
            );
            self.add_object_opt(&hcanon, name, hf, Some(idx), optional, dir_of_raw(&hcand));
        }
        let from = self.out.objects[idx].path.clone();
        self.keep(
            &canon,
            Evidence::new(
                kind,
                Some(&from),
                format!("{name}, {why} (found via {via})"),
            ),
        );
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
    pub fn candidates(&mut self, idx: usize, name: &str) -> Result<Vec<(String, String)>> {
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
            return Ok(vec![(
                abs_in(self.run.cwd(), &p),
                "path in DT_NEEDED".into(),
            )]);
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
            let d = abs_in(self.run.cwd(), &d);
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
        if let Some(d) = &self.ld.ldconf_dirs {
            return Ok(d.clone());
        }
        let mut dirs = Vec::new();
        let mut visited = std::collections::HashSet::new();
        self.read_ldconf("/etc/ld.so.conf", 0, &mut dirs, &mut visited)?;
        self.ld.ldconf_dirs = Some(dirs.clone());
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

    /// musl's search path: `/etc/ld-musl-ARCH.path`, ARCH from the interpreter's name (the
    /// libc already found, or the PT_INTERP of the object asking).
    fn musl_path(&mut self, interp: Option<&str>) -> Result<Vec<String>> {
        if let Some(p) = &self.ld.musl_path {
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
                self.keep(
                    &canon,
                    Evidence::new(Why::LibcFeature, None, "musl library search path"),
                );
            }
        }
        self.ld.musl_path = Some(dirs.clone());
        Ok(dirs)
    }

    /// glibc ≥ 2.34 has the `files` and `dns` NSS services built in.
    fn glibc_builtin_nss(&mut self, libc: &str) -> Result<bool> {
        self.contents.contains(self.fs, libc, b"GLIBC_2.34\0")
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

//! The dynamic loader's search, inside the image: PT_INTERP, and each DT_NEEDED (and
//! `.note.dlopen` soname) through glibc's order (DT_RPATH up the loader chain unless the object
//! has DT_RUNPATH, LD_LIBRARY_PATH, DT_RUNPATH, the ld.so.conf directories, the default
//! directories, each probed under `glibc-hwcaps/*` first) or musl's (LD_LIBRARY_PATH, RUNPATH
//! or RPATH up the chain, `/etc/ld-musl-ARCH.path`). Every symlink on the way is kept.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    Cx, Edge, Evidence, Exec, Libc, MAX_TEXT_BYTES, Object, Rule, Why, Work, abs_in, dir_of, join,
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

/// The rule: each loaded object's interpreter, needed libraries and `.note.dlopen` sonames.
pub(crate) struct Loader;

impl Rule for Loader {
    fn wanted(&mut self, cx: &mut Cx, work: &[Work]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for w in work {
            match w {
                Work::Object(i) => out.extend(cx.wanted_by(*i)?),
                Work::Exec(e) => out.push(e.path.clone()),
                Work::File(_) => {}
            }
        }
        Ok(out)
    }

    fn object(&mut self, cx: &mut Cx, idx: usize) -> Result<()> {
        cx.process(idx)
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        // A kept ELF file that nothing executes or loads by name (a module a config names, an
        // extension module, a plugin in a kept directory) is loaded by dlopen: its own needs
        // are traced, and what it misses is a warning.
        // Only what could be code: executable files and shared objects (by name), read in
        // one pass.
        let kept: Vec<String> = cx
            .out
            .files
            .keys()
            .filter(|p| !cx.ld.by_path.contains_key(*p) && !cx.out.programs.contains(*p))
            .filter(|p| match cx.fs.get(p) {
                Some(
                    n @ crate::rootfs::Node {
                        kind: crate::rootfs::Kind::File { size, .. },
                        ..
                    },
                ) => *size >= 64 && (n.mode & 0o111 != 0 || p.contains(".so")),
                _ => false,
            })
            .cloned()
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        cx.contents.prefetch(cx.fs, &kept)?;
        for p in kept {
            if let Some(f) = cx.elf(&p)?
                && f.dynamic
            {
                cx.add_dlopened(&p, f, None);
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{exe, found, image, lib};
    use super::super::{Libc, RunConfig, Trace, TraceOptions, trace};
    use crate::elf::{self, ElfFacts};
    use crate::error::{Error, Result};

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
            ("/usr/bin/run.sh", "x:#!/usr/bin/env -S jq -f\n."),
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

//! Helper programs a package runs by bare name. A program that searches PATH to run others
//! (it imports `execvp`, `execlp`, `execvpe` or `posix_spawnp`) and names, as a whole string,
//! another program its own package ships, runs that program (groff runs `troff`, `tbl`,
//! `soelim`, `preconv`); and a kept data file of a package that runs a program names the
//! package's helpers the same way, on a line of its own after one key (groff's
//! `font/devutf8/DESC` says `postpro grotty`), as does
//! one of an add-on package that depends on it (`groff`'s `devhtml/DESC` says `prepro
//! pre-grohtml`, a program of `groff`, which extends `groff-base`). All are traced as programs.
//!
//! A program that runs others by a path it computes (it imports `execv`, `execve`, `execl`,
//! `posix_spawn`…: a compiled-in bindir or libexec directory joined with a name) and names the
//! basename of an ELF program of its own package, of a package of the same source, or of a
//! package it depends on runs that program too (`cpp` runs `cc1` from its libexec directory,
//! an X server runs `xkbcomp`). A shell, an interpreter, a network tool, a package manager, a
//! setuid carrier or a script named that way is withheld (reported, not kept): those need the
//! entrypoint, a traced script line or the active configuration.
//!
//! Only related packages' programs count: a bare word is too weak a reference to pull in
//! another package's command (`cat` in an error message is not a reason to keep coreutils).
//! Packages the package rule never follows (shells, package managers, setuid carriers,
//! essential packages) are left out here too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::kit::{Cx, Evidence, Rule, Why};
use crate::error::Result;
use crate::packages::{self, Db};
use crate::rootfs::{Kind, display};

/// Imports that run a program found through PATH.
const PATH_EXEC: &[&str] = &["execvp", "execlp", "execvpe", "posix_spawnp"];
/// Imports that run a program by a path the caller computes (a compiled-in bindir or
/// libexec directory joined with a name).
const FILE_EXEC: &[&str] = &[
    "execv",
    "execve",
    "execl",
    "execle",
    "posix_spawn",
    "fexecve",
];

/// Largest data file read for the helpers it names.
const MAX_DATA_BYTES: u64 = 64 << 10;

#[derive(Default)]
pub(crate) struct Helpers {
    programs_done: HashSet<String>,
    files_done: HashSet<String>,
}

/// The package's programs by basename (regular executable files, and its links to executable
/// files: `cpp` → `x86_64-linux-gnu-cpp-12`), each to the canonical file.
fn programs_of(cx: &Cx, db: &Db, pkg: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in db.files_of(cx.fs, pkg) {
        let Some(base) = f.rsplit('/').next() else {
            continue;
        };
        if base.contains(".so") {
            continue;
        }
        let target = match cx.fs.get(&f).map(|n| &n.kind) {
            Some(Kind::File { .. }) => f.clone(),
            Some(Kind::Symlink(_)) => match cx.fs.resolve(&f, true) {
                Ok(r) => r.path,
                Err(_) => continue,
            },
            _ => continue,
        };
        if let Some(n) = cx.fs.get(&target)
            && matches!(n.kind, Kind::File { .. })
            && n.mode & 0o111 != 0
        {
            out.insert(base.to_string(), target);
        }
    }
    out
}

/// Source files of a language (a runtime's, or a shell's, awk's, sed's): not data that names
/// a program to run.
fn is_code(path: &str) -> bool {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    super::runtime::is_runtime_source(path) || matches!(ext, "sh" | "bash" | "awk" | "sed")
}

/// Whether the helper rule follows a package at all.
fn followed(pkg: &packages::Package) -> bool {
    super::packages::skipped(&pkg.name, true).is_none() && !packages::is_essential(pkg)
}

/// Run `name` (found through PATH, and one of `pkg`'s programs) for `from`.
fn run(
    cx: &mut Cx,
    db: &Db,
    pkg: usize,
    ours: &BTreeMap<String, String>,
    name: &str,
    from: &str,
    how: &str,
) -> Result<()> {
    if !ours.contains_key(name) {
        return Ok(());
    }
    // The one PATH finds must be the package's.
    let Ok(r) = super::kit::find_program(cx.fs, cx.run, name) else {
        return Ok(());
    };
    if !db.owners(&r.path).contains(&pkg) || cx.out.programs.contains(&r.path) {
        return Ok(());
    }
    if let Some(what) = super::risky::withheld_unless_strong(cx, &r.path)? {
        cx.withhold(
            &r.path,
            format!(
                "{how} {} (both of package {}) but it is {what}: kept only when the entrypoint, a script or the active configuration runs it (--keep {} restores it)",
                display(from),
                db.packages[pkg].name,
                display(&r.path)
            ),
        );
        return Ok(());
    }
    let ev = Evidence::new(
        Why::Command,
        Some(from),
        format!(
            "run by name: {how} {} (both of package {})",
            display(from),
            db.packages[pkg].name
        ),
    );
    cx.exec(vec![name.to_string()], vec![], vec![], 1, ev, false)?;
    Ok(())
}

/// The ELF programs a package's program may run by a computed path: those of the package
/// itself, of its siblings (the same source package) and of what it depends on (the first
/// installed alternative), by basename → (path, how related). Packages never followed are
/// left out.
fn kin_programs(cx: &mut Cx, db: &Db, q: usize) -> BTreeMap<String, (String, &'static str)> {
    let pkg = &db.packages[q];
    let source = pkg.source.clone().unwrap_or_else(|| pkg.name.clone());
    let mut related: Vec<(usize, &'static str)> = vec![(q, "its own package")];
    for (i, other) in db.packages.iter().enumerate() {
        if i != q && other.source.as_deref().unwrap_or(&other.name) == source {
            related.push((i, "a package of the same source"));
        }
    }
    for group in &pkg.depends {
        if let Some(&d) = group.iter().find_map(|n| db.named(n).first()) {
            related.push((d, "a dependency of its package"));
        }
    }
    let mut out = BTreeMap::new();
    for (i, how) in related {
        if !followed(&db.packages[i]) {
            continue;
        }
        for (base, path) in programs_of(cx, db, i) {
            out.entry(base).or_insert((path, how));
        }
    }
    out
}

/// Whether `program` (canonical) runs programs and `target` (canonical) is an executable of a
/// package related to its own (its own, one of the same source, one it depends on): then a
/// path string naming `target` is a program it runs.
pub(crate) fn runs_related(cx: &mut Cx, program: &str, target: &str) -> bool {
    let Some(idx) = cx.ld.object_at(program) else {
        return false;
    };
    let facts = cx.out.objects[idx].facts.clone();
    if !PATH_EXEC
        .iter()
        .chain(FILE_EXEC)
        .any(|s| facts.import(s).is_some())
    {
        return false;
    }
    let Some(db) = cx.out.packages.clone() else {
        return false;
    };
    db.owners(program).to_vec().into_iter().any(|q| {
        followed(&db.packages[q]) && kin_programs(cx, &db, q).values().any(|(p, _)| p == target)
    })
}

/// `program` names `name`, an executable of a related package at `path`, and runs programs
/// by path: an ELF helper is traced as a program; a risky one (a shell, an interpreter, a
/// network tool, …) or a script (which brings an interpreter) is withheld.
fn helper(cx: &mut Cx, program: &str, name: &str, path: &str, how: &str) -> Result<()> {
    if cx.out.programs.contains(path) {
        return Ok(());
    }
    if let Some(what) = super::risky::withheld_unless_strong(cx, path)? {
        cx.withhold(
            path,
            format!(
                "{} names {name} ({how}) but {} is {what}: kept only when the entrypoint, a script or the active configuration runs it (--keep {} restores it)",
                display(program),
                display(path),
                display(path)
            ),
        );
        return Ok(());
    }
    let ev = Evidence::new(
        Why::Command,
        Some(program),
        format!(
            "run by path: {} runs programs and names {name}, a program of {how}",
            display(program)
        ),
    );
    cx.exec(vec![display(path)], vec![], vec![], 1, ev, false)?;
    Ok(())
}

impl Rule for Helpers {
    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        if cx.opts.no_packages {
            return Ok(());
        }
        let Some(db) = cx.out.packages.clone() else {
            return Ok(());
        };
        // The packages whose programs run.
        let mut running: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for p in cx.out.programs.iter() {
            for &q in db.owners(p) {
                if followed(&db.packages[q]) {
                    running.entry(q).or_default().push(p.clone());
                }
            }
        }
        for (&q, progs) in &running {
            let ours = programs_of(cx, &db, q);
            let kin = kin_programs(cx, &db, q);
            for p in progs {
                if !self.programs_done.insert(p.clone()) {
                    continue;
                }
                let Some(idx) = cx.ld.object_at(p) else {
                    continue;
                };
                let facts = cx.out.objects[idx].facts.clone();
                let by_path = PATH_EXEC.iter().any(|s| facts.import(s).is_some());
                let by_file = FILE_EXEC.iter().any(|s| facts.import(s).is_some());
                if !by_path && !by_file {
                    continue;
                }
                let own = p.rsplit('/').next().unwrap_or(p);
                let mut names: Vec<(String, String, &str)> = Vec::new();
                for w in &facts.words {
                    if w == own {
                        continue;
                    }
                    if by_path
                        && ours.contains_key(w.as_str())
                        && super::kit::find_program(cx.fs, cx.run, w).is_ok()
                    {
                        run(cx, &db, q, &ours, w, p, "named in")?;
                    } else if let Some((path, how)) = kin.get(w.as_str()) {
                        names.push((w.clone(), path.clone(), how));
                    }
                }
                for (name, path, how) in names {
                    helper(cx, p, &name, &path, how)?;
                }
            }
        }
        // The kept data of those packages and of their add-ons (packages that depend on one of
        // them): a word that is one of the data's own package's programs.
        let names: HashSet<&str> = running
            .keys()
            .map(|&q| db.packages[q].name.as_str())
            .collect();
        let mut scan: BTreeSet<usize> = running.keys().copied().collect();
        for (i, pkg) in db.packages.iter().enumerate() {
            if followed(pkg)
                && pkg
                    .depends
                    .iter()
                    .any(|g| g.iter().any(|n| names.contains(n.as_str())))
            {
                scan.insert(i);
            }
        }
        for q in scan {
            let kept: Vec<String> = db
                .files_of(cx.fs, q)
                .into_iter()
                .filter(|f| cx.out.files.contains_key(f) && !self.files_done.contains(f))
                .collect();
            if kept.is_empty() {
                continue;
            }
            let ours = programs_of(cx, &db, q);
            if ours.is_empty() {
                continue;
            }
            for f in kept {
                self.files_done.insert(f.clone());
                let Some(n) = cx.fs.get(&f) else { continue };
                if !matches!(n.kind, Kind::File { .. })
                    || n.mode & 0o111 != 0
                    || n.size() > MAX_DATA_BYTES
                {
                    continue;
                }
                let Some(text) = cx.text(&f)? else { continue };
                // Code is not data: a script's words are the runtime rules' business.
                if text.starts_with("#!") || is_code(&f) {
                    continue;
                }
                let words: BTreeSet<&str> = text
                    .lines()
                    .filter_map(|l| {
                        let mut t = l.split_whitespace();
                        match (t.next(), t.next(), t.next()) {
                            (Some(k), Some(v), None)
                                if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                                    && ours.contains_key(v) =>
                            {
                                Some(v)
                            }
                            _ => None,
                        }
                    })
                    .collect();
                for w in words {
                    run(cx, &db, q, &ours, w, &f, "named in the data file")?;
                }
            }
        }
        Ok(())
    }
}

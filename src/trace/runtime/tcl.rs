//! Tcl (`tclsh`, `wish`): `package require NAME` resolved the way Tcl's `package unknown`
//! does. `auto_path` is the script library (`tcl_library`, compiled into libtcl), its parent,
//! the `tcl_pkgPath` directories compiled into libtcl and `TCLLIBPATH`; at the first require
//! of a package it does not know, Tcl sources every `pkgIndex.tcl` of those directories and
//! of their subdirectories (an index that appends its own directory to `auto_path`, as
//! tcllib's does, has its subdirectories read too), and each `package ifneeded NAME VERSION
//! SCRIPT` says which files the package loads (`[file join $dir json.tcl]`). Tcl modules
//! (`NAME-VERSION.tm` under `tcl8/8.*`) are found by name. Kept: the index files (all of
//! them: Tcl reads them all), the script's `package require` graph, and the files a
//! package's sources `source` beside themselves.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::{Lang, Req, graph, is_dir};
use crate::error::Result;
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Started, Why, abs_in, join};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Tcl",
    names: &["tclsh", "wish"],
    library: Some("libtcl"),
    embedded: false,
    extensions: &["tcl"],
    takes_value: &["-encoding"],
    code: &[],
    script_option: &[],
};

/// Index files read at most (tcllib has about 250).
const MAX_INDEXES: usize = 5_000;

#[derive(Default)]
pub(crate) struct Tcl;

struct TclLang {
    /// Package name → the files its `package ifneeded` script names.
    index: BTreeMap<String, Vec<String>>,
    /// Every `pkgIndex.tcl` of the `auto_path` (canonical), kept at the first require.
    indexes: Vec<String>,
    indexes_kept: bool,
    /// Directories whose `tcl8/*/` hold Tcl modules.
    tm_bases: Vec<String>,
    interp: String,
}

fn dir_part(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

/// The `package ifneeded NAME VERSION SCRIPT` commands of an index file (continuation lines
/// joined): each package's files, `[file join $dir X]` under `dir`.
pub(crate) fn ifneeded(text: &str, dir: &str) -> Vec<(String, Vec<String>)> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(pos) = line.find("package ifneeded ") else {
            continue;
        };
        let rest = &line[pos + "package ifneeded ".len()..];
        let Some(name) = rest.split_whitespace().next() else {
            continue;
        };
        let name = name.trim_matches(['{', '}', '"']).to_string();
        let mut files = Vec::new();
        let mut s = rest;
        while let Some(p) = s.find("file join $dir ") {
            s = &s[p + "file join $dir ".len()..];
            let f: String = s
                .chars()
                .take_while(|c| !matches!(c, ']' | ' ' | '}' | '"'))
                .collect();
            if !f.is_empty() && !f.contains(['$', '[']) {
                files.push(join(dir, &f));
            }
        }
        out.push((name, files));
    }
    out
}

/// The requires of a Tcl source: `package require ?-exact? NAME ?VERSION?` anywhere on a
/// line (`catch {package require tcllibc}` too), and `source [file join $anydir NAME]` or
/// `source NAME.tcl`, read beside the file.
pub(crate) fn requires(text: &str) -> Vec<Req> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        let mut s = t;
        while let Some(p) = s.find("package require ") {
            s = &s[p + "package require ".len()..];
            let name = s
                .split_whitespace()
                .find(|w| !w.starts_with('-'))
                .map(|w| w.trim_matches(['{', '}', ']', '"', ';']))
                .unwrap_or("");
            if !name.is_empty() && !name.contains(['$', '[']) {
                out.push(req(name.to_string(), n + 1));
            }
        }
        if let Some(p) = t.find("source ") {
            let a = t[p + "source ".len()..].trim_start();
            let f = if let Some(j) = a.find("file join ") {
                a[j + "file join ".len()..]
                    .split_whitespace()
                    .nth(1)
                    .map(|w| w.trim_end_matches([']', '}', ';', '"']))
            } else {
                a.split_whitespace()
                    .next()
                    .filter(|w| w.ends_with(".tcl"))
                    .map(|w| w.trim_matches(['"', '{', '}']))
            };
            if let Some(f) = f.filter(|f| !f.is_empty() && !f.contains(['$', '[']))
                && !f.starts_with('/')
            {
                let mut r = req(format!("\0source/{f}"), n + 1);
                r.relative = true;
                out.push(r);
            }
        }
    }
    out
}

fn req(spec: String, line: usize) -> Req {
    Req {
        spec,
        line,
        nested: false,
        relative: false,
        waits_for: None,
    }
}

impl Rule for Tcl {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        // The directories compiled into the interpreter and the libtcl it links.
        let Some(Started { strings, .. }) = INTERPRETER.start(cx, e)? else {
            return Ok(());
        };
        let mut auto_path: Vec<String> = Vec::new();
        for s in strings.iter().filter(|s| s.contains("tcl")) {
            if !s.contains("/include/") && is_dir(cx, s) && !auto_path.contains(s) {
                // The script library's parent is on auto_path too.
                if s.rsplit('/').next().is_some_and(|l| l.starts_with("tcl8")) {
                    let parent = dir_part(s).to_string();
                    if !auto_path.contains(&parent) {
                        auto_path.push(parent);
                    }
                }
                auto_path.push(s.clone());
            }
        }
        if let Some(v) = cx.run.env_var("TCLLIBPATH") {
            auto_path.extend(v.split_whitespace().map(|d| abs_in(cx.run.cwd(), d)));
        }
        // The trees are this rule's (a path naming them keeps nothing whole); the script
        // library (init.tcl, procs autoloaded through tclIndex, encodings, clock data, all
        // read by name) is kept whole.
        for d in &auto_path {
            if let Ok(r) = cx.fs.resolve(d, true) {
                cx.claim(&r.path);
                if cx.resolve_file(&join(d, "init.tcl"))?.is_some() {
                    cx.keep_tree(
                        &r.path,
                        &Evidence::new(
                            Why::Runtime,
                            Some(&e.path),
                            "Tcl's script library (init.tcl, autoloaded procs, encodings, clock data: read by name)".to_string(),
                        ),
                    );
                }
            }
        }
        // The index files, as `package unknown` reads them.
        let mut queue: VecDeque<String> = auto_path.iter().cloned().collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut indexes = Vec::new();
        let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while let Some(d) = queue.pop_front() {
            if !seen.insert(d.clone()) || indexes.len() >= MAX_INDEXES {
                continue;
            }
            let mut files = cx.glob(&format!("{d}/pkgIndex.tcl"));
            files.extend(cx.glob(&format!("{d}/*/pkgIndex.tcl")));
            for f in files {
                let Some((canon, _)) = cx.resolve_file(&f)? else {
                    continue;
                };
                let Some(text) = cx.text(&canon)? else {
                    continue;
                };
                let dir = dir_part(&f).to_string();
                if text.contains("lappend ::auto_path $dir")
                    || text.contains("lappend auto_path $dir")
                {
                    queue.push_back(dir.clone());
                }
                for (name, files) in ifneeded(&text, &dir) {
                    index.entry(name).or_default().extend(files);
                }
                indexes.push(canon);
            }
        }
        // tclsh ?-encoding name? ?script? ?args?
        let mut script = None;
        let mut i = 1;
        while let Some(a) = e.arg(i) {
            if a == "-encoding" {
                i += 2;
                continue;
            }
            if !a.starts_with('-') {
                script = Some(a.to_string());
            }
            break;
        }
        let mut sources = Vec::new();
        if let Some(s) = script
            && let Some(canon) = super::keep_script(cx, e, INTERPRETER.language, &s)?
        {
            sources.push(canon);
        }
        let mut lang = TclLang {
            index,
            indexes,
            indexes_kept: false,
            tm_bases: auto_path,
            interp: e.path.clone(),
        };
        graph(cx, &mut lang, &e.path, vec![], sources)
    }
}

impl Lang for TclLang {
    fn name(&self) -> &'static str {
        "Tcl"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        requires(text)
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>> {
        if let Some(f) = req.spec.strip_prefix("\0source/") {
            let p = join(&format!("/{}", dir_part(from.trim_start_matches('/'))), f);
            return Ok(cx.resolve_file(&p)?.map(|_| vec![p]));
        }
        let name = req.spec.as_str();
        if matches!(name, "Tcl" | "Tk" | "TclOO") {
            return Ok(Some(Vec::new()));
        }
        if !self.indexes_kept {
            self.indexes_kept = true;
            let ev = Evidence::new(
                Why::Runtime,
                Some(&self.interp),
                format!(
                    "Tcl package index (at `package require {name}`, Tcl reads every pkgIndex.tcl of its auto_path)"
                ),
            );
            for f in self.indexes.clone() {
                cx.keep_if_file(&f, ev.clone());
            }
        }
        if let Some(files) = self.index.get(name) {
            return Ok(Some(files.clone()));
        }
        // A Tcl module: `tcl8/8.x/NAME-VERSION.tm` (`a::b` → `a/b-VERSION.tm`).
        let rel = name.replace("::", "/");
        for b in &self.tm_bases {
            let found = cx.glob(&format!("{b}/tcl8/*/{rel}-*.tm"));
            if let Some(last) = found.last() {
                return Ok(Some(vec![last.clone()]));
            }
        }
        Ok(None)
    }

    fn in_runtime(&self, _cx: &Cx, file: &str) -> bool {
        file.contains("/tcltk/") || file.contains("/tcl8")
    }

    fn is_source(&self, file: &str) -> bool {
        file.ends_with(".tcl") || file.ends_with(".tm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_and_requires() {
        let idx = "if {![package vsatisfies [package provide Tcl] 8.4]} {return}\npackage ifneeded json 1.3.4 [list source [file join $dir json.tcl]]\npackage ifneeded two 1.0 \"[list source [file join $dir a.tcl]]\\\n  [list source [file join $dir b.tcl]]\"\n";
        assert_eq!(
            ifneeded(idx, "/usr/share/tcltk/tcllib1.21/json"),
            vec![
                (
                    "json".to_string(),
                    vec!["/usr/share/tcltk/tcllib1.21/json/json.tcl".to_string()]
                ),
                (
                    "two".to_string(),
                    vec![
                        "/usr/share/tcltk/tcllib1.21/json/a.tcl".to_string(),
                        "/usr/share/tcltk/tcllib1.21/json/b.tcl".to_string()
                    ]
                ),
            ]
        );
        let src = "package require Tcl 8.4\npackage require -exact json::write 1.0\n# package require no\nif {[catch {package require tcllibc}]} {return 0}\n    source [file join $selfdir json_tcl.tcl]\nsource helper.tcl\nsource $x\n";
        crate::trace::runtime::assert_requires(
            requires(src),
            |r| r.relative,
            &[
                ("Tcl", false),
                ("json::write", false),
                ("tcllibc", false),
                ("\0source/json_tcl.tcl", true),
                ("\0source/helper.tcl", true),
            ],
        );
        assert!(
            INTERPRETER.runs_as("tclsh8.6")
                && INTERPRETER.runs_as("wish")
                && !INTERPRETER.runs_as("tclx")
        );
    }
}

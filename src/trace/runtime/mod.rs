//! Language runtimes, found from the interpreter binary (its name, its location, the
//! libraries it links and the paths compiled into them), not from a distribution's package
//! names: each rule keeps the interpreter's start-up set and what the application imports,
//! resolved the way the interpreter resolves it, and claims the runtime's trees so the
//! generic rules (path references, the app directory) leave them alone.
//!
//! Python has its own module ([`python`]); Ruby, Perl, Node.js, Lua and Tcl share the import-graph
//! engine here ([`graph`]): a language says how to read its `require`s and how to find them.

pub(crate) mod guile;
pub(crate) mod java;
pub(crate) mod lua;
pub(crate) mod node;
pub(crate) mod perl;
pub(crate) mod php;
pub(crate) mod python;
pub(crate) mod ruby;
pub(crate) mod tcl;

use std::collections::{HashMap, HashSet, VecDeque};

use crate::error::Result;
use crate::rootfs::display;
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Why, abs_in};

/// A language runtime: its interpreter's description and its rule.
pub(crate) struct Runtime {
    pub interpreter: &'static Interpreter,
    pub make: fn() -> Box<dyn Rule>,
}

/// Every language runtime, in the order its rule sees each batch of work (Python first: its
/// environment decides what other rules see of its trees). Adding a runtime is one file (its
/// [`Interpreter`] and its rule) and one row here.
pub(crate) const RUNTIMES: &[Runtime] = &[
    Runtime {
        interpreter: &python::INTERPRETER,
        make: || Box::new(python::Python::default()),
    },
    Runtime {
        interpreter: &node::INTERPRETER,
        make: || Box::new(node::Node),
    },
    Runtime {
        interpreter: &perl::INTERPRETER,
        make: || Box::new(perl::Perl),
    },
    Runtime {
        interpreter: &ruby::INTERPRETER,
        make: || Box::new(ruby::Ruby::default()),
    },
    Runtime {
        interpreter: &java::INTERPRETER,
        make: || Box::new(java::Java::default()),
    },
    Runtime {
        interpreter: &php::INTERPRETER,
        make: || Box::new(php::Php),
    },
    Runtime {
        interpreter: &lua::INTERPRETER,
        make: || Box::new(lua::Lua::default()),
    },
    Runtime {
        interpreter: &tcl::INTERPRETER,
        make: || Box::new(tcl::Tcl),
    },
    Runtime {
        interpreter: &guile::INTERPRETER,
        make: || Box::new(guile::Guile),
    },
];

/// Every runtime's rule as one rule of the tracer's table, each shown the work in
/// [`RUNTIMES`] order.
pub(crate) struct Runtimes(Vec<Box<dyn Rule>>);

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes(RUNTIMES.iter().map(|r| (r.make)()).collect())
    }
}

impl Rule for Runtimes {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        self.0.iter_mut().try_for_each(|r| r.start(cx))
    }
    fn wanted(&mut self, cx: &mut Cx, work: &[crate::trace::kit::Work]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for r in &mut self.0 {
            out.extend(r.wanted(cx, work)?);
        }
        Ok(out)
    }
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        self.0.iter_mut().try_for_each(|r| r.exec(cx, e))
    }
    fn file(&mut self, cx: &mut Cx, path: &str) -> Result<()> {
        self.0.iter_mut().try_for_each(|r| r.file(cx, path))
    }
    fn object(&mut self, cx: &mut Cx, idx: usize) -> Result<()> {
        self.0.iter_mut().try_for_each(|r| r.object(cx, idx))
    }
    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        self.0.iter_mut().try_for_each(|r| r.finish(cx))
    }
}

/// Whether a program or library (a basename or soname, `lib` stripped) is a language
/// interpreter's: one of [`RUNTIMES`]' names, or of the runtimes pare has no rule for.
pub(crate) fn is_interpreter_name(base: &str) -> bool {
    const WITHOUT_A_RULE: &[&str] = &["jvm", "erl", "beam"];
    if RUNTIMES.iter().any(|r| r.interpreter.is_library(base)) {
        return true;
    }
    let base = base.strip_prefix("lib").unwrap_or(base);
    RUNTIMES
        .iter()
        .flat_map(|r| r.interpreter.names)
        .chain(WITHOUT_A_RULE)
        .any(|n| base.starts_with(n))
}

/// Whether a file is source code of a runtime pare knows (by extension).
pub(crate) fn is_runtime_source(path: &str) -> bool {
    RUNTIMES.iter().any(|r| r.interpreter.is_source(path))
}

/// Modules followed for one interpreter.
const MAX_REQUIRES: usize = 20_000;

/// One `require` found in a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Req {
    /// What is required, as written (`json`, `./lib/x`, `Foo::Bar`).
    pub spec: String,
    pub line: usize,
    /// Inside a function body: runs only when it is called.
    pub nested: bool,
    /// Relative to the requiring file (`require_relative`, `./x`).
    pub relative: bool,
    /// A name whose first use loads it (Ruby's `autoload :Const, "file"`): followed only
    /// once a source read uses the name.
    pub waits_for: Option<String>,
}

impl Req {
    /// A require by name, at start-up or on the command line (line 0, not lazy).
    pub(crate) fn named(spec: impl Into<String>) -> Req {
        Req {
            spec: spec.into(),
            line: 0,
            nested: false,
            relative: false,
            waits_for: None,
        }
    }
}

/// The text after each `kw` in `line` that is not glued to a word before it (`glued` says
/// which characters glue: `obj.require(` is no require).
pub(crate) fn after_keyword<'a>(
    line: &'a str,
    kw: &'a str,
    glued: fn(char) -> bool,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            let pos = rest.find(kw)?;
            let before = rest[..pos].chars().last();
            let after = &rest[pos + kw.len()..];
            rest = after;
            if !before.is_some_and(glued) {
                return Some(after);
            }
        }
    })
}

/// What a language tells the engine.
pub(crate) trait Lang {
    /// "Ruby", "Perl", "Node.js": for evidence and warnings.
    fn name(&self) -> &'static str;
    /// The requires of a source.
    fn parse(&self, text: &str) -> Vec<Req>;
    /// The files a require brings (absolute paths): those that are sources are read for
    /// further requires; `None` when it cannot be found; `Some(empty)` for a built-in.
    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>>;
    /// Whether a file belongs to the runtime (its library trees), where misses are the
    /// interpreter's own optional requires and lazy requires are followed one hop.
    fn in_runtime(&self, cx: &Cx, file: &str) -> bool;
    /// Whether a file of the runtime's trees is a third-party library (a gem, a vendor
    /// package) rather than the standard library: its requires, lazy ones too, are followed
    /// like the application's (quietly).
    fn third_party(&self, _cx: &Cx, _file: &str) -> bool {
        false
    }
    /// Whether a file is a source to read.
    fn is_source(&self, file: &str) -> bool;
    /// The names a source uses that a require may wait for ([`Req::waits_for`]).
    fn uses(&self, _text: &str) -> Vec<String> {
        Vec::new()
    }
    /// Names used before any source is read (the entrypoint's own files: a `config.ru`).
    fn used_at_start(&self, _cx: &mut Cx) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A require to follow: from where, how many lazy hops are left, whether a miss is quiet.
pub(crate) struct Root {
    pub req: Req,
    /// The requiring file (canonical), empty for the interpreter's start-up.
    pub from: String,
    pub budget: u8,
    pub quiet: bool,
}

impl Root {
    /// A require of the interpreter's start-up or command line: its lazy requires one hop.
    pub(crate) fn start(spec: impl Into<String>) -> Root {
        Root {
            req: Req::named(spec),
            from: String::new(),
            budget: 1,
            quiet: false,
        }
    }
}

/// Follow the requires from `roots` (and from `sources`, already kept files to read) to a
/// fixed point: every require of the application's own code, the top-level requires of the
/// runtime's, and its function-level ones one hop from what the application requires.
pub(crate) fn graph(
    cx: &mut Cx,
    lang: &mut dyn Lang,
    interp: &str,
    roots: Vec<Root>,
    sources: Vec<String>,
) -> Result<()> {
    let mut queue: VecDeque<Root> = roots.into();
    let mut done: HashMap<String, u8> = HashMap::new();
    let mut resolved: HashMap<String, Vec<String>> = HashMap::new();
    let mut texts: Vec<(String, u8)> = sources.into_iter().map(|s| (s, 1)).collect();
    let mut steps = 0usize;
    // The names the sources read use, and the requires waiting for one of them.
    let mut used: HashSet<String> = lang.used_at_start(cx)?.into_iter().collect();
    let mut pending: Vec<(String, Root)> = Vec::new();
    loop {
        for (file, budget) in std::mem::take(&mut texts) {
            let Some(text) = cx.text(&file)? else {
                continue;
            };
            used.extend(lang.uses(&text));
            let runtime = lang.in_runtime(cx, &display(&file));
            let third_party = runtime && lang.third_party(cx, &display(&file));
            for req in lang.parse(&text) {
                // The application's code: every require, and the runtime's lazy requires one
                // hop from there. A library's (a gem, a CPAN module: Template Toolkit loads its
                // plugins and Encode lazily): every require too; what its module-level requires
                // reach of the runtime gets the runtime's one lazy hop (AppConfig's `use
                // Exporter` needs Exporter::Heavy), what it requires lazily does not
                // (asciidoctor's lazy open-uri brings no net/http and OpenSSL). The runtime's
                // own: lazy requires one hop from what the application requires.
                let b = if !runtime {
                    1
                } else if third_party {
                    u8::from(!req.nested)
                } else if req.nested {
                    match budget.checked_sub(1) {
                        Some(b) => b,
                        None => continue,
                    }
                } else {
                    budget
                };
                let root = Root {
                    req,
                    from: file.clone(),
                    budget: b,
                    quiet: runtime,
                };
                match &root.req.waits_for {
                    Some(name) if !used.contains(name) => pending.push((name.clone(), root)),
                    _ => queue.push_back(root),
                }
            }
        }
        let Some(r) = queue.pop_front() else {
            if texts.is_empty() {
                // Requires whose name a source now uses.
                let (now, wait): (Vec<_>, Vec<_>) =
                    pending.into_iter().partition(|(n, _)| used.contains(n));
                pending = wait;
                if now.is_empty() {
                    break;
                }
                queue.extend(now.into_iter().map(|(_, r)| r));
            }
            continue;
        };
        steps += 1;
        if steps > MAX_REQUIRES {
            cx.warn(format!(
                "{}: more than {MAX_REQUIRES} {} requires; not followed further",
                display(interp),
                lang.name()
            ));
            break;
        }
        let key = format!(
            "{}\0{}",
            if r.req.relative { &r.from } else { "" },
            r.req.spec
        );
        let from_disp = if r.from.is_empty() {
            "the interpreter's start-up".to_string()
        } else {
            format!("{}:{}", display(&r.from), r.req.line)
        };
        let lname = lang.name();
        let ev = |spec: &str| {
            Evidence::new(
                Why::Runtime,
                (!r.from.is_empty()).then_some(r.from.as_str()),
                format!(
                    "{lname} library {}, required by {from_disp}",
                    spec.trim_start_matches('\0')
                ),
            )
        };
        if done.get(&key).is_some_and(|b| *b >= r.budget) {
            // Already followed: this requirer is one more reason for the same files.
            if let Some(files) = resolved.get(&key).cloned() {
                let e = ev(&r.req.spec);
                for f in files {
                    cx.keep_if_file(&f, e.clone());
                }
            }
            continue;
        }
        done.insert(key.clone(), r.budget);
        let found = lang.resolve(cx, &r.req, &r.from)?;
        if let Some(files) = &found
            && resolved.len() < MAX_REQUIRES
        {
            resolved.insert(key, files.clone());
        }
        match found {
            None => {
                if !r.quiet {
                    cx.warn(format!(
                        "{from_disp}: requires {}, which is not in the image (optional, computed or missing); keep it with --keep if it is needed",
                        r.req.spec
                    ));
                }
            }
            Some(files) => {
                let ev = ev(&r.req.spec);
                for f in files.iter() {
                    if let Some(canon) = cx.keep_if_file(f, ev.clone())
                        && lang.is_source(f)
                    {
                        let seen = done.get(&format!("file\0{canon}")).copied();
                        if seen.is_none_or(|b| b < r.budget) {
                            done.insert(format!("file\0{canon}"), r.budget);
                            texts.push((canon, r.budget));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether a path (symlinks followed) is a directory of the image.
pub(crate) fn is_dir(cx: &Cx, p: &str) -> bool {
    cx.fs
        .resolve(p, true)
        .is_ok_and(|r| cx.fs.get(&r.path).is_some_and(|n| n.is_dir()))
}

/// Keep the script an interpreter runs (`lang` names it in the evidence and the warning): its
/// canonical path, or `None`, with a warning, when the image does not have it.
pub(crate) fn keep_script(
    cx: &mut Cx,
    e: &Exec,
    lang: &str,
    script: &str,
) -> Result<Option<String>> {
    match cx.resolve_file(&abs_in(cx.run.cwd(), script))? {
        Some((canon, links)) => {
            cx.keep_links(&links, &canon);
            cx.keep(
                &canon,
                Evidence::new(
                    Why::Runtime,
                    Some(&e.path),
                    format!("{lang} script run by {}", display(&e.path)),
                ),
            );
            Ok(Some(canon))
        }
        None => {
            cx.warn(format!(
                "{}: runs the {lang} script {script}, which is not in the image",
                display(&e.path)
            ));
            Ok(None)
        }
    }
}

/// Read every file under `trees` whose name ends with one of `exts`, in one pass over the
/// layers, when they total at most 256 MiB: the graph then reads them from disk.
pub(crate) fn prefetch_sources(cx: &mut Cx, trees: &[String], exts: &[&str]) -> Result<()> {
    let mut files = Vec::new();
    let mut bytes = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for t in trees {
        let Ok(r) = cx.fs.resolve(t, true) else {
            continue;
        };
        if !seen.insert(r.path.clone()) {
            continue;
        }
        for (k, n) in cx.fs.subtree(&r.path) {
            if exts.iter().any(|e| k.ends_with(e)) {
                bytes += n.size();
                files.push(k.clone());
            }
        }
    }
    if bytes <= 256 << 20 {
        cx.contents.prefetch(cx.fs, &files)?;
    }
    Ok(())
}

/// Python-style nesting by indentation for languages whose function bodies are indented
/// under a `def` line (Ruby): for each line, whether it is inside a `def`.
pub(crate) fn nested_by_indent(
    text: &str,
    is_def: impl Fn(&str) -> bool,
    is_end: impl Fn(&str) -> bool,
) -> Vec<bool> {
    let mut out = Vec::new();
    let mut defs: Vec<usize> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let w = line.len() - t.len();
        if !t.is_empty() && !t.starts_with('#') {
            if is_end(t) && defs.last() == Some(&w) {
                defs.pop();
                out.push(true);
                continue;
            }
            while defs.last().is_some_and(|d| *d > w) {
                defs.pop();
            }
        }
        let one_line = is_def(t) && (t.contains("; end") || t.ends_with(" end"));
        let inside = !defs.is_empty() || one_line;
        if is_def(t) && !one_line {
            defs.push(w);
        }
        out.push(inside);
    }
    out
}

/// The first quoted string of `s` (`'x'` or `"x"`), when it has no interpolation.
pub(crate) fn quoted(s: &str) -> Option<String> {
    let s = s.trim_start().trim_start_matches('(').trim_start();
    let q = s.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let rest = &s[1..];
    let end = rest.find(q)?;
    let v = &rest[..end];
    (!v.contains("#{") && !v.contains("${") && !v.is_empty()).then(|| v.to_string())
}

/// Test support: the requires of a source as (spec, flag) pairs against `want`.
#[cfg(test)]
pub(crate) fn assert_requires(got: Vec<Req>, flag: fn(&Req) -> bool, want: &[(&str, bool)]) {
    let got: Vec<(String, bool)> = got.iter().map(|r| (r.spec.clone(), flag(r))).collect();
    let want: Vec<(String, bool)> = want.iter().map(|(s, b)| (s.to_string(), *b)).collect();
    assert_eq!(got, want);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_and_quotes() {
        let text = "require 'a'\nclass X\n  def f\n    require 'b'\n  end\n  require 'c'\nend\ndef g; require 'd'; end\n";
        let n = nested_by_indent(text, |t| t.starts_with("def "), |t| t == "end");
        assert_eq!(n, vec![false, false, false, true, true, false, false, true]);
        assert_eq!(quoted("('json')"), Some("json".into()));
        assert_eq!(quoted(" \"x/#{y}\""), None);
    }
}

//! Perl, found from the interpreter: its name (`perl`, `perl5.36.0`) or the libperl it links.
//! `@INC` comes from the directories compiled into libperl (or the interpreter), `PERL5LIB`
//! and `-I`. Kept: the `use` / `require` / `use parent` / `use base` graph of the script
//! (`Foo::Bar` → `Foo/Bar.pm` through `@INC`), with the XS parts of a module
//! (`auto/Foo/Bar/Bar.so`, traced as ELF).

use super::{Lang, Req, Root, graph};
use crate::error::Result;
use crate::rootfs::display;
use crate::trace::kit::{Cx, Exec, Interpreter, Rule, abs_in, join, under};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Perl",
    names: &["perl"],
    library: Some("libperl"),
    embedded: true,
    extensions: &["pl", "pm"],
    takes_value: &["-I", "-M", "-m"],
    code: &["-e", "-E"],
    script_option: &[],
};

/// Largest XS part kept for a module only named in a string (Encode::Byte's 0.4 MB is; the
/// 2-3 MB CJK encodings are not).
const MAX_LITERAL_XS: u64 = 1 << 20;

#[derive(Default)]
pub(crate) struct Perl;

struct PerlLang {
    inc: Vec<String>,
    trees: Vec<String>,
    /// Packages whose modules were all added (see [`PerlLang::distribution`]).
    expanded: std::collections::HashSet<usize>,
}

/// Modules of one distribution read at most.
const MAX_DISTRIBUTION_MODULES: usize = 400;

/// Pragmas and modules with no file.
const BUILTIN: &[&str] = &[
    "CORE",
    "UNIVERSAL",
    "DynaLoader::boot",
    "Internals",
    "utf8::",
    "re::",
];

impl Rule for Perl {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let Some(started) = INTERPRETER.start(cx, e)? else {
            return Ok(());
        };
        let strings = started.strings;
        let mut inc: Vec<String> = Vec::new();
        if let Some(v) = cx
            .run
            .env_var("PERL5LIB")
            .or_else(|| cx.run.env_var("PERLLIB"))
        {
            inc.extend(
                v.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| abs_in(cx.run.cwd(), d)),
            );
        }
        let mut script = None;
        let mut roots = Vec::new();
        let mut i = 1;
        while i < e.argv.len() {
            let Some(a) = e.arg(i) else { break };
            if a == "-e" || a == "-E" {
                break;
            }
            if let Some(d) = a.strip_prefix("-I").filter(|d| !d.is_empty()) {
                inc.push(abs_in(cx.run.cwd(), d));
            } else if let Some(m) = a.strip_prefix("-M").or_else(|| a.strip_prefix("-m")) {
                let m = m
                    .split(['=', ' '])
                    .next()
                    .unwrap_or(m)
                    .trim_start_matches('-');
                roots.push(m.to_string());
            } else if a == "--" {
                script = e.arg(i + 1).map(str::to_string);
                break;
            } else if !a.starts_with('-') {
                script = Some(a.to_string());
                break;
            }
            i += 1;
        }
        let mut compiled: Vec<String> = strings
            .into_iter()
            .filter(|s| s.contains("perl") && !s.ends_with(".h"))
            .filter(|s| {
                cx.fs
                    .resolve(s, true)
                    .is_ok_and(|r| cx.fs.get(&r.path).is_some_and(|n| n.is_dir()))
            })
            .collect();
        compiled.sort_by_key(|d| (d.contains("/local/"), !d.starts_with("/etc")));
        inc.extend(compiled);
        inc.dedup();
        let mut trees = Vec::new();
        for d in &inc {
            if let Ok(r) = cx.fs.resolve(d, true) {
                if !crate::trace::kit::is_system_dir(&r.path) {
                    cx.claim(&r.path);
                }
                trees.push(r.path);
            }
        }
        super::prefetch_sources(cx, &inc, &[".pm", ".pl"])?;
        let mut sources = Vec::new();
        if let Some(s) = script {
            sources.extend(super::keep_script(cx, e, "Perl", &s)?);
        }
        let roots = roots.into_iter().map(Root::start).collect();
        let mut lang = PerlLang {
            inc,
            trees,
            expanded: Default::default(),
        };
        graph(cx, &mut lang, &e.path, roots, sources)
    }
}

impl PerlLang {
    /// A CPAN distribution loads its own modules by computed names (Plack's
    /// `load_class($loader, 'Plack::Loader')`, `Plack::Handler::$server`): when a third-party
    /// module is required, the other modules of the package that ships it (the image's package
    /// database) are read too, each for its module-level requires (as third-party code is).
    fn distribution(&mut self, cx: &Cx, module: &str) -> Vec<String> {
        if !self.third_party(cx, module) {
            return Vec::new();
        }
        let Some(db) = cx.out.packages.clone() else {
            return Vec::new();
        };
        let Ok(r) = cx.fs.resolve(module, true) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &p in db.owners(&r.path) {
            if !self.expanded.insert(p) {
                continue;
            }
            out.extend(
                db.files_of(cx.fs, p)
                    .into_iter()
                    // Its modules and their XS parts (`auto/Template/Stash/XS/XS.so`).
                    .filter(|f| {
                        (f.ends_with(".pm") || (f.ends_with(".so") && f.contains("/auto/")))
                            && self.third_party(cx, f)
                    })
                    .map(|f| display(&f))
                    .take(MAX_DISTRIBUTION_MODULES),
            );
        }
        out
    }
}

/// `use if COND, Module => ARGS`: the pragma `if.pm` itself, and the module after the first
/// comma.
fn use_if(rest: &str, line: usize, out: &mut Vec<Req>) {
    out.push(Req {
        line,
        ..Req::named("if")
    });
    if let Some((_, m)) = rest.split_once(',') {
        let m = m
            .trim()
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .next()
            .unwrap_or("")
            .trim_matches(['\'', '"']);
        if m.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            out.push(Req {
                line,
                ..Req::named(m.to_string())
            });
        }
    }
}

/// `use parent -norequire, 'A'; use base qw(A B);`: the modules named (none with -norequire),
/// and the pragma.
fn use_parent(first: &str, rest: &str, line: usize, out: &mut Vec<Req>) {
    if rest.contains("-norequire") {
        return;
    }
    let args = rest[first.len()..]
        .replace("qw", " ")
        .replace(['(', ')', '\'', '"', ',', '/'], " ");
    for m in args
        .split_whitespace()
        .filter(|m| m.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
    {
        out.push(Req {
            line,
            ..Req::named(m.to_string())
        });
    }
    out.push(Req {
        line,
        ..Req::named(first.to_string())
    });
}

impl Lang for PerlLang {
    fn name(&self) -> &'static str {
        "Perl"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        let mut out = Vec::new();
        let mut in_pod = false;
        let mut depth = 0usize;
        let mut package = String::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with('=') && t.len() > 1 && t.as_bytes()[1].is_ascii_alphabetic() {
                in_pod = !t.starts_with("=cut");
                continue;
            }
            if in_pod || t.starts_with('#') {
                continue;
            }
            if t.starts_with("__END__") || t.starts_with("__DATA__") {
                break;
            }
            // The glob operator (`glob(…)`, `<*.txt>`) loads File::Glob.
            if t.contains("glob(") || t.contains("glob ") || has_glob_operator(t) {
                out.push(Req {
                    spec: "File::Glob".into(),
                    line: n + 1,
                    nested: false,
                    relative: false,
                    waits_for: None,
                });
            }
            for stmt in t.split([';', '{', '}']) {
                let s = stmt.trim_start();
                // `my $t = do "unicore/$f.pl"`: a `do FILE` inside an expression.
                let inner_do = s.find("do \"").filter(|&p| {
                    p > 0
                        && s[..p]
                            .chars()
                            .last()
                            .is_some_and(|c| !(c.is_alphanumeric() || c == '_'))
                });
                let (kw, rest) = match inner_do {
                    Some(p) => ("do", &s[p + 3..]),
                    None => match s.split_once(char::is_whitespace) {
                        Some(x) => x,
                        None => continue,
                    },
                };
                // `use` and `no` run at compile time wherever they are; `require` when
                // reached.
                let nested = (kw == "require" || kw == "do") && depth > 0;
                if kw != "use" && kw != "require" && kw != "no" && kw != "do" {
                    continue;
                }
                let rest = rest.trim();
                // `do FILE` reads a file through @INC like `require` (Unicode::UCD's
                // `do "unicore/To/$file.pl"`); `do {` and `do $x` are not files.
                if kw == "do" && !rest.starts_with('"') && !rest.starts_with('\'') {
                    continue;
                }
                // `require "Foo/Bar/$name.pm"`: a module computed under a literal namespace.
                if (kw == "require" || kw == "do")
                    && let Some(q) = rest.strip_prefix('"')
                    && let Some(d) = q.find('$')
                {
                    let prefix = q[..d].replace("::", "/");
                    // `do "dir/$x"` with the variable at the end may reach subdirectories.
                    let deep =
                        kw == "do" && q[d..].split('"').next().is_some_and(|t| !t.contains('.'));
                    if prefix.ends_with('/') && prefix.len() > 1 {
                        out.push(Req {
                            spec: format!("{prefix}*{}", if deep { "*" } else { "" }),
                            line: n + 1,
                            nested,
                            relative: false,
                            waits_for: None,
                        });
                    }
                    continue;
                }
                let first = rest
                    .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
                    .next()
                    .unwrap_or("");
                if first == "if" && kw == "use" {
                    use_if(rest, n + 1, &mut out);
                    continue;
                }
                if (first == "parent" || first == "base") && kw == "use" {
                    use_parent(first, rest, n + 1, &mut out);
                    continue;
                }
                let m = first.trim_matches(['\'', '"']);
                if m.is_empty()
                    || m.chars().next().is_some_and(|c| {
                        c.is_ascii_digit()
                            || c == 'v' && m[1..].starts_with(|d: char| d.is_ascii_digit())
                    })
                {
                    continue; // use 5.010; use v5.36;
                }
                if m.starts_with('$') || BUILTIN.iter().any(|b| m.starts_with(b)) {
                    continue;
                }
                out.push(Req {
                    spec: m.to_string(),
                    line: n + 1,
                    nested,
                    relative: false,
                    waits_for: None,
                });
            }
            // Module names in string literals are loaded by computed requires
            // (`eval "require $backend"` with `$backend = 'JSON::backportPP'`,
            // `"LWP::Protocol::$scheme"`): optional.
            if let Some(p) = t.strip_prefix("package ") {
                package = p
                    .split(|c: char| c == ';' || c.is_whitespace() || c == '{')
                    .next()
                    .unwrap_or("")
                    .replace("::", "/");
            }
            for lit in quoted_literals(t) {
                if let Some(spec) = literal_module(lit) {
                    // A namespace under the module's own (URI::file's `"URI::file::" . $os`)
                    // is its own plugins: followed like its requires; other names one hop.
                    let own = !package.is_empty()
                        && spec.ends_with("/*")
                        && spec.starts_with(&format!("{package}/"));
                    out.push(Req {
                        spec: format!("?{spec}"),
                        line: n + 1,
                        nested: !own,
                        relative: false,
                        waits_for: None,
                    });
                }
            }
            depth += line.matches('{').count();
            depth = depth.saturating_sub(line.matches('}').count());
        }
        out
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>> {
        if let Some(spec) = req.spec.strip_prefix('?') {
            // A name found in a string: kept when it is a module, silently otherwise.
            let r = Req {
                spec: spec.to_string(),
                ..req.clone()
            };
            // Only the module's source: a name in a string is often a table of what may be
            // loaded (Encode::Config names every CJK encoding); its XS part (megabytes for
            // Encode::JP) comes only when a `use`/`require` names it.
            let mut files = self.resolve(cx, &r, from)?.unwrap_or_default();
            files.retain(|f| {
                if f.ends_with(".pm") || f.ends_with(".pl") {
                    return true;
                }
                let size = cx
                    .fs
                    .resolve(f, true)
                    .ok()
                    .and_then(|r| cx.fs.get(&r.path).map(|n| n.size()))
                    .unwrap_or(0);
                if size > MAX_LITERAL_XS {
                    cx.drop_path(
                        f,
                        format!(
                            "{spec} is named in a string of {}, not required: its XS part of more than 1 MiB is not kept (keep it with --keep)",
                            display(from)
                        ),
                    );
                    return false;
                }
                true
            });
            return Ok(Some(files));
        }
        let spec = &req.spec;
        if let Some(ns) = spec.strip_suffix("**") {
            // `do "unicore/$table"`: the variable may hold a path (`To/Bc.pl`): every Perl
            // file under the directory, at any depth.
            let mut out = Vec::new();
            for d in &self.inc {
                let dir = join(d, ns.trim_end_matches('/'));
                out.extend(
                    cx.files_under(&dir)
                        .into_iter()
                        .filter(|f| f.ends_with(".pl") || f.ends_with(".pm")),
                );
            }
            return Ok((!out.is_empty()).then_some(out));
        }
        if let Some(ns) = spec.strip_suffix('*') {
            // Every module under the namespace, in each @INC directory.
            let mut out = Vec::new();
            for d in &self.inc {
                let dir = join(d, ns.trim_end_matches('/'));
                out.extend(cx.glob(&format!("{dir}/*.pm")));
                out.extend(cx.glob(&format!("{dir}/*.pl")));
            }
            return Ok((!out.is_empty()).then_some(out));
        }
        let rel = if spec.ends_with(".pm") || spec.ends_with(".pl") || spec.contains('/') {
            spec.clone()
        } else {
            format!("{}.pm", spec.replace("::", "/"))
        };
        if rel.starts_with('/') {
            return Ok(cx.resolve_file(&rel)?.map(|_| vec![rel.clone()]));
        }
        for d in &self.inc {
            let f = join(d, &rel);
            if cx.resolve_file(&f)?.is_some() {
                let mut out = vec![f.clone()];
                // Data files beside the module (LWP/media.types).
                if let Some((dir, _)) = f.rsplit_once('/')
                    && rel.contains('/')
                    && let Ok(r) = cx.fs.resolve(dir, true)
                {
                    let prefix = format!("{}/", r.path);
                    let mut bytes = 0u64;
                    for (k, n) in cx.fs.subtree(&r.path) {
                        let rest = &k[prefix.len()..];
                        if rest.contains('/')
                            || rest.ends_with(".pm")
                            || rest.ends_with(".pl")
                            || rest.ends_with(".pod")
                            || !matches!(n.kind, crate::rootfs::Kind::File { .. })
                        {
                            continue;
                        }
                        bytes += n.size();
                        if bytes > 4 << 20 {
                            break;
                        }
                        out.push(display(k));
                    }
                }
                out.extend(self.distribution(cx, &f));
                // XS: auto/Foo/Bar/Bar.so (and the rest of that directory) in any @INC dir.
                let stem = rel.trim_end_matches(".pm");
                let leaf = stem.rsplit('/').next().unwrap_or(stem);
                for d2 in &self.inc {
                    let so = join(d2, &format!("auto/{stem}/{leaf}.so"));
                    if cx.resolve_file(&so)?.is_some() {
                        out.push(so);
                        break;
                    }
                }
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    fn third_party(&self, cx: &Cx, file: &str) -> bool {
        // Debian's vendor directories (`/usr/share/perl5`, `/usr/lib/<triplet>/perl5`) and
        // site directories hold CPAN distributions, not the standard library.
        let p = cx.canonical(file);
        p.split('/')
            .any(|c| c == "perl5" || c == "site_perl" || c == "vendor_perl")
    }

    fn in_runtime(&self, cx: &Cx, file: &str) -> bool {
        let p = cx.canonical(file);
        self.trees.iter().any(|t| under(&p, t))
    }

    fn is_source(&self, file: &str) -> bool {
        file.ends_with(".pm") || file.ends_with(".pl")
    }
}

/// `<*.txt>`-style glob operators (not `<STDIN>` or `<$fh>`).
fn has_glob_operator(t: &str) -> bool {
    let mut rest = t;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        match after.find('>') {
            Some(j) => {
                let inner = &after[..j];
                if !inner.starts_with('$')
                    && inner.contains(['*', '?'])
                    && !inner.contains([' ', '<', '='])
                {
                    return true;
                }
                rest = &after[j + 1..];
            }
            None => return false,
        }
    }
    false
}

/// The contents of the '…' and "…" literals of a line.
fn quoted_literals(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(['\'', '"']) {
        let q = rest.as_bytes()[i] as char;
        let after = &rest[i + 1..];
        match after.find(q) {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// `Foo::Bar` → `Foo::Bar`; `Foo::Bar::$x` → `Foo/Bar/*` (the namespace); else nothing.
fn literal_module(lit: &str) -> Option<String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = lit.split("::").collect();
    if parts.len() < 2 {
        return None;
    }
    let (last, head) = parts.split_last()?;
    if !head.iter().all(|p| word(p)) {
        return None;
    }
    if word(last) {
        return Some(lit.to_string());
    }
    // `"URI::file::" . $os`: the namespace.
    if last.is_empty() {
        return Some(format!("{}/*", head.join("/")));
    }
    let var = last.strip_prefix('$')?;
    (word(var) || var.starts_with('{')).then(|| format!("{}/*", head.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_in_string_literals() {
        assert_eq!(
            literal_module("JSON::backportPP").as_deref(),
            Some("JSON::backportPP")
        );
        assert_eq!(
            literal_module("LWP::Protocol::$scheme").as_deref(),
            Some("LWP/Protocol/*")
        );
        assert_eq!(literal_module("URI::file::").as_deref(), Some("URI/file/*"));
        assert_eq!(literal_module("Foo"), None);
        assert_eq!(literal_module("a b::c"), None);
        assert_eq!(literal_module("http://x::y"), None);
        assert_eq!(
            quoted_literals(r#"my $c = "URI::file::" . ($X{$OS} || 'Unix');"#),
            vec!["URI::file::", "Unix"]
        );
    }

    #[test]
    fn uses_and_requires() {
        let lang = PerlLang {
            inc: vec![],
            trees: vec![],
            expanded: Default::default(),
        };
        let text = "use strict;\nuse warnings;\nuse 5.010;\nuse File::Temp qw(tempfile);\nuse parent -norequire, 'X';\nuse base qw(Exporter);\n=pod\nuse Nope;\n=cut\nsub f {\n  require Lazy::Mod;\n}\nrequire \"conf.pl\";\nno overloading;\nmy @x = </app/*.pl>;\nrequire \"Image/ExifTool/$type.pm\";\n";
        crate::trace::runtime::assert_requires(
            lang.parse(text),
            |r| r.nested,
            &[
                ("strict", false),
                ("warnings", false),
                ("File::Temp", false),
                ("Exporter", false),
                ("base", false),
                ("Lazy::Mod", true),
                ("conf.pl", false),
                ("overloading", false),
                ("File::Glob", false),
                ("Image/ExifTool/*", false),
            ],
        );
    }
}

//! GNU Guile (`guile`, `guile-3.0`, or a program linking libguile): modules resolved the way
//! Guile resolves them. `(ice-9 match)` is `ice-9/match.scm` on `%load-path` and
//! `ice-9/match.go` on `%load-compiled-path`; both paths are the directories compiled into
//! libguile (`…/share/guile/3.0`, `…/guile/3.0/ccache`, the `site` ones), after
//! `GUILE_LOAD_PATH`/`GUILE_LOAD_COMPILED_PATH` and `-L`/`-C`. A module's requires are its
//! `use-modules`, `#:use-module` and `#:autoload` clauses (an autoload loads on first use: it
//! waits like a function-level import), `(@ (m) x)`, `resolve-interface`/`resolve-module`
//! of a quoted name and `primitive-load-path`/`load-from-path`/`include-from-path` of a
//! string. Start-up: the boot module libguile names (`ice-9/boot-9`, `ice-9/eval`) and the
//! command-line module that parses every `guile SCRIPT` invocation, each read for what it
//! loads. The compiler is not kept: a `.scm` script is compiled on its first run when the
//! user's cache is writable, and when it cannot be (no compiler, as when `HOME` is read-only)
//! Guile says so on stderr and interprets the script, as `--no-auto-compile` does.

use super::{Lang, Req, Root, graph};
use crate::error::Result;
use crate::trace::kit::{Cx, Exec, Interpreter, Rule, Started, abs_in, join};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Guile",
    names: &["guile"],
    library: Some("libguile"),
    embedded: true,
    extensions: &["scm"],
    takes_value: &["-L", "-C", "-x", "-l", "-e"],
    code: &["-c"],
    script_option: &["-s"],
};

/// The module the shell runs every command line through (`scm_shell`).
const COMMAND_LINE: &str = "ice-9/command-line";

pub(crate) struct Guile;

struct GuileLang {
    /// `%load-path`: where `NAME.scm` is looked up.
    load: Vec<String>,
    /// `%load-compiled-path`: where `NAME.go` is.
    compiled: Vec<String>,
    /// The compiled-in directories (canonical, no leading slash): the runtime's trees.
    trees: Vec<String>,
}

impl Rule for Guile {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let Some(Started { strings, objects }) = INTERPRETER.start(cx, e)? else {
            return Ok(());
        };
        let command = INTERPRETER.command(e);
        let env_dirs = |cx: &Cx, name: &str| -> Vec<String> {
            cx.run
                .env_var(name)
                .map(|v| {
                    v.split(':')
                        .filter(|d| !d.is_empty())
                        .map(|d| abs_in(cx.run.cwd(), d))
                        .collect()
                })
                .unwrap_or_default()
        };
        let option_dirs = |o: &str| -> Vec<String> {
            command
                .options
                .iter()
                .filter(|(k, _)| k == o)
                .filter_map(|(_, v)| v.as_deref().map(|d| abs_in(cx.run.cwd(), d)))
                .collect()
        };
        // Every directory libguile names (as written, canonical) is the runtime's (the `guile`
        // parents and `extensions` too: a path naming them keeps nothing whole); modules are
        // looked up in the others, which are the runtime's trees.
        let mut trees = Vec::new();
        let mut builtin = Vec::new();
        for s in strings
            .iter()
            .filter(|s| s.contains("/guile") && !s.contains("/include"))
        {
            let Ok(r) = cx.fs.resolve(s, true) else {
                continue;
            };
            if !cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) {
                continue;
            }
            cx.claim(&r.path);
            if !s.ends_with("/extensions") && !s.ends_with("/guile") {
                trees.push(r.path);
                builtin.push(s.clone());
            }
        }
        let (builtin_compiled, builtin_load): (Vec<String>, Vec<String>) =
            builtin.into_iter().partition(|d| d.contains("ccache"));
        let mut load = option_dirs("-L");
        load.extend(env_dirs(cx, "GUILE_LOAD_PATH"));
        let mut compiled = option_dirs("-C");
        compiled.extend(env_dirs(cx, "GUILE_LOAD_COMPILED_PATH"));
        load.extend(builtin_load);
        compiled.extend(builtin_compiled);
        // Start-up: the boot files libguile names, the command-line module.
        let mut roots = boot_files(cx, &objects);
        roots.push(COMMAND_LINE.to_string());
        for (k, v) in &command.options {
            if let Some(n) = k.strip_prefix("--use-srfi=") {
                roots.extend(n.split(',').map(|n| format!("srfi/srfi-{n}")));
            }
            if let ("-l", Some(f)) = (k.as_str(), v) {
                roots.push(format!("\0file/{f}"));
            }
        }
        let mut sources = Vec::new();
        if let Some((_, s)) = &command.script
            && let Some(canon) = super::keep_script(cx, e, INTERPRETER.language, s)?
        {
            sources.push(canon);
        }
        // The start-up modules' function-level loads wait for the functions (the REPL, the
        // `-c` evaluator, `--listen`'s server): no lazy hop from them; a file given with `-l`
        // is the application's.
        let roots = roots
            .into_iter()
            .map(|spec| Root {
                budget: u8::from(spec.starts_with("\0file/")),
                ..Root::start(spec)
            })
            .collect();
        let mut lang = GuileLang {
            load,
            compiled,
            trees,
        };
        graph(cx, &mut lang, &e.path, roots, sources)
    }
}

/// The modules the interpreter loads by file name at start-up (`ice-9/boot-9`, `ice-9/eval.scm`):
/// the `ice-9/NAME` strings of the program and of libguile (read whole, bounded).
fn boot_files(cx: &mut Cx, objects: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in objects {
        let Ok(bytes) = cx.contents.read(cx.fs, o, 64 << 20) else {
            continue;
        };
        for run in bytes.split(|&b| b == 0) {
            let Ok(s) = std::str::from_utf8(run) else {
                continue;
            };
            let m = s.strip_suffix(".scm").unwrap_or(s);
            let ok = m.strip_prefix("ice-9/").is_some_and(|n| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
            if ok && !out.iter().any(|x| x == m) {
                out.push(m.to_string());
            }
        }
    }
    out
}

impl Lang for GuileLang {
    fn name(&self) -> &'static str {
        "Guile"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        requires(text)
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, _from: &str) -> Result<Option<Vec<String>>> {
        if let Some(f) = req.spec.strip_prefix("\0file/") {
            let p = abs_in(cx.run.cwd(), f);
            return Ok(cx.resolve_file(&p)?.map(|_| vec![p]));
        }
        let mut out = Vec::new();
        let name = req.spec.trim_end_matches(".scm");
        for (dirs, ext) in [(&self.load, "scm"), (&self.compiled, "go")] {
            for d in dirs {
                let p = join(d, &format!("{name}.{ext}"));
                if cx.resolve_file(&p)?.is_some() {
                    out.push(p);
                    break;
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn in_runtime(&self, cx: &Cx, file: &str) -> bool {
        cx.fs.resolve(file, false).is_ok_and(|r| {
            self.trees
                .iter()
                .any(|t| crate::trace::kit::under(&r.path, t))
        })
    }

    fn is_source(&self, file: &str) -> bool {
        INTERPRETER.is_source(file)
    }
}

/// Source text without comments (`;` to the end of the line, `#| … |#`, `#;` is left: it
/// comments out one datum, rare in module headers) and with strings kept.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '#' if chars.peek() == Some(&'\\') => {
                // A character literal (`#\;`, `#\(`): not a comment, not a paren.
                out.push(c);
                out.extend(chars.next());
                out.extend(chars.next());
            }
            ';' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '#' if chars.peek() == Some(&'|') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '|' && c == '#' {
                        break;
                    }
                    if c == '\n' {
                        out.push('\n');
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The module name of a spec at `s`: `(a b c)` → `a/b/c`; `((a b) #:select …)` → `a/b`.
fn module_at(s: &str) -> Option<String> {
    let s = s.trim_start();
    let s = s.strip_prefix('(')?;
    let s = s.trim_start().strip_prefix('(').unwrap_or(s);
    let end = s.find(')')?;
    let words: Vec<&str> = s[..end].split_whitespace().collect();
    let ok = !words.is_empty()
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+!?*<>=/.".contains(c))
        });
    ok.then(|| words.join("/"))
}

/// The balanced form starting at `s` (an opening paren), or the rest.
fn form(s: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &s[..=i];
                }
            }
            _ => {}
        }
    }
    s
}

/// Per byte of `code`: inside a string; inside the body of a procedure.
fn scan(code: &str) -> (Vec<bool>, Vec<bool>) {
    let b = code.as_bytes();
    let (mut in_string, mut in_body) = (vec![false; b.len()], vec![false; b.len()]);
    let mut stack: Vec<bool> = Vec::new();
    let mut string = false;
    let mut i = 0;
    while i < b.len() {
        let body = stack.last().copied().unwrap_or(false);
        in_string[i] = string;
        in_body[i] = body;
        let c = b[i];
        if string {
            if c == b'\\' {
                i += 1;
                if i < b.len() {
                    in_string[i] = true;
                    in_body[i] = body;
                }
            } else if c == b'"' {
                string = false;
            }
        } else if c == b'#' && b.get(i + 1) == Some(&b'\\') {
            // A character literal: `#\(` opens nothing.
            let end = (i + 3).min(b.len());
            in_body[i..end].fill(body);
            i += 3;
            continue;
        } else if c == b'"' {
            string = true;
            in_string[i] = true;
        } else if c == b'(' {
            let rest = &code[i + 1..];
            let head: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '(' && *c != ')')
                .collect();
            let after = rest[head.len()..].trim_start();
            let procedure = matches!(head.as_str(), "lambda" | "lambda*" | "case-lambda")
                || (matches!(
                    head.as_str(),
                    "define" | "define*" | "define-public" | "define-syntax-rule"
                ) && after.starts_with('('));
            stack.push(body || procedure);
        } else if c == b')' {
            stack.pop();
        }
        i += 1;
    }
    (in_string, in_body)
}

/// The modules a Guile source loads (see the module's doc).
pub(crate) fn requires(text: &str) -> Vec<Req> {
    let code = without_comments(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    // At each byte: whether it is inside a string, and inside a procedure's body (`(define
    // (f …) …)`, a `lambda`), where a require runs only when the procedure is called.
    let (in_string, in_body) = scan(&code);
    let mut out: Vec<Req> = Vec::new();
    let mut push = |spec: String, at: usize, nested: bool| {
        if !in_string[at] && !out.iter().any(|r| r.spec == spec) {
            out.push(Req {
                spec,
                line: line_of(at),
                nested,
                relative: false,
                waits_for: None,
            });
        }
    };
    for (at, _) in code.match_indices("(use-modules") {
        let rest = form(&code[at..]);
        let mut s = &rest["(use-modules".len()..];
        while let Some(p) = s.find('(') {
            let f = form(&s[p..]);
            if let Some(m) = module_at(f) {
                push(m, at, in_body[at]);
            }
            s = &s[p + f.len().max(1)..];
        }
    }
    for (kw, nested) in [("#:use-module", false), ("#:autoload", true)] {
        for (at, _) in code.match_indices(kw) {
            if let Some(m) = module_at(&code[at + kw.len()..]) {
                push(m, at, nested);
            }
        }
    }
    for kw in ["(resolve-interface '", "(resolve-module '", "(@ ", "(@@ "] {
        for (at, _) in code.match_indices(kw) {
            if let Some(m) = module_at(&code[at + kw.len()..]) {
                push(m, at, in_body[at]);
            }
        }
    }
    for kw in [
        "(primitive-load-path \"",
        "(load-from-path \"",
        "(include-from-path \"",
    ] {
        for (at, _) in code.match_indices(kw) {
            let rest = &code[at + kw.len()..];
            if let Some(end) = rest.find('"') {
                let name = rest[..end].trim_end_matches(".scm");
                if !name.is_empty() && !name.starts_with('/') && !name.contains("..") {
                    push(name.to_string(), at, in_body[at]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_of_a_module() {
        let text = r#";;; (use-modules (not this))
(define-module (app main)
  #:use-module (ice-9 match)
  #:use-module ((srfi srfi-1) #:select (fold))
  #:autoload (ice-9 format) (format))
(use-modules (ice-9 rdelim) ((web uri) #:prefix uri:))
#| (use-modules (nor this)) |#
(primitive-load-path "ice-9/psyntax-pp")
(define (later) (resolve-interface '(system base compile)) (display "(use-modules (x))"))
(define now (@ (system base message) warning))
(display #\;)
"#;
        let got: Vec<(String, bool)> = requires(text)
            .into_iter()
            .map(|r| (r.spec, r.nested))
            .collect();
        let want: Vec<(String, bool)> = [
            ("ice-9/rdelim", false),
            ("web/uri", false),
            ("ice-9/match", false),
            ("srfi/srfi-1", false),
            ("ice-9/format", true),
            ("system/base/compile", true),
            ("system/base/message", false),
            ("ice-9/psyntax-pp", false),
        ]
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
        assert_eq!(got, want);
    }
}

//! Shell scripts: the commands a script (or an `sh -c` string) runs. A small POSIX/bash
//! reader: quotes, escapes, comments, `;` `&&` `||` `|` `&`, here-documents, `$(…)` and
//! backticks (their commands run too), `if`/`while`/`for`/`case` and functions, assignments
//! (a literal `PATH=…` changes where later commands are found; a literal `X=/bin/foo` makes
//! `$X` known), `exec`, `command`, `eval` and `trap` with literal strings, and `.`/`source` of
//! other scripts (read in place, recursively, bounded). Builtins are not files. A command whose
//! name is computed at run time (`$CMD`) gives a warning naming the line.

use std::collections::{HashMap, HashSet};

use super::{Cx, Evidence, Exec, Rule, Why, abs_in};
use crate::error::Result;
use crate::rootfs::display;

/// Programs that are shells (by the name they run as).
pub(crate) const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "rbash"];

/// Builtins of dash, bash and busybox ash: never files.
const BUILTINS: &[&str] = &[
    ":",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "cd",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "suspend",
    "test",
    "[",
    "times",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
];

/// Nested `.`/`source` and `eval` depth.
const MAX_DEPTH: usize = 8;
/// Commands read from one script (and what it sources).
const MAX_COMMANDS: usize = 20_000;

#[derive(Default)]
pub(crate) struct Shells;

impl Rule for Shells {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        let shell = if SHELLS.contains(&a0) {
            a0.to_string()
        } else if SHELLS.contains(&file) && a0 != "busybox" {
            file.to_string()
        } else {
            return Ok(());
        };
        let mut i = 1;
        let mut command_at = None;
        while i < e.argv.len() {
            let Some(a) = e.arg(i) else { break };
            if a == "--" || a == "-" {
                i += 1;
                break;
            }
            if matches!(a, "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
                i += 2;
                continue;
            }
            if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 {
                if !a.starts_with("--") && a[1..].contains('c') {
                    command_at = Some(i + 1);
                    break;
                }
                if !a.starts_with("--") && a[1..].contains('s') {
                    return Ok(()); // commands from stdin
                }
                i += 1;
                continue;
            }
            break;
        }
        let env = process_env(cx, e);
        if let Some(ci) = command_at {
            let Some(text) = e.arg(ci) else {
                if ci < e.argv.len() {
                    cx.warn(format!(
                        "{}: `{shell} -c` runs a string computed at run time; its commands are not traced",
                        display(&e.path)
                    ));
                }
                return Ok(());
            };
            // `sh -c STRING NAME ARGS…`: NAME is $0, ARGS the positional parameters.
            let positional = Some(
                (ci + 2..e.argv.len())
                    .map(|k| e.arg(k).map(str::to_string))
                    .collect(),
            );
            let text = text.to_string();
            let origin = Origin {
                from: e.path.clone(),
                label: format!("`{shell} -c` of {}", display(&e.path)),
                arg0: e.arg(ci + 1).map(str::to_string),
            };
            return run_script(cx, e, &text, origin, positional, env);
        }
        if i >= e.argv.len() {
            return Ok(()); // interactive, or commands from stdin
        }
        let Some(arg) = e.arg(i) else {
            cx.warn(format!(
                "{}: {shell} runs a script named at run time; it is not traced",
                display(&e.path)
            ));
            return Ok(());
        };
        let Some(script) = find_script(cx, arg, &env)? else {
            cx.warn(format!(
                "{}: {shell} runs {arg}, which is not in the image",
                display(&e.path)
            ));
            return Ok(());
        };
        cx.keep(
            &script,
            Evidence::new(
                Why::ScriptCommand,
                Some(&e.path),
                format!("script run by {shell} ({})", display(&e.path)),
            ),
        );
        let Some(text) = cx.text(&script)? else {
            cx.warn(format!(
                "{}: not a text file of at most 1 MiB; the commands it runs are not traced",
                display(&script)
            ));
            return Ok(());
        };
        let positional = Some(
            (i + 1..e.argv.len())
                .map(|k| e.arg(k).map(str::to_string))
                .collect(),
        );
        let origin = Origin {
            label: display(&script),
            from: script,
            arg0: Some(arg.to_string()),
        };
        run_script(cx, e, &text, origin, positional, env)
    }
}

/// Where a script's text came from, for evidence and warnings.
struct Origin {
    /// Canonical path of the file (the shell's own path for `-c` strings).
    from: String,
    label: String,
    /// `$0`.
    arg0: Option<String>,
}

/// The environment a process sees: the image's, then what was given on the way.
fn process_env(cx: &Cx, e: &Exec) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = cx
        .run
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| super::DEFAULT_PATH.to_string());
    for (k, v) in &e.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// A script named on a shell's command line: relative to the working directory, else (bash)
/// through PATH.
fn find_script(cx: &mut Cx, arg: &str, env: &HashMap<String, String>) -> Result<Option<String>> {
    if let Some((canon, links)) = cx.resolve_file(&abs_in(cx.run.cwd(), arg))? {
        cx.keep_links(&links, &canon);
        return Ok(Some(canon));
    }
    if !arg.contains('/') {
        let path = env.get("PATH").cloned().unwrap_or_default();
        for d in path.split(':').filter(|d| !d.is_empty()) {
            if let Some((canon, links)) = cx.resolve_file(&super::join(d, arg))? {
                cx.keep_links(&links, &canon);
                return Ok(Some(canon));
            }
        }
    }
    Ok(None)
}

/// Read a script, keep what it sources, and queue the commands it runs.
fn run_script(
    cx: &mut Cx,
    e: &Exec,
    text: &str,
    origin: Origin,
    positional: Option<Vec<Option<String>>>,
    env: HashMap<String, String>,
) -> Result<()> {
    let cwd = cx.run.cwd().to_string();
    let mut sourced: Vec<(String, String, usize)> = Vec::new(); // (canonical, by, line)
    let mut missing_sources: Vec<String> = Vec::new();
    let parsed = {
        let mut reader =
            |name: &str, path_var: &str, by: &str, line: usize| -> Option<(String, String)> {
                let mut cands = Vec::new();
                if name.contains('/') {
                    cands.push(abs_in(&cwd, name));
                } else {
                    for d in path_var.split(':').filter(|d| !d.is_empty()) {
                        cands.push(super::join(d, name));
                    }
                    cands.push(abs_in(&cwd, name));
                }
                for c in cands {
                    if let Ok(Some((canon, links))) = cx.resolve_file(&c) {
                        cx.keep_links(&links, &canon);
                        let text = cx.text(&canon).ok().flatten()?;
                        sourced.push((canon.clone(), by.to_string(), line));
                        return Some((canon, text));
                    }
                }
                missing_sources.push(format!(
                    "{by}:{line}: sources {name}, which is not in the image"
                ));
                None
            };
        let mut p = Parser {
            vars: env.clone(),
            positional,
            arg0: origin.arg0.clone(),
            alternatives: Vec::new(),
            out: Parsed::default(),
            reader: &mut reader,
            visited: HashSet::new(),
        };
        p.visited.insert(origin.from.clone());
        p.run(text, &origin.label, 0);
        p.out
    };
    for (canon, by, line) in sourced {
        cx.keep(
            &canon,
            Evidence::new(
                Why::ScriptCommand,
                Some(&origin.from),
                format!("sourced by {by}:{line}"),
            ),
        );
    }
    for m in missing_sources {
        cx.warn(m);
    }
    for w in &parsed.warnings {
        cx.warn(w.clone());
    }
    for c in parsed.commands {
        if parsed
            .functions
            .contains(c.argv[0].as_deref().unwrap_or(""))
        {
            continue;
        }
        let Some(name) = c.argv[0].clone() else {
            continue;
        };
        let unknown: Vec<usize> = c
            .argv
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_none())
            .map(|(k, _)| k)
            .collect();
        let argv: Vec<String> = c.argv.into_iter().map(Option::unwrap_or_default).collect();
        let mut cenv = e.env.clone();
        if let Some(p) = &c.path
            && Some(p) != env.get("PATH")
        {
            cenv.push(("PATH".into(), p.clone()));
        }
        cenv.extend(c.env);
        cx.exec(
            argv,
            unknown,
            cenv,
            e.depth + 1,
            Evidence::new(
                Why::ScriptCommand,
                Some(&origin.from),
                format!("`{name}` run by {}:{}", c.file, c.line),
            ),
            false,
        )?;
    }
    Ok(())
}

/// One command a script runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    /// Words; `None` where computed at run time.
    pub argv: Vec<Option<String>>,
    /// Which script (label) and line.
    pub file: String,
    pub line: usize,
    /// PATH in effect when the script set it.
    pub path: Option<String>,
    /// `NAME=VALUE cmd` assignments.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub commands: Vec<Command>,
    pub functions: HashSet<String>,
    pub warnings: Vec<String>,
}

/// A piece of a word.
#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    /// `$NAME`, `${NAME}`, `${NAME:-default}`.
    Var {
        name: String,
        default: Option<Vec<Piece>>,
        quoted: bool,
    },
    /// `$0` (the script's name), `$1` … `$9`, `${10}`.
    Positional(usize),
    /// `$@` or `$*` (quoted or not).
    AllArgs,
    /// Anything computed at run time (`$(…)`, arithmetic, `$?`, `${x#y}`, …).
    Computed,
}

#[derive(Debug, Clone)]
struct Word {
    pieces: Vec<Piece>,
    quoted: bool,
    line: usize,
    /// Command substitutions inside it: (text, line).
    nested: Vec<(String, usize)>,
}

impl Word {
    /// The word as written when it is one unquoted literal.
    fn literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Tok {
    Word(Word),
    Op(&'static str),
}

type Reader<'r> = dyn FnMut(&str, &str, &str, usize) -> Option<(String, String)> + 'r;

struct Parser<'r> {
    vars: HashMap<String, String>,
    /// Positional parameters when known (`None`: given at run time).
    positional: Option<Vec<Option<String>>>,
    /// `$0`: the script's path as it was run (`None` for `sh -c` strings without a name).
    arg0: Option<String>,
    /// Earlier positional parameters a conditional `set --` may have left in place: `"$@"`
    /// runs each (the docker-entrypoint pattern `[ "${1#-}" != "$1" ] && set -- app "$@"`).
    alternatives: Vec<Option<Vec<Option<String>>>>,
    out: Parsed,
    /// Reads a sourced file: (name, PATH, by, line) → (canonical path, text).
    reader: &'r mut Reader<'r>,
    visited: HashSet<String>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// Find the index of the `close` that ends a group opened just before `start`, skipping
/// quotes and nested groups. Returns the index of `close` (or the end).
fn matching(s: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 1;
    let mut i = start;
    while i < s.len() {
        match s[i] {
            '\\' => i += 1,
            '\'' if open != '`' => {
                i += 1;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
            }
            '"' if open != '`' => {
                i += 1;
                while i < s.len() && s[i] != '"' {
                    if s[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            c if c == open && open != close => depth += 1,
            _ => {}
        }
        i += 1;
    }
    s.len()
}

fn count_lines(s: &[char]) -> usize {
    s.iter().filter(|&&c| c == '\n').count()
}

struct Lexer<'s> {
    s: &'s [char],
    i: usize,
    line: usize,
    heredocs: Vec<(String, bool)>,
}

impl Lexer<'_> {
    fn lex(mut self) -> Vec<Tok> {
        let mut out = Vec::new();
        let s = self.s;
        while self.i < s.len() {
            let c = s[self.i];
            let next = s.get(self.i + 1).copied();
            match c {
                ' ' | '\t' | '\r' => self.i += 1,
                '\\' if next == Some('\n') => {
                    self.i += 2;
                    self.line += 1;
                }
                '\n' => {
                    out.push(Tok::Op("\n"));
                    self.line += 1;
                    self.i += 1;
                    self.skip_heredocs();
                }
                '#' => {
                    while self.i < s.len() && s[self.i] != '\n' {
                        self.i += 1;
                    }
                }
                ';' => {
                    if next == Some(';') {
                        self.i += 2;
                        if s.get(self.i) == Some(&'&') {
                            self.i += 1;
                        }
                        out.push(Tok::Op(";;"));
                    } else if next == Some('&') {
                        self.i += 2;
                        out.push(Tok::Op(";;"));
                    } else {
                        self.i += 1;
                        out.push(Tok::Op(";"));
                    }
                }
                '&' => {
                    if next == Some('&') {
                        self.i += 2;
                        out.push(Tok::Op("&&"));
                    } else if next == Some('>') {
                        self.i += 2;
                        if s.get(self.i) == Some(&'>') {
                            self.i += 1;
                        }
                        self.redirect_target(&mut out);
                    } else {
                        self.i += 1;
                        out.push(Tok::Op("&"));
                    }
                }
                '|' => {
                    self.i += if matches!(next, Some('|') | Some('&')) {
                        2
                    } else {
                        1
                    };
                    out.push(Tok::Op(if next == Some('|') { "||" } else { "|" }));
                }
                '(' if next == Some('(') => {
                    // Arithmetic command `(( … ))`.
                    let end = matching(s, self.i + 2, '(', ')');
                    self.line += count_lines(&s[self.i..end.min(s.len())]);
                    self.i = (end + 2).min(s.len());
                }
                '(' => {
                    self.i += 1;
                    out.push(Tok::Op("("));
                }
                ')' => {
                    self.i += 1;
                    out.push(Tok::Op(")"));
                }
                '<' | '>' => self.redirect(&mut out),
                _ => {
                    let w = self.word();
                    // `2>file`: a number right before a redirection is a file descriptor.
                    if matches!(s.get(self.i), Some('<' | '>'))
                        && w.literal()
                            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
                    {
                        continue;
                    }
                    out.push(Tok::Word(w));
                }
            }
        }
        out
    }

    fn skip_heredocs(&mut self) {
        let docs = std::mem::take(&mut self.heredocs);
        for (delim, strip) in docs {
            loop {
                if self.i >= self.s.len() {
                    return;
                }
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != '\n' {
                    self.i += 1;
                }
                let line: String = self.s[start..self.i].iter().collect();
                self.i = (self.i + 1).min(self.s.len());
                self.line += 1;
                let l = if strip {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if l.trim_end_matches('\r') == delim {
                    break;
                }
            }
        }
    }

    fn redirect(&mut self, out: &mut Vec<Tok>) {
        let s = self.s;
        let c = s[self.i];
        if s.get(self.i + 1) == Some(&'(') {
            // Process substitution `<(…)`, `>(…)`.
            let end = matching(s, self.i + 2, '(', ')');
            let text: String = s[self.i + 2..end.min(s.len())].iter().collect();
            let line = self.line;
            self.line += count_lines(&s[self.i..end.min(s.len())]);
            self.i = (end + 1).min(s.len());
            out.push(Tok::Word(Word {
                pieces: vec![Piece::Computed],
                quoted: true,
                line,
                nested: vec![(text, line)],
            }));
            return;
        }
        self.i += 1;
        if c == '<' && s.get(self.i) == Some(&'<') {
            self.i += 1;
            if s.get(self.i) == Some(&'<') {
                self.i += 1; // here-string: the next word is data
                self.redirect_target(out);
                return;
            }
            let strip = s.get(self.i) == Some(&'-');
            if strip {
                self.i += 1;
            }
            while matches!(s.get(self.i), Some(' ' | '\t')) {
                self.i += 1;
            }
            let w = self.word();
            let delim: String = w
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Lit(l) => l.clone(),
                    _ => String::new(),
                })
                .collect();
            self.heredocs.push((delim, strip));
            return;
        }
        while matches!(s.get(self.i), Some('>' | '&' | '|' | '<')) {
            self.i += 1;
        }
        if s.get(self.i) == Some(&'-') {
            self.i += 1; // `>&-`
            return;
        }
        self.redirect_target(out);
    }

    /// The word after a redirection: a file, not a command; its substitutions still run.
    fn redirect_target(&mut self, out: &mut Vec<Tok>) {
        while matches!(self.s.get(self.i), Some(' ' | '\t')) {
            self.i += 1;
        }
        if self.i < self.s.len() && !matches!(self.s[self.i], '\n' | ';' | '&' | '|' | '(' | ')') {
            let w = self.word();
            if !w.nested.is_empty() {
                // Keep its substitutions: a computed word that is not a command.
                out.push(Tok::Op("subst"));
                out.push(Tok::Word(w));
                out.push(Tok::Op("endsubst"));
            }
        }
    }

    fn word(&mut self) -> Word {
        let s = self.s;
        let mut w = Word {
            pieces: Vec::new(),
            quoted: false,
            line: self.line,
            nested: Vec::new(),
        };
        let mut lit = String::new();
        let flush = |lit: &mut String, w: &mut Word| {
            if !lit.is_empty() {
                w.pieces.push(Piece::Lit(std::mem::take(lit)));
            }
        };
        while self.i < s.len() {
            let c = s[self.i];
            match c {
                ' ' | '\t' | '\n' | '\r' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => {
                    if let Some(&n) = s.get(self.i + 1) {
                        if n == '\n' {
                            self.line += 1;
                        } else {
                            lit.push(n);
                        }
                    }
                    self.i += 2;
                }
                '\'' => {
                    w.quoted = true;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != '\'' {
                        if s[self.i] == '\n' {
                            self.line += 1;
                        }
                        lit.push(s[self.i]);
                        self.i += 1;
                    }
                    self.i += 1;
                }
                '"' => {
                    w.quoted = true;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != '"' {
                        match s[self.i] {
                            '\\' => {
                                if let Some(&n) = s.get(self.i + 1) {
                                    if matches!(n, '$' | '`' | '"' | '\\') {
                                        lit.push(n);
                                    } else if n == '\n' {
                                        self.line += 1;
                                    } else {
                                        lit.push('\\');
                                        lit.push(n);
                                    }
                                }
                                self.i += 2;
                            }
                            '$' | '`' => {
                                flush(&mut lit, &mut w);
                                self.expansion(&mut w, true);
                            }
                            ch => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                lit.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                    self.i += 1;
                }
                '$' | '`' => {
                    flush(&mut lit, &mut w);
                    self.expansion(&mut w, false);
                }
                _ => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        flush(&mut lit, &mut w);
        if w.pieces.is_empty() && w.quoted {
            w.pieces.push(Piece::Lit(String::new()));
        }
        w
    }

    /// `$…` or a backtick at `self.i`.
    fn expansion(&mut self, w: &mut Word, quoted: bool) {
        let s = self.s;
        let line = self.line;
        if s[self.i] == '`' {
            let end = matching(s, self.i + 1, '`', '`');
            let text: String = s[self.i + 1..end.min(s.len())].iter().collect();
            self.line += count_lines(&s[self.i..end.min(s.len())]);
            self.i = (end + 1).min(s.len());
            w.nested.push((text.replace("\\`", "`"), line));
            w.pieces.push(Piece::Computed);
            return;
        }
        let next = s.get(self.i + 1).copied();
        match next {
            Some('(') if s.get(self.i + 2) == Some(&'(') => {
                let end = matching(s, self.i + 3, '(', ')');
                self.line += count_lines(&s[self.i..end.min(s.len())]);
                self.i = (end + 2).min(s.len());
                w.pieces.push(Piece::Computed);
            }
            Some('(') => {
                let end = matching(s, self.i + 2, '(', ')');
                let text: String = s[self.i + 2..end.min(s.len())].iter().collect();
                self.line += count_lines(&s[self.i..end.min(s.len())]);
                self.i = (end + 1).min(s.len());
                w.nested.push((text, line));
                w.pieces.push(Piece::Computed);
            }
            Some('{') => {
                let end = matching(s, self.i + 2, '{', '}');
                let inner: String = s[self.i + 2..end.min(s.len())].iter().collect();
                self.i = (end + 1).min(s.len());
                w.pieces.push(brace_expansion(&inner, quoted, line));
            }
            Some('\'') if !quoted => {
                // $'…' (ANSI-C quoting): the text, escapes left as written.
                self.i += 2;
                let mut lit = String::new();
                while self.i < s.len() && s[self.i] != '\'' {
                    if s[self.i] == '\\' && self.i + 1 < s.len() {
                        lit.push(s[self.i + 1]);
                        self.i += 2;
                        continue;
                    }
                    lit.push(s[self.i]);
                    self.i += 1;
                }
                self.i += 1;
                w.quoted = true;
                w.pieces.push(Piece::Lit(lit));
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = self.i + 1;
                let mut j = start;
                while j < s.len() && (s[j] == '_' || s[j].is_ascii_alphanumeric()) {
                    j += 1;
                }
                let name: String = s[start..j].iter().collect();
                self.i = j;
                w.pieces.push(Piece::Var {
                    name,
                    default: None,
                    quoted,
                });
            }
            Some(c) if c.is_ascii_digit() => {
                self.i += 2;
                let n = c.to_digit(10).unwrap_or(0) as usize;
                w.pieces.push(Piece::Positional(n));
            }
            Some('@' | '*') => {
                self.i += 2;
                w.pieces.push(Piece::AllArgs);
            }
            Some('#' | '?' | '$' | '!' | '-') => {
                self.i += 2;
                w.pieces.push(Piece::Computed);
            }
            _ => {
                self.i += 1;
                w.pieces.push(Piece::Lit("$".into()));
            }
        }
    }
}

/// `${…}`: a name, a positional parameter, or a name with a `-`/`:-`/`=`/`:=` default.
fn brace_expansion(inner: &str, quoted: bool, line: usize) -> Piece {
    if inner == "@" || inner == "*" {
        return Piece::AllArgs;
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Piece::Positional(n);
    }
    if is_name(inner) {
        return Piece::Var {
            name: inner.to_string(),
            default: None,
            quoted,
        };
    }
    let name_end = inner
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    if is_name(name) {
        for op in [":-", "-", ":=", "="] {
            if let Some(d) = rest.strip_prefix(op) {
                let chars: Vec<char> = d.chars().collect();
                let mut lx = Lexer {
                    s: &chars,
                    i: 0,
                    line,
                    heredocs: Vec::new(),
                };
                let w = lx.word();
                return Piece::Var {
                    name: name.to_string(),
                    default: Some(w.pieces),
                    quoted,
                };
            }
        }
    }
    Piece::Computed
}

impl Parser<'_> {
    fn run(&mut self, text: &str, file: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.out.warnings.push(format!(
                "{file}: scripts nest more than {MAX_DEPTH} deep; not read further"
            ));
            return;
        }
        let chars: Vec<char> = text.chars().collect();
        let toks = Lexer {
            s: &chars,
            i: 0,
            line: 1,
            heredocs: Vec::new(),
        }
        .lex();
        self.walk(&toks, file, depth);
    }

    /// Nested command substitutions of a word run too.
    fn nested(&mut self, w: &Word, file: &str, depth: usize) {
        for (text, line) in &w.nested {
            self.run(text, &format!("{file}:{line}"), depth + 1);
        }
    }

    fn walk(&mut self, toks: &[Tok], file: &str, depth: usize) {
        #[derive(PartialEq)]
        enum Expect {
            Command,
            CaseSubject,
            CaseIn,
            ForVar,
            ForWords,
            FunctionName,
            Skip(&'static str),
        }
        let mut expect = Expect::Command;
        // One entry per open `case`: true while reading patterns.
        let mut cases: Vec<bool> = Vec::new();
        let mut words: Vec<Word> = Vec::new();
        let mut in_subst = false;
        for t in toks {
            if self.out.commands.len() >= MAX_COMMANDS {
                return;
            }
            match t {
                Tok::Word(w) => {
                    if in_subst {
                        self.nested(w, file, depth);
                        continue;
                    }
                    if let Expect::Skip(end) = expect {
                        if w.literal() == Some(end) {
                            expect = Expect::Command;
                        }
                        self.nested(w, file, depth);
                        continue;
                    }
                    if cases.last() == Some(&true) && words.is_empty() {
                        if w.literal() == Some("esac") {
                            cases.pop();
                        }
                        continue;
                    }
                    match expect {
                        Expect::CaseSubject => {
                            self.nested(w, file, depth);
                            expect = Expect::CaseIn;
                            continue;
                        }
                        Expect::CaseIn => {
                            cases.push(true);
                            expect = Expect::Command;
                            continue;
                        }
                        Expect::ForVar => {
                            expect = Expect::ForWords;
                            continue;
                        }
                        Expect::FunctionName => {
                            if let Some(n) = w.literal() {
                                self.out
                                    .functions
                                    .insert(n.trim_end_matches("()").to_string());
                            }
                            expect = Expect::Command;
                            continue;
                        }
                        Expect::ForWords => {
                            if w.literal() == Some("do") {
                                expect = Expect::Command;
                            } else {
                                self.nested(w, file, depth);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    if words.is_empty()
                        && let Some(kw) = w.literal()
                    {
                        match kw {
                            "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "{"
                            | "!" | "time" | "fi" | "done" | "}" | "coproc" => continue,
                            "case" => {
                                expect = Expect::CaseSubject;
                                continue;
                            }
                            "for" | "select" => {
                                expect = Expect::ForVar;
                                continue;
                            }
                            "esac" => {
                                cases.pop();
                                continue;
                            }
                            "[[" => {
                                expect = Expect::Skip("]]");
                                continue;
                            }
                            "function" => {
                                expect = Expect::FunctionName;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    words.push(w.clone());
                }
                Tok::Op(op) => {
                    match *op {
                        "subst" => {
                            in_subst = true;
                            continue;
                        }
                        "endsubst" => {
                            in_subst = false;
                            continue;
                        }
                        _ => {}
                    }
                    if cases.last() == Some(&true) && words.is_empty() {
                        if *op == ")" {
                            *cases.last_mut().unwrap() = false;
                        }
                        continue;
                    }
                    if *op == "(" && words.len() == 1 {
                        // `name() { … }`: a function, not a command (its body runs when
                        // called, so its commands count).
                        if let Some(n) = words[0].literal() {
                            self.out.functions.insert(n.to_string());
                        }
                        words.clear();
                        continue;
                    }
                    if expect == Expect::ForWords {
                        continue;
                    }
                    self.flush(std::mem::take(&mut words), file, depth);
                    if *op == ";;"
                        && let Some(top) = cases.last_mut()
                    {
                        *top = true;
                    }
                }
            }
        }
        self.flush(words, file, depth);
    }

    /// Evaluate a word: `None` for what is computed at run time; `$@` and unquoted variables
    /// may give several words.
    fn eval(&self, w: &Word) -> Vec<Option<String>> {
        if let [Piece::AllArgs] = w.pieces.as_slice() {
            return match &self.positional {
                Some(p) => p.clone(),
                None => vec![None],
            };
        }
        if let [
            Piece::Var {
                name,
                quoted: false,
                default: None,
            },
        ] = w.pieces.as_slice()
            && let Some(v) = self.vars.get(name)
        {
            return v.split_whitespace().map(|s| Some(s.to_string())).collect();
        }
        vec![self.eval_pieces(&w.pieces)]
    }

    fn eval_pieces(&self, pieces: &[Piece]) -> Option<String> {
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var { name, default, .. } => match self.vars.get(name) {
                    Some(v) if !v.is_empty() || default.is_none() => out.push_str(v),
                    _ => out.push_str(&self.eval_pieces(default.as_ref()?)?),
                },
                Piece::Positional(0) => out.push_str(self.arg0.as_deref()?),
                Piece::Positional(n) => match &self.positional {
                    Some(p) => out.push_str(
                        p.get(n - 1)
                            .cloned()
                            .unwrap_or(Some(String::new()))?
                            .as_str(),
                    ),
                    None => return None,
                },
                Piece::AllArgs | Piece::Computed => return None,
            }
        }
        Some(out)
    }

    fn flush(&mut self, words: Vec<Word>, file: &str, depth: usize) {
        for w in &words {
            self.nested(w, file, depth);
        }
        let Some(first) = words.first() else { return };
        let line = first.line;
        // Leading assignments: for the command only, or for the shell when alone.
        let mut k = 0;
        let mut env = Vec::new();
        while k < words.len() {
            let w = &words[k];
            let Some(Piece::Lit(l)) = w.pieces.first() else {
                break;
            };
            let Some((name, rest)) = l.split_once('=') else {
                break;
            };
            if !is_name(name) {
                break;
            }
            let mut pieces = w.pieces.clone();
            pieces[0] = Piece::Lit(rest.to_string());
            let value = self.eval_pieces(&pieces);
            if words.len() == 1 {
                match value {
                    Some(v) => self.vars.insert(name.to_string(), v),
                    None => self.vars.remove(name),
                };
                return;
            }
            if let Some(v) = value {
                env.push((name.to_string(), v));
            }
            k += 1;
        }
        let uses_args = words[k..].iter().any(|w| {
            w.pieces
                .iter()
                .any(|p| matches!(p, Piece::AllArgs | Piece::Positional(_)))
        });
        if uses_args && !self.alternatives.is_empty() {
            let primary = self.positional.clone();
            let mut alts = vec![primary.clone()];
            alts.extend(self.alternatives.clone());
            for alt in alts {
                self.positional = alt;
                let mut argv: Vec<Option<String>> = Vec::new();
                for w in &words[k..] {
                    argv.extend(self.eval(w));
                }
                // An option where a command would be: that branch is not taken for it.
                if argv
                    .first()
                    .cloned()
                    .flatten()
                    .is_some_and(|a| a.starts_with('-'))
                    && !matches!(words[k].literal(), Some("set" | "exec" | "command"))
                {
                    continue;
                }
                if matches!(argv.first(), Some(Some(a)) if a == "exec")
                    && argv
                        .get(1)
                        .cloned()
                        .flatten()
                        .is_some_and(|a| a.starts_with('-'))
                {
                    continue;
                }
                self.command(argv, env.clone(), file, line, depth);
            }
            self.positional = primary;
            return;
        }
        let mut argv: Vec<Option<String>> = Vec::new();
        for w in &words[k..] {
            argv.extend(self.eval(w));
        }
        self.command(argv, env, file, line, depth);
    }

    fn command(
        &mut self,
        mut argv: Vec<Option<String>>,
        env: Vec<(String, String)>,
        file: &str,
        line: usize,
        depth: usize,
    ) {
        loop {
            let Some(first) = argv.first() else { return };
            let Some(name) = first.clone() else {
                let what = if self.positional.is_none() {
                    "a command computed at run time (its arguments, or a variable)"
                } else {
                    "a command computed at run time"
                };
                self.out.warnings.push(format!(
                    "{file}:{line}: runs {what}; it is not traced (keep it with --keep)"
                ));
                return;
            };
            match name.as_str() {
                "exec" => {
                    argv.remove(0);
                    while let Some(Some(a)) = argv.first() {
                        match a.as_str() {
                            "-c" | "-l" | "--" => {
                                argv.remove(0);
                            }
                            "-a" => {
                                argv.drain(..2.min(argv.len()));
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                "command" => {
                    argv.remove(0);
                    match argv.first() {
                        Some(Some(a)) if a == "-v" || a == "-V" => return,
                        Some(Some(a)) if a == "-p" => {
                            argv.remove(0);
                        }
                        _ => {}
                    }
                    continue;
                }
                "." | "source" => {
                    let Some(Some(target)) = argv.get(1).cloned() else {
                        if argv.len() > 1 {
                            self.out.warnings.push(format!(
                                "{file}:{line}: sources a file named at run time; it is not traced"
                            ));
                        }
                        return;
                    };
                    let path_var = self.vars.get("PATH").cloned().unwrap_or_default();
                    if let Some((canon, text)) = (self.reader)(&target, &path_var, file, line)
                        && self.visited.insert(canon.clone())
                    {
                        self.run(&text, &display(&canon), depth + 1);
                    }
                    return;
                }
                "eval" | "trap" => {
                    let args: Vec<Option<String>> = if name == "trap" {
                        argv.get(1).cloned().into_iter().collect()
                    } else {
                        argv[1..].to_vec()
                    };
                    if args.iter().all(Option::is_some) {
                        let text: Vec<String> = args.into_iter().flatten().collect();
                        self.run(&text.join(" "), &format!("{file}:{line}"), depth + 1);
                    } else {
                        self.out.warnings.push(format!(
                            "{file}:{line}: {name} of a string computed at run time; its commands are not traced"
                        ));
                    }
                    return;
                }
                "export" | "readonly" | "local" | "declare" | "typeset" => {
                    for a in argv.iter().skip(1).flatten() {
                        if let Some((k, v)) = a.split_once('=')
                            && is_name(k)
                        {
                            self.vars.insert(k.to_string(), v.to_string());
                        }
                    }
                    return;
                }
                "set" if matches!(argv.get(1), Some(Some(a)) if a == "--") => {
                    // `set -- ARGS`: new positional parameters (perhaps only on one branch).
                    let new: Vec<Option<String>> = argv[2..].to_vec();
                    if self.alternatives.len() < 8 {
                        self.alternatives.push(self.positional.clone());
                    }
                    self.positional = Some(new);
                    return;
                }
                "unset" => {
                    for a in argv.iter().skip(1).flatten() {
                        self.vars.remove(a);
                    }
                    return;
                }
                n if BUILTINS.contains(&n) => return,
                _ => {}
            }
            let path = self.vars.get("PATH").cloned();
            self.out.commands.push(Command {
                argv,
                file: file.to_string(),
                line,
                path,
                env,
            });
            return;
        }
    }
}

/// Parse a script's text on its own (tests, fuzzing, and callers with no files to source);
/// `path` is the PATH it runs with.
pub(crate) fn parse(text: &str, positional: Option<Vec<Option<String>>>, path: &str) -> Parsed {
    let mut reader = |_: &str, _: &str, _: &str, _: usize| -> Option<(String, String)> { None };
    let mut p = Parser {
        vars: [("PATH".to_string(), path.to_string())]
            .into_iter()
            .collect(),
        positional,
        arg0: Some("script".into()),
        alternatives: Vec::new(),
        out: Parsed::default(),
        reader: &mut reader,
        visited: HashSet::new(),
    };
    p.run(text, "script", 0);
    p.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Parsed) -> Vec<String> {
        p.commands
            .iter()
            .filter(|c| !p.functions.contains(c.argv[0].as_deref().unwrap_or("")))
            .map(|c| c.argv[0].clone().unwrap_or_else(|| "?".into()))
            .collect()
    }

    #[test]
    fn commands_of_a_typical_entrypoint_script() {
        let text = r#"#!/bin/sh
set -e
# a comment: rm -rf /
if [ "$1" = "serve" ]; then
    echo "starting" >&2
    exec /usr/bin/jq -n "$2" 2>/dev/null
fi
case "$1" in
    a|b) run-a --flag ;;
    c)
        /opt/tool/bin/c "$@"
        ;;
    *) ;;
esac
for f in $(ls /etc/app.d); do cat "$f" | grep -v x; done
VERSION=`uname -r` && test -n "$VERSION" || logger oops &
cat <<EOF
exec not-a-command
EOF
wait
"#;
        let p = parse(text, Some(vec![Some("serve".into())]), "/usr/bin");
        assert_eq!(
            names(&p),
            vec![
                "/usr/bin/jq",
                "run-a",
                "/opt/tool/bin/c",
                "ls",
                "cat",
                "grep",
                "uname",
                "logger",
                "cat"
            ]
        );
        let jq = &p.commands[0];
        assert_eq!(jq.line, 6);
        assert_eq!(jq.argv[1].as_deref(), Some("-n"));
        assert_eq!(
            jq.argv[2].as_deref(),
            Some(""),
            "$2 is empty when not given"
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn variables_path_functions_and_computed_commands() {
        let text = r#"
PATH=/opt/app/bin:$PATH
export JQ=/usr/bin/jq
helper() { tool-inside-function; }
helper
$JQ -r .
"$UNKNOWN" --x
${TOOL:-/usr/bin/default-tool} arg
command -v curl >/dev/null && curl -s http://x
eval "$(dircolors)"
. /etc/profile.d/app.sh
"#;
        let p = parse(text, Some(vec![]), "/usr/bin:/bin");
        let n = names(&p);
        assert_eq!(
            n,
            vec![
                "tool-inside-function",
                "/usr/bin/jq",
                "/usr/bin/default-tool",
                "curl",
                "dircolors"
            ]
        );
        assert_eq!(
            p.commands[0].path.as_deref(),
            Some("/opt/app/bin:/usr/bin:/bin")
        );
        assert!(p.functions.contains("helper"));
        assert!(
            p.warnings.iter().any(|w| w.starts_with("script:7:")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn exec_of_the_arguments() {
        let p = parse(
            "exec \"$@\"\n",
            Some(vec![Some("nginx".into()), Some("-g".into())]),
            "/usr/bin",
        );
        assert_eq!(
            p.commands[0].argv,
            vec![Some("nginx".into()), Some("-g".into())]
        );
        let p = parse("exec \"$@\"\n", None, "/usr/bin");
        assert!(p.commands.is_empty());
        assert_eq!(p.warnings.len(), 1);
        let p = parse("exec \"$@\"\n", Some(vec![]), "/usr/bin");
        assert!(p.commands.is_empty() && p.warnings.is_empty());
        // Re-running itself under another user: $0 is the script.
        let p = parse(
            "exec setpriv --reuid=1 -- \"$0\" \"$@\"\n",
            Some(vec![Some("x".into())]),
            "/usr/bin",
        );
        assert_eq!(
            p.commands[0].argv,
            vec![
                Some("setpriv".into()),
                Some("--reuid=1".into()),
                Some("--".into()),
                Some("script".into()),
                Some("x".into())
            ]
        );
    }

    #[test]
    fn docker_entrypoint_set_dash_dash() {
        // The official images' pattern: options as the command mean "run the app with them".
        let text = "#!/bin/sh\nset -e\nif [ \"${1#-}\" != \"$1\" ]; then\n  set -- memcached \"$@\"\nfi\nexec \"$@\"\n";
        let p = parse(
            text,
            Some(vec![Some("-p".into()), Some("11211".into())]),
            "/usr/bin",
        );
        assert_eq!(names(&p), vec!["memcached"]);
        assert_eq!(p.commands[0].argv.len(), 3);
        // Given a command instead, both the command and the app are traced.
        let p = parse(text, Some(vec![Some("sh".into())]), "/usr/bin");
        assert_eq!(names(&p), vec!["memcached", "sh"]);
    }

    #[test]
    fn bash_case_on_the_first_argument_keeps_both_branches() {
        let text = "#!/bin/bash\nset -euo pipefail\ncase \"${1:-}\" in\n  json) shift; exec jq \"$@\" ;;\n  b64) shift; exec base64 \"$@\" ;;\n  *) echo \"usage: $0 json|b64\" >&2; exit 2 ;;\nesac\n";
        let p = parse(text, Some(vec![]), "/usr/bin");
        assert_eq!(names(&p), vec!["jq", "base64"]);
    }

    #[test]
    fn hostile_input_terminates() {
        let mut s = String::new();
        for _ in 0..2000 {
            s.push_str("$( `(( {{ \"' ${ <<");
        }
        let _ = parse(&s, None, "/bin");
        let deep = "eval ".repeat(50) + "x";
        let _ = parse(&deep, None, "/bin");
    }
}

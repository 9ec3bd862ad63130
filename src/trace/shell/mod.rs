//! Shell scripts: the commands a script (or an `sh -c` string) runs. A small POSIX/bash
//! reader: quotes, escapes, comments, `;` `&&` `||` `|` `&`, here-documents, `$(…)` and
//! backticks (their commands run too), `if`/`while`/`for`/`case` and functions, assignments
//! (a literal `PATH=…` changes where later commands are found; a literal `X=/bin/foo` makes
//! `$X` known), `exec`, `command`, `eval` and `trap` with literal strings, and `.`/`source` of
//! other scripts (read in place, recursively, bounded). Builtins are not files. A command whose
//! name is computed at run time (`$CMD`) gives a warning naming the line.

use std::collections::{HashMap, HashSet};

use super::kit::{Cx, DEFAULT_PATH, Evidence, Exec, Rule, Why, abs_in, join};
use crate::error::Result;
use crate::rootfs::display;

mod lex;
mod parser;
pub(crate) use parser::ScriptFs;
use parser::{NoFs, Parser, Sourced};

/// Programs that are shells (by the name they run as).
pub(crate) const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "ksh", "ksh93", "mksh", "lksh", "zsh", "rbash", "posh", "yash",
];

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
                    cx.question(format!(
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
                shell: shell.clone(),
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
            cx.question(format!(
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
            shell: shell.clone(),
            label: display(&script),
            from: script,
            arg0: Some(arg.to_string()),
        };
        run_script(cx, e, &text, origin, positional, env)
    }
}

/// Where a script's text came from, for evidence and warnings.
struct Origin {
    /// The shell that reads it.
    shell: String,
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
        .or_insert_with(|| DEFAULT_PATH.to_string());
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
            if let Some((canon, links)) = cx.resolve_file(&join(d, arg))? {
                cx.keep_links(&links, &canon);
                return Ok(Some(canon));
            }
        }
    }
    Ok(None)
}

/// The image as a script sees it, through the trace's context.
struct CxFs<'a, 'b> {
    cx: &'a mut Cx<'b>,
    cwd: String,
    /// (canonical, by, line) of each sourced file.
    sourced: Vec<(String, String, usize)>,
    missing: Vec<String>,
}

impl ScriptFs for CxFs<'_, '_> {
    fn source(&mut self, call: &Sourced) -> Option<(String, String)> {
        let (name, path_var, by, line) = (call.name, call.path_var, call.by, call.line);
        let mut cands = Vec::new();
        if name.contains('/') {
            cands.push(abs_in(&self.cwd, name));
        } else {
            for d in path_var.split(':').filter(|d| !d.is_empty()) {
                cands.push(join(d, name));
            }
            cands.push(abs_in(&self.cwd, name));
        }
        for c in cands {
            if let Ok(Some((canon, links))) = self.cx.resolve_file(&c) {
                self.cx.keep_links(&links, &canon);
                let text = self.cx.text(&canon).ok().flatten()?;
                self.sourced.push((canon.clone(), by.to_string(), line));
                return Some((canon, text));
            }
        }
        self.missing.push(format!(
            "{by}:{line}: sources {name}, which is not in the image"
        ));
        None
    }

    fn glob(&mut self, pattern: &str) -> Vec<String> {
        self.cx.glob(pattern)
    }

    fn files_under(&mut self, dir: &str) -> Vec<String> {
        self.cx.files_under(dir)
    }
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
    let mut fs = CxFs {
        cwd: cx.run.cwd().to_string(),
        cx,
        sourced: Vec::new(),
        missing: Vec::new(),
    };
    let parsed = {
        let mut p = Parser::new(
            &mut fs,
            env.clone(),
            positional,
            origin.arg0.clone(),
            &origin.shell,
        );
        p.visited.insert(origin.from.clone());
        p.run(text, &origin.label, 0);
        p.out
    };
    let CxFs {
        sourced,
        missing: missing_sources,
        cx,
        ..
    } = fs;
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
    for q in &parsed.questions {
        cx.question(q.clone());
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
        if c.optional && super::kit::find_program(cx.fs, cx.run, &name).is_err() {
            continue; // a loop's value that is not a program: the loop skips it
        }
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
    /// Run once per value of a loop variable: a value that is not an executable file is a
    /// file the loop skips, not a missing command.
    pub optional: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub commands: Vec<Command>,
    pub functions: HashSet<String>,
    pub warnings: Vec<String>,
    /// Commands and sourced files computed at run time (FILE:LINE: what).
    pub questions: Vec<String>,
}

/// Parse a script's text on its own (tests, fuzzing, and callers with no files to source);
/// `path` is the PATH it runs with.
pub(crate) fn parse(text: &str, positional: Option<Vec<Option<String>>>, path: &str) -> Parsed {
    parse_in(&mut NoFs, text, positional, path)
}

/// Parse a script's text against what `fs` shows of an image.
pub(crate) fn parse_in(
    fs: &mut dyn ScriptFs,
    text: &str,
    positional: Option<Vec<Option<String>>>,
    path: &str,
) -> Parsed {
    let vars = [("PATH".to_string(), path.to_string())]
        .into_iter()
        .collect();
    let mut p = Parser::new(fs, vars, positional, Some("script".into()), "sh");
    p.run(text, "script", 0);
    p.out
}

#[cfg(test)]
mod tests;

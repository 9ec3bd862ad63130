//! What a language interpreter is, as the rules see it: the names it runs as, the library it
//! links, its sources' extensions, and the options that come before its script. A runtime
//! rule describes its interpreter once ([`Interpreter`]); the rules' prologue (is this exec
//! that interpreter? where is its library? which argument is the script?) and the name lists
//! of other rules (the C library rule's "interpreters import `system` for their scripts", the
//! helper rule's "source files are code, not data") are read from the descriptions.

use super::{Cx, Exec};
use crate::elf::ElfFacts;
use crate::error::Result;

/// One language interpreter.
#[derive(Debug)]
pub struct Interpreter {
    /// For evidence and warnings ("Guile", "Tcl").
    pub language: &'static str,
    /// The names it runs as, each with an optional version suffix of digits, `.` and `-`
    /// (`tclsh` covers `tclsh8.6`, `guile` covers `guile-3.0`).
    pub names: &'static [&'static str],
    /// The prefix of the shared library it is built on (`libguile`), whose strings hold the
    /// directories compiled in.
    pub library: Option<&'static str>,
    /// Whether a program linking that library runs this language's scripts as the interpreter
    /// does (an embedded `libperl`, `libruby`).
    pub embedded: bool,
    /// Extensions of its source files (`scm`).
    pub extensions: &'static [&'static str],
    /// Options whose next argument is their value (`-L DIR`), before the script.
    pub takes_value: &'static [&'static str],
    /// Options whose value is code to run: no script file follows (`-c EXPR`).
    pub code: &'static [&'static str],
    /// Options whose value is the script itself (`-s FILE`).
    pub script_option: &'static [&'static str],
}

/// An exec of an interpreter: the path-like strings of the program and of its library, and
/// both files (canonical).
pub struct Started {
    pub strings: Vec<String>,
    pub objects: Vec<String>,
}

/// What the options before the script say: each option with its value, the script (index in
/// argv and path as written), or code given inline.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub options: Vec<(String, Option<String>)>,
    pub script: Option<(usize, String)>,
    pub code: Option<String>,
}

impl Interpreter {
    /// Whether `name` (a basename) is one this interpreter runs as.
    pub fn runs_as(&self, name: &str) -> bool {
        self.names.iter().any(|n| {
            name.strip_prefix(n).is_some_and(|v| {
                v.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
            })
        })
    }

    /// Whether a library name (a soname or basename) is this interpreter's library.
    pub fn is_library(&self, name: &str) -> bool {
        self.library.is_some_and(|l| name.starts_with(l))
    }

    /// Whether a file is one of its sources, by extension.
    pub fn is_source(&self, path: &str) -> bool {
        path.rsplit_once('.')
            .is_some_and(|(_, e)| self.extensions.contains(&e))
    }

    /// The prologue every runtime rule shares: `Some` when `e` runs this interpreter (by the
    /// name it was started as, the file's name, or the library it links), with the strings of
    /// the program and of that library.
    pub fn start(&self, cx: &mut Cx, e: &Exec) -> Result<Option<Started>> {
        let (a0, file) = e.names();
        let Some(facts) = cx.elf(&e.path)? else {
            return Ok(None);
        };
        let embeds = self.embedded && facts.needed.iter().any(|n| self.is_library(n));
        if !(self.runs_as(a0) || self.runs_as(file) || embeds) {
            return Ok(None);
        }
        let mut objects = vec![e.path.clone()];
        let strings = match self.library {
            Some(prefix) => library_strings(cx, &e.path, &facts, prefix, &mut objects)?,
            None => facts.strings.clone(),
        };
        Ok(Some(Started { strings, objects }))
    }

    /// The options before the script, and the script (or inline code), read with the option
    /// table: `-X VALUE` and `-XVALUE` for options that take a value, `--` ends the options,
    /// the first other word is the script.
    pub fn command(&self, e: &Exec) -> Command {
        let mut out = Command::default();
        let mut i = 1;
        while i < e.argv.len() {
            let Some(a) = e.arg(i) else { break };
            if a == "--" {
                if let Some(s) = e.arg(i + 1) {
                    out.script = Some((i + 1, s.to_string()));
                }
                break;
            }
            let with_value =
                |list: &'static [&'static str]| list.iter().find(|o| a == **o).copied();
            if let Some(o) = with_value(self.takes_value)
                .or(with_value(self.code))
                .or(with_value(self.script_option))
            {
                let v = e.arg(i + 1).map(str::to_string);
                if self.code.contains(&o) {
                    out.code = v.clone();
                }
                if self.script_option.contains(&o)
                    && let Some(v) = &v
                {
                    out.script = Some((i + 1, v.clone()));
                }
                out.options.push((o.to_string(), v));
                if out.code.is_some() || out.script.is_some() {
                    break;
                }
                i += 2;
                continue;
            }
            // `-LVALUE` (a one-letter option) and `--option=VALUE`.
            let attached = self.takes_value.iter().find_map(|o| {
                let v = if o.len() == 2 {
                    a.strip_prefix(o)
                } else {
                    a.strip_prefix(o).and_then(|v| v.strip_prefix('='))
                };
                v.filter(|v| !v.is_empty()).map(|v| (*o, v))
            });
            if a == "-" {
                // The script on stdin.
                break;
            } else if let Some((o, v)) = attached {
                out.options.push((o.to_string(), Some(v.to_string())));
            } else if a.starts_with('-') {
                out.options.push((a.to_string(), None));
            } else {
                out.script = Some((i, a.to_string()));
                break;
            }
            i += 1;
        }
        out
    }
}

/// The path-like strings of an interpreter and of the `prefix*` library it links (libperl,
/// libruby, libtcl): where the directories its library search starts from are compiled in.
pub(crate) fn library_strings(
    cx: &mut Cx,
    exe: &str,
    facts: &ElfFacts,
    prefix: &str,
    objects: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut strings = facts.strings.clone();
    if let Some(idx) = cx.ld.object_at(exe) {
        for n in facts.needed.iter().filter(|n| n.starts_with(prefix)) {
            for (cand, _) in cx.candidates(idx, n)? {
                if let Some((canon, _)) = cx.resolve_file(&cand)? {
                    cx.contents.prefetch(cx.fs, std::slice::from_ref(&canon))?;
                    if let Some(f) = cx.elf(&canon)? {
                        strings.extend(f.strings.iter().cloned());
                    }
                    objects.push(canon);
                    break;
                }
            }
        }
    }
    Ok(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The kit is tested on a real description.
    use crate::trace::runtime::guile::INTERPRETER as GUILE;

    fn exec(argv: &[&str]) -> Exec {
        Exec {
            path: "usr/bin/guile-3.0".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            unknown: Vec::new(),
            env: Vec::new(),
            depth: 0,
            hard: true,
        }
    }

    #[test]
    fn names_with_versions() {
        assert!(GUILE.runs_as("guile") && GUILE.runs_as("guile-3.0") && GUILE.runs_as("guile3.0"));
        assert!(!GUILE.runs_as("guiled") && !GUILE.runs_as("guile-tools"));
        assert!(GUILE.is_library("libguile-3.0.so.1") && GUILE.is_source("/app/main.scm"));
    }

    #[test]
    fn the_script_after_the_options() {
        let c = GUILE.command(&exec(&[
            "guile",
            "-L",
            "/app/lib",
            "--no-auto-compile",
            "/app/main.scm",
            "x",
        ]));
        assert_eq!(c.script, Some((4, "/app/main.scm".into())));
        assert_eq!(
            c.options,
            vec![
                ("-L".into(), Some("/app/lib".into())),
                ("--no-auto-compile".into(), None)
            ]
        );
        let c = GUILE.command(&exec(&["guile", "-L/app/lib", "-s", "/app/s.scm"]));
        assert_eq!(c.script, Some((3, "/app/s.scm".into())));
        assert_eq!(c.options[0], ("-L".into(), Some("/app/lib".into())));
        let c = GUILE.command(&exec(&["guile", "-c", "(display 1)", "/not/a/script"]));
        assert_eq!((c.script, c.code.as_deref()), (None, Some("(display 1)")));
        let c = GUILE.command(&exec(&["guile", "--", "-odd-name.scm"]));
        assert_eq!(c.script, Some((2, "-odd-name.scm".into())));
        let c = GUILE.command(&exec(&["guile", "--listen=37146", "-", "/not/a/script"]));
        assert_eq!(c.options[0], ("--listen=37146".into(), None));
        assert_eq!(c.script, None);
    }
}

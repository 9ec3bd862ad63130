//! Python (CPython), found from the interpreter: its name (`python`, `python3`, `python3.11`)
//! or a libpython it links. The prefix comes from the interpreter's own landmark search
//! (`lib/pythonX.Y/os.py` above the executable's real directory, `PYTHONHOME`, a venv's
//! `pyvenv.cfg`), `sys.path` from the prefix (the standard library, `lib-dynload`,
//! `site-packages` or Debian's `dist-packages`, `.pth` files, `PYTHONPATH`) and the script's
//! directory. Kept: the interpreter's start-up set (`site`, `encodings`, `codecs`, `io`, …,
//! `sitecustomize`), then the **import graph** of the application (static `import` and
//! `from … import`, literal `importlib.import_module`/`__import__`), resolved the way the
//! import system resolves it (built-in modules, packages, extension modules before sources,
//! namespace packages), with byte-code caches and extension modules (their ELF closure is
//! traced). A third-party package is kept whole (its data files), bounded. An import the graph
//! cannot resolve in the application's code is a warning pointing to `--keep`;
//! `--runtime-full` keeps the whole standard library instead.

use std::collections::{BTreeSet, HashMap, HashSet};

mod env;
mod imports;
mod pycodecs;
mod resolve;
mod walk;

use env::*;
use imports::*;
use resolve::*;

use super::is_dir;
use crate::error::Result;
use crate::rootfs::{Kind, display};
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Why, abs_in, join};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Python",
    names: &["python"],
    library: Some("libpython"),
    embedded: true,
    extensions: &["py"],
    takes_value: &["-W", "-X", "-m"],
    code: &["-c"],
    script_option: &[],
};

/// Python source files read at once (one pass over the layers) when the runtime is found.
const PREFETCH_BYTES: u64 = 256 << 20;
/// A third-party package larger than this is kept by its import graph only.
const MAX_PACKAGE_BYTES: u64 = 64 << 20;
/// Modules resolved for one interpreter.
const MAX_MODULES: usize = 20_000;

/// The start-up set: what the interpreter imports before the script runs.
const STARTUP: &[&str] = &[
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "codecs",
    "io",
    "abc",
    "os",
    "stat",
    "posixpath",
    "genericpath",
    "_collections_abc",
    "_sitebuiltins",
    "site",
];
/// Imported at start-up only when present.
const STARTUP_OPTIONAL: &[&str] = &["sitecustomize", "usercustomize"];
/// Left out of `--runtime-full`: test suites, GUI toolkits, bundled installers.
const FULL_SKIP: &[&str] = &[
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3/tests",
    "distutils/tests",
    "unittest/test",
    "ctypes/test",
    "sqlite3/test",
];

#[derive(Default)]
pub(crate) struct Python {
    envs: HashMap<String, Option<PyEnv>>,
    /// Modules already kept, per interpreter, with the budget they were read with.
    done: HashMap<String, HashMap<String, u8>>,
}

/// Whether a program is a CPython interpreter.
fn is_python(a0: &str, file: &str, needed: &[String]) -> bool {
    let name_is = |n: &str| {
        n.strip_prefix("python").is_some_and(|v| {
            v.chars().all(|c| c.is_ascii_digit() || c == '.')
                || v.trim_end_matches(['d', 'm', 'u'])
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
        })
    };
    name_is(a0) || name_is(file) || needed.iter().any(|n| n.starts_with("libpython"))
}

impl Rule for Python {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        let Some(facts) = cx.elf(&e.path)? else {
            return Ok(());
        };
        if !is_python(a0, file, &facts.needed) {
            return Ok(());
        }
        let key = e.path.clone();
        if !self.envs.contains_key(&key) {
            let env = find_env(cx, e, &facts.needed)?;
            self.envs.insert(key.clone(), env);
        }
        let Some(env) = self.envs.get(&key).cloned().flatten() else {
            cx.warn(format!(
                "{}: a Python interpreter without its standard library (no lib/pythonX.Y/os.py above it); its imports are not traced",
                display(&e.path)
            ));
            return Ok(());
        };
        let done = self.done.entry(key).or_default();
        walk::run(cx, e, &env, done)
    }

    /// A plugin or library that embeds Python (it links libpython: uwsgi's python plugin, a
    /// Python-scriptable daemon): the interpreter starts inside it, with its start-up set
    /// (`site`, `sitecustomize`, the codecs, …).
    fn object(&mut self, cx: &mut Cx, idx: usize) -> Result<()> {
        let o = cx.out.objects[idx].clone();
        if cx.out.programs.contains(&o.path)
            || !o.facts.needed.iter().any(|n| n.starts_with("libpython"))
        {
            return Ok(());
        }
        let e = Exec {
            path: o.path.clone(),
            argv: vec![display(&o.path)],
            unknown: Vec::new(),
            env: Vec::new(),
            depth: 1,
            hard: false,
        };
        self.exec(cx, &e)
    }
}

/// Standard packages an extension module's words never bring (tests, GUI toolkits, tools).
const NOT_FROM_WORDS: &[&str] = &[
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc",
    "pydoc_data",
    "venv",
    "distutils",
    "unittest",
    "doctest",
    "pdb",
    "this",
];

/// The modules an extension module (Cython, pyo3, cffi) imports by name: the words of its
/// read-only data that look like module names. Only those that resolve are kept (quietly).
fn extension_imports(cx: &mut Cx, file: &str) -> Result<Vec<String>> {
    let Some((canon, _)) = cx.resolve_file(file)? else {
        return Ok(Vec::new());
    };
    cx.contents.prefetch(cx.fs, std::slice::from_ref(&canon))?;
    let Ok(Some(facts)) = cx.elf(&canon) else {
        return Ok(Vec::new());
    };
    // Names passed as C strings (Cython's and cffi's module-name constants); pyo3's
    // `PyImport_Import` takes objects made from Rust strings, which are not NUL-terminated:
    // its words are fragments of everything the module prints.
    if ![
        "PyImport_ImportModule",
        "PyImport_ImportModuleLevel",
        "PyImport_ImportModuleLevelObject",
    ]
    .iter()
    .any(|s| facts.import(s).is_some())
    {
        return Ok(Vec::new());
    }
    Ok(facts
        .words
        .iter()
        .filter(|w| {
            w.split('.').all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !p.starts_with(|c: char| c.is_ascii_digit())
            }) && !NOT_FROM_WORDS.contains(&w.split('.').next().unwrap_or(w))
        })
        .take(crate::elf::MAX_STRINGS)
        .cloned()
        .collect())
}

/// The standard modules `six.moves` names stand for.
fn six_moves(name: &str, names: &[String]) -> Vec<String> {
    let Some(rest) = name
        .strip_prefix("six.moves")
        .or_else(|| name.split_once(".six.moves").map(|(_, r)| r))
    else {
        return vec![];
    };
    let map = |n: &str| -> Option<&'static str> {
        Some(match n {
            "queue" => "queue",
            "configparser" => "configparser",
            "http_client" => "http.client",
            "http_cookies" => "http.cookies",
            "http_cookiejar" => "http.cookiejar",
            "html_parser" => "html.parser",
            "html_entities" => "html.entities",
            "urllib" | "urllib_parse" => "urllib.parse",
            "urllib_request" => "urllib.request",
            "urllib_error" => "urllib.error",
            "urllib_robotparser" => "urllib.robotparser",
            "cPickle" => "pickle",
            "copyreg" => "copyreg",
            "socketserver" => "socketserver",
            "reprlib" => "reprlib",
            "collections_abc" => "collections.abc",
            "BaseHTTPServer" | "SimpleHTTPServer" | "CGIHTTPServer" => "http.server",
            "xmlrpc_client" => "xmlrpc.client",
            "xmlrpc_server" => "xmlrpc.server",
            "email_mime_text" => "email.mime.text",
            "email_mime_multipart" => "email.mime.multipart",
            "email_mime_base" => "email.mime.base",
            "tkinter" => "tkinter",
            "dbm_gnu" => "dbm.gnu",
            "_thread" => "_thread",
            _ => return None,
        })
    };
    let rest = rest.trim_start_matches('.');
    let mut out = Vec::new();
    if rest.is_empty() {
        out.extend(names.iter().filter_map(|n| map(n)).map(str::to_string));
    } else {
        let first = rest.split('.').next().unwrap_or(rest);
        if let Some(m) = map(first) {
            out.push(m.to_string());
        }
        if let Some(sub) = rest.strip_prefix("urllib.") {
            out.push(format!("urllib.{sub}"));
        }
    }
    out
}

/// The modules a console script's `load_entry_point('dist==ver', 'group', 'name')` loads:
/// from the distribution's `entry_points.txt` (its metadata directory is kept).
fn entry_point_modules(cx: &mut Cx, env: &PyEnv, text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("load_entry_point(") {
        let args: Vec<String> = text[i + "load_entry_point(".len()..]
            .split(')')
            .next()
            .unwrap_or("")
            .split(',')
            .map(|a| a.trim().trim_matches(['\'', '"']).to_string())
            .collect();
        let [spec, group, name] = args.as_slice() else {
            continue;
        };
        let dist = spec.split("==").next().unwrap_or(spec).trim();
        if dist.is_empty() || dist.contains(' ') {
            continue;
        }
        let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
        for site in env.site.clone() {
            for pat in ["*.dist-info", "*.egg-info"] {
                for d in cx.glob(&format!("{site}/{pat}")) {
                    let base = file_name(&d);
                    if norm(base.split('-').next().unwrap_or("")) != norm(dist)
                        && norm(base.trim_end_matches(".egg-info")) != norm(dist)
                    {
                        continue;
                    }
                    let ev = Evidence::new(
                        Why::Runtime,
                        None,
                        format!("metadata of {dist}, read by its console script"),
                    );
                    if let Ok(r) = cx.fs.resolve(&d, true) {
                        cx.keep_tree(&r.path, &ev);
                    }
                    let Some((ep, _)) = cx.resolve_file(&join(&d, "entry_points.txt"))? else {
                        continue;
                    };
                    let Some(t) = cx.text(&ep)? else { continue };
                    let mut section = String::new();
                    for line in t.lines() {
                        let l = line.trim();
                        if l.starts_with('[') {
                            section = l.trim_matches(['[', ']']).to_string();
                        } else if section == *group
                            && let Some((k, v)) = l.split_once('=')
                            && k.trim() == name
                        {
                            let m = v.trim().split(':').next().unwrap_or("").trim();
                            if !m.is_empty() {
                                out.push(m.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_moves_map_to_standard_modules() {
        assert_eq!(
            six_moves("six.moves", &["queue".into(), "range".into()]),
            vec!["queue"]
        );
        assert_eq!(
            six_moves("urllib3.packages.six.moves", &["http_client".into()]),
            vec!["http.client"]
        );
        assert_eq!(
            six_moves("six.moves.urllib.parse", &[]),
            vec!["urllib.parse", "urllib.parse"]
        );
        assert!(six_moves("json", &["x".into()]).is_empty());
    }
}

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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

mod env;
mod imports;
mod pycodecs;
mod resolve;

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
        run(cx, e, &env, done)
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

/// One import to resolve: the name, who imports it (file and line), whether a miss is worth a
/// warning, and how many function-level ("lazy") imports may still be followed from it.
struct Want {
    name: String,
    by: Option<(String, usize)>,
    quiet: bool,
    budget: u8,
}

/// A source to read for imports.
struct Source {
    file: String,
    text: String,
    /// The package it belongs to (for relative imports).
    pkg: Option<String>,
    budget: u8,
    /// Found on the runtime's own path (the standard library, installed packages), even when
    /// a symlink leads elsewhere (Debian's sitecustomize.py → /etc/python3.X/).
    runtime: bool,
    /// Part of the standard library (not an installed package).
    stdlib: bool,
}

/// Trace one interpreter run: start-up set, the script (or -m / -c), the import graph.
///
/// The graph follows every import of the application's own code, and the module-level
/// imports of the runtime's modules. A function-level import in a runtime module runs only
/// when that function is called: it is followed one hop from what the application imports
/// (`datetime.strptime` → `_strptime`), not from there on (`help()` → `pydoc` → …); and a
/// standard module's one only once a source uses the function's name (an attribute, a name
/// imported from it, a call from its own module's code that runs): `multiprocessing`'s
/// `Manager()` brings
/// `managers`, `shared_memory` and, through `secrets` and `hmac`, libcrypto only for a
/// program that calls it.
fn run(cx: &mut Cx, e: &Exec, env: &PyEnv, done: &mut HashMap<String, u8>) -> Result<()> {
    let ev_rt = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
    // The landmark and the directories the interpreter looks at.
    for d in [Some(env.stdlib.clone()), env.dynload.clone()]
        .into_iter()
        .flatten()
    {
        if let Ok(r) = cx.fs.resolve(&d, true) {
            cx.keep_links(&r.symlinks, &r.path);
            cx.keep(
                &r.path,
                ev_rt(format!("Python {} standard library directory", env.version)),
            );
        }
    }
    if cx.opts.runtime_full {
        keep_full(cx, e, env)?;
    }
    // Options: -S (no site), -c, -m, -W/-X with a value.
    let mut no_site = false;
    let mut i = 1;
    let mut main: Option<(String, String)> = None; // (kind, value)
    while i < e.argv.len() {
        let Some(a) = e.arg(i) else {
            cx.question(format!(
                "{}: Python runs a script named at run time; its imports are not traced",
                display(&e.path)
            ));
            break;
        };
        if a == "-c" || a == "-m" {
            match e.arg(i + 1) {
                Some(v) => main = Some((a.to_string(), v.to_string())),
                None => cx.question(format!(
                    "{}: python {a} with a value computed at run time; not traced",
                    display(&e.path)
                )),
            }
            break;
        }
        if matches!(a, "-W" | "-X" | "--check-hash-based-pycs") {
            i += 2;
            continue;
        }
        if a == "-" {
            break;
        }
        if a.starts_with('-') {
            if let Some(flags) = a.strip_prefix('-').filter(|f| !f.starts_with('-')) {
                no_site |= flags.contains('S');
                if a.len() > 2 && (a.ends_with('c') || a.ends_with('m')) {
                    // A flag cluster ending in c or m: -Sc CODE.
                    let k = if a.ends_with('c') { "-c" } else { "-m" };
                    if let Some(v) = e.arg(i + 1) {
                        main = Some((k.into(), v.into()));
                    }
                    break;
                }
            }
            i += 1;
            continue;
        }
        main = Some(("script".into(), a.to_string()));
        break;
    }
    let mut first_dir = cx.run.cwd().to_string();
    let mut queue: VecDeque<Want> = VecDeque::new();
    let mut texts: Vec<Source> = Vec::new();
    let startup = |name: &str| Want {
        name: name.to_string(),
        by: None,
        quiet: true,
        budget: 0,
    };
    for m in STARTUP {
        if !(no_site && *m == "site") {
            queue.push_back(startup(m));
        }
    }
    // A program or plugin that embeds the interpreter imports modules by name from C
    // (`PyImport_ImportModule("threading")`): the names in its data that are modules here
    // (checked once the path is known, below).
    let embedded: Vec<String> = if !is_python(file_name(&e.path), file_name(&e.path), &[]) {
        extension_imports(cx, &e.path)?
    } else {
        Vec::new()
    };
    if !no_site {
        for m in STARTUP_OPTIONAL {
            queue.push_back(startup(m));
        }
        for line in &env.pth_imports {
            for imp in imports(line) {
                queue.push_back(startup(&imp.module));
            }
        }
    }
    let app = |name: String, quiet: bool| Want {
        name,
        by: None,
        quiet,
        budget: 1,
    };
    match main {
        Some((k, v)) if k == "script" => {
            let p = abs_in(cx.run.cwd(), &v);
            match cx.resolve_file(&p)? {
                Some((canon, links)) => {
                    cx.keep_links(&links, &canon);
                    cx.keep(
                        &canon,
                        ev_rt(format!("Python script run by {}", display(&e.path))),
                    );
                    first_dir = parent(&display(&canon));
                    if let Some(text) = cx.text(&canon)? {
                        texts.push(Source {
                            file: canon,
                            text,
                            pkg: None,
                            budget: 1,
                            runtime: false,
                            stdlib: false,
                        });
                    }
                }
                None if is_dir(cx, &p) => {
                    // A directory with __main__.py.
                    first_dir = p.clone();
                    queue.push_back(app("__main__".into(), false));
                }
                None => cx.warn(format!(
                    "{}: runs the Python script {v}, which is not in the image",
                    display(&e.path)
                )),
            }
        }
        Some((k, v)) if k == "-m" => {
            queue.push_back(app(v.clone(), false));
            queue.push_back(app(format!("{v}.__main__"), true));
            queue.push_back(app("runpy".into(), true));
        }
        Some((_, code)) => texts.push(Source {
            file: String::new(),
            text: code,
            pkg: None,
            budget: 1,
            runtime: false,
            stdlib: false,
        }),
        None => {}
    }
    // The application's own sources in its working directory (a WSGI app gunicorn loads by
    // `module:attr`, modules it imports by name): their imports are followed too.
    let wd = cx.run.workdir.clone();
    if !wd.is_empty()
        && let Ok(r) = cx.fs.resolve(&wd, true)
        && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
        && !crate::trace::kit::is_system_dir(&r.path)
        && !cx.is_claimed(&r.path)
    {
        let claimed = cx.claimed.clone();
        let files: Vec<String> = cx
            .fs
            .subtree(&r.path)
            .filter(|(k, n)| k.ends_with(".py") && matches!(n.kind, Kind::File { .. }))
            .filter(|(k, _)| !claimed.iter().any(|t| crate::trace::kit::under(k, t)))
            .filter(|(k, _)| {
                !k.split('/')
                    .any(|c| c == "site-packages" || c.starts_with('.'))
            })
            .map(|(k, _)| k.clone())
            .take(10_000)
            .collect();
        cx.contents.prefetch(cx.fs, &files)?;
        for f in files {
            if texts.iter().any(|t| t.file == f) {
                continue;
            }
            if let Some(text) = cx.text(&f)? {
                let rel = f[r.path.len()..].trim_start_matches('/');
                let pkg = rel.rsplit_once('/').map(|(d, _)| d.replace('/', "."));
                texts.push(Source {
                    file: f,
                    text,
                    pkg,
                    budget: 1,
                    runtime: false,
                    stdlib: false,
                });
            }
        }
    }
    // `module:attr` arguments (gunicorn app:app, uvicorn main:app).
    for i in 1..e.argv.len() {
        if let Some(a) = e.arg(i)
            && let Some((m, attr)) = a.split_once(':')
            && !m.is_empty()
            && !attr.is_empty()
            && m.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && attr
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '(' || c == ')')
        {
            queue.push_back(Want {
                name: m.to_string(),
                by: None,
                quiet: true,
                budget: 1,
            });
        }
    }
    let mut path = vec![first_dir];
    if !wd.is_empty() && !path.contains(&wd) {
        path.push(wd.clone());
    }
    path.extend(env.path.iter().cloned());
    let mut cache: HashMap<String, Option<Found>> = HashMap::new();
    for m in embedded {
        let top = m.split('.').next().unwrap_or(&m).to_string();
        if is_module(resolve(cx, env, &path, &top, &mut cache)?) {
            queue.push_back(startup(&m));
        }
    }
    // Codecs are looked up by name at run time: those named by the image config and the
    // defaults now, those the sources name as they are read (`pycodecs`).
    let codecs = match resolve(cx, env, &path, "encodings", &mut cache)? {
        Some(Found::Package(_, dirs)) => match dirs.first().map(|d| cx.fs.resolve(d, true)) {
            Some(Ok(r)) => pycodecs::Codecs::load(cx, &r.path)?,
            _ => None,
        },
        _ => None,
    };
    // Without an alias table to read (byte-code only, a zip): every codec, as before.
    if codecs.is_none() {
        queue.push_back(startup("encodings.*"));
    }
    // Codec module → who names it (a source and line; empty: the config or the default).
    let mut codecs_named: BTreeMap<String, (String, usize)> = match &codecs {
        Some(c) => pycodecs::named_at_start(cx, c, e),
        None => BTreeMap::new(),
    };
    let mut codecs_wanted: BTreeSet<String> = BTreeSet::new();
    // The names the sources read so far reach in other modules, and the standard library's
    // function-level imports waiting for a use of their function's name.
    let mut words: HashSet<String> = HashSet::new();
    // (The function, the index of its source's calls in `graphs`, the import.)
    let mut pending: Vec<(String, usize, Want)> = Vec::new();
    let mut graphs: Vec<Calls> = Vec::new();
    loop {
        for src in texts.drain(..) {
            let runtime = src.runtime;
            let (imps, calls, Names { reach, strings }) = parse(&src.text);
            words.extend(reach);
            let running = live(&calls, &words);
            let mut graph: Option<usize> = None;
            // (The codecs' own package names them all: its alias table.)
            if let Some(c) = &codecs
                && !crate::trace::kit::under(&src.file, &c.dir)
            {
                for (v, line) in strings {
                    if let Some(m) = c.module_for(&v)
                        && !codecs_named.contains_key(m)
                    {
                        codecs_named.insert(m.to_string(), (src.file.clone(), line));
                    }
                }
            }
            for imp in imps {
                // A library's `if __name__ == "__main__":` block never runs on import.
                if imp.main_only && runtime {
                    continue;
                }
                // A fallback (`except ImportError:`) of imports that all resolve here never runs.
                let mut fallback = false;
                for group in &imp.fallback_of {
                    let mut all = true;
                    for m in group {
                        let found = match absolute_name(m, src.pkg.as_deref()) {
                            Some(n) if !n.is_empty() => resolve(cx, env, &path, &n, &mut cache)?,
                            _ => None,
                        };
                        if !is_module(found) {
                            all = false;
                            break;
                        }
                    }
                    fallback |= all;
                }
                if fallback {
                    continue;
                }
                // The application's code: everything it imports. The runtime's: module-level
                // imports, and function-level ones while the budget lasts.
                let budget = if !runtime {
                    1
                } else if imp.nested {
                    match src.budget.checked_sub(1) {
                        Some(b) => b,
                        None => continue,
                    }
                } else {
                    src.budget
                };
                let Some(name) = absolute_name(&imp.module, src.pkg.as_deref()) else {
                    continue;
                };
                let by = Some((src.file.clone(), imp.line));
                // A standard module's function-level import runs when that function is called:
                // it waits until some source read uses the function's name (`Manager` of
                // multiprocessing.context brings managers, shared_memory, secrets, hmac and
                // OpenSSL's libcrypto only for a program that calls it).
                let defer = match &imp.called_by {
                    Some(f)
                        if src.stdlib
                            && imp.nested
                            && !running.contains(f)
                            && !words.contains(f) =>
                    {
                        Some(f.clone())
                    }
                    _ => None,
                };
                let mut wants: Vec<Want> = Vec::new();
                if imp.computed {
                    if !runtime {
                        let what = if name.is_empty() {
                            "a module computed at run time".to_string()
                        } else {
                            format!("modules under {name} computed at run time")
                        };
                        let at = if src.file.is_empty() {
                            "python -c".to_string()
                        } else {
                            display(&src.file)
                        };
                        cx.question(format!(
                            "{at}:{}: imports {what}; keep them with --keep (or the whole standard library with --runtime-full)",
                            imp.line
                        ));
                    }
                    let top = name.split('.').next().unwrap_or(&name).to_string();
                    // The codec search function's import: the codecs named (`pycodecs`).
                    if !(name.is_empty() || top == "encodings" && codecs.is_some()) {
                        wants.push(Want {
                            name: format!("{top}.*"),
                            by,
                            quiet: runtime,
                            budget,
                        });
                    }
                } else {
                    wants.push(Want {
                        name: name.clone(),
                        by: by.clone(),
                        quiet: runtime,
                        budget,
                    });
                    for n in &imp.names {
                        if n != "*" {
                            wants.push(Want {
                                name: format!("{name}.{n}"),
                                by: by.clone(),
                                quiet: true,
                                budget,
                            });
                        }
                    }
                    // six.moves (and vendored copies) are lazy aliases of standard modules.
                    for m in six_moves(&name, &imp.names) {
                        wants.push(Want {
                            name: m,
                            by: by.clone(),
                            quiet: true,
                            budget,
                        });
                    }
                }
                match defer {
                    Some(f) => {
                        let g = *graph.get_or_insert_with(|| {
                            graphs.push(calls.clone());
                            graphs.len() - 1
                        });
                        pending.extend(wants.into_iter().map(|w| (f.clone(), g, w)));
                    }
                    None => queue.extend(wants),
                }
            }
            // A console script: `load_entry_point('dist==1.0', 'console_scripts', 'name')`
            // loads the entry point its distribution's metadata names.
            if !runtime {
                for m in entry_point_modules(cx, env, &src.text)? {
                    queue.push_back(Want {
                        name: m,
                        by: Some((src.file.clone(), 0)),
                        quiet: false,
                        budget: 1,
                    });
                }
            }
        }
        // Codecs named so far; deferred imports whose function some source now uses.
        if queue.is_empty() {
            for (m, (file, line)) in &codecs_named {
                if codecs_wanted.insert(m.clone()) {
                    queue.push_back(Want {
                        name: format!("encodings.{m}"),
                        by: (!file.is_empty()).then(|| (file.clone(), *line)),
                        quiet: true,
                        budget: 0,
                    });
                }
            }
        }
        if queue.is_empty() {
            let running: Vec<HashSet<String>> = graphs.iter().map(|c| live(c, &words)).collect();
            let (used, waiting): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|(f, g, _)| words.contains(f) || running[*g].contains(f));
            pending = waiting;
            queue.extend(used.into_iter().map(|(_, _, w)| w));
        }
        if queue.is_empty() || done.len() > MAX_MODULES {
            break;
        }
        while let Some(w) = queue.pop_front() {
            let whole = w.name.ends_with(".*");
            let name = w.name.trim_end_matches(".*").to_string();
            if done.get(&w.name).is_some_and(|b| *b >= w.budget) {
                continue;
            }
            done.insert(w.name.clone(), w.budget);
            // Importing a.b.c imports a, then a.b, then a.b.c.
            let parts: Vec<&str> = name.split('.').collect();
            let mut ok = true;
            for k in 1..=parts.len() {
                let n = parts[..k].join(".");
                let found = resolve(cx, env, &path, &n, &mut cache)?;
                match found {
                    None => {
                        ok = false;
                        if !w.quiet && k == 1 {
                            let at =
                                w.by.as_ref()
                                    .map(|(f, l)| {
                                        format!(
                                            "{}:{l}: ",
                                            if f.is_empty() {
                                                "python -c".into()
                                            } else {
                                                display(f)
                                            }
                                        )
                                    })
                                    .unwrap_or_default();
                            cx.warn(format!(
                                "{at}imports {n}, which is not in the image (optional, computed or missing); keep it with --keep if it is needed"
                            ));
                        }
                        break;
                    }
                    Some(Found::Builtin) => {}
                    Some(f) => {
                        if k < parts.len() && done.get(&n).is_some_and(|b| *b >= w.budget) {
                            continue;
                        }
                        done.insert(n.clone(), w.budget);
                        let by =
                            w.by.as_ref()
                                .map(|(f, l)| {
                                    format!(
                                        "{}:{l}",
                                        if f.is_empty() {
                                            "python -c".into()
                                        } else {
                                            display(f)
                                        }
                                    )
                                })
                                .unwrap_or_else(|| "the interpreter's start-up".into());
                        let ev = if n.starts_with("encodings.") && codecs_wanted.contains(&n[10..])
                        {
                            // A codec, imported by the search function for its name.
                            ev_rt(match &w.by {
                                Some(_) => format!("Python codec {n}, named in {by}"),
                                None => format!(
                                    "Python codec {n}, named by the interpreter, the image config or by default"
                                ),
                            })
                        } else {
                            ev_rt(format!("Python module {n}, imported by {by}"))
                        };
                        if n == "sysconfig" {
                            // It imports `_sysconfigdata_<abi>_<platform>` by a computed name.
                            for d in [Some(env.stdlib.clone()), env.dynload.clone()]
                                .into_iter()
                                .flatten()
                            {
                                for f in cx.glob(&format!("{d}/_sysconfigdata_*.py")) {
                                    let stem = file_name(&f).trim_end_matches(".py").to_string();
                                    queue.push_back(Want {
                                        name: stem,
                                        by: w.by.clone(),
                                        quiet: true,
                                        budget: w.budget,
                                    });
                                }
                            }
                        }
                        // A third-party package is kept whole, and any of its modules may
                        // be loaded by a name it computes (gunicorn's `glogging`, its
                        // workers): each one's imports are followed too.
                        if let Found::Package(_, dirs) = &f
                            && k == 1
                            && dirs.iter().any(|d| !in_stdlib(cx, env, d))
                        {
                            queue.push_back(Want {
                                name: format!("{n}.*"),
                                by: w.by.clone(),
                                quiet: true,
                                budget: w.budget,
                            });
                        }
                        if let Found::File(file) = &f
                            && !file.ends_with(".py")
                        {
                            for m in extension_imports(cx, file)? {
                                let top = m.split('.').next().unwrap_or(&m).to_string();
                                if done.contains_key(&m)
                                    || !is_module(resolve(cx, env, &path, &top, &mut cache)?)
                                {
                                    continue; // a word that is no module here
                                }
                                queue.push_back(Want {
                                    name: m,
                                    by: Some((file.clone(), 0)),
                                    quiet: true,
                                    budget: w.budget,
                                });
                            }
                        }
                        if let Some((file, pkg, found_at)) = keep_module(cx, env, &n, &f, &ev)?
                            && let Some(text) = cx.text(&file)?
                        {
                            let runtime = in_runtime(cx, env, &found_at);
                            let stdlib = runtime && in_stdlib(cx, env, &found_at);
                            texts.push(Source {
                                file,
                                text,
                                pkg,
                                budget: w.budget,
                                runtime,
                                stdlib,
                            });
                        }
                    }
                }
            }
            if ok
                && whole
                && let Some(Some(Found::Package(_, dirs))) = cache.get(&name).cloned()
            {
                for d in dirs {
                    keep_package_tree(
                        cx,
                        &d,
                        &ev_rt(format!(
                            "Python package {name}, whose modules are imported by computed names"
                        )),
                    )?;
                    // Its sources are read for their own imports.
                    if let Ok(r) = cx.fs.resolve(&d, true) {
                        let subs: Vec<String> = cx
                            .fs
                            .subtree(&r.path)
                            .map(|(k, _)| k.clone())
                            .filter(|k| !k.contains("/__pycache__/"))
                            .filter(|k| k.ends_with(".py") || k.ends_with(".so"))
                            .filter(|k| !is_test_suite(k.get(r.path.len() + 1..).unwrap_or("")))
                            .collect();
                        for f in subs {
                            if f.ends_with(".so") {
                                for m in extension_imports(cx, &f)? {
                                    let top = m.split('.').next().unwrap_or(&m).to_string();
                                    if done.contains_key(&m)
                                        || !is_module(resolve(cx, env, &path, &top, &mut cache)?)
                                    {
                                        continue;
                                    }
                                    queue.push_back(Want {
                                        name: m,
                                        by: Some((f.clone(), 0)),
                                        quiet: true,
                                        budget: w.budget,
                                    });
                                }
                                continue;
                            }
                            let rel = f[r.path.len() + 1..]
                                .trim_end_matches(".py")
                                .replace('/', ".");
                            let m = if rel == "__init__" {
                                name.clone()
                            } else {
                                format!("{name}.{}", rel.trim_end_matches(".__init__"))
                            };
                            queue.push_back(Want {
                                name: m,
                                by: w.by.clone(),
                                quiet: true,
                                budget: w.budget,
                            });
                        }
                    }
                }
            }
        }
    }
    if let Some(c) = &codecs {
        pycodecs::drop_others(cx, c, &codecs_wanted);
    }
    Ok(())
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

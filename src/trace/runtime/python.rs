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

use super::pycodecs;
use crate::error::Result;
use crate::rootfs::{Kind, display};
use crate::trace::{Cx, Evidence, Exec, Rule, Why, abs_in, join};

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

/// What an interpreter's `sys.path` and built-ins are.
#[derive(Clone, Debug)]
struct PyEnv {
    version: String,
    stdlib: String,
    dynload: Option<String>,
    /// Site directories (absolute, existing).
    site: Vec<String>,
    /// `sys.path` after the script's directory: PYTHONPATH, zip, stdlib, lib-dynload, sites.
    path: Vec<String>,
    builtins: HashSet<String>,
    /// Imports the `.pth` files run.
    pth_imports: Vec<String>,
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

/// The interpreter's environment, from where it is.
fn find_env(cx: &mut Cx, e: &Exec, needed: &[String]) -> Result<Option<PyEnv>> {
    let exe_dir = display(e.path.rsplit_once('/').map_or("", |(d, _)| d));
    // A venv: pyvenv.cfg next to the executable as invoked, or one level up.
    let invoked = invoked_path(cx, e);
    let mut venv: Option<(String, HashMap<String, String>)> = None;
    if let Some(inv) = &invoked {
        let d = parent(inv);
        for cand in [join(&d, "pyvenv.cfg"), join(&parent(&d), "pyvenv.cfg")] {
            if let Some((canon, links)) = cx.resolve_file(&cand)? {
                let text = cx.text(&canon)?.unwrap_or_default();
                let kv = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                cx.keep_links(&links, &canon);
                cx.keep(
                    &canon,
                    Evidence::new(Why::Runtime, Some(&e.path), "Python venv configuration"),
                );
                venv = Some((parent(&cand), kv));
                break;
            }
        }
    }
    let version = version_of(file_name(&e.path))
        .or_else(|| {
            needed.iter().find_map(|n| {
                n.strip_prefix("libpython").map(|v| {
                    v.split(".so")
                        .next()
                        .unwrap_or("")
                        .trim_end_matches(['d', 'm', 'u'])
                        .to_string()
                })
            })
        })
        .filter(|v| v.contains('.'));
    // Where the landmark is looked for: PYTHONHOME, the venv's home, the executable's real
    // directory and its parents.
    let mut starts = Vec::new();
    if let Some(h) = cx.run.env_var("PYTHONHOME") {
        starts.push(format!("{}/bin", h.split(':').next().unwrap_or(h)));
    }
    if let Some((_, kv)) = &venv
        && let Some(h) = kv.get("home")
    {
        if let Ok(r) = cx.fs.resolve(h, true) {
            starts.push(display(&r.path));
        }
        starts.push(h.clone());
    }
    starts.push(exe_dir.clone());
    let mut found: Option<(String, String)> = None; // (prefix, version)
    'outer: for s in starts {
        let mut d = s.clone();
        loop {
            let p = parent(&d);
            let prefix = if d == "/" { "/".to_string() } else { p.clone() };
            let versions: Vec<String> = match &version {
                Some(v) => vec![v.clone()],
                None => lib_versions(cx, &prefix),
            };
            for v in versions {
                let lm = join(&prefix, &format!("lib/python{v}/os.py"));
                if cx.resolve_file(&lm)?.is_some() {
                    found = Some((prefix, v));
                    break 'outer;
                }
            }
            if d == "/" || p == d {
                break;
            }
            d = p;
        }
    }
    let Some((prefix, version)) = found else {
        return Ok(None);
    };
    let stdlib = join(&prefix, &format!("lib/python{version}"));
    let dynload = Some(join(&stdlib, "lib-dynload")).filter(|d| is_dir(cx, d));
    let mut site = Vec::new();
    if let Some((root, kv)) = &venv {
        site.push(join(root, &format!("lib/python{version}/site-packages")));
        if kv.get("include-system-site-packages").map(String::as_str) != Some("true") {
            site.retain(|d| is_dir(cx, d));
        }
    }
    // Read every source under the candidate trees in one pass, before anything is read.
    let mut trees = vec![stdlib.clone()];
    trees.extend(site.iter().cloned());
    for c in [
        format!("local/lib/python{version}/dist-packages"),
        "lib/python3/dist-packages".to_string(),
        format!("lib/python{version}/dist-packages"),
        format!("lib/python{version}/site-packages"),
    ] {
        trees.push(join(&prefix, &c));
    }
    prefetch_sources(cx, &trees)?;
    if venv.as_ref().is_none_or(|(_, kv)| {
        kv.get("include-system-site-packages").map(String::as_str) == Some("true")
    }) {
        let debian = cx
            .resolve_file(&join(&stdlib, "site.py"))?
            .map(|(c, _)| cx.text(&c))
            .transpose()?
            .flatten()
            .is_some_and(|t| t.contains("dist-packages"));
        if debian {
            site.push(join(
                &prefix,
                &format!("local/lib/python{version}/dist-packages"),
            ));
            site.push(join(&prefix, "lib/python3/dist-packages"));
            site.push(join(&prefix, &format!("lib/python{version}/dist-packages")));
        }
        site.push(join(&prefix, &format!("lib/python{version}/site-packages")));
    }
    site.retain(|d| is_dir(cx, d));
    site.dedup();
    let mut path = Vec::new();
    if let Some(pp) = cx.run.env_var("PYTHONPATH") {
        for d in pp.split(':').filter(|d| !d.is_empty()) {
            path.push(abs_in(cx.run.cwd(), d));
        }
    }
    let zip = join(
        &prefix,
        &format!("lib/python{}.zip", version.replace('.', "")),
    );
    if cx.resolve_file(&zip)?.is_some() {
        path.push(zip.clone());
    }
    path.push(stdlib.clone());
    if let Some(d) = &dynload {
        path.push(d.clone());
    }
    path.extend(site.iter().cloned());
    // .pth files: extra directories and `import` lines.
    let mut pth_imports = Vec::new();
    for d in site.clone() {
        for f in cx.glob(&format!("{d}/*.pth")) {
            let Some((canon, _)) = cx.resolve_file(&f)? else {
                continue;
            };
            cx.keep(
                &canon,
                Evidence::new(
                    Why::Runtime,
                    Some(&e.path),
                    "Python path configuration (.pth, read at start-up)",
                ),
            );
            let text = cx.text(&canon)?.unwrap_or_default();
            for line in text.lines() {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                if l.starts_with("import ") || l.starts_with("import\t") {
                    pth_imports.push(l.to_string());
                    continue;
                }
                let p = abs_in(&d, l);
                if is_dir(cx, &p) {
                    path.push(p);
                }
            }
        }
    }
    let builtins = builtin_modules(cx, &e.path)?;
    // The runtime's trees are this rule's.
    for t in path.iter().filter(|p| !p.ends_with(".zip")) {
        if let Ok(r) = cx.fs.resolve(t, true) {
            cx.claim(&r.path);
        }
    }
    if !crate::trace::pathref::is_system_dir(&prefix)
        && prefix != "/usr"
        && prefix != "/usr/local"
        && let Ok(r) = cx.fs.resolve(&prefix, true)
    {
        cx.claim(&r.path);
    }
    if let Some((root, _)) = &venv
        && let Ok(r) = cx.fs.resolve(&join(root, "lib"), true)
    {
        cx.claim(&r.path);
    }
    Ok(Some(PyEnv {
        version,
        stdlib,
        dynload,
        site,
        path,
        builtins,
        pth_imports,
    }))
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn parent(p: &str) -> String {
    match p.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

fn version_of(name: &str) -> Option<String> {
    let v = name
        .strip_prefix("python")?
        .trim_end_matches(['d', 'm', 'u']);
    (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| v.to_string())
}

/// `pythonX.Y` directories under PREFIX/lib.
fn lib_versions(cx: &Cx, prefix: &str) -> Vec<String> {
    let Ok(r) = cx.fs.resolve(&join(prefix, "lib"), true) else {
        return vec![];
    };
    let base = if r.path.is_empty() {
        String::new()
    } else {
        format!("{}/", r.path)
    };
    let mut v: Vec<String> = cx
        .fs
        .subtree(&r.path)
        .filter_map(|(k, _)| k.strip_prefix(&base))
        .filter(|rest| !rest.contains('/'))
        .filter_map(version_of)
        .collect();
    v.sort();
    v.reverse();
    v
}

fn is_dir(cx: &Cx, p: &str) -> bool {
    cx.fs
        .resolve(p, true)
        .is_ok_and(|r| cx.fs.get(&r.path).is_some_and(|n| n.is_dir()))
}

/// The path the interpreter was started by, before symlinks (where a venv's pyvenv.cfg is).
fn invoked_path(cx: &Cx, e: &Exec) -> Option<String> {
    let a0 = e.argv.first()?;
    if a0.contains('/') {
        return Some(abs_in(cx.run.cwd(), a0));
    }
    let path = e
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            cx.run
                .env_var("PATH")
                .unwrap_or(crate::trace::DEFAULT_PATH)
                .to_string()
        });
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| join(d, a0))
        .find(|c| cx.fs.resolve(c, true).is_ok())
}

/// Built-in modules: the `PyInit_NAME` symbols compiled into the interpreter (or its
/// libpython).
fn builtin_modules(cx: &mut Cx, exe: &str) -> Result<HashSet<String>> {
    let mut out: HashSet<String> = [
        "sys",
        "builtins",
        "_imp",
        "_io",
        "marshal",
        "_warnings",
        "_thread",
        "_weakref",
        "posix",
        "_frozen_importlib",
        "_frozen_importlib_external",
        "zipimport",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut objs = vec![exe.to_string()];
    if let Some(i) = cx.ld.object_at(exe) {
        let libpy: Vec<String> = cx
            .out
            .objects
            .iter()
            .filter(|o| {
                o.main == i
                    && o.facts
                        .soname
                        .as_deref()
                        .is_some_and(|s| s.starts_with("libpython"))
            })
            .map(|o| o.path.clone())
            .collect();
        objs.extend(libpy);
    }
    for o in objs {
        // Bounded: a larger "interpreter" is not read whole.
        let Ok(bytes) = cx.contents.read(cx.fs, &o, 256 << 20) else {
            continue;
        };
        let needle = b"PyInit_";
        let mut i = 0;
        while let Some(k) = memfind(&bytes[i..], needle) {
            let s = i + k + needle.len();
            let end = bytes[s..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(bytes.len(), |e| s + e);
            if end > s {
                out.insert(String::from_utf8_lossy(&bytes[s..end]).into_owned());
            }
            i = end.max(s);
            if out.len() > 10_000 {
                break;
            }
        }
    }
    Ok(out)
}

fn memfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A module found on the path.
#[derive(Clone, Debug)]
enum Found {
    Builtin,
    /// A source, extension or byte-code file.
    File(String),
    /// A package: its `__init__` file (if any) and its directories (`__path__`).
    Package(Option<String>, Vec<String>),
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
        && !crate::trace::pathref::is_system_dir(&r.path)
        && !cx.is_claimed(&r.path)
    {
        let claimed = cx.claimed.clone();
        let files: Vec<String> = cx
            .fs
            .subtree(&r.path)
            .filter(|(k, n)| k.ends_with(".py") && matches!(n.kind, Kind::File { .. }))
            .filter(|(k, _)| !claimed.iter().any(|t| crate::trace::under(k, t)))
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
            let Names { reach, strings } = used_names(&src.text);
            words.extend(reach);
            let (imps, calls) = parse(&src.text);
            let running = live(&calls, &words);
            let mut graph: Option<usize> = None;
            // (The codecs' own package names them all: its alias table.)
            if let Some(c) = &codecs
                && !crate::trace::under(&src.file, &c.dir)
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

/// Whether a file belongs to the runtime (the standard library and installed packages):
/// misses there are the interpreter's own optional imports, not worth a warning.
fn in_runtime(cx: &Cx, env: &PyEnv, file: &str) -> bool {
    let Some(f) = crate::rootfs::normalize(file).filter(|f| !f.is_empty()) else {
        return false;
    };
    env.path.iter().any(|p| {
        crate::rootfs::normalize(p).is_some_and(|n| crate::trace::under(&f, &n))
            || cx
                .fs
                .resolve(p, true)
                .is_ok_and(|r| crate::trace::under(&f, &r.path))
    })
}

/// `from .x import y` inside package `pkg` → `pkg.x`; absolute names as they are.
fn absolute_name(module: &str, pkg: Option<&str>) -> Option<String> {
    let dots = module.chars().take_while(|&c| c == '.').count();
    if dots == 0 {
        return Some(module.to_string());
    }
    // The package a module belongs to: for __init__ files the package itself.
    let base = pkg?;
    let mut parts: Vec<&str> = base.split('.').collect();
    for _ in 1..dots {
        parts.pop()?;
    }
    let rest = &module[dots..];
    let mut out = parts.join(".");
    if !rest.is_empty() {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(rest);
    }
    (!out.is_empty()).then_some(out)
}

/// Find a module: built-ins first, then each directory of its parent's `__path__` (or
/// `sys.path`): a package directory, an extension module, a source, a byte-code file;
/// directories without `__init__` make a namespace package.
fn resolve(
    cx: &mut Cx,
    env: &PyEnv,
    path: &[String],
    name: &str,
    cache: &mut HashMap<String, Option<Found>>,
) -> Result<Option<Found>> {
    if let Some(f) = cache.get(name) {
        return Ok(f.clone());
    }
    let (dirs, leaf): (Vec<String>, &str) = match name.rsplit_once('.') {
        None => {
            if env.builtins.contains(name) {
                cache.insert(name.into(), Some(Found::Builtin));
                return Ok(Some(Found::Builtin));
            }
            (path.to_vec(), name)
        }
        Some((parent_name, leaf)) => match resolve(cx, env, path, parent_name, cache)? {
            Some(Found::Package(_, d)) => (d, leaf),
            _ => {
                cache.insert(name.into(), None);
                return Ok(None);
            }
        },
    };
    let mut namespace = Vec::new();
    let mut found = None;
    for d in &dirs {
        let Ok(r) = cx.fs.resolve(d, true) else {
            continue;
        };
        if !cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let dir = display(&r.path);
        let sub = join(&dir, leaf);
        if is_dir(cx, &sub) {
            let init = ["__init__.py", "__init__.pyc"]
                .iter()
                .map(|i| join(&sub, i))
                .chain(ext_files(cx, &sub, "__init__"))
                .find(|p| {
                    matches!(
                        cx.fs
                            .resolve(p, true)
                            .ok()
                            .and_then(|r| cx.fs.get(&r.path).map(|n| n.kind.clone())),
                        Some(Kind::File { .. })
                    )
                });
            if let Some(init) = init {
                found = Some(Found::Package(Some(init), vec![sub]));
                break;
            }
            namespace.push(sub);
        }
        let ext = ext_files(cx, &dir, leaf);
        if let Some(f) = ext.into_iter().next() {
            found = Some(Found::File(f));
            break;
        }
        for suffix in [".py", ".pyc"] {
            let f = join(&dir, &format!("{leaf}{suffix}"));
            if cx.resolve_file(&f)?.is_some() {
                found = Some(Found::File(f));
                break;
            }
        }
        if found.is_some() {
            break;
        }
    }
    let found =
        found.or_else(|| (!namespace.is_empty()).then_some(Found::Package(None, namespace)));
    cache.insert(name.into(), found.clone());
    Ok(found)
}

/// Extension module files for `leaf` in `dir` (`leaf.cpython-311-x86_64-linux-gnu.so`,
/// `leaf.abi3.so`, `leaf.so`), in the import system's order.
fn ext_files(cx: &Cx, dir: &str, leaf: &str) -> Vec<String> {
    let Ok(r) = cx.fs.resolve(dir, true) else {
        return vec![];
    };
    let prefix = if r.path.is_empty() {
        format!("{leaf}.")
    } else {
        format!("{}/{leaf}.", r.path)
    };
    let mut v: Vec<String> = cx
        .fs
        .nodes
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k[prefix.len()..].to_string())
        .filter(|rest| {
            !rest.contains('/')
                && rest.ends_with("so")
                && (rest == "so" || rest.starts_with("cpython-") || rest == "abi3.so")
        })
        .map(|rest| join(dir, &format!("{leaf}.{rest}")))
        .collect();
    v.sort_by_key(|p| {
        if p.contains(".cpython-") {
            0
        } else if p.ends_with(".abi3.so") {
            1
        } else {
            2
        }
    });
    v
}

/// Keep a found module (and its byte-code caches); for packages outside the standard library
/// the whole package. Returns the source to read (and the package it belongs to).
fn keep_module(
    cx: &mut Cx,
    env: &PyEnv,
    name: &str,
    found: &Found,
    ev: &Evidence,
) -> Result<Option<(String, Option<String>, String)>> {
    let (file, pkg) = match found {
        Found::Builtin => return Ok(None),
        Found::File(f) => (
            Some(f.clone()),
            name.rsplit_once('.').map(|(p, _)| p.to_string()),
        ),
        Found::Package(init, dirs) => {
            for d in dirs {
                if let Ok(r) = cx.fs.resolve(d, true) {
                    cx.keep_links(&r.symlinks, &r.path);
                    cx.keep(&r.path, ev.clone());
                }
            }
            // A third-party top-level package: kept whole, for its data files.
            if !name.contains('.') {
                for d in dirs {
                    if !in_stdlib(cx, env, d) {
                        keep_package_tree(cx, d, ev)?;
                        keep_dist_info(cx, d, name, ev);
                    }
                }
            }
            (init.clone(), Some(name.to_string()))
        }
    };
    let Some(file) = file else { return Ok(None) };
    let Some(canon) = cx.keep_if_file(&file, ev.clone()) else {
        return Ok(None);
    };
    // Byte-code caches: __pycache__/STEM.cpython-XY*.pyc.
    let (dir, base) = file.rsplit_once('/').unwrap_or(("", &file));
    if let Some(stem) = base.strip_suffix(".py") {
        let tag = format!("cpython-{}", env.version.replace('.', ""));
        for c in cx.glob(&format!("{dir}/__pycache__/{stem}.{tag}*.pyc")) {
            cx.keep_if_file(
                &c,
                Evidence::new(
                    Why::Runtime,
                    ev.from.as_deref(),
                    format!("byte-code cache of {}", display(&canon)),
                ),
            );
        }
    }
    if !name.contains('.') && !in_stdlib(cx, env, &file) {
        keep_dist_info(cx, dir, name, ev);
    }
    Ok(base.ends_with(".py").then_some((canon, pkg, file.clone())))
}

fn in_stdlib(cx: &Cx, env: &PyEnv, p: &str) -> bool {
    [Some(&env.stdlib), env.dynload.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|d| cx.fs.resolve(d, true).ok())
        .any(|r| {
            let rp = cx
                .fs
                .resolve(p, true)
                .map(|x| x.path)
                .unwrap_or_else(|_| p.trim_start_matches('/').to_string());
            crate::trace::under(&rp, &r.path)
                && !env.site.iter().any(|s| {
                    cx.fs
                        .resolve(s, true)
                        .is_ok_and(|sr| crate::trace::under(&rp, &sr.path))
                })
        })
}

/// A package directory and everything in it, when not too large.
fn keep_package_tree(cx: &mut Cx, dir: &str, ev: &Evidence) -> Result<()> {
    let Ok(r) = cx.fs.resolve(dir, true) else {
        return Ok(());
    };
    if cx.tree_bytes(&r.path, MAX_PACKAGE_BYTES) > MAX_PACKAGE_BYTES {
        cx.question(format!(
            "{dir}: a Python package of more than {} MiB; only the modules it imports are kept",
            MAX_PACKAGE_BYTES >> 20
        ));
        return Ok(());
    }
    let files: Vec<String> = cx
        .fs
        .subtree(&r.path)
        .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    cx.contents.prefetch(cx.fs, &files)?;
    cx.keep_tree_except(&r.path, ev, is_test_suite);
    Ok(())
}

/// Whether a word of a C extension names a module here: a namespace package (a directory
/// without `__init__`, such as `/lib` seen from the working directory `/`) does not count, since
/// any directory on the path is one.
fn is_module(found: Option<Found>) -> bool {
    !matches!(found, None | Some(Found::Package(None, _)))
}

/// A package's test suite (`tests/`, `test/` inside it): never imported by a computed name at
/// run time, so not part of a package kept whole (a static import still keeps a module).
fn is_test_suite(rel: &str) -> bool {
    rel.split('/').any(|c| c == "tests" || c == "test")
}

/// The `*.dist-info` / `*.egg-info` of a top-level package (importlib.metadata and scanners
/// read them).
fn keep_dist_info(cx: &mut Cx, site: &str, top: &str, ev: &Evidence) {
    let site = parent_if_pkg(site, top);
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
    let want = norm(top);
    for pat in ["*.dist-info", "*.egg-info"] {
        for d in cx.glob(&format!("{site}/{pat}")) {
            let base = file_name(&d);
            let dist = base.split('-').next().unwrap_or("");
            let mut matches = norm(dist) == want;
            if !matches
                && let Some((canon, _)) = cx.resolve_file(&join(&d, "top_level.txt")).ok().flatten()
                && let Ok(Some(t)) = cx.text(&canon)
            {
                matches = t.lines().any(|l| l.trim() == top);
            }
            if matches && let Ok(r) = cx.fs.resolve(&d, true) {
                let e = Evidence::new(
                    Why::Runtime,
                    ev.from.as_deref(),
                    format!("metadata of the Python package {top}"),
                );
                cx.keep_tree(&r.path, &e);
            }
        }
    }
}

fn parent_if_pkg(dir: &str, top: &str) -> String {
    if file_name(dir) == top {
        parent(dir)
    } else {
        dir.to_string()
    }
}

/// Every Python source (and `.pth` file, and the `top_level.txt` of installed distributions)
/// under these trees, read in one pass.
fn prefetch_sources(cx: &mut Cx, trees: &[String]) -> Result<()> {
    let mut files = Vec::new();
    let mut bytes = 0u64;
    let mut seen = BTreeSet::new();
    for d in trees {
        let Ok(r) = cx.fs.resolve(d, true) else {
            continue;
        };
        if !seen.insert(r.path.clone()) {
            continue;
        }
        for (k, n) in cx.fs.subtree(&r.path) {
            if k.ends_with(".py")
                || k.ends_with(".pth")
                || k.ends_with("/pyvenv.cfg")
                || k.ends_with("/top_level.txt")
            {
                bytes += n.size();
                files.push(k.clone());
            }
        }
    }
    if bytes <= PREFETCH_BYTES {
        cx.contents.prefetch(cx.fs, &files)?;
    }
    Ok(())
}

/// `--runtime-full`: the whole standard library, minus test suites, GUI toolkits and bundled
/// installers.
fn keep_full(cx: &mut Cx, e: &Exec, env: &PyEnv) -> Result<()> {
    let ev = Evidence::new(
        Why::Runtime,
        Some(&e.path),
        format!("Python {} standard library (--runtime-full)", env.version),
    );
    for d in [Some(env.stdlib.clone()), env.dynload.clone()]
        .into_iter()
        .flatten()
    {
        let Ok(r) = cx.fs.resolve(&d, true) else {
            continue;
        };
        let skip: Vec<String> = FULL_SKIP
            .iter()
            .map(|s| format!("{}/{s}", r.path))
            .collect();
        let entries: Vec<(String, Kind)> = cx
            .fs
            .subtree(&r.path)
            .filter(|(k, _)| !skip.iter().any(|s| crate::trace::under(k, s)))
            .map(|(k, n)| (k.clone(), n.kind.clone()))
            .collect();
        for (k, kind) in entries {
            match kind {
                Kind::File { .. } | Kind::Dir => {
                    cx.keep(&k, ev.clone());
                }
                Kind::Symlink(_) => {
                    crate::trace::add_evidence(cx.out.symlinks.entry(k).or_default(), ev.clone())
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// One import statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyImport {
    /// The module (leading dots for relative imports).
    pub module: String,
    /// Names of `from … import a, b` (`*` for a star import).
    pub names: Vec<String>,
    pub line: usize,
    /// `importlib.import_module(x)` with a computed argument: `module` is the literal prefix.
    pub computed: bool,
    /// Inside a function body: runs only when the function is called.
    pub nested: bool,
    /// Inside `if __name__ == "__main__":`: runs only when the file is the script.
    pub main_only: bool,
    /// In the `except ImportError:` branch of `try:` statements whose bodies import these
    /// modules (one list per enclosing `try:`, innermost first, nested ladders too): runs only
    /// when, for each, one of them cannot be imported.
    pub fallback_of: Vec<Vec<String>>,
    /// The function whose call runs it (the innermost `def` around a nested import), unless
    /// it is called implicitly (a dunder method, a decorated function): `None` then.
    pub called_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum PyTok {
    Name(String),
    Str(String, bool),
    Op(char),
    Newline,
    /// The indentation of the logical line that starts here.
    Indent(usize),
}

/// Tokens of Python source: names, string literals (f-strings flagged), operators, logical
/// line ends; comments and numbers dropped.
fn tokenize(src: &str) -> Vec<(PyTok, usize)> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0usize;
    let mut line_start = true;
    while i < s.len() {
        let c = s[i];
        if line_start && depth == 0 {
            let mut w = 0;
            while i < s.len() && matches!(s[i], ' ' | '\t') {
                w += if s[i] == '\t' { 8 - w % 8 } else { 1 };
                i += 1;
            }
            line_start = false;
            if i < s.len() && !matches!(s[i], '\n' | '#' | '\r') {
                out.push((PyTok::Indent(w), line));
            }
            continue;
        }
        match c {
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '\\' if s.get(i + 1) == Some(&'\n') => {
                i += 2;
                line += 1;
            }
            '\n' => {
                if depth == 0 {
                    out.push((PyTok::Newline, line));
                    line_start = true;
                }
                line += 1;
                i += 1;
            }
            '\'' | '"' => {
                let (text, ni, nl) = string_at(&s, i);
                out.push((PyTok::Str(text, false), line));
                line += nl;
                i = ni;
            }
            c if c == '_' || c.is_alphabetic() => {
                let start = i;
                while i < s.len() && (s[i] == '_' || s[i].is_alphanumeric()) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                if i < s.len()
                    && (s[i] == '\'' || s[i] == '"')
                    && matches!(
                        lower.as_str(),
                        "r" | "b" | "u" | "f" | "rb" | "br" | "fr" | "rf"
                    )
                {
                    let (text, ni, nl) = string_at(&s, i);
                    out.push((PyTok::Str(text, lower.contains('f')), line));
                    line += nl;
                    i = ni;
                } else {
                    out.push((PyTok::Name(word), line));
                }
            }
            c if c.is_ascii_digit() => {
                while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_' || s[i] == '.') {
                    i += 1;
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                out.push((PyTok::Op(c), line));
                i += 1;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                out.push((PyTok::Op(c), line));
                i += 1;
            }
            ' ' | '\t' | '\r' | '\x0c' => i += 1,
            _ => {
                out.push((PyTok::Op(c), line));
                i += 1;
            }
        }
    }
    out.push((PyTok::Newline, line));
    out
}

/// A string literal starting at `i` (a quote): its text, the index after it, newlines in it.
fn string_at(s: &[char], i: usize) -> (String, usize, usize) {
    let q = s[i];
    let triple = s.get(i + 1) == Some(&q) && s.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    let mut text = String::new();
    let mut nl = 0;
    while j < s.len() {
        if s[j] == '\\' {
            if s.get(j + 1) == Some(&'\n') {
                nl += 1;
            }
            j += 2;
            continue;
        }
        if s[j] == '\n' {
            nl += 1;
            if !triple {
                break;
            }
        }
        if s[j] == q && (!triple || (s.get(j + 1) == Some(&q) && s.get(j + 2) == Some(&q))) {
            j += if triple { 3 } else { 1 };
            return (text, j, nl);
        }
        text.push(s[j]);
        j += 1;
    }
    (text, j, nl)
}

/// The imports of Python source: `import a.b as c, d`, `from .x import (y, z)`,
/// `from a import *`, and `importlib.import_module("x")` / `__import__("x")` with literal (or
/// literal-prefixed) arguments, anywhere in the file (functions, `try` blocks).
/// A `try:` statement: its indentation, the modules its body imports, and which part of it is
/// being read.
struct Try {
    indent: usize,
    body: Vec<String>,
    part: TryPart,
}

#[derive(PartialEq)]
enum TryPart {
    Body,
    /// `except ImportError:` / `except (ImportError, …):` / `except ModuleNotFoundError:`.
    ExceptImport,
    Other,
}

/// A logical line at indentation `w` starting with `toks`: opens, continues or closes the
/// `try:` statements around it.
fn enter_line(toks: &[(PyTok, usize)], w: usize, tries: &mut Vec<Try>) {
    let first = match toks.first().map(|t| &t.0) {
        Some(PyTok::Name(n)) => n.as_str(),
        _ => "",
    };
    let same = tries.last().is_some_and(|t| t.indent == w);
    match first {
        "except" if same => {
            let line = toks.iter().take_while(|t| !matches!(t.0, PyTok::Newline));
            let import_error = line.into_iter().any(|t| {
                matches!(&t.0, PyTok::Name(n) if n == "ImportError" || n == "ModuleNotFoundError")
            });
            if let Some(t) = tries.last_mut() {
                t.part = if import_error {
                    TryPart::ExceptImport
                } else {
                    TryPart::Other
                };
            }
        }
        "else" | "finally" if same => {
            if let Some(t) = tries.last_mut() {
                t.part = TryPart::Other;
            }
        }
        _ => {
            while tries.last().is_some_and(|t| t.indent >= w) {
                tries.pop();
            }
            if first == "try" && matches!(toks.get(1).map(|t| &t.0), Some(PyTok::Op(':'))) {
                tries.push(Try {
                    indent: w,
                    body: Vec::new(),
                    part: TryPart::Body,
                });
            }
        }
    }
}

/// An import of `module` on a line at indentation `indent`: recorded in the body of the
/// innermost `try:` around it when it is in that body; and, for each enclosing
/// `except ImportError:` branch (a ladder `try: a / except ImportError: try: b / except
/// ImportError: c`), the modules it is a fallback for.
fn try_body(tries: &mut [Try], indent: usize, module: &str) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut innermost = true;
    for t in tries.iter_mut().rev().filter(|t| t.indent < indent) {
        match t.part {
            TryPart::Body if innermost => t.body.push(module.to_string()),
            TryPart::ExceptImport if !t.body.is_empty() => groups.push(t.body.clone()),
            _ => {}
        }
        innermost = false;
    }
    groups
}

/// The names a source uses that other modules can reach (attributes as in `ctx.Manager()`,
/// the names of its `from … import a, b`, string literals that are one identifier as in
/// `getattr(x, "name")`), and its short string literals.
pub(crate) fn used_names(src: &str) -> Names {
    let toks = tokenize(src);
    let mut reach = HashSet::new();
    let mut strings = Vec::new();
    let mut from_line = (false, false);
    // After `from x import *`, a bare name the file does not define may be one of x's.
    let (mut star, mut bare, mut defined) = (false, HashSet::new(), HashSet::new());
    for (k, (t, _)) in toks.iter().enumerate() {
        let prev = k.checked_sub(1).map(|p| &toks[p].0);
        if from_line.1 && matches!(t, PyTok::Op('*')) {
            star = true;
        }
        if let PyTok::Str(v, false) = t
            && !v.is_empty()
            && v.len() <= pycodecs::MAX_NAME
        {
            strings.push((v.clone(), toks[k].1));
        }
        match t {
            PyTok::Name(n) => {
                if n == "from" && matches!(prev, None | Some(PyTok::Indent(_))) {
                    from_line = (true, false);
                } else if from_line.0 && n == "import" {
                    from_line.1 = true;
                } else if matches!(prev, Some(PyTok::Op('.'))) || from_line.1 {
                    reach.insert(n.clone());
                } else if matches!(prev, Some(PyTok::Name(d)) if d == "def" || d == "class") {
                    defined.insert(n.clone());
                } else {
                    bare.insert(n.clone());
                }
            }
            PyTok::Str(v, _)
                if !v.is_empty()
                    && v.len() < 64
                    && v.chars().all(|c| c == '_' || c.is_alphanumeric()) =>
            {
                reach.insert(v.clone());
            }
            PyTok::Newline => from_line = (false, false),
            _ => {}
        }
    }
    if star {
        reach.extend(bare.difference(&defined).cloned());
    }
    Names { reach, strings }
}

/// What [`used_names`] finds in a source.
pub(crate) struct Names {
    /// Names other modules can reach: attributes, names imported from others, identifier
    /// strings.
    pub reach: HashSet<String>,
    /// Its short string literals (not f-strings), with their lines: codec names among them.
    pub strings: Vec<(String, usize)>,
}

pub(crate) fn imports(src: &str) -> Vec<PyImport> {
    parse(src).0
}

/// A source's own names used in each of its functions (`""`: at module level and in
/// functions called implicitly; `"\0main"`: in its `if __name__ == "__main__":` block).
pub(crate) type Calls = HashMap<String, HashSet<String>>;

/// The functions of a source that run: those its module level (or an implicitly called
/// function) uses, those `reached` names (used by other modules), and what they use in turn.
pub(crate) fn live(calls: &Calls, reached: &HashSet<String>) -> HashSet<String> {
    let mut out: HashSet<String> = HashSet::new();
    let mut todo: Vec<&String> = calls.get("").into_iter().flatten().collect();
    todo.extend(calls.keys().filter(|k| reached.contains(*k)));
    while let Some(f) = todo.pop() {
        if out.insert(f.clone())
            && let Some(used) = calls.get(f)
        {
            todo.extend(used.iter());
        }
    }
    out
}

/// The imports of a source and the names its functions use ([`Calls`]).
pub(crate) fn parse(src: &str) -> (Vec<PyImport>, Calls) {
    let toks = tokenize(src);
    let mut out = Vec::new();
    let mut calls: Calls = HashMap::new();
    let mut i = 0;
    // Indentation of the `def` statements we are inside; whether the current logical line
    // is itself a `def` (a one-line body).
    // With each `def`, the name of the function (None: called implicitly).
    let mut defs: Vec<(usize, Option<String>)> = Vec::new();
    let mut line_is_def = false;
    // Whether the previous logical line was a decorator (`@x`).
    let mut decorator = false;
    // Indentation of the `if __name__ == "__main__":` blocks we are inside, of the current
    // logical line, and the `try:` statements open around it.
    let mut guards: Vec<usize> = Vec::new();
    let mut cur_indent = 0usize;
    let mut tries: Vec<Try> = Vec::new();
    let at_start = |k: usize| -> bool {
        k == 0
            || matches!(
                toks[k - 1].0,
                PyTok::Newline | PyTok::Indent(_) | PyTok::Op(';') | PyTok::Op(':')
            )
    };
    let dotted = |k: &mut usize| -> String {
        let mut name = String::new();
        while *k < toks.len() {
            match &toks[*k].0 {
                PyTok::Op('.') => name.push('.'),
                PyTok::Name(n) if n != "import" && (name.is_empty() || name.ends_with('.')) => {
                    name.push_str(n)
                }
                _ => break,
            }
            *k += 1;
        }
        name
    };
    while i < toks.len() {
        let line = toks[i].1;
        let nested = line_is_def || !defs.is_empty();
        let called_by = defs.last().and_then(|d| d.1.clone());
        if let PyTok::Name(n) = &toks[i].0
            && !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(PyTok::Op('.')))
            && !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(PyTok::Name(d)) if d == "def" || d == "class")
        {
            let scope = if !guards.is_empty() {
                "\0main".to_string()
            } else {
                called_by.clone().unwrap_or_default()
            };
            calls.entry(scope).or_default().insert(n.clone());
        }
        match &toks[i].0 {
            PyTok::Indent(w) => {
                while defs.last().is_some_and(|d| d.0 >= *w) {
                    defs.pop();
                }
                while guards.last().is_some_and(|d| d >= w) {
                    guards.pop();
                }
                cur_indent = *w;
                enter_line(&toks[i + 1..], *w, &mut tries);
                let k = if matches!(&toks.get(i + 1).map(|t| &t.0), Some(PyTok::Name(a)) if a == "async")
                {
                    i + 2
                } else {
                    i + 1
                };
                // A function body, or an `if __name__ == "__main__":` block (it runs only
                // when the module is the script), is entered lazily.
                let mut end = k;
                while end < toks.len() && !matches!(toks[end].0, PyTok::Newline) {
                    end += 1;
                }
                let line_toks = &toks[k..end];
                let main_guard = matches!(line_toks.first().map(|t| &t.0), Some(PyTok::Name(d)) if d == "if")
                    && line_toks
                        .iter()
                        .any(|t| matches!(&t.0, PyTok::Name(n) if n == "__name__"))
                    && line_toks
                        .iter()
                        .any(|t| matches!(&t.0, PyTok::Str(v, _) if v == "__main__"));
                line_is_def = main_guard
                    || matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(d)) if d == "def");
                if main_guard {
                    guards.push(*w);
                }
                if line_is_def {
                    // The function's name, unless it is called implicitly: a dunder method
                    // (`__getattr__`, `__init__`), a decorated function (registered, a
                    // property), the main block.
                    let name = match toks.get(k + 1).map(|t| &t.0) {
                        Some(PyTok::Name(n))
                            if !(main_guard
                                || decorator
                                || n.starts_with("__") && n.ends_with("__")) =>
                        {
                            Some(n.clone())
                        }
                        _ => None,
                    };
                    defs.push((*w, name));
                    // The body is on the following lines unless it shares this one.
                    line_is_def = false;
                    let mut j = k;
                    while j < toks.len() && !matches!(toks[j].0, PyTok::Newline) {
                        j += 1;
                    }
                    if matches!(
                        toks.get(j.saturating_sub(1)).map(|t| &t.0),
                        Some(PyTok::Op(':'))
                    ) {
                        // `def f():` then a body below.
                    } else {
                        line_is_def = true;
                    }
                }
                decorator = matches!(line_toks.first().map(|t| &t.0), Some(PyTok::Op('@')));
                i += 1;
            }
            PyTok::Newline => {
                line_is_def = false;
                i += 1;
            }
            PyTok::Name(n) if n == "import" && at_start(i) => {
                let mut k = i + 1;
                loop {
                    let m = dotted(&mut k);
                    if !m.is_empty() {
                        let fallback_of = try_body(&mut tries, cur_indent, &m);
                        out.push(PyImport {
                            module: m,
                            names: vec![],
                            line,
                            computed: false,
                            nested,
                            main_only: !guards.is_empty(),
                            fallback_of,
                            called_by: called_by.clone(),
                        });
                    }
                    if matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(a)) if a == "as") {
                        k += 2;
                    }
                    if matches!(toks.get(k).map(|t| &t.0), Some(PyTok::Op(','))) {
                        k += 1;
                        continue;
                    }
                    break;
                }
                i = k;
            }
            PyTok::Name(n) if n == "from" && at_start(i) => {
                let mut k = i + 1;
                let m = dotted(&mut k);
                if !matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(a)) if a == "import") {
                    i = k.max(i + 1);
                    continue;
                }
                k += 1;
                let mut names = Vec::new();
                while k < toks.len() {
                    match &toks[k].0 {
                        PyTok::Newline | PyTok::Op(';') => break,
                        PyTok::Name(a) if a == "as" => k += 1,
                        PyTok::Name(a) => names.push(a.clone()),
                        PyTok::Op('*') => names.push("*".into()),
                        _ => {}
                    }
                    k += 1;
                }
                let fallback_of = try_body(&mut tries, cur_indent, &m);
                out.push(PyImport {
                    module: m,
                    names,
                    line,
                    computed: false,
                    nested,
                    main_only: !guards.is_empty(),
                    fallback_of,
                    called_by: called_by.clone(),
                });
                i = k;
            }
            PyTok::Name(n) if n == "import_module" || n == "__import__" => {
                if matches!(toks.get(i + 1).map(|t| &t.0), Some(PyTok::Op('('))) {
                    match toks.get(i + 2).map(|t| &t.0) {
                        Some(PyTok::Str(s, fstr)) => {
                            let follow_plus = matches!(
                                toks.get(i + 3).map(|t| &t.0),
                                Some(PyTok::Op('+') | PyTok::Op('%'))
                            );
                            let (lit, computed) = if *fstr {
                                (
                                    s.split('{').next().unwrap_or("").to_string(),
                                    s.contains('{'),
                                )
                            } else {
                                (s.clone(), follow_plus)
                            };
                            let lit = if computed {
                                lit.trim_end_matches('.').to_string()
                            } else {
                                lit
                            };
                            if computed
                                || lit
                                    .chars()
                                    .all(|c| c == '_' || c == '.' || c.is_alphanumeric())
                            {
                                out.push(PyImport {
                                    module: lit,
                                    names: vec![],
                                    line,
                                    computed,
                                    nested,
                                    main_only: !guards.is_empty(),
                                    fallback_of: Vec::new(),
                                    called_by: called_by.clone(),
                                });
                            }
                        }
                        Some(_) => out.push(PyImport {
                            module: String::new(),
                            names: vec![],
                            line,
                            computed: true,
                            nested,
                            main_only: !guards.is_empty(),
                            fallback_of: Vec::new(),
                            called_by: called_by.clone(),
                        }),
                        None => {}
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    (out, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_suites_are_not_part_of_a_package_kept_whole() {
        for rel in [
            "tests",
            "tests/utils.py",
            "core/tests/test_a.py",
            "test/x.py",
        ] {
            assert!(is_test_suite(rel), "{rel}");
        }
        for rel in [
            "context.py",
            "testing/utils.py",
            "test_x.py",
            "handlers/digests.py",
        ] {
            assert!(!is_test_suite(rel), "{rel}");
        }
    }

    #[test]
    fn fallbacks_and_main_blocks_are_marked() {
        let src = "try:\n    from _sha512 import sha512\n    import _fast\nexcept (ImportError, AttributeError):\n    from hashlib import sha512\nelse:\n    import after\ntry:\n    import a\nexcept ValueError:\n    import b\nimport c\nif __name__ == '__main__':\n    import doctest\nimport d\n";
        let got: Vec<(String, Vec<Vec<String>>, bool)> = imports(src)
            .into_iter()
            .map(|i| (i.module, i.fallback_of, i.main_only))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (s("_sha512"), vec![], false),
                (s("_fast"), vec![], false),
                (s("hashlib"), vec![vec![s("_sha512"), s("_fast")]], false),
                (s("after"), vec![], false),
                (s("a"), vec![], false),
                (s("b"), vec![], false),
                (s("c"), vec![], false),
                (s("doctest"), vec![], true),
                (s("d"), vec![], false),
            ]
        );
    }

    #[test]
    fn a_ladder_of_fallbacks_is_a_fallback_of_every_rung_above() {
        // A console script of setuptools: importlib.metadata, else importlib_metadata, else
        // pkg_resources. Both lower rungs depend on the first.
        let src = "try:\n    from importlib.metadata import distribution\nexcept ImportError:\n    try:\n        from importlib_metadata import distribution\n    except ImportError:\n        from pkg_resources import load_entry_point\n";
        let got: Vec<(String, Vec<Vec<String>>)> = imports(src)
            .into_iter()
            .map(|i| (i.module, i.fallback_of))
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("importlib.metadata".to_string(), vec![]),
                (
                    "importlib_metadata".to_string(),
                    vec![v(&["importlib.metadata"])]
                ),
                (
                    "pkg_resources".to_string(),
                    vec![v(&["importlib_metadata"]), v(&["importlib.metadata"])]
                ),
            ]
        );
    }

    #[test]
    fn a_nested_import_names_the_function_that_runs_it() {
        let src = "import top\nclass C:\n    def Manager(self):\n        from .managers import SyncManager\n    def __getattr__(self, n):\n        import lazy\n    @property\n    def prop(self):\n        import viaprop\n    def outer(self):\n        def inner():\n            import deep\n        return inner\ndef one(): import oneline\nif __name__ == '__main__':\n    import doctest\n";
        let got: Vec<(String, bool, Option<String>)> = imports(src)
            .into_iter()
            .map(|i| (i.module, i.nested, i.called_by))
            .collect();
        let some = |x: &str| Some(x.to_string());
        assert_eq!(
            got,
            vec![
                ("top".into(), false, None),
                (".managers".into(), true, some("Manager")),
                ("lazy".into(), true, None),
                ("viaprop".into(), true, None),
                ("deep".into(), true, some("inner")),
                ("oneline".into(), true, some("one")),
                ("doctest".into(), true, None),
            ]
        );
    }

    #[test]
    fn used_names_are_what_other_modules_reach() {
        let src = "from multiprocessing import Pool, cpu_count as n\nimport logging\nclass Manager: pass\ndef helper(): pass\nm = Manager()\nctx.get_context().Process(target=helper)\ngetattr(x, 'Queue')\ns = 'Set-Cookie'\n";
        let Names { reach, strings } = used_names(src);
        for w in ["Pool", "cpu_count", "n", "get_context", "Process", "Queue"] {
            assert!(reach.contains(w), "{w} reached: {reach:?}");
        }
        for w in ["Manager", "helper", "ctx", "logging", "m", "Cookie"] {
            assert!(!reach.contains(w), "{w} not reached: {reach:?}");
        }
        assert!(
            strings.contains(&("Set-Cookie".to_string(), 8)),
            "{strings:?}"
        );
        let Names { reach, .. } =
            used_names("from tkinter import *\nmainloop()\ndef _test(): pass\n_test()\n");
        assert!(reach.contains("mainloop") && !reach.contains("_test"));
    }

    #[test]
    fn functions_run_from_module_level_or_from_other_modules() {
        // random.py: `_test_generator` (which imports statistics) runs only from `_test`,
        // which runs only from the main block.
        let src = "def _test_generator(n):\n    from statistics import stdev\ndef _test():\n    _test_generator(5)\ndef choice(x):\n    return _randbelow(x)\ndef _randbelow(n):\n    import _random\ndef __init__(self):\n    _seed()\ndef _seed():\n    import os\n_inst = 1\nif __name__ == '__main__':\n    _test()\n";
        let (imps, calls) = parse(src);
        let by: Vec<Option<String>> = imps.iter().map(|i| i.called_by.clone()).collect();
        assert_eq!(
            by,
            vec![
                Some("_test_generator".into()),
                Some("_randbelow".into()),
                Some("_seed".into())
            ]
        );
        let none = HashSet::new();
        let run = live(&calls, &none);
        assert!(run.contains("_seed"), "called from __init__: {run:?}");
        assert!(!run.contains("_test_generator") && !run.contains("_randbelow"));
        let reached: HashSet<String> = ["choice".to_string()].into();
        let run = live(&calls, &reached);
        assert!(run.contains("_randbelow") && !run.contains("_test_generator"));
    }

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

    #[test]
    fn import_statements() {
        let src = r#"
"""Docstring: import not_a_module
from nowhere import x
"""
import os, sys as system
import xml.etree.ElementTree as ET
from . import sibling
from ..pkg.mod import (a,
    b as bee)
from json import *
try:
    import _fast  # comment: import nope
except ImportError:
    _fast = None
if __name__ == "__main__":
    import doctest
def f():
    import sqlite3; from datetime import datetime
    m = importlib.import_module("plugins." + name)
    n = __import__('hashlib')
    o = importlib.import_module(name)
s = 'from fake import x'
raise ValueError from err
"#;
        let all = imports(src);
        let nested: Vec<bool> = all.iter().map(|i| i.nested).collect();
        assert_eq!(
            nested,
            vec![
                false, false, false, false, false, false, false, true, true, true, true, true, true
            ]
        );
        let got: Vec<(String, Vec<String>, bool)> = all
            .into_iter()
            .map(|i| (i.module, i.names, i.computed))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (s("os"), vec![], false),
                (s("sys"), vec![], false),
                (s("xml.etree.ElementTree"), vec![], false),
                (s("."), vec![s("sibling")], false),
                (s("..pkg.mod"), vec![s("a"), s("b")], false),
                (s("json"), vec![s("*")], false),
                (s("_fast"), vec![], false),
                (s("doctest"), vec![], false),
                (s("sqlite3"), vec![], false),
                (s("datetime"), vec![s("datetime")], false),
                (s("plugins"), vec![], true),
                (s("hashlib"), vec![], false),
                (s(""), vec![], true),
            ]
        );
        assert_eq!(
            absolute_name("..pkg.mod", Some("a.b.c")),
            Some("a.b.pkg.mod".into())
        );
        assert_eq!(absolute_name(".", Some("a.b")), Some("a.b".into()));
        assert_eq!(absolute_name(".x", None), None);
    }
}

//! One interpreter run traced: the start-up set, what it runs (a script, `-m`, `-c`), the
//! application's own sources, then the import graph walked to its end.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::*;

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
    /// The module the interpreter runs as `__main__` (`-m NAME`, or its package's
    /// `__main__`): its `if __name__ == "__main__":` block runs, wherever it was found.
    main: bool,
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
pub(super) fn run(
    cx: &mut Cx,
    e: &Exec,
    env: &PyEnv,
    done: &mut HashMap<String, u8>,
) -> Result<()> {
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
    let (no_site, main) = options(cx, e);
    // `-m NAME` runs NAME (a module) or NAME.__main__ (a package) as `__main__`.
    let main_modules: Vec<String> = match &main {
        Some((k, v)) if k == "-m" => vec![v.clone(), format!("{v}.__main__")],
        _ => Vec::new(),
    };
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
    main_source(cx, e, main, &mut first_dir, &mut queue, &mut texts)?;
    let wd = cx.run.workdir.clone();
    workdir_sources(cx, &wd, &mut texts)?;
    module_attr_args(e, &mut queue);
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
    let codecs_named: BTreeMap<String, (String, usize)> = match &codecs {
        Some(c) => pycodecs::named_at_start(cx, c, e),
        None => BTreeMap::new(),
    };
    let codecs_wanted: BTreeSet<String> = BTreeSet::new();
    // The names the sources read so far reach in other modules, and the standard library's
    // function-level imports waiting for a use of their function's name.
    let words: HashSet<String> = HashSet::new();
    // (The function, the index of its source's calls in `graphs`, the import.)
    let pending: Vec<(String, usize, Want)> = Vec::new();
    let graphs: Vec<Calls> = Vec::new();
    let mut walk = Walk {
        e,
        env,
        main_modules,
        done,
        path,
        cache,
        queue,
        texts,
        codecs,
        codecs_named,
        codecs_wanted,
        words,
        pending,
        graphs,
    };
    loop {
        for src in std::mem::take(&mut walk.texts) {
            walk.read_source(cx, src)?;
        }
        walk.requeue();
        if walk.queue.is_empty() || walk.done.len() > MAX_MODULES {
            break;
        }
        while let Some(w) = walk.queue.pop_front() {
            walk.import(cx, w)?;
        }
    }
    if let Some(c) = &walk.codecs {
        pycodecs::drop_others(cx, c, &walk.codecs_wanted);
    }
    Ok(())
}

/// The interpreter's options: whether `-S` turns `site` off, and what it runs: `-c CODE`,
/// `-m MODULE` or a script, as (kind, value).
fn options(cx: &mut Cx, e: &Exec) -> (bool, Option<(String, String)>) {
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
    (no_site, main)
}

/// What the interpreter runs first: the script (kept, read, its directory first on the path),
/// a directory's `__main__`, the `-m` module, or the `-c` code.
fn main_source(
    cx: &mut Cx,
    e: &Exec,
    main: Option<(String, String)>,
    first_dir: &mut String,
    queue: &mut VecDeque<Want>,
    texts: &mut Vec<Source>,
) -> Result<()> {
    let ev_rt = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
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
                    *first_dir = parent(&display(&canon));
                    if let Some(text) = cx.text(&canon)? {
                        texts.push(Source {
                            file: canon,
                            text,
                            pkg: None,
                            budget: 1,
                            runtime: false,
                            stdlib: false,
                            main: true,
                        });
                    }
                }
                None if is_dir(cx, &p) => {
                    // A directory with __main__.py.
                    *first_dir = p.clone();
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
            main: true,
        }),
        None => {}
    }
    Ok(())
}

/// The application's own sources in its working directory `wd` (a WSGI app gunicorn loads by
/// `module:attr`, modules it imports by name): their imports are followed too.
fn workdir_sources(cx: &mut Cx, wd: &str, texts: &mut Vec<Source>) -> Result<()> {
    if !wd.is_empty()
        && let Ok(r) = cx.fs.resolve(wd, true)
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
                    main: false,
                });
            }
        }
    }
    Ok(())
}

/// `module:attr` arguments (gunicorn app:app, uvicorn main:app).
fn module_attr_args(e: &Exec, queue: &mut VecDeque<Want>) {
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
}

/// The import graph of one run, as it is walked: the search path, what is queued and read,
/// the codecs named, and the function-level imports waiting for their function's name.
struct Walk<'a> {
    e: &'a Exec,
    env: &'a PyEnv,
    /// The modules run as `__main__` (see [`Source::main`]).
    main_modules: Vec<String>,
    /// Modules done, with the budget they were followed with.
    done: &'a mut HashMap<String, u8>,
    path: Vec<String>,
    cache: HashMap<String, Option<Found>>,
    queue: VecDeque<Want>,
    texts: Vec<Source>,
    codecs: Option<pycodecs::Codecs>,
    /// Codec module → who names it (a source and line; empty: the config or the default).
    codecs_named: BTreeMap<String, (String, usize)>,
    codecs_wanted: BTreeSet<String>,
    /// The names the sources read so far reach in other modules.
    words: HashSet<String>,
    /// The standard library's function-level imports waiting for a use of their function's
    /// name: (the function, the index of its source's calls in `graphs`, the import).
    pending: Vec<(String, usize, Want)>,
    graphs: Vec<Calls>,
}

impl Walk<'_> {
    /// A source read: its imports queued (or deferred until their function is used), the
    /// codecs its strings name, and a console script's entry point.
    fn read_source(&mut self, cx: &mut Cx, src: Source) -> Result<()> {
        let env = self.env;
        let runtime = src.runtime;
        let (imps, calls, Names { reach, strings }) = parse(&src.text);
        self.words.extend(reach);
        // The main module's `if __name__ == "__main__":` block runs: what it calls too.
        let running = if src.main {
            let mut reached = self.words.clone();
            reached.insert("\0main".into());
            live(&calls, &reached)
        } else {
            live(&calls, &self.words)
        };
        let mut graph: Option<usize> = None;
        // (The codecs' own package names them all: its alias table.)
        if let Some(c) = &self.codecs
            && !crate::trace::kit::under(&src.file, &c.dir)
        {
            for (v, line) in strings {
                if let Some(m) = c.module_for(&v)
                    && !self.codecs_named.contains_key(m)
                {
                    self.codecs_named
                        .insert(m.to_string(), (src.file.clone(), line));
                }
            }
        }
        for imp in imps {
            // A library's `if __name__ == "__main__":` block never runs on import.
            if imp.main_only && runtime && !src.main {
                continue;
            }
            // A fallback (`except ImportError:`) of imports that all resolve here never runs.
            let mut fallback = false;
            for group in &imp.fallback_of {
                let mut all = true;
                for m in group {
                    let found = match absolute_name(m, src.pkg.as_deref()) {
                        Some(n) if !n.is_empty() => {
                            resolve(cx, env, &self.path, &n, &mut self.cache)?
                        }
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
                        && !self.words.contains(f) =>
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
                if !(name.is_empty() || top == "encodings" && self.codecs.is_some()) {
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
                        self.graphs.push(calls.clone());
                        self.graphs.len() - 1
                    });
                    self.pending
                        .extend(wants.into_iter().map(|w| (f.clone(), g, w)));
                }
                None => self.queue.extend(wants),
            }
        }
        // A console script: `load_entry_point('dist==1.0', 'console_scripts', 'name')`
        // loads the entry point its distribution's metadata names.
        if !runtime {
            for m in entry_point_modules(cx, env, &src.text)? {
                self.queue.push_back(Want {
                    name: m,
                    by: Some((src.file.clone(), 0)),
                    quiet: false,
                    budget: 1,
                });
            }
        }
        Ok(())
    }

    /// Once the queue is empty: the codecs named so far, then the deferred imports whose
    /// function some source now uses.
    fn requeue(&mut self) {
        if self.queue.is_empty() {
            for (m, (file, line)) in &self.codecs_named {
                if self.codecs_wanted.insert(m.clone()) {
                    self.queue.push_back(Want {
                        name: format!("encodings.{m}"),
                        by: (!file.is_empty()).then(|| (file.clone(), *line)),
                        quiet: true,
                        budget: 0,
                    });
                }
            }
        }
        if self.queue.is_empty() {
            let running: Vec<HashSet<String>> =
                self.graphs.iter().map(|c| live(c, &self.words)).collect();
            let (used, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|(f, g, _)| self.words.contains(f) || running[*g].contains(f));
            self.pending = waiting;
            self.queue.extend(used.into_iter().map(|(_, _, w)| w));
        }
    }

    /// One import: the module and its parents found and kept, their sources queued for
    /// reading, and what they import by computed names.
    fn import(&mut self, cx: &mut Cx, w: Want) -> Result<()> {
        let (e, env) = (self.e, self.env);
        let ev_rt = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
        let whole = w.name.ends_with(".*");
        let name = w.name.trim_end_matches(".*").to_string();
        if self.done.get(&w.name).is_some_and(|b| *b >= w.budget) {
            return Ok(());
        }
        self.done.insert(w.name.clone(), w.budget);
        // Importing a.b.c imports a, then a.b, then a.b.c.
        let parts: Vec<&str> = name.split('.').collect();
        let mut ok = true;
        for k in 1..=parts.len() {
            let n = parts[..k].join(".");
            let found = resolve(cx, env, &self.path, &n, &mut self.cache)?;
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
                    if k < parts.len() && self.done.get(&n).is_some_and(|b| *b >= w.budget) {
                        continue;
                    }
                    self.done.insert(n.clone(), w.budget);
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
                    let ev = if n.starts_with("encodings.") && self.codecs_wanted.contains(&n[10..])
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
                                self.queue.push_back(Want {
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
                        self.queue.push_back(Want {
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
                            if self.done.contains_key(&m)
                                || !is_module(resolve(cx, env, &self.path, &top, &mut self.cache)?)
                            {
                                continue; // a word that is no module here
                            }
                            self.queue.push_back(Want {
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
                        self.texts.push(Source {
                            file,
                            text,
                            pkg,
                            budget: w.budget,
                            runtime,
                            stdlib,
                            main: self.main_modules.contains(&n),
                        });
                    }
                }
            }
        }
        if ok
            && whole
            && let Some(Some(Found::Package(_, dirs))) = self.cache.get(&name).cloned()
        {
            self.import_whole(cx, &name, &w, dirs)?;
        }
        Ok(())
    }

    /// `PKG.*`: a package whose modules are imported by computed names, kept whole, and its
    /// sources (and extensions' words) followed.
    fn import_whole(&mut self, cx: &mut Cx, name: &str, w: &Want, dirs: Vec<String>) -> Result<()> {
        let (e, env) = (self.e, self.env);
        let ev_rt = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
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
                            if self.done.contains_key(&m)
                                || !is_module(resolve(cx, env, &self.path, &top, &mut self.cache)?)
                            {
                                continue;
                            }
                            self.queue.push_back(Want {
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
                        name.to_string()
                    } else {
                        format!("{name}.{}", rel.trim_end_matches(".__init__"))
                    };
                    self.queue.push_back(Want {
                        name: m,
                        by: w.by.clone(),
                        quiet: true,
                        budget: w.budget,
                    });
                }
            }
        }
        Ok(())
    }
}

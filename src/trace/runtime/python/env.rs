//! Where a CPython interpreter finds its modules: the prefix by the landmark search, `sys.path`
//! (PYTHONPATH, the standard library, `lib-dynload`, site directories, `.pth` files) and the
//! built-in modules.

use super::*;

/// What an interpreter's `sys.path` and built-ins are.
#[derive(Clone, Debug)]
pub(super) struct PyEnv {
    pub(super) version: String,
    pub(super) stdlib: String,
    pub(super) dynload: Option<String>,
    /// Site directories (absolute, existing).
    pub(super) site: Vec<String>,
    /// `sys.path` after the script's directory: PYTHONPATH, zip, stdlib, lib-dynload, sites.
    pub(super) path: Vec<String>,
    pub(super) builtins: HashSet<String>,
    /// Imports the `.pth` files run.
    pub(super) pth_imports: Vec<String>,
}

/// The interpreter's environment, from where it is.
pub(super) fn find_env(cx: &mut Cx, e: &Exec, needed: &[String]) -> Result<Option<PyEnv>> {
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
    if !crate::trace::kit::is_system_dir(&prefix)
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

pub(super) fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

pub(super) fn parent(p: &str) -> String {
    match p.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

pub(super) fn version_of(name: &str) -> Option<String> {
    let v = name
        .strip_prefix("python")?
        .trim_end_matches(['d', 'm', 'u']);
    (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| v.to_string())
}

/// `pythonX.Y` directories under PREFIX/lib.
pub(super) fn lib_versions(cx: &Cx, prefix: &str) -> Vec<String> {
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

/// The path the interpreter was started by, before symlinks (where a venv's pyvenv.cfg is).
pub(super) fn invoked_path(cx: &Cx, e: &Exec) -> Option<String> {
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
                .unwrap_or(crate::trace::kit::DEFAULT_PATH)
                .to_string()
        });
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| join(d, a0))
        .find(|c| cx.fs.resolve(c, true).is_ok())
}

/// Built-in modules: the `PyInit_NAME` symbols compiled into the interpreter (or its
/// libpython).
pub(super) fn builtin_modules(cx: &mut Cx, exe: &str) -> Result<HashSet<String>> {
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

pub(super) fn memfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

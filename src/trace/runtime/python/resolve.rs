//! Resolving a module name the way the import system does (built-ins, packages, extension
//! modules before sources, namespace packages), and keeping what it finds.

use super::*;

/// A module found on the path.
#[derive(Clone, Debug)]
pub(super) enum Found {
    Builtin,
    /// A source, extension or byte-code file.
    File(String),
    /// A package: its `__init__` file (if any) and its directories (`__path__`).
    Package(Option<String>, Vec<String>),
}

/// Whether a file belongs to the runtime (the standard library and installed packages):
/// misses there are the interpreter's own optional imports, not worth a warning.
pub(super) fn in_runtime(cx: &Cx, env: &PyEnv, file: &str) -> bool {
    let Some(f) = crate::rootfs::normalize(file).filter(|f| !f.is_empty()) else {
        return false;
    };
    env.path.iter().any(|p| {
        crate::rootfs::normalize(p).is_some_and(|n| crate::trace::kit::under(&f, &n))
            || cx
                .fs
                .resolve(p, true)
                .is_ok_and(|r| crate::trace::kit::under(&f, &r.path))
    })
}

/// `from .x import y` inside package `pkg` → `pkg.x`; absolute names as they are.
pub(super) fn absolute_name(module: &str, pkg: Option<&str>) -> Option<String> {
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
pub(super) fn resolve(
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
pub(super) fn ext_files(cx: &Cx, dir: &str, leaf: &str) -> Vec<String> {
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
pub(super) fn keep_module(
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

pub(super) fn in_stdlib(cx: &Cx, env: &PyEnv, p: &str) -> bool {
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
            crate::trace::kit::under(&rp, &r.path)
                && !env.site.iter().any(|s| {
                    cx.fs
                        .resolve(s, true)
                        .is_ok_and(|sr| crate::trace::kit::under(&rp, &sr.path))
                })
        })
}

/// A package directory and everything in it, when not too large.
pub(super) fn keep_package_tree(cx: &mut Cx, dir: &str, ev: &Evidence) -> Result<()> {
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
    cx.prefetch_tree(&r.path)?;
    cx.keep_tree_except(&r.path, ev, is_test_suite);
    Ok(())
}

/// Whether a word of a C extension names a module here: a namespace package (a directory
/// without `__init__`, such as `/lib` seen from the working directory `/`) does not count, since
/// any directory on the path is one.
pub(super) fn is_module(found: Option<Found>) -> bool {
    !matches!(found, None | Some(Found::Package(None, _)))
}

/// A package's test suite (`tests/`, `test/` inside it): never imported by a computed name at
/// run time, so not part of a package kept whole (a static import still keeps a module).
pub(super) fn is_test_suite(rel: &str) -> bool {
    rel.split('/').any(|c| c == "tests" || c == "test")
}

/// The `*.dist-info` / `*.egg-info` of a top-level package (importlib.metadata and scanners
/// read them).
pub(super) fn keep_dist_info(cx: &mut Cx, site: &str, top: &str, ev: &Evidence) {
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

pub(super) fn parent_if_pkg(dir: &str, top: &str) -> String {
    if file_name(dir) == top {
        parent(dir)
    } else {
        dir.to_string()
    }
}

/// Every Python source (and `.pth` file, and the `top_level.txt` of installed distributions)
/// under these trees, read in one pass.
pub(super) fn prefetch_sources(cx: &mut Cx, trees: &[String]) -> Result<()> {
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
pub(super) fn keep_full(cx: &mut Cx, e: &Exec, env: &PyEnv) -> Result<()> {
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
        let entries = cx.entries_under(&r.path, |rel| {
            FULL_SKIP.iter().any(|s| crate::trace::kit::under(rel, s))
        });
        for (k, kind) in entries {
            match kind {
                Kind::File { .. } | Kind::Dir => {
                    cx.keep(&k, ev.clone());
                }
                Kind::Symlink(_) => crate::trace::kit::add_evidence(
                    cx.out.symlinks.entry(k).or_default(),
                    ev.clone(),
                ),
                _ => {}
            }
        }
    }
    Ok(())
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
}

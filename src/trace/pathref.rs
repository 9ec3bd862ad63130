//! Path references: absolute paths that exist in the image and are named by the image config
//! (Entrypoint, Cmd, `--opt=/path` forms, Env values), by the read-only data of a kept ELF
//! object (a compiled-in `/etc/nginx/nginx.conf`), or by a kept text file (scripts,
//! configuration); plus the include directives of configuration files ([`super::config`]).
//! Kept recursively: what a kept file names is read in turn.
//!
//! Bounds and exclusions: a directory is kept whole only when it holds at most
//! [`MAX_DIR_BYTES`] (otherwise a warning names it) and is not a system directory (`/etc`,
//! `/usr/lib`, …); nothing under `/proc`, `/sys`, `/dev`; secrets are never kept because a
//! string names them ([`is_secret`]); a shell is kept only when something runs it, never for
//! its name; the C library and the dynamic loader are not read for strings (the libc rule knows
//! what they read), nor are trees a language runtime answers for.

use std::collections::HashSet;

use super::kit::{
    Cx, Evidence, MAX_DIR_BYTES, MAX_REFS_PER_FILE, Rule, Why, Work, is_secret, is_system_dir,
};
use super::{config, shell::SHELLS};
use crate::error::Result;
use crate::rootfs::{Kind, ResolveError, Resolved, display};

/// The install prefix of a program or library: the directory above its `bin`, `sbin`,
/// `libexec` or `lib` (and multiarch) directory (`/usr/bin/git` → `/usr`).
fn install_prefix(path: &str) -> String {
    let mut c: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    c.pop();
    if c.last().is_some_and(|l| l.contains("-linux-")) {
        c.pop();
    }
    if c.last()
        .is_some_and(|l| matches!(*l, "bin" | "sbin" | "libexec" | "lib" | "lib64" | "lib32"))
    {
        c.pop();
    }
    format!("/{}", c.join("/"))
}

/// Whether `dir` is a program's own data: a distinctive name in the program's path is also in
/// the directory's (`/usr/lib/postgresql/15/bin/initdb` and `/usr/share/postgresql/15`,
/// `/usr/bin/git` and `/usr/lib/git-core`).
fn own_dir(program: &str, dir: &str) -> bool {
    fn tokens(p: &str) -> Vec<String> {
        p.split('/')
            .flat_map(|c| c.split(['-', '_', '.']))
            .map(|t| t.to_ascii_lowercase())
            .filter(|t| t.len() >= 3 && !t.starts_with(|c: char| c.is_ascii_digit()))
            .filter(|t| {
                !matches!(
                    t.as_str(),
                    "usr"
                        | "local"
                        | "lib"
                        | "lib32"
                        | "lib64"
                        | "libexec"
                        | "bin"
                        | "sbin"
                        | "share"
                        | "etc"
                        | "var"
                        | "opt"
                        | "include"
                        | "src"
                        | "x86_64"
                        | "linux"
                        | "gnu"
                        | "aarch64"
                        | "data"
                        | "modules"
                        | "plugins"
                        | "core"
                        | "common"
                        | "conf"
                        | "config"
                        | "cache"
                        | "run"
                        | "tmp"
                        | "doc"
                        | "man"
                )
            })
            .collect()
    }
    let p = tokens(program);
    tokens(dir).iter().any(|t| p.contains(t))
}

/// A directory of plugins named by a reference is kept whole up to this many bytes.
pub const MAX_PLUGIN_DIR_BYTES: u64 = 64 << 20;

/// Whether most of a directory's bytes are shared objects (`*.so*`, with their libtool
/// `*.la`): a plugin directory.
fn is_plugin_dir(cx: &Cx, dir: &str) -> bool {
    let (mut so, mut all) = (0u64, 0u64);
    for (k, n) in cx.fs.subtree(dir) {
        if let Kind::File { size, .. } = n.kind {
            all += size;
            let base = k.rsplit('/').next().unwrap_or(k);
            if base.contains(".so") || base.ends_with(".la") {
                so += size;
            }
        }
    }
    all > 0 && so * 10 >= all * 8
}

/// References read from one file.

#[derive(Default)]
pub(crate) struct PathRefs {
    scanned: HashSet<String>,
}

/// Libraries whose strings are not read: the C library and loader (the libc rule), and the
/// libraries a feature rule handles with knowledge of what they read.
fn not_scanned(soname: Option<&str>, path: &str, interp_of_libc: bool) -> bool {
    if interp_of_libc {
        return true;
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = soname.unwrap_or(base);
    name.starts_with("libc.so")
        || name.starts_with("ld-linux")
        || name.starts_with("ld64.so")
        || name.starts_with("ld-musl")
        || name.starts_with("libc.musl")
        || name.starts_with("libcrypto.so")
        || name.starts_with("libssl.so")
        || name.starts_with("libsasl2.so")
}

impl Rule for PathRefs {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        let argv = cx.run.argv();
        for (i, a) in argv.iter().enumerate().skip(1) {
            for t in tokens(a) {
                reference(
                    cx,
                    t,
                    None,
                    &format!("named by the image config (argument {i}: {a})"),
                    0,
                );
            }
        }
        for kv in cx.run.env.clone() {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            if k == "PATH" || k == "LD_LIBRARY_PATH" {
                continue; // search paths: what is found through them is kept when used
            }
            for t in tokens(v) {
                reference(cx, t, None, &format!("named by the image's Env {k}"), 0);
            }
        }
        Ok(())
    }

    fn wanted(&mut self, cx: &mut Cx, work: &[Work]) -> Result<Vec<String>> {
        Ok(work
            .iter()
            .filter_map(|w| match w {
                Work::File(p) if !cx.is_claimed(p) && !only_inside(cx, p) => Some(p.clone()),
                _ => None,
            })
            .collect())
    }

    fn file(&mut self, cx: &mut Cx, path: &str) -> Result<()> {
        // ELF files are read for strings as objects, once loaded. A file kept only because
        // its directory was kept whole is data: what it names is not followed (a directory of
        // unit files or of available-but-disabled modules names much that never runs).
        let ev = cx.evidence_of(path);
        if only_inside(cx, path)
            || cx.fs.get(path).map_or(0, |n| n.size()) > super::kit::MAX_TEXT_BYTES
            || cx.elf(path)?.is_some()
            || !self.scanned.insert(path.to_string())
        {
            return Ok(());
        }
        let Some(text) = cx.text(path)? else {
            return Ok(());
        };
        // A script a configuration or program names by path is run by it (lighttpd's
        // `include_shell`, a helper a daemon execs): trace it as a program.
        // (A string in a binary is too weak: that script is withheld, see `reference`.)
        let named = ev.iter().any(|e| {
            e.within.is_none()
                && matches!(e.kind, Why::PathReference | Why::ConfigInclude)
                && e.from.as_deref().is_none_or(|f| {
                    let f = f.trim_start_matches('/');
                    cx.ld.object_at(f).is_none() && super::active::is_active(cx, f)
                })
        });
        if named
            && text.starts_with("#!")
            && cx.fs.get(path).is_some_and(|n| n.mode & 0o111 != 0)
            && !cx.out.programs.contains(path)
        {
            let from = ev.iter().find_map(|e| e.from.clone());
            cx.exec(
                vec![display(path)],
                vec![],
                vec![],
                1,
                Evidence::new(
                    Why::Command,
                    from.as_deref(),
                    format!(
                        "an executable script named in {}",
                        from.as_deref().unwrap_or("the image config")
                    ),
                ),
                false,
            )?;
        }
        scan_text(cx, path, &text);
        config::follow(cx, path, &text)?;
        Ok(())
    }

    fn object(&mut self, cx: &mut Cx, idx: usize) -> Result<()> {
        let o = cx.out.objects[idx].clone();
        if cx.is_claimed(&o.path) || !self.scanned.insert(o.path.clone()) {
            return Ok(());
        }
        let is_libc_interp = matches!(&cx.out.libc, Some(super::kit::Libc::Musl { interpreter }) if *interpreter == o.path)
            || matches!(&cx.out.libc, Some(super::kit::Libc::Glibc { path, .. }) if *path == o.path);
        if not_scanned(o.facts.soname.as_deref(), &o.path, is_libc_interp) {
            return Ok(());
        }
        // A static program carries its libc inside: its libc's paths are the libc rule's.
        let from = display(&o.path);
        let detail = format!("named in {from}");
        let prefix = install_prefix(&o.path);
        for s in o.facts.strings.iter().take(MAX_REFS_PER_FILE) {
            if s.starts_with('/') {
                reference(cx, s, Some(&o.path), &detail, 0);
            } else {
                // Relative to the install prefix (`share/git-core/templates` in /usr/bin/git).
                let detail = format!("named in {from} (relative to {prefix})");
                reference(cx, &super::kit::join(&prefix, s), Some(&o.path), &detail, 0);
            }
        }
        Ok(())
    }
}

/// A file kept only because its directory was kept whole: data, not read for what it names.
fn only_inside(cx: &Cx, path: &str) -> bool {
    let ev = cx.evidence_of(path);
    !ev.is_empty()
        && ev.iter().all(|e| {
            // A directory the image config names (`-f /etc/haproxy/conf.d`) is read by the
            // program as a whole: its files count as named.
            e.within.is_some()
                && e.from.is_some()
                && !matches!(e.kind, Why::AppDir | Why::KeepFlag | Why::ConfigInclude)
        })
}

/// Path-like tokens of a text: split at whitespace, quotes, `=`, `:`, `;`, `,` and brackets;
/// tokens with variables, formats or globs are left to the rules that understand them.
pub(crate) fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\''
                    | '='
                    | ':'
                    | ';'
                    | ','
                    | '('
                    | ')'
                    | '<'
                    | '>'
                    | '['
                    | ']'
                    | '`'
                    | '|'
                    | '&'
            )
    })
    .map(|t| t.trim_end_matches(['.', '}', '{']))
    .filter(|t| t.len() >= 2 && t.starts_with('/') && !t.contains(['$', '*', '?', '%', '{', '\\']))
}

fn scan_text(cx: &mut Cx, path: &str, text: &str) {
    let from = display(path);
    let detail = format!("named in {from}");
    // A runtime's own library (Ruby's rbconfig.rb, Python's _sysconfigdata) names the build's
    // tools and helpers it may spawn: its references keep data, not programs.
    let library = cx.is_claimed(path);
    let mut n = 0;
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with('#') || l.starts_with("//") || l.starts_with(';') {
            continue;
        }
        for t in tokens(l) {
            n += 1;
            if n > MAX_REFS_PER_FILE {
                return;
            }
            if library
                && let Some(p) = clean(t)
                && let Ok(r) = cx.fs.resolve(&p, true)
                && let Some(node) = cx.fs.get(&r.path)
                && matches!(node.kind, Kind::File { .. })
                && node.mode & 0o111 != 0
                && !cx.out.files.contains_key(&r.path)
            {
                cx.drop_path(
                    &r.path,
                    format!("{detail}, a runtime library: a program it names is kept only when something runs it"),
                );
                continue;
            }
            reference(cx, t, Some(path), &detail, 0);
        }
    }
}

/// A tree too large to keep whole (a terminfo database, a dictionary collection): the entries
/// whose name is a word of the entrypoint's arguments or environment (`infocmp kitty`,
/// `TERM=xterm`, `-d en_GB`) are what the program looks up in it. True when some were kept.
fn keep_named_entries(
    cx: &mut Cx,
    dir: &str,
    links: &[String],
    from: Option<&str>,
    detail: &str,
) -> bool {
    let mut words: HashSet<String> = HashSet::new();
    for a in cx.out.argv.iter().skip(1) {
        words.insert(a.clone());
    }
    for kv in &cx.run.env {
        if let Some((_, v)) = kv.split_once('=') {
            words.insert(v.to_string());
        }
    }
    words.retain(|w| w.len() >= 2 && !w.contains('/') && !w.starts_with('-'));
    if words.is_empty() {
        return false;
    }
    let prefix = format!("{dir}/");
    let hits: Vec<String> = cx
        .fs
        .subtree(dir)
        .filter(|(_, n)| matches!(n.kind, Kind::File { .. } | Kind::Symlink(_)))
        .filter_map(|(k, _)| {
            let base = k.strip_prefix(&prefix)?.rsplit('/').next()?;
            let stem = base.split('.').next().unwrap_or(base);
            (words.contains(base) || words.contains(stem)).then(|| k.clone())
        })
        .take(64)
        .collect();
    if hits.is_empty() {
        return false;
    }
    cx.keep_links(links, dir);
    for h in hits {
        cx.keep_if_file(
            &display(&h),
            Evidence::new(
                Why::PathReference,
                from,
                format!("{detail} (too large to keep whole: the entry the entrypoint's arguments or environment name)"),
            ),
        );
    }
    true
}

/// Whether a canonical path is a shell (or busybox, which is one).
fn is_shell(canonical: &str) -> bool {
    let base = canonical.rsplit('/').next().unwrap_or(canonical);
    SHELLS.contains(&base) || base == "busybox"
}

/// Keep what an absolute path names, when it is in the image. `depth` bounds the search for
/// paths glued together without separators (Go's string data).
pub(crate) fn reference(cx: &mut Cx, raw: &str, from: Option<&str>, detail: &str, depth: usize) {
    let Some(p) = clean(raw) else { return };
    if p == "/"
        || ["/proc", "/sys", "/dev", "/tmp", "/run"]
            .iter()
            .any(|x| p == *x || p.starts_with(&format!("{x}/")))
    {
        return;
    }
    if is_secret(&p) {
        cx.drop_path(
            &p,
            format!("{detail}, but it may hold secrets: never kept because a string names it"),
        );
        return;
    }
    let ev = Evidence::new(Why::PathReference, from, detail);
    match cx.fs.resolve(&p, true) {
        Ok(r) => match cx.fs.get(&r.path).map(|n| n.kind.clone()) {
            Some(Kind::File { .. }) => reference_file(cx, &r, from, detail, ev),
            Some(Kind::Dir) => reference_dir(cx, &r, from, detail, ev),
            _ => {}
        },
        Err(ResolveError::NotFound | ResolveError::NotADirectory(_)) => {
            // Go and other languages store strings back to back: the longest prefix that is a
            // regular file is a path, and what follows it may be another.
            if depth >= 8 {
                return;
            }
            let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
            for k in (1..comps.len()).rev() {
                let prefix = format!("/{}", comps[..k].join("/"));
                if let Ok(r) = cx.fs.resolve(&prefix, true) {
                    match cx.fs.get(&r.path).map(|n| &n.kind) {
                        Some(Kind::File { .. }) => {
                            reference(cx, &prefix, from, detail, depth + 1);
                            let rest = format!("/{}", comps[k..].join("/"));
                            reference(cx, &rest, from, detail, depth + 1);
                        }
                        // A file the program makes in its own directory (a log, a pid file,
                        // a socket): the directory is kept, empty.
                        Some(Kind::Dir)
                            if k + 1 == comps.len()
                                && !is_system_dir(&r.path)
                                && !cx.is_claimed(&r.path) =>
                        {
                            cx.keep_links(&r.symlinks, &r.path);
                            cx.keep(
                                &r.path,
                                Evidence::new(
                                    Why::PathReference,
                                    from,
                                    format!("directory of {p}, {detail}"),
                                ),
                            );
                        }
                        _ => {}
                    }
                    return;
                }
            }
        }
        Err(_) => {}
    }
}

/// [`reference`] to a regular file: kept, unless it is claimed, a shell nothing runs, or a
/// program only weak evidence names (withheld, or run when a related package's program).
fn reference_file(cx: &mut Cx, r: &Resolved, from: Option<&str>, detail: &str, ev: Evidence) {
    let kept = cx.out.files.contains_key(&r.path);
    if !kept && cx.is_claimed(&r.path) {
        return;
    }
    if !kept && is_shell(&r.path) {
        cx.drop_path(
            &r.path,
            format!("{detail}; a shell is kept only when something runs it"),
        );
        return;
    }
    // A string in a binary, or a path in a text that is not active configuration
    // (a README, an example, a package's default config the entrypoint does not
    // load), is weak evidence: it never brings a risky program (an interpreter, a
    // network tool, …), a script (which brings its interpreter) or another program.
    let in_binary = from.is_some_and(|f| cx.ld.object_at(f).is_some());
    if !kept
        && (in_binary || from.is_some_and(|f| !super::active::is_active(cx, f)))
        && cx.fs.get(&r.path).is_some_and(|n| n.mode & 0o111 != 0)
    {
        let risky = super::risky::withheld_unless_strong(cx, &r.path)
            .unwrap_or(Some("a file whose contents cannot be read"));
        let program = risky.is_none() && is_program(cx, &r.path);
        if program
            && in_binary
            && let Some(f) = from
            && super::helpers::runs_related(cx, f, &r.path)
        {
            // It runs programs and names one of a related package by path (calendar
            // runs `/usr/bin/cpp` of the `cpp` it depends on): a program it runs.
            cx.keep_links(&r.symlinks, &r.path);
            let _ = cx.exec(
                vec![display(&r.path)],
                vec![],
                vec![],
                1,
                Evidence::new(
                    Why::Command,
                    Some(f),
                    format!(
                        "run by path: {} runs programs and names {} (a program of a related package)",
                        display(f),
                        display(&r.path)
                    ),
                ),
                false,
            );
            return;
        }
        if let Some(what) = risky.or(program.then_some("a program")) {
            let how = if in_binary {
                "a string in a binary"
            } else {
                "a text that is not an active configuration"
            };
            cx.withhold(
                &r.path,
                format!(
                    "{detail} ({how}) but it is {what}: kept only when the entrypoint, a script or the active configuration runs it (--keep {} restores it)",
                    display(&r.path)
                ),
            );
            return;
        }
    }
    cx.keep_links(&r.symlinks, &r.path);
    cx.keep(&r.path, ev);
}

/// [`reference`] to a directory: kept whole within the bounds (larger ones for plugins and a
/// program's own data), or only the plugins its configuration names, or the entries named.
fn reference_dir(cx: &mut Cx, r: &Resolved, from: Option<&str>, detail: &str, ev: Evidence) {
    if cx.is_claimed(&r.path) || cx.out.files.contains_key(&r.path) {
        return;
    }
    if is_system_dir(&r.path) {
        cx.drop_path(
            &r.path,
            format!("{detail}; a system directory is never kept whole"),
        );
        return;
    }
    if let Some(why) = super::packages::skipped_tree(&r.path) {
        cx.drop_path(
            &r.path,
            format!("{detail}; {why} is never kept whole because a string names it"),
        );
        return;
    }
    let bytes = cx.tree_bytes(&r.path, MAX_DIR_BYTES);
    // A directory of plugins (shared objects a program loads by name, from its
    // input or configuration: ImageMagick's coders, PHP's extensions, PostgreSQL's
    // libraries) is kept whole up to a larger bound: which one is loaded cannot be
    // known statically.
    let plugins = is_plugin_dir(cx, &r.path);
    if plugins
        && let Some(f) = from
        && let Some((chosen, conf)) = super::plugins::named_by_config(cx, f, &r.path)
    {
        for p in chosen {
            if let Ok(pr) = cx.fs.resolve(&p, true) {
                cx.keep_links(&pr.symlinks, &pr.path);
                cx.keep(
                    &pr.path,
                    Evidence::new(
                        Why::PathReference,
                        from,
                        format!(
                            "{detail}: a plugin of {} that its configuration ({conf}) names",
                            display(&r.path)
                        ),
                    ),
                );
            }
        }
        cx.drop_path(
            &r.path,
            format!("{detail}; only the plugins its configuration ({conf}) names are kept"),
        );
        return;
    }
    let own = from.is_some_and(|f| cx.out.programs.contains(f) && own_dir(f, &r.path));
    if bytes > MAX_DIR_BYTES
        && (plugins || own)
        && cx.tree_bytes(&r.path, MAX_PLUGIN_DIR_BYTES) <= MAX_PLUGIN_DIR_BYTES
    {
        cx.keep_links(&r.symlinks, &r.path);
        let what = if plugins {
            "a directory of plugins, loaded by name at run time"
        } else {
            "the program's own data directory"
        };
        let ev = Evidence::new(Why::PathReference, from, format!("{detail} ({what})"));
        cx.keep_tree(&r.path, &ev);
        return;
    }
    if bytes > MAX_DIR_BYTES && keep_named_entries(cx, &r.path, &r.symlinks, from, detail) {
        return;
    }
    if bytes > MAX_DIR_BYTES {
        let what = from
            .map(display)
            .unwrap_or_else(|| "the image config".into());
        cx.question(format!(
            "{} (named in {what}) holds more than {} MiB: not kept whole; keep what the program needs with --keep",
            display(&r.path),
            MAX_DIR_BYTES >> 20
        ));
        cx.drop_path(&r.path, format!("{detail}, but it holds more than 2 MiB"));
        return;
    }
    cx.keep_links(&r.symlinks, &r.path);
    cx.keep_tree(&r.path, &ev);
}

/// Normalise a reference: absolute, no `//`, no trailing `/` or `/.`.
fn clean(raw: &str) -> Option<String> {
    let raw = raw.trim_end_matches(['.', ',']);
    if !raw.starts_with('/') || raw.len() > 4096 {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whether `path` is an ELF program (it has a program interpreter and no soname), not a
/// shared object that happens to be executable.
fn is_program(cx: &mut Cx, path: &str) -> bool {
    cx.elf(path)
        .ok()
        .flatten()
        .is_some_and(|f| f.interpreter.is_some() && f.soname.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_config_lines() {
        let t: Vec<&str> = tokens("root /var/www/html; error_log /var/log/x.log;").collect();
        assert_eq!(t, vec!["/var/www/html", "/var/log/x.log"]);
        let t: Vec<&str> =
            tokens("--conf-path=/etc/nginx/nginx.conf PATH=/a:/b \"$HOME/x\" /x/*.conf").collect();
        assert_eq!(t, vec!["/etc/nginx/nginx.conf", "/a", "/b"]);
    }

    #[test]
    fn prefixes_and_own_directories() {
        assert_eq!(install_prefix("usr/bin/git"), "/usr");
        assert_eq!(
            install_prefix("usr/lib/x86_64-linux-gnu/libfoo.so.1"),
            "/usr"
        );
        assert_eq!(install_prefix("opt/app/bin/app"), "/opt/app");
        assert!(own_dir(
            "usr/lib/postgresql/15/bin/initdb",
            "usr/share/postgresql/15"
        ));
        assert!(own_dir("usr/bin/git", "usr/lib/git-core"));
        assert!(!own_dir("usr/bin/git", "usr/share/zoneinfo"));
        assert!(!own_dir("usr/sbin/nginx", "usr/lib/x86_64-linux-gnu/gconv"));
    }

    #[test]
    fn secrets_and_system_dirs() {
        for s in [
            "/etc/shadow",
            "/etc/ssl/private/x.pem",
            "/root/.ssh/id_rsa",
            "/home/u/.netrc",
            "/etc/ssh/ssh_host_ed25519_key",
            "/srv/tls.key",
        ] {
            assert!(is_secret(s), "{s}");
        }
        for s in [
            "/etc/passwd",
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/nginx/nginx.conf",
        ] {
            assert!(!is_secret(s), "{s}");
        }
        for d in [
            "/",
            "/etc",
            "/usr/lib",
            "usr/lib/x86_64-linux-gnu",
            "/usr/share",
            "/opt",
            "/usr/lib/x86_64-linux-gnu/gconv",
            "/usr/lib64/gconv",
        ] {
            assert!(is_system_dir(d), "{d}");
        }
        for d in ["/etc/nginx", "/usr/share/nginx", "/opt/app", "/app"] {
            assert!(!is_system_dir(d), "{d}");
        }
        assert_eq!(clean("/etc//nginx/./x/"), Some("/etc/nginx/x".into()));
    }
}

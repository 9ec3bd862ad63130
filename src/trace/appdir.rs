//! The application's own files: the tree of an application root, which is the `WorkingDir`
//! when it is an application directory (not `/`, not a system directory), and the root of the
//! entrypoint, of the script an interpreter runs or of a file the entrypoint is given by
//! absolute path (what it includes sits beside it) when it lives under `/app`, `/opt/NAME`,
//! `/srv/NAME`, `/usr/src/app`, `/usr/local/lib/NAME`, `/home/NAME`, `/workspace` or `/code`.
//! Kept whole up to [`MAX_APP_BYTES`] (else a warning), without the trees a language runtime
//! answers for and without version-control directories.

use super::kit::{Cx, Evidence, Rule, Why, under};
use super::kit::{is_secret, is_system_dir};
use crate::error::Result;
use crate::rootfs::{Kind, display};

/// An application root larger than this is not kept whole.
pub const MAX_APP_BYTES: u64 = 512 << 20;
const VCS: &[&str] = &[".git", ".hg", ".svn"];

#[derive(Default)]
pub(crate) struct AppDir {
    done: bool,
}

/// The application root a path lives in, by the conventions of container images.
fn app_root(p: &str) -> Option<String> {
    let c: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let n = match c.as_slice() {
        ["app" | "workspace" | "code", _, ..] => 1,
        ["opt" | "srv" | "home", _, _, ..] => 2,
        ["usr", "src", "app", _, ..] => 3,
        ["usr", "local", "lib", name, _, ..]
            if !name.starts_with("python")
                && *name != "node_modules"
                && !name.contains("-linux-") =>
        {
            4
        }
        _ => return None,
    };
    Some(c[..n].join("/"))
}

impl Rule for AppDir {
    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut roots: Vec<(String, String)> = Vec::new(); // (canonical root, why)
        let wd = cx.run.workdir.clone();
        if !wd.is_empty()
            && let Ok(r) = cx.fs.resolve(&wd, true)
            && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            && !is_system_dir(&r.path)
        {
            roots.push((r.path, format!("the WorkingDir {wd}")));
        }
        // The entrypoint and the scripts run by interpreters and shells.
        let mut scripts: Vec<String> = vec![cx.out.entrypoint.clone()];
        for (p, ev) in &cx.out.files {
            if ev.iter().any(|e| {
                (e.kind == Why::Runtime || e.kind == Why::ScriptCommand)
                    && e.detail.contains("script run by")
            }) {
                scripts.push(p.clone());
            }
        }
        // Files the entrypoint is given by absolute path (`esbuild /app/src/main.ts`): what
        // they include (`./greet`, a Sass partial) sits beside them.
        for a in cx.out.argv.iter().skip(1) {
            let p = a.split_once('=').map_or(a.as_str(), |(_, v)| v);
            if p.starts_with('/')
                && let Ok(r) = cx.fs.resolve(p, true)
                && cx.fs.get(&r.path).is_some()
            {
                scripts.push(r.path);
            }
        }
        for s in scripts {
            if let Some(root) = app_root(&s) {
                roots.push((
                    root,
                    format!("the application directory of {}", display(&s)),
                ));
            }
        }
        roots.sort();
        roots.dedup_by(|a, b| a.0 == b.0);
        for (root, why) in roots {
            if cx.is_claimed(&root) || is_system_dir(&root) {
                continue;
            }
            let claimed = cx.claimed.clone();
            let entries: Vec<(String, Kind, u64)> = cx
                .fs
                .subtree(&root)
                .filter(|(k, _)| !claimed.iter().any(|t| under(k, t)))
                .filter(|(k, _)| !k.split('/').any(|c| VCS.contains(&c)))
                .filter(|(k, _)| !is_secret(&display(k)))
                .map(|(k, n)| (k.clone(), n.kind.clone(), n.size()))
                .collect();
            let bytes: u64 = entries.iter().map(|e| e.2).sum();
            if bytes > MAX_APP_BYTES {
                cx.warn(format!(
                    "{} ({why}) holds {} MiB, more than {} MiB: not kept whole; keep what the application needs with --keep",
                    display(&root),
                    bytes >> 20,
                    MAX_APP_BYTES >> 20
                ));
                continue;
            }
            let ev = Evidence::new(Why::AppDir, None, why);
            cx.keep(&root, ev.clone());
            let files: Vec<String> = entries
                .iter()
                .filter(|e| matches!(e.1, Kind::File { .. }))
                .map(|e| e.0.clone())
                .collect();
            cx.contents.prefetch(cx.fs, &files)?;
            for (k, kind, _) in entries {
                match kind {
                    Kind::File { .. } | Kind::Dir => {
                        cx.keep(&k, ev.clone());
                    }
                    Kind::Symlink(_) => {
                        super::kit::add_evidence(
                            cx.out.symlinks.entry(k.clone()).or_default(),
                            ev.clone(),
                        );
                        if let Ok(t) = cx.fs.resolve(&k, true)
                            && matches!(
                                cx.fs.get(&t.path).map(|n| &n.kind),
                                Some(Kind::File { .. })
                            )
                        {
                            cx.keep_links(&t.symlinks, &t.path);
                            cx.keep(&t.path, ev.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::app_root;

    #[test]
    fn application_roots() {
        assert_eq!(app_root("app/main.py").as_deref(), Some("app"));
        assert_eq!(app_root("opt/tool/bin/x").as_deref(), Some("opt/tool"));
        assert_eq!(
            app_root("usr/src/app/index.js").as_deref(),
            Some("usr/src/app")
        );
        assert_eq!(
            app_root("usr/local/lib/myapp/run").as_deref(),
            Some("usr/local/lib/myapp")
        );
        assert_eq!(app_root("usr/local/lib/python3.12/os.py"), None);
        assert_eq!(app_root("usr/bin/jq"), None);
        assert_eq!(app_root("opt/x"), None);
    }
}

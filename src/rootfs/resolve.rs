//! Path lookups inside the virtual root, symlinks followed there.

use std::collections::HashMap;

use super::Rootfs;
use super::node::{Kind, Node, ResolveError, Resolved};

/// Symlinks followed while resolving one path (Linux's MAXSYMLINKS is 40).
const MAX_SYMLINKS: usize = 40;

impl Rootfs {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    /// Children paths of a directory (direct and indirect), in order.
    pub fn subtree<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty())
    }

    /// Resolve `path` (absolute, or relative to the root) inside the image. `follow_last`
    /// decides whether a symlink in the last component is followed.
    pub fn resolve(
        &self,
        path: &str,
        follow_last: bool,
    ) -> std::result::Result<Resolved, ResolveError> {
        let mut cur: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut symlinks = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if cur.pop().is_none() {
                    return Err(ResolveError::Escape {
                        link: symlinks.last().cloned().unwrap_or_default(),
                    });
                }
                continue;
            }
            cur.push(c);
            let here = cur.join("/");
            let last = todo.is_empty();
            match self.nodes.get(&here) {
                None => return Err(ResolveError::NotFound),
                Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) if !last || follow_last => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(ResolveError::Loop);
                    }
                    symlinks.push(here.clone());
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                        todo.push(t.to_string());
                    }
                }
                Some(n) if !last && !n.is_dir() && !matches!(n.kind, Kind::Symlink(_)) => {
                    return Err(ResolveError::NotADirectory(here));
                }
                Some(_) => {}
            }
        }
        Ok(Resolved {
            path: cur.join("/"),
            symlinks,
        })
    }

    /// [`Rootfs::resolve`]'s path, for many paths at once: each directory is resolved once
    /// and remembered in `dirs` (directory as listed → where it resolves, `None`: nowhere).
    /// The same answer as `resolve(path, follow_last).ok().map(|r| r.path)`, without walking
    /// `/usr/share/doc` again for each of its thousands of files.
    pub fn resolve_in(
        &self,
        path: &str,
        follow_last: bool,
        dirs: &mut HashMap<String, Option<String>>,
    ) -> Option<String> {
        let trimmed = path.trim_matches('/');
        let (parent, leaf) = match trimmed.rsplit_once('/') {
            Some((p, l)) => (p, l),
            None => ("", trimmed),
        };
        // Dots, doubled slashes: the slow path, which knows them.
        if leaf.is_empty()
            || leaf == "."
            || leaf == ".."
            || parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
                && !parent.is_empty()
        {
            return self.resolve(path, follow_last).ok().map(|r| r.path);
        }
        let dir = match dirs.get(parent) {
            Some(d) => d.clone(),
            None => {
                let d = if parent.is_empty() {
                    Some(String::new())
                } else {
                    self.resolve(parent, true)
                        .ok()
                        .map(|r| r.path)
                        .filter(|p| self.nodes.get(p).is_some_and(Node::is_dir))
                };
                dirs.insert(parent.to_string(), d.clone());
                d
            }
        }?;
        let here = if dir.is_empty() {
            leaf.to_string()
        } else {
            format!("{dir}/{leaf}")
        };
        match &self.nodes.get(&here)?.kind {
            Kind::Symlink(_) if follow_last => self.resolve(&here, true).ok().map(|r| r.path),
            _ => Some(here),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::{merged, tar_of};

    /// `resolve_in` answers as `resolve` does, for every kind of path, with a shared memo.
    #[test]
    fn resolve_in_agrees_with_resolve() {
        let l = tar_of(&[
            ("usr/lib/x/libz.so.1.2", "f:z"),
            ("usr/lib/x/libz.so.1", "l:libz.so.1.2"),
            ("usr/share/doc/a/copyright", "f:c"),
            ("lib", "l:usr/lib"),
            ("lib64", "l:/usr/lib/x/../x"),
            ("loop1", "l:loop2"),
            ("loop2", "l:loop1"),
            ("esc", "l:../../../etc/passwd"),
            ("d", "l:usr/share/doc"),
            ("f", "f:"),
        ]);
        let fs = merged(&[l]);
        let paths = [
            "/lib/x/libz.so.1",
            "lib/x/libz.so.1.2",
            "/lib64/libz.so.1",
            "/usr/lib/x/libz.so.1",
            "/d/a/copyright",
            "/d/a",
            "/d",
            "/lib",
            "/lib/",
            "/loop1",
            "/loop1/x",
            "/esc",
            "/f",
            "/f/x",
            "/missing/x",
            "/usr/lib/../lib/x/libz.so.1",
            "//usr//lib/x/libz.so.1",
            "/usr/lib/x/.",
            "/",
            "",
        ];
        let mut dirs = HashMap::new();
        for _ in 0..2 {
            for p in paths {
                for follow in [true, false] {
                    assert_eq!(
                        fs.resolve_in(p, follow, &mut dirs),
                        fs.resolve(p, follow).ok().map(|r| r.path),
                        "{p} follow={follow}"
                    );
                }
            }
        }
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_root() {
        let l = tar_of(&[
            ("usr/lib/x/libz.so.1.2", "f:z"),
            ("usr/lib/x/libz.so.1", "l:libz.so.1.2"),
            ("lib", "l:usr/lib"),
            ("lib64", "l:/usr/lib/x/../x"),
            ("loop1", "l:loop2"),
            ("loop2", "l:loop1"),
            ("esc", "l:../../../etc/passwd"),
            ("f", "f:"),
        ]);
        let fs = merged(&[l]);
        let r = fs.resolve("/lib/x/libz.so.1", true).unwrap();
        assert_eq!(r.path, "usr/lib/x/libz.so.1.2");
        assert_eq!(r.symlinks, vec!["lib", "usr/lib/x/libz.so.1"]);
        let r = fs.resolve("/lib64/libz.so.1", false).unwrap();
        assert_eq!(r.path, "usr/lib/x/libz.so.1");
        assert_eq!(fs.resolve("/loop1", true), Err(ResolveError::Loop));
        assert!(matches!(
            fs.resolve("/esc", true),
            Err(ResolveError::Escape { .. })
        ));
        assert_eq!(fs.resolve("/nope", true), Err(ResolveError::NotFound));
        assert!(matches!(
            fs.resolve("/f/x", true),
            Err(ResolveError::NotADirectory(_))
        ));
    }
}

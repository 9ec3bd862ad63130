//! Path lookups inside the virtual root, symlinks followed there.

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::{merged, tar_of};

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

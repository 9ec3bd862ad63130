//! Plugins chosen by a configuration: a library names its plugin directory and its
//! configuration (libpam: `/usr/lib/…/security` and `/etc/pam.d`, `/etc/pam.conf`); when that
//! configuration names plugins by file name (`auth required pam_unix.so`), those are what the
//! library loads, not every plugin of the directory (`pam_userdb.so` and its Berkeley DB).
//! A directory whose library names no configuration, or whose configuration names none of its
//! plugins, is kept whole as before (which plugin loads is then decided at run time).

use std::collections::BTreeSet;

use super::kit::Cx;
use crate::rootfs::Kind;

/// Configuration files read per library, and bytes read in all.
const MAX_CONFIG_FILES: usize = 400;
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The plugins of `dir` (canonical) that the configuration named by the object `from` names,
/// with that configuration's path; `None` when no configuration names any.
pub(crate) fn named_by_config(cx: &mut Cx, from: &str, dir: &str) -> Option<(Vec<String>, String)> {
    let idx = cx.ld.object_at(from)?;
    let strings: Vec<String> = cx.out.objects[idx]
        .facts
        .strings
        .iter()
        .filter(|s| s.starts_with("/etc/") && s.len() > 5)
        .cloned()
        .collect();
    // The configuration files: each named file, and the files directly in each named directory.
    let mut configs: BTreeSet<String> = BTreeSet::new();
    let mut named: Vec<String> = Vec::new();
    for s in strings {
        let Ok(r) = cx.fs.resolve(&s, true) else {
            continue;
        };
        match cx.fs.get(&r.path).map(|n| &n.kind) {
            Some(Kind::File { .. }) => {
                configs.insert(r.path.clone());
            }
            Some(Kind::Dir) => {
                let files: Vec<String> = cx
                    .fs
                    .subtree(&r.path)
                    .filter(|(k, n)| {
                        matches!(n.kind, Kind::File { .. }) && !k[r.path.len() + 1..].contains('/')
                    })
                    .map(|(k, _)| k.clone())
                    .take(MAX_CONFIG_FILES)
                    .collect();
                configs.extend(files);
            }
            _ => continue,
        }
        named.push(s);
        if configs.len() > MAX_CONFIG_FILES {
            return None;
        }
    }
    if configs.is_empty() {
        return None;
    }
    let plugins: Vec<(String, String)> = cx
        .fs
        .subtree(dir)
        .filter(|(_, n)| matches!(n.kind, Kind::File { .. } | Kind::Symlink(_)))
        .map(|(k, _)| (k.clone(), k.rsplit('/').next().unwrap_or(k).to_string()))
        .filter(|(_, base)| base.contains(".so"))
        .collect();
    let list: Vec<String> = configs.into_iter().collect();
    cx.contents.prefetch(cx.fs, &list).ok()?;
    let mut words: BTreeSet<String> = BTreeSet::new();
    let mut bytes = 0u64;
    for c in &list {
        bytes += cx.fs.get(c).map_or(0, |n| n.size());
        if bytes > MAX_CONFIG_BYTES {
            return None;
        }
        let Ok(Some(text)) = cx.text(c) else { continue };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            words.extend(
                line.split(|ch: char| ch.is_whitespace() || matches!(ch, '=' | ',' | '"' | '\''))
                    .map(|w| w.rsplit('/').next().unwrap_or(w).to_string()),
            );
        }
    }
    let chosen: Vec<String> = plugins
        .into_iter()
        .filter(|(_, base)| words.contains(base))
        .map(|(p, _)| p)
        .collect();
    (!chosen.is_empty()).then(|| (chosen, named.join(", ")))
}

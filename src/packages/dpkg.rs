//! dpkg: `/var/lib/dpkg/status` (or distroless' `status.d/NAME` stanzas), `info/NAME.list`,
//! `info/NAME.md5sums`, the `Conffiles` field, and `/var/lib/dpkg/diversions`.
//!
//! What a hardened image gets back is the layout distroless ships and scanners read:
//! `/var/lib/dpkg/status.d/NAME` holding the package's stanza and `status.d/NAME.md5sums` its
//! checksums, both named by the package name alone (distroless `PACKAGE_METADATA.md`; written
//! by rules_distroless `apt/private/dpkg_statusd.sh`). syft globs `**/lib/dpkg/status.d/*`
//! (`syft/pkg/cataloger/debian/cataloger.go`) and finds `NAME.md5sums` beside the stanza
//! (`package.go`: `NAME:ARCH.md5sums`, then `NAME.md5sums`); Trivy reads every file of
//! `var/lib/dpkg/status.d/` and parses `*.md5sums` as file lists whose lines must be
//! `MD5  PATH` (`pkg/fanal/analyzer/pkg/dpkg/dpkg.go`), and identifies Debian by
//! `/etc/debian_version`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{MAX_DB_BYTES, Package, Reader};
use crate::error::Result;
use crate::rootfs::{Kind, Rootfs};

pub const STATUS: &str = "var/lib/dpkg/status";
pub const STATUS_D: &str = "var/lib/dpkg/status.d";
const INFO: &str = "var/lib/dpkg/info";
const DIVERSIONS: &str = "var/lib/dpkg/diversions";

/// A stanza's fields in order: (name, the field's full text without the final newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza(pub Vec<(String, String)>);

impl Stanza {
    pub fn parse(text: &str) -> Stanza {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if (line.starts_with(' ') || line.starts_with('\t')) && !fields.is_empty() {
                let last = fields.last_mut().expect("checked");
                last.1.push('\n');
                last.1.push_str(line);
            } else if let Some((k, _)) = line.split_once(':') {
                fields.push((k.trim().to_string(), line.to_string()));
            }
        }
        Stanza(fields)
    }

    /// A field's value (continuation lines joined with newlines, first line trimmed).
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, text)| {
                let v = text.split_once(':').map_or("", |(_, v)| v);
                v.trim_start_matches([' ', '\t']).to_string()
            })
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        for (_, t) in &self.0 {
            s.push_str(t);
            s.push('\n');
        }
        s
    }
}

/// Split a file of stanzas on blank lines.
pub fn stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(Stanza::parse(&cur));
                cur.clear();
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        out.push(Stanza::parse(&cur));
    }
    out
}

/// `libc6 (>= 2.34), zlib1g | libz1, python3:any` → [[libc6], [zlib1g, libz1], [python3]].
pub fn relations(v: &str) -> Vec<Vec<String>> {
    v.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt
                        .trim()
                        .split([' ', '(', '['])
                        .next()
                        .unwrap_or("")
                        .split(':')
                        .next()
                        .unwrap_or("");
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn is_file(fs: &Rootfs, p: &str) -> bool {
    matches!(fs.get(p).map(|n| &n.kind), Some(Kind::File { .. }))
}

fn read_text<R: Reader + ?Sized>(fs: &Rootfs, contents: &mut R, p: &str) -> Result<Option<String>> {
    if !is_file(fs, p) {
        return Ok(None);
    }
    let b = contents.read_file(fs, p, MAX_DB_BYTES)?;
    Ok(Some(String::from_utf8_lossy(&b).into_owned()))
}

/// The canonical path of a database file, when it is a regular file of the image.
fn db_file(fs: &Rootfs, p: &str) -> Option<String> {
    let r = fs.resolve(p, true).ok()?;
    is_file(fs, &r.path).then_some(r.path)
}

/// `info/NAME:ARCH.EXT` or `info/NAME.EXT`, whichever the image has.
fn info_file(fs: &Rootfs, info: &str, name: &str, arch: &str, ext: &str) -> Option<String> {
    [
        format!("{info}/{name}:{arch}.{ext}"),
        format!("{info}/{name}.{ext}"),
    ]
    .into_iter()
    .find(|p| is_file(fs, p))
}

/// The installed packages, or `None` when the image has no dpkg database.
pub fn read<R: Reader + ?Sized>(fs: &Rootfs, contents: &mut R) -> Result<Option<Vec<Package>>> {
    let status = db_file(fs, STATUS);
    let status_d: Vec<String> = match fs.resolve(STATUS_D, true) {
        Ok(r) if fs.get(&r.path).is_some_and(|n| n.is_dir()) => fs
            .subtree(&r.path)
            .filter(|(k, n)| {
                let base = k.rsplit('/').next().unwrap_or(k);
                matches!(n.kind, Kind::File { .. })
                    && k.matches('/').count() == r.path.matches('/').count() + 1
                    && !base.starts_with('.')
                    && !base.contains(".md5sums")
            })
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    if status.is_none() && status_d.is_empty() {
        return Ok(None);
    }
    let info = fs
        .resolve(INFO, true)
        .map(|r| r.path)
        .unwrap_or_else(|_| INFO.to_string());
    // Everything read below, in one pass over the layers.
    let mut wanted: Vec<String> = status.iter().cloned().chain(status_d.clone()).collect();
    wanted.extend(
        fs.subtree(&info)
            .filter(|(k, n)| {
                matches!(n.kind, Kind::File { .. })
                    && (k.ends_with(".list") || k.ends_with(".md5sums"))
            })
            .map(|(k, _)| k.clone()),
    );
    wanted.extend(db_file(fs, DIVERSIONS));
    contents.prefetch_files(fs, &wanted)?;

    let mut records: Vec<(String, Stanza)> = Vec::new();
    if let Some(s) = &status
        && let Some(text) = read_text(fs, contents, s)?
    {
        records.extend(stanzas(&text).into_iter().map(|st| (s.clone(), st)));
    }
    for f in &status_d {
        if let Some(text) = read_text(fs, contents, f)? {
            records.extend(stanzas(&text).into_iter().map(|st| (f.clone(), st)));
        }
    }
    // Diversions: (path, diverted to, by package); a path another package lists is where the
    // diversion put it.
    let mut diversions: HashMap<String, (String, String)> = HashMap::new();
    if let Some(d) = db_file(fs, DIVERSIONS)
        && let Some(text) = read_text(fs, contents, &d)?
    {
        let lines: Vec<&str> = text.lines().collect();
        for t in lines.chunks(3) {
            if let [from, to, by] = t {
                diversions.insert(from.to_string(), (to.to_string(), by.to_string()));
            }
        }
    }

    let mut out = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (origin, st) in records {
        let Some(name) = st.get("Package") else {
            continue;
        };
        // `install ok installed`; distroless' stanzas have no Status at all.
        if let Some(status) = st.get("Status")
            && !status.ends_with(" installed")
        {
            continue;
        }
        let arch = st.get("Architecture").unwrap_or_default();
        if !seen.insert((name.clone(), arch.clone())) {
            continue;
        }
        let mut files = Vec::new();
        let from_status_d = status.as_deref() != Some(origin.as_str());
        if let Some(list) = info_file(fs, &info, &name, &arch, "list")
            && let Some(text) = read_text(fs, contents, &list)?
        {
            files.extend(
                text.lines()
                    .filter(|l| l.starts_with('/'))
                    .map(str::to_string),
            );
        } else {
            // distroless: `status.d/NAME.md5sums` (paths without the leading slash) is the
            // only file list there is.
            let md5 = if from_status_d {
                db_file(fs, &format!("{origin}.md5sums"))
            } else {
                info_file(fs, &info, &name, &arch, "md5sums")
            };
            if let Some(m) = md5
                && let Some(text) = read_text(fs, contents, &m)?
            {
                files.extend(md5sum_lines(&text).map(|(_, p)| format!("/{p}")));
            }
        }
        for f in files.iter_mut() {
            if let Some((to, by)) = diversions.get(f.as_str())
                && *by != name
            {
                *f = to.clone();
            }
        }
        let conffiles = st
            .get("Conffiles")
            .map(|v| {
                v.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut depends = Vec::new();
        for k in ["Pre-Depends", "Depends"] {
            if let Some(v) = st.get(k) {
                depends.extend(relations(&v));
            }
        }
        let provides = st
            .get("Provides")
            .map(|v| relations(&v).into_iter().flatten().collect())
            .unwrap_or_default();
        let source = st
            .get("Source")
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .filter(|s| *s != name);
        out.push(Package {
            version: st.get("Version").unwrap_or_default(),
            arch,
            source,
            files,
            conffiles,
            depends,
            provides,
            essential: st
                .get("Essential")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            record: st.text(),
            origin,
            name,
        });
    }
    Ok(Some(out))
}

/// `md5  path` lines of an md5sums file.
fn md5sum_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let (sum, path) = l.split_once(char::is_whitespace)?;
        let path = path.trim_start();
        (sum.len() == 32 && !path.is_empty()).then_some((sum, path.trim_start_matches('/')))
    })
}

/// The package's stanza with `Conffiles` limited to the kept ones (canonical paths in `kept`).
pub fn trimmed_stanza(fs: &Rootfs, pkg: &Package, kept: &BTreeSet<String>) -> String {
    let mut st = Stanza::parse(&pkg.record);
    st.0.retain_mut(|(k, text)| {
        if !k.eq_ignore_ascii_case("Conffiles") {
            return true;
        }
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("Conffiles:").to_string();
        let keep: Vec<&str> = lines
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|p| fs.resolve(p, false).ok())
                    .is_some_and(|r| kept.contains(&r.path))
            })
            .collect();
        if keep.is_empty() {
            return false;
        }
        *text = std::iter::once(head.as_str())
            .chain(keep)
            .collect::<Vec<_>>()
            .join("\n");
        true
    });
    st.text()
}

/// The md5sums lines of the package's kept files, and the paths as listed (their symlinks,
/// `/bin` → `usr/bin` in a /usr-merged image, are kept so the listed paths stay valid).
pub fn trimmed_md5sums<R: Reader + ?Sized>(
    fs: &Rootfs,
    contents: &mut R,
    pkg: &Package,
    kept: &BTreeSet<String>,
    listed: &mut Vec<String>,
) -> Result<String> {
    let info = fs
        .resolve(INFO, true)
        .map(|r| r.path)
        .unwrap_or_else(|_| INFO.to_string());
    let src = info_file(fs, &info, &pkg.name, &pkg.arch, "md5sums")
        .or_else(|| db_file(fs, &format!("{}.md5sums", pkg.origin)));
    let Some(src) = src else {
        return Ok(String::new());
    };
    let Some(text) = read_text(fs, contents, &src)? else {
        return Ok(String::new());
    };
    let mut out = String::new();
    for (sum, p) in md5sum_lines(&text) {
        if fs
            .resolve(&format!("/{p}"), false)
            .is_ok_and(|r| kept.contains(&r.path))
        {
            out.push_str(sum);
            out.push_str("  ");
            out.push_str(p);
            out.push('\n');
            listed.push(format!("/{p}"));
        }
    }
    Ok(out)
}

/// The distroless-style database of the kept packages: `status.d/NAME` (the stanza) and
/// `status.d/NAME.md5sums`, by file name. Two packages of one name (multi-arch) are told apart
/// as `NAME_ARCH`. `listed` gets the paths the md5sums name.
pub fn write_status_d<R: Reader + ?Sized>(
    fs: &Rootfs,
    contents: &mut R,
    pkgs: &[&Package],
    kept: &BTreeSet<String>,
    listed: &mut Vec<String>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for p in pkgs {
        *count.entry(p.name.as_str()).or_default() += 1;
    }
    let mut out = BTreeMap::new();
    for p in pkgs {
        let file = if count[p.name.as_str()] > 1 {
            format!("{}_{}", p.name, p.arch)
        } else {
            p.name.clone()
        };
        out.insert(
            format!("{STATUS_D}/{file}"),
            trimmed_stanza(fs, p, kept).into_bytes(),
        );
        let md5 = trimmed_md5sums(fs, contents, p, kept, listed)?;
        if !md5.is_empty() {
            out.insert(format!("{STATUS_D}/{file}.md5sums"), md5.into_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_fields_and_relations() {
        let text = "Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u2\nSource: openssl (3.0.11-1)\nDepends: libc6 (>= 2.34), zlib1g | libz1, python3:any\nConffiles:\n /etc/a 0123\n /etc/b 4567 obsolete\n\nPackage: b\n";
        let s = stanzas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("version").as_deref(), Some("3.0.11-1~deb12u2"));
        assert_eq!(
            s[0].get("Conffiles").as_deref(),
            Some("\n /etc/a 0123\n /etc/b 4567 obsolete")
        );
        assert_eq!(
            relations(&s[0].get("Depends").unwrap()),
            vec![
                vec!["libc6".to_string()],
                vec!["zlib1g".into(), "libz1".into()],
                vec!["python3".into()]
            ]
        );
        // The text round-trips exactly.
        assert_eq!(s[0].text() + "\n" + &s[1].text(), text);
    }
}

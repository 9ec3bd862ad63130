//! apk (Alpine, Wolfi, Chainguard): `/lib/apk/db/installed`, one block of `K:value` lines per
//! package (`P` name, `V` version, `A` arch, `o` origin, `D` dependencies, `p` provides), its
//! files as `F:dir` followed by `R:name` lines (with `M`, `a`, `Z` attributes after them).
//!
//! What a hardened image gets back is the same file with the packages that keep a file, each
//! listing only its kept files (syft and Trivy read `lib/apk/db/installed`; syft needs the
//! `F` → `M` → `R` → `a` → `Z` order kept).

use std::collections::{BTreeMap, BTreeSet};

use super::{MAX_DB_BYTES, Package, Reader};
use crate::error::Result;
use crate::rootfs::{Kind, Rootfs};

pub const INSTALLED: &str = "lib/apk/db/installed";

/// `so:libc.musl-x86_64.so.1`, `cmd:curl=8.5.0-r0`, `musl>=1.2` → the name alone.
pub(crate) fn dep_name(d: &str) -> Option<String> {
    // `!name` is a conflict, not a dependency.
    let d = d.trim();
    if d.is_empty() || d.starts_with('!') {
        return None;
    }
    let end = d.find(['=', '<', '>', '~']).unwrap_or(d.len());
    Some(d[..end].to_string())
}

/// The installed packages, or `None` when the image has no apk database.
pub fn read<R: Reader + ?Sized>(fs: &Rootfs, contents: &mut R) -> Result<Option<Vec<Package>>> {
    let Ok(r) = fs.resolve(INSTALLED, true) else {
        return Ok(None);
    };
    if !matches!(fs.get(&r.path).map(|n| &n.kind), Some(Kind::File { .. })) {
        return Ok(None);
    }
    let bytes = contents.read_file(fs, &r.path, MAX_DB_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for block in blocks(&text) {
        let mut p = Package {
            origin: r.path.clone(),
            record: block.clone(),
            ..Default::default()
        };
        let mut dir = String::new();
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => p.name = v.to_string(),
                "V" => p.version = v.to_string(),
                "A" => p.arch = v.to_string(),
                "o" => p.source = Some(v.to_string()),
                "D" => p
                    .depends
                    .extend(v.split_whitespace().filter_map(dep_name).map(|n| vec![n])),
                "p" => p.provides.extend(v.split_whitespace().filter_map(dep_name)),
                "F" => {
                    dir = v.to_string();
                    p.files.push(format!("/{dir}"));
                }
                "R" => p.files.push(if dir.is_empty() {
                    format!("/{v}")
                } else {
                    format!("/{dir}/{v}")
                }),
                _ => {}
            }
        }
        if p.source.as_deref() == Some(p.name.as_str()) {
            p.source = None;
        }
        if !p.name.is_empty() {
            out.push(p);
        }
    }
    Ok(Some(out))
}

/// The blocks of the database (separated by blank lines).
pub(crate) fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An `F` line, its attribute lines, and its `R` lines each with their attribute lines.
type DirGroup = (String, Vec<String>, Vec<(String, Vec<String>)>);

/// One package's block with only its kept files: `R` lines (and the `a`/`Z` lines after
/// them) of files not in `kept` are dropped, and so are `F` directories left without a kept
/// file (with their `M` line). Package fields are unchanged.
pub fn trimmed_block(fs: &Rootfs, block: &str, kept: &BTreeSet<String>) -> String {
    // (F line, its M/a lines, [(R line, its a/Z lines)]) groups, after the header.
    let mut header = String::new();
    let mut dirs: Vec<DirGroup> = Vec::new();
    for line in block.lines() {
        let (k, _) = line.split_once(':').unwrap_or(("", ""));
        match k {
            "F" => dirs.push((line.to_string(), Vec::new(), Vec::new())),
            "R" => match dirs.last_mut() {
                Some(d) => d.2.push((line.to_string(), Vec::new())),
                None => {
                    dirs.push((String::new(), Vec::new(), Vec::new()));
                    dirs.last_mut()
                        .expect("pushed")
                        .2
                        .push((line.to_string(), Vec::new()));
                }
            },
            "M" | "a" | "Z" if !dirs.is_empty() => {
                let d = dirs.last_mut().expect("checked");
                match d.2.last_mut() {
                    Some(r) => r.1.push(line.to_string()),
                    None => d.1.push(line.to_string()),
                }
            }
            _ => {
                header.push_str(line);
                header.push('\n');
            }
        }
    }
    let mut out = header;
    for (f, fattrs, files) in dirs {
        let d = f.strip_prefix("F:").unwrap_or("");
        let keep: Vec<&(String, Vec<String>)> = files
            .iter()
            .filter(|(r, _)| {
                let name = r.strip_prefix("R:").unwrap_or("");
                let p = if d.is_empty() {
                    format!("/{name}")
                } else {
                    format!("/{d}/{name}")
                };
                fs.resolve(&p, false).is_ok_and(|c| kept.contains(&c.path))
            })
            .collect();
        if keep.is_empty() {
            continue;
        }
        if !f.is_empty() {
            out.push_str(&f);
            out.push('\n');
        }
        for a in &fattrs {
            out.push_str(a);
            out.push('\n');
        }
        for (r, attrs) in keep {
            out.push_str(r);
            out.push('\n');
            for a in attrs {
                out.push_str(a);
                out.push('\n');
            }
        }
    }
    out
}

/// The trimmed database: the kept packages' blocks, in the original order.
pub fn write_installed(
    fs: &Rootfs,
    pkgs: &[&Package],
    kept: &BTreeSet<String>,
) -> BTreeMap<String, Vec<u8>> {
    let mut text = String::new();
    for p in pkgs {
        text.push_str(&trimmed_block(fs, &p.record, kept));
        text.push('\n');
    }
    let path = fs
        .resolve(INSTALLED, true)
        .map(|r| r.path)
        .unwrap_or_else(|_| INSTALLED.to_string());
    BTreeMap::from([(path, text.into_bytes())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_names() {
        assert_eq!(
            dep_name("so:libc.musl-x86_64.so.1").as_deref(),
            Some("so:libc.musl-x86_64.so.1")
        );
        assert_eq!(dep_name("cmd:curl=8.5.0-r0").as_deref(), Some("cmd:curl"));
        assert_eq!(dep_name("musl>=1.2").as_deref(), Some("musl"));
        assert_eq!(dep_name("!conflict"), None);
    }
}

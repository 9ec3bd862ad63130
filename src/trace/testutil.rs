//! Test images for the rules: an in-memory root whose ELF facts and texts are given.

use std::collections::HashMap;
use std::sync::Arc;

use super::kit::{Contents, RunConfig, Trace, TraceOptions};
use super::trace;
use crate::elf::{self, ElfFacts, Import};
use crate::error::Result;
use crate::rootfs::{Kind, Node, Rootfs, display};

/// Contents given by the test: ELF facts by path, texts by path.
pub(crate) struct Fake {
    pub facts: HashMap<String, ElfFacts>,
    pub text: HashMap<String, Vec<u8>>,
}

impl Contents for Fake {
    fn prefetch(&mut self, _: &Rootfs, _: &[String]) -> Result<()> {
        Ok(())
    }
    fn read(&mut self, _: &Rootfs, path: &str, _: u64) -> Result<Vec<u8>> {
        Ok(self.text.get(path).cloned().unwrap_or_default())
    }
    fn elf(&mut self, _: &Rootfs, path: &str) -> Result<Option<Arc<ElfFacts>>> {
        Ok(self.facts.get(path).cloned().map(Arc::new))
    }
}

pub(crate) fn lib(soname: &str) -> ElfFacts {
    ElfFacts {
        is_64: true,
        little_endian: true,
        machine: elf::EM_X86_64,
        soname: Some(soname.into()),
        dynamic: true,
        ..Default::default()
    }
}

pub(crate) fn exe(needed: &[&str]) -> ElfFacts {
    ElfFacts {
        interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
        needed: needed.iter().map(|s| s.to_string()).collect(),
        soname: None,
        ..lib("")
    }
}

/// Give facts imported symbols.
pub(crate) fn imports(mut f: ElfFacts, names: &[&str]) -> ElfFacts {
    f.imports = names
        .iter()
        .map(|n| Import {
            name: n.to_string(),
            version: None,
        })
        .collect();
    f.imports.sort();
    f
}

pub(crate) const LDSO: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
pub(crate) const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

/// A usr-merged loader and libc.
pub(crate) fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/lib64", "l:usr/lib64"),
        ("/lib", "l:usr/lib"),
        ("/bin", "l:usr/bin"),
        (
            "/usr/lib64/ld-linux-x86-64.so.2",
            "l:../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ),
        (LDSO, "elf"),
        (LIBC, "elf"),
    ]
}

/// The facts of [`base`]'s objects.
pub(crate) fn base_facts() -> Vec<(&'static str, ElfFacts)> {
    vec![
        (LDSO, lib("ld-linux-x86-64.so.2")),
        (LIBC, lib("libc.so.6")),
    ]
}

/// An image described as (path, what): "elf" entries get facts from `facts`, "l:T" is a
/// symlink, "t:TEXT" a text file, "d" a directory, "x:TEXT" an executable text file, anything
/// else a regular file of that many bytes.
pub(crate) fn image(entries: &[(&str, &str)], facts: Vec<(&str, ElfFacts)>) -> (Rootfs, Fake) {
    let mut fs = Rootfs::empty();
    let node = |kind, mode| Node {
        kind,
        mode,
        uid: 0,
        gid: 0,
        layer: 0,
        capability: false,
        mtime: 0,
    };
    fs.nodes.insert(String::new(), node(Kind::Dir, 0o755));
    let mut text = HashMap::new();
    for (i, (p, what)) in entries.iter().enumerate() {
        let p = p.trim_start_matches('/');
        let mut acc = String::new();
        for c in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            fs.nodes
                .entry(acc.clone())
                .or_insert_with(|| node(Kind::Dir, 0o755));
        }
        let (kind, mode) = if *what == "d" {
            (Kind::Dir, 0o755)
        } else if let Some(t) = what.strip_prefix("l:") {
            (Kind::Symlink(t.into()), 0o777)
        } else {
            let body = what.strip_prefix("t:").or_else(|| what.strip_prefix("x:"));
            let size = match body {
                Some(t) => {
                    text.insert(p.to_string(), t.as_bytes().to_vec());
                    t.len() as u64
                }
                None if *what == "elf" => 4096,
                None => what.parse().unwrap_or(1),
            };
            (
                Kind::File {
                    layer: 0,
                    entry: i as u64,
                    size,
                },
                if what.starts_with("t:") { 0o644 } else { 0o755 },
            )
        };
        fs.nodes.insert(p.to_string(), node(kind, mode));
    }
    let facts = facts
        .into_iter()
        .map(|(p, f)| (p.trim_start_matches('/').to_string(), f))
        .collect();
    (fs, Fake { facts, text })
}

/// Trace an image with [`base`] under it.
pub(crate) fn run_config(
    entries: Vec<(&str, &str)>,
    facts: Vec<(&str, ElfFacts)>,
    run: RunConfig,
) -> Result<Trace> {
    let mut e = base();
    e.extend(entries);
    let mut f = base_facts();
    f.extend(facts);
    let (fs, mut c) = image(&e, f);
    trace(&fs, &mut c, &run, &TraceOptions::default())
}

/// Trace with this entrypoint and Env.
pub(crate) fn run(
    entries: Vec<(&str, &str)>,
    facts: Vec<(&str, ElfFacts)>,
    argv: &[&str],
    env: &[&str],
) -> Result<Trace> {
    run_config(
        entries,
        facts,
        RunConfig {
            entrypoint: argv.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
}

/// Whether the trace keeps an absolute path (file, dir or symlink).
pub(crate) fn kept(t: &Trace, p: &str) -> bool {
    let p = p.trim_start_matches('/');
    t.files.contains_key(p) || t.symlinks.contains_key(p)
}

/// The object a needed name resolved to.
pub(crate) fn found(t: &Trace, name: &str) -> String {
    let e = t
        .edges
        .iter()
        .find(|e| e.name == name && e.via != "already loaded")
        .expect(name);
    display(&t.objects[e.to.unwrap()].path)
}

/// An object with these path strings in its read-only data.
pub(crate) fn with_strings(mut f: ElfFacts, s: &[&str]) -> ElfFacts {
    f.strings = s.iter().map(|x| x.to_string()).collect();
    f
}

/// A program linking libc (and `needed`).
pub(crate) fn libc_exe(needed: &[&str]) -> ElfFacts {
    let mut n = vec!["libc.so.6"];
    n.extend(needed);
    exe(&n)
}

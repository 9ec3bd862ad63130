//! What a trace finds: the kept files with their evidence, the loaded objects and their edges,
//! and what the image runs with (argv, Env, WorkingDir).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::elf::ElfFacts;
use crate::rootfs::{Rootfs, display};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest text file (config, script, ld.so.conf, …) read for tracing.
pub(crate) const MAX_TEXT_BYTES: u64 = 1 << 20;
/// At most this many evidence records are kept per path.
pub(crate) const MAX_EVIDENCE: usize = 8;

/// Which C library the closure uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Libc {
    Glibc {
        path: String,
        builtin_files_dns: bool,
    },
    Musl {
        interpreter: String,
    },
}

/// One line of the dependency tree.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: usize,
    pub name: String,
    /// Object index, or `None` when missing (with `--allow-missing`).
    pub to: Option<usize>,
    pub via: String,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub path: String,
    /// The name it was asked for (soname, interpreter path, argv[0]).
    pub name: String,
    pub facts: Arc<ElfFacts>,
    pub loader: Option<usize>,
    /// Loaded only by dlopen (NSS modules, libgcc_s, .note.dlopen, modules named by a config)
    /// or by such an object: what it misses makes a warning, not an error, as the dlopen would
    /// fail softly at run time.
    pub optional: bool,
    /// What `$ORIGIN` means for it: the executable's real directory (/proc/self/exe), and for
    /// a library the directory of the path it was opened by, symlinks not resolved, as glibc
    /// and musl do.
    pub origin: String,
    /// The executable of the process it is loaded into (its RPATH is the last resort).
    pub main: usize,
}

/// The kind of evidence that keeps a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// argv[0] of the image config.
    Entrypoint,
    /// A `#!` interpreter or an ELF PT_INTERP.
    Interpreter,
    /// Run by `env` or a wrapper (`tini`, `gosu`, `timeout`, …).
    Command,
    /// Run or sourced by a shell script or `sh -c` string.
    ScriptCommand,
    /// DT_NEEDED of a kept object.
    NeededBy,
    /// Loaded at run time (dlopen): `.note.dlopen`, NSS modules, modules a config names,
    /// extension modules.
    Dlopen,
    /// An absolute path named by the image config or by a kept file.
    PathReference,
    /// Included by a configuration file.
    ConfigInclude,
    /// Loaded or read by the C library for a symbol a kept object imports.
    LibcFeature,
    /// A language runtime's start-up set, standard library or the application's imports.
    Runtime,
    /// The application's own directory.
    AppDir,
    /// `--keep`.
    KeepFlag,
    /// Used by a probe's program in the source (`--learn`).
    Observed,
    /// A symlink on the way to a kept path.
    Symlink,
    /// Configuration or data of a package that owns a program the entrypoint runs, or of its
    /// dependencies (the image's package database).
    Package,
}

/// Why one path is kept: the kind of evidence, the kept file (or config key) that caused it,
/// and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub kind: Why,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub detail: String,
    /// Kept as part of this directory (kept whole), not named itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

impl Evidence {
    pub fn new(kind: Why, from: Option<&str>, detail: impl Into<String>) -> Self {
        Evidence {
            kind,
            from: from.map(display),
            detail: detail.into(),
            within: None,
        }
    }

    /// The same reason, for an entry kept because its directory `dir` is kept whole.
    pub fn inside(&self, dir: &str) -> Self {
        Evidence {
            within: self.within.clone().or_else(|| Some(display(dir))),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A libc feature that fired: which symbol (or library) of which object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureHit {
    pub feature: String,
    /// The symbol (`localtime@GLIBC_2.2.5`) or library (`libssl.so.3`) that triggered it.
    pub trigger: String,
    pub object: String,
}

#[derive(Debug, Default)]
pub struct Trace {
    /// argv as the image runs it.
    pub argv: Vec<String>,
    /// Canonical path of argv[0].
    pub entrypoint: String,
    /// Canonical regular files and directories → why kept (first reason first). A directory
    /// kept by `--keep` stands for its whole subtree.
    pub files: BTreeMap<String, Vec<Evidence>>,
    /// Symlinks passed on the way → why kept.
    pub symlinks: BTreeMap<String, Vec<Evidence>>,
    pub objects: Vec<Object>,
    /// Roots of the tree (programs, and objects loaded by dlopen outside any tree).
    pub roots: Vec<usize>,
    pub edges: Vec<Edge>,
    pub libc: Option<Libc>,
    /// Libraries found only through ld.so.conf: (soname, path ld.so opens) for a new ld.so.cache.
    pub ldconf_libs: Vec<(String, String)>,
    /// Programs the entrypoint runs (canonical paths): argv[0], interpreters, the commands of
    /// its scripts and wrappers. `pare check` reports these as needed, not as violations.
    pub programs: BTreeSet<String>,
    /// libc features that fired.
    pub features: Vec<FeatureHit>,
    /// Paths a rule looked at and did not keep, with why (`pare trace --why`).
    pub dropped: BTreeMap<String, String>,
    /// Executables (shells, helpers) that only weak evidence points at: not kept, with what
    /// would have brought them and how to keep them (`--keep`).
    pub withheld: BTreeMap<String, String>,
    pub warnings: Vec<String>,
    /// What static analysis could not decide (a command computed at run time at FILE:LINE, a
    /// large tree not kept, charsets chosen at run time): `--learn` with the image's own Cmd
    /// settles them.
    pub questions: Vec<String>,
    /// The image's package database, when it has one.
    pub packages: Option<std::sync::Arc<crate::packages::Db>>,
    /// Libraries not in the image (`--allow-missing`) that a package of the database lists:
    /// (library, the object that needs it, `package version`).
    pub missing_from_packages: Vec<(String, String, String)>,
}

impl Trace {
    /// Every reason a path (canonical, no leading slash) is kept, empty when it is not.
    pub fn evidence(&self, path: &str) -> &[Evidence] {
        let p = path.trim_start_matches('/');
        self.files
            .get(p)
            .or_else(|| self.symlinks.get(p))
            .map_or(&[], |v| v.as_slice())
    }

    /// What the entrypoint needs for `pare check`: the programs it runs and the links on the
    /// way to kept paths.
    pub fn needed(&self) -> BTreeSet<String> {
        self.programs
            .iter()
            .chain(self.symlinks.keys())
            .cloned()
            .collect()
    }

    /// The first reason, as one sentence.
    pub fn reason(&self, path: &str) -> String {
        self.evidence(path)
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default()
    }

    /// Answer "why is PATH kept (or not)" for `pare trace --why`: the path as resolved in the
    /// image, and one line per reason.
    pub fn why(&self, fs: &Rootfs, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let resolved = fs.resolve(path, true).ok();
        let mut asked = vec![path.trim_start_matches('/').to_string()];
        if let Some(r) = &resolved {
            for l in &r.symlinks {
                asked.push(l.clone());
            }
            asked.push(r.path.clone());
        }
        asked.dedup();
        let mut any = false;
        for p in &asked {
            let ev = self.evidence(p);
            if !ev.is_empty() {
                any = true;
                out.push(format!("{} is kept:", display(p)));
                for e in ev {
                    out.push(format!("  [{}] {}", kind_name(e.kind), e.detail));
                }
            } else if let Some(d) = self.withheld.get(p) {
                out.push(format!("{} is withheld: {d}", display(p)));
                any = true;
            } else if let Some(d) = self.dropped.get(p) {
                out.push(format!("{} is not kept: {d}", display(p)));
                any = true;
            }
        }
        // A path inside a kept directory (`--keep DIR`).
        if !any {
            for p in &asked {
                let mut cur = p.as_str();
                while let Some(i) = cur.rfind('/') {
                    cur = &cur[..i];
                    if fs.get(cur).is_some_and(|n| n.is_dir())
                        && let Some(ev) = self.files.get(cur)
                        && ev.iter().any(|e| e.kind == Why::KeepFlag)
                    {
                        out.push(format!("{} is kept: inside {}", display(p), display(cur)));
                        any = true;
                        break;
                    }
                }
            }
        }
        if !any {
            match resolved {
                None if fs.get(path).is_none() => {
                    out.push(format!("{} is not in the image", display(path)))
                }
                _ => out.push(format!(
                    "{} is not kept: nothing the entrypoint runs, loads, reads or names leads to it",
                    display(path)
                )),
            }
        }
        out
    }
}

/// The kebab-case name of an evidence kind, as the JSON report spells it.
pub fn kind_name(k: Why) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub allow_missing: bool,
    /// `--keep` patterns (globs on absolute paths).
    pub keep: Vec<String>,
    /// `--runtime-full`: keep a language runtime's whole standard library.
    pub runtime_full: bool,
    /// `--no-packages`: the package database's configuration and data are not followed.
    pub no_packages: bool,
    /// `--learn`: absolute paths a probe's program used in the source (kept).
    pub observed: Vec<String>,
}

/// What the image config says about running it.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
}

impl RunConfig {
    pub fn from_config(config: &serde_json::Value) -> Self {
        let c = config.get("config").cloned().unwrap_or_default();
        let strs = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        RunConfig {
            entrypoint: strs("Entrypoint"),
            cmd: strs("Cmd"),
            env: strs("Env"),
            workdir: c
                .get("WorkingDir")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        }
    }

    pub fn argv(&self) -> Vec<String> {
        if self.entrypoint.is_empty() {
            self.cmd.clone()
        } else {
            self.entrypoint
                .iter()
                .chain(self.cmd.iter())
                .cloned()
                .collect()
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    }

    /// The working directory, `/` when unset.
    pub fn cwd(&self) -> &str {
        if self.workdir.is_empty() {
            "/"
        } else {
            &self.workdir
        }
    }
}

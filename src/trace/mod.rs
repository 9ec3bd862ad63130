//! What the entrypoint needs, found statically, each kept file with the evidence that keeps it.
//!
//! A tracer runs a set of *evidence rules* to a fixed point over a work queue. The work is of
//! three kinds: a program started with an argv ([`Exec`]), a regular file that was just kept,
//! and an ELF object loaded into a process. Each rule answers, for the work it understands,
//! which further paths become necessary and why:
//!
//! - [`program`]: how a program runs: ELF or `#!` script, and the forms that run another
//!   command (`env`, `tini`, `dumb-init`, `gosu`, `su-exec`, `timeout`, `xargs`, …);
//! - [`loader`]: the dynamic loader's search (glibc and musl order, `$ORIGIN`, ld.so.conf);
//! - [`shell`]: the commands a shell script or `sh -c` string runs, and the scripts it sources;
//! - [`pathref`]: absolute paths named by the image config, by a kept program's read-only data
//!   or by a kept text file, and the include directives of configuration files ([`config`]);
//! - [`libc`]: what the C library loads or reads for the symbols the kept objects import
//!   (name service, iconv, locales, time zones, OpenSSL, SASL, fontconfig ([`fontconfig`]),
//!   libgcc_s), as a table;
//! - [`xmlcatalog`]: what an OASIS XML catalog points at (delegated catalogs, DTDs by relative
//!   `uri`, `rewritePrefix` trees);
//! - [`packages`]: the configuration and data of the packages whose programs run, and
//!   [`helpers`]: the package's helper programs it runs by bare name;
//! - [`runtime`]: language runtimes (Python, Node.js, Perl, Ruby, Java, PHP, Lua, Tcl, Guile):
//!   their standard library and the import graph of the application;
//! - [`appdir`]: the application's own directory; [`keep`]: `--keep`; [`observed`]: what a
//!   `--learn` probe used.
//!
//! A new rule is a new file implementing [`Rule`]. Rules share one context ([`Cx`]) that owns
//! the kept set, the loader's state and the queue.

use crate::error::Result;
use crate::rootfs::Rootfs;

pub(crate) mod kit;

mod active;
mod appdir;
pub(crate) mod config;
pub(crate) mod fontconfig;
mod helpers;
mod keep;
mod libc;
mod loader;
mod observed;
mod packages;
mod pathref;
mod plugins;
mod program;
pub(crate) mod risky;
mod runtime;
pub(crate) mod shell;
pub(crate) mod xmlcatalog;

pub use kit::{
    Contents, Evidence, FeatureHit, LayerContents, Libc, MAX_OBJECT_BYTES, Object, RunConfig,
    Trace, TraceOptions, Why, default_dirs, find_program, json, kind_name, render_kept,
    render_tree,
};
pub(crate) use kit::{Cx, Rule};

/// Makes a rule's state for one trace.
type MakeRule = fn() -> Box<dyn Rule>;

/// The evidence rules, in the order each batch of work is shown to them (name, why there, the
/// rule). A new rule is one file and one row.
const RULES: &[(&str, &str, MakeRule)] = &[
    (
        "program",
        "first: decides how a program runs (ELF, `#!`, wrappers) and queues what it starts",
        || Box::new(program::Programs),
    ),
    (
        "loader",
        "loads what runs before anything reads an object's imports",
        || Box::new(loader::Loader),
    ),
    (
        "shell",
        "the commands a script runs are programs, before path references see the script as text",
        || Box::new(shell::Shells),
    ),
    (
        "runtimes",
        "language runtimes (runtime::RUNTIMES, in its order) claim their trees before path references and packages look at them",
        || Box::new(runtime::Runtimes::default()),
    ),
    (
        "pathref",
        "after the runtimes (which claim trees) and before packages: what kept files name",
        || Box::new(pathref::PathRefs::default()),
    ),
    (
        "packages",
        "once the programs and files are known: their packages' configuration and data",
        || Box::new(packages::Packages::default()),
    ),
    (
        "helpers",
        "after packages: the helper programs a followed package runs by name",
        || Box::new(helpers::Helpers::default()),
    ),
    (
        "libc",
        "at the end of each batch: what the C library loads for the symbols imported so far",
        || Box::new(libc::Features::default()),
    ),
    (
        "appdir",
        "after the rules that claim trees: the application's own directory",
        || Box::new(appdir::AppDir::default()),
    ),
    ("xmlcatalog", "what a kept XML catalog points at", || {
        Box::new(xmlcatalog::XmlCatalogs)
    }),
    (
        "keep",
        "the user's --keep, whatever the rules found",
        || Box::new(keep::Keep),
    ),
    (
        "observed",
        "last: what a --learn probe saw the program use",
        || Box::new(observed::Observed),
    ),
];

/// Trace what the image's entrypoint needs.
pub fn trace<C: Contents>(
    fs: &Rootfs,
    contents: &mut C,
    run: &RunConfig,
    opts: &TraceOptions,
) -> Result<Trace> {
    let mut rules: Vec<Box<dyn Rule>> = RULES.iter().map(|(_, _, make)| make()).collect();
    kit::cx::run(Cx::new(fs, contents, run, opts), &mut rules)
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod evidence_tests;

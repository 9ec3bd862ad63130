//! The package rule: the configuration and data of the packages that own the programs the
//! entrypoint runs (nginx's `/etc/nginx` comes from `nginx-common`, a dependency of the
//! package owning `/usr/sbin/nginx`), read from the image's package database.
//!
//! Which packages are followed and which of their files count is data ([`SKIP_PACKAGES`],
//! [`SKIP_TREES`]): from the packages that own a program or a loaded ELF object (a library
//! reads its data by a compiled-in path: libmagic's `magic.mgc`, espeak-ng's voices, Tcl's
//! `init.tcl`), their configuration files and data; from their dependencies, transitively, the
//! same, never an executable (bookworm's `nginx` depends on `iproute2`: `ip` must not come
//! back), skipping shared-library packages none of whose objects is loaded, essential
//! packages, shells, package managers, network tools and setuid carriers. A library package
//! of data only (`libmagic-mgc`) and the `*-data`/`*-common` package of a loaded library come
//! whole (up to [`MAX_OWNER_DATA`]). A language runtime's trees are the runtime rule's.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use super::kit::{Cx, Evidence, Rule, Why};
use crate::error::Result;
use crate::packages::{self, Db};
use crate::rootfs::{Kind, display};

/// Packages never followed, with why (name, or `prefix*`). Applies to dependencies; to a
/// package owning a program only where marked `true`.
pub const SKIP_PACKAGES: &[(&str, bool, &str)] = &[
    (
        "lib*",
        false,
        "a shared-library package none of whose objects is loaded",
    ),
    (
        "libpython*",
        true,
        "a language runtime's library: its trees are the runtime rule's",
    ),
    (
        "libperl*",
        true,
        "a language runtime's library: its trees are the runtime rule's",
    ),
    (
        "libruby*",
        true,
        "a language runtime's library: its trees are the runtime rule's",
    ),
    (
        "libc6",
        true,
        "the C library: its locales, gconv modules and time zones are the libc rule's",
    ),
    (
        "perl-modules*",
        true,
        "a language runtime's library: its trees are the runtime rule's",
    ),
    ("bash", true, "a shell"),
    ("dash", true, "a shell"),
    ("zsh", true, "a shell"),
    ("mksh", true, "a shell"),
    ("busybox", true, "a shell"),
    ("busybox-static", true, "a shell"),
    ("dpkg", true, "a package manager"),
    ("apt", true, "a package manager"),
    ("apt-utils", true, "a package manager"),
    ("debconf", true, "package-manager plumbing"),
    ("ucf", true, "package-manager plumbing"),
    ("adduser", true, "package-manager plumbing"),
    ("init-system-helpers", true, "package-manager plumbing"),
    ("lsb-base", true, "package-manager plumbing"),
    ("sysvinit-utils", true, "package-manager plumbing"),
    ("systemd", true, "an init system"),
    ("systemd-sysv", true, "an init system"),
    ("sensible-utils", true, "package-manager plumbing"),
    ("debianutils", true, "package-manager plumbing"),
    ("rpm", true, "a package manager"),
    ("apk-tools", true, "a package manager"),
    ("iproute2", false, "a network tool"),
    ("iputils-ping", false, "a network tool"),
    ("net-tools", false, "a network tool"),
    ("curl", false, "a network tool"),
    ("wget", false, "a network tool"),
    ("netcat-openbsd", false, "a network tool"),
    ("netcat-traditional", false, "a network tool"),
    ("openssh-client", false, "a network tool"),
    ("openssh-server", false, "a network tool"),
    ("socat", false, "a network tool"),
    ("passwd", true, "a setuid carrier"),
    ("login", true, "a setuid carrier"),
    ("sudo", true, "a setuid carrier"),
    ("mount", true, "a setuid carrier"),
    ("util-linux", true, "a setuid carrier"),
    ("tzdata", true, "time zones are the libc rule's"),
    ("locales", true, "locales are the libc rule's"),
    ("locales-all", true, "locales are the libc rule's"),
    (
        "ca-certificates",
        true,
        "the CA bundle is the OpenSSL rule's",
    ),
];

/// Trees of a package never kept by this rule, with why.
pub const SKIP_TREES: &[(&str, &str)] = &[
    ("usr/share/doc", "documentation"),
    ("usr/share/man", "documentation"),
    ("usr/share/info", "documentation"),
    ("usr/share/lintian", "packaging metadata"),
    ("usr/share/bug", "packaging metadata"),
    ("usr/share/locale", "translations"),
    ("usr/share/bash-completion", "interactive shell completion"),
    ("usr/share/zsh", "interactive shell completion"),
    ("usr/share/fish", "interactive shell completion"),
    ("usr/share/menu", "desktop integration"),
    ("usr/share/applications", "desktop integration"),
    ("usr/share/icons", "desktop integration"),
    ("usr/share/pixmaps", "desktop integration"),
    ("usr/share/apport", "crash reporting"),
    ("usr/share/i18n", "locale sources (the libc rule's)"),
    ("usr/share/zoneinfo", "time zones (the libc rule's)"),
    ("usr/lib/locale", "locales (the libc rule's)"),
    ("etc/init.d", "service management"),
    ("etc/systemd", "service management"),
    ("lib/systemd", "service management"),
    ("usr/lib/systemd", "service management"),
    ("etc/logrotate.d", "service management"),
    ("etc/cron.d", "service management"),
    ("etc/cron.daily", "service management"),
    ("etc/default", "service management"),
    ("etc/ufw", "service management"),
    ("etc/apparmor.d", "service management"),
    ("usr/lib/tmpfiles.d", "service management"),
    ("usr/lib/sysusers.d", "service management"),
    ("etc/ld.so.conf.d", "the loader's (the ELF rule's)"),
];

/// Most bytes of data kept from a package that is only a dependency; past it, a warning.
pub const MAX_PACKAGE_DATA: u64 = 16 << 20;
/// Most bytes of data kept from a package that owns what runs or is loaded, or from the data
/// package of a loaded library (voices, dictionaries, fonts, a Lisp core).
pub const MAX_OWNER_DATA: u64 = 512 << 20;
/// Most bytes of a data-only package a followed package depends on (voices, dictionaries,
/// stylesheets): larger ones (270 MB of moment-timezone JSON behind a web console) are an open
/// question, not a guess.
pub const MAX_DEPENDENCY_DATA: u64 = 128 << 20;

pub(crate) fn skipped(name: &str, owner: bool) -> Option<&'static str> {
    SKIP_PACKAGES.iter().find_map(|(p, for_owner, why)| {
        let hit = match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *p,
        };
        (hit && (!owner || *for_owner)).then_some(*why)
    })
}

pub(crate) fn skipped_tree(path: &str) -> Option<&'static str> {
    SKIP_TREES
        .iter()
        .find(|(t, _)| path == *t || path.starts_with(&format!("{t}/")))
        .map(|(_, why)| *why)
        .or_else(|| {
            // The C library's gconv modules.
            path.contains("/gconv/")
                .then_some("iconv modules (the libc rule's)")
        })
}

#[derive(Default)]
pub(crate) struct Packages {
    db: Option<Arc<Db>>,
    /// Packages whose files were considered.
    done: HashSet<usize>,
    /// Packages followed because they own what runs, is loaded or is named on the command
    /// line.
    owners: HashSet<usize>,
}

impl Rule for Packages {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        // Read even with --no-packages: the plan writes metadata for what is kept.
        if let Some(w) = packages::unsupported(cx.fs) {
            cx.warn(w);
        }
        if let Some(db) = packages::read(cx.fs, &mut *cx.contents)? {
            let db = Arc::new(db);
            cx.out.packages = Some(db.clone());
            self.db = Some(db);
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        let Some(db) = self.db.clone() else {
            return Ok(());
        };
        missing_owners(cx, &db);
        if cx.opts.no_packages {
            return Ok(());
        }
        // The packages owning the programs the entrypoint runs and the objects it loads, then
        // their dependencies.
        let mut queue: VecDeque<(usize, Parent)> = VecDeque::new();
        let programs: Vec<String> = cx.out.programs.iter().cloned().collect();
        for p in programs {
            for &i in db.owners(&p) {
                queue.push_back((i, Parent::Program(p.clone())));
            }
        }
        // Files the entrypoint is given by absolute path (a stylesheet whose includes are
        // relative to it): their package is input data.
        let named: Vec<String> = cx
            .out
            .argv
            .iter()
            .skip(1)
            .map(|a| a.split_once('=').map_or(a.as_str(), |(_, v)| v))
            .filter(|a| a.starts_with('/'))
            .filter_map(|a| cx.fs.resolve(a, true).ok().map(|r| r.path))
            .filter(|p| cx.fs.get(p).is_some_and(|n| !n.is_dir()))
            .collect();
        for p in named {
            for &i in db.owners(&p) {
                queue.push_back((i, Parent::Argument(p.clone())));
            }
        }
        let loaded: Vec<String> = cx.out.objects.iter().map(|o| o.path.clone()).collect();
        for o in &loaded {
            for &i in db.owners(o) {
                queue.push_back((i, Parent::Loaded(o.clone())));
            }
        }
        while let Some((i, parent)) = queue.pop_front() {
            if !self.done.insert(i) {
                continue;
            }
            let pkg = &db.packages[i];
            let owner = !matches!(parent, Parent::Dependency(_));
            let essential = packages::is_essential(pkg);
            // A library package of data only (`libmagic-mgc`, `libgs10-common`) is data; one of
            // shared objects is followed only when one of them is loaded.
            let data_only = pkg.name.starts_with("lib") && !owns_shared_object(cx, &db, i);
            let skip = if owner || data_only {
                skipped_owner(&pkg.name)
            } else {
                skipped(&pkg.name, false)
            };
            if let Some(why) = skip
                .or(essential.then_some("an essential package (in every system, not the app's)"))
            {
                cx.drop_path(
                    &format!("package {}", pkg.name),
                    format!("not followed: {why}"),
                );
                continue;
            }
            // Only near what runs: the data package of an owner (a program's package, a loaded
            // library's) is its data; deeper in the dependency chain it is someone else's.
            let near = match &parent {
                Parent::Dependency(p) => self.owners.contains(p),
                _ => {
                    self.owners.insert(i);
                    true
                }
            };
            let data_package = near && is_data_package(cx, &db, i);
            let (detail, cap) = describe(&db, i, &parent, data_only, data_package, near);
            keep_package(cx, &db, i, &detail, cap)?;
            for group in &pkg.depends {
                // The first alternative the image has.
                if let Some(&d) = group.iter().find_map(|n| db.named(n).first()) {
                    queue.push_back((d, Parent::Dependency(i)));
                }
            }
        }
        Ok(())
    }
}

/// Why a package is followed.
enum Parent {
    /// It owns a program the entrypoint runs.
    Program(String),
    /// It owns an ELF object that is loaded (a shared library, a plugin).
    Loaded(String),
    /// It owns a file the entrypoint is given by absolute path.
    Argument(String),
    /// A dependency of this package.
    Dependency(usize),
}

/// Whether a package is data only: it lists no program and no shared object (`wordnet-base`,
/// `espeak-ng-data`, a font package): what depends on it reads it by a compiled-in path.
fn is_data_package(cx: &Cx, db: &Db, idx: usize) -> bool {
    let files = db.files_of(cx.fs, idx);
    !files.is_empty()
        && files.iter().all(|f| {
            let base = f.rsplit('/').next().unwrap_or(f);
            !base.contains(".so")
                && cx
                    .fs
                    .get(f)
                    .is_none_or(|n| !matches!(n.kind, Kind::File { .. }) || n.mode & 0o111 == 0)
        })
}

/// Whether a package lists a shared object.
fn owns_shared_object(cx: &Cx, db: &Db, idx: usize) -> bool {
    db.packages[idx].files.iter().any(|f| {
        let base = f.rsplit('/').next().unwrap_or(f);
        base.contains(".so") && cx.fs.get(f.trim_start_matches('/')).is_some()
    })
}

/// A package that owns what runs or is loaded is followed unless it is one of the owner-marked
/// [`SKIP_PACKAGES`].
fn skipped_owner(name: &str) -> Option<&'static str> {
    skipped(name, true)
}

/// The sentence for a package's files, and the most data kept from it.
fn describe(
    db: &Db,
    idx: usize,
    parent: &Parent,
    data_only: bool,
    data_package: bool,
    near: bool,
) -> (String, u64) {
    let name = &db.packages[idx].name;
    match parent {
        Parent::Program(p) => (
            format!("package {name}, which owns {}", display(p)),
            MAX_OWNER_DATA,
        ),
        Parent::Argument(f) => (
            format!(
                "package {name}, which owns {} (an argument of the entrypoint)",
                display(f)
            ),
            MAX_OWNER_DATA,
        ),
        Parent::Loaded(o) => (
            format!("package {name}, which owns {} (loaded)", display(o)),
            MAX_OWNER_DATA,
        ),
        Parent::Dependency(p) => {
            let by = &db.packages[*p].name;
            // The data package of a library (`espeak-ng-data`, `libgs10-common`, `pci.ids`)
            // is read by the library by a compiled-in path: whole.
            let data = data_only
                || name.ends_with("-data")
                || name.ends_with("-common")
                || (by.starts_with("lib") && !name.starts_with("lib"));
            (
                format!("package {name}, dependency of {by}"),
                if near && ((data && by.starts_with("lib")) || data_package) {
                    MAX_DEPENDENCY_DATA
                } else {
                    MAX_PACKAGE_DATA
                },
            )
        }
    }
}

/// For each library not found (`--allow-missing`), the package that lists a file of that name:
/// the one that would have provided it.
fn missing_owners(cx: &mut Cx, db: &Db) {
    let missing: Vec<(String, String)> = cx
        .out
        .edges
        .iter()
        .filter(|e| e.to.is_none())
        .map(|e| (e.name.clone(), cx.out.objects[e.from].path.clone()))
        .collect();
    for (name, object) in missing {
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        let owner = db.packages.iter().find(|p| {
            p.files
                .iter()
                .any(|f| f.rsplit('/').next() == Some(base.as_str()))
        });
        if let Some(p) = owner {
            let entry = (
                name.clone(),
                display(&object),
                format!("{} {}", p.name, p.version),
            );
            if !cx.out.missing_from_packages.contains(&entry) {
                cx.warn(format!(
                    "{}: {name} is not in the image; package {} {} lists it (its file was removed)",
                    display(&object),
                    p.name,
                    p.version
                ));
                cx.out.missing_from_packages.push(entry);
            }
        }
    }
}

/// Keep a package's configuration files and data (not executables, not shared objects, not
/// the trees in [`SKIP_TREES`], not a runtime's trees).
fn keep_package(cx: &mut Cx, db: &Db, idx: usize, detail: &str, cap: u64) -> Result<()> {
    let pkg = &db.packages[idx];
    let conffiles: BTreeSet<String> = pkg
        .conffiles
        .iter()
        .filter_map(|c| cx.fs.resolve(c, false).ok().map(|r| r.path))
        .collect();
    // The package's own state directories (`/var/lib/nginx`, `/var/log/apache2`): kept as
    // directories, where the program writes.
    for f in &pkg.files {
        let Ok(r) = cx.fs.resolve(f, true) else {
            continue;
        };
        let state = [
            "var/lib/",
            "var/log/",
            "var/cache/",
            "var/spool/",
            "var/www/",
            "srv/",
        ]
        .iter()
        .any(|p| r.path.starts_with(p));
        if state
            && !super::kit::is_system_dir(&r.path)
            && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            && !cx.out.files.contains_key(&r.path)
        {
            cx.keep_links(&r.symlinks, &r.path);
            cx.keep(
                &r.path,
                Evidence::new(Why::Package, None, format!("state directory of {detail}")),
            );
        }
    }
    let mut picked: Vec<(String, bool)> = Vec::new();
    let mut dir_links: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    for f in db.files_of(cx.fs, idx) {
        let conf = conffiles.contains(&f);
        if skipped_tree(&f).is_some() {
            continue;
        }
        if cx.is_claimed(&f) {
            continue;
        }
        let Some(node) = cx.fs.get(&f) else { continue };
        match &node.kind {
            Kind::File { size, .. } => {
                let base = f.rsplit('/').next().unwrap_or(&f);
                if node.mode & 0o111 != 0
                    || base.contains(".so")
                    || super::kit::is_secret(&display(&f))
                {
                    continue;
                }
                bytes += size;
                picked.push((f, conf));
            }
            Kind::Symlink(_)
                if cx
                    .fs
                    .resolve(&f, true)
                    .ok()
                    .and_then(|r| cx.fs.get(&r.path))
                    .is_some_and(|t| t.is_dir()) =>
            {
                // A link to a directory (`iccprofiles` → `/usr/share/color/icc/…`): the way
                // to the package's data there.
                dir_links.push(f);
            }
            Kind::Symlink(_) => {
                // A link to data is kept with its target.
                if let Ok(r) = cx.fs.resolve(&f, true)
                    && let Some(t) = cx.fs.get(&r.path)
                    && matches!(t.kind, Kind::File { .. })
                    && t.mode & 0o111 == 0
                    && !r.path.rsplit('/').next().unwrap_or("").contains(".so")
                    && skipped_tree(&r.path).is_none()
                {
                    picked.push((f, conf));
                }
            }
            _ => {}
        }
    }
    if bytes > cap {
        cx.question(format!(
            "package {} has {} MiB of configuration and data, more than {} MiB: not kept whole (keep what is needed with --keep)",
            pkg.name,
            bytes >> 20,
            cap >> 20
        ));
        picked.retain(|(_, conf)| *conf);
    }
    for f in dir_links {
        if skipped_tree(&f).is_none()
            && let Ok(r) = cx.fs.resolve(&f, true)
            && skipped_tree(&r.path).is_none()
        {
            cx.keep_links(&r.symlinks, &r.path);
            cx.keep(
                &r.path,
                Evidence::new(Why::Package, None, format!("directory of {detail}")),
            );
        }
    }
    for (f, conf) in picked {
        let what = if conf {
            format!("configuration file of {detail}")
        } else {
            format!("data of {detail}")
        };
        let mut ev = Evidence::new(Why::Package, None, what);
        if !conf {
            // Data is not read for what it names (a package's HTML, its templates).
            ev.within = Some(format!("package {}", pkg.name));
            ev.from = Some(format!("package {}", pkg.name));
        }
        cx.keep_if_file(&display(&f), ev);
    }
    Ok(())
}

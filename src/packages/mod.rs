//! The image's package database, read from the merged rootfs (no host tools): which package
//! owns each file, its configuration files and dependencies, and the metadata to write back
//! for the packages that keep a file, so scanners (syft, Trivy, Grype) still see them.
//! One file per database format: [`dpkg`] (Debian, Ubuntu, distroless), [`apk`] (Alpine,
//! Wolfi), [`rpm`] (Fedora, RHEL/UBI 9, its sqlite database).

pub mod apk;
pub mod dpkg;
pub mod rpm;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Result;
use crate::rootfs::{Kind, Rootfs};

/// File contents, as the tracer's content store gives them (the tracer implements this for
/// its `Contents`, so this stage does not depend on the tracer).
pub trait Reader {
    /// Hint: these files will be read soon.
    fn prefetch_files(&mut self, fs: &Rootfs, paths: &[String]) -> Result<()>;
    /// Up to `max` bytes of a regular file (canonical path).
    fn read_file(&mut self, fs: &Rootfs, path: &str, max: u64) -> Result<Vec<u8>>;
}

/// Largest database file read (dpkg's `status` of a large image is a few MiB).
pub const MAX_DB_BYTES: u64 = 64 << 20;
/// Most paths mapped to packages.
const MAX_OWNED_PATHS: usize = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Dpkg,
    Apk,
    Rpm,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Dpkg => "dpkg",
            Format::Apk => "apk",
            Format::Rpm => "rpm",
        }
    }

    /// The package-URL type.
    pub fn purl_type(self) -> &'static str {
        match self {
            Format::Dpkg => "deb",
            Format::Apk => "apk",
            Format::Rpm => "rpm",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, Default)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Source package name, when it differs from `name`.
    pub source: Option<String>,
    /// Paths the package lists, as listed (absolute).
    pub files: Vec<String>,
    /// Configuration files (absolute, as listed).
    pub conffiles: Vec<String>,
    /// Dependencies: each an OR-group of package names (versions and arch qualifiers dropped).
    pub depends: Vec<Vec<String>>,
    /// Virtual packages it provides.
    pub provides: Vec<String>,
    /// The database's own record of the package (a dpkg stanza), written back trimmed.
    pub record: String,
    pub essential: bool,
    /// Where the record came from (`var/lib/dpkg/status`, `var/lib/dpkg/status.d/NAME`).
    pub origin: String,
}

impl Package {
    /// `name` or `name:arch` when the name alone is ambiguous in the database.
    pub fn id(&self) -> String {
        self.name.clone()
    }
}

/// An image's package database.
#[derive(Debug, Clone)]
pub struct Db {
    pub format: Format,
    pub packages: Vec<Package>,
    /// Canonical path (no leading slash) → packages listing it (directories are shared).
    owners: HashMap<String, Vec<usize>>,
    /// Package name (and provided virtual name) → packages.
    by_name: HashMap<String, Vec<usize>>,
    /// Each package's files as [`Db::files_of`] found them (in the image the db was read
    /// from, the only one it is asked about), made on first use.
    files: Vec<std::sync::OnceLock<Vec<String>>>,
}

impl Db {
    fn new(format: Format, packages: Vec<Package>, fs: &Rootfs) -> Db {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for v in &p.provides {
                by_name.entry(v.clone()).or_default().push(i);
            }
        }
        let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
        let mut dirs = HashMap::new();
        let mut n = 0;
        'all: for (i, p) in packages.iter().enumerate() {
            for f in &p.files {
                n += 1;
                if n > MAX_OWNED_PATHS {
                    break 'all;
                }
                // `/lib/x/libc.so.6` is `usr/lib/x/libc.so.6` in a /usr-merged image: the
                // listed path's directories are resolved, the entry itself is not followed.
                let Some(r) = fs.resolve_in(f, false, &mut dirs) else {
                    continue;
                };
                // A listed directory is shared, not a file the package owns (nor is `/lib`,
                // a link to a directory in a /usr-merged image).
                let dir = match fs.get(&r).map(|n| &n.kind) {
                    Some(Kind::Dir) => true,
                    Some(Kind::Symlink(_)) => fs
                        .resolve_in(f, true, &mut dirs)
                        .is_some_and(|t| fs.get(&t).is_some_and(|n| n.is_dir())),
                    _ => false,
                };
                if !dir {
                    let v = owners.entry(r).or_default();
                    if !v.contains(&i) {
                        v.push(i);
                    }
                }
            }
        }
        Db {
            format,
            files: (0..packages.len()).map(|_| Default::default()).collect(),
            packages,
            owners,
            by_name,
        }
    }

    /// Packages listing a canonical path (no leading slash).
    pub fn owners(&self, path: &str) -> &[usize] {
        self.owners.get(path).map_or(&[], |v| v.as_slice())
    }

    /// The packages of a name (or providing it).
    pub fn named(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map_or(&[], |v| v.as_slice())
    }

    /// Canonical paths of the package's regular files and symlinks (directories left out),
    /// in `fs`: the image the db was read from.
    pub fn files_of(&self, fs: &Rootfs, idx: usize) -> Vec<String> {
        match self.files.get(idx) {
            Some(cell) => cell.get_or_init(|| self.find_files(fs, idx)).clone(),
            None => self.find_files(fs, idx),
        }
    }

    fn find_files(&self, fs: &Rootfs, idx: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = HashMap::new();
        for f in &self.packages[idx].files {
            if let Some(r) = fs.resolve_in(f, false, &mut dirs)
                && fs
                    .get(&r)
                    .is_some_and(|n| matches!(n.kind, Kind::File { .. } | Kind::Symlink(_)))
            {
                out.push(r);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Every kept path's owning packages: package index → its kept paths.
    pub fn kept_by_package<'a>(
        &self,
        kept: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<usize, Vec<String>> {
        let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for p in kept {
            for &i in self.owners(p) {
                out.entry(i).or_default().push(p.clone());
            }
        }
        out
    }
}

/// A warning for a package database pare cannot read.
pub fn unsupported(fs: &Rootfs) -> Option<String> {
    rpm::unsupported(fs)
}

/// Whether a package is part of every system of its distribution (dpkg's `Essential: yes`).
pub fn is_essential(p: &Package) -> bool {
    p.essential
}

/// The image's package database, when it has one.
pub fn read<R: Reader + ?Sized>(fs: &Rootfs, contents: &mut R) -> Result<Option<Db>> {
    if let Some(pkgs) = dpkg::read(fs, contents)? {
        return Ok(Some(Db::new(Format::Dpkg, pkgs, fs)));
    }
    if let Some(pkgs) = apk::read(fs, contents)? {
        return Ok(Some(Db::new(Format::Apk, pkgs, fs)));
    }
    if let Some(pkgs) = rpm::read(fs, contents)? {
        return Ok(Some(Db::new(Format::Rpm, pkgs, fs)));
    }
    Ok(None)
}

/// What a hardened image carries so scanners still see its packages.
#[derive(Debug, Default)]
pub struct Metadata {
    /// Files to write (canonical path → bytes): the trimmed database.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Image files to keep with them (each kept package's copyright).
    pub keep: Vec<String>,
    /// Paths as the written database names them (`/bin/date`): the links on the way are kept
    /// so they resolve.
    pub named: Vec<String>,
    /// Packages that keep at least one file, with those files.
    pub packages: BTreeMap<usize, Vec<String>>,
}

/// The metadata of the packages that keep at least one of `kept` (canonical paths of the
/// regular files and symlinks the hardened image holds).
pub fn metadata<R: Reader + ?Sized>(
    db: &Db,
    fs: &Rootfs,
    contents: &mut R,
    kept: &BTreeSet<String>,
) -> Result<Metadata> {
    // Each kept package's copyright comes along (licence compliance, as distroless does;
    // scanners read licences there). A copyright reached through a link belongs to another
    // package (`doc/libgcc-s1` → `gcc-12-base`), which then keeps a file too: to a fixed point.
    let mut kept = kept.clone();
    let mut keep: Vec<String> = Vec::new();
    let mut packages = db.kept_by_package(kept.iter());
    for _ in 0..4 {
        let mut added = false;
        for &i in packages.keys() {
            let c = format!("/usr/share/doc/{}/copyright", db.packages[i].name);
            if let Ok(r) = fs.resolve(&c, true)
                && matches!(fs.get(&r.path).map(|n| &n.kind), Some(Kind::File { .. }))
            {
                if !keep.contains(&c) {
                    keep.push(c);
                }
                for p in r.symlinks.into_iter().chain([r.path]) {
                    added |= kept.insert(p);
                }
            }
        }
        if !added {
            break;
        }
        packages = db.kept_by_package(kept.iter());
    }
    let pkgs: Vec<&Package> = packages.keys().map(|&i| &db.packages[i]).collect();
    let mut listed = Vec::new();
    let files = match db.format {
        Format::Dpkg => dpkg::write_status_d(fs, contents, &pkgs, &kept, &mut listed)?,
        Format::Apk => apk::write_installed(fs, &pkgs, &kept),
        Format::Rpm => rpm::write_db(fs, contents, &pkgs)?,
    };
    Ok(Metadata {
        files,
        keep,
        named: listed,
        packages,
    })
}

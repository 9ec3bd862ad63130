//! [`DebianRoot`]: `.deb` files unpacked with `dpkg-deb`, usr-merged, with a dpkg database.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::postinst::emulate_maintainer_scripts;
use super::*;

/// The dpkg database of lower layers: status stanzas by `name[:arch]`, and installed names.
#[derive(Clone, Debug, Default)]
pub struct DpkgState {
    pub stanzas: BTreeMap<String, String>,
    pub installed: BTreeSet<String>,
}

/// A package unpacked into a [`DebianRoot`].
#[derive(Clone, Debug)]
pub struct InstalledPackage {
    pub name: String,
    pub arch: String,
    pub version: String,
    /// `name` or `name:arch` (Multi-Arch: same), as dpkg names its `info/` files.
    pub key: String,
    /// Paths as dpkg lists them (`/.`, `/bin`, `/bin/bash`, …), before usr-merging.
    pub paths: Vec<String>,
}

enum FileSource {
    Bytes(Vec<u8>),
    Host(PathBuf),
    Symlink(String),
}

/// Builds a [`DebianRoot`]; see [`DebianRoot::builder`].
pub struct DebianRootBuilder {
    arch: String,
    debs: Vec<PathBuf>,
    lower: Option<DpkgState>,
    dpkg_db: bool,
    files: Vec<(String, FileSource, u32)>,
}

/// Packages unpacked into a fresh temporary directory, made to look like an installed Debian
/// bookworm system (see the module docs). Removed on drop.
pub struct DebianRoot {
    dir: TempDir,
    pub arch: String,
    /// The packages this root unpacked (not those of lower layers).
    pub packages: Vec<InstalledPackage>,
    /// The dpkg state including this root's packages.
    pub dpkg: DpkgState,
}

impl DebianRoot {
    pub fn builder(arch: &str) -> DebianRootBuilder {
        DebianRootBuilder {
            arch: arch.to_string(),
            debs: Vec::new(),
            lower: None,
            dpkg_db: true,
            files: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of image path `p`.
    pub fn host(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    /// This root as an image layer (compressed once).
    pub fn layer(&self, created_by: &str) -> PreparedLayer {
        PreparedLayer::new(&dir_layer(self.path()), created_by)
    }
}

impl DebianRootBuilder {
    /// Unpack these `.deb` files (packages a lower layer already has are skipped).
    pub fn debs(mut self, debs: &[PathBuf]) -> Self {
        self.debs.extend(debs.iter().cloned());
        self
    }

    /// This root is a layer above one whose dpkg database is `lower`: its packages are not
    /// unpacked again, and the status file written here lists them too.
    pub fn on_top_of(mut self, lower: &DpkgState) -> Self {
        self.lower = Some(lower.clone());
        self
    }

    /// Write no dpkg database for this root's packages (status, `info/`): files that no
    /// package database accounts for, as in a relocated or hand-copied install.
    pub fn without_dpkg_db(mut self) -> Self {
        self.dpkg_db = false;
        self
    }

    /// Add a file (after unpacking and usr-merging, before the maintainer-script emulation).
    pub fn file(mut self, image_path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.files.push((
            image_path.to_string(),
            FileSource::Bytes(contents.as_ref().to_vec()),
            mode,
        ));
        self
    }

    /// Add a copy of a host file.
    pub fn host_file(mut self, host: impl AsRef<Path>, image_path: &str, mode: u32) -> Self {
        self.files.push((
            image_path.to_string(),
            FileSource::Host(host.as_ref().to_path_buf()),
            mode,
        ));
        self
    }

    /// Add a symlink (replacing what is there).
    pub fn symlink(mut self, image_path: &str, target: &str) -> Self {
        self.files.push((
            image_path.to_string(),
            FileSource::Symlink(target.to_string()),
            0o777,
        ));
        self
    }

    pub fn build(self) -> DebianRoot {
        let dir = tempfile::Builder::new()
            .prefix("pare-debroot-")
            .tempdir()
            .expect("create a temporary Debian root");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        let lower = self.lower.clone().unwrap_or_default();
        let ctrl_tmp = tempfile::tempdir().expect("tempdir for control archives");
        let mut stanzas = lower.stanzas.clone();
        let mut installed = lower.installed.clone();
        let mut unpacked: Vec<UnpackedDeb> = Vec::new();
        for deb in &self.debs {
            if lower.installed.contains(&deb_package_name(deb)) {
                continue;
            }
            let u = unpack_deb(deb, &root, &ctrl_tmp.path().join(deb_package_name(deb)));
            stanzas.insert(u.package.key.clone(), u.stanza.clone());
            installed.insert(u.package.name.clone());
            unpacked.push(u);
        }
        usrmerge(&root, &self.arch);
        add_files(&root, &self.files);
        let names: BTreeSet<String> = unpacked.iter().map(|u| u.package.name.clone()).collect();
        emulate_maintainer_scripts(&root, &self.arch, &names);
        if self.dpkg_db {
            write_dpkg_db(&root, &stanzas, &unpacked);
        }
        DebianRoot {
            dir,
            arch: self.arch,
            packages: unpacked.into_iter().map(|u| u.package).collect(),
            dpkg: if self.dpkg_db {
                DpkgState { stanzas, installed }
            } else {
                lower
            },
        }
    }
}

/// One `.deb` unpacked into a root: the package, its dpkg status stanza, and the contents of
/// its `info/` files.
struct UnpackedDeb {
    package: InstalledPackage,
    stanza: String,
    list: String,
    md5sums: String,
    conffiles: String,
}

/// `dpkg-deb OPTION DEB DIR`, which must succeed; its stdout.
fn dpkg_deb(option: &str, deb: &Path, dir: &Path) -> Vec<u8> {
    let out = run_capture(Command::new("dpkg-deb").arg(option).arg(deb).arg(dir));
    assert!(
        out.status.success(),
        "dpkg-deb {option} {} failed: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Unpack `deb` into `root` (its control archive into `ctrl_dir`).
fn unpack_deb(deb: &Path, root: &Path, ctrl_dir: &Path) -> UnpackedDeb {
    // Unpack, listing what was unpacked (`dpkg-deb -X` prints each member).
    let listing = dpkg_deb("-X", deb, root);
    let mut paths = vec!["/.".to_string()];
    for line in String::from_utf8_lossy(&listing).lines() {
        let p = line.trim_start_matches('.').trim_end_matches('/');
        if !p.is_empty() {
            paths.push(p.to_string());
        }
    }
    dpkg_deb("-e", deb, ctrl_dir);
    let control = fs::read_to_string(ctrl_dir.join("control")).expect("read control");
    let field = |name: &str| -> String {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let name = field("Package");
    let arch = field("Architecture");
    let key = if field("Multi-Arch") == "same" {
        format!("{name}:{arch}")
    } else {
        name.clone()
    };
    let md5sums = fs::read_to_string(ctrl_dir.join("md5sums")).unwrap_or_default();
    let conffiles = fs::read_to_string(ctrl_dir.join("conffiles")).unwrap_or_default();
    let stanza = status_stanza(&control, &conffile_field(root, &conffiles));
    UnpackedDeb {
        list: paths.join("\n") + "\n",
        package: InstalledPackage {
            name,
            version: field("Version"),
            arch,
            key,
            paths,
        },
        stanza,
        md5sums,
        conffiles,
    }
}

/// The lines of a status stanza's `Conffiles` field: each conffile with the md5 of it as
/// unpacked in `root`.
fn conffile_field(root: &Path, conffiles: &str) -> String {
    let mut field = String::new();
    for cf in conffiles
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
    {
        let host = root.join(cf.trim_start_matches('/'));
        let md5 = Command::new("md5sum")
            .arg(&host)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "newconffile".to_string());
        field.push_str(&format!(" {cf} {md5}\n"));
    }
    field
}

/// Status stanza: the control fields, Status after Package, Conffiles (when there are any)
/// before Description.
fn status_stanza(control: &str, conffile_field: &str) -> String {
    let mut stanza = String::new();
    for line in control.lines() {
        if line.starts_with("Description:") && !conffile_field.is_empty() {
            stanza.push_str("Conffiles:\n");
            stanza.push_str(conffile_field);
        }
        stanza.push_str(line);
        stanza.push('\n');
        if line.starts_with("Package:") {
            stanza.push_str("Status: install ok installed\n");
        }
    }
    stanza
}

/// The files a [`DebianRootBuilder`] adds (replacing what is there, directories aside).
fn add_files(root: &Path, files: &[(String, FileSource, u32)]) {
    for (image_path, source, mode) in files {
        let host = root.join(image_path.trim_start_matches('/'));
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        if fs::symlink_metadata(&host).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&host).unwrap_or_else(|e| panic!("rm {}: {e}", host.display()));
        }
        match source {
            FileSource::Bytes(b) => {
                fs::write(&host, b).unwrap_or_else(|e| panic!("write {}: {e}", host.display()))
            }
            FileSource::Host(h) => {
                fs::copy(h, &host)
                    .unwrap_or_else(|e| panic!("copy {} to {}: {e}", h.display(), host.display()));
            }
            FileSource::Symlink(t) => {
                symlink(t, &host).unwrap_or_else(|e| panic!("symlink {}: {e}", host.display()))
            }
        }
        if !matches!(source, FileSource::Symlink(_)) {
            fs::set_permissions(&host, fs::Permissions::from_mode(*mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", host.display()));
        }
    }
}

/// The dpkg database: `status` with every stanza, and `info/` files of the new packages.
fn write_dpkg_db(root: &Path, stanzas: &BTreeMap<String, String>, new: &[UnpackedDeb]) {
    let info = root.join("var/lib/dpkg/info");
    fs::create_dir_all(&info).expect("mkdir var/lib/dpkg/info");
    let mut status = String::new();
    for stanza in stanzas.values() {
        status.push_str(stanza);
        status.push('\n');
    }
    fs::write(root.join("var/lib/dpkg/status"), status).expect("write dpkg status");
    for u in new {
        let key = &u.package.key;
        fs::write(info.join(format!("{key}.list")), &u.list).expect("write .list");
        if !u.md5sums.is_empty() {
            fs::write(info.join(format!("{key}.md5sums")), &u.md5sums).expect("write .md5sums");
        }
        if !u.conffiles.is_empty() {
            fs::write(info.join(format!("{key}.conffiles")), &u.conffiles)
                .expect("write .conffiles");
        }
    }
}

/// Move what the packages put in `/bin`, `/sbin`, `/lib*` into `/usr` and replace those
/// directories with symlinks, as the usrmerge package does.
fn usrmerge(root: &Path, arch: &str) {
    let mut dirs = vec!["bin", "sbin", "lib"];
    if arch == "amd64" {
        dirs.push("lib64");
    }
    for extra in ["lib32", "libx32", "lib64"] {
        if !dirs.contains(&extra) && root.join(extra).is_dir() {
            dirs.push(extra);
        }
    }
    for d in dirs {
        let top = root.join(d);
        let usr = root.join("usr").join(d);
        let meta = fs::symlink_metadata(&top);
        if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            fs::create_dir_all(&usr).unwrap_or_else(|e| panic!("mkdir {}: {e}", usr.display()));
            merge_dir(&top, &usr);
            fs::remove_dir(&top).unwrap_or_else(|e| panic!("rmdir {}: {e}", top.display()));
        } else if meta.is_ok() {
            fs::remove_file(&top).unwrap_or_else(|e| panic!("rm {}: {e}", top.display()));
        }
        if !usr.exists() {
            fs::create_dir_all(&usr).unwrap_or_else(|e| panic!("mkdir {}: {e}", usr.display()));
        }
        symlink(format!("usr/{d}"), &top).unwrap_or_else(|e| panic!("ln {}: {e}", top.display()));
    }
}

fn merge_dir(src: &Path, dst: &Path) {
    let mut entries: Vec<PathBuf> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for s in entries {
        let d = dst.join(s.file_name().expect("name"));
        let sm = fs::symlink_metadata(&s).expect("lstat");
        match fs::symlink_metadata(&d) {
            Err(_) => fs::rename(&s, &d)
                .unwrap_or_else(|e| panic!("mv {} {}: {e}", s.display(), d.display())),
            Ok(dm) if dm.is_dir() && sm.is_dir() => {
                merge_dir(&s, &d);
                fs::remove_dir(&s).unwrap_or_else(|e| panic!("rmdir {}: {e}", s.display()));
            }
            Ok(dm) => {
                let same = if sm.file_type().is_symlink() && dm.file_type().is_symlink() {
                    fs::read_link(&s).ok() == fs::read_link(&d).ok()
                } else {
                    fs::read(&s).ok() == fs::read(&d).ok()
                };
                // A link from the /usr side to the top-level file (the old way round) gives
                // way to the file.
                let d_points_to_s = dm.file_type().is_symlink()
                    && fs::read_link(&d).is_ok_and(|t| {
                        t.ends_with(s.strip_prefix(src).unwrap_or(&s))
                            || t.file_name() == s.file_name()
                    });
                assert!(
                    same || d_points_to_s,
                    "usrmerge conflict: both {} and {} exist and differ",
                    s.display(),
                    d.display()
                );
                if same {
                    if sm.is_dir() {
                        fs::remove_dir_all(&s).expect("rm dup dir");
                    } else {
                        fs::remove_file(&s).expect("rm dup");
                    }
                } else {
                    fs::remove_file(&d).expect("rm usr-side link");
                    fs::rename(&s, &d).expect("mv");
                }
            }
        }
    }
}

//! Images made of real Debian packages, and workloads run in them with and without `strace`.
//!
//! - [`debs`]: the `.deb` files of some packages and their whole dependency closure, downloaded
//!   once by apt and cached under `target/test-debs/<arch>/<key>/`.
//! - [`DebianRoot`]: those packages unpacked with `dpkg-deb -x` into a root that looks like a
//!   Debian bookworm container: usr-merged, with what the maintainer scripts the workloads
//!   depend on would have made (users, `nsswitch.conf`, `/etc/localtime`, alternatives, nginx
//!   module links, the CA store), and a real dpkg database.
//! - [`bookworm_base`]: the packages of a Debian slim image as one layer, built once per test
//!   process; test images are that layer plus a layer with the app's packages and files.
//! - [`run_workload`]: an image's entrypoint run in an unpacked root as 65532:65532, in its own
//!   mount and pid namespaces (a `/proc`, a minimal `/dev`, the image's `Env` and `WorkingDir`),
//!   optionally under `strace`; foreign-architecture roots run through `qemu-user-static`
//!   registered in a private `binfmt_misc`.
//! - [`parse_strace`]: the regular files a traced workload touched, resolved inside the root.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::{
    BuiltImage, ImageSpec, Layer, NONROOT_UID, dir_layer, find_tool, push_layout, run_capture,
    set_layout_tag, write_blob,
};

/// What debootstrap's `minbase` variant installs (the packages of Debian's slim image).
pub const BOOKWORM_MINBASE: &[&str] = &[
    "base-files",
    "base-passwd",
    "bash",
    "coreutils",
    "dash",
    "debianutils",
    "diffutils",
    "findutils",
    "grep",
    "gzip",
    "hostname",
    "libc-bin",
    "login",
    "mawk",
    "ncurses-base",
    "sed",
    "tar",
    "tzdata",
    "util-linux",
    "passwd",
];

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `target/` of the crate).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// This machine's dpkg architecture (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    static ARCH: OnceLock<String> = OnceLock::new();
    ARCH.get_or_init(|| {
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "amd64".to_string())
    })
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn deb_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The package name of an apt-downloaded `.deb` (`NAME_VERSION_ARCH.deb`).
pub fn deb_package_name(deb: &Path) -> String {
    let file = deb.file_name().unwrap_or_default().to_string_lossy();
    file.split('_').next().unwrap_or_default().to_string()
}

/// The `.deb` of package `name` in `debs`.
pub fn deb_named<'a>(debs: &'a [PathBuf], name: &str) -> Option<&'a PathBuf> {
    debs.iter().find(|d| deb_package_name(d) == name)
}

/// The `.deb` files of `packages` and of everything they depend on (no recommends), for `arch`,
/// as apt resolves them for an empty system. Downloaded once into
/// `target/test-debs/<arch>/<key>/` (key: a hash of the arch and the sorted package list) and
/// reused by later runs; parallel callers each download into a temporary directory and rename
/// it into place (the first one wins). `Err` when apt cannot fetch them (no package lists:
/// `apt-get update`; a foreign arch: `dpkg --add-architecture ARCH && apt-get update`).
pub fn debs(arch: &str, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut sorted: Vec<&str> = packages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let key = short_hash(&format!("{arch}\n{}", sorted.join("\n")));
    let arch_dir = target_dir().join("test-debs").join(arch);
    let dir = arch_dir.join(&key);
    if dir.is_dir() {
        let found = deb_files(&dir);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let apt = find_tool("apt-get").ok_or("apt-get is not installed")?;
    fs::create_dir_all(&arch_dir).map_err(|e| format!("mkdir {}: {e}", arch_dir.display()))?;
    let tmp = arch_dir.join(format!(".tmp-{key}-{}", unique_suffix()));
    fs::create_dir_all(tmp.join("partial")).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    let status = arch_dir.join(format!(".status-{}", unique_suffix()));
    fs::write(&status, b"").map_err(|e| format!("write {}: {e}", status.display()))?;
    let started = Instant::now();
    let mut cmd = Command::new(apt);
    cmd.arg("-q")
        .arg(format!("-oDir::State::status={}", status.display()))
        .arg(format!("-oDir::Cache::archives={}", tmp.display()))
        .arg("-oDir::Cache::pkgcache=")
        .arg("-oDir::Cache::srcpkgcache=")
        .arg("-oDebug::NoLocking=1")
        .arg("-oAPT::Sandbox::User=root");
    if arch != host_arch() {
        cmd.arg(format!("-oAPT::Architecture={arch}"))
            .arg(format!("-oAPT::Architectures={arch}"));
    }
    cmd.args([
        "install",
        "--download-only",
        "--no-install-recommends",
        "-y",
    ])
    .args(&sorted)
    .env("DEBIAN_FRONTEND", "noninteractive");
    let out = cmd.output().map_err(|e| format!("run apt-get: {e}"));
    let _ = fs::remove_file(&status);
    let out = out?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let hint = if arch == host_arch() {
            "run `apt-get update`".to_string()
        } else {
            format!("run `dpkg --add-architecture {arch} && apt-get update`")
        };
        return Err(format!(
            "apt-get could not download {arch} packages {} ({hint}): {}",
            sorted.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = fs::remove_dir_all(tmp.join("partial"));
    let _ = fs::remove_file(tmp.join("lock"));
    let n = deb_files(&tmp).len();
    if n == 0 {
        let _ = fs::remove_dir_all(&tmp);
        return Err(format!(
            "apt-get downloaded nothing for {arch} {}",
            sorted.join(" ")
        ));
    }
    if fs::rename(&tmp, &dir).is_err() {
        // Another test (or process) got there first: use theirs.
        let _ = fs::remove_dir_all(&tmp);
    }
    eprintln!(
        "debs: {n} {arch} packages for {} downloaded in {:.1?} into {}",
        sorted.join(" "),
        started.elapsed(),
        dir.display()
    );
    let found = deb_files(&dir);
    if found.is_empty() {
        return Err(format!("no .deb files in {}", dir.display()));
    }
    Ok(found)
}

// ------------------------------------------------------------------------------------------------
// Debian roots
// ------------------------------------------------------------------------------------------------

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
        let mut packages = Vec::new();
        let mut stanzas = lower.stanzas.clone();
        let mut installed = lower.installed.clone();
        // (info key, .list, .md5sums, .conffiles)
        let mut new_files: Vec<(String, String, String, String)> = Vec::new();
        for deb in &self.debs {
            if lower.installed.contains(&deb_package_name(deb)) {
                continue;
            }
            // Unpack, listing what was unpacked (`dpkg-deb -X` prints each member).
            let out = run_capture(Command::new("dpkg-deb").arg("-X").arg(deb).arg(&root));
            assert!(
                out.status.success(),
                "dpkg-deb -X {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut paths = vec!["/.".to_string()];
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let p = line.trim_start_matches('.').trim_end_matches('/');
                if !p.is_empty() {
                    paths.push(p.to_string());
                }
            }
            let cdir = ctrl_tmp.path().join(deb_package_name(deb));
            let out = run_capture(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&cdir));
            assert!(
                out.status.success(),
                "dpkg-deb -e {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let control = fs::read_to_string(cdir.join("control")).expect("read control");
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
            let md5sums = fs::read_to_string(cdir.join("md5sums")).unwrap_or_default();
            let conffiles = fs::read_to_string(cdir.join("conffiles")).unwrap_or_default();
            // Status stanza: the control fields, Status after Package, Conffiles with the
            // md5 of each conffile as unpacked.
            let mut conffile_field = String::new();
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
                conffile_field.push_str(&format!(" {cf} {md5}\n"));
            }
            let mut stanza = String::new();
            for line in control.lines() {
                if line.starts_with("Description:") && !conffile_field.is_empty() {
                    stanza.push_str("Conffiles:\n");
                    stanza.push_str(&conffile_field);
                }
                stanza.push_str(line);
                stanza.push('\n');
                if line.starts_with("Package:") {
                    stanza.push_str("Status: install ok installed\n");
                }
            }
            stanzas.insert(key.clone(), stanza);
            installed.insert(name.clone());
            new_files.push((key.clone(), paths.join("\n") + "\n", md5sums, conffiles));
            packages.push(InstalledPackage {
                name,
                version: field("Version"),
                arch,
                key,
                paths,
            });
        }
        usrmerge(&root, &self.arch);
        for (image_path, source, mode) in &self.files {
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
                    fs::copy(h, &host).unwrap_or_else(|e| {
                        panic!("copy {} to {}: {e}", h.display(), host.display())
                    });
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
        let names: BTreeSet<String> = packages.iter().map(|p| p.name.clone()).collect();
        emulate_maintainer_scripts(&root, &self.arch, &names);
        if self.dpkg_db {
            let info = root.join("var/lib/dpkg/info");
            fs::create_dir_all(&info).expect("mkdir var/lib/dpkg/info");
            let mut status = String::new();
            for stanza in stanzas.values() {
                status.push_str(stanza);
                status.push('\n');
            }
            fs::write(root.join("var/lib/dpkg/status"), status).expect("write dpkg status");
            for (key, list, md5sums, conffiles) in &new_files {
                fs::write(info.join(format!("{key}.list")), list).expect("write .list");
                if !md5sums.is_empty() {
                    fs::write(info.join(format!("{key}.md5sums")), md5sums)
                        .expect("write .md5sums");
                }
                if !conffiles.is_empty() {
                    fs::write(info.join(format!("{key}.conffiles")), conffiles)
                        .expect("write .conffiles");
                }
            }
        }
        DebianRoot {
            dir,
            arch: self.arch,
            packages,
            dpkg: if self.dpkg_db {
                DpkgState { stanzas, installed }
            } else {
                lower
            },
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

fn write_if_missing(root: &Path, image_path: &str, contents: &[u8], mode: u32) {
    let p = root.join(image_path.trim_start_matches('/'));
    if fs::symlink_metadata(&p).is_ok() {
        return;
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("mkdir parent");
    }
    fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn link_if_missing(root: &Path, image_path: &str, target: &str) {
    let p = root.join(image_path.trim_start_matches('/'));
    if fs::symlink_metadata(&p).is_ok() {
        return;
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("mkdir parent");
    }
    symlink(target, &p).unwrap_or_else(|e| panic!("ln -s {target} {}: {e}", p.display()));
}

fn mkdir_mode(root: &Path, image_path: &str, mode: u32) {
    let p = root.join(image_path.trim_start_matches('/'));
    fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod dir");
}

/// What the maintainer scripts of the packages newly unpacked into `root` would have made, as
/// far as the test workloads (and a scanner) can tell.
fn emulate_maintainer_scripts(root: &Path, arch: &str, new: &BTreeSet<String>) {
    let has = |p: &str| new.contains(p);
    if has("base-files") {
        // base-files.postinst: directories, root's dot files, /etc/profile; a container
        // runtime's /etc/hosts (the image has one so that `localhost` resolves without it).
        for (d, mode) in [
            ("/tmp", 0o1777),
            ("/var/tmp", 0o1777),
            ("/run/lock", 0o1777),
            ("/mnt", 0o755),
            ("/srv", 0o755),
            ("/opt", 0o755),
            ("/media", 0o755),
            ("/etc/opt", 0o755),
            ("/var/opt", 0o755),
            ("/var/mail", 0o2775),
            ("/usr/local/bin", 0o755),
            ("/usr/local/sbin", 0o755),
            ("/usr/local/lib", 0o755),
            ("/usr/local/share", 0o755),
            ("/usr/local/include", 0o755),
            ("/usr/local/etc", 0o755),
            ("/usr/local/src", 0o755),
            ("/usr/local/games", 0o755),
            ("/root", 0o700),
            ("/home", 0o755),
        ] {
            mkdir_mode(root, d, mode);
        }
        for (from, to, mode) in [
            ("dot.profile", "/root/.profile", 0o644),
            ("dot.bashrc", "/root/.bashrc", 0o644),
            ("profile", "/etc/profile", 0o644),
            ("motd", "/etc/motd", 0o644),
        ] {
            if let Ok(b) = fs::read(root.join("usr/share/base-files").join(from)) {
                write_if_missing(root, to, &b, mode);
            }
        }
        link_if_missing(root, "/var/spool/mail", "../mail");
        link_if_missing(root, "/usr/local/man", "share/man");
        write_if_missing(
            root,
            "/etc/hosts",
            b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            0o644,
        );
    }
    if has("base-passwd") {
        // update-passwd copies the masters; passwd.postinst (shadowconfig on: pwconv, grpconv)
        // moves the password fields into /etc/shadow and /etc/gshadow, leaving `x`.
        let passwd = fs::read_to_string(root.join("usr/share/base-passwd/passwd.master"))
            .expect("base-passwd passwd.master");
        let group = fs::read_to_string(root.join("usr/share/base-passwd/group.master"))
            .expect("base-passwd group.master");
        let shadowed = |text: &str| -> String {
            text.lines()
                .map(|l| {
                    let mut f: Vec<&str> = l.split(':').collect();
                    if f.len() > 2 {
                        f[1] = "x";
                    }
                    f.join(":") + "\n"
                })
                .collect()
        };
        write_if_missing(root, "/etc/passwd", shadowed(&passwd).as_bytes(), 0o644);
        write_if_missing(root, "/etc/group", shadowed(&group).as_bytes(), 0o644);
        let shadow: String = passwd
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(|u| format!("{u}:*:19500:0:99999:7:::\n"))
            .collect();
        let gshadow: String = group
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(|g| format!("{g}:*::\n"))
            .collect();
        write_if_missing(root, "/etc/shadow", shadow.as_bytes(), 0o640);
        write_if_missing(root, "/etc/gshadow", gshadow.as_bytes(), 0o640);
    }
    if has("libc-bin")
        && let Ok(b) = fs::read(root.join("usr/share/libc-bin/nsswitch.conf"))
    {
        write_if_missing(root, "/etc/nsswitch.conf", &b, 0o644);
    }
    if has("tzdata") {
        link_if_missing(root, "/etc/localtime", "/usr/share/zoneinfo/Etc/UTC");
        write_if_missing(root, "/etc/timezone", b"Etc/UTC\n", 0o644);
    }
    if has("debianutils") {
        // add-shell, from the postinsts of dash and bash.
        let mut shells = String::from("# /etc/shells: valid login shells\n");
        for sh in ["sh", "dash", "bash", "rbash"] {
            if fs::symlink_metadata(root.join("usr/bin").join(sh)).is_ok() {
                shells.push_str(&format!("/bin/{sh}\n/usr/bin/{sh}\n"));
            }
        }
        write_if_missing(root, "/etc/shells", shells.as_bytes(), 0o644);
    }
    if has("nginx-common") || has("nginx") {
        // nginx's postinst: the default site, its page.
        link_if_missing(
            root,
            "/etc/nginx/sites-enabled/default",
            "/etc/nginx/sites-available/default",
        );
        if let Ok(b) = fs::read(root.join("usr/share/nginx/html/index.html")) {
            write_if_missing(root, "/var/www/html/index.nginx-debian.html", &b, 0o644);
        }
    }
    // libnginx-mod-*.postinst: enable the module.
    if let Ok(rd) = fs::read_dir(root.join("usr/share/nginx/modules-available")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pkg = format!("libnginx-{}", name.trim_end_matches(".conf"));
            if name.ends_with(".conf") && has(&pkg) {
                link_if_missing(
                    root,
                    &format!("/etc/nginx/modules-enabled/50-{name}"),
                    &format!("/usr/share/nginx/modules-available/{name}"),
                );
            }
        }
    }
    // openjdk-*-jre-headless.postinst: update-alternatives for its tools, /etc/.java.
    for pkg in new.iter().filter(|p| {
        p.starts_with("openjdk-") && (p.ends_with("-jre-headless") || p.ends_with("-jdk-headless"))
    }) {
        let version = pkg
            .trim_start_matches("openjdk-")
            .split('-')
            .next()
            .unwrap_or_default();
        let base = format!("/usr/lib/jvm/java-{version}-openjdk-{arch}");
        let mut tools: Vec<(String, String)> = Vec::new();
        if let Ok(rd) = fs::read_dir(root.join(base.trim_start_matches('/')).join("bin")) {
            for e in rd.flatten() {
                let t = e.file_name().to_string_lossy().into_owned();
                tools.push((t.clone(), format!("{base}/bin/{t}")));
            }
        }
        if root
            .join(base.trim_start_matches('/'))
            .join("lib/jexec")
            .exists()
        {
            tools.push(("jexec".to_string(), format!("{base}/lib/jexec")));
        }
        tools.sort();
        for (tool, path) in tools {
            link_if_missing(root, &format!("/etc/alternatives/{tool}"), &path);
            link_if_missing(
                root,
                &format!("/usr/bin/{tool}"),
                &format!("/etc/alternatives/{tool}"),
            );
            write_if_missing(
                root,
                &format!("/var/lib/dpkg/alternatives/{tool}"),
                format!("auto\n/usr/bin/{tool}\n\n{path}\n1711\n\n").as_bytes(),
                0o644,
            );
        }
        mkdir_mode(root, "/etc/.java/.systemPrefs", 0o755);
        write_if_missing(root, "/etc/.java/.systemPrefs/.system.lock", b"", 0o644);
        write_if_missing(
            root,
            "/etc/.java/.systemPrefs/.systemRootModFile",
            b"",
            0o644,
        );
    }
    if has("ca-certificates") {
        update_ca_certificates(root);
    }
    if has("w3c-sgml-lib") {
        // w3c-sgml-lib.postinst (update-xmlcatalog): the root catalog delegates the W3C
        // identifiers to the package's catalog, which delegates to its DTD catalog (whose
        // entries are relative to it). The postinst lists each identifier; a prefix does the
        // same for the tests.
        let dtd = "file:///usr/share/xml/w3c-sgml-lib/schema/dtd/catalog.xml";
        let entries = |to: &str| {
            format!(
                "<?xml version=\"1.0\"?>\n<catalog xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\">\n\
                 <delegatePublic publicIdStartString=\"-//W3C//\" catalog=\"{to}\"/>\n\
                 <delegateSystem systemIdStartString=\"http://www.w3.org/\" catalog=\"{to}\"/>\n\
                 </catalog>\n"
            )
        };
        write_if_missing(
            root,
            "/etc/xml/w3c-sgml-lib.xml",
            entries(dtd).as_bytes(),
            0o644,
        );
        write_if_missing(
            root,
            "/etc/xml/catalog",
            entries("file:///etc/xml/w3c-sgml-lib.xml").as_bytes(),
            0o644,
        );
    }
}

/// ca-certificates.postinst (every Mozilla CA trusted) and `update-ca-certificates`: the
/// bundle `/etc/ssl/certs/ca-certificates.crt` (the Mozilla CAs, then the local ones from
/// `/usr/local/share/ca-certificates`), a `NAME.pem` link per CA and, for the local CAs, the
/// `HASH.0` link OpenSSL looks CAs up by (computed with the host's `openssl`; the Mozilla CAs'
/// hash links are left out, nothing here looks them up).
fn update_ca_certificates(root: &Path) {
    let share = root.join("usr/share/ca-certificates");
    let mut mozilla: Vec<String> = Vec::new();
    let mut stack = vec![share.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                mozilla.push(p.strip_prefix(&share).unwrap().display().to_string());
            }
        }
    }
    mozilla.sort();
    let mut conf =
        String::from("# Generated by the pare test harness, as ca-certificates.postinst does\n");
    let certs = root.join("etc/ssl/certs");
    fs::create_dir_all(&certs).expect("mkdir /etc/ssl/certs");
    let mut bundle = Vec::new();
    for m in &mozilla {
        conf.push_str(m);
        conf.push('\n');
        let body = fs::read(share.join(m)).expect("read CA");
        bundle.extend_from_slice(&body);
        if !body.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = Path::new(m)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{name}.pem"),
            &format!("/usr/share/ca-certificates/{m}"),
        );
    }
    write_if_missing(root, "/etc/ca-certificates.conf", conf.as_bytes(), 0o644);
    let local = root.join("usr/local/share/ca-certificates");
    let mut locals: Vec<PathBuf> = fs::read_dir(&local)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    locals.sort();
    for l in locals {
        let body = fs::read(&l).expect("read local CA");
        bundle.extend_from_slice(&body);
        if !body.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = l.file_stem().unwrap().to_string_lossy().into_owned();
        let rel = l.strip_prefix(root).unwrap().display().to_string();
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{name}.pem"),
            &format!("/{rel}"),
        );
        let hash = Command::new("openssl")
            .args(["x509", "-hash", "-noout", "-in"])
            .arg(&l)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| panic!("openssl x509 -hash of {} failed", l.display()));
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{hash}.0"),
            &format!("{name}.pem"),
        );
    }
    let p = certs.join("ca-certificates.crt");
    fs::write(&p, bundle).expect("write ca-certificates.crt");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod bundle");
}

// ------------------------------------------------------------------------------------------------
// Layers and images
// ------------------------------------------------------------------------------------------------

/// A layer compressed once, to be written into any number of layouts.
#[derive(Clone, Debug)]
pub struct PreparedLayer {
    pub blob: Arc<Vec<u8>>,
    pub media_type: &'static str,
    pub diff_id: String,
    pub created_by: String,
}

impl PreparedLayer {
    pub fn new(layer: &Layer, created_by: &str) -> PreparedLayer {
        let (blob, media_type, diff_id) = layer.blob();
        PreparedLayer {
            blob: Arc::new(blob),
            media_type,
            diff_id,
            created_by: created_by.to_string(),
        }
    }
}

/// Write `spec`'s config (its `layers` are ignored) with `layers` as image `tag` of the OCI
/// layout at `dir`.
pub fn write_prepared_image(
    dir: &Path,
    tag: &str,
    spec: &ImageSpec,
    layers: &[&PreparedLayer],
) -> BuiltImage {
    let mut spec = spec.clone();
    spec.layers = layers
        .iter()
        .map(|l| Layer::new().created_by(&l.created_by))
        .collect();
    let mut descriptors = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let digest = write_blob(dir, &l.blob);
        descriptors.push(serde_json::json!({
            "mediaType": l.media_type, "digest": digest, "size": l.blob.len(),
        }));
        layer_digests.push(digest);
        diff_ids.push(l.diff_id.clone());
    }
    let config = spec.config_json(&diff_ids);
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    let config_digest = write_blob(dir, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": super::MEDIA_TYPE_OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = write_blob(dir, &manifest_bytes);
    let built = BuiltImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        manifest,
        config_digest,
        config,
        layer_digests,
        diff_ids,
    };
    let mut desc = built.descriptor();
    desc["platform"] = spec.platform();
    set_layout_tag(dir, tag, &desc);
    built
}

/// Build the image in a temporary layout and push it to `dest` (`HOST/REPO:TAG`).
pub fn push_prepared_image(dest: &str, spec: &ImageSpec, layers: &[&PreparedLayer]) -> BuiltImage {
    let dir = tempfile::tempdir().expect("layout tempdir");
    let built = write_prepared_image(dir.path(), "img", spec, layers);
    push_layout(dir.path(), "img", dest, None);
    built
}

/// The Debian slim base (see [`BOOKWORM_MINBASE`]) as a layer, and its dpkg state.
pub struct BaseImage {
    pub arch: String,
    pub layer: PreparedLayer,
    pub dpkg: DpkgState,
    pub debs: Vec<PathBuf>,
}

/// The bookworm slim base for this machine's architecture, built once per test process.
pub fn bookworm_base() -> Result<&'static BaseImage, String> {
    static BASE: OnceLock<Result<BaseImage, String>> = OnceLock::new();
    BASE.get_or_init(|| {
        let started = Instant::now();
        let arch = host_arch().to_string();
        let debs = debs(&arch, BOOKWORM_MINBASE)?;
        let root = DebianRoot::builder(&arch).debs(&debs).build();
        let layer = root.layer("debian bookworm minbase (pare test harness)");
        eprintln!(
            "bookworm base: {} packages, layer {:.1} MB compressed, built in {:.1?}",
            root.packages.len(),
            layer.blob.len() as f64 / 1e6,
            started.elapsed()
        );
        Ok(BaseImage {
            arch,
            layer,
            dpkg: root.dpkg.clone(),
            debs,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A root with `packages` (and their closure, minus what the base has) on top of the base.
pub fn app_root_builder(base: &BaseImage, packages: &[&str]) -> Result<DebianRootBuilder, String> {
    let d = if packages.is_empty() {
        Vec::new()
    } else {
        debs(&base.arch, packages)?
    };
    Ok(DebianRoot::builder(&base.arch)
        .on_top_of(&base.dpkg)
        .debs(&d))
}

// ------------------------------------------------------------------------------------------------
// Running workloads
// ------------------------------------------------------------------------------------------------

/// One run of an image's entrypoint.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Shown in messages.
    pub label: String,
    /// Replaces the image's `Cmd` (as `docker run IMAGE ARGS…` does).
    pub args: Option<Vec<String>>,
    /// Set at run time, on top of the image's `Env`.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// A server: wait for this port, GET these paths; their status lines and bodies are the
    /// workload's output.
    pub http: Option<HttpProbe>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct HttpProbe {
    pub port: u16,
    pub paths: Vec<String>,
    /// Instead of GETs: send these bytes and take the reply (until the peer closes or is idle
    /// for 2 s) as the output, for servers of other protocols (redis, memcached, SMTP…).
    pub send: Option<Vec<u8>>,
}

impl Workload {
    pub fn new(label: &str) -> Workload {
        Workload {
            label: label.to_string(),
            args: None,
            env: Vec::new(),
            stdin: Vec::new(),
            http: None,
            timeout: Duration::from_secs(180),
        }
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn stdin(mut self, b: impl AsRef<[u8]>) -> Self {
        self.stdin = b.as_ref().to_vec();
        self
    }

    pub fn http(mut self, port: u16, paths: &[&str]) -> Self {
        self.http = Some(HttpProbe {
            port,
            paths: paths.iter().map(|s| s.to_string()).collect(),
            send: None,
        });
        self
    }

    /// A server of another protocol: once `port` listens, send `bytes`; the reply is the output.
    pub fn tcp(mut self, port: u16, bytes: impl AsRef<[u8]>) -> Self {
        self.http = Some(HttpProbe {
            port,
            paths: Vec::new(),
            send: Some(bytes.as_ref().to_vec()),
        });
        self
    }
}

/// What a workload did.
#[derive(Clone, Debug)]
pub struct WorkloadResult {
    /// Exit code (`None`: killed by a signal). For servers: 0 when every request was answered.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl WorkloadResult {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Runs in the new namespaces before the workload: a minimal `/dev` (tmpfs with the host's
/// null, zero, full, random, urandom and tty bound in), and for foreign roots a private
/// `binfmt_misc` with qemu registered (`F`: the interpreter is opened now, outside the root).
const PRELUDE: &str = r#"set -e
root=$1 userns=$2 binfmt=$3 reg=$4
shift 4
[ "$1" = -- ] && shift
path_set=${PATH+x}
img_path=${PATH-}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ "$userns" = 1 ]; then
  n=0
  while [ -z "$(cat /proc/self/uid_map)" ]; do
    n=$((n+1)); [ $n -lt 600 ] || { echo "pare-test: no uid map was written" >&2; exit 125; }
    sleep 0.05
  done
fi
mount -t tmpfs -o mode=755,size=1m tmpfs "$root/dev"
for d in null zero full random urandom tty; do
  [ -e "/dev/$d" ] || continue
  : > "$root/dev/$d"
  mount --bind "/dev/$d" "$root/dev/$d"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir -m 1777 "$root/dev/shm"
if [ "$binfmt" != - ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || {
    echo "pare-test: cannot mount a private binfmt_misc (needs Linux >= 6.7)" >&2; exit 125; }
  printf '%s' "$reg" > "$binfmt/register"
fi
if [ -n "$path_set" ]; then PATH=$img_path; else unset PATH; fi
exec "$@"
"#;

/// qemu-user-static for a foreign architecture: the interpreter and its `binfmt_misc`
/// registration (magic and mask as Debian's qemu-user-static registers them).
pub fn qemu_for(arch: &str) -> Result<(PathBuf, String), String> {
    let (name, magic, mask) = match arch {
        "arm64" => (
            "aarch64",
            r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
        ),
        other => return Err(format!("no qemu registration known for {other}")),
    };
    let qemu = PathBuf::from(format!("/usr/bin/qemu-{name}-static"));
    if !qemu.exists() {
        return Err(format!(
            "{} is missing (install qemu-user-static)",
            qemu.display()
        ));
    }
    let reg = format!(":pare-qemu-{name}:M::{magic}:{mask}:{}:F", qemu.display());
    Ok((qemu, reg))
}

/// `-I 2`: strace blocks fatal signals only while it decodes a syscall (with `-o FILE PROG`
/// it would block them always, and then nothing can stop a traced server but SIGKILL).
/// Whether this machine can run foreign-architecture roots the way [`run_workload`] does:
/// qemu-user-static for `arch`, and a private `binfmt_misc` in a user namespace (Linux ≥ 6.7),
/// so that nothing is registered for the whole machine.
pub fn foreign_arch_support(arch: &str) -> Result<(), String> {
    qemu_for(arch)?;
    let unshare = find_tool("unshare").ok_or("unshare (util-linux) is missing")?;
    let out = Command::new(unshare)
        .args(["--user", "--map-root-user", "--mount", "/bin/sh", "-c"])
        .arg(
            "d=$(mktemp -d) && mount -t binfmt_misc binfmt_misc \"$d\"; r=$?; \
             umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $r",
        )
        .output()
        .map_err(|e| format!("run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot mount a private binfmt_misc in a user namespace (needs Linux >= 6.7): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const STRACE_ARGS: &[&str] = &[
    "-I",
    "2",
    "-f",
    "-qq",
    "-s",
    "65535",
    "-e",
    "trace=%file,%process,fchdir",
    "-e",
    "signal=none",
];

/// `(argv, env, workdir)` for running image `config` (the image config JSON) with `w`.
pub fn workload_argv(config: &Value, w: &Workload) -> (Vec<String>, Vec<(String, String)>, String) {
    let c = &config["config"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strs(&c["Entrypoint"]);
    match &w.args {
        Some(a) => argv.extend(a.iter().cloned()),
        None => argv.extend(strs(&c["Cmd"])),
    }
    let mut env: Vec<(String, String)> = strs(&c["Env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &w.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let wd = c["WorkingDir"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("/")
        .to_string();
    (argv, env, wd)
}

struct Spawned {
    child: Child,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    err: std::sync::mpsc::Receiver<Vec<u8>>,
    _binfmt: Option<TempDir>,
}

/// Read `r` to its end on a thread; the bytes arrive on the channel.
fn reader(mut r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        let _ = tx.send(b);
    });
    rx
}

fn spawn_in_root(root: &Path, config: &Value, w: &Workload, strace_log: Option<&Path>) -> Spawned {
    let (argv, env, wd) = workload_argv(config, w);
    assert!(
        !argv.is_empty(),
        "{}: the image has no Entrypoint or Cmd",
        w.label
    );
    for d in ["proc", "dev"] {
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        }
    }
    let arch = config["architecture"].as_str().unwrap_or("amd64");
    let foreign = arch != host_arch();
    let (binfmt, reg) = if foreign {
        let (_, reg) = qemu_for(arch).unwrap_or_else(|e| panic!("{}: {e}", w.label));
        let d = tempfile::Builder::new()
            .prefix("pare-binfmt-")
            .tempdir()
            .expect("binfmt mount point");
        (Some(d), reg)
    } else {
        (None, "-".to_string())
    };
    let unshare = find_tool("unshare").expect("unshare (util-linux) is needed");
    let mut cmd = Command::new(&unshare);
    if foreign {
        cmd.arg("--user");
    }
    cmd.args(["--mount", "--pid", "--fork", "--kill-child=SIGTERM"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .args(["/bin/sh", "-c", PRELUDE, "sh"])
        .arg(root)
        .arg(if foreign { "1" } else { "0" })
        .arg(
            binfmt
                .as_ref()
                .map(|d| d.path().display().to_string())
                .unwrap_or_else(|| "-".into()),
        )
        .arg(&reg)
        .arg("--");
    if let Some(log) = strace_log {
        cmd.arg(find_tool("strace").expect("strace is needed"))
            .args(STRACE_ARGS)
            .arg("-o")
            .arg(log);
    }
    cmd.arg(&unshare)
        .arg(format!("--root={}", root.display()))
        .arg(format!("--wd={wd}"))
        .arg(format!("--setuid={NONROOT_UID}"))
        .arg(format!("--setgid={NONROOT_UID}"))
        .arg("--")
        .args(&argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: spawn {cmd:?}: {e}", w.label));
    if foreign {
        // The user namespace's owner is the unshare process: map uids and gids 0..65536 to
        // the same ids outside (we are root), so that 65532 exists inside.
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536\n").is_ok()
                && fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536\n").is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: could not write the uid/gid map of the user namespace",
                w.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let input = w.stdin.clone();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    Spawned {
        child,
        out,
        err,
        _binfmt: binfmt,
    }
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Host pids of the children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    if let Ok(c) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return c
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|pp| pp.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Stop a workload. The outer unshare's `--kill-child` cannot be relied on (the parent-death
/// signal is cleared when the workload's credentials change to 65532), so: SIGTERM to the
/// namespace's first process (the workload, or strace), which it handles (nginx, strace
/// `-I 2`); when that does not end it within 10 s, SIGKILL to it, which ends every process of
/// the namespace.
fn terminate(child: &mut Child) {
    let pid = child.id();
    let init = children_of(pid);
    if init.is_empty() {
        kill("-TERM", pid);
    }
    for i in &init {
        kill("-TERM", *i);
    }
    if wait_timeout(child, Duration::from_secs(10)).is_none() {
        for i in &init {
            kill("-KILL", *i);
        }
        if wait_timeout(child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(mut s: Spawned, timeout: Duration, mut note: String) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let status = match wait_timeout(&mut s.child, timeout) {
        Some(st) => Some(st),
        None => {
            note.push_str(&format!("pare-test: timed out after {timeout:?}, killed\n"));
            terminate(&mut s.child);
            wait_timeout(&mut s.child, Duration::from_secs(10)).or_else(|| {
                let _ = s.child.kill();
                s.child.wait().ok()
            })
        }
    };
    // Something that outlived the workload may still hold the pipes: give up on it after 10 s.
    let stdout = s
        .out
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            note.push_str("pare-test: stdout was still open 10 s after the end\n");
            Vec::new()
        });
    let mut stderr = s
        .err
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    stderr.extend_from_slice(note.as_bytes());
    (status.and_then(|s| s.code()), stdout, stderr)
}

/// Run image `config`'s entrypoint (with `w`) in the unpacked `root` as 65532:65532, in new
/// mount and pid namespaces with a `/proc` and a minimal `/dev`, with only the image's `Env`
/// (plus `w.env`), in its `WorkingDir`. With `strace_log`, under
/// `strace -f -e trace=%file,%process,fchdir` (inside the namespaces, outside the root; see
/// [`parse_strace`]). Needs root.
pub fn run_workload(
    root: &Path,
    config: &Value,
    w: &Workload,
    strace_log: Option<&Path>,
) -> WorkloadResult {
    assert!(super::is_root(), "run_workload needs root");
    let Some(probe) = &w.http else {
        let s = spawn_in_root(root, config, w, strace_log);
        let (code, stdout, stderr) = finish(s, w.timeout, String::new());
        return WorkloadResult {
            code,
            stdout,
            stderr,
        };
    };
    let mut s = spawn_in_root(root, config, w, strace_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, probe.port));
    let mut responses = Vec::new();
    let mut note = String::new();
    let mut ok = false;
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            note.push_str(&format!("pare-test: the server exited early with {st}\n"));
            break;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            ok = true;
            if let Some(bytes) = &probe.send {
                match tcp_exchange(probe.port, bytes) {
                    Ok(reply) => {
                        ok = !reply.is_empty();
                        responses = reply;
                    }
                    Err(e) => {
                        note.push_str(&format!("pare-test: tcp exchange: {e}\n"));
                        ok = false;
                    }
                }
            }
            for p in &probe.paths {
                match http_get(probe.port, p) {
                    Ok((status, body)) => {
                        responses.extend_from_slice(format!("GET {p} -> {status}\n").as_bytes());
                        responses.extend_from_slice(&body);
                        responses.push(b'\n');
                        ok &= status == 200;
                    }
                    Err(e) => {
                        note.push_str(&format!("pare-test: GET {p}: {e}\n"));
                        ok = false;
                    }
                }
            }
            break;
        }
        if Instant::now() > deadline {
            note.push_str(&format!(
                "pare-test: nothing listened on port {} within 60 s\n",
                probe.port
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut s.child);
    let (_, _server_out, stderr) = finish(s, Duration::from_secs(20), note);
    WorkloadResult {
        code: Some(if ok { 0 } else { 1 }),
        stdout: responses,
        stderr,
    }
}

/// Send `bytes` to 127.0.0.1:port; the reply until the peer closes, 2 s pass without a byte,
/// or 1 MiB.
pub fn tcp_exchange(port: u16, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    while reply.len() < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !reply.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(reply)
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0): status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ------------------------------------------------------------------------------------------------
// Roots: resolving paths, measuring
// ------------------------------------------------------------------------------------------------

/// Resolve image path `path` (relative ones against image directory `cwd`) inside `root` the
/// way the kernel would inside a chroot: symlinks followed within the root (an absolute target
/// starts again at the root, `..` stops at it), the last component only when `follow_last`.
/// The canonical image path when every component exists.
pub fn resolve_in_root(root: &Path, cwd: &str, path: &str, follow_last: bool) -> Option<String> {
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut current: Vec<String> = Vec::new();
    if !path.starts_with('/') {
        current = cwd
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
    }
    pending.extend(
        path.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    );
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            current.pop();
            continue;
        }
        let mut cand = current.clone();
        cand.push(c);
        let host = root.join(cand.join("/"));
        let meta = fs::symlink_metadata(&host).ok()?;
        let last = pending.is_empty();
        if meta.file_type().is_symlink() && (!last || follow_last) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&host).ok()?.to_string_lossy().into_owned();
            if target.starts_with('/') {
                current.clear();
            }
            for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                pending.push_front(t.to_string());
            }
        } else if meta.is_dir() {
            current = cand;
        } else {
            if !last {
                return None;
            }
            current = cand;
        }
    }
    Some(format!("/{}", current.join("/")))
}

/// Every regular file of an unpacked root: image path → size (hard links counted once, at
/// their first path).
pub fn regular_files(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
                out.insert(rel, m.len());
            }
        }
    }
    out
}

/// `PT_INTERP` of an ELF file, if it has one.
pub fn elf_interp(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = bytes[4] == 2;
    let le = bytes[5] == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let b = bytes.get(off..off + n)?;
        let mut v: u64 = 0;
        for i in 0..n {
            let byte = if le { b[n - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if is64 {
        (rd(32, 8)?, rd(54, 2)?, rd(56, 2)?)
    } else {
        (rd(28, 4)?, rd(42, 2)?, rd(44, 2)?)
    };
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        if rd(ph, 4)? != 3 {
            continue;
        }
        let (off, size) = if is64 {
            (rd(ph + 8, 8)?, rd(ph + 32, 8)?)
        } else {
            (rd(ph + 4, 4)?, rd(ph + 16, 4)?)
        };
        let s = bytes.get(off as usize..(off + size) as usize)?;
        let s = s.split(|b| *b == 0).next()?;
        return Some(String::from_utf8_lossy(s).into_owned());
    }
    None
}

// ------------------------------------------------------------------------------------------------
// strace
// ------------------------------------------------------------------------------------------------

/// A regular file a traced workload touched.
#[derive(Clone, Debug, Default)]
pub struct TracedFile {
    /// Size before the run.
    pub size: u64,
    /// The absolute paths it was asked for by (before symlinks were followed).
    pub requested: BTreeSet<String>,
    /// How: `openat`, `execve`, `newfstatat`, … and `interp` (loaded by the kernel as an
    /// executable's `PT_INTERP` or `#!` interpreter, which strace cannot see).
    pub how: BTreeSet<String>,
}

/// What [`parse_strace`] found.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Canonical image path → file.
    pub files: BTreeMap<String, TracedFile>,
    /// Successful calls whose path could not be placed (relative to an unknown directory).
    pub unresolved: Vec<String>,
    /// Processes seen after their chroot.
    pub processes: usize,
    /// Successful execs (canonical paths), in order.
    pub execs: Vec<String>,
}

impl Trace {
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// Add another run's files.
    pub fn merge(&mut self, other: Trace) {
        for (k, v) in other.files {
            let e = self.files.entry(k).or_default();
            e.size = v.size;
            e.requested.extend(v.requested);
            e.how.extend(v.how);
        }
        self.unresolved.extend(other.unresolved);
        self.processes += other.processes;
        self.execs.extend(other.execs);
    }
}

#[derive(Clone, Debug, Default)]
struct ProcState {
    chrooted: bool,
    cwd: Option<String>,
    fds: HashMap<i64, String>,
}

/// One syscall of an strace log, `<unfinished ...>`/`<... resumed>` halves joined.
#[derive(Clone, Debug)]
struct Call {
    pid: i64,
    name: String,
    args: Vec<String>,
    ret: Option<i64>,
}

fn decode_c_string(tok: &str) -> Option<String> {
    let t = tok.trim();
    let inner = t.strip_prefix('"')?;
    let mut out: Vec<u8> = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
            b'\\' if i + 1 < b.len() => {
                i += 1;
                match b[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(h, 16).ok()?);
                        i += 2;
                    }
                    c @ b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        let mut n = 1;
                        while n < 3 && i + 1 < b.len() && (b'0'..=b'7').contains(&b[i + 1]) {
                            i += 1;
                            v = v * 8 + u32::from(b[i] - b'0');
                            n += 1;
                        }
                        out.push(v as u8);
                    }
                    c => out.push(c),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    None
}

/// Split `name(args) = ret …` into the top-level argument texts and the return value.
fn split_call(text: &str) -> Option<(String, Vec<String>, Option<i64>)> {
    let open = text.find('(')?;
    let name = text[..open].trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut args = Vec::new();
    let mut start = open + 1;
    let mut i = open + 1;
    let mut close = None;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth > 0 => depth -= 1,
                b')' => {
                    args.push(text[start..i].trim().to_string());
                    close = Some(i);
                    break;
                }
                b',' if depth == 0 => {
                    args.push(text[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    let close = close?;
    let rest = text[close + 1..].trim_start();
    let ret = rest
        .strip_prefix('=')
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| {
            r.strip_prefix("0x")
                .map(|h| i64::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| r.parse().ok())
        });
    Some((name, args, ret))
}

fn parse_calls(log: &str) -> Vec<Call> {
    let mut pending: HashMap<i64, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let line = line.trim_start();
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let text = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.trim_end().to_string());
            continue;
        } else if let Some(r) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = r.split_once("resumed>") else {
                continue;
            };
            match pending.remove(&pid) {
                Some(head) => format!("{head}{tail}"),
                None => continue,
            }
        } else {
            rest.to_string()
        };
        if let Some((name, args, ret)) = split_call(&text) {
            calls.push(Call {
                pid,
                name,
                args,
                ret,
            });
        }
    }
    calls
}

fn join_path(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else if base == "/" {
        format!("/{p}")
    } else {
        format!("{base}/{p}")
    }
}

/// The regular files a workload traced by [`run_workload`] touched after its `chroot()`:
/// successful `open`/`openat`/`openat2`, `execve`/`execveat`, and the stat family (`stat`,
/// `lstat`, `newfstatat`, `statx`, `access`, `faccessat`, `faccessat2`, `readlink`,
/// `readlinkat`), relative paths resolved against the process's cwd (`chdir`, `fchdir`) or
/// directory fd, each resolved inside `root`; kept when it was a regular file before the run
/// (`before`: [`regular_files`] of the root before it ran, so files the run created do not
/// count). The `PT_INTERP` and `#!` interpreters of executed files are added: the kernel loads
/// them without a syscall strace shows. `/proc`, `/sys` and `/dev` are skipped.
pub fn parse_strace(log: &str, root: &Path, before: &BTreeMap<String, u64>) -> Trace {
    let calls = parse_calls(log);
    let mut parent: HashMap<i64, i64> = HashMap::new();
    for c in &calls {
        if matches!(c.name.as_str(), "clone" | "clone3" | "fork" | "vfork")
            && let Some(r) = c.ret
            && r > 0
        {
            parent.entry(r).or_insert(c.pid);
        }
    }
    let mut states: HashMap<i64, ProcState> = HashMap::new();
    let mut trace = Trace::default();
    let mut seen_procs = BTreeSet::new();
    let add = |trace: &mut Trace, requested: String, canonical: String, how: &str| {
        let Some(size) = before.get(&canonical) else {
            return;
        };
        let e = trace.files.entry(canonical).or_default();
        e.size = *size;
        e.requested.insert(requested);
        e.how.insert(how.to_string());
    };
    let skip = |p: &str| {
        ["/proc", "/sys", "/dev"]
            .iter()
            .any(|pre| p == *pre || p.starts_with(&format!("{pre}/")))
    };
    for c in &calls {
        if !states.contains_key(&c.pid) {
            let inherited = parent
                .get(&c.pid)
                .and_then(|pp| states.get(pp))
                .cloned()
                .unwrap_or_default();
            states.insert(c.pid, inherited);
        }
        let st = states.get(&c.pid).cloned().unwrap_or_default();
        let ok = c.ret.is_some_and(|r| r >= 0);
        if c.name == "chroot" {
            if ok {
                let s = states.get_mut(&c.pid).unwrap();
                s.chrooted = true;
                s.cwd = None;
                s.fds.clear();
            }
            continue;
        }
        if !st.chrooted || !ok {
            continue;
        }
        seen_procs.insert(c.pid);
        let arg_str = |i: usize| c.args.get(i).and_then(|a| decode_c_string(a));
        let dir_of = |fdarg: &str| -> Option<String> {
            if fdarg == "AT_FDCWD" {
                st.cwd.clone()
            } else {
                fdarg
                    .parse::<i64>()
                    .ok()
                    .and_then(|fd| st.fds.get(&fd).cloned())
            }
        };
        // (directory the path is relative to, path, follow the last symlink)
        let target: Option<(Option<String>, String, bool)> = match c.name.as_str() {
            "open" | "stat" | "stat64" | "access" | "execve" | "chdir" | "uselib" => {
                arg_str(0).map(|p| (st.cwd.clone(), p, true))
            }
            "lstat" | "lstat64" | "readlink" => arg_str(0).map(|p| (st.cwd.clone(), p, false)),
            "openat" | "openat2" | "newfstatat" | "fstatat64" | "statx" | "faccessat"
            | "faccessat2" | "readlinkat" | "execveat" => {
                let nofollow = c.name == "readlinkat"
                    || c.args
                        .iter()
                        .skip(2)
                        .any(|a| a.contains("AT_SYMLINK_NOFOLLOW"));
                match (c.args.first(), arg_str(1)) {
                    (Some(fd), Some(p)) if !p.is_empty() => Some((dir_of(fd), p, !nofollow)),
                    _ => None,
                }
            }
            "fchdir" => {
                if let Some(d) = c
                    .args
                    .first()
                    .and_then(|a| a.parse::<i64>().ok())
                    .and_then(|fd| st.fds.get(&fd).cloned())
                {
                    states.get_mut(&c.pid).unwrap().cwd = Some(d);
                }
                None
            }
            _ => None,
        };
        let Some((base, path, follow)) = target else {
            continue;
        };
        let base = match (path.starts_with('/'), base) {
            (true, _) => "/".to_string(),
            (false, Some(b)) => b,
            (false, None) => {
                trace.unresolved.push(format!(
                    "pid {}: {}({:?}) relative to an unknown directory",
                    c.pid, c.name, path
                ));
                continue;
            }
        };
        let requested = join_path(&base, &path);
        if skip(&requested) {
            continue;
        }
        let canonical = resolve_in_root(root, &base, &path, follow);
        if c.name == "chdir" {
            if let Some(d) = canonical {
                states.get_mut(&c.pid).unwrap().cwd = Some(d);
            }
            continue;
        }
        if matches!(c.name.as_str(), "open" | "openat" | "openat2")
            && let (Some(fd), Some(canon)) = (c.ret, canonical.clone())
        {
            states.get_mut(&c.pid).unwrap().fds.insert(fd, canon);
        }
        let Some(canonical) = canonical else {
            continue;
        };
        if skip(&canonical) {
            continue;
        }
        if matches!(c.name.as_str(), "execve" | "execveat") {
            trace.execs.push(canonical.clone());
            // What the kernel loads for this exec: #! interpreters and PT_INTERP, recursively.
            let mut queue = vec![canonical.clone()];
            let mut hops = 0;
            while let Some(exe) = queue.pop() {
                hops += 1;
                if hops > 8 {
                    break;
                }
                let Ok(bytes) = fs::read(root.join(exe.trim_start_matches('/'))) else {
                    continue;
                };
                let interp = if bytes.starts_with(b"#!") {
                    let line = bytes[2..].split(|b| *b == b'\n').next().unwrap_or_default();
                    String::from_utf8_lossy(line)
                        .split_whitespace()
                        .next()
                        .map(str::to_string)
                } else {
                    elf_interp(&bytes)
                };
                if let Some(i) = interp
                    && let Some(ic) = resolve_in_root(root, "/", &i, true)
                {
                    add(&mut trace, i, ic.clone(), "interp");
                    queue.push(ic);
                }
            }
        }
        add(&mut trace, requested, canonical, &c.name);
    }
    trace.processes = seen_procs.len();
    trace
}

// ------------------------------------------------------------------------------------------------
// Reporting
// ------------------------------------------------------------------------------------------------

/// `12.3 MB`.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Append a row (a markdown table line, without the newline) to `target/works-table.md`; the
/// first row of a test process starts the file afresh, with `header`.
pub fn append_table_row(header: &str, row: &str) {
    append_named_row("works-table.md", header, row);
}

/// Append a row to `target/NAME` (written afresh, with `header`, by the first row of a run).
pub fn append_named_row(name: &str, header: &str, row: &str) {
    static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let path = target_dir().join(name);
    let _ = fs::create_dir_all(target_dir());
    let new = !started.iter().any(|n| n == name);
    if new {
        started.push(name.to_string());
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!new)
        .truncate(new)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut text = String::new();
    if new {
        text.push_str(header);
        text.push('\n');
    }
    text.push_str(row);
    text.push('\n');
    f.write_all(text.as_bytes()).expect("append table row");
}

//! Debian packages downloaded by apt (once, cached under `target/test-debs/`), and where
//! things are: cargo's target directory, this machine's architecture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::*;

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

/// The `.deb` files in `dir`, sorted.
pub fn deb_files(dir: &Path) -> Vec<PathBuf> {
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

//! Ready-made images: directory layers, the two-platform jq index from Debian's arm64
//! packages, pare's own image; and reading `pare batch` reports.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::*;

/// A layer holding everything under `root` (a host directory the test made): directories,
/// regular files with their modes, symlinks with their targets as written.
pub fn dir_layer(root: &Path) -> Layer {
    let mut layer = Layer::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                layer = layer.symlink(&rel, &t.to_string_lossy());
            } else if meta.is_dir() {
                layer = layer.dir(&rel, meta.mode() & 0o7777);
                stack.push(p);
            } else if meta.is_file() {
                layer = layer.file_from_host(&p, &rel, Some(meta.mode() & 0o7777));
            }
        }
    }
    layer
}

/// Debian's arm64 packages of jq and what it needs, downloaded once into a cache dir
/// (`apt-get download` after `dpkg --add-architecture arm64`). `None`, with the reason, when
/// they cannot be had here.
pub fn arm64_jq_debs() -> Result<Vec<PathBuf>, String> {
    let cache = std::env::temp_dir().join("pare-test-arm64-debs");
    let names = ["libc6", "jq", "libjq1", "libonig5"];
    if debian::deb_files(&cache).len() >= names.len() {
        return Ok(debian::deb_files(&cache));
    }
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let pkgs: Vec<String> = names.iter().map(|n| format!("{n}:arm64")).collect();
    let out = Command::new("apt-get")
        .current_dir(&cache)
        .arg("download")
        .args(&pkgs)
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download {} failed (run `dpkg --add-architecture arm64 && apt-get update`): {}",
            pkgs.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(debian::deb_files(&cache))
}

/// Unpack .deb files into a fresh root with `dpkg-deb -x`.
pub fn unpack_debs(debs: &[PathBuf], root: &Path) {
    for d in debs {
        run_ok(Command::new("dpkg-deb").arg("-x").arg(d).arg(root));
    }
}

/// A two-platform jq index tagged `tag` in the layout: linux/amd64 from this machine's jq on
/// the Debian-like base, linux/arm64/v8 from Debian's arm64 packages. `Err` (the reason) when
/// the arm64 packages cannot be had.
pub fn write_jq_multiarch_layout(layout: &Path, tag: &str) -> Result<BuiltIndex, String> {
    let debs = arm64_jq_debs()?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    unpack_debs(&debs, root.path());
    let amd64 = ImageSpec::new(vec![
        usrmerge_base_layer(),
        Layer::new().host_closure(HOST_JQ),
    ])
    .with_entrypoint(&["/usr/bin/jq"])
    .with_cmd(&["-n", "1+1"]);
    let arm64 = ImageSpec::new(vec![dir_layer(root.path())])
        .with_entrypoint(&["/usr/bin/jq"])
        .with_cmd(&["-n", "1+1"])
        .with_platform("arm64", Some("v8"));
    Ok(write_oci_multiarch_layout(layout, tag, &[amd64, arm64]))
}

/// The items of a `pare batch --report` file as sorted `"repo:tag status"` lines.
pub fn batch_report_items(report: &Path) -> Vec<String> {
    let r: Value = serde_json::from_slice(&fs::read(report).expect("read batch report"))
        .expect("batch report is JSON");
    let mut got: Vec<String> = r["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}:{} {}",
                i["repository"].as_str().unwrap_or_default(),
                i["tag"].as_str().unwrap_or_default(),
                i["status"].as_str().unwrap_or_default()
            )
        })
        .collect();
    got.sort();
    got
}

/// Where pare lives in its own image.
pub const PARE_IN_IMAGE: &str = "/usr/local/bin/pare";

/// pare's own image: a usrmerge base, `binary` at [`PARE_IN_IMAGE`] with the shared
/// libraries it loads (and their host symlink chains), and this machine's CA bundle (pare
/// talks TLS to registries). `just image` builds it from the release binary and hardens it.
pub fn pare_image_spec(binary: &Path) -> ImageSpec {
    let mut app = Layer::new().created_by("pare: the binary, its libraries, CA certificates");
    for lib in ldd_paths(binary) {
        app = app.host_path_with_links(lib);
    }
    app = app.file_from_host(binary, PARE_IN_IMAGE, Some(0o755));
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.is_file() {
        app = app
            .dir("/etc/ssl", 0o755)
            .dir("/etc/ssl/certs", 0o755)
            .file_from_host(bundle, "/etc/ssl/certs/ca-certificates.crt", Some(0o644));
    }
    ImageSpec::new(vec![usrmerge_base_layer(), app])
        .with_entrypoint(&[PARE_IN_IMAGE])
        .with_cmd(&["--help"])
        .with_label("org.opencontainers.image.title", "pare")
        .with_label(
            "org.opencontainers.image.description",
            "Make container images safe to run",
        )
}

/// `spec` saved the way `docker save` saves it (skopeo's docker-archive, tagged `app:1`) as
/// `DIR/app.tar`, through the OCI layout `DIR/layout` (tag `jq`).
pub fn save_docker_archive(dir: &Path, spec: &ImageSpec) -> PathBuf {
    let layout = dir.join("layout");
    write_oci_layout(&layout, "jq", spec);
    let saved = dir.join("app.tar");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:jq", layout.display()))
            .arg(format!("docker-archive:{}:app:1", saved.display())),
    );
    saved
}

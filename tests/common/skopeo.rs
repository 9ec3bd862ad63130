//! Pushing and inspecting with skopeo, pulling and unpacking with umoci.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

fn skopeo() -> Command {
    let mut cmd = Command::new(require_tool(SKOPEO_BIN));
    cmd.arg("--insecure-policy");
    cmd
}

/// `docker://` prefix unless `image` already names a transport.
fn transport_ref(image: &str) -> String {
    if image.starts_with("docker://") || image.starts_with("oci:") {
        image.to_string()
    } else {
        format!("docker://{image}")
    }
}

fn creds_args(prefix: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    match creds {
        Some((user, pass)) => vec![format!("--{prefix}creds={user}:{pass}")],
        None => vec![format!("--{prefix}no-creds")],
    }
}

/// `skopeo copy docker://SRC docker://DEST` between anonymous plain-HTTP registries, the
/// manifest kept byte for byte.
#[allow(dead_code)]
pub fn copy_image(src: &str, dest: &str) {
    run_ok(skopeo().args([
        "copy",
        "-q",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-no-creds",
        "--dest-no-creds",
        &transport_ref(src),
        &transport_ref(dest),
    ]));
}

/// `skopeo copy oci:LAYOUT:TAG docker://DEST`, returning skopeo's stderr on failure.
/// `extra_args` go before the references (e.g. `["--format", "v2s2"]` or `["--all"]`).
pub fn try_push_layout(
    layout_dir: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    extra_args: &[&str],
) -> Result<(), String> {
    let output = run_capture(
        skopeo()
            .args(["copy", "--dest-tls-verify=false"])
            .args(creds_args("dest-", creds))
            .args(extra_args)
            .arg(format!("oci:{}:{tag}", layout_dir.display()))
            .arg(transport_ref(dest)),
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(describe_output(&output))
    }
}

/// Push image `tag` of the layout to `dest` (e.g. `"127.0.0.1:5000/team/jq:1"`).
pub fn push_layout(layout_dir: &Path, tag: &str, dest: &str, creds: Option<(&str, &str)>) {
    push_layout_with_args(layout_dir, tag, dest, creds, &[]);
}

/// [`push_layout`] with extra `skopeo copy` arguments.
pub fn push_layout_with_args(
    layout_dir: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    extra_args: &[&str],
) {
    if let Err(err) = try_push_layout(layout_dir, tag, dest, creds, extra_args) {
        panic!(
            "skopeo push of {}:{tag} to {dest} failed:\n{err}",
            layout_dir.display()
        );
    }
}

/// Build `spec` in a fresh temporary layout and push it to `dest`; returns what was built.
pub fn build_and_push(spec: &ImageSpec, dest: &str, creds: Option<(&str, &str)>) -> BuiltImage {
    let dir = tempfile::tempdir().expect("tempdir for layout");
    let built = write_oci_layout(dir.path(), "img", spec);
    push_layout(dir.path(), "img", dest, creds);
    built
}

fn skopeo_inspect(image: &str, creds: Option<(&str, &str)>, extra: &[&str]) -> Output {
    let mut cmd = skopeo();
    cmd.arg("inspect");
    let reference = transport_ref(image);
    if reference.starts_with("docker://") {
        cmd.arg("--tls-verify=false").args(creds_args("", creds));
    }
    run_capture(cmd.args(extra).arg(reference))
}

/// Whether `image` (`host/repo:tag`, `docker://...` or `oci:DIR:TAG`) can be inspected.
pub fn skopeo_inspect_exists(image: &str, creds: Option<(&str, &str)>) -> bool {
    skopeo_inspect(image, creds, &["--raw"]).status.success()
}

/// The raw manifest (or index) bytes of `image`.
pub fn skopeo_raw_manifest(image: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    let output = skopeo_inspect(image, creds, &["--raw"]);
    assert!(
        output.status.success(),
        "skopeo inspect --raw {image} failed:\n{}",
        describe_output(&output)
    );
    output.stdout
}

/// `sha256:` digest of the top-level manifest (or index) of `image` as served.
pub fn skopeo_manifest_digest(image: &str, creds: Option<(&str, &str)>) -> String {
    sha256_digest(&skopeo_raw_manifest(image, creds))
}

/// The image config JSON of `image` (for an index: the host platform's image).
pub fn skopeo_config(image: &str, creds: Option<(&str, &str)>) -> Value {
    let output = skopeo_inspect(image, creds, &["--config"]);
    assert!(
        output.status.success(),
        "skopeo inspect --config {image} failed:\n{}",
        describe_output(&output)
    );
    serde_json::from_slice(&output.stdout).expect("skopeo --config output is JSON")
}

/// An image pulled into a temporary OCI layout and unpacked by umoci.
pub struct Unpacked {
    pub dir: TempDir,
    pub layout: PathBuf,
    pub tag: String,
    pub bundle: PathBuf,
    /// Manifest digest *in the local layout* (skopeo may have converted the manifest format
    /// when pulling; use [`skopeo_manifest_digest`] for the registry-side digest).
    pub manifest_digest: String,
    pub manifest: Value,
    /// The image config JSON (not umoci's runtime config.json).
    pub config: Value,
}

impl Unpacked {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Host path of image path `image_path` inside the rootfs (no symlink resolution).
    pub fn path(&self, image_path: &str) -> PathBuf {
        self.rootfs().join(image_path.trim_start_matches('/'))
    }

    /// The config's `config` object (Entrypoint, Cmd, Env, User, ...), or `Null`.
    pub fn exec_config(&self) -> &Value {
        &self.config["config"]
    }
}

/// Split `oci:DIR:TAG` into `(DIR, TAG)`.
fn parse_oci_ref(image: &str) -> Option<(PathBuf, String)> {
    let rest = image.strip_prefix("oci:")?;
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => Some((PathBuf::from(dir), tag.to_string())),
        _ => panic!("oci reference {image:?} needs an explicit :TAG"),
    }
}

/// [`pull_and_unpack_with_creds`] without credentials.
pub fn pull_and_unpack(image: &str) -> Unpacked {
    pull_and_unpack_with_creds(image, None)
}

/// Pull `image` (`docker://host/repo:tag`, bare `host/repo:tag`, or `oci:DIR:TAG`) with skopeo
/// into a temporary layout and unpack it with `umoci unpack`. Local `oci:` single-manifest
/// references are unpacked in place without copying.
pub fn pull_and_unpack_with_creds(image: &str, creds: Option<(&str, &str)>) -> Unpacked {
    let dir = tempfile::Builder::new()
        .prefix("pare-unpack-")
        .tempdir()
        .expect("create unpack tempdir");
    let local = parse_oci_ref(image)
        .filter(|(layout, tag)| read_layout_image(layout, tag).index_digest.is_none());
    let (layout, tag) = match local {
        Some(found) => found,
        None => {
            let layout = dir.path().join("layout");
            let reference = transport_ref(image);
            let mut cmd = skopeo();
            cmd.arg("copy");
            if reference.starts_with("docker://") {
                cmd.arg("--src-tls-verify=false")
                    .args(creds_args("src-", creds));
            }
            run_ok(
                cmd.arg(&reference)
                    .arg(format!("oci:{}:img", layout.display())),
            );
            (layout, "img".to_string())
        }
    };
    let image_info = read_layout_image(&layout, &tag);
    let bundle = dir.path().join("bundle");
    let mut umoci = Command::new(require_tool(UMOCI_BIN));
    umoci.arg("unpack");
    if !is_root() {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle),
    );
    Unpacked {
        dir,
        layout,
        tag,
        bundle,
        manifest_digest: image_info.manifest_digest,
        manifest: image_info.manifest,
        config: image_info.config,
    }
}

/// [`jq_image`] pushed to `reg` as `name`: its reference, and its manifest digest as served.
pub fn push_jq_image(reg: &Registry, name: &str) -> (String, String) {
    let src = reg.image(name);
    build_and_push(&jq_image(), &src, None);
    let digest = skopeo_manifest_digest(&src, None);
    (src, digest)
}

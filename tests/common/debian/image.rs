//! Layers compressed once and images made of them; the bookworm slim base.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::*;

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
    let mut written = WrittenLayers::default();
    for l in layers {
        written.add(dir, &l.blob, l.media_type, l.diff_id.clone());
    }
    let built = write_config_and_manifest(dir, &spec, written);
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

//! `just image` (`cargo run --release --example image [BINARY [LAYOUT]]`): pare's own OCI
//! image, as the layout `target/image` (tag `pare`): the release binary at /usr/local/bin/pare with its
//! shared libraries and this machine's CA bundle, then hardened by pare itself into the tag
//! `pare-hardened` (non-root, nothing but what pare needs). No Docker, no registry; push it
//! with `skopeo copy oci:target/image:pare-hardened docker://REGISTRY/pare:VERSION` (or `pare
//! harden oci:target/image:pare REGISTRY/pare:VERSION --sign-key …`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::PathBuf;

use pare::harden::{HardenOptions, harden};
use pare::progress::Progress;
use pare::reference::ImageRef;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/pare"));
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it first (cargo build --release)",
        binary.display()
    );
    let layout = std::env::args()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/image"));
    let _ = std::fs::remove_dir_all(&layout);
    common::write_oci_layout(&layout, "pare", &common::pare_image_spec(&binary));
    let src: ImageRef = format!("oci:{}:pare", layout.display()).parse()?;
    let dest: ImageRef = format!("oci:{}:pare-hardened", layout.display()).parse()?;
    let done = harden(
        &src,
        Some(&dest),
        &HardenOptions::default(),
        &Progress::stderr(false),
    )
    .await?;
    for r in &done.images {
        eprintln!("{}", r.summary());
    }
    println!("{}", dest);
    Ok(())
}

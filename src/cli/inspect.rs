//! `pare inspect`: what an image holds.

use pare::harden::{self};
use pare::progress::Progress;
use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: InspectArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let src: ImageRef = a.image.parse()?;
    let opts = source_options(&a.source)?;
    if a.tree {
        let mut loaded = harden::load(&src, &opts, progress).await?;
        let mut report =
            pare::inspect::InspectReport::new(&src.to_string(), &loaded.pulled, &loaded.rootfs);
        report.packages = harden::inspect_packages(&mut loaded)?;
        match a.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            _ => print!("{}", clean(&report.text(), true)),
        }
        print!("{}", clean(&pare::inspect::tree(&loaded.rootfs), true));
    } else {
        let report = harden::inspect_image(&src, &opts, progress).await?;
        match a.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Format::Sarif => anyhow::bail!("inspect has no SARIF output; use text or json"),
            Format::Text => print!("{}", clean(&report.text(), true)),
        }
    }
    Ok(Outcome::Ok)
}

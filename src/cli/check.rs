//! `pare check`: the checklist, as text, JSON, SARIF or GitHub annotations.

use pare::harden::{self};
use pare::progress::Progress;
use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: CheckArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let src: ImageRef = a.image.parse()?;
    let cfg = check_config(&a.policy)?;
    let sopts = source_options_with(&a.source, a.policy.config.as_deref())?;
    let report = harden::check_image(&src, &sopts, &cfg, progress).await?;
    let text = match a.format {
        Format::Text => clean(&report.text(), true),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Sarif => serde_json::to_string_pretty(&report.sarif())? + "\n",
    };
    write_out(&a.output, &text)?;
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        // Workflow commands are read from stdout.
        print!("{}", clean(&report.github(), true));
    }
    if !report.passed {
        return Ok(Outcome::Violations);
    }
    Ok(Outcome::Ok)
}

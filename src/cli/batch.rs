//! `pare batch`: harden every repository and tag under a registry namespace.

use pare::progress::Progress;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: BatchArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let hopts = many_options(&a.many, a.dry_run, None)?;
    let opts = pare::batch::BatchOptions {
        harden: hopts,
        jobs: a.jobs,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        shard: a
            .shard
            .as_deref()
            .map(pare::batch::parse_shard)
            .transpose()?,
        force: a.force,
        repos_from: a.repos_from.clone(),
        page_size: a.page_size,
    };
    let report = pare::batch::batch(&a.target, &opts, progress).await?;
    eprint!("{}", clean(&report.table(), true));
    if let Some(path) = &a.report {
        write_out(
            &Some(path.clone()),
            &(serde_json::to_string_pretty(&report)? + "\n"),
        )?;
    }
    if report.failed > 0 {
        return Ok(Outcome::Violations);
    }
    Ok(Outcome::Ok)
}

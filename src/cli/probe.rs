//! `pare probe`: run probes in a sandbox of an image (and of another, to compare).

use pare::harden::{self};
use pare::progress::Progress;
use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: ProbeArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let image: ImageRef = a.image.parse()?;
    let against: Option<ImageRef> = a.against.as_deref().map(str::parse).transpose()?;
    let mut probes = a
        .probes
        .iter()
        .map(|p| pare::probe::Probe::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    if !a.args.is_empty() {
        probes.push(pare::probe::Probe {
            args: Some(a.args.clone()),
            ..Default::default()
        });
    }
    for h in &a.http_probes {
        probes.push(pare::probe::Probe::http(h)?);
    }
    let mut limits = pare::probe::Limits {
        seconds: a.probe_timeout.max(1),
        ..Default::default()
    };
    // No probe named: the [probe] table of pare.toml, if any.
    if probes.is_empty()
        && let Some(cfg) = pare::policy::load_probe_config(&std::env::current_dir()?, None)?
    {
        probes = cfg.probes()?;
        if let Some(t) = cfg.timeout {
            limits.seconds = t.max(1);
        }
    }
    let expect = a
        .expect
        .as_deref()
        .map(regex::bytes::Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--expect: {e}"))?;
    if a.learn {
        if probes.is_empty() {
            probes.push(pare::probe::Probe::default());
        }
        for p in &mut probes {
            p.learn = true;
            p.syscalls = a.seccomp_profile.is_some();
        }
    }
    if let Some(path) = &a.seccomp {
        let program =
            std::sync::Arc::new(pare::probe::profile::load(path).map_err(pare::Error::Usage)?);
        if probes.is_empty() {
            probes.push(pare::probe::Probe::default());
        }
        for p in &mut probes {
            p.profile = Some(program.clone());
        }
    }
    let report = harden::probe_image(
        &image,
        against.as_ref(),
        &probes,
        expect.as_ref(),
        &limits,
        &source_options(&a.source)?,
        progress,
    )
    .await?;
    if let Some(path) = &a.seccomp_profile {
        write_profile(path, &report.syscalls.iter().cloned().collect())?;
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => print!("{}", clean(&report.text(), true)),
    }
    if !report.passed {
        return Ok(Outcome::Violations);
    }
    Ok(Outcome::Ok)
}

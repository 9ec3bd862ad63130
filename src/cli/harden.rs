//! `pare harden`: harden an image and print what was written.

use pare::harden::{self, HardenOptions, Hardened};
use pare::progress::Progress;
use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: HardenArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let src: ImageRef = a.src.parse()?;
    let dest: Option<ImageRef> = a.dest.as_deref().map(str::parse).transpose()?;
    let opts = options(&a)?;
    let done = harden::harden(&src, dest.as_ref(), &opts, progress).await?;
    print(&a, &done)?;
    Ok(Outcome::Ok)
}

/// The flags as the library's options (and `[probe]` of the policy file when no --probe).
fn options(a: &HardenArgs) -> anyhow::Result<HardenOptions> {
    let mut opts = harden_options(
        &a.source,
        &a.trace,
        a.user.as_deref(),
        a.dry_run,
        a.policy.config.as_deref(),
    )?;
    opts.sign_key = signing_key(&a.sign)?;
    output_options(&a.output, &mut opts)?;
    opts.dest_creds = a
        .dest_creds
        .as_deref()
        .map(pare::transport::auth::parse_creds)
        .transpose()?;
    if a.check {
        opts.check = Some(check_config(&a.policy)?);
    }
    opts.sbom_file = a.sbom.clone();
    opts.no_sbom = a.no_sbom;
    opts.in_place = a.in_place;
    opts.no_backup = a.no_backup;
    opts.force = a.force;
    opts.probes = a
        .probes
        .iter()
        .map(|p| pare::probe::Probe::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    for h in &a.http_probes {
        opts.probes.push(pare::probe::Probe::http(h)?);
    }
    for l in &a.learn {
        let mut p = pare::probe::Probe::parse(l)?;
        p.learn = true;
        opts.learn.push(p);
    }
    for h in &a.learn_http {
        let mut p = pare::probe::Probe::http(h)?;
        p.learn = true;
        opts.learn.push(p);
    }
    for t in &a.learn_tcp {
        let mut p = pare::probe::Probe::tcp(t)?;
        p.learn = true;
        opts.learn.push(p);
    }
    if a.seccomp_profile.is_some() {
        if opts.learn.is_empty() {
            anyhow::bail!(pare::Error::Usage(
                    "--seccomp-profile needs --learn, --learn-http or --learn-tcp: the profile is what their programs call".into()
                ));
        }
        for p in &mut opts.learn {
            p.syscalls = true;
        }
    }
    opts.probe_limits = pare::probe::Limits {
        seconds: a.probe_timeout.max(1),
        ..Default::default()
    };
    if opts.probes.is_empty()
        && let Some(cfg) =
            pare::policy::load_probe_config(&std::env::current_dir()?, a.policy.config.as_deref())?
    {
        opts.probes = cfg.probes()?;
        if let Some(t) = cfg.timeout {
            opts.probe_limits.seconds = t.max(1);
        }
    }
    Ok(opts)
}

/// What was written (or found up to date), the reports asked for, and the seccomp profile.
fn print(a: &HardenArgs, done: &Hardened) -> anyhow::Result<()> {
    if let Some(u) = &done.up_to_date {
        eprintln!(
            "{}",
            clean(
                &format!(
                    "{} is up to date ({}): hardened from {}@{} by this pare with the same options; nothing pulled (--force to redo)",
                    pare::report::short_ref(&u.destination),
                    pare::transport::registry::short_digest(&u.digest),
                    pare::report::short_ref(&u.source),
                    pare::transport::registry::short_digest(&u.source_digest),
                ),
                false
            )
        );
    }
    if let Some(r) = &done.replaced {
        eprintln!(
            "replaced the source (was {}{})",
            r.digest,
            r.backup
                .as_ref()
                .map(|b| format!("; still reachable as {b}"))
                .unwrap_or_default()
        );
    }
    let multi = done.index.is_some();
    for r in &done.images {
        for w in &r.warnings {
            let tag = if multi {
                format!("{}: ", r.source.platform)
            } else {
                String::new()
            };
            eprintln!("warning: {tag}{}", clean(w, false));
        }
        for (p, why) in &r.withheld {
            eprintln!("withheld: {}: {}", clean(p, false), clean(why, false));
        }
        for q in &r.open_questions {
            eprintln!("open question: {}", clean(q, false));
        }
        if !r.open_questions.is_empty() {
            eprintln!(
                "{} open question(s) static analysis could not decide: settle them with `pare harden {} {}` (runs the image's own Cmd in a sandbox of the source and keeps what it uses)",
                r.open_questions.len(),
                clean(&r.source.reference, false),
                clean(&r.learn, false)
            );
        }
        if let Some(c) = &r.check {
            eprint!("{}", clean(&c.text(), true));
        }
        if !r.observed_only.is_empty() {
            let shown: Vec<&str> = r.observed_only.iter().take(8).map(|s| s.as_str()).collect();
            let more = r.observed_only.len().saturating_sub(shown.len());
            eprintln!(
                "learn: kept {} path(s) only a probe showed (static analysis missed them): {}{}",
                r.observed_only.len(),
                clean(&shown.join(", "), false),
                if more > 0 {
                    format!(" and {more} more (see --report)")
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(path) = &a.report {
        let json = match done.single() {
            Some(r) => serde_json::to_string_pretty(r)?,
            None => serde_json::to_string_pretty(&done)?,
        };
        write_out(&Some(path.clone()), &(json + "\n"))?;
    }
    if let (Some(path), Some(r)) = (&a.seccomp_profile, done.images.first()) {
        let names = r.syscalls.iter().cloned().collect();
        write_profile(path, &names)?;
    }
    if a.print_security_context
        && let Some(r) = done.images.first()
    {
        let mut sc = r.security_context.clone();
        sc.localhost_profile = a.seccomp_profile.as_ref().map(|p| {
            format!(
                "pare/{}",
                p.file_name()
                    .map_or("profile.json".into(), |n| n.to_string_lossy())
            )
        });
        print!("{}", sc.yaml());
    }
    for r in &done.images {
        eprintln!("{}", clean(&r.summary(), false));
    }
    if let Some(i) = &done.index {
        let plats: Vec<String> = done
            .images
            .iter()
            .map(|r| r.source.platform.clone())
            .collect();
        eprintln!(
            "{}",
            clean(
                &format!(
                    "{} → {}  index of {} platforms ({}){}",
                    pare::report::short_ref(&i.source),
                    pare::report::short_ref(&i.destination),
                    plats.len(),
                    plats.join(", "),
                    if i.skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; skipped: {}", i.skipped.join("; "))
                    }
                ),
                false
            )
        );
    }
    Ok(())
}

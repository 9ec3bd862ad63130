//! `pare serve` and `pare serve jobs`.

use anyhow::Context;
use pare::serve::{self, auth::Secret, config::ServeConfig};

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: ServeArgs) -> anyhow::Result<Outcome> {
    if let Some(ServeCommand::Jobs(j)) = &a.command {
        return jobs(j);
    }
    let cwd = std::env::current_dir()?;
    let (table, path) =
        pare::policy::load_serve_table(&cwd, a.config.as_deref())?.ok_or_else(|| {
            pare::Error::Usage(format!(
                "no [serve] table in {}: name the registries to serve (see `pare serve --help`)",
                a.config
                    .as_ref()
                    .map_or("./pare.toml or ./.pare.toml".into(), |p| p
                        .display()
                        .to_string())
            ))
        })?;
    let mut config: ServeConfig = table.try_into().map_err(|e: toml::de::Error| {
        pare::Error::Usage(format!("{}: [serve] {}", path.display(), e.message()))
    })?;
    if let Some(n) = a.jobs {
        config.jobs = n;
    }
    let base = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let mut many = a.many.clone();
    if many.sign.sign_key.is_none() {
        many.sign.sign_key = config.sign_key.as_ref().map(|k| base.join(k));
    }
    // Sources must be signed by `--verify-key`, else by a key of [signatures] in this file.
    let mut hopts = many_options(&many, false, Some(&path))?;
    if config.check {
        hopts.check = Some(check_config(&PolicyFlags {
            allow: Vec::new(),
            fail_on: None,
            config: Some(path.clone()),
            strict: false,
        })?);
    }
    hopts.in_place = config.in_place;
    let token = secret(a.token_file.as_deref(), "--token-file")?.ok_or_else(|| {
        pare::Error::Usage("--token-file is required: the token callers send".into())
    })?;
    let hmac = secret(a.hmac_secret_file.as_deref(), "--hmac-secret-file")?;
    let opts = serve::ServeOptions {
        listen: a.listen.clone(),
        queue_dir: a.queue.clone(),
        token,
        hmac,
        rules: serve::config::Rules::new(config)?,
        harden: hopts,
    };
    serve::serve(opts, stop_signal()).await?;
    Ok(Outcome::Ok)
}

/// A secret file's contents (never empty).
fn secret(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Option<Secret>> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).with_context(|| format!("{flag} {}", p.display()))?;
    Secret::new(&text).map(Some).ok_or_else(|| {
        pare::Error::Usage(format!("{flag} {}: the file is empty", p.display())).into()
    })
}

/// SIGTERM (what Kubernetes and systemd send) or Ctrl-C.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `pare serve jobs`: the queue's jobs as a table or JSON.
fn jobs(a: &ServeJobsArgs) -> anyhow::Result<Outcome> {
    if !a.queue.join("queue.sqlite").is_file() {
        anyhow::bail!(pare::Error::Usage(format!(
            "{}: no job queue here (pare serve --queue DIR makes one)",
            a.queue.display()
        )));
    }
    let q = serve::queue::Queue::open_read(&a.queue)?;
    let mut jobs = q.list()?;
    if let Some(s) = &a.state {
        jobs.retain(|j| j.state.as_str() == s);
    }
    let skips = if a.skips > 0 {
        q.skips(a.skips)?
    } else {
        Vec::new()
    };
    match a.format {
        Format::Json => {
            let skips: Vec<_> = skips
                .iter()
                .map(|(what, reason, at)| serde_json::json!({ "what": what, "reason": reason, "at": at }))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "jobs": jobs, "skips": skips }))?
            );
        }
        Format::Text => {
            println!(
                "{:>6}  {:<8}  {:>3}  SOURCE → DEST  (ERROR)",
                "ID", "STATE", "TRY"
            );
            for j in &jobs {
                println!(
                    "{:>6}  {:<8}  {:>3}  {} → {}{}",
                    j.id,
                    j.state.as_str(),
                    j.attempts,
                    clean(&j.source, false),
                    clean(&j.dest, false),
                    j.error
                        .as_ref()
                        .map(|e| format!("  ({})", clean(e, false)))
                        .unwrap_or_default()
                );
            }
            for (what, reason, _) in &skips {
                println!("skipped  {}: {}", clean(what, false), clean(reason, false));
            }
        }
        Format::Sarif => anyhow::bail!(pare::Error::Usage(
            "pare serve jobs: --format text or json".into()
        )),
    }
    Ok(Outcome::Ok)
}

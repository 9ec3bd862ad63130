//! The jobs of `pare serve`, run: the oldest due job taken from the queue, the pushed image
//! read once to make sure pare did not write it (the loop guard), hardened, and the outcome
//! stored with one JSON log line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use super::queue::{Job, State};
use super::{App, log, now};
use crate::error::{Error, Result};
use crate::harden::{self, HardenOptions};
use crate::progress::Progress;
use crate::reference::ImageRef;

/// How a job ended.
enum Outcome {
    /// Written: the result's digest and the bytes saved.
    Hardened(String, u64),
    /// The destination already held this result.
    UpToDate(String),
    /// No work, and why.
    Skipped(String),
}

/// Take and run jobs until the service stops.
pub(super) async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Registered before looking, so a job stored meanwhile is not missed.
        let woken = app.wake.notified();
        let max = app.rules.config.max_attempts;
        let job = match app.on_queue(move |q| q.take(now(), max)).await {
            Ok(j) => j,
            Err(e) => {
                log(
                    "error",
                    "queue",
                    serde_json::json!({ "error": e.to_string() }),
                );
                None
            }
        };
        match job {
            Some(job) => attempt(&app, job).await,
            None => {
                // Until a job arrives, a retry falls due, or the service stops.
                let due = app.on_queue(|q| q.next_due()).await.ok().flatten();
                let wait = due.map_or(60, |d| (d - now()).clamp(1, 60)) as u64;
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// One attempt at a job, its outcome stored, counted and logged.
async fn attempt(app: &Arc<App>, job: Job) {
    let started = Instant::now();
    // A panic in the hardening is this job's failure, not the worker's end.
    let result = std::panic::AssertUnwindSafe(one(app, &job))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(Error::Other(
                "internal error (a panic) while hardening".into(),
            ))
        });
    let seconds = started.elapsed().as_secs_f64();
    let max = app.rules.config.max_attempts;
    let (outcome, digest, saved, err) = match result {
        Ok(Outcome::Hardened(d, saved)) => ("hardened", Some(d), saved, None),
        Ok(Outcome::UpToDate(d)) => ("up_to_date", Some(d), 0, None),
        Ok(Outcome::Skipped(why)) => ("skipped", None, 0, Some(why)),
        Err(e) => ("failed", None, 0, Some(explain(&e))),
    };
    let (id, why) = (job.id, err.clone().unwrap_or_default());
    let stored = app
        .on_queue(move |q| match outcome {
            "failed" => q.failed(id, &why, now(), max),
            "skipped" => q.skipped(id, &why).map(|_| State::Skipped),
            _ => q.done(id).map(|_| State::Done),
        })
        .await;
    let state = stored.unwrap_or_else(|e| {
        log(
            "error",
            "queue",
            serde_json::json!({ "job": id, "error": e.to_string() }),
        );
        State::Running
    });
    let outcome = match (outcome, state) {
        ("failed", State::Queued) => "retried",
        (o, _) => o,
    };
    app.metrics.finished(outcome, seconds, saved);
    log(
        if err.is_some() && outcome != "skipped" {
            "warn"
        } else {
            "info"
        },
        "job",
        serde_json::json!({
            "job": id,
            "source": job.source,
            "dest": job.dest,
            "attempt": job.attempts,
            "outcome": outcome,
            "state": state.as_str(),
            "digest": digest,
            "bytes_saved": saved,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "error": err,
        }),
    );
}

/// A failure as stored with its job: a check's or a probe's report appended (what failed,
/// and how), bounded.
fn explain(e: &Error) -> String {
    let mut msg = e.to_string();
    if let Error::CheckFailed { text, .. } | Error::ProbeFailed { text, .. } = e {
        let detail: String = text.trim().chars().take(2000).collect();
        msg = format!("{msg}\n{detail}");
    }
    msg
}

/// The job's work: the loop guard, then `pare harden SOURCE DEST`.
async fn one(app: &Arc<App>, job: &Job) -> Result<Outcome> {
    let src: ImageRef = job.source.parse()?;
    let dest: ImageRef = job.dest.parse()?;
    // The probes of `[[serve.probe]]` that match it.
    let probed;
    let mut opts: &HardenOptions = &app.harden;
    if let Some(r) = src.as_registry() {
        let (probes, timeout) = app
            .rules
            .probes_for(&r.repository, r.tag.as_deref().unwrap_or("latest"));
        if !probes.is_empty() {
            let mut limits = app.harden.probe_limits.clone();
            limits.seconds = timeout.unwrap_or(limits.seconds).max(1);
            probed = HardenOptions {
                probes,
                probe_limits: limits,
                ..app.harden.clone()
            };
            opts = &probed;
        }
    }
    // An image pare wrote (its recipe annotation), whatever its tag: an in-place result, a
    // destination a template put where sources are read.
    if let Some((manifest, _, _)) = crate::transport::source::top(&src, &opts.source).await?
        && let Some((_, Some(_))) = crate::transport::sink::recorded_in(&manifest)
    {
        return Ok(Outcome::Skipped(
            "an image pare wrote (it carries pare's recipe annotation)".into(),
        ));
    }
    let progress = Progress::stderr(true);
    let done = harden::harden(&src, Some(&dest), opts, &progress).await?;
    if let Some(u) = done.up_to_date {
        return Ok(Outcome::UpToDate(u.digest));
    }
    let saved = done
        .images
        .iter()
        .map(|r| {
            r.sizes
                .before
                .uncompressed
                .saturating_sub(r.sizes.after.uncompressed)
        })
        .sum();
    let digest = match (&done.index, done.images.first()) {
        (Some(i), _) => i.digest.clone(),
        (None, Some(r)) => r.destination.digest.clone(),
        (None, None) => String::new(),
    };
    Ok(Outcome::Hardened(digest, saved))
}

//! `pare serve`: harden each image the moment a registry announces its push. The events a
//! registry sends are read into pushes or skips ([`events`]) from callers who prove they may
//! post ([`auth`]), routed by the `[serve]` table ([`config`]), stored in a durable queue
//! before they are acknowledged ([`queue`]), and hardened by a few workers ([`worker`]); the
//! HTTP side ([`http`]) also answers health, readiness and Prometheus metrics ([`metrics`]).

pub mod auth;
pub mod config;
pub mod events;
mod http;
pub mod metrics;
pub mod queue;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, Semaphore, watch};

use crate::error::{Error, Result};
use crate::harden::HardenOptions;

/// Connections served at once (more wait to be accepted).
const MAX_CONNECTIONS: usize = 64;

pub struct ServeOptions {
    /// `HOST:PORT` to listen on (port 0: any free port, logged).
    pub listen: String,
    /// Where the job queue lives.
    pub queue_dir: PathBuf,
    pub token: auth::Secret,
    /// Signatures (`X-Hub-Signature-256`) are checked with this secret when set.
    pub hmac: Option<auth::Secret>,
    pub rules: config::Rules,
    /// What each job passes to `harden` (registries' options, `--check`, `--sign-key`, …).
    pub harden: HardenOptions,
}

/// What the request handlers and the workers share.
pub(crate) struct App {
    rules: config::Rules,
    queue: Arc<queue::Queue>,
    metrics: metrics::Metrics,
    token: auth::Secret,
    hmac: Option<auth::Secret>,
    harden: HardenOptions,
    /// The recipe the jobs are stored with (pare's version and the options that change what
    /// it writes).
    recipe: String,
    /// Woken when a job is stored.
    wake: Notify,
    /// Set on shutdown: readiness fails, workers take no new job.
    stopping: AtomicBool,
}

impl App {
    /// A queue operation on the blocking pool (SQLite waits for the disk).
    async fn on_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&queue::Queue) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let q = self.queue.clone();
        tokio::task::spawn_blocking(move || f(&q))
            .await
            .map_err(|e| Error::Other(format!("job queue: {e}")))?
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One JSON log line on stderr, shaped as tracing's JSON lines are (`timestamp`, `level` in
/// capitals, `message`), then the fields given.
pub(crate) fn log(level: &str, message: &str, fields: serde_json::Value) {
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut line = serde_json::json!({
        "timestamp": timestamp,
        "level": level.to_ascii_uppercase(),
        "message": message,
    });
    if let (Some(l), serde_json::Value::Object(f)) = (line.as_object_mut(), fields) {
        l.extend(f);
    }
    eprintln!("{line}");
}

/// Serve until `shutdown` resolves (SIGTERM, Ctrl-C): then stop accepting, let the jobs under
/// way finish within `[serve] grace-seconds`, put back in the queue those that did not, and
/// return.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let dir = opts.queue_dir.clone();
    let queue = tokio::task::spawn_blocking(move || queue::Queue::open(&dir))
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| Error::Usage(format!("--listen {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Other(e.to_string()))?;
    let app = Arc::new(App {
        recipe: opts.harden.recipe(),
        queue: Arc::new(queue),
        metrics: metrics::Metrics::default(),
        token: opts.token,
        hmac: opts.hmac,
        harden: opts.harden,
        wake: Notify::new(),
        stopping: AtomicBool::new(false),
        rules: opts.rules,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers: Vec<_> = (0..app.rules.config.jobs)
        .map(|_| tokio::spawn(worker::run(app.clone(), stop_rx.clone())))
        .collect();
    log(
        "info",
        "listening",
        serde_json::json!({
            "addr": addr.to_string(),
            "queue": opts.queue_dir.display().to_string(),
            "registries": app.rules.config.registries,
            "jobs": app.rules.config.jobs,
            "recipe": app.recipe,
        }),
    );
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        tokio::spawn(connection(app.clone(), stream, stop_rx.clone(), permit));
    }
    drop(listener);
    app.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(app.rules.config.grace_seconds);
    let running = app
        .on_queue(|q| q.counts())
        .await
        .ok()
        .and_then(|c| c.get(&queue::State::Running).copied())
        .unwrap_or(0);
    log(
        "info",
        "stopping",
        serde_json::json!({ "running": running, "grace_seconds": grace.as_secs() }),
    );
    let finish = futures_util::future::join_all(workers.iter_mut());
    if tokio::time::timeout(grace, finish).await.is_err() {
        for w in &workers {
            w.abort();
        }
    }
    let requeued = app.on_queue(|q| q.requeue_running(true)).await?;
    // Requests under way get a moment to be answered.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        connections.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
    log(
        "info",
        "stopped",
        serde_json::json!({ "requeued": requeued }),
    );
    Ok(())
}

/// One HTTP/1.1 connection (keep-alive), closed gracefully when the service stops.
async fn connection(
    app: Arc<App>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(http::handle(app, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

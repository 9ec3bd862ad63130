//! The HTTP side of `pare serve` (hyper 1, HTTP/1.1): who may post, bounded bodies, the
//! events stored before they are acknowledged, and the health, readiness and metrics pages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::events::{self, Event, MAX_BODY};
use super::queue::Entry;
use super::{App, log, now};
use crate::reference::{ImageRef, RegistryRef};

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The GitHub-style signature header (`sha256=HEX` of the body).
const SIGNATURE: &str = "x-hub-signature-256";

type Answer = Response<Full<Bytes>>;

fn answer(code: StatusCode, kind: &str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json(code: StatusCode, v: serde_json::Value) -> Answer {
    answer(code, "application/json", format!("{v}\n"))
}

fn error(code: StatusCode, msg: &str) -> Answer {
    json(code, serde_json::json!({ "error": msg }))
}

/// One request, answered; counted by endpoint and code.
pub(super) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let endpoint = match path.as_str() {
        "/healthz"
        | "/readyz"
        | "/metrics"
        | "/events/distribution"
        | "/events/harbor"
        | "/harden" => path.clone(),
        _ => "other".into(),
    };
    let r = route(&app, req).await;
    app.metrics.request(&endpoint, r.status().as_u16());
    r
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Answer {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match (req.uri().path(), get, post) {
        ("/healthz", true, _) => answer(StatusCode::OK, "text/plain", "ok\n"),
        ("/readyz", true, _) => ready(app).await,
        ("/metrics", true, _) => metrics(app).await,
        ("/events/distribution", _, true) => post_events(app, req, "distribution").await,
        ("/events/harbor", _, true) => post_events(app, req, "harbor").await,
        ("/harden", _, true) => post_events(app, req, "api").await,
        ("/healthz" | "/readyz" | "/metrics", ..) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        ("/events/distribution" | "/events/harbor" | "/harden", ..) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn ready(app: &Arc<App>) -> Answer {
    if app.stopping.load(Ordering::SeqCst) {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n");
    }
    match app.on_queue(|q| q.counts()).await {
        Ok(_) => answer(StatusCode::OK, "text/plain", "ready\n"),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the job queue cannot be read\n",
        ),
    }
}

async fn metrics(app: &Arc<App>) -> Answer {
    let counts = match app.on_queue(|q| q.counts()).await {
        Ok(c) => c,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the job queue cannot be read",
            );
        }
    };
    answer(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(&counts),
    )
}

/// Authenticated, bounded, parsed, stored, then acknowledged.
async fn post_events(app: &Arc<App>, req: Request<Incoming>, source: &'static str) -> Answer {
    let headers = req.headers();
    let text = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token_ok = app.token.authorizes(text("authorization").as_deref());
    let signature = text(SIGNATURE);
    // A signature counts only when the service has an HMAC secret; a wrong one is refused
    // even beside a right token.
    let signed_maybe = app.hmac.is_some() && signature.is_some();
    if !token_ok && !signed_maybe {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB");
    }
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "body too slow"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB");
        }
        Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "body could not be read"),
        Ok(Ok(b)) => b.to_bytes(),
    };
    if let (Some(secret), Some(sig)) = (&app.hmac, &signature)
        && !secret.signed(&body, Some(sig))
    {
        return error(StatusCode::UNAUTHORIZED, "wrong signature");
    }
    let parsed = match source {
        "distribution" => events::distribution(&body),
        "harbor" => events::harbor(&body),
        _ => return harden_request(app, &body).await,
    };
    match parsed {
        Ok(evs) => store(app, source, evs).await,
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// The events stored (jobs added unless stored already, skips recorded) in one transaction,
/// then answered 202; 503 when the queue cannot take them (the registry sends them again).
async fn store(app: &Arc<App>, source: &'static str, evs: Vec<Event>) -> Answer {
    let mut entries = Vec::with_capacity(evs.len());
    for ev in evs {
        entries.push(match ev {
            Event::Push(p) => match app.rules.route(&p) {
                Ok(r) => Entry::Job {
                    source: r.source,
                    digest: r.digest,
                    dest: r.dest,
                },
                Err(reason) => Entry::Skip {
                    what: format!("{}/{}:{}@{}", p.registry, p.repository, p.tag, p.digest),
                    reason,
                },
            },
            Event::Skip { what, reason } => Entry::Skip {
                what,
                reason: reason.to_string(),
            },
        });
    }
    let outcomes = match save(app, source, entries).await {
        Ok(o) => o,
        Err(answer) => return answer,
    };
    let count = |o: &str| outcomes.iter().filter(|x| **x == o).count();
    let (queued, duplicate, skipped) = (count("queued"), count("duplicate"), count("skipped"));
    json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "queued": queued, "duplicate": duplicate, "skipped": skipped }),
    )
}

/// Entries stored in one transaction, each counted by outcome (`queued`, `duplicate`,
/// `skipped`), a job's logged, the workers woken when one is new; 503 when the queue cannot
/// take them (the registry sends them again).
async fn save(
    app: &Arc<App>,
    source: &'static str,
    entries: Vec<Entry>,
) -> Result<Vec<&'static str>, Answer> {
    let (stored, recipe) = (entries.clone(), app.recipe.clone());
    let added = match app
        .on_queue(move |q| q.store(&stored, &recipe, now()))
        .await
    {
        Ok(a) => a,
        Err(e) => {
            log(
                "error",
                "events not stored",
                serde_json::json!({ "error": e.to_string() }),
            );
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the job queue cannot store events",
            ));
        }
    };
    let mut outcomes = Vec::with_capacity(entries.len());
    for (e, added) in entries.iter().zip(added) {
        let outcome = match (e, added) {
            (Entry::Job { .. }, true) => "queued",
            (Entry::Job { .. }, false) => "duplicate",
            (Entry::Skip { .. }, _) => "skipped",
        };
        app.metrics.event(source, outcome);
        if let Entry::Job { source, dest, .. } = e {
            log(
                "info",
                "event",
                serde_json::json!({ "outcome": outcome, "source": source, "dest": dest }),
            );
        }
        outcomes.push(outcome);
    }
    if outcomes.contains(&"queued") {
        app.wake.notify_waiters();
    }
    Ok(outcomes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HardenRequest {
    image: String,
    #[serde(default)]
    dest: Option<String>,
}

/// `POST /harden {"image": "HOST/REPO:TAG", "dest": …}`: the same registries, include,
/// exclude and destination rules as a push (403 with the reason otherwise); the tag's digest
/// is looked up now, so the job is pinned to what was asked for.
async fn harden_request(app: &Arc<App>, body: &[u8]) -> Answer {
    let req: HardenRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")),
    };
    let src = match req.image.parse::<ImageRef>() {
        Ok(r) => match r.as_registry() {
            Some(r) => r.clone(),
            None => return error(StatusCode::BAD_REQUEST, "image: a registry image is needed"),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("image: {e}")),
    };
    let tag = src.tag.clone().unwrap_or_else(|| "latest".into());
    if let Err(reason) = app.rules.admits(&src.registry, &src.repository, &tag) {
        app.metrics.event("api", "skipped");
        return error(StatusCode::FORBIDDEN, &reason);
    }
    let digest = match &src.digest {
        Some(d) => d.clone(),
        None => match lookup(app, &src).await {
            Ok(Some(d)) => d,
            Ok(None) => return error(StatusCode::NOT_FOUND, "image: no such manifest"),
            Err(e) => return error(StatusCode::BAD_GATEWAY, &format!("image: {e}")),
        },
    };
    let pinned = RegistryRef {
        tag: Some(tag),
        digest: Some(digest),
        ..src
    };
    let route = match app.rules.route_ref(&pinned, req.dest.as_deref()) {
        Ok(r) => r,
        Err(reason) => {
            app.metrics.event("api", "skipped");
            return error(StatusCode::FORBIDDEN, &reason);
        }
    };
    let entry = Entry::Job {
        source: route.source.clone(),
        digest: route.digest,
        dest: route.dest.clone(),
    };
    let outcome = match save(app, "api", vec![entry]).await {
        Ok(o) => o.first().copied().unwrap_or("duplicate"),
        Err(answer) => return answer,
    };
    json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "outcome": outcome, "source": route.source, "dest": route.dest }),
    )
}

/// The digest a tag names now (bounded in time).
async fn lookup(app: &Arc<App>, src: &RegistryRef) -> crate::error::Result<Option<String>> {
    let r: ImageRef = src.clone().into();
    match tokio::time::timeout(
        Duration::from_secs(60),
        crate::transport::source::current_digest(&r, &app.harden.source),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => Err(crate::error::Error::Other(
            "the registry did not answer in 60 s".into(),
        )),
    }
}

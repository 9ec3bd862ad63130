//! Transient registry faults (5xx, 429, cut and slow answers) retried with backoff, and the
//! read timeout that turns a stalled answer into one.

use std::time::Duration;

use oci_client::errors::OciDistributionError;

use super::*;

/// Tries of a registry call that failed for a reason that may pass (connection refused or
/// reset, timeout, 429, 5xx): waits of 0.5, 1, 2 and 4 s in between.
pub(super) const ATTEMPTS: u32 = 5;

pub(super) static READ_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How long a request may go without progress before it fails (and is retried): `--timeout`,
/// 60 s by default. Set once, before the first client connects.
pub fn set_read_timeout(d: Duration) {
    let _ = READ_TIMEOUT.set(d);
}

pub(super) fn read_timeout() -> Duration {
    *READ_TIMEOUT.get_or_init(|| Duration::from_secs(60))
}

pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << (attempt - 1).min(6))
}

/// Whether an oci-client error may pass on a second try.
pub(super) fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(e) => transient_http(e),
        OciDistributionError::ServerError { code, .. } => transient_status(*code),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == oci_client::errors::OciErrorCode::Toomanyrequests),
        _ => false,
    }
}

/// A transient fault: say so and count it; the wait before the next try.
pub(super) fn retry_after(
    what: &str,
    attempt: &mut u32,
    error: &dyn std::error::Error,
) -> Duration {
    note_retry(what, *attempt, error);
    let wait = backoff(*attempt);
    *attempt += 1;
    wait
}

/// One warning line for a retry: what failed, its root cause, and when the next try is.
pub(super) fn note_retry(what: &str, attempt: u32, error: &dyn std::error::Error) {
    let mut cause = error.to_string();
    let mut src = error.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    tracing::warn!(
        "pare: warning: {what}: {cause}; try {} of {ATTEMPTS} in {:.1}s",
        attempt + 1,
        backoff(attempt).as_secs_f64()
    );
}

/// Whether a manifest push may pass on a second try: besides [`transient`], a registry that
/// says a blob just pushed is unknown or unreadable (the distribution registry rewrites a
/// blob's link in place, so a concurrent push of the same blob, such as another shard of a
/// batch on a shared base, can make it briefly unreadable).
pub(super) fn transient_manifest(e: &OciDistributionError) -> bool {
    const RACY: [&str; 2] = ["MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID"];
    match e {
        OciDistributionError::ServerError {
            code: 400, message, ..
        } => RACY.iter().any(|c| message.contains(c)),
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestBlobUnknown
                    | oci_client::errors::OciErrorCode::DigestInvalid
            )
        }),
        _ => transient(e),
    }
}

pub(super) fn transient_http(e: &reqwest::Error) -> bool {
    // A name that does not resolve, or a certificate that does not verify, will not on a
    // second try either.
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let m = s.to_string().to_ascii_lowercase();
        if m.contains("dns error")
            || m.contains("failed to lookup address")
            || m.contains("certificate")
            || m.contains("invalid peer")
        {
            return false;
        }
        src = s.source();
    }
    // A status turned into an error (oci-client's HEAD of a blob does that): as a status.
    if let Some(code) = e.status() {
        return transient_status(code.as_u16());
    }
    e.is_connect() || e.is_timeout() || e.is_body() || e.is_request()
}

pub(super) fn transient_status(code: u16) -> bool {
    matches!(code, 408 | 429 | 500 | 502 | 503 | 504)
}

impl RegistryClient {
    /// Run `call` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
    /// Only idempotent calls, or uploads from a replayable source, go through here.
    pub(in crate::transport::registry) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        call: F,
    ) -> std::result::Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.retrying_if(what, transient, call).await
    }

    /// [`Self::retrying`] with the caller's idea of a transient error.
    pub(in crate::transport::registry) async fn retrying_if<T, F, Fut>(
        &self,
        what: &str,
        transient: fn(&OciDistributionError) -> bool,
        mut call: F,
    ) -> std::result::Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    tokio::time::sleep(retry_after(what, &mut attempt, &e)).await;
                }
                r => return r,
            }
        }
    }
}

//! The library's error type: every failure is one line naming what and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {input:?}: {reason}")]
    Reference { input: String, reason: String },

    #[error("{op} {target}: {message}")]
    Registry {
        op: &'static str,
        target: String,
        message: String,
    },

    #[error("credentials for {registry}: {message}")]
    Auth { registry: String, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("blob {digest}: digest mismatch (content hashes to {actual})")]
    DigestMismatch { digest: String, actual: String },

    #[error("blob {digest}: size mismatch (descriptor says {expected} bytes, got {actual})")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },

    #[error("malformed image {what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("{path}: {reason}")]
    Path { path: String, reason: String },

    #[error("entrypoint: {0}")]
    Entrypoint(String),

    #[error("{object}: needs {name}, which cannot be found in the image (searched {searched})")]
    MissingLibrary {
        object: String,
        name: String,
        searched: String,
    },

    #[error("{path}: malformed ELF: {reason}")]
    Elf { path: String, reason: String },

    #[error("{0}")]
    Usage(String),

    /// The hardened image fails `pare check`: the rules that fail, and the report as text
    /// (what `main` prints; the error type does not know the report's type).
    #[error("refusing to write {dest}: the hardened image fails pare check ({})", .rules.join(", "))]
    CheckFailed {
        dest: String,
        rules: Vec<String>,
        text: String,
    },

    /// Probes behave differently in the hardened image: how many, and the report as text.
    #[error(
        "refusing to write {dest}: {failed} of {total} probes behave differently in the hardened image"
    )]
    ProbeFailed {
        dest: String,
        failed: usize,
        total: usize,
        text: String,
    },

    /// A source without a valid signature by the given keys.
    #[error("signature: {0}")]
    Signature(String),

    /// A key file that cannot be used.
    #[error("key: {0}")]
    Key(String),

    /// The probe sandbox could not be set up (namespaces not allowed, …).
    #[error("{0}")]
    Sandbox(String),

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A blocking task that panicked or was cancelled.
    pub fn join(e: tokio::task::JoinError) -> Self {
        Error::Other(format!("worker failed: {e}"))
    }

    pub fn malformed(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn path(path: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Path {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

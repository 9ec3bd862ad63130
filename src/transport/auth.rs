//! Registry credentials: `--creds`, `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json` (with `auths` entries and credential helpers). Secrets are never
//! printed: [`Credentials`] redacts itself in `Debug`, and errors name only the file.

use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

use crate::error::{Error, Result};

/// Resolved credentials and where they came from (for error messages, never the secret).
#[derive(Clone)]
pub struct Credentials {
    pub auth: RegistryAuth,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials(from {})", self.source)
    }
}

impl Credentials {
    pub fn anonymous() -> Self {
        Credentials {
            auth: RegistryAuth::Anonymous,
            source: "anonymous".into(),
        }
    }
}

/// The auth files to consult, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(d).join("config.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        files.push(PathBuf::from(h).join(".docker").join("config.json"));
    }
    files
}

/// `USER:PASS` from `--creds`.
pub fn parse_creds(s: &str) -> Result<Credentials> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok(Credentials {
            auth: RegistryAuth::Basic(u.to_string(), p.to_string()),
            source: "--creds".into(),
        }),
        _ => Err(Error::Usage("--creds expects USER:PASSWORD".into())),
    }
}

/// The credentials given (`--creds`, `--dest-creds`), else those of the auth files for
/// `registry`.
pub fn given_or_lookup(given: Option<&Credentials>, registry: &str) -> Result<Credentials> {
    match given {
        Some(c) => Ok(c.clone()),
        None => lookup(registry),
    }
}

/// Look up credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
pub fn lookup(registry: &str) -> Result<Credentials> {
    let keys: Vec<String> = if registry == crate::reference::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![registry.to_string(), format!("https://{registry}")]
    };
    for file in auth_files() {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for key in &keys {
            match docker_credential::get_credential_from_reader(&bytes[..], key) {
                Ok(DockerCredential::UsernamePassword(u, p)) => {
                    return Ok(Credentials {
                        auth: RegistryAuth::Basic(u, p),
                        source: file.display().to_string(),
                    });
                }
                Ok(DockerCredential::IdentityToken(_)) => {
                    return Err(Error::Auth {
                        registry: registry.into(),
                        message: format!(
                            "{} holds an identity token (OAuth refresh token), which pare does not support yet; use --creds",
                            file.display()
                        ),
                    });
                }
                Err(CredentialRetrievalError::NoCredentialConfigured) => {}
                Err(CredentialRetrievalError::ConfigReadError) => {
                    return Err(Error::Auth {
                        registry: registry.into(),
                        message: format!("{} is not a valid auth file", file.display()),
                    });
                }
                Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                    return Err(Error::Auth {
                        registry: registry.into(),
                        message: format!(
                            "credential helper docker-credential-{helper} (named in {}) failed",
                            file.display()
                        ),
                    });
                }
                Err(e) => {
                    return Err(Error::Auth {
                        registry: registry.into(),
                        message: format!("{}: {e}", file.display()),
                    });
                }
            }
        }
    }
    Ok(Credentials::anonymous())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_flag() {
        let c = parse_creds("alice:s3cr:et").unwrap();
        assert!(
            matches!(c.auth, RegistryAuth::Basic(ref u, ref p) if u == "alice" && p == "s3cr:et")
        );
        assert!(!format!("{c:?}").contains("s3cr"));
        assert!(parse_creds("nopass").is_err());
        assert!(parse_creds(":x").is_err());
    }

    #[test]
    fn reads_docker_config_auths() {
        // base64("bob:pw") = Ym9iOnB3
        let cfg = br#"{"auths":{"127.0.0.1:5000":{"auth":"Ym9iOnB3"},"other.io":{"username":"u","password":"p"}}}"#;
        let c = docker_credential::get_credential_from_reader(&cfg[..], "127.0.0.1:5000").unwrap();
        assert_eq!(
            c,
            DockerCredential::UsernamePassword("bob".into(), "pw".into())
        );
        let c = docker_credential::get_credential_from_reader(&cfg[..], "other.io").unwrap();
        assert_eq!(
            c,
            DockerCredential::UsernamePassword("u".into(), "p".into())
        );
    }
}

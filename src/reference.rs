//! Image references: `HOST[:PORT]/REPO[:TAG][@sha256:HEX]` (optionally `docker://`), Docker Hub
//! short names, and `oci:DIR[:TAG]` image-layout directories.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

pub const DOCKER_HUB: &str = "docker.io";

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    /// An OCI image-layout directory; `tag` selects `org.opencontainers.image.ref.name` in `index.json`.
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// A `docker save` tarball; `reference` is a RepoTag (or `@N`, an index into manifest.json).
    Archive {
        path: PathBuf,
        reference: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl RegistryRef {
    /// Tag if given, `latest` if neither tag nor digest is.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// Whether this registry is on loopback (plain HTTP by convention).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    pub fn to_oci(&self) -> oci_client::Reference {
        match (&self.digest, self.tag_or_default()) {
            (Some(d), Some(t)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                t.to_string(),
                d.clone(),
            ),
            (Some(d), None) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.unwrap_or("latest").to_string(),
            ),
        }
    }
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// `host:port` → `host`; `[::1]:5000` → `[::1]`.
pub fn host_without_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(i) => &registry[..=i],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// The registry reference, when the image is in a registry.
    pub fn as_registry(&self) -> Option<&RegistryRef> {
        match self {
            ImageRef::Registry(r) => Some(r),
            _ => None,
        }
    }

    /// Whether both name the same registry host.
    pub fn same_registry(&self, other: &ImageRef) -> bool {
        matches!((self, other), (ImageRef::Registry(a), ImageRef::Registry(b)) if a.registry == b.registry)
    }
}

impl From<RegistryRef> for ImageRef {
    fn from(r: RegistryRef) -> Self {
        ImageRef::Registry(r)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
            ImageRef::Archive { path, reference } => {
                write!(f, "docker-archive:{}", path.display())?;
                if let Some(r) = reference {
                    write!(f, ":{r}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse(s)
    }
}

fn err(input: &str, reason: impl Into<String>) -> Error {
    Error::Reference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Parses any reference pare accepts.
pub fn parse(input: &str) -> Result<ImageRef> {
    if let Some(rest) = input.strip_prefix("oci:") {
        let (dir, tag) = match rest.split_once(':') {
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(err(input, "oci: needs a directory, as in oci:DIR[:TAG]"));
        }
        if let Some(t) = tag
            && !valid_layout_tag(t)
        {
            return Err(err(input, format!("{t:?} is not a valid tag")));
        }
        return Ok(ImageRef::Layout {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_string),
        });
    }
    if let Some(rest) = input.strip_prefix("docker-archive:") {
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(err(
                input,
                "docker-archive: needs a file, as in docker-archive:FILE[:REF]",
            ));
        }
        if let Some(r) = reference
            && !r.starts_with('@')
        {
            parse_registry(input, r)?;
        }
        return Ok(ImageRef::Archive {
            path: PathBuf::from(path),
            reference: reference.map(str::to_string),
        });
    }
    if let Some((transport, _)) = input.split_once(':')
        && matches!(
            transport,
            "oci-archive" | "dir" | "docker-daemon" | "containers-storage"
        )
    {
        return Err(err(
            input,
            format!(
                "the {transport}: transport is not supported (use docker://, oci: or docker-archive:)"
            ),
        ));
    }
    let s = input.strip_prefix("docker://").unwrap_or(input);
    parse_registry(input, s).map(ImageRef::Registry)
}

fn parse_registry(input: &str, s: &str) -> Result<RegistryRef> {
    if s.is_empty() {
        return Err(err(input, "empty reference"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(input, "contains whitespace or control characters"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        validate_digest(d).map_err(|reason| err(input, reason))?;
    }
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(err(
            input,
            format!("{t:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"),
        ));
    }
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry.is_empty() {
        return Err(err(input, "empty registry host"));
    }
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => registry,
    };
    let repository = if registry == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    validate_repository(&repository).map_err(|reason| err(input, reason))?;
    Ok(RegistryRef {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `sha256:` and 64 lowercase hex digits. Any other algorithm is refused: pare verifies every
/// blob and only implements sha256.
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(format!("digest {d:?} is not sha256:<64 hex digits>"));
    };
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("digest {d:?} is not sha256:<64 hex digits>"))
    }
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_layout_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 255 && !t.chars().any(|c| c.is_control() || c == '/')
}

fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("empty repository name".into());
    }
    if repo.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    for comp in repo.split('/') {
        let ok = !comp.is_empty()
            && comp
                .bytes()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            && comp.as_bytes()[0].is_ascii_alphanumeric()
            && comp.as_bytes()[comp.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(format!(
                "repository component {comp:?} must be lowercase letters, digits and separators (. _ -)"
            ));
        }
    }
    Ok(())
}

/// The default destination of `pare harden SRC`: the same repository, tag `TAG-hardened`
/// (`hardened-<12 hex>` for a digest-only source).
/// A registry host as it is reached: lower case, without the default HTTPS port.
fn registry_key(r: &str) -> String {
    let r = r.to_ascii_lowercase();
    r.strip_suffix(":443").map(str::to_string).unwrap_or(r)
}

/// A path as the filesystem names it (canonical when it exists).
fn path_key(p: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether writing `dest` would replace `src` itself: the same repository and tag of the same
/// registry, the same tag of the same layout directory (`src_layout_tag` is the tag the
/// source resolved to when it named none), or the same archive file.
pub fn replaces_source(src: &ImageRef, dest: &ImageRef, src_layout_tag: Option<&str>) -> bool {
    match (src, dest) {
        (ImageRef::Registry(s), ImageRef::Registry(d)) => {
            registry_key(&s.registry) == registry_key(&d.registry)
                && s.repository == d.repository
                && s.tag_or_default().is_some()
                && s.tag_or_default() == d.tag_or_default()
        }
        (ImageRef::Layout { dir: sd, tag: st }, ImageRef::Layout { dir: dd, tag: dt }) => {
            let st = st.as_deref().or(src_layout_tag);
            path_key(sd) == path_key(dd) && st == Some(dt.as_deref().unwrap_or("latest"))
        }
        // Writing an archive rewrites the whole file.
        (ImageRef::Archive { path: sp, .. }, ImageRef::Archive { path: dp, .. }) => {
            path_key(sp) == path_key(dp)
        }
        _ => false,
    }
}

/// A tag pare writes as a result ([`hardened_tag`]'s `TAG-hardened`, `hardened-DIGEST12`), or
/// a referrers/signature tag: never an image to harden.
pub fn is_output_tag(tag: &str) -> bool {
    tag.ends_with("-hardened") || tag.starts_with("hardened-") || is_referrers_tag(tag)
}

/// A tag of the referrers tag scheme: `sha256-HEX`, or cosign's `sha256-HEX.sig` (`.att`,
/// `.sbom`): an artifact pointing at an image, never an image to harden.
pub fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|rest| {
        let hex = rest.split('.').next().unwrap_or("");
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The default destination tag of a registry image with `tag` (else pinned to `digest`):
/// `TAG-hardened`, `hardened-DIGEST12`, or `latest-hardened`.
pub fn hardened_tag(tag: Option<&str>, digest: Option<&str>) -> Result<String> {
    let t = match (tag, digest) {
        (Some(t), _) => format!("{t}-hardened"),
        (None, Some(d)) => format!("hardened-{}", &d["sha256:".len()..][..12]),
        (None, None) => "latest-hardened".to_string(),
    };
    if !valid_tag(&t) {
        return Err(Error::Usage(format!(
            "the default destination tag {t:?} is not a valid tag; name DEST explicitly"
        )));
    }
    Ok(t)
}

pub fn default_destination(src: &ImageRef) -> Result<ImageRef> {
    Ok(match src {
        ImageRef::Registry(r) => ImageRef::Registry(RegistryRef {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            tag: Some(hardened_tag(r.tag_or_default(), r.digest.as_deref())?),
            digest: None,
        }),
        ImageRef::Layout { dir, tag } => ImageRef::Layout {
            dir: dir.clone(),
            tag: Some(match tag {
                Some(t) => format!("{t}-hardened"),
                None => "hardened".to_string(),
            }),
        },
        // Never the source file: app.tar → app-hardened.tar, tag TAG-hardened.
        ImageRef::Archive { path, reference } => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = path
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            let reference = match reference.as_deref() {
                Some(r) if !r.starts_with('@') => match parse(r)? {
                    ImageRef::Registry(rr) => Some(format!(
                        "{}/{}:{}",
                        rr.registry,
                        rr.repository,
                        hardened_tag(rr.tag_or_default(), rr.digest.as_deref())?
                    )),
                    _ => None,
                },
                _ => None,
            };
            ImageRef::Archive {
                path: path.with_file_name(format!("{stem}-hardened{ext}")),
                reference,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_that_is_the_source() {
        let r = |s: &str| -> ImageRef { s.parse().unwrap() };
        let same = |a: &str, b: &str| replaces_source(&r(a), &r(b), None);
        assert!(same(
            "registry.example.com/a/b:1",
            "registry.example.com/a/b:1"
        ));
        assert!(same(
            "Registry.Example.com:443/a/b:1",
            "registry.example.com/a/b:1"
        ));
        assert!(same("nginx:1", "docker.io/library/nginx:1"));
        assert!(same("nginx", "index.docker.io/library/nginx:latest"));
        assert!(!same(
            "registry.example.com/a/b:1",
            "registry.example.com/a/b:2"
        ));
        assert!(!same(
            "registry.example.com:5000/a/b:1",
            "registry.example.com/a/b:1"
        ));
        let d = format!("r.io/a@sha256:{}", "a".repeat(64));
        assert!(
            !same(&d, "r.io/a:latest"),
            "a digest-only source has no tag to overwrite"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display();
        assert!(same(&format!("oci:{p}:v1"), &format!("oci:{p}/.:v1")));
        assert!(!same(&format!("oci:{p}:v1"), &format!("oci:{p}:v2")));
        assert!(replaces_source(
            &r(&format!("oci:{p}")),
            &r(&format!("oci:{p}:latest")),
            Some("latest")
        ));
        assert!(same(
            &format!("docker-archive:{p}/a.tar:x:1"),
            &format!("docker-archive:{p}/./a.tar:y:2")
        ));
    }

    fn reg(s: &str) -> RegistryRef {
        match parse(s).unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_names() {
        let r = reg("nginx");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_default(), Some("latest"));
        let r = reg("bitnami/redis:7.2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "bitnami/redis", Some("7.2"))
        );
        assert_eq!(
            reg("index.docker.io/library/alpine:3").registry,
            "docker.io"
        );
        assert_eq!(reg("docker://alpine").repository, "library/alpine");
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = reg("registry.example.com/team/api:1.4");
        assert_eq!(r.registry, "registry.example.com");
        assert_eq!(r.repository, "team/api");
        assert_eq!(r.tag.as_deref(), Some("1.4"));
        let r = reg("127.0.0.1:5000/a/b/c");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag, None);
        assert!(r.is_loopback());
        let r = reg(&format!("localhost:5000/x:1@{D}"));
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = reg(&format!("localhost/x@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_default(), None);
        assert_eq!(reg("[::1]:5000/x:2").registry, "[::1]:5000");
        assert!(reg("[::1]:5000/x:2").is_loopback());
        assert!(!reg("registry.example.com/x").is_loopback());
        assert!(reg("127.8.9.10:1/x").is_loopback());
        assert_eq!(
            reg("registry.example.com/team/api:1.4").to_string(),
            "registry.example.com/team/api:1.4"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Upper/Case",
            "a b",
            "x:tag with space",
            "x@sha256:abc",
            "x@md5:0123",
            "host.com/",
            "host.com//x",
            "x:-tag",
            "x/../y",
            "oci:",
            "docker-archive:",
            "docker-archive:f.tar:UPPER",
            "oci-archive:foo.tar",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn layout_references() {
        assert_eq!(
            parse("oci:/tmp/lay:v1").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse("oci:rel/dir").unwrap(),
            ImageRef::Layout {
                dir: "rel/dir".into(),
                tag: None
            }
        );
    }

    #[test]
    fn default_destinations() {
        let d = default_destination(&parse("registry.example.com/team/api:1.4").unwrap()).unwrap();
        assert_eq!(d.to_string(), "registry.example.com/team/api:1.4-hardened");
        let d = default_destination(&parse("nginx").unwrap()).unwrap();
        assert_eq!(d.to_string(), "docker.io/library/nginx:latest-hardened");
        let d = default_destination(&parse(&format!("h.io/x@{D}")).unwrap()).unwrap();
        assert_eq!(d.to_string(), "h.io/x:hardened-0123456789ab");
        let d = default_destination(&parse("oci:/l:v1").unwrap()).unwrap();
        assert_eq!(d.to_string(), "oci:/l:v1-hardened");
        let d = default_destination(&parse("docker-archive:/x/app.tar:app:1").unwrap()).unwrap();
        assert_eq!(
            d.to_string(),
            "docker-archive:/x/app-hardened.tar:docker.io/library/app:1-hardened"
        );
        assert_eq!(
            parse("docker-archive:a.tar").unwrap(),
            ImageRef::Archive {
                path: "a.tar".into(),
                reference: None
            }
        );
        let long = format!("h.io/x:{}", "a".repeat(125));
        assert!(default_destination(&parse(&long).unwrap()).is_err());
    }
}

//! Arguments turned into the library's options, and the printing helpers the commands share.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use pare::harden::HardenOptions;
use pare::image::Platform;
use pare::policy::{CheckConfig, Severity};
use pare::transport::source::SourceOptions;

use super::args::*;

/// The passphrase of an encrypted key: FILE (its first line), else $PARE_PASSWORD.
pub(super) fn passphrase(file: Option<&Path>, what: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        return Ok(text.lines().next().unwrap_or("").as_bytes().to_vec());
    }
    match std::env::var_os("PARE_PASSWORD") {
        Some(v) => Ok(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
        None => anyhow::bail!(
            "{what}: give the passphrase with --sign-passphrase-file FILE or $PARE_PASSWORD"
        ),
    }
}

/// `--compression` and `--threads` into the harden options.
pub(super) fn output_options(o: &OutputFlags, opts: &mut HardenOptions) -> anyhow::Result<()> {
    opts.compression = o.compression.parse()?;
    opts.source.threads = o.threads;
    Ok(())
}

/// The signing key of `--sign-key`, decrypted.
pub(super) fn signing_key(
    f: &SignFlags,
) -> anyhow::Result<Option<std::sync::Arc<pare::sign::PrivateKey>>> {
    let Some(path) = &f.sign_key else {
        return Ok(None);
    };
    let text = pare::sign::keys::read_key_file(path)?;
    let pass = passphrase(f.sign_passphrase_file.as_deref(), "--sign-key")?;
    let key = pare::sign::PrivateKey::from_encrypted_pem(&text, &pass)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(std::sync::Arc::new(key)))
}

/// Public keys from PEM files.
pub(super) fn public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<pare::sign::PublicKey>> {
    paths
        .iter()
        .map(|p| {
            let text = pare::sign::keys::read_key_file(p)?;
            pare::sign::PublicKey::from_pem(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .collect()
}

/// The keys a source must be signed by: `--verify-key`, else `[signatures]` of the
/// configuration file (`config`, else ./pare.toml).
pub(super) fn verify_keys(
    s: &SourceArgs,
    config: Option<&Path>,
) -> anyhow::Result<Vec<pare::sign::PublicKey>> {
    if !s.verify_key.is_empty() {
        return public_keys(&s.verify_key);
    }
    let paths = pare::policy::load_signature_keys(&std::env::current_dir()?, config)?;
    public_keys(&paths)
}

pub(super) fn source_options(s: &SourceArgs) -> anyhow::Result<SourceOptions> {
    source_options_with(s, None)
}

pub(super) fn source_options_with(
    s: &SourceArgs,
    config: Option<&Path>,
) -> anyhow::Result<SourceOptions> {
    if s.platform.len() > 1 {
        anyhow::bail!("--platform can be given once here");
    }
    Ok(SourceOptions {
        verify_keys: verify_keys(s, config)?,
        platform: s.platform.first().map(|p| Platform::parse(p)).transpose()?,
        insecure_registries: s.insecure_registry.clone(),
        creds: s
            .creds
            .as_deref()
            .map(pare::transport::auth::parse_creds)
            .transpose()?,
        blobs: None,
        threads: 0,
        clients: None,
    })
}

/// The source and trace flags as options; `config`: the file whose [signatures] apply (else
/// ./pare.toml).
pub(super) fn options(
    s: &SourceArgs,
    t: &TraceFlags,
    config: Option<&Path>,
) -> anyhow::Result<HardenOptions> {
    Ok(HardenOptions {
        source: source_options_with(s, config)?,
        keep: t.keep.clone(),
        allow_missing: t.allow_missing,
        runtime_full: t.runtime_full,
        no_packages: t.no_packages,
        ..Default::default()
    })
}

/// Options of `harden`, `batch` and `serve`: one `--platform` picks a single platform, several
/// make the multi-platform selection.
pub(super) fn harden_options(
    s: &SourceArgs,
    t: &TraceFlags,
    user: Option<&str>,
    dry_run: bool,
    config: Option<&Path>,
) -> anyhow::Result<HardenOptions> {
    let platforms: Vec<Platform> = s
        .platform
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<_, _>>()?;
    let mut source = s.clone();
    if platforms.len() > 1 {
        source.platform.clear();
    }
    let mut opts = options(&source, t, config)?;
    if platforms.len() > 1 {
        opts.platforms = platforms;
    }
    opts.user = user.map(pare::plan::parse_user_flag).transpose()?;
    opts.dry_run = dry_run;
    Ok(opts)
}

/// Options of `batch` and `serve`: what every image they harden gets.
pub(super) fn many_options(
    m: &ManyFlags,
    dry_run: bool,
    config: Option<&Path>,
) -> anyhow::Result<HardenOptions> {
    let mut opts = harden_options(&m.source, &m.trace, m.user.as_deref(), dry_run, config)?;
    opts.no_sbom = m.no_sbom;
    opts.sign_key = signing_key(&m.sign)?;
    output_options(&m.output, &mut opts)?;
    Ok(opts)
}

/// `pare.toml` (or `--config FILE`) with the flags on top.
pub(super) fn check_config(p: &PolicyFlags) -> anyhow::Result<CheckConfig> {
    let mut cfg = match &p.config {
        Some(f) => {
            let dir = tempfile::tempdir()?;
            std::fs::copy(f, dir.path().join("pare.toml"))
                .with_context(|| format!("reading {}", f.display()))?;
            CheckConfig::load(dir.path())?
                .map(|(c, _)| c)
                .unwrap_or_default()
        }
        None => CheckConfig::load(&std::env::current_dir()?)?
            .map(|(c, _)| c)
            .unwrap_or_default(),
    };
    cfg.allow.extend(p.allow.iter().cloned());
    cfg.strict |= p.strict;
    if let Some(s) = &p.fail_on {
        cfg.fail_on = Some(s.parse::<Severity>()?);
    }
    cfg.validate().map_err(pare::Error::Usage)?;
    Ok(cfg)
}

//! `pare keygen` and `pare signature verify`.

use std::path::PathBuf;

use anyhow::Context as _;

use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) fn keygen(a: KeygenArgs) -> anyhow::Result<Outcome> {
    let pass = passphrase(a.passphrase_file.as_deref(), "pare keygen")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (key_path, pub_path) = (
        PathBuf::from(format!("{}.key", a.prefix.display())),
        PathBuf::from(format!("{}.pub", a.prefix.display())),
    );
    for p in [&key_path, &pub_path] {
        if p.exists() {
            anyhow::bail!("{} exists: not overwritten", p.display());
        }
    }
    let key = pare::sign::PrivateKey::generate();
    let encrypted = key.to_encrypted_pem(&pass)?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("{}", key_path.display()))?;
    f.write_all(encrypted.as_bytes())
        .with_context(|| format!("{}", key_path.display()))?;
    std::fs::write(&pub_path, key.public().to_pem()?)
        .with_context(|| format!("{}", pub_path.display()))?;
    eprintln!(
        "wrote {} (private, encrypted) and {} (public)",
        key_path.display(),
        pub_path.display()
    );
    Ok(Outcome::Ok)
}

pub(super) async fn verify(a: SignatureVerifyArgs) -> anyhow::Result<Outcome> {
    let src: ImageRef = a.image.parse()?;
    let Some(r) = src.as_registry() else {
        anyhow::bail!(
            "{src} is not in a registry: cosign signatures live beside the image in its repository"
        );
    };
    let keys = public_keys(&a.keys)?;
    let opts = source_options(&a.source)?;
    let client = pare::transport::source::connect(&r.registry, &opts)?;
    let (bytes, digest) = client.get_manifest(r).await?;
    let v = match pare::sign::verify(&client, r, &digest, &keys).await {
        Ok(v) => v,
        // --platform on an index: that platform's own signature counts too.
        Err(e) => match (
            &opts.platform,
            pare::image::parse_manifest(&bytes, None, &a.image),
        ) {
            (Some(want), Ok(pare::image::ManifestDoc::Index(idx))) => {
                let d = pare::image::select_platform(&idx, want)?;
                pare::sign::verify(&client, r, &d.digest, &keys)
                    .await
                    .map_err(|_| e)?
            }
            _ => return Err(e.into()),
        },
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        _ => println!(
            "{}@{}: signed by {} ({}, identity {})",
            clean(&src.to_string(), false),
            v.digest,
            a.keys[v.key].display(),
            v.found_in,
            clean(&v.identity, false)
        ),
    }
    Ok(Outcome::Ok)
}

//! Whether DEST already holds what this harden would write (only manifests are read).

use super::*;
use crate::error::Result;
use crate::reference::ImageRef;
use crate::transport::sink::Sink;
use crate::transport::source::{self};

/// The source digest, the recipe (pare's version and options) and the manifest digest a
/// hardened registry tag records, when the tag exists and records them.
/// Whether `dest` already holds what hardening `src` with `opts` would write; only manifests
/// are read (no layer).
pub(super) async fn up_to_date(
    src: &ImageRef,
    dest: &ImageRef,
    sink: &dyn Sink,
    opts: &HardenOptions,
) -> Result<Option<UpToDate>> {
    let Some(source_digest) = source::current_digest(src, &opts.source).await? else {
        return Ok(None);
    };
    let recipe = opts.recipe();
    let Some((from, Some(r), digest)) = sink.recorded().await else {
        return Ok(None);
    };
    if from != source_digest || r != recipe {
        return Ok(None);
    }
    // Nothing is pulled, but the source must still carry a valid signature; when only a
    // platform's manifest is signed, the full run decides (and says why it fails).
    if !source::still_signed(src, &opts.source, &source_digest).await? {
        return Ok(None);
    }
    // The result is there; make sure it is signed (signing again adds nothing).
    sink.ensure_signed(&digest).await?;
    Ok(Some(UpToDate {
        source: src.to_string(),
        source_digest,
        destination: dest.to_string(),
        digest,
        recipe,
    }))
}

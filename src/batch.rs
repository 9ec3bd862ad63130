//! `pare batch HOST/NAMESPACE`: harden every repository and tag under a namespace; skip what
//! is already hardened from the same source digest; `--shard I/N` for many machines.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::harden::{self, HardenOptions};
use crate::progress::Progress;
use crate::reference::{ImageRef, RegistryRef, default_destination, is_output_tag};
use crate::transport::registry::RegistryClient;
use crate::transport::source;

#[derive(Clone, Default)]
pub struct BatchOptions {
    pub harden: HardenOptions,
    /// Images at once (default: the number of cores).
    pub jobs: usize,
    /// Globs on `repo:tag` (the repository path as the registry names it).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// This process takes the items whose stable hash of `repo:tag` is `I` modulo `N`.
    pub shard: Option<(u64, u64)>,
    /// Re-harden even when the hardened tag records the same source digest.
    pub force: bool,
    /// Repositories listed in a file (one per line), for registries without a catalog.
    pub repos_from: Option<PathBuf>,
    /// Catalog and tag-list page size.
    pub page_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchItem {
    pub repository: String,
    pub tag: String,
    pub source: String,
    pub destination: String,
    /// `hardened`, `skipped` (already hardened from this source digest), `failed`, or
    /// `planned` (with `--dry-run`).
    pub status: String,
    pub source_digest: Option<String>,
    pub destination_digest: Option<String>,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
    pub error: Option<String>,
    /// Why it was hardened again (an older pare or other options made the existing result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    pub target: String,
    pub shard: Option<String>,
    pub items: Vec<BatchItem>,
    pub hardened: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Uncompressed bytes saved by the images hardened in this run.
    pub bytes_saved: u64,
    /// Layer pulls answered by a layer this run had already downloaded (shared base layers).
    pub layers_reused: u64,
    /// Layer merges answered by a parse this run had already made (not inflated again).
    pub parses_reused: u64,
    /// Layers not inflated to read files for tracing, every wanted file being already copied.
    pub reads_avoided: u64,
    /// Blobs mounted from another repository instead of uploaded.
    pub blobs_mounted: u64,
    /// Objects whose ELF facts (needed libraries, imports, strings) were parsed by an earlier
    /// image from the same layer's bytes.
    pub elf_facts_reused: u64,
    /// Result layers written once and reused by later images (the kept share of a base).
    pub layers_written_once: u64,
    pub seconds: f64,
}

/// `I/N`, or `auto` from a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with the count in
/// `JOB_COMPLETIONS`).
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let (i, n) = if s == "auto" {
        let i = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
            Error::Usage(
                "--shard auto needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it)".into(),
            )
        })?;
        let n = std::env::var("JOB_COMPLETIONS").map_err(|_| {
            Error::Usage(
                "--shard auto needs JOB_COMPLETIONS (set it to the Job's completions)".into(),
            )
        })?;
        (i, n)
    } else {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| Error::Usage(format!("--shard {s:?}: expected I/N or auto")))?;
        (i.to_string(), n.to_string())
    };
    let bad = || Error::Usage(format!("--shard {s:?}: expected I/N with 0 <= I < N"));
    let i: u64 = i.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Which shard `repo:tag` belongs to: a stable hash, the same on every machine and run.
pub fn shard_of(repo: &str, tag: &str, n: u64) -> u64 {
    let h = Sha256::digest(format!("{repo}:{tag}").as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % n
}

/// Globs as one set; a bad one is a usage error naming `what` (`--include`, `[serve] exclude`).
pub(crate) fn globs(pats: &[String], what: &str) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in pats {
        b.add(globset::Glob::new(p).map_err(|e| Error::Usage(format!("{what} {p:?}: {e}")))?);
    }
    b.build().map_err(|e| Error::Usage(e.to_string()))
}

/// Run the batch over `HOST[/NAMESPACE]`.
pub async fn batch(target: &str, opts: &BatchOptions, progress: &Progress) -> Result<BatchReport> {
    let started = std::time::Instant::now();
    let target = target
        .strip_prefix("docker://")
        .unwrap_or(target)
        .trim_end_matches('/');
    let (host, namespace) = match target.split_once('/') {
        Some((h, ns)) => (h.to_string(), ns.to_string()),
        None => (target.to_string(), String::new()),
    };
    if host.is_empty() || namespace.contains(':') || namespace.contains('@') {
        return Err(Error::Usage(format!(
            "batch target {target:?}: expected HOST[:PORT][/NAMESPACE]"
        )));
    }
    // One client per registry for the whole batch (connections, tokens, the `/v2/` answer).
    let mut opts = opts.clone();
    if opts.harden.source.clients.is_none() {
        opts.harden.source.clients = Some(Arc::default());
    }
    let client = Arc::new(source::connect(&host, &opts.harden.source)?);
    let page = opts.page_size.max(1);
    // Base layers shared by the images are downloaded and verified once.
    if opts.harden.source.blobs.is_none() {
        opts.harden.source.blobs = Some(Arc::new(source::BlobCache::new()?));
    }
    // A result layer made from a shared base layer is written once.
    if opts.harden.made.is_none() {
        opts.harden.made = Some(Arc::new(crate::layer::Made::new()?));
    }
    // Blobs pushed to one repository are mounted into the others, not uploaded again.
    if opts.harden.push_log.is_none() {
        opts.harden.push_log = Some(Arc::new(crate::transport::registry::PushLog::default()));
    }
    let opts = &opts;
    let (work, unlisted) = select(&client, &host, &namespace, opts, page).await?;
    progress.note(&format!("{} images under {target}", work.len()));
    for u in &unlisted {
        progress.note(&format!(
            "failed    {}: cannot list its tags: {}",
            u.repository,
            u.error.as_deref().unwrap_or_default()
        ));
    }
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.jobs
    };
    let saved = Arc::new(AtomicU64::new(0));
    let overall = progress.task("batch", target, work.len() as u64);
    let results: Vec<BatchItem> =
        futures_util::stream::iter(work.into_iter().map(|(repo, tag, dest_listed)| {
            let (client, saved, overall, host) =
                (client.clone(), saved.clone(), overall.clone(), host.clone());
            async move {
                let src = RegistryRef {
                    registry: host.clone(),
                    repository: repo.clone(),
                    tag: Some(tag.clone()),
                    digest: None,
                };
                let item = one(&client, &src, dest_listed, opts).await;
                if let (Some(b), Some(a)) = (item.size_before, item.size_after)
                    && item.status == "hardened"
                {
                    saved.fetch_add(b.saturating_sub(a), Ordering::Relaxed);
                }
                overall.inc(1);
                overall.set_label(&format!(
                    "batch: {} saved",
                    crate::progress::human_bytes(saved.load(Ordering::Relaxed))
                ));
                progress.note(&format!(
                    "{:<9} {}:{}{}",
                    item.status,
                    repo,
                    tag,
                    item.error
                        .as_deref()
                        .map(|e| format!("  {e}"))
                        .unwrap_or_default()
                ));
                item
            }
        }))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    overall.finish();
    let mut items = results;
    items.extend(unlisted);
    items.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    let count = |s: &str| items.iter().filter(|i| i.status == s).count();
    let cache = opts.harden.source.blobs.as_deref();
    Ok(BatchReport {
        target: target.to_string(),
        shard: opts.shard.map(|(i, n)| format!("{i}/{n}")),
        hardened: count("hardened"),
        skipped: count("skipped"),
        failed: count("failed"),
        bytes_saved: saved.load(Ordering::Relaxed),
        blobs_mounted: opts
            .harden
            .push_log
            .as_ref()
            .map_or(0, |l| l.mounted.load(Ordering::Relaxed)),
        layers_reused: cache.map_or(0, |b| b.hits.load(Ordering::Relaxed)),
        parses_reused: cache.map_or(0, |b| b.layers.parse_hits.load(Ordering::Relaxed)),
        reads_avoided: cache.map_or(0, |b| b.layers.read_hits.load(Ordering::Relaxed)),
        elf_facts_reused: cache.map_or(0, |b| b.layers.facts_hits.load(Ordering::Relaxed)),
        layers_written_once: (opts.harden.made.as_ref())
            .map_or(0, |m| m.hits.load(Ordering::Relaxed)),
        seconds: started.elapsed().as_secs_f64(),
        items,
    })
}

/// The images of the batch: each repository under the namespace (or in `--repos-from`), its
/// tags, less hardened outputs, filtered by `--include`/`--exclude` and this shard; and a
/// failed item per repository whose tags cannot be listed.
async fn select(
    client: &Arc<RegistryClient>,
    host: &str,
    namespace: &str,
    opts: &BatchOptions,
    page: usize,
) -> Result<(Vec<Work>, Vec<BatchItem>)> {
    let prefix = if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}/")
    };
    let repos: Vec<String> = match &opts.repos_from {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| Error::io(f, e))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.trim_start_matches(&format!("{host}/")).to_string())
            .filter(|r| r.starts_with(&prefix) || r == namespace)
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect(),
        None => client.catalog_all(&prefix, page).await?,
    };
    let include = globs(&opts.include, "--include")?;
    // The repository part of each --include (before its last `:`), to tell whether a
    // repository whose tags cannot be listed could have had included tags.
    let include_repos = globs(
        &opts
            .include
            .iter()
            .map(|p| {
                p.rsplit_once(':')
                    .map_or(p.as_str(), |(r, _)| r)
                    .to_string()
            })
            .collect::<Vec<_>>(),
        "--include",
    )?;
    let exclude = globs(&opts.exclude, "--exclude")?;
    // Tag lists, a few repositories at a time. A repository whose tags cannot be listed is a
    // failed item, not the end of the batch.
    let listed: Vec<(String, Result<Vec<String>>)> =
        futures_util::stream::iter(repos.iter().map(|repo| {
            let client = client.clone();
            async move { (repo.clone(), client.tags_all(repo, page).await) }
        }))
        .buffered(8)
        .collect()
        .await;
    let mut work = Vec::new();
    let mut unlisted = Vec::new();
    for (repo, tags) in listed {
        let tags = match tags {
            Ok(t) => t,
            Err(e) => {
                // Every shard lists every repository (tags spread across shards), so every
                // shard reports the failure: each lost its share. Unless the filters rule the
                // whole repository out.
                if exclude.is_match(format!("{repo}:*"))
                    || (!opts.include.is_empty() && !include_repos.is_match(&repo))
                {
                    continue;
                }
                unlisted.push(BatchItem {
                    repository: repo.clone(),
                    tag: "*".into(),
                    source: format!("{host}/{repo}"),
                    destination: String::new(),
                    status: "failed".into(),
                    source_digest: None,
                    destination_digest: None,
                    size_before: None,
                    size_after: None,
                    error: Some(e.to_string()),
                    note: None,
                });
                continue;
            }
        };
        let all: std::collections::HashSet<&str> = tags.iter().map(String::as_str).collect();
        for tag in &tags {
            if is_output_tag(tag) {
                continue;
            }
            let key = format!("{repo}:{tag}");
            if (!opts.include.is_empty() && !include.is_match(&key)) || exclude.is_match(&key) {
                continue;
            }
            if let Some((i, n)) = opts.shard
                && shard_of(&repo, tag, n) != i
            {
                continue;
            }
            let dest_listed = crate::reference::hardened_tag(Some(tag), None)
                .is_ok_and(|t| all.contains(t.as_str()));
            work.push((repo.clone(), tag.clone(), dest_listed));
        }
    }
    Ok((work, unlisted))
}

/// A tag to harden: repository, tag, and whether its hardened tag was listed beside it.
type Work = (String, String, bool);

/// One image: skip when its hardened tag records this source digest, else harden it. A
/// hardened tag not listed beside the source (`dest_listed` false) is not asked for.
async fn one(
    client: &RegistryClient,
    src: &RegistryRef,
    dest_listed: bool,
    opts: &BatchOptions,
) -> BatchItem {
    let src_ref: ImageRef = src.clone().into();
    let dest = default_destination(&src_ref).ok();
    let mut item = BatchItem {
        repository: src.repository.clone(),
        tag: src.tag.clone().unwrap_or_default(),
        source: src.to_string(),
        destination: dest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        status: "failed".into(),
        source_digest: None,
        destination_digest: None,
        size_before: None,
        size_after: None,
        error: None,
        note: None,
    };
    let Some(dest_ref) = dest.as_ref().and_then(|d| d.as_registry()).cloned() else {
        item.error = Some("no valid destination tag".into());
        return item;
    };
    let digest = match client.get_manifest(src).await {
        Ok((_, d)) => d,
        Err(e) => {
            item.error = Some(e.to_string());
            return item;
        }
    };
    item.source_digest = Some(digest.clone());
    if !opts.force
        && dest_listed
        && let Some((recorded, recipe, dest_digest)) =
            crate::transport::sink::recorded_at(client, &dest_ref).await
        && recorded == digest
    {
        // Skipped only when the same pare with the same options made it: a newer pare, or
        // other options, would write something else.
        let now = opts.harden.recipe();
        if recipe.as_deref() == Some(now.as_str()) {
            // Still: the source must be signed (when only its platform manifests are, the
            // full run below decides), and the result signed when asked.
            let keys = &opts.harden.source.verify_keys;
            let signed = keys.is_empty()
                || crate::sign::verify(client, src, &digest, keys)
                    .await
                    .is_ok();
            if signed {
                if let Some(key) = &opts.harden.sign_key
                    && let Err(e) =
                        crate::transport::sink::sign_existing(client, &dest_ref, &dest_digest, key)
                            .await
                {
                    item.error = Some(e.to_string());
                    return item;
                }
                item.status = "skipped".into();
                return item;
            }
        } else {
            item.note = Some(format!(
                "re-hardened: it was made by {}",
                recipe.unwrap_or_else(|| "a pare that did not record its version".into())
            ));
        }
    }
    if opts.harden.dry_run {
        item.status = "planned".into();
        return item;
    }
    // Pin the digest just resolved, so a tag moving mid-batch cannot mix two images.
    let pinned: ImageRef = RegistryRef {
        digest: Some(digest),
        ..src.clone()
    }
    .into();
    // The batch decided above whether the tag is current: harden does not ask again.
    let hopts = harden::HardenOptions {
        force: true,
        ..opts.harden.clone()
    };
    match harden::harden(&pinned, dest.as_ref(), &hopts, &Progress::silent()).await {
        Ok(done) => {
            item.status = "hardened".into();
            item.destination_digest = Some(match &done.index {
                Some(i) => i.digest.clone(),
                None => done
                    .images
                    .first()
                    .map(|r| r.destination.digest.clone())
                    .unwrap_or_default(),
            });
            item.size_before = Some(
                done.images
                    .iter()
                    .map(|r| r.sizes.before.uncompressed)
                    .sum(),
            );
            item.size_after = Some(done.images.iter().map(|r| r.sizes.after.uncompressed).sum());
        }
        Err(e) => item.error = Some(e.to_string()),
    }
    item
}

impl BatchReport {
    /// The summary table.
    pub fn table(&self) -> String {
        let mut o = format!(
            "{:<9} {:<50} {:>12} {:>12}\n",
            "STATUS", "IMAGE", "BEFORE", "AFTER"
        );
        for i in &self.items {
            o.push_str(&format!(
                "{:<9} {:<50} {:>12} {:>12}{}\n",
                i.status,
                format!("{}:{}", i.repository, i.tag),
                i.size_before
                    .map(crate::progress::human_bytes)
                    .unwrap_or_default(),
                i.size_after
                    .map(crate::progress::human_bytes)
                    .unwrap_or_default(),
                i.error
                    .as_deref()
                    .or(i.note.as_deref())
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            ));
        }
        o.push_str(&format!(
            "{} hardened, {} skipped, {} failed; {} saved; shared layers: {} downloads, {} parses, {} reads, {} ELF parses, {} writes avoided; {} blobs mounted; {:.1}s{}\n",
            self.hardened,
            self.skipped,
            self.failed,
            crate::progress::human_bytes(self.bytes_saved),
            self.layers_reused,
            self.parses_reused,
            self.reads_avoided,
            self.elf_facts_reused,
            self.layers_written_once,
            self.blobs_mounted,
            self.seconds,
            self.shard
                .as_deref()
                .map(|s| format!(" (shard {s})"))
                .unwrap_or_default()
        ));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hardened_tag_is_the_default_destination_s() {
        use crate::reference::hardened_tag;
        assert_eq!(hardened_tag(Some("1.4"), None).unwrap(), "1.4-hardened");
        assert!(is_output_tag(&hardened_tag(Some("latest"), None).unwrap()));
    }

    #[test]
    fn shards_partition_and_parse() {
        let keys: Vec<(String, String)> = (0..300)
            .map(|i| (format!("ns/r{}", i % 17), format!("t{i}")))
            .collect();
        let mut seen = vec![0; 3];
        for (r, t) in &keys {
            let s = shard_of(r, t, 3);
            assert_eq!(s, shard_of(r, t, 3), "stable");
            seen[s as usize] += 1;
        }
        assert_eq!(seen.iter().sum::<usize>(), 300);
        assert!(seen.iter().all(|&n| n > 60), "roughly even: {seen:?}");
        assert_eq!(parse_shard("1/3").unwrap(), (1, 3));
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("x").is_err());
        assert!(
            is_output_tag("1.4-hardened")
                && is_output_tag("hardened-0123456789ab")
                && !is_output_tag("1.4")
                && is_output_tag(&format!("sha256-{}", "a".repeat(64)))
                && is_output_tag(&format!("sha256-{}.sig", "0".repeat(64)))
                && !is_output_tag("sha256-abc")
        );
    }
}

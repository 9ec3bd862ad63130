//! The `pare` command line: parses arguments, calls the library, prints.
//!
//! Exit codes: see [`EXIT_CODES`] (printed by `pare --help`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use pare::harden::{self, HardenOptions};
use pare::image::Platform;
use pare::policy::{CheckConfig, Severity};
use pare::progress::Progress;
use pare::reference::ImageRef;
use pare::transport::source::SourceOptions;

/// Every command's exit codes, one table (`pare --help`, the man page, the README).
const EXIT_CODES: &str = "\
Exit codes:
  harden, trace, inspect, keygen, completions, man
      0 success; 1 any failure (one line on stderr), including a source without a valid
      signature (--verify-key), a result that fails --check, or a probe that differs (--probe)
  check
      0 the image passes; 1 policy violations or no valid signature; 2 could not check
  batch
      0 every image hardened or skipped; 1 any image failed, or the batch could not run
  probe
      0 every probe passes; 1 a probe fails or differs; 2 the probes could not run
  signature verify
      0 a valid signature by one of the keys; 1 none (or it could not be checked)

Environment: PARE_CREDS, PARE_DEST_CREDS (credentials), PARE_PASSWORD (passphrase of a key),
PARE_THREADS, NO_COLOR (no ANSI colours in logs), REGISTRY_AUTH_FILE, DOCKER_CONFIG.";

#[derive(Parser)]
#[command(
    name = "pare",
    version,
    about = "Make container images safe to run: keep only what the entrypoint needs, clear setuid/setgid, run as non-root.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// More logging on stderr (never secrets).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Seconds a registry request may go without progress before it counts as a transient
    /// fault (retried, 5 tries in all).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull SRC, keep only its entrypoint's closure, harden it, and write DEST
    /// (default: the same repository, tag TAG-hardened).
    #[command(after_help = "\
Examples:
  pare harden registry.example.com/team/api:1.4              # → team/api:1.4-hardened
  pare harden team/api:1.4 team/api:1.4-min --check --probe '--version'
  pare harden oci:./layout:app oci:./layout:app-hardened     # no registry
  pare harden team/api:1.4 --verify-key vendor.pub --sign-key release.key
  pare harden team/api:1.4 --learn-http 8080/healthz --report report.json")]
    Harden(HardenArgs),
    /// Print the entrypoint's dependency tree (like lddtree), writing nothing.
    #[command(after_help = "\
Examples:
  pare trace registry.example.com/team/api:1.4
  pare trace team/api:1.4 --why /etc/ssl/certs/ca-certificates.crt
  pare trace oci:./layout:app --json > trace.json")]
    Trace(TraceArgs),
    /// Fail (exit 1) when an image breaks the hardening checklist: root user, setuid/setgid
    /// files, shells, network tools, package managers, world-writable paths, wasted space.
    #[command(after_help = "\
Examples:
  pare check registry.example.com/team/api:1.4-hardened
  pare check team/api:1.4 --format sarif -o pare.sarif --fail-on high
  pare check team/api:1.4 --verify-key release.pub")]
    Check(CheckArgs),
    /// Per-layer analysis: sizes, files added/changed/removed, wasted bytes, efficiency.
    #[command(after_help = "\
Examples:
  pare inspect registry.example.com/team/api:1.4
  pare inspect docker-archive:./api.tar --format json --tree")]
    Inspect(InspectArgs),
    /// Harden every repository and tag under HOST/NAMESPACE; skip what is already hardened
    /// from the same source digest. Exit 1 when any image failed.
    #[command(after_help = "\
Examples:
  pare batch registry.example.com/payments --report batch.json
  pare batch registry.example.com/payments --include 'api:*' --exclude '*:*-rc*'
  pare batch registry.example.com/payments --shard $JOB_COMPLETION_INDEX/8   # Indexed Job")]
    Batch(BatchArgs),
    /// Prove an image works: run its entrypoint with each probe's arguments in a rootless
    /// sandbox (namespaces, no daemon); with --against, compare with the original. Exit 0 every
    /// probe passes, 1 a probe fails or differs, 2 the probes could not run.
    #[command(after_help = "\
Examples:
  pare probe team/api:1.4-hardened --probe '--version'
  pare probe team/api:1.4-hardened --against team/api:1.4 --http-probe 8080/healthz
  pare probe team/jq:1-hardened --against team/jq:1 --learn -- -n '1+1'")]
    Probe(ProbeArgs),
    /// Write a key pair in cosign's formats: PREFIX.key (ECDSA P-256, encrypted with the
    /// passphrase) and PREFIX.pub, for --sign-key and --verify-key (and cosign itself).
    #[command(after_help = "\
Examples:
  PARE_PASSWORD=… pare keygen release              # release.key, release.pub
  pare keygen ci/signing --passphrase-file /run/secrets/pass")]
    Keygen(KeygenArgs),
    /// Signatures: `pare signature verify IMAGE --key KEY.pub` checks an image's cosign
    /// signature without pulling it (exit 0 valid, 1 not).
    #[command(subcommand)]
    Signature(SignatureCommand),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    #[command(after_help = "\
Examples:
  pare completions bash > /etc/bash_completion.d/pare
  pare completions zsh > \"${fpath[1]}/_pare\"
  pare completions fish > ~/.config/fish/completions/pare.fish")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page pare(1), or write it and one page per subcommand into DIR.
    #[command(after_help = "\
Examples:
  pare man | man -l -
  pare man --dir /usr/local/share/man/man1")]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct KeygenArgs {
    /// Writes PREFIX.key and PREFIX.pub (never over existing files).
    prefix: PathBuf,
    /// The passphrase, read from this file (default: $PARE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SignatureCommand {
    /// Check that IMAGE carries a valid cosign signature by one of the keys, whose payload
    /// names its digest and repository (tag scheme and referrers). Exit 0 valid, 1 not.
    #[command(after_help = "\
Examples:
  pare signature verify registry.example.com/team/api:1.4-hardened --key release.pub
  pare signature verify team/api@sha256:… --key a.pub --key b.pub --format json
  pare signature verify team/api:1.4 --platform linux/arm64 --key release.pub")]
    Verify(SignatureVerifyArgs),
}

#[derive(Args)]
struct SignatureVerifyArgs {
    /// HOST[:PORT]/REPO[:TAG][@sha256:…]
    image: String,
    /// Public key (PEM; ECDSA P-256, Ed25519 or RSA). Repeatable: any one may match.
    #[arg(long = "key", value_name = "KEY.pub", required = true)]
    keys: Vec<PathBuf>,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args)]
struct ProbeArgs {
    /// Image to run (any transport pare reads).
    image: String,
    /// The original to run the same probes in: a probe passes when exit code, stdout and stderr
    /// are the same in both.
    #[arg(long, value_name = "ORIGINAL")]
    against: Option<String>,
    /// Arguments given to the entrypoint as Cmd, split like a shell would (repeatable; none:
    /// the image's own Cmd).
    #[arg(long = "probe", value_name = "ARGS", allow_hyphen_values = true)]
    probes: Vec<String>,
    /// Record the files each probe's program uses (ptrace, in the sandbox): with --against,
    /// in the original, listing those this image lacks (what static analysis missed).
    #[arg(long)]
    learn: bool,
    /// With --learn: also record every system call the programs make, and write them as a
    /// seccomp profile (OCI/Docker JSON, any other call EPERM) to FILE.
    #[arg(long, value_name = "FILE", requires = "learn")]
    seccomp_profile: Option<PathBuf>,
    /// Run each probe's program under this seccomp profile (OCI/Docker JSON, e.g. one
    /// --seccomp-profile wrote) on top of the sandbox's default filter.
    #[arg(long, value_name = "FILE")]
    seccomp: Option<PathBuf>,
    /// Without --against: stdout must also match this regular expression.
    #[arg(long, value_name = "REGEX")]
    expect: Option<String>,
    /// Seconds a probe may run before it is killed (and fails).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    probe_timeout: u64,
    /// Start the entrypoint (with the image's Cmd) as a server, wait for PORT on the sandbox's
    /// loopback, GET PATH and compare status and body (repeatable).
    #[arg(long = "http-probe", value_name = "PORT/PATH")]
    http_probes: Vec<String>,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    source: SourceArgs,
    /// One probe's arguments, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Args)]
struct BatchArgs {
    /// HOST[:PORT][/NAMESPACE]: the repositories whose names start with NAMESPACE/.
    target: String,
    /// Images at once (default: the number of cores).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Only `repo:tag` matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out `repo:tag` matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Take a deterministic 1/N of the work: I/N, or `auto` (JOB_COMPLETION_INDEX of a
    /// Kubernetes Indexed Job, with JOB_COMPLETIONS).
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<String>,
    /// Re-harden tags whose hardened tag already records the same source digest.
    #[arg(long)]
    force: bool,
    /// Repositories from this file, one per line (registries without a catalog, like Docker Hub).
    #[arg(long, value_name = "FILE")]
    repos_from: Option<PathBuf>,
    /// Catalog and tag-list page size.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
    /// List what would be hardened or skipped; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON report: per image source and destination digests, status, sizes, error.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Run as UID[:GID] (never 0) instead of each image's non-root user or 65532.
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Make no SBOM and push no referrer for the hardened images.
    #[arg(long)]
    no_sbom: bool,
    #[command(flatten)]
    sign: SignFlags,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    trace: TraceFlags,
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// Platform of a multi-platform image, as OS/ARCH[/VARIANT]. `harden` hardens every
    /// platform of an index by default, and the ones named when this is repeated; other
    /// commands read linux/amd64 by default. Named once, it is also checked against a
    /// single-platform image.
    #[arg(long)]
    platform: Vec<String>,
    /// Credentials USER:PASSWORD for the source registry, and for DEST when it is on the same
    /// registry (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(long, env = "PARE_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// Speak plain HTTP to this registry (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Refuse the image unless it carries a valid cosign signature by this public key (PEM, as
    /// `cosign generate-key-pair` or `pare keygen` writes: ECDSA P-256, Ed25519 or RSA),
    /// checked before any layer is pulled. Repeatable: any one may match. Default: the keys
    /// of the [signatures] table of pare.toml.
    #[arg(long = "verify-key", value_name = "KEY.pub")]
    verify_key: Vec<PathBuf>,
}

#[derive(Args, Clone)]
struct TraceFlags {
    /// Also keep these paths (file, directory or glob); ELF files among them are traced too. Repeatable.
    #[arg(long, value_name = "PATH")]
    keep: Vec<String>,
    /// Proceed when a needed library is not in the image.
    #[arg(long)]
    allow_missing: bool,
    /// Keep a language runtime's whole standard library (minus test suites, GUI toolkits and
    /// bundled installers) instead of what the application imports.
    #[arg(long)]
    runtime_full: bool,
    /// Do not follow the image's package database (the configuration and data of the
    /// packages owning the programs, and of their dependencies). Package metadata for what
    /// is kept is still written.
    #[arg(long)]
    no_packages: bool,
}

#[derive(Args, Clone)]
struct PolicyFlags {
    /// Do not evaluate this rule (repeatable): root-user, setuid-setgid, shell, network-tool,
    /// package-manager, world-writable, wasted-space.
    #[arg(long, value_name = "RULE")]
    allow: Vec<String>,
    /// Lowest severity that fails the check: low (default), medium or high.
    #[arg(long, value_name = "SEVERITY")]
    fail_on: Option<String>,
    /// Read the [check] table from this file instead of ./pare.toml or ./.pare.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Count a shell, network tool or package manager the entrypoint needs as a violation
    /// too (by default it is a note).
    #[arg(long)]
    strict: bool,
}

#[derive(Args, Clone)]
struct SignFlags {
    /// Sign what is pushed with this private key (cosign's encrypted format, as `cosign
    /// generate-key-pair` or `pare keygen` writes): the signature goes under
    /// `sha256-<hex>.sig` as `cosign sign --key` puts it (no transparency log), each platform
    /// and the index of a multi-platform result, and the SBOM as a signed SPDX attestation
    /// (`sha256-<hex>.att`). The tag is pushed after its signature.
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// The key's passphrase, read from this file (default: $PARE_PASSWORD; never a flag value).
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    sign_passphrase_file: Option<PathBuf>,
}

/// The passphrase of an encrypted key: FILE (its first line), else $PARE_PASSWORD.
fn passphrase(file: Option<&Path>, what: &str) -> anyhow::Result<Vec<u8>> {
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

/// The signing key of `--sign-key`, decrypted.
fn signing_key(f: &SignFlags) -> anyhow::Result<Option<std::sync::Arc<pare::sign::PrivateKey>>> {
    let Some(path) = &f.sign_key else {
        return Ok(None);
    };
    let text = pare::sign::keys::read_key_file(path)?;
    let pass = passphrase(f.sign_passphrase_file.as_deref(), "--sign-key")?;
    let key = pare::sign::PrivateKey::from_encrypted_pem(&text, &pass)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(std::sync::Arc::new(key)))
}

#[derive(Args)]
struct HardenArgs {
    /// Source image: HOST[:PORT]/REPO[:TAG][@sha256:…], docker://…, oci:DIR[:TAG] or docker-archive:FILE[:REF].
    src: String,
    /// Destination (default: SRC's repository with tag TAG-hardened).
    dest: Option<String>,
    /// Run as UID[:GID] (never 0) instead of the image's non-root user or 65532.
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Trace and report, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write the JSON report here ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Credentials USER:PASSWORD for DEST when it is on another registry than SRC.
    #[arg(long, env = "PARE_DEST_CREDS", hide_env_values = true)]
    dest_creds: Option<String>,
    /// Run `pare check` on the result before writing it, and refuse to write one that fails.
    #[arg(long)]
    check: bool,
    /// Print the Kubernetes securityContext that fits the hardened image (YAML, on stdout).
    #[arg(long)]
    print_security_context: bool,
    /// Also write the SPDX 2.3 JSON SBOM of the hardened image here (it is pushed next to the
    /// image as an OCI referrer either way).
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// Make no SBOM and push no referrer.
    #[arg(long, conflicts_with = "sbom")]
    no_sbom: bool,
    /// Allow DEST to be SRC itself (same registry tag, layout tag or archive file): replace the
    /// source. Its previous digest is printed, and a registry source stays reachable as
    /// TAG-original (an existing TAG-original is never overwritten).
    #[arg(long)]
    in_place: bool,
    /// Harden even when DEST already holds the result (hardened from the same source digest by
    /// this pare with the same options), which is otherwise reported and left as it is
    /// without pulling a layer.
    #[arg(long)]
    force: bool,
    /// Before writing, run the entrypoint with these arguments (split like a shell) in a
    /// sandbox of the result and of the source (as `pare probe --against`); a probe whose exit
    /// code or output differs writes nothing (exit 1). Repeatable.
    #[arg(long = "probe", value_name = "ARGS", allow_hyphen_values = true)]
    probes: Vec<String>,
    /// Seconds a probe may run before it is killed (and fails).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    probe_timeout: u64,
    /// Start the entrypoint (with the image's Cmd) as a server, wait for PORT on the sandbox's
    /// loopback, GET PATH and compare status and body (repeatable).
    #[arg(long = "http-probe", value_name = "PORT/PATH")]
    http_probes: Vec<String>,
    /// Before tracing, run the entrypoint with these arguments in a sandbox of the source,
    /// recording the files its programs use (ptrace); they are kept too (evidence
    /// `observed`), and the report lists those static analysis had missed. Repeatable.
    #[arg(long = "learn", value_name = "ARGS", allow_hyphen_values = true)]
    learn: Vec<String>,
    /// Like --learn, for a server: start the entrypoint (with the image's Cmd) in a sandbox of
    /// the source while recording, GET PATH from PORT once it listens, then stop it; what it
    /// used to start and to answer is kept (repeatable).
    #[arg(long = "learn-http", value_name = "PORT/PATH")]
    learn_http: Vec<String>,
    /// Like --learn-http, for a server that does not speak HTTP (a key-value store, a
    /// database): start the entrypoint (with the image's Cmd) in a sandbox of the source while
    /// recording, wait until PORT listens, then stop it (repeatable).
    #[arg(long = "learn-tcp", value_name = "PORT")]
    learn_tcp: Vec<String>,
    /// With --learn/--learn-http: also record every system call their programs make and write
    /// them as a seccomp profile (OCI/Docker JSON, any other call EPERM) to FILE;
    /// --print-security-context then references it (seccompProfile: Localhost).
    #[arg(long, value_name = "FILE")]
    seccomp_profile: Option<PathBuf>,
    /// With --in-place: do not keep the source under TAG-original.
    #[arg(long, requires = "in_place")]
    no_backup: bool,
    #[command(flatten)]
    sign: SignFlags,
    #[command(flatten)]
    policy: PolicyFlags,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    trace: TraceFlags,
}

#[derive(Args)]
struct TraceArgs {
    /// Image to trace.
    src: String,
    /// Print the kept files and why, as JSON, instead of the tree.
    #[arg(long)]
    json: bool,
    /// Say why this path is kept (every reason), or why not.
    #[arg(long, value_name = "PATH")]
    why: Vec<String>,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    trace: TraceFlags,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Args)]
struct CheckArgs {
    /// Image to check (any transport pare reads).
    image: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the output here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyFlags,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args)]
struct InspectArgs {
    /// Image to inspect (any transport pare reads).
    image: String,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also print the merged filesystem as a tree with sizes.
    #[arg(long)]
    tree: bool,
    #[command(flatten)]
    source: SourceArgs,
}

/// Public keys from PEM files.
fn public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<pare::sign::PublicKey>> {
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
fn verify_keys(
    s: &SourceArgs,
    config: Option<&Path>,
) -> anyhow::Result<Vec<pare::sign::PublicKey>> {
    if !s.verify_key.is_empty() {
        return public_keys(&s.verify_key);
    }
    let paths = pare::policy::load_signature_keys(&std::env::current_dir()?, config)?;
    public_keys(&paths)
}

fn source_options(s: &SourceArgs) -> anyhow::Result<SourceOptions> {
    source_options_with(s, None)
}

fn source_options_with(s: &SourceArgs, config: Option<&Path>) -> anyhow::Result<SourceOptions> {
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
    })
}

fn options(s: &SourceArgs, t: &TraceFlags) -> anyhow::Result<HardenOptions> {
    Ok(HardenOptions {
        source: source_options(s)?,
        keep: t.keep.clone(),
        allow_missing: t.allow_missing,
        runtime_full: t.runtime_full,
        no_packages: t.no_packages,
        ..Default::default()
    })
}

/// Options of `harden` and `batch`: one `--platform` picks a single platform, several make
/// the multi-platform selection.
fn harden_options(
    s: &SourceArgs,
    t: &TraceFlags,
    user: Option<&str>,
    dry_run: bool,
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
    let mut opts = options(&source, t)?;
    if platforms.len() > 1 {
        opts.platforms = platforms;
    }
    opts.user = user.map(pare::plan::parse_user_flag).transpose()?;
    opts.dry_run = dry_run;
    Ok(opts)
}

/// `pare.toml` (or `--config FILE`) with the flags on top.
fn check_config(p: &PolicyFlags) -> anyhow::Result<CheckConfig> {
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

fn write_out(path: &Option<PathBuf>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
        }
        _ => {
            print!("{text}");
            Ok(())
        }
    }
}

/// What a command ends with.
enum Outcome {
    Ok,
    /// `pare check` found violations.
    Violations,
}

async fn run(cli: Cli, progress: Progress) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Harden(a) => {
            let src: ImageRef = a.src.parse()?;
            let dest: Option<ImageRef> = a.dest.as_deref().map(str::parse).transpose()?;
            let mut opts = harden_options(&a.source, &a.trace, a.user.as_deref(), a.dry_run)?;
            if a.policy.config.is_some() {
                opts.source.verify_keys = verify_keys(&a.source, a.policy.config.as_deref())?;
            }
            opts.sign_key = signing_key(&a.sign)?;
            opts.dest_creds = a
                .dest_creds
                .as_deref()
                .map(pare::transport::auth::parse_creds)
                .transpose()?;
            if a.check {
                opts.check = Some(check_config(&a.policy)?);
            }
            opts.sbom_file = a.sbom.clone();
            opts.no_sbom = a.no_sbom;
            opts.in_place = a.in_place;
            opts.no_backup = a.no_backup;
            opts.force = a.force;
            opts.probes = a
                .probes
                .iter()
                .map(|p| pare::probe::Probe::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            for h in &a.http_probes {
                opts.probes.push(pare::probe::Probe::http(h)?);
            }
            for l in &a.learn {
                let mut p = pare::probe::Probe::parse(l)?;
                p.learn = true;
                opts.learn.push(p);
            }
            for h in &a.learn_http {
                let mut p = pare::probe::Probe::http(h)?;
                p.learn = true;
                opts.learn.push(p);
            }
            for t in &a.learn_tcp {
                let mut p = pare::probe::Probe::tcp(t)?;
                p.learn = true;
                opts.learn.push(p);
            }
            if a.seccomp_profile.is_some() {
                if opts.learn.is_empty() {
                    anyhow::bail!(pare::Error::Usage(
                        "--seccomp-profile needs --learn, --learn-http or --learn-tcp: the profile is what their programs call".into()
                    ));
                }
                for p in &mut opts.learn {
                    p.syscalls = true;
                }
            }
            opts.probe_limits = pare::probe::Limits {
                seconds: a.probe_timeout.max(1),
                ..Default::default()
            };
            if opts.probes.is_empty()
                && let Some(cfg) = pare::policy::load_probe_config(
                    &std::env::current_dir()?,
                    a.policy.config.as_deref(),
                )?
            {
                opts.probes = cfg.probes()?;
                if let Some(t) = cfg.timeout {
                    opts.probe_limits.seconds = t.max(1);
                }
            }
            let done = harden::harden(&src, dest.as_ref(), &opts, &progress).await?;
            if let Some(u) = &done.up_to_date {
                eprintln!(
                    "{}",
                    clean(
                        &format!(
                            "{} is up to date ({}): hardened from {}@{} by this pare with the same options; nothing pulled (--force to redo)",
                            pare::report::short_ref(&u.destination),
                            pare::transport::registry::short_digest(&u.digest),
                            pare::report::short_ref(&u.source),
                            pare::transport::registry::short_digest(&u.source_digest),
                        ),
                        false
                    )
                );
            }
            if let Some(r) = &done.replaced {
                eprintln!(
                    "replaced the source (was {}{})",
                    r.digest,
                    r.backup
                        .as_ref()
                        .map(|b| format!("; still reachable as {b}"))
                        .unwrap_or_default()
                );
            }
            let multi = done.index.is_some();
            for r in &done.images {
                for w in &r.warnings {
                    let tag = if multi {
                        format!("{}: ", r.source.platform)
                    } else {
                        String::new()
                    };
                    eprintln!("warning: {tag}{}", clean(w, false));
                }
                for (p, why) in &r.withheld {
                    eprintln!("withheld: {}: {}", clean(p, false), clean(why, false));
                }
                for q in &r.open_questions {
                    eprintln!("open question: {}", clean(q, false));
                }
                if !r.open_questions.is_empty() {
                    eprintln!(
                        "{} open question(s) static analysis could not decide: settle them with `pare harden {} {}` (runs the image's own Cmd in a sandbox of the source and keeps what it uses)",
                        r.open_questions.len(),
                        clean(&r.source.reference, false),
                        clean(&r.learn, false)
                    );
                }
                if let Some(c) = &r.check {
                    eprint!("{}", clean(&c.text(), true));
                }
                if !r.observed_only.is_empty() {
                    let shown: Vec<&str> =
                        r.observed_only.iter().take(8).map(|s| s.as_str()).collect();
                    let more = r.observed_only.len().saturating_sub(shown.len());
                    eprintln!(
                        "learn: kept {} path(s) only a probe showed (static analysis missed them): {}{}",
                        r.observed_only.len(),
                        clean(&shown.join(", "), false),
                        if more > 0 {
                            format!(" and {more} more (see --report)")
                        } else {
                            String::new()
                        }
                    );
                }
            }
            if let Some(path) = &a.report {
                let json = match done.single() {
                    Some(r) => serde_json::to_string_pretty(r)?,
                    None => serde_json::to_string_pretty(&done)?,
                };
                write_out(&Some(path.clone()), &(json + "\n"))?;
            }
            if let (Some(path), Some(r)) = (&a.seccomp_profile, done.images.first()) {
                let names = r.syscalls.iter().cloned().collect();
                write_profile(path, &names)?;
            }
            if a.print_security_context
                && let Some(r) = done.images.first()
            {
                let mut sc = r.security_context.clone();
                sc.localhost_profile = a.seccomp_profile.as_ref().map(|p| {
                    format!(
                        "pare/{}",
                        p.file_name()
                            .map_or("profile.json".into(), |n| n.to_string_lossy())
                    )
                });
                print!("{}", sc.yaml());
            }
            for r in &done.images {
                eprintln!("{}", clean(&r.summary(), false));
            }
            if let Some(i) = &done.index {
                let plats: Vec<String> = done
                    .images
                    .iter()
                    .map(|r| r.source.platform.clone())
                    .collect();
                eprintln!(
                    "{}",
                    clean(
                        &format!(
                            "{} → {}  index of {} platforms ({}){}",
                            pare::report::short_ref(&i.source),
                            pare::report::short_ref(&i.destination),
                            plats.len(),
                            plats.join(", "),
                            if i.skipped.is_empty() {
                                String::new()
                            } else {
                                format!("; skipped: {}", i.skipped.join("; "))
                            }
                        ),
                        false
                    )
                );
            }
        }
        Command::Trace(a) => {
            let src: ImageRef = a.src.parse()?;
            let opts = options(&a.source, &a.trace)?;
            let analysis = harden::analyze(&src, &opts, &progress).await?;
            let t = &analysis.trace;
            if !a.why.is_empty() {
                for p in &a.why {
                    for line in t.why(&analysis.rootfs, p) {
                        println!("{}", clean(&line, false));
                    }
                }
            } else if a.json {
                println!("{}", serde_json::to_string_pretty(&pare::trace::json(t))?);
            } else {
                print!("{}", clean(&pare::trace::render_tree(t), true));
                print!("{}", clean(&pare::trace::render_kept(t), true));
            }
            for w in &analysis.trace.warnings {
                eprintln!("warning: {}", clean(w, false));
            }
            for q in &analysis.trace.questions {
                eprintln!("open question: {}", clean(q, false));
            }
        }
        Command::Probe(a) => {
            let image: ImageRef = a.image.parse()?;
            let against: Option<ImageRef> = a.against.as_deref().map(str::parse).transpose()?;
            let mut probes = a
                .probes
                .iter()
                .map(|p| pare::probe::Probe::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            if !a.args.is_empty() {
                probes.push(pare::probe::Probe {
                    args: Some(a.args.clone()),
                    ..Default::default()
                });
            }
            for h in &a.http_probes {
                probes.push(pare::probe::Probe::http(h)?);
            }
            let mut limits = pare::probe::Limits {
                seconds: a.probe_timeout.max(1),
                ..Default::default()
            };
            // No probe named: the [probe] table of pare.toml, if any.
            if probes.is_empty()
                && let Some(cfg) = pare::policy::load_probe_config(&std::env::current_dir()?, None)?
            {
                probes = cfg.probes()?;
                if let Some(t) = cfg.timeout {
                    limits.seconds = t.max(1);
                }
            }
            let expect = a
                .expect
                .as_deref()
                .map(regex::bytes::Regex::new)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expect: {e}"))?;
            if a.learn {
                if probes.is_empty() {
                    probes.push(pare::probe::Probe::default());
                }
                for p in &mut probes {
                    p.learn = true;
                    p.syscalls = a.seccomp_profile.is_some();
                }
            }
            if let Some(path) = &a.seccomp {
                let program = std::sync::Arc::new(
                    pare::probe::profile::load(path).map_err(pare::Error::Usage)?,
                );
                if probes.is_empty() {
                    probes.push(pare::probe::Probe::default());
                }
                for p in &mut probes {
                    p.profile = Some(program.clone());
                }
            }
            let report = harden::probe_image(
                &image,
                against.as_ref(),
                &probes,
                expect.as_ref(),
                &limits,
                &source_options(&a.source)?,
                &progress,
            )
            .await?;
            if let Some(path) = &a.seccomp_profile {
                write_profile(path, &report.syscalls.iter().cloned().collect())?;
            }
            match a.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                _ => print!("{}", clean(&report.text(), true)),
            }
            if !report.passed {
                return Ok(Outcome::Violations);
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "pare", &mut std::io::stdout());
        }
        Command::Man { dir } => {
            use clap::CommandFactory as _;
            let cmd = Cli::command();
            match dir {
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                Some(dir) => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
                    let mut written = 0;
                    let mut pages: Vec<(String, clap::Command)> =
                        vec![("pare".into(), cmd.clone())];
                    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                        pages.push((format!("pare-{}", sub.get_name()), sub.clone()));
                        for subsub in sub.get_subcommands() {
                            pages.push((
                                format!("pare-{}-{}", sub.get_name(), subsub.get_name()),
                                subsub.clone(),
                            ));
                        }
                    }
                    for (name, c) in pages {
                        let path = dir.join(format!("{name}.1"));
                        let mut buf = Vec::new();
                        clap_mangen::Man::new(c.name(name.clone())).render(&mut buf)?;
                        std::fs::write(&path, buf)
                            .with_context(|| format!("{}", path.display()))?;
                        written += 1;
                    }
                    eprintln!("wrote {written} man pages into {}", dir.display());
                }
            }
        }
        Command::Keygen(a) => {
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
        }
        Command::Signature(SignatureCommand::Verify(a)) => {
            let src: ImageRef = a.image.parse()?;
            let ImageRef::Registry(r) = &src else {
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
        }
        Command::Check(a) => {
            let src: ImageRef = a.image.parse()?;
            let cfg = check_config(&a.policy)?;
            let sopts = source_options_with(&a.source, a.policy.config.as_deref())?;
            let report = harden::check_image(&src, &sopts, &cfg, &progress).await?;
            let text = match a.format {
                Format::Text => clean(&report.text(), true),
                Format::Json => serde_json::to_string_pretty(&report)? + "\n",
                Format::Sarif => serde_json::to_string_pretty(&report.sarif())? + "\n",
            };
            write_out(&a.output, &text)?;
            if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
                // Workflow commands are read from stdout.
                print!("{}", clean(&report.github(), true));
            }
            if !report.passed {
                return Ok(Outcome::Violations);
            }
        }
        Command::Batch(a) => {
            let mut hopts = harden_options(&a.source, &a.trace, a.user.as_deref(), a.dry_run)?;
            hopts.no_sbom = a.no_sbom;
            hopts.sign_key = signing_key(&a.sign)?;
            let opts = pare::batch::BatchOptions {
                harden: hopts,
                jobs: a.jobs,
                include: a.include.clone(),
                exclude: a.exclude.clone(),
                shard: a
                    .shard
                    .as_deref()
                    .map(pare::batch::parse_shard)
                    .transpose()?,
                force: a.force,
                repos_from: a.repos_from.clone(),
                page_size: a.page_size,
            };
            let report = pare::batch::batch(&a.target, &opts, &progress).await?;
            eprint!("{}", clean(&report.table(), true));
            if let Some(path) = &a.report {
                write_out(
                    &Some(path.clone()),
                    &(serde_json::to_string_pretty(&report)? + "\n"),
                )?;
            }
            if report.failed > 0 {
                return Ok(Outcome::Violations);
            }
        }
        Command::Inspect(a) => {
            let src: ImageRef = a.image.parse()?;
            let opts = source_options(&a.source)?;
            if a.tree {
                let mut loaded = harden::load(&src, &opts, &progress).await?;
                let mut report = pare::inspect::InspectReport::new(
                    &src.to_string(),
                    &loaded.pulled,
                    &loaded.rootfs,
                );
                report.packages = harden::inspect_packages(&mut loaded)?;
                match a.format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                    _ => print!("{}", clean(&report.text(), true)),
                }
                print!("{}", clean(&pare::inspect::tree(&loaded.rootfs), true));
            } else {
                let report = harden::inspect_image(&src, &opts, &progress).await?;
                match a.format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                    Format::Sarif => anyhow::bail!("inspect has no SARIF output; use text or json"),
                    Format::Text => print!("{}", clean(&report.text(), true)),
                }
            }
        }
    }
    Ok(Outcome::Ok)
}

/// Image-controlled text (paths, link targets) can hold terminal escape sequences: show
/// control characters escaped. Newlines stay only where `keep_newlines`.
fn clean(s: &str, keep_newlines: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && !(keep_newlines && c == '\n') {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn main() -> ExitCode {
    // `pare __sandbox SPEC_FILE`, the helper `pare probe` starts: not a subcommand of the CLI
    // (it is no user's business), and it starts nothing else: the namespace calls need one
    // thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "__sandbox" {
        pare::probe::sandbox::helper_main(Path::new(&args[2]));
    }
    let cli = Cli::parse();
    let is_check = matches!(cli.command, Command::Check(_) | Command::Probe(_));
    pare::transport::registry::set_read_timeout(std::time::Duration::from_secs(cli.timeout.max(1)));
    // Log lines go through the progress bars, so a retry warning does not break them.
    let progress = Progress::stderr(cli.quiet);
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(progress.log_writer())
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_env_filter(
                // PARE_LOG (EnvFilter syntax, e.g. `pare=trace`) for finer detail.
                tracing_subscriber::EnvFilter::try_from_env("PARE_LOG").unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("pare=debug,oci_client=debug")
                }),
            )
            .init();
    } else {
        // Warnings only (a registry call being retried), as one plain line each.
        tracing_subscriber::fmt()
            .with_writer(progress.log_writer())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("pare=warn"))
            .init();
    }
    // `check` keeps exit code 1 for policy violations; failing to check at all is 2.
    let failure = ExitCode::from(if is_check { 2 } else { 1 });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pare: error: cannot start the runtime: {e}");
            return failure;
        }
    };
    match rt.block_on(run(cli, progress)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Violations) => ExitCode::from(1),
        Err(e) => {
            if let Some(
                pare::Error::CheckFailed { text, .. } | pare::Error::ProbeFailed { text, .. },
            ) = e.downcast_ref::<pare::Error>()
            {
                eprint!("{}", clean(text, true));
            }
            // An unsigned source is a policy failure (1), also for `pare check`.
            let failure = match e.downcast_ref::<pare::Error>() {
                Some(pare::Error::Signature(_)) => ExitCode::from(1),
                _ => failure,
            };
            // One line: each cause once (pare's errors already name their source).
            let mut msg: Vec<String> = Vec::new();
            for c in e.chain() {
                let t = c.to_string();
                if !msg.last().is_some_and(|m| m.contains(&t)) {
                    msg.push(t);
                }
            }
            eprintln!("pare: error: {}", clean(&msg.join(": "), false));
            failure
        }
    }
}

/// `--seccomp-profile FILE`: the recorded calls as an OCI/Docker seccomp profile.
fn write_profile(
    path: &std::path::Path,
    names: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    if names.is_empty() {
        anyhow::bail!(
            "--seccomp-profile {}: no system call was recorded (did the probes run?)",
            path.display()
        );
    }
    let json = serde_json::to_string_pretty(&pare::probe::profile::learned(names))?;
    std::fs::write(path, json + "\n").with_context(|| format!("{}", path.display()))?;
    eprintln!(
        "wrote a seccomp profile allowing {} recorded system calls (and what a runtime needs to start them) to {}",
        names.len(),
        path.display()
    );
    Ok(())
}

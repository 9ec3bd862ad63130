//! The command line's arguments (clap), one struct per command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::exit::EXIT_CODES;

#[derive(Parser)]
#[command(
    name = "pare",
    version,
    about = "Make container images safe to run: keep only what the entrypoint needs, clear setuid/setgid, run as non-root.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// More logging on stderr (never secrets).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Seconds a registry request may go without progress before it counts as a transient
    /// fault (retried, 5 tries in all).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Harden each image a registry announces: an HTTP service taking the distribution
    /// registry's notifications, Harbor's webhooks and `POST /harden`, with a durable queue.
    /// `pare serve jobs` lists the queue.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "\
Examples:
  pare serve --listen 0.0.0.0:8080 --token-file /run/secrets/pare/token \\
             --queue /var/lib/pare/queue --config /etc/pare/pare.toml
  pare serve jobs --queue /var/lib/pare/queue --state failed
Endpoints: POST /events/distribution, POST /events/harbor, POST /harden {\"image\": …},
           GET /healthz, GET /readyz, GET /metrics (Prometheus)"
    )]
    Serve(ServeArgs),
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
pub struct ServeArgs {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// HOST:PORT to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The token callers send (`Authorization: Bearer TOKEN`, or the header's value alone as
    /// Harbor sends it). Required.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also accept requests signed with this secret (`X-Hub-Signature-256: sha256=HMAC`); a
    /// wrong signature is refused even beside a right token.
    #[arg(long, value_name = "FILE")]
    pub hmac_secret_file: Option<PathBuf>,
    /// Directory of the job queue (SQLite); jobs survive restarts.
    #[arg(long, value_name = "DIR", default_value = "pare-queue")]
    pub queue: PathBuf,
    /// The configuration ([serve], [check]) instead of ./pare.toml or ./.pare.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Images hardened at once (default: [serve] jobs, else 2).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub many: ManyFlags,
}

#[derive(Subcommand)]
pub enum ServeCommand {
    /// List the jobs of a queue (oldest first) and the latest skipped events.
    Jobs(ServeJobsArgs),
}

#[derive(Args)]
pub struct ServeJobsArgs {
    /// Directory of the job queue.
    #[arg(long, value_name = "DIR", default_value = "pare-queue")]
    pub queue: PathBuf,
    /// Only jobs in this state: queued, running, done, skipped, failed.
    #[arg(long)]
    pub state: Option<String>,
    /// Also list this many of the latest skipped events.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub skips: usize,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Writes PREFIX.key and PREFIX.pub (never over existing files).
    pub prefix: PathBuf,
    /// The passphrase, read from this file (default: $PARE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum SignatureCommand {
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
pub struct SignatureVerifyArgs {
    /// HOST[:PORT]/REPO[:TAG][@sha256:…]
    pub image: String,
    /// Public key (PEM; ECDSA P-256, Ed25519 or RSA). Repeatable: any one may match.
    #[arg(long = "key", value_name = "KEY.pub", required = true)]
    pub keys: Vec<PathBuf>,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Image to run (any transport pare reads).
    pub image: String,
    /// The original to run the same probes in: a probe passes when exit code, stdout and stderr
    /// are the same in both.
    #[arg(long, value_name = "ORIGINAL")]
    pub against: Option<String>,
    /// Arguments given to the entrypoint as Cmd, split like a shell would (repeatable; none:
    /// the image's own Cmd).
    #[arg(long = "probe", value_name = "ARGS", allow_hyphen_values = true)]
    pub probes: Vec<String>,
    /// Record the files each probe's program uses (ptrace, in the sandbox): with --against,
    /// in the original, listing those this image lacks (what static analysis missed).
    #[arg(long)]
    pub learn: bool,
    /// With --learn: also record every system call the programs make, and write them as a
    /// seccomp profile (OCI/Docker JSON, any other call EPERM) to FILE.
    #[arg(long, value_name = "FILE", requires = "learn")]
    pub seccomp_profile: Option<PathBuf>,
    /// Run each probe's program under this seccomp profile (OCI/Docker JSON, e.g. one
    /// --seccomp-profile wrote) on top of the sandbox's default filter.
    #[arg(long, value_name = "FILE")]
    pub seccomp: Option<PathBuf>,
    /// Without --against: stdout must also match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Seconds a probe may run before it is killed (and fails).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub probe_timeout: u64,
    /// Start the entrypoint (with the image's Cmd) as a server, wait for PORT on the sandbox's
    /// loopback, GET PATH and compare status and body (repeatable).
    #[arg(long = "http-probe", value_name = "PORT/PATH")]
    pub http_probes: Vec<String>,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub source: SourceArgs,
    /// One probe's arguments, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Args)]
pub struct BatchArgs {
    /// HOST[:PORT][/NAMESPACE]: the repositories whose names start with NAMESPACE/.
    pub target: String,
    /// Images at once (default: the number of cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Only `repo:tag` matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out `repo:tag` matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Take a deterministic 1/N of the work: I/N, or `auto` (JOB_COMPLETION_INDEX of a
    /// Kubernetes Indexed Job, with JOB_COMPLETIONS).
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// Re-harden tags whose hardened tag already records the same source digest.
    #[arg(long)]
    pub force: bool,
    /// Repositories from this file, one per line (registries without a catalog, like Docker Hub).
    #[arg(long, value_name = "FILE")]
    pub repos_from: Option<PathBuf>,
    /// Catalog and tag-list page size.
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// List what would be hardened or skipped; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON report: per image source and destination digests, status, sizes, error.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub many: ManyFlags,
}

/// What `batch` and `serve` pass to every image they harden.
#[derive(Args, Clone)]
pub struct ManyFlags {
    /// Run as UID[:GID] (never 0) instead of each image's non-root user or 65532.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Make no SBOM and push no referrer for the hardened images.
    #[arg(long)]
    pub no_sbom: bool,
    #[command(flatten)]
    pub sign: SignFlags,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub trace: TraceFlags,
}

#[derive(Args, Clone)]
pub struct SourceArgs {
    /// Platform of a multi-platform image, as OS/ARCH[/VARIANT]. `harden` hardens every
    /// platform of an index by default, and the ones named when this is repeated; other
    /// commands read linux/amd64 by default. Named once, it is also checked against a
    /// single-platform image.
    #[arg(long)]
    pub platform: Vec<String>,
    /// Credentials USER:PASSWORD for the source registry, and for DEST when it is on the same
    /// registry (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(long, env = "PARE_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// Speak plain HTTP to this registry (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Refuse the image unless it carries a valid cosign signature by this public key (PEM, as
    /// `cosign generate-key-pair` or `pare keygen` writes: ECDSA P-256, Ed25519 or RSA),
    /// checked before any layer is pulled. Repeatable: any one may match. Default: the keys
    /// of the [signatures] table of pare.toml.
    #[arg(long = "verify-key", value_name = "KEY.pub")]
    pub verify_key: Vec<PathBuf>,
}

#[derive(Args, Clone)]
pub struct TraceFlags {
    /// Also keep these paths (file, directory or glob); ELF files among them are traced too. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub keep: Vec<String>,
    /// Proceed when a needed library is not in the image.
    #[arg(long)]
    pub allow_missing: bool,
    /// Keep a language runtime's whole standard library (minus test suites, GUI toolkits and
    /// bundled installers) instead of what the application imports.
    #[arg(long)]
    pub runtime_full: bool,
    /// Do not follow the image's package database (the configuration and data of the
    /// packages owning the programs, and of their dependencies). Package metadata for what
    /// is kept is still written.
    #[arg(long)]
    pub no_packages: bool,
}

#[derive(Args, Clone)]
pub struct OutputFlags {
    /// The hardened layers' compression: gzip (every runtime reads it) or zstd (smaller and
    /// faster; containerd ≥ 1.5, podman, Docker ≥ 23 read it).
    #[arg(long, value_parser = ["gzip", "zstd"], default_value = "gzip")]
    pub compression: String,
    /// Threads parsing the source's layers and compressing the result (default: one per
    /// core; at most 8 compress). The bytes written do not depend on it.
    #[arg(long, value_name = "N", env = "PARE_THREADS", default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Clone)]
pub struct PolicyFlags {
    /// Do not evaluate this rule (repeatable): root-user, setuid-setgid, shell, network-tool,
    /// package-manager, world-writable, wasted-space.
    #[arg(long, value_name = "RULE")]
    pub allow: Vec<String>,
    /// Lowest severity that fails the check: low (default), medium or high.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<String>,
    /// Read the [check] table from this file instead of ./pare.toml or ./.pare.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Count a shell, network tool or package manager the entrypoint needs as a violation
    /// too (by default it is a note).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Clone)]
pub struct SignFlags {
    /// Sign what is pushed with this private key (cosign's encrypted format, as `cosign
    /// generate-key-pair` or `pare keygen` writes): the signature goes under
    /// `sha256-<hex>.sig` as `cosign sign --key` puts it (no transparency log), each platform
    /// and the index of a multi-platform result, and the SBOM as a signed SPDX attestation
    /// (`sha256-<hex>.att`). The tag is pushed after its signature.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// The key's passphrase, read from this file (default: $PARE_PASSWORD; never a flag value).
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pub sign_passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct HardenArgs {
    /// Source image: HOST[:PORT]/REPO[:TAG][@sha256:…], docker://…, oci:DIR[:TAG] or docker-archive:FILE[:REF].
    pub src: String,
    /// Destination (default: SRC's repository with tag TAG-hardened).
    pub dest: Option<String>,
    /// Run as UID[:GID] (never 0) instead of the image's non-root user or 65532.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Trace and report, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the JSON report here ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Credentials USER:PASSWORD for DEST when it is on another registry than SRC.
    #[arg(long, env = "PARE_DEST_CREDS", hide_env_values = true)]
    pub dest_creds: Option<String>,
    /// Run `pare check` on the result before writing it, and refuse to write one that fails.
    #[arg(long)]
    pub check: bool,
    /// Print the Kubernetes securityContext that fits the hardened image (YAML, on stdout).
    #[arg(long)]
    pub print_security_context: bool,
    /// Also write the SPDX 2.3 JSON SBOM of the hardened image here (it is pushed next to the
    /// image as an OCI referrer either way).
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// Make no SBOM and push no referrer.
    #[arg(long, conflicts_with = "sbom")]
    pub no_sbom: bool,
    /// Allow DEST to be SRC itself (same registry tag, layout tag or archive file): replace the
    /// source. Its previous digest is printed, and a registry source stays reachable as
    /// TAG-original (an existing TAG-original is never overwritten).
    #[arg(long)]
    pub in_place: bool,
    /// Harden even when DEST already holds the result (hardened from the same source digest by
    /// this pare with the same options), which is otherwise reported and left as it is
    /// without pulling a layer.
    #[arg(long)]
    pub force: bool,
    /// Before writing, run the entrypoint with these arguments (split like a shell) in a
    /// sandbox of the result and of the source (as `pare probe --against`); a probe whose exit
    /// code or output differs writes nothing (exit 1). Repeatable.
    #[arg(long = "probe", value_name = "ARGS", allow_hyphen_values = true)]
    pub probes: Vec<String>,
    /// Seconds a probe may run before it is killed (and fails).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub probe_timeout: u64,
    /// Start the entrypoint (with the image's Cmd) as a server, wait for PORT on the sandbox's
    /// loopback, GET PATH and compare status and body (repeatable).
    #[arg(long = "http-probe", value_name = "PORT/PATH")]
    pub http_probes: Vec<String>,
    /// Before tracing, run the entrypoint with these arguments in a sandbox of the source,
    /// recording the files its programs use (ptrace); they are kept too (evidence
    /// `observed`), and the report lists those static analysis had missed. Repeatable.
    #[arg(long = "learn", value_name = "ARGS", allow_hyphen_values = true)]
    pub learn: Vec<String>,
    /// Like --learn, for a server: start the entrypoint (with the image's Cmd) in a sandbox of
    /// the source while recording, GET PATH from PORT once it listens, then stop it; what it
    /// used to start and to answer is kept (repeatable).
    #[arg(long = "learn-http", value_name = "PORT/PATH")]
    pub learn_http: Vec<String>,
    /// Like --learn-http, for a server that does not speak HTTP (a key-value store, a
    /// database): start the entrypoint (with the image's Cmd) in a sandbox of the source while
    /// recording, wait until PORT listens, then stop it (repeatable).
    #[arg(long = "learn-tcp", value_name = "PORT")]
    pub learn_tcp: Vec<String>,
    /// With --learn/--learn-http: also record every system call their programs make and write
    /// them as a seccomp profile (OCI/Docker JSON, any other call EPERM) to FILE;
    /// --print-security-context then references it (seccompProfile: Localhost).
    #[arg(long, value_name = "FILE")]
    pub seccomp_profile: Option<PathBuf>,
    /// With --in-place: do not keep the source under TAG-original.
    #[arg(long, requires = "in_place")]
    pub no_backup: bool,
    #[command(flatten)]
    pub sign: SignFlags,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub policy: PolicyFlags,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub trace: TraceFlags,
}

#[derive(Args)]
pub struct TraceArgs {
    /// Image to trace.
    pub src: String,
    /// Print the kept files and why, as JSON, instead of the tree.
    #[arg(long)]
    pub json: bool,
    /// Say why this path is kept (every reason), or why not.
    #[arg(long, value_name = "PATH")]
    pub why: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub trace: TraceFlags,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Image to check (any transport pare reads).
    pub image: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the output here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyFlags,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Image to inspect (any transport pare reads).
    pub image: String,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also print the merged filesystem as a tree with sizes.
    #[arg(long)]
    pub tree: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

//! The `pare` command line: parses arguments, calls the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use pare::harden::{self, HardenOptions};
use pare::image::Platform;
use pare::progress::Progress;
use pare::reference::ImageRef;
use pare::source::SourceOptions;

#[derive(Parser)]
#[command(
    name = "pare",
    version,
    about = "Make container images safe to run: keep only what the entrypoint needs, clear setuid/setgid, run as non-root."
)]
struct Cli {
    /// More logging on stderr (never secrets).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull SRC, keep only its entrypoint's closure, harden it, and write DEST
    /// (default: the same repository, tag TAG-hardened).
    Harden(HardenArgs),
    /// Print the entrypoint's dependency tree (like lddtree), writing nothing.
    Trace(TraceArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Platform to pick from a multi-platform image, as OS/ARCH[/VARIANT] (default linux/amd64).
    /// Named explicitly, it is also checked against a single-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Credentials USER:PASSWORD for the source registry, and for DEST when it is on the same
    /// registry (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(long, env = "PARE_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// Speak plain HTTP to this registry (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Also keep these paths (file, directory or glob); ELF files among them are traced too. Repeatable.
    #[arg(long, value_name = "PATH")]
    keep: Vec<String>,
    /// Proceed when a needed library is not in the image.
    #[arg(long)]
    allow_missing: bool,
}

#[derive(Args)]
struct HardenArgs {
    /// Source image: HOST[:PORT]/REPO[:TAG][@sha256:…], docker://…, or oci:DIR[:TAG].
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
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct TraceArgs {
    /// Image to trace.
    src: String,
    /// Print the kept files and why, as JSON, instead of the tree.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

fn options(c: &Common) -> anyhow::Result<HardenOptions> {
    Ok(HardenOptions {
        source: SourceOptions {
            platform: c.platform.as_deref().map(Platform::parse).transpose()?,
            insecure_registries: c.insecure_registry.clone(),
            creds: c
                .creds
                .as_deref()
                .map(pare::auth::parse_creds)
                .transpose()?,
        },
        user: None,
        keep: c.keep.clone(),
        allow_missing: c.allow_missing,
        dry_run: false,
        dest_creds: None,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = Progress::stderr(cli.quiet);
    match cli.command {
        Command::Harden(a) => {
            let src: ImageRef = a.src.parse()?;
            let dest: Option<ImageRef> = a.dest.as_deref().map(str::parse).transpose()?;
            let mut opts = options(&a.common)?;
            opts.user = a
                .user
                .as_deref()
                .map(pare::plan::parse_user_flag)
                .transpose()?;
            opts.dry_run = a.dry_run;
            opts.dest_creds = a
                .dest_creds
                .as_deref()
                .map(pare::auth::parse_creds)
                .transpose()?;
            let report = harden::harden(&src, dest.as_ref(), &opts, &progress).await?;
            for w in &report.warnings {
                eprintln!("warning: {}", clean(w, false));
            }
            if let Some(path) = &a.report {
                let json = serde_json::to_string_pretty(&report)?;
                if path.as_os_str() == "-" {
                    println!("{json}");
                } else {
                    std::fs::write(path, json + "\n")
                        .with_context(|| format!("writing report {}", path.display()))?;
                }
            }
            eprintln!("{}", clean(&report.summary(), false));
        }
        Command::Trace(a) => {
            let src: ImageRef = a.src.parse()?;
            let opts = options(&a.common)?;
            let analysis = harden::analyze(&src, &opts, &progress).await?;
            if a.json {
                let files: serde_json::Map<String, serde_json::Value> = analysis
                    .trace
                    .files
                    .iter()
                    .chain(analysis.trace.symlinks.iter())
                    .map(|(p, why)| {
                        (
                            pare::rootfs::display(p),
                            serde_json::Value::String(why.clone()),
                        )
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&files)?);
            } else {
                print!(
                    "{}",
                    clean(&pare::trace::render_tree(&analysis.trace), true)
                );
            }
            for w in &analysis.trace.warnings {
                eprintln!("warning: {}", clean(w, false));
            }
        }
    }
    Ok(())
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
    let cli = Cli::parse();
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "pare=debug,oci_client=debug",
            ))
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pare: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("pare: error: {}", clean(&msg.join(": "), false));
            ExitCode::FAILURE
        }
    }
}

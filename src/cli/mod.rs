//! The command line: one file per command, each a function from its arguments to an
//! [`Outcome`]; [`exit`] is the one place outcomes and errors become exit codes.

pub(crate) mod args;
mod batch;
mod check;
mod docs;
pub(crate) mod exit;
mod harden;
mod inspect;
mod options;
mod print;
mod probe;
mod serve;
mod sign;
mod trace;

use std::io::IsTerminal;
use std::process::ExitCode;

use pare::progress::Progress;

use args::{Cli, Command, SignatureCommand};
use exit::Outcome;

/// Run one command line: logging through the progress bars, a runtime, the command, its code.
pub(crate) fn main(cli: Cli) -> ExitCode {
    let kind = match cli.command {
        Command::Check(_) | Command::Probe(_) => exit::Kind::Verdict,
        _ => exit::Kind::Run,
    };
    bound_malloc_arenas();
    pare::transport::registry::set_read_timeout(std::time::Duration::from_secs(cli.timeout.max(1)));
    // Log lines go through the progress bars, so a retry warning does not break them.
    let progress = Progress::stderr(cli.quiet);
    // The service logs JSON lines (its own and the library's warnings alike).
    let json = matches!(&cli.command, Command::Serve(a) if a.command.is_none());
    logging(cli.verbose, json, &progress);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::code(kind, Err(anyhow::anyhow!("cannot start the runtime: {e}"))),
    };
    let result = rt.block_on(run(cli.command, &progress));
    // Work a command left behind (a job `pare serve` gave up on after its grace period, still
    // inflating a layer on a blocking thread) does not hold the exit up.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    exit::code(kind, result)
}

/// glibc gives each thread that allocates its own arena, up to 8 per core, and keeps what they
/// free: a batch's short-lived writer threads then hold freed memory in many arenas. One per
/// core (2 to 8) held a 200-image batch at 91 MiB instead of 132, in the same time.
///
/// The layer pipelines pass 1 MiB buffers from thread to thread. glibc's default serves each
/// from a fresh `mmap` (zeroed by the kernel, faulted in page by page, unmapped on free) until
/// its sliding threshold catches up: 4% of a single image's CPU went to those faults. Buffers
/// under 4 MiB now come from the arenas, and an arena gives memory back to the kernel once
/// 16 MiB of it is free at its top.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.clamp(2, 8) as libc::c_int);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        }
    }
}

fn logging(verbose: bool, json: bool, progress: &Progress) {
    if json {
        // As `pare serve`'s own lines: timestamp, level, message, then the fields.
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PARE_LOG").unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(if verbose {
                        "pare=debug"
                    } else {
                        "pare=warn"
                    })
                }),
            )
            .init();
    } else if verbose {
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
}

async fn run(command: Command, progress: &Progress) -> anyhow::Result<Outcome> {
    match command {
        Command::Harden(a) => harden::run(a, progress).await,
        Command::Trace(a) => trace::run(a, progress).await,
        Command::Probe(a) => probe::run(a, progress).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir),
        Command::Keygen(a) => sign::keygen(a),
        Command::Signature(SignatureCommand::Verify(a)) => sign::verify(a).await,
        Command::Check(a) => check::run(a, progress).await,
        Command::Batch(a) => batch::run(a, progress).await,
        Command::Inspect(a) => inspect::run(a, progress).await,
        Command::Serve(a) => serve::run(a).await,
    }
}

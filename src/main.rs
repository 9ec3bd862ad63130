//! The `pare` command line: parses arguments and hands them to [`cli`], which calls the
//! library and prints. Exit codes: [`cli::exit::EXIT_CODES`] (printed by `pare --help`).

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // `pare __sandbox SPEC_FILE`, the helper `pare probe` starts: not a subcommand of the CLI
    // (it is no user's business), and it starts nothing else: the namespace calls need one
    // thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "__sandbox" {
        pare::probe::sandbox::helper_main(Path::new(&args[2]));
    }
    cli::main(cli::args::Cli::parse())
}

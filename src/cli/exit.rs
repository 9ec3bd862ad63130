//! Exit codes: one table for every command, and the one place outcomes become codes.

use std::process::ExitCode;

use super::print::clean;

/// Every command's exit codes, one table (`pare --help`, the man page, the README).
pub(crate) const EXIT_CODES: &str = "\
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

/// What a command ends with.
pub(crate) enum Outcome {
    Ok,
    /// `pare check` found violations.
    Violations,
}

/// The exit-code families of [`EXIT_CODES`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// harden, trace, inspect, keygen, completions, man, batch, signature verify: 0 or 1.
    Run,
    /// check and probe: 1 is the answer "no" (violations, a probe that differs), 2 is "could
    /// not tell".
    Verdict,
}

/// The one place an outcome becomes an exit code (the table in [`EXIT_CODES`]); an error is
/// printed here as one line (and a failed check's or probe's report first).
pub(crate) fn code(kind: Kind, result: anyhow::Result<Outcome>) -> ExitCode {
    let e = match result {
        Ok(Outcome::Ok) => return ExitCode::SUCCESS,
        Ok(Outcome::Violations) => return ExitCode::from(1),
        Err(e) => e,
    };
    let pare_error = e.downcast_ref::<pare::Error>();
    if let Some(pare::Error::CheckFailed { text, .. } | pare::Error::ProbeFailed { text, .. }) =
        pare_error
    {
        eprint!("{}", clean(text, true));
    }
    let code = match (kind, pare_error) {
        // An unsigned source is a policy failure (1), also for `pare check`.
        (_, Some(pare::Error::Signature(_))) => 1,
        (Kind::Verdict, _) => 2,
        (Kind::Run, _) => 1,
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
    ExitCode::from(code)
}

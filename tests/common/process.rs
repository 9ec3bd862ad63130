//! Small process and hashing helpers: running commands, finding tools, the pare binary.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// `"sha256:<hex>"` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Locate `name` on `PATH` (plus the sbin directories, which root's PATH may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Like [`find_tool`], but panics with installation advice when the tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "integration-test tool `{name}` not found on PATH. Install the test prerequisites \
             (run `just test`, or `apt-get install docker-registry skopeo umoci busybox-static \
             apache2-utils jq`)"
        )
    })
}

/// Human-readable summary of a finished process, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run `cmd` to completion, capturing output. Panics only if it cannot be spawned.
pub fn run_capture(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
}

/// Run `cmd`, panicking with its full output unless it exits successfully.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = run_capture(cmd);
    assert!(
        output.status.success(),
        "command failed: {cmd:?}\n{}",
        describe_output(&output)
    );
    output
}

/// Whether the test process runs with effective uid 0 (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .map(|euid| euid == "0")
        .expect("no Uid: line in /proc/self/status")
}

/// The `pare` binary under test, as a ready-to-configure [`Command`].
pub fn pare() -> Command {
    // `option_env!` rather than `env!` so the harness still compiles while the binary target
    // does not exist yet.
    let Some(bin) = option_env!("CARGO_BIN_EXE_pare") else {
        panic!("CARGO_BIN_EXE_pare is not set: the `pare` binary target (src/main.rs) is missing");
    };
    Command::new(bin)
}

/// Run `cmd` to completion, capturing its output (stdin inherited). Panics only if it cannot
/// be spawned.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run pare")
}

/// `pare ARGS`, which must exit 0; its output.
#[track_caller]
pub fn pare_ok(args: &[&str]) -> Output {
    let out = run(pare().args(args));
    assert!(out.status.success(), "{}", describe_output(&out));
    out
}

/// `out`'s stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `out`'s stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 1 and exactly one line on stderr, starting with `pare: error:` and containing all
/// of `needles`; that line.
#[track_caller]
pub fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "expected failure: {}",
        describe_output(out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pare: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
    eprintln!("{}", lines[0]);
    lines[0].to_string()
}

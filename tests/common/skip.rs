//! Tests that cannot run on this machine. Every such path goes through [`skip`]: it prints
//! `SKIP <test>: <reason>` on a developer machine and fails the test under `CI=true`, so that
//! no test passes in CI without running.

use std::panic::Location;

use super::is_root;

/// Whether this is a CI run (`CI=true`): missing downloads and tools then fail instead of skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The running test's name (libtest names each test's thread after it), else the caller's
/// place in the source.
fn current_test(caller: &Location<'_>) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => format!("{}:{}", caller.file(), caller.line()),
    }
}

/// A test, or a part of one, cannot run here: print `SKIP <test>: <reason>` (the caller then
/// returns or leaves the part out); under `CI=true`, panic instead.
#[track_caller]
pub fn skip(reason: &str) {
    let test = current_test(Location::caller());
    assert!(
        !in_ci(),
        "CI=true, so {test} may not be skipped (it is only skipped on developer machines): {reason}"
    );
    eprintln!("SKIP {test}: {reason}");
}

/// `Some` of what `r` holds, or `None` after [`skip`] with its error as the reason.
#[track_caller]
pub fn or_skip<T>(r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

/// Whether this runs as root; when not, [`skip`] with `not root: {what}`.
#[track_caller]
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("not root: {what}"));
    false
}

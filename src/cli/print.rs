//! Output: to a file or stdout, image-controlled text made safe for a terminal, the seccomp
//! profile `--learn` recorded.

use std::path::PathBuf;

use anyhow::Context as _;

pub(super) fn write_out(path: &Option<PathBuf>, text: &str) -> anyhow::Result<()> {
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

/// Image-controlled text (paths, link targets) can hold terminal escape sequences: show
/// control characters escaped. Newlines stay only where `keep_newlines`.
pub(super) fn clean(s: &str, keep_newlines: bool) -> String {
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

/// `--seccomp-profile FILE`: the recorded calls as an OCI/Docker seccomp profile.
pub(super) fn write_profile(
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

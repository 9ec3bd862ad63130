//! Which kept text files are *active* configuration: files a program is told to load, loads by
//! default when not told otherwise, or that an active configuration includes. Only an active
//! configuration's commands run (lighttpd's `include_shell`, supervisord's `command =`) and only
//! it can make a script it names a program; what a package's default configuration, a README or
//! an example names while the entrypoint runs the server with `-f other.conf` is weak evidence
//! (inert files at most, never an executable).
//!
//! | evidence of the file | active |
//! |---|---|
//! | named by the image config (argv, Env), `--keep`, seen by `--learn` | yes |
//! | a path string in a loaded ELF object (a compiled-in default) | yes, unless the entrypoint is that program and its argv names another file of the same kind |
//! | named by a script that runs (the entrypoint's, a sourced one) | yes |
//! | included by an active configuration | yes |
//! | a package's conffile or data, a path in a text that is not active, a directory kept whole | no |

use super::kit::{Cx, Why};

/// How deep an include chain is followed back to what made its head active.
const MAX_DEPTH: usize = 12;

/// Whether the kept text file `path` (canonical) is active configuration.
pub(crate) fn is_active(cx: &Cx, path: &str) -> bool {
    active(cx, path.trim_start_matches('/'), 0)
}

fn active(cx: &Cx, path: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let Some(evidence) = cx.out.files.get(path) else {
        return false;
    };
    evidence.iter().filter(|e| e.within.is_none()).any(|e| {
        let from = e.from.as_deref().map(|f| f.trim_start_matches('/'));
        match e.kind {
            Why::KeepFlag | Why::Observed => true,
            Why::ConfigInclude => from.is_some_and(|f| f != path && active(cx, f, depth + 1)),
            Why::PathReference => match from {
                None => true,
                Some(f) if cx.ld.object_at(f).is_some() => !told_otherwise(cx, f, path),
                Some(f) => runs(cx, f),
            },
            _ => false,
        }
    })
}

/// Whether the text file `path` runs: a program the entrypoint runs (a script), or a script
/// sourced or run by one.
fn runs(cx: &Cx, path: &str) -> bool {
    cx.out.programs.contains(path)
        || cx.out.files.get(path).is_some_and(|ev| {
            ev.iter().any(|e| {
                e.within.is_none()
                    && matches!(
                        e.kind,
                        Why::Entrypoint | Why::ScriptCommand | Why::Command | Why::Interpreter
                    )
            })
        })
}

/// Whether the entrypoint is `program` and its argv names another existing file of the kind
/// of `config` (the same extension, or the same directory): `lighttpd -f /etc/lighttpd/x.conf`
/// makes the compiled-in `/etc/lighttpd/lighttpd.conf` inactive.
fn told_otherwise(cx: &Cx, program: &str, config: &str) -> bool {
    if cx.out.entrypoint.trim_start_matches('/') != program {
        return false;
    }
    let ext = |p: &str| {
        let base = p.rsplit('/').next().unwrap_or(p);
        base.rsplit_once('.').map(|(_, e)| e.to_string())
    };
    let dir = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_string());
    cx.out.argv.iter().skip(1).any(|a| {
        let word = a.rsplit_once('=').map_or(a.as_str(), |(_, v)| v);
        if !word.starts_with('/') {
            return false;
        }
        let Ok(r) = cx.fs.resolve(word, true) else {
            return false;
        };
        r.path != config
            && cx.fs.get(&r.path).is_some_and(|n| !n.is_dir())
            && ((ext(&r.path).is_some() && ext(&r.path) == ext(config))
                || dir(&r.path) == dir(config))
    })
}

//! Include directives of configuration files, the way the programs read them: one generic
//! engine (a directive names a file, a glob or a directory; relative names are tried against
//! the including file's directory, its parents, and the directories compiled into the program
//! that reads it) with a small table of directive spellings:
//!
//! | directive | programs |
//! |---|---|
//! | `include PATTERN;` | nginx, and the many formats that spell it so |
//! | `load_module PATH;` | nginx (relative to its compiled-in prefix) |
//! | `Include`, `IncludeOptional` | Apache httpd, OpenSSH |
//! | `LoadModule NAME PATH` | Apache httpd |
//! | `!include FILE`, `!includedir DIR` | MySQL, MariaDB |
//! | `include_dir`, `include_if_exists` | PostgreSQL |
//! | `@include FILE` | PAM, lighttpd |
//! | `$IncludeConfig PATTERN` | rsyslog |
//! | `conf-dir=DIR` | dnsmasq |
//! | `extension=NAME`, `zend_extension=NAME` | PHP (in the compiled-in extension directory) |
//! | `.include FILE` | OpenSSL |
//! | `[include] files = GLOB…` | supervisord |
//! | `lua-load FILE`, `lua-load-per-thread FILE` | HAProxy |
//!
//! and directives that run a command, traced as programs: lighttpd `include_shell "CMD"`
//! (through `/bin/sh -c`) and supervisord's `[program:x] command = CMD`.

use super::kit::{Cx, Evidence, Why, dir_of};
use crate::error::Result;
use crate::rootfs::{Kind, display};

/// One include found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Include {
    pub directive: String,
    pub target: String,
    pub line: usize,
    /// A directory whose files are all read (`!includedir`, `include_dir`, `conf-dir`).
    pub dir: bool,
}

/// Directive → (position of the target among its arguments, whether it names a directory).
fn directive(word: &str) -> Option<(usize, bool)> {
    Some(match word.to_ascii_lowercase().as_str() {
        "include"
        | "includeoptional"
        | "include_if_exists"
        | "load_module"
        | "@include"
        | "!include"
        | "$includeconfig"
        | ".include"
        | "lua-load"
        | "lua-load-per-thread" => (0, false),
        "loadmodule" => (1, false),
        "!includedir" | "include_dir" => (0, true),
        _ => return None,
    })
}

/// The includes of a text.
pub(crate) fn includes(text: &str) -> Vec<Include> {
    let mut out = Vec::new();
    let mut in_include_section = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        // supervisord: `[include]` then `files = a/*.conf b.conf`.
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == "files"
            && in_include_section
        {
            for t in v.split_whitespace() {
                out.push(Include {
                    directive: "files".into(),
                    target: t.to_string(),
                    line: n + 1,
                    dir: false,
                });
            }
            continue;
        }
        if line.starts_with('[') {
            in_include_section = line == "[include]";
        }
        // PHP: `extension=mbstring` (in the compiled-in extension directory) or a path.
        if let Some((k, v)) = line.split_once('=')
            && matches!(k.trim(), "extension" | "zend_extension")
        {
            let v = v.trim().trim_matches(['"', '\'']);
            if !v.is_empty() && !v.contains('$') {
                let target = if v.contains('/') || v.ends_with(".so") {
                    v.to_string()
                } else {
                    format!("{v}.so")
                };
                out.push(Include {
                    directive: k.trim().to_string(),
                    target,
                    line: n + 1,
                    dir: false,
                });
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("conf-dir=") {
            let d = v.split(',').next().unwrap_or("").trim();
            out.push(Include {
                directive: "conf-dir".into(),
                target: d.to_string(),
                line: n + 1,
                dir: true,
            });
            continue;
        }
        // A statement may end with `;` and share its line with others (nginx).
        for stmt in line.split([';', '{', '}']) {
            let mut words = stmt.split_whitespace();
            let Some(first) = words.next() else { continue };
            let Some((pos, dir)) = directive(first) else {
                continue;
            };
            let Some(target) = words.nth(pos) else {
                continue;
            };
            let target = target.trim_matches(['"', '\'']).trim_end_matches(';');
            if target.is_empty() || target.contains('$') {
                continue;
            }
            out.push(Include {
                directive: first.to_string(),
                target: target.to_string(),
                line: n + 1,
                dir,
            });
        }
    }
    out
}

/// Keep what the includes of a kept text file name.
/// A command a configuration file makes its program run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub directive: &'static str,
    pub command: String,
    pub line: usize,
    /// Run through `/bin/sh -c` (else split into words and run directly).
    pub shell: bool,
}

/// Commands a configuration runs: lighttpd `include_shell "CMD"`, supervisord's
/// `[program:x] command = CMD`. (supervisord's `[include] files = …` is an include.)
pub(crate) fn runs(text: &str) -> Vec<Run> {
    let supervisord = text.lines().any(|l| {
        l.trim_start().starts_with("[supervisord]") || l.trim_start().starts_with("[program:")
    });
    let mut section = String::new();
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("include_shell") {
            if let Some(cmd) = super::runtime::quoted(rest) {
                out.push(Run {
                    directive: "include_shell",
                    command: cmd,
                    line: n + 1,
                    shell: true,
                });
            }
            continue;
        }
        if supervisord {
            if line.starts_with('[') {
                section = line.trim_matches(['[', ']']).to_string();
                continue;
            }
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == "command"
                && (section.starts_with("program:") || section.starts_with("eventlistener:"))
            {
                out.push(Run {
                    directive: "command",
                    command: v.trim().to_string(),
                    line: n + 1,
                    shell: false,
                });
            }
        }
    }
    out
}

pub(crate) fn follow(cx: &mut Cx, path: &str, text: &str) -> Result<()> {
    // Only an active configuration runs its commands (see `active`): a package's default
    // config while the entrypoint names another, an example, a file a README names, is data.
    let active = super::active::is_active(cx, path);
    for r in runs(text) {
        if !active {
            let what = if r.shell {
                "/bin/sh".to_string()
            } else {
                r.command
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            };
            if what.starts_with('/')
                && let Some(p) = cx.fs.resolve(&what, true).ok().map(|r| r.path)
            {
                cx.withhold(
                    &p,
                    format!(
                        "run by {}:{} ({}), which is not an active configuration (no program is told to load it, none loads it by default, no active configuration includes it)",
                        display(path),
                        r.line,
                        r.directive
                    ),
                );
            }
            continue;
        }
        let argv: Vec<String> = if r.shell {
            vec!["/bin/sh".into(), "-c".into(), r.command.clone()]
        } else {
            r.command
                .split_whitespace()
                .map(|w| w.trim_matches(['"', '\'']).to_string())
                .collect()
        };
        if argv.iter().any(|a| a.contains("%(")) && !r.shell {
            // supervisord expansions (`%(ENV_X)s`): computed.
            cx.warn(format!(
                "{}:{}: runs a command with %(…)s expansions; it is not traced",
                display(path),
                r.line
            ));
            continue;
        }
        cx.exec(
            argv,
            vec![],
            vec![],
            1,
            Evidence::new(
                Why::Command,
                Some(path),
                format!(
                    "run by the configuration {}:{} ({})",
                    display(path),
                    r.line,
                    r.directive
                ),
            ),
            false,
        )?;
    }
    let incs = includes(text);
    if incs.is_empty() {
        return Ok(());
    }
    let mut prefixes: Option<Vec<String>> = None;
    for inc in incs {
        let pattern = if inc.dir {
            format!("{}/*", inc.target.trim_end_matches('/'))
        } else {
            inc.target.clone()
        };
        let matches = if pattern.starts_with('/') {
            cx.glob(&pattern)
        } else {
            // Relative: the including file's directory and its parents first, then the
            // directories compiled into the programs (nginx's prefix for `load_module`).
            let mut bases = Vec::new();
            let mut d = dir_of(path);
            loop {
                bases.push(d.clone());
                if d == "/" {
                    break;
                }
                d = d.rfind('/').map_or("/".to_string(), |i| {
                    if i == 0 {
                        "/".to_string()
                    } else {
                        d[..i].to_string()
                    }
                });
            }
            bases.extend(
                prefixes
                    .get_or_insert_with(|| super::kit::program_dirs(cx))
                    .iter()
                    .cloned(),
            );
            let mut found = Vec::new();
            for b in bases {
                if b == "/" {
                    continue;
                }
                found = cx.glob(&super::kit::join(&b, &pattern));
                if !found.is_empty() {
                    break;
                }
            }
            found
        };
        let from = display(path);
        let ev = Evidence::new(
            Why::ConfigInclude,
            Some(path),
            format!(
                "included by {from}:{} ({} {})",
                inc.line, inc.directive, inc.target
            ),
        );
        for m in matches {
            let Ok(r) = cx.fs.resolve(&m, true) else {
                continue;
            };
            match cx.fs.get(&r.path).map(|n| &n.kind) {
                Some(Kind::File { .. }) => {
                    if super::kit::is_secret(&m) {
                        cx.drop_path(&r.path, "included by a config, but it may hold secrets");
                        continue;
                    }
                    cx.keep_links(&r.symlinks, &r.path);
                    cx.keep(&r.path, ev.clone());
                }
                Some(Kind::Dir)
                    if cx.tree_bytes(&r.path, super::kit::MAX_DIR_BYTES)
                        <= super::kit::MAX_DIR_BYTES =>
                {
                    cx.keep_links(&r.symlinks, &r.path);
                    cx.keep_tree(&r.path, &ev);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_of_several_formats() {
        let text = "user www-data;\nload_module modules/ngx_http_echo_module.so;\ninclude /etc/nginx/modules-enabled/*.conf;\nhttp { include mime.types; default_type x; }\n# include /nope;\nIncludeOptional conf-enabled/*.conf\nLoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n!includedir /etc/mysql/conf.d/\nconf-dir=/etc/dnsmasq.d,.conf\ninclude \"$HOME/x\";\nextension=mbstring\nzend_extension = opcache.so\n";
        let got: Vec<(String, String, bool)> = includes(text)
            .into_iter()
            .map(|i| (i.directive, i.target, i.dir))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "load_module".into(),
                    "modules/ngx_http_echo_module.so".into(),
                    false
                ),
                (
                    "include".into(),
                    "/etc/nginx/modules-enabled/*.conf".into(),
                    false
                ),
                ("include".into(), "mime.types".into(), false),
                (
                    "IncludeOptional".into(),
                    "conf-enabled/*.conf".into(),
                    false
                ),
                (
                    "LoadModule".into(),
                    "/usr/lib/apache2/modules/mod_mpm_event.so".into(),
                    false
                ),
                ("!includedir".into(), "/etc/mysql/conf.d/".into(), true),
                ("conf-dir".into(), "/etc/dnsmasq.d".into(), true),
                ("extension".into(), "mbstring.so".into(), false),
                ("zend_extension".into(), "opcache.so".into(), false),
            ]
        );
    }
}

//! fontconfig, for a kept `libfontconfig.so`: its configuration (`/etc/fonts/fonts.conf`, or
//! `FONTCONFIG_FILE`/`FONTCONFIG_PATH` of the image's Env) and every file it includes
//! (`<include>` of a file, or of a directory whose `[0-9]*.conf` files are read), the font
//! directories it names (`<dir>`: which font a pattern picks is decided at run time, so the
//! whole directory is kept) and its caches (`<cachedir>`). Without its configuration the
//! library falls back to no fonts at all ("Cannot load default config file"), and programs that
//! render text (graphviz, ImageMagick, cairo, pango) then draw boxes or fail.
//!
//! `prefix="xdg"` and `~` entries name the run user's home, which the image does not carry.

use std::collections::BTreeSet;

use super::kit::{Cx, Evidence, Why, dir_of, join};
use crate::error::Result;

/// Most configuration files followed.
const MAX_FILES: usize = 500;

/// What one configuration file names.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Names {
    includes: Vec<String>,
    dirs: Vec<String>,
    cachedirs: Vec<String>,
}

/// The text of the elements `tag` (`<tag attrs>text</tag>`), skipping those whose attributes
/// make them relative to the user's home (`prefix="xdg"`, `prefix="~"`).
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        // `<dirs>` is not `<dir>`.
        if !rest.starts_with(['>', ' ', '\t', '\n', '\r']) {
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let attrs = &rest[..gt];
        if attrs.ends_with('/') {
            rest = &rest[gt + 1..];
            continue;
        }
        let body = &rest[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        let text = body[..end].trim();
        rest = &body[end + close.len()..];
        let home = attrs.contains("prefix=\"xdg\"")
            || attrs.contains("prefix='xdg'")
            || attrs.contains("prefix=\"~\"");
        if home || text.is_empty() || text.starts_with('~') || text.starts_with("<!") {
            continue;
        }
        out.push(text.to_string());
    }
    out
}

/// What a fontconfig file names (for the fuzzer too).
pub(crate) fn names(xml: &str) -> Names {
    // Comments may hold whole example elements.
    let mut clean = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        clean.push_str(&rest[..i]);
        match rest[i..].find("-->") {
            Some(j) => rest = &rest[i + j + 3..],
            None => {
                rest = "";
                break;
            }
        }
    }
    clean.push_str(rest);
    Names {
        includes: elements(&clean, "include"),
        dirs: elements(&clean, "dir"),
        cachedirs: elements(&clean, "cachedir"),
    }
}

/// Keep fontconfig's configuration, fonts and caches; `from` is the library.
pub(crate) fn keep(cx: &mut Cx, from: &str, why: &str) -> Result<()> {
    let ev = |d: String| Evidence::new(Why::LibcFeature, Some(from), d);
    let config_dir = cx
        .run
        .env_var("FONTCONFIG_PATH")
        .and_then(|p| p.split(':').next())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/etc/fonts")
        .trim_end_matches('/')
        .to_string();
    let first = cx
        .run
        .env_var("FONTCONFIG_FILE")
        .filter(|f| !f.is_empty())
        .map(|f| {
            if f.starts_with('/') {
                f.to_string()
            } else {
                join(&config_dir, f)
            }
        })
        .unwrap_or_else(|| join(&config_dir, "fonts.conf"));
    let mut todo = vec![(first, config_dir.clone())];
    let mut seen = BTreeSet::new();
    let mut trees = BTreeSet::new();
    while let Some((path, base)) = todo.pop() {
        if seen.len() >= MAX_FILES || !seen.insert(path.clone()) {
            continue;
        }
        let Some(canon) = cx.keep_if_file(&path, ev(format!("fontconfig configuration, {why}")))
        else {
            continue;
        };
        let Some(text) = cx.text(&canon)? else {
            continue;
        };
        let n = names(&text);
        let abs = |p: &str| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                join(&base, p)
            }
        };
        for inc in &n.includes {
            let target = abs(inc);
            match cx.fs.resolve(&target, true) {
                Ok(r) if cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) => {
                    // A directory: its `[0-9]*.conf` files, in order (symlinks into
                    // conf.avail are followed by keep_if_file).
                    cx.keep_links(&r.symlinks, &r.path);
                    let dir = crate::rootfs::display(&r.path);
                    for f in cx.glob(&format!("{dir}/[0-9]*.conf")) {
                        todo.push((f, dir.clone()));
                    }
                }
                Ok(_) => {
                    let b = dir_of(&target).to_string();
                    todo.push((target, b));
                }
                Err(_) => {}
            }
        }
        for d in n.dirs.iter().chain(&n.cachedirs) {
            let d = abs(d);
            if let Ok(r) = cx.fs.resolve(&d, true)
                && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            {
                cx.keep_links(&r.symlinks, &r.path);
                trees.insert(r.path);
            }
        }
    }
    for t in trees {
        let what = if t.contains("cache") {
            "fontconfig cache"
        } else {
            "fonts fontconfig lists"
        };
        cx.keep_tree(&t, &ev(format!("{what}, {why}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elements_of_a_fonts_conf_are_read() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
	<!-- Font directory list -->
	<dir>/usr/share/fonts</dir>
	<dir>/usr/local/share/fonts</dir>
	<dir prefix="xdg">fonts</dir>
	<!-- the following element will be removed in the future -->
	<dir>~/.fonts</dir>
	<!-- <dir>/opt/commented/out</dir> -->
	<include ignore_missing="yes">conf.d</include>
	<cachedir>/var/cache/fontconfig</cachedir>
	<cachedir prefix="xdg">fontconfig</cachedir>
	<cachedir>~/.fontconfig</cachedir>
	<dirs/>
</fontconfig>
"#;
        let n = names(xml);
        assert_eq!(n.dirs, vec!["/usr/share/fonts", "/usr/local/share/fonts"]);
        assert_eq!(n.includes, vec!["conf.d"]);
        assert_eq!(n.cachedirs, vec!["/var/cache/fontconfig"]);
    }
}

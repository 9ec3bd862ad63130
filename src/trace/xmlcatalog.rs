//! XML catalogs (OASIS, the format libxml2, xsltproc, xmllint and Java resolvers read): a kept
//! catalog keeps what its entries point at, resolved the way the catalog resolver does
//! (`file://` URIs, or paths relative to the catalog's own directory): the files of `uri`
//! (`public`, `system`, `uri` entries), the catalogs of `catalog` (`nextCatalog`,
//! `delegatePublic`, `delegateSystem`, `delegateURI`, read in turn) and the directories of
//! `rewritePrefix` (`rewriteSystem`, `rewriteURI`: which file is asked for is decided by the
//! document, so the tree is kept). Debian's `/etc/xml/catalog` reaches the DTDs of
//! `w3c-sgml-lib` this way, through relative `uri="REC-xhtml1-20020801/xhtml1-strict.dtd"`
//! entries no path reference sees.

use super::kit::{Cx, Evidence, Rule, Why, dir_of, join};
use crate::error::Result;
use crate::rootfs::display;

/// The namespace every OASIS XML catalog declares.
const NAMESPACE: &str = "urn:oasis:names:tc:entity:xmlns:xml:catalog";

/// Largest catalog read.
const MAX_CATALOG: u64 = 4 << 20;

pub(crate) struct XmlCatalogs;

/// (attribute, names a directory) pairs whose values are resolved.
const ATTRIBUTES: &[(&str, bool)] = &[("uri", false), ("catalog", false), ("rewritePrefix", true)];

/// The values of `attr="…"` (or `'…'`) in `text`, as written.
pub(crate) fn values<'a>(text: &'a str, attr: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for quote in ['"', '\''] {
        let needle = format!(" {attr}={quote}");
        let mut rest = text;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len()..];
            if let Some(end) = rest.find(quote) {
                out.push(&rest[..end]);
                rest = &rest[end..];
            }
        }
    }
    // Whitespace other than a space before the attribute (a newline in a long element).
    for sep in ['\n', '\t', '\r'] {
        let needle = format!("{sep}{attr}=\"");
        let mut rest = text;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len()..];
            if let Some(end) = rest.find('"') {
                out.push(&rest[..end]);
                rest = &rest[end..];
            }
        }
    }
    out
}

/// A catalog entry's target as an absolute path in the image, if it is a local one.
pub(crate) fn local(value: &str, base: &str) -> Option<String> {
    let v = value.trim();
    let path = if let Some(p) = v.strip_prefix("file://") {
        // file:///usr/share/… (an empty authority) or file://localhost/…
        p.strip_prefix("localhost").unwrap_or(p).to_string()
    } else if v.contains("://") || v.starts_with("urn:") || v.is_empty() {
        return None;
    } else if v.starts_with('/') {
        v.to_string()
    } else {
        join(base, v)
    };
    let path = path.replace("%20", " ");
    path.starts_with('/').then_some(path)
}

impl Rule for XmlCatalogs {
    fn file(&mut self, cx: &mut Cx, path: &str) -> Result<()> {
        let base_name = path.rsplit('/').next().unwrap_or(path);
        if !(base_name.ends_with(".xml") || base_name == "catalog") {
            return Ok(());
        }
        if cx.fs.get(path).map_or(0, |n| n.size()) > MAX_CATALOG {
            return Ok(());
        }
        let Some(text) = cx.text(path)? else {
            return Ok(());
        };
        if !text.contains(NAMESPACE) {
            return Ok(());
        }
        let shown = display(path);
        let base = dir_of(&shown).to_string();
        for (attr, dir) in ATTRIBUTES {
            let mut targets: Vec<String> = values(&text, attr)
                .into_iter()
                .filter_map(|v| local(v, &base))
                .collect();
            targets.sort();
            targets.dedup();
            for t in targets {
                let ev = Evidence::new(
                    Why::ConfigInclude,
                    Some(path),
                    format!("{attr}=\"…\" entry of the XML catalog {shown}"),
                );
                if *dir {
                    if let Ok(r) = cx.fs.resolve(&t, true)
                        && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
                        && !super::kit::is_system_dir(&r.path)
                    {
                        cx.keep_links(&r.symlinks, &r.path);
                        cx.keep_tree(&r.path, &ev);
                    }
                } else {
                    cx.keep_if_file(&t, ev);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_entries_resolve_like_the_resolver() {
        let text = r#"<catalog xmlns="urn:oasis:names:tc:entity:xmlns:xml:catalog">
<public publicId="-//W3C//DTD XHTML 1.0 Strict//EN" uri="REC-xhtml1/xhtml1-strict.dtd"/>
<system systemId="http://www.w3.org/x.dtd" uri='file:///usr/share/xml/x.dtd'/>
<delegatePublic publicIdStartString="-//W3C//DTD MathML"
  catalog="file:///etc/xml/w3c-sgml-lib.xml"/>
<rewriteSystem systemIdStartString="http://docbook.sourceforge.net/release/xsl/current/" rewritePrefix="/usr/share/xml/docbook/stylesheet/docbook-xsl/"/>
<uri name="http://example.org/a" uri="http://example.org/remote"/>
</catalog>"#;
        let base = "/usr/share/xml/w3c-sgml-lib/schema/dtd";
        let uris: Vec<String> = values(text, "uri")
            .into_iter()
            .filter_map(|v| local(v, base))
            .collect();
        assert_eq!(
            uris,
            vec![
                "/usr/share/xml/w3c-sgml-lib/schema/dtd/REC-xhtml1/xhtml1-strict.dtd",
                "/usr/share/xml/x.dtd",
            ]
        );
        let cats: Vec<String> = values(text, "catalog")
            .into_iter()
            .filter_map(|v| local(v, base))
            .collect();
        assert_eq!(cats, vec!["/etc/xml/w3c-sgml-lib.xml"]);
        assert_eq!(
            values(text, "rewritePrefix"),
            vec!["/usr/share/xml/docbook/stylesheet/docbook-xsl/"]
        );
    }
}

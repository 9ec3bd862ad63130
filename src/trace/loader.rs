//! The loader rule: each loaded object's interpreter, needed libraries and `.note.dlopen`
//! sonames, searched by the kit's loader ([`super::kit::ld`]).

use super::kit::{Cx, Rule, Work};
use crate::error::Result;

/// The rule: each loaded object's interpreter, needed libraries and `.note.dlopen` sonames.
pub(crate) struct Loader;

impl Rule for Loader {
    fn wanted(&mut self, cx: &mut Cx, work: &[Work]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for w in work {
            match w {
                Work::Object(i) => out.extend(cx.wanted_by(*i)?),
                Work::Exec(e) => out.push(e.path.clone()),
                Work::File(_) => {}
            }
        }
        Ok(out)
    }

    fn object(&mut self, cx: &mut Cx, idx: usize) -> Result<()> {
        cx.process(idx)
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        // A kept ELF file that nothing executes or loads by name (a module a config names, an
        // extension module, a plugin in a kept directory) is loaded by dlopen: its own needs
        // are traced, and what it misses is a warning.
        // Only what could be code: executable files and shared objects (by name), read in
        // one pass.
        let kept: Vec<String> = cx
            .out
            .files
            .keys()
            .filter(|p| cx.ld.object_at(p).is_none() && !cx.out.programs.contains(*p))
            .filter(|p| match cx.fs.get(p) {
                Some(
                    n @ crate::rootfs::Node {
                        kind: crate::rootfs::Kind::File { size, .. },
                        ..
                    },
                ) => *size >= 64 && (n.mode & 0o111 != 0 || p.contains(".so")),
                _ => false,
            })
            .cloned()
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        cx.contents.prefetch(cx.fs, &kept)?;
        for p in kept {
            if let Some(f) = cx.elf(&p)?
                && f.dynamic
            {
                cx.add_dlopened(&p, f, None);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{exe, found, image, lib};
    use super::super::{Libc, RunConfig, Trace, TraceOptions, trace};
    use crate::elf::{self, ElfFacts};
    use crate::error::{Error, Result};

    const LDSO: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("/lib64", "l:usr/lib64"),
            (
                "/usr/lib64/ld-linux-x86-64.so.2",
                "l:../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            (LDSO, "elf"),
        ]
    }

    fn run(
        entries: Vec<(&str, &str)>,
        facts: Vec<(&str, ElfFacts)>,
        argv0: &str,
        env: &[&str],
    ) -> Result<Trace> {
        let mut facts = facts;
        facts.push((LDSO, lib("ld-linux-x86-64.so.2")));
        let (fs, mut c) = image(&entries, facts);
        let run = RunConfig {
            entrypoint: vec![argv0.into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        trace(&fs, &mut c, &run, &TraceOptions::default())
    }

    #[test]
    fn rpath_is_inherited_but_ignored_with_runpath() {
        // app (RPATH /r) → liba (no paths) → libb: found through app's RPATH (inherited).
        let mut app = exe(&["liba.so"]);
        app.rpath = vec!["/r".into()];
        let mut liba = lib("liba.so");
        liba.needed = vec!["libb.so".into()];
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/r/liba.so", "elf"),
            ("/r/libb.so", "elf"),
            ("/usr/lib/libb.so", "elf"),
        ]);
        let t = run(
            e.clone(),
            vec![
                ("/app", app.clone()),
                ("/r/liba.so", liba.clone()),
                ("/r/libb.so", lib("libb.so")),
                ("/usr/lib/libb.so", lib("libb.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libb.so"), "/r/libb.so");

        // The same, but liba has a DT_RUNPATH: then no RPATH is used for its deps, and libb
        // comes from the default dirs.
        liba.runpath = vec!["/nowhere".into()];
        let t = run(
            e,
            vec![
                ("/app", app),
                ("/r/liba.so", liba),
                ("/r/libb.so", lib("libb.so")),
                ("/usr/lib/libb.so", lib("libb.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libb.so"), "/usr/lib/libb.so");
    }

    #[test]
    fn runpath_applies_to_direct_deps_only_and_origin_expands() {
        // app RUNPATH $ORIGIN/../lib → liba; liba needs libb, which exists only in ../lib:
        // RUNPATH is not inherited, so libb must not be found there.
        let mut app = exe(&["liba.so"]);
        app.runpath = vec!["$ORIGIN/../lib".into()];
        let mut liba = lib("liba.so");
        liba.needed = vec!["libb.so".into()];
        let mut e = base();
        e.extend([
            ("/opt/x/bin/app", "elf"),
            ("/opt/x/lib/liba.so", "elf"),
            ("/opt/x/lib/libb.so", "elf"),
        ]);
        let facts = vec![
            ("/opt/x/bin/app", app.clone()),
            ("/opt/x/lib/liba.so", liba.clone()),
            ("/opt/x/lib/libb.so", lib("libb.so")),
        ];
        let err = run(e.clone(), facts.clone(), "/opt/x/bin/app", &[]).unwrap_err();
        assert!(
            matches!(err, Error::MissingLibrary { ref name, .. } if name == "libb.so"),
            "{err}"
        );
        // With LD_LIBRARY_PATH it is found.
        let t = run(e, facts, "/opt/x/bin/app", &["LD_LIBRARY_PATH=/opt/x/lib"]).unwrap();
        assert_eq!(found(&t, "liba.so"), "/opt/x/lib/liba.so");
        assert_eq!(found(&t, "libb.so"), "/opt/x/lib/libb.so");
    }

    #[test]
    fn order_rpath_ldpath_runpath_conf_default_and_class_check() {
        // LD_LIBRARY_PATH beats RUNPATH; RUNPATH beats ld.so.conf; a 32-bit candidate is skipped.
        let mut app = exe(&["libz.so.1", "libq.so"]);
        app.runpath = vec!["/rp".into()];
        let mut z32 = lib("libz.so.1");
        z32.is_64 = false;
        z32.machine = elf::EM_386;
        let mut e = base();
        e.extend([
            ("/usr/bin/app", "elf"),
            ("/ld/libz.so.1", "elf"),
            ("/rp/libz.so.1", "elf"),
            ("/rp/libq.so", "elf"),
            ("/etc/ld.so.conf", "t:include /etc/ld.so.conf.d/*.conf\n"),
            ("/etc/ld.so.conf.d/a.conf", "t:/conf\n"),
            ("/conf/libq.so", "elf"),
            ("/conf/libw.so", "elf"),
        ]);
        let facts = vec![
            ("/usr/bin/app", app),
            ("/ld/libz.so.1", z32),
            ("/rp/libz.so.1", lib("libz.so.1")),
            ("/rp/libq.so", lib("libq.so")),
            ("/conf/libq.so", lib("libq.so")),
        ];
        let t = run(e, facts, "app", &["LD_LIBRARY_PATH=/ld", "PATH=/usr/bin"]).unwrap();
        assert_eq!(t.entrypoint, "usr/bin/app");
        assert_eq!(
            found(&t, "libz.so.1"),
            "/rp/libz.so.1",
            "32-bit one in LD_LIBRARY_PATH is skipped"
        );
        assert_eq!(found(&t, "libq.so"), "/rp/libq.so");
        assert!(t.symlinks.contains_key("lib64"));
        assert!(
            t.files
                .contains_key("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
    }

    #[test]
    fn ldconf_dirs_are_recorded_for_the_cache_and_hwcaps_kept() {
        let app = exe(&["libp.so.1", "libm.so.6"]);
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/etc/ld.so.conf", "t:/usr/local/lib\n"),
            ("/usr/local/lib/libp.so.1", "l:libp.so.1.0"),
            ("/usr/local/lib/libp.so.1.0", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libm.so.6", "elf"),
            (
                "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6",
                "elf",
            ),
        ]);
        let facts = vec![
            ("/app", app),
            ("/usr/local/lib/libp.so.1.0", lib("libp.so.1")),
            ("/usr/lib/x86_64-linux-gnu/libm.so.6", lib("libm.so.6")),
            (
                "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6",
                lib("libm.so.6"),
            ),
        ];
        let t = run(e, facts, "/app", &[]).unwrap();
        assert_eq!(found(&t, "libp.so.1"), "/usr/local/lib/libp.so.1.0");
        assert!(t.symlinks.contains_key("usr/local/lib/libp.so.1"));
        assert_eq!(
            t.ldconf_libs,
            vec![(
                "libp.so.1".to_string(),
                "/usr/local/lib/libp.so.1".to_string()
            )]
        );
        assert!(t.files.contains_key("usr/lib/x86_64-linux-gnu/libm.so.6"));
        assert!(
            t.files
                .contains_key("usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6")
        );
    }

    #[test]
    fn scripts_env_and_errors() {
        let mut e = base();
        e.extend([
            ("/usr/bin/run.sh", "x:#!/usr/bin/env -S jq -f\n."),
            ("/usr/bin/env", "elf"),
            ("/usr/bin/jq", "elf"),
        ]);
        let facts = vec![("/usr/bin/env", exe(&[])), ("/usr/bin/jq", exe(&[]))];
        let t = run(e.clone(), facts.clone(), "run.sh", &[]).unwrap();
        assert!(t.files.contains_key("usr/bin/run.sh"));
        assert!(t.files.contains_key("usr/bin/env"));
        assert!(t.files.contains_key("usr/bin/jq"));
        let err = run(e.clone(), facts.clone(), "/nope", &[]).unwrap_err();
        assert!(err.to_string().contains("/nope does not exist"), "{err}");
        let err = run(e.clone(), facts.clone(), "nope", &[]).unwrap_err();
        assert!(err.to_string().contains("PATH"), "{err}");
        // Missing library names the object and the soname.
        let mut facts2 = facts.clone();
        facts2.push(("/usr/bin/jq", exe(&["libjq.so.1"])));
        facts2.remove(1);
        let err = run(e, facts2, "/usr/bin/jq", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/usr/bin/jq") && msg.contains("libjq.so.1"),
            "{msg}"
        );
    }

    #[test]
    fn library_origin_is_the_directory_it_was_opened_from() {
        // /a/libfoo.so.1 -> ../b/libfoo.so.1.0 with RUNPATH $ORIGIN/dep: glibc looks in /a/dep
        // (the directory of the path it opened), not /b/dep.
        let mut app = exe(&["libfoo.so.1"]);
        app.runpath = vec!["/a".into()];
        let mut foo = lib("libfoo.so.1");
        foo.runpath = vec!["$ORIGIN/dep".into()];
        foo.needed = vec!["libdep.so".into()];
        let mut e = base();
        e.extend([
            ("/app", "elf"),
            ("/a/libfoo.so.1", "l:../b/libfoo.so.1.0"),
            ("/b/libfoo.so.1.0", "elf"),
            ("/a/dep/libdep.so", "elf"),
        ]);
        let t = run(
            e,
            vec![
                ("/app", app),
                ("/b/libfoo.so.1.0", foo),
                ("/a/dep/libdep.so", lib("libdep.so")),
            ],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libdep.so"), "/a/dep/libdep.so");
    }

    #[test]
    fn ld_so_conf_include_cycles_terminate() {
        let app = exe(&["libq.so"]);
        let mut e = base();
        let conf = format!("t:{}/q\n", "include /etc/ld.so.conf\n".repeat(10));
        e.extend([("/app", "elf"), ("/q/libq.so", "elf")]);
        e.push(("/etc/ld.so.conf", Box::leak(conf.into_boxed_str())));
        let t = run(
            e,
            vec![("/app", app), ("/q/libq.so", lib("libq.so"))],
            "/app",
            &[],
        )
        .unwrap();
        assert_eq!(found(&t, "libq.so"), "/q/libq.so");
    }

    #[test]
    fn symlink_escape_is_an_error() {
        let mut e = base();
        e.extend([("/app", "l:../../../host/bin/app")]);
        let err = run(e, vec![], "/app", &[]).unwrap_err();
        assert!(err.to_string().contains("outside the image root"), "{err}");
    }

    #[test]
    fn musl_rules() {
        let mut app = exe(&["libc.musl-x86_64.so.1", "libz.so.1"]);
        app.interpreter = Some("/lib/ld-musl-x86_64.so.1".into());
        let mut e = vec![
            ("/lib/ld-musl-x86_64.so.1", "elf"),
            ("/etc/ld-musl-x86_64.path", "t:/opt/lib\n/lib"),
            ("/opt/lib/libz.so.1", "elf"),
            ("/usr/lib/libz.so.1", "elf"),
            ("/bin/app", "elf"),
        ];
        e.sort();
        let (fs, mut c) = image(
            &e,
            vec![
                ("/lib/ld-musl-x86_64.so.1", lib("libc.musl-x86_64.so.1")),
                ("/opt/lib/libz.so.1", lib("libz.so.1")),
                ("/usr/lib/libz.so.1", lib("libz.so.1")),
                ("/bin/app", app),
            ],
        );
        let run = RunConfig {
            entrypoint: vec!["/bin/app".into()],
            ..Default::default()
        };
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/opt/lib/libz.so.1");
        // musl: RUNPATH, when present, replaces RPATH (glibc would ignore RPATH the same way,
        // but musl also inherits it).
        let mut app2 = c.facts["bin/app"].clone();
        app2.rpath = vec!["/usr/lib".into()];
        app2.runpath = vec!["/opt/lib".into()];
        c.facts.insert("bin/app".into(), app2.clone());
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/opt/lib/libz.so.1");
        app2.runpath = vec![];
        c.facts.insert("bin/app".into(), app2);
        let t = trace(&fs, &mut c, &run, &TraceOptions::default()).unwrap();
        assert_eq!(found(&t, "libz.so.1"), "/usr/lib/libz.so.1");
        assert!(matches!(t.libc, Some(Libc::Musl { .. })));
        assert!(t.files.contains_key("etc/ld-musl-x86_64.path"));
    }
}

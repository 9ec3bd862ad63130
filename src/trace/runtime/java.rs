//! Java, found from the `java` launcher: `JAVA_HOME` is the directory above the launcher's
//! real location (`/usr/lib/jvm/java-17-openjdk-amd64/bin/java`, `/opt/java/openjdk/bin/java`).
//! Kept: `JAVA_HOME/lib` (the `modules` image, `libjvm.so` and the native libraries, loaded by
//! the launcher at run time), `conf/` and `release`, minus sources and demos; the application:
//! `-jar FILE` and the jars of its manifest's `Class-Path`, `-cp`/`-classpath`/`CLASSPATH`
//! entries (directories whole, `dir/*` every jar), `--module-path` entries, and `-javaagent`
//! jars. `JAVA_TOOL_OPTIONS` and `JDK_JAVA_OPTIONS` are read the same way.

use std::io::Read;

use crate::error::Result;
use crate::rootfs::{Kind, display};
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Why, abs_in, join};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Java",
    names: &["java"],
    library: Some("libjvm"),
    embedded: false,
    extensions: &[],
    takes_value: &["-cp", "-classpath", "--class-path", "-p", "--module-path"],
    code: &[],
    script_option: &["-jar"],
};

/// Left out of JAVA_HOME/lib: sources, the symbol file, demos.
const SKIP: &[&str] = &["src.zip", "ct.sym", "demo", "sample"];
/// Jars followed through manifests.
const MAX_JARS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Java {
    homes: Vec<String>,
}

impl Rule for Java {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        if a0 != "java" && file != "java" {
            return Ok(());
        }
        if cx.elf(&e.path)?.is_none() {
            return Ok(());
        }
        let Some((bin, _)) = e.path.rsplit_once('/') else {
            return Ok(());
        };
        let home = bin
            .rsplit_once('/')
            .map_or(String::new(), |(h, _)| h.to_string());
        let ev = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
        if !self.homes.contains(&home) {
            self.homes.push(home.clone());
            cx.claim(&home);
            let disp = display(&home);
            for sub in ["lib", "conf", "release", "jre/lib"] {
                let Ok(r) = cx.fs.resolve(&join(&disp, sub), true) else {
                    continue;
                };
                match cx.fs.get(&r.path).map(|n| n.kind.clone()) {
                    Some(Kind::Dir) => {
                        let ev = ev(format!("Java runtime ({disp}/{sub})"));
                        cx.keep_links(&r.symlinks, &r.path);
                        cx.keep(&r.path, ev.clone());
                        let entries = cx.entries_under(&r.path, |rel| {
                            SKIP.iter().any(|s| crate::trace::kit::under(rel, s))
                        });
                        for (k, kind) in entries {
                            match kind {
                                Kind::File { .. } | Kind::Dir => {
                                    cx.keep(&k, ev.clone());
                                }
                                Kind::Symlink(_) => {
                                    crate::trace::kit::add_evidence(
                                        cx.out.symlinks.entry(k.clone()).or_default(),
                                        ev.clone(),
                                    );
                                    // conf/ and lib/security link into /etc: keep what they lead to.
                                    if let Ok(t) = cx.fs.resolve(&k, true) {
                                        match cx.fs.get(&t.path).map(|n| n.kind.clone()) {
                                            Some(Kind::File { .. }) => {
                                                cx.keep_links(&t.symlinks, &t.path);
                                                cx.keep(&t.path, ev.clone());
                                            }
                                            Some(Kind::Dir)
                                                if cx.tree_bytes(&t.path, 16 << 20) <= 16 << 20 =>
                                            {
                                                cx.keep_links(&t.symlinks, &t.path);
                                                cx.keep_tree(&t.path, &ev);
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Some(Kind::File { .. }) => {
                        cx.keep_links(&r.symlinks, &r.path);
                        cx.keep(&r.path, ev(format!("Java runtime ({disp}/{sub})")));
                    }
                    _ => {}
                }
            }
        }
        // The application: options from the environment, then the command line.
        let mut args: Vec<Option<String>> = Vec::new();
        for k in ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"] {
            if let Some(v) = cx.run.env_var(k) {
                args.extend(v.split_whitespace().map(|s| Some(s.to_string())));
            }
        }
        args.extend((1..e.argv.len()).map(|i| e.arg(i).map(str::to_string)));
        let mut cp: Vec<String> = cx
            .run
            .env_var("CLASSPATH")
            .map(|v| v.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        let mut jars: Vec<String> = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let Some(a) = args[i].clone() else {
                i += 1;
                continue;
            };
            let next = args.get(i + 1).cloned().flatten();
            match a.as_str() {
                "-jar" => {
                    if let Some(j) = next {
                        jars.push(j);
                    }
                    break; // what follows belongs to the application
                }
                "-cp"
                | "-classpath"
                | "--class-path"
                | "-p"
                | "--module-path"
                | "--upgrade-module-path" => {
                    if let Some(v) = next {
                        cp.extend(v.split(':').map(str::to_string));
                    }
                    i += 2;
                    continue;
                }
                "--add-opens" | "--add-exports" | "--add-reads" | "--add-modules"
                | "--limit-modules" | "--patch-module" | "-m" | "--module" => {
                    i += 2;
                    continue;
                }
                _ => {}
            }
            if let Some(j) = a.strip_prefix("-javaagent:") {
                jars.push(j.split('=').next().unwrap_or(j).to_string());
            } else if let Some(v) = a
                .strip_prefix("--class-path=")
                .or_else(|| a.strip_prefix("--module-path="))
            {
                cp.extend(v.split(':').map(str::to_string));
            } else if !a.starts_with('-') {
                break; // the main class
            }
            i += 1;
        }
        let app = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
        for entry in cp.into_iter().filter(|c| !c.is_empty()) {
            let p = abs_in(cx.run.cwd(), &entry);
            if let Some(dir) = p.strip_suffix("/*") {
                for j in cx
                    .glob(&format!("{dir}/*.jar"))
                    .into_iter()
                    .chain(cx.glob(&format!("{dir}/*.JAR")))
                {
                    jars.push(j);
                }
                continue;
            }
            match cx.fs.resolve(&p, true) {
                Ok(r) if cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) => {
                    cx.keep_links(&r.symlinks, &r.path);
                    cx.keep_tree(
                        &r.path,
                        &app(format!("class path entry of {}", display(&e.path))),
                    );
                }
                Ok(_) => jars.push(p),
                Err(_) => cx.warn(format!(
                    "{}: class path entry {entry} is not in the image",
                    display(&e.path)
                )),
            }
        }
        // Jars, and the jars their manifests' Class-Path names, relative to them.
        let mut seen = std::collections::HashSet::new();
        while let Some(j) = jars.pop() {
            if seen.len() > MAX_JARS {
                break;
            }
            let p = abs_in(cx.run.cwd(), &j);
            let Some((canon, links)) = cx.resolve_file(&p)? else {
                cx.warn(format!(
                    "{}: runs the jar {j}, which is not in the image",
                    display(&e.path)
                ));
                continue;
            };
            if !seen.insert(canon.clone()) {
                continue;
            }
            cx.keep_links(&links, &canon);
            cx.keep(
                &canon,
                app(format!("Java archive run by {}", display(&e.path))),
            );
            let dir = display(canon.rsplit_once('/').map_or("", |(d, _)| d));
            for c in manifest_class_path(cx, &canon) {
                let c = c.strip_prefix("file:").unwrap_or(&c).to_string();
                jars.push(abs_in(&dir, &c));
            }
        }
        Ok(())
    }
}

/// The `Class-Path` entries of a jar's `META-INF/MANIFEST.MF` (continuation lines joined).
/// A jar that cannot be read gives none.
fn manifest_class_path(cx: &mut Cx, jar: &str) -> Vec<String> {
    let Ok(local) = cx.local_path(jar) else {
        return vec![];
    };
    let Ok(f) = std::fs::File::open(&local) else {
        return vec![];
    };
    let Ok(mut z) = zip::ZipArchive::new(f) else {
        return vec![];
    };
    let Ok(entry) = z.by_name("META-INF/MANIFEST.MF") else {
        return vec![];
    };
    let mut text = String::new();
    if entry.take(1 << 20).read_to_string(&mut text).is_err() {
        return vec![];
    }
    // Continuation lines start with one space.
    let joined = text.replace("\r\n", "\n").replace("\n ", "");
    joined
        .lines()
        .find_map(|l| l.strip_prefix("Class-Path:"))
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

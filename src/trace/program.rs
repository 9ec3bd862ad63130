//! How a program runs: an ELF executable (the root of a process, traced by the loader) or a
//! `#!` script (its interpreter runs it, as the kernel does); and the forms of programs whose
//! job is to run another command: `env [-i] [-u NAME] [NAME=VALUE]… CMD`, init and privilege
//! wrappers (`tini`, `dumb-init`, `catatonit`, `gosu`, `su-exec`, `setpriv`, `chpst`,
//! `s6-setuidgid`, `runuser`), and the coreutils that run a command (`nice`, `nohup`,
//! `timeout`, `stdbuf`, `setsid`, `taskset`, `ionice`, `chrt`, `time`, `xargs`, `find -exec`),
//! `busybox APPLET`, and `ld.so PROGRAM`. The wrapped command is traced as a program too.

use super::kit::{Cx, Evidence, Exec, Rule, Why};
use crate::error::{Error, Result};
use crate::rootfs::display;

pub(crate) struct Programs;

/// A program that runs the command given on its command line.
struct Wrapper {
    names: &'static [&'static str],
    /// Options that take a value in the next argument (unless given as `--opt=value`).
    with_value: &'static [&'static str],
    /// Positional arguments before the command (gosu's user, timeout's duration).
    positional: usize,
}

const WRAPPERS: &[Wrapper] = &[
    Wrapper {
        names: &["tini", "tini-static", "docker-init"],
        with_value: &["-p", "-e"],
        positional: 0,
    },
    Wrapper {
        names: &["dumb-init"],
        with_value: &["-r", "--rewrite"],
        positional: 0,
    },
    Wrapper {
        names: &["catatonit"],
        with_value: &[],
        positional: 0,
    },
    Wrapper {
        names: &["gosu", "su-exec", "s6-setuidgid", "setuidgid"],
        with_value: &[],
        positional: 1,
    },
    Wrapper {
        names: &["setpriv"],
        with_value: &[
            "--reuid",
            "--regid",
            "--groups",
            "--inh-caps",
            "--ambient-caps",
            "--bounding-set",
            "--securebits",
            "--pdeathsig",
            "--selinux-label",
            "--apparmor-profile",
            "--landlock-access",
            "--landlock-rule",
        ],
        positional: 0,
    },
    Wrapper {
        names: &["chpst"],
        with_value: &[
            "-u", "-U", "-b", "-e", "-/", "-C", "-n", "-l", "-L", "-m", "-d", "-o", "-p", "-f",
            "-c", "-r", "-t",
        ],
        positional: 0,
    },
    Wrapper {
        names: &["runuser"],
        with_value: &[
            "-u",
            "--user",
            "-g",
            "--group",
            "-G",
            "--supp-group",
            "-s",
            "--shell",
            "-w",
        ],
        positional: 0,
    },
    Wrapper {
        names: &["nice"],
        with_value: &["-n", "--adjustment"],
        positional: 0,
    },
    Wrapper {
        names: &["nohup", "setsid", "catchsegv"],
        with_value: &[],
        positional: 0,
    },
    Wrapper {
        names: &["timeout"],
        with_value: &["-k", "--kill-after", "-s", "--signal"],
        positional: 1,
    },
    Wrapper {
        names: &["stdbuf"],
        with_value: &["-i", "-o", "-e", "--input", "--output", "--error"],
        positional: 0,
    },
    Wrapper {
        names: &["taskset", "chrt"],
        with_value: &[],
        positional: 1,
    },
    Wrapper {
        names: &["ionice"],
        with_value: &["-c", "--class", "-n", "--classdata"],
        positional: 0,
    },
    Wrapper {
        names: &["time"],
        with_value: &["-f", "--format", "-o", "--output"],
        positional: 0,
    },
    Wrapper {
        names: &["xargs"],
        with_value: &[
            "-a",
            "--arg-file",
            "-d",
            "--delimiter",
            "-E",
            "-I",
            "-L",
            "-n",
            "--max-args",
            "-P",
            "--max-procs",
            "-s",
            "--max-chars",
            "--process-slot-var",
        ],
        positional: 0,
    },
];

impl Rule for Programs {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        if let Some(facts) = cx.elf(&e.path)? {
            cx.add_program_object(e, facts);
        } else {
            script(cx, e)?;
            return Ok(());
        }
        let (a0, file) = e.names();
        let name = if wrapper_for(a0).is_some() || a0 == "env" || a0 == "busybox" {
            a0
        } else {
            file
        };
        if name == "env" {
            return env(cx, e);
        }
        if name == "busybox" && a0 == "busybox" {
            // `busybox APPLET args`: the applet is busybox itself, run under that name.
            if e.argv.len() > 1 && e.arg(1).is_some() {
                let (argv, unknown) = e.tail(1);
                let applet = Exec {
                    path: e.path.clone(),
                    argv,
                    unknown,
                    env: e.env.clone(),
                    depth: e.depth + 1,
                    hard: e.hard,
                };
                cx.requeue(applet);
            }
            return Ok(());
        }
        if name == "find" {
            return find_exec(cx, e);
        }
        if name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so" {
            return ld_so(cx, e);
        }
        if let Some(w) = wrapper_for(name) {
            return wrapped(cx, e, w, name);
        }
        Ok(())
    }
}

fn wrapper_for(name: &str) -> Option<&'static Wrapper> {
    WRAPPERS.iter().find(|w| w.names.contains(&name))
}

/// A `#!` script: its interpreter runs it with the script's path as an argument.
fn script(cx: &mut Cx, e: &Exec) -> Result<()> {
    let head = cx.contents.head(cx.fs, &e.path, 4096)?;
    if !head.starts_with(b"#!") {
        if e.hard {
            return Err(Error::Entrypoint(format!(
                "{} is neither an ELF executable nor a #! script",
                display(&e.path)
            )));
        }
        // A shell runs an executable text file without `#!` itself (execve fails with
        // ENOEXEC and the shell reads it as a script).
        let mut argv = vec!["/bin/sh".to_string(), display(&e.path)];
        argv.extend(e.argv.iter().skip(1).cloned());
        let unknown = e
            .unknown
            .iter()
            .filter(|&&u| u > 0)
            .map(|u| u + 1)
            .collect();
        cx.exec_child(
            e,
            (argv, unknown),
            Why::Interpreter,
            format!("shell for {} (no #! line)", display(&e.path)),
            false,
        )?;
        return Ok(());
    }
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return fail(
            cx,
            e,
            format!("{}: #! line longer than 4096 bytes", display(&e.path)),
        );
    };
    let line = String::from_utf8_lossy(&head[2..line_end])
        .trim()
        .to_string();
    let mut parts = line.splitn(2, [' ', '\t']);
    let interp = parts.next().unwrap_or("").to_string();
    let arg = parts.next().unwrap_or("").trim().to_string();
    if interp.is_empty() {
        return fail(cx, e, format!("{}: empty #! line", display(&e.path)));
    }
    if !interp.starts_with('/') {
        return fail(
            cx,
            e,
            format!(
                "{}: its #! interpreter {interp} is not an absolute path",
                display(&e.path)
            ),
        );
    }
    if cx.resolve_file(&interp)?.is_none() {
        return fail(
            cx,
            e,
            format!(
                "{}: its #! interpreter {interp} is not in the image",
                display(&e.path)
            ),
        );
    }
    // The kernel's argv: interpreter, the optional argument (one word), the script's path,
    // then the script's own arguments.
    let mut argv = vec![interp.clone()];
    if !arg.is_empty() {
        argv.push(arg);
    }
    let shift = argv.len();
    argv.push(display(&e.path));
    argv.extend(e.argv.iter().skip(1).cloned());
    let unknown = e
        .unknown
        .iter()
        .filter(|&&u| u > 0)
        .map(|u| u + shift)
        .collect();
    if e.depth > 4 && e.hard {
        return Err(Error::Entrypoint(format!(
            "{}: too many nested #! interpreters",
            display(&e.path)
        )));
    }
    cx.exec_child(
        e,
        (argv, unknown),
        Why::Interpreter,
        format!("#! interpreter of {}", display(&e.path)),
        e.hard,
    )?;
    Ok(())
}

/// An error for the entrypoint's own chain, a warning for what a script runs.
fn fail(cx: &mut Cx, e: &Exec, msg: String) -> Result<()> {
    if e.hard {
        Err(Error::Entrypoint(msg))
    } else {
        cx.warn(msg);
        Ok(())
    }
}

/// Split a `-S` string (env's argument splitting) into words.
fn split_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// `env [-i] [-0] [-u NAME] [-C DIR] [-S STRING] [NAME=VALUE]… [--] CMD ARGS`.
fn env(cx: &mut Cx, e: &Exec) -> Result<()> {
    let mut args: Vec<Option<String>> = (1..e.argv.len())
        .map(|i| e.arg(i).map(str::to_string))
        .collect();
    let mut env = e.env.clone();
    let mut i = 0;
    while i < args.len() {
        let Some(a) = args[i].clone() else {
            cx.question(format!(
                "{}: env runs a command computed at run time; it is not traced",
                display(&e.path)
            ));
            return Ok(());
        };
        if a == "--" {
            i += 1;
            break;
        }
        if let Some(rest) = a
            .strip_prefix("-S")
            .or_else(|| a.strip_prefix("--split-string"))
        {
            let rest = rest.trim_start_matches('=').trim();
            let (words, next) = if rest.is_empty() {
                (
                    args.get(i + 1)
                        .cloned()
                        .flatten()
                        .map(|s| split_words(&s))
                        .unwrap_or_default(),
                    i + 2,
                )
            } else {
                (split_words(rest), i + 1)
            };
            let mut new: Vec<Option<String>> = words.into_iter().map(Some).collect();
            new.extend(args.drain(next.min(args.len())..));
            args = new;
            i = 0;
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            i += if matches!(a.as_str(), "-u" | "--unset" | "-C" | "--chdir") {
                2
            } else {
                1
            };
            continue;
        }
        if let Some((k, v)) = a.split_once('=')
            && !k.is_empty()
        {
            env.push((k.to_string(), v.to_string()));
            i += 1;
            continue;
        }
        break;
    }
    if i >= args.len() {
        return Ok(());
    }
    let unknown = args[i..]
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_none())
        .map(|(k, _)| k)
        .collect();
    let argv = args[i..]
        .iter()
        .map(|a| a.clone().unwrap_or_default())
        .collect();
    cx.exec(
        argv,
        unknown,
        env,
        e.depth + 1,
        Evidence::new(
            Why::Command,
            Some(&e.path),
            format!("run by {}", display(&e.path)),
        ),
        e.hard,
    )?;
    Ok(())
}

/// A wrapper's command: after its options (and `--`) and its positional arguments.
fn wrapped(cx: &mut Cx, e: &Exec, w: &Wrapper, name: &str) -> Result<()> {
    let mut i = 1;
    let mut positional = w.positional;
    while i < e.argv.len() {
        let Some(a) = e.arg(i) else {
            break;
        };
        if a == "--" {
            i += 1;
            break;
        }
        if a.starts_with('-') && a.len() > 1 && !a.starts_with("--")
            || a.starts_with("--") && a.len() > 2
        {
            let bare = a.split('=').next().unwrap_or(a);
            i += if w.with_value.contains(&bare) && !a.contains('=') {
                2
            } else {
                1
            };
            continue;
        }
        if positional > 0 {
            positional -= 1;
            i += 1;
            continue;
        }
        break;
    }
    // Positional arguments may follow `--` (gosu USER -- CMD is not a form, but timeout -- 5 CMD is).
    while positional > 0 && i < e.argv.len() {
        positional -= 1;
        i += 1;
    }
    if i >= e.argv.len() {
        if name == "xargs" {
            return Ok(()); // xargs runs echo by default: nothing to trace.
        }
        return Ok(());
    }
    if e.arg(i).is_none() {
        cx.question(format!(
            "{}: {name} runs a command computed at run time; it is not traced",
            display(&e.path)
        ));
        return Ok(());
    }
    let (argv, unknown) = e.tail(i);
    cx.exec_child(
        e,
        (argv, unknown),
        Why::Command,
        format!("run by {name} ({})", display(&e.path)),
        e.hard,
    )?;
    Ok(())
}

/// `find … -exec CMD ARGS ;` (and `-execdir`, `-ok`, `-okdir`).
fn find_exec(cx: &mut Cx, e: &Exec) -> Result<()> {
    let mut i = 1;
    while i < e.argv.len() {
        if matches!(e.arg(i), Some("-exec" | "-execdir" | "-ok" | "-okdir")) && i + 1 < e.argv.len()
        {
            let end = (i + 1..e.argv.len())
                .find(|&k| matches!(e.arg(k), Some(";" | "+")))
                .unwrap_or(e.argv.len());
            if e.arg(i + 1).is_some() {
                let (mut argv, mut unknown) = e.tail(i + 1);
                argv.truncate(end - i - 1);
                unknown.retain(|&u| u < argv.len());
                cx.exec_child(
                    e,
                    (argv, unknown),
                    Why::Command,
                    format!("run by find -exec ({})", display(&e.path)),
                    false,
                )?;
            }
            i = end;
        }
        i += 1;
    }
    Ok(())
}

/// `ld.so [--library-path P] [--argv0 S] [--preload L] PROGRAM ARGS`.
fn ld_so(cx: &mut Cx, e: &Exec) -> Result<()> {
    let mut i = 1;
    while i < e.argv.len() {
        match e.arg(i) {
            Some(
                "--library-path"
                | "--preload"
                | "--argv0"
                | "--audit"
                | "--glibc-hwcaps-prepend"
                | "--glibc-hwcaps-mask",
            ) => i += 2,
            Some(a) if a.starts_with("--") => i += 1,
            _ => break,
        }
    }
    let Some(prog) = e.arg(i) else {
        return Ok(());
    };
    if !prog.contains('/') {
        return Ok(());
    }
    let (argv, unknown) = e.tail(i);
    cx.exec_child(
        e,
        (argv, unknown),
        Why::Command,
        format!("run by the dynamic loader {}", display(&e.path)),
        e.hard,
    )?;
    Ok(())
}

use super::*;

fn names(p: &Parsed) -> Vec<String> {
    p.commands
        .iter()
        .filter(|c| !p.functions.contains(c.argv[0].as_deref().unwrap_or("")))
        .map(|c| c.argv[0].clone().unwrap_or_else(|| "?".into()))
        .collect()
}

#[test]
fn commands_of_a_typical_entrypoint_script() {
    let text = r#"#!/bin/sh
set -e
# a comment: rm -rf /
if [ "$1" = "serve" ]; then
echo "starting" >&2
exec /usr/bin/jq -n "$2" 2>/dev/null
fi
case "$1" in
a|b) run-a --flag ;;
c)
    /opt/tool/bin/c "$@"
    ;;
*) ;;
esac
for f in $(ls /etc/app.d); do cat "$f" | grep -v x; done
VERSION=`uname -r` && test -n "$VERSION" || logger oops &
cat <<EOF
exec not-a-command
EOF
wait
"#;
    let p = parse(text, Some(vec![Some("serve".into())]), "/usr/bin");
    assert_eq!(
        names(&p),
        vec![
            "/usr/bin/jq",
            "run-a",
            "/opt/tool/bin/c",
            "ls",
            "cat",
            "grep",
            "uname",
            "logger",
            "cat"
        ]
    );
    let jq = &p.commands[0];
    assert_eq!(jq.line, 6);
    assert_eq!(jq.argv[1].as_deref(), Some("-n"));
    assert_eq!(
        jq.argv[2].as_deref(),
        Some(""),
        "$2 is empty when not given"
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn variables_path_functions_and_computed_commands() {
    let text = r#"
PATH=/opt/app/bin:$PATH
export JQ=/usr/bin/jq
helper() { tool-inside-function; }
helper
$JQ -r .
"$UNKNOWN" --x
${TOOL:-/usr/bin/default-tool} arg
command -v curl >/dev/null && curl -s http://x
eval "$(dircolors)"
. /etc/profile.d/app.sh
"#;
    let p = parse(text, Some(vec![]), "/usr/bin:/bin");
    let n = names(&p);
    assert_eq!(
        n,
        vec![
            "tool-inside-function",
            "/usr/bin/jq",
            "/usr/bin/default-tool",
            "curl",
            "dircolors"
        ]
    );
    assert_eq!(
        p.commands[0].path.as_deref(),
        Some("/opt/app/bin:/usr/bin:/bin")
    );
    assert!(p.functions.contains("helper"));
    assert!(
        p.questions.iter().any(|w| w.starts_with("script:7:")),
        "{:?}",
        p.questions
    );
}

#[test]
fn an_assigned_default_is_the_value_after() {
    let text = "#!/bin/sh\n: \"${TOOL:=/usr/bin/assigned-tool}\"\n: ${OTHER=/usr/bin/other-tool}\n\"$TOOL\" --x\nexec $OTHER\n";
    let p = parse(text, Some(vec![]), "/usr/bin:/bin");
    assert_eq!(
        names(&p),
        vec!["/usr/bin/assigned-tool", "/usr/bin/other-tool"]
    );
    // `:-` does not assign: the variable stays unset, its command is computed.
    let p = parse(
        "#!/bin/sh\n: \"${TOOL:-/usr/bin/t}\"\n\"$TOOL\" --x\n",
        Some(vec![]),
        "/usr/bin:/bin",
    );
    assert!(names(&p).is_empty(), "{:?}", names(&p));
}

#[test]
fn exec_of_the_arguments() {
    let p = parse(
        "exec \"$@\"\n",
        Some(vec![Some("nginx".into()), Some("-g".into())]),
        "/usr/bin",
    );
    assert_eq!(
        p.commands[0].argv,
        vec![Some("nginx".into()), Some("-g".into())]
    );
    let p = parse("exec \"$@\"\n", None, "/usr/bin");
    assert!(p.commands.is_empty());
    assert_eq!(p.questions.len(), 1);
    let p = parse("exec \"$@\"\n", Some(vec![]), "/usr/bin");
    assert!(p.commands.is_empty() && p.questions.is_empty());
    // Re-running itself under another user: $0 is the script.
    let p = parse(
        "exec setpriv --reuid=1 -- \"$0\" \"$@\"\n",
        Some(vec![Some("x".into())]),
        "/usr/bin",
    );
    assert_eq!(
        p.commands[0].argv,
        vec![
            Some("setpriv".into()),
            Some("--reuid=1".into()),
            Some("--".into()),
            Some("script".into()),
            Some("x".into())
        ]
    );
}

#[test]
fn docker_entrypoint_set_dash_dash() {
    // The official images' pattern: options as the command mean "run the app with them".
    let text = "#!/bin/sh\nset -e\nif [ \"${1#-}\" != \"$1\" ]; then\n  set -- memcached \"$@\"\nfi\nexec \"$@\"\n";
    let p = parse(
        text,
        Some(vec![Some("-p".into()), Some("11211".into())]),
        "/usr/bin",
    );
    assert_eq!(names(&p), vec!["memcached"]);
    assert_eq!(p.commands[0].argv.len(), 3);
    // Given a command instead, both the command and the app are traced.
    let p = parse(text, Some(vec![Some("sh".into())]), "/usr/bin");
    assert_eq!(names(&p), vec!["memcached", "sh"]);
}

#[test]
fn bash_case_on_the_first_argument_keeps_both_branches() {
    let text = "#!/bin/bash\nset -euo pipefail\ncase \"${1:-}\" in\n  json) shift; exec jq \"$@\" ;;\n  b64) shift; exec base64 \"$@\" ;;\n  *) echo \"usage: $0 json|b64\" >&2; exit 2 ;;\nesac\n";
    let p = parse(text, Some(vec![]), "/usr/bin");
    assert_eq!(names(&p), vec!["jq", "base64"]);
}

#[test]
fn hostile_input_terminates() {
    let mut s = String::new();
    for _ in 0..2000 {
        s.push_str("$( `(( {{ \"' ${ <<");
    }
    let _ = parse(&s, None, "/bin");
    let deep = "eval ".repeat(50) + "x";
    let _ = parse(&deep, None, "/bin");
}

/// An image of a few files, as a script sees it.
struct MapFs(Vec<(&'static str, &'static str)>);

impl ScriptFs for MapFs {
    fn source(&mut self, call: &Sourced) -> Option<(String, String)> {
        self.0
            .iter()
            .find(|(p, _)| *p == call.name)
            .map(|(p, t)| (p.to_string(), t.to_string()))
    }
    fn glob(&mut self, pattern: &str) -> Vec<String> {
        let m = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher();
        let mut v: Vec<String> = self
            .0
            .iter()
            .map(|(p, _)| p.to_string())
            .filter(|p| m.is_match(p))
            .collect();
        v.sort();
        v
    }
    fn files_under(&mut self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .map(|(p, _)| p.to_string())
            .filter(|p| p.starts_with(&format!("{dir}/")))
            .collect();
        v.sort();
        v
    }
}

fn hooks() -> MapFs {
    MapFs(vec![
        ("/docker-entrypoint.d/10-a.sh", "mkdir -p /tmp/a\n"),
        (
            "/docker-entrypoint.d/20-b.sh",
            "/usr/bin/envsubst < /t.in > /t\n",
        ),
        (
            "/docker-entrypoint.d/30-env.envsh",
            "export X=1\nsed -n p /x\n",
        ),
        ("/docker-entrypoint.d/README", "Hooks run in order.\n"),
    ])
}

#[test]
fn a_for_loop_over_a_glob_sources_every_hook() {
    let text = "for f in /docker-entrypoint.d/*.sh; do\n [ -r \"$f\" ] || continue\n . \"$f\"\ndone\nexec jq \"$@\"\n";
    let p = parse_in(&mut hooks(), text, None, "/usr/bin");
    assert_eq!(names(&p), vec!["mkdir", "/usr/bin/envsubst", "jq"]);
}

#[test]
fn a_bash_array_of_a_glob_and_its_expansion() {
    let text = "hooks=(/docker-entrypoint.d/*.sh)\nfor hook in \"${hooks[@]}\"; do source \"$hook\"; done\n";
    let p = parse_in(&mut hooks(), text, None, "/usr/bin");
    assert_eq!(names(&p), vec!["mkdir", "/usr/bin/envsubst"]);
}

#[test]
fn a_loop_over_ls_output_with_a_case_filter() {
    let text = "for f in $(/bin/busybox ls /docker-entrypoint.d/ | /bin/busybox sort); do\n case \"$f\" in\n  *.sh) . \"/docker-entrypoint.d/$f\" ;;\n esac\ndone\n";
    let p = parse_in(&mut hooks(), text, None, "/usr/bin");
    let n = names(&p);
    assert!(
        n.ends_with(&["mkdir".to_string(), "/usr/bin/envsubst".to_string()]),
        "{n:?}"
    );
    assert!(
        !n.contains(&"sed".to_string()),
        "the .envsh is not a *.sh: {n:?}"
    );
}

#[test]
fn find_piped_to_while_read_runs_and_sources_by_case_branch() {
    let text = r#"find /docker-entrypoint.d/ -follow -type f -print | sort -V | while read -r f; do
    case "$f" in
        *.envsh) . "$f" ;;
        *.sh) "$f" ;;
        *) echo "Ignoring $f" ;;
    esac
done
"#;
    let p = parse_in(&mut hooks(), text, None, "/usr/bin");
    let n = names(&p);
    assert_eq!(
        n,
        vec![
            "find",
            "sort",
            "sed",
            "/docker-entrypoint.d/10-a.sh",
            "/docker-entrypoint.d/20-b.sh"
        ]
    );
    let run: Vec<bool> = p.commands.iter().map(|c| c.optional).collect();
    assert_eq!(run, vec![false, false, false, true, true]);
}

#[test]
fn a_loop_over_a_glob_that_matches_nothing_is_left_to_run_time() {
    let text = "for f in /none.d/*.sh; do . \"$f\"; cat \"$f\"; done\n";
    let p = parse_in(&mut hooks(), text, None, "/usr/bin");
    assert_eq!(names(&p), vec!["cat"]);
    assert_eq!(p.questions.len(), 1, "{:?}", p.questions);
    assert!(
        p.questions[0].contains("named at run time"),
        "{:?}",
        p.questions
    );
}

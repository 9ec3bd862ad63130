//! [`run_workload`]: an image's entrypoint run in an unpacked root as 65532, in its own
//! namespaces, optionally under strace; talking to it over TCP and HTTP.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

/// Runs in the new namespaces before the workload: a minimal `/dev` (tmpfs with the host's
/// null, zero, full, random, urandom and tty bound in), and for foreign roots a private
/// `binfmt_misc` with qemu registered (`F`: the interpreter is opened now, outside the root).
const PRELUDE: &str = r#"set -e
root=$1 userns=$2 binfmt=$3 reg=$4
shift 4
[ "$1" = -- ] && shift
path_set=${PATH+x}
img_path=${PATH-}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ "$userns" = 1 ]; then
  n=0
  while [ -z "$(cat /proc/self/uid_map)" ]; do
    n=$((n+1)); [ $n -lt 600 ] || { echo "pare-test: no uid map was written" >&2; exit 125; }
    sleep 0.05
  done
fi
mount -t tmpfs -o mode=755,size=1m tmpfs "$root/dev"
for d in null zero full random urandom tty; do
  [ -e "/dev/$d" ] || continue
  : > "$root/dev/$d"
  mount --bind "/dev/$d" "$root/dev/$d"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir -m 1777 "$root/dev/shm"
if [ "$binfmt" != - ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || {
    echo "pare-test: cannot mount a private binfmt_misc (needs Linux >= 6.7)" >&2; exit 125; }
  printf '%s' "$reg" > "$binfmt/register"
fi
if [ -n "$path_set" ]; then PATH=$img_path; else unset PATH; fi
exec "$@"
"#;

/// `-I 2`: strace blocks fatal signals only while it decodes a syscall (with `-o FILE PROG`
/// it would block them always, and then nothing can stop a traced server but SIGKILL).
const STRACE_ARGS: &[&str] = &[
    "-I",
    "2",
    "-f",
    "-qq",
    "-s",
    "65535",
    "-e",
    "trace=%file,%process,fchdir",
    "-e",
    "signal=none",
];

struct Spawned {
    child: Child,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    err: std::sync::mpsc::Receiver<Vec<u8>>,
    _binfmt: Option<TempDir>,
}

/// Read `r` to its end on a thread; the bytes arrive on the channel.
fn reader(mut r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        let _ = tx.send(b);
    });
    rx
}

fn spawn_in_root(root: &Path, config: &Value, w: &Workload, strace_log: Option<&Path>) -> Spawned {
    let (argv, env, wd) = workload_argv(config, w);
    assert!(
        !argv.is_empty(),
        "{}: the image has no Entrypoint or Cmd",
        w.label
    );
    for d in ["proc", "dev"] {
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        }
    }
    let arch = config["architecture"].as_str().unwrap_or("amd64");
    let foreign = arch != host_arch();
    let (binfmt, reg) = if foreign {
        let (_, reg) = qemu_for(arch).unwrap_or_else(|e| panic!("{}: {e}", w.label));
        let d = tempfile::Builder::new()
            .prefix("pare-binfmt-")
            .tempdir()
            .expect("binfmt mount point");
        (Some(d), reg)
    } else {
        (None, "-".to_string())
    };
    let unshare = find_tool("unshare").expect("unshare (util-linux) is needed");
    let mut cmd = Command::new(&unshare);
    if foreign {
        cmd.arg("--user");
    }
    cmd.args(["--mount", "--pid", "--fork", "--kill-child=SIGTERM"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .args(["/bin/sh", "-c", PRELUDE, "sh"])
        .arg(root)
        .arg(if foreign { "1" } else { "0" })
        .arg(
            binfmt
                .as_ref()
                .map(|d| d.path().display().to_string())
                .unwrap_or_else(|| "-".into()),
        )
        .arg(&reg)
        .arg("--");
    if let Some(log) = strace_log {
        cmd.arg(find_tool("strace").expect("strace is needed"))
            .args(STRACE_ARGS)
            .arg("-o")
            .arg(log);
    }
    cmd.arg(&unshare)
        .arg(format!("--root={}", root.display()))
        .arg(format!("--wd={wd}"))
        .arg(format!("--setuid={NONROOT_UID}"))
        .arg(format!("--setgid={NONROOT_UID}"))
        .arg("--")
        .args(&argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: spawn {cmd:?}: {e}", w.label));
    if foreign {
        // The user namespace's owner is the unshare process: map uids and gids 0..65536 to
        // the same ids outside (we are root), so that 65532 exists inside.
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536\n").is_ok()
                && fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536\n").is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: could not write the uid/gid map of the user namespace",
                w.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let input = w.stdin.clone();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    Spawned {
        child,
        out,
        err,
        _binfmt: binfmt,
    }
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Host pids of the children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    if let Ok(c) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return c
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|pp| pp.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Stop a workload. The outer unshare's `--kill-child` cannot be relied on (the parent-death
/// signal is cleared when the workload's credentials change to 65532), so: SIGTERM to the
/// namespace's first process (the workload, or strace), which it handles (nginx, strace
/// `-I 2`); when that does not end it within 10 s, SIGKILL to it, which ends every process of
/// the namespace.
fn terminate(child: &mut Child) {
    let pid = child.id();
    let init = children_of(pid);
    if init.is_empty() {
        kill("-TERM", pid);
    }
    for i in &init {
        kill("-TERM", *i);
    }
    if wait_timeout(child, Duration::from_secs(10)).is_none() {
        for i in &init {
            kill("-KILL", *i);
        }
        if wait_timeout(child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(mut s: Spawned, timeout: Duration, mut note: String) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let status = match wait_timeout(&mut s.child, timeout) {
        Some(st) => Some(st),
        None => {
            note.push_str(&format!("pare-test: timed out after {timeout:?}, killed\n"));
            terminate(&mut s.child);
            wait_timeout(&mut s.child, Duration::from_secs(10)).or_else(|| {
                let _ = s.child.kill();
                s.child.wait().ok()
            })
        }
    };
    // Something that outlived the workload may still hold the pipes: give up on it after 10 s.
    let stdout = s
        .out
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            note.push_str("pare-test: stdout was still open 10 s after the end\n");
            Vec::new()
        });
    let mut stderr = s
        .err
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    stderr.extend_from_slice(note.as_bytes());
    (status.and_then(|s| s.code()), stdout, stderr)
}

/// Run image `config`'s entrypoint (with `w`) in the unpacked `root` as 65532:65532, in new
/// mount and pid namespaces with a `/proc` and a minimal `/dev`, with only the image's `Env`
/// (plus `w.env`), in its `WorkingDir`. With `strace_log`, under
/// `strace -f -e trace=%file,%process,fchdir` (inside the namespaces, outside the root; see
/// [`parse_strace`]). Needs root.
pub fn run_workload(
    root: &Path,
    config: &Value,
    w: &Workload,
    strace_log: Option<&Path>,
) -> WorkloadResult {
    assert!(super::is_root(), "run_workload needs root");
    let Some(probe) = &w.http else {
        let s = spawn_in_root(root, config, w, strace_log);
        let (code, stdout, stderr) = finish(s, w.timeout, String::new());
        return WorkloadResult {
            code,
            stdout,
            stderr,
        };
    };
    let mut s = spawn_in_root(root, config, w, strace_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, probe.port));
    let mut responses = Vec::new();
    let mut note = String::new();
    let mut ok = false;
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            note.push_str(&format!("pare-test: the server exited early with {st}\n"));
            break;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            ok = true;
            if let Some(bytes) = &probe.send {
                match tcp_exchange(probe.port, bytes) {
                    Ok(reply) => {
                        ok = !reply.is_empty();
                        responses = reply;
                    }
                    Err(e) => {
                        note.push_str(&format!("pare-test: tcp exchange: {e}\n"));
                        ok = false;
                    }
                }
            }
            for p in &probe.paths {
                match http_get(probe.port, p) {
                    Ok((status, body)) => {
                        responses.extend_from_slice(format!("GET {p} -> {status}\n").as_bytes());
                        responses.extend_from_slice(&body);
                        responses.push(b'\n');
                        ok &= status == 200;
                    }
                    Err(e) => {
                        note.push_str(&format!("pare-test: GET {p}: {e}\n"));
                        ok = false;
                    }
                }
            }
            break;
        }
        if Instant::now() > deadline {
            note.push_str(&format!(
                "pare-test: nothing listened on port {} within 60 s\n",
                probe.port
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut s.child);
    let (_, _server_out, stderr) = finish(s, Duration::from_secs(20), note);
    WorkloadResult {
        code: Some(if ok { 0 } else { 1 }),
        stdout: responses,
        stderr,
    }
}

/// Send `bytes` to 127.0.0.1:port; the reply until the peer closes, 2 s pass without a byte,
/// or 1 MiB.
pub fn tcp_exchange(port: u16, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    while reply.len() < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !reply.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(reply)
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0): status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

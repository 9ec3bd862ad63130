//! [`Workload`]: what to run in an image, and what it did; foreign architectures through qemu.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// One run of an image's entrypoint.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Shown in messages.
    pub label: String,
    /// Replaces the image's `Cmd` (as `docker run IMAGE ARGS…` does).
    pub args: Option<Vec<String>>,
    /// Set at run time, on top of the image's `Env`.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// A server: wait for this port, GET these paths; their status lines and bodies are the
    /// workload's output.
    pub http: Option<HttpProbe>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct HttpProbe {
    pub port: u16,
    pub paths: Vec<String>,
    /// Instead of GETs: send these bytes and take the reply (until the peer closes or is idle
    /// for 2 s) as the output, for servers of other protocols (redis, memcached, SMTP…).
    pub send: Option<Vec<u8>>,
}

impl Workload {
    pub fn new(label: &str) -> Workload {
        Workload {
            label: label.to_string(),
            args: None,
            env: Vec::new(),
            stdin: Vec::new(),
            http: None,
            timeout: Duration::from_secs(180),
        }
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn stdin(mut self, b: impl AsRef<[u8]>) -> Self {
        self.stdin = b.as_ref().to_vec();
        self
    }

    pub fn http(mut self, port: u16, paths: &[&str]) -> Self {
        self.http = Some(HttpProbe {
            port,
            paths: paths.iter().map(|s| s.to_string()).collect(),
            send: None,
        });
        self
    }

    /// A server of another protocol: once `port` listens, send `bytes`; the reply is the output.
    pub fn tcp(mut self, port: u16, bytes: impl AsRef<[u8]>) -> Self {
        self.http = Some(HttpProbe {
            port,
            paths: Vec::new(),
            send: Some(bytes.as_ref().to_vec()),
        });
        self
    }
}

/// What a workload did.
#[derive(Clone, Debug)]
pub struct WorkloadResult {
    /// Exit code (`None`: killed by a signal). For servers: 0 when every request was answered.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl WorkloadResult {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// qemu-user-static for a foreign architecture: the interpreter and its `binfmt_misc`
/// registration (magic and mask as Debian's qemu-user-static registers them).
pub fn qemu_for(arch: &str) -> Result<(PathBuf, String), String> {
    let (name, magic, mask) = match arch {
        "arm64" => (
            "aarch64",
            r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
        ),
        other => return Err(format!("no qemu registration known for {other}")),
    };
    let qemu = PathBuf::from(format!("/usr/bin/qemu-{name}-static"));
    if !qemu.exists() {
        return Err(format!(
            "{} is missing (install qemu-user-static)",
            qemu.display()
        ));
    }
    let reg = format!(":pare-qemu-{name}:M::{magic}:{mask}:{}:F", qemu.display());
    Ok((qemu, reg))
}

/// Whether this machine can run foreign-architecture roots the way [`run_workload`] does:
/// qemu-user-static for `arch`, and a private `binfmt_misc` in a user namespace (Linux ≥ 6.7),
/// so that nothing is registered for the whole machine.
pub fn foreign_arch_support(arch: &str) -> Result<(), String> {
    qemu_for(arch)?;
    let unshare = find_tool("unshare").ok_or("unshare (util-linux) is missing")?;
    let out = Command::new(unshare)
        .args(["--user", "--map-root-user", "--mount", "/bin/sh", "-c"])
        .arg(
            "d=$(mktemp -d) && mount -t binfmt_misc binfmt_misc \"$d\"; r=$?; \
             umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $r",
        )
        .output()
        .map_err(|e| format!("run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot mount a private binfmt_misc in a user namespace (needs Linux >= 6.7): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `(argv, env, workdir)` for running image `config` (the image config JSON) with `w`.
pub fn workload_argv(config: &Value, w: &Workload) -> (Vec<String>, Vec<(String, String)>, String) {
    let c = &config["config"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strs(&c["Entrypoint"]);
    match &w.args {
        Some(a) => argv.extend(a.iter().cloned()),
        None => argv.extend(strs(&c["Cmd"])),
    }
    let mut env: Vec<(String, String)> = strs(&c["Env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &w.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let wd = c["WorkingDir"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("/")
        .to_string();
    (argv, env, wd)
}

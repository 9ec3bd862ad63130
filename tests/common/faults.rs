//! A fault-injecting HTTP proxy for the tests: loopback only, in front of a real registry. Each
//! rule matches requests by method and a substring of the path and, a bounded number of times,
//! answers with a status (and `Retry-After`), cuts the connection after N bytes of the
//! response, delays it, or truncates its body while keeping `Content-Length`. Everything else
//! is relayed unchanged (each connection serves one request: `Connection: close` both ways).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status without forwarding, with `Retry-After: secs` when given.
    Status(u16, Option<u64>),
    /// Forward, then close the connection after this many bytes of the response.
    CutAfter(usize),
    /// Forward, then send the head and half the body and close (Content-Length unchanged).
    Truncate,
    /// Wait this long, then forward.
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path: String,
    pub fault: Fault,
    /// How many more requests this rule applies to (`usize::MAX`: always).
    pub times: usize,
}

impl Rule {
    pub fn new(method: &'static str, path: &str, fault: Fault, times: usize) -> Rule {
        Rule {
            method,
            path: path.to_string(),
            fault,
            times,
        }
    }
}

/// (method, path, the fault applied) of every request seen.
pub type Log = Mutex<Vec<(String, String, Option<String>)>>;

pub struct FaultProxy {
    pub port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// (method, path, fault applied) of every request seen.
    pub log: Arc<Log>,
    /// `Range` headers of the requests that had one: (path, value).
    pub ranges: Arc<Mutex<Vec<(String, String)>>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port relaying to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let log: Arc<Log> = Arc::default();
        let ranges: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (r, lg, rg) = (rules.clone(), log.clone(), ranges.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (r, lg, rg) = (r.clone(), lg.clone(), rg.clone());
                std::thread::spawn(move || {
                    let _ = serve(c, upstream, &r, &lg, &rg);
                });
            }
        });
        FaultProxy {
            port,
            rules,
            log,
            ranges,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, rules: Vec<Rule>) {
        *self.rules.lock().unwrap() = rules;
    }

    /// How many requests got a fault.
    pub fn faults(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.2.is_some())
            .count()
    }
}

/// Read up to the end of an HTTP head (bounded to 64 KiB).
fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 || head.len() > 64 << 10 {
            return Err(std::io::Error::other("no head"));
        }
        head.push(b[0]);
    }
    Ok(head)
}

/// The head with `Connection: close` instead of any Connection header.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

fn serve(
    mut c: TcpStream,
    upstream: u16,
    rules: &Mutex<Vec<Rule>>,
    log: &Log,
    ranges: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = read_head(&mut c)?;
    for line in String::from_utf8_lossy(&head).lines() {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            let path = String::from_utf8_lossy(&head)
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            ranges.lock().unwrap().push((path, v.trim().to_string()));
        }
    }
    let first = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let fault = {
        let mut rs = rules.lock().unwrap();
        rs.iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path))
            .map(|r| {
                r.times = r.times.saturating_sub(1);
                r.fault.clone()
            })
    };
    log.lock().unwrap().push((
        method.clone(),
        path.clone(),
        fault.as_ref().map(|f| format!("{f:?}")),
    ));
    if let Some(Fault::Status(code, retry)) = &fault {
        // Drain what the client sends (a body) briefly, then answer.
        c.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut sink = [0u8; 1 << 16];
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        let body =
            format!("{{\"errors\":[{{\"code\":\"UNKNOWN\",\"message\":\"injected {code}\"}}]}}");
        let retry = retry
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        c.write_all(
            format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )?;
        return Ok(());
    }
    if let Some(Fault::Delay(d)) = &fault {
        std::thread::sleep(*d);
    }
    let mut u = TcpStream::connect(("127.0.0.1", upstream))?;
    u.write_all(&close_head(&head))?;
    // The request body: relayed until the client stops sending (the upstream answers when it
    // has read Content-Length bytes, then closes).
    let mut c2 = c.try_clone()?;
    let mut u2 = u.try_clone()?;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let rhead = read_head(&mut u)?;
    let out_head = close_head(&rhead);
    let limit = match &fault {
        Some(Fault::CutAfter(n)) => Some(*n),
        Some(Fault::Truncate) => Some(out_head.len() + content_length(&rhead).unwrap_or(0) / 2),
        _ => None,
    };
    let mut sent = 0usize;
    let mut send = |c: &mut TcpStream, b: &[u8]| -> std::io::Result<bool> {
        let n = match limit {
            Some(l) => b.len().min(l.saturating_sub(sent)),
            None => b.len(),
        };
        c.write_all(&b[..n])?;
        sent += n;
        Ok(n == b.len())
    };
    if send(&mut c, &out_head)? {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = u.read(&mut buf)?;
            if n == 0 || !send(&mut c, &buf[..n])? {
                break;
            }
        }
    }
    let _ = c.shutdown(Shutdown::Both);
    let _ = u.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

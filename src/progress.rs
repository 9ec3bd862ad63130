//! Progress for pulls and pushes: bars when stderr is a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    lines: bool,
}

impl Progress {
    /// Bars on a terminal, plain lines elsewhere; nothing at all when `quiet`.
    pub fn stderr(quiet: bool) -> Self {
        if quiet {
            return Self::silent();
        }
        if std::io::stderr().is_terminal() {
            Progress {
                multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
                lines: false,
            }
        } else {
            Progress {
                multi: None,
                lines: true,
            }
        }
    }

    pub fn silent() -> Self {
        Progress {
            multi: None,
            lines: false,
        }
    }

    /// A unit of work of `total` bytes, e.g. `("pull", "sha256:ab12…", 1234)`.
    pub fn task(&self, verb: &str, what: &str, total: u64) -> Task {
        let label = format!("{verb} {what}");
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:40} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(label.clone());
            b
        });
        Task {
            bar,
            label,
            total,
            lines: self.lines,
        }
    }

    /// A status line (printed above the bars on a terminal).
    pub fn note(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None if self.lines => eprintln!("{msg}"),
            None => {}
        }
    }
}

impl Progress {
    /// Where log lines (warnings, retries) go: above the bars on a terminal, so they do not
    /// break them; plain stderr lines otherwise.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            multi: self.multi.clone(),
        }
    }
}

/// A `tracing` writer that prints each event through the progress bars.
#[derive(Clone)]
pub struct LogWriter {
    multi: Option<MultiProgress>,
}

/// One log event, printed when dropped.
pub struct LogLine {
    multi: Option<MultiProgress>,
    buf: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine {
            multi: self.multi.clone(),
            buf: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    lines: bool,
}

impl Task {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Start over (a retried transfer).
    pub fn restart(&self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    /// Replace the label shown on the bar (no-op without a terminal).
    pub fn set_label(&self, label: &str) {
        if let Some(b) = &self.bar {
            b.set_message(label.to_string());
        }
    }

    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.lines {
            eprintln!("{} ({})", self.label, human_bytes(self.total));
        }
    }
}

/// `148.2 MB` style sizes (decimal units, as registries and docker show them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(148_200_000), "148.2 MB");
        assert_eq!(super::human_bytes(9_100_000), "9.1 MB");
    }
}

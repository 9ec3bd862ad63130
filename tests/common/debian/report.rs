//! The tables the acceptance tests write under `target/`.

use std::fs;
use std::io::Write;
use std::sync::Mutex;

use super::*;

/// `12.3 MB`.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Append a row (a markdown table line, without the newline) to `target/works-table.md`; the
/// first row of a test process starts the file afresh, with `header`.
pub fn append_table_row(header: &str, row: &str) {
    append_named_row("works-table.md", header, row);
}

/// Append a row to `target/NAME` (written afresh, with `header`, by the first row of a run).
pub fn append_named_row(name: &str, header: &str, row: &str) {
    static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let path = target_dir().join(name);
    let _ = fs::create_dir_all(target_dir());
    let new = !started.iter().any(|n| n == name);
    if new {
        started.push(name.to_string());
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!new)
        .truncate(new)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut text = String::new();
    if new {
        text.push_str(header);
        text.push('\n');
    }
    text.push_str(row);
    text.push('\n');
    f.write_all(text.as_bytes()).expect("append table row");
}

//! `pare trace`: what the entrypoint needs, and why.

use pare::harden::{self};
use pare::progress::Progress;
use pare::reference::ImageRef;

use super::args::*;
use super::exit::Outcome;
use super::options::*;
use super::print::*;

pub(super) async fn run(a: TraceArgs, progress: &Progress) -> anyhow::Result<Outcome> {
    let src: ImageRef = a.src.parse()?;
    let opts = options(&a.source, &a.trace, None)?;
    let analysis = harden::analyze(&src, &opts, progress).await?;
    let t = &analysis.trace;
    if !a.why.is_empty() {
        for p in &a.why {
            for line in t.why(&analysis.rootfs, p) {
                println!("{}", clean(&line, false));
            }
        }
    } else if a.json {
        println!("{}", serde_json::to_string_pretty(&pare::trace::json(t))?);
    } else {
        print!("{}", clean(&pare::trace::render_tree(t), true));
        print!("{}", clean(&pare::trace::render_kept(t), true));
    }
    for w in &analysis.trace.warnings {
        eprintln!("warning: {}", clean(w, false));
    }
    for q in &analysis.trace.questions {
        eprintln!("open question: {}", clean(q, false));
    }
    Ok(Outcome::Ok)
}

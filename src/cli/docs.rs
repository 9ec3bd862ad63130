//! `pare completions` and `pare man`.

use std::path::PathBuf;

use anyhow::Context as _;

use super::args::*;
use super::exit::Outcome;

pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<Outcome> {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "pare", &mut std::io::stdout());
    Ok(Outcome::Ok)
}

pub(super) fn man(dir: Option<PathBuf>) -> anyhow::Result<Outcome> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let mut written = 0;
            let mut pages: Vec<(String, clap::Command)> = vec![("pare".into(), cmd.clone())];
            for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                pages.push((format!("pare-{}", sub.get_name()), sub.clone()));
                for subsub in sub.get_subcommands() {
                    pages.push((
                        format!("pare-{}-{}", sub.get_name(), subsub.get_name()),
                        subsub.clone(),
                    ));
                }
            }
            for (name, c) in pages {
                let path = dir.join(format!("{name}.1"));
                let mut buf = Vec::new();
                clap_mangen::Man::new(c.name(name.clone())).render(&mut buf)?;
                std::fs::write(&path, buf).with_context(|| format!("{}", path.display()))?;
                written += 1;
            }
            eprintln!("wrote {written} man pages into {}", dir.display());
        }
    }
    Ok(Outcome::Ok)
}

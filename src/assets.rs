//! Man pages and shell completions, generated from the command-line definition itself, so they
//! cannot drift from it: `secret-rotator generate-assets DIR` (outside the definition) writes
//! `DIR/man/*.1` and `DIR/completions/` for bash, zsh and fish. The Debian package is built
//! around them (`deploy/debian/build-deb`).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap_complete::Shell;

/// What only the top-level page says: where things are, and what the exit status means.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
0 on success; 78 (EX_CONFIG) when the configuration is bad (the systemd unit does not restart on it); 1 for every other failure, with one line on standard error naming the file, key or client at fault.
.SH FILES
.TP
\fI/etc/secret\-rotator/config.toml\fR
The configuration (every command's \fB\-\-config\fR default). Secrets are never written in it: it names files, such as systemd credentials under \fI$CREDENTIALS_DIRECTORY\fR.
.TP
\fI/var/lib/secret\-rotator\fR
The state directory (\fBstate.dir\fR): the local store and the per-client locks. Not authoritative; deleting it loses only history.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBsystemd.exec\fR(5). The operations guide and the configuration reference are in \fI/usr/share/doc/secret\-rotator\fR.
"#;

/// Writes the man pages (one per visible command) and the completions for `cmd`.
pub fn write(cmd: clap::Command, out: &Path, date: &str) -> anyhow::Result<()> {
    let man_dir = out.join("man");
    let completions = out.join("completions");
    for dir in [&man_dir, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!("secret-rotator {}", env!("CARGO_PKG_VERSION"));
    man_pages(&cmd, &man_dir, date, &source, true)?;
    let name = cmd.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

fn man_pages(
    cmd: &clap::Command,
    dir: &Path,
    date: &str,
    source: &str,
    top: bool,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, date, source, false)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .date(date)
        .source(source)
        .manual("secret-rotator manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    if top {
        page.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    }
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&page))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page_and_every_shell_a_completion() {
        let cmd = clap::Command::new("secret-rotator")
            .about("rotates")
            .subcommand(clap::Command::new("run").about("the daemon"))
            .subcommand(clap::Command::new("internal").hide(true));
        let dir = tempfile::tempdir().unwrap();
        write(cmd, dir.path(), "2026-12-01").unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        assert_eq!(pages, ["secret-rotator-run.1", "secret-rotator.1"]);
        let top = std::fs::read_to_string(dir.path().join("man/secret-rotator.1")).unwrap();
        assert!(top.contains(".SH FILES"), "{top}");
        assert!(top.contains("2026-12-01"), "{top}");
        let sub = std::fs::read_to_string(dir.path().join("man/secret-rotator-run.1")).unwrap();
        assert!(!sub.contains(".SH FILES"));
        for f in [
            "secret-rotator.bash",
            "_secret-rotator",
            "secret-rotator.fish",
        ] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains("run"), "{f}: {text}");
        }
    }
}

//! Stamps the binary with the git commit it was built from and the build date, for `--version`.
//!
//! A build from a source tarball (or a container build context without `.git`) has no commit:
//! it says `unknown` rather than failing. `SECRET_ROTATOR_COMMIT` names the commit where git
//! cannot (a packager building from an export), and `SOURCE_DATE_EPOCH` fixes the date for
//! reproducible builds (https://reproducible-builds.org/specs/source-date-epoch/).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo::rerun-if-env-changed=SECRET_ROTATOR_COMMIT");
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout moves HEAD or the branch it points to; in a worktree both live
    // under paths only git knows.
    // A path that does not exist (no packed-refs yet) would make cargo rerun this script, and
    // rebuild the crate, on every build.
    let watch = |path: String| {
        if std::path::Path::new(&path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    };
    for name in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            watch(path);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch(path);
    }

    // The dist build's linker reads these (deploy/link/README.md): a new list or linker script
    // links the binary anew.
    println!("cargo::rerun-if-changed=deploy/link/hot-symbols.txt");
    println!("cargo::rerun-if-changed=deploy/link/cc-ordered");
    println!("cargo::rerun-if-env-changed=SECRET_ROTATOR_HOT_SYMBOLS");
    println!("cargo::rerun-if-env-changed=SECRET_ROTATOR_LINK_CC");

    let commit = std::env::var("SECRET_ROTATOR_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        // No "-dirty" mark: the script reruns when HEAD moves, not on every edit, so the mark
        // would be stale as often as right.
        .or_else(|| {
            // A tarball unpacked inside some other repository (a packaging repo) is not that
            // repository's commit.
            let top = git(&["rev-parse", "--show-toplevel"])?;
            let here = std::env::var("CARGO_MANIFEST_DIR").ok()?;
            let same = std::fs::canonicalize(top).ok()? == std::fs::canonicalize(here).ok()?;
            same.then(|| git(&["rev-parse", "--short=12", "HEAD"]))?
        })
        .unwrap_or_else(|| "unknown".into());

    // The build's own time, not the daemon's: the rule that only src/clock.rs reads the clock
    // is about what the daemon decides, and a build script decides nothing at run time.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(now);
    let date = time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| "unknown".into());

    println!("cargo::rustc-env=SECRET_ROTATOR_GIT_COMMIT={commit}");
    println!("cargo::rustc-env=SECRET_ROTATOR_BUILD_DATE={date}");
}

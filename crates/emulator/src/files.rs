//! The emulator's state dir holds every secret it knows (`state.json`) and its CA key: it is
//! its user's alone, and nothing in it is written through a symlink.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use rustix::fs::OFlags;

/// Creates `dir` owner-only (0700) when missing; refuses an existing one that is not owned by
/// this user or that group or others may write.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
    }
    let meta =
        std::fs::metadata(dir).with_context(|| format!("reading state dir {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        bail!("state dir {} is not a directory", dir.display());
    }
    if meta.uid() != me {
        bail!(
            "state dir {} is owned by uid {}, not by uid {me} which runs the emulator",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "state dir {} is writable by group or others (mode {mode:04o}): chmod 700 it",
            dir.display()
        );
    }
    Ok(())
}

/// Replaces `path` with a new file of `contents` and `mode`: written under a temporary name
/// that must not exist (a symlink there is refused, not followed), then renamed over `path`
/// (which replaces a symlink at `path` rather than writing through it).
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A leftover of a crash (or anything else by that name) goes; removing a link removes the
    // link, not its target.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "victim's").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        replace(&path, b"{}", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim's");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_state_dir_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mode 0777"), "{err}");
        let fresh = dir.path().join("new");
        private_dir(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

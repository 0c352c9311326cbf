//! How the daemon treats the files it keeps and the files it is given.
//!
//! What it writes (the state store, lock files, the demo's files) lives in a directory only its
//! own user may change, and is opened without following a symlink, so that another local user
//! can neither read it nor plant a link that makes the daemon write somewhere else. What it is
//! given (the config and the secret files it names) it reads where the administrator put them,
//! links included (systemd credentials and Kubernetes volumes are links), and says so when a
//! secret file is readable by others.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::OFlags;

fn no_follow() -> i32 {
    (OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32
}

/// Why `dir` is not safe to keep state in, if it is not: it must be a directory owned by the
/// user running the daemon that neither group nor others may write. A symlink to such a
/// directory is fine (systemd's `DynamicUser=` makes one).
pub fn unsafe_dir(dir: &Path) -> Option<String> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot read {}: {e}", dir.display())),
    };
    if !meta.is_dir() {
        return Some(format!("{} is not a directory", dir.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some(format!(
            "{} is owned by uid {}, not by uid {me} which runs secret-rotator: chown it to uid {me} or choose another directory",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "{} is writable by group or others (mode {mode:04o}): chmod 700 it or choose another directory",
            dir.display()
        ));
    }
    None
}

/// Creates `dir` owner-only (0700) when it is missing; refuses an existing one that is unsafe.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?,
        Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
    }
    match unsafe_dir(dir) {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

/// Opens (creating, 0600) a lock file; a symlink in its place is refused, not followed.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(path)
}

/// Creates an owner-only file that must not exist yet (nor a symlink by its name) and writes
/// `contents` to it.
pub fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(path)?;
    f.write_all(contents)
}

/// The permission bits of a secret file that group or others may read, if any: worth a warning
/// (never the content).
pub fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_others_may_write_is_refused_with_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(unsafe_dir(tmp.path()), None);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = unsafe_dir(tmp.path()).unwrap();
        assert!(
            why.contains("writable by group or others (mode 0777)"),
            "{why}"
        );
        assert!(private_dir(tmp.path()).is_err());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(unsafe_dir(tmp.path()), None, "group may read and enter");
    }

    #[test]
    fn a_missing_directory_is_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_symlink_at_a_lock_path_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        let lock = tmp.path().join("c1.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        assert!(open_lock(&lock).is_err(), "a planted link is refused");
        assert!(!victim.exists(), "nothing was created through the link");

        let fresh = tmp.path().join("c2.lock");
        open_lock(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_private_file_is_never_written_through_a_link_nor_over_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "victim's").unwrap();
        let link = tmp.path().join("admin-token");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_new_private(&link, b"token").is_err());
        assert!(write_new_private(&victim, b"token").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim's");

        let file = tmp.path().join("new");
        write_new_private(&file, b"token").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(readable_by_others(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_others(&file), Some(0o640));
    }
}

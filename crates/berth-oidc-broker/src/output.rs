//! Atomic token file writes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

/// Writes `token` (raw, no newline) to `path` atomically: a `.token-*` temporary file in the
/// same directory, mode 0600, flushed to disk, then renamed over `path`. Readers see either
/// the old token or the new one, never a partial file.
///
/// # Errors
/// The directory is not writable, or the write, sync or rename fails. `path` is untouched.
pub fn write_token(path: &Path, token: &SecretString) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".token-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
    set_private(tmp.as_file())?;
    tmp.write_all(token.expose_secret().as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("failed to write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("failed to rename the token into {}", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn set_private(file: &std::fs::File) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .context("failed to set mode 0600 on the temporary token file")
}

#[cfg(not(unix))]
fn set_private(_file: &std::fs::File) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_raw_token_with_mode_0600_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        write_token(&path, &SecretString::from("tok-1")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok-1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        write_token(&path, &SecretString::from("tok-2")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok-2");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["token"], "no temporary file is left behind");
    }

    #[test]
    fn failure_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("token");
        assert!(write_token(&path, &SecretString::from("x")).is_err());
        // A directory where the file should be: rename fails, nothing else changes.
        let path = dir.path().join("token");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "k").unwrap();
        assert!(write_token(&path, &SecretString::from("x")).is_err());
        assert_eq!(std::fs::read_to_string(path.join("keep")).unwrap(), "k");
    }
}

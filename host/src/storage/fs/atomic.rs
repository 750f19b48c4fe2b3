//! Crash-safe file primitives: every visible file was written whole to a
//! temporary name in the same filesystem, fsynced, renamed into place, and
//! its directory fsynced. A crash at any moment leaves either the old state
//! or the new one visible, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A fresh temporary path under `tmp_dir` (same filesystem as the root).
pub fn temp_path(tmp_dir: &Path) -> PathBuf {
    tmp_dir.join(uuid::Uuid::new_v4().hyphenated().to_string())
}

/// Writes `bytes` to `dest` atomically.
pub fn write_file(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(tmp_dir);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        publish(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Moves a complete, fsynced temporary file to `dest`, creating parent
/// directories, and makes the rename durable.
pub fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| io::Error::other("destination has no parent"))?;
    fs::create_dir_all(parent)?;
    fs::rename(tmp, dest)?;
    sync_dir(parent)
}

/// Removes a file; a missing file is not an error. Returns whether it existed.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a small file; a missing file is `None`.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

//! One daemon per SQLite store. SQLite cannot share its state between
//! machines, and two daemons on one file would race for the same
//! mailboxes; `switchboard run` therefore holds an exclusive lock on
//! `<database>.lock` (flock(2), released by the kernel when the process
//! ends, also on a crash) and a second one exits naming the first.
//! Read-only commands (`log`, `stats`, `status`) do not take it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The SQLite database file of a store URL (`None` for PostgreSQL and
/// in-memory databases).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of the database `db`, or says who holds it.
    pub fn acquire(db: &Path) -> Result<InstanceLock, String> {
        // One lock per database file however its path is spelled (a
        // symlinked or relative directory).
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = match (db.parent(), db.file_name()) {
            (Some(dir), Some(file)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                std::fs::canonicalize(dir).map_or_else(|_| db.to_path_buf(), |d| d.join(file))
            }
            _ => db.to_path_buf(),
        };
        let db = db.as_path();
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("cannot lock {}: {err}", path.display()));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(format!(
                "another switchboard daemon is already using the state store {} ({}). \
                 Stop it first; several daemons need a PostgreSQL store",
                db.display(),
                if holder.is_empty() {
                    "holder unknown".to_string()
                } else {
                    holder
                }
            ));
        }
        let me = format!(
            "pid={} host={} since={}\n",
            std::process::id(),
            gethostname::gethostname().to_string_lossy(),
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(me.as_bytes());
        let _ = file.flush();
        Ok(InstanceLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/switchboard/state.db"),
            Some(PathBuf::from("/var/lib/switchboard/state.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://state/s.db?mode=rwc"),
            Some(PathBuf::from("state/s.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("state.db");
        let first = InstanceLock::acquire(&db).unwrap_or_else(|e| panic!("{e}"));
        let err = InstanceLock::acquire(&db).err().unwrap_or_default();
        assert!(err.contains("already using"), "{err}");
        assert!(
            err.contains(&format!("pid={}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(InstanceLock::acquire(&db).is_ok());
    }
}

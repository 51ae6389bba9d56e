//! A local Maildir mailbox (Maildir++ folders, as Dovecot stores them).
//!
//! The inbox is `ROOT/new` + `ROOT/cur`; folder `Queues/Billing` is
//! `ROOT/.Queues.Billing/`. Moves are `rename(2)` — atomic, so a crash
//! leaves a message in exactly one place. Flags use the standard info
//! suffix (`:2,RS`). Nothing is ever deleted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FetchError, Fetched, Flag, MailSource, MsgRef};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Maildir source.
#[derive(Debug, Clone)]
pub struct Maildir {
    pub root: PathBuf,
}

impl Maildir {
    /// Opens (and creates, if missing) the maildir at `root`.
    pub fn open(root: &Path) -> Result<Maildir, FetchError> {
        for sub in ["new", "cur", "tmp"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| FetchError::io(format!("cannot create {}", d.display()), e))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    /// Directory of a folder (`INBOX` is the root).
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        if folder.eq_ignore_ascii_case("INBOX") || folder.is_empty() {
            return self.root.clone();
        }
        let name: String = folder
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..")
            .collect::<Vec<_>>()
            .join(".");
        self.root.join(format!(".{name}"))
    }

    fn ensure_folder(&self, folder: &str) -> Result<PathBuf, FetchError> {
        let dir = self.folder_dir(folder);
        let created = !dir.exists();
        for sub in ["new", "cur", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| FetchError::io(format!("cannot create folder {}", d.display()), e))?;
        }
        if created && dir != self.root {
            // Make the folder visible to IMAP clients that list subscriptions.
            let subs = self.root.join("subscriptions");
            let mut text = std::fs::read_to_string(&subs).unwrap_or_default();
            if !text.lines().any(|l| l == folder) {
                text.push_str(folder);
                text.push('\n');
                let _ = std::fs::write(&subs, text);
            }
        }
        Ok(dir)
    }

    /// A unique file name for a new message.
    pub fn unique_name() -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let host = gethostname::gethostname()
            .to_string_lossy()
            .replace(['/', ':'], "_");
        format!(
            "{}.M{}P{}Q{n}.{host}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        )
    }

    fn path(&self, id: &MsgRef) -> Result<PathBuf, FetchError> {
        match id {
            MsgRef::File(rel) => Ok(self.root.join(rel)),
            MsgRef::Uid(_) => Err(FetchError::Protocol("a UID is not a maildir file".into())),
        }
    }

    /// Messages of a folder (for tests and tools): file paths, sorted.
    pub fn list(&self, folder: &str) -> Vec<PathBuf> {
        let dir = self.folder_dir(folder);
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                v.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && !hidden(p)),
                );
            }
        }
        v.sort();
        v
    }
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'))
}

/// Splits `name:2,FLAGS` into (`name`, `FLAGS`).
fn split_info(file: &str) -> (&str, &str) {
    match file.rsplit_once(":2,") {
        Some((base, flags)) => (base, flags),
        None => (file, ""),
    }
}

fn flag_char(f: &Flag) -> Option<char> {
    match f {
        Flag::Answered => Some('R'),
        Flag::Seen => Some('S'),
        Flag::Keyword(_) => None,
    }
}

impl MailSource for Maildir {
    async fn count(&mut self, folder: &str) -> Result<u32, FetchError> {
        let dir = self.folder_dir(folder);
        let mut n = 0u32;
        for sub in ["cur", "new"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                n += rd
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count() as u32;
            }
        }
        Ok(n)
    }

    async fn pending(&mut self) -> Result<Vec<MsgRef>, FetchError> {
        let mut v: Vec<(std::time::SystemTime, String)> = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            let rd = std::fs::read_dir(&dir)
                .map_err(|e| FetchError::io(format!("cannot list {}", dir.display()), e))?;
            for e in rd.flatten() {
                let p = e.path();
                if !p.is_file() || hidden(&p) {
                    continue;
                }
                let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let mtime = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                v.push((mtime, format!("{sub}/{name}")));
            }
        }
        v.sort();
        Ok(v.into_iter().map(|(_, n)| MsgRef::File(n)).collect())
    }

    async fn fetch(&mut self, ids: &[MsgRef], max_size: u64) -> Result<Vec<Fetched>, FetchError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let path = self.path(id)?;
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Moved away by another process since listing: skip it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FetchError::io(format!("cannot read {}", path.display()), e)),
            };
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let mut raw = Vec::with_capacity(size.min(max_size) as usize);
            f.by_ref()
                .take(max_size)
                .read_to_end(&mut raw)
                .map_err(|e| FetchError::io(format!("cannot read {}", path.display()), e))?;
            out.push(Fetched {
                id: id.clone(),
                raw,
                size,
                truncated: size > max_size,
            });
        }
        Ok(out)
    }

    async fn add_flags(&mut self, id: &MsgRef, flags: &[Flag]) -> Result<(), FetchError> {
        let MsgRef::File(rel) = id else {
            return Err(FetchError::Protocol("a UID is not a maildir file".into()));
        };
        let add: Vec<char> = flags.iter().filter_map(flag_char).collect();
        if add.is_empty() {
            return Ok(());
        }
        let path = self.root.join(rel);
        let file = rel.rsplit('/').next().unwrap_or(rel);
        let (base, old) = split_info(file);
        let mut chars: Vec<char> = old.chars().chain(add).collect();
        chars.sort_unstable();
        chars.dedup();
        let new_rel = format!("cur/{base}:2,{}", chars.iter().collect::<String>());
        let dest = self.root.join(&new_rel);
        std::fs::rename(&path, &dest)
            .map_err(|e| FetchError::io(format!("cannot flag {}", path.display()), e))?;
        Ok(())
    }

    async fn move_to(&mut self, folder: &str, ids: &[MsgRef]) -> Result<(), FetchError> {
        let dir = self.ensure_folder(folder)?;
        for id in ids {
            let MsgRef::File(rel) = id else {
                continue;
            };
            let file = rel.rsplit('/').next().unwrap_or(rel);
            let (base, _) = split_info(file);
            // The message may have been renamed by add_flags: find it by base name.
            let src = [self.root.join("cur"), self.root.join("new")]
                .iter()
                .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| split_info(n).0 == base)
                });
            let Some(src) = src else {
                continue;
            };
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(base)
                .to_string();
            let name = if name.contains(":2,") {
                name
            } else {
                format!("{name}:2,")
            };
            let dest = dir.join("cur").join(name);
            std::fs::rename(&src, &dest).map_err(|e| {
                FetchError::io(
                    format!("cannot move {} to {}", src.display(), dest.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    async fn append(&mut self, folder: &str, raw: &[u8], flags: &[Flag]) -> Result<(), FetchError> {
        let dir = self.ensure_folder(folder)?;
        let name = Maildir::unique_name();
        let tmp = dir.join("tmp").join(&name);
        std::fs::write(&tmp, raw)
            .map_err(|e| FetchError::io(format!("cannot write {}", tmp.display()), e))?;
        let mut chars: Vec<char> = flags.iter().filter_map(flag_char).collect();
        chars.sort_unstable();
        chars.dedup();
        let dest = dir
            .join("cur")
            .join(format!("{name}:2,{}", chars.iter().collect::<String>()));
        std::fs::rename(&tmp, &dest)
            .map_err(|e| FetchError::io(format!("cannot store {}", dest.display()), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn list_fetch_flag_move_append() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut md = Maildir::open(dir.path())?;
        std::fs::write(dir.path().join("new/1.a"), b"Subject: a\r\n\r\nx")?;
        std::fs::write(dir.path().join("cur/2.b:2,S"), b"Subject: b\r\n\r\nyy")?;
        std::fs::write(dir.path().join("new/.hidden"), b"no")?;
        let ids = md.pending().await?;
        assert_eq!(ids.len(), 2);
        let f = md.fetch(&ids, 5).await?;
        assert!(f.iter().all(|m| m.raw.len() <= 5));
        assert!(f.iter().all(|m| m.truncated));
        md.add_flags(&MsgRef::File("new/1.a".into()), &[Flag::Answered])
            .await?;
        assert!(dir.path().join("cur/1.a:2,R").exists());
        md.move_to("Queues/Billing", &ids).await?;
        assert!(md.pending().await?.is_empty());
        let moved = md.list("Queues/Billing");
        assert_eq!(moved.len(), 2);
        assert!(dir.path().join(".Queues.Billing/cur/1.a:2,R").exists());
        assert!(dir.path().join(".Queues.Billing/cur/2.b:2,S").exists());
        md.append("Sent", b"Subject: r\r\n\r\nz", &[Flag::Seen])
            .await?;
        assert_eq!(md.list("Sent").len(), 1);
        Ok(())
    }
}

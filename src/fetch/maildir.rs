//! A local Maildir mailbox (Maildir++ folders, as Dovecot stores them).
//!
//! The inbox is `ROOT/new` + `ROOT/cur`; folder `Queues/Billing` is
//! `ROOT/.Queues.Billing/`. Moves are `rename(2)` — atomic, so a crash
//! leaves a message in exactly one place. Flags use the standard info
//! suffix (`:2,RS`). Nothing is ever deleted.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FetchError, Fetched, Flag, FolderAction, MailSource, MsgRef};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Maildir source.
#[derive(Debug, Clone)]
pub struct Maildir {
    pub root: PathBuf,
    /// Where flagged messages went (base name → path relative to the
    /// root): setting flags renames a file, and the move that follows must
    /// not search the directory for it.
    renamed: std::collections::HashMap<OsString, PathBuf>,
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
            renamed: Default::default(),
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
    /// The file in `folder` whose Message-ID is `message_id` (with or
    /// without angle brackets).
    fn find_message(&self, folder: &str, message_id: &str) -> Option<PathBuf> {
        let needle = format!("<{}>", message_id.trim_matches(['<', '>']));
        for path in self.list(folder) {
            let Ok(f) = open_nofollow(&path) else {
                continue;
            };
            let mut head = Vec::with_capacity(16 * 1024);
            if f.take(16 * 1024).read_to_end(&mut head).is_err() {
                continue;
            }
            let end = head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .or_else(|| head.windows(2).position(|w| w == b"\n\n"))
                .unwrap_or(head.len());
            let headers = String::from_utf8_lossy(&head[..end]);
            if headers.lines().any(|l| {
                l.get(..11)
                    .is_some_and(|h| h.eq_ignore_ascii_case("message-id:"))
                    && l.get(11..).is_some_and(|v| v.trim() == needle)
            }) {
                return Some(path);
            }
        }
        None
    }

    pub fn list(&self, folder: &str) -> Vec<PathBuf> {
        let dir = self.folder_dir(folder);
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                    !hidden(p) && std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir())
                }));
            }
        }
        v.sort();
        v
    }

    /// Flags one message: its info suffix (`:2,RS`) grows.
    fn add_flags_one(&mut self, id: &MsgRef, flags: &[Flag]) -> Result<(), FetchError> {
        let MsgRef::File(rel) = id else {
            return Err(FetchError::Protocol("a UID is not a maildir file".into()));
        };
        let add: Vec<u8> = flags.iter().filter_map(flag_char).collect();
        if add.is_empty() {
            return Ok(());
        }
        let Some(path) = self.locate(rel) else {
            return Ok(());
        };
        let Some(file) = path.file_name() else {
            return Ok(());
        };
        let (base, old) = split_info(file);
        let base = base.to_os_string();
        let name = with_info(&base, old.as_bytes().iter().copied().chain(add));
        let dest = Path::new("cur").join(name);
        std::fs::rename(&path, self.root.join(&dest))
            .map_err(|e| FetchError::io(format!("cannot flag {}", path.display()), e))?;
        self.renamed.insert(base, dest);
        Ok(())
    }

    /// Where a listed message is now: where it was listed, where setting
    /// flags renamed it, or (renamed by someone else) found by its base
    /// name.
    fn locate(&self, rel: &Path) -> Option<PathBuf> {
        let file = rel.file_name()?;
        let base = split_info(file).0;
        if let Some(r) = self.renamed.get(base) {
            let p = self.root.join(r);
            if std::fs::symlink_metadata(&p).is_ok() {
                return Some(p);
            }
        }
        let p = self.root.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Some(p);
        }
        self.find(base)
    }

    /// Finds a message file by its base name (without the `:2,` info) in
    /// `cur/` or `new/` of the inbox: flags rename files.
    fn find(&self, base: &OsStr) -> Option<PathBuf> {
        [self.root.join("cur"), self.root.join("new")]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| split_info(n).0 == base))
    }
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_none_or(|n| n.as_bytes().first() == Some(&b'.'))
}

/// Splits `name:2,FLAGS` into (`name`, `FLAGS`). Names are bytes.
fn split_info(file: &OsStr) -> (&OsStr, &OsStr) {
    let b = file.as_bytes();
    match b.windows(3).rposition(|w| w == b":2,") {
        Some(i) => (OsStr::from_bytes(&b[..i]), OsStr::from_bytes(&b[i + 3..])),
        None => (file, OsStr::new("")),
    }
}

/// `name` + `:2,` + sorted, de-duplicated flag letters.
fn with_info(base: &OsStr, flags: impl IntoIterator<Item = u8>) -> OsString {
    let mut chars: Vec<u8> = flags.into_iter().collect();
    chars.sort_unstable();
    chars.dedup();
    let mut name = base.to_os_string();
    name.push(":2,");
    name.push(OsStr::from_bytes(&chars));
    name
}

fn flag_char(f: &Flag) -> Option<u8> {
    match f {
        Flag::Answered => Some(b'R'),
        Flag::Seen => Some(b'S'),
        Flag::Draft => Some(b'D'),
        Flag::Keyword(_) => None,
    }
}

/// Opens a message file without following a symbolic link: a link in a
/// Maildir could make switchboard read (and answer) any file on the
/// machine.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Reads a message file the way the daemon reads mail: without following
/// a symbolic link, and only a prefix when it is over `max_size` (as over
/// IMAP). Returns the bytes and the file's full size.
pub fn read_message_file(path: &Path, max_size: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let f = open_nofollow(path)?;
    let size = f.metadata()?.len();
    let limit = if size > max_size {
        super::imap::PREFIX_BYTES.min(max_size)
    } else {
        max_size
    };
    let mut raw = Vec::with_capacity(size.min(limit) as usize);
    f.take(limit).read_to_end(&mut raw)?;
    Ok((raw, size))
}

impl MailSource for Maildir {
    async fn count(&mut self, folder: &str) -> Result<u32, FetchError> {
        let dir = self.folder_dir(folder);
        let mut n = 0u32;
        for sub in ["cur", "new"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                n += rd
                    .flatten()
                    .filter(|e| e.file_name().as_bytes().first() != Some(&b'.'))
                    .count() as u32;
            }
        }
        Ok(n)
    }

    async fn pending(&mut self) -> Result<Vec<MsgRef>, FetchError> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            let rd = std::fs::read_dir(&dir)
                .map_err(|e| FetchError::io(format!("cannot list {}", dir.display()), e))?;
            for e in rd.flatten() {
                let p = e.path();
                // Not followed: a symbolic link is listed (and parked as
                // unreadable), a directory is not a message.
                let Ok(meta) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if meta.is_dir() || hidden(&p) {
                    continue;
                }
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                v.push((mtime, Path::new(sub).join(e.file_name())));
            }
        }
        v.sort();
        Ok(v.into_iter().map(|(_, n)| MsgRef::File(n)).collect())
    }

    async fn fetch(&mut self, ids: &[MsgRef], max_size: u64) -> Result<Vec<Fetched>, FetchError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let path = self.path(id)?;
            let unreadable = |why: String| Fetched {
                id: id.clone(),
                raw: Vec::new(),
                size: 0,
                truncated: false,
                unreadable: Some(why),
            };
            let mut f = match open_nofollow(&path) {
                Ok(f) => f,
                // Moved away by another process since listing: skip it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) => {
                    out.push(unreadable(
                        "the Maildir entry is a symbolic link; it is not followed".into(),
                    ));
                    continue;
                }
                Err(e) => return Err(FetchError::io(format!("cannot read {}", path.display()), e)),
            };
            let meta = f
                .metadata()
                .map_err(|e| FetchError::io(format!("cannot read {}", path.display()), e))?;
            if !meta.is_file() {
                out.push(unreadable("the Maildir entry is not a regular file".into()));
                continue;
            }
            let size = meta.len();
            // Over the limit: only a prefix, as over IMAP.
            let limit = if size > max_size {
                super::imap::PREFIX_BYTES.min(max_size)
            } else {
                max_size
            };
            let mut raw = Vec::with_capacity(size.min(limit) as usize);
            f.by_ref()
                .take(limit)
                .read_to_end(&mut raw)
                .map_err(|e| FetchError::io(format!("cannot read {}", path.display()), e))?;
            out.push(Fetched {
                id: id.clone(),
                raw,
                size,
                truncated: size > max_size,
                unreadable: None,
            });
        }
        Ok(out)
    }

    async fn add_flags(&mut self, ids: &[MsgRef], flags: &[Flag]) -> Result<(), FetchError> {
        for id in ids {
            self.add_flags_one(id, flags)?;
        }
        Ok(())
    }

    async fn move_to(&mut self, folder: &str, ids: &[MsgRef]) -> Result<(), FetchError> {
        let dir = self.ensure_folder(folder)?;
        for id in ids {
            let MsgRef::File(rel) = id else {
                continue;
            };
            // The message may have been renamed by add_flags.
            let Some(src) = self.locate(rel) else {
                continue;
            };
            let Some(name) = src.file_name() else {
                continue;
            };
            let (base, flags) = split_info(name);
            let dest = dir
                .join("cur")
                .join(with_info(base, flags.as_bytes().iter().copied()));
            // rename(2) moves a symbolic link itself, never its target.
            std::fs::rename(&src, &dest).map_err(|e| {
                FetchError::io(
                    format!("cannot move {} to {}", src.display(), dest.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    async fn has_message(&mut self, folder: &str, message_id: &str) -> Result<bool, FetchError> {
        Ok(self.find_message(folder, message_id).is_some())
    }

    async fn in_folder(
        &mut self,
        folder: &str,
        message_id: &str,
        action: &FolderAction,
    ) -> Result<bool, FetchError> {
        let Some(path) = self.find_message(folder, message_id) else {
            return Ok(false);
        };
        match action {
            // Maildir has no keywords of its own (Dovecot keeps them in a
            // side file): a reminder is recorded, not flagged.
            FolderAction::Flag(_) => Ok(false),
            FolderAction::MoveTo(dest) => {
                let dir = self.ensure_folder(dest)?;
                let Some(name) = path.file_name() else {
                    return Ok(false);
                };
                let (base, flags) = split_info(name);
                let to = dir.join("cur").join(format!(
                    "{}:2,{}",
                    base.to_string_lossy(),
                    flags.to_string_lossy()
                ));
                std::fs::rename(&path, &to)
                    .map_err(|e| FetchError::io(format!("moving {}", path.display()), e))?;
                Ok(true)
            }
        }
    }

    async fn append(&mut self, folder: &str, raw: &[u8], flags: &[Flag]) -> Result<(), FetchError> {
        let dir = self.ensure_folder(folder)?;
        let name = Maildir::unique_name();
        let tmp = dir.join("tmp").join(&name);
        std::fs::write(&tmp, raw)
            .map_err(|e| FetchError::io(format!("cannot write {}", tmp.display()), e))?;
        let dest = dir.join("cur").join(with_info(
            OsStr::new(&name),
            flags.iter().filter_map(flag_char),
        ));
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
        md.add_flags(&[MsgRef::File("new/1.a".into())], &[Flag::Answered])
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

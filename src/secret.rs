//! Passwords and tokens: where they come from, and a type that cannot be
//! printed by accident.
//!
//! switchboard.toml never contains a secret, only where to find it: a file
//! (`password_file`), a command that prints it (`password_command`, like
//! mbsync's `PassCmd`), an environment variable (`password_env`), or a
//! systemd credential (`password_credential`, read from
//! `$CREDENTIALS_DIRECTORY`, see `LoadCredential=`).

use std::fmt;
use std::path::PathBuf;

pub use secrecy::{ExposeSecret, SecretString};

/// Where a secret is read from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// Program and arguments; run without a shell.
    Command(Vec<String>),
    Env(String),
    /// Name of a systemd credential.
    Credential(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "password_file {}", p.display()),
            SecretSource::Command(c) => {
                write!(
                    f,
                    "password_command {}",
                    c.first().map_or("", |s| s.as_str())
                )
            }
            SecretSource::Env(v) => write!(f, "password_env {v}"),
            SecretSource::Credential(c) => write!(f, "password_credential {c}"),
        }
    }
}

/// Why a secret could not be read. Never contains the secret, nor the
/// output of the command that should have printed it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error(
        "systemd credential {0} not found (is LoadCredential= set and $CREDENTIALS_DIRECTORY present?)"
    )]
    CredentialMissing(String),
    #[error("password command {program} could not be started: {source}")]
    CommandStart {
        program: String,
        source: std::io::Error,
    },
    #[error("password command {program} failed with {status}")]
    CommandFailed { program: String, status: String },
    #[error("password command {program} timed out")]
    CommandTimeout { program: String },
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret. Trailing newlines are removed (files and commands
    /// usually end with one).
    pub async fn read(&self) -> Result<SecretString, SecretError> {
        let raw = match self {
            SecretSource::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| SecretError::File {
                        path: path.clone(),
                        source,
                    })?
            }
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?
            }
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::CredentialMissing(name.clone()))?;
                let path = PathBuf::from(dir).join(name);
                tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|_| SecretError::CredentialMissing(name.clone()))?
            }
            SecretSource::Command(argv) => {
                let program = argv.first().cloned().unwrap_or_default();
                let mut cmd = tokio::process::Command::new(&program);
                cmd.args(argv.iter().skip(1))
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
                    .await
                    .map_err(|_| SecretError::CommandTimeout {
                        program: program.clone(),
                    })?
                    .map_err(|source| SecretError::CommandStart {
                        program: program.clone(),
                        source,
                    })?;
                if !out.status.success() {
                    return Err(SecretError::CommandFailed {
                        program,
                        status: out.status.to_string(),
                    });
                }
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        let trimmed = raw.trim_end_matches(['\r', '\n']).to_string();
        if trimmed.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(SecretString::from(trimmed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sources() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2\n")?;
        let s = SecretSource::File(f).read().await?;
        assert_eq!(s.expose_secret(), "hunter2");
        let s = SecretSource::Command(vec!["echo".into(), "s3cret".into()])
            .read()
            .await?;
        assert_eq!(s.expose_secret(), "s3cret");
        let e = SecretSource::Command(vec!["false".into()]).read().await;
        assert!(matches!(e, Err(SecretError::CommandFailed { .. })));
        let e = SecretSource::Env("SWITCHBOARD_TEST_SURELY_UNSET".into())
            .read()
            .await;
        assert!(matches!(e, Err(SecretError::EnvMissing(_))));
        // Debug output of a secret never shows it.
        assert!(!format!("{s:?}").contains("s3cret"));
        Ok(())
    }
}

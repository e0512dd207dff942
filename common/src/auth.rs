//! Basic-authentication credentials from the command line: `--auth
//! USER:PASSWORD` or `--auth-file FILE` (its first line), checked the same way
//! for every binary that serves clients (`shmcast-rtsp`, `shmcast-web`).

use std::path::Path;

use anyhow::{Context, bail};

/// Basic credentials. `Debug` hides the password, so a logged config does not
/// leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (non-empty, no ':').
    pub user: String,
    /// Password (non-empty; may contain ':').
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: <hidden> }}", self.user)
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` (split at the first ':'; a trailing CR/LF is
    /// dropped). `what` names the source in the error, e.g. `--auth`.
    ///
    /// # Errors
    ///
    /// No ':', or an empty user or password: `invalid <what>: ...`.
    pub fn parse(s: &str, what: &str) -> anyhow::Result<Credentials> {
        let s = s.trim_end_matches(['\r', '\n']);
        let Some((user, password)) = s.split_once(':') else {
            bail!("invalid {what}: expected USER:PASSWORD");
        };
        if user.is_empty() || password.is_empty() {
            bail!("invalid {what}: user and password must not be empty");
        }
        Ok(Credentials { user: user.to_string(), password: password.to_string() })
    }

    /// The credentials of `--auth` or else of `--auth-file` (its first line);
    /// `None` when neither is given. clap keeps the two flags exclusive.
    ///
    /// # Errors
    ///
    /// The file cannot be read (`cannot read --auth-file FILE`), or the
    /// value does not parse (see [`Credentials::parse`]).
    pub fn from_flags(auth: Option<&str>, auth_file: Option<&Path>) -> anyhow::Result<Option<Credentials>> {
        if let Some(s) = auth {
            return Credentials::parse(s, "--auth").map(Some);
        }
        let Some(path) = auth_file else { return Ok(None) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --auth-file {}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        Credentials::parse(line, &format!("--auth-file {}", path.display())).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_at_the_first_colon() {
        let c = Credentials::parse("u:p:q\r\n", "--auth").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p:q"));
        for (bad, msg) in [
            ("nocolon", "expected USER:PASSWORD"),
            (":pw", "must not be empty"),
            ("user:", "must not be empty"),
            ("", "expected USER:PASSWORD"),
        ] {
            let e = Credentials::parse(bad, "--auth").unwrap_err().to_string();
            assert!(e.starts_with("invalid --auth: ") && e.contains(msg), "{bad:?}: {e}");
        }
    }

    #[test]
    fn flag_wins_then_the_first_line_of_the_file() {
        assert_eq!(Credentials::from_flags(None, None).unwrap(), None);
        let path = std::env::temp_dir().join(format!("shmcast-common-auth-{}", std::process::id()));
        std::fs::write(&path, "fileuser:filepw\nsecond:line\n").unwrap();
        let from_file = Credentials::from_flags(None, Some(&path)).unwrap().unwrap();
        let from_flag = Credentials::from_flags(Some("a:b"), Some(&path)).unwrap().unwrap();
        std::fs::write(&path, "no colon here\n").unwrap();
        let bad = Credentials::from_flags(None, Some(&path)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((from_file.user.as_str(), from_file.password.as_str()), ("fileuser", "filepw"));
        assert_eq!(from_flag.user, "a");
        assert!(bad.starts_with("invalid --auth-file ") && bad.contains("expected USER:PASSWORD"), "{bad}");
        let e = Credentials::from_flags(None, Some(Path::new("/nonexistent/auth"))).unwrap_err();
        assert!(e.to_string().contains("cannot read --auth-file /nonexistent/auth"), "{e:#}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::parse("viewer:s3cret", "--auth").unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("viewer") && !d.contains("s3cret"), "{d}");
    }
}

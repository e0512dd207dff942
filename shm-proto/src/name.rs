//! Stream names: `[A-Za-z0-9_.-]{1,64}`, stored as `shmcast.<name>`.
#![forbid(unsafe_code)]

use std::fmt;

use crate::error::NameError;

/// Prefix of every segment's file name.
pub const PREFIX: &str = "shmcast.";

/// A validated stream name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamName(String);

impl StreamName {
    /// Validates a name.
    ///
    /// ```
    /// use shm_proto::StreamName;
    /// assert!(StreamName::new("cam0").is_ok());
    /// assert!(StreamName::new("a/b").is_err());
    /// assert!(StreamName::new(&"x".repeat(200)).is_err());
    /// ```
    ///
    /// # Errors
    /// [`NameError::Empty`], [`NameError::TooLong`] (over 64 characters) or
    /// [`NameError::BadChar`] (anything but `A-Z a-z 0-9 _ . -`).
    pub fn new(name: &str) -> Result<StreamName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.chars().count() > 64 {
            return Err(NameError::TooLong(name.chars().count()));
        }
        if let Some(ch) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
            return Err(NameError::BadChar { name: name.to_string(), ch });
        }
        if name == "." || name == ".." {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(StreamName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file name of its segment: `shmcast.<name>`.
    pub fn file_name(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(StreamName::new(""), Err(NameError::Empty));
        assert_eq!(StreamName::new(&"a".repeat(65)), Err(NameError::TooLong(65)));
        assert!(StreamName::new(&"a".repeat(64)).is_ok());
        assert!(matches!(StreamName::new("a/b"), Err(NameError::BadChar { ch: '/', .. })));
        assert!(matches!(StreamName::new("a b"), Err(NameError::BadChar { ch: ' ', .. })));
        assert_eq!(StreamName::new(".."), Err(NameError::Reserved("..".into())));
        assert_eq!(StreamName::new("cam_0.main-1").unwrap().file_name(), "shmcast.cam_0.main-1");
    }
}

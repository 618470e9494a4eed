//! Comparing generated files with their committed copies, and blessing.
//!
//! A generated file (the C header, the layout checks, the specification with its generated
//! regions) is committed so that readers and C builds need no Rust. A test regenerates it and
//! calls [`check_generated`]: if the committed copy differs, the test fails with a
//! [`FileCheckError::Differs`] naming the first differing line and the command that rewrites the
//! file. With `VIR_BLESS=1` in the environment ([`bless_requested`]) the file is rewritten
//! instead.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The environment variable that turns checks into rewrites.
pub const BLESS_ENV: &str = "VIR_BLESS";

/// The command that regenerates every generated file of the workspace.
pub const BLESS_COMMAND: &str = "VIR_BLESS=1 cargo test -p vir-spec";

/// Whether `VIR_BLESS=1` is set.
pub fn bless_requested() -> bool {
    std::env::var_os(BLESS_ENV).is_some_and(|v| v == "1")
}

/// What [`check_generated`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// The committed file equals the generated text.
    UpToDate,
    /// The file differed (or was missing) and was rewritten because blessing was requested.
    Blessed,
}

/// Why a committed file does not match its generated text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheckError {
    /// The committed file does not exist.
    Missing(PathBuf),
    /// The committed file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
    /// The generated file could not be written (blessing).
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
    /// The committed file differs from the generated text.
    Differs {
        /// The file.
        path: PathBuf,
        /// First differing line, 1-based.
        line: usize,
        /// That line in the generated text (empty past its end).
        expected: String,
        /// That line in the committed file (empty past its end).
        actual: String,
    },
}

impl fmt::Display for FileCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(path) => write!(
                f,
                "{} does not exist; generate it with `{BLESS_COMMAND}`",
                path.display()
            ),
            Self::Read { path, kind } => write!(f, "cannot read {}: {kind}", path.display()),
            Self::Write { path, kind } => write!(f, "cannot write {}: {kind}", path.display()),
            Self::Differs {
                path,
                line,
                expected,
                actual,
            } => write!(
                f,
                "{} is out of date at line {line}:\n  generated: {expected}\n  committed: {actual}\n\
                 regenerate it with `{BLESS_COMMAND}` and review the difference",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FileCheckError {}

/// The first line (1-based) at which `a` and `b` differ, with both lines; `None` if equal.
pub fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    if a == b {
        return None;
    }
    let mut la = a.split('\n');
    let mut lb = b.split('\n');
    let mut n = 0;
    loop {
        n += 1;
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => return Some((n, String::new(), String::new())),
            (x, y) => {
                return Some((
                    n,
                    x.unwrap_or_default().to_string(),
                    y.unwrap_or_default().to_string(),
                ));
            }
        }
    }
}

/// Compare the file at `path` with `expected`; with `bless`, rewrite it when it differs.
pub fn check_generated(
    path: &Path,
    expected: &str,
    bless: bool,
) -> Result<FileState, FileCheckError> {
    let actual = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(FileCheckError::Read {
                path: path.to_path_buf(),
                kind: e.kind(),
            });
        }
    };
    if actual.as_deref() == Some(expected) {
        return Ok(FileState::UpToDate);
    }
    if bless {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| FileCheckError::Write {
                path: path.to_path_buf(),
                kind: e.kind(),
            })?;
        }
        std::fs::write(path, expected).map_err(|e| FileCheckError::Write {
            path: path.to_path_buf(),
            kind: e.kind(),
        })?;
        return Ok(FileState::Blessed);
    }
    match actual {
        None => Err(FileCheckError::Missing(path.to_path_buf())),
        Some(actual) => {
            let (line, expected, actual) =
                first_difference(expected, &actual).unwrap_or((0, String::new(), String::new()));
            Err(FileCheckError::Differs {
                path: path.to_path_buf(),
                line,
                expected,
                actual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vir-spec-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn first_difference_reports_line_and_both_texts() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(
            first_difference("a\nb\nc", "a\nx\nc"),
            Some((2, "b".to_string(), "x".to_string()))
        );
        assert_eq!(
            first_difference("a\nb", "a"),
            Some((2, "b".to_string(), String::new()))
        );
    }

    #[test]
    fn check_without_bless_reports_difference_and_keeps_file() {
        let p = scratch("differs.txt");
        std::fs::write(&p, "one\ntwo\n").unwrap();
        let err = check_generated(&p, "one\nTWO\n", false).unwrap_err();
        assert_eq!(
            err,
            FileCheckError::Differs {
                path: p.clone(),
                line: 2,
                expected: "TWO".to_string(),
                actual: "two".to_string()
            }
        );
        assert!(err.to_string().contains(BLESS_COMMAND));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn check_with_bless_rewrites_then_is_up_to_date() {
        let p = scratch("bless.txt");
        std::fs::write(&p, "old\n").unwrap();
        assert_eq!(check_generated(&p, "new\n", true), Ok(FileState::Blessed));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(check_generated(&p, "new\n", false), Ok(FileState::UpToDate));
    }

    #[test]
    fn missing_file_is_reported_or_created() {
        let p = scratch("missing.txt");
        let _ = std::fs::remove_file(&p);
        assert_eq!(
            check_generated(&p, "x", false),
            Err(FileCheckError::Missing(p.clone()))
        );
        assert_eq!(check_generated(&p, "x", true), Ok(FileState::Blessed));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x");
    }
}

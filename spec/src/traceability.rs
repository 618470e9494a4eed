//! Traceability: which requirement IDs the Rust sources cite, and which `MUST`s no test cites.
//!
//! [`scan_workspace`] reads every `*.rs` file under the workspace root, skipping directories
//! named `target` and hidden directories (`.git`, …) and not following symbolic links, and
//! collects every requirement ID mentioned (see [`crate::requirements::scan_ids`]; ranges such
//! as `…-001..003` count for every ID of the range).
//!
//! Each citation is classified as *from a test* or *from other code* by a heuristic on the
//! file's path and the citation's position ([`TestRegion`]):
//!
//! * a file with a path component named `tests` (integration tests, a `tests/` module
//!   directory) is test code throughout;
//! * so is a file under one of [`TEST_CODE_DIRS`]: the conformance suite's checks, which are
//!   code only tests run (`conformance/tests/reference.rs` runs every check against the
//!   reference host and requires it to pass);
//! * otherwise the first `#[cfg(test)]` (or `#[cfg(all(test, …))]`) attribute that is directly
//!   followed — blank lines, comments and further attributes aside — by a `mod` item starts the
//!   test region, which runs to the end of the file. This follows the convention that the unit
//!   test module closes the file; a file that puts code after its test module has that code
//!   counted as test code.
//!
//! [`trace`] compares the citations with the register: IDs cited that the register does not
//! list, and `MUST` requirements that no test cites. [`render_report`] formats the result.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::requirements::{Level, Requirement, RequirementId, TsvError, parse_tsv, scan_ids};

/// One mention of a requirement ID in a Rust source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    /// The ID.
    pub id: RequirementId,
    /// The file, relative to the scanned root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Whether the mention is in test code (see the module documentation).
    pub from_test: bool,
}

/// Why the workspace could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// A directory could not be listed.
    ListDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
    /// A file could not be read as UTF-8 text.
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ListDir { path, kind } => write!(f, "cannot list {}: {kind}", path.display()),
            Self::Read { path, kind } => write!(f, "cannot read {}: {kind}", path.display()),
        }
    }
}

impl std::error::Error for ScanError {}

/// Every `*.rs` file under `root`, sorted, relative to `root`.
pub fn rust_files(root: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| ScanError::ListDir {
            path: dir.clone(),
            kind: e.kind(),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| ScanError::ListDir {
                path: dir.clone(),
                kind: e.kind(),
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let ty = entry.file_type().map_err(|e| ScanError::ListDir {
                path: dir.clone(),
                kind: e.kind(),
            })?;
            if ty.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(rel.join(name));
                }
            } else if ty.is_file() && name.ends_with(".rs") {
                out.push(rel.join(name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where the test code of a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestRegion {
    /// The whole file is test code (a path component is `tests`).
    WholeFile,
    /// Lines from this one (1-based, the `#[cfg(test)]` line) to the end of the file.
    From(usize),
    /// No test code.
    None,
}

impl TestRegion {
    /// Whether `line` (1-based) is in the test region.
    pub fn contains(self, line: usize) -> bool {
        match self {
            Self::WholeFile => true,
            Self::From(start) => line >= start,
            Self::None => false,
        }
    }
}

fn is_cfg_test(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("#[cfg(test)]")
        || t.starts_with("#[cfg(all(test,")
        || t.starts_with("#[cfg(all(test ,")
}

fn is_mod_item(line: &str) -> bool {
    let t = line.trim_start();
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub(super) "))
        .or_else(|| t.strip_prefix("pub "))
        .unwrap_or(t);
    t.starts_with("mod ")
}

/// Directories (relative to the workspace root) whose files are test code throughout although
/// they are not under a `tests` directory.
pub const TEST_CODE_DIRS: &[&str] = &["conformance/src/checks"];

/// The test region of a file with path `rel` and contents `text`.
pub fn test_region(rel: &Path, text: &str) -> TestRegion {
    if rel
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n == "tests"))
        || TEST_CODE_DIRS.iter().any(|d| rel.starts_with(d))
    {
        return TestRegion::WholeFile;
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !is_cfg_test(line) {
            continue;
        }
        let next = lines[i + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !(l.is_empty() || l.starts_with("//") || l.starts_with("#[")));
        if next.is_some_and(is_mod_item) {
            return TestRegion::From(i + 1);
        }
    }
    TestRegion::None
}

/// The citations in one file (`rel` is its path relative to the scanned root).
pub fn citations_in(rel: &Path, text: &str) -> Vec<Citation> {
    let region = test_region(rel, text);
    scan_ids(text)
        .into_iter()
        .map(|m| Citation {
            id: m.id,
            file: rel.to_path_buf(),
            line: m.line,
            from_test: region.contains(m.line),
        })
        .collect()
}

/// Every citation in every `*.rs` file under `root`.
pub fn scan_workspace(root: &Path) -> Result<Vec<Citation>, ScanError> {
    let mut out = Vec::new();
    for rel in rust_files(root)? {
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path).map_err(|e| ScanError::Read {
            path: path.clone(),
            kind: e.kind(),
        })?;
        out.extend(citations_in(&rel, &text));
    }
    Ok(out)
}

/// How one requirement is cited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The requirement's ID.
    pub id: RequirementId,
    /// Its level.
    pub level: Level,
    /// Citations from tests.
    pub tests: usize,
    /// Citations from other code.
    pub code: usize,
}

/// The traceability of a register against a set of citations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceReport {
    /// Citations of IDs the register does not list.
    pub unknown: Vec<Citation>,
    /// `MUST` requirements that no test cites, in register order.
    pub untested_musts: Vec<RequirementId>,
    /// Every requirement with its citation counts, in register order.
    pub coverage: Vec<Coverage>,
}

impl TraceReport {
    /// Whether no unknown ID is cited and every `MUST` is cited by a test.
    pub fn is_complete(&self) -> bool {
        self.unknown.is_empty() && self.untested_musts.is_empty()
    }
}

/// Compare citations with the register.
pub fn trace(reqs: &[Requirement], citations: &[Citation]) -> TraceReport {
    let mut counts: BTreeMap<&RequirementId, (usize, usize)> =
        reqs.iter().map(|r| (&r.id, (0, 0))).collect();
    let mut unknown = Vec::new();
    for c in citations {
        match counts.get_mut(&c.id) {
            Some((tests, code)) => {
                if c.from_test {
                    *tests += 1;
                } else {
                    *code += 1;
                }
            }
            None => unknown.push(c.clone()),
        }
    }
    let coverage: Vec<Coverage> = reqs
        .iter()
        .map(|r| {
            let (tests, code) = counts.get(&r.id).copied().unwrap_or((0, 0));
            Coverage {
                id: r.id.clone(),
                level: r.level,
                tests,
                code,
            }
        })
        .collect();
    let untested_musts = coverage
        .iter()
        .filter(|c| c.level == Level::Must && c.tests == 0)
        .map(|c| c.id.clone())
        .collect();
    TraceReport {
        unknown,
        untested_musts,
        coverage,
    }
}

/// Why [`workspace_report`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// The register could not be read.
    Read {
        /// The register's path.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
    /// The register is malformed.
    Register(TsvError),
    /// The sources could not be scanned.
    Scan(ScanError),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, kind } => write!(f, "cannot read {}: {kind}", path.display()),
            Self::Register(e) => e.fmt(f),
            Self::Scan(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReportError {}

/// The traceability of the workspace at `root`: its register
/// ([`REQUIREMENTS_PATH`](crate::REQUIREMENTS_PATH)) against every `*.rs` file under it.
pub fn workspace_report(root: &Path) -> Result<TraceReport, ReportError> {
    let path = root.join(crate::REQUIREMENTS_PATH);
    let text = std::fs::read_to_string(&path).map_err(|e| ReportError::Read {
        path: path.clone(),
        kind: e.kind(),
    })?;
    let reqs = parse_tsv(&text).map_err(ReportError::Register)?;
    let citations = scan_workspace(root).map_err(ReportError::Scan)?;
    Ok(trace(&reqs, &citations))
}

/// A human-readable coverage report: totals per level, then every requirement with its test
/// and code citation counts, then the problems.
pub fn render_report(report: &TraceReport) -> String {
    let mut out = String::new();
    out.push_str("Requirement coverage (citations in Rust sources)\n\n");
    for level in [Level::Must, Level::Should, Level::May] {
        let of_level: Vec<&Coverage> = report
            .coverage
            .iter()
            .filter(|c| c.level == level)
            .collect();
        let tested = of_level.iter().filter(|c| c.tests > 0).count();
        let _ = writeln!(
            out,
            "{:<6} {:>4} requirements, {:>4} cited by a test",
            level.as_str(),
            of_level.len(),
            tested
        );
    }
    out.push_str("\nID                 LEVEL   TESTS  CODE\n");
    for c in &report.coverage {
        let _ = writeln!(
            out,
            "{:<18} {:<6} {:>6} {:>5}{}",
            c.id.to_string(),
            c.level.as_str(),
            c.tests,
            c.code,
            if c.level == Level::Must && c.tests == 0 {
                "  <- MUST without a test"
            } else {
                ""
            }
        );
    }
    if !report.unknown.is_empty() {
        out.push_str("\nUnknown IDs cited:\n");
        for c in &report.unknown {
            let _ = writeln!(out, "  {} at {}:{}", c.id, c.file.display(), c.line);
        }
    }
    let _ = writeln!(
        out,
        "\n{} unknown ID citation(s), {} MUST requirement(s) without a test",
        report.unknown.len(),
        report.untested_musts.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // IDs are assembled at run time so that this file cites no requirement itself.
    fn fake(area: &str, n: u16) -> String {
        format!("VIR-{area}-H-{n:03}")
    }

    #[test]
    fn tests_directory_is_test_code_throughout() {
        assert_eq!(
            test_region(Path::new("host-ref/tests/neg.rs"), "fn a() {}"),
            TestRegion::WholeFile
        );
        assert_eq!(
            test_region(Path::new("host-ref/src/tests/mod.rs"), ""),
            TestRegion::WholeFile
        );
        assert_eq!(
            test_region(Path::new("host-ref/src/testsuite.rs"), ""),
            TestRegion::None
        );
    }

    #[test]
    fn conformance_checks_are_test_code() {
        assert_eq!(
            test_region(Path::new("conformance/src/checks/activate.rs"), "fn a() {}"),
            TestRegion::WholeFile
        );
        assert_eq!(
            test_region(Path::new("conformance/src/runner.rs"), "fn a() {}"),
            TestRegion::None
        );
    }

    #[test]
    fn cfg_test_module_starts_the_test_region() {
        let text = "fn a() {}\n#[cfg(test)]\nuse x::y;\n\n#[cfg(test)]\n// c\n#[allow(dead_code)]\nmod tests {\n}\n";
        assert_eq!(
            test_region(Path::new("a/src/lib.rs"), text),
            TestRegion::From(5)
        );
        let text = "#[cfg(all(test, feature = \"x\"))]\npub(crate) mod t {}\n";
        assert_eq!(
            test_region(Path::new("a/src/lib.rs"), text),
            TestRegion::From(1)
        );
        assert_eq!(
            test_region(Path::new("a/src/lib.rs"), "#[cfg(test)]\nfn f() {}\n"),
            TestRegion::None
        );
    }

    #[test]
    fn citations_are_classified_by_region() {
        let (a, b) = (fake("ACT", 1), fake("ACT", 2));
        let text = format!("// {a}\nfn f() {{}}\n#[cfg(test)]\nmod tests {{\n    // {b}\n}}\n");
        let got = citations_in(Path::new("host-ref/src/act.rs"), &text);
        assert_eq!(
            got.iter()
                .map(|c| (c.id.to_string(), c.line, c.from_test))
                .collect::<Vec<_>>(),
            vec![(a, 1, false), (b, 5, true)]
        );
    }

    #[test]
    fn trace_reports_unknown_and_untested_musts() {
        let tsv = format!(
            "{}\tMUST\tH\ts\tx\n{}\tMUST\tH\ts\tx\n{}\tSHOULD\tH\ts\tx\n",
            fake("ALC", 1),
            fake("ALC", 2),
            fake("ALC", 3)
        );
        let reqs = parse_tsv(&tsv).unwrap();
        let text = format!(
            "// {} {}\n#[cfg(test)]\nmod tests {{ // {} {} }}\n",
            fake("ALC", 2),
            fake("ZZZ", 9),
            fake("ALC", 1),
            fake("ALC", 1)
        );
        let cites = citations_in(Path::new("h/src/a.rs"), &text);
        let r = trace(&reqs, &cites);
        assert_eq!(r.unknown.len(), 1);
        assert_eq!(r.unknown[0].id.to_string(), fake("ZZZ", 9));
        assert_eq!(r.unknown[0].line, 1);
        assert_eq!(
            r.untested_musts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![fake("ALC", 2)]
        );
        assert_eq!(
            r.coverage
                .iter()
                .map(|c| (c.tests, c.code))
                .collect::<Vec<_>>(),
            vec![(2, 0), (0, 1), (0, 0)]
        );
        assert!(!r.is_complete());
        let text = render_report(&r);
        assert!(
            text.contains("MUST      2 requirements,    1 cited by a test\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} at h/src/a.rs:1\n", fake("ZZZ", 9))),
            "{text}"
        );
        assert!(text.contains("1 unknown ID citation(s), 1 MUST requirement(s) without a test\n"));
    }

    #[test]
    fn workspace_report_reads_register_and_sources() {
        let root = std::env::temp_dir().join(format!("vir-spec-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("spec")).unwrap();
        std::fs::create_dir_all(root.join("h/tests")).unwrap();
        assert_eq!(
            workspace_report(&root),
            Err(ReportError::Read {
                path: root.join(crate::REQUIREMENTS_PATH),
                kind: io::ErrorKind::NotFound
            })
        );
        let reg = root.join(crate::REQUIREMENTS_PATH);
        std::fs::write(&reg, "bad line\n").unwrap();
        assert!(matches!(
            workspace_report(&root),
            Err(ReportError::Register(TsvError { line: 1, .. }))
        ));
        std::fs::write(&reg, format!("{}\tMUST\tH\ts\tx\n", fake("FRE", 1))).unwrap();
        std::fs::write(
            root.join("h/tests/t.rs"),
            format!("// {}\n", fake("FRE", 1)),
        )
        .unwrap();
        let r = workspace_report(&root).unwrap();
        assert!(r.is_complete());
        assert_eq!(r.coverage[0].tests, 1);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn rust_files_skip_target_and_hidden_directories() {
        let root = std::env::temp_dir().join(format!("vir-spec-trace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["a/src", "a/tests", "target/debug", ".git", "b/target"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a/src/lib.rs",
            "a/tests/t.rs",
            "target/debug/x.rs",
            ".git/y.rs",
            "b/target/z.rs",
            "a/src/notes.md",
        ] {
            std::fs::write(root.join(f), "").unwrap();
        }
        assert_eq!(
            rust_files(&root).unwrap(),
            vec![PathBuf::from("a/src/lib.rs"), PathBuf::from("a/tests/t.rs")]
        );
        let missing = root.join("nope");
        assert_eq!(
            rust_files(&missing),
            Err(ScanError::ListDir {
                path: missing.clone(),
                kind: io::ErrorKind::NotFound
            })
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

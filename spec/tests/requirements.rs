//! The requirement register (spec/requirements.tsv) agrees with the specification
//! (spec/vir-v1.md), and the Rust sources cite only requirements that exist.

use vir_spec::requirements::{self, Level, Problem, Requirement};
use vir_spec::traceability;
use vir_spec::{REQUIREMENTS_PATH, SPEC_PATH, default_root};

fn read(rel: &str) -> String {
    let path = default_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn register() -> Vec<Requirement> {
    requirements::parse_tsv(&read(REQUIREMENTS_PATH)).unwrap_or_else(|e| panic!("{e}"))
}

fn fail_on(problems: &[Problem], what: &str) {
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!("{} {what}:\n  {}", problems.len(), list.join("\n  "));
    }
}

#[test]
fn register_parses_and_ids_are_unique() {
    let reqs = register();
    assert!(!reqs.is_empty(), "{REQUIREMENTS_PATH} lists no requirement");
    fail_on(
        &requirements::duplicate_ids(&reqs),
        "duplicate IDs in the register",
    );
    for r in &reqs {
        assert_eq!(r.side, r.id.side(), "{}", r.id);
        assert_eq!(
            requirements::RequirementId::parse(&r.id.to_string()).as_ref(),
            Ok(&r.id),
            "IDs are well formed and print as parsed"
        );
    }
}

/// Same IDs in the register and as `**VIR-…**` tags, every MUST/SHOULD statement tagged, and the
/// register's level equal to the strongest RFC 2119 keyword of the tagged statement.
#[test]
fn register_and_spec_agree() {
    let problems = requirements::check_consistency(&register(), &read(SPEC_PATH));
    fail_on(
        &problems,
        "disagreements between requirements.tsv and vir-v1.md",
    );
}

#[test]
fn spec_statements_cover_every_level() {
    let st = requirements::statements(&read(SPEC_PATH));
    for level in [Level::Must, Level::Should] {
        assert!(
            st.tagged.iter().any(|s| s.level() == Some(level)),
            "no tagged {level} statement found: the statement model does not match the document"
        );
    }
}

#[test]
fn sources_cite_no_unknown_requirement() {
    let reqs = register();
    let cites = traceability::scan_workspace(&default_root()).unwrap_or_else(|e| panic!("{e}"));
    let report = traceability::trace(&reqs, &cites);
    let unknown: Vec<String> = report
        .unknown
        .iter()
        .map(|c| format!("{} at {}:{}", c.id, c.file.display(), c.line))
        .collect();
    assert!(
        unknown.is_empty(),
        "unknown requirement IDs cited:\n  {}",
        unknown.join("\n  ")
    );
}

#[test]
fn traceability_every_must_is_tested() {
    let reqs = register();
    let cites = traceability::scan_workspace(&default_root()).unwrap_or_else(|e| panic!("{e}"));
    let report = traceability::trace(&reqs, &cites);
    assert!(
        report.is_complete(),
        "{}",
        traceability::render_report(&report)
    );
}

/// Prints the coverage report (run with `--nocapture` to read it); checks that it lists every
/// requirement.
#[test]
fn coverage_report_lists_every_requirement() {
    let reqs = register();
    let cites = traceability::scan_workspace(&default_root()).unwrap_or_else(|e| panic!("{e}"));
    let report = traceability::trace(&reqs, &cites);
    assert_eq!(report.coverage.len(), reqs.len());
    let text = traceability::render_report(&report);
    for r in &reqs {
        assert!(
            text.contains(&r.id.to_string()),
            "{} missing from the report",
            r.id
        );
    }
    println!("{text}");
}

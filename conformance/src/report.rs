//! Rendering a [`Report`]: a per-requirement text table, JSON, and JUnit XML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use vir_spec::requirements::Level;

use crate::outcome::Outcome;
use crate::runner::{CheckRun, Report, Verdict};

/// The per-requirement report: one line per requirement (ID, level, verdict, checks), indented
/// notes for failures and untestable requirements, then the summary line.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "vIR host conformance: {}", report.host);
    for r in &report.requirements {
        let verdict = match (r.verdict, r.level) {
            (Verdict::Fail, Level::Must) if r.expected_failure => "FAIL (expected)",
            (Verdict::Pass, Level::Must) if r.expected_failure => "PASS (unexpected)",
            (Verdict::Fail, _) if r.level != Level::Must => "not met",
            (Verdict::Pass, _) if r.partial => "pass (partial)",
            (v, _) => v.keyword(),
        };
        let checks = if r.checks.is_empty() {
            "-".to_string()
        } else {
            r.checks.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<15} {:<6} {:<17} {}",
            r.id,
            r.level.as_str(),
            verdict,
            checks
        );
        let show_notes = matches!(
            r.verdict,
            Verdict::Fail | Verdict::NotTestable | Verdict::NoCheck | Verdict::NotApplicable
        ) || r.partial;
        if show_notes {
            for n in &r.notes {
                let _ = writeln!(out, "    {n}");
            }
        }
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

fn outcome_json(o: &Outcome) -> Value {
    match o.reason() {
        Some(reason) => json!({ "result": o.keyword(), "reason": reason }),
        None => json!({ "result": o.keyword() }),
    }
}

/// The report as JSON: host, summary, requirements, checks.
pub fn json(report: &Report) -> Value {
    let s = report.summary();
    let summary = json!({
        "passed": s.passed,
        "failed": s.failed,
        "expected_failures": s.expected_failures,
        "unexpected_passes": s.unexpected_passes,
        "not_testable": s.not_testable,
        "without_check": s.without_check,
        "not_applicable": s.not_applicable,
        "advisory_met": s.advisory_met,
        "advisory_not_met": s.advisory_not_met,
        "checks": s.checks,
        "checks_passed": s.checks_passed,
        "checks_failed": s.checks_failed,
        "checks_not_testable": s.checks_not_testable,
        "checks_not_applicable": s.checks_not_applicable,
    });
    let requirements: Vec<Value> = report
        .requirements
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "level": r.level.as_str(),
                "section": r.section,
                "summary": r.summary,
                "result": r.verdict.keyword().to_ascii_lowercase(),
                "partial": r.partial,
                "expected_failure": r.expected_failure,
                "checks": r.checks,
                "notes": r.notes,
            })
        })
        .collect();
    let checks: Vec<Value> = report
        .runs
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("name".into(), json!(c.check.name));
            m.insert("area".into(), json!(c.check.area()));
            m.insert("ids".into(), json!(c.check.ids));
            m.insert("description".into(), json!(c.check.description));
            m.insert("advisory".into(), json!(c.advisory));
            if let Value::Object(o) = outcome_json(&c.outcome) {
                m.extend(o);
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "host": report.host,
        "passed": !report.failed(),
        "summary": summary,
        "requirements": requirements,
        "checks": checks,
    })
}

/// Escape text for an XML attribute or element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                let _ = write!(out, "&#x{:x};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The report as JUnit XML: one `<testsuite>` per area, one `<testcase>` per check (named by the
/// check, with its requirement IDs), `<failure>` for mandatory failures, `<skipped>` for checks
/// that are not testable, not applicable, or advisory and not met.
pub fn junit(report: &Report) -> String {
    let mut areas: BTreeMap<&str, Vec<&CheckRun>> = BTreeMap::new();
    for r in &report.runs {
        areas.entry(r.check.area()).or_default().push(r);
    }
    let is_failure = |r: &CheckRun| {
        !r.advisory && matches!(r.outcome, Outcome::Fail(_)) && !report.failure_expected(r)
    };
    let is_skipped = |r: &CheckRun| !matches!(r.outcome, Outcome::Pass) && !is_failure(r);
    let total = report.runs.len();
    let failures = report.runs.iter().filter(|r| is_failure(r)).count();
    let skipped = report.runs.iter().filter(|r| is_skipped(r)).count();
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<testsuites name="vir-conform" tests="{total}" failures="{failures}" errors="0" skipped="{skipped}">"#
    );
    for (area, runs) in &areas {
        let f = runs.iter().filter(|r| is_failure(r)).count();
        let s = runs.iter().filter(|r| is_skipped(r)).count();
        let _ = writeln!(
            out,
            r#"  <testsuite name="{}" tests="{}" failures="{f}" errors="0" skipped="{s}">"#,
            xml_escape(area),
            runs.len()
        );
        let _ = writeln!(
            out,
            r#"    <properties><property name="host" value="{}"/></properties>"#,
            xml_escape(&report.host)
        );
        for r in runs {
            let name = format!("{} [{}]", r.check.name, r.check.ids.join(" "));
            let _ = write!(
                out,
                r#"    <testcase classname="vir-conform.{}" name="{}""#,
                xml_escape(area),
                xml_escape(&name)
            );
            let reason = r.outcome.reason().unwrap_or_default();
            if is_failure(r) {
                let _ = writeln!(out, ">");
                let _ = writeln!(
                    out,
                    r#"      <failure message="{}" type="nonconformance">{}</failure>"#,
                    xml_escape(&reason),
                    xml_escape(r.check.description)
                );
                let _ = writeln!(out, "    </testcase>");
            } else if is_skipped(r) {
                let why = if r.advisory && matches!(r.outcome, Outcome::Fail(_)) {
                    format!("advisory requirement not met: {reason}")
                } else if matches!(r.outcome, Outcome::Fail(_)) {
                    format!("expected failure: {reason}")
                } else {
                    format!("{}: {reason}", r.outcome.keyword())
                };
                let _ = writeln!(out, ">");
                let _ = writeln!(out, r#"      <skipped message="{}"/>"#, xml_escape(&why));
                let _ = writeln!(out, "    </testcase>");
            } else {
                let _ = writeln!(out, "/>");
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    let _ = writeln!(out, "</testsuites>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Failure;
    use crate::registry;
    use crate::runner::{RunOptions, build_report};
    use vir_abi::status::Status;

    fn sample() -> Report {
        sample_with(Vec::new())
    }

    fn sample_with(expect_fail: Vec<String>) -> Report {
        let all = registry::all();
        let pick = |id: &str| {
            *all.iter()
                .find(|c| c.ids.contains(&id))
                .expect("a check for the id")
        };
        let runs = vec![
            CheckRun {
                check: pick("VIR-CALL-H-002"),
                outcome: Outcome::Fail(Failure::Status {
                    step: "code 0x20 <&>".into(),
                    expected: crate::outcome::Expected::Exactly(Status::UNKNOWN_CALL),
                    actual: Status::SUCCESS,
                }),
                advisory: false,
            },
            CheckRun {
                check: pick("VIR-NEG-H-001"),
                outcome: Outcome::Pass,
                advisory: false,
            },
            CheckRun {
                check: pick("VIR-SEC-H-009"),
                outcome: Outcome::NotTestable("no hook".into()),
                advisory: true,
            },
        ];
        let options = RunOptions {
            only: Some("x".into()),
            expect_fail,
        };
        build_report("test host".into(), runs, &options).unwrap()
    }

    #[test]
    fn text_report_lists_requirements_and_the_summary() {
        let r = sample();
        let t = text(&r);
        assert!(t.contains("VIR-CALL-H-002  MUST   FAIL "), "{t}");
        assert!(
            t.contains("expected UNKNOWN_CALL (1), got SUCCESS (0)"),
            "{t}"
        );
        assert!(t.contains("VIR-NEG-H-001   MUST   pass "), "{t}");
        assert!(
            t.lines()
                .last()
                .unwrap()
                .starts_with("conformance: 1 passed, 1 failed, 0 not testable"),
            "{t}"
        );
        assert!(r.failed());
        assert_eq!(r.failed_requirements(), vec!["VIR-CALL-H-002"]);
    }

    #[test]
    fn junit_counts_failures_and_skips_and_escapes() {
        let x = junit(&sample());
        assert!(
            x.contains(
                r#"<testsuites name="vir-conform" tests="3" failures="1" errors="0" skipped="1">"#
            ),
            "{x}"
        );
        assert!(x.contains("code 0x20 &lt;&amp;&gt;"), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert_eq!(
            x.matches("<testsuite ").count(),
            x.matches("</testsuite>").count()
        );
    }

    #[test]
    fn expected_failures_do_not_fail_the_run_but_unexpected_passes_do() {
        let r = sample_with(vec!["VIR-CALL-H-002".into()]);
        assert!(!r.failed());
        let s = r.summary();
        assert_eq!((s.failed, s.expected_failures, s.passed), (0, 1, 1));
        assert!(text(&r).contains("VIR-CALL-H-002  MUST   FAIL (expected)"));
        let x = junit(&r);
        assert_eq!(x.matches("<failure ").count(), 0, "{x}");
        assert!(x.contains("expected failure: code 0x20"), "{x}");
        let r = sample_with(vec!["VIR-NEG-H-001".into()]);
        assert!(r.failed());
        assert_eq!(r.summary().unexpected_passes, 1);
        // Built at run time so that the traceability scan does not see an unknown ID cited.
        let unknown = format!("VIR-{}-H-001", "ZZZ");
        let bad = RunOptions {
            only: None,
            expect_fail: vec![unknown.clone()],
        };
        assert!(matches!(
            build_report("h".into(), Vec::new(), &bad),
            Err(crate::runner::RunError::UnknownRequirement(id)) if id == unknown
        ));
    }

    #[test]
    fn json_report_carries_verdicts() {
        let j = json(&sample());
        assert_eq!(j["passed"], json!(false));
        assert_eq!(j["summary"]["failed"], json!(1));
        let reqs = j["requirements"].as_array().unwrap();
        let call = reqs.iter().find(|r| r["id"] == "VIR-CALL-H-002").unwrap();
        assert_eq!(call["result"], json!("fail"));
        assert_eq!(j["checks"].as_array().unwrap().len(), 3);
        assert_eq!(xml_escape("a\u{1}b\"'"), "a&#x1;b&quot;&apos;");
    }
}

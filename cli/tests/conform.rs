//! `vir conform`: the suite against the reference host exits 0 and writes well-formed JUnit XML
//! whose counts match; a broken host exits 1 naming the requirement it breaks.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value as Json;

/// Requirements the reference host is known to depart from: none. The test accepts that these
/// fail, and nothing else.
const KNOWN_DEPARTURES: &[&str] = &[];

fn vir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vir"))
        .args(args)
        .output()
        .expect("vir runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 stdout")
}

/// An element of a minimal XML reading: name and attributes.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
}

/// A minimal well-formedness check: every tag closed in order, attributes quoted; returns
/// the elements in document order.
fn parse_xml(text: &str) -> Vec<Element> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>').expect("every tag is closed by '>'");
        let tag = &after[..end];
        rest = &after[end + 1..];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if tag.starts_with('?') {
            assert!(tag.ends_with('?'), "declaration {tag}");
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().expect("a closing tag has an opening tag");
            assert_eq!(open, name.trim(), "tags close in order");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
        assert!(!name.is_empty(), "element without a name: {tag}");
        let mut attrs = BTreeMap::new();
        let mut a = body[name.len()..].trim();
        while !a.is_empty() {
            let eq = a.find('=').expect("attribute has '='");
            let key = a[..eq].trim().to_string();
            let v = &a[eq + 1..];
            assert!(v.starts_with('"'), "attribute {key} is quoted");
            let close = v[1..].find('"').expect("attribute quote closed");
            attrs.insert(key, v[1..1 + close].to_string());
            a = v[close + 2..].trim();
        }
        out.push(Element {
            name: name.clone(),
            attrs,
        });
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    out
}

fn count(elements: &[Element], name: &str) -> usize {
    elements.iter().filter(|e| e.name == name).count()
}

fn attr(e: &Element, key: &str) -> usize {
    e.attrs
        .get(key)
        .unwrap_or_else(|| panic!("{} has no {key}", e.name))
        .parse()
        .expect("a count")
}

/// The MUST requirements the reference host fails now (from `vir conform --json`).
fn reference_failures() -> Vec<String> {
    let o = vir(&["conform", "--json"]);
    let j: Json = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let failed: Vec<String> = j["requirements"]
        .as_array()
        .expect("requirements")
        .iter()
        .filter(|r| r["level"] == "MUST" && r["result"] == "fail")
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    for id in &failed {
        assert!(
            KNOWN_DEPARTURES.contains(&id.as_str()),
            "unexpected failure {id}"
        );
    }
    let expected_code = if failed.is_empty() { 0 } else { 1 };
    assert_eq!(
        o.status.code(),
        Some(expected_code),
        "exit status follows the failures"
    );
    assert_eq!(j["passed"], Json::Bool(failed.is_empty()));
    failed
}

#[test]
fn conform_reference_exits_0_and_writes_valid_junit() {
    let known = reference_failures();
    let dir = std::env::temp_dir().join(format!("vir-conform-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("conformance.xml");
    let path_s = path.to_str().expect("UTF-8 path").to_string();
    let mut args = vec!["conform", "--junit", path_s.as_str()];
    for id in &known {
        args.extend(["--expect-fail", id.as_str()]);
    }
    let o = vir(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = stdout(&o);
    let summary = text.lines().last().expect("a summary line");
    assert!(summary.starts_with("conformance: "), "{summary}");
    assert!(summary.contains(" 0 failed,"), "{summary}");
    assert!(text.contains("VIR-ALC-H-004   MUST   pass"), "{text}");

    let xml = std::fs::read_to_string(&path).expect("JUnit file written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(xml.starts_with("<?xml version=\"1.0\""));
    let elements = parse_xml(&xml);
    let root = &elements[0];
    assert_eq!(root.name, "testsuites");
    let cases = count(&elements, "testcase");
    assert_eq!(attr(root, "tests"), cases);
    assert_eq!(attr(root, "failures"), count(&elements, "failure"));
    assert_eq!(attr(root, "failures"), 0);
    assert_eq!(attr(root, "skipped"), count(&elements, "skipped"));
    assert!(cases >= 120, "{cases} test cases");
    let suites: Vec<&Element> = elements.iter().filter(|e| e.name == "testsuite").collect();
    assert!(suites.len() >= 15, "{} suites (one per area)", suites.len());
    assert_eq!(
        suites.iter().map(|s| attr(s, "tests")).sum::<usize>(),
        cases
    );
    for s in &suites {
        let name = s.attrs.get("name").expect("suite name");
        let classname = format!("vir-conform.{name}");
        let mine = elements
            .iter()
            .filter(|e| e.name == "testcase" && e.attrs.get("classname") == Some(&classname))
            .count();
        assert_eq!(mine, attr(s, "tests"), "suite {name}");
    }
    // Every test case names its requirement IDs.
    for e in elements.iter().filter(|e| e.name == "testcase") {
        assert!(e.attrs["name"].contains("[VIR-"), "{:?}", e.attrs);
    }
}

#[test]
fn conform_broken_host_exits_1_naming_the_requirement() {
    // VIR-CALL-H-005: a host that skips the reserved-field check.
    let o = vir(&["conform", "--host", "mutant:skip-reserved-check"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("VIR-CALL-H-005  MUST   FAIL"), "{text}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("vir: error: conformance failed: "), "{err}");
    assert!(err.contains("VIR-CALL-H-005"), "{err}");
    // And its JUnit file carries the failure.
    let dir = std::env::temp_dir().join(format!("vir-conform-mutant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("m.xml");
    let o = vir(&[
        "conform",
        "--host",
        "mutant:accept-foreign-handles",
        "--only",
        "VIR-SEC",
        "--junit",
        path.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let xml = std::fs::read_to_string(&path).expect("JUnit file written");
    let _ = std::fs::remove_dir_all(&dir);
    let elements = parse_xml(&xml);
    assert_eq!(count(&elements, "failure"), 1, "{xml}");
    assert_eq!(attr(&elements[0], "failures"), 1);
    assert!(xml.contains("sec_foreign_handles [VIR-SEC-H-004]"), "{xml}");
}

#[test]
fn conform_json_only_and_usage_errors() {
    let o = vir(&["conform", "--only", "VIR-ALC-H-00", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j: Json = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(j["passed"], Json::Bool(true));
    // The requirements of the selected checks: ALC-H-001..009 and the other IDs they name.
    let reqs = j["requirements"].as_array().expect("requirements");
    let ids: Vec<&str> = reqs.iter().filter_map(|r| r["id"].as_str()).collect();
    for n in 1..=9 {
        assert!(
            ids.contains(&format!("VIR-ALC-H-00{n}").as_str()),
            "{ids:?}"
        );
    }
    assert!(!ids.contains(&"VIR-ALC-H-010"), "{ids:?}");
    assert!(reqs.iter().all(|r| r["result"] == "pass"), "{reqs:?}");
    let checks = j["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .all(|c| c["ids"].as_array().is_some_and(|ids| ids
                .iter()
                .any(|id| id.as_str().is_some_and(|id| id.starts_with("VIR-ALC-H-00")))))
    );
    for (args, code, msg) in [
        (
            &["conform", "--host", "kvm"][..],
            2,
            "invalid value 'kvm' for --host",
        ),
        (
            &["conform", "--only", "no-such-check"][..],
            2,
            "no check matches 'no-such-check'",
        ),
        (
            // A guest requirement is not something a host can be expected to fail.
            &["conform", "--expect-fail", "VIR-ACT-G-001"][..],
            2,
            "VIR-ACT-G-001 is not a host requirement",
        ),
    ] {
        let o = vir(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    let o = vir(&["conform", "--list"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("mutant:read-request-twice"), "{text}");
    assert!(text.contains("call_unknown_codes"), "{text}");
}

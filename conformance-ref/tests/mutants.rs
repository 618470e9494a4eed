//! Deliberately broken hosts: a full run against each fails, and names the requirement the
//! breakage violates (the run a `vir conform --host mutant:NAME` makes).

use vir_conform::{Outcome, Report, RunOptions, report, run};
use vir_conform_ref::ReferenceConfig;
use vir_conform_ref::mutants::{Breakage, MutantFactory};

fn run_mutant(breakage: Breakage) -> Report {
    let mut f = MutantFactory {
        config: ReferenceConfig::default(),
        breakage,
    };
    run(&mut f, &RunOptions::default()).expect("the suite runs")
}

fn assert_caught(breakage: Breakage, check: &str) {
    let r = run_mutant(breakage);
    assert!(r.failed(), "{breakage:?} passed the suite");
    let id = breakage.requirement();
    assert!(
        r.failed_requirements().contains(&id),
        "{breakage:?}: {id} not among the failed requirements {:?}\n{}",
        r.failed_requirements(),
        report::text(&r)
    );
    let run = r.check(check).expect("the check ran");
    assert!(run.check.ids.contains(&id), "{check} does not name {id}");
    assert!(
        matches!(run.outcome, Outcome::Fail(_)),
        "{breakage:?}: {check} gave {:?}",
        run.outcome
    );
}

#[test]
fn unknown_call_answered_with_success_fails_call_h_002() {
    // VIR-CALL-H-002
    assert_caught(Breakage::SucceedUnknownCalls, "call_unknown_codes");
}

#[test]
fn skipped_reserved_check_fails_call_h_005() {
    // VIR-CALL-H-005
    assert_caught(Breakage::SkipReservedCheck, "call_reserved_fields");
}

#[test]
fn device_before_kind_fails_alc_h_001() {
    // VIR-ALC-H-001 (validation order)
    assert_caught(Breakage::DeviceCheckBeforeKind, "alc_undefined_kind");
}

#[test]
fn leak_on_failed_activate_fails_act_h_007_and_call_h_006() {
    // VIR-ACT-H-007, VIR-CALL-H-006
    assert_caught(Breakage::LeakOnFailedActivate, "act_failure_unwinds");
    let r = run_mutant(Breakage::LeakOnFailedActivate);
    assert!(r.failed_requirements().contains(&"VIR-CALL-H-006"));
}

#[test]
fn response_written_on_failure_fails_call_h_007() {
    // VIR-CALL-H-007
    assert_caught(
        Breakage::WriteResponseOnFailure,
        "call_failure_writes_no_response",
    );
}

#[test]
fn foreign_handle_accepted_fails_sec_h_004() {
    // VIR-SEC-H-004
    assert_caught(Breakage::AcceptForeignHandles, "sec_foreign_handles");
}

#[test]
fn request_read_twice_fails_mem_h_007_by_log_and_by_mutation() {
    // VIR-MEM-H-007: caught by the access log and by the in-flight change.
    assert_caught(Breakage::ReadRequestTwice, "mem_request_read_once");
    assert_caught(Breakage::ReadRequestTwice, "mem_request_changed_in_flight");
}

#[test]
fn wrong_session_number_fails_neg_h_007() {
    // VIR-NEG-H-007
    assert_caught(Breakage::WrongSessionNumber, "neg_commit_and_session");
}

#[test]
fn each_breakage_fails_only_where_expected() {
    // A breakage must not make unrelated areas fail wholesale: the discovery checks, which no
    // breakage touches, pass for every one of them.
    for b in Breakage::ALL {
        let mut f = MutantFactory {
            config: ReferenceConfig::default(),
            breakage: b,
        };
        let options = RunOptions {
            only: Some("VIR-DISC".into()),
            expect_fail: Vec::new(),
        };
        let r = run(&mut f, &options).expect("the suite runs");
        assert!(!r.failed(), "{b:?}\n{}", report::text(&r));
    }
}

#[test]
fn msi_enabled_with_any_message_fails_leg_h_003() {
    // VIR-LEG-H-003
    assert_caught(
        Breakage::AcceptAnyMsiEnable,
        "leg_msi_enable_needs_issued_message",
    );
}

//! Running checks against a host factory and aggregating the outcomes per requirement.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use vir_spec::requirements::{Level, TsvError};

use crate::hut::{HostFactory, SetupError};
use crate::outcome::{Failure, Outcome};
use crate::registry::{self, Check, HostKind};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Run only the checks whose name or one of whose requirement IDs contains this text (ASCII
    /// case-insensitive); `None` runs every check.
    pub only: Option<String>,
    /// Requirement IDs known to fail on this host: their failures are reported as expected and
    /// do not fail the run, but one of them passing does (so the list stays true).
    pub expect_fail: Vec<String>,
}

/// Why a run could not be carried out.
#[derive(Debug)]
pub enum RunError {
    /// The embedded requirement register does not parse.
    Register(TsvError),
    /// The factory could not create a host for a check.
    Setup {
        /// The check.
        check: &'static str,
        /// The factory's error.
        error: SetupError,
    },
    /// `--only` selected no check.
    NothingSelected(String),
    /// An expected failure names no host requirement of the register.
    UnknownRequirement(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Register(e) => write!(f, "requirement register: {e}"),
            Self::Setup { check, error } => write!(f, "check {check}: {error}"),
            Self::NothingSelected(p) => write!(f, "no check matches '{p}'"),
            Self::UnknownRequirement(id) => {
                write!(f, "{id} is not a host requirement of the specification")
            }
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Register(e) => Some(e),
            Self::Setup { error, .. } => Some(error),
            Self::NothingSelected(_) | Self::UnknownRequirement(_) => None,
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// The check.
    pub check: &'static Check,
    /// Its outcome.
    pub outcome: Outcome,
    /// Whether every requirement it verifies is a SHOULD or MAY (its failure fails nothing).
    pub advisory: bool,
}

/// The verdict on one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// At least one check passed and none failed.
    Pass,
    /// A check failed.
    Fail,
    /// The checks exist but none could run against this host.
    NotTestable,
    /// The requirement does not apply to this host.
    NotApplicable,
    /// The suite has no check for it.
    NoCheck,
}

impl Verdict {
    /// The word used in reports.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::NotTestable => "not testable",
            Self::NotApplicable => "not applicable",
            Self::NoCheck => "no check",
        }
    }
}

/// One requirement of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementResult {
    /// The ID.
    pub id: String,
    /// Its level.
    pub level: Level,
    /// The section stating it.
    pub section: String,
    /// Its one-line summary.
    pub summary: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Names of the checks that verify it.
    pub checks: Vec<&'static str>,
    /// Failure messages, or why it could not be tested, one per check that did not pass.
    pub notes: Vec<String>,
    /// Passed, but some of its checks could not run.
    pub partial: bool,
    /// Listed as an expected failure ([`RunOptions::expect_fail`]).
    pub expected_failure: bool,
}

impl RequirementResult {
    /// A MUST requirement that fails the run: failed unexpectedly, or expected to fail and
    /// passed.
    pub fn fails_run(&self) -> bool {
        self.level == Level::Must
            && matches!(
                (self.verdict, self.expected_failure),
                (Verdict::Fail, false) | (Verdict::Pass, true)
            )
    }
}

/// Counts over the host MUST requirements of a report, and over its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// MUST requirements that passed.
    pub passed: usize,
    /// MUST requirements that failed unexpectedly.
    pub failed: usize,
    /// MUST requirements that failed as expected ([`RunOptions::expect_fail`]).
    pub expected_failures: usize,
    /// MUST requirements expected to fail that passed.
    pub unexpected_passes: usize,
    /// MUST requirements not testable against this host (including those without a check).
    pub not_testable: usize,
    /// Of those, the ones the suite has no check for.
    pub without_check: usize,
    /// MUST requirements that do not apply to this host.
    pub not_applicable: usize,
    /// SHOULD/MAY requirements met.
    pub advisory_met: usize,
    /// SHOULD/MAY requirements not met.
    pub advisory_not_met: usize,
    /// Checks run.
    pub checks: usize,
    /// Checks passed.
    pub checks_passed: usize,
    /// Checks failed (advisory ones included).
    pub checks_failed: usize,
    /// Checks not testable.
    pub checks_not_testable: usize,
    /// Checks not applicable.
    pub checks_not_applicable: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance: {} passed, {} failed, {} not testable, {} not applicable",
            self.passed, self.failed, self.not_testable, self.not_applicable
        )?;
        if self.expected_failures != 0 || self.unexpected_passes != 0 {
            write!(
                f,
                ", {} expected failures, {} unexpected passes",
                self.expected_failures, self.unexpected_passes
            )?;
        }
        write!(
            f,
            " (host MUST requirements; {} without a check); advisory: {} met, {} not met; \
             checks: {} run, {} passed, {} failed, {} not testable, {} not applicable",
            self.without_check,
            self.advisory_met,
            self.advisory_not_met,
            self.checks,
            self.checks_passed,
            self.checks_failed,
            self.checks_not_testable,
            self.checks_not_applicable
        )
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Name of the host implementation.
    pub host: String,
    /// Every check run, in registry order.
    pub runs: Vec<CheckRun>,
    /// Every host requirement (only those touched by the selected checks when filtered), in
    /// register order.
    pub requirements: Vec<RequirementResult>,
}

impl Report {
    /// The counts.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            checks: self.runs.len(),
            ..Summary::default()
        };
        for r in &self.runs {
            match r.outcome {
                Outcome::Pass => s.checks_passed += 1,
                Outcome::Fail(_) => s.checks_failed += 1,
                Outcome::NotTestable(_) => s.checks_not_testable += 1,
                Outcome::NotApplicable(_) => s.checks_not_applicable += 1,
            }
        }
        for r in &self.requirements {
            if r.level == Level::Must {
                match r.verdict {
                    Verdict::Pass if r.expected_failure => s.unexpected_passes += 1,
                    Verdict::Pass => s.passed += 1,
                    Verdict::Fail if r.expected_failure => s.expected_failures += 1,
                    Verdict::Fail => s.failed += 1,
                    Verdict::NotTestable => s.not_testable += 1,
                    Verdict::NoCheck => {
                        s.not_testable += 1;
                        s.without_check += 1;
                    }
                    Verdict::NotApplicable => s.not_applicable += 1,
                }
            } else {
                match r.verdict {
                    Verdict::Pass => s.advisory_met += 1,
                    Verdict::Fail => s.advisory_not_met += 1,
                    _ => {}
                }
            }
        }
        s
    }

    /// Whether the run fails: a MUST requirement failed unexpectedly, or one expected to fail
    /// passed.
    pub fn failed(&self) -> bool {
        self.requirements.iter().any(RequirementResult::fails_run)
    }

    /// The IDs of the MUST requirements that failed (expected failures included).
    pub fn failed_requirements(&self) -> Vec<&str> {
        self.requirements
            .iter()
            .filter(|r| r.level == Level::Must && r.verdict == Verdict::Fail)
            .map(|r| r.id.as_str())
            .collect()
    }

    /// Whether a failing check's failure is expected (one of its requirements is listed as an
    /// expected failure).
    pub fn failure_expected(&self, run: &CheckRun) -> bool {
        run.check.ids.iter().any(|id| {
            self.requirements
                .iter()
                .any(|r| r.id == *id && r.expected_failure)
        })
    }

    /// The result of one requirement.
    pub fn requirement(&self, id: &str) -> Option<&RequirementResult> {
        self.requirements.iter().find(|r| r.id == id)
    }

    /// The run of one check.
    pub fn check(&self, name: &str) -> Option<&CheckRun> {
        self.runs.iter().find(|r| r.check.name == name)
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Run one check against a fresh host from `factory`. A panic of the host (or of the check)
/// is a failure.
pub fn run_check(
    factory: &mut dyn HostFactory,
    check: &'static Check,
) -> Result<Outcome, RunError> {
    let host = match check.host {
        HostKind::Fixture => Some(factory.create()),
        HostKind::Variant(v) => factory.create_variant(v).transpose(),
    };
    let mut host = match host {
        None => {
            let HostKind::Variant(v) = check.host else {
                return Ok(Outcome::NotTestable("no host".into()));
            };
            return Ok(Outcome::NotTestable(format!(
                "the harness cannot create the host variant {v:?}"
            )));
        }
        Some(Err(error)) => {
            return Err(RunError::Setup {
                check: check.name,
                error,
            });
        }
        Some(Ok(h)) => h,
    };
    Ok(
        match catch_unwind(AssertUnwindSafe(|| (check.run)(host.as_mut()))) {
            Ok(outcome) => outcome,
            Err(payload) => Outcome::Fail(Failure::Panicked(panic_message(payload.as_ref()))),
        },
    )
}

/// The checks `options` select, in registry order.
pub fn select(options: &RunOptions) -> Vec<&'static Check> {
    registry::all()
        .into_iter()
        .filter(|c| options.only.as_deref().is_none_or(|p| c.matches(p)))
        .collect()
}

/// Run the selected checks, each against a fresh host, and build the report.
pub fn run(factory: &mut dyn HostFactory, options: &RunOptions) -> Result<Report, RunError> {
    let host_ids = registry::host_requirements().map_err(RunError::Register)?;
    if let Some(id) = options
        .expect_fail
        .iter()
        .find(|id| !host_ids.iter().any(|r| r.id.to_string() == **id))
    {
        return Err(RunError::UnknownRequirement(id.clone()));
    }
    let checks = select(options);
    if checks.is_empty() {
        return Err(RunError::NothingSelected(
            options.only.clone().unwrap_or_default(),
        ));
    }
    let mut runs = Vec::with_capacity(checks.len());
    for check in checks {
        let outcome = run_check(factory, check)?;
        let advisory = check
            .ids
            .iter()
            .all(|id| registry::level(id).is_some_and(|l| l != Level::Must));
        runs.push(CheckRun {
            check,
            outcome,
            advisory,
        });
    }
    build_report(factory.name(), runs, options)
}

/// Aggregate check runs into a report over the host requirements (only the requirements the
/// runs touch when `options` filter the checks).
pub fn build_report(
    host: String,
    runs: Vec<CheckRun>,
    options: &RunOptions,
) -> Result<Report, RunError> {
    let filtered = options.only.is_some();
    let reqs = registry::host_requirements().map_err(RunError::Register)?;
    for id in &options.expect_fail {
        if !reqs.iter().any(|r| r.id.to_string() == *id) {
            return Err(RunError::UnknownRequirement(id.clone()));
        }
    }
    let mut requirements = Vec::new();
    for r in reqs {
        let id = r.id.to_string();
        let mine: Vec<&CheckRun> = runs
            .iter()
            .filter(|c| c.check.ids.contains(&id.as_str()))
            .collect();
        if filtered && mine.is_empty() {
            continue;
        }
        let any = |f: fn(&Outcome) -> bool| mine.iter().any(|c| f(&c.outcome));
        let verdict = if mine.is_empty() {
            Verdict::NoCheck
        } else if any(|o| matches!(o, Outcome::Fail(_))) {
            Verdict::Fail
        } else if any(|o| matches!(o, Outcome::Pass)) {
            Verdict::Pass
        } else if any(|o| matches!(o, Outcome::NotTestable(_))) {
            Verdict::NotTestable
        } else {
            Verdict::NotApplicable
        };
        let mut notes: Vec<String> = mine
            .iter()
            .filter_map(|c| c.outcome.reason().map(|m| format!("{}: {m}", c.check.name)))
            .collect();
        if mine.is_empty() {
            notes.push(
                registry::unchecked_reason(&id)
                    .unwrap_or("the suite has no check for this requirement")
                    .to_string(),
            );
        }
        requirements.push(RequirementResult {
            level: r.level,
            section: r.section.clone(),
            summary: r.summary.clone(),
            verdict,
            checks: mine.iter().map(|c| c.check.name).collect(),
            partial: verdict == Verdict::Pass && any(|o| matches!(o, Outcome::NotTestable(_))),
            expected_failure: options.expect_fail.contains(&id),
            notes,
            id,
        });
    }
    Ok(Report {
        host,
        runs,
        requirements,
    })
}

//! What a check concludes: pass, fail (with the reason), not testable, not applicable.

use std::fmt;

use vir_abi::status::Status;

use crate::hut::{HarnessError, Hook};

/// The statuses a step accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this status.
    Exactly(Status),
    /// Any status but this one.
    Not(Status),
    /// One of these statuses.
    OneOf(Vec<Status>),
}

impl Expected {
    /// Whether `actual` satisfies the expectation.
    pub fn accepts(&self, actual: Status) -> bool {
        match self {
            Self::Exactly(s) => actual == *s,
            Self::Not(s) => actual != *s,
            Self::OneOf(v) => v.contains(&actual),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(s) => write!(f, "{s}"),
            Self::Not(s) => write!(f, "any status but {s}"),
            Self::OneOf(v) => {
                f.write_str("one of ")?;
                for (i, s) in v.iter().enumerate() {
                    if i != 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a check failed: what it did, what it expected, what the host did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A call returned the wrong status.
    Status {
        /// The step (what was called, in which situation).
        step: String,
        /// The statuses the specification allows.
        expected: Expected,
        /// The status returned.
        actual: Status,
    },
    /// A value the host produced (a response field, a register, an IRTE field) is wrong.
    Value {
        /// The step.
        step: String,
        /// The value looked at.
        what: String,
        /// What the specification requires.
        expected: String,
        /// What the host produced.
        actual: String,
    },
    /// Host state changed where it must not (snapshot comparison).
    StateChanged {
        /// The step.
        step: String,
        /// The components that differ.
        components: Vec<String>,
    },
    /// The host (or the harness around it) panicked.
    Panicked(String),
    /// A harness operation the check relies on failed.
    Harness {
        /// The step.
        step: String,
        /// The error.
        error: HarnessError,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                step,
                expected,
                actual,
            } => write!(f, "{step}: expected {expected}, got {actual}"),
            Self::Value {
                step,
                what,
                expected,
                actual,
            } => write!(f, "{step}: {what} expected {expected}, got {actual}"),
            Self::StateChanged { step, components } => {
                write!(f, "{step}: host state changed ({})", components.join(", "))
            }
            Self::Panicked(m) => write!(f, "the host panicked: {m}"),
            Self::Harness { step, error } => write!(f, "{step}: harness error: {error}"),
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The host behaved as required in every case the check tried.
    Pass,
    /// The host departed from the requirement.
    Fail(Failure),
    /// The check could not run against this host (a hook or fixture property is missing).
    NotTestable(String),
    /// The requirement does not apply to this host (for example an AMD-Vi rule on a VT-d host).
    NotApplicable(String),
}

impl Outcome {
    /// A short keyword: `pass`, `fail`, `not testable`, `not applicable`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail(_) => "fail",
            Self::NotTestable(_) => "not testable",
            Self::NotApplicable(_) => "not applicable",
        }
    }

    /// The reason (failure message or why the check did not run); `None` for a pass.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Pass => None,
            Self::Fail(f) => Some(f.to_string()),
            Self::NotTestable(r) | Self::NotApplicable(r) => Some(r.clone()),
        }
    }
}

/// Early exit of a check body: anything but a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A failure.
    Fail(Failure),
    /// Not testable, with the reason.
    NotTestable(String),
    /// Not applicable, with the reason.
    NotApplicable(String),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Fail(f)
    }
}

impl From<Stop> for Outcome {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Fail(f) => Outcome::Fail(f),
            Stop::NotTestable(r) => Outcome::NotTestable(r),
            Stop::NotApplicable(r) => Outcome::NotApplicable(r),
        }
    }
}

/// The result type of check bodies.
pub type CheckResult = Result<(), Stop>;

/// Turn a harness error met during `step` into the check's verdict: a missing optional hook makes
/// the check not testable; anything else is a harness failure.
pub fn harness(step: &str, error: HarnessError) -> Stop {
    match error {
        HarnessError::Unsupported(hook) => Stop::NotTestable(not_offered(hook)),
        error => Stop::Fail(Failure::Harness {
            step: step.to_string(),
            error,
        }),
    }
}

/// The not-testable reason for a missing hook.
pub fn not_offered(hook: Hook) -> String {
    format!("the harness offers no {hook}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hut::VmRef;

    #[test]
    fn expectations_accept_exactly_what_they_name() {
        assert!(Expected::Exactly(Status::BAD_LENGTH).accepts(Status::BAD_LENGTH));
        assert!(!Expected::Exactly(Status::BAD_LENGTH).accepts(Status::BAD_BUFFER));
        assert!(!Expected::Not(Status::UNKNOWN_CALL).accepts(Status::UNKNOWN_CALL));
        assert!(Expected::Not(Status::UNKNOWN_CALL).accepts(Status::SUCCESS));
        let one = Expected::OneOf(vec![Status::SUCCESS, Status::BUSY]);
        assert!(one.accepts(Status::BUSY));
        assert!(!one.accepts(Status::BAD_BUFFER));
        assert_eq!(one.to_string(), "one of SUCCESS (0), BUSY (22)");
    }

    #[test]
    fn failures_render_expected_and_actual() {
        let f = Failure::Status {
            step: "QUERY with request length 8".into(),
            expected: Expected::Exactly(Status::BAD_LENGTH),
            actual: Status::SUCCESS,
        };
        assert_eq!(
            f.to_string(),
            "QUERY with request length 8: expected BAD_LENGTH (2), got SUCCESS (0)"
        );
        assert_eq!(Outcome::Fail(f.clone()).reason(), Some(f.to_string()));
        assert_eq!(Outcome::Pass.keyword(), "pass");
        assert_eq!(Outcome::Pass.reason(), None);
    }

    #[test]
    fn missing_hooks_are_not_testable_other_harness_errors_fail() {
        assert_eq!(
            harness("x", HarnessError::Unsupported(Hook::Snapshot)),
            Stop::NotTestable("the harness offers no state snapshots".into())
        );
        let e = HarnessError::UnknownVm(VmRef::Secondary);
        assert_eq!(
            harness("x", e),
            Stop::Fail(Failure::Harness {
                step: "x".into(),
                error: e
            })
        );
    }
}

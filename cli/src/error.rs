//! The errors of the tool and their exit statuses.
//!
//! Every failure ends as one [`CliError`], printed by `main` as a single line
//! `vir: error: <Display>`. Usage errors (the command line names something that does not exist)
//! exit with status 2, malformed data with status 1.

use std::fmt;

use crate::hw::HwError;
use crate::input::InputError;
use crate::value::ValueError;
use crate::wire::WireError;

/// Exit status for malformed data.
pub const EXIT_DATA: u8 = 1;
/// Exit status for usage errors (the same as clap's).
pub const EXIT_USAGE: u8 = 2;

/// A command line that names something that does not exist or combines things that do not go
/// together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// TYPE is not a known type name (carried).
    UnknownType(String),
    /// An `encode` assignment names a field the type does not have.
    UnknownField {
        /// The type.
        ty: String,
        /// The field named on the command line.
        field: String,
        /// The field names the type accepts.
        valid: Vec<String>,
        /// What would make the assignment valid: a close name, or the mode or flag that has
        /// this field (`im=posted`, `guest_mode=guest`).
        hint: Option<String>,
    },
    /// An `encode` argument is not of the form `field=value` (carried).
    NotAnAssignment(String),
    /// An `encode` field is assigned twice (carried).
    DuplicateField(String),
    /// An option was given with a type it does not apply to.
    OptionNotApplicable {
        /// The option, e.g. `--xapic`.
        option: &'static str,
        /// The type.
        ty: String,
    },
    /// An option's value is not one it accepts.
    BadOptionValue {
        /// The option, e.g. `--mode`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
    /// Two options that do not go together.
    ConflictingOptions {
        /// The option given.
        option: &'static str,
        /// The option it conflicts with.
        with: &'static str,
    },
}

impl UsageError {
    /// An unknown `field` of `ty`, listing `valid` and suggesting the closest valid name
    /// (edit distance at most 2, or a name that contains it or is contained in it).
    pub fn unknown_field(ty: &str, field: &str, valid: &[&str]) -> Self {
        let hint = closest(field, valid).map(|n| format!("did you mean '{n}'?"));
        Self::UnknownField {
            ty: ty.to_owned(),
            field: field.to_owned(),
            valid: valid.iter().map(|s| (*s).to_owned()).collect(),
            hint,
        }
    }
}

/// The name in `valid` closest to `field`, if one is close enough to be a likely typo.
fn closest<'a>(field: &str, valid: &[&'a str]) -> Option<&'a str> {
    let f = field.to_ascii_lowercase();
    valid
        .iter()
        .map(|&v| (edit_distance(&f, v), v))
        .filter(|&(d, v)| d <= 2 || (f.len() >= 3 && (v.contains(f.as_str()) || f.contains(v))))
        .min_by_key(|&(d, _)| d)
        .map(|(_, v)| v)
}

/// Levenshtein distance between two ASCII-ish strings (by `char`).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i.saturating_add(1);
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let above = row.get(j.saturating_add(1)).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let best = prev
                .saturating_add(cost)
                .min(above.saturating_add(1))
                .min(left.saturating_add(1));
            prev = above;
            if let Some(cell) = row.get_mut(j.saturating_add(1)) {
                *cell = best;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(t) => {
                write!(
                    f,
                    "unknown type '{t}' (the types are listed by 'vir decode --help')"
                )
            }
            Self::UnknownField {
                ty,
                field,
                valid,
                hint,
            } => {
                write!(f, "{ty} has no field '{field}'")?;
                if let Some(h) = hint {
                    write!(f, "; {h}")?;
                }
                if !valid.is_empty() {
                    write!(f, " (fields: {})", valid.join(", "))?;
                }
                Ok(())
            }
            Self::NotAnAssignment(a) => {
                write!(f, "'{a}' is not a field=value assignment")
            }
            Self::DuplicateField(name) => write!(f, "field '{name}' is assigned twice"),
            Self::OptionNotApplicable { option, ty } => {
                write!(f, "option {option} does not apply to type {ty}")
            }
            Self::BadOptionValue {
                option,
                value,
                expected,
            } => write!(
                f,
                "invalid value '{value}' for {option} (expected {expected})"
            ),
            Self::ConflictingOptions { option, with } => {
                write!(f, "option {option} cannot be combined with {with}")
            }
        }
    }
}

/// Any failure of the tool.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong (exit status 2).
    Usage(UsageError),
    /// The data operand could not be read or parsed.
    Input(InputError),
    /// The data has the wrong length for its type.
    Length {
        /// The type.
        ty: String,
        /// Its size in bytes.
        expected: usize,
        /// The number of bytes given.
        actual: usize,
    },
    /// A `field=value` value is malformed or out of range.
    Value(ValueError),
    /// A vIR wire structure is malformed.
    Wire(WireError),
    /// A hardware format is malformed.
    Hw(HwError),
    /// The ABI cannot be expressed as a C header (a layout the generator refuses).
    Header(vir_spec::cheader::HeaderError),
    /// Writing the output failed.
    Output(std::io::Error),
    /// An input file could not be read.
    ReadFile {
        /// The path given.
        path: String,
        /// Why.
        error: std::io::ErrorKind,
    },
    /// `simulate` could not run its scenario.
    Simulation(vir_simvm::ScenarioError),
    /// `simulate` ran, and the report shows a failure (a wrong or missing delivery, a storage
    /// rewrite, a forged message delivered, an interrupt left on the unplugged vCPU).
    SimulationFailed {
        /// Deliveries wrong or missing.
        failed_deliveries: u64,
    },
    /// `simulate --compare` could not build a situation.
    Compare(vir_simvm::compare::CompareError),
    /// `simulate --compare` ran, and these situations failed (see the report).
    CompareFailed {
        /// The situations that failed.
        situations: Vec<&'static str>,
    },
    /// A debugfs dump has a line Linux does not print.
    Debugfs(crate::debugfs::DebugfsError),
    /// A debugfs dump was read, and some of its entries could not be decoded (see the output).
    DebugfsEntries {
        /// Entries that could not be decoded.
        failed: usize,
        /// Entries in the dump.
        total: usize,
    },
    /// `conform` could not run the suite.
    Conformance(vir_conform::RunError),
    /// `conform` ran, and MUST requirements failed (or some expected to fail passed).
    ConformanceFailed {
        /// The requirements that fail the run.
        failed: Vec<String>,
        /// How many of them were expected to fail and passed.
        unexpected_passes: usize,
    },
    /// `kvm` could not boot the image (no usable KVM, the image could not be built or loaded,
    /// the VMM failed); why.
    Kvm(String),
    /// `kvm` ran the image, and it did not pass.
    KvmFailed {
        /// How the run ended.
        end: String,
        /// The checks that failed.
        failed: Vec<String>,
    },
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Input(_)
            | Self::Length { .. }
            | Self::Value(_)
            | Self::Wire(_)
            | Self::Hw(_)
            | Self::Header(_)
            | Self::Output(_)
            | Self::ReadFile { .. }
            | Self::Simulation(_)
            | Self::SimulationFailed { .. }
            | Self::Compare(_)
            | Self::CompareFailed { .. }
            | Self::Debugfs(_)
            | Self::DebugfsEntries { .. }
            | Self::ConformanceFailed { .. }
            | Self::Kvm(_)
            | Self::KvmFailed { .. } => EXIT_DATA,
            Self::Conformance(e) => match e {
                vir_conform::RunError::NothingSelected(_)
                | vir_conform::RunError::UnknownRequirement(_) => EXIT_USAGE,
                vir_conform::RunError::Register(_) | vir_conform::RunError::Setup { .. } => {
                    EXIT_DATA
                }
            },
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(e) => e.fmt(f),
            Self::Input(e) => e.fmt(f),
            Self::Length {
                ty,
                expected,
                actual,
            } => write!(f, "wrong length: {ty} is {expected} bytes, got {actual}"),
            Self::Value(e) => e.fmt(f),
            Self::Wire(e) => e.fmt(f),
            Self::Hw(e) => e.fmt(f),
            Self::Header(e) => write!(f, "cannot generate the C header: {e}"),
            Self::Output(e) => write!(f, "cannot write output: {e}"),
            Self::ReadFile { path, error } => write!(f, "cannot read {path}: {error}"),
            Self::Simulation(e) => write!(f, "simulation: {e}"),
            Self::SimulationFailed { failed_deliveries } => write!(
                f,
                "simulation failed: {failed_deliveries} deliveries wrong or missing (see the report)"
            ),
            Self::Compare(e) => write!(f, "compare: {e}"),
            Self::CompareFailed { situations } => write!(
                f,
                "compare failed in {} (see the report)",
                situations.join(", ")
            ),
            Self::Debugfs(e) => e.fmt(f),
            Self::DebugfsEntries { failed, total } => write!(
                f,
                "{failed} of {total} debugfs entries could not be decoded (see the output)"
            ),
            Self::Conformance(e) => write!(f, "conformance: {e}"),
            Self::ConformanceFailed {
                failed,
                unexpected_passes,
            } => {
                write!(f, "conformance failed: {}", failed.join(", "))?;
                if *unexpected_passes != 0 {
                    write!(f, " ({unexpected_passes} expected to fail but passed)")?;
                }
                f.write_str(" (see the report)")
            }
            Self::Kvm(why) => write!(f, "kvm: {why}"),
            Self::KvmFailed { end, failed } => {
                write!(f, "kvm: the image did not pass ({end})")?;
                if !failed.is_empty() {
                    write!(f, "; failed checks: {}", failed.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl From<UsageError> for CliError {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}
impl From<InputError> for CliError {
    fn from(e: InputError) -> Self {
        Self::Input(e)
    }
}
impl From<ValueError> for CliError {
    fn from(e: ValueError) -> Self {
        Self::Value(e)
    }
}
impl From<WireError> for CliError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}
impl From<HwError> for CliError {
    fn from(e: HwError) -> Self {
        Self::Hw(e)
    }
}

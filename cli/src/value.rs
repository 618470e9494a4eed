//! `field=value` arguments of `encode`.
//!
//! A value is a decimal number, a `0x` hex number or a `0b` binary number (`_` may separate
//! digits), `true`/`false` for one-bit fields, or a symbolic name where the field has names
//! (`kind=MSIX`, `features=MSI|MSIX`, `delivery_mode=fixed`); names are case-insensitive.

use std::fmt;

use crate::error::UsageError;

/// One `field=value` argument, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The field name.
    pub field: String,
    /// The value text, unparsed.
    pub value: String,
}

/// Splits `field=value` arguments; rejects malformed ones and repeated fields.
pub fn parse_assignments(args: &[String]) -> Result<Vec<Assignment>, UsageError> {
    let mut out: Vec<Assignment> = Vec::with_capacity(args.len());
    for arg in args {
        let Some((field, value)) = arg.split_once('=') else {
            return Err(UsageError::NotAnAssignment(arg.clone()));
        };
        let field = field.trim();
        if field.is_empty() {
            return Err(UsageError::NotAnAssignment(arg.clone()));
        }
        if out.iter().any(|a| a.field == field) {
            return Err(UsageError::DuplicateField(field.to_owned()));
        }
        out.push(Assignment {
            field: field.to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok(out)
}

/// Checks that every assignment names one of `known`; the first that does not is a usage error.
pub fn check_known(ty: &str, assignments: &[Assignment], known: &[&str]) -> Result<(), UsageError> {
    match assignments
        .iter()
        .find(|a| !known.contains(&a.field.as_str()))
    {
        Some(a) => Err(UsageError::unknown_field(ty, &a.field, known)),
        None => Ok(()),
    }
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueProblem {
    /// The value is empty.
    Empty,
    /// Neither a number nor a name the field knows (the text carried).
    NotANumber(String),
    /// The value exceeds the field's largest value.
    OutOfRange {
        /// The value given.
        value: u128,
        /// The largest value the field holds.
        max: u128,
    },
    /// The field is reserved and only 0 may be written (the value carried).
    Reserved(u128),
    /// A byte-array field was given the wrong number of bytes.
    WrongByteCount {
        /// The field's size.
        expected: usize,
        /// The number of bytes given.
        actual: usize,
    },
    /// A reserved byte-array field was given non-zero bytes.
    ReservedBytes,
    /// The value is a valid number but not allowed for this field (explained by the text).
    NotAllowed {
        /// The value given.
        value: u128,
        /// Why it is not allowed.
        why: &'static str,
    },
}

/// A `field=value` value that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The field.
    pub field: String,
    /// The problem.
    pub problem: ValueProblem,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        match &self.problem {
            ValueProblem::Empty => write!(f, "field {field}: empty value"),
            ValueProblem::NotANumber(t) => {
                write!(f, "field {field}: '{t}' is not a number or a known name")
            }
            ValueProblem::OutOfRange { value, max } => {
                write!(
                    f,
                    "field {field}: value {value:#x} out of range (max {max:#x})"
                )
            }
            ValueProblem::Reserved(v) => {
                write!(f, "field {field} is reserved and must be 0, got {v:#x}")
            }
            ValueProblem::WrongByteCount { expected, actual } => {
                write!(f, "field {field}: expected {expected} bytes, got {actual}")
            }
            ValueProblem::ReservedBytes => {
                write!(f, "field {field} is reserved and must be all zero")
            }
            ValueProblem::NotAllowed { value, why } => {
                write!(f, "field {field}: value {value:#x} not allowed: {why}")
            }
        }
    }
}

impl ValueError {
    /// An error for `field`.
    pub fn new(field: &str, problem: ValueProblem) -> Self {
        Self {
            field: field.to_owned(),
            problem,
        }
    }
}

/// Parses a number: decimal, `0x` hex or `0b` binary, `_` allowed between digits.
pub fn parse_number(text: &str) -> Option<u128> {
    let (digits, radix) = if let Some(d) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        (d, 16)
    } else if let Some(d) = text.strip_prefix("0b").or(text.strip_prefix("0B")) {
        (d, 2)
    } else {
        (text, 10)
    };
    let mut value: u128 = 0;
    let mut any = false;
    for ch in digits.chars() {
        if ch == '_' {
            continue;
        }
        let d = ch.to_digit(radix)?;
        value = value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(d))?;
        any = true;
    }
    any.then_some(value)
}

/// Parses a value for a field of at most `max`, accepting `true`/`false` when `max` is 1 and
/// the names `names` resolves (`names` returns `None` for a text it does not know).
pub fn parse_value(
    field: &str,
    text: &str,
    max: u128,
    names: &dyn Fn(&str) -> Option<u128>,
) -> Result<u128, ValueError> {
    if text.is_empty() {
        return Err(ValueError::new(field, ValueProblem::Empty));
    }
    let value = if max == 1 && text.eq_ignore_ascii_case("true") {
        1
    } else if max == 1 && text.eq_ignore_ascii_case("false") {
        0
    } else if let Some(v) = parse_number(text) {
        v
    } else if let Some(v) = names(text) {
        v
    } else {
        return Err(ValueError::new(
            field,
            ValueProblem::NotANumber(text.to_owned()),
        ));
    };
    if value > max {
        return Err(ValueError::new(
            field,
            ValueProblem::OutOfRange { value, max },
        ));
    }
    Ok(value)
}

/// A name resolver that knows no names.
pub fn no_names(_: &str) -> Option<u128> {
    None
}

/// The largest value of a field `bits` wide.
pub const fn max_of_bits(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_three_bases() {
        assert_eq!(parse_number("69"), Some(69));
        assert_eq!(parse_number("0x45"), Some(0x45));
        assert_eq!(parse_number("0XfF"), Some(0xff));
        assert_eq!(parse_number("0b1_01"), Some(5));
        assert_eq!(parse_number("1_000"), Some(1000));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("12a"), None);
        assert_eq!(
            parse_number(&"9".repeat(40)),
            None,
            "overflow is not a number"
        );
    }

    #[test]
    fn values_are_range_checked() {
        assert_eq!(parse_value("v", "0xff", 0xff, &no_names), Ok(0xff));
        assert_eq!(
            parse_value("v", "256", 0xff, &no_names),
            Err(ValueError::new(
                "v",
                ValueProblem::OutOfRange {
                    value: 256,
                    max: 255
                }
            ))
        );
        assert_eq!(parse_value("p", "TRUE", 1, &no_names), Ok(1));
        assert_eq!(
            parse_value("v", "true", 0xff, &no_names),
            Err(ValueError::new(
                "v",
                ValueProblem::NotANumber("true".into())
            ))
        );
        assert_eq!(
            parse_value("v", "", 0xff, &no_names),
            Err(ValueError::new("v", ValueProblem::Empty))
        );
        let names = |t: &str| (t == "MSIX").then_some(2);
        assert_eq!(parse_value("kind", "MSIX", 0xff, &names), Ok(2));
    }

    #[test]
    fn assignments_split_and_checked() {
        let args = vec!["vector=0x45".to_string(), "present = 1".to_string()];
        assert_eq!(
            parse_assignments(&args),
            Ok(vec![
                Assignment {
                    field: "vector".into(),
                    value: "0x45".into()
                },
                Assignment {
                    field: "present".into(),
                    value: "1".into()
                },
            ])
        );
        assert_eq!(
            parse_assignments(&["vector".into()]),
            Err(UsageError::NotAnAssignment("vector".into()))
        );
        assert_eq!(
            parse_assignments(&["=1".into()]),
            Err(UsageError::NotAnAssignment("=1".into()))
        );
        assert_eq!(
            parse_assignments(&["a=1".into(), "a=2".into()]),
            Err(UsageError::DuplicateField("a".into()))
        );
        let a = parse_assignments(&["vectr=1".into()]).unwrap_or_default();
        assert_eq!(
            check_known("vtd-irte", &a, &["vector"]),
            Err(UsageError::UnknownField {
                ty: "vtd-irte".into(),
                field: "vectr".into(),
                valid: vec!["vector".into()],
                hint: Some("did you mean 'vector'?".into()),
            })
        );
    }

    #[test]
    fn max_of_bits_edges() {
        assert_eq!(max_of_bits(1), 1);
        assert_eq!(max_of_bits(16), 0xffff);
        assert_eq!(max_of_bits(128), u128::MAX);
    }
}

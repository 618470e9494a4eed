//! The data operand of `decode`: hex bytes in memory order, or `0x` integers.
//!
//! Two forms are accepted:
//!
//! * **bytes**: hex digits, two per byte, in memory order (so multi-byte fields read
//!   little-endian); the separators space, `:`, `-`, `_`, tab and newlines may appear anywhere;
//! * **integers**: whitespace-separated `0x` integers. A 32-, 64- or 128-bit hardware type takes a
//!   single integer of that width (its bit 0 is bit 0 of the entry), and a 128-bit type also
//!   takes two 64-bit integers `0xHIGH 0xLOW` as Linux's debugfs prints them; an MSI message takes
//!   `0xADDRESS 0xDATA` (a 64-bit address and 32-bit data). Other types take bytes only.
//!
//! The form is chosen by the first token: `0x` selects integers.

use std::fmt;
use std::io::Read;

/// Which integer form a type accepts besides bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegerForm {
    /// Bytes only.
    None,
    /// One integer of this many bytes, stored little-endian.
    Word(usize),
    /// An MSI message: `0xADDRESS 0xDATA`, stored as `address_lo`, `address_hi`, `data` (LE).
    MsiPair,
}

/// The data operand could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// No data was given (empty operand or empty standard input).
    Empty,
    /// Standard input could not be read.
    Stdin(std::io::ErrorKind),
    /// Standard input is not text.
    NotText,
    /// A character that is neither a hex digit nor a separator.
    InvalidHexDigit {
        /// The character.
        ch: char,
        /// Its position (counting characters from 1).
        position: usize,
    },
    /// An odd number of hex digits (carried).
    OddDigits(usize),
    /// A `0x` integer appears among hex bytes.
    MixedForms,
    /// The type takes bytes only (type name carried).
    IntegerNotAccepted(String),
    /// A token of the integer form is not a `0x` hex integer (carried).
    InvalidInteger(String),
    /// The wrong number of integers.
    IntegerCount {
        /// How many the type takes.
        expected: &'static str,
        /// How many were given.
        actual: usize,
    },
    /// An integer does not fit its field.
    IntegerTooWide {
        /// What the integer is (`"address"`, `"data"`, `"value"`).
        what: &'static str,
        /// The token as given.
        token: String,
        /// The width of the field in bits.
        bits: u32,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no data: give hex bytes or 0x integers (or pipe them in)"),
            Self::Stdin(kind) => write!(f, "cannot read standard input: {kind}"),
            Self::NotText => f.write_str("standard input is not text (expected hex digits)"),
            Self::InvalidHexDigit { ch, position } => {
                write!(f, "invalid hex digit {ch:?} at position {position}")
            }
            Self::OddDigits(n) => write!(
                f,
                "odd number of hex digits ({n}): give two digits per byte, in memory order"
            ),
            Self::MixedForms => {
                f.write_str("0x integers and hex bytes are mixed: use one form or the other")
            }
            Self::IntegerNotAccepted(ty) => {
                write!(f, "{ty} takes hex bytes only, not 0x integers")
            }
            Self::InvalidInteger(t) => write!(f, "'{t}' is not a 0x hex integer"),
            Self::IntegerCount { expected, actual } => {
                write!(f, "expected {expected} 0x integer(s), got {actual}")
            }
            Self::IntegerTooWide { what, token, bits } => {
                write!(f, "{what} {token} does not fit in {bits} bits")
            }
        }
    }
}

/// The text of the data operand: the arguments joined by spaces, or standard input when there
/// are none or the only one is `-`.
pub fn operand_text(args: &[String], stdin: &mut dyn Read) -> Result<String, InputError> {
    if args.is_empty() || (args.len() == 1 && args[0] == "-") {
        let mut raw = Vec::new();
        stdin
            .read_to_end(&mut raw)
            .map_err(|e| InputError::Stdin(e.kind()))?;
        String::from_utf8(raw).map_err(|_| InputError::NotText)
    } else {
        Ok(args.join(" "))
    }
}

/// Parses the operand text into bytes in memory order. `ty` names the type for error messages.
pub fn parse(text: &str, form: IntegerForm, ty: &str) -> Result<Vec<u8>, InputError> {
    let mut tokens = text.split_whitespace().peekable();
    let Some(first) = tokens.peek() else {
        return Err(InputError::Empty);
    };
    if has_hex_prefix(first) {
        let tokens: Vec<&str> = tokens.collect();
        parse_integers(&tokens, form, ty)
    } else {
        parse_hex_bytes(text)
    }
}

/// Whether `token` starts with `0x` or `0X`.
fn has_hex_prefix(token: &str) -> bool {
    token.starts_with("0x") || token.starts_with("0X")
}

/// Parses hex bytes with separators.
pub fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, InputError> {
    let mut digits = Vec::with_capacity(text.len());
    let mut previous_zero = false;
    for (i, ch) in text.chars().enumerate() {
        match ch {
            ' ' | ':' | '-' | '_' | '\n' | '\r' | '\t' => previous_zero = false,
            'x' | 'X' if previous_zero => return Err(InputError::MixedForms),
            _ => {
                let Some(d) = ch.to_digit(16) else {
                    return Err(InputError::InvalidHexDigit {
                        ch,
                        position: i + 1,
                    });
                };
                previous_zero = d == 0;
                // `to_digit(16)` returns values below 16.
                digits.push(d as u8);
            }
        }
    }
    if digits.is_empty() {
        return Err(InputError::Empty);
    }
    if digits.len() % 2 != 0 {
        return Err(InputError::OddDigits(digits.len()));
    }
    Ok(digits.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// Parses one `0x` integer token into a value of at most 128 bits.
fn parse_integer(token: &str, what: &'static str, bits: u32) -> Result<u128, InputError> {
    let invalid = || InputError::InvalidInteger(token.to_owned());
    let digits = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
        .ok_or_else(invalid)?;
    let mut value: u128 = 0;
    let mut any = false;
    for ch in digits.chars() {
        if ch == '_' {
            continue;
        }
        let d = ch.to_digit(16).ok_or_else(invalid)?;
        any = true;
        value = value
            .checked_mul(16)
            .and_then(|v| v.checked_add(u128::from(d)))
            .ok_or_else(|| InputError::IntegerTooWide {
                what,
                token: token.to_owned(),
                bits,
            })?;
    }
    if !any {
        return Err(invalid());
    }
    if bits < 128 && value >> bits != 0 {
        return Err(InputError::IntegerTooWide {
            what,
            token: token.to_owned(),
            bits,
        });
    }
    Ok(value)
}

/// Parses the integer form for a type.
fn parse_integers(tokens: &[&str], form: IntegerForm, ty: &str) -> Result<Vec<u8>, InputError> {
    match form {
        IntegerForm::None => Err(InputError::IntegerNotAccepted(ty.to_owned())),
        // A 128-bit entry as Linux prints it (VT-d and AMD-Vi debugfs): two 64-bit words,
        // the high word (bits 127:64) first.
        IntegerForm::Word(16) if tokens.len() == 2 => {
            let hi = parse_integer(tokens.first().copied().unwrap_or(""), "high word", 64)?;
            let lo = parse_integer(tokens.get(1).copied().unwrap_or(""), "low word", 64)?;
            Ok(((hi << 64) | lo).to_le_bytes().to_vec())
        }
        IntegerForm::Word(size) => {
            let [token] = tokens else {
                return Err(InputError::IntegerCount {
                    expected: if size == 16 {
                        "1 (or 2: 0xHIGH 0xLOW)"
                    } else {
                        "1"
                    },
                    actual: tokens.len(),
                });
            };
            // Sizes of integer-form types are 4, 8 or 16 bytes.
            let bits = u32::try_from(size.saturating_mul(8))
                .unwrap_or(128)
                .min(128);
            let value = parse_integer(token, "value", bits)?;
            Ok(value.to_le_bytes().iter().take(size).copied().collect())
        }
        IntegerForm::MsiPair => {
            let [address, data] = tokens else {
                return Err(InputError::IntegerCount {
                    expected: "2",
                    actual: tokens.len(),
                });
            };
            let address = parse_integer(address, "address", 64)?;
            let data = parse_integer(data, "data", 32)?;
            let mut out = Vec::with_capacity(12);
            out.extend_from_slice(&address.to_le_bytes()[..8]);
            out.extend_from_slice(&data.to_le_bytes()[..4]);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_with_every_separator() {
        assert_eq!(
            parse("01 02:03-04_05\n06\r\n0a\t0B", IntegerForm::None, "t"),
            Ok(vec![1, 2, 3, 4, 5, 6, 0x0a, 0x0b])
        );
        assert_eq!(
            parse("deadBEEF", IntegerForm::None, "t"),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
    }

    #[test]
    fn bytes_errors() {
        assert_eq!(
            parse("012", IntegerForm::None, "t"),
            Err(InputError::OddDigits(3))
        );
        assert_eq!(
            parse("01 0g", IntegerForm::None, "t"),
            Err(InputError::InvalidHexDigit {
                ch: 'g',
                position: 5
            })
        );
        assert_eq!(
            parse("  \n", IntegerForm::None, "t"),
            Err(InputError::Empty)
        );
        assert_eq!(parse("::", IntegerForm::None, "t"), Err(InputError::Empty));
        assert_eq!(
            parse("00 0x12", IntegerForm::MsiPair, "t"),
            Err(InputError::MixedForms)
        );
    }

    #[test]
    fn word_integer_is_little_endian() {
        assert_eq!(
            parse("0x12345678", IntegerForm::Word(4), "t"),
            Ok(vec![0x78, 0x56, 0x34, 0x12])
        );
        assert_eq!(
            parse("0x1_0000", IntegerForm::Word(8), "t"),
            Ok(vec![0, 0, 1, 0, 0, 0, 0, 0])
        );
        let all = format!("0x{}", "f".repeat(32));
        assert_eq!(parse(&all, IntegerForm::Word(16), "t"), Ok(vec![0xff; 16]));
    }

    #[test]
    fn word_integer_errors() {
        assert_eq!(
            parse("0x100000000", IntegerForm::Word(4), "t"),
            Err(InputError::IntegerTooWide {
                what: "value",
                token: "0x100000000".into(),
                bits: 32
            })
        );
        let too_wide = format!("0x1{}", "0".repeat(32));
        assert_eq!(
            parse(&too_wide, IntegerForm::Word(16), "t"),
            Err(InputError::IntegerTooWide {
                what: "value",
                token: too_wide.clone(),
                bits: 128
            })
        );
        assert_eq!(
            parse("0x1 0x2", IntegerForm::Word(4), "t"),
            Err(InputError::IntegerCount {
                expected: "1",
                actual: 2
            })
        );
        // Linux's debugfs order for a 128-bit entry: high word, then low word.
        let two = parse(
            "0x0000000000040050 0x000000800024000d",
            IntegerForm::Word(16),
            "vtd-irte",
        );
        let one = parse(
            "0x0000000000040050000000800024000d",
            IntegerForm::Word(16),
            "vtd-irte",
        );
        assert_eq!(two, one);
        assert_eq!(
            parse("0x1 0x2 0x3", IntegerForm::Word(16), "t"),
            Err(InputError::IntegerCount {
                expected: "1 (or 2: 0xHIGH 0xLOW)",
                actual: 3
            })
        );
        assert_eq!(
            parse("0x", IntegerForm::Word(4), "t"),
            Err(InputError::InvalidInteger("0x".into()))
        );
        assert_eq!(
            parse("0x1", IntegerForm::None, "query-response"),
            Err(InputError::IntegerNotAccepted("query-response".into()))
        );
    }

    #[test]
    fn msi_pair_is_lo_hi_data() {
        assert_eq!(
            parse("0x1FEE01004 0x4031", IntegerForm::MsiPair, "msi"),
            Ok(vec![
                0x04, 0x10, 0xE0, 0xFE, 0x01, 0, 0, 0, 0x31, 0x40, 0, 0
            ])
        );
        assert_eq!(
            parse("0xfee00000 0x100000000", IntegerForm::MsiPair, "msi"),
            Err(InputError::IntegerTooWide {
                what: "data",
                token: "0x100000000".into(),
                bits: 32
            })
        );
        assert_eq!(
            parse("0xfee00000 12", IntegerForm::MsiPair, "msi"),
            Err(InputError::InvalidInteger("12".into()))
        );
        assert_eq!(
            parse("0xfee00000", IntegerForm::MsiPair, "msi"),
            Err(InputError::IntegerCount {
                expected: "2",
                actual: 1
            })
        );
    }

    #[test]
    fn operand_from_args_or_stdin() {
        let mut empty: &[u8] = b"";
        assert_eq!(
            operand_text(&["0x1".into(), "0x2".into()], &mut empty),
            Ok("0x1 0x2".into())
        );
        let mut stdin: &[u8] = b"01 02\n";
        assert_eq!(
            operand_text(&["-".into()], &mut stdin),
            Ok("01 02\n".into())
        );
        let mut stdin: &[u8] = b"03";
        assert_eq!(operand_text(&[], &mut stdin), Ok("03".into()));
        let mut binary: &[u8] = &[0xff, 0xfe];
        assert_eq!(operand_text(&[], &mut binary), Err(InputError::NotText));
    }
}

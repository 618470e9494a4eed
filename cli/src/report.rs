//! The result of a decode, printed for people or as JSON.
//!
//! Human form: a title line, then one field per line with its value, its position and, where the
//! value has one, its meaning; notes (values that are legal but undefined or suspicious) last:
//!
//! ```text
//! vtd-irte (remapped format)
//! present       = 1      (bit 0)
//! vector        = 0x45   (bits 23:16)
//! ```
//!
//! JSON form: `{"type", "format", "bytes", "fields": {name: value}, "names": {name: meaning},
//! "notes": [..]}`; one-bit fields are booleans, numbers up to 64 bits are JSON numbers, wider
//! ones hex strings, vector sets arrays of numbers.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json, json};

/// A field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A one-bit field.
    Flag(bool),
    /// A number.
    Num(u128),
    /// A set of vectors (a posted descriptor's PIR).
    Vectors(Vec<u8>),
    /// A byte array too wide to be a number, in memory order.
    Bytes(Vec<u8>),
}

impl Value {
    /// The human form.
    fn human(&self) -> String {
        match self {
            Self::Flag(b) => u8::from(*b).to_string(),
            Self::Num(n) => format!("{n:#x}"),
            Self::Vectors(v) if v.is_empty() => "{}".to_owned(),
            Self::Vectors(v) => {
                let list: Vec<String> = v.iter().map(|x| format!("{x:#x}")).collect();
                format!("{{{}}}", list.join(","))
            }
            Self::Bytes(b) => hex_string(b).replace(' ', ""),
        }
    }

    /// The JSON form.
    fn json(&self) -> Json {
        match self {
            Self::Flag(b) => Json::Bool(*b),
            // JSON numbers are IEEE doubles in most tools (jq, JavaScript, Python's json
            // with floats): only integers up to 2^53 - 1 survive them. Wider values are hex
            // strings; the `hex` object has every number exact as a string.
            Self::Num(n) if *n <= MAX_SAFE_JSON_INTEGER => {
                Json::from(u64::try_from(*n).unwrap_or(u64::MAX))
            }
            Self::Num(n) => Json::String(format!("{n:#x}")),
            Self::Vectors(v) => Json::Array(v.iter().map(|&x| Json::from(x)).collect()),
            Self::Bytes(b) => Json::String(hex_string(b)),
        }
    }
}

/// Where a field sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Bit ranges `(high, low)` of the whole entry, or of a named word (`address`, `data`).
    Bits {
        /// The word the bits are in, `None` for the entry as a whole.
        word: Option<&'static str>,
        /// Ranges, most significant part first.
        ranges: Vec<(u32, u32)>,
    },
    /// Bytes `offset .. offset + len` of a wire structure.
    Bytes {
        /// First byte.
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Computed from other fields.
    Derived,
}

impl Position {
    /// Bits `hi:lo` of the entry.
    pub fn bits(hi: u32, lo: u32) -> Self {
        Self::Bits {
            word: None,
            ranges: vec![(hi, lo)],
        }
    }

    /// Bits `hi:lo` of a named word.
    pub fn word_bits(word: &'static str, hi: u32, lo: u32) -> Self {
        Self::Bits {
            word: Some(word),
            ranges: vec![(hi, lo)],
        }
    }

    /// The human form, e.g. `bits 23:16`, `bit 0`, `data bits 7:0`, `bytes 8-15`.
    fn human(&self) -> String {
        match self {
            Self::Bits { word, ranges } => {
                let single = matches!(ranges.as_slice(), [(h, l)] if h == l);
                let mut s = String::new();
                if let Some(w) = word {
                    s.push_str(w);
                    s.push(' ');
                }
                s.push_str(if single { "bit " } else { "bits " });
                let parts: Vec<String> = ranges
                    .iter()
                    .map(|&(h, l)| {
                        if h == l {
                            h.to_string()
                        } else {
                            format!("{h}:{l}")
                        }
                    })
                    .collect();
                s.push_str(&parts.join(","));
                s
            }
            Self::Bytes { offset, len: 1 } => format!("byte {offset}"),
            Self::Bytes { offset, len } => {
                format!(
                    "bytes {offset}-{}",
                    offset.saturating_add(len.saturating_sub(1))
                )
            }
            Self::Derived => "derived".to_owned(),
        }
    }
}

/// One decoded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Field name (`target.apic_id` for nested wire fields); the key `encode` takes.
    pub name: String,
    /// Value.
    pub value: Value,
    /// Position.
    pub position: Position,
    /// Symbolic meaning of the value, if any.
    pub meaning: Option<String>,
    /// The Linux kernel's name of the field, if it has one (`--json` lists it under
    /// `kernel`).
    pub kernel: Option<&'static str>,
}

impl Line {
    /// A field without a symbolic meaning.
    pub fn new(name: impl Into<String>, value: Value, position: Position) -> Self {
        Self {
            name: name.into(),
            value,
            position,
            meaning: None,
            kernel: None,
        }
    }

    /// Adds the kernel's name of the field.
    pub fn kernel(mut self, kernel: Option<&'static str>) -> Self {
        self.kernel = kernel;
        self
    }

    /// Adds a symbolic meaning.
    pub fn meaning(mut self, meaning: impl Into<String>) -> Self {
        self.meaning = Some(meaning.into());
        self
    }
}

/// A decoded value of some type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The type name as given on the command line.
    pub ty: String,
    /// The format variant, for types with several (`remapped`, `posted`, `compat`, ...).
    pub format: Option<&'static str>,
    /// The bytes decoded, in memory order.
    pub bytes: Vec<u8>,
    /// The fields.
    pub lines: Vec<Line>,
    /// Remarks on legal but undefined or unusual values.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report of `ty` over `bytes`.
    pub fn new(ty: &str, bytes: &[u8]) -> Self {
        Self {
            ty: ty.to_owned(),
            format: None,
            bytes: bytes.to_vec(),
            lines: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    /// Appends a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The value of the field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.lines.iter().find(|l| l.name == name).map(|l| &l.value)
    }

    /// The human form, ending with a newline.
    pub fn human(&self) -> String {
        let mut out = String::new();
        match self.format {
            Some(f) => {
                let _ = writeln!(out, "{} ({f} format)", self.ty);
            }
            None => {
                let _ = writeln!(out, "{}", self.ty);
            }
        }
        let values: Vec<String> = self.lines.iter().map(|l| l.value.human()).collect();
        let positions: Vec<String> = self.lines.iter().map(|l| l.position.human()).collect();
        let name_w = self
            .lines
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0)
            .max(13);
        let value_w = values
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .clamp(6, 20);
        let pos_w = positions.iter().map(|p| p.len() + 2).max().unwrap_or(0);
        for ((line, value), position) in self.lines.iter().zip(&values).zip(&positions) {
            let position = format!("({position})");
            let mut text = format!("{:name_w$} = {value:value_w$} {position:pos_w$}", line.name);
            if let Some(m) = &line.meaning {
                let _ = write!(text, "  {m}");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The JSON form.
    pub fn json(&self) -> Json {
        let mut fields = Map::new();
        let mut names = Map::new();
        let mut hex = Map::new();
        let mut kernel = Map::new();
        for line in &self.lines {
            if let Some(k) = line.kernel {
                kernel.insert(line.name.clone(), Json::String(k.to_owned()));
            }
            fields.insert(line.name.clone(), line.value.json());
            if let Value::Num(n) = line.value {
                hex.insert(line.name.clone(), Json::String(format!("{n:#x}")));
            }
            if let Some(m) = &line.meaning {
                names.insert(line.name.clone(), Json::String(m.clone()));
            }
        }
        json!({
            "type": self.ty,
            "format": self.format,
            "bytes": hex_string(&self.bytes),
            "fields": fields,
            "hex": hex,
            "kernel": kernel,
            "names": names,
            "notes": self.notes,
        })
    }
}

/// The largest integer every JSON reader keeps exact (2^53 - 1); `--json` prints wider
/// numbers as hex strings.
pub const MAX_SAFE_JSON_INTEGER: u128 = (1 << 53) - 1;

/// Bytes as space-separated hex pairs (`01 00 45`).
pub fn hex_string(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("vtd-irte", &[0x01, 0x00, 0x45]);
        r.format = Some("remapped");
        r.push(Line::new(
            "present",
            Value::Flag(true),
            Position::bits(0, 0),
        ));
        r.push(Line::new(
            "vector",
            Value::Num(0x45),
            Position::bits(23, 16),
        ));
        r.push(Line::new("delivery_mode", Value::Num(0), Position::bits(7, 5)).meaning("fixed"));
        r.note("something");
        r
    }

    #[test]
    fn human_aligns_fields_with_positions() {
        assert_eq!(
            sample().human(),
            "vtd-irte (remapped format)\n\
             present       = 1      (bit 0)\n\
             vector        = 0x45   (bits 23:16)\n\
             delivery_mode = 0x0    (bits 7:5)    fixed\n\
             note: something\n"
        );
    }

    #[test]
    fn json_has_typed_values() {
        let j = sample().json();
        assert_eq!(j["type"], "vtd-irte");
        assert_eq!(j["format"], "remapped");
        assert_eq!(j["bytes"], "01 00 45");
        assert_eq!(j["fields"]["present"], true);
        assert_eq!(j["fields"]["vector"], 0x45);
        assert_eq!(j["names"]["delivery_mode"], "fixed");
        assert_eq!(j["notes"][0], "something");
        assert_eq!(j["hex"]["vector"], "0x45");
        assert!(j["hex"].get("present").is_none(), "flags are not numbers");
    }

    #[test]
    fn json_keeps_64_bit_values_exact() {
        // 2^53 + 1 is the first integer a double cannot hold.
        assert_eq!(
            Value::Num((1 << 53) - 1).json(),
            json!(9_007_199_254_740_991u64)
        );
        assert_eq!(Value::Num((1 << 53) + 1).json(), json!("0x20000000000001"));
        assert_eq!(
            Value::Num(u128::from(u64::MAX)).json(),
            json!("0xffffffffffffffff")
        );
    }

    #[test]
    fn wide_values_and_positions() {
        assert_eq!(
            Value::Num(u128::MAX).json(),
            Json::String(format!("{:#x}", u128::MAX))
        );
        assert_eq!(Value::Vectors(vec![0x45, 0x80]).human(), "{0x45,0x80}");
        assert_eq!(Value::Vectors(vec![]).json(), json!([]));
        assert_eq!(
            Position::Bits {
                word: Some("address"),
                ranges: vec![(19, 12), (11, 5)]
            }
            .human(),
            "address bits 19:12,11:5"
        );
        assert_eq!(Position::Bytes { offset: 8, len: 8 }.human(), "bytes 8-15");
        assert_eq!(Position::Bytes { offset: 4, len: 1 }.human(), "byte 4");
    }
}

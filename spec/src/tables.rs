//! Markdown tables generated from the abi, and the generated regions of the specification.
//!
//! The specification keeps every table that restates a number of the abi inside a *generated
//! region*: a marker line, the generated table, and a closing marker line.
//!
//! ```text
//! <!-- vir:layout ActivateRequest -->      layout of one wire structure (abi `StructDesc::name`)
//! <!-- /vir:layout -->
//! <!-- vir:statuses -->                    every status, its value and the guest's errno
//! <!-- /vir:statuses -->
//! <!-- vir:calls -->                       every call: code, RAX value, buffers, legacy state
//! <!-- /vir:calls -->
//! <!-- vir:features -->                    the feature-bit space, reserved ranges included
//! <!-- /vir:features -->
//! ```
//!
//! [`regenerate`] replaces the lines between each opening and closing marker with the table
//! generated now and leaves every other line byte for byte as it was. Marker lines are recognised
//! when, leading and trailing white space removed, they start with `<!-- vir:` or `<!-- /vir:`;
//! inside a fenced code block they are text, not markers.

use std::fmt::{self, Write as _};

use vir_abi::call::{CallCode, HYPERCALL_BASE};
use vir_abi::feature::Features;
use vir_abi::layout::{FieldType, StructDesc};
use vir_abi::status::Status;
use vir_abi::wire::{ALL_STRUCTS, CALL_LAYOUTS};

/// What a generated region holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionKind {
    /// The layout table of the named wire structure.
    Layout(String),
    /// The status table.
    Statuses,
    /// The call table.
    Calls,
    /// The feature-bit table.
    Features,
}

impl RegionKind {
    /// The keyword after `vir:` in the marker.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Layout(_) => "layout",
            Self::Statuses => "statuses",
            Self::Calls => "calls",
            Self::Features => "features",
        }
    }

    /// The opening marker line (without line terminator).
    pub fn open_marker(&self) -> String {
        match self {
            Self::Layout(name) => format!("<!-- vir:layout {name} -->"),
            other => format!("<!-- vir:{} -->", other.keyword()),
        }
    }

    /// The closing marker line (without line terminator).
    pub fn close_marker(&self) -> String {
        format!("<!-- /vir:{} -->", self.keyword())
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout(name) => write!(f, "layout {name}"),
            other => f.write_str(other.keyword()),
        }
    }
}

/// A generated region found in a document (lines are 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// What the region holds.
    pub kind: RegionKind,
    /// Line of the opening marker.
    pub open_line: usize,
    /// Line of the closing marker.
    pub close_line: usize,
}

/// Why the generated regions of a document cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionError {
    /// A marker line that names no known region kind, or has the wrong arguments.
    BadMarker {
        /// 1-based line.
        line: usize,
        /// The marker line, trimmed.
        text: String,
    },
    /// A layout region names a structure that is not in `vir_abi::wire::ALL_STRUCTS`.
    UnknownStruct {
        /// 1-based line of the opening marker.
        line: usize,
        /// The name given.
        name: String,
    },
    /// An opening marker inside another region.
    Nested {
        /// 1-based line of the inner opening marker.
        line: usize,
        /// 1-based line of the enclosing region's opening marker.
        outer: usize,
    },
    /// A closing marker that does not close the open region (or closes none).
    UnexpectedClose {
        /// 1-based line.
        line: usize,
        /// The closing marker's keyword.
        keyword: String,
    },
    /// A region whose closing marker is missing.
    Unterminated {
        /// 1-based line of the opening marker.
        line: usize,
        /// The region.
        kind: RegionKind,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMarker { line, text } => write!(f, "line {line}: bad region marker `{text}`"),
            Self::UnknownStruct { line, name } => write!(
                f,
                "line {line}: layout region names `{name}`, which is not a wire structure of vir_abi::wire::ALL_STRUCTS"
            ),
            Self::Nested { line, outer } => {
                write!(
                    f,
                    "line {line}: region opened inside the region of line {outer}"
                )
            }
            Self::UnexpectedClose { line, keyword } => {
                write!(
                    f,
                    "line {line}: closing marker /vir:{keyword} without a matching opening marker"
                )
            }
            Self::Unterminated { line, kind } => {
                write!(
                    f,
                    "line {line}: region `{kind}` is never closed ({})",
                    kind.close_marker()
                )
            }
        }
    }
}

impl std::error::Error for RegionError {}

/// The descriptor of the wire structure with Rust name `name`.
pub fn struct_by_name(name: &str) -> Option<&'static StructDesc> {
    ALL_STRUCTS.iter().find(|s| s.name == name)
}

/// The descriptor of the wire structure with C name `c_name`.
pub fn struct_by_c_name(c_name: &str) -> Option<&'static StructDesc> {
    ALL_STRUCTS.iter().find(|s| s.c_name == c_name)
}

/// One line of documentation text: white space collapsed, `|` escaped for table cells.
pub fn doc_cell(doc: &str) -> String {
    let joined = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.replace('|', "\\|")
}

/// The specification's name of a field type (`u8`, `le16`, `le32`, `le64`, `u8[N]`, or the
/// nested structure's Rust name).
pub fn type_cell(ty: FieldType) -> String {
    match ty {
        FieldType::Bytes(n) => format!("u8[{n}]"),
        FieldType::Struct(c) => match struct_by_c_name(c) {
            Some(s) => format!("`{}`", s.name),
            None => format!("`struct {c}`"),
        },
        other => other.spec_name().to_string(),
    }
}

/// The layout table of one wire structure.
pub fn layout_table(desc: &StructDesc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`{}` (C: `struct {}`), {} bytes, little-endian.",
        desc.name, desc.c_name, desc.size
    );
    out.push('\n');
    out.push_str("| Offset | Size | Field | Type | Description |\n");
    out.push_str("|-------:|-----:|-------|------|-------------|\n");
    for f in desc.fields {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | {} |",
            f.offset,
            f.size,
            f.name,
            type_cell(f.ty),
            doc_cell(f.doc)
        );
    }
    out
}

fn errno_cell(s: Status) -> String {
    match s.errno() {
        0 => "0".to_string(),
        e => format!("`-{}` (-{e})", s.errno_name()),
    }
}

/// The status table: value, name and the errno a guest surfaces.
pub fn statuses_table() -> String {
    let mut out = String::new();
    out.push_str("| Value | Status | Guest errno |\n");
    out.push_str("|------:|--------|-------------|\n");
    for &s in Status::ALL {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            s.0,
            s.name().unwrap_or("?"),
            errno_cell(s)
        );
    }
    let unknown = Status(u32::MAX);
    let _ = writeln!(
        out,
        "| any other | (not defined by version 1) | {} |",
        errno_cell(unknown)
    );
    out
}

fn buffer_cell(desc: Option<StructDesc>) -> String {
    match desc {
        Some(d) => format!("`{}` ({} bytes)", d.name, d.size),
        None => "none (0 bytes)".to_string(),
    }
}

/// The call table: code, register-binding `RAX`, request and response, legacy-state rule.
pub fn calls_table() -> String {
    let mut out = String::new();
    out.push_str(
        "| Code | Call | RAX (register binding) | Request | Response | In the legacy state |\n",
    );
    out.push_str(
        "|-----:|------|-----------------------:|---------|----------|---------------------|\n",
    );
    for l in CALL_LAYOUTS {
        let legacy = if l.code.allowed_in_legacy() {
            "allowed".to_string()
        } else {
            format!("`{}`", Status::NOT_NEGOTIATED.name().unwrap_or("?"))
        };
        let _ = writeln!(
            out,
            "| {:#06x} | `{}` | {:#010x} | {} | {} | {} |",
            l.code.0,
            l.code,
            vir_abi::call::encode_rax(l.code),
            buffer_cell(l.request),
            buffer_cell(l.response),
            legacy
        );
    }
    let unknown = Status::UNKNOWN_CALL.name().unwrap_or("?");
    let _ = writeln!(
        out,
        "| {:#06x}–{:#06x} | reserved for planned extensions | {:#010x}–{:#010x} | — | — | `{unknown}` |",
        CallCode::RESERVED_EXTENSIONS_FIRST,
        CallCode::RESERVED_EXTENSIONS_LAST,
        HYPERCALL_BASE | u64::from(CallCode::RESERVED_EXTENSIONS_FIRST),
        HYPERCALL_BASE | u64::from(CallCode::RESERVED_EXTENSIONS_LAST),
    );
    let _ = writeln!(
        out,
        "| {:#06x}–0xffff | vendor-specific, never assigned | {:#010x}–{:#010x} | — | — | `{unknown}` unless the vendor defines it |",
        CallCode::VENDOR_FIRST,
        HYPERCALL_BASE | u64::from(CallCode::VENDOR_FIRST),
        HYPERCALL_BASE | 0xffff,
    );
    let _ = writeln!(
        out,
        "| any other | not assigned | — | — | — | `{unknown}` |"
    );
    out
}

/// The features reserved for planned extensions, by name.
pub const PLANNED_FEATURES: &[(&str, Features)] = &[
    ("RESERVED_BATCH", Features::RESERVED_BATCH),
    ("RESERVED_STORM_CONTROL", Features::RESERVED_STORM_CONTROL),
    ("RESERVED_POSTED", Features::RESERVED_POSTED),
    ("RESERVED_REVOCATION", Features::RESERVED_REVOCATION),
    ("RESERVED_PASID", Features::RESERVED_PASID),
];

/// One row of the feature table: a contiguous run of bits with one use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRow {
    /// Lowest bit of the run.
    pub first: u32,
    /// Highest bit of the run.
    pub last: u32,
    /// Name of the bit (`None` for an unnamed reserved run).
    pub name: Option<&'static str>,
    /// What the bits are for.
    pub class: FeatureClass,
}

/// What a run of feature bits is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureClass {
    /// A version 1 feature.
    V1,
    /// Reserved for a planned extension.
    Planned,
    /// Reserved; never offered by a version 1 host.
    Reserved,
    /// Vendor-specific; never assigned by the specification.
    Vendor,
}

fn bit_class(bit: u32) -> (FeatureClass, Option<&'static str>) {
    let mask = Features(1u64 << bit);
    if Features::V1_DEFINED.contains(mask) {
        let name = Features::V1_NAMES.get(bit as usize).copied();
        return (FeatureClass::V1, name);
    }
    if let Some((name, _)) = PLANNED_FEATURES.iter().find(|(_, f)| *f == mask) {
        return (FeatureClass::Planned, Some(name));
    }
    if Features::VENDOR_MASK.contains(mask) {
        return (FeatureClass::Vendor, None);
    }
    (FeatureClass::Reserved, None)
}

/// The 64 feature bits partitioned into rows: one per named bit, one per run of unnamed bits
/// of the same class.
pub fn feature_rows() -> Vec<FeatureRow> {
    let mut rows: Vec<FeatureRow> = Vec::new();
    for bit in 0..64u32 {
        let (class, name) = bit_class(bit);
        if let Some(last) = rows.last_mut()
            && name.is_none()
            && last.name.is_none()
            && last.class == class
        {
            last.last = bit;
            continue;
        }
        rows.push(FeatureRow {
            first: bit,
            last: bit,
            name,
            class,
        });
    }
    rows
}

/// The feature table: every bit or run of bits, its mask and its use.
pub fn features_table() -> String {
    let mut out = String::new();
    out.push_str("| Bits | Name | Mask | Use |\n");
    out.push_str("|-----:|------|-----:|-----|\n");
    for row in feature_rows() {
        let bits = if row.first == row.last {
            row.first.to_string()
        } else {
            format!("{}–{}", row.first, row.last)
        };
        let width = row.last - row.first + 1;
        let mask = if width == 64 {
            u64::MAX
        } else {
            ((1u64 << width) - 1) << row.first
        };
        let name = match (row.name, row.class) {
            (Some(n), _) => format!("`{n}`"),
            (None, FeatureClass::Vendor) => "vendor".to_string(),
            (None, _) => "—".to_string(),
        };
        let use_ = match row.class {
            FeatureClass::V1 => "version 1 feature",
            FeatureClass::Planned => {
                "reserved for a planned extension; never offered by a version 1 host"
            }
            FeatureClass::Reserved => "reserved; never offered by a version 1 host",
            FeatureClass::Vendor => "vendor-specific; never assigned by the specification",
        };
        let _ = writeln!(out, "| {bits} | {name} | `{mask:#018x}` | {use_} |");
    }
    out
}

/// The generated text of a region, without its marker lines.
pub fn region_content(kind: &RegionKind) -> Option<String> {
    let table = match kind {
        RegionKind::Layout(name) => layout_table(struct_by_name(name)?),
        RegionKind::Statuses => statuses_table(),
        RegionKind::Calls => calls_table(),
        RegionKind::Features => features_table(),
    };
    Some(format!("\n{table}\n"))
}

enum Marker {
    Open(RegionKind),
    Close(String),
}

fn parse_marker(line: &str, lineno: usize) -> Result<Option<Marker>, RegionError> {
    let t = line.trim();
    let (closing, rest) = if let Some(r) = t.strip_prefix("<!-- vir:") {
        (false, r)
    } else if let Some(r) = t.strip_prefix("<!-- /vir:") {
        (true, r)
    } else {
        return Ok(None);
    };
    let bad = || RegionError::BadMarker {
        line: lineno,
        text: t.to_string(),
    };
    let body = rest.strip_suffix("-->").ok_or_else(bad)?;
    let mut words = body.split_whitespace();
    let keyword = words.next().ok_or_else(bad)?;
    let args: Vec<&str> = words.collect();
    if closing {
        if !args.is_empty() || !matches!(keyword, "layout" | "statuses" | "calls" | "features") {
            return Err(bad());
        }
        return Ok(Some(Marker::Close(keyword.to_string())));
    }
    let kind = match (keyword, args.as_slice()) {
        ("layout", [name]) => RegionKind::Layout((*name).to_string()),
        ("statuses", []) => RegionKind::Statuses,
        ("calls", []) => RegionKind::Calls,
        ("features", []) => RegionKind::Features,
        _ => return Err(bad()),
    };
    Ok(Some(Marker::Open(kind)))
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

/// Every generated region of `text`, in order. Checks marker syntax and nesting only; a layout
/// region naming an unknown structure is reported by [`regenerate`] and [`check_layout_regions`].
pub fn regions(text: &str) -> Result<Vec<Region>, RegionError> {
    let mut out = Vec::new();
    let mut open: Option<(RegionKind, usize)> = None;
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if open.is_none() && is_fence(line) {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        match parse_marker(line, lineno)? {
            None => {}
            Some(Marker::Open(kind)) => {
                if let Some((_, outer)) = open {
                    return Err(RegionError::Nested {
                        line: lineno,
                        outer,
                    });
                }
                open = Some((kind, lineno));
            }
            Some(Marker::Close(keyword)) => match open.take() {
                Some((kind, open_line)) if kind.keyword() == keyword => out.push(Region {
                    kind,
                    open_line,
                    close_line: lineno,
                }),
                _ => {
                    return Err(RegionError::UnexpectedClose {
                        line: lineno,
                        keyword,
                    });
                }
            },
        }
    }
    if let Some((kind, line)) = open {
        return Err(RegionError::Unterminated { line, kind });
    }
    Ok(out)
}

/// `text` with every generated region replaced by the table generated now.
///
/// Lines outside regions, and the marker lines themselves, are kept byte for byte (including
/// their line terminators).
pub fn regenerate(text: &str) -> Result<String, RegionError> {
    let regions = regions(text)?;
    let mut contents = Vec::with_capacity(regions.len());
    for r in &regions {
        let content = region_content(&r.kind).ok_or_else(|| match &r.kind {
            RegionKind::Layout(name) => RegionError::UnknownStruct {
                line: r.open_line,
                name: name.clone(),
            },
            // Only layout regions can name something unknown.
            other => RegionError::BadMarker {
                line: r.open_line,
                text: other.open_marker(),
            },
        })?;
        contents.push(content);
    }
    let mut out = String::with_capacity(text.len());
    let mut next = regions.iter().zip(contents.iter()).peekable();
    let mut skipping = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        if let Some((r, content)) = next.peek() {
            if lineno == r.open_line {
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(content);
                skipping = true;
                continue;
            }
            if lineno == r.close_line {
                out.push_str(line);
                skipping = false;
                next.next();
                continue;
            }
        }
        if !skipping {
            out.push_str(line);
        }
    }
    Ok(out)
}

/// Why the layout regions of the specification do not cover the abi exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoverageError {
    /// The regions themselves are malformed.
    Region(RegionError),
    /// Wire structures of `ALL_STRUCTS` that have no layout region.
    Missing(Vec<&'static str>),
}

impl fmt::Display for CoverageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Region(e) => e.fmt(f),
            Self::Missing(names) => write!(
                f,
                "wire structures without a `<!-- vir:layout NAME -->` region in the specification: {}",
                names.join(", ")
            ),
        }
    }
}

impl std::error::Error for CoverageError {}

/// Check that every layout region names a structure of `ALL_STRUCTS` and that every structure
/// has at least one layout region.
pub fn check_layout_regions(text: &str) -> Result<(), CoverageError> {
    let regions = regions(text).map_err(CoverageError::Region)?;
    for r in &regions {
        if let RegionKind::Layout(name) = &r.kind
            && struct_by_name(name).is_none()
        {
            return Err(CoverageError::Region(RegionError::UnknownStruct {
                line: r.open_line,
                name: name.clone(),
            }));
        }
    }
    let missing: Vec<&'static str> = ALL_STRUCTS
        .iter()
        .filter(|s| {
            !regions
                .iter()
                .any(|r| matches!(&r.kind, RegionKind::Layout(n) if n == s.name))
        })
        .map(|s| s.name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CoverageError::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_table_lists_every_field_at_its_offset() {
        let d = struct_by_name("ActivateRequest").unwrap();
        let t = layout_table(d);
        assert!(t.starts_with("`ActivateRequest` (C: `struct vir_activate_request`), 16 bytes"));
        assert!(t.contains("| 0 | 4 | `handle` | le32 | Allocation handle. |\n"));
        assert!(t.contains("| 4 | 2 | `subhandle` | le16 |"));
        assert!(t.contains("| 6 | 2 | `flags` | le16 |"));
        assert!(t.contains("| 8 | 8 | `target` | `Target` | Target of the vector. |\n"));
        assert_eq!(t.lines().filter(|l| l.starts_with("| ")).count(), 1 + 4);
    }

    #[test]
    fn doc_cells_collapse_space_and_escape_pipes() {
        assert_eq!(doc_cell(" a  b\n c|d "), "a b c\\|d");
    }

    #[test]
    fn statuses_table_has_every_status_and_unknown_row() {
        let t = statuses_table();
        assert!(t.contains("| 0 | `SUCCESS` | 0 |\n"));
        assert!(t.contains("| 1 | `UNKNOWN_CALL` | `-ENOSYS` (-38) |\n"));
        assert!(t.contains("| 14 | `INVALID_HANDLE` | `-ENOENT` (-2) |\n"));
        assert!(t.contains("| any other | (not defined by version 1) | `-EIO` (-5) |\n"));
        assert_eq!(
            t.lines().count(),
            2 + Status::ALL.len() + 1,
            "header, separator, statuses, unknown"
        );
    }

    #[test]
    fn calls_table_rows() {
        let t = calls_table();
        assert!(t.contains(
            "| 0x0001 | `QUERY` | 0x56490001 | none (0 bytes) | `QueryResponse` (40 bytes) | allowed |\n"
        ));
        assert!(t.contains(
            "| 0x0011 | `ACTIVATE` | 0x56490011 | `ActivateRequest` (16 bytes) | `ActivateResponse` (24 bytes) | `NOT_NEGOTIATED` |\n"
        ));
        assert!(t.contains("| 0x0020–0x007f | reserved for planned extensions |"));
        assert!(t.contains("| 0x8000–0xffff | vendor-specific"));
    }

    #[test]
    fn feature_rows_partition_all_64_bits() {
        let rows = feature_rows();
        let mut next = 0;
        for r in &rows {
            assert_eq!(r.first, next, "{r:?}");
            assert!(r.last >= r.first);
            next = r.last + 1;
        }
        assert_eq!(next, 64);
        assert_eq!(
            rows[0],
            FeatureRow {
                first: 0,
                last: 0,
                name: Some("MSI"),
                class: FeatureClass::V1
            }
        );
        assert_eq!(
            rows[6],
            FeatureRow {
                first: 6,
                last: 31,
                name: None,
                class: FeatureClass::Reserved
            }
        );
        assert_eq!(
            rows[7],
            FeatureRow {
                first: 32,
                last: 32,
                name: Some("RESERVED_BATCH"),
                class: FeatureClass::Planned
            }
        );
        assert_eq!(
            rows[12],
            FeatureRow {
                first: 37,
                last: 55,
                name: None,
                class: FeatureClass::Reserved
            }
        );
        assert_eq!(
            rows[13],
            FeatureRow {
                first: 56,
                last: 63,
                name: None,
                class: FeatureClass::Vendor
            }
        );
        assert_eq!(rows.len(), 14);
        let t = features_table();
        assert!(t.contains(
            "| 6–31 | — | `0x00000000ffffffc0` | reserved; never offered by a version 1 host |\n"
        ));
        assert!(t.contains("| 56–63 | vendor | `0xff00000000000000` |"));
    }

    const DOC: &str = "# Title\n\
prose stays\n\
<!-- vir:layout FreeRequest -->\n\
stale content\n\
<!-- /vir:layout -->\n\
middle\n\
```\n\
<!-- vir:layout NotAStruct -->\n\
```\n\
<!-- vir:statuses -->\n\
<!-- /vir:statuses -->\n\
tail";

    #[test]
    fn regions_found_in_order_ignoring_code_fences() {
        assert_eq!(
            regions(DOC),
            Ok(vec![
                Region {
                    kind: RegionKind::Layout("FreeRequest".into()),
                    open_line: 3,
                    close_line: 5
                },
                Region {
                    kind: RegionKind::Statuses,
                    open_line: 10,
                    close_line: 11
                },
            ])
        );
    }

    #[test]
    fn regenerate_replaces_only_region_bodies_and_is_idempotent() {
        let out = regenerate(DOC).unwrap();
        let expected = format!(
            "# Title\nprose stays\n<!-- vir:layout FreeRequest -->\n\n{}\n<!-- /vir:layout -->\nmiddle\n```\n<!-- vir:layout NotAStruct -->\n```\n<!-- vir:statuses -->\n\n{}\n<!-- /vir:statuses -->\ntail",
            layout_table(struct_by_name("FreeRequest").unwrap()),
            statuses_table()
        );
        assert_eq!(out, expected);
        assert_eq!(regenerate(&out).unwrap(), out);
    }

    #[test]
    fn marker_errors_are_typed_with_lines() {
        assert_eq!(
            regenerate("a\n<!-- vir:layout Nope -->\n<!-- /vir:layout -->\n"),
            Err(RegionError::UnknownStruct {
                line: 2,
                name: "Nope".into()
            })
        );
        assert_eq!(
            regions("<!-- vir:tables -->\n"),
            Err(RegionError::BadMarker {
                line: 1,
                text: "<!-- vir:tables -->".into()
            })
        );
        assert_eq!(
            regions("<!-- vir:layout -->\n"),
            Err(RegionError::BadMarker {
                line: 1,
                text: "<!-- vir:layout -->".into()
            })
        );
        assert_eq!(
            regions("<!-- vir:calls -->\n<!-- vir:features -->\n"),
            Err(RegionError::Nested { line: 2, outer: 1 })
        );
        assert_eq!(
            regions("<!-- vir:calls -->\n<!-- /vir:features -->\n"),
            Err(RegionError::UnexpectedClose {
                line: 2,
                keyword: "features".into()
            })
        );
        assert_eq!(
            regions("x\n<!-- vir:calls -->\n"),
            Err(RegionError::Unterminated {
                line: 2,
                kind: RegionKind::Calls
            })
        );
    }

    #[test]
    fn coverage_reports_missing_and_unknown_structures() {
        let all: String = ALL_STRUCTS
            .iter()
            .map(|s| format!("<!-- vir:layout {} -->\n<!-- /vir:layout -->\n", s.name))
            .collect();
        assert_eq!(check_layout_regions(&all), Ok(()));
        let without_free = all.replace(
            "<!-- vir:layout FreeRequest -->\n<!-- /vir:layout -->\n",
            "",
        );
        assert_eq!(
            check_layout_regions(&without_free),
            Err(CoverageError::Missing(vec!["FreeRequest"]))
        );
        let unknown = format!("{all}<!-- vir:layout Bogus -->\n<!-- /vir:layout -->\n");
        assert!(matches!(
            check_layout_regions(&unknown),
            Err(CoverageError::Region(RegionError::UnknownStruct { name, .. })) if name == "Bogus"
        ));
    }
}

//! The requirement register and its consistency with the specification.
//!
//! Requirement IDs have the form `VIR-<AREA>-<SIDE>-<NNN>`: `AREA` one or more capital letters,
//! `SIDE` `H` (host) or `G` (guest), `NNN` exactly three digits.
//!
//! `spec/requirements.tsv` holds one requirement per line, five tab-separated columns:
//!
//! ```text
//! id <TAB> level <TAB> side <TAB> section <TAB> summary
//! ```
//!
//! `level` is `MUST`, `SHOULD` or `MAY`; `side` is `H` or `G` and equals the side in the ID;
//! `section` is the specification section that states the requirement; `summary` is one line.
//! Blank lines and lines starting with `#` are ignored, and so is a first row whose cells are
//! the column names. [`parse_tsv`] reports the first malformed line as a [`TsvError`] carrying
//! its line number.
//!
//! The specification tags each normative statement with the requirement's ID in bold,
//! `**VIR-…**`. [`check_consistency`] compares the two documents (see [`Problem`] for what it
//! reports) using the statement model of [`statements`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Host or guest: who a requirement binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The hypervisor (`H`).
    Host,
    /// The guest kernel (`G`).
    Guest,
}

impl Side {
    /// Parse the one-letter code `H` or `G`.
    pub fn from_code(s: &str) -> Option<Side> {
        match s {
            "H" => Some(Side::Host),
            "G" => Some(Side::Guest),
            _ => None,
        }
    }

    /// The one-letter code.
    pub fn code(self) -> char {
        match self {
            Side::Host => 'H',
            Side::Guest => 'G',
        }
    }
}

/// The RFC 2119 strength of a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// `MAY` (also `OPTIONAL`).
    May,
    /// `SHOULD` (also `SHOULD NOT`, `RECOMMENDED`, `NOT RECOMMENDED`).
    Should,
    /// `MUST` (also `MUST NOT`, `SHALL`, `SHALL NOT`, `REQUIRED`).
    Must,
}

impl Level {
    /// Parse the register's level column (`MUST`, `SHOULD`, `MAY`).
    pub fn from_register(s: &str) -> Option<Level> {
        match s {
            "MUST" => Some(Level::Must),
            "SHOULD" => Some(Level::Should),
            "MAY" => Some(Level::May),
            _ => None,
        }
    }

    /// The register's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A well-formed requirement ID (`VIR-<AREA>-<SIDE>-<NNN>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequirementId {
    area: String,
    side: Side,
    number: u16,
}

/// Why a string is not a well-formed requirement ID; every variant carries the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// It does not start with `VIR-`.
    Prefix(String),
    /// The area is empty or has characters other than `A`–`Z`.
    Area(String),
    /// The side is not `H` or `G`.
    Side(String),
    /// The number is not exactly three digits.
    Number(String),
    /// Something follows the number.
    Trailing(String),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, s) = match self {
            Self::Prefix(s) => ("does not start with VIR-", s),
            Self::Area(s) => ("area is not one or more capital letters", s),
            Self::Side(s) => ("side is not H or G", s),
            Self::Number(s) => ("number is not three digits", s),
            Self::Trailing(s) => ("text follows the number", s),
        };
        write!(f, "bad requirement ID `{s}`: {what}")
    }
}

impl std::error::Error for IdError {}

impl RequirementId {
    /// Parse an ID; the whole string must be the ID.
    pub fn parse(s: &str) -> Result<RequirementId, IdError> {
        let rest = s
            .strip_prefix("VIR-")
            .ok_or_else(|| IdError::Prefix(s.to_string()))?;
        let (area, rest) = rest
            .split_once('-')
            .ok_or_else(|| IdError::Area(s.to_string()))?;
        if area.is_empty() || !area.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(IdError::Area(s.to_string()));
        }
        let (side, number) = rest
            .split_once('-')
            .ok_or_else(|| IdError::Side(s.to_string()))?;
        let side = Side::from_code(side).ok_or_else(|| IdError::Side(s.to_string()))?;
        let digits = number.bytes().take_while(u8::is_ascii_digit).count();
        if digits != 3 {
            return Err(IdError::Number(s.to_string()));
        }
        if number.len() != 3 {
            return Err(IdError::Trailing(s.to_string()));
        }
        let number = number
            .parse::<u16>()
            .map_err(|_| IdError::Number(s.to_string()))?;
        Ok(RequirementId {
            area: area.to_string(),
            side,
            number,
        })
    }

    /// The area (`ACT`, `NEG`, …).
    pub fn area(&self) -> &str {
        &self.area
    }

    /// The side.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The number (0–999).
    pub fn number(&self) -> u16 {
        self.number
    }

    /// The same area and side with another number.
    fn with_number(&self, number: u16) -> RequirementId {
        RequirementId {
            area: self.area.clone(),
            side: self.side,
            number,
        }
    }
}

impl fmt::Display for RequirementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VIR-{}-{}-{:03}",
            self.area,
            self.side.code(),
            self.number
        )
    }
}

/// One occurrence of a requirement ID in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMention {
    /// The ID.
    pub id: RequirementId,
    /// 1-based line.
    pub line: usize,
    /// Byte offset of the mention in the whole text.
    pub offset: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Parse a well-formed ID at the start of `s`, returning it and its length; the ID must not be
/// followed by a letter, digit or `_`.
fn id_at(s: &str) -> Option<(RequirementId, usize)> {
    let b = s.as_bytes();
    let mut i = 4; // "VIR-"
    let area_start = i;
    while i < b.len() && b[i].is_ascii_uppercase() {
        i += 1;
    }
    if i == area_start || b.get(i) != Some(&b'-') {
        return None;
    }
    let side = *b.get(i + 1)?;
    if !(side == b'H' || side == b'G') || b.get(i + 2) != Some(&b'-') {
        return None;
    }
    let num_start = i + 3;
    let num_end = num_start + 3;
    if b.len() < num_end || !b[num_start..num_end].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.get(num_end)
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
    {
        return None;
    }
    RequirementId::parse(&s[..num_end])
        .ok()
        .map(|id| (id, num_end))
}

/// The end of a range suffix `..NNN` or `..=NNN` at the start of `s` (both inclusive).
fn range_end_at(s: &str) -> Option<(u16, usize)> {
    let rest = s.strip_prefix("..")?;
    let (rest, skip) = match rest.strip_prefix('=') {
        Some(r) => (r, 3),
        None => (rest, 2),
    };
    let b = rest.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.get(3)
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
    {
        return None;
    }
    Some((rest[..3].parse().ok()?, skip + 3))
}

/// Every well-formed requirement ID mentioned in `text`, in order.
///
/// An ID counts when it is not preceded by a letter, digit, `_` or `-` and not followed by a
/// letter, digit or `_`. A range `VIR-<AREA>-<SIDE>-<NNN>..<MMM>` (or `..=<MMM>`), as the
/// design notes write "the reset requirements 001..003", mentions every ID from `NNN` to `MMM`
/// inclusive; a range whose end is not above its start mentions only its first ID.
pub fn scan_ids(text: &str) -> Vec<IdMention> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut line = 1;
    let mut line_counted_to = 0;
    let mut search = 0;
    while let Some(pos) = text[search..].find("VIR-").map(|p| p + search) {
        search = pos + 4;
        if pos > 0 && is_word_byte(bytes[pos - 1]) {
            continue;
        }
        let Some((id, len)) = id_at(&text[pos..]) else {
            continue;
        };
        line += bytes[line_counted_to..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        line_counted_to = pos;
        search = pos + len;
        let first = id.number();
        let last = match range_end_at(&text[pos + len..]) {
            Some((end, skip)) if end > first => {
                search += skip;
                end
            }
            _ => first,
        };
        for n in first..=last {
            out.push(IdMention {
                id: id.with_number(n),
                line,
                offset: pos,
            });
        }
    }
    out
}

/// One row of the requirement register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The ID.
    pub id: RequirementId,
    /// The RFC 2119 level.
    pub level: Level,
    /// Who the requirement binds.
    pub side: Side,
    /// The specification section stating it.
    pub section: String,
    /// One-line summary.
    pub summary: String,
    /// 1-based line in the register.
    pub line: usize,
}

/// What is wrong with a line of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsvErrorKind {
    /// The line does not have exactly five tab-separated columns.
    Columns(usize),
    /// The ID column is not a well-formed ID.
    Id(IdError),
    /// The level column is not `MUST`, `SHOULD` or `MAY`.
    Level(String),
    /// The side column is not `H` or `G`.
    Side(String),
    /// The side column differs from the side in the ID.
    SideMismatch {
        /// The side the ID names.
        id: Side,
        /// The side column.
        column: Side,
    },
    /// A column that must not be empty is empty.
    Empty(&'static str),
}

/// A malformed line of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsvError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub kind: TsvErrorKind,
}

impl fmt::Display for TsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "requirements.tsv line {}: ", self.line)?;
        match &self.kind {
            TsvErrorKind::Columns(n) => write!(f, "{n} tab-separated columns, expected 5"),
            TsvErrorKind::Id(e) => e.fmt(f),
            TsvErrorKind::Level(s) => write!(f, "level `{s}` is not MUST, SHOULD or MAY"),
            TsvErrorKind::Side(s) => write!(f, "side `{s}` is not H or G"),
            TsvErrorKind::SideMismatch { id, column } => write!(
                f,
                "side column {} differs from the ID's side {}",
                column.code(),
                id.code()
            ),
            TsvErrorKind::Empty(col) => write!(f, "column `{col}` is empty"),
        }
    }
}

impl std::error::Error for TsvError {}

/// The column names of the register, in order.
pub const TSV_COLUMNS: [&str; 5] = ["id", "level", "side", "section", "summary"];

/// Parse the requirement register.
pub fn parse_tsv(text: &str) -> Result<Vec<Requirement>, TsvError> {
    let mut out = Vec::new();
    let mut seen_row = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let row = raw.strip_suffix('\r').unwrap_or(raw);
        if row.trim().is_empty() || row.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = row.split('\t').map(str::trim).collect();
        let first_row = !seen_row;
        seen_row = true;
        if first_row
            && cells.len() == TSV_COLUMNS.len()
            && cells
                .iter()
                .zip(TSV_COLUMNS)
                .all(|(c, n)| c.eq_ignore_ascii_case(n))
        {
            continue;
        }
        let err = |kind| TsvError { line, kind };
        let [id, level, side, section, summary] = cells.as_slice() else {
            return Err(err(TsvErrorKind::Columns(cells.len())));
        };
        let id = RequirementId::parse(id).map_err(|e| err(TsvErrorKind::Id(e)))?;
        let level = Level::from_register(level)
            .ok_or_else(|| err(TsvErrorKind::Level(level.to_string())))?;
        let side =
            Side::from_code(side).ok_or_else(|| err(TsvErrorKind::Side(side.to_string())))?;
        if side != id.side() {
            return Err(err(TsvErrorKind::SideMismatch {
                id: id.side(),
                column: side,
            }));
        }
        if section.is_empty() {
            return Err(err(TsvErrorKind::Empty("section")));
        }
        if summary.is_empty() {
            return Err(err(TsvErrorKind::Empty("summary")));
        }
        out.push(Requirement {
            id,
            level,
            side,
            section: section.to_string(),
            summary: summary.to_string(),
            line,
        });
    }
    Ok(out)
}

/// An RFC 2119 keyword found in the prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyword {
    /// The keyword as written (`MUST NOT`, `SHOULD`, …).
    pub text: &'static str,
    /// Its strength.
    pub level: Level,
    /// 1-based line.
    pub line: usize,
}

/// The RFC 2119 keywords, longest first so that `MUST NOT` wins over `MUST`.
pub const KEYWORDS: &[(&str, Level)] = &[
    ("NOT RECOMMENDED", Level::Should),
    ("SHOULD NOT", Level::Should),
    ("SHALL NOT", Level::Must),
    ("MUST NOT", Level::Must),
    ("RECOMMENDED", Level::Should),
    ("REQUIRED", Level::Must),
    ("OPTIONAL", Level::May),
    ("SHOULD", Level::Should),
    ("SHALL", Level::Must),
    ("MUST", Level::Must),
    ("MAY", Level::May),
];

/// A tagged normative statement: a `**VIR-…**` tag and the text it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The tag as written between the `**`.
    pub tag: String,
    /// The ID, or why the tag is not a well-formed ID.
    pub id: Result<RequirementId, IdError>,
    /// 1-based line of the tag.
    pub line: usize,
    /// The keywords in the text the tag owns.
    pub keywords: Vec<Keyword>,
}

impl Statement {
    /// The strongest keyword of the statement (`None` if it has none).
    pub fn level(&self) -> Option<Level> {
        self.keywords.iter().map(|k| k.level).max()
    }
}

/// A `MUST` or `SHOULD` keyword that no tag owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untagged {
    /// The keyword.
    pub keyword: Keyword,
    /// The block of text it is in (white space collapsed, at most 120 characters).
    pub excerpt: String,
}

/// The statement model of a specification: tagged statements and untagged keywords.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statements {
    /// Every tag, in order.
    pub tagged: Vec<Statement>,
    /// Every `MUST`/`SHOULD`-class keyword outside tagged statements.
    pub untagged: Vec<Untagged>,
    /// Every requirement ID mentioned in the prose, tags included.
    pub mentions: Vec<IdMention>,
}

/// A block of prose: consecutive lines forming one paragraph, list item, heading or table row.
struct Block {
    /// (line number, text) of each line.
    lines: Vec<(usize, String)>,
}

fn starts_list_item(line: &str) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix(['-', '*', '+']) {
        return rest.starts_with(' ') || rest.is_empty();
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && matches!(t.as_bytes().get(digits), Some(b'.' | b')'))
}

/// Split Markdown into prose blocks, leaving out fenced code, HTML comments (and with them the
/// generated regions, which start and end with comment lines and hold only generated tables).
fn blocks(md: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut cur: Vec<(usize, String)> = Vec::new();
    let mut in_fence = false;
    let mut in_comment = false;
    let mut in_region = false;
    let flush = |cur: &mut Vec<(usize, String)>, out: &mut Vec<Block>| {
        if !cur.is_empty() {
            out.push(Block {
                lines: std::mem::take(cur),
            });
        }
    };
    for (i, raw) in md.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            flush(&mut cur, &mut out);
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if t.starts_with("<!-- vir:") {
            flush(&mut cur, &mut out);
            in_region = true;
            continue;
        }
        if t.starts_with("<!-- /vir:") {
            in_region = false;
            continue;
        }
        if in_region {
            continue;
        }
        // Drop HTML comments (possibly spanning lines).
        let mut text = String::new();
        let mut rest = raw;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(p) => {
                        rest = &rest[p + 3..];
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("<!--") {
                    Some(p) => {
                        text.push_str(&rest[..p]);
                        rest = &rest[p + 4..];
                        in_comment = true;
                    }
                    None => {
                        text.push_str(rest);
                        break;
                    }
                }
            }
        }
        let t = text.trim();
        if t.is_empty() {
            flush(&mut cur, &mut out);
            continue;
        }
        if t.starts_with('#') || t.starts_with('|') {
            flush(&mut cur, &mut out);
            out.push(Block {
                lines: vec![(n, text)],
            });
            continue;
        }
        if starts_list_item(&text) {
            flush(&mut cur, &mut out);
        }
        cur.push((n, text));
    }
    flush(&mut cur, &mut out);
    out
}

/// Keywords in `s` (one line), skipping those in backticks or double quotes.
fn keywords_in(s: &str, line: usize, out: &mut Vec<(usize, Keyword)>, base: usize) {
    let b = s.as_bytes();
    let mut in_code = false;
    let mut in_quote = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'`' => in_code = !in_code,
            b'"' if !in_code => in_quote = !in_quote,
            c if c.is_ascii_uppercase() && !in_code && !in_quote => {
                let boundary_before = i == 0 || !b[i - 1].is_ascii_alphanumeric();
                if boundary_before
                    && let Some(&(kw, level)) = KEYWORDS.iter().find(|(kw, _)| {
                        s[i..].starts_with(kw)
                            && b.get(i + kw.len())
                                .is_none_or(|c| !c.is_ascii_alphanumeric())
                    })
                {
                    out.push((
                        base + i,
                        Keyword {
                            text: kw,
                            level,
                            line,
                        },
                    ));
                    i += kw.len();
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Whether the block is the RFC 2119 boilerplate (its keywords are not statements).
fn is_boilerplate(text: &str) -> bool {
    text.contains("RFC 2119") || text.contains("RFC2119") || text.contains("BCP 14")
}

fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(120) {
        Some((p, _)) => format!("{}…", &collapsed[..p]),
        None => collapsed,
    }
}

/// Whether only list markers, white space and opening punctuation precede `pos` in `text`.
fn at_block_start(text: &str, pos: usize) -> bool {
    let before = text[..pos].trim_start();
    let before = before
        .strip_prefix(['-', '*', '+'])
        .map(str::trim_start)
        .unwrap_or_else(|| {
            let d = before.bytes().take_while(u8::is_ascii_digit).count();
            if d > 0 && matches!(before.as_bytes().get(d), Some(b'.' | b')')) {
                before[d + 1..].trim_start()
            } else {
                before
            }
        });
    before.chars().all(|c| matches!(c, '(' | '[' | '|' | ' '))
}

/// Find the tagged statements of a specification.
///
/// The prose is cut into blocks (paragraphs, list items, headings, table rows; fenced code,
/// HTML comments and generated regions are left out). In a block, the text each tag owns is:
///
/// * the whole block, if the block has one tag;
/// * *leading tags* (the first tag opens the block, after a list marker or `(`/`|`): from each
///   tag to the next;
/// * *trailing tags* (the first tag follows text): from the previous tag to this one; text after
///   the last tag is owned by none.
///
/// A keyword is "owned" if it lies in text a tag owns. Keywords in backticks or double quotes,
/// and in a block citing RFC 2119 or BCP 14 (the conventions paragraph), are ignored.
pub fn statements(md: &str) -> Statements {
    let mut result = Statements::default();
    for block in blocks(md) {
        // Join the block's lines, remembering where each starts.
        let mut text = String::new();
        let mut starts = Vec::new();
        for (n, l) in &block.lines {
            starts.push((text.len(), *n));
            text.push_str(l);
            text.push('\n');
        }
        let line_of = |pos: usize| {
            starts
                .iter()
                .rev()
                .find(|(s, _)| *s <= pos)
                .map_or(0, |(_, n)| *n)
        };
        let mut kws = Vec::new();
        for (k, (n, l)) in block.lines.iter().enumerate() {
            keywords_in(l, *n, &mut kws, starts[k].0);
        }
        for m in scan_ids(&text) {
            result.mentions.push(IdMention {
                id: m.id,
                line: line_of(m.offset),
                offset: m.offset,
            });
        }
        // Tags: `**VIR-...**`.
        let mut tags: Vec<(usize, usize, String)> = Vec::new();
        let mut from = 0;
        while let Some(p) = text[from..].find("**VIR-").map(|p| p + from) {
            let inner_start = p + 2;
            match text[inner_start..].find("**") {
                Some(q) => {
                    let inner = &text[inner_start..inner_start + q];
                    tags.push((p, inner_start + q + 2, inner.to_string()));
                    from = inner_start + q + 2;
                }
                None => break,
            }
        }
        let boiler = is_boilerplate(&text);
        let owner = |pos: usize| -> Option<usize> {
            match tags.len() {
                0 => None,
                1 => Some(0),
                _ if at_block_start(&text, tags[0].0) => {
                    tags.iter().rposition(|(start, _, _)| *start <= pos)
                }
                _ => tags.iter().position(|(start, _, _)| pos < *start),
            }
        };
        let mut owned: Vec<Vec<Keyword>> = vec![Vec::new(); tags.len()];
        for (pos, kw) in kws {
            match owner(pos) {
                Some(t) => owned[t].push(kw),
                None if !boiler && kw.level > Level::May => result.untagged.push(Untagged {
                    keyword: kw,
                    excerpt: excerpt(&text),
                }),
                None => {}
            }
        }
        for ((start, _, tag), keywords) in tags.into_iter().zip(owned) {
            result.tagged.push(Statement {
                id: RequirementId::parse(&tag),
                tag,
                line: line_of(start),
                keywords,
            });
        }
    }
    result
}

/// A disagreement between the register and the specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// An ID appears on more than one line of the register.
    DuplicateId {
        /// The ID.
        id: RequirementId,
        /// Register lines.
        lines: Vec<usize>,
    },
    /// A `**VIR-…**` tag that is not a well-formed ID.
    MalformedTag {
        /// Specification line.
        line: usize,
        /// Why.
        error: IdError,
    },
    /// An ID tagged more than once in the specification.
    DuplicateTag {
        /// The ID.
        id: RequirementId,
        /// Specification lines.
        lines: Vec<usize>,
    },
    /// A register ID that no tag of the specification states.
    NotInSpec {
        /// The ID.
        id: RequirementId,
        /// Register line.
        line: usize,
    },
    /// A tag of the specification that the register does not list.
    NotInRegister {
        /// The ID.
        id: RequirementId,
        /// Specification line.
        line: usize,
    },
    /// A plain (untagged) mention of an ID the register does not list.
    UnknownReference {
        /// The ID.
        id: RequirementId,
        /// Specification line.
        line: usize,
    },
    /// A `MUST`- or `SHOULD`-class keyword outside every tagged statement.
    Untagged(Untagged),
    /// A tagged statement without an RFC 2119 keyword.
    NoKeyword {
        /// The ID.
        id: RequirementId,
        /// Specification line.
        line: usize,
    },
    /// The register's level differs from the statement's strongest keyword.
    LevelMismatch {
        /// The ID.
        id: RequirementId,
        /// Level in the register.
        register: Level,
        /// Strongest keyword of the statement.
        spec: Level,
        /// Specification line.
        line: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateId { id, lines } => {
                write!(f, "{id} appears on register lines {lines:?}")
            }
            Self::MalformedTag { line, error } => write!(f, "spec line {line}: {error}"),
            Self::DuplicateTag { id, lines } => write!(f, "{id} is tagged on spec lines {lines:?}"),
            Self::NotInSpec { id, line } => {
                write!(
                    f,
                    "{id} (register line {line}) is not tagged in the specification"
                )
            }
            Self::NotInRegister { id, line } => {
                write!(f, "{id} (spec line {line}) is not in requirements.tsv")
            }
            Self::UnknownReference { id, line } => {
                write!(
                    f,
                    "spec line {line} mentions {id}, which is not in requirements.tsv"
                )
            }
            Self::Untagged(u) => write!(
                f,
                "spec line {}: `{}` is not in a tagged statement: {}",
                u.keyword.line, u.keyword.text, u.excerpt
            ),
            Self::NoKeyword { id, line } => {
                write!(f, "{id} (spec line {line}) has no RFC 2119 keyword")
            }
            Self::LevelMismatch {
                id,
                register,
                spec,
                line,
            } => write!(
                f,
                "{id}: requirements.tsv says {register}, the statement on spec line {line} says {spec}"
            ),
        }
    }
}

/// IDs that appear on more than one register line.
pub fn duplicate_ids(reqs: &[Requirement]) -> Vec<Problem> {
    let mut lines: BTreeMap<&RequirementId, Vec<usize>> = BTreeMap::new();
    for r in reqs {
        lines.entry(&r.id).or_default().push(r.line);
    }
    lines
        .into_iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(id, lines)| Problem::DuplicateId {
            id: id.clone(),
            lines,
        })
        .collect()
}

/// Every disagreement between the register `reqs` and the specification `md`.
pub fn check_consistency(reqs: &[Requirement], md: &str) -> Vec<Problem> {
    let mut problems = duplicate_ids(reqs);
    let st = statements(md);
    let register: BTreeMap<&RequirementId, &Requirement> =
        reqs.iter().map(|r| (&r.id, r)).collect();
    let mut tagged: BTreeMap<RequirementId, Vec<usize>> = BTreeMap::new();
    for s in &st.tagged {
        match &s.id {
            Err(error) => problems.push(Problem::MalformedTag {
                line: s.line,
                error: error.clone(),
            }),
            Ok(id) => {
                tagged.entry(id.clone()).or_default().push(s.line);
                match (register.get(id), s.level()) {
                    (None, _) => problems.push(Problem::NotInRegister {
                        id: id.clone(),
                        line: s.line,
                    }),
                    (Some(_), None) => problems.push(Problem::NoKeyword {
                        id: id.clone(),
                        line: s.line,
                    }),
                    (Some(r), Some(level)) if r.level != level => {
                        problems.push(Problem::LevelMismatch {
                            id: id.clone(),
                            register: r.level,
                            spec: level,
                            line: s.line,
                        })
                    }
                    (Some(_), Some(_)) => {}
                }
            }
        }
    }
    for (id, lines) in &tagged {
        if lines.len() > 1 {
            problems.push(Problem::DuplicateTag {
                id: id.clone(),
                lines: lines.clone(),
            });
        }
    }
    for r in reqs {
        if !tagged.contains_key(&r.id) {
            problems.push(Problem::NotInSpec {
                id: r.id.clone(),
                line: r.line,
            });
        }
    }
    let mut reported = BTreeSet::new();
    for m in &st.mentions {
        if !register.contains_key(&m.id) && !tagged.contains_key(&m.id) && reported.insert(&m.id) {
            problems.push(Problem::UnknownReference {
                id: m.id.clone(),
                line: m.line,
            });
        }
    }
    problems.extend(st.untagged.into_iter().map(Problem::Untagged));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixture IDs are assembled at run time so that this file cites no requirement (the
    // traceability scan reads every .rs file of the workspace).
    fn fake(area: &str, side: char, n: u16) -> String {
        format!("VIR-{area}-{side}-{n:03}")
    }

    #[test]
    fn id_parse_accepts_the_pattern_only() {
        let s = fake("ACT", 'H', 5);
        let id = RequirementId::parse(&s).unwrap();
        assert_eq!((id.area(), id.side(), id.number()), ("ACT", Side::Host, 5));
        assert_eq!(id.to_string(), s);
        let bad = |s: &str| RequirementId::parse(s).unwrap_err();
        assert_eq!(
            bad("VIX-ACT-H-005"),
            IdError::Prefix("VIX-ACT-H-005".into())
        );
        assert_eq!(bad("VIR-Act-H-005"), IdError::Area("VIR-Act-H-005".into()));
        assert_eq!(bad("VIR--H-005"), IdError::Area("VIR--H-005".into()));
        assert_eq!(bad("VIR-ACT-X-005"), IdError::Side("VIR-ACT-X-005".into()));
        assert_eq!(bad("VIR-ACT-H-05"), IdError::Number("VIR-ACT-H-05".into()));
        assert_eq!(
            bad("VIR-ACT-H-0050"),
            IdError::Number("VIR-ACT-H-0050".into())
        );
        assert_eq!(
            bad("VIR-ACT-G-005x"),
            IdError::Trailing("VIR-ACT-G-005x".into())
        );
    }

    #[test]
    fn scan_ids_respects_word_boundaries_and_expands_ranges() {
        let a = fake("RST", 'H', 1);
        let text = format!(
            "x {a}..003 y\nnot X{a} nor {a}9 but ({a}) and {b}..=002, bad range {c}..001",
            b = fake("DEA", 'G', 1),
            c = fake("FRE", 'H', 3)
        );
        let got: Vec<(String, usize)> = scan_ids(&text)
            .into_iter()
            .map(|m| (m.id.to_string(), m.line))
            .collect();
        let want = vec![
            (fake("RST", 'H', 1), 1),
            (fake("RST", 'H', 2), 1),
            (fake("RST", 'H', 3), 1),
            (fake("RST", 'H', 1), 2),
            (fake("DEA", 'G', 1), 2),
            (fake("DEA", 'G', 2), 2),
            (fake("FRE", 'H', 3), 2),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn parse_tsv_rows_header_comments_and_errors() {
        let id1 = fake("ACT", 'H', 1);
        let id2 = fake("ACT", 'G', 1);
        let text = format!(
            "id\tlevel\tside\tsection\tsummary\n# comment\n\n{id1}\tMUST\tH\t7.3\thandle must be live\n{id2}\tSHOULD\tG\t7.3\twrite once\n"
        );
        let reqs = parse_tsv(&text).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0],
            Requirement {
                id: RequirementId::parse(&id1).unwrap(),
                level: Level::Must,
                side: Side::Host,
                section: "7.3".into(),
                summary: "handle must be live".into(),
                line: 4,
            }
        );
        assert_eq!(
            (reqs[1].level, reqs[1].side, reqs[1].line),
            (Level::Should, Side::Guest, 5)
        );

        let err = |t: &str| parse_tsv(t).unwrap_err();
        assert_eq!(
            err(&format!("{id1}\tMUST\tH\t7.3\n")),
            TsvError {
                line: 1,
                kind: TsvErrorKind::Columns(4)
            }
        );
        assert_eq!(
            err(&format!(
                "# c\n{id1}\tMUST\tH\t7.3\tx\nVIR-ACT-H-1\tMUST\tH\t7.3\tx\n"
            )),
            TsvError {
                line: 3,
                kind: TsvErrorKind::Id(IdError::Number("VIR-ACT-H-1".into()))
            }
        );
        assert_eq!(
            err(&format!("{id1}\tmust\tH\t7.3\tx\n")),
            TsvError {
                line: 1,
                kind: TsvErrorKind::Level("must".into())
            }
        );
        assert_eq!(
            err(&format!("{id1}\tMUST\tHost\t7.3\tx\n")),
            TsvError {
                line: 1,
                kind: TsvErrorKind::Side("Host".into())
            }
        );
        assert_eq!(
            err(&format!("{id1}\tMUST\tG\t7.3\tx\n")),
            TsvError {
                line: 1,
                kind: TsvErrorKind::SideMismatch {
                    id: Side::Host,
                    column: Side::Guest
                }
            }
        );
        assert_eq!(
            err(&format!("{id1}\tMUST\tH\t\tx\n")),
            TsvError {
                line: 1,
                kind: TsvErrorKind::Empty("section")
            }
        );
        // A header row is only recognised first.
        assert_eq!(
            err(&format!(
                "{id1}\tMUST\tH\t1\tx\nid\tlevel\tside\tsection\tsummary\n"
            )),
            TsvError {
                line: 2,
                kind: TsvErrorKind::Id(IdError::Prefix("id".into()))
            }
        );
    }

    #[test]
    fn statements_single_leading_and_trailing_tags() {
        let (a, b, c) = (
            fake("ALC", 'H', 1),
            fake("ALC", 'H', 2),
            fake("ALC", 'G', 1),
        );
        let md = format!(
            "# Conventions\n\nThe key words \"MUST\" and \"SHOULD\" are per RFC 2119.\n\n\
             A host MUST check the kind and MAY log it (**{a}**).\n\n\
             - **{b}** The host MUST refuse. The guest MAY retry.\n  **{c}** The guest SHOULD back off.\n\n\
             Plain text where the host MUST do something untagged.\n\n\
             ```\ncode MUST be ignored\n```\n\
             | **{a}x** | MUST |\n"
        );
        let st = statements(&md);
        let summary: Vec<(String, usize, Option<Level>)> = st
            .tagged
            .iter()
            .map(|s| (s.tag.clone(), s.line, s.level()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (a.clone(), 5, Some(Level::Must)),
                (b.clone(), 7, Some(Level::Must)),
                (c.clone(), 8, Some(Level::Should)),
                (format!("{a}x"), 15, Some(Level::Must)),
            ]
        );
        assert_eq!(st.tagged[3].id, Err(IdError::Trailing(format!("{a}x"))));
        assert_eq!(st.untagged.len(), 1);
        assert_eq!(
            st.untagged[0].keyword,
            Keyword {
                text: "MUST",
                level: Level::Must,
                line: 10
            }
        );
        assert_eq!(
            st.untagged[0].excerpt,
            "Plain text where the host MUST do something untagged."
        );
    }

    #[test]
    fn trailing_tags_split_a_block_and_leave_the_tail_untagged() {
        let (a, b) = (fake("NEG", 'H', 1), fake("NEG", 'H', 2));
        let md = format!(
            "The host MUST NOT switch (**{a}**). The host SHOULD count it (**{b}**). It MUST log.\n"
        );
        let st = statements(&md);
        assert_eq!(st.tagged[0].keywords[0].text, "MUST NOT");
        assert_eq!(st.tagged[0].level(), Some(Level::Must));
        assert_eq!(st.tagged[1].level(), Some(Level::Should));
        assert_eq!(st.untagged.len(), 1);
        assert_eq!(st.untagged[0].keyword.text, "MUST");
    }

    #[test]
    fn consistency_reports_each_problem_kind() {
        let ids: Vec<String> = (1..=6).map(|n| fake("QRY", 'H', n)).collect();
        let tsv = format!(
            "{0}\tMUST\tH\ts\tx\n{1}\tSHOULD\tH\ts\tx\n{2}\tMUST\tH\ts\tx\n{0}\tMUST\tH\ts\tx\n{3}\tMUST\tH\ts\tx\n",
            ids[0], ids[1], ids[2], ids[3]
        );
        let reqs = parse_tsv(&tsv).unwrap();
        let md = format!(
            "**{0}** The host MUST answer.\n\n**{1}** The host MUST answer fast.\n\n\
             **{2}** The host answers.\n\n**{3}** The host MUST x.\n\n**{0}** again MUST.\n\n\
             See {4}. Untagged SHOULD here.\n\n**VIR-QRY-H-7** MUST.\n",
            ids[0], ids[1], ids[2], ids[4], ids[5]
        );
        let id = |i: usize| RequirementId::parse(&ids[i]).unwrap();
        let problems = check_consistency(&reqs, &md);
        assert_eq!(
            problems,
            vec![
                Problem::DuplicateId {
                    id: id(0),
                    lines: vec![1, 4]
                },
                Problem::LevelMismatch {
                    id: id(1),
                    register: Level::Should,
                    spec: Level::Must,
                    line: 3
                },
                Problem::NoKeyword { id: id(2), line: 5 },
                Problem::NotInRegister { id: id(4), line: 7 },
                Problem::MalformedTag {
                    line: 13,
                    error: IdError::Number("VIR-QRY-H-7".into())
                },
                Problem::DuplicateTag {
                    id: id(0),
                    lines: vec![1, 9]
                },
                Problem::NotInSpec { id: id(3), line: 5 },
                Problem::UnknownReference {
                    id: id(5),
                    line: 11
                },
                Problem::Untagged(Untagged {
                    keyword: Keyword {
                        text: "SHOULD",
                        level: Level::Should,
                        line: 11
                    },
                    excerpt: format!("See {}. Untagged SHOULD here.", ids[5]),
                }),
            ]
        );
    }
}

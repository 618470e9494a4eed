//! `vir decode debugfs [FILE]`: every interrupt remapping table entry of a Linux debugfs dump,
//! decoded.
//!
//! Two dumps are read, as Linux prints them:
//!
//! * VT-d, `/sys/kernel/debug/iommu/intel/ir_translation_struct`
//!   (`drivers/iommu/intel/debugfs.c`): per IOMMU a `Remapped Interrupt supported on IOMMU:
//!   dmarN` or `Posted Interrupt supported on IOMMU: dmarN` heading, ` IR table address:…`, a
//!   column header (` Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low`, or with `PDA_high
//!   PDA_low` for posted entries) and one line per present entry: index, `bus:dev.fn`, the
//!   destination (or the posted descriptor address halves), the vector, then the IRTE as two
//!   64-bit hex words, high (bits 127:64) first;
//! * AMD-Vi, `/sys/kernel/debug/iommu/amd/irqtbl` (`drivers/iommu/amd/debugfs.c`): a
//!   `DeviceId SSSS:BB:DD:F` heading per device, then `IRT[NNNN] HHHHHHHHHHHHHHHH
//!   LLLLLLLLLLLLLLLL` per valid 128-bit entry (older kernels print the two words without the
//!   space) or `IRT[NNNN] XXXXXXXX` per valid 32-bit entry.
//!
//! Each entry is decoded by the same code as `vir decode vtd-irte` / `amd-irte128` /
//! `amd-irte32`; the columns Linux prints beside a VT-d entry (source id, vector) are checked
//! against the decoded entry. A line that is neither a known heading nor an entry is an error
//! naming the line.

use std::fmt;
use std::io::Write;

use serde_json::{Value as Json, json};

use crate::error::CliError;
use crate::hw::{HwType, Options};
use crate::report::{Report, Value};

/// Which table an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// VT-d, remapped entries.
    VtdRemapped,
    /// VT-d, posted entries.
    VtdPosted,
    /// AMD-Vi, 128-bit entries.
    Amd128,
    /// AMD-Vi, 32-bit entries.
    Amd32,
}

impl Table {
    /// A short name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::VtdRemapped => "vtd-remapped",
            Self::VtdPosted => "vtd-posted",
            Self::Amd128 => "amd-irte128",
            Self::Amd32 => "amd-irte32",
        }
    }

    /// The `decode` type of its entries.
    const fn hw_type(self) -> HwType {
        match self {
            Self::VtdRemapped | Self::VtdPosted => HwType::VtdIrte,
            Self::Amd128 => HwType::AmdIrte128,
            Self::Amd32 => HwType::AmdIrte32,
        }
    }
}

/// One entry of the dump.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line number (from 1).
    pub line: usize,
    /// The IOMMU (`dmar0`) for VT-d, the device (`0000:03:00:0`) for AMD-Vi.
    pub owner: Option<String>,
    /// The table.
    pub table: Table,
    /// The entry's index in its table.
    pub index: u32,
    /// The entry as Linux printed it.
    pub raw: u128,
    /// The decoded entry, or why it could not be decoded.
    pub decoded: Result<Report, String>,
}

/// A line of the dump that is not one Linux prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugfsError {
    /// The line number (from 1).
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for DebugfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "debugfs dump line {}: {} ({:?}); expected Linux's intel/ir_translation_struct or amd/irqtbl output",
            self.line, self.why, self.text
        )
    }
}

/// A hex word of exactly `digits` digits (as `%016llx` / `%08x` print).
fn hex_word(token: &str, digits: usize) -> Option<u128> {
    if token.len() != digits || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(token, 16).ok()
}

/// `bb:dd.f` as a requester id.
fn bdf(token: &str) -> Option<u16> {
    let (bus, rest) = token.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let bus = u16::from_str_radix(bus, 16).ok().filter(|&b| b <= 0xFF)?;
    let dev = u16::from_str_radix(dev, 16).ok().filter(|&d| d <= 0x1F)?;
    let func = u16::from_str_radix(func, 16).ok().filter(|&f| f <= 7)?;
    Some((bus << 8) | (dev << 3) | func)
}

/// A numeric field of a report.
fn report_num(r: &Report, name: &str) -> Option<u128> {
    match r.get(name) {
        Some(Value::Num(n)) => Some(*n),
        _ => None,
    }
}

/// Parses the dump and decodes every entry. `opts` applies to VT-d entries (`--xapic`).
pub fn parse(text: &str, opts: Options) -> Result<Vec<Entry>, DebugfsError> {
    let mut entries = Vec::new();
    let mut owner: Option<String> = None;
    let mut vtd_table: Option<Table> = None;
    for (i, full) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let err = |why: &str| DebugfsError {
            line,
            text: full.to_owned(),
            why: why.to_owned(),
        };
        let t = full.trim();
        if t.is_empty() || t.starts_with("****") {
            continue;
        }
        if let Some(name) = t.strip_prefix("Remapped Interrupt supported on IOMMU:") {
            owner = Some(name.trim().to_owned());
            vtd_table = Some(Table::VtdRemapped);
            continue;
        }
        if let Some(name) = t.strip_prefix("Posted Interrupt supported on IOMMU:") {
            owner = Some(name.trim().to_owned());
            vtd_table = Some(Table::VtdPosted);
            continue;
        }
        if t.starts_with("Entry") && t.contains("SrcID") {
            vtd_table = Some(if t.contains("PDA_high") {
                Table::VtdPosted
            } else {
                Table::VtdRemapped
            });
            continue;
        }
        if t.starts_with("IR table address:")
            || t.starts_with("Interrupt Remapping is not enabled")
            || t.starts_with("IRQ lookup table not set")
            || t.starts_with("The device's DTE")
            || t.starts_with("Device table not found")
        {
            continue;
        }
        if let Some(dev) = t.strip_prefix("DeviceId") {
            owner = Some(dev.trim().to_owned());
            vtd_table = None;
            continue;
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        if let Some(rest) = t.strip_prefix("IRT[") {
            let (index, words) = rest
                .split_once(']')
                .ok_or_else(|| err("IRT[ without a closing ]"))?;
            let index: u32 = index
                .trim()
                .parse()
                .map_err(|_| err("the index in IRT[...] is not a decimal number"))?;
            let words: Vec<&str> = words.split_whitespace().collect();
            let (table, raw) = match words.as_slice() {
                [w] if w.len() == 8 => (Table::Amd32, hex_word(w, 8)),
                [w] if w.len() == 32 => (Table::Amd128, hex_word(w, 32)),
                [hi, lo] => (
                    Table::Amd128,
                    hex_word(hi, 16)
                        .zip(hex_word(lo, 16))
                        .map(|(h, l)| (h << 64) | l),
                ),
                _ => (Table::Amd128, None),
            };
            let raw = raw.ok_or_else(|| {
                err("an AMD-Vi entry is 8 hex digits (32-bit IRTE) or two words of 16 (128-bit IRTE, high word first)")
            })?;
            entries.push(decode_entry(
                line,
                owner.clone(),
                table,
                index,
                raw,
                opts,
                None,
            ));
            continue;
        }
        let Some(table) = vtd_table else {
            return Err(err("not a heading, a column header or an entry"));
        };
        let Ok(index) = tokens.first().copied().unwrap_or("").parse::<u32>() else {
            return Err(err("not a heading, a column header or an entry"));
        };
        // Remapped: index, SrcID, DstID, Vct, IRTE_high, IRTE_low.
        // Posted:   index, SrcID, PDA_high, PDA_low, Vct, IRTE_high, IRTE_low.
        let (src, vct, hi, lo) = match (table, tokens.as_slice()) {
            (Table::VtdRemapped, [_, src, _dst, vct, hi, lo]) => (*src, *vct, *hi, *lo),
            (Table::VtdPosted, [_, src, _pdah, _pdal, vct, hi, lo]) => (*src, *vct, *hi, *lo),
            _ => {
                return Err(err(
                    "a VT-d entry has the columns of the header above it (Entry SrcID DstID Vct IRTE_high IRTE_low, or with PDA_high PDA_low)",
                ));
            }
        };
        let raw = hex_word(hi, 16)
            .zip(hex_word(lo, 16))
            .map(|(h, l)| (h << 64) | l)
            .ok_or_else(|| err("IRTE_high and IRTE_low are 16 hex digits each"))?;
        let sid = bdf(src).ok_or_else(|| err("SrcID is not bus:device.function"))?;
        let vector = u8::from_str_radix(vct, 16).map_err(|_| err("Vct is not a hex byte"))?;
        entries.push(decode_entry(
            line,
            owner.clone(),
            table,
            index,
            raw,
            opts,
            Some((sid, vector)),
        ));
    }
    Ok(entries)
}

/// Decodes one entry; `columns` are the (SrcID, Vct) Linux printed beside a VT-d entry.
fn decode_entry(
    line: usize,
    owner: Option<String>,
    table: Table,
    index: u32,
    raw: u128,
    opts: Options,
    columns: Option<(u16, u8)>,
) -> Entry {
    let ty = table.hw_type();
    let bytes: Vec<u8> = raw.to_le_bytes().iter().take(ty.size()).copied().collect();
    let decoded = ty.decode(&bytes, opts).map_err(|e| e.to_string());
    let decoded = decoded.map(|mut r| {
        if table == Table::VtdPosted && r.format != Some("posted") {
            r.note("listed under Posted Interrupt, but IM = 0 (remapped format)");
        }
        if let Some((sid, vector)) = columns {
            if report_num(&r, "sid") != Some(u128::from(sid)) {
                r.note(format!(
                    "Linux's SrcID column ({sid:#06x}) differs from the entry's SID"
                ));
            }
            if report_num(&r, "vector") != Some(u128::from(vector)) {
                r.note(format!(
                    "Linux's Vct column ({vector:#04x}) differs from the entry's vector"
                ));
            }
        }
        r
    });
    Entry {
        line,
        owner,
        table,
        index,
        raw,
        decoded,
    }
}

/// A heading for an entry.
fn heading(e: &Entry) -> String {
    let owner = e.owner.as_deref().unwrap_or("?");
    format!(
        "== {owner} {} entry {} (line {}, {:#x})",
        e.table.name(),
        e.index,
        e.line,
        e.raw
    )
}

/// Prints the entries and fails (exit status 1) when one could not be decoded.
pub fn print(entries: &[Entry], json_out: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let failed = entries.iter().filter(|e| e.decoded.is_err()).count();
    if json_out {
        let list: Vec<Json> = entries
            .iter()
            .map(|e| {
                json!({
                    "line": e.line,
                    "owner": e.owner,
                    "table": e.table.name(),
                    "index": e.index,
                    "raw": format!("{:#034x}", e.raw),
                    "decoded": e.decoded.as_ref().ok().map(Report::json),
                    "error": e.decoded.as_ref().err(),
                })
            })
            .collect();
        let doc = json!({ "type": "debugfs", "entries": list, "failed": failed });
        writeln!(out, "{doc:#}").map_err(CliError::Output)?;
    } else {
        if entries.is_empty() {
            writeln!(out, "no entries").map_err(CliError::Output)?;
        }
        for e in entries {
            writeln!(out, "{}", heading(e)).map_err(CliError::Output)?;
            match &e.decoded {
                Ok(r) => out.write_all(r.human().as_bytes()),
                Err(why) => writeln!(out, "error: {why}"),
            }
            .map_err(CliError::Output)?;
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::DebugfsEntries {
            failed,
            total: entries.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::ApicMode;

    const OPTS: Options = Options {
        apic_mode: ApicMode::X2Apic,
        ext_dest_id: false,
        x2apic_hi: false,
    };

    #[test]
    fn bdf_and_words() {
        assert_eq!(bdf("00:0a.0"), Some(0x50));
        assert_eq!(bdf("03:1f.7"), Some(0x3FF));
        assert_eq!(bdf("03:20.0"), None);
        assert_eq!(hex_word("0000000000040050", 16), Some(0x40050));
        assert_eq!(hex_word("40050", 16), None);
    }

    #[test]
    fn unknown_line_is_an_error_naming_it() {
        let err = parse(
            "Remapped Interrupt supported on IOMMU: dmar0\nhello\n",
            OPTS,
        )
        .expect_err("not a dump line");
        assert_eq!(err.line, 2);
        assert_eq!(err.text, "hello");
    }

    #[test]
    fn vtd_columns_are_cross_checked() {
        // The SrcID column says 00:0b.0, the entry's SID is 00:0a.0.
        let dump = " Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low\n \
                    0     00:0b.0 00000080 24  0000000000040050\t000000800024000d\n";
        let e = parse(dump, OPTS).expect("parses");
        let r = e
            .first()
            .and_then(|e| e.decoded.as_ref().ok())
            .expect("decodes");
        assert!(
            r.notes.iter().any(|n| n.contains("SrcID column")),
            "{:?}",
            r.notes
        );
    }
}

//! `vir decode TYPE [HEX]...`: print the fields of a value.

use std::io::Write;

use clap::Args;

use vir_abi::hw::ApicMode;

use crate::debugfs;
use crate::error::{CliError, UsageError};
use crate::hw::Options;
use crate::input;
use crate::report::Report;
use crate::types;

/// Help text on the data operand.
pub const INPUT_HELP: &str = "\
Input: HEX is the data; when it is absent or '-', it is read from standard input. Two forms:
  hex bytes in memory order (multi-byte fields little-endian), separators ' ' ':' '-' '_' and
    newlines allowed: 'vir decode vtd-irte 09 00 45 00 07 00 00 00 00 03 04 00 00 00 00 00'
  0x integers (hardware types only):
    32/64/128-bit types (amd-irte32, vtd-irta, vtd-irte, amd-irte128): one integer of that
      width, bit 0 = bit 0 of the entry: 'vir decode vtd-irte 0x403000000000700450009'
    MSI messages (msi, msi-compat, vtd-msi, amd-msi): '0xADDRESS 0xDATA' (64-bit address,
      32-bit data): 'vir decode msi 0xfee00818 0x0'; the 12 wire bytes (address_lo,
      address_hi, data, little-endian) are accepted too.
    128-bit types also take two 64-bit words '0xHIGH 0xLOW', high word (bits 127:64) first,
      as Linux's debugfs prints them: 'vir decode vtd-irte 0x0000000000040050 0x000000800024000d'
Linux debugfs dumps: 'vir decode debugfs FILE' (or '-'/nothing for standard input) decodes every
  entry of /sys/kernel/debug/iommu/intel/ir_translation_struct (VT-d, remapped and posted) and
  /sys/kernel/debug/iommu/amd/irqtbl (AMD-Vi, 32- and 128-bit entries); --xapic applies to VT-d.
Output: one field per line with its value and bit (or byte) positions; --json prints a JSON
object {type, format, bytes, fields, hex, kernel, names, notes}: numbers above 2^53-1 are 0x-prefixed hex
strings, hex holds every number as an exact 0x-prefixed hex string, kernel the Linux names.";

/// Arguments of `decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The type of the data (see the list below)
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// The data: hex bytes or 0x integers; absent or '-': read standard input
    #[arg(value_name = "HEX")]
    pub hex: Vec<String>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// vtd-irte, posted-desc: APIC IDs in xAPIC placement (bits 15:8 of DST/NDST); default x2APIC
    #[arg(long)]
    pub xapic: bool,
    /// msi, msi-compat: address bits 11:5 carry the extended destination ID (APIC IDs up to 32767)
    #[arg(long)]
    pub ext_dest_id: bool,
}

/// The type name that reads a whole Linux debugfs dump.
pub const DEBUGFS: &str = "debugfs";

/// Runs `decode`.
pub fn run(args: &DecodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.ty == DEBUGFS {
        return run_debugfs(args, out);
    }
    let ty = types::lookup(&args.ty)?;
    let opts = ty.options(args.xapic, args.ext_dest_id)?;
    let text = input::operand_text(&args.hex, &mut std::io::stdin().lock())?;
    let bytes = input::parse(&text, ty.integer_form(), &ty.name)?;
    let report = ty.decode(&bytes, opts)?;
    print(&report, args.json, out)
}

/// `decode debugfs [FILE|-]`: a dump from a file, or standard input.
fn run_debugfs(args: &DecodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.ext_dest_id {
        return Err(UsageError::OptionNotApplicable {
            option: "--ext-dest-id",
            ty: DEBUGFS.to_owned(),
        }
        .into());
    }
    let text = match args.hex.as_slice() {
        [] => input::operand_text(&[], &mut std::io::stdin().lock())?,
        [one] if one == "-" => input::operand_text(&[], &mut std::io::stdin().lock())?,
        [path] => std::fs::read_to_string(path).map_err(|e| CliError::ReadFile {
            path: path.clone(),
            error: e.kind(),
        })?,
        _ => {
            return Err(UsageError::BadOptionValue {
                option: "FILE",
                value: args.hex.join(" "),
                expected: "one file name, or '-' (or nothing) for standard input",
            }
            .into());
        }
    };
    let opts = Options {
        apic_mode: if args.xapic {
            ApicMode::XApic
        } else {
            ApicMode::X2Apic
        },
        ext_dest_id: false,
        x2apic_hi: false,
    };
    let entries = debugfs::parse(&text, opts).map_err(CliError::Debugfs)?;
    debugfs::print(&entries, args.json, out)
}

/// Prints a report as text or JSON.
pub fn print(report: &Report, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if json {
        writeln!(out, "{:#}", report.json()).map_err(CliError::Output)
    } else {
        out.write_all(report.human().as_bytes())
            .map_err(CliError::Output)
    }
}

//! `vir decode TYPE [HEX]...`: print the fields of a value.

use std::io::Write;

use clap::Args;

use crate::error::CliError;
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
Output: one field per line with its value and bit (or byte) positions; --json prints a JSON
object {type, format, bytes, fields, names, notes}.";

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

/// Runs `decode`.
pub fn run(args: &DecodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let ty = types::lookup(&args.ty)?;
    let opts = ty.options(args.xapic, args.ext_dest_id)?;
    let text = input::operand_text(&args.hex, &mut std::io::stdin().lock())?;
    let bytes = input::parse(&text, ty.integer_form(), &ty.name)?;
    let report = ty.decode(&bytes, opts)?;
    print(&report, args.json, out)
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

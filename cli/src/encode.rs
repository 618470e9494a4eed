//! `vir encode TYPE [FIELD=VALUE]...`: build a value from its fields and print its bytes.

use std::io::Write;

use clap::Args;

use crate::error::CliError;
use crate::report::hex_string;
use crate::types;
use crate::value::parse_assignments;

/// Help text on the assignments.
pub const FIELDS_HELP: &str = "\
Fields: FIELD=VALUE, with the field names listed below (the names decode prints); fields not
given are 0 (vtd-msi: shv defaults to 1). VALUE is decimal, 0x hex or 0b binary, true/false for
one-bit fields, or a name where the field has names (kind=MSIX, format=VTD_REMAPPABLE,
features=MSI|MSIX, flags=RESERVE, status=SUCCESS, call=ACTIVATE, delivery_mode=fixed,
trigger_level=edge|level, dest_mode_logical=physical|logical, svt=none|sid|bus,
im=remapped|posted, int_type=fixed|arbitrated, guest_mode=remapped|guest);
posted-desc takes pir=V1,V2,... (vectors). vtd-irte: im=posted selects the posted format.
Output: the bytes in memory order as hex (decode reads them back); --json prints the decoded
JSON object instead. Example: 'vir encode vtd-msi handle=0x8123 | vir decode msi'";

/// Arguments of `encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// The type to build (see the list below)
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// Field assignments
    #[arg(value_name = "FIELD=VALUE")]
    pub fields: Vec<String>,
    /// Print the decoded JSON object instead of hex
    #[arg(long)]
    pub json: bool,
    /// vtd-irte, posted-desc: APIC IDs in xAPIC placement (bits 15:8 of DST/NDST); default x2APIC
    #[arg(long)]
    pub xapic: bool,
    /// msi-compat: allow APIC IDs up to 32767 (extended destination ID in address bits 11:5)
    #[arg(long)]
    pub ext_dest_id: bool,
    /// msi-compat: x2APIC high-address form, APIC ID bits 31:8 in address bits 63:40 (QEMU, Linux IOMMU interrupts)
    #[arg(long)]
    pub x2apic_hi: bool,
}

/// Runs `encode`.
pub fn run(args: &EncodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let ty = types::lookup(&args.ty)?;
    let opts = ty.options_with(args.xapic, args.ext_dest_id, args.x2apic_hi)?;
    let assignments = parse_assignments(&args.fields)?;
    let report = ty.encode(&assignments, opts)?;
    if args.json {
        crate::decode::print(&report, true, out)
    } else {
        writeln!(out, "{}", hex_string(&report.bytes)).map_err(CliError::Output)
    }
}

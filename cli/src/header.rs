//! `vir header`: print the C header generated from the vIR ABI.
//!
//! The text is produced by `vir_spec::cheader::generate_header`, the same generator that writes
//! the committed `abi/include/vir_abi.h`, so the two cannot differ.

use std::io::Write;

use clap::Args;

use crate::error::CliError;

/// Arguments of `header` (none yet).
#[derive(Debug, Args)]
pub struct HeaderArgs {}

/// Runs `header`.
pub fn run(_args: &HeaderArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let text = vir_spec::cheader::generate_header().map_err(CliError::Header)?;
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

//! `vir` — the vIR command-line tool.
//!
//! Decodes and encodes the structures of the vIR version 1 ABI (every request and response wire
//! structure) and the hardware formats behind the messages a vIR host returns (x86 MSI in
//! compatibility format, VT-d remappable MSI, AMD-Vi MSI, VT-d and AMD-Vi IRTEs, the
//! posted-interrupt descriptor), prints the C header generated from the ABI, and runs the
//! end-to-end simulation of the reference guest against the reference host (`simulate`), the
//! host conformance suite (`conform`) and the guest image on real KVM (`kvm`).
//!
//! One module per subcommand (`decode`, `encode`, `header`, `simulate`, `conform`, `kvm`); the shared machinery is in
//! [`types`] (the type registry), [`input`] (the data operand), [`value`] (`field=value`
//! arguments), [`report`] (human and JSON output), [`wire`] (vIR wire structures) and [`hw`]
//! (hardware formats). Every failure is an [`error::CliError`], printed as one line
//! `vir: error: …` with exit status 1 (malformed data) or 2 (usage).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod conform;
mod debugfs;
mod decode;
mod encode;
mod error;
mod header;
mod hw;
mod input;
mod kvm;
mod report;
mod simulate;
mod types;
mod value;
mod wire;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::CliError;

/// Text appended to the top-level and subcommand help: exit statuses.
const EXIT_HELP: &str = "\
Exit status: 0 success; 1 malformed data (bad hex, wrong length, reserved bits set, value out of
range); 2 usage error (unknown type or field, bad option). Errors are one line on stderr,
starting with 'vir: error:'.";

/// Command line of `vir`.
#[derive(Debug, Parser)]
#[command(
    name = "vir",
    version,
    about = "Decode and encode vIR wire structures, MSI messages, IRTEs and posted-interrupt descriptors",
    after_help = EXIT_HELP
)]
struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands. Each lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Decode bytes (or 0x integers) of a TYPE into its fields
    Decode(decode::DecodeArgs),
    /// Encode field=value assignments of a TYPE into bytes
    Encode(encode::EncodeArgs),
    /// Print the C header generated from the vIR ABI (vir_abi.h)
    Header(header::HeaderArgs),
    /// Run the reference guest against the reference host on the simulated platform, end to end
    Simulate(simulate::SimulateArgs),
    /// Run the host conformance suite against the reference host (or a broken one) and report per requirement
    Conform(conform::ConformArgs),
    /// Boot the vIR guest image on real KVM (/dev/kvm) and report its checks and figures
    Kvm(kvm::KvmArgs),
}

/// Builds the clap command with the run-time parts of the help (the list of types).
fn command() -> clap::Command {
    let decode_help = format!(
        "{}\n\n{}\n{EXIT_HELP}",
        decode::INPUT_HELP,
        types::help_list(false)
    );
    let encode_help = format!(
        "{}\n\n{}\n{EXIT_HELP}",
        encode::FIELDS_HELP,
        types::help_list(true)
    );
    Cli::command()
        .mut_subcommand("decode", |c| c.after_help(decode_help))
        .mut_subcommand("encode", |c| c.after_help(encode_help))
}

/// Runs a parsed command line, writing the result to `out`.
fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Decode(args) => decode::run(&args, out),
        Command::Encode(args) => encode::run(&args, out),
        Command::Header(args) => header::run(&args, out),
        Command::Simulate(args) => simulate::run(&args, out),
        Command::Conform(args) => conform::run(&args, out),
        Command::Kvm(args) => kvm::run(&args, out),
    }
}

fn main() -> ExitCode {
    // Usage errors found by clap itself (unknown option, missing TYPE) are printed by clap,
    // which exits with status 2.
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(CliError::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`vir header | head`): not an error of ours.
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vir: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

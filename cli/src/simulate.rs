//! `vir simulate`: run the default end-to-end scenario of `vir-simvm` and print its report.
//!
//! A simulated VM runs the reference guest against the reference host on the simulated
//! platform: discovery, negotiation, allocation and activation of every interrupt of a NIC
//! (MSI-X), an accelerator (IMS in device memory), a queue device (IMS in system memory) and an
//! MSI device, a delivery check of every vector, random affinity changes, a vCPU hot-unplug, a
//! second delivery check, and a probe of forged messages. `--iommu amd` runs it on an AMD-Vi
//! machine and host instead of VT-d. The summary goes to standard output,
//! for people or (`--json`) as one JSON object; the exit status is 1 when any delivery was wrong
//! or missing, or anything else in the report failed.
//!
//! Option values are parsed here, not by clap, so that a bad value is the tool's usual one-line
//! usage error.

use std::io::Write;

use clap::Args;
use vir_host::{AmdIrteFormat, AmdViConfig, IommuKind, IrMode};
use vir_simvm::CallBinding;
use vir_simvm::scenario::{self, ScenarioConfig};

use crate::error::{CliError, UsageError};

mod compare;

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of vCPUs, APIC ids 0,1,2,3,256,257,300,511,4,5,6,7,512,513,1000,4095,… [default: 16]
    #[arg(long, value_name = "N")]
    vcpus: Option<String>,
    /// Host delivery mode: posted or remapped [default: posted]
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// The IOMMU: vtd, or amd (AMD-Vi, per-device tables of 128-bit entries; posted mode is
    /// guest virtual APIC mode) [default: vtd]
    #[arg(long, value_name = "IOMMU")]
    iommu: Option<String>,
    /// MSI-X entries of the NIC, 0 for none [default: 64]
    #[arg(long, value_name = "N")]
    msix: Option<String>,
    /// IMS entries in device memory of the accelerator, 0 for none [default: 2048]
    #[arg(long, value_name = "N")]
    ims: Option<String>,
    /// IMS queues with their messages in system memory, 0 for none [default: 16]
    #[arg(long = "ims-sys", value_name = "N")]
    ims_sys: Option<String>,
    /// log2 of the MSI block, 0-5 [default: 3]
    #[arg(long = "msi-log2", value_name = "N")]
    msi_log2: Option<String>,
    /// Seed of the random affinity changes and of the vCPU unplugged [default: 1]
    #[arg(long, value_name = "S")]
    seed: Option<String>,
    /// The guest's binding: vmcall or doorbell [default: vmcall]
    #[arg(long, value_name = "BINDING")]
    binding: Option<String>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compare: compare::CompareArgs,
}

fn bad(option: &'static str, value: &str, expected: &'static str) -> CliError {
    CliError::Usage(UsageError::BadOptionValue {
        option,
        value: value.to_string(),
        expected,
    })
}

/// Parses a number option in `min..=max` (decimal, or hexadecimal with `0x`).
fn number(
    option: &'static str,
    value: Option<&str>,
    default: u64,
    max: u64,
    expected: &'static str,
) -> Result<u64, CliError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    match parsed {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(option, v, expected)),
    }
}

/// Parses `--iommu`.
pub(crate) fn iommu(value: Option<&str>) -> Result<IommuKind, CliError> {
    match value {
        None | Some("vtd") => Ok(IommuKind::Vtd),
        Some("amd") => Ok(IommuKind::AmdVi(AmdViConfig {
            irte_format: AmdIrteFormat::Bits128,
            address_dm: false,
        })),
        Some(v) => Err(bad("--iommu", v, "vtd or amd")),
    }
}

/// Builds the scenario's configuration from the options.
pub fn config(args: &SimulateArgs) -> Result<ScenarioConfig, CliError> {
    let d = ScenarioConfig::default();
    let vcpus = number(
        "--vcpus",
        args.vcpus.as_deref(),
        d.vcpus.into(),
        4096,
        "1 to 4096",
    )?;
    if vcpus == 0 {
        return Err(bad("--vcpus", "0", "1 to 4096"));
    }
    let mode = match args.mode.as_deref() {
        None | Some("posted") => IrMode::Posted,
        Some("remapped") => IrMode::Remapped,
        Some(v) => return Err(bad("--mode", v, "posted or remapped")),
    };
    let iommu = iommu(args.iommu.as_deref())?;
    let binding = match args.binding.as_deref() {
        None | Some("vmcall") => CallBinding::Vmcall,
        Some("doorbell") => CallBinding::Doorbell,
        Some(v) => return Err(bad("--binding", v, "vmcall or doorbell")),
    };
    let msix = number(
        "--msix",
        args.msix.as_deref(),
        d.msix_entries.into(),
        2048,
        "0 to 2048",
    )?;
    let ims = number(
        "--ims",
        args.ims.as_deref(),
        d.ims_device_entries.into(),
        16384,
        "0 to 16384",
    )?;
    let ims_sys = number(
        "--ims-sys",
        args.ims_sys.as_deref(),
        d.ims_system_queues.into(),
        4096,
        "0 to 4096",
    )?;
    let msi_log2 = number("--msi-log2", args.msi_log2.as_deref(), 3, 5, "0 to 5")?;
    let seed = number(
        "--seed",
        args.seed.as_deref(),
        d.seed,
        u64::MAX,
        "a 64-bit number",
    )?;
    // The maxima above keep every value within u32 / u8.
    Ok(ScenarioConfig {
        vcpus: vcpus as u32,
        mode,
        iommu,
        binding,
        msix_entries: msix as u32,
        ims_device_entries: ims as u32,
        ims_system_queues: ims_sys as u32,
        msi_log2: Some(msi_log2 as u8),
        seed,
        ..d
    })
}

/// Runs `simulate`.
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.compare.enabled {
        return compare::run(args, out);
    }
    let config = config(args)?;
    let report = scenario::run(&config).map_err(CliError::Simulation)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::Output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::Output)?;
    } else {
        writeln!(out, "{report}").map_err(CliError::Output)?;
    }
    if report.passed() {
        Ok(())
    } else {
        Err(CliError::SimulationFailed {
            failed_deliveries: report.failed_deliveries(),
        })
    }
}

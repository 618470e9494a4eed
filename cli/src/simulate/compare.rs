//! `vir simulate --compare`: the same driver workload on bare metal, with an emulated vIOMMU
//! (the legacy scheme) and with vIR, side by side (`vir_simvm::compare`).
//!
//! `--vcpus`, `--mode`, `--iommu` and `--json` of `simulate` apply (`--iommu amd` puts the
//! emulated and vIR situations on an AMD-Vi host; bare metal is the guest's own VT-d driver);
//! `--vectors` and `--unplug` are the comparison's own. The scenario options (`--msix`, `--ims`,
//! `--ims-sys`, `--msi-log2`, `--seed`, `--binding`) do not apply and are refused. The exit
//! status is 1 when any situation failed (a vector not delivered where the guest asked, IMS offered where `VIR-LEG-G-001`
//! forbids it or refused where it allows it, a failure reported by the guest or the host).

use std::io::Write;

use clap::Args;
use vir_host::IrMode;
use vir_simvm::compare::{self, CompareConfig};

use super::{SimulateArgs, bad, number};
use crate::error::{CliError, UsageError};

/// The options of `simulate --compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Compare the three situations (bare metal, emulated vIOMMU without vIR, vIR) on one
    /// driver workload: set up, retarget every vector, unplug vCPUs, tear down
    #[arg(long = "compare")]
    pub enabled: bool,
    /// With --compare: MSI-X vectors of the workload, 1 to 2048 [default: 2048]
    #[arg(long, value_name = "N")]
    vectors: Option<String>,
    /// With --compare: vCPUs taken offline, the last ones; fewer than --vcpus [default: 4]
    #[arg(long, value_name = "N")]
    unplug: Option<String>,
}

/// Builds the comparison's configuration from the options.
pub fn config(args: &SimulateArgs) -> Result<CompareConfig, CliError> {
    let scenario_only = [
        ("--msix", args.msix.is_some()),
        ("--ims", args.ims.is_some()),
        ("--ims-sys", args.ims_sys.is_some()),
        ("--msi-log2", args.msi_log2.is_some()),
        ("--seed", args.seed.is_some()),
        ("--binding", args.binding.is_some()),
    ];
    if let Some((option, _)) = scenario_only.iter().find(|(_, given)| *given) {
        return Err(CliError::Usage(UsageError::ConflictingOptions {
            option,
            with: "--compare",
        }));
    }
    let d = CompareConfig::default();
    let c = &args.compare;
    let vectors = number(
        "--vectors",
        c.vectors.as_deref(),
        d.vectors.into(),
        2048,
        "1 to 2048",
    )?;
    if vectors == 0 {
        return Err(bad("--vectors", "0", "1 to 2048"));
    }
    let vcpus = number(
        "--vcpus",
        args.vcpus.as_deref(),
        d.vcpus.into(),
        256,
        "1 to 256",
    )?;
    if vcpus == 0 {
        return Err(bad("--vcpus", "0", "1 to 256"));
    }
    let unplug = number(
        "--unplug",
        c.unplug.as_deref(),
        d.unplug.min(vcpus as u32 - 1).into(),
        vcpus - 1,
        "fewer than --vcpus",
    )?;
    let mode = match args.mode.as_deref() {
        None | Some("posted") => IrMode::Posted,
        Some("remapped") => IrMode::Remapped,
        Some(v) => return Err(bad("--mode", v, "posted or remapped")),
    };
    let iommu = super::iommu(args.iommu.as_deref())?;
    // The maxima above keep every value within u32.
    Ok(CompareConfig {
        vectors: vectors as u32,
        vcpus: vcpus as u32,
        unplug: unplug as u32,
        mode,
        iommu,
        ..d
    })
}

/// Runs `simulate --compare`.
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let config = config(args)?;
    let report = compare::run(&config).map_err(CliError::Compare)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::Output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::Output)?;
    } else {
        write!(out, "{report}").map_err(CliError::Output)?;
    }
    let failed: Vec<&'static str> = report
        .situations
        .iter()
        .filter(|s| !s.passed())
        .map(|s| s.situation.name())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::CompareFailed { situations: failed })
    }
}

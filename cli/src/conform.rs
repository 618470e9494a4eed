//! `vir conform`: run the host conformance suite (`vir-conform`) and print its per-requirement
//! report.
//!
//! Every check runs against a freshly created host: by default the reference host (`vir-host`
//! over its in-memory backends, posted mode); `--host reference-remapped` takes remapped mode
//! with xAPIC destinations, and `--host mutant:NAME` one of the deliberately broken reference
//! hosts that show the suite catching a departure; `--iommu amd` gives any of them an AMD-Vi
//! IOMMU instead of VT-d. The report goes to standard output, as text
//! (one line per host requirement: ID, level, verdict, checks; notes for failures and untested
//! requirements; a summary line) or as JSON (`--json`); `--junit FILE` also writes JUnit XML.
//! The exit status is 1 when a MUST requirement fails (or one listed with `--expect-fail`
//! passes).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use vir_conform::{HostFactory, RunOptions, registry, report};
use vir_conform_ref::mutants::{Breakage, MutantFactory};
use vir_conform_ref::{ReferenceConfig, ReferenceFactory};
use vir_host::{IommuKind, IrMode};

use crate::error::{CliError, UsageError};

/// Arguments of `conform`.
#[derive(Debug, Args)]
pub struct ConformArgs {
    /// Host to test: reference, reference-remapped or mutant:NAME (see --list) [default: reference]
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// The reference host's IOMMU: vtd, or amd (AMD-Vi, per-device tables) [default: vtd]
    #[arg(long, value_name = "IOMMU")]
    iommu: Option<String>,
    /// Run only the checks whose name or requirement ID contains PATTERN
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Also write the results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// A requirement ID known to fail (repeatable): reported, but only its passing fails the run
    #[arg(long = "expect-fail", value_name = "ID")]
    expect_fail: Vec<String>,
    /// List the hosts and the checks (name, requirement IDs, description) and exit
    #[arg(long)]
    list: bool,
}

/// What `--host` accepts, for the usage error.
const HOSTS: &str =
    "reference, reference-remapped or mutant:NAME (names listed by 'vir conform --list')";

/// The factory a `--host` value names.
fn factory(host: &str, iommu: IommuKind) -> Result<Box<dyn HostFactory>, CliError> {
    let bad = || {
        CliError::Usage(UsageError::BadOptionValue {
            option: "--host",
            value: host.to_string(),
            expected: HOSTS,
        })
    };
    match host {
        "reference" => Ok(Box::new(ReferenceFactory::new(ReferenceConfig {
            iommu,
            ..ReferenceConfig::default()
        }))),
        "reference-remapped" => Ok(Box::new(ReferenceFactory::new(ReferenceConfig {
            ir_mode: IrMode::Remapped,
            apic_mode: vir_abi::hw::ApicMode::XApic,
            iommu,
        }))),
        other => {
            let name = other.strip_prefix("mutant:").ok_or_else(bad)?;
            let breakage = Breakage::from_name(name).ok_or_else(bad)?;
            Ok(Box::new(MutantFactory {
                config: ReferenceConfig {
                    iommu,
                    ..ReferenceConfig::default()
                },
                breakage,
            }))
        }
    }
}

fn list(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "hosts:")?;
    writeln!(
        out,
        "  reference            vir-host over its in-memory backends, posted mode, x2APIC (the default)"
    )?;
    writeln!(
        out,
        "  reference-remapped   the same in remapped mode with xAPIC destinations"
    )?;
    for b in Breakage::ALL {
        writeln!(
            out,
            "  mutant:{:<26} the reference host breaking {}",
            b.name(),
            b.requirement()
        )?;
    }
    writeln!(out, "checks:")?;
    for c in registry::all() {
        writeln!(
            out,
            "  {:<40} {:<40} {}",
            c.name,
            c.ids.join(","),
            c.description
        )?;
    }
    Ok(())
}

/// Runs `vir conform`.
pub fn run(args: &ConformArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.list {
        return list(out).map_err(CliError::Output);
    }
    let iommu = crate::simulate::iommu(args.iommu.as_deref())?;
    let mut factory = factory(args.host.as_deref().unwrap_or("reference"), iommu)?;
    let options = RunOptions {
        only: args.only.clone(),
        expect_fail: args.expect_fail.clone(),
    };
    let r = vir_conform::run(factory.as_mut(), &options).map_err(CliError::Conformance)?;
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&r)).map_err(CliError::Output)?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report::json(&r))
            .map_err(|e| CliError::Output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::Output)?;
    } else {
        write!(out, "{}", report::text(&r)).map_err(CliError::Output)?;
    }
    if r.failed() {
        let s = r.summary();
        return Err(CliError::ConformanceFailed {
            failed: r
                .requirements
                .iter()
                .filter(|q| q.fails_run())
                .map(|q| q.id.clone())
                .collect(),
            unexpected_passes: s.unexpected_passes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_resolve() {
        assert_eq!(
            factory("reference", IommuKind::Vtd).map(|f| f.name()).ok(),
            Some("reference (posted, x2APIC)".to_string())
        );
        assert_eq!(
            factory("reference-remapped", IommuKind::Vtd)
                .map(|f| f.name())
                .ok(),
            Some("reference (remapped, xAPIC)".to_string())
        );
        for b in Breakage::ALL {
            let name = format!("mutant:{}", b.name());
            assert_eq!(
                factory(&name, IommuKind::Vtd).map(|f| f.name()).ok(),
                Some(format!("reference broken: {}", b.name()))
            );
        }
        for bad in ["", "mutant:", "mutant:nope", "kvm"] {
            match factory(bad, IommuKind::Vtd) {
                Err(CliError::Usage(UsageError::BadOptionValue { option, value, .. })) => {
                    assert_eq!((option, value.as_str()), ("--host", bad));
                }
                other => panic!("{bad}: {:?}", other.map(|f| f.name())),
            }
        }
    }
}

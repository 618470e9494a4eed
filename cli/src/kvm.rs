//! `vir kvm`: boot the vIR guest image (`guest-image/`) on real KVM and report what it checked
//! and measured.
//!
//! The image runs on `--vcpus` vCPUs (default 4) of a VMM on `/dev/kvm` (crate `vir-kvm`): with
//! vIR offered it negotiates through the doorbell, allocates and activates vectors of every
//! storage kind of the test device on several vCPUs, fires each (delivered by KVM through MSI
//! routes and irqfds), retargets all, moves all off one vCPU, and fires again; with `--legacy`
//! vIR is not offered and the image says it stays on the legacy scheme. The report is the
//! image's checks (text, or JSON with `--json`; `--junit FILE` writes them as JUnit XML), its
//! figures converted from TSC ticks to microseconds, and the VMM's exit counts. Exit status 1
//! when a check failed or KVM cannot be used (the message says why).
//!
//! With `--conform` the report is instead the image's in-guest conformance checks (host
//! requirements a guest observes through its own calls, one `REQ` line each on the console)
//! rendered by `vir-conform` exactly as `vir conform` renders its suite: per requirement, text,
//! JSON or JUnit.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use vir_abi::status::Status;
use vir_conform::outcome::{Expected, Failure, Outcome};
use vir_conform::registry::{Check, HostKind};
use vir_conform::runner::CheckRun;
use vir_kvm::image::{self, Elf};
use vir_kvm::machine::{MAX_VCPUS, MachineConfig, RunEnd, RunReport, run_image};

use crate::error::{CliError, UsageError};

/// Arguments of `kvm`.
#[derive(Debug, Args)]
pub struct KvmArgs {
    /// Do not offer vIR: the legacy situation
    #[arg(long)]
    legacy: bool,
    /// Number of vCPUs (1-16)
    #[arg(long, value_name = "N", default_value_t = 4)]
    vcpus: u32,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Also write the image's checks as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Boot this ELF instead of building guest-image/ from this source tree
    #[arg(long, value_name = "ELF")]
    image: Option<PathBuf>,
    /// Print the image's in-guest conformance checks as the per-requirement report of `vir
    /// conform` (text, or JSON with --json; --junit writes that report's JUnit XML)
    #[arg(long)]
    conform: bool,
    /// Boot at the image's PVH entry (32-bit protected mode, one vCPU) as PVH VMMs do
    #[arg(long)]
    pvh: bool,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    deadline: u64,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(report: &RunReport) -> String {
    let checks = report.checks();
    let failures = checks.iter().filter(|c| !c.1).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuite name=\"vir-guest-image\" tests=\"{}\" failures=\"{failures}\">\n",
        checks.len()
    ));
    for (name, passed, detail) in &checks {
        x.push_str(&format!(
            "  <testcase classname=\"vir-guest-image\" name=\"{}\">",
            xml_escape(name)
        ));
        if !passed {
            x.push_str(&format!("<failure message=\"{}\"/>", xml_escape(detail)));
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("</testsuite>\n");
    x
}

fn end_text(end: &RunEnd) -> String {
    match end {
        RunEnd::Exit(code) => format!("exit code {code}"),
        RunEnd::Deadline(d) => format!("no exit within {d:?}"),
        RunEnd::VcpuFailed { vcpu, reason } => format!("vCPU {vcpu} failed: {reason}"),
    }
}

fn print(report: &RunReport, args: &KvmArgs, out: &mut dyn Write) -> std::io::Result<()> {
    let us = |t: u64| report.ticks_to_us(t);
    let ioctls: Vec<f64> = report
        .gsi_routing_ioctls
        .iter()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    let ioctl_p50 = {
        let mut v = ioctls.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if args.json {
        let j = json!({
            "situation": if args.legacy { "legacy" } else { "vir" },
            "vcpus": args.vcpus,
            "end": end_text(&report.end),
            "passed": report.end == RunEnd::Exit(0),
            "checks": report.checks().iter().map(|(n, p, d)| json!({
                "name": n, "passed": p, "detail": d,
            })).collect::<Vec<_>>(),
            "figures": report.figures().iter().map(|f| json!({
                "name": f.name, "n": f.n, "p50_ticks": f.p50, "p99_ticks": f.p99,
                "p50_us": us(f.p50), "p99_us": us(f.p99),
            })).collect::<Vec<_>>(),
            "tsc_khz": report.tsc_khz,
            "gsi_routing_ioctls": ioctls.len(),
            "gsi_routing_ioctl_p50_us": ioctl_p50,
            "exits": {
                "console": report.exits.console,
                "doorbell": report.exits.doorbell,
                "pci_config": report.exits.pci_config,
                "other_pio": report.exits.other_pio,
                "mmio": report.exits.mmio,
                "fired": report.exits.fired,
                "fired_unrouted": report.exits.fired_unrouted,
                "remapped": report.exits.remapped,
                "blocked": report.exits.blocked,
            },
        });
        return writeln!(out, "{j:#}");
    }
    for line in report.lines() {
        writeln!(out, "guest: {line}")?;
    }
    writeln!(out, "figures (TSC at {:?} kHz):", report.tsc_khz)?;
    for f in report.figures() {
        let fmt = |t: u64| us(t).map_or(format!("{t} ticks"), |u| format!("{u:.1} us"));
        writeln!(
            out,
            "  {:<14} n={:<4} p50={:<14} p99={}",
            f.name,
            f.n,
            fmt(f.p50),
            fmt(f.p99)
        )?;
    }
    if let Some(p50) = ioctl_p50 {
        writeln!(
            out,
            "  KVM_SET_GSI_ROUTING  n={} p50={p50:.1} us (VMM side)",
            ioctls.len()
        )?;
    }
    writeln!(out, "exits: {:?}", report.exits)?;
    let checks = report.checks();
    writeln!(
        out,
        "{}: {} checks, {} failed; {}",
        if args.legacy { "legacy" } else { "vir" },
        checks.len(),
        checks.iter().filter(|c| !c.1).count(),
        end_text(&report.end)
    )
}

/// Stands in for a check's run function: an image check runs inside the guest, never against a
/// host factory, so `vir conform` cannot run it.
fn runs_in_image(_: &mut dyn vir_conform::hut::HostUnderTest) -> Outcome {
    Outcome::NotTestable("runs inside the guest image: boot it with `vir kvm --conform`".into())
}

/// The image's `REQ` lines as a `vir conform` report: one check per line, verifying the IDs it
/// names, with the outcome the guest observed.
fn conform_report(report: &RunReport) -> Result<vir_conform::Report, CliError> {
    let mut runs = Vec::new();
    for line in report.lines().filter_map(|l| l.strip_prefix("REQ ")) {
        let mut it = line.split(' ');
        let (Some(name), Some(ids), Some(verdict)) = (it.next(), it.next(), it.next()) else {
            return Err(CliError::Kvm(format!(
                "malformed REQ line from the image: {line}"
            )));
        };
        let outcome = match verdict {
            "pass" => Outcome::Pass,
            "fail-status" => {
                let rest: Vec<&str> = it.collect();
                let n = rest.len();
                let code = |s: Option<&&str>| s.and_then(|s| s.parse::<u32>().ok());
                let (Some(expected), Some(actual)) = (
                    code(rest.get(n.wrapping_sub(2))),
                    code(rest.get(n.wrapping_sub(1))),
                ) else {
                    return Err(CliError::Kvm(format!(
                        "malformed REQ line from the image: {line}"
                    )));
                };
                Outcome::Fail(Failure::Status {
                    step: rest[..n - 2].join(" "),
                    expected: Expected::Exactly(Status(expected)),
                    actual: Status(actual),
                })
            }
            _ => {
                return Err(CliError::Kvm(format!(
                    "malformed REQ line from the image: {line}"
                )));
            }
        };
        let ids: Vec<&'static str> = ids
            .split(',')
            .map(|id| &*Box::leak(id.to_string().into_boxed_str()))
            .collect();
        let check: &'static Check = Box::leak(Box::new(Check {
            ids: Box::leak(ids.into_boxed_slice()),
            name: Box::leak(name.to_string().into_boxed_str()),
            description: "checked by the guest image through its own vIR calls on real KVM",
            host: HostKind::Fixture,
            run: runs_in_image,
        }));
        runs.push(CheckRun {
            check,
            outcome,
            advisory: false,
        });
    }
    vir_conform::runner::build_report(
        "vir-host on real KVM, seen from the guest image (vir kvm)".into(),
        runs,
        &vir_conform::RunOptions::default(),
    )
    .map_err(CliError::Conformance)
}

/// Runs `vir kvm`.
pub fn run(args: &KvmArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.pvh && args.vcpus != 1 {
        return Err(CliError::Usage(UsageError::BadOptionValue {
            option: "--vcpus",
            value: args.vcpus.to_string(),
            expected: "1 with --pvh (a PVH boot starts one vCPU)",
        }));
    }
    if args.vcpus == 0 || args.vcpus > MAX_VCPUS {
        return Err(CliError::Usage(UsageError::BadOptionValue {
            option: "--vcpus",
            value: args.vcpus.to_string(),
            expected: "1 to 16",
        }));
    }
    vir_kvm::kvm_available().map_err(|e| CliError::Kvm(format!("cannot run: {e}")))?;
    let path = match &args.image {
        Some(p) => p.clone(),
        None => image::build().map_err(|e| CliError::Kvm(e.to_string()))?,
    };
    let elf = Elf::read(&path).map_err(|e| CliError::Kvm(e.to_string()))?;
    let config = MachineConfig {
        vcpus: args.vcpus,
        vir: !args.legacy,
        deadline: Duration::from_secs(args.deadline),
        pvh: args.pvh,
        ..MachineConfig::default()
    };
    let report = run_image(&elf, &config).map_err(|e| CliError::Kvm(e.to_string()))?;
    if args.conform {
        let conform = conform_report(&report)?;
        if args.json {
            writeln!(out, "{:#}", vir_conform::report::json(&conform)).map_err(CliError::Output)?;
        } else {
            write!(out, "{}", vir_conform::report::text(&conform)).map_err(CliError::Output)?;
        }
        if let Some(file) = &args.junit {
            std::fs::write(file, vir_conform::report::junit(&conform)).map_err(CliError::Output)?;
        }
    } else {
        print(&report, args, out).map_err(CliError::Output)?;
        if let Some(file) = &args.junit {
            std::fs::write(file, junit(&report)).map_err(CliError::Output)?;
        }
    }
    let failed: Vec<String> = report
        .checks()
        .iter()
        .filter(|c| !c.1)
        .map(|c| c.0.to_string())
        .collect();
    if report.end != RunEnd::Exit(0) || !failed.is_empty() {
        return Err(CliError::KvmFailed {
            end: end_text(&report.end),
            failed,
        });
    }
    Ok(())
}

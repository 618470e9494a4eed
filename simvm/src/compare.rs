//! The same driver workload in the three situations, side by side (`vir simulate --compare`).
//!
//! For each situation ([`crate::situations`]) the guest kernel boots, picks its remapping domain
//! from discovery, and a driver then runs, through the one [`IrqSubsystem`](vir_guest::IrqSubsystem)
//! API:
//!
//! 1. **ims-probe** — one IMS entry allocated, requested, fired and freed: allowed on bare metal
//!    and with vIR, refused with `EOPNOTSUPP` with only an emulated unit (`VIR-LEG-G-001`). Its
//!    costs are kept apart from the workload's;
//! 2. **setup** — `vectors` MSI-X entries allocated and requested, vector `i` on CPU
//!    `i mod vcpus`;
//! 3. **retarget** — every vector moved to CPU `(i + vcpus/2) mod vcpus`;
//! 4. **unplug** — the last `unplug` vCPUs taken offline, one after the other; with the default
//!    16 vCPUs and 4 unplugged they carry a quarter of the vectors (x86 has at most 186 device
//!    vectors per CPU, so a quarter of 2048 cannot sit on one vCPU);
//! 5. **teardown** — every vector freed, the MSI-X function disabled.
//!
//! After every phase each vector is fired from the device through the whole platform and
//! checked: delivered exactly once where the guest asked, or — after teardown — not at all.
//! Every phase reports the guest exits (trapped storage accesses, emulated remapping-unit
//! register writes and invalidations, vIR calls), the writes that reached the device's storage,
//! the remapping-table entries written, the time spent in the host (measured) and every failure
//! the guest, the host or the checks reported.

use std::fmt;
use std::time::Instant;

use serde::Serialize;
use vir_guest::{AllocRequest, CpuId, CpuMask, Irq, IrqError, StorageType};
use vir_host::{IommuKind, IrMode};
use vir_platform::StorageSlot;

use vir_guest::{IrSituation, NoVirReason};

use crate::situations::{Counts, SituationError, SituationKind, SituationSpec, SituationVm};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareConfig {
    /// MSI-X vectors (1–2048).
    pub vectors: u32,
    /// vCPUs (one per physical CPU).
    pub vcpus: u32,
    /// vCPUs taken offline in the unplug phase (the last ones).
    pub unplug: u32,
    /// The host's delivery mode (situations 2 and 3).
    pub mode: IrMode,
    /// The machine's and host's IOMMU (situations 2 and 3).
    pub iommu: IommuKind,
    /// Run the IMS probe.
    pub ims_probe: bool,
    /// Situations to run, in order.
    pub situations: Vec<SituationKind>,
}

impl Default for CompareConfig {
    /// 2048 vectors on 16 vCPUs, 4 unplugged, posted mode, the IMS probe, all three situations.
    fn default() -> Self {
        Self {
            vectors: 2048,
            vcpus: 16,
            unplug: 4,
            mode: IrMode::Posted,
            iommu: IommuKind::Vtd,
            ims_probe: true,
            situations: SituationKind::ALL.to_vec(),
        }
    }
}

/// Why the comparison could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareError {
    /// `vectors` outside 1–2048.
    Vectors(u32),
    /// `vcpus` is 0 or `unplug` leaves no vCPU online.
    Vcpus {
        /// vCPUs.
        vcpus: u32,
        /// vCPUs to unplug.
        unplug: u32,
    },
    /// A situation could not be built.
    Build {
        /// The situation.
        situation: SituationKind,
        /// Why.
        error: SituationError,
    },
}

impl fmt::Display for CompareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vectors(n) => write!(f, "{n} vectors: must be 1 to 2048"),
            Self::Vcpus { vcpus, unplug } => {
                write!(
                    f,
                    "{vcpus} vCPUs with {unplug} unplugged: none would stay online"
                )
            }
            Self::Build { situation, error } => write!(f, "{situation}: {error}"),
        }
    }
}

impl std::error::Error for CompareError {}

/// One phase of one situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub phase: &'static str,
    /// Its costs.
    pub counts: Counts,
    /// Wall-clock time of the phase (guest and host), in nanoseconds.
    pub wall_ns: u64,
    /// Vectors moved (retarget: by the driver; unplug: migrations by the hot-unplug — a vector
    /// that lands on a vCPU unplugged later migrates again, as with Linux's one-at-a-time
    /// offlining).
    pub moved: u64,
    /// Unplug: vectors on the unplugged vCPUs before the phase.
    pub carried: u64,
    /// Vectors fired after the phase.
    pub checked: u64,
    /// Vectors delivered where the guest asked (or, after teardown, not delivered).
    pub correct: u64,
    /// Failures reported during the phase or by its checks.
    pub failures: Vec<String>,
}

/// The IMS probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImsProbe {
    /// Whether the driver got the IMS interrupt.
    pub allowed: bool,
    /// Delivered where asked (when allowed).
    pub delivered: bool,
    /// The errno of the refusal (when refused).
    pub errno: Option<i32>,
}

/// One situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SituationReport {
    /// The situation.
    pub situation: SituationKind,
    /// What the guest's boot selected, as text.
    pub selected: String,
    /// The IMS probe (`None` if not run).
    pub ims: Option<ImsProbe>,
    /// Costs of the IMS probe (kept apart from the workload's).
    pub ims_counts: Option<Counts>,
    /// Costs of booting (negotiation, or setting the emulated unit up).
    pub boot: Counts,
    /// The phases.
    pub phases: Vec<PhaseReport>,
    /// Costs of the workload phases together (setup to teardown).
    pub workload: Counts,
    /// Every failure of the situation (the phases' and anomalies).
    pub failures: Vec<String>,
}

impl SituationReport {
    /// Whether every check passed, nothing failed and IMS behaved as `VIR-LEG-G-001` says.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.phases.iter().all(|p| p.correct == p.checked)
    }

    /// The phase named `name`.
    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.phase == name)
    }
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompareReport {
    /// Vectors.
    pub vectors: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// vCPUs unplugged.
    pub unplugged: u32,
    /// The host's delivery mode.
    pub mode: String,
    /// The IOMMU of situations 2 and 3 (`VT-d` or `AMD-Vi`).
    pub iommu: String,
    /// Each situation.
    pub situations: Vec<SituationReport>,
}

impl CompareReport {
    /// Whether every situation passed.
    pub fn passed(&self) -> bool {
        self.situations.iter().all(SituationReport::passed)
    }

    /// The report of `kind`.
    pub fn situation(&self, kind: SituationKind) -> Option<&SituationReport> {
        self.situations.iter().find(|s| s.situation == kind)
    }
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn describe(irq: Irq, e: &IrqError) -> String {
    format!("{irq}: {e} (errno {})", e.errno())
}

fn validate(config: &CompareConfig) -> Result<(), CompareError> {
    if !(1..=2048).contains(&config.vectors) {
        return Err(CompareError::Vectors(config.vectors));
    }
    if config.vcpus == 0 || config.unplug >= config.vcpus {
        return Err(CompareError::Vcpus {
            vcpus: config.vcpus,
            unplug: config.unplug,
        });
    }
    Ok(())
}

/// The situation spec `config` asks for (a guest that looks for vIR).
pub fn spec(kind: SituationKind, config: &CompareConfig) -> SituationSpec {
    SituationSpec {
        vcpus: config.vcpus,
        msix_entries: config.vectors,
        mode: config.mode,
        iommu: config.iommu,
        ..SituationSpec::new(kind)
    }
}

/// Builds situation `kind` and runs the workload in it.
pub fn run_situation(
    kind: SituationKind,
    config: &CompareConfig,
) -> Result<SituationReport, CompareError> {
    validate(config)?;
    let mut vm = SituationVm::build(&spec(kind, config)).map_err(|error| CompareError::Build {
        situation: kind,
        error,
    })?;
    let mut report = run_workload(&mut vm, config)?;
    if vm.kind() != kind {
        report.failures.push(format!(
            "the guest selected {}, expected {kind}",
            report.selected
        ));
    }
    Ok(report)
}

/// What the guest's boot selected, in words.
fn selected(vm: &SituationVm) -> String {
    match vm.selected() {
        None => "emulated unit (a kernel without vIR support)".to_owned(),
        Some(IrSituation::BareMetal) => "bare-metal unit (no hypervisor bit)".to_owned(),
        Some(IrSituation::Emulated(NoVirReason::NotOffered)) => {
            "emulated unit (no vIR leaves)".to_owned()
        }
        Some(IrSituation::Emulated(r)) => format!("emulated unit ({r:?})"),
        Some(IrSituation::Vir(s)) => format!(
            "vIR (version {}, session {}, features {})",
            s.version, s.session, s.features
        ),
        Some(IrSituation::NoRemapping(r)) => format!("no remapping ({r:?})"),
    }
}

/// Runs the workload on a built situation (the VM stays available for inspection).
pub fn run_workload(
    vm: &mut SituationVm,
    config: &CompareConfig,
) -> Result<SituationReport, CompareError> {
    validate(config)?;
    let kind = vm.kind();
    let mut failures = Vec::new();
    let boot = vm.counts();
    let ims = config.ims_probe.then(|| {
        let before = vm.counts();
        let probe = ims_probe(vm, &mut failures);
        (probe, vm.counts().since(&before))
    });
    let (ims, ims_counts) = match ims {
        Some((p, c)) => (Some(p), Some(c)),
        None => (None, None),
    };
    let mut phases = Vec::new();
    let start = vm.counts();

    // setup
    let mut p = Phase::begin(vm, "setup");
    let (irqs, failed) = setup_step(vm, config);
    p.failures.extend(failed);
    let sources: Vec<(Irq, StorageSlot)> = irqs
        .iter()
        .filter_map(|&irq| vm.source(irq).map(|s| (irq, s)))
        .collect();
    phases.push(p.end(vm, &sources));

    // retarget
    let mut p = Phase::begin(vm, "retarget");
    let (moved, failed) = retarget_step(vm, &irqs, config);
    p.moved = moved;
    p.failures.extend(failed);
    phases.push(p.end(vm, &sources));

    // unplug
    let mut p = Phase::begin(vm, "unplug");
    let (carried, moved, failed) = unplug_step(vm, &irqs, config);
    (p.carried, p.moved) = (carried, moved);
    p.failures.extend(failed);
    phases.push(p.end(vm, &sources));

    // teardown
    let mut p = Phase::begin(vm, "teardown");
    p.failures.extend(teardown_step(vm, &irqs));
    phases.push(p.end(vm, &sources));

    let workload = vm.counts().since(&start);
    for ph in &phases {
        failures.extend(ph.failures.iter().map(|f| format!("{}: {f}", ph.phase)));
    }
    let log = vm.trap_log();
    failures.extend(log.errors.iter().map(|e| format!("trap error: {e}")));
    if vm.physical_anomalies() != 0 {
        failures.push(format!(
            "{} physical storage writes refused by the machine",
            vm.physical_anomalies()
        ));
    }
    Ok(SituationReport {
        situation: kind,
        selected: selected(vm),
        ims,
        ims_counts,
        boot,
        phases,
        workload,
        failures,
    })
}

/// The setup step: `vectors` MSI-X entries allocated and requested, vector `i` on CPU
/// `i mod vcpus`. Returns the irqs and the failures.
pub fn setup_step(vm: &mut SituationVm, config: &CompareConfig) -> (Vec<Irq>, Vec<String>) {
    let dev = vm.guest_device();
    let mut failures = Vec::new();
    let indices: Vec<u32> = (0..config.vectors).collect();
    let irqs =
        match vm
            .guest_mut()
            .alloc_irq_vectors(dev, AllocRequest::MsiX { indices: &indices }, None)
        {
            Ok(irqs) => irqs,
            Err(e) => {
                failures.push(format!("alloc_irq_vectors: {e} (errno {})", e.errno()));
                Vec::new()
            }
        };
    let n = config.vcpus.max(1);
    for (i, &irq) in irqs.iter().enumerate() {
        let cpu = CpuMask::single(CpuId(i as u32 % n));
        let r = vm
            .guest_mut()
            .set_affinity(irq, &cpu)
            .and_then(|()| vm.guest_mut().request_irq(irq));
        if let Err(e) = r {
            failures.push(describe(irq, &e));
        }
    }
    (irqs, failures)
}

/// The retarget step: vector `i` moved to CPU `(i + vcpus/2) mod vcpus`. Returns the vectors
/// moved and the failures.
pub fn retarget_step(
    vm: &mut SituationVm,
    irqs: &[Irq],
    config: &CompareConfig,
) -> (u64, Vec<String>) {
    let n = config.vcpus.max(1);
    let mut moved = 0;
    let mut failures = Vec::new();
    for (i, &irq) in irqs.iter().enumerate() {
        let cpu = CpuMask::single(CpuId((i as u32 + n / 2) % n));
        match vm.guest_mut().set_affinity(irq, &cpu) {
            Ok(()) => moved += 1,
            Err(e) => failures.push(describe(irq, &e)),
        }
    }
    (moved, failures)
}

/// The unplug step: the last `unplug` vCPUs taken offline, one after the other. Returns the
/// vectors they carried before, the migrations and the failures.
pub fn unplug_step(
    vm: &mut SituationVm,
    irqs: &[Irq],
    config: &CompareConfig,
) -> (u64, u64, Vec<String>) {
    let n = config.vcpus;
    let gone = n.saturating_sub(config.unplug)..n;
    let carried = irqs
        .iter()
        .filter(|&&irq| {
            matches!(
                vm.guest().irq_info(irq).map(|i| i.state),
                Some(vir_guest::IrqState::Active { cpu, .. }) if gone.contains(&cpu.0)
            )
        })
        .count() as u64;
    let mut moved = 0;
    let mut failures = Vec::new();
    for c in gone {
        match vm.guest_mut().cpu_offline(CpuId(c)) {
            Ok(report) => {
                moved += report.migrated.len() as u64;
                for (irq, e) in &report.failed {
                    failures.push(describe(*irq, e));
                }
            }
            Err(e) => failures.push(format!("cpu_offline({c}): {e}")),
        }
    }
    (carried, moved, failures)
}

/// The teardown step: every vector freed, the MSI-X function disabled. Returns the failures.
pub fn teardown_step(vm: &mut SituationVm, irqs: &[Irq]) -> Vec<String> {
    let dev = vm.guest_device();
    let mut failures = Vec::new();
    for &irq in irqs {
        match vm.guest_mut().free_irq(irq) {
            Ok(report) if report.is_clean() => {}
            Ok(report) => failures.push(format!("{irq}: {:?}", report.errors)),
            Err(e) => failures.push(describe(irq, &e)),
        }
    }
    if !irqs.is_empty() {
        match vm.guest_mut().free_irq_vectors(dev, StorageType::MsiX) {
            Ok(report) if report.is_clean() => {}
            Ok(report) => failures.push(format!("free_irq_vectors: {:?}", report.errors)),
            Err(e) => failures.push(format!("free_irq_vectors: {e}")),
        }
    }
    if let Err(e) = vm.msix_disable() {
        failures.push(format!("MSI-X disable: {e}"));
    }
    failures
}

/// One IMS entry: allowed (and delivered) on bare metal and with vIR, refused with only an
/// emulated unit (`VIR-LEG-G-001`).
fn ims_probe(vm: &mut SituationVm, failures: &mut Vec<String>) -> ImsProbe {
    let dev = vm.guest_device();
    let expect_allowed = vm.kind() != SituationKind::Emulated;
    let probe =
        match vm
            .guest_mut()
            .alloc_irq_vectors(dev, AllocRequest::ImsDevice { indices: &[0] }, None)
        {
            Ok(irqs) => {
                let mut delivered = false;
                if let Some(&irq) = irqs.first() {
                    match vm.guest_mut().request_irq(irq) {
                        Ok(()) => {
                            delivered = vm
                                .source(irq)
                                .is_some_and(|slot| vm.check(irq, slot).unwrap_or(false));
                        }
                        Err(e) => failures.push(format!("ims-probe: {}", describe(irq, &e))),
                    }
                    let clean = vm.guest_mut().free_irq(irq).is_ok_and(|r| r.is_clean())
                        && vm
                            .guest_mut()
                            .free_irq_vectors(dev, StorageType::ImsDevice)
                            .is_ok_and(|r| r.is_clean());
                    if !clean {
                        failures.push("ims-probe: teardown refused".to_owned());
                    }
                }
                ImsProbe {
                    allowed: true,
                    delivered,
                    errno: None,
                }
            }
            Err(e) => ImsProbe {
                allowed: false,
                delivered: false,
                errno: Some(e.errno()),
            },
        };
    if probe.allowed != expect_allowed {
        failures.push(format!(
            "ims-probe: IMS {} in {}, VIR-LEG-G-001 says it must be {}",
            if probe.allowed { "allowed" } else { "refused" },
            vm.kind(),
            if expect_allowed { "allowed" } else { "refused" },
        ));
    }
    if probe.allowed && !probe.delivered {
        failures.push("ims-probe: the IMS interrupt was not delivered".to_owned());
    }
    probe
}

struct Phase {
    name: &'static str,
    before: Counts,
    started: Instant,
    moved: u64,
    carried: u64,
    failures: Vec<String>,
}

impl Phase {
    fn begin(vm: &SituationVm, name: &'static str) -> Self {
        Self {
            name,
            before: vm.counts(),
            started: Instant::now(),
            moved: 0,
            carried: 0,
            failures: Vec::new(),
        }
    }

    /// Closes the phase (costs and time first, then the checks, which fire interrupts).
    fn end(self, vm: &mut SituationVm, sources: &[(Irq, StorageSlot)]) -> PhaseReport {
        let wall_ns = nanos(self.started);
        let counts = vm.counts().since(&self.before);
        let mut failures = self.failures;
        let mut correct = 0;
        for &(irq, slot) in sources {
            match vm.check(irq, slot) {
                Ok(true) => correct += 1,
                Ok(false) => {
                    if failures.len() < 16 {
                        failures.push(format!("{irq}: not delivered where the guest asked"));
                    }
                }
                Err(e) => failures.push(format!("{irq}: {e}")),
            }
        }
        PhaseReport {
            phase: self.name,
            counts,
            wall_ns,
            moved: self.moved,
            carried: self.carried,
            checked: sources.len() as u64,
            correct,
            failures,
        }
    }
}

/// Runs every configured situation.
pub fn run(config: &CompareConfig) -> Result<CompareReport, CompareError> {
    let situations = config
        .situations
        .iter()
        .map(|&k| run_situation(k, config))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompareReport {
        vectors: config.vectors,
        vcpus: config.vcpus,
        unplugged: config.unplug,
        mode: match config.mode {
            IrMode::Posted => "posted",
            IrMode::Remapped => "remapped",
        }
        .to_owned(),
        iommu: crate::scenario::iommu_name(config.iommu).to_owned(),
        situations,
    })
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

impl fmt::Display for CompareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iommu = if self.iommu == "AMD-Vi" {
            ", AMD-Vi host (bare metal: the guest's own VT-d driver)"
        } else {
            ""
        };
        writeln!(
            f,
            "vIR compare: {} MSI-X vectors, {} vCPUs ({} unplugged), {} mode{iommu}",
            self.vectors, self.vcpus, self.unplugged, self.mode
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<11} {:<9} {:>7} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>9} {:>11}",
            "situation",
            "phase",
            "exits",
            "trapped",
            "ir-regs",
            "calls",
            "dev-wr",
            "irte-wr",
            "g-irte",
            "moved",
            "host-ms",
            "wall-ms",
            "delivered"
        )?;
        for s in &self.situations {
            let rows = core::iter::once(("boot", s.boot, 0, 0, None))
                .chain(s.ims_counts.map(|c| ("ims-probe", c, 0, 0, None)))
                .chain(s.phases.iter().map(|p| {
                    (
                        p.phase,
                        p.counts,
                        p.wall_ns,
                        p.moved,
                        Some((p.correct, p.checked)),
                    )
                }))
                .chain(core::iter::once((
                    "workload",
                    s.workload,
                    s.phases.iter().map(|p| p.wall_ns).sum(),
                    s.phases.iter().map(|p| p.moved).sum(),
                    None,
                )));
            for (name, c, wall, moved, check) in rows {
                writeln!(
                    f,
                    "{:<11} {:<9} {:>7} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>9} {:>11}",
                    s.situation.name(),
                    name,
                    c.exits(),
                    c.trapped,
                    c.ir_register_exits,
                    c.hypercalls,
                    c.device_writes,
                    c.irte_writes,
                    c.guest_irte_writes,
                    moved,
                    ms(c.host_ns),
                    if matches!(name, "boot" | "ims-probe") {
                        "-".to_owned()
                    } else {
                        ms(wall)
                    },
                    match check {
                        Some((ok, n)) => format!("{ok}/{n}"),
                        None => "-".to_owned(),
                    }
                )?;
            }
        }
        writeln!(f)?;
        for s in &self.situations {
            let ims = match &s.ims {
                None => "not probed".to_owned(),
                Some(p) if p.allowed => format!(
                    "allowed, {}",
                    if p.delivered {
                        "delivered"
                    } else {
                        "NOT delivered"
                    }
                ),
                Some(p) => format!("refused (errno {})", p.errno.unwrap_or(0)),
            };
            writeln!(
                f,
                "{}: selected {}; IMS {}; {}",
                s.situation,
                s.selected,
                ims,
                if s.passed() {
                    "PASS".to_owned()
                } else {
                    format!("FAIL ({} failures)", s.failures.len())
                }
            )?;
            if let Some(p) = s.phase("unplug") {
                writeln!(
                    f,
                    "  unplug: {} vectors on the unplugged vCPUs, {} migrations",
                    p.carried, p.moved
                )?;
            }
            for fl in s.failures.iter().take(8) {
                writeln!(f, "  {fl}")?;
            }
        }
        writeln!(
            f,
            "\nexits = trapped MSI/MSI-X accesses + emulated remapping-unit register writes \
             (invalidations included) + vIR calls;\ndev-wr = writes reaching the device's storage; \
             irte-wr = stores into the machine's remapping table (a remapped or not-present entry \
             is stored as two 64-bit halves);\ng-irte = entries the guest wrote into its own \
             table; host-ms = time measured in the host's entry points"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let bad = |c: CompareConfig| run(&c).err();
        assert_eq!(
            bad(CompareConfig {
                vectors: 0,
                ..CompareConfig::default()
            }),
            Some(CompareError::Vectors(0))
        );
        assert_eq!(
            bad(CompareConfig {
                vectors: 2049,
                ..CompareConfig::default()
            }),
            Some(CompareError::Vectors(2049))
        );
        assert_eq!(
            bad(CompareConfig {
                vcpus: 4,
                unplug: 4,
                ..CompareConfig::default()
            }),
            Some(CompareError::Vcpus {
                vcpus: 4,
                unplug: 4
            })
        );
    }

    #[test]
    fn small_run_passes_in_every_situation_remapped_mode() {
        let r = run(&CompareConfig {
            vectors: 24,
            vcpus: 4,
            unplug: 1,
            mode: IrMode::Remapped,
            ..CompareConfig::default()
        })
        .unwrap();
        assert!(r.passed(), "{r}");
        assert_eq!(r.mode, "remapped");
        for s in &r.situations {
            assert_eq!(
                s.phase("unplug").map(|p| p.carried),
                Some(6),
                "{}",
                s.situation
            );
            assert_eq!(s.phases.iter().map(|p| p.correct).sum::<u64>(), 4 * 24);
        }
        let text = r.to_string();
        assert!(
            text.starts_with(
                "vIR compare: 24 MSI-X vectors, 4 vCPUs (1 unplugged), remapped mode\n"
            )
        );
        assert!(text.contains("vir: selected vIR (version 1, session 1, features "));
    }
}

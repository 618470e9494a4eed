//! The default end-to-end scenario and its [`Report`].
//!
//! One VM with several vCPUs (APIC ids above 255 among them) and four devices:
//!
//! * `nic`: a NIC-like device with an MSI-X table (64 entries by default);
//! * `accel`: an accelerator-like device with an IMS array in device memory (2048 entries);
//! * `queues`: a device with IMS in system memory (16 queues, each message in a per-queue
//!   context in guest memory);
//! * `msi`: a device with an MSI block (8 vectors).
//!
//! The guest discovers vIR, negotiates, allocates everything (`alloc_irq_vectors`, reservation
//! mode) and requests every interrupt (`request_irq`). Then:
//!
//! 1. every vector is fired from its device and must land on the vCPU and vector the guest's
//!    state says, and map back through the guest's vector→irq table to its irq number;
//! 2. seeded random affinity changes (`irq_set_affinity` with 1–3 online CPUs) and the hot-unplug
//!    of one vCPU (not CPU 0) move interrupts;
//! 3. every vector is fired and checked again, and no storage was written since activation
//!    (VIR-AFF-H-005, VIR-AFF-G-001);
//! 4. a probe of forged messages: every device stores another device's message, and a
//!    compatibility-format message, in its first slot and fires it — each write must be blocked
//!    and recorded by the remapping unit (VIR-SEC-H-001, B17).
//!
//! With 8 vCPUs the scenario cannot request 2136 interrupts: a Linux-like guest has 186 device
//! vectors per vCPU. The default is therefore 16 vCPUs; with fewer, `request_irq` fails with
//! `ENOSPC` and the scenario reports the error.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::ser::SerializeMap;
use vir_abi::feature::Features;
use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiMessage};
use vir_guest::{
    AllocRequest, CpuId, CpuMask, DeviceId as GuestDeviceId, HotplugReport, Irq, IrqError,
    IrqState, StorageSlot as GuestSlot, StorageType,
};
use vir_host::{IommuKind, IrMode};
use vir_platform::{FireOutcome, StorageKind};

use crate::guest_env::CallBinding;
use crate::host_backends::AMD_TABLE_ENTRIES;
use crate::vm::{
    DEFAULT_VECTORS_PER_PCPU, DeliveryCheck, DeviceSpec, VmSpec, World, WorldBuilder, WorldError,
};

/// The APIC ids of the first 16 vCPUs of the default scenario (logical CPU `i` has entry `i`;
/// beyond 16, ids continue from 4096).
pub const DEFAULT_APIC_IDS: [u32; 16] = [
    0, 1, 2, 3, 256, 257, 300, 511, 4, 5, 6, 7, 512, 513, 1000, 4095,
];

/// A small, seeded, deterministic generator (SplitMix64): the same seed gives the same scenario
/// on every platform and every build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The scenario's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioConfig {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Host delivery mode.
    pub mode: IrMode,
    /// The guest's binding.
    pub binding: CallBinding,
    /// MSI-X entries of the NIC (0: no NIC).
    pub msix_entries: u32,
    /// IMS entries in device memory of the accelerator (0: no accelerator).
    pub ims_device_entries: u32,
    /// IMS queues in system memory (0: no such device).
    pub ims_system_queues: u32,
    /// log2 of the MSI block (`None`: no MSI device).
    pub msi_log2: Option<u8>,
    /// Seed of the affinity changes and of the CPU unplugged.
    pub seed: u64,
    /// Number of random affinity changes.
    pub affinity_changes: u32,
    /// The IOMMU of the machine and host.
    pub iommu: IommuKind,
}

impl Default for ScenarioConfig {
    /// 16 vCPUs, posted mode, `VMCALL`, 64 MSI-X, 2048 IMS in device memory, 16 IMS queues,
    /// 8 MSI vectors, seed 1, 1024 affinity changes.
    fn default() -> Self {
        Self {
            vcpus: 16,
            mode: IrMode::Posted,
            binding: CallBinding::Vmcall,
            msix_entries: 64,
            ims_device_entries: 2048,
            ims_system_queues: 16,
            msi_log2: Some(3),
            seed: 1,
            affinity_changes: 1024,
            iommu: IommuKind::Vtd,
        }
    }
}

impl ScenarioConfig {
    /// The vCPUs' APIC ids.
    pub fn apic_ids(&self) -> Vec<u32> {
        (0..self.vcpus)
            .map(|i| match DEFAULT_APIC_IDS.get(i as usize) {
                Some(&a) => a,
                None => 4096 + i,
            })
            .collect()
    }

    /// Interrupts the scenario allocates.
    pub fn interrupts(&self) -> u32 {
        self.msix_entries
            .saturating_add(self.ims_device_entries)
            .saturating_add(self.ims_system_queues)
            .saturating_add(self.msi_log2.map_or(0, |l| 1u32 << l.min(5)))
    }

    /// Physical CPUs: at least 16 and the vCPU count, and enough that the host vectors of
    /// every interrupt fill at most three quarters of them.
    pub fn pcpus(&self) -> u32 {
        let per = u32::from(DEFAULT_VECTORS_PER_PCPU) * 3 / 4;
        let needed = self.interrupts().div_ceil(per);
        needed.max(16).max(self.vcpus)
    }

    /// Remapping table size exponent: 2^(s+1) entries, at least 4096 and twice the interrupts.
    pub fn table_size_s(&self) -> u8 {
        let want = self.interrupts().saturating_mul(2).clamp(4096, 65536);
        (want.next_power_of_two().trailing_zeros().saturating_sub(1)) as u8
    }

    /// The world the scenario runs in (one VM, its four devices).
    pub fn world(&self) -> WorldBuilder {
        let entries = 2u32 << self.table_size_s();
        let mut vm = VmSpec::new(self.apic_ids())
            .with_binding(self.binding)
            .with_quotas(vir_host::Quotas {
                irtes: entries,
                vectors: entries,
            });
        let dev =
            |n: u8| GuestDeviceId::from_bdf(0, 0, n, 0).unwrap_or(GuestDeviceId(u32::from(n) << 3));
        if self.msix_entries > 0 {
            vm =
                vm.with_device(DeviceSpec::new("nic", dev(3), 0x8100).with_msix(self.msix_entries));
        }
        if self.ims_device_entries > 0 {
            vm = vm.with_device(
                DeviceSpec::new("accel", dev(4), 0x8200).with_ims_device(self.ims_device_entries),
            );
        }
        if self.ims_system_queues > 0 {
            vm = vm.with_device(
                DeviceSpec::new("queues", dev(5), 0x8300).with_ims_system(self.ims_system_queues),
            );
        }
        if let Some(log2) = self.msi_log2 {
            vm = vm.with_device(DeviceSpec::new("msi", dev(6), 0x8400).with_msi(log2));
        }
        WorldBuilder::new()
            .pcpus(self.pcpus())
            .mode(self.mode)
            .iommu(self.iommu)
            .table_size_s(self.table_size_s())
            .vm(vm)
    }
}

/// Why the scenario stopped before its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioError {
    /// No vCPU.
    NoVcpus,
    /// The world could not be built or driven.
    World(WorldError),
    /// `alloc_irq_vectors` failed.
    Alloc {
        /// The device.
        device: String,
        /// The error (with its errno, VIR-STA-G-001).
        error: IrqError,
    },
    /// `request_irq` failed.
    Request {
        /// The device.
        device: String,
        /// The irq.
        irq: Irq,
        /// The error.
        error: IrqError,
    },
    /// The CPU hot-unplug was refused.
    Hotplug {
        /// The CPU.
        cpu: CpuId,
        /// The error.
        error: IrqError,
    },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVcpus => f.write_str("the scenario needs at least one vCPU"),
            Self::World(e) => e.fmt(f),
            Self::Alloc { device, error } => write!(
                f,
                "alloc_irq_vectors for {device}: {error} (errno {})",
                error.errno()
            ),
            Self::Request { device, irq, error } => write!(
                f,
                "request_irq {irq} of {device}: {error} (errno {})",
                error.errno()
            ),
            Self::Hotplug { cpu, error } => {
                write!(f, "hot-unplug of {cpu}: {error} (errno {})", error.errno())
            }
        }
    }
}

impl std::error::Error for ScenarioError {}

impl From<WorldError> for ScenarioError {
    fn from(e: WorldError) -> Self {
        Self::World(e)
    }
}

/// Counts by name, in a fixed order, serialized as a JSON object in that order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamedCounts(pub Vec<(String, u64)>);

impl NamedCounts {
    /// The count of `name` (0 if absent).
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |&(_, c)| c)
    }

    /// The sum of every count.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|&(_, c)| c).sum()
    }
}

impl Serialize for NamedCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The negotiated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NegotiationSummary {
    /// The version in force.
    pub version: u16,
    /// The features in force, by name.
    pub features: Vec<String>,
    /// The features' bits.
    pub feature_bits: u64,
    /// The host's session number.
    pub session: u32,
    /// The CPUID base leaf where vIR was found.
    pub cpuid_base: u32,
}

/// The interrupts of one device and storage kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterruptGroup {
    /// The device's name.
    pub device: String,
    /// The device's guest-visible id.
    pub device_id: String,
    /// The storage kind.
    pub storage: String,
    /// Interrupts allocated and requested.
    pub count: u32,
    /// The host's delivery mode behind them.
    pub mode: String,
    /// The first and last irq numbers.
    pub irqs: (u32, u32),
}

/// Faults of the remapping unit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FaultSummary {
    /// Faults recorded in the fault log.
    pub recorded: u64,
    /// Faults not recorded because the entry had FPD = 1 (blocked all the same).
    pub suppressed: u64,
    /// Recorded faults by reason (`0x26` …).
    pub by_reason: NamedCounts,
}

/// Storage writes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StorageSummary {
    /// Writes the devices saw, per kind, when every interrupt was requested.
    pub at_activation: NamedCounts,
    /// Writes the devices saw after the affinity changes and the hot-unplug.
    pub after_changes: NamedCounts,
    /// Messages the guest wrote, per kind (once per allocation, VIR-ACT-G-001).
    pub guest_messages: NamedCounts,
    /// Mask and unmask writes the guest made, per maskable kind (VIR-ALC-G-001: masked before
    /// the message is written, unmasked at `request_irq`, masked at `free_irq`).
    pub guest_mask_writes: NamedCounts,
    /// Writes between activation and the end of the second delivery check (must be 0).
    pub rewrites: u64,
}

/// The affinity changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AffinitySummary {
    /// `irq_set_affinity` calls made.
    pub requested: u64,
    /// Calls that moved the interrupt to another CPU (one `SET_AFFINITY` each).
    pub moved: u64,
    /// Calls whose CPU was already in the new mask (no hypercall).
    pub unchanged: u64,
    /// Calls refused, by errno.
    pub refused: NamedCounts,
}

/// The hot-unplug.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HotplugSummary {
    /// The CPU unplugged.
    pub cpu: u32,
    /// Its APIC id.
    pub apic_id: u32,
    /// Interrupts migrated off it.
    pub migrated: u64,
    /// Of those, how many had no other CPU in their affinity.
    pub broken_affinity: u64,
    /// Interrupts that could not be moved.
    pub failed: u64,
    /// Interrupts still targeting the unplugged CPU after it went offline (must be 0).
    pub left_on_cpu: u64,
}

/// Which path the interrupts took through the platform.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PathSummary {
    /// Writes the remapping unit posted into a descriptor (posted mode).
    pub posted: u64,
    /// Writes the remapping unit remapped to a host vector (remapped mode).
    pub remapped: u64,
    /// Host IRQs that fired on a host vector (VFIO).
    pub host_irqs_fired: u64,
    /// Eventfd signals KVM received through irqfds.
    pub irqfd_signals: u64,
    /// Interrupts KVM set in a LAPIC (routes, and the PIR-to-IRR syncs of posted mode).
    pub lapic_injections: u64,
}

/// The forged-message probe.
///
/// VT-d checks the source in the entry, so another device's message is blocked and recorded
/// (SID check) and nothing may reach a vCPU. AMD-Vi checks the source by the table: a message
/// from a device can only select an entry of that device's own table, so another device's
/// message either faults (no entry there: recorded) or raises one of the forging device's own
/// interrupts (contained); it must never raise another device's interrupt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ForgedSummary {
    /// Forged writes made.
    pub attempts: u64,
    /// Writes the IOMMU blocked and recorded, or (AMD-Vi) that stayed within the forging
    /// device's own interrupts.
    pub blocked: u64,
    /// Writes that reached a vCPU (VT-d), or (AMD-Vi) that raised an interrupt of another
    /// device (must be 0).
    pub delivered: u64,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// `posted` or `remapped`.
    pub mode: String,
    /// `VT-d` or `AMD-Vi`.
    pub iommu: String,
    /// The guest's binding.
    pub binding: CallBinding,
    /// The vCPUs' APIC ids, by logical CPU.
    pub vcpus: Vec<u32>,
    /// Physical CPUs of the machine.
    pub pcpus: u32,
    /// Entries of the remapping table.
    pub irte_table: u32,
    /// The session.
    pub negotiation: NegotiationSummary,
    /// Interrupts set up, per device and storage kind.
    pub interrupts: Vec<InterruptGroup>,
    /// Interrupts in total.
    pub total_interrupts: u64,
    /// Delivery check after `request_irq`.
    pub delivery_initial: DeliveryCheck,
    /// Delivery check after the affinity changes and the hot-unplug.
    pub delivery_after_changes: DeliveryCheck,
    /// Remapping-unit faults.
    pub faults: FaultSummary,
    /// Calls the host handled, per code.
    pub calls: NamedCounts,
    /// Statuses the host returned, per status.
    pub statuses: NamedCounts,
    /// Storage writes.
    pub storage: StorageSummary,
    /// Affinity changes.
    pub affinity: AffinitySummary,
    /// Hot-unplug.
    pub hotplug: HotplugSummary,
    /// Forged-message probe.
    pub forged: ForgedSummary,
    /// The path of the interrupts through the platform, the forged probe included.
    pub path: PathSummary,
}

impl Report {
    /// Whether the scenario passed: every delivery correct in both checks, no storage rewritten,
    /// nothing left on the unplugged CPU, no forged message delivered, every probe recorded.
    pub fn passed(&self) -> bool {
        self.delivery_initial.all_correct()
            && self.delivery_after_changes.all_correct()
            && self.delivery_initial.checked == self.total_interrupts
            && self.delivery_after_changes.checked == self.total_interrupts
            && self.storage.rewrites == 0
            && self.hotplug.failed == 0
            && self.hotplug.left_on_cpu == 0
            && self.forged.delivered == 0
            && self.forged.blocked == self.forged.attempts
    }

    /// Deliveries that were wrong or missing, over both checks.
    pub fn failed_deliveries(&self) -> u64 {
        self.delivery_initial.wrong
            + self.delivery_initial.missing
            + self.delivery_after_changes.wrong
            + self.delivery_after_changes.missing
    }
}

/// `VT-d` or `AMD-Vi`.
pub fn iommu_name(iommu: IommuKind) -> &'static str {
    match iommu {
        IommuKind::Vtd => "VT-d",
        IommuKind::AmdVi(_) => "AMD-Vi",
    }
}

fn mode_name(mode: IrMode) -> &'static str {
    match mode {
        IrMode::Posted => "posted",
        IrMode::Remapped => "remapped",
    }
}

fn kind_counts(writes: [u64; 4]) -> NamedCounts {
    NamedCounts(
        StorageKind::ALL
            .iter()
            .map(|k| (k.to_string(), writes[k.index()]))
            .collect(),
    )
}

fn storage_name(t: StorageType) -> &'static str {
    match t {
        StorageType::Msi => "MSI",
        StorageType::MsiX => "MSI-X",
        StorageType::ImsDevice => "IMS (device memory)",
        StorageType::ImsSystem => "IMS (system memory)",
    }
}

/// Runs the scenario of the module documentation.
pub fn run(config: &ScenarioConfig) -> Result<Report, ScenarioError> {
    if config.vcpus == 0 {
        return Err(ScenarioError::NoVcpus);
    }
    let mut world = config.world().build()?;
    let mut rng = SplitMix64::new(config.seed);
    let vm = 0;

    // Allocation and request.
    let specs: Vec<_> = world
        .vm(vm)?
        .devices()
        .iter()
        .map(|d| d.spec.clone())
        .collect();
    let mut groups = Vec::new();
    let mut all_irqs = Vec::new();
    for d in &specs {
        let parts: Vec<(StorageType, u32)> = [
            (StorageType::Msi, d.msi_log2.map_or(0, |l| 1u32 << l)),
            (StorageType::MsiX, d.msix_entries),
            (StorageType::ImsDevice, d.ims_device_entries),
            (StorageType::ImsSystem, d.ims_system_queues),
        ]
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect();
        for (storage, n) in parts {
            let indices: Vec<u32> = (0..n).collect();
            let request = match storage {
                StorageType::Msi => AllocRequest::Msi { nvec: n },
                StorageType::MsiX => AllocRequest::MsiX { indices: &indices },
                StorageType::ImsDevice => AllocRequest::ImsDevice { indices: &indices },
                StorageType::ImsSystem => AllocRequest::ImsSystem { indices: &indices },
            };
            let irqs = world
                .guest_mut(vm)?
                .alloc_irq_vectors(d.guest_id, request, None)
                .map_err(|error| ScenarioError::Alloc {
                    device: d.name.clone(),
                    error,
                })?;
            for &irq in &irqs {
                world
                    .guest_mut(vm)?
                    .request_irq(irq)
                    .map_err(|error| ScenarioError::Request {
                        device: d.name.clone(),
                        irq,
                        error,
                    })?;
            }
            groups.push(InterruptGroup {
                device: d.name.clone(),
                device_id: d.guest_id.to_string(),
                storage: storage_name(storage).to_string(),
                count: n,
                mode: mode_name(config.mode).to_string(),
                irqs: (
                    irqs.first().map_or(0, |i| i.0),
                    irqs.last().map_or(0, |i| i.0),
                ),
            });
            all_irqs.extend(irqs);
        }
    }
    let at_activation = world.storage_writes(vm)?;
    let guest_stats = world.vm(vm)?.guest().storage_stats();

    // 1. Every vector lands where the guest says.
    let delivery_initial = world.check_all(vm)?;

    // 2. Random affinity changes, then the hot-unplug of one vCPU.
    let nr_cpus = config.vcpus;
    let mut affinity = AffinitySummary::default();
    let mut refused: BTreeMap<i32, u64> = BTreeMap::new();
    for _ in 0..config.affinity_changes {
        if all_irqs.is_empty() {
            break;
        }
        let irq = all_irqs[rng.below(all_irqs.len() as u64) as usize];
        let width = 1 + rng.below(3);
        let mask: CpuMask = (0..width)
            .map(|_| CpuId(rng.below(u64::from(nr_cpus)) as u32))
            .collect();
        let before = world.vm(vm)?.guest().irq_info(irq).map(|i| i.state);
        affinity.requested += 1;
        match world.guest_mut(vm)?.set_affinity(irq, &mask) {
            Ok(()) => {
                let after = world.vm(vm)?.guest().irq_info(irq).map(|i| i.state);
                if before == after {
                    affinity.unchanged += 1;
                } else {
                    affinity.moved += 1;
                }
            }
            Err(e) => *refused.entry(e.errno()).or_default() += 1,
        }
    }
    affinity.refused = NamedCounts(
        refused
            .into_iter()
            .map(|(e, n)| (format!("errno {e}"), n))
            .collect(),
    );
    let mut hotplug = HotplugSummary::default();
    if nr_cpus > 1 {
        let cpu = CpuId(1 + rng.below(u64::from(nr_cpus - 1)) as u32);
        let report: HotplugReport = world
            .guest_mut(vm)?
            .cpu_offline(cpu)
            .map_err(|error| ScenarioError::Hotplug { cpu, error })?;
        let guest = world.vm(vm)?.guest();
        hotplug = HotplugSummary {
            cpu: cpu.0,
            apic_id: guest.apic_id(cpu).unwrap_or(0),
            migrated: report.migrated.len() as u64,
            broken_affinity: report.broken_affinity.len() as u64,
            failed: report.failed.len() as u64,
            left_on_cpu: guest
                .irqs()
                .filter(|&i| {
                    matches!(guest.irq_info(i).map(|x| x.state),
                        Some(IrqState::Active { cpu: c, .. }) if c == cpu)
                })
                .count() as u64,
        };
    }

    // 3. Every vector again; no storage rewritten.
    let delivery_after_changes = world.check_all(vm)?;
    let after_changes = world.storage_writes(vm)?;
    let rewrites: u64 = after_changes
        .iter()
        .zip(at_activation)
        .map(|(a, b)| a.saturating_sub(b))
        .sum();

    // 4. Forged messages: another device's message, and a compatibility-format message.
    let forged = forge_probe(&mut world, vm)?;

    let session = world.vm(vm)?.session();
    let interface = world.vm(vm)?.interface();
    let negotiation = NegotiationSummary {
        version: session.version,
        features: Features::V1_NAMES
            .iter()
            .enumerate()
            .filter(|&(bit, _)| session.features.contains(Features(1 << bit)))
            .map(|(_, n)| (*n).to_string())
            .collect(),
        feature_bits: session.features.bits(),
        session: session.session,
        cpuid_base: interface.base,
    };
    let counters = world.host().counters();
    let calls = NamedCounts(
        counters
            .call_counts()
            .map(|(c, n)| {
                (
                    c.map_or_else(|| "unknown".to_string(), |c| c.to_string()),
                    n,
                )
            })
            .collect(),
    );
    let statuses = NamedCounts(
        counters
            .status_counts()
            .map(|(s, n)| (s.name().unwrap_or("?").to_string(), n))
            .collect(),
    );
    let (recorded, suppressed) = world.faults();
    let mut by_reason: BTreeMap<u8, u64> = BTreeMap::new();
    match world.machine().amd_iommu() {
        // AMD-Vi: the event codes of the event log.
        Some(amd) => {
            for e in amd.events() {
                *by_reason.entry(e.code).or_default() += 1;
            }
        }
        None => {
            for f in world.machine().iommu().faults() {
                *by_reason.entry(f.reason.0).or_default() += 1;
            }
        }
    }
    let faults = FaultSummary {
        recorded,
        suppressed,
        by_reason: NamedCounts(
            by_reason
                .into_iter()
                .map(|(r, n)| (format!("{r:#04x}"), n))
                .collect(),
        ),
    };
    let irte_table = match world.machine().amd_iommu() {
        Some(_) => AMD_TABLE_ENTRIES,
        None => world.machine().iommu().entries(),
    };
    let path = {
        let m = world.machine();
        let (iommu, kvm) = (m.iommu().stats(), m.kvm().stats());
        let (posted, remapped) = match m.amd_iommu() {
            Some(amd) => (amd.stats().guest_posted, amd.stats().remapped),
            None => (iommu.posted, iommu.remapped),
        };
        PathSummary {
            posted,
            remapped,
            host_irqs_fired: m.vfio().stats().fired,
            irqfd_signals: kvm.irqfd_signals,
            lapic_injections: kvm.injections,
        }
    };
    Ok(Report {
        seed: config.seed,
        mode: mode_name(config.mode).to_string(),
        iommu: iommu_name(config.iommu).to_string(),
        binding: config.binding,
        vcpus: config.apic_ids(),
        pcpus: config.pcpus(),
        irte_table,
        negotiation,
        interrupts: groups,
        total_interrupts: all_irqs.len() as u64,
        delivery_initial,
        delivery_after_changes,
        faults,
        calls,
        statuses,
        storage: StorageSummary {
            at_activation: kind_counts(at_activation),
            after_changes: kind_counts(after_changes),
            guest_messages: NamedCounts(vec![
                ("MSI".to_string(), guest_stats.msi_messages),
                ("MSI-X".to_string(), guest_stats.msix_messages),
                (
                    "IMS (device memory)".to_string(),
                    guest_stats.ims_device_messages,
                ),
                (
                    "IMS (system memory)".to_string(),
                    guest_stats.ims_system_messages,
                ),
            ]),
            guest_mask_writes: NamedCounts(vec![
                ("MSI-X".to_string(), guest_stats.msix_mask_writes),
                (
                    "IMS (device memory)".to_string(),
                    guest_stats.ims_device_mask_writes,
                ),
                (
                    "IMS (system memory)".to_string(),
                    guest_stats.ims_system_mask_writes,
                ),
            ]),
            rewrites,
        },
        affinity,
        hotplug,
        forged,
        path,
    })
}

/// Every device stores another device's message, then a compatibility-format message aimed at
/// a vCPU vector, in the slot of its first irq, and fires it.
fn forge_probe(world: &mut World, vm: usize) -> Result<ForgedSummary, ScenarioError> {
    let v = world.vm(vm)?;
    let guest = v.guest();
    let mut firsts = Vec::new();
    for d in v.devices() {
        let Some(&irq) = guest.device_irqs(d.spec.guest_id).first() else {
            continue;
        };
        let Some(msg) = guest.irq_info(irq).and_then(|i| i.message) else {
            continue;
        };
        let Some(src) = world.source_of(vm, irq) else {
            continue;
        };
        let slot = match guest.irq_info(irq).map(|i| i.slot) {
            // The MSI message is the block's: write it through vector 0.
            Some(GuestSlot::Msi) => vir_platform::StorageSlot::msi(0),
            _ => src.1,
        };
        firsts.push((src.0, slot, msg, d.spec.guest_id));
    }
    let compat = CompatMsi {
        dest_id: 0,
        vector: 0x41,
        dest_mode_logical: false,
        redirection_hint: false,
        delivery_mode: DeliveryMode::Fixed,
        trigger_level: false,
        level_assert: false,
    }
    .encode(false)
    .unwrap_or(MsiMessage::new(0xFEE0_0000, 0, 0x41));
    let amd = world.machine().amd_iommu().is_some();
    let mut out = ForgedSummary::default();
    for (i, &(device, slot, _, guest_id)) in firsts.iter().enumerate() {
        let own: Vec<Irq> = world.vm(vm)?.guest().device_irqs(guest_id).to_vec();
        let mut forged: Vec<MsiMessage> = firsts
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &(_, _, m, _))| m)
            .collect();
        forged.push(compat);
        for msg in forged {
            let write_slot = if slot.kind == StorageKind::Msi {
                vir_platform::StorageSlot::msi(0)
            } else {
                slot
            };
            world
                .machine_mut()
                .write_message(device, write_slot, msg)
                .map_err(|e| ScenarioError::World(WorldError::Machine(e)))?;
            let d = world.fire(device, slot)?;
            out.attempts += 1;
            if amd {
                let foreign = d
                    .handled
                    .iter()
                    .any(|h| !h.irq.is_some_and(|irq| own.contains(&irq)));
                let recorded = matches!(d.outcome, FireOutcome::Aborted(a) if a.logged);
                if foreign {
                    out.delivered += 1;
                } else if recorded || !d.handled.is_empty() {
                    out.blocked += 1;
                }
                continue;
            }
            if !d.handled.is_empty() {
                out.delivered += 1;
            }
            if matches!(d.outcome, FireOutcome::Faulted(f) if f.recorded) {
                out.blocked += 1;
            }
        }
    }
    Ok(out)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "vIR simulation: {verdict}")?;
        let table = if self.iommu == "AMD-Vi" {
            format!("AMD-Vi IOMMU, {}-entry table per device", self.irte_table)
        } else {
            format!("{}-entry remapping table", self.irte_table)
        };
        writeln!(
            f,
            "  machine: {} pCPUs, {table}, {} mode, {} binding, seed {}",
            self.pcpus, self.mode, self.binding, self.seed
        )?;
        let ids: Vec<String> = self.vcpus.iter().map(u32::to_string).collect();
        writeln!(
            f,
            "  vCPUs ({}): APIC ids {}",
            self.vcpus.len(),
            ids.join(",")
        )?;
        writeln!(
            f,
            "  negotiated: version {}, session {}, features {} ({:#x}), CPUID base {:#x}",
            self.negotiation.version,
            self.negotiation.session,
            self.negotiation.features.join("|"),
            self.negotiation.feature_bits,
            self.negotiation.cpuid_base
        )?;
        writeln!(f, "  interrupts ({}):", self.total_interrupts)?;
        for g in &self.interrupts {
            writeln!(
                f,
                "    {:<7} {} {:<20} {:>5} {} (irqs {}-{})",
                g.device, g.device_id, g.storage, g.count, g.mode, g.irqs.0, g.irqs.1
            )?;
        }
        for (name, d) in [
            ("after request_irq", &self.delivery_initial),
            ("after affinity + unplug", &self.delivery_after_changes),
        ] {
            writeln!(
                f,
                "  deliveries {name}: {} checked, {} correct, {} wrong, {} missing",
                d.checked, d.correct, d.wrong, d.missing
            )?;
            for s in &d.failures {
                writeln!(f, "    {s}")?;
            }
        }
        let refused: Vec<String> = self
            .affinity
            .refused
            .0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(
            f,
            "  affinity changes: {} requested, {} moved, {} unchanged, {} refused{}",
            self.affinity.requested,
            self.affinity.moved,
            self.affinity.unchanged,
            self.affinity.refused.total(),
            if refused.is_empty() {
                String::new()
            } else {
                format!(" ({})", refused.join(", "))
            }
        )?;
        writeln!(
            f,
            "  hot-unplug: cpu{} (APIC {}): {} migrated ({} with broken affinity), {} failed, {} left",
            self.hotplug.cpu,
            self.hotplug.apic_id,
            self.hotplug.migrated,
            self.hotplug.broken_affinity,
            self.hotplug.failed,
            self.hotplug.left_on_cpu
        )?;
        let counts = |c: &NamedCounts| {
            c.0.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "  calls: {}", counts(&self.calls))?;
        writeln!(f, "  statuses: {}", counts(&self.statuses))?;
        writeln!(
            f,
            "  storage writes at activation: {}",
            counts(&self.storage.at_activation)
        )?;
        writeln!(
            f,
            "  guest message writes: {}",
            counts(&self.storage.guest_messages)
        )?;
        writeln!(
            f,
            "  guest mask writes: {}",
            counts(&self.storage.guest_mask_writes)
        )?;
        writeln!(
            f,
            "  storage rewrites after activation: {}",
            self.storage.rewrites
        )?;
        writeln!(
            f,
            "  path: {} posted, {} remapped, {} host IRQs fired, {} irqfd signals, {} LAPIC injections",
            self.path.posted,
            self.path.remapped,
            self.path.host_irqs_fired,
            self.path.irqfd_signals,
            self.path.lapic_injections
        )?;
        if self.iommu == "AMD-Vi" {
            writeln!(
                f,
                "  forged messages: {} written, {} blocked and recorded or kept in the writer's own table, {} delivered to another device's interrupt",
                self.forged.attempts, self.forged.blocked, self.forged.delivered
            )?;
        } else {
            writeln!(
                f,
                "  forged messages: {} written, {} blocked and recorded, {} delivered",
                self.forged.attempts, self.forged.blocked, self.forged.delivered
            )?;
        }
        write!(
            f,
            "  remapping faults: {} recorded ({}), {} suppressed by FPD",
            self.faults.recorded,
            counts(&self.faults.by_reason),
            self.faults.suppressed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(SplitMix64::new(5).below(0), 0);
    }

    #[test]
    fn config_sizes_pcpus_and_table() {
        let c = ScenarioConfig::default();
        assert_eq!(c.interrupts(), 2136);
        assert_eq!(c.pcpus(), 16);
        assert_eq!(c.table_size_s(), 12); // 8192 entries >= 2 * 2136
        assert_eq!(c.apic_ids()[..8], [0, 1, 2, 3, 256, 257, 300, 511]);
        let big = ScenarioConfig {
            vcpus: 18,
            ims_device_entries: 20000,
            ..c
        };
        assert_eq!(big.apic_ids()[16..], [4112, 4113]);
        assert_eq!(big.pcpus(), 144); // ceil(20088 / 140)
        assert_eq!(big.table_size_s(), 15);
    }

    #[test]
    fn named_counts_serialize_in_order() {
        let c = NamedCounts(vec![("b".into(), 1), ("a".into(), 2)]);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"b":1,"a":2}"#);
        assert_eq!(c.get("a"), 2);
        assert_eq!(c.get("z"), 0);
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn small_scenario_on_amd_vi_delivers_every_interrupt_in_both_modes() {
        for (mode, width) in [
            (IrMode::Posted, vir_host::AmdIrteFormat::Bits128),
            (IrMode::Remapped, vir_host::AmdIrteFormat::Bits128),
        ] {
            let config = ScenarioConfig {
                mode,
                iommu: IommuKind::AmdVi(vir_host::AmdViConfig {
                    irte_format: width,
                    address_dm: false,
                }),
                msix_entries: 8,
                ims_device_entries: 16,
                ims_system_queues: 4,
                msi_log2: Some(2),
                affinity_changes: 32,
                ..ScenarioConfig::default()
            };
            let r = run(&config).unwrap();
            assert!(r.passed(), "{mode:?}:\n{r}");
            assert_eq!(r.iommu, "AMD-Vi");
            assert_eq!(r.delivery_initial.correct, 32);
            // Only the forged compatibility-format probes (index 0x41, beyond every table in
            // use) fault, one per device: IO_PAGE_FAULT.
            assert_eq!((r.faults.recorded, r.faults.suppressed), (4, 0));
            assert_eq!((r.forged.attempts, r.forged.delivered), (16, 0));
            match mode {
                IrMode::Posted => assert!(r.path.posted > 0 && r.path.remapped == 0),
                IrMode::Remapped => assert!(r.path.remapped > 0 && r.path.posted == 0),
            }
        }
    }
}

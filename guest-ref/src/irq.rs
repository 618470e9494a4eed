//! The driver-facing interrupt lifecycle, with Linux semantics.
//!
//! [`IrqSubsystem`] plays the part of the Linux MSI core, the x86 vector domain and the generic
//! irq layer above a [`RemapDomain`]; it does not know which domain it drives.
//!
//! | Linux | here | domain calls |
//! |---|---|---|
//! | `pci_alloc_irq_vectors`, `msi_domain_alloc_irqs` (MSI, MSI-X, IMS) | [`IrqSubsystem::alloc_irq_vectors`] | alloc; in reservation mode activate(RESERVE) per vector |
//! | `request_irq` | [`IrqSubsystem::request_irq`] | activate(target) |
//! | `irq_set_affinity` | [`IrqSubsystem::set_affinity`] | set_affinity |
//! | `free_irq` | [`IrqSubsystem::free_irq`] | deactivate |
//! | `pci_free_irq_vectors`, `msi_domain_free_irqs` | [`IrqSubsystem::free_irq_vectors`] | deactivate (reserved vectors), free |
//! | CPU hot-unplug (`fixup_irqs`) | [`IrqSubsystem::cpu_offline`] | set_affinity per interrupt |
//! | `vector_irq[vector]` | [`IrqSubsystem::vector_to_irq`], [`IrqSubsystem::handle_interrupt`] | — |
//!
//! Rules kept:
//!
//! * irq numbers are allocated from [`FIRST_DYNAMIC_IRQ`] (24) upward, the lowest free range
//!   first (an MSI block gets consecutive numbers); a number is never reused while it is live;
//! * reservation mode (B11) is used when the domain supports it: every allocated vector is
//!   activated as a reservation at allocation time, parked on [`SHUTDOWN_VECTOR`] without
//!   consuming a vector, and gets its real vector at `request_irq`; without it, vectors are
//!   first activated at `request_irq`;
//! * the message is written into the storage exactly once per allocation, at its first
//!   activation, and never afterwards (`VIR-ACT-G-001`); a different message from a later
//!   activation is refused ([`IrqError::MessageChanged`]);
//! * affinity changes never touch the storage (`VIR-AFF-G-001`);
//! * every failure is reported at the original call with the errno a kernel would return
//!   (`VIR-STA-G-001`, [`IrqError::errno`]) and leaves the guest's state as before the call;
//! * teardown (`free_irq`, `free_irq_vectors`) always completes on the guest side, like Linux;
//!   what the domain or the storage refused on the way is returned in a [`TeardownReport`].

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::status::errno;

use crate::cpu::{CpuId, CpuMask};
use crate::device::{DeviceId, StorageType};
use crate::domain::{Activation, AllocationId, DomainError, IrSlot, IrqTarget, RemapDomain};
use crate::matrix::{SHUTDOWN_VECTOR, VectorConfig, VectorError, VectorMatrix};
use crate::storage::{InterruptStorage, StorageError, StorageSlot, StorageStats};

/// First irq number handed out (Linux x86: numbers below are the legacy/IO-APIC GSIs).
pub const FIRST_DYNAMIC_IRQ: u32 = 24;
/// Default bound of irq numbers (exclusive).
pub const DEFAULT_NR_IRQS: u32 = 4096;
/// Largest MSI block.
pub const MSI_MAX_VECTORS: u32 = 32;

/// A Linux-style irq number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irq(pub u32);

impl fmt::Debug for Irq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "irq{}", self.0)
    }
}

impl fmt::Display for Irq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "irq {}", self.0)
    }
}

/// Configuration of an [`IrqSubsystem`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqConfig {
    /// The (x2)APIC id of each vCPU; logical CPU `i` has `apic_ids[i]`. All CPUs start online.
    pub apic_ids: Vec<u32>,
    /// The vector space (system-reserved vectors).
    pub vectors: VectorConfig,
    /// First irq number handed out.
    pub first_irq: u32,
    /// Bound of irq numbers (exclusive).
    pub nr_irqs: u32,
}

impl IrqConfig {
    /// Defaults for the given vCPUs: default vector space, irqs `24..4096`.
    pub fn new(apic_ids: Vec<u32>) -> Self {
        IrqConfig {
            apic_ids,
            vectors: VectorConfig::default(),
            first_irq: FIRST_DYNAMIC_IRQ,
            nr_irqs: DEFAULT_NR_IRQS,
        }
    }
}

/// Why an [`IrqConfig`] is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// No vCPU.
    NoCpus,
    /// More vCPUs than CPU numbers (`u32`).
    TooManyCpus(usize),
    /// Two vCPUs share an APIC id.
    DuplicateApicId(u32),
    /// `first_irq >= nr_irqs`.
    EmptyIrqRange {
        /// First irq number.
        first_irq: u32,
        /// Bound.
        nr_irqs: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCpus => f.write_str("no vCPU configured"),
            Self::TooManyCpus(n) => write!(f, "{n} vCPUs exceed the CPU number space"),
            Self::DuplicateApicId(a) => write!(f, "APIC id {a} configured twice"),
            Self::EmptyIrqRange { first_irq, nr_irqs } => {
                write!(f, "irq range {first_irq}..{nr_irqs} is empty")
            }
        }
    }
}

/// What [`IrqSubsystem::alloc_irq_vectors`] allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocRequest<'a> {
    /// A block of `nvec` MSI vectors (1–32, a power of two).
    Msi {
        /// Number of vectors.
        nvec: u32,
    },
    /// The given MSI-X table entries.
    MsiX {
        /// Table indices.
        indices: &'a [u32],
    },
    /// The given IMS entries in device memory.
    ImsDevice {
        /// Array indices.
        indices: &'a [u32],
    },
    /// IMS entries in system memory with the given software-chosen numbers.
    ImsSystem {
        /// Software-chosen numbers.
        indices: &'a [u32],
    },
}

impl AllocRequest<'_> {
    /// The storage type requested.
    pub const fn storage_type(&self) -> StorageType {
        match self {
            Self::Msi { .. } => StorageType::Msi,
            Self::MsiX { .. } => StorageType::MsiX,
            Self::ImsDevice { .. } => StorageType::ImsDevice,
            Self::ImsSystem { .. } => StorageType::ImsSystem,
        }
    }
}

/// The state of an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqState {
    /// Allocated, not activated yet (no reservation mode): no message, no vector.
    Allocated,
    /// Reservation mode: activated as a reservation, parked on [`SHUTDOWN_VECTOR`].
    Reserved,
    /// Requested: delivered to `vector` on `cpu`.
    Active {
        /// The CPU.
        cpu: CpuId,
        /// The vector on that CPU.
        vector: u8,
    },
    /// Freed by `free_irq`: deactivated, message still valid, no vector.
    Deactivated,
}

/// A snapshot of one interrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    /// The device.
    pub device: DeviceId,
    /// The storage slot holding its message.
    pub slot: StorageSlot,
    /// Its vector index within the allocation (MSI block), 0 otherwise.
    pub subhandle: u16,
    /// The domain's allocation.
    pub allocation: AllocationId,
    /// Its state.
    pub state: IrqState,
    /// The affinity mask requested.
    pub affinity: CpuMask,
    /// The allocation's message, once issued.
    pub message: Option<MsiMessage>,
    /// Interrupts handled ([`IrqSubsystem::handle_interrupt`]).
    pub count: u64,
}

impl IrqInfo {
    /// Where the interrupt is delivered: the CPU and vector when requested, the shutdown vector
    /// (and no CPU) when parked as a reservation, `None` otherwise.
    pub fn effective_vector(&self) -> Option<(Option<CpuId>, u8)> {
        match self.state {
            IrqState::Active { cpu, vector } => Some((Some(cpu), vector)),
            IrqState::Reserved => Some((None, SHUTDOWN_VECTOR)),
            IrqState::Allocated | IrqState::Deactivated => None,
        }
    }
}

/// Counters of the subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IrqStats {
    /// Interrupts on a (CPU, vector) that maps to no irq.
    pub spurious: u64,
    /// Vectors kept allocated because the domain refused to deactivate their interrupt (the
    /// host may still deliver on them, so they are not reused).
    pub leaked_vectors: u64,
    /// Undo steps (after a failure) that failed in turn.
    pub rollback_failures: u64,
}

/// Errors of the driver-facing API. Each leaves the subsystem as it was before the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// IMS requested but the domain lacks the IR capability (`VIR-LEG-G-001`).
    ImsUnavailable {
        /// The device.
        device: DeviceId,
        /// The IMS type requested.
        storage: StorageType,
    },
    /// The domain does not support the storage type.
    Unsupported {
        /// The device.
        device: DeviceId,
        /// The storage type requested.
        storage: StorageType,
    },
    /// MSI vector count not a power of two in 1–32.
    InvalidVectorCount(u32),
    /// MSI block larger than the domain allows.
    MsiBlockTooLarge {
        /// Vectors requested.
        nvec: u32,
        /// Largest block.
        max: u32,
    },
    /// No index given.
    EmptyRequest,
    /// An index appears twice in the request.
    DuplicateIndex(u32),
    /// The slot already belongs to a live allocation of the device.
    SlotInUse {
        /// The device.
        device: DeviceId,
        /// The slot.
        slot: StorageSlot,
    },
    /// MSI and MSI-X are exclusive on a device.
    ModeConflict {
        /// The device.
        device: DeviceId,
        /// The type requested.
        requested: StorageType,
        /// The type in use.
        active: StorageType,
    },
    /// No free range of irq numbers of the needed length.
    IrqNumbersExhausted {
        /// Numbers needed.
        needed: u16,
    },
    /// No such irq.
    UnknownIrq(Irq),
    /// `request_irq` on a requested irq.
    AlreadyRequested(Irq),
    /// `free_irq` on an irq that is not requested.
    NotRequested(Irq),
    /// `free_irq_vectors` while an irq of the set is still requested.
    StillRequested(Irq),
    /// `free_irq_vectors` with nothing of that type allocated on the device.
    NoVectors {
        /// The device.
        device: DeviceId,
        /// The storage type.
        storage: StorageType,
    },
    /// The last online CPU cannot go offline.
    LastOnlineCpu(CpuId),
    /// The vector allocator failed (exhaustion, no online CPU in the mask, bad CPU).
    Vector(VectorError),
    /// The remapping domain failed (`VIR-STA-G-001`: a host status keeps its errno).
    Domain {
        /// The device.
        device: DeviceId,
        /// The slot.
        slot: StorageSlot,
        /// The vector index within the allocation.
        sub: u16,
        /// The domain's error.
        error: DomainError,
    },
    /// A storage access failed.
    Storage(StorageError),
    /// A later activation returned another message than the first (`VIR-ACT-H-009` broken by
    /// the domain); the storage is not rewritten (`VIR-ACT-G-001`).
    MessageChanged {
        /// The device.
        device: DeviceId,
        /// The slot.
        slot: StorageSlot,
        /// The message in the storage.
        expected: MsiMessage,
        /// The message returned now.
        got: MsiMessage,
    },
}

impl IrqError {
    /// The errno the original call returns (positive; a kernel returns its negation).
    pub fn errno(&self) -> i32 {
        match self {
            Self::ImsUnavailable { .. } | Self::Unsupported { .. } => errno::EOPNOTSUPP,
            Self::InvalidVectorCount(_)
            | Self::EmptyRequest
            | Self::DuplicateIndex(_)
            | Self::ModeConflict { .. }
            | Self::UnknownIrq(_)
            | Self::NotRequested(_)
            | Self::NoVectors { .. } => errno::EINVAL,
            Self::MsiBlockTooLarge { .. } | Self::IrqNumbersExhausted { .. } => errno::ENOSPC,
            Self::SlotInUse { .. }
            | Self::AlreadyRequested(_)
            | Self::StillRequested(_)
            | Self::LastOnlineCpu(_) => errno::EBUSY,
            Self::Vector(e) => e.errno(),
            Self::Domain { error, .. } => error.errno(),
            Self::Storage(e) => e.errno(),
            Self::MessageChanged { .. } => errno::EIO,
        }
    }
}

impl fmt::Display for IrqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ImsUnavailable { device, storage } => write!(
                f,
                "{device}: {storage:?} needs interrupt remapping, which the domain lacks"
            ),
            Self::Unsupported { device, storage } => {
                write!(
                    f,
                    "{device}: {storage:?} not supported by the remapping domain"
                )
            }
            Self::InvalidVectorCount(n) => write!(f, "{n} MSI vectors: not a power of two in 1-32"),
            Self::MsiBlockTooLarge { nvec, max } => {
                write!(f, "{nvec} MSI vectors exceed the domain's {max}")
            }
            Self::EmptyRequest => f.write_str("no index requested"),
            Self::DuplicateIndex(i) => write!(f, "index {i} requested twice"),
            Self::SlotInUse { device, slot } => write!(f, "{device} {slot:?} already allocated"),
            Self::ModeConflict {
                device,
                requested,
                active,
            } => write!(
                f,
                "{device}: {requested:?} requested while {active:?} is in use"
            ),
            Self::IrqNumbersExhausted { needed } => write!(f, "no {needed} free irq numbers"),
            Self::UnknownIrq(i) => write!(f, "{i} not allocated"),
            Self::AlreadyRequested(i) => write!(f, "{i} already requested"),
            Self::NotRequested(i) => write!(f, "{i} not requested"),
            Self::StillRequested(i) => write!(f, "{i} still requested"),
            Self::NoVectors { device, storage } => {
                write!(f, "{device} has no {storage:?} vectors")
            }
            Self::LastOnlineCpu(c) => write!(f, "{c} is the last online CPU"),
            Self::Vector(e) => write!(f, "{e}"),
            Self::Domain {
                device,
                slot,
                sub,
                error,
            } => write!(f, "{device} {slot:?} vector {sub}: {error}"),
            Self::Storage(e) => write!(f, "{e}"),
            Self::MessageChanged {
                device,
                slot,
                expected,
                got,
            } => write!(
                f,
                "{device} {slot:?}: message changed from {expected:x?} to {got:x?}"
            ),
        }
    }
}

impl From<VectorError> for IrqError {
    fn from(e: VectorError) -> Self {
        IrqError::Vector(e)
    }
}

impl From<StorageError> for IrqError {
    fn from(e: StorageError) -> Self {
        IrqError::Storage(e)
    }
}

/// Something the domain or the storage refused during a teardown that completed anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeardownError {
    /// Deactivating `irq` failed; if it was requested, its vector is kept out of use.
    Deactivate {
        /// The irq.
        irq: Irq,
        /// The domain's error.
        error: DomainError,
    },
    /// Freeing the allocation of `slot` failed; the domain may still hold it.
    Free {
        /// The device.
        device: DeviceId,
        /// The slot.
        slot: StorageSlot,
        /// The domain's error.
        error: DomainError,
    },
    /// A storage access (MSI-X mask, MSI disable) failed.
    Storage {
        /// The device.
        device: DeviceId,
        /// The slot accessed.
        slot: StorageSlot,
        /// The storage error.
        error: StorageError,
    },
}

/// What went wrong in a teardown that completed on the guest side.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[must_use]
pub struct TeardownReport {
    /// Every refusal, in order.
    pub errors: Vec<TeardownError>,
}

impl TeardownReport {
    /// Whether nothing was refused.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One interrupt moved by CPU hot-unplug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The irq.
    pub irq: Irq,
    /// CPU and vector before.
    pub from: (CpuId, u8),
    /// CPU and vector after.
    pub to: (CpuId, u8),
}

/// The outcome of [`IrqSubsystem::cpu_offline`] (best effort, like Linux's `fixup_irqs`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HotplugReport {
    /// Interrupts moved, in irq order.
    pub migrated: Vec<Migration>,
    /// Interrupts whose affinity had no other online CPU (or no free vector there) and that were
    /// moved to any online CPU; their affinity is now the online mask.
    pub broken_affinity: Vec<Irq>,
    /// Interrupts that could not be moved: they stay on the offline CPU.
    pub failed: Vec<(Irq, IrqError)>,
}

#[derive(Debug)]
struct Group {
    device: DeviceId,
    slot: StorageSlot,
    id: AllocationId,
    irqs: Vec<Irq>,
    message: Option<MsiMessage>,
    msi_enabled: bool,
}

#[derive(Debug)]
struct Desc {
    group: u64,
    sub: u16,
    state: IrqState,
    affinity: CpuMask,
    count: u64,
}

/// What an operation on one irq needs to know about it.
struct Ctx {
    key: u64,
    sub: u16,
    state: IrqState,
    affinity: CpuMask,
    device: DeviceId,
    slot: StorageSlot,
    id: AllocationId,
}

/// The interrupt subsystem over a remapping domain `D` and the platform's storage `S`.
#[derive(Debug)]
pub struct IrqSubsystem<D, S> {
    domain: D,
    storage: S,
    matrix: VectorMatrix,
    apic_ids: Vec<u32>,
    first_irq: u32,
    nr_irqs: u32,
    reservation_mode: bool,
    groups: BTreeMap<u64, Group>,
    next_group: u64,
    descs: BTreeMap<Irq, Desc>,
    vector_irq: Vec<[Option<Irq>; 256]>,
    storage_stats: StorageStats,
    stats: IrqStats,
}

impl<D: RemapDomain, S: InterruptStorage> IrqSubsystem<D, S> {
    /// A subsystem over `domain` (already set up: negotiated for vIR) and `storage`. Reservation
    /// mode is used iff the domain supports it now.
    pub fn new(domain: D, storage: S, config: IrqConfig) -> Result<Self, ConfigError> {
        if config.apic_ids.is_empty() {
            return Err(ConfigError::NoCpus);
        }
        let nr_cpus = u32::try_from(config.apic_ids.len())
            .map_err(|_| ConfigError::TooManyCpus(config.apic_ids.len()))?;
        let mut seen = alloc::collections::BTreeSet::new();
        for &a in &config.apic_ids {
            if !seen.insert(a) {
                return Err(ConfigError::DuplicateApicId(a));
            }
        }
        if config.first_irq >= config.nr_irqs {
            return Err(ConfigError::EmptyIrqRange {
                first_irq: config.first_irq,
                nr_irqs: config.nr_irqs,
            });
        }
        let reservation_mode = domain.supports_reservation();
        Ok(IrqSubsystem {
            domain,
            storage,
            matrix: VectorMatrix::new(nr_cpus, &config.vectors),
            vector_irq: vec![[None; 256]; config.apic_ids.len()],
            apic_ids: config.apic_ids,
            first_irq: config.first_irq,
            nr_irqs: config.nr_irqs,
            reservation_mode,
            groups: BTreeMap::new(),
            next_group: 0,
            descs: BTreeMap::new(),
            storage_stats: StorageStats::default(),
            stats: IrqStats::default(),
        })
    }

    // ----- accessors -------------------------------------------------------------------------

    /// The remapping domain.
    pub fn domain(&self) -> &D {
        &self.domain
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, mutably: for device control the subsystem does not do itself (a driver
    /// disabling MSI-X at `pci_free_irq_vectors`, a VMM-specific accessor). Writing messages
    /// behind the subsystem's back would break `VIR-ACT-G-001`.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The vector allocator.
    pub fn matrix(&self) -> &VectorMatrix {
        &self.matrix
    }

    /// Gives the domain and the storage back.
    pub fn into_parts(self) -> (D, S) {
        (self.domain, self.storage)
    }

    /// Whether reservation mode is in use.
    pub fn reservation_mode(&self) -> bool {
        self.reservation_mode
    }

    /// Whether IMS may be offered to drivers (the domain's capability, `VIR-LEG-G-001`).
    pub fn ims_available(&self) -> bool {
        self.domain.supports_ims()
    }

    /// Storage accesses made so far (successful ones).
    pub fn storage_stats(&self) -> StorageStats {
        self.storage_stats
    }

    /// Counters.
    pub fn stats(&self) -> IrqStats {
        self.stats
    }

    /// Number of CPUs.
    pub fn nr_cpus(&self) -> u32 {
        self.matrix.nr_cpus()
    }

    /// The APIC id of `cpu`.
    pub fn apic_id(&self, cpu: CpuId) -> Option<u32> {
        usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.apic_ids.get(i))
            .copied()
    }

    /// The CPU with APIC id `apic_id`.
    pub fn cpu_of_apic(&self, apic_id: u32) -> Option<CpuId> {
        self.apic_ids
            .iter()
            .position(|&a| a == apic_id)
            .and_then(|i| u32::try_from(i).ok())
            .map(CpuId)
    }

    /// The online CPUs.
    pub fn online_cpus(&self) -> CpuMask {
        self.matrix.online_mask()
    }

    /// Every live irq, in increasing order.
    pub fn irqs(&self) -> impl Iterator<Item = Irq> + '_ {
        self.descs.keys().copied()
    }

    /// The live irqs of `device`, in increasing order.
    pub fn device_irqs(&self, device: DeviceId) -> Vec<Irq> {
        self.descs
            .iter()
            .filter(|(_, d)| {
                self.groups
                    .get(&d.group)
                    .is_some_and(|g| g.device == device)
            })
            .map(|(&i, _)| i)
            .collect()
    }

    /// A snapshot of `irq`.
    pub fn irq_info(&self, irq: Irq) -> Option<IrqInfo> {
        let d = self.descs.get(&irq)?;
        let g = self.groups.get(&d.group)?;
        Some(IrqInfo {
            device: g.device,
            slot: g.slot,
            subhandle: d.sub,
            allocation: g.id,
            state: d.state,
            affinity: d.affinity.clone(),
            message: g.message,
            count: d.count,
        })
    }

    /// The irq behind `vector` on `cpu` (Linux's per-CPU `vector_irq`).
    pub fn vector_to_irq(&self, cpu: CpuId, vector: u8) -> Option<Irq> {
        usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.vector_irq.get(i))
            .and_then(|t| t[usize::from(vector)])
    }

    /// An interrupt arrived on `vector` of `cpu`: the irq it maps to (its count incremented),
    /// or `None` for a spurious interrupt (counted in [`IrqStats::spurious`]).
    pub fn handle_interrupt(&mut self, cpu: CpuId, vector: u8) -> Option<Irq> {
        match self.vector_to_irq(cpu, vector) {
            Some(irq) => {
                if let Some(d) = self.descs.get_mut(&irq) {
                    d.count = d.count.saturating_add(1);
                }
                Some(irq)
            }
            None => {
                self.stats.spurious = self.stats.spurious.saturating_add(1);
                None
            }
        }
    }

    // ----- allocation ------------------------------------------------------------------------

    /// Allocates interrupts of `device` (`pci_alloc_irq_vectors` with min = max, or an IMS
    /// allocation) with the initial `affinity` (all CPUs if `None`). Returns their irq numbers
    /// in request order (an MSI block: consecutive numbers, vector 0 first).
    ///
    /// Each storage slot gets one domain allocation; in reservation mode each vector is then
    /// activated as a reservation and the message written into the storage. On any error
    /// everything done by the call is undone.
    pub fn alloc_irq_vectors(
        &mut self,
        device: DeviceId,
        request: AllocRequest<'_>,
        affinity: Option<&CpuMask>,
    ) -> Result<Vec<Irq>, IrqError> {
        let storage = request.storage_type();
        if storage.is_ims() && !self.domain.supports_ims() {
            return Err(IrqError::ImsUnavailable { device, storage });
        }
        if !self.domain.supports(storage) {
            return Err(IrqError::Unsupported { device, storage });
        }
        let affinity = match affinity {
            Some(m) => {
                for cpu in m.iter() {
                    self.matrix.check_cpu(cpu)?;
                }
                if m.and(&self.matrix.online_mask()).is_empty() {
                    return Err(VectorError::NoOnlineCpu(m.clone()).into());
                }
                m.clone()
            }
            None => CpuMask::first_n(self.nr_cpus()),
        };
        let slots = self.check_request(device, request)?;
        let mut done: Vec<u64> = Vec::with_capacity(slots.len());
        for (slot, log2) in slots {
            match self.setup_group(device, slot, log2, &affinity) {
                Ok(key) => done.push(key),
                Err(e) => {
                    for key in done.into_iter().rev() {
                        let report = self.teardown_group(key);
                        self.count_rollback_failures(&report);
                    }
                    return Err(e);
                }
            }
        }
        Ok(done
            .iter()
            .filter_map(|k| self.groups.get(k))
            .flat_map(|g| g.irqs.iter().copied())
            .collect())
    }

    /// Validates a request against the device's live allocations; returns the slots to allocate
    /// with their log2 block size.
    fn check_request(
        &self,
        device: DeviceId,
        request: AllocRequest<'_>,
    ) -> Result<Vec<(StorageSlot, u8)>, IrqError> {
        let in_use = |t: StorageType| {
            self.groups
                .values()
                .any(|g| g.device == device && g.slot.storage_type() == t)
        };
        let (storage, indices) = match request {
            AllocRequest::Msi { nvec } => {
                if !(1..=MSI_MAX_VECTORS).contains(&nvec) || !nvec.is_power_of_two() {
                    return Err(IrqError::InvalidVectorCount(nvec));
                }
                let max = 1u32 << self.domain.max_msi_log2().min(5);
                if nvec > max {
                    return Err(IrqError::MsiBlockTooLarge { nvec, max });
                }
                if in_use(StorageType::Msi) {
                    return Err(IrqError::SlotInUse {
                        device,
                        slot: StorageSlot::Msi,
                    });
                }
                if in_use(StorageType::MsiX) {
                    return Err(IrqError::ModeConflict {
                        device,
                        requested: StorageType::Msi,
                        active: StorageType::MsiX,
                    });
                }
                // nvec ≤ 32 and a power of two: log2 ≤ 5.
                return Ok(vec![(StorageSlot::Msi, nvec.trailing_zeros() as u8)]);
            }
            AllocRequest::MsiX { indices } => (StorageType::MsiX, indices),
            AllocRequest::ImsDevice { indices } => (StorageType::ImsDevice, indices),
            AllocRequest::ImsSystem { indices } => (StorageType::ImsSystem, indices),
        };
        if indices.is_empty() {
            return Err(IrqError::EmptyRequest);
        }
        if storage == StorageType::MsiX && in_use(StorageType::Msi) {
            return Err(IrqError::ModeConflict {
                device,
                requested: StorageType::MsiX,
                active: StorageType::Msi,
            });
        }
        let mut seen = alloc::collections::BTreeSet::new();
        let mut slots = Vec::with_capacity(indices.len());
        for &index in indices {
            if !seen.insert(index) {
                return Err(IrqError::DuplicateIndex(index));
            }
            let slot = StorageSlot::new(storage, index);
            if self
                .groups
                .values()
                .any(|g| g.device == device && g.slot == slot)
            {
                return Err(IrqError::SlotInUse { device, slot });
            }
            slots.push((slot, 0));
        }
        Ok(slots)
    }

    /// The lowest free range of `n` irq numbers.
    fn find_irq_range(&self, n: u16) -> Result<u32, IrqError> {
        let exhausted = IrqError::IrqNumbersExhausted { needed: n };
        let n = u32::from(n);
        let mut candidate = self.first_irq;
        for &Irq(irq) in self.descs.range(Irq(self.first_irq)..).map(|(k, _)| k) {
            if irq >= candidate.checked_add(n).ok_or(exhausted.clone())? {
                break;
            }
            candidate = irq.checked_add(1).ok_or(exhausted.clone())?;
        }
        match candidate.checked_add(n) {
            Some(end) if end <= self.nr_irqs => Ok(candidate),
            _ => Err(exhausted),
        }
    }

    fn setup_group(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        log2: u8,
        affinity: &CpuMask,
    ) -> Result<u64, IrqError> {
        let count: u16 = 1 << log2;
        let first = self.find_irq_range(count)?;
        let ir_slot = IrSlot {
            device,
            storage: slot.storage_type(),
            index: slot.index(),
            log2_count: log2,
        };
        let id = self
            .domain
            .alloc(ir_slot)
            .map_err(|error| IrqError::Domain {
                device,
                slot,
                sub: 0,
                error,
            })?;
        let key = self.next_group;
        self.next_group = self.next_group.wrapping_add(1);
        // first + count ≤ nr_irqs was checked by find_irq_range.
        let irqs: Vec<Irq> = (0..u32::from(count)).map(|i| Irq(first + i)).collect();
        for (sub, &irq) in (0u16..).zip(irqs.iter()) {
            self.descs.insert(
                irq,
                Desc {
                    group: key,
                    sub,
                    state: IrqState::Allocated,
                    affinity: affinity.clone(),
                    count: 0,
                },
            );
        }
        self.groups.insert(
            key,
            Group {
                device,
                slot,
                id,
                irqs,
                message: None,
                msi_enabled: false,
            },
        );
        if let Err(e) = self.prepare_group(key, id, device, slot, count) {
            let report = self.teardown_group(key);
            self.count_rollback_failures(&report);
            return Err(e);
        }
        Ok(key)
    }

    /// MSI-X and IMS: mask the entry before any message is written (Linux masks every entry
    /// when it enables MSI-X; `VIR-ALC-G-001`: a slot without the allocation's message must not
    /// generate interrupts). Reservation mode: reserve each vector and write the message.
    fn prepare_group(
        &mut self,
        key: u64,
        id: AllocationId,
        device: DeviceId,
        slot: StorageSlot,
        count: u16,
    ) -> Result<(), IrqError> {
        if slot_maskable(slot) {
            self.storage.set_masked(device, slot, true)?;
            self.storage_stats.count_mask(slot);
        }
        if !self.reservation_mode {
            return Ok(());
        }
        for sub in 0..count {
            let msg = self
                .domain
                .activate(id, sub, Activation::Reserve)
                .map_err(|error| IrqError::Domain {
                    device,
                    slot,
                    sub,
                    error,
                })?;
            if let Some(irq) = self.group_irq(key, sub) {
                self.set_state(irq, IrqState::Reserved);
            }
            self.commit_message(key, msg)?;
        }
        Ok(())
    }

    fn group_irq(&self, key: u64, sub: u16) -> Option<Irq> {
        self.groups
            .get(&key)
            .and_then(|g| g.irqs.get(usize::from(sub)))
            .copied()
    }

    /// Moves `irq` to `state`, keeping the reservation count of the matrix in step.
    fn set_state(&mut self, irq: Irq, state: IrqState) {
        let holds = |s: IrqState| matches!(s, IrqState::Reserved | IrqState::Deactivated);
        let rm = self.reservation_mode;
        if let Some(d) = self.descs.get_mut(&irq) {
            let before = rm && holds(d.state);
            let after = rm && holds(state);
            d.state = state;
            match (before, after) {
                (false, true) => self.matrix.reserve(),
                (true, false) => self.matrix.remove_reserved(),
                _ => {}
            }
        }
    }

    /// First activation of an allocation: write the message (`VIR-ACT-G-001`) and, for MSI,
    /// enable the block. Later activations: the message must be the same.
    fn commit_message(&mut self, key: u64, msg: MsiMessage) -> Result<(), IrqError> {
        let Some(g) = self.groups.get_mut(&key) else {
            return Ok(());
        };
        match g.message {
            None => {
                self.storage.write_message(g.device, g.slot, msg)?;
                self.storage_stats.count_message(g.slot);
                g.message = Some(msg);
            }
            Some(expected) if expected != msg => {
                return Err(IrqError::MessageChanged {
                    device: g.device,
                    slot: g.slot,
                    expected,
                    got: msg,
                });
            }
            Some(_) => {}
        }
        if g.slot == StorageSlot::Msi && !g.msi_enabled {
            // Bounded by 32 vectors.
            let nvec = g.irqs.len() as u32;
            self.storage.msi_enable(g.device, nvec)?;
            self.storage_stats.msi_control_writes += 1;
            g.msi_enabled = true;
        }
        Ok(())
    }

    fn count_rollback_failures(&mut self, report: &TeardownReport) {
        self.stats.rollback_failures = self
            .stats
            .rollback_failures
            .saturating_add(report.errors.len() as u64);
    }

    /// Tears an allocation down completely (MSI disable, deactivate what is active or reserved,
    /// free), releasing its irq numbers.
    fn teardown_group(&mut self, key: u64) -> TeardownReport {
        let mut report = TeardownReport::default();
        let Some(g) = self.groups.get(&key) else {
            return report;
        };
        let (device, slot, id, msi_enabled) = (g.device, g.slot, g.id, g.msi_enabled);
        let irqs = g.irqs.clone();
        if msi_enabled {
            match self.storage.msi_disable(device) {
                Ok(()) => self.storage_stats.msi_control_writes += 1,
                Err(error) => report.errors.push(TeardownError::Storage {
                    device,
                    slot,
                    error,
                }),
            }
        }
        for &irq in &irqs {
            let Some(d) = self.descs.get(&irq) else {
                continue;
            };
            let (sub, state) = (d.sub, d.state);
            match state {
                IrqState::Reserved | IrqState::Active { .. } => {
                    let result = self.domain.deactivate(id, sub);
                    if let IrqState::Active { cpu, vector } = state {
                        self.release_vector(irq, cpu, vector, result.is_ok());
                    }
                    if let Err(error) = result {
                        report.errors.push(TeardownError::Deactivate { irq, error });
                    }
                }
                IrqState::Allocated | IrqState::Deactivated => {}
            }
            self.set_state(irq, IrqState::Allocated);
            self.descs.remove(&irq);
        }
        if let Err(error) = self.domain.free(id) {
            report.errors.push(TeardownError::Free {
                device,
                slot,
                error,
            });
        }
        self.groups.remove(&key);
        report
    }

    /// Unmaps `vector` on `cpu` from `irq`; frees it if `free`, else keeps it out of use.
    fn release_vector(&mut self, irq: Irq, cpu: CpuId, vector: u8, free: bool) {
        if let Some(t) = usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.vector_irq.get_mut(i))
        {
            let e = &mut t[usize::from(vector)];
            if *e == Some(irq) {
                *e = None;
            }
        }
        if free {
            if self.matrix.free(cpu, vector).is_err() {
                self.stats.rollback_failures = self.stats.rollback_failures.saturating_add(1);
            }
        } else {
            self.stats.leaked_vectors = self.stats.leaked_vectors.saturating_add(1);
        }
    }

    fn map_vector(&mut self, irq: Irq, cpu: CpuId, vector: u8) {
        if let Some(t) = usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.vector_irq.get_mut(i))
        {
            t[usize::from(vector)] = Some(irq);
        }
    }

    fn context(&self, irq: Irq) -> Result<Ctx, IrqError> {
        let d = self.descs.get(&irq).ok_or(IrqError::UnknownIrq(irq))?;
        let g = self.groups.get(&d.group).ok_or(IrqError::UnknownIrq(irq))?;
        Ok(Ctx {
            key: d.group,
            sub: d.sub,
            state: d.state,
            affinity: d.affinity.clone(),
            device: g.device,
            slot: g.slot,
            id: g.id,
        })
    }

    /// The APIC id of a CPU the matrix returned; the matrix has exactly one CPU per APIC id.
    fn target(&self, cpu: CpuId, vector: u8) -> Result<IrqTarget, VectorError> {
        self.apic_id(cpu)
            .map(|apic_id| IrqTarget { apic_id, vector })
            .ok_or(VectorError::CpuOutOfRange {
                cpu,
                nr_cpus: self.nr_cpus(),
            })
    }

    // ----- request / free --------------------------------------------------------------------

    /// `request_irq`: gives `irq` a real vector on the best online CPU of its affinity (any
    /// online CPU if the affinity has none or no free vector, like Linux's activation), activates
    /// it in the domain, writes the message if this is the allocation's first activation,
    /// and unmasks an MSI-X or IMS entry once its message is in place (`VIR-ALC-G-001`). On
    /// failure the vector is returned and the irq is as before.
    pub fn request_irq(&mut self, irq: Irq) -> Result<(), IrqError> {
        let ctx = self.context(irq)?;
        if let IrqState::Active { .. } = ctx.state {
            return Err(IrqError::AlreadyRequested(irq));
        }
        let (cpu, vector) = self.alloc_activation_vector(&ctx.affinity)?;
        let target = match self.target(cpu, vector) {
            Ok(t) => t,
            Err(e) => {
                self.release_vector(irq, cpu, vector, true);
                return Err(e.into());
            }
        };
        let msg = match self
            .domain
            .activate(ctx.id, ctx.sub, Activation::Target(target))
        {
            Ok(m) => m,
            Err(error) => {
                self.release_vector(irq, cpu, vector, true);
                return Err(IrqError::Domain {
                    device: ctx.device,
                    slot: ctx.slot,
                    sub: ctx.sub,
                    error,
                });
            }
        };
        let mut result = self.commit_message(ctx.key, msg);
        if result.is_ok() && slot_maskable(ctx.slot) {
            result = self
                .storage
                .set_masked(ctx.device, ctx.slot, false)
                .map_err(IrqError::from);
            if result.is_ok() {
                self.storage_stats.count_mask(ctx.slot);
            }
        }
        if let Err(e) = result {
            self.undo_request(irq, &ctx, cpu, vector);
            return Err(e);
        }
        self.map_vector(irq, cpu, vector);
        self.set_state(irq, IrqState::Active { cpu, vector });
        Ok(())
    }

    /// Linux's `assign_irq_vector_any_locked`: the affinity's online CPUs, then any online CPU.
    fn alloc_activation_vector(&mut self, affinity: &CpuMask) -> Result<(CpuId, u8), IrqError> {
        let online = self.matrix.online_mask();
        let mask = affinity.and(&online);
        if !mask.is_empty() {
            match self.matrix.alloc(&mask) {
                Err(VectorError::Exhausted(_)) => {}
                other => return Ok(other?),
            }
        }
        Ok(self.matrix.alloc(&online)?)
    }

    /// Brings an irq whose activation succeeded back to `prior` after a later step failed.
    fn undo_request(&mut self, irq: Irq, ctx: &Ctx, cpu: CpuId, vector: u8) {
        let deactivated = self.domain.deactivate(ctx.id, ctx.sub);
        if deactivated.is_err() {
            self.stats.rollback_failures = self.stats.rollback_failures.saturating_add(1);
        }
        self.release_vector(irq, cpu, vector, deactivated.is_ok());
        if deactivated.is_ok()
            && ctx.state == IrqState::Reserved
            && self
                .domain
                .activate(ctx.id, ctx.sub, Activation::Reserve)
                .is_err()
        {
            self.stats.rollback_failures = self.stats.rollback_failures.saturating_add(1);
        }
    }

    /// `free_irq`: masks an MSI-X or IMS entry (`VIR-ALC-G-001`), deactivates the irq in the
    /// domain and frees its vector.
    /// The irq stays allocated (state [`IrqState::Deactivated`]) until
    /// [`IrqSubsystem::free_irq_vectors`]; a later `request_irq` activates it again without
    /// rewriting the storage. If the domain refuses to deactivate, the vector is kept out of
    /// use (the host may still deliver on it).
    pub fn free_irq(&mut self, irq: Irq) -> Result<TeardownReport, IrqError> {
        let ctx = self.context(irq)?;
        let IrqState::Active { cpu, vector } = ctx.state else {
            return Err(IrqError::NotRequested(irq));
        };
        let mut report = TeardownReport::default();
        if slot_maskable(ctx.slot) {
            match self.storage.set_masked(ctx.device, ctx.slot, true) {
                Ok(()) => self.storage_stats.count_mask(ctx.slot),
                Err(error) => report.errors.push(TeardownError::Storage {
                    device: ctx.device,
                    slot: ctx.slot,
                    error,
                }),
            }
        }
        let result = self.domain.deactivate(ctx.id, ctx.sub);
        self.release_vector(irq, cpu, vector, result.is_ok());
        if let Err(error) = result {
            report.errors.push(TeardownError::Deactivate { irq, error });
        }
        self.set_state(irq, IrqState::Deactivated);
        Ok(report)
    }

    /// `pci_free_irq_vectors` / `msi_domain_free_irqs` for one storage type: frees every
    /// allocation of `storage` on `device` (none of its irqs may be requested): MSI disable,
    /// deactivation of reserved vectors, domain free, irq numbers released.
    pub fn free_irq_vectors(
        &mut self,
        device: DeviceId,
        storage: StorageType,
    ) -> Result<TeardownReport, IrqError> {
        let keys: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.device == device && g.slot.storage_type() == storage)
            .map(|(&k, _)| k)
            .collect();
        if keys.is_empty() {
            return Err(IrqError::NoVectors { device, storage });
        }
        for k in &keys {
            for irq in self.groups.get(k).map(|g| g.irqs.as_slice()).unwrap_or(&[]) {
                if let Some(IrqState::Active { .. }) = self.descs.get(irq).map(|d| d.state) {
                    return Err(IrqError::StillRequested(*irq));
                }
            }
        }
        let mut report = TeardownReport::default();
        for k in keys {
            report.errors.extend(self.teardown_group(k).errors);
        }
        Ok(report)
    }

    // ----- affinity --------------------------------------------------------------------------

    /// `irq_set_affinity`: records `mask`; if the irq is requested and its CPU is not in `mask`,
    /// moves it: a vector on the best online CPU of `mask`, SET_AFFINITY in the domain, then the
    /// old vector is freed. On failure the new vector is freed and the old target stays. The
    /// storage is never touched (`VIR-AFF-G-001`).
    pub fn set_affinity(&mut self, irq: Irq, mask: &CpuMask) -> Result<(), IrqError> {
        let ctx = self.context(irq)?;
        for cpu in mask.iter() {
            self.matrix.check_cpu(cpu)?;
        }
        let effective = mask.and(&self.matrix.online_mask());
        if effective.is_empty() {
            return Err(VectorError::NoOnlineCpu(mask.clone()).into());
        }
        if let IrqState::Active { cpu, .. } = ctx.state
            && !effective.contains(cpu)
        {
            self.move_irq(irq, &effective)?;
        }
        if let Some(d) = self.descs.get_mut(&irq) {
            d.affinity = mask.clone();
        }
        Ok(())
    }

    /// Moves a requested irq to a vector on the best CPU of `mask` (online CPUs only).
    fn move_irq(&mut self, irq: Irq, mask: &CpuMask) -> Result<Migration, IrqError> {
        let ctx = self.context(irq)?;
        let IrqState::Active {
            cpu: old_cpu,
            vector: old_vector,
        } = ctx.state
        else {
            return Err(IrqError::NotRequested(irq));
        };
        let (cpu, vector) = self.matrix.alloc(mask)?;
        let result = match self.target(cpu, vector) {
            Ok(target) => self
                .domain
                .set_affinity(ctx.id, ctx.sub, target)
                .map_err(|error| IrqError::Domain {
                    device: ctx.device,
                    slot: ctx.slot,
                    sub: ctx.sub,
                    error,
                }),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            self.release_vector(irq, cpu, vector, true);
            return Err(e);
        }
        self.release_vector(irq, old_cpu, old_vector, true);
        self.map_vector(irq, cpu, vector);
        self.set_state(irq, IrqState::Active { cpu, vector });
        Ok(Migration {
            irq,
            from: (old_cpu, old_vector),
            to: (cpu, vector),
        })
    }

    // ----- CPU hotplug -----------------------------------------------------------------------

    /// CPU hot-unplug: marks `cpu` offline (never chosen again) and moves every requested irq
    /// off it, best effort like Linux's `fixup_irqs`: an irq whose affinity has no other online
    /// CPU, or no free vector there, is moved to any online CPU (affinity broken); an irq that
    /// cannot be moved is reported and stays on the offline CPU. Errors only if `cpu` cannot go
    /// offline (unknown, already offline, last online CPU); then nothing changes.
    pub fn cpu_offline(&mut self, cpu: CpuId) -> Result<HotplugReport, IrqError> {
        self.matrix.check_cpu(cpu)?;
        if !self.matrix.is_online(cpu) {
            return Err(VectorError::AlreadyOffline(cpu).into());
        }
        if self.matrix.online_mask().len() == 1 {
            return Err(IrqError::LastOnlineCpu(cpu));
        }
        self.matrix.set_offline(cpu)?;
        let online = self.matrix.online_mask();
        let victims: Vec<Irq> = self
            .descs
            .iter()
            .filter(|(_, d)| matches!(d.state, IrqState::Active { cpu: c, .. } if c == cpu))
            .map(|(&i, _)| i)
            .collect();
        let mut report = HotplugReport::default();
        for irq in victims {
            let affinity = self
                .descs
                .get(&irq)
                .map(|d| d.affinity.and(&online))
                .unwrap_or_default();
            let (mut result, mut broken) = if affinity.is_empty() {
                (self.move_irq(irq, &online), true)
            } else {
                (self.move_irq(irq, &affinity), false)
            };
            if !broken && matches!(result, Err(IrqError::Vector(VectorError::Exhausted(_)))) {
                result = self.move_irq(irq, &online);
                broken = true;
            }
            match result {
                Ok(m) => {
                    report.migrated.push(m);
                    if broken {
                        report.broken_affinity.push(irq);
                        if let Some(d) = self.descs.get_mut(&irq) {
                            d.affinity = online.clone();
                        }
                    }
                }
                Err(e) => report.failed.push((irq, e)),
            }
        }
        Ok(report)
    }

    /// CPU hot-plug: `cpu` becomes a candidate again (interrupts are not moved back).
    pub fn cpu_online(&mut self, cpu: CpuId) -> Result<(), IrqError> {
        Ok(self.matrix.set_online(cpu)?)
    }
}

/// Whether the subsystem masks `slot` itself: MSI-X and IMS entries have a mask of their own
/// (`VIR-ALC-G-001`); the MSI capability is controlled by MSI enable and disable.
const fn slot_maskable(slot: StorageSlot) -> bool {
    !matches!(slot, StorageSlot::Msi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VectorState;
    use alloc::collections::BTreeMap;

    /// A domain model without a hypervisor: handles from 1, messages = handle in data.
    #[derive(Default)]
    struct ModelDomain {
        ims: bool,
        reservation: bool,
        next: u32,
        live: BTreeMap<u32, Vec<VectorState>>,
        fail_next_affinity: bool,
        /// Added to the data of every message returned (a non-conforming domain if non-zero).
        bump_message: u32,
    }

    impl RemapDomain for ModelDomain {
        fn supports_ims(&self) -> bool {
            self.ims
        }
        fn supports(&self, s: StorageType) -> bool {
            !s.is_ims() || self.ims
        }
        fn supports_reservation(&self) -> bool {
            self.reservation
        }
        fn max_msi_log2(&self) -> u8 {
            5
        }
        fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
            self.next += 1;
            let n = usize::from(slot.count().unwrap());
            self.live.insert(self.next, vec![VectorState::Allocated; n]);
            Ok(AllocationId(self.next))
        }
        fn activate(
            &mut self,
            id: AllocationId,
            sub: u16,
            how: Activation,
        ) -> Result<MsiMessage, DomainError> {
            let s = &mut self.live.get_mut(&id.0).unwrap()[usize::from(sub)];
            *s = match how {
                Activation::Reserve => VectorState::Reserved,
                Activation::Target(t) => VectorState::Active(t),
            };
            Ok(MsiMessage::new(0xFEE0_0000, 0, id.0 + self.bump_message))
        }
        fn set_affinity(
            &mut self,
            id: AllocationId,
            sub: u16,
            t: IrqTarget,
        ) -> Result<(), DomainError> {
            if core::mem::take(&mut self.fail_next_affinity) {
                return Err(DomainError::NotNegotiated);
            }
            self.live.get_mut(&id.0).unwrap()[usize::from(sub)] = VectorState::Active(t);
            Ok(())
        }
        fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError> {
            self.live.get_mut(&id.0).unwrap()[usize::from(sub)] = VectorState::Allocated;
            Ok(())
        }
        fn free(&mut self, id: AllocationId) -> Result<(), DomainError> {
            self.live
                .remove(&id.0)
                .map(|_| ())
                .ok_or(DomainError::UnknownAllocation(id))
        }
    }

    #[derive(Default)]
    struct NullStorage {
        writes: Vec<(DeviceId, StorageSlot, MsiMessage)>,
        /// Message writes (`None`) and mask writes (`Some(masked)`) in order.
        ops: Vec<(StorageSlot, Option<bool>)>,
    }

    impl InterruptStorage for NullStorage {
        fn write_message(
            &mut self,
            d: DeviceId,
            s: StorageSlot,
            m: MsiMessage,
        ) -> Result<(), StorageError> {
            self.writes.push((d, s, m));
            self.ops.push((s, None));
            Ok(())
        }
        fn set_masked(&mut self, d: DeviceId, s: StorageSlot, m: bool) -> Result<(), StorageError> {
            if s == StorageSlot::Msi {
                return Err(StorageError::NotMaskable { device: d, slot: s });
            }
            self.ops.push((s, Some(m)));
            Ok(())
        }
        fn msi_enable(&mut self, _: DeviceId, _: u32) -> Result<(), StorageError> {
            Ok(())
        }
        fn msi_disable(&mut self, _: DeviceId) -> Result<(), StorageError> {
            Ok(())
        }
    }

    fn subsystem(reservation: bool, cpus: u32) -> IrqSubsystem<ModelDomain, NullStorage> {
        let d = ModelDomain {
            ims: true,
            reservation,
            ..Default::default()
        };
        IrqSubsystem::new(
            d,
            NullStorage::default(),
            IrqConfig::new((0..cpus).map(|c| c * 2).collect()),
        )
        .unwrap()
    }

    const DEV: DeviceId = DeviceId(0x0100);

    #[test]
    fn config_is_validated() {
        let mk = |c: IrqConfig| {
            IrqSubsystem::new(ModelDomain::default(), NullStorage::default(), c).err()
        };
        assert_eq!(mk(IrqConfig::new(vec![])), Some(ConfigError::NoCpus));
        assert_eq!(
            mk(IrqConfig::new(vec![0, 2, 0])),
            Some(ConfigError::DuplicateApicId(0))
        );
        let mut c = IrqConfig::new(vec![0]);
        c.first_irq = 10;
        c.nr_irqs = 10;
        assert_eq!(
            mk(c),
            Some(ConfigError::EmptyIrqRange {
                first_irq: 10,
                nr_irqs: 10
            })
        );
    }

    #[test]
    fn irq_numbers_start_at_24_lowest_free_range_first() {
        let mut s = subsystem(true, 1);
        let a = s
            .alloc_irq_vectors(
                DEV,
                AllocRequest::MsiX {
                    indices: &[0, 1, 2],
                },
                None,
            )
            .unwrap();
        assert_eq!(a, [Irq(24), Irq(25), Irq(26)]);
        let d2 = DeviceId(0x0200);
        let b = s
            .alloc_irq_vectors(d2, AllocRequest::Msi { nvec: 4 }, None)
            .unwrap();
        assert_eq!(b, [Irq(27), Irq(28), Irq(29), Irq(30)]);
        assert_eq!(
            s.free_irq_vectors(DEV, StorageType::MsiX),
            Ok(TeardownReport::default())
        );
        // A hole of 3 at 24..27: a block of 2 fits, then a block of 4 goes after 30.
        let d3 = DeviceId(0x0300);
        assert_eq!(
            s.alloc_irq_vectors(d3, AllocRequest::Msi { nvec: 2 }, None)
                .unwrap(),
            [Irq(24), Irq(25)]
        );
        let d4 = DeviceId(0x0400);
        assert_eq!(
            s.alloc_irq_vectors(d4, AllocRequest::Msi { nvec: 4 }, None)
                .unwrap(),
            [Irq(31), Irq(32), Irq(33), Irq(34)]
        );
        // Live numbers are never handed out again.
        let live: Vec<Irq> = s.irqs().collect();
        assert_eq!(live, [24, 25, 27, 28, 29, 30, 31, 32, 33, 34].map(Irq));
    }

    #[test]
    fn irq_number_space_exhaustion_rolls_back_the_whole_call() {
        let d = ModelDomain {
            reservation: true,
            ..Default::default()
        };
        let mut c = IrqConfig::new(vec![0]);
        c.nr_irqs = 26;
        let mut s = IrqSubsystem::new(d, NullStorage::default(), c).unwrap();
        let err = s
            .alloc_irq_vectors(
                DEV,
                AllocRequest::MsiX {
                    indices: &[0, 1, 2],
                },
                None,
            )
            .unwrap_err();
        assert_eq!(err, IrqError::IrqNumbersExhausted { needed: 1 });
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(s.irqs().count(), 0);
        assert!(s.domain().live.is_empty());
        assert_eq!(s.matrix().reserved(), 0);
        assert_eq!(
            s.alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0, 1] }, None)
                .unwrap(),
            [Irq(24), Irq(25)]
        );
    }

    #[test]
    fn request_validation() {
        let mut s = subsystem(true, 1);
        for nvec in [0, 3, 64] {
            assert_eq!(
                s.alloc_irq_vectors(DEV, AllocRequest::Msi { nvec }, None),
                Err(IrqError::InvalidVectorCount(nvec))
            );
        }
        assert_eq!(
            s.alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[] }, None),
            Err(IrqError::EmptyRequest)
        );
        assert_eq!(
            s.alloc_irq_vectors(
                DEV,
                AllocRequest::ImsDevice {
                    indices: &[4, 5, 4]
                },
                None
            ),
            Err(IrqError::DuplicateIndex(4))
        );
        s.alloc_irq_vectors(DEV, AllocRequest::Msi { nvec: 1 }, None)
            .unwrap();
        let e = s
            .alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0] }, None)
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::ModeConflict {
                device: DEV,
                requested: StorageType::MsiX,
                active: StorageType::Msi
            }
        );
        assert_eq!(e.errno(), errno::EINVAL);
        let e = s
            .alloc_irq_vectors(DEV, AllocRequest::Msi { nvec: 2 }, None)
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::SlotInUse {
                device: DEV,
                slot: StorageSlot::Msi
            }
        );
        assert_eq!(e.errno(), errno::EBUSY);
        s.alloc_irq_vectors(DEV, AllocRequest::ImsSystem { indices: &[1000] }, None)
            .unwrap();
        assert_eq!(
            s.alloc_irq_vectors(
                DEV,
                AllocRequest::ImsSystem {
                    indices: &[7, 1000]
                },
                None
            ),
            Err(IrqError::SlotInUse {
                device: DEV,
                slot: StorageSlot::ImsSystem(1000)
            })
        );
        let m = CpuMask::single(CpuId(3));
        assert_eq!(
            s.alloc_irq_vectors(DEV, AllocRequest::ImsSystem { indices: &[1] }, Some(&m)),
            Err(IrqError::Vector(VectorError::CpuOutOfRange {
                cpu: CpuId(3),
                nr_cpus: 1
            }))
        );
    }

    #[test]
    fn vector_irq_table_follows_request_affinity_and_free() {
        let mut s = subsystem(true, 2);
        let irqs = s
            .alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0, 1] }, None)
            .unwrap();
        s.request_irq(irqs[0]).unwrap();
        s.request_irq(irqs[1]).unwrap();
        // Least loaded: irq 24 on cpu0, irq 25 on cpu1, both vector 0x20.
        assert_eq!(s.vector_to_irq(CpuId(0), 0x20), Some(irqs[0]));
        assert_eq!(s.vector_to_irq(CpuId(1), 0x20), Some(irqs[1]));
        assert_eq!(s.handle_interrupt(CpuId(1), 0x20), Some(irqs[1]));
        assert_eq!(s.handle_interrupt(CpuId(1), 0x21), None);
        assert_eq!(s.stats().spurious, 1);
        assert_eq!(s.irq_info(irqs[1]).unwrap().count, 1);
        s.set_affinity(irqs[1], &CpuMask::single(CpuId(0))).unwrap();
        assert_eq!(s.vector_to_irq(CpuId(1), 0x20), None);
        assert_eq!(s.vector_to_irq(CpuId(0), 0x21), Some(irqs[1]));
        assert!(!s.matrix().is_allocated(CpuId(1), 0x20));
        assert_eq!(
            s.domain().live[&2][0],
            VectorState::Active(IrqTarget {
                apic_id: 0,
                vector: 0x21
            })
        );
        assert_eq!(s.free_irq(irqs[1]), Ok(TeardownReport::default()));
        assert_eq!(s.vector_to_irq(CpuId(0), 0x21), None);
        assert_eq!(s.vector_to_irq(CpuId(7), 0x21), None);
        assert_eq!(s.irq_info(irqs[1]).unwrap().state, IrqState::Deactivated);
    }

    #[test]
    fn reservations_are_counted_in_the_matrix() {
        let mut s = subsystem(true, 1);
        let irqs = s
            .alloc_irq_vectors(DEV, AllocRequest::Msi { nvec: 4 }, None)
            .unwrap();
        assert_eq!(s.matrix().reserved(), 4);
        assert_eq!(s.matrix().allocated(CpuId(0)), Ok(0));
        s.request_irq(irqs[0]).unwrap();
        assert_eq!(s.matrix().reserved(), 3);
        assert_eq!(s.matrix().allocated(CpuId(0)), Ok(1));
        assert_eq!(s.free_irq(irqs[0]), Ok(TeardownReport::default()));
        assert_eq!(s.matrix().reserved(), 4, "free_irq parks the irq again");
        assert_eq!(
            s.free_irq_vectors(DEV, StorageType::Msi),
            Ok(TeardownReport::default())
        );
        assert_eq!(s.matrix().reserved(), 0);
        let s = subsystem(false, 1);
        assert_eq!(s.matrix().reserved(), 0);
    }

    #[test]
    fn hotplug_breaks_affinity_when_no_online_cpu_is_left_in_it() {
        let mut s = subsystem(true, 3);
        let irqs = s
            .alloc_irq_vectors(
                DEV,
                AllocRequest::MsiX { indices: &[0] },
                Some(&CpuMask::single(CpuId(2))),
            )
            .unwrap();
        s.request_irq(irqs[0]).unwrap();
        let r = s.cpu_offline(CpuId(2)).unwrap();
        assert_eq!(
            r.migrated,
            [Migration {
                irq: irqs[0],
                from: (CpuId(2), 0x20),
                to: (CpuId(0), 0x20)
            }]
        );
        assert_eq!(r.broken_affinity, [irqs[0]]);
        assert_eq!(s.irq_info(irqs[0]).unwrap().affinity, CpuMask::first_n(2));
    }

    #[test]
    fn failed_affinity_keeps_the_old_vector() {
        let mut s = subsystem(true, 2);
        let irqs = s
            .alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0] }, None)
            .unwrap();
        s.request_irq(irqs[0]).unwrap();
        s.domain.fail_next_affinity = true;
        let e = s
            .set_affinity(irqs[0], &CpuMask::single(CpuId(1)))
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV,
                slot: StorageSlot::MsiX(0),
                sub: 0,
                error: DomainError::NotNegotiated
            }
        );
        assert_eq!(
            s.irq_info(irqs[0]).unwrap().state,
            IrqState::Active {
                cpu: CpuId(0),
                vector: 0x20
            }
        );
        assert_eq!(s.irq_info(irqs[0]).unwrap().affinity, CpuMask::first_n(2));
        assert_eq!(s.matrix().allocated(CpuId(1)), Ok(0));
    }

    // VIR-ALC-G-001: every MSI-X and IMS slot is masked before its message is written,
    // unmasked only once the message is in place, and masked again at free_irq.
    #[test]
    fn vir_alc_g_001_msix_and_ims_slots_masked_until_message_written() {
        for reservation in [false, true] {
            for (request, slot) in [
                (AllocRequest::MsiX { indices: &[3] }, StorageSlot::MsiX(3)),
                (
                    AllocRequest::ImsDevice { indices: &[5] },
                    StorageSlot::ImsDevice(5),
                ),
                (
                    AllocRequest::ImsSystem { indices: &[700] },
                    StorageSlot::ImsSystem(700),
                ),
            ] {
                let mut s = subsystem(reservation, 1);
                let irqs = s.alloc_irq_vectors(DEV, request, None).unwrap();
                let mut expected = vec![(slot, Some(true))];
                if reservation {
                    expected.push((slot, None));
                }
                assert_eq!(s.storage().ops, expected, "{slot:?} {reservation}");
                s.request_irq(irqs[0]).unwrap();
                if !reservation {
                    expected.push((slot, None));
                }
                expected.push((slot, Some(false)));
                assert_eq!(s.storage().ops, expected, "{slot:?} {reservation}");
                assert_eq!(s.free_irq(irqs[0]).unwrap(), TeardownReport::default());
                expected.push((slot, Some(true)));
                assert_eq!(s.storage().ops, expected, "{slot:?} {reservation}");
                let st = s.storage_stats();
                let per_type = match slot {
                    StorageSlot::MsiX(_) => (3, 0, 0),
                    StorageSlot::ImsDevice(_) => (0, 3, 0),
                    _ => (0, 0, 3),
                };
                assert_eq!(
                    (
                        st.msix_mask_writes,
                        st.ims_device_mask_writes,
                        st.ims_system_mask_writes
                    ),
                    per_type
                );
                assert_eq!(st.mask_writes(), 3);
                assert_eq!(st.message_writes(), 1);
            }
        }
    }

    // VIR-ALC-G-001: MSI has no per-slot mask through the storage; the subsystem never asks.
    #[test]
    fn vir_alc_g_001_msi_block_gets_no_mask_writes() {
        let mut s = subsystem(false, 1);
        let irqs = s
            .alloc_irq_vectors(DEV, AllocRequest::Msi { nvec: 2 }, None)
            .unwrap();
        s.request_irq(irqs[0]).unwrap();
        assert_eq!(s.free_irq(irqs[0]).unwrap(), TeardownReport::default());
        assert_eq!(s.storage().ops, vec![(StorageSlot::Msi, None)]);
        assert_eq!(s.storage_stats().mask_writes(), 0);
    }

    #[test]
    fn vir_act_g_001_changed_message_is_refused_and_storage_not_rewritten() {
        let mut s = subsystem(true, 1);
        let irqs = s
            .alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0] }, None)
            .unwrap();
        assert_eq!(s.storage().writes.len(), 1);
        s.domain.bump_message = 1;
        let e = s.request_irq(irqs[0]).unwrap_err();
        assert_eq!(
            e,
            IrqError::MessageChanged {
                device: DEV,
                slot: StorageSlot::MsiX(0),
                expected: MsiMessage::new(0xFEE0_0000, 0, 1),
                got: MsiMessage::new(0xFEE0_0000, 0, 2),
            }
        );
        assert_eq!(e.errno(), errno::EIO);
        assert_eq!(s.storage().writes.len(), 1);
        assert_eq!(s.irq_info(irqs[0]).unwrap().state, IrqState::Reserved);
        assert_eq!(s.domain().live[&1][0], VectorState::Reserved);
        assert_eq!(s.matrix().allocated(CpuId(0)), Ok(0));
        assert_eq!(s.matrix().reserved(), 1);
        assert_eq!(s.vector_to_irq(CpuId(0), 0x20), None);
    }
}

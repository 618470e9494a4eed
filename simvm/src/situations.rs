//! The three situations of `spec/vir-v1.md` §2.2 (bare metal, a VM without vIR, a VM with vIR)
//! on the simulated platform, each a machine with one
//! device and one guest kernel driving it through the same [`IrqSubsystem`] API:
//!
//! 1. **bare metal** — no hypervisor: the kernel programs the machine's VT-d unit itself
//!    ([`BareMetalVtdDomain`] over [`MachineIommu`]) and the device's storage directly;
//! 2. **emulated vIOMMU** — a VM whose host does not offer vIR: the guest's remapping table is in
//!    its memory, its registers and the MSI/MSI-X storage are trapped and emulated by the
//!    reference host's legacy code ([`EmulatedVtdDomain`] over [`GuestIrt`] and
//!    [`TrappedViommu`], storage over [`VmmBus`]);
//! 3. **vIR** — the same VM on a host that offers vIR: the guest negotiates, its domain makes
//!    calls ([`VirDomain`]), the MSI-X table is mapped straight through, the MSI capability stays
//!    trapped and admits only the issued message.
//!
//! The situation is not configured: the guest kernel chooses it at boot with
//! [`select_ir_domain`], from CPUID and the outcome of negotiation (`VIR-LEG-G-001`,
//! `VIR-LEG-G-002`). A kernel without vIR support ([`SituationSpec::guest_looks_for_vir`] false)
//! uses its emulated unit whatever the host offers (VIR-LEG-H-001).
//!
//! [`SituationVm::check`] fires a requested interrupt from the device through the whole
//! platform and judges whether it arrived where the guest asked; [`SituationVm::counts`]
//! snapshots the costs (exits by kind, device storage writes, IRTE writes, host time).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use vir_abi::feature::Features;
use vir_abi::hw::vtd::Irta;
use vir_guest::{
    BareMetalVtdDomain, CpuId, Cpuid, CpuidResult, DeviceId as GuestDeviceId, EmulatedVtdDomain,
    HardwareError, IrDomain, IrSituation, Irq, IrqConfig, IrqState, IrqSubsystem, NegotiationError,
    NoVirReason, VirDomain, select_ir_domain,
};
use vir_host::{
    DeviceConfig as HostDevice, HostConfig, IommuKind, IrMode, LegacyConfig, Quotas,
    SourceValidation, StorageSizes, TrapKind, VcpuConfig, VmConfig as HostVmConfig, VmId,
};
use vir_platform::amd_iommu::{DteInterrupt, IrteWidth};
use vir_platform::device::{DeviceConfig, MsiConfig};
use vir_platform::kvm::VmConfig as KvmVmConfig;
use vir_platform::machine::POSTED_INTR_VECTOR;
use vir_platform::{
    DeviceId, DropReason, FireOutcome, GuestApicId, HostApicId, Machine, MachineConfig,
    MachineError, RequesterId, VcpuRef,
};

use crate::guest_env::{
    HostCpuid, SharedHost, SimHost, SimTransport, VmcallTransport, platform_slot,
};
use crate::host_backends::{
    KVM_MAX_IRQ_ROUTES, SharedMachine, SimIrteTable, SimPhysicalIrqs, SimRouting, platform_vm,
};
use crate::legacy::{
    CallTiming, GuestIrt, MachineIommu, MachineStorage, SharedTrapLog, TimedTransport, TrapLog,
    TrapTarget, TrappedViommu, VmmBus,
};
use crate::vm::{DEFAULT_VECTORS_PER_PCPU, HYPERCALL_PAGE};

/// The remapping domain of a guest in any situation.
pub type SimIrDomain = IrDomain<
    BareMetalVtdDomain<MachineIommu>,
    EmulatedVtdDomain<GuestIrt, TrappedViommu>,
    VirDomain<TimedTransport<SimTransport>>,
>;

/// The interrupt subsystem of a guest in any situation.
pub type SituationGuest = IrqSubsystem<SimIrDomain, VmmBus>;

/// The device's guest-visible id in a VM (0000:01:00.0).
pub const VM_DEVICE_ID: GuestDeviceId = GuestDeviceId(0x0000_0100);
/// The device's physical requester id (host 0000:3a:00.0); on bare metal it is also its id.
pub const DEVICE_RID: u16 = 0x3a00;
/// Guest-physical base of the emulated unit's remapping table (situation 2).
pub const IRT_GPA: u64 = 0x40_0000;
/// Guest memory.
pub const GUEST_MEMORY: usize = 0x80_0000;
/// The guest's remapping table: 4096 entries, x2APIC format (situations 1 and 2).
pub const GUEST_IRT_SIZE_S: u8 = 11;
/// The machine's remapping table: 8192 entries.
pub const MACHINE_IRT_SIZE_S: u8 = 12;

/// Which of the three situations a guest ended up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SituationKind {
    /// Situation 1: bare metal with a remapping unit.
    BareMetal,
    /// Situation 2: an emulated remapping unit, no vIR.
    Emulated,
    /// Situation 3: vIR negotiated.
    Vir,
}

impl SituationKind {
    /// The three, in brief order.
    pub const ALL: [SituationKind; 3] = [Self::BareMetal, Self::Emulated, Self::Vir];

    /// A short name (`bare-metal`, `emulated`, `vir`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BareMetal => "bare-metal",
            Self::Emulated => "emulated",
            Self::Vir => "vir",
        }
    }
}

impl fmt::Display for SituationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to build a situation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SituationSpec {
    /// No hypervisor: the guest runs on the machine.
    pub bare_metal: bool,
    /// The host offers vIR (its remapping unit blocks compatibility-format interrupts); when
    /// false the unit lets them pass (CFI set) and the host hides the vIR leaves
    /// (VIR-DISC-H-001).
    pub host_offers_vir: bool,
    /// The guest kernel looks for vIR; a kernel that does not uses its emulated unit.
    pub guest_looks_for_vir: bool,
    /// vCPUs (one per physical CPU; APIC ids 0, 1, …).
    pub vcpus: u32,
    /// MSI-X table entries of the device.
    pub msix_entries: u32,
    /// MSI capability of 2^`log2` vectors.
    pub msi_log2: Option<u8>,
    /// IMS array entries in device memory.
    pub ims_device_entries: u32,
    /// The host's delivery mode.
    pub mode: IrMode,
    /// The IOMMU of the machine and host (situations 2 and 3; bare metal drives the VT-d unit
    /// itself). AMD-Vi: the device's table entry remaps, with the NMI pass-through bit set when
    /// the host does not offer vIR (so compatibility-format interrupts are not all blocked,
    /// VIR-DISC-H-001).
    pub iommu: IommuKind,
    /// Host vectors per physical CPU.
    pub vectors_per_pcpu: u16,
}

impl SituationSpec {
    /// The spec for `kind` (a guest that looks for vIR): 16 vCPUs, a device with a 2048-entry
    /// MSI-X table, an 8-vector MSI capability and 64 IMS entries, posted mode.
    pub fn new(kind: SituationKind) -> Self {
        Self {
            bare_metal: kind == SituationKind::BareMetal,
            host_offers_vir: kind == SituationKind::Vir,
            guest_looks_for_vir: true,
            vcpus: 16,
            msix_entries: 2048,
            msi_log2: Some(3),
            ims_device_entries: 64,
            mode: IrMode::Posted,
            iommu: IommuKind::Vtd,
            vectors_per_pcpu: DEFAULT_VECTORS_PER_PCPU,
        }
    }
}

/// Why a situation could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SituationError {
    /// The machine refused a step.
    Machine(MachineError),
    /// The host refused a configuration.
    HostConfig(vir_host::ConfigError),
    /// The host refused a VMM operation.
    Host(vir_host::HostError),
    /// The emulated or bare-metal remapping unit could not be set up.
    Hardware(HardwareError),
    /// The guest's interrupt subsystem refused its configuration.
    GuestConfig(vir_guest::ConfigError),
    /// The guest chose no remapping at all.
    NoRemapping(Option<NoVirReason>),
    /// A vIR call of the VMM-side boot code failed.
    Call(vir_guest::CallError),
    /// The operation needs a hypervisor (the situation is bare metal).
    BareMetal,
    /// The host numbered its VM differently from the machine's VM (the backends address the
    /// machine's VM by the host's number).
    VmIdMismatch {
        /// The machine's VM id.
        platform: u32,
        /// The host's.
        host: u32,
    },
}

impl fmt::Display for SituationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Machine(e) => write!(f, "machine: {e}"),
            Self::HostConfig(e) => write!(f, "host configuration: {e}"),
            Self::Host(e) => write!(f, "host: {e}"),
            Self::Hardware(e) => write!(f, "remapping unit: {e}"),
            Self::GuestConfig(e) => write!(f, "guest: {e}"),
            Self::NoRemapping(r) => write!(f, "the guest found no remapping ({r:?})"),
            Self::Call(e) => write!(f, "{e}"),
            Self::BareMetal => f.write_str("no hypervisor on bare metal"),
            Self::VmIdMismatch { platform, host } => {
                write!(f, "host numbered machine VM {platform} as {host}")
            }
        }
    }
}

impl std::error::Error for SituationError {}

/// Why a switch between kernels failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchError {
    /// There is no hypervisor (bare metal).
    BareMetal,
    /// Negotiation failed; the old guest stays.
    Negotiation(NegotiationError),
    /// The new guest could not be set up.
    Situation(SituationError),
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BareMetal => f.write_str("no hypervisor on bare metal"),
            Self::Negotiation(e) => write!(f, "negotiation: {e}"),
            Self::Situation(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SwitchError {}

/// Costs so far; phases are differences of two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    /// Trapped accesses to the MSI and MSI-X capabilities and the MSI-X table (guest exits).
    pub trapped: u64,
    /// Trapped accesses to the emulated remapping unit's registers, invalidations included
    /// (guest exits).
    pub ir_register_exits: u64,
    /// vIR calls (guest exits).
    pub hypercalls: u64,
    /// Writes that reached the device's storage.
    pub device_writes: u64,
    /// Storage accesses the guest's interrupt code made.
    pub guest_storage_writes: u64,
    /// Entries written into the machine's remapping table (by the host, or by a bare-metal
    /// kernel).
    pub irte_writes: u64,
    /// Entries the guest wrote into its own remapping table (situations 1 and 2: the machine's
    /// or its emulated unit's).
    pub guest_irte_writes: u64,
    /// Invalidations the guest submitted (situations 1 and 2).
    pub guest_invalidations: u64,
    /// Time spent in the host's entry points, in nanoseconds.
    pub host_ns: u64,
}

impl Counts {
    /// Every guest exit.
    pub const fn exits(&self) -> u64 {
        self.trapped + self.ir_register_exits + self.hypercalls
    }

    /// The same counts with the host time zeroed (for comparing runs).
    pub const fn without_time(self) -> Counts {
        Counts { host_ns: 0, ..self }
    }

    /// `self - before`, field by field (saturating).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            trapped: self.trapped.saturating_sub(before.trapped),
            ir_register_exits: self
                .ir_register_exits
                .saturating_sub(before.ir_register_exits),
            hypercalls: self.hypercalls.saturating_sub(before.hypercalls),
            device_writes: self.device_writes.saturating_sub(before.device_writes),
            guest_storage_writes: self
                .guest_storage_writes
                .saturating_sub(before.guest_storage_writes),
            irte_writes: self.irte_writes.saturating_sub(before.irte_writes),
            guest_irte_writes: self
                .guest_irte_writes
                .saturating_sub(before.guest_irte_writes),
            guest_invalidations: self
                .guest_invalidations
                .saturating_sub(before.guest_invalidations),
            host_ns: self.host_ns.saturating_sub(before.host_ns),
        }
    }
}

/// Where a fired interrupt ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The guest handled it as `irq` on `cpu` at `vector`.
    Handled {
        /// The CPU.
        cpu: CpuId,
        /// The vector.
        vector: u8,
        /// The guest's irq for (cpu, vector), if any.
        irq: Option<Irq>,
    },
    /// Nothing reached the guest.
    Nothing(FireOutcome),
}

/// A CPU without the hypervisor bit (bare metal).
struct BareCpu;

impl Cpuid for BareCpu {
    fn cpuid(&mut self, _leaf: u32, _subleaf: u32) -> CpuidResult {
        CpuidResult::default()
    }
}

/// One situation: a machine, a host unless bare metal, one device and one guest.
#[derive(Debug)]
pub struct SituationVm {
    kind: SituationKind,
    selected: Option<IrSituation>,
    machine: SharedMachine,
    host: Option<(SharedHost, VmId)>,
    device: DeviceId,
    guest_device: GuestDeviceId,
    guest: SituationGuest,
    log: SharedTrapLog,
    timing: Rc<RefCell<CallTiming>>,
    physical: Option<MachineStorage>,
    target: Option<TrapTarget>,
    apic_ids: Vec<u32>,
}

/// A guest's emulated-unit domain over the VM's trapped registers (IRTA programmed anew).
fn emulated_domain(target: &TrapTarget) -> Result<SimIrDomain, SituationError> {
    EmulatedVtdDomain::new(
        GuestIrt::new(target.mem.clone(), IRT_GPA),
        TrappedViommu::new(target.clone()),
        Irta {
            size_s: GUEST_IRT_SIZE_S,
            eime: true,
            base: IRT_GPA,
        },
    )
    .map(IrDomain::Emulated)
    .map_err(SituationError::Hardware)
}

/// The register binding of vCPU 0, measured into `timing`.
fn transport(
    target: &TrapTarget,
    timing: &Rc<RefCell<CallTiming>>,
) -> TimedTransport<SimTransport> {
    TimedTransport::new(
        SimTransport::Vmcall(VmcallTransport::new(
            Rc::clone(&target.host),
            target.vm,
            0,
            target.mem.clone(),
            HYPERCALL_PAGE,
        )),
        Rc::clone(timing),
    )
}

impl SituationVm {
    /// Builds the machine, the host and the VM (unless bare metal), the device, and boots the
    /// guest: discovery, the choice of its remapping domain, the interrupt subsystem.
    pub fn build(spec: &SituationSpec) -> Result<Self, SituationError> {
        let mut mc = MachineConfig::new(spec.vcpus.max(1));
        mc.vectors_per_pcpu = spec.vectors_per_pcpu;
        mc.irta = Irta {
            size_s: MACHINE_IRT_SIZE_S,
            eime: true,
            base: 0x2000_0000,
        };
        mc.posted_descriptors = spec.vcpus.max(256);
        let mut machine = Machine::new(&mc).map_err(SituationError::Machine)?;
        let mut cfg = DeviceConfig::new(RequesterId(DEVICE_RID));
        if let Some(log2) = spec.msi_log2 {
            cfg = cfg.with_msi(MsiConfig {
                vectors_log2: log2,
                per_vector_masking: true,
                address_64bit: true,
            });
        }
        if spec.msix_entries > 0 {
            cfg = cfg.with_msix(spec.msix_entries);
        }
        if spec.ims_device_entries > 0 {
            cfg = cfg.with_ims_device(spec.ims_device_entries);
        }
        let device = machine.add_device(&cfg).map_err(SituationError::Machine)?;
        let log: SharedTrapLog = Rc::new(RefCell::new(TrapLog::default()));
        let timing = Rc::new(RefCell::new(CallTiming::default()));
        let apic_ids: Vec<u32> = (0..spec.vcpus).collect();
        if spec.bare_metal {
            let machine = Rc::new(RefCell::new(machine));
            let guest_device = GuestDeviceId(u32::from(DEVICE_RID));
            let selected = select_ir_domain(&mut BareCpu, true, |_| {
                Err(NegotiationError::AlreadyNegotiated { session: 0 })
            });
            let domain = BareMetalVtdDomain::new(
                MachineIommu::new(Rc::clone(&machine)),
                Irta {
                    size_s: GUEST_IRT_SIZE_S,
                    eime: true,
                    base: 0x2000_0000,
                },
            )
            .map_err(SituationError::Hardware)?;
            let bus = VmmBus::new(
                Rc::clone(&machine),
                None,
                BTreeMap::from([(guest_device, device)]),
                Rc::clone(&log),
            );
            let guest =
                IrqSubsystem::new(IrDomain::BareMetal(domain), bus, IrqConfig::new(apic_ids))
                    .map_err(SituationError::GuestConfig)?;
            return Ok(Self {
                kind: SituationKind::BareMetal,
                selected: Some(selected),
                machine,
                host: None,
                device,
                guest_device,
                guest,
                log,
                timing,
                physical: None,
                target: None,
                apic_ids: (0..spec.vcpus).collect(),
            });
        }
        {
            let iommu = machine.iommu_mut();
            iommu.enable_remapping(true);
            iommu.set_cfi(!spec.host_offers_vir);
            iommu.invalidate_all();
        }
        if let IommuKind::AmdVi(_) = spec.iommu {
            machine.enable_amd_iommu(IrteWidth::Bits128);
            let dte = DteInterrupt {
                nmi_pass: !spec.host_offers_vir,
                ..DteInterrupt::remapped(11)
            };
            if let Some(amd) = machine.amd_iommu_mut() {
                amd.set_dte(RequesterId(DEVICE_RID), dte)
                    .map_err(|_| SituationError::Machine(MachineError::NoAmdIommu))?;
            }
        }
        let pvm = vir_platform::VmId(0);
        machine
            .create_vm(
                pvm,
                &KvmVmConfig {
                    memory: vec![(0, GUEST_MEMORY)],
                    vcpus: apic_ids
                        .iter()
                        .map(|&a| (GuestApicId(a), HostApicId(a)))
                        .collect(),
                },
            )
            .map_err(SituationError::Machine)?;
        let mut vcpus = Vec::with_capacity(apic_ids.len());
        for &a in &apic_ids {
            let vcpu = VcpuRef::new(pvm, GuestApicId(a));
            let pda = match spec.iommu {
                IommuKind::Vtd => machine.setup_posted_descriptor(vcpu, POSTED_INTR_VECTOR),
                IommuKind::AmdVi(_) => machine.setup_vapic_page(vcpu),
            }
            .map_err(SituationError::Machine)?;
            vcpus.push(VcpuConfig {
                apic_id: a,
                pda,
                pcpu: a,
            });
        }
        machine
            .attach_device(device, Some(pvm))
            .map_err(SituationError::Machine)?;
        let mem = machine
            .guest_memory(pvm)
            .map_err(SituationError::Machine)?
            .clone();
        let (physical_ir_enabled, compat_format_blocked) = match machine.amd_iommu() {
            Some(amd) => (
                true,
                amd.dte(RequesterId(DEVICE_RID))
                    .is_some_and(|d| d.blocks_unremapped()),
            ),
            None => (
                machine.iommu().remapping_enabled(),
                machine.iommu().compat_blocked(),
            ),
        };
        let host_config = HostConfig {
            ir_mode: spec.mode,
            iommu: spec.iommu,
            physical_ir_enabled,
            compat_format_blocked,
            ..HostConfig::default()
        };
        let machine: SharedMachine = Rc::new(RefCell::new(machine));
        let host = SimHost::new(
            host_config,
            SimIrteTable::new(Rc::clone(&machine)),
            SimRouting::new(Rc::clone(&machine), KVM_MAX_IRQ_ROUTES),
            SimPhysicalIrqs::new(Rc::clone(&machine)),
        )
        .map_err(SituationError::HostConfig)?;
        let host: SharedHost = Rc::new(RefCell::new(host));
        let guest_device = VM_DEVICE_ID;
        let vm = host
            .borrow_mut()
            .add_vm(HostVmConfig {
                vcpus,
                devices: vec![HostDevice {
                    device_id: guest_device.0,
                    requester_id: DEVICE_RID,
                    source_validation: SourceValidation::RequesterId,
                    storage: StorageSizes {
                        msi_vectors: spec.msi_log2.map_or(0, |l| 1u8 << l.min(5)),
                        msix_entries: spec.msix_entries,
                        ims_device_entries: spec.ims_device_entries,
                        ims_system_entries: 0,
                    },
                }],
                quotas: Quotas {
                    irtes: 8192,
                    vectors: 8192,
                },
                guest_writable: vir_host::GuestWritable::AllRam,
            })
            .map_err(SituationError::HostConfig)?;
        if crate::host_backends::platform_vm(vm) != pvm {
            return Err(SituationError::VmIdMismatch {
                platform: pvm.0,
                host: vm.0,
            });
        }
        host.borrow_mut()
            .set_legacy_config(
                vm,
                LegacyConfig {
                    viommu: true,
                    ext_dest_id: false,
                },
            )
            .map_err(SituationError::Host)?;
        let physical =
            MachineStorage::new(Rc::clone(&machine), BTreeMap::from([(DEVICE_RID, device)]));
        let target = TrapTarget {
            host: Rc::clone(&host),
            vm,
            mem: mem.clone(),
            physical: physical.clone(),
            log: Rc::clone(&log),
        };
        let mut vir = VirDomain::new(transport(&target, &timing));
        let selected = if spec.guest_looks_for_vir {
            Some(select_ir_domain(
                &mut HostCpuid::new(Rc::clone(&host), vm),
                true,
                |_| vir.negotiate(Features::V1_DEFINED),
            ))
        } else {
            None
        };
        let (kind, domain) = match selected {
            Some(IrSituation::Vir(_)) => (SituationKind::Vir, IrDomain::Vir(vir)),
            Some(IrSituation::NoRemapping(r)) => return Err(SituationError::NoRemapping(r)),
            Some(IrSituation::BareMetal) | Some(IrSituation::Emulated(_)) | None => {
                (SituationKind::Emulated, emulated_domain(&target)?)
            }
        };
        let bus = VmmBus::new(
            Rc::clone(&machine),
            Some(target.clone()),
            BTreeMap::from([(guest_device, device)]),
            Rc::clone(&log),
        );
        let guest = IrqSubsystem::new(domain, bus, IrqConfig::new(apic_ids.clone()))
            .map_err(SituationError::GuestConfig)?;
        Ok(Self {
            kind,
            selected,
            machine,
            host: Some((host, vm)),
            device,
            guest_device,
            guest,
            log,
            timing,
            physical: Some(physical),
            target: Some(target),
            apic_ids,
        })
    }

    fn new_guest(&self, domain: SimIrDomain) -> Result<SituationGuest, SituationError> {
        let target = self.target.clone().ok_or(SituationError::BareMetal)?;
        let bus = VmmBus::new(
            Rc::clone(&self.machine),
            Some(target),
            BTreeMap::from([(self.guest_device, self.device)]),
            Rc::clone(&self.log),
        );
        IrqSubsystem::new(domain, bus, IrqConfig::new(self.apic_ids.clone()))
            .map_err(SituationError::GuestConfig)
    }

    /// A kernel with vIR support takes the VM over (kexec): it negotiates on a fresh transport
    /// and, on success, its interrupt subsystem over the vIR domain replaces the current guest,
    /// which should have freed its interrupts and disabled MSI and MSI-X first
    /// (VIR-NEG-G-004; the host refuses otherwise, VIR-NEG-H-004). On failure nothing changes.
    pub fn switch_to_vir(&mut self) -> Result<vir_guest::Session, SwitchError> {
        let target = self.target.clone().ok_or(SwitchError::BareMetal)?;
        let mut d = VirDomain::new(transport(&target, &self.timing));
        let session = d
            .negotiate(Features::V1_DEFINED)
            .map_err(SwitchError::Negotiation)?;
        self.guest = self
            .new_guest(IrDomain::Vir(d))
            .map_err(SwitchError::Situation)?;
        self.kind = SituationKind::Vir;
        Ok(session)
    }

    /// The vIR kernel calls `RESET` and a kernel without vIR support takes the VM over (kexec):
    /// the host is back in the legacy scheme (VIR-RST-H-002), and the new guest programs its
    /// emulated unit and uses it.
    pub fn reset_to_legacy(&mut self) -> Result<(), SwitchError> {
        let target = self.target.clone().ok_or(SwitchError::BareMetal)?;
        vir_guest::hypercall::reset(&mut transport(&target, &self.timing))
            .map_err(|e| SwitchError::Situation(SituationError::Call(e)))?;
        let domain = emulated_domain(&target).map_err(SwitchError::Situation)?;
        self.guest = self.new_guest(domain).map_err(SwitchError::Situation)?;
        self.kind = SituationKind::Emulated;
        Ok(())
    }

    /// The VM's memory (`None` on bare metal).
    pub fn memory(&self) -> Option<&vm_memory::GuestMemoryMmap> {
        self.target.as_ref().map(|t| &t.mem)
    }

    /// The situation the guest is in.
    pub const fn kind(&self) -> SituationKind {
        self.kind
    }

    /// What the guest's boot selected (`None` for a kernel that does not look for vIR).
    pub const fn selected(&self) -> Option<IrSituation> {
        self.selected
    }

    /// The guest.
    pub fn guest(&self) -> &SituationGuest {
        &self.guest
    }

    /// The guest, mutably.
    pub fn guest_mut(&mut self) -> &mut SituationGuest {
        &mut self.guest
    }

    /// The device as the guest names it.
    pub const fn guest_device(&self) -> GuestDeviceId {
        self.guest_device
    }

    /// The machine's device.
    pub const fn device(&self) -> DeviceId {
        self.device
    }

    /// The machine.
    pub fn machine(&self) -> &SharedMachine {
        &self.machine
    }

    /// The host and the VM's id on it (`None` on bare metal).
    pub fn host(&self) -> Option<&(SharedHost, VmId)> {
        self.host.as_ref()
    }

    /// The log of trapped accesses.
    pub fn trap_log(&self) -> TrapLog {
        self.log.borrow().clone()
    }

    /// Writes the host's trap code made to physical storage and the machine refused (0 in a
    /// correct run).
    pub fn physical_anomalies(&self) -> u64 {
        self.physical.as_ref().map_or(0, MachineStorage::anomalies)
    }

    /// The driver disables MSI-X on the device (`pci_free_irq_vectors`).
    pub fn msix_disable(&mut self) -> Result<(), vir_guest::StorageError> {
        let dev = self.guest_device;
        self.guest_storage_mut().msix_disable(dev)
    }

    fn guest_storage_mut(&mut self) -> &mut VmmBus {
        // The subsystem hands its storage out only by value; the bus is reached through the
        // accessor the subsystem offers for exactly this (driver-level device control).
        self.guest.storage_mut()
    }

    /// Costs so far.
    pub fn counts(&self) -> Counts {
        let m = self.machine.borrow();
        let device_writes = m
            .device(self.device)
            .map_or(0, |d| d.total_storage_writes());
        // The VT-d unit's table and, when enabled, the AMD-Vi per-device tables.
        let irte_writes =
            m.iommu().stats().irte_writes + m.amd_iommu().map_or(0, |a| a.stats().irte_writes);
        drop(m);
        let (mut trapped, mut ir_register_exits, mut hypercalls) = (0, 0, 0);
        if let Some((host, vm)) = &self.host
            && let Some(v) = host.borrow().vm(*vm)
        {
            for (kind, w, r) in v.legacy_counters().by_kind() {
                match kind {
                    TrapKind::ViommuIrta
                    | TrapKind::ViommuCommand
                    | TrapKind::ViommuInvalidation => ir_register_exits += w + r,
                    _ => trapped += w + r,
                }
            }
            hypercalls = v.counters().total_calls();
        }
        let (guest_irte_writes, guest_invalidations) = match self.guest.domain() {
            IrDomain::BareMetal(d) => (d.stats().irte_writes, d.stats().invalidations),
            IrDomain::Emulated(d) => (d.stats().irte_writes, d.stats().invalidations),
            IrDomain::Vir(_) => (0, 0),
        };
        let host_time: Duration = self.log.borrow().host_time + self.timing.borrow().time;
        Counts {
            trapped,
            ir_register_exits,
            hypercalls,
            device_writes,
            guest_storage_writes: self.guest.storage_stats().total_writes(),
            irte_writes,
            guest_irte_writes,
            guest_invalidations,
            host_ns: u64::try_from(host_time.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The machine device's source of `irq` (`None` for an irq that is not allocated).
    pub fn source(&self, irq: Irq) -> Option<vir_platform::StorageSlot> {
        let info = self.guest.irq_info(irq)?;
        Some(platform_slot(info.slot, u32::from(info.subhandle)))
    }

    /// The device raises `slot`; the interrupt runs through the platform and the receiving
    /// CPU's guest handles whatever arrived.
    pub fn fire(&mut self, slot: vir_platform::StorageSlot) -> Result<Vec<Arrival>, MachineError> {
        let fired = self.machine.borrow_mut().fire(self.device, slot);
        let outcome = match fired {
            Ok(o) => o,
            // An MSI vector beyond Multiple Message Enable (MSI disabled or fewer vectors
            // enabled): the device cannot raise it.
            Err(MachineError::Device {
                error: vir_platform::device::DeviceError::MsiVectorNotEnabled { .. },
                ..
            }) => FireOutcome::Dropped(DropReason::Disabled),
            Err(e) => return Err(e),
        };
        Ok(self.service(outcome))
    }

    fn service(&mut self, outcome: FireOutcome) -> Vec<Arrival> {
        match outcome {
            FireOutcome::Delivered { vcpu, .. } => self.drain(vcpu),
            FireOutcome::Posted(p) => match p.owner {
                Some(owner) => {
                    // The vCPU processes its posted interrupts (PIR → IRR).
                    let _ = self.machine.borrow_mut().sync_posted(owner);
                    self.drain(owner)
                }
                None => vec![Arrival::Nothing(outcome)],
            },
            // Bare metal: the vector reached a physical CPU that no VFIO IRQ claims — the
            // kernel running there is the guest itself.
            FireOutcome::Dropped(DropReason::NoHostIrq { pcpu, vector })
                if self.kind == SituationKind::BareMetal =>
            {
                match self.guest.cpu_of_apic(pcpu.0) {
                    Some(cpu) => vec![Arrival::Handled {
                        cpu,
                        vector,
                        irq: self.guest.handle_interrupt(cpu, vector),
                    }],
                    None => vec![Arrival::Nothing(outcome)],
                }
            }
            _ => vec![Arrival::Nothing(outcome)],
        }
    }

    /// The vCPU acknowledges, handles and EOIs everything pending in its local APIC.
    fn drain(&mut self, vcpu: VcpuRef) -> Vec<Arrival> {
        let mut out = Vec::new();
        // At most every vector once: bounded whatever the LAPIC holds.
        for _ in 0..256 {
            let acked = self
                .machine
                .borrow_mut()
                .kvm_mut()
                .vcpu_mut(vcpu)
                .ok()
                .and_then(|v| v.lapic_mut().acknowledge());
            let Some(vector) = acked else {
                break;
            };
            if let Some(cpu) = self.guest.cpu_of_apic(vcpu.apic_id.0) {
                out.push(Arrival::Handled {
                    cpu,
                    vector,
                    irq: self.guest.handle_interrupt(cpu, vector),
                });
            }
            if let Ok(v) = self.machine.borrow_mut().kvm_mut().vcpu_mut(vcpu) {
                v.lapic_mut().eoi();
            }
        }
        out
    }

    /// Fires `slot`, the source of `irq` (or of what was `irq`), and judges it: delivered
    /// exactly once, as `irq` on the CPU and vector the guest gave it, if `irq` is requested;
    /// not delivered at all otherwise (not requested, freed).
    pub fn check(
        &mut self,
        irq: Irq,
        slot: vir_platform::StorageSlot,
    ) -> Result<bool, MachineError> {
        let expected = match self.guest.irq_info(irq).map(|i| i.state) {
            Some(IrqState::Active { cpu, vector }) => Some((cpu, vector)),
            _ => None,
        };
        let got = self.fire(slot)?;
        Ok(match expected {
            Some((cpu, vector)) => {
                got == [Arrival::Handled {
                    cpu,
                    vector,
                    irq: Some(irq),
                }]
            }
            None => got.iter().all(|a| matches!(a, Arrival::Nothing(_))),
        })
    }

    /// The VM's platform id (`None` on bare metal).
    pub fn platform_vm(&self) -> Option<vir_platform::VmId> {
        self.host.as_ref().map(|(_, vm)| platform_vm(*vm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_difference_and_exits() {
        let a = Counts {
            trapped: 5,
            ir_register_exits: 2,
            hypercalls: 1,
            host_ns: 10,
            ..Counts::default()
        };
        let b = Counts {
            trapped: 7,
            ir_register_exits: 2,
            hypercalls: 4,
            device_writes: 3,
            host_ns: 25,
            ..Counts::default()
        };
        let d = b.since(&a);
        assert_eq!(
            (d.trapped, d.hypercalls, d.device_writes, d.host_ns),
            (2, 3, 3, 15)
        );
        assert_eq!(d.exits(), 5);
        assert_eq!(a.since(&b).trapped, 0, "saturating");
        assert_eq!(b.without_time().host_ns, 0);
    }

    #[test]
    fn each_kind_boots_into_its_situation() {
        for kind in SituationKind::ALL {
            let spec = SituationSpec {
                vcpus: 2,
                msix_entries: 4,
                ims_device_entries: 0,
                ..SituationSpec::new(kind)
            };
            let vm = SituationVm::build(&spec).unwrap();
            assert_eq!(vm.kind(), kind);
            match (kind, vm.selected()) {
                (SituationKind::BareMetal, Some(IrSituation::BareMetal))
                | (SituationKind::Emulated, Some(IrSituation::Emulated(NoVirReason::NotOffered)))
                | (SituationKind::Vir, Some(IrSituation::Vir(_))) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(vm.host().is_none(), kind == SituationKind::BareMetal);
            assert!(!vm.guest().ims_available() || kind != SituationKind::Emulated);
        }
    }
}

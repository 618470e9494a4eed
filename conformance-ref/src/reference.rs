//! The reference host (`vir-host` with its in-memory backends) as a host under test.
//!
//! [`ReferenceHost`] is the VMM around [`vir_host::Host`]: it owns the guest memory of two VMs
//! (instrumented by [`HookedMemory`]), answers CPUID with the hypervisor bit and a KVM block
//! beside the vIR leaves, turns `VMCALL`/`VMMCALL` exits and port I/O into
//! [`Host::vmcall`](vir_host::Host::vmcall) and [`Host::pio_write`](vir_host::Host::pio_write),
//! and offers every hook of [`HostUnderTest`] by looking at the mock backends.
//!
//! Three things are done here, in the VMM glue, because `vir-host` has no entry point for them:
//! the privilege-level check of the register binding (VIR-REG-H-003: `Host::vmcall` takes no
//! CPL), reads of the doorbell ports and port accesses of other widths (VIR-DB-H-008:
//! `Host::pio_write` takes 32-bit writes only), and advancing `RIP` past the hypercall
//! instruction (VIR-REG-H-002). The checks of those requirements therefore test this adapter as
//! much as `vir-host`.

use std::sync::{Mutex, PoisonError};

use vir_abi::call::{CallCode, decode_rax};
use vir_abi::discovery::{CPUID_RANGE_FIRST, binding};
use vir_abi::hw::ApicMode;
use vir_abi::hw::vtd::Irte;
use vir_abi::status::Status;
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap, GuestMemoryResult,
    Permissions,
};

use vir_abi::hw::msi::MsiMessage;
use vir_host::testing::{Event, Journal, MockDeviceStorage, MockHost, mock_host, mock_state};
use vir_host::{
    AmdIrteFormat, BackendError, BackendOp, DeviceConfig, DeviceStorage, HostConfig, IommuKind,
    IrMode, IrteTable, IrteTableId, MsiRegister, MsixField, Quotas, SourceValidation, StorageSizes,
    TrapError, TrapRead, TrapWrite, VcpuConfig, VmConfig, VmId, X86Regs,
};

use vir_conform::hut::{
    Buffer, CapRegister, Delivery, DeviceFixture, DeviceInterrupts, Fault, Fixture, HarnessError,
    Hook, HostFactory, HostUnderTest, HypercallInsn, IoWidth, IrteFormat, IrteView, MSI_ENABLE,
    MSIX_ENABLE, MemAccess, PhysEvent, Regs, Scope, SetupError, Snapshot, SourceId, Variant,
    VcpuFixture, VmFixture, VmRef,
};

/// KVM's "unknown hypercall" return value (`-KVM_ENOSYS`), what the VMM leaves in `RAX` for a
/// hypercall that is not a vIR call.
pub const KVM_ENOSYS: u64 = (-1000i64) as u64;

/// A pending mutation of [`HookedMemory`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mutation {
    watch: Buffer,
    gpa: u64,
    bytes: Vec<u8>,
    seen_read: bool,
}

/// Guest memory of one VM with the instrumentation the hooks need: a read-only page (ROM), an
/// access log, and a mutation that fires after the host's first read of a watched range.
///
/// Every host access goes through [`GuestMemory::get_slices`], which is where logging and
/// mutation happen; [`HookedMemory::inner`] accesses (the harness's own) are not seen.
#[derive(Debug)]
pub struct HookedMemory {
    inner: GuestMemoryMmap<()>,
    readonly: Option<Buffer>,
    log: Mutex<Option<Vec<MemAccess>>>,
    mutation: Mutex<Option<Mutation>>,
}

impl HookedMemory {
    /// Wrap `inner`, with `readonly` writable by nobody (the host's `check_range` for a write
    /// fails there, and so does any write).
    pub fn new(inner: GuestMemoryMmap<()>, readonly: Option<Buffer>) -> Self {
        HookedMemory {
            inner,
            readonly,
            log: Mutex::new(None),
            mutation: Mutex::new(None),
        }
    }

    /// The memory underneath (accesses through it are not logged).
    pub fn inner(&self) -> &GuestMemoryMmap<()> {
        &self.inner
    }

    /// Start a fresh access log.
    pub fn start_log(&self) {
        *self.log.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    }

    /// The accesses since [`HookedMemory::start_log`] (empty when not started).
    pub fn log(&self) -> Vec<MemAccess> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// After the first host read touching `watch`, write `bytes` at `gpa` before the next host
    /// access touching `watch`.
    pub fn arm_mutation(&self, watch: Buffer, gpa: u64, bytes: &[u8]) {
        *self.mutation.lock().unwrap_or_else(PoisonError::into_inner) = Some(Mutation {
            watch,
            gpa,
            bytes: bytes.to_vec(),
            seen_read: false,
        });
    }

    fn observe(&self, gpa: u64, len: u64, write: bool) {
        if let Some(log) = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            log.push(MemAccess { write, gpa, len });
        }
        let mut m = self.mutation.lock().unwrap_or_else(PoisonError::into_inner);
        let fire = match m.as_mut() {
            Some(x) if x.watch.overlaps(gpa, len) => {
                if x.seen_read {
                    true
                } else {
                    x.seen_read |= !write;
                    false
                }
            }
            _ => false,
        };
        if fire && let Some(x) = m.take() {
            // The harness's own write: not logged, cannot re-enter.
            let _ = self.inner.write_slice(&x.bytes, GuestAddress(x.gpa));
        }
    }

    /// End of a host entry (call, hypercall, port write): a mutation armed before it fires now
    /// if the host read the watched range and it has not fired yet, and is disarmed either way.
    pub fn finish_mutation(&self) {
        let pending = self
            .mutation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(x) = pending
            && x.seen_read
        {
            let _ = self.inner.write_slice(&x.bytes, GuestAddress(x.gpa));
        }
    }

    fn in_readonly(&self, gpa: u64, len: u64) -> bool {
        self.readonly.is_some_and(|r| r.overlaps(gpa, len))
    }
}

impl GuestMemory for HookedMemory {
    type PhysicalMemory = GuestMemoryMmap<()>;
    type Bitmap = <GuestMemoryMmap<()> as GuestMemory>::Bitmap;

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        if access.has_write() && self.in_readonly(addr.0, count as u64) {
            return false;
        }
        self.inner.check_range(addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, Self::Bitmap>>> {
        let write = access.has_write();
        if count != 0 {
            self.observe(addr.0, count as u64, write);
        }
        if write && self.in_readonly(addr.0, count as u64) {
            return Err(GuestMemoryError::InvalidGuestAddress(addr));
        }
        self.inner.get_slices(addr, count, access)
    }
}

/// How the reference host is configured: its delivery mode and APIC mode, and optionally a
/// host-level variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReferenceConfig {
    /// Posted or remapped IRTEs.
    pub ir_mode: IrMode,
    /// Destination format of remapped IRTEs.
    pub apic_mode: ApicMode,
    /// The IOMMU (AMD-Vi: per-device tables; posted mode is guest virtual APIC mode with one
    /// 4 KiB vAPIC backing page per vCPU).
    pub iommu: IommuKind,
}

impl Default for ReferenceConfig {
    /// Posted mode, x2APIC, VT-d.
    fn default() -> Self {
        ReferenceConfig {
            ir_mode: IrMode::Posted,
            apic_mode: ApicMode::X2Apic,
            iommu: IommuKind::Vtd,
        }
    }
}

/// Distance between the vCPUs' posted descriptors (VT-d, 64 bytes) or vAPIC backing pages
/// (AMD-Vi, 4 KiB).
fn pda_stride(iommu: IommuKind) -> u64 {
    match iommu {
        IommuKind::Vtd => 64,
        IommuKind::AmdVi(_) => 0x1000,
    }
}

/// Size of the shared physical remapping table of the reference fixture.
pub const TABLE_SIZE: u32 = 128;
/// Physical CPUs of the reference host.
pub const PCPUS: u32 = 4;
/// Host vectors per physical CPU.
pub const VECTORS_PER_PCPU: u32 = 200;

/// Guest RAM of each reference VM: `[0, 2 MiB)` and `[3 MiB, 4 MiB)`, a hole between.
const RAM: [(u64, usize); 2] = [(0, 0x20_0000), (0x30_0000, 0x10_0000)];
/// A GPA in the hole.
const HOLE: u64 = 0x20_0000;
/// The read-only page (ROM) of each VM.
const ROM: u64 = 0x3f_f000;
/// Scratch pages of each VM.
const SCRATCH: u64 = 0x10_0000;
/// Port ranges of other devices of each VM (serial port, PCI configuration mechanism).
const PORTS_IN_USE: [(u16, u16); 2] = [(0x3f8, 0x3ff), (0xcf8, 0xcff)];

struct VmSpec {
    config: VmConfig,
}

/// What the guest can write, as a VMM tells the host: the RAM without the ROM page.
fn guest_writable() -> vir_host::GuestWritable {
    let [(low, low_len), (high, _)] = RAM;
    vir_host::GuestWritable::Ranges(vec![
        vir_host::GpaRange {
            start: low,
            len: low_len as u64,
        },
        vir_host::GpaRange {
            start: high,
            len: ROM - high,
        },
    ])
}

fn primary_spec(stride: u64) -> VmSpec {
    let vcpus = [0u32, 2, 5, 8]
        .iter()
        .enumerate()
        .map(|(i, &apic_id)| VcpuConfig {
            apic_id,
            pda: 0x10_0000 + stride * i as u64,
            pcpu: i as u32 % PCPUS,
        })
        .collect();
    VmSpec {
        config: VmConfig {
            vcpus,
            devices: vec![
                DeviceConfig {
                    device_id: 0x0000_0300,
                    requester_id: 0x8100,
                    source_validation: SourceValidation::RequesterId,
                    storage: StorageSizes {
                        msi_vectors: 8,
                        msix_entries: 64,
                        ims_device_entries: 16,
                        ims_system_entries: 64,
                    },
                },
                DeviceConfig {
                    device_id: 0x0000_0400,
                    requester_id: 0x8400,
                    source_validation: SourceValidation::BusRange {
                        start_bus: 0x84,
                        end_bus: 0x85,
                    },
                    storage: StorageSizes {
                        msi_vectors: 32,
                        msix_entries: 8,
                        ..StorageSizes::default()
                    },
                },
            ],
            quotas: Quotas {
                irtes: 64,
                vectors: 8,
            },
            guest_writable: guest_writable(),
        },
    }
}

fn secondary_spec(stride: u64) -> VmSpec {
    let vcpus = [1u32, 3]
        .iter()
        .enumerate()
        .map(|(i, &apic_id)| VcpuConfig {
            apic_id,
            pda: 0x20_0000 + stride * i as u64,
            pcpu: 1 + i as u32,
        })
        .collect();
    VmSpec {
        config: VmConfig {
            vcpus,
            devices: vec![DeviceConfig {
                device_id: 0x0000_0500,
                requester_id: 0x9000,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msi_vectors: 4,
                    msix_entries: 128,
                    ..StorageSizes::default()
                },
            }],
            quotas: Quotas {
                irtes: 96,
                vectors: 8,
            },
            guest_writable: guest_writable(),
        },
    }
}

fn vm_fixture(c: &VmConfig) -> VmFixture {
    VmFixture {
        vcpus: c
            .vcpus
            .iter()
            .map(|v| VcpuFixture {
                apic_id: v.apic_id,
                posted_descriptor: Some(v.pda),
            })
            .collect(),
        devices: c
            .devices
            .iter()
            .map(|d| DeviceFixture {
                device_id: d.device_id,
                msi_vectors: d.storage.msi_vectors,
                msix_entries: d.storage.msix_entries,
                ims_device_entries: d.storage.ims_device_entries,
                ims_system_entries: d.storage.ims_system_entries,
                source: Some(match d.source_validation {
                    SourceValidation::RequesterId => SourceId::RequesterId(d.requester_id),
                    SourceValidation::BusRange { start_bus, end_bus } => {
                        SourceId::BusRange { start_bus, end_bus }
                    }
                }),
            })
            .collect(),
        emulated_devices: Vec::new(),
        irte_quota: c.quotas.irtes,
        vector_quota: c.quotas.vectors,
        scratch: SCRATCH,
        unbacked_gpa: Some(HOLE),
        readonly_gpa: Some(ROM),
        io_ports_in_use: PORTS_IN_USE.to_vec(),
    }
}

/// Why the reference host could not be built.
#[derive(Debug)]
pub enum ReferenceSetupError {
    /// The host or a VM configuration was rejected.
    Config(vir_host::ConfigError),
    /// Guest RAM could not be mapped.
    Memory(vm_memory::mmap::FromRangesError),
}

impl std::fmt::Display for ReferenceSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "reference host configuration rejected: {e}"),
            Self::Memory(e) => write!(f, "cannot map guest RAM: {e}"),
        }
    }
}

impl std::error::Error for ReferenceSetupError {}

/// The reference host with two VMs, as a [`HostUnderTest`].
pub struct ReferenceHost {
    host: MockHost,
    journal: Journal,
    journal_mark: Option<usize>,
    ids: [VmId; 2],
    mem: [HookedMemory; 2],
    fixture: Fixture,
    name: String,
    storage: MockDeviceStorage,
    requester_ids: [Vec<(u32, u16)>; 2],
}

impl std::fmt::Debug for ReferenceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceHost")
            .field("name", &self.name)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ReferenceHost {
    /// What an AMD-Vi IOMMU does with a device write reaching entry `raw` of its table.
    fn amd_delivery(&self, format: AmdIrteFormat, raw: u128) -> Option<Delivery> {
        use vir_abi::hw::amd::{AmdIrte32Entry, AmdIrte128};
        let (dest, vector) = match format {
            AmdIrteFormat::Bits32 => {
                let e = AmdIrte32Entry::decode(u32::try_from(raw).ok()?).ok()?;
                if !e.remap_en {
                    return None;
                }
                (u32::from(e.destination), e.vector)
            }
            AmdIrteFormat::Bits128 => match AmdIrte128::decode(raw).ok()? {
                AmdIrte128::Guest(g) => {
                    if !g.remap_en {
                        return None;
                    }
                    // The backing page names the vCPU (of whichever VM owns it).
                    return self.host.vm_ids().into_iter().find_map(|other| {
                        let ov = self.host.vm(other)?;
                        let c = ov.config().vcpus.iter().find(|c| c.pda == g.backing_page)?;
                        Some(Delivery {
                            vm: self.vm_ref(other),
                            apic_id: c.apic_id,
                            vector: g.vector,
                        })
                    });
                }
                AmdIrte128::Remapped(r) => {
                    if !r.remap_en {
                        return None;
                    }
                    (r.destination, r.vector)
                }
            },
        };
        let irqs = self.host.irqs().irqs();
        let irq = irqs
            .values()
            .find(|i| i.vector.apic_id == dest && i.vector.vector == vector)?;
        self.host
            .routing()
            .route(irq.vm, irq.gsi)
            .map(|t| Delivery {
                vm: self.vm_ref(irq.vm),
                apic_id: t.apic_id,
                vector: t.vector,
            })
    }

    /// Build the reference fixture: a host with a 128-entry table, four physical CPUs and two
    /// VMs (the primary with four vCPUs, two devices, 64 IRTEs and 8 vectors; the secondary with
    /// two vCPUs, one device, 96 IRTEs and 8 vectors), optionally in a host variant.
    pub fn new(
        config: ReferenceConfig,
        variant: Option<Variant>,
    ) -> Result<Self, ReferenceSetupError> {
        let host_config = HostConfig {
            ir_mode: config.ir_mode,
            apic_mode: config.apic_mode,
            iommu: config.iommu,
            physical_ir_enabled: variant != Some(Variant::PhysicalIrDisabled),
            compat_format_blocked: variant != Some(Variant::CompatFormatAllowed),
            ..HostConfig::default()
        };
        let (mut host, journal) = mock_host(host_config, TABLE_SIZE, PCPUS, VECTORS_PER_PCPU)
            .map_err(ReferenceSetupError::Config)?;
        let stride = pda_stride(config.iommu);
        let (p, s) = (primary_spec(stride), secondary_spec(stride));
        let amd = matches!(config.iommu, IommuKind::AmdVi(_));
        let fixture = Fixture {
            primary: vm_fixture(&p.config),
            secondary: Some(vm_fixture(&s.config)),
            // AMD-Vi has no table shared by the VMs: each device has its own.
            shared_table_free: (!amd).then_some(TABLE_SIZE),
            irte_format: Some(if amd {
                IrteFormat::AmdVi
            } else {
                IrteFormat::Vtd(config.apic_mode)
            }),
        };
        let rids = |c: &VmConfig| -> Vec<(u32, u16)> {
            c.devices
                .iter()
                .map(|d| (d.device_id, d.requester_id))
                .collect()
        };
        let requester_ids = [rids(&p.config), rids(&s.config)];
        let a = host.add_vm(p.config).map_err(ReferenceSetupError::Config)?;
        let b = host.add_vm(s.config).map_err(ReferenceSetupError::Config)?;
        let ram = || {
            let ranges: Vec<_> = RAM.iter().map(|&(g, l)| (GuestAddress(g), l)).collect();
            GuestMemoryMmap::from_ranges(&ranges).map_err(ReferenceSetupError::Memory)
        };
        let rom = Some(Buffer::new(ROM, 0x1000));
        let mode = match config.ir_mode {
            IrMode::Posted => "posted",
            IrMode::Remapped => "remapped",
        };
        let apic = match config.apic_mode {
            ApicMode::X2Apic => "x2APIC",
            ApicMode::XApic => "xAPIC",
        };
        let mut name = match config.iommu {
            IommuKind::Vtd => format!("reference ({mode}, {apic})"),
            IommuKind::AmdVi(_) => format!("reference ({mode}, {apic}, AMD-Vi)"),
        };
        if let Some(v) = variant {
            name.push_str(&format!(" variant {v:?}"));
        }
        Ok(ReferenceHost {
            host,
            journal,
            journal_mark: None,
            ids: [a, b],
            mem: [
                HookedMemory::new(ram()?, rom),
                HookedMemory::new(ram()?, rom),
            ],
            fixture,
            name,
            storage: MockDeviceStorage::new(),
            requester_ids,
        })
    }

    /// The `vir-host` host inside.
    pub fn host(&self) -> &MockHost {
        &self.host
    }

    /// The `vir-host` host inside, mutably.
    pub fn host_mut(&mut self) -> &mut MockHost {
        &mut self.host
    }

    /// The host's id of a fixture VM.
    pub fn vm_id(&self, vm: VmRef) -> VmId {
        match vm {
            VmRef::Primary => self.ids[0],
            VmRef::Secondary => self.ids[1],
        }
    }

    /// The guest memory of a fixture VM.
    pub fn memory(&self, vm: VmRef) -> &HookedMemory {
        match vm {
            VmRef::Primary => &self.mem[0],
            VmRef::Secondary => &self.mem[1],
        }
    }

    fn vm_ref(&self, id: VmId) -> Option<VmRef> {
        if id == self.ids[0] {
            Some(VmRef::Primary)
        } else if id == self.ids[1] {
            Some(VmRef::Secondary)
        } else {
            None
        }
    }

    fn map_host_error(vm: VmRef, e: vir_host::HostError) -> HarnessError {
        match e {
            vir_host::HostError::UnknownVm(_) => HarnessError::UnknownVm(vm),
            vir_host::HostError::UnknownVcpu { vcpu_index, .. } => HarnessError::UnknownVcpu {
                vm,
                vcpu: vcpu_index,
            },
        }
    }

    /// The physical requester id of a fixture device.
    fn requester_id(&self, vm: VmRef, device_id: u32) -> Result<u16, HarnessError> {
        let list = match vm {
            VmRef::Primary => &self.requester_ids[0],
            VmRef::Secondary => &self.requester_ids[1],
        };
        list.iter()
            .find(|(d, _)| *d == device_id)
            .map(|(_, r)| *r)
            .ok_or(HarnessError::UnknownDevice { vm, device_id })
    }

    fn map_trap_error(
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
        e: TrapError,
    ) -> HarnessError {
        match e {
            TrapError::UnknownVm(_) => HarnessError::UnknownVm(vm),
            TrapError::UnknownDevice { .. } => HarnessError::UnknownDevice { vm, device_id },
            TrapError::NoMsi(_)
            | TrapError::NoMsix(_)
            | TrapError::MsixIndexOutOfRange { .. }
            | TrapError::MsixNotTrapped { .. }
            | TrapError::NoViommu(_) => HarnessError::NoRegister {
                vm,
                device_id,
                register,
            },
        }
    }

    /// Whether MSI-X table accesses of `vm` are trapped (otherwise the table is mapped and the
    /// guest's accesses reach the device).
    fn msix_is_trapped(&self, vm: VmRef) -> Result<bool, HarnessError> {
        self.host
            .vm(self.vm_id(vm))
            .map(|v| v.msix_trapped())
            .ok_or(HarnessError::UnknownVm(vm))
    }

    fn msix_entries(&self, vm: VmRef, device_id: u32) -> u32 {
        self.fixture
            .vm(vm)
            .and_then(|f| f.devices.iter().find(|d| d.device_id == device_id))
            .map_or(0, |d| d.msix_entries)
    }

    fn device_known(&self, vm: VmRef, device_id: u32) -> Result<(), HarnessError> {
        let known = self
            .fixture
            .vm(vm)
            .is_some_and(|v| v.devices.iter().any(|d| d.device_id == device_id));
        if known {
            Ok(())
        } else {
            Err(HarnessError::UnknownDevice { vm, device_id })
        }
    }

    fn vm_components(&self, vm: VmRef, out: &mut Snapshot) -> Result<(), HarnessError> {
        let id = self.vm_id(vm);
        let s = self
            .host
            .snapshot(id)
            .map_err(|e| Self::map_host_error(vm, e))?;
        let m = mock_state(&self.host);
        let p = match vm {
            VmRef::Primary => "primary",
            VmRef::Secondary => "secondary",
        };
        let mut put = |k: &str, v: String| {
            out.0.insert(format!("{p}.{k}"), v);
        };
        put(
            "vir_state",
            format!(
                "{:?} session {} legacy {}",
                s.state, s.session, s.legacy_interrupts_enabled
            ),
        );
        put("handles", format!("{:?}", s.handles));
        put("storage_slots", format!("{:?}", s.storage_slots));
        put(
            "quota_use",
            format!("irtes {} vectors {}", s.irtes_used, s.vectors_used),
        );
        put("irtes", format!("{:?}", s.irtes));
        put(
            "emulation",
            format!("{:?} {:?} {:?}", s.emulated_msi, s.emulated_msix, s.viommu),
        );
        let routes: Vec<_> = m.routes.iter().filter(|((v, _), _)| *v == id).collect();
        put("routes", format!("{routes:?}"));
        let irqs: Vec<_> = m.irqs.iter().filter(|(_, i)| i.vm == id).collect();
        put("host_irqs", format!("{irqs:?}"));
        Ok(())
    }
}

impl HostUnderTest for ReferenceHost {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn fixture(&self) -> &Fixture {
        &self.fixture
    }

    fn call(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        code: CallCode,
        request: Buffer,
        response: Buffer,
    ) -> Result<Status, HarnessError> {
        let n = self.fixture.vm(vm).map_or(0, |v| v.vcpus.len());
        if vcpu as usize >= n {
            return Err(HarnessError::UnknownVcpu { vm, vcpu });
        }
        let id = self.vm_id(vm);
        let Self { host, mem, .. } = self;
        let mem = match vm {
            VmRef::Primary => &mem[0],
            VmRef::Secondary => &mem[1],
        };
        let r = host
            .handle_call(
                id,
                mem,
                code,
                request.gpa,
                request.len,
                response.gpa,
                response.len,
            )
            .map_err(|e| Self::map_host_error(vm, e));
        mem.finish_mutation();
        r
    }

    fn hypercall(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        insn: HypercallInsn,
        cpl: u8,
        regs: &mut Regs,
    ) -> Result<(), HarnessError> {
        let bit = match insn {
            HypercallInsn::Vmcall => binding::VMCALL,
            HypercallInsn::Vmmcall => binding::VMMCALL,
        };
        if self.host.config().register_bindings & bit == 0 {
            return Err(HarnessError::Unsupported(Hook::Instruction(insn)));
        }
        let id = self.vm_id(vm);
        if cpl != 0 {
            // VIR-REG-H-003, in the VMM glue: vir-host's vmcall() has no CPL parameter. KVM
            // refuses hypercalls from user mode before any handler runs.
            if decode_rax(regs.rax).is_some() && self.host.vir_available() {
                regs.rax = u64::from(Status::UNKNOWN_CALL.0);
            } else {
                regs.rax = KVM_ENOSYS;
            }
            regs.rip = regs.rip.wrapping_add(HypercallInsn::LEN);
            return Ok(());
        }
        let mut x = X86Regs {
            rax: regs.rax,
            rbx: regs.rbx,
            rcx: regs.rcx,
            rdx: regs.rdx,
            rsi: regs.rsi,
            rdi: regs.rdi,
        };
        let Self { host, mem, .. } = self;
        let mem = match vm {
            VmRef::Primary => &mem[0],
            VmRef::Secondary => &mem[1],
        };
        let handled = host.vmcall(id, vcpu, &mut x, mem);
        mem.finish_mutation();
        let handled = handled.map_err(|e| Self::map_host_error(vm, e))?;
        if handled {
            regs.rax = x.rax;
            regs.rbx = x.rbx;
            regs.rcx = x.rcx;
            regs.rdx = x.rdx;
            regs.rsi = x.rsi;
            regs.rdi = x.rdi;
        } else {
            regs.rax = KVM_ENOSYS;
        }
        regs.rip = regs.rip.wrapping_add(HypercallInsn::LEN);
        Ok(())
    }

    fn pio_write(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        port: u16,
        width: IoWidth,
        value: u32,
    ) -> Result<(), HarnessError> {
        let n = self.fixture.vm(vm).map_or(0, |v| v.vcpus.len());
        if vcpu as usize >= n {
            return Err(HarnessError::UnknownVcpu { vm, vcpu });
        }
        if width != IoWidth::Dword {
            // VIR-DB-H-008 for other widths, in the VMM glue (vir-host takes 32-bit writes).
            return Ok(());
        }
        let id = self.vm_id(vm);
        let Self { host, mem, .. } = self;
        let mem = match vm {
            VmRef::Primary => &mem[0],
            VmRef::Secondary => &mem[1],
        };
        let r = host.pio_write(id, vcpu, port, value, mem);
        mem.finish_mutation();
        r.map(|_| ()).map_err(|e| Self::map_host_error(vm, e))
    }

    fn pio_read(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        _port: u16,
        width: IoWidth,
    ) -> Result<u32, HarnessError> {
        let n = self.fixture.vm(vm).map_or(0, |v| v.vcpus.len());
        if vcpu as usize >= n {
            return Err(HarnessError::UnknownVcpu { vm, vcpu });
        }
        // VIR-DB-H-008 (reads of the claimed ports), in the VMM glue: vir-host has no read entry
        // point. Nothing else of this model decodes ports, so every read floats high.
        Ok(width.all_ones())
    }

    fn cpuid(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        leaf: u32,
        _subleaf: u32,
    ) -> Result<[u32; 4], HarnessError> {
        let n = self.fixture.vm(vm).map_or(0, |v| v.vcpus.len());
        if vcpu as usize >= n {
            return Err(HarnessError::UnknownVcpu { vm, vcpu });
        }
        let id = self.vm_id(vm);
        if let Some(regs) = self
            .host
            .cpuid(id, leaf)
            .map_err(|e| Self::map_host_error(vm, e))?
        {
            return Ok(regs);
        }
        Ok(match leaf {
            0 => [1, 0, 0, 0],
            // The hypervisor bit (VIR-DISC-H-003), set by the VMM's CPUID model.
            1 => [0, 0, vir_abi::discovery::CPUID1_ECX_HYPERVISOR, 0],
            // KVM's own block at the first base, as a VMM on KVM exposes it.
            CPUID_RANGE_FIRST => [
                CPUID_RANGE_FIRST + 1,
                u32::from_le_bytes(*b"KVMK"),
                u32::from_le_bytes(*b"VMKV"),
                u32::from_le_bytes(*b"M\0\0\0"),
            ],
            _ => [0; 4],
        })
    }

    fn read_guest(&mut self, vm: VmRef, gpa: u64, buf: &mut [u8]) -> Result<(), HarnessError> {
        self.memory(vm)
            .inner()
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| HarnessError::GuestMemory {
                vm,
                gpa,
                len: buf.len() as u64,
            })
    }

    fn write_guest(&mut self, vm: VmRef, gpa: u64, bytes: &[u8]) -> Result<(), HarnessError> {
        self.memory(vm)
            .inner()
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| HarnessError::GuestMemory {
                vm,
                gpa,
                len: bytes.len() as u64,
            })
    }

    fn reset_vm(&mut self, vm: VmRef) -> Result<(), HarnessError> {
        let id = self.vm_id(vm);
        self.host
            .reset_vm(id)
            .map_err(|e| Self::map_host_error(vm, e))
    }

    fn snapshot(&mut self, scope: Scope) -> Result<Snapshot, HarnessError> {
        let mut out = Snapshot::default();
        match scope {
            Scope::Vm(vm) => self.vm_components(vm, &mut out)?,
            Scope::Host => {
                self.vm_components(VmRef::Primary, &mut out)?;
                self.vm_components(VmRef::Secondary, &mut out)?;
                let m = mock_state(&self.host);
                out.0
                    .insert("host.table_entries".into(), format!("{:?}", m.irtes));
                // AMD-Vi: the per-device tables (empty on VT-d).
                out.0.insert(
                    "host.device_table_entries".into(),
                    format!("{:?}", m.device_irtes),
                );
                out.0
                    .insert("host.cpu_vectors".into(), format!("{:?}", m.vectors));
                out.0
                    .insert("host.table_free".into(), self.host.table_free().to_string());
            }
        }
        Ok(out)
    }

    fn irte(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<IrteView>, HarnessError> {
        let id = self.vm_id(vm);
        let v = self.host.vm(id).ok_or(HarnessError::UnknownVm(vm))?;
        let Some(a) = v.allocation(handle) else {
            return Ok(None);
        };
        if u32::from(subhandle) >= a.count() {
            return Ok(None);
        }
        let index = a.base + u32::from(subhandle);
        Ok(self
            .host
            .table()
            .read(a.table, index)
            .map(|raw| IrteView { index, raw }))
    }

    fn present_irtes(&mut self) -> Result<Vec<IrteView>, HarnessError> {
        // Every table: the unit's (VT-d) and each device's (AMD-Vi); bit 0 is P / RemapEn.
        let t = self.host.table();
        Ok(t.tables()
            .flat_map(|id| t.table_entries(id).iter().enumerate())
            .filter(|(_, e)| *e & 1 == 1)
            .map(|(i, &raw)| IrteView {
                index: i as u32,
                raw,
            })
            .collect())
    }

    fn delivery(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<Delivery>, HarnessError> {
        let id = self.vm_id(vm);
        let v = self.host.vm(id).ok_or(HarnessError::UnknownVm(vm))?;
        let Some(a) = v.allocation(handle) else {
            return Ok(None);
        };
        if u32::from(subhandle) >= a.count() {
            return Ok(None);
        }
        let Some(dev) = v.device(a.device_id) else {
            return Ok(None);
        };
        let Some(raw) = self
            .host
            .table()
            .read(a.table, a.base + u32::from(subhandle))
        else {
            return Ok(None);
        };
        if let IommuKind::AmdVi(c) = self.host.config().iommu {
            // The IOMMU looks the write up in the device's own table: the entry is there or
            // the device cannot reach it.
            if a.table != IrteTableId::Device(dev.requester_id) {
                return Ok(None);
            }
            return Ok(self.amd_delivery(c.irte_format, raw));
        }
        // What the IOMMU does with the device's write: decode, present, source check.
        let Ok(irte) = Irte::decode(raw, self.host.config().apic_mode) else {
            return Ok(None);
        };
        if !irte.present() || !irte.sid_matches(dev.requester_id) {
            return Ok(None);
        }
        match irte {
            Irte::Posted(p) => {
                // The descriptor names the vCPU (of whichever VM owns it).
                for other in self.host.vm_ids() {
                    let Some(ov) = self.host.vm(other) else {
                        continue;
                    };
                    if let Some(c) = ov.config().vcpus.iter().find(|c| c.pda == p.pda) {
                        return Ok(Some(Delivery {
                            vm: self.vm_ref(other),
                            apic_id: c.apic_id,
                            vector: p.vector,
                        }));
                    }
                }
                Ok(None)
            }
            Irte::Remapped(r) => {
                // Host vector on a host CPU → the host IRQ firing there → its irqfd's route.
                let irqs = self.host.irqs().irqs();
                let Some(irq) = irqs
                    .values()
                    .find(|i| i.vector.apic_id == r.dest && i.vector.vector == r.vector)
                else {
                    return Ok(None);
                };
                Ok(self
                    .host
                    .routing()
                    .route(irq.vm, irq.gsi)
                    .map(|t| Delivery {
                        vm: self.vm_ref(irq.vm),
                        apic_id: t.apic_id,
                        vector: t.vector,
                    }))
            }
        }
    }

    fn start_access_log(&mut self, vm: VmRef) -> Result<(), HarnessError> {
        self.memory(vm).start_log();
        Ok(())
    }

    fn take_access_log(&mut self, vm: VmRef) -> Result<Vec<MemAccess>, HarnessError> {
        Ok(self.memory(vm).log())
    }

    fn mutate_after_first_read(
        &mut self,
        vm: VmRef,
        watch: Buffer,
        gpa: u64,
        bytes: &[u8],
    ) -> Result<(), HarnessError> {
        self.memory(vm).arm_mutation(watch, gpa, bytes);
        Ok(())
    }

    fn inject_failure(&mut self, fault: Fault) -> Result<(), HarnessError> {
        let os = |op, errno| BackendError::Os { op, errno };
        match fault {
            Fault::RouteAdd => self.host.routing_mut().fail_next(
                BackendOp::AddRoute,
                1,
                os(BackendOp::AddRoute, 12),
            ),
            Fault::RouteUpdate => self.host.routing_mut().fail_next(
                BackendOp::UpdateRoute,
                1,
                os(BackendOp::UpdateRoute, 12),
            ),
            Fault::IrqStart => {
                self.host
                    .irqs_mut()
                    .fail_next(BackendOp::StartIrq, 1, os(BackendOp::StartIrq, 5))
            }
            Fault::IrqStartNoVector => self.host.irqs_mut().fail_next(
                BackendOp::StartIrq,
                1,
                BackendError::VectorsExhausted { cpu: 0 },
            ),
            Fault::IrqMove => self.host.irqs_mut().fail_next(
                BackendOp::PrepareAffinity,
                1,
                os(BackendOp::PrepareAffinity, 16),
            ),
        }
        Ok(())
    }

    fn start_physical_log(&mut self) -> Result<(), HarnessError> {
        self.journal_mark = Some(self.journal.events().len());
        Ok(())
    }

    fn take_physical_log(&mut self) -> Result<Vec<PhysEvent>, HarnessError> {
        let events = self.journal.events();
        let from = self.journal_mark.unwrap_or(events.len()).min(events.len());
        Ok(events[from..]
            .iter()
            .filter_map(|e| match *e {
                Event::IrteWrite { index, entry, .. } => Some(PhysEvent::IrteWritten {
                    index,
                    present: entry & 1 == 1,
                }),
                Event::AddRoute { vm, .. } => Some(PhysEvent::RouteAdded(self.vm_ref(vm))),
                Event::UpdateRoute { vm, .. } => Some(PhysEvent::RouteUpdated(self.vm_ref(vm))),
                Event::RemoveRoute { vm, .. } => Some(PhysEvent::RouteRemoved(self.vm_ref(vm))),
                Event::StartIrq { vm, .. } => Some(PhysEvent::IrqStarted(self.vm_ref(vm))),
                Event::StopIrq { .. } => Some(PhysEvent::IrqStopped),
                Event::PrepareAffinity { .. }
                | Event::CommitAffinity { .. }
                | Event::AbortAffinity { .. } => Some(PhysEvent::IrqMoved),
                Event::Failed { .. } => None,
            })
            .collect())
    }

    fn set_legacy_interrupt(
        &mut self,
        vm: VmRef,
        device_id: u32,
        enabled: bool,
    ) -> Result<(), HarnessError> {
        // Through the trapped capability, as the guest enables it.
        self.device_known(vm, device_id)?;
        if self.msix_entries(vm, device_id) > 0 {
            let v = if enabled { MSIX_ENABLE } else { 0 };
            self.config_write(vm, device_id, CapRegister::MsixControl, v)
        } else {
            let v = if enabled { MSI_ENABLE } else { 0 };
            self.config_write(vm, device_id, CapRegister::MsiControl, v)
        }
    }

    fn msix_trapped(&mut self, vm: VmRef, device_id: u32) -> Result<bool, HarnessError> {
        self.device_known(vm, device_id)?;
        self.msix_is_trapped(vm)
    }

    fn config_write(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
        value: u32,
    ) -> Result<(), HarnessError> {
        let rid = self.requester_id(vm, device_id)?;
        let no_register = HarnessError::NoRegister {
            vm,
            device_id,
            register,
        };
        let write = match register {
            CapRegister::MsiControl => TrapWrite::Msi(MsiRegister::Control(value as u16)),
            CapRegister::MsiAddressLo => TrapWrite::Msi(MsiRegister::AddressLo(value)),
            CapRegister::MsiAddressHi => TrapWrite::Msi(MsiRegister::AddressHi(value)),
            CapRegister::MsiData => TrapWrite::Msi(MsiRegister::Data(value as u16)),
            CapRegister::MsiMaskBits => TrapWrite::Msi(MsiRegister::MaskBits(value)),
            CapRegister::MsixControl => TrapWrite::MsixControl(value as u16),
            CapRegister::MsixEntry { index, offset } => {
                let field = MsixField::from_offset(offset).ok_or(no_register)?;
                if index >= self.msix_entries(vm, device_id) {
                    return Err(no_register);
                }
                if !self.msix_is_trapped(vm)? {
                    // The table is mapped into the guest: the write reaches the device.
                    let (m, _) = self.storage.device(rid).msix_entry(index);
                    match field {
                        MsixField::AddressLo => self.storage.write_msix_message(
                            rid,
                            index,
                            MsiMessage::new(value, m.address_hi, m.data),
                        ),
                        MsixField::AddressHi => self.storage.write_msix_message(
                            rid,
                            index,
                            MsiMessage::new(m.address_lo, value, m.data),
                        ),
                        MsixField::Data => self.storage.write_msix_message(
                            rid,
                            index,
                            MsiMessage::new(m.address_lo, m.address_hi, value),
                        ),
                        MsixField::VectorControl => {
                            self.storage.set_msix_masked(rid, index, value & 1 == 1)
                        }
                    }
                    return Ok(());
                }
                TrapWrite::MsixEntry {
                    index,
                    field,
                    value,
                }
            }
        };
        let id = self.vm_id(vm);
        let Self {
            host, mem, storage, ..
        } = self;
        let mem = match vm {
            VmRef::Primary => &mem[0],
            VmRef::Secondary => &mem[1],
        };
        host.trap_write(id, device_id, write, mem, storage)
            .map(|_| ())
            .map_err(|e| Self::map_trap_error(vm, device_id, register, e))
    }

    fn config_read(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
    ) -> Result<u32, HarnessError> {
        let rid = self.requester_id(vm, device_id)?;
        let no_register = HarnessError::NoRegister {
            vm,
            device_id,
            register,
        };
        let read = match register {
            CapRegister::MsiControl => TrapRead::MsiControl,
            CapRegister::MsiAddressLo => TrapRead::MsiAddressLo,
            CapRegister::MsiAddressHi => TrapRead::MsiAddressHi,
            CapRegister::MsiData => TrapRead::MsiData,
            CapRegister::MsiMaskBits => TrapRead::MsiMaskBits,
            CapRegister::MsixControl => TrapRead::MsixControl,
            CapRegister::MsixEntry { index, offset } => {
                let field = MsixField::from_offset(offset).ok_or(no_register)?;
                if index >= self.msix_entries(vm, device_id) {
                    return Err(no_register);
                }
                if !self.msix_is_trapped(vm)? {
                    let (m, masked) = self.storage.device(rid).msix_entry(index);
                    return Ok(match field {
                        MsixField::AddressLo => m.address_lo,
                        MsixField::AddressHi => m.address_hi,
                        MsixField::Data => m.data,
                        MsixField::VectorControl => u32::from(masked),
                    });
                }
                TrapRead::MsixEntry { index, field }
            }
        };
        let id = self.vm_id(vm);
        self.host
            .trap_read(id, device_id, read)
            .map_err(|e| Self::map_trap_error(vm, device_id, register, e))
    }

    fn device_interrupts(
        &mut self,
        vm: VmRef,
        device_id: u32,
    ) -> Result<DeviceInterrupts, HarnessError> {
        let d = self.storage.device(self.requester_id(vm, device_id)?);
        Ok(DeviceInterrupts {
            msi_enabled: d.msi_enabled,
            msi_mme: d.msi_mme,
            msi_address: d.msi_message.address(),
            msi_data: d.msi_message.data,
            msix_enabled: d.msix_enabled,
            msix_function_mask: d.msix_function_mask,
        })
    }
}

/// Creates [`ReferenceHost`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReferenceFactory {
    /// The configuration of every host created.
    pub config: ReferenceConfig,
}

impl ReferenceFactory {
    /// A factory for hosts in `config`.
    pub fn new(config: ReferenceConfig) -> Self {
        ReferenceFactory { config }
    }
}

impl HostFactory for ReferenceFactory {
    fn name(&self) -> String {
        match ReferenceHost::new(self.config, None) {
            Ok(h) => h.name,
            Err(_) => "reference".to_string(),
        }
    }

    fn create(&mut self) -> Result<Box<dyn HostUnderTest>, SetupError> {
        ReferenceHost::new(self.config, None)
            .map(|h| Box::new(h) as Box<dyn HostUnderTest>)
            .map_err(|e| SetupError(Box::new(e)))
    }

    fn create_variant(
        &mut self,
        variant: Variant,
    ) -> Result<Option<Box<dyn HostUnderTest>>, SetupError> {
        ReferenceHost::new(self.config, Some(variant))
            .map(|h| Some(Box::new(h) as Box<dyn HostUnderTest>))
            .map_err(|e| SetupError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooked_memory_logs_host_accesses_and_mutates_after_the_first_read() {
        let inner = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let m = HookedMemory::new(inner, Some(Buffer::new(0x3000, 0x1000)));
        m.inner()
            .write_slice(&[1; 8], GuestAddress(0x1000))
            .unwrap();
        m.start_log();
        m.arm_mutation(Buffer::new(0x1000, 8), 0x1000, &[2; 8]);
        let mut b = [0u8; 8];
        m.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [1; 8], "the first read sees the original");
        m.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [2; 8], "a second read sees the mutation");
        m.write_slice(&[3; 8], GuestAddress(0x2000)).unwrap();
        assert_eq!(
            m.log(),
            vec![
                MemAccess {
                    write: false,
                    gpa: 0x1000,
                    len: 8
                },
                MemAccess {
                    write: false,
                    gpa: 0x1000,
                    len: 8
                },
                MemAccess {
                    write: true,
                    gpa: 0x2000,
                    len: 8
                },
            ]
        );
        assert!(!m.check_range(GuestAddress(0x3000), 8, Permissions::Write));
        assert!(m.check_range(GuestAddress(0x3000), 8, Permissions::Read));
        assert!(m.write_slice(&[0; 8], GuestAddress(0x3ff8)).is_err());
    }

    #[test]
    fn reference_fixture_matches_its_configuration() {
        let h = ReferenceHost::new(ReferenceConfig::default(), None).unwrap();
        let f = h.fixture();
        assert_eq!(f.primary.vcpus.len(), 4);
        assert_eq!(f.primary.irte_quota, 64);
        assert_eq!(f.secondary.as_ref().map(|s| s.irte_quota), Some(96));
        assert_eq!(f.shared_table_free, Some(TABLE_SIZE));
        assert_eq!(
            f.primary.devices[1].source,
            Some(SourceId::BusRange {
                start_bus: 0x84,
                end_bus: 0x85
            })
        );
        assert_eq!(h.name(), "reference (posted, x2APIC)");
    }
}

//! A multi-vCPU KVM machine that boots the guest image in long mode.
//!
//! * In-kernel irqchip (LAPIC per vCPU, x2APIC available) created before the vCPUs.
//! * One thread per vCPU; every vCPU enters the image's 64-bit entry directly through
//!   `KVM_SET_SREGS` (long mode, paging on with an identity map of 4 GiB in 2 MiB pages),
//!   `RDI` = its index, `RSI` = the vCPU count; the application processors are made runnable
//!   with `KVM_SET_MP_STATE` (with an in-kernel irqchip they would otherwise wait for INIT/SIPI).
//! * A watchdog on every `KVM_RUN`: when the run ends (the guest wrote the exit port, a vCPU
//!   failed, or the deadline passed) every vCPU thread is kicked out of `KVM_RUN` with a signal,
//!   repeatedly until it has returned, so no thread stays behind.
//! * Port I/O: the debug console (`0xE9`), the exit port (`0xF4`), PCI configuration
//!   (`0xCF8`/`0xCFC`), the test device's "fire entry" register ([`FIRE_PORT`]) and the vIR
//!   doorbell served by the reference host.
//! * The test device 00:01.0 ([`TEST_DEVICE_RID`]): an MSI-X capability and table in BAR0
//!   ([`MSIX_BAR`]), trapped (config and MMIO exits) and emulated by the host's legacy code, and
//!   the storage kinds vIR allocates (MSI, MSI-X, IMS in device and in system memory).
//! * Delivery on real KVM: the host's virtual routing is [`KvmRouting`] (`KVM_SET_GSI_ROUTING`
//!   MSI routes + `KVM_IRQFD`); a fired entry signals the irqfd of the GSI its physical IRQ was
//!   started with, and KVM's in-kernel LAPIC injects the vector. An MSI-X interrupt first goes
//!   through the platform's VT-d model ([`VtdTable`], the host's IRTE table) with the device's
//!   requester id, from the message in the device's table; so does an IMS interrupt, from the
//!   device's IMS array ([`IMS_DEVICE_ARRAY`]) or its entries in guest RAM
//!   ([`IMS_SYSTEM_BASE_REG`]), and an MSI from its MSI capability (trapped in every state and
//!   emulated by the host's code). What this machine cannot have stays modelled and is named
//!   so: the physical IRQs (VFIO), the remapping unit (a real IOMMU) and the device's physical
//!   storage.
//! * vIR offered (the host's CPUID leaves added) or not (the legacy situation).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, kvm_cpuid_entry2, kvm_mp_state, kvm_segment,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vir_abi::hw::msi::MsiMessage;
use vir_host::Host;
use vir_host::VmId;
use vir_host::config::{
    DeviceConfig, HostConfig, Quotas, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
};
use vir_host::testing::{MockDeviceStorage, MockPhysicalIrqs};
use vir_host::{IrMode, MsixField, TrapError, TrapRead, TrapWrite};
use vir_platform::ids::RequesterId;
use vir_platform::iommu::RemapOutcome;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::image::Elf;
use crate::iommu::VtdTable;
use crate::routing::KvmRouting;
use crate::vmm::{VmmError, kvm_available};

/// The debug-console port (one byte per write).
pub const CONSOLE_PORT: u16 = 0xE9;
/// The exit port (a 32-bit write ends the run with that exit code; QEMU's `isa-debug-exit`).
pub const EXIT_PORT: u16 = 0xF4;
/// PCI configuration address port.
pub const PCI_CONFIG_ADDRESS: u16 = 0xCF8;
/// PCI configuration data port.
pub const PCI_CONFIG_DATA: u16 = 0xCFC;
/// The doorbell port base offered to the image.
pub const DOORBELL_PORT: u16 = 0x5650;
/// The test device's "fire entry" register: a 32-bit write of storage kind (bits 31:24) and
/// slot (bits 23:0) makes the device raise that entry's interrupt.
pub const FIRE_PORT: u16 = 0x5670;
/// The test device's id and requester id (00:01.0).
pub const TEST_DEVICE_RID: u16 = 0x0008;
/// The test device's PCI vendor and device id (config dword 0).
pub const TEST_DEVICE_IDS: u32 = 0x0001_5649;
/// Guest-physical address of the test device's BAR0: its MSI-X table (64 entries of 16 bytes),
/// then its pending-bit array at offset 0x800.
pub const MSIX_BAR: u64 = 0xC000_0000;
/// The test device's IMS array in device memory: 16 entries of 16 bytes (address lo, address
/// hi, data, control with bit 0 = mask) at this address in BAR0.
pub const IMS_DEVICE_ARRAY: u64 = MSIX_BAR + 0x1000;
/// IMS entries of either kind the test device reads.
pub const IMS_ENTRIES: u32 = 16;
/// The test device's register holding the guest-physical base of its IMS entries in system
/// memory (64 bits: low half here, high half at +4); the entries have the layout of the device
/// array and the device reads them from guest RAM when it raises one.
pub const IMS_SYSTEM_BASE_REG: u64 = MSIX_BAR + 0x2000;
/// MSI-X table entries of the test device.
pub const MSIX_ENTRIES: u32 = 64;
/// Config-space offset of the test device's MSI-X capability.
const MSIX_CAP: u32 = 0x40;
/// Config-space offset of the test device's MSI capability (64-bit, per-vector masking).
const MSI_CAP: u32 = 0x50;
/// Most vCPUs a machine may have (the image's limit).
pub const MAX_VCPUS: u32 = 16;

/// Guest-physical layout of what the VMM writes before the image runs.
const BOOT_GDT: u64 = 0x500;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
/// Where the PVH boot's `hvm_start_info` goes.
const PVH_START_INFO: u64 = 0x8000;
/// `hvm_start_info.magic`.
const PVH_MAGIC: u32 = 0x336E_C578;

/// How to run the image.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// vCPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// Guest RAM in bytes, at GPA 0.
    pub mem_size: usize,
    /// Offer vIR (the host's CPUID leaves); without it the image is in the legacy situation.
    pub vir: bool,
    /// Wall-clock bound of the run.
    pub deadline: Duration,
    /// Boot at the image's PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`) the way PVH VMMs do — one
    /// vCPU in 32-bit protected mode, paging off, `EBX` = an `hvm_start_info` — instead of
    /// starting every vCPU in long mode at the 64-bit entry. Needs `vcpus == 1`.
    pub pvh: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpus: 4,
            mem_size: 64 << 20,
            vir: true,
            deadline: Duration::from_secs(60),
            pvh: false,
        }
    }
}

/// VM exits the VMM served, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Console bytes.
    pub console: u64,
    /// Doorbell port writes (the host served them).
    pub doorbell: u64,
    /// PCI configuration accesses.
    pub pci_config: u64,
    /// Other port accesses (ignored writes, reads answered with all ones).
    pub other_pio: u64,
    /// MMIO accesses (no device is mapped: reads return all ones).
    pub mmio: u64,
    /// `KVM_RUN` interrupted by the watchdog's signal.
    pub interrupted: u64,
    /// Device interrupts raised (an irqfd signalled).
    pub fired: u64,
    /// Fire requests for an entry with no started interrupt (nothing signalled).
    pub fired_unrouted: u64,
    /// Of the interrupts raised, those whose message went through the VT-d model (MSI-X).
    pub remapped: u64,
    /// Device writes the VT-d model blocked (fault) or that could not signal (entry masked).
    pub blocked: u64,
}

#[derive(Default)]
struct Counters {
    console: AtomicU64,
    doorbell: AtomicU64,
    pci_config: AtomicU64,
    other_pio: AtomicU64,
    mmio: AtomicU64,
    interrupted: AtomicU64,
    fired: AtomicU64,
    fired_unrouted: AtomicU64,
    remapped: AtomicU64,
    blocked: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ExitCounts {
        ExitCounts {
            console: self.console.load(Ordering::Relaxed),
            doorbell: self.doorbell.load(Ordering::Relaxed),
            pci_config: self.pci_config.load(Ordering::Relaxed),
            other_pio: self.other_pio.load(Ordering::Relaxed),
            mmio: self.mmio.load(Ordering::Relaxed),
            interrupted: self.interrupted.load(Ordering::Relaxed),
            fired: self.fired.load(Ordering::Relaxed),
            fired_unrouted: self.fired_unrouted.load(Ordering::Relaxed),
            remapped: self.remapped.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The image wrote this exit code to [`EXIT_PORT`].
    Exit(u32),
    /// The deadline passed first.
    Deadline(Duration),
    /// A vCPU stopped for a reason the VMM cannot continue from.
    VcpuFailed {
        /// The vCPU index.
        vcpu: u32,
        /// What happened.
        reason: String,
    },
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub end: RunEnd,
    /// Everything the image wrote to the console.
    pub console: String,
    /// Exits served, by kind.
    pub exits: ExitCounts,
    /// The vCPUs' TSC frequency in kHz as KVM reports it (to turn TSC figures into time).
    pub tsc_khz: Option<u32>,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
    /// Duration of every `KVM_SET_GSI_ROUTING` ioctl of the run.
    pub gsi_routing_ioctls: Vec<Duration>,
}

/// One `FIG` line of the image: a distribution of TSC tick counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// What was measured (`noop-ring`, `query`, `allocate`, `activate`, `set-affinity`,
    /// `latency-vir`).
    pub name: String,
    /// Samples.
    pub n: u64,
    /// Median, in TSC ticks.
    pub p50: u64,
    /// 99th percentile, in TSC ticks.
    pub p99: u64,
}

impl RunReport {
    /// The `FIG` lines.
    pub fn figures(&self) -> Vec<Figure> {
        self.lines()
            .filter_map(|l| l.strip_prefix("FIG "))
            .filter_map(|l| {
                let mut it = l.split(' ');
                let name = it.next()?.to_string();
                let (mut n, mut p50, mut p99) = (None, None, None);
                for kv in it {
                    let (k, v) = kv.split_once('=')?;
                    match k {
                        "n" => n = v.parse().ok(),
                        "p50" => p50 = v.parse().ok(),
                        "p99" => p99 = v.parse().ok(),
                        _ => {}
                    }
                }
                Some(Figure {
                    name,
                    n: n?,
                    p50: p50?,
                    p99: p99?,
                })
            })
            .collect()
    }

    /// `ticks` of the guest's TSC in microseconds (`None` when KVM did not report the TSC
    /// frequency).
    pub fn ticks_to_us(&self, ticks: u64) -> Option<f64> {
        self.tsc_khz
            .filter(|k| *k != 0)
            .map(|k| ticks as f64 * 1000.0 / f64::from(k))
    }

    /// The console's lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.console.lines()
    }

    /// The `CHECK` lines as (name, passed, detail).
    pub fn checks(&self) -> Vec<(&str, bool, &str)> {
        self.lines()
            .filter_map(|l| l.strip_prefix("CHECK "))
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let name = it.next()?;
                let passed = match it.next()? {
                    "pass" => true,
                    "fail" => false,
                    _ => return None,
                };
                Some((name, passed, it.next().unwrap_or("")))
            })
            .collect()
    }
}

/// The reference host of this VMM: IRTE table and physical IRQs modelled in memory (no VFIO, no
/// IOMMU on this machine: the IRTE table is the platform's VT-d model), virtual routing on real
/// KVM.
pub type KvmHost = Host<VtdTable, KvmRouting, MockPhysicalIrqs>;

struct Shared {
    mem: GuestMemoryMmap<()>,
    host: Mutex<KvmHost>,
    /// The device's physical interrupt storage (modelled: no VFIO here), written by the host's
    /// legacy code. Locked after `host`.
    storage: Mutex<MockDeviceStorage>,
    /// The MSI-X table as the guest writes it once it is no longer trapped (after NEGOTIATE
    /// the VMM maps it: writes go straight to the device's storage). Locked after `storage`.
    msix_mapped: Mutex<Vec<[u32; 4]>>,
    /// The device-memory IMS array, and the base of the system-memory IMS entries (device
    /// registers: not trapped by the host, vIR allocates their interrupts).
    ims: Mutex<(Vec<[u32; 4]>, u64)>,
    vm_id: VmId,
    console: Mutex<Vec<u8>>,
    stop: AtomicBool,
    end: Mutex<Option<RunEnd>>,
    counters: Counters,
}

impl Shared {
    fn finish(&self, end: RunEnd) {
        let mut e = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(end);
        }
        self.stop.store(true, Ordering::Release);
    }
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Kvm {
        op,
        errno: e.errno(),
    }
}

/// The reference host's view of the machine: one vCPU per KVM vCPU (x2APIC id = index) and the
/// test device (stage 2 of the image workload adds its interrupts).
fn vm_config(vcpus: u32) -> VmConfig {
    VmConfig {
        vcpus: (0..vcpus)
            .map(|i| VcpuConfig {
                apic_id: i,
                pda: 0xFEE0_0000 - 0x1000 + u64::from(i) * 64,
                pcpu: i % 4,
            })
            .collect(),
        devices: vec![DeviceConfig {
            device_id: u32::from(TEST_DEVICE_RID),
            requester_id: TEST_DEVICE_RID,
            source_validation: SourceValidation::RequesterId,
            storage: StorageSizes {
                msi_vectors: 4,
                msix_entries: 64,
                ims_device_entries: 16,
                ims_system_entries: 16,
            },
        }],
        quotas: Quotas::default(),
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

/// The kick signal's handler does nothing: its only effect is that `KVM_RUN` returns `EINTR`.
extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of `KVM_RUN` (registered once per process).
fn kick_signal() -> Result<libc::c_int, VmmError> {
    static REGISTERED: OnceLock<Result<(), i32>> = OnceLock::new();
    let sig = SIGRTMIN();
    match REGISTERED
        .get_or_init(|| register_signal_handler(sig, kick_handler).map_err(|e| e.errno()))
    {
        Ok(()) => Ok(sig),
        Err(errno) => Err(VmmError::Kvm {
            op: "register the vCPU kick signal",
            errno: *errno,
        }),
    }
}

fn long_mode_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        ..Default::default()
    }
}

/// Boots the image `elf` on a new VM as `config` says and runs it to its end.
pub fn run_image(elf: &Elf, config: &MachineConfig) -> Result<RunReport, VmmError> {
    kvm_available().map_err(VmmError::Unavailable)?;
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(VmmError::BadConfig("vCPU count must be 1..=16"));
    }
    let pvh_entry = match (config.pvh, elf.pvh_entry) {
        (false, _) => None,
        (true, _) if config.vcpus != 1 => {
            return Err(VmmError::BadConfig("a PVH boot starts one vCPU"));
        }
        (true, None) => return Err(VmmError::BadConfig("the image has no PVH note")),
        (true, Some(e)) => Some(e),
    };
    let signal = kick_signal()?;
    let kvm = Kvm::new().map_err(kvm_err("open"))?;
    let vm = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
    vm.set_tss_address(0xFFFB_D000)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;

    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), config.mem_size)])
        .map_err(VmmError::MemoryMap)?;
    let host_addr = mem
        .get_host_address(GuestAddress(0))
        .map_err(VmmError::Memory)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: config.mem_size as u64,
        userspace_addr: host_addr as u64,
        flags: 0,
    };
    // SAFETY: `host_addr` is the start of the anonymous mapping of `mem_size` bytes backing
    // `mem`. `mem` is kept alive (in `Shared`, behind an `Arc`) until every vCPU thread has
    // been joined and the VM and vCPU file descriptors are closed at the end of this function.
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;

    for s in &elf.segments {
        let end = s.paddr.checked_add(s.mem_size);
        if end.is_none_or(|e| e > config.mem_size as u64) || s.paddr < 0x10_0000 {
            return Err(VmmError::ProgramTooLarge(s.mem_size as usize));
        }
        mem.write_slice(&s.data, GuestAddress(s.paddr))
            .map_err(VmmError::Memory)?;
    }
    // Boot GDT: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18, for a PVH boot).
    for (i, d) in [
        0u64,
        0x00AF_9A00_0000_FFFF,
        0x00CF_9200_0000_FFFF,
        0x00CF_9A00_0000_FFFF,
    ]
    .iter()
    .enumerate()
    {
        mem.write_obj(*d, GuestAddress(BOOT_GDT + 8 * i as u64))
            .map_err(VmmError::Memory)?;
    }
    // Identity map of 4 GiB: PML4[0] -> PDPT, PDPT[0..4] -> PD pages of 2 MiB entries.
    mem.write_obj(PDPT | 3, GuestAddress(PML4))
        .map_err(VmmError::Memory)?;
    for g in 0..4u64 {
        mem.write_obj((PD + g * 0x1000) | 3, GuestAddress(PDPT + g * 8))
            .map_err(VmmError::Memory)?;
        for e in 0..512u64 {
            let addr = ((g * 512 + e) << 21) | 0x83;
            mem.write_obj(addr, GuestAddress(PD + g * 0x1000 + e * 8))
                .map_err(VmmError::Memory)?;
        }
    }

    let host_config = HostConfig {
        doorbell_port: Some(DOORBELL_PORT),
        register_bindings: 0,
        ir_mode: IrMode::Remapped,
        apic_mode: vir_abi::hw::ApicMode::X2Apic,
        ..HostConfig::default()
    };
    let mut host = Host::new(
        host_config,
        VtdTable::new(),
        KvmRouting::new(Arc::clone(&vm)),
        MockPhysicalIrqs::new(4, 200),
    )
    .map_err(VmmError::HostConfig)?;
    let vm_id = host
        .add_vm(vm_config(config.vcpus))
        .map_err(VmmError::HostConfig)?;

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vir_leaves = Vec::new();
    if config.vir {
        let base = host.config().cpuid_base;
        for leaf in [base, base + vir_abi::discovery::CPUID_INFO_OFFSET] {
            if let Some([eax, ebx, ecx, edx]) = host.cpuid(vm_id, leaf).map_err(VmmError::Host)? {
                vir_leaves.push(kvm_cpuid_entry2 {
                    function: leaf,
                    eax,
                    ebx,
                    ecx,
                    edx,
                    ..Default::default()
                });
            }
        }
    }

    let mut vcpus = Vec::new();
    let mut tsc_khz = None;
    for i in 0..config.vcpus {
        let vcpu = vm
            .create_vcpu(u64::from(i))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = supported.clone();
        for e in cpuid.as_mut_slice() {
            match e.function {
                1 => {
                    e.ecx |= vir_abi::discovery::CPUID1_ECX_HYPERVISOR;
                    e.ebx = (e.ebx & 0x00FF_FFFF) | (i << 24);
                }
                0xB | 0x1F => e.edx = i,
                _ => {}
            }
        }
        for leaf in &vir_leaves {
            cpuid.push(*leaf).map_err(|_| VmmError::Kvm {
                op: "cpuid push",
                errno: 7,
            })?;
        }
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        sregs.cs = long_mode_segment(0x08, true);
        let data = long_mode_segment(0x10, false);
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.gdt.base = BOOT_GDT;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr3 = PML4;
        // PAE | OSFXSR | OSXMMEXCPT.
        sregs.cr4 = (1 << 5) | (1 << 9) | (1 << 10);
        // PE | MP | ET | NE | WP | PG.
        sregs.cr0 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
        // LME | LMA.
        sregs.efer = (1 << 8) | (1 << 10);
        if pvh_entry.is_some() {
            // PVH: 32-bit flat protected mode, paging off.
            let mut cs = long_mode_segment(0x18, true);
            cs.l = 0;
            cs.db = 1;
            sregs.cs = cs;
            sregs.cr0 = 1 | (1 << 4);
            sregs.cr4 = 0;
            sregs.efer = 0;
            sregs.cr3 = 0;
            mem.write_obj(PVH_MAGIC, GuestAddress(PVH_START_INFO))
                .map_err(VmmError::Memory)?;
            // version 1; no modules, no command line, no memory map.
            mem.write_obj(1u32, GuestAddress(PVH_START_INFO + 4))
                .map_err(VmmError::Memory)?;
        }
        sregs.gdt.limit = 31;
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        let mut xcrs = vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?;
        for x in xcrs.xcrs.iter_mut().take(xcrs.nr_xcrs as usize) {
            if x.xcr == 0 {
                x.value |= 0x3;
            }
        }
        vcpu.set_xcrs(&xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
        let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rip = elf.entry64;
        regs.rdi = u64::from(i);
        regs.rsi = u64::from(config.vcpus);
        if let Some(entry) = pvh_entry {
            regs.rip = u64::from(entry);
            regs.rbx = PVH_START_INFO;
        }
        regs.rsp = 0;
        regs.rflags = 2;
        vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        vcpu.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        if tsc_khz.is_none() {
            tsc_khz = vcpu.get_tsc_khz().ok();
        }
        vcpus.push(vcpu);
    }

    let shared = Arc::new(Shared {
        mem,
        host: Mutex::new(host),
        storage: Mutex::new(MockDeviceStorage::new()),
        msix_mapped: Mutex::new(vec![[0, 0, 0, 1]; MSIX_ENTRIES as usize]),
        ims: Mutex::new((vec![[0, 0, 0, 1]; IMS_ENTRIES as usize], 0)),
        vm_id,
        console: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        end: Mutex::new(None),
        counters: Counters::default(),
    });
    let started = Instant::now();
    let mut threads: Vec<JoinHandle<VcpuFd>> = Vec::new();
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || vcpu_loop(vcpu, i as u32, &for_thread));
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                shared.finish(RunEnd::VcpuFailed {
                    vcpu: i as u32,
                    reason: "thread could not be started".into(),
                });
                break;
            }
        }
    }
    // The watchdog: wait for the end or the deadline, then kick every vCPU out of KVM_RUN until
    // all threads have returned.
    while !shared.stop.load(Ordering::Acquire) {
        if started.elapsed() >= config.deadline {
            shared.finish(RunEnd::Deadline(config.deadline));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut panicked = false;
    for t in threads {
        while !t.is_finished() {
            let _ = t.kill(signal);
            std::thread::sleep(Duration::from_millis(2));
        }
        panicked |= t.join().is_err();
    }
    if panicked {
        return Err(VmmError::VcpuThreadPanicked);
    }
    let elapsed = started.elapsed();
    let end = shared
        .end
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or(RunEnd::Deadline(config.deadline));
    let gsi_routing_ioctls = shared
        .host
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .routing()
        .ioctl_times()
        .to_vec();
    let console =
        String::from_utf8_lossy(&shared.console.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned();
    Ok(RunReport {
        end,
        console,
        exits: shared.counters.snapshot(),
        tsc_khz,
        elapsed,
        gsi_routing_ioctls,
    })
}

/// What a fire request did.
enum Fired {
    /// An irqfd was signalled; `remapped` when the message went through the VT-d model.
    Delivered {
        /// Whether the VT-d model remapped the message.
        remapped: bool,
    },
    /// The entry could not signal (masked, disabled) or the VT-d model blocked its write.
    Blocked,
    /// No started interrupt matches.
    Unrouted,
}

/// The test device raises entry `value` (kind in bits 31:24, slot in 23:0).
///
/// MSI-X: the device reads the entry from its (physical) table; if it can signal, its message
/// is written to the interrupt window, remapped by the VT-d model with the device's requester
/// id into a host vector on a physical CPU; the physical IRQ on that vector signals the irqfd of
/// its GSI, and KVM injects the route's vector into the route's vCPU.
///
/// IMS: the same, from the device's IMS array or from the entries in guest RAM at the base the
/// guest gave the device. MSI (vector 0 of the block): from the device's MSI capability, as the
/// host's trap code let the guest program it.
fn fire(shared: &Shared, value: u32) -> Fired {
    let kind = vir_abi::wire::StorageKind((value >> 24) as u8);
    let slot = value & 0x00FF_FFFF;
    let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
    use vir_abi::wire::StorageKind;
    let stored = match kind {
        StorageKind::MSI if slot == 0 => {
            let storage = shared.storage.lock().unwrap_or_else(|p| p.into_inner());
            let dev = storage.device(TEST_DEVICE_RID);
            Some((dev.msi_message, dev.msi_enabled && dev.msi_mask & 1 == 0))
        }
        StorageKind::MSIX => {
            let storage = shared.storage.lock().unwrap_or_else(|p| p.into_inner());
            let dev = storage.device(TEST_DEVICE_RID);
            Some((dev.msix_entry(slot).0, dev.msix_can_signal(slot)))
        }
        StorageKind::IMS_DEVICE | StorageKind::IMS_SYSTEM => {
            let Some((message, masked)) = ims_entry(shared, kind == StorageKind::IMS_SYSTEM, slot)
            else {
                return Fired::Unrouted;
            };
            Some((message, !masked))
        }
        _ => None,
    };
    let remapped = stored.is_some();
    let gsi = if let Some((message, can_signal)) = stored {
        if !can_signal {
            return Fired::Blocked;
        }
        let RemapOutcome::Remapped(r) = host
            .table_mut()
            .unit_mut()
            .remap(RequesterId(TEST_DEVICE_RID), message)
        else {
            return Fired::Blocked;
        };
        host.irqs().irqs().values().find_map(|irq| {
            (irq.vm == shared.vm_id
                && irq.vector.apic_id == r.dest.0
                && irq.vector.vector == r.vector)
                .then_some(irq.gsi)
        })
    } else {
        host.irqs().irqs().values().find_map(|irq| {
            (irq.vm == shared.vm_id
                && irq.source.requester_id == TEST_DEVICE_RID
                && irq.source.kind == kind
                && irq.source.slot == slot)
                .then_some(irq.gsi)
        })
    };
    let signalled = gsi
        .and_then(|g| host.routing().eventfd(g))
        .is_some_and(|fd| fd.write(1).is_ok());
    if signalled {
        Fired::Delivered { remapped }
    } else {
        Fired::Unrouted
    }
}

/// The test device's function (00:01.0) addressed by a `CONFIG_ADDRESS` value, with the
/// register offset; `None` for disabled accesses and absent functions.
fn test_device_register(address: u32) -> Option<u32> {
    let enabled = address & (1 << 31) != 0;
    let rid = (address >> 8) & 0xFFFF;
    (enabled && rid == u32::from(TEST_DEVICE_RID)).then_some(address & 0xFC)
}

/// A configuration read: the test device's header and MSI-X capability (its Message Control
/// from the host's legacy emulation); all ones for absent functions.
fn config_read(shared: &Shared, address: u32) -> u32 {
    let Some(reg) = test_device_register(address) else {
        return u32::MAX;
    };
    match reg {
        0x00 => TEST_DEVICE_IDS,
        // Status: capability list; command: memory space, bus master.
        0x04 => 0x0010_0006,
        0x08 => 0xFF00_0000,
        0x10 => MSIX_BAR as u32,
        0x34 => MSIX_CAP,
        MSIX_CAP => {
            let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
            let control = host
                .trap_read(
                    shared.vm_id,
                    u32::from(TEST_DEVICE_RID),
                    TrapRead::MsixControl,
                )
                .unwrap_or(0);
            (control << 16) | (MSI_CAP << 8) | 0x11
        }
        MSI_CAP..=0x60 => {
            let read = match reg - MSI_CAP {
                0 => TrapRead::MsiControl,
                4 => TrapRead::MsiAddressLo,
                8 => TrapRead::MsiAddressHi,
                0xC => TrapRead::MsiData,
                _ => TrapRead::MsiMaskBits,
            };
            let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
            let value = host
                .trap_read(shared.vm_id, u32::from(TEST_DEVICE_RID), read)
                .unwrap_or(0);
            if reg == MSI_CAP {
                (value << 16) | 0x05
            } else {
                value
            }
        }
        0x44 => 0,
        0x48 => 0x800,
        _ => 0,
    }
}

/// A configuration write: Message Control of the MSI-X capability goes to the host's legacy
/// code (trapped in every state); everything else is read-only.
fn config_write(shared: &Shared, address: u32, value: u32) {
    use vir_host::MsiRegister;
    let write = match test_device_register(address) {
        Some(MSIX_CAP) => TrapWrite::MsixControl((value >> 16) as u16),
        Some(MSI_CAP) => TrapWrite::Msi(MsiRegister::Control((value >> 16) as u16)),
        Some(r) if r == MSI_CAP + 4 => TrapWrite::Msi(MsiRegister::AddressLo(value)),
        Some(r) if r == MSI_CAP + 8 => TrapWrite::Msi(MsiRegister::AddressHi(value)),
        Some(r) if r == MSI_CAP + 0xC => TrapWrite::Msi(MsiRegister::Data(value as u16)),
        Some(r) if r == MSI_CAP + 0x10 => TrapWrite::Msi(MsiRegister::MaskBits(value)),
        _ => return,
    };
    let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
    let mut storage = shared.storage.lock().unwrap_or_else(|p| p.into_inner());
    // A refused or failing write has no status on real hardware: the register keeps its value.
    let _ = host.trap_write(
        shared.vm_id,
        u32::from(TEST_DEVICE_RID),
        write,
        &shared.mem,
        &mut *storage,
    );
}

/// The MSI-X table entry and field at `addr`, if it is one.
fn msix_field(addr: u64) -> Option<(u32, MsixField)> {
    let off = addr.checked_sub(MSIX_BAR)?;
    let index = u32::try_from(off / 16).ok()?;
    if index >= MSIX_ENTRIES {
        return None;
    }
    MsixField::from_offset((off % 16) as u32).map(|f| (index, f))
}

/// A device-register access outside the MSI-X table: the IMS array and the IMS base register.
/// Returns `None` when `addr` is not one of them.
fn ims_access(shared: &Shared, addr: u64, write: Option<u32>) -> Option<u32> {
    let mut ims = shared.ims.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(off) = addr.checked_sub(IMS_DEVICE_ARRAY)
        && off < u64::from(IMS_ENTRIES) * 16
    {
        let cell = &mut ims.0[(off / 16) as usize][((off % 16) / 4) as usize];
        if let Some(v) = write {
            *cell = v;
        }
        return Some(*cell);
    }
    if addr == IMS_SYSTEM_BASE_REG || addr == IMS_SYSTEM_BASE_REG + 4 {
        let shift = if addr == IMS_SYSTEM_BASE_REG { 0 } else { 32 };
        if let Some(v) = write {
            ims.1 = (ims.1 & !(0xFFFF_FFFF << shift)) | (u64::from(v) << shift);
        }
        return Some((ims.1 >> shift) as u32);
    }
    None
}

/// The message and mask of IMS entry `slot` as the device reads it: from its array, or from
/// guest RAM at the system-memory base.
fn ims_entry(shared: &Shared, system: bool, slot: u32) -> Option<(MsiMessage, bool)> {
    if slot >= IMS_ENTRIES {
        return None;
    }
    let ims = shared.ims.lock().unwrap_or_else(|p| p.into_inner());
    let e = if system {
        let mut e = [0u32; 4];
        for (i, w) in e.iter_mut().enumerate() {
            *w = shared
                .mem
                .read_obj(GuestAddress(ims.1 + u64::from(slot) * 16 + 4 * i as u64))
                .ok()?;
        }
        e
    } else {
        ims.0[slot as usize]
    };
    Some((
        MsiMessage {
            address_lo: e[0],
            address_hi: e[1],
            data: e[2],
        },
        e[3] & 1 != 0,
    ))
}

/// A trapped read of the MSI-X table (the pending-bit array reads as zero).
fn msix_read(shared: &Shared, addr: u64) -> u32 {
    if let Some(v) = ims_access(shared, addr, None) {
        return v;
    }
    let Some((index, field)) = msix_field(addr) else {
        return 0;
    };
    let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
    match host.trap_read(
        shared.vm_id,
        u32::from(TEST_DEVICE_RID),
        TrapRead::MsixEntry { index, field },
    ) {
        Ok(v) => v,
        // Negotiated: the table is mapped, the guest reads the device's table.
        Err(TrapError::MsixNotTrapped { .. }) => {
            let mapped = shared.msix_mapped.lock().unwrap_or_else(|p| p.into_inner());
            mapped[index as usize][field_slot(field)]
        }
        Err(_) => u32::MAX,
    }
}

fn field_slot(field: MsixField) -> usize {
    match field {
        MsixField::AddressLo => 0,
        MsixField::AddressHi => 1,
        MsixField::Data => 2,
        MsixField::VectorControl => 3,
    }
}

/// A trapped write of the MSI-X table, handed to the host's legacy code.
fn msix_write(shared: &Shared, addr: u64, value: u32) {
    if ims_access(shared, addr, Some(value)).is_some() {
        return;
    }
    let Some((index, field)) = msix_field(addr) else {
        return;
    };
    let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
    let mut storage = shared.storage.lock().unwrap_or_else(|p| p.into_inner());
    let trapped = host.trap_write(
        shared.vm_id,
        u32::from(TEST_DEVICE_RID),
        TrapWrite::MsixEntry {
            index,
            field,
            value,
        },
        &shared.mem,
        &mut *storage,
    );
    if let Err(TrapError::MsixNotTrapped { .. }) = trapped {
        // Negotiated: the table is mapped into the guest, so the write reaches the device's
        // table as it is (the guest writes the message ACTIVATE returned).
        let mut mapped = shared.msix_mapped.lock().unwrap_or_else(|p| p.into_inner());
        let e = &mut mapped[index as usize];
        e[field_slot(field)] = value;
        let message = MsiMessage {
            address_lo: e[0],
            address_hi: e[1],
            data: e[2],
        };
        let masked = e[3] & 1 != 0;
        use vir_host::DeviceStorage;
        storage.write_msix_message(TEST_DEVICE_RID, index, message);
        storage.set_msix_masked(TEST_DEVICE_RID, index, masked);
    }
}

/// Runs one vCPU until the machine stops; returns its file descriptor so it is closed on the
/// main thread after the others.
fn vcpu_loop(mut vcpu: VcpuFd, index: u32, shared: &Shared) -> VcpuFd {
    let mut pci_address = 0u32;
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Acquire) {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                c.interrupted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                shared.finish(RunEnd::VcpuFailed {
                    vcpu: index,
                    reason: format!("KVM_RUN failed (errno {})", e.errno()),
                });
                break;
            }
        };
        match exit {
            VcpuExit::IoOut(CONSOLE_PORT, data) => {
                c.console.fetch_add(1, Ordering::Relaxed);
                shared
                    .console
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(data);
            }
            VcpuExit::IoOut(EXIT_PORT, data) => {
                let mut b = [0u8; 4];
                let n = data.len().min(4);
                b[..n].copy_from_slice(&data[..n]);
                shared.finish(RunEnd::Exit(u32::from_le_bytes(b)));
            }
            VcpuExit::IoOut(FIRE_PORT, data) if data.len() == 4 => {
                let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                match fire(shared, value) {
                    Fired::Delivered { remapped } => {
                        c.fired.fetch_add(1, Ordering::Relaxed);
                        if remapped {
                            c.remapped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Fired::Blocked => {
                        c.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    Fired::Unrouted => {
                        c.fired_unrouted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            VcpuExit::IoOut(PCI_CONFIG_ADDRESS, data) if data.len() == 4 => {
                c.pci_config.fetch_add(1, Ordering::Relaxed);
                pci_address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            VcpuExit::IoOut(port, data)
                if (PCI_CONFIG_DATA..PCI_CONFIG_DATA + 4).contains(&port) =>
            {
                c.pci_config.fetch_add(1, Ordering::Relaxed);
                if port == PCI_CONFIG_DATA && data.len() == 4 {
                    let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                    config_write(shared, pci_address, value);
                }
            }
            VcpuExit::IoIn(port, data)
                if (PCI_CONFIG_DATA..PCI_CONFIG_DATA + 4).contains(&port) =>
            {
                c.pci_config.fetch_add(1, Ordering::Relaxed);
                let value = if port == PCI_CONFIG_DATA && data.len() == 4 {
                    config_read(shared, pci_address)
                } else {
                    u32::MAX
                };
                let n = data.len().min(4);
                data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
            VcpuExit::IoOut(port, data) => {
                let value = match data.len() {
                    4 => Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
                    _ => None,
                };
                let mut host = shared.host.lock().unwrap_or_else(|p| p.into_inner());
                match value.map(|v| host.pio_write(shared.vm_id, index, port, v, &shared.mem)) {
                    Some(Ok(vir_host::PioOutcome::NotClaimed)) | None => {
                        c.other_pio.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {
                        c.doorbell.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        drop(host);
                        shared.finish(RunEnd::VcpuFailed {
                            vcpu: index,
                            reason: format!("host refused a port write: {e:?}"),
                        });
                    }
                }
            }
            VcpuExit::IoIn(_, data) => {
                c.other_pio.fetch_add(1, Ordering::Relaxed);
                data.fill(0xFF);
            }
            VcpuExit::MmioRead(addr, data) => {
                c.mmio.fetch_add(1, Ordering::Relaxed);
                let value = if data.len() == 4 {
                    msix_read(shared, addr)
                } else {
                    u32::MAX
                };
                let n = data.len().min(4);
                data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
            VcpuExit::MmioWrite(addr, data) => {
                c.mmio.fetch_add(1, Ordering::Relaxed);
                if data.len() == 4 {
                    let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                    msix_write(shared, addr, value);
                }
            }
            VcpuExit::Hlt => {}
            VcpuExit::Shutdown => shared.finish(RunEnd::VcpuFailed {
                vcpu: index,
                reason: "shutdown (triple fault)".into(),
            }),
            VcpuExit::FailEntry(reason, _) => shared.finish(RunEnd::VcpuFailed {
                vcpu: index,
                reason: format!("entry failure {reason:#x}"),
            }),
            VcpuExit::InternalError => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                // SAFETY: after an internal-error exit the `internal` member of the exit union
                // is the one KVM filled.
                let sub = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let mut code = [0u8; 8];
                let _ = shared.mem.read_slice(&mut code, GuestAddress(rip));
                shared.finish(RunEnd::VcpuFailed {
                    vcpu: index,
                    reason: format!(
                        "KVM internal error (suberror {sub}) at rip {rip:#x}, code {code:02x?}"
                    ),
                });
            }
            other => shared.finish(RunEnd::VcpuFailed {
                vcpu: index,
                reason: format!("unexpected exit {other:?}"),
            }),
        }
    }
    vcpu
}

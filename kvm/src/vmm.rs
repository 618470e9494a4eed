//! The VMM: one KVM VM with one vCPU in real mode, its RAM shared with the reference host.

use std::fmt;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vir_host::config::{HostConfig, VmConfig};
use vir_host::testing::{MockHost, mock_host};
use vir_host::{HostError, VmId};
use vm_memory::mmap::FromRangesError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::host_io::{IoLog, IoWrite};
use crate::program::{Program, Reg};

/// Path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Port the guest programs write values to for the test to read (never claimed by vIR).
pub const REPORT_PORT: u16 = 0x0510;
/// Value reported on [`REPORT_PORT`] when the guest takes exception `v`: `EXCEPTION_MARKER | v`.
pub const EXCEPTION_MARKER: u32 = 0xEC00_0000;
/// Guest-physical address of the exception stubs [`KvmVmm::load`] installs.
const STUBS: u64 = 0x0800;
/// Size of one exception stub.
const STUB_SIZE: u64 = 16;
/// Exceptions that get a stub (the architectural ones).
const EXCEPTIONS: u32 = 32;

/// Why KVM cannot be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmUnavailable {
    /// `/dev/kvm` does not exist.
    NoDevice,
    /// Opening `/dev/kvm` failed with this errno.
    Open(i32),
}

impl fmt::Display for KvmUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevice => write!(f, "{KVM_DEVICE} does not exist (no KVM on this machine)"),
            Self::Open(e) => write!(f, "{KVM_DEVICE} cannot be opened (errno {e})"),
        }
    }
}

/// Check whether KVM can be used here.
pub fn kvm_available() -> Result<(), KvmUnavailable> {
    if !std::path::Path::new(KVM_DEVICE).exists() {
        return Err(KvmUnavailable::NoDevice);
    }
    Kvm::new()
        .map(|_| ())
        .map_err(|e| KvmUnavailable::Open(e.errno()))
}

/// Errors of the VMM.
#[derive(Debug)]
pub enum VmmError {
    /// KVM is not usable.
    Unavailable(KvmUnavailable),
    /// A KVM ioctl failed.
    Kvm {
        /// Which operation.
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// Guest memory could not be created or accessed.
    Memory(vm_memory::GuestMemoryError),
    /// Guest memory could not be mapped.
    MemoryMap(FromRangesError),
    /// The host configuration was refused.
    HostConfig(vir_host::config::ConfigError),
    /// The reference host refused an operation.
    Host(HostError),
    /// The vCPU exited for a reason this VMM does not handle.
    UnexpectedExit(&'static str),
    /// The guest read an I/O port (this VMM emulates no readable port).
    PortRead {
        /// The port.
        port: u16,
        /// Where the guest was.
        rip: u64,
    },
    /// A port write of a size other than 4 bytes.
    BadIoSize {
        /// The port.
        port: u16,
        /// The access size.
        size: usize,
    },
    /// The guest ran for more exits than allowed without halting.
    TooManyExits(u32),
    /// The program does not fit in guest memory.
    ProgramTooLarge(usize),
    /// The vCPU did not halt before the deadline of [`KvmVmm::run_bounded`] (the vCPU thread is
    /// left behind, stuck in `KVM_RUN`).
    Deadline(std::time::Duration),
    /// The vCPU thread panicked.
    VcpuThreadPanicked,
    /// The host configuration offers no doorbell: a KVM guest could not reach the host.
    NoDoorbell,
    /// The machine configuration is invalid; what is wrong.
    BadConfig(&'static str),
}

impl fmt::Display for VmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(u) => write!(f, "KVM unavailable: {u}"),
            Self::Kvm { op, errno } => write!(f, "KVM {op} failed (errno {errno})"),
            Self::Memory(e) => write!(f, "guest memory: {e}"),
            Self::MemoryMap(e) => write!(f, "guest memory map: {e}"),
            Self::HostConfig(e) => write!(f, "host configuration: {e:?}"),
            Self::Host(e) => write!(f, "reference host: {e:?}"),
            Self::UnexpectedExit(r) => write!(f, "unexpected vCPU exit: {r}"),
            Self::PortRead { port, rip } => write!(f, "guest read port {port:#x} at {rip:#x}"),
            Self::BadIoSize { port, size } => write!(f, "{size}-byte write to port {port:#x}"),
            Self::TooManyExits(n) => write!(f, "guest did not halt within {n} exits"),
            Self::ProgramTooLarge(n) => write!(f, "program of {n} bytes does not fit"),
            Self::Deadline(d) => write!(f, "guest did not halt within {d:?}"),
            Self::VcpuThreadPanicked => f.write_str("vCPU thread panicked"),
            Self::NoDoorbell => f.write_str("the host offers no doorbell binding"),
            Self::BadConfig(what) => write!(f, "bad machine configuration: {what}"),
        }
    }
}

impl std::error::Error for VmmError {}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Kvm {
        op,
        errno: e.errno(),
    }
}

/// A KVM VM whose port-I/O exits are served by the vIR reference host.
///
/// The physical side of the host (IRTE table, routing, physical IRQs) is the reference host's
/// in-memory model: this VMM shows the binding — discovery through `CPUID` and calls through the
/// doorbell — running on real hardware virtualisation, not a physical IOMMU.
pub struct KvmVmm {
    // Field order is drop order: the vCPU and VM file descriptors go before the guest memory
    // they map (see the SAFETY comment in `new`).
    vcpu: VcpuFd,
    vm: VmFd,
    host: MockHost,
    vm_id: VmId,
    io: IoLog,
    mem: GuestMemoryMmap<()>,
}

impl fmt::Debug for KvmVmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmVmm")
            .field("vm_id", &self.vm_id)
            .field("io", &self.io)
            .finish()
    }
}

impl KvmVmm {
    /// Create a VM with `mem_size` bytes of RAM at GPA 0 and one vCPU in real mode, with a
    /// reference host configured by `host_config` serving it as `vm_config` describes.
    ///
    /// The vCPU's CPUID has the hypervisor bit set and the host's vIR leaves added, exactly as
    /// [`vir_host::Host::cpuid`] answers them.
    ///
    /// KVM does not forward `VMCALL`/`VMMCALL` to user space, so the register bindings are
    /// removed from `host_config` (VIR-REG-H-004: offer them only where they reach the vIR
    /// implementation) and the doorbell binding must be configured.
    pub fn new(
        mut host_config: HostConfig,
        vm_config: VmConfig,
        mem_size: usize,
    ) -> Result<Self, VmmError> {
        kvm_available().map_err(VmmError::Unavailable)?;
        host_config.register_bindings = 0;
        if host_config.doorbell_port.is_none() {
            return Err(VmmError::NoDoorbell);
        }
        let kvm = Kvm::new().map_err(kvm_err("open"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)])
            .map_err(VmmError::MemoryMap)?;
        let host_addr = mem
            .get_host_address(GuestAddress(0))
            .map_err(VmmError::Memory)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: mem_size as u64,
            userspace_addr: host_addr as u64,
            flags: 0,
        };
        // SAFETY: `host_addr` is the start of the anonymous mapping of `mem_size` bytes that
        // backs `mem`, a single region created just above. `mem` is stored in the returned
        // `KvmVmm` after `vm` and `vcpu`, so it is dropped after both file descriptors are
        // closed: the mapping outlives its registration with KVM.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;

        let (mut host, _journal) =
            mock_host(host_config, 4096, 4, 200).map_err(VmmError::HostConfig)?;
        let vm_id = host.add_vm(vm_config).map_err(VmmError::HostConfig)?;

        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                e.ecx |= vir_abi::discovery::CPUID1_ECX_HYPERVISOR;
            }
        }
        let base = host.config().cpuid_base;
        for leaf in [base, base + vir_abi::discovery::CPUID_INFO_OFFSET] {
            if let Some([eax, ebx, ecx, edx]) = host.cpuid(vm_id, leaf).map_err(VmmError::Host)? {
                let entry = kvm_cpuid_entry2 {
                    function: leaf,
                    eax,
                    ebx,
                    ecx,
                    edx,
                    ..Default::default()
                };
                cpuid.push(entry).map_err(|_| VmmError::Kvm {
                    op: "cpuid push",
                    errno: 7,
                })?;
            }
        }
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        Ok(KvmVmm {
            vcpu,
            vm,
            host,
            vm_id,
            io: IoLog::default(),
            mem,
        })
    }

    /// Load real-mode code at `gpa` (at or above 0x1000) and point the vCPU at it (CS base 0,
    /// `RIP = gpa`).
    ///
    /// Also installs a real-mode interrupt vector table whose first 32 entries point at stubs
    /// that report `EXCEPTION_MARKER | vector` on [`REPORT_PORT`] and halt, so a faulting guest
    /// program ends in a defined way instead of running through memory.
    pub fn load(&mut self, gpa: u64, code: &[u8]) -> Result<(), VmmError> {
        if gpa < 0x1000
            || gpa
                .checked_add(code.len() as u64)
                .is_none_or(|end| end > 0x1_0000)
        {
            return Err(VmmError::ProgramTooLarge(code.len()));
        }
        for v in 0..EXCEPTIONS {
            let stub = STUBS + STUB_SIZE * u64::from(v);
            let mut p = Program::new();
            p.mov_imm(Reg::Eax, EXCEPTION_MARKER | v)
                .report(REPORT_PORT, Reg::Eax)
                .hlt();
            self.mem
                .write_slice(p.bytes(), GuestAddress(stub))
                .map_err(VmmError::Memory)?;
            // IVT entry: offset (16 bits), then segment 0.
            let entry = (stub as u32).to_le_bytes();
            self.mem
                .write_slice(&entry, GuestAddress(u64::from(v) * 4))
                .map_err(VmmError::Memory)?;
        }
        self.mem
            .write_slice(code, GuestAddress(gpa))
            .map_err(VmmError::Memory)?;
        let mut sregs = self.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        self.vcpu
            .set_sregs(&sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        let mut regs = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rip = gpa;
        regs.rflags = 2;
        self.vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        Ok(())
    }

    /// Run the vCPU until it halts, serving port writes: the vIR doorbell through the reference
    /// host, [`REPORT_PORT`] into the I/O log. At most `max_exits` exits.
    pub fn run(&mut self, max_exits: u32) -> Result<&IoLog, VmmError> {
        for _ in 0..max_exits {
            let exit = match self.vcpu.run().map_err(kvm_err("KVM_RUN"))? {
                VcpuExit::Hlt => return Ok(&self.io),
                VcpuExit::IoOut(port, data) => {
                    let bytes: [u8; 4] = data.try_into().map_err(|_| VmmError::BadIoSize {
                        port,
                        size: data.len(),
                    })?;
                    Ok((port, u32::from_le_bytes(bytes)))
                }
                VcpuExit::IoIn(port, _) => Err(port),
                VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => {
                    return Err(VmmError::UnexpectedExit("MMIO"));
                }
                VcpuExit::Shutdown => return Err(VmmError::UnexpectedExit("shutdown")),
                VcpuExit::FailEntry(..) => return Err(VmmError::UnexpectedExit("entry failure")),
                VcpuExit::InternalError => return Err(VmmError::UnexpectedExit("internal error")),
                _ => return Err(VmmError::UnexpectedExit("other")),
            };
            let (port, value) = match exit {
                Ok(pv) => pv,
                Err(port) => {
                    let rip = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?.rip;
                    return Err(VmmError::PortRead { port, rip });
                }
            };
            if port == REPORT_PORT {
                self.io.writes.push(IoWrite::Report(value));
                continue;
            }
            let outcome = self
                .host
                .pio_write(self.vm_id, 0, port, value, &self.mem)
                .map_err(VmmError::Host)?;
            self.io.writes.push(IoWrite::Host {
                port,
                value,
                outcome,
            });
        }
        Err(VmmError::TooManyExits(max_exits))
    }

    /// [`KvmVmm::run`] on a thread of its own, giving up after `deadline` of wall-clock time.
    ///
    /// A guest that loops without exiting would otherwise block `KVM_RUN` forever; this bounds
    /// what a test waits. On success the VMM comes back with the I/O log of the run.
    pub fn run_bounded(
        mut self,
        max_exits: u32,
        deadline: std::time::Duration,
    ) -> Result<(KvmVmm, IoLog), VmmError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = self.run(max_exits).cloned();
            // The receiver may have given up; nothing to do then.
            let _ = tx.send(result.map(|log| (self, log)));
        });
        match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(VmmError::Deadline(deadline)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(VmmError::VcpuThreadPanicked)
            }
        }
    }

    /// The guest's RAM (to lay out call blocks and read results, as the guest kernel would).
    pub fn memory(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    /// The reference host serving the VM.
    pub fn host(&self) -> &MockHost {
        &self.host
    }

    /// The reference host's id for this VM.
    pub fn vm_id(&self) -> VmId {
        self.vm_id
    }

    /// The KVM VM file descriptor.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }
}

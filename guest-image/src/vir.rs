//! The guest's side of the vIR bindings on a real vCPU: the `CPUID` instruction for discovery
//! and the port-I/O doorbell as the [`Hypervisor`] transport.

use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO};
use vir_abi::status::Status;
use vir_abi::wire::DoorbellBlock;
use vir_guest::{Cpuid, CpuidResult, Hypervisor};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use crate::arch::{MAX_CPUS, outl};

/// The `CPUID` instruction.
pub struct HwCpuid;

impl Cpuid for HwCpuid {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// One vCPU's call page: the doorbell block at 0, the request at 64, the response at 128 (all
/// 8-byte aligned and within the page, `VIR-MEM-G-001`).
#[repr(C, align(4096))]
struct CallPage([u8; 4096]);

static mut PAGES: [CallPage; MAX_CPUS] = [const { CallPage([0; 4096]) }; MAX_CPUS];

const REQUEST: usize = 64;
const RESPONSE: usize = 128;

/// The doorbell transport of one vCPU (each vCPU has its own call page: the host latches the low
/// GPA half per vCPU, so calls of different vCPUs never share a block).
pub struct Doorbell {
    port: u16,
    page: *mut CallPage,
}

impl Doorbell {
    /// The transport of vCPU `cpu` (below [`MAX_CPUS`]) through the doorbell at `port`. Only
    /// that vCPU may use it.
    pub fn new(port: u16, cpu: usize) -> Self {
        Doorbell {
            port,
            page: (&raw mut PAGES)
                .cast::<CallPage>()
                .wrapping_add(cpu.min(MAX_CPUS - 1)),
        }
    }

    /// The guest-physical address of the call page (identity mapped).
    pub fn page_gpa(&self) -> u64 {
        self.page as u64
    }

    /// Writes the low GPA half only: an exit the host serves without making a call (the no-op
    /// ring the figures compare calls with).
    pub fn latch_only(&mut self) {
        outl(self.port + DOORBELL_GPA_LO, self.page_gpa() as u32);
    }
}

impl Hypervisor for Doorbell {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        if request.len() > RESPONSE - REQUEST || response.len() > 4096 - RESPONSE {
            return crate::TRANSPORT_TOO_LARGE;
        }
        let gpa = self.page_gpa();
        let block = DoorbellBlock {
            call: U32::new(u32::from(code.0)),
            status: U32::new(u32::MAX),
            request_gpa: U64::new(if request.is_empty() {
                0
            } else {
                gpa + REQUEST as u64
            }),
            request_len: U32::new(request.len() as u32),
            response_len: U32::new(response.len() as u32),
            response_gpa: U64::new(if response.is_empty() {
                0
            } else {
                gpa + RESPONSE as u64
            }),
        };
        // SAFETY: the page belongs to this vCPU (see `new`); the host reads and writes it only
        // during the `OUT` below, which is a compiler barrier (`outl` is not `nomem`).
        let page = unsafe { &mut (*self.page).0 };
        page[..32].copy_from_slice(block.as_bytes());
        page[REQUEST..REQUEST + request.len()].copy_from_slice(request);
        outl(self.port + DOORBELL_GPA_LO, gpa as u32);
        outl(self.port + DOORBELL_GPA_HI, (gpa >> 32) as u32);
        let status = u32::from_le_bytes([page[4], page[5], page[6], page[7]]);
        response.copy_from_slice(&page[RESPONSE..RESPONSE + response.len()]);
        Status(status)
    }
}

//! vIR on real KVM: discovery through CPUID and calls through the port-I/O doorbell, served by
//! the reference host; and the reason the doorbell exists — KVM does not forward VMCALL.
//!
//! Every test skips, printing why, when `/dev/kvm` cannot be used (and fails instead under
//! `REQUIRE_KVM=1`, as `.ci/run` sets where `/dev/kvm` exists).

use vir_abi::call::CallCode;
use vir_abi::discovery::{InfoLeaf, signature_regs};
use vir_abi::feature::Features;
use vir_abi::hw::vtd::{Irte, RemappableMsi};
use vir_abi::hw::{ApicMode, msi::MsiMessage};
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DoorbellBlock,
    NegotiateRequest, NegotiateResponse, QueryResponse, StorageKind, Target, call_layout,
};
use vir_host::config::{
    DeviceConfig, HostConfig, Quotas, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
};
use vir_host::{DoorbellIgnored, IrteTable, PioOutcome};
use vir_kvm::program::{HypercallInsn, Program, Reg};
use vir_kvm::{EXCEPTION_MARKER, IoLog, IoWrite, KvmVmm, REPORT_PORT, kvm_available};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

const CODE: u64 = 0x1000;
/// Far above what these few instructions take; only a guest stuck without exits reaches it.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Run the loaded program until it halts, at most `max_exits` exits.
fn run(vmm: KvmVmm, max_exits: u32) -> (KvmVmm, IoLog) {
    vmm.run_bounded(max_exits, DEADLINE).expect("guest halts")
}
const PORT: u16 = 0x5650;
const DEVICE: u32 = 0x0000_0300;
const RID: u16 = 0x8100;

fn vm_config() -> VmConfig {
    VmConfig {
        vcpus: vec![VcpuConfig {
            apic_id: 0,
            pda: 0x10_0000,
            pcpu: 0,
        }],
        devices: vec![DeviceConfig {
            device_id: DEVICE,
            requester_id: RID,
            source_validation: SourceValidation::RequesterId,
            storage: StorageSizes {
                msix_entries: 64,
                ..Default::default()
            },
        }],
        quotas: Quotas::default(),
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

fn vmm() -> Option<KvmVmm> {
    if let Err(why) = kvm_available() {
        assert!(
            std::env::var_os("REQUIRE_KVM").is_none_or(|v| v != "1"),
            "REQUIRE_KVM=1 but KVM cannot be used: {why}"
        );
        println!("skipped: {why}");
        return None;
    }
    let config = HostConfig {
        doorbell_port: Some(PORT),
        ..HostConfig::default()
    };
    Some(KvmVmm::new(config, vm_config(), 1 << 20).expect("KVM VM"))
}

/// Lay a doorbell block at `block` for `code`, with its request (if any) at `block + 0x100` and
/// its response at `block + 0x200`; the status is preset to all ones so a block the host ignores
/// is told apart from a real status.
fn lay_block(vmm: &KvmVmm, block: u64, code: CallCode, request: &[u8]) -> u64 {
    // An unknown call is laid with empty buffers.
    let (req_len, resp_len) =
        call_layout(code).map_or((0, 0), |l| (l.request_len(), l.response_len()));
    let mem = vmm.memory();
    let (req_gpa, resp_gpa) = (block + 0x100, block + 0x200);
    mem.write_slice(request, GuestAddress(req_gpa)).unwrap();
    let b = DoorbellBlock {
        call: U32::new(u32::from(code.0)),
        status: U32::new(u32::MAX),
        request_gpa: U64::new(if req_len == 0 { 0 } else { req_gpa }),
        request_len: U32::new(req_len),
        response_len: U32::new(resp_len),
        response_gpa: U64::new(if resp_len == 0 { 0 } else { resp_gpa }),
    };
    mem.write_slice(b.as_bytes(), GuestAddress(block)).unwrap();
    resp_gpa
}

fn block_status(vmm: &KvmVmm, block: u64) -> Status {
    let b: DoorbellBlock = read(vmm, block);
    Status(b.status.get())
}

fn read<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + IntoBytes>(
    vmm: &KvmVmm,
    gpa: u64,
) -> T {
    let mut t = T::new_zeroed();
    vmm.memory()
        .read_slice(t.as_mut_bytes(), GuestAddress(gpa))
        .unwrap();
    t
}

/// VIR-DISC-H-001, VIR-DISC-H-003, VIR-DISC-G-001, VIR-REG-H-004, VIR-DB-H-002, VIR-DB-H-003,
/// VIR-DB-H-007: a real vCPU finds the vIR leaves through CPUID
/// (hypervisor bit first), then negotiates, allocates and activates an MSI-X vector through the
/// doorbell; the host's answers land in guest RAM, and the IRTE behind the message is the
/// device's.
#[test]
fn discovery_and_calls_through_the_doorbell_on_kvm() {
    let Some(mut vmm) = vmm() else { return };
    let base = vmm.host().config().cpuid_base;
    let blocks = [0x8000u64, 0x9000, 0xA000, 0xB000];
    lay_block(&vmm, blocks[0], CallCode::QUERY, &[]);
    let neg = NegotiateRequest {
        version: U16::new(1),
        features: U64::new((Features::MSIX | Features::RESERVATION).0),
        ..Default::default()
    };
    lay_block(&vmm, blocks[1], CallCode::NEGOTIATE, neg.as_bytes());
    let alloc = AllocateRequest {
        device_id: U32::new(DEVICE),
        kind: StorageKind::MSIX.0,
        index: U32::new(5),
        ..Default::default()
    };
    lay_block(&vmm, blocks[2], CallCode::ALLOCATE, alloc.as_bytes());
    // The handle the host will return is not known when the program is laid out: the guest
    // program activates whatever ALLOCATE wrote, so this test copies it in between two runs.

    let mut p = Program::new();
    p.cpuid(1).report(REPORT_PORT, Reg::Ecx);
    p.cpuid(base)
        .report(REPORT_PORT, Reg::Eax)
        .report(REPORT_PORT, Reg::Ebx);
    p.cpuid(base)
        .report(REPORT_PORT, Reg::Ecx)
        .cpuid(base)
        .report(REPORT_PORT, Reg::Edx);
    p.cpuid(base + 1)
        .report(REPORT_PORT, Reg::Eax)
        .cpuid(base + 1)
        .report(REPORT_PORT, Reg::Ebx);
    p.cpuid(base + 1).report(REPORT_PORT, Reg::Ecx);
    for &b in &blocks[..3] {
        p.ring_doorbell(PORT, b);
    }
    p.hlt();
    vmm.load(CODE, p.bytes()).unwrap();
    let (mut vmm, log) = run(vmm, 1000);

    let r = log.reports();
    assert_eq!(r.len(), 8, "{r:x?}");
    assert_ne!(
        r[0] & vir_abi::discovery::CPUID1_ECX_HYPERVISOR,
        0,
        "hypervisor bit"
    );
    assert_eq!(r[1], base + 1, "highest vIR leaf");
    assert_eq!(
        [r[2], r[3], r[4]],
        signature_regs(),
        "signature in EBX, ECX, EDX"
    );
    let info = InfoLeaf::decode(r[5], r[6], r[7], 0).expect("info leaf");
    assert_eq!((info.min_version, info.max_version), (1, 1));
    assert_ne!(
        info.bindings & vir_abi::discovery::binding::PORT_DOORBELL,
        0
    );
    assert_eq!(info.doorbell_port, PORT);

    assert_eq!(block_status(&vmm, blocks[0]), Status::SUCCESS);
    let q: QueryResponse = read(&vmm, blocks[0] + 0x200);
    assert_eq!((q.min_version.get(), q.max_version.get()), (1, 1));
    assert_eq!(block_status(&vmm, blocks[1]), Status::SUCCESS);
    let n: NegotiateResponse = read(&vmm, blocks[1] + 0x200);
    assert_eq!(n.features.get(), (Features::MSIX | Features::RESERVATION).0);
    assert_eq!(block_status(&vmm, blocks[2]), Status::SUCCESS);
    let a: AllocateResponse = read(&vmm, blocks[2] + 0x200);
    assert_eq!(a.count.get(), 1);

    // Second run: ACTIVATE the vector on vCPU 0, vector 0x41.
    let act = ActivateRequest {
        handle: a.handle,
        target: Target::new(0, 0x41),
        ..Default::default()
    };
    let resp = lay_block(&vmm, blocks[3], CallCode::ACTIVATE, act.as_bytes());
    let mut p = Program::new();
    p.ring_doorbell(PORT, blocks[3]).hlt();
    vmm.load(CODE, p.bytes()).unwrap();
    let (vmm, _) = run(vmm, 100);
    assert_eq!(block_status(&vmm, blocks[3]), Status::SUCCESS);
    let m: ActivateResponse = read(&vmm, resp);
    let msg = MsiMessage {
        address_lo: m.address_lo.get(),
        address_hi: m.address_hi.get(),
        data: m.data.get(),
    };
    let remap = RemappableMsi::decode(msg).expect("VT-d remappable message");
    assert!(remap.shv);
    let raw = vmm
        .host()
        .table()
        .read(vir_host::IrteTableId::Unit, u32::from(remap.irte_index()))
        .expect("index in table");
    let irte = Irte::decode(raw, ApicMode::X2Apic).expect("IRTE decodes");
    match irte {
        Irte::Posted(p) => {
            assert!(p.present);
            assert_eq!(p.vector, 0x41);
            assert_eq!(
                p.sid, RID,
                "VIR-SEC-H-001: SID is the device's requester id"
            );
            assert_eq!(p.pda, 0x10_0000);
        }
        Irte::Remapped(r) => panic!("default host mode is posted, got {r:?}"),
    }
}

/// VIR-DB-H-004, VIR-DB-H-005: a block the host cannot use (misaligned) is ignored and its status untouched; a
/// block naming an unknown call gets UNKNOWN_CALL written back — both from a real vCPU.
#[test]
fn hostile_doorbell_blocks_on_kvm() {
    let Some(mut vmm) = vmm() else { return };
    lay_block(&vmm, 0x8000, CallCode(0x7777), &[]);
    let mut p = Program::new();
    p.ring_doorbell(PORT, 0x8004)
        .ring_doorbell(PORT, 0x8000)
        .hlt();
    vmm.load(CODE, p.bytes()).unwrap();
    let (vmm, log) = run(vmm, 100);
    assert_eq!(
        log.host_outcomes(),
        vec![
            PioOutcome::Latched,
            PioOutcome::Ignored(DoorbellIgnored::Misaligned(0x8004)),
            PioOutcome::Latched,
            PioOutcome::Completed(Status::UNKNOWN_CALL),
        ]
    );
    assert_eq!(block_status(&vmm, 0x8000), Status::UNKNOWN_CALL);
    assert!(
        log.writes
            .iter()
            .all(|w| matches!(w, IoWrite::Host { port, .. } if *port == PORT || *port == PORT + 4))
    );
}

/// Why the doorbell binding exists (spec §3.3): KVM never forwards a vIR hypercall to the VMM.
/// On bare-metal KVM the guest gets -KVM_ENOSYS (-1000) in EAX; under nested virtualisation some
/// L0 hypervisors make the instruction raise #UD instead. Either way the VMM never sees the call.
/// The CPU's own instruction is used (VMMCALL on AMD, VMCALL on Intel): the other one is patched
/// by KVM's #UD emulation, which loops under some nested setups.
#[test]
fn kvm_does_not_forward_vir_hypercalls() {
    let Some(mut vmm) = vmm() else { return };
    let insn = if is_amd() {
        HypercallInsn::Vmmcall
    } else {
        HypercallInsn::Vmcall
    };
    let mut p = Program::new();
    p.mov_imm(Reg::Eax, vir_abi::call::encode_rax(CallCode::QUERY) as u32)
        .mov_imm(Reg::Ebx, 0)
        .hypercall(insn)
        .report(REPORT_PORT, Reg::Eax)
        .hlt();
    vmm.load(CODE, p.bytes()).unwrap();
    let (vmm, log) = run(vmm, 100);
    let reports = log.reports();
    println!("{insn:?}: guest saw {reports:x?}");
    const ENOSYS: u32 = (-1000i32) as u32;
    const UD: u32 = EXCEPTION_MARKER | 6;
    assert!(
        reports == [ENOSYS] || reports == [UD],
        "{insn:?}: expected -KVM_ENOSYS in EAX or #UD, got {reports:x?}"
    );
    assert!(
        log.host_outcomes().is_empty(),
        "no port write reached the host"
    );
    assert_eq!(
        vmm.host().counters().calls(CallCode::QUERY),
        0,
        "the host never saw the call"
    );
}

fn is_amd() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.contains("AuthenticAMD"))
}

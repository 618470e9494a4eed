//! The guest side of the bindings: simvm's transports (the register binding's
//! [`VmcallTransport`], the port-I/O [`DoorbellTransport`]) and the guest's choice of binding,
//! against the reference host.
//!
//! The transports are what a guest kernel's entry code does: place the buffers, load the
//! registers or ring the doorbell, read the status. They are checked here through what the host
//! and guest memory see; the call functions above them are checked in
//! `guest-ref/tests/requirements.rs`.

use std::cell::RefCell;
use std::rc::Rc;

use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO};
use vir_abi::discovery::binding;
use vir_abi::feature::Features;
use vir_abi::status::{Status, errno};
use vir_abi::wire::{DoorbellBlock, NegotiateRequest, QueryResponse, call_layout};
use vir_guest::hypercall::{self, NO_STATUS};
use vir_guest::{CallError, Hypervisor};
use vir_host::config::{HostConfig, Quotas, VcpuConfig, VmConfig};
use vir_host::{Binding, PioOutcome, VmId};
use vir_platform::{Machine, MachineConfig};
use vir_simvm::guest_env::{
    DOORBELL_REQUEST_OFFSET, DoorbellTransport, RESPONSE_OFFSET, VmcallTransport,
};
use vir_simvm::{
    CallBinding, SharedHost, SimHost, SimIrteTable, SimPhysicalIrqs, SimRouting, VmSpec,
    WorldBuilder, WorldError,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// Size of the low RAM of the test VMs.
const LOW_RAM: usize = 0x1_0000;
/// A page of RAM above 4 GiB (its GPA needs GPA_HI).
const HIGH_PAGE: u64 = 0x1_0000_0000;
/// The doorbell port base the tests' hosts offer.
const PORT: u16 = 0x5650;

/// A reference host over a simulated machine with one VM (no devices) of `vcpus` vCPUs, and
/// that VM's memory: [`LOW_RAM`] bytes from 0 and one page at [`HIGH_PAGE`].
struct Bench {
    host: SharedHost,
    vm: VmId,
    mem: GuestMemoryMmap,
}

fn bench(config: HostConfig, vcpus: u32) -> Bench {
    let machine = Rc::new(RefCell::new(Machine::new(&MachineConfig::new(2)).unwrap()));
    let host = SimHost::new(
        config,
        SimIrteTable::new(Rc::clone(&machine)),
        SimRouting::new(Rc::clone(&machine), 64),
        SimPhysicalIrqs::new(Rc::clone(&machine)),
    )
    .unwrap();
    let host: SharedHost = Rc::new(RefCell::new(host));
    let vm = host
        .borrow_mut()
        .add_vm(VmConfig {
            vcpus: (0..vcpus)
                .map(|i| VcpuConfig {
                    apic_id: i,
                    pda: 0x10_0000 + 64 * u64::from(i),
                    pcpu: 0,
                })
                .collect(),
            devices: Vec::new(),
            quotas: Quotas::default(),
            guest_writable: vir_host::GuestWritable::AllRam,
        })
        .unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), LOW_RAM),
        (GuestAddress(HIGH_PAGE), 0x1000),
    ])
    .unwrap();
    Bench { host, vm, mem }
}

fn host_config() -> HostConfig {
    HostConfig {
        register_bindings: binding::VMCALL,
        doorbell_port: Some(PORT),
        ..HostConfig::default()
    }
}

impl Bench {
    fn vmcall(&self, vcpu: u32, page: u64) -> VmcallTransport {
        VmcallTransport::new(Rc::clone(&self.host), self.vm, vcpu, self.mem.clone(), page)
    }

    fn doorbell(&self, vcpu: u32, page: u64) -> DoorbellTransport {
        DoorbellTransport::new(
            Rc::clone(&self.host),
            self.vm,
            vcpu,
            self.mem.clone(),
            PORT,
            page,
        )
    }

    fn read<const N: usize>(&self, gpa: u64) -> [u8; N] {
        let mut b = [0u8; N];
        self.mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
        b
    }

    fn block(&self, gpa: u64) -> DoorbellBlock {
        DoorbellBlock::read_from_bytes(&self.read::<32>(gpa)).unwrap()
    }

    fn statuses(&self, s: Status) -> u64 {
        self.host.borrow().counters().statuses(s)
    }

    fn total_calls(&self) -> u64 {
        self.host.borrow().counters().total_calls()
    }
}

fn negotiate_request() -> NegotiateRequest {
    NegotiateRequest {
        version: U16::new(1),
        reserved0: U16::ZERO,
        reserved1: U32::ZERO,
        features: U64::new(Features::V1_DEFINED.0),
    }
}

// ---------------------------------------------------------------------------------------------
// The binding chosen (§2.4, §3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_disc_g_003_vir_reg_g_001_the_guest_calls_only_through_an_offered_binding() {
    // VIR-DISC-G-003 / VIR-REG-G-001: a guest built for VMCALL on a host offering VMMCALL and
    // the doorbell does not boot vIR through VMCALL; one built for the doorbell on a host
    // without it does not ring. (The simulation has no VMMCALL transport: no guest here ever
    // executes VMMCALL, offered or not.)
    let vm = |b: CallBinding| VmSpec::new(vec![0, 1]).with_binding(b);
    let refused = [
        (
            binding::VMMCALL,
            Some(PORT),
            CallBinding::Vmcall,
            binding::VMMCALL | binding::PORT_DOORBELL,
        ),
        (
            binding::VMCALL,
            None,
            CallBinding::Doorbell,
            binding::VMCALL,
        ),
        (
            binding::VMMCALL,
            None,
            CallBinding::Doorbell,
            binding::VMMCALL,
        ),
    ];
    for (register, doorbell, b, offered) in refused {
        let built = WorldBuilder::new()
            .host_bindings(register, doorbell)
            .vm(vm(b))
            .build();
        assert_eq!(
            built.err(),
            Some(WorldError::BindingNotOffered {
                binding: b,
                offered
            })
        );
    }
    // Offered: every call of the guest (QUERY and NEGOTIATE at boot) goes through that binding
    // and no other.
    for (register, doorbell, b, used, unused) in [
        (
            binding::VMMCALL,
            Some(PORT),
            CallBinding::Doorbell,
            Binding::Doorbell,
            Binding::Register,
        ),
        (
            binding::VMCALL,
            None,
            CallBinding::Vmcall,
            Binding::Register,
            Binding::Doorbell,
        ),
    ] {
        let w = WorldBuilder::new()
            .host_bindings(register, doorbell)
            .vm(vm(b))
            .build()
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        let v = w.vm(0).unwrap();
        assert_eq!(
            v.interface().info.bindings,
            register | doorbell.map_or(0, |_| binding::PORT_DOORBELL)
        );
        assert_eq!(v.guest().domain().hypervisor().binding(), b);
        let c = w.host().counters();
        assert_eq!(c.calls(CallCode::QUERY), 1);
        assert_eq!(c.calls(CallCode::NEGOTIATE), 1);
        assert_eq!(c.by_binding(used), c.total_calls(), "{b}");
        assert_eq!(c.by_binding(unused), 0, "{b}");
        assert_eq!(c.by_binding(Binding::Memory), 0, "{b}");
    }
}

// ---------------------------------------------------------------------------------------------
// Register binding (§3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_reg_g_003_rax_with_bits_63_32_set_fails_with_an_unknown_status() {
    // VIR-REG-G-003: a VMM whose kernel does not forward the call (here: a host that offers no
    // vIR, so VMCALL reaches KVM, which returns -KVM_ENOSYS in RAX). The call fails with a
    // status no version names, surfaced as EIO, and the response is not taken.
    let b = bench(
        HostConfig {
            physical_ir_enabled: false,
            ..host_config()
        },
        1,
    );
    let mut t = b.vmcall(0, 0x1000);
    let e = hypercall::query(&mut t).unwrap_err();
    assert_eq!(
        e,
        CallError {
            call: CallCode::QUERY,
            status: NO_STATUS
        }
    );
    assert!(!e.status.is_known());
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(t.stats().not_claimed, 1);
    assert_eq!(b.total_calls(), 0);
    // The same transport on a host that claims the call: RAX is the status.
    let b = bench(host_config(), 1);
    let mut t = b.vmcall(0, 0x1000);
    let q = hypercall::query(&mut t).unwrap();
    assert_eq!((q.min_version.get(), q.max_version.get()), (1, 1));
    assert_eq!(t.stats().not_claimed, 0);
}

#[test]
fn vir_mem_g_001_register_binding_buffers_aligned_within_one_page() {
    // VIR-MEM-G-001: the transport's page is taken page-aligned; the request is at its start,
    // the response at offset 0x800: both 8-byte aligned, inside the page, apart. The host,
    // which refuses anything else with BAD_BUFFER (VIR-MEM-H-003..005), accepts every call.
    let b = bench(host_config(), 1);
    let mut t = b.vmcall(0, 0x3ffc);
    let req = negotiate_request();
    let resp = hypercall::negotiate(&mut t, &req).unwrap();
    assert_eq!(b.read::<16>(0x3000), req.as_bytes());
    assert_eq!(b.read::<16>(0x3000 + RESPONSE_OFFSET), resp.as_bytes());
    assert_eq!(
        b.read::<4>(0x3ffc),
        [0; 4],
        "nothing written at the unaligned GPA"
    );
    hypercall::query_quota(&mut t).unwrap();
    hypercall::query(&mut t).unwrap();
    hypercall::reset(&mut t).unwrap();
    assert_eq!(b.statuses(Status::BAD_BUFFER), 0);
    assert_eq!(b.statuses(Status::SUCCESS), 4);
    // The request was written once and left alone: after the call it is still what the guest
    // asked (the host reads it, never writes it).
    assert_eq!(b.read::<16>(0x3000), req.as_bytes());
    // A buffer that would leave the page or reach the other buffer is never placed: the call
    // fails locally, the host sees nothing.
    let n = b.total_calls();
    let long = [0u8; RESPONSE_OFFSET as usize + 1];
    let mut small = [0u8; 8];
    assert_eq!(
        t.call(CallCode::ALLOCATE, &long, &mut small),
        Status::BAD_LENGTH
    );
    let mut long_resp = [0u8; RESPONSE_OFFSET as usize + 1];
    assert_eq!(
        t.call(CallCode::QUERY, &[], &mut long_resp),
        Status::BAD_LENGTH
    );
    assert_eq!(t.stats().refused, 2);
    assert_eq!(b.total_calls(), n);
}

#[test]
fn vir_mem_g_002_empty_buffers_have_gpa_0_and_sizes_are_exact() {
    // VIR-MEM-G-002, doorbell binding: the block records what the transport passed.
    let b = bench(host_config(), 1);
    let page = 0x2000;
    let mut t = b.doorbell(0, page);
    let size = |c| call_layout(c).map(|l| (l.request_len(), l.response_len()));
    hypercall::query(&mut t).unwrap();
    let blk = b.block(page);
    assert_eq!(
        (blk.request_gpa.get(), blk.request_len.get()),
        (0, 0),
        "QUERY has no request"
    );
    assert_eq!(
        (blk.response_gpa.get(), blk.response_len.get()),
        (page + RESPONSE_OFFSET, size(CallCode::QUERY).unwrap().1)
    );
    assert_eq!(blk.response_len.get() as usize, size_of::<QueryResponse>());
    hypercall::negotiate(&mut t, &negotiate_request()).unwrap();
    let blk = b.block(page);
    assert_eq!(
        (blk.request_len.get(), blk.response_len.get()),
        size(CallCode::NEGOTIATE).unwrap()
    );
    assert_eq!(blk.request_gpa.get(), page + DOORBELL_REQUEST_OFFSET);
    hypercall::reset(&mut t).unwrap();
    let blk = b.block(page);
    assert_eq!(
        (
            blk.request_gpa.get(),
            blk.request_len.get(),
            blk.response_gpa.get(),
            blk.response_len.get()
        ),
        (0, 0, 0, 0),
        "RESET has neither buffer"
    );
    // Register binding: RBX/RDX are not visible here, but the host refuses a zero-length
    // buffer with a GPA other than 0 (BAD_BUFFER, VIR-MEM-H-002) and any other size
    // (BAD_LENGTH): QUERY, RESET and the rest go through.
    let b = bench(host_config(), 1);
    let mut t = b.vmcall(0, 0x1000);
    hypercall::query(&mut t).unwrap();
    hypercall::negotiate(&mut t, &negotiate_request()).unwrap();
    hypercall::query_quota(&mut t).unwrap();
    hypercall::reset(&mut t).unwrap();
    assert_eq!(b.statuses(Status::SUCCESS), 4);
    assert_eq!(b.statuses(Status::BAD_BUFFER), 0);
    assert_eq!(b.statuses(Status::BAD_LENGTH), 0);
}

// ---------------------------------------------------------------------------------------------
// Doorbell binding (§3.4)
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_db_g_001_gpa_lo_then_gpa_hi_from_the_calling_vcpu() {
    // VIR-DB-G-001: the ring takes GPA_HI with the calling vCPU's latch. A stale latch (a bogus
    // GPA_LO left on this vCPU) is overwritten by the transport's GPA_LO before it rings, and
    // another vCPU's GPA_LO in between does not matter.
    let b = bench(host_config(), 2);
    let mut t0 = b.doorbell(0, 0x2000);
    let mut t1 = b.doorbell(1, 0x4000);
    let latch = |vcpu, value| {
        b.host
            .borrow_mut()
            .pio_write(b.vm, vcpu, PORT + DOORBELL_GPA_LO, value, &b.mem)
            .unwrap()
    };
    assert_eq!(latch(0, 0xdead_b000), PioOutcome::Latched);
    hypercall::query(&mut t0).unwrap();
    assert_eq!(
        t0.last_outcome(),
        Some(PioOutcome::Completed(Status::SUCCESS))
    );
    assert_eq!(latch(1, 0x0bad_0000), PioOutcome::Latched);
    hypercall::negotiate(&mut t0, &negotiate_request()).unwrap();
    assert_eq!(latch(0, 0x0bad_0008), PioOutcome::Latched);
    hypercall::query(&mut t1).unwrap();
    assert_eq!(b.host.borrow().counters().doorbell_ignored(), 0);
    assert_eq!(b.host.borrow().counters().by_binding(Binding::Doorbell), 3);
    // Ringing with GPA_HI alone uses the latch: had the transport written GPA_HI first, its
    // ring would have taken the bogus latch and been ignored.
    assert_eq!(latch(0, 0xdead_b000), PioOutcome::Latched);
    let stale = b
        .host
        .borrow_mut()
        .pio_write(b.vm, 0, PORT + DOORBELL_GPA_HI, 0, &b.mem)
        .unwrap();
    assert!(matches!(stale, PioOutcome::Ignored(_)), "{stale:?}");
    // A block above 4 GiB: the high half goes to GPA_HI.
    let mut high = b.doorbell(0, HIGH_PAGE);
    hypercall::query(&mut high).unwrap();
    assert_eq!(
        high.last_outcome(),
        Some(PioOutcome::Completed(Status::SUCCESS))
    );
    let blk = b.block(HIGH_PAGE);
    assert_eq!(blk.status.get(), 0);
    assert_eq!(blk.response_gpa.get(), HIGH_PAGE + RESPONSE_OFFSET);
}

#[test]
fn vir_db_g_002_block_aligned_in_one_page_of_ram_buffers_outside() {
    // VIR-DB-G-002: the block at the start of the transport's page (taken page-aligned), the
    // request and the response in the same page past the block's 32 bytes.
    let b = bench(host_config(), 1);
    let mut t = b.doorbell(0, 0x2abc);
    hypercall::negotiate(&mut t, &negotiate_request()).unwrap();
    let blk = b.block(0x2000);
    assert_eq!(blk.call.get(), u32::from(CallCode::NEGOTIATE.0));
    assert_eq!(blk.status.get(), Status::SUCCESS.0);
    let block = 0x2000..0x2000 + 32;
    for (gpa, len) in [
        (blk.request_gpa.get(), u64::from(blk.request_len.get())),
        (blk.response_gpa.get(), u64::from(blk.response_len.get())),
    ] {
        assert_eq!(gpa % 8, 0);
        assert!(gpa >= block.end || gpa + len <= block.start, "{gpa:#x}");
        assert_eq!(gpa / 0x1000, (gpa + len - 1) / 0x1000, "{gpa:#x}");
    }
    assert_eq!(b.statuses(Status::BAD_BUFFER), 0);
    assert_eq!(b.host.borrow().counters().doorbell_ignored(), 0);
    // A page that is not RAM: the block cannot be written, the doorbell is not rung.
    let mut hole = b.doorbell(0, 0x8000_0000);
    assert_eq!(
        hypercall::query(&mut hole).unwrap_err().status,
        Status::BAD_BUFFER
    );
    assert_eq!(hole.stats().memory_errors, 1);
    assert_eq!(hole.last_outcome(), None);
    assert_eq!(b.host.borrow().counters().by_binding(Binding::Doorbell), 1);
    assert_eq!(b.host.borrow().counters().doorbell_ignored(), 0);
}

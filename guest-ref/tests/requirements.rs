//! The guest requirements of the specification, checked on the reference guest through its
//! public API: discovery (§2.4), the call functions (§3), negotiation and reset (§4.4, §4.5), the
//! interrupt lifecycle against the host model (§5, §6), statuses (§7), the MSI format (§8.6) and
//! the legacy scheme (§9).
//!
//! What the transports do with the buffers (alignment, pages, GPA 0, the doorbell ports, the
//! binding chosen) is checked on simvm's transports in `simvm/tests/guest_bindings.rs`.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use common::*;
use vir_abi::call::CallCode;
use vir_abi::discovery::{
    CPUID1_ECX_HYPERVISOR, DiscoveryError as InfoError, InfoLeaf, binding, signature_regs,
};
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::RemappableMsi;
use vir_abi::status::{Status, errno};
use vir_abi::wire::{
    ActivateRequest, AllocateRequest, DeactivateRequest, FreeRequest, MessageFormat,
    NegotiateRequest, SetAffinityRequest, StorageKind, call_layout,
};
use vir_guest::hypercall::{self, NO_STATUS, status_from_rax};
use vir_guest::negotiation::KNOWN_FEATURES;
use vir_guest::{
    Activation, AllocRequest, AllocationId, CallError, CpuId, CpuMask, Cpuid, CpuidResult,
    DeviceId, DiscoveryError, DomainError, Hypervisor, InterruptStorage, IrSituation, IrSlot,
    IrqConfig, IrqError, IrqState, IrqSubsystem, IrqTarget, NegotiationError, NoVirReason,
    Platform, RemapDomain, Session, StorageError, StorageSlot, StorageType, TeardownError,
    TeardownReport, VectorState, VirDomain, VirInterface, discover, select_ir_domain,
};
use zerocopy::FromBytes;

fn config() -> IrqConfig {
    IrqConfig::new(APIC_IDS.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Discovery (§2.4)
// ---------------------------------------------------------------------------------------------

/// The base the CPUID tables below put the vIR leaves at.
const BASE: u32 = 0x4000_0100;

/// CPUID of a vCPU: a table; leaves not in it read as zero. Records every leaf read.
struct CpuTable {
    leaves: BTreeMap<u32, CpuidResult>,
    reads: Vec<u32>,
}

impl Cpuid for CpuTable {
    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> CpuidResult {
        self.reads.push(leaf);
        self.leaves.get(&leaf).copied().unwrap_or_default()
    }
}

/// A vCPU under a hypervisor (CPUID.1:ECX[31] set) with `base` and `info` at [`BASE`].
fn cpu(base: CpuidResult, info: CpuidResult) -> CpuTable {
    let mut leaves = BTreeMap::new();
    leaves.insert(
        1,
        CpuidResult {
            ecx: CPUID1_ECX_HYPERVISOR,
            ..CpuidResult::default()
        },
    );
    leaves.insert(BASE, base);
    leaves.insert(BASE + 1, info);
    CpuTable {
        leaves,
        reads: Vec::new(),
    }
}

/// The base leaf of a conforming host at `base`: EAX = base + 1, the signature.
fn base_leaf(base: u32) -> CpuidResult {
    let [ebx, ecx, edx] = signature_regs();
    CpuidResult {
        eax: base + 1,
        ebx,
        ecx,
        edx,
    }
}

/// The info leaf registers for the given fields (no validation: malformed leaves too).
fn info_leaf(min: u16, max: u16, bindings: u32, port: u16) -> CpuidResult {
    let [eax, ebx, ecx, edx] = InfoLeaf {
        min_version: min,
        max_version: max,
        bindings,
        doorbell_port: port,
    }
    .encode();
    CpuidResult { eax, ebx, ecx, edx }
}

const SESSION: Session = Session {
    version: 1,
    features: Features::V1_DEFINED,
    session: 1,
    message_format: MessageFormat::VTD_REMAPPABLE,
    max_msi_log2: 5,
    irte_quota: 256,
    vector_quota: 256,
};

/// Runs [`select_ir_domain`] (firmware describes a remapping unit) and reports whether it tried
/// to negotiate.
fn select(c: &mut CpuTable) -> (IrSituation, bool) {
    let negotiated = Cell::new(false);
    let s = select_ir_domain(c, true, |_| {
        negotiated.set(true);
        Ok(SESSION)
    });
    (s, negotiated.get())
}

#[test]
fn vir_disc_g_002_exact_signature_and_valid_info_leaf_is_vir() {
    // VIR-DISC-G-002, positive: the exact signature, EAX = base + 1 and a well-formed info leaf.
    let info = info_leaf(1, 1, binding::VMCALL | binding::PORT_DOORBELL, 0x5650);
    let mut c = cpu(base_leaf(BASE), info);
    assert_eq!(
        discover(&mut c),
        Ok(Platform::Vir(VirInterface {
            base: BASE,
            max_leaf: BASE + 1,
            info: InfoLeaf {
                min_version: 1,
                max_version: 1,
                bindings: binding::VMCALL | binding::PORT_DOORBELL,
                doorbell_port: 0x5650,
            },
        }))
    );
    let mut c = cpu(base_leaf(BASE), info);
    assert_eq!(select(&mut c), (IrSituation::Vir(SESSION), true));
}

#[test]
fn vir_disc_g_002_inexact_signature_or_no_info_leaf_is_absent() {
    // VIR-DISC-G-002: one bit off in any signature register, or a base leaf whose EAX does not
    // reach base + 1, is not vIR. The (valid) info leaf is never read, nothing is negotiated,
    // and the guest goes on as under a hypervisor without vIR.
    let good = base_leaf(BASE);
    let bad = [
        CpuidResult {
            ebx: good.ebx ^ 0x20, // "VIR " instead of "vIR "
            ..good
        },
        CpuidResult {
            ecx: good.ecx ^ (1 << 24),
            ..good
        },
        CpuidResult {
            edx: good.edx ^ (1 << 31),
            ..good
        },
        CpuidResult {
            eax: BASE, // no info leaf
            ..good
        },
        CpuidResult { eax: 0, ..good },
    ];
    for base in bad {
        let mut c = cpu(base, info_leaf(1, 1, binding::VMCALL, 0));
        assert_eq!(
            discover(&mut c),
            Ok(Platform::HypervisorWithoutVir),
            "{base:x?}"
        );
        assert!(!c.reads.contains(&(BASE + 1)), "info leaf read: {base:x?}");
        let mut c = cpu(base, info_leaf(1, 1, binding::VMCALL, 0));
        assert_eq!(
            select(&mut c),
            (IrSituation::Emulated(NoVirReason::NotOffered), false),
            "{base:x?}"
        );
    }
    // The scan goes on past an inexact base to an exact one.
    let mut c = cpu(
        CpuidResult {
            ebx: good.ebx ^ 0x20,
            ..good
        },
        info_leaf(1, 1, binding::VMCALL, 0),
    );
    c.leaves.insert(0x4000_0300, base_leaf(0x4000_0300));
    c.leaves
        .insert(0x4000_0301, info_leaf(1, 1, binding::VMMCALL, 0));
    assert!(matches!(
        discover(&mut c),
        Ok(Platform::Vir(VirInterface {
            base: 0x4000_0300,
            ..
        }))
    ));
}

#[test]
fn vir_disc_g_002_vir_disc_g_003_malformed_info_leaf_is_absent() {
    // VIR-DISC-G-002: the exact signature, but an info leaf that does not decode: min_version 0,
    // min above max, no binding the guest knows (VIR-DISC-G-003: only unknown bits count as
    // none), the doorbell without a port. Discovery reports it, and the guest proceeds as if
    // vIR were absent: no negotiation, the emulated unit without IMS (or no remapping at all).
    let cases = [
        (
            info_leaf(0, 1, binding::VMCALL, 0),
            InfoError::BadVersionRange { min: 0, max: 1 },
        ),
        (
            info_leaf(2, 1, binding::VMCALL, 0),
            InfoError::BadVersionRange { min: 2, max: 1 },
        ),
        (info_leaf(1, 1, 0, 0), InfoError::NoBinding(0)),
        (
            info_leaf(1, 1, 1 << 3 | 1 << 31, 0x5650),
            InfoError::NoBinding(1 << 3 | 1 << 31),
        ),
        (
            info_leaf(1, 1, binding::PORT_DOORBELL, 0),
            InfoError::DoorbellWithoutPort,
        ),
    ];
    for (info, error) in cases {
        let expected = DiscoveryError::BadInfoLeaf { base: BASE, error };
        let mut c = cpu(base_leaf(BASE), info);
        let e = discover(&mut c).unwrap_err();
        assert_eq!(e, expected);
        assert_eq!(e.errno(), errno::ENODEV);
        let mut c = cpu(base_leaf(BASE), info);
        let (s, negotiated) = select(&mut c);
        assert_eq!(s, IrSituation::Emulated(NoVirReason::Discovery(expected)));
        assert!(!negotiated, "{error:?}: negotiation attempted");
        assert!(!s.ims_possible());
        let mut c = cpu(base_leaf(BASE), info);
        assert_eq!(
            select_ir_domain(&mut c, false, |_| Ok(SESSION)),
            IrSituation::NoRemapping(Some(NoVirReason::Discovery(expected)))
        );
    }
}

#[test]
fn vir_disc_g_003_unknown_binding_bits_are_ignored() {
    // VIR-DISC-G-003: bits 3..31 of the info leaf's EBX are reserved in version 1; a guest
    // that finds some set next to a known binding uses the interface all the same.
    let unknown = 1 << 3 | 1 << 17 | 1 << 31;
    let mut c = cpu(
        base_leaf(BASE),
        info_leaf(1, 1, binding::VMMCALL | unknown, 0),
    );
    let Ok(Platform::Vir(found)) = discover(&mut c) else {
        panic!("vIR not found with unknown binding bits set");
    };
    assert_eq!(found.info.bindings & binding::V1_DEFINED, binding::VMMCALL);
    let mut c = cpu(
        base_leaf(BASE),
        info_leaf(1, 1, binding::VMMCALL | unknown, 0),
    );
    assert_eq!(select(&mut c), (IrSituation::Vir(SESSION), true));
}

// ---------------------------------------------------------------------------------------------
// Calls (§3)
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_call_g_003_no_user_mode_io_grant_covers_the_doorbell() {
    // VIR-CALL-G-003, the doorbell clause: with the doorbell offered at 0x5650, its eight
    // ports are never granted to user mode (ioperm ranges touching them, iopl), whether or not
    // the guest calls through the doorbell; every other grant is the kernel's usual business.
    let iface = |bindings, port| VirInterface {
        base: BASE,
        max_leaf: BASE + 1,
        info: InfoLeaf {
            min_version: 1,
            max_version: 1,
            bindings,
            doorbell_port: port,
        },
    };
    let vir = iface(binding::VMCALL | binding::PORT_DOORBELL, 0x5650);
    assert_eq!(vir.doorbell_ports(), Some(0x5650..0x5658));
    for (first, count) in [
        (0x5650, 1),
        (0x5657, 1),
        (0x5654, 4),
        (0x5600, 0x51),
        (0x5657, 0x100),
        (0, 0x1_0000), // iopl(3)
    ] {
        assert!(
            !vir.user_io_grant_allowed(first, count),
            "{first:#x}+{count:#x}"
        );
    }
    for (first, count) in [
        (0x5600, 0x50),
        (0x5658, 8),
        (0x3f8, 8),
        (0x5650, 0),
        (0xfff0, 0x10),
    ] {
        assert!(
            vir.user_io_grant_allowed(first, count),
            "{first:#x}+{count:#x}"
        );
    }
    // Port 0x5650 is just a port when the doorbell is not offered (the port field is then
    // meaningless).
    let no_doorbell = iface(binding::VMCALL, 0x5650);
    assert_eq!(no_doorbell.doorbell_ports(), None);
    assert!(no_doorbell.user_io_grant_allowed(0x5650, 8));
    assert!(no_doorbell.user_io_grant_allowed(0, 0x1_0000));
    // At the top of the port space.
    let top = iface(binding::PORT_DOORBELL, 0xfff8);
    assert_eq!(top.doorbell_ports(), Some(0xfff8..0x1_0000));
    assert!(!top.user_io_grant_allowed(0xffff, 1));
    assert!(top.user_io_grant_allowed(0xfff0, 8));
}

/// Records the sizes of every call and answers SUCCESS with a zeroed response.
#[derive(Default)]
struct Sizes(Vec<(CallCode, usize, usize)>);

impl Hypervisor for Sizes {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        self.0.push((code, request.len(), response.len()));
        response.fill(0);
        Status::SUCCESS
    }
}

#[test]
fn vir_mem_g_002_every_call_passes_exactly_its_sizes() {
    // VIR-MEM-G-002: the call functions pass the request and response sizes of the call table,
    // zero-length buffers included (QUERY and QUERY_QUOTA have no request; RESET, SET_AFFINITY,
    // DEACTIVATE and FREE no response). Where a zero-length buffer is placed (GPA 0) is the
    // transport's part, checked in simvm/tests/guest_bindings.rs.
    let mut hv = Sizes::default();
    hypercall::query(&mut hv).unwrap();
    hypercall::negotiate(&mut hv, &NegotiateRequest::default()).unwrap();
    hypercall::reset(&mut hv).unwrap();
    hypercall::allocate(&mut hv, &AllocateRequest::default()).unwrap();
    hypercall::activate(&mut hv, &ActivateRequest::default()).unwrap();
    hypercall::set_affinity(&mut hv, &SetAffinityRequest::default()).unwrap();
    hypercall::deactivate(&mut hv, &DeactivateRequest::default()).unwrap();
    hypercall::free(&mut hv, &FreeRequest::default()).unwrap();
    hypercall::query_quota(&mut hv).unwrap();
    let expected: Vec<(CallCode, usize, usize)> = CallCode::V1
        .iter()
        .map(|&c| {
            let l = call_layout(c).unwrap();
            (c, l.request_len() as usize, l.response_len() as usize)
        })
        .collect();
    assert_eq!(hv.0, expected);
    assert_eq!(hv.0[0], (CallCode::QUERY, 0, 40));
    assert_eq!(hv.0[2], (CallCode::RESET, 0, 0));
    // And through the domain against the host model, which refuses any other size
    // (BAD_LENGTH): a whole lifecycle without a refused call.
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[1] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    w.guest
        .set_affinity(irqs[0], &CpuMask::single(CpuId(3)))
        .unwrap();
    assert_eq!(w.guest.free_irq(irqs[0]), Ok(TeardownReport::default()));
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::MsiX),
        Ok(TeardownReport::default())
    );
    assert_eq!(w.failed_calls(), []);
}

/// A register binding over a scripted `RAX`: the status is what the guest makes of it.
struct Rax(u64);

impl Hypervisor for Rax {
    fn call(&mut self, _code: CallCode, _request: &[u8], response: &mut [u8]) -> Status {
        response.fill(0);
        status_from_rax(self.0)
    }
}

#[test]
fn vir_reg_g_003_rax_with_bits_63_32_set_is_a_failed_call_with_unknown_status() {
    // VIR-REG-G-003: a status is placed zero-extended; with bits 63:32 clear RAX is the status.
    assert_eq!(status_from_rax(0), Status::SUCCESS);
    assert_eq!(status_from_rax(22), Status::BUSY);
    assert_eq!(status_from_rax(0x7777), Status(0x7777));
    // Any of bits 63:32 set: no status, whatever the low half says (here SUCCESS, BUSY).
    for rax in [
        1 << 32,
        1 << 63,
        0xFFFF_FFFF_0000_0000,
        0x8000_0000_0000_0016,
        (-1000i64) as u64, // KVM's -KVM_ENOSYS
        u64::MAX,
    ] {
        let s = status_from_rax(rax);
        assert_eq!(s, NO_STATUS, "{rax:#x}");
        assert!(!s.is_success() && !s.is_known(), "{rax:#x}");
        assert_eq!(s.errno(), errno::EIO, "{rax:#x}");
        // The call fails, with the status surfaced as EIO (VIR-STA-G-002).
        let e = hypercall::query(&mut Rax(rax)).unwrap_err();
        assert_eq!(
            e,
            CallError {
                call: CallCode::QUERY,
                status: NO_STATUS
            }
        );
        assert_eq!(e.errno(), errno::EIO);
    }
    assert_eq!(hypercall::reset(&mut Rax(0)), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Negotiation and reset (§4.4, §4.5)
// ---------------------------------------------------------------------------------------------

fn negotiate_request(w: &World) -> NegotiateRequest {
    let h = w.host.borrow();
    let c = h
        .log
        .iter()
        .find(|c| c.code == CallCode::NEGOTIATE)
        .expect("NEGOTIATE made");
    NegotiateRequest::read_from_bytes(&c.request).unwrap()
}

#[test]
fn vir_neg_g_001_offered_bits_the_guest_does_not_know_are_ignored() {
    // VIR-NEG-G-001: the host offers every v1 feature plus a future minor bit (6), planned
    // extensions (32, 36) and a vendor bit (63); the guest wants everything it can get.
    let mut host = HostModel::new();
    host.offered = Features(Features::V1_DEFINED.0 | 1 << 6 | 1 << 32 | 1 << 36 | 1 << 63);
    let (w, r) = World::build(host, Features(u64::MAX), config());
    let s = r.unwrap();
    assert_eq!(negotiate_request(&w).features.get(), Features::V1_DEFINED.0);
    assert_eq!(s.features, Features::V1_DEFINED);
    assert_eq!(w.host.borrow().negotiated, Some((1, Features::V1_DEFINED)));
    assert_eq!(w.failed_calls(), []);
    assert!(w.guest.ims_available());
}

#[test]
fn vir_neg_g_003_only_offered_features_it_implements_are_accepted() {
    // VIR-NEG-G-003: offered MSI-X and RESERVATION only: exactly these are accepted (the host
    // model refuses a feature not offered with UNSUPPORTED_FEATURE; it never has to).
    let mut host = HostModel::new();
    host.offered = Features::MSIX | Features::RESERVATION;
    let (mut w, r) = World::build(host, KNOWN_FEATURES, config());
    assert_eq!(r.unwrap().features, Features::MSIX | Features::RESERVATION);
    assert_eq!(
        negotiate_request(&w).features.get(),
        (Features::MSIX | Features::RESERVATION).0
    );
    assert_eq!(w.failed_calls(), []);
    // What was not accepted is not used: no ALLOCATE for MSI or IMS.
    let n = w.log_len();
    assert_eq!(
        w.guest
            .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 1 }, None),
        Err(IrqError::Unsupported {
            device: DEV_A,
            storage: StorageType::Msi
        })
    );
    assert_eq!(
        w.guest
            .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[0] }, None),
        Err(IrqError::ImsUnavailable {
            device: DEV_A,
            storage: StorageType::ImsSystem
        })
    );
    assert_eq!(w.log_len(), n);
    // Offered everything, wanted two: the two. Wanted a bit the guest does not implement
    // (offered, too): not accepted.
    let mut host = HostModel::new();
    host.offered = Features(Features::V1_DEFINED.0 | 1 << 40);
    let (w, r) = World::build(
        host,
        Features(Features::MSI.0 | Features::IMS_SYSTEM.0 | 1 << 40),
        config(),
    );
    assert_eq!(r.unwrap().features, Features::MSI | Features::IMS_SYSTEM);
    assert_eq!(
        negotiate_request(&w).features.get(),
        (Features::MSI | Features::IMS_SYSTEM).0
    );
}

#[test]
fn vir_neg_g_005_version_in_the_offered_range_or_no_negotiation() {
    // VIR-NEG-G-005, positive: the host offers 1..=3; the guest implements 1 and asks for it.
    let mut host = HostModel::new();
    host.max_version = 3;
    let (w, r) = World::build(host, KNOWN_FEATURES, config());
    assert_eq!(r.unwrap().version, 1);
    assert_eq!(negotiate_request(&w).version.get(), 1);
    assert_eq!(w.host.borrow().negotiated.map(|(v, _)| v), Some(1));
    // Offered ranges without version 1 (above it, or the invalid 0..=0): no NEGOTIATE at all.
    for (min, max) in [(2, 4), (0, 0)] {
        let mut host = HostModel::new();
        host.min_version = min;
        host.max_version = max;
        let (w, r) = World::build(host, KNOWN_FEATURES, config());
        let e = r.unwrap_err();
        assert_eq!(e, NegotiationError::NoCommonVersion { min, max });
        assert_eq!(e.errno(), errno::EPROTO);
        assert_eq!(w.host.borrow().calls(), [CallCode::QUERY]);
        assert_eq!(w.host.borrow().negotiated, None);
        assert_eq!(w.guest.domain().session(), None);
    }
    // The same seen in the info leaf: discovery stops, negotiation is never attempted.
    let mut c = cpu(base_leaf(BASE), info_leaf(2, 3, binding::VMCALL, 0));
    let (s, negotiated) = select(&mut c);
    assert_eq!(
        s,
        IrSituation::Emulated(NoVirReason::Discovery(DiscoveryError::NoSupportedVersion {
            base: BASE,
            min: 2,
            max: 3
        }))
    );
    assert!(!negotiated);
}

/// A transport that rewrites the version of every successful NEGOTIATE response (a host that
/// commits another version than requested).
struct ConfirmVersion {
    inner: FakeHv,
    version: u16,
}

impl Hypervisor for ConfirmVersion {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        let s = self.inner.call(code, request, response);
        if code == CallCode::NEGOTIATE && s == Status::SUCCESS {
            response[..2].copy_from_slice(&self.version.to_le_bytes());
        }
        s
    }
}

#[test]
fn vir_neg_g_002_capability_only_on_exact_confirmation() {
    // VIR-NEG-G-002, positive: the response echoes version and features: capability on, no
    // RESET.
    let w = World::new();
    assert_eq!(
        w.host.borrow().calls(),
        [CallCode::QUERY, CallCode::NEGOTIATE]
    );
    assert!(w.guest.ims_available());
    assert_eq!(
        w.guest.domain().session().map(|s| s.features),
        Some(Features::V1_DEFINED)
    );

    // Features confirmed differ (the host committed more than asked): RESET, legacy.
    let mut host = HostModel::new();
    host.offered = Features::V1_DEFINED;
    host.confirm_override = Some(Features::V1_DEFINED);
    let (mut w, r) = World::build(host, Features::MSIX, config());
    assert_eq!(
        r,
        Err(NegotiationError::ConfirmMismatch {
            requested_version: 1,
            requested_features: Features::MSIX,
            confirmed_version: 1,
            confirmed_features: Features::V1_DEFINED,
            reset: Status::SUCCESS,
        })
    );
    assert_eq!(
        w.host.borrow().calls(),
        [CallCode::QUERY, CallCode::NEGOTIATE, CallCode::RESET]
    );
    assert_eq!(w.host.borrow().negotiated, None, "the host is legacy again");
    assert_eq!(w.guest.domain().session(), None);
    assert!(!w.guest.ims_available());
    let n = w.log_len();
    assert_eq!(
        w.guest
            .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None),
        Err(IrqError::Unsupported {
            device: DEV_A,
            storage: StorageType::MsiX
        })
    );
    assert_eq!(w.log_len(), n, "a legacy guest makes no interrupt call");

    // Version confirmed differs: RESET, legacy.
    let host = Rc::new(RefCell::new(HostModel::new()));
    let mut d = VirDomain::new(ConfirmVersion {
        inner: FakeHv(host.clone()),
        version: 2,
    });
    let e = d.negotiate(KNOWN_FEATURES).unwrap_err();
    assert_eq!(
        e,
        NegotiationError::ConfirmMismatch {
            requested_version: 1,
            requested_features: KNOWN_FEATURES,
            confirmed_version: 2,
            confirmed_features: KNOWN_FEATURES,
            reset: Status::SUCCESS,
        }
    );
    assert_eq!(e.errno(), errno::EPROTO);
    assert_eq!(host.borrow().calls().last(), Some(&CallCode::RESET));
    assert_eq!(host.borrow().negotiated, None);
    assert_eq!(d.session(), None);
    assert!(!d.supports_ims() && !d.supports(StorageType::MsiX));

    // The RESET itself refused: the guest still stays legacy, and says what happened.
    let host = Rc::new(RefCell::new(HostModel::new()));
    host.borrow_mut().confirm_override = Some(Features::MSI);
    host.borrow_mut().fail_next(CallCode::RESET, Status::BUSY);
    let mut d = VirDomain::new(FakeHv(host.clone()));
    assert!(matches!(
        d.negotiate(KNOWN_FEATURES),
        Err(NegotiationError::ConfirmMismatch {
            confirmed_features: Features::MSI,
            reset: Status::BUSY,
            ..
        })
    ));
    assert_eq!(d.session(), None);
    assert!(!d.supports(StorageType::Msi));
    assert_eq!(
        d.alloc(IrSlot {
            device: DEV_A,
            storage: StorageType::Msi,
            index: 0,
            log2_count: 0
        }),
        Err(DomainError::NotNegotiated)
    );

    // In the selection of the remapping domain a mismatch is situation 2: no IMS.
    let host = Rc::new(RefCell::new(HostModel::new()));
    host.borrow_mut().confirm_override = Some(Features::MSIX);
    let mut d = VirDomain::new(FakeHv(host.clone()));
    let mut c = cpu(base_leaf(BASE), info_leaf(1, 1, binding::VMCALL, 0));
    let s = select_ir_domain(&mut c, true, |_| d.negotiate(KNOWN_FEATURES));
    assert!(matches!(
        s,
        IrSituation::Emulated(NoVirReason::Negotiation(
            NegotiationError::ConfirmMismatch { .. }
        ))
    ));
    assert!(!s.ims_possible());
}

#[test]
fn vir_rst_g_001_inherited_session_is_reset_before_negotiate() {
    // VIR-RST-G-001: a previous kernel (kexec) left a session with a live allocation; the new
    // kernel finds vm_state 1 in QUERY and calls RESET before NEGOTIATE.
    let mut old = World::new();
    old.guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    let host = old.host.clone();
    assert_eq!(host.borrow().allocs.len(), 2);
    let n = host.borrow().log.len();
    let mut d = VirDomain::new(FakeHv(host.clone()));
    let s = d.negotiate(KNOWN_FEATURES).unwrap();
    assert_eq!(
        old.calls_since(n),
        [
            CallCode::QUERY,
            CallCode::RESET,
            CallCode::QUERY,
            CallCode::NEGOTIATE
        ]
    );
    assert_eq!(s.session, 2);
    assert!(
        host.borrow().allocs.is_empty(),
        "the old allocations are gone"
    );
    assert_eq!(old.failed_calls(), [], "no ALREADY_NEGOTIATED");

    // A VM in the legacy state: no RESET.
    let host = Rc::new(RefCell::new(HostModel::new()));
    VirDomain::new(FakeHv(host.clone()))
        .negotiate(KNOWN_FEATURES)
        .unwrap();
    assert_eq!(
        host.borrow().calls(),
        [CallCode::QUERY, CallCode::NEGOTIATE]
    );

    // The RESET refused: no NEGOTIATE (it would return ALREADY_NEGOTIATED), the error says why.
    let host = Rc::new(RefCell::new(HostModel::new()));
    host.borrow_mut().negotiated = Some((1, Features::MSIX));
    host.borrow_mut().fail_next(CallCode::RESET, Status::BUSY);
    let mut d = VirDomain::new(FakeHv(host.clone()));
    let e = d.negotiate(KNOWN_FEATURES).unwrap_err();
    assert_eq!(
        e,
        NegotiationError::InheritedSessionReset(CallError {
            call: CallCode::RESET,
            status: Status::BUSY
        })
    );
    assert_eq!(e.errno(), errno::EAGAIN);
    assert_eq!(host.borrow().calls(), [CallCode::QUERY, CallCode::RESET]);
    assert_eq!(d.session(), None);
}

// ---------------------------------------------------------------------------------------------
// The interrupt lifecycle (§5, §6)
// ---------------------------------------------------------------------------------------------

/// A world in which the host does not offer RESERVATION: activation and the message write
/// happen at `request_irq`.
fn world_without_reservation() -> World {
    let w = World::offering(Features::V1_DEFINED.difference(Features::RESERVATION));
    assert!(!w.guest.reservation_mode());
    w
}

#[test]
fn vir_alc_g_001_msi_msix_and_ims_slots_send_only_under_a_live_written_allocation() {
    // VIR-ALC-G-001 for MSI, MSI-X, IMS in device memory and IMS in system memory, with and
    // without reservation mode: a slot sends nothing (no message, masked, MSI disabled) until
    // its allocation is live and its message written, nothing once free_irq has masked it, and
    // nothing once the allocation is freed (the message stays in the storage, masked).
    for reservation in [true, false] {
        let mut w = if reservation {
            World::new()
        } else {
            world_without_reservation()
        };
        let maskable = [
            (
                AllocRequest::MsiX { indices: &[3] },
                StorageSlot::MsiX(3),
                StorageType::MsiX,
            ),
            (
                AllocRequest::ImsDevice { indices: &[5] },
                StorageSlot::ImsDevice(5),
                StorageType::ImsDevice,
            ),
            (
                AllocRequest::ImsSystem { indices: &[900] },
                StorageSlot::ImsSystem(900),
                StorageType::ImsSystem,
            ),
        ];
        for (_, slot, _) in maskable {
            assert_eq!(w.fire(DEV_A, slot, 0), Fire::NoMessage, "{slot:?}");
        }
        assert_eq!(w.fire(DEV_B, StorageSlot::Msi, 0), Fire::NoMessage);

        let mut irqs = Vec::new();
        for (request, _, _) in maskable {
            let got = w.guest.alloc_irq_vectors(DEV_A, request, None).unwrap();
            assert_eq!(got.len(), 1);
            irqs.push(got[0]);
        }
        let msi = w
            .guest
            .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 4 }, None)
            .unwrap();
        for (_, slot, _) in maskable {
            // Masked before any message was written.
            assert_eq!(
                w.storage.borrow().masked.get(&(DEV_A, slot)),
                Some(&true),
                "{slot:?}"
            );
            if reservation {
                // Live allocation, message written: the entry stays masked until request_irq.
                assert_eq!(w.fire(DEV_A, slot, 0), Fire::Masked, "{slot:?}");
            } else {
                assert_eq!(w.fire(DEV_A, slot, 0), Fire::NoMessage, "{slot:?}");
            }
        }
        if reservation {
            // The MSI block sends into its reserved (blocked) entries.
            assert_eq!(w.fire(DEV_B, StorageSlot::Msi, 2), Fire::Blocked);
        } else {
            assert_eq!(w.fire(DEV_B, StorageSlot::Msi, 2), Fire::NoMessage);
        }
        for &irq in &irqs {
            w.guest.request_irq(irq).unwrap();
        }
        w.guest.request_irq(msi[2]).unwrap();
        for ((_, slot, _), &irq) in maskable.iter().zip(&irqs) {
            assert_eq!(w.fire(DEV_A, *slot, 0), Fire::Irq(irq), "{slot:?}");
        }
        assert_eq!(w.fire(DEV_B, StorageSlot::Msi, 2), Fire::Irq(msi[2]));

        // free_irq masks the entry again: the allocation is still live, but its message no
        // longer reaches the guest.
        for ((_, slot, _), &irq) in maskable.iter().zip(&irqs) {
            assert_eq!(w.guest.free_irq(irq), Ok(TeardownReport::default()));
            assert_eq!(w.fire(DEV_A, *slot, 0), Fire::Masked, "{slot:?}");
        }
        assert_eq!(w.guest.free_irq(msi[2]), Ok(TeardownReport::default()));
        for (_, _, storage) in maskable {
            assert_eq!(
                w.guest.free_irq_vectors(DEV_A, storage),
                Ok(TeardownReport::default())
            );
        }
        assert_eq!(
            w.guest.free_irq_vectors(DEV_B, StorageType::Msi),
            Ok(TeardownReport::default())
        );
        assert!(w.host.borrow().allocs.is_empty());
        // The messages are still in the storage; the slots do not send.
        assert_eq!(w.storage.borrow().messages.len(), 4);
        for (_, slot, _) in maskable {
            assert_eq!(w.fire(DEV_A, slot, 0), Fire::Masked, "{slot:?}");
        }
        for sub in 0..4 {
            assert_eq!(w.fire(DEV_B, StorageSlot::Msi, sub), Fire::Masked);
        }
    }
}

#[test]
fn vir_alc_g_001_failed_allocation_leaves_the_slot_untouched() {
    // VIR-ALC-G-001: no live allocation (the host refused it), no message, no unmask.
    let mut w = World::new();
    w.host
        .borrow_mut()
        .fail_next(CallCode::ALLOCATE, Status::TABLE_FULL);
    let e = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::MsiX { indices: &[2] }, None)
        .unwrap_err();
    assert_eq!(e.errno(), errno::ENOSPC);
    let e = w
        .guest
        .alloc_irq_vectors(DEV_FOREIGN, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap_err();
    assert_eq!(e.errno(), errno::ENODEV);
    assert_eq!(w.storage_writes(), 0);
    assert_eq!(
        w.storage
            .borrow()
            .masked
            .get(&(DEV_B, StorageSlot::MsiX(2))),
        None
    );
    assert_eq!(w.storage.borrow().msi_enabled.get(&DEV_FOREIGN), None);
    assert_eq!(w.fire(DEV_B, StorageSlot::MsiX(2), 0), Fire::NoMessage);
    assert_eq!(w.fire(DEV_FOREIGN, StorageSlot::Msi, 0), Fire::NoMessage);
}

/// A storage access the interrupt subsystem made (successful ones only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write(DeviceId, StorageSlot, MsiMessage),
    Mask(DeviceId, StorageSlot, bool),
    MsiEnable(DeviceId, u32),
    MsiDisable(DeviceId),
}

/// The storage model, with every access recorded in order.
struct Recording {
    inner: FakeStorage,
    ops: Rc<RefCell<Vec<Op>>>,
}

impl Recording {
    fn log(&self, r: Result<(), StorageError>, op: Op) -> Result<(), StorageError> {
        if r.is_ok() {
            self.ops.borrow_mut().push(op);
        }
        r
    }
}

impl InterruptStorage for Recording {
    fn write_message(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError> {
        let r = self.inner.write_message(device, slot, message);
        self.log(r, Op::Write(device, slot, message))
    }
    fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<(), StorageError> {
        let r = self.inner.set_masked(device, slot, masked);
        self.log(r, Op::Mask(device, slot, masked))
    }
    fn msi_enable(&mut self, device: DeviceId, nvec: u32) -> Result<(), StorageError> {
        let r = self.inner.msi_enable(device, nvec);
        self.log(r, Op::MsiEnable(device, nvec))
    }
    fn msi_disable(&mut self, device: DeviceId) -> Result<(), StorageError> {
        let r = self.inner.msi_disable(device);
        self.log(r, Op::MsiDisable(device))
    }
}

struct Recorded {
    host: Rc<RefCell<HostModel>>,
    storage: Rc<RefCell<StorageModel>>,
    ops: Rc<RefCell<Vec<Op>>>,
    guest: IrqSubsystem<VirDomain<FakeHv>, Recording>,
}

fn recorded(offered: Features) -> Recorded {
    let host = Rc::new(RefCell::new(HostModel::new()));
    host.borrow_mut().offered = offered;
    let storage = Rc::new(RefCell::new(StorageModel::new()));
    let ops = Rc::new(RefCell::new(Vec::new()));
    let mut domain = VirDomain::new(FakeHv(host.clone()));
    domain.negotiate(KNOWN_FEATURES).unwrap();
    let recording = Recording {
        inner: FakeStorage(storage.clone()),
        ops: ops.clone(),
    };
    let guest = IrqSubsystem::new(domain, recording, config()).unwrap();
    Recorded {
        host,
        storage,
        ops,
        guest,
    }
}

/// Every unmask of an MSI-X or IMS entry and every MSI enable comes after the message of that
/// slot was written.
fn assert_written_before_enabled(ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        let slot = match *op {
            Op::Mask(d, slot, false) => (d, slot),
            Op::MsiEnable(d, _) => (d, StorageSlot::Msi),
            _ => continue,
        };
        assert!(
            ops[..i]
                .iter()
                .any(|o| matches!(o, Op::Write(d, s, _) if (*d, *s) == slot)),
            "{op:?} before the message of {slot:?} was written: {ops:?}"
        );
    }
}

#[test]
fn vir_act_g_002_message_written_before_unmask_or_enable() {
    // VIR-ACT-G-002, reservation mode: MSI-X is masked first, the message written at the
    // reservation, the entry unmasked at request_irq; MSI is enabled right after its message.
    let mut r = recorded(Features::V1_DEFINED);
    let x = r
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    let m = r
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap();
    r.guest.request_irq(x[1]).unwrap();
    r.guest.request_irq(m[0]).unwrap();
    let ops = r.ops.borrow().clone();
    let kinds: Vec<Op> = ops
        .iter()
        .map(|o| match *o {
            Op::Write(d, s, _) => Op::Write(d, s, MsiMessage::new(0, 0, 0)),
            other => other,
        })
        .collect();
    let blank = MsiMessage::new(0, 0, 0);
    assert_eq!(
        kinds,
        [
            Op::Mask(DEV_A, StorageSlot::MsiX(0), true),
            Op::Write(DEV_A, StorageSlot::MsiX(0), blank),
            Op::Mask(DEV_A, StorageSlot::MsiX(1), true),
            Op::Write(DEV_A, StorageSlot::MsiX(1), blank),
            Op::Write(DEV_B, StorageSlot::Msi, blank),
            Op::MsiEnable(DEV_B, 2),
            Op::Mask(DEV_A, StorageSlot::MsiX(1), false),
        ]
    );
    assert_written_before_enabled(&ops);

    // Without reservation mode the message comes with the first activation, still before.
    let mut r = recorded(Features::V1_DEFINED.difference(Features::RESERVATION));
    let x = r
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[4] }, None)
        .unwrap();
    let m = r
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 1 }, None)
        .unwrap();
    assert_eq!(
        *r.ops.borrow(),
        [Op::Mask(DEV_A, StorageSlot::MsiX(4), true)]
    );
    r.guest.request_irq(x[0]).unwrap();
    r.guest.request_irq(m[0]).unwrap();
    let ops = r.ops.borrow().clone();
    assert_eq!(ops.len(), 5);
    assert!(matches!(ops[1], Op::Write(DEV_A, StorageSlot::MsiX(4), _)));
    assert_eq!(ops[2], Op::Mask(DEV_A, StorageSlot::MsiX(4), false));
    assert!(matches!(ops[3], Op::Write(DEV_B, StorageSlot::Msi, _)));
    assert_eq!(ops[4], Op::MsiEnable(DEV_B, 1));
    assert_written_before_enabled(&ops);
}

#[test]
fn vir_act_g_002_failed_write_means_no_unmask_and_no_enable() {
    // VIR-ACT-G-002, negative: the message write fails; the slot is never unmasked or enabled,
    // and request_irq fails with the storage's errno.
    let mut r = recorded(Features::V1_DEFINED.difference(Features::RESERVATION));
    let x = r
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[2] }, None)
        .unwrap();
    let m = r
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap();
    for irq in [x[0], m[1]] {
        r.storage.borrow_mut().fail_next_write = true;
        let e = r.guest.request_irq(irq).unwrap_err();
        assert!(matches!(e, IrqError::Storage(_)), "{e:?}");
        assert_eq!(r.guest.irq_info(irq).unwrap().state, IrqState::Allocated);
    }
    assert_eq!(
        *r.ops.borrow(),
        [Op::Mask(DEV_A, StorageSlot::MsiX(2), true)]
    );
    assert_eq!(
        r.storage
            .borrow()
            .masked
            .get(&(DEV_A, StorageSlot::MsiX(2))),
        Some(&true)
    );
    assert_eq!(r.storage.borrow().msi_enabled.get(&DEV_B), None);
    // The host's vector is back (the activation was undone).
    assert_eq!(r.host.borrow().vectors_used, 0);
}

#[test]
fn vir_irq_g_002_vector_states_are_tracked_not_probed() {
    // VIR-IRQ-G-002: through a whole lifecycle (reservation, request, affinity, free_irq,
    // request again, CPU offline, teardown) the host never answers INVALID_STATE: the guest
    // knows each vector's state and asks only what that state allows; its record equals the
    // host's after every step.
    let mut w = World::new();
    let check = |w: &World| {
        let h = w.host.borrow();
        for (&handle, a) in &h.allocs {
            for (sub, hv) in (0u16..).zip(&a.subs) {
                let expected = match *hv {
                    HostVec::Allocated => VectorState::Allocated,
                    HostVec::Reserved => VectorState::Reserved,
                    HostVec::Active { apic_id, vector } => {
                        VectorState::Active(IrqTarget { apic_id, vector })
                    }
                };
                assert_eq!(
                    w.guest.domain().vector_state(AllocationId(handle), sub),
                    Some(expected),
                    "handle {handle:#x} sub {sub}"
                );
            }
        }
        assert_eq!(w.guest.domain().live_allocations(), h.allocs.len());
    };
    let x = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 7] }, None)
        .unwrap();
    let m = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 4 }, None)
        .unwrap();
    let ims = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::ImsDevice { indices: &[9] }, None)
        .unwrap();
    check(&w);
    for irq in [x[1], m[0], m[3], ims[0]] {
        w.guest.request_irq(irq).unwrap();
        check(&w);
    }
    w.guest
        .set_affinity(m[3], &CpuMask::single(CpuId(2)))
        .unwrap();
    check(&w);
    assert_eq!(w.guest.free_irq(x[1]), Ok(TeardownReport::default()));
    check(&w);
    w.guest.request_irq(x[1]).unwrap();
    check(&w);
    let report = w.guest.cpu_offline(CpuId(2)).unwrap();
    assert!(report.failed.is_empty());
    check(&w);
    for irq in [x[1], m[0], m[3], ims[0]] {
        assert_eq!(w.guest.free_irq(irq), Ok(TeardownReport::default()));
    }
    for (dev, t) in [
        (DEV_A, StorageType::MsiX),
        (DEV_B, StorageType::Msi),
        (DEV_B, StorageType::ImsDevice),
    ] {
        assert_eq!(
            w.guest.free_irq_vectors(dev, t),
            Ok(TeardownReport::default())
        );
    }
    check(&w);
    assert_eq!(w.failed_calls(), [], "no call refused, INVALID_STATE least");

    // Requests the state does not allow are refused by the guest itself, without a call.
    let host = Rc::new(RefCell::new(HostModel::new()));
    let mut d = VirDomain::new(FakeHv(host.clone()));
    d.negotiate(KNOWN_FEATURES).unwrap();
    let id = d
        .alloc(IrSlot {
            device: DEV_A,
            storage: StorageType::MsiX,
            index: 0,
            log2_count: 0,
        })
        .unwrap();
    let t = IrqTarget {
        apic_id: 2,
        vector: 0x40,
    };
    let n = host.borrow().log.len();
    let refused = |state| DomainError::InvalidState { id, sub: 0, state };
    assert_eq!(d.deactivate(id, 0), Err(refused(VectorState::Allocated)));
    assert_eq!(
        d.set_affinity(id, 0, t),
        Err(refused(VectorState::Allocated))
    );
    assert_eq!(host.borrow().log.len(), n);
    d.activate(id, 0, Activation::Reserve).unwrap();
    let n = host.borrow().log.len();
    assert_eq!(
        d.activate(id, 0, Activation::Reserve),
        Err(refused(VectorState::Reserved))
    );
    assert_eq!(
        d.set_affinity(id, 0, t),
        Err(refused(VectorState::Reserved))
    );
    assert_eq!(host.borrow().log.len(), n);
    d.activate(id, 0, Activation::Target(t)).unwrap();
    let n = host.borrow().log.len();
    assert_eq!(
        d.activate(id, 0, Activation::Target(t)),
        Err(refused(VectorState::Active(t)))
    );
    assert_eq!(
        d.activate(id, 0, Activation::Reserve),
        Err(refused(VectorState::Active(t)))
    );
    assert_eq!(host.borrow().log.len(), n);
    assert!(
        host.borrow()
            .log
            .iter()
            .all(|c| c.status != Status::INVALID_STATE)
    );
}

// ---------------------------------------------------------------------------------------------
// Statuses (§7)
// ---------------------------------------------------------------------------------------------

/// Status values version 1 does not name.
const UNKNOWN: [Status; 4] = [
    Status(23),
    Status(0x7777),
    Status(0x8000_0000),
    Status(u32::MAX),
];

#[test]
fn vir_sta_g_002_unknown_status_is_a_failure_surfaced_as_eio() {
    // VIR-STA-G-002 at every kind of call site: negotiation, allocation, request_irq,
    // set_affinity, teardown. Each is a failure (nothing changes) reported as EIO.
    for s in UNKNOWN {
        assert!(!s.is_known());
        // Negotiation: QUERY, NEGOTIATE.
        for code in [CallCode::QUERY, CallCode::NEGOTIATE] {
            let host = Rc::new(RefCell::new(HostModel::new()));
            host.borrow_mut().fail_next(code, s);
            let mut d = VirDomain::new(FakeHv(host.clone()));
            let e = d.negotiate(KNOWN_FEATURES).unwrap_err();
            let call = CallError {
                call: code,
                status: s,
            };
            let expected = if code == CallCode::QUERY {
                NegotiationError::Query(call)
            } else {
                NegotiationError::Negotiate(call)
            };
            assert_eq!(e, expected);
            assert_eq!(e.errno(), errno::EIO);
            assert_eq!(d.session(), None);
        }

        let mut w = World::new();
        // ALLOCATE.
        w.host.borrow_mut().fail_next(CallCode::ALLOCATE, s);
        let e = w
            .guest
            .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[5] }, None)
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV_A,
                slot: StorageSlot::ImsSystem(5),
                sub: 0,
                error: DomainError::Host(CallError {
                    call: CallCode::ALLOCATE,
                    status: s
                }),
            }
        );
        assert_eq!(e.errno(), errno::EIO);
        assert_eq!(w.guest.irqs().count(), 0);

        // ACTIVATE at request_irq: the irq stays reserved, no vector is kept.
        let irqs = w
            .guest
            .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[1] }, None)
            .unwrap();
        w.host.borrow_mut().fail_next(CallCode::ACTIVATE, s);
        let e = w.guest.request_irq(irqs[0]).unwrap_err();
        assert_eq!(e.errno(), errno::EIO);
        assert_eq!(w.guest.irq_info(irqs[0]).unwrap().state, IrqState::Reserved);
        assert_eq!(w.host.borrow().vectors_used, 0);

        // SET_AFFINITY: the old target stays.
        w.guest.request_irq(irqs[0]).unwrap();
        let before = w.guest.irq_info(irqs[0]).unwrap().state;
        let IrqState::Active { cpu, .. } = before else {
            panic!("not active: {before:?}");
        };
        let other = CpuId((cpu.0 + 1) % 4);
        w.host.borrow_mut().fail_next(CallCode::SET_AFFINITY, s);
        let e = w
            .guest
            .set_affinity(irqs[0], &CpuMask::single(other))
            .unwrap_err();
        assert_eq!(e.errno(), errno::EIO);
        assert_eq!(w.guest.irq_info(irqs[0]).unwrap().state, before);
        assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(1), 0), Fire::Irq(irqs[0]));

        // FREE on teardown: the teardown completes and reports the failure with EIO.
        assert_eq!(w.guest.free_irq(irqs[0]), Ok(TeardownReport::default()));
        w.host.borrow_mut().fail_next(CallCode::FREE, s);
        let report = w.guest.free_irq_vectors(DEV_A, StorageType::MsiX).unwrap();
        let [TeardownError::Free { error, .. }] = report.errors.as_slice() else {
            panic!("{report:?}");
        };
        assert_eq!(error.errno(), errno::EIO);
    }
}

// ---------------------------------------------------------------------------------------------
// Formats (§8.6)
// ---------------------------------------------------------------------------------------------

/// The message the host model issues for an allocation at physical index `base`.
fn host_message(base: u32) -> MsiMessage {
    RemappableMsi {
        handle: base as u16,
        shv: true,
        subhandle: 0,
    }
    .encode()
}

#[test]
fn vir_fmt_g_001_msi_multiple_message_enable_and_message_unchanged() {
    // VIR-FMT-G-001: an MSI block of 2^n vectors: Multiple Message Enable n (the storage is
    // enabled with 2^n vectors), address and data exactly as returned, the low n data bits left
    // to the device, which adds the vector index.
    for reservation in [true, false] {
        for log2 in 0..=5u32 {
            let nvec = 1u32 << log2;
            let mut w = if reservation {
                World::new()
            } else {
                world_without_reservation()
            };
            let irqs = w
                .guest
                .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec }, None)
                .unwrap();
            for &irq in &irqs {
                w.guest.request_irq(irq).unwrap();
            }
            let base = {
                let h = w.host.borrow();
                let a = h.allocs.values().next().unwrap();
                assert_eq!((a.kind, a.subs.len()), (StorageKind::MSI, nvec as usize));
                a.base
            };
            let expected = host_message(base);
            assert_eq!(expected.data & (nvec - 1), 0);
            let s = w.storage.borrow();
            assert_eq!(s.msi_enabled.get(&DEV_A), Some(&nvec), "MME = {log2}");
            assert_eq!(s.writes, [(DEV_A, StorageSlot::Msi, expected)]);
            drop(s);
            for (sub, &irq) in (0u16..).zip(&irqs) {
                assert_eq!(w.fire(DEV_A, StorageSlot::Msi, sub), Fire::Irq(irq));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The legacy scheme (§9)
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_leg_g_003_no_ims_for_a_device_the_host_called_not_yours() {
    // VIR-LEG-G-003: until the host says otherwise, IMS is offered for every device.
    let mut w = World::new();
    assert!(w.guest.domain().ims_offered_for(DEV_FOREIGN));
    let e = w
        .guest
        .alloc_irq_vectors(DEV_FOREIGN, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap_err();
    assert_eq!(
        e,
        IrqError::Domain {
            device: DEV_FOREIGN,
            slot: StorageSlot::MsiX(0),
            sub: 0,
            error: DomainError::Host(CallError {
                call: CallCode::ALLOCATE,
                status: Status::NOT_YOUR_DEVICE
            }),
        }
    );
    assert_eq!(e.errno(), errno::ENODEV);
    // NOT_YOUR_DEVICE received: no IMS for that device, refused without a call.
    assert!(!w.guest.domain().ims_offered_for(DEV_FOREIGN));
    let n = w.log_len();
    for req in [
        AllocRequest::ImsDevice { indices: &[0] },
        AllocRequest::ImsSystem { indices: &[0] },
    ] {
        let e = w
            .guest
            .alloc_irq_vectors(DEV_FOREIGN, req, None)
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV_FOREIGN,
                slot: StorageSlot::new(req.storage_type(), 0),
                sub: 0,
                error: DomainError::ImsNotOffered(DEV_FOREIGN),
            }
        );
        assert_eq!(e.errno(), errno::EOPNOTSUPP);
    }
    assert_eq!(w.log_len(), n);
    assert_eq!(w.storage_writes(), 0);
    // The vIR devices keep IMS; other refusals (no such storage) do not withdraw it.
    assert!(w.guest.domain().ims_offered_for(DEV_A));
    w.guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[0] }, None)
        .unwrap();
    let e = w
        .guest
        .alloc_irq_vectors(
            DEV_MSIX_ONLY,
            AllocRequest::ImsDevice { indices: &[0] },
            None,
        )
        .unwrap_err();
    assert_eq!(e.errno(), errno::EOPNOTSUPP);
    assert!(w.guest.domain().ims_offered_for(DEV_MSIX_ONLY));

    // Learnt from an IMS allocation too, and kept across a RESET and a new session (the
    // assignment of devices does not change with the session).
    let host = Rc::new(RefCell::new(HostModel::new()));
    let mut d = VirDomain::new(FakeHv(host.clone()));
    d.negotiate(KNOWN_FEATURES).unwrap();
    let slot = IrSlot {
        device: DEV_FOREIGN,
        storage: StorageType::ImsSystem,
        index: 3,
        log2_count: 0,
    };
    assert_eq!(
        d.alloc(slot),
        Err(DomainError::Host(CallError {
            call: CallCode::ALLOCATE,
            status: Status::NOT_YOUR_DEVICE
        }))
    );
    d.reset().unwrap();
    d.negotiate(KNOWN_FEATURES).unwrap();
    assert!(d.supports_ims());
    assert!(!d.ims_offered_for(DEV_FOREIGN));
    let n = host.borrow().log.len();
    assert_eq!(d.alloc(slot), Err(DomainError::ImsNotOffered(DEV_FOREIGN)));
    assert_eq!(host.borrow().log.len(), n);
    // Without the capability, IMS is offered for no device at all.
    let d = VirDomain::new(FakeHv(Rc::new(RefCell::new(HostModel::new()))));
    assert!(!d.ims_offered_for(DEV_A));
}

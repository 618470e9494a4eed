//! Host requirements a guest can observe through its own calls, checked from inside the image
//! and reported one `REQ` line each:
//!
//! `REQ <check> <ID>[,<ID>…] pass` or
//! `REQ <check> <ID>[,<ID>…] fail-status <step> <expected status> <actual status>`.
//!
//! The VMM turns these lines into the same per-requirement report as `vir conform`.

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{ActivateRequest, AllocateRequest, NegotiateRequest, StorageKind, Target};
use vir_guest::{Hypervisor, hypercall};
use zerocopy::little_endian::{U16, U32, U64};

use crate::console::Dec;
use crate::vir::Doorbell;
use crate::workload::DEVICE_ID;

fn status_of<T>(r: Result<T, vir_guest::CallError>) -> Status {
    match r {
        Ok(_) => Status::SUCCESS,
        Err(e) => e.status,
    }
}

fn expect(name: &str, ids: &str, step: &str, expected: Status, actual: Status) {
    if actual == expected {
        say!("REQ {name} {ids} pass");
    } else {
        crate::FAILED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        say!(
            "REQ {name} {ids} fail-status {step} {} {}",
            Dec(u64::from(expected.0)),
            Dec(u64::from(actual.0))
        );
    }
}

/// Runs the checks on a negotiated session (vIR found, `db` its doorbell).
pub fn run(db: &mut Doorbell) {
    // The doorbell block's status is preset to all ones; QUERY's SUCCESS is in it when the OUT
    // that rings completes.
    let q = status_of(hypercall::query(db));
    expect(
        "image_doorbell_call_done_when_out_completes",
        "VIR-DB-H-002,VIR-DB-H-003",
        "QUERY through the doorbell",
        Status::SUCCESS,
        q,
    );
    let mut none: [u8; 0] = [];
    let unknown = db.call(CallCode(0x7FF0), &[], &mut none);
    expect(
        "image_unknown_call",
        "VIR-CALL-H-002",
        "call code 0x7ff0",
        Status::UNKNOWN_CALL,
        unknown,
    );
    let again = NegotiateRequest {
        version: U16::new(1),
        features: U64::new(Features::V1_DEFINED.0),
        ..Default::default()
    };
    expect(
        "image_negotiate_twice",
        "VIR-NEG-H-001",
        "second NEGOTIATE",
        Status::ALREADY_NEGOTIATED,
        status_of(hypercall::negotiate(db, &again)),
    );
    let bad_kind = AllocateRequest {
        device_id: U32::new(DEVICE_ID),
        kind: 0x77,
        ..Default::default()
    };
    expect(
        "image_allocate_undefined_kind",
        "VIR-ALC-H-001",
        "ALLOCATE kind 0x77",
        Status::INVALID_PARAMETER,
        status_of(hypercall::allocate(db, &bad_kind)),
    );
    let foreign = AllocateRequest {
        device_id: U32::new(0x0099),
        kind: StorageKind::MSIX.0,
        ..Default::default()
    };
    expect(
        "image_allocate_foreign_device",
        "VIR-ALC-H-004",
        "ALLOCATE on device 00:13.1",
        Status::NOT_YOUR_DEVICE,
        status_of(hypercall::allocate(db, &foreign)),
    );
    let target = |apic_id: u32| Target {
        apic_id: U32::new(apic_id),
        vector: 0xA0,
        ..Default::default()
    };
    let bad_handle = ActivateRequest {
        handle: U32::new(0xDEAD_BEEF),
        target: target(0),
        ..Default::default()
    };
    expect(
        "image_activate_unknown_handle",
        "VIR-ACT-H-001",
        "ACTIVATE handle 0xdeadbeef",
        Status::INVALID_HANDLE,
        status_of(hypercall::activate(db, &bad_handle)),
    );
    // MSI-X entry 40 is not used by the workload.
    let alloc = AllocateRequest {
        device_id: U32::new(DEVICE_ID),
        kind: StorageKind::MSIX.0,
        index: U32::new(40),
        ..Default::default()
    };
    match hypercall::allocate(db, &alloc) {
        Ok(a) => {
            let req = ActivateRequest {
                handle: a.handle,
                target: target(999),
                ..Default::default()
            };
            expect(
                "image_activate_foreign_apic_id",
                "VIR-ACT-H-005",
                "ACTIVATE to APIC id 999",
                Status::INVALID_TARGET,
                status_of(hypercall::activate(db, &req)),
            );
        }
        Err(e) => expect(
            "image_activate_foreign_apic_id",
            "VIR-ACT-H-005",
            "ALLOCATE MSI-X entry 40",
            Status::SUCCESS,
            e.status,
        ),
    }
}

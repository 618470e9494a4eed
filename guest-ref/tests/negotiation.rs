//! Negotiation against the host model and the IR capability that gates IMS (B1, B2, B6).

mod common;

use common::*;
use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::{Status, errno};
use vir_abi::wire::NegotiateRequest;
use vir_guest::{
    AllocRequest, CallError, IrqConfig, IrqError, NegotiationError, RemapDomain, StorageType,
};
use zerocopy::FromBytes;

fn config() -> IrqConfig {
    IrqConfig::new(APIC_IDS.to_vec())
}

#[test]
fn vir_neg_g_002_confirm_mismatch_resets_and_ims_is_refused() {
    // The host commits fewer features than requested.
    let mut host = HostModel::new();
    host.confirm_override = Some(Features::MSI | Features::MSIX);
    let (mut w, r) = World::build(host, Features::V1_DEFINED, config());
    assert_eq!(
        r,
        Err(NegotiationError::ConfirmMismatch {
            requested_version: 1,
            requested_features: Features::V1_DEFINED,
            confirmed_version: 1,
            confirmed_features: Features::MSI | Features::MSIX,
            reset: Status::SUCCESS,
        })
    );
    assert_eq!(
        w.host.borrow().calls(),
        [CallCode::QUERY, CallCode::NEGOTIATE, CallCode::RESET]
    );
    assert_eq!(
        w.host.borrow().negotiated,
        None,
        "both sides are legacy again"
    );
    assert_eq!(w.guest.domain().session(), None);
    // VIR-LEG-G-001: no capability, no IMS; nothing reaches the host.
    assert!(!w.guest.ims_available());
    let n = w.log_len();
    let e = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[0] }, None)
        .unwrap_err();
    assert_eq!(
        e,
        IrqError::ImsUnavailable {
            device: DEV_A,
            storage: StorageType::ImsDevice
        }
    );
    assert_eq!(e.errno(), errno::EOPNOTSUPP);
    // MSI-X through this (legacy) domain is not available either: the kernel's legacy path
    // serves it.
    assert_eq!(
        w.guest
            .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None),
        Err(IrqError::Unsupported {
            device: DEV_A,
            storage: StorageType::MsiX
        })
    );
    assert_eq!(w.log_len(), n);
    assert_eq!(w.storage_writes(), 0);
}

#[test]
fn vir_leg_g_001_ims_needs_an_ims_feature_even_when_negotiated() {
    let mut w = World::offering(Features::MSI | Features::MSIX | Features::RESERVATION);
    assert!(!w.guest.ims_available());
    assert!(w.guest.domain().supports(StorageType::MsiX));
    for (req, storage) in [
        (
            AllocRequest::ImsDevice { indices: &[0] },
            StorageType::ImsDevice,
        ),
        (
            AllocRequest::ImsSystem { indices: &[0] },
            StorageType::ImsSystem,
        ),
    ] {
        assert_eq!(
            w.guest.alloc_irq_vectors(DEV_A, req, None),
            Err(IrqError::ImsUnavailable {
                device: DEV_A,
                storage
            })
        );
    }
    // MSI-X works.
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(
        w.fire(DEV_A, vir_guest::StorageSlot::MsiX(0), 0),
        Fire::Irq(irqs[0])
    );
}

#[test]
fn vir_leg_g_001_ims_system_only_offers_ims_but_not_device_ims() {
    let mut w = World::offering(Features::IMS_SYSTEM);
    assert!(w.guest.ims_available());
    assert_eq!(
        w.guest
            .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[0] }, None),
        Err(IrqError::Unsupported {
            device: DEV_A,
            storage: StorageType::ImsDevice
        })
    );
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[77] }, None)
        .unwrap();
    assert!(!w.guest.reservation_mode());
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(
        w.fire(DEV_A, vir_guest::StorageSlot::ImsSystem(77), 0),
        Fire::Irq(irqs[0])
    );
}

#[test]
fn vir_neg_g_001_and_003_against_the_host_model() {
    // Offer: v1 without QUOTA_QUERY, plus a reserved bit and a vendor bit.
    let mut host = HostModel::new();
    host.offered =
        Features(Features::V1_DEFINED.difference(Features::QUOTA_QUERY).0 | 1 << 33 | 1 << 63);
    let (w, r) = World::build(host, Features(u64::MAX), config());
    let s = r.unwrap();
    let expected = Features::V1_DEFINED.difference(Features::QUOTA_QUERY);
    assert_eq!(s.features, expected);
    let req = w.host.borrow().log[1].request.clone();
    assert_eq!(
        NegotiateRequest::read_from_bytes(&req)
            .unwrap()
            .features
            .get(),
        expected.0
    );
    assert_eq!(w.failed_calls(), []);
}

#[test]
fn legacy_host_refusal_surfaces_and_guest_stays_legacy() {
    // VIR-NEG-H-004: trapped MSI still enabled → INVALID_STATE; the guest does not switch.
    let mut host = HostModel::new();
    host.fail_next(CallCode::NEGOTIATE, Status::INVALID_STATE);
    let (w, r) = World::build(host, Features::V1_DEFINED, config());
    let e = r.unwrap_err();
    assert_eq!(
        e,
        NegotiationError::Negotiate(CallError {
            call: CallCode::NEGOTIATE,
            status: Status::INVALID_STATE
        })
    );
    assert_eq!(e.errno(), errno::EINVAL);
    assert!(!w.guest.ims_available());
    assert_eq!(w.host.borrow().count(CallCode::RESET), 0);
}

#[test]
fn quota_query_through_the_domain() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 4 }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let (mut domain, _storage) = w.guest.into_parts();
    let q = domain.query_quota().unwrap();
    assert_eq!(
        q,
        vir_guest::Quota {
            irtes_total: 256,
            irtes_free: 252,
            vectors_total: 256,
            vectors_free: 255
        }
    );
    // A RESET returns everything and the domain to legacy.
    domain.reset().unwrap();
    assert!(!domain.supports_ims());
    assert!(w.host.borrow().allocs.is_empty());
    assert_eq!(w.host.borrow().negotiated, None);
}

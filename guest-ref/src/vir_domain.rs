//! [`VirDomain`]: the interrupt-remapping domain backed by vIR hypercalls.
//!
//! The domain starts in the legacy state: no capability, every allocation refused with
//! [`DomainError::NotNegotiated`] (B2: a guest that never negotiates sees no change).
//! [`VirDomain::negotiate`] switches it on; only then does [`RemapDomain::supports_ims`] become
//! true (B1, `VIR-LEG-G-001`), and only when an IMS feature was accepted.
//!
//! The domain mirrors the host's per-vector state machine (`ALLOCATED → RESERVED → ACTIVE →
//! ALLOCATED`) so that it never sends a call the host must refuse, and it checks what a
//! conforming host returns: a non-zero fresh handle, the requested count, messages in the
//! session's format. A violation is a [`ProtocolError`]; the domain undoes what the call did
//! (FREE of an allocation it will not use, DEACTIVATE — and re-RESERVE — of a vector whose
//! message it rejects) so that host and guest state stay equal.
//!
//! A device for which ALLOCATE returned `NOT_YOUR_DEVICE` is not a vIR device (an emulated one,
//! or one not assigned to this VM). The domain remembers it and offers no IMS for it from then
//! on ([`VirDomain::ims_offered_for`]; IMS allocations are refused without a call,
//! `VIR-LEG-G-003`). Device assignment does not change with the session, so a RESET keeps this
//! knowledge.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use vir_abi::feature::Features;
use vir_abi::hw::amd::AmdMsi;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::RemappableMsi;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, DeactivateRequest, FreeRequest,
    MessageFormat, SetAffinityRequest, Target, activate_flags,
};
use zerocopy::little_endian::{U16, U32};

use crate::device::{DeviceId, StorageType};
use crate::domain::{
    Activation, AllocationId, DomainError, IrSlot, IrqTarget, ProtocolError, RemapDomain,
    VectorState,
};
use crate::hypercall::{self, CallError, Hypervisor};
use crate::matrix::SHUTDOWN_VECTOR;
use crate::negotiation::{self, NegotiationError, Session};

/// The VM's remapping-entry and vector quota (QUERY_QUOTA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Remapping entries the VM may hold at once.
    pub irtes_total: u32,
    /// Remapping entries still available.
    pub irtes_free: u32,
    /// Host vectors the VM may hold at once.
    pub vectors_total: u32,
    /// Host vectors still available.
    pub vectors_free: u32,
}

#[derive(Debug)]
struct VirAllocation {
    slot: IrSlot,
    subs: Vec<VectorState>,
}

/// The vIR remapping domain over a [`Hypervisor`] transport.
#[derive(Debug)]
pub struct VirDomain<H> {
    hv: H,
    session: Option<Session>,
    allocs: BTreeMap<u32, VirAllocation>,
    /// Devices the host answered `NOT_YOUR_DEVICE` for (`VIR-LEG-G-003`).
    not_vir: BTreeSet<DeviceId>,
}

impl<H: Hypervisor> VirDomain<H> {
    /// A domain in the legacy state (no session).
    pub fn new(hv: H) -> Self {
        VirDomain {
            hv,
            session: None,
            allocs: BTreeMap::new(),
            not_vir: BTreeSet::new(),
        }
    }

    /// Negotiates the features in `wanted` (see [`negotiation::negotiate`]). On error the domain
    /// stays legacy.
    pub fn negotiate(&mut self, wanted: Features) -> Result<Session, NegotiationError> {
        if let Some(s) = &self.session {
            return Err(NegotiationError::AlreadyNegotiated { session: s.session });
        }
        let s = negotiation::negotiate(&mut self.hv, wanted)?;
        self.session = Some(s);
        Ok(s)
    }

    /// Calls RESET: the host frees every allocation and returns the VM to the legacy state; the
    /// domain forgets its allocations and its session. On error nothing changes.
    pub fn reset(&mut self) -> Result<(), CallError> {
        hypercall::reset(&mut self.hv)?;
        self.session = None;
        self.allocs.clear();
        Ok(())
    }

    /// The session in force, `None` in the legacy state.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The transport.
    pub fn hypervisor(&self) -> &H {
        &self.hv
    }

    /// The transport, mutably (for transports that carry configuration).
    pub fn hypervisor_mut(&mut self) -> &mut H {
        &mut self.hv
    }

    /// Number of live allocations.
    pub fn live_allocations(&self) -> usize {
        self.allocs.len()
    }

    /// The state of vector `sub` of allocation `id`, `None` if there is no such vector.
    pub fn vector_state(&self, id: AllocationId, sub: u16) -> Option<VectorState> {
        self.allocs
            .get(&id.0)
            .and_then(|a| a.subs.get(usize::from(sub)))
            .copied()
    }

    /// Whether IMS may be offered to the driver of `device`: the domain's capability
    /// ([`RemapDomain::supports_ims`]) and no `NOT_YOUR_DEVICE` from the host for this device so
    /// far (`VIR-LEG-G-003`).
    pub fn ims_offered_for(&self, device: DeviceId) -> bool {
        self.supports_ims() && !self.not_vir.contains(&device)
    }

    /// The slot of allocation `id`.
    pub fn allocation_slot(&self, id: AllocationId) -> Option<IrSlot> {
        self.allocs.get(&id.0).map(|a| a.slot)
    }

    /// QUERY_QUOTA (needs the `QUOTA_QUERY` feature).
    pub fn query_quota(&mut self) -> Result<Quota, DomainError> {
        let s = self.session.as_ref().ok_or(DomainError::NotNegotiated)?;
        if !s.features.contains(Features::QUOTA_QUERY) {
            return Err(DomainError::FeatureNotNegotiated(Features::QUOTA_QUERY));
        }
        let q = hypercall::query_quota(&mut self.hv)?;
        Ok(Quota {
            irtes_total: q.irtes_total.get(),
            irtes_free: q.irtes_free.get(),
            vectors_total: q.vectors_total.get(),
            vectors_free: q.vectors_free.get(),
        })
    }

    fn has(&self, f: Features) -> bool {
        self.session.is_some_and(|s| s.features.contains(f))
    }

    fn lookup(&self, id: AllocationId, sub: u16) -> Result<VectorState, DomainError> {
        let a = self
            .allocs
            .get(&id.0)
            .ok_or(DomainError::UnknownAllocation(id))?;
        a.subs
            .get(usize::from(sub))
            .copied()
            .ok_or(DomainError::InvalidSubhandle {
                id,
                sub,
                count: a.subs.len() as u16,
            })
    }

    fn set_state(&mut self, id: AllocationId, sub: u16, state: VectorState) {
        if let Some(s) = self
            .allocs
            .get_mut(&id.0)
            .and_then(|a| a.subs.get_mut(usize::from(sub)))
        {
            *s = state;
        }
    }

    fn check_message(
        expected: MessageFormat,
        resp: &ActivateResponse,
    ) -> Result<MsiMessage, ProtocolError> {
        let got = MessageFormat(resp.format);
        if got != expected {
            return Err(ProtocolError::WrongFormat { expected, got });
        }
        let message = MsiMessage::new(
            resp.address_lo.get(),
            resp.address_hi.get(),
            resp.data.get(),
        );
        let valid = match expected {
            // VIR-FMT-H-001: remappable, SHV = 1, data 0.
            MessageFormat::VTD_REMAPPABLE => matches!(
                RemappableMsi::decode(message),
                Ok(RemappableMsi {
                    shv: true,
                    subhandle: 0,
                    ..
                })
            ),
            MessageFormat::AMD_VI => AmdMsi::decode(message).is_ok(),
            _ => false,
        };
        if valid {
            Ok(message)
        } else {
            Err(ProtocolError::MalformedMessage {
                format: expected,
                message,
            })
        }
    }

    /// Brings a vector whose activation succeeded at the host but was rejected by the guest back
    /// to `prior`, as far as the host allows; records the state reached.
    fn undo_activation(
        &mut self,
        id: AllocationId,
        sub: u16,
        prior: VectorState,
        now: VectorState,
    ) {
        let req = DeactivateRequest {
            handle: U32::new(id.0),
            subhandle: U16::new(sub),
            reserved0: U16::ZERO,
        };
        if hypercall::deactivate(&mut self.hv, &req).is_err() {
            self.set_state(id, sub, now);
            return;
        }
        self.set_state(id, sub, VectorState::Allocated);
        if prior == VectorState::Reserved
            && hypercall::activate(
                &mut self.hv,
                &activate_request(id, sub, Activation::Reserve),
            )
            .is_ok()
        {
            self.set_state(id, sub, VectorState::Reserved);
        }
    }
}

fn activate_request(id: AllocationId, sub: u16, how: Activation) -> ActivateRequest {
    let (flags, target) = match how {
        // The host ignores the target of a reservation; like Linux, name the shutdown vector.
        Activation::Reserve => (activate_flags::RESERVE, Target::new(0, SHUTDOWN_VECTOR)),
        Activation::Target(t) => (0, Target::new(t.apic_id, t.vector)),
    };
    ActivateRequest {
        handle: U32::new(id.0),
        subhandle: U16::new(sub),
        flags: U16::new(flags),
        target,
    }
}

impl<H: Hypervisor> RemapDomain for VirDomain<H> {
    fn supports_ims(&self) -> bool {
        self.has(Features::IMS_DEVICE) || self.has(Features::IMS_SYSTEM)
    }

    fn supports(&self, storage: StorageType) -> bool {
        self.has(storage.feature())
    }

    fn supports_reservation(&self) -> bool {
        self.has(Features::RESERVATION)
    }

    fn max_msi_log2(&self) -> u8 {
        self.session.map_or(0, |s| s.max_msi_log2)
    }

    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
        if self.session.is_none() {
            return Err(DomainError::NotNegotiated);
        }
        if !self.supports(slot.storage) {
            return Err(DomainError::Unsupported(slot.storage));
        }
        let shape_ok = match slot.storage {
            StorageType::Msi => slot.index == 0 && slot.log2_count <= self.max_msi_log2(),
            _ => slot.log2_count == 0,
        };
        let Some(count) = slot.count().filter(|_| shape_ok) else {
            return Err(DomainError::InvalidSlot(slot));
        };
        if slot.storage.is_ims() && self.not_vir.contains(&slot.device) {
            return Err(DomainError::ImsNotOffered(slot.device));
        }
        let req = AllocateRequest {
            device_id: U32::new(slot.device.0),
            kind: slot.storage.wire_kind().0,
            log2_count: slot.log2_count,
            reserved0: U16::ZERO,
            index: U32::new(slot.index),
            reserved1: U32::ZERO,
        };
        let resp = match hypercall::allocate(&mut self.hv, &req) {
            Ok(resp) => resp,
            Err(e) => {
                if e.status == Status::NOT_YOUR_DEVICE {
                    self.not_vir.insert(slot.device);
                }
                return Err(e.into());
            }
        };
        let handle = resp.handle.get();
        if handle == vir_abi::wire::HANDLE_INVALID {
            return Err(DomainError::Protocol(ProtocolError::ZeroHandle));
        }
        if self.allocs.contains_key(&handle) {
            // Freeing it would free the live allocation of that handle: leave it.
            return Err(DomainError::Protocol(ProtocolError::HandleAlreadyLive(
                handle,
            )));
        }
        let got = resp.count.get();
        if got != count {
            // Best effort: the allocation is unusable, give it back.
            let _ = hypercall::free(
                &mut self.hv,
                &FreeRequest {
                    handle: U32::new(handle),
                    reserved0: U32::ZERO,
                },
            );
            return Err(DomainError::Protocol(ProtocolError::WrongCount {
                handle,
                expected: count,
                got,
            }));
        }
        self.allocs.insert(
            handle,
            VirAllocation {
                slot,
                subs: vec![VectorState::Allocated; usize::from(count)],
            },
        );
        Ok(AllocationId(handle))
    }

    fn activate(
        &mut self,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError> {
        let format = self
            .session
            .map(|s| s.message_format)
            .ok_or(DomainError::NotNegotiated)?;
        let prior = self.lookup(id, sub)?;
        let allowed = match how {
            Activation::Reserve => prior == VectorState::Allocated,
            Activation::Target(_) => !matches!(prior, VectorState::Active(_)),
        };
        if !allowed {
            return Err(DomainError::InvalidState {
                id,
                sub,
                state: prior,
            });
        }
        if how == Activation::Reserve && !self.supports_reservation() {
            return Err(DomainError::FeatureNotNegotiated(Features::RESERVATION));
        }
        let resp = hypercall::activate(&mut self.hv, &activate_request(id, sub, how))?;
        let now = match how {
            Activation::Reserve => VectorState::Reserved,
            Activation::Target(t) => VectorState::Active(t),
        };
        match Self::check_message(format, &resp) {
            Ok(msg) => {
                self.set_state(id, sub, now);
                Ok(msg)
            }
            Err(e) => {
                self.undo_activation(id, sub, prior, now);
                Err(DomainError::Protocol(e))
            }
        }
    }

    fn set_affinity(
        &mut self,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError> {
        let state = self.lookup(id, sub)?;
        if !matches!(state, VectorState::Active(_)) {
            return Err(DomainError::InvalidState { id, sub, state });
        }
        let req = SetAffinityRequest {
            handle: U32::new(id.0),
            subhandle: U16::new(sub),
            reserved0: U16::ZERO,
            target: Target::new(target.apic_id, target.vector),
        };
        hypercall::set_affinity(&mut self.hv, &req)?;
        self.set_state(id, sub, VectorState::Active(target));
        Ok(())
    }

    fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError> {
        let state = self.lookup(id, sub)?;
        if state == VectorState::Allocated {
            return Err(DomainError::InvalidState { id, sub, state });
        }
        let req = DeactivateRequest {
            handle: U32::new(id.0),
            subhandle: U16::new(sub),
            reserved0: U16::ZERO,
        };
        hypercall::deactivate(&mut self.hv, &req)?;
        self.set_state(id, sub, VectorState::Allocated);
        Ok(())
    }

    fn free(&mut self, id: AllocationId) -> Result<(), DomainError> {
        if !self.allocs.contains_key(&id.0) {
            return Err(DomainError::UnknownAllocation(id));
        }
        let req = FreeRequest {
            handle: U32::new(id.0),
            reserved0: U32::ZERO,
        };
        hypercall::free(&mut self.hv, &req)?;
        self.allocs.remove(&id.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceId;
    use alloc::collections::VecDeque;
    use vir_abi::call::CallCode;
    use vir_abi::status::Status;
    use vir_abi::wire::{AllocateResponse, NegotiateRequest, NegotiateResponse, QueryResponse};
    use zerocopy::little_endian::U64;
    use zerocopy::{FromBytes, IntoBytes};

    /// A host answering every call from a queue of canned replies (status, response bytes);
    /// QUERY and NEGOTIATE are answered by a fixed offer and an echo.
    struct Canned {
        offered: Features,
        format: MessageFormat,
        replies: VecDeque<(Status, Vec<u8>)>,
        log: Vec<(CallCode, Vec<u8>)>,
    }

    impl Canned {
        fn new(offered: Features) -> Self {
            Canned {
                offered,
                format: MessageFormat::VTD_REMAPPABLE,
                replies: VecDeque::new(),
                log: Vec::new(),
            }
        }
        fn reply(&mut self, status: Status, bytes: &[u8]) {
            self.replies.push_back((status, bytes.to_vec()));
        }
        fn codes(&self) -> Vec<CallCode> {
            self.log.iter().map(|(c, _)| *c).collect()
        }
    }

    impl Hypervisor for Canned {
        fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
            self.log.push((code, request.to_vec()));
            match code {
                CallCode::QUERY => {
                    let q = QueryResponse {
                        min_version: U16::new(1),
                        max_version: U16::new(1),
                        message_format: self.format.0,
                        max_msi_log2: 3,
                        features_offered: U64::new(self.offered.0),
                        ..Default::default()
                    };
                    response.copy_from_slice(q.as_bytes());
                    Status::SUCCESS
                }
                CallCode::NEGOTIATE => {
                    let r = NegotiateRequest::read_from_bytes(request).unwrap();
                    let c = NegotiateResponse {
                        version: r.version,
                        reserved0: U16::ZERO,
                        session: U32::new(1),
                        features: r.features,
                    };
                    response.copy_from_slice(c.as_bytes());
                    Status::SUCCESS
                }
                _ => {
                    let (status, bytes) = self.replies.pop_front().expect("unscripted call");
                    response[..bytes.len()].copy_from_slice(&bytes);
                    status
                }
            }
        }
    }

    fn negotiated(offered: Features) -> VirDomain<Canned> {
        let mut d = VirDomain::new(Canned::new(offered));
        d.negotiate(Features::V1_DEFINED).unwrap();
        d
    }

    fn alloc_resp(handle: u32, count: u16) -> AllocateResponse {
        AllocateResponse {
            handle: U32::new(handle),
            count: U16::new(count),
            reserved0: U16::ZERO,
        }
    }

    fn act_resp(msg: MsiMessage, format: MessageFormat) -> ActivateResponse {
        ActivateResponse {
            address_lo: U32::new(msg.address_lo),
            address_hi: U32::new(msg.address_hi),
            data: U32::new(msg.data),
            format: format.0,
            ..Default::default()
        }
    }

    fn vtd(handle: u16) -> MsiMessage {
        RemappableMsi {
            handle,
            shv: true,
            subhandle: 0,
        }
        .encode()
    }

    const MSIX0: IrSlot = IrSlot {
        device: DeviceId(0x10),
        storage: StorageType::MsiX,
        index: 0,
        log2_count: 0,
    };

    #[test]
    fn vir_leg_g_001_legacy_domain_has_no_capability() {
        let mut d = VirDomain::new(Canned::new(Features::V1_DEFINED));
        assert!(!d.supports_ims());
        assert!(!d.supports(StorageType::MsiX));
        assert_eq!(d.alloc(MSIX0), Err(DomainError::NotNegotiated));
        assert!(d.hypervisor().log.is_empty(), "no call in the legacy state");
        d.negotiate(Features::V1_DEFINED).unwrap();
        assert!(d.supports_ims());
        assert!(d.supports_reservation());
    }

    #[test]
    fn vir_leg_g_001_no_ims_feature_no_capability() {
        let d = negotiated(Features::MSI | Features::MSIX);
        assert!(!d.supports_ims());
        assert!(d.supports(StorageType::Msi));
        assert!(!d.supports(StorageType::ImsSystem));
        let d = negotiated(Features::IMS_SYSTEM);
        assert!(d.supports_ims());
        assert!(!d.supports(StorageType::ImsDevice));
    }

    #[test]
    fn renegotiation_needs_a_reset() {
        let mut d = negotiated(Features::V1_DEFINED);
        assert_eq!(
            d.negotiate(Features::V1_DEFINED),
            Err(NegotiationError::AlreadyNegotiated { session: 1 })
        );
        d.hypervisor_mut().reply(Status::SUCCESS, &[]);
        d.reset().unwrap();
        assert_eq!(d.session(), None);
        d.negotiate(Features::V1_DEFINED).unwrap();
    }

    #[test]
    fn slots_are_checked_before_any_call() {
        let mut d = negotiated(Features::V1_DEFINED);
        let n = d.hypervisor().log.len();
        let bad = [
            IrSlot {
                log2_count: 1,
                ..MSIX0
            },
            IrSlot {
                storage: StorageType::Msi,
                log2_count: 4,
                ..MSIX0
            },
            IrSlot {
                storage: StorageType::Msi,
                index: 1,
                ..MSIX0
            },
        ];
        for slot in bad {
            assert_eq!(d.alloc(slot), Err(DomainError::InvalidSlot(slot)));
        }
        assert_eq!(d.hypervisor().log.len(), n);
    }

    #[test]
    fn allocate_request_fields_and_reserved_zero() {
        // VIR-CALL-G-001
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(0x40, 8).as_bytes());
        let slot = IrSlot {
            device: DeviceId(0x0001_0208),
            storage: StorageType::Msi,
            index: 0,
            log2_count: 3,
        };
        assert_eq!(d.alloc(slot), Ok(AllocationId(0x40)));
        let (code, req) = d.hypervisor().log.last().unwrap();
        assert_eq!(*code, CallCode::ALLOCATE);
        assert_eq!(
            req,
            &[0x08, 0x02, 0x01, 0x00, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            d.vector_state(AllocationId(0x40), 7),
            Some(VectorState::Allocated)
        );
        assert_eq!(d.vector_state(AllocationId(0x40), 8), None);
    }

    #[test]
    fn wrong_count_is_a_protocol_error_and_the_allocation_is_freed() {
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(0x40, 2).as_bytes());
        d.hypervisor_mut().reply(Status::SUCCESS, &[]);
        assert_eq!(
            d.alloc(MSIX0),
            Err(DomainError::Protocol(ProtocolError::WrongCount {
                handle: 0x40,
                expected: 1,
                got: 2
            }))
        );
        assert_eq!(d.hypervisor().codes().last(), Some(&CallCode::FREE));
        assert_eq!(d.live_allocations(), 0);
    }

    #[test]
    fn zero_and_live_handles_are_protocol_errors() {
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(0, 1).as_bytes());
        assert_eq!(
            d.alloc(MSIX0),
            Err(DomainError::Protocol(ProtocolError::ZeroHandle))
        );
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(5, 1).as_bytes());
        d.alloc(MSIX0).unwrap();
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(5, 1).as_bytes());
        let slot = IrSlot { index: 1, ..MSIX0 };
        assert_eq!(
            d.alloc(slot),
            Err(DomainError::Protocol(ProtocolError::HandleAlreadyLive(5)))
        );
        assert_eq!(d.live_allocations(), 1);
        assert_eq!(d.allocation_slot(AllocationId(5)), Some(MSIX0));
    }

    #[test]
    fn compat_format_message_is_rejected_and_the_reservation_restored() {
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(9, 1).as_bytes());
        let id = d.alloc(MSIX0).unwrap();
        d.hypervisor_mut().reply(
            Status::SUCCESS,
            act_resp(vtd(9), MessageFormat::VTD_REMAPPABLE).as_bytes(),
        );
        assert_eq!(d.activate(id, 0, Activation::Reserve), Ok(vtd(9)));
        // Real activation answered with a compatibility-format message (VIR-FMT-H-002).
        let compat = MsiMessage::new(0xFEE0_1000, 0, 0x41);
        d.hypervisor_mut().reply(
            Status::SUCCESS,
            act_resp(compat, MessageFormat::VTD_REMAPPABLE).as_bytes(),
        );
        d.hypervisor_mut().reply(Status::SUCCESS, &[]);
        d.hypervisor_mut().reply(
            Status::SUCCESS,
            act_resp(vtd(9), MessageFormat::VTD_REMAPPABLE).as_bytes(),
        );
        let t = IrqTarget {
            apic_id: 0,
            vector: 0x41,
        };
        assert_eq!(
            d.activate(id, 0, Activation::Target(t)),
            Err(DomainError::Protocol(ProtocolError::MalformedMessage {
                format: MessageFormat::VTD_REMAPPABLE,
                message: compat
            }))
        );
        let codes = d.hypervisor().codes();
        assert_eq!(
            codes[codes.len() - 3..],
            [CallCode::ACTIVATE, CallCode::DEACTIVATE, CallCode::ACTIVATE]
        );
        assert_eq!(d.vector_state(id, 0), Some(VectorState::Reserved));
    }

    #[test]
    fn wrong_format_byte_is_rejected() {
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(9, 1).as_bytes());
        let id = d.alloc(MSIX0).unwrap();
        d.hypervisor_mut().reply(
            Status::SUCCESS,
            act_resp(vtd(9), MessageFormat::AMD_VI).as_bytes(),
        );
        d.hypervisor_mut().reply(Status::SUCCESS, &[]);
        let t = IrqTarget {
            apic_id: 0,
            vector: 0x41,
        };
        assert_eq!(
            d.activate(id, 0, Activation::Target(t)),
            Err(DomainError::Protocol(ProtocolError::WrongFormat {
                expected: MessageFormat::VTD_REMAPPABLE,
                got: MessageFormat::AMD_VI
            }))
        );
        assert_eq!(d.vector_state(id, 0), Some(VectorState::Allocated));
    }

    #[test]
    fn amd_vi_session_accepts_amd_messages() {
        let mut hv = Canned::new(Features::V1_DEFINED);
        hv.format = MessageFormat::AMD_VI;
        let mut d = VirDomain::new(hv);
        d.negotiate(Features::V1_DEFINED).unwrap();
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(3, 1).as_bytes());
        let id = d.alloc(MSIX0).unwrap();
        let msg = MsiMessage::new(0xFEE0_0000, 0, 0x12);
        d.hypervisor_mut().reply(
            Status::SUCCESS,
            act_resp(msg, MessageFormat::AMD_VI).as_bytes(),
        );
        assert_eq!(d.activate(id, 0, Activation::Reserve), Ok(msg));
    }

    #[test]
    fn state_machine_is_enforced_locally() {
        let mut d = negotiated(Features::V1_DEFINED.difference(Features::RESERVATION));
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(9, 1).as_bytes());
        let id = d.alloc(MSIX0).unwrap();
        let n = d.hypervisor().log.len();
        let t = IrqTarget {
            apic_id: 1,
            vector: 0x30,
        };
        assert_eq!(
            d.activate(id, 0, Activation::Reserve),
            Err(DomainError::FeatureNotNegotiated(Features::RESERVATION))
        );
        assert_eq!(
            d.set_affinity(id, 0, t),
            Err(DomainError::InvalidState {
                id,
                sub: 0,
                state: VectorState::Allocated
            })
        );
        assert_eq!(
            d.deactivate(id, 0),
            Err(DomainError::InvalidState {
                id,
                sub: 0,
                state: VectorState::Allocated
            })
        );
        assert_eq!(
            d.activate(id, 1, Activation::Target(t)),
            Err(DomainError::InvalidSubhandle {
                id,
                sub: 1,
                count: 1
            })
        );
        assert_eq!(
            d.free(AllocationId(77)),
            Err(DomainError::UnknownAllocation(AllocationId(77)))
        );
        assert_eq!(d.hypervisor().log.len(), n, "no call was made");
    }

    #[test]
    fn vir_sta_g_001_failed_calls_leave_the_state() {
        let mut d = negotiated(Features::V1_DEFINED);
        d.hypervisor_mut()
            .reply(Status::SUCCESS, alloc_resp(9, 1).as_bytes());
        let id = d.alloc(MSIX0).unwrap();
        let t = IrqTarget {
            apic_id: 1,
            vector: 0x30,
        };
        d.hypervisor_mut().reply(Status::VECTORS_EXHAUSTED, &[]);
        let err = d.activate(id, 0, Activation::Target(t)).unwrap_err();
        assert_eq!(
            err,
            DomainError::Host(CallError {
                call: CallCode::ACTIVATE,
                status: Status::VECTORS_EXHAUSTED
            })
        );
        assert_eq!(err.errno(), vir_abi::status::errno::ENOSPC);
        assert_eq!(d.vector_state(id, 0), Some(VectorState::Allocated));
        d.hypervisor_mut().reply(Status::BUSY, &[]);
        assert_eq!(
            d.free(id).unwrap_err().errno(),
            vir_abi::status::errno::EAGAIN
        );
        assert_eq!(
            d.live_allocations(),
            1,
            "a refused FREE keeps the allocation"
        );
    }

    #[test]
    fn quota_query_is_gated() {
        let mut d = negotiated(Features::V1_DEFINED.difference(Features::QUOTA_QUERY));
        assert_eq!(
            d.query_quota(),
            Err(DomainError::FeatureNotNegotiated(Features::QUOTA_QUERY))
        );
        let mut d = negotiated(Features::V1_DEFINED);
        let q = vir_abi::wire::QuotaResponse {
            irtes_total: U32::new(64),
            irtes_free: U32::new(60),
            vectors_total: U32::new(32),
            vectors_free: U32::new(31),
        };
        d.hypervisor_mut().reply(Status::SUCCESS, q.as_bytes());
        assert_eq!(
            d.query_quota(),
            Ok(Quota {
                irtes_total: 64,
                irtes_free: 60,
                vectors_total: 32,
                vectors_free: 31
            })
        );
    }
}

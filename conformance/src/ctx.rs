//! The context check bodies run in: guest-side call helpers over a [`HostUnderTest`], the
//! fixture, and expectation helpers that turn a departure into a [`Failure`].
//!
//! Guest memory layout used by the helpers, from [`VmFixture::scratch`] of each VM (one page
//! each): page 0 requests, page 1 responses, page 2 doorbell blocks, pages 3 and up free for
//! checks that place buffers themselves.

use std::fmt::Debug;

use vir_abi::call::{CallCode, PAGE_SIZE};
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    FreeRequest, NegotiateRequest, NegotiateResponse, QueryResponse, QuotaResponse,
    SetAffinityRequest, StorageKind, Target, activate_flags, call_layout,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::hut::{
    Buffer, Delivery, Fixture, HostUnderTest, IrteView, SCRATCH_PAGES, Scope, Snapshot, VmFixture,
    VmRef,
};
use crate::outcome::{CheckResult, Expected, Failure, Stop, harness};

/// Byte the helpers write over a response buffer before a call, so that a check can tell whether
/// the host wrote it (VIR-CALL-H-007).
pub const FILL: u8 = 0xa5;

/// Scratch page holding requests.
pub const REQUEST_PAGE: u64 = 0;
/// Scratch page holding responses.
pub const RESPONSE_PAGE: u64 = 1;
/// Scratch page holding doorbell blocks.
pub const BLOCK_PAGE: u64 = 2;
/// First scratch page free for checks.
pub const FREE_PAGE: u64 = 3;

/// The guest vector the helpers use for plain activations unless told otherwise.
pub const VECTOR: u8 = 0x41;

/// One single-vector storage slot of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Guest-visible device id.
    pub device_id: u32,
    /// Storage kind.
    pub kind: StorageKind,
    /// Storage index.
    pub index: u32,
}

/// A live allocation made by a helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alloc {
    /// Its handle.
    pub handle: u32,
    /// Its vector count.
    pub count: u16,
}

/// The result of one call made by [`Ctx::exchange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Status returned.
    pub status: Status,
    /// The response buffer's bytes after the call (pre-filled with [`FILL`]).
    pub response: Vec<u8>,
}

impl Exchange {
    /// Whether any byte of the response buffer differs from [`FILL`].
    pub fn response_written(&self) -> bool {
        self.response.iter().any(|&b| b != FILL)
    }
}

/// What the helpers learned when they negotiated a session for a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionInfo {
    features: Features,
    slots: Vec<Slot>,
    next: usize,
}

/// The context of one check run.
pub struct Ctx<'a> {
    host: &'a mut dyn HostUnderTest,
    fixture: Fixture,
    sessions: [Option<SessionInfo>; 2],
}

fn slot_of(vm: VmRef) -> usize {
    match vm {
        VmRef::Primary => 0,
        VmRef::Secondary => 1,
    }
}

/// Build an ALLOCATE request with zero reserved fields.
pub fn allocate_request(
    device_id: u32,
    kind: StorageKind,
    log2: u8,
    index: u32,
) -> AllocateRequest {
    AllocateRequest {
        device_id: U32::new(device_id),
        kind: kind.0,
        log2_count: log2,
        reserved0: U16::ZERO,
        index: U32::new(index),
        reserved1: U32::ZERO,
    }
}

/// Build an ACTIVATE request.
pub fn activate_request(
    handle: u32,
    sub: u16,
    flags: u16,
    apic: u32,
    vector: u8,
) -> ActivateRequest {
    ActivateRequest {
        handle: U32::new(handle),
        subhandle: U16::new(sub),
        flags: U16::new(flags),
        target: Target::new(apic, vector),
    }
}

/// Build a SET_AFFINITY request.
pub fn affinity_request(handle: u32, sub: u16, apic: u32, vector: u8) -> SetAffinityRequest {
    SetAffinityRequest {
        handle: U32::new(handle),
        subhandle: U16::new(sub),
        reserved0: U16::ZERO,
        target: Target::new(apic, vector),
    }
}

/// Build a DEACTIVATE request.
pub fn deactivate_request(handle: u32, sub: u16) -> DeactivateRequest {
    DeactivateRequest {
        handle: U32::new(handle),
        subhandle: U16::new(sub),
        reserved0: U16::ZERO,
    }
}

/// Build a FREE request.
pub fn free_request(handle: u32) -> FreeRequest {
    FreeRequest {
        handle: U32::new(handle),
        reserved0: U32::ZERO,
    }
}

/// Build a NEGOTIATE request.
pub fn negotiate_request(version: u16, features: Features) -> NegotiateRequest {
    NegotiateRequest {
        version: U16::new(version),
        reserved0: U16::ZERO,
        reserved1: U32::ZERO,
        features: U64::new(features.bits()),
    }
}

/// The request and response sizes of a version 1 call (0, 0 for any other code).
pub fn sizes(code: CallCode) -> (u64, u64) {
    call_layout(code).map_or((0, 0), |l| {
        (u64::from(l.request_len()), u64::from(l.response_len()))
    })
}

/// Expect `actual` to be `expected` in `step`.
pub fn expect(step: impl Into<String>, expected: Status, actual: Status) -> CheckResult {
    expect_that(step, Expected::Exactly(expected), actual)
}

/// Expect `actual` to satisfy `expected` in `step`.
pub fn expect_that(step: impl Into<String>, expected: Expected, actual: Status) -> CheckResult {
    if expected.accepts(actual) {
        Ok(())
    } else {
        Err(Stop::Fail(Failure::Status {
            step: step.into(),
            expected,
            actual,
        }))
    }
}

/// Expect a value to equal what the specification requires.
pub fn expect_eq<T: Debug + PartialEq>(
    step: impl Into<String>,
    what: &str,
    expected: T,
    actual: T,
) -> CheckResult {
    if expected == actual {
        Ok(())
    } else {
        Err(value_failure(
            step,
            what,
            format!("{expected:?}"),
            format!("{actual:?}"),
        ))
    }
}

/// A failure about a value.
pub fn value_failure(
    step: impl Into<String>,
    what: &str,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> Stop {
    Stop::Fail(Failure::Value {
        step: step.into(),
        what: what.to_string(),
        expected: expected.into(),
        actual: actual.into(),
    })
}

/// Expect a condition, failing with `what` / `expected` / `actual` text otherwise.
pub fn ensure(
    cond: bool,
    step: impl Into<String>,
    what: &str,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> CheckResult {
    if cond {
        Ok(())
    } else {
        Err(value_failure(step, what, expected, actual))
    }
}

impl<'a> Ctx<'a> {
    /// A context over `host`.
    pub fn new(host: &'a mut dyn HostUnderTest) -> Self {
        let fixture = host.fixture().clone();
        Ctx {
            host,
            fixture,
            sessions: [None, None],
        }
    }

    /// The host under test.
    pub fn host(&mut self) -> &mut dyn HostUnderTest {
        self.host
    }

    /// The fixture.
    pub fn fixture(&self) -> &Fixture {
        &self.fixture
    }

    /// The description of `vm` (not testable without a secondary VM).
    pub fn vm(&self, vm: VmRef) -> Result<&VmFixture, Stop> {
        self.fixture
            .vm(vm)
            .ok_or_else(|| Stop::NotTestable(format!("the fixture has no {vm}")))
    }

    /// Guest APIC id of vCPU `i` of `vm`.
    pub fn apic(&self, vm: VmRef, i: usize) -> Result<u32, Stop> {
        self.vm(vm)?
            .vcpus
            .get(i)
            .map(|v| v.apic_id)
            .ok_or_else(|| Stop::NotTestable(format!("the {vm} has no vCPU {i}")))
    }

    /// GPA of scratch page `page` of `vm`.
    pub fn page(&self, vm: VmRef, page: u64) -> Result<u64, Stop> {
        let base = self.vm(vm)?.scratch;
        if page >= SCRATCH_PAGES {
            return Err(Stop::NotTestable(format!(
                "scratch page {page} out of range"
            )));
        }
        Ok(base + page * PAGE_SIZE)
    }

    // ---- guest memory ----

    /// Write guest memory.
    pub fn write(&mut self, vm: VmRef, gpa: u64, bytes: &[u8]) -> CheckResult {
        self.host
            .write_guest(vm, gpa, bytes)
            .map_err(|e| harness("writing guest memory", e))
    }

    /// Read guest memory.
    pub fn read(&mut self, vm: VmRef, gpa: u64, len: usize) -> Result<Vec<u8>, Stop> {
        let mut buf = vec![0; len];
        self.host
            .read_guest(vm, gpa, &mut buf)
            .map_err(|e| harness("reading guest memory", e))?;
        Ok(buf)
    }

    /// Fill `len` bytes at `gpa` with `byte`.
    pub fn fill(&mut self, vm: VmRef, gpa: u64, len: usize, byte: u8) -> CheckResult {
        self.write(vm, gpa, &vec![byte; len])
    }

    // ---- raw calls ----

    /// Make a call from vCPU 0 of `vm` with exactly these buffers.
    pub fn call(
        &mut self,
        vm: VmRef,
        code: CallCode,
        request: Buffer,
        response: Buffer,
    ) -> Result<Status, Stop> {
        self.call_on(vm, 0, code, request, response)
    }

    /// Make a call from vCPU `vcpu` of `vm` with exactly these buffers.
    pub fn call_on(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        code: CallCode,
        request: Buffer,
        response: Buffer,
    ) -> Result<Status, Stop> {
        self.host
            .call(vm, vcpu, code, request, response)
            .map_err(|e| harness(&format!("call {code}"), e))
    }

    /// Place `request` on the request page, fill `response_len` bytes of the response page with
    /// [`FILL`], call `code` with exactly these lengths (GPA 0 for an empty buffer) and return
    /// the status and the response bytes afterwards.
    pub fn exchange(
        &mut self,
        vm: VmRef,
        code: CallCode,
        request: &[u8],
        response_len: usize,
    ) -> Result<Exchange, Stop> {
        self.exchange_on(vm, 0, code, request, response_len)
    }

    /// [`Ctx::exchange`] from vCPU `vcpu`.
    pub fn exchange_on(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        code: CallCode,
        request: &[u8],
        response_len: usize,
    ) -> Result<Exchange, Stop> {
        let req_gpa = self.page(vm, REQUEST_PAGE)?;
        let resp_gpa = self.page(vm, RESPONSE_PAGE)?;
        let req = if request.is_empty() {
            Buffer::NONE
        } else {
            self.write(vm, req_gpa, request)?;
            Buffer::new(req_gpa, request.len() as u64)
        };
        let resp = if response_len == 0 {
            Buffer::NONE
        } else {
            self.fill(vm, resp_gpa, response_len, FILL)?;
            Buffer::new(resp_gpa, response_len as u64)
        };
        let status = self.call_on(vm, vcpu, code, req, resp)?;
        let response = if response_len == 0 {
            Vec::new()
        } else {
            self.read(vm, resp_gpa, response_len)?
        };
        Ok(Exchange { status, response })
    }

    /// [`Ctx::exchange`] with the call's own response size.
    pub fn exchange_call(
        &mut self,
        vm: VmRef,
        code: CallCode,
        request: &[u8],
    ) -> Result<Exchange, Stop> {
        let (_, resp) = sizes(code);
        self.exchange(vm, code, request, resp as usize)
    }

    fn typed<R: FromBytes>(
        &mut self,
        vm: VmRef,
        code: CallCode,
        request: &[u8],
    ) -> Result<Result<R, Status>, Stop> {
        let x = self.exchange_call(vm, code, request)?;
        if x.status != Status::SUCCESS {
            return Ok(Err(x.status));
        }
        match R::read_from_bytes(&x.response) {
            Ok(r) => Ok(Ok(r)),
            Err(_) => Err(value_failure(
                format!("{code}"),
                "response size",
                "the call's response size",
                format!("{} bytes", x.response.len()),
            )),
        }
    }

    fn ok<R>(step: impl Into<String>, r: Result<R, Status>) -> Result<R, Stop> {
        r.map_err(|actual| {
            Stop::Fail(Failure::Status {
                step: step.into(),
                expected: Expected::Exactly(Status::SUCCESS),
                actual,
            })
        })
    }

    // ---- typed calls ----

    /// QUERY, expecting SUCCESS.
    pub fn query(&mut self, vm: VmRef) -> Result<QueryResponse, Stop> {
        let r = self.typed(vm, CallCode::QUERY, &[])?;
        Self::ok(format!("QUERY in the {vm}"), r)
    }

    /// NEGOTIATE with `version` and `features`.
    pub fn try_negotiate(
        &mut self,
        vm: VmRef,
        version: u16,
        features: Features,
    ) -> Result<Result<NegotiateResponse, Status>, Stop> {
        let req = negotiate_request(version, features);
        self.typed(vm, CallCode::NEGOTIATE, req.as_bytes())
    }

    /// NEGOTIATE version 1 with `features`, expecting SUCCESS; the helpers' allocation slots
    /// follow the features.
    pub fn negotiate(&mut self, vm: VmRef, features: Features) -> Result<NegotiateResponse, Stop> {
        let r = self.try_negotiate(vm, vir_abi::VIR_VERSION_1, features)?;
        let resp = Self::ok(
            format!("NEGOTIATE version 1 with features {features} in the {vm}"),
            r,
        )?;
        let slots = self.slots_for(vm, features)?;
        self.sessions[slot_of(vm)] = Some(SessionInfo {
            features,
            slots,
            next: 0,
        });
        Ok(resp)
    }

    /// The version 1 features the host offers to `vm` (from QUERY).
    pub fn offered(&mut self, vm: VmRef) -> Result<Features, Stop> {
        let q = self.query(vm)?;
        Ok(Features(q.features_offered.get()).intersection(Features::V1_DEFINED))
    }

    /// Negotiate every version 1 feature offered; returns the features.
    pub fn negotiate_all(&mut self, vm: VmRef) -> Result<Features, Stop> {
        let f = self.offered(vm)?;
        self.negotiate(vm, f)?;
        Ok(f)
    }

    /// Require `feature` among the offered ones (otherwise the check does not apply: a host
    /// conforms for the features it offers).
    pub fn require_offered(&mut self, vm: VmRef, feature: Features) -> CheckResult {
        let f = self.offered(vm)?;
        if f.contains(feature) {
            Ok(())
        } else {
            Err(Stop::NotApplicable(format!(
                "the host does not offer {feature}"
            )))
        }
    }

    /// Every single-vector storage slot of `vm` whose kind `features` allow, MSI-X first.
    pub fn slots_for(&self, vm: VmRef, features: Features) -> Result<Vec<Slot>, Stop> {
        let v = self.vm(vm)?;
        let mut out = Vec::new();
        for (kind, feature) in [
            (StorageKind::MSIX, Features::MSIX),
            (StorageKind::IMS_DEVICE, Features::IMS_DEVICE),
            (StorageKind::IMS_SYSTEM, Features::IMS_SYSTEM),
        ] {
            if !features.contains(feature) {
                continue;
            }
            for d in &v.devices {
                let n = match kind {
                    StorageKind::MSIX => d.msix_entries,
                    StorageKind::IMS_DEVICE => d.ims_device_entries,
                    _ => d.ims_system_entries,
                };
                out.extend((0..n).map(|index| Slot {
                    device_id: d.device_id,
                    kind,
                    index,
                }));
            }
        }
        Ok(out)
    }

    /// The features negotiated by [`Ctx::negotiate`] for `vm`.
    pub fn session_features(&self, vm: VmRef) -> Features {
        self.sessions[slot_of(vm)]
            .as_ref()
            .map_or(Features::NONE, |s| s.features)
    }

    /// Take the next unused single-vector slot of the session (not testable when none is left).
    pub fn next_slot(&mut self, vm: VmRef) -> Result<Slot, Stop> {
        let s = self.sessions[slot_of(vm)]
            .as_mut()
            .ok_or_else(|| Stop::NotTestable(format!("no session negotiated in the {vm}")))?;
        let slot = s.slots.get(s.next).copied().ok_or_else(|| {
            Stop::NotTestable(format!(
                "the {vm}'s devices have no more single-vector slots for the negotiated features"
            ))
        })?;
        s.next += 1;
        Ok(slot)
    }

    /// ALLOCATE with a raw request.
    pub fn try_allocate(
        &mut self,
        vm: VmRef,
        req: &AllocateRequest,
    ) -> Result<Result<AllocateResponse, Status>, Stop> {
        self.typed(vm, CallCode::ALLOCATE, req.as_bytes())
    }

    /// ALLOCATE `slot`, expecting SUCCESS.
    pub fn allocate_slot(&mut self, vm: VmRef, slot: Slot) -> Result<Alloc, Stop> {
        let r = self.try_allocate(
            vm,
            &allocate_request(slot.device_id, slot.kind, 0, slot.index),
        )?;
        let a = Self::ok(
            format!(
                "ALLOCATE {:?} index {} of device {:#x} in the {vm}",
                slot.kind, slot.index, slot.device_id
            ),
            r,
        )?;
        Ok(Alloc {
            handle: a.handle.get(),
            count: a.count.get(),
        })
    }

    /// ALLOCATE the next unused single-vector slot, expecting SUCCESS.
    pub fn allocate(&mut self, vm: VmRef) -> Result<Alloc, Stop> {
        let slot = self.next_slot(vm)?;
        self.allocate_slot(vm, slot)
    }

    /// ALLOCATE an MSI block of 2^`log2` vectors on `device_id`, expecting SUCCESS.
    pub fn allocate_msi(&mut self, vm: VmRef, device_id: u32, log2: u8) -> Result<Alloc, Stop> {
        let r = self.try_allocate(vm, &allocate_request(device_id, StorageKind::MSI, log2, 0))?;
        let a = Self::ok(
            format!("ALLOCATE MSI 2^{log2} of device {device_id:#x} in the {vm}"),
            r,
        )?;
        Ok(Alloc {
            handle: a.handle.get(),
            count: a.count.get(),
        })
    }

    /// ACTIVATE with a raw request.
    pub fn try_activate(
        &mut self,
        vm: VmRef,
        req: &ActivateRequest,
    ) -> Result<Result<ActivateResponse, Status>, Stop> {
        self.typed(vm, CallCode::ACTIVATE, req.as_bytes())
    }

    /// Plain ACTIVATE of `handle`/`sub` to `apic`/`vector`, expecting SUCCESS.
    pub fn activate(
        &mut self,
        vm: VmRef,
        handle: u32,
        sub: u16,
        apic: u32,
        vector: u8,
    ) -> Result<ActivateResponse, Stop> {
        let r = self.try_activate(vm, &activate_request(handle, sub, 0, apic, vector))?;
        Self::ok(
            format!(
                "ACTIVATE handle {handle:#x} sub-handle {sub} to APIC {apic} vector {vector:#x}"
            ),
            r,
        )
    }

    /// ACTIVATE with RESERVE (target zero), expecting SUCCESS.
    pub fn reserve(&mut self, vm: VmRef, handle: u32, sub: u16) -> Result<ActivateResponse, Stop> {
        let r = self.try_activate(
            vm,
            &activate_request(handle, sub, activate_flags::RESERVE, 0, 0),
        )?;
        Self::ok(
            format!("ACTIVATE RESERVE handle {handle:#x} sub-handle {sub}"),
            r,
        )
    }

    /// Allocate the next slot and activate it to vCPU 0 with [`VECTOR`].
    pub fn allocate_active(&mut self, vm: VmRef) -> Result<(Alloc, ActivateResponse), Stop> {
        let a = self.allocate(vm)?;
        let apic = self.apic(vm, 0)?;
        let m = self.activate(vm, a.handle, 0, apic, VECTOR)?;
        Ok((a, m))
    }

    /// SET_AFFINITY; returns the status.
    pub fn set_affinity(
        &mut self,
        vm: VmRef,
        handle: u32,
        sub: u16,
        apic: u32,
        vector: u8,
    ) -> Result<Status, Stop> {
        let req = affinity_request(handle, sub, apic, vector);
        Ok(self
            .exchange(vm, CallCode::SET_AFFINITY, req.as_bytes(), 0)?
            .status)
    }

    /// DEACTIVATE; returns the status.
    pub fn deactivate(&mut self, vm: VmRef, handle: u32, sub: u16) -> Result<Status, Stop> {
        let req = deactivate_request(handle, sub);
        Ok(self
            .exchange(vm, CallCode::DEACTIVATE, req.as_bytes(), 0)?
            .status)
    }

    /// FREE; returns the status.
    pub fn free(&mut self, vm: VmRef, handle: u32) -> Result<Status, Stop> {
        let req = free_request(handle);
        Ok(self.exchange(vm, CallCode::FREE, req.as_bytes(), 0)?.status)
    }

    /// RESET; returns the status.
    pub fn reset(&mut self, vm: VmRef) -> Result<Status, Stop> {
        let s = self.exchange(vm, CallCode::RESET, &[], 0)?.status;
        if s == Status::SUCCESS {
            self.sessions[slot_of(vm)] = None;
        }
        Ok(s)
    }

    /// A platform reset of `vm`.
    pub fn reset_vm(&mut self, vm: VmRef) -> CheckResult {
        self.host
            .reset_vm(vm)
            .map_err(|e| harness("platform reset", e))?;
        self.sessions[slot_of(vm)] = None;
        Ok(())
    }

    /// QUERY_QUOTA.
    pub fn try_quota(&mut self, vm: VmRef) -> Result<Result<QuotaResponse, Status>, Stop> {
        self.typed(vm, CallCode::QUERY_QUOTA, &[])
    }

    /// QUERY_QUOTA, expecting SUCCESS.
    pub fn quota(&mut self, vm: VmRef) -> Result<QuotaResponse, Stop> {
        let r = self.try_quota(vm)?;
        Self::ok(format!("QUERY_QUOTA in the {vm}"), r)
    }

    // ---- hooks ----

    /// A snapshot (not testable without the hook).
    pub fn snapshot(&mut self, scope: Scope) -> Result<Snapshot, Stop> {
        self.host
            .snapshot(scope)
            .map_err(|e| harness("snapshot", e))
    }

    /// Fail unless a new snapshot of `scope` equals `before`.
    pub fn unchanged(
        &mut self,
        step: impl Into<String>,
        before: &Snapshot,
        scope: Scope,
    ) -> CheckResult {
        let after = self.snapshot(scope)?;
        let components = before.differences(&after);
        if components.is_empty() {
            Ok(())
        } else {
            Err(Stop::Fail(Failure::StateChanged {
                step: step.into(),
                components,
            }))
        }
    }

    /// The IRTE behind a live vector (the hook must know it).
    pub fn irte(&mut self, vm: VmRef, handle: u32, sub: u16) -> Result<IrteView, Stop> {
        self.host
            .irte(vm, handle, sub)
            .map_err(|e| harness("IRTE introspection", e))?
            .ok_or_else(|| {
                value_failure(
                    format!("IRTE of handle {handle:#x} sub-handle {sub}"),
                    "IRTE hook answer",
                    "the entry of a live allocation",
                    "no entry",
                )
            })
    }

    /// Where the vector's interrupt would arrive now.
    pub fn delivery(&mut self, vm: VmRef, handle: u32, sub: u16) -> Result<Option<Delivery>, Stop> {
        self.host
            .delivery(vm, handle, sub)
            .map_err(|e| harness("delivery introspection", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_builders_zero_reserved_fields() {
        let a = allocate_request(0x300, StorageKind::MSIX, 0, 5);
        assert_eq!(
            a.as_bytes(),
            &[0, 3, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
        );
        let r = activate_request(7, 1, activate_flags::RESERVE, 2, 0x41);
        assert_eq!(
            r.as_bytes(),
            &[7, 0, 0, 0, 1, 0, 1, 0, 2, 0, 0, 0, 0x41, 0, 0, 0]
        );
        assert_eq!(free_request(9).as_bytes(), &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sizes(CallCode::ACTIVATE), (16, 24));
        assert_eq!(sizes(CallCode(0x20)), (0, 0));
    }

    #[test]
    fn expectation_helpers_report_exact_values() {
        assert_eq!(expect("s", Status::SUCCESS, Status::SUCCESS), Ok(()));
        assert_eq!(
            expect("s", Status::SUCCESS, Status::BUSY),
            Err(Stop::Fail(Failure::Status {
                step: "s".into(),
                expected: Expected::Exactly(Status::SUCCESS),
                actual: Status::BUSY
            }))
        );
        assert_eq!(
            expect_eq("s", "count", 1u16, 2u16),
            Err(Stop::Fail(Failure::Value {
                step: "s".into(),
                what: "count".into(),
                expected: "1".into(),
                actual: "2".into()
            }))
        );
        let x = Exchange {
            status: Status::SUCCESS,
            response: vec![FILL; 4],
        };
        assert!(!x.response_written());
    }
}

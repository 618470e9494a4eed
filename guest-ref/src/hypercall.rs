//! The hypercall transport and one typed function per vIR call.
//!
//! [`Hypervisor`] is the transport: an implementation (register binding with `VMCALL` /
//! `VMMCALL`, or the port-I/O doorbell) places the two buffers in guest memory, aligned and
//! within one page, and keeps them unchanged while the call is in flight (`VIR-MEM-G-001`). This
//! crate never does that itself.
//!
//! The typed functions build every request from zeroed structures, so reserved fields are zero
//! (`VIR-CALL-G-001`), pass buffers of exactly the call's sizes, and turn any status other than
//! `SUCCESS` into a [`CallError`].

use core::fmt;
use vir_abi::call::CallCode;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    FreeRequest, NegotiateRequest, NegotiateResponse, QueryResponse, QuotaResponse,
    SetAffinityRequest,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The hypercall transport.
pub trait Hypervisor {
    /// Makes call `code` with the request bytes and a response buffer of the call's response
    /// size, and returns the status the host reported. On `SUCCESS` the response buffer holds
    /// the host's response; on any other status its content is unspecified.
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status;
}

impl<H: Hypervisor + ?Sized> Hypervisor for &mut H {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        (**self).call(code, request, response)
    }
}

/// A call that returned a status other than `SUCCESS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallError {
    /// The call made.
    pub call: CallCode,
    /// The status the host returned.
    pub status: Status,
}

impl CallError {
    /// The errno a kernel returns to the original caller: [`Status::errno`] (`VIR-STA-G-001`).
    pub const fn errno(&self) -> i32 {
        self.status.errno()
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (-{})",
            self.call,
            self.status,
            self.status.errno_name()
        )
    }
}

/// The status a guest records for a register-binding call whose returned `RAX` is not a status:
/// `0xFFFF_FFFF`, a value version 1 names no status with (the specification uses it as the
/// doorbell's "not written" preset for the same reason). Like every unknown status it is a
/// failure reported as `EIO` (`VIR-STA-G-002`).
pub const NO_STATUS: Status = Status(u32::MAX);

/// The status of a register-binding call (`VMCALL` / `VMMCALL`) from the `RAX` the instruction
/// returned: a host places the status zero-extended, so a value with any of bits 63:32 set is a
/// failed call with an unknown status, [`NO_STATUS`] (`VIR-REG-G-003`) — never its low half,
/// which could read as `SUCCESS`. KVM's `-KVM_ENOSYS` for a hypercall it does not forward is
/// such a value.
pub const fn status_from_rax(rax: u64) -> Status {
    if rax >> 32 == 0 {
        // Bits 63:32 are clear: the value is the status.
        Status(rax as u32)
    } else {
        NO_STATUS
    }
}

fn exchange<H, Req, Resp>(hv: &mut H, code: CallCode, request: &Req) -> Result<Resp, CallError>
where
    H: Hypervisor + ?Sized,
    Req: IntoBytes + Immutable + ?Sized,
    Resp: FromBytes + IntoBytes,
{
    let mut response = Resp::new_zeroed();
    let status = hv.call(code, request.as_bytes(), response.as_mut_bytes());
    if status == Status::SUCCESS {
        Ok(response)
    } else {
        Err(CallError { call: code, status })
    }
}

/// `QUERY`: versions, features, formats, limits and the VM state.
pub fn query<H: Hypervisor + ?Sized>(hv: &mut H) -> Result<QueryResponse, CallError> {
    exchange(hv, CallCode::QUERY, &[] as &[u8])
}

/// `NEGOTIATE`: accept a version and a feature set.
pub fn negotiate<H: Hypervisor + ?Sized>(
    hv: &mut H,
    request: &NegotiateRequest,
) -> Result<NegotiateResponse, CallError> {
    exchange(hv, CallCode::NEGOTIATE, request)
}

/// `RESET`: free everything and return the VM to the legacy state.
pub fn reset<H: Hypervisor + ?Sized>(hv: &mut H) -> Result<(), CallError> {
    exchange::<_, [u8], [u8; 0]>(hv, CallCode::RESET, &[]).map(|_| ())
}

/// `ALLOCATE`: reserve remapping entries for a storage slot.
pub fn allocate<H: Hypervisor + ?Sized>(
    hv: &mut H,
    request: &AllocateRequest,
) -> Result<AllocateResponse, CallError> {
    exchange(hv, CallCode::ALLOCATE, request)
}

/// `ACTIVATE`: activate one vector (or reserve it) and obtain the allocation's message.
pub fn activate<H: Hypervisor + ?Sized>(
    hv: &mut H,
    request: &ActivateRequest,
) -> Result<ActivateResponse, CallError> {
    exchange(hv, CallCode::ACTIVATE, request)
}

/// `SET_AFFINITY`: retarget an active vector.
pub fn set_affinity<H: Hypervisor + ?Sized>(
    hv: &mut H,
    request: &SetAffinityRequest,
) -> Result<(), CallError> {
    exchange::<_, _, [u8; 0]>(hv, CallCode::SET_AFFINITY, request).map(|_| ())
}

/// `DEACTIVATE`: deactivate one vector; its message stays reserved.
pub fn deactivate<H: Hypervisor + ?Sized>(
    hv: &mut H,
    request: &DeactivateRequest,
) -> Result<(), CallError> {
    exchange::<_, _, [u8; 0]>(hv, CallCode::DEACTIVATE, request).map(|_| ())
}

/// `FREE`: free an allocation.
pub fn free<H: Hypervisor + ?Sized>(hv: &mut H, request: &FreeRequest) -> Result<(), CallError> {
    exchange::<_, _, [u8; 0]>(hv, CallCode::FREE, request).map(|_| ())
}

/// `QUERY_QUOTA`: the VM's remaining remapping-entry and vector quota.
pub fn query_quota<H: Hypervisor + ?Sized>(hv: &mut H) -> Result<QuotaResponse, CallError> {
    exchange(hv, CallCode::QUERY_QUOTA, &[] as &[u8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use vir_abi::wire::call_layout;
    use zerocopy::little_endian::{U16, U32};

    /// Records every call and answers with a fixed status and response filler.
    struct Recorder {
        calls: Vec<(CallCode, Vec<u8>, usize)>,
        status: Status,
        fill: u8,
    }

    impl Hypervisor for Recorder {
        fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
            self.calls.push((code, request.to_vec(), response.len()));
            response.fill(self.fill);
            self.status
        }
    }

    fn recorder(status: Status) -> Recorder {
        Recorder {
            calls: Vec::new(),
            status,
            fill: 0x11,
        }
    }

    #[test]
    fn buffers_have_exactly_the_call_sizes() {
        let mut hv = recorder(Status::SUCCESS);
        query(&mut hv).unwrap();
        negotiate(&mut hv, &NegotiateRequest::default()).unwrap();
        reset(&mut hv).unwrap();
        allocate(&mut hv, &AllocateRequest::default()).unwrap();
        activate(&mut hv, &ActivateRequest::default()).unwrap();
        set_affinity(&mut hv, &SetAffinityRequest::default()).unwrap();
        deactivate(&mut hv, &DeactivateRequest::default()).unwrap();
        free(&mut hv, &FreeRequest::default()).unwrap();
        query_quota(&mut hv).unwrap();
        assert_eq!(hv.calls.len(), CallCode::V1.len());
        for ((code, req, resp_len), expected) in hv.calls.iter().zip(CallCode::V1) {
            assert_eq!(code, expected);
            let layout = call_layout(*code).unwrap();
            assert_eq!(req.len() as u32, layout.request_len(), "{code} request");
            assert_eq!(*resp_len as u32, layout.response_len(), "{code} response");
        }
    }

    #[test]
    fn success_returns_the_response_bytes() {
        let mut hv = recorder(Status::SUCCESS);
        hv.fill = 0;
        let r = allocate(&mut hv, &AllocateRequest::default()).unwrap();
        assert_eq!(r, AllocateResponse::default());
        hv.fill = 0x01;
        let r = allocate(&mut hv, &AllocateRequest::default()).unwrap();
        assert_eq!(r.handle.get(), 0x0101_0101);
        assert_eq!(r.count.get(), 0x0101);
    }

    #[test]
    fn vir_sta_g_001_failure_is_a_typed_error_with_the_status_errno() {
        let mut hv = recorder(Status::TABLE_FULL);
        let err = allocate(&mut hv, &AllocateRequest::default()).unwrap_err();
        assert_eq!(
            err,
            CallError {
                call: CallCode::ALLOCATE,
                status: Status::TABLE_FULL
            }
        );
        assert_eq!(err.errno(), vir_abi::status::errno::ENOSPC);
        let mut hv = recorder(Status(0x7777));
        let err = reset(&mut hv).unwrap_err();
        assert_eq!(err.status, Status(0x7777));
        assert_eq!(err.errno(), vir_abi::status::errno::EIO);
    }

    #[test]
    fn vir_call_g_001_request_bytes_are_the_fields_little_endian() {
        let mut hv = recorder(Status::SUCCESS);
        let req = ActivateRequest {
            handle: U32::new(0x0102_0304),
            subhandle: U16::new(0x0506),
            flags: U16::new(1),
            target: vir_abi::wire::Target::new(0x0a0b_0c0d, 0x41),
        };
        activate(&mut hv, &req).unwrap();
        assert_eq!(
            hv.calls[0].1,
            [
                0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x01, 0x00, 0x0d, 0x0c, 0x0b, 0x0a, 0x41, 0, 0,
                0
            ]
        );
    }
}

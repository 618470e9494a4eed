//! Call codes and the calling conventions (bindings).
//!
//! A call is identified by a 16-bit [`CallCode`]. Every call has a fixed request and response
//! size for a given interface version (see [`crate::wire`]); both are passed as buffers in guest
//! memory, located by guest-physical address (GPA) and length.
//!
//! Three bindings carry a call:
//!
//! * **Register binding** (x86 `VMCALL` on Intel, `VMMCALL` on AMD): `RAX` = [`HYPERCALL_BASE`] |
//!   call code, `RBX` = request GPA, `RCX` = request length, `RDX` = response GPA, `RSI` = response
//!   length. On return `RAX` holds the [`Status`], zero-extended; all other
//!   registers are preserved.
//! * **Memory binding**: the rules the request and response buffers obey in every binding —
//!   [`BUFFER_ALIGN`]-byte aligned, not crossing a [`PAGE_SIZE`] boundary, not overlapping, read by
//!   the host exactly once (see the specification, `VIR-MEM-*`).
//! * **Port-I/O doorbell binding**, for VMMs whose kernel does not forward hypercalls: the guest
//!   fills a [`DoorbellBlock`](crate::wire::DoorbellBlock) in its memory and writes the block's GPA
//!   to the doorbell ports (low half to `port + DOORBELL_GPA_LO`, then high half to
//!   `port + DOORBELL_GPA_HI`, which rings); when the `OUT` instruction completes, the call has
//!   completed and its status is in the block.

use core::fmt;

use crate::status::Status;

/// A vIR call code (open newtype: any 16-bit value is representable).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct CallCode(pub u16);

impl CallCode {
    /// Discover the host's versions, features, formats and limits. Allowed in every state.
    pub const QUERY: CallCode = CallCode(0x0001);
    /// Accept a version and a feature set; the host commits the switch to the vIR scheme.
    pub const NEGOTIATE: CallCode = CallCode(0x0002);
    /// Leave the vIR scheme: free everything and return the VM to the legacy state.
    pub const RESET: CallCode = CallCode(0x0003);
    /// Allocate remapping entries for an interrupt storage slot (MSI block, MSI-X entry, IMS entry).
    pub const ALLOCATE: CallCode = CallCode(0x0010);
    /// Activate one vector of an allocation (optionally as a reservation) and return its message.
    pub const ACTIVATE: CallCode = CallCode(0x0011);
    /// Retarget an active vector; never changes its message.
    pub const SET_AFFINITY: CallCode = CallCode(0x0012);
    /// Deactivate one vector; its message stays reserved to the allocation.
    pub const DEACTIVATE: CallCode = CallCode(0x0013);
    /// Free an allocation (deactivating its vectors first).
    pub const FREE: CallCode = CallCode(0x0014);
    /// Report the VM's remaining remapping-entry and vector quota.
    pub const QUERY_QUOTA: CallCode = CallCode(0x0015);

    /// Every call defined by version 1, in code order.
    pub const V1: &'static [CallCode] = &[
        Self::QUERY,
        Self::NEGOTIATE,
        Self::RESET,
        Self::ALLOCATE,
        Self::ACTIVATE,
        Self::SET_AFFINITY,
        Self::DEACTIVATE,
        Self::FREE,
        Self::QUERY_QUOTA,
    ];

    /// First code of the range reserved for the planned extensions (batch, storm control,
    /// guest-visible posted mode, revocation). Version 1 hosts answer `UNKNOWN_CALL`.
    pub const RESERVED_EXTENSIONS_FIRST: u16 = 0x0020;
    /// Last code of the range reserved for the planned extensions.
    pub const RESERVED_EXTENSIONS_LAST: u16 = 0x007f;
    /// First code of the vendor-specific range; never assigned by the specification.
    pub const VENDOR_FIRST: u16 = 0x8000;

    /// The symbolic name of a version 1 call, `None` otherwise.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::QUERY => "QUERY",
            Self::NEGOTIATE => "NEGOTIATE",
            Self::RESET => "RESET",
            Self::ALLOCATE => "ALLOCATE",
            Self::ACTIVATE => "ACTIVATE",
            Self::SET_AFFINITY => "SET_AFFINITY",
            Self::DEACTIVATE => "DEACTIVATE",
            Self::FREE => "FREE",
            Self::QUERY_QUOTA => "QUERY_QUOTA",
            _ => return None,
        })
    }

    /// Whether version 1 defines this call.
    pub const fn is_v1(self) -> bool {
        self.name().is_some()
    }

    /// Whether the call may be made in the legacy (not negotiated) state.
    pub const fn allowed_in_legacy(self) -> bool {
        matches!(self, Self::QUERY | Self::NEGOTIATE)
    }

    /// The failure statuses the specification lists for this call (§4.3 to §5.7, "Statuses, in
    /// validation order"), in that order, without SUCCESS and BUSY; `[UNKNOWN_CALL]` for a code
    /// version 1 does not define (VIR-CALL-H-002). The one table of allowed statuses: hosts'
    /// harnesses and the conformance suite check VIR-STA-H-002 against it through
    /// [`CallCode::may_return`].
    pub const fn listed_statuses(self) -> &'static [Status] {
        use Status as S;
        match self {
            Self::QUERY => &[S::BAD_LENGTH, S::BAD_BUFFER],
            Self::NEGOTIATE => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::INVALID_PARAMETER,
                S::ALREADY_NEGOTIATED,
                S::UNSUPPORTED_VERSION,
                S::UNSUPPORTED_FEATURE,
                S::INVALID_STATE,
            ],
            Self::RESET => &[S::BAD_LENGTH, S::BAD_BUFFER, S::NOT_NEGOTIATED],
            Self::ALLOCATE => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::INVALID_PARAMETER,
                S::FEATURE_NOT_NEGOTIATED,
                S::NOT_YOUR_DEVICE,
                S::STORAGE_NOT_PRESENT,
                S::INVALID_INDEX,
                S::INDEX_IN_USE,
                S::QUOTA_EXCEEDED,
                S::TABLE_FULL,
            ],
            Self::ACTIVATE => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::INVALID_PARAMETER,
                S::INVALID_HANDLE,
                S::INVALID_SUBHANDLE,
                S::FEATURE_NOT_NEGOTIATED,
                S::INVALID_STATE,
                S::INVALID_TARGET,
                S::VECTORS_EXHAUSTED,
                S::BACKEND_FAILURE,
            ],
            Self::SET_AFFINITY => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::INVALID_PARAMETER,
                S::INVALID_HANDLE,
                S::INVALID_SUBHANDLE,
                S::INVALID_STATE,
                S::INVALID_TARGET,
                S::VECTORS_EXHAUSTED,
                S::BACKEND_FAILURE,
            ],
            Self::DEACTIVATE => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::INVALID_PARAMETER,
                S::INVALID_HANDLE,
                S::INVALID_SUBHANDLE,
                S::INVALID_STATE,
            ],
            Self::FREE => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::INVALID_PARAMETER,
                S::INVALID_HANDLE,
            ],
            Self::QUERY_QUOTA => &[
                S::BAD_LENGTH,
                S::BAD_BUFFER,
                S::NOT_NEGOTIATED,
                S::FEATURE_NOT_NEGOTIATED,
            ],
            _ => &[S::UNKNOWN_CALL],
        }
    }

    /// Whether a host may return `status` for this call carried by `binding` (VIR-STA-H-002):
    /// for a version 1 call SUCCESS, BUSY (VIR-CALL-H-010) and the [listed
    /// statuses](CallCode::listed_statuses); for any other code UNKNOWN_CALL only; through the
    /// doorbell also INVALID_PARAMETER, which VIR-DB-H-005 returns before any other check when
    /// bits 31:16 of the block's `call` field are set.
    pub fn may_return(self, status: Status, binding: Binding) -> bool {
        (self.is_v1() && (status == Status::SUCCESS || status == Status::BUSY))
            || self.listed_statuses().contains(&status)
            || (binding == Binding::Doorbell && status == Status::INVALID_PARAMETER)
    }
}

impl fmt::Debug for CallCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "CallCode::{n}"),
            None => write!(f, "CallCode({:#06x})", self.0),
        }
    }
}

impl fmt::Display for CallCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

/// The binding that carried a call, as far as the statuses it may return depend on it
/// ([`CallCode::may_return`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// The register binding (`VMCALL`/`VMMCALL`), or a host's direct entry point taking the
    /// buffers of the memory binding.
    Register,
    /// The port-I/O doorbell binding (its block adds the VIR-DB-H-005 check).
    Doorbell,
}

/// Register binding: `RAX` value is `HYPERCALL_BASE | code`. The base keeps vIR calls out of the
/// small numbers KVM assigns to its own hypercalls (`KVM_HC_*`).
pub const HYPERCALL_BASE: u64 = 0x5649_0000;
/// Register binding: mask selecting the call code in `RAX`.
pub const HYPERCALL_CODE_MASK: u64 = 0xffff;

/// Split a register-binding `RAX` value into its call code; `None` if it is not a vIR call.
pub const fn decode_rax(rax: u64) -> Option<CallCode> {
    if rax & !HYPERCALL_CODE_MASK == HYPERCALL_BASE {
        Some(CallCode((rax & HYPERCALL_CODE_MASK) as u16))
    } else {
        None
    }
}

/// Build the register-binding `RAX` value of a call.
pub const fn encode_rax(code: CallCode) -> u64 {
    HYPERCALL_BASE | code.0 as u64
}

/// Page size that buffers must not cross (x86 binding).
pub const PAGE_SIZE: u64 = 4096;
/// Alignment of request, response and doorbell buffers.
pub const BUFFER_ALIGN: u64 = 8;
/// Largest request or response of version 1, in bytes.
pub const MAX_BUFFER_LEN: u32 = 64;

/// Doorbell binding: offset of the port taking GPA bits 31:0 (latched per vCPU).
pub const DOORBELL_GPA_LO: u16 = 0;
/// Doorbell binding: offset of the port taking GPA bits 63:32; writing it rings the doorbell.
pub const DOORBELL_GPA_HI: u16 = 4;
/// Doorbell binding: number of consecutive ports claimed.
pub const DOORBELL_PORT_COUNT: u16 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vir_sta_h_002_allowed_statuses_per_call() {
        use Status as S;
        for &c in CallCode::V1 {
            for b in [Binding::Register, Binding::Doorbell] {
                assert!(c.may_return(S::SUCCESS, b), "{c}");
                assert!(c.may_return(S::BUSY, b), "{c}");
                assert!(c.may_return(S::BAD_LENGTH, b), "{c}");
                assert!(!c.may_return(S::UNKNOWN_CALL, b), "{c}");
            }
        }
        assert!(!CallCode::QUERY.may_return(S::NOT_NEGOTIATED, Binding::Register));
        assert!(!CallCode::QUERY.may_return(S::INVALID_PARAMETER, Binding::Register));
        assert!(CallCode::QUERY.may_return(S::INVALID_PARAMETER, Binding::Doorbell));
        assert!(CallCode::FREE.may_return(S::INVALID_HANDLE, Binding::Register));
        assert!(!CallCode::FREE.may_return(S::INVALID_STATE, Binding::Register));
        assert!(CallCode::QUERY_QUOTA.may_return(S::FEATURE_NOT_NEGOTIATED, Binding::Register));
        let unknown = CallCode(0x20);
        assert_eq!(unknown.listed_statuses(), &[S::UNKNOWN_CALL]);
        assert!(unknown.may_return(S::UNKNOWN_CALL, Binding::Register));
        assert!(!unknown.may_return(S::SUCCESS, Binding::Register));
        assert!(!unknown.may_return(S::BUSY, Binding::Register));
        assert!(!unknown.may_return(S::INVALID_PARAMETER, Binding::Register));
        assert!(unknown.may_return(S::INVALID_PARAMETER, Binding::Doorbell));
    }

    /// The table names only statuses the ABI defines, each once, and neither SUCCESS nor BUSY
    /// (those [`CallCode::may_return`] adds itself).
    #[test]
    fn listed_statuses_are_known_and_distinct() {
        for &c in CallCode::V1 {
            let l = c.listed_statuses();
            for (i, s) in l.iter().enumerate() {
                assert!(s.is_known(), "{c}: {s}");
                assert!(!l[..i].contains(s), "{c}: {s} twice");
                assert_ne!(*s, Status::SUCCESS);
                assert_ne!(*s, Status::BUSY);
            }
        }
    }

    #[test]
    fn rax_round_trip() {
        for &c in CallCode::V1 {
            assert_eq!(decode_rax(encode_rax(c)), Some(c));
        }
        assert_eq!(
            decode_rax(1),
            None,
            "KVM_HC_VAPIC_POLL_IRQ is not a vIR call"
        );
        assert_eq!(decode_rax(0x1_5649_0001), None, "bits 63:32 must be zero");
    }

    #[test]
    fn v1_codes_outside_reserved_ranges() {
        for &c in CallCode::V1 {
            assert!(c.0 < CallCode::RESERVED_EXTENSIONS_FIRST);
            assert!(c.0 != 0, "code 0 is never assigned");
        }
        assert_eq!(CallCode(0x20).name(), None);
    }
}

//! Request and response structures of every version 1 call.
//!
//! All fields are little-endian; every structure is byte-aligned (`Unaligned`), has explicit
//! reserved fields, and a size that is a multiple of 8. A reserved field is written as zero by the
//! guest and checked by the host (`INVALID_PARAMETER`). Calls without a request or a response use
//! a zero-length buffer (its GPA must be 0).

use crate::call::CallCode;
use crate::layout::{StructDesc, wire_struct};
use core::fmt;
use zerocopy::little_endian::{U16, U32, U64};

/// Kind of interrupt storage an allocation is for (open newtype over the wire byte).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct StorageKind(pub u8);

impl StorageKind {
    /// PCI MSI capability: one block of 2^n vectors, storage index 0.
    pub const MSI: StorageKind = StorageKind(1);
    /// PCI MSI-X table: one entry, storage index = table index.
    pub const MSIX: StorageKind = StorageKind(2);
    /// IMS in device memory: one entry, storage index = array index.
    pub const IMS_DEVICE: StorageKind = StorageKind(3);
    /// IMS in system memory: one entry, storage index chosen by guest software.
    pub const IMS_SYSTEM: StorageKind = StorageKind(4);

    /// The symbolic name, `None` for an undefined value.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "MSI",
            2 => "MSIX",
            3 => "IMS_DEVICE",
            4 => "IMS_SYSTEM",
            _ => return None,
        })
    }

    /// The feature that gates allocations of this kind.
    pub const fn gating_feature(self) -> Option<crate::feature::Features> {
        use crate::feature::Features;
        Some(match self.0 {
            1 => Features::MSI,
            2 => Features::MSIX,
            3 => Features::IMS_DEVICE,
            4 => Features::IMS_SYSTEM,
            _ => return None,
        })
    }
}

impl fmt::Debug for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "StorageKind::{n}"),
            None => write!(f, "StorageKind({})", self.0),
        }
    }
}

/// Format of the messages a host returns (open newtype over the wire byte).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct MessageFormat(pub u8);

impl MessageFormat {
    /// Intel VT-d remappable format (handle in the address, SHV=1, sub-handle in data 15:0).
    pub const VTD_REMAPPABLE: MessageFormat = MessageFormat(1);
    /// AMD-Vi remapped format (address 0xFEE00000, IRTE index in data 10:0).
    pub const AMD_VI: MessageFormat = MessageFormat(2);
    /// x86 compatibility format. Defined for the legacy path only: a vIR host never returns it.
    pub const X86_COMPAT: MessageFormat = MessageFormat(3);

    /// The symbolic name, `None` for an undefined value.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "VTD_REMAPPABLE",
            2 => "AMD_VI",
            3 => "X86_COMPAT",
            _ => return None,
        })
    }
}

impl fmt::Debug for MessageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "MessageFormat::{n}"),
            None => write!(f, "MessageFormat({})", self.0),
        }
    }
}

/// VM state as reported by `QUERY`.
pub mod vm_state {
    /// Legacy (trap-and-emulate) scheme; no vIR session.
    pub const LEGACY: u8 = 0;
    /// vIR negotiated.
    pub const NEGOTIATED: u8 = 1;
}

/// `ACTIVATE` flag bits.
pub mod activate_flags {
    /// Reservation activation: the target is a placeholder; the entry blocks the interrupt
    /// silently until a real activation.
    pub const RESERVE: u16 = 1 << 0;
    /// Every flag version 1 defines.
    pub const V1_DEFINED: u16 = RESERVE;
}

/// Smallest vector a target may name (vectors 0–15 are architecturally invalid for fixed
/// delivery; 16–31 are exceptions and accepted only as documented in the specification).
pub const TARGET_VECTOR_MIN: u8 = 0x10;
/// Largest MSI block is 2^5 = 32 vectors.
pub const MSI_MAX_LOG2: u8 = 5;
/// Handle value that is never issued.
pub const HANDLE_INVALID: u32 = 0;

wire_struct! {
    /// Response of `QUERY`: versions, features, formats and limits.
    QueryResponse as "vir_query_response" {
        /// Lowest interface version the host offers.
        min_version: U16,
        /// Highest interface version the host offers.
        max_version: U16,
        /// Format of returned messages (`MessageFormat`).
        message_format: u8,
        /// Largest MSI block the host allocates, as log2 of the vector count (0–5).
        max_msi_log2: u8,
        /// Current VM state (`vm_state`).
        vm_state: u8,
        /// Reserved, zero.
        reserved0: u8,
        /// Features the host offers.
        features_offered: U64,
        /// Features committed by the current session (0 in the legacy state).
        features_active: U64,
        /// Version committed by the current session (0 in the legacy state).
        active_version: U16,
        /// Reserved, zero.
        reserved1: U16,
        /// Remapping entries this VM may hold at once.
        irte_quota: U32,
        /// Host vectors this VM may hold at once.
        vector_quota: U32,
        /// Reserved, zero.
        reserved2: U32,
    }
}

wire_struct! {
    /// Request of `NEGOTIATE`: the version and features the guest accepts.
    NegotiateRequest as "vir_negotiate_request" {
        /// Version accepted (within the offered range).
        version: U16,
        /// Reserved, zero.
        reserved0: U16,
        /// Reserved, zero.
        reserved1: U32,
        /// Features accepted (a subset of the offered set).
        features: U64,
    }
}

wire_struct! {
    /// Response of `NEGOTIATE`: what the host committed (the guest confirms it equals its request).
    NegotiateResponse as "vir_negotiate_response" {
        /// Version committed.
        version: U16,
        /// Reserved, zero.
        reserved0: U16,
        /// Session number, incremented by every successful negotiation of this VM.
        session: U32,
        /// Features committed.
        features: U64,
    }
}

wire_struct! {
    /// Request of `ALLOCATE`: which storage slot of which device.
    AllocateRequest as "vir_allocate_request" {
        /// Guest-visible device id: PCI segment in bits 31:16, requester id (bus:dev.fn) in 15:0.
        device_id: U32,
        /// Storage kind (`StorageKind`).
        kind: u8,
        /// MSI only: log2 of the number of vectors (0–5); zero for other kinds.
        log2_count: u8,
        /// Reserved, zero.
        reserved0: U16,
        /// Storage index: 0 for MSI, table index for MSI-X, array index or software number for IMS.
        index: U32,
        /// Reserved, zero (room for an IMS PASID extension).
        reserved1: U32,
    }
}

wire_struct! {
    /// Response of `ALLOCATE`.
    AllocateResponse as "vir_allocate_response" {
        /// Handle of the allocation (never 0; opaque to the guest).
        handle: U32,
        /// Number of vectors (sub-handles 0..count).
        count: U16,
        /// Reserved, zero.
        reserved0: U16,
    }
}

wire_struct! {
    /// Where an interrupt is delivered: a guest (x2)APIC id and vector, physical destination,
    /// fixed delivery, edge-triggered.
    Target as "vir_target" {
        /// Guest (virtual) x2APIC id of the destination vCPU.
        apic_id: U32,
        /// Guest vector (0x10–0xFF).
        vector: u8,
        /// Reserved, zero (room for per-entry posted mode).
        reserved0: u8,
        /// Reserved, zero.
        reserved1: U16,
    }
}

wire_struct! {
    /// Request of `ACTIVATE`.
    ActivateRequest as "vir_activate_request" {
        /// Allocation handle.
        handle: U32,
        /// Vector within the allocation (0 for single-vector allocations).
        subhandle: U16,
        /// Flags (`activate_flags`).
        flags: U16,
        /// Target of the vector.
        target: Target,
    }
}

wire_struct! {
    /// Response of `ACTIVATE`: the message to write into the storage.
    ActivateResponse as "vir_activate_response" {
        /// Message address bits 31:0.
        address_lo: U32,
        /// Message address bits 63:32.
        address_hi: U32,
        /// Message data (for an MSI block: the data of vector 0; the device adds the vector index).
        data: U32,
        /// Format of the message (`MessageFormat`).
        format: u8,
        /// Reserved, zero.
        reserved0: u8,
        /// Reserved, zero.
        reserved1: U16,
        /// Reserved, zero (room for a message generation number).
        reserved2: U64,
    }
}

wire_struct! {
    /// Request of `SET_AFFINITY`.
    SetAffinityRequest as "vir_set_affinity_request" {
        /// Allocation handle.
        handle: U32,
        /// Vector within the allocation.
        subhandle: U16,
        /// Reserved, zero.
        reserved0: U16,
        /// New target.
        target: Target,
    }
}

wire_struct! {
    /// Request of `DEACTIVATE`.
    DeactivateRequest as "vir_deactivate_request" {
        /// Allocation handle.
        handle: U32,
        /// Vector within the allocation.
        subhandle: U16,
        /// Reserved, zero.
        reserved0: U16,
    }
}

wire_struct! {
    /// Request of `FREE`.
    FreeRequest as "vir_free_request" {
        /// Allocation handle.
        handle: U32,
        /// Reserved, zero.
        reserved0: U32,
    }
}

wire_struct! {
    /// Response of `QUERY_QUOTA`.
    QuotaResponse as "vir_quota_response" {
        /// Remapping entries this VM may hold at once.
        irtes_total: U32,
        /// Remapping entries still available to this VM.
        irtes_free: U32,
        /// Host vectors this VM may hold at once.
        vectors_total: U32,
        /// Host vectors still available to this VM.
        vectors_free: U32,
    }
}

wire_struct! {
    /// The call block of the port-I/O doorbell binding (8-byte aligned, within one page).
    DoorbellBlock as "vir_doorbell_block" {
        /// Call code in bits 15:0; bits 31:16 reserved, zero.
        call: U32,
        /// Written by the host when the call completes (`Status`).
        status: U32,
        /// Request buffer GPA (0 with a zero length).
        request_gpa: U64,
        /// Request length in bytes.
        request_len: U32,
        /// Response length in bytes.
        response_len: U32,
        /// Response buffer GPA (0 with a zero length).
        response_gpa: U64,
    }
}

/// Every wire structure, for table and header generation.
pub const ALL_STRUCTS: &[StructDesc] = &[
    StructDesc::of::<QueryResponse>(),
    StructDesc::of::<NegotiateRequest>(),
    StructDesc::of::<NegotiateResponse>(),
    StructDesc::of::<AllocateRequest>(),
    StructDesc::of::<AllocateResponse>(),
    StructDesc::of::<Target>(),
    StructDesc::of::<ActivateRequest>(),
    StructDesc::of::<ActivateResponse>(),
    StructDesc::of::<SetAffinityRequest>(),
    StructDesc::of::<DeactivateRequest>(),
    StructDesc::of::<FreeRequest>(),
    StructDesc::of::<QuotaResponse>(),
    StructDesc::of::<DoorbellBlock>(),
];

/// The request and response structures of a call (`None` = zero-length buffer).
#[derive(Debug, Clone, Copy)]
pub struct CallLayout {
    /// The call.
    pub code: CallCode,
    /// Request structure.
    pub request: Option<StructDesc>,
    /// Response structure.
    pub response: Option<StructDesc>,
}

impl CallLayout {
    /// Exact request length in bytes.
    pub const fn request_len(&self) -> u32 {
        match self.request {
            Some(d) => d.size as u32,
            None => 0,
        }
    }
    /// Exact response length in bytes.
    pub const fn response_len(&self) -> u32 {
        match self.response {
            Some(d) => d.size as u32,
            None => 0,
        }
    }
}

/// The layouts of every version 1 call, in code order.
pub const CALL_LAYOUTS: &[CallLayout] = &[
    CallLayout {
        code: CallCode::QUERY,
        request: None,
        response: Some(StructDesc::of::<QueryResponse>()),
    },
    CallLayout {
        code: CallCode::NEGOTIATE,
        request: Some(StructDesc::of::<NegotiateRequest>()),
        response: Some(StructDesc::of::<NegotiateResponse>()),
    },
    CallLayout {
        code: CallCode::RESET,
        request: None,
        response: None,
    },
    CallLayout {
        code: CallCode::ALLOCATE,
        request: Some(StructDesc::of::<AllocateRequest>()),
        response: Some(StructDesc::of::<AllocateResponse>()),
    },
    CallLayout {
        code: CallCode::ACTIVATE,
        request: Some(StructDesc::of::<ActivateRequest>()),
        response: Some(StructDesc::of::<ActivateResponse>()),
    },
    CallLayout {
        code: CallCode::SET_AFFINITY,
        request: Some(StructDesc::of::<SetAffinityRequest>()),
        response: None,
    },
    CallLayout {
        code: CallCode::DEACTIVATE,
        request: Some(StructDesc::of::<DeactivateRequest>()),
        response: None,
    },
    CallLayout {
        code: CallCode::FREE,
        request: Some(StructDesc::of::<FreeRequest>()),
        response: None,
    },
    CallLayout {
        code: CallCode::QUERY_QUOTA,
        request: None,
        response: Some(StructDesc::of::<QuotaResponse>()),
    },
];

/// The layout of a version 1 call, `None` for any other code.
pub fn call_layout(code: CallCode) -> Option<&'static CallLayout> {
    CALL_LAYOUTS.iter().find(|l| l.code == code)
}

impl Target {
    /// Build a target.
    pub fn new(apic_id: u32, vector: u8) -> Target {
        Target {
            apic_id: U32::new(apic_id),
            vector,
            reserved0: 0,
            reserved1: U16::ZERO,
        }
    }
    /// Whether every reserved field is zero.
    pub fn reserved_is_zero(&self) -> bool {
        self.reserved0 == 0 && self.reserved1.get() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::WireLayout;
    use core::mem::{offset_of, size_of};

    #[test]
    fn sizes_are_multiples_of_eight_and_fields_tile() {
        for s in ALL_STRUCTS {
            assert_eq!(s.size % 8, 0, "{} size {}", s.name, s.size);
            let mut next = 0;
            for f in s.fields {
                assert_eq!(f.offset, next, "{}.{} leaves a hole", s.name, f.name);
                next += f.size;
            }
            assert_eq!(next, s.size, "{} has trailing padding", s.name);
            assert!(s.size as u32 <= crate::call::MAX_BUFFER_LEN);
        }
    }

    #[test]
    fn explicit_sizes_and_offsets() {
        assert_eq!(size_of::<QueryResponse>(), 40);
        assert_eq!(offset_of!(QueryResponse, features_offered), 8);
        assert_eq!(offset_of!(QueryResponse, irte_quota), 28);
        assert_eq!(size_of::<NegotiateRequest>(), 16);
        assert_eq!(offset_of!(NegotiateRequest, features), 8);
        assert_eq!(size_of::<AllocateRequest>(), 16);
        assert_eq!(offset_of!(AllocateRequest, index), 8);
        assert_eq!(size_of::<Target>(), 8);
        assert_eq!(size_of::<ActivateRequest>(), 16);
        assert_eq!(offset_of!(ActivateRequest, target), 8);
        assert_eq!(size_of::<ActivateResponse>(), 24);
        assert_eq!(offset_of!(ActivateResponse, format), 12);
        assert_eq!(size_of::<DoorbellBlock>(), 32);
        assert_eq!(offset_of!(DoorbellBlock, response_gpa), 24);
        assert_eq!(
            ActivateRequest::FIELDS[3].ty,
            crate::layout::FieldType::Struct("vir_target")
        );
    }

    #[test]
    fn call_layouts_cover_v1() {
        for &c in CallCode::V1 {
            assert!(call_layout(c).is_some(), "{c:?}");
        }
        assert_eq!(
            call_layout(CallCode::ACTIVATE).map(|l| l.request_len()),
            Some(16)
        );
        assert_eq!(
            call_layout(CallCode::RESET).map(|l| l.response_len()),
            Some(0)
        );
        assert!(call_layout(CallCode(0x20)).is_none());
    }
}

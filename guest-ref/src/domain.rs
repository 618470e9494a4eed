//! The interrupt-remapping domain interface.
//!
//! [`RemapDomain`] is what sits under the driver-facing [`IrqSubsystem`](crate::IrqSubsystem),
//! at the level of a Linux IR irqdomain (`intel_irq_remapping_alloc`, `intel_ir_activate`,
//! `intel_ir_set_affinity`, ...):
//!
//! * **alloc** reserves remapping entries for one storage slot of a device (one entry, or 2^n
//!   contiguous entries for an MSI block); it can fail on its own (table full, quota, B10);
//! * **activate** composes the message for a vector, either for a real target or as a
//!   reservation (B11); the message is a function of the allocation only and is the same for
//!   every vector and every activation of it;
//! * **set affinity** retargets an active vector without changing its message (B12);
//! * **deactivate** stops a vector; the message stays reserved;
//! * **free** releases the allocation;
//! * **supports_ims** is the capability of B1: true only where IMS is safe (IR hardware, or vIR
//!   negotiated with an IMS feature).
//!
//! [`VirDomain`](crate::VirDomain) implements it with vIR hypercalls;
//! [`BareMetalVtdDomain`](crate::BareMetalVtdDomain) (bare-metal VT-d) and
//! [`EmulatedVtdDomain`](crate::EmulatedVtdDomain) (an emulated vIOMMU without vIR) are the
//! other implementations of the same trait, and [`select_ir_domain`](crate::select_ir_domain)
//! tells the three situations apart.

use core::fmt;
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::status::errno;
use vir_abi::wire::MessageFormat;

use crate::device::{DeviceId, StorageType};
use crate::hypercall::CallError;

/// A domain-defined identifier of a live allocation (for [`VirDomain`](crate::VirDomain): the
/// vIR handle). Unique among the domain's live allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocationId(pub u32);

/// One storage slot of a device, the unit of allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrSlot {
    /// The device.
    pub device: DeviceId,
    /// Where its messages are stored.
    pub storage: StorageType,
    /// Storage index: 0 for MSI, the table index for MSI-X, the array index for IMS in device
    /// memory, a software-chosen number for IMS in system memory.
    pub index: u32,
    /// MSI: log2 of the block size (0–5); 0 for every other storage type.
    pub log2_count: u8,
}

impl IrSlot {
    /// Number of vectors (sub-handles) of the slot: `2^log2_count`, `None` if `log2_count`
    /// exceeds 5.
    pub const fn count(&self) -> Option<u16> {
        if self.log2_count > vir_abi::wire::MSI_MAX_LOG2 {
            None
        } else {
            Some(1 << self.log2_count)
        }
    }
}

/// Where an interrupt is delivered: a guest APIC id and vector (physical destination, fixed
/// delivery, edge).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqTarget {
    /// Guest (x2)APIC id of the destination vCPU.
    pub apic_id: u32,
    /// Vector on that vCPU.
    pub vector: u8,
}

/// How a vector is activated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Reservation (B11): the message is issued, interrupts are blocked silently, no vector is
    /// consumed. The guest parks the interrupt on the shutdown vector meanwhile.
    Reserve,
    /// A real activation towards a target.
    Target(IrqTarget),
}

/// The state of one vector of an allocation, as a domain tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorState {
    /// Allocated; never activated or deactivated since.
    Allocated,
    /// Activated as a reservation.
    Reserved,
    /// Active towards a target.
    Active(IrqTarget),
}

/// A host that answered SUCCESS with something a conforming vIR host never returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// ALLOCATE returned handle 0 (`HANDLE_INVALID`).
    ZeroHandle,
    /// ALLOCATE returned a handle that is already live in this guest.
    HandleAlreadyLive(u32),
    /// ALLOCATE returned another vector count than requested.
    WrongCount {
        /// The handle returned.
        handle: u32,
        /// The count requested.
        expected: u16,
        /// The count returned.
        got: u16,
    },
    /// ACTIVATE returned a message in another format than the session's.
    WrongFormat {
        /// The session's format.
        expected: MessageFormat,
        /// The format returned.
        got: MessageFormat,
    },
    /// ACTIVATE returned a message that does not decode in the session's format (VT-d: not
    /// remappable, SHV clear or data ≠ 0, `VIR-FMT-H-001`).
    MalformedMessage {
        /// The session's format.
        format: MessageFormat,
        /// The message returned.
        message: MsiMessage,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroHandle => f.write_str("ALLOCATE returned handle 0"),
            Self::HandleAlreadyLive(h) => write!(f, "ALLOCATE returned live handle {h:#x}"),
            Self::WrongCount {
                handle,
                expected,
                got,
            } => write!(
                f,
                "ALLOCATE handle {handle:#x}: count {got}, requested {expected}"
            ),
            Self::WrongFormat { expected, got } => {
                write!(
                    f,
                    "ACTIVATE message format {got:?}, session uses {expected:?}"
                )
            }
            Self::MalformedMessage { format, message } => {
                write!(
                    f,
                    "ACTIVATE returned {message:x?}, not a valid {format:?} message"
                )
            }
        }
    }
}

/// A remapping-unit access that failed (the VT-d domains' hardware, `crate::vtd_domain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HardwareError {
    /// The table entry (carried index) could not be written (for a table in guest memory: the
    /// memory is not there).
    IrteWrite(u16),
    /// The interrupt entry cache invalidation of the block at the carried index did not
    /// complete.
    Invalidation(u16),
    /// A register write (IRTA or global command) was not accepted.
    Register,
}

impl HardwareError {
    /// The errno a kernel reports (positive): `EIO`.
    pub const fn errno(&self) -> i32 {
        errno::EIO
    }
}

impl fmt::Display for HardwareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IrteWrite(i) => write!(f, "IRTE {i} could not be written"),
            Self::Invalidation(i) => write!(f, "invalidation of IRTE {i} did not complete"),
            Self::Register => f.write_str("remapping unit register write failed"),
        }
    }
}

/// Errors of a remapping domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// The domain has no remapping capability (vIR: not negotiated).
    NotNegotiated,
    /// The storage type is not supported (vIR: its feature was not negotiated).
    Unsupported(StorageType),
    /// An operation needs a feature that was not negotiated.
    FeatureNotNegotiated(Features),
    /// The slot is malformed for its storage type (block size on a non-MSI slot, MSI block
    /// larger than the domain allows, MSI index ≠ 0).
    InvalidSlot(IrSlot),
    /// The id names no live allocation of the domain.
    UnknownAllocation(AllocationId),
    /// The sub-handle is outside the allocation.
    InvalidSubhandle {
        /// The allocation.
        id: AllocationId,
        /// The sub-handle given.
        sub: u16,
        /// The allocation's vector count.
        count: u16,
    },
    /// The vector is not in a state that allows the operation.
    InvalidState {
        /// The allocation.
        id: AllocationId,
        /// The sub-handle.
        sub: u16,
        /// Its current state.
        state: VectorState,
    },
    /// The hypervisor refused the call (`VIR-STA-G-001`: the status's errno is surfaced).
    Host(CallError),
    /// The hypervisor answered SUCCESS with a non-conforming response.
    Protocol(ProtocolError),
    /// The domain's own remapping table has no free naturally aligned run of 2^`log2_count`
    /// entries (VT-d domains).
    TableFull {
        /// log2 of the entries needed.
        log2_count: u8,
    },
    /// The remapping unit refused an access (VT-d domains).
    Hardware(HardwareError),
    /// The target's APIC id does not fit the table's destination format (xAPIC: above 255).
    UnreachableDestination {
        /// The APIC id.
        apic_id: u32,
    },
    /// IMS for a device the host answered `NOT_YOUR_DEVICE` for: it is not a vIR device, and
    /// IMS is not offered for it (`VIR-LEG-G-003`).
    ImsNotOffered(DeviceId),
}

impl DomainError {
    /// The errno a kernel returns to the original caller (positive). For a host status this is
    /// [`Status::errno`](vir_abi::status::Status::errno) (`VIR-STA-G-001`).
    pub const fn errno(&self) -> i32 {
        match self {
            Self::NotNegotiated => errno::ENODEV,
            Self::Unsupported(_) | Self::FeatureNotNegotiated(_) => errno::EOPNOTSUPP,
            Self::InvalidSlot(_)
            | Self::UnknownAllocation(_)
            | Self::InvalidSubhandle { .. }
            | Self::InvalidState { .. } => errno::EINVAL,
            Self::Host(e) => e.errno(),
            Self::Protocol(_) => errno::EIO,
            Self::TableFull { .. } => errno::ENOSPC,
            Self::Hardware(e) => e.errno(),
            Self::UnreachableDestination { .. } => errno::EINVAL,
            Self::ImsNotOffered(_) => errno::EOPNOTSUPP,
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNegotiated => f.write_str("no interrupt remapping (vIR not negotiated)"),
            Self::Unsupported(t) => write!(f, "{t:?} storage not supported by the domain"),
            Self::FeatureNotNegotiated(x) => write!(f, "feature {x} not negotiated"),
            Self::InvalidSlot(s) => write!(f, "invalid slot {s:?}"),
            Self::UnknownAllocation(id) => write!(f, "no live allocation {:#x}", id.0),
            Self::InvalidSubhandle { id, sub, count } => write!(
                f,
                "sub-handle {sub} outside allocation {:#x} of {count}",
                id.0
            ),
            Self::InvalidState { id, sub, state } => {
                write!(f, "allocation {:#x} sub {sub} is {state:?}", id.0)
            }
            Self::Host(e) => write!(f, "{e}"),
            Self::Protocol(e) => write!(f, "protocol violation: {e}"),
            Self::TableFull { log2_count } => {
                write!(f, "no free run of {} remapping entries", 1u32 << log2_count)
            }
            Self::Hardware(e) => write!(f, "{e}"),
            Self::UnreachableDestination { apic_id } => {
                write!(f, "APIC id {apic_id:#x} does not fit the table's format")
            }
            Self::ImsNotOffered(d) => write!(f, "{d} is not a vIR device: no IMS"),
        }
    }
}

impl From<CallError> for DomainError {
    fn from(e: CallError) -> Self {
        DomainError::Host(e)
    }
}

/// An interrupt-remapping domain (see the module documentation).
pub trait RemapDomain {
    /// The B1 capability: IMS may be offered to drivers (`VIR-LEG-G-001`).
    fn supports_ims(&self) -> bool;

    /// Whether allocations of `storage` are possible.
    fn supports(&self, storage: StorageType) -> bool;

    /// Whether [`Activation::Reserve`] is available (reservation mode).
    fn supports_reservation(&self) -> bool;

    /// The largest MSI block the domain allocates, as log2 of the vector count (0–5).
    fn max_msi_log2(&self) -> u8;

    /// Reserves the remapping entries of `slot` (`slot.count()` vectors).
    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError>;

    /// Activates vector `sub` of allocation `id` and returns the allocation's message (the same
    /// for every vector and every activation of the allocation).
    fn activate(
        &mut self,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError>;

    /// Retargets active vector `sub` of `id`; the message does not change.
    fn set_affinity(
        &mut self,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError>;

    /// Deactivates vector `sub` of `id` (reserved or active); its message stays reserved.
    fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError>;

    /// Frees allocation `id` (deactivating its vectors).
    fn free(&mut self, id: AllocationId) -> Result<(), DomainError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::call::CallCode;
    use vir_abi::status::Status;

    #[test]
    fn vir_sta_g_001_host_errors_carry_the_status_errno() {
        for &status in Status::ALL.iter().skip(1) {
            let e = DomainError::Host(CallError {
                call: CallCode::ACTIVATE,
                status,
            });
            assert_eq!(e.errno(), status.errno(), "{status:?}");
        }
        let e: DomainError = CallError {
            call: CallCode::ALLOCATE,
            status: Status::QUOTA_EXCEEDED,
        }
        .into();
        assert_eq!(e.errno(), errno::ENOSPC);
        assert_eq!(DomainError::NotNegotiated.errno(), errno::ENODEV);
        assert_eq!(
            DomainError::Unsupported(StorageType::ImsDevice).errno(),
            errno::EOPNOTSUPP
        );
        assert_eq!(
            DomainError::Protocol(ProtocolError::ZeroHandle).errno(),
            errno::EIO
        );
    }

    #[test]
    fn slot_count_is_two_to_the_log2() {
        let mut s = IrSlot {
            device: DeviceId(1),
            storage: StorageType::Msi,
            index: 0,
            log2_count: 0,
        };
        assert_eq!(s.count(), Some(1));
        s.log2_count = 5;
        assert_eq!(s.count(), Some(32));
        s.log2_count = 6;
        assert_eq!(s.count(), None);
    }
}

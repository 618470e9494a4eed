//! Call statuses.
//!
//! A [`Status`] is an open newtype over the 32-bit wire value: every value a host can write is
//! representable, and values this crate does not name are reported as unknown rather than
//! rejected. [`Status::errno`] gives the negative errno a guest kernel surfaces at the original
//! caller (`request_irq`, `pci_alloc_irq_vectors`, `irq_set_affinity`).

use core::fmt;

/// A vIR call status as carried on the wire (register binding: `RAX`; memory and doorbell
/// bindings: the doorbell block's `status` field).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct Status(pub u32);

/// Linux errno values used by [`Status::errno`] (positive; callers negate them).
pub mod errno {
    /// No error (the errno of a successful call).
    pub const OK: i32 = 0;
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory (used for unknown handles).
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Numerical result out of range.
    pub const ERANGE: i32 = 34;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
}

macro_rules! statuses {
    ($( $(#[doc = $doc:literal])* $name:ident = $val:literal => $errno:ident ),* $(,)?) => {
        impl Status {
            $( $(#[doc = $doc])* pub const $name: Status = Status($val); )*

            /// Every status this version of the ABI names, in wire order.
            pub const ALL: &'static [Status] = &[$(Status::$name),*];

            /// The symbolic name of a known status, `None` for a value this ABI does not name.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// The errno (positive) a guest kernel returns to the original caller for this
            /// status; `0` for [`Status::SUCCESS`]. Unknown statuses map to `EIO`.
            pub const fn errno(self) -> i32 {
                match self.0 {
                    $( $val => errno::$errno, )*
                    _ => errno::EIO,
                }
            }

            /// The name of the errno constant for [`Status::errno`] (`"OK"` for success).
            pub const fn errno_name(self) -> &'static str {
                match self.0 {
                    $( $val => stringify!($errno), )*
                    _ => "EIO",
                }
            }
        }
    };
}

statuses! {
    /// The call completed; outputs are valid.
    SUCCESS = 0 => OK,
    /// The call code is not defined by the negotiated (or, before negotiation, any) version.
    UNKNOWN_CALL = 1 => ENOSYS,
    /// A request or response length does not equal the call's defined size.
    BAD_LENGTH = 2 => EINVAL,
    /// A buffer is misaligned, crosses a page boundary, overlaps another buffer of the call, or
    /// is not backed by guest RAM.
    BAD_BUFFER = 3 => EFAULT,
    /// The call needs a negotiated vIR session and the VM is in the legacy state.
    NOT_NEGOTIATED = 4 => ENODEV,
    /// The call's gating feature was not accepted at negotiation.
    FEATURE_NOT_NEGOTIATED = 5 => EOPNOTSUPP,
    /// A reserved field is non-zero, or a field holds a value outside its defined range.
    INVALID_PARAMETER = 6 => EINVAL,
    /// The requested version is outside the host's offered range.
    UNSUPPORTED_VERSION = 7 => EPROTO,
    /// The guest accepted a feature bit the host did not offer.
    UNSUPPORTED_FEATURE = 8 => EOPNOTSUPP,
    /// Negotiation was already committed; a reset is required before negotiating again.
    ALREADY_NEGOTIATED = 9 => EBUSY,
    /// The device id does not name a device assigned to this VM.
    NOT_YOUR_DEVICE = 10 => ENODEV,
    /// The device has no interrupt storage of the requested kind.
    STORAGE_NOT_PRESENT = 11 => EOPNOTSUPP,
    /// The storage index (or MSI vector count) is outside the device's storage.
    INVALID_INDEX = 12 => ERANGE,
    /// The storage index is already covered by a live allocation.
    INDEX_IN_USE = 13 => EBUSY,
    /// The handle does not name a live allocation of this VM (never issued, freed, or stale).
    INVALID_HANDLE = 14 => ENOENT,
    /// The sub-handle is outside the allocation's vector block.
    INVALID_SUBHANDLE = 15 => EINVAL,
    /// The interrupt is not in a state that allows this call.
    INVALID_STATE = 16 => EINVAL,
    /// The target APIC id names no vCPU of this VM, or the vector is not a valid device vector.
    INVALID_TARGET = 17 => EINVAL,
    /// The VM's remapping-entry quota would be exceeded.
    QUOTA_EXCEEDED = 18 => ENOSPC,
    /// The host's physical remapping table has no free run of entries of the needed length.
    TABLE_FULL = 19 => ENOSPC,
    /// The host has no interrupt vector left for this VM or on the needed physical CPU.
    VECTORS_EXHAUSTED = 20 => ENOSPC,
    /// A physical-side step (virtual routing, physical interrupt) failed; nothing was changed.
    BACKEND_FAILURE = 21 => EIO,
    /// The host cannot serve the call now (transient); the guest may retry.
    BUSY = 22 => EAGAIN,
}

impl Status {
    /// Whether the status is [`Status::SUCCESS`].
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Whether this ABI version names the status.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "Status::{n}"),
            None => write!(f, "Status({:#x})", self.0),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "unknown status {:#x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_are_dense_and_named() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.0 as usize, i, "{s:?} out of order");
            assert!(s.is_known());
        }
        assert_eq!(Status(0xdead).name(), None);
        assert_eq!(Status(0xdead).errno(), errno::EIO);
    }

    #[test]
    fn errno_mapping_is_exact() {
        assert_eq!(Status::SUCCESS.errno(), 0);
        assert_eq!(Status::UNKNOWN_CALL.errno(), errno::ENOSYS);
        assert_eq!(Status::TABLE_FULL.errno(), errno::ENOSPC);
        assert_eq!(Status::QUOTA_EXCEEDED.errno(), errno::ENOSPC);
        assert_eq!(Status::VECTORS_EXHAUSTED.errno(), errno::ENOSPC);
        assert_eq!(Status::NOT_YOUR_DEVICE.errno(), errno::ENODEV);
        assert_eq!(Status::INVALID_HANDLE.errno_name(), "ENOENT");
    }
}

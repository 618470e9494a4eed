//! The error type of device storage access.

use core::fmt;

use crate::ids::StorageKind;

/// Errors of a device's interrupt storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceError {
    /// The device has no storage of this kind.
    NoStorage(StorageKind),
    /// The index is beyond the storage.
    IndexOutOfRange {
        /// The storage kind.
        kind: StorageKind,
        /// The index given.
        index: u32,
        /// Entries (or vectors, or queues) the storage has.
        size: u32,
    },
    /// A byte access goes beyond the storage.
    AccessOutOfRange {
        /// The storage kind.
        kind: StorageKind,
        /// Offset of the access.
        offset: u64,
        /// Bytes accessed.
        len: usize,
        /// Size of the storage in bytes.
        size: u64,
    },
    /// MSI vector `index` is not among the `enabled` vectors (2^MME) of the block.
    MsiVectorNotEnabled {
        /// The vector index.
        index: u32,
        /// Vectors enabled.
        enabled: u32,
    },
    /// The MSI capability has no per-vector mask bits.
    NoMaskBits,
    /// The MSI message is one for the block: only slot index 0 names it.
    MsiMessageIndex(u32),
    /// The IMS queue (carried) has no context address.
    NoQueueContext(u32),
    /// A queue context address is not 4-byte aligned or wraps the address space.
    BadContextAddress {
        /// The queue.
        queue: u32,
        /// The guest physical address given.
        gpa: u64,
    },
    /// The device is not attached to guest memory, so it cannot reach a queue context.
    NoDmaMemory,
    /// Guest memory could not be accessed.
    Dma {
        /// Guest physical address.
        gpa: u64,
        /// Bytes accessed.
        len: usize,
    },
    /// An invalid device configuration.
    Config(ConfigError),
}

/// Invalid device configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigError {
    /// MSI multiple message capable (log2, carried) above 5 (32 vectors).
    MsiVectorsLog2(u8),
    /// MSI-X table size (carried) outside 1..=2048.
    MsixEntries(u32),
    /// IMS array size (carried) outside 1..=65536.
    ImsEntries(u32),
    /// IMS queue count (carried) outside 1..=65536.
    ImsQueues(u32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MsiVectorsLog2(n) => write!(f, "MSI vectors 2^{n} exceeds 32"),
            Self::MsixEntries(n) => write!(f, "MSI-X table size {n} outside 1..=2048"),
            Self::ImsEntries(n) => write!(f, "IMS array size {n} outside 1..=65536"),
            Self::ImsQueues(n) => write!(f, "IMS queue count {n} outside 1..=65536"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoStorage(k) => write!(f, "device has no {k} storage"),
            Self::IndexOutOfRange { kind, index, size } => {
                write!(f, "{kind} index {index} beyond its {size} entries")
            }
            Self::AccessOutOfRange {
                kind,
                offset,
                len,
                size,
            } => write!(
                f,
                "{kind} access of {len} bytes at {offset:#x} beyond its {size} bytes"
            ),
            Self::MsiVectorNotEnabled { index, enabled } => {
                write!(f, "MSI vector {index} not among the {enabled} enabled")
            }
            Self::NoMaskBits => write!(f, "MSI capability has no per-vector mask bits"),
            Self::MsiMessageIndex(i) => {
                write!(f, "MSI has one message for the block; index {i} is not 0")
            }
            Self::NoQueueContext(q) => write!(f, "IMS queue {q} has no context address"),
            Self::BadContextAddress { queue, gpa } => {
                write!(f, "IMS queue {queue} context address {gpa:#x} invalid")
            }
            Self::NoDmaMemory => write!(f, "device is not attached to guest memory"),
            Self::Dma { gpa, len } => write!(f, "DMA of {len} bytes at {gpa:#x} failed"),
            Self::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DeviceError {}

//! The legacy scheme: trap-and-emulate of MSI and MSI-X, an emulated VT-d interrupt remapping
//! unit, and the switch to vIR (spec §9, VIR-LEG-H-001..005, VIR-NEG-H-004, VIR-RST-H-006).
//!
//! Until a `NEGOTIATE` succeeds a VM runs exactly as on a host without vIR (VIR-LEG-H-001): the
//! VMM traps every guest access to the MSI capability and the MSI-X table of an assigned device
//! and hands it to [`Host::trap_write`] / [`Host::trap_read`]. Every trapped access is a guest
//! exit and is counted per [`TrapKind`] ([`LegacyCounters`]).
//!
//! # What a trapped write does (legacy state)
//!
//! The host keeps the *emulated* registers ([`EmulatedMsi`], [`EmulatedMsix`]) and derives, for
//! every vector, whether the guest wants it delivered: MSI enabled and the vector not masked;
//! MSI-X enabled, the function not masked and the entry not masked. For a wanted vector the
//! guest's message is decoded — in the x86 compatibility format, or, when the VM's emulated
//! VT-d unit has interrupt remapping on, through the guest's own remapping table
//! ([`viommu`]) — into a vCPU and a guest vector. Then, as QEMU with VFIO does:
//!
//! 1. the virtual route (KVM GSI route with an irqfd) to that vCPU and vector;
//! 2. the physical interrupt of the storage slot, started on the vCPU's physical CPU (VFIO);
//! 3. with host interrupt remapping on, the host's own physical IRTE, with the same backends,
//!    formats and source-id rules as the vIR path (VIR-FMT-H-003, VIR-SEC-H-001), and the
//!    physical message naming it written into the device's storage ([`DeviceStorage`]); with
//!    remapping off, a compatibility-format message naming the host vector;
//! 4. the physical entry unmasked.
//!
//! Masking, disabling or a message that no longer decodes tears the vector down in the reverse
//! order; a message naming another target retargets it (route, physical IRQ affinity, IRTE) —
//! with host remapping on the device is not touched. Failures of these steps never fail the
//! trapped write (a device register write has no status): the vector stays undelivered, the
//! failure is counted and reported in the [`TrapOutcome`] as a [`VectorEvent`].
//!
//! # The switch (VIR-NEG-H-004, VIR-LEG-H-002..005)
//!
//! After every control write the trap code reports the number of enabled MSI and MSI-X
//! capabilities to [`Vm::set_legacy_interrupts_enabled`](crate::Vm::set_legacy_interrupts_enabled),
//! so `NEGOTIATE` fails with `INVALID_STATE` while any is enabled. Once negotiated, MSI-X tables
//! are no longer trapped: the VMM maps them into the guest ([`Vm::msix_trapped`](crate::Vm::msix_trapped)
//! is false) and an MSI-X table access reaching the trap code is a VMM bug
//! ([`TrapError::MsixNotTrapped`]). MSI-X Enable and Function Mask are forwarded to the device.
//! The MSI capability stays trapped and accepts an enable only with the message the host issued
//! for the device's live MSI allocation and a Multiple Message Enable within it; anything else is
//! dropped and counted ([`TrapOutcome::Refused`]). A reset ([`Host::reset_vm`] or the `RESET`
//! call) tears everything down, presents MSI and MSI-X disabled with the MSI-X entries at their
//! reset values (VIR-RST-H-006) and traps again.
//!
//! After an untrapped session the physical MSI-X table holds whatever the guest wrote; the host
//! treats it as unknown and, before it next programs the device, disables MSI-X and masks every
//! physical entry ([`Host::legacy_resync`], also done lazily by the trap entry points).
//!
//! [`Host::trap_write`]: crate::Host::trap_write
//! [`Host::trap_read`]: crate::Host::trap_read
//! [`Host::reset_vm`]: crate::Host::reset_vm
//! [`Host::legacy_resync`]: crate::Host::legacy_resync

use core::fmt;

use vir_abi::hw::msi::{MsiError, MsiMessage};

use crate::backend::{BackendError, VmId};
use viommu::VirtualFault;

mod emulation;
mod entry;
pub mod viommu;

pub use emulation::{EmulatedMsi, EmulatedMsix, EmulatedMsixEntry, LiveVector};
pub(crate) use emulation::{LegacyState, on_negotiated, reset_emulation};

/// VM-level choices of the VMM for the legacy scheme (never guest input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LegacyConfig {
    /// The VM has an emulated VT-d unit with interrupt remapping (QEMU `intel-iommu,intremap=on`):
    /// the guest may program a remapping table in its memory and write remappable-format
    /// messages ([`viommu`]).
    pub viommu: bool,
    /// `KVM_FEATURE_MSI_EXT_DEST_ID` is offered: compatibility-format messages carry APIC id bits
    /// 14:8 in address bits 11:5.
    pub ext_dest_id: bool,
}

/// A register of the MSI capability, with the value the guest wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsiRegister {
    /// Message Control: bit 0 MSI Enable, bits 6:4 Multiple Message Enable; the read-only bits
    /// (Multiple Message Capable, 64-bit, per-vector masking) are ignored.
    Control(u16),
    /// Message Address, bits 31:0 (bits 1:0 read as 0).
    AddressLo(u32),
    /// Message Upper Address (the capability is 64-bit capable).
    AddressHi(u32),
    /// Message Data (16 bits).
    Data(u16),
    /// Mask Bits, one per vector (the capability supports per-vector masking).
    MaskBits(u32),
}

/// A 32-bit field of an MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MsixField {
    /// Message Address, bits 31:0 (offset 0; bits 1:0 read as 0).
    AddressLo,
    /// Message Upper Address (offset 4).
    AddressHi,
    /// Message Data (offset 8).
    Data,
    /// Vector Control (offset 12): bit 0 Mask; other bits reserved, read as 0.
    VectorControl,
}

impl MsixField {
    /// The field at byte `offset` within a 16-byte entry (`None` unless 0, 4, 8 or 12).
    pub const fn from_offset(offset: u32) -> Option<Self> {
        match offset {
            0 => Some(Self::AddressLo),
            4 => Some(Self::AddressHi),
            8 => Some(Self::Data),
            12 => Some(Self::VectorControl),
            _ => None,
        }
    }
}

/// A trapped guest write to a device's interrupt registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapWrite {
    /// A register of the MSI capability (config space: trapped in every state).
    Msi(MsiRegister),
    /// MSI-X Message Control (config space: trapped in every state): bit 15 MSI-X Enable, bit 14
    /// Function Mask; the table size bits are read-only.
    MsixControl(u16),
    /// A field of MSI-X table entry `index` (trapped in the legacy state only).
    MsixEntry {
        /// Table index.
        index: u32,
        /// The field.
        field: MsixField,
        /// The value written.
        value: u32,
    },
}

/// A trapped guest read of a device's interrupt registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapRead {
    /// MSI Message Control.
    MsiControl,
    /// MSI Message Address, bits 31:0.
    MsiAddressLo,
    /// MSI Message Upper Address.
    MsiAddressHi,
    /// MSI Message Data.
    MsiData,
    /// MSI Mask Bits.
    MsiMaskBits,
    /// MSI-X Message Control.
    MsixControl,
    /// A field of MSI-X table entry `index` (legacy state only).
    MsixEntry {
        /// Table index.
        index: u32,
        /// The field.
        field: MsixField,
    },
}

/// The kinds of trapped accesses, for the exit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrapKind {
    /// MSI Message Control.
    MsiControl,
    /// MSI Message Address, bits 31:0.
    MsiAddressLo,
    /// MSI Message Upper Address.
    MsiAddressHi,
    /// MSI Message Data.
    MsiData,
    /// MSI Mask Bits.
    MsiMaskBits,
    /// MSI-X Message Control.
    MsixControl,
    /// MSI-X entry Message Address, bits 31:0.
    MsixAddressLo,
    /// MSI-X entry Message Upper Address.
    MsixAddressHi,
    /// MSI-X entry Message Data.
    MsixData,
    /// MSI-X entry Vector Control.
    MsixVectorControl,
    /// Emulated VT-d IRTA register.
    ViommuIrta,
    /// Emulated VT-d global command register.
    ViommuCommand,
    /// Emulated VT-d interrupt entry cache invalidation (a queued invalidation submission).
    ViommuInvalidation,
}

impl TrapKind {
    /// Every kind, in counter order.
    pub const ALL: [TrapKind; 13] = [
        Self::MsiControl,
        Self::MsiAddressLo,
        Self::MsiAddressHi,
        Self::MsiData,
        Self::MsiMaskBits,
        Self::MsixControl,
        Self::MsixAddressLo,
        Self::MsixAddressHi,
        Self::MsixData,
        Self::MsixVectorControl,
        Self::ViommuIrta,
        Self::ViommuCommand,
        Self::ViommuInvalidation,
    ];

    /// The kind of a write.
    pub const fn of_write(w: &TrapWrite) -> Self {
        match w {
            TrapWrite::Msi(MsiRegister::Control(_)) => Self::MsiControl,
            TrapWrite::Msi(MsiRegister::AddressLo(_)) => Self::MsiAddressLo,
            TrapWrite::Msi(MsiRegister::AddressHi(_)) => Self::MsiAddressHi,
            TrapWrite::Msi(MsiRegister::Data(_)) => Self::MsiData,
            TrapWrite::Msi(MsiRegister::MaskBits(_)) => Self::MsiMaskBits,
            TrapWrite::MsixControl(_) => Self::MsixControl,
            TrapWrite::MsixEntry { field, .. } => Self::of_msix_field(*field),
        }
    }

    /// The kind of a read.
    pub const fn of_read(r: &TrapRead) -> Self {
        match r {
            TrapRead::MsiControl => Self::MsiControl,
            TrapRead::MsiAddressLo => Self::MsiAddressLo,
            TrapRead::MsiAddressHi => Self::MsiAddressHi,
            TrapRead::MsiData => Self::MsiData,
            TrapRead::MsiMaskBits => Self::MsiMaskBits,
            TrapRead::MsixControl => Self::MsixControl,
            TrapRead::MsixEntry { field, .. } => Self::of_msix_field(*field),
        }
    }

    const fn of_msix_field(f: MsixField) -> Self {
        match f {
            MsixField::AddressLo => Self::MsixAddressLo,
            MsixField::AddressHi => Self::MsixAddressHi,
            MsixField::Data => Self::MsixData,
            MsixField::VectorControl => Self::MsixVectorControl,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// A short lower-case name (`msix-data`, `viommu-invalidation`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::MsiControl => "msi-control",
            Self::MsiAddressLo => "msi-address-lo",
            Self::MsiAddressHi => "msi-address-hi",
            Self::MsiData => "msi-data",
            Self::MsiMaskBits => "msi-mask-bits",
            Self::MsixControl => "msix-control",
            Self::MsixAddressLo => "msix-address-lo",
            Self::MsixAddressHi => "msix-address-hi",
            Self::MsixData => "msix-data",
            Self::MsixVectorControl => "msix-vector-control",
            Self::ViommuIrta => "viommu-irta",
            Self::ViommuCommand => "viommu-command",
            Self::ViommuInvalidation => "viommu-invalidation",
        }
    }
}

/// One vector of the legacy scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacySlot {
    /// Vector `vector` of the MSI block of a device.
    Msi {
        /// Guest-visible device id.
        device_id: u32,
        /// Vector index within the block.
        vector: u8,
    },
    /// MSI-X table entry `index` of a device.
    MsiX {
        /// Guest-visible device id.
        device_id: u32,
        /// Table index.
        index: u32,
    },
}

/// Where the guest asked a vector to be delivered: a vCPU and a guest vector (physical
/// destination, fixed delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtualTarget {
    /// Index of the vCPU in the VM's configuration.
    pub vcpu_index: u32,
    /// Its guest APIC id.
    pub apic_id: u32,
    /// The guest vector.
    pub vector: u8,
}

/// Why a wanted vector could not be (or could no longer be) delivered. The guest's write itself
/// is never refused for these: the vector simply stays undelivered, as on real hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacySetupError {
    /// The message is not a valid compatibility-format interrupt (carried: the decoder's error;
    /// a remappable-format message while the VM's remapping unit is off lands here as
    /// [`MsiError::RemappableFormat`]).
    Message(MsiError),
    /// The emulated remapping unit blocked the message (carried: the fault, also recorded in
    /// the unit's fault log unless FPD suppressed it).
    Remapping(VirtualFault),
    /// Logical destination mode or a delivery mode other than fixed or lowest priority.
    UnsupportedDelivery {
        /// Delivery mode bits.
        delivery_mode: u8,
        /// Logical destination mode.
        logical: bool,
    },
    /// The destination APIC id (carried) names no vCPU of the VM.
    NoSuchVcpu(u32),
    /// The vector (carried) is below 0x10, which a local APIC cannot accept.
    IllegalVector(u8),
    /// The host's remapping table has no free naturally aligned run of `2^log2` entries.
    TableFull {
        /// log2 of the run needed.
        log2: u8,
    },
    /// A multi-vector MSI block (carried: log2 of its size) needs host interrupt remapping (x86
    /// cannot deliver one without it).
    MultiMessageWithoutHostIr(u8),
    /// A compatibility-format physical message cannot name the host CPU (carried: its APIC id).
    HostDestination(u32),
    /// A backend step failed (everything before it was undone).
    Backend(BackendError),
    /// The host could not encode its own IRTE (a host bug, reported rather than panicking).
    IrteEncode,
}

impl fmt::Display for LegacySetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message(e) => write!(f, "invalid message: {e}"),
            Self::Remapping(fault) => write!(f, "blocked by the emulated remapping unit: {fault}"),
            Self::UnsupportedDelivery {
                delivery_mode,
                logical,
            } => write!(
                f,
                "unsupported delivery (mode {delivery_mode}, logical {logical})"
            ),
            Self::NoSuchVcpu(a) => write!(f, "APIC id {a} names no vCPU"),
            Self::IllegalVector(v) => write!(f, "vector {v:#x} is below 0x10"),
            Self::TableFull { log2 } => write!(f, "no free run of {} IRTEs", 1u32 << log2),
            Self::MultiMessageWithoutHostIr(l) => write!(
                f,
                "an MSI block of {} vectors needs host interrupt remapping",
                1u32 << l
            ),
            Self::HostDestination(a) => {
                write!(f, "host APIC id {a} does not fit a compatibility message")
            }
            Self::Backend(e) => write!(f, "{e}"),
            Self::IrteEncode => f.write_str("host IRTE could not be encoded"),
        }
    }
}

impl std::error::Error for LegacySetupError {}

/// What happened to one vector because of a trapped write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorEvent {
    /// Now delivered to `target`.
    SetUp {
        /// The vector.
        slot: LegacySlot,
        /// Its target.
        target: VirtualTarget,
    },
    /// Moved to another target; with host remapping on, the device was not touched.
    Retargeted {
        /// The vector.
        slot: LegacySlot,
        /// Old target.
        from: VirtualTarget,
        /// New target.
        to: VirtualTarget,
    },
    /// No longer delivered (masked, disabled, or its message no longer decodes).
    TornDown {
        /// The vector.
        slot: LegacySlot,
        /// The target it had.
        was: VirtualTarget,
    },
    /// Wanted but not delivered.
    SetupFailed {
        /// The vector.
        slot: LegacySlot,
        /// Why.
        error: LegacySetupError,
    },
    /// A retarget failed in the backends; the old target stays in force.
    RetargetFailed {
        /// The vector.
        slot: LegacySlot,
        /// The target kept.
        kept: VirtualTarget,
        /// Why.
        error: LegacySetupError,
    },
}

/// Why an MSI write was refused in the negotiated state (VIR-LEG-H-003, VIR-LEG-H-004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsiRefusal {
    /// MSI Enable with no live MSI allocation whose message was issued.
    NoIssuedMessage,
    /// MSI Enable with address and data other than the issued message.
    MessageMismatch {
        /// The message in the emulated registers.
        written: MsiMessage,
        /// The message issued for the device's MSI allocation.
        issued: MsiMessage,
    },
    /// MSI Enable with a Multiple Message Enable above the allocation's log2 count.
    MmeTooLarge {
        /// The Multiple Message Enable written.
        mme: u8,
        /// The allocation's log2 count.
        log2_count: u8,
    },
    /// A change of address, data or Multiple Message Enable while MSI is enabled.
    ChangeWhileEnabled(MsiRegister),
}

impl fmt::Display for MsiRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIssuedMessage => f.write_str("no message issued for the MSI capability"),
            Self::MessageMismatch { written, issued } => write!(
                f,
                "MSI enable with {written:x?}, the issued message is {issued:x?}"
            ),
            Self::MmeTooLarge { mme, log2_count } => write!(
                f,
                "Multiple Message Enable {mme} exceeds the allocation's {log2_count}"
            ),
            Self::ChangeWhileEnabled(r) => write!(f, "{r:x?} while MSI is enabled"),
        }
    }
}

/// The result of a trapped write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapOutcome {
    /// The emulated register was updated; these vectors changed (possibly none).
    Emulated(Vec<VectorEvent>),
    /// Negotiated state: the write was applied to the device (MSI-X control, MSI mask bits, an
    /// accepted MSI enable or a disable; VIR-LEG-H-003, VIR-LEG-H-005).
    Forwarded,
    /// Negotiated state: the write was dropped and counted (VIR-LEG-H-003, VIR-LEG-H-004).
    Refused(MsiRefusal),
}

impl TrapOutcome {
    /// The vector events (empty unless [`TrapOutcome::Emulated`]).
    pub fn events(&self) -> &[VectorEvent] {
        match self {
            Self::Emulated(e) => e,
            Self::Forwarded | Self::Refused(_) => &[],
        }
    }
}

/// A VMM-side mistake in using the trap entry points (never caused by a guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapError {
    /// No VM with this id.
    UnknownVm(VmId),
    /// The VM has no device with this guest-visible id.
    UnknownDevice {
        /// The VM.
        vm: VmId,
        /// The device id.
        device_id: u32,
    },
    /// The device (carried) has no MSI capability.
    NoMsi(u32),
    /// The device (carried) has no MSI-X capability.
    NoMsix(u32),
    /// The table index is beyond the device's MSI-X table.
    MsixIndexOutOfRange {
        /// The device id.
        device_id: u32,
        /// The index.
        index: u32,
        /// The table size.
        entries: u32,
    },
    /// An MSI-X table access reached the trap code while the VM's MSI-X tables are not trapped
    /// (negotiated state): the VMM should have mapped the table (VIR-LEG-H-002).
    MsixNotTrapped {
        /// The device id.
        device_id: u32,
        /// The table index.
        index: u32,
    },
    /// A remapping-unit register access for a VM without an emulated remapping unit.
    NoViommu(VmId),
}

impl fmt::Display for TrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownVm(vm) => write!(f, "no VM {vm}"),
            Self::UnknownDevice { vm, device_id } => {
                write!(f, "{vm} has no device {device_id:#x}")
            }
            Self::NoMsi(d) => write!(f, "device {d:#x} has no MSI capability"),
            Self::NoMsix(d) => write!(f, "device {d:#x} has no MSI-X capability"),
            Self::MsixIndexOutOfRange {
                device_id,
                index,
                entries,
            } => write!(
                f,
                "device {device_id:#x}: MSI-X index {index} beyond its {entries} entries"
            ),
            Self::MsixNotTrapped { device_id, index } => write!(
                f,
                "device {device_id:#x}: MSI-X entry {index} accessed through the trap while untrapped"
            ),
            Self::NoViommu(vm) => write!(f, "{vm} has no emulated remapping unit"),
        }
    }
}

impl std::error::Error for TrapError {}

/// Exit and event counters of the legacy scheme of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyCounters {
    writes: [u64; TrapKind::ALL.len()],
    reads: [u64; TrapKind::ALL.len()],
    /// Vectors set up.
    pub set_up: u64,
    /// Vectors retargeted.
    pub retargeted: u64,
    /// Vectors torn down.
    pub torn_down: u64,
    /// Wanted vectors that could not be set up (or kept).
    pub setup_failures: u64,
    /// Retargets that failed in the backends.
    pub retarget_failures: u64,
    /// MSI writes refused in the negotiated state (VIR-LEG-H-003, VIR-LEG-H-004).
    pub msi_refused: u64,
    /// Remapping-table entries read from guest memory by the emulated remapping unit.
    pub virte_reads: u64,
    /// Writes to the physical storage of the VM's devices made by the trap code.
    pub physical_writes: u64,
}

impl LegacyCounters {
    pub(crate) fn count_write(&mut self, kind: TrapKind) {
        self.writes[kind.index()] += 1;
    }

    pub(crate) fn count_read(&mut self, kind: TrapKind) {
        self.reads[kind.index()] += 1;
    }

    /// Trapped writes of `kind`.
    pub fn writes(&self, kind: TrapKind) -> u64 {
        self.writes[kind.index()]
    }

    /// Trapped reads of `kind`.
    pub fn reads(&self, kind: TrapKind) -> u64 {
        self.reads[kind.index()]
    }

    /// Every trapped access: the guest exits the legacy scheme costs.
    pub fn exits(&self) -> u64 {
        self.writes.iter().chain(self.reads.iter()).sum()
    }

    /// Non-zero (kind, writes, reads), in kind order.
    pub fn by_kind(&self) -> impl Iterator<Item = (TrapKind, u64, u64)> + '_ {
        TrapKind::ALL
            .iter()
            .map(|&k| (k, self.writes(k), self.reads(k)))
            .filter(|&(_, w, r)| w != 0 || r != 0)
    }

    pub(crate) fn count_event(&mut self, e: &VectorEvent) {
        match e {
            VectorEvent::SetUp { .. } => self.set_up += 1,
            VectorEvent::Retargeted { .. } => self.retargeted += 1,
            VectorEvent::TornDown { .. } => self.torn_down += 1,
            VectorEvent::SetupFailed { .. } => self.setup_failures += 1,
            VectorEvent::RetargetFailed { .. } => self.retarget_failures += 1,
        }
    }
}

/// Access to the *physical* interrupt storage of assigned devices (the VMM's VFIO device
/// regions), used by the trap code to program the host's messages. Devices are named by their
/// physical requester id.
///
/// Writes cannot fail: an implementation that meets an error handles it itself, as for the
/// undo operations of [`crate::backend`].
pub trait DeviceStorage {
    /// Writes the message of the MSI capability.
    fn write_msi_message(&mut self, requester_id: u16, message: MsiMessage);
    /// Writes the MSI Mask Bits.
    fn set_msi_mask(&mut self, requester_id: u16, mask: u32);
    /// Writes MSI Enable and Multiple Message Enable.
    fn set_msi_control(&mut self, requester_id: u16, enabled: bool, mme: u8);
    /// Writes the message of MSI-X entry `index`.
    fn write_msix_message(&mut self, requester_id: u16, index: u32, message: MsiMessage);
    /// Writes the mask bit of MSI-X entry `index`.
    fn set_msix_masked(&mut self, requester_id: u16, index: u32, masked: bool);
    /// Writes MSI-X Enable and Function Mask.
    fn set_msix_control(&mut self, requester_id: u16, enabled: bool, function_mask: bool);
}

impl<S: DeviceStorage + ?Sized> DeviceStorage for &mut S {
    fn write_msi_message(&mut self, requester_id: u16, message: MsiMessage) {
        (**self).write_msi_message(requester_id, message)
    }
    fn set_msi_mask(&mut self, requester_id: u16, mask: u32) {
        (**self).set_msi_mask(requester_id, mask)
    }
    fn set_msi_control(&mut self, requester_id: u16, enabled: bool, mme: u8) {
        (**self).set_msi_control(requester_id, enabled, mme)
    }
    fn write_msix_message(&mut self, requester_id: u16, index: u32, message: MsiMessage) {
        (**self).write_msix_message(requester_id, index, message)
    }
    fn set_msix_masked(&mut self, requester_id: u16, index: u32, masked: bool) {
        (**self).set_msix_masked(requester_id, index, masked)
    }
    fn set_msix_control(&mut self, requester_id: u16, enabled: bool, function_mask: bool) {
        (**self).set_msix_control(requester_id, enabled, function_mask)
    }
}

impl<S: DeviceStorage + ?Sized> DeviceStorage for Box<S> {
    fn write_msi_message(&mut self, requester_id: u16, message: MsiMessage) {
        (**self).write_msi_message(requester_id, message)
    }
    fn set_msi_mask(&mut self, requester_id: u16, mask: u32) {
        (**self).set_msi_mask(requester_id, mask)
    }
    fn set_msi_control(&mut self, requester_id: u16, enabled: bool, mme: u8) {
        (**self).set_msi_control(requester_id, enabled, mme)
    }
    fn write_msix_message(&mut self, requester_id: u16, index: u32, message: MsiMessage) {
        (**self).write_msix_message(requester_id, index, message)
    }
    fn set_msix_masked(&mut self, requester_id: u16, index: u32, masked: bool) {
        (**self).set_msix_masked(requester_id, index, masked)
    }
    fn set_msix_control(&mut self, requester_id: u16, enabled: bool, function_mask: bool) {
        (**self).set_msix_control(requester_id, enabled, function_mask)
    }
}

const _: Option<&dyn DeviceStorage> = None;

#[cfg(test)]
mod tests;

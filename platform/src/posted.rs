//! Posted-interrupt descriptors in host memory.
//!
//! A [`PostedRegion`] is a range of host physical memory holding 64-byte, 64-byte aligned
//! descriptors ([`PostedDescriptor`]), addressed by their physical address (PDA), as a posted IRTE
//! names them. Each descriptor can be set up for one vCPU (its *owner*) with a notification
//! vector NV and a notification destination NDST (a physical CPU).
//!
//! Posting follows VT-d (the IOMMU side) and the CPU's posted-interrupt processing:
//!
//! * [`PostedRegion::post`]: set the PIR bit of the vector; then, if ON was clear and either SN is
//!   clear or the interrupt is urgent, set ON and send the notification vector NV to NDST
//!   ([`PostResult::Notify`]); otherwise no notification ([`PostResult::AlreadyOutstanding`],
//!   [`PostResult::Suppressed`]).
//! * [`PostedRegion::take_pir`]: what the notified CPU (or KVM's PIR-to-IRR sync on VM entry)
//!   does: clear ON and take the PIR, whose bits then go to the vCPU's local APIC IRR.
//!
//! The raw bytes of every descriptor can be read and written, so tests can plant any content.

use core::fmt;
use std::collections::BTreeMap;

use vir_abi::hw::ApicMode;
use vir_abi::hw::posted::{Pir, PostedDescriptor, PostedError};
use zerocopy::FromBytes;

use crate::ids::{HostApicId, VcpuRef};

/// Errors of the descriptor region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescriptorError {
    /// The region base (carried) is not 64-byte aligned.
    MisalignedBase(u64),
    /// The region (base, descriptor count) wraps around the address space.
    RegionOverflow {
        /// Region base.
        base: u64,
        /// Descriptors requested.
        count: u32,
    },
    /// The descriptor address (carried) is not 64-byte aligned.
    MisalignedPda(u64),
    /// The descriptor address (carried) is outside the region.
    OutsideRegion(u64),
    /// Every descriptor has an owner; carries the region's descriptor count.
    RegionFull(u32),
    /// The descriptor (carried) already has an owner.
    AlreadyOwned(u64),
    /// The vCPU already owns a descriptor.
    OwnerHasDescriptor {
        /// The vCPU.
        owner: VcpuRef,
        /// Its descriptor.
        pda: u64,
    },
    /// The descriptor (carried) has no owner.
    NotOwned(u64),
    /// A byte access goes beyond the 64-byte descriptor.
    BadAccess {
        /// Offset in the descriptor.
        offset: usize,
        /// Bytes accessed.
        len: usize,
    },
    /// The descriptor format rejected a value (xAPIC NDST above 255).
    Format(PostedError),
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MisalignedBase(b) => {
                write!(f, "descriptor region base {b:#x} not 64-byte aligned")
            }
            Self::RegionOverflow { base, count } => {
                write!(f, "{count} descriptors at {base:#x} wrap the address space")
            }
            Self::MisalignedPda(p) => write!(f, "descriptor address {p:#x} not 64-byte aligned"),
            Self::OutsideRegion(p) => write!(f, "descriptor address {p:#x} outside the region"),
            Self::RegionFull(n) => write!(f, "all {n} descriptors are owned"),
            Self::AlreadyOwned(p) => write!(f, "descriptor {p:#x} already has an owner"),
            Self::OwnerHasDescriptor { owner, pda } => {
                write!(f, "{owner} already owns descriptor {pda:#x}")
            }
            Self::NotOwned(p) => write!(f, "descriptor {p:#x} has no owner"),
            Self::BadAccess { offset, len } => {
                write!(
                    f,
                    "access of {len} bytes at offset {offset} beyond the descriptor"
                )
            }
            Self::Format(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DescriptorError {}

/// What a post did besides setting the PIR bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostResult {
    /// ON was clear: ON set, notification vector `nv` sent to `ndst`.
    Notify {
        /// The notification destination.
        ndst: HostApicId,
        /// The notification vector.
        nv: u8,
    },
    /// ON was already set: a notification is outstanding, none sent.
    AlreadyOutstanding,
    /// SN was set and the interrupt not urgent: ON left clear, no notification.
    Suppressed,
}

#[derive(Debug, Clone)]
struct Slot {
    desc: PostedDescriptor,
    owner: Option<VcpuRef>,
}

/// A region of posted-interrupt descriptors.
#[derive(Debug, Clone)]
pub struct PostedRegion {
    base: u64,
    slots: Vec<Slot>,
    owners: BTreeMap<VcpuRef, u64>,
}

impl PostedRegion {
    /// A region of `count` zeroed descriptors at host physical address `base`.
    pub fn new(base: u64, count: u32) -> Result<Self, DescriptorError> {
        if !base.is_multiple_of(PostedDescriptor::SIZE as u64) {
            return Err(DescriptorError::MisalignedBase(base));
        }
        if u64::from(count)
            .checked_mul(PostedDescriptor::SIZE as u64)
            .and_then(|len| base.checked_add(len))
            .is_none()
        {
            return Err(DescriptorError::RegionOverflow { base, count });
        }
        let slot = Slot {
            desc: PostedDescriptor::new(),
            owner: None,
        };
        Ok(Self {
            base,
            slots: vec![slot; count as usize],
            owners: BTreeMap::new(),
        })
    }

    /// The region's base address.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Number of descriptors.
    pub fn count(&self) -> u32 {
        // `new` takes the count as u32.
        self.slots.len() as u32
    }

    fn slot_index(&self, pda: u64) -> Result<usize, DescriptorError> {
        if !pda.is_multiple_of(PostedDescriptor::SIZE as u64) {
            return Err(DescriptorError::MisalignedPda(pda));
        }
        let i = pda
            .checked_sub(self.base)
            .map(|off| off / PostedDescriptor::SIZE as u64)
            .filter(|&i| i < self.slots.len() as u64)
            .ok_or(DescriptorError::OutsideRegion(pda))?;
        Ok(i as usize)
    }

    fn pda_at(&self, i: usize) -> u64 {
        self.base + (i as u64) * PostedDescriptor::SIZE as u64
    }

    /// Sets up the first unowned descriptor for `owner` with notification vector `nv` and
    /// destination `ndst` (encoded per `mode`); PIR, ON and SN are cleared. Returns its address.
    pub fn setup(
        &mut self,
        owner: VcpuRef,
        nv: u8,
        ndst: HostApicId,
        mode: ApicMode,
    ) -> Result<u64, DescriptorError> {
        let i = self
            .slots
            .iter()
            .position(|s| s.owner.is_none())
            .ok_or(DescriptorError::RegionFull(self.count()))?;
        let pda = self.pda_at(i);
        self.setup_at(pda, owner, nv, ndst, mode)?;
        Ok(pda)
    }

    /// Sets up the descriptor at `pda` for `owner` (see [`PostedRegion::setup`]).
    pub fn setup_at(
        &mut self,
        pda: u64,
        owner: VcpuRef,
        nv: u8,
        ndst: HostApicId,
        mode: ApicMode,
    ) -> Result<(), DescriptorError> {
        let i = self.slot_index(pda)?;
        if self.slots[i].owner.is_some() {
            return Err(DescriptorError::AlreadyOwned(pda));
        }
        if let Some(&pda) = self.owners.get(&owner) {
            return Err(DescriptorError::OwnerHasDescriptor { owner, pda });
        }
        let mut desc = PostedDescriptor::new();
        desc.set_nv(nv);
        desc.set_ndst(mode, ndst.0)
            .map_err(DescriptorError::Format)?;
        self.slots[i] = Slot {
            desc,
            owner: Some(owner),
        };
        self.owners.insert(owner, pda);
        Ok(())
    }

    /// Releases the descriptor at `pda`: no owner, contents zeroed.
    pub fn release(&mut self, pda: u64) -> Result<VcpuRef, DescriptorError> {
        let i = self.slot_index(pda)?;
        let owner = self.slots[i]
            .owner
            .take()
            .ok_or(DescriptorError::NotOwned(pda))?;
        self.slots[i].desc = PostedDescriptor::new();
        self.owners.remove(&owner);
        Ok(owner)
    }

    /// The owner of the descriptor at `pda`.
    pub fn owner(&self, pda: u64) -> Result<Option<VcpuRef>, DescriptorError> {
        Ok(self.slots[self.slot_index(pda)?].owner)
    }

    /// The descriptor `owner` owns.
    pub fn pda_of(&self, owner: VcpuRef) -> Option<u64> {
        self.owners.get(&owner).copied()
    }

    /// Every owned descriptor: (owner, address), by owner.
    pub fn owners(&self) -> impl Iterator<Item = (VcpuRef, u64)> + '_ {
        self.owners.iter().map(|(&o, &pda)| (o, pda))
    }

    /// A copy of the descriptor at `pda`.
    pub fn descriptor(&self, pda: u64) -> Result<PostedDescriptor, DescriptorError> {
        Ok(self.slots[self.slot_index(pda)?].desc)
    }

    fn desc_mut(&mut self, pda: u64) -> Result<&mut PostedDescriptor, DescriptorError> {
        let i = self.slot_index(pda)?;
        Ok(&mut self.slots[i].desc)
    }

    /// Sets the notification vector.
    pub fn set_nv(&mut self, pda: u64, nv: u8) -> Result<(), DescriptorError> {
        self.desc_mut(pda)?.set_nv(nv);
        Ok(())
    }

    /// Sets the notification destination (a vCPU moved to another physical CPU).
    pub fn set_ndst(
        &mut self,
        pda: u64,
        ndst: HostApicId,
        mode: ApicMode,
    ) -> Result<(), DescriptorError> {
        self.desc_mut(pda)?
            .set_ndst(mode, ndst.0)
            .map_err(DescriptorError::Format)
    }

    /// Sets or clears SN (suppress notification).
    pub fn set_sn(&mut self, pda: u64, sn: bool) -> Result<(), DescriptorError> {
        self.desc_mut(pda)?.set_sn(sn);
        Ok(())
    }

    /// Posts `vector` (see the module documentation). NDST is read per `mode`.
    pub fn post(
        &mut self,
        pda: u64,
        vector: u8,
        urgent: bool,
        mode: ApicMode,
    ) -> Result<PostResult, DescriptorError> {
        let desc = self.desc_mut(pda)?;
        desc.set_pir(vector);
        if desc.on() {
            return Ok(PostResult::AlreadyOutstanding);
        }
        if desc.sn() && !urgent {
            return Ok(PostResult::Suppressed);
        }
        desc.set_on(true);
        Ok(PostResult::Notify {
            ndst: HostApicId(desc.ndst(mode)),
            nv: desc.nv(),
        })
    }

    /// Posted-interrupt processing: clears ON and takes the PIR (the caller moves its bits into
    /// the vCPU's IRR).
    pub fn take_pir(&mut self, pda: u64) -> Result<Pir, DescriptorError> {
        let desc = self.desc_mut(pda)?;
        desc.set_on(false);
        Ok(desc.take_pir())
    }

    /// Reads `buf.len()` raw bytes at `offset` of the descriptor at `pda`.
    pub fn read_bytes(
        &self,
        pda: u64,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), DescriptorError> {
        let end = Self::check_access(offset, buf.len())?;
        let bytes = self.descriptor(pda)?.to_bytes();
        buf.copy_from_slice(&bytes[offset..end]);
        Ok(())
    }

    /// Writes raw bytes at `offset` of the descriptor at `pda` (any content, reserved bits
    /// included; the owner is unchanged).
    pub fn write_bytes(
        &mut self,
        pda: u64,
        offset: usize,
        data: &[u8],
    ) -> Result<(), DescriptorError> {
        let end = Self::check_access(offset, data.len())?;
        let desc = self.desc_mut(pda)?;
        let mut bytes = desc.to_bytes();
        bytes[offset..end].copy_from_slice(data);
        // Every 64-byte pattern is a valid `PostedDescriptor` value (FromBytes).
        if let Ok(d) = PostedDescriptor::read_from_bytes(&bytes) {
            *desc = d;
        }
        Ok(())
    }

    fn check_access(offset: usize, len: usize) -> Result<usize, DescriptorError> {
        offset
            .checked_add(len)
            .filter(|&end| end <= PostedDescriptor::SIZE)
            .ok_or(DescriptorError::BadAccess { offset, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GuestApicId, VmId};

    const X2: ApicMode = ApicMode::X2Apic;
    const XA: ApicMode = ApicMode::XApic;
    const NV: u8 = 0xF2;

    fn vcpu(id: u32) -> VcpuRef {
        VcpuRef::new(VmId(1), GuestApicId(id))
    }

    #[test]
    fn region_geometry_checks() {
        assert_eq!(
            PostedRegion::new(0x1010, 4).unwrap_err(),
            DescriptorError::MisalignedBase(0x1010)
        );
        assert_eq!(
            PostedRegion::new(u64::MAX - 63, 2).unwrap_err(),
            DescriptorError::RegionOverflow {
                base: u64::MAX - 63,
                count: 2
            }
        );
        let r = PostedRegion::new(0x1000, 4).unwrap();
        assert_eq!(
            r.descriptor(0x1020),
            Err(DescriptorError::MisalignedPda(0x1020))
        );
        assert_eq!(
            r.descriptor(0x1100),
            Err(DescriptorError::OutsideRegion(0x1100))
        );
        assert_eq!(
            r.descriptor(0x0FC0),
            Err(DescriptorError::OutsideRegion(0x0FC0))
        );
        assert_eq!(r.descriptor(0x10C0), Ok(PostedDescriptor::new()));
    }

    #[test]
    fn setup_assigns_owner_nv_ndst() {
        let mut r = PostedRegion::new(0x1000, 2).unwrap();
        let a = r.setup(vcpu(0), NV, HostApicId(300), X2).unwrap();
        let b = r.setup(vcpu(1), NV, HostApicId(2), XA).unwrap();
        assert_eq!((a, b), (0x1000, 0x1040));
        assert_eq!(
            r.setup(vcpu(2), NV, HostApicId(0), X2),
            Err(DescriptorError::RegionFull(2))
        );
        assert_eq!(r.owner(a), Ok(Some(vcpu(0))));
        assert_eq!(r.pda_of(vcpu(1)), Some(b));
        assert_eq!(
            r.owners().collect::<Vec<_>>(),
            vec![(vcpu(0), a), (vcpu(1), b)]
        );
        let d = r.descriptor(a).unwrap();
        assert_eq!((d.nv(), d.ndst_raw()), (NV, 300));
        // xAPIC: APIC id in NDST bits 15:8.
        assert_eq!(r.descriptor(b).unwrap().ndst_raw(), 0x0200);
        assert_eq!(r.release(a), Ok(vcpu(0)));
        assert_eq!(r.release(a), Err(DescriptorError::NotOwned(a)));
        assert_eq!(
            r.setup_at(a, vcpu(1), NV, HostApicId(0), X2),
            Err(DescriptorError::OwnerHasDescriptor {
                owner: vcpu(1),
                pda: b
            })
        );
        assert_eq!(
            r.setup_at(b, vcpu(3), NV, HostApicId(0), X2),
            Err(DescriptorError::AlreadyOwned(b))
        );
        assert_eq!(
            r.setup(vcpu(4), NV, HostApicId(256), XA),
            Err(DescriptorError::Format(
                PostedError::XApicDestinationTooLarge(256)
            ))
        );
        assert_eq!(r.pda_of(vcpu(4)), None);
    }

    #[test]
    fn post_sets_pir_and_notifies_once_until_taken() {
        let mut r = PostedRegion::new(0x1000, 1).unwrap();
        let pda = r.setup(vcpu(0), NV, HostApicId(7), X2).unwrap();
        assert_eq!(
            r.post(pda, 0x41, false, X2),
            Ok(PostResult::Notify {
                ndst: HostApicId(7),
                nv: NV
            })
        );
        let d = r.descriptor(pda).unwrap();
        assert!(d.on());
        assert!(d.pir_bit(0x41));
        assert_eq!(
            r.post(pda, 0x42, false, X2),
            Ok(PostResult::AlreadyOutstanding)
        );
        let pir = r.take_pir(pda).unwrap();
        assert_eq!(pir.vectors().collect::<Vec<_>>(), vec![0x41, 0x42]);
        let d = r.descriptor(pda).unwrap();
        assert!(!d.on());
        assert!(d.pir().is_empty());
        // After processing, the next post notifies again.
        assert!(matches!(
            r.post(pda, 0x41, false, X2),
            Ok(PostResult::Notify { .. })
        ));
    }

    #[test]
    fn sn_suppresses_unless_urgent() {
        let mut r = PostedRegion::new(0, 1).unwrap();
        let pda = r.setup(vcpu(0), NV, HostApicId(3), XA).unwrap();
        r.set_sn(pda, true).unwrap();
        assert_eq!(r.post(pda, 0x50, false, XA), Ok(PostResult::Suppressed));
        let d = r.descriptor(pda).unwrap();
        assert!(d.pir_bit(0x50));
        assert!(!d.on());
        // Urgent overrides SN.
        assert_eq!(
            r.post(pda, 0x51, true, XA),
            Ok(PostResult::Notify {
                ndst: HostApicId(3),
                nv: NV
            })
        );
        r.take_pir(pda).unwrap();
        r.set_sn(pda, false).unwrap();
        // Migration: new NDST and NV take effect for the next notification.
        r.set_ndst(pda, HostApicId(9), XA).unwrap();
        r.set_nv(pda, 0xF1).unwrap();
        assert_eq!(
            r.post(pda, 0x50, false, XA),
            Ok(PostResult::Notify {
                ndst: HostApicId(9),
                nv: 0xF1
            })
        );
    }

    #[test]
    fn raw_bytes_round_trip_any_content() {
        let mut r = PostedRegion::new(0x4000, 1).unwrap();
        let pda = 0x4000;
        // ON set by a raw write, reserved byte 35 set too.
        r.write_bytes(pda, 32, &[0x01, 0x00, 0xF2, 0xFF]).unwrap();
        let d = r.descriptor(pda).unwrap();
        assert!(d.on());
        assert_eq!(d.nv(), 0xF2);
        assert_eq!(d.reserved_35, 0xFF);
        // ON already set: posting does not notify.
        assert_eq!(
            r.post(pda, 0x20, false, X2),
            Ok(PostResult::AlreadyOutstanding)
        );
        let mut buf = [0u8; 4];
        r.read_bytes(pda, 0, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 0]);
        r.read_bytes(pda, 4, &mut buf).unwrap();
        assert_eq!(buf, [1, 0, 0, 0]); // PIR bit 0x20 = bit 32 of word 0
        assert_eq!(
            r.write_bytes(pda, 62, &[0; 3]),
            Err(DescriptorError::BadAccess { offset: 62, len: 3 })
        );
        assert_eq!(
            r.read_bytes(pda, usize::MAX, &mut buf),
            Err(DescriptorError::BadAccess {
                offset: usize::MAX,
                len: 4
            })
        );
    }
}

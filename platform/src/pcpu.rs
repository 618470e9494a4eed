//! Physical CPUs and their host vector spaces.
//!
//! Each physical CPU has an x2APIC id ([`HostApicId`], any 32-bit value) and a vector space from
//! which host interrupts are allocated: the Linux device vectors `0x20..=0xEA` (0xEB and up are
//! system vectors, such as the posted-interrupt notification vectors). The number of vectors a
//! CPU hands out is configurable, so tests can exhaust a CPU with a handful of allocations.
//!
//! A CPU also counts the vectors it *receives* (remapped device interrupts, compatibility-format
//! interrupts and posted-interrupt notifications).

use core::fmt;
use std::collections::BTreeMap;

use crate::bitmap::Bitmap256;
use crate::ids::HostApicId;

/// The first device vector a host hands out.
pub const FIRST_DEVICE_VECTOR: u8 = 0x20;
/// The last device vector a host hands out (0xEB and up are system vectors).
pub const LAST_DEVICE_VECTOR: u8 = 0xEA;
/// Number of device vectors, `0x20..=0xEA`.
pub const DEVICE_VECTORS: u16 = (LAST_DEVICE_VECTOR - FIRST_DEVICE_VECTOR) as u16 + 1;

/// Errors of a vector space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorError {
    /// Every vector the CPU may hand out is in use; carries the CPU's capacity.
    Exhausted {
        /// Vectors the CPU hands out at most.
        capacity: u16,
    },
    /// The vector (carried) is not a device vector (`0x20..=0xEA`).
    NotDeviceVector(u8),
    /// The vector (carried) is already allocated.
    AlreadyAllocated(u8),
    /// The vector (carried) is not allocated.
    NotAllocated(u8),
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exhausted { capacity } => {
                write!(f, "all {capacity} host vectors are in use")
            }
            Self::NotDeviceVector(v) => write!(f, "vector {v:#04x} is not a device vector"),
            Self::AlreadyAllocated(v) => write!(f, "vector {v:#04x} is already allocated"),
            Self::NotAllocated(v) => write!(f, "vector {v:#04x} is not allocated"),
        }
    }
}

impl std::error::Error for VectorError {}

/// The device vectors of one physical CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorSpace {
    allocated: Bitmap256,
    in_use: u16,
    capacity: u16,
}

impl VectorSpace {
    /// A space handing out at most `capacity` vectors (at most [`DEVICE_VECTORS`]; a larger value
    /// is reduced to it).
    pub fn new(capacity: u16) -> Self {
        Self {
            allocated: Bitmap256::default(),
            in_use: 0,
            capacity: capacity.min(DEVICE_VECTORS),
        }
    }

    /// Whether `vector` is a device vector (`0x20..=0xEA`).
    pub const fn is_device_vector(vector: u8) -> bool {
        vector >= FIRST_DEVICE_VECTOR && vector <= LAST_DEVICE_VECTOR
    }

    /// Allocates the lowest free device vector.
    pub fn alloc(&mut self) -> Result<u8, VectorError> {
        if self.in_use >= self.capacity {
            return Err(VectorError::Exhausted {
                capacity: self.capacity,
            });
        }
        let v = (FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR)
            .find(|&v| !self.allocated.contains(v))
            .ok_or(VectorError::Exhausted {
                capacity: self.capacity,
            })?;
        self.allocated.set(v);
        self.in_use += 1;
        Ok(v)
    }

    /// Allocates a specific device vector.
    pub fn alloc_at(&mut self, vector: u8) -> Result<(), VectorError> {
        if !Self::is_device_vector(vector) {
            return Err(VectorError::NotDeviceVector(vector));
        }
        if self.allocated.contains(vector) {
            return Err(VectorError::AlreadyAllocated(vector));
        }
        if self.in_use >= self.capacity {
            return Err(VectorError::Exhausted {
                capacity: self.capacity,
            });
        }
        self.allocated.set(vector);
        self.in_use += 1;
        Ok(())
    }

    /// Returns an allocated vector.
    pub fn free(&mut self, vector: u8) -> Result<(), VectorError> {
        if !self.allocated.contains(vector) {
            return Err(VectorError::NotAllocated(vector));
        }
        self.allocated.clear(vector);
        self.in_use -= 1;
        Ok(())
    }

    /// Whether `vector` is allocated.
    pub const fn is_allocated(&self, vector: u8) -> bool {
        self.allocated.contains(vector)
    }

    /// Vectors in use.
    pub const fn in_use(&self) -> u16 {
        self.in_use
    }

    /// Vectors this space hands out at most.
    pub const fn capacity(&self) -> u16 {
        self.capacity
    }

    /// Vectors still available.
    pub const fn available(&self) -> u16 {
        self.capacity - self.in_use
    }
}

/// One physical CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcpu {
    apic_id: HostApicId,
    vectors: VectorSpace,
    received: [u64; 256],
}

impl Pcpu {
    /// A CPU with x2APIC id `apic_id` handing out at most `capacity` device vectors.
    pub fn new(apic_id: HostApicId, capacity: u16) -> Self {
        Self {
            apic_id,
            vectors: VectorSpace::new(capacity),
            received: [0; 256],
        }
    }

    /// The CPU's x2APIC id.
    pub const fn apic_id(&self) -> HostApicId {
        self.apic_id
    }

    /// The CPU's device vector space.
    pub const fn vectors(&self) -> &VectorSpace {
        &self.vectors
    }

    /// The CPU's device vector space, mutable.
    pub fn vectors_mut(&mut self) -> &mut VectorSpace {
        &mut self.vectors
    }

    /// Records the receipt of `vector` (any vector, device or system).
    pub fn receive(&mut self, vector: u8) {
        let n = &mut self.received[vector as usize];
        *n = n.saturating_add(1);
    }

    /// How often `vector` was received.
    pub const fn received(&self, vector: u8) -> u64 {
        self.received[vector as usize]
    }

    /// How many vectors were received in total.
    pub fn total_received(&self) -> u64 {
        self.received.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }
}

/// Errors of the set of physical CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcpuError {
    /// No physical CPU has this APIC id.
    NoSuchPcpu(HostApicId),
    /// Two CPUs were configured with the same APIC id.
    DuplicateApicId(HostApicId),
    /// A vector operation on the CPU failed.
    Vector {
        /// The CPU.
        pcpu: HostApicId,
        /// What failed.
        error: VectorError,
    },
}

impl fmt::Display for PcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchPcpu(id) => write!(f, "no physical CPU with APIC id {}", id.0),
            Self::DuplicateApicId(id) => write!(f, "APIC id {} configured twice", id.0),
            Self::Vector { pcpu, error } => write!(f, "{pcpu}: {error}"),
        }
    }
}

impl std::error::Error for PcpuError {}

/// The physical CPUs of the host, keyed by APIC id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pcpus {
    cpus: BTreeMap<HostApicId, Pcpu>,
}

impl Pcpus {
    /// CPUs with the given APIC ids, each handing out at most `capacity` vectors.
    pub fn new(apic_ids: &[HostApicId], capacity: u16) -> Result<Self, PcpuError> {
        let mut cpus = BTreeMap::new();
        for &id in apic_ids {
            if cpus.insert(id, Pcpu::new(id, capacity)).is_some() {
                return Err(PcpuError::DuplicateApicId(id));
            }
        }
        Ok(Self { cpus })
    }

    /// Adds a CPU.
    pub fn add(&mut self, cpu: Pcpu) -> Result<(), PcpuError> {
        let id = cpu.apic_id();
        if self.cpus.contains_key(&id) {
            return Err(PcpuError::DuplicateApicId(id));
        }
        self.cpus.insert(id, cpu);
        Ok(())
    }

    /// The CPU with APIC id `id`.
    pub fn get(&self, id: HostApicId) -> Result<&Pcpu, PcpuError> {
        self.cpus.get(&id).ok_or(PcpuError::NoSuchPcpu(id))
    }

    /// The CPU with APIC id `id`, mutable.
    pub fn get_mut(&mut self, id: HostApicId) -> Result<&mut Pcpu, PcpuError> {
        self.cpus.get_mut(&id).ok_or(PcpuError::NoSuchPcpu(id))
    }

    /// Whether a CPU has APIC id `id`.
    pub fn contains(&self, id: HostApicId) -> bool {
        self.cpus.contains_key(&id)
    }

    /// All CPUs, by ascending APIC id.
    pub fn iter(&self) -> impl Iterator<Item = &Pcpu> {
        self.cpus.values()
    }

    /// Allocates the lowest free device vector on CPU `id`.
    pub fn alloc_vector(&mut self, id: HostApicId) -> Result<u8, PcpuError> {
        self.get_mut(id)?
            .vectors_mut()
            .alloc()
            .map_err(|error| PcpuError::Vector { pcpu: id, error })
    }

    /// Returns `vector` to CPU `id`.
    pub fn free_vector(&mut self, id: HostApicId, vector: u8) -> Result<(), PcpuError> {
        self.get_mut(id)?
            .vectors_mut()
            .free(vector)
            .map_err(|error| PcpuError::Vector { pcpu: id, error })
    }

    /// Records the receipt of `vector` on CPU `id`.
    pub fn receive(&mut self, id: HostApicId, vector: u8) -> Result<(), PcpuError> {
        self.get_mut(id)?.receive(vector);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_vector_range_is_0x20_to_0xea() {
        assert_eq!(DEVICE_VECTORS, 203);
        assert!(!VectorSpace::is_device_vector(0x1F));
        assert!(VectorSpace::is_device_vector(0x20));
        assert!(VectorSpace::is_device_vector(0xEA));
        assert!(!VectorSpace::is_device_vector(0xEB));
        assert!(!VectorSpace::is_device_vector(0xF2));
    }

    #[test]
    fn alloc_hands_out_lowest_free_and_reuses_freed() {
        let mut s = VectorSpace::new(DEVICE_VECTORS);
        assert_eq!(s.alloc(), Ok(0x20));
        assert_eq!(s.alloc(), Ok(0x21));
        assert_eq!(s.alloc(), Ok(0x22));
        assert_eq!(s.free(0x21), Ok(()));
        assert_eq!(s.alloc(), Ok(0x21));
        assert_eq!(s.in_use(), 3);
        assert_eq!(s.free(0x40), Err(VectorError::NotAllocated(0x40)));
    }

    #[test]
    fn full_range_exhausts_after_203() {
        let mut s = VectorSpace::new(u16::MAX);
        assert_eq!(s.capacity(), DEVICE_VECTORS);
        for i in 0..DEVICE_VECTORS {
            assert_eq!(s.alloc(), Ok(FIRST_DEVICE_VECTOR + i as u8));
        }
        assert_eq!(s.alloc(), Err(VectorError::Exhausted { capacity: 203 }));
        assert_eq!(s.available(), 0);
    }

    // VIR-ACT-H-006: the host-vector step can fail with VECTORS_EXHAUSTED.
    #[test]
    fn configured_capacity_exhausts_and_recovers_vir_act_h_006() {
        let mut cpus = Pcpus::new(&[HostApicId(0), HostApicId(300)], 2).unwrap();
        let id = HostApicId(300);
        assert_eq!(cpus.alloc_vector(id), Ok(0x20));
        assert_eq!(cpus.alloc_vector(id), Ok(0x21));
        assert_eq!(
            cpus.alloc_vector(id),
            Err(PcpuError::Vector {
                pcpu: id,
                error: VectorError::Exhausted { capacity: 2 }
            })
        );
        // Another CPU's space is independent.
        assert_eq!(cpus.alloc_vector(HostApicId(0)), Ok(0x20));
        assert_eq!(cpus.free_vector(id, 0x20), Ok(()));
        assert_eq!(cpus.alloc_vector(id), Ok(0x20));
        assert_eq!(
            cpus.alloc_vector(HostApicId(7)),
            Err(PcpuError::NoSuchPcpu(HostApicId(7)))
        );
    }

    #[test]
    fn alloc_at_checks_range_duplicates_and_capacity() {
        let mut s = VectorSpace::new(1);
        assert_eq!(s.alloc_at(0x10), Err(VectorError::NotDeviceVector(0x10)));
        assert_eq!(s.alloc_at(0xEF), Err(VectorError::NotDeviceVector(0xEF)));
        assert_eq!(s.alloc_at(0x80), Ok(()));
        assert_eq!(s.alloc_at(0x80), Err(VectorError::AlreadyAllocated(0x80)));
        assert_eq!(
            s.alloc_at(0x81),
            Err(VectorError::Exhausted { capacity: 1 })
        );
        assert!(s.is_allocated(0x80));
        assert!(!s.is_allocated(0x81));
    }

    #[test]
    fn duplicate_apic_ids_rejected_and_receipt_counted() {
        assert_eq!(
            Pcpus::new(&[HostApicId(1), HostApicId(1)], 4),
            Err(PcpuError::DuplicateApicId(HostApicId(1)))
        );
        let mut cpus = Pcpus::new(&[HostApicId(256)], 4).unwrap();
        cpus.receive(HostApicId(256), 0xF2).unwrap();
        cpus.receive(HostApicId(256), 0xF2).unwrap();
        cpus.receive(HostApicId(256), 0x20).unwrap();
        let cpu = cpus.get(HostApicId(256)).unwrap();
        assert_eq!(cpu.received(0xF2), 2);
        assert_eq!(cpu.received(0x20), 1);
        assert_eq!(cpu.total_received(), 3);
        assert_eq!(
            cpus.receive(HostApicId(2), 0x20),
            Err(PcpuError::NoSuchPcpu(HostApicId(2)))
        );
    }
}

//! A per-vCPU vector allocator, modelled on Linux's `irq_matrix` (`kernel/irq/matrix.c`) as the
//! x86 vector domain uses it.
//!
//! * Device vectors are `0x20..=0xEA` ([`FIRST_EXTERNAL_VECTOR`] up to [`FIRST_SYSTEM_VECTOR`]
//!   exclusive) minus a configurable set of system-reserved vectors (by default the legacy ISA
//!   range `0x30..=0x3F` and `0x80`).
//! * [`VectorMatrix::alloc`] picks the best CPU — the online CPU of the mask with the most free
//!   vectors, the lowest CPU number on ties — and its lowest free vector.
//! * Reservation mode: an interrupt that is allocated but not requested holds a *reservation*
//!   (a global count, no vector); it is parked on [`SHUTDOWN_VECTOR`] meanwhile.
//! * An offline CPU keeps its allocated vectors (they are freed as their interrupts move away)
//!   but is never chosen.

use alloc::vec::Vec;
use core::fmt;
use vir_abi::status::errno;

use crate::cpu::{CpuId, CpuMask};

/// First vector available to devices (Linux `FIRST_EXTERNAL_VECTOR`).
pub const FIRST_EXTERNAL_VECTOR: u8 = 0x20;
/// First system vector (Linux `FIRST_SYSTEM_VECTOR` without posted-MSI); device vectors end
/// below it.
pub const FIRST_SYSTEM_VECTOR: u8 = 0xEB;
/// The vector that reserved (allocated but not requested) interrupts are parked on (Linux
/// `MANAGED_IRQ_SHUTDOWN_VECTOR`); never allocated to a device.
pub const SHUTDOWN_VECTOR: u8 = 0xEF;
/// The legacy ISA vector range reserved by default (`ISA_IRQ_VECTOR(0..16)`).
pub const ISA_VECTORS: core::ops::RangeInclusive<u8> = 0x30..=0x3F;
/// The 32-bit system call vector, reserved by default (`IA32_SYSCALL_VECTOR`).
pub const IA32_SYSCALL_VECTOR: u8 = 0x80;

/// A set of vectors `0..=255` (a 256-bit bitmap).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VectorSet([u64; 4]);

impl VectorSet {
    /// The empty set.
    pub const fn new() -> Self {
        VectorSet([0; 4])
    }

    /// The set of `range`.
    pub fn from_range(range: core::ops::RangeInclusive<u8>) -> Self {
        let mut s = Self::new();
        for v in range {
            s.insert(v);
        }
        s
    }

    /// Adds `v`; returns whether it was absent.
    pub fn insert(&mut self, v: u8) -> bool {
        let (w, b) = (usize::from(v >> 6), 1u64 << (v & 63));
        let absent = self.0[w] & b == 0;
        self.0[w] |= b;
        absent
    }

    /// Removes `v`; returns whether it was present.
    pub fn remove(&mut self, v: u8) -> bool {
        let (w, b) = (usize::from(v >> 6), 1u64 << (v & 63));
        let present = self.0[w] & b != 0;
        self.0[w] &= !b;
        present
    }

    /// Whether `v` is in the set.
    pub const fn contains(&self, v: u8) -> bool {
        self.0[(v >> 6) as usize] & (1u64 << (v & 63)) != 0
    }

    /// Number of vectors in the set.
    pub const fn len(&self) -> u32 {
        self.0[0].count_ones()
            + self.0[1].count_ones()
            + self.0[2].count_ones()
            + self.0[3].count_ones()
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vectors, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&v| self.contains(v))
    }
}

impl fmt::Debug for VectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Hex)).finish()
    }
}

struct Hex(u8);

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// Configuration of the vector space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorConfig {
    /// Vectors in `0x20..=0xEA` that devices may never get.
    pub system_reserved: VectorSet,
}

impl Default for VectorConfig {
    /// The legacy ISA range `0x30..=0x3F` and `0x80`.
    fn default() -> Self {
        let mut system_reserved = VectorSet::from_range(ISA_VECTORS);
        system_reserved.insert(IA32_SYSCALL_VECTOR);
        VectorConfig { system_reserved }
    }
}

/// Errors of the vector allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorError {
    /// The CPU number is not below the number of CPUs.
    CpuOutOfRange {
        /// The CPU given.
        cpu: CpuId,
        /// Number of CPUs.
        nr_cpus: u32,
    },
    /// No CPU of the mask is online.
    NoOnlineCpu(CpuMask),
    /// Every online CPU of the mask has all its device vectors allocated.
    Exhausted(CpuMask),
    /// The vector is not allocated on that CPU (or is not a device vector).
    NotAllocated {
        /// The CPU.
        cpu: CpuId,
        /// The vector.
        vector: u8,
    },
    /// The CPU is already online.
    AlreadyOnline(CpuId),
    /// The CPU is already offline.
    AlreadyOffline(CpuId),
}

impl VectorError {
    /// The errno a kernel returns (positive): `ENOSPC` for exhaustion (as `request_irq` and
    /// `irq_set_affinity` do), `EINVAL` otherwise.
    pub const fn errno(&self) -> i32 {
        match self {
            Self::Exhausted(_) => errno::ENOSPC,
            _ => errno::EINVAL,
        }
    }
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuOutOfRange { cpu, nr_cpus } => {
                write!(f, "{cpu} out of range ({nr_cpus} CPUs)")
            }
            Self::NoOnlineCpu(m) => write!(f, "no online CPU in {m}"),
            Self::Exhausted(m) => write!(f, "no free vector on CPUs {m}"),
            Self::NotAllocated { cpu, vector } => {
                write!(f, "vector {vector:#04x} not allocated on {cpu}")
            }
            Self::AlreadyOnline(c) => write!(f, "{c} already online"),
            Self::AlreadyOffline(c) => write!(f, "{c} already offline"),
        }
    }
}

#[derive(Clone, Debug)]
struct PerCpu {
    online: bool,
    allocated: VectorSet,
}

/// The per-vCPU vector allocator.
#[derive(Clone, Debug)]
pub struct VectorMatrix {
    /// Device vectors (`0x20..=0xEA` minus system-reserved).
    allocatable: VectorSet,
    cpus: Vec<PerCpu>,
    reserved: u32,
}

impl VectorMatrix {
    /// A matrix of `nr_cpus` CPUs, all online, no vector allocated.
    pub fn new(nr_cpus: u32, config: &VectorConfig) -> Self {
        let mut allocatable =
            VectorSet::from_range(FIRST_EXTERNAL_VECTOR..=FIRST_SYSTEM_VECTOR - 1);
        for v in config.system_reserved.iter() {
            allocatable.remove(v);
        }
        let cpu = PerCpu {
            online: true,
            allocated: VectorSet::new(),
        };
        VectorMatrix {
            allocatable,
            cpus: (0..nr_cpus).map(|_| cpu.clone()).collect(),
            reserved: 0,
        }
    }

    /// Number of CPUs.
    pub fn nr_cpus(&self) -> u32 {
        // Built from a u32 count.
        self.cpus.len() as u32
    }

    /// The device vectors of every CPU.
    pub fn allocatable(&self) -> VectorSet {
        self.allocatable
    }

    /// Device vectors per CPU.
    pub fn capacity(&self) -> u32 {
        self.allocatable.len()
    }

    fn cpu(&self, cpu: CpuId) -> Result<&PerCpu, VectorError> {
        usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.cpus.get(i))
            .ok_or(VectorError::CpuOutOfRange {
                cpu,
                nr_cpus: self.nr_cpus(),
            })
    }

    fn cpu_mut(&mut self, cpu: CpuId) -> Result<&mut PerCpu, VectorError> {
        let nr_cpus = self.nr_cpus();
        usize::try_from(cpu.0)
            .ok()
            .and_then(|i| self.cpus.get_mut(i))
            .ok_or(VectorError::CpuOutOfRange { cpu, nr_cpus })
    }

    /// Checks that `cpu` exists.
    pub fn check_cpu(&self, cpu: CpuId) -> Result<(), VectorError> {
        self.cpu(cpu).map(|_| ())
    }

    /// Whether `cpu` exists and is online.
    pub fn is_online(&self, cpu: CpuId) -> bool {
        self.cpu(cpu).is_ok_and(|c| c.online)
    }

    /// The online CPUs.
    pub fn online_mask(&self) -> CpuMask {
        (0..self.nr_cpus())
            .map(CpuId)
            .filter(|&c| self.is_online(c))
            .collect()
    }

    /// Free device vectors on `cpu`.
    pub fn available(&self, cpu: CpuId) -> Result<u32, VectorError> {
        let c = self.cpu(cpu)?;
        Ok(self.capacity() - c.allocated.len())
    }

    /// Allocated device vectors on `cpu`.
    pub fn allocated(&self, cpu: CpuId) -> Result<u32, VectorError> {
        Ok(self.cpu(cpu)?.allocated.len())
    }

    /// Whether `vector` is allocated on `cpu` (false for a CPU that does not exist).
    pub fn is_allocated(&self, cpu: CpuId, vector: u8) -> bool {
        self.cpu(cpu).is_ok_and(|c| c.allocated.contains(vector))
    }

    /// Number of reservations held (reservation mode).
    pub fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Takes a reservation (`irq_matrix_reserve`): no vector is consumed.
    pub fn reserve(&mut self) {
        self.reserved = self.reserved.saturating_add(1);
    }

    /// Gives a reservation back (`irq_matrix_remove_reserved`).
    pub fn remove_reserved(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// The online CPU of `mask` with the most free vectors (lowest number on ties), and that
    /// number (`matrix_find_best_cpu`).
    pub fn best_cpu(&self, mask: &CpuMask) -> Result<(CpuId, u32), VectorError> {
        let mut best: Option<(CpuId, u32)> = None;
        for cpu in mask.iter() {
            self.check_cpu(cpu)?;
            if !self.is_online(cpu) {
                continue;
            }
            let avail = self.available(cpu)?;
            if best.is_none_or(|(_, b)| avail > b) {
                best = Some((cpu, avail));
            }
        }
        best.ok_or_else(|| VectorError::NoOnlineCpu(mask.clone()))
    }

    /// Allocates the lowest free device vector on the best CPU of `mask` (`irq_matrix_alloc`).
    pub fn alloc(&mut self, mask: &CpuMask) -> Result<(CpuId, u8), VectorError> {
        let (cpu, avail) = self.best_cpu(mask)?;
        if avail == 0 {
            return Err(VectorError::Exhausted(mask.and(&self.online_mask())));
        }
        let allocatable = self.allocatable;
        let c = self.cpu_mut(cpu)?;
        let vector = allocatable
            .iter()
            .find(|&v| !c.allocated.contains(v))
            .ok_or_else(|| VectorError::Exhausted(CpuMask::single(cpu)))?;
        c.allocated.insert(vector);
        Ok((cpu, vector))
    }

    /// Frees `vector` on `cpu` (online or not) (`irq_matrix_free`).
    pub fn free(&mut self, cpu: CpuId, vector: u8) -> Result<(), VectorError> {
        if !self.cpu_mut(cpu)?.allocated.remove(vector) {
            return Err(VectorError::NotAllocated { cpu, vector });
        }
        Ok(())
    }

    /// Marks `cpu` online (`irq_matrix_online`).
    pub fn set_online(&mut self, cpu: CpuId) -> Result<(), VectorError> {
        let c = self.cpu_mut(cpu)?;
        if c.online {
            return Err(VectorError::AlreadyOnline(cpu));
        }
        c.online = true;
        Ok(())
    }

    /// Marks `cpu` offline (`irq_matrix_offline`): it is no longer chosen; its allocated vectors
    /// stay allocated until freed.
    pub fn set_offline(&mut self, cpu: CpuId) -> Result<(), VectorError> {
        let c = self.cpu_mut(cpu)?;
        if !c.online {
            return Err(VectorError::AlreadyOffline(cpu));
        }
        c.online = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(cpus: &[u32]) -> CpuMask {
        cpus.iter().copied().map(CpuId).collect()
    }

    #[test]
    fn default_device_vectors_exclude_isa_and_0x80() {
        let m = VectorMatrix::new(1, &VectorConfig::default());
        // 0x20..=0xEA is 203 vectors; minus 16 ISA and 0x80.
        assert_eq!(m.capacity(), 203 - 16 - 1);
        let a = m.allocatable();
        assert!(a.contains(0x20) && a.contains(0x2F) && a.contains(0x40) && a.contains(0xEA));
        assert!(!a.contains(0x1F) && !a.contains(0x30) && !a.contains(0x3F));
        assert!(!a.contains(0x80) && !a.contains(0xEB) && !a.contains(SHUTDOWN_VECTOR));
    }

    #[test]
    fn reserved_set_is_configurable() {
        let cfg = VectorConfig {
            system_reserved: VectorSet::from_range(0x20..=0xE9),
        };
        let mut m = VectorMatrix::new(1, &cfg);
        assert_eq!(m.capacity(), 1);
        assert_eq!(m.alloc(&mask(&[0])), Ok((CpuId(0), 0xEA)));
        let cfg = VectorConfig {
            system_reserved: VectorSet::new(),
        };
        assert_eq!(VectorMatrix::new(1, &cfg).capacity(), 203);
    }

    #[test]
    fn lowest_free_vector_skipping_reserved() {
        let mut m = VectorMatrix::new(1, &VectorConfig::default());
        let got: Vec<u8> = (0..18).map(|_| m.alloc(&mask(&[0])).unwrap().1).collect();
        let mut expected: Vec<u8> = (0x20..=0x2F).collect();
        expected.extend([0x40, 0x41]);
        assert_eq!(got, expected);
        m.free(CpuId(0), 0x25).unwrap();
        assert_eq!(m.alloc(&mask(&[0])), Ok((CpuId(0), 0x25)));
    }

    #[test]
    fn best_cpu_is_least_loaded_online_cpu_in_mask() {
        let mut m = VectorMatrix::new(4, &VectorConfig::default());
        assert_eq!(m.alloc(&mask(&[0, 1, 2, 3])), Ok((CpuId(0), 0x20)));
        assert_eq!(m.alloc(&mask(&[0, 1, 2, 3])), Ok((CpuId(1), 0x20)));
        assert_eq!(m.alloc(&mask(&[0, 1])), Ok((CpuId(0), 0x21)));
        assert_eq!(m.alloc(&mask(&[0, 1])), Ok((CpuId(1), 0x21)));
        // CPU 2 offline: skipped although least loaded.
        m.set_offline(CpuId(2)).unwrap();
        assert_eq!(m.alloc(&mask(&[1, 2, 3])), Ok((CpuId(3), 0x20)));
        assert_eq!(m.best_cpu(&mask(&[1, 2])), Ok((CpuId(1), m.capacity() - 2)));
        assert_eq!(
            m.alloc(&mask(&[2])),
            Err(VectorError::NoOnlineCpu(mask(&[2])))
        );
        assert_eq!(
            m.alloc(&mask(&[9])),
            Err(VectorError::CpuOutOfRange {
                cpu: CpuId(9),
                nr_cpus: 4
            })
        );
        assert_eq!(
            m.alloc(&CpuMask::new()),
            Err(VectorError::NoOnlineCpu(CpuMask::new()))
        );
    }

    #[test]
    fn exhaustion_is_an_error_with_enospc() {
        let cfg = VectorConfig {
            system_reserved: VectorSet::from_range(0x22..=0xEA),
        };
        let mut m = VectorMatrix::new(2, &cfg);
        for _ in 0..4 {
            m.alloc(&mask(&[0, 1])).unwrap();
        }
        let err = m.alloc(&mask(&[0, 1])).unwrap_err();
        assert_eq!(err, VectorError::Exhausted(mask(&[0, 1])));
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(m.available(CpuId(0)), Ok(0));
        m.free(CpuId(1), 0x21).unwrap();
        assert_eq!(m.alloc(&mask(&[0, 1])), Ok((CpuId(1), 0x21)));
    }

    #[test]
    fn offline_cpu_keeps_vectors_until_freed_and_can_return() {
        let mut m = VectorMatrix::new(2, &VectorConfig::default());
        let (c, v) = m.alloc(&mask(&[1])).unwrap();
        m.set_offline(CpuId(1)).unwrap();
        assert_eq!(
            m.set_offline(CpuId(1)),
            Err(VectorError::AlreadyOffline(CpuId(1)))
        );
        assert!(m.is_allocated(c, v));
        assert_eq!(m.online_mask(), mask(&[0]));
        m.free(c, v).unwrap();
        assert_eq!(
            m.free(c, v),
            Err(VectorError::NotAllocated { cpu: c, vector: v })
        );
        m.set_online(CpuId(1)).unwrap();
        assert_eq!(
            m.set_online(CpuId(1)),
            Err(VectorError::AlreadyOnline(CpuId(1)))
        );
        assert_eq!(m.alloc(&mask(&[1])), Ok((CpuId(1), 0x20)));
    }

    #[test]
    fn reservations_consume_no_vector() {
        let mut m = VectorMatrix::new(1, &VectorConfig::default());
        let before = m.available(CpuId(0)).unwrap();
        m.reserve();
        m.reserve();
        assert_eq!(m.reserved(), 2);
        assert_eq!(m.available(CpuId(0)), Ok(before));
        m.remove_reserved();
        assert_eq!(m.reserved(), 1);
    }

    #[test]
    fn vector_set_operations() {
        let mut s = VectorSet::new();
        assert!(s.insert(0) && s.insert(63) && s.insert(64) && s.insert(255));
        assert!(!s.insert(255));
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 63, 64, 255]);
        assert!(s.remove(63) && !s.remove(63));
        assert_eq!(alloc::format!("{s:?}"), "{0x00, 0x40, 0xff}");
    }
}

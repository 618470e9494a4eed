//! Logical CPU numbers and CPU sets.

use alloc::collections::BTreeSet;
use core::fmt;

/// A logical CPU number, like Linux's `cpu` ids: an index into the vCPU list the interrupt
/// subsystem was configured with (not an APIC id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u32);

impl fmt::Debug for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// A set of logical CPUs (Linux's `struct cpumask`), ordered by CPU number.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct CpuMask(BTreeSet<CpuId>);

impl CpuMask {
    /// The empty set.
    pub const fn new() -> Self {
        CpuMask(BTreeSet::new())
    }

    /// The set holding only `cpu`.
    pub fn single(cpu: CpuId) -> Self {
        let mut m = Self::new();
        m.insert(cpu);
        m
    }

    /// CPUs `0..n`.
    pub fn first_n(n: u32) -> Self {
        (0..n).map(CpuId).collect()
    }

    /// Adds `cpu`; returns whether it was absent.
    pub fn insert(&mut self, cpu: CpuId) -> bool {
        self.0.insert(cpu)
    }

    /// Removes `cpu`; returns whether it was present.
    pub fn remove(&mut self, cpu: CpuId) -> bool {
        self.0.remove(&cpu)
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: CpuId) -> bool {
        self.0.contains(&cpu)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The lowest CPU of the set.
    pub fn first(&self) -> Option<CpuId> {
        self.0.first().copied()
    }

    /// The largest CPU of the set.
    pub fn last(&self) -> Option<CpuId> {
        self.0.last().copied()
    }

    /// The CPUs, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = CpuId> + '_ {
        self.0.iter().copied()
    }

    /// The intersection of two sets (`cpumask_and`).
    pub fn and(&self, other: &CpuMask) -> CpuMask {
        CpuMask(self.0.intersection(&other.0).copied().collect())
    }

    /// Whether every CPU of `self` is in `other` (`cpumask_subset`).
    pub fn is_subset(&self, other: &CpuMask) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<CpuId> for CpuMask {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> Self {
        CpuMask(iter.into_iter().collect())
    }
}

impl fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for CpuMask {
    /// Linux's cpulist format: `0-2,5`; `(none)` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let mut first = true;
        let mut iter = self.iter().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while let Some(&next) = iter.peek() {
                if Some(next.0) == end.0.checked_add(1) {
                    end = next;
                    iter.next();
                } else {
                    break;
                }
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{}", start.0)?;
            } else {
                write!(f, "{}-{}", start.0, end.0)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn cpulist_format() {
        let m: CpuMask = [0, 1, 2, 5, 7, 8].into_iter().map(CpuId).collect();
        assert_eq!(format!("{m}"), "0-2,5,7-8");
        assert_eq!(format!("{}", CpuMask::new()), "(none)");
        assert_eq!(
            format!("{}", CpuMask::single(CpuId(u32::MAX))),
            "4294967295"
        );
    }

    #[test]
    fn set_operations() {
        let a = CpuMask::first_n(4);
        let b: CpuMask = [CpuId(2), CpuId(3), CpuId(9)].into_iter().collect();
        assert_eq!(a.and(&b), [CpuId(2), CpuId(3)].into_iter().collect());
        assert!(a.and(&b).is_subset(&a));
        assert!(!b.is_subset(&a));
        assert_eq!(b.first(), Some(CpuId(2)));
        assert_eq!(b.last(), Some(CpuId(9)));
        assert_eq!(a.len(), 4);
        let mut c = a.clone();
        assert!(c.remove(CpuId(0)));
        assert!(!c.remove(CpuId(0)));
        assert!(!c.contains(CpuId(0)));
        assert!(c.insert(CpuId(0)));
        assert_eq!(c, a);
    }
}

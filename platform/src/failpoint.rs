//! Failure injection for the hypervisor-side models ([`kvm`](crate::kvm), [`vfio`](crate::vfio)).
//!
//! A [`FailPoint`] is armed with a count N; the next N operations it guards fail with an
//! "injected" error and change nothing. Host-side adapters map those errors onto the backend
//! failures of their own traits, so unwinding (VIR-ACT-H-007, VIR-AFF-H-004) can be tested.

/// A counter of operations still to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailPoint {
    remaining: u32,
    fired: u64,
}

impl FailPoint {
    /// Makes the next `count` guarded operations fail (replacing any previous arming).
    pub fn arm(&mut self, count: u32) {
        self.remaining = count;
    }

    /// Operations still to fail.
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }

    /// How many operations this point has failed so far.
    pub const fn fired(&self) -> u64 {
        self.fired
    }

    /// Consumes one armed failure: `true` if the guarded operation must fail now.
    pub fn trip(&mut self) -> bool {
        if self.remaining == 0 {
            return false;
        }
        self.remaining -= 1;
        self.fired += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_exactly_n_times() {
        let mut fp = FailPoint::default();
        assert!(!fp.trip());
        fp.arm(2);
        assert_eq!(fp.remaining(), 2);
        assert!(fp.trip());
        assert!(fp.trip());
        assert!(!fp.trip());
        assert_eq!(fp.fired(), 2);
        assert_eq!(fp.remaining(), 0);
    }
}

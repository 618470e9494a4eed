//! What the guest wrote to I/O ports during a run.

use vir_host::PioOutcome;

/// One port write the VMM served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoWrite {
    /// A value written to [`crate::REPORT_PORT`].
    Report(u32),
    /// A write handed to the reference host's doorbell binding.
    Host {
        /// The port.
        port: u16,
        /// The value.
        value: u32,
        /// What the host did with it.
        outcome: PioOutcome,
    },
}

/// The port writes of a run, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoLog {
    /// Every write, in order.
    pub writes: Vec<IoWrite>,
}

impl IoLog {
    /// The values written to the report port, in order.
    pub fn reports(&self) -> Vec<u32> {
        self.writes
            .iter()
            .filter_map(|w| match w {
                IoWrite::Report(v) => Some(*v),
                IoWrite::Host { .. } => None,
            })
            .collect()
    }

    /// The outcomes of the writes the host served, in order.
    pub fn host_outcomes(&self) -> Vec<PioOutcome> {
        self.writes
            .iter()
            .filter_map(|w| match w {
                IoWrite::Host { outcome, .. } => Some(*outcome),
                IoWrite::Report(_) => None,
            })
            .collect()
    }
}

//! Counters a VMM exposes: calls per code, statuses returned, binding events.
//!
//! Kept per VM and summed over the host ([`Host::counters`](crate::Host::counters)). Counters
//! are observability, not host state in the sense of VIR-CALL-H-006: a failing call is counted.

use core::fmt;

use vir_abi::call::CallCode;
use vir_abi::status::Status;

const NCALLS: usize = CallCode::V1.len();
const NSTATUS: usize = Status::ALL.len();

/// Which binding carried a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// The memory-binding core called directly by the VMM ([`Host::handle_call`](crate::Host::handle_call)).
    Memory,
    /// x86 `VMCALL` / `VMMCALL`.
    Register,
    /// Port-I/O doorbell.
    Doorbell,
}

/// Call and binding counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    calls: [u64; NCALLS],
    unknown_calls: u64,
    statuses: [u64; NSTATUS],
    by_binding: [u64; 3],
    doorbell_ignored: u64,
    response_write_failures: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: [0; NCALLS],
            unknown_calls: 0,
            statuses: [0; NSTATUS],
            by_binding: [0; 3],
            doorbell_ignored: 0,
            response_write_failures: 0,
        }
    }
}

fn binding_index(b: Binding) -> usize {
    match b {
        Binding::Memory => 0,
        Binding::Register => 1,
        Binding::Doorbell => 2,
    }
}

impl Counters {
    pub(crate) fn record(&mut self, binding: Binding, code: CallCode, status: Status) {
        match CallCode::V1.iter().position(|&c| c == code) {
            Some(i) => self.calls[i] += 1,
            None => self.unknown_calls += 1,
        }
        if let Some(slot) = self.statuses.get_mut(status.0 as usize) {
            *slot += 1;
        }
        self.by_binding[binding_index(binding)] += 1;
    }

    pub(crate) fn record_doorbell_ignored(&mut self) {
        self.doorbell_ignored += 1;
    }

    pub(crate) fn record_response_write_failure(&mut self) {
        self.response_write_failures += 1;
    }

    /// Calls made with a version 1 `code` (0 for any other code).
    pub fn calls(&self, code: CallCode) -> u64 {
        CallCode::V1
            .iter()
            .position(|&c| c == code)
            .map_or(0, |i| self.calls[i])
    }

    /// Calls made with a code version 1 does not define.
    pub fn unknown_calls(&self) -> u64 {
        self.unknown_calls
    }

    /// Calls in total.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum::<u64>() + self.unknown_calls
    }

    /// Times `status` was returned.
    pub fn statuses(&self, status: Status) -> u64 {
        self.statuses.get(status.0 as usize).copied().unwrap_or(0)
    }

    /// Calls carried by `binding`.
    pub fn by_binding(&self, binding: Binding) -> u64 {
        self.by_binding[binding_index(binding)]
    }

    /// Doorbell rings (and stray doorbell port writes) ignored.
    pub fn doorbell_ignored(&self) -> u64 {
        self.doorbell_ignored
    }

    /// Responses that could not be written after a successful call (only with a guest memory
    /// whose `check_range` disagrees with its writes).
    pub fn response_write_failures(&self) -> u64 {
        self.response_write_failures
    }

    /// Non-zero call counts, in code order (unknown codes last as `None`).
    pub fn call_counts(&self) -> impl Iterator<Item = (Option<CallCode>, u64)> + '_ {
        CallCode::V1
            .iter()
            .zip(self.calls.iter())
            .map(|(&c, &n)| (Some(c), n))
            .chain(core::iter::once((None, self.unknown_calls)))
            .filter(|&(_, n)| n != 0)
    }

    /// Non-zero status counts, in status order.
    pub fn status_counts(&self) -> impl Iterator<Item = (Status, u64)> + '_ {
        Status::ALL
            .iter()
            .zip(self.statuses.iter())
            .map(|(&s, &n)| (s, n))
            .filter(|&(_, n)| n != 0)
    }

    /// Add `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.calls.iter_mut().zip(other.calls.iter()) {
            *a += b;
        }
        for (a, b) in self.statuses.iter_mut().zip(other.statuses.iter()) {
            *a += b;
        }
        for (a, b) in self.by_binding.iter_mut().zip(other.by_binding.iter()) {
            *a += b;
        }
        self.unknown_calls += other.unknown_calls;
        self.doorbell_ignored += other.doorbell_ignored;
        self.response_write_failures += other.response_write_failures;
    }
}

impl fmt::Display for Counters {
    /// A summary, one `name count` pair per line: calls, then statuses, then binding events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (code, n) in self.call_counts() {
            match code {
                Some(c) => writeln!(f, "call {c} {n}")?,
                None => writeln!(f, "call unknown {n}")?,
            }
        }
        for (s, n) in self.status_counts() {
            writeln!(f, "status {} {n}", s.name().unwrap_or("?"))?;
        }
        writeln!(f, "binding memory {}", self.by_binding(Binding::Memory))?;
        writeln!(f, "binding register {}", self.by_binding(Binding::Register))?;
        writeln!(f, "binding doorbell {}", self.by_binding(Binding::Doorbell))?;
        writeln!(f, "doorbell ignored {}", self.doorbell_ignored)?;
        writeln!(
            f,
            "response write failures {}",
            self.response_write_failures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_statuses_and_bindings() {
        let mut c = Counters::default();
        c.record(Binding::Register, CallCode::QUERY, Status::SUCCESS);
        c.record(Binding::Doorbell, CallCode::ALLOCATE, Status::TABLE_FULL);
        c.record(Binding::Memory, CallCode(0x77), Status::UNKNOWN_CALL);
        c.record_doorbell_ignored();
        assert_eq!(c.calls(CallCode::QUERY), 1);
        assert_eq!(c.calls(CallCode::ALLOCATE), 1);
        assert_eq!(c.calls(CallCode::FREE), 0);
        assert_eq!(c.calls(CallCode(0x77)), 0);
        assert_eq!(c.unknown_calls(), 1);
        assert_eq!(c.total_calls(), 3);
        assert_eq!(c.statuses(Status::TABLE_FULL), 1);
        assert_eq!(c.statuses(Status(999)), 0);
        assert_eq!(c.by_binding(Binding::Register), 1);
        let mut sum = Counters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.statuses(Status::SUCCESS), 2);
        assert_eq!(sum.doorbell_ignored(), 2);
        assert_eq!(
            c.to_string(),
            "call QUERY 1\ncall ALLOCATE 1\ncall unknown 1\nstatus SUCCESS 1\nstatus UNKNOWN_CALL 1\n\
             status TABLE_FULL 1\nbinding memory 1\nbinding register 1\nbinding doorbell 1\n\
             doorbell ignored 1\nresponse write failures 0\n"
        );
    }
}

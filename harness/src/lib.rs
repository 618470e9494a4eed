//! # vir-harness — fuzz target bodies and their corpora
//!
//! The cargo-fuzz targets in `fuzz/` are thin: each hands its input to [`fuzz::run`] (through
//! one of the per-target functions of [`fuzz`]) and panics on a [`Finding`]. The bodies live
//! here, in an ordinary workspace crate, so that a normal `#[test]` replays every committed
//! corpus and crash artifact on the stable toolchain (`tests/corpus.rs`), and so that the seed
//! corpora are generated from readable descriptions ([`corpus`]) instead of committed blobs
//! nobody can review.
//!
//! | target | body | what it checks |
//! |---|---|---|
//! | `decode_wire` | [`decode::decode_wire`] | every wire structure, the doorbell block, RAX and the CPUID info leaf: never panics, round trip |
//! | `decode_hw` | [`decode::decode_hw`] | every hardware format of `vir_abi::hw`: never panics, round trip modulo don't-care bits |
//! | `host_calls` | [`calls::host_calls`] | raw call sequences from two VMs through the three bindings: statuses, atomicity, isolation, IRTE/SID invariants, quotas |
//! | `toctou` | [`toctou::toctou`] | request buffers changing under the host: read once, decision equals a fresh host's on the first-read bytes |
//! | `hostile_storage` | [`hostile::hostile_storage`] | forged messages from a hostile guest's devices are blocked or reach only that guest's own vectors |
//!
//! Input formats are documented with each body; [`input::Input`] reads them and
//! [`input::Encoder`] writes them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod calls;
pub mod corpus;
pub mod decode;
pub mod hostile;
pub mod input;
pub mod invariants;
pub mod toctou;
pub mod world;

use core::fmt;

pub use calls::HostFinding;
pub use decode::DecodeFinding;
pub use hostile::StorageFinding;
pub use invariants::InvariantViolation;
pub use toctou::ToctouFinding;

/// A fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Wire structures and the doorbell block.
    DecodeWire,
    /// Hardware formats.
    DecodeHw,
    /// Raw host calls from two VMs.
    HostCalls,
    /// Request buffers changing while the host reads them.
    Toctou,
    /// A hostile guest programming arbitrary messages into its interrupt storage.
    HostileStorage,
}

impl Target {
    /// Every target, in the order of the table above.
    pub const ALL: [Target; 5] = [
        Target::DecodeWire,
        Target::DecodeHw,
        Target::HostCalls,
        Target::Toctou,
        Target::HostileStorage,
    ];

    /// The cargo-fuzz target name (and the directory name under `fuzz/corpus/` and
    /// `fuzz/artifacts/`).
    pub const fn name(self) -> &'static str {
        match self {
            Target::DecodeWire => "decode_wire",
            Target::DecodeHw => "decode_hw",
            Target::HostCalls => "host_calls",
            Target::Toctou => "toctou",
            Target::HostileStorage => "hostile_storage",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Run the target's body on `data`.
    pub fn run(self, data: &[u8]) -> Result<Outcome, Finding> {
        Ok(match self {
            Target::DecodeWire => Outcome::Decode(decode::decode_wire(data)?),
            Target::DecodeHw => Outcome::Decode(decode::decode_hw(data)?),
            Target::HostCalls => Outcome::Calls(calls::host_calls(data)?),
            Target::Toctou => Outcome::Toctou(toctou::toctou(data)?),
            Target::HostileStorage => Outcome::Storage(hostile::hostile_storage(data)?),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a body reports when it finds nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A decode target.
    Decode(decode::DecodeReport),
    /// `host_calls`.
    Calls(calls::CallsReport),
    /// `toctou`.
    Toctou(toctou::ToctouReport),
    /// `hostile_storage`.
    Storage(hostile::StorageReport),
}

/// Something a body found wrong: a bug in the code under test (or a harness bug to fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// A decode target's finding.
    Decode(DecodeFinding),
    /// `host_calls`'s finding.
    Host(HostFinding),
    /// `toctou`'s finding.
    Toctou(ToctouFinding),
    /// `hostile_storage`'s finding.
    Storage(StorageFinding),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Decode(x) => write!(f, "decode: {x}"),
            Finding::Host(x) => write!(f, "host: {x}"),
            Finding::Toctou(x) => write!(f, "toctou: {x}"),
            Finding::Storage(x) => write!(f, "storage: {x}"),
        }
    }
}

impl std::error::Error for Finding {}

impl From<DecodeFinding> for Finding {
    fn from(f: DecodeFinding) -> Self {
        Finding::Decode(f)
    }
}

impl From<HostFinding> for Finding {
    fn from(f: HostFinding) -> Self {
        Finding::Host(f)
    }
}

impl From<ToctouFinding> for Finding {
    fn from(f: ToctouFinding) -> Self {
        Finding::Toctou(f)
    }
}

impl From<StorageFinding> for Finding {
    fn from(f: StorageFinding) -> Self {
        Finding::Storage(f)
    }
}

/// The entry points of the cargo-fuzz targets: each runs one body and panics on a finding, which
/// is how libFuzzer learns about it (a panic aborts the process and the input is saved under
/// `fuzz/artifacts/<target>/`).
pub mod fuzz {
    use super::Target;

    /// Run `target` on `data`; panic with the finding if there is one.
    ///
    /// # Panics
    /// On a finding (deliberately: this is the fuzzer's crash signal).
    pub fn run(target: Target, data: &[u8]) {
        if let Err(f) = target.run(data) {
            panic!("{target}: {f}");
        }
    }

    /// The `decode_wire` target.
    pub fn decode_wire(data: &[u8]) {
        run(Target::DecodeWire, data)
    }

    /// The `decode_hw` target.
    pub fn decode_hw(data: &[u8]) {
        run(Target::DecodeHw, data)
    }

    /// The `host_calls` target.
    pub fn host_calls(data: &[u8]) {
        run(Target::HostCalls, data)
    }

    /// The `toctou` target.
    pub fn toctou(data: &[u8]) {
        run(Target::Toctou, data)
    }

    /// The `hostile_storage` target.
    pub fn hostile_storage(data: &[u8]) {
        run(Target::HostileStorage, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        assert_eq!(Target::from_name("nope"), None);
    }
}

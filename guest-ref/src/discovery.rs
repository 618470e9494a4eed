//! Discovery of the vIR interface (x86 binding), see [`vir_abi::discovery`].
//!
//! 1. CPUID.1:ECX\[31\] (hypervisor present) is checked first (`VIR-DISC-G-001`). On bare metal
//!    it is 0 and the hypervisor range is never read: there, an Intel CPU answers a leaf above its
//!    highest basic leaf with the data of that highest leaf, which could look like anything.
//! 2. The bases `0x4000_0000 + k * 0x100`, `k` in `0..256`, are scanned in increasing order for the
//!    vIR signature; the first match wins.
//! 3. The info leaf (`base + 1`) is decoded and must offer a version this guest speaks.
//!
//! vIR calls are made by the kernel only. With the doorbell offered, the kernel refuses user
//! mode any I/O-permission grant covering the doorbell ports
//! ([`VirInterface::user_io_grant_allowed`], `VIR-CALL-G-003`).

use core::fmt;
use core::ops::Range;
use vir_abi::VIR_VERSION_1;
use vir_abi::call::DOORBELL_PORT_COUNT;
use vir_abi::discovery::{
    self as abi_disc, CPUID_BASES, CPUID_INFO_OFFSET, CPUID_RANGE_FIRST, CPUID_STRIDE,
    CPUID1_ECX_HYPERVISOR, InfoLeaf, binding,
};

/// The four output registers of one CPUID query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuidResult {
    /// `EAX`.
    pub eax: u32,
    /// `EBX`.
    pub ebx: u32,
    /// `ECX`.
    pub ecx: u32,
    /// `EDX`.
    pub edx: u32,
}

/// Executes CPUID (the real instruction in a kernel, a table in tests).
pub trait Cpuid {
    /// The registers CPUID returns for `leaf` (`EAX` input) and `subleaf` (`ECX` input).
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult;
}

impl<C: Cpuid + ?Sized> Cpuid for &mut C {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        (**self).cpuid(leaf, subleaf)
    }
}

/// A vIR interface found in the hypervisor CPUID range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirInterface {
    /// The base leaf holding the signature.
    pub base: u32,
    /// The highest vIR leaf (base leaf `EAX`).
    pub max_leaf: u32,
    /// The decoded info leaf: versions, bindings, doorbell port.
    pub info: InfoLeaf,
}

impl VirInterface {
    /// The I/O ports the host claims for the doorbell binding, `port..port + 8`, when the info
    /// leaf offers it (whether or not this guest calls through it: the host decodes them on
    /// every vCPU). `u32` bounds, so a range ending at port `0xFFFF` is representable.
    pub fn doorbell_ports(&self) -> Option<Range<u32>> {
        if self.info.bindings & binding::PORT_DOORBELL == 0 {
            return None;
        }
        let first = u32::from(self.info.doorbell_port);
        Some(first..first + u32::from(DOORBELL_PORT_COUNT))
    }

    /// Whether the kernel may give user mode access to the `count` I/O ports from `first` (the
    /// check of an `ioperm` path; `iopl(3)` grants every port, `first` 0 and `count` 65536):
    /// not when the range covers a doorbell port, so that user-mode code cannot issue vIR
    /// calls (`VIR-CALL-G-003`). An empty range is always allowed.
    pub fn user_io_grant_allowed(&self, first: u16, count: u32) -> bool {
        let Some(doorbell) = self.doorbell_ports() else {
            return true;
        };
        let start = u32::from(first);
        let end = start.saturating_add(count);
        count == 0 || end <= doorbell.start || start >= doorbell.end
    }
}

/// What discovery found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// CPUID.1:ECX\[31\] is clear: no hypervisor, the hypervisor range was not read.
    BareMetal,
    /// A hypervisor without the vIR signature in any candidate base: legacy scheme only.
    HypervisorWithoutVir,
    /// vIR is offered.
    Vir(VirInterface),
}

/// Why a vIR signature was found but the interface is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The info leaf of the base carrying the signature is malformed.
    BadInfoLeaf {
        /// The base leaf.
        base: u32,
        /// The decoding error.
        error: abi_disc::DiscoveryError,
    },
    /// The offered version range does not contain a version this guest speaks.
    NoSupportedVersion {
        /// The base leaf.
        base: u32,
        /// Lowest version offered.
        min: u16,
        /// Highest version offered.
        max: u16,
    },
}

impl DiscoveryError {
    /// The errno a kernel reports for this error (positive): `ENODEV` (the interface is
    /// unusable, the guest stays on the legacy scheme).
    pub const fn errno(&self) -> i32 {
        vir_abi::status::errno::ENODEV
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadInfoLeaf { base, error } => {
                write!(f, "vIR info leaf {:#x}: {error}", base + CPUID_INFO_OFFSET)
            }
            Self::NoSupportedVersion { base, min, max } => write!(
                f,
                "vIR at {base:#x} offers versions {min}..={max}, guest speaks {VIR_VERSION_1}"
            ),
        }
    }
}

/// Runs discovery (`VIR-DISC-G-001`: leaf 1 first, the hypervisor range only if ECX\[31\] is set).
pub fn discover<C: Cpuid + ?Sized>(cpu: &mut C) -> Result<Platform, DiscoveryError> {
    if cpu.cpuid(1, 0).ecx & CPUID1_ECX_HYPERVISOR == 0 {
        return Ok(Platform::BareMetal);
    }
    for k in 0..CPUID_BASES {
        // k < 256 and stride 0x100: the base stays below 0x4001_0000, no overflow.
        let base = CPUID_RANGE_FIRST + k * CPUID_STRIDE;
        let r = cpu.cpuid(base, 0);
        if !abi_disc::is_vir_base(r.eax, r.ebx, r.ecx, r.edx, base) {
            continue;
        }
        let i = cpu.cpuid(base + CPUID_INFO_OFFSET, 0);
        let info = InfoLeaf::decode(i.eax, i.ebx, i.ecx, i.edx)
            .map_err(|error| DiscoveryError::BadInfoLeaf { base, error })?;
        if info.min_version > VIR_VERSION_1 || info.max_version < VIR_VERSION_1 {
            return Err(DiscoveryError::NoSupportedVersion {
                base,
                min: info.min_version,
                max: info.max_version,
            });
        }
        return Ok(Platform::Vir(VirInterface {
            base,
            max_leaf: r.eax,
            info,
        }));
    }
    Ok(Platform::HypervisorWithoutVir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use vir_abi::discovery::{binding, signature_regs};

    /// A CPUID table; unknown leaves answer like an Intel CPU: with the highest basic leaf.
    struct Table {
        leaves: BTreeMap<u32, CpuidResult>,
        highest_basic: u32,
        reads: Vec<u32>,
    }

    impl Cpuid for Table {
        fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> CpuidResult {
            self.reads.push(leaf);
            match self.leaves.get(&leaf) {
                Some(r) => *r,
                None => self
                    .leaves
                    .get(&self.highest_basic)
                    .copied()
                    .unwrap_or_default(),
            }
        }
    }

    fn vir_base_regs(base: u32) -> CpuidResult {
        let [ebx, ecx, edx] = signature_regs();
        CpuidResult {
            eax: base + 1,
            ebx,
            ecx,
            edx,
        }
    }

    fn info_regs(min: u16, max: u16, bindings: u32, port: u16) -> CpuidResult {
        let [eax, ebx, ecx, edx] = InfoLeaf {
            min_version: min,
            max_version: max,
            bindings,
            doorbell_port: port,
        }
        .encode();
        CpuidResult { eax, ebx, ecx, edx }
    }

    fn table(hypervisor_bit: bool, extra: &[(u32, CpuidResult)]) -> Table {
        let mut leaves = BTreeMap::new();
        leaves.insert(
            1,
            CpuidResult {
                ecx: if hypervisor_bit {
                    CPUID1_ECX_HYPERVISOR
                } else {
                    0
                },
                ..Default::default()
            },
        );
        for (l, r) in extra {
            leaves.insert(*l, *r);
        }
        Table {
            leaves,
            highest_basic: 0x16,
            reads: Vec::new(),
        }
    }

    #[test]
    fn vir_disc_g_001_bare_metal_never_reads_the_hypervisor_range() {
        // The highest basic leaf carries the vIR signature (what an Intel CPU would echo for
        // any leaf above it): a guest skipping the hypervisor bit would be fooled.
        let mut t = table(false, &[(0x16, vir_base_regs(0x4000_0000))]);
        t.leaves
            .insert(0x4000_0001, info_regs(1, 1, binding::VMCALL, 0));
        assert_eq!(discover(&mut t), Ok(Platform::BareMetal));
        assert_eq!(t.reads, [1], "only leaf 1 is read on bare metal");
    }

    #[test]
    fn vir_disc_g_001_hypervisor_bit_set_scans_and_finds_the_signature() {
        let mut t = table(
            true,
            &[
                (0x4000_0100, vir_base_regs(0x4000_0100)),
                (
                    0x4000_0101,
                    info_regs(1, 2, binding::VMCALL | binding::PORT_DOORBELL, 0x5650),
                ),
            ],
        );
        // Base 0x4000_0000 is another hypervisor's vendor leaf (KVM).
        t.leaves.insert(
            0x4000_0000,
            CpuidResult {
                eax: 0x4000_0001,
                ebx: u32::from_le_bytes(*b"KVMK"),
                ecx: u32::from_le_bytes(*b"VMKV"),
                edx: u32::from_le_bytes(*b"M\0\0\0"),
            },
        );
        let found = discover(&mut t).unwrap();
        assert_eq!(
            found,
            Platform::Vir(VirInterface {
                base: 0x4000_0100,
                max_leaf: 0x4000_0101,
                info: InfoLeaf {
                    min_version: 1,
                    max_version: 2,
                    bindings: binding::VMCALL | binding::PORT_DOORBELL,
                    doorbell_port: 0x5650,
                },
            })
        );
        assert_eq!(t.reads, [1, 0x4000_0000, 0x4000_0100, 0x4000_0101]);
    }

    #[test]
    fn hypervisor_without_signature_scans_all_256_bases() {
        let mut t = table(true, &[]);
        assert_eq!(discover(&mut t), Ok(Platform::HypervisorWithoutVir));
        assert_eq!(t.reads.len(), 1 + 256);
        assert_eq!(t.reads.last(), Some(&0x4000_ff00));
    }

    #[test]
    fn bad_info_leaf_and_unsupported_version_are_errors() {
        let mut t = table(
            true,
            &[
                (0x4000_0200, vir_base_regs(0x4000_0200)),
                (
                    0x4000_0201,
                    CpuidResult {
                        eax: 0x0001_0002,
                        ebx: 1,
                        ..Default::default()
                    },
                ),
            ],
        );
        assert_eq!(
            discover(&mut t),
            Err(DiscoveryError::BadInfoLeaf {
                base: 0x4000_0200,
                error: abi_disc::DiscoveryError::BadVersionRange { min: 2, max: 1 },
            })
        );
        let mut t = table(
            true,
            &[
                (0x4000_0200, vir_base_regs(0x4000_0200)),
                (0x4000_0201, info_regs(2, 3, binding::VMMCALL, 0)),
            ],
        );
        let err = discover(&mut t).unwrap_err();
        assert_eq!(
            err,
            DiscoveryError::NoSupportedVersion {
                base: 0x4000_0200,
                min: 2,
                max: 3
            }
        );
        assert_eq!(err.errno(), vir_abi::status::errno::ENODEV);
    }
}

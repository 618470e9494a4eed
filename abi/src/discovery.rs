//! Discovery: how a guest learns that vIR exists (x86 binding).
//!
//! 1. The guest reads CPUID leaf 1 and checks ECX bit 31 (hypervisor present). On bare metal this
//!    bit is 0, so the hypervisor range is never read there: on Intel parts a leaf above the
//!    highest basic leaf returns the data of that highest leaf, which could contain anything.
//! 2. It scans the bases `0x4000_0000 + k * 0x100`, `k` in `0..=255`, and looks for
//!    [`SIGNATURE`] in `EBX`, `ECX`, `EDX` of the base leaf, whose `EAX` is the highest vIR leaf
//!    (at least `base + 1`). Hypervisors keep their own vendor leaves at other bases.
//! 3. The info leaf `base + 1` reports the version range and the bindings offered
//!    ([`InfoLeaf`]).

/// First base of the hypervisor CPUID range.
pub const CPUID_RANGE_FIRST: u32 = 0x4000_0000;
/// Distance between candidate bases.
pub const CPUID_STRIDE: u32 = 0x100;
/// Number of candidate bases scanned.
pub const CPUID_BASES: u32 = 256;
/// Offset of the info leaf from the base leaf.
pub const CPUID_INFO_OFFSET: u32 = 1;
/// CPUID.1:ECX bit that a hypervisor sets and bare metal never sets.
pub const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The 12-byte signature in `EBX`, `ECX`, `EDX` (in that order) of the base leaf.
pub const SIGNATURE: [u8; 12] = *b"vIR IRQRemap";

/// The signature as the three register values (`EBX`, `ECX`, `EDX`), little-endian.
pub const fn signature_regs() -> [u32; 3] {
    let s = SIGNATURE;
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

/// Whether the registers of a base leaf carry the vIR signature and an info leaf. A `base`
/// whose info leaf would lie beyond `u32::MAX` has none: `false`, never an overflow.
pub const fn is_vir_base(eax: u32, ebx: u32, ecx: u32, edx: u32, base: u32) -> bool {
    let s = signature_regs();
    let Some(info) = base.checked_add(CPUID_INFO_OFFSET) else {
        return false;
    };
    ebx == s[0] && ecx == s[1] && edx == s[2] && eax >= info
}

/// Binding bits in the info leaf's `EBX`.
pub mod binding {
    /// Register binding with Intel `VMCALL`.
    pub const VMCALL: u32 = 1 << 0;
    /// Register binding with AMD `VMMCALL`.
    pub const VMMCALL: u32 = 1 << 1;
    /// Port-I/O doorbell binding (port base in the info leaf's `ECX` bits 15:0).
    pub const PORT_DOORBELL: u32 = 1 << 2;
    /// Every binding version 1 defines.
    pub const V1_DEFINED: u32 = 0x7;
}

/// The decoded info leaf (`base + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InfoLeaf {
    /// Lowest interface version offered (`EAX` bits 15:0).
    pub min_version: u16,
    /// Highest interface version offered (`EAX` bits 31:16).
    pub max_version: u16,
    /// Bindings offered ([`binding`] bits; `EBX`). Unknown bits are ignored by guests.
    pub bindings: u32,
    /// Doorbell port base (`ECX` bits 15:0), meaningful only with [`binding::PORT_DOORBELL`].
    pub doorbell_port: u16,
}

/// Why an info leaf is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryError {
    /// `min_version` is 0 or above `max_version`.
    BadVersionRange {
        /// The minimum reported.
        min: u16,
        /// The maximum reported.
        max: u16,
    },
    /// No binding this guest knows is offered.
    NoBinding(u32),
    /// The doorbell binding is offered with port 0.
    DoorbellWithoutPort,
}

impl core::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadVersionRange { min, max } => write!(f, "bad version range {min}..={max}"),
            Self::NoBinding(b) => write!(f, "no known binding offered (bindings {b:#x})"),
            Self::DoorbellWithoutPort => f.write_str("doorbell binding offered without a port"),
        }
    }
}

impl InfoLeaf {
    /// Decode the info leaf registers. Reserved bits (`ECX` 31:16, `EDX`) are ignored.
    pub const fn decode(
        eax: u32,
        ebx: u32,
        ecx: u32,
        _edx: u32,
    ) -> Result<InfoLeaf, DiscoveryError> {
        let min = (eax & 0xffff) as u16;
        let max = (eax >> 16) as u16;
        if min == 0 || min > max {
            return Err(DiscoveryError::BadVersionRange { min, max });
        }
        if ebx & binding::V1_DEFINED == 0 {
            return Err(DiscoveryError::NoBinding(ebx));
        }
        let port = (ecx & 0xffff) as u16;
        if ebx & binding::PORT_DOORBELL != 0 && port == 0 {
            return Err(DiscoveryError::DoorbellWithoutPort);
        }
        Ok(InfoLeaf {
            min_version: min,
            max_version: max,
            bindings: ebx,
            doorbell_port: port,
        })
    }

    /// Encode as (`EAX`, `EBX`, `ECX`, `EDX`).
    pub const fn encode(&self) -> [u32; 4] {
        [
            self.min_version as u32 | (self.max_version as u32) << 16,
            self.bindings,
            self.doorbell_port as u32,
            0,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_registers() {
        let r = signature_regs();
        assert_eq!(r[0], u32::from_le_bytes(*b"vIR "));
        assert!(is_vir_base(0x4000_0101, r[0], r[1], r[2], 0x4000_0100));
        assert!(
            !is_vir_base(0x4000_0100, r[0], r[1], r[2], 0x4000_0100),
            "no info leaf"
        );
        assert!(!is_vir_base(
            0x4000_0001,
            u32::from_le_bytes(*b"KVMK"),
            r[1],
            r[2],
            0x4000_0000
        ));
    }

    #[test]
    fn base_at_the_top_of_the_leaf_space_has_no_info_leaf() {
        // Found by the decode_wire fuzz target: `base + 1` overflowed (a panic with overflow
        // checks, and `eax >= 0`, i.e. a false vIR base, without them).
        let r = signature_regs();
        assert!(!is_vir_base(u32::MAX, r[0], r[1], r[2], u32::MAX));
        assert!(!is_vir_base(0, r[0], r[1], r[2], u32::MAX));
        assert!(is_vir_base(u32::MAX, r[0], r[1], r[2], u32::MAX - 1));
    }

    #[test]
    fn info_leaf_round_trip_and_errors() {
        let l = InfoLeaf {
            min_version: 1,
            max_version: 1,
            bindings: binding::VMCALL | binding::PORT_DOORBELL,
            doorbell_port: 0x5650,
        };
        let [a, b, c, d] = l.encode();
        assert_eq!(InfoLeaf::decode(a, b, c, d), Ok(l));
        assert_eq!(
            InfoLeaf::decode(0x0001_0002, 1, 0, 0),
            Err(DiscoveryError::BadVersionRange { min: 2, max: 1 })
        );
        assert_eq!(
            InfoLeaf::decode(0x0001_0001, 0x8, 0, 0),
            Err(DiscoveryError::NoBinding(8))
        );
        assert_eq!(
            InfoLeaf::decode(0x0001_0001, binding::PORT_DOORBELL, 0, 0),
            Err(DiscoveryError::DoorbellWithoutPort)
        );
    }
}

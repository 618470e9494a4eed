//! PCI configuration access through the legacy ports (`0xCF8` address, `0xCFC` data).

use crate::arch::{inl, outl};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub dev: u8,
    /// Function (0..8).
    pub func: u8,
}

impl Bdf {
    /// The requester id (bus << 8 | dev << 3 | func).
    pub fn rid(self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.dev) << 3) | u16::from(self.func)
    }

    fn address(self, offset: u8) -> u32 {
        (1 << 31) | (u32::from(self.rid()) << 8) | u32::from(offset & 0xFC)
    }

    /// Reads the dword at `offset` (rounded down to 4).
    pub fn read(self, offset: u8) -> u32 {
        outl(CONFIG_ADDRESS, self.address(offset));
        inl(CONFIG_DATA)
    }

    /// Writes the dword at `offset` (rounded down to 4).
    pub fn write(self, offset: u8, value: u32) {
        outl(CONFIG_ADDRESS, self.address(offset));
        outl(CONFIG_DATA, value);
    }
}

/// The functions present on bus 0 (function 0 of each device), with their vendor/device id.
pub fn scan_bus0() -> alloc::vec::Vec<(Bdf, u32)> {
    let mut found = alloc::vec::Vec::new();
    for dev in 0..32 {
        let bdf = Bdf {
            bus: 0,
            dev,
            func: 0,
        };
        let id = bdf.read(0);
        if id & 0xFFFF != 0xFFFF {
            found.push((bdf, id));
        }
    }
    found
}

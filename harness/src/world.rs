//! The fixture the host targets run on: two VMs on one reference host over the mock backends.
//!
//! The shape is fixed (so that findings replay) except for the few host-wide choices a fuzz input
//! makes through [`WorldConfig`]: remapped or posted delivery, xAPIC or x2APIC IRTE destinations,
//! the largest MSI block, the offered features and the doorbell. Each VM has its own guest RAM
//! with a hole, two vCPUs and two devices: one checked by requester id (every storage kind) and
//! one behind a PCIe-to-PCI bridge checked by bus range (MSI-X only). Quotas and the shared table
//! are small, so that `QUOTA_EXCEEDED`, `TABLE_FULL` and `VECTORS_EXHAUSTED` are reachable in a
//! few calls.

use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_host::testing::{MockHost, mock_host};
use vir_host::{
    DeviceConfig, HostConfig, IrMode, Quotas, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
    VmId,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::input::{Encoder, Input};

/// Guest RAM of each VM: `[0, RAM_LOW_END)` and `[RAM_HIGH_START, RAM_HIGH_END)`; the gap between
/// them is a hole (MMIO), and everything above `RAM_HIGH_END` is outside the VM.
pub const RAM_LOW_END: u64 = 0x4000;
/// Start of the second RAM range.
pub const RAM_HIGH_START: u64 = 0x6000;
/// End of the second RAM range.
pub const RAM_HIGH_END: u64 = 0x7000;
/// Entries of the shared physical remapping table.
pub const TABLE_SIZE: u32 = 40;
/// Physical CPUs of the host.
pub const PCPUS: u32 = 4;
/// Device vectors per physical CPU (small, so that moves can run out).
pub const VECTORS_PER_PCPU: u32 = 6;
/// Per-VM quotas: 24 IRTEs (the two VMs together can want more than the table holds), 8 host
/// vectors.
pub const QUOTAS: Quotas = Quotas {
    irtes: 24,
    vectors: 8,
};

/// Guest-visible id of each VM's first device (the same in both VMs: ids are per VM).
pub const DEV_MAIN: u32 = 0x0000_0100;
/// Guest-visible id of each VM's bridged device.
pub const DEV_BRIDGED: u32 = 0x0001_0808;
/// A device id no VM has.
pub const DEV_ABSENT: u32 = 0x0000_0200;

/// The two VMs' physical requester ids: main device, bridged device (bus range start..=end).
pub const REQUESTER_IDS: [(u16, (u8, u8)); 2] = [(0x3a00, (0x40, 0x41)), (0x3b00, (0x50, 0x50))];
/// The requester id the bridged device's requests carry (the bridge's bus).
pub const fn bridged_requester_id(vm: usize) -> u16 {
    let (_, (start, _)) = REQUESTER_IDS[vm % 2];
    (start as u16) << 8
}

/// Guest APIC ids of the two vCPUs of each VM.
pub const APIC_IDS: [[u32; 2]; 2] = [[0, 1], [0x10, 0x11]];

/// Storage of each VM's main device.
pub const MAIN_STORAGE: StorageSizes = StorageSizes {
    msi_vectors: 8,
    msix_entries: 16,
    ims_device_entries: 8,
    ims_system_entries: 8,
};
/// Storage of each VM's bridged device.
pub const BRIDGED_STORAGE: StorageSizes = StorageSizes {
    msi_vectors: 0,
    msix_entries: 4,
    ims_device_entries: 0,
    ims_system_entries: 0,
};

/// The host-wide choices a fuzz input makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorldConfig {
    /// Posted (`true`) or remapped delivery.
    pub posted: bool,
    /// x2APIC (`true`) or xAPIC IRTE destinations.
    pub x2apic: bool,
    /// Largest MSI block offered (log2, 0–5).
    pub max_msi_log2: u8,
    /// Features offered (a subset of the version 1 features).
    pub features: Features,
    /// Whether the doorbell binding is offered.
    pub doorbell: bool,
}

impl Default for WorldConfig {
    /// Posted, x2APIC, MSI blocks up to 8, every feature, doorbell on.
    fn default() -> Self {
        WorldConfig {
            posted: true,
            x2apic: true,
            max_msi_log2: 3,
            features: Features::V1_DEFINED,
            doorbell: true,
        }
    }
}

impl WorldConfig {
    /// Read a configuration (two bytes).
    pub fn read(input: &mut Input<'_>) -> Self {
        let flags = input.u8();
        let features = input.u8();
        WorldConfig {
            posted: flags & 1 == 0,
            x2apic: flags & 2 == 0,
            max_msi_log2: (flags >> 2) % 6,
            // Mostly everything: only when bit 6 of the flags is set does the byte choose.
            features: if flags & 0x40 == 0 {
                Features::V1_DEFINED
            } else {
                Features(u64::from(features)).intersection(Features::V1_DEFINED)
            },
            doorbell: flags & 0x80 == 0,
        }
    }

    /// Write this configuration as [`WorldConfig::read`] reads it.
    pub fn write(&self, enc: &mut Encoder) {
        let all = self.features == Features::V1_DEFINED;
        let flags = u8::from(!self.posted)
            | u8::from(!self.x2apic) << 1
            | (self.max_msi_log2 % 6) << 2
            | u8::from(!all) << 6
            | u8::from(!self.doorbell) << 7;
        enc.u8(flags).u8(self.features.bits() as u8);
    }

    /// The host configuration.
    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            ir_mode: if self.posted {
                IrMode::Posted
            } else {
                IrMode::Remapped
            },
            apic_mode: if self.x2apic {
                ApicMode::X2Apic
            } else {
                ApicMode::XApic
            },
            max_msi_log2: self.max_msi_log2.min(5),
            features_offered: self.features.intersection(Features::V1_DEFINED),
            doorbell_port: self.doorbell.then_some(HostConfig::DEFAULT_DOORBELL_PORT),
            ..HostConfig::default()
        }
    }
}

/// Posted-descriptor address of vCPU `vcpu` of VM `vm`.
pub const fn pda(vm: usize, vcpu: usize) -> u64 {
    0x10_0000 + (vm as u64) * 0x1000 + (vcpu as u64) * 0x40
}

/// The configuration of VM `vm` (0 or 1).
pub fn vm_config(vm: usize) -> VmConfig {
    let (rid, (start_bus, end_bus)) = REQUESTER_IDS[vm % 2];
    VmConfig {
        vcpus: APIC_IDS[vm % 2]
            .iter()
            .enumerate()
            .map(|(i, &apic_id)| VcpuConfig {
                apic_id,
                pda: pda(vm, i),
                pcpu: (vm as u32 * 2 + i as u32) % PCPUS,
            })
            .collect(),
        devices: vec![
            DeviceConfig {
                device_id: DEV_MAIN,
                requester_id: rid,
                source_validation: SourceValidation::RequesterId,
                storage: MAIN_STORAGE,
            },
            DeviceConfig {
                device_id: DEV_BRIDGED,
                // The host's id for the function behind the bridge; its requests carry the
                // bridge's bus, hence the bus-range check.
                requester_id: (u16::from(end_bus) << 8) | 0x08,
                source_validation: SourceValidation::BusRange { start_bus, end_bus },
                storage: BRIDGED_STORAGE,
            },
        ],
        quotas: QUOTAS,
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

/// Guest RAM with the hole described by [`RAM_LOW_END`]..[`RAM_HIGH_START`].
pub fn guest_memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), RAM_LOW_END as usize),
        (
            GuestAddress(RAM_HIGH_START),
            (RAM_HIGH_END - RAM_HIGH_START) as usize,
        ),
    ])
    .unwrap_or_else(|e| panic!("anonymous guest RAM for the fuzz world: {e}"))
}

/// The fixture: a mock host with two VMs and their guest memories.
pub struct World {
    /// The configuration it was built from.
    pub config: WorldConfig,
    /// The host.
    pub host: MockHost,
    /// The two VMs.
    pub vms: [VmId; 2],
    /// Their guest RAM.
    pub mems: [GuestMemoryMmap<()>; 2],
}

impl World {
    /// Build the fixture.
    ///
    /// # Panics
    /// Only if the fixed configuration is rejected (a harness bug, not a finding).
    pub fn new(config: WorldConfig) -> Self {
        let (mut host, _journal) =
            mock_host(config.host_config(), TABLE_SIZE, PCPUS, VECTORS_PER_PCPU)
                .unwrap_or_else(|e| panic!("fuzz world host config rejected: {e}"));
        let mut add = |vm: usize| {
            host.add_vm(vm_config(vm))
                .unwrap_or_else(|e| panic!("fuzz world VM {vm} rejected: {e}"))
        };
        let vms = [add(0), add(1)];
        World {
            config,
            host,
            vms,
            mems: [guest_memory(), guest_memory()],
        }
    }

    /// VM `i % 2`'s id.
    pub fn vm(&self, i: usize) -> VmId {
        self.vms[i % 2]
    }
}

impl core::fmt::Debug for World {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("World")
            .field("config", &self.config)
            .field("host", &self.host)
            .field("vms", &self.vms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_its_encoding() {
        for config in [
            WorldConfig::default(),
            WorldConfig {
                posted: false,
                x2apic: false,
                max_msi_log2: 5,
                features: Features::MSIX | Features::RESERVATION,
                doorbell: false,
            },
        ] {
            let mut enc = Encoder::new();
            config.write(&mut enc);
            let bytes = enc.finish();
            assert_eq!(WorldConfig::read(&mut Input::new(&bytes)), config);
        }
        assert_eq!(
            WorldConfig::read(&mut Input::new(&[])),
            WorldConfig {
                max_msi_log2: 0,
                ..WorldConfig::default()
            }
        );
    }

    #[test]
    fn world_builds_two_vms_with_distinct_requester_ids() {
        let w = World::new(WorldConfig::default());
        assert_eq!(w.vms.len(), 2);
        assert_ne!(w.vm(0), w.vm(1));
        assert_eq!(w.host.table_free(), TABLE_SIZE);
        let rid =
            |vm: usize, dev: usize| w.host.vm(w.vm(vm)).unwrap().config().devices[dev].requester_id;
        assert_eq!((rid(0, 0), rid(1, 0)), (0x3a00, 0x3b00));
        assert_eq!(bridged_requester_id(0), 0x4000);
        assert_eq!(bridged_requester_id(1), 0x5000);
    }
}

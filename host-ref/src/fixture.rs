//! Shared set-up of the unit tests: one mock host, one VM with three devices, guest RAM.

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{StorageKind, call_layout};
use vm_memory::GuestMemoryMmap;

use crate::backend::VmId;
use crate::config::{
    DeviceConfig, HostConfig, Quotas, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
};
use crate::snapshot::VmSnapshot;
use crate::testing::{
    Caller, Journal, MockHost, MockState, RESPONSE_FILL, guest_ram, mock_host, mock_state,
};

/// Device with MSI (8), MSI-X (16), IMS device (4), IMS system (64).
pub const DEV: u32 = 0x0000_0010;
/// Its physical requester id.
pub const RID: u16 = 0x8010;
/// Device with MSI-X only.
pub const DEV_MSIX_ONLY: u32 = 0x0000_0018;
/// Its physical requester id.
pub const RID_MSIX_ONLY: u16 = 0x8018;
/// Device behind a PCIe-to-PCI bridge, buses 0x40..=0x47, MSI-X 4.
pub const DEV_BRIDGED: u32 = 0x0000_0020;
/// Its physical requester id.
pub const RID_BRIDGED: u16 = 0x4008;

/// Guest APIC ids of the four vCPUs, their physical CPUs are 0..4 and PDAs 0x10_0000 + i*0x40.
pub const APIC_IDS: [u32; 4] = [0, 1, 0x100, 0x1234];

/// PDA of vCPU `i`.
pub fn pda(i: usize) -> u64 {
    0x10_0000 + 0x40 * i as u64
}

pub fn vm_config(quotas: Quotas) -> VmConfig {
    VmConfig {
        vcpus: APIC_IDS
            .iter()
            .enumerate()
            .map(|(i, &apic_id)| VcpuConfig {
                apic_id,
                pda: pda(i),
                pcpu: i as u32,
            })
            .collect(),
        devices: vec![
            DeviceConfig {
                device_id: DEV,
                requester_id: RID,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msi_vectors: 8,
                    msix_entries: 16,
                    ims_device_entries: 4,
                    ims_system_entries: 64,
                },
            },
            DeviceConfig {
                device_id: DEV_MSIX_ONLY,
                requester_id: RID_MSIX_ONLY,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msix_entries: 4,
                    ..Default::default()
                },
            },
            DeviceConfig {
                device_id: DEV_BRIDGED,
                requester_id: RID_BRIDGED,
                source_validation: SourceValidation::BusRange {
                    start_bus: 0x40,
                    end_bus: 0x47,
                },
                storage: StorageSizes {
                    msix_entries: 4,
                    ..Default::default()
                },
            },
        ],
        quotas,
        guest_writable: crate::config::GuestWritable::AllRam,
    }
}

pub struct Fx {
    pub host: MockHost,
    pub journal: Journal,
    pub mem: GuestMemoryMmap<()>,
    pub vm: VmId,
    pub g: Caller,
}

impl Fx {
    /// A legacy VM on a host with `config` and a table of `table_size` entries; pCPU APIC ids
    /// are `0x200 + cpu`.
    pub fn with(config: HostConfig, table_size: u32, quotas: Quotas) -> Fx {
        let (mut host, journal) = mock_host(config, table_size, 4, 200).unwrap();
        for cpu in 0..4 {
            host.irqs_mut().set_apic_id(cpu, 0x200 + cpu);
        }
        let vm = host.add_vm(vm_config(quotas)).unwrap();
        Fx {
            host,
            journal,
            mem: guest_ram(0x40_0000),
            vm,
            g: Caller::new(vm),
        }
    }

    /// A legacy VM, default host (posted mode).
    pub fn legacy() -> Fx {
        Fx::with(HostConfig::default(), 256, Quotas::default())
    }

    /// Negotiated with every v1 feature.
    pub fn negotiated() -> Fx {
        let mut fx = Fx::legacy();
        fx.negotiate(Features::V1_DEFINED);
        fx
    }

    /// Negotiated, remapped mode.
    pub fn remapped() -> Fx {
        let mut fx = Fx::with(
            HostConfig {
                ir_mode: crate::IrMode::Remapped,
                ..HostConfig::default()
            },
            256,
            Quotas::default(),
        );
        fx.negotiate(Features::V1_DEFINED);
        fx
    }

    pub fn negotiate(&mut self, features: Features) {
        let r = self
            .g
            .negotiate(&mut self.host, &self.mem, 1, features)
            .unwrap();
        assert_eq!(r.features.get(), features.bits());
    }

    pub fn snapshot(&self) -> VmSnapshot {
        self.host.snapshot(self.vm).unwrap()
    }

    pub fn state(&self) -> (VmSnapshot, MockState) {
        (self.snapshot(), mock_state(&self.host))
    }

    /// Allocate and return the handle.
    pub fn alloc(&mut self, device: u32, kind: StorageKind, log2: u8, index: u32) -> u32 {
        self.g
            .allocate(&mut self.host, &self.mem, device, kind, log2, index)
            .unwrap()
            .handle
            .get()
    }

    /// Allocate an MSI-X entry of DEV and activate it to vCPU 0 vector 0x41; the handle.
    pub fn active_msix(&mut self, index: u32) -> u32 {
        let h = self.alloc(DEV, StorageKind::MSIX, 0, index);
        self.g
            .activate(&mut self.host, &self.mem, h, 0, APIC_IDS[0], 0x41)
            .unwrap();
        h
    }

    /// Perform `code` with `request` (and the call's response length) and check that it
    /// fails with `expect`, leaves host and backend state unchanged (VIR-CALL-H-006) and does
    /// not write the response buffer (VIR-CALL-H-007).
    #[track_caller]
    pub fn fails(&mut self, code: CallCode, request: &[u8], expect: Status) {
        let resp_len = call_layout(code).map_or(0, |l| l.response_len() as usize);
        let before = self.state();
        let (status, resp) = self
            .g
            .raw(&mut self.host, &self.mem, code, request, resp_len);
        assert_eq!(status, expect, "{code:?}");
        assert_eq!(
            self.state(),
            before,
            "{code:?} -> {status:?} changed host state"
        );
        assert!(
            resp.iter().all(|&b| b == RESPONSE_FILL),
            "{code:?} -> {status:?} wrote the response"
        );
    }
}

//! Two VMs on one mock host, built through the public API only.
#![allow(dead_code)]

use vir_abi::feature::Features;
use vir_abi::hw::MsiMessage;
use vir_abi::wire::ActivateResponse;
use vir_host::testing::{Caller, Journal, MockHost, MockState, guest_ram, mock_host, mock_state};
use vir_host::{
    DeviceConfig, HostConfig, IrMode, Quotas, SourceValidation, StorageSizes, VcpuConfig, VmConfig,
    VmId, VmSnapshot,
};
use vm_memory::GuestMemoryMmap;

/// VM A's device: MSI 32, MSI-X 64, IMS device 8, IMS system 16.
pub const A_DEV: u32 = 0x0000_0100;
pub const A_RID: u16 = 0x3a00;
/// VM B's device: same guest-visible id as A's (ids are per VM), another requester id.
pub const B_DEV: u32 = 0x0000_0100;
pub const B_RID: u16 = 0x3b00;

pub const A_APIC: [u32; 2] = [0, 1];
pub const B_APIC: [u32; 2] = [0x10, 0x11];

pub fn pda(vm: u64, vcpu: u64) -> u64 {
    0x20_0000 + vm * 0x1000 + vcpu * 0x40
}

fn vm_config(n: u64, rid: u16, apics: [u32; 2], quotas: Quotas) -> VmConfig {
    VmConfig {
        vcpus: apics
            .iter()
            .enumerate()
            .map(|(i, &apic_id)| VcpuConfig {
                apic_id,
                pda: pda(n, i as u64),
                pcpu: (n as u32) * 2 + i as u32,
            })
            .collect(),
        devices: vec![DeviceConfig {
            device_id: 0x100,
            requester_id: rid,
            source_validation: SourceValidation::RequesterId,
            storage: StorageSizes {
                msi_vectors: 32,
                msix_entries: 64,
                ims_device_entries: 8,
                ims_system_entries: 16,
            },
        }],
        quotas,
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

pub struct Two {
    pub host: MockHost,
    pub journal: Journal,
    pub mem_a: GuestMemoryMmap<()>,
    pub mem_b: GuestMemoryMmap<()>,
    pub a: Caller,
    pub b: Caller,
}

impl Two {
    pub fn new(mode: IrMode, table_size: u32) -> Two {
        Two::with(
            mode,
            table_size,
            Quotas {
                irtes: 64,
                vectors: 32,
            },
        )
    }

    pub fn with(mode: IrMode, table_size: u32, quotas: Quotas) -> Two {
        let config = HostConfig {
            ir_mode: mode,
            ..HostConfig::default()
        };
        let (mut host, journal) = mock_host(config, table_size, 4, 16).unwrap();
        for cpu in 0..4 {
            host.irqs_mut().set_apic_id(cpu, 0x1000 + cpu);
        }
        let a = host.add_vm(vm_config(0, A_RID, A_APIC, quotas)).unwrap();
        let b = host.add_vm(vm_config(1, B_RID, B_APIC, quotas)).unwrap();
        let mut t = Two {
            host,
            journal,
            mem_a: guest_ram(0x10000),
            mem_b: guest_ram(0x10000),
            a: Caller::new(a),
            b: Caller::new(b),
        };
        t.a.negotiate(&mut t.host, &t.mem_a, 1, Features::V1_DEFINED)
            .unwrap();
        t.b.negotiate(&mut t.host, &t.mem_b, 1, Features::V1_DEFINED)
            .unwrap();
        t
    }

    pub fn snap(&self, vm: VmId) -> VmSnapshot {
        self.host.snapshot(vm).unwrap()
    }

    pub fn all_state(&self) -> (VmSnapshot, VmSnapshot, MockState) {
        (
            self.snap(self.a.vm),
            self.snap(self.b.vm),
            mock_state(&self.host),
        )
    }
}

pub fn message(r: &ActivateResponse) -> MsiMessage {
    MsiMessage::new(r.address_lo.get(), r.address_hi.get(), r.data.get())
}

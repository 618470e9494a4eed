//! The legacy scheme on the simulated platform: the VMM's side of trap-and-emulate and the
//! guest's view of trapped hardware.
//!
//! * [`MachineStorage`]: the host's [`DeviceStorage`] — the physical MSI capabilities and MSI-X
//!   tables the trap code programs with the host's own messages — over the machine's devices.
//! * [`VmmBus`]: where a guest's accesses to interrupt storage go. The MSI and MSI-X capabilities
//!   live in config space and always exit to the host ([`Host::trap_write`](vir_host::Host::trap_write));
//!   the MSI-X table exits while the VM's tables are trapped and is mapped straight to the device
//!   once they are not ([`Vm::msix_trapped`](vir_host::Vm::msix_trapped), VIR-LEG-H-002): a write
//!   then reaches the device with no exit. IMS storage is never trapped. Without a host (bare
//!   metal) everything goes to the device.
//! * [`GuestIrt`] and [`TrappedViommu`]: the guest's remapping table in its memory and the trapped
//!   registers of its emulated remapping unit (situation 2), for
//!   [`EmulatedVtdDomain`](vir_guest::EmulatedVtdDomain).
//! * [`MachineIommu`]: the machine's real remapping unit, for a bare-metal kernel's
//!   [`BareMetalVtdDomain`](vir_guest::BareMetalVtdDomain) (situation 1).
//! * [`TimedTransport`]: a vIR transport that measures the time spent in the host.
//!
//! Every trapped access, and the time the host spent on it, is recorded in a shared [`TrapLog`];
//! vectors the host failed to set up or retarget and refused MSI writes are surfaced there too,
//! since a device register write has no status to carry them back to the guest.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use vir_abi::call::CallCode;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::Irta;
use vir_abi::status::Status;
use vir_guest::{
    DeviceId as GuestDeviceId, HardwareError, Hypervisor, InterruptStorage, IrteMemory,
    RemappingHardware, StorageError, StorageSlot as GuestSlot, VtdRegisters,
};
use vir_host::{
    DeviceStorage, MsiRefusal, MsiRegister, MsixField, TrapError, TrapOutcome, TrapWrite,
    VectorEvent, ViommuWrite, VmId,
};
use vir_platform::device::StorageRegion;
use vir_platform::{DeviceId, StorageSlot};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::guest_env::SharedHost;
use crate::host_backends::SharedMachine;

/// MSI-X Message Control bit 15.
const MSIX_ENABLE: u16 = 1 << 15;

// ---------------------------------------------------------------------------------------------
// The host's physical storage
// ---------------------------------------------------------------------------------------------

/// The host's [`DeviceStorage`] over the machine: devices named by requester id.
#[derive(Debug, Clone)]
pub struct MachineStorage {
    machine: SharedMachine,
    devices: BTreeMap<u16, DeviceId>,
    anomalies: Rc<RefCell<u64>>,
}

impl MachineStorage {
    /// Storage of `devices` (requester id → machine device).
    pub fn new(machine: SharedMachine, devices: BTreeMap<u16, DeviceId>) -> Self {
        Self {
            machine,
            devices,
            anomalies: Rc::new(RefCell::new(0)),
        }
    }

    /// Writes the machine refused (a device without that storage, an index beyond it): the
    /// trait's writes cannot fail, so they are counted here. 0 in a correct run.
    pub fn anomalies(&self) -> u64 {
        *self.anomalies.borrow()
    }

    fn with<T, E>(
        &self,
        rid: u16,
        f: impl FnOnce(&mut vir_platform::Machine, DeviceId) -> Result<T, E>,
    ) {
        let ok = self
            .devices
            .get(&rid)
            .is_some_and(|&d| f(&mut self.machine.borrow_mut(), d).is_ok());
        if !ok {
            *self.anomalies.borrow_mut() += 1;
        }
    }
}

impl DeviceStorage for MachineStorage {
    fn write_msi_message(&mut self, rid: u16, message: MsiMessage) {
        self.with(rid, |m, d| m.write_message(d, StorageSlot::msi(0), message));
    }
    fn set_msi_mask(&mut self, rid: u16, mask: u32) {
        // One write of the Mask Bits register.
        self.with(rid, |m, d| {
            let off = m
                .device(d)?
                .msi()
                .and_then(|c| c.mask_offset())
                .ok_or(vir_platform::MachineError::NoSuchDevice(d))?;
            m.write_storage(
                d,
                StorageRegion::MsiCapability,
                off as u64,
                &mask.to_le_bytes(),
            )
        });
    }
    fn set_msi_control(&mut self, rid: u16, enabled: bool, mme: u8) {
        self.with(rid, |m, d| m.set_msi_control(d, enabled, mme));
    }
    fn write_msix_message(&mut self, rid: u16, index: u32, message: MsiMessage) {
        self.with(rid, |m, d| {
            m.write_message(d, StorageSlot::msix(index), message)
        });
    }
    fn set_msix_masked(&mut self, rid: u16, index: u32, masked: bool) {
        self.with(rid, |m, d| {
            m.set_masked(d, StorageSlot::msix(index), masked)
        });
    }
    fn set_msix_control(&mut self, rid: u16, enabled: bool, function_mask: bool) {
        self.with(rid, |m, d| m.set_msix_control(d, enabled, function_mask));
    }
}

// ---------------------------------------------------------------------------------------------
// The log of trapped accesses
// ---------------------------------------------------------------------------------------------

/// What the VMM saw of a guest's trapped accesses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrapLog {
    /// Time spent in the host's trap entry points.
    pub host_time: Duration,
    /// Accesses sent through the trap (each one a guest exit).
    pub trapped: u64,
    /// Accesses that reached a device directly (mapped MSI-X table, IMS, bare metal).
    pub direct: u64,
    /// Vectors the host could not set up or retarget.
    pub failures: Vec<VectorEvent>,
    /// MSI writes the host refused (VIR-LEG-H-003, VIR-LEG-H-004).
    pub refusals: Vec<MsiRefusal>,
    /// Accesses the host rejected as VMM mistakes (0 in a correct VMM).
    pub errors: Vec<TrapError>,
}

impl TrapLog {
    fn record(&mut self, started: Instant, r: Result<TrapOutcome, TrapError>) {
        self.host_time += started.elapsed();
        self.trapped += 1;
        match r {
            Ok(TrapOutcome::Refused(why)) => self.refusals.push(why),
            Ok(o) => self.failures.extend(o.events().iter().copied().filter(|e| {
                matches!(
                    e,
                    VectorEvent::SetupFailed { .. } | VectorEvent::RetargetFailed { .. }
                )
            })),
            Err(e) => self.errors.push(e),
        }
    }
}

/// A [`TrapLog`] shared by a VM's bus, registers and world.
pub type SharedTrapLog = Rc<RefCell<TrapLog>>;

/// A VM's side of the host, for trapped accesses.
#[derive(Debug, Clone)]
pub struct TrapTarget {
    /// The host.
    pub host: SharedHost,
    /// The VM.
    pub vm: VmId,
    /// The VM's memory (the emulated remapping unit reads its table there).
    pub mem: GuestMemoryMmap,
    /// The physical storage the host programs.
    pub physical: MachineStorage,
    /// Where accesses are recorded.
    pub log: SharedTrapLog,
}

impl TrapTarget {
    fn trap(&mut self, device: GuestDeviceId, write: TrapWrite) {
        let started = Instant::now();
        let r = self.host.borrow_mut().trap_write(
            self.vm,
            device.0,
            write,
            &self.mem,
            &mut self.physical,
        );
        self.log.borrow_mut().record(started, r);
    }

    fn viommu(&mut self, write: ViommuWrite) -> Result<(), HardwareError> {
        let started = Instant::now();
        let r = self
            .host
            .borrow_mut()
            .viommu_write(self.vm, write, &self.mem, &mut self.physical);
        let failed = r.is_err();
        self.log.borrow_mut().record(started, r);
        if failed {
            Err(HardwareError::Register)
        } else {
            Ok(())
        }
    }

    fn msix_trapped(&self) -> bool {
        self.host
            .borrow()
            .vm(self.vm)
            .is_some_and(|v| v.msix_trapped())
    }
}

// ---------------------------------------------------------------------------------------------
// The guest's storage
// ---------------------------------------------------------------------------------------------

/// Where a guest's accesses to interrupt storage go (see the module documentation).
#[derive(Debug)]
pub struct VmmBus {
    machine: SharedMachine,
    host: Option<TrapTarget>,
    devices: BTreeMap<GuestDeviceId, DeviceId>,
    msix_enabled: BTreeSet<GuestDeviceId>,
    log: SharedTrapLog,
}

impl VmmBus {
    /// The bus of a VM on `host` (`None`: bare metal) with `devices` (guest id → machine
    /// device).
    pub fn new(
        machine: SharedMachine,
        host: Option<TrapTarget>,
        devices: BTreeMap<GuestDeviceId, DeviceId>,
        log: SharedTrapLog,
    ) -> Self {
        Self {
            machine,
            host,
            devices,
            msix_enabled: BTreeSet::new(),
            log,
        }
    }

    /// The log.
    pub fn log(&self) -> &SharedTrapLog {
        &self.log
    }

    fn lookup(&self, device: GuestDeviceId) -> Result<DeviceId, StorageError> {
        self.devices
            .get(&device)
            .copied()
            .ok_or(StorageError::NoSuchDevice(device))
    }

    fn direct<T>(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        f: impl FnOnce(&mut vir_platform::Machine, DeviceId) -> Result<T, vir_platform::MachineError>,
    ) -> Result<(), StorageError> {
        let dev = self.lookup(device)?;
        self.log.borrow_mut().direct += 1;
        f(&mut self.machine.borrow_mut(), dev).map_err(|_| StorageError::NoStorage {
            device,
            storage: slot.storage_type(),
        })?;
        Ok(())
    }

    /// The guest writes MSI-X Message Control (config space: trapped whenever there is a host).
    fn msix_control(&mut self, device: GuestDeviceId, enable: bool) -> Result<(), StorageError> {
        let value = if enable { MSIX_ENABLE } else { 0 };
        self.lookup(device)?;
        match &mut self.host {
            Some(t) => {
                t.trap(device, TrapWrite::MsixControl(value));
                Ok(())
            }
            None => self.direct(device, GuestSlot::MsiX(0), |m, d| {
                m.set_msix_control(d, enable, false)
            }),
        }
    }

    /// `pci_free_irq_vectors` for MSI-X: the driver disables MSI-X on the device.
    pub fn msix_disable(&mut self, device: GuestDeviceId) -> Result<(), StorageError> {
        if self.msix_enabled.remove(&device) {
            self.msix_control(device, false)?;
        }
        Ok(())
    }

    fn msix_entry_trapped(&self) -> bool {
        self.host.as_ref().is_some_and(TrapTarget::msix_trapped)
    }
}

impl InterruptStorage for VmmBus {
    fn write_message(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError> {
        self.lookup(device)?;
        match slot {
            GuestSlot::Msi => match &mut self.host {
                Some(t) => {
                    for r in [
                        MsiRegister::AddressLo(message.address_lo),
                        MsiRegister::AddressHi(message.address_hi),
                        // The MSI data register is 16 bits wide.
                        MsiRegister::Data(message.data as u16),
                    ] {
                        t.trap(device, TrapWrite::Msi(r));
                    }
                    Ok(())
                }
                None => self.direct(device, slot, |m, d| {
                    m.write_message(d, StorageSlot::msi(0), message)
                }),
            },
            GuestSlot::MsiX(index) if self.msix_entry_trapped() => {
                if let Some(t) = &mut self.host {
                    for (field, value) in [
                        (MsixField::AddressLo, message.address_lo),
                        (MsixField::AddressHi, message.address_hi),
                        (MsixField::Data, message.data),
                    ] {
                        t.trap(
                            device,
                            TrapWrite::MsixEntry {
                                index,
                                field,
                                value,
                            },
                        );
                    }
                }
                Ok(())
            }
            GuestSlot::MsiX(index) => self.direct(device, slot, |m, d| {
                m.write_message(d, StorageSlot::msix(index), message)
            }),
            GuestSlot::ImsDevice(index) => self.direct(device, slot, |m, d| {
                m.write_message(d, StorageSlot::ims_device(index), message)
            }),
            GuestSlot::ImsSystem(index) => self.direct(device, slot, |m, d| {
                m.write_message(d, StorageSlot::ims_system(index), message)
            }),
        }
    }

    fn set_masked(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        masked: bool,
    ) -> Result<(), StorageError> {
        self.lookup(device)?;
        let index = match slot {
            GuestSlot::Msi => return Err(StorageError::NotMaskable { device, slot }),
            GuestSlot::MsiX(index) => index,
            // IMS storage is not emulated by the VMM (no trap): the guest reaches the device's
            // entry or queue context directly, as for the message.
            GuestSlot::ImsDevice(index) => {
                return self.direct(device, slot, |m, d| {
                    m.set_masked(d, StorageSlot::ims_device(index), masked)
                });
            }
            GuestSlot::ImsSystem(index) => {
                return self.direct(device, slot, |m, d| {
                    m.set_masked(d, StorageSlot::ims_system(index), masked)
                });
            }
        };
        if self.msix_enabled.insert(device) {
            // Linux enables MSI-X when it sets the vectors up, every entry masked.
            self.msix_control(device, true)?;
        }
        if self.msix_entry_trapped() {
            if let Some(t) = &mut self.host {
                t.trap(
                    device,
                    TrapWrite::MsixEntry {
                        index,
                        field: MsixField::VectorControl,
                        value: u32::from(masked),
                    },
                );
            }
            Ok(())
        } else {
            self.direct(device, GuestSlot::MsiX(index), |m, d| {
                m.set_masked(d, StorageSlot::msix(index), masked)
            })
        }
    }

    fn msi_enable(&mut self, device: GuestDeviceId, nvec: u32) -> Result<(), StorageError> {
        let mme = nvec.trailing_zeros().min(5) as u8;
        self.lookup(device)?;
        match &mut self.host {
            Some(t) => {
                t.trap(
                    device,
                    TrapWrite::Msi(MsiRegister::Control(1 | u16::from(mme) << 4)),
                );
                Ok(())
            }
            None => self.direct(device, GuestSlot::Msi, |m, d| {
                m.set_msi_control(d, true, mme)
            }),
        }
    }

    fn msi_disable(&mut self, device: GuestDeviceId) -> Result<(), StorageError> {
        self.lookup(device)?;
        match &mut self.host {
            Some(t) => {
                t.trap(device, TrapWrite::Msi(MsiRegister::Control(0)));
                Ok(())
            }
            None => self.direct(device, GuestSlot::Msi, |m, d| {
                m.set_msi_control(d, false, 0)
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Situation 2: the guest's table and the trapped registers of its emulated unit
// ---------------------------------------------------------------------------------------------

/// The guest's remapping table in its memory.
#[derive(Debug, Clone)]
pub struct GuestIrt {
    mem: GuestMemoryMmap,
    base: u64,
    writes: u64,
}

impl GuestIrt {
    /// The table at `base` of `mem`.
    pub fn new(mem: GuestMemoryMmap, base: u64) -> Self {
        Self {
            mem,
            base,
            writes: 0,
        }
    }

    /// Entries written.
    pub const fn writes(&self) -> u64 {
        self.writes
    }
}

impl IrteMemory for GuestIrt {
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        let gpa = self
            .base
            .checked_add(16 * u64::from(index))
            .ok_or(HardwareError::IrteWrite(index))?;
        self.mem
            .write_slice(&irte.to_le_bytes(), GuestAddress(gpa))
            .map_err(|_| HardwareError::IrteWrite(index))?;
        self.writes += 1;
        Ok(())
    }
}

/// The registers of the emulated remapping unit: every access exits to the host.
#[derive(Debug, Clone)]
pub struct TrappedViommu {
    target: TrapTarget,
}

impl TrappedViommu {
    /// The unit of `target`'s VM.
    pub fn new(target: TrapTarget) -> Self {
        Self { target }
    }
}

impl VtdRegisters for TrappedViommu {
    fn write_irta(&mut self, irta: u64) -> Result<(), HardwareError> {
        self.target.viommu(ViommuWrite::Irta(irta))
    }
    fn write_global_command(&mut self, command: u32) -> Result<(), HardwareError> {
        self.target.viommu(ViommuWrite::GlobalCommand(command))
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.target
            .viommu(ViommuWrite::InvalidateEntries { index, index_mask })
    }
    fn invalidate_all(&mut self) -> Result<(), HardwareError> {
        self.target.viommu(ViommuWrite::InvalidateAll)
    }
}

// ---------------------------------------------------------------------------------------------
// Situation 1: the machine's own remapping unit
// ---------------------------------------------------------------------------------------------

/// The machine's remapping unit, programmed by a bare-metal kernel.
#[derive(Debug, Clone)]
pub struct MachineIommu {
    machine: SharedMachine,
}

impl MachineIommu {
    /// The unit of `machine`.
    pub fn new(machine: SharedMachine) -> Self {
        Self { machine }
    }
}

impl RemappingHardware for MachineIommu {
    fn enable(&mut self, irta: Irta) -> Result<(), HardwareError> {
        let mut m = self.machine.borrow_mut();
        let u = m.iommu_mut();
        u.set_irta(irta);
        u.enable_remapping(true);
        u.set_cfi(false);
        u.invalidate_all();
        Ok(())
    }
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        self.machine
            .borrow_mut()
            .iommu_mut()
            .write_irte(index, irte)
            .map_err(|_| HardwareError::IrteWrite(index))
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.machine
            .borrow_mut()
            .iommu_mut()
            .invalidate_entries(index, index_mask)
            .map_err(|_| HardwareError::Invalidation(index))
    }
}

// ---------------------------------------------------------------------------------------------
// Timing of vIR calls
// ---------------------------------------------------------------------------------------------

/// Calls made through a [`TimedTransport`] and the time they took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTiming {
    /// Calls made.
    pub calls: u64,
    /// Time spent in them (the binding's exit and the host's handling).
    pub time: Duration,
}

/// A vIR transport that measures its calls.
#[derive(Debug)]
pub struct TimedTransport<T> {
    inner: T,
    timing: Rc<RefCell<CallTiming>>,
}

impl<T> TimedTransport<T> {
    /// `inner`, measured into `timing`.
    pub fn new(inner: T, timing: Rc<RefCell<CallTiming>>) -> Self {
        Self { inner, timing }
    }

    /// The transport measured.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: Hypervisor> Hypervisor for TimedTransport<T> {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        let started = Instant::now();
        let status = self.inner.call(code, request, response);
        let mut t = self.timing.borrow_mut();
        t.calls += 1;
        t.time += started.elapsed();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_platform::device::DeviceConfig;
    use vir_platform::{Machine, MachineConfig, RequesterId};

    fn machine() -> (SharedMachine, DeviceId) {
        let mut m = Machine::new(&MachineConfig::new(2)).unwrap();
        let d = m
            .add_device(&DeviceConfig::new(RequesterId(0x10)).with_msix(4))
            .unwrap();
        (Rc::new(RefCell::new(m)), d)
    }

    #[test]
    fn machine_storage_programs_the_device_and_counts_refusals() {
        let (m, d) = machine();
        let mut s = MachineStorage::new(Rc::clone(&m), BTreeMap::from([(0x10, d)]));
        let msg = MsiMessage::new(0xFEE0_0018, 0, 0);
        s.write_msix_message(0x10, 3, msg);
        s.set_msix_masked(0x10, 3, false);
        s.set_msix_control(0x10, true, false);
        assert_eq!(m.borrow().stored_message(d, StorageSlot::msix(3)), Ok(msg));
        assert_eq!(
            m.borrow()
                .device(d)
                .unwrap()
                .storage_writes(vir_platform::StorageKind::MsiX),
            3
        );
        assert_eq!(s.anomalies(), 0);
        // Beyond the table, no MSI capability, unknown requester id: refused and counted.
        s.write_msix_message(0x10, 4, msg);
        s.set_msi_control(0x10, true, 0);
        s.set_msix_masked(0x11, 0, true);
        assert_eq!(s.anomalies(), 3);
    }

    #[test]
    fn bare_metal_bus_writes_the_device_directly() {
        let (m, d) = machine();
        let log: SharedTrapLog = Rc::default();
        let dev = GuestDeviceId(0x10);
        let mut bus = VmmBus::new(
            Rc::clone(&m),
            None,
            BTreeMap::from([(dev, d)]),
            Rc::clone(&log),
        );
        let msg = MsiMessage::new(0xFEE0_0018, 0, 0);
        bus.set_masked(dev, GuestSlot::MsiX(1), true).unwrap();
        bus.write_message(dev, GuestSlot::MsiX(1), msg).unwrap();
        bus.set_masked(dev, GuestSlot::MsiX(1), false).unwrap();
        assert_eq!(
            (log.borrow().direct, log.borrow().trapped),
            (4, 0),
            "enable, mask, message, unmask"
        );
        assert!(m.borrow().device(d).unwrap().msix().unwrap().enabled());
        assert_eq!(
            bus.write_message(GuestDeviceId(0x99), GuestSlot::MsiX(0), msg),
            Err(StorageError::NoSuchDevice(GuestDeviceId(0x99)))
        );
        assert_eq!(
            bus.msi_enable(dev, 1),
            Err(StorageError::NoStorage {
                device: dev,
                storage: vir_guest::StorageType::Msi
            })
        );
        bus.msix_disable(dev).unwrap();
        assert!(!m.borrow().device(d).unwrap().msix().unwrap().enabled());
    }

    // VIR-ALC-G-001: the guest masks IMS entries through the bus like MSI-X entries; MSI has
    // no per-slot mask through it.
    #[test]
    fn bare_metal_bus_masks_ims_entries_directly_and_refuses_msi() {
        let mut m = Machine::new(&MachineConfig::new(2)).unwrap();
        let d = m
            .add_device(&DeviceConfig::new(RequesterId(0x10)).with_ims_device(4))
            .unwrap();
        let m = Rc::new(RefCell::new(m));
        let log: SharedTrapLog = Rc::default();
        let dev = GuestDeviceId(0x10);
        let mut bus = VmmBus::new(
            Rc::clone(&m),
            None,
            BTreeMap::from([(dev, d)]),
            Rc::clone(&log),
        );
        let msg = MsiMessage::new(0xFEE0_0018, 0, 0);
        bus.set_masked(dev, GuestSlot::ImsDevice(2), true).unwrap();
        bus.write_message(dev, GuestSlot::ImsDevice(2), msg)
            .unwrap();
        // Masked: the message is in place but the entry does not send.
        assert_eq!(
            m.borrow_mut().fire(d, StorageSlot::ims_device(2)),
            Ok(vir_platform::FireOutcome::Masked)
        );
        assert_eq!(
            (log.borrow().direct, log.borrow().trapped),
            (2, 0),
            "mask, message"
        );
        assert_eq!(
            bus.set_masked(dev, GuestSlot::Msi, true),
            Err(StorageError::NotMaskable {
                device: dev,
                slot: GuestSlot::Msi
            })
        );
        assert_eq!(
            bus.set_masked(dev, GuestSlot::ImsSystem(0), true),
            Err(StorageError::NoStorage {
                device: dev,
                storage: vir_guest::StorageType::ImsSystem
            })
        );
        assert_eq!(
            m.borrow()
                .device(d)
                .unwrap()
                .storage_writes(vir_platform::StorageKind::ImsDevice),
            2
        );
    }

    #[test]
    fn guest_table_entries_are_little_endian_at_base_plus_16_per_index() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let mut t = GuestIrt::new(mem.clone(), 0x1000);
        t.write_irte(2, 0x0102_0304_0506_0708_090A_0B0C_0D0E_0F10)
            .unwrap();
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(0x1020)).unwrap();
        assert_eq!(b[0], 0x10);
        assert_eq!(b[15], 0x01);
        assert_eq!(t.writes(), 1);
        assert_eq!(t.write_irte(0x100, 1), Err(HardwareError::IrteWrite(0x100)));
    }
}

//! The host entry points of the legacy scheme: trapped writes and reads, the emulated remapping
//! unit's registers, configuration and physical resynchronisation.

use vir_abi::hw::msi::MsiMessage;
use vir_abi::wire::StorageKind;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::backend::{IrteTable, PhysicalIrqs, VirtualRouting, VmId};
use crate::config::DeviceConfig;
use crate::host::{Host, HostError};
use crate::vm::{Vm, VmState};

use super::emulation::{
    Counted, Cx, LegacyState, MSI_ENABLE, MSIX_ENABLE, MSIX_FUNCTION_MASK, MSIX_MASKED, SlotRef,
    reconcile, reconcile_msi, reconcile_msix, resync,
};
use super::viommu::ViommuWrite;
use super::{
    DeviceStorage, LegacyConfig, MsiRefusal, MsiRegister, MsixField, TrapError, TrapKind,
    TrapOutcome, TrapRead, TrapWrite,
};

/// Reads one 16-byte remapping-table entry from guest memory.
fn read_entry<M: GuestMemory + ?Sized>(mem: &M, gpa: u64) -> Option<u128> {
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, GuestAddress(gpa)).ok()?;
    Some(u128::from_le_bytes(b))
}

fn device_index(v: &Vm, vm: VmId, device_id: u32) -> Result<(usize, DeviceConfig), TrapError> {
    v.config
        .devices
        .iter()
        .enumerate()
        .find(|(_, d)| d.device_id == device_id)
        .map(|(i, d)| (i, *d))
        .ok_or(TrapError::UnknownDevice { vm, device_id })
}

/// The capability a register belongs to must exist; an MSI-X index must be in the table.
fn check_register(dev: &DeviceConfig, msi: bool, msix_index: Option<u32>) -> Result<(), TrapError> {
    let id = dev.device_id;
    if msi && dev.storage.msi_vectors == 0 {
        return Err(TrapError::NoMsi(id));
    }
    if !msi && dev.storage.msix_entries == 0 {
        return Err(TrapError::NoMsix(id));
    }
    if let Some(index) = msix_index
        && index >= dev.storage.msix_entries
    {
        return Err(TrapError::MsixIndexOutOfRange {
            device_id: id,
            index,
            entries: dev.storage.msix_entries,
        });
    }
    Ok(())
}

/// The message issued for the device's live MSI allocation and its log2 count.
fn issued_msi(v: &Vm, device_id: u32) -> Option<(MsiMessage, u8)> {
    let handle = *v.slots.get(&(device_id, StorageKind::MSI.0, 0))?;
    let a = v.allocations.get(handle)?;
    a.message_issued.then(|| (a.message(), a.log2_count))
}

/// A trapped MSI or MSI-X control write in the negotiated state (VIR-LEG-H-003..005).
fn negotiated_write(
    legacy: &mut LegacyState,
    di: usize,
    dev: &DeviceConfig,
    write: TrapWrite,
    issued: Option<(MsiMessage, u8)>,
    storage: &mut dyn DeviceStorage,
) -> TrapOutcome {
    let LegacyState {
        devices, counters, ..
    } = legacy;
    let Some(d) = devices.get_mut(di) else {
        return TrapOutcome::Emulated(Vec::new());
    };
    let rid = dev.requester_id;
    let mut st = Counted {
        inner: storage,
        writes: &mut counters.physical_writes,
    };
    let msi = &mut d.msi;
    let refused = match write {
        TrapWrite::MsixControl(v) => {
            d.msix.enabled = v & MSIX_ENABLE != 0;
            d.msix.function_mask = v & MSIX_FUNCTION_MASK != 0;
            // VIR-LEG-H-005
            st.set_msix_control(rid, d.msix.enabled, d.msix.function_mask);
            return TrapOutcome::Forwarded;
        }
        TrapWrite::MsixEntry { .. } => return TrapOutcome::Emulated(Vec::new()),
        TrapWrite::Msi(MsiRegister::MaskBits(v)) => {
            msi.mask = v;
            st.set_msi_mask(rid, v);
            return TrapOutcome::Forwarded;
        }
        TrapWrite::Msi(reg @ MsiRegister::Control(v)) => {
            let enable = v & MSI_ENABLE != 0;
            let mme = (((v >> 4) & 7) as u8).min(msi.capable_log2);
            match (msi.enabled, enable) {
                (true, false) => {
                    msi.enabled = false;
                    st.set_msi_control(rid, false, msi.mme);
                    return TrapOutcome::Forwarded;
                }
                (true, true) if mme == msi.mme => return TrapOutcome::Emulated(Vec::new()),
                // VIR-LEG-H-004: MME changes while enabled.
                (true, true) => MsiRefusal::ChangeWhileEnabled(reg),
                (false, false) => {
                    msi.mme = mme;
                    return TrapOutcome::Emulated(Vec::new());
                }
                (false, true) => match issued {
                    // VIR-LEG-H-003
                    None => MsiRefusal::NoIssuedMessage,
                    Some((m, _)) if m != msi.message() => MsiRefusal::MessageMismatch {
                        written: msi.message(),
                        issued: m,
                    },
                    // VIR-LEG-H-004
                    Some((_, log2)) if mme > log2 => MsiRefusal::MmeTooLarge {
                        mme,
                        log2_count: log2,
                    },
                    Some((m, _)) => {
                        msi.enabled = true;
                        msi.mme = mme;
                        st.write_msi_message(rid, m);
                        st.set_msi_mask(rid, msi.mask);
                        st.set_msi_control(rid, true, mme);
                        return TrapOutcome::Forwarded;
                    }
                },
            }
        }
        TrapWrite::Msi(reg) => {
            let mut next = msi.clone();
            match reg {
                MsiRegister::AddressLo(v) => next.address_lo = v & !3,
                MsiRegister::AddressHi(v) => next.address_hi = v,
                MsiRegister::Data(v) => next.data = v,
                MsiRegister::Control(_) | MsiRegister::MaskBits(_) => {}
            }
            if msi.enabled && next.message() != msi.message() {
                // VIR-LEG-H-004: address or data changes while enabled.
                MsiRefusal::ChangeWhileEnabled(reg)
            } else {
                *msi = next;
                return TrapOutcome::Emulated(Vec::new());
            }
        }
    };
    counters.msi_refused += 1;
    TrapOutcome::Refused(refused)
}

/// A trapped write in the legacy state: update the emulated register, then reconcile.
fn legacy_write<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
    dev: &DeviceConfig,
    write: TrapWrite,
) {
    let Some(d) = cx.legacy.devices.get_mut(di) else {
        return;
    };
    match write {
        TrapWrite::Msi(reg) => {
            match reg {
                MsiRegister::Control(v) => {
                    d.msi.enabled = v & MSI_ENABLE != 0;
                    // Multiple Message Enable above the capability reads back clamped (QEMU).
                    d.msi.mme = (((v >> 4) & 7) as u8).min(d.msi.capable_log2);
                }
                MsiRegister::AddressLo(v) => d.msi.address_lo = v & !3,
                MsiRegister::AddressHi(v) => d.msi.address_hi = v,
                MsiRegister::Data(v) => d.msi.data = v,
                MsiRegister::MaskBits(v) => d.msi.mask = v,
            }
            reconcile_msi(cx, di);
        }
        TrapWrite::MsixControl(v) => {
            let was = d.msix.enabled;
            d.msix.enabled = v & MSIX_ENABLE != 0;
            d.msix.function_mask = v & MSIX_FUNCTION_MASK != 0;
            let now = d.msix.enabled;
            let rid = dev.requester_id;
            // The physical function is enabled while the guest's is; entries stay masked
            // physically unless delivered, so its function mask is not needed.
            if now && !was {
                Counted {
                    inner: &mut *cx.storage,
                    writes: &mut cx.legacy.counters.physical_writes,
                }
                .set_msix_control(rid, true, false);
            }
            reconcile_msix(cx, di);
            if was && !now {
                Counted {
                    inner: &mut *cx.storage,
                    writes: &mut cx.legacy.counters.physical_writes,
                }
                .set_msix_control(rid, false, false);
            }
        }
        TrapWrite::MsixEntry {
            index,
            field,
            value,
        } => {
            let Some(e) = d.msix.entries.get_mut(index as usize) else {
                return;
            };
            match field {
                MsixField::AddressLo => e.address_lo = value & !3,
                MsixField::AddressHi => e.address_hi = value,
                MsixField::Data => e.data = value,
                MsixField::VectorControl => e.vector_control = value & MSIX_MASKED,
            }
            reconcile(cx, di, SlotRef::MsiX(index));
        }
    }
}

impl<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs> Host<T, R, P> {
    /// Sets the VM's legacy configuration (an emulated remapping unit, the extended destination
    /// id). A VMM chooses it when it creates the VM, before the guest runs.
    pub fn set_legacy_config(&mut self, vm: VmId, config: LegacyConfig) -> Result<(), HostError> {
        let v = self.vm_mut(vm).ok_or(HostError::UnknownVm(vm))?;
        v.legacy.config = config;
        Ok(())
    }

    /// A trapped guest write to the MSI capability, the MSI-X capability or (legacy state only)
    /// the MSI-X table of device `device_id` of VM `vm`. Counted as a guest exit.
    ///
    /// `mem` is the VM's memory (the emulated remapping unit reads its table from it);
    /// `storage` reaches the physical devices. See the [module documentation](super) for what
    /// happens; the outcome lists every vector set up, retargeted, torn down or failed, or the
    /// refusal of an MSI write in the negotiated state (VIR-LEG-H-003, VIR-LEG-H-004).
    ///
    /// After the write, the number of enabled MSI and MSI-X capabilities is reported to
    /// [`Vm::set_legacy_interrupts_enabled`] (VIR-NEG-H-004).
    pub fn trap_write<M: GuestMemory + ?Sized, S: DeviceStorage>(
        &mut self,
        vm: VmId,
        device_id: u32,
        write: TrapWrite,
        mem: &M,
        storage: &mut S,
    ) -> Result<TrapOutcome, TrapError> {
        let (mut phys, v) = self.split(vm).ok_or(TrapError::UnknownVm(vm))?;
        let (di, dev) = device_index(v, vm, device_id)?;
        let negotiated = v.state != VmState::Legacy;
        match write {
            TrapWrite::Msi(_) => check_register(&dev, true, None)?,
            TrapWrite::MsixControl(_) => check_register(&dev, false, None)?,
            TrapWrite::MsixEntry { index, .. } => {
                check_register(&dev, false, Some(index))?;
                if negotiated {
                    // VIR-LEG-H-002: the VMM maps the table; reaching here is its bug.
                    return Err(TrapError::MsixNotTrapped { device_id, index });
                }
            }
        }
        v.legacy.counters.count_write(TrapKind::of_write(&write));
        let outcome = if negotiated {
            let issued = issued_msi(v, device_id);
            negotiated_write(&mut v.legacy, di, &dev, write, issued, storage)
        } else {
            let read = |gpa: u64| read_entry(mem, gpa);
            let Vm {
                id, config, legacy, ..
            } = &mut *v;
            resync(legacy, &config.devices, storage);
            let mut cx = Cx {
                phys: &mut phys,
                vm_id: *id,
                negotiated,
                vm_config: config,
                legacy,
                storage,
                read_virte: &read,
                events: Vec::new(),
            };
            legacy_write(&mut cx, di, &dev, write);
            TrapOutcome::Emulated(cx.events)
        };
        v.legacy_enabled = v.legacy.enabled_capabilities();
        Ok(outcome)
    }

    /// A trapped guest read of device `device_id`'s interrupt registers: the emulated value.
    /// Counted as a guest exit.
    pub fn trap_read(
        &mut self,
        vm: VmId,
        device_id: u32,
        read: TrapRead,
    ) -> Result<u32, TrapError> {
        let v = self.vm_mut(vm).ok_or(TrapError::UnknownVm(vm))?;
        let (di, dev) = device_index(v, vm, device_id)?;
        match read {
            TrapRead::MsixControl => check_register(&dev, false, None)?,
            TrapRead::MsixEntry { index, .. } => {
                check_register(&dev, false, Some(index))?;
                if v.state != VmState::Legacy {
                    return Err(TrapError::MsixNotTrapped { device_id, index });
                }
            }
            _ => check_register(&dev, true, None)?,
        }
        v.legacy.counters.count_read(TrapKind::of_read(&read));
        let Some(d) = v.legacy.devices.get(di) else {
            return Ok(0);
        };
        Ok(match read {
            TrapRead::MsiControl => u32::from(d.msi.control()),
            TrapRead::MsiAddressLo => d.msi.address_lo,
            TrapRead::MsiAddressHi => d.msi.address_hi,
            TrapRead::MsiData => u32::from(d.msi.data),
            TrapRead::MsiMaskBits => d.msi.mask,
            TrapRead::MsixControl => u32::from(d.msix.control()),
            TrapRead::MsixEntry { index, field } => {
                d.msix.entry(index).map_or(0, |e| match field {
                    MsixField::AddressLo => e.address_lo,
                    MsixField::AddressHi => e.address_hi,
                    MsixField::Data => e.data,
                    MsixField::VectorControl => e.vector_control,
                })
            }
        })
    }

    /// A trapped write to a register of VM `vm`'s emulated remapping unit (see
    /// [`viommu`](super::viommu)), counted as a guest exit. Every wanted vector whose message the
    /// write may have changed is re-resolved: a changed entry retargets the vector without
    /// touching the device.
    pub fn viommu_write<M: GuestMemory + ?Sized, S: DeviceStorage>(
        &mut self,
        vm: VmId,
        write: ViommuWrite,
        mem: &M,
        storage: &mut S,
    ) -> Result<TrapOutcome, TrapError> {
        let (mut phys, v) = self.split(vm).ok_or(TrapError::UnknownVm(vm))?;
        if !v.legacy.config.viommu {
            return Err(TrapError::NoViommu(vm));
        }
        let kind = match write {
            ViommuWrite::Irta(_) => TrapKind::ViommuIrta,
            ViommuWrite::GlobalCommand(_) => TrapKind::ViommuCommand,
            ViommuWrite::InvalidateEntries { .. } | ViommuWrite::InvalidateAll => {
                TrapKind::ViommuInvalidation
            }
        };
        v.legacy.counters.count_write(kind);
        let affected = v.legacy.viommu.write(write);
        if v.state != VmState::Legacy {
            // Nothing is delivered through the emulated unit in the negotiated state.
            return Ok(TrapOutcome::Emulated(Vec::new()));
        }
        let read = |gpa: u64| read_entry(mem, gpa);
        let Vm {
            id, config, legacy, ..
        } = &mut *v;
        let slots: Option<Vec<(u32, SlotRef)>> = match &affected {
            None => None,
            Some(r) => Some(
                legacy
                    .users
                    .range(u16::try_from(r.start).unwrap_or(u16::MAX)..)
                    .take_while(|(k, _)| u32::from(**k) < r.end)
                    .flat_map(|(_, set)| set.iter().copied())
                    .collect(),
            ),
        };
        if slots.as_ref().is_some_and(|s| s.is_empty()) {
            return Ok(TrapOutcome::Emulated(Vec::new()));
        }
        resync(legacy, &config.devices, storage);
        let mut cx = Cx {
            phys: &mut phys,
            vm_id: *id,
            negotiated: false,
            vm_config: config,
            legacy,
            storage,
            read_virte: &read,
            events: Vec::new(),
        };
        match slots {
            None => {
                for di in 0..cx.vm_config.devices.len() {
                    reconcile_msi(&mut cx, di);
                    reconcile_msix(&mut cx, di);
                }
            }
            Some(slots) => {
                for (di, slot) in slots {
                    reconcile(&mut cx, di as usize, slot);
                }
            }
        }
        Ok(TrapOutcome::Emulated(cx.events))
    }

    /// Brings the physical storage of VM `vm`'s devices back under the trap code after an
    /// untrapped session: MSI-X disabled and every entry masked, MSI disabled (the trap entry
    /// points also do this before they program a device). No effect in the negotiated state,
    /// where the guest owns the MSI-X tables.
    pub fn legacy_resync<S: DeviceStorage>(
        &mut self,
        vm: VmId,
        storage: &mut S,
    ) -> Result<(), HostError> {
        let v = self.vm_mut(vm).ok_or(HostError::UnknownVm(vm))?;
        if v.state == VmState::Legacy {
            let Vm { config, legacy, .. } = v;
            resync(legacy, &config.devices, storage);
        }
        Ok(())
    }
}

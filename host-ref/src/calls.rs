//! The version 1 calls: steps 5–8 of VIR-CALL-H-001 and each call's own order.
//!
//! Every handler validates everything before it changes anything, and unwinds its own backend
//! steps on failure, so a status other than `SUCCESS` always means "nothing changed"
//! (VIR-CALL-H-006). Handlers see only the host-private copy of the request.

use vir_abi::VIR_VERSION_1;
use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    FreeRequest, NegotiateRequest, NegotiateResponse, QueryResponse, QuotaResponse,
    SetAffinityRequest, StorageKind, TARGET_VECTOR_MIN, Target, activate_flags, vm_state,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::backend::{
    HostVector, IrqSource, IrteTable, IrteTableId, PhysicalIrqs, RouteTarget, VirtualRouting,
};
use crate::config::{DeviceConfig, HostConfig, VcpuConfig};
use crate::iommu::{ActiveEntry, VendorError, ga_tag};
use crate::table::TableAllocators;
use crate::vm::{ActiveVector, Allocation, GuestTarget, VectorState, Vm, VmState};

/// Lowest version this host offers.
pub const MIN_VERSION: u16 = VIR_VERSION_1;
/// Highest version this host offers.
pub const MAX_VERSION: u16 = VIR_VERSION_1;

/// The physical side and host-wide state a call may touch.
pub(crate) struct Phys<'a, T, R, P> {
    pub config: &'a HostConfig,
    pub table: &'a mut T,
    pub routing: &'a mut R,
    pub irqs: &'a mut P,
    pub alloc: &'a mut TableAllocators,
}

/// A successful call's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Response {
    Empty,
    Query(QueryResponse),
    Negotiate(NegotiateResponse),
    Allocate(AllocateResponse),
    Activate(ActivateResponse),
    Quota(QuotaResponse),
}

impl Response {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Empty => &[],
            Self::Query(r) => r.as_bytes(),
            Self::Negotiate(r) => r.as_bytes(),
            Self::Allocate(r) => r.as_bytes(),
            Self::Activate(r) => r.as_bytes(),
            Self::Quota(r) => r.as_bytes(),
        }
    }
}

fn parse<T: FromBytes>(bytes: &[u8]) -> Result<T, Status> {
    // Lengths were checked against the call's layout (step 2); a mismatch cannot reach here,
    // but it is a status, never a panic.
    T::read_from_bytes(bytes).map_err(|_| Status::BAD_LENGTH)
}

/// Steps 5–8 for a version 1 call whose request was copied to `req`.
pub(crate) fn dispatch<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    code: CallCode,
    req: &[u8],
) -> Result<Response, Status> {
    // Step 5 (VIR-CALL-H-003).
    if !code.allowed_in_legacy() && vm.state == VmState::Legacy {
        return Err(Status::NOT_NEGOTIATED);
    }
    // Step 6 (VIR-CALL-H-004).
    if code == CallCode::QUERY_QUOTA && !vm.features().contains(Features::QUOTA_QUERY) {
        return Err(Status::FEATURE_NOT_NEGOTIATED);
    }
    match code {
        CallCode::QUERY => Ok(query(phys.config, vm)),
        CallCode::NEGOTIATE => negotiate(phys.config, vm, parse(req)?),
        CallCode::RESET => {
            reset(phys, vm);
            Ok(Response::Empty)
        }
        CallCode::ALLOCATE => allocate(phys, vm, parse(req)?),
        CallCode::ACTIVATE => activate(phys, vm, parse(req)?),
        CallCode::SET_AFFINITY => set_affinity(phys, vm, parse(req)?),
        CallCode::DEACTIVATE => deactivate(phys, vm, parse(req)?),
        CallCode::FREE => free(phys, vm, parse(req)?),
        CallCode::QUERY_QUOTA => Ok(quota(vm)),
        _ => Err(Status::UNKNOWN_CALL),
    }
}

fn query(config: &HostConfig, vm: &Vm) -> Response {
    let (state, version) = match vm.state {
        VmState::Legacy => (vm_state::LEGACY, 0),
        VmState::Negotiated { version, .. } => (vm_state::NEGOTIATED, version),
    };
    Response::Query(QueryResponse {
        min_version: U16::new(MIN_VERSION),
        max_version: U16::new(MAX_VERSION),
        message_format: config.vendor().message_format().0,
        max_msi_log2: config.max_msi_log2,
        vm_state: state,
        reserved0: 0,
        features_offered: U64::new(config.features_offered.bits()),
        features_active: U64::new(vm.features().bits()),
        active_version: U16::new(version),
        reserved1: U16::ZERO,
        irte_quota: U32::new(vm.config.quotas.irtes),
        vector_quota: U32::new(vm.config.quotas.vectors),
        reserved2: U32::ZERO,
    })
}

fn negotiate(config: &HostConfig, vm: &mut Vm, req: NegotiateRequest) -> Result<Response, Status> {
    // Step 7 (VIR-CALL-H-005).
    if req.reserved0.get() != 0 || req.reserved1.get() != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    if vm.state != VmState::Legacy {
        return Err(Status::ALREADY_NEGOTIATED); // VIR-NEG-H-001
    }
    let version = req.version.get();
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(Status::UNSUPPORTED_VERSION); // VIR-NEG-H-002
    }
    let features = Features(req.features.get());
    if !config.features_offered.contains(features) {
        return Err(Status::UNSUPPORTED_FEATURE); // VIR-NEG-H-003
    }
    if vm.legacy_enabled != 0 {
        return Err(Status::INVALID_STATE); // VIR-NEG-H-004
    }
    // Commit (VIR-NEG-H-005); MSI-X trapping stops with the state (VIR-LEG-H-002).
    vm.state = VmState::Negotiated { version, features };
    vm.session = vm.session.wrapping_add(1);
    crate::legacy::on_negotiated(vm);
    Ok(Response::Negotiate(NegotiateResponse {
        version: U16::new(version),
        reserved0: U16::ZERO,
        session: U32::new(vm.session),
        features: U64::new(features.bits()),
    }))
}

/// Free everything and return to legacy (the `RESET` call; VIR-RST-H-001..003).
pub(crate) fn reset<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
) {
    for (_, alloc) in vm.allocations.drain() {
        release_allocation(phys, vm, alloc);
    }
    // VIR-RST-H-006: MSI and MSI-X presented disabled, MSI-X entries at their reset values,
    // and trapped again (VIR-RST-H-002).
    crate::legacy::reset_emulation(phys, vm);
    // VIR-DB-H-009: every reset clears the doorbell latches of all vCPUs.
    vm.doorbell_latch.iter_mut().for_each(|l| *l = 0);
    vm.state = VmState::Legacy;
}

fn quota(vm: &Vm) -> Response {
    let q = vm.config.quotas;
    Response::Quota(QuotaResponse {
        irtes_total: U32::new(q.irtes),
        irtes_free: U32::new(q.irtes.saturating_sub(vm.irtes_used)),
        vectors_total: U32::new(q.vectors),
        vectors_free: U32::new(q.vectors.saturating_sub(vm.vectors_used)),
    })
}

fn storage_size(dev: &DeviceConfig, kind: StorageKind) -> u32 {
    match kind {
        StorageKind::MSI => u32::from(dev.storage.msi_vectors),
        StorageKind::MSIX => dev.storage.msix_entries,
        StorageKind::IMS_DEVICE => dev.storage.ims_device_entries,
        StorageKind::IMS_SYSTEM => dev.storage.ims_system_entries,
        _ => 0,
    }
}

fn allocate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    req: AllocateRequest,
) -> Result<Response, Status> {
    // Step 7 (VIR-CALL-H-005).
    if req.reserved0.get() != 0 || req.reserved1.get() != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    let kind = StorageKind(req.kind);
    // 1. VIR-ALC-H-001
    let gating = kind.gating_feature().ok_or(Status::INVALID_PARAMETER)?;
    // 2. VIR-ALC-H-002
    if !vm.features().contains(gating) {
        return Err(Status::FEATURE_NOT_NEGOTIATED);
    }
    // 3. VIR-ALC-H-003
    let log2 = req.log2_count;
    let index = req.index.get();
    let bad_shape = if kind == StorageKind::MSI {
        log2 > phys.config.max_msi_log2 || index != 0
    } else {
        log2 != 0
    };
    if bad_shape {
        return Err(Status::INVALID_PARAMETER);
    }
    let count = 1u32 << log2; // log2 <= 5 here
    // 4. VIR-ALC-H-004
    let device_id = req.device_id.get();
    let dev = vm.device(device_id).ok_or(Status::NOT_YOUR_DEVICE)?;
    // 5. VIR-ALC-H-005
    let size = storage_size(dev, kind);
    if size == 0 {
        return Err(Status::STORAGE_NOT_PRESENT);
    }
    // 6. VIR-ALC-H-006
    let out_of_range = if kind == StorageKind::MSI {
        count > size
    } else {
        index >= size
    };
    if out_of_range {
        return Err(Status::INVALID_INDEX);
    }
    // 7. VIR-ALC-H-007 (MSI: index is 0, so any live MSI allocation of the device collides).
    let key = (device_id, kind.0, index);
    if vm.slots.contains_key(&key) {
        return Err(Status::INDEX_IN_USE);
    }
    // 8. VIR-ALC-H-008 (a VM whose 65535 handle slots are all live is over quota too).
    let within_quota = vm
        .irtes_used
        .checked_add(count)
        .is_some_and(|n| n <= vm.config.quotas.irtes);
    if !within_quota || !vm.allocations.can_insert() {
        return Err(Status::QUOTA_EXCEEDED);
    }
    // 9. VIR-ALC-H-009
    let vendor = phys.config.vendor();
    let table = vendor.table_of(dev);
    let base = phys.alloc.find(table, log2).ok_or(Status::TABLE_FULL)?;
    let message = vendor.message(base).map_err(|_| Status::BACKEND_FAILURE)?;

    // Commit: nothing below fails.
    phys.alloc.take(table, base, log2);
    for i in base..base + count {
        phys.table.write(table, i, 0); // VIR-ALC-H-011: reserved, not present
    }
    let allocation = Allocation {
        device_id,
        kind,
        index,
        log2_count: log2,
        base,
        table,
        message,
        message_issued: false,
        vectors: vec![VectorState::Allocated; count as usize],
    };
    let Ok(handle) = vm.allocations.insert(allocation) else {
        // can_insert() was checked above with no change in between.
        phys.alloc.release(table, base, log2);
        return Err(Status::QUOTA_EXCEEDED);
    };
    vm.slots.insert(key, handle);
    vm.irtes_used += count;
    Ok(Response::Allocate(AllocateResponse {
        handle: U32::new(handle),
        count: U16::new(count as u16),
        reserved0: U16::ZERO,
    }))
}

/// The present IRTE behind an active vector, composed by the vendor seam (VIR-FMT-H-003,
/// VIR-FMT-H-006, VIR-SEC-H-001); also used for the host's own IRTEs of the legacy scheme.
pub(crate) fn active_irte(
    config: &HostConfig,
    dev: &DeviceConfig,
    target: GuestTarget,
    vcpu: &VcpuConfig,
    host: HostVector,
    tag: u32,
) -> Result<u128, VendorError> {
    config.vendor().active_irte(
        config,
        &ActiveEntry {
            device: dev,
            target,
            vcpu,
            host,
            tag,
        },
    )
}

/// Step 5 of ACTIVATE / 4 of SET_AFFINITY: the target names a vCPU of this VM and a valid vector
/// (VIR-ACT-H-005, VIR-AFF-H-003, VIR-SEC-H-003).
fn resolve_target(vm: &Vm, target: &Target) -> Result<(GuestTarget, u32, VcpuConfig), Status> {
    let t = GuestTarget {
        apic_id: target.apic_id.get(),
        vector: target.vector,
    };
    if t.vector < TARGET_VECTOR_MIN {
        return Err(Status::INVALID_TARGET);
    }
    let (index, vcpu) = vm
        .vcpu_by_apic_id(t.apic_id)
        .ok_or(Status::INVALID_TARGET)?;
    Ok((t, index, *vcpu))
}

fn activate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    req: ActivateRequest,
) -> Result<Response, Status> {
    let flags = req.flags.get();
    // Step 7 (VIR-CALL-H-005).
    if flags & !activate_flags::V1_DEFINED != 0 || !req.target.reserved_is_zero() {
        return Err(Status::INVALID_PARAMETER);
    }
    let handle = req.handle.get();
    // 1. VIR-ACT-H-001
    let alloc = vm.allocations.get(handle).ok_or(Status::INVALID_HANDLE)?;
    // 2. VIR-ACT-H-002
    let sub = u32::from(req.subhandle.get());
    let state = *alloc
        .vectors
        .get(sub as usize)
        .ok_or(Status::INVALID_SUBHANDLE)?;
    // 3. VIR-ACT-H-003
    let reserve = flags & activate_flags::RESERVE != 0;
    if reserve && !vm.features().contains(Features::RESERVATION) {
        return Err(Status::FEATURE_NOT_NEGOTIATED);
    }
    // 4. VIR-ACT-H-004
    let state_ok = match state {
        VectorState::Allocated => true,
        VectorState::Reserved => !reserve,
        VectorState::Active(_) => false,
    };
    if !state_ok {
        return Err(Status::INVALID_STATE);
    }
    let index = alloc.base + sub;
    // No overflow: an MSI allocation has index 0, every other kind has one vector (sub = 0).
    let (device_id, kind, slot) = (alloc.device_id, alloc.kind, alloc.index + sub);
    let (message, table) = (alloc.message(), alloc.table);
    let dev = *vm.device(device_id).ok_or(Status::NOT_YOUR_DEVICE)?;

    let new_state = if reserve {
        // 6 (RESERVE): no vector, route or IRQ; target ignored.
        let irte = phys
            .config
            .vendor()
            .reserved_irte(phys.config, &dev)
            .map_err(|_| Status::BACKEND_FAILURE)?;
        phys.table.write(table, index, irte);
        VectorState::Reserved
    } else {
        // 5. VIR-ACT-H-005
        let (target, vcpu_index, vcpu) = resolve_target(vm, &req.target)?;
        // 6. VIR-ACT-H-006: host vector from the VM's quota, then (a), (b), (c).
        if vm.vectors_used >= vm.config.quotas.vectors {
            return Err(Status::VECTORS_EXHAUSTED);
        }
        let route = RouteTarget {
            vcpu_index,
            apic_id: target.apic_id,
            vector: target.vector,
        };
        let gsi = phys
            .routing
            .add_route(vm.id, route)
            .map_err(|e| e.status())?;
        let source = IrqSource {
            requester_id: dev.requester_id,
            kind,
            slot,
        };
        let host_irq = match phys.irqs.start(vm.id, source, gsi, vcpu.pcpu) {
            Ok(irq) => irq,
            Err(e) => {
                phys.routing.remove_route(vm.id, gsi); // VIR-ACT-H-007
                return Err(e.status());
            }
        };
        let tag = ga_tag(vm.id.0, vcpu_index);
        let irte = match active_irte(phys.config, &dev, target, &vcpu, host_irq.vector, tag) {
            Ok(irte) => irte,
            Err(_) => {
                phys.irqs.stop(host_irq.id); // VIR-ACT-H-007
                phys.routing.remove_route(vm.id, gsi);
                return Err(Status::BACKEND_FAILURE);
            }
        };
        // (c): in posted mode (and remapped) the entry is written only now, after (a) and (b).
        phys.table.write(table, index, irte);
        vm.vectors_used += 1;
        VectorState::Active(ActiveVector {
            target,
            vcpu_index,
            gsi,
            host_irq,
            irte,
        })
    };
    let Some(alloc) = vm.allocations.get_mut(handle) else {
        return Err(Status::INVALID_HANDLE); // looked up above; unreachable
    };
    if let Some(v) = alloc.vectors.get_mut(sub as usize) {
        *v = new_state;
    }
    alloc.message_issued = true;
    // 7. VIR-ACT-H-008, VIR-ACT-H-009, VIR-FMT-H-001/002.
    Ok(Response::Activate(ActivateResponse {
        address_lo: U32::new(message.address_lo),
        address_hi: U32::new(message.address_hi),
        data: U32::new(message.data),
        format: phys.config.vendor().message_format().0,
        reserved0: 0,
        reserved1: U16::ZERO,
        reserved2: U64::ZERO,
    }))
}

fn set_affinity<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    req: SetAffinityRequest,
) -> Result<Response, Status> {
    // Step 7 (VIR-CALL-H-005).
    if req.reserved0.get() != 0 || !req.target.reserved_is_zero() {
        return Err(Status::INVALID_PARAMETER);
    }
    let handle = req.handle.get();
    // 1. VIR-AFF-H-001
    let alloc = vm.allocations.get(handle).ok_or(Status::INVALID_HANDLE)?;
    // 2.
    let sub = u32::from(req.subhandle.get());
    let state = *alloc
        .vectors
        .get(sub as usize)
        .ok_or(Status::INVALID_SUBHANDLE)?;
    // 3. VIR-AFF-H-002
    let VectorState::Active(active) = state else {
        return Err(Status::INVALID_STATE);
    };
    let (table, index) = (alloc.table, alloc.base + sub);
    let dev = *vm.device(alloc.device_id).ok_or(Status::NOT_YOUR_DEVICE)?;
    // 4. VIR-AFF-H-003
    let (target, vcpu_index, vcpu) = resolve_target(vm, &req.target)?;
    if target == active.target {
        return Ok(Response::Empty);
    }
    let old_cpu = active.host_irq.vector.cpu;
    // 5. VIR-AFF-H-004: every fallible step comes before the first irreversible one.
    let moving = vcpu.pcpu != old_cpu;
    let host_vector = if moving {
        phys.irqs
            .prepare_affinity(active.host_irq.id, vcpu.pcpu)
            .map_err(|e| e.status())?
    } else {
        active.host_irq.vector
    };
    let abort = |irqs: &mut P| {
        if moving {
            irqs.abort_affinity(active.host_irq.id);
        }
    };
    let tag = ga_tag(vm.id.0, vcpu_index);
    let irte = match active_irte(phys.config, &dev, target, &vcpu, host_vector, tag) {
        Ok(irte) => irte,
        Err(_) => {
            abort(phys.irqs);
            return Err(Status::BACKEND_FAILURE);
        }
    };
    let route = RouteTarget {
        vcpu_index,
        apic_id: target.apic_id,
        vector: target.vector,
    };
    if let Err(e) = phys.routing.update_route(vm.id, active.gsi, route) {
        abort(phys.irqs);
        return Err(e.status());
    }
    // The IRTE is rewritten in one update (remapped mode on the same pCPU: it is unchanged,
    // only the route moved); the message is untouched (VIR-AFF-H-005).
    if irte != active.irte {
        phys.table.write(table, index, irte);
    }
    if moving {
        phys.irqs.commit_affinity(active.host_irq.id);
    }
    let mut host_irq = active.host_irq;
    host_irq.vector = host_vector;
    let new = ActiveVector {
        target,
        vcpu_index,
        gsi: active.gsi,
        host_irq,
        irte,
    };
    if let Some(v) = vm
        .allocations
        .get_mut(handle)
        .and_then(|a| a.vectors.get_mut(sub as usize))
    {
        *v = VectorState::Active(new);
    }
    Ok(Response::Empty)
}

/// Tear one vector down to `Allocated`: IRTE not present first (the device can no longer reach
/// the IRQ), then the physical IRQ, then the route, then the vector's quota.
fn teardown_vector<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm_id: crate::backend::VmId,
    vectors_used: &mut u32,
    (table, index): (IrteTableId, u32),
    state: VectorState,
) {
    match state {
        VectorState::Allocated => {}
        VectorState::Reserved => phys.table.write(table, index, 0),
        VectorState::Active(a) => {
            phys.table.write(table, index, 0);
            phys.irqs.stop(a.host_irq.id);
            phys.routing.remove_route(vm_id, a.gsi);
            *vectors_used = vectors_used.saturating_sub(1);
        }
    }
}

fn deactivate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    req: DeactivateRequest,
) -> Result<Response, Status> {
    // Step 7 (VIR-CALL-H-005).
    if req.reserved0.get() != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    let handle = req.handle.get();
    let vm_id = vm.id;
    let Vm {
        allocations,
        vectors_used,
        ..
    } = vm;
    // VIR-DEA-H-001
    let alloc = allocations.get_mut(handle).ok_or(Status::INVALID_HANDLE)?;
    let sub = u32::from(req.subhandle.get());
    let index = alloc.base + sub;
    let slot = alloc
        .vectors
        .get_mut(sub as usize)
        .ok_or(Status::INVALID_SUBHANDLE)?;
    // VIR-DEA-H-002
    if *slot == VectorState::Allocated {
        return Err(Status::INVALID_STATE);
    }
    // VIR-DEA-H-003
    teardown_vector(phys, vm_id, vectors_used, (alloc.table, index), *slot);
    *slot = VectorState::Allocated;
    Ok(Response::Empty)
}

/// Release an allocation already removed from the handle table: every vector torn down, the
/// entries not present and returned to the table (VIR-FRE-H-001/002).
fn release_allocation<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    alloc: Allocation,
) {
    for (sub, state) in alloc.vectors.iter().enumerate() {
        teardown_vector(
            phys,
            vm.id,
            &mut vm.vectors_used,
            (alloc.table, alloc.base + sub as u32),
            *state,
        );
    }
    // Entries of `Allocated` vectors are already 0 (written so by ALLOCATE and teardown).
    phys.alloc
        .release(alloc.table, alloc.base, alloc.log2_count);
    vm.slots
        .remove(&(alloc.device_id, alloc.kind.0, alloc.index));
    vm.irtes_used = vm.irtes_used.saturating_sub(alloc.count());
}

fn free<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
    req: FreeRequest,
) -> Result<Response, Status> {
    // Step 7 (VIR-CALL-H-005).
    if req.reserved0.get() != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    // VIR-FRE-H-001; the handle is stale from here on (VIR-FRE-H-003).
    let alloc = vm
        .allocations
        .remove(req.handle.get())
        .ok_or(Status::INVALID_HANDLE)?;
    release_allocation(phys, vm, alloc);
    Ok(Response::Empty)
}

#[cfg(test)]
mod tests;

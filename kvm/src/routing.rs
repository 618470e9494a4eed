//! The reference host's virtual routing on real KVM: every route is an MSI route of the VM's
//! GSI routing table (`KVM_SET_GSI_ROUTING`) with an eventfd bound to the GSI (`KVM_IRQFD`), so
//! signalling the eventfd makes KVM's in-kernel LAPIC inject the vector into the target vCPU.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table: the table is kept here and submitted whole,
//! once per route change (each host call changes at most one route, so one call costs at most
//! one ioctl; nothing is submitted for calls that change no route). Each ioctl's duration is
//! recorded for the figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1,
    kvm_irq_routing_msi,
};
use kvm_ioctls::VmFd;
use vir_host::backend::{BackendError, BackendOp, Gsi, RouteTarget, VirtualRouting, VmId};
use vmm_sys_util::eventfd::EventFd;

/// GSIs below this are left to the in-kernel irqchip's pins.
pub const FIRST_GSI: u32 = 24;
/// Routes this VMM gives a VM.
pub const MAX_ROUTES: u32 = 1024;

struct Route {
    vm: VmId,
    target: RouteTarget,
    eventfd: EventFd,
}

/// [`VirtualRouting`] on a KVM VM (one KVM VM per reference-host VM in this VMM).
pub struct KvmRouting {
    vm_fd: Arc<VmFd>,
    routes: BTreeMap<u32, Route>,
    ioctl_times: Vec<Duration>,
    failed_undo: u64,
}

impl std::fmt::Debug for KvmRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmRouting")
            .field("routes", &self.routes.len())
            .field("ioctls", &self.ioctl_times.len())
            .finish()
    }
}

/// The MSI message KVM delivers for `target`: fixed delivery, physical destination mode, edge.
pub fn msi_of(target: RouteTarget) -> (u32, u32, u32) {
    let address_lo = 0xFEE0_0000 | ((target.apic_id & 0xFF) << 12);
    let address_hi = target.apic_id & !0xFF;
    (address_lo, address_hi, u32::from(target.vector))
}

impl KvmRouting {
    /// Routing of the VM `vm_fd` (whose in-kernel irqchip exists already).
    pub fn new(vm_fd: Arc<VmFd>) -> Self {
        KvmRouting {
            vm_fd,
            routes: BTreeMap::new(),
            ioctl_times: Vec::new(),
            failed_undo: 0,
        }
    }

    /// Submits the whole table with one `KVM_SET_GSI_ROUTING`.
    fn submit(&mut self) -> Result<(), i32> {
        let mut table = KvmIrqRouting::new(0).map_err(|_| libc::ENOMEM)?;
        for (gsi, r) in &self.routes {
            let (address_lo, address_hi, data) = msi_of(r.target);
            let entry = kvm_irq_routing_entry {
                gsi: *gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                u: kvm_irq_routing_entry__bindgen_ty_1 {
                    msi: kvm_irq_routing_msi {
                        address_lo,
                        address_hi,
                        data,
                        ..Default::default()
                    },
                },
                ..Default::default()
            };
            table.push(entry).map_err(|_| libc::ENOMEM)?;
        }
        let t = Instant::now();
        let r = self.vm_fd.set_gsi_routing(&table).map_err(|e| e.errno());
        self.ioctl_times.push(t.elapsed());
        r
    }

    /// The eventfd bound to `gsi`.
    pub fn eventfd(&self, gsi: Gsi) -> Option<&EventFd> {
        self.routes.get(&gsi.0).map(|r| &r.eventfd)
    }

    /// The route of `gsi`.
    pub fn route(&self, gsi: Gsi) -> Option<(VmId, RouteTarget)> {
        self.routes.get(&gsi.0).map(|r| (r.vm, r.target))
    }

    /// Durations of every `KVM_SET_GSI_ROUTING` made so far.
    pub fn ioctl_times(&self) -> &[Duration] {
        &self.ioctl_times
    }

    /// Undo steps (route removal) whose ioctl failed; the route was dropped from the table kept
    /// here and the next submission removes it from KVM.
    pub fn failed_undo(&self) -> u64 {
        self.failed_undo
    }
}

impl VirtualRouting for KvmRouting {
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError> {
        let os = |errno| BackendError::Os {
            op: BackendOp::AddRoute,
            errno,
        };
        let gsi = (FIRST_GSI..FIRST_GSI + MAX_ROUTES)
            .find(|g| !self.routes.contains_key(g))
            .ok_or(BackendError::RoutesExhausted {
                capacity: MAX_ROUTES,
            })?;
        let eventfd = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| os(e.raw_os_error().unwrap_or(libc::EIO)))?;
        self.routes.insert(
            gsi,
            Route {
                vm,
                target,
                eventfd,
            },
        );
        if let Err(errno) = self.submit() {
            self.routes.remove(&gsi);
            return Err(os(errno));
        }
        let bound = self
            .vm_fd
            .register_irqfd(&self.routes[&gsi].eventfd, gsi)
            .map_err(|e| e.errno());
        if let Err(errno) = bound {
            self.routes.remove(&gsi);
            if self.submit().is_err() {
                self.failed_undo += 1;
            }
            return Err(os(errno));
        }
        Ok(Gsi(gsi))
    }

    fn update_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        target: RouteTarget,
    ) -> Result<(), BackendError> {
        let route = self
            .routes
            .get_mut(&gsi.0)
            .filter(|r| r.vm == vm)
            .ok_or(BackendError::UnknownGsi(gsi))?;
        let old = std::mem::replace(&mut route.target, target);
        if let Err(errno) = self.submit() {
            if let Some(r) = self.routes.get_mut(&gsi.0) {
                r.target = old;
            }
            return Err(BackendError::Os {
                op: BackendOp::UpdateRoute,
                errno,
            });
        }
        Ok(())
    }

    fn remove_route(&mut self, vm: VmId, gsi: Gsi) {
        if self.routes.get(&gsi.0).is_none_or(|r| r.vm != vm) {
            self.failed_undo += 1;
            return;
        }
        if let Some(r) = self.routes.remove(&gsi.0)
            && self.vm_fd.unregister_irqfd(&r.eventfd, gsi.0).is_err()
        {
            self.failed_undo += 1;
        }
        if self.submit().is_err() {
            self.failed_undo += 1;
        }
    }
}

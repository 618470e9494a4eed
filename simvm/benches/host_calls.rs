//! Host-side cost of the vIR calls, and host memory per allocated interrupt.
//!
//! Timing (criterion): `ACTIVATE`, `SET_AFFINITY`, `ALLOCATE` and `FREE` of one IMS entry, in
//! posted mode, measured around [`vir_host::Host::handle_call`] only (the request is already in
//! guest memory, as after the guest's store), with the simulated platform's backends behind the
//! host: the VT-d table write and invalidation, the KVM route and irqfd, the VFIO host IRQ. The
//! VM has 16 vCPUs on 16 physical CPUs and an accelerator with 2048 IMS entries.
//!
//! Memory: a counting global allocator measures the heap bytes still held after 2048
//! `ALLOCATE` + `ACTIVATE` pairs, per interrupt: once for `vir-host` alone (over backends that
//! allocate nothing) and once for the whole simulated host (`vir-host` plus the KVM and VFIO
//! models' bookkeeping).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, AllocateRequest, AllocateResponse, DeactivateRequest, FreeRequest,
    NegotiateRequest, SetAffinityRequest, StorageKind, Target, call_layout,
};
use vir_guest::DeviceId as GuestDeviceId;
use vir_host::{
    BackendError, DeviceConfig, Gsi, Host, HostConfig, HostIrq, HostIrqId, HostVector, IrMode,
    IrqSource, IrteTable, PhysicalIrqs, Quotas, RouteTarget, SourceValidation, StorageSizes,
    VcpuConfig, VirtualRouting, VmConfig, VmId,
};
use vir_simvm::{DeviceSpec, VmSpec, World, WorldBuilder};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// Heap bytes allocated and freed so far.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting bytes.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are `Counting`'s; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through `alloc`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> usize {
    ALLOCATED
        .load(Ordering::Relaxed)
        .saturating_sub(FREED.load(Ordering::Relaxed))
}

const ACCEL: GuestDeviceId = GuestDeviceId::new(0, 0x20);
const ENTRIES: u32 = 2048;
const APIC_IDS: [u32; 16] = [
    0, 1, 2, 3, 256, 257, 300, 511, 4, 5, 6, 7, 512, 513, 1000, 4095,
];
const REQ: u64 = 0x8000;
const RESP: u64 = 0x8800;

/// Puts a request in guest memory (guest side, not timed).
fn put<M: GuestMemory>(mem: &M, req: &[u8]) {
    mem.write_slice(req, GuestAddress(REQ))
        .expect("request page");
}

/// The host side of one call: `handle_call` with the buffers already in place.
fn call<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory>(
    host: &mut Host<T, R, P>,
    vm: VmId,
    mem: &M,
    code: CallCode,
) -> Status {
    let layout = call_layout(code).expect("v1 call");
    let (rl, pl) = (
        u64::from(layout.request_len()),
        u64::from(layout.response_len()),
    );
    let (rg, pg) = (
        if rl == 0 { 0 } else { REQ },
        if pl == 0 { 0 } else { RESP },
    );
    host.handle_call(vm, mem, code, rg, rl, pg, pl)
        .expect("known VM")
}

fn allocate_req(index: u32) -> AllocateRequest {
    AllocateRequest {
        device_id: U32::new(ACCEL.0),
        kind: StorageKind::IMS_DEVICE.0,
        log2_count: 0,
        reserved0: U16::ZERO,
        index: U32::new(index),
        reserved1: U32::ZERO,
    }
}

fn activate_req(handle: u32, apic_id: u32) -> ActivateRequest {
    ActivateRequest {
        handle: U32::new(handle),
        subhandle: U16::ZERO,
        flags: U16::ZERO,
        target: Target::new(apic_id, 0x41),
    }
}

fn allocate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory>(
    host: &mut Host<T, R, P>,
    vm: VmId,
    mem: &M,
    index: u32,
) -> u32 {
    put(mem, allocate_req(index).as_bytes());
    assert_eq!(call(host, vm, mem, CallCode::ALLOCATE), Status::SUCCESS);
    let mut raw = [0u8; 8];
    mem.read_slice(&mut raw, GuestAddress(RESP))
        .expect("response");
    AllocateResponse::read_from_bytes(&raw)
        .expect("8 bytes")
        .handle
        .get()
}

fn activate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory>(
    host: &mut Host<T, R, P>,
    vm: VmId,
    mem: &M,
    handle: u32,
    apic_id: u32,
) {
    put(mem, activate_req(handle, apic_id).as_bytes());
    assert_eq!(call(host, vm, mem, CallCode::ACTIVATE), Status::SUCCESS);
}

fn free<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory>(
    host: &mut Host<T, R, P>,
    vm: VmId,
    mem: &M,
    handle: u32,
) {
    let req = FreeRequest {
        handle: U32::new(handle),
        reserved0: U32::ZERO,
    };
    put(mem, req.as_bytes());
    assert_eq!(call(host, vm, mem, CallCode::FREE), Status::SUCCESS);
}

/// A posted-mode world with the accelerator; the guest has negotiated (through `VMCALL`).
fn world() -> (World, VmId, GuestMemoryMmap) {
    let world = WorldBuilder::new()
        .mode(IrMode::Posted)
        .table_size_s(12)
        .vm(VmSpec::new(APIC_IDS.to_vec())
            .with_quotas(Quotas {
                irtes: 8192,
                vectors: 8192,
            })
            .with_device(DeviceSpec::new("accel", ACCEL, 0x8200).with_ims_device(ENTRIES)))
        .build()
        .expect("world");
    let vm = world.vms()[0].id();
    let mem = world
        .machine()
        .guest_memory(world.vms()[0].platform_id())
        .expect("guest memory")
        .clone();
    (world, vm, mem)
}

// ---- backends that allocate nothing, to measure vir-host alone ------------------------------

struct FlatTable(Vec<u128>);

impl IrteTable for FlatTable {
    fn size(&self) -> u32 {
        self.0.len() as u32
    }
    fn write(&mut self, _table: vir_host::IrteTableId, index: u32, entry: u128) {
        if let Some(e) = self.0.get_mut(index as usize) {
            *e = entry;
        }
    }
    fn read(&self, _table: vir_host::IrteTableId, index: u32) -> Option<u128> {
        self.0.get(index as usize).copied()
    }
}

struct CountingRouting(u32);

impl VirtualRouting for CountingRouting {
    fn add_route(&mut self, _vm: VmId, _target: RouteTarget) -> Result<Gsi, BackendError> {
        self.0 += 1;
        Ok(Gsi(self.0))
    }
    fn update_route(&mut self, _: VmId, _: Gsi, _: RouteTarget) -> Result<(), BackendError> {
        Ok(())
    }
    fn remove_route(&mut self, _vm: VmId, _gsi: Gsi) {}
}

struct CountingIrqs(u64);

impl PhysicalIrqs for CountingIrqs {
    fn start(&mut self, _: VmId, _: IrqSource, _: Gsi, cpu: u32) -> Result<HostIrq, BackendError> {
        self.0 += 1;
        Ok(HostIrq {
            id: HostIrqId(self.0),
            vector: HostVector {
                cpu,
                apic_id: cpu,
                vector: 0x20 + (self.0 % 187) as u8,
            },
        })
    }
    fn stop(&mut self, _irq: HostIrqId) {}
    fn prepare_affinity(&mut self, _: HostIrqId, cpu: u32) -> Result<HostVector, BackendError> {
        Ok(HostVector {
            cpu,
            apic_id: cpu,
            vector: 0x20,
        })
    }
    fn commit_affinity(&mut self, _irq: HostIrqId) {}
    fn abort_affinity(&mut self, _irq: HostIrqId) {}
}

/// Bytes per interrupt that `vir-host` alone keeps after ALLOCATE + ACTIVATE.
fn host_ref_bytes_per_interrupt() -> f64 {
    let mem = vir_host::testing::guest_ram(0x10000);
    let mut host = Host::new(
        HostConfig::default(),
        FlatTable(vec![0; 8192]),
        CountingRouting(0),
        CountingIrqs(0),
    )
    .expect("host");
    let vm = host
        .add_vm(VmConfig {
            vcpus: APIC_IDS
                .iter()
                .enumerate()
                .map(|(i, &apic_id)| VcpuConfig {
                    apic_id,
                    pda: 0x10_0000 + 64 * i as u64,
                    pcpu: i as u32,
                })
                .collect(),
            devices: vec![DeviceConfig {
                device_id: ACCEL.0,
                requester_id: 0x8200,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    ims_device_entries: ENTRIES,
                    ..StorageSizes::default()
                },
            }],
            quotas: Quotas {
                irtes: 8192,
                vectors: 8192,
            },
            guest_writable: vir_host::GuestWritable::AllRam,
        })
        .expect("VM");
    let neg = NegotiateRequest {
        version: U16::new(1),
        reserved0: U16::ZERO,
        reserved1: U32::ZERO,
        features: U64::new(Features::V1_DEFINED.bits()),
    };
    put(&mem, neg.as_bytes());
    assert_eq!(
        call(&mut host, vm, &mem, CallCode::NEGOTIATE),
        Status::SUCCESS
    );
    let before = live_bytes();
    for i in 0..ENTRIES {
        let h = allocate(&mut host, vm, &mem, i);
        activate(&mut host, vm, &mem, h, APIC_IDS[i as usize % 16]);
    }
    let grown = live_bytes().saturating_sub(before);
    std::hint::black_box(&host);
    grown as f64 / f64::from(ENTRIES)
}

/// Bytes per interrupt that the simulated host (vir-host and the platform's KVM/VFIO models)
/// keeps after ALLOCATE + ACTIVATE.
fn sim_host_bytes_per_interrupt() -> f64 {
    let (world, vm, mem) = world();
    let before = live_bytes();
    {
        let mut host = world.host_mut();
        for i in 0..ENTRIES {
            let h = allocate(&mut host, vm, &mem, i);
            activate(&mut host, vm, &mem, h, APIC_IDS[i as usize % 16]);
        }
    }
    let grown = live_bytes().saturating_sub(before);
    std::hint::black_box(&world);
    grown as f64 / f64::from(ENTRIES)
}

fn bench_calls(c: &mut Criterion) {
    let (world, vm, mem) = world();
    let handles: Vec<u32> = {
        let mut host = world.host_mut();
        (0..ENTRIES)
            .map(|i| allocate(&mut host, vm, &mem, i))
            .collect()
    };
    let mut g = c.benchmark_group("posted");

    g.bench_function("ACTIVATE", |b| {
        b.iter_custom(|iters| {
            let mut host = world.host_mut();
            let mut total = Duration::ZERO;
            for k in 0..iters {
                let h = handles[(k % u64::from(ENTRIES)) as usize];
                put(
                    &mem,
                    activate_req(h, APIC_IDS[(k % 16) as usize]).as_bytes(),
                );
                let t = Instant::now();
                let s = call(&mut host, vm, &mem, CallCode::ACTIVATE);
                total += t.elapsed();
                assert_eq!(s, Status::SUCCESS);
                let d = DeactivateRequest {
                    handle: U32::new(h),
                    subhandle: U16::ZERO,
                    reserved0: U16::ZERO,
                };
                put(&mem, d.as_bytes());
                assert_eq!(
                    call(&mut host, vm, &mem, CallCode::DEACTIVATE),
                    Status::SUCCESS
                );
            }
            total
        })
    });

    // Every handle active, on vCPU i % 16; each SET_AFFINITY moves one to the next vCPU (and
    // so to another physical CPU).
    {
        let mut host = world.host_mut();
        for (i, &h) in handles.iter().enumerate() {
            activate(&mut host, vm, &mem, h, APIC_IDS[i % 16]);
        }
    }
    let mut on = vec![0usize; handles.len()];
    on.iter_mut().enumerate().for_each(|(i, v)| *v = i % 16);
    g.bench_function("SET_AFFINITY", |b| {
        b.iter_custom(|iters| {
            let mut host = world.host_mut();
            let mut total = Duration::ZERO;
            for k in 0..iters {
                let i = (k % u64::from(ENTRIES)) as usize;
                on[i] = (on[i] + 1) % 16;
                let req = SetAffinityRequest {
                    handle: U32::new(handles[i]),
                    subhandle: U16::ZERO,
                    reserved0: U16::ZERO,
                    target: Target::new(APIC_IDS[on[i]], 0x42 + (k % 2) as u8),
                };
                put(&mem, req.as_bytes());
                let t = Instant::now();
                let s = call(&mut host, vm, &mem, CallCode::SET_AFFINITY);
                total += t.elapsed();
                assert_eq!(s, Status::SUCCESS);
            }
            total
        })
    });
    {
        let mut host = world.host_mut();
        for &h in &handles {
            free(&mut host, vm, &mem, h);
        }
    }

    g.bench_function("ALLOCATE", |b| {
        b.iter_custom(|iters| {
            let mut host = world.host_mut();
            let mut total = Duration::ZERO;
            for k in 0..iters {
                put(
                    &mem,
                    allocate_req((k % u64::from(ENTRIES)) as u32).as_bytes(),
                );
                let t = Instant::now();
                let s = call(&mut host, vm, &mem, CallCode::ALLOCATE);
                total += t.elapsed();
                assert_eq!(s, Status::SUCCESS);
                let mut raw = [0u8; 8];
                mem.read_slice(&mut raw, GuestAddress(RESP))
                    .expect("response");
                let h = AllocateResponse::read_from_bytes(&raw)
                    .expect("8")
                    .handle
                    .get();
                free(&mut host, vm, &mem, h);
            }
            total
        })
    });

    g.bench_function("FREE (one active vector)", |b| {
        b.iter_custom(|iters| {
            let mut host = world.host_mut();
            let mut total = Duration::ZERO;
            for k in 0..iters {
                let h = allocate(&mut host, vm, &mem, (k % u64::from(ENTRIES)) as u32);
                activate(&mut host, vm, &mem, h, APIC_IDS[(k % 16) as usize]);
                put(
                    &mem,
                    FreeRequest {
                        handle: U32::new(h),
                        reserved0: U32::ZERO,
                    }
                    .as_bytes(),
                );
                let t = Instant::now();
                let s = call(&mut host, vm, &mem, CallCode::FREE);
                total += t.elapsed();
                assert_eq!(s, Status::SUCCESS);
            }
            total
        })
    });
    g.finish();
}

fn main() {
    let host_ref = host_ref_bytes_per_interrupt();
    let sim = sim_host_bytes_per_interrupt();
    println!(
        "memory per allocated+activated interrupt (average over {ENTRIES}): \
         vir-host alone {host_ref:.1} bytes; simulated host (vir-host + KVM/VFIO models) {sim:.1} bytes"
    );
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    bench_calls(&mut c);
    c.final_summary();
}

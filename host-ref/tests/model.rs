//! Random call sequences from two VMs, with random backend failures and garbage requests.
//!
//! After every step: a call that did not return SUCCESS changed nothing, for either VM or any
//! backend (VIR-CALL-H-006); and the host's bookkeeping agrees with the physical side — every
//! IRTE is owned by at most one allocation, entries of non-active vectors are not present
//! (VIR-SEC-H-002), active entries carry the device's source id (VIR-SEC-H-001) and target a
//! vCPU of the owning VM (VIR-SEC-H-003), every active vector has exactly one route and one
//! started IRQ, and the quotas and the table's free count add up.

mod common;

use common::*;
use proptest::prelude::*;
use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{StorageKind, call_layout};
use vir_host::testing::Caller;
use vir_host::testing::invariants::check_host;
use vir_host::{BackendError, BackendOp, IrMode, Quotas};

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        b: bool,
        kind: u8,
        log2: u8,
        index: u32,
    },
    Activate {
        b: bool,
        pick: u8,
        sub: u16,
        apic: u8,
        vector: u8,
    },
    Reserve {
        b: bool,
        pick: u8,
        sub: u16,
    },
    SetAffinity {
        b: bool,
        pick: u8,
        sub: u16,
        apic: u8,
        vector: u8,
    },
    Deactivate {
        b: bool,
        pick: u8,
        sub: u16,
    },
    Free {
        b: bool,
        pick: u8,
    },
    Reset {
        b: bool,
    },
    PlatformReset {
        b: bool,
    },
    Negotiate {
        b: bool,
        features: u64,
    },
    QueryQuota {
        b: bool,
    },
    Fault {
        op: u8,
        n: u32,
        error: u8,
    },
    Garbage {
        b: bool,
        code: u8,
        bytes: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let b = any::<bool>();
    let kind = prop_oneof![8 => 1u8..5, 1 => 0u8..8];
    let log2 = prop_oneof![6 => Just(0u8), 3 => 0u8..4, 1 => 0u8..7];
    let index = prop_oneof![8 => 0u32..10, 1 => any::<u32>()];
    let sub = prop_oneof![3 => Just(0u16), 3 => 0u16..4, 1 => 0u16..9];
    let apic = prop_oneof![4 => 0u8..2, 1 => 0u8..5];
    let vector = prop_oneof![6 => 0x20u8..0x30, 1 => any::<u8>()];
    prop_oneof![
        24 => (b, kind, log2, index).prop_map(|(b, kind, log2, index)| Op::Allocate { b, kind, log2, index }),
        36 => (b, any::<u8>(), sub.clone(), apic.clone(), vector.clone())
            .prop_map(|(b, pick, sub, apic, vector)| Op::Activate { b, pick, sub, apic, vector }),
        6 => (b, any::<u8>(), sub.clone()).prop_map(|(b, pick, sub)| Op::Reserve { b, pick, sub }),
        24 => (b, any::<u8>(), sub.clone(), apic, vector)
            .prop_map(|(b, pick, sub, apic, vector)| Op::SetAffinity { b, pick, sub, apic, vector }),
        6 => (b, any::<u8>(), sub).prop_map(|(b, pick, sub)| Op::Deactivate { b, pick, sub }),
        6 => (b, any::<u8>()).prop_map(|(b, pick)| Op::Free { b, pick }),
        1 => b.prop_map(|b| Op::Reset { b }),
        1 => b.prop_map(|b| Op::PlatformReset { b }),
        4 => (b, prop_oneof![6 => Just(Features::V1_DEFINED.0), 1 => 0u64..64, 1 => any::<u64>()])
            .prop_map(|(b, features)| Op::Negotiate { b, features }),
        3 => b.prop_map(|b| Op::QueryQuota { b }),
        6 => (0u8..4, 1u32..3, 0u8..3).prop_map(|(op, n, error)| Op::Fault { op, n, error }),
        3 => (b, 0u8..9, proptest::collection::vec(any::<u8>(), 16))
            .prop_map(|(b, code, bytes)| Op::Garbage { b, code, bytes }),
    ]
}

struct World {
    t: Two,
    handles: [Vec<u32>; 2],
}

impl World {
    fn caller(&self, b: bool) -> (Caller, usize) {
        if b { (self.t.b, 1) } else { (self.t.a, 0) }
    }

    /// Mostly a live handle of the VM; sometimes a stale one it held before, or junk.
    fn handle(&self, b: bool, pick: u8) -> u32 {
        let (c, i) = self.caller(b);
        let live: Vec<u32> = self
            .t
            .host
            .vm(c.vm)
            .unwrap()
            .allocations()
            .map(|(h, _)| h)
            .collect();
        let history = &self.handles[i];
        match pick {
            0..200 if !live.is_empty() => live[usize::from(pick) % live.len()],
            0..230 if !history.is_empty() => history[usize::from(pick) % history.len()],
            _ if pick.is_multiple_of(2) => u32::from(pick) << 8 | 1,
            _ => 0,
        }
    }

    fn apic(b: bool, i: u8) -> u32 {
        let apics = if b { B_APIC } else { A_APIC };
        match i {
            0 | 1 => apics[usize::from(i)],
            2 => (if b { A_APIC } else { B_APIC })[0],
            3 => 0xffff_ffff,
            _ => apics[0] + 7,
        }
    }

    /// Run one op; `Some(status)` for a guest call.
    fn run(&mut self, op: &Op) -> Option<Status> {
        let status = |r: Result<(), Status>| Some(r.err().unwrap_or(Status::SUCCESS));
        match *op {
            Op::Allocate {
                b,
                kind,
                log2,
                index,
            } => {
                // Mostly well-formed: non-MSI kinds keep only absurd counts, MSI small indices.
                let log2 = if kind != 1 && log2 < 6 { 0 } else { log2 };
                let index = if kind == 1 && index < 10 { 0 } else { index };
                let (c, i) = self.caller(b);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                let r = c.allocate(&mut self.t.host, mem, 0x100, StorageKind(kind), log2, index);
                if let Ok(r) = r {
                    self.handles[i].push(r.handle.get());
                }
                status(r.map(|_| ()))
            }
            Op::Activate {
                b,
                pick,
                sub,
                apic,
                vector,
            } => {
                let (c, _) = self.caller(b);
                let h = self.handle(b, pick);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(
                    c.activate(&mut self.t.host, mem, h, sub, Self::apic(b, apic), vector)
                        .map(|_| ()),
                )
            }
            Op::Reserve { b, pick, sub } => {
                let (c, _) = self.caller(b);
                let h = self.handle(b, pick);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.reserve(&mut self.t.host, mem, h, sub).map(|_| ()))
            }
            Op::SetAffinity {
                b,
                pick,
                sub,
                apic,
                vector,
            } => {
                let (c, _) = self.caller(b);
                let h = self.handle(b, pick);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.set_affinity(&mut self.t.host, mem, h, sub, Self::apic(b, apic), vector))
            }
            Op::Deactivate { b, pick, sub } => {
                let (c, _) = self.caller(b);
                let h = self.handle(b, pick);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.deactivate(&mut self.t.host, mem, h, sub))
            }
            Op::Free { b, pick } => {
                let (c, _) = self.caller(b);
                let h = self.handle(b, pick);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.free(&mut self.t.host, mem, h))
            }
            Op::Reset { b } => {
                let (c, _) = self.caller(b);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.reset(&mut self.t.host, mem))
            }
            Op::PlatformReset { b } => {
                let (c, _) = self.caller(b);
                self.t.host.reset_vm(c.vm).unwrap();
                None
            }
            Op::Negotiate { b, features } => {
                let (c, _) = self.caller(b);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(
                    c.negotiate(&mut self.t.host, mem, 1, Features(features))
                        .map(|_| ()),
                )
            }
            Op::QueryQuota { b } => {
                let (c, _) = self.caller(b);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                status(c.query_quota(&mut self.t.host, mem).map(|_| ()))
            }
            Op::Fault { op, n, error } => {
                let op = BackendOp::ALL[usize::from(op)];
                let error = match error {
                    0 => BackendError::VectorsExhausted { cpu: 0 },
                    1 => BackendError::Os { op, errno: 5 },
                    _ => BackendError::RoutesExhausted { capacity: 1 },
                };
                match op {
                    BackendOp::AddRoute | BackendOp::UpdateRoute => {
                        self.t.host.routing_mut().fail_next(op, n, error)
                    }
                    BackendOp::StartIrq | BackendOp::PrepareAffinity => {
                        self.t.host.irqs_mut().fail_next(op, n, error)
                    }
                }
                None
            }
            Op::Garbage { b, code, ref bytes } => {
                let (c, _) = self.caller(b);
                let mem = if b { &self.t.mem_b } else { &self.t.mem_a };
                let code = CallCode::V1[usize::from(code) % CallCode::V1.len()];
                let l = call_layout(code).unwrap();
                let req = &bytes[..l.request_len() as usize];
                Some(
                    c.raw(&mut self.t.host, mem, code, req, l.response_len() as usize)
                        .0,
                )
            }
        }
    }

    /// The one host invariant checker (`vir_host::testing::invariants`, shared with the fuzz
    /// harness and the conformance adapter).
    fn check_invariants(&self) {
        if let Err(v) = check_host(&self.t.host) {
            panic!("host invariant broken: {v}");
        }
    }
}

fn run(mode: IrMode, ops: &[Op]) {
    let mut w = World {
        t: Two::with(
            mode,
            16,
            Quotas {
                irtes: 8,
                vectors: 6,
            },
        ),
        handles: [Vec::new(), Vec::new()],
    };
    // Start with a few allocations per VM so that early operations have handles to use.
    for b in [false, true] {
        for (kind, log2) in [(1, 2), (2, 0), (3, 0)] {
            let op = Op::Allocate {
                b,
                kind,
                log2,
                index: 0,
            };
            assert_eq!(w.run(&op), Some(Status::SUCCESS));
        }
    }
    for op in ops {
        let before = w.t.all_state();
        if let Some(status) = w.run(op) {
            assert!(status.is_known());
            if status != Status::SUCCESS {
                assert_eq!(
                    w.t.all_state(),
                    before,
                    "{op:?} -> {status:?} changed state"
                );
            }
        }
        w.check_invariants();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_posted(ops in proptest::collection::vec(op(), 1..120)) {
        run(IrMode::Posted, &ops);
    }

    #[test]
    fn random_sequences_remapped(ops in proptest::collection::vec(op(), 1..120)) {
        run(IrMode::Remapped, &ops);
    }
}

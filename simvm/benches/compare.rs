//! The three situations side by side: the cost of each workload step for 2048 MSI-X vectors.
//!
//! Timing (criterion): the steps of `vir_simvm::compare` — setup (allocate and request 2048
//! vectors), retarget (move every vector), unplug (4 of 16 vCPUs, a quarter of the vectors) and
//! teardown (free everything) — on bare metal, with an emulated vIOMMU (legacy scheme: every
//! MSI-X access and every invalidation trapped and emulated by the reference host) and with vIR
//! (calls; the MSI-X table mapped). One iteration is one whole step for all 2048 vectors, guest
//! and host and simulated hardware together; the world is built (and brought to the step's
//! starting point) outside the measurement.
//!
//! Before the timings the bench prints the comparison table of one `compare::run` (release
//! build): the exits, device writes and IRTE writes per step and the time measured inside the
//! host's entry points.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use vir_guest::Irq;
use vir_simvm::compare::{
    self, CompareConfig, retarget_step, setup_step, teardown_step, unplug_step,
};
use vir_simvm::situations::{SituationKind, SituationVm};

fn built(kind: SituationKind, config: &CompareConfig) -> SituationVm {
    SituationVm::build(&compare::spec(kind, config)).expect("situation")
}

/// A world at the start of `step`, with the irqs of the setup (if done).
fn at(kind: SituationKind, config: &CompareConfig, step: &str) -> (SituationVm, Vec<Irq>) {
    let mut vm = built(kind, config);
    if step == "setup" {
        return (vm, Vec::new());
    }
    let (irqs, failures) = setup_step(&mut vm, config);
    assert!(failures.is_empty(), "{failures:?}");
    if step == "retarget" || step == "teardown" {
        return (vm, irqs);
    }
    let (_, failures) = retarget_step(&mut vm, &irqs, config);
    assert!(failures.is_empty(), "{failures:?}");
    (vm, irqs)
}

fn steps(c: &mut Criterion) {
    let config = CompareConfig::default();
    let report = compare::run(&config).expect("compare");
    println!("{report}");
    assert!(report.passed());
    for step in ["setup", "retarget", "unplug", "teardown"] {
        let mut group = c.benchmark_group(format!("{step}-2048"));
        for kind in SituationKind::ALL {
            group.bench_function(kind.name(), |b| {
                b.iter_batched(
                    || at(kind, &config, step),
                    |(mut vm, irqs)| {
                        let failures = match step {
                            "setup" => setup_step(&mut vm, &config).1,
                            "retarget" => retarget_step(&mut vm, &irqs, &config).1,
                            "unplug" => unplug_step(&mut vm, &irqs, &config).2,
                            _ => teardown_step(&mut vm, &irqs),
                        };
                        assert!(failures.is_empty(), "{failures:?}");
                        black_box(vm)
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    steps(&mut c);
    c.final_summary();
}

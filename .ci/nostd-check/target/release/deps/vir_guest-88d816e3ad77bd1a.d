/work/wt/i13/.ci/nostd-check/target/release/deps/vir_guest-88d816e3ad77bd1a.d: /work/wt/i13/guest-ref/src/lib.rs /work/wt/i13/guest-ref/src/cpu.rs /work/wt/i13/guest-ref/src/device.rs /work/wt/i13/guest-ref/src/discovery.rs /work/wt/i13/guest-ref/src/domain.rs /work/wt/i13/guest-ref/src/hypercall.rs /work/wt/i13/guest-ref/src/irq.rs /work/wt/i13/guest-ref/src/matrix.rs /work/wt/i13/guest-ref/src/negotiation.rs /work/wt/i13/guest-ref/src/select.rs /work/wt/i13/guest-ref/src/storage.rs /work/wt/i13/guest-ref/src/vir_domain.rs /work/wt/i13/guest-ref/src/vtd_domain.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_guest-88d816e3ad77bd1a.rlib: /work/wt/i13/guest-ref/src/lib.rs /work/wt/i13/guest-ref/src/cpu.rs /work/wt/i13/guest-ref/src/device.rs /work/wt/i13/guest-ref/src/discovery.rs /work/wt/i13/guest-ref/src/domain.rs /work/wt/i13/guest-ref/src/hypercall.rs /work/wt/i13/guest-ref/src/irq.rs /work/wt/i13/guest-ref/src/matrix.rs /work/wt/i13/guest-ref/src/negotiation.rs /work/wt/i13/guest-ref/src/select.rs /work/wt/i13/guest-ref/src/storage.rs /work/wt/i13/guest-ref/src/vir_domain.rs /work/wt/i13/guest-ref/src/vtd_domain.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_guest-88d816e3ad77bd1a.rmeta: /work/wt/i13/guest-ref/src/lib.rs /work/wt/i13/guest-ref/src/cpu.rs /work/wt/i13/guest-ref/src/device.rs /work/wt/i13/guest-ref/src/discovery.rs /work/wt/i13/guest-ref/src/domain.rs /work/wt/i13/guest-ref/src/hypercall.rs /work/wt/i13/guest-ref/src/irq.rs /work/wt/i13/guest-ref/src/matrix.rs /work/wt/i13/guest-ref/src/negotiation.rs /work/wt/i13/guest-ref/src/select.rs /work/wt/i13/guest-ref/src/storage.rs /work/wt/i13/guest-ref/src/vir_domain.rs /work/wt/i13/guest-ref/src/vtd_domain.rs

/work/wt/i13/guest-ref/src/lib.rs:
/work/wt/i13/guest-ref/src/cpu.rs:
/work/wt/i13/guest-ref/src/device.rs:
/work/wt/i13/guest-ref/src/discovery.rs:
/work/wt/i13/guest-ref/src/domain.rs:
/work/wt/i13/guest-ref/src/hypercall.rs:
/work/wt/i13/guest-ref/src/irq.rs:
/work/wt/i13/guest-ref/src/matrix.rs:
/work/wt/i13/guest-ref/src/negotiation.rs:
/work/wt/i13/guest-ref/src/select.rs:
/work/wt/i13/guest-ref/src/storage.rs:
/work/wt/i13/guest-ref/src/vir_domain.rs:
/work/wt/i13/guest-ref/src/vtd_domain.rs:

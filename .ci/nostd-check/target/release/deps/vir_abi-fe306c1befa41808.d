/work/wt/i13/.ci/nostd-check/target/release/deps/vir_abi-fe306c1befa41808.d: /work/wt/i13/abi/src/lib.rs /work/wt/i13/abi/src/call.rs /work/wt/i13/abi/src/discovery.rs /work/wt/i13/abi/src/feature.rs /work/wt/i13/abi/src/hw/mod.rs /work/wt/i13/abi/src/hw/amd.rs /work/wt/i13/abi/src/hw/fields.rs /work/wt/i13/abi/src/hw/msi.rs /work/wt/i13/abi/src/hw/posted.rs /work/wt/i13/abi/src/hw/vtd.rs /work/wt/i13/abi/src/layout.rs /work/wt/i13/abi/src/status.rs /work/wt/i13/abi/src/wire.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_abi-fe306c1befa41808.rlib: /work/wt/i13/abi/src/lib.rs /work/wt/i13/abi/src/call.rs /work/wt/i13/abi/src/discovery.rs /work/wt/i13/abi/src/feature.rs /work/wt/i13/abi/src/hw/mod.rs /work/wt/i13/abi/src/hw/amd.rs /work/wt/i13/abi/src/hw/fields.rs /work/wt/i13/abi/src/hw/msi.rs /work/wt/i13/abi/src/hw/posted.rs /work/wt/i13/abi/src/hw/vtd.rs /work/wt/i13/abi/src/layout.rs /work/wt/i13/abi/src/status.rs /work/wt/i13/abi/src/wire.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_abi-fe306c1befa41808.rmeta: /work/wt/i13/abi/src/lib.rs /work/wt/i13/abi/src/call.rs /work/wt/i13/abi/src/discovery.rs /work/wt/i13/abi/src/feature.rs /work/wt/i13/abi/src/hw/mod.rs /work/wt/i13/abi/src/hw/amd.rs /work/wt/i13/abi/src/hw/fields.rs /work/wt/i13/abi/src/hw/msi.rs /work/wt/i13/abi/src/hw/posted.rs /work/wt/i13/abi/src/hw/vtd.rs /work/wt/i13/abi/src/layout.rs /work/wt/i13/abi/src/status.rs /work/wt/i13/abi/src/wire.rs

/work/wt/i13/abi/src/lib.rs:
/work/wt/i13/abi/src/call.rs:
/work/wt/i13/abi/src/discovery.rs:
/work/wt/i13/abi/src/feature.rs:
/work/wt/i13/abi/src/hw/mod.rs:
/work/wt/i13/abi/src/hw/amd.rs:
/work/wt/i13/abi/src/hw/fields.rs:
/work/wt/i13/abi/src/hw/msi.rs:
/work/wt/i13/abi/src/hw/posted.rs:
/work/wt/i13/abi/src/hw/vtd.rs:
/work/wt/i13/abi/src/layout.rs:
/work/wt/i13/abi/src/status.rs:
/work/wt/i13/abi/src/wire.rs:

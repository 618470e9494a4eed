/work/wt/i13/.ci/nostd-check/target/release/deps/vir_nostd_check-cc3d924b95a892a4.d: src/lib.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_nostd_check-cc3d924b95a892a4.rlib: src/lib.rs

/work/wt/i13/.ci/nostd-check/target/release/deps/libvir_nostd_check-cc3d924b95a892a4.rmeta: src/lib.rs

src/lib.rs:

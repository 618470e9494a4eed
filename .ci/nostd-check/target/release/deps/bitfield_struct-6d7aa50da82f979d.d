/work/wt/i13/.ci/nostd-check/target/release/deps/bitfield_struct-6d7aa50da82f979d.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/attr.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/bitenum.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/traits.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/../README.md

/work/wt/i13/.ci/nostd-check/target/release/deps/libbitfield_struct-6d7aa50da82f979d.so: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/attr.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/bitenum.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/traits.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/../README.md

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/attr.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/bitenum.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/traits.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitfield-struct-0.13.0/src/../README.md:

//! The fuzz targets' corpora on the stable toolchain.
//!
//! * Every file under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` of every target
//!   runs through the same body the cargo-fuzz target runs ([`Target::run`]) and must not
//!   produce a finding: seeds keep working, and a saved crash input stays fixed (its regression
//!   copy lives in the corpus).
//! * The committed seeds are exactly what `vir_harness::corpus::seeds` generates; run with
//!   `VIR_BLESS=1` to rewrite them after changing a generator or an input format.

use std::path::PathBuf;

use vir_harness::corpus::{self, artifacts_dir, corpus_dir, files_in, seeds};
use vir_harness::{Outcome, Target};

fn fuzz_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
}

#[test]
fn committed_seeds_equal_the_generator() {
    let root = fuzz_root();
    if std::env::var_os("VIR_BLESS").is_some_and(|v| v == "1") {
        let written = corpus::write_seeds(&root).expect("write the seed corpora");
        assert!(!written.is_empty());
        return;
    }
    for t in Target::ALL {
        for s in seeds(t) {
            let path = corpus_dir(&root, t).join(s.name);
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (run with VIR_BLESS=1 to generate)", path.display())
            });
            assert_eq!(
                committed,
                s.bytes,
                "{} differs from its generator (run with VIR_BLESS=1 to rewrite)",
                path.display()
            );
        }
        assert!(
            artifacts_dir(&root, t).join(".gitkeep").is_file(),
            "fuzz/artifacts/{t}/.gitkeep keeps the crash directory in the tree"
        );
    }
}

#[test]
fn every_corpus_and_artifact_file_replays_without_a_finding() {
    let root = fuzz_root();
    let mut replayed = 0;
    for t in Target::ALL {
        let mut files = files_in(&corpus_dir(&root, t)).expect("read corpus dir");
        files.extend(files_in(&artifacts_dir(&root, t)).expect("read artifacts dir"));
        assert!(
            files.len() >= seeds(t).len(),
            "{t}: {} files, fewer than its {} seeds",
            files.len(),
            seeds(t).len()
        );
        for f in files {
            let data = std::fs::read(&f).expect("read input");
            match t.run(&data) {
                Ok(_) => replayed += 1,
                Err(finding) => panic!("{}: {finding}", f.display()),
            }
        }
    }
    assert!(replayed >= 20, "only {replayed} inputs replayed");
}

#[test]
fn seeds_reach_what_they_are_named_for() {
    // The seeds are not just non-crashing: each reaches the part of its target it exists for.
    let run = |t: Target, name: &str| {
        let s = seeds(t).into_iter().find(|s| s.name == name).expect(name);
        t.run(&s.bytes).unwrap_or_else(|f| panic!("{name}: {f}"))
    };
    let Outcome::Calls(r) = run(Target::HostCalls, "lifecycle-three-bindings") else {
        panic!("host_calls outcome")
    };
    assert_eq!(r.statuses.get(&vir_abi::status::Status::SUCCESS), Some(&8));
    let Outcome::Calls(r) = run(Target::HostCalls, "quota-and-table-pressure") else {
        panic!("host_calls outcome")
    };
    assert_eq!(
        r.statuses.get(&vir_abi::status::Status::QUOTA_EXCEEDED),
        Some(&1)
    );
    assert_eq!(
        r.statuses.get(&vir_abi::status::Status::TABLE_FULL),
        Some(&1)
    );
    let Outcome::Storage(r) = run(Target::HostileStorage, "every-kind-posted") else {
        panic!("hostile_storage outcome")
    };
    assert!(r.forged_tried >= 10, "{r:?}");
    assert!(r.blocked >= 8, "{r:?}");
    assert_eq!(r.delivered_outside, 0);
    let Outcome::Toctou(r) = run(Target::Toctou, "doorbell-negotiate") else {
        panic!("toctou outcome")
    };
    assert_eq!(r.watched_reads, 2);
    let Outcome::Decode(r) = run(Target::DecodeWire, "guest-discovery-doorbell") else {
        panic!("decode_wire outcome")
    };
    // 13 structures and the guest's discovery (vIR found); the register part's info leaf is 0.
    assert_eq!((r.attempted, r.decoded), (15, 14));
    let Outcome::Decode(r) = run(Target::DecodeHw, "vtd-remappable-posted") else {
        panic!("decode_hw outcome")
    };
    assert_eq!(r.decoded, 7);
}

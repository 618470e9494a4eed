//! The committed generated files equal what the abi generates now.
//!
//! On a difference the test fails with the first differing line; `VIR_BLESS=1 cargo test -p
//! vir-spec` rewrites the files instead (review the diff, then commit).

use vir_spec::files::{FileState, bless_requested, check_generated};
use vir_spec::{CHECK_LAYOUT_PATH, HEADER_PATH, SPEC_PATH, cheader, default_root, tables};

fn check(rel: &str, generated: &str) -> FileState {
    let path = default_root().join(rel);
    match check_generated(&path, generated, bless_requested()) {
        Ok(state) => state,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn c_header_is_up_to_date() {
    let header = cheader::generate_header().unwrap_or_else(|e| panic!("{e}"));
    let state = check(HEADER_PATH, &header);
    assert!(matches!(state, FileState::UpToDate | FileState::Blessed));
}

#[test]
fn c_layout_checks_are_up_to_date() {
    let checks = cheader::generate_check_layout().unwrap_or_else(|e| panic!("{e}"));
    let state = check(CHECK_LAYOUT_PATH, &checks);
    assert!(matches!(state, FileState::UpToDate | FileState::Blessed));
}

/// The generated regions of spec/vir-v1.md equal the tables generated from the abi; blessing
/// rewrites only the regions, never the prose.
#[test]
fn spec_generated_regions_are_up_to_date() {
    let path = default_root().join(SPEC_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let regenerated = tables::regenerate(&committed).unwrap_or_else(|e| panic!("{SPEC_PATH}: {e}"));
    let state = check(SPEC_PATH, &regenerated);
    assert!(matches!(state, FileState::UpToDate | FileState::Blessed));
}

/// Every wire structure of the abi has a layout region in the specification, and every layout
/// region names a wire structure.
#[test]
fn spec_has_a_layout_region_for_every_wire_struct() {
    let path = default_root().join(SPEC_PATH);
    let spec = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if let Err(e) = tables::check_layout_regions(&spec) {
        panic!("{SPEC_PATH}: {e}");
    }
    let regions = tables::regions(&spec).unwrap_or_else(|e| panic!("{e}"));
    for kind in [
        tables::RegionKind::Statuses,
        tables::RegionKind::Calls,
        tables::RegionKind::Features,
    ] {
        assert!(
            regions.iter().any(|r| r.kind == kind),
            "{SPEC_PATH} has no `{}` region",
            kind.open_marker()
        );
    }
}

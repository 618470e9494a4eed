//! The committed generated files equal what the abi generates now.
//!
//! On a difference the test fails with the first differing line; `VIR_BLESS=1 cargo test -p
//! vir-spec` rewrites the files instead (review the diff, then commit).

use vir_spec::files::{FileState, bless_requested, check_generated};
use vir_spec::{CHECK_LAYOUT_PATH, HEADER_PATH, SPEC_PATH, cheader, default_root, tables};

/// Compare (or, with `VIR_BLESS=1`, rewrite) one generated file. Without blessing the file must
/// be exactly up to date; with blessing it is up to date afterwards.
fn check(rel: &str, generated: &str) {
    let path = default_root().join(rel);
    let bless = bless_requested();
    match check_generated(&path, generated, bless) {
        Ok(state) if bless => assert!(matches!(state, FileState::UpToDate | FileState::Blessed)),
        Ok(state) => assert_eq!(state, FileState::UpToDate),
        Err(e) => panic!("{e}"),
    }
    let on_disk =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        on_disk == generated,
        "{rel} differs from the generated text after the check"
    );
}

#[test]
fn c_header_is_up_to_date() {
    let header = cheader::generate_header().unwrap_or_else(|e| panic!("{e}"));
    check(HEADER_PATH, &header);
}

#[test]
fn c_layout_checks_are_up_to_date() {
    let checks = cheader::generate_check_layout().unwrap_or_else(|e| panic!("{e}"));
    check(CHECK_LAYOUT_PATH, &checks);
}

/// The generated regions of spec/vir-v1.md equal the tables generated from the abi; blessing
/// rewrites only the regions, never the prose.
#[test]
fn spec_generated_regions_are_up_to_date() {
    let path = default_root().join(SPEC_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let regenerated = tables::regenerate(&committed).unwrap_or_else(|e| panic!("{SPEC_PATH}: {e}"));
    check(SPEC_PATH, &regenerated);
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

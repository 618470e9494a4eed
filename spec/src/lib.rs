//! # vir-spec — keeps the vIR specification, the ABI crate and the C header in agreement
//!
//! The `vir-abi` crate is authoritative for every number and layout of vIR version 1. This crate
//! derives everything else from it and checks what cannot be derived:
//!
//! * [`tables`]: Markdown tables (wire layouts, statuses, calls, features) generated from the
//!   abi's descriptors, and [`tables::regenerate`], which rewrites the generated regions of
//!   `spec/vir-v1.md` between marker lines such as `<!-- vir:layout QueryResponse -->` and
//!   `<!-- /vir:layout -->`, leaving the prose untouched;
//! * [`requirements`]: the typed requirement register parsed from `spec/requirements.tsv`, the
//!   `**VIR-…**` tags of the specification, and the consistency checks between the two (IDs
//!   well formed and unique, same set, every normative statement tagged, RFC 2119 level equal);
//! * [`traceability`]: which requirement IDs the Rust sources of the workspace cite, from tests
//!   and from other code, and the coverage report built from it;
//! * [`cheader`]: the C11 header `abi/include/vir_abi.h` and the layout checks
//!   `spec/c/check_layout.h`, both generated from the abi;
//! * [`vectors`]: the golden byte vectors of `spec/vectors/`, their text format, and their
//!   decoding and re-encoding with the abi;
//! * [`files`]: comparison of a generated file with its committed copy, and *blessing* (rewriting
//!   the committed copy) when the environment variable `VIR_BLESS=1` is set.
//!
//! Every generated artefact is checked by a test of this crate; when the abi changes, run
//!
//! ```text
//! VIR_BLESS=1 cargo test -p vir-spec
//! ```
//!
//! to rewrite the generated files and regions, then review and commit the difference.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cheader;
pub mod files;
pub mod requirements;
pub mod tables;
pub mod traceability;
pub mod vectors;

use std::path::{Path, PathBuf};

/// Path of the specification, relative to the workspace root.
pub const SPEC_PATH: &str = "spec/vir-v1.md";
/// Path of the requirement register, relative to the workspace root.
pub const REQUIREMENTS_PATH: &str = "spec/requirements.tsv";
/// Path of the generated C header, relative to the workspace root.
pub const HEADER_PATH: &str = "abi/include/vir_abi.h";
/// Path of the generated C layout checks, relative to the workspace root.
pub const CHECK_LAYOUT_PATH: &str = "spec/c/check_layout.h";
/// Path of the C check program, relative to the workspace root.
pub const CHECK_ABI_C_PATH: &str = "spec/c/check_abi.c";
/// Directory of the golden vectors, relative to the workspace root.
pub const VECTORS_DIR: &str = "spec/vectors";

/// The workspace root this crate was built in (the parent of its manifest directory).
///
/// Tools that run elsewhere take the root as an argument instead; every function of this crate
/// that reads files takes an explicit root.
pub fn default_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

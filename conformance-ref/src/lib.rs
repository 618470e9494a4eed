//! # vir-conform-ref — the reference host under the conformance suite
//!
//! `vir-conform` checks any host through its [`HostUnderTest`](vir_conform::HostUnderTest) and
//! [`HostFactory`](vir_conform::HostFactory) traits and depends on no host implementation. This
//! crate is the adapter for the reference host:
//!
//! * [`ReferenceHost`] / [`ReferenceFactory`] — `vir-host` over its in-memory backends (the
//!   `test-utils` feature of `vir-host`), offering every optional hook of the suite; `vir
//!   conform` runs the suite against it;
//! * [`mutants`] — the reference host with one behaviour broken each, to show that the suite
//!   catches the departure and names the requirement it breaks (`vir conform --host
//!   mutant:NAME`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod mutants;
pub mod reference;

pub use reference::{ReferenceConfig, ReferenceFactory, ReferenceHost};

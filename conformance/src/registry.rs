//! The checks as data, the requirement register they refer to, and the host requirements the
//! suite has no check for (with the reason).

use std::sync::OnceLock;

use vir_spec::requirements::{Level, Requirement, Side, TsvError, parse_tsv};

use crate::ctx::Ctx;
use crate::hut::{HostUnderTest, Variant};
use crate::outcome::{CheckResult, Outcome};

/// Which host a check runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A fresh host of the fixture ([`crate::hut::HostFactory::create`]).
    Fixture,
    /// A fresh host in a variant configuration ([`crate::hut::HostFactory::create_variant`]).
    Variant(Variant),
}

/// One check: the requirement IDs it verifies, its name, a one-line description and the code.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The requirement IDs (host side) this check verifies.
    pub ids: &'static [&'static str],
    /// Unique snake-case name.
    pub name: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    /// The host it needs.
    pub host: HostKind,
    /// Runs the check against a freshly created host.
    pub run: fn(&mut dyn HostUnderTest) -> Outcome,
}

impl Check {
    /// The area of the check: the AREA part of its first requirement ID (`ALC`, `CALL`, …).
    pub fn area(&self) -> &'static str {
        self.ids
            .first()
            .and_then(|id| id.split('-').nth(1))
            .unwrap_or("MISC")
    }

    /// Whether the check's name or one of its IDs contains `pattern` (ASCII case-insensitive).
    pub fn matches(&self, pattern: &str) -> bool {
        let p = pattern.to_ascii_lowercase();
        self.name.to_ascii_lowercase().contains(&p)
            || self
                .ids
                .iter()
                .any(|id| id.to_ascii_lowercase().contains(&p))
    }
}

/// Run a check body in a fresh [`Ctx`] over `host` and turn its result into an [`Outcome`].
pub fn execute(host: &mut dyn HostUnderTest, body: fn(&mut Ctx<'_>) -> CheckResult) -> Outcome {
    let mut ctx = Ctx::new(host);
    match body(&mut ctx) {
        Ok(()) => Outcome::Pass,
        Err(stop) => stop.into(),
    }
}

/// Declare a [`Check`] whose body is a `fn(&mut Ctx) -> CheckResult`.
macro_rules! check {
    ([$($id:literal),+ $(,)?], $name:literal, $desc:literal, $body:path) => {
        $crate::registry::Check {
            ids: &[$($id),+],
            name: $name,
            description: $desc,
            host: $crate::registry::HostKind::Fixture,
            run: |h| $crate::registry::execute(h, $body),
        }
    };
    ([$($id:literal),+ $(,)?], $name:literal, $desc:literal, $body:path, $variant:expr) => {
        $crate::registry::Check {
            ids: &[$($id),+],
            name: $name,
            description: $desc,
            host: $crate::registry::HostKind::Variant($variant),
            run: |h| $crate::registry::execute(h, $body),
        }
    };
}
pub(crate) use check;

/// Every check of the suite, grouped by area in specification order.
pub fn all() -> Vec<&'static Check> {
    use crate::checks::*;
    [
        discovery::CHECKS,
        common::CHECKS,
        memory::CHECKS,
        bindings::CHECKS,
        negotiate::CHECKS,
        allocate::CHECKS,
        activate::CHECKS,
        lifecycle::CHECKS,
        formats::CHECKS,
        security::CHECKS,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Host MUST requirements the suite has no check for, and why.
pub const UNCHECKED: &[(&str, &str)] = &[
    (
        "VIR-CALL-H-009",
        "needs vCPUs calling concurrently; the transport is sequential",
    ),
    (
        "VIR-MEM-H-009",
        "needs a virtual IOMMU with DMA mappings that differ from guest-physical addresses",
    ),
    (
        "VIR-VMS-H-003",
        "needs save/restore or migration of a negotiated VM to another host",
    ),
    (
        "VIR-FMT-H-008",
        "interrupt-entry-cache invalidation is internal to the IOMMU (needs hardware or a cache model)",
    ),
    (
        "VIR-LEG-H-006",
        "needs emulated (non-vIR) devices with MSI/MSI-X emulation in the fixture",
    ),
    (
        "VIR-ALC-H-013",
        "needs about 4.3e9 allocations through the transport, or a hook to age a host's handle generations",
    ),
    (
        "VIR-SEC-H-006",
        "needs a device whose requester id is shared with another VM or the host; such a fixture is a host configuration the reference host refuses at VM creation",
    ),
    (
        "VIR-SEC-H-013",
        "is about VM creation by the VMM, which the transport does not reach",
    ),
];

/// The reason a requirement has no check (`None` if it is not listed in [`UNCHECKED`]).
pub fn unchecked_reason(id: &str) -> Option<&'static str> {
    UNCHECKED
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, why)| *why)
}

static REGISTER: OnceLock<Result<Vec<Requirement>, TsvError>> = OnceLock::new();

/// The requirement register (`spec/requirements.tsv`, embedded at build time).
pub fn requirements() -> Result<&'static [Requirement], TsvError> {
    REGISTER
        .get_or_init(|| parse_tsv(include_str!("../../spec/requirements.tsv")))
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// The host-side requirements of the register.
pub fn host_requirements() -> Result<Vec<&'static Requirement>, TsvError> {
    Ok(requirements()?
        .iter()
        .filter(|r| r.side == Side::Host)
        .collect())
}

/// The level of a requirement ID (`None` if the register does not list it).
pub fn level(id: &str) -> Option<Level> {
    requirements()
        .ok()?
        .iter()
        .find(|r| r.id.to_string() == id)
        .map(|r| r.level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn check_names_are_unique_snake_case_with_descriptions() {
        let mut seen = BTreeSet::new();
        for c in all() {
            assert!(seen.insert(c.name), "duplicate check name {}", c.name);
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{} is not snake case",
                c.name
            );
            assert!(!c.description.is_empty(), "{} has no description", c.name);
            assert!(!c.ids.is_empty(), "{} names no requirement", c.name);
        }
    }

    #[test]
    fn every_check_id_is_a_host_requirement_of_the_register() {
        let host: BTreeSet<String> = host_requirements()
            .unwrap()
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        for c in all() {
            for id in c.ids {
                assert!(
                    host.contains(*id),
                    "{} cites {id}, not a host requirement",
                    c.name
                );
            }
        }
    }

    #[test]
    fn checks_do_not_mix_mandatory_and_advisory_ids() {
        for c in all() {
            let levels: BTreeSet<_> = c
                .ids
                .iter()
                .map(|id| level(id) == Some(Level::Must))
                .collect();
            assert_eq!(levels.len(), 1, "{} mixes MUST and SHOULD/MAY ids", c.name);
        }
    }

    #[test]
    fn every_host_must_is_checked_or_listed_as_unchecked_never_both() {
        let checked: BTreeSet<&str> = all().iter().flat_map(|c| c.ids.iter().copied()).collect();
        for r in host_requirements().unwrap() {
            if r.level != Level::Must {
                continue;
            }
            let id = r.id.to_string();
            let has_check = checked.contains(id.as_str());
            let listed = unchecked_reason(&id).is_some();
            assert!(
                has_check != listed,
                "{id}: checked {has_check}, listed as unchecked {listed}"
            );
        }
        for (id, _) in UNCHECKED {
            assert_eq!(
                level(id),
                Some(Level::Must),
                "{id} in UNCHECKED is not a MUST"
            );
        }
    }

    #[test]
    fn areas_and_patterns() {
        let c = all()
            .into_iter()
            .find(|c| c.ids.contains(&"VIR-CALL-H-002"))
            .unwrap();
        assert_eq!(c.area(), "CALL");
        assert!(c.matches("vir-call-h-002"));
        assert!(c.matches(&c.name.to_ascii_uppercase()));
        assert!(!c.matches("VIR-ZZZ"));
    }
}

//! Negotiation: offer (QUERY), accept (NEGOTIATE), commit (host), confirm (guest).
//!
//! The guest accepts `wanted ∩ known ∩ offered`: bits it does not know are ignored even when
//! offered (`VIR-NEG-G-001`), bits not offered are never accepted (`VIR-NEG-G-003`). The
//! NEGOTIATE response must echo the request exactly; otherwise the guest calls RESET and stays on
//! the legacy scheme (`VIR-NEG-G-002`). Either both sides switch or neither does (B3).

use core::fmt;
use vir_abi::VIR_VERSION_1;
use vir_abi::feature::Features;
use vir_abi::status::{Status, errno};
use vir_abi::wire::{MSI_MAX_LOG2, MessageFormat, NegotiateRequest, vm_state};
use zerocopy::little_endian::{U16, U32, U64};

use crate::hypercall::{self, CallError, Hypervisor};

/// The features this guest implementation knows: every version 1 feature.
pub const KNOWN_FEATURES: Features = Features::V1_DEFINED;

/// Features of which at least one must be accepted for a session to be useful.
pub const STORAGE_FEATURES: Features =
    Features(Features::MSI.0 | Features::MSIX.0 | Features::IMS_DEVICE.0 | Features::IMS_SYSTEM.0);

/// A committed and confirmed vIR session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// The version in force.
    pub version: u16,
    /// The features in force.
    pub features: Features,
    /// The host's session number.
    pub session: u32,
    /// The format of the messages the host returns (VT-d remappable or AMD-Vi).
    pub message_format: MessageFormat,
    /// The largest MSI block, as log2 of the vector count (clamped to 5).
    pub max_msi_log2: u8,
    /// Remapping entries the VM may hold at once (from QUERY).
    pub irte_quota: u32,
    /// Host vectors the VM may hold at once (from QUERY).
    pub vector_quota: u32,
}

/// Why negotiation did not produce a session. In every case the VM is left in (or returned to)
/// the legacy state, as far as the host lets the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// This guest already holds a session; a reset must come first.
    AlreadyNegotiated {
        /// The session number in force.
        session: u32,
    },
    /// QUERY failed.
    Query(CallError),
    /// QUERY reported a session inherited from a previous kernel (kexec) and the RESET that ends
    /// it failed.
    InheritedSessionReset(CallError),
    /// The host's version range does not contain version 1.
    NoCommonVersion {
        /// Lowest version offered.
        min: u16,
        /// Highest version offered.
        max: u16,
    },
    /// The host announces a message format a vIR host may not use (only VT-d remappable and
    /// AMD-Vi are allowed, `VIR-FMT-H-002`).
    UnsupportedMessageFormat(MessageFormat),
    /// No storage feature is both known, wanted and offered: a session would be useless.
    NoCommonFeatures {
        /// The host's offer.
        offered: Features,
        /// The features the guest asked for.
        wanted: Features,
    },
    /// NEGOTIATE failed; the host did not switch.
    Negotiate(CallError),
    /// The NEGOTIATE response differs from the request (`VIR-NEG-G-002`); RESET was called.
    ConfirmMismatch {
        /// Version requested.
        requested_version: u16,
        /// Features requested.
        requested_features: Features,
        /// Version the host committed.
        confirmed_version: u16,
        /// Features the host committed.
        confirmed_features: Features,
        /// Status of the RESET the guest made in response.
        reset: Status,
    },
}

impl NegotiationError {
    /// The errno a kernel reports (positive).
    pub const fn errno(&self) -> i32 {
        match self {
            Self::AlreadyNegotiated { .. } => errno::EBUSY,
            Self::Query(e) | Self::InheritedSessionReset(e) | Self::Negotiate(e) => e.errno(),
            Self::NoCommonVersion { .. }
            | Self::UnsupportedMessageFormat(_)
            | Self::ConfirmMismatch { .. } => errno::EPROTO,
            Self::NoCommonFeatures { .. } => errno::EOPNOTSUPP,
        }
    }
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyNegotiated { session } => {
                write!(f, "vIR session {session} already in force")
            }
            Self::Query(e) | Self::Negotiate(e) => write!(f, "{e}"),
            Self::InheritedSessionReset(e) => write!(f, "reset of inherited session: {e}"),
            Self::NoCommonVersion { min, max } => write!(
                f,
                "host offers versions {min}..={max}, guest speaks {VIR_VERSION_1}"
            ),
            Self::UnsupportedMessageFormat(m) => write!(f, "host message format {m:?}"),
            Self::NoCommonFeatures { offered, wanted } => {
                write!(
                    f,
                    "no storage feature in common (offered {offered}, wanted {wanted})"
                )
            }
            Self::ConfirmMismatch {
                requested_version,
                requested_features,
                confirmed_version,
                confirmed_features,
                reset,
            } => write!(
                f,
                "NEGOTIATE confirmed version {confirmed_version} features {confirmed_features}, \
                 requested {requested_version} {requested_features}; RESET returned {reset}"
            ),
        }
    }
}

/// Runs negotiation for the features in `wanted` (restricted to [`KNOWN_FEATURES`]).
///
/// A session left by a previous kernel (QUERY reports `NEGOTIATED`, e.g. after kexec) is ended
/// with RESET first: its allocations belong to nobody any more.
pub fn negotiate<H: Hypervisor + ?Sized>(
    hv: &mut H,
    wanted: Features,
) -> Result<Session, NegotiationError> {
    let mut offer = hypercall::query(hv).map_err(NegotiationError::Query)?;
    if offer.vm_state == vm_state::NEGOTIATED {
        hypercall::reset(hv).map_err(NegotiationError::InheritedSessionReset)?;
        offer = hypercall::query(hv).map_err(NegotiationError::Query)?;
    }
    let (min, max) = (offer.min_version.get(), offer.max_version.get());
    if min > VIR_VERSION_1 || max < VIR_VERSION_1 {
        return Err(NegotiationError::NoCommonVersion { min, max });
    }
    let format = MessageFormat(offer.message_format);
    if format != MessageFormat::VTD_REMAPPABLE && format != MessageFormat::AMD_VI {
        return Err(NegotiationError::UnsupportedMessageFormat(format));
    }
    let offered = Features(offer.features_offered.get());
    // VIR-NEG-G-001 (unknown offered bits ignored) and VIR-NEG-G-003 (only offered bits).
    let accept = wanted.intersection(KNOWN_FEATURES).intersection(offered);
    if accept.intersection(STORAGE_FEATURES).is_empty() {
        return Err(NegotiationError::NoCommonFeatures { offered, wanted });
    }
    let request = NegotiateRequest {
        version: U16::new(VIR_VERSION_1),
        reserved0: U16::ZERO,
        reserved1: U32::ZERO,
        features: U64::new(accept.bits()),
    };
    let confirm = hypercall::negotiate(hv, &request).map_err(NegotiationError::Negotiate)?;
    let (cv, cf) = (confirm.version.get(), Features(confirm.features.get()));
    if cv != VIR_VERSION_1 || cf != accept {
        // VIR-NEG-G-002: the host committed something else; undo it.
        let reset = match hypercall::reset(hv) {
            Ok(()) => Status::SUCCESS,
            Err(e) => e.status,
        };
        return Err(NegotiationError::ConfirmMismatch {
            requested_version: VIR_VERSION_1,
            requested_features: accept,
            confirmed_version: cv,
            confirmed_features: cf,
            reset,
        });
    }
    Ok(Session {
        version: cv,
        features: cf,
        session: confirm.session.get(),
        message_format: format,
        max_msi_log2: offer.max_msi_log2.min(MSI_MAX_LOG2),
        irte_quota: offer.irte_quota.get(),
        vector_quota: offer.vector_quota.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use vir_abi::call::CallCode;
    use vir_abi::wire::{NegotiateResponse, QueryResponse};
    use zerocopy::{FromBytes, IntoBytes};

    /// A scripted host: a QUERY answer, a NEGOTIATE behaviour, a log.
    struct Scripted {
        query: QueryResponse,
        /// `None`: echo the request; `Some(f)`: confirm features `f`.
        confirm_features: Option<u64>,
        confirm_version: Option<u16>,
        negotiate_status: Status,
        log: Vec<(CallCode, Vec<u8>)>,
    }

    impl Scripted {
        fn new(offered: u64) -> Self {
            let query = QueryResponse {
                min_version: U16::new(1),
                max_version: U16::new(1),
                message_format: MessageFormat::VTD_REMAPPABLE.0,
                max_msi_log2: 5,
                features_offered: U64::new(offered),
                irte_quota: U32::new(64),
                vector_quota: U32::new(32),
                ..Default::default()
            };
            Scripted {
                query,
                confirm_features: None,
                confirm_version: None,
                negotiate_status: Status::SUCCESS,
                log: Vec::new(),
            }
        }
        fn codes(&self) -> Vec<CallCode> {
            self.log.iter().map(|(c, _)| *c).collect()
        }
        fn negotiated_features(&self) -> Option<u64> {
            self.log
                .iter()
                .find(|(c, _)| *c == CallCode::NEGOTIATE)
                .map(|(_, req)| {
                    NegotiateRequest::read_from_bytes(req)
                        .unwrap()
                        .features
                        .get()
                })
        }
    }

    impl Hypervisor for Scripted {
        fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
            self.log.push((code, request.to_vec()));
            match code {
                CallCode::QUERY => {
                    response.copy_from_slice(self.query.as_bytes());
                    // After a reset the VM is legacy.
                    Status::SUCCESS
                }
                CallCode::NEGOTIATE => {
                    if self.negotiate_status != Status::SUCCESS {
                        return self.negotiate_status;
                    }
                    let req = NegotiateRequest::read_from_bytes(request).unwrap();
                    let resp = NegotiateResponse {
                        version: U16::new(self.confirm_version.unwrap_or(req.version.get())),
                        reserved0: U16::ZERO,
                        session: U32::new(7),
                        features: U64::new(self.confirm_features.unwrap_or(req.features.get())),
                    };
                    response.copy_from_slice(resp.as_bytes());
                    Status::SUCCESS
                }
                CallCode::RESET => {
                    self.query.vm_state = vm_state::LEGACY;
                    Status::SUCCESS
                }
                _ => Status::UNKNOWN_CALL,
            }
        }
    }

    #[test]
    fn vir_neg_g_001_unknown_offered_bits_are_ignored() {
        // Offered: all of v1, a future minor bit (6), a planned extension (32), a vendor bit (60).
        let mut hv = Scripted::new(Features::V1_DEFINED.0 | 1 << 6 | 1 << 32 | 1 << 60);
        let s = negotiate(&mut hv, Features(u64::MAX)).unwrap();
        assert_eq!(hv.negotiated_features(), Some(Features::V1_DEFINED.0));
        assert_eq!(s.features, Features::V1_DEFINED);
        assert_eq!(
            s,
            Session {
                version: 1,
                features: Features::V1_DEFINED,
                session: 7,
                message_format: MessageFormat::VTD_REMAPPABLE,
                max_msi_log2: 5,
                irte_quota: 64,
                vector_quota: 32,
            }
        );
        assert_eq!(hv.codes(), [CallCode::QUERY, CallCode::NEGOTIATE]);
    }

    #[test]
    fn vir_neg_g_003_only_offered_bits_are_accepted() {
        let mut hv = Scripted::new((Features::MSIX | Features::RESERVATION).0);
        let s = negotiate(&mut hv, KNOWN_FEATURES).unwrap();
        assert_eq!(
            hv.negotiated_features(),
            Some((Features::MSIX | Features::RESERVATION).0)
        );
        assert_eq!(s.features, Features::MSIX | Features::RESERVATION);
        // The wanted set restricts further.
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        negotiate(&mut hv, Features::MSI | Features::IMS_SYSTEM).unwrap();
        assert_eq!(
            hv.negotiated_features(),
            Some((Features::MSI | Features::IMS_SYSTEM).0)
        );
    }

    #[test]
    fn vir_neg_g_002_confirm_mismatch_calls_reset() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.confirm_features = Some((Features::MSI | Features::MSIX).0);
        let err = negotiate(&mut hv, KNOWN_FEATURES).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::ConfirmMismatch {
                requested_version: 1,
                requested_features: Features::V1_DEFINED,
                confirmed_version: 1,
                confirmed_features: Features::MSI | Features::MSIX,
                reset: Status::SUCCESS,
            }
        );
        assert_eq!(err.errno(), errno::EPROTO);
        assert_eq!(
            hv.codes(),
            [CallCode::QUERY, CallCode::NEGOTIATE, CallCode::RESET]
        );
    }

    #[test]
    fn vir_neg_g_002_confirmed_version_mismatch_calls_reset() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.confirm_version = Some(2);
        let err = negotiate(&mut hv, KNOWN_FEATURES).unwrap_err();
        assert!(matches!(
            err,
            NegotiationError::ConfirmMismatch {
                confirmed_version: 2,
                reset: Status::SUCCESS,
                ..
            }
        ));
        assert_eq!(hv.codes().last(), Some(&CallCode::RESET));
    }

    #[test]
    fn vir_neg_g_002_exact_echo_does_not_reset() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        negotiate(&mut hv, KNOWN_FEATURES).unwrap();
        assert!(!hv.codes().contains(&CallCode::RESET));
    }

    #[test]
    fn vir_sta_g_001_negotiate_status_is_surfaced_without_reset() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.negotiate_status = Status::INVALID_STATE;
        let err = negotiate(&mut hv, KNOWN_FEATURES).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::Negotiate(CallError {
                call: CallCode::NEGOTIATE,
                status: Status::INVALID_STATE
            })
        );
        assert_eq!(err.errno(), errno::EINVAL);
        assert_eq!(hv.codes(), [CallCode::QUERY, CallCode::NEGOTIATE]);
    }

    #[test]
    fn inherited_session_is_reset_before_negotiating() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.query.vm_state = vm_state::NEGOTIATED;
        negotiate(&mut hv, KNOWN_FEATURES).unwrap();
        assert_eq!(
            hv.codes(),
            [
                CallCode::QUERY,
                CallCode::RESET,
                CallCode::QUERY,
                CallCode::NEGOTIATE
            ]
        );
    }

    #[test]
    fn version_format_and_feature_mismatches_stay_legacy_without_negotiate() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.query.min_version = U16::new(2);
        hv.query.max_version = U16::new(4);
        assert_eq!(
            negotiate(&mut hv, KNOWN_FEATURES),
            Err(NegotiationError::NoCommonVersion { min: 2, max: 4 })
        );
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.query.message_format = MessageFormat::X86_COMPAT.0;
        assert_eq!(
            negotiate(&mut hv, KNOWN_FEATURES),
            Err(NegotiationError::UnsupportedMessageFormat(
                MessageFormat::X86_COMPAT
            ))
        );
        // Only RESERVATION and QUOTA_QUERY in common: no storage kind, no session.
        let mut hv = Scripted::new((Features::RESERVATION | Features::QUOTA_QUERY).0 | 1 << 7);
        let err = negotiate(&mut hv, KNOWN_FEATURES).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::NoCommonFeatures {
                offered: Features((Features::RESERVATION | Features::QUOTA_QUERY).0 | 1 << 7),
                wanted: KNOWN_FEATURES,
            }
        );
        assert_eq!(err.errno(), errno::EOPNOTSUPP);
        assert_eq!(hv.codes(), [CallCode::QUERY]);
    }

    #[test]
    fn max_msi_log2_is_clamped_to_five() {
        let mut hv = Scripted::new(Features::V1_DEFINED.0);
        hv.query.max_msi_log2 = 9;
        assert_eq!(negotiate(&mut hv, KNOWN_FEATURES).unwrap().max_msi_log2, 5);
    }
}

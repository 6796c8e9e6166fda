//! Names the reason a TLS handshake was refused, as a short bounded label for the
//! `seam_tls_handshakes_refused_total` counter and the log line: operators see at a glance
//! whether peers come with expired certificates, from a foreign CA, or too old a protocol.

use rustls::{CertificateError, Error, PeerIncompatible};

/// The label for a failed server-side handshake, from the error tokio-rustls returned.
pub fn reason(err: &std::io::Error) -> &'static str {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    {
        Some(tls) => reason_of(tls),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => "closed_by_peer",
        None => "io",
    }
}

fn reason_of(err: &Error) -> &'static str {
    match err {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not_yet_valid",
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "unknown_ca",
        Error::InvalidCertificate(_) => "invalid_certificate",
        Error::PeerIncompatible(
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "alert_from_peer",
        Error::InvalidMessage(_) | Error::InappropriateHandshakeMessage { .. } => "malformed",
        Error::InappropriateMessage { .. } => "malformed",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_common_refusals() {
        let wrap = |err: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        let cases = [
            (
                wrap(Error::NoCertificatesPresented),
                "no_client_certificate",
            ),
            (
                wrap(Error::InvalidCertificate(CertificateError::Expired)),
                "expired",
            ),
            (
                wrap(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "unknown_ca",
            ),
            (
                wrap(Error::PeerIncompatible(
                    PeerIncompatible::SupportedVersionsExtensionRequired,
                )),
                "protocol_version",
            ),
            (
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                "closed_by_peer",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(reason(&err), want, "{err:?}");
        }
    }
}

//! How each side checks the other's certificate, beyond what webpki does
//! by itself:
//!
//! - [`Pinned`]: a client that accepts exactly the certificate whose
//!   SHA-256 fingerprint `serve` printed, whoever issued it (as ssh pins a
//!   host key).
//! - [`TrustedFile`] and [`TrustedClientFile`]: webpki's verification,
//!   and, where it refuses a certificate that is itself in the CA file the
//!   user gave, that certificate accepted as trusted directly. This is how
//!   OpenSSL (and so curl, `openssl s_client -CAfile`, nginx) treats it,
//!   and it matters for the certificate people make first: `openssl req
//!   -x509 -newkey rsa:2048 -nodes ...` marks it `CA:TRUE`, which webpki
//!   refuses as an end entity (`CaUsedAsEndEntity`). Trusted directly, it
//!   still has to be within its validity dates and, for a server, valid
//!   for the name connected to (its subjectAltName, or without one its
//!   common name, as OpenSSL's host check falls back to).
//! - `insecure`: [`NoVerification`] accepts any certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// A pinned certificate that is not the one the server presented.
#[derive(Debug)]
pub(crate) struct PinMismatch {
    /// The fingerprint the server's certificate has.
    pub(crate) presented: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its certificate is sha256:{}, not the one pinned",
            self.presented
        )
    }
}

impl std::error::Error for PinMismatch {}

/// A certificate trusted directly (it is in the CA file) that is not valid
/// now, or not for the name connected to (`wrong_name`).
#[derive(Debug)]
pub(crate) struct DirectlyTrustedButInvalid {
    pub(crate) why: String,
    pub(crate) wrong_name: bool,
}

impl DirectlyTrustedButInvalid {
    fn dates(why: String) -> DirectlyTrustedButInvalid {
        DirectlyTrustedButInvalid {
            why,
            wrong_name: false,
        }
    }

    fn name(why: String) -> DirectlyTrustedButInvalid {
        DirectlyTrustedButInvalid {
            why,
            wrong_name: true,
        }
    }
}

impl std::fmt::Display for DirectlyTrustedButInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for DirectlyTrustedButInvalid {}

fn other(err: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(err))))
}

/// Accepts exactly the certificate with this SHA-256 fingerprint.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) sha256: [u8; 32],
    pub(crate) provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(other(PinMismatch {
                presented: super::fingerprint(end_entity),
            }))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `insecure`: accepts any certificate, still checking that the
/// handshake's signatures are well formed.
#[derive(Debug)]
pub(crate) struct NoVerification(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature12(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature13(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// webpki against the CA file, and its own certificates trusted directly.
#[derive(Debug)]
pub(crate) struct TrustedFile {
    pub(crate) webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// Every certificate in the CA file.
    pub(crate) anchors: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for TrustedFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .anchors
                    .iter()
                    .any(|a| a.as_ref() == end_entity.as_ref()) =>
            {
                valid_now(end_entity)?;
                valid_for(end_entity, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The server's side of mutual TLS: webpki against `--tls-client-ca`'s
/// file, and its own certificates trusted directly.
#[derive(Debug)]
pub(crate) struct TrustedClientFile {
    pub(crate) webpki: Arc<dyn ClientCertVerifier>,
    pub(crate) anchors: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for TrustedClientFile {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .anchors
                    .iter()
                    .any(|a| a.as_ref() == end_entity.as_ref()) =>
            {
                valid_now(end_entity)?;
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn signature12(
    provider: &rustls::crypto::CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn signature13(
    provider: &rustls::crypto::CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// A certificate trusted directly must still be within its dates.
fn valid_now(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if parsed.validity().is_valid() {
        Ok(())
    } else {
        Err(other(DirectlyTrustedButInvalid::dates(format!(
            "its certificate is outside its validity dates ({} to {})",
            parsed.validity().not_before,
            parsed.validity().not_after
        ))))
    }
}

/// A server certificate trusted directly must be valid for the name
/// connected to: by its subjectAltName as webpki checks it, or, when it
/// has none, by its common name, as OpenSSL's host check falls back to.
fn valid_for(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), rustls::Error> {
    let by_san = rustls::server::ParsedCertificate::try_from(cert)
        .and_then(|parsed| rustls::client::verify_server_name(&parsed, name));
    let Err(e) = by_san else {
        return Ok(());
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let has_san = parsed.subject_alternative_name().ok().flatten().is_some();
    let wanted = name.to_str();
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    if !has_san && cn.is_some_and(|cn| cn.eq_ignore_ascii_case(&wanted)) {
        return Ok(());
    }
    if has_san {
        return Err(e);
    }
    Err(other(DirectlyTrustedButInvalid::name(format!(
        "its certificate names {} and no subjectAltName, not {wanted}",
        cn.map_or_else(|| "no common name".to_owned(), |cn| format!("CN={cn}")),
    ))))
}

/// The subject of a certificate in OpenSSL's one-line form
/// (`CN=client, O=Example`), for the `tls` facts of a connection.
pub(crate) fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

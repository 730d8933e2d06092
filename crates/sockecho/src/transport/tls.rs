//! TLS for `tls://` endpoints, with rustls only (no OpenSSL).
//!
//! - Servers use the certificate and key given (PEM), or make a
//!   self-signed certificate at start whose SHA-256 fingerprint `serve`
//!   prints, so a client can pin it.
//! - Clients verify the server against the system's roots, or against a CA
//!   file, or not at all (for test rigs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{Error, Setting};

/// What a TLS server presents.
#[derive(Clone)]
pub struct ServerTls {
    /// Wraps accepted TCP connections.
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the certificate (DER), lowercase hex, when serve made it
    /// itself; `None` for a certificate the user gave.
    pub self_signed_fingerprint: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("self_signed_fingerprint", &self.self_signed_fingerprint)
            .finish()
    }
}

/// Where a TLS server's certificate comes from.
#[derive(Debug, Clone, Default)]
pub struct ServerTlsOptions {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

/// How a TLS client checks the server.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// Trust only the CAs in this PEM file.
    pub ca: Option<PathBuf>,
    /// Do not verify the server at all (test rigs only).
    pub insecure: bool,
}

/// A configured TLS client.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Loads the given certificate and key, or makes a self-signed
    /// certificate valid for `names` (plus `localhost` and the loopback
    /// addresses).
    pub fn new(options: &ServerTlsOptions, names: &[String]) -> Result<ServerTls, Error> {
        let (chain, key, fingerprint) = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?, None),
            (None, None) => {
                let mut sans = vec![
                    "localhost".to_owned(),
                    "127.0.0.1".to_owned(),
                    "::1".to_owned(),
                ];
                for name in names {
                    if !sans.contains(name) {
                        sans.push(name.clone());
                    }
                }
                let made = rcgen::generate_simple_self_signed(sans)
                    .map_err(|e| Error::invalid("making a self-signed certificate", &e))?;
                let der = made.cert.der().clone();
                let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
                    .map_err(|e| Error::Config(format!("self-signed key: {e}")))?;
                let fingerprint = fingerprint(&der);
                (vec![der], key, Some(fingerprint))
            }
            _ => {
                return Err(Error::setting(
                    Setting::TlsKeyPair,
                    "a certificate and its key go together: give both or neither",
                ));
            }
        };
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid("TLS", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::invalid("the TLS certificate and key", &e))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            self_signed_fingerprint: fingerprint,
        })
    }
}

impl ClientTls {
    /// A client configuration from the options.
    pub fn new(options: &ClientTlsOptions) -> Result<ClientTls, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid("TLS", &e))?;
        let config = if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &options.ca {
                Some(ca) => {
                    for cert in load_certs(ca)? {
                        roots
                            .add(cert)
                            .map_err(|e| Error::invalid(ca.display().to_string(), &e))?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    for cert in native.certs {
                        // A system store may hold certificates rustls
                        // cannot use; the others still count.
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the handshake on a connected TCP stream, checking the server's
    /// certificate against `host`.
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }
}

/// The TLS client for `endpoint`: `None` unless it is a `tls://` one.
pub fn client_for(
    endpoint: &crate::endpoint::Endpoint,
    options: &ClientTlsOptions,
) -> Result<Option<ClientTls>, Error> {
    match endpoint {
        crate::endpoint::Endpoint::Tls(_) => ClientTls::new(options).map(Some),
        _ => Ok(None),
    }
}

/// SHA-256 of a certificate's DER bytes, lowercase hex.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let what = path.display().to_string();
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::invalid(&what, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::invalid(&what, &e))?;
    if certs.is_empty() {
        return Err(Error::Invalid {
            what,
            reason: "no PEM certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::invalid(path.display().to_string(), &e))
}

/// `insecure`: accepts any certificate, still checking that the
/// handshake's signatures are well formed.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

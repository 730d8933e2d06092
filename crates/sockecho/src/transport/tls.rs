//! TLS for `tls://` endpoints, with rustls only (no OpenSSL).
//!
//! - Servers use the certificate and key given (PEM), or make a
//!   self-signed certificate at start whose SHA-256 fingerprint `serve`
//!   prints, so a client can pin it. With a client CA file they require
//!   and verify client certificates (mutual TLS); they offer the ALPN
//!   protocols given. The configuration is swapped whole when its files
//!   are read again ([`ServerTls::reload`]): handshakes after it use the
//!   new one, open connections keep theirs.
//! - Clients verify the server against the system's roots, or against a
//!   CA file, or pin it by fingerprint, or not at all (for test rigs); they
//!   may send an SNI name, ALPN protocols and a client certificate.
//! - [`TlsFacts`]: what a handshake settled, for the server's events.
//!
//! The verifiers beyond webpki's own are in `verify.rs`.

mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{Error, Setting};

pub(crate) use verify::{DirectlyTrustedButInvalid, PinMismatch};

/// What a TLS server presents, swapped whole on a reload.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<ServerInner>,
    /// SHA-256 of the certificate (DER), lowercase hex, when serve made it
    /// itself; `None` for a certificate the user gave.
    pub self_signed_fingerprint: Option<String>,
}

struct ServerInner {
    options: ServerTlsOptions,
    /// The certificate made at start when none was given: kept, so a
    /// reload of the client CA file keeps presenting it.
    made: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    /// The configuration handshakes use now, and what it was made of.
    current: RwLock<Loaded>,
}

/// A server configuration and what it was made of, for a reload to say
/// what changed.
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    /// The same for `https://` and `wss://` endpoints, offering HTTP/2 and
    /// HTTP/1.1 by ALPN (unless protocols were given).
    web: Arc<rustls::ServerConfig>,
    /// Fingerprint of the certificate presented.
    cert: String,
    /// Fingerprints of the client CA file's certificates.
    client_cas: Vec<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("self_signed_fingerprint", &self.self_signed_fingerprint)
            .finish()
    }
}

/// Where a TLS server's certificate comes from, and whom it asks for one.
#[derive(Debug, Clone, Default)]
pub struct ServerTlsOptions {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Require a client certificate issued by a CA in this PEM file
    /// (mutual TLS); a certificate that is itself in the file is trusted
    /// directly.
    pub client_ca: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference (none: no ALPN).
    pub alpn: Vec<String>,
}

impl ServerTlsOptions {
    /// Whether any file is read that a reload could read again.
    pub fn has_files(&self) -> bool {
        self.cert.is_some() || self.client_ca.is_some()
    }
}

/// How a TLS client checks the server and what it says of itself.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// Trust only the CAs in this PEM file (a certificate that is itself
    /// in the file is trusted directly, as OpenSSL does).
    pub ca: Option<PathBuf>,
    /// Do not verify the server at all (test rigs only).
    pub insecure: bool,
    /// Accept exactly the server certificate with this SHA-256
    /// fingerprint, whoever issued it and whatever names it holds.
    pub fingerprint: Option<[u8; 32]>,
    /// The name sent as SNI and verified, instead of the endpoint's host.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<String>,
    /// A client certificate chain (PEM), for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// The private key for `cert` (PEM).
    pub key: Option<PathBuf>,
}

/// A configured TLS client.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// The SNI name (and name verified), when not the endpoint's host.
    sni: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

/// What a server's TLS handshake settled, as JSON `connection` events
/// show it (`tls`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsFacts {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite's IANA name (`TLS_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The name the client sent as SNI (null when none: clients send none
    /// for an IP address).
    pub sni: Option<String>,
    /// The protocol ALPN settled on (null when none).
    pub alpn: Option<String>,
    /// The subject of the client's certificate, when it presented one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_subject: Option<String>,
}

impl TlsFacts {
    /// The facts of a finished server handshake.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> TlsFacts {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher = conn.negotiated_cipher_suite().map_or_else(
            || "unknown".to_owned(),
            |suite| {
                let name = format!("{:?}", suite.suite());
                // rustls names TLS 1.3 suites TLS13_*; IANA (and OpenSSL,
                // HAProxy) TLS_*.
                match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name,
                }
            },
        );
        TlsFacts {
            version,
            cipher,
            sni: conn.server_name().map(str::to_owned),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            client_subject: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(verify::subject),
        }
    }
}

/// What `https://` endpoints offer by ALPN when not told: HTTP/2 first,
/// as web servers do, then HTTP/1.1 (WebSocket clients ask for it alone).
pub const WEB_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Loads the given certificate and key, or makes a self-signed
    /// certificate valid for `names` (plus `localhost` and the loopback
    /// addresses); and the client CA file, if any.
    pub fn new(options: &ServerTlsOptions, names: &[String]) -> Result<ServerTls, Error> {
        let made = match (&options.cert, &options.key) {
            (Some(_), Some(_)) => None,
            (None, None) => Some(self_signed(names)?),
            _ => {
                return Err(Error::setting(
                    Setting::TlsKeyPair,
                    "a certificate and its key go together: give both or neither",
                ));
            }
        };
        let loaded = load_server(options, made.as_ref())?;
        let self_signed_fingerprint = made.as_ref().map(|(cert, _)| fingerprint(cert));
        Ok(ServerTls {
            inner: Arc::new(ServerInner {
                options: options.clone(),
                made,
                current: RwLock::new(loaded),
            }),
            self_signed_fingerprint,
        })
    }

    /// The acceptor for the next handshake (one read lock per connection).
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(current.config.clone())
    }

    /// The acceptor for the next handshake on an `https://` or `wss://`
    /// endpoint: the same certificate, and ALPN offering `h2` and
    /// `http/1.1` unless other protocols were given.
    pub fn web_acceptor(&self) -> TlsAcceptor {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(current.web.clone())
    }

    /// Reads the certificate, key and client CA files again and, if they
    /// make a working configuration, uses it for every handshake from now
    /// on (open connections keep theirs). Returns what changed, in words
    /// (empty: nothing); on an error the configuration in use stays.
    pub fn reload(&self) -> Result<Vec<String>, Error> {
        let inner = &self.inner;
        let loaded = load_server(&inner.options, inner.made.as_ref())?;
        let mut current = inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut changes = Vec::new();
        if loaded.cert != current.cert {
            changes.push(format!(
                "certificate sha256:{} replaced by sha256:{}",
                current.cert, loaded.cert
            ));
        }
        let added = loaded
            .client_cas
            .iter()
            .filter(|c| !current.client_cas.contains(c))
            .count();
        let removed = current
            .client_cas
            .iter()
            .filter(|c| !loaded.client_cas.contains(c))
            .count();
        if added + removed > 0 {
            changes.push(format!(
                "client CAs: {added} added, {removed} removed ({} now)",
                loaded.client_cas.len()
            ));
        }
        *current = loaded;
        Ok(changes)
    }

    /// Whether a reload would read any file.
    pub fn has_files(&self) -> bool {
        self.inner.options.has_files()
    }
}

/// A self-signed certificate valid for `names`, `localhost` and the
/// loopback addresses.
fn self_signed(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
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
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| Error::Config(format!("self-signed key: {e}")))?;
    Ok((made.cert.der().clone(), key))
}

fn load_server(
    options: &ServerTlsOptions,
    made: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Result<Loaded, Error> {
    let (chain, key) = match (made, &options.cert, &options.key) {
        (Some((cert, key)), _, _) => (vec![cert.clone()], key.clone_key()),
        (None, Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?),
        _ => {
            return Err(Error::setting(
                Setting::TlsKeyPair,
                "a certificate and its key go together: give both or neither",
            ));
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS", &e))?;
    let mut client_cas = Vec::new();
    let builder = match &options.client_ca {
        Some(path) => {
            let anchors = load_certs(path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in &anchors {
                roots
                    .add(cert.clone())
                    .map_err(|e| Error::invalid(path.display().to_string(), &e))?;
                client_cas.push(fingerprint(cert));
            }
            let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::invalid(path.display().to_string(), &e))?;
            builder
                .with_client_cert_verifier(Arc::new(verify::TrustedClientFile { webpki, anchors }))
        }
        None => builder.with_no_client_auth(),
    };
    let cert = fingerprint(&chain[0]);
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Error::invalid("the TLS certificate and key", &e))?;
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let mut web = config.clone();
    if web.alpn_protocols.is_empty() {
        web.alpn_protocols = WEB_ALPN.iter().map(|p| p.to_vec()).collect();
    }
    Ok(Loaded {
        config: Arc::new(config),
        web: Arc::new(web),
        cert,
        client_cas,
    })
}

impl ClientTls {
    /// A client configuration from the options.
    pub fn new(options: &ClientTlsOptions) -> Result<ClientTls, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid("TLS", &e))?;
        let builder = if let Some(sha256) = options.fingerprint {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::Pinned {
                    sha256,
                    provider: provider(),
                }))
        } else if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::NoVerification(provider())))
        } else if let Some(ca) = &options.ca {
            let anchors = load_certs(ca)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in &anchors {
                roots
                    .add(cert.clone())
                    .map_err(|e| Error::invalid(ca.display().to_string(), &e))?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::invalid(ca.display().to_string(), &e))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::TrustedFile { webpki, anchors }))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store may hold certificates rustls cannot use;
                // the others still count.
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| Error::invalid("the TLS client certificate and key", &e))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::setting(
                    Setting::TlsKeyPair,
                    "a certificate and its key go together: give both or neither",
                ));
            }
        };
        config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            sni: options.sni.clone(),
        })
    }

    /// Runs the handshake on a connected TCP stream, checking the server's
    /// certificate against `host` (or the SNI name given instead).
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = self
            .sni
            .as_deref()
            .unwrap_or_else(|| host.trim_matches(['[', ']']));
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }
}

/// The TLS client for `endpoint`: `None` unless it runs TLS (`tls://`,
/// `https://`, `wss://`).
pub fn client_for(
    endpoint: &crate::endpoint::Endpoint,
    options: &ClientTlsOptions,
) -> Result<Option<ClientTls>, Error> {
    if endpoint.is_tls() {
        ClientTls::new(options).map(Some)
    } else {
        Ok(None)
    }
}

/// SHA-256 of a certificate's DER bytes, lowercase hex.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint as `serve` prints it (`sha256:HEX`), or as OpenSSL does
/// (`AB:CD:...`, with or without the `sha256:` or `SHA256 Fingerprint=`
/// in front): the 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let hex_part = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .or_else(|| trimmed.strip_prefix("sha256 Fingerprint="))
        .or_else(|| trimmed.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(trimmed);
    let digits: Vec<u8> = hex_part.bytes().filter(|&b| b != b':').collect();
    let bad = || {
        format!(
            "invalid fingerprint '{text}': want sha256: and 64 hex digits, as serve prints it (tls fingerprint sha256:HEX)"
        )
    };
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
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

/// Why a client's handshake failed, in words, and the hint that goes
/// with it: the certificate pinned or trusted directly that did not fit,
/// a CA certificate presented as a server's, a server nobody trusts.
pub(crate) fn handshake_failure(e: &std::io::Error) -> (String, Option<crate::error::Hint>) {
    use crate::error::Hint;
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
        rustls_error
    {
        let inner: &(dyn std::error::Error + 'static) = &*other.0;
        if let Some(pin) = inner.downcast_ref::<PinMismatch>() {
            return (pin.to_string(), None);
        }
        if let Some(direct) = inner.downcast_ref::<DirectlyTrustedButInvalid>() {
            let hint = direct.wrong_name.then_some(Hint::NameNotInCertificate);
            return (direct.to_string(), hint);
        }
        if format!("{inner:?}").contains("CaUsedAsEndEntity") {
            return (
                "its certificate is a CA certificate (basicConstraints CA:TRUE), which is refused as a server's own".to_owned(),
                Some(Hint::CaCertificate),
            );
        }
    }
    let reason = crate::error::reason(e);
    let hint = reason
        .contains("certificate")
        .then_some(Hint::UntrustedCertificate);
    (reason, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_serve_and_openssl_print_them() {
        let hex = "cfc5156e0c4bdacf0a38b04fb47664c4c9a728a43054743189f4938f99c9c111";
        let want = parse_fingerprint(&format!("sha256:{hex}")).unwrap();
        assert_eq!(want[0], 0xcf);
        assert_eq!(want[31], 0x11);
        let openssl = hex
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&openssl).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("SHA256 Fingerprint={openssl}")).unwrap(),
            want
        );
        assert!(parse_fingerprint("sha256:abc").is_err());
        assert!(parse_fingerprint(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }
}

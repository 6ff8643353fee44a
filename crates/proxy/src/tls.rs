//! TLS client side: the `rustls` configurations Sluice dials backends with.
//!
//! Active `https` probes use it today; TLS to upstream traffic is meant to reuse the same
//! [`connector`] later, which is why nothing here knows about probes.
//!
//! Two [`ClientConfig`]s exist per process, one that verifies the peer and one that does
//! not (Kong's `https_verify_certificate`). They are built once, on first use, and shared:
//! building one parses the whole system trust store, and sharing one also shares its TLS
//! session cache, so repeated probes of a backend resume sessions instead of paying for
//! a full handshake every interval.
//!
//! Choices, and why:
//! - **`ring` crypto provider**, passed explicitly rather than installed as the process
//!   default: ring builds with `cc` alone (aws-lc-rs needs cmake), and an explicit
//!   provider cannot panic at runtime if some other dependency ever enables a second one.
//! - **Trust roots from the operating system** (`rustls-native-certs`), not the bundled
//!   Mozilla list (`webpki-roots`): Kong's default `lua_ssl_trusted_certificate = system`
//!   does the same, and backends behind a gateway are commonly signed by an internal CA
//!   that the platform team installs into the system store and that no public list has.
//!   A container without a CA bundle gets an empty store; that is logged once, loudly,
//!   because every verified handshake will then fail.
//! - **No ALPN**: probes speak HTTP/1.0, as Kong's raw-socket prober does.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a TLS connector could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// The name to present as SNI and verify against is neither a DNS name nor an IP.
    #[error("'{name}' is not a valid TLS server name (a DNS name or an IP address)")]
    InvalidServerName { name: String },
    /// rustls refused the client configuration (only if the crypto provider offers no
    /// safe protocol version, which `ring` always does).
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The task loading the trust store did not complete (the runtime is shutting down).
    #[error("the system trust store could not be loaded")]
    TrustStoreUnavailable,
}

/// The two process-wide client configurations.
#[derive(Debug)]
struct ClientConfigs {
    verifying: Arc<ClientConfig>,
    accepting_any: Arc<ClientConfig>,
}

/// Built on first use, on the blocking pool (reading the trust store is file I/O).
static CLIENT_CONFIGS: OnceLock<Result<ClientConfigs, rustls::Error>> = OnceLock::new();

/// The shared client configuration for `verify` (Kong's `https_verify_certificate`).
/// Every call returns the same `Arc` for the same `verify`.
pub async fn client_config(verify: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let configs = match CLIENT_CONFIGS.get() {
        Some(configs) => configs,
        // The blocking task fills the cell itself, so the work is kept even if the
        // caller stops waiting (its probe's deadline passed) before it finishes.
        None => tokio::task::spawn_blocking(|| {
            CLIENT_CONFIGS.get_or_init(|| build_client_configs(load_system_roots()))
        })
        .await
        .map_err(|_| TlsError::TrustStoreUnavailable)?,
    };
    match configs {
        Ok(configs) if verify => Ok(configs.verifying.clone()),
        Ok(configs) => Ok(configs.accepting_any.clone()),
        Err(e) => Err(TlsError::Config(e.clone())),
    }
}

/// Dials TLS over an already-connected stream, presenting one server name.
#[derive(Clone)]
pub struct Connector {
    inner: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Run the TLS handshake over `io`. Any error (refused certificate, protocol
    /// mismatch, the peer closing) comes back as an `io::Error`.
    pub async fn connect<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.connect(self.server_name.clone(), io).await
    }

    /// The name sent as SNI (DNS names only; rustls sends no SNI for an IP address,
    /// as RFC 6066 requires) and checked against the certificate when verifying.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

/// A connector for `sni` using the shared configuration for `verify`.
pub async fn connector(verify: bool, sni: &str) -> Result<Connector, TlsError> {
    let server_name = server_name(sni)?;
    let config = client_config(verify).await?;
    Ok(Connector {
        inner: TlsConnector::from(config),
        server_name,
    })
}

/// Parse a server name: a DNS name, an IP address, or a bracketed IPv6 address (the form
/// it takes in a `Host` header).
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::InvalidServerName {
        name: name.to_owned(),
    })
}

fn load_system_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "reading the system trust store");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "no trusted root certificates found in the system store; TLS handshakes that verify the peer (https_verify_certificate: true) will all fail. Install the CA bundle (e.g. ca-certificates) or set SSL_CERT_FILE"
        );
    } else {
        tracing::debug!(added, ignored, "loaded system trust roots");
    }
    roots
}

fn build_client_configs(roots: RootCertStore) -> Result<ClientConfigs, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifying = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let accepting_any = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
        .with_no_client_auth();
    Ok(ClientConfigs {
        verifying: Arc::new(verifying),
        accepting_any: Arc::new(accepting_any),
    })
}

/// The verifier behind `https_verify_certificate: false`.
///
/// Kong offers that switch because backends behind a gateway are often served with
/// self-signed certificates, certificates for a name other than the one the gateway dials
/// (an IP address, a pod name), or ones signed by a CA the gateway does not carry; the
/// operator still wants the traffic encrypted and the health endpoint probed. So the
/// certificate chain, its validity dates and its name are deliberately not checked.
///
/// The handshake signatures still are: the peer must prove it holds the private key of
/// the certificate it presented, exactly as OpenSSL does with verification off. That
/// keeps the session encrypted to *some* key, not to nothing.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_parse() {
        assert!(matches!(
            server_name("probe.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("not a name"),
            Err(TlsError::InvalidServerName { .. })
        ));
        assert!(server_name("").is_err());
    }

    #[tokio::test]
    async fn configurations_are_built_once_and_shared() {
        let (Ok(a), Ok(b), Ok(c)) = (
            client_config(true).await,
            client_config(true).await,
            client_config(false).await,
        ) else {
            panic!("the ring provider always offers safe protocol versions");
        };
        assert!(Arc::ptr_eq(&a, &b), "same verify setting, same config");
        assert!(!Arc::ptr_eq(&a, &c), "verify and accept-any differ");
        let Ok(d) = client_config(false).await else {
            panic!("config built above");
        };
        assert!(Arc::ptr_eq(&c, &d));
    }
}

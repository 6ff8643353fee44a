//! TLS client side: the `rustls` configurations Sluice dials backends with.
//!
//! Two users:
//! - **Active `https` probes** use [`connector`] (or [`ClientIdentity::probe_connector`]
//!   when the upstream has a `client_certificate`). Two process-wide [`ClientConfig`]s
//!   exist for them, one that verifies the peer and one that does not (Kong's
//!   `https_verify_certificate`), built once and shared: building one parses the whole
//!   system trust store, and sharing one also shares its TLS session cache, so repeated
//!   probes of a backend resume sessions instead of paying for a full handshake.
//! - **Traffic to `https` services** uses an [`UpstreamTls`] per distinct set of Kong
//!   service settings (`tls_verify`, `tls_verify_depth`, `ca_certificates`, the client
//!   certificate). Identical settings share one `UpstreamTls` across services and across
//!   reloads ([`UpstreamTls::shared`]), so its configuration, session cache and the pool
//!   connections keyed by its [`UpstreamTls::id`] survive a reload.
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
//!   because every verified handshake will then fail. A service's `ca_certificates`
//!   *replace* the system store for that service, as Kong's trusted store does.
//! - **No ALPN for probes** (they speak HTTP/1.0, as Kong's raw-socket prober does);
//!   **ALPN `http/1.1` for traffic**, so a backend that also speaks h2 keeps to the
//!   protocol the pool's connections speak; **ALPN `h2` for `grpcs` services**
//!   ([`UpstreamTls::connector_h2`], the same settings in a second configuration), as
//!   nginx's `grpc_pass` offers, since gRPC exists only over HTTP/2.
//! - **`tls_verify_depth`** is OpenSSL's: the number of intermediate certificates allowed
//!   between the peer's certificate and the trust anchor (nginx's default is 1).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
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

/// The system trust store, loaded once (on the blocking pool) and shared.
static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();

/// The system trust store. The blocking task fills the cell itself, so the work is kept
/// even if the caller stops waiting (its probe's deadline passed) before it finishes.
async fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    if let Some(roots) = SYSTEM_ROOTS.get() {
        return Ok(roots.clone());
    }
    tokio::task::spawn_blocking(|| {
        SYSTEM_ROOTS
            .get_or_init(|| Arc::new(load_system_roots()))
            .clone()
    })
    .await
    .map_err(|_| TlsError::TrustStoreUnavailable)
}

/// The shared client configuration for `verify` (Kong's `https_verify_certificate`).
/// Every call returns the same `Arc` for the same `verify`.
pub async fn client_config(verify: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let configs = match CLIENT_CONFIGS.get() {
        Some(configs) => configs,
        None => {
            let roots = system_roots().await?;
            CLIENT_CONFIGS.get_or_init(|| build_client_configs(roots))
        }
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

/// The crypto provider every configuration is built with (see the module doc).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The name Kong's nginx presents and verifies for an upstream connection
/// (`proxy_ssl_name $upstream_host`): the host part of the `Host` value sent upstream,
/// without its port. An IP literal (or no usable host) gives the address's IP, for
/// which rustls sends no SNI (RFC 6066) and verifies the certificate's IP names.
pub fn upstream_server_name(host: Option<&str>, addr: SocketAddr) -> ServerName<'static> {
    host.map(host_without_port)
        .filter(|name| !name.is_empty())
        .and_then(|name| server_name(name).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host part, without brackets (a server
/// name or IP literal as TLS wants it). A bare IPv6 address is returned whole.
fn host_without_port(host: &str) -> &str {
    let host = crate::headers::host_without_port(host);
    host.strip_prefix('[')
        .and_then(|inside| inside.strip_suffix(']'))
        .unwrap_or(host)
}

/// A client certificate chain and its key (Kong's `certificates` entity, validated by
/// the config layer), presented for mutual TLS.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// Probe configurations with this certificate, for verify off / on, built on first
    /// use and kept so probes resume TLS sessions.
    probe_configs: [tokio::sync::OnceCell<Arc<ClientConfig>>; 2],
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.key.secret_der() == other.key.secret_der()
    }
}

impl ClientIdentity {
    pub fn new(chain: Vec<CertificateDer<'static>>, key: Arc<PrivateKeyDer<'static>>) -> Self {
        ClientIdentity {
            chain,
            key,
            probe_configs: Default::default(),
        }
    }

    /// A probe connector presenting this certificate (verify as `https_verify_certificate`).
    pub async fn probe_connector(&self, verify: bool, sni: &str) -> Result<Connector, TlsError> {
        let server_name = server_name(sni)?;
        let config = self.probe_configs[usize::from(verify)]
            .get_or_try_init(|| async {
                let verifier = if verify {
                    Verifier::Roots {
                        roots: system_roots().await?,
                        depth: None,
                    }
                } else {
                    Verifier::AcceptAny
                };
                build_config(&verifier, Some(self), Alpn::None)
            })
            .await?
            .clone();
        Ok(Connector {
            inner: TlsConnector::from(config),
            server_name,
        })
    }
}

/// Kong's service TLS settings, as the data plane applies them.
#[derive(Debug, PartialEq)]
pub struct TlsSettings {
    /// `tls_verify` (null = Kong's `proxy_ssl_verify`, off by default).
    pub verify: bool,
    /// `tls_verify_depth`, intermediates allowed (null = nginx's default).
    pub verify_depth: u8,
    /// `ca_certificates`; empty = the system trust store.
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// The service's `client_certificate`, else its upstream's.
    pub client: Option<Arc<ClientIdentity>>,
}

/// nginx's `proxy_ssl_verify_depth` default, which Kong keeps when `tls_verify_depth` is
/// null: the peer's certificate plus one intermediate below the trust anchor.
pub const DEFAULT_VERIFY_DEPTH: u8 = 1;

/// What `TlsSettings` verify with.
enum Verifier {
    AcceptAny,
    Roots {
        roots: Arc<RootCertStore>,
        /// Intermediates allowed; `None` for no limit (probes: Kong's prober leaves the
        /// depth to OpenSSL's default of 100).
        depth: Option<usize>,
    },
}

/// The TLS side of connections to `https` services with one set of settings.
pub struct UpstreamTls {
    settings: TlsSettings,
    /// Unique per live `UpstreamTls`: the pool keys TLS connections by it, so connections
    /// made with different settings never mix.
    id: u64,
    config: tokio::sync::OnceCell<Arc<ClientConfig>>,
    /// The same settings offering ALPN `h2` (grpcs services), built on first use.
    config_h2: tokio::sync::OnceCell<Arc<ClientConfig>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("id", &self.id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Live `UpstreamTls`es by a hash of their settings (equal settings, one instance).
static REGISTRY: Mutex<Option<HashMap<u64, Vec<Weak<UpstreamTls>>>>> = Mutex::new(None);

impl UpstreamTls {
    /// The `UpstreamTls` for `settings`: an existing one with equal settings if any is
    /// alive (so a reload keeps its configuration, sessions and pooled connections), else
    /// a new one. Its client configuration is built on first use.
    pub fn shared(settings: TlsSettings) -> Arc<UpstreamTls> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let hash = settings_hash(&settings);
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        let map = registry.get_or_insert_with(HashMap::new);
        // Forget dropped instances, so the map stays as large as the live settings.
        map.retain(|_, list| {
            list.retain(|weak| weak.strong_count() > 0);
            !list.is_empty()
        });
        let list = map.entry(hash).or_default();
        if let Some(existing) = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|tls| tls.settings == settings)
        {
            return existing;
        }
        let tls = Arc::new(UpstreamTls {
            settings,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: tokio::sync::OnceCell::new(),
            config_h2: tokio::sync::OnceCell::new(),
        });
        list.push(Arc::downgrade(&tls));
        tls
    }

    /// Identifies these settings in pool keys.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A connector presenting `server_name` (SNI for a DNS name, none for an IP),
    /// offering ALPN `http/1.1`.
    pub async fn connector(&self, server_name: ServerName<'static>) -> Result<Connector, TlsError> {
        let config = self
            .config
            .get_or_try_init(|| self.build(Alpn::Http11))
            .await?
            .clone();
        Ok(Connector {
            inner: TlsConnector::from(config),
            server_name,
        })
    }

    /// As [`UpstreamTls::connector`], offering ALPN `h2` (HTTP/2 to `grpcs` services).
    pub async fn connector_h2(
        &self,
        server_name: ServerName<'static>,
    ) -> Result<Connector, TlsError> {
        let config = self
            .config_h2
            .get_or_try_init(|| self.build(Alpn::H2))
            .await?
            .clone();
        Ok(Connector {
            inner: TlsConnector::from(config),
            server_name,
        })
    }

    async fn build(&self, alpn: Alpn) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = if !self.settings.verify {
            Verifier::AcceptAny
        } else if self.settings.ca_certificates.is_empty() {
            Verifier::Roots {
                roots: system_roots().await?,
                depth: Some(usize::from(self.settings.verify_depth)),
            }
        } else {
            let mut roots = RootCertStore::empty();
            for ca in &self.settings.ca_certificates {
                roots.add(ca.clone())?;
            }
            Verifier::Roots {
                roots: Arc::new(roots),
                depth: Some(usize::from(self.settings.verify_depth)),
            }
        };
        build_config(&verifier, self.settings.client.as_deref(), alpn)
    }
}

/// The application protocol a client configuration offers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alpn {
    /// Probes: no ALPN extension at all.
    None,
    Http11,
    H2,
}

fn settings_hash(settings: &TlsSettings) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    settings.verify.hash(&mut hasher);
    settings.verify_depth.hash(&mut hasher);
    for ca in &settings.ca_certificates {
        ca.as_ref().hash(&mut hasher);
    }
    if let Some(client) = &settings.client {
        for cert in &client.chain {
            cert.as_ref().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// A client configuration: `verifier`, an optional client certificate, and the ALPN
/// protocol of the traffic it carries.
fn build_config(
    verifier: &Verifier,
    client: Option<&ClientIdentity>,
    alpn: Alpn,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match verifier {
        Verifier::AcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider))),
        Verifier::Roots { roots, depth: None } => builder.with_root_certificates(roots.clone()),
        Verifier::Roots {
            roots,
            depth: Some(depth),
        } => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(DepthLimited {
                    inner,
                    roots: roots.clone(),
                    depth: *depth,
                    algorithms: provider.signature_verification_algorithms,
                }))
        }
    };
    let mut config = match client {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    match alpn {
        Alpn::None => {}
        Alpn::Http11 => config.alpn_protocols = vec![b"http/1.1".to_vec()],
        Alpn::H2 => config.alpn_protocols = vec![b"h2".to_vec()],
    }
    Ok(Arc::new(config))
}

/// `tls_verify_depth`: the chain must verify as rustls verifies it, *and* the path to the
/// trust anchor may hold at most `depth` intermediates (OpenSSL's meaning of the depth).
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    depth: usize,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The peer's chain is longer than `tls_verify_depth` allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "certificate chain too long: {intermediates} intermediate certificates, tls_verify_depth allows {depth}"
)]
struct ChainTooLong {
    intermediates: usize,
    depth: usize,
}

impl ServerCertVerifier for DepthLimited {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        // The path cannot use more intermediates than the peer sent, so the common case
        // (a short chain) needs no second path search.
        if intermediates.len() <= self.depth {
            return Ok(verified);
        }
        let invalid = |_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(invalid)?;
        let used = path.intermediate_certificates().count();
        if used > self.depth {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(ChainTooLong {
                    intermediates: used,
                    depth: self.depth,
                })),
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

fn build_client_configs(roots: Arc<RootCertStore>) -> Result<ClientConfigs, rustls::Error> {
    let provider = provider();
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

    #[test]
    fn upstream_server_names_follow_the_host_sent() {
        let addr: SocketAddr = "10.1.2.3:8443".parse().expect("addr");
        let dns = |name: &str| ServerName::try_from(name.to_owned()).expect("dns name");
        let ip = |text: &str| ServerName::IpAddress(text.parse::<IpAddr>().expect("ip").into());
        assert_eq!(
            upstream_server_name(Some("api.test"), addr),
            dns("api.test")
        );
        assert_eq!(
            upstream_server_name(Some("api.test:8443"), addr),
            dns("api.test"),
            "the port is not part of the name"
        );
        assert_eq!(upstream_server_name(Some("[::1]:8443"), addr), ip("::1"));
        assert_eq!(upstream_server_name(Some("10.9.9.9"), addr), ip("10.9.9.9"));
        assert_eq!(
            upstream_server_name(None, addr),
            ip("10.1.2.3"),
            "no Host: the address, so no SNI"
        );
        assert_eq!(
            upstream_server_name(Some("not a name"), addr),
            ip("10.1.2.3"),
            "a name rustls cannot present falls back to the address"
        );
    }

    #[test]
    fn equal_settings_share_one_upstream_tls_and_different_ones_do_not() {
        let settings = |verify: bool, depth: u8| TlsSettings {
            verify,
            verify_depth: depth,
            ca_certificates: Vec::new(),
            client: None,
        };
        let a = UpstreamTls::shared(settings(true, 3));
        let b = UpstreamTls::shared(settings(true, 3));
        let c = UpstreamTls::shared(settings(true, 4));
        assert!(
            Arc::ptr_eq(&a, &b),
            "a reload with the same settings keeps them"
        );
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id(), "other settings, other pool identity");
        let id = a.id();
        drop((a, b));
        let d = UpstreamTls::shared(settings(true, 3));
        assert_ne!(d.id(), id, "a dropped instance is not resurrected");
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

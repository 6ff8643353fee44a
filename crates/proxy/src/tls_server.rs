//! The TLS proxy listener (Kong's `proxy_listen = 0.0.0.0:8443 ssl`): certificates chosen
//! by SNI from the running configuration, ALPN `h2`/`http/1.1`, a bounded handshake, then
//! hyper's server on the decrypted stream.
//!
//! # Certificate selection (Kong's `runloop/certificate.lua`)
//! The client's server name (lower case, trailing dot dropped) is looked up as Kong
//! does: the exact name, then the name with its first label replaced by `*`
//! (`*.example.com`), then with its last label replaced (`www.example.*`), then the SNI
//! named `*`. When nothing matches, the certificate generated at startup is served (Kong's
//! own default is its auto-generated self-signed `ssl_cert`). A client that sends no
//! server name gets the `*` certificate when there is one: Kong serves its `ssl_cert`
//! there, a `kong.conf` setting Sluice does not have, so `*` is the one way to choose the
//! certificate such clients see (docs/kong-compatibility.md).
//!
//! A certificate with `cert_alt`/`key_alt` serves the alternate pair to a client that
//! cannot verify signatures of the first key (e.g. an RSA-only client when the first key
//! is ECDSA), as nginx does with two `ssl_certificate`s.
//!
//! # Reload
//! The certificates live in the [`Runtime`](crate::runtime::Runtime) ([`CertStore`],
//! built with it off the hot path), and the resolver reads the runtime the handshake
//! sees, so a reload changes the certificate of every new handshake and none in
//! progress; a rejected configuration never reaches the runtime, so the old
//! certificates stay. A resumed session keeps the certificate of its first handshake.
//!
//! # Resumption
//! Sessions resume with stateless tickets (nginx's `ssl_session_tickets on`, which Kong
//! keeps): the session state travels encrypted in the ticket, under a key the gateway
//! makes at start and rotates (rustls' ticketer: a new key every 6 hours, the previous
//! one still accepted), so every client can resume, however many there are. A
//! resumed handshake skips the certificate signature; a full one costs Sluice 1.45× what
//! it costs NGINX (BENCHMARKS.md, "TLS handshakes"). TLS 1.2 clients without ticket
//! support resume by session id from an in-memory cache of [`SESSION_CACHE`] entries.
//!
//! # Garbage
//! Plain HTTP sent to this port gets nginx's answer (`400`, "The plain HTTP request was
//! sent to HTTPS port") and the connection is closed; any other bytes that are not a TLS
//! handshake, a reset or a silent client end the connection at the latest after
//! [`TLS_HANDSHAKE_TIMEOUT`]. Nothing a client sends can make this code panic: every
//! error is a value that closes the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sluice_config::Config;
use sluice_config::model::SniName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Shared;

/// Longest time from accept to a finished TLS handshake. A full handshake is two round
/// trips plus the server's signature; 10 s covers satellite and congested mobile links
/// with retransmissions many times over, while a client that opens connections and
/// never finishes them (a slowloris on the handshake) holds each socket for at most 10 s,
/// a third of what [`HEADER_READ_TIMEOUT`](crate::server::HEADER_READ_TIMEOUT) gives a
/// request head. nginx's `ssl_handshake_timeout` defaults to 60 s, which we find too
/// generous for a gateway facing the internet.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols offered, in preference order: HTTP/2 first (one connection
/// multiplexes every request), HTTP/1.1 for everyone else.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// nginx's answer to plain HTTP on a TLS port (its internal status 497, sent as 400).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: sluice\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to HTTPS port\n";

/// A certificate as the listener serves it: the first pair, and the alternate one.
#[derive(Debug)]
struct Served {
    primary: Arc<CertifiedKey>,
    alt: Option<Arc<CertifiedKey>>,
}

impl Served {
    /// The first pair unless the client cannot verify its key's signatures and can
    /// verify the alternate's.
    fn pick(&self, hello: &ClientHello<'_>) -> Arc<CertifiedKey> {
        let schemes = hello.signature_schemes();
        match &self.alt {
            Some(alt)
                if self.primary.key.choose_scheme(schemes).is_none()
                    && alt.key.choose_scheme(schemes).is_some() =>
            {
                alt.clone()
            }
            _ => self.primary.clone(),
        }
    }
}

/// The certificates of one configuration generation, by server name.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<Box<str>, Arc<Served>>,
    /// `*.example.com`, keyed `example.com`.
    wildcard_prefix: HashMap<Box<str>, Arc<Served>>,
    /// `www.example.*`, keyed `www.example`.
    wildcard_suffix: HashMap<Box<str>, Arc<Served>>,
    /// The SNI `*`.
    default: Option<Arc<Served>>,
}

impl CertStore {
    /// Compile `config.snis`. A certificate validation accepted always loads; should
    /// one not, its names are left out (and logged) rather than failing the reload.
    pub fn build(config: &Config) -> CertStore {
        let provider = crate::tls::provider();
        let load = |chain: &[CertificateDer<'static>], key: &PrivateKeyDer<'static>| {
            CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider).map(Arc::new)
        };
        let mut served: Vec<Option<Arc<Served>>> = vec![None; config.certificates.len()];
        let mut store = CertStore::default();
        for sni in &config.snis {
            let Some(slot) = served.get_mut(sni.certificate) else {
                continue;
            };
            if slot.is_none() {
                let Some(certificate) = config.certificates.get(sni.certificate) else {
                    continue;
                };
                let primary = match load(&certificate.chain, &certificate.key) {
                    Ok(key) => key,
                    Err(e) => {
                        tracing::warn!(certificate = %certificate.id, error = %e, "certificate cannot be served");
                        continue;
                    }
                };
                let alt = certificate
                    .alt
                    .as_ref()
                    .and_then(|(chain, key)| load(chain, key).ok());
                *slot = Some(Arc::new(Served { primary, alt }));
            }
            let Some(entry) = slot.clone() else {
                continue;
            };
            match &sni.name {
                SniName::Exact(name) => {
                    store.exact.insert(name.as_str().into(), entry);
                }
                SniName::WildcardPrefix(rest) => {
                    let key = rest.strip_prefix('.').unwrap_or(rest);
                    store.wildcard_prefix.insert(key.into(), entry);
                }
                SniName::WildcardSuffix(rest) => {
                    let key = rest.strip_suffix('.').unwrap_or(rest);
                    store.wildcard_suffix.insert(key.into(), entry);
                }
                SniName::Default => store.default = Some(entry),
            }
        }
        store
    }

    /// Kong's lookup order: exact, `*.rest`, `head.*`, then `*`. `None`: serve the
    /// generated default.
    fn find(&self, server_name: Option<&str>) -> Option<&Arc<Served>> {
        let Some(name) = server_name else {
            return self.default.as_ref();
        };
        let name = normalize_server_name(name);
        let name = name.as_ref();
        self.exact
            .get(name)
            .or_else(|| {
                // Kong builds `*.rest` only for names of three labels or more.
                let (label, rest) = name.split_once('.')?;
                (!label.is_empty() && rest.contains('.'))
                    .then(|| self.wildcard_prefix.get(rest))
                    .flatten()
            })
            .or_else(|| {
                let (head, label) = name.rsplit_once('.')?;
                (!head.is_empty() && !label.is_empty())
                    .then(|| self.wildcard_suffix.get(head))
                    .flatten()
            })
            .or(self.default.as_ref())
    }

    /// Whether any certificate is configured for the listener.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.wildcard_prefix.is_empty()
            && self.wildcard_suffix.is_empty()
            && self.default.is_none()
    }
}

/// A client's server name as the router and the certificate lookup compare it: lower
/// case, without the trailing dot of a fully qualified name (borrowed when it already is).
pub fn normalize_server_name(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Chooses each handshake's certificate from the runtime of that moment.
#[derive(Debug)]
struct Resolver {
    shared: Arc<Shared>,
    /// Served when no SNI matches and there is no `*` (generated at startup).
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let runtime = self.shared.runtime.load();
        Some(match runtime.certs.find(hello.server_name()) {
            Some(served) => served.pick(&hello),
            None => self.fallback.clone(),
        })
    }
}

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsServerError {
    #[error("cannot generate the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A self-signed certificate for `localhost` with a fresh P-256 key, like the one Kong
/// generates at first start: clients that verify will refuse it, which is the point (it
/// only shows up when no configured certificate applies).
pub fn self_signed_default() -> Result<Arc<CertifiedKey>, TlsServerError> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let chain = vec![generated.cert.der().clone()];
    Ok(Arc::new(CertifiedKey::from_der(
        chain,
        key,
        &crate::tls::provider(),
    )?))
}

/// Sessions kept for resumption by session id (TLS 1.2 clients that do not take
/// tickets). rustls' default is 256; nginx's `ssl_session_cache shared:SSL:10m`, Kong's
/// setting, holds about 40,000. A few thousand covers the clients that reconnect within
/// minutes at a few hundred bytes each, allocated only as sessions arrive.
pub const SESSION_CACHE: usize = 4096;

/// The acceptor of every TLS listener of a gateway.
pub fn acceptor(shared: Arc<Shared>) -> Result<TlsAcceptor, TlsServerError> {
    let resolver = Resolver {
        shared,
        fallback: self_signed_default()?,
    };
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The outcome of the first bytes on a TLS port.
pub(crate) enum Opening {
    /// A TLS record (or too little to tell): go on with the handshake.
    Tls,
    /// Plain HTTP: answered and closed.
    PlainHttp,
}

/// Looks at the first byte without consuming it: a TLS handshake record starts with
/// 0x16, an HTTP request with an upper-case method letter.
pub(crate) async fn check_opening(stream: &mut TcpStream) -> Opening {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0].is_ascii_uppercase() => {
            // Best effort: the client may already be gone.
            let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.shutdown().await;
            Opening::PlainHttp
        }
        _ => Opening::Tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_has_a_correct_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn server_names_are_compared_lower_case_without_the_trailing_dot() {
        assert_eq!(normalize_server_name("API.Example.com."), "api.example.com");
        assert!(matches!(
            normalize_server_name("a.test"),
            std::borrow::Cow::Borrowed("a.test")
        ));
    }

    #[test]
    fn the_default_certificate_is_generated() {
        let key = self_signed_default().unwrap();
        assert_eq!(key.cert.len(), 1);
    }
}

//! `certificates` and `ca_certificates`: Kong's PEM entities, checked the way Kong's schema
//! checks them, and the references services and upstreams make to them.
//!
//! Checks (Kong's words where Kong has them):
//! - `certificates[].cert` is one or more PEM `CERTIFICATE` blocks (leaf first), each a
//!   parsable X.509 certificate; `key` is one PEM private key (PKCS#8, PKCS#1 or SEC1)
//!   that the TLS stack can sign with, and it must belong to the leaf ("certificate does
//!   not match key"). `cert_alt`/`key_alt` are all-or-none and checked the same way.
//! - `ca_certificates[].cert` is exactly one certificate ("please submit only one
//!   certificate at a time") with the basic constraint `CA:TRUE`.
//! - References (`services[].client_certificate`, `services[].ca_certificates[]`,
//!   `upstreams[].client_certificate`, `snis[].certificate`) name an entity of the file
//!   by id (certificates have no name in Kong, so there is nothing else to name them by).
//! - `snis` (top-level, and nested under a certificate): each `name` is Kong's
//!   `wildcard_host` (an exact hostname, one `*` as the whole leftmost or rightmost
//!   label, or `*` alone for the default certificate; not an IP, no port), unique across
//!   the file; a top-level SNI names its certificate.
//!
//! Not checked, on purpose: Kong rejects a CA certificate whose "Not After" is in the
//! past *at load time*. Validation here reads no clock (the same file must give the same
//! verdict tomorrow), and an expired CA fails every verified handshake anyway, which the
//! gateway reports as a connect failure.
//!
//! The DER is kept in the model so the data plane never parses PEM again.

use rustls::crypto::ring::default_provider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use crate::model::{CaCertificate, Certificate, CertificatePem, SecretText, Sni, SniName};
use crate::raw::{RawCaCertificate, RawCertificate, RawSni};

/// Ids of the file's certificates and CA certificates, and which ones something uses.
#[derive(Default)]
pub(super) struct TlsRefs {
    /// Id → index in the model; `None` for an entity that failed its own checks (a
    /// reference to it is not reported again as dangling).
    certificates: HashMap<String, Option<usize>>,
    ca_certificates: HashMap<String, Option<usize>>,
    used_certificates: Vec<bool>,
    used_ca_certificates: Vec<bool>,
    /// Per raw certificate (in file order): its index in the model when valid.
    raw_certificates: Vec<Option<usize>>,
    /// Where each valid entity was written (indexed like the model's lists).
    certificate_at: Vec<(Path, crate::node::Pos)>,
    ca_certificate_at: Vec<(Path, crate::node::Pos)>,
}

/// Validates both entity collections.
pub(super) fn tls_entities(
    sink: &mut Sink,
    raw: &RawConfig,
    ids: &mut IdRegistry,
) -> (Vec<Certificate>, Vec<CaCertificate>, TlsRefs) {
    let mut refs = TlsRefs::default();
    let mut certificates = Vec::new();
    for raw_cert in &raw.certificates {
        let id = ids.id(
            sink,
            "certificates",
            &raw_cert.id,
            &raw_cert.path.to_string(),
        );
        let valid = certificate(sink, raw_cert, id.clone());
        refs.certificates
            .insert(id, valid.as_ref().map(|_| certificates.len()));
        refs.raw_certificates
            .push(valid.as_ref().map(|_| certificates.len()));
        if let Some(certificate) = valid {
            refs.certificate_at
                .push((raw_cert.path.clone(), raw_cert.pos));
            certificates.push(certificate);
        }
    }
    let mut cas = Vec::new();
    for raw_ca in &raw.ca_certificates {
        let id = ids.id(
            sink,
            "ca_certificates",
            &raw_ca.id,
            &raw_ca.path.to_string(),
        );
        let valid = ca_certificate(sink, raw_ca, id.clone());
        refs.ca_certificates
            .insert(id, valid.as_ref().map(|_| cas.len()));
        if let Some(ca) = valid {
            refs.ca_certificate_at
                .push((raw_ca.path.clone(), raw_ca.pos));
            cas.push(ca);
        }
    }
    refs.used_certificates = vec![false; certificates.len()];
    refs.used_ca_certificates = vec![false; cas.len()];
    (certificates, cas, refs)
}

impl TlsRefs {
    /// Resolves a `client_certificate` reference (by id).
    pub(super) fn certificate(&mut self, sink: &mut Sink, reference: &RawRef) -> Option<usize> {
        let index = lookup(
            sink,
            &reference.key,
            &self.certificates,
            "client_certificate",
            "certificates",
        )?;
        if let Some(used) = self.used_certificates.get_mut(index) {
            *used = true;
        }
        Some(index)
    }

    /// Resolves one `ca_certificates[]` element (a CA certificate's id).
    pub(super) fn ca_certificate(&mut self, sink: &mut Sink, id: &Sp<String>) -> Option<usize> {
        let index = lookup(
            sink,
            id,
            &self.ca_certificates,
            "ca_certificates",
            "ca_certificates",
        )?;
        if let Some(used) = self.used_ca_certificates.get_mut(index) {
            *used = true;
        }
        Some(index)
    }

    /// Warns about valid entities nothing references: a certificate matters when an SNI
    /// names it (the TLS listener serves it) or as an upstream client certificate, a CA
    /// only when a service trusts it.
    pub(super) fn warn_unused(&self, sink: &mut Sink) {
        for ((path, pos), used) in self.certificate_at.iter().zip(&self.used_certificates) {
            if !used {
                sink.warning(
                    path,
                    *pos,
                    "certificate is not used by Sluice",
                    "no snis name it (the TLS listener serves a certificate by SNI; add snis: [{name: ...}], or '*' for the default) and no service or upstream names it as client_certificate",
                );
            }
        }
        for ((path, pos), used) in self
            .ca_certificate_at
            .iter()
            .zip(&self.used_ca_certificates)
        {
            if !used {
                sink.warning(
                    path,
                    *pos,
                    "CA certificate is not used by Sluice",
                    "a CA certificate is used only when a service lists its id in ca_certificates",
                );
            }
        }
    }
}

/// Validates every SNI: those nested under certificates (in certificate order), then
/// the top-level ones. Names are unique across both; a certificate an SNI names counts
/// as used.
pub(super) fn snis(
    sink: &mut Sink,
    raw: &RawConfig,
    ids: &mut IdRegistry,
    refs: &mut TlsRefs,
) -> Vec<Sni> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, Path> = HashMap::new();
    for (n, raw_cert) in raw.certificates.iter().enumerate() {
        let certificate = refs.raw_certificates.get(n).copied().flatten();
        for raw_sni in &raw_cert.snis {
            if let Some(sni) = sni(sink, raw_sni, certificate, ids, &mut seen) {
                out.push(sni);
            }
        }
    }
    for raw_sni in &raw.snis {
        let certificate = match &raw_sni.certificate {
            Some(reference) => lookup(
                sink,
                &reference.key,
                &refs.certificates,
                "certificate",
                "certificates",
            ),
            None => {
                sink.error_hint(
                    &raw_sni.path.key("certificate"),
                    raw_sni.pos,
                    "required field missing",
                    "the id of the certificate served for this name: certificate: {id: <uuid>}, or nest the SNI under its certificate",
                );
                None
            }
        };
        if let Some(sni) = sni(sink, raw_sni, certificate, ids, &mut seen) {
            out.push(sni);
        }
    }
    for sni in &out {
        if let Some(used) = refs.used_certificates.get_mut(sni.certificate) {
            *used = true;
        }
    }
    out
}

/// One SNI; `None` when its name is invalid or its certificate is (each reported).
fn sni(
    sink: &mut Sink,
    raw: &RawSni,
    certificate: Option<usize>,
    ids: &mut IdRegistry,
    seen: &mut HashMap<String, Path>,
) -> Option<Sni> {
    let Some(name) = &raw.name else {
        sink.error_hint(
            &raw.path.key("name"),
            raw.pos,
            "required field missing",
            "the server name clients send: example.com, *.example.com, example.*, or * for the default certificate",
        );
        return None;
    };
    let tags = tags(sink, &raw.tags);
    let parsed = sni_name(sink, name)?;
    let key = parsed.as_kong();
    if let Some(first) = seen.get(&key) {
        sink.error_hint(
            &name.path,
            name.pos,
            format!(
                "uniqueness violation: 'snis' entity with name set to '{key}' already declared"
            ),
            format!("first declared at {first}; a name selects one certificate"),
        );
        return None;
    }
    seen.insert(key.clone(), name.path.clone());
    let id = ids.id(sink, "snis", &raw.id, &key);
    Some(Sni {
        id,
        name: parsed,
        certificate: certificate?,
        tags,
    })
}

/// Kong's `wildcard_host` check of an SNI name (certificates' and routes' `snis`), in
/// Kong's words. A wildcard that is not a whole label (`*example.com`) passes Kong's
/// check but can never match Kong's lookup: a warning, and the name is dropped.
pub(super) fn sni_name(sink: &mut Sink, name: &Sp<String>) -> Option<SniName> {
    let value = name.value.to_ascii_lowercase();
    let bad = |sink: &mut Sink, message: String| {
        sink.error_hint(
            &name.path,
            name.pos,
            message,
            "an exact hostname, one wildcard as the whole leftmost or rightmost label (*.example.com, example.*), or * for the default certificate",
        );
        None
    };
    let stars = value.matches('*').count();
    if stars > 0 && !(value.starts_with('*') || value.ends_with('*')) {
        return bad(
            sink,
            "wildcard must be leftmost or rightmost character".into(),
        );
    }
    if stars > 1 {
        return bad(sink, "only one wildcard must be specified".into());
    }
    if value == "*" {
        return Some(SniName::Default);
    }
    let host = value.trim_start_matches("*.").trim_end_matches(".*");
    let host = host.trim_start_matches('*').trim_end_matches('*');
    if is_ip(host) || host.starts_with('[') {
        return bad(sink, "must not be an IP".into());
    }
    if host.contains(':') {
        return bad(sink, "must not have a port".into());
    }
    if !is_hostname(host) {
        return bad(sink, format!("invalid value: {}", name.value));
    }
    if let Some(rest) = value.strip_prefix('*') {
        if !rest.starts_with('.') {
            sink.warning(
                &name.path,
                name.pos,
                format!("'{}' never matches a server name", name.value),
                format!("a wildcard stands for a whole label: *.{rest}"),
            );
            return None;
        }
        return Some(SniName::WildcardPrefix(rest.to_owned()));
    }
    if let Some(rest) = value.strip_suffix('*') {
        if !rest.ends_with('.') {
            sink.warning(
                &name.path,
                name.pos,
                format!("'{}' never matches a server name", name.value),
                format!("a wildcard stands for a whole label: {rest}.*"),
            );
            return None;
        }
        return Some(SniName::WildcardSuffix(rest.to_owned()));
    }
    // Kong's router ignores a trailing dot of a fully qualified name.
    Some(SniName::Exact(value.trim_end_matches('.').to_owned()))
}

/// Finds `key` (a UUID) among `ids`, reporting a malformed or dangling reference.
fn lookup(
    sink: &mut Sink,
    key: &Sp<String>,
    ids: &HashMap<String, Option<usize>>,
    field: &str,
    entity: &str,
) -> Option<usize> {
    let Ok(uuid) = Uuid::parse_str(&key.value) else {
        sink.error_hint(
            &key.path,
            key.pos,
            "expected a valid UUID",
            format!("{field} refers to a '{entity}' entity by its id"),
        );
        return None;
    };
    let found = ids.get(&uuid.hyphenated().to_string()).copied();
    if found.is_none() {
        // Not declared at all (a declared but invalid entity has its own error).
        sink.error_hint(
            &key.path,
            key.pos,
            format!(
                "invalid reference '{field}: {}' (no such entry in '{entity}')",
                key.value
            ),
            format!("declare it under '{entity}' with this id, or fix the id"),
        );
    }
    found.flatten()
}

fn required<'a>(
    sink: &mut Sink,
    value: &'a Option<Sp<String>>,
    path: &Path,
    pos: crate::node::Pos,
    field: &str,
    hint: &str,
) -> Option<&'a Sp<String>> {
    if value.is_none() {
        sink.error_hint(&path.key(field), pos, "required field missing", hint);
    }
    value.as_ref()
}

fn certificate(sink: &mut Sink, raw: &RawCertificate, id: String) -> Option<Certificate> {
    let cert = required(
        sink,
        &raw.cert,
        &raw.path,
        raw.pos,
        "cert",
        "the certificate chain, PEM, leaf first",
    );
    let key = required(
        sink,
        &raw.key,
        &raw.path,
        raw.pos,
        "key",
        "the private key of the leaf certificate, PEM",
    );
    let chain = cert.and_then(|c| parse_chain(sink, c));
    let key_der = key.and_then(|k| parse_key(sink, k));
    let pair = match (chain, key_der, key) {
        (Some(chain), Some(key_der), Some(key)) => {
            key_matches(sink, &chain, &key_der, key).then_some((chain, key_der))
        }
        _ => None,
    };
    let mut alt = None;
    match (&raw.cert_alt, &raw.key_alt) {
        (Some(cert_alt), Some(key_alt)) => {
            if let (Some(chain), Some(key_der)) =
                (parse_chain(sink, cert_alt), parse_key(sink, key_alt))
                && key_matches(sink, &chain, &key_der, key_alt)
            {
                alt = Some((chain, Arc::new(key_der)));
            }
        }
        (Some(only), None) | (None, Some(only)) => {
            sink.error_hint(
                &only.path,
                only.pos,
                "all or none of these fields must be set: 'cert_alt', 'key_alt'",
                "cert_alt and key_alt are an alternate certificate and its key (e.g. ECDSA next to RSA)",
            );
        }
        (None, None) => {}
    }
    let tags = tags(sink, &raw.tags);
    let (cert_text, key_text) = (cert?, key?);
    let (chain, key) = pair?;
    let alt_text = match (&raw.cert_alt, &raw.key_alt, &alt) {
        (Some(cert_alt), Some(key_alt), Some(_)) => Some((
            Arc::from(cert_alt.value.as_str()),
            SecretText::new(key_alt.value.as_str()),
        )),
        _ => None,
    };
    Some(Certificate {
        id,
        chain,
        key: Arc::new(key),
        alt,
        tags,
        pem: CertificatePem {
            cert: Arc::from(cert_text.value.as_str()),
            key: SecretText::new(key_text.value.as_str()),
            alt: alt_text,
        },
    })
}

fn ca_certificate(sink: &mut Sink, raw: &RawCaCertificate, id: String) -> Option<CaCertificate> {
    let cert = required(
        sink,
        &raw.cert,
        &raw.path,
        raw.pos,
        "cert",
        "the CA certificate, PEM",
    );
    let tags = tags(sink, &raw.tags);
    let cert = cert?;
    if cert.value.matches("-----BEGIN CERTIFICATE-----").count() > 1 {
        sink.error_hint(
            &cert.path,
            cert.pos,
            "please submit only one certificate at a time",
            "declare each CA certificate as its own ca_certificates entry",
        );
        return None;
    }
    let mut chain = parse_chain(sink, cert)?;
    let der = chain.pop()?;
    let is_ca = x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, parsed)| parsed.is_ca());
    if !is_ca {
        sink.error_hint(
            &cert.path,
            cert.pos,
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
            "use the certificate of the authority that signed the upstream's certificate",
        );
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Some(CaCertificate {
        id,
        cert: der,
        tags,
        pem: Arc::from(cert.value.as_str()),
        digest,
    })
}

/// The certificates of a PEM text, each checked to be X.509.
fn parse_chain(sink: &mut Sink, pem_text: &Sp<String>) -> Option<Vec<CertificateDer<'static>>> {
    let parsed: Result<Vec<CertificateDer<'static>>, pem::Error> =
        CertificateDer::pem_slice_iter(pem_text.value.as_bytes()).collect();
    let certs = match parsed {
        Ok(certs) if certs.is_empty() => {
            sink.error_hint(
                &pem_text.path,
                pem_text.pos,
                "invalid certificate: no PEM certificate found",
                "expected -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----",
            );
            return None;
        }
        Ok(certs) => certs,
        Err(e) => {
            sink.error(
                &pem_text.path,
                pem_text.pos,
                format!("invalid certificate: {}", pem_problem(&e)),
            );
            return None;
        }
    };
    for (n, der) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            sink.error_hint(
                &pem_text.path,
                pem_text.pos,
                format!(
                    "invalid certificate: PEM block {} is not an X.509 certificate ({e})",
                    n + 1
                ),
                "the base64 between the BEGIN and END lines is damaged or is not a certificate",
            );
            return None;
        }
    }
    Some(certs)
}

/// The private key of a PEM text.
fn parse_key(sink: &mut Sink, pem_text: &Sp<String>) -> Option<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem_text.value.as_bytes()) {
        Ok(key) => Some(key),
        Err(pem::Error::NoItemsFound) => {
            sink.error_hint(
                &pem_text.path,
                pem_text.pos,
                "invalid key: no PEM private key found",
                "expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block (unencrypted)",
            );
            None
        }
        Err(e) => {
            sink.error(
                &pem_text.path,
                pem_text.pos,
                format!("invalid key: {}", pem_problem(&e)),
            );
            None
        }
    }
}

/// Whether `key` can sign (a type the TLS stack supports) and belongs to the leaf of
/// `chain`; reported at `at` when not.
fn key_matches(
    sink: &mut Sink,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    at: &Sp<String>,
) -> bool {
    match CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &default_provider()) {
        Ok(_) => true,
        Err(rustls::Error::InconsistentKeys(_)) => {
            sink.error_hint(
                &at.path,
                at.pos,
                "certificate does not match key",
                "the key must be the private key of the first certificate in cert",
            );
            false
        }
        Err(e) => {
            sink.error_hint(
                &at.path,
                at.pos,
                format!("invalid key: {e}"),
                "supported: RSA (2048 bits or more), ECDSA P-256/P-384, Ed25519",
            );
            false
        }
    }
}

/// A PEM error in words (the library's `Display` prints byte arrays).
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing '{}' line", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line '{}'", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(_) => {
            "the text between the BEGIN and END lines is not base64".into()
        }
        other => other.to_string(),
    }
}

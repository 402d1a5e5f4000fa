//! Mutual TLS between the members of a continuum (rustls, ring).
//!
//! A continuum has one certificate authority (CA). Every node's certificate
//! is issued by it and names the node: a URI subject alternative name
//! `databelt://node/<node-id>` (the placement service's:
//! `databelt://placement`), plus the DNS name [`SERVER_NAME`] that every
//! member certificate carries, which is the name clients verify — members
//! are reached by address, so the usual host-name check cannot name them.
//!
//! - A **server** (host or placement service) presents its certificate and
//!   asks every client for one. A client certificate must chain to the CA;
//!   a client without one (a user's CLI with a bearer token) may still
//!   connect, and [`crate::auth`] decides what each may do: peer and step
//!   routes demand a node certificate of a topology node.
//! - A **client** verifies that the server's certificate chains to the CA,
//!   is valid now, and names the placement service or a node of the
//!   topology ([`Members`]); a host presents its own certificate.
//!
//! Errors name the cause: an unknown CA (`UnknownIssuer`), an expired
//! certificate (`Expired`), a node that is not in the topology, a node id
//! that does not match the one the peer claims.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use databelt_host::{Error, Result};
use databelt_types::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

/// The DNS name every member certificate carries and every client checks.
pub const SERVER_NAME: &str = "member.databelt.invalid";
/// Prefix of the URI that names a node in its certificate.
pub const NODE_URI: &str = "databelt://node/";
/// The URI that names the placement service in its certificate.
pub const PLACEMENT_URI: &str = "databelt://placement";
/// Days a certificate issued by `databelt certs` is valid unless told.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;

/// Who a member certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A node of the topology.
    Node(NodeId),
    /// The placement service.
    Placement,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node `{id}`"),
            Identity::Placement => f.write_str("the placement service"),
        }
    }
}

impl Identity {
    fn uri(&self) -> String {
        match self {
            Identity::Node(id) => format!("{NODE_URI}{id}"),
            Identity::Placement => PLACEMENT_URI.to_string(),
        }
    }

    fn common_name(&self) -> String {
        match self {
            Identity::Node(id) => id.to_string(),
            Identity::Placement => "databelt placement service".into(),
        }
    }
}

/// Who a certificate (DER) names, if it is a member certificate: the first
/// URI subject alternative name of the form [`NODE_URI`]`<id>` or
/// [`PLACEMENT_URI`].
pub fn identity_of(cert: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if *uri == PLACEMENT_URI => Some(Identity::Placement),
        x509_parser::extensions::GeneralName::URI(uri) => {
            uri.strip_prefix(NODE_URI).and_then(|id| NodeId::new(id).ok()).map(Identity::Node)
        }
        _ => None,
    })
}

/// The node ids of the continuum's topology, shared by a process's servers
/// and clients. A node certificate is accepted only for a member; an empty
/// set (the topology is not known yet, e.g. before a client first fetched
/// it) accepts any node the CA issued a certificate for.
#[derive(Debug, Clone, Default)]
pub struct Members(Arc<RwLock<BTreeSet<NodeId>>>);

impl Members {
    /// The members `ids`.
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a str>) -> Members {
        let members = Members::default();
        members.set(ids);
        members
    }

    /// Replace the members by `ids` (ids that are not valid node ids are
    /// skipped: no certificate can name them).
    pub fn set<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let ids = ids.into_iter().filter_map(|id| NodeId::new(id).ok()).collect();
        if let Ok(mut m) = self.0.write() {
            *m = ids;
        }
    }

    /// Whether `id` may act as a node: it is a member, or no topology is
    /// known.
    pub fn admits(&self, id: &NodeId) -> bool {
        self.0.read().map(|m| m.is_empty() || m.contains(id)).unwrap_or(false)
    }
}

/// Where a member's TLS material is, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The continuum CA's certificate.
    pub ca: PathBuf,
    /// This member's certificate (issued by the CA).
    pub cert: PathBuf,
    /// This member's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `databelt certs issue` writes into `dir`: `ca.pem`,
    /// `<name>.pem`, `<name>.key`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
    }

    /// Read the three files.
    pub fn read(&self) -> Result<MemberPem> {
        let read = |p: &Path, what: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", p.display())))
        };
        Ok(MemberPem {
            ca: read(&self.ca, "CA certificate")?,
            cert: read(&self.cert, "certificate")?,
            key: read(&self.key, "private key")?,
        })
    }
}

/// A member's TLS material in memory (PEM).
#[derive(Clone)]
pub struct MemberPem {
    /// The CA's certificate.
    pub ca: String,
    /// The member's certificate.
    pub cert: String,
    /// The member's private key.
    pub key: String,
}

impl std::fmt::Debug for MemberPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberPem").field("ca", &"..").field("cert", &"..").field("key", &"(secret)").finish()
    }
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// From.
    pub not_before: time::OffsetDateTime,
    /// Until.
    pub not_after: time::OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew between nodes) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = time::OffsetDateTime::now_utc();
        Validity { not_before: now - time::Duration::hours(1), not_after: now + time::Duration::days(i64::from(days)) }
    }
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// A continuum's certificate authority: issues member certificates.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl Authority {
    /// A new CA (ECDSA P-256) named `name`, valid for `validity`.
    pub fn generate(name: &str, validity: Validity) -> Result<Authority> {
        let key = KeyPair::generate().map_err(|e| cert_error("generating the CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.clone().self_signed(&key).map_err(|e| cert_error("signing the CA certificate", e))?;
        Ok(Authority { cert_pem: cert.pem(), params, key })
    }

    /// The CA whose certificate and key are `cert_pem` and `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| cert_error("the CA key", e))?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| cert_error("the CA certificate", e))?;
        Ok(Authority { params, key, cert_pem: cert_pem.to_string() })
    }

    /// The CA's certificate (PEM): what every member trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM): keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key (PEM) for `who`, valid for `validity`, usable
    /// as server and as client.
    pub fn issue(&self, who: &Identity, validity: Validity) -> Result<MemberPem> {
        let key = KeyPair::generate().map_err(|e| cert_error("generating a key", e))?;
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(|e| cert_error("certificate names", e))?;
        let uri = who.uri().try_into().map_err(|e| cert_error("certificate URI", e))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.distinguished_name.push(DnType::CommonName, who.common_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let issuer = self.params.clone().self_signed(&self.key).map_err(|e| cert_error("the CA", e))?;
        let cert = params.signed_by(&key, &issuer, &self.key).map_err(|e| cert_error("signing a certificate", e))?;
        Ok(MemberPem { ca: self.cert_pem.clone(), cert: cert.pem(), key: key.serialize_pem() })
    }
}

/// Make ring the process's default rustls provider, which reqwest uses for
/// every client it builds (even plain-HTTP ones). Every client builder of
/// this crate calls it; code that builds its own `reqwest::Client` calls it
/// first. Calling it again does nothing.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| cert_error("the CA certificate", e))?;
        roots.add(cert).map_err(|e| cert_error("the CA certificate", e))?;
        any = true;
    }
    if !any {
        return Err(Error::Config("the CA file holds no certificate".into()));
    }
    Ok(Arc::new(roots))
}

fn chain_and_key(pem: &MemberPem) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cert_error("the certificate", e))?;
    if chain.is_empty() {
        return Err(Error::Config("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(|e| cert_error("the private key", e))?;
    Ok((chain, key))
}

/// Checks a server's certificate: chains to the CA, valid now, names the
/// placement service or a member node.
#[derive(Debug)]
struct MemberVerifier {
    inner: Arc<WebPkiServerVerifier>,
    members: Members,
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| rustls::Error::General(e.to_string()))?;
        self.inner.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)?;
        match identity_of(end_entity) {
            Some(Identity::Placement) => Ok(ServerCertVerified::assertion()),
            Some(Identity::Node(id)) if self.members.admits(&id) => Ok(ServerCertVerified::assertion()),
            Some(Identity::Node(id)) => {
                Err(rustls::Error::General(format!("the server's certificate is for node `{id}`, not in the topology")))
            }
            None => Err(rustls::Error::General("the server's certificate names no Databelt member".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's TLS: trusts the CA, checks servers are members, and (for a
/// member) presents its own certificate.
pub fn client_config(ca_pem: &str, own: Option<&MemberPem>, members: Members) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| cert_error("server verifier", e))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberVerifier { inner, members }));
    let mut config = match own {
        Some(own) => {
            let (chain, key) = chain_and_key(own)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| cert_error("the certificate and key", e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A member's TLS, for its servers and its clients.
#[derive(Clone)]
pub struct MemberTls {
    /// Who this member is (from its certificate).
    pub identity: Identity,
    /// Its servers' configuration: its certificate; client certificates
    /// optional, verified against the CA when given.
    pub server: Arc<ServerConfig>,
    /// Its clients' configuration: its certificate; servers verified.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTls").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl MemberTls {
    /// From PEM material; `members` is the topology's node set, which may be
    /// filled in later.
    pub fn new(pem: &MemberPem, members: Members) -> Result<MemberTls> {
        let (chain, key) = chain_and_key(pem)?;
        let identity = chain.first().and_then(|c| identity_of(c)).ok_or_else(|| {
            Error::Config(format!("the certificate names no Databelt member (no `{NODE_URI}<id>` URI)"))
        })?;
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&pem.ca)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| cert_error("client verifier", e))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_error("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| cert_error("the certificate and key", e))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = client_config(&pem.ca, Some(pem), members)?;
        Ok(MemberTls { identity, server: Arc::new(server), client })
    }

    /// From the files `files`.
    pub fn load(files: &TlsFiles, members: Members) -> Result<MemberTls> {
        MemberTls::new(&files.read()?, members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_its_member() {
        let ca = Authority::generate("test CA", Validity::days(1)).unwrap_or_else(|e| panic!("{e}"));
        let id = NodeId::new("sat_1.a").unwrap_or_else(|e| panic!("{e}"));
        let pem = ca.issue(&Identity::Node(id.clone()), Validity::days(1)).unwrap_or_else(|e| panic!("{e}"));
        let der = CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(identity_of(&der), Some(Identity::Node(id)));
        let tls = MemberTls::new(&pem, Members::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(tls.identity, Identity::Node(_)));
        let again = Authority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap_or_else(|e| panic!("{e}"));
        let p = again.issue(&Identity::Placement, Validity::days(1)).unwrap_or_else(|e| panic!("{e}"));
        let der = CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(identity_of(&der), Some(Identity::Placement));
    }

    #[test]
    fn members_admit_only_topology_nodes_once_known() {
        let m = Members::default();
        let a = NodeId::new("a").unwrap_or_else(|e| panic!("{e}"));
        assert!(m.admits(&a), "no topology yet: any node of the CA");
        m.set(["b", "c"]);
        assert!(!m.admits(&a));
        assert!(m.admits(&NodeId::new("b").unwrap_or_else(|e| panic!("{e}"))));
    }

    #[test]
    fn garbage_material_is_a_config_error() {
        let bad = MemberPem { ca: "nope".into(), cert: "nope".into(), key: "nope".into() };
        assert!(matches!(MemberTls::new(&bad, Members::default()), Err(Error::Config(_))));
    }
}

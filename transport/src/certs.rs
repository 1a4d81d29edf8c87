//! The cluster's certificates and the mutual-TLS configurations built from them.
//!
//! [`generate`] writes a cluster CA and one certificate per node into a
//! directory; [`Identity::load`] reads a node's back. Both sides of a
//! connection present a certificate that must chain to the cluster CA and
//! name a node in the allow-list; 0-RTT is off.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};
use crate::frame::ALPN;

/// File holding the cluster CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// File holding the cluster CA key (only needed to issue more node certificates).
pub const CA_KEY: &str = "ca.key";

/// Path of a node's certificate in a certificate directory.
pub fn node_cert_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.pem"))
}

/// Path of a node's private key in a certificate directory.
pub fn node_key_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.key"))
}

/// Checks that `name` can be a node name: a DNS label sequence, since it is
/// both the certificate's subject name and the TLS server name.
pub fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
        && ServerName::try_from(name).is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "node name '{name}' must be 1-63 characters of a-z, 0-9, '-' and '.'"
        )))
    }
}

/// PEM text of a cluster's CA and one certificate per node.
struct Issued {
    ca_cert: String,
    ca_key: String,
    /// (node, certificate PEM, key PEM)
    nodes: Vec<(String, String, String)>,
}

/// Checks that [`generate`] can issue a certificate for node `name`: a
/// valid name ([`check_node_name`]) that is not the CA's own (`ca` would
/// write its leaf over `ca.pem` and `ca.key`).
pub fn check_issuable_name(name: &str) -> Result<()> {
    check_node_name(name)?;
    let dir = Path::new("");
    if node_cert_path(dir, name) == Path::new(CA_CERT)
        || node_key_path(dir, name) == Path::new(CA_KEY)
    {
        return Err(Error::Config(format!(
            "node name '{name}' is reserved: its certificate and key would overwrite the cluster CA's {CA_CERT} and {CA_KEY}"
        )));
    }
    Ok(())
}

/// Checks the names of the nodes to issue certificates for: issuable and distinct.
fn check_new_nodes(nodes: &[String]) -> Result<()> {
    if nodes.is_empty() {
        return Err(Error::Config("no node names given".into()));
    }
    for n in nodes {
        check_issuable_name(n)?;
    }
    let mut sorted = nodes.to_vec();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Config(format!("node name '{}' given twice", w[0])));
    }
    Ok(())
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Cert(e.to_string())
}

/// A new cluster CA: its certificate PEM, and an issuer holding its key.
fn new_ca() -> Result<(String, rcgen::Issuer<'static, rcgen::KeyPair>)> {
    let ca_key = rcgen::KeyPair::generate().map_err(cert_err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tessera cluster CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
    Ok((ca_cert.pem(), rcgen::Issuer::new(ca_params, ca_key)))
}

/// Signs a certificate and key for each of `nodes` with `issuer`.
fn issue_nodes(
    nodes: &[String],
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(vec![node.clone()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node.as_str());
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        // Every node both accepts and opens connections.
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, issuer).map_err(cert_err)?;
        out.push((node.clone(), cert.pem(), key.serialize_pem()));
    }
    Ok(out)
}

fn issue(nodes: &[String]) -> Result<Issued> {
    check_new_nodes(nodes)?;
    let (ca_cert, issuer) = new_ca()?;
    let nodes = issue_nodes(nodes, &issuer)?;
    Ok(Issued {
        ca_cert,
        ca_key: issuer.key().serialize_pem(),
        nodes,
    })
}

/// Checks that `cert_pem` chains to `ca_pem`: a CA key that does not belong
/// to its certificate signs leaves nobody can verify.
fn check_chains_to(ca_pem: &[u8], cert_pem: &[u8], what: &str) -> Result<()> {
    let bad = |e: String| Error::Cert(format!("{what}: {e}"));
    let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|e| bad(e.to_string()))?;
    let leaf = CertificateDer::from_pem_slice(cert_pem).map_err(|e| bad(e.to_string()))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| bad(e.to_string()))?;
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| bad(e.to_string()))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| bad(format!("{e:?}")))
}

/// Which CA [`generate`] signed the node certificates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaUsed {
    /// A new CA, written to `ca.pem` and `ca.key`.
    New,
    /// The CA already in the folder (`ca.pem` and `ca.key` left as they were).
    Existing,
}

/// Writes a certificate and key per node (`NAME.pem`, `NAME.key`) into
/// `out_dir`, signed by the folder's cluster CA (`ca.pem`, `ca.key`) when
/// it has one, else by a new CA written there. Keys get mode 0600.
///
/// A folder with only one of the two CA files is refused: a new CA would
/// orphan every certificate the old one signed, and one file alone cannot
/// sign anything.
pub fn generate(out_dir: &Path, nodes: &[String]) -> Result<CaUsed> {
    check_new_nodes(nodes)?;
    let (ca_cert_path, ca_key_path) = (out_dir.join(CA_CERT), out_dir.join(CA_KEY));
    let (has_cert, has_key) = (ca_cert_path.exists(), ca_key_path.exists());
    if has_cert != has_key {
        let (there, missing) = if has_cert {
            (&ca_cert_path, &ca_key_path)
        } else {
            (&ca_key_path, &ca_cert_path)
        };
        return Err(Error::Config(format!(
            "{} exists but {} does not: cannot sign with that CA, and a new CA would \
             invalidate the certificates it signed (restore the missing file, or use an empty folder)",
            there.display(),
            missing.display()
        )));
    }
    if has_cert {
        let read =
            |p: &Path| fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e));
        let (ca_pem, key_pem) = (read(&ca_cert_path)?, read(&ca_key_path)?);
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| Error::Cert(format!("{}: {e}", ca_key_path.display())))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| Error::Cert(format!("{}: {e}", ca_cert_path.display())))?;
        let issued = issue_nodes(nodes, &issuer)?;
        // Checked before anything is written: a mismatched pair would
        // produce certificates that fail every handshake.
        if let Some((_, cert, _)) = issued.first() {
            check_chains_to(
                ca_pem.as_bytes(),
                cert.as_bytes(),
                &format!(
                    "{} does not sign certificates that verify against {}",
                    ca_key_path.display(),
                    ca_cert_path.display()
                ),
            )?;
        }
        write_nodes(out_dir, &issued)?;
        return Ok(CaUsed::Existing);
    }
    let issued = issue(nodes)?;
    fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir.display().to_string(), e))?;
    write_file(&ca_cert_path, issued.ca_cert.as_bytes(), false)?;
    write_file(&ca_key_path, issued.ca_key.as_bytes(), true)?;
    write_nodes(out_dir, &issued.nodes)?;
    Ok(CaUsed::New)
}

fn write_nodes(out_dir: &Path, nodes: &[(String, String, String)]) -> Result<()> {
    for (node, cert, key) in nodes {
        write_file(&node_cert_path(out_dir, node), cert.as_bytes(), false)?;
        write_file(&node_key_path(out_dir, node), key.as_bytes(), true)?;
    }
    Ok(())
}

/// A throw-away cluster held in memory (demos, benchmarks, tests): one
/// identity per node, in the order given.
pub fn ephemeral(nodes: &[String]) -> Result<Vec<Identity>> {
    let issued = issue(nodes)?;
    issued
        .nodes
        .iter()
        .map(|(node, cert, key)| {
            Identity::from_pem(
                node,
                issued.ca_cert.as_bytes(),
                cert.as_bytes(),
                key.as_bytes(),
            )
        })
        .collect()
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<()> {
    let io = |e| Error::io(path.display().to_string(), e);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(if secret { 0o600 } else { 0o644 });
        let mut f = opts.open(path).map_err(io)?;
        // The mode only applies on creation; tighten an existing file too.
        f.set_permissions(fs::Permissions::from_mode(if secret {
            0o600
        } else {
            0o644
        }))
        .map_err(io)?;
        f.write_all(data).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        opts.open(path)
            .and_then(|mut f| f.write_all(data))
            .map_err(io)
    }
}

/// A node's TLS identity: the cluster CA it trusts, and its own chain and key.
#[derive(Debug)]
pub struct Identity {
    /// The node's name (its certificate's subject name).
    pub name: String,
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// The node's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads `node`'s identity from a directory written by [`generate`];
    /// errors name the files (a key that does not belong to the
    /// certificate is caught here, not when the endpoint starts).
    pub fn load(dir: &Path, node: &str) -> Result<Self> {
        let paths = [
            dir.join(CA_CERT),
            node_cert_path(dir, node),
            node_key_path(dir, node),
        ];
        let read = |p: &PathBuf| fs::read(p).map_err(|e| Error::io(p.display().to_string(), e));
        let names = paths.each_ref().map(|p| p.display().to_string());
        Self::parse(
            node,
            [&read(&paths[0])?, &read(&paths[1])?, &read(&paths[2])?],
            names.each_ref().map(String::as_str),
        )
    }

    /// Builds an identity from PEM bytes.
    pub fn from_pem(node: &str, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        Self::parse(
            node,
            [ca_pem, cert_pem, key_pem],
            ["CA certificate", "node certificate", "node key"],
        )
    }

    /// Parses the CA certificate, the node's chain and its key, `names`
    /// saying what each is in errors, and checks that the key is the
    /// certificate's.
    fn parse(
        node: &str,
        [ca_pem, cert_pem, key_pem]: [&[u8]; 3],
        names: [&str; 3],
    ) -> Result<Self> {
        let bad =
            |what: &str, e: rustls::pki_types::pem::Error| Error::Cert(format!("{what}: {e}"));
        let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|e| bad(names[0], e))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(names[1], e))?;
        if chain.is_empty() {
            return Err(Error::Cert(format!(
                "{}: no certificate for node '{node}'",
                names[1]
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(names[2], e))?;
        // rustls makes the same check only when a TLS configuration is
        // built, and its error names neither file.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(
            |e| {
                Error::Cert(format!(
                    "{} is not the key of {} ({e}): a key copied from another node?",
                    names[2], names[1]
                ))
            },
        )?;
        // A certificate of another cluster's CA (or an expired one, or one
        // copied from another node) would otherwise load and only fail each
        // peer's handshake. It passes here in either role it may play (a
        // node accepts as a server, the coordinator dials as a client): the
        // handshake checks the one it plays.
        let roots = roots(&ca)?;
        let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ());
        let name = ServerName::try_from(node.to_string())
            .map_err(|e| Error::Cert(format!("node name '{node}': {e}")))?;
        let as_server =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| Error::Tls(e.to_string()))?
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
                .map(|_| ());
        if let (Err(e), Err(_)) = (&as_client, &as_server) {
            let foreign = matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature
                )
            );
            return Err(Error::Cert(format!(
                "{} does not verify against the CA in {} ({e}){}",
                names[1],
                names[0],
                if foreign {
                    ": a certificate of another cluster's CA?"
                } else {
                    ""
                }
            )));
        }
        let named = cert_names(&chain[0]);
        if !named.iter().any(|n| n == node) {
            return Err(Error::Cert(format!(
                "{} is a certificate for {}, not for '{node}': copied from another node?",
                names[1],
                named.join(", ")
            )));
        }
        Ok(Self {
            name: node.to_string(),
            ca,
            chain,
            key,
        })
    }
}

/// ring's provider with AES-128-GCM ahead of AES-256-GCM: every tile byte is
/// sealed and opened once, and AES-128 runs 10 rounds per block instead of
/// 14 on CPU-poor edge nodes, at a security level TLS 1.3 mandates anyway.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| Error::Tls(format!("cluster CA: {e}")))?;
    Ok(Arc::new(roots))
}

fn server_names(allowed: &[String]) -> Result<Vec<ServerName<'static>>> {
    allowed
        .iter()
        .map(|n| {
            ServerName::try_from(n.clone())
                .map_err(|e| Error::Config(format!("peer name '{n}': {e}")))
        })
        .collect()
}

/// Which allow-listed name `cert` is valid for, if any.
pub fn peer_name(cert: &CertificateDer<'_>, allowed: &[String]) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    allowed
        .iter()
        .find(|n| match ServerName::try_from(n.as_str()) {
            Ok(sn) => ee.verify_is_valid_for_subject_name(&sn).is_ok(),
            Err(_) => false,
        })
        .cloned()
}

/// The DNS names a certificate is for (its subject alternative names, else
/// its common name), for messages; empty if it does not parse.
pub fn cert_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = x509
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(String::from))
            .collect();
    }
    names
}

/// Client-certificate verifier: the chain must lead to the cluster CA (webpki)
/// and the leaf must name an allow-listed node.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
    /// `allowed` as configured, for messages.
    allowed_names: Vec<String>,
}

impl ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        if self
            .allowed
            .iter()
            .any(|n| ee.verify_is_valid_for_subject_name(n).is_ok())
        {
            Ok(verified)
        } else {
            // Short: the client reads this in the close frame, which QUIC
            // cuts to what fits in the handshake's last packet (64
            // characters here), so the certificate's names come first and
            // the allow-list, which the refusing daemon logs beside this,
            // is left out. A typo in `peers` otherwise looks like a
            // certificate problem.
            let why = format!("certificate {:?} not in peers", cert_names(end_entity));
            tracing::debug!("refused a client: {why} {:?}", self.allowed_names);
            Err(rustls::Error::General(why))
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

/// The rustls server configuration: TLS 1.3 only, client certificates
/// required and checked against the CA and `allowed`, ALPN `tessera/1`, no 0-RTT.
pub fn server_config(id: &Identity, allowed: &[String]) -> Result<rustls::ServerConfig> {
    let tls = |e: rustls::Error| Error::Tls(e.to_string());
    let inner = WebPkiClientVerifier::builder_with_provider(roots(&id.ca)?, provider())
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let verifier = Arc::new(AllowList {
        inner,
        allowed: server_names(allowed)?,
        allowed_names: allowed.to_vec(),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(tls)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The rustls client configuration: trusts only the cluster CA, presents the
/// node's certificate, ALPN `tessera/1`, no 0-RTT. The server's name is
/// checked by the connect call against the allow-list and the certificate.
pub fn client_config(id: &Identity) -> Result<rustls::ClientConfig> {
    let tls = |e: rustls::Error| Error::Tls(e.to_string());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_root_certificates(roots(&id.ca)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(tls)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.enable_early_data = false;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_ca_and_nodes_with_private_keys() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let nodes = vec!["device".to_string(), "edge-1".to_string()];
        generate(dir.path(), &nodes)?;
        for n in &nodes {
            let id = Identity::load(dir.path(), n)?;
            assert_eq!(peer_name(&id.chain[0], &nodes).as_deref(), Some(n.as_str()));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(node_key_path(dir.path(), n))
                    .map_err(|e| Error::io("key", e))?
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        assert!(generate(dir.path(), &["Bad Name".to_string()]).is_err());
        assert!(generate(dir.path(), &["a".to_string(), "a".to_string()]).is_err());
        Ok(())
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn read(p: &Path) -> Result<Vec<u8>> {
        fs::read(p).map_err(|e| Error::io(p.display().to_string(), e))
    }

    /// A second run on the same folder signs with the CA already there:
    /// before, it replaced the CA and every earlier certificate stopped
    /// verifying (`BadSignature`).
    #[test]
    fn a_second_run_signs_with_the_existing_ca() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        assert_eq!(
            generate(dir.path(), &names(&["edge0", "edge1"]))?,
            CaUsed::New
        );
        let ca = read(&dir.path().join(CA_CERT))?;
        let ca_key = read(&dir.path().join(CA_KEY))?;
        assert_eq!(generate(dir.path(), &names(&["edge2"]))?, CaUsed::Existing);
        assert_eq!(read(&dir.path().join(CA_CERT))?, ca);
        assert_eq!(read(&dir.path().join(CA_KEY))?, ca_key);
        for n in ["edge0", "edge1", "edge2"] {
            check_chains_to(&ca, &read(&node_cert_path(dir.path(), n))?, n)?;
        }
        Ok(())
    }

    #[test]
    fn half_a_ca_or_a_mismatched_ca_key_is_refused_and_nothing_is_written() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        generate(dir.path(), &names(&["edge0"]))?;
        let other = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        generate(other.path(), &names(&["edge0"]))?;
        // ca.key of another cluster: leaves signed with it would not verify.
        let key = dir.path().join(CA_KEY);
        fs::copy(other.path().join(CA_KEY), &key).map_err(|e| Error::io("copy", e))?;
        let e = generate(dir.path(), &names(&["edge1"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("ca.key") && e.contains("ca.pem"), "{e}");
        assert!(!node_cert_path(dir.path(), "edge1").exists());
        // Only ca.pem: refused, naming both files.
        fs::remove_file(&key).map_err(|e| Error::io("rm", e))?;
        let e = generate(dir.path(), &names(&["edge1"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(&dir.path().join(CA_CERT).display().to_string())
                && e.contains(&key.display().to_string()),
            "{e}"
        );
        assert!(!node_cert_path(dir.path(), "edge1").exists() && !key.exists());
        // Only ca.key: refused too.
        fs::copy(other.path().join(CA_KEY), &key).map_err(|e| Error::io("copy", e))?;
        fs::remove_file(dir.path().join(CA_CERT)).map_err(|e| Error::io("rm", e))?;
        assert!(generate(dir.path(), &names(&["edge1"])).is_err());
        assert!(!dir.path().join(CA_CERT).exists());
        Ok(())
    }

    /// A node certificate and key of another cluster's CA fail at load,
    /// naming the certificate and the CA file; before, the daemon started
    /// and every handshake failed with `BadSignature`.
    #[test]
    fn a_certificate_of_another_ca_is_refused_at_load() -> Result<()> {
        let (dir, other) = (
            tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?,
            tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?,
        );
        generate(dir.path(), &names(&["edge0"]))?;
        generate(other.path(), &names(&["edge0"]))?;
        Identity::load(dir.path(), "edge0")?;
        for path in [node_cert_path, node_key_path] {
            fs::copy(path(other.path(), "edge0"), path(dir.path(), "edge0"))
                .map_err(|e| Error::io("copy", e))?;
        }
        let e = Identity::load(dir.path(), "edge0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let (pem, ca) = (
            node_cert_path(dir.path(), "edge0"),
            dir.path().join(CA_CERT),
        );
        assert!(
            e.contains(&format!(
                "{} does not verify against the CA in {}",
                pem.display(),
                ca.display()
            )),
            "{e}"
        );
        Ok(())
    }

    /// Another node's certificate and key, copied under this node's name,
    /// fail at load naming whose they are (every handshake failed on the
    /// name before).
    #[test]
    fn a_pair_copied_from_another_node_is_refused_at_load() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        generate(dir.path(), &names(&["edge0", "edge1"]))?;
        for path in [node_cert_path, node_key_path] {
            fs::copy(path(dir.path(), "edge1"), path(dir.path(), "edge0"))
                .map_err(|e| Error::io("copy", e))?;
        }
        let e = Identity::load(dir.path(), "edge0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("is a certificate for edge1, not for 'edge0'"),
            "{e}"
        );
        Ok(())
    }

    /// A key copied from another node fails at load, naming both files;
    /// before, it surfaced only when the endpoint was bound, as
    /// `cannot listen on ADDR: tls: keys may not be consistent: KeyMismatch`.
    #[test]
    fn a_key_of_another_node_is_refused_at_load_naming_both_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        generate(dir.path(), &names(&["edge0", "edge1"]))?;
        let key = node_key_path(dir.path(), "edge0");
        fs::copy(node_key_path(dir.path(), "edge1"), &key).map_err(|e| Error::io("copy", e))?;
        let e = Identity::load(dir.path(), "edge0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let pem = node_cert_path(dir.path(), "edge0");
        assert!(
            e.contains(&key.display().to_string()) && e.contains(&pem.display().to_string()),
            "{e}"
        );
        assert!(Identity::load(dir.path(), "edge1").is_ok());
        Ok(())
    }

    /// A typo in `peers`: the refusal names what the certificate carried
    /// (before: "client certificate names no allow-listed node"); the
    /// daemon's log line adds its allow-list.
    #[test]
    fn a_refused_client_certificate_is_named_with_the_allow_list() -> Result<()> {
        let ids = ephemeral(&names(&["edge0", "coordinator"]))?;
        assert_eq!(cert_names(&ids[1].chain[0]), ["coordinator"]);
        let inner = WebPkiClientVerifier::builder_with_provider(roots(&ids[0].ca)?, provider())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let allowed = names(&["coordnator"]);
        let verifier = AllowList {
            inner,
            allowed: server_names(&allowed)?,
            allowed_names: allowed,
        };
        let refused = verifier.verify_client_cert(&ids[1].chain[0], &[], UnixTime::now());
        let Err(rustls::Error::General(why)) = refused else {
            panic!("not refused by name: {refused:?}");
        };
        assert_eq!(why, "certificate [\"coordinator\"] not in peers");
        Ok(())
    }

    #[test]
    fn a_node_named_ca_is_refused_before_it_overwrites_the_ca() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        generate(dir.path(), &names(&["edge0"]))?;
        let ca = read(&dir.path().join(CA_CERT))?;
        let e = generate(dir.path(), &names(&["edge1", "ca"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("'ca'") && e.contains("reserved"), "{e}");
        assert_eq!(read(&dir.path().join(CA_CERT))?, ca);
        assert!(!node_cert_path(dir.path(), "edge1").exists());
        assert!(ephemeral(&names(&["ca"])).is_err());
        Ok(())
    }
}

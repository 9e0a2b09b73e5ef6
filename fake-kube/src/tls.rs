//! TLS material of the fake: a private CA and a server certificate for
//! `127.0.0.1` and `localhost`, generated in memory on every start.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA certificate that clients trust and the server configuration that presents a certificate signed by it.
pub(crate) struct Material {
    pub ca_pem: String,
    pub server_config: Arc<ServerConfig>,
}

/// Generates a fresh CA and server certificate.
///
/// The server certificate is separate from the CA because rustls (webpki)
/// rejects a CA certificate presented as an end-entity certificate.
pub(crate) fn generate() -> anyhow::Result<Material> {
    let ca_key = KeyPair::generate().context("failed to generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("invalid CA parameters")?;
    ca_params.distinguished_name.push(DnType::CommonName, "fake-kube CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("failed to sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    // rcgen turns "127.0.0.1" into an IP address SAN and "localhost" into a DNS name SAN.
    let server_key = KeyPair::generate().context("failed to generate the server key")?;
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let mut server_params = CertificateParams::new(names).context("invalid server certificate parameters")?;
    server_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let server_cert = server_params.signed_by(&server_key, &issuer).context("failed to sign the server certificate")?;

    let certs = vec![CertificateDer::from(server_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to select TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the server certificate does not match its key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Material { ca_pem: ca_cert.pem(), server_config: Arc::new(config) })
}

//! TLS material of the mock: a private CA and a server certificate for
//! `localhost` and `127.0.0.1`, generated with rcgen on first start and
//! reused from the state directory afterwards.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside the state directory.
pub const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server.key";

/// Paths of the TLS files in a state directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self { ca: dir.join(CA_FILE), cert: dir.join(CERT_FILE), key: dir.join(KEY_FILE) }
    }
}

/// Makes sure the state directory contains a CA and a server certificate,
/// generating both when the certificate or key is missing. The certificate
/// names `localhost`, `127.0.0.1`, `::1` and `extra_names`.
///
/// NOTE: existing material is reused as it is, so names added later need a
/// fresh state directory (or deleting `server.pem`).
pub fn ensure_material(dir: &Path, extra_names: &[String]) -> anyhow::Result<TlsFiles> {
    let files = TlsFiles::in_dir(dir);
    if files.cert.is_file() && files.key.is_file() && files.ca.is_file() {
        return Ok(files);
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create state directory {}", dir.display()))?;

    let ca_key = KeyPair::generate().context("failed to generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("invalid CA parameters")?;
    ca_params.distinguished_name.push(DnType::CommonName, "aiod-mock local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("failed to sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().context("failed to generate the server key")?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(extra_names.iter().cloned());
    let mut server_params = CertificateParams::new(names).context("invalid server certificate parameters")?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let server_cert = server_params.signed_by(&server_key, &issuer).context("failed to sign the server certificate")?;

    write_file(&files.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(&files.cert, server_cert.pem().as_bytes(), false)?;
    write_file(&files.key, server_key.serialize_pem().as_bytes(), true)?;
    tracing::info!(ca = %files.ca.display(), "generated TLS material");
    Ok(files)
}

/// Builds the rustls server configuration from the files.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("failed to open {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid certificate PEM in {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("invalid private key in {}", files.key.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to select TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the server certificate does not match its key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("failed to write {}", path.display()))
}

//! The HTTPS client for AIoD and its OIDC provider. Verification is always
//! on: against the CA file the operator gives, or else the system's roots.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

const USER_AGENT: &str = concat!("hw-agent/", env!("CARGO_PKG_VERSION"));

/// Installs rustls' ring provider as the process default. reqwest is built
/// without a provider of its own, so this must run before the first client.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client. With `ca_file`, only certificates that chain to the
/// CAs in that PEM file are accepted; the system roots are not consulted.
pub fn http_client(ca_file: Option<&Path>, request_timeout: Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(request_timeout);

    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("failed to read CA file {}; check --ca-cert", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!("CA file {} is not valid PEM; pass a PEM certificate bundle with --ca-cert", path.display())
        })?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "CA file {} contains no certificate; pass a PEM file with at least one `BEGIN CERTIFICATE` block",
            path.display()
        );
        builder = builder.tls_certs_only(certificates);
    }
    builder.build().context("failed to build the HTTPS client")
}

/// Finds a certificate-verification failure in a request error's causes.
pub fn certificate_error(error: &reqwest::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        if let Some(rustls::Error::InvalidCertificate(reason)) = cause.downcast_ref::<rustls::Error>() {
            return Some(format!("{reason:?}"));
        }
        // io::Error's `source()` skips its payload, and the connector nests
        // io::Errors, so step into the payload explicitly.
        current = match cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(payload) => Some(payload),
            None => cause.source(),
        };
    }
    None
}

//! Hands the cluster's credentials to the platform, sealed with HPKE
//! (RFC 9180) to the platform's public key, so that only the platform can
//! read them. The computational asset, which anyone can read, never contains
//! them.
//!
//! Suite: mode base, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20Poly1305. The asset identifier is the associated data, so a
//! ciphertext cannot be replayed onto another asset. The endpoint is an
//! extension that `aiod-mock` implements; AIoD has no such route today.
//! docs/credentials-handoff.md describes the wire format.

use base64::Engine as _;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, OpModeS, Serializable as _};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AiodClient, RequestError};

/// The HPKE `info` both sides bind into the key schedule.
pub const HPKE_INFO: &[u8] = b"aiod-hw-agent credentials v1";

/// Schema of the sealed plaintext.
pub const CREDENTIALS_SCHEMA: &str = "aiod-hw-agent/cluster-credentials/v1";

const KEY_PATH: &str = "/extensions/hw-agent/credentials-key";

/// The platform's published key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlatformKey {
    pub kem: String,
    pub kdf: String,
    pub aead: String,
    /// base64url without padding, 32 bytes.
    pub public_key: String,
    pub key_id: String,
}

impl PlatformKey {
    fn check(&self) -> anyhow::Result<[u8; 32]> {
        anyhow::ensure!(
            self.kem == "DHKEM(X25519, HKDF-SHA256)" && self.kdf == "HKDF-SHA256" && self.aead == "ChaCha20Poly1305",
            "the platform's credentials key uses {} / {} / {}, but this agent seals only with \
             DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20Poly1305",
            self.kem,
            self.kdf,
            self.aead
        );
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(self.public_key.trim_end_matches('='))
            .map_err(|error| anyhow::anyhow!("the platform's public key is not base64url: {error}"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| anyhow::anyhow!("the platform's public key has {} bytes, not 32", bytes.len()))?;
        let expected = key_id(&key);
        anyhow::ensure!(
            self.key_id == expected,
            "the platform's key_id {} does not match its public key (expected {expected})",
            self.key_id
        );
        Ok(key)
    }
}

/// First 16 hex characters of SHA-256 over the raw public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key))[..16].to_owned()
}

/// The plaintext the platform receives, once opened.
#[derive(Debug, Serialize)]
pub struct CredentialsPlaintext<'a> {
    pub schema: &'static str,
    pub cluster_name: &'a str,
    pub cluster_uid: &'a str,
    pub api_server_url: &'a str,
    /// base64 of the PEM CA bundle, as a kubeconfig's `certificate-authority-data`.
    pub certificate_authority_data: Option<String>,
    pub user: &'a str,
    pub token: &'a str,
    pub issued_at: String,
    pub expires_at: Option<String>,
    pub access: String,
}

/// Seals `plaintext` to `public_key`, bound to `asset_identifier`.
/// Returns the encapsulated key and the ciphertext.
pub fn seal(public_key: &[u8; 32], plaintext: &[u8], asset_identifier: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let recipient = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(public_key)
        .map_err(|error| anyhow::anyhow!("the platform's public key is not an X25519 key: {error}"))?;
    let (encapsulated, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &recipient,
        HPKE_INFO,
        plaintext,
        asset_identifier.as_bytes(),
        &mut rand::rng(),
    )
    .map_err(|error| anyhow::anyhow!("HPKE seal failed: {error}"))?;
    Ok((encapsulated.to_bytes().to_vec(), ciphertext))
}

/// The outcome of a hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    pub key_id: String,
    /// The key id of the previous hand-off when the platform's key changed since.
    pub key_changed_from: Option<String>,
}

/// How far to trust the platform's key.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    /// Refuse any key whose id differs (`--platform-key-id`).
    pub pinned: Option<String>,
    /// The key id of the last successful hand-off, to notice a change.
    pub previous: Option<String>,
}

impl AiodClient {
    /// Fetches the platform's credentials key; the route needs no token.
    pub async fn credentials_key(&self) -> anyhow::Result<PlatformKey> {
        let url = format!("{}{KEY_PATH}", self.api());
        self.fetch(&url, false, "fetch the platform's credentials key").await
    }

    /// Seals `plaintext` to the platform's current key and stores it for
    /// the asset. A key that changed between fetch and store (409) is
    /// fetched again once.
    pub async fn hand_off(
        &self,
        asset_identifier: &str,
        plaintext: &[u8],
        policy: &KeyPolicy,
    ) -> anyhow::Result<HandOff> {
        let mut refetched = false;
        loop {
            let key = self.credentials_key().await?;
            let public_key = key.check()?;
            if let Some(pinned) = &policy.pinned
                && *pinned != key.key_id
            {
                anyhow::bail!(
                    "the platform's credentials key is {}, but --platform-key-id pins {pinned}; the credentials were \
                     not handed off. If the platform rotated its key, confirm the new id with its operators and update \
                     --platform-key-id",
                    key.key_id
                );
            }
            let (encapsulated, ciphertext) = seal(&public_key, plaintext, asset_identifier)?;
            let body = json!({
                "key_id": key.key_id,
                "encapsulated_key": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encapsulated),
                "ciphertext": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ciphertext),
            });
            let url = format!("{}/extensions/hw-agent/computational_assets/{asset_identifier}/credentials", self.api());
            match self.call(Method::PUT, &url, Some(&body), true).await {
                Ok(_) => {
                    let key_changed_from = policy.previous.clone().filter(|previous| *previous != key.key_id);
                    if let Some(previous) = &key_changed_from {
                        tracing::warn!(
                            previous = %previous,
                            current = %key.key_id,
                            "the platform's credentials key changed since the last hand-off; sealed to the new key"
                        );
                    }
                    return Ok(HandOff { key_id: key.key_id, key_changed_from });
                }
                Err(RequestError::Api(error)) if error.status == StatusCode::CONFLICT && !refetched => {
                    tracing::info!(detail = %error.detail_text(), "the platform's key changed during the hand-off; sealing again");
                    refetched = true;
                }
                Err(error) => {
                    return Err(self.explain(&format!("hand off credentials for asset {asset_identifier}"), &error));
                }
            }
        }
    }

    /// Reads the hand-off metadata the platform keeps (never the plaintext).
    pub async fn handed_off(&self, asset_identifier: &str) -> anyhow::Result<Value> {
        let url = format!("{}/extensions/hw-agent/computational_assets/{asset_identifier}/credentials", self.api());
        self.fetch(&url, true, "read the credentials hand-off").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::{Kem as _, OpModeR};

    #[test]
    fn sealed_credentials_open_only_with_the_same_asset() {
        let mut rng = rand::rng();
        let (private, public) = X25519HkdfSha256::gen_keypair(&mut rng);
        let public_bytes: [u8; 32] = public.to_bytes().into();
        let (encapsulated, ciphertext) = seal(&public_bytes, b"token", "comp_a").expect("seals");
        let encapsulated = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&encapsulated).expect("enc");
        let open = |aad: &[u8]| {
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &private,
                &encapsulated,
                HPKE_INFO,
                &ciphertext,
                aad,
            )
        };
        assert_eq!(open(b"comp_a").expect("opens"), b"token");
        assert!(open(b"comp_b").is_err());
    }
}

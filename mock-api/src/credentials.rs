//! The platform side of the credentials hand-off, an extension that is not
//! part of AIoD's API: the agent seals a cluster's credentials to the
//! platform's public key with HPKE (RFC 9180) and uploads only the ciphertext.
//!
//! Suite: mode base, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20Poly1305. `info` is [`INFO`] and `aad` is the UTF-8 bytes of the
//! asset identifier, so a ciphertext sealed for one asset does not open for
//! another. The key pair lives in `STATE_DIR/credentials-x25519.key`.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::persist::Database;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Name of the key file in the state directory: one line of standard base64
/// encoding the 32-byte X25519 private key.
pub const KEY_FILE: &str = "credentials-x25519.key";

/// The HPKE `info` string of every hand-off.
pub const INFO: &str = "aiod-hw-agent credentials v1";

pub const KEM_NAME: &str = "DHKEM(X25519, HKDF-SHA256)";
pub const KDF_NAME: &str = "HKDF-SHA256";
pub const AEAD_NAME: &str = "ChaCha20Poly1305";

/// Length of an encapsulated key of DHKEM(X25519, HKDF-SHA256) (`Nenc`, RFC 9180 section 7.1).
pub const ENCAPSULATED_KEY_LEN: usize = 32;

/// Length of an X25519 private or public key in bytes.
const KEY_LEN: usize = 32;

/// The platform's HPKE key pair for credentials hand-offs.
pub struct CredentialsKey {
    private_key: PrivateKey,
    public_key: [u8; KEY_LEN],
    key_id: String,
}

impl fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsKey").field("key_id", &self.key_id).field("private_key", &"<redacted>").finish()
    }
}

impl CredentialsKey {
    /// Loads the key pair from the state directory, generating and storing a
    /// new one (mode 0600) when the directory has none.
    pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Self> {
        require_state_dir(state_dir)?;
        let path = key_path(state_dir);
        if path.exists() {
            return Self::load(state_dir);
        }
        let key = Self::generate();
        // A hard link fails when the target exists, so two processes that
        // start at once keep one key, and readers never see a partial file.
        let temporary = write_temporary_key_file(state_dir, &key)?;
        let linked = fs::hard_link(&temporary, &path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                tracing::info!(key_id = %key.key_id, path = %path.display(), "generated the credentials key");
                Ok(key)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load(state_dir),
            Err(error) => Err(error).with_context(|| format!("failed to create {}", path.display())),
        }
    }

    /// Loads the key pair from the state directory and fails when there is none.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        require_state_dir(state_dir)?;
        let path = key_path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "the credentials key {} is missing; `aiod-mock serve` or `aiod-mock credentials key` generates one",
                path.display()
            ),
            Err(error) => return Err(error).with_context(|| format!("failed to read {}", path.display())),
        };
        warn_if_readable_by_others(&path);
        // The message leaves the file's contents out, because they are the private key.
        let invalid = || {
            anyhow!(
                "invalid credentials key {}: expected one line of base64 encoding {KEY_LEN} bytes; \
                 replace it with `aiod-mock credentials rotate-key`",
                path.display()
            )
        };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| invalid())?;
        if bytes.len() != KEY_LEN {
            return Err(invalid());
        }
        let private_key = PrivateKey::from_bytes(&bytes).map_err(|_| invalid())?;
        Ok(Self::from_private_key(private_key))
    }

    /// Replaces the key pair in the state directory with a new one. Hand-offs
    /// sealed to the old key can no longer be opened.
    pub fn rotate(state_dir: &Path) -> anyhow::Result<Self> {
        require_state_dir(state_dir)?;
        let path = key_path(state_dir);
        let key = Self::generate();
        let temporary = write_temporary_key_file(state_dir, &key)?;
        if let Err(error) = fs::rename(&temporary, &path) {
            let _ = fs::remove_file(&temporary);
            return Err(error).with_context(|| format!("failed to replace {}", path.display()));
        }
        tracing::info!(key_id = %key.key_id, path = %path.display(), "replaced the credentials key");
        Ok(key)
    }

    fn generate() -> Self {
        let (private_key, _) = Kem::gen_keypair(&mut rand::rng());
        Self::from_private_key(private_key)
    }

    fn from_private_key(private_key: PrivateKey) -> Self {
        let mut public_key = [0; KEY_LEN];
        public_key.copy_from_slice(&Kem::sk_to_pk(&private_key).to_bytes());
        let key_id = key_id(&public_key);
        Self { private_key, public_key, key_id }
    }

    /// First 16 hex characters of SHA-256 over the raw public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key_bytes(&self) -> &[u8; KEY_LEN] {
        &self.public_key
    }

    /// Builds the body of `GET /extensions/hw-agent/credentials-key`: the
    /// suite, `info`, the public key in unpadded base64url and the key id.
    pub fn key_document(&self) -> Value {
        json!({
            "kem": KEM_NAME,
            "kdf": KDF_NAME,
            "aead": AEAD_NAME,
            "info": INFO,
            "public_key": URL_SAFE_NO_PAD.encode(self.public_key),
            "key_id": self.key_id,
        })
    }

    /// Decrypts a hand-off sealed for `asset_identifier`. Fails when the
    /// encapsulated key is not 32 bytes, or when the ciphertext was sealed to
    /// another key, for another asset or with another `info`, or was altered.
    pub fn open(&self, encapsulated_key: &[u8], ciphertext: &[u8], asset_identifier: &str) -> anyhow::Result<Vec<u8>> {
        open_with_info(&self.private_key, encapsulated_key, ciphertext, INFO.as_bytes(), asset_identifier.as_bytes())
    }
}

fn open_with_info(
    private_key: &PrivateKey,
    encapsulated_key: &[u8],
    ciphertext: &[u8],
    info: &[u8],
    aad: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let encapsulated_key = EncappedKey::from_bytes(encapsulated_key)
        .map_err(|error| anyhow!("invalid encapsulated key: {error}; expected {ENCAPSULATED_KEY_LEN} bytes"))?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, private_key, &encapsulated_key, info, ciphertext, aad)
        .map_err(|error| anyhow!("the ciphertext does not open: {error}"))
}

/// Seals `plaintext` for `asset_identifier` to `public_key` with the hand-off
/// suite, and returns the encapsulated key and the ciphertext. The mock never
/// seals; tests use this as a second implementation next to the agent's.
///
/// # Panics
///
/// Panics when `public_key` is a low-order point, whose X25519 shared secret
/// is all zeros, so HPKE rejects the encapsulation.
pub fn seal(public_key: &[u8; KEY_LEN], plaintext: &[u8], asset_identifier: &str) -> (Vec<u8>, Vec<u8>) {
    let public_key = PublicKey::from_bytes(public_key).expect("an X25519 public key is any 32 bytes");
    let (encapsulated_key, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        &public_key,
        INFO.as_bytes(),
        plaintext,
        asset_identifier.as_bytes(),
        &mut rand::rng(),
    )
    .expect("sealing to a valid X25519 public key succeeds");
    (encapsulated_key.to_bytes().to_vec(), ciphertext)
}

/// Returns the first 16 hex characters of SHA-256 over a raw public key.
pub fn key_id(public_key: &[u8; KEY_LEN]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// A stored hand-off: the sealed credentials of one asset, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    pub asset_identifier: String,
    /// Id of the platform key the credentials were sealed to.
    pub key_id: String,
    pub encapsulated_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// RFC 3339 UTC time at which the mock stored the hand-off.
    pub received_at: String,
}

/// Decrypts the stored hand-off of `asset_identifier` with the key in the
/// state directory: the platform operator's view, which returns the secret
/// credentials. The errors name the fix for a missing hand-off or a key that
/// changed after the hand-off.
pub fn open_stored(state_dir: &Path, asset_identifier: &str) -> anyhow::Result<Vec<u8>> {
    require_state_dir(state_dir)?;
    // Opening the database would create it; a directory without one contains
    // no hand-off, and reading must not change it.
    if !state_dir.join(crate::persist::DATABASE_FILE).is_file() {
        bail!(
            "{} holds no aiod-mock database, so no credentials were handed off there; pass the --state-dir that \
             `aiod-mock serve` uses",
            state_dir.display()
        );
    }
    let mut database = Database::open(state_dir)?;
    let Some(hand_off) = database.load_hand_off(asset_identifier)? else {
        bail!(
            "no credentials were handed off for asset {asset_identifier} in {}; have the agent hand them off \
             (PUT /extensions/hw-agent/computational_assets/{asset_identifier}/credentials)",
            state_dir.display()
        );
    };
    let key = CredentialsKey::load(state_dir)?;
    if hand_off.key_id != key.key_id() {
        bail!(
            "the credentials of asset {asset_identifier} were sealed to key {} but the state directory contains key {}: \
             the platform key changed after the hand-off; have the agent hand off again",
            hand_off.key_id,
            key.key_id()
        );
    }
    key.open(&hand_off.encapsulated_key, &hand_off.ciphertext, asset_identifier).with_context(|| {
        format!("failed to decrypt the stored credentials of asset {asset_identifier} with key {}", key.key_id())
    })
}

fn require_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    if state_dir.is_dir() {
        return Ok(());
    }
    let problem = if state_dir.exists() { "is not a directory" } else { "does not exist" };
    bail!("the state directory {} {problem}; pass the --state-dir that `aiod-mock serve` uses", state_dir.display())
}

fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Writes the key to a new, uniquely named file next to the key file, with
/// mode 0600 from the start, and syncs it.
fn write_temporary_key_file(state_dir: &Path, key: &CredentialsKey) -> anyhow::Result<PathBuf> {
    let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(12).map(char::from).collect();
    let path = state_dir.join(format!("{KEY_FILE}.{suffix}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| format!("failed to create {}", path.display()))?;
    let line = format!("{}\n", STANDARD.encode(key.private_key.to_bytes()));
    let written = file.write_all(line.as_bytes()).and_then(|()| file.sync_all());
    if let Err(error) = written {
        let _ = fs::remove_file(&path);
        return Err(error).with_context(|| format!("failed to write {}", path.display()));
    }
    Ok(path)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                "the credentials key is accessible to other users; run `chmod 600` on it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text).expect("hex")
    }

    /// RFC 9180 appendix A.2.1, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    /// ChaCha20Poly1305, base mode, encryption sequence number 0.
    #[test]
    fn opens_rfc_9180_vector() {
        let private_key =
            PrivateKey::from_bytes(&unhex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb"))
                .expect("skRm");
        let key = CredentialsKey::from_private_key(private_key);
        assert_eq!(hex::encode(key.public_key), "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a");

        let plaintext = open_with_info(
            &key.private_key,
            &unhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"),
            &unhex("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"),
            &unhex("4f6465206f6e2061204772656369616e2055726e"),
            b"Count-0",
        )
        .expect("the RFC vector opens");
        assert_eq!(plaintext, b"Beauty is truth, truth beauty");
    }

    #[test]
    fn seal_and_open_round_trip() {
        let dir = tempfile::tempdir().expect("state directory");
        let key = CredentialsKey::load_or_create(dir.path()).expect("key");
        let (encapsulated_key, ciphertext) = seal(key.public_key_bytes(), b"secret", "comp_a");
        assert_eq!(encapsulated_key.len(), ENCAPSULATED_KEY_LEN);
        assert_eq!(key.open(&encapsulated_key, &ciphertext, "comp_a").expect("opens"), b"secret");
        assert!(key.open(&encapsulated_key, &ciphertext, "comp_b").is_err(), "the aad binds the asset");
        assert!(key.open(&encapsulated_key[..31], &ciphertext, "comp_a").is_err(), "short encapsulated key");
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("state directory");
        let created = CredentialsKey::load_or_create(dir.path()).expect("key");
        let reloaded = CredentialsKey::load_or_create(dir.path()).expect("key again");
        assert_eq!(created.public_key_bytes(), reloaded.public_key_bytes());
        assert_eq!(created.key_id(), key_id(created.public_key_bytes()));
        assert_eq!(created.key_id().len(), 16);

        let text = fs::read_to_string(dir.path().join(KEY_FILE)).expect("key file");
        assert_eq!(text.lines().count(), 1);
        assert_eq!(STANDARD.decode(text.trim()).expect("base64").len(), KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn rotate_replaces_the_key() {
        let dir = tempfile::tempdir().expect("state directory");
        let old = CredentialsKey::load_or_create(dir.path()).expect("key");
        let new = CredentialsKey::rotate(dir.path()).expect("rotate");
        assert_ne!(old.key_id(), new.key_id());
        assert_eq!(CredentialsKey::load(dir.path()).expect("load").key_id(), new.key_id());
    }

    #[test]
    fn invalid_key_file_is_reported_without_contents() {
        let dir = tempfile::tempdir().expect("state directory");
        fs::write(dir.path().join(KEY_FILE), "c2VjcmV0LWJ1dC10b28tc2hvcnQ=\n").expect("write");
        let message = format!("{:#}", CredentialsKey::load(dir.path()).expect_err("too short"));
        assert!(message.contains("invalid credentials key"), "{message}");
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }

    #[test]
    fn debug_hides_private_key() {
        let dir = tempfile::tempdir().expect("state directory");
        let key = CredentialsKey::load_or_create(dir.path()).expect("key");
        let encoded = STANDARD.encode(key.private_key.to_bytes());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&encoded), "{debug}");
        assert!(debug.contains(key.key_id()));
    }
}

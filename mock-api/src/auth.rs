//! Clients, tokens and the OIDC client-credentials token endpoint, shaped
//! like AIoD's Keycloak realm (`/realms/aiod/protocol/openid-connect/token`).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::distr::Alphanumeric;

/// A service-account client the mock accepts, with its realm roles.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub secret: String,
    pub roles: Vec<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

impl std::str::FromStr for Client {
    type Err = String;

    /// Parses `ID:SECRET:ROLE,ROLE`. Roles may be empty (`ID:SECRET:` or
    /// `ID:SECRET`); the secret cannot contain `:`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, ':');
        let id = parts.next().unwrap_or_default();
        let secret = parts.next().unwrap_or_default();
        let roles = parts.next().unwrap_or_default();
        if id.is_empty() || secret.is_empty() {
            return Err(format!(
                "invalid client `{id}:...`: expected ID:SECRET:ROLE,ROLE with a non-empty id and secret, \
                 for example `agent:s3cret:platform_example`"
            ));
        }
        let roles = roles.split(',').map(str::trim).filter(|role| !role.is_empty()).map(str::to_owned).collect();
        Ok(Client { id: id.to_owned(), secret: secret.to_owned(), roles })
    }
}

/// The identity behind a request, as the AIoD server resolves it by token introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub client_id: String,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Platforms this caller is a connector for (`platform_<name>` roles).
    pub fn connector_platforms(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().filter_map(|role| role.strip_prefix("platform_"))
    }

    pub fn is_connector_for(&self, platform: &str) -> bool {
        self.connector_platforms().any(|name| name == platform)
    }
}

struct IssuedToken {
    caller: Caller,
    expires_at: Instant,
}

/// Registered clients and the tokens issued to them. Tokens are opaque
/// random strings, valid until they expire.
pub struct Realm {
    clients: Vec<Client>,
    tokens: HashMap<String, IssuedToken>,
    token_lifetime: Duration,
}

impl fmt::Debug for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Realm")
            .field("clients", &self.clients)
            .field("tokens", &self.tokens.len())
            .field("token_lifetime", &self.token_lifetime)
            .finish()
    }
}

/// A rejection by the token endpoint, with Keycloak's error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    UnsupportedGrantType,
    InvalidClient,
    InvalidRequest(&'static str),
}

impl Realm {
    pub fn new(clients: Vec<Client>, token_lifetime: Duration) -> Self {
        Self { clients, tokens: HashMap::new(), token_lifetime }
    }

    pub fn token_lifetime(&self) -> Duration {
        self.token_lifetime
    }

    /// Issues a token for a client-credentials grant.
    pub fn issue(
        &mut self,
        grant_type: Option<&str>,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<String, TokenError> {
        match grant_type {
            Some("client_credentials") => {}
            Some(_) => return Err(TokenError::UnsupportedGrantType),
            None => return Err(TokenError::InvalidRequest("Missing form parameter: grant_type")),
        }
        let (Some(client_id), Some(secret)) = (client_id, secret) else {
            return Err(TokenError::InvalidClient);
        };
        let Some(client) =
            self.clients.iter().find(|client| client.id == client_id && constant_time_eq(&client.secret, secret))
        else {
            return Err(TokenError::InvalidClient);
        };

        let now = Instant::now();
        self.tokens.retain(|_, token| token.expires_at > now);
        let token: String = rand::rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect();
        let caller = Caller { client_id: client.id.clone(), roles: client.roles.clone() };
        self.tokens.insert(token.clone(), IssuedToken { caller, expires_at: now + self.token_lifetime });
        Ok(token)
    }

    /// Returns the caller a bearer token belongs to, if it is valid.
    pub fn introspect(&self, token: &str) -> Option<Caller> {
        let issued = self.tokens.get(token)?;
        (issued.expires_at > Instant::now()).then(|| issued.caller.clone())
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_spec_with_and_without_roles() {
        let client: Client = "agent:s3cret:platform_example,create_platforms".parse().expect("valid spec");
        assert_eq!(client.roles, vec!["platform_example", "create_platforms"]);
        let bare: Client = "agent:s3cret".parse().expect("valid spec");
        assert!(bare.roles.is_empty());
        assert!("agent".parse::<Client>().is_err());
    }

    #[test]
    fn debug_hides_secret() {
        let client: Client = "agent:s3cret:".parse().expect("valid spec");
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn realm_issues_and_checks_tokens() {
        let mut realm = Realm::new(vec!["a:b:platform_x".parse().expect("valid spec")], Duration::from_secs(60));
        assert_eq!(realm.issue(Some("password"), Some("a"), Some("b")), Err(TokenError::UnsupportedGrantType));
        assert_eq!(realm.issue(Some("client_credentials"), Some("a"), Some("wrong")), Err(TokenError::InvalidClient));
        let token = realm.issue(Some("client_credentials"), Some("a"), Some("b")).expect("token");
        let caller = realm.introspect(&token).expect("valid token");
        assert!(caller.is_connector_for("x"));
        assert!(realm.introspect("nonsense").is_none());
    }
}

//! Kubernetes credentials for the platform: a ServiceAccount, a binding
//! that grants it the chosen access, and a token from the TokenRequest API.
//!
//! The token is never stored in the cluster by the agent: it exists in the
//! agent's memory until it is sealed for the platform. What was issued, and
//! when, is kept as annotations on the ServiceAccount so that `show` and a
//! new leader can tell when the next rotation is due.
//!
//! NOTE: a TokenRequest token cannot be revoked on its own; it stays valid
//! until it expires or its ServiceAccount is deleted. Rotation therefore
//! shortens exposure but does not cut off an earlier token; `revoke`, which
//! deletes the ServiceAccount, does.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use secrecy::SecretString;
use serde::Serialize;

use super::{Action, FIELD_MANAGER, KubeError, call, call_optional};

/// Name of the ServiceAccount, its binding and its legacy token Secret.
pub const PLATFORM_ACCOUNT: &str = "aiod-platform";

const LEGACY_SECRET: &str = "aiod-platform-token";
const ANNOTATION_PREFIX: &str = "hw-agent.aiod.eu/";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);

/// Shortest TTL the TokenRequest API accepts.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// The rights the platform gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A ClusterRoleBinding to `cluster-admin`: what the platform expects.
    ClusterAdmin,
    /// A RoleBinding to the `admin` ClusterRole in one namespace.
    Namespace(String),
    /// A ClusterRoleBinding to the named ClusterRole.
    ClusterRole(String),
}

impl std::str::FromStr for Access {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == ':')
        };
        match text.split_once(':') {
            None if text == "cluster-admin" => Ok(Access::ClusterAdmin),
            Some(("namespace", name)) if super::is_dns_label(name) => Ok(Access::Namespace(name.to_owned())),
            Some(("clusterrole", name)) if valid_name(name) => Ok(Access::ClusterRole(name.to_owned())),
            _ => Err(format!(
                "`{text}` is not an access level; use `cluster-admin`, `namespace:NAME` or `clusterrole:NAME`"
            )),
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::ClusterAdmin => f.write_str("cluster-admin"),
            Access::Namespace(name) => write!(f, "namespace:{name}"),
            Access::ClusterRole(name) => write!(f, "clusterrole:{name}"),
        }
    }
}

/// Location and rights of the platform's credentials.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// The agent's namespace, which contains the ServiceAccount.
    pub namespace: String,
    pub access: Access,
    pub token_ttl: Duration,
}

/// The API that issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMethod {
    TokenRequest,
    /// A `kubernetes.io/service-account-token` Secret, which never expires.
    LegacySecret,
}

impl TokenMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMethod::TokenRequest => "token-request",
            TokenMethod::LegacySecret => "legacy-secret",
        }
    }
}

/// A freshly issued token. The token itself is a [`SecretString`], so it
/// cannot be logged or printed by accident.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// `system:serviceaccount:NAMESPACE:aiod-platform`.
    pub user: String,
    pub token: SecretString,
    pub issued_at: DateTime<Utc>,
    /// `None` for a legacy Secret token.
    pub expires_at: Option<DateTime<Utc>>,
    pub method: TokenMethod,
    pub access: Access,
}

impl IssuedToken {
    /// When the token should be replaced: when a fifth of its life remains.
    pub fn rotate_at(&self) -> Option<DateTime<Utc>> {
        rotation_due_at(self.issued_at, self.expires_at?)
    }
}

pub fn rotation_due_at(issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let life = expires_at - issued_at;
    Some(expires_at - life / 5)
}

/// The facts `show` prints: everything but the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CredentialStatus {
    pub namespace: String,
    pub service_account: Option<String>,
    pub user: Option<String>,
    pub access: Option<String>,
    pub bindings: Vec<String>,
    pub method: Option<String>,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub rotate_at: Option<String>,
    pub handed_off_to: Option<String>,
    pub platform_key_id: Option<String>,
}

/// Creates and reads the platform's credentials in one cluster.
#[derive(Clone)]
pub struct Credentials {
    client: kube::Client,
    settings: CredentialSettings,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(client: kube::Client, settings: CredentialSettings) -> Self {
        Self { client, settings }
    }

    pub fn settings(&self) -> &CredentialSettings {
        &self.settings
    }

    fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{PLATFORM_ACCOUNT}", self.namespace())
    }

    fn accounts(&self) -> Api<ServiceAccount> {
        Api::namespaced(self.client.clone(), self.namespace())
    }

    /// Ensures the ServiceAccount and binding exist, then issues a token.
    /// `rotate` is the same operation: a new token, same account.
    pub async fn mint(&self) -> Result<IssuedToken, KubeError> {
        self.ensure_account().await?;
        self.ensure_binding().await?;
        let token = match self.token_request().await? {
            Some(token) => token,
            None => self.legacy_token().await?,
        };
        self.record(&[
            ("access", Some(token.access.to_string())),
            ("token-method", Some(token.method.as_str().to_owned())),
            ("token-issued-at", Some(token.issued_at.to_rfc3339())),
            ("token-expires-at", token.expires_at.map(|time| time.to_rfc3339())),
            // A new token has not been handed off yet.
            ("handed-off-to", None),
        ])
        .await?;
        Ok(token)
    }

    async fn ensure_account(&self) -> Result<(), KubeError> {
        let namespace = self.namespace().to_owned();
        let action = |verb| Action::namespaced(verb, "", "serviceaccounts", &namespace, Some(PLATFORM_ACCOUNT));
        if call_optional(action("get"), self.accounts().get(PLATFORM_ACCOUNT)).await?.is_some() {
            return Ok(());
        }
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(PLATFORM_ACCOUNT.to_owned()),
                labels: Some(managed_labels()),
                annotations: Some(
                    [(
                        "kubernetes.io/description".to_owned(),
                        "Credentials hw-agent mints for the AI-on-Demand platform".to_owned(),
                    )]
                    .into_iter()
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match call(action("create"), self.accounts().create(&PostParams::default(), &account)).await {
            Ok(_) => {
                tracing::info!(namespace = %namespace, account = PLATFORM_ACCOUNT, "created the platform's ServiceAccount");
                Ok(())
            }
            Err(error) if error.is_already_exists() => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: PLATFORM_ACCOUNT.to_owned(),
            namespace: Some(self.namespace().to_owned()),
            ..Subject::default()
        }
    }

    /// Creates the binding for the configured access, replacing a binding of
    /// another access (a binding's roleRef cannot be changed in place).
    async fn ensure_binding(&self) -> Result<(), KubeError> {
        let recorded = self.status().await?.access;
        if let Some(previous) = recorded.as_deref().and_then(|text| text.parse::<Access>().ok())
            && previous != self.settings.access
        {
            tracing::info!(from = %previous, to = %self.settings.access, "platform access changed; replacing the binding");
            self.delete_binding(&previous).await?;
        }
        let (kind, role) = match &self.settings.access {
            Access::ClusterAdmin => ("ClusterRole", "cluster-admin".to_owned()),
            Access::ClusterRole(name) => ("ClusterRole", name.clone()),
            Access::Namespace(_) => ("ClusterRole", "admin".to_owned()),
        };
        let role_ref = RoleRef { api_group: "rbac.authorization.k8s.io".to_owned(), kind: kind.to_owned(), name: role };
        let metadata = ObjectMeta {
            name: Some(PLATFORM_ACCOUNT.to_owned()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        };
        match &self.settings.access {
            Access::Namespace(namespace) => {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
                let action = |verb| {
                    Action::namespaced(
                        verb,
                        "rbac.authorization.k8s.io",
                        "rolebindings",
                        namespace,
                        Some(PLATFORM_ACCOUNT),
                    )
                };
                let existing = call_optional(action("get"), api.get(PLATFORM_ACCOUNT)).await?;
                if let Some(existing) = existing {
                    if existing.role_ref == role_ref {
                        return Ok(());
                    }
                    call(action("delete"), api.delete(PLATFORM_ACCOUNT, &DeleteParams::default())).await?;
                }
                let binding = RoleBinding { metadata, role_ref, subjects: Some(vec![self.subject()]) };
                call(action("create"), api.create(&PostParams::default(), &binding)).await?;
            }
            Access::ClusterAdmin | Access::ClusterRole(_) => {
                let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
                let action = |verb| {
                    Action::cluster(verb, "rbac.authorization.k8s.io", "clusterrolebindings", Some(PLATFORM_ACCOUNT))
                };
                let existing = call_optional(action("get"), api.get(PLATFORM_ACCOUNT)).await?;
                if let Some(existing) = existing {
                    if existing.role_ref == role_ref {
                        return Ok(());
                    }
                    call(action("delete"), api.delete(PLATFORM_ACCOUNT, &DeleteParams::default())).await?;
                }
                let binding = ClusterRoleBinding { metadata, role_ref, subjects: Some(vec![self.subject()]) };
                call(action("create"), api.create(&PostParams::default(), &binding))
                    .await
                    .map_err(|error| bind_hint(error, &self.settings.access))?;
            }
        }
        tracing::info!(access = %self.settings.access, "bound the platform's ServiceAccount");
        Ok(())
    }

    /// Deletes the binding of `access`; returns false when there was none.
    async fn delete_binding(&self, access: &Access) -> Result<bool, KubeError> {
        let deleted = match access {
            Access::Namespace(namespace) => {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
                let action = Action::namespaced(
                    "delete",
                    "rbac.authorization.k8s.io",
                    "rolebindings",
                    namespace,
                    Some(PLATFORM_ACCOUNT),
                );
                call_optional(action, api.delete(PLATFORM_ACCOUNT, &DeleteParams::default())).await?.is_some()
            }
            Access::ClusterAdmin | Access::ClusterRole(_) => {
                let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
                let action = Action::cluster(
                    "delete",
                    "rbac.authorization.k8s.io",
                    "clusterrolebindings",
                    Some(PLATFORM_ACCOUNT),
                );
                call_optional(action, api.delete(PLATFORM_ACCOUNT, &DeleteParams::default())).await?.is_some()
            }
        };
        Ok(deleted)
    }

    /// Asks the TokenRequest API for a token. `Ok(None)` when the API does
    /// not exist on this server (404 on the subresource).
    async fn token_request(&self) -> Result<Option<IssuedToken>, KubeError> {
        let requested = self.settings.token_ttl.as_secs().max(MIN_TOKEN_TTL.as_secs());
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(i64::try_from(requested).unwrap_or(i64::MAX)),
                ..TokenRequestSpec::default()
            },
            status: None,
        };
        let action =
            Action::namespaced("create", "", "serviceaccounts/token", self.namespace(), Some(PLATFORM_ACCOUNT));
        let issued_at = Utc::now();
        let response = match call(
            action.clone(),
            self.accounts().create_token_request(PLATFORM_ACCOUNT, &PostParams::default(), &request),
        )
        .await
        {
            Ok(response) => response,
            Err(error) if error.is_not_found() => {
                tracing::warn!("the API server has no TokenRequest API (404 on serviceaccounts/token)");
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let status = response.status.ok_or_else(|| KubeError::Other {
            action: action.clone(),
            message: "the TokenRequest response has no status".to_owned(),
        })?;
        let expiration = status.expiration_timestamp.0;
        let expires_at = DateTime::from_timestamp(expiration.as_second(), expiration.subsec_nanosecond().max(0) as u32)
            .ok_or_else(|| KubeError::Other {
                action: action.clone(),
                message: format!("the TokenRequest expirationTimestamp {expiration} is out of range"),
            })?;
        let granted = (expires_at - issued_at).num_seconds().max(0) as u64;
        // The API server caps lifetimes at its
        // --service-account-max-token-expiration; rotation must follow the
        // expiry it granted, not the one asked for.
        if granted + 60 < requested {
            tracing::warn!(
                requested_secs = requested,
                granted_secs = granted,
                expires_at = %expires_at.to_rfc3339(),
                "the API server shortened the token lifetime; rotating on its expiry"
            );
        }
        Ok(Some(IssuedToken {
            user: self.user(),
            token: SecretString::from(status.token),
            issued_at,
            expires_at: Some(expires_at),
            method: TokenMethod::TokenRequest,
            access: self.settings.access.clone(),
        }))
    }

    /// Obtains a token the pre-1.22 way, from a Secret the token controller
    /// fills. It never expires, so it is only used when TokenRequest is missing.
    async fn legacy_token(&self) -> Result<IssuedToken, KubeError> {
        tracing::warn!(
            secret = LEGACY_SECRET,
            "falling back to a kubernetes.io/service-account-token Secret; its token NEVER expires \
             until `hw-agent credentials revoke` deletes it"
        );
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace());
        let namespace = self.namespace().to_owned();
        let action = |verb| Action::namespaced(verb, "", "secrets", &namespace, Some(LEGACY_SECRET));
        // A rotation replaces the Secret, which also invalidates its token.
        call_optional(action("delete"), secrets.delete(LEGACY_SECRET, &DeleteParams::default())).await?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(LEGACY_SECRET.to_owned()),
                labels: Some(managed_labels()),
                annotations: Some(
                    [("kubernetes.io/service-account.name".to_owned(), PLATFORM_ACCOUNT.to_owned())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/service-account-token".to_owned()),
            ..Secret::default()
        };
        call(action("create"), secrets.create(&PostParams::default(), &secret)).await?;
        let issued_at = Utc::now();
        // The token controller fills `data.token` shortly after creation.
        for _ in 0..50 {
            let secret = call(action("get"), secrets.get(LEGACY_SECRET)).await?;
            if let Some(token) = secret.data.as_ref().and_then(|data| data.get("token")) {
                let token = String::from_utf8(token.0.clone()).map_err(|_| KubeError::Other {
                    action: action("get"),
                    message: "the token in the Secret is not UTF-8".to_owned(),
                })?;
                return Ok(IssuedToken {
                    user: self.user(),
                    token: SecretString::from(token),
                    issued_at,
                    expires_at: None,
                    method: TokenMethod::LegacySecret,
                    access: self.settings.access.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(KubeError::Other {
            action: action("get"),
            message: "the token controller did not fill the Secret within 5 seconds".to_owned(),
        })
    }

    /// Records facts about the credentials as ServiceAccount annotations.
    pub async fn record(&self, values: &[(&str, Option<String>)]) -> Result<(), KubeError> {
        let annotations: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(key, value)| {
                (
                    format!("{ANNOTATION_PREFIX}{key}"),
                    value.clone().map_or(serde_json::Value::Null, serde_json::Value::from),
                )
            })
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let action = Action::namespaced("patch", "", "serviceaccounts", self.namespace(), Some(PLATFORM_ACCOUNT));
        call(action, self.accounts().patch(PLATFORM_ACCOUNT, &PatchParams::default(), &Patch::Merge(&patch))).await?;
        Ok(())
    }

    /// Everything about the credentials except the token.
    pub async fn status(&self) -> Result<CredentialStatus, KubeError> {
        let action = Action::namespaced("get", "", "serviceaccounts", self.namespace(), Some(PLATFORM_ACCOUNT));
        let Some(account) = call_optional(action, self.accounts().get(PLATFORM_ACCOUNT)).await? else {
            return Ok(CredentialStatus { namespace: self.namespace().to_owned(), ..CredentialStatus::default() });
        };
        let annotations = account.metadata.annotations.unwrap_or_default();
        let get = |key: &str| annotations.get(&format!("{ANNOTATION_PREFIX}{key}")).cloned();
        let access = get("access");
        let bindings = match access.as_deref().and_then(|text| text.parse::<Access>().ok()) {
            Some(Access::Namespace(namespace)) => {
                vec![format!("RoleBinding {namespace}/{PLATFORM_ACCOUNT} -> ClusterRole admin")]
            }
            Some(Access::ClusterRole(role)) => {
                vec![format!("ClusterRoleBinding {PLATFORM_ACCOUNT} -> ClusterRole {role}")]
            }
            Some(Access::ClusterAdmin) => {
                vec![format!("ClusterRoleBinding {PLATFORM_ACCOUNT} -> ClusterRole cluster-admin")]
            }
            None => Vec::new(),
        };
        let rotate_at = match (get("token-issued-at"), get("token-expires-at")) {
            (Some(issued), Some(expires)) => match (parse_time(&issued), parse_time(&expires)) {
                (Some(issued), Some(expires)) => rotation_due_at(issued, expires).map(|time| time.to_rfc3339()),
                _ => None,
            },
            _ => None,
        };
        Ok(CredentialStatus {
            namespace: self.namespace().to_owned(),
            service_account: Some(PLATFORM_ACCOUNT.to_owned()),
            user: Some(self.user()),
            access,
            bindings,
            method: get("token-method"),
            issued_at: get("token-issued-at"),
            expires_at: get("token-expires-at"),
            rotate_at,
            handed_off_to: get("handed-off-to"),
            platform_key_id: get("platform-key-id"),
        })
    }

    /// Deletes what `mint` created. Deleting the ServiceAccount invalidates
    /// every token issued for it.
    pub async fn revoke(&self) -> Result<Vec<String>, KubeError> {
        let mut deleted = Vec::new();
        let status = self.status().await?;
        let mut accesses = vec![self.settings.access.clone()];
        if let Some(recorded) = status.access.as_deref().and_then(|text| text.parse::<Access>().ok())
            && !accesses.contains(&recorded)
        {
            accesses.push(recorded);
        }
        for access in &accesses {
            if !self.delete_binding(access).await? {
                continue;
            }
            deleted.push(match access {
                Access::Namespace(namespace) => format!("RoleBinding {namespace}/{PLATFORM_ACCOUNT}"),
                _ => format!("ClusterRoleBinding {PLATFORM_ACCOUNT}"),
            });
        }
        deleted.dedup();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace());
        let action = Action::namespaced("delete", "", "secrets", self.namespace(), Some(LEGACY_SECRET));
        if call_optional(action, secrets.delete(LEGACY_SECRET, &DeleteParams::default())).await?.is_some() {
            deleted.push(format!("Secret {}/{LEGACY_SECRET}", self.namespace()));
        }
        let action = Action::namespaced("delete", "", "serviceaccounts", self.namespace(), Some(PLATFORM_ACCOUNT));
        if call_optional(action, self.accounts().delete(PLATFORM_ACCOUNT, &DeleteParams::default())).await?.is_some() {
            deleted.push(format!("ServiceAccount {}/{PLATFORM_ACCOUNT}", self.namespace()));
        }
        if !deleted.is_empty() {
            tracing::info!(deleted = %deleted.join(", "), "revoked the platform's credentials");
        }
        Ok(deleted)
    }
}

fn managed_labels() -> BTreeMap<String, String> {
    [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into_iter().collect()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|time| time.with_timezone(&Utc))
}

/// Kubernetes lets a subject bind a role only if it has the role's rights
/// or the `bind` verb on it; add that to a 403 on the binding.
fn bind_hint(error: KubeError, access: &Access) -> KubeError {
    match error {
        KubeError::Forbidden { action, message } => {
            let role = match access {
                Access::ClusterAdmin => "cluster-admin".to_owned(),
                Access::ClusterRole(name) => name.clone(),
                Access::Namespace(_) => "admin".to_owned(),
            };
            KubeError::Forbidden {
                action,
                message: format!(
                    "{message} (to bind ClusterRole `{role}` the agent also needs {{apiGroups: [\"rbac.authorization.k8s.io\"], \
                     resources: [\"clusterroles\"], verbs: [\"bind\"], resourceNames: [\"{role}\"]}})"
                ),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_parses_the_three_forms() {
        assert_eq!("cluster-admin".parse::<Access>(), Ok(Access::ClusterAdmin));
        assert_eq!("namespace:ml-jobs".parse::<Access>(), Ok(Access::Namespace("ml-jobs".to_owned())));
        assert_eq!("clusterrole:view".parse::<Access>(), Ok(Access::ClusterRole("view".to_owned())));
        for bad in ["admin", "namespace:", "namespace:Bad", "namespace:a.b", "clusterrole:", "team:x"] {
            let error = bad.parse::<Access>().expect_err(bad);
            assert!(error.contains(bad), "{error}");
            assert!(error.contains("namespace:NAME"), "{error}");
        }
    }

    #[test]
    fn rotation_due_at_four_fifths() {
        let issued = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid").with_timezone(&Utc);
        let expires = issued + chrono::Duration::hours(10);
        assert_eq!(rotation_due_at(issued, expires), Some(issued + chrono::Duration::hours(8)));
    }
}

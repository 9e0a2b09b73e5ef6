//! The AIoD connector: OIDC client-credentials token, and register-or-update
//! of a computational asset identified by (`platform`,
//! `platform_resource_identifier`).

mod asset;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;

pub use asset::{asset_body, machine_resource_identifier};

/// Largest page the list routes serve.
const PAGE_LIMIT: usize = 1000;

/// The AIoD deployment and the connector identity used to register.
#[derive(Debug, Clone)]
pub struct AiodSettings {
    /// Base URL of the AIoD REST API, such as `https://api.aiod.eu`.
    pub api_url: String,
    /// The OIDC token endpoint.
    pub token_url: String,
    /// PEM file of the CA to trust; `None` uses the system roots.
    pub ca_cert: Option<PathBuf>,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The connector platform name; the client needs the `platform_<name>` role.
    pub platform: String,
    pub request_timeout: Duration,
}

/// The outcome of a register-or-update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub identifier: String,
    /// True when a new asset was created, false when one was replaced.
    pub created: bool,
}

/// An error response of the API, with the parts worth showing.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: Value,
    /// The `reference` id the server logs with the error.
    pub reference: Option<String>,
}

impl ApiError {
    fn detail_text(&self) -> String {
        match &self.detail {
            Value::String(text) => text.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    let location: Vec<String> = item["loc"]
                        .as_array()
                        .map(|parts| parts.iter().map(|part| part.to_string().trim_matches('"').to_owned()).collect())
                        .unwrap_or_default();
                    format!("{}: {}", location.join("."), item["msg"].as_str().unwrap_or("invalid"))
                })
                .collect::<Vec<_>>()
                .join("; "),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// A connected client: an HTTPS client and a token.
#[derive(Debug)]
pub struct AiodClient {
    http: reqwest::Client,
    settings: AiodSettings,
    token: SecretString,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

impl AiodClient {
    /// Builds the HTTPS client and fetches a token.
    pub async fn connect(settings: AiodSettings) -> anyhow::Result<Self> {
        let http = tls::http_client(settings.ca_cert.as_deref(), settings.request_timeout)?;
        let token = fetch_token(&http, &settings).await?;
        Ok(Self { http, settings, token })
    }

    pub fn settings(&self) -> &AiodSettings {
        &self.settings
    }

    /// Creates the asset, or replaces the one with the same
    /// `platform_resource_identifier`. `body` must carry the platform fields,
    /// because a PUT clears whatever it omits.
    pub async fn register(&self, resource_identifier: &str, body: &Value) -> anyhow::Result<Registration> {
        let span =
            tracing::info_span!("aiod.register", platform = %self.settings.platform, resource = %resource_identifier);
        let _entered = span.enter();

        if let Some(identifier) = self.find(resource_identifier).await? {
            self.put(&identifier, body).await?;
            tracing::info!(%identifier, "asset updated");
            return Ok(Registration { identifier, created: false });
        }

        match self.post(body).await {
            Ok(identifier) => {
                tracing::info!(%identifier, "asset registered");
                Ok(Registration { identifier, created: true })
            }
            // Another agent created the asset between our lookup and POST.
            Err(RequestError::Api(error)) if error.status == StatusCode::CONFLICT => {
                let identifier = conflicting_identifier(&error.detail_text()).with_context(|| {
                    format!("the API responded 409 without an asset identifier: {}", error.detail_text())
                })?;
                self.put(&identifier, body).await?;
                tracing::info!(%identifier, "asset updated after a concurrent create");
                Ok(Registration { identifier, created: false })
            }
            Err(error) => Err(self.explain("register the computational asset", &error)),
        }
    }

    /// Finds the live asset of this platform with the given resource
    /// identifier. The per-identifier route only serves AIoD's built-in
    /// platform names, so the platform's list is paged instead.
    pub async fn find(&self, resource_identifier: &str) -> anyhow::Result<Option<String>> {
        let url = format!("{}/platforms/{}/computational_assets", self.api(), self.settings.platform);
        let mut offset = 0;
        loop {
            let request = self.http.get(&url).query(&[("offset", offset), ("limit", PAGE_LIMIT)]);
            let page: Vec<Value> = self.send(request, "list the platform's computational assets").await?;
            let count = page.len();
            for asset in page {
                if asset["platform_resource_identifier"].as_str() == Some(resource_identifier) {
                    return Ok(asset["identifier"].as_str().map(str::to_owned));
                }
            }
            if count < PAGE_LIMIT {
                return Ok(None);
            }
            offset += count;
        }
    }

    /// Registers a platform name; an existing platform of that name is fine.
    /// Needs the `create_platforms` role, which connectors usually lack.
    pub async fn create_platform(&self, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/platforms", self.api());
        let request =
            self.http.post(url).bearer_auth(self.token.expose_secret()).json(&serde_json::json!({"name": name}));
        match self.raw(request).await {
            Ok(_) => Ok(()),
            Err(RequestError::Api(error)) if error.status == StatusCode::CONFLICT => Ok(()),
            Err(error) => Err(self.explain(&format!("register platform `{name}`"), &error)),
        }
    }

    /// Reads one asset back.
    pub async fn get(&self, identifier: &str) -> anyhow::Result<Value> {
        let url = format!("{}/computational_assets/{identifier}", self.api());
        self.send(self.http.get(url).bearer_auth(self.token.expose_secret()), "read the computational asset").await
    }

    async fn post(&self, body: &Value) -> Result<String, RequestError> {
        let url = format!("{}/computational_assets", self.api());
        let response = self.raw(self.http.post(url).bearer_auth(self.token.expose_secret()).json(body)).await?;
        response["identifier"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RequestError::Transport("the POST response has no `identifier`".to_owned()))
    }

    async fn put(&self, identifier: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}/computational_assets/{identifier}", self.api());
        self.raw(self.http.put(url).bearer_auth(self.token.expose_secret()).json(body))
            .await
            .map(|_| ())
            .map_err(|error| self.explain(&format!("update computational asset {identifier}"), &error))
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        operation: &str,
    ) -> anyhow::Result<T> {
        let value = self.raw(request).await.map_err(|error| self.explain(operation, &error))?;
        serde_json::from_value(value).with_context(|| format!("failed to {operation}: unexpected response shape"))
    }

    /// Sends a request and returns the JSON response body, or the failure.
    async fn raw(&self, request: reqwest::RequestBuilder) -> Result<Value, RequestError> {
        let response =
            request.header(reqwest::header::ACCEPT, "application/json").send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(RequestError::Api(ApiError {
            status,
            reference: body["reference"].as_str().map(str::to_owned),
            detail: body["detail"].clone(),
        }))
    }

    fn api(&self) -> &str {
        self.settings.api_url.trim_end_matches('/')
    }

    /// Turns a failed request into a message that says what to do next.
    fn explain(&self, operation: &str, error: &RequestError) -> anyhow::Error {
        let error = match error {
            RequestError::Transport(message) => return anyhow::anyhow!("failed to {operation}: {message}"),
            RequestError::Api(error) => error,
        };
        let platform = &self.settings.platform;
        let advice = match error.status {
            StatusCode::UNAUTHORIZED => {
                "the API rejected the access token; check that --token-url belongs to the same AIoD deployment as --api-url".to_owned()
            }
            StatusCode::FORBIDDEN => {
                format!("client `{}` lacks a permission; a connector needs the realm role `platform_{platform}`", self.settings.client_id)
            }
            StatusCode::PRECONDITION_FAILED => format!(
                "platform `{platform}` is not registered on this AIoD API; ask an AIoD administrator to register it \
                 (POST /platforms with {{\"name\": \"{platform}\"}}, which needs the `create_platforms` role)"
            ),
            StatusCode::UNPROCESSABLE_ENTITY => "the API rejected the fields listed; this is a bug in hw-agent, please report it".to_owned(),
            StatusCode::NOT_FOUND => "the asset or route does not exist; check --api-url".to_owned(),
            status if status.is_server_error() => "the API failed; try again later and quote the reference to its operators".to_owned(),
            _ => "see the detail above".to_owned(),
        };
        let reference =
            error.reference.as_deref().map(|reference| format!(" (reference {reference})")).unwrap_or_default();
        anyhow::anyhow!(
            "failed to {operation}: HTTP {}: {}{reference}; {advice}",
            error.status.as_u16(),
            error.detail_text()
        )
    }
}

/// The failure of a request that got no successful response.
#[derive(Debug, Clone)]
pub enum RequestError {
    /// No HTTP response: connection, TLS or timeout failure.
    Transport(String),
    /// An HTTP error response.
    Api(ApiError),
}

fn transport_error(error: reqwest::Error) -> RequestError {
    let message = match tls::certificate_error(&error) {
        Some(reason) => format!(
            "TLS certificate verification failed ({reason}): the server's certificate does not chain to the trusted CA; \
             pass the CA that signed it with --ca-cert"
        ),
        None => error_chain(&error),
    };
    RequestError::Transport(message)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(cause) = current {
        parts.push(cause.to_string());
        current = cause.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Fetches an access token with the client-credentials grant.
async fn fetch_token(http: &reqwest::Client, settings: &AiodSettings) -> anyhow::Result<SecretString> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", settings.client_id.as_str()),
        ("client_secret", settings.client_secret.expose_secret()),
        ("scope", "openid profile roles"),
    ];
    let response = http.post(&settings.token_url).form(&form).send().await.map_err(|error| {
        let message = match transport_error(error) {
            RequestError::Transport(message) => message,
            RequestError::Api(error) => error.detail_text(),
        };
        anyhow::anyhow!("failed to obtain a token from {}: {message}", settings.token_url)
    })?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::bail!(
            "the token endpoint {} rejected client `{}`: {} ({}); check --client-id and the secret in --client-secret-file",
            settings.token_url,
            settings.client_id,
            body["error_description"].as_str().unwrap_or("no description"),
            body["error"].as_str().unwrap_or("no error code"),
        );
    }
    anyhow::ensure!(
        status.is_success(),
        "the token endpoint {} responded with HTTP {}",
        settings.token_url,
        status.as_u16()
    );
    let token: TokenResponse = response
        .json()
        .await
        .with_context(|| format!("the token endpoint {} responded without an access_token", settings.token_url))?;
    Ok(SecretString::from(token.access_token))
}

/// Reads `identifier=comp_…` out of a 409 detail.
fn conflicting_identifier(detail: &str) -> Option<String> {
    let start = detail.find("identifier=")? + "identifier=".len();
    let identifier: String = detail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!identifier.is_empty()).then_some(identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_detail_yields_identifier() {
        let detail = "There already exists a computational_asset with the same platform and platform_resource_identifier, \
                      with identifier=comp_Xk3f9QpL2mN8vR4tY7wB1cDe.";
        assert_eq!(conflicting_identifier(detail).as_deref(), Some("comp_Xk3f9QpL2mN8vR4tY7wB1cDe"));
        assert_eq!(conflicting_identifier("no id here"), None);
    }

    #[test]
    fn validation_detail_lists_fields() {
        let error = ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: serde_json::json!([{"loc": ["body", "name"], "msg": "field required", "type": "value_error.missing"}]),
            reference: None,
        };
        assert_eq!(error.detail_text(), "body.name: field required");
    }
}

//! The AIoD connector: OIDC client-credentials token, and register-or-update
//! of a computational asset identified by (`platform`,
//! `platform_resource_identifier`).

mod asset;
mod handoff;
mod http;
pub mod tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use tracing::Instrument as _;

use crate::metrics::{Metrics, RequestOutcome};

pub use asset::{DESCRIPTION_MAX_CHARS, asset_body, cluster_asset_body, machine_resource_identifier};
pub use handoff::{CREDENTIALS_SCHEMA, CredentialsPlaintext, HandOff, KeyPolicy, PlatformKey, key_id, seal};
pub use http::{ApiError, RequestError, RetryPolicy};

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
    pub retry: RetryPolicy,
}

/// The outcome of a register-or-update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub identifier: String,
    /// True when a new asset was created, false when one was replaced.
    pub created: bool,
}

/// A connected client: an HTTPS client and a token.
#[derive(Debug)]
pub struct AiodClient {
    http: reqwest::Client,
    settings: AiodSettings,
    /// Replaced when the API rejects it with 401, as it does once the token expires.
    token: Mutex<SecretString>,
    /// Counts every request attempt when the client serves `hw-agent run`.
    metrics: Option<Arc<Metrics>>,
}

impl AiodClient {
    /// Builds the HTTPS client and fetches a token.
    pub async fn connect(settings: AiodSettings) -> anyhow::Result<Self> {
        Self::connect_with_metrics(settings, None).await
    }

    /// As [`AiodClient::connect`], counting each request attempt, the token
    /// requests included, in `metrics`.
    pub async fn connect_with_metrics(settings: AiodSettings, metrics: Option<Arc<Metrics>>) -> anyhow::Result<Self> {
        let http = tls::http_client(settings.ca_cert.as_deref(), settings.request_timeout)?;
        let token = http::fetch_token(&http, &settings, metrics.as_deref()).await?;
        Ok(Self { http, settings, token: Mutex::new(token), metrics })
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
        self.register_inner(body, resource_identifier).instrument(span).await
    }

    async fn register_inner(&self, body: &Value, resource_identifier: &str) -> anyhow::Result<Registration> {
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
            let page_url = format!("{url}?offset={offset}&limit={PAGE_LIMIT}");
            let page: Vec<Value> = self.fetch(&page_url, false, "list the platform's computational assets").await?;
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
        match self.call(Method::POST, &url, Some(&serde_json::json!({"name": name})), true).await {
            Ok(_) => Ok(()),
            Err(RequestError::Api(error)) if error.status == StatusCode::CONFLICT => Ok(()),
            Err(error) => Err(self.explain(&format!("register platform `{name}`"), &error)),
        }
    }

    /// Reads one asset back.
    pub async fn get(&self, identifier: &str) -> anyhow::Result<Value> {
        let url = format!("{}/computational_assets/{identifier}", self.api());
        self.fetch(&url, true, "read the computational asset").await
    }

    async fn post(&self, body: &Value) -> Result<String, RequestError> {
        let url = format!("{}/computational_assets", self.api());
        let response = self.call(Method::POST, &url, Some(body), true).await?;
        response["identifier"].as_str().map(str::to_owned).ok_or_else(|| RequestError::Transport {
            message: "the POST response has no `identifier`".to_owned(),
            retryable: false,
        })
    }

    async fn put(&self, identifier: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}/computational_assets/{identifier}", self.api());
        self.call(Method::PUT, &url, Some(body), true)
            .await
            .map(|_| ())
            .map_err(|error| self.explain(&format!("update computational asset {identifier}"), &error))
    }

    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        authorized: bool,
        operation: &str,
    ) -> anyhow::Result<T> {
        let value =
            self.call(Method::GET, url, None, authorized).await.map_err(|error| self.explain(operation, &error))?;
        serde_json::from_value(value).with_context(|| format!("failed to {operation}: unexpected response shape"))
    }

    /// Sends a request and returns the JSON response body. Failures that may
    /// pass are retried with backoff, and a 401 on an authorized request
    /// fetches a new token once, because tokens expire.
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        authorized: bool,
    ) -> Result<Value, RequestError> {
        let mut retry = 0;
        let mut token_refreshed = false;
        loop {
            let result = self.send_once(method.clone(), url, body, authorized).await;
            match result {
                Err(RequestError::Api(error))
                    if error.status == StatusCode::UNAUTHORIZED && authorized && !token_refreshed =>
                {
                    token_refreshed = true;
                    tracing::info!(%url, "access token rejected; fetching a new one");
                    let token = http::fetch_token(&self.http, &self.settings, self.metrics.as_deref())
                        .await
                        .map_err(|error| RequestError::Transport { message: format!("{error:#}"), retryable: false })?;
                    if let Ok(mut current) = self.token.lock() {
                        *current = token;
                    }
                }
                Err(error) if error.is_retryable() && retry < self.settings.retry.max_retries => {
                    let delay = self.settings.retry.delay(retry);
                    retry += 1;
                    tracing::debug!(%method, %url, error = %error.message(), retry, delay_ms = delay.as_millis() as u64, "retrying request");
                    tokio::time::sleep(delay).await;
                }
                Err(error) if error.is_retryable() && retry > 0 => {
                    return Err(RequestError::Transport {
                        message: format!("gave up after {} attempts: {}", retry + 1, error.message()),
                        retryable: false,
                    });
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        authorized: bool,
    ) -> Result<Value, RequestError> {
        let method_name = method.as_str().to_owned();
        let mut request = self.http.request(method, url).header(reqwest::header::ACCEPT, "application/json");
        if authorized {
            let token = match self.token.lock() {
                Ok(token) => token.expose_secret().to_owned(),
                Err(_) => String::new(),
            };
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }

        let sent = request.send().await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &sent {
                Ok(response) => RequestOutcome::Status(response.status().as_u16()),
                Err(_) => RequestOutcome::Transport,
            };
            metrics.observe_aiod_request("api", &method_name, outcome);
        }
        let response = sent.map_err(http::transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http::transport_error)?;
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

    /// Turns a failed request into a message that gives the operator the next step.
    fn explain(&self, operation: &str, error: &RequestError) -> anyhow::Error {
        let error = match error {
            RequestError::Transport { message, .. } => return anyhow::anyhow!("failed to {operation}: {message}"),
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
}

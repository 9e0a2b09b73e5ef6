//! Request failures, the retry policy, and the OIDC token request.

use std::time::Duration;

use rand::Rng as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::AiodSettings;
use super::tls;
use crate::metrics::{Metrics, RequestOutcome};

/// How often and how patiently to retry a request that failed in a way that
/// may pass: no response (connect error, reset, timeout), or HTTP 429, 500,
/// 502, 503 or 504.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Delay before the first retry. Each retry doubles it.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 5, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

impl RetryPolicy {
    /// Returns the delay before retry number `retry` (0-based): exponential
    /// backoff with jitter between half and all of the step, so agents that
    /// failed together do not retry together.
    pub fn delay(&self, retry: u32) -> Duration {
        let step = self.base_delay.saturating_mul(2u32.saturating_pow(retry)).min(self.max_delay);
        let factor = rand::rng().random_range(0.5..=1.0);
        step.mul_f64(factor)
    }
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
    /// Renders `detail`: the message, or for validation errors each field
    /// path with its problem (`body.name: field required`).
    pub fn detail_text(&self) -> String {
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

/// The failure of a request that got no successful response.
#[derive(Debug, Clone)]
pub enum RequestError {
    /// No HTTP response: connection, TLS or timeout failure.
    Transport { message: String, retryable: bool },
    /// An HTTP error response.
    Api(ApiError),
}

impl RequestError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RequestError::Transport { retryable, .. } => *retryable,
            RequestError::Api(error) => matches!(
                error.status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
        }
    }

    pub fn message(&self) -> String {
        match self {
            RequestError::Transport { message, .. } => message.clone(),
            RequestError::Api(error) => format!("HTTP {}: {}", error.status.as_u16(), error.detail_text()),
        }
    }
}

/// Classifies a reqwest failure. A certificate problem will not pass on a
/// retry; a refused, reset or timed-out connection may.
pub fn transport_error(error: reqwest::Error) -> RequestError {
    if let Some(reason) = tls::certificate_error(&error) {
        return RequestError::Transport {
            message: format!(
                "TLS certificate verification failed ({reason}): the server's certificate does not chain to the \
                 trusted CA; pass the CA that signed it with --ca-cert"
            ),
            retryable: false,
        };
    }
    let retryable = error.is_connect() || error.is_timeout() || error.is_request() || error.is_body();
    RequestError::Transport { message: error_chain(&error), retryable }
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

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// Fetches an access token with the client-credentials grant, retrying
/// failures that may pass.
pub async fn fetch_token(
    http: &reqwest::Client,
    settings: &AiodSettings,
    metrics: Option<&Metrics>,
) -> anyhow::Result<SecretString> {
    let mut retry = 0;
    loop {
        match request_token(http, settings, metrics).await {
            Ok(token) => return Ok(token),
            Err(TokenFailure::Retryable(message)) if retry < settings.retry.max_retries => {
                let delay = settings.retry.delay(retry);
                retry += 1;
                tracing::debug!(token_url = %settings.token_url, error = %message, retry, delay_ms = delay.as_millis() as u64, "retrying the token request");
                tokio::time::sleep(delay).await;
            }
            Err(TokenFailure::Retryable(message)) => anyhow::bail!(
                "failed to obtain a token from {} after {} attempts: {message}",
                settings.token_url,
                retry + 1
            ),
            Err(TokenFailure::Final(error)) => return Err(error),
        }
    }
}

enum TokenFailure {
    Retryable(String),
    Final(anyhow::Error),
}

async fn request_token(
    http: &reqwest::Client,
    settings: &AiodSettings,
    metrics: Option<&Metrics>,
) -> Result<SecretString, TokenFailure> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", settings.client_id.as_str()),
        ("client_secret", settings.client_secret.expose_secret()),
        ("scope", "openid profile roles"),
    ];
    let sent = http.post(&settings.token_url).form(&form).send().await;
    if let Some(metrics) = metrics {
        let outcome = match &sent {
            Ok(response) => RequestOutcome::Status(response.status().as_u16()),
            Err(_) => RequestOutcome::Transport,
        };
        metrics.observe_aiod_request("token", "POST", outcome);
    }
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            let failure = transport_error(error);
            return Err(if failure.is_retryable() {
                TokenFailure::Retryable(failure.message())
            } else {
                TokenFailure::Final(anyhow::anyhow!(
                    "failed to obtain a token from {}: {}",
                    settings.token_url,
                    failure.message()
                ))
            });
        }
    };

    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(TokenFailure::Final(anyhow::anyhow!(
            "the token endpoint {} rejected client `{}`: {} ({}); check --client-id and the secret in --client-secret-file",
            settings.token_url,
            settings.client_id,
            body["error_description"].as_str().unwrap_or("no description"),
            body["error"].as_str().unwrap_or("no error code"),
        )));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenFailure::Retryable(format!("HTTP {}", status.as_u16())));
    }
    if !status.is_success() {
        return Err(TokenFailure::Final(anyhow::anyhow!(
            "the token endpoint {} responded with HTTP {}; check --token-url",
            settings.token_url,
            status.as_u16()
        )));
    }
    match response.json::<TokenResponse>().await {
        Ok(token) => Ok(SecretString::from(token.access_token)),
        Err(error) if error.is_decode() => Err(TokenFailure::Final(anyhow::anyhow!(
            "the token endpoint {} responded without an access_token; check --token-url",
            settings.token_url
        ))),
        Err(error) => Err(TokenFailure::Retryable(transport_error(error).message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_cap() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        for (retry, step_ms) in [(0, 100), (1, 200), (2, 400), (3, 500), (10, 500)] {
            let delay = policy.delay(retry).as_millis() as u64;
            assert!(delay >= step_ms / 2, "retry {retry}: {delay} ms below half of {step_ms} ms");
            assert!(delay <= step_ms, "retry {retry}: {delay} ms above {step_ms} ms");
        }
    }

    #[test]
    fn server_errors_are_retryable() {
        let api = |status| RequestError::Api(ApiError { status, detail: Value::Null, reference: None });
        assert!(api(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(api(StatusCode::INTERNAL_SERVER_ERROR).is_retryable());
        assert!(!api(StatusCode::CONFLICT).is_retryable());
        assert!(!api(StatusCode::UNPROCESSABLE_ENTITY).is_retryable());
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

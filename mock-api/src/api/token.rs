//! The OIDC client-credentials token endpoint.

use http::StatusCode;
use serde_json::json;

use super::{Reply, Request, State, detail, json_response};
use crate::auth::TokenError;

/// Issues a token for a client-credentials grant, with Keycloak's error bodies.
pub(super) fn issue(state: &State, request: &Request) -> Reply {
    let form: std::collections::HashMap<String, String> =
        serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
    let mut realm = match state.realm.lock() {
        Ok(realm) => realm,
        Err(_) => return detail(StatusCode::INTERNAL_SERVER_ERROR, "realm state poisoned"),
    };
    let issued = realm.issue(
        form.get("grant_type").map(String::as_str),
        form.get("client_id").map(String::as_str),
        form.get("client_secret").map(String::as_str),
    );
    match issued {
        Ok(token) => json_response(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "expires_in": realm.token_lifetime().as_secs(),
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": form.get("scope").cloned().unwrap_or_else(|| "openid profile roles".to_owned()),
            }),
        ),
        Err(TokenError::UnsupportedGrantType) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}),
        ),
        Err(TokenError::InvalidRequest(reason)) => {
            json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_request", "error_description": reason}))
        }
        Err(TokenError::InvalidClient) => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"}),
        ),
    }
}

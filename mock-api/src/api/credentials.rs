//! `/extensions/hw-agent/...`: the credentials hand-off, an extension that
//! is not part of AIoD's API (see `docs/credentials-handoff.md`). The agent
//! fetches the platform's public key, seals a cluster's credentials to it,
//! and PUTs the ciphertext. The mock opens each hand-off on receipt to
//! validate it, discards the plaintext, and stores only the ciphertext.
//!
//! Errors shared with the asset routes (401, 403, the asset's 404 and the
//! identifier's 422) keep their `{"detail", "reference"}` bodies. The
//! extension's own errors (400, 409 and the missing hand-off's 404) carry
//! only `detail`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Map, Value, json};
use warp::http::Response;

use super::assets::{check_identifier, editable_asset};
use super::{ApiError, Reply, Request, State, detail, json_response, parse_body, storage_failure, validation_error};
use crate::auth::Caller;
use crate::credentials::{ENCAPSULATED_KEY_LEN, HandOff};
use crate::validate::FieldError;

/// The body of a hand-off, decoded.
struct SealedCredentials {
    key_id: String,
    encapsulated_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Returns the public key document. The route needs no token.
pub(super) fn key(state: &State) -> Reply {
    json_response(StatusCode::OK, &state.credentials_key.key_document())
}

/// Stores a hand-off after checking the body, the asset, the caller's right
/// to edit it, the key id and that the ciphertext opens, in that order.
pub(super) fn put(state: &State, request: &Request, caller: &Caller, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let sealed = match parse_sealed(request) {
        Ok(sealed) => sealed,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    if let Err(error) = editable_asset(&catalogue, caller, identifier) {
        return error.into();
    }

    let current_key_id = state.credentials_key.key_id();
    if sealed.key_id != current_key_id {
        tracing::info!(
            identifier = %identifier,
            client = %caller.client_id,
            key_id = %sealed.key_id,
            current_key_id = %current_key_id,
            "rejected a credentials hand-off sealed to a stale key"
        );
        return plain_detail(
            StatusCode::CONFLICT,
            &format!(
                "Key id {} does not match the platform's current credentials key {current_key_id}. \
                 Fetch /extensions/hw-agent/credentials-key and seal again.",
                sealed.key_id
            ),
        );
    }
    // The plaintext is dropped at once: opening only proves that the
    // platform will be able to read the hand-off.
    if let Err(error) = state.credentials_key.open(&sealed.encapsulated_key, &sealed.ciphertext, identifier) {
        tracing::info!(
            identifier = %identifier,
            client = %caller.client_id,
            error = %format!("{error:#}"),
            "rejected a credentials hand-off"
        );
        return plain_detail(
            StatusCode::BAD_REQUEST,
            "The ciphertext does not open with the platform's key for this asset.",
        );
    }

    let hand_off = HandOff {
        asset_identifier: identifier.to_owned(),
        key_id: sealed.key_id,
        encapsulated_key: sealed.encapsulated_key,
        ciphertext: sealed.ciphertext,
        received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let ciphertext_bytes = hand_off.ciphertext.len();
    if let Err(error) = catalogue.write_hand_off(hand_off) {
        return storage_failure(&error);
    }
    tracing::info!(
        identifier = %identifier,
        client = %caller.client_id,
        key_id = %current_key_id,
        ciphertext_bytes,
        "credentials handed off"
    );
    Response::builder().status(StatusCode::NO_CONTENT).body(Vec::new()).unwrap_or_default()
}

/// Returns the stored hand-off's metadata, never its contents.
pub(super) fn get(state: &State, caller: &Caller, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    if let Err(error) = editable_asset(&catalogue, caller, identifier) {
        return error.into();
    }
    let Some(hand_off) = catalogue.hand_offs.get(identifier) else {
        return plain_detail(
            StatusCode::NOT_FOUND,
            &format!("No credentials were handed off for computational_asset '{identifier}'."),
        );
    };
    json_response(
        StatusCode::OK,
        &json!({
            "key_id": hand_off.key_id,
            "received_at": hand_off.received_at,
            "ciphertext_bytes": hand_off.ciphertext.len(),
        }),
    )
}

fn plain_detail(status: StatusCode, message: &str) -> Reply {
    json_response(status, &json!({"detail": message}))
}

/// Parses the PUT body, collecting pydantic-style errors for every field.
/// Unknown keys are ignored, as pydantic v1 does by default.
fn parse_sealed(request: &Request) -> Result<SealedCredentials, ApiError> {
    let body = parse_body(request)?;
    let Some(object) = body.as_object() else {
        return Err(validation_error(vec![FieldError {
            loc: vec![json!("body")],
            msg: "value is not a valid dict".to_owned(),
            kind: "type_error.dict",
            ctx: None,
        }]));
    };

    let mut errors = Vec::new();
    let key_id = string_field(object, "key_id", &mut errors);
    let encapsulated_key = base64url_field(object, "encapsulated_key", &mut errors);
    let ciphertext = base64url_field(object, "ciphertext", &mut errors);
    if let Some(encapsulated_key) = &encapsulated_key
        && encapsulated_key.len() != ENCAPSULATED_KEY_LEN
    {
        errors.push(value_error(
            "encapsulated_key",
            format!(
                "the encapsulated key must be {ENCAPSULATED_KEY_LEN} bytes for DHKEM(X25519, HKDF-SHA256), got {}",
                encapsulated_key.len()
            ),
        ));
    }

    match (key_id, encapsulated_key, ciphertext) {
        (Some(key_id), Some(encapsulated_key), Some(ciphertext)) if errors.is_empty() => {
            Ok(SealedCredentials { key_id, encapsulated_key, ciphertext })
        }
        _ => Err(validation_error(errors)),
    }
}

fn string_field(object: &Map<String, Value>, name: &'static str, errors: &mut Vec<FieldError>) -> Option<String> {
    let (msg, kind) = match object.get(name) {
        Some(Value::String(text)) => return Some(text.clone()),
        None => ("field required", "value_error.missing"),
        Some(Value::Null) => ("none is not an allowed value", "type_error.none.not_allowed"),
        Some(_) => ("str type expected", "type_error.str"),
    };
    errors.push(FieldError { loc: vec![json!("body"), json!(name)], msg: msg.to_owned(), kind, ctx: None });
    None
}

fn base64url_field(object: &Map<String, Value>, name: &'static str, errors: &mut Vec<FieldError>) -> Option<Vec<u8>> {
    let text = string_field(object, name, errors)?;
    match URL_SAFE_NO_PAD.decode(text.as_bytes()) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            errors.push(value_error(name, format!("invalid base64url ({error}); expected base64url without padding")));
            None
        }
    }
}

/// Builds the error that a pydantic v1 validator reports for a `ValueError`.
fn value_error(name: &'static str, msg: String) -> FieldError {
    FieldError { loc: vec![json!("body"), json!(name)], msg, kind: "value_error", ctx: None }
}

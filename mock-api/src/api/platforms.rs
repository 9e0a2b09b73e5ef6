//! `/platforms`: the platform names connectors may register assets for.
//! Platforms are addressed by their integer identifier, which the server
//! returns as a number from POST and as a string everywhere else.
//!
//! NOTE: the 403 texts of PUT and DELETE follow the pattern of the observed
//! POST text ("You do not have permission to create platforms."); they were
//! not observed on the real server.

use http::StatusCode;
use serde_json::{Value, json};

use super::{
    ApiError, Reply, Request, State, detail, json_response, pagination, parse_body, storage_failure, validation_error,
};
use crate::auth::Caller;
use crate::store::{Catalogue, Platform};
use crate::validate::FieldError;

/// Maximum length of a platform name, as the `platform` column allows.
const NAME_MAX: usize = 64;

fn read(platform: &Platform) -> Value {
    json!({"name": platform.name, "identifier": platform.identifier.to_string()})
}

/// Reads `{"name": ...}` with the server's validation errors.
fn parse_name(request: &Request) -> Result<String, ApiError> {
    let body = parse_body(request)?;
    let error = |msg: &str, kind: &'static str, ctx: Option<Value>| FieldError {
        loc: vec![json!("body"), json!("name")],
        msg: msg.to_owned(),
        kind,
        ctx,
    };
    match body.get("name") {
        Some(Value::String(name)) if name.chars().count() > NAME_MAX => Err(validation_error(vec![error(
            &format!("ensure this value has at most {NAME_MAX} characters"),
            "value_error.any_str.max_length",
            Some(json!({"limit_value": NAME_MAX})),
        )])),
        Some(Value::String(name)) => Ok(name.clone()),
        Some(Value::Null) => {
            Err(validation_error(vec![error("none is not an allowed value", "type_error.none.not_allowed", None)]))
        }
        Some(_) => Err(validation_error(vec![error("str type expected", "type_error.str", None)])),
        None => Err(validation_error(vec![error("field required", "value_error.missing", None)])),
    }
}

fn find<'a>(catalogue: &'a Catalogue, identifier: &str) -> Option<&'a Platform> {
    let number: u64 = identifier.parse().ok()?;
    catalogue.platforms.iter().find(|platform| platform.identifier == number)
}

fn not_found(identifier: &str) -> Reply {
    detail(StatusCode::NOT_FOUND, &format!("Platform '{identifier}' not found in the database."))
}

pub(super) fn list(state: &State, request: &Request) -> Reply {
    let (offset, limit) = match pagination(request) {
        Ok(page) => page,
        Err(error) => return error.into(),
    };
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let page: Vec<Value> = catalogue.platforms.iter().skip(offset).take(limit).map(read).collect();
    json_response(StatusCode::OK, &Value::Array(page))
}

pub(super) fn count(state: &State) -> Reply {
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    json_response(StatusCode::OK, &json!(catalogue.platforms.len()))
}

pub(super) fn get(state: &State, identifier: &str) -> Reply {
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    match find(&catalogue, identifier) {
        Some(platform) => json_response(StatusCode::OK, &read(platform)),
        None => not_found(identifier),
    }
}

pub(super) fn post(state: &State, request: &Request, caller: &Caller) -> Reply {
    if !caller.has_role("create_platforms") {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to create platforms.");
    }
    let name = match parse_name(request) {
        Ok(name) => name,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    if catalogue.platform_exists(&name) {
        return detail(StatusCode::CONFLICT, "There already exists a platform with the same name.");
    }
    let identifier = match catalogue.add_platform(&name) {
        Ok(identifier) => identifier,
        Err(error) => return storage_failure(&error),
    };
    tracing::info!(platform = %name, identifier, client = %caller.client_id, "platform created");
    json_response(StatusCode::OK, &json!({"identifier": identifier}))
}

pub(super) fn put(state: &State, request: &Request, caller: &Caller, identifier: &str) -> Reply {
    if !caller.has_role("update_platforms") {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to edit platforms.");
    }
    let name = match parse_name(request) {
        Ok(name) => name,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let Some(number) = find(&catalogue, identifier).map(|platform| platform.identifier) else {
        return not_found(identifier);
    };
    if catalogue.platforms.iter().any(|platform| platform.name == name && platform.identifier != number) {
        return detail(StatusCode::CONFLICT, "There already exists a platform with the same name.");
    }
    if let Err(error) = catalogue.write_platform(Platform { identifier: number, name }) {
        return storage_failure(&error);
    }
    json_response(StatusCode::OK, &Value::Null)
}

pub(super) fn delete(state: &State, caller: &Caller, identifier: &str) -> Reply {
    if !caller.has_role("delete_platforms") {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to delete platforms.");
    }
    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let Some(number) = find(&catalogue, identifier).map(|platform| platform.identifier) else {
        return not_found(identifier);
    };
    if let Err(error) = catalogue.remove_platform(number) {
        return storage_failure(&error);
    }
    json_response(StatusCode::OK, &Value::Null)
}

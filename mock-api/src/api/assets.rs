//! `/computational_assets` and the routes that read assets by platform or
//! count them.

use http::StatusCode;
use serde_json::{Value, json};

use super::{
    ApiError, Reply, Request, State, detail, detail_error, json_response, now, optional_caller, pagination, parse_body,
    storage_failure, validation_error, validation_errors,
};
use crate::auth::Caller;
use crate::store::{Asset, BUILT_IN_PLATFORMS, Catalogue, Status};
use crate::validate::{FieldError, validate_create};

/// Checks an identifier's prefix before any lookup, as the real server does.
pub(super) fn check_identifier(identifier: &str) -> Result<(), ApiError> {
    if identifier.starts_with("comp") {
        return Ok(());
    }
    Err(detail_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!(
            "'{identifier}' is not a valid computational_asset identifier, valid computational_asset identifiers start with 'comp'."
        ),
    ))
}

/// Looks up an asset that exists and is not deleted, with the real server's
/// two 404 messages.
pub(super) fn live_asset<'a>(catalogue: &'a Catalogue, identifier: &str) -> Result<&'a Asset, ApiError> {
    let Some(asset) = catalogue.get(identifier) else {
        return Err(detail_error(
            StatusCode::NOT_FOUND,
            &format!("Computational_asset '{identifier}' not found in the database."),
        ));
    };
    if asset.deleted.is_some() {
        return Err(detail_error(
            StatusCode::NOT_FOUND,
            &format!("Computational_asset '{identifier}' not found in the database, because it was deleted."),
        ));
    }
    Ok(asset)
}

pub(super) fn get(state: &State, request: &Request, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let caller = optional_caller(state, request);
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let asset = match live_asset(&catalogue, identifier) {
        Ok(asset) => asset,
        Err(error) => return error.into(),
    };
    if let Err(error) = check_visible(asset, caller.as_ref()) {
        return error.into();
    }
    json_response(StatusCode::OK, &asset.to_read())
}

/// Lists published, live assets, optionally of one platform, with the
/// server's paging, sorting and modification-date filters.
pub(super) fn list(state: &State, request: &Request, platform: Option<&str>) -> Reply {
    let (offset, limit) = match pagination(request) {
        Ok(page) => page,
        Err(error) => return error.into(),
    };
    let query = request.query_map();
    let mut errors = Vec::new();
    let after = date_filter(&query, "date_modified_after", &mut errors);
    let before = date_filter(&query, "date_modified_before", &mut errors);
    for (name, allowed) in [("sort", ["date_modified", "date_created"]), ("direction", ["desc", "asc"])] {
        if let Some(value) = query.get(name)
            && !allowed.contains(&value.as_str())
        {
            errors.push(FieldError {
                loc: vec![json!("query"), json!(name)],
                msg: format!("value is not a valid enumeration member; permitted: '{}', '{}'", allowed[0], allowed[1]),
                kind: "type_error.enum",
                ctx: Some(json!({"enum_values": allowed})),
            });
        }
    }
    if !errors.is_empty() {
        return validation_errors(&errors);
    }

    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let mut visible: Vec<&Asset> = catalogue
        .assets
        .iter()
        .filter(|asset| asset.deleted.is_none() && asset.status == Status::Published)
        .filter(|asset| platform.is_none_or(|name| asset.platform() == Some(name)))
        .filter(|asset| after.is_none_or(|date| asset.modified.date() >= date))
        .filter(|asset| before.is_none_or(|date| asset.modified.date() < date))
        .collect();
    let by_created = query.get("sort").map(String::as_str) == Some("date_created");
    let ascending = query.get("direction").map(String::as_str) == Some("asc");
    visible.sort_by(|a, b| {
        let (left, right) = if by_created { (a.created, b.created) } else { (a.modified, b.modified) };
        // The sort is stable, so ties keep insertion order, as the server's
        // ascending entry id does.
        if ascending { left.cmp(&right) } else { right.cmp(&left) }
    });
    let page: Vec<Value> = visible.into_iter().skip(offset).take(limit).map(Asset::to_read).collect();
    json_response(StatusCode::OK, &Value::Array(page))
}

fn date_filter(
    query: &std::collections::HashMap<String, String>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<chrono::NaiveDate> {
    let text = query.get(name)?;
    match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(date) => Some(date),
        Err(_) => {
            errors.push(FieldError {
                loc: vec![json!("query"), json!(name)],
                msg: "invalid date format".to_owned(),
                kind: "value_error.date",
                ctx: None,
            });
            None
        }
    }
}

/// Counts published, live assets, per platform when `detailed=true`.
pub(super) fn count(state: &State, request: &Request) -> Reply {
    let detailed = request.query_map().get("detailed").map(String::as_str) == Some("true");
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let per_platform = published_per_platform(&catalogue);
    if detailed {
        json_response(StatusCode::OK, &json!(per_platform))
    } else {
        json_response(StatusCode::OK, &json!(per_platform.values().sum::<u64>()))
    }
}

/// `/counts`: published, live assets per platform, under the type name.
pub(super) fn counts(state: &State) -> Reply {
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    json_response(StatusCode::OK, &json!({"computational_assets": published_per_platform(&catalogue)}))
}

fn published_per_platform(catalogue: &Catalogue) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for asset in catalogue.assets.iter().filter(|asset| asset.deleted.is_none() && asset.status == Status::Published) {
        *counts.entry(asset.platform().unwrap_or("aiod").to_owned()).or_insert(0) += 1;
    }
    counts
}

pub(super) fn types(state: &State) -> Reply {
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    json_response(StatusCode::OK, &json!(catalogue.types))
}

/// Looks an asset up by (platform, resource identifier). The real server
/// serves this route only for its built-in platform names.
pub(super) fn get_by_platform(state: &State, request: &Request, platform: &str, resource_identifier: &str) -> Reply {
    if !BUILT_IN_PLATFORMS.contains(&platform) {
        return detail(StatusCode::BAD_REQUEST, &format!("platform '{platform}' not recognized."));
    }
    let caller = optional_caller(state, request);
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let Some(asset) = catalogue.find_by_platform(platform, resource_identifier) else {
        return detail(
            StatusCode::NOT_FOUND,
            &format!("Computational_asset '{resource_identifier}' of '{platform}' not found in the database."),
        );
    };
    if let Err(error) = check_visible(asset, caller.as_ref()) {
        return error.into();
    }
    json_response(StatusCode::OK, &asset.to_read())
}

/// Applies draft visibility: anonymous callers get 401, other users 403.
fn check_visible(asset: &Asset, caller: Option<&Caller>) -> Result<(), ApiError> {
    if asset.status == Status::Published {
        return Ok(());
    }
    match caller {
        None => Err(detail_error(
            StatusCode::UNAUTHORIZED,
            "This asset is not published. It requires authentication to access.",
        )),
        Some(caller) if !may_edit(caller, asset) => {
            Err(detail_error(StatusCode::FORBIDDEN, "You are not allowed to view this resource."))
        }
        Some(_) => Ok(()),
    }
}

/// Soft-deletes an asset: later reads get the "because it was deleted" 404,
/// and its (platform, resource identifier) pair is free again.
pub(super) fn delete(state: &State, caller: &Caller, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let asset = match live_asset(&catalogue, identifier) {
        Ok(asset) => asset,
        Err(error) => return error.into(),
    };
    let allowed = asset.owner == caller.client_id
        || caller.has_role("delete_computational_assets")
        || asset.platform().is_some_and(|platform| caller.is_connector_for(platform));
    if !allowed {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to delete computational_assets.");
    }
    let mut deleted = asset.clone();
    deleted.deleted = Some(now());
    if let Err(error) = catalogue.write_asset(deleted) {
        return storage_failure(&error);
    }
    tracing::info!(identifier = %identifier, client = %caller.client_id, "asset deleted");
    json_response(StatusCode::OK, &Value::Null)
}

/// Returns whether the caller may write the asset: its creator, holders of
/// the update role, and connectors of the asset's platform may.
/// Finds a live asset the caller may edit, or the error that explains why not:
/// the 404 of a missing or deleted asset, or the 403 of the asset routes.
pub(super) fn editable_asset<'a>(
    catalogue: &'a Catalogue,
    caller: &Caller,
    identifier: &str,
) -> Result<&'a Asset, ApiError> {
    let asset = live_asset(catalogue, identifier)?;
    if !may_edit(caller, asset) {
        return Err(detail_error(StatusCode::FORBIDDEN, "You do not have permission to edit computational_assets."));
    }
    Ok(asset)
}

pub(super) fn may_edit(caller: &Caller, asset: &Asset) -> bool {
    asset.owner == caller.client_id
        || caller.has_role("update_computational_assets")
        || asset.platform().is_some_and(|platform| caller.is_connector_for(platform))
}

/// Applies the platform rules of a create. Users may not set platform
/// fields. Connectors must set both, for an existing platform whose role
/// they hold. Returns whether the caller creates as a connector.
fn check_platform_fields(
    catalogue: &Catalogue,
    caller: &Caller,
    fields: &serde_json::Map<String, Value>,
) -> Result<bool, ApiError> {
    let platform = fields.get("platform").and_then(Value::as_str);
    let resource_identifier = fields.get("platform_resource_identifier").and_then(Value::as_str);
    let is_connector = caller.connector_platforms().next().is_some();

    match (platform, resource_identifier) {
        (None, None) => Ok(false),
        _ if !is_connector => {
            Err(detail_error(StatusCode::FORBIDDEN, "No permission to set platform or platform resource identifier."))
        }
        (None, Some(_)) => Err(detail_error(
            StatusCode::BAD_REQUEST,
            "If platform is NULL, platform_resource_identifier should also be NULL, and vice versa.",
        )),
        (Some(platform), _) if !caller.is_connector_for(platform) => Err(detail_error(
            StatusCode::FORBIDDEN,
            &format!("No permission to upload assets for {platform} platform."),
        )),
        (Some(_), None) => Err(detail_error(StatusCode::FORBIDDEN, "Platform resource identifier may not be none.")),
        (Some(platform), Some(_)) if !catalogue.platform_exists(platform) => Err(detail_error(
            StatusCode::PRECONDITION_FAILED,
            &format!("Platform {platform} does not exist. You can register it using the POST platforms endpoint."),
        )),
        (Some(_), Some(_)) => Ok(true),
    }
}

fn conflict(identifier: &str) -> Reply {
    detail(
        StatusCode::CONFLICT,
        &format!(
            "There already exists a computational_asset with the same platform and platform_resource_identifier, with identifier={identifier}."
        ),
    )
}

/// Parses and validates a `ComputationalAssetCreate` body.
fn parse_create(request: &Request) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = parse_body(request)?;
    validate_create(&body).map_err(validation_error)
}

pub(super) fn post(state: &State, request: &Request, caller: &Caller) -> Reply {
    let mut fields = match parse_create(request) {
        Ok(fields) => fields,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let as_connector = match check_platform_fields(&catalogue, caller, &fields) {
        Ok(as_connector) => as_connector,
        Err(error) => return error.into(),
    };
    let identifier = catalogue.new_identifier();
    if as_connector {
        let platform = fields.get("platform").and_then(Value::as_str).unwrap_or_default();
        let resource_identifier =
            fields.get("platform_resource_identifier").and_then(Value::as_str).unwrap_or_default();
        if let Some(existing) = catalogue.find_by_platform(platform, resource_identifier) {
            return conflict(&existing.identifier);
        }
    } else {
        fields.insert("platform".to_owned(), Value::from("aiod"));
        fields.insert("platform_resource_identifier".to_owned(), Value::from(identifier.clone()));
    }

    let status = if as_connector || state.auto_publish { Status::Published } else { Status::Draft };
    let time = now();
    let asset = Asset {
        identifier: identifier.clone(),
        fields,
        owner: caller.client_id.clone(),
        status,
        created: time,
        modified: time,
        deleted: None,
    };
    if let Err(error) = catalogue.write_asset(asset) {
        return storage_failure(&error);
    }
    tracing::info!(identifier = %identifier, client = %caller.client_id, status = status.as_str(), "asset created");
    json_response(StatusCode::OK, &json!({"identifier": identifier}))
}

pub(super) fn put(state: &State, request: &Request, caller: &Caller, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let mut fields = match parse_create(request) {
        Ok(fields) => fields,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let asset = match editable_asset(&catalogue, caller, identifier) {
        Ok(asset) => asset,
        Err(error) => return error.into(),
    };
    if asset.status == Status::Submitted {
        return detail(StatusCode::FORBIDDEN, "You cannot edit an asset under submission.");
    }
    // An omitted description keeps its old value (observed upstream); every
    // other omitted field, platform fields included, is cleared.
    if !fields.contains_key("description")
        && let Some(old) = asset.fields.get("description")
    {
        fields.insert("description".to_owned(), old.clone());
    }
    if let (Some(platform), Some(resource_identifier)) = (
        fields.get("platform").and_then(Value::as_str),
        fields.get("platform_resource_identifier").and_then(Value::as_str),
    ) && let Some(other) = catalogue.find_by_platform(platform, resource_identifier)
        && other.identifier != identifier
    {
        return conflict(&other.identifier);
    }

    let Some(mut replaced) = catalogue.get(identifier).cloned() else {
        return detail(
            StatusCode::NOT_FOUND,
            &format!("Computational_asset '{identifier}' not found in the database."),
        );
    };
    replaced.fields = fields;
    replaced.modified = now();
    if let Err(error) = catalogue.write_asset(replaced) {
        return storage_failure(&error);
    }
    tracing::info!(identifier = %identifier, client = %caller.client_id, "asset replaced");
    json_response(StatusCode::OK, &Value::Null)
}

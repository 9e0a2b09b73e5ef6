//! Request routing and handlers. warp extracts the request parts, and the
//! routing itself is a plain match on path segments. The real server serves
//! the same routes under three prefixes and distinguishes 404, 405 and the
//! 307 trailing-slash redirect, which reads more plainly as a match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::Response;

use crate::auth::{Caller, Realm, TokenError};
use crate::store::{Asset, Catalogue, Platform, Status};
use crate::validate::{FieldError, validate_create};

/// Largest request body accepted, in bytes. A description is at most two
/// 65,535-character strings, so 1 MiB leaves ample room.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

const TOKEN_PATH: &[&str] = &["realms", "aiod", "protocol", "openid-connect", "token"];

/// Shared state behind every request.
#[derive(Debug)]
pub struct State {
    pub realm: Mutex<Realm>,
    pub catalogue: Mutex<Catalogue>,
    /// Publish user drafts at once instead of waiting for a review.
    pub auto_publish: bool,
}

type Reply = Response<Vec<u8>>;

/// Builds the whole API as one warp filter.
pub fn routes(state: Arc<State>) -> impl Filter<Extract = (Reply,), Error = std::convert::Infallible> + Clone {
    let state = warp::any().map(move || Arc::clone(&state));
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(limited_body())
        .and(state)
        .map(|method: Method, path: warp::path::FullPath, query: String, headers: HeaderMap, body: Bytes, state: Arc<State>| {
            let request = Request { method, path: path.as_str().to_owned(), query, headers, body };
            let response = handle(&state, &request);
            tracing::debug!(method = %request.method, path = %request.path, status = response.status().as_u16(), "request");
            response
        })
        .recover(|rejection: warp::Rejection| async move {
            let response = if rejection.find::<BodyTooLarge>().is_some() {
                detail(StatusCode::PAYLOAD_TOO_LARGE, &format!("Request body larger than {MAX_BODY_BYTES} bytes."))
            } else {
                detail(StatusCode::BAD_REQUEST, "Malformed request.")
            };
            Ok::<_, std::convert::Infallible>(response)
        })
        .unify()
}

/// Marks a request whose body exceeds [`MAX_BODY_BYTES`].
#[derive(Debug)]
struct BodyTooLarge;

impl warp::reject::Reject for BodyTooLarge {}

/// Reads the body, rejecting it once it passes the limit. Unlike warp's
/// `content_length_limit`, this accepts requests without `Content-Length`
/// (every GET) and still bounds chunked bodies.
fn limited_body() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::body::stream().and_then(read_limited)
}

async fn read_limited<S, B>(stream: S) -> Result<Bytes, warp::Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt as _;

    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject::reject())?;
        if body.len() as u64 + chunk.remaining() as u64 > MAX_BODY_BYTES {
            return Err(warp::reject::custom(BodyTooLarge));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            body.extend_from_slice(piece);
            let consumed = piece.len();
            chunk.advance(consumed);
        }
    }
    Ok(Bytes::from(body))
}

struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn bearer(&self) -> Option<&str> {
        let value = self.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
    }

    fn query_map(&self) -> HashMap<String, String> {
        serde_urlencoded::from_str(&self.query).unwrap_or_default()
    }
}

fn handle(state: &State, request: &Request) -> Reply {
    if request.path.len() > 1 && request.path.ends_with('/') {
        // Starlette redirects to the slash-less route.
        let target = request.path.trim_end_matches('/');
        let location = if request.query.is_empty() { target.to_owned() } else { format!("{target}?{}", request.query) };
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(http::header::LOCATION, location)
            .body(Vec::new())
            .unwrap_or_default();
    }

    let segments: Vec<&str> =
        request.path.trim_start_matches('/').split('/').filter(|segment| !segment.is_empty()).collect();
    if segments == TOKEN_PATH {
        return only(request, &[Method::POST], || token(state, request));
    }
    // Every catalogue route exists unprefixed, under /v2 and under /v3.
    let segments = match segments.first() {
        Some(&"v2") | Some(&"v3") => &segments[1..],
        _ => &segments[..],
    };

    match segments {
        ["computational_assets"] => match request.method {
            Method::GET => list_assets(state, request, None),
            Method::POST => with_caller(state, request, |caller| post_asset(state, request, caller)),
            _ => method_not_allowed(),
        },
        ["computational_assets", identifier] => match request.method {
            Method::GET => get_asset(state, request, identifier),
            Method::PUT => with_caller(state, request, |caller| put_asset(state, request, caller, identifier)),
            _ => method_not_allowed(),
        },
        ["platforms"] => match request.method {
            Method::POST => with_caller(state, request, |caller| post_platform(state, request, caller)),
            _ => method_not_allowed(),
        },
        ["platforms", platform, "computational_assets"] => {
            only(request, &[Method::GET], || list_assets(state, request, Some(platform)))
        }
        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn only(request: &Request, methods: &[Method], handler: impl FnOnce() -> Reply) -> Reply {
    if methods.contains(&request.method) { handler() } else { method_not_allowed() }
}

fn method_not_allowed() -> Reply {
    json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"detail": "Method Not Allowed"}))
}

fn json_response(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .unwrap_or_default()
}

/// An error response before rendering. It is small, so helpers can return it in a `Result`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        json_response(error.status, &error.body)
    }
}

/// Builds an `HTTPException` response: `{"detail", "reference"}`, as the real
/// server's custom handler renders it.
fn detail_error(status: StatusCode, message: &str) -> ApiError {
    let reference = uuid::Uuid::new_v4().simple().to_string();
    ApiError { status, body: json!({"detail": message, "reference": reference}) }
}

fn detail(status: StatusCode, message: &str) -> Reply {
    detail_error(status, message).into()
}

fn validation_errors(errors: &[FieldError]) -> Reply {
    let list: Vec<Value> = errors.iter().map(FieldError::to_json).collect();
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({"detail": list}))
}

fn with_caller(state: &State, request: &Request, handler: impl FnOnce(&Caller) -> Reply) -> Reply {
    let Some(token) = request.bearer() else {
        return detail(
            StatusCode::UNAUTHORIZED,
            "No token found - This endpoint requires authorization. You need to be logged in.",
        );
    };
    let caller = state.realm.lock().map(|realm| realm.introspect(token)).unwrap_or(None);
    match caller {
        Some(caller) => handler(&caller),
        None => detail(StatusCode::UNAUTHORIZED, "Invalid authentication token"),
    }
}

fn optional_caller(state: &State, request: &Request) -> Option<Caller> {
    let token = request.bearer()?;
    state.realm.lock().ok()?.introspect(token)
}

fn parse_body(request: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&request.body).map_err(|error| {
        // FastAPI reports the character offset of the JSON error.
        let offset = byte_offset(&request.body, error.line(), error.column());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"detail": [{
                "type": "json_invalid",
                "loc": ["body", offset],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting value"},
            }]}),
        }
    })
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let before: usize = text.lines().take(line.saturating_sub(1)).map(|line| line.chars().count() + 1).sum();
    before + column.saturating_sub(1)
}

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

fn token(state: &State, request: &Request) -> Reply {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
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

/// Checks an identifier's prefix before any lookup, as the real server does.
fn check_identifier(identifier: &str) -> Result<(), ApiError> {
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
fn live_asset<'a>(catalogue: &'a Catalogue, identifier: &str) -> Result<&'a Asset, ApiError> {
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

fn get_asset(state: &State, request: &Request, identifier: &str) -> Reply {
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
    if asset.status != Status::Published {
        match &caller {
            None => {
                return detail(
                    StatusCode::UNAUTHORIZED,
                    "This asset is not published. It requires authentication to access.",
                );
            }
            Some(caller) if !may_edit(caller, asset) => {
                return detail(StatusCode::FORBIDDEN, "You are not allowed to view this resource.");
            }
            Some(_) => {}
        }
    }
    json_response(StatusCode::OK, &asset.to_read())
}

fn list_assets(state: &State, request: &Request, platform: Option<&str>) -> Reply {
    let query = request.query_map();
    let mut errors = Vec::new();
    let offset = query_int(&query, "offset", 0, &mut errors);
    let limit = query_int(&query, "limit", 10, &mut errors);
    if offset < 0 {
        errors.push(query_error(
            "offset",
            "ensure this value is greater than or equal to 0",
            "value_error.number.not_ge",
            0,
        ));
    }
    if limit > 1000 {
        errors.push(query_error(
            "limit",
            "ensure this value is less than or equal to 1000",
            "value_error.number.not_le",
            1000,
        ));
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
        .collect();
    let by_created = query.get("sort").map(String::as_str) == Some("date_created");
    let ascending = query.get("direction").map(String::as_str) == Some("asc");
    visible.sort_by(|a, b| {
        let (left, right) = if by_created { (a.created, b.created) } else { (a.modified, b.modified) };
        // The sort is stable, so ties keep insertion order, as the server's
        // ascending entry id does.
        if ascending { left.cmp(&right) } else { right.cmp(&left) }
    });
    let page: Vec<Value> =
        visible.into_iter().skip(offset.max(0) as usize).take(limit.max(0) as usize).map(Asset::to_read).collect();
    json_response(StatusCode::OK, &Value::Array(page))
}

fn query_int(query: &HashMap<String, String>, name: &'static str, default: i64, errors: &mut Vec<FieldError>) -> i64 {
    match query.get(name) {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| {
            errors.push(FieldError {
                loc: vec![json!("query"), json!(name)],
                msg: "value is not a valid integer".to_owned(),
                kind: "type_error.integer",
                ctx: None,
            });
            default
        }),
    }
}

fn query_error(name: &'static str, msg: &str, kind: &'static str, limit: i64) -> FieldError {
    FieldError {
        loc: vec![json!("query"), json!(name)],
        msg: msg.to_owned(),
        kind,
        ctx: Some(json!({"limit_value": limit})),
    }
}

/// Returns whether the caller may write the asset: its creator, holders of
/// the update role, and connectors of the asset's platform may.
fn may_edit(caller: &Caller, asset: &Asset) -> bool {
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

fn post_asset(state: &State, request: &Request, caller: &Caller) -> Reply {
    let body = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return error.into(),
    };
    let mut fields = match validate_create(&body) {
        Ok(fields) => fields,
        Err(errors) => return validation_errors(&errors),
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
    catalogue.assets.push(Asset {
        identifier: identifier.clone(),
        fields,
        owner: caller.client_id.clone(),
        status,
        created: time,
        modified: time,
        deleted: None,
    });
    tracing::info!(identifier = %identifier, client = %caller.client_id, status = status.as_str(), "asset created");
    json_response(StatusCode::OK, &json!({"identifier": identifier}))
}

fn put_asset(state: &State, request: &Request, caller: &Caller, identifier: &str) -> Reply {
    if let Err(error) = check_identifier(identifier) {
        return error.into();
    }
    let body = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return error.into(),
    };
    let mut fields = match validate_create(&body) {
        Ok(fields) => fields,
        Err(errors) => return validation_errors(&errors),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let asset = match live_asset(&catalogue, identifier) {
        Ok(asset) => asset,
        Err(error) => return error.into(),
    };
    if !may_edit(caller, asset) {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to edit computational_assets.");
    }
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

    if let Some(asset) = catalogue.get_mut(identifier) {
        asset.fields = fields;
        asset.modified = now();
    }
    tracing::info!(identifier = %identifier, client = %caller.client_id, "asset replaced");
    json_response(StatusCode::OK, &Value::Null)
}

fn post_platform(state: &State, request: &Request, caller: &Caller) -> Reply {
    if !caller.has_role("create_platforms") {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to create platforms.");
    }
    let body = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return error.into(),
    };
    let name = match body.get("name") {
        Some(Value::String(name)) if name.chars().count() <= 64 && !name.is_empty() => name.clone(),
        Some(Value::String(_)) => {
            let mut error = FieldError {
                loc: vec![json!("body"), json!("name")],
                msg: "ensure this value has at most 64 characters".to_owned(),
                kind: "value_error.any_str.max_length",
                ctx: None,
            };
            error.ctx = Some(json!({"limit_value": 64}));
            return validation_errors(&[error]);
        }
        _ => {
            return validation_errors(&[FieldError {
                loc: vec![json!("body"), json!("name")],
                msg: "field required".to_owned(),
                kind: "value_error.missing",
                ctx: None,
            }]);
        }
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    if catalogue.platform_exists(&name) {
        return detail(StatusCode::CONFLICT, "There already exists a platform with the same name.");
    }
    let identifier = catalogue.platforms.iter().map(|platform| platform.identifier).max().unwrap_or(0) + 1;
    catalogue.platforms.push(Platform { identifier, name: name.clone() });
    tracing::info!(platform = %name, identifier, client = %caller.client_id, "platform created");
    json_response(StatusCode::OK, &json!({"identifier": identifier}))
}

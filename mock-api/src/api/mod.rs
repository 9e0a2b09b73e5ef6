//! Request routing and handlers. warp extracts the request parts, and the
//! routing itself is a plain match on path segments. The real server serves
//! the same routes under three prefixes and distinguishes 404, 405 and the
//! 307 trailing-slash redirect, which reads more plainly as a match.
//!
//! Besides AIoD's routes, the mock serves the credentials hand-off extension
//! under `/extensions/hw-agent/` (see [`crate::credentials`]):
//! `GET /extensions/hw-agent/credentials-key`, and `GET` and `PUT
//! /extensions/hw-agent/computational_assets/{identifier}/credentials`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::Response;

use crate::auth::{Caller, Realm};
use crate::credentials::CredentialsKey;
use crate::store::Catalogue;
use crate::validate::FieldError;

mod assets;
mod credentials;
mod platforms;
mod submissions;
mod token;

/// Largest request body accepted, in bytes. A description is at most two
/// 65,535-character strings, so 1 MiB leaves ample room.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// The upstream server's OpenAPI document, trimmed to the routes the mock
/// serves, so clients and schema-driven testers see the real contract.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../openapi.json");

const TOKEN_PATH: &[&str] = &["realms", "aiod", "protocol", "openid-connect", "token"];

/// Shared state behind every request.
#[derive(Debug)]
pub struct State {
    pub realm: Mutex<Realm>,
    pub catalogue: Mutex<Catalogue>,
    /// Publish user drafts at once instead of waiting for a review.
    pub auto_publish: bool,
    /// The key pair that credentials hand-offs are sealed to.
    pub credentials_key: CredentialsKey,
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
        return only(request, &[Method::POST], || token::issue(state, request));
    }
    // Every catalogue route exists unprefixed, under /v2 and under /v3.
    let segments = match segments.first() {
        Some(&"v2") | Some(&"v3") => &segments[1..],
        _ => &segments[..],
    };

    match segments {
        ["openapi.json"] => only(request, &[Method::GET], || {
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(OPENAPI_DOCUMENT.as_bytes().to_vec())
                .unwrap_or_default()
        }),
        ["computational_assets"] => match request.method {
            Method::GET => assets::list(state, request, None),
            Method::POST => with_caller(state, request, |caller| assets::post(state, request, caller)),
            _ => method_not_allowed(),
        },
        ["computational_assets", identifier] => match request.method {
            Method::GET => assets::get(state, request, identifier),
            Method::PUT => with_caller(state, request, |caller| assets::put(state, request, caller, identifier)),
            Method::DELETE => with_caller(state, request, |caller| assets::delete(state, caller, identifier)),
            _ => method_not_allowed(),
        },
        ["counts"] => only(request, &[Method::GET], || assets::counts(state)),
        ["counts", "computational_assets"] => only(request, &[Method::GET], || assets::count(state, request)),
        ["computational_asset_types"] => only(request, &[Method::GET], || assets::types(state)),
        ["platforms", platform, "computational_assets"] => {
            only(request, &[Method::GET], || assets::list(state, request, Some(platform)))
        }
        ["platforms", platform, "computational_assets", resource_identifier] => {
            only(request, &[Method::GET], || assets::get_by_platform(state, request, platform, resource_identifier))
        }
        ["platforms"] => match request.method {
            Method::GET => platforms::list(state, request),
            Method::POST => with_caller(state, request, |caller| platforms::post(state, request, caller)),
            _ => method_not_allowed(),
        },
        ["platforms", identifier] => match request.method {
            Method::GET => platforms::get(state, identifier),
            Method::PUT => with_caller(state, request, |caller| platforms::put(state, request, caller, identifier)),
            Method::DELETE => with_caller(state, request, |caller| platforms::delete(state, caller, identifier)),
            _ => method_not_allowed(),
        },
        ["submissions"] => match request.method {
            Method::GET => with_caller(state, request, |caller| submissions::list(state, request, caller)),
            Method::POST => with_caller(state, request, |caller| submissions::submit(state, request, caller)),
            _ => method_not_allowed(),
        },
        ["submissions", "retract", identifier] => only(request, &[Method::POST], || {
            with_caller(state, request, |caller| submissions::retract(state, caller, identifier))
        }),
        ["submissions", identifier] => only(request, &[Method::GET], || {
            with_caller(state, request, |caller| submissions::get(state, caller, identifier))
        }),
        ["reviews"] => only(request, &[Method::POST], || {
            with_caller(state, request, |caller| submissions::review(state, request, caller))
        }),
        ["counts", "platforms"] => only(request, &[Method::GET], || platforms::count(state)),
        ["extensions", "hw-agent", "credentials-key"] => only(request, &[Method::GET], || credentials::key(state)),
        ["extensions", "hw-agent", "computational_assets", identifier, "credentials"] => match request.method {
            Method::GET => with_caller(state, request, |caller| credentials::get(state, caller, identifier)),
            Method::PUT => with_caller(state, request, |caller| credentials::put(state, request, caller, identifier)),
            _ => method_not_allowed(),
        },
        ["authorization_test"] => only(request, &[Method::GET], || {
            with_caller(state, request, |caller| {
                json_response(
                    StatusCode::OK,
                    &json!({"name": caller.client_id, "roles": caller.roles, "_subject_identifier": caller.client_id}),
                )
            })
        }),
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

/// Builds the response to a failed write to the state database, with the
/// real server's 500 text, after logging the cause.
fn storage_failure(error: &anyhow::Error) -> Reply {
    tracing::error!(error = %format!("{error:#}"), "failed to write the state database");
    detail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Unexpected exception while processing your request. Please contact the maintainers: the mock's state database failed.",
    )
}

fn detail(status: StatusCode, message: &str) -> Reply {
    detail_error(status, message).into()
}

fn validation_error(errors: Vec<FieldError>) -> ApiError {
    let list: Vec<Value> = errors.iter().map(FieldError::to_json).collect();
    ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, body: json!({"detail": list}) }
}

fn validation_errors(errors: &[FieldError]) -> Reply {
    validation_error(errors.to_vec()).into()
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
        // serde_json points at the last character it read, and Python's json
        // module at the next one, which for a truncated body is its end.
        let offset = if error.is_eof() {
            String::from_utf8_lossy(&request.body).chars().count()
        } else {
            char_offset(&request.body, error.line(), error.column())
        };
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

fn char_offset(body: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let before: usize = text.lines().take(line.saturating_sub(1)).map(|line| line.chars().count() + 1).sum();
    before + column.saturating_sub(1)
}

/// Reads `offset` and `limit` with the server's defaults (0 and 10) and
/// bounds (offset at least 0, limit at most 1000).
fn pagination(request: &Request) -> Result<(usize, usize), ApiError> {
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
        return Err(validation_error(errors));
    }
    Ok((offset.max(0) as usize, limit.max(0) as usize))
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

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

//! Responses, and the `Status` bodies kube-apiserver sends on errors.
//!
//! Messages, reasons and `details` follow `k8s.io/apimachinery/pkg/api/errors`
//! (`NewNotFound`, `NewConflict`, `NewInvalid`, ...) because kube-rs parses them into
//! `kube::Error::Api` and the agent branches on `code` and `reason`.

use serde_json::{Map, Value, json};

use crate::resources::Resource;

/// The message of a Conflict caused by a stale `metadata.resourceVersion`.
pub(crate) const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// One HTTP response of the fake.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: ReplyBody,
}

#[derive(Debug)]
pub(crate) enum ReplyBody {
    Json(Value),
    Text(&'static str),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, body: ReplyBody::Json(body) }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    pub fn created(body: Value) -> Self {
        Self::json(201, body)
    }
}

/// A handler's result: `Err` carries an error `Status`, so handlers can use `?`.
pub(crate) type Outcome = Result<Reply, Reply>;

fn failure(code: u16, reason: &str, message: String, details: Option<Value>) -> Reply {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    Reply::json(code, status)
}

/// `StatusDetails` with Go's `omitempty`: empty strings are left out.
fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut details = Map::new();
    for (key, value) in [("name", name), ("group", group), ("kind", kind)] {
        if !value.is_empty() {
            details.insert(key.to_owned(), Value::from(value));
        }
    }
    Value::Object(details)
}

fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") }
}

pub(crate) fn not_found(resource: &Resource, name: &str) -> Reply {
    not_found_in(resource.group, resource.plural, name)
}

pub(crate) fn not_found_in(group: &str, plural: &str, name: &str) -> Reply {
    let message = format!("{} {name:?} not found", group_resource(group, plural));
    failure(404, "NotFound", message, Some(details(name, group, plural)))
}

pub(crate) fn already_exists(resource: &Resource, name: &str) -> Reply {
    let message = format!("{} {name:?} already exists", resource.group_resource());
    failure(409, "AlreadyExists", message, Some(details(name, resource.group, resource.plural)))
}

pub(crate) fn conflict(resource: &Resource, name: &str, cause: &str) -> Reply {
    let message = format!("Operation cannot be fulfilled on {} {name:?}: {cause}", resource.group_resource());
    failure(409, "Conflict", message, Some(details(name, resource.group, resource.plural)))
}

/// One field error of an `Invalid` response.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub field: &'static str,
    pub reason: FieldReason,
    /// The rejected value, already rendered as Go prints it (`"name"`, `60`).
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldReason {
    Invalid,
    Required,
    Forbidden,
}

impl FieldError {
    pub fn invalid(field: &'static str, value: String, detail: impl Into<String>) -> Self {
        Self { field, reason: FieldReason::Invalid, value: Some(value), detail: detail.into() }
    }

    pub fn required(field: &'static str, detail: impl Into<String>) -> Self {
        Self { field, reason: FieldReason::Required, value: None, detail: detail.into() }
    }

    pub fn forbidden(field: &'static str, detail: impl Into<String>) -> Self {
        Self { field, reason: FieldReason::Forbidden, value: None, detail: detail.into() }
    }

    /// Formats the message without the field, as in `causes[].message`.
    fn body(&self) -> String {
        let kind = match self.reason {
            FieldReason::Invalid => "Invalid value",
            FieldReason::Required => "Required value",
            FieldReason::Forbidden => "Forbidden",
        };
        match &self.value {
            Some(value) => format!("{kind}: {value}: {}", self.detail),
            None => format!("{kind}: {}", self.detail),
        }
    }

    fn cause_reason(&self) -> &'static str {
        match self.reason {
            FieldReason::Invalid => "FieldValueInvalid",
            FieldReason::Required => "FieldValueRequired",
            FieldReason::Forbidden => "FieldValueForbidden",
        }
    }
}

/// 422 Invalid, as `NewInvalid(GroupKind{group, kind}, name, errors)` builds it.
pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Reply {
    let qualified_kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
    let rendered: Vec<String> = errors.iter().map(|error| format!("{}: {}", error.field, error.body())).collect();
    let summary = match rendered.as_slice() {
        [single] => single.clone(),
        _ => format!("[{}]", rendered.join(", ")),
    };
    let message = format!("{qualified_kind} {name:?} is invalid: {summary}");
    let causes: Vec<Value> = errors
        .iter()
        .map(|error| json!({"reason": error.cause_reason(), "message": error.body(), "field": error.field}))
        .collect();
    let mut details = details(name, group, kind);
    details["causes"] = Value::Array(causes);
    failure(422, "Invalid", message, Some(details))
}

pub(crate) fn invalid_object(resource: &Resource, name: &str, errors: &[FieldError]) -> Reply {
    invalid(resource.group, resource.kind, name, errors)
}

/// 422 from a JSON patch that does not apply, which kube-apiserver reports without details.
pub(crate) fn unprocessable(message: String) -> Reply {
    failure(422, "Invalid", message, None)
}

pub(crate) fn bad_request(message: impl Into<String>) -> Reply {
    failure(400, "BadRequest", message.into(), None)
}

/// 404 for a path no route serves.
pub(crate) fn unknown_path() -> Reply {
    failure(404, "NotFound", "the server could not find the requested resource".to_owned(), Some(json!({})))
}

pub(crate) fn method_not_allowed() -> Reply {
    let message = "the server does not allow this method on the requested resource".to_owned();
    failure(405, "MethodNotAllowed", message, Some(json!({})))
}

/// Watches are not implemented; 405 makes a client that tries one fail at once instead of hanging.
pub(crate) fn watch_unsupported() -> Reply {
    failure(405, "MethodNotAllowed", "watch is not supported by the fake API server".to_owned(), Some(json!({})))
}

pub(crate) fn unsupported_media_type() -> Reply {
    let message = "the body of the request was in an unknown format - accepted media types include: \
                   application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        .to_owned();
    failure(415, "UnsupportedMediaType", message, None)
}

pub(crate) fn unauthorized() -> Reply {
    failure(401, "Unauthorized", "Unauthorized".to_owned(), None)
}

pub(crate) fn unavailable() -> Reply {
    let message = "the server is currently unable to handle the request".to_owned();
    failure(503, "ServiceUnavailable", message, Some(json!({})))
}

pub(crate) fn too_large(limit: usize) -> Reply {
    failure(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"), None)
}

/// The request attributes that RBAC checks and that a Forbidden message names.
#[derive(Debug)]
pub(crate) struct Attributes<'a> {
    pub user: &'a str,
    pub verb: &'a str,
    pub resource: &'a Resource,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// Empty for list, create and deletecollection, whose URL names no object.
    pub name: &'a str,
}

/// 403 with the message of kube-apiserver's `forbiddenMessage` wrapped by `NewForbidden`.
///
/// The group/resource prefix and `details.kind` use the resource without its
/// subresource, while the "cannot ... resource" part includes it.
pub(crate) fn forbidden(attributes: &Attributes<'_>) -> Reply {
    let resource = attributes.resource;
    let full_resource = match attributes.subresource {
        Some(subresource) => format!("{}/{subresource}", resource.plural),
        None => resource.plural.to_owned(),
    };
    let scope = match attributes.namespace {
        Some(namespace) => format!("in the namespace {namespace:?}"),
        None => "at the cluster scope".to_owned(),
    };
    let reason = format!(
        "User {:?} cannot {} resource {full_resource:?} in API group {:?} {scope}",
        attributes.user, attributes.verb, resource.group
    );
    let message = if attributes.name.is_empty() {
        format!("{} is forbidden: {reason}", resource.group_resource())
    } else {
        format!("{} {:?} is forbidden: {reason}", resource.group_resource(), attributes.name)
    };
    failure(403, "Forbidden", message, Some(details(attributes.name, resource.group, resource.plural)))
}

/// 403 for a binding whose creator lacks `bind` on the role, worded as
/// kube-apiserver's RBAC escalation check words it.
pub(crate) fn forbidden_bind(resource: &Resource, user: &str, role: &str) -> Reply {
    let message = format!(
        "{} is forbidden: user {user:?} is attempting to grant RBAC permissions not currently held; \
         it needs the bind verb on role {role:?}",
        resource.group_resource()
    );
    failure(403, "Forbidden", message, Some(details("", resource.group, resource.plural)))
}

/// The Success `Status` that DELETE returns for resources that do not return the object.
pub(crate) fn deleted(resource: &Resource, name: &str, uid: &str) -> Reply {
    let mut details = details(name, resource.group, resource.plural);
    if !uid.is_empty() {
        details["uid"] = Value::from(uid);
    }
    Reply::ok(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }))
}

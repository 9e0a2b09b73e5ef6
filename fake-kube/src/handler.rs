//! Request dispatch and the API verbs, with kube-apiserver's checks in its order:
//! availability, authentication, routing, authorization, then the verb.

use std::net::SocketAddr;

use chrono::{SecondsFormat, TimeDelta, Utc};
use http::Method;
use serde_json::{Value, json};

use crate::IssuedToken;
use crate::discovery;
use crate::patch::{self, JsonPatchError};
use crate::rbac;
use crate::resources::{self, NameRule, Resource, Target};
use crate::select::{self, FieldSelector, LabelSelector};
use crate::state::{self, Credential, State, meta_str, metadata_mut};
use crate::status::{self, Attributes, FieldError, Outcome, Reply, ReplyBody};

/// Audience of tokens whose TokenRequest names none, as on a kubeadm cluster.
const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// TokenRequest `spec.expirationSeconds` when the request leaves it out.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;
const MAX_TOKEN_SECONDS: i64 = 1 << 32;

/// A request as the handlers see it, with the body already read.
#[derive(Debug)]
pub(crate) struct ApiRequest {
    pub method: Method,
    pub path: String,
    /// Decoded query parameters in order.
    pub params: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub token: Option<String>,
    pub body: Option<Value>,
    /// The JSON parse error of a non-empty body.
    pub body_error: Option<String>,
}

impl ApiRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    fn dry_run(&self) -> bool {
        self.params.iter().any(|(name, value)| name == "dryRun" && value == "All")
    }

    /// Returns the body as a JSON object, or a 400 when it is missing or not an object.
    fn object_body(&self) -> Result<Value, Reply> {
        if let Some(error) = &self.body_error {
            return Err(status::bad_request(format!("the request body is not valid JSON: {error}")));
        }
        match &self.body {
            Some(body @ Value::Object(_)) => Ok(body.clone()),
            Some(_) => Err(status::bad_request("the request body must be a JSON object")),
            None => Err(status::bad_request("the request body is empty")),
        }
    }
}

/// Splits a query string into decoded `(name, value)` pairs.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |offset: usize| bytes.get(index + offset).and_then(|byte| char::from(*byte).to_digit(16));
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if hex(1).is_some() && hex(2).is_some() => {
                let value = hex(1).unwrap_or_default() * 16 + hex(2).unwrap_or_default();
                decoded.push(u8::try_from(value).unwrap_or(b'?'));
                index += 2;
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Handles one request; every outcome, errors included, is a response.
pub(crate) fn handle(state: &mut State, request: &ApiRequest, addr: SocketAddr) -> Reply {
    match dispatch(state, request, addr) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn dispatch(state: &mut State, request: &ApiRequest, addr: SocketAddr) -> Outcome {
    if state.unavailable {
        return Err(status::unavailable());
    }
    let identity = state.authenticate(request.token.as_deref()).ok_or_else(status::unauthorized)?;
    let user = identity.user_name();
    match resources::parse_path(&request.path) {
        Target::Version => read_only(request, discovery::version_info()),
        Target::Health if request.method == Method::GET => Ok(Reply { status: 200, body: ReplyBody::Text("ok") }),
        Target::Health => Err(status::method_not_allowed()),
        Target::CoreVersions => read_only(request, discovery::core_versions(addr)),
        Target::Groups => read_only(request, discovery::api_group_list()),
        Target::Group(group) => read_only(request, discovery::api_group(&group).ok_or_else(status::unknown_path)?),
        Target::GroupVersion { group, version } => {
            read_only(request, discovery::resource_list(state, &group, &version).ok_or_else(status::unknown_path)?)
        }
        Target::Collection { resource, namespace } => collection(state, request, &user, resource, namespace.as_deref()),
        Target::Object { resource, namespace, name, subresource } => {
            let scope = Scope { resource, namespace: namespace.as_deref(), name: &name };
            object(state, request, &user, &scope, subresource.as_deref())
        }
        Target::Unknown => Err(status::unknown_path()),
    }
}

fn read_only(request: &ApiRequest, body: Value) -> Outcome {
    if request.method == Method::GET { Ok(Reply::ok(body)) } else { Err(status::method_not_allowed()) }
}

fn authorize(state: &State, attributes: &Attributes<'_>) -> Result<(), Reply> {
    let resource = match attributes.subresource {
        Some(subresource) => format!("{}/{subresource}", attributes.resource.plural),
        None => attributes.resource.plural.to_owned(),
    };
    if state.is_denied(attributes.verb, attributes.resource.group, &resource) {
        return Err(status::forbidden(attributes));
    }
    if state.rbac_enforced && attributes.user.starts_with("system:serviceaccount:") {
        let request = rbac::Request {
            user: attributes.user,
            verb: attributes.verb,
            group: attributes.resource.group,
            resource: &resource,
            namespace: attributes.namespace,
            name: attributes.name,
        };
        if !rbac::allows(state, &request) {
            return Err(status::forbidden(attributes));
        }
    }
    Ok(())
}

fn collection(
    state: &mut State,
    request: &ApiRequest,
    user: &str,
    resource: &'static Resource,
    namespace: Option<&str>,
) -> Outcome {
    let verb = match request.method {
        Method::GET if matches!(request.param("watch"), Some("true" | "1")) => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::DELETE => "deletecollection",
        _ => return Err(status::method_not_allowed()),
    };
    authorize(state, &Attributes { user, verb, resource, subresource: None, namespace, name: "" })?;
    match verb {
        "watch" => Err(status::watch_unsupported()),
        "list" => list(state, request, resource, namespace),
        // Only reads span all namespaces.
        _ if resource.namespaced && namespace.is_none() => Err(status::method_not_allowed()),
        "create" => {
            check_bind(state, request, user, resource, namespace)?;
            create(state, request, resource, namespace)
        }
        _ => delete_collection(state, request, resource, namespace),
    }
}

/// Applies RBAC's escalation check to a new binding when RBAC is enforced:
/// the creator needs `bind` on the referenced role.
fn check_bind(
    state: &State,
    request: &ApiRequest,
    user: &str,
    resource: &'static Resource,
    namespace: Option<&str>,
) -> Result<(), Reply> {
    let is_binding = resource.is("rbac.authorization.k8s.io", "clusterrolebindings")
        || resource.is("rbac.authorization.k8s.io", "rolebindings");
    if !(state.rbac_enforced && is_binding && user.starts_with("system:serviceaccount:")) {
        return Ok(());
    }
    let binding = request.object_body()?;
    if rbac::may_bind(state, user, &binding, namespace) {
        return Ok(());
    }
    let role = binding["roleRef"]["name"].as_str().unwrap_or_default().to_owned();
    Err(status::forbidden_bind(resource, user, &role))
}

/// The object a request path names.
struct Scope<'a> {
    resource: &'static Resource,
    namespace: Option<&'a str>,
    name: &'a str,
}

impl Scope<'_> {
    fn key(&self) -> String {
        self.resource.object_path(self.namespace, self.name)
    }
}

fn object(
    state: &mut State,
    request: &ApiRequest,
    user: &str,
    scope: &Scope<'_>,
    subresource: Option<&str>,
) -> Outcome {
    let resource = scope.resource;
    match subresource {
        None => {}
        Some("status") if state.status_enabled(resource) => {}
        // Without the TokenRequest API the route does not exist, as on old servers.
        Some("token") if resource.is("", "serviceaccounts") && state.token_request_enabled => {}
        Some(_) => return Err(status::unknown_path()),
    }
    let verb = match (subresource, &request.method) {
        (Some("token"), &Method::POST) => "create",
        (Some("token"), _) => return Err(status::method_not_allowed()),
        (_, &Method::GET) => "get",
        (_, &Method::PUT) => "update",
        (_, &Method::PATCH) => "patch",
        (None, &Method::DELETE) => "delete",
        _ => return Err(status::method_not_allowed()),
    };
    let attributes = Attributes { user, verb, resource, subresource, namespace: scope.namespace, name: scope.name };
    authorize(state, &attributes)?;
    match verb {
        "get" => get(state, scope),
        "update" => update(state, request, scope, subresource),
        "patch" => patch_object(state, request, scope, subresource),
        "delete" => delete(state, request, scope),
        _ => token_request(state, request, scope),
    }
}

fn get(state: &State, scope: &Scope<'_>) -> Outcome {
    let object = state.objects.get(&scope.key()).cloned();
    object.map(Reply::ok).ok_or_else(|| status::not_found(scope.resource, scope.name))
}

fn selectors(request: &ApiRequest, resource: &Resource) -> Result<(LabelSelector, FieldSelector), Reply> {
    let labels =
        LabelSelector::parse(request.param("labelSelector").unwrap_or_default()).map_err(status::bad_request)?;
    let mut supported = vec!["metadata.name"];
    if resource.namespaced {
        supported.push("metadata.namespace");
    }
    supported.extend_from_slice(resource.extra_fields);
    let fields = FieldSelector::parse(request.param("fieldSelector").unwrap_or_default(), &supported)
        .map_err(status::bad_request)?;
    Ok((labels, fields))
}

/// Copies an object for a list: kube-apiserver leaves out kind and apiVersion, which the list carries.
fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
}

fn list_body(resource: &Resource, metadata: Value, items: Vec<Value>) -> Value {
    json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": metadata, "items": items})
}

/// NOTE: a continued list reads the current objects, not a snapshot as of the first
/// page, and never expires with 410 Gone.
fn list(state: &State, request: &ApiRequest, resource: &Resource, namespace: Option<&str>) -> Outcome {
    let (labels, fields) = selectors(request, resource)?;
    let limit = match request.param("limit").filter(|limit| !limit.is_empty()) {
        None => None,
        Some(text) => {
            let limit: i64 = text.parse().map_err(|_| status::bad_request(format!("invalid limit {text:?}")))?;
            usize::try_from(limit).ok().filter(|limit| *limit > 0)
        }
    };
    let start = match request.param("continue").filter(|token| !token.is_empty()) {
        None => None,
        Some(token) => Some(select::decode_continue(token).map_err(status::bad_request)?),
    };

    let matching: Vec<(&String, &Value)> = state
        .collection(resource, namespace)
        .into_iter()
        .filter(|(key, _)| start.as_ref().is_none_or(|start| key.as_str() > start.as_str()))
        .filter(|(_, object)| labels.matches(object) && fields.matches(object))
        .collect();
    let page_len = limit.map_or(matching.len(), |limit| limit.min(matching.len()));
    let (page, rest) = matching.split_at(page_len);

    let resource_version = state.current_resource_version();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some((last_key, _)) = page.last()
        && !rest.is_empty()
    {
        metadata["continue"] = json!(select::encode_continue(&resource_version, last_key));
        // Like kube-apiserver, the count is only given when no selector filters the list.
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(rest.len());
        }
    }
    let items = page.iter().map(|(_, object)| list_item(object)).collect();
    Ok(Reply::ok(list_body(resource, metadata, items)))
}

/// Fills the namespace from the URL; a different one in the body is a 400.
fn check_namespace(object: &mut Value, resource: &Resource, namespace: Option<&str>) -> Result<(), Reply> {
    let (Some(namespace), true) = (namespace, resource.namespaced) else {
        return Ok(());
    };
    match meta_str(object, "namespace").filter(|found| !found.is_empty()) {
        Some(found) if found != namespace => Err(status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            metadata_mut(object).insert("namespace".to_owned(), json!(namespace));
            Ok(())
        }
    }
}

fn check_name(object: &Value, name: &str) -> Result<(), Reply> {
    let found = meta_str(object, "name").unwrap_or_default();
    if found == name {
        Ok(())
    } else {
        Err(status::bad_request(format!(
            "the name of the object ({found}) does not match the name on the URL ({name})"
        )))
    }
}

const LABEL_FORMAT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
     and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
     regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_FORMAT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
     '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
     regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Checks whether `text` matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_label_pattern(text: &str) -> bool {
    let alphanumeric = |character: char| character.is_ascii_lowercase() || character.is_ascii_digit();
    text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
        && text.chars().all(|character| alphanumeric(character) || character == '-')
}

/// Returns why `name` is not a valid `metadata.name`, in kube-apiserver's wording, or `None` when it is valid.
fn name_problem(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Label if name.len() > 63 => Some("must be no more than 63 characters".to_owned()),
        NameRule::Label if !is_label_pattern(name) => Some(LABEL_FORMAT.to_owned()),
        NameRule::Subdomain if name.len() > 253 => Some("must be no more than 253 characters".to_owned()),
        NameRule::Subdomain if !name.split('.').all(is_label_pattern) => Some(SUBDOMAIN_FORMAT.to_owned()),
        NameRule::PathSegment if name == "." || name == ".." => Some(format!("may not be '{name}'")),
        NameRule::PathSegment if name.contains('/') => Some("may not contain '/'".to_owned()),
        NameRule::PathSegment if name.contains('%') => Some("may not contain '%'".to_owned()),
        _ => None,
    }
}

/// Creates an object for POST, for PUT on a missing object that allows it, and for apply.
/// The response leaves out what controllers add afterwards, as on a real server.
fn insert(state: &mut State, scope: &Scope<'_>, object: Value, dry_run: bool) -> Result<Value, Reply> {
    let Scope { resource, namespace, name } = *scope;
    if let Some(detail) = name_problem(resource.name_rule, name) {
        let error = FieldError::invalid("metadata.name", format!("{name:?}"), detail);
        return Err(status::invalid_object(resource, name, &[error]));
    }
    if let Some(namespace) = namespace.filter(|_| resource.namespaced)
        && !state.objects.contains_key(&state::namespace_path(namespace))
    {
        return Err(status::not_found_in("", "namespaces", namespace));
    }
    let key = scope.key();
    if state.objects.contains_key(&key) {
        return Err(status::already_exists(resource, name));
    }
    if dry_run {
        let mut object = object;
        state.prepare_new(resource, &key, &mut object, None);
        return Ok(object);
    }
    let stored = state.store_new(resource, &key, object);
    state.after_write(resource, &key, true);
    Ok(stored)
}

fn create(state: &mut State, request: &ApiRequest, resource: &'static Resource, namespace: Option<&str>) -> Outcome {
    let mut object = request.object_body()?;
    check_namespace(&mut object, resource, namespace)?;
    let name = match meta_str(&object, "name").filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => match meta_str(&object, "generateName").filter(|prefix| !prefix.is_empty()) {
            Some(prefix) => format!("{prefix}{}", state::random_suffix()),
            None => {
                let error = FieldError::required("metadata.name", "name or generateName is required");
                return Err(status::invalid_object(resource, "", &[error]));
            }
        },
    };
    let scope = Scope { resource, namespace, name: &name };
    insert(state, &scope, object, request.dry_run()).map(Reply::created)
}

fn update(state: &mut State, request: &ApiRequest, scope: &Scope<'_>, subresource: Option<&str>) -> Outcome {
    let Scope { resource, namespace, name } = *scope;
    let mut object = request.object_body()?;
    check_name(&object, name)?;
    check_namespace(&mut object, resource, namespace)?;
    let dry_run = request.dry_run();
    let key = scope.key();
    let Some(old) = state.objects.get(&key).cloned() else {
        if resource.create_on_update && subresource.is_none() {
            return insert(state, scope, object, dry_run).map(Reply::created);
        }
        return Err(status::not_found(resource, name));
    };
    match meta_str(&object, "resourceVersion").filter(|version| !version.is_empty()) {
        // kube-apiserver names the resource, not the kind, in this Invalid message.
        None if !resource.unconditional_update => {
            let error =
                FieldError::invalid("metadata.resourceVersion", "0x0".to_owned(), "must be specified for an update");
            return Err(status::invalid(resource.group, resource.plural, name, &[error]));
        }
        Some(version) if Some(version) != meta_str(&old, "resourceVersion") => {
            return Err(status::conflict(resource, name, status::OBJECT_MODIFIED));
        }
        _ => {}
    }
    let stored = state.store_update(resource, &key, &old, object, subresource, dry_run);
    if !dry_run {
        state.after_write(resource, &key, false);
    }
    Ok(Reply::ok(stored))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Json,
    Apply,
}

fn patch_object(state: &mut State, request: &ApiRequest, scope: &Scope<'_>, subresource: Option<&str>) -> Outcome {
    let Scope { resource, namespace, name } = *scope;
    let media_type = request.content_type.as_deref().map(|value| value.split(';').next().unwrap_or_default().trim());
    let kind = match media_type {
        Some("application/merge-patch+json" | "application/strategic-merge-patch+json") => PatchKind::Merge,
        Some("application/json-patch+json") => PatchKind::Json,
        Some("application/apply-patch+yaml") => PatchKind::Apply,
        _ => return Err(status::unsupported_media_type()),
    };
    // kube-apiserver validates PatchOptions before it looks the object up.
    let manager = request.param("fieldManager").unwrap_or_default();
    if kind == PatchKind::Apply && manager.is_empty() {
        let error = FieldError::required("fieldManager", "is required for apply patch");
        return Err(status::invalid("meta.k8s.io", "PatchOptions", "", &[error]));
    }
    if kind != PatchKind::Apply && request.param("force").is_some() {
        let error = FieldError::forbidden("force", "may not be specified for non-apply patch");
        return Err(status::invalid("meta.k8s.io", "PatchOptions", "", &[error]));
    }
    if let Some(error) = &request.body_error {
        // NOTE: apply bodies must be JSON (kube-rs sends JSON); YAML is not parsed.
        return Err(status::bad_request(format!("the request body is not valid JSON: {error}")));
    }
    let Some(body) = request.body.as_ref() else {
        return Err(status::bad_request("the request body is empty"));
    };
    let dry_run = request.dry_run();
    let api_version = resource.api_version();
    let key = scope.key();

    let applied = if kind == PatchKind::Apply {
        let mut applied = request.object_body()?;
        if meta_str(&applied, "name").is_none_or(str::is_empty) {
            metadata_mut(&mut applied).insert("name".to_owned(), json!(name));
        }
        check_name(&applied, name)?;
        check_namespace(&mut applied, resource, namespace)?;
        Some(applied)
    } else {
        None
    };

    let Some(old) = state.objects.get(&key).cloned() else {
        if let (Some(applied), None) = (&applied, subresource) {
            let created = patch::apply(None, applied, manager, &api_version, &state::now());
            return insert(state, scope, created, dry_run).map(Reply::created);
        }
        return Err(status::not_found(resource, name));
    };
    let patched = match (kind, &applied) {
        (PatchKind::Apply, Some(applied)) => patch::apply(Some(&old), applied, manager, &api_version, &state::now()),
        (PatchKind::Json, _) => {
            let mut patched = old.clone();
            patch::json_patch(&mut patched, body).map_err(|error| match error {
                JsonPatchError::Malformed(message) => status::bad_request(message),
                JsonPatchError::NotApplicable(message) => status::unprocessable(message),
            })?;
            patched
        }
        _ => {
            if !body.is_object() {
                return Err(status::bad_request("a merge patch must be a JSON object"));
            }
            let mut patched = old.clone();
            patch::merge_patch(&mut patched, body);
            patched
        }
    };
    check_name(&patched, name)?;
    // A resourceVersion that the patch sets is a precondition on the stored one.
    if let Some(version) = meta_str(&patched, "resourceVersion")
        && Some(version) != meta_str(&old, "resourceVersion")
    {
        return Err(status::conflict(resource, name, status::OBJECT_MODIFIED));
    }
    let stored = state.store_update(resource, &key, &old, patched, subresource, dry_run);
    if !dry_run {
        state.after_write(resource, &key, false);
    }
    Ok(Reply::ok(stored))
}

/// DELETE removes the object at once: no finalizers, no graceful deletion and no
/// garbage collection of dependents, so tests can observe objects whose owner is gone.
fn delete(state: &mut State, request: &ApiRequest, scope: &Scope<'_>) -> Outcome {
    let Scope { resource, name, .. } = *scope;
    if let Some(error) = &request.body_error {
        return Err(status::bad_request(format!("the request body is not valid JSON: {error}")));
    }
    let key = scope.key();
    let Some(mut deleted) = state.objects.get(&key).cloned() else {
        return Err(status::not_found(resource, name));
    };
    let preconditions = request.body.as_ref().and_then(|body| body.get("preconditions"));
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let expected = preconditions.and_then(|preconditions| preconditions.get(field)).and_then(Value::as_str);
        let actual = meta_str(&deleted, field).unwrap_or_default();
        if let Some(expected) = expected
            && expected != actual
        {
            let cause =
                format!("Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}");
            return Err(status::conflict(resource, name, &cause));
        }
    }
    if !request.dry_run() {
        state.objects.remove(&key);
        let resource_version = state.bump();
        metadata_mut(&mut deleted).insert("resourceVersion".to_owned(), json!(resource_version));
    }
    if resource.delete_returns_object {
        Ok(Reply::ok(deleted))
    } else {
        Ok(status::deleted(resource, name, meta_str(&deleted, "uid").unwrap_or_default()))
    }
}

fn delete_collection(state: &mut State, request: &ApiRequest, resource: &Resource, namespace: Option<&str>) -> Outcome {
    let (labels, fields) = selectors(request, resource)?;
    let keys: Vec<String> = state
        .collection(resource, namespace)
        .into_iter()
        .filter(|(_, object)| labels.matches(object) && fields.matches(object))
        .map(|(key, _)| key.clone())
        .collect();
    let mut items = Vec::new();
    for key in keys {
        if request.dry_run() {
            items.extend(state.objects.get(&key).map(list_item));
        } else if let Some(mut object) = state.objects.remove(&key) {
            let resource_version = state.bump();
            metadata_mut(&mut object).insert("resourceVersion".to_owned(), json!(resource_version));
            items.push(list_item(&object));
        }
    }
    let metadata = json!({"resourceVersion": state.current_resource_version()});
    Ok(Reply::ok(list_body(resource, metadata, items)))
}

/// `POST .../serviceaccounts/{name}/token`: issues an opaque random token that
/// authenticates as the service account until it expires or the account is deleted.
///
/// NOTE: real tokens are signed JWTs; these are not, and audiences and
/// `boundObjectRef` are echoed back but not enforced.
fn token_request(state: &mut State, request: &ApiRequest, scope: &Scope<'_>) -> Outcome {
    let Scope { namespace, name, .. } = *scope;
    let namespace = namespace.unwrap_or_default();
    let body =
        if request.body.is_none() && request.body_error.is_none() { json!({}) } else { request.object_body()? };
    let account_key = scope.key();
    let Some(account) = state.objects.get(&account_key) else {
        return Err(status::not_found_in("", "serviceaccounts", name));
    };
    let uid = meta_str(account, "uid").unwrap_or_default().to_owned();

    let requested = body.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_TOKEN_SECONDS);
    let limit_error = if requested < MIN_TOKEN_SECONDS {
        Some("may not specify a duration less than 10 minutes")
    } else if requested > MAX_TOKEN_SECONDS {
        Some("may not specify a duration larger than 2^32 seconds")
    } else {
        None
    };
    if let Some(detail) = limit_error {
        let error = FieldError::invalid("spec.expirationSeconds", requested.to_string(), detail);
        return Err(status::invalid("authentication.k8s.io", "TokenRequest", "", &[error]));
    }
    // Like --service-account-max-token-expiration, the server shortens longer requests.
    let seconds = state.max_token_seconds.map_or(requested, |max| requested.min(max));
    let expires = Utc::now() + TimeDelta::seconds(seconds);
    let expiration_timestamp = expires.to_rfc3339_opts(SecondsFormat::Secs, true);
    let audiences = body
        .pointer("/spec/audiences")
        .filter(|audiences| audiences.as_array().is_some_and(|audiences| !audiences.is_empty()))
        .cloned()
        .unwrap_or_else(|| json!([DEFAULT_AUDIENCE]));
    let bound_object = body.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null);

    let token = state::random_token();
    state.credentials.insert(
        token.clone(),
        Credential::ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            secret: None,
            expires: Some(expires),
        },
    );
    state.issued.push(IssuedToken {
        namespace: namespace.to_owned(),
        service_account: name.to_owned(),
        token: token.clone(),
        expiration_timestamp: Some(expiration_timestamp.clone()),
    });
    Ok(Reply::created(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound_object},
        "status": {"token": token, "expirationTimestamp": expiration_timestamp},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let params = parse_query("labelSelector=app%3Dagent%2Ctier+in+(a)&limit=2&empty&x=%zz");
        assert_eq!(params[0], ("labelSelector".to_owned(), "app=agent,tier in (a)".to_owned()));
        assert_eq!(params[1], ("limit".to_owned(), "2".to_owned()));
        assert_eq!(params[2], ("empty".to_owned(), String::new()));
        assert_eq!(params[3], ("x".to_owned(), "%zz".to_owned()));
    }

    #[test]
    fn names_are_validated_per_rule() {
        assert_eq!(name_problem(NameRule::Subdomain, "node-1.example"), None);
        assert!(name_problem(NameRule::Subdomain, "Node-1").is_some());
        assert!(name_problem(NameRule::Subdomain, "-a").is_some());
        assert!(name_problem(NameRule::Label, "a.b").is_some());
        assert_eq!(name_problem(NameRule::PathSegment, "system:hw-agent"), None);
        assert!(name_problem(NameRule::PathSegment, "a/b").is_some());
    }
}

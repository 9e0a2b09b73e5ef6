//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a
//! simplified server-side apply.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch: objects merge recursively, `null` removes a key,
/// anything else (arrays included) replaces the target.
///
/// NOTE: `application/strategic-merge-patch+json` is treated the same way, so lists
/// that kube-apiserver merges by key (such as a pod's containers) are replaced whole.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Why a JSON patch failed: a malformed document is a 400, an operation that does
/// not apply to the object is a 422, as in kube-apiserver.
#[derive(Debug, PartialEq)]
pub(crate) enum JsonPatchError {
    Malformed(String),
    NotApplicable(String),
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test) in order;
/// on error `document` may be partly patched, so callers patch a copy.
pub(crate) fn json_patch(document: &mut Value, operations: &Value) -> Result<(), JsonPatchError> {
    let malformed = |message: String| JsonPatchError::Malformed(message);
    let Value::Array(operations) = operations else {
        return Err(malformed("a JSON patch must be an array of operations".to_owned()));
    };
    for operation in operations {
        let field = |name: &str| operation.get(name).and_then(Value::as_str);
        let op = field("op").ok_or_else(|| malformed(format!("operation {operation} has no \"op\"")))?;
        let path = field("path").ok_or_else(|| malformed(format!("operation {operation} has no \"path\"")))?;
        let path = parse_pointer(path).map_err(malformed)?;
        let value =
            || operation.get("value").cloned().ok_or_else(|| malformed(format!("operation {op} needs a value")));
        let from = || {
            field("from")
                .ok_or_else(|| malformed(format!("operation {op} needs \"from\"")))
                .and_then(|from| parse_pointer(from).map_err(malformed))
        };
        let not_applicable = JsonPatchError::NotApplicable;
        match op {
            "add" => add(document, &path, value()?).map_err(not_applicable)?,
            "remove" => {
                remove(document, &path).map_err(not_applicable)?;
            }
            "replace" => {
                let slot = pointer_mut(document, &path).ok_or_else(|| {
                    not_applicable(format!("replace operation does not apply: doc is missing path: {}", render(&path)))
                })?;
                *slot = value()?;
            }
            "move" => {
                let moved = remove(document, &from()?).map_err(not_applicable)?;
                add(document, &path, moved).map_err(not_applicable)?;
            }
            "copy" => {
                let from = from()?;
                let copied = pointer(document, &from).cloned().ok_or_else(|| {
                    not_applicable(format!(
                        "copy operation does not apply: doc is missing from path: {}",
                        render(&from)
                    ))
                })?;
                add(document, &path, copied).map_err(not_applicable)?;
            }
            "test" => {
                let expected = value()?;
                if pointer(document, &path) != Some(&expected) {
                    return Err(not_applicable(format!("testing value {} failed: test failed", render(&path))));
                }
            }
            other => return Err(malformed(format!("unexpected kind of JSON patch operation: {other:?}"))),
        }
    }
    Ok(())
}

fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {pointer:?}: it must start with '/'"));
    };
    Ok(rest.split('/').map(|token| token.replace("~1", "/").replace("~0", "~")).collect())
}

fn render(tokens: &[String]) -> String {
    tokens.iter().map(|token| format!("/{}", token.replace('~', "~0").replace('/', "~1"))).collect()
}

/// Parses an array index token, which is digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn pointer<'a>(document: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(document, |current, token| match current {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token)?),
        _ => None,
    })
}

fn pointer_mut<'a>(document: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(document, |current, token| match current {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(array_index(token)?),
        _ => None,
    })
}

fn add(document: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_path)) = path.split_last() else {
        *document = value;
        return Ok(());
    };
    let missing = || format!("add operation does not apply: doc is missing path: {}", render(path));
    match pointer_mut(document, parent_path).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let index = array_index(last).filter(|index| *index <= items.len()).ok_or_else(missing)?;
            items.insert(index, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(document: &mut Value, path: &[String]) -> Result<Value, String> {
    let missing = || format!("remove operation does not apply: doc is missing path: {}", render(path));
    let (last, parent_path) = path.split_last().ok_or_else(missing)?;
    match pointer_mut(document, parent_path).ok_or_else(missing)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => {
            let index = array_index(last).filter(|index| *index < items.len()).ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// A field path such as `["spec", "cpu", "model"]`.
type FieldPath = Vec<String>;

/// Metadata fields the server owns; an applied configuration cannot take them over.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

/// Server-side apply, simplified.
///
/// The applied configuration is merged over `existing` with merge-patch rules, and
/// fields that this manager applied last time but omits now are removed, unless
/// another manager applied them too. The manager's field set is stored in
/// `metadata.managedFields` in the FieldsV1 format, and a later apply reads it to find
/// the fields to remove.
///
/// NOTE: every list is treated as atomic (kube-apiserver merges `listType: map` lists by
/// key), ownership conflicts between managers are never reported (no 409 without
/// `force`), and writes other than apply add no `Update` entries to `managedFields`.
pub(crate) fn apply(existing: Option<&Value>, applied: &Value, manager: &str, api_version: &str, now: &str) -> Value {
    let mut applied = applied.clone();
    if let Some(metadata) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    let applied_fields = field_paths(&applied);

    let mut result = existing.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let entries = managed_fields(&result);
    let previous = entries
        .iter()
        .find(|entry| is_apply_entry_of(entry, manager))
        .map(|entry| paths_from_fields_v1(entry.get("fieldsV1").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let kept_by_others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|entry| !is_apply_entry_of(entry, manager))
        .flat_map(|entry| paths_from_fields_v1(entry.get("fieldsV1").unwrap_or(&Value::Null)))
        .collect();
    for path in previous.difference(&applied_fields) {
        if !kept_by_others.contains(path) {
            remove_field(&mut result, path);
        }
    }
    merge_patch(&mut result, &applied);

    let mut entries: Vec<Value> = entries.into_iter().filter(|entry| !is_apply_entry_of(entry, manager)).collect();
    entries.push(serde_json::json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&applied_fields),
    }));
    if let Some(metadata) = result.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("managedFields".to_owned(), Value::Array(entries));
    }
    result
}

fn managed_fields(object: &Value) -> Vec<Value> {
    object.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn is_apply_entry_of(entry: &Value, manager: &str) -> bool {
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && entry.get("operation").and_then(Value::as_str) == Some("Apply")
}

/// Collects the leaf field paths an applied configuration sets; objects are descended into,
/// anything else (lists included) is one leaf.
fn field_paths(applied: &Value) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    if prefix.len() == 1 && prefix[0] == "metadata" && SERVER_METADATA.contains(&key.as_str()) {
                        continue;
                    }
                    prefix.push(key.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Value::Object(map) = applied {
        for (key, child) in map {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            let mut prefix = vec![key.clone()];
            walk(child, &mut prefix, &mut out);
        }
    }
    out.retain(|path| path.len() > 1 || path.first().is_some_and(|key| key != "metadata"));
    out
}

/// Renders paths as FieldsV1: `{"f:spec": {"f:cpu": {}}}`.
fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for key in path {
            let child = node.entry(format!("f:{key}")).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(child) = child else { break };
            node = child;
        }
    }
    Value::Object(root)
}

/// Reads FieldsV1 back into leaf paths; keys other than `f:` (list item keys, `.`) are skipped.
fn paths_from_fields_v1(fields: &Value) -> BTreeSet<FieldPath> {
    fn walk(node: &Map<String, Value>, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        for (key, child) in node {
            let Some(name) = key.strip_prefix("f:") else { continue };
            prefix.push(name.to_owned());
            match child {
                Value::Object(grandchildren) if grandchildren.keys().any(|key| key.starts_with("f:")) => {
                    walk(grandchildren, prefix, out);
                }
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Value::Object(root) = fields {
        walk(root, &mut Vec::new(), &mut out);
    }
    out
}

fn remove_field(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = object;
    for key in parents {
        match node.get_mut(key) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Value::Object(map) = node {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "list": [3]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "list": [3]}));

        let mut scalar = json!("text");
        merge_patch(&mut scalar, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(scalar, json!({"a": {"c": 1}}));
    }

    #[test]
    fn json_patch_operations_apply_in_order() {
        let mut document = json!({"spec": {"items": [1, 2]}, "old": true});
        let operations = json!([
            {"op": "test", "path": "/old", "value": true},
            {"op": "add", "path": "/spec/items/-", "value": 3},
            {"op": "add", "path": "/spec/items/0", "value": 0},
            {"op": "replace", "path": "/spec/name", "value": "x"},
            {"op": "remove", "path": "/old"},
        ]);
        assert_eq!(
            json_patch(&mut document, &operations),
            Err(JsonPatchError::NotApplicable(
                "replace operation does not apply: doc is missing path: /spec/name".into()
            ))
        );

        let mut document = json!({"spec": {"items": [1, 2]}, "old": true, "a~b/c": 1});
        let operations = json!([
            {"op": "test", "path": "/old", "value": true},
            {"op": "add", "path": "/spec/items/-", "value": 3},
            {"op": "add", "path": "/spec/items/0", "value": 0},
            {"op": "replace", "path": "/spec/items/1", "value": 10},
            {"op": "move", "from": "/old", "path": "/new"},
            {"op": "copy", "from": "/a~0b~1c", "path": "/copied"},
            {"op": "remove", "path": "/a~0b~1c"},
        ]);
        json_patch(&mut document, &operations).expect("patch applies");
        assert_eq!(document, json!({"spec": {"items": [0, 10, 2, 3]}, "new": true, "copied": 1}));
    }

    #[test]
    fn json_patch_test_failure_and_malformed_documents() {
        let mut document = json!({"a": 1});
        let failed = json_patch(&mut document, &json!([{"op": "test", "path": "/a", "value": 2}]));
        assert_eq!(failed, Err(JsonPatchError::NotApplicable("testing value /a failed: test failed".into())));
        assert!(matches!(json_patch(&mut document, &json!({"op": "add"})), Err(JsonPatchError::Malformed(_))));
        assert!(matches!(
            json_patch(&mut document, &json!([{"op": "jump", "path": "/a"}])),
            Err(JsonPatchError::Malformed(_))
        ));
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let first = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "1", "b": "2"}}, "spec": {"x": 1, "y": 2}});
        let stored = apply(None, &first, "hw-agent", "v1", "2025-01-01T00:00:00Z");
        assert_eq!(stored["spec"], json!({"x": 1, "y": 2}));
        assert_eq!(stored["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"], json!({"f:x": {}, "f:y": {}}));

        let second =
            json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "1"}}, "spec": {"x": 5}});
        let stored = apply(Some(&stored), &second, "hw-agent", "v1", "2025-01-01T00:00:01Z");
        assert_eq!(stored["spec"], json!({"x": 5}));
        assert_eq!(stored["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(stored["metadata"]["managedFields"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn apply_keeps_fields_another_manager_applied() {
        let mine = json!({"metadata": {"name": "n"}, "spec": {"x": 1}});
        let theirs = json!({"metadata": {"name": "n"}, "spec": {"x": 1, "z": 3}});
        let stored = apply(None, &mine, "a", "v1", "t");
        let stored = apply(Some(&stored), &theirs, "b", "v1", "t");
        let stored = apply(Some(&stored), &json!({"metadata": {"name": "n"}, "spec": {}}), "a", "v1", "t");
        assert_eq!(stored["spec"], json!({"x": 1, "z": 3}));
    }
}

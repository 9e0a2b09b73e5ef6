//! Label and field selectors and `continue` tokens of list requests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

#[derive(Debug, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`: comma-separated requirements that must all hold.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses the equality-based (`k=v`, `k==v`, `k!=v`) and set-based (`k`, `!k`,
    /// `k in (a,b)`, `k notin (a,b)`) forms.
    pub fn parse(selector: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(selector) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => label(key).is_some_and(|found| values.iter().any(|value| value == found)),
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|found| values.iter().any(|value| value == found))
            }
        })
    }
}

/// Splits on commas outside parentheses, so `k in (a,b),x=y` gives two requirements.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let invalid = || format!("unable to parse requirement: invalid label selector {part:?}");
    let key = |key: &str| -> Result<String, String> {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) { Err(invalid()) } else { Ok(key.to_owned()) }
    };
    if let Some(rest) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(rest)?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((name, values)) = part.split_once(operator) {
            let values = values.trim();
            let inner = values.strip_prefix('(').and_then(|values| values.strip_suffix(')')).ok_or_else(invalid)?;
            let values: Vec<String> = inner.split(',').map(|value| value.trim().to_owned()).collect();
            let name = key(name)?;
            return Ok(if negated { Requirement::NotIn(name, values) } else { Requirement::In(name, values) });
        }
    }
    if let Some((name, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key(name)?, value.trim().to_owned()));
    }
    if let Some((name, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key(name)?, value.trim().to_owned()));
    }
    Ok(Requirement::Exists(key(part)?))
}

/// A parsed `fieldSelector`: `field=value`, `field==value` or `field!=value` terms.
#[derive(Debug, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the selector, rejecting fields outside `supported` as kube-apiserver does.
    pub fn parse(selector: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (field, equal, value) = if let Some((field, value)) = part.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (field, true, value)
            } else {
                return Err(format!("invalid selector: {part:?}; expected field=value, field==value or field!=value"));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, expected)| (field_value(object, field) == *expected) == *equal)
    }
}

/// Returns the value of a dotted field as text for a field selector. A missing field gives "".
fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(value)) => value.clone(),
        Some(Value::Bool(value)) => value.to_string(),
        Some(Value::Number(value)) => value.to_string(),
        _ => String::new(),
    }
}

/// Encodes a `continue` token that resumes after `last_key`.
///
/// kube-apiserver's token is also base64 of JSON with the snapshot's resourceVersion
/// and the next key; clients treat it as opaque.
pub(crate) fn encode_continue(resource_version: &str, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": resource_version, "start": last_key});
    URL_SAFE_NO_PAD.encode(token.to_string())
}

/// Returns the key after which a continued list resumes.
pub(crate) fn decode_continue(token: &str) -> Result<String, String> {
    let invalid = |detail: String| format!("continue key is not valid: {detail}");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|error| invalid(error.to_string()))?;
    let value: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
    value
        .get("start")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid("the token has no start key".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn label_selector_forms_match() {
        let object = labelled(json!({"app": "agent", "tier": "node"}));
        let cases = [
            ("app=agent", true),
            ("app==agent", true),
            ("app!=agent", false),
            ("app", true),
            ("!app", false),
            ("missing", false),
            ("!missing", true),
            ("app=agent,tier=node", true),
            ("app=agent,tier=other", false),
            ("tier in (node, gpu)", true),
            ("tier notin (node,gpu)", false),
            ("tier in (gpu),app=agent", false),
            ("missing notin (a)", true),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).expect("valid selector");
            assert_eq!(parsed.matches(&object), expected, "selector {selector:?}");
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("x in a,b").is_err());
        assert!(LabelSelector::parse("=v").is_err());
    }

    #[test]
    fn field_selector_rejects_unknown_field() {
        let error = FieldSelector::parse("spec.foo=x", &["metadata.name"]).expect_err("unsupported field");
        assert_eq!(error, "field label not supported: spec.foo");
    }

    #[test]
    fn continue_token_round_trips() {
        let token = encode_continue("42", "/api/v1/nodes/b");
        assert_eq!(decode_continue(&token).expect("valid token"), "/api/v1/nodes/b");
        assert!(decode_continue("not base64!").is_err());
    }
}

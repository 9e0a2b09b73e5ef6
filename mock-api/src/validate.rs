//! Validation of `ComputationalAssetCreate` bodies with the error shapes of
//! the real server, which uses pydantic v1: a list of `{loc, msg, type}`
//! objects (plus `ctx` for limits), and silently ignored unknown keys.

use serde_json::{Map, Value, json};

/// One pydantic-style validation error.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub loc: Vec<Value>,
    pub msg: String,
    pub kind: &'static str,
    pub ctx: Option<Value>,
}

impl FieldError {
    fn new(loc: &[&str], msg: impl Into<String>, kind: &'static str) -> Self {
        let mut path = vec![Value::from("body")];
        path.extend(loc.iter().map(|part| Value::from(*part)));
        Self { loc: path, msg: msg.into(), kind, ctx: None }
    }

    pub fn to_json(&self) -> Value {
        let mut object = json!({"loc": self.loc, "msg": self.msg, "type": self.kind});
        if let Some(ctx) = &self.ctx {
            object["ctx"] = ctx.clone();
        }
        object
    }
}

/// String scalars and their maximum length in characters.
const STRING_FIELDS: &[(&str, usize)] = &[
    ("platform", 64),
    ("platform_resource_identifier", 256),
    ("name", 256),
    ("same_as", 256),
    ("version", 256),
    ("status_info", 256),
    ("type", 256),
    ("license", 256),
];

/// List-of-string relationship fields and each item's maximum length.
const STRING_LIST_FIELDS: &[(&str, usize)] = &[
    ("keyword", 256),
    ("alternate_name", 1800),
    ("relevant_link", 2000),
    ("application_area", 256),
    ("industrial_sector", 256),
    ("research_area", 256),
    ("scientific_domain", 256),
    ("falls_under_paradigm", 256),
    ("contact", 30),
    ("creator", 30),
    ("citation", 30),
    ("is_part_of", 30),
    ("has_part", 30),
    ("relevant_resource", 30),
    ("relevant_to", 30),
];

/// Lists of objects, kept as given after a shape check.
const OBJECT_LIST_FIELDS: &[&str] = &["distribution", "media", "note"];

const DESCRIPTION_MAX: usize = 65_535;

/// Validates a create (or full-replace) body and returns the normalised
/// fields to store: only known keys, `type` lowercased, keywords casefolded,
/// de-duplicated and sorted.
pub fn validate_create(body: &Value) -> Result<Map<String, Value>, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldError::new(&[], "value is not a valid dict", "type_error.dict")]);
    };
    let mut errors = Vec::new();
    let mut stored = Map::new();

    for (field, max) in STRING_FIELDS {
        match object.get(*field) {
            None | Some(Value::Null) if *field == "name" => {
                let (msg, kind) = if object.contains_key("name") {
                    ("none is not an allowed value", "type_error.none.not_allowed")
                } else {
                    ("field required", "value_error.missing")
                };
                errors.push(FieldError::new(&[field], msg, kind));
            }
            None | Some(Value::Null) => {}
            Some(value) => match string_value(value) {
                Some(text) if text.chars().count() > *max => errors.push(max_length(&[field], *max)),
                Some(text) => {
                    let text = if *field == "type" { text.to_lowercase() } else { text };
                    stored.insert((*field).to_owned(), Value::from(text));
                }
                None => errors.push(FieldError::new(&[field], "str type expected", "type_error.str")),
            },
        }
    }

    match object.get("is_accessible_for_free") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(flag)) => {
            stored.insert("is_accessible_for_free".to_owned(), Value::Bool(*flag));
        }
        Some(_) => errors.push(FieldError::new(
            &["is_accessible_for_free"],
            "value could not be parsed to a boolean",
            "type_error.bool",
        )),
    }

    match object.get("date_published") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if parse_datetime(text).is_some() => {
            stored.insert("date_published".to_owned(), Value::from(parse_datetime(text).unwrap_or_default()));
        }
        Some(_) => errors.push(FieldError::new(&["date_published"], "invalid datetime format", "value_error.datetime")),
    }

    match object.get("description") {
        None | Some(Value::Null) => {}
        // The real server accepts a string here and stores an empty
        // description: the text is lost without an error.
        Some(Value::String(_)) => {
            stored.insert("description".to_owned(), json!({}));
        }
        Some(Value::Object(description)) => {
            let mut kept = Map::new();
            for part in ["plain", "html"] {
                match description.get(part) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(text)) if text.chars().count() > DESCRIPTION_MAX => {
                        errors.push(max_length(&["description", part], DESCRIPTION_MAX));
                    }
                    Some(Value::String(text)) => {
                        kept.insert(part.to_owned(), Value::from(text.clone()));
                    }
                    Some(_) => {
                        errors.push(FieldError::new(&["description", part], "str type expected", "type_error.str"))
                    }
                }
            }
            stored.insert("description".to_owned(), Value::Object(kept));
        }
        Some(_) => errors.push(FieldError::new(&["description"], "value is not a valid dict", "type_error.dict")),
    }

    match object.get("aiod_entry") {
        None | Some(Value::Null) => {}
        Some(Value::Object(entry)) => {
            for key in entry.keys().filter(|key| key.as_str() != "editor") {
                errors.push(FieldError::new(&["aiod_entry", key], "extra fields not permitted", "value_error.extra"));
            }
            match string_list(entry.get("editor"), &["aiod_entry", "editor"], usize::MAX) {
                Ok(editors) => {
                    stored.insert("aiod_entry".to_owned(), json!({"editor": editors}));
                }
                Err(mut list_errors) => errors.append(&mut list_errors),
            }
        }
        Some(_) => errors.push(FieldError::new(&["aiod_entry"], "value is not a valid dict", "type_error.dict")),
    }

    for (field, max) in STRING_LIST_FIELDS {
        match string_list(object.get(*field), &[field], *max) {
            Ok(mut items) => {
                if *field == "keyword" {
                    items = items.into_iter().map(|item| item.to_lowercase()).collect();
                    items.sort();
                    items.dedup();
                } else if [
                    "application_area",
                    "industrial_sector",
                    "research_area",
                    "scientific_domain",
                    "falls_under_paradigm",
                ]
                .contains(field)
                {
                    items = items.into_iter().map(|item| item.to_lowercase()).collect();
                }
                stored.insert((*field).to_owned(), Value::from(items));
            }
            Err(mut list_errors) => errors.append(&mut list_errors),
        }
    }

    for field in OBJECT_LIST_FIELDS {
        match object.get(*field) {
            None | Some(Value::Null) => {
                stored.insert((*field).to_owned(), json!([]));
            }
            Some(Value::Array(items)) if items.iter().all(Value::is_object) => {
                stored.insert((*field).to_owned(), Value::Array(items.clone()));
            }
            Some(_) => errors.push(FieldError::new(&[field], "value is not a valid list", "type_error.list")),
        }
    }

    if errors.is_empty() { Ok(stored) } else { Err(errors) }
}

fn max_length(loc: &[&str], limit: usize) -> FieldError {
    let mut error = FieldError::new(
        loc,
        format!("ensure this value has at most {limit} characters"),
        "value_error.any_str.max_length",
    );
    error.ctx = Some(json!({"limit_value": limit}));
    error
}

/// pydantic v1 coerces numbers to strings for `str` fields.
fn string_value(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn string_list(value: Option<&Value>, loc: &[&str], max: usize) -> Result<Vec<String>, Vec<FieldError>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(vec![FieldError::new(loc, "value is not a valid list", "type_error.list")]),
    };
    let mut errors = Vec::new();
    let mut strings = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let index = index.to_string();
        let mut item_loc: Vec<&str> = loc.to_vec();
        item_loc.push(&index);
        match string_value(item) {
            Some(text) if text.chars().count() > max => errors.push(max_length(&item_loc, max)),
            Some(text) => strings.push(text),
            None => errors.push(FieldError::new(&item_loc, "str type expected", "type_error.str")),
        }
    }
    // pydantic reports list indices as integers.
    for error in &mut errors {
        for part in error.loc.iter_mut() {
            if let Some(number) = part.as_str().and_then(|text| text.parse::<u64>().ok()) {
                *part = Value::from(number);
            }
        }
    }
    if errors.is_empty() { Ok(strings) } else { Err(errors) }
}

/// Accepts ISO-8601 datetimes and stores them naive UTC, as the server does.
fn parse_datetime(text: &str) -> Option<String> {
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(parsed.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"].iter().find_map(|format| {
        chrono::NaiveDateTime::parse_from_str(text, format)
            .ok()
            .or_else(|| chrono::NaiveDate::parse_from_str(text, format).ok().and_then(|date| date.and_hms_opt(0, 0, 0)))
            .map(|parsed| parsed.format("%Y-%m-%dT%H:%M:%S").to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_missing_and_null() {
        let missing = validate_create(&json!({})).expect_err("name is required");
        assert_eq!(
            missing[0].to_json(),
            json!({"loc": ["body", "name"], "msg": "field required", "type": "value_error.missing"})
        );
        let null = validate_create(&json!({"name": null})).expect_err("name may not be null");
        assert_eq!(null[0].kind, "type_error.none.not_allowed");
    }

    #[test]
    fn name_too_long_has_ctx() {
        let errors = validate_create(&json!({"name": "x".repeat(257)})).expect_err("too long");
        assert_eq!(errors[0].ctx, Some(json!({"limit_value": 256})));
    }

    #[test]
    fn aiod_entry_extra_keys_rejected() {
        let errors = validate_create(&json!({"name": "x", "aiod_entry": {"editor": [], "status": "published"}}))
            .expect_err("extra key");
        assert_eq!(errors[0].loc, vec![json!("body"), json!("aiod_entry"), json!("status")]);
        assert_eq!(errors[0].kind, "value_error.extra");
    }

    #[test]
    fn normalisation_and_unknown_keys() {
        let stored = validate_create(&json!({
            "name": "x", "type": "Kubernetes Cluster", "keyword": ["GPU", "kubernetes", "gpu"], "surprise": 1
        }))
        .expect("valid");
        assert_eq!(stored["type"], json!("kubernetes cluster"));
        assert_eq!(stored["keyword"], json!(["gpu", "kubernetes"]));
        assert!(!stored.contains_key("surprise"));
    }

    #[test]
    fn string_description_is_lost() {
        let stored = validate_create(&json!({"name": "x", "description": "{\"a\":1}"})).expect("accepted");
        assert_eq!(stored["description"], json!({}));
    }
}

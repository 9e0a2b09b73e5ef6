//! `/submissions` and `/reviews`: how a user's draft becomes published. A
//! user submits drafts, a holder of `review_aiod_resources` accepts or
//! rejects the submission, and the submitter may retract it while it is
//! pending. Body and response shapes follow the upstream OpenAPI schemas
//! `SubmissionCreate`, `SubmissionBase`, `SubmissionView`, `ReviewCreate`
//! and `Review`.
//!
//! NOTE: submissions are kept in memory only, unlike assets; the asset
//! status changes they cause are stored. The 400 and 403 texts here were
//! not observed on the real server.

use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, Reply, Request, State, detail, detail_error, json_response, now, parse_body, storage_failure};
use crate::auth::Caller;
use crate::store::{Catalogue, Status, Submission, SubmissionReview, format_time};

const COMMENT_MAX: usize = 256;
const REVIEW_COMMENT_MAX: usize = 1800;

fn invalid(loc: &[&str], msg: &str, kind: &'static str) -> ApiError {
    let mut path = vec![json!("body")];
    path.extend(loc.iter().map(|part| json!(part)));
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: json!({"detail": [{"loc": path, "msg": msg, "type": kind}]}),
    }
}

fn comment(body: &Value, max: usize) -> Result<String, ApiError> {
    match body.get("comment") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) if text.chars().count() <= max => Ok(text.clone()),
        Some(Value::String(_)) => {
            let mut error = invalid(
                &["comment"],
                &format!("ensure this value has at most {max} characters"),
                "value_error.any_str.max_length",
            );
            error.body["detail"][0]["ctx"] = json!({"limit_value": max});
            Err(error)
        }
        Some(_) => Err(invalid(&["comment"], "str type expected", "type_error.str")),
    }
}

fn base(submission: &Submission) -> Value {
    json!({"identifier": submission.identifier, "request_date": format_time(submission.request_date), "comment": submission.comment})
}

fn review_json(review: &SubmissionReview, submission: u64) -> Value {
    json!({
        "identifier": review.identifier,
        "submission_identifier": submission,
        "decision": review.decision,
        "comment": review.comment,
        "decision_date": format_time(review.decision_date),
        "reviewer_identifier": review.reviewer,
    })
}

fn find_submission(catalogue: &Catalogue, identifier: &str) -> Result<usize, ApiError> {
    identifier
        .parse::<u64>()
        .ok()
        .and_then(|number| catalogue.submissions.iter().position(|submission| submission.identifier == number))
        .ok_or_else(|| {
            detail_error(StatusCode::NOT_FOUND, &format!("Submission '{identifier}' not found in the database."))
        })
}

/// Moves every asset of a submission to `status`, durably.
fn set_status(catalogue: &mut Catalogue, identifiers: &[String], status: Status) -> anyhow::Result<()> {
    for identifier in identifiers {
        if let Some(mut asset) = catalogue.get(identifier).cloned() {
            asset.status = status;
            asset.modified = now();
            catalogue.write_asset(asset)?;
        }
    }
    Ok(())
}

pub(super) fn submit(state: &State, request: &Request, caller: &Caller) -> Reply {
    let body = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return error.into(),
    };
    let identifiers: Vec<String> = match body.get("asset_identifiers") {
        Some(Value::Array(items))
            if !items.is_empty() && items.iter().all(|item| item.as_str().is_some_and(|text| !text.is_empty())) =>
        {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        None => return invalid(&["asset_identifiers"], "field required", "value_error.missing").into(),
        Some(_) => {
            return invalid(
                &["asset_identifiers"],
                "ensure this value has at least 1 items",
                "value_error.list.min_items",
            )
            .into();
        }
    };
    let comment = match comment(&body, COMMENT_MAX) {
        Ok(comment) => comment,
        Err(error) => return error.into(),
    };

    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    for identifier in &identifiers {
        let Some(asset) = catalogue.get(identifier).filter(|asset| asset.deleted.is_none()) else {
            return detail(StatusCode::NOT_FOUND, &format!("Asset '{identifier}' not found in the database."));
        };
        if asset.owner != caller.client_id {
            return detail(StatusCode::FORBIDDEN, &format!("You are not allowed to submit asset '{identifier}'."));
        }
        if !matches!(asset.status, Status::Draft | Status::Rejected) {
            return detail(
                StatusCode::BAD_REQUEST,
                &format!("Asset '{identifier}' is {} and cannot be submitted for review.", asset.status.as_str()),
            );
        }
    }
    if let Err(error) = set_status(&mut catalogue, &identifiers, Status::Submitted) {
        return storage_failure(&error);
    }
    let identifier = catalogue.submissions.iter().map(|submission| submission.identifier).max().unwrap_or(0) + 1;
    catalogue.submissions.push(Submission {
        identifier,
        owner: caller.client_id.clone(),
        asset_identifiers: identifiers,
        comment,
        request_date: now(),
        reviews: Vec::new(),
    });
    json_response(StatusCode::OK, &json!({"submission_identifier": identifier}))
}

/// Lists the caller's submissions. `mode` is `all` (default), `pending`,
/// `completed`, `oldest` or `newest` (the oldest or newest pending one).
pub(super) fn list(state: &State, request: &Request, caller: &Caller) -> Reply {
    let mode = request.query_map().get("mode").cloned().unwrap_or_else(|| "all".to_owned());
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let mut own = catalogue.submissions.iter().filter(|submission| submission.owner == caller.client_id);
    let selected: Vec<&Submission> = match mode.as_str() {
        "all" => own.collect(),
        "pending" => own.filter(|submission| submission.reviews.is_empty()).collect(),
        "completed" => own.filter(|submission| !submission.reviews.is_empty()).collect(),
        "oldest" => own.filter(|submission| submission.reviews.is_empty()).take(1).collect(),
        "newest" => own.rfind(|submission| submission.reviews.is_empty()).into_iter().collect(),
        _ => {
            return ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({"detail": [{
                    "loc": ["query", "mode"],
                    "msg": "value is not a valid enumeration member; permitted: 'all', 'pending', 'completed', 'oldest', 'newest'",
                    "type": "type_error.enum",
                }]}),
            }
            .into();
        }
    };
    json_response(StatusCode::OK, &Value::Array(selected.into_iter().map(base).collect()))
}

pub(super) fn get(state: &State, caller: &Caller, identifier: &str) -> Reply {
    let Ok(catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let index = match find_submission(&catalogue, identifier) {
        Ok(index) => index,
        Err(error) => return error.into(),
    };
    let submission = &catalogue.submissions[index];
    if submission.owner != caller.client_id && !caller.has_role("review_aiod_resources") {
        return detail(StatusCode::FORBIDDEN, "You are not allowed to view this submission.");
    }
    let mut view = base(submission);
    view["reviews"] = submission.reviews.iter().map(|review| review_json(review, submission.identifier)).collect();
    view["assets"] =
        submission.asset_identifiers.iter().filter_map(|id| catalogue.get(id)).map(|asset| asset.to_read()).collect();
    json_response(StatusCode::OK, &view)
}

pub(super) fn retract(state: &State, caller: &Caller, identifier: &str) -> Reply {
    decide(state, caller, identifier, "retracted", String::new())
}

pub(super) fn review(state: &State, request: &Request, caller: &Caller) -> Reply {
    if !caller.has_role("review_aiod_resources") {
        return detail(StatusCode::FORBIDDEN, "You do not have permission to review submissions.");
    }
    let body = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return error.into(),
    };
    let Some(submission) = body.get("submission_identifier").and_then(Value::as_u64) else {
        return invalid(&["submission_identifier"], "field required", "value_error.missing").into();
    };
    let decision = match body.get("decision").and_then(Value::as_str) {
        Some(decision @ ("accepted" | "rejected")) => decision.to_owned(),
        _ => {
            return invalid(
                &["decision"],
                "value is not a valid enumeration member; permitted: 'accepted', 'rejected', 'retracted'",
                "type_error.enum",
            )
            .into();
        }
    };
    let comment = match comment(&body, REVIEW_COMMENT_MAX) {
        Ok(comment) => comment,
        Err(error) => return error.into(),
    };
    decide(state, caller, &submission.to_string(), &decision, comment)
}

/// Records a decision on a pending submission and applies it to its assets:
/// accepted publishes them, rejected marks them rejected, retracted returns
/// them to draft. Only the submitter may retract.
fn decide(state: &State, caller: &Caller, identifier: &str, decision: &str, comment: String) -> Reply {
    let Ok(mut catalogue) = state.catalogue.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "catalogue state poisoned");
    };
    let index = match find_submission(&catalogue, identifier) {
        Ok(index) => index,
        Err(error) => return error.into(),
    };

    if decision == "retracted" && catalogue.submissions[index].owner != caller.client_id {
        return detail(StatusCode::FORBIDDEN, "You are not allowed to retract this submission.");
    }
    if !catalogue.submissions[index].reviews.is_empty() {
        return detail(StatusCode::BAD_REQUEST, &format!("Submission '{identifier}' has already been decided."));
    }
    let status = match decision {
        "accepted" => Status::Published,
        "rejected" => Status::Rejected,
        _ => Status::Draft,
    };
    let assets = catalogue.submissions[index].asset_identifiers.clone();
    if let Err(error) = set_status(&mut catalogue, &assets, status) {
        return storage_failure(&error);
    }

    let review_identifier =
        catalogue.submissions.iter().map(|submission| submission.reviews.len() as u64).sum::<u64>() + 1;
    let review = SubmissionReview {
        identifier: review_identifier,
        decision: decision.to_owned(),
        comment,
        decision_date: now(),
        reviewer: caller.client_id.clone(),
    };
    let submission = &mut catalogue.submissions[index];
    submission.reviews.push(review.clone());
    let response = if decision == "retracted" { Value::Null } else { review_json(&review, submission.identifier) };
    json_response(StatusCode::OK, &response)
}

//! The Tags API at a resource's scope: `PATCH {scope}/providers/Microsoft.Resources/tags/default`
//! with `operation` Merge, Replace or Delete (fixture `PatchTagsResource.json`). It edits
//! the stored resource's `tags` without a PUT of the resource, answers 200 with the full
//! set, and refuses more than 50 tags.
//!
//! The 2025-04-01 spec makes the PATCH long-running (`Tags_UpdateAtScope` is a custom async
//! patch; the example's 202 carries only a lower-case `location`,
//! `…/subscriptions/{s}/operationresults/{op}?api-version=2018-08-01`). With
//! [`super::FakeArmOptions::tags_accepted_every`] set, every n-th PATCH is answered that
//! way and the new tags appear only once the `location` has been polled to completion
//! (202 while in progress, then 204: the example documents no final body, so a client must
//! read the tags back), so a client that stops at the 202 leaves the resource untouched,
//! as it would in Azure.

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{Answer, Call, Operation, Shared};
use crate::host_emulator::new_guid;

/// The api-version in the example's `location` (ARM's own operation results).
const OPERATION_RESULTS_API: &str = "2018-08-01";

pub const MAX_TAGS: usize = 50;

pub(super) fn route(shared: &Shared, call: &Call<'_>) -> Answer {
    let lower = call.path.to_ascii_lowercase();
    let Some(at) = lower.find("/providers/microsoft.resources/tags/default") else {
        return Answer::not_found(call.path);
    };
    let scope = &call.path[..at];
    let mut w = shared.world();
    let Some(mut resource) = w.get(scope).cloned() else {
        return Answer::not_found(scope);
    };
    let tags_of = |r: &Value| r["tags"].as_object().cloned().unwrap_or_default();
    let answer = |tags: &Map<String, Value>| {
        Answer::json(
            200,
            json!({"id": format!("{scope}/providers/Microsoft.Resources/tags/default"), "name": "default",
            "type": "Microsoft.Resources/tags", "properties": {"tags": tags}}),
        )
    };
    match *call.method {
        Method::GET => answer(&tags_of(&resource)),
        Method::PATCH => {
            let body = match call.json_body() {
                Ok(b) => b,
                Err(a) => return a,
            };
            let given = body.pointer("/properties/tags").and_then(Value::as_object).cloned().unwrap_or_default();
            let mut tags = tags_of(&resource);
            match body["operation"].as_str().unwrap_or_default() {
                "Merge" => tags.extend(given),
                "Replace" => tags = given,
                "Delete" => tags.retain(|k, v| match given.get(k) {
                    None => true,
                    Some(g) => !(g.as_str() == Some("") || g == v),
                }),
                other => {
                    return Answer::error(
                        400,
                        "InvalidTagOperation",
                        format!("Operation '{other}' is not Merge, Replace or Delete."),
                    );
                }
            }
            if tags.len() > MAX_TAGS {
                return Answer::error(
                    400,
                    "InvalidTagCount",
                    format!("The resource would have {} tags; at most {MAX_TAGS} are allowed.", tags.len()),
                );
            }
            w.tag_patches += 1;
            let every = shared.options.tags_accepted_every;
            let subscription = scope.split('/').nth(2).filter(|_| lower.starts_with("/subscriptions/"));
            if let Some(sub) = subscription.filter(|_| every > 0 && w.tag_patches.is_multiple_of(every)) {
                let op = new_guid();
                w.operations.insert(
                    op.clone(),
                    Operation {
                        polls_left: shared.options.lro_polls,
                        // The example documents only the 202; the end of the operation is
                        // answered without a body, so the client reads the tags back.
                        result: None,
                        set_tags: Some((resource["id"].as_str().unwrap_or(scope).to_owned(), Value::Object(tags))),
                    },
                );
                let location = format!(
                    "{}/subscriptions/{sub}/operationresults/{op}?api-version={OPERATION_RESULTS_API}",
                    shared.base_url
                );
                return Answer::empty(202).with_header("location", location);
            }
            resource["tags"] = Value::Object(tags.clone());
            w.put(resource);
            answer(&tags)
        }
        _ => Answer::error(405, "MethodNotAllowed", "The sandbox supports GET and PATCH on tags."),
    }
}

//! The Tags API at a resource's scope: `PATCH {scope}/providers/Microsoft.Resources/tags/default`
//! with `operation` Merge, Replace or Delete (fixture `PatchTagsResource.json`). It edits
//! the stored resource's `tags` without a PUT of the resource, answers 200 with the full
//! set, and refuses more than 50 tags.

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{Answer, Call, Shared};

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
            resource["tags"] = Value::Object(tags.clone());
            w.put(resource);
            answer(&tags)
        }
        _ => Answer::error(405, "MethodNotAllowed", "The sandbox supports GET and PATCH on tags."),
    }
}

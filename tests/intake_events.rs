//! Intake parsing against the shared fixtures: Event Grid / CloudEvents events and the
//! custom-handler invocation payloads, including their documented quirks, plus a table of
//! malformed inputs that must each give a clean, readable rejection.

mod support;

use private_link_autopilot::intake::events::{
    Classified, EventOutcome, MAX_BATCH, PeEvent, PeEventKind, Rejection, Schema, parse_delivery, parse_event,
};
use private_link_autopilot::intake::protocol::{
    InvocationRequest, InvocationResponse, ProtocolError, decode_binary, decode_value,
};
use private_link_autopilot::model::ResourceId;
use serde_json::{Value, json};
use support::{fixture_bytes, fixture_json, shared_dir};

const PE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-spoke-1/providers/Microsoft.Network/privateEndpoints/pe-clickhouse";

fn single(value: &Value) -> EventOutcome {
    let mut outcomes = parse_delivery(value).expect("delivery accepted");
    assert_eq!(outcomes.len(), 1, "one event expected");
    outcomes.remove(0)
}

fn pe_event(outcome: EventOutcome) -> PeEvent {
    match outcome {
        Ok(Classified::PrivateEndpoint(pe)) => pe,
        other => panic!("expected a private endpoint event, got {other:?}"),
    }
}

fn ignored_reason(outcome: EventOutcome) -> &'static str {
    match outcome {
        Ok(Classified::Ignored { reason, .. }) => reason,
        other => panic!("expected Ignored, got {other:?}"),
    }
}

/// Turns an official storage-account example into the same event about a private endpoint,
/// keeping everything else (ids' casing, placeholders, envelope) as published.
fn as_private_endpoint(mut event: Value, verb: &str) -> Value {
    let swap = |s: &str| {
        s.replace("Microsoft.Storage/storageAccounts/{storage-name}", "Microsoft.Network/privateEndpoints/pe-x")
    };
    let data = event["data"].as_object_mut().expect("data object");
    data["operationName"] = json!(format!("Microsoft.Network/privateEndpoints/{verb}"));
    let uri = swap(data["resourceUri"].as_str().expect("resourceUri"));
    data["resourceUri"] = json!(uri);
    let subject = swap(event["subject"].as_str().expect("subject"));
    event["subject"] = json!(subject);
    event
}

#[test]
fn shared_dir_is_found() {
    assert!(shared_dir().join("fixtures/functions").is_dir());
}

#[test]
fn eventgrid_fixture_storage_write_is_ignored() {
    let event = fixture_json("eventgrid/resource_write_success.event-grid-schema.json");
    match single(&event) {
        Ok(Classified::Ignored { event_type, subject, reason }) => {
            assert_eq!(event_type, "Microsoft.Resources.ResourceWriteSuccess");
            assert!(subject.contains("storageAccounts"));
            assert_eq!(reason, "not a private endpoint operation");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn eventgrid_fixture_rewritten_to_pe_write_with_lowercase_resourcegroups() {
    let event = as_private_endpoint(fixture_json("eventgrid/resource_write_success.event-grid-schema.json"), "write");
    let pe = pe_event(single(&event));
    assert_eq!(pe.event_id, "4db48cba-50a2-455a-93b4-de41a3b5b7f6");
    assert_eq!(pe.kind, PeEventKind::Write);
    assert_eq!(pe.schema, Schema::EventGrid);
    assert_eq!(pe.event_time.as_deref(), Some("2018-07-19T18:38:04.6117357Z"));
    assert_eq!(pe.correlation_id.as_deref(), Some("{ID}"));
    assert_eq!(pe.operation_name, "Microsoft.Network/privateEndpoints/write");
    // The fixture spells `resourcegroups`; ids compare case-insensitively.
    let expected = ResourceId::parse_private_endpoint(
        "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.Network/privateEndpoints/pe-x",
    )
    .unwrap();
    assert_eq!(pe.endpoint, expected);
    assert!(pe.endpoint.as_str().contains("/resourcegroups/"));
}

#[test]
fn cloudevents_fixture_with_spec_version_camel_case() {
    let event = fixture_json("eventgrid/resource_delete_success.cloud-events-schema.json");
    assert!(event.get("specVersion").is_some(), "fixture quirk: specVersion");
    assert_eq!(ignored_reason(single(&event)), "not a private endpoint operation");

    let pe = pe_event(single(&as_private_endpoint(event, "delete")));
    assert_eq!(pe.kind, PeEventKind::Delete);
    assert_eq!(pe.schema, Schema::CloudEvents);
    assert_eq!(pe.event_id, "19a69642-1aad-4a96-a5ab-8d05494513ce");
    assert_eq!(pe.event_time.as_deref(), Some("2018-07-19T19:24:12.7638810Z"));
    assert_eq!(pe.endpoint.name(), "pe-x");
}

#[test]
fn functions_cloudevents_write_fixture() {
    let event = fixture_json("functions/eg-resource-write-success.cloud-events-schema.json");
    assert_eq!(ignored_reason(single(&event)), "not a private endpoint operation");
    let pe = pe_event(single(&as_private_endpoint(event, "write")));
    assert_eq!((pe.kind, pe.schema), (PeEventKind::Write, Schema::CloudEvents));
}

#[test]
fn functions_action_fixture() {
    let event = fixture_json("functions/eg-resource-action-success.event-grid-schema.json");
    assert_eq!(ignored_reason(single(&event)), "not a private endpoint operation");

    let mut pe_action = event.clone();
    pe_action["data"]["operationName"] = json!("Microsoft.Network/privateEndpoints/someAction/action");
    pe_action["data"]["resourceUri"] = json!(PE);
    let pe = pe_event(single(&pe_action));
    assert_eq!(pe.kind, PeEventKind::Action);
    assert_eq!(pe.event_id, "{ID}");
}

#[test]
fn subscription_validation_is_ignored() {
    let batch = fixture_json("functions/eg-subscription-validation-event.json");
    let reason = ignored_reason(single(&batch));
    assert!(reason.contains("validation"), "{reason}");
}

#[test]
fn failure_and_cancel_events_are_ignored() {
    for ty in ["Microsoft.Resources.ResourceWriteFailure", "Microsoft.Resources.ResourceDeleteCancel"] {
        let mut event = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
        event["eventType"] = json!(ty);
        assert!(ignored_reason(single(&event)).contains("failed or cancelled"));
    }
}

#[test]
fn event_type_matching_ignores_case() {
    let mut event = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    event["eventType"] = json!("microsoft.resources.resourcedeletesuccess");
    event["data"]["operationName"] = json!("MICROSOFT.NETWORK/PRIVATEENDPOINTS/DELETE");
    assert_eq!(pe_event(single(&event)).kind, PeEventKind::Delete);
}

#[test]
fn eventgrid_trigger_request_fixture_end_to_end() {
    let req = InvocationRequest::parse(&fixture_bytes("functions/eventgrid-trigger-request.json")).unwrap();
    let event = req.data_value("event").expect("event binding");
    let pe = pe_event(single(&event));
    assert_eq!(pe.endpoint, ResourceId::parse(PE).unwrap());
    assert_eq!(pe.event_id, "5c0c8f54-2b8e-4a1c-9f5e-0d7f1d0f6a11");
    assert_eq!(pe.correlation_id.as_deref(), Some("7e1d0a3b-2f0e-4c9a-8a51-9a0e0e6f7b21"));
    assert_eq!(req.metadata_value("data"), Some(event["data"].clone()));
    assert_eq!(req.metadata_str("sys").as_deref(), None, "sys is an object, not a string");

    // The same event without httpRequest (a real create may lack it) and as a string (old hosts).
    let mut bare = event.clone();
    bare["data"].as_object_mut().unwrap().remove("httpRequest");
    assert_eq!(pe_event(single(&bare)).kind, PeEventKind::Write);
    let once = Value::String(event.to_string());
    let twice = Value::String(once.to_string());
    assert_eq!(pe_event(single(&once)), pe);
    assert_eq!(pe_event(single(&twice)), pe);
    // `data` itself as JSON text.
    let mut data_as_text = event.clone();
    data_as_text["data"] = Value::String(event["data"].to_string());
    assert_eq!(pe_event(single(&data_as_text)), pe);
}

#[test]
fn third_party_eventgrid_trigger_request_is_ignored() {
    let req =
        InvocationRequest::parse(&fixture_bytes("functions/ch-eventgrid-trigger-request.azfunc-test.json")).unwrap();
    let event = req.data_value("event").unwrap();
    match single(&event) {
        Ok(Classified::Ignored { event_type, subject, .. }) => {
            assert_eq!(event_type, "created");
            assert_eq!(subject, "subject");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn private_dns_zone_group_write_maps_to_parent_pe() {
    let mut event = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    event["data"]["operationName"] = json!("Microsoft.Network/privateEndpoints/privateDnsZoneGroups/write");
    event["data"]["resourceUri"] = json!(format!("{PE}/privateDnsZoneGroups/default"));
    let pe = pe_event(single(&event));
    assert_eq!(pe.kind, PeEventKind::Write);
    assert_eq!(pe.endpoint.as_str(), PE);

    // A zone-group delete changes the PE's records too: still a Write of the parent.
    event["eventType"] = json!("Microsoft.Resources.ResourceDeleteSuccess");
    event["data"]["operationName"] = json!("Microsoft.Network/privateEndpoints/privateDnsZoneGroups/delete");
    assert_eq!(pe_event(single(&event)).kind, PeEventKind::Write);
}

#[test]
fn resource_uri_missing_falls_back_to_subject() {
    let mut event = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    event["data"].as_object_mut().unwrap().remove("resourceUri");
    assert_eq!(pe_event(single(&event)).endpoint.as_str(), PE);
}

#[test]
fn mixed_batch_keeps_good_events() {
    let good = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("id");
    let storage = fixture_json("eventgrid/resource_write_success.event-grid-schema.json");
    let validation = fixture_json("functions/eg-subscription-validation-event.json")[0].clone();
    let batch = json!([good, 7, storage, no_id, validation, Value::String(good.to_string())]);
    let outcomes = parse_delivery(&batch).unwrap();
    assert_eq!(outcomes.len(), 6);
    assert!(matches!(outcomes[0], Ok(Classified::PrivateEndpoint(_))));
    assert!(matches!(&outcomes[1], Err(r) if r.reason.contains("must be a JSON object")));
    assert!(matches!(outcomes[2], Ok(Classified::Ignored { .. })));
    assert!(matches!(&outcomes[3], Err(r) if r.reason.contains("no \"id\"")));
    assert!(matches!(outcomes[4], Ok(Classified::Ignored { .. })));
    assert!(matches!(outcomes[5], Ok(Classified::PrivateEndpoint(_))));

    // The whole batch double-encoded as one string.
    let encoded = Value::String(Value::String(batch.to_string()).to_string());
    assert_eq!(parse_delivery(&encoded).unwrap(), outcomes);
    assert_eq!(parse_delivery(&json!([])).unwrap(), vec![]);
}

#[test]
fn largest_batch_is_accepted() {
    let good = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    let batch = Value::Array(vec![good; MAX_BATCH]);
    let outcomes = parse_delivery(&batch).unwrap();
    assert_eq!(outcomes.len(), MAX_BATCH);
    assert!(outcomes.iter().all(|o| matches!(o, Ok(Classified::PrivateEndpoint(_)))));
}

fn base_event() -> Value {
    fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone()
}

fn with(mut event: Value, path: &[&str], value: Option<Value>) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = &mut event;
    for p in parents {
        cur = &mut cur[*p];
    }
    let obj = cur.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert((*last).to_string(), v);
        }
        None => {
            obj.remove(*last);
        }
    }
    event
}

fn cloud_event() -> Value {
    let mut e = base_event();
    let o = e.as_object_mut().unwrap();
    let ty = o.remove("eventType").unwrap();
    o.insert("type".into(), ty);
    o.insert("specversion".into(), json!("1.0"));
    e
}

/// Every malformed input: (label, input, expected substring of the reason, whole-delivery error?).
fn malformed_cases() -> Vec<(&'static str, Value, &'static str, bool)> {
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!({ "x": deep });
    }
    let mut too_many = Vec::with_capacity(MAX_BATCH + 1);
    too_many.resize(MAX_BATCH + 1, json!({}));
    let hostile_op = "Microsoft.Network/privateEndpoints/write\u{1b}[31m\n\r\u{7}".to_string() + &"A".repeat(3000);
    vec![
        ("number", json!(42), "got a number", true),
        ("null", Value::Null, "got null", true),
        ("bool", json!(true), "got a boolean", true),
        ("string that is not JSON", json!("hello"), "does not hold a JSON event", true),
        ("string holding a number", json!("12"), "does not hold a JSON event", true),
        ("batch too large", Value::Array(too_many), "at most 5000", true),
        ("huge string", Value::String("[".to_string() + &" ".repeat(5 * 1024 * 1024)), "byte limit", true),
        ("batch element not an object", json!([[1]]), "must be a JSON object, got an array", false),
        ("missing id", with(base_event(), &["id"], None), "no \"id\"", false),
        ("null id", with(base_event(), &["id"], Some(Value::Null)), "no \"id\"", false),
        ("empty id", with(base_event(), &["id"], Some(json!("  "))), "\"id\" is empty", false),
        ("numeric id", with(base_event(), &["id"], Some(json!(7))), "\"id\" must be a string, got a number", false),
        ("over-long id", with(base_event(), &["id"], Some(json!("i".repeat(5000)))), "longer than", false),
        (
            "id with control characters",
            with(base_event(), &["id"], Some(json!("a\u{0}b"))),
            "control characters",
            false,
        ),
        ("missing eventType", with(base_event(), &["eventType"], None), "no \"eventType\"", false),
        (
            "type without specversion",
            with(cloud_event(), &["specversion"], None),
            "neither Event Grid nor CloudEvents",
            false,
        ),
        ("cloud event without type", with(cloud_event(), &["type"], None), "no \"type\"", false),
        (
            "specversion 0.3",
            with(cloud_event(), &["specversion"], Some(json!("0.3"))),
            "unsupported CloudEvents",
            false,
        ),
        ("numeric specversion", with(cloud_event(), &["specversion"], Some(json!(1.0))), "must be the string", false),
        (
            "numeric eventType",
            with(base_event(), &["eventType"], Some(json!(1))),
            "\"eventType\" must be a string",
            false,
        ),
        ("empty eventType", with(base_event(), &["eventType"], Some(json!(""))), "is empty", false),
        ("array subject", with(base_event(), &["subject"], Some(json!([]))), "\"subject\" must be a string", false),
        ("over-long subject", with(base_event(), &["subject"], Some(json!("s".repeat(5000)))), "longer than", false),
        (
            "numeric eventTime",
            with(base_event(), &["eventTime"], Some(json!(5))),
            "\"eventTime\" must be a string",
            false,
        ),
        ("missing data", with(base_event(), &["data"], None), "has no \"data\"", false),
        ("numeric data", with(base_event(), &["data"], Some(json!(5))), "must be a JSON object, got a number", false),
        ("data text not an object", with(base_event(), &["data"], Some(json!("[1]"))), "does not hold one", false),
        ("missing operationName", with(base_event(), &["data", "operationName"], None), "operationName", false),
        (
            "numeric operationName",
            with(base_event(), &["data", "operationName"], Some(json!(3))),
            "\"operationName\" must be a string",
            false,
        ),
        (
            "resourceUri not an ARM id",
            with(base_event(), &["data", "resourceUri"], Some(json!("not-an-id"))),
            "not an ARM resource id",
            false,
        ),
        (
            "resourceUri with a newline",
            with(base_event(), &["data", "resourceUri"], Some(json!(format!("{PE}\n")))),
            "not an ARM resource id",
            false,
        ),
        (
            "PE operation on a storage account",
            with(
                base_event(),
                &["data", "resourceUri"],
                Some(json!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/sa")),
            ),
            "is not a private endpoint",
            false,
        ),
        (
            "PE operation without resourceUri or subject",
            with(with(base_event(), &["data", "resourceUri"], None), &["subject"], Some(json!(""))),
            "neither",
            false,
        ),
        (
            "numeric correlationId",
            with(base_event(), &["data", "correlationId"], Some(json!(9))),
            "\"correlationId\" must be a string",
            false,
        ),
        ("nesting too deep", with(base_event(), &["data", "claims"], Some(deep)), "nests deeper", false),
        (
            "hostile operationName on a non-PE resource",
            with(
                with(base_event(), &["data", "operationName"], Some(json!(hostile_op))),
                &["data", "resourceUri"],
                Some(json!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/x")),
            ),
            "is not a private endpoint",
            false,
        ),
    ]
}

#[test]
fn malformed_inputs_give_clean_rejections() {
    let cases = malformed_cases();
    assert!(cases.len() >= 20);
    for (label, input, expected, whole_delivery) in cases {
        let rejection: Rejection = if whole_delivery {
            match parse_delivery(&input) {
                Err(r) => r,
                Ok(o) => panic!("{label}: expected the delivery to be rejected, got {o:?}"),
            }
        } else {
            match parse_delivery(&input) {
                Ok(mut outcomes) if outcomes.len() == 1 => match outcomes.remove(0) {
                    Err(r) => r,
                    Ok(c) => panic!("{label}: expected a rejection, got {c:?}"),
                },
                other => panic!("{label}: expected one outcome, got {other:?}"),
            }
        };
        assert!(rejection.reason.contains(expected), "{label}: reason {:?} lacks {expected:?}", rejection.reason);
        assert!(
            !rejection.reason.chars().any(char::is_control),
            "{label}: control characters in {:?}",
            rejection.reason
        );
        assert!(rejection.reason.len() < 600, "{label}: reason too long ({} bytes)", rejection.reason.len());
        if let Some(id) = &rejection.event_id {
            assert!(id.chars().count() <= 121 && !id.chars().any(char::is_control), "{label}: event id {id:?}");
        }
        // Display is readable and names the event when known.
        let shown = rejection.to_string();
        assert!(shown.contains(&rejection.reason));
    }
}

#[test]
fn rejection_names_the_event() {
    let r = parse_event(&with(base_event(), &["data"], None)).unwrap_err();
    assert_eq!(r.event_id.as_deref(), Some("5c0c8f54-2b8e-4a1c-9f5e-0d7f1d0f6a11"));
    assert!(r.to_string().starts_with("event 5c0c8f54-2b8e-4a1c-9f5e-0d7f1d0f6a11: "));
}

#[test]
fn unknown_event_without_data_is_ignored_not_rejected() {
    // Only resource events need `data`; anything else is simply not ours.
    let event = json!({"id": "x", "eventType": "Contoso.Items.ItemReceived", "subject": "s"});
    assert!(matches!(single(&event), Ok(Classified::Ignored { .. })));
}

#[test]
fn every_request_fixture_parses() {
    let dir = shared_dir().join("fixtures/functions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("request") || !name.ends_with(".json") {
            continue;
        }
        let req = InvocationRequest::parse(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!req.data.is_empty(), "{name}: Data is empty");
        assert!(req.metadata.contains_key("sys"), "{name}: Metadata.sys missing");
        seen += 1;
    }
    assert!(seen >= 5, "expected the five request fixtures, saw {seen}");
}

#[test]
fn http_trigger_fixtures() {
    for file in ["functions/ch-http-trigger-request.captured.json", "functions/http-trigger-request.json"] {
        let req = InvocationRequest::parse(&fixture_bytes(file)).unwrap();
        let http = req.data_value("req").unwrap();
        assert_eq!(http["Method"], json!("GET"), "{file}");
        assert!(http["Query"].is_object(), "{file}: Query is an object on the wire");
        assert!(http.get("Body").is_none(), "{file}: no Body key without a body");
        assert!(http["Headers"]["Host"].is_array(), "{file}: Data headers are string arrays");
        assert!(req.metadata_value("Headers").unwrap()["Host"].is_string(), "{file}: Metadata headers are strings");
    }
}

#[test]
fn service_bus_fixture_single_and_double_encoded() {
    let bytes = fixture_bytes("functions/ch-servicebus-trigger-request.azfunc-test.json");
    let req = InvocationRequest::parse(&bytes).unwrap();
    let body = json!({"message": "hello", "number": 2});
    assert_eq!(req.data_value("queue"), Some(body.clone()), "single-encoded as in the fixture");
    assert_eq!(req.metadata_u64("DeliveryCount"), Some(1));
    assert_eq!(req.metadata_u64("SequenceNumber"), Some(1));
    assert_eq!(req.metadata_str("MessageId").as_deref(), Some("4e773554-f6b7-4ea2-b07d-4c5fd5aba741"));
    assert_eq!(req.metadata_str("LockToken").as_deref(), Some("4e773554-f6b7-4ea2-b07d-4c5fd5aba741"));
    assert_eq!(req.metadata_str("ContentType").as_deref(), Some("application/json"));
    assert_eq!(req.metadata_str("ExpiresAtUtc").as_deref(), Some("2023-10-12T20:13:49"));
    // The body's `message` property polluted the metadata (host behaviour).
    assert_eq!(req.metadata_str("message").as_deref(), Some("hello"));
    assert_eq!(req.metadata_value("Client").unwrap()["FullyQualifiedNamespace"], json!("namespace"));

    // What the host code actually sends: the body string JSON-encoded once more.
    let mut raw: Value = serde_json::from_slice(&bytes).unwrap();
    let once = raw["Data"]["queue"].as_str().unwrap().to_string();
    raw["Data"]["queue"] = Value::String(Value::String(once).to_string());
    let req2 = InvocationRequest::parse(raw.to_string().as_bytes()).unwrap();
    assert_eq!(req2.data_value("queue"), Some(body));
}

#[test]
fn decode_value_cases() {
    let cases = [
        (json!("\"abc\""), json!("abc")),
        (json!("abc"), json!("abc")),
        (json!("1"), json!("1")),
        (json!("\"1\""), json!("1")),
        (json!("true"), json!("true")),
        (json!(""), json!("")),
        (json!("\"\""), json!("")),
        (json!("{\"a\":[1,2]}"), json!({"a": [1, 2]})),
        (json!("\"{\\\"a\\\":1}\""), json!({"a": 1})),
        (json!("[\"a\",\"b\"]"), json!(["a", "b"])),
        (json!("  {\"a\":1}  "), json!({"a": 1})),
        (json!("{broken"), json!("{broken")),
        (json!(5), json!(5)),
        (Value::Null, Value::Null),
        (json!({"k": "\"v\""}), json!({"k": "\"v\""})),
    ];
    for (input, expected) in cases {
        assert_eq!(decode_value(&input), expected, "decode_value({input})");
    }
    assert_eq!(decode_binary(&json!("eyJwZSI6MX0=")), Some(b"{\"pe\":1}".to_vec()));
    assert_eq!(decode_binary(&json!("\"eyJwZSI6MX0=\"")), Some(b"{\"pe\":1}".to_vec()));
    assert_eq!(decode_binary(&json!("not base64!")), None);
    assert_eq!(decode_binary(&json!(1)), None);
}

#[test]
fn metadata_accessors_accept_every_form() {
    let req = InvocationRequest::parse(
        br#"{"Data":{},"Metadata":{"a":"1","b":1,"c":"\"abc\"","d":"abc","e":"\"7\"","f":-1,"g":{"x":1}}}"#,
    )
    .unwrap();
    assert_eq!(req.metadata_u64("a"), Some(1));
    assert_eq!(req.metadata_u64("b"), Some(1));
    assert_eq!(req.metadata_u64("e"), Some(7));
    assert_eq!(req.metadata_u64("f"), None);
    assert_eq!(req.metadata_u64("c"), None);
    assert_eq!(req.metadata_str("c").as_deref(), Some("abc"));
    assert_eq!(req.metadata_str("d").as_deref(), Some("abc"));
    assert_eq!(req.metadata_str("b").as_deref(), Some("1"));
    assert_eq!(req.metadata_str("g"), None);
    assert!(InvocationRequest::parse(br#"{"Data":{}}"#).unwrap().metadata.is_empty());
    assert!(InvocationRequest::parse(br#"{"Data":{},"Metadata":null}"#).unwrap().metadata.is_empty());
}

#[test]
fn protocol_errors_are_actionable() {
    let cases: Vec<(&[u8], &str)> = vec![
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"\"x\"", "got a string"),
        (br#"{"Metadata":{}}"#, "no \"Data\""),
        (br#"{"Data":5}"#, "\"Data\" must be a JSON object"),
        (br#"{"Data":{},"Metadata":[1]}"#, "\"Metadata\" must be a JSON object"),
        (br#"{"Data":"nope"}"#, "does not hold a JSON object"),
        (br#"{"Data":{},"DATA":{}}"#, "more than one key"),
    ];
    for (body, expected) in cases {
        let err = InvocationRequest::parse(body).unwrap_err();
        assert!(err.to_string().contains(expected), "{:?}: {err}", String::from_utf8_lossy(body));
    }
    assert!(matches!(InvocationRequest::parse(br#"{"Data":"{\"a\":1}"}"#), Ok(r) if r.data["a"] == json!(1)));
    let deep = format!("{{\"Data\":{}1{}}}", "[".repeat(1000), "]".repeat(1000));
    assert_eq!(InvocationRequest::parse(deep.as_bytes()), Err(ProtocolError::TooDeep));
}

#[test]
fn response_serialization() {
    let r = InvocationResponse::http(202, &json!({"accepted": 1}))
        .with_output("work", json!([{"pe": "x"}]))
        .with_log("queued 1 item");
    let text = String::from_utf8(r.to_json_bytes()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        json!({
            "Outputs": {
                "res": {"statusCode": 202, "body": "{\"accepted\":1}", "headers": {"Content-Type": "application/json"}},
                "work": [{"pe": "x"}]
            },
            "Logs": ["queued 1 item"],
            "ReturnValue": null
        })
    );
    assert!(text.starts_with('{'));
    assert_eq!(InvocationResponse::new().to_json_bytes(), br#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#);

    // The docs' response example reads back and re-serializes to the same JSON.
    let docs = fixture_json("functions/ch-response.docs-example.json");
    let parsed: InvocationResponse = serde_json::from_value(docs.clone()).unwrap();
    assert_eq!(parsed.logs, vec!["Log message 1", "Log message 2"]);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), docs);
}

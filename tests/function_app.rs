//! Validates the function-app definition that `autopilot package` ships: `host.json` and every
//! `handlers/*/function.json`, plus the app settings they rely on in `infra/main.bicep`.
//!
//! Why a test: the Functions host reads these files only after a deployment. A typo in a binding
//! (a second trigger, a five-field cron, a connection-string name instead of an identity prefix,
//! a `%SETTING%` nobody sets) is otherwise found in Azure, as a function that silently never
//! fires. Every rule below is one such failure; each check collects all problems and reports
//! them together, naming the file.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
}

/// `(folder name, parsed function.json)` for every function folder, sorted by name.
fn functions() -> Vec<(String, Value)> {
    let dir = root().join("handlers");
    let mut out: Vec<(String, Value)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("function.json").is_file())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let json = read_json(&entry.path().join("function.json")).unwrap_or_else(|e| panic!("{e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no handlers/*/function.json found");
    out
}

fn main_bicep() -> String {
    let path = root().join("infra/main.bicep");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Rules as small functions, so the negative cases can be unit-tested below.

const TRIGGER_TYPES: &[&str] = &[
    "httpTrigger",
    "eventGridTrigger",
    "serviceBusTrigger",
    "timerTrigger",
    "queueTrigger",
    "blobTrigger",
    "eventHubTrigger",
    "cosmosDBTrigger",
];
const OTHER_BINDING_TYPES: &[&str] = &["http", "serviceBus", "eventGrid", "queue", "blob", "eventHub", "table"];

/// `%NAME%` → `Some("NAME")`: a binding expression resolved from an app setting.
fn app_setting_reference(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('%')?.strip_suffix('%')?;
    let valid = !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(inner)
}

/// Checks one NCRONTAB expression: six fields (second minute hour day month day-of-week).
/// A five-field Unix cron is the classic mistake: the host rejects it at startup.
fn check_ncrontab(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "{expr:?}: NCRONTAB needs 6 fields (sec min hour day month weekday), found {}",
            fields.len()
        ));
    }
    const RANGES: [(&str, u32, u32); 6] =
        [("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 6)];
    for (field, (label, min, max)) in fields.iter().zip(RANGES) {
        for part in field.split(',') {
            check_cron_part(part, label, min, max).map_err(|e| format!("{expr:?}: {e}"))?;
        }
    }
    Ok(())
}

fn check_cron_part(part: &str, label: &str, min: u32, max: u32) -> Result<(), String> {
    let (range, step) = match part.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (part, None),
    };
    if let Some(step) = step {
        let step: u32 = step.parse().map_err(|_| format!("{label}: step {step:?} is not a number"))?;
        if step == 0 || step > max {
            return Err(format!("{label}: step {step} out of range"));
        }
    }
    if range == "*" {
        return Ok(());
    }
    let named = |v: &str| {
        v.len() == 3 && v.chars().all(|c| c.is_ascii_alphabetic()) && (label == "month" || label == "weekday")
    };
    let bounds: Vec<&str> = range.split('-').collect();
    if bounds.is_empty() || bounds.len() > 2 {
        return Err(format!("{label}: {part:?} is not a value, range or step"));
    }
    for bound in bounds {
        if named(bound) {
            continue;
        }
        let n: u32 = bound.parse().map_err(|_| format!("{label}: {bound:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{label}: {n} outside {min}-{max}"));
        }
    }
    Ok(())
}

/// `"[4.*, 5.0.0)"` → `(4, 5)`: the major versions of the bounds of an extension-bundle range.
fn bundle_range_majors(range: &str) -> Result<(u32, u32), String> {
    let inner = range
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("{range:?}: expected \"[<min>, <max>)\" (inclusive minimum, exclusive maximum)"))?;
    let (low, high) = inner.split_once(',').ok_or_else(|| format!("{range:?}: missing comma"))?;
    let major = |v: &str| -> Result<u32, String> {
        let head = v.trim().split('.').next().unwrap_or_default();
        head.parse().map_err(|_| format!("{range:?}: {v:?} has no major version"))
    };
    Ok((major(low)?, major(high)?))
}

/// Default of `param <name> <type> = '<value>'` in a Bicep file, if it is a string literal.
fn bicep_string_param_default(bicep: &str, name: &str) -> Option<String> {
    bicep.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("param ")?.strip_prefix(name)?.trim_start();
        let value = rest.strip_prefix("string")?.trim_start().strip_prefix('=')?.trim();
        Some(value.strip_prefix('\'')?.strip_suffix('\'')?.to_string())
    })
}

/// Right-hand side of `<setting>: <expression>` inside the app settings object of main.bicep.
fn bicep_setting_expression<'a>(bicep: &'a str, setting: &str) -> Option<&'a str> {
    bicep.lines().find_map(|line| line.trim().strip_prefix(setting)?.strip_prefix(':').map(str::trim))
}

/// Duration `hh:mm:ss` (host.json functionTimeout) in seconds.
fn hms_seconds(value: &str) -> Option<u64> {
    let parts: Vec<u64> = value.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [h, m, s] if *m < 60 && *s < 60 => Some(h * 3600 + m * 60 + s),
        _ => None,
    }
}

/// ISO 8601 `PT<n>M` / `PT<n>S` / `PT<n>M<n>S` (Service Bus lockDuration) in seconds.
fn iso_minutes_seconds(value: &str) -> Option<u64> {
    let rest = value.strip_prefix("PT")?;
    let (minutes, rest) = match rest.split_once('M') {
        Some((m, rest)) => (m.parse::<u64>().ok()?, rest),
        None => (0, rest),
    };
    let seconds = match rest.strip_suffix('S') {
        Some(s) => s.parse::<u64>().ok()?,
        None if rest.is_empty() => 0,
        None => return None,
    };
    Some(minutes * 60 + seconds)
}

// ---------------------------------------------------------------------------------------------
// host.json

#[test]
fn host_json_declares_the_rust_custom_handler() {
    let host = read_json(&root().join("host.json")).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    if host["version"] != "2.0" {
        problems.push(format!("version must be \"2.0\", found {}", host["version"]));
    }
    let description = &host["customHandler"]["description"];
    if description["defaultExecutablePath"] != "autopilot" {
        problems.push(format!(
            "customHandler.description.defaultExecutablePath must be \"autopilot\" (the binary `autopilot package` ships), found {}",
            description["defaultExecutablePath"]
        ));
    }
    if description["arguments"].as_array().and_then(|a| a.first()).and_then(Value::as_str) != Some("serve") {
        problems.push("customHandler.description.arguments must start with \"serve\"".into());
    }
    if host["extensionBundle"]["id"] != "Microsoft.Azure.Functions.ExtensionBundle" {
        problems.push(format!("extensionBundle.id is {}", host["extensionBundle"]["id"]));
    }
    match host["extensionBundle"]["version"].as_str().map(bundle_range_majors) {
        // Bundle 4 carries the Service Bus 5.x and Event Grid 3.x extensions, the first with
        // identity-based connections; the range must stop before the next major version.
        Some(Ok((low, high))) if low >= 4 && high == low + 1 => {}
        Some(Ok((low, high))) => {
            problems.push(format!("extensionBundle.version spans majors {low}..{high}; need [4.*, 5.0.0)"))
        }
        Some(Err(e)) => problems.push(format!("extensionBundle.version: {e}")),
        None => problems.push("extensionBundle.version missing".into()),
    }
    assert_no_problems("host.json", &problems);
}

/// A Service Bus message must stay locked for as long as the handler may work on it, or a second
/// instance receives it while the first is still reconciling.
#[test]
fn function_timeout_fits_in_the_service_bus_lock() {
    let host = read_json(&root().join("host.json")).unwrap_or_else(|e| panic!("{e}"));
    let timeout =
        host["functionTimeout"].as_str().and_then(hms_seconds).expect("host.json functionTimeout as hh:mm:ss");
    let servicebus = root().join("infra/modules/servicebus.bicep");
    let text = fs::read_to_string(&servicebus).unwrap_or_else(|e| panic!("{}: {e}", servicebus.display()));
    let lock = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("lockDuration:"))
        .map(|v| v.trim().trim_matches('\''))
        .and_then(iso_minutes_seconds)
        .expect("lockDuration: 'PT..' in servicebus.bicep");
    assert!(lock <= 300, "Service Bus caps lockDuration at 5 minutes, found {lock} s");
    assert!(timeout <= lock, "functionTimeout {timeout} s exceeds the queue lock {lock} s");
}

// ---------------------------------------------------------------------------------------------
// function.json

#[test]
fn every_binding_is_well_formed() {
    let mut problems = Vec::new();
    for (name, function) in functions() {
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            problems.push(format!("{name}: not a valid function name"));
        }
        let Some(bindings) = function["bindings"].as_array().filter(|b| !b.is_empty()) else {
            problems.push(format!("{name}: bindings must be a non-empty array"));
            continue;
        };
        for (i, binding) in bindings.iter().enumerate() {
            for key in ["type", "direction", "name"] {
                if binding[key].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{name}: binding {i} has no {key}"));
                }
            }
            let kind = binding["type"].as_str().unwrap_or_default();
            if !TRIGGER_TYPES.contains(&kind) && !OTHER_BINDING_TYPES.contains(&kind) {
                problems.push(format!("{name}: binding {i} has unknown type {kind:?}"));
            }
            let direction = binding["direction"].as_str().unwrap_or_default();
            if !["in", "out", "inout"].contains(&direction) {
                problems.push(format!("{name}: binding {i} has direction {direction:?}"));
            }
            if TRIGGER_TYPES.contains(&kind) && direction != "in" {
                problems.push(format!("{name}: trigger {kind} must have direction \"in\""));
            }
        }
    }
    assert_no_problems("function.json bindings", &problems);
}

#[test]
fn every_function_has_exactly_one_trigger() {
    let mut problems = Vec::new();
    for (name, function) in functions() {
        let triggers: Vec<&str> = function["bindings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["type"].as_str())
            .filter(|t| TRIGGER_TYPES.contains(t))
            .collect();
        if triggers.len() != 1 {
            problems.push(format!("{name}: {} triggers {triggers:?}; a function has exactly one", triggers.len()));
        }
    }
    assert_no_problems("triggers", &problems);
}

/// Without forwarding, the host answers an HTTP trigger from the `http` output binding; with no
/// such binding the caller gets an empty 204 whatever the handler returned.
#[test]
fn http_triggers_have_an_http_output_and_a_key() {
    let mut problems = Vec::new();
    for (name, function) in functions() {
        let bindings = function["bindings"].as_array().cloned().unwrap_or_default();
        for trigger in bindings.iter().filter(|b| b["type"] == "httpTrigger") {
            if !bindings.iter().any(|b| b["type"] == "http" && b["direction"] == "out") {
                problems.push(format!("{name}: httpTrigger without an http output binding"));
            }
            if !matches!(trigger["authLevel"].as_str(), Some("function" | "admin")) {
                problems.push(format!(
                    "{name}: httpTrigger authLevel must be function or admin, found {}",
                    trigger["authLevel"]
                ));
            }
        }
    }
    assert_no_problems("http triggers", &problems);
}

/// Service Bus triggers must use an identity-based connection: the `connection` value is a
/// prefix whose `__fullyQualifiedNamespace` app setting the infra sets (no connection string, no
/// SAS key anywhere), and the queue name must come from an app setting the infra sets too.
#[test]
fn service_bus_triggers_use_identity_connections_the_infra_sets() {
    let bicep = main_bicep();
    let mut problems = Vec::new();
    for (name, function) in functions() {
        for trigger in
            function["bindings"].as_array().into_iter().flatten().filter(|b| b["type"] == "serviceBusTrigger")
        {
            let connection = trigger["connection"].as_str().unwrap_or_default();
            if connection.is_empty() || connection == "AzureWebJobsServiceBus" || connection.contains("Endpoint=") {
                problems.push(format!(
                    "{name}: connection must name an identity-based setting prefix, found {connection:?}"
                ));
            } else {
                for suffix in ["fullyQualifiedNamespace", "credential", "clientId"] {
                    let setting = format!("{connection}__{suffix}");
                    if bicep_setting_expression(&bicep, &setting).is_none() {
                        problems.push(format!("{name}: infra/main.bicep does not set {setting}"));
                    }
                }
            }
            if trigger["isSessionsEnabled"] == true {
                problems.push(format!("{name}: the work queue is not session-enabled"));
            }
            match trigger["queueName"].as_str() {
                Some(queue) => match app_setting_reference(queue) {
                    Some(setting) if bicep_setting_expression(&bicep, setting).is_none() => problems
                        .push(format!("{name}: queueName {queue} names a setting infra/main.bicep does not set")),
                    Some(_) => {}
                    None => problems
                        .push(format!("{name}: queueName should be %SETTING% so infra owns the name, found {queue:?}")),
                },
                None => problems.push(format!("{name}: serviceBusTrigger without queueName")),
            }
        }
    }
    assert_no_problems("service bus triggers", &problems);
}

/// Timer schedules are six-field NCRONTAB, either literal or `%SETTING%` whose default in
/// infra/main.bicep is itself valid.
#[test]
fn timer_schedules_are_ncrontab() {
    let bicep = main_bicep();
    let mut problems = Vec::new();
    for (name, function) in functions() {
        for trigger in function["bindings"].as_array().into_iter().flatten().filter(|b| b["type"] == "timerTrigger") {
            let Some(schedule) = trigger["schedule"].as_str() else {
                problems.push(format!("{name}: timerTrigger without schedule"));
                continue;
            };
            let literal = match app_setting_reference(schedule) {
                None => Some(schedule.to_string()),
                Some(setting) => match bicep_setting_expression(&bicep, setting) {
                    None => {
                        problems
                            .push(format!("{name}: schedule {schedule} names a setting infra/main.bicep does not set"));
                        None
                    }
                    Some(expr) => match expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
                        Some(quoted) => Some(quoted.to_string()),
                        None => {
                            let default = bicep_string_param_default(&bicep, expr);
                            if default.is_none() {
                                problems.push(format!("{name}: {setting} = {expr}, which has no string default"));
                            }
                            default
                        }
                    },
                },
            };
            if let Some(Err(e)) = literal.as_deref().map(check_ncrontab) {
                problems.push(format!("{name}: {e}"));
            }
            if trigger["runOnStartup"] == true {
                problems.push(format!("{name}: runOnStartup fires on every scale-out and restart; keep it false"));
            }
        }
    }
    assert_no_problems("timer triggers", &problems);
}

// ---------------------------------------------------------------------------------------------
// The rules themselves, on inputs that must fail.

#[test]
fn ncrontab_rule_accepts_six_fields_and_rejects_the_rest() {
    for good in ["0 */15 * * * *", "0 0 2 * * Mon-Fri", "30 5 */2 1,15 Jan *", "0 0 0 1 1 0"] {
        assert!(check_ncrontab(good).is_ok(), "{good}: {:?}", check_ncrontab(good));
    }
    for bad in ["*/15 * * * *", "0 */15 * * * * *", "61 * * * * *", "0 0 24 * * *", "0 */0 * * * *", "0 x * * * *", ""]
    {
        assert!(check_ncrontab(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn helper_parsers_handle_their_formats() {
    assert_eq!(app_setting_reference("%AUTOPILOT_WORK_QUEUE%"), Some("AUTOPILOT_WORK_QUEUE"));
    assert_eq!(app_setting_reference("autopilot-work"), None);
    assert_eq!(app_setting_reference("%%"), None);
    assert_eq!(bundle_range_majors("[4.*, 5.0.0)"), Ok((4, 5)));
    assert!(bundle_range_majors("4.*").is_err());
    assert_eq!(hms_seconds("00:05:00"), Some(300));
    assert_eq!(hms_seconds("00:61:00"), None);
    assert_eq!(iso_minutes_seconds("PT5M"), Some(300));
    assert_eq!(iso_minutes_seconds("PT1M30S"), Some(90));
    assert_eq!(iso_minutes_seconds("P1D"), None);
    let bicep =
        "param sweepSchedule string = '0 */15 * * * *'\nvar s = {\n  AUTOPILOT_SWEEP_SCHEDULE: sweepSchedule\n}\n";
    assert_eq!(bicep_string_param_default(bicep, "sweepSchedule").as_deref(), Some("0 */15 * * * *"));
    assert_eq!(bicep_setting_expression(bicep, "AUTOPILOT_SWEEP_SCHEDULE"), Some("sweepSchedule"));
    assert_eq!(bicep_setting_expression(bicep, "AUTOPILOT_WORK_QUEUE"), None);
}

/// Many instances share one identity, and ARM's buckets are per principal and subscription
/// (reads 250 burst, writes 200 burst): a full scale-out's first wave of work items,
/// `maximumInstanceCount` × `maxConcurrentCalls`, must fit the smaller burst, so it is
/// answered without a 429; what follows at more than the refill rate meets 429s, which
/// are waited out (tests/many_instances.rs `four_instances_share_arms_budget`).
#[test]
fn scale_out_times_concurrency_fits_arms_buckets() {
    let host = read_json(&root().join("host.json")).unwrap_or_else(|e| panic!("{e}"));
    let per_instance = host["extensions"]["serviceBus"]["maxConcurrentCalls"].as_u64().expect(
        "host.json extensions.serviceBus.maxConcurrentCalls must be set (the default, 16 per instance, does not fit)",
    );
    let bicep = std::fs::read_to_string(root().join("infra/main.bicep")).unwrap();
    let instances: u64 = bicep
        .lines()
        .find_map(|l| l.trim().strip_prefix("param maximumInstanceCount int = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("infra/main.bicep: param maximumInstanceCount int = <n>");
    const ARM_WRITE_BURST: u64 = 200;
    assert!(
        instances * per_instance <= ARM_WRITE_BURST,
        "{instances} instances x {per_instance} concurrent calls = {} > ARM's write burst {ARM_WRITE_BURST}",
        instances * per_instance
    );
}

//! `autopilot sandbox` as a separate process, driven by others than our own ARM client:
//!
//! * Microsoft's official Python management clients (`tests/python/sdk_roundtrip.py`):
//!   if their generated models parse every answer and their pollers finish, the fake's
//!   wire shapes are ARM's. Without python3 or the packages the test skips with a note,
//!   except under `CI=true` where it fails (`.ci/run` installs them).
//! * `autopilot serve` started the way the Functions host starts it, configured only by
//!   the sandbox's `env`, with endpoints created by plain HTTP PUTs on the sandbox's ARM
//!   (no in-process seeding): a manual endpoint gets no record while Pending and its
//!   record once the target's owner approves; a vendor endpoint once the vendor approves
//!   (the sandbox's `x-sandbox` admin route); deletion (202, then 404) removes it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::host_emulator::{HostEmulator, spawn_handler};
use serde_json::{Value, json};

const NETWORK_API: &str = "2025-07-01";
const DNS_API: &str = "2024-06-01";
const KEYVAULT_API: &str = "2026-02-01";

/// The sandbox process; killed (by its own handle) when dropped.
struct SandboxProcess {
    child: Child,
    info: Value,
}

impl SandboxProcess {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
            .arg("sandbox")
            .env("AUTOPILOT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("autopilot sandbox starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut line).expect("first line");
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line is JSON ({e}): {line:?}"));
        Self { child, info }
    }

    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_else(|| panic!("{key} in {}", self.info)).to_owned()
    }

    /// Stops it like Ctrl-C would and checks it exits cleanly.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT");
        assert!(status.success());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "sandbox exit status {status}");
                return;
            }
            assert!(Instant::now() < until, "sandbox did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether python3 with the official clients is here; under CI its absence fails.
fn python_with_sdks() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import azure.core, azure.mgmt.network, azure.mgmt.privatedns"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !ci(),
            "CI=true: python3 with azure-mgmt-privatedns, azure-mgmt-network and azure-core is required \
             (`python3 -m pip install azure-mgmt-privatedns azure-mgmt-network azure-core`)"
        );
        eprintln!("note: skipping the official-SDK check (python3 or the azure-mgmt packages are missing)");
    }
    ok
}

#[test]
fn official_python_sdks_roundtrip_against_the_sandbox() {
    if !python_with_sdks() {
        return;
    }
    let sandbox = SandboxProcess::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_roundtrip.py");
    let mut py = Command::new("python3")
        .arg(&script)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    writeln!(py.stdin.take().unwrap(), "{}", sandbox.info).unwrap();
    let out = py.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sdk_roundtrip.py failed");
    assert!(stdout.contains("sdk roundtrip: all checks passed"));
    sandbox.interrupt();
}

/// Plain-HTTP client of the sandbox's ARM.
struct Arm {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Arm {
    async fn call(
        &self,
        method: reqwest::Method,
        path_or_url: &str,
        api: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}?api-version={api}", self.base)
        };
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("ARM answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// PUTs an endpoint and follows its `Azure-AsyncOperation` to Succeeded.
    async fn create_endpoint(&self, id: &str, body: Value) -> Value {
        let (status, headers, created) = self.call(reqwest::Method::PUT, id, NETWORK_API, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["properties"]["provisioningState"], "Updating");
        let op = headers.get("azure-asyncoperation").expect("Azure-AsyncOperation").to_str().unwrap().to_owned();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, _, body) = self.call(reqwest::Method::GET, &op, "", None).await;
            assert_eq!(s, 200, "{body}");
            if body["status"] == "Succeeded" {
                break;
            }
            assert!(Instant::now() < until, "operation never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, _, pe) = self.call(reqwest::Method::GET, id, NETWORK_API, None).await;
        assert_eq!(s, 200);
        assert_eq!(pe["properties"]["provisioningState"], "Succeeded");
        pe
    }

    async fn record(&self, zone_id: &str, name: &str) -> Option<Value> {
        let (s, _, body) = self.call(reqwest::Method::GET, &format!("{zone_id}/A/{name}"), DNS_API, None).await;
        (s == 200).then_some(body)
    }

    async fn wait_record(&self, zone_id: &str, name: &str, want: Option<&str>) -> Option<Value> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let rec = self.record(zone_id, name).await;
            let ips: Vec<String> = rec
                .as_ref()
                .and_then(|r| r.pointer("/properties/aRecords").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a["ipv4Address"].as_str().map(str::to_owned))
                .collect();
            let done = match want {
                Some(ip) => ips.iter().any(|i| i == ip),
                None => rec.is_none(),
            };
            if done {
                return rec;
            }
            assert!(Instant::now() < until, "record {name} in {zone_id}: want {want:?}, have {ips:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn nic_ip(pe: &Value) -> String {
    pe.pointer("/properties/customDnsConfigs/0/ipAddresses/0")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default()
}

async fn deliver(host: &HostEmulator, kind: ResourceEvent, id: &str) {
    let d = host.deliver_event_grid("PrivateEndpointEvents", vec![events::event_grid(kind, id)]).await;
    assert_eq!(d.status, 202, "{d:?}");
}

#[tokio::test]
async fn serve_with_the_sandbox_env_writes_records_once_approved() {
    let sandbox = SandboxProcess::start();
    let env: Vec<(String, String)> = sandbox.info["env"]
        .as_object()
        .expect("env object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    for key in ["AUTOPILOT__ARM__BASE_URL", "AUTOPILOT_ARM_STATIC_TOKEN", "AUTOPILOT__VENDORS__CLICKHOUSE__BASE_URL"] {
        assert!(env.iter().any(|(k, _)| k == key), "{key} in env");
    }
    for key in ["clickhouse_url", "elastic_url", "zilliz_url", "servicebus_url"] {
        assert!(sandbox.s(key).starts_with("http://127.0.0.1:"), "{key}");
    }
    let root = tempfile::tempdir().unwrap();
    let mut env = env;
    env.push(("AUTOPILOT__QUEUE__PATH".into(), root.path().join("queue.sqlite").display().to_string()));
    env.push(("AUTOPILOT_LOG".into(), "warn".into()));
    let handler = spawn_handler(Path::new(env!("CARGO_BIN_EXE_autopilot")), &["serve"], root.path(), &env)
        .await
        .expect("autopilot serve starts with the sandbox's env");
    let host = handler.host();
    let arm = Arm { http: reqwest::Client::new(), base: sandbox.s("arm_url"), token: sandbox.s("arm_token") };
    let spoke = &sandbox.info["spoke"];
    let (sub, rg) = (spoke["subscription"].as_str().unwrap(), spoke["resource_group"].as_str().unwrap());
    let pe_id = |name: &str| {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/privateEndpoints/{name}")
    };
    let subnet = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/app-vnet/subnets/pe"
    );

    // ARM refuses what it refuses.
    let (s, _, e) = arm.call(reqwest::Method::PUT, &pe_id("bad"), NETWORK_API, Some(json!({"properties": {}}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("LocationRequired")));
    let (s, _, _) = arm
        .call(
            reqwest::Method::PUT,
            &pe_id("bad"),
            NETWORK_API,
            Some(json!({"location": "eastus2", "properties": {"subnet": {"id": subnet}}})),
        )
        .await;
    assert_eq!(s, 400, "no connection");

    // A manual request to a Key Vault: Pending, so no record.
    let vault = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/kv-standalone");
    let kv_id = pe_id("pe-kv");
    let pe = arm
        .create_endpoint(
            &kv_id,
            json!({"location": "eastus2", "properties": {
                "subnet": {"id": subnet},
                "manualPrivateLinkServiceConnections": [{"name": "pe-kv", "properties": {
                    "privateLinkServiceId": vault, "groupIds": ["vault"], "requestMessage": "standalone test"}}]
            }}),
        )
        .await;
    let conn_state =
        "/properties/manualPrivateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status";
    assert_eq!(pe.pointer(conn_state).and_then(Value::as_str), Some("Pending"));
    let ip = nic_ip(&pe);
    assert!(!ip.is_empty(), "{pe}");
    let nic = pe.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str).unwrap().to_owned();
    let (s, _, nic_body) = arm.call(reqwest::Method::GET, &nic, NETWORK_API, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        nic_body.pointer("/properties/ipConfigurations/0/properties/privateIPAddress").and_then(Value::as_str),
        Some(ip.as_str())
    );

    let kv_zone = sandbox.info["zones"]["privatelink.vaultcore.azure.net"].as_str().unwrap().to_owned();
    deliver(&host, ResourceEvent::WriteSuccess, &kv_id).await;
    assert!(arm.record(&kv_zone, "kv-standalone").await.is_none(), "no record while Pending");

    // The vault's owner approves on the vault (the ARM route), then the event arrives.
    let (s, _, list) =
        arm.call(reqwest::Method::GET, &format!("{vault}/privateEndpointConnections"), KEYVAULT_API, None).await;
    assert_eq!(s, 200, "{list}");
    let conn = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c.pointer("/properties/privateEndpoint/id")
                .and_then(Value::as_str)
                .is_some_and(|i| i.eq_ignore_ascii_case(&kv_id))
        })
        .expect("the vault lists our connection")
        .clone();
    let approve =
        json!({"properties": {"privateLinkServiceConnectionState": {"status": "Approved", "description": "ok"}}});
    let (s, _, _) = arm.call(reqwest::Method::PUT, conn["id"].as_str().unwrap(), KEYVAULT_API, Some(approve)).await;
    assert_eq!(s, 200);
    deliver(&host, ResourceEvent::WriteSuccess, &kv_id).await;
    let rec = arm.wait_record(&kv_zone, "kv-standalone", Some(&ip)).await.unwrap();
    assert!(rec.pointer("/properties/metadata/managedby").is_some(), "owned by the product: {rec}");

    // A vendor endpoint (ClickHouse alias, manual): the vendor approves through the
    // sandbox's admin route; the product registers it with the fake vendor and writes
    // the regional wildcard.
    let ch_id = pe_id("pe-ch");
    let alias = sandbox.info["aliases"]["clickhouse"].as_str().unwrap().to_owned();
    let pe = arm
        .create_endpoint(
            &ch_id,
            json!({"location": "eastus2", "properties": {
                "subnet": {"id": subnet},
                "manualPrivateLinkServiceConnections": [{"name": "pe-ch", "properties": {"privateLinkServiceId": alias}}]
            }}),
        )
        .await;
    // An alias endpoint has no customDnsConfigs: its address is on the NIC.
    let ch_nic = pe.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str).unwrap().to_owned();
    let (_, _, ch_nic) = arm.call(reqwest::Method::GET, &ch_nic, NETWORK_API, None).await;
    let ch_ip = ch_nic
        .pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert_eq!(pe.pointer("/properties/manualPrivateLinkServiceConnections/0/properties/groupIds"), Some(&json!([])));
    deliver(&host, ResourceEvent::WriteSuccess, &ch_id).await;
    let (s, _, approved) = arm
        .call(
            reqwest::Method::PUT,
            &format!("{ch_id}/x-sandbox/connectionState"),
            NETWORK_API,
            Some(json!({"status": "Approved"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(approved.pointer(conn_state).and_then(Value::as_str), Some("Approved"));
    deliver(&host, ResourceEvent::WriteSuccess, &ch_id).await;
    // A re-PUT (e.g. a tag change) is an update: 200, same address, still Approved.
    let (s, _, updated) = arm
        .call(
            reqwest::Method::PUT,
            &ch_id,
            NETWORK_API,
            Some(json!({"location": "eastus2", "tags": {"team": "data"}, "properties": {
                "subnet": {"id": subnet},
                "manualPrivateLinkServiceConnections": [{"name": "pe-ch", "properties": {"privateLinkServiceId": alias}}]
            }})),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated.pointer(conn_state).and_then(Value::as_str), Some("Approved"));
    assert_eq!(updated["tags"]["team"], "data");
    assert_eq!(updated.pointer("/properties/networkInterfaces/0/id"), pe.pointer("/properties/networkInterfaces/0/id"));
    let ch_zone = sandbox.info["zones"]["eastus2.privatelink.azure.clickhouse.cloud"].as_str().unwrap().to_owned();
    arm.wait_record(&ch_zone, "*", Some(&ch_ip)).await;

    // Deleting: 202 with the operation's headers, then 404; the event removes the record.
    let (s, headers, _) = arm.call(reqwest::Method::DELETE, &kv_id, NETWORK_API, None).await;
    assert_eq!(s, 202);
    assert!(headers.contains_key("location") && headers.contains_key("azure-asyncoperation"));
    let (s, _, _) = arm.call(reqwest::Method::GET, &kv_id, NETWORK_API, None).await;
    assert_eq!(s, 404);
    let (s, _, _) = arm.call(reqwest::Method::GET, &nic, NETWORK_API, None).await;
    assert_eq!(s, 404, "the NIC goes with the endpoint");
    deliver(&host, ResourceEvent::DeleteSuccess, &kv_id).await;
    arm.wait_record(&kv_zone, "kv-standalone", None).await;

    drop(handler);
    sandbox.interrupt();
}

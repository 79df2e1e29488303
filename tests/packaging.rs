//! The deployable zip works the way the Functions host uses it: unpacked, the binary
//! named by host.json keeps its run bit, starts from the app root with
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, answers the readiness probe and handles an Event Grid
//! invocation end to end (against the fake ARM, through the host emulator).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, SANDBOX_TOKEN};
use autopilot_sandbox::harness::{HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP, SPOKE_SUBSCRIPTION};
use autopilot_sandbox::host_emulator::spawn_handler;
use private_link_autopilot::packaging;

const ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";

fn unzip(zip_path: &Path, into: &Path) {
    let file = std::fs::File::open(zip_path).expect("zip");
    let mut archive = zip::ZipArchive::new(file).expect("readable zip");
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let dest = into.join(entry.enclosed_name().expect("safe path"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        std::fs::write(&dest, bytes).unwrap();
        if let Some(mode) = entry.unix_mode() {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

#[tokio::test]
async fn unpacked_zip_runs_like_the_host_starts_it() {
    let out = tempfile::tempdir().unwrap();
    let zip = packaging::package(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        Path::new(env!("CARGO_BIN_EXE_autopilot")),
        out.path(),
    )
    .expect("package");
    let root = tempfile::tempdir().unwrap();
    unzip(&zip, root.path());

    let mut functions: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    functions.sort();
    let mut expected: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(functions, expected, "one folder per function");
    assert!(root.path().join("host.json").is_file());
    let exe = root.path().join("autopilot");
    let mode = std::fs::metadata(&exe).expect("binary named as host.json says").permissions().mode();
    assert!(mode & 0o111 != 0, "run bit kept: {mode:o}");

    let arm = FakeArm::start(FakeArmOptions::default()).await.unwrap();
    let zone_id = arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, ZONE);
    let pe = arm.put_endpoint(
        &EndpointSpec::alias(
            SPOKE_SUBSCRIPTION,
            SPOKE_RESOURCE_GROUP,
            "ch-packaged",
            "eastus2",
            "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice",
        )
        .approved(),
    );
    let env: Vec<(String, String)> = [
        ("AUTOPILOT__ARM__BASE_URL", arm.base_url()),
        ("AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION", HUB_SUBSCRIPTION.to_owned()),
        ("AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP", HUB_RESOURCE_GROUP.to_owned()),
        (
            "AUTOPILOT__CATALOG__VENDOR_ALIASES__CLICKHOUSE",
            r#"["production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice"]"#
                .to_owned(),
        ),
        ("AUTOPILOT_ARM_STATIC_TOKEN", SANDBOX_TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // The host runs `defaultExecutablePath` relative to the app root, with `arguments`.
    let mut handler = spawn_handler(Path::new("autopilot"), &["serve"], root.path(), &env).await.expect("ready");
    let host = handler.host();
    let delivery = host
        .deliver_event_grid("PrivateEndpointEvents", vec![events::event_grid(ResourceEvent::WriteSuccess, &pe)])
        .await;
    assert_eq!(delivery.status, 202, "{delivery:?}\nstderr: {:?}", handler.stderr_lines());
    assert!(arm.record(&zone_id, "*").is_some(), "the packaged handler wrote the record");
    // The embedded queue lives under the working directory the host gives it.
    assert!(root.path().join(".autopilot").is_dir());
    handler.kill().await.unwrap();
}

/// The fakes are their own crate (`sandbox/`), which the product library does not depend on
/// (`tests/layers.rs`); the binary `azure.yaml` deploys is built without the `sandbox` feature, so none of them
/// ship. Built here the same way (its own target directory, so the test's build is not
/// disturbed) and packaged; a string only the fakes contain (the fake ARM's admin route) is
/// absent from the packaged handler and present in the default build, which proves the probe.
#[test]
fn the_packaged_handler_contains_none_of_the_fakes() {
    let azure_yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("azure.yaml")).unwrap();
    assert!(
        azure_yaml.contains("cargo build --release --locked -p autopilot --no-default-features"),
        "azure.yaml must build without the fakes"
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("shipped");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--locked", "-p", "autopilot", "--no-default-features", "--bin", "autopilot"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build");
    assert!(status.success(), "the handler builds without the sandbox feature");
    let out = tempfile::tempdir().unwrap();
    let zip = packaging::package(Path::new(env!("CARGO_MANIFEST_DIR")), &target.join("debug/autopilot"), out.path())
        .expect("package");
    let unpacked = tempfile::tempdir().unwrap();
    unzip(&zip, unpacked.path());
    let contains = |path: &Path, needle: &[u8]| std::fs::read(path).unwrap().windows(needle.len()).any(|w| w == needle);
    let marker = b"x-sandbox";
    assert!(
        contains(Path::new(env!("CARGO_BIN_EXE_autopilot")), marker),
        "the probe finds the fakes in the default build"
    );
    assert!(!contains(&unpacked.path().join("autopilot"), marker), "the packaged handler ships no fake");
}

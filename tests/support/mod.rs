//! Helpers shared by the integration tests. Each test crate includes this with `mod support;`,
//! so helpers unused by one crate must not warn there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared project folder holding `fixtures/` and `reference/`.
///
/// Tried in order: `$AUTOPILOT_SHARED_DIR`, `<crate>/../shared`, `/work/shared`. Panics (this is
/// test code) with the list of places tried, so a missing checkout is obvious.
pub fn shared_dir() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("AUTOPILOT_SHARED_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("fixtures").is_dir() {
            return dir;
        }
        tried.push(dir);
    }
    for dir in [Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"), PathBuf::from("/work/shared")] {
        if dir.join("fixtures").is_dir() {
            return dir;
        }
        tried.push(dir);
    }
    panic!("shared fixtures not found; set AUTOPILOT_SHARED_DIR to the folder holding fixtures/ (tried {tried:?})");
}

/// A fixture file parsed as JSON, e.g. `fixture_json("functions/eventgrid-trigger-request.json")`.
pub fn fixture_json(relative: &str) -> serde_json::Value {
    let path = shared_dir().join("fixtures").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Raw bytes of a fixture file.
pub fn fixture_bytes(relative: &str) -> Vec<u8> {
    let path = shared_dir().join("fixtures").join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// An environment lookup over fixed pairs, for `from_config(cfg, &env)` in tests (the
/// product reads `std::env::var`; tests never touch the process environment).
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| map.get(k).cloned()
}

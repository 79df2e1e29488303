//! ARCHITECTURE.md's one rule, checked: imports in the product library (`src/`) point down
//! only (intake → app → runtime → queue → reconcile → effects → arm/catalog → model), and
//! the product never names the sandbox. Reads the sources as text: every `crate::<module>`
//! path outside `#[cfg(test)]` code and comments counts as an import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A module's layer: a file may import its own top-level module or any lower one.
fn rank(top: &str) -> Option<u32> {
    Some(match top {
        "main" | "doctor" | "ops" | "packaging" => 9,
        "intake" => 8,
        "app" | "config" => 7,
        "runtime" => 6,
        "queue" => 5,
        "reconcile" => 4,
        "effects" => 3,
        "arm" | "catalog" => 2,
        "telemetry" | "backoff" => 1,
        "model" => 0,
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its test module and without comments.
fn production_code(source: &str) -> String {
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    source.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

fn imported_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        let preceded_by_dollar = rest[..i].ends_with('$');
        if !name.is_empty() && !preceded_by_dollar {
            found.push(name);
        }
        rest = after;
    }
    found
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found the product's sources");
    let mut upward: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "lib.rs" {
            continue;
        }
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        let own = rank(&top).unwrap_or_else(|| panic!("{rel}: top-level module `{top}` has no layer in this test"));
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        for module in imported_modules(&code) {
            if module == top {
                continue;
            }
            if let Some(theirs) = rank(&module)
                && theirs > own
            {
                upward.entry(rel.clone()).or_default().push(module);
            }
        }
    }
    assert!(upward.is_empty(), "imports pointing up a layer (see ARCHITECTURE.md): {upward:#?}");
}

#[test]
fn the_product_never_names_the_sandbox() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        assert!(
            !code.contains("autopilot_sandbox") || file.ends_with("main.rs"),
            "{} names the sandbox",
            file.display()
        );
    }
    let product = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("product/Cargo.toml")).unwrap();
    assert!(!product.contains("autopilot-sandbox"), "the product library cannot depend on the sandbox");
}

#[test]
fn the_check_sees_an_upward_import() {
    let code = production_code(
        "use crate::runtime::Runtime;\n// crate::intake in a comment\nfn f() { crate::model::now_unix(); }\n",
    );
    assert_eq!(imported_modules(&code), ["runtime", "model"]);
    assert!(rank("runtime") > rank("reconcile"));
}

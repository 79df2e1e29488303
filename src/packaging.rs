//! Packaging: the deployable function-app layout that `func start --script-root <dir>`
//! and a zip deployment accept: `host.json`, one folder per function with its
//! `function.json`, and the handler binary under the name `host.json` gives, with its
//! execute bit.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Assembles `<out>/app/` and `<out>/autopilot-functionapp.zip`; returns the zip path.
pub fn package(source_root: &Path, binary: &Path, out: &Path) -> Result<PathBuf, String> {
    let host_json = fs::read_to_string(source_root.join("host.json")).map_err(|e| format!("host.json: {e}"))?;
    let host: serde_json::Value = serde_json::from_str(&host_json).map_err(|e| format!("host.json: {e}"))?;
    let exe = host
        .pointer("/customHandler/description/defaultExecutablePath")
        .and_then(|v| v.as_str())
        .ok_or("host.json has no customHandler.description.defaultExecutablePath")?;
    if !binary.is_file() {
        return Err(format!("binary {} not found: build it first (cargo build --release)", binary.display()));
    }
    let app = out.join("app");
    let _ = fs::remove_dir_all(&app);
    fs::create_dir_all(&app).map_err(|e| e.to_string())?;
    let mut files: Vec<(String, PathBuf, bool)> = vec![("host.json".into(), source_root.join("host.json"), false)];
    let handlers = source_root.join("handlers");
    let mut dirs: Vec<_> = fs::read_dir(&handlers)
        .map_err(|e| format!("{}: {e}", handlers.display()))?
        .filter_map(Result::ok)
        .filter(|d| d.path().join("function.json").is_file())
        .collect();
    dirs.sort_by_key(|d| d.file_name());
    for d in dirs {
        let name = d.file_name().to_string_lossy().to_string();
        files.push((format!("{name}/function.json"), d.path().join("function.json"), false));
    }
    files.push((exe.to_string(), binary.to_path_buf(), true));
    let zip_path = out.join("autopilot-functionapp.zip");
    let zip_file = fs::File::create(&zip_path).map_err(|e| format!("{}: {e}", zip_path.display()))?;
    let mut zip = zip::ZipWriter::new(zip_file);
    for (rel, src, executable) in files {
        let dest = app.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::copy(&src, &dest).map_err(|e| format!("{}: {e}", src.display()))?;
        let mode = if executable { 0o755 } else { 0o644 };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        }
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        zip.start_file(rel.as_str(), options).map_err(|e| e.to_string())?;
        zip.write_all(&fs::read(&src).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    zip.finish().map_err(|e| e.to_string())?;
    Ok(zip_path)
}

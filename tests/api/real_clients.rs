//! Real FHIR clients against the real server: the SMART Python client (fhirclient, whose R4
//! models check every answer strictly) and fhirpy, driven by `tests/clients/real_clients.py`.
//! The clients are installed from PyPI into a virtual environment under `target/` once.

use std::path::PathBuf;
use std::process::Command;
use std::sync::LazyLock;

use crate::backend_tests;
use crate::helpers::{TestApp, token_for};

backend_tests!(fhirclient_and_fhirpy_work_against_the_server);

const CLIENTS: &[&str] = &["fhirclient==4.4.0", "fhirpy==2.3.1"];

/// The virtual environment's Python, created on first use.
static PYTHON: LazyLock<PathBuf> = LazyLock::new(|| {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("py-clients");
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    if !ready.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap_or_else(|err| panic!("python3 -m venv: {err}"));
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(CLIENTS)
            .status()
            .unwrap_or_else(|err| panic!("pip install: {err}"));
        assert!(status.success(), "pip install {CLIENTS:?} failed");
        std::fs::write(&ready, CLIENTS.join("\n")).unwrap_or_default();
    }
    python
});

async fn fhirclient_and_fhirpy_work_against_the_server(app: TestApp) {
    let token = token_for(&app.data_dir, "system/*.cruds", None, None);
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/real_clients.py");
        Command::new(&*PYTHON)
            .arg(script)
            .arg(base)
            .arg(token)
            .output()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"))
    .unwrap_or_else(|err| panic!("cannot run the client script: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all checks passed"),
        "the real clients failed:\n{stdout}\n{stderr}"
    );
}

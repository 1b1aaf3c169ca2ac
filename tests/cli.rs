//! `sessiongate check` and start-up validation.

mod common;

use common::*;
use std::process::Command;

fn sessiongate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SESSIONGATE_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn shipped_config_checks_ok() -> TestResult {
    let out = sessiongate()
        .arg("check")
        .arg("--config")
        .arg(repo_path("config/sessiongate.toml"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("development"),
        "no development warning: {stderr}"
    );
    Ok(())
}

#[test]
fn bad_config_fails_naming_the_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(repo_path("config/sessiongate.toml"))?
        .replace("url = \"http://127.0.0.1:8081\"", "url = \"not a url\"");
    std::fs::write(&path, text)?;
    let out = sessiongate()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream.url"), "{stderr}");

    std::fs::write(&path, "[server]\nthreds = 2\n")?;
    let out = sessiongate()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("threds") && stderr.contains("line 2"),
        "{stderr}"
    );

    // `serve` refuses the same config before opening any listener.
    let out = sessiongate()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()?;
    assert!(!out.status.success());
    Ok(())
}

#[test]
fn env_overrides_apply_to_check() -> TestResult {
    let out = sessiongate()
        .arg("check")
        .arg("--config")
        .arg(repo_path("config/sessiongate.toml"))
        .env("SESSIONGATE_LISTEN", "not-an-address")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSIONGATE_LISTEN"));
    Ok(())
}

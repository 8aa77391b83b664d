//! Config hot reload: edits of the `--config` file apply without a
//! restart (token, retention, log level), invalid edits are refused with a
//! log line and the running config kept, and restart-only settings say so.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::TestBroker;

/// Replaces the file the way editors do: write a new file, rename it over.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(b: &TestBroker, token: &str) -> u16 {
    b.http
        .get(b.url("/listCategories"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn wait_until(what: &str, b: &TestBroker, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 15 s:\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_file_edits_apply_live_and_bad_edits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chunkbus.toml");
    write_config(&file, "token = \"first-token\"\n");
    let cfg = file.display().to_string();
    let b = TestBroker::start_logging_by_settings(&["--config", &cfg, "--max-chunk-size", "4KiB"]);
    assert_eq!(status(&b, "first-token"), 200);
    assert_eq!(status(&b, "second-token"), 401);

    // 1. The token changes without a restart.
    write_config(&file, "token = \"second-token\"\n");
    wait_until("token reload", &b, || status(&b, "second-token") == 200);
    assert_eq!(status(&b, "first-token"), 401);
    assert!(b.logs().contains("config reloaded"), "{}", b.logs());

    // 2. An invalid edit is refused as a whole: the old token still works.
    write_config(
        &file,
        "token = \"third-token\"\nretention_bytes = \"lots\"\n",
    );
    wait_until("refusal logged", &b, || {
        b.logs().contains("config file edit refused")
    });
    assert!(b.logs().contains("retention_bytes"), "{}", b.logs());
    assert_eq!(status(&b, "second-token"), 200);
    assert_eq!(status(&b, "third-token"), 401);

    // 3. Restart-only settings are reported and not applied.
    write_config(
        &file,
        "token = \"second-token\"\nmax_message_size = \"1KiB\"\n",
    );
    wait_until("restart warning", &b, || {
        b.logs().contains("only takes effect after a restart")
    });
    assert!(
        b.logs().contains("message and batch limits"),
        "{}",
        b.logs()
    );
    assert_eq!(status(&b, "second-token"), 200, "still served where it was");

    // 4. Retention changes live: sealed 4 KiB chunks beyond 8 KiB go.
    let body = "m".repeat(999) + "\n";
    for _ in 0..20 {
        let r = b
            .http
            .post(b.url("/write?category=r"))
            .bearer_auth("second-token")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let chunks = || -> usize {
        let r = b
            .http
            .get(b.url("/listChunks?category=r"))
            .bearer_auth("second-token")
            .send()
            .unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&r.text().unwrap())
            .unwrap()
            .len()
    };
    let before = chunks();
    assert!(before >= 5, "{before} chunks");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(chunks(), before, "no retention configured yet");
    write_config(
        &file,
        "token = \"second-token\"\nretention_bytes = \"8KiB\"\n",
    );
    wait_until("retention applied", &b, || chunks() <= 3);

    // 5. The log level changes live: debug lines appear.
    let refused = || {
        b.http
            .get(b.url("/no-such-path"))
            .bearer_auth("second-token")
            .send()
            .unwrap();
        b.logs().contains("request refused")
    };
    assert!(!refused(), "no debug lines at info");
    write_config(
        &file,
        "token = \"second-token\"\nretention_bytes = \"8KiB\"\nlog_level = \"debug\"\n",
    );
    wait_until("debug logging", &b, refused);
}

#[test]
fn an_invalid_config_file_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "log_level = \"chunkbus=loud\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_level"), "{err}");
}

//! Config hot reload: edits of the `--config` file apply without a
//! restart (token, retention, log level), invalid edits are refused with a
//! log line and the running config kept, and restart-only settings say so.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{free_port, TestBroker};

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

/// Waits until `node` lists `chunk` of `category` with `size` bytes.
fn wait_listed(node: &TestBroker, category: &str, chunk: &str, size: u64) {
    wait_until(&format!("{chunk} at {size} B"), node, || {
        node.chunks(category)
            .iter()
            .any(|c| c.name == chunk && c.size == size)
    });
}

fn peers_line(entries: &[(&str, u16)]) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect();
    format!("peers = \"{}\"\n", list.join(","))
}

#[test]
fn peers_added_and_removed_in_the_config_file_apply_live() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let file = |i: usize| tmp.path().join(format!("n{}.toml", i + 1));
    let start = |i: usize| {
        let (f, listen) = (
            file(i).display().to_string(),
            format!("127.0.0.1:{}", ports[i]),
        );
        let name = format!("n{}", i + 1);
        TestBroker::start_in(
            &tmp.path().join(&name),
            &["--config", &f, "--name", &name, "--listen", &listen],
        )
    };
    write_config(&file(0), &peers_line(&[("n2", ports[1])]));
    write_config(&file(1), &peers_line(&[("n1", ports[0])]));
    let n1 = start(0);
    let n2 = start(1);
    assert_eq!(n1.write("e", "a\n").0, 200);
    wait_listed(&n2, "e", "n1-chunk000000000", 2);
    // n3 joins: it knows n1 and n2, they do not know it yet.
    write_config(&file(2), &peers_line(&[("n1", ports[0]), ("n2", ports[1])]));
    let n3 = start(2);
    assert_eq!(n3.write("e", "c\n").0, 200);
    let (s, msg) = n1.post("/write?category=e&min_sync_replicas=2", "b\n");
    assert_eq!(s, 400, "one peer only: {msg}");
    // Add n3 on n1 and n2 by editing their files.
    write_config(&file(0), &peers_line(&[("n2", ports[1]), ("n3", ports[2])]));
    write_config(&file(1), &peers_line(&[("n1", ports[0]), ("n3", ports[2])]));
    wait_listed(&n1, "e", "n3-chunk000000000", 2);
    wait_listed(&n2, "e", "n3-chunk000000000", 2);
    // Peers only serve servers they list: n3 can pull from n1 only now.
    wait_listed(&n3, "e", "n1-chunk000000000", 2);
    let (s, msg) = n1.post("/write?category=e&min_sync_replicas=2", "b\n");
    assert_eq!(s, 200, "two peers now, both hold it: {msg}");
    assert!(n1.get_text("/peers").1.contains("\"n3\""));
    assert!(n1.logs().contains("peer added"), "{}", n1.logs());
    // Remove n3 from n1 again: n1 stops pulling n3's chunk.
    write_config(&file(0), &peers_line(&[("n2", ports[1])]));
    wait_until("n3 removed from n1", &n1, || {
        !n1.get_text("/peers").1.contains("\"n3\"")
    });
    assert_eq!(n3.write("e", "d\n").0, 200);
    wait_listed(&n2, "e", "n3-chunk000000000", 4);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        n1.chunks("e")
            .iter()
            .any(|c| c.name == "n3-chunk000000000" && c.size == 2),
        "n1 no longer replicates n3: {:?}",
        n1.chunks("e")
    );
    // Peers cannot be removed altogether without a restart.
    write_config(&file(0), "");
    wait_until("restart warning", &n1, || {
        n1.logs().contains("peers (to or from a single node)")
    });
    assert!(n1.get_text("/peers").1.contains("\"n2\""));
}

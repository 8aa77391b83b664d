//! The status page `GET /`, rendered by a real headless Chromium (Debian's
//! `chromium`, installed by `make test`): its script must fill in
//! categories, chunks (local and replicated), peers and consumer groups
//! from the live API.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{TestBroker, TestCluster};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The DOM after the page's script ran (up to 10 s of virtual time).
fn render(url: &str, profile: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    );
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders until the page says it loaded and `want` holds (the script
/// refreshes every 2 s; a replica may still be copying at first).
fn render_until(url: &str, want: impl Fn(&str) -> bool) -> String {
    let profile = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dom = render(url, profile.path());
        if dom.contains("data-loaded=\"1\"") && want(&dom) {
            return dom;
        }
        assert!(Instant::now() < deadline, "page never showed it:\n{dom}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn post(b: &TestBroker, path: &str, body: &'static str) {
    let r = b.http.post(b.url(path)).body(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
}

#[test]
fn status_page_shows_categories_chunks_groups_and_peers_in_chromium() {
    let c = TestCluster::start(2, &[]);
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    post(n1, "/write?category=orders", "o1\no2\no3\n");
    post(n2, "/write?category=payments", "p1\n");
    post(
        n2,
        "/ack?category=payments&consumer=billing&chunk=n2-chunk000000000&off=3",
        "",
    );
    c.converge("orders", Duration::from_secs(30), |l| {
        l.iter().any(|e| e.size == 9)
    });
    // The page is static and self-contained: no external assets.
    let html = n2.http.get(n2.url("/")).send().unwrap();
    assert_eq!(html.status().as_u16(), 200);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = html.text().unwrap();
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "no external URLs"
    );

    let dom = render_until(&n2.url("/"), |d| {
        d.contains("n1-chunk000000000") && d.contains("billing")
    });
    assert!(
        dom.contains("chunkbus <span id=\"server\">n2</span>"),
        "{dom}"
    );
    for want in [
        "orders",
        "payments",
        "n1-chunk000000000", // replicated from n1
        "n2-chunk000000000", // its own
        "class=\"replica\">replica",
        "class=\"local\">local",
        "billing",         // the consumer group
        "class=\"ok\">up", // peer n1 is up
    ] {
        assert!(dom.contains(want), "rendered page lacks {want:?}:\n{dom}");
    }
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "no refresh error shown: {dom}"
    );
}

#[test]
fn status_page_asks_for_the_token_and_shows_nothing_without_it() {
    let b = TestBroker::start(&["--token", "page-token"]);
    let r = b
        .http
        .post(b.url("/write?category=secret"))
        .bearer_auth("page-token")
        .body("x\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let profile = tempfile::tempdir().unwrap();
    let dom = render(&b.url("/"), profile.path());
    assert!(dom.contains("401"), "{dom}");
    assert!(!dom.contains("secret"), "no data without the token:\n{dom}");
    // The token form is shown.
    assert!(dom.contains("<form id=\"auth\">"), "{dom}");
}

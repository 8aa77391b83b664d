//! Issue #19: the Kafka wire protocol, proven with real Kafka clients no one
//! here wrote — Debian's `kcat` (librdkafka 2.0) and PyPI's `confluent-kafka`
//! (librdkafka 2.x) in the venv `make test-deps` creates — against the real
//! binary on 127.0.0.1. Every client run is bounded in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestBroker;

pub(crate) const KAFKA: &[&str] = &["--kafka-listen", "127.0.0.1:0"];

pub(crate) fn kafka(b: &TestBroker) -> String {
    b.kafka_addr
        .expect("ready.json names the kafka listener")
        .to_string()
}

/// The confluent-kafka venv's python (made by `make test-deps`).
fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/.venv/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: run `make test-deps` (creates the confluent-kafka venv)",
        p.display()
    );
    p
}

fn client_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/client.py")
}

/// Output of a finished client run.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` with `stdin`, killing it after `limit`.
fn run(mut cmd: Command, stdin: &str, limit: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (run `make test-deps`)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    run
}

pub(crate) fn kcat(args: &[&str], stdin: &str) -> Run {
    let mut c = Command::new("kcat");
    c.args(args);
    run(c, stdin, Duration::from_secs(30))
}

pub(crate) fn py(args: &[&str], stdin: &str) -> Run {
    let mut c = Command::new(python());
    c.arg(client_py()).args(args);
    run(c, stdin, Duration::from_secs(60))
}

pub(crate) fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// Values of `consume` output lines, in order.
pub(crate) fn values(out: &str) -> Vec<(i64, String)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["o"].as_i64().unwrap(),
                v["v"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn kcat_produces_with_every_codec_and_consumes_what_http_wrote() {
    let b = TestBroker::start(KAFKA);
    let k = kafka(&b);
    let (s, _) = b.write("orders", "from-http-1\nfrom-http-2\n");
    assert_eq!(s, 200);
    let mut want = vec!["from-http-1".to_owned(), "from-http-2".to_owned()];
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let body: String = (0..50).map(|i| format!("{codec}-{i}\n")).collect();
        let r = kcat(&["-b", &k, "-P", "-t", "orders", "-z", codec], &body);
        assert!(r.ok, "kcat -P -z {codec}: {}", r.stderr);
        want.extend(lines(&body));
    }
    let meta = kcat(&["-b", &k, "-L", "-t", "orders"], "");
    assert!(
        meta.ok && meta.stdout.contains("topic \"orders\" with 1 partitions"),
        "{}",
        meta.stdout
    );
    assert!(
        meta.stdout.contains(&format!("broker 0 at {k}")),
        "{}",
        meta.stdout
    );
    let r = kcat(
        &["-b", &k, "-C", "-t", "orders", "-e", "-f", "%o %s\\n"],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let got: Vec<(i64, String)> = r
        .stdout
        .lines()
        .map(|l| {
            let (o, v) = l.split_once(' ').unwrap();
            (o.parse().unwrap(), v.to_owned())
        })
        .collect();
    assert_eq!(got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), want);
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    // The same bytes over HTTP: one message per record.
    let http = String::from_utf8(b.read_all("orders")).unwrap();
    assert_eq!(lines(&http), want);
}

#[test]
fn confluent_kafka_acks_all_survives_kill9_with_the_same_offsets() {
    let mut b = TestBroker::start(KAFKA);
    let values_in: Vec<String> = (0..200).map(|i| format!("{{\"n\":{i}}}")).collect();
    let r = py(
        &["produce", &kafka(&b), "events", "--acks", "all"],
        &(values_in.join("\n") + "\n"),
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let reply: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let delivered: Vec<i64> = reply["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[1].as_i64().unwrap())
        .collect();
    assert_eq!(delivered.len(), 200);
    b.restart(); // kill -9, start again on the same data dir
    let r = py(&["consume", &kafka(&b), "events", "--count", "200"], "");
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let got = values(&r.stdout);
    assert_eq!(
        got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        values_in
    );
    let mut offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    let mut acked = delivered.clone();
    offsets.sort_unstable();
    acked.sort_unstable();
    assert_eq!(offsets, acked, "a record keeps its offset across a restart");
    // Written over Kafka, read over HTTP.
    assert_eq!(
        lines(&String::from_utf8(b.read_all("events")).unwrap()),
        values_in
    );
}

#[test]
fn records_a_message_cannot_hold_are_refused_and_nothing_is_stored() {
    let b = TestBroker::start(KAFKA);
    let k = kafka(&b);
    let r = kcat(&["-b", &k, "-P", "-t", "refused", "-K", ":"], "key:value\n");
    assert!(!r.ok, "a keyed record was accepted");
    assert!(r.stderr.contains("validate record"), "{}", r.stderr);
    assert_eq!(b.chunks("refused"), vec![], "nothing stored");
    let m = kcat(&["-b", &k, "-L", "-t", "bad.name"], "");
    assert!(
        m.stdout.contains("Broker: Invalid topic") || m.stderr.contains("Invalid topic"),
        "{}{}",
        m.stdout,
        m.stderr
    );
}

#[test]
fn a_waiting_fetch_returns_as_soon_as_http_writes() {
    let b = TestBroker::start(KAFKA);
    let k = kafka(&b);
    let writer = {
        let url = b.url("/write?category=live");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let at = Instant::now();
            let r = reqwest::blocking::Client::new()
                .post(url)
                .body("late\n")
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            at
        })
    };
    let r = py(
        &["consume", &k, "live", "--count", "1", "--timeout", "30"],
        "",
    );
    let done = Instant::now();
    let written = writer.join().unwrap();
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(values(&r.stdout)[0].1, "late");
    assert!(
        done - written < Duration::from_secs(5),
        "took {:?}",
        done - written
    );
}

/// Sends raw bytes on a fresh connection; returns what came back before
/// the server closed it (or 5 s passed).
pub(super) fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub(super) fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn bad_input_on_the_kafka_port_closes_only_that_connection() {
    let b = TestBroker::start(&["--kafka-listen", "127.0.0.1:0", "--max-batch-size", "64KiB"]);
    let addr = b.kafka_addr.unwrap();
    // A length prefix far over the limit: closed without an answer.
    assert!(raw(addr, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).is_empty());
    // Negative length, garbage, a truncated frame.
    assert!(raw(addr, &[0xff, 0xff, 0xff, 0xf0]).is_empty());
    assert!(raw(addr, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    assert!(raw(addr, &[0, 0, 0, 100, 0, 3, 0, 0]).is_empty());
    // An unknown API key and an unsupported version are answered with
    // UNSUPPORTED_VERSION (35) under the request's correlation id.
    for (key, version) in [(999i16, 0i16), (3, 99)] {
        let mut req = key.to_be_bytes().to_vec();
        req.extend_from_slice(&version.to_be_bytes());
        req.extend_from_slice(&0x1234_5678i32.to_be_bytes());
        req.extend_from_slice(&[0xff, 0xff]); // null client id
        let got = raw(addr, &frame(&req));
        assert!(
            got.len() >= 10,
            "no answer to api {key} v{version}: {got:?}"
        );
        assert_eq!(&got[4..8], &0x1234_5678i32.to_be_bytes());
        assert_eq!(&got[8..10], &35i16.to_be_bytes());
    }
    // Metadata v0 claiming two billion topics in a 16-byte frame: refused
    // before anything is allocated.
    let mut req = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    req.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    assert!(raw(addr, &frame(&req)).is_empty());
    let r = kcat(&["-b", &addr.to_string(), "-L"], "");
    assert!(r.ok, "the listener still serves: {}", r.stderr);
    assert_eq!(b.get("/healthz").0, 200);
}

#[test]
fn confluent_kafka_group_of_two_rebalances_on_leave_and_resumes_after_restart() {
    let mut b = TestBroker::start(KAFKA);
    let all: Vec<String> = (0..20).map(|i| format!("rec-{i}")).collect();
    let r = py(&["produce", &kafka(&b), "jobs"], &(all.join("\n") + "\n"));
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    // Two members; the one holding the partition reads and commits half,
    // then leaves; the other is assigned it and goes on from the commit.
    let r = py(
        &[
            "group2",
            &kafka(&b),
            "jobs",
            "--group",
            "workers",
            "--count",
            "20",
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let strings = |k: &str| -> Vec<String> {
        out[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (first, second) = (strings("first"), strings("second"));
    assert_eq!(first, all[..10], "{out}");
    assert_eq!(
        second,
        all[10..],
        "resumed exactly after the last commit: {out}"
    );
    let assigned: Vec<(String, Vec<i64>)> = out["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap())
                    .collect(),
            )
        })
        .collect();
    // Every assignment of the partition; it ends with the member that
    // stayed (possibly after a round where the first one kept it).
    let holders: Vec<&String> = assigned
        .iter()
        .filter(|(_, p)| p == &[0])
        .map(|(m, _)| m)
        .collect();
    assert!(holders.len() >= 2, "the partition moved: {assigned:?}");
    assert_ne!(
        holders.first(),
        holders.last(),
        "the partition moved: {assigned:?}"
    );
    // Commits are chunkbus group positions: HTTP sees the group caught up.
    let (s, body) = b.get_text("/consumers?category=jobs");
    assert_eq!(s, 200);
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups[0]["consumer"], "workers", "{body}");
    assert_eq!(groups[0]["lag_messages"], 0, "{body}");
    // More records, kill -9, restart: the group resumes after its commit.
    let more: Vec<String> = (20..25).map(|i| format!("rec-{i}")).collect();
    let r = py(&["produce", &kafka(&b), "jobs"], &(more.join("\n") + "\n"));
    assert!(r.ok, "{}", r.stderr);
    b.restart();
    let r = py(
        &[
            "consume",
            &kafka(&b),
            "jobs",
            "--count",
            "5",
            "--group",
            "workers",
            "--commit",
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let got: Vec<String> = values(&r.stdout).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, more);
}

#[test]
fn kcat_balanced_consumer_commits_and_a_rewind_is_refused() {
    let b = TestBroker::start(KAFKA);
    let k = kafka(&b);
    let (s, _) = b.write("feed", "one\ntwo\nthree\n");
    assert_eq!(s, 200);
    let r = kcat(
        &[
            "-b",
            &k,
            "-G",
            "kg",
            "-X",
            "auto.offset.reset=earliest",
            "feed",
            "-e",
            "-f",
            "%s\\n",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lines(&r.stdout), ["one", "two", "three"]);
    // kcat commits on close: a second run starts after "three".
    let (s, _) = b.write("feed", "four\n");
    assert_eq!(s, 200);
    let r = kcat(
        &[
            "-b",
            &k,
            "-G",
            "kg",
            "-X",
            "auto.offset.reset=earliest",
            "feed",
            "-e",
            "-f",
            "%s\\n",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lines(&r.stdout), ["four"]);
    // An HTTP ack behind what Kafka committed is refused: positions are one.
    let (s, body) = b.post(
        "/ack?category=feed&consumer=kg&chunk=node1-chunk000000000&off=4",
        "",
    );
    assert_eq!(s, 409, "{body}");
}

#[test]
fn with_tls_cert_the_kafka_listener_speaks_tls_only() {
    let pki = crate::tls::Pki::new();
    let mut args: Vec<String> = pki.server_args();
    args.extend(["--kafka-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let b = TestBroker::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let k = kafka(&b);
    let ca = pki.path("ca.pem").display().to_string();
    let tls = ["-X", "security.protocol=ssl", "-X"];
    let ca_opt = format!("ssl.ca.location={ca}");
    let with_tls = |rest: &[&str], stdin: &str| {
        let mut a = vec!["-b", k.as_str()];
        a.extend(tls);
        a.push(&ca_opt);
        a.extend(rest);
        kcat(&a, stdin)
    };
    let r = with_tls(&["-P", "-t", "secure"], "over-tls\n");
    assert!(r.ok, "{}", r.stderr);
    let r = with_tls(&["-C", "-t", "secure", "-e", "-f", "%s\\n"], "");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lines(&r.stdout), ["over-tls"]);
    // Plain Kafka on the TLS port gets nothing.
    let r = kcat(&["-b", &k, "-L", "-m", "3"], "");
    assert!(
        !r.ok,
        "plaintext metadata answered on a TLS listener: {}",
        r.stdout
    );
}

#[test]
fn with_a_token_kafka_clients_must_sasl_plain_with_it() {
    let b = TestBroker::start(&["--kafka-listen", "127.0.0.1:0", "--token", "s3cret-t0ken"]);
    let k = kafka(&b);
    let sasl = |password: &str, rest: &[&str], stdin: &str| {
        let pw = format!("sasl.password={password}");
        let mut a = vec![
            "-b",
            k.as_str(),
            "-X",
            "security.protocol=sasl_plaintext",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=anyone",
            "-X",
            &pw,
        ];
        a.extend(rest);
        kcat(&a, stdin)
    };
    let r = sasl("s3cret-t0ken", &["-P", "-t", "private"], "authorized\n");
    assert!(r.ok, "{}", r.stderr);
    let r = sasl(
        "s3cret-t0ken",
        &["-C", "-t", "private", "-e", "-f", "%s\\n"],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lines(&r.stdout), ["authorized"]);
    let r = sasl("wrong", &["-L", "-m", "3"], "");
    assert!(!r.ok, "a wrong password was accepted: {}", r.stdout);
    assert!(
        r.stderr.contains("Authentication failed") || r.stderr.contains("SASL"),
        "{}",
        r.stderr
    );
    let r = kcat(&["-b", &k, "-L", "-m", "3"], "");
    assert!(!r.ok, "metadata without SASL was answered: {}", r.stdout);
    // Nothing was written by the refused clients.
    let listed: serde_json::Value = b
        .http
        .get(b.url("/listChunks?category=private"))
        .bearer_auth("s3cret-t0ken")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed[0]["size"], "authorized\n".len(), "{listed}");
}

#[test]
fn kcat_consumes_every_partition_of_a_three_server_cluster_from_any_server() {
    let c = crate::harness::TestCluster::start(3, KAFKA);
    // Each server writes its own chunks: partition p = the p-th server.
    for (i, n) in c.nodes.iter().enumerate() {
        let body: String = (0..5).map(|j| format!("n{}-{j}\n", i + 1)).collect();
        assert_eq!(n.write("spread", body).0, 200);
    }
    c.converge("spread", Duration::from_secs(30), |l| {
        l.len() == 3 && l.iter().all(|e| e.size > 0)
    });
    for (i, n) in c.nodes.iter().enumerate() {
        let k = kafka(n);
        let meta = kcat(&["-b", &k, "-L", "-t", "spread"], "");
        assert!(meta.stdout.contains("with 3 partitions"), "{}", meta.stdout);
        let r = kcat(
            &["-b", &k, "-C", "-t", "spread", "-e", "-f", "%p %s\\n"],
            "",
        );
        assert!(r.ok, "{}", r.stderr);
        let mut got = lines(&r.stdout);
        got.sort();
        let mut want: Vec<String> = (0..3)
            .flat_map(|p| (0..5).map(move |j| format!("{p} n{}-{j}", p + 1)))
            .collect();
        want.sort();
        assert_eq!(got, want, "consumed from n{}", i + 1);
    }
    // Produced to n2 over Kafka: lands in n2's partition (1), seen on n1.
    let r = kcat(
        &["-b", &kafka(&c.nodes[1]), "-P", "-t", "spread", "-p", "1"],
        "via-kafka\n",
    );
    assert!(r.ok, "{}", r.stderr);
    c.converge("spread", Duration::from_secs(30), |l| {
        l.iter().map(|e| e.size).sum::<u64>() == 3 * 25 + 10
    });
    let r = kcat(
        &[
            "-b",
            &kafka(&c.nodes[0]),
            "-C",
            "-t",
            "spread",
            "-p",
            "1",
            "-e",
            "-f",
            "%s\\n",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        lines(&r.stdout).last().map(String::as_str),
        Some("via-kafka")
    );
}

//! The client crate against servers that misbehave: a server that accepts
//! requests and never answers must not hang a producer, a flush, a group
//! ack or the CLI (issue 20, defects 0 and 1).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use chunkbus_client::{Client, ClientError, Producer, ProducerConfig, ProducerError, WriteOptions};

/// A server on 127.0.0.1 that accepts connections, reads what they send
/// and never answers. Lives until the test process ends.
fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Fails the test instead of hanging when `f` does not finish in time.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_every_call() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));

    let t = Instant::now();
    let err = bounded("write", client.write("c", "a\n", WriteOptions::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!err.is_safe_to_resend(), "a timed-out write may be stored");
    assert!(err.is_retryable());

    let err = bounded(
        "group ack",
        client.ack_group("c", "g", "n1-chunk000000000", 2),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");

    // A long poll gets its wait on top of the request timeout.
    let t = Instant::now();
    let err = bounded(
        "long poll",
        client.read(
            "c",
            "n1-chunk000000000",
            0,
            1024,
            Some(Duration::from_millis(500)),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fails_stop_instead_of_hanging_on_a_silent_server() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));
    let producer = Producer::new(client, ProducerConfig::default());
    let lane = producer.category("c").unwrap();
    lane.send("one").await.unwrap();
    let err = bounded("flush", producer.flush()).await.unwrap_err();
    match &err {
        ProducerError::BatchFailed {
            maybe_stored,
            count,
            ..
        } => {
            assert!(*maybe_stored, "the server may have stored it: {err}");
            assert_eq!(*count, 1);
        }
        other => panic!("{other:?}"),
    }
    let err = bounded("close", producer.close()).await.unwrap_err();
    assert!(matches!(err, ProducerError::BatchFailed { .. }), "{err:?}");
}

#[test]
fn the_cli_producer_exits_with_an_error_when_answers_never_come() {
    let addr = stalling_server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args([
            "produce",
            "--server",
            &format!("http://{addr}"),
            "--category",
            "c",
            "--timeout",
            "500ms",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a\nb\nc\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chunkbus produce hung on a silent server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("may have been stored"), "{err}");
}

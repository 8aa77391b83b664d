//! The client crate against the real server binary.

use std::time::Duration;

use chunkbus_client::{Client, ClientError, WriteOptions};

use crate::harness::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_round_trip_list_read_ack() {
    let b = tokio::task::spawn_blocking(|| TestBroker::start(&["--max-chunk-size", "4096"]))
        .await
        .unwrap();
    let c = Client::new(&format!("http://{}", b.addr)).unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let body = format!("{i:03}-{}\n", "x".repeat(995));
        let r = c
            .write(
                "cl",
                body.clone(),
                WriteOptions {
                    sync: i % 2 == 0,
                    ..WriteOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.size, 1000);
        expected.extend_from_slice(body.as_bytes());
    }
    assert_eq!(c.list_categories().await.unwrap(), vec!["cl".to_owned()]);
    // Wait until all but the newest chunk are sealed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let chunks = loop {
        let chunks = c.list_chunks("cl").await.unwrap();
        if chunks.iter().rev().skip(1).all(|x| x.complete) {
            break chunks;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut got = Vec::new();
    for ch in &chunks {
        let mut off = 0;
        loop {
            let bytes = c
                .read("cl", &ch.name, off, 2500, Some(Duration::from_millis(20)))
                .await
                .unwrap();
            if bytes.is_empty() {
                break;
            }
            assert!(bytes.len() <= 2500 && bytes.ends_with(b"\n"));
            off += bytes.len() as u64;
            got.extend_from_slice(&bytes);
        }
        if ch.complete {
            c.ack_chunk("cl", &ch.name, ch.size).await.unwrap();
        }
    }
    assert_eq!(got, expected);
    assert_eq!(
        c.list_chunks("cl").await.unwrap().len(),
        1,
        "sealed chunks acked away"
    );
}

#[tokio::test]
async fn client_errors_are_typed() {
    let b = tokio::task::spawn_blocking(|| TestBroker::start(&[]))
        .await
        .unwrap();
    let c = Client::new(&format!("http://{}", b.addr)).unwrap();
    let e = c
        .write("bad/name", "x\n", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("invalid category"), "{e}");
    let e = c
        .write("ok", "no newline", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let e = c
        .read("ok", "node1-chunk000000000", 0, 10, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));

    let dead = Client::new("http://127.0.0.1:1").unwrap();
    let e = dead.list_categories().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Transport { .. }) && e.is_retryable(),
        "{e:?}"
    );
    // https:// is accepted, but without CA certificates a request is a
    // permanent TLS error, before anything is sent.
    let no_ca = Client::new("https://127.0.0.1:1").unwrap();
    let e = no_ca.list_categories().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Tls(_)) && !e.is_retryable() && !e.is_safe_to_resend(),
        "{e:?}"
    );
    assert!(Client::new("ftp://x").is_err());
    assert!(Client::new("https://").is_err());
}

//! Recovery against real files: the committed damaged chunks in
//! `testdata/recovery/`, and chunks written by the engine then torn at every
//! byte of their last batch. Also: a failed fdatasync makes the category
//! read-only (503), never a silent retry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chunkbus::config::StorageConfig;
use chunkbus::fsutil::FaultHook;
use chunkbus::names::{Category, ChunkName, ServerName};
use chunkbus::storage::chunk::format::BodyChecker;
use chunkbus::storage::chunk::ReadOutcome;
use chunkbus::storage::{Storage, StorageError};

fn open(dir: &Path, hook: FaultHook) -> Storage {
    Storage::open(
        dir,
        ServerName::parse("node1").unwrap(),
        StorageConfig::default(),
        hook,
    )
    .unwrap()
}

fn read_all(s: &Storage, cat: &str) -> Vec<u8> {
    let Some(log) = s.category(&Category::parse(cat).unwrap()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for info in log.list() {
        let chunk = log.chunk(&ChunkName::parse(&info.name).unwrap()).unwrap();
        let mut off = 0;
        // A small window exercises message-boundary cutting; widen it for long messages.
        loop {
            match chunk.read(off, 64) {
                Ok(ReadOutcome::Data(b)) => {
                    off += b.len() as u64;
                    out.extend_from_slice(&b);
                }
                Ok(ReadOutcome::Empty { .. }) => break,
                Err(StorageError::MaxSizeTooSmall { next_len, .. }) => {
                    match chunk.read(off, next_len).unwrap() {
                        ReadOutcome::Data(b) => {
                            off += b.len() as u64;
                            out.extend_from_slice(&b);
                        }
                        ReadOutcome::Empty { .. } => panic!("no data after MaxSizeTooSmall"),
                    }
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }
    out
}

fn append(
    s: &Storage,
    cat: &str,
    body: &[u8],
) -> Result<chunkbus::storage::Appended, StorageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(append_async(s, cat, body))
}

async fn append_async(
    s: &Storage,
    cat: &str,
    body: &[u8],
) -> Result<chunkbus::storage::Appended, StorageError> {
    let mut c = BodyChecker::new(1 << 20, 4 << 20);
    c.feed(body).unwrap();
    s.append(
        &Category::parse(cat).unwrap(),
        vec![Bytes::copy_from_slice(body)],
        c.finish().unwrap(),
    )
    .await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn committed_fixtures_recover_exactly_their_valid_prefix() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/recovery");
    let mut cases = 0;
    for case in std::fs::read_dir(&root).unwrap() {
        let case = case.unwrap().path();
        let expected = std::fs::read(case.join("expected.txt")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&case, tmp.path());
        std::fs::remove_file(tmp.path().join("expected.txt")).unwrap();
        for round in 0..3 {
            // Reopening must be idempotent: the first open repairs and seals.
            let s = open(tmp.path(), FaultHook::default());
            assert_eq!(
                read_all(&s, "events"),
                expected,
                "case {} round {round}",
                case.display()
            );
            let log = s.category(&Category::parse("events").unwrap()).unwrap();
            assert!(
                log.list().iter().all(|c| c.complete),
                "recovered chunks are sealed"
            );
        }
        let chunk = tmp.path().join("events/node1-chunk000000000");
        assert_eq!(
            std::fs::metadata(&chunk).unwrap().len(),
            expected.len() as u64,
            "trimmed to valid end"
        );
        // Writing continues in a new chunk; index 0 is never reused.
        let s = open(tmp.path(), FaultHook::default());
        let a = append(&s, "events", b"new\n").unwrap();
        assert_eq!(a.chunk.name().to_string(), "node1-chunk000000001");
        cases += 1;
    }
    assert!(cases >= 6, "fixtures present");
}

/// Writes three batches through the engine, "crashes" (drops the storage
/// without sealing), then damages the last batch at every byte offset in
/// three ways: zeroed tail, garbage tail, truncated file. Recovery must keep
/// exactly the first two batches, or all three when nothing was damaged.
#[test]
fn torn_last_batch_at_every_offset_keeps_the_valid_prefix() {
    let batches: [&[u8]; 3] = [
        b"first-message\n",
        b"second\nthird\n",
        b"the-last-batch-a\nthe-last-batch-b\n",
    ];
    let master = tempfile::tempdir().unwrap();
    {
        let s = open(master.path(), FaultHook::default());
        for b in batches {
            append(&s, "t", b).unwrap();
        }
        // No close(): the chunk stays unsealed, as after kill -9.
    }
    let prefix: Vec<u8> = batches[..2].concat();
    let full: Vec<u8> = batches.concat();
    let last_start = prefix.len();
    for cut in last_start..=full.len() {
        for mode in ["zero", "garbage", "truncate"] {
            let tmp = tempfile::tempdir().unwrap();
            copy_dir(master.path(), tmp.path());
            let _ = std::fs::remove_file(tmp.path().join(".chunkbus/lock"));
            let path = tmp.path().join("t/node1-chunk000000000");
            let mut bytes = std::fs::read(&path).unwrap();
            match mode {
                "zero" => bytes[cut..full.len()].fill(0),
                "garbage" => bytes[cut..full.len()].fill(b'\n'),
                _ => bytes.truncate(cut),
            }
            std::fs::write(&path, &bytes).unwrap();
            let s = open(tmp.path(), FaultHook::default());
            let got = read_all(&s, "t");
            let want = if cut == full.len()
                || (mode == "garbage" && full[cut..].iter().all(|&b| b == b'\n'))
            {
                &full
            } else {
                &prefix
            };
            assert_eq!(&got, want, "cut={cut} mode={mode}");
        }
    }
}

#[test]
fn index_cut_at_every_byte_keeps_whole_batches_only() {
    let master = tempfile::tempdir().unwrap();
    {
        let s = open(master.path(), FaultHook::default());
        for b in [&b"a\n"[..], b"bb\n", b"ccc\n"] {
            append(&s, "i", b).unwrap();
        }
    }
    let idx_path = master.path().join("i/node1-chunk000000000.idx");
    let idx = std::fs::read(&idx_path).unwrap();
    let ends = [0usize, 2, 5, 9];
    for cut in 0..=idx.len() {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(master.path(), tmp.path());
        std::fs::write(tmp.path().join("i/node1-chunk000000000.idx"), &idx[..cut]).unwrap();
        let s = open(tmp.path(), FaultHook::default());
        let f = chunkbus::storage::chunk::index::IndexFormat::CURRENT;
        let records = cut.saturating_sub(f.header_len()) / f.record_len();
        let want = &b"a\nbb\nccc\n"[..ends[records.min(3)]];
        assert_eq!(read_all(&s, "i"), want, "index cut at {cut}");
    }
}

#[tokio::test]
async fn failed_fdatasync_makes_category_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    // Chunk creation itself does not sync data; the first group commit fails.
    let s = Arc::new(open(tmp.path(), FaultHook::fail_syncs_after(0)));
    let a = append_async(&s, "f", b"x\n").await.unwrap();
    let err = s.wait_durable(&a).await.unwrap_err();
    assert!(matches!(err, StorageError::Failed { .. }), "{err}");
    let err = append_async(&s, "f", b"y\n").await.unwrap_err();
    assert!(
        matches!(err, StorageError::Failed { .. }),
        "later writes refused: {err}"
    );
    assert!(err.to_string().contains("read-only"), "{err}");
    // Reads still work.
    assert_eq!(read_all(&s, "f"), b"x\n");
}

#[test]
fn failed_fdatasync_is_503_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = chunkbus::config::Config::with_dir(dir.clone(), "127.0.0.1:0".parse().unwrap());
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(chunkbus::server::run_with_hook(
            config,
            async {
                let _ = rx.await;
            },
            FaultHook::fail_syncs_after(0),
            None,
        ))
    });
    let ready = dir.join(".chunkbus/ready.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "in-process server not ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let addr = info["addr"].as_str().unwrap().to_owned();
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("http://{addr}/write?category=f&sync=1"))
        .body("x\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers()["chunkbus-written"],
        "true",
        "the body was appended; only its fdatasync failed"
    );
    let msg = r.text().unwrap();
    assert!(
        msg.contains("read-only") && msg.contains("fdatasync"),
        "{msg}"
    );
    let r = http
        .post(format!("http://{addr}/write?category=f"))
        .body("y\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "stays read-only");
    assert_eq!(r.headers()["chunkbus-written"], "false", "refused up front");
    let r = http
        .get(format!(
            "http://{addr}/read?category=f&chunk=node1-chunk000000000&off=0&max_size=10"
        ))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "x\n", "reads still served");
    tx.send(()).unwrap();
    let result = server.join().unwrap();
    assert!(result.is_err(), "shutdown reports the failed seal");
}

/// Regression: two appends completing at once could publish their ends out
/// of order, so a chunk's readable end briefly moved backwards and a
/// consumer that had already read further got "offset beyond the end".
#[test]
fn published_end_never_moves_backwards_under_concurrent_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open(tmp.path(), FaultHook::default()));
    append(&s, "mono", b"first\n").unwrap();
    let chunk = s
        .category(&Category::parse("mono").unwrap())
        .unwrap()
        .chunk(&chunkbus::names::ChunkName::parse("node1-chunk000000000").unwrap())
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (chunk, stop) = (std::sync::Arc::clone(&chunk), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut last, mut regressions) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let end = chunk.state().end;
                if end < last {
                    regressions += 1;
                }
                last = last.max(end);
            }
            regressions
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = std::sync::Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                for i in 0..3000 {
                    append_async(&s, "mono", format!("w{w} m{i}\n").as_bytes())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        watcher.join().unwrap(),
        0,
        "the readable end went backwards"
    );
}

/// A chunk written before producer tags (index version 1) and left open by
/// a crash is recovered and sealed in version 1; writing goes on in a new
/// chunk in version 2; both read back.
#[test]
fn a_version_1_chunk_left_open_is_sealed_in_version_1_and_writing_goes_on_in_version_2() {
    use chunkbus::storage::chunk::index::{IndexFormat, Record};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = IndexFormat::V1;
    let mut idx = v1.header();
    let mut data = Vec::new();
    for b in [&b"one\n"[..], b"two\nthree\n"] {
        let r = Record::batch(data.len() as u64, b.len() as u32, crc32c::crc32c(b));
        idx.extend_from_slice(&r.encode(v1)[..16]);
        data.extend_from_slice(b);
    }
    // A torn third batch: bytes without a record.
    data.extend_from_slice(b"torn");
    std::fs::write(dir.join("node1-chunk000000000"), &data).unwrap();
    std::fs::write(dir.join("node1-chunk000000000.idx"), &idx).unwrap();
    let s = open(tmp.path(), FaultHook::default());
    assert_eq!(read_all(&s, "old"), b"one\ntwo\nthree\n");
    let sealed = std::fs::read(dir.join("node1-chunk000000000.idx")).unwrap();
    assert_eq!(
        sealed.len(),
        16 + 3 * 16,
        "two records and a seal, version 1"
    );
    assert_eq!(IndexFormat::detect(&sealed), Some(v1));
    assert!(Record::decode(v1, &sealed[48..]).is_seal());
    let a = append(&s, "old", b"four\n").unwrap();
    assert_eq!(a.chunk.name().to_string(), "node1-chunk000000001");
    let new_idx = std::fs::read(dir.join("node1-chunk000000001.idx")).unwrap();
    assert_eq!(IndexFormat::detect(&new_idx), Some(IndexFormat::V2));
    assert_eq!(read_all(&s, "old"), b"one\ntwo\nthree\nfour\n");
}

//! `tier`: tiering: the encode pipeline (zstd + AES-256-CTR + HMAC) per core,
//! ingest while every sealed chunk is being tiered, tiering throughput of
//! many small and a few large sealed chunks, and reads of a tiered 64 MiB
//! chunk from an S3-compatible server on loopback (s3s-fs, in this
//! process): first byte, cached re-read, full read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::Method;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::{make_body, Ctx};
use crate::load;
use crate::report::{mbps, row, spread};
use crate::servers::Chunkbus;

/// The `tier` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "tier",
    about: "tiering pipeline per core, ingest while tiering, tiered reads from S3 and a local dir",
    run: |ctx| Box::pin(run(ctx)),
};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const AK: &str = "AKIABENCH";
const SK: &str = "bench-secret";
const BUCKET: &str = "bench";

/// An s3s-fs server on loopback, on its own runtime thread.
struct S3Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    fn start(root: &std::path::Path) -> Result<Self> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        std::fs::create_dir_all(root.join(BUCKET))?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let root = root.to_path_buf();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(fs) = s3s_fs::FileSystem::new(&root) else {
                    return;
                };
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
                let service = b.build();
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    let sock = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut rx => break,
                    };
                    // As a real S3 endpoint would: no Nagle delay on
                    // small responses.
                    let _ = sock.set_nodelay(true);
                    let svc = service.clone();
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(sock), svc)
                            .await;
                    });
                }
            });
        });
        Ok(Self {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// JSON event lines with varied fields (compresses like real logs, unlike
/// the bench's filler messages).
fn event_lines(len: usize) -> Vec<u8> {
    const EVENTS: [&str; 6] = ["view", "click", "purchase", "signup", "logout", "search"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 256);
    let mut ts = 1_764_000_000_000u64;
    while out.len() < len {
        ts += next() % 50;
        let line = format!(
            "{{\"ts\":{ts},\"user\":\"u{}\",\"event\":\"{}\",\"value\":{},\"session\":\"{:016x}\"}}\n",
            next() % 100_000,
            EVENTS[(next() % 6) as usize],
            next() % 10_000,
            next()
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

async fn tiered_count(addr: SocketAddr) -> Result<u64> {
    let mut c = Conn::open(addr).await?;
    let (_, body) = c.fetch(Method::GET, "/tier", Bytes::new()).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["tiered_chunks"].as_u64().unwrap_or(0))
}

/// The tiering rows.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (reps, warmup, dur) = (ctx.plan.reps, ctx.plan.warmup, ctx.plan.dur);
    let smoke = dur < Duration::from_secs(1);

    // 1. Pipeline per core: encode 64 MiB of the bench's messages on one
    //    thread (compress + encrypt + MAC), then decode it.
    let chunk_len = if smoke { 4 << 20 } else { 64 << 20 };
    let plain = event_lines(chunk_len);
    let keys = chunkbus::tier::keys::Keys::parse(KEY).map_err(anyhow::Error::msg)?;
    let ring = chunkbus::tier::keys::KeyRing::new(keys.clone(), Vec::new());
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    let mut ratio = 0.0;
    let id = chunkbus::tier::format::Identity {
        category: "bench",
        chunk: "node1-chunk000000000",
    };
    for _ in 0..reps {
        let t = Instant::now();
        let obj = chunkbus::tier::encode::encode(
            &plain,
            &[],
            &keys,
            [7; 16],
            id,
            1,
            chunkbus::tier::format::DEFAULT_FRAME_SIZE,
        )?;
        enc.push(plain.len() as f64 / t.elapsed().as_secs_f64());
        ratio = plain.len() as f64 / obj.len() as f64;
        let t = Instant::now();
        let (back, _) = chunkbus::tier::format::decode_all(&obj, &ring, id)?;
        dec.push(plain.len() as f64 / t.elapsed().as_secs_f64());
        if back != plain {
            bail!("tier round trip differs");
        }
    }
    let enc = spread(enc);
    note!("tier encode: {} per core", mbps(enc[1]));
    ctx.rows.push(row(
        "tiering pipeline, 1 core: zstd-1 + AES-256-CTR + HMAC-SHA-256, 1 MiB frames, JSON event lines",
        enc,
        "MB/s",
        None,
        &format!(
            "decode (verify + decrypt + decompress) {}; compression ratio {ratio:.1}×",
            mbps(spread(dec)[1])
        ),
    ));

    // 2. Ingest while every sealed chunk is tiered (local dir store).
    let mut rates = Vec::new();
    let mut tiered = 0;
    for rep in 0..reps {
        let dir = ctx.work.join(format!("tier-ingest-{rep}"));
        let s = Chunkbus::start(
            &ctx.bin,
            &dir,
            &["--tier-after", "1ms", "--encryption-key", KEY],
        )?;
        let r = load::post_loop(
            s.addr,
            1,
            "/write?category=bench",
            ctx.body.clone(),
            4,
            warmup,
            dur,
        )
        .await?;
        if r.errors > 0 {
            bail!(
                "{} write errors while tiering, first: {:?}",
                r.errors,
                r.first_error
            );
        }
        rates.push(r.rate());
        tiered = tiered.max(tiered_count(s.addr).await?);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rates = spread(rates);
    note!("ingest while tiering: {}", mbps(rates[1]));
    ctx.rows.push(row(
        "ingest while tiering every sealed chunk (tier_after=1ms, local dir store), 4 conns",
        rates,
        "MB/s",
        ctx.ingest_rate
            .map(|r| (r, "ingest without tiering".to_owned())),
        &format!("{tiered} chunks tiered during the run"),
    ));

    // 3. Reads of a tiered 64 MiB chunk: from S3 on loopback, and from the
    //    local-dir store (the same object format without the S3 server).
    let root = ctx.work.join("s3");
    let s3 = S3Server::start(&root)?;
    let endpoint = format!("http://{}", s3.addr);
    let s3_args = [
        "--s3-endpoint",
        &endpoint,
        "--s3-bucket",
        BUCKET,
        "--s3-path-style",
        "--s3-access-key-id",
        AK,
        "--s3-secret-access-key",
        SK,
    ];
    tiered_read(ctx, "S3 on loopback (s3s-fs)", "tier-read-s3", &s3_args).await?;
    tiered_read(ctx, "the local-dir store", "tier-read-dir", &[]).await?;

    // 4. Tiering throughput: sealed chunks waiting, then tiering switched
    //    on; time until all are tiered (uploaded, read back, evicted).
    let (small, large, large_size) = if smoke {
        (100, 2, 8 << 20)
    } else {
        (2000, 4, 64 << 20)
    };
    tier_throughput(ctx, &s3_args, small, 64 << 10, 40 << 10).await?;
    tier_throughput(ctx, &s3_args, large, large_size, (4 << 20) - 4096).await?;
    drop(s3);
    Ok(())
}

/// Whole JSON event lines, at most `len` bytes.
fn whole_lines(len: usize) -> Bytes {
    let mut v = event_lines(len + 512);
    let cut = v[..len]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    v.truncate(cut);
    Bytes::from(v)
}

/// Writes `chunks` sealed chunks of `chunk_size` bytes (bodies of at most
/// `body_size`) with tiering off, restarts with tiering on (S3 on loopback,
/// `tier_concurrency` 2), and times until every chunk is tiered; one row.
async fn tier_throughput(
    ctx: &mut Ctx,
    s3_args: &[&str],
    chunks: u64,
    chunk_size: u64,
    body_size: usize,
) -> Result<()> {
    let dir = ctx.work.join(format!("tier-rate-{chunk_size}"));
    let max_chunk = format!("{chunk_size}");
    let body = whole_lines(body_size);
    let per_chunk = chunk_size / body.len() as u64;
    let mut s = Chunkbus::start(&ctx.bin, &dir, &["--max-chunk-size", &max_chunk])?;
    let mut c = Conn::open(s.addr).await?;
    for _ in 0..chunks * per_chunk {
        let (st, _) = c
            .send(Method::POST, "/write?category=cold", body.clone())
            .await?;
        if st != 200 {
            bail!("write answered {st}");
        }
    }
    s.stop(); // seals the open chunk
    let bytes = chunks * per_chunk * body.len() as u64;
    let mut args = vec![
        "--max-chunk-size",
        &max_chunk,
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ];
    args.extend_from_slice(s3_args);
    let s = Chunkbus::start(&ctx.bin, &dir, &args)?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(600);
    let mut peak_anon = 0u64;
    while tiered_count(s.addr).await? < chunks {
        if Instant::now() > deadline {
            bail!("{chunks} chunks not tiered within 600 s");
        }
        peak_anon = peak_anon.max(s.rss_anon().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let (per_s, rate) = (chunks as f64 / secs, bytes as f64 / secs);
    note!(
        "tiering {chunks} chunks of {} KiB: {per_s:.0} chunks/s, {}",
        chunk_size >> 10,
        mbps(rate)
    );
    let what = format!(
        "tiering throughput, {chunks} sealed {} chunks of JSON lines to S3 on loopback (s3s-fs), tier_concurrency 2",
        if chunk_size >= 1 << 20 {
            format!("{} MiB", chunk_size >> 20)
        } else {
            format!("{} KiB", chunk_size >> 10)
        }
    );
    let notes = format!(
        "stream + read-back of every tag + manifest fdatasync + eviction per chunk; {per_s:.1} chunks/s = {}; peak RssAnon {} MiB",
        mbps(rate),
        peak_anon >> 20
    );
    if chunk_size >= 1 << 20 {
        ctx.rows.push(row(&what, [rate; 3], "MB/s", None, &notes));
    } else {
        ctx.rows
            .push(row(&what, [per_s; 3], "chunks/s", None, &notes));
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Writes one sealed chunk to a fresh server with tiering into the given
/// store, waits until it is tiered, then times reads of it; one row.
async fn tiered_read(ctx: &mut Ctx, store: &str, tag: &str, store_args: &[&str]) -> Result<()> {
    let smoke = ctx.plan.dur < Duration::from_secs(1);
    let dir = ctx.work.join(tag);
    let chunk_size: u64 = if smoke { 8 << 20 } else { 64 << 20 };
    let max_chunk = format!("{chunk_size}");
    let mut args = vec![
        "--max-chunk-size",
        &max_chunk,
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ];
    args.extend_from_slice(store_args);
    let mut s = Chunkbus::start(&ctx.bin, &dir, &args)?;
    let body = make_body(ctx.message_size, 1 << 20);
    let mut c = Conn::open(s.addr).await?;
    let mut written = 0u64;
    while written < chunk_size + body.len() as u64 {
        let (st, _) = c
            .send(Method::POST, "/write?category=cold", body.clone())
            .await?;
        if st != 200 {
            bail!("write answered {st}");
        }
        written += body.len() as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while tiered_count(s.addr).await? < 1 {
        if Instant::now() > deadline {
            bail!("the sealed chunk was not tiered within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = c.list_chunks("cold").await?;
    let first = list
        .first()
        .and_then(|e| e["name"].as_str())
        .context("no chunk listed")?
        .to_owned();
    let path = |max: u64| format!("/read?category=cold&chunk={first}&off=0&max_size={max}");
    // Header and index are cached since the upload's verification: the
    // read costs one range GET of one frame.
    let t = Instant::now();
    let (st, b) = c.fetch(Method::GET, &path(65536), Bytes::new()).await?;
    let one_frame = t.elapsed();
    if st != 200 || b.is_empty() {
        bail!("tiered read answered {st}");
    }
    // Restart: nothing cached; header, index and frame come from S3.
    s.stop();
    s.spawn()?;
    let mut c = Conn::open(s.addr).await?;
    let t = Instant::now();
    let (st, b) = c.fetch(Method::GET, &path(65536), Bytes::new()).await?;
    let first_byte = t.elapsed();
    if st != 200 || b.is_empty() {
        bail!("tiered read answered {st}");
    }
    let t = Instant::now();
    let _ = c.fetch(Method::GET, &path(65536), Bytes::new()).await?;
    let cached = t.elapsed();
    // Whole chunk, 16 MiB reads (frames after the first come from S3).
    let t = Instant::now();
    let (mut off, mut total) = (0u64, 0u64);
    loop {
        let (st, b) = c
            .fetch(
                Method::GET,
                &format!("/read?category=cold&chunk={first}&off={off}&max_size=16777216"),
                Bytes::new(),
            )
            .await?;
        if st != 200 {
            bail!("tiered read answered {st}");
        }
        if b.is_empty() {
            break;
        }
        off += b.len() as u64;
        total += b.len() as u64;
    }
    let full = total as f64 / t.elapsed().as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    note!(
        "tiered read: first 64 KiB {:.1} ms (cold {:.1} ms), cached {:.2} ms, full {}",
        ms(one_frame),
        ms(first_byte),
        ms(cached),
        mbps(full)
    );
    ctx.rows.push(row(
        &format!(
            "read of a tiered {} MiB chunk from {store}: first 64 KiB",
            chunk_size >> 20
        ),
        [ms(one_frame); 3],
        "ms",
        None,
        &format!(
            "one range GET of one frame (header + index cached since the upload); after a restart (nothing cached: 3 GETs) {:.1} ms; cached re-read {:.2} ms; whole chunk {} ({} MB){}",
            ms(first_byte),
            ms(cached),
            mbps(full),
            total / 1_000_000,
            if store_args.is_empty() {
                ""
            } else {
                "; the s3s-fs server sets TCP_NODELAY, as real endpoints do (without it every GET waited ~40 ms for a delayed ACK)"
            }
        ),
    ));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

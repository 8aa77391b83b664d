//! `latency`: the closed-loop ingest maximum with 64 KiB bodies, then
//! end-to-end (produce → consume) latency under an open-loop load at 25%,
//! 50% and 75% of it, with write-reply latency alongside. Sets
//! [`Ctx::latency_max`], which the cluster's lag rows reuse. The load
//! generator itself is [`crate::latency`]; this module only plans and
//! reports.

use anyhow::Result;
use hdrhistogram::Histogram;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::{make_body, Ctx, LATENCY_BODY};
use crate::report::{mbps, row, spread, us};
use crate::servers::Chunkbus;
use crate::{latency, load};

/// The `latency` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "latency",
    about: "end-to-end latency at 25/50/75% of the closed-loop maximum (open loop)",
    run: |ctx| Box::pin(run(ctx)),
};

/// Open-loop produce → consume latency at 25/50/75% of the closed-loop
/// maximum for the same body size.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (plan, work, m) = (&ctx.plan, ctx.work.clone(), ctx.message_size);
    let body_size = LATENCY_BODY.min(ctx.body.len());
    let body = make_body(m, body_size);
    let dir = work.join("latency");
    let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
    let max = load::post_loop(
        s.addr,
        1,
        "/write?category=max",
        body,
        4,
        plan.warmup,
        plan.dur,
    )
    .await?
    .rate();
    Conn::open(s.addr).await?.ack_sealed("max").await?;
    ctx.latency_max = Some(max);
    note!(
        "latency: closed-loop max with {body_size} B bodies: {}",
        mbps(max)
    );
    ctx.rows.push(row(
        &format!(
            "ingest max, {} KiB bodies, 4 conns (basis of the latency rates)",
            body_size >> 10
        ),
        [max; 3],
        "MB/s",
        None,
        "closed loop",
    ));
    for pct in [25u32, 50, 75] {
        let rate = max * f64::from(pct) / 100.0;
        let mut p99s = Vec::new();
        let mut hist = Histogram::<u64>::new(3)?;
        let mut replies = Histogram::<u64>::new(3)?;
        let (mut achieved, mut saturated) = (0.0f64, false);
        for rep in 0..plan.reps {
            let r = latency::open_loop(
                s.addr,
                s.addr,
                &format!("lat{pct}r{rep}"),
                m,
                body_size,
                rate,
                plan.warmup,
                plan.dur,
            )
            .await?;
            Conn::open(s.addr)
                .await?
                .ack_sealed(&format!("lat{pct}r{rep}"))
                .await?;
            p99s.push(r.hist.value_at_quantile(0.99) as f64 / 1000.0);
            hist.add(&r.hist)?;
            replies.add(&r.replies)?;
            achieved = achieved.max(r.achieved);
            saturated |= r.saturated;
        }
        let p = |q: f64| us(hist.value_at_quantile(q));
        note!(
            "latency at {pct}%: p99 {} (write reply p99 {})",
            p(0.99),
            us(replies.value_at_quantile(0.99))
        );
        let mut r = row(
            &format!(
                "end-to-end latency p99 at {pct}% of max ({:.0} MB/s open loop)",
                rate / 1e6
            ),
            spread(p99s),
            "ms",
            None,
            &format!(
                "p50 {} p99 {} p99.9 {} max {}; write reply p50 {} p99 {}; {} bodies; sent {:.0} MB/s{}",
                p(0.5),
                p(0.99),
                p(0.999),
                us(hist.max()),
                us(replies.value_at_quantile(0.5)),
                us(replies.value_at_quantile(0.99)),
                hist.len(),
                achieved / 1e6,
                if saturated {
                    "; SATURATED (generator had to wait)"
                } else {
                    ""
                }
            ),
        );
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        r.percentiles = Some([ms(0.5), ms(0.99), ms(0.999), hist.max() as f64 / 1000.0]);
        ctx.rows.push(r);
    }
    Ok(())
}

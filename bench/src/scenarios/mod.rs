//! The scenarios, one per module, and [`SCENARIOS`]: the one table that
//! registers them. The table is what `--only` accepts (and how an unknown
//! name is refused), what `--help` lists, and the order a run measures in;
//! `main` only walks it. A scenario module measures and pushes rows to
//! [`Ctx::rows`]; it never parses arguments or writes the report.

mod alternatives;
mod categories;
mod client;
mod cluster;
mod groups;
mod ingest;
mod kafka;
mod latency;
mod push;
mod restart;
mod scaleout;
mod sync;
mod tier;
mod wake;

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser};
use futures_util::future::LocalBoxFuture;

use crate::ctx::Ctx;

/// One scenario: its `--only` name, its line in `--help`, and what it runs.
pub struct Scenario {
    /// Name on the command line (`--only <name>,…`).
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Measures and pushes the scenario's rows to [`Ctx::rows`].
    pub run: for<'a> fn(&'a mut Ctx) -> LocalBoxFuture<'a, Result<()>>,
}

/// Every scenario, in the order a run measures them. The order matters:
/// `ingest` sets [`Ctx::ingest_rate`], the basis of later rows' ratios (left
/// out when `ingest` did not run), and `latency` sets [`Ctx::latency_max`],
/// which `cluster` measures itself when `latency` did not run.
pub const SCENARIOS: &[Scenario] = &[
    ingest::SCENARIO,
    categories::SCENARIO,
    alternatives::SCENARIO,
    latency::SCENARIO,
    sync::SCENARIO,
    cluster::SCENARIO,
    scaleout::SCENARIO,
    tier::SCENARIO,
    client::SCENARIO,
    groups::SCENARIO,
    kafka::SCENARIO,
    push::SCENARIO,
    wake::SCENARIO,
    restart::SCENARIO,
];

/// The `--only` value parser: accepts the names in [`SCENARIOS`] and lists
/// them (with their `about`) in `--help` and in the error for any other.
pub fn names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        SCENARIOS
            .iter()
            .map(|s| PossibleValue::new(s.name).help(s.about)),
    )
}

/// The scenarios a run measures, in table order: those named in `only`,
/// or all of them when it is empty.
pub fn selected(only: &[String]) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect()
}

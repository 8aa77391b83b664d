//! What a run produced: rows, the Markdown table and the SVG chart, and
//! the number formats the rows' notes use. This module measures nothing.

use serde::Serialize;

/// One measured result.
#[derive(Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// Median over repetitions.
    pub value: f64,
    /// Unit of `value`.
    pub unit: &'static str,
    /// min/median/max when repeated.
    pub spread: Option<[f64; 3]>,
    /// The reference `value` is compared with.
    pub ceiling: Option<f64>,
    /// Name of that reference.
    pub ceiling_name: Option<String>,
    /// Free text: rates, percentiles, caveats.
    pub notes: String,
    /// Latency rows: p50, p99, p99.9, max in ms (drawn in the chart).
    pub percentiles: Option<[f64; 4]>,
    /// Latency rows measured at a share of a maximum rate: which system
    /// and at what percent (drawn in the latency-against-rate chart).
    pub curve: Option<Curve>,
}

/// A point of a latency-against-rate curve.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// The system measured (one line per system).
    pub system: String,
    /// The rate, in percent of the sustained maximum.
    pub percent: f64,
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub machine: String,
    pub rows: Vec<Row>,
}

/// [min, median, max].
pub fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

/// A row from min/median/max; MB/s values are given in bytes per second.
pub fn row(
    scenario: &str,
    v: [f64; 3],
    unit: &'static str,
    ceiling: Option<(f64, String)>,
    notes: &str,
) -> Row {
    let scale = if unit == "MB/s" { 1e-6 } else { 1.0 };
    Row {
        scenario: scenario.to_owned(),
        value: v[1] * scale,
        unit,
        spread: Some([v[0] * scale, v[1] * scale, v[2] * scale]),
        ceiling: ceiling.as_ref().map(|c| c.0 * scale),
        ceiling_name: ceiling.map(|c| c.1),
        notes: notes.to_owned(),
        percentiles: None,
        curve: None,
    }
}

/// Bytes per second as `"N MB/s"`.
pub fn mbps(v: f64) -> String {
    format!("{:.0} MB/s", v / 1e6)
}

/// Microseconds as `"N µs"`, or `"N.N ms"` from 1 ms up.
pub fn us(v: u64) -> String {
    if v >= 1000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

/// The Markdown table of a run.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Machine: {}  \nCommit: {}, {}  \nCommand: `{}`\n\n| scenario | result (median) | min / max | ratio | notes |\n|---|---|---|---|---|\n",
        r.machine, r.commit, r.date, r.command
    );
    for row in &r.rows {
        let spread = row
            .spread
            .map_or(String::new(), |[lo, _, hi]| format!("{lo:.1} / {hi:.1}"));
        let ratio = match (&row.ceiling, &row.ceiling_name) {
            (Some(c), Some(n)) if *c > 0.0 => format!("{:.2}× {n} ({c:.0})", row.value / c),
            _ => String::new(),
        };
        s.push_str(&format!(
            "| {} | {:.1} {} | {} | {} | {} |\n",
            row.scenario, row.value, row.unit, spread, ratio, row.notes
        ));
    }
    s
}

/// A self-contained SVG chart of a run: throughput rows (MB/s, median bar
/// with a min–max whisker) and latency rows (p50/p99/p99.9 bars, log scale).
pub fn svg(r: &Report) -> String {
    const W: f64 = 980.0;
    const LABEL: f64 = 470.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 6.0;
    let plot_w = W - LABEL - 90.0;
    let tput: Vec<&Row> = r.rows.iter().filter(|x| x.unit == "MB/s").collect();
    let lat: Vec<&Row> = r.rows.iter().filter(|x| x.percentiles.is_some()).collect();
    let h = 70.0
        + tput.len() as f64 * (BAR_H + GAP)
        + 60.0
        + lat.len() as f64 * (3.0 * BAR_H + GAP + 4.0)
        + 30.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">chunkbus bench {} ({})</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{}</text>\n\
         <text x=\"10\" y=\"60\" font-weight=\"bold\">Throughput, MB/s (median; whisker: min-max)</text>\n",
        esc(&r.date),
        esc(&r.commit),
        esc(&r.machine)
    );
    let max = tput
        .iter()
        .map(|x| x.spread.map_or(x.value, |s| s[2]))
        .fold(1.0f64, f64::max);
    let mut y = 70.0;
    for row in &tput {
        let color = if row.scenario.starts_with("ceiling") || row.scenario.starts_with("raw") {
            "#9e9e9e"
        } else if row.scenario.starts_with("Redis") || row.scenario.starts_with("NATS") {
            "#e08a2c"
        } else {
            "#2c6fbb"
        };
        let w = row.value / max * plot_w;
        out.push_str(&format!(
            "<text x=\"{x:.0}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{LABEL}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"{color}\"/>\n\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\">{v:.0}</text>\n",
            x = LABEL - 6.0,
            ty = y + BAR_H - 4.0,
            label = esc(&short(&row.scenario)),
            vx = LABEL + w.max(row.spread.map_or(0.0, |s| s[2] / max * plot_w)) + 4.0,
            v = row.value
        ));
        if let Some([lo, _, hi]) = row.spread {
            let (x1, x2) = (LABEL + lo / max * plot_w, LABEL + hi / max * plot_w);
            let my = y + BAR_H / 2.0;
            out.push_str(&format!(
                "<line x1=\"{x1:.1}\" y1=\"{my:.1}\" x2=\"{x2:.1}\" y2=\"{my:.1}\" stroke=\"black\"/>\n"
            ));
        }
        y += BAR_H + GAP;
    }
    if !lat.is_empty() {
        y += 30.0;
        out.push_str(&format!(
            "<text x=\"10\" y=\"{y:.0}\" font-weight=\"bold\">End-to-end latency, ms (log scale): p50 / p99 / p99.9</text>\n"
        ));
        y += 10.0;
        let lmax = lat
            .iter()
            .filter_map(|x| x.percentiles.map(|p| p[2]))
            .fold(1.0f64, f64::max)
            .max(1.0);
        let scale = |v: f64| (1.0 + v.max(0.0)).ln() / (1.0 + lmax).ln() * plot_w;
        for row in &lat {
            let Some(p) = row.percentiles else { continue };
            out.push_str(&format!(
                "<text x=\"{x:.0}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>\n",
                x = LABEL - 6.0,
                ty = y + 1.5 * BAR_H + 4.0,
                label = esc(&short(&row.scenario))
            ));
            for (i, (v, color)) in [(p[0], "#8fb8e8"), (p[1], "#2c6fbb"), (p[2], "#173b66")]
                .into_iter()
                .enumerate()
            {
                let by = y + i as f64 * BAR_H;
                out.push_str(&format!(
                    "<rect x=\"{LABEL}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/>\n\
                     <text x=\"{vx:.1}\" y=\"{ty:.1}\" font-size=\"11\">{v:.1}</text>\n",
                    w = scale(v),
                    bh = BAR_H - 2.0,
                    vx = LABEL + scale(v) + 4.0,
                    ty = by + BAR_H - 5.0
                ));
            }
            y += 3.0 * BAR_H + GAP + 4.0;
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A self-contained SVG chart of end-to-end p99 against the rate, one line
/// per system, from the rows that carry a [`Curve`]; log scale in ms. A
/// rate a system could not follow (SATURATED: no percentiles) is drawn as
/// an open marker on the top edge. `None` when no row has a curve.
pub fn latency_vs_rate_svg(r: &Report) -> Option<String> {
    const W: f64 = 860.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 370.0;
    const T: f64 = 50.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 6] = [
        "#2c6fbb", "#e08a2c", "#3a9a4a", "#b03a8c", "#777777", "#c0392b",
    ];
    let points: Vec<(&Curve, Option<f64>)> = r
        .rows
        .iter()
        .filter_map(|row| Some((row.curve.as_ref()?, row.percentiles.map(|p| p[1]))))
        .collect();
    if points.is_empty() {
        return None;
    }
    let mut systems: Vec<&str> = Vec::new();
    for (c, _) in &points {
        if !systems.contains(&c.system.as_str()) {
            systems.push(&c.system);
        }
    }
    let x_max = points
        .iter()
        .map(|(c, _)| c.percent)
        .fold(10.0f64, f64::max)
        .ceil();
    let y_hi = points.iter().filter_map(|&(_, v)| v).fold(1.0f64, f64::max);
    // Decades from 0.1 ms to the first power of ten above the largest p99.
    let (lo_exp, hi_exp) = (-1i32, (y_hi.log10().ceil() as i32).max(0) + 1);
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |pct: f64| L + pct / x_max * pw;
    let y = |ms: f64| {
        let v = ms.max(10f64.powi(lo_exp)).log10();
        T + ph - (v - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * ph
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">End-to-end p99 against rate ({}, {})</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">x: % of the sustained maximum; y: p99, log scale; open markers along the top: saturated (no figure)</text>\n",
        esc(&r.date),
        esc(&r.commit)
    );
    for e in lo_exp..=hi_exp {
        let v = 10f64.powi(e);
        let gy = y(v);
        out.push_str(&format!(
            "<line x1=\"{L}\" y1=\"{gy:.1}\" x2=\"{x2:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>\n",
            x2 = L + pw,
            tx = L - 6.0,
            ty = gy + 4.0,
            label = if v < 1.0 {
                format!("{v} ms")
            } else if v < 1000.0 {
                format!("{v:.0} ms")
            } else {
                format!("{:.0} s", v / 1000.0)
            }
        ));
    }
    let mut pct = 0.0;
    while pct <= x_max {
        out.push_str(&format!(
            "<text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{pct:.0}%</text>\n",
            tx = x(pct),
            ty = T + ph + 18.0
        ));
        pct += 25.0;
    }
    out.push_str(&format!(
        "<rect x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\n"
    ));
    for (i, system) in systems.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut line: Vec<(f64, f64)> = points
            .iter()
            .filter(|(c, v)| c.system == *system && v.is_some())
            .filter_map(|&(c, v)| Some((c.percent, v?)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        if line.len() > 1 {
            let d: Vec<String> = line
                .iter()
                .map(|&(p, v)| format!("{:.1},{:.1}", x(p), y(v)))
                .collect();
            out.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
                d.join(" ")
            ));
        }
        for &(c, v) in points.iter().filter(|(c, _)| c.system == *system) {
            match v {
                Some(v) => out.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>\n",
                    x(c.percent),
                    y(v)
                )),
                // One row per system, so markers at the same rate stay apart.
                None => out.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"white\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
                    x(c.percent),
                    T + 8.0 + 12.0 * i as f64
                )),
            }
        }
        let ly = T + 10.0 + i as f64 * 20.0;
        out.push_str(&format!(
            "<rect x=\"{lx:.1}\" y=\"{ry:.1}\" width=\"14\" height=\"4\" fill=\"{color}\"/>\n\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\">{name}</text>\n",
            lx = L + pw + 12.0,
            ry = ly - 4.0,
            tx = L + pw + 32.0,
            ty = ly + 2.0,
            name = esc(&short(system))
        ));
    }
    out.push_str("</svg>\n");
    Some(out)
}

fn short(s: &str) -> String {
    if s.chars().count() > 64 {
        let t: String = s.chars().take(62).collect();
        format!("{t}…")
    } else {
        s.to_owned()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(system: &str, percent: f64, p99: Option<f64>) -> Row {
        let mut r = row("x", [1.0; 3], "ms", None, "");
        r.percentiles = p99.map(|v| [v / 2.0, v, v * 2.0, v * 3.0]);
        r.curve = Some(Curve {
            system: system.to_owned(),
            percent,
        });
        r
    }

    #[test]
    fn the_rate_chart_draws_a_line_per_system_and_marks_saturation() {
        let mut report = Report {
            date: "d".into(),
            commit: "c".into(),
            command: String::new(),
            machine: String::new(),
            rows: vec![row("throughput", [1e6; 3], "MB/s", None, "")],
        };
        assert!(latency_vs_rate_svg(&report).is_none());
        report.rows.extend([
            point("chunkbus", 10.0, Some(1.5)),
            point("chunkbus", 50.0, Some(4.0)),
            point("Redis", 10.0, Some(300.0)),
            point("Redis", 50.0, None),
        ]);
        let svg = latency_vs_rate_svg(&report).expect("a chart");
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "Redis has one measured point: no line"
        );
        // Three measured points, one saturated marker on the top edge.
        assert_eq!(svg.matches("r=\"4\"").count(), 3);
        assert_eq!(svg.matches("r=\"5\"").count(), 1);
        assert!(svg.contains(">chunkbus<") && svg.contains(">Redis<"));
        // The log axis reaches past the largest p99 (300 ms → 1 s).
        assert!(svg.contains(">1 s<") && svg.contains(">0.1 ms<"));
    }
}

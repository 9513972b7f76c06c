//! The dashboard's SVG charts, server-rendered (no JavaScript): geometry
//! computed here, markup in askama templates (`templates/charts/`), whose
//! HTML escaping covers every text that reaches them.

use askama::Template;
use gkm_store::model::{D3pErrorPoint, RekeyRecord};

/// A chart's markup; a template that cannot render (it cannot fail on
/// this data) gives an empty chart and an error log line.
fn svg(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "chart template");
        String::new()
    })
}

/// One rekey's bar in [`ack_timeline`].
struct AckBar<'a> {
    seq: u32,
    reason: &'a str,
    acked: u32,
    sent: u32,
    pct: u64,
    x: usize,
    ys: usize,
    hs: usize,
    ya: usize,
    ha: usize,
    label: bool,
}

#[derive(Template)]
#[template(path = "charts/ack_timeline.svg", escape = "html")]
struct AckTimeline<'a> {
    w: usize,
    h: usize,
    bar: usize,
    bars: Vec<AckBar<'a>>,
    label_y: usize,
    end_x: usize,
    end_y: usize,
    max: u32,
}

/// The rekey ACK timeline: one bar per rekey (oldest left), its height the
/// GMs it went to, the filled part the GMs that acknowledged.
pub fn ack_timeline(rekeys: &[RekeyRecord]) -> String {
    const W: usize = 640;
    const H: usize = 160;
    let max = rekeys.iter().map(|r| r.sent).max().unwrap_or(0).max(1);
    let n = rekeys.len();
    let slot = W / n.max(1);
    let bar = slot.saturating_sub(4).max(2);
    let bars = rekeys
        .iter()
        .rev()
        .enumerate()
        .map(|(i, r)| {
            let hs = scale(r.sent, max, H);
            let ha = scale(r.acked.min(r.sent), max, H);
            AckBar {
                seq: r.seq,
                reason: &r.reason,
                acked: r.acked,
                sent: r.sent,
                pct: if r.sent == 0 {
                    100
                } else {
                    u64::from(r.acked) * 100 / u64::from(r.sent)
                },
                x: i * slot + 2,
                ys: H - hs,
                hs,
                ya: H - ha,
                ha,
                label: n <= 20 || i % (n / 10).max(1) == 0,
            }
        })
        .collect();
    svg(&AckTimeline {
        w: W,
        h: H + 30,
        bar,
        bars,
        label_y: H + 14,
        end_x: W - 2,
        end_y: H + 28,
        max,
    })
}

fn scale(v: u32, max: u32, h: usize) -> usize {
    let v = u64::from(v.min(max));
    usize::try_from(v * h as u64 / u64::from(max.max(1))).unwrap_or(h)
}

/// One state's part of [`gm_states`].
struct StateSegment {
    class: &'static str,
    n: u64,
    x: u64,
    w: u64,
}

#[derive(Template)]
#[template(path = "charts/gm_states.svg", escape = "html")]
struct GmStates {
    segments: Vec<StateSegment>,
    registered: u64,
    lagging: u64,
    removed: u64,
}

/// GMs by state as one stacked horizontal bar with a legend.
pub fn gm_states(registered: u64, lagging: u64, removed: u64) -> String {
    const W: u64 = 400;
    let total = registered + lagging + removed;
    let mut x = 0u64;
    let segments = [
        ("registered", registered),
        ("lagging", lagging),
        ("removed", removed),
    ]
    .into_iter()
    .map(|(class, n)| {
        let w = (n * W).checked_div(total).unwrap_or(0);
        let s = StateSegment { class, n, x, w };
        x += w;
        s
    })
    .collect();
    svg(&GmStates {
        segments,
        registered,
        lagging,
        removed,
    })
}

/// One time bucket's bar in [`d3p_errors`].
struct D3pBar {
    x: usize,
    y: usize,
    h: usize,
    mins: i64,
    input: u64,
    output: u64,
}

#[derive(Template)]
#[template(path = "charts/d3p_errors.svg", escape = "html")]
struct D3pErrors {
    w: usize,
    h: usize,
    bar: usize,
    bars: Vec<D3pBar>,
    label_y: usize,
    span_min: i64,
    total: u64,
    max: u64,
    bucket_secs: i64,
}

/// IP-D3P errors over time: `buckets` bars of `bucket_ms` each, the last
/// one ending at `now`; a bar's height is the input D3P errors GMs
/// reported in it (output errors in its tooltip).
pub fn d3p_errors(points: &[D3pErrorPoint], now: i64, bucket_ms: i64, buckets: usize) -> String {
    const W: usize = 640;
    const H: usize = 120;
    let bucket_ms = bucket_ms.max(1);
    let buckets = buckets.max(1);
    let last = now / bucket_ms * bucket_ms;
    let first = last - bucket_ms * (buckets as i64 - 1);
    let mut sums = vec![(0u64, 0u64); buckets];
    for p in points {
        if p.at >= first && p.at <= last {
            let i = usize::try_from((p.at - first) / bucket_ms).unwrap_or(0);
            if let Some(b) = sums.get_mut(i) {
                b.0 += p.input_errors;
                b.1 += p.output_errors;
            }
        }
    }
    let total: u64 = sums.iter().map(|b| b.0).sum();
    let max = sums.iter().map(|b| b.0).max().unwrap_or(0).max(1);
    let slot = W / buckets;
    let bars = sums
        .iter()
        .enumerate()
        .filter(|(_, (inp, out))| *inp != 0 || *out != 0)
        .map(|(i, (inp, out))| {
            let h = usize::try_from(inp * H as u64 / max).unwrap_or(H).max(1);
            D3pBar {
                x: i * slot,
                y: H - h,
                h,
                mins: (now - (first + bucket_ms * i as i64)) / 60_000,
                input: *inp,
                output: *out,
            }
        })
        .collect();
    svg(&D3pErrors {
        w: W,
        h: H + 30,
        bar: slot.saturating_sub(2).max(1),
        bars,
        label_y: H + 14,
        span_min: bucket_ms * buckets as i64 / 60_000,
        total,
        max,
        bucket_secs: bucket_ms / 1000,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(seq: u32, sent: u32, acked: u32) -> RekeyRecord {
        RekeyRecord {
            group: 1,
            seq,
            reason: "<scheduled>".into(),
            started_at: 0,
            sent,
            acked,
            duration_ms: None,
        }
    }

    #[test]
    fn timeline_scales_and_escapes() {
        let svg = ack_timeline(&[r(3, 10, 5), r(2, 10, 10)]);
        assert!(
            svg.contains("SEQ 3 (&#60;scheduled&#62;): 5/10 acknowledged (50 %)"),
            "{svg}"
        );
        assert!(
            svg.contains(r#"y="80" width"#),
            "half height for 5 of 10: {svg}"
        );
        assert!(!svg.contains("<scheduled>"));
        assert!(ack_timeline(&[]).contains("no rekey yet"));
        // more acknowledgements than sends (a late ACK) never overflow the bar
        assert!(ack_timeline(&[r(1, 2, 9)]).contains("9/2"));
    }

    #[test]
    fn states_bar_widths_sum_to_the_total() {
        let svg = gm_states(2, 1, 1);
        assert!(svg.contains(r#"class="registered" x="0" y="0" width="200""#));
        assert!(svg.contains(r#"class="lagging" x="200" y="0" width="100""#));
        assert!(svg.contains(r#"class="removed" x="300" y="0" width="100""#));
        assert!(gm_states(0, 0, 0).contains("registered 0"));
    }

    #[test]
    fn d3p_errors_bucket_and_scale() {
        let p = |at, i| D3pErrorPoint {
            at,
            input_errors: i,
            output_errors: 0,
        };
        // 10 buckets of 60 s, the last one holding now (599.999 s): 540 s holds 8,
        // the one at 0 s holds 4 (half height), 1000 s is in the future.
        let svg = d3p_errors(
            &[p(540_000, 8), p(0, 4), p(1_000_000, 99)],
            599_999,
            60_000,
            10,
        );
        assert!(
            svg.contains(r#"x="576" y="0" width="62" height="120""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"x="0" y="60" width="62" height="60""#),
            "{svg}"
        );
        assert!(svg.contains("12 input D3P errors"), "{svg}");
        assert!(!svg.contains("99"));
        assert!(d3p_errors(&[], 0, 60_000, 10).contains("0 input D3P errors"));
    }
}

//! Small server-rendered SVG charts (no JavaScript, no external assets).
//! Every number is formatted by us and every label escaped, so the output
//! is safe to embed in a page.

use std::fmt::Write;

use gkm_store::model::{D3pErrorPoint, RekeyRecord};

/// Escapes text for SVG/HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The rekey ACK timeline: one bar per rekey (oldest left), its height the
/// GMs it went to, the filled part the GMs that acknowledged.
pub fn ack_timeline(rekeys: &[RekeyRecord]) -> String {
    const W: usize = 640;
    const H: usize = 160;
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="Rekey acknowledgements" viewBox="0 0 {W} {h}" width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#,
        h = H + 30
    );
    if rekeys.is_empty() {
        s.push_str(r#"<text x="10" y="20">no rekey yet</text></svg>"#);
        return s;
    }
    let max = rekeys.iter().map(|r| r.sent).max().unwrap_or(0).max(1);
    let n = rekeys.len();
    let slot = W / n.max(1);
    let bar = slot.saturating_sub(4).max(2);
    for (i, r) in rekeys.iter().rev().enumerate() {
        let x = i * slot + 2;
        let hs = scale(r.sent, max, H);
        let ha = scale(r.acked.min(r.sent), max, H);
        let pct = if r.sent == 0 {
            100
        } else {
            u64::from(r.acked) * 100 / u64::from(r.sent)
        };
        let _ = write!(
            s,
            r#"<g><title>SEQ {seq} ({reason}): {acked}/{sent} acknowledged ({pct} %)</title><rect class="sent" x="{x}" y="{ys}" width="{bar}" height="{hs}"/><rect class="acked" x="{x}" y="{ya}" width="{bar}" height="{ha}"/></g>"#,
            seq = r.seq,
            reason = escape(&r.reason),
            acked = r.acked,
            sent = r.sent,
            ys = H - hs,
            ya = H - ha,
        );
        if n <= 20 || i % (n / 10).max(1) == 0 {
            let _ = write!(
                s,
                r#"<text x="{x}" y="{y}" font-size="10">{seq}</text>"#,
                y = H + 14,
                seq = r.seq
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" font-size="10" text-anchor="end">SEQ → (max {max} GMs)</text></svg>"#,
        x = W - 2,
        y = H + 28
    );
    s
}

fn scale(v: u32, max: u32, h: usize) -> usize {
    let v = u64::from(v.min(max));
    usize::try_from(v * h as u64 / u64::from(max.max(1))).unwrap_or(h)
}

/// GMs by state as one stacked horizontal bar with a legend.
pub fn gm_states(registered: u64, lagging: u64, removed: u64) -> String {
    const W: u64 = 400;
    let total = registered + lagging + removed;
    let mut s = String::from(
        r#"<svg class="chart" role="img" aria-label="GMs by state" viewBox="0 0 400 44" width="400" height="44" xmlns="http://www.w3.org/2000/svg">"#,
    );
    let mut x = 0u64;
    for (class, n) in [
        ("registered", registered),
        ("lagging", lagging),
        ("removed", removed),
    ] {
        let w = (n * W).checked_div(total).unwrap_or(0);
        let _ = write!(
            s,
            r#"<rect class="{class}" x="{x}" y="0" width="{w}" height="18"><title>{class}: {n}</title></rect>"#
        );
        x += w;
    }
    let _ = write!(
        s,
        r#"<text x="0" y="36" font-size="12">registered {registered} · lagging {lagging} · removed {removed}</text></svg>"#
    );
    s
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
    let mut bars = vec![(0u64, 0u64); buckets];
    for p in points {
        if p.at >= first && p.at <= last {
            let i = usize::try_from((p.at - first) / bucket_ms).unwrap_or(0);
            if let Some(b) = bars.get_mut(i) {
                b.0 += p.input_errors;
                b.1 += p.output_errors;
            }
        }
    }
    let total: u64 = bars.iter().map(|b| b.0).sum();
    let max = bars.iter().map(|b| b.0).max().unwrap_or(0).max(1);
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="IP-D3P errors over time" viewBox="0 0 {W} {h}" width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#,
        h = H + 30
    );
    let slot = W / buckets;
    let bar = slot.saturating_sub(2).max(1);
    for (i, (inp, out)) in bars.iter().enumerate() {
        if *inp == 0 && *out == 0 {
            continue;
        }
        let h = usize::try_from(inp * H as u64 / max).unwrap_or(H).max(1);
        let at = first + bucket_ms * i as i64;
        let _ = write!(
            s,
            r#"<rect class="d3p" x="{x}" y="{y}" width="{bar}" height="{h}"><title>{mins} min ago: {inp} input, {out} output D3P errors</title></rect>"#,
            x = i * slot,
            y = H - h,
            mins = (now - at) / 60_000,
        );
    }
    let span_min = bucket_ms * buckets as i64 / 60_000;
    let _ = write!(
        s,
        r#"<text x="0" y="{y}" font-size="10">{span_min} min ago</text><text x="{W}" y="{y}" font-size="10" text-anchor="end">now · {total} input D3P errors (max {max} per {b} s)</text></svg>"#,
        y = H + 14,
        b = bucket_ms / 1000,
    );
    s
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
        assert!(svg.contains("SEQ 3 (&lt;scheduled&gt;): 5/10 acknowledged (50 %)"));
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

//! The seed's `show crypto gkm ...` layouts that more than one surface
//! prints verbatim (gkmctl and the dashboard), written once.

/// `show crypto gkm feature <name>` for one group: `key_servers` and
/// `gms` are (id, version, supported) rows.
pub fn feature_table(
    group: &str,
    key_servers: &[(String, String, bool)],
    gms: &[(String, String, bool)],
) -> String {
    use core::fmt::Write;
    let yes = |b: bool| if b { "Yes" } else { "No" };
    let mut out = format!("Group Name: {group}\n\nKey Server ID     Version   Feature Supported\n");
    for (id, v, f) in key_servers {
        let _ = writeln!(out, "{id:<18}{v:<10}{}", yes(*f));
    }
    out.push_str("\nGroup Member ID   Version   Feature Supported\n");
    for (id, v, f) in gms {
        let _ = writeln!(out, "{id:<18}{v:<10}{}", yes(*f));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_columns() {
        let t = feature_table(
            "GET",
            &[("10.0.0.1".into(), "1.0.26".into(), true)],
            &[("10.0.0.2".into(), "1.0.25".into(), false)],
        );
        assert_eq!(
            t,
            "Group Name: GET\n\nKey Server ID     Version   Feature Supported\n\
             10.0.0.1          1.0.26    Yes\n\n\
             Group Member ID   Version   Feature Supported\n\
             10.0.0.2          1.0.25    No\n"
        );
    }
}

//! Printing API objects as a table, JSON or YAML.

use std::{io::Write, time::Duration};

use anyhow::Context;
use berth_api::{LeaseResponse, LeaseStatus};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::args::{LeaseRef, Output};

/// Writes `value` to stdout in the chosen format; `table` builds the human form.
pub(crate) fn print<T: Serialize>(
    format: Output,
    value: &T,
    table: impl FnOnce() -> Table,
) -> anyhow::Result<()> {
    let text = render(format, value, table)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("failed to write to stdout")
}

pub(crate) fn render<T: Serialize>(
    format: Output,
    value: &T,
    table: impl FnOnce() -> Table,
) -> anyhow::Result<String> {
    Ok(match format {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(value).context("failed to encode JSON")?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_yaml::to_string(value).context("failed to encode YAML")?,
        Output::Table => table().to_string(),
    })
}

/// Rows of text printed in aligned columns.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   "));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

fn time_cell(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

fn remaining_cell(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            // Whole seconds read better than humantime's millisecond tail.
            let d = Duration::from_secs(ms.div_ceil(1000));
            humantime::format_duration(d).to_string()
        }
        _ => "-".to_owned(),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn token_cell(token: i64) -> String {
    if token == 0 {
        "-".to_owned()
    } else {
        token.to_string()
    }
}

/// Table of an acquire or renew answer.
pub(crate) fn response_table(lease: &LeaseRef, r: &LeaseResponse) -> Table {
    let mut t = Table::new(vec![
        "NAMESPACE",
        "NAME",
        "ACQUIRED",
        "HOLDER",
        "TOKEN",
        "EXPIRES",
        "REMAINING",
    ]);
    t.row(vec![
        lease.namespace.clone(),
        lease.name.clone(),
        r.acquired.to_string(),
        or_dash(&r.holder),
        token_cell(r.fencing_token),
        time_cell(r.expires_at),
        remaining_cell(r.ttl_remaining_millis),
    ]);
    t
}

/// Table of lease states.
pub(crate) fn status_table<'a>(items: impl IntoIterator<Item = &'a LeaseStatus>) -> Table {
    let mut t = Table::new(vec![
        "NAMESPACE",
        "NAME",
        "STATE",
        "HOLDER",
        "TOKEN",
        "TTL",
        "EXPIRES",
        "REMAINING",
    ]);
    for s in items {
        t.row(vec![
            s.namespace.clone(),
            s.name.clone(),
            s.state.as_str().to_owned(),
            or_dash(&s.holder),
            token_cell(s.fencing_token),
            format!("{}s", s.ttl_seconds),
            time_cell(s.expires_at),
            remaining_cell(s.ttl_remaining_millis),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::LeaseState;
    use time::macros::datetime;

    fn status(name: &str, holder: &str) -> LeaseStatus {
        LeaseStatus {
            namespace: "team-a".into(),
            name: name.into(),
            state: if holder.is_empty() {
                LeaseState::Released
            } else {
                LeaseState::Held
            },
            holder: holder.into(),
            fencing_token: 3,
            ttl_seconds: 30,
            acquired_at: None,
            renewed_at: None,
            expires_at: if holder.is_empty() {
                None
            } else {
                Some(datetime!(2026-01-02 03:04:05 UTC))
            },
            ttl_remaining_millis: if holder.is_empty() { 0 } else { 29_001 },
            transitions: 1,
        }
    }

    #[test]
    fn table_aligns_columns() {
        let items = [status("db", "cluster-east"), status("cron-pipeline", "")];
        let text = render(Output::Table, &(), || status_table(&items)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   NAME            STATE      HOLDER         TOKEN   TTL   EXPIRES                REMAINING"
        );
        assert_eq!(
            lines[1],
            "team-a      db              held       cluster-east   3       30s   2026-01-02T03:04:05Z   30s"
        );
        assert_eq!(
            lines[2],
            "team-a      cron-pipeline   released   -              3       30s   -                      -"
        );
    }

    #[test]
    fn json_and_yaml_show_the_api_object() {
        let s = status("db", "east");
        let json = render(Output::Json, &s, || unreachable!()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["fencingToken"], 3);
        assert_eq!(v["state"], "held");
        let yaml = render(Output::Yaml, &s, || unreachable!()).unwrap();
        assert!(yaml.contains("holder: east\n"), "{yaml}");
        assert!(yaml.contains("fencingToken: 3\n"), "{yaml}");
    }
}

//! `berth lease watch NAMESPACE[/NAME]`: print lease changes as they happen.
//!
//! Table output prints one line per change (`initial` lines first, then a blank line once the
//! current state is complete); `json` prints one JSON object per line; `yaml` one document per
//! event. Bookmarks are not printed. The watch reconnects and resumes by itself after a lost
//! connection; it ends on Ctrl-C, or at the first event of the kind named by `--until` (exit
//! 0). `--stop-after` bounds the watch: exit 3 when `--until` saw nothing by then, else 0.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use berth_api::{WatchEvent, WatchEventType};
use berth_client::{Client, WatchOptions, WatchTarget};
use futures::StreamExt;

use crate::args::Output;
use crate::exit::Failure;

/// Event kinds `--until` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UntilEvent {
    /// A holder was granted the lease.
    Acquired,
    /// The holder released it.
    Released,
    /// Its TTL ran out.
    Expired,
    /// Released or expired: the lease can be acquired.
    Free,
}

impl UntilEvent {
    fn matches(self, t: WatchEventType) -> bool {
        match self {
            Self::Acquired => t == WatchEventType::Acquired,
            Self::Released => t == WatchEventType::Released,
            Self::Expired => t == WatchEventType::Expired,
            Self::Free => matches!(t, WatchEventType::Released | WatchEventType::Expired),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// NAMESPACE to watch every lease in it, or NAMESPACE/NAME for one lease.
    #[arg(value_name = "NAMESPACE[/NAME]")]
    pub(crate) target: String,
    /// Also print renewals.
    #[arg(long)]
    pub(crate) renewals: bool,
    /// Resume after this revision (the `revision` of an earlier event) instead of printing
    /// the current state.
    #[arg(long, value_name = "REVISION")]
    pub(crate) resume_from: Option<u64>,
    /// Exit 0 at the first event of this kind (`free`: released or expired).
    #[arg(long, value_enum)]
    pub(crate) until: Option<UntilEvent>,
    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = crate::args::parse_duration)]
    pub(crate) stop_after: Option<Duration>,
}

fn split(target: &str) -> anyhow::Result<(String, Option<String>)> {
    match target.split_once('/') {
        None if !target.is_empty() => Ok((target.to_owned(), None)),
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), Some(name.to_owned())))
        }
        _ => Err(Failure::Usage(format!(
            "expected NAMESPACE or NAMESPACE/NAME, got {target:?}"
        ))
        .into()),
    }
}

fn line(e: &WatchEvent) -> String {
    let Some(l) = &e.lease else {
        return String::new();
    };
    let holder = if l.holder.is_empty() {
        "-"
    } else {
        l.holder.as_str()
    };
    format!(
        "{:<9} {}/{} state={} holder={} token={} revision={}",
        e.event_type.as_str(),
        l.namespace,
        l.name,
        l.state.as_str(),
        holder,
        l.fencing_token,
        e.revision
    )
}

fn emit(output: Output, e: &WatchEvent) -> anyhow::Result<()> {
    let text = match output {
        Output::Table => {
            if e.event_type == WatchEventType::Synced {
                "\n".to_owned()
            } else if e.event_type == WatchEventType::Error {
                format!("# {}\n", e.message.as_deref().unwrap_or("watch error"))
            } else {
                format!("{}\n", line(e))
            }
        }
        Output::Json => format!("{}\n", serde_json::to_string(e)?),
        Output::Yaml => format!("---\n{}", serde_yaml::to_string(e)?),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("failed to write to stdout")
}

pub(crate) async fn run(client: &Client, output: Output, args: WatchArgs) -> anyhow::Result<()> {
    let (ns, name) = split(&args.target)?;
    let target = match &name {
        Some(name) => WatchTarget::Lease(&ns, name),
        None => WatchTarget::Namespace(&ns),
    };
    let options = WatchOptions {
        renewals: args.renewals,
        resume_from: args.resume_from,
        ..WatchOptions::default()
    };
    // Open once directly so a bad target or credentials fail at once with their exit code.
    let first = client.watch(target, &options).await?;
    let mut opened = Some(first.into_stream().boxed());
    let mut resumed = None;
    let deadline = args.stop_after.map(|t| tokio::time::Instant::now() + t);
    let mut last = options.resume_from;
    loop {
        let next = async {
            if let Some(s) = opened.as_mut() {
                return s.next().await;
            }
            resumed
                .get_or_insert_with(|| {
                    client
                        .watch_resuming(
                            target,
                            WatchOptions {
                                resume_from: last,
                                ..options.clone()
                            },
                            Duration::from_secs(1),
                        )
                        .boxed()
                })
                .next()
                .await
        };
        let event = tokio::select! {
            e = next => e,
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                return match args.until {
                    Some(u) => Err(Failure::HeldElsewhere(format!(
                        "no {u:?} event within the timeout"
                    ).to_lowercase()).into()),
                    None => Ok(()),
                };
            }
            r = tokio::signal::ctrl_c() => {
                r.context("failed to wait for Ctrl-C")?;
                return Ok(());
            }
        };
        match event {
            Some(Ok(e)) => {
                if e.event_type != WatchEventType::Bookmark {
                    emit(output, &e)?;
                }
                last = Some(e.revision).max(last);
                if args.until.is_some_and(|u| u.matches(e.event_type)) {
                    return Ok(());
                }
            }
            Some(Err(e)) => {
                eprintln!("watch interrupted ({e}); resuming");
                opened = None;
            }
            None => opened = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split("ns").unwrap(), ("ns".into(), None));
        assert_eq!(split("ns/a").unwrap(), ("ns".into(), Some("a".into())));
        for bad in ["", "/a", "ns/", "ns/a/b"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}

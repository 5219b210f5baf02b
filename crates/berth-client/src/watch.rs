//! Watching leases: [`Client::watch`] opens one Server-Sent Events stream
//! ([`WatchStream`]); [`Client::watch_resuming`] keeps one open for ever, resuming from the last
//! revision after a disconnect and dropping the repeats a resume may bring.
//!
//! ```no_run
//! # async fn demo(client: berth_client::Client) -> Result<(), berth_client::ClientError> {
//! use berth_api::WatchEventType;
//! use berth_client::{WatchOptions, WatchTarget};
//!
//! let mut events = client
//!     .watch(WatchTarget::Lease("pipeline", "ingest-worker"), &WatchOptions::default())
//!     .await?;
//! while let Some(event) = events.next().await? {
//!     if event.event_type == WatchEventType::Released {
//!         println!("free: try to acquire now");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use berth_api::{WatchEvent, WatchEventType};
use futures::Stream;
use reqwest::Method;

use crate::{Client, ClientError, check_segment};

/// What to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchTarget<'a> {
    /// Every lease.
    All,
    /// The leases of one namespace.
    Namespace(&'a str),
    /// One lease: namespace and name.
    Lease(&'a str, &'a str),
}

/// Options of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Also receive renewals (frequent; off by default).
    pub renewals: bool,
    /// Resume after this revision instead of receiving the whole current state.
    pub resume_from: Option<u64>,
    /// Bookmark period asked of the server. The stream fails with [`ClientError::Timeout`]
    /// when nothing arrives for three periods plus five seconds.
    pub bookmark: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            renewals: false,
            resume_from: None,
            bookmark: Duration::from_secs(10),
        }
    }
}

/// Longest total time of the watch request itself; the idle limit is what ends a dead stream.
const WATCH_REQUEST_LIMIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Largest single event accepted from the server.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// One open watch: events in the order the server sent them.
#[derive(Debug)]
pub struct WatchStream {
    response: reqwest::Response,
    buf: Vec<u8>,
    data: String,
    ready: VecDeque<WatchEvent>,
    idle: Duration,
    last_revision: Option<u64>,
    done: bool,
}

impl WatchStream {
    /// The next event; `None` when the server ended the stream.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when the stream went quiet for longer than the idle limit,
    /// [`ClientError::Transport`] when the connection broke, [`ClientError::Decode`] for a
    /// malformed event.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                self.last_revision = Some(e.revision);
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let chunk = tokio::time::timeout(self.idle, self.response.chunk())
                .await
                .map_err(|_| ClientError::Timeout)?
                .map_err(ClientError::from_reqwest)?;
            match chunk {
                Some(bytes) => {
                    self.buf.extend_from_slice(&bytes);
                    self.parse_lines()?;
                }
                None => self.done = true,
            }
        }
    }

    /// The revision of the last event returned, to resume from.
    pub fn last_revision(&self) -> Option<u64> {
        self.last_revision
    }

    /// The events as a [`Stream`]; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            match s.next().await {
                Ok(Some(e)) => Some((Ok(e), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    fn parse_lines(&mut self) -> Result<(), ClientError> {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|e| ClientError::Decode(Box::new(e)))?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event: WatchEvent = serde_json::from_str(&self.data)
                        .map_err(|e| ClientError::Decode(Box::new(e)))?;
                    self.data.clear();
                    self.ready.push_back(event);
                }
                continue;
            }
            // `event:` and `id:` repeat what the data says; comments keep the line alive.
            if let Some(d) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(ClientError::Decode("watch event too large".into()));
        }
        Ok(())
    }
}

impl Client {
    /// Opens a watch (`GET …?watch=true`, Server-Sent Events). Without
    /// [`WatchOptions::resume_from`] the stream starts with one `initial` event per lease,
    /// then `synced`; then changes and periodic `bookmark`s follow.
    ///
    /// # Errors
    /// Any [`ClientError`] of opening the stream (the server's 4xx/5xx included).
    pub async fn watch(
        &self,
        target: WatchTarget<'_>,
        options: &WatchOptions,
    ) -> Result<WatchStream, ClientError> {
        let url = match target {
            WatchTarget::All => self.url(&["v1alpha1", "leases"])?,
            WatchTarget::Namespace(ns) => {
                check_segment("namespace", ns)?;
                self.url(&["v1alpha1", "namespaces", ns, "leases"])?
            }
            WatchTarget::Lease(ns, name) => self.lease_url(ns, name, None)?,
        };
        let bookmark = options.bookmark.as_secs().clamp(1, 300);
        let mut query: Vec<(&str, String)> = vec![
            ("watch", "true".into()),
            ("bookmarkSeconds", bookmark.to_string()),
        ];
        if options.renewals {
            query.push(("renewals", "true".into()));
        }
        if let Some(rev) = options.resume_from {
            query.push(("resourceVersion", rev.to_string()));
        }
        let request = self
            .request(Method::GET, url)?
            .query(&query)
            .header("accept", "text/event-stream")
            .timeout(WATCH_REQUEST_LIMIT);
        let response = self.send(request).await?;
        Ok(WatchStream {
            response,
            buf: Vec::new(),
            data: String::new(),
            ready: VecDeque::new(),
            idle: Duration::from_secs(bookmark * 3 + 5),
            last_revision: options.resume_from,
            done: false,
        })
    }

    /// A watch that never ends on its own: after a disconnect, a server `error` event or a
    /// quiet connection it reconnects (after `retry`) and resumes from the last revision seen.
    /// Changes a resume sends again (same key, version and type) are dropped; `initial`,
    /// `synced` and `bookmark` events are passed through. Errors are yielded (the stream goes
    /// on); stop by dropping it.
    pub fn watch_resuming(
        &self,
        target: WatchTarget<'_>,
        options: WatchOptions,
        retry: Duration,
    ) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static {
        let owned = match target {
            WatchTarget::All => (None, None),
            WatchTarget::Namespace(ns) => (Some(ns.to_owned()), None),
            WatchTarget::Lease(ns, name) => (Some(ns.to_owned()), Some(name.to_owned())),
        };
        struct State {
            client: Client,
            target: (Option<String>, Option<String>),
            options: WatchOptions,
            retry: Duration,
            stream: Option<WatchStream>,
            seen: HashSet<(String, String, i64, WatchEventType)>,
            failed: bool,
        }
        let state = State {
            client: self.clone(),
            target: owned,
            options,
            retry,
            stream: None,
            seen: HashSet::new(),
            failed: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if s.stream.is_none() {
                    if s.failed {
                        tokio::time::sleep(s.retry).await;
                    }
                    let target = match (&s.target.0, &s.target.1) {
                        (Some(ns), Some(name)) => WatchTarget::Lease(ns, name),
                        (Some(ns), None) => WatchTarget::Namespace(ns),
                        _ => WatchTarget::All,
                    };
                    match s.client.watch(target, &s.options).await {
                        Ok(w) => {
                            s.failed = false;
                            s.stream = Some(w);
                        }
                        Err(e) => {
                            s.failed = true;
                            return Some((Err(e), s));
                        }
                    }
                }
                let Some(stream) = s.stream.as_mut() else {
                    continue;
                };
                let next = stream.next().await;
                if let Some(rev) = stream.last_revision() {
                    s.options.resume_from = Some(rev);
                }
                match next {
                    Ok(Some(e)) if e.event_type == WatchEventType::Error => {
                        s.stream = None;
                        s.failed = true;
                    }
                    Ok(Some(e)) => {
                        if let Some(l) = &e.lease
                            && !matches!(e.event_type, WatchEventType::Initial)
                        {
                            let id = (l.namespace.clone(), l.name.clone(), e.version, e.event_type);
                            if !s.seen.insert(id) {
                                continue;
                            }
                            // Bounded memory: old ids are only needed for one resume window.
                            if s.seen.len() > 100_000 {
                                s.seen.clear();
                            }
                        }
                        return Some((Ok(e), s));
                    }
                    Ok(None) => {
                        s.stream = None;
                        s.failed = true;
                    }
                    Err(e) => {
                        s.stream = None;
                        s.failed = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }
}

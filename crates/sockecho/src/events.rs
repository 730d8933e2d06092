//! The server's contract output: one line per event on standard output,
//! as text or JSON, flushed at once so scripts can wait on it.
//!
//! This is the only place that writes contract lines; logs go to standard
//! error through `tracing` and never mix with these.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use crate::endpoint::Endpoint;

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// `listen ok tcp://127.0.0.1:9999`, `connection from ...`, `closed ...`.
    #[default]
    Text,
    /// One JSON object per line with the key `event`.
    Json,
}

/// Where the server's events go. Cheap to clone: every connection task
/// holds one.
#[derive(Clone, Default)]
pub struct Events {
    inner: Option<Arc<Sink>>,
}

struct Sink {
    format: EventFormat,
    /// Drops the per-connection lines (`-q`), keeping `listen ok`.
    quiet: bool,
    out: Box<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("format", &self.inner.as_ref().map(|s| s.format))
            .finish()
    }
}

#[derive(Serialize)]
struct Record<'a> {
    event: &'a str,
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

impl Events {
    /// Events written to standard output.
    pub fn stdout(format: EventFormat, quiet: bool) -> Events {
        Events::to(format, quiet, |line| {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) must not stop the server; the
            // write error is ignored, like a dropped log line.
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        })
    }

    /// Events handed, one line at a time (newline included), to `out`.
    pub fn to(
        format: EventFormat,
        quiet: bool,
        out: impl Fn(&str) + Send + Sync + 'static,
    ) -> Events {
        Events {
            inner: Some(Arc::new(Sink {
                format,
                quiet,
                out: Box::new(out),
            })),
        }
    }

    /// No events at all (a server embedded in another program's tests).
    pub fn silent() -> Events {
        Events { inner: None }
    }

    /// The endpoint is bound and accepting traffic.
    pub fn listen(&self, endpoint: &Endpoint) {
        self.emit(false, Record::new("listen", endpoint), || {
            format!("listen ok {endpoint}")
        });
    }

    /// A `tls://` endpoint presents a self-signed certificate made at
    /// start: its SHA-256 fingerprint, right after its `listen ok` line.
    pub fn tls_fingerprint(&self, endpoint: &Endpoint, fingerprint: &str) {
        let mut record = Record::new("tls", endpoint);
        let value = format!("sha256:{fingerprint}");
        record.fingerprint = Some(value.clone());
        self.emit(false, record, || format!("tls fingerprint {value}"));
    }

    /// A stream connection was accepted.
    pub fn connection(&self, peer: &dyn std::fmt::Display, endpoint: &Endpoint) {
        let mut record = Record::new("connection", endpoint);
        record.peer = Some(peer.to_string());
        self.emit(true, record, || {
            format!("connection from {peer} on {endpoint}")
        });
    }

    /// A stream connection ended; `reason` is set when it ended on an error
    /// or a limit rather than a clean close.
    pub fn closed(
        &self,
        peer: &dyn std::fmt::Display,
        endpoint: &Endpoint,
        bytes_in: u64,
        bytes_out: u64,
        reason: Option<&str>,
    ) {
        let mut record = Record::new("closed", endpoint);
        record.peer = Some(peer.to_string());
        record.bytes_in = Some(bytes_in);
        record.bytes_out = Some(bytes_out);
        record.reason = reason;
        self.emit(true, record, || {
            // Exactly the contract's line: scripts match it. Why a
            // connection failed is in the JSON event's `reason` (and the
            // debug log).
            format!("closed {peer} in={bytes_in} out={bytes_out}")
        });
    }

    fn emit(&self, per_connection: bool, record: Record<'_>, text: impl FnOnce() -> String) {
        let Some(sink) = &self.inner else { return };
        if per_connection && sink.quiet {
            return;
        }
        let mut line = match sink.format {
            EventFormat::Text => text(),
            EventFormat::Json => serde_json::to_string(&record).unwrap_or_default(),
        };
        line.push('\n');
        (sink.out)(&line);
    }
}

impl<'a> Record<'a> {
    fn new(event: &'a str, endpoint: &Endpoint) -> Record<'a> {
        Record {
            event,
            endpoint: endpoint.to_string(),
            peer: None,
            bytes_in: None,
            bytes_out: None,
            reason: None,
            fingerprint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn capture(format: EventFormat, quiet: bool) -> (Events, Arc<Mutex<String>>) {
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let events = Events::to(format, quiet, move |line| {
            sink.lock().unwrap().push_str(line)
        });
        (events, seen)
    }

    #[test]
    fn text_lines_follow_the_contract() {
        let (events, seen) = capture(EventFormat::Text, false);
        let ep: Endpoint = "tcp://127.0.0.1:9999".parse().unwrap();
        events.listen(&ep);
        events.connection(&"127.0.0.1:5555", &ep);
        events.closed(&"127.0.0.1:5555", &ep, 3, 21, None);
        assert_eq!(
            *seen.lock().unwrap(),
            "listen ok tcp://127.0.0.1:9999\n\
             connection from 127.0.0.1:5555 on tcp://127.0.0.1:9999\n\
             closed 127.0.0.1:5555 in=3 out=21\n"
        );
    }

    #[test]
    fn quiet_keeps_listen_only() {
        let (events, seen) = capture(EventFormat::Text, true);
        let ep = Endpoint::default();
        events.listen(&ep);
        events.connection(&"x", &ep);
        events.closed(&"x", &ep, 0, 0, None);
        assert_eq!(*seen.lock().unwrap(), "listen ok tcp://127.0.0.1:9999\n");
    }

    #[test]
    fn json_lines_carry_the_contract_keys() {
        let (events, seen) = capture(EventFormat::Json, false);
        let ep = Endpoint::default();
        events.listen(&ep);
        events.closed(&"127.0.0.1:1", &ep, 5, 6, Some("idle timeout"));
        let text = seen.lock().unwrap().clone();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "listen");
        assert_eq!(lines[0]["endpoint"], "tcp://127.0.0.1:9999");
        assert_eq!(lines[1]["event"], "closed");
        assert_eq!(lines[1]["peer"], "127.0.0.1:1");
        assert_eq!(lines[1]["bytes_in"], 5);
        assert_eq!(lines[1]["bytes_out"], 6);
        assert_eq!(lines[1]["reason"], "idle timeout");
    }
}

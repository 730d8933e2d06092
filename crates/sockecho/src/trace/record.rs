//! One trace line: its fields in order, rendered as text
//! (`trace: EVENT key=value...`) or as a JSON object, and the kernel's
//! views that fill them.

use std::fmt::Display;
use std::os::fd::RawFd;

use super::diag::DiagSocket;
use super::tcp_info::{LISTEN, TcpInfo, state_name};
use super::timeline::Timeline;
use crate::events::EventFormat;

/// One trace line's fields, in order, rendered as text or JSON.
#[derive(Default)]
pub(super) struct Record {
    fields: Vec<(&'static str, Value)>,
}

enum Value {
    Text(String),
    Num(u64),
    /// A value with a text form and a JSON form of its own (a timeline:
    /// one word in text, a list in JSON).
    Both {
        text: String,
        json: String,
    },
}

impl Record {
    pub(super) fn text(&mut self, key: &'static str, value: &dyn Display) {
        self.fields.push((key, Value::Text(value.to_string())));
    }

    pub(super) fn num(&mut self, key: &'static str, value: u64) {
        self.fields.push((key, Value::Num(value)));
    }

    /// A connection's timeline (the `states` line).
    pub(super) fn timeline(&mut self, timeline: &Timeline) {
        self.fields.push((
            "timeline",
            Value::Both {
                text: timeline.text(),
                json: timeline.json(),
            },
        ));
    }

    /// The TCP state alone (a socket not yet connected or listening).
    pub(super) fn state(&mut self, tcp: Option<RawFd>) {
        if let Some(info) = tcp.and_then(TcpInfo::read) {
            self.text("state", &state_name(info.state));
        }
    }

    /// State and the listener's accept queue.
    pub(super) fn listener(&mut self, info: Option<TcpInfo>) {
        let Some(info) = info else {
            return;
        };
        self.text("state", &state_name(info.state));
        // Only a LISTEN socket reuses these two fields for its queue.
        if info.state == LISTEN {
            if let Some(queue) = info.unacked {
                self.num("queue", u64::from(queue));
            }
            if let Some(limit) = info.sacked {
                self.num("queue_max", u64::from(limit));
            }
        }
    }

    /// State and a connection's transmission figures.
    pub(super) fn connection(&mut self, info: Option<TcpInfo>) {
        let Some(info) = info else {
            return;
        };
        self.text("state", &state_name(info.state));
        let figures = [
            ("rtt_us", info.rtt_us.map(u64::from)),
            ("rttvar_us", info.rttvar_us.map(u64::from)),
            ("retransmits", info.total_retrans.map(u64::from)),
            ("snd_cwnd", info.snd_cwnd.map(u64::from)),
            ("bytes_acked", info.bytes_acked),
        ];
        for (key, value) in figures {
            if let Some(value) = value {
                self.num(key, value);
            }
        }
    }

    pub(super) fn render(&self, event: &str, format: EventFormat) -> String {
        let mut line = String::with_capacity(160);
        match format {
            EventFormat::Text => {
                line.push_str("trace: ");
                line.push_str(event);
                for (key, value) in &self.fields {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    let text = match value {
                        Value::Num(n) => {
                            line.push_str(&n.to_string());
                            continue;
                        }
                        Value::Text(t) | Value::Both { text: t, .. } => t,
                    };
                    // Quoted only when a space or quote would make the line
                    // ambiguous (a Unix path, an error reason), or a control
                    // character or backslash would break it or forge another
                    // (a peer's socket name holding a newline): Debug
                    // quoting escapes those.
                    if text.is_empty()
                        || text.contains([' ', '"', '=', '\\'])
                        || text.contains(char::is_control)
                    {
                        line.push_str(&format!("{text:?}"));
                    } else {
                        line.push_str(text);
                    }
                }
            }
            EventFormat::Json => {
                let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
                line.push_str("{\"event\":");
                line.push_str(&quote(event));
                for (key, value) in &self.fields {
                    line.push(',');
                    line.push_str(&quote(key));
                    line.push(':');
                    match value {
                        Value::Num(n) => line.push_str(&n.to_string()),
                        Value::Text(t) => line.push_str(&quote(t)),
                        Value::Both { json, .. } => line.push_str(json),
                    }
                }
                line.push('}');
            }
        }
        line.push('\n');
        line
    }
}

impl Record {
    /// What the kernel's diagnostics say of a socket: its state, and its
    /// timer when one runs.
    pub(super) fn diag(&mut self, socket: &DiagSocket) {
        self.text("state", &state_name(socket.state));
        if let Some(ms) = socket.timer_ms {
            self.num("timer_ms", u64::from(ms));
        }
    }
}

//! What a reflected request says, without I/O: the JSON answer and the
//! knobs a request turns (status, delay, size, extra headers), by header or
//! by query parameter, as mendhak/http-https-echo and ealen/echo-server
//! users write them.
//!
//! | header | query | does |
//! |---|---|---|
//! | `X-Echo-Status: N` | `echo_status=N` | answers with status N (200 to 599) |
//! | `X-Echo-Delay: DURATION` | `echo_delay=DURATION` | answers after DURATION (`250ms`, at most [`MAX_DELAY`]) |
//! | `X-Echo-Size: BYTES` | `echo_size=BYTES` | answers BYTES bytes (`application/octet-stream`) instead of the JSON, at most [`MAX_SIZE`] |
//! | `X-Echo-Header: NAME: VALUE` | `echo_header=NAME:VALUE` | adds a response header; repeatable |

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use crate::events::ConnectionFacts;

/// The longest delay a request may ask for: long enough to test any
/// client's or proxy's timeout, short enough not to pin connections.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The largest body a request may ask for: streamed from one static block,
/// so it costs no memory whatever its size.
pub const MAX_SIZE: u64 = 1 << 30;

/// Extra response headers one request may ask for.
pub const MAX_EXTRA_HEADERS: usize = 32;

/// What a request asks of its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    /// The status (`None`: 200).
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Answer this many bytes instead of the JSON.
    pub size: Option<u64>,
    /// Headers to add to the answer.
    pub headers: Vec<(String, String)>,
}

/// The request's knobs, from its headers (`(name, value)`, any case) and
/// query string: a header wins over the query parameter of the same knob.
/// `Err`: why the request is refused (400), in words.
pub fn knobs<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    query: &str,
) -> Result<Knobs, String> {
    let mut from_headers: Vec<(&str, String)> = Vec::new();
    for (name, value) in headers {
        let knob = match name.to_ascii_lowercase().as_str() {
            "x-echo-status" => "status",
            "x-echo-delay" => "delay",
            "x-echo-size" => "size",
            "x-echo-header" => "header",
            _ => continue,
        };
        let value = String::from_utf8_lossy(value).trim().to_owned();
        from_headers.push((knob, value));
    }
    let mut from_query: Vec<(&str, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let knob = match key {
            "echo_status" => "status",
            "echo_delay" => "delay",
            "echo_size" => "size",
            "echo_header" => "header",
            _ => continue,
        };
        from_query.push((knob, percent_decode(value)));
    }
    let pick = |knob: &str| {
        from_headers
            .iter()
            .rev()
            .find(|(k, _)| *k == knob)
            .or_else(|| from_query.iter().rev().find(|(k, _)| *k == knob))
            .map(|(_, v)| v.as_str())
    };
    let mut knobs = Knobs::default();
    if let Some(text) = pick("status") {
        let status: u16 = text
            .parse()
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| format!("echo status '{text}' is not a status from 200 to 599"))?;
        knobs.status = Some(status);
    }
    if let Some(text) = pick("delay") {
        let delay = crate::duration::parse(text).map_err(|e| format!("echo delay: {e}"))?;
        if delay > MAX_DELAY {
            return Err(format!(
                "echo delay '{text}' is over {}",
                crate::duration::format(MAX_DELAY)
            ));
        }
        knobs.delay = Some(delay);
    }
    if let Some(text) = pick("size") {
        let size: u64 = text
            .parse()
            .ok()
            .filter(|s| *s <= MAX_SIZE)
            .ok_or_else(|| {
                format!("echo size '{text}' is not a number of bytes up to {MAX_SIZE}")
            })?;
        knobs.size = Some(size);
    }
    let extra = from_headers
        .iter()
        .chain(&from_query)
        .filter(|(k, _)| *k == "header");
    for (_, text) in extra {
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("echo header '{text}' is not NAME:VALUE"))?;
        let (name, value) = (name.trim(), value.trim());
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(value).is_err()
        {
            return Err(format!("echo header '{text}' is not a valid header"));
        }
        if knobs.headers.len() == MAX_EXTRA_HEADERS {
            return Err(format!("more than {MAX_EXTRA_HEADERS} echo headers"));
        }
        knobs.headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(knobs)
}

/// `%XX` escapes decoded (and `+` as a space, as forms send it); an escape
/// that is not one is kept as written; invalid UTF-8 replaced.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection a request came on, as its answer tells it: fixed for the
/// connection's life.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The endpoint, as bound.
    pub endpoint: String,
    /// The client as the events name it.
    pub peer: String,
    /// The address it connected to, when known.
    pub local: Option<String>,
    /// This server's name (`--id`).
    pub id: String,
    /// The proxy's own address, when a PROXY header named the client.
    pub proxy: Option<String>,
    /// The PROXY header's TLVs, as JSON.
    pub proxy_tlvs: Option<serde_json::Value>,
    /// What the TLS handshake settled, as JSON.
    pub tls: Option<serde_json::Value>,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl Origin {
    /// The origin of a connection, from what accept learned of it.
    pub fn of(facts: &ConnectionFacts<'_>, peer: &str, local: Option<&str>, id: &str) -> Origin {
        Origin {
            endpoint: String::new(),
            peer: peer.to_owned(),
            local: local.map(str::to_owned),
            id: id.to_owned(),
            proxy: facts.proxy.map(str::to_owned),
            proxy_tlvs: facts
                .proxy_tlvs
                .and_then(|tlvs| serde_json::to_value(tlvs).ok()),
            tls: facts.tls.and_then(|tls| serde_json::to_value(tls).ok()),
            scheme: if facts.tls.is_some() { "https" } else { "http" },
        }
    }
}

/// One request as the JSON answer reflects it.
#[derive(Debug, Serialize)]
pub struct Reflection<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string (`""` if none).
    pub query: &'a str,
    /// `HTTP/1.1`, `HTTP/2`...
    pub http_version: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The Host header, or HTTP/2's `:authority`.
    pub host: Option<&'a str>,
    /// The headers, in the order received, names as written.
    pub headers: Vec<(&'a str, String)>,
    /// The body, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    /// The body in base64, when it is not UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The client, as the events name it.
    pub peer: &'a str,
    /// The original client: the first address of the forwarded chain,
    /// else the peer.
    pub client: String,
    /// The `X-Forwarded-For` chain, client first.
    pub forwarded_for: Vec<String>,
    /// The `Forwarded` header's elements (RFC 7239), each as its pairs.
    pub forwarded: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The address the client connected to.
    pub local: Option<&'a str>,
    /// The endpoint, as bound.
    pub endpoint: &'a str,
    /// This server's name (`--id`).
    pub id: &'a str,
    /// The proxy's own address, when a PROXY header named the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<&'a str>,
    /// The PROXY header's TLVs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_tlvs: Option<&'a serde_json::Value>,
    /// What the TLS handshake settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a serde_json::Value>,
}

impl<'a> Reflection<'a> {
    /// The reflection of a request: its head (`target` as sent, headers in
    /// order) and body, on the connection `origin`.
    pub fn of(
        method: &'a str,
        target: &'a str,
        http_version: &'a str,
        headers: &'a [(String, Vec<u8>)],
        body: &'a [u8],
        origin: &'a Origin,
    ) -> Reflection<'a> {
        let (path, query) = split_target(target);
        let values = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let forwarded_for: Vec<String> = values("x-forwarded-for")
            .flat_map(|v| {
                v.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        let forwarded: Vec<_> = values("forwarded")
            .flat_map(|v| forwarded_elements(&v))
            .collect();
        let client = forwarded
            .first()
            .and_then(|e| e.get("for"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| forwarded_for.first().cloned())
            .unwrap_or_else(|| origin.peer.clone());
        let (body, body_base64) = match std::str::from_utf8(body) {
            Ok(text) => (Some(text), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        };
        Reflection {
            method,
            path,
            query,
            http_version,
            scheme: origin.scheme,
            // HTTP/2 names the host in `:authority` (HTTP/1 in `Host`).
            host: headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("host"))
                .or_else(|| headers.iter().find(|(n, _)| n == ":authority"))
                .and_then(|(_, v)| std::str::from_utf8(v).ok()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            body,
            body_base64,
            peer: &origin.peer,
            client,
            forwarded_for,
            forwarded,
            local: origin.local.as_deref(),
            endpoint: &origin.endpoint,
            id: &origin.id,
            proxy: origin.proxy.as_deref(),
            proxy_tlvs: origin.proxy_tlvs.as_ref(),
            tls: origin.tls.as_ref(),
        }
    }
}

/// A request target's path and raw query (`""` when none). An absolute
/// target (`http://host/p?q`, as sent to a proxy) gives its path.
pub fn split_target(target: &str) -> (&str, &str) {
    let path_and_query = match target.find("://") {
        Some(at) => {
            let after = &target[at + 3..];
            after.find('/').map_or("/", |slash| &after[slash..])
        }
        None => target,
    };
    match path_and_query.split_once('?') {
        Some((path, query)) => (path, query),
        None => (path_and_query, ""),
    }
}

/// The elements of one `Forwarded` header value (RFC 7239): each a map of
/// its parameters (`for`, `by`, `proto`, `host`), names lowercased, quotes
/// taken off.
fn forwarded_elements(value: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    value
        .split(',')
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| {
                    let v = v.trim().trim_matches('"');
                    (k.trim().to_ascii_lowercase(), serde_json::Value::from(v))
                })
                .collect::<serde_json::Map<_, _>>()
        })
        .filter(|element| !element.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn knobs_come_from_headers_or_the_query_headers_first() {
        let headers = pairs(&[("X-Echo-Status", "418"), ("x-echo-header", "X-A: 1")]);
        let iter = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        let knobs = knobs(
            iter,
            "echo_status=503&echo_delay=250ms&echo_header=X-B:%202&echo_size=10",
        )
        .unwrap();
        assert_eq!(knobs.status, Some(418));
        assert_eq!(knobs.delay, Some(Duration::from_millis(250)));
        assert_eq!(knobs.size, Some(10));
        assert_eq!(
            knobs.headers,
            [
                ("X-A".to_owned(), "1".to_owned()),
                ("X-B".to_owned(), "2".to_owned())
            ]
        );
        for bad in [
            "echo_status=99",
            "echo_status=x",
            "echo_delay=2h",
            "echo_size=-1",
            "echo_header=nocolon",
        ] {
            assert!(super::knobs(std::iter::empty(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_reflection_keeps_order_case_and_the_forwarded_chain() {
        let headers = pairs(&[
            ("Host", "example.com"),
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
            (
                "Forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2",
            ),
        ]);
        let origin = Origin {
            peer: "127.0.0.1:5000".to_owned(),
            id: "a".to_owned(),
            scheme: "http",
            ..Origin::default()
        };
        let r = Reflection::of(
            "POST",
            "/p/q?x=1&y",
            "HTTP/1.1",
            &headers,
            b"\xff\x00",
            &origin,
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["path"], "/p/q");
        assert_eq!(json["query"], "x=1&y");
        assert_eq!(json["headers"][1][0], "X-Forwarded-For");
        assert_eq!(json["headers"][2][0], "x-forwarded-for");
        assert_eq!(
            json["forwarded_for"],
            serde_json::json!(["203.0.113.7", "10.0.0.2", "10.0.0.3"])
        );
        assert_eq!(json["forwarded"][0]["for"], "[2001:db8::1]:4711");
        assert_eq!(json["forwarded"][0]["proto"], "https");
        assert_eq!(json["client"], "[2001:db8::1]:4711");
        assert_eq!(json["body_base64"], "/wA=");
        assert!(json.get("body").is_none());
        assert_eq!(json["host"], "example.com");
        assert_eq!(split_target("http://h:1/a?b"), ("/a", "b"));
        assert_eq!(split_target("*"), ("*", ""));
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}

//! What a mistyped endpoint most likely meant: the "did you mean" of a
//! parse error (`udp:127.0.0.1:7000` is `udp://127.0.0.1:7000`). Asked
//! only once parsing has failed, so it may guess; a guess is offered only
//! when it parses, or as the form to follow (`udp://HOST:PORT`) when the
//! scheme was clearly meant but the rest is unreadable.

use std::net::Ipv6Addr;

use super::SCHEMES;

/// Schemes followed by `://HOST:PORT`; the others take `:PATH` or `:@NAME`.
const IP_SCHEMES: [&str; 7] = ["tcp", "udp", "tls", "http", "https", "ws", "wss"];

/// What other tools call our schemes (socat's `TCP4:`, `OPENSSL:`,
/// `UNIX-CONNECT:`; `unixgram` in systemd and Python), and our name.
const ALIASES: [(&str, &str); 13] = [
    ("tcp4", "tcp"),
    ("tcp6", "tcp"),
    ("udp4", "udp"),
    ("udp6", "udp"),
    ("ssl", "tls"),
    ("openssl", "tls"),
    ("unix-stream", "unix"),
    ("unix-connect", "unix"),
    ("unix-listen", "unix"),
    ("local", "unix"),
    ("unixgram", "unix-dgram"),
    ("unix-datagram", "unix-dgram"),
    ("unixdgram", "unix-dgram"),
];

/// `WORD SEPARATOR REST`: a leading word that could be a scheme (a letter,
/// then letters, digits, `-`, `_`, `+`), then colons and slashes, then the
/// rest. `udp:/x` is `("udp", ":/", "x")`.
pub(super) fn split(text: &str) -> Option<(&str, &str, &str)> {
    if !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let word_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+')))
        .unwrap_or(text.len());
    let (word, after) = text.split_at(word_end);
    // Colons, then slashes: `udp://::1:7000` keeps its address whole.
    let colons = after.len() - after.trim_start_matches(':').len();
    let slashes = after[colons..].len() - after[colons..].trim_start_matches('/').len();
    let sep_end = colons + slashes;
    if sep_end == 0 {
        return None;
    }
    let (sep, rest) = after.split_at(sep_end);
    Some((word, sep, rest))
}

/// The scheme `word` names exactly, but for case (`UDP`, `Unix_Dgram`).
pub(super) fn scheme_named(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase().replace('_', "-");
    SCHEMES.iter().copied().find(|s| *s == word)
}

/// Why a schemeless text that starts with a scheme's name did not take
/// the scheme (`udp:7000` would otherwise be TCP to a host named `udp`).
pub(super) fn misspelled_separator(word: &str, sep: &str) -> Option<String> {
    let scheme = scheme_named(word)?;
    let proper = separator(scheme);
    Some(if word != scheme {
        format!("the scheme '{word}' is written '{scheme}'")
    } else if sep == ":" {
        format!("missing '//' after '{word}:'")
    } else {
        format!("'{word}' is followed by '{proper}', not '{sep}'")
    })
}

/// What follows a scheme: `://` before a host, `:` before a path or name.
fn separator(scheme: &str) -> &'static str {
    if IP_SCHEMES.contains(&scheme) {
        "://"
    } else {
        ":"
    }
}

/// The scheme `word` most likely means: one of ours whatever its case or
/// `_`, another tool's name for it, or one typo away from exactly one of
/// ours (`upd`, `tpc`, `unix-dgarm`).
fn scheme_meant(word: &str) -> Option<&'static str> {
    if let Some(scheme) = scheme_named(word) {
        return Some(scheme);
    }
    let lower = word.to_ascii_lowercase().replace('_', "-");
    if let Some((_, scheme)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(scheme);
    }
    // One typo; in a short word only a letter wrong or two swapped
    // (`sctp` is not a misspelt tcp).
    let mut near = SCHEMES.iter().copied().filter(|s| {
        lower.len() >= 3 && typos(&lower, s) <= 1 && (lower.len() >= 5 || lower.len() == s.len())
    });
    match (near.next(), near.next()) {
        (Some(scheme), None) => Some(scheme),
        // `ucp` is one typo from udp and from tcp: no guess.
        _ => None,
    }
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`:
/// the optimal string alignment distance.
fn typos(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Whether `sep` is how `scheme` is followed in a form that parses:
/// `://` after an IP scheme; `:` then any slashes but exactly two after a
/// Unix one (`unix:/x`, `unix:///x`; `unix://x` is the trap).
fn written_right(word: &str, scheme: &str, sep: &str) -> bool {
    if word != scheme {
        return false;
    }
    if IP_SCHEMES.contains(&scheme) {
        return sep == "://";
    }
    match sep.strip_prefix(':') {
        Some(slashes) => !slashes.contains(':') && slashes.len() != 2,
        None => false,
    }
}

/// The form the user most likely meant by `text`, which did not parse.
pub(super) fn suggest(text: &str) -> Option<String> {
    let Some((word, sep, rest)) = split(text) else {
        return bracketed(text);
    };
    let Some(scheme) = scheme_meant(word) else {
        return bracketed(text);
    };
    if IP_SCHEMES.contains(&scheme) {
        if written_right(word, scheme, sep) {
            return bracketed(rest).map(|hp| format!("{scheme}://{hp}"));
        }
        let host_port = if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            // `udp:7000`: a bare port is on the lesson's host.
            format!("127.0.0.1:{rest}")
        } else {
            bracketed(rest).unwrap_or_else(|| rest.to_owned())
        };
        let candidate = format!("{scheme}://{host_port}");
        return Some(if parses(&candidate) {
            candidate
        } else {
            format!("{scheme}://HOST:PORT")
        });
    }
    if written_right(word, scheme, sep) {
        return None;
    }
    if rest.is_empty() {
        return Some(format!("{scheme}:PATH"));
    }
    // A Unix scheme: slashes in the separator were the path's own
    // (`unix://tmp/x` means /tmp/x); an abstract name keeps its `@`.
    let candidate = if rest.starts_with('@') || !sep.contains('/') {
        format!("{scheme}:{rest}")
    } else {
        format!("{scheme}:/{rest}")
    };
    Some(if parses(&candidate) {
        candidate
    } else {
        format!("{scheme}:PATH")
    })
}

/// `HOST:PORT` where HOST is an IPv6 address (with or without a zone)
/// written without brackets: the bracketed form (`::1:7000` is
/// `[::1]:7000`).
fn bracketed(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    let address = host.split_once('%').map_or(host, |(address, _)| address);
    let is_v6 = address.parse::<Ipv6Addr>().is_ok();
    let candidate = format!("[{host}]:{port}");
    (is_v6 && parses(&candidate)).then_some(candidate)
}

fn parses(text: &str) -> bool {
    super::parse(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;

    /// The hint in the parse error of `text`.
    fn hint(text: &str) -> Option<String> {
        let err = text.parse::<Endpoint>().expect_err(text);
        err.hint().map(str::to_owned)
    }

    #[test]
    fn a_mistyped_scheme_separator_gets_the_form_meant() {
        for (typed, meant) in [
            ("udp:127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp:/127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp//127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp/127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp:///127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp:://127.0.0.1:7000", "udp://127.0.0.1:7000"),
            ("udp:[::1]:7000", "udp://[::1]:7000"),
            ("udp:localhost:7000", "udp://localhost:7000"),
            ("udp:7000", "udp://127.0.0.1:7000"),
            ("tcp:9999", "tcp://127.0.0.1:9999"),
            ("tls:example.com:443", "tls://example.com:443"),
            ("tcp:/x", "tcp://HOST:PORT"),
            ("udp//x", "udp://HOST:PORT"),
            ("unix://tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix-dgram://tmp/e.dgram", "unix-dgram:/tmp/e.dgram"),
            ("unix//tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix/tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix-dgram//@echo", "unix-dgram:@echo"),
            ("UNIX:/tmp/e.sock", "unix:/tmp/e.sock"),
            ("unix//", "unix:PATH"),
        ] {
            assert_eq!(hint(typed).as_deref(), Some(meant), "{typed}");
        }
    }

    #[test]
    fn a_misspelled_scheme_gets_ours() {
        for (typed, meant) in [
            ("UDP://127.0.0.1:7", "udp://127.0.0.1:7"),
            ("Tcp://127.0.0.1:7", "tcp://127.0.0.1:7"),
            ("upd://127.0.0.1:7", "udp://127.0.0.1:7"),
            ("tpc://127.0.0.1:7", "tcp://127.0.0.1:7"),
            ("tsl://127.0.0.1:7", "tls://127.0.0.1:7"),
            ("tcp4://127.0.0.1:7", "tcp://127.0.0.1:7"),
            ("udp6://[::1]:7", "udp://[::1]:7"),
            ("ssl://127.0.0.1:443", "tls://127.0.0.1:443"),
            ("unix_dgram:/tmp/x", "unix-dgram:/tmp/x"),
            ("unix-dgarm:/tmp/x", "unix-dgram:/tmp/x"),
            ("unixgram:@echo", "unix-dgram:@echo"),
            ("unix-stream:/tmp/x", "unix:/tmp/x"),
        ] {
            assert_eq!(hint(typed).as_deref(), Some(meant), "{typed}");
        }
        // One typo from two schemes: no guess, the known ones are listed.
        let err = "ucp://127.0.0.1:7".parse::<Endpoint>().unwrap_err();
        assert_eq!(err.hint(), None);
        assert!(err.to_string().contains("known: tcp, udp, tls"), "{err}");
    }

    #[test]
    fn ipv6_without_brackets_gets_them() {
        for (typed, meant) in [
            ("::1:7000", "[::1]:7000"),
            ("2001:db8::1:80", "[2001:db8::1]:80"),
            ("fe80::1%eth0:7", "[fe80::1%eth0]:7"),
            ("udp://::1:7000", "udp://[::1]:7000"),
        ] {
            assert_eq!(hint(typed).as_deref(), Some(meant), "{typed}");
        }
    }

    #[test]
    fn no_hint_where_nothing_was_mistyped_but_the_value() {
        for text in [
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999",
            "udp://:80",
            "localhost",
            "bad host:80",
            "999.1.1.1:80",
            "65536",
            "unix:",
            "unix:@",
            "sctp://127.0.0.1:80",
        ] {
            assert_eq!(hint(text), None, "{text}");
        }
    }

    #[test]
    fn the_hint_is_said_in_the_message() {
        let err = "udp:127.0.0.1:7000".parse::<Endpoint>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "missing '//' after 'udp:' in 'udp:127.0.0.1:7000': did you mean udp://127.0.0.1:7000?"
            ),
            "{msg}"
        );
        assert!(!msg.contains("brackets"), "{msg}");
    }

    #[test]
    fn typo_distance() {
        assert_eq!(typos("udp", "udp"), 0);
        assert_eq!(typos("upd", "udp"), 1);
        assert_eq!(typos("ud", "udp"), 1);
        assert_eq!(typos("udpp", "udp"), 1);
        assert_eq!(typos("tcp", "udp"), 2);
    }
}

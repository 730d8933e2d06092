//! The greeting as a template: `{id}` (the server's name), `{peer}` (the
//! client, as the events name it) and `{local}` (the address the client
//! connected to) are filled in for each connection, so a client behind a
//! load balancer can tell which backend answered; `{{` and `}}` are
//! literal braces. Checked once when the server starts; rendered once per
//! connection, never per message.

use std::borrow::Cow;

/// What a greeting's placeholders stand for, for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Placeholders<'a> {
    /// `{id}`: the server's name (`--id`, by default the host name).
    pub id: &'a str,
    /// `{peer}`: the client as the events name it (behind a proxy, the
    /// client its PROXY header names).
    pub peer: &'a str,
    /// `{local}`: the address the client connected to (behind a proxy,
    /// the one its header names).
    pub local: &'a str,
}

/// Whether `template` needs filling in for each connection: it holds a
/// brace (a placeholder or an escaped brace). One without is sent as it is.
pub fn is_template(template: &[u8]) -> bool {
    template.iter().any(|&b| b == b'{' || b == b'}')
}

/// Checks that every brace in `template` is a known placeholder or an
/// escaped brace; the error says which is not and how to write one.
pub fn check(template: &[u8]) -> Result<(), String> {
    render_with(
        template,
        &Placeholders {
            id: "",
            peer: "",
            local: "",
        },
    )
    .map(drop)
}

/// `template` filled in; unchanged (borrowed) when it holds no brace. A
/// template [`check`] refused renders what it can (the bad brace kept).
pub fn render<'t>(template: &'t [u8], values: &Placeholders<'_>) -> Cow<'t, [u8]> {
    if !is_template(template) {
        return Cow::Borrowed(template);
    }
    match render_with(template, values) {
        Ok(out) => Cow::Owned(out),
        Err(_) => Cow::Borrowed(template),
    }
}

fn render_with(template: &[u8], values: &Placeholders<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.iter().position(|&b| b == b'{' || b == b'}') {
        out.extend_from_slice(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with(b"{{") || tail.starts_with(b"}}") {
            out.push(tail[0]);
            rest = &tail[2..];
            continue;
        }
        if tail[0] == b'}' {
            return Err("a '}' without its '{' (write }} for a literal brace)".to_owned());
        }
        let Some(close) = tail.iter().position(|&b| b == b'}') else {
            return Err("a '{' without its '}' (write {{ for a literal brace)".to_owned());
        };
        let value = match &tail[1..close] {
            b"id" => values.id,
            b"peer" => values.peer,
            b"local" => values.local,
            other => {
                return Err(format!(
                    "unknown placeholder {{{}}} (the placeholders are {{id}}, {{peer}} and {{local}}; write {{{{ and }}}} for literal braces)",
                    String::from_utf8_lossy(other)
                ));
            }
        };
        out.extend_from_slice(value.as_bytes());
        rest = &tail[close + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: Placeholders<'static> = Placeholders {
        id: "s1",
        peer: "192.0.2.7:40000",
        local: "127.0.0.1:8000",
    };

    fn rendered(template: &str) -> String {
        String::from_utf8(render(template.as_bytes(), &VALUES).into_owned()).unwrap()
    }

    #[test]
    fn placeholders_are_filled_in_and_braces_escaped() {
        assert_eq!(rendered("{id}\n"), "s1\n");
        assert_eq!(
            rendered("hello {peer} from {id} on {local}"),
            "hello 192.0.2.7:40000 from s1 on 127.0.0.1:8000"
        );
        assert_eq!(rendered("{{\"id\":\"{id}\"}}"), "{\"id\":\"s1\"}");
        assert_eq!(rendered("no braces"), "no braces");
        assert!(matches!(
            render(b"Connection success", &VALUES),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn bad_templates_say_what_to_write() {
        assert!(check(b"{id} {peer} {local} {{ }}").is_ok());
        let unknown = check(b"{name}").unwrap_err();
        assert!(unknown.contains("unknown placeholder {name}"), "{unknown}");
        assert!(check(b"{\"a\":1}").is_err());
        assert!(check(b"open {").unwrap_err().contains("{{"));
        assert!(check(b"close }").unwrap_err().contains("}}"));
        assert!(!is_template(b"plain"));
        assert!(is_template(b"{{"));
    }
}

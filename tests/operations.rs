//! Fitting where echo servers live: `sockecho completions SHELL` and
//! `sockecho man`, checked against the real tools that consume them (bash's
//! parser, man-db).
//!
//! A missing tool skips its test with a note, unless
//! `SOCKECHO_REQUIRE_INTEROP=1` (set by CI), where it fails instead.

use sockecho::Endpoint;
use sockecho::endpoint::SCHEMES;

use crate::common::*;

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "powershell", "elvish"];

/// `sockecho completions SHELL`, which must succeed.
fn completions(shell: &str) -> String {
    let out = sockecho(&["completions", shell], b"");
    assert_eq!(out.code(), 0, "completions {shell}: {}", out.stderr);
    assert!(out.stderr.is_empty(), "completions {shell}: {}", out.stderr);
    out.stdout_text()
}

#[test]
fn completions_for_every_shell_name_the_subcommands_and_their_flags() {
    for shell in SHELLS {
        let script = completions(shell);
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        // Generated from the parser's own definition: every subcommand and
        // a flag only `serve` has are there.
        for word in ["serve", "connect", "ping", "bench", "report", "merge"] {
            assert!(script.contains(word), "{shell}: no `{word}` in\n{script}");
        }
        assert!(script.contains("max-conns"), "{shell}: no --max-conns");
    }
}

#[test]
fn completion_scripts_parse_in_their_shells() {
    // bash is always there; the others are checked where installed.
    for (shell, check) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        if shell != "bash" && !has_tool(shell) {
            eprintln!("note: {shell} is not installed; its script is not parsed");
            continue;
        }
        if !require_tool(shell) {
            continue;
        }
        let out = run(shell, &[check], completions(shell).as_bytes());
        assert_eq!(
            out.code(),
            0,
            "{shell} {check} rejects the script: {}",
            out.stderr
        );
    }
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    let out = sockecho(&["completions", "tcsh"], b"");
    let line = assert_error_line(&out, 2);
    assert!(line.contains("tcsh"), "{line}");
    assert!(line.contains("bash"), "the valid shells are listed: {line}");
}

/// `sockecho man`, which must succeed.
fn man_page() -> String {
    let out = sockecho(&["man"], b"");
    assert_eq!(out.code(), 0, "man: {}", out.stderr);
    out.stdout_text()
}

#[test]
fn man_page_is_roff_with_a_section_per_subcommand() {
    let page = man_page();
    // Before the title only roff's preamble (string definitions) may come.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default();
    assert!(
        first.starts_with(".TH SOCKECHO 1 "),
        "not a man page: {first:?}"
    );
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "no {section}");
    }
    for sub in [
        "SERVE",
        "CONNECT",
        "PING",
        "BENCH",
        "REPORT MERGE",
        "COMPLETIONS",
        "MAN",
    ] {
        assert!(
            page.contains(&format!("\n.SH \"SOCKECHO {sub}\"\n")),
            "no section for sockecho {sub}"
        );
    }
    // The options themselves, from the same definition as --help.
    assert!(page.contains(r"\fB\-\-greeting\fR"), "serve's --greeting");
    assert!(page.contains(r"\fB\-\-pipeline\fR"), "bench's --pipeline");
    // One page: nothing points at separate per-subcommand pages.
    assert!(
        !page.contains(r"sockecho\-serve(1)"),
        "points at sockecho-serve(1)"
    );
    assert!(!page.contains("SOCKECHO HELP"), "clap's help subcommand");
}

#[test]
fn man_renders_the_page_without_warnings() {
    if !require_tool("man") {
        return;
    }
    // MANWIDTH: a fixed width off a terminal; --warnings: groff's
    // complaints about the roff go to standard error.
    let out = run(
        "env",
        &["MANWIDTH=80", "man", "--warnings", "-l", "-"],
        man_page().as_bytes(),
    );
    assert_eq!(out.code(), 0, "man -l - failed: {}", out.stderr);
    assert!(out.stderr.trim().is_empty(), "man warns: {}", out.stderr);
    let text = out.stdout_text();
    for want in [
        "SOCKECHO(1)",
        "SOCKECHO SERVE",
        "SOCKECHO REPORT MERGE",
        "--greeting",
    ] {
        assert!(
            text.contains(want),
            "no {want:?} in the rendered page:\n{text}"
        );
    }
}

/// The endpoint forms a help text lists: the first word of each line
/// after its `Endpoints` heading.
fn endpoint_forms(help: &str) -> Vec<String> {
    let at = help
        .find("\nEndpoints")
        .unwrap_or_else(|| panic!("no Endpoints section in\n{help}"));
    help[at + 1..]
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A listed form with its placeholders filled in, as a user types it.
fn filled_in(form: &str) -> String {
    form.replace("[V6%ZONE]", "[fe80::1%lo]")
        .replace("[V6]", "[::1]")
        .replace("HOST", "localhost")
        .replace("PORT", "9999")
        .replace("PATH", "/tmp/echo.sock")
        .replace("NAME", "echo")
}

#[test]
fn help_names_every_endpoint_form() {
    // Every form of every scheme the parser takes (the library's unit
    // tests keep SCHEMES to what it takes), and the schemeless ones.
    let mut wanted: Vec<String> = ["PORT", "HOST:PORT", "[V6]:PORT", "[V6%ZONE]:PORT"]
        .map(str::to_owned)
        .to_vec();
    for scheme in SCHEMES {
        if scheme.starts_with("unix") {
            wanted.push(format!("{scheme}:PATH"));
            wanted.push(format!("{scheme}:@NAME"));
        } else {
            wanted.push(format!("{scheme}://HOST:PORT"));
        }
    }
    for args in [
        &["--help"][..],
        &["-h"],
        &["serve", "--help"],
        &["connect", "--help"],
        &["ping", "--help"],
        &["bench", "--help"],
    ] {
        let out = sockecho(args, b"");
        assert_eq!(out.code(), 0, "{args:?}: {}", out.stderr);
        let forms = endpoint_forms(&out.stdout_text());
        for form in &wanted {
            assert!(forms.contains(form), "{args:?}: {form} not in {forms:?}");
        }
        // Nothing listed that the parser refuses.
        for form in &forms {
            let text = filled_in(form);
            if let Err(e) = text.parse::<Endpoint>() {
                panic!("{args:?} lists {form}, but {text} does not parse: {e}");
            }
        }
    }
    // The man page has the same list.
    let page = man_page();
    let at = page
        .find("\n.SH ENDPOINTS\n")
        .expect("no ENDPOINTS in the man page");
    for form in &wanted {
        let roff = form.replace('-', r"\-");
        assert!(page[at..].contains(&roff), "man page: no {form}");
    }
}

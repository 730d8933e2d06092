//! `sockecho completions` and `sockecho man`: shell completion scripts and
//! the man page, generated from the same clap definition as the parser and
//! the help, so none of them can drift from the flags that really exist.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, ENDPOINT_FORMS};

/// The command tree as the generators see it: built (so every subcommand
/// knows its full `sockecho SUB` name and inherits the global flags).
fn command(help_subcommand: bool) -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(!help_subcommand);
    cmd.build();
    cmd
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    // `sockecho help SUB` works, so it is completed too.
    let mut cmd = command(true);
    let name = cmd.get_name().to_owned();
    // clap_complete panics on a write error; render into memory, so a
    // closed pipe (`| head`) is an error we report, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script)
}

/// Writes the man page (roff): one page, `sockecho(1)`, holding the
/// top-level synopsis and options and then one section per subcommand
/// (`SOCKECHO SERVE`, `SOCKECHO REPORT MERGE`...) with its synopsis,
/// description and options.
///
/// One page rather than git-style `sockecho-serve(1)` pages, because
/// `sockecho man | man -l -` must show the whole reference, searchable with
/// `/`, without installing anything.
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    // clap's `help` subcommand only repeats --help; it gets no section.
    let cmd = command(false);
    let page = clap_mangen::Man::new(cmd.clone()).title("SOCKECHO");
    let mut top = Vec::new();
    page.render_title(&mut top)?;
    page.render_name_section(&mut top)?;
    page.render_synopsis_section(&mut top)?;
    page.render_description_section(&mut top)?;
    endpoints_section(&mut top);
    page.render_options_section(&mut top)?;
    page.render_subcommands_section(&mut top)?;
    let mut top = String::from_utf8_lossy(&top).into_owned();

    // clap_mangen's list names a separate page per subcommand
    // (`sockecho-serve(1)`); here each is a section of this page.
    for sub in cmd.get_subcommands() {
        let mut leaves = Vec::new();
        collect_leaves(sub, &mut leaves);
        let sections: Vec<String> = leaves.iter().map(|l| bin_name(l).to_uppercase()).collect();
        let path = bin_name(sub);
        top = top.replace(
            &format!("{}(1)", path.replace(' ', "\\-")),
            &format!("{path} (see {} below)", sections.join(", ")),
        );
    }
    let mut out = Preamble::new(out);
    out.write_roff(&top)?;

    let mut leaves = Vec::new();
    collect_leaves(&cmd, &mut leaves);
    for sub in &leaves {
        let page = clap_mangen::Man::new(sub.clone());
        let mut body = format!(".SH \"{}\"\n", bin_name(sub).to_uppercase()).into_bytes();
        page.render_synopsis_section(&mut body)?;
        page.render_description_section(&mut body)?;
        page.render_options_section(&mut body)?;
        // The subcommand's own sections become subsections of its section.
        let body: String = String::from_utf8_lossy(&body)
            .lines()
            .map(|line| match line.strip_prefix(".SH ") {
                Some(heading) if !line.starts_with(".SH \"") => format!(".SS {heading}\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        out.write_roff(&body)?;
    }

    let mut tail = Vec::new();
    page.render_version_section(&mut tail)?;
    out.write_roff(&String::from_utf8_lossy(&tail))
}

/// The endpoint forms `--help` lists after the options, one a line as
/// there (clap_mangen would fill them into one paragraph).
fn endpoints_section(roff: &mut Vec<u8>) {
    roff.extend_from_slice(b".SH ENDPOINTS\n");
    let mut lines = ENDPOINT_FORMS.lines();
    if let Some(heading) = lines.next() {
        roff.extend_from_slice(format!("{}\n", escape(heading)).as_bytes());
    }
    roff.extend_from_slice(b".PP\n.nf\n");
    for line in lines {
        roff.extend_from_slice(format!("{}\n", escape(line)).as_bytes());
    }
    roff.extend_from_slice(b".fi\n");
}

/// Text as roff shows it literally: backslashes and hyphens escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// Writes roff pieces rendered one by one, keeping only the first copy of
/// the preamble each rendering starts with (the definition of the `Aq`
/// string), so the page is one document rather than a concatenation.
struct Preamble<'a> {
    out: &'a mut dyn Write,
    seen: Vec<String>,
}

impl<'a> Preamble<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Preamble {
            out,
            seen: Vec::new(),
        }
    }

    fn write_roff(&mut self, roff: &str) -> io::Result<()> {
        for line in roff.lines() {
            // Conditional definitions (`.ie`/`.el`) are the preamble.
            if line.starts_with(".ie ") || line.starts_with(".el ") {
                if self.seen.iter().any(|seen| seen == line) {
                    continue;
                }
                self.seen.push(line.to_owned());
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }
}

/// Every command under `cmd` (itself included) that does something rather
/// than group others (`report` only groups `merge`), in `--help` order.
fn collect_leaves(cmd: &clap::Command, leaves: &mut Vec<clap::Command>) {
    if !cmd.has_subcommands() {
        leaves.push(cmd.clone());
        return;
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_leaves(sub, leaves);
    }
}

/// `sockecho serve`, `sockecho report merge`: the name a user types.
fn bin_name(cmd: &clap::Command) -> String {
    cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned()
}

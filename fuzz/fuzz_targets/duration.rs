//! Any text given as a DURATION (`-i`, `-W`, `--idle-timeout`...): parsing
//! never panics, and a parsed duration formats to text that parses back to
//! exactly the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockecho::duration::{MAX, format, parse};

fuzz_target!(|text: &str| {
    let Ok(d) = parse(text) else {
        return;
    };
    assert!(d <= MAX, "{text:?} parsed to {d:?}, past the limit");
    let shown = format(d);
    let again =
        parse(&shown).unwrap_or_else(|e| panic!("{text:?} formats as {shown:?}, which fails: {e}"));
    assert_eq!(again, d, "{text:?} formats as {shown:?}");
});

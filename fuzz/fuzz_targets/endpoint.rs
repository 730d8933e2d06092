//! Any text given as an ENDPOINT: parsing never panics, and whatever
//! parses prints in a canonical form that parses back to the same value
//! (the round trip `listen ok` lines and `bench --json` rely on).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockecho::Endpoint;

fuzz_target!(|text: &str| {
    let Ok(endpoint) = text.parse::<Endpoint>() else {
        return;
    };
    let canonical = endpoint.to_string();
    let again: Endpoint = canonical
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} printed as {canonical:?}, which does not parse: {e}"));
    assert_eq!(again, endpoint, "{text:?} printed as {canonical:?}");
    // The canonical form is a fixed point.
    assert_eq!(again.to_string(), canonical, "{text:?}");
});

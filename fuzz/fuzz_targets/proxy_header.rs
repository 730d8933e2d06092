//! Any bytes at the start of a connection to `serve --proxy-protocol`
//! (what a peer sends is the peer's to choose): parsing never panics;
//! whatever it says stays within the input and the limits; reading only
//! as far as the parser allows, as the server does, stops exactly at the
//! header's end, with the same header a parse of all the bytes gives; and
//! a header parsed is written again (version 2) to bytes that parse back
//! to the same header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockecho::proxy::{Command, MAX_LEN, Parsed, Version, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match &whole {
        Ok(Parsed::Done { len, .. }) => assert!(*len <= data.len() && *len <= MAX_LEN),
        Ok(Parsed::More(need)) => assert!(need.up_to >= 1 && data.len() + need.up_to <= MAX_LEN),
        Err(_) => {}
    }

    // Read as the server reads: at each step at most what `parse` allows
    // (through the first `\n` of a line), in steps as large as allowed.
    let mut have = 0;
    let stepwise = loop {
        match parse(&data[..have]) {
            Ok(Parsed::More(need)) => {
                let available = &data[have..];
                if available.is_empty() {
                    break None;
                }
                let window = &available[..need.up_to.min(available.len())];
                have += if need.line {
                    window
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(window.len(), |i| i + 1)
                } else {
                    window.len()
                };
            }
            other => break Some(other),
        }
    };
    if let Some(Ok(Parsed::Done { header, len })) = &stepwise {
        assert_eq!(*len, have, "the server would have read past the header");
        assert_eq!(
            whole.as_ref().ok(),
            Some(&Parsed::Done {
                header: header.clone(),
                len: *len
            }),
            "reading step by step and at once disagree"
        );
        // Written again, it reads back the same (a LOCAL header carries
        // nothing else; a version 1 header's UNKNOWN has no addresses).
        if header.command == Command::Proxy {
            let again = header.encode(Version::V2);
            match parse(&again) {
                Ok(Parsed::Done { header: back, len }) => {
                    assert_eq!(len, again.len());
                    assert_eq!(back.addresses, header.addresses);
                    assert_eq!(back.tlvs, header.tlvs);
                }
                other => panic!("{header:?} written as {again:?} parses as {other:?}"),
            }
        }
    }
});

//! SPIFFE id parsing, from text and from an X.509 certificate's DER: never a panic, and
//! whatever parses prints back as the same id and parses again to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use seam_proto::SpiffeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = text.parse::<SpiffeId>()
    {
        let again: SpiffeId = id.as_str().parse().expect("a parsed id parses again");
        assert_eq!(again, id);
        assert!(id.as_str().starts_with("spiffe://"));
        assert!(!id.trust_domain().is_empty());
    }
    let _ = SpiffeId::from_certificate_der(data);
});

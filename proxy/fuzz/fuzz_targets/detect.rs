//! Fuzzes protocol detection with arbitrary first bytes: it must never panic, a `Known`
//! answer must hold for every longer prefix of the same bytes, and `NeedMore` may only
//! come for fewer bytes than the longest thing it recognises.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/detect.rs"]
mod detect;

use detect::{Detection, MAX_PREFIX, detect};

fuzz_target!(|data: &[u8]| {
    let mut known = None;
    for end in 0..=data.len().min(MAX_PREFIX + 8) {
        match (detect(&data[..end]), known) {
            (Detection::Known(protocol), None) => known = Some(protocol),
            (Detection::Known(protocol), Some(first)) => assert_eq!(protocol, first),
            (Detection::NeedMore, Some(first)) => panic!("{first:?} became NeedMore"),
            (Detection::NeedMore, None) => assert!(end < MAX_PREFIX),
        }
    }
});

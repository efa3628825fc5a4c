//! The checksummed frame and the byte codec over arbitrary bytes: never a panic; a frame
//! that opens holds exactly the bytes framed, and values that decode encode back to the
//! bytes they came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sabot_core::codec::{Codec, frame, unframe};

fuzz_target!(|data: &[u8]| {
    if let Ok((version, body)) = unframe(data, b"FUZZ", 0..=255, "fuzz frame") {
        assert_eq!(frame(b"FUZZ", version, body), data);
    }
    // As a frame body, so that the codec sees the bytes too.
    let mut input = data;
    while let Ok(v) = <(Option<String>, (Vec<u8>, i64))>::decode(&mut input) {
        let mut again = Vec::new();
        v.encode(&mut again);
        let mut back = again.as_slice();
        assert_eq!(<(Option<String>, (Vec<u8>, i64))>::decode(&mut back).unwrap(), v);
    }
});

//! Decoding a state snapshot file from arbitrary bytes: an error or a summary, never a
//! panic, and never an allocation sized by an unchecked length.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let check = |bytes: &[u8]| {
        if let Ok(summary) = sabot_state::snapshot::inspect(bytes, Path::new("fuzz")) {
            assert!(
                summary
                    .groups
                    .iter()
                    .all(|g| usize::from(g.0) < summary.max_parallelism)
            );
        }
    };
    // As given, and with a valid whole-file checksum, so that the fuzzer gets past it
    // into the header and key-group sections.
    check(data);
    let mut sealed = data.to_vec();
    let crc = crc32fast::hash(data);
    sealed.extend_from_slice(&crc.to_le_bytes());
    check(&sealed);
});

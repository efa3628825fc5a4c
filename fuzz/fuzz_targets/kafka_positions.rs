//! Kafka source positions, staging files and schema-registry answers from arbitrary
//! bytes: an error or a value, never a panic; a decoded position encodes back to the
//! same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = sabot_kafka::decode_position(data) {
        assert_eq!(sabot_kafka::encode_position(entries.into_iter()), data);
    }
    let _ = sabot_kafka::txn::fuzz_decode_staged(data);
    let _ = sabot_kafka::codec::fuzz_parse_http_response(data);
});

//! The control-plane messages over arbitrary bytes, as they arrive and as the body of a
//! valid frame (so the checksum does not hide the decoder): never a panic, and a message
//! that decodes encodes to bytes that decode to it again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sabot_cluster::protocol::{ToCoordinator, ToWorker};
use sabot_core::codec::frame;

fuzz_target!(|data: &[u8]| {
    for bytes in [data.to_vec(), frame(b"SBCP", 1, data)] {
        if let Ok(m) = ToCoordinator::decode(&bytes) {
            assert_eq!(ToCoordinator::decode(&m.encode()).unwrap(), m);
        }
        if let Ok(m) = ToWorker::decode(&bytes) {
            assert_eq!(ToWorker::decode(&m.encode()).unwrap(), m);
        }
    }
});

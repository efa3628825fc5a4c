//! Restoring timers from arbitrary bytes: an error or a valid restore, never a panic, and
//! a restored service snapshots and restores again to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sabot_core::KeyGroupRange;
use sabot_time::TimerService;

fuzz_target!(|data: &[u8]| {
    let all = KeyGroupRange::for_subtask(128, 1, 0);
    let mut ints: TimerService<i64, (i64, bool)> = TimerService::new(128);
    if ints.restore(data, all).is_ok() {
        let again = ints.snapshot();
        let mut copy: TimerService<i64, (i64, bool)> = TimerService::new(128);
        copy.restore(&again, all).unwrap();
        assert_eq!(copy.snapshot(), again);
    }
    let mut strings: TimerService<String, Vec<u8>> = TimerService::new(128);
    let _ = strings.restore(data, KeyGroupRange::for_subtask(128, 2, 1));
});

//! Key hashing over arbitrary key columns: never panics, always lands in range, and equal
//! keys always hash equal.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sabot_core::arrow::array::{ArrayRef, BinaryArray, Int64Array};
use sabot_core::key::{KeyGroup, KeyGroupRange, hash_columns};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max_p = usize::from(head).max(1);
    let parallelism = 1 + usize::from(rest.first().copied().unwrap_or(0)) % max_p;
    let chunks: Vec<&[u8]> = rest.chunks(9).collect();
    let ints: ArrayRef = Arc::new(Int64Array::from_iter(chunks.iter().map(|c| {
        (c.len() == 9 && c[8] % 7 != 0).then(|| i64::from_le_bytes(c[..8].try_into().unwrap()))
    })));
    let bins: ArrayRef = Arc::new(BinaryArray::from_iter(
        chunks.iter().map(|c| (c.first() != Some(&0)).then_some(*c)),
    ));
    let mut hashes = Vec::new();
    hash_columns(&[ints.clone(), bins.clone()], &mut hashes).unwrap();
    let mut again = Vec::new();
    hash_columns(&[ints, bins], &mut again).unwrap();
    assert_eq!(hashes, again);
    for h in hashes {
        let kg = KeyGroup::of_hash(h, max_p);
        let owner = kg.subtask(max_p, parallelism);
        assert!(KeyGroupRange::for_subtask(max_p, parallelism, owner).contains(kg));
    }
});

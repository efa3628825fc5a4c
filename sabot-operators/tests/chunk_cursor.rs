//! A chunked source resumed any number of times at changing parallelism emits every
//! chunk exactly once.

use proptest::prelude::*;
use sabot_operators::ChunkCursor;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn every_chunk_exactly_once_across_rescales(
        chunks in 0u64..200,
        runs in prop::collection::vec((1usize..6, prop::collection::vec(0usize..40, 5)), 1..5),
    ) {
        let mut emitted = vec![0u32; chunks as usize];
        let mut positions: Option<Vec<Vec<u8>>> = None;
        let last = runs.len() - 1;
        for (i, (p, steps)) in runs.iter().enumerate() {
            let mut next_positions = Vec::new();
            for s in 0..*p {
                let mut c = ChunkCursor::new(s, *p);
                if let Some(pos) = &positions {
                    c.restore(pos).unwrap();
                }
                // The last run goes to the end; the others stop after a few chunks.
                let budget = if i == last { usize::MAX } else { steps[s % steps.len()] };
                let mut taken = 0;
                while taken < budget {
                    // Position before taking a chunk: what a checkpoint would record.
                    let before = c.position();
                    let chunk = c.next_chunk();
                    if chunk >= chunks {
                        // The end: the position stays where it was.
                        c = ChunkCursor::new(s, *p);
                        c.restore(&[before]).unwrap();
                        break;
                    }
                    emitted[chunk as usize] += 1;
                    taken += 1;
                }
                next_positions.push(c.position());
            }
            positions = Some(next_positions);
        }
        for (chunk, n) in emitted.iter().enumerate() {
            prop_assert_eq!(*n, 1, "chunk {} emitted {} times", chunk, n);
        }
    }
}

#[test]
fn damaged_positions_are_errors() {
    let mut c = ChunkCursor::new(0, 2);
    assert!(c.restore(&[b"nope".to_vec()]).is_err());
    let mut p = ChunkCursor::new(1, 3).position();
    p.truncate(p.len() - 1);
    assert!(c.restore(&[p]).is_err());
}

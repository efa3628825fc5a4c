//! Stress tests of the queues across threads: order, exactly-once delivery, exact drop
//! counts on close.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sabot_shuffle::queue::{self, TryPushError};

#[test]
fn spsc_delivers_100_000_items_in_order() {
    let (tx, rx) = queue::spsc(64);
    let t = std::thread::spawn(move || {
        for i in 0..100_000u32 {
            tx.push(i).unwrap();
        }
    });
    for i in 0..100_000u32 {
        assert_eq!(rx.pop(), Some(i));
    }
    assert_eq!(rx.pop(), None);
    t.join().unwrap();
}

#[test]
fn mpsc_delivers_4_x_25_000_items_exactly_once_in_per_producer_order() {
    let (tx, rx) = queue::bounded(16);
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..25_000u64 {
                    tx.push(p << 32 | i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u64; 4];
    let mut n = 0;
    while let Some(v) = rx.pop() {
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(
            i, next[p],
            "producer {p}'s items out of order or duplicated"
        );
        next[p] += 1;
        n += 1;
    }
    assert_eq!(n, 100_000);
    assert_eq!(next, [25_000; 4]);
    for p in producers {
        p.join().unwrap();
    }
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn items_left_in_a_dropped_queue_are_dropped_exactly_once() {
    for spsc in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let item = || Counted(drops.clone());
        if spsc {
            let (tx, rx) = queue::spsc(8);
            for _ in 0..5 {
                tx.push(item()).unwrap_or_else(|_| panic!("room"));
            }
            drop(rx.pop());
            drop(rx);
            assert_eq!(
                drops.load(Ordering::SeqCst),
                5,
                "receiver drop frees the rest"
            );
            // A push after the receiver left hands the item back; dropping it counts once.
            match tx.try_push(item()) {
                Err(TryPushError::Closed(v)) => drop(v),
                other => panic!("{other:?}"),
            }
            drop(tx);
            assert_eq!(drops.load(Ordering::SeqCst), 6);
        } else {
            let (tx, rx) = queue::bounded(8);
            for _ in 0..7 {
                tx.push(item()).unwrap_or_else(|_| panic!("room"));
            }
            drop(tx);
            drop(rx.pop());
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            drop(rx);
            assert_eq!(drops.load(Ordering::SeqCst), 7);
        }
    }
}

#[test]
fn a_blocked_sender_wakes_when_the_receiver_leaves() {
    let (tx, rx) = queue::bounded::<u32>(2);
    tx.push(1).unwrap();
    tx.push(2).unwrap();
    let t = std::thread::spawn(move || tx.push(3));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "the sender must block on a full queue");
    drop(rx);
    assert_eq!(t.join().unwrap(), Err(3));
}

#[test]
fn a_blocked_receiver_wakes_when_the_last_sender_leaves() {
    let (tx, rx) = queue::bounded::<u32>(4);
    let tx2 = tx.clone();
    let t = std::thread::spawn(move || rx.pop());
    std::thread::sleep(Duration::from_millis(20));
    drop(tx);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!t.is_finished(), "one sender is still there");
    drop(tx2);
    assert_eq!(t.join().unwrap(), None);
}

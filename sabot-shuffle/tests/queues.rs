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

/// Every wait that outlasts the spinning goes to sleep, so each round trip here puts a
/// receiver (and, through the capacity of 1, a sender) to sleep: a lost wake-up leaves a
/// `pop_timeout` waiting its full 10 s and fails the test.
#[test]
fn sleepers_are_woken_every_time_across_thousands_of_round_trips() {
    let (ping_tx, ping_rx) = queue::spsc::<u32>(1);
    let (pong_tx, pong_rx) = queue::spsc::<u32>(1);
    let echo = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(Some(v)) = ping_rx.pop_timeout(Duration::from_secs(10)) {
            if v % 4 == 0 {
                // Long enough for the other side to stop spinning and sleep.
                std::thread::sleep(Duration::from_micros(50));
            }
            pong_tx.push(v).unwrap();
            n += 1;
        }
        n
    });
    for i in 0..2_000 {
        if i % 4 == 1 {
            std::thread::sleep(Duration::from_micros(50));
        }
        ping_tx.push(i).unwrap();
        let back = pong_rx.pop_timeout(Duration::from_secs(10));
        assert_eq!(
            back,
            Ok(Some(i)),
            "round trip {i}: lost wake-up or wrong item"
        );
    }
    drop(ping_tx);
    assert_eq!(echo.join().unwrap(), 2_000);
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

/// A minimal executor: polls on the current thread, parks until woken.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = std::pin::pin!(f);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => return v,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

#[test]
fn async_push_and_pop_wait_for_room_and_items() {
    // An async producer against a blocking consumer, through a queue of two.
    let (mut tx, rx) = queue::bounded::<u32>(2);
    let consumer = std::thread::spawn(move || {
        let mut n = 0u32;
        while let Some(v) = rx.pop() {
            assert_eq!(v, n);
            n += 1;
        }
        n
    });
    block_on(async {
        for i in 0..50_000u32 {
            tx.push_async(i).await.unwrap();
        }
    });
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 50_000);

    // A blocking producer against an async consumer.
    let (tx, mut rx) = queue::spsc::<u32>(2);
    let producer = std::thread::spawn(move || {
        for i in 0..50_000u32 {
            tx.push(i).unwrap();
        }
    });
    let got = block_on(async {
        let mut n = 0u32;
        while let Some(v) = rx.pop_async().await {
            assert_eq!(v, n);
            n += 1;
        }
        n
    });
    assert_eq!(got, 50_000);
    producer.join().unwrap();
}

#[test]
fn async_waiters_wake_when_the_other_side_leaves() {
    let (tx, mut rx) = queue::bounded::<u32>(2);
    let t = std::thread::spawn(move || block_on(rx.pop_async()));
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        !t.is_finished(),
        "pop_async must wait on an open empty queue"
    );
    drop(tx);
    assert_eq!(t.join().unwrap(), None);

    let (mut tx, rx) = queue::spsc::<u32>(2);
    tx.push(1).unwrap();
    tx.push(2).unwrap();
    let t = std::thread::spawn(move || block_on(tx.push_async(3)));
    std::thread::sleep(Duration::from_millis(30));
    assert!(!t.is_finished(), "push_async must wait on a full queue");
    drop(rx);
    assert_eq!(t.join().unwrap(), Err(3));
}

#[test]
fn fan_in_delivers_4_x_25_000_items_exactly_once_in_per_producer_order() {
    let (senders, rx) = queue::fan_in(4, 8);
    let producers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, tx)| {
            std::thread::spawn(move || {
                for i in 0..25_000u64 {
                    tx.push((p as u64) << 32 | i).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u64; 4];
    while let Some(v) = rx.pop() {
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(
            i, next[p],
            "producer {p}'s items out of order or duplicated"
        );
        next[p] += 1;
    }
    assert_eq!(
        next, [25_000; 4],
        "the receiver ends only after every producer left"
    );
    for p in producers {
        p.join().unwrap();
    }
}

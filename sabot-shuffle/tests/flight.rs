//! The Arrow Flight exchange over loopback: round trips, backpressure, peers going away
//! and malformed frames.

#![cfg(feature = "flight")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use proptest::prelude::*;
use sabot_core::arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, StringArray,
};
use sabot_core::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_core::{CheckpointBarrier, CheckpointId, Message, SchemaRef, Timestamp};
use sabot_shuffle::ShuffleError;
use sabot_shuffle::flight::wire::FrameEncoder;
use sabot_shuffle::flight::{ChannelId, Delivery, FlightConfig, ShuffleClient, ShuffleServer};
use sabot_shuffle::queue::{self, FanInReceiver};

/// One server for the whole file; every test uses channels of its own.
fn server() -> &'static ShuffleServer {
    static SERVER: OnceLock<ShuffleServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        ShuffleServer::start("127.0.0.1:0".parse().unwrap(), FlightConfig::default()).unwrap()
    })
}

fn next_exchange() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Registers one channel on `server` and returns its receiving queue.
fn receive_on(
    server: &ShuffleServer,
    channel: ChannelId,
    schema: &SchemaRef,
    capacity: usize,
) -> FanInReceiver<Delivery> {
    let (mut tx, rx) = queue::fan_in(1, capacity);
    server.register(channel, schema.clone(), tx.remove(0));
    rx
}

#[derive(Clone, Copy, Debug)]
enum Col {
    Int,
    Float,
    Text,
    Bool,
    Dict,
}

fn column(kind: Col, rows: usize, nullable: bool, seed: u64) -> (Field, ArrayRef) {
    let v = |i: usize| {
        (seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i as u64)
            >> 7) as i64
    };
    let null = |i: usize| nullable && v(i) % 5 == 0;
    let name = format!("{kind:?}").to_lowercase();
    let (dt, array): (DataType, ArrayRef) = match kind {
        Col::Int => (
            DataType::Int64,
            Arc::new(
                (0..rows)
                    .map(|i| (!null(i)).then(|| v(i)))
                    .collect::<Int64Array>(),
            ),
        ),
        Col::Float => (
            DataType::Float64,
            Arc::new(
                (0..rows)
                    .map(|i| (!null(i)).then(|| v(i) as f64 / 7.0))
                    .collect::<Float64Array>(),
            ),
        ),
        Col::Text => (
            DataType::Utf8,
            Arc::new(
                (0..rows)
                    .map(|i| (!null(i)).then(|| format!("s{}", v(i) % 1000)))
                    .collect::<StringArray>(),
            ),
        ),
        Col::Bool => (
            DataType::Boolean,
            Arc::new(
                (0..rows)
                    .map(|i| (!null(i)).then(|| v(i) % 2 == 0))
                    .collect::<BooleanArray>(),
            ),
        ),
        Col::Dict => {
            let values = ["de", "fr", "us", "jp"];
            let a: DictionaryArray<Int32Type> = (0..rows)
                .map(|i| (!null(i)).then(|| values[(v(i) % 4) as usize]))
                .collect();
            let a: ArrayRef = Arc::new(a);
            (a.data_type().clone(), a)
        }
    };
    (Field::new(name, dt, nullable), array)
}

fn schema_and_batches(cols: &[(Col, bool)], sizes: &[usize]) -> (SchemaRef, Vec<RecordBatch>) {
    let fields: Vec<Field> = cols
        .iter()
        .enumerate()
        .map(|(i, (k, n))| {
            let (f, _) = column(*k, 0, *n, 0);
            f.with_name(format!("c{i}"))
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batches = sizes
        .iter()
        .enumerate()
        .map(|(b, &rows)| {
            let arrays = cols
                .iter()
                .enumerate()
                .map(|(i, (k, n))| column(*k, rows, *n, (b * 31 + i) as u64).1)
                .collect();
            RecordBatch::try_new(schema.clone(), arrays).unwrap()
        })
        .collect();
    (schema, batches)
}

/// A message sequence: batches with watermarks, barriers and idleness between them.
fn script(batches: Vec<RecordBatch>, controls: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    for (i, b) in batches.into_iter().enumerate() {
        out.push(Message::Data(b));
        match controls.get(i).copied().unwrap_or(0) % 4 {
            1 => out.push(Message::Watermark(Timestamp::from_millis(
                i as i64 * 10 - 5,
            ))),
            2 => out.push(Message::Barrier(CheckpointBarrier {
                id: CheckpointId(i as u64 + 1),
                triggered_at: Timestamp::from_millis(1_700_000_000_000 + i as i64),
            })),
            3 => out.push(Message::Idle),
            _ => {}
        }
    }
    out.push(Message::EndOfStream);
    out
}

fn same(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Data(x), Message::Data(y)) => x == y,
        (Message::Watermark(x), Message::Watermark(y)) => x == y,
        (Message::Barrier(x), Message::Barrier(y)) => x == y,
        (Message::Idle, Message::Idle) | (Message::EndOfStream, Message::EndOfStream) => true,
        _ => false,
    }
}

fn col_strategy() -> impl Strategy<Value = (Col, bool)> {
    (
        prop_oneof![
            Just(Col::Int),
            Just(Col::Float),
            Just(Col::Text),
            Just(Col::Bool),
            Just(Col::Dict)
        ],
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random schemas, batch sizes and control messages arrive unchanged and in order.
    #[test]
    fn random_batches_round_trip_in_order(
        cols in prop::collection::vec(col_strategy(), 1..6),
        sizes in prop::collection::vec(0usize..3000, 0..8),
        controls in prop::collection::vec(any::<u8>(), 8),
    ) {
        let (schema, batches) = schema_and_batches(&cols, &sizes);
        let sent = script(batches, &controls);
        let channel = ChannelId::new(next_exchange(), 3, 1);
        let rx = receive_on(server(), channel, &schema, 4);
        let mut tx = server().client(server().local_addr()).open(channel, schema);
        let expected = sent.clone();
        let sender = std::thread::spawn(move || {
            for m in sent {
                tx.send(m)?;
            }
            tx.finish()
        });
        for want in &expected {
            let (from, got) = rx.pop().expect("the channel ended early");
            prop_assert_eq!(from, 3);
            let got = got.unwrap();
            prop_assert!(same(want, &got), "sent {:?}, received {:?}", want, got);
        }
        sender.join().unwrap().unwrap();
    }
}

#[test]
fn a_stalled_receiver_stops_the_sender_after_a_bounded_number_of_batches() {
    let (schema, batches) = schema_and_batches(&[(Col::Int, false), (Col::Text, true)], &[4096]);
    let batch = batches[0].clone();
    let channel = ChannelId::new(next_exchange(), 0, 0);
    let rx = receive_on(server(), channel, &schema, 2);
    let mut tx = server().client(server().local_addr()).open(channel, schema);
    let accepted = Arc::new(AtomicUsize::new(0));
    let total = 500;
    let counter = accepted.clone();
    let sender = std::thread::spawn(move || {
        for _ in 0..total {
            tx.send(Message::Data(batch.clone()))?;
            counter.fetch_add(1, Ordering::SeqCst);
        }
        tx.send(Message::EndOfStream)?;
        tx.finish()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Nobody pops: the receiver's queue (2), 8 initial credits, the sender's queue (4)
    // and one message in the sender's hands bound what it accepts.
    let stalled_at = accepted.load(Ordering::SeqCst);
    assert!(
        stalled_at <= 2 + 8 + 4 + 2,
        "the sender ran ahead of a stalled receiver: {stalled_at} batches accepted"
    );
    assert!(!sender.is_finished());
    for _ in 0..total {
        let (_, m) = rx.pop().unwrap();
        assert_eq!(m.unwrap().num_rows(), 4096);
    }
    assert!(matches!(rx.pop().unwrap().1, Ok(Message::EndOfStream)));
    sender.join().unwrap().unwrap();
}

#[test]
fn the_sender_gets_an_error_when_the_receiving_worker_dies() {
    let server =
        ShuffleServer::start("127.0.0.1:0".parse().unwrap(), FlightConfig::default()).unwrap();
    let (schema, batches) = schema_and_batches(&[(Col::Int, false)], &[1000]);
    let channel = ChannelId::new(next_exchange(), 0, 0);
    let rx = receive_on(&server, channel, &schema, 2);
    let client = ShuffleClient::connect(server.local_addr(), FlightConfig::default()).unwrap();
    let mut tx = client.open(channel, schema);
    tx.send(Message::Data(batches[0].clone())).unwrap();
    assert!(rx.pop().unwrap().1.is_ok());
    // The receiving worker's network stops abruptly, as when its process is killed.
    drop(rx);
    drop(server);
    let started = Instant::now();
    let error = loop {
        if let Err(e) = tx.send(Message::Data(batches[0].clone())) {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no error after 20 s"
        );
    };
    assert!(
        matches!(error, ShuffleError::PeerLost { .. }),
        "unexpected error: {error}"
    );
    assert!(error.to_string().contains(&channel.to_string()), "{error}");
}

#[test]
fn the_receiver_gets_an_error_when_the_sending_worker_dies() {
    let (schema, batches) = schema_and_batches(&[(Col::Int, false)], &[1000]);
    let channel = ChannelId::new(next_exchange(), 2, 0);
    let rx = receive_on(server(), channel, &schema, 4);
    let client = ShuffleClient::connect(server().local_addr(), FlightConfig::default()).unwrap();
    let mut tx = client.open(channel, schema);
    tx.send(Message::Data(batches[0].clone())).unwrap();
    assert!(rx.pop().unwrap().1.is_ok());
    // The sending worker's network stops abruptly (its runtime goes with the client).
    drop(client);
    let (from, got) = rx.pop_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(from, 2);
    let error = got.unwrap_err();
    assert!(
        matches!(error, ShuffleError::PeerLost { .. }),
        "unexpected error: {error}"
    );
    drop(tx);
}

#[test]
fn a_sender_that_ends_without_end_of_stream_is_reported_as_lost() {
    let (schema, _) = schema_and_batches(&[(Col::Int, false)], &[]);
    let channel = ChannelId::new(next_exchange(), 1, 0);
    let rx = receive_on(server(), channel, &schema, 4);
    let mut tx = server().client(server().local_addr()).open(channel, schema);
    tx.send(Message::Watermark(Timestamp::from_millis(5)))
        .unwrap();
    drop(tx);
    assert!(matches!(rx.pop().unwrap().1, Ok(Message::Watermark(_))));
    let error = rx.pop().unwrap().1.unwrap_err();
    assert!(
        error.to_string().contains("before its end-of-stream"),
        "{error}"
    );
}

#[test]
fn an_unreachable_peer_is_a_clear_error_after_the_connect_timeout() {
    // A port nobody listens on: bind, note the port, close.
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = FlightConfig::default().with_connect_timeout(Duration::from_millis(300));
    let client = ShuffleClient::connect(addr, config).unwrap();
    let (schema, _) = schema_and_batches(&[(Col::Int, false)], &[]);
    let mut tx = client.open(ChannelId::new(1, 0, 0), schema);
    let error = loop {
        if let Err(e) = tx.send(Message::Idle) {
            break e;
        }
    };
    assert!(matches!(error, ShuffleError::Connect { .. }), "{error}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

/// A sender of another session (a subtask left from an earlier attempt of a cluster
/// job) is refused, naming both sessions; the channel still takes the sender of its own
/// session.
#[test]
fn a_sender_of_another_session_is_refused() {
    let config = FlightConfig::default().with_session(4);
    let server = ShuffleServer::start("127.0.0.1:0".parse().unwrap(), config.clone()).unwrap();
    let (schema, _) = schema_and_batches(&[(Col::Int, false)], &[]);
    let channel = ChannelId::new(3, 0, 0);
    let rx = receive_on(&server, channel, &schema, 4);

    let stale =
        ShuffleClient::connect(server.local_addr(), config.clone().with_session(3)).unwrap();
    let mut tx = stale.open(channel, schema.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        if let Err(e) = tx.send(Message::Idle) {
            break e;
        }
        assert!(Instant::now() < deadline, "the stale sender was accepted");
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = error.to_string();
    assert!(
        text.contains("belongs to session 3, this worker runs session 4"),
        "{text}"
    );

    let current = ShuffleClient::connect(server.local_addr(), config).unwrap();
    let mut tx = current.open(channel, schema);
    tx.send(Message::Watermark(Timestamp::from_millis(9)))
        .unwrap();
    tx.send(Message::EndOfStream).unwrap();
    tx.finish().unwrap();
    assert!(matches!(rx.pop().unwrap().1, Ok(Message::Watermark(_))));
    assert!(matches!(rx.pop().unwrap().1, Ok(Message::EndOfStream)));
}

/// Control messages between workers (for checkpoints across processes): taken by the
/// peer's handler in order, retried until the handler is set, refused from another
/// session, and a handler's error comes back to the sender.
#[test]
fn control_messages_reach_the_peers_handler() {
    let config = FlightConfig::default()
        .with_session(2)
        .with_connect_timeout(Duration::from_secs(5));
    let server =
        Arc::new(ShuffleServer::start("127.0.0.1:0".parse().unwrap(), config.clone()).unwrap());
    let got = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    {
        // The handler comes late: the first message waits for it.
        let (server, got) = (server.clone(), got.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            server.on_control(Arc::new(move |m: &[u8]| {
                if m == b"bad" {
                    return Err("not a report".to_string());
                }
                got.lock().unwrap().push(m.to_vec());
                Ok(())
            }));
        });
    }
    let client = ShuffleClient::connect(server.local_addr(), config.clone()).unwrap();
    for i in 0..20u8 {
        client.control(&[i, i]).unwrap();
    }
    assert_eq!(
        *got.lock().unwrap(),
        (0..20u8).map(|i| vec![i, i]).collect::<Vec<_>>()
    );
    let e = client.control(b"bad").unwrap_err().to_string();
    assert!(e.contains("not a report"), "{e}");
    let stale = ShuffleClient::connect(server.local_addr(), config.with_session(1)).unwrap();
    let e = stale.control(b"x").unwrap_err().to_string();
    assert!(e.contains("session 1, this worker runs session 2"), "{e}");
    assert_eq!(got.lock().unwrap().len(), 20);
}

#[test]
fn a_registered_channel_nobody_opens_fails_after_the_timeout() {
    let config = FlightConfig::default().with_connect_timeout(Duration::from_millis(200));
    let server = ShuffleServer::start("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let (schema, _) = schema_and_batches(&[(Col::Int, false)], &[]);
    let channel = ChannelId::new(7, 1, 0);
    let rx = receive_on(&server, channel, &schema, 2);
    let (from, got) = rx.pop_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(from, 1);
    assert!(matches!(got, Err(ShuffleError::NoUpstream { .. })));
}

/// Sends raw frames with the plain Flight client and returns the server's answer.
fn send_raw(frames: Vec<FlightData>) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server().local_addr()))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client = FlightServiceClient::new(channel);
        let mut replies = client
            .do_put(futures::stream::iter(frames))
            .await?
            .into_inner();
        while replies.message().await?.is_some() {}
        Ok(())
    })
}

#[test]
fn malformed_frames_are_errors_on_both_sides_and_the_server_keeps_serving() {
    let (schema, batches) = schema_and_batches(&[(Col::Int, false), (Col::Text, true)], &[100]);

    // Not a channel descriptor at all.
    let bad_open = FlightData::new()
        .with_descriptor(FlightDescriptor::new_cmd(b"hello".to_vec()))
        .with_data_header(vec![1, 2, 3]);
    let e = send_raw(vec![bad_open]).unwrap_err();
    assert!(e.message().contains("malformed shuffle message"), "{e:?}");

    // A good opening, then broken frames; the subtask gets the error too.
    let mut good = Vec::new();
    FrameEncoder::default()
        .encode(&Message::Data(batches[0].clone()), &mut good)
        .unwrap();
    let good = good.pop().unwrap();
    let mut truncated = good.clone();
    truncated.data_body = truncated.data_body.slice(..truncated.data_body.len() / 2);
    let mut flipped = good.clone();
    let mut header = flipped.data_header.to_vec();
    for b in header.iter_mut().skip(8).step_by(3) {
        *b ^= 0x5a;
    }
    flipped.data_header = header.into();
    let cases: Vec<(&str, FlightData)> = vec![
        (
            "garbage header",
            FlightData::new().with_data_header(vec![0xff; 40]),
        ),
        ("truncated body", truncated),
        ("flipped header bytes", flipped),
        (
            "unknown control",
            FlightData::new().with_app_metadata(b"Zzz".to_vec()),
        ),
        (
            "short watermark",
            FlightData::new().with_app_metadata(b"W12".to_vec()),
        ),
        ("empty frame", FlightData::new()),
    ];
    for (what, frame) in cases {
        let channel = ChannelId::new(next_exchange(), 0, 0);
        let rx = receive_on(server(), channel, &schema, 4);
        let e = send_raw(vec![FrameEncoder::default().open(channel, &schema), frame]).unwrap_err();
        assert!(e.message().contains("malformed"), "{what}: {e:?}");
        let (_, got) = rx.pop().unwrap();
        let error = got.unwrap_err();
        assert!(
            matches!(error, ShuffleError::Malformed { channel: Some(c), .. } if c == channel),
            "{what}: {error}"
        );
    }

    // A schema other than the registered one.
    let channel = ChannelId::new(next_exchange(), 0, 0);
    let rx = receive_on(server(), channel, &schema, 4);
    let other = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
    let e = send_raw(vec![FrameEncoder::default().open(channel, &other)]).unwrap_err();
    assert!(e.message().contains("differs from the expected"), "{e:?}");
    assert!(rx.pop().unwrap().1.is_err());

    // Still serving.
    let channel = ChannelId::new(next_exchange(), 0, 0);
    let rx = receive_on(server(), channel, &schema, 4);
    let mut tx = server().client(server().local_addr()).open(channel, schema);
    tx.send(Message::Data(batches[0].clone())).unwrap();
    tx.send(Message::EndOfStream).unwrap();
    tx.finish().unwrap();
    assert_eq!(rx.pop().unwrap().1.unwrap().num_rows(), 100);
}

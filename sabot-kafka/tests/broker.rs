//! The test broker starts and takes topics, and records sent to it read back in order.

use sabot_kafka::admin::{OutRecord, list_topics, produce, read_topic};
use sabot_test_kit::kafka::{Broker, PRODUCER_SETTINGS};

#[test]
fn broker_round_trip() {
    let broker = Broker::start().unwrap();
    sabot_kafka::admin::create_topic(&broker.bootstrap(), "t", 3).unwrap();
    let topics = list_topics(&broker.bootstrap()).unwrap();
    assert!(
        topics.iter().any(|t| t.name == "t" && t.partitions == 3),
        "{topics:?}"
    );
    let values: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    let headers = vec![("h".to_owned(), b"x".to_vec())];
    let records: Vec<OutRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| OutRecord {
            topic: "t",
            partition: Some(i as i32 % 3),
            key: None,
            value: Some(v.as_bytes()),
            headers: &headers,
        })
        .collect();
    produce(&broker.bootstrap(), &records, &PRODUCER_SETTINGS).unwrap();
    let got = read_topic(&broker.bootstrap(), "t", false).unwrap();
    assert_eq!(got.len(), 300);
    for p in 0..3 {
        // Each partition holds its records in the order they were sent.
        let in_p: Vec<&[u8]> = got
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        let want: Vec<&[u8]> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 % 3 == p)
            .map(|(_, v)| v.as_bytes())
            .collect();
        assert_eq!(in_p, want);
    }
    assert!(got.iter().all(|r| r.headers == headers));
}

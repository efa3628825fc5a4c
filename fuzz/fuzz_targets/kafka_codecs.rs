//! Kafka payloads of every codec from arbitrary bytes: the decoder reports bad payloads
//! and keeps the good rows, never panics, and its accounting adds up.
//!
//! Input: a byte choosing how to cut the rest into payloads, then the payload bytes
//! (each payload a length byte and that many bytes; a length of 255 is a tombstone).

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_kafka::Codec;

const AVRO: &str = r#"{"type":"record","name":"R","fields":[
    {"name":"id","type":"long"},{"name":"name","type":["null","string"]},
    {"name":"tags","type":{"type":"array","items":"string"}}]}"#;

fn codecs() -> &'static [Codec] {
    static CODECS: OnceLock<Vec<Codec>> = OnceLock::new();
    CODECS.get_or_init(|| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new(
                "ts",
                DataType::Timestamp(sabot_core::arrow::datatypes::TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        vec![
            Codec::json(schema.clone()),
            Codec::msgpack(schema.clone()),
            Codec::arrow_ipc(schema),
            Codec::bytes(),
            Codec::text(),
            Codec::avro(AVRO, 1).expect("valid schema"),
            Codec::protobuf(
                &prost_types_descriptor(),
                "f.M",
            )
            .expect("valid descriptor"),
        ]
    })
}

/// `message M { int64 id = 1; string name = 2; repeated double xs = 3; M child = 4; }`.
fn prost_types_descriptor() -> Vec<u8> {
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
    let field = |name: &str, n: i32, ty: Type, label: Label, type_name: Option<&str>| {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(n),
            label: Some(label as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(Into::into),
            json_name: Some(name.into()),
            ..Default::default()
        }
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("f.proto".into()),
            package: Some("f".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("M".into()),
                field: vec![
                    field("id", 1, Type::Int64, Label::Optional, None),
                    field("name", 2, Type::String, Label::Optional, None),
                    field("xs", 3, Type::Double, Label::Repeated, None),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let mut payloads: Vec<Option<&[u8]>> = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        if len == 255 {
            payloads.push(None);
            rest = tail;
            continue;
        }
        let n = (len as usize).min(tail.len());
        payloads.push(Some(&tail[..n]));
        rest = &tail[n..];
    }
    let codec = &codecs()[pick as usize % codecs().len()];
    let d = codec
        .decoder()
        .expect("decoder")
        .decode(&payloads)
        .expect("bad payloads are reported, not errors");
    assert_eq!(d.rows.len(), d.batch.num_rows());
    assert!(d.bad.iter().all(|(i, _)| *i < payloads.len()));
    assert!(d.rows.iter().all(|&r| (r as usize) < payloads.len()));
    // Each payload is either bad or gave rows, never both.
    for (i, _) in &d.bad {
        assert!(!d.rows.contains(&(*i as u32)));
    }
});

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message as _;
use prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use sabot_core::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
};
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot_core::arrow::record_batch::RecordBatch;

use super::*;

pub(crate) const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":["null","string"]},
    {"name":"price","type":"double"},
    {"name":"flag","type":"boolean"}]}"#;

fn order_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, false),
        Field::new("flag", DataType::Boolean, false),
    ]))
}

/// `Order { int64 id = 1; string name = 2; double price = 3; bool flag = 4; }`.
pub(crate) fn order_descriptor_set() -> Vec<u8> {
    let field = |name: &str, number: i32, ty: Type| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        json_name: Some(name.into()),
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("order.proto".into()),
            package: Some("shop".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Order".into()),
                field: vec![
                    field("id", 1, Type::Int64),
                    field("name", 2, Type::String),
                    field("price", 3, Type::Double),
                    field("flag", 4, Type::Bool),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

type Row = (i64, Option<String>, f64, bool);

fn batch(schema: &SchemaRef, rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.1.clone()).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| Some(r.3)).collect::<BooleanArray>()),
    ];
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

fn codecs() -> Vec<Codec> {
    vec![
        Codec::json(order_schema()),
        Codec::msgpack(order_schema()),
        Codec::arrow_ipc(order_schema()),
        Codec::avro(ORDER_AVRO, 7).unwrap(),
        Codec::protobuf(&order_descriptor_set(), "shop.Order").unwrap(),
    ]
}

fn round_trip(codec: &Codec, rows: &[Row]) -> (RecordBatch, Decoded) {
    let input = batch(&codec.schema(), rows);
    let payloads = codec
        .encoder(&codec.schema())
        .unwrap()
        .encode(&input)
        .unwrap();
    assert_eq!(
        payloads.len(),
        rows.len(),
        "{}: one payload per row",
        codec.name()
    );
    let refs: Vec<Option<&[u8]>> = payloads.iter().collect();
    let decoded = codec.decoder().unwrap().decode(&refs).unwrap();
    (input, decoded)
}

fn row_strategy(nullable_name: bool) -> impl Strategy<Value = Row> {
    (
        any::<i64>(),
        proptest::option::weighted(
            if nullable_name { 0.8 } else { 0.999_999 },
            "[a-zA-Z0-9 é\"\\\\]{0,12}",
        )
        .prop_map(move |s| {
            if nullable_name {
                s
            } else {
                Some(s.unwrap_or_default())
            }
        }),
        -1e12f64..1e12,
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every codec gives back the rows it encoded.
    #[test]
    fn structured_codecs_round_trip(rows in proptest::collection::vec(row_strategy(true), 0..40)) {
        for codec in codecs() {
            // Protobuf (proto3) has no null strings: absent is "".
            let rows: Vec<Row> = if codec.name() == "protobuf" {
                rows.iter().map(|r| (r.0, Some(r.1.clone().unwrap_or_default()), r.2, r.3)).collect()
            } else {
                rows.clone()
            };
            let (input, decoded) = round_trip(&codec, &rows);
            prop_assert!(decoded.bad.is_empty(), "{}: {:?}", codec.name(), decoded.bad);
            prop_assert_eq!(&decoded.batch, &input, "{}", codec.name());
            prop_assert_eq!(decoded.rows, (0..rows.len() as u32).collect::<Vec<_>>());
        }
    }

    /// Raw bytes and text come back as they were, nulls (tombstones) included.
    #[test]
    fn raw_codecs_round_trip(values in proptest::collection::vec(proptest::option::of(".{0,20}"), 0..40)) {
        let text: ArrayRef = Arc::new(values.iter().map(|v| v.as_deref()).collect::<StringArray>());
        let bytes: ArrayRef = Arc::new(values.iter().map(|v| v.as_deref().map(str::as_bytes)).collect::<BinaryArray>());
        for (codec, col) in [(Codec::text(), text), (Codec::bytes(), bytes)] {
            let input = RecordBatch::try_new(codec.schema(), vec![col]).unwrap();
            let payloads = codec.encoder(&codec.schema()).unwrap().encode(&input).unwrap();
            let refs: Vec<Option<&[u8]>> = payloads.iter().collect();
            let decoded = codec.decoder().unwrap().decode(&refs).unwrap();
            prop_assert_eq!(&decoded.batch, &input);
        }
    }

    /// Bad payloads anywhere in a batch are named exactly, and the good rows survive.
    #[test]
    fn bad_payloads_are_named(rows in proptest::collection::vec(row_strategy(false), 1..30),
                              bad_at in proptest::collection::btree_set(0usize..40, 0..5)) {
        for codec in codecs() {
            let input = batch(&codec.schema(), &rows);
            let good = codec.encoder(&codec.schema()).unwrap().encode(&input).unwrap();
            let garbage: &[u8] = match codec.name() {
                // Valid protobuf wire bytes are hard to avoid: a field with a wrong wire type.
                "protobuf" => &[0x0d, 1, 2],
                "avro" => &[0, 0, 0, 0, 7, 0xff],
                _ => b"\x01{not valid",
            };
            let mut payloads: Vec<Option<&[u8]>> = Vec::new();
            let mut expect_bad = Vec::new();
            let mut expect_good = Vec::new();
            let mut g = good.iter();
            for i in 0..(rows.len() + bad_at.len()) {
                if bad_at.contains(&i) || g.len() == 0 {
                    expect_bad.push(payloads.len());
                    payloads.push(Some(garbage));
                } else {
                    expect_good.push(payloads.len() as u32);
                    payloads.push(g.next().unwrap());
                }
            }
            let decoded = codec.decoder().unwrap().decode(&payloads).unwrap();
            let bad: Vec<usize> = decoded.bad.iter().map(|b| b.0).collect();
            prop_assert_eq!(&bad, &expect_bad, "{}", codec.name());
            prop_assert_eq!(&decoded.rows, &expect_good, "{}", codec.name());
            prop_assert_eq!(&decoded.batch, &input, "{}", codec.name());
        }
    }
}

#[test]
fn tombstones_are_bad_for_structured_formats() {
    for codec in codecs() {
        let d = codec.decoder().unwrap().decode(&[None]).unwrap();
        assert_eq!(d.bad.len(), 1, "{}", codec.name());
        assert!(d.bad[0].1.contains("tombstone"), "{}", d.bad[0].1);
    }
}

#[test]
fn json_type_errors_name_the_record() {
    let codec = Codec::json(order_schema());
    let good = br#"{"id": 1, "price": 2.5, "flag": true}"#;
    let bad = br#"{"id": "x", "price": 2.5, "flag": true}"#;
    let d = codec
        .decoder()
        .unwrap()
        .decode(&[Some(good), Some(bad), Some(good)])
        .unwrap();
    assert_eq!(d.bad.len(), 1);
    assert_eq!(d.bad[0].0, 1);
    assert_eq!(d.rows, vec![0, 2]);
    assert_eq!(d.batch.num_rows(), 2);
}

#[test]
fn avro_unknown_schema_id_without_registry_is_a_bad_record() {
    let codec = Codec::avro(ORDER_AVRO, 7).unwrap();
    let d = codec
        .decoder()
        .unwrap()
        .decode(&[Some(&[0, 0, 0, 0, 9, 2, 0])])
        .unwrap();
    assert!(
        d.bad[0].1.contains("schema id 9 is unknown"),
        "{}",
        d.bad[0].1
    );
}

#[test]
fn encoders_check_the_input_schema() {
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)]));
    for codec in [
        Codec::avro(ORDER_AVRO, 1).unwrap(),
        Codec::arrow_ipc(order_schema()),
        Codec::bytes(),
        Codec::text(),
    ] {
        let e = codec.encoder(&other).unwrap_err().to_string();
        assert!(e.contains(codec.name()), "{e}");
    }
}

#[test]
fn protobuf_schema_and_errors() {
    let codec = Codec::protobuf(&order_descriptor_set(), "shop.Order").unwrap();
    let names: Vec<_> = codec
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "name", "price", "flag"]);
    let e = Codec::protobuf(&order_descriptor_set(), "shop.Nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("shop.Order"), "{e}");
    assert!(Codec::protobuf(b"\xff\xff", "x").is_err());
}

#[test]
fn http_responses_parse_plain_and_chunked() {
    let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(
        registry::parse_response(plain).unwrap(),
        (200, b"{}".to_vec())
    );
    let chunked =
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
    assert_eq!(
        registry::parse_response(chunked).unwrap(),
        (404, b"{\"a\":1}".to_vec())
    );
    assert!(registry::parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    assert!(registry::parse_response(b"garbage\r\n\r\n").is_err());
}

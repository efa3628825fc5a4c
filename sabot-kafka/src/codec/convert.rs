//! Protobuf message types as Arrow fields.

use std::sync::Arc;

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};
use sabot_core::arrow::datatypes::{DataType, Field, Fields};

use crate::{KafkaError, Result};

/// Deepest message nesting mapped to Arrow (recursive types are refused at this depth).
const MAX_DEPTH: usize = 32;

/// The Arrow fields of `message`'s fields, in declaration order; all nullable (a field
/// may be absent).
pub(super) fn proto_fields(message: &MessageDescriptor, depth: usize) -> Result<Vec<Field>> {
    if depth > MAX_DEPTH {
        return Err(KafkaError::Codec {
            format: "protobuf",
            reason: format!(
                "message `{}` nests deeper than {MAX_DEPTH} levels (a recursive type?)",
                message.full_name()
            ),
        });
    }
    message
        .fields()
        .map(|f| Ok(Field::new(f.name(), field_type(&f, depth)?, true)))
        .collect()
}

fn field_type(f: &FieldDescriptor, depth: usize) -> Result<DataType> {
    if f.is_map() {
        return Err(KafkaError::Codec {
            format: "protobuf",
            reason: format!("map field `{}` is not supported", f.full_name()),
        });
    }
    let scalar = match f.kind() {
        Kind::Bool => DataType::Boolean,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 => DataType::UInt32,
        Kind::Uint64 | Kind::Fixed64 => DataType::UInt64,
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        // Bytes travel as base64 text in the JSON mapping the codec goes through.
        Kind::String | Kind::Bytes | Kind::Enum(_) => DataType::Utf8,
        Kind::Message(m) => DataType::Struct(Fields::from(proto_fields(&m, depth + 1)?)),
    };
    Ok(if f.cardinality() == Cardinality::Repeated {
        DataType::List(Arc::new(Field::new("item", scalar, true)))
    } else {
        scalar
    })
}

//! A client of the Confluent Schema Registry REST API (the part codecs need), over plain
//! HTTP/1.1, with schemas cached by id.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{KafkaError, Result};

/// Largest response accepted from the registry.
const MAX_RESPONSE: u64 = 16 << 20;

/// A schema registry at an `http://host:port[/path]` address. Cheap to clone; clones
/// share the cache. Schemas by id never change in a registry, so they are cached for
/// good; `latest` always asks.
#[derive(Clone, Debug)]
pub struct SchemaRegistry {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
    cache: Arc<Mutex<HashMap<u32, String>>>,
}

impl SchemaRegistry {
    /// A client of the registry at `url` (only `http://` is supported).
    pub fn new(url: &str) -> Result<Self> {
        let bad = |reason: &str| KafkaError::Registry {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// addresses are supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(SchemaRegistry {
            host: host.to_owned(),
            port,
            path: path.trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(10),
            cache: Arc::default(),
        })
    }

    /// The schema (Avro JSON) registered under `id`: `GET /schemas/ids/{id}`, cached.
    pub fn schema_by_id(&self, id: u32) -> Result<String> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(s);
        }
        let (url, body) = self.request("GET", &format!("/schemas/ids/{id}"), None)?;
        let schema = field_str(&url, &body, "schema")?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// The latest version of `subject`: (id, schema), `GET /subjects/{subject}/versions/latest`.
    pub fn latest(&self, subject: &str) -> Result<(u32, String)> {
        let (url, body) =
            self.request("GET", &format!("/subjects/{subject}/versions/latest"), None)?;
        let id = field_u32(&url, &body, "id")?;
        let schema = field_str(&url, &body, "schema")?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, schema.clone());
        }
        Ok((id, schema))
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id (the existing id
    /// if it is registered already): `POST /subjects/{subject}/versions`.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let body = serde_json::json!({ "schema": schema }).to_string();
        let (url, resp) = self.request(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&body),
        )?;
        let id = field_u32(&url, &resp, "id")?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, schema.to_owned());
        }
        Ok(id)
    }

    /// One request; returns the URL (for errors) and the body of a 2xx answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(String, serde_json::Value)> {
        let path = format!("{}{path}", self.path);
        let url = format!("http://{}:{}{path}", self.host, self.port);
        let err = |reason: String| KafkaError::Registry {
            url: url.clone(),
            reason,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| err(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| err("the host has no address".into()))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        stream.set_read_timeout(Some(self.timeout)).ok();
        stream.set_write_timeout(Some(self.timeout)).ok();
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            self.port,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| err(format!("cannot send: {e}")))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut raw)
            .map_err(|e| err(format!("cannot read the answer: {e}")))?;
        if raw.len() as u64 > MAX_RESPONSE {
            return Err(err(format!("the answer is over {MAX_RESPONSE} bytes")));
        }
        let (status, body) = parse_response(&raw).map_err(err)?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("HTTP {status}, body is not JSON: {e}")))?;
        if !(200..300).contains(&status) {
            let message = json
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message");
            return Err(err(format!("HTTP {status}: {message}")));
        }
        Ok((url, json))
    }
}

fn field_str(url: &str, body: &serde_json::Value, name: &str) -> Result<String> {
    body.get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| KafkaError::Registry {
            url: url.to_owned(),
            reason: format!("the answer has no string `{name}`"),
        })
}

fn field_u32(url: &str, body: &serde_json::Value, name: &str) -> Result<u32> {
    body.get(name)
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| KafkaError::Registry {
            url: url.to_owned(),
            reason: format!("the answer has no 32-bit id `{name}`"),
        })
}

/// Splits an HTTP/1.1 response into status and body (plain or chunked).
pub(crate) fn parse_response(raw: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_str = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_str}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err("a chunk is cut short".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

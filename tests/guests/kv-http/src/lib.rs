//! An HTTP app that keeps its state in `wasi:keyvalue` (bucket `web`):
//!
//! - `GET /hits`: increment counter `hits`, answer its value.
//! - `PUT /kv/{key}` with a body: store it.
//! - `GET /kv/{key}`: the stored body, or 404.

mod kv {
    wit_bindgen::generate!({
        path: "../../../wit/wasi-keyvalue/0.2.0-draft2",
        world: "wasi:keyvalue/imports",
        generate_all,
    });
}

use kv::wasi::keyvalue::{atomics, store};
use wasip2::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct App;

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let resp = OutgoingResponse::new(Fields::new());
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn read_body(req: &IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = req.consume() else { return out };
    let Ok(stream) = body.stream() else { return out };
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    out
}

impl wasip2::exports::http::incoming_handler::Guest for App {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_default();
        let bucket = match store::open("web") {
            Ok(b) => b,
            Err(e) => return respond(out, 500, format!("open: {e:?}").as_bytes()),
        };
        match (req.method(), path.as_str()) {
            (Method::Get, "/hits") => match atomics::increment(&bucket, "hits", 1) {
                Ok(n) => respond(out, 200, n.to_string().as_bytes()),
                Err(e) => respond(out, 500, format!("{e:?}").as_bytes()),
            },
            (Method::Put, p) if p.starts_with("/kv/") => {
                let body = read_body(&req);
                match bucket.set(&p[4..], &body) {
                    Ok(()) => respond(out, 204, b""),
                    Err(e) => respond(out, 500, format!("{e:?}").as_bytes()),
                }
            }
            (Method::Get, p) if p.starts_with("/kv/") => match bucket.get(&p[4..]) {
                Ok(Some(v)) => respond(out, 200, &v),
                Ok(None) => respond(out, 404, b"no such key"),
                Err(e) => respond(out, 500, format!("{e:?}").as_bytes()),
            },
            _ => respond(out, 404, b"no such route"),
        }
    }
}

wasip2::http::proxy::export!(App);

//! Writes every message published on a Redis server's `phx:*` channels to
//! a folder, one file per message, byte for byte, named
//! `<seq>-<sender>-<kind>.etf` (the sending node, and what the message is:
//! a broadcast's event, or a Phoenix.Tracker message such as
//! `heartbeat-delta` or `transfer_ack-state`); `-z` marks a compressed one.
//! This is how `tests/data/phoenix-corpus` was taken, during an interop run
//! of Phoenix and Fawkes nodes:
//!
//! ```text
//! cargo run -p fawkes-redis --example capture -- redis://127.0.0.1:6379 /tmp/capture
//! ```
//!
//! It runs until it is stopped (Ctrl-C) or Redis closes the connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use fawkes_etf::Term;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One RESP reply: bulk strings and arrays are all a subscriber reads.
enum Reply {
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Other,
}

async fn read(r: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let n = || std::str::from_utf8(&line[1..line.len().saturating_sub(2)]).ok().and_then(|s| s.parse::<i64>().ok());
    match line.first() {
        Some(b'$') => match n() {
            Some(len) if len >= 0 => {
                let mut data = vec![0; len as usize + 2];
                r.read_exact(&mut data).await?;
                data.truncate(len as usize);
                Ok(Reply::Bulk(data))
            }
            _ => Ok(Reply::Other),
        },
        Some(b'*') => {
            let mut items = Vec::new();
            for _ in 0..n().unwrap_or(0).max(0) {
                items.push(Box::pin(read(r)).await?);
            }
            Ok(Reply::Array(items))
        }
        _ => Ok(Reply::Other),
    }
}

/// `<sender>-<kind>` of a message on the channel.
fn describe(data: &[u8]) -> String {
    let Ok(Term::Tuple(items)) = fawkes_etf::decode(data) else { return "unknown-garbage".into() };
    let [_, _, node, _, message, _] = items.as_slice() else { return "unknown-other".into() };
    let name = |t: &Term| match t {
        Term::Tuple(r) if r.len() == 2 => r[0].as_atom().unwrap_or("unknown").to_owned(),
        _ => "unknown".into(),
    };
    if let Some(event) = message.get_atom_key("event").and_then(Term::as_binary) {
        let node = node.as_atom().unwrap_or("unknown");
        return format!("{node}-broadcast-{}", String::from_utf8_lossy(event).replace(['/', ' '], "_"));
    }
    match message.as_tuple() {
        Some([_, kind, from, delta, _]) if kind.as_atom() == Some("heartbeat") => {
            let what = if delta.as_atom() == Some("empty") { "empty" } else { "delta" };
            format!("{}-heartbeat-{what}", name(from))
        }
        Some([_, kind, _, from, _]) if kind.as_atom() == Some("transfer_req") => format!("{}-transfer_req", name(from)),
        Some([_, kind, _, from, state]) if kind.as_atom() == Some("transfer_ack") => {
            let what = if matches!(state, Term::Tuple(_)) { "state" } else { "delta" };
            format!("{}-transfer_ack-{what}", name(from))
        }
        Some([_, kind, from]) if kind.as_atom() == Some("graceful_permdown") => {
            format!("{}-graceful_permdown", name(from))
        }
        _ => format!("{}-term", node.as_atom().unwrap_or("unknown")),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: capture redis://HOST:PORT DIR");
        std::process::exit(2);
    };
    let addr = url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let mut conn = BufReader::new(TcpStream::connect(&addr).await?);
    conn.get_mut().write_all(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$5\r\nphx:*\r\n").await?;
    let mut seq = 0u32;
    loop {
        let Reply::Array(items) = read(&mut conn).await? else { continue };
        let [Reply::Bulk(kind), _, _, Reply::Bulk(data)] = items.as_slice() else { continue };
        if kind != b"pmessage" {
            continue;
        }
        seq += 1;
        let z = if data.get(1) == Some(&80) { "-z" } else { "" };
        let file = dir.join(format!("{seq:04}-{}{z}.etf", describe(data)));
        std::fs::write(&file, data)?;
        println!("{}", file.display());
    }
}

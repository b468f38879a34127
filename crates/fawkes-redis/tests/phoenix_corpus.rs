//! Every message Phoenix nodes put on the Redis channel during a run with
//! Fawkes nodes (`tests/data/phoenix-corpus`, see its README): each one
//! decodes, its term encodes back to the same bytes (inflated, for a
//! compressed one), and the adapter reads it as a channel broadcast or as a
//! Phoenix.PubSub term on its topic, and writes it back to the same message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use fawkes_pubsub::{Payload, TERM_EVENT};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/phoenix-corpus");
    let mut files = Vec::new();
    for sub in ["plain", "compressed"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "etf") {
                let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_term_decodes_and_encodes_back_byte_for_byte() {
    let files = corpus();
    assert!(files.len() > 100, "{} files", files.len());
    let compressed = files.iter().filter(|(n, _)| n.ends_with("-z.etf")).count();
    assert!(compressed > 50, "{compressed} compressed");
    for (name, bytes) in &files {
        let term = fawkes_etf::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plain = fawkes_etf::uncompressed(bytes).unwrap();
        assert_eq!(fawkes_etf::encode(&term), plain.as_ref(), "{name}");
    }
}

#[test]
fn the_adapter_reads_each_as_a_broadcast_or_a_term_for_its_topic() {
    let (mut broadcasts, mut terms) = (0, 0);
    for (name, bytes) in corpus() {
        let msg = fawkes_redis::wire::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = fawkes_redis::wire::decode(&fawkes_redis::wire::encode(&msg).unwrap()).unwrap();
        assert_eq!(again, msg, "{name}");
        if name.contains("-broadcast-") {
            broadcasts += 1;
            assert_ne!(msg.broadcast.event, TERM_EVENT, "{name}");
            assert!(msg.broadcast.payload.is_object(), "{name}");
        } else {
            terms += 1;
            assert_eq!(msg.broadcast.event, TERM_EVENT, "{name}");
            assert_eq!(msg.broadcast.topic, "phx_presence:Elixir.PhxRefWeb.Presence_shard0", "{name}");
            // the message itself, as Phoenix wrote it
            let Payload::Binary(term) = &msg.broadcast.payload else { panic!("{name}: a term") };
            let Some(fawkes_etf::Term::Tuple(items)) = fawkes_etf::decode(&bytes).ok() else { panic!("{name}") };
            assert_eq!(fawkes_etf::decode(term).unwrap(), items[4], "{name}");
            assert_eq!(items[4].as_tuple().unwrap()[0].as_atom(), Some("pub"), "{name}");
        }
    }
    assert!(broadcasts >= 20 && terms >= 100, "{broadcasts} broadcasts, {terms} terms");
}

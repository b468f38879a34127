//! Phoenix.Tracker's replication messages as Erlang terms (phoenix_pubsub
//! 2.1's `Phoenix.Tracker.Shard`), so that Fawkes's presence takes part in
//! a Phoenix cluster's:
//!
//! | message | term |
//! | --- | --- |
//! | heartbeat | `{:pub, :heartbeat, {name, vsn}, delta \| :empty, {{name, vsn}, context}}` |
//! | transfer request | `{:pub, :transfer_req, ref, {name, vsn}, {{name, vsn}, context}}` |
//! | transfer | `{:pub, :transfer_ack, ref, {name, vsn}, delta \| {state, values}}` |
//! | graceful permanent down | `{:pub, :graceful_permdown, {name, vsn}}` |
//!
//! A delta is a `%Phoenix.Tracker.State{mode: :delta}` (with its `values`),
//! a whole state is `{%Phoenix.Tracker.State{mode: :normal, values: nil},
//! values}`; clouds are `MapSet`s of dots `{{name, vsn}, clock}`; values
//! map a dot to `{pid, topic, key, meta}`. Replica names are the PubSub's
//! node names (atoms), which is also where direct messages go.
//!
//! Fawkes's own presences are written with this node's pids (see
//! [`super::PresencePid`]) and their metas with atom keys at the top (as
//! `phx_ref` always is in Phoenix); presences of other nodes are written
//! back exactly as they were read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fawkes_etf::{Atom, Pid, RefEncoding, Reference, Term};
use fawkes_tracker::{Clouds, Context, Delta, Entry, ReplicaId, ReplicaStatus, Tag};
use serde_json::{Map, Value};

use super::{Meta, PresencePid};

const STATE: &str = "Elixir.Phoenix.Tracker.State";
const MAPSET: &str = "Elixir.MapSet";

/// A replication message, whatever its format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Msg {
    Heartbeat {
        from: ReplicaId,
        clocks: Context,
        delta: Option<Delta<PresencePid, Meta>>,
    },
    TransferReq {
        from: ReplicaId,
        clocks: Context,
        /// Phoenix's `make_ref()`, echoed in the answer.
        reference: Option<Term>,
    },
    TransferAck {
        from: ReplicaId,
        state: Delta<PresencePid, Meta>,
        reference: Option<Term>,
    },
    GracefulPermdown {
        from: ReplicaId,
    },
}

impl Msg {
    pub(crate) fn from(&self) -> &ReplicaId {
        match self {
            Msg::Heartbeat { from, .. }
            | Msg::TransferReq { from, .. }
            | Msg::TransferAck { from, .. }
            | Msg::GracefulPermdown { from } => from,
        }
    }
}

/// A message read from a Phoenix node, with what is needed to write its
/// presences back unchanged.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) msg: Msg,
    /// Each value's term, `{pid, topic, key, meta}`, by dot.
    pub(crate) originals: HashMap<Tag, Term>,
    /// The fields a `MapSet` of the sender's Elixir has besides `map`
    /// (`version: 2`, say).
    pub(crate) mapset: Option<Fields>,
}

/// Why a term is not a replication message.
#[derive(Debug, thiserror::Error)]
#[error("not a Phoenix.Tracker message: {0}")]
pub(crate) struct NotTracker(&'static str);

type Decoded<T> = Result<T, NotTracker>;

fn atom_named(t: &Term, name: &str) -> bool {
    t.as_atom() == Some(name)
}

fn replica_of(t: &Term) -> Decoded<ReplicaId> {
    match t.as_tuple() {
        Some([name, vsn]) => {
            let name = match name {
                Term::Atom(a) => a.as_str().to_owned(),
                Term::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err(NotTracker("a replica name")),
            };
            let vsn = vsn.as_int().and_then(|v| u64::try_from(v).ok()).ok_or(NotTracker("a replica version"))?;
            Ok(ReplicaId::new(name, vsn))
        }
        _ => Err(NotTracker("a replica {name, vsn}")),
    }
}

fn replica_term(r: &ReplicaId) -> Term {
    Term::Tuple(vec![Term::atom(&r.name), Term::Int(i128::from(r.vsn))])
}

fn tag_of(t: &Term) -> Decoded<Tag> {
    match t.as_tuple() {
        Some([replica, clock]) => Ok(Tag {
            replica: replica_of(replica)?,
            clock: clock.as_int().and_then(|c| u64::try_from(c).ok()).ok_or(NotTracker("a clock"))?,
        }),
        _ => Err(NotTracker("a dot {replica, clock}")),
    }
}

fn tag_term(t: &Tag) -> Term {
    Term::Tuple(vec![replica_term(&t.replica), Term::Int(i128::from(t.clock))])
}

fn context_of(t: &Term) -> Decoded<Context> {
    let pairs = t.as_map().ok_or(NotTracker("a context map"))?;
    pairs
        .iter()
        .map(|(r, c)| {
            let clock = c.as_int().and_then(|c| u64::try_from(c).ok()).ok_or(NotTracker("a clock"))?;
            Ok((replica_of(r)?, clock))
        })
        .collect()
}

fn context_term(c: &Context) -> Term {
    Term::Map(c.iter().map(|(r, n)| (replica_term(r), Term::Int(i128::from(*n)))).collect())
}

/// Fields of a map, as pairs.
type Fields = Vec<(Term, Term)>;

/// A `%MapSet{}`'s elements, and its fields besides `__struct__` and `map`.
fn mapset_of(t: &Term) -> Decoded<(Vec<&Term>, Fields)> {
    let pairs = t.as_map().ok_or(NotTracker("a MapSet"))?;
    if !t.get_atom_key("__struct__").is_some_and(|s| atom_named(s, MAPSET)) {
        return Err(NotTracker("a MapSet"));
    }
    let elements = t.get_atom_key("map").and_then(Term::as_map).ok_or(NotTracker("a MapSet's map"))?;
    let extra = pairs.iter().filter(|(k, _)| !matches!(k.as_atom(), Some("__struct__" | "map"))).cloned().collect();
    Ok((elements.iter().map(|(k, _)| k).collect(), extra))
}

fn pid_of(t: &Term) -> Decoded<PresencePid> {
    match t {
        Term::Pid(p) => Ok(PresencePid {
            node: p.node.as_str().to_owned(),
            id: (u64::from(p.serial) << 32) | u64::from(p.id),
            creation: p.creation,
        }),
        _ => Err(NotTracker("a pid")),
    }
}

/// This node's pids on the wire (`NEW_PID_EXT`).
pub(crate) fn pid_term(p: &PresencePid) -> Term {
    Term::Pid(Pid::new(Atom::new(p.node.as_str()), p.id as u32, (p.id >> 32) as u32, p.creation))
}

/// A presence key as `Phoenix.Presence` lists it (`to_string(key)`).
fn key_of(t: &Term) -> String {
    match t {
        Term::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Term::Atom(a) => a.as_str().to_owned(),
        Term::Int(i) => i.to_string(),
        other => lossy(other).to_string(),
    }
}

/// A term's JSON as Phoenix's JSON library renders it, and for the terms
/// it has no rendering for (tuples, pids, non-UTF-8 binaries, ...) the
/// closest JSON, so that a presence of another node is always listed.
pub(crate) fn lossy(t: &Term) -> Value {
    if let Ok(v) = t.to_json_lenient() {
        return v;
    }
    match t {
        Term::Int(i) => i64::try_from(*i).map(Value::from).unwrap_or_else(|_| Value::from(*i as f64)),
        Term::BigInt(b) => {
            let m = b.magnitude.iter().rev().fold(0f64, |acc, &d| acc * 256.0 + f64::from(d));
            Value::from(if b.negative { -m } else { m })
        }
        Term::Float(f) => Value::from(*f),
        Term::Atom(a) => Value::String(a.as_str().to_owned()),
        Term::Binary(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Term::BitBinary(b) => Value::String(String::from_utf8_lossy(&b.bytes).into_owned()),
        Term::List(items) | Term::Tuple(items) => Value::Array(items.iter().map(lossy).collect()),
        Term::ImproperList(items, tail) => Value::Array(items.iter().chain([&**tail]).map(lossy).collect()),
        Term::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match lossy(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, lossy(v))
                })
                .collect(),
        ),
        Term::Pid(p) => Value::String(format!("#PID<{}.{}.{}>", p.node, p.id, p.serial)),
        Term::Port(p) => Value::String(format!("#Port<{}.{}>", p.node, p.id)),
        Term::Ref(r) => Value::String(format!("#Reference<{}>", r.node)),
        _ => Value::String("#Fun<>".into()),
    }
}

fn meta_of(t: &Term) -> Decoded<Meta> {
    if t.as_map().is_none() {
        return Err(NotTracker("a meta map"));
    }
    match lossy(t) {
        Value::Object(m) => Ok(m),
        _ => Err(NotTracker("a meta map")),
    }
}

/// A meta as Elixir code writes one: atom keys at the top (Phoenix's own
/// `phx_ref` and `phx_ref_prev` are atoms), JSON data below.
fn meta_term(m: &Map<String, Value>) -> Term {
    Term::Map(
        m.iter()
            .map(|(k, v)| {
                let key = if k.chars().count() <= 255 { Term::atom(k) } else { Term::binary(k) };
                (key, Term::from_json(v))
            })
            .collect(),
    )
}

fn entry_term(e: &Entry<PresencePid, Meta>) -> Term {
    Term::Tuple(vec![pid_term(&e.pid), Term::binary(&e.topic), Term::binary(&e.key), meta_term(&e.meta)])
}

type Values = (BTreeMap<Tag, Entry<PresencePid, Meta>>, HashMap<Tag, Term>);

fn values_of(t: &Term) -> Decoded<Values> {
    let pairs = t.as_map().ok_or(NotTracker("a values map"))?;
    let mut values = BTreeMap::new();
    let mut originals = HashMap::new();
    for (tag, value) in pairs {
        let tag = tag_of(tag)?;
        let Some([pid, topic, key, meta]) = value.as_tuple() else {
            return Err(NotTracker("a value {pid, topic, key, meta}"));
        };
        let topic = match topic {
            Term::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err(NotTracker("a topic")),
        };
        let entry = Entry { pid: pid_of(pid)?, topic, key: key_of(key), meta: meta_of(meta)? };
        values.insert(tag.clone(), entry);
        originals.insert(tag, value.clone());
    }
    Ok((values, originals))
}

/// A delta with the terms of its values (by dot) and the `MapSet` fields
/// of its clouds.
type ReadDelta = (Delta<PresencePid, Meta>, HashMap<Tag, Term>, Option<Fields>);

/// A `%Phoenix.Tracker.State{}`, whose values are its `values` field or,
/// for a whole state, `values`.
fn state_of(state: &Term, values: Option<&Term>) -> Decoded<ReadDelta> {
    if !state.get_atom_key("__struct__").is_some_and(|s| atom_named(s, STATE)) {
        return Err(NotTracker("a Phoenix.Tracker.State"));
    }
    let field = |k: &'static str| state.get_atom_key(k).ok_or(NotTracker(k));
    let replica = replica_of(field("replica")?)?;
    let context = context_of(field("context")?)?;
    let mut clouds = Clouds::new();
    let mut mapset = None;
    for (r, set) in field("clouds")?.as_map().ok_or(NotTracker("clouds"))? {
        let r = replica_of(r)?;
        let (elements, extra) = mapset_of(set)?;
        let mut cloud = BTreeSet::new();
        for dot in elements {
            let dot = tag_of(dot)?;
            // a cloud holds the dots of its replica
            if dot.replica == r {
                cloud.insert(dot.clock);
            }
        }
        clouds.insert(r, cloud);
        mapset = Some(extra);
    }
    let range = match field("range")?.as_tuple() {
        Some([start, end]) => (context_of(start)?, context_of(end)?),
        _ => return Err(NotTracker("a range {start, end}")),
    };
    let (values, originals) = values_of(match values {
        Some(v) => v,
        None => field("values")?,
    })?;
    Ok((Delta { replica, context, clouds, values, range }, originals, mapset))
}

/// A delta (`%State{mode: :delta}`) or a whole state (`{%State{}, values}`).
fn delta_of(t: &Term) -> Decoded<ReadDelta> {
    match t {
        Term::Tuple(pair) if pair.len() == 2 => state_of(&pair[0], Some(&pair[1])),
        _ => state_of(t, None),
    }
}

fn clocks_of(t: &Term) -> Decoded<Context> {
    match t.as_tuple() {
        Some([_replica, context]) => context_of(context),
        _ => Err(NotTracker("clocks {replica, context}")),
    }
}

/// Reads a replication message of a Phoenix (or Fawkes) node.
pub(crate) fn decode(t: &Term) -> Decoded<Incoming> {
    let items = t.as_tuple().ok_or(NotTracker("a tuple"))?;
    if !items.first().is_some_and(|p| atom_named(p, "pub")) {
        return Err(NotTracker("{:pub, ...}"));
    }
    let plain = |msg| Incoming { msg, originals: HashMap::new(), mapset: None };
    match items {
        [_, kind, from, delta, clocks] if atom_named(kind, "heartbeat") => {
            let from = replica_of(from)?;
            let clocks = clocks_of(clocks)?;
            if atom_named(delta, "empty") {
                return Ok(plain(Msg::Heartbeat { from, clocks, delta: None }));
            }
            let (delta, originals, mapset) = delta_of(delta)?;
            Ok(Incoming { msg: Msg::Heartbeat { from, clocks, delta: Some(delta) }, originals, mapset })
        }
        [_, kind, reference, from, clocks] if atom_named(kind, "transfer_req") => Ok(plain(Msg::TransferReq {
            from: replica_of(from)?,
            clocks: clocks_of(clocks)?,
            reference: Some(reference.clone()),
        })),
        [_, kind, reference, from, state] if atom_named(kind, "transfer_ack") => {
            let from = replica_of(from)?;
            let (state, originals, mapset) = delta_of(state)?;
            Ok(Incoming {
                msg: Msg::TransferAck { from, state, reference: Some(reference.clone()) },
                originals,
                mapset,
            })
        }
        [_, kind, from] if atom_named(kind, "graceful_permdown") => {
            Ok(plain(Msg::GracefulPermdown { from: replica_of(from)? }))
        }
        _ => Err(NotTracker("a known message")),
    }
}

/// Writes replication messages as Phoenix.Tracker does, for one shard.
#[derive(Debug)]
pub(crate) struct Codec {
    /// Presences of other nodes, as they were written (by dot).
    pub(crate) originals: HashMap<Tag, Term>,
    /// What a `MapSet` holds besides `map`, as the cluster's Elixir
    /// writes it (Elixir 1.14's until a Phoenix node shows its own).
    mapset: Fields,
    /// This node's pid node name and creation, for references.
    node: String,
    creation: u32,
    refs: u32,
}

impl Codec {
    pub(crate) fn new(node: String, creation: u32) -> Codec {
        Codec {
            originals: HashMap::new(),
            mapset: vec![(Term::atom("version"), Term::Int(2))],
            node,
            creation,
            refs: 0,
        }
    }

    /// Keeps what a message from another node teaches: the terms of the
    /// presences that joined here (by dot), and the `MapSet` layout.
    pub(crate) fn learn(&mut self, mapset: Option<Fields>) {
        if let Some(m) = mapset {
            self.mapset = m;
        }
    }

    fn mapset_term(&self, r: &ReplicaId, clocks: &BTreeSet<u64>) -> Term {
        let elements =
            clocks.iter().map(|c| (tag_term(&Tag { replica: r.clone(), clock: *c }), Term::List(Vec::new()))).collect();
        let mut pairs = vec![(Term::atom("__struct__"), Term::atom(MAPSET)), (Term::atom("map"), Term::Map(elements))];
        pairs.extend(self.mapset.iter().cloned());
        Term::Map(pairs)
    }

    fn values_term(&self, d: &Delta<PresencePid, Meta>) -> Term {
        Term::Map(
            d.values
                .iter()
                .map(|(tag, e)| {
                    let value = self.originals.get(tag).cloned().unwrap_or_else(|| entry_term(e));
                    (tag_term(tag), value)
                })
                .collect(),
        )
    }

    /// `%Phoenix.Tracker.State{}` with its fields in Elixir's order.
    fn state_term(
        &self,
        d: &Delta<PresencePid, Meta>,
        mode: &str,
        values: Term,
        replicas: &BTreeMap<ReplicaId, ReplicaStatus>,
    ) -> Term {
        let status = |s: &ReplicaStatus| Term::atom(if *s == ReplicaStatus::Up { "up" } else { "down" });
        let a = Term::atom;
        Term::Map(vec![
            (a("__struct__"), a(STATE)),
            (a("clouds"), Term::Map(d.clouds.iter().map(|(r, c)| (replica_term(r), self.mapset_term(r, c))).collect())),
            (a("context"), context_term(&d.context)),
            (a("delta"), a("unset")),
            (a("mode"), a(mode)),
            (a("pids"), a("nil")),
            (a("range"), Term::Tuple(vec![context_term(&d.range.0), context_term(&d.range.1)])),
            (a("replica"), replica_term(&d.replica)),
            (a("replicas"), Term::Map(replicas.iter().map(|(r, s)| (replica_term(r), status(s))).collect())),
            (a("values"), values),
        ])
    }

    /// A new reference of this node, for a transfer request.
    fn reference(&mut self) -> Term {
        self.refs = self.refs.wrapping_add(1);
        let random: u64 = rand_u64();
        Term::Ref(Reference {
            node: Atom::new(self.node.as_str()),
            creation: self.creation,
            ids: vec![self.refs & 0x3ffff, random as u32, (random >> 32) as u32],
            encoding: RefEncoding::Newer,
        })
    }

    /// Writes `msg`; `replicas` are this replica's known replicas (for a
    /// whole state).
    pub(crate) fn encode(&mut self, msg: &Msg, replicas: &BTreeMap<ReplicaId, ReplicaStatus>) -> Term {
        let a = Term::atom;
        match msg {
            Msg::Heartbeat { from, clocks, delta } => {
                let delta = match delta {
                    Some(d) => self.state_term(d, "delta", self.values_term(d), &BTreeMap::new()),
                    None => a("empty"),
                };
                Term::Tuple(vec![
                    a("pub"),
                    a("heartbeat"),
                    replica_term(from),
                    delta,
                    Term::Tuple(vec![replica_term(from), context_term(clocks)]),
                ])
            }
            Msg::TransferReq { from, clocks, reference } => {
                let reference = reference.clone().unwrap_or_else(|| self.reference());
                Term::Tuple(vec![
                    a("pub"),
                    a("transfer_req"),
                    reference,
                    replica_term(from),
                    Term::Tuple(vec![replica_term(from), context_term(clocks)]),
                ])
            }
            Msg::TransferAck { from, state, reference } => {
                let whole =
                    Term::Tuple(vec![self.state_term(state, "normal", a("nil"), replicas), self.values_term(state)]);
                Term::Tuple(vec![
                    a("pub"),
                    a("transfer_ack"),
                    reference.clone().unwrap_or_else(|| a("nil")),
                    replica_term(from),
                    whole,
                ])
            }
            Msg::GracefulPermdown { from } => graceful_permdown(from),
        }
    }
}

/// `{:pub, :graceful_permdown, {name, vsn}}`: `from` leaves for good.
pub(crate) fn graceful_permdown(from: &ReplicaId) -> Term {
    Term::Tuple(vec![Term::atom("pub"), Term::atom("graceful_permdown"), replica_term(from)])
}

/// 64 random bits (for references, which must not repeat across runs).
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // a failing system source leaves zeros: the counter still differs
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fawkes_tracker::State;

    use super::*;

    /// The Phoenix.Tracker messages Phoenix nodes wrote during a run with
    /// Fawkes nodes (fawkes-redis's `tests/data/phoenix-corpus`): file
    /// name and message.
    fn corpus() -> Vec<(String, Term)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fawkes-redis/tests/data/phoenix-corpus");
        let mut out = Vec::new();
        for sub in ["plain", "compressed"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
                if name.contains("-broadcast-") || !name.ends_with(".etf") {
                    continue;
                }
                let Term::Tuple(mut items) = fawkes_etf::decode(&std::fs::read(&path).unwrap()).unwrap() else {
                    panic!("{name}: not a PubSub message")
                };
                out.push((name, items.swap_remove(4)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn message(name: &str) -> Term {
        corpus().into_iter().find(|(n, _)| n.ends_with(name)).unwrap().1
    }

    /// Every tracker message Phoenix wrote is read; written again, it
    /// reads the same; heartbeats and transfer requests are written exactly
    /// as Phoenix wrote them (so Fawkes's own are too).
    #[test]
    fn phoenix_tracker_messages_are_read_and_written_as_phoenix_writes_them() {
        let mut kinds = BTreeMap::new();
        for (name, msg) in corpus() {
            let incoming = decode(&msg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = name.split('-').skip(2).collect::<Vec<_>>().join("-").replace("-z.etf", "").replace(".etf", "");
            *kinds.entry(kind.clone()).or_insert(0) += 1;
            let mut codec = Codec::new("fawkes1@fawkes".into(), 7);
            codec.learn(incoming.mapset.clone());
            codec.originals = incoming.originals.clone();
            let written = codec.encode(&incoming.msg, &BTreeMap::new());
            assert_eq!(decode(&written).unwrap().msg, incoming.msg, "{name}");
            if kind.starts_with("heartbeat") || kind == "transfer_req" {
                assert_eq!(written, msg, "{name}: written as Phoenix wrote it");
            }
        }
        for kind in ["heartbeat-empty", "heartbeat-delta", "transfer_req", "transfer_ack-delta", "transfer_ack-state"] {
            assert!(kinds.get(kind).is_some_and(|n| *n >= 2), "{kind}: {kinds:?}");
        }
    }

    #[test]
    fn what_phoenix_messages_hold() {
        let Msg::Heartbeat { from, clocks, delta: Some(delta) } =
            decode(&message("0041-phx1-heartbeat-delta.etf")).unwrap().msg
        else {
            panic!("a heartbeat with a delta")
        };
        assert_eq!(from, ReplicaId::new("phx1", 1_796_053_754_292_098));
        assert_eq!(clocks.get(&from), Some(&1));
        assert_eq!(clocks.len(), 4, "phx1, phx2, fawkes1, fawkes2");
        assert_eq!(delta.range.0.get(&from), Some(&0));
        assert_eq!(delta.clouds.get(&from).map(|c| c.iter().copied().collect::<Vec<_>>()), Some(vec![1]));
        let (tag, entry) = delta.values.iter().next().unwrap();
        assert_eq!((tag.replica.clone(), tag.clock), (from.clone(), 1));
        assert_eq!((entry.topic.as_str(), entry.key.as_str()), ("presence:interop-e71mx3g1p6q-1", "pa1-e71mx3g1p6q"));
        assert_eq!((entry.pid.node.as_str(), entry.pid.creation), ("nonode@nohost", 0));
        assert_eq!(entry.meta.get("status"), Some(&Value::from("online")));
        assert!(entry.meta.get("phx_ref").is_some_and(Value::is_string));

        let Msg::TransferAck { from, state, reference: Some(Term::Ref(_)) } =
            decode(&message("0145-phx4-transfer_ack-state.etf")).unwrap().msg
        else {
            panic!("a transfer with a whole state")
        };
        assert_eq!(from.name, "phx4");
        assert!(state.values.values().any(|e| e.topic == "presence:e" && e.key == "wi"), "{state:?}");
        assert!(state.context.contains_key(&from));
        let Msg::TransferAck { state, .. } = decode(&message("0131-phx1-transfer_ack-delta.etf")).unwrap().msg else {
            panic!("a transfer with a delta")
        };
        assert!(!state.range.1.is_empty());
        let Msg::TransferReq { from, clocks, reference: Some(_) } =
            decode(&message("0010-phx1-transfer_req.etf")).unwrap().msg
        else {
            panic!("a transfer request")
        };
        assert_eq!((from.name.as_str(), clocks.len()), ("phx1", 2));
    }

    /// Phoenix sends a graceful permanent down only when an application
    /// calls `Phoenix.Tracker.graceful_permdown/1`: none is in the corpus.
    /// This one is `term_to_binary({:pub, :graceful_permdown, {:phx1,
    /// 1796053754292098}})` as OTP 25 writes it.
    #[test]
    fn a_graceful_permdown_reads_and_writes_as_phoenix_writes_it() {
        let hex = "836803640003707562640011677261636566756C5F7065726D646F776E6802640004706878316E070082A7055A806106";
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let term = fawkes_etf::decode(&bytes).unwrap();
        let from = ReplicaId::new("phx1", 1_796_053_754_292_098);
        assert_eq!(decode(&term).unwrap().msg, Msg::GracefulPermdown { from: from.clone() });
        assert_eq!(graceful_permdown(&from), term);
    }

    /// A term's skeleton: node names, numbers, strings and pids blanked.
    fn shape(t: &Term) -> Term {
        const WORDS: [&str; 19] = [
            "__struct__",
            "clouds",
            "context",
            "delta",
            "mode",
            "pids",
            "range",
            "replica",
            "replicas",
            "values",
            "map",
            "version",
            "unset",
            "nil",
            "pub",
            "heartbeat",
            "phx_ref",
            "status",
            "transfer_ack",
        ];
        match t {
            Term::Atom(a) if WORDS.contains(&a.as_str()) || a.starts_with("Elixir.") => t.clone(),
            Term::Atom(_) => Term::atom("node"),
            Term::Int(_) => Term::Int(0),
            Term::Binary(_) => Term::Binary(Vec::new()),
            Term::Pid(_) => Term::atom("pid"),
            Term::Tuple(items) => Term::Tuple(items.iter().map(shape).collect()),
            Term::List(items) => Term::List(items.iter().map(shape).collect()),
            Term::Map(pairs) => Term::Map(pairs.iter().map(|(k, v)| (shape(k), shape(v))).collect()),
            other => other.clone(),
        }
    }

    /// Fawkes's heartbeat for one presence has the very shape of Phoenix's
    /// for one presence: the same `%Phoenix.Tracker.State{}`, `MapSet`s,
    /// dots, values `{pid, topic, key, meta}` and atom-keyed metas.
    #[test]
    fn fawkes_writes_its_presences_as_phoenix_writes_its_own() {
        let me = ReplicaId::new("fawkes1", 1_796_053_752_711_855);
        let mut state: State<PresencePid, Meta> = State::new(me.clone());
        let pid = PresencePid { node: "fawkes1@fawkes".into(), id: (3 << 32) | 17, creation: 1_796_000_000 };
        let meta: Meta =
            serde_json::from_value(serde_json::json!({"status": "online", "phx_ref": "GOzdZWE2NQcD0gEB"})).unwrap();
        state.join(pid, "presence:lobby", "u1", meta);
        let msg =
            Msg::Heartbeat { from: me.clone(), clocks: state.context().clone(), delta: Some(state.delta().clone()) };
        let mut codec = Codec::new("fawkes1@fawkes".into(), 1_796_000_000);
        let written = codec.encode(&msg, &BTreeMap::new());
        let phoenix = message("plain/0041-phx1-heartbeat-delta.etf");
        let (ours, theirs) = (written.as_tuple().unwrap(), phoenix.as_tuple().unwrap());
        assert_eq!(shape(&ours[3]), shape(&theirs[3]), "the delta");
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(shape(&ours[2]), shape(&theirs[2]), "the replica");
        let Some([_, context]) = ours[4].as_tuple() else { panic!("clocks") };
        assert_eq!(context, &Term::Map(vec![(replica_term(&me), Term::Int(1))]));
        // the pid is an Erlang pid of this node, which Phoenix holds as it is
        let value = ours[3].get_atom_key("values").unwrap().as_map().unwrap()[0].1.clone();
        let Some([Term::Pid(p), ..]) = value.as_tuple() else { panic!("a pid") };
        assert_eq!((p.node.as_str(), p.id, p.serial, p.creation), ("fawkes1@fawkes", 17, 3, 1_796_000_000));
        assert_eq!(fawkes_etf::encode(&Term::Pid(p.clone()))[1], 88, "NEW_PID_EXT");
        // and it reads back
        assert_eq!(decode(&written).unwrap().msg, msg);

        // a whole state, as Phoenix's transfers carry one
        let asker = ReplicaId::new("phx1", 1);
        let asked: Context = [(me.clone(), 0), (asker.clone(), 0)].into_iter().collect();
        let ack = Msg::TransferAck { from: me.clone(), state: state.extract(&asker, &asked), reference: None };
        let written = codec.encode(&ack, state.replicas());
        let phoenix = message("plain/0011-phx2-transfer_ack-state.etf");
        let keys = |t: &Term| -> Vec<Term> {
            t.as_tuple().unwrap()[4].as_tuple().unwrap()[0].as_map().unwrap().iter().map(|(k, _)| k.clone()).collect()
        };
        assert_eq!(keys(&written), keys(&phoenix), "the State's fields, in Elixir's order");
        let whole = written.as_tuple().unwrap()[4].as_tuple().unwrap();
        assert_eq!(whole[0].get_atom_key("mode").and_then(Term::as_atom), Some("normal"));
        assert_eq!(whole[0].get_atom_key("values").and_then(Term::as_atom), Some("nil"));
        assert_eq!(whole[1].as_map().map(<[_]>::len), Some(1));
        assert!(matches!(written.as_tuple().unwrap()[2], Term::Atom(_)), "no request to answer: nil");
    }

    /// The `MapSet` layout of the cluster's Elixir is learned from its
    /// messages (a newer Elixir without `version` is followed).
    #[test]
    fn the_mapset_layout_is_learned() {
        let r = ReplicaId::new("fawkes1", 1);
        let mut codec = Codec::new("fawkes1@fawkes".into(), 1);
        let cloud: BTreeSet<u64> = [1].into_iter().collect();
        assert_eq!(codec.mapset_term(&r, &cloud).as_map().unwrap().len(), 3, "__struct__, map, version");
        codec.learn(Some(Vec::new()));
        assert_eq!(codec.mapset_term(&r, &cloud).as_map().unwrap().len(), 2);
        codec.learn(None);
        assert_eq!(codec.mapset_term(&r, &cloud).as_map().unwrap().len(), 2, "nothing new to learn");
    }

    /// Metas of other nodes that JSON cannot hold as they are still list.
    #[test]
    fn any_meta_has_a_json_rendering() {
        let meta = Term::Map(vec![
            (Term::atom("at"), Term::Tuple(vec![Term::Int(1), Term::Int(2)])),
            (Term::Int(5), Term::Binary(vec![0xff, b'a'])),
            (Term::atom("who"), Term::Pid(Pid::new(Atom::new("n@h"), 1, 2, 3))),
        ]);
        let m = meta_of(&meta).unwrap();
        assert_eq!(m.get("at"), Some(&serde_json::json!([1, 2])));
        assert_eq!(m.get("5"), Some(&Value::from("\u{fffd}a")));
        assert_eq!(m.get("who"), Some(&Value::from("#PID<n@h.1.2>")));
        assert!(meta_of(&Term::List(Vec::new())).is_err(), "a meta is a map");
    }
}

//! What earlier claims counted under this policy: the input that makes caps across claims,
//! "one award per enterprise", "a person once", cumulative thresholds and prior payments offset
//! once decidable by a pure function.
//!
//! It is a ledger of typed [`Count`]s keyed by [`Key`] (measure, kind, applicant, item, person),
//! each entry naming the claim that counted it. The award service folds it from the counts its
//! decisions carry (and the entitlements it granted), in log order; replay folds it the same
//! way, so the same decisions come out. It knows no measure: each measure decides which keys it
//! reads and which counts it adds.

use huiqi_events::history::{Count, Key, Kind};
use huiqi_events::Money;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub use huiqi_events::history::{Count as HistoryCount, Relied};

/// One earlier count: the claim that made it, the applicant of that claim, the amount. The
/// claim's strings are shared by every count it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub claim_id: Arc<str>,
    pub by: Arc<str>,
    pub amount: Money,
}

/// The entries under one key. Nearly every key is counted once (a person, a number), so its
/// one entry is held in the map itself: a `Vec` there was a heap block, and an allocation on
/// award's one decision task, for every one of the 120 keys a 40-person claim counts
/// (`huiqi loadgen --applications 4000`, interleaved with the build before: 2.34 / 2.31 ms a
/// claim against 2.62 / 2.47 ms).
#[derive(Debug, Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(e) => std::slice::from_ref(e),
            Entries::Many(es) => es,
        }
    }

    fn push(&mut self, entry: Entry) {
        match self {
            Entries::Many(es) => es.push(entry),
            // A key's second count (rare): the first entry's two shared strings are cloned.
            Entries::One(first) => *self = Entries::Many(vec![first.clone(), entry]),
        }
    }

    /// Keeps the entries `keep` says to; whether any are left.
    fn retain(&mut self, keep: impl Fn(&Entry) -> bool) -> bool {
        match self {
            Entries::One(e) => keep(e),
            Entries::Many(es) => {
                es.retain(|e| keep(e));
                !es.is_empty()
            }
        }
    }
}

/// One line of the history as a file (`huiqi evaluate --history`) or a report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(flatten)]
    key: Key,
    claim_id: String,
    #[serde(default)]
    by: String,
    amount: Money,
}

/// The ledger. Point lookups (the hot path of every decision) go through hash maps; the
/// scans by applicant go through an ordered index of the keys, so nothing a decision reads
/// depends on hash order.
///
/// The maps hold keys as numbers: each string of a key (measure, applicant, item, person) is
/// kept once in [`Names`] and a key is five small numbers. A 40-person M1 claim counts 120
/// keys (the persons, their data packages and points); held as four strings each, the keys
/// were most of the award service's memory, and rehashing their tables as they grew — fresh
/// pages zeroed by the kernel — was a twentieth of the whole pipeline's CPU, all of it on
/// award's one decision task.
///
/// The map is split into [`SHARDS`] maps by a fixed hash of the key. One map of half a
/// million persons rehashed everything at once when it doubled — a full second in which no
/// claim was decided (seen as the p99 of `huiqi loadgen --rate 300`); a shard doubles at a
/// 256th of that.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Vec<Line>", into = "Vec<Line>")]
pub struct History {
    names: Names,
    entries: Vec<HashMap<Packed, Entries, Seeded>>,
    len: usize,
    /// (measure, kind, uscc) → the keys under it, ordered.
    scans: BTreeMap<(String, Kind, String), BTreeSet<Key>>,
}

/// A key with its strings replaced by their numbers in [`Names`] (0: empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Packed {
    measure: u32,
    uscc: u32,
    item: u32,
    person: u32,
    kind: Kind,
}

/// Every string the keys use, once, numbered from 1.
#[derive(Debug, Clone)]
struct Names {
    ids: HashMap<Box<str>, u32, Seeded>,
    names: Vec<Box<str>>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            ids: HashMap::default(),
            names: vec!["".into()],
        }
    }
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    /// The number of a string already named (None: no key uses it, so no key matches).
    fn find(&self, s: &str) -> Option<u32> {
        if s.is_empty() {
            return Some(0);
        }
        self.ids.get(s).copied()
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    fn pack(&mut self, key: &Key) -> Packed {
        Packed {
            measure: self.id(&key.measure),
            uscc: self.id(&key.uscc),
            item: self.id(&key.item),
            person: self.id(&key.person),
            kind: key.kind,
        }
    }

    fn find_packed(&self, key: &Key) -> Option<Packed> {
        Some(Packed {
            measure: self.find(&key.measure)?,
            uscc: self.find(&key.uscc)?,
            item: self.find(&key.item)?,
            person: self.find(&key.person)?,
            kind: key.kind,
        })
    }

    fn unpack(&self, p: &Packed) -> Key {
        Key {
            measure: self.name(p.measure).to_string(),
            kind: p.kind,
            uscc: self.name(p.uscc).to_string(),
            item: self.name(p.item).to_string(),
            person: self.name(p.person).to_string(),
        }
    }
}

/// The maps' hasher: foldhash seeded per process (hashbrown's own default). SipHash, std's
/// default, was a tenth of a replay's time; a per-process seed keeps crafted keys from
/// colliding on purpose, and nothing depends on hash order (scans are ordered).
type Seeded = foldhash::quality::RandomState;

/// How many maps the ledger is split into.
const SHARDS: usize = 256;

impl Default for History {
    fn default() -> Self {
        History {
            names: Names::default(),
            entries: (0..SHARDS).map(|_| HashMap::default()).collect(),
            len: 0,
            scans: BTreeMap::new(),
        }
    }
}

/// The shard of a key, from its numbers (a fixed mix, not a string hash: the strings were
/// hashed once already, to number them). Nothing depends on which shard a key is in.
fn shard(key: &Packed) -> usize {
    let mut h: u64 = key.kind as u64;
    for part in [key.person, key.item, key.uscc, key.measure] {
        h = (h ^ part as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    ((h >> 32) % SHARDS as u64) as usize
}

/// Equal when they hold the same lines (the numbering of the names aside).
impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.lines() == other.lines()
    }
}

impl From<Vec<Line>> for History {
    fn from(lines: Vec<Line>) -> Self {
        let mut h = History::default();
        for l in lines {
            h.insert(
                &l.key,
                Entry {
                    claim_id: l.claim_id.into(),
                    by: l.by.into(),
                    amount: l.amount,
                },
            );
        }
        h
    }
}

impl From<History> for Vec<Line> {
    fn from(h: History) -> Self {
        h.lines()
    }
}

impl History {
    /// Every entry as a line, in key order (each key's entries in the order they came).
    fn lines(&self) -> Vec<Line> {
        let mut entries: Vec<(Key, &[Entry])> = self
            .entries
            .iter()
            .flatten()
            .map(|(p, es)| (self.names.unpack(p), es.as_slice()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .flat_map(|(key, es)| {
                es.iter().map(move |e| Line {
                    key: key.clone(),
                    claim_id: e.claim_id.to_string(),
                    by: e.by.to_string(),
                    amount: e.amount,
                })
            })
            .collect()
    }

    /// Adds what one decision (claim `claim_id` of applicant `by`) counted.
    pub fn add(&mut self, claim_id: &str, by: &str, counts: &[Count]) {
        let (claim_id, by): (Arc<str>, Arc<str>) = (claim_id.into(), by.into());
        for c in counts {
            self.insert(
                &c.key,
                Entry {
                    claim_id: claim_id.clone(),
                    by: by.clone(),
                    amount: c.amount,
                },
            );
        }
    }

    /// Withdraws what claim `claim_id` counted under the keys of `counts` (a supplementary
    /// award replaces the claim's counts with those of its new decision). A key left with no
    /// entry is gone, as if never counted.
    pub fn withdraw(&mut self, claim_id: &str, counts: &[Count]) {
        for c in counts {
            let Some(packed) = self.names.find_packed(&c.key) else {
                continue;
            };
            let shard = &mut self.entries[shard(&packed)];
            let Some(es) = shard.get_mut(&packed) else {
                continue;
            };
            if !es.retain(|e| &*e.claim_id != claim_id) {
                shard.remove(&packed);
                self.len -= 1;
                let scan = (c.key.measure.clone(), c.key.kind, c.key.uscc.clone());
                if let Some(keys) = self.scans.get_mut(&scan) {
                    keys.remove(&c.key);
                    if keys.is_empty() {
                        self.scans.remove(&scan);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: &Key, entry: Entry) {
        let packed = self.names.pack(key);
        let shard = &mut self.entries[shard(&packed)];
        match shard.get_mut(&packed) {
            Some(es) => es.push(entry),
            None => {
                // Only scans by applicant are ever asked for (an agency's persons, an
                // enterprise's exhibition travellers): keys of no applicant stay out of the
                // ordered index, which would otherwise hold every person ever counted.
                if !key.uscc.is_empty() && (!key.item.is_empty() || !key.person.is_empty()) {
                    self.scans
                        .entry((key.measure.clone(), key.kind, key.uscc.clone()))
                        .or_default()
                        .insert(key.clone());
                }
                shard.insert(packed, Entries::One(entry));
                self.len += 1;
            }
        }
    }

    /// The entries under exactly `key`.
    pub fn get(&self, key: &Key) -> &[Entry] {
        self.names
            .find_packed(key)
            .and_then(|p| self.entries[shard(&p)].get(&p))
            .map(Entries::as_slice)
            .unwrap_or(&[])
    }

    pub fn contains(&self, key: &Key) -> bool {
        !self.get(key).is_empty()
    }

    /// The sum of the amounts under `key`.
    pub fn total(&self, key: &Key) -> Money {
        self.get(key).iter().map(|e| e.amount).sum()
    }

    /// Every key of `measure` and `kind` for applicant `uscc` (all items and persons), in key
    /// order: e.g. an agency's counted persons, an enterprise's paid charters.
    pub fn of<'a>(
        &'a self,
        measure: &str,
        kind: Kind,
        uscc: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a [Entry])> + 'a {
        self.scans
            .get(&(measure.to_string(), kind, uscc.to_string()))
            .into_iter()
            .flatten()
            .map(|k| (k, self.get(k)))
    }

    /// Every key of `measure`, `kind`, applicant and `item` (all persons).
    pub fn of_item<'a>(
        &'a self,
        measure: &str,
        kind: Kind,
        uscc: &str,
        item: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a [Entry])> + 'a {
        let item = item.to_string();
        self.of(measure, kind, uscc)
            .filter(move |(k, _)| k.item == item)
    }

    /// How many keys the history holds (for reports).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_scan_by_applicant_and_round_trip_as_json() {
        let mut h = History::default();
        let c = |kind, uscc: &str, item: &str, person: &str, amount: i64| Count {
            key: Key::new("M21", kind).uscc(uscc).item(item).person(person),
            amount: Money::yuan(amount),
        };
        h.add(
            "C-1",
            "A",
            &[
                c(Kind::Award, "A", "", "", 1000),
                c(Kind::Person, "A", "", "p1", 500),
            ],
        );
        h.add(
            "C-2",
            "A",
            &[
                c(Kind::Award, "A", "", "", 500),
                c(Kind::Person, "A", "", "p2", 500),
            ],
        );
        h.add("C-3", "B", &[c(Kind::Person, "B", "", "p1", 500)]);
        assert_eq!(
            h.total(&Key::new("M21", Kind::Award).uscc("A")),
            Money::yuan(1500)
        );
        let persons: Vec<&str> = h
            .of("M21", Kind::Person, "A")
            .map(|(k, _)| k.person.as_str())
            .collect();
        assert_eq!(persons, vec!["p1", "p2"]);
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn a_key_counted_once_holds_its_entry_without_a_heap_block_of_its_own() {
        // The enum's tag lives in a pointer's niche: one entry costs no more than the entry.
        assert_eq!(std::mem::size_of::<Entries>(), std::mem::size_of::<Entry>());
        let e = |claim: &str| Entry {
            claim_id: claim.into(),
            by: "A".into(),
            amount: Money::yuan(1),
        };
        let mut es = Entries::One(e("C-1"));
        assert!(matches!(es, Entries::One(_)));
        es.push(e("C-2"));
        es.push(e("C-3"));
        let claims = |es: &Entries| {
            es.as_slice()
                .iter()
                .map(|e| e.claim_id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(claims(&es), ["C-1", "C-2", "C-3"], "in the order they came");
        assert!(es.retain(|e| &*e.claim_id != "C-2"));
        assert_eq!(claims(&es), ["C-1", "C-3"]);
        assert!(!es.retain(|_| false), "none left");
        assert!(!Entries::One(e("C-1")).retain(|e| &*e.claim_id != "C-1"));
        assert!(Entries::One(e("C-1")).retain(|e| &*e.claim_id != "C-9"));
    }

    #[test]
    fn keys_held_as_numbers_read_and_withdraw_as_the_keys_themselves() {
        let c = |kind, uscc: &str, person: &str, amount: i64| Count {
            key: Key::new("M1", kind).uscc(uscc).person(person),
            amount: Money::yuan(amount),
        };
        let mut a = History::default();
        a.add(
            "C-1",
            "A",
            &[c(Kind::Person, "", "p1", 500), c(Kind::Award, "A", "", 9)],
        );
        a.add(
            "C-2",
            "B",
            &[c(Kind::Person, "", "p2", 500), c(Kind::Person, "", "p1", 1)],
        );
        // A name no key uses, or a key made of known names that was never counted, is empty.
        assert!(a.get(&Key::new("M1", Kind::Person).person("p9")).is_empty());
        assert!(a.get(&Key::new("M1", Kind::Person).person("A")).is_empty());
        assert!(a
            .get(&Key::new("M1", Kind::Award).uscc("A").person("p1"))
            .is_empty());
        let p1 = a.get(&Key::new("M1", Kind::Person).person("p1"));
        assert_eq!(
            p1.iter()
                .map(|e| (&*e.claim_id, &*e.by))
                .collect::<Vec<_>>(),
            vec![("C-1", "A"), ("C-2", "B")]
        );
        assert_eq!(a.len(), 3);
        // The same lines added in another order (names numbered otherwise) are equal.
        let mut b = History::default();
        b.add("C-0", "Z", &[c(Kind::Person, "", "p2", 1)]);
        b.withdraw("C-0", &[c(Kind::Person, "", "p2", 1)]);
        b.add(
            "C-1",
            "A",
            &[c(Kind::Award, "A", "", 9), c(Kind::Person, "", "p1", 500)],
        );
        b.add(
            "C-2",
            "B",
            &[c(Kind::Person, "", "p1", 1), c(Kind::Person, "", "p2", 500)],
        );
        assert_eq!(a, b);
        a.withdraw(
            "C-2",
            &[c(Kind::Person, "", "p1", 1), c(Kind::Person, "", "p2", 500)],
        );
        assert_eq!(a.len(), 2);
        assert!(!a.contains(&Key::new("M1", Kind::Person).person("p2")));
        assert_eq!(a.get(&Key::new("M1", Kind::Person).person("p1")).len(), 1);
        assert_ne!(a, b);
    }
}
